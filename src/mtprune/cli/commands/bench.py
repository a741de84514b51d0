"""``mtprune bench``: deployment speed of one or more models, side by side (the WMT protocol)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = (
    "Measure translation speed as the WMT 2025 model compression task does: for each MODEL and each batch size, "
    "--warmup untimed passes, then --runs timed passes over the data in consecutive batches of that size. The "
    "models are timed INTERLEAVED: one pass per model per round, the models taking turns batch by batch in an order "
    "rotating each round and batch, so that the "
    "machine's drift (a shared CPU's load, a GPU's clock boost and heat) hits every model alike, and each "
    "speed-up is computed round by round (A_i / B_i). Reports generated tokens/s (median over rounds and its "
    "range) and segments/s, latency per batch (median, p95), the shared process's peak memory while "
    "translating (process RSS on CPU, torch's peak allocation on GPU), parameters, size on disk, layers, and the "
    "quality of the outputs (--metric, when the data has references). Then (--costs, the default) each model ALONE "
    "in its own fresh process, one after the other, as the WMT26 task measures a deliverable: peak memory (the "
    "process's peak RSS, Python and torch included; on a GPU also torch's peak allocation), size on disk, load "
    "time, chars/s translating the data at the largest batch size (cold; with and without loading); and batch-1 "
    "latency over the first --latency-segments segments with the ideal batch-1 speed-up from FLOPs (timed "
    "interleaved in this process, the models taking turns segment by segment; alone in each model's process "
    "where the models are timed one after the other). Each model is compared with the FIRST one: "
    "measured speed-up, and the ideal speed-up from matmul FLOPs per generated token (the prompt's prefill and "
    "each decoding step: every linear layer including the LM head, attention at the measured lengths), which is what pruning layers can at best give: on a small "
    "model with a large vocabulary (gemma-3-270m: a 262k-token head) the head dominates and removing layers gains "
    "little; on an 8B model the layers dominate and the gain approaches L/L'. A speed-up whose range includes 1.0 "
    "is flagged 'noise', one above its ideal 'above ideal' (the ideal within its range) or 'far above ideal' (its "
    "whole range above: noise or a cost the FLOP model omits)."
)
EPILOG = """examples:
  mtprune bench gemma-3-270m runs/pruned runs/healed --data sample:en-de --part test --limit 64
  mtprune bench ./aya-8b ./aya-8b-24l --data wmt.cs-de.tsv --src cs --tgt de --batch-sizes 1,16,64,256,512 \\
      --json bench.json --markdown bench.md --plot bench.png
  mtprune bench ./aya-8b ./aya-8b-24l --data wmt.cs-de.tsv --src cs --tgt de --backend vllm --max-model-len 2048

