"""Hamiltonian (symplectic) layers.

The state's channels are split in half, ``x = (q, p)``. The layer is one step of the symplectic
Euler method for the separable Hamiltonian

    H(q, p) = sum Phi(B p + b) + sum Psi(C q + c),   Phi' = Psi' = sigma,

whose vector field is ``q' = B^T sigma(B p + b)``, ``p' = -C^T sigma(C q + c)``:

    q <- q + h B^T sigma(B p + b)
    p <- p - h C^T sigma(C q + c)      (with the updated q)

Each of the two updates is the exact time-h flow of a Hamiltonian of one variable only (a shear
whose off-diagonal Jacobian block ``h B^T diag(sigma') B`` is symmetric), so the composition is
symplectic, ``J^T Omega J = Omega``, for *any* weights, step size h and elementwise sigma. The step
is also exactly invertible by running the shears backwards (:meth:`HamiltonianBlock.inverse`).

``B``, ``C`` are dense matrices (2-D states ``(N, 2m)``) or 3x3 convolutions (4-D states
``(N, 2m, H, W)``, adjoint ``conv_transpose2d`` with the same weight, see
:mod:`dsnet_zoo.layers.functional`). The gradients of ``H`` are written in closed form:
``forward`` never calls ``torch.autograd.grad``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._common import NotScriptable, _check_state, _init_weight, _step_param, resolve_activation
from .functional import conv_adjoint, conv_op

__all__ = ["HamiltonianBlock", "resolve_activation"]

class HamiltonianBlock(NotScriptable, nn.Module):
    """One symplectic-Euler step of a separable Hamiltonian on a ``(q, p)`` state (see module doc).

    Guarantee: for any weights, biases, step ``h`` and elementwise activation, the map is
    symplectic (``J^T Omega J = Omega`` with ``Omega = [[0, I], [-I, 0]]`` in the ``(q, p)`` split of
    the flattened state) and :meth:`inverse` is its exact inverse (up to float rounding).

    Args:
        channels: size of the state (``2m``; must be even). Dense states are ``(N, 2m)``, conv
            states ``(N, 2m, H, W)``.
        hidden: rows of ``B`` and ``C`` (output channels of the convolutions); default ``m``.
        dense: dense matrices instead of convolutions.
        kernel_size: odd conv kernel size (``3`` by default).
        act: the elementwise ``sigma`` (name or callable).
        step: initial step size ``h``; ``learn_step`` makes it a trainable parameter.
    """

    kind = "symplectic"

    def __init__(self, channels: int, hidden: int | None = None, *, dense: bool = False, kernel_size: int = 3,
                 act: str | Callable = "tanh", step: float = 0.1, learn_step: bool = True, bias: bool = True):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"HamiltonianBlock needs an even number of channels (q and p halves), got {channels}")
        if not dense and kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.channels = channels
        self.dense = dense
        m = channels // 2
        hidden = hidden or m
        shape = (hidden, m) if dense else (hidden, m, kernel_size, kernel_size)
        self.weight_p = _init_weight(shape)  # B: the kinetic part, drives q
        self.weight_q = _init_weight(shape)  # C: the potential part, drives p
        self.bias_p = nn.Parameter(torch.zeros(hidden)) if bias else None
        self.bias_q = nn.Parameter(torch.zeros(hidden)) if bias else None
        _step_param(step, learn_step, self)
        self.act = resolve_activation(act)

    def _check(self, x: torch.Tensor) -> None:
        _check_state(self, x)

    def grad_p(self, p: torch.Tensor) -> torch.Tensor:
        """``dH/dp = B^T sigma(B p + b)`` in closed form."""
        return conv_adjoint(self.act(conv_op(p, self.weight_p, self.bias_p)), self.weight_p)

    def grad_q(self, q: torch.Tensor) -> torch.Tensor:
        """``dH/dq = C^T sigma(C q + c)`` in closed form."""
        return conv_adjoint(self.act(conv_op(q, self.weight_q, self.bias_q)), self.weight_q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        q, p = x.chunk(2, dim=1)
        q = q + self.step * self.grad_p(p)
        p = p - self.step * self.grad_q(q)
        return torch.cat([q, p], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The exact inverse of :meth:`forward`: the two shears undone in reverse order."""
        self._check(y)
        q, p = y.chunk(2, dim=1)
        p = p + self.step * self.grad_q(q)
        q = q - self.step * self.grad_p(p)
        return torch.cat([q, p], dim=1)

    def sample_input(self, spatial: int = 4, batch: int = 1, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """A random state of the shape this block accepts (``spatial`` x ``spatial`` for convs)."""
        shape = (batch, self.channels) if self.dense else (batch, self.channels, spatial, spatial)
        return torch.randn(shape, dtype=dtype, generator=generator)

    def extra_repr(self) -> str:
        form = "dense" if self.dense else f"conv{self.weight_p.shape[-1]}x{self.weight_p.shape[-1]}"
        return f"channels={self.channels}, hidden={self.weight_p.shape[0]}, {form}"
