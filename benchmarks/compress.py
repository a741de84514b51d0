"""Faster at equal quality: the quickstart recipe's rows on more than one pair and model.

For each (model, pair) the packaged quickstart recipe (`mtprune run quickstart`) runs with that model
and the bundled sample's pair: the unpruned model as a base model is used (few-shot), its vocabulary
trimmed, 2 layers removed, the pruned model fine-tuned to translate zero-shot, and the fair reference
(the unpruned trimmed model with the same fine-tuning); chrF++ on >= 48 held-out test segments and
segments/s as each model translates, timed interleaved (median and range over the rounds).

    python benchmarks/compress.py [--models gemma-3-270m,smollm2-135m] [--pairs en-de,en-fr] [-o DIR]

One line per run:
``MODEL PAIR compressed: X.XXx segments/s at Y.Y% of the unpruned chrF++ (Z.Z% of the fair reference)``,
and the trimmed model alone: ``trimmed: X.XXx segments/s, chrF++ A.AA vs B.BB``. Each run is ~15 min on
2 CPU cores; a finished run folder is reused (its stages are skipped), so the script can be rerun.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def run_one(model: str, pair: str, out: Path, extra: list[str]) -> dict:
    from mtprune.pipeline.recipe import load_recipe
    from mtprune.pipeline.run import run_recipe

    src, tgt = pair.split("-")
    overrides = [f"model={json.dumps(model)}", f"pairs.0.src={src}", f"pairs.0.tgt={tgt}",
                 f"pairs.0.data=sample:{pair}", *extra]
    return run_recipe(load_recipe("quickstart", overrides=overrides), out)


def lines(model: str, pair: str, summary: dict) -> list[str]:
    from mtprune.pipeline.report_tables import bench_rows, score

    rows = {m["name"]: m for m in summary["models"]}
    speed = bench_rows(summary)
    final = next(m["name"] for m in reversed(summary["models"]) if m["name"] != "reference")
    chrf = {name: score(m, pair, "chrf++") for name, m in rows.items()}

    def speedup(name: str) -> str:
        row = speed.get(name) or {}
        lo, hi = row.get("segment_speedup_interval") or (float("nan"), float("nan"))
        return f"{row.get('segment_speedup', float('nan')):.2f}x [{lo:.2f}-{hi:.2f}]"

    out = [f"{model} {pair} compressed: {speedup(final)} segments/s at {100 * chrf[final] / chrf['unpruned']:.1f}% "
           f"of the unpruned chrF++ ({100 * chrf[final] / chrf['reference']:.1f}% of the fair reference)"]
    if "trimmed" in rows:
        out.append(f"{model} {pair} trimmed: {speedup('trimmed')} segments/s, chrF++ {chrf['trimmed']:.2f} vs "
                   f"{chrf['unpruned']:.2f} (vocabulary {rows['trimmed']['vocab_size']:,} of "
                   f"{rows['unpruned']['vocab_size']:,})")
    out.append(f"{model} {pair} chrF++: " + ", ".join(f"{n} {v:.2f}" for n, v in chrf.items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gemma-3-270m", help="comma-separated (default: gemma-3-270m)")
    parser.add_argument("--pairs", default="en-de,en-fr", help="sample pairs, comma-separated (default: en-de,en-fr)")
    parser.add_argument("-o", "--output", default="runs/compress", help="folder of the runs (default: runs/compress)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any recipe value, as `mtprune run --set`")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mtprune").setLevel(logging.INFO)
    results = []
    for model in args.models.split(","):
        for pair in args.pairs.split(","):
            folder = Path(args.output) / f"{Path(model).name}-{pair}"
            summary = run_one(model, pair, folder, args.overrides)
            results += lines(model, pair, summary)
            print("\n".join(results[-3:]), flush=True)
    print("\n".join(results))


if __name__ == "__main__":
    main()
