"""LipFlowNet: the zoo's certified CIFAR flagship, gradient-flow steps shaped for a CPU budget.

Layout (``conv_stages=((32, 2), (64, 2))``, ``dense_width=512``, ``dense_depth=2``, 32x32 inputs):

1. mean subtraction (a translation) and ``pixel_unshuffle(2)``: ``3 x 32 x 32 -> 12 x 16 x 16``;
2. per conv stage: a 1-Lipschitz lift (:class:`~dsnet_zoo.layers.LipConv2d`, 3x3 in the first stage,
   1x1 after a further ``pixel_unshuffle(2)`` in the later ones) and ``depth`` conv gradient-flow steps
   ``x <- x - h A^T relu(A x + b)`` (:class:`~dsnet_zoo.layers.ContractiveStep`);
3. flatten, a 1-Lipschitz dense lift (:class:`~dsnet_zoo.layers.LipLinear`) to ``dense_width``, and
   ``dense_depth`` dense gradient-flow steps;
4. a spectrally normalised linear head.

Why this shape: small 3x3 convs at 16x16 and 8x8 and a wide 1-Lipschitz MLP reach the certified
accuracy of conv-heavy nets for a fraction of the FLOPs; pixel unshuffle is an invertible, norm-preserving
downsampling (a permutation of coordinates), unlike average pooling, which divides the norm of
high-frequency perturbations by up to 2 per 2x2 window and so wastes logit margin.

Guarantee: every piece is 1-Lipschitz in L2 (translation and pixel unshuffle are isometries; lifts and
head have certified operator norm ``<= 1``; each step is non-expansive because ``h ||A||^2 <= 2``), so
``lipschitz_upper_bound()``, the product of the certified per-layer bounds of the exact weights that run
(eval mode), is ``<= 1``: an L2 perturbation of size ``eps`` in pixel space moves the logits by at most
``eps`` and each logit difference by at most ``sqrt(2) eps``. During training the maps are normalised by
a warm-started power estimate corrected every ``cert_every`` steps by the certified bound (the certified
CE loss therefore takes ``lipschitz_by_construction = 1`` instead of recomputing the bound every step);
the certificate is always recomputed from the exact weights in eval mode.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.gradient_flow import ContractiveStep
from ..layers.caching import clear_caches
from ..layers.constrained_linear import LipConv2d, LipLinear
from ..registry import register_model
from ._base import ZooClassifier
from ._builder import build_model
from .lipnet import CIFAR10_MEAN, CIFAR100_MEAN

__all__ = ["LipFlowNet"]


class _ConvStage(nn.Module):
    """``[pixel_unshuffle(2)] -> lift -> depth x ContractiveStep`` on ``size x size`` maps."""

    def __init__(self, in_chans: int, width: int, depth: int, size: int, kernel_size: int, hidden: int | None,
                 cert_every: int) -> None:
        super().__init__()
        self.input_shape = (in_chans, size, size)
        self.lift = LipConv2d(in_chans, width, kernel_size, input_size=size, cert_every=cert_every)
        self.steps = nn.ModuleList(
            ContractiveStep(width, 3, hidden=hidden, input_size=size, train_normalizer="power",
                            cert_every=cert_every) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lift(x)
        for s in self.steps:
            x = s(x)
        return x


class LipFlowNet(ZooClassifier):
    """Certified 1-Lipschitz classifier of conv and dense gradient-flow steps (see the module doc).

    Inputs ``[N, in_chans, img_size, img_size]`` in ``[0, 1]``. ``conv_stages``: ``(width, depth)`` per
    stage, the first at ``img_size / 2``, each later one at half the previous side. ``conv_hidden``:
    channels of ``A`` in the conv steps as a multiple of the width (1 = square). ``dense_width``,
    ``dense_depth``, ``dense_hidden``: the MLP part. ``cert_every``: certified refresh period of the
    training-time normaliser (no effect on the eval-mode certificate).

    ``forward_features`` returns the dense features ``[N, dense_width]`` (nothing left to pool: timm
    counts such models as non-standard, like its vision transformers). Features (``feature_info``): the
    output of every conv step (or of a stage's lift if it has no step), at reductions 2, 4, ...
    """

    lipschitz_by_construction = 1.0
    first_conv = "stages.0.lift"
    global_pool = ""
    pool_types = ("",)
    features_are_maps = False
    grad_checkpointing_unsupported = (
        "in training mode every constrained map advances its power-iteration normaliser (state kept in "
        "buffers) on each call, so recomputing a step in the backward pass would differentiate another map")

    def __init__(self, num_classes: int = 10, *, in_chans: int = 3, img_size: int = 32,
                 conv_stages: Sequence[Sequence[int]] = ((32, 2), (64, 2)), conv_hidden: float = 1.0,
                 dense_width: int = 512, dense_depth: int = 2, dense_hidden: int | None = None,
                 norm_mean: Sequence[float] = CIFAR10_MEAN, cert_every: int = 50) -> None:
        super().__init__()
        if len(norm_mean) != in_chans:
            raise ValueError(f"norm_mean needs {in_chans} entries, got {tuple(norm_mean)}")
        if not conv_stages:
            raise ValueError("conv_stages needs at least one (width, depth) stage")
        if img_size % 2 ** len(conv_stages):
            raise ValueError(f"img_size {img_size} must be divisible by 2^{len(conv_stages)} "
                             "(one pixel unshuffle per conv stage)")
        self.in_chans, self.img_size = in_chans, img_size
        self.conv_stages = tuple((int(w), int(d)) for w, d in conv_stages)
        self.register_buffer("norm_mean", torch.tensor(tuple(norm_mean), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        stages, c, n = [], in_chans, img_size
        for i, (w, d) in enumerate(self.conv_stages):
            c, n = c * 4, n // 2
            hidden = max(1, int(round(w * conv_hidden)))
            stages.append(_ConvStage(c, w, d, n, 3 if i == 0 else 1, hidden, cert_every))
            c = w
        self.stages = nn.ModuleList(stages)
        for i, (w, d) in enumerate(self.conv_stages):
            names = [f"stages.{i}.steps.{j}" for j in range(d)] or [f"stages.{i}.lift"]
            self.feature_info += [dict(num_chs=w, reduction=2 ** (i + 1), module=m) for m in names]
        self.flat_features = c * n * n
        self.dense_lift = LipLinear(self.flat_features, dense_width, train_normalizer="power", cert_every=cert_every)
        self.dense_steps = nn.ModuleList(
            ContractiveStep(dense_width, None, hidden=dense_hidden, train_normalizer="power", cert_every=cert_every)
            for _ in range(dense_depth))
        self.num_features = dense_width
        self.cert_every = cert_every
        self.num_classes = num_classes
        self.head = self._make_head(num_classes) if num_classes > 0 else nn.Identity()

    def _make_head(self, num_classes: int) -> nn.Module:
        return LipLinear(self.num_features, num_classes, train_normalizer="power", cert_every=self.cert_every)

    def _prologue(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.norm_mean.to(x.dtype)

    def _tap_units(self) -> list:
        # a stage is pixel_unshuffle -> lift -> steps (what _ConvStage.forward runs): the first unit of a
        # stage runs the unshuffle and the lift with its first step, so that every unit ends at a feature
        units: list = []
        for stage in self.stages:
            if len(stage.steps) == 0:
                units.append(lambda x, st=stage: st.lift(F.pixel_unshuffle(x, 2)))
                continue
            units.append(lambda x, st=stage: st.steps[0](st.lift(F.pixel_unshuffle(x, 2))))
            units.extend(stage.steps[1:])
        return units

    def _epilogue(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense_lift is None:  # pruned to a conv feature: forward_features ends there
            return x
        x = self.dense_lift(torch.flatten(x, 1))
        for s in self.dense_steps:
            x = s(x)
        return x

    def _prune_after(self, index: int, prune_tail: bool) -> None:
        units = 0
        for i, stage in enumerate(self.stages):
            n = max(len(stage.steps), 1)
            if index < units + n:
                stage.steps = stage.steps[:index - units + 1]
                self.stages = self.stages[:i + 1]
                break
            units += n
        if prune_tail:
            self.dense_lift = None
            self.dense_steps = nn.ModuleList()

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise learning rates): the first lift, each conv stage, the dense
        part; the head comes last."""
        return dict(stem=r"^stages\.0\.lift", blocks=[(r"^stages\.(\d+)", None)], dense=r"^dense_")

    def clear_cache(self) -> None:
        """Drop the cached eval-mode weights (needed only after edits through ``param.data``)."""
        clear_caches(self)

    def certified_layers(self) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
        """``(name, layer, input_shape)`` of every layer with a certified bound, in order, head included."""
        out: list[tuple[str, nn.Module, tuple[int, ...]]] = []
        for i, st in enumerate(self.stages):
            w, n = st.lift.out_features, st.input_shape[-1]
            out.append((f"stages.{i}.lift", st.lift, st.input_shape))
            out += [(f"stages.{i}.steps.{j}", s, (w, n, n)) for j, s in enumerate(st.steps)]
        out.append(("dense_lift", self.dense_lift, (self.flat_features,)))
        out += [(f"dense_steps.{j}", s, (self.num_features,)) for j, s in enumerate(self.dense_steps)]
        if isinstance(self.head, LipLinear):
            out.append(("head", self.head, (self.num_features,)))
        return out

    def feature_lipschitz_upper_bound(self) -> float:
        """Certified L2 bound of ``x -> forward_features(x)`` in pixel space."""
        return math.prod(m.lipschitz_upper_bound() for name, m, _ in self.certified_layers() if name != "head")

    def lipschitz_upper_bound(self) -> float:
        """Certified L2 bound of ``x -> logits`` in pixel space: the product of the certified bounds of the
        exact weights (call it in eval mode; in training mode it certifies a fresh training-mode evaluation)."""
        head = self.head.lipschitz_upper_bound() if isinstance(self.head, LipLinear) else 1.0
        return self.feature_lipschitz_upper_bound() * head


def _lipflow(arch: str, pretrained: bool, **kwargs: Any) -> LipFlowNet:
    return build_model(LipFlowNet, arch, pretrained, **kwargs)


@register_model(family="lipnet", dataset="cifar10", num_classes=10)
def lipnet_cifar10(pretrained: bool = False, **kwargs: Any) -> LipFlowNet:
    """The zoo's certified CIFAR-10 flagship: pixel unshuffle, conv and dense gradient-flow steps,
    certified 1-Lipschitz in L2 (:class:`LipFlowNet`). The paper's layout is ``lipnet_conv_cifar10``."""
    return _lipflow("lipnet_cifar10", pretrained, **kwargs)


@register_model(family="lipnet", dataset="cifar100", num_classes=100)
def lipnet_cifar100(pretrained: bool = False, **kwargs: Any) -> LipFlowNet:
    """The zoo's certified CIFAR-100 flagship (:class:`LipFlowNet`, CIFAR-100 mean).
    The paper's layout is ``lipnet_conv_cifar100``."""
    kwargs.setdefault("norm_mean", CIFAR100_MEAN)
    return _lipflow("lipnet_cifar100", pretrained, **kwargs)
