"""The pruning plan written by `mtprune search` (``plan.json``) and read by `prune` and `report`.

Layer ids in a plan are always the ORIGINAL 0-based ids of the unpruned model; ``removed``
is in removal order, so its first N entries are the plan for removing N layers.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

PLAN_FORMAT = "mtprune-plan/1"
REQUIRED_KEYS = ("format", "model", "criterion", "metric", "pairs", "baseline", "rounds", "removed", "kept")
REQUIRED_MODEL_KEYS = ("spec", "num_layers")
REQUIRED_ROUND_KEYS = ("round", "candidates", "removed")


def load_plan(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a plan.json (a run folder is accepted too); raise DataError if unusable."""
    path = Path(path)
    if path.is_dir():
        path = path / "plan.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: plan file not found (it is written by `mtprune search`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read plan file: {exc}") from None
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    _check_plan(plan, path)
    return plan


def _check_plan(plan: Any, path: Path) -> None:
    """Raise DataError naming every missing key, or a wrong format."""
    if not isinstance(plan, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(plan).__name__}")
    missing = _missing_keys(plan)
    if missing:
        raise DataError(
            f"{path}: not a complete mtprune plan, missing required keys: {', '.join(missing)}"
        )
    fmt = plan["format"]
    if not isinstance(fmt, str) or fmt.split("/")[0] != PLAN_FORMAT.split("/")[0]:
        raise DataError(f"{path}: format is {fmt!r}, expected {PLAN_FORMAT!r}")
    if fmt != PLAN_FORMAT:
        raise DataError(f"{path}: plan format {fmt!r} is not supported by this mtprune (reads {PLAN_FORMAT!r})")


def _missing_keys(plan: dict[str, Any]) -> list[str]:
    """Required keys absent from the plan, nested ones written as ``model.spec``, ``rounds[0].removed``."""
    missing = [k for k in REQUIRED_KEYS if k not in plan]
    model = plan.get("model")
    if isinstance(model, dict):
        missing += [f"model.{k}" for k in REQUIRED_MODEL_KEYS if k not in model]
    rounds = plan.get("rounds")
    if isinstance(rounds, list):
        for i, rnd in enumerate(rounds):
            have = rnd if isinstance(rnd, dict) else {}
            missing += [f"rounds[{i}].{k}" for k in REQUIRED_ROUND_KEYS if k not in have]
    return missing



def removed_prefix(plan: dict[str, Any], n: int | None, *, path: str = "plan.json") -> list[int]:
    """The first ``n`` removals of the plan (all when ``n`` is None)."""
    removed = list(plan["removed"])
    if n is None:
        return removed
    if not 0 < n <= len(removed):
        raise ConfigError(f"--layers {n}: {path} removes {len(removed)} layers; choose 1..{len(removed)}")
    return removed[:n]


def check_plan_model(plan: dict[str, Any], model_spec: str, num_layers: int | None, *, path: str = "plan.json") -> None:
    """Refuse applying a plan to a model of another depth (a different model)."""
    planned = plan["model"]["num_layers"]
    if num_layers is not None and planned != num_layers:
        raise ConfigError(
            f"{path} was made for {plan['model']['spec']} with {planned} layers, but {model_spec} has "
            f"{num_layers}; apply a plan to the model it was searched on"
        )


def plan_summary(plan: dict[str, Any], path: str) -> dict[str, Any]:
    """What a pruned checkpoint records about the plan it came from."""
    return {
        "path": str(path),
        "criterion": plan["criterion"],
        "metric": plan["metric"],
        "metric_signature": plan.get("metric_signature"),
        "pairs": plan["pairs"],
        "baseline": plan["baseline"],
        "removed": plan["removed"],
        "score_after": [r.get("score_after") for r in plan["rounds"]],
    }
