"""Iterative layer-importance search (the paper's method, made fast and resumable).

Each round scores every remaining unprotected layer by the model WITHOUT it, removes for
good the layer whose removal hurts least, and repeats on the pruned model until a stop
rule is reached.  The model is loaded once; candidates are evaluated through shared-weight
layer subsets (``LayerSurgeon``), never by reloading.

Every evaluation is appended to ``RUN_DIR/trace.jsonl`` (``trace.py``) as soon as it is done;
a resumed search replays the same decisions from the trace and computes only what is
missing, so it ends with the same plan as an uninterrupted one, and a changed stop rule
extends or cuts short the same rounds.  The result is ``RUN_DIR/plan.json``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..eval.comet import is_comet
from ..eval.metrics import higher_is_better
from ..files import write_json_atomic
from ..translate.documents import documents_hash
from .config import SearchConfig, check_depth, protected_layers
from .evaluator import SubsetEvaluator
from .rounds import Progress, run_round
from .trace import Trace

logger = logging.getLogger(__name__)

SCORE_NAMES = {
    "chrf": "{metric} without the layer",
    "logprob": "mean log-likelihood of references without the layer",
    "block-influence": "- Block Influence (1 - cos) of the layer",
    "angular": "- angular distance of the layer",
    "last": "layer position (later = removed first)",
    "random": "random (seeded)",
}


@dataclass
class SearchState:
    kept: list[int]
    removed: list[int] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    rejected: dict[str, Any] | None = None  # the round --min-quality refused


def stop_reason(cfg: SearchConfig, state: SearchState, params_fraction: float,
                budget_misses: list[str] | None = None) -> str | None:
    """Why the search stops now, or None to go on; ``budget_misses``: the --depth-for conditions
    the model without ``state.removed`` does not meet yet (None without a budget)."""
    s = cfg.stop
    if budget_misses is not None and not budget_misses:
        return f"deployment budget met (--depth-for {s.depth_for})"
    if s.remove is not None and len(state.removed) >= s.remove:
        return f"removed {len(state.removed)} layers (--remove {s.remove})"
    if s.target_layers is not None and len(state.kept) <= s.target_layers:
        return f"{len(state.kept)} layers left (--target-layers {s.target_layers})"
    if s.target_params is not None and params_fraction <= s.target_params:
        return f"parameters at {params_fraction:.1%} of the original (--target-params {s.target_params})"
    return None


def _budget_check(cfg: SearchConfig, loaded, params: dict[str, Any]):
    """removed ids -> the --depth-for conditions not met yet (None without --depth-for)."""
    from .budget import parse_budget, predict, speed_model_from_bench, unmet

    if cfg.stop.depth_for is None:
        return None
    budget = parse_budget(cfg.stop.depth_for)
    speed = speed_model_from_bench(cfg.stop.speed_from, cfg.stop.speed_batch_size) if cfg.stop.speed_from else None
    model = {"params_total": params["total"], "params_per_layer": params["per_layer"], "dtype": loaded.dtype}
    return lambda removed: unmet(budget, predict(model, removed, speed))


def quality_ok(cfg: SearchConfig, metric: str, score: float, baseline: float) -> bool:
    if cfg.stop.min_quality is None:
        return True
    if higher_is_better(metric):
        return score >= cfg.stop.min_quality * baseline
    return score <= baseline / cfg.stop.min_quality


def run_search(cfg: SearchConfig) -> dict[str, Any]:
    """Run (or resume) the search; writes trace.jsonl and plan.json; returns the plan."""
    from ..translate.translator import load_pair
    from ..model.export import count_parameters
    from ..model.layers import LayerSurgeon
    from ..model.load import load_model, peek_num_layers, resolve_source

    cfg.validate()
    comet_sha256 = _check_comet(cfg)
    source = resolve_source(cfg.model)
    n_peek = peek_num_layers(source)
    if n_peek is not None:
        check_depth(cfg, n_peek, protected_layers(cfg.protect, n_peek))
    pairs = [load_pair(p.spec, p.weight) for p in cfg.pairs]
    for pair in pairs:
        pair.references  # noqa: B018  (raises when references are missing)
    _check_unique_pair_names(pairs)
    loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
    surgeon = LayerSurgeon(loaded.model)
    n = surgeon.num_original
    protected = protected_layers(cfg.protect, n)
    check_depth(cfg, n, protected)
    params = count_parameters(loaded.model)
    identity = _identity(cfg, loaded, pairs, protected)
    if comet_sha256:  # a trace scored by another COMET checkpoint is not this search's
        identity["comet_sha256"] = comet_sha256
    trace = Trace(cfg.run_dir, identity, cfg.resume, cfg.restart_if_changed)
    evaluator = SubsetEvaluator(loaded, surgeon, pairs, cfg, trace)
    if cfg.workers > 1 or cfg.ray_address:
        from .workers import WorkerPool

        evaluator.pool = WorkerPool(cfg, cfg.workers, cfg.ray_address, loaded.fingerprint)
    try:
        return _search(cfg, loaded, pairs, params, protected, trace, evaluator, n)
    finally:
        if evaluator.pool is not None:
            evaluator.pool.close()


def _search(cfg: SearchConfig, loaded, pairs, params, protected, trace, evaluator, n: int) -> dict[str, Any]:
    """The rounds, until a stop rule; then the plan."""
    from ..versions import software_versions

    prompt_description = evaluator.translators[0].prompter.describe()
    logger.info("search: %s, %d layers, criterion %s%s, metric %s, pairs %s", cfg.model, n, cfg.criterion,
                " (fast)" if cfg.fast else "", evaluator.metric, ", ".join(p.name for p in pairs))
    if cfg.fast and cfg.proxy == "logprob" and loaded.device == "cpu":
        logger.info("on a CPU the logprob proxy costs about as much as translating the dev set (measured: "
                    "benchmarks/search_speed.py); --proxy block-influence needs one forward pass per round")
    state = SearchState(kept=list(range(n)))
    start = time.perf_counter()
    progress = Progress()
    budget_misses = _budget_check(cfg, loaded, params)
    while True:
        fraction = _params_fraction(params, state.kept)
        reason = stop_reason(cfg, state, fraction, budget_misses(state.removed) if budget_misses else None)
        if reason:
            state.stop_reason = reason
            break
        candidates = [k for k in state.kept if k not in protected]
        if not candidates:
            state.stop_reason = "no unprotected layer left"
            break
        round_no = len(state.rounds) + 1
        evaluations = _round_evaluations(cfg, len(candidates))
        rounds_left = _rounds_left(cfg, state)
        later = None if rounds_left is None else sum(
            _round_evaluations(cfg, len(candidates) - j) for j in range(1, rounds_left))
        progress.begin_round(round_no, len(state.kept), len(candidates), evaluations, later)
        round_start = time.perf_counter()
        chosen = run_round(evaluator, cfg, round_no, state.kept, candidates, progress)
        # generation rounds translated the unpruned model with round 1's candidates: recorded, no work
        baseline = evaluator.quality(list(range(n)))
        if round_no == 1:
            logger.info("baseline %s: %.2f %s", evaluator.metric, baseline["score"], baseline["per_pair"])
        new_kept = [k for k in state.kept if k != chosen["removed"]]
        after = evaluator.quality(new_kept)
        record = {
            "round": round_no,
            "num_layers_before": len(state.kept),
            **chosen,
            "score_after": after["score"],
            "per_pair_after": after["per_pair"],
            "params_after": _params_total(params, new_kept),
            "seconds": round(time.perf_counter() - round_start, 3),
        }
        if not quality_ok(cfg, evaluator.metric, after["score"], baseline["score"]):
            state.stop_reason = (
                f"removing layer {chosen['removed']} would give {evaluator.metric} {after['score']:.2f}, below "
                f"{cfg.stop.min_quality} x baseline {baseline['score']:.2f} (--min-quality); not removed"
            )
            state.rejected = record
            break
        state.rounds.append(record)
        state.removed.append(chosen["removed"])
        state.kept = new_kept
        logger.info("round %d: removed layer %d -> %s %.2f (%d layers left)", round_no, chosen["removed"],
                    evaluator.metric, after["score"], len(new_kept))
    baseline = evaluator.quality(list(range(n)))
    last_score = evaluator.quality(state.kept)
    plan = _plan(cfg, loaded, pairs, evaluator, params, protected, baseline, state, prompt_description)
    plan["seconds"] = round(time.perf_counter() - start, 3)
    plan["evaluations"] = {"computed": trace.computed, "reused_from_trace": trace.reused}
    plan["versions"] = software_versions()
    write_json_atomic(Path(cfg.run_dir) / "plan.json", plan)
    logger.info("search done (%s): removed %s, %s %.2f -> %.2f; plan in %s", state.stop_reason, state.removed,
                evaluator.metric, baseline["score"], last_score["score"], Path(cfg.run_dir) / "plan.json")
    return plan


def _check_comet(cfg: SearchConfig) -> str | None:
    """A COMET metric's checkpoint, found and checked before the model loads: its sha256 (else None)."""
    if cfg.criterion != "chrf" or not is_comet(cfg.metric_name):
        return None
    from ..eval.comet import check_comet

    return check_comet(cfg.metric_name, cfg.comet).sha256()


