"""Sharing an encoded prompt prefix between the rows of a batch: how long it is, and whether the
model's attention window allows it.  Plain Python on configs and token ids (no torch).

A prefix common to every prompt (the instruction, the few-shot examples) is encoded once and its
keys and values copied into each row.  That is exact only where no layer's sliding window could
slide past it onto the padding between the prefix and a row's own tokens.
"""
from __future__ import annotations

from collections.abc import Sequence


def common_prefix_length(id_lists: Sequence[Sequence[int]], minimum: int = 8) -> int:
    """Leading tokens common to every id list, leaving each >= 1 own token; 0 if under ``minimum``."""
    if len(id_lists) < 2:
        return 0
    first = id_lists[0]
    n = min(len(ids) for ids in id_lists) - 1
    for ids in id_lists[1:]:
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    return n if n >= minimum else 0


def attention_window(config) -> int | None:
    """The smallest window of the model's local-attention layers; None when all attend fully."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "sliding_window", None)
    kinds = set(getattr(config, "layer_types", None) or [])
    if kinds - {"full_attention", "sliding_attention"}:
        return 0  # chunked or other local attention: treat as unsafe for a shared prefix
    if kinds and "sliding_attention" not in kinds:
        return None
    return window if isinstance(window, int) and window > 0 else None


def fits_window(window: int | None, longest: int) -> bool:
    """Whether rows of ``longest`` tokens never fill the model's attention window
    (``window`` as ``attention_window`` gives it: None = full attention, 0 = unsafe)."""
    return window is None or (window > 0 and longest <= window)
