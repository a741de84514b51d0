"""How much faster a vocabulary-trimmed model translates, and what it costs in quality.

Trims the packaged gemma-3-270m (262,144 tokens; its LM head is ~60% of a generated token's
matmul FLOPs) to the tokens of sample:en-de's train part (``mtprune trim-vocab``, its library
function), then benches the untrimmed and the trimmed model on held-out test segments through
``mtprune bench``'s library (``run_bench``):

- speed with equal work (``--fixed-new-tokens``, default 32: every segment generates exactly
  that many tokens, stop rules off), at ``--batch-sizes``;
- quality (chrF++) of each model's own greedy translations, one pass at the largest batch size.

The issue's targets: >= 1.8x equal-work tokens/s, chrF++ within 0.3 of the untrimmed model.

    python benchmarks/trim_speed.py [--limit 64] [--runs 2] [--batch-sizes 16,64] [--keep N] [--backend hf]
        [--shots-by similar|random]

Last line: ``trimmed: X.XXx equal-work tokens/s, chrF++ A.AA vs B.BB (kept K of V tokens)``
(A: trimmed, B: untrimmed; X at the largest batch size).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

MODEL = "gemma-3-270m"


def trimmed(model: str, work: Path, keep: int | None) -> Path:
    """The trimmed model (made once; reused while its mtprune.json is there)."""
    from mtprune.data.specs import DataSpec
    from mtprune.compress.trim_vocab import TrimConfig, run_trim_vocab

    out = work / f"trimmed-{keep or 'data'}"
    if not (out / "mtprune.json").exists():
        run_trim_vocab(TrimConfig(model, [DataSpec("sample:en-de", "en", "de", part="train")], out, keep=keep,
                                   force=True))
    return out


def main() -> None:
    from mtprune.translate.backends import BackendConfig
    from mtprune.bench.config import BenchConfig, parse_batch_sizes
    from mtprune.bench.engine import run_bench
    from mtprune.bench.render import format_table
    from mtprune.translate.settings import TranslationSettings
    from mtprune.data.specs import DataSpec

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help=f"model to trim (default: {MODEL})")
    p.add_argument("--work", default="runs/bench-trim-speed", help="folder for the trimmed model")
    p.add_argument("--keep", type=int, default=None, help="tokens to keep in all (default: the data's)")
    p.add_argument("--limit", type=int, default=64, help="test segments (default: 64)")
    p.add_argument("--batch-sizes", default="16,64", help="(default: 16,64)")
    p.add_argument("--runs", type=int, default=2, help="timed passes (default: 2)")
    p.add_argument("--dtype", default="float32", help="(default: float32)")
    p.add_argument("--backend", default="hf", help="hf or vllm (default: hf)")
    p.add_argument("--fixed-new-tokens", type=int, default=32, help="tokens per segment, equal work (default: 32)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="cap for the quality pass (default: 256)")
    p.add_argument("--shots-by", default="similar", choices=("similar", "random"),
                   help="few-shot examples per segment or one random set (default: similar, the bench's)")
    args = p.parse_args()

    out = trimmed(args.model, Path(args.work), args.keep)
    entry = json.loads((out / "mtprune.json").read_text())["vocabulary"][-1]
    data = DataSpec("sample:en-de", "en", "de", part="test", limit=args.limit)
    sizes = parse_batch_sizes(args.batch_sizes)
    common = dict(models=[args.model, str(out)], data=data, dtype=args.dtype, backend=BackendConfig(args.backend))
    speed = run_bench(BenchConfig(**common, batch_sizes=sizes, warmup=1, runs=args.runs,
                                  translation=TranslationSettings(shots_by=args.shots_by),
                                  fixed_new_tokens=args.fixed_new_tokens))
    print(format_table(speed))
    quality = run_bench(BenchConfig(**common, batch_sizes=(max(sizes),), warmup=0, runs=1,
                                    translation=TranslationSettings(shots_by=args.shots_by,
                                                                    max_new_tokens=args.max_new_tokens)))
    print(format_table(quality))
    base_hyps, trim_hyps = (m["batches"][0]["hypotheses"] for m in quality["models"])
    same = sum(a == b for a, b in zip(base_hyps, trim_hyps))
    print(f"translations equal to the untrimmed model's: {same} of {len(base_hyps)}")
    for row in speed["models"][1]["batches"]:
        print(f"batch {row['batch_size']}: measured {row['speedup']:.3f}x, ideal {row['ideal_speedup']:.3f}x")
    row = speed["models"][1]["batches"][-1]
    before, after = (m["batches"][0]["quality"] for m in quality["models"])
    print(f"trimmed: {row['speedup']:.2f}x equal-work tokens/s, chrF++ {after:.2f} vs {before:.2f} "
          f"(kept {entry['kept']} of {entry['vocab_size_before']} tokens)")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
