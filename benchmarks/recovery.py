"""Recovery after pruning: how much of the translation quality each method brings back.

On the packaged gemma-3-270m and the bundled sample:en-de (train part for training, dev part
for dev loss, held-out test segments for chrF++), rows:

  unpruned                 the starting point
  unpruned + SFT           the fair reference: in-domain SFT lifts any model, so recovery is
                           measured against the unpruned model trained the same way
  pruned                   --drop / --plan, or the exact search's choice of --remove layers
  pruned + heal            local healing (no labels)
  pruned + SFT             the paper's fine-tuning
  pruned + KD              SFT with logit distillation from the unpruned model
  pruned + synth -> SFT    sequence-level KD: the unpruned model's translations as training data
  pruned + heal -> KD      the combination

Each row: test chrF++, % of the unpruned chrF++, % of the fair reference, training minutes.
Last line: ``kept: X.X% of the fair reference's chrF++ (K of N layers removed, best: METHOD, M min)``.

Every step is a real ``mtprune`` command (run in this process), so the figures are what a user
gets.  Finished steps are reused from --work (delete it, or pass --fresh, to measure again).

    python benchmarks/recovery.py --remove 4 --steps 100          # the issue's setting
    python benchmarks/recovery.py --drop 7,9 --steps 20 --test 16  # a quick look
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from mtprune.cli import main as mtprune

MODEL = "gemma-3-270m"
DATA = ["--data", "sample:en-de"]


def run(*argv) -> None:
    argv = [str(a) for a in argv]
    print("$ mtprune " + " ".join(argv), flush=True)
    code = mtprune(["-q", *argv])
    if code != 0:
        sys.exit(f"mtprune {argv[0]} failed with exit code {code}")


def evaluate(model: Path | str, work: Path, name: str, args) -> float:
    out = work / f"eval-{name}.json"
    if not out.exists():
        run("evaluate", model, *DATA, "--part", "test", "--limit", args.test, "--dtype", "float32",
            "--metrics", "chrf++", "--json", out)
    return json.loads(out.read_text())["scores"]["chrf++"]["value"]


def training_minutes(model: Path) -> float:
    record = json.loads((model / "mtprune.json").read_text())
    return sum(entry.get("seconds", 0.0) for entry in record.get("recovery", [])) / 60


def removed_layers(work: Path, args) -> list[int]:
    if args.drop:
        return [int(i) for i in args.drop.split(",")]
    plan = Path(args.plan) if args.plan else work / "search" / "plan.json"
    if not plan.exists():
        run("search", MODEL, *DATA, "--part", "dev", "--limit", args.dev, "--remove", args.remove,
            "--dtype", "float32", "-o", work / "search")
    return json.loads(plan.read_text())["removed"]


def sft(student, out: Path, args, *extra, data=("--data", "sample:en-de", "--part", "train")) -> Path:
    """``finetune`` with the benchmark's settings (dev loss on the sample's dev part)."""
    if not (out / "mtprune.json").exists():
        eval_every = args.eval_every or max(args.steps // 4, 1)
        limit = ["--limit", args.train_limit] if args.train_limit else []
        run("finetune", student, *data, *limit, "--dev-limit", args.dev_loss, "--max-steps", args.steps,
            "--batch-size", args.batch_size, "--lr", args.lr, "--eval-every", eval_every, "--prompt", args.prompt,
            "--dtype", args.train_dtype, "--freeze-embeddings", *extra, "-o", out, "--force")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench-recovery", help="folder for models and scores (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="delete --work first")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--drop", help="layers to remove (original ids), instead of a search")
    g.add_argument("--plan", help="a search's plan.json, instead of a new search")
    p.add_argument("--remove", type=int, default=4, help="layers the search removes (default: 4)")
    p.add_argument("--dev", type=int, default=16, help="dev segments for the search (default: 16)")
    p.add_argument("--test", type=int, default=48, help="held-out test segments for chrF++ (default: 48)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of each SFT/KD run (default: 100)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--dev-loss", type=int, default=32, help="dev segments for the dev loss (default: 32)")
    p.add_argument("--train-limit", type=int,
                   help="finetune --limit: training segments drawn (default: all; the KD teacher runs on all of "
                        "them once, so set it near --steps x --batch-size for short runs)")
    p.add_argument("--eval-every", type=int, help="steps between dev losses (default: a quarter of --steps)")
    p.add_argument("--prompt", default="auto",
                   help="finetune --prompt: the format trained, then used to translate (default: auto = the "
                        "model's inference format, few-shot for the packaged base model)")
    p.add_argument("--train-dtype", default="auto", help="finetune --dtype (default: auto)")
    p.add_argument("--synth", type=int, default=800, help="train sources the teacher translates (default: 800)")
    args = p.parse_args()

    work = Path(args.work)
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    drop = removed_layers(work, args)
    pruned = work / "pruned"
    if not (pruned / "mtprune.json").exists():
        run("prune", MODEL, "--drop", ",".join(map(str, drop)), "-o", pruned, "--force")
    unpruned_ckpt = json.loads((pruned / "mtprune.json").read_text())["source"]["spec"]
    n_layers = json.loads((pruned / "mtprune.json").read_text())["original_num_layers"]

    healed = work / "healed"
    if not (healed / "mtprune.json").exists():
        run("heal", pruned, "-o", healed, "--force")
    synth = work / "synth.tsv"
    if not synth.exists():
        run("synthesize", MODEL, *DATA, "--part", "train", "--limit", args.synth, "--shots-from", "sample:en-de",
            "--dtype", "float32", "-o", synth)

    trained = {
        "unpruned + SFT": sft(unpruned_ckpt, work / "unpruned-sft", args),
        "pruned + heal": healed,
        "pruned + SFT": sft(pruned, work / "pruned-sft", args),
        "pruned + KD": sft(pruned, work / "pruned-kd", args, "--teacher", MODEL),
        "pruned + synth -> SFT": sft(pruned, work / "pruned-synth-sft", args,
                                     data=("--data", synth, "--src", "en", "--tgt", "de")),
        "pruned + heal -> KD": sft(healed, work / "healed-kd", args, "--teacher", MODEL),
    }
    scores = {"unpruned": evaluate(MODEL, work, "unpruned", args), "pruned": evaluate(pruned, work, "pruned", args)}
    minutes = {"unpruned": 0.0, "pruned": 0.0}
    for name, folder in trained.items():
        scores[name] = evaluate(folder, work, folder.name, args)
        minutes[name] = training_minutes(folder)
    print_table(scores, minutes, drop, n_layers)


def print_table(scores: dict[str, float], minutes: dict[str, float], drop: list[int], n_layers: int) -> None:
    base, fair = scores["unpruned"], scores["unpruned + SFT"]
    print(f"\n{'model':<24} {'chrF++':>7} {'% unpruned':>11} {'% fair ref':>11} {'train min':>10}")
    for name, value in scores.items():
        print(f"{name:<24} {value:7.2f} {100 * value / base:10.1f}% {100 * value / fair:10.1f}% {minutes[name]:10.1f}")
    recovered = {k: v for k, v in scores.items() if k.startswith("pruned +")}
    best = max(recovered, key=recovered.get)
    print(f"kept: {100 * recovered[best] / fair:.1f}% of the fair reference's chrF++ ({len(drop)} of {n_layers} layers "
          f"removed, best: {best.removeprefix('pruned + ')}, {minutes[best]:.0f} min)")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
