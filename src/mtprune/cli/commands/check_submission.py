"""``mtprune check-submission``: the WMT 2026 task's sanity check (and speed grid) on a package, locally."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Run what the task's sanitycheck.sh runs on the package DIR: `bash setup.sh`, then `bash run.sh --lang-pair "
    "ces-deu --batch-size 1 --input IN --output OUT` on three Czech lines (and the positional form `run.sh ces-deu "
    "1 < IN > OUT`, whose stdout must hold the translations only), each under --timeout; a step fails on a non-zero "
    "exit, a timeout, a line-count mismatch or an empty output line. --speed adds the speed grid (batch 1/16/64/256 "
    "capped at the package's declared maximum): source chars/s over the whole run.sh (loading included) and the "
    "peak memory of its processes (ru_maxrss of the children, as the task measures), and the size of model/. "
    "Exits 1 when a check fails."
)
EPILOG = """examples:
  mtprune export-submission runs/gemma/model -o wmt26 --format wmt26
  mtprune check-submission wmt26
  mtprune check-submission wmt26 --speed --speed-input wmt25.cs.txt"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("check-submission", help="run the WMT 2026 sanity check (and speed grid) on a package",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="DIR", help="the package (setup.sh, run.sh, requirements.txt, model/)")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed to each step (default: 900)")
    p.add_argument("--speed", action="store_true", help="also run the speed grid and measure model/ on disk")
    p.add_argument("--speed-input", metavar="FILE", type=Path,
                   help="source lines of the speed grid (default: 256 built-in Czech lines)")
    p.add_argument("--max-batch-size", type=int, metavar="N",
                   help="cap of the speed grid (default: submission.json's max_batch_size, else 256)")
    p.add_argument("--lang-pair", default="ces-deu", help="the pair run.sh is called with (default: ces-deu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...pipeline.wmt26 import CheckConfig, check_submission

    report = check_submission(CheckConfig(folder=Path(args.folder), timeout=args.timeout, speed=args.speed,
                                          lang_pair=args.lang_pair, speed_input=args.speed_input,
                                          max_batch_size=args.max_batch_size))
    print(f"check-submission {report.folder}")
    width = max(len(step.name) for step in report.steps)
    for step in report.steps:
        seconds = f"{step.seconds:7.1f} s" if step.seconds is not None else " " * 9
        print(f"  {step.name:<{width}}  {'pass' if step.ok else 'FAIL'}  {seconds}  {step.detail}")
    if report.speed:
        print("speed (whole run.sh, loading included):")
        print("  batch    chars  seconds   chars/s  peak MB  result")
        for row in report.speed:
            print(f"  {row.batch_size:>5}  {row.chars:>7}  {row.seconds:7.1f}  {row.chars_per_s:8.1f}  "
                  f"{row.peak_rss_bytes / 2**20:7.0f}  {'pass' if row.ok else 'FAIL ' + row.detail}")
    if report.model_bytes is not None:
        print(f"model/ on disk: {report.model_bytes:,} bytes ({report.model_bytes / 1e9:.2f} GB)")
    print("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1
