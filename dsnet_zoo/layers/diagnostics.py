"""Lipschitz diagnostics: *lower* bounds that check the certified (upper) bounds, never a certificate.

- :func:`power_iteration_norm` / :func:`operator_power_iteration`: ``||A v||`` for the last unit
  iterate ``v`` of power iteration on ``A^T A``, a lower bound of ``||A||_2``.
- :func:`empirical_lipschitz`: the largest ratio ``||f(a) - f(b)|| / ||a - b||`` found by gradient
  ascent over pairs, a lower bound of the Lipschitz constant (used by the tests and ``dsnet-zoo verify``).
- :func:`iter_certified`: the sub-modules that report a certified bound.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from .functional import lip_conv, lip_conv_adjoint

__all__ = ["power_iteration_norm", "operator_power_iteration", "empirical_lipschitz", "iter_certified"]


def power_iteration_norm(op: Callable[[torch.Tensor], torch.Tensor],
                         adjoint: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor,
                         n_iter: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate ``||A||_2`` by power iteration on ``A^T A``, warm-started from ``v0``.

    Returns ``(sigma, v)``: ``v`` the last unit iterate (pass it back as ``v0`` to warm-start) and
    ``sigma = ||A v||``, which is a *lower* bound of ``||A||_2`` (exactly so in exact arithmetic).
    Runs without gradients.
    """
    with torch.no_grad():
        v = v0 / v0.norm().clamp_min(1e-30)
        for _ in range(n_iter):
            w = adjoint(op(v))
            v = w / w.norm().clamp_min(1e-30)
        return op(v).norm(), v


def operator_power_iteration(weight: torch.Tensor, input_size: int | None = None, padding_mode: str = "zeros",
                             v0: torch.Tensor | None = None, n_iter: int = 50,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`power_iteration_norm` for a dense or 'same'-conv weight (see :func:`~.functional.lip_conv`)."""
    if v0 is None:
        shape = (1, weight.shape[1]) if weight.dim() == 2 else (1, weight.shape[1], input_size, input_size)
        v0 = torch.randn(shape, dtype=weight.dtype, device=weight.device, generator=generator)
    return power_iteration_norm(lambda v: lip_conv(v, weight, None, padding_mode),
                                lambda y: lip_conv_adjoint(y, weight, padding_mode), v0, n_iter)


def empirical_lipschitz(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, *,
                        steps: int = 50, lr: float = 1e-2, box: tuple[float, float] | None = None) -> float:
    """Largest ``||fn(a_i) - fn(b_i)|| / ||a_i - b_i||`` found by gradient ascent from the pairs ``(x_i, y_i)``.

    ``steps`` Adam steps (learning rate ``lr``) ascend the log of every pair's ratio, moving ``x`` and the
    offset ``y - x``; ``fn`` is fixed (its parameters get no gradients). The ratio is measured before every
    step and once after the last, so ``steps=0`` measures the given pairs. With ``box=(lo, hi)`` both points
    are clamped into the box before ``fn`` sees them (images in ``[0, 1]``). Every ratio is measured at
    points ``fn`` actually ran on, so the result is a *lower* bound of the Lipschitz constant (on the box):
    a certified bound must be ``>=`` it. Pairs whose points coincide are skipped (0 if all do).
    """
    x = x.detach().clone().requires_grad_(True)
    d = (y.detach() - x.detach()).requires_grad_(True)
    opt = torch.optim.Adam([x, d], lr=lr)
    best = 0.0

    def ratios() -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x, x + d
        if box is not None:
            a, b = a.clamp(*box), b.clamp(*box)
        den = (a - b).flatten(1).norm(dim=1)
        ok = den > 0
        num = (fn(a) - fn(b)).flatten(1).norm(dim=1)
        return num[ok] / den[ok], den

    for _ in range(steps):
        ratio, den = ratios()
        if ratio.numel():
            best = max(best, ratio.max().item())
            loss = -torch.log(ratio.clamp_min(torch.finfo(ratio.dtype).tiny)).sum()
        else:  # every pair collapsed onto itself: push them apart again
            loss = -den.sum()
        grads = torch.autograd.grad(loss, [x, d], allow_unused=True)
        x.grad, d.grad = (torch.zeros_like(p) if g is None else g for p, g in zip((x, d), grads))
        opt.step()
    with torch.no_grad():
        ratio, _ = ratios()
        if ratio.numel():
            best = max(best, ratio.max().item())
    return best


def iter_certified(module: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    """Every sub-module with a ``lipschitz_upper_bound`` method, with its qualified name."""
    for name, m in module.named_modules():
        if hasattr(m, "lipschitz_upper_bound"):
            yield name, m
