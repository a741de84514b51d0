"""Vocabulary trimming: which token ids to keep, and the tokenizer and model that keep only them.

A translation model for one language pair uses a small part of a multilingual vocabulary, and on
a small model the LM head over that vocabulary is most of a token's compute (gemma-3-270m: 61%).
The pieces here are plain functions on a ``tokenizer.json`` (as a dict) and on model tensors:

- ``tokenizer_kind``: BPE with byte fallback (Gemma, Llama 2, Mistral), byte-level BPE (GPT-2,
  Llama 3, Qwen) or Unigram (SentencePiece T5-style); anything else is refused.
- ``close_vocabulary``: what keeps every kept token producible. BPE builds a token by merges
  from its characters; the merges that build it, applied alone to its string, are the ones
  applied wherever it is the result (merges never cross the boundary of a final token, and
  inside it they run in rank order), so keeping every token along that derivation keeps it
  reachable. A merge ``a b`` survives when ``a``, ``b`` and ``ab`` survive; a text whose old
  tokens are all kept then runs through exactly the old merges, in the old order: the same tokens.
  Unigram picks the best segmentation among the pieces it has: with the old best still there,
  it wins again.
- ``trimmed_tokenizer_json``: the rebuilt tokenizer (model vocabulary and merges, added tokens,
  post-processor ids), ids renumbered in the old order.
- ``trim_model_vocabulary`` / ``remap_token_ids``: embedding and LM head rows (ties kept), and the
  special-token ids of configs.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

KINDS = ("bpe-byte-fallback", "byte-level-bpe", "unigram")
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))


def byte_level_alphabet() -> tuple[str, ...]:
    """The 256 characters byte-level BPE (GPT-2) writes bytes as, in byte order."""
    visible = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in visible:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return tuple(chars[b] for b in range(256))


# ----------------------------------------------------------------------------------------
# Reading a tokenizer.json
# ----------------------------------------------------------------------------------------

def _has_component(node: Any, type_name: str) -> bool:
    """Whether a normalizer/pre-tokenizer/decoder tree holds a component of ``type_name``."""
    if isinstance(node, dict):
        if node.get("type") == type_name:
            return True
        return any(_has_component(v, type_name) for v in node.values() if isinstance(v, (dict, list)))
    if isinstance(node, list):
        return any(_has_component(v, type_name) for v in node)
    return False


def tokenizer_kind(spec: Mapping[str, Any]) -> str:
    """One of ``KINDS`` for a tokenizer.json; a ConfigError says why any other cannot be trimmed."""
    model = spec.get("model") or {}
    kind = model.get("type")
    if kind == "Unigram":
        return "unigram"
    if kind == "BPE":
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise ConfigError("BPE tokenizers with a continuing-subword prefix or end-of-word suffix are not supported "
                              "by trim-vocab")
        byte_level = _has_component(spec.get("pre_tokenizer"), "ByteLevel") or _has_component(spec.get("decoder"),
                                                                                                "ByteLevel")
        if byte_level:
            return "byte-level-bpe"
        if model.get("byte_fallback"):
            return "bpe-byte-fallback"
        raise ConfigError("this BPE tokenizer is neither byte-level nor has byte fallback: a trimmed vocabulary could "
                          "not encode every text; trim-vocab supports BPE with byte fallback (Gemma, Llama 2, "
                          "Mistral), byte-level BPE (GPT-2, Llama 3, Qwen) and Unigram")
    raise ConfigError(f"tokenizer model type {kind!r} is not supported by trim-vocab; supported: BPE with byte "
                      "fallback (Gemma, Llama 2, Mistral), byte-level BPE (GPT-2, Llama 3, Qwen), Unigram")


def id_to_token(spec: Mapping[str, Any]) -> dict[int, str]:
    """Every id of the tokenizer (model vocabulary and added tokens) -> its string."""
    vocab = spec["model"]["vocab"]
    tokens = ({i: piece for i, (piece, _score) in enumerate(vocab)} if isinstance(vocab, list)
              else {i: piece for piece, i in vocab.items()})
    for added in spec.get("added_tokens") or []:
        tokens[added["id"]] = added["content"]
    return tokens


def merge_pairs(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The BPE merges in rank order, whether stored as ``[a, b]`` or as ``"a b"``."""
    merges = spec["model"].get("merges") or []
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def always_kept(spec: Mapping[str, Any], kind: str) -> set[int]:
    """Ids that keep any text encodable: byte pieces (byte fallback), the byte alphabet
    (byte-level), and the unknown token."""
    model = spec["model"]
    if kind == "unigram":
        piece_ids = {piece: i for i, (piece, _score) in enumerate(model["vocab"])}
        keep = {model["unk_id"]} if model.get("unk_id") is not None else set()
    else:
        piece_ids = model["vocab"]
        keep = {piece_ids[model["unk_token"]]} if model.get("unk_token") in piece_ids else set()
    if kind == "byte-level-bpe":
        wanted, label = byte_level_alphabet(), "byte-level alphabet"
    elif kind == "bpe-byte-fallback" or model.get("byte_fallback"):
        wanted, label = BYTE_PIECES, "byte-fallback pieces <0x00>..<0xFF>"
    else:
        return keep
    missing = [w for w in wanted if w not in piece_ids]
    if len(missing) == len(wanted):
        raise ConfigError(f"the tokenizer has none of the 256 {label}: a trimmed vocabulary could not encode every "
                          "text")
    if missing:  # SmolLM2's GGUF vocabulary lacks 21 control bytes: the original cannot write them either
        logger.warning("the tokenizer lacks %d of the 256 %s (e.g. %r); the trimmed one keeps the other %d",
                       len(missing), label, missing[0], 256 - len(missing))
    return keep | {piece_ids[w] for w in wanted if w in piece_ids}