def _round_evaluations(cfg: SearchConfig, n_candidates: int) -> int:
    """Progress steps of a round with ``n_candidates`` candidates."""
    if cfg.fast:
        return n_candidates * (cfg.proxy == "logprob") + min(cfg.shortlist, n_candidates)
    return n_candidates if cfg.criterion in ("chrf", "logprob") else 0


def _rounds_left(cfg: SearchConfig, state: SearchState) -> int | None:
    """Rounds still to run, counting this one, where the stop rules tell (None: unknown)."""
    bounds = []
    if cfg.stop.remove is not None:
        bounds.append(cfg.stop.remove - len(state.removed))
    if cfg.stop.target_layers is not None:
        bounds.append(len(state.kept) - cfg.stop.target_layers)
    return max(min(bounds), 1) if bounds else None


def _check_unique_pair_names(pairs) -> None:
    names = [p.name for p in pairs]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ConfigError(f"language pair {dups[0]} is given twice; give each pair once")


def _params_total(params: dict[str, Any], kept: Sequence[int]) -> int:
    return params["total"] - sum(p for i, p in enumerate(params["per_layer"]) if i not in set(kept))


def _params_fraction(params: dict[str, Any], kept: Sequence[int]) -> float:
    return _params_total(params, kept) / params["total"]


