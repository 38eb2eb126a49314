"""Plain and ONNX export: every constrained layer baked into ordinary torch modules.

:func:`export_plain` turns a zoo model into a :class:`PlainNet`, ``head(features(x))``, whose modules are
``torch.nn`` built-ins (``nn.Conv2d``, ``nn.Linear``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.MaxPool2d``,
``nn.PixelUnshuffle``, ``nn.Flatten``, ...) and the small wrappers of this module, each a few tensor
operations on the ``nn.Conv2d`` / ``nn.Linear`` it holds (:data:`PLAIN_MODULES`):

- a constrained map (:class:`~dsnet_zoo.layers.LipConv2d`, :class:`~dsnet_zoo.layers.LipLinear`, the ``A``
  of a step) becomes an ``nn.Conv2d`` / ``nn.Linear`` holding its eval-mode (normalised) weight;
- a gradient step ``x -+ h A^T act(A x + b)`` becomes a :class:`GradientStep`: ``A`` is its ``nn.Conv2d`` /
  ``nn.Linear``, ``A^T`` is computed from the same baked weight (``conv_transpose2d``, or the flipped
  circular conv, :func:`~dsnet_zoo.layers.functional.lip_conv_adjoint`), ``h`` a buffer;
- a switching pair becomes its sub-steps (:class:`ResidualStep` and :class:`GradientStep`) with the step
  sizes that run (after the guard); Hamiltonian, volume- and mass-preserving blocks become
  :class:`SymplecticEulerStep`, :class:`VolumeShearStep` and :class:`MassExchangeStep`, sum-preserving
  lifts and projections an ``nn.Linear`` holding their matrix.

What the export guarantees:

- **Same function.** ``export_plain(model)(x)`` runs the same floating-point operations on the same
  tensors as ``model.eval()(x)``: the logits are equal (the test suite measures a max abs difference of 0
  in float32 and float64 for every registered architecture, and on the shipped flagship weights). With
  ``check=True`` (default) :func:`export_plain` compares the two on a random probe batch and raises if they
  differ by more than a few ulps.
- **No constraint machinery.** Nothing in the export normalises, runs a power iteration, an eigensolver or
  an FFT in ``forward``; it traces to ONNX (:func:`export_onnx`). Constrained models cannot be exported to
  ONNX directly: their eval-mode weights come from ``eigvalsh`` of the DFT symbols (``aten._linalg_eigh``).
- **TorchScript.** ``torch.jit.script(export_plain(model))`` compiles and computes exactly what the export
  computes (tested in float64, also after ``torch.jit.save``/``load``). The zoo's own modules refuse
  ``torch.jit.script`` with an error that points here (:class:`~dsnet_zoo.layers._common.NotScriptable`).
- **Certificate from the exported weights.** ``PlainNet.lipschitz_upper_bound()`` is the product of
  per-module bounds recomputed from the exported tensors with the layers' own functions
  (:func:`~dsnet_zoo.layers.norm_bounds.operator_norm_bound`,
  :func:`~dsnet_zoo.layers.norm_bounds.singular_value_bounds`,
  :func:`~dsnet_zoo.layers.gradient_flow.contractive_factor`), with the padding, input size and method of
  the original layer; for certified models it equals the original's ``lipschitz_upper_bound()`` up to
  rounding (tested: relative difference below 1e-6, never below the original by more than that; measured
  0 for LipFlowNet, at most 2e-16 for LipNet; ~4e-8 for the paper's models, whose original bound uses the
  nominal std and the float64 product ``h_e r`` where the model divides by the stored float32 std and runs
  the float32 product: the export certifies what runs). It is ``None`` where a module has no certified
  bound (HamNet, VPNet, MassNet). Since it is recomputed at every call, it stays a valid certificate if the
  exported weights are edited.
- **Independent.** The export shares no tensor with the original and does not change its mode; a model in
  training mode is exported with its eval-mode weights (from a deep copy).

Not exported: the structure-specific methods (``inverse()``, ``structure_blocks()``, the timm API) and the
zoo's input check (``PlainNet`` expects what the model does: float images in ``[0, 1]``).
"""
from __future__ import annotations

import copy
import io
import math
import os
import warnings
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import nn