def byte_token_ids(spec: Mapping[str, Any], kind: str) -> set[int]:
    """Ids of tokens that stand for one byte of a character the vocabulary lacks: ``<0xXX>``
    pieces, or (byte-level) a single byte >= 0x80, a part of a multi-byte character."""
    model = spec["model"]
    if kind == "byte-level-bpe":
        alphabet = byte_level_alphabet()
        return {model["vocab"][alphabet[b]] for b in range(0x80, 0x100) if alphabet[b] in model["vocab"]}
    piece_ids = ({piece: i for i, (piece, _s) in enumerate(model["vocab"])} if kind == "unigram" else model["vocab"])
    return {piece_ids[p] for p in BYTE_PIECES if p in piece_ids}


# ----------------------------------------------------------------------------------------
# Which ids to keep
# ----------------------------------------------------------------------------------------

def bpe_derivation(token: str, ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """The tokens BPE makes, in order, when it tokenizes ``token``'s characters alone (the
    lowest-ranked adjacent pair first, the leftmost on ties, as the tokenizers library does).
    The last one is ``token`` itself when BPE can produce it."""
    symbols = list(token)
    made = []
    while len(symbols) > 1:
        best = None
        for pos in range(len(symbols) - 1):
            rank = ranks.get((symbols[pos], symbols[pos + 1]))
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, pos)
        if best is None:
            break
        pos = best[1]
        symbols[pos : pos + 2] = [symbols[pos] + symbols[pos + 1]]
        made.append(symbols[pos])
    return made


class Closure:
    """Adds to a set of kept ids what keeps each of them producible (see the module doc)."""

    def __init__(self, spec: Mapping[str, Any], kind: str):
        self.kind = kind
        self.tokens = id_to_token(spec)
        self.model_vocab = spec["model"]["vocab"]
        self.added = {a["id"] for a in spec.get("added_tokens") or []}
        self.ranks: dict[tuple[str, str], int] = {}
        if kind != "unigram":
            for rank, pair in enumerate(merge_pairs(spec)):
                self.ranks.setdefault(pair, rank)
        self._cache: dict[int, frozenset[int]] = {}

    def parents(self, token_id: int) -> frozenset[int]:
        """``token_id`` and every token along its derivation (its characters included)."""
        if token_id not in self._cache:
            found = {token_id}
            if self.kind != "unigram" and token_id not in self.added:
                token = self.tokens[token_id]
                found.update(self.model_vocab[c] for c in token if c in self.model_vocab)
                found.update(self.model_vocab[t] for t in bpe_derivation(token, self.ranks) if t in self.model_vocab)
            self._cache[token_id] = frozenset(found)
        return self._cache[token_id]

    def __call__(self, ids: Iterable[int]) -> set[int]:
        kept: set[int] = set()
        for token_id in ids:
            kept |= self.parents(token_id)
        return kept


def close_vocabulary(spec: Mapping[str, Any], kind: str, ids: Iterable[int]) -> set[int]:
    """``ids`` plus the parents of each kept token (BPE); Unigram needs none."""
    return Closure(spec, kind)(ids)


