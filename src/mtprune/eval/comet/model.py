"""The COMET estimator on plain transformers and torch.

A segment's score comes from one encoder (XLM-R) run over its texts:

- every hidden state of the encoder (the embeddings' included) goes into a learnt scalar mix,
  ``gamma * sum_k w_k * h_k`` with ``w`` the softmax (or sparsemax) of one scalar per layer, each
  ``h_k`` first standardized over the sequence's unpadded positions where ``layer_norm`` is set;
- regression models (``regression_metric``, ``referenceless_regression_metric``) encode source,
  translation and reference separately, pool each into a sentence vector (mean over tokens by
  default) and feed ``[mt, ref, mt*ref, |mt-ref|, mt*src, |mt-src|]`` (without the reference:
  ``[mt, src, mt*src, |mt-src|]``) to a feed-forward regressor;
- unified models (CometKiwi) encode ``<s> mt </s></s> src </s>`` (and the reference likewise) as one
  sequence and regress from its first token; with both source and reference the score is the mean
  of the three passes mt+src, mt+ref and mt+src+ref.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from .checkpoint import ENCODERS, EXTRA_HINT, CometCheckpoint, read_state_dict

logger = logging.getLogger(__name__)

Triple = tuple[str, str, "str | None"]  # (source, translation, reference or None)


# ----------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------

def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of a 1-D vector onto the probability simplex (Martins & Astudillo 2016)."""
    z_sorted, _ = torch.sort(z, descending=True)
    k = torch.arange(1, z.numel() + 1, device=z.device, dtype=z.dtype)
    cumulative = torch.cumsum(z_sorted, dim=0)
    support = (1 + k * z_sorted) > cumulative
    k_max = support.nonzero().max() + 1
    tau = (cumulative[k_max - 1] - 1) / k_max
    return torch.clamp(z - tau, min=0)


def masked_standardize(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each sequence's states minus their mean, over their standard deviation; both statistics taken
    over the unpadded positions and every hidden unit.  hidden (batch, seq, dim), mask (batch, seq)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (batch, seq, 1)
    count = mask.to(hidden.dtype).sum(1) * hidden.size(-1)  # (batch,)
    mean = (hidden * weights).flatten(1).sum(1) / count
    centered = (hidden * weights - mean.view(-1, 1, 1)) * weights
    variance = (centered ** 2).flatten(1).sum(1) / count
    return (hidden - mean.view(-1, 1, 1)) / torch.sqrt(variance + 1e-12).view(-1, 1, 1)


class LayerMix(nn.Module):
    """Learnt scalar mix of the encoder's hidden states (see the module docstring)."""

    def __init__(self, n_states: int, transform: str, layer_norm: bool):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(n_states))
        self.gamma = nn.Parameter(torch.ones(1))
        self.transform = transform
        self.layer_norm = layer_norm

    def forward(self, states: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        weights = sparsemax(self.weights) if self.transform == "sparsemax" else torch.softmax(self.weights, dim=0)
        mixed = None
        for weight, state in zip(weights, states):  # each (batch, seq, dim)
            term = weight * (masked_standardize(state, mask) if self.layer_norm else state)
            mixed = term if mixed is None else mixed + term
        return self.gamma * mixed


def build_estimator(in_dim: int, hidden_sizes: Sequence[int], activation: str, final_activation: str | None,
                    dropout: float) -> nn.Sequential:
    """Linear/activation/dropout per hidden size, then a linear layer to one score (and the final
    activation, if any): the layer positions are those of the checkpoint's ``estimator.ff.N`` keys."""
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden_sizes]
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), _activation(activation), nn.Dropout(dropout)]
    layers.append(nn.Linear(sizes[-1], 1))
    if final_activation:
        layers.append(_activation(final_activation))
    return nn.Sequential(*layers)


def _activation(name: str) -> nn.Module:
    cls = getattr(nn, str(name).title(), None)  # hparams spell them "Tanh", "tanh", "sigmoid"
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"COMET hparams: activation {name!r} is not a torch.nn activation (e.g. Tanh, Sigmoid)")
    return cls()


# ----------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------

