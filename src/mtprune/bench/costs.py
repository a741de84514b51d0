"""What one model costs to deploy, measured as the WMT26 compression task measures a deliverable:
the model alone in a fresh process, nothing else loaded.

The interleaved bench (``bench``) holds every model in one process: that is what makes its
speed-ups trustworthy, and what makes its peak memory the shared process's, not a model's.  Here
each model runs in its own child process (``python -m mtprune.bench.costs REQUEST RESULT``: a new
interpreter, never a fork, so it inherits no loaded model), one model after the other:

- peak memory: the child's peak resident set size (Linux: VmHWM of /proc/self/status): Python,
  torch and the model together (``runtime_rss_bytes``: the same before the model loaded); on a CUDA
  device also torch's peak allocation (``gpu_peak_bytes``).  Not ru_maxrss: Linux carries it over
  fork and exec, so a child started by a process holding 5 GiB of models reports at least 5 GiB
  (Python's subprocess and multiprocessing's spawn both fork, or vfork, then exec; the same holds
  for WMT26's "children's ru_maxrss" under a large harness).  ru_maxrss is the fallback where there
  is no /proc, and the JSON says so (``peak_rss_source``);
- size on disk: bytes of every file under the model folder;
- start-up seconds (imports, data) and load seconds (weights, translators), apart;
- chars/s at the largest batch size: source characters / seconds translating the whole test set in
  consecutive batches of that size, cold (the first pass, as a deliverable's run.sh translates),
  loading excluded; and with the start-up and loading included, as WMT26 times run.sh;
- batch-1 latency: the first ``latency_segments`` segments translated one at a time: the median
  seconds per segment, generated tokens/s at batch 1, and the prompt and output lengths from which
  ``add_cost_ratios`` gives the IDEAL batch-1 speed-up over the first model (``flops``).
  An interleaved bench times batch 1 itself (``bench.time_batch1``: every model loaded, taking
  turns segment by segment) and asks the children for none (``latency_segments=0``;
  ``b1_source`` says which).

The children run one after the other, so the machine's drift between models is not cancelled in
what they time: the interleaved figures are the ones to trust for speed-ups.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import MtpruneError
from ..files import folder_size, read_json, write_json_atomic
from ..model.shape import ModelShape, ideal_speedup, lengths, mean_prompt_tokens, per_token_flops

logger = logging.getLogger(__name__)

DEFAULT_LATENCY_SEGMENTS = 16
TITLE = "cost per model (each in its own process)"
HEADER = ["model", "disk", "peak memory", "load s", "chars/s (largest batch)", "chars/s incl. load",
          "b1 latency", "b1 tokens/s", "ideal b1 speed-up", "measured b1 speed-up"]


class CostError(MtpruneError):
    """A model's cost measurement failed in its own process."""


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
    prompt: str = "auto"
    shots: int = 3
    shots_from: str | None = None
    shots_by: str = "random"
    context: int = 0
    context_target: str = "none"
    max_new_tokens: int | None = None
    fixed_new_tokens: int | None = None
    threads: int | None = None  # torch threads, as the parent's (None: torch's default)
    log_level: int = logging.WARNING

    @classmethod
    def from_bench(cls, cfg: Any, model: str) -> CostRequest:
        """The request for ``model`` with the settings of ``cfg`` (a ``bench.BenchConfig``)."""
        threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
        return cls(model=model, data=asdict(cfg.data), batch_size=max(cfg.batch_sizes),
                   latency_segments=cfg.latency_segments, backend=asdict(cfg.backend_config), dtype=cfg.dtype,
                   device=cfg.device, prompt=cfg.prompt, shots=cfg.shots, shots_from=cfg.shots_from,
                   shots_by=cfg.shots_by, context=cfg.context, context_target=cfg.context_target,
                   max_new_tokens=cfg.max_new_tokens, fixed_new_tokens=cfg.fixed_new_tokens, threads=threads,
                   log_level=logging.getLogger("mtprune").getEffectiveLevel())


