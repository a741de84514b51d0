"""Deployment speed: the WMT 2025 compression task's protocol, with figures a user can trust.

For each model and batch size: ``--warmup`` untimed passes over the data, then ``--runs``
timed passes over the data in consecutive batches of that size (the order a deployment
receives them).  The models are timed INTERLEAVED: all loaded at once, one pass per model per
round, the models taking turns batch by batch in an order rotating each round and batch
(``bench_stats.schedule``), so that the machine's drift (a shared CPU's load, a GPU's clocks)
hits every model alike; ``order="sequential"`` loads one
model at a time instead (and says so), as does the vLLM backend (one engine per process).
Per model and batch size: generated tokens/s (median over rounds and its range) and segments/s,
latency per batch (median, p95 over every batch of every round), the shared process's peak memory
while translating (process RSS on CPU, torch's peak allocation on GPU; less the other loaded
models' weights: Python, torch and what the other models left behind stay in it), and the quality
of the first round's outputs.  Per model: layers, parameters, size on disk, and the per-token
matmul FLOPs (``flops``) that give the IDEAL speed-up over the first model.  Then (``costs``, on by
default) what each model costs ALONE, each in its own fresh process as WMT26 measures a deliverable:
peak memory, size on disk, load time, chars/s at the largest batch (with and without loading) and
batch-1 latency with its ideal speed-up.  The measured speed-up
is the median of the per-round ratios, with their range; a figure whose range includes 1.0 or
that lies above its ideal is flagged (``bench_stats.speedup_flags``).

Ideal speed-up: generated tokens per matmul FLOP against the first model's (``ideal_speedup``:
each segment's prompt prefill and its decoding steps; every linear layer including the LM head,
attention at the measured lengths), not the ratio of layer counts: on gemma-3-270m the 262k-token LM head is most of a token's compute, so removing 2
of 18 layers can at best make decoding ~4% faster; on an 8B model with a 256k vocabulary
the head is a small part and the gain approaches L / L'.  Long prompts (few-shot examples) move
the ideal towards L / L' too: their prefill runs through every layer and the head only once.
"""
from __future__ import annotations

import gc
import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..translate.backends import BackendConfig
from .stats import (FLAG_SHORT, FLAG_TEXT, INTERVALS, median, minmax_coverage, per_round_ratios, percentile,
                          schedule, speedup_flags, summarize)
from .costs import HEADER as COST_HEADER
from .costs import TITLE as COST_TITLE
from .costs import (DEFAULT_LATENCY_SEGMENTS, CostRequest, add_cost_ratios, cost_notes, cost_rows, has_costs,
                    measure_costs)
from ..data.specs import DataSpec
from ..errors import ConfigError
from ..model.shape import (ModelShape, ideal_speedup, lengths, mean_prompt_tokens, model_shape,  # noqa: F401  (re-exported)
                    per_token_flops, segment_flops)
from ..model.load import countable_model, skeleton_model  # noqa: F401  (tests, benchmarks import skeleton_model here)
from ..translate.retrieval import DEFAULT_SHOTS_BY, shots_by_errors

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = (1, 16, 64)
ORDERS = ("interleaved", "sequential")


