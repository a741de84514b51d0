"""The quantization schemes mtprune writes, by name, and their compressed-tensors configs.

Pure data and checks (no torch at import); ``ct_config`` imports compressed-tensors, the
``quantize`` extra, and says how to install it when it is missing.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...config import Problem
from ...errors import ConfigError, unknown_choice

EXTRA_HINT = "pip install 'mtprune[quantize]'  (compressed-tensors)"


@dataclass(frozen=True)
class Scheme:
    """One way to store a model's linear layers: weight bits and grid, activations at run time."""

    name: str
    weight_type: str  # int | float
    bits: int
    group_size: int | None  # None: one scale per output channel
    activations: str | None  # None (weights only), "int8" or "fp8": dynamic per token at run time
    format: str  # compressed-tensors' storage format
    methods: tuple[str, ...]  # gptq (calibrated) and/or rtn (round to nearest, data-free)
    summary: str
    cpu_vllm: bool  # vLLM's x86 CPU backend runs it

    @property
    def needs_data(self) -> bool:
        return "gptq" in self.methods

    @property
    def default_method(self) -> str:
        return self.methods[0]


SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("w8a8-int8", "int", 8, None, "int8", "int-quantized", ("gptq", "rtn"),
           "int8 weights per channel + int8 activations per token (dynamic)", cpu_vllm=True),
    Scheme("w8a16", "int", 8, None, None, "pack-quantized", ("gptq", "rtn"),
           "int8 weights per channel, activations in the model's dtype", cpu_vllm=False),
    Scheme("w4a16", "int", 4, 128, None, "pack-quantized", ("gptq", "rtn"),
           "int4 weights in groups of 128 input columns, activations in the model's dtype", cpu_vllm=True),
    Scheme("fp8-dynamic", "float", 8, None, "fp8", "float-quantized", ("rtn",),
           "fp8 (e4m3) weights per channel + fp8 activations per token (dynamic); data-free; GPUs with fp8 "
           "(Hopper, Ada)", cpu_vllm=False),
)}
METHODS = ("gptq", "rtn")


ALIASES = {"int8": "w8a8-int8", "w8a8": "w8a8-int8", "int4": "w4a16", "fp8": "fp8-dynamic"}


def find_scheme(name: str) -> Scheme | None:
    """The scheme a name or alias stands for (None: no such scheme)."""
    key = name.strip().lower().replace("_", "-")
    return SCHEMES.get(ALIASES.get(key, key))


def get_scheme(name: str) -> Scheme:
    scheme = find_scheme(name)
    if scheme is None:
        raise ConfigError(scheme_problems(name)[0].message)
    return scheme


def scheme_problems(name: str) -> list[Problem]:
    """What is wrong with a scheme name (nothing for a scheme or an alias)."""
    if find_scheme(name) is None:
        return [Problem("scheme", unknown_choice("quantization scheme", name, SCHEMES))]
    return []


def method_problems(scheme: Scheme, method: str | None) -> list[Problem]:
    """What is wrong with a method for ``scheme`` (None: the scheme's default, always fine)."""
    if method is None:
        return []
    if method not in METHODS:
        return [Problem("method", unknown_choice("method", method, METHODS))]
    if method not in scheme.methods:
        return [Problem("method", f"{scheme.name} is written with {' or '.join(scheme.methods)} only, not {method}")]
    return []


def install_problems() -> list[Problem]:
    """The compressed-tensors install quantization needs, as a problem of the whole config when missing."""
    try:
        require_compressed_tensors()
    except ConfigError as exc:
        return [Problem("", str(exc))]
    return []


def require_compressed_tensors():
    """The compressed_tensors module, or a one-line error naming the extra to install."""
    try:
        import compressed_tensors
    except ImportError as exc:
        raise ConfigError(f"quantization needs compressed-tensors: {EXTRA_HINT}") from exc
    return compressed_tensors


def ct_config(scheme: Scheme, group_size: int | None, ignore: list[str]):
    """The compressed-tensors QuantizationConfig of ``scheme`` over every Linear but ``ignore``."""
    require_compressed_tensors()
    from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                                 QuantizationStatus)

    weights = QuantizationArgs(num_bits=scheme.bits, type=scheme.weight_type, symmetric=True, dynamic=False,
                               strategy="group" if group_size else "channel", group_size=group_size)
    activations = None
    if scheme.activations:
        activations = QuantizationArgs(num_bits=8, type="int" if scheme.activations == "int8" else "float",
                                       symmetric=True, dynamic=True, strategy="token")
    group = QuantizationScheme(targets=["Linear"], weights=weights, input_activations=activations,
                               format=scheme.format)
    return QuantizationConfig(config_groups={"group_0": group}, ignore=ignore, format=scheme.format,
                              quantization_status=QuantizationStatus.INITIALIZED)
