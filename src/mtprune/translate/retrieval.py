"""Few-shot examples retrieved per segment: the sentences of the example pool (the translation
memory) whose sources are most like the segment's, by BM25 over words.

The index is built once per pool and kept for the process (keyed by the pool's data hash): the
search, the evaluation and the fine-tuning of one run share it.  Retrieval is deterministic:
equal scores rank by pool order, and a query with no word in common with the pool gets the
pool's first sentences.  Examples come most similar LAST, next to the segment they help with.

Words are lower-cased runs of letters and digits; a character of a script written without
spaces (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) is a word of its own.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..data.specs import Segment, data_hash
from ..config import Problem, as_flags, one_of
from ..errors import ConfigError

logger = logging.getLogger(__name__)

SHOTS_BY = ("random", "similar")
DEFAULT_SHOTS_BY = "similar"
BM25_K1, BM25_B = 1.5, 0.75
_UNSPACED = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_UNSPACED}]|[^\W{_UNSPACED}]+")
_INDEXES: dict[str, ExampleIndex] = {}  # pool hash -> index, for the process


def shots_by_problems(value: str, field: str = "shots_by") -> list[Problem]:
    """What is wrong with a way of choosing examples as the setting ``field`` (nothing for a valid one)."""
    return one_of(field, value, SHOTS_BY, "few-shot selection")


def check_shots_by(value: str) -> None:
    """Raise a ConfigError (``--shots-by: ...``) for a way of choosing examples that does not exist."""
    for line in as_flags(shots_by_problems(value)):
        raise ConfigError(line)


def words(text: str) -> list[str]:
    """The words BM25 matches on (see the module docstring)."""
    return _WORD.findall(text.lower())


class ExampleIndex:
    """BM25 over the sources of a pool of segments with references, one entry per distinct source.

    Postings are stored by term like a CSR matrix (``starts``, ``docs``, ``weights``): a query
    adds up the BM25 weights of its words' postings into one score per pool sentence.
    """

    def __init__(self, pool: Sequence[Segment]):
        import numpy as np

        self.pool = _distinct_sources(pool)
        self.pool_hash = data_hash(self.pool)
        self._row_of_source = {s.source.strip(): i for i, s in enumerate(self.pool)}
        term_ids: dict[str, int] = {}
        doc_of, term_of, lengths = [], [], []
        for doc, segment in enumerate(self.pool):
            tokens = words(segment.source)
            lengths.append(len(tokens))
            for token in tokens:
                term_of.append(term_ids.setdefault(token, len(term_ids)))
                doc_of.append(doc)
        self.terms = term_ids
        self._build_postings(np.asarray(term_of, dtype=np.int64), np.asarray(doc_of, dtype=np.int64),
                             np.asarray(lengths, dtype=np.float64))

    def _build_postings(self, term_of, doc_of, lengths) -> None:
        """BM25 weight of every (term, sentence) pair, grouped by term."""
        import numpy as np

        n_docs, n_terms = len(self.pool), len(self.terms)
        pairs, counts = np.unique(term_of * max(n_docs, 1) + doc_of, return_counts=True)  # sorted by term
        terms, self.docs = pairs // max(n_docs, 1), pairs % max(n_docs, 1)
        df = np.bincount(terms, minlength=n_terms)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        mean_length = lengths.mean() if n_docs and lengths.sum() else 1.0
        norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths[self.docs] / mean_length)
        self.weights = idf[terms] * counts * (BM25_K1 + 1) / (counts + norm)
        self.starts = np.concatenate([[0], np.cumsum(df)])

    def __len__(self) -> int:
        return len(self.pool)

    def scores(self, query: str):
        """BM25 score of every pool sentence for ``query`` (a float array in pool order)."""
        import numpy as np

        scores = np.zeros(len(self.pool))
        for token, count in _counts(words(query)).items():
            term = self.terms.get(token)
            if term is not None:
                lo, hi = self.starts[term], self.starts[term + 1]
                scores[self.docs[lo:hi]] += count * self.weights[lo:hi]
        return scores

    def nearest(self, query: str, k: int) -> list[Segment]:
        """The ``k`` pool segments most like ``query``, most similar LAST; never one with the
        query's own source; equal scores rank by pool order."""
        import numpy as np

        scores = self.scores(query)
        own = self._row_of_source.get(query.strip())
        if own is not None:
            scores[own] = -np.inf
        k = min(k, len(self.pool) - (own is not None))
        if k <= 0:
            return []
        kth_best = np.partition(scores, len(scores) - k)[len(scores) - k]
        rows = np.flatnonzero((scores >= kth_best) & np.isfinite(scores))
        best_first = rows[np.lexsort((rows, -scores[rows]))][:k]
        return [self.pool[i] for i in best_first[::-1]]


def example_index(pool: Sequence[Segment]) -> ExampleIndex:
    """The index of ``pool``, built once per process (keyed by the pool's data hash)."""
    key = data_hash(pool)
    if key not in _INDEXES:
        start = time.perf_counter()
        _INDEXES[key] = ExampleIndex(pool)
        logger.info("few-shot retrieval: indexed %d example sentences (%d words) in %.2f s", len(_INDEXES[key]),
                    len(_INDEXES[key].terms), time.perf_counter() - start)
    return _INDEXES[key]


@dataclass(frozen=True)
class Retriever:
    """Per-segment few-shot examples: ``retriever(source)`` -> ``k`` segments, most similar last."""

    index: ExampleIndex
    k: int

    def __call__(self, source: str) -> list[Segment]:
        return self.index.nearest(source, self.k)

    def describe(self) -> dict[str, Any]:
        """The method and the pool it searches (distinct sources), for run records."""
        return {"method": "bm25", "k1": BM25_K1, "b": BM25_B, "pool_hash": self.index.pool_hash,
                "pool_size": len(self.index)}


def _distinct_sources(pool: Sequence[Segment]) -> tuple[Segment, ...]:
    """The pool without repeated sources (the first of each kept): the same example twice helps nothing."""
    seen: set[str] = set()
    kept = []
    for segment in pool:
        key = segment.source.strip()
        if key not in seen:
            seen.add(key)
            kept.append(segment)
    return tuple(kept)


def _counts(tokens: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for token in tokens:
        counts[token] = counts.get(token, 0) + 1
    return counts

