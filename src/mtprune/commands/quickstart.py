"""``mtprune quickstart``: the whole method on the packaged model and the bundled sample."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Embedded default job: the packaged gemma-3-270m and the bundled en-de sample. Runs a fast-mode search on the "
    "dev part, prunes, heals the pruned model (local healing of the layers after each gap, `mtprune heal`, on the "
    "train part), evaluates the unpruned, pruned and healed models on the held-out test part, prints a table and "
    "writes the run folder with a report. About 10 minutes on 2 CPU cores (AVX2, float32)."
)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("quickstart", help="the whole method on the packaged model and bundled sample",
                              description=DESCRIPTION)
    p.add_argument("-o", "--output", default="mtprune-quickstart", help="run folder (default: mtprune-quickstart)")
    p.add_argument("--model", default="gemma-3-270m", help="model (default: gemma-3-270m)")
    p.add_argument("--remove", type=int, default=2, help="layers to remove (default: 2)")
    p.add_argument("--dev-size", type=int, default=16, help="dev segments for the search (default: 16)")
    p.add_argument("--test-size", type=int, default=48, help="held-out test segments (default: 48)")
    p.add_argument("--shots-from", metavar="SPEC", default=None,
                   help="few-shot examples from this data (default: the sample's train part)")
    p.add_argument("--recover", default="heal", choices=("heal", "none"),
                   help="recovery after pruning: heal (default, about 2 minutes) or none")
    p.add_argument("--heal-segments", type=int, default=64, metavar="N",
                   help="train segments healed on, 4 per text (default: 64)")
    p.add_argument("--heal-epochs", type=float, default=3.0, help="passes over them (default: 3)")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..quickstart import QuickstartConfig, run_quickstart

    run_quickstart(QuickstartConfig(out=Path(args.output), model=args.model, remove=args.remove,
                                    dev_size=args.dev_size, test_size=args.test_size, shots_from=args.shots_from,
                                    recover=args.recover, heal_segments=args.heal_segments,
                                    heal_epochs=args.heal_epochs, force=args.force))
    return 0
