"""Mass-preserving (sum-preserving) layers.

The vector field ``x' = (A(x) - A(x)^T) 1`` conserves ``sum(x)`` because
``1^T (A - A^T) 1 = 0`` for any square ``A``; explicit Euler ``x <- x + h (A(x) - A(x)^T) 1`` keeps
this linear invariant exactly (in exact arithmetic; in floats up to rounding of the sum). ``A(x)``
is produced by a small network:

- :class:`MassPreservingBlock` (dense, ``x`` of shape ``(N, n)``): the strictly upper-triangular
  entries ``A_ij = a_k(x)`` (``i < j``) come from a two-layer perceptron, as in the paper's SIR
  experiment; ``(A - A^T) 1`` then has ``i``-th entry ``sum_{j>i} A_ij - sum_{j<i} A_ji``.
- :class:`MassPreservingConvBlock` (``x`` of shape ``(N, C, H, W)``): ``A(x)`` is sparse, with
  fluxes between channel pairs at one pixel and between a pixel and its right/lower neighbour in
  one channel, all read off a 3x3 convolution of ``x``. Whatever leaves one entry enters another,
  so the total over channels and pixels is conserved.

:class:`SumPreservingLift` and :class:`SumPreservingProjection` change the dimension with a matrix
whose columns each sum to one, so ``sum(L x) = sum(x)``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .functional import conv_op
from ._common import NotScriptable, _init_weight, _step_param, resolve_activation

__all__ = ["MassPreservingBlock", "MassPreservingConvBlock", "SumPreservingLinear", "SumPreservingLift",
           "SumPreservingProjection"]



class MassPreservingBlock(NotScriptable, nn.Module):
    """Explicit Euler step ``x <- x + h (A(x) - A(x)^T) 1`` on ``(N, n)`` states.

    ``A(x)`` is strictly upper triangular with entries ``out_act(W2 act(W1 x + b1) + b2)``.
    Guarantee: ``sum(forward(x)) == sum(x)`` for every sample, any weights and step (up to
    float rounding of the sums, relative error ~ machine epsilon).
    """

    kind = "mass"

    def __init__(self, features: int, hidden: int = 50, *, act: str | Callable = "relu",
                 out_act: str | Callable | None = None, step: float = 0.1, learn_step: bool = True):
        super().__init__()
        if features < 2:
            raise ValueError(f"MassPreservingBlock needs at least 2 features to exchange mass, got {features}")
        self.features = features
        self.dense = True
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, features * (features - 1) // 2)
        iu = torch.triu_indices(features, features, 1)
        self.register_buffer("_rows", iu[0], persistent=False)
        self.register_buffer("_cols", iu[1], persistent=False)
        self.act = resolve_activation(act)
        self.out_act = resolve_activation(out_act if out_act is not None else act)
        _step_param(step, learn_step, self)

    def upper_entries(self, x: torch.Tensor) -> torch.Tensor:
        """The ``n(n-1)/2`` entries ``A_ij(x)``, ``i < j``, row-major."""
        return self.out_act(self.fc2(self.act(self.fc1(x))))

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """``(A(x) - A(x)^T) 1``: entry ``i`` gains ``A_ij`` and entry ``j`` loses it."""
        a = self.upper_entries(x)
        out = torch.zeros_like(x)
        out = out.index_add(1, self._rows, a)
        return out.index_add(1, self._cols, -a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.features:
            raise ValueError(f"MassPreservingBlock expects (N, {self.features}) inputs, got {tuple(x.shape)}")
        return x + self.step * self.field(x)

    def sample_input(self, spatial: int = 4, batch: int = 4, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Random positive states (mass-like), ``spatial`` is ignored (dense block)."""
        return torch.rand((batch, self.features), dtype=dtype, generator=generator)


