"""Layer surgery: run a decoder-only model with a subset of its ORIGINAL layers.

Everything here works on modules in memory (no file I/O) and shares weights: a subset
is a new ``nn.ModuleList`` over the same layer objects, so switching subsets costs
microseconds and no memory.  Layer ids are always the ORIGINAL 0-based ids.

What has to change when layers go (and what research scripts forget):
- the ModuleList holding the decoder layers;
- ``layer_idx`` on every kept layer and its submodules (the KV-cache slot: a stale
  index makes generation with the cache read another layer's keys, or IndexError);
- ``config.num_hidden_layers`` and every per-layer list in the config, such as
  ``layer_types`` (Gemma 2/3, Cohere2, Qwen2/3): the forward loop indexes them by
  position, and saving refuses a config whose lists disagree with the layer count.
"""
from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

# Where decoder-only models in transformers keep their layers, relative to the model.
# Llama/Mistral/Qwen/Gemma/Cohere/Phi-3/OLMo: model.layers; GPT-2 style: transformer.h.
_STACK_PATHS = ("model.layers", "transformer.h", "model.decoder.layers", "gpt_neox.layers", "layers")

# Config keys whose length equals the layer count by coincidence, never per layer.
_NOT_PER_LAYER = frozenset({
    "architectures", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
    "eos_token_id", "bos_token_id", "pad_token_id", "decoder_start_token_id", "forced_decoder_ids",
})


# ----------------------------------------------------------------------------------------
# Pure helpers on layer ids (no torch): used by the CLI before anything heavy loads.
# ----------------------------------------------------------------------------------------

