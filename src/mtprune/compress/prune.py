"""Layer pruning: remove decoder layers (by id, or a search plan's first removals) and save a standard checkpoint.

One flow for ``mtprune prune`` and the run's prune stage: ``PruneConfig`` says which layers go,
``run_prune`` checks everything that can fail before any weights load (the output folder, the ids
against the model's depth, the plan against the model it was made for, a depth budget), then loads
the model, removes the layers and saves it with its ``mtprune.json`` record (``model.export``).
Layer ids are ORIGINAL 0-based ids of the unpruned model.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Problem, at_least, raise_problems
from ..errors import ConfigError

logger = logging.getLogger(__name__)

REQUIRED = ("model", "out")  # filled in by a run; None only in a config built to be checked
WHICH = ("drop", "keep", "plan")  # the ways to name the removed layers: exactly one per run


@dataclass
class PruneConfig:
    """Everything ``run_prune`` needs; ``problems`` checks it before any model loads."""

    model: str | None = None
    out: Path | None = None
    drop: list[int] | None = None  # original ids to remove, in this order
    keep: list[int] | None = None  # original ids to keep (all others are removed)
    plan: str | None = None  # plan.json of `mtprune search` (or its run folder): its removals, in its order
    layers: int | None = None  # with a plan: its first N removals (default: all)
    depth_for: str | None = None  # with a plan: the first depth that meets this budget ('params<=200M')
    speed_from: str | None = None  # for tokens/s budgets: a `mtprune bench --json` file
    speed_batch_size: int | None = None  # its batch size to use (default: the largest measured)
    dtype: str = "source"
    device: str = "auto"
    force: bool = False
    verify: bool = True

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings that are given (model, out and the plan may be None)."""
        from ..model.load import name_problems

        out = name_problems(self.dtype, self.device)
        given = [name for name in WHICH if getattr(self, name) is not None]
        if len(given) > 1:
            out.append(Problem("", "give one of {drop}, {keep} or {plan}, not " + " and ".join(
                "{" + name + "}" for name in given), also=WHICH))
        if self.keep is not None and not self.keep:
            out.append(Problem("keep", "at least one layer must stay"))
        if self.drop is not None and not self.drop:
            out.append(Problem("drop", "names no layer to remove"))
        out += at_least("layers", self.layers, 1) + at_least("speed_batch_size", self.speed_batch_size, 1)
        for name in ("layers", "depth_for"):
            if getattr(self, name) is not None and (self.drop is not None or self.keep is not None):
                out.append(Problem(name, "only applies with {plan}", also=("plan",)))
        if self.layers is not None and self.depth_for is not None:
            out.append(Problem("depth_for", "give {layers} or a budget, not both", also=("layers",)))
        if self.speed_from is not None and self.depth_for is None:
            out.append(Problem("speed_from", "only applies with {depth_for}", also=("depth_for",)))
        return out

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Raise one ConfigError listing every problem and every missing required setting."""
        missing = [Problem(name, "is required") for name in REQUIRED if getattr(self, name) is None]
        if all(getattr(self, name) is None for name in WHICH):
            missing.append(Problem("", "give the layers to remove: {drop}, {keep} or {plan}", also=WHICH))
        raise_problems(self.problems() + missing, "prune settings", flags)


@dataclass
class PruneResult:
    out: Path
    record: Any  # model.export.PruneRecord
    depth: dict[str, Any] | None = None  # with depth_for: the depth chosen and its prediction


@dataclass
class _Request:
    """What a run removes, checked before loading: a plan and how many of its removals, or ids."""

    plan: dict[str, Any] | None = None
    layers: int | None = None
    drop: list[int] | None = None  # None with keep until the depth is known
    depth: dict[str, Any] | None = None


def run_prune(cfg: PruneConfig) -> PruneResult:
    """Remove ``cfg``'s layers from ``cfg.model`` and save the pruned checkpoint to ``cfg.out``."""
    from ..model.export import check_output_dir, export_plan, export_pruned
    from ..model.layers import drop_from_keep, keep_from_drop, num_layers
    from ..model.load import load_model, peek_num_layers, resolve_source

    cfg.validate()
    out = Path(cfg.out)
    check_output_dir(out, cfg.force)
    source = resolve_source(cfg.model)
    if source.path and Path(source.path).resolve() in (out.resolve(), *out.resolve().parents):
        raise ConfigError(f"-o {out} is the model folder {source.path} or inside it; write the pruned model elsewhere")
    request = _request(cfg, peek_num_layers(source))  # every check that can fail before loading weights
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    if request.plan is not None:
        result = export_plan(loaded, request.plan, out, path=str(cfg.plan), layers=request.layers, force=cfg.force,
                             verify=cfg.verify)
    else:
        n = num_layers(loaded.model)
        drop = request.drop if request.drop is not None else drop_from_keep(cfg.keep, n)
        result = export_pruned(loaded, keep_from_drop(drop, n), out, removed_order=drop, force=cfg.force,
                               verify=cfg.verify)
    return PruneResult(out=out, record=result.record, depth=request.depth)


def _request(cfg: PruneConfig, n: int | None) -> _Request:
    """The plan and its removals to apply, or the original ids to remove (None with keep while the
    depth ``n`` is unknown), checked against ``n`` where it is known."""
    from ..model.layers import drop_from_keep, keep_from_drop

    if cfg.plan is not None:
        from .plan import check_plan_model, load_plan, removed_prefix

        plan = load_plan(Path(cfg.plan))
        check_plan_model(plan, cfg.model, n, path=str(cfg.plan))
        depth = _depth_for_plan(cfg, plan) if cfg.depth_for else None
        layers = depth["layers"] if depth else cfg.layers
        drop = removed_prefix(plan, layers, path=str(cfg.plan))
        if n is not None:
            keep_from_drop(drop, n)
        return _Request(plan=plan, layers=layers, depth=depth)
    drop = list(cfg.drop) if cfg.drop is not None else None
    if drop is None and n is not None:
        drop = drop_from_keep(cfg.keep, n)
    if drop is not None and n is not None:
        keep_from_drop(drop, n)  # refuse bad ids before loading weights
    return _Request(drop=drop)


def _depth_for_plan(cfg: PruneConfig, plan: dict[str, Any]) -> dict[str, Any]:
    """How many of the plan's removals meet ``depth_for`` (the first depth that does), and the prediction."""
    from ..search.budget import depth_for, parse_budget, speed_model_from_bench

    budget = parse_budget(cfg.depth_for)
    speed = speed_model_from_bench(cfg.speed_from, cfg.speed_batch_size) if cfg.speed_from else None
    n, prediction = depth_for(budget, plan, speed)
    if n == 0:
        raise ConfigError(f"--depth-for {cfg.depth_for}: the unpruned model already meets it; nothing to remove")
    logger.info("depth for %s: the plan's first %d of %d removals", cfg.depth_for, n, len(plan["removed"]))
    return {"budget": cfg.depth_for, "layers": n, "planned": len(plan["removed"]), "prediction": prediction,
            "speed_batch_size": speed.batch_size if speed else None}
