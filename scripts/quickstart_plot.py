"""Draw a run's quality-against-speed picture with the run report's own plot.

    python scripts/quickstart_plot.py RUN_DIR OUT.png

RUN_DIR is a finished ``mtprune run`` / ``mtprune quickstart`` folder; the summary is read from
RUN_DIR/report/summary.json and drawn by ``mtprune.pipeline.run_report.plot_tradeoff`` (needs matplotlib:
``pip install 'mtprune[report]'``). docs/img/quickstart-tradeoff.png is this script's output.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder")
    parser.add_argument("out", type=Path, metavar="OUT.png", help="the picture to write")
    args = parser.parse_args(argv)
    summary_path = args.run_dir / "report" / "summary.json"
    if not summary_path.is_file():
        parser.error(f"{summary_path}: not found (is {args.run_dir} a finished run folder?)")
    from mtprune.pipeline.run_report import plot_tradeoff

    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_tradeoff(summary, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
