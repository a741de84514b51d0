"""``mtprune evaluate``: translate and score, or score existing outputs."""
from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = (
    "Score translations with sacrebleu metrics and COMET (each with its signature) and count translation failures "
    "(empty, length ratio, copies, repetition loops, outputs in another language than the target: a language "
    "identifier, py3langid, judges outputs of 20 letters or more where it is at least 50% sure). Give MODEL to "
    "translate first, or --hyp FILE to score existing outputs. Where the data have document ids (--doc-col; the "
    "sample's chapters), chrF/chrF++/BLEU/TER are also given over whole documents (each document's segments "
    "concatenated): 'documents' in the JSON."
)
EPILOG = """examples:
  mtprune evaluate gemma-3-270m --data sample:en-de --part test --limit 64
  mtprune evaluate --hyp hyp.txt --data sample:en-de --limit 32 --json scores.json
  mtprune evaluate gemma-3-270m --data sample:en-de --part test --metrics chrf++,comet,comet-qe \\
      --comet-model ./wmt22-comet-da --comet-qe-model ./wmt22-cometkiwi-da
  mtprune evaluate gemma-3-270m --data sample:en-de --part test --part-by document --limit 64 --context 2"""


def add_parser(subparsers) -> None:
    from ..options import add_data_arguments
    from .memory_check import add_skip_argument
    from ..options import (MODEL_HELP, add_backend_arguments, add_comet_arguments, add_context_arguments,
                          add_translation_arguments)

    p = subparsers.add_parser("evaluate", help="translate and score, or score existing outputs",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", nargs="?", help=MODEL_HELP + " (omit with --hyp)")
    p.add_argument("--dtype", default="auto", help="weights dtype (default: auto)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    add_data_arguments(p)
    add_translation_arguments(p)
    add_context_arguments(p)
    add_backend_arguments(p)
    p.add_argument("--hyp", help="score this hypothesis file (one line per segment) instead of translating")
    p.add_argument("--metrics", default="chrf++,bleu,chrf,ter",
                   help="comma-separated: chrf++, chrf, bleu, ter, comet, comet-qe (default: chrf++,bleu,chrf,ter)")
    add_comet_arguments(p)
    p.add_argument("--json", help="write settings, signatures, data hash, scores and timing to this JSON file")
    add_skip_argument(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...eval.evaluate import run_evaluate

    [record] = run_evaluate(evaluate_config(args))
    print(format_scores(record))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def evaluate_config(args: argparse.Namespace):
    """The EvaluateConfig of the command's flags."""
    from ...eval.evaluate import EvaluateConfig
    from ..options import backend_from_args
    from ..options import comet_settings, data_spec_from_args, translation_from_args

    return EvaluateConfig(model=args.model, hypotheses=args.hyp, data=[data_spec_from_args(args)],
                          metrics=args.metrics.split(","), translation=translation_from_args(args),
                          backend=backend_from_args(args), comet=comet_settings(args), dtype=args.dtype,
                          device=args.device, out=Path(args.json) if args.json else None, force=args.force,
                          progress=not args.quiet)


def wrong_language_text(failures: dict) -> str:
    """'wrong language 12 (en 10, fr 2)', or why the check did not run."""
    language = failures.get("language") or {}
    if failures.get("wrong_language") is None:
        return f"wrong language not checked ({language.get('reason', 'no language check in this record')})"
    found = ", ".join(f"{label} {n}" for label, n in (language.get("wrong") or {}).items())
    return f"wrong language {failures['wrong_language']}" + (f" ({found})" if found else "")


def format_scores(record: dict) -> str:
    data = record["data"]
    lines = [f"{data['name']}  {data['n_segments']} segments  data {data['data']} (hash {data['data_hash']})"]
    context = (record.get("translation") or {}).get("context") or {}
    if context.get("sentences"):
        lines.append(f"  context: the previous {context['sentences']} sentences of the document "
                     f"(target: {context['target']})")
    for name, score in record["scores"].items():
        lines.append(f"  {name:<8} {score['value']:7.2f}   {score['signature']}")
    documents = record.get("documents")
    if documents:
        lines.append(f"  over {documents['documents']} documents ({documents['segments_per_document']} segments each, "
                     "concatenated):")
        for name, score in documents["scores"].items():
            lines.append(f"  doc {name:<4} {score['value']:7.2f}   {score['signature']}")
    f = record["failures"]
    lines.append(f"  failures: empty {f['empty']}, too long {f['too_long']}, too short {f['too_short']}, "
                 f"copies {f['copies']}, repetitions {f['repetitions']}, {wrong_language_text(f)} (of {f['n']})")
    if "timing" in record:
        t = record["timing"]
        lines.append(f"  speed: {t['seconds']:.1f} s, {t['segments_per_s']:.2f} segments/s, "
                     f"{t['generated_tokens_per_s']:.1f} generated tokens/s")
    return "\n".join(lines)
