"""The WMT 2025 compression task's deliverable: a folder with the model and ``run.sh``.

``export_submission`` copies (hard-links where it can) the checkpoint into ``DIR/model`` and writes
``DIR/run.sh LANG_PAIR BATCH_SIZE < input > output``, ``DIR/submission.json`` (prompt, backend and
the model's provenance) and ``DIR/README.md``.  ``run.sh`` calls ``python -m mtprune.submission``:
``translate_lines`` writes one line per input line (an empty line stays empty), offline.
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

from .backends import BackendConfig
from .errors import ConfigError, DataError
from .retrieval import DEFAULT_SHOTS_BY, check_shots_by

SETTINGS = "submission.json"
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
exec "$PYTHON" -m mtprune.submission "$HERE" "$1" "$2"
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


def checkpoint_folder(spec: str) -> Path:
    """The local checkpoint folder of MODEL (a packaged model: its cached conversion)."""
    from .models import checkpoint_for, resolve_source

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
    from .export import check_output_dir, read_record

    cfg.backend.validate()
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
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
        (tmp / "run.sh").write_text(RUN_SH.format(name=out.name, python=sys.executable))
        (tmp / "run.sh").chmod(0o755)
        (tmp / "README.md").write_text(_readme(out.name, settings))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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


def translate_lines(folder: Path, lang_pair: str, batch_size: int, lines: list[str]) -> list[str]:
    """One translation per line of ``lines``, with the folder's recorded settings."""
    from .data import DataSpec
    from .evaluate import load_pair, make_translator
    from .models import load_model

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
        loaded = load_model(str(folder / "model"), dtype=settings["dtype"], device=settings["device"],
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


def main(argv: list[str] | None = None) -> int:
    """``python -m mtprune.submission DIR LANG_PAIR BATCH_SIZE < input > output`` (what run.sh calls)."""
    import logging

    from .errors import MtpruneError

    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        if len(args) != 3 or not args[2].isdigit() or int(args[2]) < 1:
            raise ConfigError("usage: python -m mtprune.submission DIR LANG_PAIR BATCH_SIZE < input > output")
        text = sys.stdin.read()
        lines = text.split("\n")[:-1] if text.endswith("\n") else (text.split("\n") if text else [])
        out = translate_lines(Path(args[0]), args[1], int(args[2]), [line.removesuffix("\r") for line in lines])
    except (MtpruneError, DataError) as exc:
        print(f"run.sh: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
