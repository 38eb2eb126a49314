"""L2 robustness certificates from a model's provable Lipschitz bounds.

For a logit map ``z = f(x)`` with ``||f(x) - f(x')||_2 <= L ||x - x'||_2`` (pixel space, the model
contract: normalisation happens inside the model, so its ``lipschitz_upper_bound()`` already includes
the ``1 / std`` factor), the prediction at ``x`` cannot change within the L2 ball of radius

- global: ``(z_y - max_{j != y} z_j) / (sqrt(2) L)``, because ``z_y - z_j`` is ``sqrt(2) L``-Lipschitz;
- per class pair, when the head is linear (``z = W g(x) + b`` with ``g`` ``L_feat``-Lipschitz):
  ``min_{j != y} (z_y - z_j) / (L_feat ||W_y - W_j||_2)``, because ``z_y - z_j = (W_y - W_j) . g + const``.

Both are valid, so the certified radius is the larger. An example is certified at ``eps`` when its radius
is strictly greater than ``eps``. Margins are reduced by a float32 rounding allowance (see
:func:`certified_radii`) so that a radius is never larger than the exact function's.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models._base import ZooClassifier

__all__ = ["Certifier", "certified_radii", "describe_bound", "ROUNDING_RTOL"]

# relative rounding allowance on logits computed in float32 (a few hundred ulps of the largest logit)
ROUNDING_RTOL = 1e-5


def describe_bound(model: nn.Module) -> dict[str, Any]:
    """The model's Lipschitz bounds and where they come from, for the record."""
    out: dict[str, Any] = {"bound": None, "feature_bound": None, "space": "pixel, inputs in [0, 1]"}
    fn = getattr(model, "lipschitz_upper_bound", None)
    if fn is None:
        out["method"] = f"{type(model).__qualname__} has no lipschitz_upper_bound(): no certificate"
        return out
    bound = fn()
    out["bound"] = None if bound is None else float(bound)
    ffn = getattr(model, "feature_lipschitz_upper_bound", None)
    fbound = ffn() if ffn is not None else None
    out["feature_bound"] = None if fbound is None else float(fbound)
    doc = inspect.getdoc(fn) or ""
    out["method"] = (f"{type(model).__module__}.{type(model).__qualname__}.lipschitz_upper_bound"
                     + (f": {doc.splitlines()[0]}" if doc else ""))
    extra = getattr(model, "lipschitz_bound_info", None)
    if callable(extra):
        out["details"] = extra()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("norm_std") is not None:
        out["norm_mean"] = list(cfg.get("norm_mean") or [])
        out["norm_std"] = list(cfg.get("norm_std"))
    return out


def certified_radii(logits: torch.Tensor, y: torch.Tensor, lipschitz: float | None, *,
                    features: torch.Tensor | None = None, head_weight: torch.Tensor | None = None,
                    feature_lipschitz: float | None = None) -> dict[str, torch.Tensor]:
    """Certified L2 radii (float64) of each example; 0 where misclassified.

    Returns ``{'radius', 'global', 'pairwise'}``; ``pairwise`` is NaN where no pairwise certificate
    applies (no head weight or feature bound). ``lipschitz=None`` gives NaN radii (no certificate).
    The margin ``z_y - z_j`` is lowered by ``ROUNDING_RTOL * (|z_y| + |z_j| + 1)`` first.
    """
    z = logits.detach().to(torch.float64)
    n, k = z.shape
    y = y.to(z.device)
    zy = z.gather(1, y[:, None])
    diff = zy - z  # z_y - z_j
    slack = ROUNDING_RTOL * (zy.abs() + z.abs() + 1.0)
    diff = diff - slack
    mask = torch.nn.functional.one_hot(y, k).bool()
    diff = diff.masked_fill(mask, math.inf)
    nan = torch.full((n,), math.nan, dtype=torch.float64, device=z.device)
    if lipschitz is None:
        return {"radius": nan, "global": nan.clone(), "pairwise": nan.clone()}
    if not (lipschitz > 0 and math.isfinite(lipschitz)):
        raise ValueError(f"Lipschitz bound must be positive and finite, got {lipschitz}")
    glob = diff.min(dim=1).values / (math.sqrt(2.0) * lipschitz)
    pair = nan.clone()
    if head_weight is not None and feature_lipschitz is not None:
        w = head_weight.detach().to(torch.float64).to(z.device)
        wd = (w[y][:, None, :] - w[None, :, :]).norm(dim=2)  # ||W_y - W_j||, n x k
        ratio = diff / (feature_lipschitz * wd)
        ratio = torch.where(mask, torch.full_like(ratio, math.inf), ratio)
        # W_y == W_j with a positive margin: that pair can never flip; with no margin it is not certified
        ratio = torch.where((wd == 0) & ~mask, torch.where(diff > 0, math.inf, -math.inf), ratio)
        pair = ratio.min(dim=1).values
    radius = torch.where(torch.isnan(pair), glob, torch.maximum(glob, pair))
    radius = radius.clamp(min=0.0)
    return {"radius": radius, "global": glob.clamp(min=0.0), "pairwise": pair.clamp(min=0.0)}


