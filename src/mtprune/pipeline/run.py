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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..translate.backends import release_engines
from ..errors import ConfigError
from ..files import read_json, write_json_atomic, write_text_atomic
from ..data.specs import DataSpec
from .recipe import TRAIN, Recipe, RecoverStep, finetune_data, quantize_calibration, train_specs
from .run_folder import INPUTS, RESULT, RUN_FILE, STAGES, STAMP, stage_reads

logger = logging.getLogger(__name__)

TRANSLATION_ONLY = ("batch_size", "max_new_tokens")  # translation settings that training steps do not take
# what a stage redone for changed inputs keeps (not with --from): the search's trace, whose
# identity says when it cannot be reused
KEPT_ON_REDO = {"search": ("trace.jsonl",)}


@dataclass
class Stage:
    name: str
    inputs: dict[str, Any]
    digest: str
    action: str = "run"  # run | skip | resume | redo
    reason: str = ""
    what: str = ""  # what the stage does, for --dry-run

    @property
    def forced(self) -> bool:
        return self.reason.startswith("--from")


@dataclass
class RunContext:
    recipe: Recipe
    run_dir: Path
    stages: dict[str, Stage] = field(default_factory=dict)
    progress: bool = True
    memory_check: bool = True  # False: --skip-memory-check
    estimates: list | None = None  # memory.recipe_estimates, once the model's config can be read

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def step_dir(self, index: int, step: RecoverStep, stage: str = "recover") -> Path:
        return self.dir(stage) / f"{index:02d}-{step.name}"

    @property
    def pruned(self) -> Path:
        return self.dir("prune") / "model"

    @property
    def base(self) -> str:
        return base_model(self.recipe, self.run_dir)

    @property
    def searched(self) -> str:
        """The model the search scores and pruning cuts: the fine-tuned reference (prune.model:
        reference), else the base model."""
        return self.final("reference") if self.recipe.prunes_reference else self.base

    def final(self, stage: str) -> str | None:
        """The last model the recovery steps make in ``stage`` (recover or reference)."""
        made = [str(self.step_dir(i, s, stage) / "model") for i, s in enumerate(self.recipe.recover, 1)
                if s.makes_model]
        return made[-1] if made else None

    def models(self) -> list[tuple[str, str]]:
        """(name, MODEL) of every model the run makes (``model_names``), the unpruned one first."""
        paths = {"unpruned": self.recipe.model, "trimmed": self.base, "pruned": str(self.pruned),
                 "reference": self.final("reference"), "quantized": str(self.dir("quantize") / "model"),
                 "reference-quantized": str(self.dir("quantize") / "reference")}
        paths.update({step.name: str(self.step_dir(i, step) / "model")
                      for i, step in enumerate(self.recipe.recover, 1) if step.makes_model})
        return [(name, paths[name]) for name in model_names(self.recipe)]


def base_model(recipe: Recipe, run_dir: Path) -> str:
    """The model the search, pruning and the reference start from: the trimmed copy where the
    recipe trims the vocabulary, else the recipe's model."""
    return str(Path(run_dir) / "trim_vocab" / "model") if recipe.trim_vocab else recipe.model


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


def last_recovered(recipe: Recipe) -> str:
    """The name of the last model the recovery makes ("pruned" without recovery)."""
    return next((s.name for s in reversed(recipe.recover) if s.makes_model), "pruned")


def model_names(recipe: Recipe) -> list[str]:
    """Every model a run of ``recipe`` makes, the unpruned one first (RunContext.models's names)."""
    names = ["unpruned"] + (["trimmed"] if recipe.trim_vocab else []) + ["pruned"]
    names += [s.name for s in recipe.recover if s.makes_model] + (["reference"] if recipe.reference else [])
    return names + quantized_names(recipe)


def quantized_names(recipe: Recipe) -> list[str]:
    """The quantize stage's models: the final recovered (or pruned) one quantized, and the reference's."""
    if recipe.quantize is None:
        return []
    return ["quantized"] + (["reference-quantized"] if recipe.reference and recipe.quantize.reference else [])


def bench_models(recipe: Recipe) -> list[str]:
    """The models the bench measures: the unpruned one first (the reference for the speed-ups), then
    the trimmed one, the final recovered (or pruned) model, the reference and their quantized copies,
    where the run makes them."""
    wanted = ("unpruned", "trimmed", last_recovered(recipe), "reference", "quantized", "reference-quantized")
    return [name for name in model_names(recipe) if name in wanted]


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


