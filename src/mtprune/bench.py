"""Deployment speed: the WMT 2025 compression task's protocol, model by model.

For each model and batch size: ``--warmup`` untimed calls on the first batch, then ``--runs``
timed passes over the data in consecutive batches of that size (the order a deployment
receives them).  Per model and batch size: generated tokens/s and segments/s (median over
runs), latency per batch (median, p95 over every batch of every run), peak memory while
translating (process RSS on CPU, torch's peak allocation on GPU), and the quality of the
first run's outputs.  Per model: layers, parameters, size on disk, and the per-token matmul
FLOPs that give the IDEAL speed-up over the first model.

Ideal speed-up: the ratio of per-token decoding FLOPs (every linear layer including the LM
head, plus attention over the context at the measured lengths), not the ratio of layer
counts: on gemma-3-270m the 262k-token LM head is most of a token's compute, so removing 2
of 18 layers can at best make decoding ~4% faster; on an 8B model with a 256k vocabulary
the head is a small part and the gain approaches L / L'.
"""
from __future__ import annotations

import gc
import logging
import math
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .backends import BackendConfig
from .data import DataSpec
from .errors import ConfigError
from .models import countable_model, skeleton_model  # noqa: F401  (tests, benchmarks import skeleton_model here)

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 16, 64)


@dataclass
class BenchConfig:
    """Everything ``mtprune bench`` needs; ``validate`` checks it before any model loads."""

    models: list[str]
    data: DataSpec
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    warmup: int = 1
    runs: int = 3
    backend: BackendConfig | str = "hf"  # a name, or with vLLM's engine options
    dtype: str = "auto"
    device: str = "auto"
    prompt: str = "auto"
    shots: int = 3
    shots_from: str | None = None
    max_new_tokens: int | None = None
    fixed_new_tokens: int | None = None  # equal work: exactly N tokens per segment, stop rules off
    metric: str = "chrf++"

    def validate(self) -> None:
        errors = []
        if not self.models:
            errors.append("give at least one MODEL")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            errors.append(f"--batch-sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.runs < 1:
            errors.append(f"--runs must be at least 1, got {self.runs}")
        if self.warmup < 0:
            errors.append(f"--warmup must be >= 0, got {self.warmup}")
        if self.fixed_new_tokens is not None and self.fixed_new_tokens < 1:
            errors.append(f"--fixed-new-tokens must be at least 1, got {self.fixed_new_tokens}")
        if self.fixed_new_tokens is not None and self.max_new_tokens is not None:
            errors.append("give --fixed-new-tokens or --max-new-tokens, not both")
        errors += self.backend_config.errors()
        if errors:
            raise ConfigError("; ".join(errors))

    @property
    def backend_config(self) -> BackendConfig:
        return BackendConfig(self.backend) if isinstance(self.backend, str) else self.backend


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,16,64' -> (1, 16, 64); a clear error for anything else."""
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--batch-sizes {text!r}: give comma-separated integers, e.g. 1,16,64") from None
    if not sizes or any(b < 1 for b in sizes):
        raise ConfigError(f"--batch-sizes {text!r}: give comma-separated positive integers, e.g. 1,16,64")
    return sizes


# ----------------------------------------------------------------------------------------
# Pure numerical core: percentiles and FLOPs
# ----------------------------------------------------------------------------------------

def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class ModelShape:
    """What a decoding step multiplies: per layer the linear layers' in x out products, the
    attention width (heads x head_dim) and window (None: full attention), and the LM head."""

    linear_per_layer: tuple[int, ...]
    attention_width: tuple[int, ...]
    window: tuple[int | None, ...]
    head: int  # vocab x hidden

    @property
    def layers(self) -> int:
        return len(self.linear_per_layer)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelShape:
        """From ``asdict(shape)`` as a bench JSON holds it (lists for tuples)."""
        return cls(tuple(d["linear_per_layer"]), tuple(d["attention_width"]), tuple(d["window"]), d["head"])


def per_token_flops(shape: ModelShape, context: float) -> dict[str, float]:
    """Matmul FLOPs of one decoded token at ``context`` tokens attended:
    2 x in x out per linear layer and the LM head; attention 4 x width x min(context, window)
    per layer (scores q.K and the weighted sum of V)."""
    linear = 2.0 * sum(shape.linear_per_layer)
    head = 2.0 * shape.head
    attention = sum(4.0 * width * (min(context, window) if window else context)
                    for width, window in zip(shape.attention_width, shape.window))
    return {"linear": linear, "head": head, "attention": attention, "total": linear + head + attention}


def model_shape(model) -> ModelShape:
    """The ModelShape of a transformers causal LM (dense; an MoE's experts all count)."""
    import torch.nn as nn

    from .layers import find_layer_stack

    config = model.config.get_text_config()
    layers = list(find_layer_stack(model).layers)
    linear = tuple(sum(m.in_features * m.out_features for m in layer.modules() if isinstance(m, nn.Linear))
                   for layer in layers)
    heads = getattr(config, "num_attention_heads")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    types = getattr(config, "layer_types", None) or ["full_attention"] * len(layers)
    sliding = getattr(config, "sliding_window", None)
    window = tuple(sliding if "sliding" in str(t) and sliding else None for t in types[: len(layers)])
    out = model.get_output_embeddings()
    head = out.weight.shape[0] * out.weight.shape[1] if out is not None else 0
    return ModelShape(linear, (heads * head_dim,) * len(layers), window, head)


# ----------------------------------------------------------------------------------------
# Memory and machine
# ----------------------------------------------------------------------------------------

class PeakMemory:
    """Peak memory of this process from ``reset()`` on: torch's peak allocation on a CUDA
    device; else the peak resident set size (Linux VmHWM, reset through clear_refs; elsewhere
    the process's lifetime peak, which is then said in ``kind``)."""

    def __init__(self, device: str, engine_process: bool = False):
        """``engine_process``: the model runs in another process (vLLM's GPU engine), whose
        memory this process cannot see: ``peak_bytes`` is then None."""
        self.device = device
        self.engine_process = engine_process
        if engine_process:
            self.kind = "not measured (vLLM's engine process; see nvidia-smi)"
        else:
            self.kind = "cuda max_memory_allocated" if device.startswith("cuda") else "process peak RSS"

    def reset(self) -> None:
        if self.engine_process:
            return
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.kind = "process peak RSS (since start: could not be reset here)"

    def peak_bytes(self) -> int | None:
        if self.engine_process:
            return None
        if self.device.startswith("cuda"):
            import torch

            return int(torch.cuda.max_memory_allocated(self.device))
        try:
            status = Path("/proc/self/status").read_text()
            return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
        except (OSError, AttributeError):
            import resource
            import sys

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return peak if sys.platform == "darwin" else peak * 1024


def machine_info(device: str) -> dict[str, Any]:
    """Where the figures were measured: CPU and its relevant flags, threads, GPU."""
    import os

    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "device": device}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
        flags = set(re.search(r"flags\s*:\s*(.+)", cpuinfo).group(1).split())
        info["cpu"] = model.group(1).strip() if model else platform.processor()
        info["cpu_flags"] = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni"})
    except (OSError, AttributeError):
        info["cpu"] = platform.processor()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------------------
