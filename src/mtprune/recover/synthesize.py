"""Sequence-level distillation data: a teacher translates source sentences, failures and
duplicates are dropped, and the pairs are written as a TSV that ``finetune --data`` reads.

Crash safety: translations are appended, one chunk per line, to a progress log beside the
output (``OUT.progress.jsonl``, fsynced).  A rerun with the same teacher and settings reads
it back and translates only the sources it lacks, so nothing is translated twice; sources
are keyed by their text, so a larger ``--limit`` later extends the same log (where the prompt
stays the same: a chat teacher, or few-shot examples from ``--shots-from``).  A log of other
settings is refused, field by field, or with ``--force`` started over.  The TSV and
its sidecar JSON (``OUT.json``: provenance and counts) are written atomically at the end.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Problem, at_least, raise_problems
from ..translate.backends import BackendConfig
from ..data.specs import DataSpec
from ..errors import ConfigError, DataError
from ..files import write_json_atomic, write_text_atomic
from ..jsonlog import JsonLog
from ..eval.langcheck import language_check
from ..eval.failures import FAILURE_FLAGS, segment_failures
from ..translate.settings import TranslationSettings

logger = logging.getLogger(__name__)

LOG_SUFFIX = ".progress.jsonl"
SIDECAR_SUFFIX = ".json"
TSV_HEADER = "source\ttarget"
REQUIRED = ("teacher", "data", "out")  # filled in by a run; None only in a config built to be checked


@dataclass
class SynthesizeConfig:
    """Everything ``run_synthesize`` needs; ``problems`` checks it before any model loads."""

    teacher: str | None = None
    data: DataSpec | None = None
    out: Path | None = None
    # how the teacher translates (few-shot examples default to the data's train part)
    translation: TranslationSettings = field(default_factory=TranslationSettings)
    backend: BackendConfig | str = "hf"  # a name, or with engine options (vLLM's)
    chunk_size: int = 128  # sources translated (and logged) per chunk
    max_length_ratio: float = 3.0  # failure rules of failures.segment_failures
    min_length_ratio: float = 0.25
    dtype: str = "auto"
    device: str = "auto"
    force: bool = False
    progress: bool = True

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings that are given (teacher, data and out may be None)."""
        from ..model.load import name_problems

        out = [p.within("backend") for p in self.backend_config.problems()]
        out += [p.within("translation") for p in self.translation.problems()]
        out += name_problems(self.dtype, self.device) + at_least("chunk_size", self.chunk_size, 1)
        if not 0 <= self.min_length_ratio < self.max_length_ratio:
            out.append(Problem("min_length_ratio", f"must be >= 0 and below {{max_length_ratio}}, got "
                               f"{self.min_length_ratio} and {self.max_length_ratio}", also=("max_length_ratio",)))
        return out

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Raise one ConfigError listing every problem and every missing required setting."""
        missing = [Problem(name, "is required") for name in REQUIRED if getattr(self, name) is None]
        raise_problems(self.problems() + missing, "synthesize settings", flags)

    @property
    def backend_config(self) -> BackendConfig:
        return BackendConfig(self.backend) if isinstance(self.backend, str) else self.backend

    @property
    def log_path(self) -> Path:
        return Path(self.out).with_name(Path(self.out).name + LOG_SUFFIX)

    @property
    def sidecar_path(self) -> Path:
        return Path(self.out).with_name(Path(self.out).name + SIDECAR_SUFFIX)


@dataclass
class SynthesisResult:
    out: Path
    sidecar: Path
    counts: dict[str, Any]
    record: dict[str, Any] = field(repr=False)


# ----------------------------------------------------------------------------------------
# Pure steps: keys, deduplication, filtering, TSV text
# ----------------------------------------------------------------------------------------

def normalize_text(text: str) -> str:
    """One line, single spaces: what the TSV holds and what duplicates are compared on."""
    return " ".join(text.split())


def source_key(source: str) -> str:
    return hashlib.sha256(normalize_text(source).encode("utf-8")).hexdigest()[:20]


def unique_sources(sources: Sequence[str]) -> tuple[list[str], int]:
    """Sources in first-seen order without duplicates (after whitespace normalization), and
    how many were dropped.  Greedy decoding gives a source the same translation every time,
    so a duplicate source would only give a duplicate pair: it is dropped before translating."""
    seen: set[str] = set()
    unique = []
    for source in sources:
        key = normalize_text(source)
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique, len(sources) - len(unique)


def filter_translations(sources: Sequence[str], hypotheses: Sequence[str], *, tgt_lang: str | None = None,
                        max_length_ratio: float = 3.0,
                        min_length_ratio: float = 0.25) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Pairs that trip none of failures.segment_failures' flags (empty, too long, too short,
    source copy, repetition, and given ``tgt_lang`` an output in another language), and the
    count of each flag (a pair may trip several)."""
    kept: list[tuple[str, str]] = []
    counts = {flag: 0 for flag in FAILURE_FLAGS}
    failed = 0
    for source, hyp in zip(sources, hypotheses, strict=True):
        source, hyp = normalize_text(source), normalize_text(hyp)
        flags = segment_failures(source, hyp, tgt_lang=tgt_lang, max_length_ratio=max_length_ratio,
                                 min_length_ratio=min_length_ratio)
        for flag in flags:
            counts[flag] += 1
        if flags:
            failed += 1
        else:
            kept.append((source, hyp))
    return kept, {"failed": failed, **counts}


