"""Functional building blocks shared by the layers and the paper ports: the linear operators and the
gradient step.

A 3x3 convolution ``A`` (stride 1, padding 1) has the adjoint ``A^T = conv_transpose2d`` with the
same weight (no bias): ``<A x, y> = <x, A^T y>`` exactly, also with zero padding. :func:`lip_conv` and
:func:`lip_conv_adjoint` add circular padding (the operators of the 1-Lipschitz maps,
:mod:`~dsnet_zoo.layers.constrained_linear`, whose norms :mod:`~dsnet_zoo.layers.norm_bounds` certifies).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["conv_op", "conv_adjoint", "gradient_step", "PADDING_MODES", "check_padding_mode", "lip_conv",
           "lip_conv_adjoint"]

PADDING_MODES = ("zeros", "circular")


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


def check_padding_mode(padding_mode: str) -> None:
    # PADDING_MODES spelt out: TorchScript compiles this too (the plain exports call lip_conv_adjoint)
    if padding_mode != "zeros" and padding_mode != "circular":
        raise ValueError(f"padding_mode must be 'zeros' or 'circular', got '{padding_mode}'")


def lip_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             padding_mode: str = "zeros") -> torch.Tensor:
    """``A x + b``: 'same' convolution (zero or circular padding), or dense if ``weight`` is 2-D."""
    if weight.dim() == 2 or padding_mode == "zeros":
        return conv_op(x, weight, bias)
    check_padding_mode(padding_mode)
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight, bias)


def lip_conv_adjoint(y: torch.Tensor, weight: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """``A^T y``, the exact adjoint of :func:`lip_conv` without bias.

    The adjoint of a circular convolution is the circular convolution with the kernel flipped in
    space and transposed in channels.
    """
    if weight.dim() == 2 or padding_mode == "zeros":
        return conv_adjoint(y, weight)
    check_padding_mode(padding_mode)
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(y, (p, p, p, p), mode="circular"), weight.transpose(0, 1).flip([-1, -2]))
