"""Calibration for GPTQ: the pair's own translation prompts, and each layer's input statistics.

Calibration texts are what the model will see in use: the prompt in the format the model
translates with (the format it was fine-tuned with, as ``evaluate`` picks it, else few-shot or
its chat template), followed by the reference translation as the model should write it
(``recover.sft_data``: the same rules as fine-tuning), each tokenized as the backends do.

``LayerInputs`` keeps every example's input to one decoder layer at a time and sums ``2 x x^T``
over every token that enters each of that layer's linear modules: the statistics GPTQ needs.
Layers before it are already quantized, so each layer is quantized against the inputs it will
really receive.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Calibration:
    """Token ids of the calibration examples (one sequence each) and what they came from."""

    sequences: list[list[int]]
    prompt: str  # the prompt mode the examples were rendered in
    data: dict[str, Any]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def describe(self) -> dict[str, Any]:
        digest = hashlib.sha256(repr(self.sequences).encode()).hexdigest()[:16]
        return {**self.data, "prompt": self.prompt, "examples": len(self.sequences), "tokens": self.tokens,
                "token_ids_sha256": digest}


def calibration_examples(loaded, pair, *, prompt: str = "auto", shots: int = 3, shots_from: str | None = None,
                         shots_by: str = "similar", max_length: int = 512) -> Calibration:
    """The pair's segments as prompt + reference token ids, in the format ``loaded`` translates with."""
    from ...translate.translator import default_prompt
    from ...recover.sft_data import answer_format, build_pair_prompt

    mode = default_prompt(loaded, prompt)
    tokenizer = loaded.tokenizer
    pair_prompt = build_pair_prompt(tokenizer, pair, None, mode, shots, shots_from, shots_by)
    prompter = pair_prompt.prompter
    before, after = answer_format(tokenizer, prompter)
    sequences, too_long = [], 0
    for segment in pair.segments:
        ids = tokenizer(prompter.render(segment.source), add_special_tokens=prompter.add_special_tokens)["input_ids"]
        if segment.reference:
            answer = " ".join(segment.reference.splitlines()) if prompter.single_line else segment.reference
            ids = ids + tokenizer(f"{before}{answer}{after}", add_special_tokens=False)["input_ids"]
        if len(ids) > max_length:
            too_long += 1
            ids = ids[:max_length]
        sequences.append(ids)
    if too_long:
        logger.info("calibration: %d of %d examples cut to %d tokens", too_long, len(sequences), max_length)
    return Calibration(sequences=sequences, prompt=prompter.mode,
                       data={"spec": pair.spec.spec, "part": pair.spec.part, "pair": pair.name,
                             "segments": len(pair.segments), "data_hash": pair.data_hash})


class _StopForward(Exception):
    """Raised by a hook once the last decoder layer's inputs are captured: the head is not needed."""


class LayerInputs:
    """Every calibration example's input to one decoder layer at a time, for quantizing layer by layer.

    One forward pass per example records, for every decoder layer, the keyword arguments the model
    passes it (attention masks, position embeddings: the same objects for layers of one type) and
    the hidden states entering the first layer.  Then, layer after layer: ``hessians(i, ...)`` runs
    only layer ``i`` on the current hidden states (statistics of its linear modules' inputs), and,
    once it is quantized, ``advance(i)`` runs it again to give the next layer's inputs, as the
    quantized model will compute them.  Two layer passes per layer: the cost of two forward passes
    in all, where re-running the model up to each layer would cost half a pass per layer.
    """

    def __init__(self, model, layers, sequences: list[list[int]]):
        import torch

        self.layers = layers
        self.device = next(model.parameters()).device
        self.hidden: list[Any] = []
        self.kwargs: list[list[dict[str, Any]]] = [[] for _ in layers]
        last = len(layers) - 1

        def capture(index: int):
            def hook(module, args, kwargs):
                if index == 0:
                    self.hidden.append(args[0] if args else kwargs["hidden_states"])
                self.kwargs[index].append({k: v for k, v in kwargs.items() if k != "hidden_states"})
                if index == last:
                    raise _StopForward
            return hook

        hooks = [layer.register_forward_pre_hook(capture(i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:
            with torch.no_grad():
                for ids in sequences:
                    try:
                        model(input_ids=torch.tensor([ids], device=self.device), use_cache=False)
                    except _StopForward:
                        pass
        finally:
            for h in hooks:
                h.remove()

    def _run(self, index: int):
        import torch

        layer = self.layers[index]
        with torch.no_grad():
            for hidden, kwargs in zip(self.hidden, self.kwargs[index]):
                out = layer(hidden, **kwargs)
                yield out[0] if isinstance(out, tuple) else out

    def hessians(self, index: int, linears: dict[str, Any]) -> dict[str, Any]:
        """``H = 2/n sum x x^T`` per linear module of layer ``index`` over every calibration token (n)."""
        import torch

        store = {name: torch.zeros(m.in_features, m.in_features, device=self.device) for name, m in linears.items()}
        counts = {name: 0 for name in linears}
        shared: dict[str, Any] = {}  # q, k and v (gate and up) read one input: x^T x once for them
        hooks = [m.register_forward_hook(_accumulate(store, counts, name, shared)) for name, m in linears.items()]
        try:
            for _ in self._run(index):
                pass
        finally:
            for h in hooks:
                h.remove()
        return {name: 2 * store[name] / max(counts[name], 1) for name in linears}

    def advance(self, index: int) -> None:
        """The inputs of layer ``index + 1``: layer ``index`` (now quantized) run on its inputs."""
        self.hidden = list(self._run(index))
        self.kwargs[index] = []  # no longer needed


def _accumulate(store: dict[str, Any], counts: dict[str, int], name: str, shared: dict[str, Any]):
    def hook(module, args, output):
        if shared.get("input") is not args[0]:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()  # (tokens, in)
            shared.update(input=args[0], product=x.T @ x, tokens=x.shape[0])
        store[name] += shared["product"]
        counts[name] += shared["tokens"]
    return hook