# Measuring one model
# ----------------------------------------------------------------------------------------

def _batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _mean_context(loaded, translator, sources: Sequence[str], generated_tokens: int) -> float:
    """Mean tokens attended per decoded token: prompt length + half the generated length."""
    prompter = translator.prompter
    prompts = [prompter.render(s) for s in sources]
    lengths = [len(ids) for ids in loaded.tokenizer(prompts, add_special_tokens=prompter.add_special_tokens)["input_ids"]]
    return sum(lengths) / len(lengths) + generated_tokens / len(sources) / 2


def measure_batch_size(translator, pair, batch_size: int, cfg: BenchConfig, memory: PeakMemory) -> dict[str, Any]:
    """Warm-up, then ``cfg.runs`` timed passes over ``pair`` in batches of ``batch_size``."""
    from .evaluate import score_hypotheses

    batches = _batches(pair.sources, batch_size)
    for _ in range(cfg.warmup):
        translator.translate(batches[0])
    memory.reset()
    latencies, rates, seg_rates, first_hyps, tokens = [], [], [], None, 0
    for run in range(cfg.runs):
        hyps, run_tokens, run_seconds = [], 0, 0.0
        for batch in batches:
            start = time.perf_counter()
            result = translator.translate(batch)
            seconds = time.perf_counter() - start
            latencies.append(seconds)
            run_seconds += seconds
            run_tokens += result.generated_tokens
            hyps += result.hypotheses
        rates.append(run_tokens / run_seconds)
        seg_rates.append(len(hyps) / run_seconds)
        if first_hyps is None:
            first_hyps, tokens = hyps, run_tokens
    # outputs of a fixed length are not translations: not scored
    scored = all(s.reference for s in pair.segments) and cfg.fixed_new_tokens is None
    quality = score_hypotheses(pair, first_hyps, [cfg.metric])["scores"][cfg.metric]["value"] if scored else None
    return {
        "batch_size": batch_size,
        "tokens_per_s": round(median(rates), 3),
        "segments_per_s": round(median(seg_rates), 4),
        "latency_median_s": round(median(latencies), 4),
        "latency_p95_s": round(percentile(latencies, 95), 4),
        "peak_memory_bytes": memory.peak_bytes(),
        "generated_tokens": tokens,
        "runs_tokens_per_s": [round(r, 3) for r in rates],
        "quality": quality,
        "hypotheses": first_hyps,
    }


