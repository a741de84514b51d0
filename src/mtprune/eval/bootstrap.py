"""Paired bootstrap resampling (Koehn 2004): is system B really better than A on the same segments?

Corpus metrics (chrF, BLEU, TER) are not means of segment scores; the bootstrap therefore
resamples per-segment sufficient statistics (``Scorer.statistics``) and recomputes the corpus score
from their sums, with sacrebleu's own formula.  COMET's statistics are (score, 1) per segment
(``MeanScorer``), so the same resampling gives the mean.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from .comet import CometSettings
from .metrics import as_segments, check_same_length, canonical_metric, higher_is_better, make_scorer

__all__ = ["BootstrapResult", "paired_bootstrap"]


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of system B against system A on the same segments.

    ``delta`` is ``score_b - score_a`` (negative means B is better for TER); ``ratio_ci`` the
    interval of ``score_b / score_a`` (the share of A's score that B keeps; None where A's score
    can be 0 in a resample).
    ``p_value`` is the fraction of resamples in which B is not better than A
    (one-sided; its resolution is ``1 / n_samples``).
    """

    metric: str
    score_a: float
    score_b: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    delta: float
    delta_ci: tuple[float, float]
    p_value: float
    n_samples: int
    seed: int
    confidence: float = 0.95
    ratio_ci: tuple[float, float] | None = None

    def is_significant(self, alpha: float = 0.05) -> bool:
        """True when B beats A in at least ``1 - alpha`` of the resamples."""
        return self.p_value < alpha

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("ci_a", "ci_b", "delta_ci", "ratio_ci"):
            out[key] = None if out[key] is None else list(out[key])
        return out


def _bootstrap_indices(n_segments: int, n_samples: int, seed: int) -> np.ndarray:
    """Resampled segment indices, shape (n_samples, n_segments), with replacement."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_segments, size=(n_samples, n_segments))


def _resampled_sums(stats: np.ndarray, indices: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Statistics summed over each resample: (n_samples, n_stats).

    Each resample becomes a vector of per-segment counts, so the sums are one
    matrix product; chunks bound the memory of the count matrix.
    """
    n_samples, n_segments = indices.shape
    sums = np.empty((n_samples, stats.shape[1]), dtype=np.float64)
    for start in range(0, n_samples, chunk):
        block = indices[start:start + chunk]
        rows = len(block)
        offsets = (np.arange(rows) * n_segments)[:, None]
        counts = np.bincount((block + offsets).ravel(), minlength=rows * n_segments)
        sums[start:start + rows] = counts.reshape(rows, n_segments).astype(np.float64) @ stats
    return sums


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap(metric: str, hyps_a: Sequence[str], hyps_b: Sequence[str],
                     references: Sequence[str], *, n_samples: int = 1000, seed: int = 12345,
                     confidence: float = 0.95, tgt_lang: str | None = None,
                     sources: Sequence[str] | None = None, comet: CometSettings | None = None) -> BootstrapResult:
    """Paired bootstrap resampling (Koehn 2004): is system B really better than A?

    Both systems are scored on the same resampled segment sets; each corpus
    score is recomputed from summed segment statistics, so a resample costs
    one small formula, not a re-tokenization. Seeded and reproducible.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples must be a positive integer, got {n_samples!r}.")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}.")
    metric = canonical_metric(metric)
    hyps_a = as_segments("hyps_a", hyps_a)
    hyps_b = as_segments("hyps_b", hyps_b)
    references = as_segments("references", references)
    check_same_length("hyps_a", hyps_a, "references", references)
    check_same_length("hyps_b", hyps_b, "references", references)
    scorer = make_scorer(metric, references, tgt_lang=tgt_lang, sources=sources, comet=comet)
    stats_a = scorer.statistics(hyps_a)
    stats_b = scorer.statistics(hyps_b)

    indices = _bootstrap_indices(scorer.n_segments, n_samples, seed)
    sums = _resampled_sums(np.hstack([stats_a, stats_b]), indices)
    k = stats_a.shape[1]
    boot_a = np.array([scorer.score_from_statistics(row) for row in sums[:, :k]])
    boot_b = np.array([scorer.score_from_statistics(row) for row in sums[:, k:]])
    boot_delta = boot_b - boot_a

    score_a = scorer.score_from_statistics(stats_a.sum(axis=0))
    score_b = scorer.score_from_statistics(stats_b.sum(axis=0))
    b_better = boot_delta > 0 if higher_is_better(scorer.metric) else boot_delta < 0
    return BootstrapResult(
        metric=scorer.metric, score_a=score_a, score_b=score_b,
        ci_a=_interval(boot_a, confidence), ci_b=_interval(boot_b, confidence),
        delta=score_b - score_a, delta_ci=_interval(boot_delta, confidence),
        p_value=float(np.mean(~b_better)), n_samples=n_samples, seed=seed,
        confidence=confidence,
        ratio_ci=_interval(boot_b / boot_a, confidence) if np.all(boot_a > 0) else None,
    )
