"""A crash in the middle of writing a log line, for the tests of every jsonlog user."""
from __future__ import annotations

import json
from pathlib import Path


class Crash(KeyboardInterrupt):
    """A simulated kill while a record was being written."""


def crash_while_writing(monkeypatch, after: int) -> None:
    """The log record appended after ``after`` more records is written half, then the process
    "dies" (raises Crash); headers are written as usual."""
    from mtprune import jsonlog

    real = getattr(jsonlog._write_line, "real", jsonlog._write_line)  # armed again: replaces the last crash
    count = {"records": 0}

    def write(path: Path, record: dict, mode: str) -> None:
        if mode == "ab":
            count["records"] += 1
            if count["records"] > after:
                text = json.dumps(record, ensure_ascii=False).encode("utf-8")
                with open(path, "ab") as fh:
                    fh.write(text[: len(text) // 2])
                raise Crash(f"simulated crash while writing record {count['records']} to {path}")
        real(path, record, mode)

    write.real = real
    monkeypatch.setattr(jsonlog, "_write_line", write)


def whole_lines(path: Path) -> list[dict]:
    """Every line of the log, each of which must be whole JSON ending in a newline."""
    text = Path(path).read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path} ends in a torn line"
    return [json.loads(line) for line in text.split("\n")[:-1]]


def stop_crashing(monkeypatch) -> None:
    """Writes are whole again (other patches stay)."""
    from mtprune import jsonlog

    monkeypatch.setattr(jsonlog, "_write_line", getattr(jsonlog._write_line, "real", jsonlog._write_line))
