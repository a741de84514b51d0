"""Hidden states for local healing: the teacher's, computed once, and the student's block run on them.

``teacher_states`` keeps, per span of original layer ids, the teacher's hidden state entering the
span's first layer and leaving its last (hooks on the teacher's layers, no LM head); ``run_block``
runs a few student layers from such a state; ``hidden_state_loss`` compares hidden states;
``regression_module`` wraps the block and the loss as what transformers' Trainer trains.
The texts arrive as token ids, batched by length (``length_batches``) and padded on the right.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

LOSSES = ("relmse", "mse", "cosine")
HELDOUT_EVERY = 8  # one text in 8 measures the loss before and after, unseen in training


def hidden_state_loss(kind: str, pred, target, mask):
    """Mean over real tokens of a per-token distance between hidden states -> scalar.

    pred, target: (batch, seq, hidden); mask: (batch, seq), 1 on real tokens.
    relmse: ||pred - target||^2 / ||target||^2 per token (scale-free: a few positions, such as
    the first token, carry hidden states orders of magnitude larger than the rest);
    mse: mean squared error per hidden unit; cosine: 1 - cos(pred, target).
    """
    import torch.nn.functional as F

    pred, target = pred.float(), target.float()
    if kind == "relmse":
        per_token = (pred - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp_min(1e-6)
    elif kind == "mse":
        per_token = (pred - target).pow(2).mean(-1)
    elif kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(pred, target, dim=-1)
    else:
        raise ConfigError(f"unknown loss {kind!r}; valid: {', '.join(LOSSES)}")
    m = mask.to(per_token.dtype)  # (batch, seq)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)



def tokenize_texts(texts: Sequence[str], tokenizer, max_length: int,
                   add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each text, cut at ``max_length``; texts of fewer than 2 tokens are dropped."""
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens, truncation=True,
                    max_length=max_length)["input_ids"]
    return [row for row in ids if len(row) >= 2]


