"""VPNet: CIFAR classifiers whose body is a stack of volume-preserving blocks.

Same layout as :mod:`dsnet_zoo.models.hamnet` (per stage: pixel unshuffle, injective lift, batch norm,
structured blocks; pooled linear head) with :class:`~dsnet_zoo.layers.VolumePreservingBlock` s: each
block has ``|det J| = 1`` for any weights and an exact ``inverse()``, and the feature extractor is exactly
invertible in eval mode (``model.inverse``). The lifts, batch norms and head are not volume-preserving.
Not certified: ``lipschitz_upper_bound()`` is ``None``.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..layers.volume import VolumePreservingBlock
from ..registry import register_model
from ._builder import build_model
from .hamnet import StructuredStageNet, _cifar_stats

__all__ = ["VPNet", "vpnet_cifar10", "vpnet_cifar100"]


class VPNet(StructuredStageNet):
    """:class:`StructuredStageNet` with 3x3-conv :class:`~dsnet_zoo.layers.VolumePreservingBlock` s,
    each with a learnable step initialised to ``step``."""

    def __init__(self, num_classes: int, *, widths: Sequence[int] = (64, 256), depths: Sequence[int] = (4, 6),
                 act: str = "silu", step: float = 0.2, **kwargs):
        def block_fn(w: int) -> nn.Module:
            return VolumePreservingBlock(w, act=act, step=step)

        super().__init__(num_classes, block_fn, widths=widths, depths=depths, **kwargs)


@register_model(family="vpnet", dataset="cifar10", num_classes=10)
def vpnet_cifar10(pretrained: bool = False, **kwargs) -> VPNet:
    """VPNet for CIFAR-10: invertible, 4 + 6 volume-preserving conv blocks at widths 64 (16x16) and 256 (8x8), 1.9 M params."""
    return build_model(VPNet, "vpnet_cifar10", pretrained, **{**_cifar_stats(10), **kwargs})


@register_model(family="vpnet", dataset="cifar100", num_classes=100)
def vpnet_cifar100(pretrained: bool = False, **kwargs) -> VPNet:
    """VPNet for CIFAR-100: invertible, 4 + 6 volume-preserving conv blocks at widths 64 (16x16) and 256 (8x8), 1.9 M params."""
    return build_model(VPNet, "vpnet_cifar100", pretrained, **{**_cifar_stats(100), **kwargs})
