"""The timm-compatible surface every zoo classifier shares."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ZooClassifier"]


class ZooClassifier(nn.Module):
    """Base class of the zoo's classifiers: timm's interface plus certificates.

    Subclasses build ``self.head`` with :meth:`_make_head` and implement :meth:`forward_features`
    (input images in ``[0, 1]``, normalisation inside the model) and :meth:`forward_head`.

    Certificates: :meth:`lipschitz_upper_bound` is a *provable* upper bound of the L2 Lipschitz
    constant of the logit map ``x -> forward(x)`` in pixel space, or ``None`` when the model has
    no certified bound. :meth:`feature_lipschitz_upper_bound` bounds ``x -> forward_head(
    forward_features(x), pre_logits=True)``; with a linear head it gives per-class-pair
    certificates ``margin_ij / (L_features * ||W_i - W_j||)``.
    """

    num_classes: int
    num_features: int
    pretrained_cfg: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self.pretrained_cfg = {}

    # -- timm interface -------------------------------------------------------------------------
    def _make_head(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, **kwargs: Any) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes (0 gives identity).

        The new head is untrained: the weights' recorded metrics and certificates no longer
        apply, so ``pretrained_cfg`` is marked accordingly.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.head = self._make_head(num_classes) if num_classes > 0 else nn.Identity()
        if self.pretrained_cfg:
            self.pretrained_cfg = dict(self.pretrained_cfg, num_classes=num_classes, metrics={},
                                       head_reset=True)

    @property
    def default_cfg(self) -> dict[str, Any]:  # timm's older name
        return self.pretrained_cfg

    # -- certificates ---------------------------------------------------------------------------
    def lipschitz_upper_bound(self) -> float | None:
        """Certified L2 Lipschitz bound of the logit map in pixel space, or ``None``."""
        return None

    def feature_lipschitz_upper_bound(self) -> float | None:
        """Certified L2 Lipschitz bound of the pre-logit features in pixel space, or ``None``."""
        return None
