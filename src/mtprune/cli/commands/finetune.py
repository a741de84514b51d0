"""``mtprune finetune``: recovery fine-tuning (SFT, optional logit distillation) of a pruned model."""
from __future__ import annotations

import argparse
from pathlib import Path


DESCRIPTION = """\
Fine-tune STUDENT (typically a checkpoint written by `mtprune prune`) on parallel data to
recover the quality pruning cost: the paper's SFT step. The loss is on target tokens only;
the prompt is built exactly as translate/evaluate build it, and the format is recorded in
mtprune.json, so the fine-tuned model is used with the format it was trained on. The LM head
runs on target positions only (on gemma-3-270m it is most of a step's compute). Batches are
grouped by length; the learning rate follows a cosine schedule after a warm-up.

The dev loss (the --dev-part of each --data) is measured every --eval-every steps; training
stops after --patience evaluations without improvement, and the best checkpoint is the one
saved to OUT, as a standard checkpoint (reload-checked, atomic, --force to replace).
Checkpoints go to OUT.checkpoints every --save-every steps; after a crash or a kill, rerun
with --resume to continue (same final weights as an uninterrupted run).

Runs on transformers' Trainer: `accelerate launch --num_processes N -m mtprune finetune ...`
trains data-parallel on N devices (or with FSDP / DeepSpeed from an accelerate config)."""

