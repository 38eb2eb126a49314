"""HamNet: CIFAR classifiers whose feature extractor is exactly invertible and built of symplectic blocks.

Layout (:class:`StructuredStageNet`, shared with :mod:`dsnet_zoo.models.vpnet`): per-channel input
standardisation; then per stage a 2x2 pixel unshuffle (space-to-depth: a permutation of the
values), an injective 1x1 lift to the stage's width (:class:`InjectiveLift`), a batch norm and
``depths[i]`` structured blocks (here :class:`~dsnet_zoo.layers.HamiltonianBlock` s, one symplectic-Euler
step each); the head is global average pooling and a linear layer. With widths (64, 256) the stages run at
16x16 and 8x8.

What is guaranteed, and where:

- every structured block is symplectic (``J^T Omega J = Omega``) for any weights and exactly invertible
  (``block.inverse``);
- the feature extractor (everything before the pooling) is exactly invertible in eval mode:
  :meth:`StructuredStageNet.inverse` maps ``forward_features(x)`` back to the images ``x`` (the
  standardisation, pixel unshuffle and blocks are bijections, the lift is injective and undone by its
  left inverse, and an eval-mode batch norm is an invertible per-channel affine map while its scale has
  no zero). In training mode batch norm uses the batch's statistics and is not undone;
- not structure-preserving: the standardisation, the lifts, the batch norms and the head. The model
  as a whole has no certified Lipschitz bound (``lipschitz_upper_bound()`` is ``None``).

The layout follows what makes small CIFAR nets train fast (airbench): few stages at low resolution,
width where the resolution is low, a batch norm per stage, no pooling inside the extractor (here
replaced by the invertible pixel unshuffle, so no information is lost).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers._common import NotScriptable
from ..layers.hamiltonian import HamiltonianBlock
from ..registry import register_model
from ._base import ZooClassifier
from ._builder import build_model

__all__ = ["StructuredStageNet", "InjectiveLift", "HamNet", "hamnet_cifar10", "hamnet_cifar100"]

CIFAR_MEAN = {10: (0.4914, 0.4822, 0.4465), 100: (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {10: (0.2470, 0.2435, 0.2616), 100: (0.2673, 0.2564, 0.2762)}


class InjectiveLift(NotScriptable, nn.Module):
    """A 1x1 convolution from ``in_channels`` to ``out_channels >= in_channels`` channels, initialised with
    orthonormal columns.

    Guarantee: injective while its weight has full column rank (the orthonormal initialisation has
    condition number 1); :meth:`inverse` applies the left inverse (least squares in the input's dtype), which
    recovers ``x`` from ``lift(x)`` exactly up to rounding. A rank-deficient weight raises there.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"an injective lift needs out_channels >= in_channels, got {in_channels} -> "
                             f"{out_channels}: widen the stage")
        self.in_channels, self.out_channels = in_channels, out_channels
        w = torch.empty(out_channels, in_channels)
        nn.init.orthogonal_(w)
        self.weight = nn.Parameter(w.view(out_channels, in_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w = self.weight.view(self.out_channels, self.in_channels).to(y.dtype)
        s = torch.linalg.svdvals(w)
        if s.min() <= s.max() * torch.finfo(y.dtype).eps * max(w.shape):
            raise ValueError(f"InjectiveLift {self.in_channels}->{self.out_channels}: the weight is rank-deficient "
                             f"(smallest singular value {s.min().item():.3g}), the lift cannot be undone")
        # least squares per pixel: x = argmin |W x - y|, exact when y is in the range of W
        yy = y.movedim(1, -1).reshape(-1, self.out_channels)
        x = torch.linalg.lstsq(w, yy.T).solution.T
        return x.reshape(*y.movedim(1, -1).shape[:-1], self.in_channels).movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


def _bn_inverse(bn: nn.BatchNorm2d, y: torch.Tensor) -> torch.Tensor:
    """The eval-mode batch norm undone: ``x = (y - beta) / gamma * sqrt(var + eps) + mean``."""
    if bn.training:
        raise RuntimeError("inverse() needs eval mode: a training-mode batch norm uses the batch's statistics")
    gamma = bn.weight.to(y.dtype)
    if (gamma == 0).any():
        raise ValueError("a batch norm scale is exactly 0: that channel cannot be recovered")
    shape = (1, -1, 1, 1)
    scale = torch.sqrt(bn.running_var.to(y.dtype) + bn.eps) / gamma
    return (y - bn.bias.to(y.dtype).view(shape)) * scale.view(shape) + bn.running_mean.to(y.dtype).view(shape)


class _Stage(nn.Sequential):
    """Pixel unshuffle, injective lift, batch norm (the stage's entry), then structured blocks ``block0``,
    ``block1``, ... (see the module doc)."""

    def __init__(self, in_channels: int, width: int, depth: int, block_fn: Callable[[int], nn.Module]):
        super().__init__()
        self.add_module("unshuffle", nn.PixelUnshuffle(2))
        self.add_module("lift", InjectiveLift(4 * in_channels, width))
        self.add_module("norm", nn.BatchNorm2d(width))
        for i in range(depth):
            self.add_module(f"block{i}", block_fn(width))

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.lift(self.unshuffle(x)))

    def blocks(self) -> list[nn.Module]:
        return [m for name, m in self.named_children() if name.startswith("block")]

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for name, m in reversed(list(self.named_children())):
            if name == "unshuffle":
                y = F.pixel_shuffle(y, 2)
            elif name == "norm":
                y = _bn_inverse(m, y)
            else:
                y = m.inverse(y)
        return y


class _EnterAndRun:
    """A feature unit: a stage's entry followed by its first block (the other blocks are units by themselves)."""

    def __init__(self, stage: _Stage, block: nn.Module):
        self.stage, self.block = stage, block

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.stage.enter(x))


