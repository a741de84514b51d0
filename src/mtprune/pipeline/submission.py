"""The WMT compression task's deliverable: a folder with the model and ``run.sh``.

``run_submission`` copies (hard-links where it can) the checkpoint into ``DIR/model`` and writes
``DIR/run.sh LANG_PAIR BATCH_SIZE < input > output``, ``DIR/submission.json`` (prompt, backend and
the model's provenance) and ``DIR/README.md``.  ``run.sh`` calls ``python -m mtprune.cli.submission_runner``:
``translate_lines`` writes one line per input line (an empty line stays empty), offline.
``format`` wmt26 writes the WMT 2026 package instead (``mtprune.pipeline.wmt26``: setup.sh, its own venv).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import Problem, at_least, one_of, raise_problems
from ..errors import ConfigError
from ..translate.backends import BackendConfig
from ..translate.retrieval import DEFAULT_SHOTS_BY, shots_by_problems

SETTINGS = "submission.json"
FORMATS = ("wmt25", "wmt26")
FLAGS = {"model": "MODEL", "out": "--output", "backend.name": "--backend"}  # fields that are not --field-name
RUN_SH = """#!/usr/bin/env bash
# {name}: translate stdin to stdout, one line per input line, offline.
#   bash run.sh LANG_PAIR BATCH_SIZE < input > output      e.g. bash run.sh en-de 16 < src.txt > hyp.txt
set -euo pipefail
usage() {{ echo "usage: bash $0 LANG_PAIR BATCH_SIZE < input > output   (e.g. bash $0 en-de 16)" >&2; exit 2; }}
[[ $# -eq 2 ]] || usage
[[ "$1" =~ ^[A-Za-z]{{2,3}}(_[A-Za-z0-9]+)?-[A-Za-z]{{2,3}}(_[A-Za-z0-9]+)?$ ]] || usage
[[ "$2" =~ ^[1-9][0-9]*$ ]] || usage
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PYTHON="${{MTPRUNE_PYTHON:-{python}}}"
[[ -x "$PYTHON" ]] || PYTHON=python3
exec "$PYTHON" -m mtprune.cli.submission_runner "$HERE" "$1" "$2"
"""


@dataclass
class SubmissionConfig:
    """What ``mtprune export-submission`` packs; ``model`` and ``out`` may be None where the config is
    built only to be checked."""

    model: str | None = None
    out: Path | None = None
    backend: BackendConfig = field(default_factory=BackendConfig)
    prompt: str = "auto"  # auto: the format the model was trained with, else its chat template, else few-shot
    shots: int = 3
    shots_from: str | None = None  # few-shot examples: copied into the folder when it is a file
    shots_by: str = DEFAULT_SHOTS_BY  # random | similar (retrieved per segment from that pool)
    dtype: str = "auto"
    device: str = "auto"
    max_new_tokens: int | None = None
    force: bool = False
    format: str = "wmt25"  # wmt25: run.sh with the exporting interpreter; wmt26: setup.sh + its own venv
    max_batch_size: int | None = None  # wmt26: the largest batch run.sh declares (default 64)

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings, checked before any file is written."""
        out = [p.within("backend") for p in self.backend.problems()]
        out += one_of("format", self.format, FORMATS, "submission format")
        if self.max_batch_size is not None and self.format != "wmt26":
            out.append(Problem("max_batch_size", f"applies to {{format}} wmt26 only (not {self.format})",
                               also=("format",)))
        return out + at_least("max_batch_size", self.max_batch_size, 1) + shots_by_problems(self.shots_by)

    def validate(self) -> None:
        missing = [Problem(name, "required") for name in ("model", "out") if getattr(self, name) is None]
        raise_problems(missing + self.problems(), "submission settings", FLAGS)


def checkpoint_folder(spec: str) -> Path:
    """The local checkpoint folder of MODEL (a packaged model: its cached conversion)."""
    from ..model.load import checkpoint_for, resolve_source

    source = resolve_source(spec)
    if source.kind == "hub":
        raise ConfigError(f"{spec}: a hub id; the submission must run offline: download it (huggingface-cli download "
                          f"{spec} --local-dir DIR) and export the folder")
    return Path(checkpoint_for(source))


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard links where the file system allows (checkpoints are written by rename, never in place)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, ignore=shutil.ignore_patterns("*.checkpoints", ".*"))


def run_submission(cfg: SubmissionConfig) -> Path:
    """Write the deliverable folder ``cfg.out`` (``format`` wmt25: run.sh; wmt26: the WMT 2026 package)."""
    from ..model.export import check_output_dir, read_record

    cfg.validate()
    out = Path(cfg.out)
    check_output_dir(out, cfg.force)
    folder = checkpoint_folder(cfg.model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    try:
        _link_or_copy(folder, tmp / "model")
        shots_from = cfg.shots_from
        if shots_from and Path(shots_from).is_file():
            shutil.copy2(shots_from, tmp / Path(shots_from).name)
            shots_from = Path(shots_from).name  # relative to the folder
        settings = {"format": "mtprune-submission/1", "model": cfg.model, "checkpoint": str(folder),
                    "backend": asdict(cfg.backend), "prompt": cfg.prompt, "shots": cfg.shots,
                    "shots_from": shots_from, "shots_by": cfg.shots_by, "dtype": cfg.dtype, "device": cfg.device,
                    "max_new_tokens": cfg.max_new_tokens, "record": read_record(folder)}
        if cfg.format == "wmt26":
            from .wmt26 import write_package

            write_package(tmp, out.name, settings, cfg.max_batch_size)
        else:
            _write_wmt25(tmp, out.name, settings)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_wmt25(tmp: Path, name: str, settings: dict[str, Any]) -> None:
    (tmp / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    (tmp / "run.sh").write_text(RUN_SH.format(name=name, python=sys.executable))
    (tmp / "run.sh").chmod(0o755)
    (tmp / "README.md").write_text(_readme(name, settings))


def _readme(name: str, settings: dict[str, Any]) -> str:
    record = settings["record"] or {}
    pruned = (f"{record['original_num_layers']} -> {len(record['kept'])} layers (removed original ids "
              f"{record['removed']})" if record.get("kept") else "not pruned by mtprune")
    return f"""# {name}

Translate offline, one output line per input line:

    bash run.sh LANG_PAIR BATCH_SIZE < input > output      # e.g. bash run.sh en-de 16 < src.txt > hyp.txt

- model: `model/` ({settings['model']}; {pruned})
- prompt: {settings['prompt']} (shots {settings['shots']}, {settings['shots_by']}{', from ' + settings['shots_from'] if settings['shots_from'] else ''}),
  backend: {settings['backend']['name']}, dtype: {settings['dtype']}; all in `{SETTINGS}`
- needs: python with `mtprune` installed (`MTPRUNE_PYTHON` names the interpreter; default: the one that
  exported this folder, else python3); nothing is downloaded (`HF_HUB_OFFLINE=1`).
- an empty input line gives an empty output line; a translation is always one line.
"""


def translate_lines(folder: Path, lang_pair: str, batch_size: int, lines: list[str],
                    model_dir: Path | None = None) -> list[str]:
    """One translation per line of ``lines``, with the folder's recorded settings (the checkpoint:
    ``model_dir``, default ``folder/model``)."""
    from ..data.specs import DataSpec
    from ..translate.translator import load_pair, make_translator
    from ..model.load import load_model

    settings = json.loads((folder / SETTINGS).read_text())
    src, _, tgt = lang_pair.partition("-")
    todo = [i for i, line in enumerate(lines) if line.strip()]
    if not todo:
        return [""] * len(lines)
    backend = BackendConfig(**settings["backend"])
    shots_from = settings["shots_from"]
    if shots_from and (folder / shots_from).is_file():
        shots_from = str(folder / shots_from)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "input.txt"
        source.write_text("".join(lines[i].strip() + "\n" for i in todo), encoding="utf-8")
        pair = load_pair(DataSpec(str(source), src, tgt))
        loaded = load_model(str(model_dir or folder / "model"), dtype=settings["dtype"], device=settings["device"],
                            weights=backend.needs_weights())
        translator = make_translator(loaded, pair, prompt=settings["prompt"], shots=settings["shots"],
                                     shots_from=shots_from, shots_by=settings.get("shots_by", "random"),
                                     backend=backend, batch_size=batch_size,
                                     max_new_tokens=settings["max_new_tokens"], progress=False)
        hypotheses = translator.translate(pair.sources).hypotheses
    out = [""] * len(lines)
    for i, hyp in zip(todo, hypotheses):
        out[i] = " ".join(hyp.split())
    return out


def source_for_empty(sources: list[str], outputs: list[str]) -> tuple[list[str], list[int]]:
    """(``outputs`` where an empty translation of a non-empty source is a copy of that source, the
    0-based indices replaced): the WMT 2026 task fails a package on an empty output line."""
    empty = [i for i, (src, out) in enumerate(zip(sources, outputs)) if src.strip() and not out.strip()]
    replaced = set(empty)
    return [" ".join(sources[i].split()) if i in replaced else out for i, out in enumerate(outputs)], empty