class CometModel(nn.Module):
    """A COMET checkpoint ready to score; ``score`` remembers every segment it scored."""

    def __init__(self, checkpoint: CometCheckpoint, encoder: nn.Module, tokenizer: Any):
        super().__init__()
        hp = checkpoint.hparams
        self.checkpoint, self.encoder, self.tokenizer = checkpoint, encoder, tokenizer
        self.unified = checkpoint.model_class == "unified_metric"
        layer = hp.get("sent_layer", "mix") if self.unified else hp.get("layer", "mix")
        n_states = encoder.config.num_hidden_layers + 1
        self.mix = LayerMix(n_states, hp.get("layer_transformation", "softmax"), bool(hp.get("layer_norm", True))) \
            if layer == "mix" else None
        self.layer = None if layer == "mix" else _layer_index(layer, n_states)
        self.pool = "cls" if self.unified else hp.get("pool", "avg")
        hidden = encoder.config.hidden_size
        in_dim = hidden if self.unified else hidden * (6 if checkpoint.model_class == "regression_metric" else 4)
        self.estimator = build_estimator(in_dim, hp.get("hidden_sizes", [3072, 1024]), hp.get("activations", "Tanh"),
                                         hp.get("final_activation"), float(hp.get("dropout", 0.1)))
        # the unbabel encoders' max_positions: position embeddings less XLM-R's two offset slots
        self.max_positions = encoder.config.max_position_embeddings - 2
        self.cache: dict[Triple, float] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- encoding

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids with the tokenizer's special tokens, cut as unbabel-comet cuts them."""
        out = self.tokenizer(list(texts), truncation=True, max_length=self.max_positions - 2)
        return [list(ids) for ids in out["input_ids"]]

    def joined(self, parts: Sequence[list[int]]) -> list[int]:
        """``<s> a </s></s> b </s>[</s> c </s>]``: one sequence of several tokenized texts; longer than
        the encoder takes, it is cut at ``max_positions`` as unbabel-comet cuts it."""
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        inner = [ids[1:-1] for ids in parts]
        seq = [cls, *inner[0]]
        for ids in inner[1:]:
            seq += [sep, sep, *ids]
        seq.append(sep)
        if sum(map(len, inner)) > self.max_positions - (1 + 2 * len(parts)):
            seq = seq[: self.max_positions]
        return seq

    def padded(self, sequences: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, attention mask), both (batch, longest), on the model's device."""
        pad = self.tokenizer.pad_token_id
        longest = max(map(len, sequences))
        ids = torch.full((len(sequences), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return ids.to(self.device), mask.to(self.device)

    def states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The mixed (or chosen) hidden states: (batch, seq, dim)."""
        out = self.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        hidden = out.hidden_states  # embeddings + every layer
        return self.mix(hidden, mask) if self.mix is not None else hidden[self.layer]

    def sentence_vectors(self, sequences: Sequence[list[int]]) -> torch.Tensor:
        """One vector per sequence, pooled as the checkpoint says: (batch, dim)."""
        ids, mask = self.padded(sequences)
        if self.pool == "default":  # the encoder's own: first token of the last layer
            return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        states = self.states(ids, mask)
        if self.pool == "cls":
            return states[:, 0]
        is_pad = ids.eq(self.tokenizer.pad_token_id).unsqueeze(-1)
        if self.pool == "max":
            return states.float().masked_fill(is_pad, float("-inf")).max(dim=1).values.to(states.dtype)
        summed = states.float().masked_fill(is_pad, 0.0).sum(1)
        return (summed / mask.sum(1, keepdim=True).float()).to(states.dtype)

    # ---- scoring

    def forward(self, sources: Sequence[str], hypotheses: Sequence[str],
                references: Sequence[str] | None) -> torch.Tensor:
        """Scores of one batch: (batch,)."""
        if self.unified:
            return self._unified(sources, hypotheses, references)
        src, mt = self.sentence_vectors(self.tokenize(sources)), self.sentence_vectors(self.tokenize(hypotheses))
        if self.checkpoint.model_class == "regression_metric":
            ref = self.sentence_vectors(self.tokenize(references))
            features = [mt, ref, mt * ref, (mt - ref).abs(), mt * src, (mt - src).abs()]
        else:
            features = [mt, src, mt * src, (mt - src).abs()]
        return self.estimator(torch.cat(features, dim=1)).view(-1)

    def _unified(self, sources, hypotheses, references) -> torch.Tensor:
        segments = self.checkpoint.input_segments
        mt = self.tokenize(hypotheses)
        src = self.tokenize(sources) if "src" in segments else None
        ref = self.tokenize(references) if references is not None and "ref" in segments else None
        if src is not None and ref is not None:
            inputs = [[mt, src], [mt, ref], [mt, src, ref]]
        else:
            inputs = [[mt, src if src is not None else ref]]
        scores = []
        for texts in inputs:
            sequences = [self.joined(parts) for parts in zip(*texts)]
            scores.append(self.estimator(self.sentence_vectors(sequences)).view(-1))
        return torch.stack(scores).mean(0)

    @torch.inference_mode()
    def score(self, sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None,
              *, batch_size: int = 16, progress: bool = False) -> list[float]:
        """Segment scores (the model's scale, about 0-1); segments scored before come from the cache."""
        triples: list[Triple] = [(s, h, None if references is None else references[i])
                                 for i, (s, h) in enumerate(zip(sources, hypotheses))]
        todo = sorted({t for t in triples if t not in self.cache}, key=lambda t: (len(t[0]) + len(t[1]), t))
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        for batch in _progress(batches, progress, self.checkpoint.name):
            srcs, hyps, refs = zip(*batch)
            values = self(list(srcs), list(hyps), None if references is None else list(refs))
            self.cache.update(zip(batch, values.float().cpu().tolist()))
        return [self.cache[t] for t in triples]


def _layer_index(layer: Any, n_states: int) -> int:
    if isinstance(layer, int) and 0 <= layer < n_states:
        return layer
    raise ConfigError(f"COMET hparams: layer {layer!r} is neither 'mix' nor a layer index 0..{n_states - 1}")


def _progress(batches: list, show: bool, name: str):
    if not show or len(batches) < 2:
        return batches
    from tqdm.auto import tqdm

    return tqdm(batches, desc=f"COMET {name}", unit="batch", leave=False)


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------

def load_tokenizer(checkpoint: CometCheckpoint):
    """The encoder's tokenizer (``pretrained_model``); errors name the extra and the option."""
    from transformers import AutoTokenizer

    source = checkpoint.encoder_source()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001  (a missing package, an offline hub, a missing file: one message)
        raise _encoder_error(checkpoint, source, "tokenizer", exc) from None
    if None in (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id):
        raise ConfigError(f"{checkpoint.option} {checkpoint.name}: the tokenizer of {source} has no cls, sep or "
                          "pad token (an XLM-R tokenizer has <s>, </s> and <pad>)")
    return tokenizer


def _encoder_error(checkpoint: CometCheckpoint, source: str, what: str, exc: Exception) -> ConfigError:
    text = f"{type(exc).__name__}: {exc}"
    if any(name in text.lower() for name in ("sentencepiece", "protobuf")):
        return ConfigError(f"{checkpoint.option} {checkpoint.name}: the {what} of its encoder {source} needs the "
                           f"sentencepiece and protobuf packages: {EXTRA_HINT} ({text.splitlines()[0]})")
    return ConfigError(
        f"{checkpoint.option} {checkpoint.name}: could not load the {what} of its encoder {source!r} "
        f"(pretrained_model in {checkpoint.folder / 'hparams.yaml'}): {text.splitlines()[0]}. Where the hub is not "
        f"reachable, put that model's config.json and tokenizer files in a folder and set pretrained_model to it "
        f"(a path relative to the COMET folder works)")


def load_comet_model(checkpoint: CometCheckpoint, device: str, tokenizer: Any = None) -> CometModel:
    """Encoder from ``pretrained_model``'s config, every weight from the checkpoint, on ``device``."""
    import transformers

    source = checkpoint.encoder_source()
    tokenizer = tokenizer or load_tokenizer(checkpoint)
    try:
        config = transformers.AutoConfig.from_pretrained(source)
    except Exception as exc:  # noqa: BLE001
        raise _encoder_error(checkpoint, source, "config", exc) from None
    encoder_class = getattr(transformers, ENCODERS[checkpoint.hparams.get("encoder_model", "XLM-RoBERTa")])
    encoder = encoder_class(config, add_pooling_layer=False)
    model = CometModel(checkpoint, encoder, tokenizer)
    load_weights(model, read_state_dict(checkpoint.ckpt), checkpoint)
    return model.to(device=device, dtype=torch.float32).eval()


def load_weights(model: CometModel, state: dict[str, torch.Tensor], checkpoint: CometCheckpoint) -> None:
    """The checkpoint's ``encoder.model.*``, ``layerwise_attention.*`` and ``estimator.ff.*`` into ``model``."""
    ours: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("encoder.model."):
            ours["encoder." + key.removeprefix("encoder.model.")] = value
        elif key.startswith("estimator.ff."):
            ours["estimator." + key.removeprefix("estimator.ff.")] = value
    if model.mix is not None:
        n = model.mix.weights.numel()
        scalars = [state.get(f"layerwise_attention.scalar_parameters.{i}") for i in range(n)]
        if any(s is None for s in scalars) or "layerwise_attention.gamma" not in state:
            raise ConfigError(f"{checkpoint.ckpt}: the layer mix of {n} scalars and gamma is not in the checkpoint "
                              f"(is pretrained_model the encoder it was trained with? {checkpoint.encoder_source()})")
        ours["mix.weights"] = torch.cat([s.reshape(1) for s in scalars])
        ours["mix.gamma"] = state["layerwise_attention.gamma"].reshape(1)
    expected = model.state_dict()
    missing = [k for k in expected if k not in ours]
    if missing:
        raise ConfigError(f"{checkpoint.ckpt}: {len(missing)} weights missing, e.g. {missing[:3]} (is "
                          f"pretrained_model {checkpoint.encoder_source()!r} the encoder the model was trained with?)")
    unused = [k for k in ours if k not in expected]
    logger.debug("COMET %s: %d checkpoint tensors not used (buffers): %s", checkpoint.name, len(unused), unused[:5])
    wrong = [f"{k} {tuple(ours[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if ours[k].shape != v.shape]
    if wrong:
        raise ConfigError(f"{checkpoint.ckpt}: weights of other shapes than the encoder config "
                          f"({checkpoint.encoder_source()}) gives: {wrong[:3]}")
    model.load_state_dict({k: ours[k] for k in expected})