@dataclass
class BenchConfig:
    """Everything ``mtprune bench`` needs; ``validate`` checks it before any model loads."""

    models: list[str]
    data: DataSpec
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    warmup: int = 1
    runs: int = 5  # rounds: min-max over 5 holds the median ratio with 94% probability (bench_stats)
    backend: BackendConfig | str = "hf"  # a name, or with vLLM's engine options
    dtype: str = "auto"
    device: str = "auto"
    prompt: str = "auto"
    shots: int = 3
    shots_from: str | None = None
    shots_by: str = DEFAULT_SHOTS_BY  # random | similar (each segment's most similar examples)
    context: int = 0  # previous sentences of the document shown with each segment (documents.py)
    context_target: str = "none"  # none | model (the model's own translations of them too)
    max_new_tokens: int | None = None
    fixed_new_tokens: int | None = None  # equal work: exactly N tokens per segment, stop rules off
    metric: str = "chrf++"
    comet: Any = None  # CometSettings of a COMET --metric (default: its default model)
    order: str = "interleaved"  # or sequential: one model loaded at a time (for models that do not fit together)
    interval: str = "minmax"  # or bootstrap (of the median, seeded)
    seed: int = 0
    costs: bool = True  # also each model alone in its own process (costs.py): memory, disk, load, chars/s, batch 1
    latency_segments: int = DEFAULT_LATENCY_SEGMENTS  # segments translated one at a time for the batch-1 latency

    def validate(self) -> None:
        errors = []
        if not self.models:
            errors.append("give at least one MODEL")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            errors.append(f"--batch-sizes must be positive integers, got {list(self.batch_sizes)}")
        if self.runs < 1:
            errors.append(f"--runs must be at least 1, got {self.runs}")
        if self.latency_segments < 1:
            errors.append(f"--latency-segments must be at least 1, got {self.latency_segments}")
        if self.warmup < 0:
            errors.append(f"--warmup must be >= 0, got {self.warmup}")
        if self.fixed_new_tokens is not None and self.fixed_new_tokens < 1:
            errors.append(f"--fixed-new-tokens must be at least 1, got {self.fixed_new_tokens}")
        if self.fixed_new_tokens is not None and self.max_new_tokens is not None:
            errors.append("give --fixed-new-tokens or --max-new-tokens, not both")
        errors += shots_by_errors(self.shots_by)
        errors += self.context_settings.errors()
        if self.order not in ORDERS:
            errors.append(f"order {self.order!r}: valid: {', '.join(ORDERS)}")
        if self.interval not in INTERVALS:
            errors.append(f"--interval {self.interval!r}: valid: {', '.join(INTERVALS)}")
        errors += self.backend_config.errors()
        if errors:
            raise ConfigError("; ".join(errors))

    @property
    def timing_order(self) -> str:
        """interleaved, or sequential where asked or where the backend holds one model per
        process (vLLM: interleaving would restart its engine at every pass)."""
        return "sequential" if self.order == "sequential" or self.backend_config.name == "vllm" else "interleaved"

    @property
    def context_settings(self):
        from ..translate.documents import ContextSettings

        return ContextSettings(self.context, self.context_target)

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
    """Where the figures were measured: CPU and its relevant flags, threads, huge pages, GPU."""
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
    else:
        info["huge_pages"] = huge_pages_note()
    return info


def huge_pages_note() -> str:
    """'thp madvise, THP_MEM_ALLOC_ENABLE=1': whether CPU weights can live in 2 MB pages."""
    from ..model.load import HUGE_PAGES_ENV

    try:
        mode = re.search(r"\[(\w+)\]", Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()).group(1)
    except (OSError, AttributeError):
        mode = "unknown"
    return f"thp {mode}, {HUGE_PAGES_ENV}={os.environ.get(HUGE_PAGES_ENV, 'unset')}"


# ----------------------------------------------------------------------------------------
# Measuring: models opened, warmed up, then timed pass by pass in the schedule's order
# ----------------------------------------------------------------------------------------

def _batches(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@dataclass
class Timings:
    """The timed batches of one model at one batch size, summed round by round."""

    rates: list[float] = field(default_factory=list)  # generated tokens/s per round
    segment_rates: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # every batch of every round
    peak_bytes: int | None = None
    hypotheses: list[str] | None = None  # the first round's
    tokens: int = 0  # generated in the first round
    _round: list[float] = field(default_factory=lambda: [0, 0, 0.0])  # tokens, segments, seconds so far
    _hyps: list[str] = field(default_factory=list)

    def add_batch(self, translator, batch: list[str]) -> None:
        start = time.perf_counter()
        result = translator.translate(batch)
        self.latencies.append(time.perf_counter() - start)
        self._round[0] += result.generated_tokens
        self._round[1] += len(result.hypotheses)
        self._round[2] += self.latencies[-1]
        if self.hypotheses is None:
            self._hyps += result.hypotheses

    def end_round(self) -> None:
        """One pass over the data is complete: its rates become this round's."""
        tokens, segments, seconds = self._round
        self.rates.append(tokens / seconds)
        self.segment_rates.append(segments / seconds)
        if self.hypotheses is None:
            self.hypotheses, self.tokens = self._hyps, tokens
        self._round, self._hyps = [0, 0, 0.0], []


@dataclass
class OpenModel:
    """A model loaded for the bench: its figures so far and a translator per batch size."""

    spec: str
    loaded: Any
    entry: dict[str, Any]
    translators: dict[int, Any]
    memory: PeakMemory
    weight_bytes: int  # what it holds in memory while another model is timed
    timings: dict[int, Timings] = field(default_factory=dict)


def open_model(spec: str, pair, cfg: BenchConfig) -> OpenModel:
    """Load ``spec`` and make its translator for every batch size (nothing timed yet)."""
    from ..model.export import count_parameters
    from ..files import folder_size
    from ..model.load import load_model

    backend = cfg.backend_config
    weights = backend.needs_weights()
    loaded = load_model(spec, dtype=cfg.dtype, device=cfg.device, weights=weights)
    model = countable_model(loaded)
    shape = model_shape(model)
    # vLLM on CPU runs in this process (the backend turns multiprocessing off); on a GPU it does not
    memory = PeakMemory(loaded.device, engine_process=not weights and loaded.device.startswith("cuda"))
    translators = {b: _translator(loaded, pair, cfg, b) for b in cfg.batch_sizes}
    entry: dict[str, Any] = {
        "model": spec, "checkpoint": loaded.checkpoint, "fingerprint": loaded.fingerprint,
        "dtype": loaded.dtype, "device": loaded.device, "layers": shape.layers,
        "parameters": count_parameters(model)["total"], "size_on_disk_bytes": folder_size(loaded.checkpoint),
        "shape": asdict(shape), "memory_kind": memory.kind, "batches": [],
        "translator": translators[cfg.batch_sizes[0]].describe(),
    }
    held = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) if weights else 0
    return OpenModel(spec, loaded, entry, translators, memory, held)


