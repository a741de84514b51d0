"""``mtprune trim-vocab``: keep the tokens a translation task uses; save a standard checkpoint."""
from __future__ import annotations

import argparse

DESCRIPTION = (
    "Trim MODEL's vocabulary to the tokens that the given texts use and save a standard transformers checkpoint "
    "(vLLM loads it too). On a small multilingual model the LM head over a large vocabulary is most of a generated "
    "token's compute (gemma-3-270m: 61%% of it for 262,144 tokens); one language pair needs a small part of it. Kept: "
    "every token of the data's sources and references as the model sees them (few-shot and zero-shot prompts, the "
    "chat template where there is one, the format the model was fine-tuned with), special and control tokens, all "
    "byte pieces (any text stays encodable), and what keeps each kept token reachable (BPE: the tokens along its "
    "merges). Rows of the embedding and LM head stay in their old order (tied weights stay tied); special-token ids in "
    "the configs are renumbered. Checked before saving: the new tokenizer splits every counted text as the old one "
    "did, and the trimmed model's logits equal the old model's on the kept tokens; after saving, the reload check of "
    "`prune`. mtprune.json records the data and their hashes, the counts and the old-to-new id map. Works on "
    "unpruned, pruned and recovered checkpoints. Supported tokenizers: BPE with byte fallback (Gemma, Llama 2, "
    "Mistral), byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM), Unigram."
)
EPILOG = """examples:
  mtprune trim-vocab gemma-3-270m --data sample:en-de --part train -o out/gemma-en-de
  mtprune trim-vocab ./pruned --data train.cs-de.tsv --src cs --tgt de --keep 32768 --keep-from news.cs-de.tsv \\
      -o out/pruned-cs-de
  mtprune trim-vocab ./aya --data a.tsv --src cs --tgt de --data b.tsv --src en --tgt arz -o out/aya-2pairs

--src/--tgt: once for all --data, or once per --data in the same order (--keep-from takes the first).
--keep N keeps N tokens in all: the data's, then the most frequent tokens of --keep-from (a larger corpus
of the same languages), then the tokenizer's own order (BPE: merge order, Unigram: score).
The model can only generate kept tokens: evaluate the trimmed model on held-out data."""


def add_parser(subparsers) -> None:
    from ..options import add_model_arguments

    p = subparsers.add_parser("trim-vocab", help="keep the vocabulary a language pair uses (smaller LM head)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, dtype_default="source")
    g = p.add_argument_group("data (repeat --data, with --src/--tgt once or once per --data)")
    g.add_argument("--data", action="append", required=True, metavar="SPEC",
                   help="texts whose tokens are kept: a file or sample:SRC-TGT (see `mtprune translate --help`)")
    g.add_argument("--src", action="append", metavar="LANG", help="source language of the matching --data")
    g.add_argument("--tgt", action="append", metavar="LANG", help="target language of the matching --data")
    g.add_argument("--src-col", help="source column or field")
    g.add_argument("--tgt-col", help="reference column or field")
    g.add_argument("--part", default="all", choices=("all", "train", "dev", "test"),
                   help="hash partition of each --data to use (default: all; keep the test part out to evaluate on it)")
    g.add_argument("--limit", type=int, help="segments per --data, drawn with a seeded shuffle")
    g.add_argument("--seed", type=int, default=0, help="seed for --limit (default: 0)")
    k = p.add_argument_group("how many tokens")
    k.add_argument("--keep", type=int, metavar="N",
                   help="keep N tokens in all: the data's, then the most frequent of --keep-from, then the "
                   "tokenizer's own order (default: the data's only)")
    k.add_argument("--keep-from", action="append", metavar="SPEC", default=[],
                   help="a larger corpus (file or sample:SRC-TGT, all of it) whose most frequent tokens fill --keep")
    k.add_argument("--min-count", type=int, default=1, metavar="C",
                   help="keep a data token only when it occurs at least C times (default: 1)")
    k.add_argument("--shots", type=int, default=3,
                   help="few-shot examples per counted prompt, as translate uses them (default: 3)")
    p.add_argument("-o", "--output", required=True, help="output folder (must be empty or absent, or use --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.set_defaults(func=run)


def _per_data(args: argparse.Namespace, name: str, n: int) -> list:
    from ...errors import ConfigError

    values = getattr(args, name) or []
    if len(values) not in (0, 1, n):
        raise ConfigError(f"--{name} is given {len(values)} times for {n} --data: give it once, or once per --data")
    return [values[i] if len(values) == n else (values[0] if values else None) for i in range(n)]


def data_specs(args: argparse.Namespace) -> tuple[list, list]:
    """The --data specs (with --part/--limit) and the --keep-from specs (all of each file)."""
    from ..options import data_spec_from_args

    srcs, tgts = _per_data(args, "src", len(args.data)), _per_data(args, "tgt", len(args.data))

    def spec(data: str, src, tgt, **kwargs):
        ns = argparse.Namespace(**{**vars(args), "data": data, "src": src, "tgt": tgt, "ref": None, "split": None,
                                   **kwargs})
        return data_spec_from_args(ns)

    data = [spec(d, s, t) for d, s, t in zip(args.data, srcs, tgts)]
    fill = [spec(d, srcs[0], tgts[0], part="all", limit=None) for d in args.keep_from]
    return data, fill


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...compress.trim_vocab import TrimConfig, run_trim_vocab

    data, fill = data_specs(args)
    cfg = TrimConfig(model=args.model, data=data, out=Path(args.output), keep=args.keep, keep_from=fill,
                     min_count=args.min_count, shots=args.shots, dtype=args.dtype, device=args.device,
                     force=args.force, verify=not args.no_verify)
    cfg.validate({"model": "MODEL", "out": "--output"})
    entry = run_trim_vocab(cfg).entry
    plan, tok, logits = entry["plan"], entry["tokenizer_check"], entry["logit_check"]
    print(f"trimmed {args.model}: kept {entry['kept']:,} of {entry['vocab_size_before']:,} tokens ({plan['required']} "
          f"required, {plan['from_data']} from the data, {plan['closure']} parents, {plan['filled']} by --keep); "
          f"LM head {entry['head_flops_share_before']:.0%} -> {entry['head_flops_share_after']:.0%} of a token's FLOPs")
    print(f"tokenizer check: OK, {tok['equal']} of {tok['inside_kept_vocabulary']} in-vocabulary texts tokenized "
          f"identically ({tok['texts']} texts)")
    print(f"logit check: OK, max |diff| {logits['max_abs_diff']:.2g} on the kept ids at {logits['positions']} positions")
    if entry.get("verification"):
        v = entry["verification"]
        print(f"reload check: OK, greedy outputs equal on {v['prompts']} prompts x {v['tokens_per_prompt']} tokens")
    else:
        print("reload check: skipped (--no-verify)")
    print(f"saved to {args.output}")
    return 0
