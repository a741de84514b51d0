"""Run a recipe: plan the stages, then execute them, each in ``RUN_DIR/STAGE``.

Stages, in order: search -> prune -> recover (its steps in order) -> evaluate -> bench -> report.
Each stage's inputs (its recipe section, the data's hashes, and the digests of the stages it reads
from) are hashed; the stage writes ``inputs.json`` when it starts and ``stamp.json`` when it is done.
A rerun skips a stage whose stamp has the same digest, resumes one that was interrupted with the same
inputs (the search from its trace, finetune from its checkpoints, synthesize from its progress log,
evaluate from the (model, pair) results it has), and redoes one whose inputs changed, which changes
the digests of everything downstream.  ``start_from`` redoes that stage and every later one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..translate.backends import release_engines
from ..errors import ConfigError
from ..files import read_json, write_json_atomic, write_text_atomic
from ..data.specs import DataSpec
from .recipe_sections import TRAIN, Recipe, RecoverStep
from .recipe_steps import quantize_calibration
from .run_folder import (INPUTS, RESULT, RUN_FILE, STAGES, STAMP, RunContext, Stage, base_model, bench_models,
                         last_recovered, model_names, quantized_names, stage_reads)
from .stages import RUNNERS

logger = logging.getLogger(__name__)

# what a stage redone for changed inputs keeps (not with --from): the search's trace, whose
# identity says when it cannot be reused
KEPT_ON_REDO = {"search": ("trace.jsonl",)}


# ----------------------------------------------------------------------------------------
# Identities and digests (no model loads: files are hashed, checkpoints fingerprinted)
# ----------------------------------------------------------------------------------------

def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def file_identity(path: str | None) -> str | None:
    """sha256 of a file; names and sizes of a folder's files; None where there is no such path."""
    if not path or not Path(path).exists():
        return None
    p = Path(path)
    if p.is_dir():
        return digest(sorted((str(f.relative_to(p)), f.stat().st_size) for f in p.rglob("*") if f.is_file()))
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def data_identity(spec: DataSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    fields = dataclasses.asdict(spec)
    for key, default in (("doc_col", None), ("part_by", "segment")):  # the inputs of runs made before documents
        if fields[key] == default:
            del fields[key]
    return {**fields, "data_sha256": file_identity(spec.spec), "ref_sha256": file_identity(spec.ref)}


def model_identity(spec: str) -> dict[str, Any]:
    from ..model.load import fingerprint_checkpoint

    path = Path(spec)
    return {"spec": spec, "fingerprint": fingerprint_checkpoint(path) if path.is_dir() else None}


# ----------------------------------------------------------------------------------------
# Stage inputs: each stage's recipe section, data and upstream digests
# ----------------------------------------------------------------------------------------

def stage_inputs(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """The inputs of every enabled stage, in order; each includes the digests of those it reads."""
    t = dataclasses.asdict(recipe.translation)
    if t["shots_by"] == "random":
        del t["shots_by"]  # the inputs of runs made before examples were retrieved stay the same
    if not t["context"]:
        del t["context"], t["context_target"]  # nor do those of runs made before document context
    common = {"model": model_identity(recipe.model), "dtype": recipe.dtype, "device": recipe.device,
              "seed": recipe.seed, "translation": t}
    inputs: dict[str, dict[str, Any]] = {}
    models: dict[str, Any] = {"unpruned": common["model"]}
    if recipe.trim_vocab is not None:
        trim = recipe.trim_vocab
        inputs["trim_vocab"] = {**common, "trim_vocab": {**dataclasses.asdict(trim), "data": [
            data_identity(spec) for spec in trim.specs(recipe.pairs)]}}
        models["trimmed"] = digest(inputs["trim_vocab"])
        common = {**common, "model": {"trimmed": models["trimmed"]}}  # what later stages start from
    if recipe.recover and recipe.reference:
        inputs["reference"] = _recovery_inputs(recipe, "reference", digest(common["model"]), common, models)
    searched = {"reference": models["reference"]} if recipe.prunes_reference else common["model"]
    if recipe.search is not None:
        inputs["search"] = {**common, "model": searched, "search": recipe.search,
                            "dev": [[p.name, p.weight, data_identity(p.dev)] for p in recipe.pairs],
                            **_comet_inputs(recipe, [recipe.search.get("metric")])}
    inputs["prune"] = {"model": searched, "device": recipe.device, "prune": dataclasses.asdict(recipe.prune),
                       "search": digest(inputs["search"]) if "search" in inputs else None}
    if recipe.prune.model == "base":  # the inputs of runs made before prune.model stay the same
        del inputs["prune"]["prune"]["model"]
    models["pruned"] = digest(inputs["prune"])
    if recipe.recover:
        inputs["recover"] = _recovery_inputs(recipe, "recover", models["pruned"], common, models)
    if recipe.quantize is not None:
        inputs["quantize"] = {"quantize": dataclasses.asdict(recipe.quantize), "device": recipe.device,
                              "translation": common["translation"],
                              "calibration": data_identity(quantize_calibration(recipe)),
                              "models": {name: models[name] for name in (last_recovered(recipe), "reference")
                                         if name in models}}
        models["quantized"] = digest([inputs["quantize"], "quantized"])
        if "reference-quantized" in quantized_names(recipe):
            models["reference-quantized"] = digest([inputs["quantize"], "reference"])
    backend = dataclasses.asdict(recipe.backend)
    inputs["evaluate"] = {**common, "backend": backend, "evaluate": dataclasses.asdict(recipe.evaluate),
                          "test": [[p.name, data_identity(p.test)] for p in recipe.pairs], "models": models,
                          **_comet_inputs(recipe, recipe.evaluate.metrics)}
    if recipe.bench is not None:
        inputs["bench"] = {**common, "backend": backend, "bench": dataclasses.asdict(recipe.bench),
                           **_comet_inputs(recipe, [recipe.bench.metric]),
                           "test": data_identity(recipe.pairs[0].test),
                           "models": [models[name] for name in bench_models(recipe)]}
    inputs["report"] = {name: digest(value) for name, value in inputs.items()}
    return inputs


def _recovery_inputs(recipe: Recipe, stage: str, start: str, common: dict[str, Any],
                     models: dict[str, Any]) -> dict[str, Any]:
    """The digests of the recovery steps of ``stage`` (recover or reference), each chained on the one
    before; the models they make are added to ``models``."""
    steps, upstream = [], start
    for step in recipe.recover:
        if stage == "reference":
            step = step.on_reference()
        teacher = models["reference"] if step.distils_reference else None
        upstream = digest(step_inputs(recipe, step, upstream, common, teacher))
        steps.append(upstream)
        if step.makes_model:
            models[step.name if stage == "recover" else "reference"] = upstream
    return {"steps": steps}


def _comet_inputs(recipe: Recipe, metrics: list) -> dict[str, Any]:
    """The COMET checkpoints a stage's metrics score with (nothing where it uses none): another
    checkpoint makes the stage run again."""
    from ..eval.comet import CometSettings, is_comet

    settings = recipe.comet or CometSettings()
    used = sorted({m for m in metrics if m and is_comet(m)})
    return {"comet": {m: settings.model_for(m) for m in used}} if used else {}


def step_inputs(recipe: Recipe, step: RecoverStep, upstream: str, common: dict[str, Any],
                teacher: str | None = None) -> dict[str, Any]:
    """What a recovery step's result depends on; ``teacher``: the digest of the reference it distils from."""
    data = [d if isinstance(d, str) else data_identity(d) for d in step.data]
    if TRAIN in step.data:
        data.append([data_identity(p.train) for p in recipe.pairs])
    inputs = {**common, "backend": dataclasses.asdict(recipe.backend), "method": step.method, "name": step.name,
              "options": step.options, "data": data, "upstream": upstream}
    return {**inputs, "teacher": teacher} if teacher else inputs


# ----------------------------------------------------------------------------------------
# The plan
# ----------------------------------------------------------------------------------------

def plan_stages(recipe: Recipe, run_dir: Path, start_from: str | None = None) -> list[Stage]:
    """What each stage would do: skip (done, inputs unchanged), resume, redo or run."""
    inputs = stage_inputs(recipe)
    if start_from is not None and start_from not in inputs:
        from ..errors import unknown_choice

        raise ConfigError(f"--from: {unknown_choice('stage', start_from, inputs)} (this recipe's stages)")
    stages, forced = [], False
    for name, stage_in in inputs.items():
        stage = Stage(name, stage_in, digest(stage_in), what=describe_stage(recipe, name, run_dir))
        forced = forced or name == start_from
        stage.action, stage.reason = _action(run_dir / name, stage.digest, stage_in, forced)
        stages.append(stage)
    return stages


def _action(folder: Path, current: str, inputs: dict[str, Any], forced: bool) -> tuple[str, str]:
    stamp, started = read_json(folder / STAMP), read_json(folder / INPUTS)
    if forced:
        return ("redo" if folder.exists() else "run"), "--from: redone with every later stage"
    if stamp and stamp.get("digest") == current and (folder / RESULT).is_file():
        return "skip", "done, inputs unchanged"
    if stamp or (started and started.get("digest") != current):
        before = (stamp or started).get("inputs") or {}
        changed = sorted(k for k in set(before) | set(inputs) if before.get(k) != inputs.get(k))
        return "redo", f"inputs changed ({', '.join(changed) or 'stage outputs missing'})"
    if started:
        return "resume", "interrupted run with the same inputs: continuing it"
    return "run", "not run yet"


def describe_stage(recipe: Recipe, name: str, run_dir: Path) -> str:
    pairs = ", ".join(p.name for p in recipe.pairs)
    base = base_model(recipe, run_dir)
    searched = "the fine-tuned reference" if recipe.prunes_reference else base
    if name == "trim_vocab":
        t = recipe.trim_vocab
        data = ", ".join(d if isinstance(d, str) else d.spec for d in t.data)
        limit = f"{t.limit} segments of each pair's" if t.limit else "each pair's whole"
        keep = f", {t.keep} tokens in all" if t.keep else ""
        return (f"keep the tokens of {data} ({limit} train part where 'train'; min count {t.min_count}{keep}) "
                f"-> {base}")
    if name == "reference":
        return f"the recovery steps on the unpruned model {base}: the fair reference"
    if name == "search":
        s = recipe.search or {}
        stop = ", ".join(f"{k} {s[k]}" for k in ("remove", "target_layers", "target_params", "min_quality",
                                                  "depth_for") if s.get(k) is not None)
        mode = f"fast (shortlist {s.get('shortlist', 4)})" if s.get("fast") else "exact"
        return (f"{s.get('criterion', 'chrf')} search of {searched}, {mode}, on the dev data of {pairs} "
                f"(combine {s.get('combine', 'mean')}); stop: {stop}")
    if name == "prune":
        what = f"drop {recipe.prune.drop}" if recipe.prune.drop is not None else "apply the search's plan"
        return f"{what} to {searched} -> {run_dir / 'prune' / 'model'}"
    if name == "recover":
        return "; ".join(f"{i}. {s.name} on {', '.join(d if isinstance(d, str) else d.spec for d in s.data)}"
                         + (f" ({', '.join(f'{k}={v}' for k, v in s.options.items())})" if s.options else "")
                         for i, s in enumerate(recipe.recover, 1))
    if name == "quantize":
        q = recipe.quantize
        how = f"{q.method or 'default method'}" + (f", {q.limit} calibration segments of the first pair's train part"
                                                   if (q.method or "gptq") == "gptq" else "")
        which = " and ".join(["the final model"] + (["the reference"] if "reference-quantized" in
                                                    quantized_names(recipe) else []))
        return f"{which} to {q.scheme} ({how}) -> {run_dir / 'quantize'}"
    if name == "evaluate":
        return f"{', '.join(model_names(recipe))} on the test data of {pairs}: {', '.join(recipe.evaluate.metrics)} " \
               f"({recipe.backend.name})"
    if name == "bench":
        b = recipe.bench
        return f"{', '.join(bench_models(recipe))}, batch sizes {b.batch_sizes}, {b.runs} runs ({recipe.backend.name})"
    return f"{run_dir / 'report'}: report.md, report.html (plots embedded), summary.json"


def format_plan(recipe: Recipe, stages: list[Stage], run_dir: Path) -> str:
    layers = f", {recipe.num_layers} layers" if recipe.num_layers else " (layer count checked when it loads)"
    lines = [f"recipe {recipe.path}: OK ({recipe.model}{layers}; pairs {', '.join(p.name for p in recipe.pairs)})",
             f"plan for {run_dir}:"]
    for st in stages:
        lines.append(f"  {st.name:<9} {st.action:<7} {st.what}")
        lines.append(f"  {'':<9} {'':<7} ({st.reason})")
    if recipe.missing_files:
        lines.append("data files not there yet (needed before the run; a real run refuses to start without them):")
        lines += [f"  {m}" for m in recipe.missing_files]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------

def run_recipe(recipe: Recipe, run_dir: Path, *, start_from: str | None = None, progress: bool = True,
               memory_check: bool = True) -> dict[str, Any]:
    """Execute the recipe's stages into ``run_dir``; returns the report's summary. Each stage's
    memory estimate is checked against this machine before it loads a model (``memory_check``)."""
    run_dir = Path(run_dir)
    _check_comet(recipe)
    _claim_run_dir(recipe, run_dir)
    ctx = RunContext(recipe, run_dir, progress=progress, memory_check=memory_check)
    ran: set[str] = set()
    for stage in plan_stages(recipe, run_dir, start_from):
        ctx.stages[stage.name] = stage
        upstream = sorted(ran & set(_reads(stage.name, recipe)))
        if stage.action == "skip" and upstream:  # its inputs were made again: so is it
            stage.action, stage.reason = "redo", f"after {', '.join(upstream)} ran again"
        if stage.action == "skip":
            logger.info("skip %s: done, inputs unchanged", stage.name)
            continue
        _invalidate_dependents(ctx, stage.name)
        check_stage_memory(ctx, stage.name)
        _run_stage(ctx, stage)
        ran.add(stage.name)
    return read_json(run_dir / "report" / RESULT) or {}


def check_stage_memory(ctx: RunContext, stage: str) -> None:
    """The stage's estimates (``memory.recipe_estimates``) against this machine: MemoryFitError
    before a model loads where one does not fit. A finetune step checks itself once its data is
    tokenized (and with ``fit: auto``, a recipe's default, takes an option that fits)."""
    from ..model.memory import recipe_estimates
    from ..model.load import choose_device
    from ..model.preflight import SKIP_FLAG, FitCheck, enforce, room_for

    if not ctx.memory_check or stage in ("trim_vocab", "reference", "report"):
        return
    if ctx.estimates is None or ctx.estimates[0][0] == "all":  # "all": no config yet (a model not unpacked)
        ctx.estimates = recipe_estimates(ctx.recipe)
    room = room_for(choose_device(ctx.recipe.device))
    for label, estimate in ctx.estimates:
        if isinstance(estimate, str) or estimate_stage(label) != stage or label.endswith("finetune"):
            continue
        enforce(FitCheck(label, estimate, room), skip_hint=f"{SKIP_FLAG} (mtprune run) runs it anyway; the recipe "
                "can lower translation.batch_size or bench.batch_sizes, or set dtype: bfloat16")


def estimate_stage(label: str) -> str:
    """The stage of a ``recipe_estimates`` label ("recover 1. finetune (teacher top-k pass)" -> recover)."""
    return label.split()[0]


def _reads(stage: str, recipe: Recipe) -> tuple[str, ...]:
    """The stages whose outputs ``stage`` reads, directly or through others."""
    direct = stage_reads(recipe.prunes_reference, recipe.distils_reference).get(stage, ())
    return tuple(dict.fromkeys(d for name in direct for d in (*_reads(name, recipe), name)))


def _invalidate_dependents(ctx: RunContext, stage: str) -> None:
    """Before ``stage`` runs: the stamps of the stages that read its outputs go, so that a run
    interrupted from here on redoes them (their digests chain on inputs, not on outputs), and
    recovery steps start afresh (no finetune resumes from checkpoints of an older model)."""
    for later in (name for name in STAGES if stage in _reads(name, ctx.recipe)):
        (ctx.dir(later) / STAMP).unlink(missing_ok=True)
        if later in ("recover", "reference"):
            for step_dir in ctx.dir(later).glob("[0-9][0-9]-*"):
                (step_dir / STAMP).unlink(missing_ok=True)
                (step_dir / INPUTS).unlink(missing_ok=True)


def _claim_run_dir(recipe: Recipe, run_dir: Path) -> None:
    """A run folder is new, empty, or one this command made (run.json); never anything else."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"-o {run_dir}: exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / RUN_FILE).is_file():
        raise ConfigError(f"-o {run_dir}: a folder that is not an mtprune run folder (no {RUN_FILE}); choose "
                          "another -o")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "recipe.yaml", recipe.text or Path(recipe.path).read_text(encoding="utf-8"))
    write_json_atomic(run_dir / RUN_FILE, {"format": "mtprune-run/1", "recipe": str(Path(recipe.path).resolve()),
                                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _run_stage(ctx: RunContext, stage: Stage) -> None:
    folder = ctx.dir(stage.name)
    logger.info("%s %s: %s", stage.action, stage.name, stage.reason)
    keep_steps = stage.name in ("recover", "reference") and not stage.forced  # its steps have their own stamps
    if stage.action == "redo" and not keep_steps:
        _clear(folder, keep=() if stage.forced else KEPT_ON_REDO.get(stage.name, ()))
    (folder / STAMP).unlink(missing_ok=True)
    write_json_atomic(folder / INPUTS, {"digest": stage.digest, "inputs": stage.inputs})
    start = time.perf_counter()
    try:
        result = RUNNERS[stage.name](ctx, folder, stage)
    finally:
        release_engines()  # the next stage may train or load another model: a vLLM engine would hold the GPU
    write_json_atomic(folder / RESULT, result)
    write_json_atomic(folder / STAMP, {"stage": stage.name, "digest": stage.digest, "inputs": stage.inputs,
                                       "seconds": round(time.perf_counter() - start, 1),
                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    logger.info("%s done in %.0f s", stage.name, time.perf_counter() - start)


def _clear(folder: Path, keep: tuple[str, ...]) -> None:
    """Delete ``folder`` but the files named in ``keep``."""
    if not keep:
        shutil.rmtree(folder)
        return
    for path in folder.iterdir():
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path)
        elif path.name not in keep:
            path.unlink()


def _check_comet(recipe: Recipe) -> None:
    """The COMET checkpoints the run scores with are there and load their tokenizers: a missing
    one (or the ``comet`` extra) is an error before anything runs."""
    from ..eval.comet import check_comet

    for metric in recipe.comet_metrics():
        check_comet(metric, recipe.comet)


# ----------------------------------------------------------------------------------------
# Recovery: each step in RUN_DIR/recover/NN-NAME with its own stamp
# ----------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------
# Evaluate, bench, report
# ----------------------------------------------------------------------------------------


