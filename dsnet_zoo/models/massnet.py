"""MassNet: the paper's mass-preserving experiment, the time-1 flow map of the SIR model.

The SIR model ``S' = -beta S I``, ``I' = beta S I - gamma I``, ``R' = gamma I`` conserves
``S + I + R``. :class:`MassNet` maps a state ``x = (S, I, R)`` to an approximation of its state at
time 1 with layers that all conserve ``sum(x)`` exactly (up to float rounding): sum-preserving
lifts to wider states, explicit-Euler steps of ``x' = (A(x) - A(x)^T) 1``
(:class:`~dsnet_zoo.layers.MassPreservingBlock`), and a sum-preserving projection back to 3.
The default widths ``(3, 10, 10, 15)``, 3 steps per width and perceptrons of width 50 follow the
paper's repository (davidemurari/StructuredNeuralNetworks, "Mass Preserving Networks").

It is not a classifier: ``num_classes`` is 0 and there is no head. Its data, the SIR flow map
(:func:`~dsnet_zoo.data.sir_dataset`, generated deterministically, and ``sir_flow_map``,
``sir_vector_field``, ``SIR_BETA``, ``SIR_GAMMA``), live in :mod:`dsnet_zoo.data` (the named dataset
``sir``) and are re-exported here.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..data import SIR_BETA, SIR_GAMMA, sir_dataset, sir_flow_map, sir_vector_field
from ..layers._common import NotScriptable
from ..layers.mass import MassPreservingBlock, SumPreservingLift, SumPreservingProjection
from ..registry import register_model
from ._base import INPUT_RANGE, check_input
from ._builder import build_model

__all__ = ["MassNet", "massnet_sir", "sir_vector_field", "sir_flow_map", "sir_dataset", "SIR_BETA", "SIR_GAMMA"]


class MassNet(NotScriptable, nn.Module):
    """Sum-preserving map ``R^n -> R^n`` (``n = dims[0]``): for each later width a sum-preserving
    lift or projection followed by ``steps_per_width`` mass-preserving Euler steps, then a
    sum-preserving projection back to ``dims[0]``.

    Guarantee: ``forward(x).sum(1) == x.sum(1)`` for any weights (relative error ~ machine epsilon).
    """

    def __init__(self, num_classes: int = 0, *, dims: Sequence[int] = (3, 10, 10, 15), hidden: int = 50,
                 steps_per_width: int = 3, act: str = "relu", step: float = 0.1, learnable_lift: bool = True):
        super().__init__()
        if num_classes != 0:
            raise ValueError(f"MassNet is a flow-map regressor, not a classifier: num_classes must be 0 "
                             f"(got {num_classes})")
        if len(dims) < 2 or min(dims) < 2:
            raise ValueError(f"dims needs at least two widths, each >= 2, got {tuple(dims)}")
        self.num_classes = 0
        self.in_features = dims[0]
        self.pretrained_cfg: dict[str, Any] = {}
        layers: list[nn.Module] = []
        for prev, width in zip(dims[:-1], dims[1:]):
            if width > prev:
                layers.append(SumPreservingLift(prev, width, learnable=learnable_lift))
            elif width < prev:
                layers.append(SumPreservingProjection(prev, width, learnable=learnable_lift))
            layers.extend(MassPreservingBlock(width, hidden, act=act, step=step) for _ in range(steps_per_width))
        layers.append(SumPreservingProjection(dims[-1], dims[0], learnable=learnable_lift))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the zoo's one input check: states are population fractions, so 0-255 counts, NaN and integer
        # tensors are refused like badly scaled images are by the classifiers
        check_input(x, owner="MassNet", expected=f"(N, {self.in_features}) states (float population fractions "
                    "in [0, 1])", shape=(None, self.in_features), value_range=INPUT_RANGE, kind="states")
        return self.layers(x)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def structure_blocks(self) -> list[tuple[str, nn.Module, str]]:
        """Every sum-preserving layer, and the whole map, as ``(name, module, 'mass')``."""
        out = [(f"layers.{i}", m, "mass") for i, m in enumerate(self.layers)]
        out.append(("model", self, "mass"))
        return out

    def sample_input(self, spatial: int = 4, batch: int = 8, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Random points of the probability simplex (``spatial`` is ignored)."""
        x = torch.rand((batch, self.in_features), dtype=dtype, generator=generator)
        return x / x.sum(dim=1, keepdim=True)


@register_model(family="massnet", dataset="sir", num_classes=0, input_size=(3,))
def massnet_sir(pretrained: bool = False, **kwargs) -> MassNet:
    """Mass-preserving network for the SIR time-1 flow map (sum of S, I, R conserved exactly)."""
    return build_model(MassNet, "massnet_sir", pretrained, **kwargs)
