"""A classifier whose exact Lipschitz constant is known, and data it separates: to validate the harness.

:class:`LinearReference` is ``z = W ((x - mean) / std) + b``. Its logit map is linear, so the smallest L2
perturbation that changes class ``y`` into ``j`` is exactly ``(z_y - z_j) / ||(W_y - W_j) D||`` with
``D = diag(1 / std)``: the per-class-pair certificate with ``L_feat = 1 / min(std)`` is sound, and tight
when ``std`` is constant. :func:`prototype_data` draws images around class prototypes, and
:func:`nearest_prototype_weights` gives the linear classifier that separates them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..data import EvalData
from ..models._base import ZooClassifier

__all__ = ["LinearReference", "prototype_data", "nearest_prototype_weights"]


class LinearReference(ZooClassifier):
    """Linear classifier on flattened, normalised images.

    ``lipschitz_upper_bound() = ||W||_2 / min(std)`` (spectral norm in float64, rounded up by 1e-9
    relative) is a valid bound of the pixel-space logit map; ``feature_lipschitz_upper_bound() =
    1 / min(std)`` bounds the normalised, flattened features.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, img_size: int = 32,
                 norm_mean: tuple[float, ...] | None = None, norm_std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = in_chans * img_size * img_size
        mean = torch.tensor(norm_mean if norm_mean is not None else [0.0] * in_chans, dtype=torch.float32)
        std = torch.tensor(norm_std if norm_std is not None else [1.0] * in_chans, dtype=torch.float32)
        if (std <= 0).any():
            raise ValueError("norm_std must be positive")
        self.register_buffer("mean", mean.view(1, -1, 1, 1))
        self.register_buffer("std", std.view(1, -1, 1, 1))
        self.head = self._make_head(num_classes)

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std).flatten(1)

    def feature_lipschitz_upper_bound(self) -> float:
        """``1 / min(std)``: the normalisation is diagonal, flattening is an isometry."""
        return float(1.0 / self.std.double().min())

    def lipschitz_upper_bound(self) -> float:
        """``||W||_2 / min(std)``, with ``||W||_2`` from an SVD in float64 rounded up."""
        sigma = float(torch.linalg.matrix_norm(self.head.weight.detach().double(), ord=2))
        return sigma * (1 + 1e-9) * self.feature_lipschitz_upper_bound()

    def exact_min_distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The exact smallest L2 perturbation (ignoring the [0, 1] box) that changes the class from ``y``;
        0 for misclassified inputs. Float64."""
        w = self.head.weight.detach().double() / self.std.double().flatten().repeat_interleave(
            self.num_features // self.std.numel())[None, :]
        with torch.no_grad():
            z = self(x.to(self.head.weight.dtype)).double()
        zy = z.gather(1, y[:, None])
        dist = (zy - z) / (w[y][:, None, :] - w[None]).norm(dim=2)
        dist = dist.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), math.inf)
        return dist.min(1).values.clamp(min=0.0)


def prototype_data(n: int, *, num_classes: int = 10, spread: float = 0.01, noise: float = 0.1, seed: int = 0,
                   name: str = "prototypes") -> tuple[EvalData, torch.Tensor]:
    """``n`` uint8 images ``round(255 * clip(P_c + noise))`` around prototypes ``P_c = 0.5 + spread * N(0, 1)``.
    Returns the data and the prototypes (float, in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    protos = (0.5 + spread * torch.randn(num_classes, 3, 32, 32, generator=g)).clamp(0, 1)
    y = torch.randint(0, num_classes, (n,), generator=g)
    x = (protos[y] + noise * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    x8 = (x * 255).round().to(torch.uint8)
    data = EvalData(name=name, split="test", x=x8, y=y.long(), indices=torch.arange(n), num_classes=num_classes,
                    info={"source": "synthetic", "seed": seed, "spread": spread, "noise": noise,
                          "description": f"{n:,} synthetic images around {num_classes} prototypes (seed {seed})"})
    return data, protos


def nearest_prototype_weights(protos: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """State dict of a :class:`LinearReference` (identity normalisation) that picks the nearest prototype:
    ``z_c = scale * (<P_c, x> - ||P_c||^2 / 2)``."""
    p = protos.flatten(1).double()
    return {"head.weight": (scale * p).float(), "head.bias": (-0.5 * scale * (p * p).sum(1)).float(),
            "mean": torch.zeros(1, protos.shape[1], 1, 1), "std": torch.ones(1, protos.shape[1], 1, 1)}
