"""``mtprune search``: iterative layer-importance search, written to RUN_DIR/plan.json."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import LAYER_IDS_NOTE

DESCRIPTION = (
    "Iterative layer pruning (Moslem et al., WMT 2025): each round scores every remaining unprotected layer by "
    "the model without it, removes the layer whose removal hurts least, and repeats until a stop rule is reached "
    "(the first one reached wins). The model is loaded once. Every evaluation is appended to RUN_DIR/trace.jsonl, "
    "so an interrupted search continues with --resume. " + LAYER_IDS_NOTE
)
EPILOG = """criteria:
  chrf             translate the dev set without the layer, score with --metric (the paper)
  logprob          teacher-forced mean log-likelihood of the references (one forward pass)
  block-influence  ShortGPT: 1 - cos(input, output) of the layer, lowest removed first
  angular          angular distance between the layer's input and output
  last, random     baselines

reproducibility: candidates are translated side by side in one batch; in float32 that gives exactly the scores of
  each candidate alone, so the same settings give the same plan on any machine. --dtype auto picks bf16 on
  GPUs and on CPUs with AMX/AVX512-BF16: there side by side and alone agree only within bf16 rounding,
  and two layers whose removal scores almost the same may swap. For a plan that does not depend on the
  machine, pass --dtype float32 (or set MTPRUNE_AUTO_DTYPE=float32).

