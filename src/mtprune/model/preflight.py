"""Fits before it runs: a stage's memory estimate against what this machine has, before a weight loads.

``memory.py`` estimates what a stage needs from the model's config; this module compares that
with the device the stage will use (the RAM this process may still take on a CPU, the free
memory of the GPU) and, where it does not fit, refuses with the estimate's parts, the
machine's figure and the options that would fit, each estimated the same way. ``--fit auto``
(recipes: ``fit: auto``) takes the first option that fits instead.

The option order puts what leaves the model the same first: a smaller micro-batch with more
gradient accumulation (the same examples per optimizer step) and gradient checkpointing
(recomputed activations, slower steps) train the same model; an 8-bit optimizer changes its
rounding; frozen embeddings and LoRA train fewer weights.

On a CPU the kernel kills a process that takes too much (exit 137, no message): this check is
the defence there. On a GPU a translation that runs out of memory halves its batch and goes
on (``backends.hf``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .memory import GiB, Estimate, inference_memory, training_memory
from .shape import ModelShape

logger = logging.getLogger(__name__)

# What the process takes beside the stage's own tensors: on a CPU the interpreter with torch,
# transformers and the tokenized data (RSS before the model loads, measured by
# benchmarks/memory_estimate.py), on a GPU the CUDA context.
RUNTIME_BYTES = {"cpu": int(0.75 * GiB), "cuda": int(0.6 * GiB)}
SKIP_FLAG = "--skip-memory-check"
# fit: auto takes an option only where its estimate with this margin fits: the estimates are within
# +-30% of measured peaks (benchmarks/memory_estimate.py), and the kernel kills what is short
AUTO_MARGIN = 1.2
FIT_MODES = ("check", "auto")


class MemoryFitError(ConfigError):
    """A stage's memory estimate is above what its device has (checked before any weight loads)."""


# ----------------------------------------------------------------------------------------
# What the machine has
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Room:
    """The memory a stage may take on its device."""

    device: str
    available: int | None  # bytes; None: not known (no check)
    what: str  # where the figure comes from, for the message

    @property
    def runtime(self) -> int:
        return RUNTIME_BYTES.get(self.device.split(":")[0], 0)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "available_bytes": self.available, "what": self.what}


def room_for(device: str) -> Room:
    """The room on ``device`` ("cpu", "cuda", "cuda:1", "mps")."""
    if device.startswith("cuda"):
        return _gpu_room(device)
    if device == "cpu":
        available, what = cpu_available()
        return Room("cpu", available, what)
    return Room(device, None, f"{device}: its free memory is not known")


def cpu_available() -> tuple[int | None, str]:
    """RAM this process may still take: the kernel's MemAvailable, or less where a cgroup limits it."""
    available, what = _meminfo_available(), "available RAM (MemAvailable, /proc/meminfo)"
    limit = _cgroup_room()
    if limit is not None and (available is None or limit < available):
        available, what = limit, "the container's memory limit less its use (cgroup memory.max)"
    return available, what


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def _gpu_room(device: str) -> Room:
    import torch

    index = int(device.split(":")[1]) if ":" in device else 0
    free, _total = torch.cuda.mem_get_info(index)
    return Room(device, int(free), f"free memory of GPU {index} (torch.cuda.mem_get_info)")


# ----------------------------------------------------------------------------------------
# Options and the check
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """A change of settings that needs less memory: ``changes`` in config field names."""

    changes: dict[str, Any]
    estimate: Estimate
    note: str = ""
    usable: bool = True  # False: listed, never taken (e.g. its package is not installed)

    def flags(self) -> str:
        return " ".join(_flag(key, value) for key, value in self.changes.items())


def _flag(key: str, value: Any) -> str:
    name = "--" + key.replace("_", "-")
    return name if value is True else f"{name} {value}"


@dataclass(frozen=True)
class FitCheck:
    """One stage's estimate against its device, and what would fit instead."""

    stage: str
    estimate: Estimate
    room: Room
    options: tuple[Option, ...] = ()
    chosen: Option | None = field(default=None, compare=False)
    asked: Estimate | None = None  # with ``chosen``: the estimate of the settings as given

    @property
    def need(self) -> int:
        return self.estimate.total + self.room.runtime

    @property
    def fits(self) -> bool:
        return self.room.available is None or self.need <= self.room.available

    def option_fits(self, option: Option, margin: float = 1.0) -> bool:
        need = option.estimate.total + self.room.runtime
        return self.room.available is None or need * margin <= self.room.available

    def first_fitting(self, margin: float = AUTO_MARGIN) -> Option | None:
        """The first usable option whose estimate x ``margin`` fits."""
        return next((o for o in self.options if o.usable and self.option_fits(o, margin)), None)

    def summary(self) -> str:
        have = "unknown" if self.room.available is None else f"{self.room.available / GiB:.1f} GiB"
        return f"{self.stage}: needs {self._needs()}; {self.room.device} has {have} ({self.room.what})"

    def _needs(self) -> str:
        return self.estimate.describe(self.room.runtime)

    def message(self, skip_hint: str = "") -> str:
        """The refusal: the estimate, the machine's figure, the options with their estimates."""
        lines = [f"{self.stage} will not fit in memory: it needs {self._needs()}; {self.room.device} has "
                 f"{self.room.available / GiB:.1f} GiB ({self.room.what})."]
        fitting = _one_per_kind([o for o in self.options if self.option_fits(o)], first=True)
        others = _one_per_kind([o for o in self.options if not self.option_fits(o)], first=False)
        if fitting:
            lines.append("Options that fit (estimated the same way):")
            lines += [self._option_line(o) for o in fitting]
        if others:
            lines.append("Options that do not fit either:")
            lines += [self._option_line(o) for o in others]
        if not self.options:
            lines.append("No option of this stage fits: use a machine with more memory or a smaller model.")
        lines.append(skip_hint or f"{SKIP_FLAG} runs it anyway (on a CPU the kernel may then kill the process).")
        return "\n".join(lines)

    def _option_line(self, option: Option) -> str:
        note = f"  ({option.note})" if option.note else ""
        return f"  {option.flags()}: ~{(option.estimate.total + self.room.runtime) / GiB:.1f} GiB{note}"

    def to_dict(self) -> dict[str, Any]:
        record = {"stage": self.stage, "estimate_bytes": (self.asked or self.estimate).total,
                  "runtime_bytes": self.room.runtime,
                  "room": self.room.to_dict(), "fits": self.fits}
        if self.chosen is not None:
            record["chosen"] = {"changes": self.chosen.changes, "estimate_bytes": self.chosen.estimate.total,
                                "note": self.chosen.note}
        return record


