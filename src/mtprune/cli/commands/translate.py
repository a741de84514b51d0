"""``mtprune translate``: translate a data set with a model, one hypothesis per line."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import ConfigError


def add_parser(subparsers) -> None:
    from ..options import add_data_arguments
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
    from ...files import write_json_atomic, write_text_atomic
    from ...model.load import load_model
    from ..options import backend_from_args
    from ...translate.translator import (load_pair, make_translator, one_per_line, translation_record,
                                         translation_settings)
    from ..options import data_spec_from_args, translation_from_args

    out = Path(args.output)
    for path, option in ((out, "-o"), (Path(args.json) if args.json else None, "--json")):
        if path is not None and path.exists() and not args.force:
            raise ConfigError(f"{option} {path} exists; pass --force to overwrite it")
    backend = backend_from_args(args)
    backend.validate()  # before any data or model loads
    settings = translation_settings(translation_from_args(args), {})
    pair = load_pair(data_spec_from_args(args))
    loaded = load_model(args.model, dtype=args.dtype, device=args.device, weights=backend.needs_weights())
    translator = make_translator(loaded, pair, settings, backend=backend, progress=not args.quiet)
    result = translator.translate(pair.sources)
    write_text_atomic(out, one_per_line(result.hypotheses))
    t = result.timing()
    print(f"translated {t['segments']} segments in {t['seconds']:.1f} s ({t['segments_per_s']:.2f} seg/s, "
          f"{t['generated_tokens_per_s']:.1f} generated tokens/s) -> {out}")
    if args.json:
        write_json_atomic(Path(args.json), translation_record(args.command, pair, loaded, translator, result))
    return 0
