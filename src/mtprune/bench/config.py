"""What a bench measures and how: ``BenchConfig``, its problems, and the batch sizes of the command line."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..config import Problem, at_least, one_of, raise_problems
from ..data.specs import DataSpec
from ..errors import ConfigError
from ..eval.comet import FLAGS as COMET_FLAGS
from ..translate.backends import BackendConfig
from ..translate.settings import TranslationSettings
from .alone import DEFAULT_LATENCY_SEGMENTS
from .stats import INTERVALS

DEFAULT_BATCH_SIZES = (1, 16, 64)
ORDERS = ("interleaved", "sequential")
# the command line's names of the fields that are not --field-name
FLAGS = {"models": "MODEL", "backend.name": "--backend", **{f"comet.{k}": v for k, v in COMET_FLAGS.items()}}


@dataclass
class BenchConfig:
    """Everything ``mtprune bench`` needs; ``validate`` checks it before any model loads.  ``models``
    and ``data`` may be None where the config is built only to be checked (a recipe's bench section)."""

    models: list[str] | None = None  # the first is the reference of the speed-ups
    data: DataSpec | None = None
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    warmup: int = 1
    runs: int = 5  # rounds: min-max over 5 holds the median ratio with 94% probability (bench_stats)
    backend: BackendConfig | str = "hf"  # a name, or with vLLM's engine options
    dtype: str = "auto"
    device: str = "auto"
    translation: TranslationSettings = field(default_factory=TranslationSettings)  # its batch_size is not used
    fixed_new_tokens: int | None = None  # equal work: exactly N tokens per segment, stop rules off
    metric: str = "chrf++"
    comet: Any = None  # CometSettings of a COMET --metric (default: its default model)
    order: str = "interleaved"  # or sequential: one model loaded at a time (for models that do not fit together)
    interval: str = "minmax"  # or bootstrap (of the median, seeded)
    seed: int = 0
    costs: bool = True  # also each model alone in its own process (costs.py): memory, disk, load, chars/s, batch 1
    latency_segments: int = DEFAULT_LATENCY_SEGMENTS  # segments translated one at a time for the batch-1 latency

    def problems(self) -> list[Problem]:
        """Everything wrong with the fields that are set."""
        out: list[Problem] = []
        if self.models is not None and not self.models:
            out.append(Problem("models", "give at least one"))
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            out.append(Problem("batch_sizes", f"must be positive integers, got {list(self.batch_sizes)}"))
        out += at_least("runs", self.runs, 1) + at_least("latency_segments", self.latency_segments, 1)
        out += at_least("warmup", self.warmup, 0) + at_least("fixed_new_tokens", self.fixed_new_tokens, 1)
        if self.fixed_new_tokens is not None and self.translation.max_new_tokens is not None:
            out.append(Problem("fixed_new_tokens", "give it or {translation.max_new_tokens}, not both",
                               also=("translation.max_new_tokens",)))
        out += [p.within("translation") for p in self.translation.problems()]
        out += one_of("order", self.order, ORDERS, "timing order") + one_of("interval", self.interval, INTERVALS,
                                                                              "interval")
        out += [p.within("backend") for p in self.backend_config.problems()]
        if self.comet is not None:
            out += [p.within("comet") for p in self.comet.problems()]
        return out

    def validate(self) -> None:
        missing = [Problem(name, "required") for name in ("models", "data") if getattr(self, name) is None]
        raise_problems(missing + self.problems(), "bench settings", FLAGS)

    @property
    def timing_order(self) -> str:
        """interleaved, or sequential where asked or where the backend holds one model per
        process (vLLM: interleaving would restart its engine at every pass)."""
        return "sequential" if self.order == "sequential" or self.backend_config.name == "vllm" else "interleaved"

    @property
    def backend_config(self) -> BackendConfig:
        return BackendConfig(self.backend) if isinstance(self.backend, str) else self.backend

    def record(self) -> dict[str, Any]:
        """The settings as the bench JSON records them: the translation settings among the others, as
        before they were grouped (reports read old files), less the batch size the bench does not use."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "translation":
                out.update({k: v for k, v in asdict(self.translation).items() if k != "batch_size"})
            elif f.name == "backend":
                out["backend"] = asdict(self.backend_config)
            else:
                value = getattr(self, f.name)
                out[f.name] = asdict(value) if hasattr(value, "__dataclass_fields__") else value
        return out


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,16,64' -> (1, 16, 64); a clear error for anything else."""
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--batch-sizes {text!r}: give comma-separated integers, e.g. 1,16,64") from None
    if not sizes or any(b < 1 for b in sizes):
        raise ConfigError(f"--batch-sizes {text!r}: give comma-separated positive integers, e.g. 1,16,64")
    return sizes
