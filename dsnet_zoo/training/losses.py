"""Training losses: the paper's multi-class hinge, certified cross-entropy, MSE.

All losses are computed in float32 (or the logits' own wider dtype) even when the forward pass
ran under bf16 autocast: the logits are cast up first.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["multiclass_hinge", "certified_cross_entropy", "logit_offset", "build_loss"]


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, classes), got shape {tuple(logits.shape)}")
    if target.shape != (logits.shape[0],):
        raise ValueError(f"targets must be (N,) class indices, got shape {tuple(target.shape)} "
                         f"for logits {tuple(logits.shape)}")


def _up(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def multiclass_hinge(logits: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """``mean_n sum_{j != y_n} max(0, margin - (z_{n,y_n} - z_{n,j}))``.

    The multi-class hinge of the paper's repository (davidemurari/StructuredNeuralNetworks,
    ``multiClassHingeLoss``): summed over the wrong classes, averaged over the batch. It is zero
    exactly when every example's logit margin ``z_y - max_{j != y} z_j`` is at least ``margin``;
    for an L-Lipschitz logit map that certifies an L2 radius of ``margin / (sqrt(2) L)``.
    (``torch.nn.MultiMarginLoss`` divides by the number of classes as well, so it is this loss
    divided by ``C``.)
    """
    _check(logits, target)
    z = _up(logits)
    z_y = z.gather(1, target[:, None])
    viol = F.relu(margin - (z_y - z))
    viol = viol.scatter(1, target[:, None], 0.0)  # j = y contributes margin, not a violation
    return viol.sum(dim=1).mean()


def logit_offset(lipschitz: float, eps: float) -> float:
    """``sqrt(2) * L * eps``: the logit margin that certifies L2 radius ``eps`` for an L-Lipschitz
    logit map (a perturbation of size eps moves each logit difference by at most sqrt(2) L eps)."""
    if not (lipschitz > 0 and math.isfinite(lipschitz)):
        raise ValueError(f"the certified loss needs a finite positive Lipschitz bound, got {lipschitz!r}")
    return math.sqrt(2.0) * lipschitz * eps


def certified_cross_entropy(logits: torch.Tensor, target: torch.Tensor, lipschitz: float, eps: float,
                            temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy on logits whose wrong classes are raised by ``sqrt(2) L eps``, at temperature
    ``temperature``: ``CE(temperature * (z + offset (1 - onehot_y))) / temperature``.

    Target radius ``eps`` (L2, pixel space): the offset logits classify an example correctly
    exactly when its true margin exceeds ``sqrt(2) L eps``, i.e. when it is certified at ``eps``, so
    the loss rewards certified rather than merely correct predictions (the construction CPL and
    SLL train 1-Lipschitz networks with). ``lipschitz`` must be a provable upper bound of the
    logit map's L2 Lipschitz constant (``model.lipschitz_upper_bound()``).
    """
    _check(logits, target)
    z = _up(logits)
    offset = logit_offset(lipschitz, eps)
    shifted = z + offset
    shifted = shifted.scatter(1, target[:, None], z.gather(1, target[:, None]))
    return F.cross_entropy(temperature * shifted, target) / temperature


class CertifiedCELoss:
    """:func:`certified_cross_entropy` with the model's current Lipschitz bound.

    :meth:`refresh` reads the bound; the loop calls it before each forward pass, because computing
    a bound may update the layers' cached state in place, which must not happen between a forward
    pass and its backward pass.
    """

    def __init__(self, bound_fn, eps: float, temperature: float):
        self.bound_fn, self.eps, self.temperature = bound_fn, eps, temperature
        self.lipschitz: float | None = None

    def refresh(self) -> None:
        with torch.no_grad():
            self.lipschitz = float(self.bound_fn())

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.lipschitz is None:
            self.refresh()
        return certified_cross_entropy(out, y, self.lipschitz, self.eps, self.temperature)


def build_loss(recipe, model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The recipe's loss as ``fn(outputs, targets) -> scalar``.

    For ``certified_ce`` the model's Lipschitz bound is re-read before every step (it changes as
    the weights train; see :class:`CertifiedCELoss`), unless the architecture fixes it by
    construction (``model.lipschitz_by_construction``, e.g. 1.0 for a net of normalised layers: no
    per-step certified recomputation); a model without a certified bound is an error, since the
    offset would certify nothing.
    """
    if recipe.loss == "hinge":
        return lambda out, y: multiclass_hinge(out, y, recipe.margin)
    if recipe.loss == "ce":
        return lambda out, y: F.cross_entropy(_up(out), y, label_smoothing=recipe.label_smoothing)
    if recipe.loss == "mse":
        return lambda out, y: F.mse_loss(_up(out), _up(y))
    if recipe.loss == "certified_ce":
        fixed = getattr(model, "lipschitz_by_construction", None)
        if fixed is not None:
            return CertifiedCELoss(lambda: fixed, recipe.cert_eps, recipe.temperature)
        bound_fn = getattr(model, "lipschitz_upper_bound", None)
        if bound_fn is None or bound_fn() is None:
            raise ValueError(f"loss 'certified_ce' needs a model with a certified Lipschitz bound; "
                             f"{type(model).__name__}.lipschitz_upper_bound() gives none. Use 'hinge' or 'ce'.")

        return CertifiedCELoss(bound_fn, recipe.cert_eps, recipe.temperature)
    raise ValueError(f"unknown loss {recipe.loss!r}")
