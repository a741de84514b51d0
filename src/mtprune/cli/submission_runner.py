"""``python -m mtprune.cli.submission_runner DIR LANG_PAIR BATCH_SIZE < input > output``: what a deliverable's
run.sh calls (``pipeline.submission`` and ``pipeline.wmt26`` write it): one translation per input line, with
the folder's submission.json, offline."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def _read_lines(path: str) -> list[str]:
    """The lines of a file (``-``: stdin), without their line ends; a last line without one counts."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")[:-1] if text.endswith("\n") else (text.split("\n") if text else [])
    return [line.removesuffix("\r") for line in lines]


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mtprune.cli.submission_runner",
                                description="What run.sh calls: translate INPUT (default stdin) to OUTPUT "
                                "(default stdout), one line per line, with DIR's submission.json.")
    p.add_argument("folder", metavar="DIR", type=Path)
    p.add_argument("lang_pair", metavar="LANG_PAIR")
    p.add_argument("batch_size", metavar="BATCH_SIZE", type=_positive_int)
    p.add_argument("--input", default="-", help="a UTF-8 text file, or - for stdin")
    p.add_argument("--output", default="-", help="a file, or - for stdout")
    p.add_argument("--model-dir", type=Path, help="the checkpoint (default: DIR/model)")
    return p.parse_args(argv)


def _translations(args: argparse.Namespace) -> list[str]:
    """The output lines for ``args.input`` with the folder's settings; a WMT 2026 package caps the batch at
    its declared maximum and never leaves a non-empty line's translation empty."""
    import json

    from ..pipeline.submission import SETTINGS, source_for_empty, translate_lines

    path = args.folder / SETTINGS
    settings = json.loads(path.read_text()) if path.is_file() else {}
    lines = _read_lines(args.input)
    batch_size, cap = args.batch_size, settings.get("max_batch_size")
    if cap and batch_size > cap:
        print(f"run.sh: batch size {batch_size} capped at the declared maximum {cap}", file=sys.stderr)
        batch_size = cap
    out = translate_lines(args.folder, args.lang_pair, batch_size, lines, model_dir=args.model_dir)
    if settings.get("task") != "wmt26":
        return out
    out, empty = source_for_empty(lines, out)
    if empty:
        shown = ", ".join(str(i + 1) for i in empty[:10]) + (" ..." if len(empty) > 10 else "")
        print(f"run.sh: warning: {len(empty)} empty translation(s) replaced by their source (lines {shown})",
              file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    """Translate as run.sh asks.  Until the translations are written, stdout is redirected to stderr:
    nothing a library prints can end up among them."""
    from ..errors import DataError, MtpruneError

    args = _arguments(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stdout = _stdout_to_stderr() if args.output == "-" else None
    try:
        text = "".join(line + "\n" for line in _translations(args))
    except (MtpruneError, DataError, OSError) as exc:
        print(f"run.sh: error: {exc}", file=sys.stderr)
        return 2
    if stdout is not None:
        with os.fdopen(stdout, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0


def _stdout_to_stderr() -> int:
    """Point file descriptor 1 at stderr; returns a descriptor of the original stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    return saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
