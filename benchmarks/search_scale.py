"""How the search scales with workers: one round's wall time with 1 and N Ray workers.

Runs the exact search (every candidate translated and scored) for one round (`--remove 1`) on the
packaged gemma-3-270m and the bundled sample's dev part, first in one process (no Ray), then with
`--workers N` (each a Ray actor with its own model, a share of the CPU cores), and prints per
configuration: the round's seconds, seconds per candidate, the start-up (Ray and the workers'
model loads: the run's seconds less the round's) and the speed-up of the round. Both must give
the same plan and scores (checked).

Then the projection for a recipe's search (default: examples/aya-expanse-8b-cs-de.yaml, 32 layers,
8 removed): its evaluations from the recipe's stop rule, times the seconds per candidate that
you measured on the GPU with one worker (`--per-candidate-seconds`, e.g. from
`mtprune search ... --remove 1` on that model: plan.json's rounds[0].seconds / candidates), on
`--gpus` workers. Without that figure nothing is projected: a CPU's seconds per candidate on a
270M model say nothing of an 8B model on a GPU.

    python benchmarks/search_scale.py --workers 2 --limit 8    # not under OMP_NUM_THREADS=1: one worker
                                                               # would get one core, N workers N
    python benchmarks/search_scale.py --per-candidate-seconds 14.2 --gpus 8   # the projection only
"""
from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2, help="workers of the second configuration (default: 2)")
    p.add_argument("--limit", type=int, default=8, help="dev segments translated per candidate (default: 8)")
    p.add_argument("--model", default="gemma-3-270m", help="model searched (default: gemma-3-270m)")
    p.add_argument("--dtype", default="float32",
                   help="float32 (default: the plans must agree exactly) or auto")
    p.add_argument("--recipe", default=str(ROOT / "examples" / "aya-expanse-8b-cs-de.yaml"),
                   help="the recipe whose search is projected (default: the Aya-Expanse-8B example)")
    p.add_argument("--layers", type=int, default=32, help="the recipe model's layers (default: 32, Aya-Expanse-8B)")
    p.add_argument("--per-candidate-seconds", type=float, help="one candidate's seconds on the GPU, one worker")
    p.add_argument("--gpus", type=int, default=8, help="workers (GPUs) of the projection (default: 8)")
    p.add_argument("--skip-measure", action="store_true", help="only the projection")
    return p.parse_args(argv)


def measure(args, workers: int, run_dir: Path) -> dict:
    from mtprune.data.specs import DataSpec
    from mtprune.search.config import PairConfig, SearchConfig, StopRule
    from mtprune.search.engine import run_search

    cfg = SearchConfig(model=args.model, pairs=[PairConfig(DataSpec("sample:en-de", "en", "de", part="dev",
                                                                      limit=args.limit))],
                       run_dir=run_dir, stop=StopRule(remove=1), dtype=args.dtype, device="cpu", progress=False,
                       workers=workers)
    start = time.perf_counter()
    plan = run_search(cfg)
    total = time.perf_counter() - start
    round_ = plan["rounds"][0]
    n = len(round_["candidates"])
    return {"workers": workers, "total": total, "round": round_["seconds"], "candidates": n,
            "per_candidate": round_["seconds"] / (n + 1),  # + the unpruned model, translated in round 1
            "removed": plan["removed"], "scores": [(c["layer"], c["score"]) for c in round_["candidates"]]}


def round_candidates(recipe_path: str, layers: int) -> list[int]:
    """Candidates translated in each round of the recipe's search (exact mode): every unprotected layer."""
    from mtprune.pipeline.recipe import load_recipe

    recipe = load_recipe(recipe_path, allow_missing_files=True)
    search = recipe.search or {}
    remove = search.get("remove") or (layers - search["target_layers"] if search.get("target_layers") else None)
    if remove is None:
        raise SystemExit(f"{recipe_path}: its stop rule is not a layer count: nothing to project")
    candidates = layers - 2  # first and last layer protected
    return [candidates - r for r in range(remove)]


def main(argv=None) -> int:
    args = parse_args(argv)
    cpu = platform.processor() or platform.machine()
    flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split()
                    if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}) if Path("/proc/cpuinfo").exists() else []
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    if not args.skip_measure:
        with tempfile.TemporaryDirectory() as tmp:
            one = measure(args, 1, Path(tmp) / "one")
            many = measure(args, args.workers, Path(tmp) / "many")
        if (one["removed"], one["scores"]) != (many["removed"], many["scores"]):
            print("the plans differ:", one["removed"], many["removed"], file=sys.stderr)
            return 1
        print("| workers | round (s) | s per candidate | start-up (s) | round speed-up |\n|---:|---:|---:|---:|---:|")
        for row in (one, many):
            print(f"| {row['workers']} | {row['round']:.1f} | {row['per_candidate']:.2f} | "
                  f"{row['total'] - row['round']:.1f} | {one['round'] / row['round']:.2f}x |")
        print(f"\none round of the exact search, {one['candidates']} candidates + the unpruned model, "
              f"{args.limit} dev segments each, {args.model}, --dtype {args.dtype}; same plan and scores: yes")
    rounds = round_candidates(args.recipe, args.layers)
    n = sum(rounds) + 1  # + the unpruned model
    if args.per_candidate_seconds:
        hours = n * args.per_candidate_seconds / 3600
        # the rounds run one after the other; in each, a worker translates its share of the candidates
        per_worker = sum(math.ceil(c / args.gpus) for c in rounds) + 1
        print(f"\nprojection: {Path(args.recipe).name}: {n} translations of its dev set in {len(rounds)} rounds; "
              f"one worker {hours:.1f} h; {args.gpus} workers {per_worker * args.per_candidate_seconds / 60:.0f} min "
              f"({per_worker} translations each, the rounds one after the other; start-up not counted)")
    else:
        print(f"\nprojection: {Path(args.recipe).name}: {n} translations of its dev set; give "
              "--per-candidate-seconds (measured on its GPU with one worker) to project the time")
    print(f"\nmachine: {cpu}, {len(__import__('os').sched_getaffinity(0))} cores, {','.join(flags)}; "
          f"python {platform.python_version()}; commit {commit}; command: python benchmarks/search_scale.py "
          + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
