"""Does a command's memory estimate hold? The estimate next to the measured peak, per job (CPU).

mtprune checks, before a weight loads, that a stage fits this machine (``preflight.FitCheck``):
``FitCheck.need`` = the estimate's parts (weights, gradients+optimizer, activations, KV cache)
+ the runtime's share (0.75 GiB on a CPU: the interpreter with torch, transformers and the data loaded).
This benchmark takes ``need`` from exactly the functions the commands call, and runs each
command for real to measure its peak, on the packaged gemma-3-270m (no download):

  finetune  `mtprune finetune` full, --batch-size 8 --prompt zeroshot, 2 steps
  lora      the same with --lora (4M trainable parameters instead of 268M)
  large     full, --batch-size 32 --prompt fewshot (~3x longer examples): the activations term
            at its largest; skipped where its estimate is above --max-share of the available RAM
  small     full, --batch-size 2: with `finetune`, the activations term's slope (what 6 more
            examples a batch cost, estimated and measured)
  search    `mtprune search --fast --remove 1` on 8 segments
  exact     `mtprune search --remove 1` on 16 segments: the exact search, 16 candidates x 16 segments
            in a batch (the quickstart's search)
  bench     `mtprune bench --batch-sizes 8 --runs 1 --warmup 0 --no-costs` on 8 segments

Estimate: finetune jobs build the FinetuneConfig the CLI builds (``commands.finetune.config_from_args``
on ``cli.build_parser()``'s parse), tokenize the data (``recover.finetune.prepare``: data and
tokenizer only) and take ``recover.fit.check_training_memory(config, prepared)[1].need`` (with
--skip-memory-check the check warns instead of raising, so the FitCheck comes back even where it
does not fit); search and bench take ``commands.memory_check.command_check(args).need``.

Measured: the peak resident set of the command's process (RSS, Python and torch included), from
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a fresh stdlib-only wrapper process per job, read after
the command exits (a wrapper of its own: the peak of a process spawned from this one would start
at this process's, which has torch imported). Every command runs with --skip-memory-check (the
check never blocks a measurement) and --device cpu; outputs go to a temporary folder.

Each row: job, estimate GiB, measured peak GiB, estimate / measured, whether that ratio is within
+-30%, the estimate's parts and the job's seconds. Below the table: the command line, the CPU and
its flags, the dtype, threads, available RAM, versions and commit. Run with one thread per
process on a shared machine (all jobs: ~7 min on 2 AVX512-BF16 cores, `large` skipped there):

    OMP_NUM_THREADS=1 python benchmarks/memory_estimate.py
    OMP_NUM_THREADS=1 python benchmarks/memory_estimate.py --jobs finetune,lora --json runs/memory.json
    OMP_NUM_THREADS=1 python benchmarks/memory_estimate.py --jobs bench --dtype float32
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "gemma-3-270m"
GIB = 1024 ** 3
TOLERANCE = 0.30
DATA = ["--data", "sample:en-de", "--src", "en", "--tgt", "de"]
FINETUNE = ["finetune", MODEL, *DATA, "--limit", "64", "--max-steps", "2", "--eval-every", "100",
            "--dev-limit", "8"]
JOBS = {  # name: (label, arguments after `mtprune`; OUT: the job's output folder)
    "finetune": ("finetune full, bs 8 zero-shot", [*FINETUNE, "--batch-size", "8", "--prompt", "zeroshot",
                                                   "-o", "OUT", "--force"]),
    "lora": ("finetune --lora, bs 8 zero-shot", [*FINETUNE, "--batch-size", "8", "--prompt", "zeroshot", "--lora",
                                                 "-o", "OUT", "--force"]),
    "large": ("finetune full, bs 32 few-shot", [*FINETUNE, "--batch-size", "32", "--prompt", "fewshot",
                                                "-o", "OUT", "--force"]),
    "small": ("finetune full, bs 2 zero-shot", [*FINETUNE, "--batch-size", "2", "--prompt", "zeroshot",
                                                "-o", "OUT", "--force"]),
    "search": ("search --fast --remove 1, 8 segments", ["search", MODEL, *DATA, "--limit", "8", "--remove", "1",
                                                         "--fast", "-o", "OUT"]),
    "exact": ("search exact --remove 1, 16 segments (16 candidates x 16 side by side)",
              ["search", MODEL, *DATA, "--limit", "16", "--remove", "1", "-o", "OUT"]),
    "bench": ("bench bs 8, 1 run, --no-costs", ["bench", MODEL, *DATA, "--limit", "8", "--batch-sizes", "8",
                                                "--runs", "1", "--warmup", "0", "--no-costs"]),
}
EXTRA = ["--device", "cpu", "--skip-memory-check"]

# The wrapper: stdlib only, so its own footprint is a few MB; argv: LOG COMMAND...
WRAPPER = """
import resource, subprocess, sys
with open(sys.argv[1], "w") as log:
    code = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def job_argv(name: str, out: Path, dtype: str) -> list[str]:
    """The arguments after ``mtprune`` of job ``name``, writing under ``out``."""
    argv = [str(out / name) if a == "OUT" else a for a in JOBS[name][1]] + EXTRA
    return argv + (["--dtype", dtype] if dtype != "auto" else [])


