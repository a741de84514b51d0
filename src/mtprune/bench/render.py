"""A bench result as people read it: the terminal's tables, Markdown, and tokens/s by batch size (PNG)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .costs import HEADER as COST_HEADER
from .costs import TITLE as COST_TITLE
from .costs import cost_notes, cost_rows, has_costs
from .stats import FLAG_SHORT, FLAG_TEXT


def backend_label(backend: dict[str, Any] | str) -> str:
    """'hf', or 'vllm (max_model_len 512)': the backend of a result's config and its engine options."""
    if isinstance(backend, str):
        return backend
    options = ", ".join(f"{key} {value}" for key, value in backend.items() if key != "name" and value is not None)
    return f"{backend['name']} ({options})" if options else backend["name"]


def number_text(x: Any, spec: str = ".2f") -> str:
    """``x`` formatted, or '-' where it was not measured."""
    return "-" if x is None else format(x, spec)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def interval_text(value: float, interval: Sequence[float] | None, spec: str = ".1f", unit: str = "") -> str:
    """'30.3 [29.8-31.0]', or the value alone where no interval was measured (an older bench JSON)."""
    text = f"{format(value, spec)}{unit}"
    return f"{text} [{format(interval[0], spec)}-{format(interval[1], spec)}]" if interval else text


def flags_text(row: dict[str, Any]) -> str:
    return ",".join(FLAG_SHORT.get(f, f) for f in row.get("flags") or []) or "-"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for entry in result["models"]:
        for row in entry["batches"]:
            rows.append([
                Path(entry["model"]).name or entry["model"], str(entry["layers"]), f"{entry['parameters'] / 1e6:.1f}M",
                _mib(entry["size_on_disk_bytes"]), str(row["batch_size"]),
                interval_text(row["tokens_per_s"], row.get("tokens_per_s_interval")), str(row.get("runs", "?")),
                f"{row['segments_per_s']:.2f}", f"{row['latency_median_s']:.2f}", f"{row['latency_p95_s']:.2f}",
                _mib(row["peak_memory_bytes"]), number_text(row["quality"]),
                interval_text(row["speedup"], row.get("speedup_interval"), ".3f", "x"),
                f"{row['ideal_speedup']:.3f}x", number_text(row["gain_over_ideal"]), flags_text(row),
            ])
    return rows


HEADER = ["model", "layers", "params", "disk MiB", "batch", "tok/s [range]", "runs", "seg/s", "lat med s",
          "lat p95 s", "shared peak MiB", "QUALITY", "speed-up [range]", "ideal", "gain/ideal", "flags"]


def _header(result: dict[str, Any]) -> list[str]:
    return [result["metric"] if h == "QUALITY" else h for h in HEADER]


def format_table(result: dict[str, Any]) -> str:
    """Plain-text tables for the terminal: speed (interleaved) and, where measured, the cost of
    each model alone; and where the figures come from."""
    lines = text_table(_header(result), table_rows(result)) + _footer(result)
    if has_costs(result):
        lines += ["", COST_TITLE, *text_table(COST_HEADER, cost_rows(result)), *cost_notes(result)]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    return lines + ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


def _footer(result: dict[str, Any]) -> list[str]:
    m, data, cfg = result["machine"], result["data"], result["config"]
    first = result["models"][0]
    return [
        f"data: {data['n_segments']} segments of {data['data']} (hash {data['data_hash']}); backend "
        f"{backend_label(cfg['backend'])}; tok/s = generated tokens/s",
        timing_line(result),
        f"machine: {m.get('cpu', '?')} ({m['cpu_count']} CPUs, torch threads {m['torch_threads']}, flags "
        f"{','.join(m.get('cpu_flags', [])) or '-'}{', ' + m['huge_pages'] if m.get('huge_pages') else ''})"
        f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}; "
        f"dtype {first['dtype']} on {first['device']}; shared peak = {first['memory_kind']}, in the bench's one "
        "process" + (" (each model alone: the cost table)" if has_costs(result) else ""),
        "speed-up and ideal are relative to the first model; speed-up = median of the per-round ratios; ideal = ratio "
        "of generated tokens per matmul FLOP (prompt prefill and decoding: linear layers, LM head, attention at the "
        "measured lengths); gain/ideal = "
        "(speed-up - 1) / (ideal - 1)",
        *flag_lines(result),
        _work_line(cfg),
    ]


