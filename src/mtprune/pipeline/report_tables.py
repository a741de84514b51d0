"""What the run report shows (``mtprune run``'s report.md and report.html): its sections, built
from the run's summary (``check_summary`` says its keys), and their rendering as Markdown and as
one self-contained HTML page.  torch is never imported here."""
from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bench.costs import human_bytes, memory_text
from ..bench.stats import FLAG_SHORT, FLAG_TEXT, row_flags
from ..errors import ConfigError
from ..eval.verdict import below_unpruned_line
from ..recover.choice import choice_text
from .report import MISSING, _human, _num, _table


PLOTS = {
    "heatmap": ("heatmap.png", "Layer importance: the candidate score of every layer in every round"),
    "quality": ("quality.png", "Quality per search round"),
    "speed": ("speed.png", "Generated tokens/s by batch size"),
    "tradeoff": ("tradeoff.png", "Quality against speed"),
}


REQUIRED = ("models", "test_data", "metrics")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align: str | None = None  # one of l/r per column


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # keys of PLOTS


def check_summary(summary: dict[str, Any]) -> None:
    """The keys a run summary must have: ``models`` (each: name, layers, parameters, and
    optionally path, size_on_disk_bytes, train_seconds, scores {pair: {metric: {value,
    signature}}}, failures {pair: metrics.FailureReport.to_dict()}), ``test_data`` {pair: {data, data_hash, n_segments}}, ``metrics`` (names);
    optional: ``title``, ``recipe`` {path, hash}, ``commands``, ``versions``, ``plan`` (the
    search's plan dict), ``bench`` (a ``mtprune bench`` result), ``stages`` [{name, status,
    seconds}]."""
    missing = [key for key in REQUIRED if key not in summary]
    if missing:
        raise ConfigError(f"run summary lacks {', '.join(missing)}")
    for i, model in enumerate(summary["models"]):
        lacking = [key for key in ("name", "layers", "parameters") if key not in model]
        if lacking:
            raise ConfigError(f"run summary: model {i + 1} lacks {', '.join(lacking)}")


def bench_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model name: its bench row at the largest batch size measured (matched by path), with
    its flags (derived for a bench JSON before rounds: no figure above its ideal goes unflagged)."""
    bench = summary.get("bench")
    if not bench:
        return {}
    by_path = {}
    for entry in bench["models"]:
        for key in (entry.get("model"), entry.get("checkpoint")):
            if key:
                by_path[str(Path(key))] = entry
    rows = {}
    runs = (bench.get("config") or {}).get("runs")
    for model in summary["models"]:
        entry = by_path.get(str(Path(model["path"]))) if model.get("path") else None
        if entry and entry["batches"]:
            row = max(entry["batches"], key=lambda r: r["batch_size"])
            flags = row_flags(row, reference=entry is bench["models"][0], runs=runs)
            rows[model["name"]] = {**row, "flags": flags, "bench_entry": entry}
    return rows


def score(model: dict[str, Any], pair: str, metric: str) -> float | None:
    return ((model.get("scores") or {}).get(pair) or {}).get(metric, {}).get("value")


def memory_texts(summary: dict[str, Any]) -> list[str]:
    """The report's lines on memory: the settings fit: auto chose, the batches halved out of memory."""
    from ..model.preflight import Option

    lines = []
    for fit in summary.get("memory_fits") or []:
        chosen = fit["chosen"]
        room = fit["room"]
        need = (fit["estimate_bytes"] + fit["runtime_bytes"]) / 2 ** 30
        lines.append(f"{fit['stage']} step {fit['step']}: the recipe's settings needed ~{need:.1f} GiB, "
                     f"{room['device']} had {room['available_bytes'] / 2 ** 30:.1f} GiB: trained with "
                     f"{Option(chosen['changes'], None).flags()} (fit: auto; {chosen['note']}).")
    for oom in summary.get("oom_halvings") or []:
        steps = ", ".join(f"{h['from']} -> {h['to']}" for h in oom["halvings"])
        lines.append(f"evaluate: {oom['model']} on {oom['pair']} ran out of GPU memory; its batch was halved "
                     f"({steps}) and every segment translated once.")
    return lines


