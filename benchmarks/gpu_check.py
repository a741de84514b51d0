"""The GPU paths, end to end, on models of real shapes with random weights.

A GPU machine that reaches no hub and no registry cannot load a real checkpoint unless it
travels with the code; speed does not depend on the weights' values, so this script builds
models of the real SHAPES with random weights (seeded) and the real tokenizer, and runs the
commands a user runs, on ``--device cuda`` (dtype auto: bf16):

1. gemma-3-270m's config (18 layers, a 262,144-token vocabulary) -> ``trim-vocab`` on the
   sample's en-de train part -> ``prune --drop 7,9`` (the quickstart's chain);
   ``bench`` of the three (equal work: ``--fixed-new-tokens``), with peak GPU memory;
2. ``finetune`` of the trimmed + pruned model (bf16, a few steps) and ``translate`` with it;
3. an 8B-class shape (Llama 3.1 8B's layers: hidden 4096, 32 layers, GQA 32/8, MLP 14336;
   the gemma tokenizer's 262,144-token vocabulary) and the same with 8 of its 32 layers
   removed: ``bench``, measured speed-up against the FLOP ideal (where layers, not the head,
   are the cost);
4. vLLM, where it is installed.

Outputs (translations of random weights) are no translations: only speed, memory and the
commands' success are figures here.  Each step's command and exit status are printed; the
last lines summarize the speed-ups.

    python benchmarks/gpu_check.py --tokenizer ~/.cache/mtprune/packaged/gemma-3-270m-v2 --work /tmp/gc --out OUT
    python benchmarks/gpu_check.py --tokenizer ... --device cpu --small   # the same steps, tiny shapes, on CPU
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, rope_theta=500000.0, rms_norm_eps=1e-5,
                max_position_embeddings=8192, tie_word_embeddings=False)


def build(config, tokenizer_dir: Path, out: Path, device: str, dtype: str) -> Path:
    """A model of ``config``'s shape with seeded random weights, saved with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def mtprune(args: list[str], log: list[dict]) -> bool:
    """Run ``python -m mtprune ARGS``; print and log its command, status and time."""
    cmd = [sys.executable, "-m", "mtprune", *args]
    print("$ mtprune " + " ".join(args), flush=True)
    start = time.time()
    rc = subprocess.call(cmd)
    seconds = round(time.time() - start, 1)
    print(f"  -> exit {rc} in {seconds} s", flush=True)
    log.append({"command": "mtprune " + " ".join(args), "exit": rc, "seconds": seconds})
    return rc == 0


def speedups(path: Path) -> list[str]:
    """'model batch b: speed-up X [lo-hi], ideal Y, peak Z MiB, flags' for each bench row."""
    if not path.exists():
        return [f"{path.name}: missing"]
    result = json.loads(path.read_text())
    lines = []
    for entry in result["models"]:
        for row in entry["batches"]:
            lo, hi = row["speedup_interval"]
            peak = row["peak_memory_bytes"]
            lines.append(f"{Path(entry['model']).name} ({entry['layers']} layers) batch {row['batch_size']}: "
                         f"{row['tokens_per_s']:.0f} tok/s, speed-up {row['speedup']:.3f}x [{lo:.3f}-{hi:.3f}], "
                         f"ideal {row['ideal_speedup']:.3f}x, peak {peak / 2**20 if peak else 0:.0f} MiB "
                         f"({entry['memory_kind']}), flags {','.join(row['flags']) or '-'}")
    return lines


def main() -> int:
    from transformers import AutoConfig, LlamaConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="folder with gemma-3-270m's config.json and tokenizer files")
    p.add_argument("--work", default="runs/gpu-check", help="folder for the models")
    p.add_argument("--out", default="runs/gpu-check/out", help="folder for the bench JSONs and the log")
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--small", action="store_true", help="tiny shapes (a smoke test of the steps on CPU)")
    p.add_argument("--skip-8b", action="store_true")
    args = p.parse_args()
    tok, work, out = Path(args.tokenizer).expanduser(), Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    dev = ["--device", args.device]
    log: list[dict] = []
    started = time.time()

    gemma_config = AutoConfig.from_pretrained(tok)
    big = dict(LLAMA_8B, vocab_size=gemma_config.vocab_size, bos_token_id=gemma_config.bos_token_id,
               eos_token_id=gemma_config.eos_token_id, pad_token_id=gemma_config.pad_token_id)
    if args.small:
        gemma_config.num_hidden_layers, gemma_config.layer_types = 12, gemma_config.layer_types[:12]
        big.update(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64)
    g270 = build(gemma_config, tok, work / "gemma-3-270m-shape", args.device, "bfloat16")
    trimmed, pruned = work / "trimmed", work / "trimmed-drop-7-9"
    data = ["--data", "sample:en-de"]
    bench = [*data, "--part", "test", "--limit", "64", "--batch-sizes", "16,64", "--fixed-new-tokens", "32",
             "--runs", str(args.runs), "--warmup", "1", "--force", *dev]
    mtprune(["trim-vocab", str(g270), *data, "--part", "train", "-o", str(trimmed), "--force", *dev], log)
    mtprune(["prune", str(trimmed), "--drop", "7,9", "-o", str(pruned), "--force", *dev], log)
    mtprune(["bench", str(g270), str(trimmed), str(pruned), *bench, "--json", str(out / "bench_270m.json")], log)
    finetuned = work / "finetuned"
    mtprune(["finetune", str(pruned), *data, "-o", str(finetuned), "--max-steps", "8", "--batch-size", "8",
             "--eval-every", "4", "--force", *dev], log)
    mtprune(["translate", str(finetuned), *data, "--part", "test", "--limit", "16", "--max-new-tokens", "24",
             "-o", str(out / "finetuned.txt"), "--force", *dev], log)
    if (finetuned / "mtprune.json").exists():
        record = json.loads((finetuned / "mtprune.json").read_text())
        print("finetuned record: dtype", record.get("dtype"), "| training keys:",
              sorted(record.get("finetune", record.get("recovery", {})) or [])[:12], flush=True)
    try:
        import vllm  # noqa: F401
        mtprune(["bench", str(g270), str(trimmed), *bench, "--backend", "vllm", "--json",
                 str(out / "bench_270m_vllm.json")], log)
    except ImportError:
        print("vLLM: not installed here, its GPU path not run", flush=True)
    if not args.skip_8b:
        b8 = build(LlamaConfig(**big), tok, work / "llama-8b-shape", args.device, "bfloat16")
        drop = "20-27" if not args.small else "4,5"
        b8p = work / f"llama-8b-shape-drop-{drop}"
        mtprune(["prune", str(b8), "--drop", drop, "-o", str(b8p), "--force", *dev], log)
        mtprune(["bench", str(b8), str(b8p), *bench, "--json", str(out / "bench_8b.json")], log)
    (out / "steps.json").write_text(json.dumps(log, indent=1))
    print(f"\n== summary ({(time.time() - started) / 60:.1f} min) ==")
    for step in log:
        print(f"exit {step['exit']} ({step['seconds']} s): {step['command']}")
    for name in ("bench_270m.json", "bench_270m_vllm.json", "bench_8b.json"):
        if (out / name).exists():
            print(f"-- {name}")
            print("\n".join(speedups(out / name)))
    return 0 if all(s["exit"] == 0 for s in log) else 1


if __name__ == "__main__":
    raise SystemExit(main())
