"""``mtprune info``: architecture, layers, parameters and size of a model."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
    from ..options import add_model_arguments

    p = subparsers.add_parser("info", help="architecture, layers, parameters, size of a model",
                              description="Show architecture, layer count, parameters (total, per layer, embeddings, "
                              "head), vocabulary size and the LM head's share of a generated token's matmul FLOPs "
                              "(what `mtprune trim-vocab` can save), dtype, size on disk and chat template of MODEL.")
    add_model_arguments(p, dtype_default="source", memory_check=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...model.export import count_parameters, read_record
    from ...files import folder_size
    from ...model.layers import LayerSurgeon, find_layer_stack
    from ...model.load import load_model
    from ...compress.vocab import vocabulary_report

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
        "size_on_disk_bytes": folder_size(loaded.checkpoint),
        "vocabulary": vocabulary_report(model),
        "chat_template": bool(getattr(loaded.tokenizer, "chat_template", None)),
        "per_layer_config_keys": LayerSurgeon(model).per_layer_keys,
        "pruning_record": read_record(Path(loaded.checkpoint)) if Path(loaded.checkpoint).is_dir() else None,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    return 0


def human(n: int | None, unit: str = "") -> str:
    """A count with a k/M/G suffix (two decimals)."""
    if n is None:
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n}{unit}"


def format_info(info: dict) -> str:
    from ...recover.checkpoint import recovery_summary

    p = info["parameters"]
    per_layer = p["per_layer"]
    lines = [
        f"model          {info['model']}  ({info['source']['kind']})",
        f"architecture   {info['architecture']} ({info['model_type']}), layers at {info['layers_path']}",
        f"layers         {info['num_layers']}  (ids 0..{info['num_layers'] - 1})",
        f"parameters     {human(p['total'])} total = embeddings {human(p['embeddings'])}"
        f" + lm_head {human(p['lm_head'])}{' (tied)' if p['lm_head'] == 0 else ''}"
        f" + layers {human(sum(per_layer))} ({human(per_layer[0]) if per_layer else 0} each)"
        f" + other {human(p['other'])}",
        *_vocabulary_lines(info.get("vocabulary")),
        f"dtype, device  {info['dtype']}, {info['device']}",
        f"size on disk   {human(info['size_on_disk_bytes'], 'B')}",
        f"chat template  {'yes' if info['chat_template'] else 'no (base model: use few-shot prompts)'}",
        f"per-layer cfg  {', '.join(info['per_layer_config_keys']) or 'none'}",
    ]
    record = info.get("pruning_record")
    if record and record.get("kept") is not None:
        lines.append(
            f"pruned         from {record['source']['spec']}: {record['original_num_layers']} -> "
            f"{len(record['kept'])} layers, removed (original ids) {record['removed']}"
        )
    for trim in (record or {}).get("vocabulary") or []:
        lines.append(f"trimmed        from {trim['source']['spec']}: {trim['vocab_size_before']:,} -> {trim['kept']:,} "
                     f"tokens (the tokens of {', '.join(d['data'] for d in trim['data'])})")
    lines += [f"recovered      {line}" for line in (recovery_summary(record) or "").splitlines()]
    quant = (record or {}).get("quantization")
    if quant:
        cal = quant.get("calibration")
        how = (f"{quant['method']} on {cal['examples']} examples of {cal['spec']} ({cal['prompt']} prompts)" if cal
               else f"{quant['method']}, data-free")
        lines.append(f"quantized      {quant['scheme']} ({how}), {quant['quantized_modules']} linear modules of the "
                     f"layers; embeddings and {', '.join(quant['left_unquantized']) or 'nothing else'} unquantized")
    return "\n".join(lines)


def _vocabulary_lines(report: dict | None) -> list[str]:
    if not report:
        return []
    return [f"vocabulary     {report['vocab_size']:,} tokens; the LM head is {report['head_flops_share']:.0%} of a "
            f"generated token's matmul FLOPs (at {report['context']:.0f} tokens of context)"]