# ----------------------------------------------------------------------------------------
# The estimate: the library's own functions, as the commands call them
# ----------------------------------------------------------------------------------------

def estimate(argv: list[str]):
    """The FitCheck of the command ``argv`` (None where the model's config cannot be read)."""
    from mtprune.cli.main import build_parser

    args = build_parser().parse_args(argv)
    if args.command == "finetune":
        from mtprune.cli.commands.finetune import config_from_args
        from mtprune.recover.finetune import prepare
        from mtprune.recover.fit import check_training_memory

        config = config_from_args(args)  # --skip-memory-check: memory_check=False, enforce only warns
        return check_training_memory(config, prepare(config))[1]
    from mtprune.cli.commands.memory_check import command_check

    return command_check(args)


def parts(check) -> str:
    est = check.estimate
    named = (("w", est.weights), ("opt", est.optimizer), ("act", est.activations), ("kv", est.kv_cache),
             ("rt", check.room.runtime))
    return " + ".join(f"{name} {value / GIB:.2f}" for name, value in named if value)


# ----------------------------------------------------------------------------------------
# The measurement: one fresh wrapper per job
# ----------------------------------------------------------------------------------------

def measure(argv: list[str], log: Path) -> tuple[int, int, float]:
    """(exit code, peak RSS in bytes, seconds) of ``mtprune ARGV`` in its own process."""
    import mtprune

    source = str(Path(mtprune.__file__).resolve().parents[1])  # the child imports this very mtprune
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "mtprune", *argv]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-S", "-c", WRAPPER, str(log), *command], env=env,
                          capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    code, maxrss = (int(v) for v in done.stdout.split())
    return code, maxrss if sys.platform == "darwin" else maxrss * 1024, seconds  # Linux: KiB


# ----------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------

def commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (uncommitted changes)" if dirty else "")


