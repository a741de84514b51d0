"""Scores of the model restricted to sets of its original layers (``SubsetEvaluator``): translated
side by side through shared-weight layer subsets, scored per language pair, combined, and cached in
the search trace."""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..eval.metrics import higher_is_better, make_scorer
from ..translate.documents import DocumentScorer, has_documents, reference_contexts
from .config import SearchConfig
from .trace import Trace, trace_key

logger = logging.getLogger(__name__)


def even_groups(items: list, max_size: int) -> list[list]:
    """Consecutive groups of at most ``max_size`` items, as even in size as can be."""
    if not items:
        return []
    n_groups = -(-len(items) // max_size)
    size = -(-len(items) // n_groups)
    return [items[i : i + size] for i in range(0, len(items), size)]


class SubsetEvaluator:
    """Scores of the model restricted to a set of original layers, cached in the trace."""

    def __init__(self, loaded, surgeon, pairs, cfg: SearchConfig, trace: Trace):
        from ..translate.translator import make_translator

        self.loaded, self.surgeon, self.pairs, self.cfg, self.trace = loaded, surgeon, pairs, cfg, trace
        self.metric = cfg.metric_name
        self.translators = [make_translator(loaded, p, cfg.translation, progress=False) for p in pairs]
        self.scorers = [self._scorer(p) for p in pairs]
        self._forced = None
        self._max_group = cfg.candidates_per_batch  # lowered after running out of memory
        self.pool = None  # workers.WorkerPool: the qualities computed on Ray workers
        self.pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else loaded.tokenizer.eos_token_id

    def _scorer(self, pair):
        """The metric over ``pair``'s segments, or over its documents (--score-by document)."""
        if self.cfg.score_by == "document":
            if not has_documents(pair.segments):
                logger.warning("--score-by document: %s has no document ids, so each segment is a document of its "
                               "own (name the document column with --doc-col)", pair.spec.spec)
            return DocumentScorer(self.metric, pair.segments, tgt_lang=pair.spec.tgt)
        return make_scorer(self.metric, pair.references, tgt_lang=pair.spec.tgt, sources=pair.sources,
                           comet=self.cfg.comet)

    def signature(self) -> str:
        return self.scorers[0].signature

    def combine(self, per_pair: dict[str, float], sign: float = 1.0) -> float:
        """Combine per-pair values (higher is better after ``sign``) into one number."""
        values = [per_pair[p.name] for p in self.pairs]
        if self.cfg.combine == "min":
            return min(values, key=lambda v: sign * v)
        weights = [p.weight for p in self.pairs] if self.cfg.combine == "weighted" else [1.0] * len(values)
        return sum(w * v for w, v in zip(weights, values)) / sum(weights)

    def quality(self, kept: Sequence[int]) -> dict[str, Any]:
        """Translate every pair with only ``kept`` layers and score: {"score", "per_pair", "seconds"}."""
        return self.qualities([kept])[0]

    def qualities(self, subsets: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
        """``quality`` of every subset; the missing ones are translated ``candidate_batch`` at a time
        in shared batches (``VariantRouter``)."""
        return self._cached_subsets("quality", subsets, self.pool.qualities if self.pool else self.translate_groups)

    def _cached_subsets(self, kind: str, subsets: Sequence[Sequence[int]],
                        compute: Callable[[list[list[int]]], Iterable[tuple[str, Any]]]) -> list[Any]:
        """The trace's value of ``kind`` for every subset, in order; ``compute(missing subsets)``
        yields ``(key, value)`` for those not recorded yet."""
        keys = {trace_key(kind, kept): list(kept) for kept in subsets}
        values = self.trace.cached_many(list(keys), lambda missing: compute([keys[k] for k in missing]))
        return [values[trace_key(kind, kept)] for kept in subsets]

    def translate_groups(self, subsets: list[list[int]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """(trace key, quality record) of each subset, translated ``candidate_batch`` at a time."""
        def measure(i: int, router) -> list[float]:
            results = self.translators[i].translate_variants(self.pairs[i].sources, router)
            return [self.scorers[i](result.hypotheses).value for result in results]

        sign = 1.0 if higher_is_better(self.metric) else -1.0
        return self._measure_groups("quality", subsets, measure, digits=4, sign=sign)

    def _measure_groups(self, kind: str, subsets: list[list[int]], measure: Callable[[int, Any], list[float]],
                        digits: int, sign: float = 1.0) -> Iterator[tuple[str, dict[str, Any]]]:
        """Evaluate ``subsets`` group by group: ``measure(pair index, router)`` gives one value per
        subset of the group; yields each subset's trace key and record."""
        def run(group: list[list[int]], router) -> list[dict[str, float]]:
            per_pair: list[dict[str, float]] = [{} for _ in group]
            for i, pair in enumerate(self.pairs):
                for values, value in zip(per_pair, measure(i, router)):
                    values[pair.name] = round(value, digits)
            return per_pair

        for group in self._groups(subsets):
            start = time.perf_counter()
            per_pair = self._run_group(group, run)
            seconds = round((time.perf_counter() - start) / len(group), 3)
            for kept, values in zip(group, per_pair):
                yield trace_key(kind, kept), {"score": round(self.combine(values, sign), digits), "per_pair": values,
                                         "seconds": seconds}

    def _run_group(self, group: list[list[int]], run: Callable[[list[list[int]], Any], list]) -> list:
        """``run(group, router)``, one result per subset; out of memory, the group is halved (and
        later groups stay at most that large)."""
        import torch

        from ..translate.backends.hf import OUT_OF_MEMORY as out_of_memory
        try:
            with self._routed(group) as router:
                return run(group, router)
        except out_of_memory:
            if len(group) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._max_group = len(group) // 2
            logger.warning("out of memory with %d candidates side by side; going on with at most %d "
                           "(--candidate-batch sets this)", len(group), self._max_group)
            return [result for part in even_groups(group, self._max_group) for result in self._run_group(part, run)]

    def _groups(self, subsets: list[list[int]]) -> list[list[list[int]]]:
        return even_groups(subsets, min(self.cfg.candidates_per_batch, self._max_group))

    @contextlib.contextmanager
    def _routed(self, group: list[list[int]]):
        """One subset: the model switched to it (router None); several: a ``VariantRouter``."""
        from ..model.layers import VariantRouter

        if len(group) == 1:
            with self.surgeon.subset(group[0]):
                yield None
        else:
            with VariantRouter(self.surgeon, group) as router:
                yield router

    def prefix_hypotheses(self, subsets: Sequence[Sequence[int]], size: int) -> list[list[str]]:
        """Hypotheses of the first pair's first ``size`` segments with only the layers of each
        subset (the subsets side by side, like ``qualities``)."""
        kind = f"hyps{size}"

        def compute(missing: list[list[int]]) -> Iterator[tuple[str, list[str]]]:
            sources = self.pairs[0].sources[:size]
            for group in self._groups(missing):
                results = self._run_group(group, lambda g, router: self.translators[0].translate_variants(sources, router))
                for kept, result in zip(group, results):
                    yield trace_key(kind, kept), result.hypotheses

        return self._cached_subsets(kind, subsets, compute)

    def forced(self):
        """Teacher-forced (prompt, reference) token sequences of every pair, built once."""
        if self._forced is None:
            from .importance import forced_sequences

            self._forced = []
            for pair, translator in zip(self.pairs, self.translators):
                prompter = translator.prompter
                contexts = reference_contexts(pair.segments, self.cfg.translation.context_settings)  # teacher forcing: references
                prompts = [prompter.render(s, c) for s, c in zip(pair.sources, contexts)]
                sep = " " if prompter.stop_at_newline else ""
                self._forced.append(forced_sequences(self.loaded.tokenizer, prompts, pair.references,
                                                     add_special_tokens=prompter.add_special_tokens, separator=sep))
        return self._forced

    def logprobs(self, subsets: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
        """Mean reference log-likelihood per pair with only the layers of each subset."""
        return self._cached_subsets("logprob", subsets, self._logprob_groups)

    def _logprob_groups(self, subsets: list[list[int]]) -> Iterator[tuple[str, dict[str, Any]]]:
        from .importance import reference_logprobs

        def measure(i: int, router) -> list[float]:
            seqs = self.forced()[i]
            return [lp.mean for lp in reference_logprobs(self.loaded.model, seqs, pad_id=self.pad_id, router=router)]

        return self._measure_groups("logprob", subsets, measure, digits=6)

    def similarities(self, kept: Sequence[int]) -> dict[str, Any]:
        """Block Influence and angular distance of each layer in ``kept`` (original id -> value),
        and the seconds they took."""
        from .importance import layer_similarities

        def compute():
            start = time.perf_counter()
            bi: dict[str, list[float]] = {}
            ang: dict[str, list[float]] = {}
            with self.surgeon.subset(kept):
                for seqs in self.forced():
                    sim = layer_similarities(self.loaded.model, seqs, pad_id=self.pad_id)
                    for layer, b, a in zip(kept, sim.block_influence, sim.angular):
                        bi.setdefault(str(layer), []).append(b)
                        ang.setdefault(str(layer), []).append(a)
            mean = lambda xs: round(sum(xs) / len(xs), 6)  # noqa: E731
            return {"block-influence": {k: mean(v) for k, v in bi.items()},
                    "angular": {k: mean(v) for k, v in ang.items()},
                    "seconds": round(time.perf_counter() - start, 3)}
        return self.trace.cached(trace_key("similarity", kept), compute)
