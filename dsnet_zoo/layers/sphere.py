"""Sphere-preserving (norm-preserving) layers: ``x <- Q(x) x`` with ``Q(x)`` orthogonal.

The paper's vector field ``x' = S(x) x`` with ``S(x)`` skew-symmetric keeps ``||x||`` constant, but
explicit Euler does not (``||x + h S x||^2 = ||x||^2 + h^2 ||S x||^2``). These layers freeze
``S = S(x)`` at the input and apply an *exactly orthogonal* map built from it:

- :class:`SphereBlock` (dense, ``(N, n)``): the **Cayley transform**
  ``Q = (I - h S / 2)^{-1} (I + h S / 2)``, which is orthogonal for every skew ``S`` (and
  ``I - h S / 2`` is always invertible, the eigenvalues of ``S`` being imaginary). ``S(x) = A(x) -
  A(x)^T`` with the strictly upper-triangular entries of ``A`` from a two-layer perceptron. This is
  the second-order (implicit midpoint) approximation of the frozen-``S`` flow ``exp(h S) x``.
- :class:`SphereConvBlock` (``(N, 2m, H, W)``): the **exact matrix exponential** of a skew matrix
  that is block-diagonal in ``2x2`` blocks, ``exp(theta [[0, -1], [1, 0]])``, i.e. a rotation of
  each channel pair ``(x_k, x_{k+m})`` at each pixel by an angle ``theta = h sigma(conv(x) + b)``.

Guarantee: ``||forward(x)|| = ||x||`` for every sample, any weights and step (up to float
rounding).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .functional import conv_op
from ._common import NotScriptable, _init_weight, _step_param, resolve_activation

__all__ = ["SphereBlock", "SphereConvBlock"]


class SphereBlock(NotScriptable, nn.Module):
    """``x <- cayley(h S(x)) x`` on ``(N, n)`` states, ``S(x) = A(x) - A(x)^T`` (see module doc).

    Guarantee: the L2 norm of each sample is preserved exactly up to rounding (Cayley transform of
    a skew matrix is orthogonal).
    """

    kind = "sphere"

    def __init__(self, features: int, hidden: int = 32, *, act: str | Callable = "tanh", step: float = 0.5,
                 learn_step: bool = True):
        super().__init__()
        if features < 2:
            raise ValueError(f"SphereBlock needs at least 2 features to rotate, got {features}")
        self.features = features
        self.dense = True
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, features * (features - 1) // 2)
        iu = torch.triu_indices(features, features, 1)
        self.register_buffer("_rows", iu[0], persistent=False)
        self.register_buffer("_cols", iu[1], persistent=False)
        self.act = resolve_activation(act)
        _step_param(step, learn_step, self)

    def skew(self, x: torch.Tensor) -> torch.Tensor:
        """``S(x)``, shape ``(N, n, n)``, exactly skew-symmetric."""
        a = self.fc2(self.act(self.fc1(x)))
        upper = x.new_zeros(x.shape[0], self.features, self.features)
        upper[:, self._rows, self._cols] = a
        return upper - upper.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"SphereBlock expects (N, {self.features}) inputs, got {tuple(x.shape)}")
        half = 0.5 * self.step * self.skew(x)
        eye = torch.eye(self.features, dtype=x.dtype, device=x.device)
        rhs = x.unsqueeze(-1) + half @ x.unsqueeze(-1)
        return torch.linalg.solve(eye - half, rhs).squeeze(-1)

    def sample_input(self, spatial: int = 4, batch: int = 4, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((batch, self.features), dtype=dtype, generator=generator)


class SphereConvBlock(NotScriptable, nn.Module):
    """Rotate each channel pair ``(x_k, x_{k+m})`` at each pixel by ``theta = h sigma(conv(x) + b)``:
    ``x <- exp(S(x)) x`` with ``S(x)`` block-diagonal skew (see module doc).

    Guarantee: the L2 norm of each sample (and of each pixel's channel vector) is preserved up to
    rounding.
    """

    kind = "sphere"

    def __init__(self, channels: int, *, kernel_size: int = 3, act: str | Callable = "tanh", step: float = 1.0,
                 learn_step: bool = True):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"SphereConvBlock needs an even number of channels (pairs), got {channels}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.channels = channels
        self.dense = False
        self.weight = _init_weight((channels // 2, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels // 2))
        self.act = resolve_activation(act)
        _step_param(step, learn_step, self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"SphereConvBlock expects (N, {self.channels}, H, W) inputs, got {tuple(x.shape)}")
        theta = self.step * self.act(conv_op(x, self.weight, self.bias))
        c, s = torch.cos(theta), torch.sin(theta)
        a, b = x.chunk(2, dim=1)
        return torch.cat([c * a - s * b, s * a + c * b], dim=1)

    def sample_input(self, spatial: int = 4, batch: int = 2, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((batch, self.channels, spatial, spatial), dtype=dtype, generator=generator)