def summary_verdict(summary: dict[str, Any], intervals: dict[str, tuple[float, float]] | None = None):
    """``verdict.recovery_verdict`` of the summary, with each model's batch-1 latency from the bench."""
    from ..eval.verdict import recovery_verdict

    latency = {name: ((row.get("bench_entry") or {}).get("costs") or {}).get("b1_latency_median_s")
               for name, row in bench_rows(summary).items()}
    return recovery_verdict(summary, {k: v for k, v in latency.items() if v is not None}, intervals)


def build_sections(summary: dict[str, Any], plots: Sequence[str]) -> list[Section]:
    check_summary(summary)
    sections = [_models_section(summary, plots)]
    verdict = summary_verdict(summary)
    if verdict:
        sections.append(_verdict_section(verdict))
    if any(m.get("failures") for m in summary["models"]):
        sections.append(_failures_section(summary["models"]))
    if summary.get("plan"):
        sections.append(_search_section(summary["plan"], plots))
    if summary.get("stages"):
        sections.append(_stages_section(summary["stages"]))
    sections.append(_provenance_section(summary))
    return sections


def _models_section(summary: dict[str, Any], plots: Sequence[str]) -> Section:
    pairs, metrics = list(summary["test_data"]), list(summary["metrics"])
    speed = bench_rows(summary)
    header = ["model", "layers", "vocabulary", "parameters", "size on disk", "prompt"]
    header += [f"{m} {p}" for p in pairs for m in metrics]
    header += ["segments/s", "tokens/s", "peak memory (alone)", "batch-1 latency", "training"]
    base = summary["models"][0]
    rows = []
    for model in summary["models"]:
        vocab = model.get("vocab_size")
        bench = speed.get(model["name"], {})
        costs = (bench.get("bench_entry") or {}).get("costs") or {}
        disk = model.get("size_on_disk_bytes") or costs.get("size_on_disk_bytes")
        row = [model["name"], str(model["layers"]), MISSING if vocab is None else f"{vocab:,}",
               f"{_human(model['parameters'])} ({model['parameters'] / base['parameters']:.1%})",
               _bytes(disk), model.get("prompt") or MISSING]
        row += [_num(score(model, p, m)) for p in pairs for m in metrics]
        row += [_segments_cell(bench), _speed_cell(bench), _memory_cell(costs), _latency_cell(costs),
                _minutes(model.get("train_seconds"))]
        rows.append(row)
    section = Section("Models side by side", tables=[Table(header, rows, "l" + "r" * (len(header) - 1))])
    section.paragraphs.append(_test_data_text(summary["test_data"]))
    if speed:
        section.paragraphs.append(_speed_text(summary["bench"], speed))
        section.paragraphs.append(_costs_text(speed))
    if any(m.get("train_seconds") is not None for m in summary["models"]):
        section.paragraphs.append("training: the recovery steps' time up to that model (synthesis included).")
    below = below_unpruned_line(summary)
    if below:
        section.paragraphs.append(below[0].upper() + below[1:] + ".")
    for choice in summary.get("prompt_choices") or []:
        section.paragraphs.append(f"{choice['stage']} step {choice['step']}: {choice_text(choice)} on the dev data "
                                  f"of {', '.join(choice['pairs'])}; training time counts every format trained.")
    section.paragraphs += memory_texts(summary)
    section.plots = [p for p in ("tradeoff", "speed") if p in plots]
    return section


def _segments_cell(bench: dict[str, Any]) -> str:
    """'2.10 [2.05-2.20] (1.90x [1.85-1.95])': segments/s as the model translates (its own prompt
    and outputs) and the speed-up over the first model, with their ranges over the rounds."""
    from ..bench.render import interval_text

    if not bench or bench.get("segments_per_s") is None:
        return MISSING
    text = interval_text(bench["segments_per_s"], bench.get("segments_per_s_interval"), ".2f")
    if bench.get("segment_speedup") is not None:
        text += f" ({interval_text(bench['segment_speedup'], bench.get('segment_speedup_interval'), '.2f', 'x')})"
    return text


