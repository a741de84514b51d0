"""Deployment budgets: how many layers to remove (``--depth-for``).

A budget is a comma-separated list of conditions on the pruned model:

    tokens/s>=120      generated tokens per second (needs --speed-from BENCH.json)
    params<=200M       parameters (K, M, B suffixes)
    size<=0.5GB        size of the weights: parameters x bytes per parameter of the dtype
                       (KB/MB/GB decimal, KiB/MiB/GiB binary)

Tokens/s of a pruned model come from a ``mtprune bench --json`` file: MEASURED where the file
has a model with that many layers, else the file's first (unpruned) model's measured tokens/s
times the IDEAL speed-up from per-token matmul FLOPs (``bench.per_token_flops``), which pruning
rarely beats, so the prediction is optimistic; the source of each figure is reported.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

_CONDITION = re.compile(r"^\s*(tokens/s|params|size)\s*(>=|<=)\s*([0-9.]+)\s*([a-zA-Z]*)\s*$")
_PARAM_UNITS = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}
_SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_DIRECTION = {"tokens/s": ">=", "params": "<=", "size": "<="}
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1}


@dataclass(frozen=True)
class Budget:
    min_tokens_per_s: float | None = None
    max_params: float | None = None
    max_size_bytes: float | None = None
    text: str = ""

    @property
    def needs_speed(self) -> bool:
        return self.min_tokens_per_s is not None


def parse_budget(text: str, option: str = "--depth-for") -> Budget:
    """'tokens/s>=120,params<=200M,size<=0.5GB' -> Budget; every bad condition named at once."""
    values, errors = _conditions(text)
    if errors:
        raise ConfigError(f"{option} {text!r}: " + "; ".join(errors))
    return Budget(min_tokens_per_s=values.get("tokens/s"), max_params=values.get("params"),
                  max_size_bytes=values.get("size"), text=text)


def budget_errors(text: str) -> list[str]:
    """What is wrong with each condition of a budget (nothing for a valid one)."""
    return _conditions(text)[1]


def _conditions(text: str) -> tuple[dict[str, float], list[str]]:
    """The budget's limits by name (``tokens/s``, ``params``, ``size``) and its bad conditions."""
    values: dict[str, float] = {}
    errors = []
    for part in [p for p in text.split(",") if p.strip()] or [text]:
        m = _CONDITION.match(part)
        if not m:
            errors.append(f"{part.strip()!r} is not a condition: use tokens/s>=X, params<=Y (K/M/B), size<=Z (MB/GB)")
            continue
        key, op, number, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4).lower()
        if op != _DIRECTION[key]:
            errors.append(f"{part.strip()!r}: {key} takes {_DIRECTION[key]}")
            continue
        units = _SIZE_UNITS if key == "size" else _PARAM_UNITS if key == "params" else {"": 1}
        if unit not in units:
            errors.append(f"{part.strip()!r}: unknown unit {m.group(4)!r} for {key} "
                          f"(valid: {', '.join(u or 'none' for u in units)})")
            continue
        if key in values:
            errors.append(f"{key} is given twice")
        values[key] = number * units[unit]
    return values, errors


@dataclass(frozen=True)
class SpeedModel:
    """Tokens/s by layer set, from a bench result at one batch size."""

    base_tokens_per_s: float
    base_layers: int
    shape: Any  # bench.ModelShape of the unpruned model
    context: float
    batch_size: int
    measured: dict[int, float] = field(default_factory=dict)  # layers -> measured tokens/s
    source: str = ""

    def tokens_per_s(self, removed: Sequence[int]) -> tuple[float, str]:
        """(tokens/s, 'measured' or 'ideal') with the ORIGINAL ids ``removed``."""
        from ..model.shape import ModelShape, per_token_flops

        layers = self.base_layers - len(removed)
        if layers in self.measured:
            return self.measured[layers], "measured"
        keep = [i for i in range(self.base_layers) if i not in set(removed)]
        pruned = ModelShape(tuple(self.shape.linear_per_layer[i] for i in keep),
                            tuple(self.shape.attention_width[i] for i in keep),
                            tuple(self.shape.window[i] for i in keep), self.shape.head)
        ideal = per_token_flops(self.shape, self.context)["total"] / per_token_flops(pruned, self.context)["total"]
        return self.base_tokens_per_s * ideal, "ideal"