def _one_per_kind(options: list[Option], first: bool) -> list[Option]:
    """One option per set of changed settings: the first (the largest batch that fits) or the last
    (the smallest that does not)."""
    kept: dict[frozenset, Option] = {}
    for option in options:
        kind = frozenset(option.changes)
        if not first or kind not in kept:
            kept[kind] = option
    return list(kept.values())


def enforce(check: FitCheck, *, skip: bool = False, skip_hint: str = "") -> None:
    """Log the check; raise MemoryFitError where it does not fit (a warning with ``skip``)."""
    if check.fits:
        logger.info("memory check: %s: fits", check.summary())
        return
    if skip:
        logger.warning("memory check skipped (%s): %s", SKIP_FLAG, check.summary())
        return
    raise MemoryFitError(check.message(skip_hint))


def fit_auto(check: FitCheck) -> FitCheck:
    """``fit: auto``: the check as it is where it fits, else with the first option that fits with
    ``AUTO_MARGIN`` to spare chosen (``chosen``; the caller applies its ``changes``); unchanged (and
    refused by ``enforce``) where none does."""
    if check.fits:
        return check
    option = check.first_fitting()
    if option is None:
        return check
    return replace(check, estimate=option.estimate, options=(), chosen=option, asked=check.estimate)


# ----------------------------------------------------------------------------------------
# The options of each kind of stage (pure)
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingSettings:
    """What training_memory reads from a finetune config."""

    batch_size: int
    grad_accum: int
    tokens: int  # the longest training example (prompt and target)
    target_fraction: float
    compute_bytes: int
    lora: bool = False
    lora_rank: int = 16
    trained_layers: int | None = None
    freeze_embeddings: bool = False
    optimizer: str = "adamw_torch"
    gradient_checkpointing: bool = False

    def estimate(self, shape: ModelShape) -> Estimate:
        return training_memory(shape, batch_size=self.batch_size, max_length=self.tokens, lora=self.lora,
                               lora_rank=self.lora_rank, trained_layers=self.trained_layers,
                               freeze_embeddings=self.freeze_embeddings, optimizer=self.optimizer,
                               gradient_checkpointing=self.gradient_checkpointing,
                               compute_bytes=self.compute_bytes, target_fraction=self.target_fraction)


def training_options(shape: ModelShape, settings: TrainingSettings, *, eight_bit: bool) -> list[Option]:
    """Cheaper ways to train, the ones that leave the model the same first. ``eight_bit``:
    bitsandbytes is installed (8-bit AdamW is usable)."""
    options: list[Option] = []

    def add(note: str, usable: bool = True, **changes: Any) -> None:
        changes = {k: v for k, v in changes.items() if getattr(settings, k) != v}
        if changes and all(o.changes != changes for o in options):
            options.append(Option(changes, replace(settings, **changes).estimate(shape), note, usable))

    effective = settings.batch_size * settings.grad_accum
    for micro in _halvings(settings.batch_size, divisors=True):
        add(f"the same {effective} examples a step: the same model", batch_size=micro,
            grad_accum=effective // micro)
    add("the same model; steps ~30% slower", gradient_checkpointing=True)
    add("the same model; slower steps", gradient_checkpointing=True, batch_size=1, grad_accum=effective)
    add("optimizer states in 8 bits" + ("" if eight_bit else "; needs bitsandbytes (not installed)"),
        usable=eight_bit, optimizer="adamw_8bit")
    if settings.trained_layers is None and not settings.lora:
        add("embeddings and LM head stay as they are", freeze_embeddings=True)
    add("trains low-rank adapters only (merged on export)", lora=True)
    add("trains low-rank adapters only; slower steps", lora=True, gradient_checkpointing=True)
    return options


def _halvings(batch_size: int, divisors: bool = False) -> list[int]:
    """batch_size / 2, / 4, ... down to 1 (``divisors``: only those that divide it)."""
    sizes, size = [], batch_size // 2
    while size >= 1:
        if not divisors or batch_size % size == 0:
            sizes.append(size)
        size //= 2
    if divisors and batch_size > 1 and 1 not in sizes:
        sizes.append(1)
    return sizes


def inference_options(shape: ModelShape, *, dtype_bytes: int, batch_size: int, tokens: int) -> list[Option]:
    """Smaller batches, and bf16 where the weights would be fp32."""
    options = [Option({"batch_size": size}, inference_memory(shape, dtype_bytes=dtype_bytes, batch_size=size,
                                                             tokens=tokens), "slower")
               for size in _halvings(batch_size)]
    if dtype_bytes > 2:
        options.append(Option({"dtype": "bfloat16"}, inference_memory(shape, dtype_bytes=2, batch_size=batch_size,
                                                                      tokens=tokens),
                              "half the weights' bytes; fast on GPUs and AMX/AVX512-BF16 CPUs"))
    return options


def bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None