def versions() -> dict[str, str]:
    import importlib.metadata

    found = {"python": platform.python_version()}
    for dist in ("mtprune", "torch", "transformers", "peft"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def provenance(dtype: str) -> dict:
    from mtprune.bench.engine import machine_info
    from mtprune.model.load import choose_dtype
    from mtprune.model.preflight import cpu_available

    machine = machine_info("cpu")
    available, what = cpu_available()
    return {"command": " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "cpu": machine.get("cpu"), "cpu_flags": machine.get("cpu_flags", []), "cpu_count": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "dtype": str(choose_dtype(dtype, "cpu")).replace("torch.", ""), "dtype_option": dtype,
            "available_bytes": available, "available_what": what, "versions": versions(), "commit": commit()}


# ----------------------------------------------------------------------------------------

def run_job(name: str, work: Path, args) -> dict:
    from mtprune.model.preflight import cpu_available

    label = JOBS[name][0]
    argv = job_argv(name, work, args.dtype)
    shown = job_argv(name, Path("TMP"), args.dtype)  # the command without this run's temporary folder
    row = {"job": name, "label": label, "command": "mtprune " + " ".join(shlex.quote(a) for a in shown)}
    print(f"[{name}] estimating: {row['command']}", file=sys.stderr, flush=True)
    check = estimate(argv)
    if check is None:
        return {**row, "status": "no estimate (the model's config cannot be read)"}
    row.update(need_bytes=check.need, parts=parts(check), estimate=check.to_dict())
    available, _ = cpu_available()
    if available is not None and check.need > args.max_share * available:
        row["status"] = (f"skipped: estimate {check.need / GIB:.1f} GiB > {args.max_share:g} x "
                         f"{available / GIB:.1f} GiB available")
        print(f"[{name}] {row['status']}", file=sys.stderr, flush=True)
        return row
    print(f"[{name}] running (estimate {check.need / GIB:.2f} GiB)", file=sys.stderr, flush=True)
    log = work / f"{name}.log"
    code, peak, seconds = measure(argv, log)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        print(f"[{name}] exit code {code}; the end of its log:\n{tail}", file=sys.stderr, flush=True)
        return {**row, "status": f"failed (exit code {code})", "seconds": round(seconds, 1)}
    ratio = check.need / peak
    print(f"[{name}] peak {peak / GIB:.2f} GiB in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {**row, "status": "measured", "peak_bytes": peak, "ratio": ratio,
            "within": abs(ratio - 1) <= TOLERANCE, "seconds": round(seconds, 1)}


def table(rows: list[dict]) -> str:
    lines = [f"| job | estimate GiB | measured peak GiB | estimate / measured | within ±{TOLERANCE:.0%} "
             "| estimate parts (GiB) | s |",
             "|---|---:|---:|---:|---|---|---:|"]
    for r in rows:
        est = f"{r['need_bytes'] / GIB:.2f}" if "need_bytes" in r else "-"
        if r["status"] == "measured":
            measured, ratio, within = (f"{r['peak_bytes'] / GIB:.2f}", f"{r['ratio']:.2f}",
                                       "yes" if r["within"] else "no")
        else:
            measured, ratio, within = r["status"], "-", "-"
        lines.append(f"| {r['label']} | {est} | {measured} | {ratio} | {within} | {r.get('parts', '-')} "
                     f"| {r.get('seconds', '-')} |")
    return "\n".join(lines)


def footer(info: dict, rows: list[dict]) -> str:
    v = info["versions"]
    have = f"{info['available_bytes'] / GIB:.1f} GiB" if info["available_bytes"] else "unknown"
    lines = [f"command: `{info['command']}`; CPU: {info['cpu']} ({info['cpu_count']} cores, flags "
             f"{','.join(info['cpu_flags']) or '-'}); dtype {info['dtype']} (--dtype {info['dtype_option']}); "
             f"OMP_NUM_THREADS={info['omp_num_threads']}; available RAM at start {have} ({info['available_what']}); "
             + ", ".join(f"{k} {val}" for k, val in v.items()) + f"; commit {info['commit']}",
             "", f"estimate = FitCheck.need (parts: w weights, opt gradients+optimizer, act activations, kv KV cache, "
             f"rt runtime); measured = peak RSS of the command's process (ru_maxrss); within ±{TOLERANCE:.0%}: "
             f"|estimate / measured - 1| <= {TOLERANCE:g}. The jobs:"]
    lines += [f"- {r['job']}: `{r['command']}`" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default=",".join(JOBS),
                   help=f"comma-separated jobs to run, in order, from: {', '.join(JOBS)} (default: all)")
    p.add_argument("--dtype", default="auto",
                   help="--dtype of every command (default: auto: bf16 on CPUs with AVX512-BF16/AMX, else float32; "
                   "finetune keeps fp32 master weights either way)")
    p.add_argument("--max-share", type=float, default=0.5,
                   help="skip a job whose estimate is above this share of the RAM available when it would start "
                   "(default: 0.5: a machine shared with other jobs keeps room; 1.0 runs whatever the check "
                   "would let through)")
    p.add_argument("--json", metavar="FILE", help="also write the rows, the machine and the versions as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json FILE")
    args = p.parse_args()
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown or not jobs:
        p.error(f"--jobs: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(JOBS)}")
    if args.json and Path(args.json).exists() and not args.force:
        p.error(f"--json {args.json} exists; pass --force to overwrite it")
    logging.getLogger("mtprune").setLevel(logging.ERROR)  # the estimates' own log lines: the table says it

    started = time.time()
    info = provenance(args.dtype)
    with tempfile.TemporaryDirectory(prefix="mtprune-memory-") as tmp:
        rows = [run_job(name, Path(tmp), args) for name in jobs]
    print(f"\nmemory: estimate (before a weight loads) vs measured peak RSS, {MODEL} on cpu\n")
    print(table(rows))
    print()
    print(footer(info, rows))
    if args.json:
        from mtprune.files import write_json_atomic  # a temporary sibling, then os.replace

        write_json_atomic(Path(args.json), {"model": MODEL, "tolerance": TOLERANCE, "rows": rows, **info,
                                            "seconds": round(time.time() - started, 1)})
        print(f"\nwrote {args.json}")
    print(f"benchmark took {(time.time() - started) / 60:.1f} min")
    return 1 if any(r["status"].startswith("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
