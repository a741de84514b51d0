"""Speed figures a user can trust: the order models are timed in, per-round ratios, their
interval, and the flags on a figure the measurement cannot support.  Pure functions, no torch.

Why rounds: one timed run per model, one model after the other, measures the machine's drift
(a shared CPU's load, a GPU's clock boost and heat) as much as the model.  Timing the models
interleaved, taking turns batch by batch in an order that rotates (A B, B A, A B, ...), lets
drift hit every model alike, and the speed-up of round i is A_i / B_i: passes over the same
data whose batches ran seconds apart.  Turns of a whole pass (tried first) left +-3-5% of
noise in a round's ratio on a shared 2-core CPU; turns of a batch, +-0.6%.

Why min-max: over n rounds, the interval [min, max] of the per-round ratios holds their median
with probability 1 - 2 x 0.5^n whatever the noise's distribution (the sign test): 75% at 3
rounds, 94% at 5, 98% at 7.  A seeded bootstrap of the median is narrower and its coverage at
so few rounds is not known; it is offered for many rounds.
"""
from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INTERVALS = ("minmax", "bootstrap")

# flag code -> what the table, the JSON and the report say
FLAG_TEXT = {
    "within_noise": "within noise: the interval includes 1.0",
    "above_ideal": "above the FLOP ideal within its spread: measurement noise",
    "beyond_ideal": "above the FLOP ideal by more than its spread: measurement noise or a cost the FLOP model omits",
    "one_run": "one run: no spread, the figure may be noise",
    "sequential": "timed one model after the other: the machine's drift between models is in the figure",
}
FLAG_SHORT = {"within_noise": "noise", "above_ideal": "above ideal", "beyond_ideal": "far above ideal",
              "one_run": "1 run", "sequential": "sequential"}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def round_order(n_models: int, round_index: int) -> list[int]:
    """The models' order in round ``round_index``: the rows of a Williams square, a Latin square
    (over its rows every model is timed once in every position) in which every model also
    follows every other model equally often, so that what a pass inherits from the pass before
    it (a warm allocator for the same shapes, a cache state) is spread over all models alike.
    Rows: the first is 0, 1, n-1, 2, n-2, ...; row r adds r to each (mod n); an odd n needs the
    mirrored rows too (2n rounds for full balance)."""
    if n_models <= 1:
        return list(range(n_models))
    first, low, high = [0], 1, n_models - 1
    while len(first) < n_models:
        first.append(low)
        low += 1
        if len(first) < n_models:
            first.append(high)
            high -= 1
    period = n_models if n_models % 2 == 0 else 2 * n_models
    r = round_index % period
    row = [(m + r) % n_models for m in first]
    return row[::-1] if r >= n_models else row


def schedule(n_models: int, batch_sizes: Sequence[int], rounds: int,
             batches: Mapping[int, int] | None = None) -> list[tuple[int, int, int, int]]:
    """Every timed batch as (round, batch size, batch index, model index), in the order to run
    them.  Rounds outermost, so that each batch size's rounds spread over the whole measurement;
    inside a round the models take turns BATCH BY BATCH (batch j of every model, then batch j+1),
    so that the batches a round's ratio compares ran seconds apart, not a whole pass apart: drift
    slower than one batch cancels.  Batch j of batch size k in round r takes ``round_order``'s row
    r + k + j (the first model changes from batch to batch too).  ``batches``: how many batches
    one pass over the data has at each batch size (default 1: one pass = one batch)."""
    counts = batches or {}
    return [(r, b, j, m) for r in range(rounds) for k, b in enumerate(batch_sizes)
            for j in range(counts.get(b, 1)) for m in round_order(n_models, r + k + j)]


def per_round_ratios(rates: Sequence[float], base_rates: Sequence[float]) -> list[float]:
    """Round i's speed-up rates[i] / base_rates[i]: the two models timed in the same round."""
    if len(rates) != len(base_rates):
        raise ValueError(f"{len(rates)} rounds against {len(base_rates)}: ratios need the same rounds")
    return [a / b for a, b in zip(rates, base_rates)]


def minmax_interval(values: Sequence[float]) -> tuple[float, float]:
    return min(values), max(values)


def bootstrap_interval(values: Sequence[float], seed: int = 0, confidence: float = 0.95,
                       resamples: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap of the median: resample the rounds with replacement ``resamples``
    times (seeded: the same figures give the same interval)."""
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(median([values[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    tail = (1 - confidence) / 2
    lo = medians[max(0, math.floor(tail * resamples))]
    hi = medians[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return lo, hi


def minmax_coverage(rounds: int) -> float:
    """The probability that [min, max] of ``rounds`` values holds their median (sign test)."""
    return 1 - 2 * 0.5 ** rounds if rounds > 1 else 0.0


@dataclass(frozen=True)
class Figure:
    """A figure over rounds: its median, interval and how many rounds it is based on."""

    median: float
    lo: float
    hi: float
    runs: int

    def as_dict(self, digits: int = 4) -> dict[str, float | int]:
        return {"median": round(self.median, digits), "lo": round(self.lo, digits), "hi": round(self.hi, digits),
                "runs": self.runs}

    @property
    def half_width(self) -> float:
        """Half the interval relative to the median (0.03: +-3%)."""
        return (self.hi - self.lo) / 2 / self.median if self.median else float("inf")


def summarize(values: Sequence[float], interval: str = "minmax", seed: int = 0) -> Figure:
    """Median and interval of per-round values (``interval``: minmax or bootstrap)."""
    if not values:
        raise ValueError("no rounds to summarize")
    if interval not in INTERVALS:
        raise ValueError(f"interval {interval!r}: valid: {', '.join(INTERVALS)}")
    lo, hi = minmax_interval(values) if interval == "minmax" else bootstrap_interval(values, seed)
    return Figure(median(values), lo, hi, len(values))


def speedup_flags(speedup: Figure, ideal: float, *, reference: bool = False, interleaved: bool = True) -> list[str]:
    """What a speed-up figure cannot claim (codes of ``FLAG_TEXT``): no spread (one run), an
    interval that includes 1.0 (not distinguishable from no speed-up), a median above the FLOP
    ideal (within its spread: noise; the whole interval above it: noise or a cost the FLOP model
    omits), models timed one after the other.  The reference model (1.0 by definition) has none."""
    if reference:
        return []
    flags = []
    if speedup.runs < 2:
        flags.append("one_run")
    elif speedup.lo <= 1.0 <= speedup.hi:
        flags.append("within_noise")
    if speedup.median > ideal + 1e-9:
        flags.append("beyond_ideal" if speedup.lo > ideal + 1e-9 else "above_ideal")
    if not interleaved:
        flags.append("sequential")
    return flags


def row_flags(row: dict[str, Any], *, reference: bool, runs: int | None = None) -> list[str]:
    """A row's flags; for a bench JSON before rounds (no flags in it), from its speed-up, ideal
    and ``runs`` (its config's; unknown: 1), timed one model after the other."""
    if "flags" in row:
        return row["flags"]
    if row.get("speedup") is None or row.get("ideal_speedup") is None:
        return []
    lo, hi = row.get("speedup_interval") or (row["speedup"], row["speedup"])
    figure = Figure(row["speedup"], lo, hi, row.get("runs") or runs or 1)
    return speedup_flags(figure, row["ideal_speedup"], reference=reference, interleaved=False)
