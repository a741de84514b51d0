"""Find an unbabel COMET checkpoint and read what it says about itself (no torch at import).

The format, as the ``unbabel-comet`` package writes and reads it: a folder with ``hparams.yaml``
(the model class as ``class_identifier``, the encoder as ``encoder_model`` and ``pretrained_model``,
the estimator's sizes) and ``checkpoints/model.ckpt``, a PyTorch Lightning checkpoint whose
``state_dict`` holds ``encoder.model.*`` (a Hugging Face encoder without its pooler),
``layerwise_attention.*`` (a scalar mix of the encoder's layers) and ``estimator.ff.*`` (the
feed-forward regressor). The encoder's config and tokenizer are not in the checkpoint: they come
from ``pretrained_model``, a hub id (``xlm-roberta-large``) or a folder.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError

logger = logging.getLogger(__name__)

CKPT_NAME = Path("checkpoints") / "model.ckpt"
# class_identifier -> what the model reads; unbabel's ranking and XCOMET models are not scorers of this kind
MODEL_CLASSES = {
    "regression_metric": "source, translation and reference (e.g. Unbabel/wmt22-comet-da)",
    "referenceless_regression_metric": "source and translation (the COMET-QE models)",
    "unified_metric": "translation with source and/or reference in one sequence (e.g. Unbabel/wmt22-cometkiwi-da)",
}
ENCODERS = {"XLM-RoBERTa": "XLMRobertaModel", "XLM-RoBERTa-XL": "XLMRobertaXLModel"}
EXTRA_HINT = "pip install 'mtprune[comet]'"
_LFS_POINTER = b"version https://git-lfs"


@dataclass(frozen=True)
class CometCheckpoint:
    """A located COMET checkpoint: the name it was given by, its files and its hyper-parameters."""

    name: str  # as given (hub id or path)
    option: str  # the option that named it, for messages
    ckpt: Path
    hparams: dict[str, Any] = field(hash=False, compare=False)

    @property
    def folder(self) -> Path:
        return self.ckpt.parents[1] if self.ckpt.parent.name == "checkpoints" else self.ckpt.parent

    @property
    def model_class(self) -> str:
        return self.hparams["class_identifier"]

    @property
    def input_segments(self) -> list[str]:
        """What the model was trained to read, the translation first."""
        if self.model_class == "regression_metric":
            return ["mt", "src", "ref"]
        if self.model_class == "referenceless_regression_metric":
            return ["mt", "src"]
        return list(self.hparams.get("input_segments") or ["mt", "src", "ref"])

    @property
    def requires_references(self) -> bool:
        return "src" not in self.input_segments or self.model_class == "regression_metric"

    @property
    def reads_references(self) -> bool:
        return "ref" in self.input_segments

    def encoder_source(self) -> str:
        """``pretrained_model``: a folder (absolute, or relative to the COMET folder) or a hub id."""
        given = str(self.hparams.get("pretrained_model") or "xlm-roberta-large")
        local = Path(given).expanduser()
        if not local.is_absolute() and (self.folder / local).is_dir():
            return str(self.folder / local)
        return str(local) if local.is_dir() else given

    def sha256(self) -> str:
        return file_sha256(self.ckpt)


def file_sha256(path: Path) -> str:
    """The file's sha256, computed once per process for a given size and modification time."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: str, size: int, mtime_ns: int) -> str:
    key = (path, size, mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def locate(spec: str, option: str) -> CometCheckpoint:
    """The checkpoint ``spec`` names: a ``.ckpt`` file, a COMET folder, or a hub id (downloaded once).

    Every failure is a ConfigError that names ``option`` and says how to get the model."""
    if not spec or not str(spec).strip():
        raise ConfigError(f"{option}: empty; give a COMET folder, its checkpoints/model.ckpt, or a hub id "
                          "such as Unbabel/wmt22-comet-da")
    path = Path(spec).expanduser()
    if path.exists():
        ckpt = path / CKPT_NAME if path.is_dir() else path
        if not ckpt.is_file():
            raise ConfigError(f"{option} {spec}: no {CKPT_NAME} in this folder (a COMET model folder has "
                              "hparams.yaml and checkpoints/model.ckpt)")
    elif looks_like_hub_id(str(spec)):
        ckpt = _download(str(spec), option) / CKPT_NAME
    else:
        raise ConfigError(f"{option} {spec}: no such file or folder, and not a hub id (ORG/NAME such as "
                          "Unbabel/wmt22-comet-da)")
    _refuse_lfs_pointer(ckpt, option, spec)
    hparams = read_hparams(ckpt, option, spec)
    return CometCheckpoint(name=str(spec), option=option, ckpt=ckpt, hparams=hparams)


def looks_like_hub_id(spec: str) -> bool:
    """ORG/NAME, not a path (a path that exists is taken as a path before this is asked)."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", spec)) and not spec.startswith((".", "/"))


def _download(repo_id: str, option: str) -> Path:
    """The hub snapshot (from the local cache where it is there already)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001  (not cached: fetch it)
        pass
    try:
        logger.info("downloading the COMET model %s from the Hugging Face hub", repo_id)
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # noqa: BLE001  (offline, gated, unknown id: one message)
        raise ConfigError(
            f"{option} {repo_id}: not a local folder, and the Hugging Face hub did not give it "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Download it where the hub "
            f"is reachable (`hf download {repo_id} --local-dir DIR`; gated models such as "
            f"Unbabel/wmt22-cometkiwi-da need their license accepted and `hf auth login`) and pass "
            f"{option} DIR") from None


def _refuse_lfs_pointer(ckpt: Path, option: str, spec: str) -> None:
    with open(ckpt, "rb") as f:
        head = f.read(len(_LFS_POINTER))
    if head == _LFS_POINTER:
        raise ConfigError(f"{option} {spec}: {ckpt} is a Git LFS pointer, not the weights; run `git lfs pull` "
                          "in the model's clone (or download it with `hf download`)")


def read_hparams(ckpt: Path, option: str, spec: str) -> dict[str, Any]:
    """``hparams.yaml`` beside ``checkpoints/``, checked: a model class and an encoder this code runs."""
    import yaml

    folder = ckpt.parents[1] if ckpt.parent.name == "checkpoints" else ckpt.parent
    path = folder / "hparams.yaml"
    try:
        hparams = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{option} {spec}: {path} is missing (every COMET model folder has it)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{option} {spec}: {path} is not valid YAML ({exc})") from None
    if not isinstance(hparams, dict):
        raise ConfigError(f"{option} {spec}: {path} is not a mapping of hyper-parameters")
    kind = hparams.get("class_identifier")
    if kind not in MODEL_CLASSES:
        supported = "; ".join(f"{k}: {v}" for k, v in MODEL_CLASSES.items())
        raise ConfigError(f"{option} {spec}: model class {kind!r} ({path}) is not supported; supported: {supported}")
    encoder = hparams.get("encoder_model", "XLM-RoBERTa")
    if encoder not in ENCODERS:
        raise ConfigError(f"{option} {spec}: encoder_model {encoder!r} ({path}) is not supported; "
                          f"supported: {', '.join(ENCODERS)}")
    return hparams


# ----------------------------------------------------------------------------------------
# Reading model.ckpt without running what its pickle names
# ----------------------------------------------------------------------------------------

def read_state_dict(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's tensors (``state_dict``), whatever else the Lightning checkpoint holds.

    ``weights_only`` loading first; a checkpoint that pickled other objects (Lightning's
    hyper-parameter dict, callback states) is read again with every such object replaced by an
    inert stand-in, so nothing the file names is imported or run."""
    import torch

    try:
        data = _torch_load(ckpt, weights_only=True)
    except pickle.UnpicklingError as exc:
        logger.debug("weights-only loading of %s failed (%s); reading tensors only", ckpt, str(exc).splitlines()[0])
        data = _torch_load(ckpt, weights_only=False, pickle_module=_TENSORS_ONLY)
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{ckpt}: no state_dict of tensors in this checkpoint")
    return state


def _torch_load(ckpt: Path, **kwargs: Any) -> Any:
    import torch

    try:
        return torch.load(ckpt, map_location="cpu", mmap=True, **kwargs)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(ckpt, map_location="cpu", **kwargs)  # a legacy (not zip) file cannot be mapped


class _Inert(dict):
    """Stands for any object a checkpoint pickled besides tensors: takes any arguments and state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:  # a stand-in function (getattr(cls, name)) is called
        return _Inert()

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


_TENSOR_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "Tensor"),
}


class _TensorsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TENSOR_GLOBALS or (module == "torch" and _is_dtype(name)):
            return super().find_class(module, name)
        return _Inert


def _is_dtype(name: str) -> bool:
    import torch

    return isinstance(getattr(torch, name, None), torch.dtype)


def _inert_load(file: Any, **kwargs: Any) -> Any:
    return _TensorsOnlyUnpickler(file, **kwargs).load()


# torch.load's pickle_module: Unpickler and load are all it uses
_TENSORS_ONLY = types.SimpleNamespace(Unpickler=_TensorsOnlyUnpickler, load=_inert_load, __name__="tensors_only")