def tsv_text(pairs: Sequence[tuple[str, str]]) -> str:
    """The TSV that data.load_segments reads: header, one pair a line (texts are one-line, tab-free)."""
    return TSV_HEADER + "\n" + "".join(f"{source}\t{target}\n" for source, target in pairs)


# ----------------------------------------------------------------------------------------
# The progress log
# ----------------------------------------------------------------------------------------

class ProgressLog:
    """``OUT.progress.jsonl``: a ``jsonlog.JsonLog`` whose identity is the teacher and its
    translation settings, then one record per chunk of translations ``{"items": [[key,
    hypothesis], ...]}``.  A rerun with other settings is refused (its translations would not be
    the same teacher's), or with ``force`` started over."""

    KIND = "mtprune synthesize progress log"

    def __init__(self, path: Path, identity: dict[str, Any], force: bool = False):
        advice = ("rerun with the same teacher and settings to continue it, or pass --force to translate from the "
                  "start (the log is replaced)")
        self.log = JsonLog.resume(path, self.KIND, identity, advice=advice, replace_if_changed=force)
        self.path = self.log.path
        self.translations: dict[str, str] = {}
        for lineno, record in self.log.records:
            try:
                self.translations.update(dict(record["items"]))
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{self.log.where(lineno)}: not a progress record; delete the file to start "
                                "over") from None
        if self.translations:
            logger.info("resuming from %s: %d translations already done", self.path, len(self.translations))

    def add(self, items: Sequence[tuple[str, str]]) -> None:
        self.log.append({"items": [list(item) for item in items]})
        self.translations.update(items)


def translate_missing(log: ProgressLog, sources: Sequence[str], translate: Callable[[list[str]], list[str]],
                      chunk_size: int, progress: bool = True) -> int:
    """Translate the sources the log lacks, ``chunk_size`` at a time, logging each chunk as it
    is done; returns how many were translated now."""
    from tqdm.auto import tqdm

    missing = [s for s in sources if source_key(s) not in log.translations]
    bar = tqdm(total=len(missing), unit="seg", desc="synthesize", disable=not progress)
    for begin in range(0, len(missing), chunk_size):
        chunk = missing[begin : begin + chunk_size]
        hyps = translate(chunk)
        if len(hyps) != len(chunk):
            raise RuntimeError(f"the translator returned {len(hyps)} outputs for {len(chunk)} sources")
        log.add([(source_key(s), h) for s, h in zip(chunk, hyps)])
        bar.update(len(chunk))
    bar.close()
    return len(missing)


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------