examples:
  mtprune search gemma-3-270m --data sample:en-de --part dev --limit 32 --remove 4 --fast -o runs/s1
  mtprune search ./aya --data dev.cs-de.tsv --src cs --tgt de --data dev.en-arz.tsv --src en --tgt arz \\
      --target-layers 24 --combine min -o runs/aya
  mtprune search gemma-3-270m --data sample:en-de --remove 4 -o runs/s1 --resume
  mtprune search gemma-3-270m --data sample:en-de --part dev --limit 32 --remove 2 --trim-vocab -o runs/s2"""


def add_parser(subparsers) -> None:
    from ..options import add_comet_arguments, add_context_arguments, add_model_arguments, add_translation_arguments

    p = subparsers.add_parser("search", help="iterative layer-importance search -> plan.json",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    _add_data(p)
    _add_stop_rules(p)
    _add_scoring(p)
    add_translation_arguments(p)
    add_context_arguments(p)
    add_comet_arguments(p)
    p.add_argument("--candidate-batch", type=int, metavar="N",
                   help="candidates translated side by side in one batch (N x --batch-size rows; each row skips its "
                   "own layer). Larger is faster, smaller needs less memory for the KV cache; out of memory, the "
                   "batch is halved by itself (default: 256 // --batch-size)")
    p.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder: trace.jsonl and plan.json")
    p.add_argument("--resume", action="store_true", help="continue the search recorded in RUN_DIR/trace.jsonl")
    p.add_argument("--trim-vocab", action="store_true",
                   help="search on a copy of MODEL with its vocabulary trimmed (`mtprune trim-vocab`) to the tokens "
                   "of each pair's train part and its dev data, written to RUN_DIR/trimmed (kept for --resume): on a "
                   "small multilingual model the LM head is most of each decoding step, in the search too. The "
                   "plan's layer ids are the same for MODEL and for the trimmed copy")
    g = p.add_argument_group("more than one device (Ray: pip install 'mtprune[distributed]')")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="N model replicas translate the candidates of a round at once, as Ray actors: one GPU each "
                   "where there are GPUs, else a share of the CPU cores. The same plan as one worker; the trace is "
                   "written as results arrive (--resume works); a worker that dies is started again and its "
                   "candidates sent again (default: 1, no Ray)")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="join this Ray cluster (e.g. auto, or ray://head:10001) instead of starting a local one; "
                   "MODEL and the data must be at the same paths on every node")
    p.set_defaults(func=run)


def _add_data(p: argparse.ArgumentParser) -> None:
    from ..options import add_document_arguments

    g = p.add_argument_group("data (repeat --data/--src/--tgt/--weight for several language pairs)")
    g.add_argument("--data", action="append", metavar="SPEC", help="dev data (see `mtprune translate --help`)")
    g.add_argument("--src", action="append", metavar="LANG", help="source language of the matching --data")
    g.add_argument("--tgt", action="append", metavar="LANG", help="target language of the matching --data")
    g.add_argument("--weight", action="append", type=float, help="weight of the matching pair for --combine weighted")
    g.add_argument("--pairs", metavar="YAML", help="a YAML file with 'pairs: [{data, src, tgt, ref, weight}, ...]'")
    g.add_argument("--ref", help=argparse.SUPPRESS)
    g.add_argument("--split", help="split of an hf: dataset or dataset folder")
    g.add_argument("--src-col", help="source column or field")
    g.add_argument("--tgt-col", help="reference column or field")
    g.add_argument("--part", default="all", choices=("all", "train", "dev", "test"),
                   help="hash partition of each data set to use (default: all; the quickstart uses dev)")
    g.add_argument("--limit", type=int, help="segments per pair, drawn with a seeded shuffle")
    g.add_argument("--seed", type=int, default=0, help="seed for --limit, few-shot examples and --criterion random")
    add_document_arguments(g)


def _add_stop_rules(p: argparse.ArgumentParser) -> None:
    from ..options import add_budget_arguments

    s = p.add_argument_group("stop rules (at least one; the first reached stops the search)")
    s.add_argument("--remove", type=int, metavar="K", help="remove K layers")
    s.add_argument("--target-layers", type=int, metavar="N", help="remove layers until N remain")
    s.add_argument("--target-params", type=float, metavar="F",
                   help="until parameters are at most F x the original (e.g. 0.7)")
    add_budget_arguments(s)
    s.add_argument("--min-quality", type=float, metavar="Q", help="never go below Q x the unpruned score (e.g. 0.95)")


def _add_scoring(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group("scoring")
    c.add_argument("--criterion", default="chrf",
                   help="chrf, logprob, block-influence, angular, last, random (default: chrf)")
    c.add_argument("--metric",
                   help="generation metric: chrf++, chrf, bleu, ter, comet, comet-qe (default: chrf++; chrf for zh/ja/th "
                   "targets; comet: see the COMET options)")
    c.add_argument("--score-by", choices=("segment", "document"), default="segment",
                   help="segment: the metric over the segments (the paper); document: over each document's "
                   "segments concatenated (document ids: --doc-col, the sample's chapters; sacrebleu metrics only) "
                   "(default: segment)")
    c.add_argument("--fast", action="store_true",
                   help="shortlist candidates with --proxy, run the metric on the top --shortlist only")
    c.add_argument("--proxy", default="logprob",
                   help="proxy for --fast: logprob, block-influence, angular (default: logprob). On a CPU logprob "
                   "costs about as much as translating; block-influence and angular need one forward pass per round")
    c.add_argument("--shortlist", type=int, default=4,
                   help="candidates per round translated in --fast mode (default: 4)")
    c.add_argument("--race", action="store_true",
                   help="with --fast: race the shortlist on a quarter, then half of the dev set, dropping candidates "
                   "the leader beats in a paired bootstrap (p < 0.05) before translating the full set")
    c.add_argument("--protect", help="original layer ids never removed, or 'none' (default: the first and the last)")
    c.add_argument("--combine", default="mean", help="several pairs: mean, min, weighted (default: mean)")


def config_from_args(args: argparse.Namespace):
    """The SearchConfig of the command's flags."""
    from ..options import weighted_data_specs_from_args
    from ...model.layers import parse_layer_ids
    from ...search.config import PairConfig, SearchConfig, StopRule
    from ..options import comet_settings, translation_from_args

    protect = None
    if args.protect is not None:
        protect = [] if args.protect.strip().lower() == "none" else parse_layer_ids(args.protect, option="--protect")
    pairs = [PairConfig(spec=spec, weight=weight) for spec, weight in weighted_data_specs_from_args(args)]
    return SearchConfig(
        model=args.model, pairs=pairs, run_dir=Path(args.output),
        stop=StopRule(remove=args.remove, target_layers=args.target_layers, target_params=args.target_params,
                      min_quality=args.min_quality, depth_for=args.depth_for, speed_from=args.speed_from,
                      speed_batch_size=args.speed_batch_size),
        translation=translation_from_args(args), criterion=args.criterion, metric=args.metric,
        comet=comet_settings(args), fast=args.fast, proxy=args.proxy, shortlist=args.shortlist, race=args.race,
        protect=protect, combine=args.combine, score_by=args.score_by, candidate_batch=args.candidate_batch,
        dtype=args.dtype, device=args.device, seed=args.seed, resume=args.resume, progress=not args.quiet,
        workers=args.workers, ray_address=args.ray_address,
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ...search.engine import run_search

    cfg = config_from_args(args)
    if args.trim_vocab:
        from ...compress.trim_vocab import trimmed_for_search

        cfg.validate()
        cfg = dataclasses.replace(cfg, model=str(trimmed_for_search(cfg)))
    plan = run_search(cfg)
    plan_path = Path(args.output) / "plan.json"
    print(f"removed (original ids, in order): {plan['removed']}  ({plan['stop_reason']})")
    print(f"{plan['metric']}: baseline {plan['baseline']['score']:.2f}" +
          "".join(f" -> {r['score_after']:.2f}" for r in plan["rounds"]))
    models = f"{args.model} (or the trimmed {cfg.model})" if args.trim_vocab else args.model
    print(f"plan: {plan_path}   apply: mtprune prune {models} --plan {plan_path} -o OUT   "
          f"report: mtprune report {args.output}")
    return 0