cost: (warm-up + runs) x the data's translation time per model and batch size; batch size 1 is the slowest
(on 2 CPU cores, gemma-3-270m translates 64 short segments in about 1.5 min at batch 16). --costs adds per
model: starting Python and loading it again, one pass at the largest batch size, --latency-segments at batch 1.
memory: interleaving holds every MODEL in memory at once (the sum of their weights, plus one model's KV
cache and activations at a time; 4 x gemma-3-270m in fp32: about 4.3 GB of weights). Models that do not
fit together: --sequential loads one at a time (each model's runs one after the other: the machine's drift
between models is then in the speed-ups, and they are flagged 'sequential').
spread: --runs 5 (the default) gives a min-max range that holds the median with 94% probability (3: 75%,
7: 98%); a speed-up of a few percent needs a range narrower than it: raise --runs, --limit or
--fixed-new-tokens until the range is small enough for the claim.
--backend vllm: vLLM holds one engine per process, so its models are timed one after the other (as
--sequential, flagged 'sequential'); each model's engine starts once (not timed; its start-up seconds are in --json),
and each batch is given to vLLM whole, so the batch size is the number of sequences it decodes at once."""


def add_parser(subparsers) -> None:
    from ...bench.alone import DEFAULT_LATENCY_SEGMENTS
    from ..options import (add_backend_arguments, add_comet_arguments, add_context_arguments, add_data_arguments,
                           add_model_arguments, add_translation_arguments)

    p = subparsers.add_parser("bench", help="speed, memory and quality of models side by side (WMT protocol)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, several="the first is the reference for the speed-ups")
    add_data_arguments(p)
    add_translation_arguments(p, batch_size=False)
    add_context_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--batch-sizes", default="1,16,64", help="comma-separated batch sizes (default: 1,16,64)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed passes over the data per model and batch size before the timed rounds (default: 1)")
    p.add_argument("--runs", type=int, default=5, help="timed rounds: passes over the data per model (default: 5)")
    p.add_argument("--sequential", action="store_true",
                   help="load and time one model at a time, for models that do not fit in memory together "
                   "(drift between models is not cancelled; speed-ups flagged 'sequential')")
    p.add_argument("--interval", choices=["minmax", "bootstrap"], default="minmax",
                   help="range of each figure over the rounds: minmax (known coverage: 94%% at 5 rounds) or a "
                   "95%% bootstrap interval of the median, seeded by --seed (for many rounds; default: minmax)")
    p.add_argument("--fixed-new-tokens", type=int, metavar="N",
                   help="equal work for every model: each segment generates exactly N tokens, stop rules off (no "
                   "quality then). Pruned models often write shorter or longer outputs than the unpruned one, so "
                   "tokens/s of their own translations mixes speed with output length; use this to measure speed")
    p.add_argument("--costs", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure each model alone in its own process: peak memory, size on disk, load time, "
                   "chars/s at the largest batch size, batch-1 latency (default: on)")
    p.add_argument("--latency-segments", type=int, default=DEFAULT_LATENCY_SEGMENTS, metavar="N",
                   help="segments translated one at a time for the batch-1 latency of --costs (default: "
                   f"{DEFAULT_LATENCY_SEGMENTS})")
    p.add_argument("--metric", default="chrf++", help="quality metric of the outputs: chrf++, chrf, bleu, ter, "
                   "comet, comet-qe (default: chrf++)")
    add_comet_arguments(p)
    p.add_argument("--json", metavar="FILE", help="write every figure, the settings, machine and versions")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    p.add_argument("--plot", metavar="FILE", help="write tokens/s by batch size, one line per model (PNG)")
    p.add_argument("--force", action="store_true", help="overwrite existing --json/--markdown/--plot files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...bench.config import BenchConfig, parse_batch_sizes
    from ...bench.engine import run_bench
    from ...bench.render import format_table, plot_speed, render_markdown
    from ...errors import ConfigError
    from ...eval.metrics import canonical_metric
    from ...files import write_text_atomic
    from ...pipeline.report import _have_matplotlib, _save_atomic
    from ..options import backend_from_args
    from ..options import comet_settings, data_spec_from_args, translation_from_args

    if args.plot and not _have_matplotlib():
        raise ConfigError("--plot needs matplotlib: pip install 'mtprune[report]' (or leave out --plot)")
    outputs = [Path(f) for f in (args.json, args.markdown, args.plot) if f]
    existing = [str(f) for f in outputs if f.exists()]
    if existing and not args.force:
        raise ConfigError(f"{', '.join(existing)} exists; pass --force to overwrite")
    cfg = BenchConfig(
        models=args.models, data=data_spec_from_args(args), batch_sizes=parse_batch_sizes(args.batch_sizes),
        warmup=args.warmup, runs=args.runs, backend=backend_from_args(args), dtype=args.dtype, device=args.device,
        translation=translation_from_args(args), fixed_new_tokens=args.fixed_new_tokens,
        metric=canonical_metric(args.metric), comet=comet_settings(args),
        order="sequential" if args.sequential else "interleaved", interval=args.interval, seed=args.seed,
        costs=args.costs, latency_segments=args.latency_segments,
    )
    result = run_bench(cfg)
    print(format_table(result))
    if args.plot:
        _save_atomic(lambda res, path: plot_speed(res, path), result, Path(args.plot))
        print(f"wrote {args.plot}")
    if args.markdown:
        plot_name = Path(args.plot).name if args.plot else None
        write_text_atomic(Path(args.markdown), render_markdown(result, plot_name))
        print(f"wrote {args.markdown}")
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
