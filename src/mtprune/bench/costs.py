"""What one model costs to deploy, measured as the WMT26 compression task measures a deliverable:
the model alone in a fresh process, nothing else loaded.

The interleaved bench (``bench``) holds every model in one process: that is what makes its
speed-ups trustworthy, and what makes its peak memory the shared process's, not a model's.  Here
each model runs in its own child process (``python -m mtprune.cli.costs_child REQUEST RESULT``, which
measures with ``alone.measure_here``: a new interpreter, never a fork, so it inherits no loaded model),
one model after the other:

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

import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import MtpruneError
from ..files import read_json, write_json_atomic
from ..model.shape import ModelShape, ideal_speedup, per_token_flops
from .alone import CostRequest

logger = logging.getLogger(__name__)

TITLE = "cost per model (each in its own process)"
HEADER = ["model", "disk", "peak memory", "load s", "chars/s (largest batch)", "chars/s incl. load",
          "b1 latency", "b1 tokens/s", "ideal b1 speed-up", "measured b1 speed-up"]


class CostError(MtpruneError):
    """A model's cost measurement failed in its own process."""


# ----------------------------------------------------------------------------------------
# The parent: one child process per model
# ----------------------------------------------------------------------------------------

def measure_costs(request: CostRequest) -> dict[str, Any]:
    """``request`` measured in a fresh Python process; its figures, with the child's peak RSS as
    the parent reads it when the child ends.  Raises CostError when the child fails."""
    with tempfile.TemporaryDirectory(prefix="mtprune-costs-") as tmp:
        request_file, result_file = Path(tmp) / "request.json", Path(tmp) / "result.json"
        write_json_atomic(request_file, asdict(request))
        command = [sys.executable, "-m", "mtprune.cli.costs_child", str(request_file), str(result_file)]
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