class StructuredStageNet(ZooClassifier):
    """Standardisation, stages of [pixel unshuffle, injective lift, batch norm, structured blocks],
    pooled linear head (see the module doc for what each part guarantees).

    Args:
        num_classes: classes of the linear head (``0``: identity head, features only).
        block_fn: ``block_fn(channels) -> nn.Module`` builds one structured block (with ``kind``,
            ``inverse`` and ``sample_input``).
        widths, depths: channels and number of blocks of each stage; stage ``i`` runs at resolution
            ``img_size / 2**(i+1)`` and needs ``widths[i] >= 4 * widths[i-1]`` (``4 * in_chans`` for the
            first), so that the lift after the unshuffle can be injective.
        mean, std: per-channel input standardisation applied inside the model (inputs in [0, 1]).
        img_size: side of the square images the model accepts (divisible by ``2**len(widths)``).
        global_pool: ``'avg'`` (global average pooling), ``'max'`` or ``''`` (none: unpooled maps, with
            ``num_classes=0``).

    Features (``feature_info``): the output of each structured block (stage ``i`` at reduction ``2**(i+1)``);
    :meth:`inverse` maps the last one, ``forward_features(x)``, back to the images.
    """

    first_conv = "stages.0.lift"
    pool_types = ("avg", "max", "")

    def __init__(self, num_classes: int, block_fn: Callable[[int], nn.Module], *, widths: Sequence[int],
                 depths: Sequence[int], in_chans: int = 3, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25), img_size: int = 32, global_pool: str = "avg"):
        super().__init__()
        if len(widths) != len(depths) or not widths:
            raise ValueError(f"widths and depths need the same non-zero length, got {widths} and {depths}")
        if any(d < 1 for d in depths):
            raise ValueError(f"every stage needs at least one block, got depths {depths}")
        if any(w % 2 for w in widths):
            raise ValueError(f"every width must be even (the state splits in two halves), got {widths}")
        prev = in_chans
        for i, w in enumerate(widths):
            if w < 4 * prev:
                raise ValueError(f"stage {i}: width {w} < 4 x {prev} channels after the 2x2 pixel unshuffle; the "
                                 f"lift could not be injective (use widths[{i}] >= {4 * prev})")
            prev = w
        if img_size % 2 ** len(widths):
            raise ValueError(f"img_size {img_size} is not divisible by 2**{len(widths)} (one 2x2 unshuffle per stage)")
        self.in_chans, self.img_size = in_chans, img_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        chans = [in_chans, *widths]
        self.stages = nn.Sequential(*[_Stage(chans[i], w, d, block_fn) for i, (w, d) in enumerate(zip(widths, depths))])
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"stages.{i}.block{j}")
                             for i, (w, d) in enumerate(zip(widths, depths)) for j in range(d)]
        self.num_features = widths[-1]
        self.num_classes = num_classes
        self._set_global_pool(global_pool, num_classes)
        self.head = self._make_head(num_classes) if num_classes > 0 else nn.Identity()

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes)

    def _prologue(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "max":
            return x.amax(dim=(2, 3))
        return super()._pool(x)

    def _tap_units(self) -> list:
        units: list = []
        for stage in self.stages:
            first, *rest = stage.blocks()
            units.append(_EnterAndRun(stage, first))
            units.extend(rest)
        return units

    def _prune_after(self, index: int, prune_tail: bool) -> None:
        where = [(i, j) for i, stage in enumerate(self.stages) for j in range(len(stage.blocks()))]
        last_stage, last_block = where[index]
        self.stages = self.stages[:last_stage + 1]
        stage = self.stages[last_stage]
        for j in range(last_block + 1, len(stage.blocks())):
            delattr(stage, f"block{j}")

    @torch.no_grad()
    def inverse(self, features: torch.Tensor) -> torch.Tensor:
        """The images whose :meth:`forward_features` are ``features`` (eval mode; exact up to rounding:
        use float64 for errors near 1e-12). Raises in training mode, where batch norm is not invertible."""
        if self.training:
            raise RuntimeError(f"{type(self).__name__}.inverse() needs eval mode (call model.eval()): in training "
                               "mode batch norm uses the batch's statistics and cannot be undone")
        if features.dim() != 4 or features.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}.inverse() takes the output of forward_features, "
                             f"[N, {self.num_features}, H, W], got {tuple(features.shape)}")
        y = features
        for stage in reversed(list(self.stages)):
            y = stage.inverse(y)
        return y * self.std.to(y.dtype) + self.mean.to(y.dtype)

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise learning rates): the first stage's lift, then each stage
        (each layer of a stage unless ``coarse``); the head comes last."""
        fine = [(r"^stages\.(\d+)\.(?:lift|norm)", (0,)), (r"^stages\.(\d+)\.block(\d+)", None)]
        return dict(stem=r"^stages\.0\.lift", blocks=r"^stages\.(\d+)" if coarse else fine)

    def structure_blocks(self) -> list[tuple[str, nn.Module, str]]:
        """``(name, block, kind)`` of every structured block, kind in {'symplectic', 'volume', ...}."""
        return [(name, m, m.kind) for name, m in self.named_modules()
                if getattr(m, "kind", None) in ("symplectic", "volume", "mass", "sphere")]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class HamNet(StructuredStageNet):
    """:class:`StructuredStageNet` with :class:`~dsnet_zoo.layers.HamiltonianBlock` s (3x3 convs,
    ``hidden = hidden_ratio * width``, learnable step initialised to ``step``)."""

    def __init__(self, num_classes: int, *, widths: Sequence[int] = (64, 256), depths: Sequence[int] = (2, 4),
                 hidden_ratio: float = 0.5, act: str = "silu", step: float = 0.2, **kwargs):
        def block_fn(w: int) -> nn.Module:
            return HamiltonianBlock(w, hidden=max(1, int(round(hidden_ratio * w))), act=act, step=step)

        super().__init__(num_classes, block_fn, widths=widths, depths=depths, **kwargs)


def _cifar_stats(n: int) -> dict:
    return {"mean": CIFAR_MEAN[n], "std": CIFAR_STD[n]}


@register_model(family="hamnet", dataset="cifar10", num_classes=10)
def hamnet_cifar10(pretrained: bool = False, **kwargs) -> HamNet:
    """HamNet for CIFAR-10: invertible, 2 + 4 symplectic conv blocks at widths 64 (16x16) and 256 (8x8), 1.3 M params."""
    return build_model(HamNet, "hamnet_cifar10", pretrained, **{**_cifar_stats(10), **kwargs})


@register_model(family="hamnet", dataset="cifar100", num_classes=100)
def hamnet_cifar100(pretrained: bool = False, **kwargs) -> HamNet:
    """HamNet for CIFAR-100: invertible, 2 + 4 symplectic conv blocks at widths 64 (16x16) and 256 (8x8), 1.3 M params."""
    return build_model(HamNet, "hamnet_cifar100", pretrained, **{**_cifar_stats(100), **kwargs})

