"""The FLOP model of translation speed: what a decoding step multiplies, and so the IDEAL speed-up.

``ModelShape`` is what a decoding step multiplies (per layer the linear layers, the attention
width and window, the LM head); ``per_token_flops`` and ``segment_flops`` count matmul FLOPs of one
decoded token and of one translated segment (prompt prefill and decoding); ``ideal_speedup`` is
generated tokens per FLOP of one model over another's.  ``mean_prompt_tokens`` and ``lengths`` give the lengths these
read (mean prompt tokens as a translator renders its sources, mean new tokens, mean context).
Pure arithmetic except ``model_shape`` and ``mean_prompt_tokens`` (a loaded model and tokenizer).
Used by ``bench`` (the interleaved speed table), ``costs`` (each model in its own process),
``budget`` and ``vocab``; the memory estimates (``memory.py``) read the same shape's counts.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    """What a model multiplies and holds.  For the FLOP model: per layer the linear layers' in x out
    products, the attention width (heads x head_dim) and window (None: full attention), and the LM
    head.  For the memory estimates (``memory.py``): the parameter counts and the widths that size
    activations, the KV cache and LoRA."""

    linear_per_layer: tuple[int, ...]
    attention_width: tuple[int, ...]
    window: tuple[int | None, ...]
    head: int  # vocab x hidden
    params: int = 0
    layer_params: int = 0  # parameters of one decoder layer (the mean)
    hidden: int = 0
    intermediate: int = 0
    vocab: int = 0
    kv_dim: int = 0  # key/value heads x head size
    lora_width: int = 0  # sum of (in + out) of one layer's linear modules: LoRA adds rank x this per layer
    embedding_params: int = 0  # input embeddings and (untied) LM head

    @property
    def layers(self) -> int:
        return len(self.linear_per_layer)

    def pruned(self, removed: int) -> ModelShape:
        """The shape after removing ``removed`` decoder layers (the last ones: the memory estimates
        read the counts, not which layers went)."""
        keep = self.layers - removed
        return replace(self, linear_per_layer=self.linear_per_layer[:keep], attention_width=self.attention_width[:keep],
                       window=self.window[:keep], params=self.params - removed * self.layer_params)

    def flop_record(self) -> dict[str, Any]:
        """The FLOP model's fields, as a bench JSON holds them (``from_dict`` reads them back)."""
        return {"linear_per_layer": list(self.linear_per_layer), "attention_width": list(self.attention_width),
                "window": list(self.window), "head": self.head}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelShape:
        """From ``flop_record()`` as a bench JSON holds it (lists for tuples)."""
        return cls(tuple(d["linear_per_layer"]), tuple(d["attention_width"]), tuple(d["window"]), d["head"])


def per_token_flops(shape: ModelShape, context: float) -> dict[str, float]:
    """Matmul FLOPs of one decoded token at ``context`` tokens attended:
    2 x in x out per linear layer and the LM head; attention 4 x width x min(context, window)
    per layer (scores q.K and the weighted sum of V)."""
    linear = 2.0 * sum(shape.linear_per_layer)
    head = 2.0 * shape.head
    attention = sum(4.0 * width * (min(context, window) if window else context)
                    for width, window in zip(shape.attention_width, shape.window))
    return {"linear": linear, "head": head, "attention": attention, "total": linear + head + attention}


def segment_flops(shape: ModelShape, prompt_tokens: float, new_tokens: float) -> float:
    """Matmul FLOPs of translating one segment: the prompt's prefill (every prompt token through
    the layers, attending to half the prompt on average; the LM head once, for the first new
    token) and ``new_tokens`` - 1 decoding steps at their mean context.  With long prompts (few-shot
    examples) the prefill is much of the work, and the layers, not the head, are most of it: a
    ratio of per-token decoding FLOPs alone underestimates what removing layers gains there."""
    prefill = per_token_flops(shape, prompt_tokens / 2)
    decode = per_token_flops(shape, prompt_tokens + new_tokens / 2)["total"]
    return prompt_tokens * (prefill["linear"] + prefill["attention"]) + prefill["head"] + max(new_tokens - 1, 0) * decode


