"""Cheap layer-importance signals: pure functions on a model and token batches.

- ``reference_logprob``: teacher-forced mean log-likelihood of the reference translations
  given the prompt (one forward pass over the dev set; higher = the model still translates);
- ``layer_similarities``: for every current layer, the cosine between its input and output
  hidden states, as Block Influence (ShortGPT: 1 - cos) and angular distance (arccos(cos)/pi).
  A layer whose output barely differs from its input matters little.

Inputs are teacher-forced sequences: prompt ids followed by reference ids.
"""
from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..translate.backends.prefix import attention_window, common_prefix_length, fits_window
from ..model.layers import find_layer_stack


@dataclass(frozen=True)
class ForcedSequence:
    """Prompt ids followed by target ids; only the target is scored."""

    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


def forced_sequences(tokenizer, prompts: Sequence[str], targets: Sequence[str], *, add_special_tokens: bool,
                     separator: str = "") -> list[ForcedSequence]:
    """Tokenize prompts and targets separately (so the target boundary is exact)."""
    prompt_ids = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    target_ids = tokenizer([separator + t for t in targets], add_special_tokens=False)["input_ids"]
    return [ForcedSequence(tuple(p), tuple(t)) for p, t in zip(prompt_ids, target_ids) if t]


def left_padded(seqs: Sequence[ForcedSequence], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), each (batch, width), padded on the left."""
    width = max(s.length for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        full = seq.prompt_ids + seq.target_ids
        ids[row, width - len(full):] = torch.tensor(full)
        mask[row, width - len(full):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def length_batches(seqs: Sequence[ForcedSequence], max_tokens: int) -> list[list[ForcedSequence]]:
    """Batches of similar length (longest first) whose padded size stays under ``max_tokens``."""
    ordered = sorted(seqs, key=lambda s: -s.length)
    batches: list[list[ForcedSequence]] = []
    for seq in ordered:
        if batches and (len(batches[-1]) + 1) * batches[-1][0].length <= max_tokens:
            batches[-1].append(seq)
        else:
            batches.append([seq])
    return batches


@dataclass(frozen=True)
class LogProb:
    total: float  # summed log-probability of all target tokens
    tokens: int

    @property
    def mean(self) -> float:
        return self.total / self.tokens if self.tokens else float("nan")


def shared_prefix_length(seqs: Sequence[ForcedSequence], minimum: int = 8) -> int:
    """Leading prompt tokens common to every sequence (each keeps >= 1 own prompt token)."""
    return common_prefix_length([s.prompt_ids for s in seqs], minimum)


def _prefix_is_safe(model, seqs: Sequence[ForcedSequence]) -> bool:
    """A sliding attention window must see the whole row, or padding changes the result."""
    return fits_window(attention_window(model.config), max(s.length for s in seqs))


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def reference_logprob(model, seqs: Sequence[ForcedSequence], *, pad_id: int, logits_budget: int = 1 << 26,
                      share_prefix: bool = True) -> LogProb:
    """Summed log-likelihood of the target tokens of ``seqs`` under ``model`` as it is."""
    return reference_logprobs(model, seqs, pad_id=pad_id, logits_budget=logits_budget, share_prefix=share_prefix)[0]


LOGITS_BUDGET = 1 << 26  # floats of logits a reference_logprobs batch materializes at most


@torch.inference_mode()
def reference_logprobs(model, seqs: Sequence[ForcedSequence], *, pad_id: int, router=None,
                       logits_budget: int = LOGITS_BUDGET, share_prefix: bool = True) -> list[LogProb]:
    """Summed log-likelihood of the target tokens of ``seqs``, once per layer subset of
    ``router`` (an active ``VariantRouter``; without one, the model as it is), all subsets in
    the same batches (rows variant-major).

    The prompt start that all sequences share (instruction, few-shot examples) is encoded
    once per subset and its KV cache reused by every batch. Only the logits of the last
    ``max target + 1`` positions are materialized, in batches sized so that
    rows x positions x vocabulary stays under ``logits_budget`` floats.
    """
    from transformers import DynamicCache

    n_variants = len(router) if router is not None else 1
    vocab = model.get_output_embeddings().weight.shape[0]
    shared = shared_prefix_length(seqs) if share_prefix and _prefix_is_safe(model, seqs) else 0
    cache_arg = _cache_kwarg(model)
    prefix = None
    if shared:
        ids = torch.tensor([seqs[0].prompt_ids[:shared]] * n_variants, device=model.device)
        if router is not None:
            router.assign(torch.arange(n_variants, device=ids.device))
        prefix = DynamicCache(config=model.config)
        model(input_ids=ids, attention_mask=torch.ones_like(ids), **{cache_arg: prefix}, use_cache=True, logits_to_keep=1)
    totals, count = [0.0] * n_variants, 0
    for batch in _logit_batches(seqs, vocab, logits_budget, n_variants):
        own = [ForcedSequence(s.prompt_ids[shared:], s.target_ids) for s in batch]
        ids, mask, positions = left_padded(own, pad_id, model.device)
        kwargs = {}
        if prefix is not None:
            mask = torch.cat([mask.new_ones((len(own), shared)), mask], dim=-1)  # (batch, shared + width)
            positions = ((mask.cumsum(-1) - 1).clamp(min=0))[:, shared:]
            cache = copy.deepcopy(prefix)  # one row per variant
            cache.batch_repeat_interleave(len(own))
            kwargs = {cache_arg: cache, "use_cache": True}
        ids, mask, positions = (t.repeat(n_variants, 1) for t in (ids, mask, positions))
        if router is not None:
            router.assign(torch.arange(n_variants, device=ids.device).repeat_interleave(len(own)))
        keep = max(len(s.target_ids) for s in batch) + 1
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep, **kwargs).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (variants x batch, keep, vocab)
        for v in range(n_variants):
            for row, seq in enumerate(batch):
                n = len(seq.target_ids)
                # logits at position p predict token p+1: targets are the last n tokens of the row
                rows = logprobs[v * len(batch) + row, keep - n - 1 : keep - 1]  # (n, vocab)
                target = torch.tensor(seq.target_ids, device=rows.device)
                totals[v] += rows.gather(-1, target[:, None]).sum().item()
        count += sum(len(s.target_ids) for s in batch)
    return [LogProb(total=total, tokens=count) for total in totals]


def _logit_batches(seqs, vocab: int, budget: int, copies: int = 1) -> list[list[ForcedSequence]]:
    """Length-sorted batches whose ``copies`` x rows fit the logits budget and 16k tokens."""
    ordered = sorted(seqs, key=lambda s: (-len(s.target_ids), -s.length))
    batches: list[list[ForcedSequence]] = []
    for seq in ordered:
        if batches:
            rows = (len(batches[-1]) + 1) * copies
            keep = len(batches[-1][0].target_ids) + 1
            width = max(batches[-1][0].length, seq.length)
            if rows * keep * vocab <= budget and rows * width <= 16384:
                batches[-1].append(seq)
                continue
        batches.append([seq])
    return batches


@dataclass(frozen=True)
class LayerSimilarity:
    """Per current layer position: mean cosine between input and output hidden states."""

    cosine: tuple[float, ...]
    angular: tuple[float, ...]  # mean arccos(cos)/pi, in [0, 1]

    @property
    def block_influence(self) -> tuple[float, ...]:
        return tuple(1.0 - c for c in self.cosine)


@torch.inference_mode()
def layer_similarities(model, seqs: Sequence[ForcedSequence], *, pad_id: int, max_tokens: int = 4096) -> LayerSimilarity:
    """Input/output cosine of every layer of the current stack, averaged over real tokens."""
    layers = list(find_layer_stack(model).layers)
    n = len(layers)
    cos_sum = torch.zeros(n, dtype=torch.float64)
    ang_sum = torch.zeros(n, dtype=torch.float64)
    count = 0
    state: dict[str, torch.Tensor] = {}
    inputs: dict[int, torch.Tensor] = {}

    def pre_hook(pos):
        def hook(module, args, kwargs):
            inputs[pos] = args[0] if args else kwargs["hidden_states"]
        return hook

    def post_hook(pos):
        def hook(module, args, kwargs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            cos = torch.nn.functional.cosine_similarity(inputs.pop(pos).float(), out.float(), dim=-1)  # (batch, seq)
            real = state["mask"]
            cos = cos[real].double().clamp(-1.0, 1.0)
            cos_sum[pos] += cos.sum().cpu()
            ang_sum[pos] += (torch.arccos(cos) / math.pi).sum().cpu()
        return hook

    handles = []
    for pos, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(pre_hook(pos), with_kwargs=True))
        handles.append(layer.register_forward_hook(post_hook(pos), with_kwargs=True))
    try:
        for batch in length_batches(seqs, max_tokens):
            ids, mask, positions = left_padded(batch, pad_id, model.device)
            state["mask"] = mask.bool()
            model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            count += int(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
    return LayerSimilarity(
        cosine=tuple((cos_sum / count).tolist()),
        angular=tuple((ang_sum / count).tolist()),
    )