def speed_model_from_bench(path: str | Path, batch_size: int | None = None) -> SpeedModel:
    """The SpeedModel of a ``mtprune bench --json`` file: its first model is the unpruned one;
    ``batch_size`` None takes the largest batch size measured.  Pruned models' measured speeds
    are used only from a ``--fixed-new-tokens`` bench (the same work for every model): tokens/s
    of their own translations also measure how long those are."""
    from ..model.shape import ModelShape

    path = Path(path)
    try:
        result = json.loads(path.read_text())
        models = result["models"]
        base = models[0]
    except FileNotFoundError:
        raise ConfigError(f"--speed-from {path}: file not found (write one with mtprune bench --json)") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise ConfigError(f"--speed-from {path}: not a `mtprune bench --json` file") from None
    sizes = [row["batch_size"] for row in base["batches"]]
    size = batch_size if batch_size is not None else max(sizes)
    if size not in sizes:
        raise ConfigError(f"--speed-from {path}: no batch size {size} measured (measured: {sizes})")
    row = next(r for r in base["batches"] if r["batch_size"] == size)
    shape = ModelShape.from_dict(base["shape"])
    measured = {}
    equal_work = bool((result.get("config") or {}).get("fixed_new_tokens"))
    if not equal_work and len(models) > 1:
        logger.warning("--speed-from %s: its models translated in their own words (not --fixed-new-tokens), so "
                       "only the first model's speed is used, times the ideal speed-up of each depth", path)
        models = models[:1]
    for entry in models[1:]:
        if entry.get("fingerprint") == base.get("fingerprint"):
            continue
        for r in entry["batches"]:
            if r["batch_size"] == size:
                measured[entry["layers"]] = r["tokens_per_s"]
    return SpeedModel(base_tokens_per_s=row["tokens_per_s"], base_layers=base["layers"], shape=shape,
                      context=row["mean_context"], batch_size=size, measured=measured, source=str(path))


def predict(model: dict[str, Any], removed: Sequence[int], speed: SpeedModel | None) -> dict[str, Any]:
    """Parameters, size and (with ``speed``) tokens/s of ``model`` (a plan's ``model`` record:
    params_total, params_per_layer, dtype) without the ORIGINAL ids ``removed``."""
    params = model["params_total"] - sum(model["params_per_layer"][i] for i in removed)
    out: dict[str, Any] = {"layers_removed": len(removed), "params": params,
                           "size_bytes": params * _DTYPE_BYTES.get(str(model.get("dtype", "float32")), 4)}
    if speed is not None:
        out["tokens_per_s"], out["speed_from"] = speed.tokens_per_s(removed)
    return out


def unmet(budget: Budget, prediction: dict[str, Any]) -> list[str]:
    """The budget's conditions that ``prediction`` does not meet, in words."""
    misses = []
    if budget.max_params is not None and prediction["params"] > budget.max_params:
        misses.append(f"params {prediction['params'] / 1e6:.1f}M > {budget.max_params / 1e6:.1f}M")
    if budget.max_size_bytes is not None and prediction["size_bytes"] > budget.max_size_bytes:
        misses.append(f"size {prediction['size_bytes'] / 1e9:.3f} GB > {budget.max_size_bytes / 1e9:.3f} GB")
    if budget.min_tokens_per_s is not None and prediction["tokens_per_s"] < budget.min_tokens_per_s:
        misses.append(f"{prediction['tokens_per_s']:.1f} tokens/s ({prediction['speed_from']}) "
                      f"< {budget.min_tokens_per_s:g}")
    return misses


def depth_for(budget: Budget, plan: dict[str, Any], speed: SpeedModel | None = None) -> tuple[int, dict[str, Any]]:
    """The fewest removals of ``plan`` (in its order) that meet ``budget``, and the prediction."""
    if budget.needs_speed and speed is None:
        raise ConfigError(f"--depth-for {budget.text}: tokens/s needs --speed-from BENCH.json (mtprune bench --json)")
    removed = list(plan["removed"])
    for n in range(len(removed) + 1):
        prediction = predict(plan["model"], removed[:n], speed)
        if not unmet(budget, prediction):
            return n, prediction
    raise ConfigError(f"--depth-for {budget.text}: even all {len(removed)} removals of the plan leave "
                      f"{'; '.join(unmet(budget, prediction))}; search further (a larger --remove) or relax the budget")
