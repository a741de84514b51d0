"""``python -m mtprune.cli.costs_child REQUEST.json RESULT.json``: the child process of ``bench.costs``,
which measures one model alone in a fresh interpreter (``bench.costs.measure_costs`` starts it,
``bench.alone.measure_here`` measures)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Measure the model of REQUEST (a ``CostRequest`` as JSON) in this process; its figures go to RESULT."""
    from ..bench.alone import CostRequest, measure_here
    from ..files import write_json_atomic

    parser = argparse.ArgumentParser(prog="python -m mtprune.cli.costs_child", description=main.__doc__)
    parser.add_argument("request", type=Path, help="a CostRequest as JSON (written by measure_costs)")
    parser.add_argument("result", type=Path, help="where the figures go (JSON)")
    args = parser.parse_args(argv)
    request = CostRequest(**json.loads(args.request.read_text(encoding="utf-8")))
    logging.basicConfig(level=request.log_level, format=f"[costs {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mtprune.bench.alone").info(
        "measuring %s alone (batch %d, then %d segments at batch 1)", request.model, request.batch_size,
        request.latency_segments)
    write_json_atomic(args.result, measure_here(request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