def _speed_cell(bench: dict[str, Any]) -> str:
    """'140.0 [138.2-141.0] (1.40x [1.38-1.42] / ideal 1.50x; noise)': tokens/s, the speed-up over
    the first model with their ranges over the rounds, the ideal one, and the flags."""
    from ..bench.render import interval_text

    if not bench:
        return MISSING
    text = interval_text(bench["tokens_per_s"], bench.get("tokens_per_s_interval"))
    if bench.get("speedup") is not None and bench.get("ideal_speedup") is not None:
        speedup = interval_text(bench["speedup"], bench.get("speedup_interval"), ".2f", "x")
        text += f" ({speedup} / ideal {bench['ideal_speedup']:.2f}x"
        text += f"; {', '.join(FLAG_SHORT.get(f, f) for f in bench['flags'])})" if bench["flags"] else ")"
    return text


def _memory_cell(costs: dict[str, Any]) -> str:
    """The model's peak memory alone in its own process (a bench before costs: not measured)."""
    return memory_text(costs) if costs.get("peak_rss_bytes") is not None else MISSING


def _latency_cell(costs: dict[str, Any]) -> str:
    """'0.412 s, 31.2 tokens/s (1.21x / ideal 1.25x)': median seconds per segment at batch 1, the
    generated tokens/s at batch 1, and its speed-up over the first model with its ideal."""
    if costs.get("b1_latency_median_s") is None:
        return MISSING
    text = f"{costs['b1_latency_median_s']:.3f} s"
    if costs.get("b1_tokens_per_s") is not None:
        text += f", {costs['b1_tokens_per_s']:.1f} tokens/s"
    if costs.get("b1_speedup") is not None and costs.get("ideal_b1_speedup") is not None:
        text += f" ({costs['b1_speedup']:.2f}x / ideal {costs['ideal_b1_speedup']:.2f}x)"
    return text


def _costs_text(speed: dict[str, dict[str, Any]]) -> str:
    """Where peak memory and batch-1 latency come from (or that the bench did not measure them)."""
    costs = next((row["bench_entry"]["costs"] for row in speed.values() if row["bench_entry"].get("costs")), None)
    if costs is None:
        return (f"peak memory and batch-1 latency: {MISSING} (a bench without per-model costs: its peak memory was "
                "the shared process's, all models loaded, not a model's own; rerun the bench stage to measure them).")
    gpu = " and torch's peak allocation on the GPU" if costs.get("gpu_peak_bytes") is not None else ""
    interleaved = costs.get("b1_source") == "interleaved"
    where = ("timed in the bench's process with every model loaded, the models taking turns segment by segment "
             "(drift cancelled)" if interleaved else "each model alone in its own process (drift not cancelled)")
    return (f"peak memory (alone): each model alone in a fresh process, one after the other, as "
            f"WMT26 measures a deliverable; peak memory = the process's peak RSS with Python and torch "
            f"({_bytes(costs['runtime_rss_bytes'])} before the model loaded){gpu}; "
            f"batch-1 latency = median seconds per segment over the first {costs['latency_segments']} segments, then "
            "the tokens/s generated at batch 1 (decoding one segment: where fewer layers is nearly proportionally "
            f"faster), in brackets the batch-1 tokens/s speed-up over the first model and its ideal from FLOPs; "
            f"{where}. Size on disk: every file under the model folder.")


def _speed_text(bench: dict[str, Any], speed: dict[str, dict[str, Any]]) -> str:
    """Where the speed figures come from, how many runs each is based on, and what a flag means."""
    first = next(iter(speed.values()))
    timing = bench.get("timing")
    runs = first.get("runs") or (bench.get("config") or {}).get("runs")
    plural = "" if runs == 1 else "s"
    how = (f"the median of {runs} timed round{plural}{', interleaved' if timing['order'] == 'interleaved' else ''} "
           f"(in brackets: {'min-max' if timing['interval'] == 'minmax' else 'bootstrap interval'} over the rounds)"
           if timing else f"the median of {runs or 'an unknown number of'} run{plural}, one model after the other")
    text = (f"segments/s and tokens/s: `mtprune bench` at batch size {first['batch_size']} "
            f"({first['bench_entry']['dtype']} on {first['bench_entry']['device']}); each figure {how}; then the "
            "speed-up over the first model (median of the per-round ratios) and the ideal one from per-token FLOPs.")
    used = dict.fromkeys(f for row in speed.values() for f in row["flags"])
    if used:
        text += " Flags: " + "; ".join(f"{FLAG_SHORT.get(f, f)} = {FLAG_TEXT.get(f, f)}" for f in used) + "."
    return text


