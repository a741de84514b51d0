"""``mtprune prune``: remove decoder layers (by id or by a search plan) and save a standard checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import LAYER_IDS_NOTE

EPILOG = """examples:
  mtprune prune gemma-3-270m --drop 3,7 -o out/gemma-16l
  mtprune prune ./my-model --keep 0-11,14,15 -o out/m
  mtprune prune gemma-3-270m --plan runs/s1/plan.json --layers 2 -o out/g
  mtprune prune gemma-3-270m --plan runs/s1/plan.json --depth-for 'params<=230M' -o out/g
  mtprune prune ./aya-8b --plan runs/aya/plan.json --depth-for 'tokens/s>=900' --speed-from bench.json -o out/a"""
FLAGS = {"model": "MODEL", "out": "--output"}  # PruneConfig fields named otherwise on the command line


def add_parser(subparsers) -> None:
    from ..options import add_budget_arguments, add_model_arguments

    p = subparsers.add_parser(
        "prune",
        help="remove layers and save a standard checkpoint",
        description="Remove decoder layers from MODEL and save a standard transformers checkpoint "
        "(safetensors, config, tokenizer, generation config) with mtprune.json provenance and a model card. "
        "The saved model is reloaded and its greedy outputs compared with the in-memory pruned model. "
        + LAYER_IDS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    add_model_arguments(p, dtype_default="source")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--drop", help="original layer ids to remove, e.g. 3,7 or 10-13")
    which.add_argument("--keep", help="original layer ids to keep (all others are removed)")
    which.add_argument("--plan", help="plan.json written by `mtprune search`: remove its layers in its order")
    p.add_argument("--layers", type=int, default=None,
                   help="with --plan: apply only the first N removals of the plan (default: all)")
    add_budget_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output folder (must be empty or absent, or use --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...compress.prune import run_prune
    from .info import human

    cfg = config_from_args(args)
    cfg.validate(FLAGS)
    result = run_prune(cfg)
    if result.depth:
        print(_depth_text(result.depth))
    rec = result.record
    print(
        f"pruned {args.model}: {rec.original_num_layers} -> {len(rec.kept)} layers "
        f"(removed original ids {rec.removed}); parameters {human(rec.params_before)} -> "
        f"{human(rec.params_after)} ({rec.params_after / rec.params_before:.1%})"
    )
    if rec.verification:
        v = rec.verification
        print(f"reload check: OK, greedy outputs equal on {v['prompts']} prompts x {v['tokens_per_prompt']} tokens")
    else:
        print("reload check: skipped (--no-verify)")
    print(f"saved to {result.out}")
    return 0


def config_from_args(args: argparse.Namespace):
    """The PruneConfig of the command's options (layer ids parsed here, where their flag is known)."""
    from ...compress.prune import PruneConfig
    from ...model.layers import parse_layer_ids

    return PruneConfig(
        model=args.model, out=Path(args.output),
        drop=parse_layer_ids(args.drop, option="--drop") if args.drop else None,
        keep=parse_layer_ids(args.keep, option="--keep") if args.keep else None,
        plan=args.plan, layers=args.layers, depth_for=args.depth_for, speed_from=args.speed_from,
        speed_batch_size=args.speed_batch_size, dtype=args.dtype, device=args.device, force=args.force,
        verify=not args.no_verify,
    )


def _depth_text(depth: dict) -> str:
    """The depth --depth-for chose, with its predicted size (and speed)."""
    prediction = depth["prediction"]
    speed = (f", {prediction['tokens_per_s']:.1f} tokens/s ({prediction['speed_from']}, batch "
             f"{depth['speed_batch_size']})" if depth["speed_batch_size"] is not None else "")
    return (f"--depth-for {depth['budget']}: removing the plan's first {depth['layers']} of {depth['planned']} layers "
            f"-> {prediction['params'] / 1e6:.1f}M parameters, {prediction['size_bytes'] / 1e9:.3f} GB{speed}")
