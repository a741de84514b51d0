"""``mtprune quantize``: store a model's decoder layers in int8, int4 or fp8 (compressed-tensors)."""
from __future__ import annotations

import argparse

DESCRIPTION = (
    "Quantize MODEL's decoder layers and save a compressed-tensors checkpoint that plain transformers (with "
    "compressed-tensors installed) and vLLM load. The last compression step: prune -> recover -> quantize "
    "(quantizing before recovery loses more). Schemes: w8a8-int8 (int8 weights per channel, int8 activations per "
    "token at run time), w8a16 (int8 weights only), w4a16 (int4 weights in groups of 128), fp8-dynamic (fp8 "
    "weights per channel and activations per token; data-free; GPUs with fp8). Method gptq (default for int "
    "schemes) calibrates on the pair's own translation prompts, in the format the model translates with (the "
    "format it was fine-tuned with, else few-shot or its chat template), the references as answers; rtn rounds "
    "each weight alone (data-free, seconds). The embeddings and the LM head stay in the model's dtype (a tied head "
    "stays tied: no second copy on disk) unless --include-head. A trimmed vocabulary and a pruned model's config "
    "are kept. Before the folder is moved into place it is reloaded with transformers and its held-out NLL "
    "compared with the unquantized model's; mtprune.json keeps the source's record and adds the scheme, the "
    "calibration data and its hash, the check and the library versions. Needs `pip install 'mtprune[quantize]'`."
)
EPILOG = """examples:
  mtprune quantize runs/qs/recover/01-finetune/model -o out/int8 --data sample:en-de
  mtprune quantize ./pruned -o out/int4 --scheme w4a16 --data train.cs-de.tsv --src cs --tgt de --limit 256
  mtprune quantize ./pruned -o out/int8-rtn --method rtn                 # data-free, seconds
  mtprune quantize CohereLabs/aya-expanse-8b -o out/aya-fp8 --scheme fp8-dynamic --device cuda

On a CPU, transformers decompresses the weights when it loads them: the gain there is on disk; int8
kernels at run time are vLLM's (w8a8-int8 and w4a16 on x86 CPUs and GPUs; fp8 on GPUs only)."""


def add_parser(subparsers) -> None:
    from ..options import add_data_arguments
    from ...compress.quantize.schemes import METHODS, SCHEMES
    from .memory_check import add_skip_argument
    from ..options import add_shots_by_argument

    p = subparsers.add_parser("quantize", help="int8 / int4 / fp8 weights (compressed-tensors), after pruning",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a checkpoint folder (pruned, recovered, trimmed), a packaged model, "
                   "a .gguf file or a hub id")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (empty or absent, or --force)")
    p.add_argument("--scheme", default="w8a8-int8", help=f"{', '.join(SCHEMES)} (default: w8a8-int8)")
    p.add_argument("--method", choices=METHODS, help="gptq (calibrated; default for int schemes) or rtn (data-free)")
    p.add_argument("--group-size", type=int, metavar="N", help="int schemes: one scale per N input columns "
                   "(default: per output channel for 8 bits, 128 for w4a16)")
    p.add_argument("--include-head", action="store_true",
                   help="quantize the LM head too (a tied head gets its own quantized copy)")
    p.add_argument("--damp", type=float, default=0.01, help="GPTQ: dampening of the Hessian's diagonal (default: 0.01)")
    p.add_argument("--max-length", type=int, default=512, help="calibration example length cap in tokens (default: 512)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default: auto)")
    g = p.add_argument_group("calibration data (gptq): the pair's translation prompts with their references; "
                             "by default 128 segments of the data's train part (--part, --limit change it)")
    add_data_arguments(g, required=False)
    g.add_argument("--prompt", default="auto", help="prompt format of the calibration examples: auto (the format "
                   "the model translates with), fewshot, zeroshot, chat (default: auto)")
    g.add_argument("--shots", type=int, default=3, help="few-shot examples per calibration prompt (default: 3)")
    g.add_argument("--shots-from", metavar="SPEC", help="few-shot example pool (default: the data's train part)")
    add_shots_by_argument(g)
    add_skip_argument(p)
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.set_defaults(func=run, part="train", limit=128)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..options import data_spec_from_args
    from ...compress.quantize.pipeline import QuantizeConfig, run_quantize

    cfg = QuantizeConfig(model=args.model, out=Path(args.output), scheme=args.scheme, method=args.method,
                         data=data_spec_from_args(args) if args.data else None, group_size=args.group_size,
                         include_head=args.include_head, prompt=args.prompt, shots=args.shots,
                         shots_from=args.shots_from, shots_by=args.shots_by, max_length=args.max_length,
                         damp=args.damp, device=args.device, force=args.force, verify=not args.no_verify)
    cfg.validate({"model": "MODEL", "out": "--output"})
    entry = run_quantize(cfg).entry
    cal = entry["calibration"]
    how = (f"{entry['method']} on {cal['examples']} examples ({cal['tokens']} tokens, {cal['prompt']} prompts)"
           if cal else f"{entry['method']} (data-free)")
    print(f"quantized {args.model}: {entry['scheme']}, {entry['quantized_modules']} linear modules, {how}, "
          f"{entry['seconds']:.0f} s")
    if entry.get("calibration_error"):
        err = entry["calibration_error"]
        print(f"calibration output error: gptq {err['gptq']:.4g} vs round-to-nearest {err['rtn']:.4g}")
    check = entry.get("check")
    if check:
        print(f"reload check (transformers): OK, held-out NLL {check['nll_before']:.4f} -> {check['nll_after']:.4f} "
              f"nats/token ({check['nll_increase']:+.4f}) on {check['examples']} examples")
    else:
        print("reload check: skipped (--no-verify)")
    print(f"saved to {args.output}: {entry['size_on_disk_bytes'] / 2**20:.1f} MiB on disk")
    return 0
