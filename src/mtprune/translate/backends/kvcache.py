"""A KV cache that grows in place, for long batched greedy decoding.

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, which
copies the layer's whole cache at every step: with a few-shot prompt prefix copied into
every row of a large batch, that copy costs as much as the attention itself.  Here each
layer writes into a buffer with room for the tokens still to come, and exposes views.

Used only where it is equivalent to the model's own cache: every layer attends fully or
through a sliding window that the longest row never fills (``prefix.fits_window``), so no layer
would ever drop a key.  Elsewhere the caller keeps ``DynamicCache(config=...)``.
"""
from __future__ import annotations

import functools

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values are views of a buffer with ``reserve`` spare tokens."""

    def __init__(self, reserve: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.reserve = max(1, reserve)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def _owns_views(self) -> bool:
        return self._key_buffer is not None and self.keys.data_ptr() == self._key_buffer.data_ptr() \
            and self.keys.shape[0] == self._key_buffer.shape[0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, new = self.get_seq_length(), key_states.shape[-2]
        if not self._owns_views() or n + new > self._key_buffer.shape[-2]:
            self._allocate(key_states, value_states, n, n + new + self.reserve)
        self._key_buffer[:, :, n : n + new] = key_states
        self._value_buffer[:, :, n : n + new] = value_states
        self.keys = self._key_buffer[:, :, : n + new]
        self.values = self._value_buffer[:, :, : n + new]
        return self.keys, self.values

    def _allocate(self, key_states, value_states, n: int, capacity: int) -> None:
        b, h, _, d = key_states.shape
        keys = key_states.new_empty((b, h, capacity, d))
        values = value_states.new_empty((b, h, capacity, value_states.shape[-1]))
        if n:
            keys[:, :, :n] = self.keys
            values[:, :, :n] = self.values
        self._key_buffer, self._value_buffer = keys, values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        n = self.get_seq_length()
        if n == 0:
            return
        if self._owns_views():
            self._key_buffer = self._key_buffer.index_select(0, indices)
            self._value_buffer = self._value_buffer.index_select(0, indices)
            self.keys, self.values = self._key_buffer[:, :, :n], self._value_buffer[:, :, :n]
        else:
            super().batch_select_indices(indices)


def growing_cache(reserve: int) -> DynamicCache:
    """An empty cache whose layers (created on first use) are ``GrowingLayer``s."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = functools.partial(GrowingLayer, reserve)
    return cache
