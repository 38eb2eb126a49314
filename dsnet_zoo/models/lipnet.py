"""LipNet: the paper's certified-robust CIFAR architecture with every constraint enforced.

Layout (Celledoni et al. 2023, Sec. 5): three blocks of widths 32/64/128, each a lift (3x3 conv),
ReLU, four dynamical steps and a non-overlapping 2x2 max-pool; then flatten (128 x 4 x 4) and a
linear head. Differences from the released models, each needed for the certificate:

- the in-model normalisation subtracts the mean only (a translation, 1-Lipschitz); dividing by the
  std would multiply the pixel-space constant by ``1 / min(std)`` (about 5);
- the lift is a :class:`~dsnet_zoo.layers.LipConv2d` scaled by its certified norm, with no learned
  scalar after it (the paper's unconstrained rescaling reached 3.6-7.0);
- every dynamical conv is normalised by its certified norm and its step is parametrised inside the
  non-expansive range (``step='contractive'``), or the switching pair is guarded
  (``step='prescribed'`` / ``'flexible'``, circular padding for a certified smallest singular value);
- the head is :class:`~dsnet_zoo.layers.LipLinear` (``||W||_2 < 1``, or unit rows with ``head='rownorm'``).

Certificate: ``lipschitz_upper_bound()`` is the product of the certified per-layer bounds of the
exact weights that run (ReLU, max-pool over disjoint windows, flatten and mean subtraction are
1-Lipschitz), an L2 bound of ``x -> logits`` for ``x`` in pixel space; it is ``<= 1`` with the
spectral head.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers._common import NotScriptable
from ..layers.gradient_flow import ContractiveStep, SwitchingPair
from ..layers.caching import clear_caches
from ..layers.constrained_linear import LipConv2d, LipLinear
from ..registry import register_model
from ._base import SequentialBlocksMixin, ZooClassifier
from ._builder import build_model

__all__ = ["LipBlock", "LipNet", "CIFAR10_MEAN", "CIFAR100_MEAN"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
STEP_KINDS = ("contractive", "prescribed", "flexible")


class LipBlock(NotScriptable, nn.Module):
    """``lift -> ReLU -> dynamical steps -> MaxPool2d(2)``; ``input_shape`` is ``(C_in, n, n)``.

    ``lipschitz_upper_bound()`` = lift bound x product of the step bounds (certified).
    """

    def __init__(self, in_chans: int, width: int, input_size: int, depth: int = 4, step: str = "contractive",
                 step_kwargs: dict[str, Any] | None = None, method: str = "eig", cert_every: int = 10,
                 train_normalizer: str = "power") -> None:
        super().__init__()
        if step not in STEP_KINDS:
            raise ValueError(f"step must be one of {STEP_KINDS}, got {step!r}")
        if step != "contractive" and depth % 2:
            raise ValueError(f"switching steps come in pairs: depth must be even, got {depth}")
        if input_size % 2:
            raise ValueError(f"the 2x2 max-pool needs an even input size, got {input_size}")
        self.input_shape = (in_chans, input_size, input_size)
        common = dict(method=method, cert_every=cert_every, train_normalizer=train_normalizer)
        self.lift = LipConv2d(in_chans, width, 3, input_size=input_size, **common)
        kw = dict(step_kwargs or {}, **common)
        if step == "contractive":
            kw.setdefault("negative_slope", 0.0)
            steps = [ContractiveStep(width, 3, input_size=input_size, **kw) for _ in range(depth)]
        else:
            steps = [SwitchingPair(width, 3, mode=step, input_size=input_size, **kw) for _ in range(depth // 2)]
        self.steps = nn.ModuleList(steps)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.lift(x))
        for s in self.steps:
            x = s(x)
        return self.pool(x)

    def certified_layers(self) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
        """``(name, layer, input_shape)`` of every layer with a certified ``lipschitz_upper_bound()``."""
        c, n = self.lift.out_features, self.input_shape[-1]
        return [("lift", self.lift, self.input_shape)] + [
            (f"steps.{i}", s, (c, n, n)) for i, s in enumerate(self.steps)]

    def lipschitz_upper_bound(self) -> float:
        return math.prod(m.lipschitz_upper_bound() for _, m, _ in self.certified_layers())

    def sample_input(self, spatial: int | None = None, batch: int = 1, dtype: torch.dtype = torch.float64,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """A random input of this block's shape (its certificate is for side ``<= input_shape[-1]``)."""
        n = self.input_shape[-1] if spatial is None else spatial
        return torch.randn((batch, self.input_shape[0], n, n), dtype=dtype, generator=generator)


