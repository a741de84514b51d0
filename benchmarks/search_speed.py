"""Search speed: mtprune's exact and fast modes against the reference approach.

The reference approach, as the paper's scripts do it: for every candidate layer of every
round, reload the model from disk, delete the already-removed layers and the candidate,
translate the dev set in the data's order with a fixed token limit (2 x the longest source
in words, the paper's setting) and score it with chrF++.  (Unlike those scripts, this
re-implementation renumbers ``layer_idx`` so that generation with the KV cache is correct;
that costs nothing and keeps the comparison about speed.)

Same model, dev set, prompts, rounds and protected layers (first and last), fp32.  Each
mode runs in its own subprocess so that its peak memory (max RSS) is its own.

    python benchmarks/search_speed.py [--rounds 2] [--dev 12] [--shortlist 3]
        [--modes exact,fast,reference] [--results FILE] [--keep DIR]

``--results FILE`` keeps each mode's result in FILE, so modes can be run one at a time
(the summary prints once all three are there); ``--keep DIR`` keeps our run folders
(trace.jsonl, plan.json) for a look at every candidate's score.

Prints both removal orders, then
    speedup: X.XXx (exact)
    speedup: Y.YYx (fast; final chrF++ exact A.A, fast B.B)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "gemma-3-270m"


def dev_spec(args):
    from mtprune.data.specs import DataSpec

    return DataSpec("sample:en-de", "en", "de", part="dev", limit=args.dev)


def run_ours(args, fast: bool) -> dict:
    from mtprune.search.config import PairConfig, SearchConfig, StopRule
    from mtprune.search.engine import run_search
    from mtprune.translate.settings import TranslationSettings

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.keep) / ("fast" if fast else "exact") if args.keep else Path(tmp) / "run"
        start = time.perf_counter()
        plan = run_search(SearchConfig(
            model=MODEL, pairs=[PairConfig(dev_spec(args))], run_dir=run_dir,
            stop=StopRule(remove=args.rounds), fast=fast, shortlist=args.shortlist, proxy=args.proxy,
            translation=TranslationSettings(batch_size=args.batch_size), dtype="float32", progress=False,
        ))
        seconds = time.perf_counter() - start
    return {"removed": plan["removed"], "seconds": seconds, "final": plan["rounds"][-1]["score_after"],
            "baseline": plan["baseline"]["score"]}


def run_reference(args) -> dict:
    import sacrebleu
    import torch
    from transformers import AutoModelForCausalLM

    from mtprune.translate.translator import load_pair, make_translator
    from mtprune.model.layers import prune_layers
    from mtprune.model.load import load_model
    from mtprune.translate.prompts import clean_output

    loaded = load_model(MODEL, dtype="float32")
    pair = load_pair(dev_spec(args))
    prompter = make_translator(loaded, pair, progress=False).prompter  # the same prompts as ours
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    prompts = [prompter.render(s) for s in pair.sources]
    max_new = 2 * max(len(s.split()) for s in pair.sources)
    n = loaded.model.config.num_hidden_layers
    checkpoint = loaded.checkpoint
    del loaded
    start = time.perf_counter()
    kept, removed = list(range(n)), []
    for _ in range(args.rounds):
        scores = {}
        for layer in [k for k in kept if k not in (0, n - 1)]:
            model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()  # reload
            prune_layers(model, [k for k in kept if k != layer])
            hyps = []
            for b in range(0, len(prompts), args.batch_size):  # data order: no sorting
                enc = tokenizer(prompts[b : b + args.batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=prompter.add_special_tokens)
                with torch.no_grad():
                    out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                         pad_token_id=tokenizer.pad_token_id)
                for row, src in zip(out[:, enc["input_ids"].shape[1]:], pair.sources[b : b + args.batch_size]):
                    hyps.append(clean_output(tokenizer.decode(row, skip_special_tokens=True), prompter, src))
            scores[layer] = sacrebleu.corpus_chrf(hyps, [pair.references], word_order=2).score
            print(f"  reference: round {len(removed) + 1} layer {layer}: {scores[layer]:.2f}", file=sys.stderr)
        best = max(scores, key=lambda c: (round(scores[c], 4), -c))
        kept.remove(best)
        removed.append(best)
    return {"removed": removed, "seconds": time.perf_counter() - start, "final": scores[best], "max_new_tokens": max_new}


def child(args) -> None:
    result = {"exact": lambda: run_ours(args, False), "fast": lambda: run_ours(args, True),
              "reference": lambda: run_reference(args)}[args.mode]()
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def parent(args) -> None:
    results_file = Path(args.results) if args.results else None
    results = json.loads(results_file.read_text()) if results_file and results_file.exists() else {}
    settings = {"rounds": args.rounds, "dev": args.dev, "batch_size": args.batch_size}
    if results.get("settings", settings) != settings:
        raise SystemExit(f"{results_file} holds results for other settings {results['settings']}; use another --results")
    results["settings"] = settings
    if "fast" in args.modes.split(","):
        results.pop("fast", None)
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--mode", mode, "--rounds", str(args.rounds), "--dev", str(args.dev),
               "--shortlist", str(args.shortlist), "--batch-size", str(args.batch_size), "--proxy", args.proxy]
        if args.keep:
            cmd += ["--keep", args.keep]
        print(f"running {mode} ...", flush=True)
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        if mode == "fast":
            results[mode]["settings"] = {"shortlist": args.shortlist, "proxy": args.proxy}
        print(f"  {mode}: {results[mode]}", flush=True)
        if results_file:
            results_file.write_text(json.dumps(results, indent=1))
    results.pop("settings")
    if "fast" in results:
        fast_settings = {"shortlist": args.shortlist, "proxy": args.proxy}
        if results["fast"].get("settings") != fast_settings:
            print(f"the fast result was measured with {results['fast']['settings']}, not {fast_settings}")
            return
    missing = [m for m in ("exact", "fast", "reference") if m not in results]
    if missing:
        print(f"not run yet: {', '.join(missing)} (run them with --modes and the same --results)")
        return
    model_bytes = model_size_bytes()
    for mode, r in results.items():
        print(f"{mode:<9} removed {r['removed']}  {r['seconds']:.1f} s  final chrF++ {r['final']:.2f}  "
              f"peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB ({r['peak_rss_bytes'] / model_bytes:.2f}x the fp32 weights)")
    same = results["exact"]["removed"] == results["reference"]["removed"]
    print(f"removal order exact == reference: {same}")
    ex, fa, ref = results["exact"], results["fast"], results["reference"]
    print(f"speedup: {ref['seconds'] / ex['seconds']:.2f}x (exact)")
    print(f"speedup: {ref['seconds'] / fa['seconds']:.2f}x (fast; final chrF++ exact {ex['final']:.1f}, fast {fa['final']:.1f}; "
          f"proxy {fa['settings']['proxy']}, shortlist {fa['settings']['shortlist']})")


def model_size_bytes() -> int:
    from mtprune.model.load import load_model

    model = load_model(MODEL, dtype="float32").model
    return sum(p.numel() * p.element_size() for p in model.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dev", type=int, default=12, help="dev segments (sample:en-de, part dev)")
    p.add_argument("--shortlist", type=int, default=3)
    p.add_argument("--proxy", default="logprob", help="fast mode's proxy (default: logprob)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--modes", default="exact,fast,reference", help="modes to run now (default: all three)")
    p.add_argument("--results", help="JSON file that keeps each mode's result between runs")
    p.add_argument("--keep", help="keep our run folders (exact/, fast/) under this folder")
    p.add_argument("--mode", choices=("exact", "fast", "reference"), help=argparse.SUPPRESS)
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    child(args) if args.mode else parent(args)


if __name__ == "__main__":
    main()