def ideal_speedup(shape: ModelShape, row: dict[str, Any], base_shape: ModelShape, base_row: dict[str, Any]) -> float:
    """The tokens/s ratio that the models' FLOPs allow: generated tokens per FLOP of each model
    over the first model's, each translating its own prompts (``segment_flops``).  A bench JSON
    before prompt lengths were recorded: the ratio of per-token decoding FLOPs at each measured
    context."""
    if "mean_prompt_tokens" not in row or "mean_prompt_tokens" not in base_row:
        return per_token_flops(base_shape, base_row["mean_context"])["total"] / \
            per_token_flops(shape, row["mean_context"])["total"]

    def tokens_per_flop(sh: ModelShape, r: dict[str, Any]) -> float:
        return r["mean_new_tokens"] / segment_flops(sh, r["mean_prompt_tokens"], r["mean_new_tokens"])

    return tokens_per_flop(shape, row) / tokens_per_flop(base_shape, base_row)


def model_shape(model) -> ModelShape:
    """The ModelShape of a transformers causal LM, loaded or a meta-device skeleton
    (``load.skeleton_model``): dense, an MoE's experts all count."""
    import torch.nn as nn

    from .layers import find_layer_stack

    config = model.config.get_text_config()
    layers = find_layer_stack(model).layers
    linear = tuple(sum(m.in_features * m.out_features for m in layer.modules() if isinstance(m, nn.Linear))
                   for layer in layers)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    types = getattr(config, "layer_types", None) or ["full_attention"] * len(layers)
    sliding = getattr(config, "sliding_window", None)
    window = tuple(sliding if "sliding" in str(t) and sliding else None for t in types[: len(layers)])
    out = model.get_output_embeddings()
    head = out.weight.shape[0] * out.weight.shape[1] if out is not None else 0
    return ModelShape(linear, (heads * head_dim,) * len(layers), window, head, **_counts(model, layers, config, heads, head_dim))


def _counts(model, layers, config, heads: int, head_dim: int) -> dict[str, int]:
    """The memory estimates' fields of a ModelShape: parameter counts and widths."""
    import torch.nn as nn

    hidden = config.hidden_size
    embeddings = {id(m.weight): m.weight.numel() for m in (model.get_input_embeddings(), model.get_output_embeddings())
                  if m is not None}  # a tied head is the same tensor: counted once
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "layer_params": sum(p.numel() for p in layers.parameters()) // len(layers),
        "hidden": hidden,
        "intermediate": getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden,
        "vocab": config.vocab_size,
        "kv_dim": (getattr(config, "num_key_value_heads", None) or heads) * head_dim,
        "lora_width": sum(m.in_features + m.out_features for m in layers[0].modules() if isinstance(m, nn.Linear)),
        "embedding_params": sum(embeddings.values()),
    }


def mean_prompt_tokens(loaded, translator, sources: Sequence[str]) -> float:
    """Mean prompt length in tokens, as the translator renders each source."""
    prompter = translator.prompter
    rendered = getattr(translator, "rendered", None)  # with document context (documents.ContextTranslator)
    prompts = rendered(sources) if rendered is not None else [prompter.render(s) for s in sources]
    ids = loaded.tokenizer(prompts, add_special_tokens=prompter.add_special_tokens)["input_ids"]
    return sum(len(x) for x in ids) / len(ids)


def lengths(prompt_tokens: float, new_tokens: float) -> dict[str, float]:
    """A row's mean prompt and output lengths, and the mean context a decoded token attends to."""
    return {"mean_prompt_tokens": round(prompt_tokens, 1), "mean_new_tokens": round(new_tokens, 2),
            "mean_context": round(prompt_tokens + new_tokens / 2, 1)}