# ----------------------------------------------------------------------------------------
# The parent: one child process per model
# ----------------------------------------------------------------------------------------

def measure_costs(request: CostRequest) -> dict[str, Any]:
    """``request`` measured in a fresh Python process; its figures, with the child's peak RSS as
    the parent reads it when the child ends.  Raises CostError when the child fails."""
    with tempfile.TemporaryDirectory(prefix="mtprune-costs-") as tmp:
        request_file, result_file = Path(tmp) / "request.json", Path(tmp) / "result.json"
        write_json_atomic(request_file, asdict(request))
        command = [sys.executable, "-m", "mtprune.bench.costs", str(request_file), str(result_file)]
        code = subprocess.run(command, env=_child_env(), stdin=subprocess.DEVNULL, check=False).returncode
        costs = read_json(result_file)
    if code != 0 or costs is None:
        why = " (killed: out of memory?)" if code in (-9, 137) else ""
        raise CostError(f"measuring the cost of {request.model} in its own process failed with exit code {code}"
                        f"{why}; its log is above. Run `mtprune bench --no-costs` to skip it.")
    return costs


def _child_env() -> dict[str, str]:
    """This environment, with this very mtprune's source folder first on PYTHONPATH (the child
    imports the same code as its parent, installed or not); the child's log goes to our stderr."""
    source = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}


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


# ----------------------------------------------------------------------------------------
# The child: load, translate the test set at the largest batch, then segments one at a time
# ----------------------------------------------------------------------------------------