def prior_order(spec: Mapping[str, Any], kind: str) -> list[int]:
    """Model-vocabulary ids from the most to the least frequent as the tokenizer was built:
    Unigram by score; BPE by id (SentencePiece and GPT-2 number pieces in merge order)."""
    vocab = spec["model"]["vocab"]
    if kind == "unigram":
        return sorted(range(len(vocab)), key=lambda i: -vocab[i][1])
    return sorted(vocab.values())


@dataclass(frozen=True)
class KeepPlan:
    """The kept ids (sorted: the new id of ``kept[i]`` is ``i``) and where they came from."""

    kept: tuple[int, ...]
    required: int  # specials, byte pieces, config ids
    from_data: int  # seen at least min_count times in the data (before the closure)
    closure: int  # added to keep kept tokens producible
    filled: int  # added by --keep from the larger corpus or the tokenizer's own order


def plan_kept_ids(spec: Mapping[str, Any], kind: str, counts: Mapping[int, int], *, required: Iterable[int] = (),
                  min_count: int = 1, keep: int | None = None, fill_counts: Mapping[int, int] | None = None,
                  vocab_size: int | None = None) -> KeepPlan:
    """The ids to keep: ``required``, the ids counted at least ``min_count`` times, closed;
    with ``keep`` N, then the most frequent ids of ``fill_counts`` and after them the tokenizer's
    own order (``prior_order``), each with its parents, until N ids are kept."""
    total = vocab_size if vocab_size is not None else len(id_to_token(spec))
    if min_count < 1:
        raise ConfigError(f"--min-count must be at least 1, got {min_count}")
    if keep is not None and keep > total:
        raise ConfigError(f"--keep {keep} is larger than the vocabulary ({total} tokens)")
    closure = Closure(spec, kind)
    required = set(required)
    data = {i for i, n in counts.items() if n >= min_count}
    kept = closure(required | data)
    n_closed = len(kept)
    if keep is not None and n_closed > keep:
        raise ConfigError(f"--keep {keep} is smaller than what the data alone needs ({n_closed} tokens: "
                          f"{len(required)} required, the data's {len(data)}, and their parents); raise --keep, "
                          "raise --min-count or leave --keep out")
    filled_before = len(kept)
    if keep is not None:
        ranked = sorted((fill_counts or {}).items(), key=lambda item: (-item[1], item[0]))
        for token_id in [i for i, _n in ranked] + prior_order(spec, kind):
            if len(kept) >= keep:
                break
            extra = closure.parents(token_id) - kept
            if len(kept) + len(extra) <= keep:
                kept |= extra
    return KeepPlan(kept=tuple(sorted(kept)), required=len(required), from_data=len(data - required),
                    closure=n_closed - len(required | data), filled=len(kept) - filled_before)


# ----------------------------------------------------------------------------------------
# The rebuilt tokenizer
# ----------------------------------------------------------------------------------------

def new_ids(kept: Sequence[int]) -> dict[int, int]:
    """Old id -> new id: the kept ids in their old order."""
    return {old: new for new, old in enumerate(kept)}


def trimmed_tokenizer_json(spec: Mapping[str, Any], kind: str, kept: Sequence[int]) -> dict[str, Any]:
    """A copy of ``spec`` that holds only the ``kept`` ids, renumbered in their old order."""
    import copy

    mapping = new_ids(kept)
    out = copy.deepcopy(dict(spec))
    model = out["model"]
    if kind == "unigram":
        model["vocab"] = [model["vocab"][old] for old in kept if old < len(model["vocab"])]
        if model.get("unk_id") is not None:
            model["unk_id"] = mapping[model["unk_id"]]
    else:
        vocab = model["vocab"]
        strings = {piece for piece, i in vocab.items() if i in mapping}
        model["vocab"] = {piece: mapping[i] for piece, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i in mapping}
        merges = model.get("merges") or []
        model["merges"] = [m for m, (a, b) in zip(merges, merge_pairs(spec))
                           if a in strings and b in strings and a + b in strings]
    out["added_tokens"] = [{**a, "id": mapping[a["id"]]} for a in spec.get("added_tokens") or [] if a["id"] in mapping]
    out["post_processor"] = _remap_processor(spec.get("post_processor"), mapping)
    if isinstance(out.get("padding"), dict) and "pad_id" in out["padding"]:
        out["padding"]["pad_id"] = _required_id(mapping, out["padding"]["pad_id"], "padding pad_id")
    return out


def _required_id(mapping: Mapping[int, int], old: int, what: str) -> int:
    if old not in mapping:
        raise ConfigError(f"{what}: token id {old} is not among the kept tokens")
    return mapping[old]


