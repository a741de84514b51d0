"""Translate a data set and score it: the pieces shared by translate, evaluate, search and quickstart."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import DataSpec, Segment, data_hash, fewshot_pool, load_segments
from .errors import ConfigError, DataError
from .metrics import failure_indicators, score_all

logger = logging.getLogger(__name__)


@dataclass
class PairTask:
    """One language pair's segments, with what identifies them."""

    spec: DataSpec
    segments: list[Segment]
    data_hash: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.segments[0].src_lang}-{self.segments[0].tgt_lang}"

    @property
    def sources(self) -> list[str]:
        return [s.source for s in self.segments]

    @property
    def references(self) -> list[str]:
        refs = [s.reference for s in self.segments]
        if any(r is None for r in refs):
            raise DataError(f"{self.spec.spec}: references are required for scoring (pass --ref FILE or a file with a target column)")
        return refs  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "src": self.segments[0].src_lang,
            "tgt": self.segments[0].tgt_lang,
            "data": self.spec.spec,
            "part": self.spec.part,
            "limit": self.spec.limit,
            "seed": self.spec.seed,
            "data_hash": self.data_hash,
            "n_segments": len(self.segments),
            "weight": self.weight,
        }


def load_pair(spec: DataSpec, weight: float = 1.0) -> PairTask:
    """Load a pair's segments; an empty selection is an error."""
    segments = load_segments(spec)
    if not segments:
        raise DataError(f"{spec.spec}: no segments selected (part={spec.part}, limit={spec.limit})")
    return PairTask(spec=spec, segments=segments, data_hash=data_hash(segments), weight=weight)


def make_translator(loaded, pair: PairTask, *, prompt: str = "auto", shots: int = 3, backend: str = "hf",
                    batch_size: int = 16, max_new_tokens: int | None = None, progress: bool = True):
    """A translator for ``pair``; few-shot examples never come from the scored segments."""
    from .backends import backend_class
    from .prompts import build_prompter

    examples: Sequence[Segment] = ()
    wants_examples = prompt == "fewshot" or (prompt == "auto" and not getattr(loaded.tokenizer, "chat_template", None))
    if wants_examples and shots > 0:
        try:
            examples = fewshot_pool(pair.spec, {s.id for s in pair.segments}, shots)
        except DataError as exc:
            raise ConfigError(f"{exc}; pass --shots 0, or data with more segments outside the scored ones") from exc
    prompter = build_prompter(loaded.tokenizer, prompt, pair.spec.src, pair.spec.tgt, examples)
    kwargs: dict[str, Any] = {"batch_size": batch_size, "progress": progress}
    if max_new_tokens is not None:
        from .backends.hf import GenerationBudget

        kwargs["budget"] = GenerationBudget(cap=max_new_tokens)
    return backend_class(backend)(loaded.model, loaded.tokenizer, prompter, **kwargs)


def score_hypotheses(pair: PairTask, hypotheses: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """Metric scores with signatures, and translation failure counts."""
    if len(hypotheses) != len(pair.segments):
        raise DataError(
            f"{len(hypotheses)} hypotheses for {len(pair.segments)} segments of {pair.spec.spec}: "
            "the hypothesis file must have one line per segment, in the data's order"
        )
    scores = score_all(metrics, list(hypotheses), pair.references, tgt_lang=pair.spec.tgt)
    failures = failure_indicators(pair.sources, list(hypotheses))
    return {"scores": {name: s.to_dict() for name, s in scores.items()}, "failures": failures.to_dict()}