def bench_model(spec: str, pair, cfg: BenchConfig) -> dict[str, Any]:
    """Load ``spec`` and measure it at every batch size."""
    from .evaluate import make_translator
    from .export import count_parameters
    from .files import folder_size
    from .models import load_model

    backend = cfg.backend_config
    weights = backend.needs_weights()
    loaded = load_model(spec, dtype=cfg.dtype, device=cfg.device, weights=weights)
    model = countable_model(loaded)
    shape = model_shape(model)
    # vLLM on CPU runs in this process (the backend turns multiprocessing off); on a GPU it does not
    memory = PeakMemory(loaded.device, engine_process=not weights and loaded.device.startswith("cuda"))
    entry: dict[str, Any] = {
        "model": spec, "checkpoint": loaded.checkpoint, "fingerprint": loaded.fingerprint,
        "dtype": loaded.dtype, "device": loaded.device, "layers": shape.layers,
        "parameters": count_parameters(model)["total"], "size_on_disk_bytes": folder_size(loaded.checkpoint),
        "shape": asdict(shape), "memory_kind": memory.kind, "batches": [],
    }
    for batch_size in cfg.batch_sizes:
        translator = make_translator(loaded, pair, prompt=cfg.prompt, shots=cfg.shots, shots_from=cfg.shots_from,
                                     backend=backend, batch_size=batch_size, max_new_tokens=cfg.max_new_tokens,
                                     fixed_new_tokens=cfg.fixed_new_tokens, progress=False)
        row = measure_batch_size(translator, pair, batch_size, cfg, memory)
        row["mean_context"] = round(_mean_context(loaded, translator, pair.sources, row["generated_tokens"]), 1)
        entry["batches"].append(row)
        entry.setdefault("translator", translator.describe())
        logger.info("%s batch %d: %.1f tokens/s, %.2f segments/s, latency median %.2f s, %s %s", spec, batch_size,
                    row["tokens_per_s"], row["segments_per_s"], row["latency_median_s"], cfg.metric,
                    _fmt(row["quality"]))
    del loaded, model, translator
    gc.collect()
    return entry


def add_ratios(models: list[dict[str, Any]]) -> None:
    """Each model's measured speed-up over the first one and the ideal one (per-token FLOPs
    at the first model's measured context for that batch size, so that both models are
    charged the same attention), and their quotient ``gain_over_ideal``."""
    base = models[0]
    base_shape = ModelShape.from_dict(base["shape"])
    for entry in models:
        shape = ModelShape.from_dict(entry["shape"])
        for row, base_row in zip(entry["batches"], base["batches"]):
            context = base_row["mean_context"]
            flops = per_token_flops(shape, context)
            row["flops_per_token"] = flops
            row["speedup"] = round(row["tokens_per_s"] / base_row["tokens_per_s"], 4)
            row["ideal_speedup"] = round(per_token_flops(base_shape, context)["total"] / flops["total"], 4)
            row["gain_over_ideal"] = (round((row["speedup"] - 1) / (row["ideal_speedup"] - 1), 3)
                                      if abs(row["ideal_speedup"] - 1) > 1e-9 else None)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Measure every model of ``cfg``; the result is what ``--json`` writes."""
    from .evaluate import load_pair
    from .export import software_versions

    cfg.validate()
    pair = load_pair(cfg.data)
    models = []
    for i, spec in enumerate(cfg.models, 1):
        logger.info("[%d/%d] %s: batch sizes %s, %d warm-up + %d timed runs of %d segments", i, len(cfg.models), spec,
                    ",".join(map(str, cfg.batch_sizes)), cfg.warmup, cfg.runs, len(pair.segments))
        models.append(bench_model(spec, pair, cfg))
    add_ratios(models)
    config = {**asdict(cfg), "data": asdict(cfg.data), "backend": asdict(cfg.backend_config)}
    return {"config": config, "data": pair.describe(), "versions": software_versions(),
            "machine": machine_info(models[0]["device"]), "metric": cfg.metric, "models": models}


# ----------------------------------------------------------------------------------------
# Output: table, Markdown, plot
# ----------------------------------------------------------------------------------------

def backend_label(backend: dict[str, Any] | str) -> str:
    """'hf', or 'vllm (max_model_len 512)': the backend of a result's config and its engine options."""
    if isinstance(backend, str):
        return backend
    options = ", ".join(f"{key} {value}" for key, value in backend.items() if key != "name" and value is not None)
    return f"{backend['name']} ({options})" if options else backend["name"]


