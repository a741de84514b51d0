"""``mtprune quickstart``: the packaged quickstart recipe, run (``mtprune run quickstart``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """\
The embedded default job: the packaged gemma-3-270m and the bundled en-de sample, run as the recipe
shipped with mtprune (`mtprune run quickstart -o RUN_DIR` is the same; examples/quickstart.yaml is
that recipe): an exact search on 16 dev segments removing 2 layers, the plan applied, local healing of
the layers after each gap (`mtprune heal`, 64 train segments), the unpruned, pruned and healed models
on 48 held-out test segments, their speed with the same work for each, and one report
(RUN_DIR/report/report.html, report.md, summary.json).

Like `mtprune run`, it is resumable: run the same command again after an interruption and finished
stages are skipped; change an option and the stages it affects are redone."""

EPILOG = """\
examples:
  mtprune quickstart -o qs                       # the whole job (see README for its time and figures)
  mtprune quickstart -o qs --remove 4            # the same with 4 layers removed: search extended, rest redone
  mtprune quickstart -o qs --dry-run             # what would run, skip or be redone; loads nothing
  mtprune quickstart -o qs --set bench.runs=5    # any recipe value (see `mtprune run --help`)"""


def add_parser(subparsers) -> None:
    from ..run import STAGES
    from .run import add_set_argument

    p = subparsers.add_parser("quickstart", help="the whole method on the packaged model and bundled sample",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="mtprune-quickstart", help="run folder (default: mtprune-quickstart)")
    p.add_argument("--model", help="model (default: gemma-3-270m)")
    p.add_argument("--remove", type=int, help="layers to remove (default: 2)")
    p.add_argument("--dev-size", type=int, metavar="N", help="dev segments for the search (default: 16)")
    p.add_argument("--test-size", type=int, metavar="N", help="held-out test segments (default: 48)")
    p.add_argument("--shots-from", metavar="SPEC", help="few-shot examples from this data (default: the sample's "
                   "train part)")
    p.add_argument("--recover", choices=("heal", "none"), help="recovery after pruning: heal (default) or none")
    p.add_argument("--heal-segments", type=int, metavar="N", help="train segments healed on (default: 64)")
    p.add_argument("--heal-epochs", type=float, metavar="E", help="passes over them (default: 3)")
    p.add_argument("--from", dest="start_from", metavar="STAGE", choices=STAGES,
                   help=f"redo this stage and every later one: {', '.join(STAGES)}")
    p.add_argument("--force", action="store_true", help="redo every stage (= --from search)")
    p.add_argument("--dry-run", action="store_true", help="check the recipe and show what each stage would do")
    add_set_argument(p)
    p.set_defaults(func=run)


def quickstart_overrides(args: argparse.Namespace) -> list[str]:
    """The options given, as settings of the packaged recipe (``--set`` last, so it wins)."""
    keys = {"model": "model", "remove": "search.remove", "dev_size": "pairs.0.dev.limit",
            "test_size": "pairs.0.test.limit", "shots_from": "translation.shots_from",
            "heal_segments": "pairs.0.train.limit"}
    overrides = [f"{key}={json.dumps(getattr(args, name))}" for name, key in keys.items()
                 if getattr(args, name) is not None]
    if args.recover == "none":
        overrides.append("recover=[]")
    elif args.heal_epochs is not None:
        overrides.append(f"recover.0.heal.epochs={args.heal_epochs}")
    return overrides + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .run import execute

    if args.recover == "none" and args.heal_epochs is not None:
        raise ConfigError("--heal-epochs with --recover none: there is no healing; leave one out")
    start_from = "search" if args.force else args.start_from
    if args.force and args.start_from:
        raise ConfigError("--force is --from search: give one of them")
    return execute("quickstart", Path(args.output), start_from=start_from, dry_run=args.dry_run,
                   overrides=quickstart_overrides(args), progress=not args.quiet)
