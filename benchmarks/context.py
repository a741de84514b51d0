"""Context in the prompt: what retrieved few-shot examples bring over random ones.

On the packaged gemma-3-270m (or any --model: a pruned or recovered checkpoint folder) and the
bundled sample's held-out test segments, each pair is translated twice with the same number of
few-shot examples from the same pool (the sample's train part): the same seeded random draw for
every segment (``--shots-by random``), then each segment's most similar sentences (``--shots-by
similar``, BM25, most similar last).  Prints per pair

    en-de: random X.XX, similar Y.YY chrF++ (+Z.ZZ)

and the time to index the pool.  The issue's target: similar >= random + 2 chrF++ on the
unpruned model.

    nice python benchmarks/context.py                                  # en-de and en-fr, 48 segments
    nice python benchmarks/context.py --pairs en-de --model runs/x/pruned --json context.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mtprune.data import DataSpec
from mtprune.evaluate import few_shot_examples, load_pair, translate_and_score
from mtprune.export import software_versions
from mtprune.models import load_model

METRIC = "chrf++"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma-3-270m",
                   help="packaged model, checkpoint folder (pruned, recovered) or .gguf (default: gemma-3-270m)")
    p.add_argument("--pairs", default="en-de,en-fr", help="bundled sample pairs (default: en-de,en-fr)")
    p.add_argument("--test", type=int, default=48, help="test segments per pair (default: 48)")
    p.add_argument("--shots", type=int, default=3, help="few-shot examples per segment (default: 3)")
    p.add_argument("--prompt", default="fewshot", help="prompt mode with examples (default: fewshot)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--dtype", default="float32", help="(default: float32, the same numbers on every CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the test draw and of the random examples")
    p.add_argument("--json", type=Path, help="write the figures and their settings here")
    return p.parse_args(argv)


def index_seconds(pair, shots: int) -> float:
    """Seconds to read the pool and index it (the first retrieval of the process builds the index)."""
    start = time.perf_counter()
    few_shot_examples(pair, shots, by="similar")
    return time.perf_counter() - start


def compare_examples(loaded, name: str, args) -> dict:
    """chrF++ of random vs retrieved examples on one pair's test segments."""
    src, tgt = name.split("-")
    pair = load_pair(DataSpec(f"sample:{name}", src, tgt, part="test", limit=args.test, seed=args.seed))
    row = {"pair": name, "n_segments": len(pair.segments), "index_seconds": round(index_seconds(pair, args.shots), 3)}
    for by in ("random", "similar"):
        result = translate_and_score(loaded, pair, [METRIC], prompt=args.prompt, shots=args.shots, shots_by=by,
                                     batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, progress=False)
        row[by] = {"score": result["scores"][METRIC]["value"], "signature": result["scores"][METRIC]["signature"],
                   "seconds": result["timing"]["seconds"], "few_shot": result.get("few_shot")}
    row["gain"] = row["similar"]["score"] - row["random"]["score"]
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    rows = []
    for name in args.pairs.split(","):
        row = compare_examples(loaded, name.strip(), args)
        rows.append(row)
        print(f"{row['pair']}: random {row['random']['score']:.2f}, similar {row['similar']['score']:.2f} chrF++ "
              f"({row['gain']:+.2f})  [{row['n_segments']} segments, {args.shots} examples; pool indexed in "
              f"{row['index_seconds']:.2f} s; translation {row['random']['seconds']:.0f} s vs "
              f"{row['similar']['seconds']:.0f} s]", flush=True)
    if args.json:
        record = {"benchmark": "context/examples", "model": args.model, "fingerprint": loaded.fingerprint,
                  "dtype": loaded.dtype, "device": loaded.device, "settings": vars(args) | {"json": str(args.json)},
                  "pairs": rows, "versions": software_versions()}
        args.json.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
