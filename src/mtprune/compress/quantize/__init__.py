"""Quantization: the third compression axis, after layers and vocabulary (prune -> recover -> quantize).

``schemes``: the formats by name; ``gptq``: the numerical core (round-to-nearest, GPTQ);
``calibrate``: calibration examples in the model's own prompt format and per-layer statistics;
``pipeline``: load, quantize, store as compressed-tensors, reload check, provenance.
"""
from __future__ import annotations

from .schemes import SCHEMES, Scheme, get_scheme  # noqa: F401  (no torch at import)