EPILOG = """\
cost (measured: gemma-3-270m pruned to 16 layers, fp32, 2 busy CPU cores):
  one step, --batch-size 8  --prompt zeroshot (~65 tokens an example): 38 s; few-shot (3 examples,
                            ~285 tokens): 65 s. Projecting only target positions saves 1.4x (zero-shot)
                            to 2.5x (few-shot) over full-sequence logits. Dev loss: a forward pass per 8
                            dev segments every --eval-every steps.
  --freeze-embeddings / --train-layers / --lora  fewer gradients and a much smaller optimizer state
                            (embeddings are 63% of gemma-3-270m's weights)
  --teacher                 + one teacher forward pass over the training data, once (cached on disk)
  --gradient-checkpointing  recomputes activations in the backward pass: slower, far less memory
  bf16 (--dtype auto)       on GPUs and on CPUs with AMX/AVX512-BF16; plain AVX2 CPUs train in fp32

examples:
  mtprune prune gemma-3-270m --drop 7,9 -o pruned
  mtprune finetune pruned --data sample:en-de -o pruned-sft --max-steps 100 --lr 5e-5
  mtprune finetune pruned --data sample:en-de -o pruned-kd --teacher --kd-weight 0.5 --max-steps 100
  mtprune finetune pruned --data synth.tsv --src en --tgt de --data sample:en-de -o mixed --epochs 1
  mtprune finetune pruned --data sample:en-de -o healed --train-layers gaps --max-steps 50
  mtprune finetune gemma-3-270m --data sample:en-de --prompt zeroshot -o zs   # no few-shot prefix needed after
  mtprune finetune pruned --data sample:en-de -o pruned-sft --max-steps 100 --resume   # after a kill
  accelerate launch --num_processes 2 -m mtprune finetune pruned --data sample:en-de -o out   # 2 GPUs
  accelerate launch --multi_gpu --num_processes 2 -m mtprune finetune ... --device cpu   # 2 CPU processes
  (accelerate's --cpu flag starts one process only: multi-CPU without mpirun goes through --multi_gpu)
"""
# FinetuneConfig fields named otherwise on the command line
FLAGS = {"student": "STUDENT", "out": "--output", "learning_rate": "--lr"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("finetune", help="recovery fine-tuning (SFT, logit distillation, LoRA)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("student", metavar="STUDENT", help="model to fine-tune: a checkpoint folder (e.g. from `mtprune "
                   "prune`), a packaged model, a .gguf file or a hub id")
    p.add_argument("-o", "--output", required=True, help="output folder (must be empty or absent, or use --force)")
    _add_data(p)
    _add_training(p)
    _add_trainable(p)
    _add_teacher(p)
    _add_run(p)
    p.set_defaults(func=run)
    return p


def _add_data(p: argparse.ArgumentParser) -> None:
    from ..options import add_shots_by_argument

    g = p.add_argument_group("data (repeat --data/--src/--tgt to mix several pairs or sources)")
    g.add_argument("--data", action="append", metavar="SPEC", required=True,
                   help="parallel data with references: .tsv/.csv/.jsonl/.tmx, text + --ref, a dataset folder, "
                   "hf:NAME, sample:SRC-TGT, or the TSV of `mtprune synthesize`")
    g.add_argument("--src", action="append", metavar="LANG", help="source language of the matching --data")
    g.add_argument("--tgt", action="append", metavar="LANG", help="target language of the matching --data")
    g.add_argument("--ref", help="reference file for a plain-text --data")
    g.add_argument("--split", help="split of an hf: dataset or dataset folder")
    g.add_argument("--src-col", help="source column or field")
    g.add_argument("--tgt-col", help="reference column or field")
    g.add_argument("--part", default="train", choices=("all", "train", "dev", "test"),
                   help="hash partition trained on (default: train; the test part stays held out)")
    g.add_argument("--dev-part", default="dev",
                   help="partition for the dev loss, or 'none' (no dev loss, no early stopping) (default: dev)")
    g.add_argument("--limit", type=int, metavar="N", help="train on N segments per --data (seeded draw)")
    g.add_argument("--dev-limit", type=int, default=200, metavar="N",
                   help="dev segments per --data (default: 200; each dev pass costs one forward pass over them)")
    g.add_argument("--prompt", default="auto",
                   help="the format trained on, and recorded for translate/evaluate: auto (the format the student "
                   "was fine-tuned with before, else its chat template, else zeroshot), chat, fewshot, zeroshot (the "
                   "paper's instruction as plain text, no examples: a base model then needs no few-shot prefix, so "
                   "each later translation reads a fraction of the tokens), or a template FILE (default: auto)")
    g.add_argument("--shots", type=int, default=3,
                   help="few-shot examples in fewshot prompts, the ones evaluate uses (default: 3); they are left "
                   "out of the training examples. Longer prompts cost more per step")
    g.add_argument("--shots-from", metavar="SPEC",
                   help="draw few-shot examples from this data (default: the data's train part, else the bundled "
                   "sample, as evaluate does)")
    add_shots_by_argument(g)


def _add_training(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (default: 2e-5, the paper's)")
    g.add_argument("--epochs", type=float, default=1.0, help="passes over the training data (default: 1)")
    g.add_argument("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    g.add_argument("--batch-size", type=int, default=8, help="examples per device per step (default: 8)")
    g.add_argument("--grad-accum", type=int, default=1,
                   help="batches accumulated per optimizer step (default: 1): a larger effective batch at the "
                   "memory of one")
    g.add_argument("--max-length", type=int, default=512,
                   help="longest example in tokens, prompt included; longer ones are left out (default: 512)")
    g.add_argument("--warmup", type=float, default=0.03,
                   help="linear warm-up: a fraction of the steps (< 1) or a number of steps (default: 0.03)")
    g.add_argument("--eval-every", type=int, default=100, help="dev loss every N steps (default: 100)")
    g.add_argument("--patience", type=int, default=5,
                   help="stop after N dev evaluations without improvement; 0 never stops early (default: 5)")
    g.add_argument("--save-every", type=int,
                   help="checkpoint every N steps, for --resume; any N, also fewer than --eval-every (every "
                   "evaluation is saved too: the best checkpoint is chosen among them) (default: --eval-every)")
    g.add_argument("--seed", type=int, default=0, help="seed for data order, --limit and LoRA init (default: 0)")
    g.add_argument("--dtype", default="auto",
                   help="compute precision: auto (bf16 on GPUs and on CPUs with native bf16, else float32), float32, "
                   "bfloat16, float16 (GPU). Weights stay fp32 during training; OUT is saved in the student's dtype")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default: auto)")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass: slower steps, far less memory")
    g.add_argument("--optimizer", default="adamw_torch",
                   help="a transformers optimizer: adamw_torch (fp32 states, 8 bytes a trainable parameter), "
                   "adamw_8bit / paged_adamw_8bit (2 bytes; need bitsandbytes), adafactor, ... (default: adamw_torch)")


def _add_trainable(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what is trained (default: every parameter)")
    g.add_argument("--train-layers", metavar="IDS",
                   help="train only these layers, by ORIGINAL 0-based id (e.g. 6,8,10), or 'gaps': the kept layers "
                   "right before and after each removed one. Cheaper; embeddings and head stay frozen")
    g.add_argument("--freeze-embeddings", action="store_true",
                   help="freeze input embeddings and LM head (on gemma-3-270m 63%% of the weights: a much smaller "
                   "optimizer state)")
    g.add_argument("--lora", action="store_true",
                   help="train LoRA adapters on every linear layer (peft) instead of the weights; merged on export")
    g.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (default: 16)")
    g.add_argument("--lora-alpha", type=int, default=32, help="LoRA alpha (default: 32)")


def _add_teacher(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("logit distillation")
    g.add_argument("--teacher", nargs="?", const="auto", metavar="MODEL",
                   help="also distil the logits of MODEL (same tokenizer). --teacher alone: the unpruned source named "
                   "in STUDENT's mtprune.json. Costs one teacher pass over the data, cached on disk")
    g.add_argument("--kd-weight", type=float, default=0.5,
                   help="loss = w x KL(teacher || student) + (1 - w) x cross-entropy (default: 0.5)")
    g.add_argument("--temperature", type=float, default=1.0, help="distillation temperature (default: 1.0)")
    g.add_argument("--top-k", type=int, default=32,
                   help="teacher tokens kept per position (default: 32; the rest of its distribution is dropped)")
    g.add_argument("--teacher-cache", metavar="DIR",
                   help="folder of cached teacher top-k files (default: ~/.cache/mtprune/teacher-topk)")


def _add_run(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the checkpoint folder")
    g.add_argument("--checkpoint-dir", metavar="DIR", help="where checkpoints go (default: OUT.checkpoints)")
    g.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoint folder after success")
    g.add_argument("--force", action="store_true", help="replace a non-empty OUT and earlier checkpoints")
    g.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    g.add_argument("--fit", choices=("check", "auto"), default="check",
                   help="memory, estimated from the model's config and the tokenized data before a weight loads: "
                   "check refuses a run that does not fit this machine (available RAM, or the GPU's free memory) and "
                   "names the options that would, each with its estimate; auto takes the first that fits (a smaller "
                   "micro-batch with more --grad-accum, --gradient-checkpointing, 8-bit AdamW, --freeze-embeddings, "
                   "--lora) and records it (default: check)")
    g.add_argument("--skip-memory-check", action="store_true", help="run even where the estimate does not fit")


def config_from_args(args: argparse.Namespace):
    from ..options import weighted_data_specs_from_args
    from ...recover.finetune import FinetuneConfig

    data = [spec for spec, _ in weighted_data_specs_from_args(args)]  # no --weight: each 1
    return FinetuneConfig(
        student=args.student, out=Path(args.output), data=data, prompt=args.prompt, shots=args.shots,
        shots_from=args.shots_from, shots_by=args.shots_by,
        dev_part=args.dev_part, dev_limit=args.dev_limit, learning_rate=args.lr, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum, max_length=args.max_length,
        warmup=args.warmup, eval_every=args.eval_every, patience=args.patience or None, save_every=args.save_every,
        resume=args.resume, seed=args.seed, lora=args.lora, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        train_layers=args.train_layers, freeze_embeddings=args.freeze_embeddings,
        gradient_checkpointing=args.gradient_checkpointing, optimizer=args.optimizer, dtype=args.dtype,
        device=args.device,
        teacher=args.teacher, kd_weight=args.kd_weight, temperature=args.temperature, top_k=args.top_k,
        teacher_cache=Path(args.teacher_cache) if args.teacher_cache else None,
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        keep_checkpoints=args.keep_checkpoints, force=args.force, verify=not args.no_verify, fit=args.fit,
        memory_check=not args.skip_memory_check,
        progress=not getattr(args, "quiet", False),
    )


def run(args: argparse.Namespace) -> int:
    from ...recover.trainer import run_finetune

    config = config_from_args(args)
    config.validate(FLAGS)
    result = run_finetune(config)
    if not result.record:  # not the main process of a multi-process launch
        return 0
    rec = result.recovery
    best = f", best dev loss {rec['best_dev_loss']:.4f} (step {rec['best_checkpoint_step']})" \
        if rec.get("best_dev_loss") is not None else ""
    print(f"fine-tuned {args.student} ({rec['method']}): {rec['steps']} steps in {rec['seconds'] / 60:.1f} min{best}")
    verification = result.record["recovery"][-1].get("verification")
    print("reload check: OK, greedy outputs equal" if verification else "reload check: skipped (--no-verify)")
    print(f"prompt format: {rec['prompt']['mode']} (recorded in {result.out}/mtprune.json)")
    print(f"saved to {result.out}")
    return 0