def length_batches(token_ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length (little padding), longest first."""
    order = sorted(range(len(token_ids)), key=lambda i: (-len(token_ids[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_right(rows: Sequence[Any], pad_value, width: int | None = None):
    """Stack 1-D or 2-D tensors padded on the right of dim 0 -> (batch, width, ...)."""
    width = width or max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), width, *rows[0].shape[1:]), pad_value)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def _hidden_in(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _hidden_out(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def teacher_states(teacher, spans: Sequence[tuple[int, int]], token_ids: Sequence[Sequence[int]], batch_size: int,
                   pad_id: int, progress: bool = True) -> list[list[tuple[Any, Any]]]:
    """Per span (start, end), per text: (teacher hidden state entering layer ``start``, teacher
    output of layer ``end``), each (len, hidden), computed once without grad by hooks on the
    teacher's layers (ORIGINAL ids), running only the layers up to the last one needed and no LM head."""
    import torch
    from tqdm.auto import tqdm

    from ..model.layers import LayerSurgeon

    surgeon = LayerSurgeon(teacher)
    layers = surgeon.original_layers
    seen: dict[tuple[str, int], Any] = {}

    def pre(layer_id):
        return lambda module, args, kwargs: seen.__setitem__(("in", layer_id), _hidden_in(args, kwargs))

    def post(layer_id):
        return lambda module, args, kwargs, output: seen.__setitem__(("out", layer_id), _hidden_out(output))

    handles = [layers[start].register_forward_pre_hook(pre(start), with_kwargs=True) for start, _ in spans]
    handles += [layers[end].register_forward_hook(post(end), with_kwargs=True) for _, end in spans]
    states: list[list[Any]] = [[None] * len(token_ids) for _ in spans]
    device = next(teacher.parameters()).device
    try:
        # no_grad, not inference_mode: these tensors are used later in autograd (as inputs and targets)
        with surgeon.subset(range(max(end for _, end in spans) + 1)), torch.no_grad():
            for batch in tqdm(length_batches(token_ids, batch_size), desc="teacher", disable=not progress, leave=False):
                rows = [torch.tensor(token_ids[i]) for i in batch]
                ids = pad_right(rows, pad_id).to(device)
                mask = pad_right([torch.ones_like(r) for r in rows], 0).to(device)
                teacher.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
                for index, (start, end) in enumerate(spans):
                    h_in, h_out = seen[("in", start)], seen[("out", end)]
                    for row, i in enumerate(batch):
                        n = len(token_ids[i])
                        # kept in CPU memory (a copy, not a view that holds the whole batch)
                        states[index][i] = (h_in[row, :n].to("cpu", copy=True), h_out[row, :n].to("cpu", copy=True))
    finally:
        for handle in handles:
            handle.remove()
    return states


def run_block(student, surgeon, positions: Sequence[int], input_ids, attention_mask, h_in):
    """The student's layers at ``positions`` (its own 0-based positions) applied to ``h_in``.

    The model's own forward builds the attention masks and rotary position embeddings each
    layer needs (sliding or full attention); a pre-hook swaps the first layer's input for
    ``h_in``, a hook takes the last layer's output (the final norm after it is ignored).
    """
    layers = [surgeon.original_layers[p] for p in positions]
    captured = {}

    def inject(module, args, kwargs):
        if args:
            return (h_in, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h_in}

    def take(module, args, kwargs, output):
        captured["out"] = _hidden_out(output)

    handles = [layers[0].register_forward_pre_hook(inject, with_kwargs=True),
               layers[-1].register_forward_hook(take, with_kwargs=True)]
    try:
        with surgeon.subset(positions):
            student.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return captured["out"]


def regression_module(student, surgeon, positions: Sequence[int], loss: str):
    """An nn.Module whose forward returns {"loss": ...}: what transformers' Trainer trains."""
    import torch.nn as nn

    class BlockRegression(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = student  # all parameters frozen except the trained layers'

        def forward(self, input_ids, attention_mask, h_in, target):
            pred = run_block(self.student, surgeon, positions, input_ids, attention_mask, h_in)
            return {"loss": hidden_state_loss(loss, pred, target, attention_mask)}

    return BlockRegression()


class Examples:
    """Per-text training examples of one unit (a map-style dataset)."""

    def __init__(self, token_ids, states):
        self.token_ids, self.states = token_ids, states

    def __len__(self) -> int:
        return len(self.token_ids)

    def __getitem__(self, i):
        import torch

        h_in, target = self.states[i]
        return {"input_ids": torch.tensor(self.token_ids[i]), "h_in": h_in, "target": target}


def subset(token_ids, states, indices: Sequence[int]) -> Examples:
    """The examples of the texts at ``indices``."""
    return Examples([token_ids[i] for i in indices], [states[i] for i in indices])


def collate_fn(pad_id: int):
    """Pads a batch of examples: token ids with ``pad_id``, hidden states with zeros."""
    import torch

    def collate(items):
        rows = [it["input_ids"] for it in items]
        return {
            "input_ids": pad_right(rows, pad_id),
            "attention_mask": pad_right([torch.ones_like(r) for r in rows], 0),
            "h_in": pad_right([it["h_in"] for it in items], 0.0),
            "target": pad_right([it["target"] for it in items], 0.0),
        }
    return collate


def mean_loss(module, examples: Examples, collate, batch_size: int, device) -> float:
    """Token-weighted mean loss over ``examples`` (no grad), in length-sorted batches."""
    import torch

    total = tokens = 0.0
    module.eval()
    with torch.no_grad():
        for batch in length_batches(examples.token_ids, batch_size):
            inputs = {k: v.to(device) for k, v in collate([examples[i] for i in batch]).items()}
            n = float(inputs["attention_mask"].sum())
            total += float(module(**inputs)["loss"]) * n
            tokens += n
    return total / max(tokens, 1.0)


def freeze_all_but(model, layers) -> int:
    """Only the parameters of ``layers`` train; returns how many there are."""
    for p in model.parameters():
        p.requires_grad_(False)
    n = 0
    for layer in layers:
        for p in layer.parameters():
            p.requires_grad_(True)
            n += p.numel()
    return n


def split_heldout(n: int, every: int = HELDOUT_EVERY) -> tuple[list[int], list[int]]:
    """(train, held-out) text indices: every ``every``-th text is held out to measure the loss;
    with fewer than ``every`` texts, all train and the loss is measured on them."""
    if n < every:
        return list(range(n)), list(range(n))
    heldout = list(range(every - 1, n, every))
    return [i for i in range(n) if (i + 1) % every], heldout
