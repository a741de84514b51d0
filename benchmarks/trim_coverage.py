"""How many tokens a trimmed vocabulary must keep to hold up on text outside its trimming data.

The quickstart trims gemma-3-270m's 262,144-token vocabulary to the tokens of the bundled sample's
en-de train part (Bible verses). This benchmark trims the same way with ``--keep N`` (the data's
tokens, then the tokenizer's own order up to N in all) for several N, and translates with each
(and with the untrimmed model) on two domains: the sample's held-out test part (the trimming
domain) and Django's German interface strings (``domains.py``: another domain), each with 3
retrieved examples from its own train part, as a base model is used. All models of one domain are
timed interleaved in one ``mtprune bench`` (segments/s at batch 16, the range over the rounds), so
a trimmed model that is slower on the other domain (words outside the kept tokens spelt in byte
pieces) shows as such.

    python benchmarks/trim_coverage.py                                   # keep: data only, 16384, 32768
    python benchmarks/trim_coverage.py --keep 65536,131072 --work runs/bench-trim-coverage-big

Prints per domain and model: kept tokens, chrF++, its difference to the untrimmed model, and
segments/s with its ratio to the untrimmed model's.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from domains import software_strings

from mtprune.cli.main import main as mtprune

MODEL = "gemma-3-270m"


def run(*argv) -> None:
    argv = [str(a) for a in argv]
    print("$ mtprune " + " ".join(argv), flush=True)
    if mtprune(["-q", *argv]) != 0:
        raise SystemExit(f"mtprune {argv[0]} failed")


def trimmed(work: Path, keep: int) -> Path:
    out = work / (f"trimmed-keep{keep}" if keep else "trimmed-data")
    if not (out / "mtprune.json").is_file():
        run("trim-vocab", MODEL, "--data", "sample:en-de", "--part", "train", *(["--keep", keep] if keep else []),
            "-o", out, "--force")
    return out


def kept_tokens(model: Path) -> int:
    return json.loads((model / "config.json").read_text())["vocab_size"]


def bench(work: Path, domain: str, data: list[str], models: dict[str, str], args) -> dict:
    out = work / f"bench-{domain}.json"
    if not out.is_file():
        run("bench", *models.values(), *data, "--part", "test", "--limit", args.test, "--batch-sizes", 16,
            "--warmup", 1, "--runs", args.runs, "--no-costs", "--metric", "chrf++", "--json", out, "--force")
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", default="0,16384,32768", help="token counts to keep (0: the data's tokens only)")
    p.add_argument("--test", type=int, default=48, help="test segments per domain (default: 48)")
    p.add_argument("--runs", type=int, default=3, help="timed rounds (default: 3)")
    p.add_argument("--work", default="runs/bench-trim-coverage")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    models = {"untrimmed": MODEL}
    for keep in (int(k) for k in args.keep.split(",")):
        path = trimmed(work, keep)
        models[f"keep {kept_tokens(path)}" if keep else f"data only ({kept_tokens(path)})"] = str(path)
    django = str(software_strings(Path("runs/bench-recovery/domains")).resolve())
    domains = {"sample (trimming domain)": ["--data", "sample:en-de"],
               "software (Django strings)": ["--data", django, "--src", "en", "--tgt", "de"]}
    for domain, data in domains.items():
        result = bench(work, domain.split()[0], data, models, args)
        rows = {entry["model"]: entry for entry in result["models"]}
        base = rows[MODEL]["batches"][0]
        print(f"\n{domain}: {args.test} test segments, 3 retrieved examples, batch 16, {args.runs} interleaved "
              f"rounds, {result['machine']['cpu']} {'/'.join(result['machine']['cpu_flags'])}, "
              f"{rows[MODEL]['dtype']}")
        print(f"{'model':<22} {'chrF++':>7} {'diff':>6} {'seg/s':>6} {'range':>13} {'x untrimmed':>12}")
        for name, path in models.items():
            b = rows[path]["batches"][0]
            lo, hi = b["segments_per_s_interval"]
            print(f"{name:<22} {b['quality']:7.2f} {b['quality'] - base['quality']:+6.2f} {b['segments_per_s']:6.2f} "
                  f"[{lo:.2f}-{hi:.2f}] {b['segments_per_s'] / base['segments_per_s']:11.2f}x")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