def _trim_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """The recipe's model with the vocabulary its pairs use (``mtprune trim-vocab``)."""
    from ..compress.trim_vocab import TrimConfig, trim_vocabulary

    recipe, trim = ctx.recipe, ctx.recipe.trim_vocab
    result = trim_vocabulary(TrimConfig(model=recipe.model, data=trim.specs(recipe.pairs), out=folder / "model",
                                        keep=trim.keep, min_count=trim.min_count, shots=recipe.translation.shots,
                                        device=recipe.device, force=True, verify=trim.verify))
    entry = result.entry
    return {"model_dir": str(result.out), "kept": entry["kept"], "vocab_size_before": entry["vocab_size_before"],
            "head_flops_share_before": entry["head_flops_share_before"],
            "head_flops_share_after": entry["head_flops_share_after"], "seconds": entry["seconds"]}


def _check_comet(recipe: Recipe) -> None:
    """The COMET checkpoints the run scores with are there and load their tokenizers: a missing
    one (or the ``comet`` extra) is an error before anything runs."""
    from ..eval.comet import check_comet

    for metric in recipe.comet_metrics():
        check_comet(metric, recipe.comet)


def _search_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """A changed stop rule or batch size resumes the trace (the rounds done are not computed again);
    a trace of another model, data or criterion is started over."""
    from ..search.engine import run_search

    resume = (folder / "trace.jsonl").is_file()
    cfg = ctx.recipe.search_config(folder, resume=resume, progress=ctx.progress, model=ctx.searched)
    plan = run_search(dataclasses.replace(cfg, restart_if_changed=True))
    return {"plan": str(folder / "plan.json"), "removed": plan["removed"], "kept": plan["kept"],
            "metric": plan["metric"], "baseline": plan["baseline"], "stop_reason": plan["stop_reason"],
            "rounds": [{"removed": r["removed"], "score_after": r["score_after"]} for r in plan["rounds"]],
            "resumed": resume, "evaluations": plan["evaluations"]}


def _prune_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    from ..model.export import export_plan, export_pruned
    from ..model.layers import keep_from_drop, num_layers
    from ..model.load import load_model
    from ..compress.plan import load_plan

    recipe, drop = ctx.recipe, ctx.recipe.prune.drop
    loaded = load_model(ctx.searched, dtype="source", device=recipe.device)
    if drop is None:
        path = ctx.dir("search") / "plan.json"
        result = export_plan(loaded, load_plan(path), ctx.pruned, path=str(path), layers=recipe.prune.layers,
                             force=True, verify=recipe.prune.verify)
    else:
        result = export_pruned(loaded, keep_from_drop(drop, num_layers(loaded.model)), ctx.pruned,
                               removed_order=drop, force=True, verify=recipe.prune.verify)
    rec = result.record
    return {"model_dir": str(ctx.pruned), "removed": rec.removed, "kept": rec.kept,
            "params_before": rec.params_before, "params_after": rec.params_after, "verification": rec.verification}


# ----------------------------------------------------------------------------------------
# Recovery: each step in RUN_DIR/recover/NN-NAME with its own stamp
# ----------------------------------------------------------------------------------------

def _recover_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    return _recovery(ctx, stage, str(ctx.pruned))


def _reference_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """The same recovery steps on the unpruned (trimmed) model: what the recovery alone gives."""
    return _recovery(ctx, stage, ctx.base)


def _recovery(ctx: RunContext, stage: Stage, student: str) -> dict[str, Any]:
    """The recipe's recovery steps in order from ``student``, each in RUN_DIR/STAGE/NN-NAME."""
    synthesized, results = [], []
    for i, (step, step_digest) in enumerate(zip(ctx.recipe.recover, stage.inputs["steps"]), 1):
        if stage.name == "reference":
            step = step.on_reference()
        result = _recover_step(ctx, i, step, step_digest, student, synthesized, stage.name)
        results.append({"step": step.name, "method": step.method, **result})
        if step.makes_model:
            student = result["model_dir"]
        else:
            synthesized = result["files"]
    return {"steps": results, "model_dir": student}


