"""Run the mtprune command in-process, as a test would from a shell."""
from __future__ import annotations

from mtprune.cli.main import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``mtprune ARGV`` (arguments may be paths or numbers)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
