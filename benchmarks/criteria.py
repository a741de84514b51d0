"""Quality of each importance criterion: remove the same number of layers, score held-out test.

Packaged gemma-3-270m, bundled sample:en-de.  The search runs on the dev part; each pruned
model (a shared-weight layer subset, identical to the exported checkpoint) is then
translated on the held-out test part and scored with chrF++.

    python benchmarks/criteria.py [--remove 3] [--dev 16] [--test 48]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

MODEL = "gemma-3-270m"
RUNS = [
    ("chrf", dict(criterion="chrf")),  # the exact search
    ("chrf-fast", dict(criterion="chrf", fast=True, shortlist=3)),  # logprob shortlist
    ("chrf-fast-bi", dict(criterion="chrf", fast=True, shortlist=3, proxy="block-influence")),
    ("logprob", dict(criterion="logprob")),
    ("block-influence", dict(criterion="block-influence")),
    ("angular", dict(criterion="angular")),
    ("last", dict(criterion="last")),
    ("random", dict(criterion="random")),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--remove", type=int, default=3)
    p.add_argument("--dev", type=int, default=16)
    p.add_argument("--test", type=int, default=48)
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join(name for name, _ in RUNS))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from mtprune.data.specs import DataSpec
    from mtprune.translate.translator import load_pair, make_translator
    from mtprune.eval.evaluate import score_hypotheses
    from mtprune.model.layers import LayerSurgeon
    from mtprune.model.load import load_model
    from mtprune.search.config import PairConfig, SearchConfig, StopRule
    from mtprune.search.engine import run_search

    dev = DataSpec("sample:en-de", "en", "de", part="dev", limit=args.dev)
    test = load_pair(DataSpec("sample:en-de", "en", "de", part="test", limit=args.test))
    loaded = load_model(MODEL)
    translator = make_translator(loaded, test, progress=False)
    surgeon = LayerSurgeon(loaded.model)

    def test_chrf(keep):
        with surgeon.subset(keep):
            hyps = translator.translate(test.sources).hypotheses
        return score_hypotheses(test, hyps, ["chrf++"])["scores"]["chrf++"]["value"]

    n = surgeon.num_original
    print(f"{MODEL}: {n} layers; dev {args.dev} segments, test {len(test.segments)} segments (hash {test.data_hash})")
    print(f"unpruned test chrF++: {test_chrf(range(n)):.2f}")
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for name, kwargs in RUNS:
        if wanted and name not in wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            plan = run_search(SearchConfig(model=MODEL, pairs=[PairConfig(dev)], run_dir=Path(tmp) / "run",
                                           stop=StopRule(remove=args.remove), progress=False, **kwargs))
            seconds = time.perf_counter() - start
        keep = [i for i in range(n) if i not in plan["removed"]]
        rows.append((name, plan["removed"], plan["rounds"][-1]["score_after"], test_chrf(keep), seconds))
        print(f"{name:<16} removed {str(plan['removed']):<14} dev chrF++ {rows[-1][2]:6.2f}  "
              f"test chrF++ {rows[-1][3]:6.2f}  search {seconds:6.1f} s", flush=True)


if __name__ == "__main__":
    main()
