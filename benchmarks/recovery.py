"""Recovery after pruning: how much of the translation quality each method brings back, at the same
step budget, on the bundled sample or on a second domain (software strings, benchmarks/domains.py).

On the packaged gemma-3-270m with its vocabulary trimmed to the data (as the quickstart does), rows:

  unpruned (as used)          the base model with its own prompt: few-shot, examples retrieved from the
                              train part (what a user gets without any compression)
  reference: unpruned + SFT   the fair reference: the trimmed unpruned model with the same fine-tuning,
                              and the teacher of the "from reference" rows ("teacher correction")
  pruned                      the search's choice of --remove layers (or --drop)
  pruned + SFT                the paper's fine-tuning
  pruned + KD from base       SFT with logit distillation from the unpruned (trimmed) base model
  pruned + KD from reference  the same from the fine-tuned reference (teacher-corrected)
  pruned + both from ref.     the reference's translations as targets (sequence-level) + its logits
  pruned + heal -> KD ref.    local healing of the gaps first, then KD from the reference
  pruned ref.                 the search run on the fine-tuned reference (zero-shot, as it translates) and
                              its choice removed from the reference (the quickstart: prune.model: reference)
  pruned ref. + SFT           that model fine-tuned again
  pruned ref. + KD from ref.  that model distilled from the reference it was cut from (the quickstart's)
  reference + KD from itself  the control of the two rows above: the reference given their second pass
                              (the student has had the reference's training and this one)

Every trained row takes --steps optimizer steps of --batch-size examples (the reference too), in the
zero-shot prompt the quickstart trains with. Each row: test chrF++, % of the unpruned model as used,
% of the fair reference, repetition loops, training minutes. Last line:
``kept: X.X% of the fair reference's chrF++ (K of N layers removed, best: METHOD)``.

Every step is a real ``mtprune`` command (run in this process), so the figures are what a user
gets. Finished steps are reused from --work (delete it, or pass --fresh, to measure again).

    python benchmarks/recovery.py --remove 2 --steps 32 --ref-lr 2e-5 --ref-steps 48  # the quickstart's settings
    python benchmarks/recovery.py --remove 4 --steps 64 --domain software
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

MODEL = "gemma-3-270m"


def run(*argv) -> None:
    argv = [str(a) for a in argv]
    print("$ mtprune " + " ".join(argv), flush=True)
    code = mtprune(["-q", *argv])
    if code != 0:
        sys.exit(f"mtprune {argv[0]} failed with exit code {code}")


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work)
        if args.domain == "software":
            tsv = software_strings(self.work.parent / "domains")
            self.data = ["--data", tsv, "--src", "en", "--tgt", "de"]
        else:
            self.data = ["--data", "sample:en-de"]

    def evaluate(self, model, name: str) -> dict:
        out = self.work / f"eval-{name}.json"
        if not out.exists():
            run("evaluate", model, *self.data, "--part", "test", "--limit", self.args.test, "--dtype", "float32",
                "--metrics", "chrf++", "--json", out)
        result = json.loads(out.read_text())
        return {"chrf": result["scores"]["chrf++"]["value"], "loops": result["failures"]["repetitions"],
                "n": result["failures"]["n"]}

    def trimmed(self) -> Path:
        out = self.work / "trimmed"
        if not (out / "mtprune.json").exists():
            run("trim-vocab", MODEL, *self.data, "--part", "train", "-o", out, "--force")
        return out

    def removed(self, model: Path, name: str, drop: str | None = None) -> list[int]:
        """The layers the exact search removes from ``model`` (its own prompt format), or ``drop``."""
        if drop:
            return [int(i) for i in drop.split(",")]
        plan = self.work / f"search-{name}-{self.args.remove}" / "plan.json"
        if not plan.exists():
            resume = ["--resume"] if (plan.parent / "trace.jsonl").exists() else []  # an interrupted search
            run("search", model, *self.data, "--part", "dev", "--limit", self.args.dev, "--remove",
                self.args.remove, "--dtype", self.args.train_dtype, *resume, "-o", plan.parent)
        return json.loads(plan.read_text())["removed"]

    def prune(self, model: Path, drop: list[int], out: Path) -> Path:
        if not (out / "mtprune.json").exists():
            run("prune", model, "--drop", ",".join(map(str, drop)), "-o", out, "--force")
        return out

    def finetune(self, student, out: Path, *extra, data=None, steps: int | None = None,
                 lr: float | None = None) -> Path:
        """``finetune`` with the benchmark's settings (dev loss on the data's dev part); ``steps`` and
        ``lr`` where a row continues from the trained reference with its own (--ref-steps, --ref-lr)."""
        a = self.args
        steps, lr = steps or a.steps, lr or a.lr
        if (steps, lr) != (a.steps, a.lr):  # its own folder: a finished row is reused only with its settings
            out = out.with_name(f"{out.name}-lr{lr:g}-s{steps}")
        if not (out / "mtprune.json").exists():
            limit = ["--limit", a.train_limit] if a.train_limit else []
            run("finetune", student, *(data or [*self.data, "--part", "train", *limit]), "--dev-limit", a.dev_loss,
                "--max-steps", steps, "--batch-size", a.batch_size, "--lr", lr, "--eval-every",
                a.eval_every or max(steps // 2, 1), "--prompt", a.prompt, "--dtype", a.train_dtype, *extra,
                "-o", out, "--force")
        return out

    def synthesize(self, teacher: Path) -> Path:
        out = self.work / "reference-translations.tsv"
        if not out.exists():
            limit = ["--limit", self.args.train_limit] if self.args.train_limit else []
            run("synthesize", teacher, *self.data, "--part", "train", *limit, "-o", out)
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for models and scores (default: runs/bench-recovery/DOMAIN-rREMOVE)")
    p.add_argument("--fresh", action="store_true", help="delete --work first")
    p.add_argument("--domain", choices=("sample", "software"), default="sample",
                   help="sample: the bundled Bible verses (en-de); software: Django's German UI strings")
    p.add_argument("--drop", help="layers to remove from the base model (original ids), instead of its search")
    p.add_argument("--drop-reference", help="layers to remove from the reference, instead of its search")
    p.add_argument("--remove", type=int, default=2, help="layers the search removes (default: 2)")
    p.add_argument("--dev", type=int, default=16, help="dev segments for each search (default: 16)")
    p.add_argument("--test", type=int, default=48, help="held-out test segments for chrF++ (default: 48)")
    p.add_argument("--steps", type=int, default=32, help="optimizer steps of each training run (default: 32)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4, help="(default: 1e-4, the quickstart's reference)")
    p.add_argument("--ref-steps", type=int, help="steps of the second-pass rows, which go on training the "
                   "(pruned) reference (pruned ref. + ..., reference + KD from itself; default: --steps; the "
                   "quickstart: 48)")
    p.add_argument("--ref-lr", type=float, help="their learning rate (default: --lr; the quickstart: 2e-5, the "
                   "student continues from a trained model)")
    p.add_argument("--dev-loss", type=int, default=32, help="dev segments for the dev loss (default: 32)")
    p.add_argument("--train-limit", type=int, default=256,
                   help="training segments (default: 256, the quickstart's; the teacher runs on them once)")
    p.add_argument("--eval-every", type=int, help="steps between dev losses (default: half of --steps)")
    p.add_argument("--prompt", default="zeroshot", help="finetune --prompt (default: zeroshot, the quickstart's)")
    p.add_argument("--train-dtype", default="auto", help="finetune --dtype (default: auto)")
    args = p.parse_args()
    args.work = args.work or f"runs/bench-recovery/{args.domain}-r{args.remove}-s{args.steps}"

    bench = Bench(args)
    work = bench.work
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    trimmed = bench.trimmed()
    drop = bench.removed(trimmed, "base", args.drop)
    pruned = bench.prune(trimmed, drop, work / "pruned")
    n_layers = json.loads((pruned / "mtprune.json").read_text())["original_num_layers"]

    reference = bench.finetune(trimmed, work / "reference")
    drop_ref = bench.removed(reference, "reference", args.drop_reference)
    pruned_ref = bench.prune(reference, drop_ref, work / "pruned-reference")
    healed = work / "healed"
    if not (healed / "mtprune.json").exists():
        run("heal", pruned, *bench.data, "--part", "train", "-o", healed, "--force")
    synth = bench.synthesize(reference)
    teacher = ["--teacher", reference]
    continued = {"steps": args.ref_steps, "lr": args.ref_lr}  # the rows that go on from the trained reference
    trained = {
        "reference: unpruned + SFT": reference,
        "pruned + SFT": bench.finetune(pruned, work / "pruned-sft"),
        "pruned + KD from base": bench.finetune(pruned, work / "pruned-kd-base", "--teacher", trimmed),
        "pruned + KD from reference": bench.finetune(pruned, work / "pruned-kd-ref", *teacher),
        "pruned + both from ref.": bench.finetune(pruned, work / "pruned-both-ref", *teacher,
                                                  data=["--data", synth, "--src", "en", "--tgt", "de"]),
        "pruned + heal -> KD ref.": bench.finetune(healed, work / "healed-kd-ref", *teacher),
        "pruned ref.": pruned_ref,
        "pruned ref. + SFT": bench.finetune(pruned_ref, work / "pruned-reference-sft", **continued),
        "pruned ref. + KD from ref.": bench.finetune(pruned_ref, work / "pruned-reference-kd-ref", *teacher,
                                                     **continued),
        # the control of the two rows above: the reference given the same second pass (KD from itself)
        "reference + KD from itself": bench.finetune(reference, work / "reference-kd-self", *teacher, **continued),
    }
    rows = {"unpruned (as used)": bench.evaluate(MODEL, "unpruned"), "pruned": bench.evaluate(pruned, "pruned")}
    minutes = {}
    for name, folder in trained.items():
        rows[name] = bench.evaluate(folder, folder.name)
        if name != "pruned ref.":
            minutes[name] = training_minutes(folder)
    print_table(rows, minutes, {"base": drop, "reference": drop_ref}, n_layers, args)


def training_minutes(model: Path) -> float:
    record = json.loads((model / "mtprune.json").read_text())
    return sum(entry.get("seconds", 0.0) for entry in record.get("recovery", [])) / 60


def print_table(rows: dict[str, dict], minutes: dict[str, float], drops: dict[str, list[int]], n_layers: int,
                args) -> None:
    base, fair = rows["unpruned (as used)"]["chrf"], rows["reference: unpruned + SFT"]["chrf"]
    drop = drops["base"]
    print(f"\n{args.domain}: {args.test} test segments, {len(drop)} of {n_layers} layers removed (from the base "
          f"model: {drop}; from the reference: {drops['reference']}), {args.steps} steps x {args.batch_size} per "
          f"trained row, lr {args.lr}, prompt {args.prompt}, train dtype {args.train_dtype}"
          + (f"; second-pass rows {args.ref_steps or args.steps} steps, lr {args.ref_lr or args.lr}"
             if args.ref_steps or args.ref_lr else ""))
    print(f"{'model':<28} {'chrF++':>7} {'% as used':>10} {'% fair ref':>11} {'loops':>6} {'train min':>10}")
    for name, r in rows.items():
        m = f"{minutes[name]:10.1f}" if name in minutes else f"{'-':>10}"
        print(f"{name:<28} {r['chrf']:7.2f} {100 * r['chrf'] / base:9.1f}% {100 * r['chrf'] / fair:10.1f}% "
              f"{r['loops']:>3}/{r['n']:<2} {m}")
    recovered = {k: v["chrf"] for k, v in rows.items() if k.startswith(("pruned +", "pruned ref. +"))}
    best = max(recovered, key=recovered.get)
    print(f"kept: {100 * recovered[best] / fair:.1f}% of the fair reference's chrF++ ({len(drop)} of {n_layers} layers "
          f"removed, best: {best}, {rows[best]['loops']} loops); {recovered[best] - base:+.2f} chrF++ against the "
          "unpruned model as used")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"benchmark took {(time.time() - t0) / 60:.1f} min")
