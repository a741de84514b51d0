"""``mtprune translate``: translate a data set with a model, one hypothesis per line.

Also the steps ``evaluate`` shares: the backend check, translating a pair, the run record.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...errors import ConfigError


def add_parser(subparsers) -> None:
    from ...data.specs import add_data_arguments
    from ..options import add_backend_arguments, add_context_arguments, add_model_arguments, add_translation_arguments

    p = subparsers.add_parser("translate", help="translate a data set with a model",
                              description="Translate the source side of --data with MODEL (greedy, batched) and "
                              "write one hypothesis per line.",
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="example:\n  mtprune translate gemma-3-270m --data sample:en-de --limit 32 -o "
                              "hyp.txt")
    add_model_arguments(p)
    add_data_arguments(p)
    add_translation_arguments(p)
    add_context_arguments(p)
    add_backend_arguments(p)
    p.add_argument("-o", "--output", required=True, help="hypothesis file, one line per segment")
    p.add_argument("--json", help="also write settings and timing as JSON to this file")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...data.specs import data_spec_from_args
    from ...eval.evaluate import load_pair

    out = Path(args.output)
    for path, option in ((out, "-o"), (Path(args.json) if args.json else None, "--json")):
        if path is not None and path.exists() and not args.force:
            raise ConfigError(f"{option} {path} exists; pass --force to overwrite it")
    backend(args)
    pair = load_pair(data_spec_from_args(args))
    loaded, translator, result = translate_pair(args, pair)
    write_text(out, "".join(h.replace("\n", " ") + "\n" for h in result.hypotheses), force=True)
    t = result.timing()
    print(f"translated {t['segments']} segments in {t['seconds']:.1f} s ({t['segments_per_s']:.2f} seg/s, "
          f"{t['generated_tokens_per_s']:.1f} generated tokens/s) -> {out}")
    if args.json:
        record = run_record(args, pair, loaded, translator, result)
        write_text(Path(args.json), json.dumps(record, indent=2) + "\n", args.force)
    return 0


def write_text(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path`` atomically; an existing file only with ``force``."""
    from ...files import write_text_atomic

    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to overwrite it")
    write_text_atomic(path, text)


def backend(args: argparse.Namespace):
    """--backend and its engine options, checked before any data or model loads."""
    from ...translate.backends import BackendConfig

    config = BackendConfig.from_args(args)
    config.validate()
    return config


def translate_pair(args: argparse.Namespace, pair):
    """Load MODEL (its weights only where the backend runs them) and translate ``pair``;
    returns (loaded, translator, result)."""
    from ...eval.evaluate import make_translator
    from ...model.load import load_model

    engine = backend(args)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, weights=engine.needs_weights())
    translator = make_translator(loaded, pair, prompt=args.prompt, shots=args.shots, shots_from=args.shots_from,
                                 shots_by=args.shots_by, backend=engine, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                 progress=not args.quiet, context=args.context, context_target=args.context_target)
    result = translator.translate(pair.sources)
    return loaded, translator, result


def run_record(args: argparse.Namespace, pair, loaded=None, translator=None, result=None) -> dict:
    """The command, data, versions, and (where a model translated) model, settings and timing."""
    from ...model.export import software_versions

    record = {"command": args.command, "data": pair.describe(), "versions": software_versions()}
    if loaded is not None:
        record["model"] = {**loaded.source.to_dict(), "fingerprint": loaded.fingerprint,
                           "dtype": loaded.dtype, "device": loaded.device}
        record["translation"] = translator.describe()
        if "context" not in record["translation"]:
            from ...translate.documents import ContextSettings

            record["translation"]["context"] = ContextSettings().describe()
        record["timing"] = result.timing()
    return record