def parse_layer_ids(text: str, *, option: str = "--drop") -> list[int]:
    """Parse ``"1,4,7-9"`` into ``[1, 4, 7, 8, 9]`` (original 0-based ids, order kept)."""
    ids: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ConfigError(f"{option}: {part!r} is not a layer id or range (expected e.g. 3 or 5-7)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"{option}: range {part!r} runs backwards")
        ids.extend(range(lo, hi + 1))
    if not ids:
        raise ConfigError(f"{option}: no layer ids given")
    return ids


def check_layer_ids(ids: Sequence[int], num_layers: int, *, option: str = "--drop") -> None:
    """Refuse duplicates and ids outside ``0..num_layers-1``."""
    seen: set[int] = set()
    dups = sorted({i for i in ids if i in seen or seen.add(i)})
    if dups:
        raise ConfigError(f"{option}: duplicate layer ids {dups}")
    bad = [i for i in ids if not 0 <= i < num_layers]
    if bad:
        raise ConfigError(
            f"{option}: layer ids {bad} out of range: this model has {num_layers} layers, "
            f"ids 0..{num_layers - 1} (original 0-based ids)"
        )


def keep_from_drop(drop: Sequence[int], num_layers: int) -> list[int]:
    """Original ids kept when ``drop`` is removed; refuses removing every layer."""
    check_layer_ids(drop, num_layers, option="--drop")
    keep = [i for i in range(num_layers) if i not in set(drop)]
    if not keep:
        raise ConfigError(f"--drop removes all {num_layers} layers; at least one must stay")
    return keep


def drop_from_keep(keep: Sequence[int], num_layers: int) -> list[int]:
    """Original ids removed when only ``keep`` stays."""
    check_layer_ids(keep, num_layers, option="--keep")
    if not keep:
        raise ConfigError("--keep: at least one layer must stay")
    return [i for i in range(num_layers) if i not in set(keep)]


# ----------------------------------------------------------------------------------------
# Finding the stack
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerStack:
    """The module that owns the decoder ModuleList, and the attribute name on it."""

    parent: Any  # nn.Module
    attr: str
    path: str  # dotted path from the model, e.g. "model.layers"

    @property
    def layers(self):
        return getattr(self.parent, self.attr)


def _get_path(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def find_layer_stack(model) -> LayerStack:
    """Locate the decoder layers of ``model`` (a ModuleList as long as the config says)."""
    import torch.nn as nn

    expected = getattr(model.config, "num_hidden_layers", None)
    for path in _STACK_PATHS:
        candidate = _get_path(model, path)
        if isinstance(candidate, nn.ModuleList) and (expected is None or len(candidate) == expected):
            parent_path, _, attr = path.rpartition(".")
            parent = _get_path(model, parent_path) if parent_path else model
            return LayerStack(parent=parent, attr=attr, path=path)
    # Fallback: the longest ModuleList whose length matches the config.
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == expected and len(module) > 0:
            parent_path, _, attr = name.rpartition(".")
            parent = _get_path(model, parent_path) if parent_path else model
            return LayerStack(parent=parent, attr=attr, path=name)
    raise ConfigError(
        f"cannot find the decoder layers of {type(model).__name__}: no ModuleList of "
        f"{expected} layers at {', '.join(_STACK_PATHS)}; mtprune supports decoder-only models "
        "whose layers sit in one ModuleList (Llama, Mistral, Qwen2/3, Gemma 1/2/3, Cohere, Phi-3, OLMo 2, GPT-2)"
    )


def num_layers(model) -> int:
    """Current number of decoder layers, read from the model."""
    return len(find_layer_stack(model).layers)


def _configs(model, stack: LayerStack) -> list[Any]:
    """The distinct config objects that describe the stack (the model's and its base's)."""
    configs: list[Any] = []
    for owner in (model, stack.parent):
        cfg = getattr(owner, "config", None)
        if cfg is not None and all(cfg is not c for c in configs):
            configs.append(cfg)
    return configs


def per_layer_config_keys(config, n: int) -> list[str]:
    """Config attributes that hold one entry per layer (lists of length ``n``)."""
    keys = []
    for key, value in vars(config).items():
        if key.startswith("_") or key in _NOT_PER_LAYER:
            continue
        if isinstance(value, (list, tuple)) and len(value) == n:
            keys.append(key)
    return keys


def _layer_idx_holders(layer) -> list[Any]:
    """The layer and its submodules that carry an integer ``layer_idx``."""
    return [m for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]


# ----------------------------------------------------------------------------------------
# Subsets of the original layers
# ----------------------------------------------------------------------------------------

class LayerSurgeon:
    """Switches a model between subsets of its original layers, in place, sharing weights.

    >>> surgeon = LayerSurgeon(model)
    >>> with surgeon.subset([0, 2, 3]):   # original ids to keep
    ...     logits = model(ids).logits
    >>> surgeon.kept                     # back to all layers
    """

    def __init__(self, model):
        import torch.nn as nn

        self._nn = nn
        self.model = model
        self.stack = find_layer_stack(model)
        self.original_layers = list(self.stack.layers)
        n = len(self.original_layers)
        self.num_original = n
        self._configs = _configs(model, self.stack)
        self._config_lists = {
            id(cfg): {k: list(getattr(cfg, k)) for k in per_layer_config_keys(cfg, n)} for cfg in self._configs
        }
        self._config_counts = {id(cfg): getattr(cfg, "num_hidden_layers", None) for cfg in self._configs}
        self._idx_holders = [_layer_idx_holders(layer) for layer in self.original_layers]
        self._original_idx = [[m.layer_idx for m in holders] for holders in self._idx_holders]
        self.kept: tuple[int, ...] = tuple(range(n))

    @property
    def per_layer_keys(self) -> list[str]:
        return sorted({k for lists in self._config_lists.values() for k in lists})

    def normalize(self, keep: Iterable[int]) -> tuple[int, ...]:
        """Sorted, checked original ids."""
        keep = list(keep)
        check_layer_ids(keep, self.num_original, option="keep")
        if not keep:
            raise ConfigError("keep: at least one layer must stay")
        return tuple(sorted(keep))

    def apply(self, keep: Iterable[int]) -> None:
        """Make the model run with the original layers ``keep`` (in original order)."""
        keep = self.normalize(keep)
        layers = [self.original_layers[i] for i in keep]
        setattr(self.stack.parent, self.stack.attr, self._nn.ModuleList(layers))
        for pos, orig in enumerate(keep):
            for module in self._idx_holders[orig]:
                module.layer_idx = pos
        for cfg in self._configs:
            if self._config_counts[id(cfg)] is not None:
                cfg.num_hidden_layers = len(keep)
            for key, values in self._config_lists[id(cfg)].items():
                original = getattr(cfg, key)
                trimmed = [values[i] for i in keep]
                setattr(cfg, key, tuple(trimmed) if isinstance(original, tuple) else trimmed)
        self.kept = keep

    def restore(self) -> None:
        """Give back the original model exactly (layers, indices, config)."""
        self.apply(range(self.num_original))
        for holders, originals in zip(self._idx_holders, self._original_idx):
            for module, idx in zip(holders, originals):
                module.layer_idx = idx
        for cfg in self._configs:
            if self._config_counts[id(cfg)] is not None:
                cfg.num_hidden_layers = self._config_counts[id(cfg)]

    @contextlib.contextmanager
    def subset(self, keep: Iterable[int]) -> Iterator[None]:
        """Temporarily run with ``keep``; the previous subset comes back on exit."""
        previous = self.kept
        self.apply(keep)
        try:
            yield
        finally:
            self.apply(previous)

    def commit(self) -> None:
        """Make the current subset permanent: forget removed layers so they can be freed."""
        kept = self.kept
        self.original_layers = [self.original_layers[i] for i in kept]
        self._idx_holders = [self._idx_holders[i] for i in kept]
        self._original_idx = [[pos] * len(holders) for pos, holders in enumerate(self._idx_holders)]
        for cfg in self._configs:
            lists = self._config_lists[id(cfg)]
            for key in lists:
                lists[key] = [lists[key][i] for i in kept]
            if self._config_counts[id(cfg)] is not None:
                self._config_counts[id(cfg)] = len(kept)
        self.num_original = len(kept)
        self.kept = tuple(range(len(kept)))


def prune_layers(model, keep: Sequence[int]):
    """Permanently keep only the original layers ``keep`` (in place); returns the model."""
    surgeon = LayerSurgeon(model)
    surgeon.apply(keep)
    surgeon.commit()
    return model


# ----------------------------------------------------------------------------------------
# Several subsets in one batch
# ----------------------------------------------------------------------------------------

class VariantRouter:
    """Run several layer subsets ("variants") side by side in one batch, sharing weights.

    The model runs the union of the variants' layers; a row assigned to variant ``v`` passes
    every layer that ``v`` lacks unchanged (a forward hook puts the layer's input back in
    place of its output for that row).  Each layer keeps its original identity (type,
    rotary kind), exactly as in ``LayerSurgeon.subset(variant)``, so a row's result equals
    the pruned model's up to float rounding.  The bypassed rows of a layer still pass
    through it (its KV-cache slot holds values nobody reads): the price of one layer per
    row, against a lm_head that runs on a batch many times larger.

    >>> with VariantRouter(surgeon, [[0, 2, 3], [0, 1, 3]]) as router:
    ...     router.assign(torch.tensor([0, 0, 1, 1]))   # variant of each batch row
    ...     logits = model(ids).logits                      # rows 0-1 without layer 1, rows 2-3 without 2
    """

    def __init__(self, surgeon: LayerSurgeon, variants: Sequence[Sequence[int]]):
        if not variants:
            raise ConfigError("VariantRouter needs at least one layer subset")
        self.surgeon = surgeon
        self.variants = [surgeon.normalize(v) for v in variants]
        self.union = tuple(sorted(set().union(*self.variants)))
        # union position -> variants that skip that layer
        self._skips = {
            pos: [v for v, kept in enumerate(self.variants) if layer not in kept]
            for pos, layer in enumerate(self.union)
        }
        self._skips = {pos: vs for pos, vs in self._skips.items() if vs}
        self._masks: dict[int, Any] = {}
        self.rows = None  # variant id of every batch row (a LongTensor)
        self._handles: list[Any] = []
        self._previous: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.variants)

    def __enter__(self) -> "VariantRouter":
        self._previous = self.surgeon.kept
        self.surgeon.apply(self.union)
        layers = self.surgeon.stack.layers
        self._handles = [layers[pos].register_forward_hook(self._hook(pos), with_kwargs=True) for pos in self._skips]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.surgeon.apply(self._previous)
        self.rows, self._masks = None, {}

    def assign(self, rows) -> None:
        """Set the variant id of every row of the next forward passes (a 1-D LongTensor)."""
        import torch

        self.rows = rows
        self._masks = {}
        for pos, skipping in self._skips.items():
            mask = torch.isin(rows, torch.tensor(skipping, device=rows.device))
            if bool(mask.any()):
                self._masks[pos] = mask

    def select(self, index) -> None:
        """Keep only the rows at ``index`` (rows that left the batch), like the KV cache does."""
        self.assign(self.rows[index])

    def _hook(self, pos: int):
        import torch

        def hook(module, args, kwargs, output):
            mask = self._masks.get(pos)
            if mask is None:
                return None
            hidden_in = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, (tuple, list)) else output
            if out.shape[0] != mask.shape[0]:
                raise RuntimeError(f"VariantRouter: batch of {out.shape[0]} rows, but {mask.shape[0]} rows assigned")
            mixed = torch.where(mask.view(-1, *([1] * (out.dim() - 1))), hidden_in, out)
            if isinstance(output, tuple):
                return (mixed, *output[1:])
            if isinstance(output, list):
                return [mixed, *output[1:]]
            return mixed
        return hook
