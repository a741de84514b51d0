"""``mtprune heal``: local healing of the layers next to the removed ones (no labels)."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Local healing, cheap enough for a laptop: for each gap left by removed layers, the kept layer(s) right after "
    "the gap are trained so that, from the unpruned teacher's hidden state entering the gap, they reproduce the "
    "teacher's hidden state after it (a regression on hidden states: no LM head, no labels). Everything else stays "
    "frozen and the architecture unchanged, so transformers and vLLM load the result as before. The gaps and the "
    "teacher come from STUDENT/mtprune.json (written by `mtprune prune`); --teacher overrides it (for a student "
    "without mtprune.json its layers are matched to the teacher's by their weights). Writes OUT as `mtprune prune` "
    "does (reload check, atomic, --force), with a `recovery` entry in mtprune.json: loss before/after per gap, "
    "data hash, steps, learning rate, teacher fingerprint, seconds. Layer ids are ORIGINAL 0-based ids."
)
EPILOG = """texts (--text): prompt (default with references): inference prompts of --shots examples + a segment and its
  reference, in the --prompt format, as the model reads them while translating; source: source sentences alone
  (data without references).
losses (--loss): relmse (default) ||student - teacher||^2 / ||teacher||^2 per token; mse; cosine.

examples:
  mtprune prune gemma-3-270m --drop 7,9 -o pruned && mtprune heal pruned -o healed
  mtprune heal pruned --data news.en.txt --src en --tgt de --text source --limit 1000 -o healed
  mtprune heal ./other-tool-output --teacher ./unpruned --layers-per-gap 2 --epochs 4 -o healed

cost: one forward pass of the teacher without its LM head up to the last layer needed, then per gap the forward
and backward passes of 1-2 layers only (teacher hidden states are kept in memory: 2 x tokens x hidden x 4 bytes
per gap). Measured: gemma-3-270m without layers 7 and 9, defaults (256 segments, 1 epoch, fp32), 2 CPU cores
shared with other jobs: 3.9 min (teacher pass 2.1 min, training 2 x 40 s; 5.3 min with start-up and the reload
check); held-out chrF++ (sample:en-de test, 48 segments) 13.54 -> 16.50, repetition loops 27 -> 8 of 48."""
FLAGS = {"student": "STUDENT", "out": "--output"}  # HealConfig fields named otherwise on the command line


def add_parser(subparsers) -> None:
    from .memory_check import add_skip_argument

    p = subparsers.add_parser("heal", help="train the layers after each gap to mimic the removed ones (minutes)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("student", metavar="STUDENT", help="pruned checkpoint folder (with its mtprune.json)")
    p.add_argument("-o", "--output", required=True, help="output folder (must be empty or absent, or use --force)")
    p.add_argument("--teacher", metavar="MODEL",
                   help="the unpruned model (default: the source in STUDENT/mtprune.json)")
    d = p.add_argument_group("data (default: --data sample:en-de --part train --limit 256)")
    d.add_argument("--data", default="sample:en-de", metavar="SPEC",
                   help="texts to heal on, any format `mtprune translate --data` reads (default: sample:en-de)")
    d.add_argument("--src", metavar="LANG", help="source language (default: from sample:SRC-TGT)")
    d.add_argument("--tgt", metavar="LANG", help="target language (default: from sample:SRC-TGT)")
    d.add_argument("--ref", metavar="FILE", help="references for a plain-text --data file")
    d.add_argument("--split", help="split of an hf: dataset or dataset folder")
    d.add_argument("--src-col", metavar="NAME", help="source column or field")
    d.add_argument("--tgt-col", metavar="NAME", help="reference column or field")
    d.add_argument("--part", default="train", choices=("all", "train", "dev", "test"),
                   help="hash partition of the data (default: train, so that dev and test stay unseen)")
    d.add_argument("--limit", type=int, default=256, metavar="N",
                   help="segments, drawn with a seeded shuffle (default: 256)")
    d.add_argument("--text", default="auto", choices=("auto", "prompt", "source"),
                   help="what the texts are (default: auto = prompt with references, else source)")
    d.add_argument("--prompt", default="auto",
                   help="prompt format for --text prompt: auto, chat, fewshot, FILE (default: auto)")
    d.add_argument("--shots", type=int, default=3, help="examples per prompt text (default: 3, as translate)")
    t = p.add_argument_group("training")
    t.add_argument("--loss", default="relmse", choices=("relmse", "mse", "cosine"), help="(default: relmse)")
    t.add_argument("--epochs", type=float, default=1.0, help="passes over the texts per gap (default: 1)")
    t.add_argument("--steps", type=int, help="optimizer steps per gap (overrides --epochs)")
    t.add_argument("--lr", type=float, default=1e-4, help="peak learning rate, cosine schedule (default: 1e-4)")
    t.add_argument("--batch-size", type=int, default=4, help="texts per step (default: 4)")
    t.add_argument("--max-length", type=int, default=384, help="tokens per text, longer ones are cut (default: 384)")
    t.add_argument("--layers-per-gap", type=int, default=1, choices=(1, 2),
                   help="kept layers trained after each gap (default: 1)")
    t.add_argument("--seed", type=int, default=0, help="seed for the data draw and training (default: 0)")
    t.add_argument("--dtype", default="float32",
                   help="training dtype (default: float32); OUT is saved in the dtype STUDENT was saved in")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    add_skip_argument(p)
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..options import data_spec_from_args
    from ...recover.heal import HealConfig, run_heal

    cfg = HealConfig(
        student=args.student, out=Path(args.output), data=data_spec_from_args(args), teacher=args.teacher,
        loss=args.loss, epochs=args.epochs, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
        max_length=args.max_length, layers_per_gap=args.layers_per_gap, text=args.text, prompt=args.prompt,
        shots=args.shots, seed=args.seed, dtype=args.dtype, device=args.device, force=args.force,
        verify=not args.no_verify, progress=not args.quiet,
    )
    cfg.validate(FLAGS)
    result = run_heal(cfg)
    for unit in result.units:
        print(f"removed {unit['removed']} -> trained {unit['trained']}: loss {unit['loss_before']:.5f} -> "
              f"{unit['loss_after']:.5f} ({unit['steps']} steps, {unit['seconds']:.0f} s)")
    for gap in result.skipped_gaps:
        print(f"removed {list(gap)}: no kept layer after them, not healed")
    entry = result.record["recovery"][-1]
    check = "reload check: OK" if entry.get("verification") else "reload check: skipped (--no-verify)"
    print(f"{check}; {entry['seconds']:.0f} s in all; saved to {result.out}")
    return 0
