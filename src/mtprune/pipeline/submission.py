"""The WMT compression task's deliverable: a folder with the model and ``run.sh``.

``export_submission`` copies (hard-links where it can) the checkpoint into ``DIR/model`` and writes
``DIR/run.sh LANG_PAIR BATCH_SIZE < input > output``, ``DIR/submission.json`` (prompt, backend and
the model's provenance) and ``DIR/README.md``.  ``run.sh`` calls ``python -m mtprune.pipeline.submission``:
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

from ..translate.backends import BackendConfig
from ..errors import ConfigError, DataError, unknown_choice
from ..translate.retrieval import DEFAULT_SHOTS_BY, check_shots_by

SETTINGS = "submission.json"
FORMATS = ("wmt25", "wmt26")
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
exec "$PYTHON" -m mtprune.pipeline.submission "$HERE" "$1" "$2"
"""


@dataclass
class SubmissionConfig:
    model: str
    out: Path
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

    def errors(self) -> list[str]:
        """Everything wrong with the settings, checked before any file is written."""
        errs = self.backend.errors()
        if self.format not in FORMATS:
            errs.append(unknown_choice("submission format", self.format, FORMATS))
        if self.max_batch_size is not None and self.format != "wmt26":
            errs.append(f"--max-batch-size applies to --format wmt26 only (not {self.format})")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            errs.append(f"--max-batch-size must be at least 1, got {self.max_batch_size}")
        return errs

    def validate(self) -> None:
        errs = self.errors()
        if errs:
            raise ConfigError("; ".join(errs))


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


def export_submission(cfg: SubmissionConfig) -> Path:
    from ..model.export import check_output_dir, read_record

    cfg.validate()
    check_shots_by(cfg.shots_by)
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
    from ..eval.evaluate import load_pair, make_translator
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


def _read_lines(path: str) -> list[str]:
    """The lines of a file (``-``: stdin), without their line ends; a last line without one counts."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")[:-1] if text.endswith("\n") else (text.split("\n") if text else [])
    return [line.removesuffix("\r") for line in lines]


def _positive_int(text: str) -> int:
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _arguments(argv: list[str] | None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m mtprune.pipeline.submission",
                                description="What run.sh calls: translate INPUT (default stdin) to OUTPUT "
                                "(default stdout), one line per line, with DIR's submission.json.")
    p.add_argument("folder", metavar="DIR", type=Path)
    p.add_argument("lang_pair", metavar="LANG_PAIR")
    p.add_argument("batch_size", metavar="BATCH_SIZE", type=_positive_int)
    p.add_argument("--input", default="-", help="a UTF-8 text file, or - for stdin")
    p.add_argument("--output", default="-", help="a file, or - for stdout")
    p.add_argument("--model-dir", type=Path, help="the checkpoint (default: DIR/model)")
    return p.parse_args(argv)


def _translations(args) -> list[str]:
    """The output lines for ``args.input`` with the folder's settings; a WMT 2026 package caps the batch at
    its declared maximum and never leaves a non-empty line's translation empty."""
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
    """``python -m mtprune.pipeline.submission DIR LANG_PAIR BATCH_SIZE < input > output`` (what run.sh calls).

    Until the translations are written, stdout is redirected to stderr: nothing a library prints
    can end up among them."""
    import logging

    from ..errors import MtpruneError

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