class MassPreservingConvBlock(NotScriptable, nn.Module):
    """Explicit Euler step ``x <- x + h (A(x) - A(x)^T) 1`` on ``(N, C, H, W)`` states, with ``A(x)``
    the sparse matrix of fluxes between channel pairs of a pixel and between horizontally and
    vertically neighbouring pixels of a channel; the fluxes are ``out_act(conv(x) + b)``.

    Guarantee: the total ``x.sum((1, 2, 3))`` is conserved for every sample, any weights and step
    (up to float rounding).
    """

    kind = "mass"

    def __init__(self, channels: int, *, kernel_size: int = 3, act: str | Callable = "tanh",
                 step: float = 0.1, learn_step: bool = True):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.channels = channels
        self.dense = False
        self.num_pairs = channels * (channels - 1) // 2
        out = self.num_pairs + 2 * channels
        self.weight = _init_weight((out, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out))
        iu = torch.triu_indices(channels, channels, 1)
        self.register_buffer("_rows", iu[0], persistent=False)
        self.register_buffer("_cols", iu[1], persistent=False)
        self.act = resolve_activation(act)
        _step_param(step, learn_step, self)

    def field(self, x: torch.Tensor) -> torch.Tensor:
        flux = self.act(conv_op(x, self.weight, self.bias))
        pair, right, down = flux.split([self.num_pairs, self.channels, self.channels], dim=1)
        out = torch.zeros_like(x).index_add(1, self._rows, pair).index_add(1, self._cols, -pair)
        # flux from (i, j) to (i, j+1) / (i+1, j); the last column / row has no such neighbour
        right = right[..., :-1]
        down = down[..., :-1, :]
        out = out + F.pad(right, (0, 1)) - F.pad(right, (1, 0))
        return out + F.pad(down, (0, 0, 0, 1)) - F.pad(down, (0, 0, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"MassPreservingConvBlock expects (N, {self.channels}, H, W) inputs, "
                             f"got {tuple(x.shape)}")
        return x + self.step * self.field(x)

    def sample_input(self, spatial: int = 4, batch: int = 2, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand((batch, self.channels, spatial, spatial), dtype=dtype, generator=generator)


class SumPreservingLinear(NotScriptable, nn.Module):
    """``y = L x`` with every column of ``L`` summing to one, so ``sum(y) = sum(x)``.

    ``L = L0 + (W - mean_rows(W))``: ``L0`` is the paper's fixed map (zero padding when lifting;
    keep the first ``out`` entries and spread the rest evenly when projecting), and the learnable
    correction has zero column sums. Guarantee: ``sum(forward(x)) == sum(x)`` up to float rounding.
    """

    kind = "mass"

    def __init__(self, in_features: int, out_features: int, *, learnable: bool = True):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"features must be positive, got {in_features} -> {out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.features = in_features
        self.dense = True
        self.weight = nn.Parameter(torch.zeros(out_features, in_features)) if learnable else None

    def base(self, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        """The fixed part ``L0``, built in the working dtype (a stored float32 ``1/out`` would carry
        its rounding error into float64 column sums)."""
        base = torch.zeros(self.out_features, self.in_features, dtype=dtype, device=device)
        k = min(self.in_features, self.out_features)
        base[:k, :k] = torch.eye(k, dtype=dtype, device=device)
        if self.in_features > self.out_features:
            base[:, self.out_features:] = 1.0 / self.out_features
        return base

    def matrix(self, dtype: torch.dtype | None = None, device: torch.device | None = None) -> torch.Tensor:
        """``L``, whose columns each sum to one."""
        if self.weight is None:
            return self.base(dtype or torch.get_default_dtype(), device)
        base = self.base(self.weight.dtype, self.weight.device)
        return base + (self.weight - self.weight.mean(dim=0, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__} expects (N, {self.in_features}) inputs, got {tuple(x.shape)}")
        return F.linear(x, self.matrix(x.dtype, x.device))

    def sample_input(self, spatial: int = 4, batch: int = 4, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.rand((batch, self.in_features), dtype=dtype, generator=generator)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, learnable={self.weight is not None}"


class SumPreservingLift(SumPreservingLinear):
    """A :class:`SumPreservingLinear` to a larger (or equal) dimension."""

    def __init__(self, in_features: int, out_features: int, *, learnable: bool = True):
        if out_features < in_features:
            raise ValueError(f"a lift goes up in dimension, got {in_features} -> {out_features}; "
                             "use SumPreservingProjection")
        super().__init__(in_features, out_features, learnable=learnable)


class SumPreservingProjection(SumPreservingLinear):
    """A :class:`SumPreservingLinear` to a smaller (or equal) dimension."""

    def __init__(self, in_features: int, out_features: int, *, learnable: bool = True):
        if out_features > in_features:
            raise ValueError(f"a projection goes down in dimension, got {in_features} -> {out_features}; "
                             "use SumPreservingLift")
        super().__init__(in_features, out_features, learnable=learnable)