def _identity(cfg: SearchConfig, loaded, pairs, protected) -> dict[str, Any]:
    """What must not change between a search and its resumption."""
    t = cfg.translation
    return {
        "model": cfg.model,
        "fingerprint": loaded.fingerprint,
        "dtype": loaded.dtype,
        "criterion": cfg.criterion,
        "metric": cfg.metric_name,
        "fast": [cfg.proxy, cfg.shortlist, cfg.race] if cfg.fast else None,
        "pairs": [[p.name, p.data_hash, p.weight] for p in pairs],
        "combine": cfg.combine,
        "protected": protected,
        "prompt": t.prompt,
        "shots": t.shots,
        "shots_from": t.shots_from,
        **({"shots_by": t.shots_by} if t.shots_by != "random" else {}),  # traces of random examples resume
        # only where used: traces made before documents resume
        **({"context": [t.context, t.context_target, [documents_hash(p.segments) for p in pairs]]}
           if t.context_settings.enabled else {}),
        **({"score_by": cfg.score_by} if cfg.score_by != "segment" else {}),
        "max_new_tokens": t.max_new_tokens,
        "seed": cfg.seed,
    }


def _plan(cfg, loaded, pairs, evaluator, params, protected, baseline, state, prompt) -> dict[str, Any]:
    plan = {
        "format": "mtprune-plan/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {
            **loaded.source.to_dict(),
            "fingerprint": loaded.fingerprint,
            "architecture": type(loaded.model).__name__,
            "num_layers": evaluator.surgeon.num_original,
            "params_total": params["total"],
            "params_per_layer": params["per_layer"],
            "params_other": params["total"] - sum(params["per_layer"]),
            "dtype": loaded.dtype,
        },
        "criterion": cfg.criterion,
        "score_name": SCORE_NAMES[cfg.criterion].format(metric=evaluator.metric),
        "metric": evaluator.metric,
        "metric_signature": evaluator.signature(),
        "score_by": cfg.score_by,
        "higher_is_better": higher_is_better(evaluator.metric),
        "fast": {"proxy": cfg.proxy, "shortlist": cfg.shortlist, "race": cfg.race} if cfg.fast else None,
        "pairs": [p.describe() for p in pairs],
        "combine": cfg.combine,
        "protected": protected,
        "stop": asdict(cfg.stop),
        "stop_reason": state.stop_reason,
        "baseline": {"score": baseline["score"], "per_pair": baseline["per_pair"]},
        "rounds": state.rounds,
        "removed": state.removed,
        "kept": state.kept,
        "layer_ids": "original 0-based ids of the unpruned model",
        "settings": {
            "prompt": prompt,
            "batch_size": cfg.translation.batch_size,
            "candidate_batch": cfg.candidates_per_batch,
            "context": cfg.translation.context_settings.describe(),
            "max_new_tokens": cfg.translation.max_new_tokens,
            "seed": cfg.seed,
            "dtype": loaded.dtype,
            "device": loaded.device,
        },
    }
    if state.rejected:
        plan["rejected_round"] = state.rejected
    return plan
