"""HamNet: CIFAR classifiers whose body is a stack of symplectic (Hamiltonian) blocks.

Layout (normalisation-free): per-channel input standardisation, a 3x3 stem conv to ``widths[0]``
channels, then for each stage an ordinary stride-2 3x3 conv (between stages) and ``depths[i]``
:class:`~dsnet_zoo.layers.HamiltonianBlock` s with a learnable step each; the head is global average
pooling and a linear layer. Every block is exactly invertible (``block.inverse``) and symplectic; the
stem, the downsampling convs and the head are not structured, so the model as a whole has no
certified Lipschitz bound (``lipschitz_upper_bound()`` is ``None``).

:class:`StructuredStageNet` is shared with :mod:`dsnet_zoo.models.vpnet` (only the block differs).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from ..layers.hamiltonian import HamiltonianBlock
from ..registry import register_model
from ._base import ZooClassifier
from ._builder import build_model

__all__ = ["StructuredStageNet", "HamNet", "hamnet_cifar10", "hamnet_cifar100"]

CIFAR_MEAN = {10: (0.4914, 0.4822, 0.4465), 100: (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {10: (0.2470, 0.2435, 0.2616), 100: (0.2673, 0.2564, 0.2762)}


class StructuredStageNet(ZooClassifier):
    """Stem conv, stages of structured blocks joined by stride-2 convs, pooled linear head.

    Args:
        num_classes: classes of the linear head (``0``: identity head, features only).
        block_fn: ``block_fn(channels) -> nn.Module`` builds one structured block (with ``kind``,
            ``inverse`` and ``sample_input``).
        widths, depths: channels and number of blocks of each stage.
        mean, std: per-channel input standardisation applied inside the model (inputs in [0, 1]).
        img_size: side of the square images the model accepts (the convolutions and the average pooling
            would run at any size; the check keeps CIFAR models from silently taking other images).
        global_pool: ``'avg'`` (global average pooling) or ``''`` (none: unpooled maps, with
            ``num_classes=0``).

    Features (``feature_info``): the output of each stage, at reductions 1, 2, 4, ...
    """

    first_conv = "stem"
    pool_types = ("avg", "")

    def __init__(self, num_classes: int, block_fn: Callable[[int], nn.Module], *, widths: Sequence[int],
                 depths: Sequence[int], in_chans: int = 3, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25), img_size: int = 32, global_pool: str = "avg"):
        super().__init__()
        if len(widths) != len(depths) or not widths:
            raise ValueError(f"widths and depths need the same non-zero length, got {widths} and {depths}")
        if any(w % 2 for w in widths):
            raise ValueError(f"every width must be even (the state splits in two halves), got {widths}")
        self.in_chans, self.img_size = in_chans, img_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.stem = nn.Conv2d(in_chans, widths[0], 3, padding=1)
        stages = []
        for i, (w, d) in enumerate(zip(widths, depths)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.Conv2d(widths[i - 1], w, 3, stride=2, padding=1))
            layers.extend(block_fn(w) for _ in range(d))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [dict(num_chs=w, reduction=2 ** i, module=f"stages.{i}") for i, w in enumerate(widths)]
        self.num_features = widths[-1]
        self.num_classes = num_classes
        self._set_global_pool(global_pool, num_classes)
        self.head = self._make_head(num_classes) if num_classes > 0 else nn.Identity()

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes)

    def _prologue(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem((x - self.mean) / self.std)

    def _tap_units(self) -> list[nn.Module]:
        return list(self.stages)

    def _prune_after(self, index: int, prune_tail: bool) -> None:
        self.stages = self.stages[:index + 1]

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise learning rates): the stem, then each stage (each layer of a
        stage unless ``coarse``); the head comes last."""
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.(\d+)", None)])

    def structure_blocks(self) -> list[tuple[str, nn.Module, str]]:
        """``(name, block, kind)`` of every structured block, kind in {'symplectic', 'volume', ...}."""
        return [(name, m, m.kind) for name, m in self.named_modules()
                if getattr(m, "kind", None) in ("symplectic", "volume", "mass", "sphere")]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class HamNet(StructuredStageNet):
    """:class:`StructuredStageNet` with :class:`~dsnet_zoo.layers.HamiltonianBlock` s (3x3 convs,
    ``hidden = hidden_ratio * width``, learnable step initialised to ``step``)."""

    def __init__(self, num_classes: int, *, widths: Sequence[int] = (64, 128, 256), depths: Sequence[int] = (2, 2, 2),
                 hidden_ratio: float = 1.0, act: str = "silu", step: float = 0.2, **kwargs):
        def block_fn(w: int) -> nn.Module:
            return HamiltonianBlock(w, hidden=max(1, int(round(hidden_ratio * w))), act=act, step=step)

        super().__init__(num_classes, block_fn, widths=widths, depths=depths, **kwargs)


def _cifar_stats(n: int) -> dict:
    return {"mean": CIFAR_MEAN[n], "std": CIFAR_STD[n]}


@register_model(family="hamnet", dataset="cifar10", num_classes=10)
def hamnet_cifar10(pretrained: bool = False, **kwargs) -> HamNet:
    """HamNet for CIFAR-10: symplectic conv blocks at widths 64/128/256, 2 blocks per stage (1.9 M params)."""
    return build_model(HamNet, "hamnet_cifar10", pretrained, **{**_cifar_stats(10), **kwargs})


@register_model(family="hamnet", dataset="cifar100", num_classes=100)
def hamnet_cifar100(pretrained: bool = False, **kwargs) -> HamNet:
    """HamNet for CIFAR-100: symplectic conv blocks at widths 64/128/256, 2 blocks per stage (1.9 M params)."""
    return build_model(HamNet, "hamnet_cifar100", pretrained, **{**_cifar_stats(100), **kwargs})