def _test_data_text(test_data: dict[str, Any]) -> str:
    parts = [f"{pair}: {d.get('n_segments', '?')} held-out segments of {d.get('data', '?')} "
             f"(hash {d.get('data_hash', '?')})" for pair, d in test_data.items()]
    return "Test data: " + "; ".join(parts) + "."


FAILURE_COLUMNS = (("wrong language", "wrong_language"), ("copies", "copies"), ("repetitions", "repetitions"),
                   ("empty", "empty"), ("too long", "too_long"), ("too short", "too_short"), ("any", "failed"))


def _failures_section(models: list[dict[str, Any]]) -> Section:
    """Per model and pair: how many outputs trip each failure flag (the wrong languages found
    beside their count), and how the language check judged."""
    rows = [[model["name"], pair, str(f["n"])] + [_failure_cell(f, key) for _, key in FAILURE_COLUMNS]
            for model in models for pair, f in (model.get("failures") or {}).items()]
    header = ["model", "pair", "segments", *(label for label, _ in FAILURE_COLUMNS)]
    section = Section("Translation failures", tables=[Table(header, rows, "ll" + "r" * (len(header) - 2))])
    section.paragraphs.append(_language_check_text(models))
    return section


def _failure_cell(failures: dict[str, Any], key: str) -> str:
    """'12 (3.4%)'; the wrong language's cell adds the languages found: '12 (3.4%; en 10, fr 2)'."""
    count, n = failures.get(key), failures["n"]
    if count is None:
        return MISSING
    text = f"{count} ({count / n:.1%}" if n else str(count)
    found = ((failures.get("language") or {}).get("wrong") or {}) if key == "wrong_language" else {}
    if found:
        text += "; " + ", ".join(f"{label} {k}" for label, k in found.items())
    return text + (")" if n else "")


def _language_check_text(models: list[dict[str, Any]]) -> str:
    """The identifier and its rule, and the pairs it did not check, with why."""
    checks = [(pair, f.get("language")) for m in models for pair, f in (m.get("failures") or {}).items()]
    ran = next((c for _, c in checks if c and c.get("status") == "checked"), None)
    text = ("wrong language: outputs that a language identifier places in another language than the target; "
            "empty, too long/short (character ratio to the source), copies of the source and repetition loops "
            "as in `mtprune evaluate`; any: outputs with at least one flag.")
    if ran:
        text += (f" Identifier: {ran['identifier']}; judged are outputs of at least {ran['min_letters']} letters "
                 f"where it is at least {ran['min_confidence']:.0%} sure.")
    skipped = {f"{pair} ({c['reason']})" for pair, c in checks if c and c.get("status") == "skipped"}
    if skipped:
        text += " Not checked: " + "; ".join(sorted(skipped)) + "."
    if any(c is None for _, c in checks):
        text += f" {MISSING}: evaluated before the language check existed."
    return text


def _search_section(plan: dict[str, Any], plots: Sequence[str]) -> Section:
    rounds = plan.get("rounds", [])
    baseline = (plan.get("baseline") or {}).get("score")
    rows = [["0", MISSING, _num(baseline), str(plan.get("model", {}).get("num_layers", MISSING))]] if rounds else []
    rows += [[str(r["round"]), str(r["removed"]), _num(r.get("score_after")), str(r["num_layers_before"] - 1)]
             for r in rounds]
    section = Section("Search", plots=[p for p in ("heatmap", "quality") if p in plots])
    section.paragraphs.append(
        f"Removed layers in order (original 0-based ids): {plan.get('removed')}. "
        "The full search report is `search/report.md`.")
    if rows:
        metric = plan.get("metric") or "score"
        section.tables.append(Table(["round", "removed", f"dev {metric} after removal", "layers"], rows, "rrrr"))
    return section


