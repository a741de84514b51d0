"""Weight quantization, the numerical core: round-to-nearest and GPTQ on one weight matrix.

Pure functions on tensors, tested directly.  The integer grid is the one compressed-tensors
stores (so vLLM and transformers read our integers back exactly): symmetric, zero point 0,
``scale = max|w| / ((qmax - qmin) / 2)`` with ``[qmin, qmax] = [-2^(b-1), 2^(b-1) - 1]``
(int8: max|w| / 127.5, int4: max|w| / 7.5), one scale per output row (``group_size`` None) or
per row and group of ``group_size`` input columns.

GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") quantizes the columns of ``W`` (out x in) one at a time and spreads
each column's rounding error over the columns not yet quantized, weighted by the inverse of
``H = 2 X X^T`` (X: the layer's calibration inputs, in x tokens), which minimises the layer's
output error ``|W X - Q X|^2`` better than rounding each weight alone.
"""
from __future__ import annotations

import torch


def int_range(bits: int) -> tuple[int, int]:
    """(qmin, qmax) of a signed ``bits``-bit integer."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def symmetric_scales(w: torch.Tensor, bits: int) -> torch.Tensor:
    """One scale per row of ``w`` (rows x cols -> rows x 1), as compressed-tensors computes it."""
    qmin, qmax = int_range(bits)
    absmax = w.abs().amax(dim=1, keepdim=True).float()
    scale = absmax / ((qmax - qmin) / 2)
    return torch.where(scale == 0, torch.full_like(scale, torch.finfo(torch.float32).eps), scale)


def quantize_to_grid(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """The integers (as floats) of ``w / scale`` rounded and clamped to the signed range."""
    qmin, qmax = int_range(bits)
    return torch.clamp(torch.round(w / scale), qmin, qmax)


def _check_groups(cols: int, group_size: int | None) -> None:
    if group_size is not None and cols % group_size:
        raise ValueError(f"{cols} input columns are not a multiple of the group size {group_size}")


def rtn(weight: torch.Tensor, bits: int, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest: (dequantized weight, scales) with scales rows x groups (1 per row: per channel)."""
    w = weight.float()
    rows, cols = w.shape
    _check_groups(cols, group_size)
    g = group_size or cols
    grouped = w.reshape(rows, cols // g, g)  # (rows, groups, g)
    scales = symmetric_scales(grouped.reshape(-1, g), bits).reshape(rows, cols // g, 1)
    q = quantize_to_grid(grouped, scales, bits) * scales
    return q.reshape(rows, cols).to(weight.dtype), scales.reshape(rows, cols // g)


def _inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 after dampening H's diagonal by ``damp`` x its mean."""
    h = hessian.float().clone()
    diag = torch.arange(h.shape[0], device=h.device)
    h[diag, diag] += damp * torch.mean(torch.diag(h))
    for attempt in range(4):  # an ill-conditioned H: dampen more rather than fail
        factor, info = torch.linalg.cholesky_ex(h)
        if not info:
            break
        h[diag, diag] += damp * torch.mean(torch.diag(h)) * (10 ** attempt)
    else:
        raise ValueError("the calibration Hessian is not positive definite even after dampening")
    inverse = torch.cholesky_inverse(factor)
    return torch.linalg.cholesky(inverse, upper=True).float()


def gptq(weight: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int | None = None, *,
         block_size: int = 128, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ of ``weight`` (out x in) given ``hessian`` (in x in, from calibration inputs):
    (dequantized weight on the integer grid, scales rows x groups), the same shapes as ``rtn``.

    Columns never seen active in calibration (zero diagonal) are rounded alone.  Scales of a
    group are taken from its columns as they are when the group starts (after the error of the
    columns before it has been spread over them); per channel, from the original rows.
    """
    w = weight.float().clone()
    rows, cols = w.shape
    _check_groups(cols, group_size)
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w_dead = w[:, dead].clone()
    w[:, dead] = 0.0
    u = _inverse_hessian_factor(h, damp)  # (cols, cols), upper triangular
    g = group_size or cols
    if group_size is not None:  # every group inside one block
        block_size = g * max(1, block_size // g)
    scales = torch.empty(rows, cols // g, dtype=torch.float32, device=w.device)
    if group_size is None:
        scales[:, 0:1] = symmetric_scales(weight.float(), bits)
    q = torch.zeros_like(w)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = w[:, start:end].clone()  # (rows, b)
        errors = torch.zeros_like(block)
        for i in range(end - start):
            col = start + i
            if group_size is not None and col % g == 0:
                scales[:, col // g: col // g + 1] = symmetric_scales(block[:, i:i + g], bits)
            scale = scales[:, col // g: col // g + 1]
            column = block[:, i:i + 1]
            quantized = quantize_to_grid(column, scale, bits) * scale
            q[:, col:col + 1] = quantized
            err = (column - quantized) / u[col, col]
            block[:, i:] -= err @ u[col:col + 1, col:end]
            errors[:, i:i + 1] = err
        w[:, end:] -= errors @ u[start:end, end:]
    if dead.any():  # inputs that never fired: plain rounding of their original weights
        scale_cols = scales.repeat_interleave(g, dim=1)[:, dead]
        q[:, dead] = quantize_to_grid(w_dead, scale_cols, bits) * scale_cols
    return q.to(weight.dtype), scales


def output_error(weight: torch.Tensor, quantized: torch.Tensor, hessian: torch.Tensor) -> float:
    """``trace((W - Q) H (W - Q)^T)``: the summed squared output error on the calibration inputs
    (up to the factor in H), the quantity GPTQ lowers."""
    d = (weight.float() - quantized.float())
    return float(torch.einsum("ri,ij,rj->", d, hessian.float(), d))