def measure_here(request: CostRequest) -> dict[str, Any]:
    """The figures of ``request``'s model in this process (meant to be a fresh one: its peak RSS
    is the process's)."""
    started = time.perf_counter()
    from ..translate.backends import BackendConfig
    from ..data.specs import DataSpec
    from ..eval.evaluate import load_pair, make_translator
    from ..model.load import load_model

    if request.threads:
        import torch

        torch.set_num_threads(request.threads)
    pair = load_pair(DataSpec(**request.data))
    backend = BackendConfig(**(request.backend or {}))
    if backend.needs_weights():
        import torch  # noqa: F401  (start-up: what any deliverable imports before its model)
        import transformers  # noqa: F401
    runtime_rss, _ = peak_rss()
    loading = time.perf_counter()
    loaded = load_model(request.model, dtype=request.dtype, device=request.device, weights=backend.needs_weights())
    translators = {b: make_translator(loaded, pair, prompt=request.prompt, shots=request.shots,
                                      shots_from=request.shots_from, shots_by=request.shots_by, backend=backend,
                                      batch_size=b, max_new_tokens=request.max_new_tokens,
                                      fixed_new_tokens=request.fixed_new_tokens, progress=False,
                                      context=request.context, context_target=request.context_target)
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


def main(argv: list[str] | None = None) -> int:
    """``python -m mtprune.bench.costs REQUEST.json RESULT.json``: the child's entry point."""
    parser = argparse.ArgumentParser(prog="python -m mtprune.bench.costs", description=main.__doc__)
    parser.add_argument("request", type=Path, help="a CostRequest as JSON (written by measure_costs)")
    parser.add_argument("result", type=Path, help="where the figures go (JSON)")
    args = parser.parse_args(argv)
    request = CostRequest(**json.loads(args.request.read_text(encoding="utf-8")))
    logging.basicConfig(level=request.log_level, format=f"[costs {os.getpid()}] %(levelname)s %(name)s: %(message)s")
    logger.info("measuring %s alone (batch %d, then %d segments at batch 1)", request.model, request.batch_size,
                request.latency_segments)
    write_json_atomic(args.result, measure_here(request))
    return 0


# ----------------------------------------------------------------------------------------
# Ratios against the first model, and the table
# ----------------------------------------------------------------------------------------

def add_cost_ratios(models: list[dict[str, Any]]) -> None:
    """Per model with costs: its batch-1 tokens/s over the first model's (measured, in separate
    processes one after the other), and the IDEAL one from FLOPs: generated tokens per FLOP
    (prompt prefill and decoding, ``flops.ideal_speedup``: what the measured figure includes) and
    per-token decoding FLOPs alone (``ideal_b1_decode_speedup``: what pruning gains per new token)."""
    base = models[0]
    if not base.get("costs"):
        return
    base_shape, base_b1 = ModelShape.from_dict(base["shape"]), base["costs"]["b1"]
    for entry in models:
        costs = entry.get("costs")
        if not costs:
            continue
        shape = ModelShape.from_dict(entry["shape"])
        costs["b1_speedup"] = round(costs["b1_tokens_per_s"] / base["costs"]["b1_tokens_per_s"], 4)
        costs["ideal_b1_speedup"] = round(ideal_speedup(shape, costs["b1"], base_shape, base_b1), 4)
        costs["ideal_b1_decode_speedup"] = round(
            per_token_flops(base_shape, base_b1["mean_context"])["total"]
            / per_token_flops(shape, costs["b1"]["mean_context"])["total"], 4)


def has_costs(result: dict[str, Any]) -> bool:
    return any(entry.get("costs") for entry in result["models"])


def cost_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per model with costs (a bench JSON from before costs: none)."""
    rows = []
    for entry in result["models"]:
        c = entry.get("costs")
        if not c:
            continue
        rows.append([
            Path(entry["model"]).name or entry["model"], human_bytes(c.get("size_on_disk_bytes")), memory_text(c),
            f"{c['load_s']:.1f}", f"{c['chars_per_s']:.0f}", f"{c['chars_per_s_with_load']:.0f}",
            f"{c['b1_latency_median_s']:.3f} s", f"{c['b1_tokens_per_s']:.1f}",
            _ratio(c.get("ideal_b1_speedup")), _ratio(c.get("b1_speedup")),
        ])
    return rows


def cost_notes(result: dict[str, Any]) -> list[str]:
    """What the cost table's figures are, in the order of its columns."""
    first = next(entry["costs"] for entry in result["models"] if entry.get("costs"))
    gpu = " and torch's peak allocation on the GPU" if first.get("gpu_peak_bytes") is not None else ""
    return [
        f"cost: each model alone in a fresh Python process, one after the other; peak memory = the process's peak "
        f"RSS{gpu} (Python and torch included: {human_bytes(first['runtime_rss_bytes'])} before the first model "
        "loaded), as WMT26 measures run.sh; disk = bytes of every file under the model folder",
        f"chars/s = {first['source_chars']} source characters / seconds translating all {first['segments']} segments "
        f"in batches of {first['batch_size']}, cold (the first pass); incl. load: start-up and loading too, as WMT26 "
        f"times run.sh; load s = weights and translators (start-up {first['startup_s']:.1f} s apart)",
        f"b1 = the first {first['latency_segments']} segments one at a time: median seconds per segment, generated "
        "tokens/s; ideal b1 speed-up = generated tokens per matmul FLOP (prefill and decoding) over the first model's "
        "(per-token decoding FLOPs alone: ideal_b1_decode_speedup in --json); " + _b1_where(first),
    ]


def _b1_where(costs: dict[str, Any]) -> str:
    if costs.get("b1_source") == "interleaved":
        return ("timed in the bench's process, all models loaded, taking turns segment by segment in a rotating "
                "order: drift is cancelled as in the rounds above")
    return ("measured in separate processes one after the other: drift is not cancelled (trust the interleaved "
            "speed-ups above)")


def memory_text(costs: dict[str, Any]) -> str:
    """'612 MiB', or with a GPU '1.20 GiB (GPU 540 MiB)'."""
    text = human_bytes(costs.get("peak_rss_bytes"))
    if costs.get("gpu_peak_bytes") is not None:
        text += f" (GPU {human_bytes(costs['gpu_peak_bytes'])})"
    return text


def human_bytes(n: int | None, missing: str = "-") -> str:
    """'1.20 GiB', '612.00 MiB', '498 KiB'."""
    if n is None:
        return missing
    for unit, div in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n / 1024:.0f} KiB"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}x"


if __name__ == "__main__":
    sys.exit(main())
