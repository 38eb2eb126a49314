"""Functional building blocks shared by the layers and the paper ports.

A 3x3 convolution ``A`` (stride 1, padding 1) has the adjoint ``A^T = conv_transpose2d`` with the
same weight (no bias): ``<A x, y> = <x, A^T y>`` exactly, also with zero padding.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["conv_op", "conv_adjoint", "gradient_step"]


def conv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``A x + b`` for a square, odd-sized kernel with 'same' zero padding; dense if ``x`` is 2-D."""
    if x.dim() == 2:
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


def conv_adjoint(y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``A^T y``, the exact adjoint of :func:`conv_op` without bias."""
    if y.dim() == 2:
        return F.linear(y, weight.t())
    return F.conv_transpose2d(y, weight, padding=weight.shape[-1] // 2)


def gradient_step(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, h: torch.Tensor | float,
                  act: Callable[[torch.Tensor], torch.Tensor], sign: float = -1.0) -> torch.Tensor:
    """One explicit-Euler step of the gradient field ``x' = sign * A^T act(A x + b)``:
    ``x + sign * h * A^T act(A x + b)``. ``sign=-1`` is the contractive (gradient-descent) step."""
    return x + sign * h * conv_adjoint(act(conv_op(x, weight, bias)), weight)
