"""Translation backends, registered by name and imported on first use.

Every backend offers ``from_loaded(loaded, prompter, **options)``, ``translate(sources) ->
TranslationResult`` and ``describe()``, and says with ``needs_weights`` whether it runs the
model ``load_model`` loads (hf) or loads the checkpoint folder itself (vllm).
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

from ...config import Problem, at_least, one_of, raise_problems
from ...errors import ConfigError, unknown_choice

BACKENDS = {
    "hf": "mtprune.translate.backends.hf:HFTranslator",
    "vllm": "mtprune.translate.backends.vllm:VLLMTranslator",
}
# engine options (BackendConfig fields) -> their command-line flags, and the backends that take them
ENGINE_FLAGS = {
    "tensor_parallel": "--tensor-parallel",
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_model_len": "--max-model-len",
}
FLAGS = {"name": "--backend", **ENGINE_FLAGS}  # every BackendConfig field's flag
ENGINE_OPTIONS = {"hf": (), "vllm": tuple(ENGINE_FLAGS)}


def release_engines() -> None:
    """Free the memory of engines kept for the next translator (vLLM keeps one per process, on the
    GPU ~90% of its memory) and what torch's allocator still caches of models no longer used (a
    vLLM engine sizes itself from the GPU memory free when it starts): call when a stage is done,
    before one that trains or loads another model.  Imports nothing that is not imported yet."""
    module = sys.modules.get("mtprune.translate.backends.vllm")
    if module is not None:
        module.release_engine()
    torch = sys.modules.get("torch")
    if torch is not None:
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def backend_class(name: str):
    """The backend class registered as ``name`` (imports its module now)."""
    if name not in BACKENDS:
        raise ConfigError(unknown_choice("backend", name, BACKENDS))
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class BackendConfig:
    """``--backend`` and the engine options passed through to it (None: the engine's default)."""

    name: str = "hf"
    tensor_parallel: int | None = None
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings, checked before any model loads."""
        if self.name not in BACKENDS:
            return one_of("name", self.name, BACKENDS, "backend")
        out = []
        takers = " or ".join(name for name, keys in ENGINE_OPTIONS.items() if keys)
        for key in ENGINE_FLAGS:
            if getattr(self, key) is not None and key not in ENGINE_OPTIONS[self.name]:
                out.append(Problem(key, f"only applies to {{name}} {takers} (not {self.name})", also=("name",)))
        out += at_least("tensor_parallel", self.tensor_parallel, 1)
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            out.append(Problem("gpu_memory_utilization", f"must be in (0, 1], got {self.gpu_memory_utilization}"))
        return out + at_least("max_model_len", self.max_model_len, 1)

    def validate(self) -> None:
        raise_problems(self.problems(), "backend settings", FLAGS)

    def engine_options(self) -> dict[str, Any]:
        """The engine options that were given, as keyword arguments of the backend class."""
        return {key: getattr(self, key) for key in ENGINE_FLAGS if getattr(self, key) is not None}

    def needs_weights(self) -> bool:
        """Whether the backend runs the transformers model (else only tokenizer and configs load)."""
        return backend_class(self.name).needs_weights
