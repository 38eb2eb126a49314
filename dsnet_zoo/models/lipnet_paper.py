"""The paper's CIFAR-10 networks, exactly as the authors ran them, for their released weights.

Celledoni, Murari, Owren, Schönlieb, Sherry, "Dynamical systems' based neural networks" (SIAM J.
Sci. Comput. 2023), repository ``davidemurari/StructuredNeuralNetworks`` at commit 8ad721a, folder
``Adversarial Robustness/CIFAR10/{Contractive,Switch prescribed,Switch flexible}``. This module is
our own code written from a reading of their ``network.py``, ``utils.py``, ``training.py`` and
``main.ipynb``; it reproduces their forward pass operation by operation (same order of floating-point
operations where it matters) so that their weights give their numbers.

Three variants, one architecture each (``LipNetPaper(variant=...)``):

- ``ne`` ("Contractive" folder): every step ``x <- x - |u_k| A_k^T relu(A_k x + b_k)``.
- ``switch_prescribed``: per pair of convs (E, C), ``S = 2`` times: an expansive step
  ``x <- x + (|u_2p| / S) * r_p * lrelu(E x + e)`` (no adjoint: not a gradient field), then a contractive
  step ``x <- x - (|u_2p+1| / S) C^T lrelu(C x + c)``; ``r_p = clamp(rescalings[p], 0, 1)``.
- ``switch_flexible``: per pair, ``S = 2`` contractive steps ``x <- x - (|u_2p| / S) C^T lrelu(C x + c)``
  then one expansive gradient step ``x <- x + |u_2p+1| C^T relu(C x + c)`` with the *same* conv C: the
  pair's second conv ``convs[2p+1]`` is never used (kept only because the released state dicts have it).

``lrelu`` is LeakyReLU(0.5). Each of the three blocks (widths 32, 64, 128) is
``lift -> 4 steps -> MaxPool2d(2)`` where ``lift(x) = relu(rescalings[-1] * L x)`` (3x3 conv, no bias);
then flatten (128 * 4 * 4) and one linear layer. Inputs are images in [0, 1]; the model normalises them
with the mean and std the authors' evaluation used (``norm_std`` below: the prescribed variant was
*evaluated* with std (0.247, 0.243, 0.261) although all three were *trained* with (0.2023, 0.1994, 0.2010)).

These models are **not** 1-Lipschitz: the convs are only pushed towards orthogonality by a penalty, the
lift scalars are unconstrained (3.6 to 7.0 in the released weights), step sizes are not tied to the
conv norms, the expansive steps expand, and the normalisation divides by std ~ 0.2.
:meth:`LipNetPaper.lipschitz_upper_bound` is a *provable* upper bound of the pixel-space L2 Lipschitz
constant of the exact computation (see :meth:`LipNetPaper.lipschitz_factors` for the per-layer factors).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hub import WeightsCfg
from ..hub.weights import PAPER_SOURCE
from ..layers._common import NotScriptable
from ..layers.functional import conv_op, gradient_step
from ..layers.gradient_flow import contractive_factor
from ..layers.norm_bounds import operator_norm_bound
from ..registry import register_model
from ._base import SequentialBlocksMixin, ZooClassifier
from ._builder import build_model

__all__ = [
    "LipNetPaper",
    "PAPER_VARIANTS",
    "PAPER_EPS_GRID",
    "PAPER_ATTACK_EPS",
    "PAPER_NORM_MEAN",
    "TRAIN_NORM_STD",
    "EVAL_STD_PRESCRIBED",
    "map_paper_state_dict",
    "conv_norm_upper_bound",
    "dense_norm_upper_bound",
    "lipnet_paper_ne_cifar10",
    "lipnet_paper_switch_prescribed_cifar10",
    "lipnet_paper_switch_flexible_cifar10",
]

PAPER_NORM_MEAN = (0.4914, 0.4822, 0.4465)
# what every variant was trained with, and what the Contractive and Switch-flexible notebooks evaluate with
TRAIN_NORM_STD = (0.2023, 0.1994, 0.2010)
# the Switch-prescribed notebook's evaluation wrapper uses the usual CIFAR-10 std instead
EVAL_STD_PRESCRIBED = (0.247, 0.243, 0.261)
# The paper's eps grid, the one definition: the L2 radii (pixel space) of the authors' robust-accuracy
# files, in this order, *including* eps = 0 (their clean-accuracy column). evaluation/paper_protocol.py and
# evaluation/metrics.py import these two names (their ``PAPER_EPS`` are aliases of one of them).
PAPER_EPS_GRID: tuple[float, ...] = (0.0, 8 / 255, 16 / 255, 36 / 255, 0.3, 0.5, 0.6, 0.8, 1.0)
# the attack radii of that grid, eps > 0 (what `dsnet-zoo eval --metrics paper-pgd` attacks by default)
PAPER_ATTACK_EPS: tuple[float, ...] = PAPER_EPS_GRID[1:]

PAPER_VARIANTS = ("ne", "switch_prescribed", "switch_flexible")
_WIDTHS = (32, 64, 128)
_STEPS = 4
_SUBSTEPS = 2  # the notebooks build Network(..., S=2, a=0.5)
_SLOPE = 0.5


# ------------------------------------------------------------------------------------------------
# certified operator norms: the zoo's own (dsnet_zoo.layers.norm_bounds), Gram iteration per frequency


def conv_norm_upper_bound(weight: torch.Tensor, input_hw: tuple[int, int] | int) -> float:
    """Certified upper bound of ``||conv||_2`` for a stride-1 convolution with zero 'same' padding on
    square ``input_hw`` inputs (bias excluded): the zero-padded convolution is a restriction of a
    circular one on a grid large enough that no tap wraps onto a non-zero value, whose norm is the
    max over frequencies of sigma_1 of the transformed kernel, each bounded by Gram iteration
    (see :func:`dsnet_zoo.layers.norm_bounds.singular_value_bounds`)."""
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 != 1:
        raise ValueError(f"expected a square odd-sized conv kernel [C_out, C_in, k, k], got {tuple(weight.shape)}")
    h, w = (input_hw, input_hw) if isinstance(input_hw, int) else tuple(input_hw)
    if h != w:
        raise ValueError(f"the certified conv bound is for square inputs, got {h}x{w}")
    return operator_norm_bound(weight.detach(), h, padding_mode="zeros", method="gram")


def dense_norm_upper_bound(weight: torch.Tensor) -> float:
    """Certified upper bound of ``||W||_2`` (Gram iteration in float64)."""
    return operator_norm_bound(weight.detach(), None, method="gram")


# ------------------------------------------------------------------------------------------------
# the architecture


class PaperBlock(NotScriptable, nn.Module):
    """One block of the authors' ``CNNBlock``: lift, four dynamical steps, 2x2 max-pooling.

    ``input_hw`` is the spatial size the block runs at (used only by the Lipschitz bound).
    """

    def __init__(self, in_chs: int, width: int, variant: str, input_hw: int,
                 num_steps: int = _STEPS, substeps: int = _SUBSTEPS, slope: float = _SLOPE) -> None:
        super().__init__()
        if variant not in PAPER_VARIANTS:
            raise ValueError(f"variant must be one of {PAPER_VARIANTS}, got {variant!r}")
        if variant != "ne" and num_steps % 2:
            raise ValueError(f"the switching variants pair their steps: num_steps must be even, got {num_steps}")
        self.variant = variant
        self.num_steps = num_steps
        self.substeps = substeps
        self.slope = slope
        self.input_hw = input_hw
        # zero init so a fresh model is well defined; the released values come with the weights
        self.u = nn.Parameter(torch.zeros(num_steps))
        n_resc = 1 if variant == "switch_flexible" else 1 + num_steps // 2
        self.rescalings = nn.Parameter(torch.ones(n_resc))
        self.lift = nn.Conv2d(in_chs, width, 3, stride=1, padding=1, bias=False)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, stride=1, padding=1, bias=True)
                                   for _ in range(num_steps))
        self.pool = nn.MaxPool2d(2, 2)

    def _lrelu(self, z: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(z, self.slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the lift scalar multiplies the conv output before the ReLU, as in the authors' code
        x = torch.relu(self.rescalings[-1] * self.lift(x))
        h = self.u.abs()
        if self.variant == "ne":
            for k, conv in enumerate(self.convs):
                x = gradient_step(x, conv.weight, conv.bias, h[k], torch.relu, sign=-1.0)
        elif self.variant == "switch_prescribed":
            # the authors clip these in place before every forward; clamping here gives the same values
            r = self.rescalings[:-1].clamp(0.0, 1.0)
            for p in range(self.num_steps // 2):
                conv_e, conv_c = self.convs[2 * p], self.convs[2 * p + 1]
                h_e, h_c = h[2 * p] / self.substeps, h[2 * p + 1] / self.substeps
                for _ in range(self.substeps):
                    x = x + h_e * r[p] * self._lrelu(conv_op(x, conv_e.weight, conv_e.bias))
                    x = gradient_step(x, conv_c.weight, conv_c.bias, h_c, self._lrelu, sign=-1.0)
        else:  # switch_flexible
            for p in range(self.num_steps // 2):
                conv = self.convs[2 * p]
                h_c, h_e = h[2 * p] / self.substeps, h[2 * p + 1]
                for _ in range(self.substeps):
                    x = gradient_step(x, conv.weight, conv.bias, h_c, self._lrelu, sign=-1.0)
                x = gradient_step(x, conv.weight, conv.bias, h_e, torch.relu, sign=1.0)
        return self.pool(x)

    @torch.no_grad()
    def lipschitz_factors(self) -> list[tuple[str, float]]:
        """Certified per-operation L2 Lipschitz factors, in the order they run.

        - lift: ``|r| * ||L||`` (ReLU is 1-Lipschitz).
        - contractive step ``x - h A^T s(Ax + b)`` with ``s' in [0, 1]`` (ReLU, LeakyReLU(0.5)): along any
          segment the map's difference quotient is ``I - h A^T D A`` with D diagonal in [0, 1] (an average
          of such Jacobians), a symmetric matrix with eigenvalues in ``[1 - h ||A||^2, 1]``; so the factor
          is ``max(1, |1 - h a^2|) = max(1, h a^2 - 1)`` with ``a >= ||A||``
          (:func:`~dsnet_zoo.layers.gradient_flow.contractive_factor` with no certified ``sigma_min``, ``s = 0``).
          It exceeds 1 only when ``h a^2 > 2``.
        - expansive gradient step ``x + h A^T relu(Ax + b)``: ``I + h A^T D A``, factor ``1 + h a^2``.
        - expansive non-gradient step ``x + c lrelu(Ex + e)``, ``c = h r >= 0``: ``I + c D E``, factor
          ``1 + c ||E||``.
        - max-pooling 2x2, stride 2: 1 (disjoint windows, max is 1-Lipschitz per window).
        """
        hw = (self.input_hw, self.input_hw)
        out: list[tuple[str, float]] = []
        out.append(("lift", abs(float(self.rescalings[-1])) * conv_norm_upper_bound(self.lift.weight, hw)))
        norms = [conv_norm_upper_bound(c.weight, hw) for c in self.convs]
        h = self.u.detach().abs().double()
        if self.variant == "ne":
            for k in range(self.num_steps):
                out.append((f"step{k}.contractive", contractive_factor(float(h[k]), norms[k])))
        elif self.variant == "switch_prescribed":
            r = self.rescalings[:-1].detach().double().clamp(0.0, 1.0)
            for p in range(self.num_steps // 2):
                h_e, h_c = float(h[2 * p]) / self.substeps, float(h[2 * p + 1]) / self.substeps
                for s in range(self.substeps):
                    out.append((f"pair{p}.sub{s}.expansive", 1.0 + h_e * float(r[p]) * norms[2 * p]))
                    out.append((f"pair{p}.sub{s}.contractive",
                                contractive_factor(h_c, norms[2 * p + 1], negative_slope=self.slope)))
        else:
            for p in range(self.num_steps // 2):
                h_c, h_e = float(h[2 * p]) / self.substeps, float(h[2 * p + 1])
                for s in range(self.substeps):
                    out.append((f"pair{p}.sub{s}.contractive",
                                contractive_factor(h_c, norms[2 * p], negative_slope=self.slope)))
                out.append((f"pair{p}.expansive", 1.0 + h_e * norms[2 * p] ** 2))
        out.append(("maxpool", 1.0))
        return out


class LipNetPaper(SequentialBlocksMixin, ZooClassifier):
    """The authors' ``Network(3, 32, 64, 128, 4, 4, 4, S=2, a=0.5)`` with the normalisation inside.

    Guarantee: ``forward`` computes what the authors' ``nn.Sequential(Normalisation(), net)`` computes
    for the same weights. ``lipschitz_upper_bound()`` is a provable (not estimated) bound of its L2
    Lipschitz constant in pixel space; it is large (these models are not 1-Lipschitz).

    ``global_pool``: ``'flatten'`` (the authors' head on the flattened last map) or ``''`` (unpooled maps,
    with ``num_classes=0``). Features (``feature_info``): the output of each block, at reductions 2, 4, 8.
    """

    first_conv = "blocks.0.lift"

    def __init__(self, variant: str = "ne", num_classes: int = 10, in_chans: int = 3,
                 widths: tuple[int, ...] = _WIDTHS, img_size: int = 32,
                 norm_mean: tuple[float, ...] = PAPER_NORM_MEAN,
                 norm_std: tuple[float, ...] = TRAIN_NORM_STD, global_pool: str = "flatten") -> None:
        super().__init__()
        if variant not in PAPER_VARIANTS:
            raise ValueError(f"variant must be one of {PAPER_VARIANTS}, got {variant!r}")
        if len(norm_mean) != in_chans or len(norm_std) != in_chans or min(norm_std) <= 0:
            raise ValueError(f"norm_mean/norm_std need {in_chans} entries and std > 0, got {norm_mean}, {norm_std}")
        if img_size % (2 ** len(widths)):
            raise ValueError(f"img_size must be divisible by {2 ** len(widths)}, got {img_size}")
        self.variant = variant
        self.in_chans, self.img_size = in_chans, img_size
        self.num_classes = num_classes
        self.norm_mean = tuple(float(m) for m in norm_mean)
        self.norm_std = tuple(float(s) for s in norm_std)
        # not persistent: the released state dicts have no such tensors; the values are model arguments
        self.register_buffer("mean", torch.tensor(self.norm_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.norm_std).view(1, -1, 1, 1), persistent=False)
        blocks, chs, hw = [], in_chans, img_size
        for w in widths:
            blocks.append(PaperBlock(chs, w, variant, hw))
            chs, hw = w, hw // 2
        self.blocks = nn.Sequential(*blocks)
        self.feature_info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"blocks.{i}")
                             for i, w in enumerate(widths)]
        self.num_features = chs * hw * hw
        self._set_global_pool(global_pool, num_classes)
        self.head = self._make_head(num_classes) if num_classes > 0 else nn.Identity()

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes)

    def _prologue(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @torch.no_grad()
    def lipschitz_factors(self) -> list[tuple[str, float]]:
        """Every certified factor of :meth:`lipschitz_upper_bound`, named, in the order they apply."""
        out = [("normalisation", 1.0 / min(self.norm_std))]
        for i, blk in enumerate(self.blocks):
            out += [(f"block{i}.{n}", f) for n, f in blk.lipschitz_factors()]
        if isinstance(self.head, nn.Linear):
            out.append(("head", dense_norm_upper_bound(self.head.weight)))
        return out

    def feature_lipschitz_upper_bound(self) -> float:
        factors = [f for n, f in self.lipschitz_factors() if n != "head"]
        return float(math.prod(factors))

    def lipschitz_upper_bound(self) -> float | None:
        if not isinstance(self.head, nn.Linear):
            return None
        return float(math.prod(f for _, f in self.lipschitz_factors()))


# ------------------------------------------------------------------------------------------------
# the released state dicts


def map_paper_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' keys to ours, refusing anything that is not part of their layout.

    ``seq.i.conv1.0.weight -> blocks.i.lift.weight``, ``seq.i.{u,rescalings,convs.k.*} -> blocks.i.*``,
    ``FC.1.* -> head.*``. Shapes are checked by the strict load that follows.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "seq" and len(parts) >= 3 and parts[1].isdigit():
            rest = parts[2:]
            if rest[:2] == ["conv1", "0"] and rest[2:] == ["weight"]:
                new = f"blocks.{parts[1]}.lift.weight"
            elif rest in (["u"], ["rescalings"]) or (rest[0] == "convs" and len(rest) == 3
                                                      and rest[1].isdigit() and rest[2] in ("weight", "bias")):
                new = "blocks." + ".".join(parts[1:])
            else:
                unknown.append(key)
                continue
        elif parts[0] == "FC" and parts[1:2] == ["1"] and parts[2:] in (["weight"], ["bias"]):
            new = f"head.{parts[2]}"
        else:
            unknown.append(key)
            continue
        out[new] = value
    if unknown:
        raise ValueError(f"not a state dict of the authors' CIFAR-10 Network: unexpected keys {unknown[:8]}")
    return out


# ------------------------------------------------------------------------------------------------
# registry: the nine released checkpoints, converted by `dsnet-zoo port-paper`

_REPO = "github.com/davidemurari/StructuredNeuralNetworks@8ad721a"
_LICENSE = "unknown (no license file in the authors repository): not redistributable"
_FOLDERS = {"ne": "Contractive", "switch_prescribed": "Switch prescribed", "switch_flexible": "Switch flexible"}
_FILE_PREFIX = {"ne": "contractive", "switch_prescribed": "switch_prescribed", "switch_flexible": "switch_flexible"}
_ARCH = {"ne": "lipnet_paper_ne_cifar10", "switch_prescribed": "lipnet_paper_switch_prescribed_cifar10",
         "switch_flexible": "lipnet_paper_switch_flexible_cifar10"}
_MARGINS = ("0.07", "0.15", "0.3")

# The authors' robust accuracies (their updateMargin_<m>.txt, also shipped as <file>.robust_acc.txt):
# fraction of the first 1,024 CIFAR-10 test images still correct under Foolbox L2PGD(steps=10) at each
# radius of PAPER_EPS_GRID.
_PAPER_ROBUST_ACC = {
    ("ne", "0.07"): (0.8388671875, 0.826171875, 0.8212890625, 0.7939453125, 0.7421875, 0.6611328125,
                     0.626953125, 0.5458984375, 0.482421875),
    ("ne", "0.15"): (0.810546875, 0.80078125, 0.7919921875, 0.7802734375, 0.7255859375, 0.66796875,
                     0.630859375, 0.5556640625, 0.4697265625),
    ("ne", "0.3"): (0.796875, 0.7900390625, 0.7841796875, 0.7646484375, 0.7177734375, 0.6494140625,
                    0.61328125, 0.5556640625, 0.4775390625),
    ("switch_prescribed", "0.07"): (0.8076171875, 0.7978515625, 0.7900390625, 0.775390625, 0.7392578125,
                                    0.677734375, 0.6455078125, 0.5810546875, 0.515625),
    ("switch_prescribed", "0.15"): (0.7958984375, 0.787109375, 0.7822265625, 0.7607421875, 0.7177734375,
                                    0.6572265625, 0.6240234375, 0.5576171875, 0.5048828125),
    ("switch_prescribed", "0.3"): (0.7890625, 0.7841796875, 0.779296875, 0.7548828125, 0.7099609375,
                                   0.650390625, 0.6201171875, 0.55078125, 0.494140625),
    ("switch_flexible", "0.07"): (0.822265625, 0.8125, 0.8076171875, 0.7900390625, 0.74609375, 0.6865234375,
                                  0.6552734375, 0.5869140625, 0.5126953125),
    ("switch_flexible", "0.15"): (0.8173828125, 0.8134765625, 0.802734375, 0.78515625, 0.7431640625,
                                  0.6796875, 0.6416015625, 0.5693359375, 0.509765625),
    ("switch_flexible", "0.3"): (0.83203125, 0.8232421875, 0.8076171875, 0.7763671875, 0.7412109375,
                                 0.66796875, 0.62890625, 0.556640625, 0.4833984375),
}

# sha256 of the released .pt files (their git blob ids match the repository at 8ad721a)
_SOURCE_SHA256 = {
    ("ne", "0.07"): "9093cbafe9f3d978a09a6de6e23f054c1d87610902cc3350de70f8495959bfcb",
    ("ne", "0.15"): "aecc384a032a984d47642604641a3fa1e56dd2571110134becc4e109b844e4a0",
    ("ne", "0.3"): "97586c2a9e0b70d537eb9bea79a8e1939f4869f3dd7186a65b0cb727babaa8fb",
    ("switch_flexible", "0.07"): "1ec76e728d88d8529c19616b2c0b98cc4f146f0262e788a3c31128771fc56966",
    ("switch_flexible", "0.15"): "4e0a145f24dd83d0eae173122adda25e3614bafcf4072881b81e63f3771c824e",
    ("switch_flexible", "0.3"): "0f12cda1645927d3eb5d467f84fbb147117eee48072516676f4c5e30ead1dd1b",
    ("switch_prescribed", "0.07"): "0e59ddb68d046f85f105c9eb79c925242550de366311178981412014187aeb07",
    ("switch_prescribed", "0.15"): "eb6da7f833950014a5281685f0946701bfde5351a0b39b0c98338def3de1d3d3",
    ("switch_prescribed", "0.3"): "5734e434b7ca1ad16cd617b8c943995a0afd5fbce2af90b090a6ade086794470",
}

# sha256 of the converted model.safetensors (deterministic output of `dsnet-zoo port-paper`)
_CONVERTED_SHA256 = {
    ("ne", "0.07"): "340c5c3624b5cedc3e08e3d7523f8f6dc958d4e92832db511863b5925b79bb1e",
    ("ne", "0.15"): "816520cb70f6d095231d7def343ccd5854fb585c43ed75162c05f3196025d7a6",
    ("ne", "0.3"): "fa9ff557ef0e9e52931bbcca2179518f52e6c7a73cbf67327f21da339ae098f5",
    ("switch_prescribed", "0.07"): "28b17ee051b9d9f58fd3f54e108e3b7f75ea8d3a2d1cd1c134beb330d3a259ef",
    ("switch_prescribed", "0.15"): "ce6ee246a46e188008d71081256895f4da2797993e2af6e23f931aa413e95195",
    ("switch_prescribed", "0.3"): "f6bece411cecbed15b4952c9b525912e85e980d61277ba4701b15085dd5ffb3e",
    ("switch_flexible", "0.07"): "5e82058d3d236843fab5e81f508a2b925c90172c2850a9376a68b12b4f52c74c",
    ("switch_flexible", "0.15"): "a0950b7a8af118633c8d5fe0c2435504f64d4221500fc6e50aa3fd8e67f33fcf",
    ("switch_flexible", "0.3"): "9e2b1f06d539539cc25e3b76d67ddd100ca79eefdd37ea7dfbffc909b25f5947",
}

_RECIPE_COMMON = {
    "loss": "multi-class hinge (sum over wrong classes of max(0, z_j - z_y + margin), batch mean)",
    "optimizer": "SGD momentum 0.9, lr 0.01 (divided on NaN restarts), StepLR(30, 0.1), 100 epochs, batch 128",
    "augmentation": "RandomCrop(32, padding=4), RandomHorizontalFlip",
    "train_normalisation": {"mean": list(PAPER_NORM_MEAN), "std": list(TRAIN_NORM_STD)},
    "projections_each_step": "FC weight / max(1, ||W||_2); lift conv / max(1, power-iteration norm, 1 iter)",
    "dataset": "CIFAR-10 train (50,000)",
}
_RECIPE_VARIANT = {
    "ne": {"orthogonality_penalty": 0.1, "step_box": "u clamped to [0, 1.9]", "activation": "relu"},
    "switch_prescribed": {"orthogonality_penalty": 0.1, "activation": "leaky_relu(0.5)", "substeps": 2,
                          "step_box": "u fixed at (h_e, h_c) = (0.1412, 0.3) per pair in the released weights "
                                      "(the released training.py calls an undefined constrain())"},
    "switch_flexible": {"orthogonality_penalty": 0.01, "activation": "leaky_relu(0.5) contractive, relu expansive",
                        "substeps": 2, "step_box": "u_contractive clamped to [0.11, 1.89], u_expansive to "
                                                   "[-1.9, 0.05] (applied as |u|, so expansive steps reach 1.9)"},
}


def paper_source_file(variant: str, margin: str) -> str:
    """File name of a released checkpoint in ``DSNET_ZOO_PAPER_WEIGHTS/cifar10``."""
    return f"{_FILE_PREFIX[variant]}_margin_{margin}.pt"


def paper_tag(margin: str) -> str:
    return "margin_" + margin.replace(".", "_")


def paper_hf_hub_id(variant: str, margin: str) -> str:
    return f"dsnet-zoo/{_ARCH[variant]}-{paper_tag(margin)}"


def paper_norm_std(variant: str) -> tuple[float, ...]:
    return EVAL_STD_PRESCRIBED if variant == "switch_prescribed" else TRAIN_NORM_STD


def _paper_cfg(variant: str, margin: str) -> WeightsCfg:
    acc = _PAPER_ROBUST_ACC[(variant, margin)]
    return WeightsCfg(
        tag=paper_tag(margin),
        hf_hub_id=paper_hf_hub_id(variant, margin),
        revision=None,
        sha256=_CONVERTED_SHA256[(variant, margin)],
        num_classes=10,
        norm_mean=PAPER_NORM_MEAN,
        norm_std=paper_norm_std(variant),
        dataset="cifar10",
        label_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        recipe={"margin": float(margin), **_RECIPE_COMMON, **_RECIPE_VARIANT[variant]},
        license=_LICENSE,
        source=PAPER_SOURCE,
        origin=f"{_REPO} Adversarial Robustness/CIFAR10/{_FOLDERS[variant]}/CertifiedLip_margin_{margin}.pt "
               f"(sha256 {_SOURCE_SHA256[(variant, margin)]})",
        description=(f"The authors' own released weights ({_FOLDERS[variant]}, margin {margin}), converted "
                     "to safetensors; not trained by dsnet_zoo. Not 1-Lipschitz (see docs/paper_port.md)."),
        model_args={"norm_std": list(paper_norm_std(variant))},
        metrics={"paper": {
            "what": "authors' robust accuracy, Foolbox 3.3.3 L2PGD(steps=10), first 1,024 CIFAR-10 test images",
            "space": "pixel [0, 1], L2",
            "eps": [round(e, 10) for e in PAPER_EPS_GRID],
            "robust_accuracy": list(acc),
            "clean_accuracy": acc[0],
        }},
        num_params=888569 if variant == "switch_flexible" else 888575,
    )


def _create(variant: str, arch: str, pretrained: bool, **kwargs: Any) -> LipNetPaper:
    kwargs.setdefault("norm_std", paper_norm_std(variant))
    return build_model(LipNetPaper, arch, pretrained, variant=variant, **kwargs)


def _cfgs(variant: str) -> list[WeightsCfg]:
    return [_paper_cfg(variant, m) for m in _MARGINS]


@register_model(family="lipnet_paper", dataset="cifar10", num_classes=10, pretrained=_cfgs("ne"))
def lipnet_paper_ne_cifar10(pretrained: bool = False, **kwargs: Any) -> LipNetPaper:
    """The paper's non-expansive CIFAR-10 net (contractive steps only), authors' weights; not 1-Lipschitz."""
    return _create("ne", "lipnet_paper_ne_cifar10", pretrained, **kwargs)


@register_model(family="lipnet_paper", dataset="cifar10", num_classes=10,
                pretrained=_cfgs("switch_prescribed"))
def lipnet_paper_switch_prescribed_cifar10(pretrained: bool = False, **kwargs: Any) -> LipNetPaper:
    """The paper's switching CIFAR-10 net with prescribed step sizes, authors' weights; not 1-Lipschitz."""
    return _create("switch_prescribed", "lipnet_paper_switch_prescribed_cifar10", pretrained, **kwargs)


@register_model(family="lipnet_paper", dataset="cifar10", num_classes=10,
                pretrained=_cfgs("switch_flexible"))
def lipnet_paper_switch_flexible_cifar10(pretrained: bool = False, **kwargs: Any) -> LipNetPaper:
    """The paper's switching CIFAR-10 net with flexible step sizes, authors' weights; not 1-Lipschitz."""
    return _create("switch_flexible", "lipnet_paper_switch_flexible_cifar10", pretrained, **kwargs)