def _recover_step(ctx: RunContext, index: int, step: RecoverStep, step_digest: str, student: str,
                  synthesized: list[dict[str, Any]], stage: str = "recover") -> dict[str, Any]:
    folder = ctx.step_dir(index, step, stage)
    label = f"{stage} step {index} ({step.name})"
    stamp, started = read_json(folder / STAMP), read_json(folder / INPUTS)
    if stamp and stamp.get("digest") == step_digest and (folder / RESULT).is_file():
        logger.info("skip %s: done, inputs unchanged", label)
        return read_json(folder / RESULT) or {}
    if started and started.get("digest") == step_digest and not stamp:
        logger.info("resume %s: interrupted run with the same inputs", label)
    elif folder.exists():
        logger.info("redo %s: inputs changed", label)
        shutil.rmtree(folder)
    else:
        logger.info("run %s", label)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / INPUTS, {"digest": step_digest, "step": step.name})
    start = time.perf_counter()
    try:
        result = STEP_RUNNERS[step.method](ctx, step, folder, student, synthesized)
    finally:
        release_engines()  # a synthesize step's teacher engine is gone before the next step trains
    write_json_atomic(folder / RESULT, result)
    write_json_atomic(folder / STAMP, {"step": step.name, "digest": step_digest,
                                       "seconds": round(time.perf_counter() - start, 1)})
    return result


def _defaults(cls, recipe: Recipe, *, training: bool = True) -> dict[str, Any]:
    """The recipe's translation settings and device, for the config fields ``cls`` has.  A training
    step takes the prompt settings (it trains on the inference format) but keeps its own batch
    size: the translation batch size is not a training batch size. A dtype the recipe names (not
    auto) is every step's dtype, training included; a step's own ``dtype`` wins."""
    names = {f.name for f in dataclasses.fields(cls)}
    shared = {**dataclasses.asdict(recipe.translation), "device": recipe.device}
    if recipe.dtype != "auto":
        shared["dtype"] = recipe.dtype
    if training:
        for key in TRANSLATION_ONLY:
            shared.pop(key)
    return {k: v for k, v in shared.items() if k in names}


def _heal_step(ctx: RunContext, step: RecoverStep, folder: Path, student: str, synthesized) -> dict[str, Any]:
    from ..recover.heal import HealConfig, heal

    data = [spec for _, spec in train_specs(ctx.recipe, step.data, synthesized)]  # every pair's
    options = {**_defaults(HealConfig, ctx.recipe), **step.options}
    result = heal(HealConfig(student=student, out=folder / "model", data=data, force=True,
                             progress=ctx.progress, **options))
    entry = result.record["recovery"][-1]
    return {"model_dir": str(result.out), "units": result.units, "seconds": entry["seconds"]}


def _synthesize_step(ctx: RunContext, step: RecoverStep, folder: Path, student: str, synthesized) -> dict[str, Any]:
    from ..recover.synthesize import SynthesizeConfig, synthesize

    recipe, files = ctx.recipe, []
    options = {**_defaults(SynthesizeConfig, recipe, training=False), "dtype": recipe.dtype, **step.options}
    teacher = options.pop("teacher", None) or recipe.model
    for pair, spec in train_specs(recipe, step.data, synthesized):
        out = folder / f"{pair.name}.tsv"  # its progress log beside it: an interrupted run continues
        result = synthesize(SynthesizeConfig(teacher=teacher, data=spec, out=out, backend=recipe.backend,
                                             force=True, progress=ctx.progress, **options))
        files.append({"pair": pair.name, "tsv": str(out), "counts": result.counts})
    return {"teacher": teacher, "files": files}


def _finetune_step(ctx: RunContext, step: RecoverStep, folder: Path, student: str, synthesized) -> dict[str, Any]:
    from ..recover.finetune import FinetuneConfig

    options = {"fit": "auto", "memory_check": ctx.memory_check, **_defaults(FinetuneConfig, ctx.recipe),
               **step.options}
    if step.distils_reference:  # teacher-corrected: the reference stage ran first
        options["teacher"] = ctx.final("reference")
    if isinstance(options.get("prompt"), list):
        return _finetune_choice(ctx, step, folder, student, synthesized, options)
    return _finetune(ctx, step, folder / "model", student, synthesized, options)


def _finetune(ctx: RunContext, step: RecoverStep, out: Path, student: str, synthesized,
              options: dict[str, Any]) -> dict[str, Any]:
    from ..recover.finetune import FinetuneConfig
    from ..recover.trainer import run_finetune

    checkpoints = out.parent / f"{out.name}.checkpoints"
    resume = any(checkpoints.glob("checkpoint-*"))
    config = FinetuneConfig(student=student, out=out, data=[], resume=resume, force=True, progress=ctx.progress,
                            **options)
    config.data, config.dev_data, config.dev_part = finetune_data(ctx.recipe, step.data, synthesized,
                                                                  config.dev_part)
    result = run_finetune(config)
    rec = result.recovery
    fitted = (rec.get("memory") or {}).get("chosen")
    return {"model_dir": str(result.out), "resumed": resume, "steps": rec.get("steps"),
            "best_dev_loss": rec.get("best_dev_loss"), "seconds": rec.get("seconds"),
            **({"memory_fit": rec["memory"]} if fitted else {})}


