"""The search trace, ``RUN_DIR/trace.jsonl``: every evaluation of a layer subset, as it is done.

A ``jsonlog.JsonLog`` whose identity is what the values depend on (model, data, criterion,
metric, prompt, protected layers: ``engine._identity``) and whose records are
``{"key": "quality:0,1,3", "value": {...}}``.  Neither the stop rules nor the batch sizes are
part of it: a resumed search replays the recorded decisions, so a changed target extends (or
cuts short) the same rounds, and the outputs do not depend on the batch size.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..jsonlog import JsonLog

logger = logging.getLogger(__name__)

KIND = "mtprune search trace"
ADVICE = ("resume with the same model, data, criterion, metric, prompt and protected layers, or choose another "
          "-o folder to start a new search")


class Trace:
    """Recorded values by key; ``reused``/``computed`` count the lookups answered from the trace
    and the values computed now."""

    NAME = "trace.jsonl"

    def __init__(self, run_dir: Path, identity: dict[str, Any], resume: bool, restart_if_changed: bool = False):
        self.path = Path(run_dir) / self.NAME
        self.reused = 0
        self.computed = 0
        if self.path.exists() and not resume:
            raise ConfigError(
                f"{self.path} exists: a search already ran in {run_dir}. Pass --resume to continue it (with "
                "other stop rules it reuses the rounds done), or choose another -o folder"
            )
        self.log = JsonLog.resume(self.path, KIND, identity, advice=ADVICE, replace_if_changed=restart_if_changed)
        self.records: dict[str, Any] = {}
        for lineno, record in self.log.records:
            if "key" not in record or "value" not in record:
                raise DataError(f"{self.log.where(lineno)}: not a trace record (no key and value)")
            self.records[record["key"]] = record["value"]
        if self.records:
            logger.info("resuming from %s: %d evaluations already done", self.path, len(self.records))

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """The recorded value of ``key``, computing and recording it if missing."""
        return self.cached_many([key], lambda keys: [(key, compute())])[key]

    def cached_many(self, keys: Sequence[str],
                    compute: Callable[[list[str]], Iterable[tuple[str, Any]]]) -> dict[str, Any]:
        """Recorded values of ``keys``; ``compute(missing keys)`` yields ``(key, value)`` pairs
        for the missing ones, each recorded as soon as it comes."""
        missing = [k for k in dict.fromkeys(keys) if k not in self.records]
        self.reused += len(keys) - len(missing)
        if missing:
            for key, value in compute(missing):
                self.put(key, value)
        return {k: self.records[k] for k in keys}

    def put(self, key: str, value: Any) -> None:
        self.records[key] = value
        self.computed += 1
        self.log.append({"key": key, "value": value})


def trace_key(kind: str, kept: Sequence[int]) -> str:
    """``quality:0,1,3``: what was measured, and with which original layers."""
    return f"{kind}:{','.join(map(str, kept))}"
