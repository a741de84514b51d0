"""``mtprune report``: the Markdown report and plots of a search's run folder."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="Markdown report and plots of a search",
                              description="Write RUN_DIR/report.md with heatmap.png (candidate scores per round x "
                              "original layer id) and quality.png (score against layers removed) from "
                              "RUN_DIR/plan.json.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...pipeline.report import write_report

    result = write_report(Path(args.run_dir))
    print(f"wrote {result.markdown_path}" + "".join(f", {p}" for p in result.plots))
    return 0