def _finetune_choice(ctx: RunContext, step: RecoverStep, folder: Path, student: str, synthesized,
                     options: dict[str, Any]) -> dict[str, Any]:
    """``prompt: [zeroshot, fewshot]``: one model trained per format (each resumable in
    STEP/prompt-choice/FORMAT), each scored on the pairs' dev data in the format it was trained
    in; the best is moved to STEP/model, the others are deleted, the scores kept in its record.
    The choice is written before the move, so an interruption anywhere loses no trained model."""
    from ..recover.choice import choice_record, choice_text, record_choice

    out, candidates = folder / "model", folder / "prompt-choice"
    result = read_json(candidates / "choice.json")
    if result is None:
        trained, scores = {}, {}
        for mode in options["prompt"]:
            done = read_json(candidates / mode / RESULT)  # trained before an interruption
            if done is None:
                done = _finetune(ctx, step, candidates / mode / "model", student, synthesized,
                                 {**options, "prompt": mode})
                write_json_atomic(candidates / mode / RESULT, done)
            trained[mode] = done
            scores[mode] = _dev_scores(ctx, Path(done["model_dir"]), candidates / mode / "dev")
        choice = choice_record(scores, [p.name for p in ctx.recipe.pairs])
        result = {**trained[choice["chosen"]], "model_dir": str(out), "prompt_choice": choice,
                  "seconds": round(sum(r.get("seconds") or 0.0 for r in trained.values()), 1)}
        write_json_atomic(candidates / "choice.json", result)
    choice = result["prompt_choice"]
    if (candidates / choice["chosen"] / "model").is_dir():  # not moved yet
        shutil.rmtree(out, ignore_errors=True)
        (candidates / choice["chosen"] / "model").rename(out)
    record_choice(out, choice)
    for mode in choice["scores"]:
        if mode != choice["chosen"]:
            shutil.rmtree(candidates / mode / "model", ignore_errors=True)
        shutil.rmtree(candidates / mode / "model.checkpoints", ignore_errors=True)
    logger.info("%s: %s", step.name, choice_text(choice))
    return result


def _dev_scores(ctx: RunContext, model: Path, folder: Path) -> list[float]:
    """chrF++ of ``model`` on each pair's dev data (as the search scores it), kept per pair."""
    from ..eval.evaluate import load_pair
    from ..recover.choice import CHOICE_METRIC

    recipe, loaded, scores = ctx.recipe, None, []
    for pair in recipe.pairs:
        path = folder / f"{pair.name}.json"
        if read_json(path) is None:
            loaded = loaded or _load_for_translation(recipe, str(model))
            _evaluate_one(recipe, loaded, load_pair(pair.dev), path, ctx.progress, metrics=[CHOICE_METRIC],
                          prompt="auto")  # each candidate in the format it was trained in
        scores.append(read_json(path)["scores"][CHOICE_METRIC]["value"])
    return scores


STEP_RUNNERS = {"heal": _heal_step, "synthesize": _synthesize_step, "finetune": _finetune_step}


# ----------------------------------------------------------------------------------------
# Evaluate, bench, report
# ----------------------------------------------------------------------------------------

def _evaluate_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """Every model on every pair's test data; each (model, pair) result is kept as it is done
    and reused on resume while the model folder's fingerprint is the same."""
    from ..eval.evaluate import load_pair

    recipe = ctx.recipe
    pairs = [load_pair(p.test) for p in recipe.pairs]
    for pair in (p for p in pairs if p.has_references):  # beside the hypotheses (the report's intervals)
        write_text_atomic(folder / f"{pair.name}.ref.txt", _one_per_line(pair.references))
    results: dict[str, dict[str, Any]] = {}
    for name, spec in ctx.models():
        results[name] = {}
        loaded = None
        current = model_identity(spec)["fingerprint"]  # a folder's: a model made again is evaluated again
        for pair in pairs:
            path = folder / f"{name}.{pair.name}.json"
            done = read_json(path)
            if done is None or (current is not None and done.get("fingerprint") != current):
                loaded = loaded or _load_for_translation(recipe, spec)
                _evaluate_one(recipe, loaded, pair, path, ctx.progress)
            results[name][pair.name] = read_json(path)
        del loaded
    return {"data": {p.name: p.describe() for p in pairs}, "models": dict(ctx.models()), "results": results}


