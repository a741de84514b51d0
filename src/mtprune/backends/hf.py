"""Batched greedy translation with transformers (CPU or GPU).

Why it is fast, compared with the loop research scripts write:
- batches are formed from prompts sorted by length, so little padding is computed;
- every segment has its own token budget (from its source length), and a segment stops
  at EOS, at the end of its turn, or - for few-shot prompts - at the end of its first line,
  so nothing is generated past a complete answer;
- prompts are tokenized once and reused across calls (the search translates the same dev
  set hundreds of times).

Outputs do not depend on the batch size beyond float rounding: padding is on the left
with an attention mask, and each segment is cut at its own budget, not the batch's.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..errors import ConfigError
from ..prompts import END_OF_TURN_MARKERS, Prompter, clean_output

logger = logging.getLogger(__name__)


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


class HFTranslator:
    """Translate with a transformers causal LM: ``translate(sources) -> TranslationResult``."""

    name = "hf"

    def __init__(
        self,
        model,
        tokenizer,
        prompter: Prompter,
        *,
        batch_size: int = 16,
        budget: GenerationBudget | None = None,
        progress: bool = True,
    ):
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.prompter = prompter
        self.batch_size = batch_size
        self.budget = budget or GenerationBudget()
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.stop_ids = stop_token_ids(tokenizer, model)
        self._newline_mask = self._make_newline_mask() if prompter.stop_at_newline else None
        self._cache: dict[tuple[str, ...], _Prepared] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "batch_size": self.batch_size,
            "decoding": "greedy",
            "budget": self.budget.to_dict(),
            "stop_token_ids": self.stop_ids,
            "stop_at_newline": self.prompter.stop_at_newline,
            "prompt": self.prompter.describe(),
        }

    # -- preparation --------------------------------------------------------------------

    def _make_newline_mask(self):
        """Boolean mask over the vocabulary: tokens whose text contains a line break.

        Decoding each of a 256k vocabulary one by one takes seconds, so only tokens whose
        piece can hold a newline are decoded: a literal newline (SentencePiece), "Ċ"
        (byte-level BPE) or the byte-fallback piece "<0x0A>".
        """
        vocab_size = max(len(self.tokenizer), self.model.get_output_embeddings().weight.shape[0])
        mask = torch.zeros(vocab_size, dtype=torch.bool)
        for piece, token_id in self.tokenizer.get_vocab().items():
            if any(m in piece for m in _NEWLINE_PIECES) and "\n" in self.tokenizer.decode([token_id]):
                mask[token_id] = True
        return mask.to(self.model.device)

    def prepare(self, sources: Sequence[str]) -> _Prepared:
        key = tuple(sources)
        if key not in self._cache:
            add_special = self.prompter.add_special_tokens
            prompts = [self.prompter.render(s) for s in sources]
            prompt_ids = self.tokenizer(prompts, add_special_tokens=add_special)["input_ids"]
            source_ids = self.tokenizer(list(sources), add_special_tokens=False)["input_ids"]
            budgets = [self.budget.for_source(len(ids)) for ids in source_ids]
            order = sorted(range(len(sources)), key=lambda i: (-len(prompt_ids[i]), i))
            self._cache = {key: _Prepared(order=order, prompt_ids=prompt_ids, budgets=budgets)}
        return self._cache[key]

    # -- generation ---------------------------------------------------------------------

    def translate(self, sources: Sequence[str]) -> TranslationResult:
        from tqdm.auto import tqdm

        prepared = self.prepare(sources)
        outputs: list[list[int]] = [[] for _ in sources]
        start = time.perf_counter()
        bar = tqdm(total=len(sources), unit="seg", disable=not self.progress, leave=False, desc="translate")
        for begin in range(0, len(prepared.order), self.batch_size):
            batch = prepared.order[begin : begin + self.batch_size]
            for index, ids in zip(batch, self._generate(batch, prepared)):
                outputs[index] = ids
            bar.update(len(batch))
        bar.close()
        seconds = time.perf_counter() - start
        raw = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in outputs]
        hyps = [clean_output(text, self.prompter, source) for text, source in zip(raw, sources)]
        return TranslationResult(hyps, sum(len(o) for o in outputs), seconds, raw)

    def _generate(self, batch: list[int], prepared: _Prepared) -> list[list[int]]:
        """Greedy continuation token ids of each segment in ``batch`` (cut at stop and budget)."""
        rows = [prepared.prompt_ids[i] for i in batch]
        budgets = [prepared.budgets[i] for i in batch]
        width = max(len(r) for r in rows)
        device = self.model.device
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids):] = 1
        criteria = _StopCriteria(width, budgets, self._newline_mask, device)
        with torch.inference_mode():
            generated = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max(budgets),
                do_sample=False,
                num_beams=1,
                eos_token_id=self.stop_ids or None,
                pad_token_id=self.pad_id,
                stopping_criteria=StoppingCriteriaList([criteria]),
            )
        new = generated[:, width:].tolist()
        return [self._cut(ids, budget) for ids, budget in zip(new, budgets)]

    def _cut(self, ids: list[int], budget: int) -> list[int]:
        """Keep tokens up to the first stop token (excluded) or newline token, at most ``budget``."""
        ids = ids[:budget]
        for pos, token in enumerate(ids):
            if token in self.stop_ids:
                return ids[:pos]
            if self._newline_mask is not None and bool(self._newline_mask[token]):
                return ids[: pos + 1]
        return ids


class _StopCriteria(StoppingCriteria):
    """Per-row stop: own token budget reached, or (few-shot) a newline was generated."""

    def __init__(self, prompt_width: int, budgets: list[int], newline_mask, device):
        self.prompt_width = prompt_width
        self.budgets = torch.tensor(budgets, device=device)
        self.newline_mask = newline_mask

    def __call__(self, input_ids, scores, **kwargs):
        generated = input_ids.shape[1] - self.prompt_width
        done = self.budgets <= generated
        if self.newline_mask is not None:
            done = done | self.newline_mask[input_ids[:, -1]]
        return done