def _translator(loaded, pair, cfg: BenchConfig, batch_size: int):
    from ..eval.evaluate import make_translator

    return make_translator(loaded, pair, prompt=cfg.prompt, shots=cfg.shots, shots_from=cfg.shots_from,
                           shots_by=cfg.shots_by, backend=cfg.backend_config, batch_size=batch_size,
                           max_new_tokens=cfg.max_new_tokens, fixed_new_tokens=cfg.fixed_new_tokens, progress=False,
                           context=cfg.context, context_target=cfg.context_target)


def warm_up(m: OpenModel, pair, cfg: BenchConfig) -> None:
    """``cfg.warmup`` untimed passes over the data, at every batch size: every batch shape the
    timed rounds use has been run once (allocations, kernels picked), so round 1 is not slower."""
    for b, translator in m.translators.items():
        for _ in range(cfg.warmup):
            for batch in _batches(pair.sources, b):
                translator.translate(batch)


def time_rounds(models: list[OpenModel], pair, cfg: BenchConfig) -> None:
    """Every timed batch of ``bench_stats.schedule``: round by round, the models taking turns
    batch by batch in a rotating order, so that the machine's drift hits every model alike.  Peak
    memory per batch; where several models are loaded, less the other models' weights (what this
    one would need alone)."""
    chunks = {b: _batches(pair.sources, b) for b in cfg.batch_sizes}
    for m in models:
        m.timings = {b: Timings() for b in cfg.batch_sizes}
    passes = schedule(len(models), cfg.batch_sizes, cfg.runs, {b: len(c) for b, c in chunks.items()})
    for _, b, j, index in passes:
        m = models[index]
        m.memory.reset()
        m.timings[b].add_batch(m.translators[b], chunks[b][j])
        if j == len(chunks[b]) - 1:
            m.timings[b].end_round()
        peak = m.memory.peak_bytes()
        if peak is not None:
            peak -= sum(other.weight_bytes for other in models if other is not m)
            m.timings[b].peak_bytes = max(peak, m.timings[b].peak_bytes or 0)


def time_batch1(models: list[OpenModel], pair, cfg: BenchConfig) -> None:
    """Batch-1 latency, interleaved: the first ``cfg.latency_segments`` segments one at a time,
    the models taking turns segment by segment in an order rotating with each segment (each model
    translates the first segment once, untimed, before).  Drift hits every model alike, as in the
    timed rounds; the per-model processes of ``costs`` then leave batch 1 out."""
    firsts = pair.sources[: cfg.latency_segments]
    translators = [m.translators.get(1) or _translator(m.loaded, pair, cfg, 1) for m in models]
    for translator in translators:
        translator.translate(firsts[:1])
    seconds: list[list[float]] = [[] for _ in models]
    tokens = [0] * len(models)
    for i, segment in enumerate(firsts):
        for k in range(len(models)):
            index = (i + k) % len(models)
            start = time.perf_counter()
            result = translators[index].translate([segment])
            seconds[index].append(time.perf_counter() - start)
            tokens[index] += result.generated_tokens
    for m, translator, times, made in zip(models, translators, seconds, tokens):
        m.entry["batch1"] = {
            "b1_source": "interleaved", "latency_segments": len(firsts),
            "b1_latency_median_s": round(median(times), 4), "b1_latency_s": [round(t, 4) for t in times],
            "b1_tokens_per_s": round(made / sum(times), 3),
            "b1": lengths(mean_prompt_tokens(m.loaded, translator, firsts), made / len(firsts))}


