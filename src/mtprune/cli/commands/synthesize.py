"""``mtprune synthesize``: teacher translations as sequence-level distillation data."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Sequence-level knowledge distillation data (the paper's KD step): TEACHER translates the source side of "
    "--data (references are not needed: a plain text file of sources works) with the batched greedy backend. "
    "Duplicate sources are translated once; translations that are empty, too long or too short for their "
    "source, copies of the source, repetition loops or in another language than --tgt (the failure rules of "
    "`mtprune evaluate`) are dropped. "
    "Writes OUT (TSV with a source/target header, for `mtprune finetune --data OUT`) and OUT.json (teacher and "
    "its fingerprint, data hash, prompt, versions, counts). Translations are logged chunk by chunk to "
    "OUT.progress.jsonl: after a crash or Ctrl-C, rerun the same command and it continues where it stopped "
    "(--batch-size may change). A base teacher's few-shot examples are never among the translated segments: "
    "to translate a whole data set, take them from other data with --shots-from."
)
EPILOG = """examples:
  mtprune synthesize gemma-3-270m --data sample:en-de --part train --limit 512 -o synth.en-de.tsv
  mtprune synthesize gemma-3-270m --data mono.en.txt --src en --tgt de --shots-from dev.en-de.tsv -o synth.tsv
  mtprune synthesize ./aya-32b --data news.cs.txt --src cs --tgt de --prompt chat --backend vllm --tensor-parallel 2 -o synth.tsv
  mtprune finetune ./pruned --data synth.tsv --src cs --tgt de -o ./pruned-kd

cost: one greedy translation per unique source, as `mtprune translate` (gemma-3-270m on 2 CPU cores:
about 5 s per 32 short sentences); the rest (filtering, writing) takes seconds."""


def add_parser(subparsers) -> None:
    from ..options import add_backend_arguments, add_model_arguments, add_translation_arguments
    from ..options import add_data_arguments

    p = subparsers.add_parser("synthesize", help="teacher translations for distillation -> TSV (resumable)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    add_data_arguments(p)
    add_translation_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--chunk-size", type=int, default=128,
                   help="sources translated and logged per chunk: at most this many are redone after a crash "
                   "(default: 128)")
    p.add_argument("--max-length-ratio", type=float, default=3.0,
                   help="drop translations longer than this x the source in characters (default: 3.0)")
    p.add_argument("--min-length-ratio", type=float, default=0.25,
                   help="drop translations shorter than this x the source in characters (default: 0.25)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output TSV (OUT.json is written beside it)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing OUT; a progress log made with other settings is started over")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...translate.backends import FLAGS as BACKEND_FLAGS
    from ..options import backend_from_args
    from ..options import data_spec_from_args
    from ...recover.synthesize import SynthesizeConfig, run_synthesize
    from ..options import translation_from_args

    cfg = SynthesizeConfig(
        teacher=args.model, data=data_spec_from_args(args), out=Path(args.output),
        translation=translation_from_args(args), backend=backend_from_args(args),
        chunk_size=args.chunk_size, max_length_ratio=args.max_length_ratio, min_length_ratio=args.min_length_ratio,
        dtype=args.dtype, device=args.device, force=args.force, progress=not args.quiet,
    )
    cfg.validate({"teacher": "MODEL", "out": "--output", **{f"backend.{k}": v for k, v in BACKEND_FLAGS.items()}})
    result = run_synthesize(cfg)
    c, f = result.counts, result.counts["failures"]
    print(f"{c['input']} sources: {c['duplicates']} duplicates dropped, {c['translated']} translated "
          f"({c['translated_now']} now, {c['reused_from_log']} from the progress log)")
    print(f"filtered: {f['failed']} failed (empty {f['empty']}, too long {f['too_long']}, too short "
          f"{f['too_short']}, copies {f['copy']}, repetitions {f['repetition']}, wrong language "
          f"{f['wrong_language']}); kept {c['kept']} pairs")
    print(f"wrote {result.out} and {result.sidecar}")
    return 0
