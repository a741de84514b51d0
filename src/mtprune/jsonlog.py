"""Append-only JSONL logs with an identity header: the search trace, synthesize's progress log
and finetune's run file are three uses of this one idea.

Line 1 is a header ``{"type": "header", "kind": ..., "identity": {...}, "created": ...}``;
every later line is one record (a JSON object).  The identity names what the log belongs to
(model, data, settings); a log is continued only with the same identity, and a mismatch is
named field by field.  Each append is one write of one line, flushed and fsynced, so a crash
loses at most the line being written: a last line without its newline.  Reading skips it, and
the next append first cuts it off, so the new record starts on a line of its own.

Logs written by earlier versions (a header without ``kind``; a torn line that the next record
was appended onto) are read as they are.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

logger = logging.getLogger(__name__)


class IdentityMismatch(ConfigError):
    """A log made for another model, data or settings than the ones given now."""

    def __init__(self, path: Path, kind: str, differences: dict[str, tuple[Any, Any]], advice: str):
        self.path, self.differences = path, differences
        lines = "\n".join(f"  {name}: {_show(before)} in the log, {_show(now)} now"
                          for name, (before, now) in differences.items())
        super().__init__(f"{path}: this {kind} was made with other settings:\n{lines}\n{advice}")


class JsonLog:
    """One append-only log; ``records`` holds ``(line number, record)`` of every whole record line."""

    def __init__(self, path: Path, kind: str, header: dict[str, Any], records: list[tuple[int, dict[str, Any]]],
                 whole_bytes: int | None = None):
        self.path, self.kind, self.header, self.records = Path(path), kind, header, records
        self._cut_at = whole_bytes  # where a torn last line starts: cut off before the next append

    @property
    def identity(self) -> dict[str, Any]:
        return self.header.get("identity") or {}

    @classmethod
    def create(cls, path: Path, kind: str, identity: dict[str, Any]) -> JsonLog:
        """A new log holding only its header (an existing file at ``path`` is replaced)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"type": "header", "kind": kind, "identity": identity, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            _write_line(tmp, header, mode="wb")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return cls(path, kind, header, [])

    @classmethod
    def read(cls, path: Path, kind: str) -> JsonLog | None:
        """The log at ``path`` as it is, or None where there is no file or not even a whole header
        line (a crash while the log was created: nothing was recorded)."""
        path = Path(path)
        if not path.is_file():
            return None
        raw = path.read_bytes()
        whole = raw[: raw.rfind(b"\n") + 1]
        lines = whole.decode("utf-8").split("\n")[:-1]  # not splitlines(): texts may hold U+2028 and the like
        if len(whole) < len(raw):
            logger.warning("%s:%d: an incomplete last line (a write cut short by a crash): ignored, and cut off "
                           "before the next record is written", path, len(lines) + 1)
        if not lines:
            return None
        header = _header(path, lines[0], kind)
        records = [(lineno, _record(path, lineno, line)) for lineno, line in enumerate(lines[1:], start=2)]
        return cls(path, kind, header, records, len(whole) if len(whole) < len(raw) else None)

    @classmethod
    def resume(cls, path: Path, kind: str, identity: dict[str, Any], *, advice: str,
               replace_if_changed: bool = False) -> JsonLog:
        """The log at ``path`` to continue, after checking its identity; a new one where there is none.

        Another identity raises IdentityMismatch (``advice``: how to proceed), or with
        ``replace_if_changed`` starts a new log in its place, which a warning says."""
        log = cls.read(path, kind)
        if log is None:
            return cls.create(path, kind, identity)
        differences = identity_differences(log.identity, identity)
        if differences and replace_if_changed:
            logger.warning("%s was made with other settings (%s differ): starting it over", path,
                           ", ".join(differences))
            return cls.create(path, kind, identity)
        if differences:
            raise IdentityMismatch(log.path, kind, differences, advice)
        return log

    def append(self, record: dict[str, Any]) -> None:
        """Add one record line, on disk (fsynced) before this returns."""
        if self._cut_at is not None:
            with open(self.path, "r+b") as fh:
                fh.truncate(self._cut_at)
            logger.info("%s: cut off the incomplete last line before appending", self.path)
            self._cut_at = None
        _write_line(self.path, record, mode="ab")
        self.records.append((self.records[-1][0] + 1 if self.records else 2, record))

    def where(self, lineno: int) -> str:
        return f"{self.path}:{lineno}"


def identity_differences(recorded: dict[str, Any], now: dict[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``{field: (recorded value, value now)}`` for every field that differs; nested dicts are
    compared field by field (``translation.prompt``)."""
    differences: dict[str, tuple[Any, Any]] = {}
    for name in sorted(set(recorded) | set(now)):
        before, after = recorded.get(name), now.get(name)
        if isinstance(before, dict) and isinstance(after, dict):
            differences.update(identity_differences(before, after, f"{prefix}{name}."))
        elif _jsonable(before) != _jsonable(after):
            differences[prefix + name] = (before, after)
    return differences


def _jsonable(value: Any) -> Any:
    """The value as it reads back from the log (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def _write_line(path: Path, record: dict[str, Any], mode: str) -> None:
    with open(path, mode) as fh:
        fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def _header(path: Path, line: str, kind: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("type") != "header" or not isinstance(header.get("identity"), dict):
        raise DataError(f"{path}:1: not an mtprune {kind} (no header line); delete it or write elsewhere")
    if header.get("kind", kind) != kind:  # logs of earlier versions name no kind
        raise DataError(f"{path}:1: the header says {header['kind']!r}, not {kind!r}: another log; write elsewhere")
    return header


def _record(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        record = _after_torn_prefix(line)
        if record is None:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); the file was "
                            "damaged: delete it to start over") from None
        logger.warning("%s:%d: a record cut short by an earlier crash, then a whole one: the whole one is read",
                       path, lineno)
    if not isinstance(record, dict):
        raise DataError(f"{path}:{lineno}: not a record (a JSON object); the file was damaged: delete it to start over")
    return record


def _after_torn_prefix(line: str) -> dict[str, Any] | None:
    """The whole record at the end of ``line`` where an earlier version appended it onto the
    torn line a crash left (``{"key": "qual{"key": ...}``), else None."""
    decoder = json.JSONDecoder()
    start = line.find("{", 1)
    while start != -1:
        try:
            record, end = decoder.raw_decode(line, start)
            if end == len(line.rstrip()) and isinstance(record, dict):
                return record
        except json.JSONDecodeError:
            pass
        start = line.find("{", start + 1)
    return None


def _show(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