def _verdict_section(verdict) -> Section:
    from ..eval.verdict import MAX_LOOPS, MIN_SHARE, verdict_lines

    lines = verdict_lines(verdict)
    return Section("Does pruning pay?", paragraphs=[
        f"Targets: at least {MIN_SHARE:.0%} of the fair reference's score (the unpruned model with the same "
        f"recovery), at most {MAX_LOOPS} repetition loops, and a batch-1 latency below the reference's.",
        lines[0]], bullets=[line.strip() for line in lines[1:]])


def _stages_section(stages: list[dict[str, Any]]) -> Section:
    rows = [[s["name"], s.get("status", ""), _minutes(s.get("seconds"))] for s in stages]
    return Section("Stages", tables=[Table(["stage", "status", "time"], rows, "llr")])


def _provenance_section(summary: dict[str, Any]) -> Section:
    bullets = []
    recipe = summary.get("recipe")
    if recipe:
        bullets.append(f"recipe: `{recipe.get('path')}` (hash {recipe.get('hash')})")
    bullets += [f"command: `{c}`" for c in summary.get("commands", [])]
    for model in summary["models"]:
        if model.get("path"):
            bullets.append(f"{model['name']}: `{model['path']}`")
    signatures = sorted({s["signature"] for m in summary["models"] for pair in (m.get("scores") or {}).values()
                         for s in pair.values() if s.get("signature")})
    bullets += [f"metric signature: `{sig}`" for sig in signatures]
    versions = summary.get("versions") or {}
    if versions:
        bullets.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return Section("Provenance", bullets=bullets)


def _bytes(n: int | None) -> str:
    return human_bytes(n, MISSING)


def _minutes(seconds: float | None) -> str:
    return MISSING if seconds is None else f"{seconds / 60:.1f} min"


def render_markdown(summary: dict[str, Any], sections: list[Section], plot_files: dict[str, str]) -> str:
    parts = [f"# {summary.get('title', 'mtprune run')}", ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        parts += [p + "\n" for p in s.paragraphs]
        parts += [_table(t.header, t.rows, t.align) + "\n" for t in s.tables]
        parts += [f"- {b}" for b in s.bullets] + ([""] if s.bullets else [])
        parts += [f"![{PLOTS[p][1]}]({plot_files[p]})\n" for p in s.plots if p in plot_files]
    return "\n".join(parts).rstrip() + "\n"


def render_html(summary: dict[str, Any], sections: list[Section], images: dict[str, bytes]) -> str:
    """One self-contained HTML file: the plots are embedded as data URIs."""
    title = html.escape(summary.get("title", "mtprune run"))
    body = [f"<h1>{title}</h1>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += [f"<p>{_inline(p)}</p>" for p in s.paragraphs]
        body += [_html_table(t) for t in s.tables]
        if s.bullets:
            body.append("<ul>" + "".join(f"<li>{_inline(b)}</li>" for b in s.bullets) + "</ul>")
        for key in s.plots:
            if key in images:
                data = base64.b64encode(images[key]).decode("ascii")
                caption = html.escape(PLOTS[key][1])
                body.append(f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{caption}</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{_CSS}</style>"
            f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}"
        "td.r{text-align:right}th{background:#f3f3f3}code{background:#f3f3f3;padding:0 .2rem}"
        "img{max-width:100%}figcaption{color:#555;font-size:.9rem}")


def _inline(text: str) -> str:
    """Markdown-style `code` spans to <code>, everything else escaped."""
    pieces = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(pieces))


def _html_table(t: Table) -> str:
    align = t.align or "l" * len(t.header)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    rows = "".join("<tr>" + "".join(f'<td class="{a}">{_inline(c)}</td>' for c, a in zip(row, align)) + "</tr>"
                   for row in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
