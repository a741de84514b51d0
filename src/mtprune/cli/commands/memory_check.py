"""The memory check every command that loads a model runs before it loads one (``cli.main`` calls
``check_command``): the stage's estimate from the model's config against this machine's room.
finetune checks itself after tokenizing its data (``recover.fit``): its activations depend on it."""
from __future__ import annotations

import argparse
import logging

from ...errors import MtpruneError
from ...model.memory import PROMPT_TOKENS, Estimate, inference_memory
from ...model.shape import ModelShape
from ...model.preflight import SKIP_FLAG, FitCheck, Option, enforce, inference_options, room_for

logger = logging.getLogger(__name__)
INFERENCE = ("translate", "evaluate", "synthesize", "bench", "search")
WEIGHTS = ("prune", "trim-vocab", "quantize", "heal")


def add_skip_argument(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument(SKIP_FLAG, action="store_true",
                   help=help or "load the model even where its memory estimate (from its config, checked before any "
                   "weight loads) is above what this machine has (available RAM, or the GPU's free memory)")


def check_command(args: argparse.Namespace) -> None:
    """Raise MemoryFitError where the command's models will not fit; a no-op for other commands,
    with --skip-memory-check (a warning then), or where no config can be read."""
    command = getattr(args, "command", None)
    if command not in INFERENCE + WEIGHTS:
        return
    check = command_check(args)
    if check is not None:
        enforce(check, skip=getattr(args, "skip_memory_check", False))


def command_check(args: argparse.Namespace) -> FitCheck | None:
    from ...model.memory import shape_of
    from ...model.load import choose_device

    specs = getattr(args, "models", None) or [getattr(args, "model", None) or getattr(args, "student", None)]
    shapes = [shape_of(spec) for spec in specs if spec]
    if not shapes or any(shape is None for shape in shapes):
        logger.info("memory check: no config to estimate from; not checked")
        return None
    room = room_for(choose_device(getattr(args, "device", "auto") or "auto"))
    dtype = _dtype_bytes(getattr(args, "dtype", "auto"), room.device)
    if args.command in WEIGHTS:
        return FitCheck(args.command, _weights(args, shapes[0], dtype), room)
    if getattr(args, "backend", "hf") == "vllm":
        return None  # vLLM sizes its own cache from --gpu-memory-utilization
    return _inference_check(args, shapes, dtype, room)


def _weights(args: argparse.Namespace, shape: ModelShape, dtype: int) -> Estimate:
    if args.command == "heal":  # student and teacher, fp32 unless --dtype says otherwise
        return Estimate(weights=2 * shape.params * dtype, note="student and teacher")
    if args.command == "quantize":
        return Estimate(weights=shape.params * 4, note="GPTQ works on fp32 weights, one layer's Hessians at a time")
    return Estimate(weights=shape.params * dtype, note="the model in its saved dtype")


def _inference_check(args: argparse.Namespace, shapes: list[ModelShape], dtype: int, room) -> FitCheck:
    tokens = PROMPT_TOKENS + (getattr(args, "max_new_tokens", None) or 256)
    batch = _batch_size(args)
    rows = batch * _candidates(args, batch) if args.command == "search" else batch
    each = [inference_memory(shape, dtype_bytes=dtype, batch_size=rows, tokens=tokens) for shape in shapes]
    if args.command == "search" and getattr(args, "fast", False):
        each = [_fast_search(args, shapes[0], dtype, batch, tokens)]
    if len(each) == 1:
        options = inference_options(shapes[0], dtype_bytes=dtype, batch_size=batch, tokens=tokens)
        if args.command == "search":
            options = _search_options(args, shapes[0], dtype, batch, tokens)
        return FitCheck(args.command, each[0], room, tuple(options))
    # bench: every model loaded at once (interleaved rounds), one translating at a time
    estimate = Estimate(weights=sum(e.weights for e in each), activations=max(e.activations for e in each),
                        kv_cache=max(e.kv_cache for e in each), note=f"{len(each)} models loaded at once")
    return FitCheck(args.command, estimate, room)


def _fast_search(args: argparse.Namespace, shape: ModelShape, dtype: int, batch: int, tokens: int) -> Estimate:
    """--fast: the larger of its two phases, bounded as the exact search's translation of every
    candidate side by side, or the logprob proxy's logits pass (at most ``LOGITS_BUDGET`` floats in
    the compute dtype, fp32 and log-softmax), which do not overlap."""
    from ...search.importance import LOGITS_BUDGET

    est = inference_memory(shape, dtype_bytes=dtype, batch_size=batch * _candidates(args, batch), tokens=tokens)
    if getattr(args, "proxy", "logprob") != "logprob":
        return est
    return Estimate(weights=est.weights, activations=max(est.activations, LOGITS_BUDGET * (dtype + 8)),
                    kv_cache=est.kv_cache, note="the translation of the candidates or the logprob proxy's pass")


def _batch_size(args: argparse.Namespace) -> int:
    if getattr(args, "batch_sizes", None):
        from ...bench.config import parse_batch_sizes

        return max(parse_batch_sizes(args.batch_sizes))
    return getattr(args, "batch_size", None) or 16


def _candidates(args: argparse.Namespace, batch: int) -> int:
    from ...search.config import default_candidate_batch

    return getattr(args, "candidate_batch", None) or default_candidate_batch(batch)


def _search_options(args, shape: ModelShape, dtype: int, batch: int, tokens: int) -> list[Option]:
    """Fewer candidates side by side (the same scores in float32; slower)."""
    candidates = _candidates(args, batch)
    options = []
    while candidates > 1:
        candidates //= 2
        options.append(Option({"candidate_batch": candidates},
                              inference_memory(shape, dtype_bytes=dtype, batch_size=batch * candidates,
                                               tokens=tokens), "the same plan; slower"))
    return options


def _dtype_bytes(name: str | None, device: str) -> int:
    """Bytes per weight of the dtype the command will load in (``source``/unknown: 4, the upper bound)."""
    from ...model.load import choose_dtype

    try:
        dtype = str(choose_dtype(name or "auto", device))
    except MtpruneError:  # an invalid name is the command's own error to report
        return 4
    return 2 if dtype.endswith(("bfloat16", "float16")) else 4