def _load_for_translation(recipe: Recipe, spec: str):
    from ..model.load import load_model

    return load_model(spec, dtype=recipe.dtype, device=recipe.device, weights=recipe.backend.needs_weights())


def _evaluate_one(recipe: Recipe, loaded, pair, path: Path, progress: bool, metrics: list[str] | None = None,
                  prompt: str | None = None) -> None:
    from ..eval.evaluate import translate_and_score
    from ..files import folder_size

    t = recipe.translation
    result = translate_and_score(loaded, pair, metrics or recipe.evaluate.metrics, recipe.comet,
                                 prompt=prompt or t.prompt, shots=t.shots, shots_from=t.shots_from, shots_by=t.shots_by, backend=recipe.backend,
                                 batch_size=t.batch_size, context=t.context, context_target=t.context_target,
                                 max_new_tokens=t.max_new_tokens, progress=progress)
    hypotheses = result.pop("hypotheses")
    result.update(checkpoint=loaded.checkpoint, fingerprint=loaded.fingerprint,
                  size_on_disk_bytes=folder_size(loaded.checkpoint))
    write_text_atomic(path.with_suffix(".hyp.txt"), _one_per_line(hypotheses))
    write_json_atomic(path, result)


def _one_per_line(texts) -> str:
    """One text per line (line breaks inside a text become spaces): hypotheses and references align."""
    return "".join(t.replace("\n", " ") + "\n" for t in texts)


def _bench_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    from ..bench.engine import BenchConfig, run_bench

    recipe, b = ctx.recipe, ctx.recipe.bench
    pair = recipe.pairs[0]
    data = dataclasses.replace(pair.test, limit=b.limit)
    paths = dict(ctx.models())
    t = recipe.translation
    result = run_bench(BenchConfig(models=[paths[name] for name in bench_models(recipe)], data=data, batch_sizes=tuple(b.batch_sizes),
                                   warmup=b.warmup, runs=b.runs, backend=recipe.backend, dtype=recipe.dtype,
                                   device=recipe.device, prompt=t.prompt, shots=t.shots, shots_from=t.shots_from,
                                   shots_by=t.shots_by, context=t.context, context_target=t.context_target,
                                   max_new_tokens=None if b.fixed_new_tokens else t.max_new_tokens,
                                   fixed_new_tokens=b.fixed_new_tokens, metric=b.metric, order=b.order,
                                   comet=recipe.comet, costs=b.costs, latency_segments=b.latency_segments))
    write_json_atomic(folder / "bench.json", result)
    return result


def _quantize_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """The final recovered (or pruned) model, and the reference, quantized (``mtprune quantize``)."""
    from ..compress.quantize.pipeline import QuantizeConfig, quantize_checkpoint

    recipe, q = ctx.recipe, ctx.recipe.quantize
    paths = dict(ctx.models())
    sources = {"quantized": paths[last_recovered(recipe)], "reference-quantized": paths.get("reference")}
    t = recipe.translation
    results = {}
    for name in quantized_names(recipe):
        out = Path(paths[name])
        cfg = QuantizeConfig(model=sources[name], out=out, scheme=q.scheme, method=q.method,
                             data=quantize_calibration(recipe), group_size=q.group_size, include_head=q.include_head,
                             prompt=t.prompt, shots=t.shots, shots_from=t.shots_from, shots_by=t.shots_by,
                             max_length=q.max_length, damp=q.damp, device=recipe.device, force=True, verify=q.verify)
        entry = quantize_checkpoint(cfg, progress=ctx.progress).entry
        results[name] = {"model_dir": str(out), "source": sources[name], "scheme": entry["scheme"],
                         "method": entry["method"], "check": entry.get("check"),
                         "size_on_disk_bytes": entry["size_on_disk_bytes"], "seconds": entry["seconds"],
                         "calibration": entry["calibration"]}
    return {"models": results}


def _report_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    from .run_report import write_run_folder_report

    return write_run_folder_report(ctx.run_dir)


RUNNERS = {"trim_vocab": _trim_stage, "search": _search_stage, "prune": _prune_stage, "recover": _recover_stage,
           "reference": _reference_stage, "quantize": _quantize_stage, "evaluate": _evaluate_stage, "bench": _bench_stage, "report": _report_stage}