def _remap_processor(node: Any, mapping: Mapping[int, int]) -> Any:
    """A post-processor with its special-token ids renumbered (TemplateProcessing, Roberta/Bert, Sequence)."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    kind = node.get("type")
    if kind == "Sequence":
        node["processors"] = [_remap_processor(p, mapping) for p in node.get("processors", [])]
    elif kind == "TemplateProcessing":
        node["special_tokens"] = {
            name: {**tok, "ids": [_required_id(mapping, i, f"post-processor token {name!r}") for i in tok["ids"]]}
            for name, tok in node.get("special_tokens", {}).items()
        }
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            token, old = node[key]
            node[key] = [token, _required_id(mapping, old, f"post-processor token {token!r}")]
    return node


# ----------------------------------------------------------------------------------------
# Configs and the model
# ----------------------------------------------------------------------------------------

TOKEN_LIST_KEYS = ("suppress_tokens", "begin_suppress_tokens")
UNSUPPORTED_GENERATION_KEYS = ("bad_words_ids", "force_words_ids", "sequence_bias")


def config_token_ids(config: Mapping[str, Any]) -> set[int]:
    """Ids a config names in ``*_token_id`` fields (an int or a list: Gemma's eos may be a list)."""
    found: set[int] = set()
    for key, value in config.items():
        if key.endswith("_token_id") and value is not None:
            found.update(value if isinstance(value, list) else [value])
        elif isinstance(value, dict) and key.endswith("_config"):  # text_config of multimodal configs
            found |= config_token_ids(value)
    return found


def remap_token_ids(config: Mapping[str, Any], mapping: Mapping[int, int], where: str) -> dict[str, Any]:
    """A copy of a config (as a dict) with ``*_token_id`` fields renumbered; the suppress lists
    lose the ids that are gone. Returns only the fields that change."""
    changed: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith("_token_id") and value is not None:
            if isinstance(value, list):
                changed[key] = [_required_id(mapping, i, f"{where} {key}") for i in value]
            else:
                changed[key] = _required_id(mapping, value, f"{where} {key}")
        elif key in TOKEN_LIST_KEYS and value:
            changed[key] = [mapping[i] for i in value if i in mapping]
        elif key in UNSUPPORTED_GENERATION_KEYS and value:
            raise ConfigError(f"{where} sets {key}, which trim-vocab cannot renumber; remove it from the "
                              "generation config first")
    return changed


def trim_model_vocabulary(model, kept: Sequence[int]) -> None:
    """Keep the embedding and LM head rows of ``kept`` (in that order), in place; a tied head
    stays tied; ``vocab_size`` of the config (and its text config) becomes ``len(kept)``."""
    import torch

    embed = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    index = torch.tensor(list(kept), dtype=torch.long, device=embed.weight.device)
    if int(index.max()) >= embed.weight.shape[0]:
        raise ConfigError(f"token id {int(index.max())} is beyond the model's {embed.weight.shape[0]} embedding rows")
    grad = embed.weight.requires_grad
    embed.weight = torch.nn.Parameter(embed.weight.detach().index_select(0, index), requires_grad=grad)
    embed.num_embeddings = len(kept)
    if getattr(embed, "padding_idx", None) is not None:
        embed.padding_idx = new_ids(kept).get(embed.padding_idx)
    if head is not None:
        if tied:
            head.weight = embed.weight
        else:
            head.weight = torch.nn.Parameter(head.weight.detach().index_select(0, index.to(head.weight.device)),
                                             requires_grad=grad)
        if getattr(head, "bias", None) is not None:
            head.bias = torch.nn.Parameter(head.bias.detach().index_select(0, index.to(head.bias.device)),
                                           requires_grad=grad)
        if hasattr(head, "out_features"):
            head.out_features = len(kept)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.vocab_size = len(kept)


# ----------------------------------------------------------------------------------------
# Vocabulary size and the head's share of a token's compute (for `mtprune info`)
# ----------------------------------------------------------------------------------------

def vocabulary_report(model, context: float = 256.0) -> dict[str, Any]:
    """Vocabulary size (LM head rows) and the LM head's share of a decoded token's matmul FLOPs
    at ``context`` tokens attended (see ``bench.per_token_flops``)."""
    from ..model.shape import model_shape, per_token_flops

    head = model.get_output_embeddings()
    rows = head.weight.shape[0] if head is not None else model.get_input_embeddings().weight.shape[0]
    flops = per_token_flops(model_shape(model), context)
    return {"vocab_size": int(rows), "head_flops_share": flops["head"] / flops["total"] if flops["total"] else 0.0,
            "context": context}
