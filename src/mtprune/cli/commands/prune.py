"""``mtprune prune``: remove decoder layers (by id or by a search plan) and save a standard checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import ConfigError
from ..options import LAYER_IDS_NOTE

EPILOG = """examples:
  mtprune prune gemma-3-270m --drop 3,7 -o out/gemma-16l
  mtprune prune ./my-model --keep 0-11,14,15 -o out/m
  mtprune prune gemma-3-270m --plan runs/s1/plan.json --layers 2 -o out/g
  mtprune prune gemma-3-270m --plan runs/s1/plan.json --depth-for 'params<=230M' -o out/g
  mtprune prune ./aya-8b --plan runs/aya/plan.json --depth-for 'tokens/s>=900' --speed-from bench.json -o out/a"""


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
    from ...model.export import check_output_dir, export_plan, export_pruned
    from ...model.layers import keep_from_drop, num_layers
    from ...model.load import load_model, peek_num_layers, resolve_source
    from .info import human

    _check_options(args)
    out = Path(args.output)
    check_output_dir(out, args.force)
    source = resolve_source(args.model)
    if source.path and Path(source.path).resolve() in (out.resolve(), *out.resolve().parents):
        raise ConfigError(f"-o {out} is the model folder {source.path} or inside it; write the pruned model elsewhere")
    n = peek_num_layers(source)
    plan, layers, drop = _requested(args, n)  # every check that can fail before loading weights
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    if plan is not None:
        result = export_plan(loaded, plan, out, path=args.plan, layers=layers, force=args.force,
                             verify=not args.no_verify)
    else:
        if drop is None:  # --keep, where the layer count could not be read before loading
            drop = _requested(args, num_layers(loaded.model))[2]
        result = export_pruned(loaded, keep_from_drop(drop, num_layers(loaded.model)), out, removed_order=drop,
                               force=args.force, verify=not args.no_verify)
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
    print(f"saved to {out}")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    if (args.layers is not None or args.depth_for) and not args.plan:
        raise ConfigError("--layers and --depth-for only apply with --plan")
    if args.layers is not None and args.depth_for:
        raise ConfigError("give --layers N or --depth-for BUDGET, not both")
    if args.speed_from and not args.depth_for:
        raise ConfigError("--speed-from only applies with --depth-for")


def _requested(args: argparse.Namespace, n: int | None) -> tuple[dict | None, int | None, list[int] | None]:
    """(plan, its removals to apply, None) with --plan, else (None, None, original ids to remove);
    the ids are None with --keep until the layer count ``n`` is known.  Checked against ``n``."""
    from ...model.layers import drop_from_keep, keep_from_drop, parse_layer_ids

    if args.plan:
        from ...compress.plan import check_plan_model, load_plan, removed_prefix

        plan = load_plan(Path(args.plan))
        check_plan_model(plan, args.model, n, path=args.plan)
        layers = _depth_for_plan(args, plan) if args.depth_for else args.layers
        drop = removed_prefix(plan, layers, path=args.plan)
        if n is not None:
            keep_from_drop(drop, n)
        return plan, layers, None
    if args.drop:
        drop = parse_layer_ids(args.drop, option="--drop")
    else:
        keep = parse_layer_ids(args.keep, option="--keep")
        drop = drop_from_keep(keep, n) if n is not None else None
    if drop is not None and n is not None:
        keep_from_drop(drop, n)  # refuse bad ids before loading weights
    return None, None, drop


def _depth_for_plan(args: argparse.Namespace, plan: dict) -> int:
    """How many of the plan's removals meet --depth-for (the first depth that does)."""
    from ...search.budget import depth_for, parse_budget, speed_model_from_bench

    budget = parse_budget(args.depth_for)
    speed = speed_model_from_bench(args.speed_from, args.speed_batch_size) if args.speed_from else None
    n, prediction = depth_for(budget, plan, speed)
    if n == 0:
        raise ConfigError(f"--depth-for {args.depth_for}: the unpruned model already meets it; nothing to remove")
    speed_text = (f", {prediction['tokens_per_s']:.1f} tokens/s ({prediction['speed_from']}, batch "
                  f"{speed.batch_size})" if speed else "")
    print(f"--depth-for {args.depth_for}: removing the plan's first {n} of {len(plan['removed'])} layers "
          f"-> {prediction['params'] / 1e6:.1f}M parameters, {prediction['size_bytes'] / 1e9:.3f} GB{speed_text}")
    return n
