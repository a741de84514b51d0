"""The stages of a run (``mtprune run``): each runner makes its stage's outputs in RUN_DIR/STAGE
with the library's ``run_<stage>`` (``RUNNERS``); the recovery steps each in RUN_DIR/STAGE/NN-NAME
with its own stamp (``STEP_RUNNERS``)."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..files import read_json, write_json_atomic, write_text_atomic
from ..translate.backends import release_engines
from .recipe_sections import RecoverStep
from .recipe_steps import finetune_data, quantize_config, step_options, train_specs, trim_config
from .run_folder import (INPUTS, RESULT, STAMP, RunContext, Stage, bench_models, last_recovered,
                         quantized_names)

logger = logging.getLogger(__name__)


def _trim_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """The recipe's model with the vocabulary its pairs use (``mtprune trim-vocab``)."""
    from ..compress.trim_vocab import run_trim_vocab

    result = run_trim_vocab(dataclasses.replace(trim_config(ctx.recipe, out=folder / "model"), force=True))
    entry = result.entry
    return {"model_dir": str(result.out), "kept": entry["kept"], "vocab_size_before": entry["vocab_size_before"],
            "head_flops_share_before": entry["head_flops_share_before"],
            "head_flops_share_after": entry["head_flops_share_after"], "seconds": entry["seconds"]}


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
    """The searched model without the recipe's layers (prune.drop) or its plan's (``mtprune prune``)."""
    from ..compress.prune import PruneConfig, run_prune

    recipe, drop = ctx.recipe, ctx.recipe.prune.drop
    which = ({"drop": list(drop)} if drop is not None else
             {"plan": str(ctx.dir("search") / "plan.json"), "layers": recipe.prune.layers})
    result = run_prune(PruneConfig(model=ctx.searched, out=ctx.pruned, dtype="source", device=recipe.device,
                                   force=True, verify=recipe.prune.verify, **which))
    rec = result.record
    return {"model_dir": str(ctx.pruned), "removed": rec.removed, "kept": rec.kept,
            "params_before": rec.params_before, "params_after": rec.params_after, "verification": rec.verification}


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


def _heal_step(ctx: RunContext, step: RecoverStep, folder: Path, student: str, synthesized) -> dict[str, Any]:
    from ..recover.heal import HealConfig, run_heal

    data = [spec for _, spec in train_specs(ctx.recipe, step.data, synthesized)]  # every pair's
    options = step_options(ctx.recipe, step)
    result = run_heal(HealConfig(student=student, out=folder / "model", data=data, force=True,
                                 progress=ctx.progress, **options))
    entry = result.record["recovery"][-1]
    return {"model_dir": str(result.out), "units": result.units, "seconds": entry["seconds"]}


def _synthesize_step(ctx: RunContext, step: RecoverStep, folder: Path, student: str, synthesized) -> dict[str, Any]:
    from ..recover.synthesize import SynthesizeConfig, run_synthesize

    recipe, files = ctx.recipe, []
    options = step_options(recipe, step)  # the translation settings: each segment alone (no document context)
    teacher = options.pop("teacher", None) or recipe.model
    for pair, spec in train_specs(recipe, step.data, synthesized):
        out = folder / f"{pair.name}.tsv"  # its progress log beside it: an interrupted run continues
        result = run_synthesize(SynthesizeConfig(teacher=teacher, data=spec, out=out, backend=recipe.backend,
                                                 force=True, progress=ctx.progress, **options))
        files.append({"pair": pair.name, "tsv": str(out), "counts": result.counts})
    return {"teacher": teacher, "files": files}


def _finetune_step(ctx: RunContext, step: RecoverStep, folder: Path, student: str, synthesized) -> dict[str, Any]:
    options = {"fit": "auto", "memory_check": ctx.memory_check, **step_options(ctx.recipe, step)}
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
    """chrF++ of ``model`` on each pair's dev data (as the search scores it), kept per pair; each
    candidate in the format it was trained in (prompt auto)."""
    from ..eval.evaluate import run_evaluate
    from ..recover.choice import CHOICE_METRIC

    cfg = _evaluate_config(ctx, str(model), [p.dev for p in ctx.recipe.pairs], folder, metrics=[CHOICE_METRIC],
                           translation=dataclasses.replace(ctx.recipe.translation, prompt="auto"))
    return [record["scores"][CHOICE_METRIC]["value"] for record in run_evaluate(cfg)]


