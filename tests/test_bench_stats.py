"""bench_stats: the interleaved schedule, per-round ratios, intervals and flags (pure, no torch)."""
import random
from collections import Counter

import pytest

from mtprune.bench.stats import (FLAG_TEXT, Figure, bootstrap_interval, minmax_coverage, per_round_ratios,
                                 percentile, round_order, schedule, speedup_flags, summarize)


def test_percentile_interpolates_like_numpy():
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([7.0], 95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0 and percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0


def predecessors(orders: list[list[int]]) -> Counter:
    """How often each model directly follows each other one within a round."""
    return Counter((a, b) for o in orders for a, b in zip(o, o[1:]))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_round_order_is_a_williams_square(n):
    period = n if n % 2 == 0 else 2 * n
    orders = [round_order(n, r) for r in range(period)]
    for position in range(n):  # every model equally often in every position
        assert Counter(o[position] for o in orders) == {m: period // n for m in range(n)}
    # every model follows every other one equally often: carry-over from the pass before is balanced
    pairs = predecessors(orders)
    assert set(pairs) == {(a, b) for a in range(n) for b in range(n) if a != b}
    assert len(set(pairs.values())) == 1
    assert round_order(n, period) == orders[0]


def test_round_order_examples():
    assert [round_order(2, r) for r in range(3)] == [[0, 1], [1, 0], [0, 1]]
    assert [round_order(4, r) for r in range(4)] == [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]]
    # the old rotation let the copy right after the reference follow it in 3 of 4 rounds
    assert predecessors([round_order(4, r) for r in range(4)])[(0, 1)] == 1


def test_schedule_interleaves_models_and_spreads_batch_sizes_over_rounds():
    passes = schedule(2, (1, 16), rounds=3)
    assert len(passes) == 2 * 2 * 3
    assert passes[:4] == [(0, 1, 0, 0), (0, 1, 0, 1), (0, 16, 0, 1), (0, 16, 0, 0)]
    # each (model, batch size) is timed once per round, every round before the next begins
    assert Counter((b, m) for _, b, _, m in passes) == {(b, m): 3 for b in (1, 16) for m in (0, 1)}
    assert [r for r, *_ in passes] == sorted(r for r, *_ in passes)
    # and each batch size's first model alternates between rounds: drift within a round is shared
    assert [m for r, b, _, m in passes if b == 1][::2] == [0, 1, 0]
    assert schedule(1, (4,), 2) == [(0, 4, 0, 0), (1, 4, 0, 0)]


def test_schedule_takes_turns_batch_by_batch():
    """Batch j of every model runs before batch j+1 of any: a round's ratio compares batches
    seconds apart; the first model changes from batch to batch."""
    passes = schedule(2, (16,), rounds=2, batches={16: 3})
    assert passes[:6] == [(0, 16, 0, 0), (0, 16, 0, 1), (0, 16, 1, 1), (0, 16, 1, 0), (0, 16, 2, 0), (0, 16, 2, 1)]
    assert Counter((r, m) for r, _, _, m in passes) == {(r, m): 3 for r in (0, 1) for m in (0, 1)}
    for r in (0, 1):
        in_round = [(j, m) for rr, _, j, m in passes if rr == r]
        assert [j for j, _ in in_round] == sorted(j for j, _ in in_round)


def test_per_round_ratios_pair_the_same_rounds():
    assert per_round_ratios([11.0, 9.0, 10.0], [10.0, 9.0, 8.0]) == [1.1, 1.0, 1.25]
    with pytest.raises(ValueError, match="same rounds"):
        per_round_ratios([1.0, 2.0], [1.0])


def test_drift_cancels_in_per_round_ratios_not_in_ratio_of_sequential_medians():
    """The machine slows down 2% per pass; B is truly 5% faster.  Interleaved rounds see the
    same drift and give 1.05; B timed after all of A's runs looks slower than it is."""
    slowdown = [0.98 ** i for i in range(10)]
    interleaved_a = [100 * slowdown[2 * r] for r in range(5)]
    interleaved_b = [105 * slowdown[2 * r + 1] for r in range(5)]
    ratios = per_round_ratios(interleaved_b, interleaved_a)
    assert summarize(ratios).median == pytest.approx(1.05 * 0.98, rel=1e-9)  # one pass of drift, not five
    sequential_a = [100 * s for s in slowdown[:5]]
    sequential_b = [105 * s for s in slowdown[5:]]
    assert summarize(per_round_ratios(sequential_b, sequential_a)).median < 0.96  # B looks slower


def test_minmax_interval_and_its_coverage():
    figure = summarize([1.02, 0.99, 1.05, 1.01, 1.00])
    assert (figure.median, figure.lo, figure.hi, figure.runs) == (1.01, 0.99, 1.05, 5)
    assert figure.half_width == pytest.approx(0.03 / 1.01)
    assert minmax_coverage(5) == pytest.approx(0.9375) and minmax_coverage(3) == 0.75
    assert minmax_coverage(1) == 0.0
    # the coverage holds empirically: [min, max] of 5 draws holds the true median 1.0 ~94% of the time
    rng = random.Random(1)
    hits = 0
    for _ in range(4000):
        f = summarize([rng.gauss(1.0, 0.02) for _ in range(5)])
        hits += f.lo <= 1.0 <= f.hi
    assert hits / 4000 == pytest.approx(0.9375, abs=0.015)


def test_bootstrap_interval_is_seeded_and_inside_the_range():
    values = [1.03, 0.98, 1.07, 1.01, 1.00, 1.04, 0.99]
    lo, hi = bootstrap_interval(values, seed=3)
    assert (lo, hi) == bootstrap_interval(values, seed=3)
    assert min(values) <= lo <= sorted(values)[3] <= hi <= max(values)
    assert summarize(values, "bootstrap", seed=3) == Figure(1.01, lo, hi, 7)
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError, match="valid: minmax, bootstrap"):
        summarize(values, "stddev")


def test_flags_noise_above_and_beyond_the_ideal():
    def flags(median, lo, hi, ideal=1.04, runs=5, **kw):
        return speedup_flags(Figure(median, lo, hi, runs), ideal, **kw)

    assert flags(1.03, 1.01, 1.035) == []  # faster, below the ideal: a claim the figures support
    assert flags(1.01, 0.98, 1.03) == ["within_noise"]
    # the case: 1.19x next to an ideal of 1.04x
    assert flags(1.19, 1.10, 1.25) == ["beyond_ideal"]
    assert flags(1.19, 1.10, 1.25, runs=1) == ["one_run", "beyond_ideal"]
    assert flags(1.08, 1.03, 1.12) == ["above_ideal"]  # above, but the ideal is inside its range
    assert flags(1.06, 0.97, 1.12) == ["within_noise", "above_ideal"]
    assert flags(1.02, 1.01, 1.03, interleaved=False) == ["sequential"]
    assert flags(1.0, 1.0, 1.0, ideal=1.0, reference=True) == []
    assert all(code in FLAG_TEXT for code in ("within_noise", "above_ideal", "beyond_ideal", "one_run", "sequential"))
    assert "a cost the FLOP model omits" in FLAG_TEXT["beyond_ideal"]


def test_a_slower_model_is_not_flagged_above_its_ideal():
    assert speedup_flags(Figure(0.9, 0.88, 0.93, 5), 1.05) == []