from .layers._common import _ACTIVATIONS
from .layers.constrained_linear import ConstrainedLinearMap
from .layers.functional import lip_conv_adjoint
from .layers.gradient_flow import ContractiveStep, SwitchingPair, contractive_factor
from .layers.hamiltonian import HamiltonianBlock
from .layers.mass import MassPreservingBlock, SumPreservingLinear
from .layers.norm_bounds import operator_norm_bound, singular_value_bounds
from .layers.volume import VolumePreservingBlock
from .models.hamnet import StructuredStageNet
from .models.lipflow import LipFlowNet
from .models.lipnet import LipNet
from .models.lipnet_paper import LipNetPaper, PaperBlock
from .models.massnet import MassNet
from .utils import atomic_write_bytes

__all__ = [
    "export_plain",
    "export_onnx",
    "PlainNet",
    "Normalize",
    "Scale",
    "MeanPool",
    "GradientStep",
    "ResidualStep",
    "SymplecticEulerStep",
    "VolumeShearStep",
    "MassExchangeStep",
    "PLAIN_MODULES",
    "ONE_LIPSCHITZ",
    "DEFAULT_OPSET",
]

DEFAULT_OPSET = 17

# torch.nn built-ins that are 1-Lipschitz in L2 as the exports use them (MaxPool2d: disjoint windows only,
# checked in PlainNet.lipschitz_factors; LeakyReLU: slope in [-1, 1])
ONE_LIPSCHITZ = (nn.Identity, nn.ReLU, nn.LeakyReLU, nn.MaxPool2d, nn.Flatten, nn.PixelUnshuffle)

_ACT_MODULES: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid, "identity": nn.Identity,
}