STEP_RUNNERS = {"heal": _heal_step, "synthesize": _synthesize_step, "finetune": _finetune_step}


def _evaluate_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """Every model on every pair's test data (``run_evaluate``); each (model, pair) result is kept
    as it is done and reused on resume while the model folder's fingerprint is the same."""
    from ..eval.evaluate import run_evaluate
    from ..translate.translator import load_pair, one_per_line

    recipe = ctx.recipe
    pairs = [load_pair(p.test) for p in recipe.pairs]
    for pair in (p for p in pairs if p.has_references):  # beside the hypotheses (the report's intervals)
        write_text_atomic(folder / f"{pair.name}.ref.txt", one_per_line(pair.references))
    results = {}
    for name, spec in ctx.models():
        records = run_evaluate(_evaluate_config(ctx, spec, [p.test for p in recipe.pairs], folder, name=name))
        results[name] = {pair.name: record for pair, record in zip(pairs, records)}
    return {"data": {p.name: p.describe() for p in pairs}, "models": dict(ctx.models()), "results": results}


def _evaluate_config(ctx: RunContext, model: str, data: list, records: Path, **settings: Any):
    """The EvaluateConfig of ``model`` on ``data`` as the recipe says, its summaries kept in ``records``."""
    from ..eval.evaluate import EvaluateConfig

    recipe = ctx.recipe
    return EvaluateConfig(**{"model": model, "data": data, "metrics": list(recipe.evaluate.metrics),
                             "translation": recipe.translation, "backend": recipe.backend, "comet": recipe.comet,
                             "dtype": recipe.dtype, "device": recipe.device, "records": records,
                             "progress": ctx.progress, **settings})


def _bench_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """Every model the bench measures (``bench_models``) on the first pair's test data (``mtprune bench``)."""
    from ..bench.config import BenchConfig
    from ..bench.engine import run_bench

    recipe, b = ctx.recipe, ctx.recipe.bench
    data = dataclasses.replace(recipe.pairs[0].test, limit=b.limit)
    paths = dict(ctx.models())
    translation = recipe.translation
    if b.fixed_new_tokens:  # every segment generates exactly that many tokens
        translation = dataclasses.replace(translation, max_new_tokens=None)
    result = run_bench(BenchConfig(models=[paths[name] for name in bench_models(recipe)], data=data,
                                   batch_sizes=tuple(b.batch_sizes), warmup=b.warmup, runs=b.runs,
                                   backend=recipe.backend, dtype=recipe.dtype, device=recipe.device,
                                   translation=translation, fixed_new_tokens=b.fixed_new_tokens, metric=b.metric,
                                   order=b.order, comet=recipe.comet, costs=b.costs,
                                   latency_segments=b.latency_segments))
    write_json_atomic(folder / "bench.json", result)
    return result


def _quantize_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    """The final recovered (or pruned) model, and the reference, quantized (``mtprune quantize``)."""
    from ..compress.quantize.pipeline import run_quantize

    recipe = ctx.recipe
    paths = dict(ctx.models())
    sources = {"quantized": paths[last_recovered(recipe)], "reference-quantized": paths.get("reference")}
    results = {}
    for name in quantized_names(recipe):
        out = Path(paths[name])
        cfg = dataclasses.replace(quantize_config(recipe, model=sources[name], out=out), force=True,
                                  progress=ctx.progress)
        entry = run_quantize(cfg).entry
        results[name] = {"model_dir": str(out), "source": sources[name], "scheme": entry["scheme"],
                         "method": entry["method"], "check": entry.get("check"),
                         "size_on_disk_bytes": entry["size_on_disk_bytes"], "seconds": entry["seconds"],
                         "calibration": entry["calibration"]}
    return {"models": results}


def _report_stage(ctx: RunContext, folder: Path, stage: Stage) -> dict[str, Any]:
    from .run_report import write_run_folder_report

    return write_run_folder_report(ctx.run_dir)


RUNNERS = {"trim_vocab": _trim_stage, "search": _search_stage, "prune": _prune_stage, "recover": _recover_stage,
           "reference": _reference_stage, "quantize": _quantize_stage, "evaluate": _evaluate_stage,
           "bench": _bench_stage, "report": _report_stage}
