"""Can a speed figure of ``mtprune bench`` be trusted?  An A/A test and an A/B test.

One interleaved bench (``mtprune bench``'s library function, its default rounds and warm-up) of
four entries: the model, the SAME model again, and the model with 2 and with 4 layers removed.

- A/A: the second entry against the first.  Nothing differs but the machine's noise, so the
  speed-up's range over the rounds must hold 1.0, and be narrow: the target is a range within
  +-3% (half its width under 3% of its median) at the default settings on 2 CPU cores.  A range
  that misses 1.0 means drift the interleaving did not cancel; a wide one, settings (segments,
  new tokens, rounds) too small for claims of a few percent.
- A/B: the pruned models against the first, next to their ideal speed-up from per-token FLOPs
  and the bench's flags (within noise, above the ideal).

Every segment generates exactly ``--fixed-new-tokens`` tokens (the same work for every model).

    python benchmarks/bench_noise.py [--runs 5] [--limit 32] [--batch-sizes 16] [--fixed-new-tokens 32]
    python benchmarks/bench_noise.py --model tiny/ --drop-2 1,2 --drop-4 1,2,3,4 --limit 4 --runs 2  # smoke

Prints ``A/A ratio: X.XXX [lo, hi]`` with PASS or FAIL per batch size, then ``A/B ratio ...
ideal ...`` per pruned model and batch size.  Memory: the four models are loaded at once (4 x
gemma-3-270m in fp32: about 4.3 GB of weights); --sequential loads one at a time (and the
figures say so).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from pruned_speed import MODEL, pruned


def aa_verdict(row: dict, target: float) -> str:
    """PASS where the A/A range holds 1.0 and its half-width is under ``target`` (0.03: +-3%)."""
    from mtprune.bench.stats import Figure

    lo, hi = row["speedup_interval"]
    half = Figure(row["speedup"], lo, hi, row["runs"]).half_width
    holds = lo <= 1.0 <= hi
    ok = holds and half < target
    return (f"{'PASS' if ok else 'FAIL'} ({'holds' if holds else 'misses'} 1.0, +-{half:.1%} "
            f"{'<' if half < target else '>='} +-{target:.0%})")


def main() -> int:
    from mtprune.bench.config import BenchConfig, parse_batch_sizes
    from mtprune.bench.engine import run_bench
    from mtprune.bench.render import format_table
    from mtprune.data.specs import DataSpec

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help=f"(default: {MODEL})")
    p.add_argument("--work", default="runs/bench-noise", help="folder for the pruned models")
    p.add_argument("--drop-2", default="7,9", help="2 layers to remove (default: 7,9, the quickstart's)")
    p.add_argument("--drop-4", default="7,8,9,10", help="4 layers to remove (default: 7,8,9,10)")
    p.add_argument("--limit", type=int, default=32, help="test segments (default: 32)")
    p.add_argument("--batch-sizes", default="16", help="(default: 16)")
    p.add_argument("--runs", type=int, default=BenchConfig.runs, help=f"rounds (default: {BenchConfig.runs})")
    p.add_argument("--warmup", type=int, default=BenchConfig.warmup, help=f"(default: {BenchConfig.warmup})")
    p.add_argument("--fixed-new-tokens", type=int, default=32, help="tokens per segment (default: 32)")
    p.add_argument("--dtype", default="float32", help="(default: float32)")
    p.add_argument("--sequential", action="store_true", help="one model loaded at a time (drift not cancelled)")
    p.add_argument("--target", type=float, default=0.03, help="A/A range half-width to pass (default: 0.03)")
    args = p.parse_args()

    work = Path(args.work)
    models = [args.model, args.model, str(pruned(work, args.drop_2, args.model)),
              str(pruned(work, args.drop_4, args.model))]
    cfg = BenchConfig(models=models, data=DataSpec("sample:en-de", "en", "de", part="test", limit=args.limit),
                      batch_sizes=parse_batch_sizes(args.batch_sizes), warmup=args.warmup, runs=args.runs,
                      dtype=args.dtype, fixed_new_tokens=args.fixed_new_tokens,
                      order="sequential" if args.sequential else "interleaved")
    result = run_bench(cfg)
    print(format_table(result))
    base, same, *ab = result["models"]
    passed = True
    for row in same["batches"]:
        lo, hi = row["speedup_interval"]
        verdict = aa_verdict(row, args.target)
        passed &= verdict.startswith("PASS")
        print(f"A/A ratio: {row['speedup']:.3f} [{lo:.3f}, {hi:.3f}] (batch {row['batch_size']}, {row['runs']} "
              f"rounds, {result['timing']['order']}): {verdict}")
    for entry in ab:
        removed = base["layers"] - entry["layers"]
        for row in entry["batches"]:
            lo, hi = row["speedup_interval"]
            flags = "; ".join(row["flag_notes"]) or "none"
            print(f"A/B ratio ({removed} of {base['layers']} layers removed, batch {row['batch_size']}): "
                  f"{row['speedup']:.3f} [{lo:.3f}, {hi:.3f}], ideal {row['ideal_speedup']:.3f} (flags: {flags})")
    return 0 if passed else 1


if __name__ == "__main__":
    t0 = time.time()
    code = main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
    raise SystemExit(code)
