"""``mtprune evaluate``: translate and score, or score existing outputs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...errors import ConfigError

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
    from ...data.specs import add_data_arguments
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
    from ...data.specs import data_spec_from_args
    from ...eval.evaluate import load_pair, score_hypotheses
    from ...eval.metrics import check_metrics, needs_references
    from ..options import comet_settings, context_settings
    from .translate import backend, run_record, translate_pair, write_text

    if args.model and args.hyp:
        raise ConfigError("give MODEL (translate, then score) or --hyp FILE (score existing outputs), not both")
    if not (args.model or args.hyp):
        raise ConfigError("nothing to score: give MODEL to translate and score, or --hyp FILE with existing outputs")
    comet = comet_settings(args)
    context_settings(args)  # checked before anything loads
    metrics = check_metrics(args.metrics.split(","), comet)  # COMET checkpoints found before translating
    if args.json and Path(args.json).exists() and not args.force:
        raise ConfigError(f"--json {args.json} exists; pass --force to overwrite it")
    if args.model:
        backend(args)
    pair = load_pair(data_spec_from_args(args))
    if needs_references(metrics):
        pair.references  # noqa: B018  (refuse data without references before translating)
    loaded = translator = result = None
    if args.hyp:
        hyps = read_hypotheses(Path(args.hyp))
    else:
        loaded, translator, result = translate_pair(args, pair)
        hyps = result.hypotheses
    record = run_record(args, pair, loaded, translator, result)
    if args.hyp:
        record["hypotheses"] = str(args.hyp)
    record.update(score_hypotheses(pair, hyps, metrics, comet))
    print(format_scores(record))
    if args.json:
        write_text(Path(args.json), json.dumps(record, indent=2) + "\n", args.force)
        print(f"wrote {args.json}")
    return 0


def read_hypotheses(path: Path) -> list[str]:
    """One hypothesis per line, as written (a final newline ends the last one)."""
    from ...errors import DataError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"--hyp {path}: file not found") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8") from None
    except OSError as exc:
        raise DataError(f"--hyp {path}: cannot read it ({exc.strerror})") from None
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    return [line.removesuffix("\r") for line in lines]


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