def _fmt(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for entry in result["models"]:
        for row in entry["batches"]:
            rows.append([
                Path(entry["model"]).name or entry["model"], str(entry["layers"]), f"{entry['parameters'] / 1e6:.1f}M",
                _mib(entry["size_on_disk_bytes"]), str(row["batch_size"]), f"{row['tokens_per_s']:.1f}",
                f"{row['segments_per_s']:.2f}", f"{row['latency_median_s']:.2f}", f"{row['latency_p95_s']:.2f}",
                _mib(row["peak_memory_bytes"]), _fmt(row["quality"]), f"{row['speedup']:.2f}x",
                f"{row['ideal_speedup']:.2f}x", _fmt(row["gain_over_ideal"]),
            ])
    return rows


HEADER = ["model", "layers", "params", "disk MiB", "batch", "tok/s", "seg/s", "lat med s", "lat p95 s",
          "peak MiB", "QUALITY", "speed-up", "ideal", "gain/ideal"]


def _header(result: dict[str, Any]) -> list[str]:
    return [result["metric"] if h == "QUALITY" else h for h in HEADER]


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table for the terminal, and where the figures come from."""
    header, rows = _header(result), table_rows(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    return "\n".join(lines + _footer(result))


def _footer(result: dict[str, Any]) -> list[str]:
    m, data, cfg = result["machine"], result["data"], result["config"]
    first = result["models"][0]
    return [
        f"data: {data['n_segments']} segments of {data['data']} (hash {data['data_hash']}); backend {backend_label(cfg['backend'])}, "
        f"{cfg['warmup']} warm-up + {cfg['runs']} timed runs; tok/s = generated tokens/s (median of runs)",
        f"machine: {m.get('cpu', '?')} ({m['cpu_count']} CPUs, torch threads {m['torch_threads']}, flags "
        f"{','.join(m.get('cpu_flags', [])) or '-'}){', GPU ' + m['gpu'] if m.get('gpu') else ''}; "
        f"dtype {first['dtype']} on {first['device']}; peak memory = {first['memory_kind']}",
        "speed-up and ideal are relative to the first model; ideal = ratio of per-token matmul FLOPs (linear layers, "
        "LM head, attention at the measured context); gain/ideal = (speed-up - 1) / (ideal - 1)",
        _work_line(cfg),
    ]


def _work_line(cfg: dict[str, Any]) -> str:
    """What each model generated: its own translations, or a fixed number of tokens (equal work)."""
    fixed = cfg.get("fixed_new_tokens")
    if fixed:
        return (f"work: exactly {fixed} new tokens per segment, stop rules off, the same for every model "
                "(outputs are not translations: no quality)")
    return ("work: each model's own translations (stop at EOS/end of turn; a model that writes shorter or longer "
            "outputs does other work: compare speeds with --fixed-new-tokens N)")


def render_markdown(result: dict[str, Any], plot_name: str | None = None) -> str:
    from .report import _table

    parts = ["# mtprune bench", "", _table(_header(result), table_rows(result), "l" + "r" * (len(HEADER) - 1)), ""]
    parts += [f"- {line}" for line in _footer(result)]
    parts.append(f"- versions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}")
    if plot_name:
        parts += ["", f"![tokens/s by batch size]({plot_name})"]
    return "\n".join(parts) + "\n"


def plot_speed(result: dict[str, Any], path: Path) -> None:
    """Generated tokens/s against batch size, one line per model (log-log)."""
    from .report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for entry in result["models"]:
        xs = [r["batch_size"] for r in entry["batches"]]
        ys = [r["tokens_per_s"] for r in entry["batches"]]
        ax.plot(xs, ys, marker="o", label=f"{Path(entry['model']).name or entry['model']} ({entry['layers']} layers)")
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
