"""Batched greedy translation with transformers (CPU or GPU).

Why it is fast, compared with the loop research scripts write:
- batches are formed from prompts sorted by length, so little padding is computed;
- the prompt prefix that all segments share (instruction, few-shot examples) is encoded
  once per call and its KV cache copied into every batch, so only each segment's own
  tokens are encoded (examples retrieved per segment leave little or nothing in common:
  ``common_prefix_length`` then finds no prefix worth sharing and prompts are encoded whole);
- every segment has its own token budget (from its source length), and a segment stops
  at EOS, at the end of its turn, or - for few-shot prompts - at the end of its first line;
  a finished segment leaves the batch at once, so nothing is computed past its answer;
- prompts are tokenized once and reused across calls (the search translates the same dev
  set hundreds of times);
- the KV cache grows in place (``kvcache.py``) instead of being copied at every step, and
  finished rows are dropped in bulk, not one copy of the cache per finished row;
- ``translate_variants`` translates the same segments with several layer subsets in one
  batch (``layers.VariantRouter``): the search scores many candidate layers at once, and
  the vocabulary projection, most of a small model's decoding step, runs on a large batch;
- out of memory in a batch, its segments (each with all its variants) are split in two halves
  and translated again, halving on as needed, and later batches keep the smaller size: no
  segment is lost or translated twice, and ``describe()`` records each halving
  (``oom_halvings``); a single segment that does not fit raises ``TranslationOutOfMemory``.

Outputs do not depend on the batch size beyond float rounding: padding is masked, position
ids count real tokens only, and each segment is cut at its own budget, not the batch's.
Decoding is plain greedy (argmax); the model's generation_config (repetition penalty and
the like) is not applied.
"""
from __future__ import annotations

import copy
import inspect
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...errors import ConfigError, MtpruneError
from ..prompts import END_OF_TURN_MARKERS, Prompter, clean_output
from .prefix import attention_window, common_prefix_length, fits_window

logger = logging.getLogger(__name__)

_CACHED_SETS = 8  # tokenized source sets kept by HFTranslator.prepare
_MIN_SHARED_PREFIX = 8  # shorter shared prompt prefixes are not worth a separate cache
# A finished row stays in the batch until 1/_COMPACT_EVERY of the batch is finished: dropping
# rows copies the whole KV cache, computing a finished row one more step costs little.
_COMPACT_EVERY = 8

# torch.OutOfMemoryError since torch 2.5; torch.cuda.OutOfMemoryError, the same class, before
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class TranslationOutOfMemory(MtpruneError, OUT_OF_MEMORY):
    """Out of memory on a single segment: halving the batch cannot help.  Still an out-of-memory
    error, so a caller that can shrink its own share (the search's candidate group) does."""


_NEWLINE_PIECES = ("\n", "\r", "Ċ", "<0x0A>", "<0x0D>")


@dataclass(frozen=True)
class TranslationResult:
    hypotheses: list[str]
    generated_tokens: int
    seconds: float
    raw: list[str] | None = None  # decoded generations before cleaning

    @property
    def segments_per_second(self) -> float:
        return len(self.hypotheses) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else float("inf")

    def timing(self) -> dict[str, float]:
        return {
            "seconds": round(self.seconds, 3),
            "segments": len(self.hypotheses),
            "generated_tokens": self.generated_tokens,
            "segments_per_s": round(self.segments_per_second, 3),
            "generated_tokens_per_s": round(self.tokens_per_second, 2),
        }


@dataclass(frozen=True)
class GenerationBudget:
    """Max new tokens of a segment: ``factor * source tokens + extra``, capped."""

    factor: float = 2.0
    extra: int = 8
    cap: int = 256

    def for_source(self, n_source_tokens: int) -> int:
        return max(1, min(self.cap, math.ceil(self.factor * n_source_tokens) + self.extra))

    def to_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "extra": self.extra, "cap": self.cap}


@dataclass
class _Prepared:
    order: list[int]  # segment indices sorted by prompt length, longest first
    prompt_ids: list[list[int]]
    budgets: list[int]
    shared_prefix: int = 0  # leading prompt tokens common to all segments, encoded once (0: off)
    in_window: bool = False  # no row fills a sliding attention window (the growing cache is exact)


