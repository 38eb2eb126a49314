"""Volume-preserving layers.

The state's channels are split in half, ``(x, v)``, and updated one half at a time, each update
depending only on the *other* half:

    x <- x + h sigma(A v + a)
    v <- v + h sigma(B x + b)          (with the updated x)

Each update is a shear with a unit-triangular block Jacobian, so ``det J = 1`` for any weights,
step and activation, and the block is exactly invertible (:meth:`VolumePreservingBlock.inverse`).
``A`` and ``B`` map ``m`` channels to ``m`` channels: dense matrices for ``(N, 2m)`` states or 3x3
convolutions for ``(N, 2m, H, W)`` states.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .functional import conv_op
from ._common import NotScriptable, _check_state, _init_weight, _step_param, resolve_activation

__all__ = ["VolumePreservingBlock"]


class VolumePreservingBlock(NotScriptable, nn.Module):
    """Two shears ``x += h sigma(A v + a)``, ``v += h sigma(B x + b)`` on an ``(x, v)`` state.

    Guarantee: ``|det J| = 1`` (volume preserved) for any weights, biases, step and elementwise
    activation, and :meth:`inverse` is the exact inverse (up to float rounding).

    Args:
        channels: size of the state (``2m``; must be even).
        dense: dense ``m x m`` matrices instead of convolutions.
        kernel_size: odd conv kernel size.
        act: the elementwise ``sigma`` (name or callable).
        step: initial step size ``h``; ``learn_step`` makes it trainable.
    """

    kind = "volume"

    def __init__(self, channels: int, *, dense: bool = False, kernel_size: int = 3, act: str | Callable = "tanh",
                 step: float = 0.1, learn_step: bool = True, bias: bool = True):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"VolumePreservingBlock needs an even number of channels (x and v halves), got {channels}")
        if not dense and kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.channels = channels
        self.dense = dense
        m = channels // 2
        shape = (m, m) if dense else (m, m, kernel_size, kernel_size)
        self.weight_v = _init_weight(shape)  # A: reads v, updates x
        self.weight_x = _init_weight(shape)  # B: reads x, updates v
        self.bias_v = nn.Parameter(torch.zeros(m)) if bias else None
        self.bias_x = nn.Parameter(torch.zeros(m)) if bias else None
        _step_param(step, learn_step, self)
        self.act = resolve_activation(act)

    def _check(self, x: torch.Tensor) -> None:
        _check_state(self, x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        x, v = z.chunk(2, dim=1)
        x = x + self.step * self.act(conv_op(v, self.weight_v, self.bias_v))
        v = v + self.step * self.act(conv_op(x, self.weight_x, self.bias_x))
        return torch.cat([x, v], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The exact inverse of :meth:`forward`: the two shears undone in reverse order."""
        self._check(y)
        x, v = y.chunk(2, dim=1)
        v = v - self.step * self.act(conv_op(x, self.weight_x, self.bias_x))
        x = x - self.step * self.act(conv_op(v, self.weight_v, self.bias_v))
        return torch.cat([x, v], dim=1)

    def sample_input(self, spatial: int = 4, batch: int = 1, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """A random state of the shape this block accepts (``spatial`` x ``spatial`` for convs)."""
        shape = (batch, self.channels) if self.dense else (batch, self.channels, spatial, spatial)
        return torch.randn(shape, dtype=dtype, generator=generator)

    def extra_repr(self) -> str:
        form = "dense" if self.dense else f"conv{self.weight_v.shape[-1]}x{self.weight_v.shape[-1]}"
        return f"channels={self.channels}, {form}"
