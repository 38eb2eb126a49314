"""Helpers shared by the structure-preserving blocks (activations, weights, step sizes, shape checks)."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "silu": F.silu,
    "gelu": F.gelu,
    "softplus": F.softplus,
    "sigmoid": torch.sigmoid,
    "identity": lambda t: t,
}


def resolve_activation(act: str | Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """An elementwise activation by name (``tanh, relu, silu, gelu, softplus, sigmoid, identity``)
    or a callable, returned unchanged."""
    if callable(act):
        return act
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; use one of {sorted(_ACTIVATIONS)} or pass a callable")
    return _ACTIVATIONS[act]


def _init_weight(shape: tuple[int, ...]) -> nn.Parameter:
    fan_in = math.prod(shape[1:])
    return nn.Parameter(torch.randn(shape) / math.sqrt(fan_in))


def _step_param(step: float, learn_step: bool, module: nn.Module) -> None:
    """Register ``module.step``: a learnable parameter, or a fixed buffer."""
    step_t = torch.tensor(float(step))
    if learn_step:
        module.step = nn.Parameter(step_t)
    else:
        module.register_buffer("step", step_t)


def _check_state(block: nn.Module, x: torch.Tensor) -> None:
    """A clear error for a state that is not ``(N, C)`` (dense) or ``(N, C, H, W)`` (conv)."""
    want = 2 if block.dense else 4
    if x.dim() != want or x.shape[1] != block.channels:
        form = "(N, C)" if block.dense else "(N, C, H, W)"
        raise ValueError(f"{type(block).__name__} expects a {form} state with C={block.channels}, got shape "
                         f"{tuple(x.shape)}")