def timing_line(result: dict[str, Any]) -> str:
    """How the figures were timed and what their range is (a JSON before rounds: its runs)."""
    cfg, t = result["config"], result.get("timing")
    if not t:
        return (f"timing: {cfg['warmup']} warm-up + {cfg['runs']} timed runs per model, one model after the other; "
                "median of runs")
    turns = "taking turns batch by batch" if t.get("turns") == "batch" else "one pass per model per round"
    order = (f"interleaved ({turns}, the order rotating: drift hits every model alike)"
             if t["order"] == "interleaved" else
             f"sequential ({t.get('why', '')}: each model's runs one after the other, drift between models not "
             "cancelled)")
    if t["interval"] == "minmax":
        spread = f"[range] = min-max over the rounds (holds the median with {t['coverage']:.0%} probability)"
    else:
        spread = "[range] = 95% bootstrap interval of the median over the rounds (seeded)"
    return f"timing: {t['warmup']} warm-up + {t['runs']} timed rounds, {order}; figures = median, {spread}"


def flag_lines(result: dict[str, Any]) -> list[str]:
    """One line per flag the table shows: what it means."""
    used = dict.fromkeys(f for e in result["models"] for r in e["batches"] for f in r.get("flags") or [])
    return [f"flag {FLAG_SHORT.get(f, f)}: {FLAG_TEXT.get(f, f)}" for f in used]


def _work_line(cfg: dict[str, Any]) -> str:
    """What each model generated: its own translations, or a fixed number of tokens (equal work)."""
    fixed = cfg.get("fixed_new_tokens")
    if fixed:
        return (f"work: exactly {fixed} new tokens per segment, stop rules off, the same for every model "
                "(outputs are not translations: no quality)")
    return ("work: each model's own translations (stop at EOS/end of turn; a model that writes shorter or longer "
            "outputs does other work: compare speeds with --fixed-new-tokens N)")


def render_markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    from ..pipeline.report import _table

    parts = ["# mtprune bench", "", _table(_header(result), table_rows(result), "l" + "r" * (len(HEADER) - 1)), ""]
    parts += [f"- {line}" for line in _footer(result)]
    parts.append(f"- versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}")
    if has_costs(result):
        parts += ["", f"## {COST_TITLE[0].upper()}{COST_TITLE[1:]}", "",
                  _table(COST_HEADER, cost_rows(result), "l" + "r" * (len(COST_HEADER) - 1)), ""]
        parts += [f"- {line}" for line in cost_notes(result)]
    if plot_name:
        parts += ["", f"![tokens/s by batch size]({plot_name})"]
    return "\n".join(parts) + "\n"


def error_bars(rows: Sequence[dict[str, Any]], key: str) -> list[list[float]]:
    """matplotlib's yerr/xerr of ``rows[key]``: distances down and up to ``rows[key + '_interval']``
    (0 where a bench JSON before rounds has none)."""
    spans = [r.get(f"{key}_interval") or [r[key], r[key]] for r in rows]
    return [[r[key] - lo for r, (lo, _) in zip(rows, spans)], [hi - r[key] for r, (_, hi) in zip(rows, spans)]]


def plot_speed(result: dict[str, Any], path: Path) -> None:
    """Generated tokens/s against batch size, one line per model (log-log), each point with its
    range over the rounds."""
    from ..pipeline.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for entry in result["models"]:
        xs = [r["batch_size"] for r in entry["batches"]]
        ys = [r["tokens_per_s"] for r in entry["batches"]]
        ax.errorbar(xs, ys, yerr=error_bars(entry["batches"], "tokens_per_s"), marker="o", capsize=3,
                    label=f"{Path(entry['model']).name or entry['model']} ({entry['layers']} layers)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("generated tokens / s")
    first = result["models"][0]
    ax.set_title(f"{backend_label(result['config']['backend'])} backend, {first['dtype']} on {first['device']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
