"""Which prompt format to fine-tune in, chosen by dev score: zero-shot or few-shot (retrieved examples).

A recipe like the quickstart's, on one domain, whose finetune step lists both formats
(``prompt: [zeroshot, fewshot]``): the reference and the pruned model are each trained both ways,
each scored on the dev data in the format it was trained in, and the better one kept. Printed:
per stage the dev chrF++ of each format and the choice; then test chrF++ of the unpruned model as
used (few-shot, retrieved examples), the reference and the recovered pruned model, with loops,
and whether the compressed model is below the unpruned one as used.

    python benchmarks/prompt_choice.py --domain software      # Django's German UI strings (domains.py)
    python benchmarks/prompt_choice.py --domain sample        # the bundled sample, as the quickstart

The run folder (--work) resumes like any ``mtprune run``; --fresh starts again.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from domains import software_strings

from mtprune.cli.main import main as mtprune

RECIPE = """\
model: gemma-3-270m
pairs:
  - src: en
    tgt: de
    data: {data}
    dev: {{limit: {dev}}}
    test: {{limit: {test}}}
    train: {{limit: {train}}}
translation: {{batch_size: 16}}
trim_vocab: {{data: train}}
search: {{fast: false, remove: {remove}}}
prune: {{model: reference}}
recover:
  - finetune: {{max_steps: {steps}, batch_size: 8, learning_rate: 1.0e-4, eval_every: {eval_every}, dev_limit: 32,
                teacher: reference, prompt: [{formats}]}}
reference: true
evaluate: {{metrics: [chrf++]}}
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", choices=("sample", "software"), default="software")
    p.add_argument("--work", help="run folder (default: runs/bench-prompt-choice/DOMAIN)")
    p.add_argument("--fresh", action="store_true", help="delete --work first")
    p.add_argument("--formats", default="zeroshot, fewshot", help="the formats to choose from")
    p.add_argument("--remove", type=int, default=2)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--dev", type=int, default=16, help="dev segments (search and the choice)")
    p.add_argument("--test", type=int, default=78)
    p.add_argument("--train", type=int, default=256)
    args = p.parse_args()
    work = Path(args.work or f"runs/bench-prompt-choice/{args.domain}")
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if args.domain == "software":
        data = str(software_strings(Path("runs/bench-recovery/domains")).resolve())
    else:
        data = "sample:en-de"
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(data=data, dev=args.dev, test=args.test, train=args.train, remove=args.remove,
                                    steps=args.steps, eval_every=max(args.steps // 2, 1), formats=args.formats))
    code = mtprune(["-q", "run", str(recipe), "-o", str(work / "run")])
    if code != 0:
        sys.exit(f"mtprune run failed with exit code {code}")
    print_table(json.loads((work / "run" / "report" / "summary.json").read_text()), args)


def print_table(summary: dict, args) -> None:
    print(f"\n{args.domain}: {args.remove} layers removed from the fine-tuned reference, {args.steps} steps x 8 "
          f"per training (each format), dev {args.dev}, test {args.test} segments")
    for choice in summary["prompt_choices"]:
        means = "  ".join(f"{mode} {mean:6.2f}" for mode, mean in choice["mean"].items())
        print(f"  {choice['stage']:<10} dev chrF++: {means}  -> {choice['chosen']}")
    pair = next(iter(summary["test_data"]))
    rows = {m["name"]: m for m in summary["models"]}
    used = rows["unpruned"]["scores"][pair]["chrf++"]["value"]
    print(f"{'model':<12} {'prompt':<9} {'chrF++':>7} {'% as used':>10} {'loops':>6}")
    for name in ("unpruned", "trimmed", "reference", "pruned", "finetune"):
        if name in rows:
            m = rows[name]
            chrf = m["scores"][pair]["chrf++"]["value"]
            loops = (m.get("failures") or {}).get(pair, {}).get("repetitions", "-")
            print(f"{name:<12} {m.get('prompt') or '-':<9} {chrf:7.2f} {100 * chrf / used:9.1f}% {loops:>6}")
    if summary.get("verdict"):
        from mtprune.eval.verdict import verdict_from_dict, verdict_lines

        print("\n".join(verdict_lines(verdict_from_dict(summary["verdict"]))))


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