def stop_token_ids(tokenizer, model) -> list[int]:
    """EOS ids of the model plus end-of-turn tokens that exist in the vocabulary."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(i) for i in eos)
    # Control tokens such as <end_of_turn> or <|im_start|> are often added tokens flagged
    # special without being in all_special_tokens (which lists only bos/eos/pad/... here);
    # decode(skip_special_tokens=True) drops them, so clean_output could not cut at them later.
    special = set(tokenizer.all_special_tokens)
    special.update(t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[m] for m in END_OF_TURN_MARKERS if m in vocab and m in special)
    return sorted(ids)


def newline_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens whose text contains a line break (the end of a few-shot answer).

    Decoding a 256k vocabulary token by token takes seconds, so only tokens whose piece can
    hold a newline are decoded: a literal newline (SentencePiece), "Ċ" (byte-level BPE) or
    the byte-fallback pieces "<0x0A>"/"<0x0D>".
    """
    return frozenset(
        token_id for piece, token_id in tokenizer.get_vocab().items()
        if any(m in piece for m in _NEWLINE_PIECES) and "\n" in tokenizer.decode([token_id])
    )


def tokenize_prompts(tokenizer, prompter: Prompter, budget: GenerationBudget, sources: Sequence[str],
                     contexts: Sequence | None = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of each segment's full prompt, and each segment's token budget (from its source
    tokens): what every backend feeds its model.  ``contexts``: each segment's document context
    (``Prompter.render``), None for none."""
    if not sources:
        return [], []
    if contexts is None:
        prompts = [prompter.render(s) for s in sources]
    else:
        prompts = [prompter.render(s, c) for s, c in zip(sources, contexts, strict=True)]
    prompt_ids = tokenizer(prompts, add_special_tokens=prompter.add_special_tokens)["input_ids"]
    source_ids = tokenizer(list(sources), add_special_tokens=False)["input_ids"]
    return prompt_ids, [budget.for_source(len(ids)) for ids in source_ids]


def cut_generation(ids: Sequence[int], budget: int, stop_ids: frozenset[int],
                   newline_ids: frozenset[int] | None) -> list[int]:
    """A segment's generated tokens up to the first stop token (excluded) or newline token
    (kept: ``clean_output`` cuts the text there), at most ``budget``."""
    ids = list(ids[:budget])
    for pos, token in enumerate(ids):
        if token in stop_ids:
            return ids[:pos]
        if newline_ids is not None and token in newline_ids:
            return ids[: pos + 1]
    return ids


class HFTranslator:
    """Translate with a transformers causal LM: ``translate(sources) -> TranslationResult``."""

    name = "hf"
    needs_weights = True  # runs the model that load_model loaded

    @classmethod
    def from_loaded(cls, loaded, prompter: Prompter, **kwargs) -> HFTranslator:
        """The translator of a ``models.LoadedModel`` (anything with ``model`` and ``tokenizer``)."""
        if not callable(getattr(loaded.model, "forward", None)):
            raise ConfigError("the hf backend runs the transformers model, but this one was loaded without its "
                              "weights (load_model(weights=False), for vllm)")
        return cls(loaded.model, loaded.tokenizer, prompter, **kwargs)

    def __init__(
        self,
        model,
        tokenizer,
        prompter: Prompter,
        *,
        batch_size: int = 16,
        budget: GenerationBudget | None = None,
        progress: bool = True,
        prefix_cache: bool = True,
        ignore_stops: bool = False,
    ):
        """``ignore_stops``: every segment generates its whole budget (no EOS, end-of-turn or
        newline stop): the same work for every model, to compare speeds (``bench --fixed-new-tokens``)."""
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.prompter = prompter
        self.batch_size = batch_size  # lowered where a batch runs out of memory
        self.requested_batch_size = batch_size
        self.oom_halvings: list[dict[str, int]] = []  # {"from": segments, "to": segments}, in order
        self.budget = budget or GenerationBudget()
        self.progress = progress
        self.prefix_cache = prefix_cache
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            self.pad_id = 0  # padding is masked out; any valid id will do
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.ignore_stops = ignore_stops
        self._stop_set = frozenset() if ignore_stops else frozenset(self.stop_ids)
        self._newline_ids = newline_token_ids(tokenizer) if prompter.stop_at_newline and not ignore_stops else None
        self._cache: dict[tuple[str, ...], _Prepared] = {}
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.2x
        self._keeps_last_logits = "logits_to_keep" in params

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "batch_size": self.requested_batch_size,
            "decoding": "greedy",
            "budget": self.budget.to_dict(),
            "stop_token_ids": self.stop_ids,
            "stop_at_newline": self.prompter.stop_at_newline,
            "ignore_stops": self.ignore_stops,
            "prefix_cache": self.prefix_cache,
            "prompt": self.prompter.describe(),
            **({"oom_halvings": list(self.oom_halvings)} if self.oom_halvings else {}),
        }

    # -- preparation --------------------------------------------------------------------

    def prepare(self, sources: Sequence[str], contexts: Sequence | None = None) -> _Prepared:
        """Tokenized prompts, budgets and batch order of ``sources`` (with their document
        ``contexts``), cached for later calls."""
        key = tuple(sources) if contexts is None else (tuple(sources), tuple(contexts))
        prepared = self._cache.pop(key, None)
        if prepared is None:
            prompt_ids, budgets = tokenize_prompts(self.tokenizer, self.prompter, self.budget, sources, contexts)
            order = sorted(range(len(sources)), key=lambda i: (-len(prompt_ids[i]), i))
            in_window = self._in_window(prompt_ids, budgets)
            shared = self._shared_prefix_length(prompt_ids) if in_window else 0
            prepared = _Prepared(order, prompt_ids, budgets, shared, in_window)
        self._cache[key] = prepared  # most recently used last
        while len(self._cache) > _CACHED_SETS:
            self._cache.pop(next(iter(self._cache)))
        return prepared

    def _shared_prefix_length(self, prompt_ids: list[list[int]]) -> int:
        """Tokens at the start of every prompt (the instruction, few-shot examples) to encode once;
        0 when not worth it.  Only asked where no row fills a sliding attention window: there,
        a window could see the padding between the shared prefix and each segment's own tokens."""
        return common_prefix_length(prompt_ids, _MIN_SHARED_PREFIX) if self.prefix_cache else 0

    def _in_window(self, prompt_ids: list[list[int]], budgets: list[int]) -> bool:
        """Whether the longest prompt plus its budget fits every sliding attention window."""
        if not prompt_ids:
            return False
        return fits_window(attention_window(self.model.config), max(len(ids) for ids in prompt_ids) + max(budgets))

    # -- generation ---------------------------------------------------------------------

    def translate(self, sources: Sequence[str], contexts: Sequence | None = None) -> TranslationResult:
        """``contexts``: each segment's document context (``documents.ContextTranslator`` gives them)."""
        return self.translate_variants(sources, contexts=contexts)[0]

    def translate_variants(self, sources: Sequence[str], router=None,
                           contexts: Sequence | None = None) -> list[TranslationResult]:
        """Translate ``sources`` once per layer subset of ``router`` (a ``VariantRouter`` that is
        active), all subsets in the same batches; without a router, with the model as it is.

        A batch holds every variant of ``batch_size`` segments (variants x segments rows), so
        the vocabulary projection, which dominates a decoding step of small models, runs on a
        batch many times larger.  The seconds of each result are the call's time shared evenly.
        A batch that runs out of memory is halved (``_translate_batch``).
        """
        from tqdm.auto import tqdm

        n_variants = len(router) if router is not None else 1
        prepared = self.prepare(sources, contexts)
        outputs: list[list[list[int]]] = [[[] for _ in sources] for _ in range(n_variants)]
        start = time.perf_counter()
        prefix = self._encode_prefix(prepared, router)
        bar = tqdm(total=len(sources), unit="seg", disable=not self.progress, leave=False, desc="translate")
        begin, size_before, halvings_before = 0, self.batch_size, len(self.oom_halvings)
        try:
            while begin < len(prepared.order):  # self.batch_size may shrink on the way
                batch = prepared.order[begin : begin + self.batch_size]
                for (v, index), ids in self._translate_batch(batch, n_variants, prepared, prefix, router):
                    outputs[v][index] = ids
                begin += len(batch)
                bar.update(len(batch))
        except TranslationOutOfMemory:
            # the call failed: the caller may shrink its share instead (the search halves its
            # candidate group), and should not be left with this call's smaller batches
            self.batch_size = size_before
            del self.oom_halvings[halvings_before:]
            raise
        finally:
            bar.close()
        seconds = (time.perf_counter() - start) / n_variants
        results = []
        for per_variant in outputs:
            raw = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in per_variant]
            hyps = [clean_output(text, self.prompter, source) for text, source in zip(raw, sources)]
            results.append(TranslationResult(hyps, sum(len(o) for o in per_variant), seconds, raw))
        return results

    def _translate_batch(self, batch: list[int], n_variants: int, prepared: _Prepared, prefix=None,
                         router=None) -> list[tuple[tuple[int, int], list[int]]]:
        """((variant, segment) row, generated ids) of every variant of the segments ``batch``.  Out of
        memory, the batch size is halved and the segments are translated in parts of that size
        (each part halved again if need be); a single segment that does not fit raises
        ``TranslationOutOfMemory``."""
        rows = [(v, index) for v in range(n_variants) for index in batch]  # variant-major
        try:
            return list(zip(rows, self._generate(rows, prepared, prefix, router)))
        except OUT_OF_MEMORY as exc:
            if len(batch) == 1:
                raise TranslationOutOfMemory(self._single_segment_message(batch[0], n_variants, prepared)) from exc
        # out of the except block: the failed batch's tensors are no longer referenced
        self._halve_batch_size(len(batch))
        done: list[tuple[tuple[int, int], list[int]]] = []
        begin = 0
        while begin < len(batch):
            part = batch[begin : begin + self.batch_size]
            done += self._translate_batch(part, n_variants, prepared, prefix, router)
            begin += len(part)
        return done

    def _halve_batch_size(self, failed: int) -> None:
        """Record that ``failed`` segments did not fit, and go on with half as many."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.batch_size = min(self.batch_size, math.ceil(failed / 2))
        self.oom_halvings.append({"from": failed, "to": self.batch_size})
        logger.warning("out of memory at batch size %d; going on with %d", failed, self.batch_size)

    def _single_segment_message(self, index: int, n_variants: int, prepared: _Prepared) -> str:
        """What ran out of memory on one segment, and what to try instead."""
        side_by_side = f" with {n_variants} layer subsets side by side" if n_variants > 1 else ""
        requested = self.requested_batch_size
        size = "batch size 1" if requested == 1 else f"batch size 1, halved down from --batch-size {requested}"
        tries = ["a smaller --max-new-tokens", "a smaller --dtype", "another --device"]
        if requested > 1:
            tries.insert(0, "--batch-size 1 from the start (less fragmented memory)")
        if n_variants > 1:
            tries.insert(0, "fewer candidates side by side (--candidate-batch)")
        return (f"out of memory translating a single segment{side_by_side} ({size}): its "
                f"{len(prepared.prompt_ids[index])}-token prompt and {prepared.budgets[index]} new tokens do not "
                f"fit on {self.model.device}. Try {', '.join(tries[:-1])} or {tries[-1]}.")

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        kwargs = {self._cache_arg: cache, "use_cache": True}
        if self._keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        return out.logits[:, -1, :]  # (batch, vocab)

    def _new_cache(self, prepared: _Prepared):
        """The model's own cache, or one that grows in place where that is equivalent."""
        from transformers import DynamicCache

        if prepared.in_window:
            from .kvcache import growing_cache

            return growing_cache(reserve=max(prepared.budgets))
        return DynamicCache(config=self.model.config)

    def _encode_prefix(self, prepared: _Prepared, router=None):
        """KV cache of the shared prompt prefix, one row per variant (1 without a router),
        computed once per call: the model's layers may have changed since the last call (the
        search prunes them in place)."""
        if not prepared.shared_prefix:
            return None
        n_variants = len(router) if router is not None else 1
        ids = torch.tensor([prepared.prompt_ids[0][: prepared.shared_prefix]] * n_variants, device=self.model.device)
        if router is not None:
            router.assign(torch.arange(n_variants, device=ids.device))
        cache = self._new_cache(prepared)
        positions = torch.arange(ids.shape[1], device=ids.device)[None].expand(n_variants, -1)
        with torch.inference_mode():
            self._forward(ids, torch.ones_like(ids), positions, cache)
        return cache

    def _generate(self, rows: list[tuple[int, int]], prepared: _Prepared, prefix=None, router=None) -> list[list[int]]:
        """Greedy continuation token ids of each (variant, segment) row (cut at stop and budget).

        Rows come variant-major (all segments of variant 0, then of variant 1...), each variant
        with the same segments.  Layout of a row: [shared prefix (cached)][left padding][own
        prompt tokens][generated].  Positions count real tokens only, so a row's result does
        not depend on its padding; a row leaves the batch as soon as it stops, and the batch
        ends with its last row.
        """
        device = self.model.device
        shared = prepared.shared_prefix if prefix is not None else 0
        ids_of = [prepared.prompt_ids[index][shared:] for _, index in rows]
        budgets = [prepared.budgets[index] for _, index in rows]
        input_ids, attention = self._pad_left(ids_of, shared)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (batch, shared + width)
        if prefix is not None:
            cache = copy.deepcopy(prefix)  # one row per variant
            cache.batch_repeat_interleave(len(rows) // (len(router) if router is not None else 1))
        else:
            cache = self._new_cache(prepared)
        if router is not None:
            router.assign(torch.tensor([v for v, _ in rows], device=device))
        outputs: list[list[int]] = [[] for _ in rows]
        active = list(range(len(rows)))  # rows in the batch, in cache order
        finished: set[int] = set()  # rows done but not yet dropped from the batch
        with torch.inference_mode():
            logits = self._forward(input_ids, attention, positions[:, shared:], cache)
            next_pos = positions[:, -1:] + 1  # (active, 1)
            while True:
                tokens = logits.argmax(dim=-1)  # (active,)
                for row, token in zip(active, tokens.tolist()):
                    if row not in finished and self._append(outputs[row], token, budgets[row]):
                        finished.add(row)
                if len(finished) == len(rows):
                    break
                done_here = sum(row in finished for row in active)
                if done_here and done_here * _COMPACT_EVERY >= len(active):
                    keep = [j for j, row in enumerate(active) if row not in finished]
                    index = torch.tensor(keep, device=device)
                    cache.batch_select_indices(index)
                    if router is not None:
                        router.select(index)
                    tokens, attention, next_pos = tokens[index], attention[index], next_pos[index]
                    active = [active[j] for j in keep]
                attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=-1)
                logits = self._forward(tokens[:, None], attention, next_pos, cache)
                next_pos = next_pos + 1
        return [self._cut(ids, budget) for ids, budget in zip(outputs, budgets)]

    def _pad_left(self, rows: list[list[int]], shared: int):
        """Input ids (batch, width), left-padded, and the attention mask (batch, shared + width)
        over the cached shared prefix and the inputs."""
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), shared + width), dtype=torch.long)
        attention[:, :shared] = 1
        for r, ids in enumerate(rows):
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, shared + width - len(ids):] = 1
        device = self.model.device
        return input_ids.to(device), attention.to(device)

    def _append(self, out: list[int], token: int, budget: int) -> bool:
        """Add a generated token to a row's output; True when the row is finished."""
        if token in self._stop_set:
            return True
        out.append(token)
        newline = self._newline_ids is not None and token in self._newline_ids
        return newline or len(out) >= budget

    def _cut(self, ids: list[int], budget: int) -> list[int]:
        return cut_generation(ids, budget, self._stop_set, self._newline_ids)
