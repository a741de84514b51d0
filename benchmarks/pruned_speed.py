"""How much faster a pruned model translates, measured, against the ideal from FLOPs.

The packaged gemma-3-270m, the quickstart's pruned model (2 of 18 layers removed) and one
with 25% of the layers removed (4 of 18), with the hf backend at batch sizes 16 and 64 on
held-out segments of sample:en-de, through ``mtprune bench`` (its library function): every
model translates the same prompts with the same per-segment budgets.  The ideal speed-up is
the ratio of per-token matmul FLOPs (linear layers, the 262k-token LM head, attention at the
measured context); gain/ideal = (measured - 1) / (ideal - 1), the part of the possible gain
that the backend turns into speed.  Which layers are removed does not change the speed
(all layers have the same shape), only the quality; the defaults remove the quickstart's
layers [7, 9] and [7, 8, 9, 10].

Every model does the same work (``--fixed-new-tokens``, default 32: each segment generates
exactly that many tokens, stop rules off): a pruned model's own translations are longer or
shorter than the unpruned model's (here, without recovery, they are mostly empty or run on to
the budget), and tokens/s of different outputs mixes speed with output length: prompt
encoding is paid per segment, so a model that stops early shows few tokens per second.
``--fixed-new-tokens 0`` measures the models' own translations instead.

    python benchmarks/pruned_speed.py [--limit 64] [--runs 5] [--batch-sizes 16,64] [--fixed-new-tokens 32]

The models are timed interleaved (``mtprune bench``'s default): one pass each per round, taking
turns batch by batch, the order rotating, each speed-up the median of its per-round ratios with their min-max range.

Last line: ``gain/ideal: X.XX (measured A.AAx, ideal B.BBx, N of M layers removed)`` for
the 25% model at the largest batch size.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from mtprune.cli.main import main as mtprune

MODEL = "gemma-3-270m"


def pruned(work: Path, drop: str, model: str = MODEL) -> Path:
    """``model`` with the layers ``drop`` ('7,9') removed, pruned into ``work`` once."""
    out = work / f"drop-{drop.replace(',', '-')}"
    if not (out / "mtprune.json").exists():
        code = mtprune(["-q", "prune", model, "--drop", drop, "-o", str(out), "--force"])
        if code:
            raise SystemExit(f"mtprune prune failed ({code})")
    return out


def main() -> None:
    from mtprune.bench.config import BenchConfig, parse_batch_sizes
    from mtprune.bench.engine import run_bench
    from mtprune.bench.render import format_table
    from mtprune.data.specs import DataSpec

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench-pruned-speed", help="folder for the pruned models")
    p.add_argument("--drop-small", default="7,9", help="the quickstart's removed layers (default: 7,9)")
    p.add_argument("--drop-25", default="7,8,9,10", help="4 of 18 layers (default: 7,8,9,10)")
    p.add_argument("--limit", type=int, default=64, help="test segments (default: 64)")
    p.add_argument("--batch-sizes", default="16,64", help="(default: 16,64)")
    p.add_argument("--runs", type=int, default=BenchConfig.runs, help=f"timed rounds, interleaved (default: "
                   f"{BenchConfig.runs})")
    p.add_argument("--dtype", default="float32", help="(default: float32)")
    p.add_argument("--fixed-new-tokens", type=int, default=32,
                   help="tokens per segment for every model, stop rules off; 0: their own translations (default: 32)")
    args = p.parse_args()

    work = Path(args.work)
    models = [MODEL, str(pruned(work, args.drop_small)), str(pruned(work, args.drop_25))]
    cfg = BenchConfig(models=models, data=DataSpec("sample:en-de", "en", "de", part="test", limit=args.limit),
                      batch_sizes=parse_batch_sizes(args.batch_sizes), warmup=1, runs=args.runs, dtype=args.dtype,
                      fixed_new_tokens=args.fixed_new_tokens or None)
    result = run_bench(cfg)
    print(format_table(result))
    base, last = result["models"][0], result["models"][-1]
    for entry in result["models"][1:]:
        for row in entry["batches"]:
            lo, hi = row["speedup_interval"]
            print(f"{Path(entry['model']).name} batch {row['batch_size']}: measured {row['speedup']:.3f}x "
                  f"[{lo:.3f}, {hi:.3f}], ideal {row['ideal_speedup']:.3f}x, gain/ideal {row['gain_over_ideal']}"
                  f"{', flags: ' + '; '.join(row['flag_notes']) if row['flags'] else ''}")
    row = last["batches"][-1]
    removed = base["layers"] - last["layers"]
    print(f"gain/ideal: {row['gain_over_ideal']:.2f} (measured {row['speedup']:.2f}x, ideal "
          f"{row['ideal_speedup']:.2f}x, {removed} of {base['layers']} layers removed)")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