class LipNet(SequentialBlocksMixin, ZooClassifier):
    """Certified 1-Lipschitz classifier (see the module docstring). Inputs: ``[N, in_chans, img_size,
    img_size]`` in ``[0, 1]``.

    ``step``: ``'contractive'`` (default), ``'prescribed'`` or ``'flexible'`` switching pairs;
    ``head``: ``'spectral'`` or ``'rownorm'``; ``method``: ``'eig'`` or ``'gram'`` certified norms;
    ``cert_every`` / ``train_normalizer``: the training-time normaliser of every conv (see
    :class:`~dsnet_zoo.layers.constrained_linear.ConstrainedLinearMap`; they do not change the eval-mode
    certificate). ``step_kwargs`` go to every step (e.g. ``max_step``, ``negative_slope``, ``h_c``).
    ``global_pool``: ``'flatten'`` (the head reads the flattened last feature map) or ``''`` (unpooled
    maps, with ``num_classes=0``).

    Features (``feature_info``): the output of each block, at reductions 2, 4, 8.
    """

    first_conv = "blocks.0.lift"
    grad_checkpointing_unsupported = (
        "in training mode every constrained map advances its power-iteration normaliser (state kept in "
        "buffers) on each call, so recomputing a block in the backward pass would differentiate another map")

    def __init__(self, num_classes: int = 10, *, in_chans: int = 3, img_size: int = 32,
                 widths: tuple[int, ...] = (32, 64, 128), depth: int = 4, step: str = "contractive",
                 head: str = "spectral", norm_mean: tuple[float, ...] = CIFAR10_MEAN,
                 step_kwargs: dict[str, Any] | None = None, method: str = "eig", cert_every: int = 10,
                 train_normalizer: str = "power", global_pool: str = "flatten") -> None:
        super().__init__()
        if len(norm_mean) != in_chans:
            raise ValueError(f"norm_mean needs {in_chans} entries, got {norm_mean}")
        if img_size % 2 ** len(widths):
            raise ValueError(f"img_size {img_size} must be divisible by 2^{len(widths)} (one 2x2 pool per block)")
        self.in_chans, self.img_size, self.head_mode = in_chans, img_size, head
        self.widths, self.depth, self.step = tuple(widths), depth, step
        # mean subtraction only: a translation, so the pixel-space Lipschitz constant is unchanged
        self.register_buffer("norm_mean", torch.tensor(norm_mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        blocks, c, n = [], in_chans, img_size
        for w in widths:
            blocks.append(LipBlock(c, w, n, depth, step, step_kwargs, method, cert_every, train_normalizer))
            c, n = w, n // 2
        self.blocks = nn.ModuleList(blocks)
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"blocks.{i}")
                             for i, w in enumerate(widths)]
        self.num_features = c * n * n
        self.feature_shape = (c, n, n)
        self.num_classes = num_classes
        self._set_global_pool(global_pool, num_classes)
        self.head = self._make_head(num_classes) if num_classes > 0 else nn.Identity()

    def _make_head(self, num_classes: int) -> nn.Module:
        return LipLinear(self.num_features, num_classes, mode=self.head_mode)

    def _prologue(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.norm_mean.to(x.dtype)

    def clear_cache(self) -> None:
        """Drop the cached eval-mode weights (needed only after edits through ``param.data``)."""
        clear_caches(self)

    def dynamic_blocks(self) -> list[LipBlock]:
        """The blocks in order; each has ``input_shape``, ``lipschitz_upper_bound()`` and
        ``certified_layers()`` (lift and dynamical steps with their input shapes)."""
        return list(self.blocks)

    def certified_layers(self) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
        """``(name, layer, input_shape)`` of every certified layer, in order, head included."""
        out = [(f"blocks.{i}.{name}", m, shape) for i, b in enumerate(self.blocks)
               for name, m, shape in b.certified_layers()]
        if isinstance(self.head, LipLinear):
            out.append(("head", self.head, (self.num_features,)))
        return out

    def feature_lipschitz_upper_bound(self) -> float:
        """Certified L2 bound of ``x -> forward_head(forward_features(x), pre_logits=True)``."""
        return math.prod(b.lipschitz_upper_bound() for b in self.blocks)

    def lipschitz_upper_bound(self) -> float:
        """Certified L2 bound of ``x -> logits`` in pixel space (product of certified layer bounds).

        Call it in eval mode: it certifies the (cached) weights that run at inference. In training mode
        it certifies the weights of a fresh training-mode evaluation instead."""
        head = self.head.lipschitz_upper_bound() if isinstance(self.head, LipLinear) else 1.0
        return self.feature_lipschitz_upper_bound() * head


def _lipnet(arch: str, pretrained: bool, **kwargs: Any) -> LipNet:
    return build_model(LipNet, arch, pretrained, **kwargs)


@register_model(family="lipnet", dataset="cifar10", num_classes=10)
def lipnet_conv_cifar10(pretrained: bool = False, **kwargs: Any) -> LipNet:
    """The paper's layout, certified 1-Lipschitz (widths 32/64/128, four contractive steps per block),
    CIFAR-10. The zoo's flagship ``lipnet_cifar10`` is :class:`~dsnet_zoo.models.lipflow.LipFlowNet`."""
    return _lipnet("lipnet_conv_cifar10", pretrained, **kwargs)


@register_model(family="lipnet", dataset="cifar100", num_classes=100)
def lipnet_conv_cifar100(pretrained: bool = False, **kwargs: Any) -> LipNet:
    """The paper's layout, certified 1-Lipschitz (widths 32/64/128, four contractive steps per block),
    CIFAR-100."""
    kwargs.setdefault("norm_mean", CIFAR100_MEAN)
    return _lipnet("lipnet_conv_cifar100", pretrained, **kwargs)


@register_model(family="lipnet", dataset="cifar10", num_classes=10)
def lipnet_w2_cifar10(pretrained: bool = False, **kwargs: Any) -> LipNet:
    """Twice as wide LipNet (widths 64/128/256), certified 1-Lipschitz, CIFAR-10."""
    kwargs.setdefault("widths", (64, 128, 256))
    return _lipnet("lipnet_w2_cifar10", pretrained, **kwargs)


@register_model(family="lipnet", dataset="cifar10", num_classes=10)
def lipnet_switch_cifar10(pretrained: bool = False, **kwargs: Any) -> LipNet:
    """LipNet with the paper's prescribed switching pairs (guarded, circular padding), CIFAR-10."""
    kwargs.setdefault("step", "prescribed")
    return _lipnet("lipnet_switch_cifar10", pretrained, **kwargs)
