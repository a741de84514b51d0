"""Report of a layer-pruning search: Markdown summary plus two plots.

Reads ``RUN_DIR/plan.json`` (format ``mtprune-plan/1``, written by the search) and writes
``report.md``, ``heatmap.png`` (candidate score of every layer in every round) and
``quality.png`` (metric score against the number of layers removed) next to it.

Layer ids are always the ORIGINAL 0-based ids of the unpruned model, in every round.
matplotlib is optional (``pip install 'mtprune[report]'``) and imported lazily; torch is
never imported here.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..files import write_text_atomic
from ..compress.plan import load_plan  # noqa: F401  (re-exported for callers of report)

PLOT_FILES = {"heatmap": "heatmap.png", "quality": "quality.png"}
MISSING = "–"
LAYER_IDS_NOTE = (
    "Layer ids are ORIGINAL 0-based ids of the unpruned model (0 = first decoder layer) in every "
    "round; they are never renumbered after a removal."
)


@dataclass(frozen=True)
class ReportResult:
    """What ``write_report`` wrote."""

    markdown_path: Path
    plots: list[Path] = field(default_factory=list)


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------

def write_report(run_dir: Path, *, force: bool = True) -> ReportResult:
    """Write report.md, heatmap.png and quality.png into ``run_dir`` from its plan.json.

    Every file is written atomically (temporary name, then ``os.replace``).  Without
    matplotlib the Markdown is still written (without plots), then ConfigError is raised.
    With ``force=False`` existing report files are not replaced (ConfigError).
    """
    run_dir = Path(run_dir)
    plan = load_plan(run_dir / "plan.json")
    md_path = run_dir / "report.md"
    targets = [md_path] + [run_dir / name for name in PLOT_FILES.values()]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise ConfigError(f"report files exist: {', '.join(map(str, existing))} (use --force to replace)")
    if not _have_matplotlib():
        write_text_atomic(md_path, render_markdown(plan, None, run_dir=str(run_dir)))
        raise ConfigError(
            f"wrote {md_path} without plots: matplotlib is not installed; pip install 'mtprune[report]'"
        )
    plots = [run_dir / PLOT_FILES["heatmap"], run_dir / PLOT_FILES["quality"]]
    _save_atomic(plot_heatmap, plan, plots[0])
    _save_atomic(plot_quality, plan, plots[1])
    write_text_atomic(md_path, render_markdown(plan, dict(PLOT_FILES), run_dir=str(run_dir)))
    return ReportResult(markdown_path=md_path, plots=plots)


def _have_matplotlib() -> bool:
    """Whether matplotlib can be imported (without importing it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _tmp_name(path: Path) -> Path:
    """A temporary sibling of ``path`` (same folder, so os.replace is atomic)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _save_atomic(plot: Any, plan: dict[str, Any], path: Path) -> None:
    """Run a plot function into a temporary file, then move it into place."""
    tmp = _tmp_name(path)
    try:
        plot(plan, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------
# Numbers shared by the Markdown and the plots
# ----------------------------------------------------------------------------------------

def _num(x: Any, fmt: str = ".2f") -> str:
    """A number with 2 decimals (or ``fmt``); a dash for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return format(x, fmt)


def _human(n: float | None) -> str:
    """Parameter count in K/M/B with 2 decimals."""
    if n is None:
        return MISSING
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _params_after(plan: dict[str, Any]) -> list[int | None]:
    """Parameters left after each round: the recorded value, else computed from params_per_layer."""
    model = plan["model"]
    total = model.get("params_total")
    per_layer = model.get("params_per_layer") or []
    out: list[int | None] = []
    removed: list[int] = []
    for rnd in plan["rounds"]:
        removed.append(rnd["removed"])
        value = rnd.get("params_after")
        if value is None and total is not None and len(per_layer) == model["num_layers"]:
            value = total - sum(per_layer[i] for i in removed)
        out.append(value)
    return out


def _fraction(params: int | None, total: int | None) -> float | None:
    """params / total, None when either is unknown."""
    if params is None or not total:
        return None
    return params / total


def _pair_names(plan: dict[str, Any]) -> list[str]:
    """Names of the language pairs, in plan order."""
    return [p.get("name") or f"{p.get('src')}-{p.get('tgt')}" for p in plan["pairs"]]


def _candidate_ids(plan: dict[str, Any]) -> list[int]:
    """Original ids that were a candidate in at least one round, sorted."""
    return sorted({c["layer"] for rnd in plan["rounds"] for c in rnd["candidates"]})


# ----------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------

def render_markdown(plan: dict[str, Any], plot_names: dict[str, str] | None, *, run_dir: str = "RUN_DIR") -> str:
    """The whole report as Markdown (pure: no I/O).

    ``plot_names`` maps ``heatmap``/``quality`` to file names relative to the report; None
    (or a missing entry) leaves the plot out.  ``run_dir`` goes into the prune command.
    """
    sections = [
        _md_title(plan),
        _md_summary(plan, run_dir),
        _md_settings(plan),
        _md_rounds(plan),
        _md_candidates(plan),
        _md_plots(plot_names or {}),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"


def _cell(value: Any) -> str:
    """Table cell text: pipes escaped, newlines removed."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one char per column (l/r)."""
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = [header, sep, *rows]
    return "\n".join("| " + " | ".join(_cell(c) for c in line) + " |" for line in lines)


def _md_title(plan: dict[str, Any]) -> str:
    """Title line and the layer-id convention."""
    model = plan["model"]
    return (
        f"# mtprune report: {model['spec']}, criterion {plan['criterion']}\n\n"
        f"_{LAYER_IDS_NOTE}_"
    )


def _md_summary(plan: dict[str, Any], run_dir: str) -> str:
    """Outcome in three lines plus the copy-paste prune command."""
    model, removed = plan["model"], plan["removed"]
    n = model["num_layers"]
    params = _params_after(plan)
    total = model.get("params_total")
    last_params = params[-1] if params else total
    frac = _fraction(last_params, total)
    base = plan["baseline"].get("score")
    final = plan["rounds"][-1].get("score_after") if plan["rounds"] else base
    delta = final - base if final is not None and base is not None else None
    lines = [
        "## Result",
        "",
        f"- Removed {len(removed)} of {n} layers, in this order (original ids): "
        f"**{', '.join(map(str, removed)) or 'none'}**",
        f"- Kept {len(plan['kept'])} layers: {', '.join(map(str, plan['kept']))}",
        f"- Parameters: {_human(total)} → {_human(last_params)}"
        + (f" ({frac * 100:.2f}% of original)" if frac is not None else ""),
        f"- {_metric_label(plan)}: {_num(base)} → {_num(final)} ({_num(delta, '+.2f')} vs baseline)",
        f"- Stopped: {plan.get('stop_reason') or MISSING}",
        "",
        "Apply the plan (all removals; add `--layers N` to apply only the first N):",
        "",
        "```bash",
        prune_command(plan, run_dir),
        "```",
    ]
    return "\n".join(lines)


def prune_command(plan: dict[str, Any], run_dir: str = "RUN_DIR", out: str = "OUT") -> str:
    """``mtprune prune MODEL --plan RUN_DIR/plan.json -o OUT`` with shell quoting."""
    plan_path = f"{run_dir.rstrip('/')}/plan.json"
    return f"mtprune prune {shlex.quote(str(plan['model']['spec']))} --plan {shlex.quote(plan_path)} -o {out}"


def _metric_label(plan: dict[str, Any]) -> str:
    """Metric name with its direction."""
    hib = plan.get("higher_is_better", True)
    return f"{plan['metric']} ({'higher' if hib else 'lower'} is better)"


def _md_settings(plan: dict[str, Any]) -> str:
    """Settings table: model, data, metric, criterion, stop rule, versions."""
    model = plan["model"]
    rows = [
        ("model", f"{model['spec']} ({model.get('kind', MISSING)}, {model.get('architecture', MISSING)})"),
        ("fingerprint", f"`{model.get('fingerprint', MISSING)}`"),
        ("layers, parameters", f"{model['num_layers']} layers, {_human(model.get('params_total'))} parameters"),
        *(("pair " + name, desc) for name, desc in _pair_rows(plan)),
        ("combine pairs", plan.get("combine", MISSING)),
        ("metric", f"{_metric_label(plan)}, signature `{plan.get('metric_signature') or MISSING}`"),
        ("criterion", f"{plan['criterion']} (candidate score: {plan.get('score_name', MISSING)})"),
        ("fast mode", _fast_text(plan.get("fast"))),
        ("protected layers", ", ".join(map(str, plan.get("protected") or [])) or "none"),
        ("stop rule", _stop_text(plan.get("stop"))),
        ("stop reason", plan.get("stop_reason") or MISSING),
        ("created", plan.get("created", MISSING)),
        ("versions", ", ".join(f"{k} {v}" for k, v in (plan.get("versions") or {}).items()) or MISSING),
    ]
    text = "## Settings\n\n" + _table(["setting", "value"], rows)
    if plan.get("settings"):
        text += (
            "\n\n<details><summary>all search settings</summary>\n\n```json\n"
            + json.dumps(plan["settings"], indent=2, sort_keys=True, default=str)
            + "\n```\n\n</details>"
        )
    return text


def _pair_rows(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """One (name, description) per language pair."""
    rows = []
    for name, pair in zip(_pair_names(plan), plan["pairs"]):
        rows.append((
            name,
            f"{pair.get('src', '?')}→{pair.get('tgt', '?')}, data `{pair.get('data', MISSING)}`, "
            f"hash `{pair.get('data_hash', MISSING)}`, {pair.get('n_segments', MISSING)} segments, "
            f"weight {_num(pair.get('weight'))}",
        ))
    return rows


def _fast_text(fast: dict[str, Any] | None) -> str:
    """Fast-mode settings in words."""
    if not fast:
        return "off (every candidate scored by generation)"
    return f"proxy {fast.get('proxy', MISSING)}, generation for a shortlist of {fast.get('shortlist', MISSING)}"


def _stop_text(stop: dict[str, Any] | None) -> str:
    """The stop options that were set, e.g. ``remove=4``."""
    items = [f"{k}={v}" for k, v in (stop or {}).items() if v is not None]
    return ", ".join(items) or "none"


def _md_rounds(plan: dict[str, Any]) -> str:
    """Per-round table with layers and parameters left, score and delta."""
    model, base = plan["model"], plan["baseline"]
    total = model.get("params_total")
    pairs = _pair_names(plan) if len(plan["pairs"]) > 1 else []
    header = ["round", "removed layer", "layers left", "params left", "% of params",
              f"{plan['metric']} after", "Δ vs baseline", *pairs, "time (s)"]
    rows = [["0 (baseline)", MISSING, model["num_layers"], _human(total), "100.00%" if total else MISSING,
             _num(base.get("score")), "+0.00", *(_num(base.get("per_pair", {}).get(p)) for p in pairs), MISSING]]
    params = _params_after(plan)
    for i, rnd in enumerate(plan["rounds"]):
        frac = _fraction(params[i], total)
        score = rnd.get("score_after")
        delta = score - base["score"] if score is not None and base.get("score") is not None else None
        per_pair = rnd.get("per_pair_after") or {}
        rows.append([
            rnd["round"], rnd["removed"], rnd.get("num_layers_before", model["num_layers"] - i) - 1,
            _human(params[i]), f"{frac * 100:.2f}%" if frac is not None else MISSING,
            _num(score), _num(delta, "+.2f"), *(_num(per_pair.get(p)) for p in pairs), _num(rnd.get("seconds")),
        ])
    total_s = sum(r.get("seconds") or 0 for r in plan["rounds"])
    align = "lrrrrrr" + "r" * len(pairs) + "r"
    return (
        "## Rounds\n\n" + _table(header, rows, align)
        + f"\n\nTotal search time: {_num(total_s)} s. Parameter percentages are of the original model's total."
    )


def _md_candidates(plan: dict[str, Any]) -> str:
    """Candidate scores: rows rounds, columns original layer ids; removed layer in bold."""
    ids = _candidate_ids(plan)
    if not ids:
        return ""
    rows = [[rnd["round"], *(_candidate_cell(rnd, lid) for lid in ids)] for rnd in plan["rounds"]]
    notes = [
        f"Cell = {plan.get('score_name', 'candidate score')} when that layer is removed in that round "
        "(higher = better to remove); **bold** = layer removed in the round; "
        f"{MISSING} = already removed. Protected layers ({', '.join(map(str, plan.get('protected') or [])) or 'none'}) "
        "are never candidates."
    ]
    if plan.get("fast"):
        notes.append(f"Values in parentheses are the proxy ({plan['fast'].get('proxy', 'proxy')}) only: "
                     "those layers were not shortlisted for generation.")
    return ("## Candidate scores per round\n\n" + _table(["round", *map(str, ids)], rows, "l" + "r" * len(ids))
            + "\n\n" + " ".join(notes))


def _candidate_cell(rnd: dict[str, Any], layer: int) -> str:
    """Score (or proxy in parentheses) of one layer in one round."""
    cand = next((c for c in rnd["candidates"] if c["layer"] == layer), None)
    if cand is None:
        return MISSING
    if cand.get("score") is not None:
        text = _num(cand["score"])
    elif cand.get("proxy") is not None:
        text = f"({_num(cand['proxy'])})"
    else:
        text = "?"
    return f"**{text}**" if layer == rnd["removed"] else text


def _md_plots(plot_names: dict[str, str]) -> str:
    """Image links for the plots that exist."""
    captions = {"heatmap": "Candidate scores per round (heatmap)", "quality": "Quality vs layers removed"}
    links = [f"![{captions[k]}]({plot_names[k]})" for k in ("heatmap", "quality") if plot_names.get(k)]
    if not links:
        return "## Plots\n\nNo plots (matplotlib missing: pip install 'mtprune[report]', then rerun the report)."
    return "## Plots\n\n" + "\n\n".join(links)


# ----------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------

def _pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend; ConfigError when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'mtprune[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plan: dict[str, Any], key: str) -> list[list[float]]:
    """Rounds x original ids matrix of candidate ``key`` (score/proxy); NaN where not measured."""
    n = plan["model"]["num_layers"]
    grid = []
    for rnd in plan["rounds"]:
        row = [math.nan] * n
        for c in rnd["candidates"]:
            if c.get(key) is not None and 0 <= c["layer"] < n:
                row[c["layer"]] = float(c[key])
        grid.append(row)
    return grid


def _heatmap_panels(plan: dict[str, Any]) -> list[tuple[list[list[float]], str, str]]:
    """(grid, colorbar label, panel title) for each measured quantity."""
    score_name = plan.get("score_name") or "candidate score"
    scores, proxies = _grid(plan, "score"), _grid(plan, "proxy")
    has_scores = any(not math.isnan(v) for row in scores for v in row)
    has_proxies = any(not math.isnan(v) for row in proxies for v in row)
    fast = plan.get("fast") or {}
    proxy_label = f"proxy: {fast.get('proxy', 'proxy')}"
    panels = []
    if has_scores:
        title = "generation score, shortlisted layers only" if has_proxies else "candidate score"
        panels.append((scores, score_name, title))
    if has_proxies:
        title = "proxy, all candidates" if has_scores else "proxy only (no generation scores in this plan)"
        panels.append((proxies, proxy_label, title))
    return panels


def plot_heatmap(plan: dict[str, Any], path: Path) -> None:
    """Heatmap: rounds (rows) x original layer ids (columns), removed layer boxed, blanks grey."""
    plt = _pyplot()
    n, rounds = plan["model"]["num_layers"], plan["rounds"]
    if not rounds:
        _empty_figure(plt, path, f"{plan['model']['spec']}: no search rounds in this plan (nothing removed)")
        return
    panels = _heatmap_panels(plan) or [(_grid(plan, "score"), plan.get("score_name", "score"), "nothing measured")]
    width = min(40.0, max(7.0, 0.42 * n + 3.0))
    row_h = max(2.4, 0.42 * len(rounds) + 1.6)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, row_h * len(panels) + 0.8), squeeze=False)
    for ax, (grid, label, title) in zip(axes[:, 0], panels):
        _draw_heatmap_panel(plt, fig, ax, plan, grid, label, title)
    fig.suptitle(_heatmap_title(plan, panels, int(width * 10)), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _empty_figure(plt: Any, path: Path, message: str) -> None:
    """A small PNG that only says ``message``."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11, wrap=True)
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _heatmap_title(plan: dict[str, Any], panels: list[tuple[Any, str, str]], chars: int) -> str:
    """Figure title: model, criterion, what was measured, legend of the marks; wrapped to ``chars``."""
    fast = plan.get("fast")
    if fast:
        measured = (f"fast mode (proxy {fast.get('proxy', '?')}, shortlist {fast.get('shortlist', '?')}): "
                    + "; ".join(p[2] for p in panels))
    else:
        measured = panels[0][2]
    lines = [
        f"{plan['model']['spec']}: layer-removal candidates per round, criterion {plan['criterion']}",
        f"measured: {measured}",
        "red box = layer removed in the round; grey = protected or already removed",
    ]
    return "\n".join(textwrap.fill(line, max(chars, 40)) for line in lines)


def _draw_heatmap_panel(plt: Any, fig: Any, ax: Any, plan: dict[str, Any], grid: list[list[float]],
                        label: str, title: str) -> None:
    """One heatmap panel with box marks, ticks at every original id and a colorbar."""
    import numpy as np
    from matplotlib.patches import Rectangle

    n, rounds = plan["model"]["num_layers"], plan["rounds"]
    data = np.ma.masked_invalid(np.array(grid, dtype=float).reshape(len(rounds), n))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")
    im = ax.imshow(data, cmap=cmap, aspect="auto", interpolation="nearest")
    for r, rnd in enumerate(rounds):
        ax.add_patch(Rectangle((rnd["removed"] - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.2))
    if n <= 40 and len(rounds) <= 40:
        _annotate_cells(ax, data, im)
    ax.set_xticks(range(n))
    ax.set_xticklabels([str(i) for i in range(n)], fontsize=8)
    protected = set(plan.get("protected") or [])
    for tick, lid in zip(ax.get_xticklabels(), range(n)):
        if lid in protected:
            tick.set_color("grey")
    ax.set_yticks(range(len(rounds)))
    ax.set_yticklabels([f"{rnd['round']}: L{rnd['removed']}" for rnd in rounds], fontsize=8)
    ax.set_xlabel("original layer id (0-based; grey ids = protected)")
    ax.set_ylabel("round: layer removed")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04).set_label(label)


def _annotate_cells(ax: Any, data: Any, im: Any) -> None:
    """Write each measured value in its cell, dark text on light colours."""
    size = 7 if data.shape[1] <= 24 else 5.5
    for (r, c), value in _iter_cells(data):
        rgba = im.cmap(im.norm(value))
        light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.55
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=size,
                color="black" if light else "white")


def _iter_cells(data: Any) -> Iterable[tuple[tuple[int, int], float]]:
    """((row, col), value) for every unmasked cell."""
    import numpy as np

    mask = np.ma.getmaskarray(data)
    for r in range(data.shape[0]):
        for c in range(data.shape[1]):
            if not mask[r, c]:
                yield (r, c), float(data[r, c])


def _quality_series(plan: dict[str, Any]) -> dict[str, list[float]]:
    """Score after 0..k removals: ``combined`` and one series per pair (NaN where unknown)."""
    def val(x: Any) -> float:
        return math.nan if x is None else float(x)

    base, rounds = plan["baseline"], plan["rounds"]
    series = {"combined": [val(base.get("score"))] + [val(r.get("score_after")) for r in rounds]}
    for name in _pair_names(plan):
        series[name] = [val((base.get("per_pair") or {}).get(name))] + [
            val((r.get("per_pair_after") or {}).get(name)) for r in rounds
        ]
    return series


def plot_quality(plan: dict[str, Any], path: Path) -> None:
    """Metric score vs number of layers removed; per-pair lines when several pairs."""
    plt = _pyplot()
    rounds, model = plan["rounds"], plan["model"]
    xs = list(range(len(rounds) + 1))
    series = _quality_series(plan)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.5 * len(xs) + 4), 4.8))
    pairs = _pair_names(plan)
    if len(pairs) > 1:
        for name in pairs:
            ax.plot(xs, series[name], marker="o", linewidth=1.2, markersize=4, alpha=0.8, label=name)
        combined_label = f"combined ({plan.get('combine', 'mean')})"
    else:
        combined_label = pairs[0] if pairs else plan["metric"]
    ax.plot(xs, series["combined"], marker="o", linewidth=2.8, color="black", label=combined_label)
    _label_removed(ax, xs, series["combined"], rounds)
    if not math.isnan(series["combined"][0]):
        ax.axhline(series["combined"][0], color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(xs)
    ax.set_xlim(-0.3, xs[-1] + 0.3 if len(xs) > 1 else 0.3)
    ax.set_xlabel("layers removed (point labels: original id of the layer removed, L = layer)")
    ax.set_ylabel(_metric_label(plan))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _top_axis(ax, plan, xs)
    ax.set_title(f"{model['spec']}: {plan['metric']} vs layers removed (criterion {plan['criterion']})",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _label_removed(ax: Any, xs: list[int], ys: list[float], rounds: list[dict[str, Any]]) -> None:
    """Annotate each point after round r with the original id removed in that round."""
    for x, y, rnd in zip(xs[1:], ys[1:], rounds):
        if not math.isnan(y):
            ax.annotate(f"L{rnd['removed']}", (x, y), textcoords="offset points", xytext=(0, 7),
                        ha="center", fontsize=8)


def _top_axis(ax: Any, plan: dict[str, Any], xs: list[int]) -> None:
    """Secondary x-axis: layers left and parameter fraction after each removal."""
    model = plan["model"]
    total = model.get("params_total")
    params = [total, *_params_after(plan)]
    labels = []
    for x, p in zip(xs, params):
        frac = _fraction(p, total)
        labels.append(f"{model['num_layers'] - x}" + (f"\n{frac * 100:.0f}%" if frac is not None else ""))
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    top.set_xticks(xs)
    top.set_xticklabels(labels, fontsize=8)
    top.set_xlabel("layers left / % of parameters", fontsize=9)