def _plain_zoo_forward(model: nn.Module) -> bool:
    """``model(x)`` is exactly ``forward_head(forward_features(x))``: ZooClassifier's own forward, not
    replaced on the instance, and no forward hooks that could change inputs or outputs."""
    return (type(model).forward is ZooClassifier.forward and "forward" not in vars(model)
            and not model._forward_hooks and not model._forward_pre_hooks)


@dataclass
class Certifier:
    """Computes logits and certified radii of batches for one model.

    The per-class-pair certificate is used only when the model follows the contract
    ``forward(x) = forward_head(forward_features(x))`` with a linear head exposing ``.weight``, and
    the head applied to the pre-logit features reproduces the logits (checked on every batch).
    """

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.info = describe_bound(self.model)
        self.lipschitz = self.info["bound"]
        self.feature_lipschitz = self.info["feature_bound"]
        head = None
        if self.lipschitz is not None and self.feature_lipschitz is not None \
                and hasattr(self.model, "forward_features") and hasattr(self.model, "get_classifier"):
            head = self.model.get_classifier()
        weight = getattr(head, "weight", None) if head is not None else None
        self.head_weight = weight.detach() if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None
        bias = getattr(head, "bias", None) if head is not None else None
        self.head_bias = bias.detach() if isinstance(bias, torch.Tensor) else None
        self.pairwise = self.head_weight is not None
        if self.lipschitz is None:
            self.info["certificate"] = None
        elif self.pairwise:
            self.info["certificate"] = ("max(global margin/(sqrt(2) L), "
                                        "min_j margin_j/(L_feat ||W_y - W_j||))")
        else:
            self.info["certificate"] = "global: margin/(sqrt(2) L)"

    @torch.no_grad()
    def logits_and_radii(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = self.model
        feats = None
        if self.pairwise and _plain_zoo_forward(model):
            # forward is forward_head(forward_features(x)) by definition: one pass gives both
            f = model.forward_features(x)
            logits = model.forward_head(f)
            feats = model.forward_head(f, pre_logits=True)
        else:
            logits = model(x)
            if self.pairwise:
                feats = model.forward_head(model.forward_features(x), pre_logits=True)
        if feats is not None:
            w = self.head_weight.to(feats)
            recomputed = feats @ w.t() + (self.head_bias.to(feats) if self.head_bias is not None else 0.0)
            scale = logits.abs().max().clamp(min=1.0)
            if feats.dim() != 2 or (recomputed - logits).abs().max() > 1e-4 * scale:
                # the head is not the linear map W g + b on these features: this batch gets only the
                # global bound (decided per batch, so sharded runs decide identically)
                self.info["pairwise_skipped_batches"] = self.info.get("pairwise_skipped_batches", 0) + 1
                feats = None
        radii = certified_radii(logits, y, self.lipschitz, features=feats,
                                head_weight=self.head_weight if feats is not None else None,
                                feature_lipschitz=self.feature_lipschitz if feats is not None else None)
        return logits, radii
