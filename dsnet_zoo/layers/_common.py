"""Helpers shared by the structure-preserving blocks (activations, weights, step sizes, shape checks)."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class NotScriptable:
    """Mixin of the zoo's modules: ``torch.jit.script`` refuses them with an error that says what to use.

    TorchScript is deprecated in PyTorch (``torch.jit.script`` itself warns to switch to ``torch.compile`` or
    ``torch.export``), and the layers use Python it cannot compile: eval-mode caches of the certified weights in
    dicts with weakrefs, activations passed as callables, the input checks' reads of compiler state. Without
    this, scripting fails deep inside a layer with an unrelated message. The plain export
    (:func:`dsnet_zoo.export.export_plain`: the same outputs, the certificate recomputable from its weights)
    compiles with TorchScript; ``torch.export`` and ``torch.fx`` take the models as they are, except that
    ``torch.export`` stops at a :class:`~dsnet_zoo.layers.SwitchingPair`, whose guarded step sizes are
    computed from certified bounds as Python numbers (its plain export goes through).
    """

    def __prepare_scriptable__(self):  # torch.jit.script calls it on every module it is given or reaches
        raise TypeError(
            f"{type(self).__name__} (dsnet_zoo) cannot be compiled by torch.jit.script: TorchScript is deprecated "
            "in PyTorch and cannot compile the zoo's layers. Script the plain export instead, "
            "torch.jit.script(dsnet_zoo.export.export_plain(model)) (same outputs), or use torch.export.export "
            "or torch.fx, which take the model as it is.")


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
