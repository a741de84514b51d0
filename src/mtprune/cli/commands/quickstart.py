"""``mtprune quickstart``: the packaged quickstart recipe, run (``mtprune run quickstart``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """\
The embedded default job: the packaged gemma-3-270m and the bundled en-de sample, run as the recipe
shipped with mtprune (`mtprune run quickstart -o RUN_DIR` is the same; examples/quickstart.yaml is
that recipe). It shows the trade, model by model, on 48 held-out test segments:
  unpruned   the base model as it is used: few-shot prompts (3 examples)
  trimmed    its vocabulary trimmed to the tokens en-de uses (`mtprune trim-vocab`): a smaller LM head
  pruned     the trimmed model with 2 layers removed (an exact search on 16 dev segments)
  finetune   the pruned model fine-tuned on 256 train segments to translate zero-shot (no examples)
  reference  the trimmed unpruned model with the same fine-tuning: what pruning itself costs
with chrF++ and BLEU, and segments/s as each model translates (its own prompt), timed interleaved;
one report (RUN_DIR/report/report.html, report.md, summary.json).

Like `mtprune run`, it is resumable: run the same command again after an interruption and finished
stages are skipped; change an option and the stages it affects are redone."""

EPILOG = """\
examples:
  mtprune quickstart -o qs                       # the whole job (see README for its time and figures)
  mtprune quickstart -o qs --remove 4            # the same with 4 layers removed: search extended, rest redone
  mtprune quickstart -o qs --dry-run             # what would run, skip or be redone; loads nothing
  mtprune quickstart -o qs --set bench.runs=5    # any recipe value (see `mtprune run --help`)"""


def add_parser(subparsers) -> None:
    from ...pipeline.run_folder import STAGES
    from .memory_check import add_skip_argument
    from .run import RUN_SKIP_HELP, add_set_argument

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
    p.add_argument("--recover", choices=("finetune", "none"),
                   help="recovery after pruning: finetune (default; with the fair reference) or none")
    p.add_argument("--train-size", type=int, metavar="N", help="train segments fine-tuned on (default: 256)")
    p.add_argument("--steps", type=int, metavar="N", help="the pruned model's distillation steps of batch 8 "
                   "(default: 48; the reference's: --set recover.0.finetune.for_reference.max_steps=N, default 32)")
    p.add_argument("--no-trim", action="store_true", help="keep the whole vocabulary (no trimmed model)")
    p.add_argument("--from", dest="start_from", metavar="STAGE", choices=STAGES,
                   help=f"redo this stage and every later one: {', '.join(STAGES)}")
    p.add_argument("--force", action="store_true", help="redo the search and every later stage (= --from search)")
    add_skip_argument(p, RUN_SKIP_HELP)
    p.add_argument("--dry-run", action="store_true", help="check the recipe and show what each stage would do")
    add_set_argument(p)
    p.set_defaults(func=run)


def quickstart_overrides(args: argparse.Namespace) -> list[str]:
    """The options given, as settings of the packaged recipe (``--set`` last, so it wins)."""
    keys = {"model": "model", "remove": "search.remove", "dev_size": "pairs.0.dev.limit",
            "test_size": "pairs.0.test.limit", "shots_from": "translation.shots_from",
            "train_size": "pairs.0.train.limit", "steps": "recover.0.finetune.max_steps"}
    overrides = [f"{key}={json.dumps(getattr(args, name))}" for name, key in keys.items()
                 if getattr(args, name) is not None and not (args.recover == "none" and name == "steps")]
    if args.recover == "none":
        overrides += ["recover=[]", "reference=false", "prune.model=base"]  # prune the trimmed model itself
    if args.no_trim:
        overrides.append("trim_vocab=null")
    return overrides + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from ...errors import ConfigError
    from .run import execute

    if args.recover == "none" and args.steps is not None:
        raise ConfigError("--steps with --recover none: there is no fine-tuning; leave one out")
    start_from = "search" if args.force else args.start_from
    if args.force and args.start_from:
        raise ConfigError("--force is --from search: give one of them")
    return execute("quickstart", Path(args.output), start_from=start_from, dry_run=args.dry_run,
                   overrides=quickstart_overrides(args), progress=not args.quiet,
                   memory_check=not args.skip_memory_check)
