"""The ``mtprune`` command: thin subcommands over the library.

Library functions raise ``MtpruneError``; only this module turns errors into messages
and exit codes.  Nothing heavy (torch, transformers) is imported until a command runs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError, MtpruneError

logger = logging.getLogger("mtprune")

LAYER_IDS_NOTE = (
    "Layer ids are always the ORIGINAL 0-based ids of the model you pass (layer 0 is the first "
    "decoder layer), in options, files and messages."
)

MODEL_HELP = (
    "model: a packaged default (gemma-3-270m, smollm2-135m), a local checkpoint folder, "
    "a .gguf file, or a Hugging Face hub id (org/name[@revision])"
)


def _add_model_arguments(parser: argparse.ArgumentParser, *, dtype_default: str = "auto") -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument(
        "--dtype",
        default=dtype_default,
        help=f"weights dtype: auto, source, float32, bfloat16, float16 (default: {dtype_default}; auto = bf16 "
        "on GPUs and on CPUs with native bf16, else float32; source = as the checkpoint was saved)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")


# ----------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------

def _folder_size(path: str | None) -> int | None:
    if not path or not Path(path).is_dir():
        return None
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def cmd_info(args: argparse.Namespace) -> int:
    from .export import count_parameters, read_record
    from .layers import find_layer_stack
    from .models import load_model

    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    model = loaded.model
    params = count_parameters(model)
    info = {
        "model": args.model,
        "source": loaded.source.to_dict(),
        "checkpoint": loaded.checkpoint,
        "architecture": type(model).__name__,
        "model_type": model.config.model_type,
        "layers_path": find_layer_stack(model).path,
        "num_layers": len(params["per_layer"]),
        "parameters": params,
        "dtype": loaded.dtype,
        "device": loaded.device,
        "size_on_disk_bytes": _folder_size(loaded.checkpoint),
        "chat_template": bool(getattr(loaded.tokenizer, "chat_template", None)),
        "per_layer_config_keys": _per_layer_keys(model),
        "pruning_record": read_record(Path(loaded.checkpoint)) if Path(loaded.checkpoint).is_dir() else None,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_format_info(info))
    return 0


def _per_layer_keys(model) -> list[str]:
    from .layers import LayerSurgeon

    return LayerSurgeon(model).per_layer_keys


def _human(n: int | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n}{unit}"


def _format_info(info: dict) -> str:
    p = info["parameters"]
    per_layer = p["per_layer"]
    lines = [
        f"model          {info['model']}  ({info['source']['kind']})",
        f"architecture   {info['architecture']} ({info['model_type']}), layers at {info['layers_path']}",
        f"layers         {info['num_layers']}  (ids 0..{info['num_layers'] - 1})",
        f"parameters     {_human(p['total'])} total = embeddings {_human(p['embeddings'])}"
        f" + lm_head {_human(p['lm_head'])}{' (tied)' if p['lm_head'] == 0 else ''}"
        f" + layers {_human(sum(per_layer))} ({_human(per_layer[0]) if per_layer else 0} each)"
        f" + other {_human(p['other'])}",
        f"dtype, device  {info['dtype']}, {info['device']}",
        f"size on disk   {_human(info['size_on_disk_bytes'], 'B')}",
        f"chat template  {'yes' if info['chat_template'] else 'no (base model: use few-shot prompts)'}",
        f"per-layer cfg  {', '.join(info['per_layer_config_keys']) or 'none'}",
    ]
    record = info.get("pruning_record")
    if record:
        lines.append(
            f"pruned         from {record['source']['spec']}: {record['original_num_layers']} -> "
            f"{len(record['kept'])} layers, removed (original ids) {record['removed']}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# prune
# ----------------------------------------------------------------------------------------

def _requested_drop(args: argparse.Namespace, n: int | None) -> tuple[list[int] | None, dict | None]:
    """Original ids to remove (None until the layer count is known) and the plan summary."""
    from .layers import drop_from_keep, parse_layer_ids

    if args.plan:
        from .plan import load_plan

        plan = load_plan(Path(args.plan))
        plan.check_model(args.model, n)
        return plan.removed_prefix(args.layers), plan.summary(args.plan)
    if args.drop:
        return parse_layer_ids(args.drop, option="--drop"), None
    keep = parse_layer_ids(args.keep, option="--keep")
    return (drop_from_keep(keep, n) if n is not None else None), None


def cmd_prune(args: argparse.Namespace) -> int:
    from .export import check_output_dir, export_pruned
    from .layers import keep_from_drop, num_layers
    from .models import load_model, peek_num_layers, resolve_source

    if args.layers is not None and not args.plan:
        raise ConfigError("--layers only applies with --plan")
    out = Path(args.output)
    check_output_dir(out, args.force)
    n = peek_num_layers(resolve_source(args.model))
    drop, plan_summary = _requested_drop(args, n)
    if drop is not None and n is not None:
        keep_from_drop(drop, n)  # refuse bad ids before loading weights
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    if drop is None:
        drop, _ = _requested_drop(args, num_layers(loaded.model))
    keep = keep_from_drop(drop, num_layers(loaded.model))
    result = export_pruned(
        loaded,
        keep,
        out,
        removed_order=drop,
        force=args.force,
        verify=not args.no_verify,
        plan_summary=plan_summary,
    )
    rec = result.record
    print(
        f"pruned {args.model}: {rec.original_num_layers} -> {len(rec.kept)} layers "
        f"(removed original ids {rec.removed}); parameters {_human(rec.params_before)} -> "
        f"{_human(rec.params_after)} ({rec.params_after / rec.params_before:.1%})"
    )
    if rec.verification:
        v = rec.verification
        print(f"reload check: OK, greedy outputs equal on {v['prompts']} prompts x {v['tokens_per_prompt']} tokens")
    else:
        print("reload check: skipped (--no-verify)")
    print(f"saved to {out}")
    return 0


# ----------------------------------------------------------------------------------------
# Parser
# ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtprune",
        description="Make LLMs cheaper for machine translation by removing whole decoder layers: "
        "score each layer by translation quality, prune iteratively, export, evaluate. " + LAYER_IDS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with: mtprune quickstart   (packaged gemma-3-270m + bundled en-de sample)\n"
        "Each command has its own help: mtprune COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"mtprune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="architecture, layers, parameters, size of a model",
                       description="Show architecture, layer count, parameters (total, per layer, embeddings, "
                       "head), dtype, size on disk and chat template of MODEL.")
    _add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "prune",
        help="remove layers and save a standard checkpoint",
        description="Remove decoder layers from MODEL and save a standard transformers checkpoint "
        "(safetensors, config, tokenizer, generation config) with mtprune.json provenance and a model card. "
        "The saved model is reloaded and its greedy outputs compared with the in-memory pruned model. "
        + LAYER_IDS_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mtprune prune gemma-3-270m --drop 3,7 -o out/gemma-16l\n"
        "  mtprune prune ./my-model --keep 0-11,14,15 -o out/m\n"
        "  mtprune prune gemma-3-270m --plan runs/s1/plan.json --layers 2 -o out/g",
    )
    _add_model_arguments(p, dtype_default="source")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--drop", help="original layer ids to remove, e.g. 3,7 or 10-13")
    which.add_argument("--keep", help="original layer ids to keep (all others are removed)")
    which.add_argument("--plan", help="plan.json written by `mtprune search`: remove its layers in its order")
    p.add_argument("--layers", type=int, default=None,
                   help="with --plan: apply only the first N removals of the plan (default: all)")
    p.add_argument("-o", "--output", required=True, help="output folder (must be empty or absent, or use --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.set_defaults(func=cmd_prune)

    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("mtprune").setLevel(level)
    for noisy in ("transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _setup_logging(args)
    try:
        return int(args.func(args) or 0)
    except MtpruneError as exc:
        print(f"mtprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
