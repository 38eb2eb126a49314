"""A generic explicit-Euler block for a non-autonomous field ``x' = f(t, x, theta(t))``.

The parameters ``theta(t)`` are piecewise constant in time: step ``k`` uses its own field module
``fields[k]`` (its own parameters), evaluated at ``t_k``:

    x_{k+1} = x_k + h_k f_k(t_k, x_k),    t_{k+1} = t_k + h_k.

Certified bound: if every ``f_k(t_k, .)`` is ``l_k``-Lipschitz in ``x`` (its ``lipschitz_upper_bound()``),
the block is ``prod_k (1 + h_k l_k)``-Lipschitz (triangle inequality). This generic bound never goes
below 1; the gradient-flow steps in :mod:`.gradient_flow` are Euler steps of special fields with
sharper bounds (``<= 1``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from ._common import NotScriptable
from .constrained_linear import ConstrainedLinearMap

__all__ = ["ExplicitEuler", "ActivationField"]


class ExplicitEuler(NotScriptable, nn.Module):
    """Explicit Euler with per-step parameters.

    ``fields``: one module per step, called as ``field(t, x)``. ``step_sizes``: a float (uniform) or
    one positive float per step; fixed (not learned), so the bound has no unconstrained scalar.
    """

    def __init__(self, fields: Sequence[nn.Module], step_sizes: float | Sequence[float], t0: float = 0.0) -> None:
        super().__init__()
        if len(fields) == 0:
            raise ValueError("ExplicitEuler needs at least one field (one per step)")
        self.fields = nn.ModuleList(fields)
        if isinstance(step_sizes, (int, float)):
            hs = [float(step_sizes)] * len(fields)
        else:
            hs = [float(h) for h in step_sizes]
        if len(hs) != len(fields) or any(not h > 0 for h in hs):
            raise ValueError(f"step_sizes must be one positive float or one per field ({len(fields)}), "
                             f"got {step_sizes}")
        self.step_sizes = hs
        self.t0 = float(t0)

    @classmethod
    def from_factory(cls, make_field: Callable[[int], nn.Module], num_steps: int, final_time: float,
                     t0: float = 0.0) -> "ExplicitEuler":
        """``num_steps`` uniform steps over ``[t0, t0 + final_time]``, field ``k`` = ``make_field(k)``."""
        if num_steps < 1 or not final_time > 0:
            raise ValueError(f"need num_steps >= 1 and final_time > 0, got {num_steps}, {final_time}")
        return cls([make_field(k) for k in range(num_steps)], final_time / num_steps, t0)

    def times(self) -> list[float]:
        """``t_k`` at which each field is evaluated."""
        out, t = [], self.t0
        for h in self.step_sizes:
            out.append(t)
            t += h
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for t, h, f in zip(self.times(), self.step_sizes, self.fields):
            x = x + h * f(t, x)
        return x

    def lipschitz_upper_bound(self) -> float | None:
        """``prod_k (1 + h_k l_k)``, or ``None`` if a field has no certified bound."""
        bound = 1.0
        for h, f in zip(self.step_sizes, self.fields):
            lf = f.lipschitz_upper_bound() if hasattr(f, "lipschitz_upper_bound") else None
            if lf is None:
                return None
            bound *= 1.0 + h * lf
        return bound


class ActivationField(NotScriptable, nn.Module):
    """``f(t, x) = sigma(A x + b)`` with ``A`` normalised by its certified bound (a dense or conv map):
    a simple field for :class:`ExplicitEuler`, ``Lip <= ||A||`` (``sigma`` = LeakyReLU, 1-Lipschitz).
    The time argument is unused: time dependence comes from one field per step."""

    def __init__(self, features: int, kernel_size: int | None = 3, *, input_size: int | None = None,
                 padding_mode: str = "zeros", negative_slope: float = 0.0, normalize: bool = True) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)
        self.A = ConstrainedLinearMap(features, features, kernel_size, input_size=input_size,
                                      padding_mode=padding_mode, normalize=normalize, init="kaiming")

    def forward(self, t: float, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.A(x), self.negative_slope)

    def lipschitz_upper_bound(self) -> float:
        return self.A.norm_bound()