def finish(m: OpenModel, pair, cfg: BenchConfig) -> dict[str, Any]:
    """The model's entry of the result: its figures per batch size with their spread."""
    from ..eval.evaluate import oom_record, score_hypotheses

    # outputs of a fixed length are not translations: not scored
    scored = all(s.reference for s in pair.segments) and cfg.fixed_new_tokens is None
    for b in cfg.batch_sizes:
        t = m.timings[b]
        rate = summarize(t.rates, cfg.interval, cfg.seed)
        segments = summarize(t.segment_rates, cfg.interval, cfg.seed)
        row = {
            "batch_size": b, "runs": len(t.rates),
            "tokens_per_s": round(rate.median, 3), "tokens_per_s_interval": [round(rate.lo, 3), round(rate.hi, 3)],
            "segments_per_s": round(segments.median, 4),
            "segments_per_s_interval": [round(segments.lo, 4), round(segments.hi, 4)],
            "runs_segments_per_s": [round(r, 4) for r in t.segment_rates],
            "latency_median_s": round(median(t.latencies), 4), "latency_p95_s": round(percentile(t.latencies, 95), 4),
            "peak_memory_bytes": t.peak_bytes, "generated_tokens": t.tokens,
            "runs_tokens_per_s": [round(r, 3) for r in t.rates],
            "quality": score_hypotheses(pair, t.hypotheses, [cfg.metric], cfg.comet)["scores"][cfg.metric]["value"]
            if scored else None,
            "hypotheses": t.hypotheses,
            **lengths(mean_prompt_tokens(m.loaded, m.translators[b], pair.sources), t.tokens / len(pair.sources)),
            **oom_record(m.translators[b]),  # halvings during warm-up or timed rounds
        }
        m.entry["batches"].append(row)
        logger.info("%s batch %d: %.1f [%.1f, %.1f] tokens/s over %d runs, %.2f segments/s, latency median %.2f s, "
                    "%s %s", m.spec, b, rate.median, rate.lo, rate.hi, rate.runs, row["segments_per_s"],
                    row["latency_median_s"], cfg.metric, _fmt(row["quality"]))
    return m.entry


def close(m: OpenModel) -> None:
    m.loaded = m.translators = None
    gc.collect()


def bench_models(pair, cfg: BenchConfig) -> list[dict[str, Any]]:
    """Every model of ``cfg`` measured: all loaded at once and timed interleaved, or (order
    sequential) each loaded, timed and freed before the next."""
    together = cfg.timing_order == "interleaved"
    groups = [cfg.models] if together else [[spec] for spec in cfg.models]
    if together:
        logger.info("loading %d models to time them interleaved", len(cfg.models))
    entries = []
    for i, specs in enumerate(groups, 1):
        if not together:
            logger.info("[%d/%d] %s: timed alone (order sequential)", i, len(groups), specs[0])
        models = [open_model(spec, pair, cfg) for spec in specs]
        for m in models:
            if len(models) > 1 and m.weight_bytes:
                m.entry["memory_kind"] += f" less the other {len(models) - 1} loaded models' weights"
            warm_up(m, pair, cfg)
        time_rounds(models, pair, cfg)
        if together and cfg.costs and cfg.latency_segments:
            time_batch1(models, pair, cfg)
        entries += [finish(m, pair, cfg) for m in models]
        for m in models:
            close(m)
    return entries


