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
attention at the measured lengths), not the ratio of layer counts: on gemma-3-270m the 262k-token
LM head is most of a token's compute, so removing 2 of 18 layers can at best make decoding ~4%
faster; on an 8B model with a 256k vocabulary the head is a small part and the gain approaches
L / L'.  Long prompts (few-shot examples) move the ideal towards L / L' too: their prefill runs
through every layer and the head only once.

The settings are ``config.BenchConfig``; the tables, Markdown and plot of a result ``render``.
"""
from __future__ import annotations

import gc
import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.load import countable_model
from ..model.shape import ModelShape, ideal_speedup, lengths, mean_prompt_tokens, model_shape, per_token_flops
from .config import BenchConfig
from .alone import CostRequest
from .costs import add_cost_ratios, measure_costs
from .render import number_text
from .stats import FLAG_TEXT, median, minmax_coverage, per_round_ratios, percentile, schedule, speedup_flags, summarize

logger = logging.getLogger(__name__)


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
        "shape": shape.flop_record(), "memory_kind": memory.kind, "batches": [],
        "translator": translators[cfg.batch_sizes[0]].describe(),
    }
    held = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) if weights else 0
    return OpenModel(spec, loaded, entry, translators, memory, held)


def _translator(loaded, pair, cfg: BenchConfig, batch_size: int):
    from ..translate.translator import make_translator

    return make_translator(loaded, pair, cfg.translation, backend=cfg.backend_config, progress=False,
                           fixed_new_tokens=cfg.fixed_new_tokens, batch_size=batch_size)


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
    from ..translate.translator import oom_record
    from ..eval.evaluate import score_hypotheses

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
                    row["latency_median_s"], cfg.metric, number_text(row["quality"]))
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
    from ..translate.translator import load_pair
    from ..versions import software_versions
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
    return {"config": cfg.record(), "data": pair.describe(), "versions": software_versions(),
            "timing": timing_note(cfg), "machine": machine_info(models[0]["device"]), "metric": cfg.metric, "models": models}
