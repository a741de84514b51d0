"""One model's deployment cost measured in THIS process: the child's side of ``costs`` (which starts a
fresh interpreter per model, ``python -m mtprune.cli.costs_child``), so that the peak memory is the
model's alone.  ``CostRequest`` is what the parent asks for, as JSON."""
from __future__ import annotations

import importlib
import logging
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import folder_size
from ..model.shape import lengths, mean_prompt_tokens

DEFAULT_LATENCY_SEGMENTS = 16


@dataclass
class CostRequest:
    """What the child process measures: one model, the data, the translation settings of the bench."""

    model: str
    data: dict[str, Any]  # asdict(DataSpec)
    batch_size: int  # the largest of the bench
    latency_segments: int = DEFAULT_LATENCY_SEGMENTS
    backend: dict[str, Any] | None = None  # asdict(BackendConfig); None: hf
    dtype: str = "auto"
    device: str = "auto"
    translation: dict[str, Any] = field(default_factory=dict)  # TranslationSettings fields; {}: its defaults
    fixed_new_tokens: int | None = None
    threads: int | None = None  # torch threads, as the parent's (None: torch's default)
    log_level: int = logging.WARNING

    @classmethod
    def from_bench(cls, cfg: Any, model: str) -> CostRequest:
        """The request for ``model`` with the settings of ``cfg`` (a ``bench.config.BenchConfig``)."""
        threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
        return cls(model=model, data=asdict(cfg.data), batch_size=max(cfg.batch_sizes),
                   latency_segments=cfg.latency_segments, backend=asdict(cfg.backend_config), dtype=cfg.dtype,
                   device=cfg.device, translation=asdict(cfg.translation), fixed_new_tokens=cfg.fixed_new_tokens,
                   threads=threads,
                   log_level=logging.getLogger("mtprune").getEffectiveLevel())


def peak_rss() -> tuple[int, str]:
    """This process's peak resident set size in bytes, and where it comes from."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024, "VmHWM of the child"
    except (OSError, AttributeError):
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes; ru_maxrss carries over fork and exec: the parent's may be in it
        return (maxrss if sys.platform == "darwin" else maxrss * 1024), "ru_maxrss of the child (parent's included?)"



def measure_here(request: CostRequest) -> dict[str, Any]:
    """The figures of ``request``'s model in this process (meant to be a fresh one: its peak RSS
    is the process's)."""
    started = time.perf_counter()
    from ..data.specs import DataSpec
    from ..model.load import load_model
    from ..translate.backends import BackendConfig
    from ..translate.settings import TranslationSettings
    from ..translate.translator import load_pair, make_translator

    if request.threads:
        import torch

        torch.set_num_threads(request.threads)
    pair = load_pair(DataSpec(**request.data))
    backend = BackendConfig(**(request.backend or {}))
    if backend.needs_weights():  # start-up: what any deliverable imports before its model
        importlib.import_module("torch")
        importlib.import_module("transformers")
    runtime_rss, _ = peak_rss()
    loading = time.perf_counter()
    loaded = load_model(request.model, dtype=request.dtype, device=request.device, weights=backend.needs_weights())
    settings = TranslationSettings(**request.translation)
    translators = {b: make_translator(loaded, pair, settings, backend=backend, progress=False,
                                      fixed_new_tokens=request.fixed_new_tokens, batch_size=b)
                   for b in dict.fromkeys((request.batch_size, *((1,) if request.latency_segments else ())))}
    loaded_at = time.perf_counter()
    sources = pair.sources
    whole = _translate(translators[request.batch_size], sources, request.batch_size)
    b1 = _batch1(loaded, translators.get(1), sources[: request.latency_segments])
    chars = sum(len(s) for s in sources)
    startup_s, load_s = loading - started, loaded_at - loading
    peak, source = peak_rss()
    if not backend.needs_weights() and loaded.device.startswith("cuda"):
        source += " (vLLM's engine process, which holds the model on the GPU, not included)"
    return {
        "model": request.model, "device": loaded.device, "dtype": loaded.dtype,
        "size_on_disk_bytes": folder_size(loaded.checkpoint),
        "peak_rss_bytes": peak, "peak_rss_source": source,
        "runtime_rss_bytes": runtime_rss, "gpu_peak_bytes": _gpu_peak(loaded.device, backend),
        "startup_s": round(startup_s, 3), "load_s": round(load_s, 3),
        "batch_size": request.batch_size, "segments": len(sources), "source_chars": chars,
        "translate_s": round(whole["seconds"], 4),
        "chars_per_s": round(chars / whole["seconds"], 2),
        "chars_per_s_with_load": round(chars / (startup_s + load_s + whole["seconds"]), 2),
        **b1,
    }


def _batch1(loaded, translator, firsts: list[str]) -> dict[str, Any]:
    """The b1 figures of ``firsts`` translated one at a time ({} for none: the bench timed batch 1
    interleaved)."""
    if not firsts:
        return {}
    one_by_one = [_translate(translator, [s], 1) for s in firsts]
    seconds, tokens = sum(t["seconds"] for t in one_by_one), sum(t["tokens"] for t in one_by_one)
    return {"b1_source": "alone", "latency_segments": len(firsts),
            "b1_latency_median_s": round(statistics.median(t["seconds"] for t in one_by_one), 4),
            "b1_latency_s": [round(t["seconds"], 4) for t in one_by_one],
            "b1_tokens_per_s": round(tokens / seconds, 3),
            "b1": lengths(mean_prompt_tokens(loaded, translator, firsts), tokens / len(firsts))}


def _translate(translator, sources: list[str], batch_size: int) -> dict[str, float]:
    """Seconds and generated tokens of translating ``sources`` in consecutive batches."""
    seconds = tokens = 0.0
    for i in range(0, len(sources), batch_size):
        start = time.perf_counter()
        result = translator.translate(sources[i : i + batch_size])
        seconds += time.perf_counter() - start
        tokens += result.generated_tokens
    return {"seconds": seconds, "tokens": tokens}


def _gpu_peak(device: str, backend) -> int | None:
    """torch's peak allocation on a CUDA device (None on CPU, or where vLLM's engine process holds
    the model: this process cannot see it)."""
    if not device.startswith("cuda") or not backend.needs_weights():
        return None
    import torch

    return int(torch.cuda.max_memory_allocated(device))