def _translator(loaded, pair, cfg: SynthesizeConfig):
    """The evaluation translator.  Few-shot examples (base teachers) are never among the
    translated segments: the teacher would copy their references, which are not its own
    translations.  Synthesizing a whole data set?  Take examples from elsewhere with ``shots_from``."""
    from ..translate.translator import make_translator

    return make_translator(loaded, pair, cfg.translation, backend=cfg.backend, progress=False)


def _identity(loaded, translator, pair) -> dict[str, Any]:
    """What determines a translation: resuming needs all of it equal.  Not the batch size nor the
    vLLM engine's memory settings (outputs do not depend on them), so a run that ran out of memory
    resumes with a smaller one."""
    settings = {k: v for k, v in translator.describe().items() if k not in ("batch_size", "engine")}
    return {
        "teacher_fingerprint": loaded.fingerprint,
        "dtype": loaded.dtype,
        "src": pair.spec.src,
        "tgt": pair.spec.tgt,
        "translation": settings,
    }


def check_output(out: Path, force: bool) -> None:
    """The output TSV may exist only with ``force``, and is never a folder."""
    if Path(out).is_dir():
        raise ConfigError(f"-o {out} is a folder; give a .tsv file name")
    if Path(out).exists() and not force:
        raise ConfigError(f"-o {out} exists; pass --force to overwrite it")


def run_synthesize(cfg: SynthesizeConfig) -> SynthesisResult:
    """Translate ``cfg.data``'s sources with the teacher (resumable), filter, dedupe, write TSV + JSON."""
    from ..translate.translator import load_pair
    from ..versions import software_versions
    from ..model.load import load_model

    cfg.validate()
    check_output(cfg.out, cfg.force)
    start = time.perf_counter()
    pair = load_pair(cfg.data)
    sources, duplicates = unique_sources(pair.sources)
    loaded = load_model(cfg.teacher, dtype=cfg.dtype, device=cfg.device, weights=cfg.backend_config.needs_weights())
    translator = _translator(loaded, pair, cfg)
    log = ProgressLog(cfg.log_path, _identity(loaded, translator, pair), force=cfg.force)
    reused = sum(source_key(s) in log.translations for s in sources)
    translated_now = translate_missing(log, sources, lambda chunk: translator.translate(chunk).hypotheses,
                                       cfg.chunk_size, cfg.progress)
    hypotheses = [log.translations[source_key(s)] for s in sources]
    kept, failures = filter_translations(sources, hypotheses, tgt_lang=pair.spec.tgt,
                                         max_length_ratio=cfg.max_length_ratio, min_length_ratio=cfg.min_length_ratio)
    counts = {"input": len(pair.sources), "duplicates": duplicates, "translated": len(sources),
              "translated_now": translated_now, "reused_from_log": reused, "failures": failures, "kept": len(kept)}
    text = tsv_text(kept)
    record = {
        "command": "synthesize",
        "output": str(cfg.out),
        "output_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        "teacher": {**loaded.source.to_dict(), "fingerprint": loaded.fingerprint, "dtype": loaded.dtype,
                    "device": loaded.device},
        "data": pair.describe(),
        "translation": translator.describe(),
        "filter": {"rules": "mtprune.eval.failures.segment_failures", "flags": list(FAILURE_FLAGS),
                   "max_length_ratio": cfg.max_length_ratio, "min_length_ratio": cfg.min_length_ratio,
                   "language": language_check(pair.spec.tgt).describe(),
                   "duplicates": "sources compared after whitespace normalization, first kept"},
        "counts": counts,
        "progress_log": str(cfg.log_path),
        "seconds": round(time.perf_counter() - start, 1),
        "versions": software_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if not kept:
        raise DataError(f"all {len(sources)} teacher translations failed the filters ({failures}); nothing written. "
                        f"Check the teacher and --prompt (progress log kept: {cfg.log_path})")
    write_text_atomic(Path(cfg.out), text)
    write_json_atomic(cfg.sidecar_path, record)
    return SynthesisResult(out=Path(cfg.out), sidecar=cfg.sidecar_path, counts=counts, record=record)