# -- the plain modules ------------------------------------------------------------------------------
def _clone(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _pair(v: int | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _leaky_slope(act: nn.Module) -> float:
    """The negative slope ``a`` of a ReLU (0) or LeakyReLU; ``act' in [a, 1]`` needs ``0 <= a <= 1``."""
    if isinstance(act, nn.ReLU):
        return 0.0
    if isinstance(act, nn.LeakyReLU) and 0.0 <= act.negative_slope <= 1.0:
        return float(act.negative_slope)
    raise ValueError(f"expected nn.ReLU or nn.LeakyReLU with slope in [0, 1], got {act!r}")


def _is_same_conv(conv: nn.Conv2d) -> bool:
    """A stride-1, 'same' (odd square kernel, padding k // 2), undilated, ungrouped conv: the operator whose
    norm :func:`~dsnet_zoo.layers.norm_bounds.singular_value_bounds` certifies."""
    k = _pair(conv.kernel_size)
    return (k[0] == k[1] and k[0] % 2 == 1 and _pair(conv.stride) == (1, 1) and _pair(conv.dilation) == (1, 1)
            and conv.groups == 1 and _pair(conv.padding) == (k[0] // 2, k[0] // 2)
            and conv.padding_mode in ("zeros", "circular"))


def _norm_bound(layer: nn.Module, input_size: int | None, method: str) -> float:
    """Certified ``||A||_2`` of an ``nn.Conv2d`` ('same', stride 1) or ``nn.Linear`` from its weight."""
    if isinstance(layer, nn.Conv2d):
        if not _is_same_conv(layer):
            raise ValueError(f"no certified norm for {layer!r}: only stride-1 'same' convolutions")
        return operator_norm_bound(layer.weight.detach(), input_size, layer.padding_mode, method)
    return operator_norm_bound(layer.weight.detach(), None, method=method)


class Normalize(nn.Module):
    """``x - mean`` (``std`` None), or ``(x - mean) / std``, per channel. Lipschitz ``1 / min(std)``
    (1 for a translation), from the stored ``std``."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", _clone(mean))
        self.register_buffer("std", None if std is None else _clone(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self.mean.to(x.dtype)
        return x if self.std is None else x / self.std.to(x.dtype)

    def lipschitz_upper_bound(self) -> float:
        return 1.0 if self.std is None else 1.0 / float(self.std.detach().abs().min())


class Scale(nn.Module):
    """``c * x`` for a scalar buffer ``c``; Lipschitz ``|c|``."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("c", _clone(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c * x

    def lipschitz_upper_bound(self) -> float:
        return abs(float(self.c))


class MeanPool(nn.Module):
    """Global average pooling ``x.mean((2, 3))``; ``1 / sqrt(H W) <= 1``-Lipschitz."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def lipschitz_upper_bound(self) -> float:
        return 1.0


class GradientStep(nn.Module):
    """``x - h A^T act(A x + b)`` (``sign=-1``) or ``x + h A^T act(A x + b)`` (``sign=+1``).

    ``op`` is ``A`` with its bias (an ``nn.Conv2d`` with 'same' padding, zero or circular, or an
    ``nn.Linear``); ``A^T`` is :func:`~dsnet_zoo.layers.functional.lip_conv_adjoint` of ``op.weight``;
    ``act`` is ``nn.ReLU`` or ``nn.LeakyReLU(a)``, ``0 <= a <= 1``; ``step`` is the scalar ``h``.

    Bound (:meth:`lipschitz_upper_bound`), with ``L >= ||A||`` and ``s <= sigma_min(A)`` certified from
    ``op.weight`` on ``input_size`` inputs by ``method``: ``contractive_factor(h, L, s, a)`` for
    ``sign=-1`` (:class:`~dsnet_zoo.layers.ContractiveStep`), ``1 + h L^2`` for ``sign=+1``
    (:class:`~dsnet_zoo.layers.ExpansiveStep`).
    """

    def __init__(self, op: nn.Module, act: nn.Module, step: torch.Tensor, sign: float, *,
                 input_size: int | None, method: str = "eig") -> None:
        super().__init__()
        if sign not in (-1.0, 1.0):
            raise ValueError(f"sign must be -1 or +1, got {sign}")
        _leaky_slope(act)
        self.op, self.act = op, act
        self.register_buffer("step", _clone(step))
        self.sign, self.input_size, self.method = float(sign), input_size, method
        # read once here: in TorchScript, isinstance(self.op, nn.Conv2d) is False for a scripted Conv2d, and
        # the adjoint would silently lose its circular padding
        self.padding_mode: str = op.padding_mode if isinstance(op, nn.Conv2d) else "zeros"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = lip_conv_adjoint(self.act(self.op(x)), self.op.weight, self.padding_mode)
        return x - self.step * y if self.sign < 0 else x + self.step * y

    def lipschitz_upper_bound(self) -> float:
        h = float(self.step)
        if self.sign > 0:
            L = _norm_bound(self.op, self.input_size, self.method)
            return 1.0 + h * (L * L)
        with torch.no_grad():
            up, lo = singular_value_bounds(self.op.weight.detach(), self.input_size, self.padding_mode,
                                           self.method, need_lower=True)
        return contractive_factor(h, float(up), float(lo), _leaky_slope(self.act))

    def extra_repr(self) -> str:
        return f"sign={'+' if self.sign > 0 else '-'}, step={float(self.step):.6g}"


class ResidualStep(nn.Module):
    """``x + c act(W x + b)`` (the switching pairs' non-gradient expansive step); ``act`` 1-Lipschitz
    (ReLU or LeakyReLU with slope in [0, 1]), bound ``1 + |c| ||W||`` with ``||W||`` certified from
    ``op.weight``."""

    def __init__(self, op: nn.Module, act: nn.Module, coef: torch.Tensor, *, input_size: int | None,
                 method: str = "eig") -> None:
        super().__init__()
        _leaky_slope(act)
        self.op, self.act = op, act
        self.register_buffer("coef", _clone(coef))
        self.input_size, self.method = input_size, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.coef * self.act(self.op(x))

    def lipschitz_upper_bound(self) -> float:
        return 1.0 + abs(float(self.coef)) * _norm_bound(self.op, self.input_size, self.method)

    def extra_repr(self) -> str:
        return f"coef={float(self.coef):.6g}"


class SymplecticEulerStep(nn.Module):
    """The plain :class:`~dsnet_zoo.layers.HamiltonianBlock`: ``(q, p)`` halves of the channels,
    ``q <- q + h B^T act(B p + b)``, then ``p <- p - h C^T act(C q + c)``; ``op_p`` holds ``B, b`` and
    ``op_q`` holds ``C, c`` (transposes computed from the same weights)."""

    def __init__(self, op_p: nn.Module, op_q: nn.Module, act: nn.Module, step: torch.Tensor) -> None:
        super().__init__()
        self.op_p, self.op_q, self.act = op_p, op_q, act
        self.register_buffer("step", _clone(step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, p = x.chunk(2, dim=1)
        q = q + self.step * lip_conv_adjoint(self.act(self.op_p(p)), self.op_p.weight)
        p = p - self.step * lip_conv_adjoint(self.act(self.op_q(q)), self.op_q.weight)
        return torch.cat([q, p], dim=1)


class VolumeShearStep(nn.Module):
    """The plain :class:`~dsnet_zoo.layers.VolumePreservingBlock`: ``(x, v)`` halves,
    ``x <- x + h act(A v + a)``, then ``v <- v + h act(B x + b)`` (``op_v`` = A, ``op_x`` = B)."""

    def __init__(self, op_v: nn.Module, op_x: nn.Module, act: nn.Module, step: torch.Tensor) -> None:
        super().__init__()
        self.op_v, self.op_x, self.act = op_v, op_x, act
        self.register_buffer("step", _clone(step))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x, v = z.chunk(2, dim=1)
        x = x + self.step * self.act(self.op_v(v))
        v = v + self.step * self.act(self.op_x(x))
        return torch.cat([x, v], dim=1)


class MassExchangeStep(nn.Module):
    """The plain :class:`~dsnet_zoo.layers.MassPreservingBlock`: ``x + h (A(x) - A(x)^T) 1`` with the
    strictly upper-triangular entries ``a = out_act(fc2(act(fc1(x))))`` added to entry ``rows`` and
    subtracted from entry ``cols``. ``scatter_add`` instead of the block's ``index_add`` (the same sums in
    the same order; ONNX has no ``index_add`` with repeated indices, ``ScatterElements`` adds them)."""

    def __init__(self, fc1: nn.Linear, fc2: nn.Linear, act: nn.Module, out_act: nn.Module, rows: torch.Tensor,
                 cols: torch.Tensor, step: torch.Tensor) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act, self.out_act = fc1, fc2, act, out_act
        self.register_buffer("rows", _clone(rows))
        self.register_buffer("cols", _clone(cols))
        self.register_buffer("step", _clone(step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.out_act(self.fc2(self.act(self.fc1(x))))
        rows, cols = self.rows.expand(a.shape[0], -1), self.cols.expand(a.shape[0], -1)
        field = torch.zeros_like(x).scatter_add(1, rows, a).scatter_add(1, cols, -a)
        return x + self.step * field


class PlainNet(nn.Module):
    """A plain export: ``forward(x) = head(features(x))`` (see the module docstring for the guarantees).

    ``features`` (an ``nn.Sequential`` named after the original layers) ends with the pre-logit vector, the
    original's ``forward_head(forward_features(x), pre_logits=True)``; ``head`` is an ``nn.Linear`` (or
    ``nn.Identity``). ``norm_bounds`` maps the names of the bare ``nn.Conv2d`` / ``nn.Linear`` children that
    carry a certificate (``'head'`` for the head) to ``(input_size, method)``; a child missing there has no
    certified bound. ``input_shape`` is one sample's shape, ``source`` the exported architecture.
    """

    def __init__(self, features: nn.Sequential, head: nn.Module, *, input_shape: tuple[int, ...],
                 norm_bounds: dict[str, tuple[int | None, str]], num_classes: int, num_features: int | None,
                 source: str) -> None:
        super().__init__()
        self.features, self.head = features, head
        self.input_shape = tuple(input_shape)
        self.norm_bounds = dict(norm_bounds)
        self.num_classes, self.num_features, self.source = num_classes, num_features, source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def _factor(self, name: str, m: nn.Module) -> float | None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if name not in self.norm_bounds:
                return None
            return _norm_bound(m, *self.norm_bounds[name])
        if isinstance(m, nn.MaxPool2d):
            # disjoint windows (kernel <= stride, no dilation): the max of each window is 1-Lipschitz
            k, s = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
            return 1.0 if all(a <= b for a, b in zip(k, s)) and _pair(m.dilation) == (1, 1) else None
        if isinstance(m, nn.LeakyReLU):
            return 1.0 if abs(m.negative_slope) <= 1 else None
        if isinstance(m, ONE_LIPSCHITZ):
            return 1.0
        bound = getattr(m, "lipschitz_upper_bound", None)
        return None if bound is None else bound()

    @torch.no_grad()
    def lipschitz_factors(self) -> list[tuple[str, float | None]]:
        """``(name, bound)`` of every child of ``features``, in order, then ``('head', bound)``: each a
        certified L2 Lipschitz bound recomputed from the exported tensors, or ``None``."""
        out = [(name, self._factor(name, m)) for name, m in self.features.named_children()]
        return out + [("head", self._factor("head", self.head))]

    def feature_lipschitz_upper_bound(self) -> float | None:
        """Certified L2 bound of ``x -> features(x)``: the product of the factors, or ``None``."""
        factors = [f for name, f in self.lipschitz_factors() if name != "head"]
        return None if any(f is None for f in factors) else math.prod(factors)

    def lipschitz_upper_bound(self) -> float | None:
        """Certified L2 bound of ``x -> forward(x)`` (pixel space), recomputed from the exported weights;
        ``None`` if some module has no certified bound."""
        factors = self.lipschitz_factors()
        if any(f is None for _, f in factors):
            return None
        return math.prod(f for name, f in factors if name != "head") * factors[-1][1]

    def extra_repr(self) -> str:
        return f"source={self.source!r}, input_shape={self.input_shape}"


PLAIN_MODULES = (PlainNet, Normalize, Scale, MeanPool, GradientStep, ResidualStep, SymplecticEulerStep,
                 VolumeShearStep, MassExchangeStep)


# -- converters -------------------------------------------------------------------------------------
def _new(cls: type[nn.Module], *args: Any, like: torch.Tensor, **kwargs: Any) -> nn.Module:
    """An uninitialised module on ``like``'s device and dtype (no RNG draw: the weights are set next)."""
    return torch.nn.utils.skip_init(cls, *args, device=like.device, dtype=like.dtype, **kwargs)


def _set(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    module.weight = nn.Parameter(_clone(weight))
    if bias is not None:
        module.bias = nn.Parameter(_clone(bias))
    return module


def _plain_linear(weight: torch.Tensor, bias: torch.Tensor | None, padding_mode: str = "zeros") -> nn.Module:
    """``nn.Linear`` (2-D weight) or 'same' ``nn.Conv2d`` (4-D, odd square kernel) holding ``weight``."""
    if weight.dim() == 2:
        m = _new(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None, like=weight)
    else:
        k = weight.shape[-1]
        m = _new(nn.Conv2d, weight.shape[1], weight.shape[0], k, padding=k // 2, bias=bias is not None,
                 padding_mode=padding_mode, like=weight)
    return _set(m, weight, bias)


def _plain_map(cmap: ConstrainedLinearMap, weight: torch.Tensor | None = None) -> nn.Module:
    """A constrained map with its eval-mode weight (``weight``, else ``cmap.weight``)."""
    w = cmap.weight if weight is None else weight
    return _plain_linear(w, cmap.bias, cmap.padding_mode if cmap.is_conv else "zeros")


def _cert(cmap: ConstrainedLinearMap) -> tuple[int | None, str]:
    return (cmap.input_size if cmap.is_conv else None), cmap.method


def _act_module(fn: Callable) -> nn.Module:
    for name, f in _ACTIVATIONS.items():
        if f is fn:
            return _ACT_MODULES[name]()
    raise TypeError(f"cannot export the activation {fn!r}: only the named ones ({sorted(_ACTIVATIONS)}) "
                    "have a torch.nn equivalent")


def _leaky(slope: float) -> nn.Module:
    return nn.ReLU() if slope == 0 else nn.LeakyReLU(slope)


class _Builder:
    """Collects ``(name, module)`` pairs and the certified bare convs/linears of a PlainNet."""

    def __init__(self) -> None:
        self.layers: list[tuple[str, nn.Module]] = []
        self.norm_bounds: dict[str, tuple[int | None, str]] = {}

    def add(self, name: str, module: nn.Module, cert: tuple[int | None, str] | None = None) -> None:
        name = name.replace(".", "_")
        if any(n == name for n, _ in self.layers):
            raise RuntimeError(f"duplicate layer name {name!r} in the export")
        self.layers.append((name, module))
        if cert is not None:
            self.norm_bounds[name] = cert

    def step(self, name: str, step: nn.Module) -> None:
        """A gradient-flow step or switching pair, as its plain sub-steps (with the step sizes that run)."""
        if isinstance(step, ContractiveStep):
            p = step.plan()
            self.add(name, GradientStep(_plain_map(step.A, p["A"]), _leaky(step.negative_slope), p["h"], -1.0,
                                        input_size=_cert(step.A)[0], method=step.A.method))
        elif isinstance(step, SwitchingPair):
            # one module per map, shared by the sub-steps that use it (the pair runs the same A, W each time)
            p = step.plan()
            size, method = _cert(step.A)
            op_a, slope = _plain_map(step.A, p["A"]), step.negative_slope
            if step.mode == "prescribed":
                op_w = _plain_map(step.W, p["W"])
                for i in range(step.substeps):
                    self.add(f"{name}.sub{i}_expand", ResidualStep(op_w, nn.LeakyReLU(slope), p["coef_e"],
                                                                   input_size=_cert(step.W)[0], method=step.W.method))
                    self.add(f"{name}.sub{i}_contract", GradientStep(op_a, nn.LeakyReLU(slope), p["hc"], -1.0,
                                                                     input_size=size, method=method))
            else:
                for i in range(2):
                    self.add(f"{name}.sub{i}_contract", GradientStep(op_a, nn.LeakyReLU(slope), p["hc"], -1.0,
                                                                     input_size=size, method=method))
                self.add(f"{name}.expand", GradientStep(op_a, nn.ReLU(), p["he"], 1.0, input_size=size, method=method))
        else:
            raise TypeError(f"cannot export {type(step).__name__} ({name}): not a known gradient-flow step")

    def sequential(self) -> nn.Sequential:
        return nn.Sequential(OrderedDict(self.layers))


def _head(model: nn.Module, b: _Builder) -> nn.Module:
    head = model.head
    if isinstance(head, nn.Identity):
        return nn.Identity()
    if isinstance(head, ConstrainedLinearMap):
        b.norm_bounds["head"] = _cert(head)
        return _plain_map(head)
    if isinstance(head, nn.Linear):
        return copy.deepcopy(head)
    raise TypeError(f"cannot export the head {type(head).__name__}")


def _pool(model: nn.Module, b: _Builder) -> None:
    pool = model.global_pool
    if pool == "flatten":
        b.add("flatten", nn.Flatten(1))
    elif pool == "avg":
        b.add("pool", MeanPool())
    elif pool == "max":
        b.add("pool", nn.AdaptiveMaxPool2d(1))
        b.add("flatten", nn.Flatten(1))
    elif pool != "":
        raise TypeError(f"cannot export global_pool={pool!r}")


def _lipflow(model: LipFlowNet, b: _Builder) -> None:
    b.add("normalize", Normalize(model.norm_mean))
    for i, stage in enumerate(model.stages):
        b.add(f"stages.{i}.unshuffle", nn.PixelUnshuffle(2))
        b.add(f"stages.{i}.lift", _plain_map(stage.lift), _cert(stage.lift))
        for j, s in enumerate(stage.steps):
            b.step(f"stages.{i}.steps.{j}", s)
    if model.dense_lift is not None:
        b.add("flatten", nn.Flatten(1))
        b.add("dense_lift", _plain_map(model.dense_lift), _cert(model.dense_lift))
        for j, s in enumerate(model.dense_steps):
            b.step(f"dense_steps.{j}", s)


def _lipnet(model: LipNet, b: _Builder) -> None:
    b.add("normalize", Normalize(model.norm_mean))
    for i, block in enumerate(model.blocks):
        b.add(f"blocks.{i}.lift", _plain_map(block.lift), _cert(block.lift))
        b.add(f"blocks.{i}.lift_act", nn.ReLU())
        for j, s in enumerate(block.steps):
            b.step(f"blocks.{i}.steps.{j}", s)
        b.add(f"blocks.{i}.pool", copy.deepcopy(block.pool))
    _pool(model, b)


def _paper_block(name: str, blk: PaperBlock, b: _Builder) -> None:
    """Mirrors :meth:`PaperBlock.forward` op by op (the certificate mirrors its ``lipschitz_factors``:
    Gram-iteration norms on the block's input size)."""
    cert = (blk.input_hw, "gram")
    b.add(f"{name}.lift", _plain_linear(blk.lift.weight, None), cert)
    b.add(f"{name}.lift_scale", Scale(blk.rescalings[-1]))
    b.add(f"{name}.lift_act", nn.ReLU())
    h = blk.u.detach().abs()
    lrelu = blk.slope

    convs: dict[int, nn.Module] = {}

    def conv(k: int) -> nn.Module:  # one module per conv, shared by the sub-steps that run it
        if k not in convs:
            convs[k] = _plain_linear(blk.convs[k].weight, blk.convs[k].bias)
        return convs[k]

    if blk.variant == "ne":
        for k in range(blk.num_steps):
            b.add(f"{name}.step{k}", GradientStep(conv(k), nn.ReLU(), h[k], -1.0, input_size=blk.input_hw,
                                                  method="gram"))
    elif blk.variant == "switch_prescribed":
        r = blk.rescalings.detach()[:-1].clamp(0.0, 1.0)
        for p in range(blk.num_steps // 2):
            h_e, h_c = h[2 * p] / blk.substeps, h[2 * p + 1] / blk.substeps
            for s in range(blk.substeps):
                b.add(f"{name}.pair{p}.sub{s}_expand", ResidualStep(conv(2 * p), nn.LeakyReLU(lrelu), h_e * r[p],
                                                                    input_size=blk.input_hw, method="gram"))
                b.add(f"{name}.pair{p}.sub{s}_contract", GradientStep(conv(2 * p + 1), nn.LeakyReLU(lrelu), h_c,
                                                                      -1.0, input_size=blk.input_hw, method="gram"))
    elif blk.variant == "switch_flexible":
        for p in range(blk.num_steps // 2):
            h_c, h_e = h[2 * p] / blk.substeps, h[2 * p + 1]
            for s in range(blk.substeps):
                b.add(f"{name}.pair{p}.sub{s}_contract", GradientStep(conv(2 * p), nn.LeakyReLU(lrelu), h_c, -1.0,
                                                                      input_size=blk.input_hw, method="gram"))
            b.add(f"{name}.pair{p}.expand", GradientStep(conv(2 * p), nn.ReLU(), h_e, 1.0, input_size=blk.input_hw,
                                                         method="gram"))
    else:
        raise TypeError(f"cannot export the paper variant {blk.variant!r}")
    b.add(f"{name}.pool", copy.deepcopy(blk.pool))


def _lipnet_paper(model: LipNetPaper, b: _Builder) -> None:
    b.add("normalize", Normalize(model.mean, model.std))
    for i, blk in enumerate(model.blocks):
        _paper_block(f"blocks.{i}", blk, b)
    _pool(model, b)
    if isinstance(model.head, nn.Linear):
        b.norm_bounds["head"] = (None, "gram")


def _structure_block(name: str, blk: nn.Module, b: _Builder) -> None:
    if isinstance(blk, HamiltonianBlock):
        op_p, op_q = _plain_linear(blk.weight_p, blk.bias_p), _plain_linear(blk.weight_q, blk.bias_q)
        b.add(name, SymplecticEulerStep(op_p, op_q, _act_module(blk.act), blk.step))
    elif isinstance(blk, VolumePreservingBlock):
        op_v, op_x = _plain_linear(blk.weight_v, blk.bias_v), _plain_linear(blk.weight_x, blk.bias_x)
        b.add(name, VolumeShearStep(op_v, op_x, _act_module(blk.act), blk.step))
    else:
        raise TypeError(f"cannot export {type(blk).__name__} ({name})")


def _structured(model: StructuredStageNet, b: _Builder) -> None:
    b.add("normalize", Normalize(model.mean, model.std))
    for i, stage in enumerate(model.stages):
        b.add(f"stages.{i}.unshuffle", nn.PixelUnshuffle(2))
        lift = nn.Conv2d(stage.lift.in_channels, stage.lift.out_channels, 1, bias=False)
        lift.weight = nn.Parameter(stage.lift.weight.detach().clone())
        b.add(f"stages.{i}.lift", lift)
        b.add(f"stages.{i}.norm", copy.deepcopy(stage.norm))
        for j, blk in enumerate(stage.blocks()):
            _structure_block(f"stages.{i}.block{j}", blk, b)
    _pool(model, b)


def _massnet(model: MassNet, b: _Builder) -> None:
    like = next(model.parameters())
    for i, layer in enumerate(model.layers):
        name = f"layers.{i}"
        if isinstance(layer, SumPreservingLinear):
            b.add(name, _plain_linear(layer.matrix(like.dtype, like.device), None))
        elif isinstance(layer, MassPreservingBlock):
            b.add(name, MassExchangeStep(copy.deepcopy(layer.fc1), copy.deepcopy(layer.fc2), _act_module(layer.act),
                                         _act_module(layer.out_act), layer._rows, layer._cols, layer.step))
        else:
            raise TypeError(f"cannot export {type(layer).__name__} ({name})")


# (class, converter): the first match wins, so subclasses come before their bases
_CONVERTERS: list[tuple[type, Callable[[Any, _Builder], None]]] = [
    (LipFlowNet, _lipflow), (LipNet, _lipnet), (LipNetPaper, _lipnet_paper), (StructuredStageNet, _structured),
    (MassNet, _massnet),
]


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    if isinstance(model, MassNet):
        return (model.in_features,)
    if model.img_size is None:
        raise ValueError(f"{type(model).__name__} has no fixed img_size: cannot export a fixed input shape")
    return (model.in_chans, model.img_size, model.img_size)


def _probe(model: nn.Module, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((2,) + shape, generator=g, dtype=torch.float64)
    if isinstance(model, MassNet):
        x = x / x.sum(dim=1, keepdim=True)  # states on the simplex, as MassNet expects
    return x.to(device=like.device, dtype=like.dtype)


def export_plain(model: nn.Module, *, check: bool = True) -> PlainNet:
    """The plain export of a zoo model (any registered family): a :class:`PlainNet` of ``torch.nn``
    built-ins and the wrappers of this module, holding copies of the exact eval-mode weights, step sizes and
    buffers, on the model's device and dtype, in eval mode. See the module docstring for what it guarantees.

    ``check``: run the model and the export on a random probe batch (2 samples in ``[0, 1]``) and raise
    ``RuntimeError`` if the outputs differ by more than ``8 eps (1 + max|output|)``. Raises ``TypeError`` for a
    model or layer this module does not know how to export.
    """
    converter = next((fn for cls, fn in _CONVERTERS if isinstance(model, cls)), None)
    if converter is None:
        raise TypeError(f"cannot export {type(model).__name__}: export_plain knows "
                        f"{', '.join(cls.__name__ for cls, _ in _CONVERTERS)}")
    src = copy.deepcopy(model).eval() if model.training else model
    like = next(src.parameters())
    b = _Builder()
    with torch.no_grad():
        converter(src, b)
        head = _head(src, b) if hasattr(src, "head") else nn.Identity()
    cfg = getattr(src, "pretrained_cfg", None) or {}
    plain = PlainNet(b.sequential(), head, input_shape=_input_shape(src), norm_bounds=b.norm_bounds,
                     num_classes=src.num_classes, num_features=getattr(src, "num_features", None),
                     source=str(cfg.get("architecture") or type(src).__name__)).eval()
    if check:
        x = _probe(src, plain.input_shape, like)
        with torch.no_grad():
            want, got = src(x), plain(x)
        tol = 8 * torch.finfo(want.dtype).eps * (1 + float(want.abs().max()))
        diff = float((want - got).abs().max())
        if not diff <= tol:
            raise RuntimeError(f"the plain export of {plain.source} differs from the model by {diff:.3g} "
                               f"(> {tol:.3g}) on a probe batch: a layer was not exported faithfully")
    return plain


# -- ONNX ---------------------------------------------------------------------------------------
def export_onnx(model: nn.Module, path: str | os.PathLike, *, plain: bool = True, opset: int = DEFAULT_OPSET,
                dynamo: bool = False, check: bool = True) -> nn.Module:
    """Write ``model`` as an ONNX file at ``path`` (atomically: a reader sees the old file or the new one) and
    return the module that was exported.

    ``plain=True`` (default) exports :func:`export_plain` of the model (the only way for constrained models,
    whose eval-mode weights come from an eigensolver); ``plain=False`` exports the module as it is. The
    graph takes ``input`` of shape ``[batch, *input_shape]`` (dynamic batch) in the model's dtype and returns
    ``output`` (logits, or MassNet's states). ``dynamo=False`` uses torch's TorchScript exporter (needs only
    the ``onnx`` package); ``dynamo=True`` the ``torch.export``-based one (needs ``onnxscript``, opset >= 18).
    The written file passes ``onnx.checker.check_model``. Install with ``pip install "dsnet_zoo[onnx]"``
    (``onnxruntime`` runs the result). ``check`` is passed to :func:`export_plain`.
    """
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('export_onnx needs the onnx package: pip install "dsnet_zoo[onnx]"') from e
    module = export_plain(model, check=check) if plain else model
    shape = module.input_shape if isinstance(module, PlainNet) else _input_shape(module)
    like = next(module.parameters())
    x = _probe(module, shape, like)
    names = dict(input_names=["input"], output_names=["output"], opset_version=opset)
    with torch.no_grad():
        if dynamo:
            program = torch.onnx.export(module, (x,), None, dynamo=True, verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
            data = program.model_proto.SerializeToString()
        else:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                # torch >= 2.9 marks the TorchScript exporter deprecated; it is the one that needs no onnxscript
                warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export",
                                        category=DeprecationWarning)
                warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
                # the circular adjoint flips its kernel (a Slice with step -1), which this exporter does not
                # fold: the flip stays in the graph, on a weight-sized tensor
                warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1", category=UserWarning)
                torch.onnx.export(module, (x,), buf, dynamo=False, do_constant_folding=True,
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **names)
            data = buf.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    atomic_write_bytes(path, data)
    return module