def add_ratios(models: list[dict[str, Any]], interval: str = "minmax", seed: int = 0,
               interleaved: bool = True) -> None:
    """Each model's speed-up over the first one, round by round (round i of both models:
    timed seconds apart when interleaved), its median and interval; the ideal one
    (``ideal_speedup``: generated tokens per FLOP, prompts' prefill included, each model with its
    own prompts and outputs); ``gain_over_ideal``; and the flags of ``bench_stats.speedup_flags``."""
    base = models[0]
    base_shape = ModelShape.from_dict(base["shape"])
    for entry in models:
        shape = ModelShape.from_dict(entry["shape"])
        for row, base_row in zip(entry["batches"], base["batches"]):
            flops = per_token_flops(shape, row["mean_context"])
            ratios = per_round_ratios(_rounds(row), _rounds(base_row))
            speedup = summarize(ratios, interval, seed)
            row["flops_per_token"] = flops
            row["speedup"] = round(speedup.median, 4)
            row["speedup_interval"] = [round(speedup.lo, 4), round(speedup.hi, 4)]
            row["speedup_runs"] = [round(r, 4) for r in ratios]
            if row.get("runs_segments_per_s") and base_row.get("runs_segments_per_s"):
                # segments/s as translated: each model's own prompts and outputs (no ideal: not equal work)
                per_round = summarize(per_round_ratios(row["runs_segments_per_s"], base_row["runs_segments_per_s"]),
                                      interval, seed)
                row["segment_speedup"] = round(per_round.median, 4)
                row["segment_speedup_interval"] = [round(per_round.lo, 4), round(per_round.hi, 4)]
            row["ideal_speedup"] = round(ideal_speedup(shape, row, base_shape, base_row), 4)
            row["gain_over_ideal"] = (round((row["speedup"] - 1) / (row["ideal_speedup"] - 1), 3)
                                      if abs(row["ideal_speedup"] - 1) > 1e-9 else None)
            row["flags"] = speedup_flags(speedup, row["ideal_speedup"], reference=entry is base,
                                         interleaved=interleaved)
            row["flag_notes"] = [FLAG_TEXT[f] for f in row["flags"]]


def _rounds(row: dict[str, Any]) -> list[float]:
    """A row's tokens/s round by round (a bench JSON before rounds: its one median)."""
    return row.get("runs_tokens_per_s") or [row["tokens_per_s"]]


def add_costs(models: list[dict[str, Any]], cfg: BenchConfig) -> None:
    """Each model's ``costs``: measured alone in its own process, one after the other (costs.py),
    as WMT26 measures a deliverable; and the batch-1 speed-ups over the first model."""
    for i, entry in enumerate(models, 1):
        batch1 = entry.pop("batch1", None)  # measured interleaved: not again alone
        request = CostRequest.from_bench(cfg, entry["model"])
        if batch1:
            request.latency_segments = 0
        logger.info("[%d/%d] %s: cost alone in its own process (batch %d%s)", i, len(models), entry["model"],
                    request.batch_size, f", then {request.latency_segments} segments at batch 1"
                    if request.latency_segments else "")
        entry["costs"] = {**measure_costs(request), **(batch1 or {})}
    add_cost_ratios(models)


def timing_note(cfg: BenchConfig) -> dict[str, Any]:
    """How the figures were timed, for the JSON, the table's footer and the report."""
    note: dict[str, Any] = {"order": cfg.timing_order, "runs": cfg.runs, "warmup": cfg.warmup,
                            "interval": cfg.interval}
    if cfg.timing_order == "interleaved":
        note["turns"] = "batch"  # the models take turns batch by batch (a bench before 2026-11-30: pass by pass)
    if cfg.interval == "minmax":
        note["coverage"] = round(minmax_coverage(cfg.runs), 4)
    if cfg.timing_order == "sequential":
        note["why"] = "asked for" if cfg.order == "sequential" else "vLLM holds one engine per process"
    return note


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Measure every model of ``cfg``; the result is what ``--json`` writes."""
    from ..eval.evaluate import load_pair
    from ..model.export import software_versions
    from ..eval.metrics import check_metrics

    cfg.validate()
    if cfg.fixed_new_tokens is None:
        check_metrics([cfg.metric], cfg.comet)  # a COMET checkpoint is found before any model loads
    pair = load_pair(cfg.data)
    logger.info("%d models, batch sizes %s, %d warm-up + %d timed runs of %d segments, %s", len(cfg.models),
                ",".join(map(str, cfg.batch_sizes)), cfg.warmup, cfg.runs, len(pair.segments), cfg.timing_order)
    models = bench_models(pair, cfg)
    add_ratios(models, cfg.interval, cfg.seed, interleaved=cfg.timing_order == "interleaved" or len(models) == 1)
    if cfg.costs:
        add_costs(models, cfg)
    config = {**asdict(cfg), "data": asdict(cfg.data), "backend": asdict(cfg.backend_config)}
    return {"config": config, "data": pair.describe(), "versions": software_versions(), "timing": timing_note(cfg),
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
                _mib(row["peak_memory_bytes"]), _fmt(row["quality"]),
                interval_text(row["speedup"], row.get("speedup_interval"), ".3f", "x"),
                f"{row['ideal_speedup']:.3f}x", _fmt(row["gain_over_ideal"]), flags_text(row),
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
