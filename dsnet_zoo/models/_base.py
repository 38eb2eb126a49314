"""The timm-compatible surface every zoo classifier shares, and the one input check of the zoo."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers._common import NotScriptable

__all__ = ["SequentialBlocksMixin", "ZooClassifier", "INPUT_RANGE", "check_input", "feature_take_indices"]

# Inputs are images in [0, 1]; values in [-1, 2] are accepted so that adversarial perturbations and
# additive noise pass, while 0-255 images (max far above 2) and images already standardised with a
# mean and std (min below -1 for any image with dark pixels: the model normalises inside) are refused.
INPUT_RANGE = (-1.0, 2.0)


# torch.compiler.is_exporting is torch >= 2.5; before it, export traced with dynamo (is_compiling)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def _values_unavailable(x: torch.Tensor) -> bool:
    """True where the input's values cannot (or must not) be read: meta tensors, and inside torch.compile,
    torch.export, torch.jit.trace and functorch transforms (vmap cannot read a batched value, and reading
    one while tracing would bake a data-dependent branch into the graph). timm skips value checks there too."""
    return (x.device.type == "meta" or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or _is_exporting() or torch._C._are_functorch_transforms_active())


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def check_input(x: Any, *, owner: str, expected: str, shape: Sequence[int | None],
                value_range: tuple[float, float] | None, kind: str = "images") -> torch.Tensor:
    """Refuse inputs a zoo model would silently turn into garbage; return ``x`` unchanged.

    ``shape`` lists the expected size of every dimension (``None``: any). Checks, in this order: a float
    tensor (integer images are refused, with the fix for uint8), the shape, and, when ``value_range`` is
    given, finite values inside it, read with one ``aminmax`` reduction (one device sync). Raises
    ``TypeError`` for a wrong type or dtype, ``ValueError`` for a wrong shape or values; each message names
    ``owner`` and says what it ``expected``.

    Under torch.fx symbolic tracing the shape and dtype checks are recorded with ``torch._assert`` (as timm
    does) so the traced graph keeps them; value checks are skipped while tracing or compiling (see
    :func:`_values_unavailable`) and apply to every eager call.
    """
    head = f"{owner} expected {expected}"
    if isinstance(x, torch.fx.Proxy):
        msg = f"{head} (checked in the traced graph)"
        torch._assert(x.dim() == len(shape), msg)
        for i, s in enumerate(shape):
            if s is not None:
                torch._assert(x.shape[i] == s, msg)
        torch._assert(x.is_floating_point(), msg)
        return x
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{head}, got a {type(x).__name__}: pass a torch.Tensor")
    if not x.is_floating_point():
        fix = ("divide uint8 images by 255 (x.float() / 255)" if x.dtype == torch.uint8 and kind == "images"
               else "convert it to a float tensor")
        raise TypeError(f"{head}, got dtype {x.dtype}: {fix}")
    if x.dim() != len(shape) or any(s is not None and x.shape[i] != s for i, s in enumerate(shape)):
        raise ValueError(f"{head}, got shape {tuple(x.shape)}")
    if value_range is None or x.numel() == 0 or _values_unavailable(x):
        return x
    lo, hi = torch.stack(torch.aminmax(x.detach())).tolist()
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{head}, got NaN values")
    if math.isinf(lo) or math.isinf(hi):
        raise ValueError(f"{head}, got infinite values")
    a, b = value_range
    if lo >= a and hi <= b:
        return x
    hint = ""
    if kind == "images":
        # a mean/std standardisation of [0, 1] images gives negative values and a top near 2 (CIFAR's 2.1,
        # ImageNet's 2.6); 0-255 images are non-negative and reach far above 2
        if lo < 0 and hi <= 3:
            hint = " (normalised with a mean and std? the model normalises inside: pass the [0, 1] images)"
        elif hi > b:
            hint = " (0-255 images? divide them by 255)"
    where = f"down to {_fmt(lo)}, below" if lo < a else f"up to {_fmt(hi)}, above"
    raise ValueError(f"{head}, got values {where} the accepted [{_fmt(a)}, {_fmt(b)}]{hint}")


def feature_take_indices(num_features: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """timm's rule for ``forward_intermediates(indices=...)``: ``None`` takes every feature, an int ``n`` the
    last ``n``, a sequence those indices (negative from the end). Returns the absolute indices and their max."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        take = [num_features - indices + i for i in range(indices)]
    else:
        take = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {idx} is out of range (0 to {num_features - 1})")
            take.append(idx)
    if not take:
        raise ValueError("no feature index selected")
    return take, max(take)


class ZooClassifier(NotScriptable, nn.Module):
    """Base class of the zoo's classifiers: timm's interface plus certificates.

    A subclass builds ``self.head`` with :meth:`_make_head` and either implements the three pieces that
    :meth:`forward_features` runs, in order, after :meth:`check_input` -- :meth:`_prologue` (the in-model
    normalisation and any stem), the units of :meth:`_tap_units` (the output of unit ``i`` is feature
    ``i`` of ``feature_info``) and :meth:`_epilogue` -- or overrides :meth:`forward_features` itself.
    Inputs are float images in ``[0, 1]`` (``input_range`` is what :meth:`check_input` accepts).

    timm's interface: ``num_classes``, ``num_features`` (the width of the pre-logit features, as the
    zoo's certificates use it; ``head_hidden_size`` is the same number), ``in_chans``, ``feature_info``,
    :meth:`forward_head` with ``pre_logits``, :meth:`reset_classifier` with ``global_pool``,
    :meth:`forward_intermediates`, :meth:`prune_intermediate_layers`, :meth:`set_grad_checkpointing`,
    ``group_matcher`` (per architecture) and :meth:`no_weight_decay`.

    Certificates: :meth:`lipschitz_upper_bound` is a *provable* upper bound of the L2 Lipschitz
    constant of the logit map ``x -> forward(x)`` in pixel space, or ``None`` when the model has
    no certified bound. :meth:`feature_lipschitz_upper_bound` bounds ``x -> forward_head(
    forward_features(x), pre_logits=True)``; with a linear head it gives per-class-pair
    certificates ``margin_ij / (L_features * ||W_i - W_j||)``.
    """

    num_classes: int
    num_features: int
    pretrained_cfg: dict[str, Any]
    in_chans: int = 3
    img_size: int | None = None  # side of the square inputs the model accepts (None: any height and width)
    # what check_input accepts; an instance may widen it (e.g. for randomised smoothing) or set None
    input_range: tuple[float, float] | None = INPUT_RANGE
    global_pool: str = "flatten"
    pool_types: tuple[str, ...] = ("flatten", "")
    first_conv: str | None = None  # the first layer, as named in timm's pretrained_cfg
    features_are_maps: bool = True  # forward_features returns the last feature map of feature_info (NCHW)
    grad_checkpointing: bool = False
    # why recomputing a unit in the backward pass would be wrong for this model (None: it is not)
    grad_checkpointing_unsupported: str | None = None

    def __init__(self) -> None:
        super().__init__()
        self.pretrained_cfg = {}
        self.feature_info: list[dict[str, Any]] = []

    # -- inputs ---------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Raise ``TypeError``/``ValueError`` unless ``x`` is float images ``[N, in_chans, img_size,
        img_size]`` with finite values in ``input_range`` (see :func:`check_input`); return ``x``."""
        side = self.img_size
        size = "H, W" if side is None else f"{side}, {side}"
        return check_input(x, owner=type(self).__name__,
                           expected=f"images [N, {self.in_chans}, {size}] (float, values in [0, 1])",
                           shape=(None, self.in_chans, side, side), value_range=self.input_range)

    # -- timm interface -------------------------------------------------------------------------
    def _make_head(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def _prologue(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _tap_units(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        raise NotImplementedError

    def _epilogue(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _run_unit(self, unit: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not isinstance(x, torch.fx.Proxy):
            return checkpoint(unit, x, use_reentrant=False)
        return unit(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prologue(self.check_input(x))
        for unit in self._tap_units():
            x = self._run_unit(unit, x)
        return self._epilogue(x)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "avg":
            return x.mean(dim=(2, 3))
        if self.global_pool == "flatten":
            return torch.flatten(x, 1)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self._pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def head_hidden_size(self) -> int:
        """timm's name for the width of the pre-logit features (``num_features`` in the zoo)."""
        return self.num_features

    def get_classifier(self) -> nn.Module:
        return self.head

    def _set_global_pool(self, global_pool: str, num_classes: int) -> None:
        if global_pool not in self.pool_types:
            raise ValueError(f"{type(self).__name__}: global_pool must be one of {self.pool_types}, "
                             f"got {global_pool!r}")
        # pool_types[0] is the model's own pooling; '' instead of it leaves feature maps no linear head takes
        if global_pool == "" and self.pool_types[0] != "" and num_classes > 0:
            raise ValueError(f"{type(self).__name__}: global_pool='' returns unpooled feature maps, which no "
                             f"linear head takes: use it with num_classes=0 (got {num_classes})")
        self.global_pool = global_pool

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` classes (0 gives identity);
        ``global_pool`` is one of ``pool_types``, ``''`` for unpooled features (``num_classes=0`` only).
        ``None`` keeps the current pooling, except that a new classifier after ``''`` gets the model's own
        pooling back (a linear head cannot read unpooled maps).

        The new head is on the device and in the dtype and mode of the model. It is untrained: the
        weights' recorded metrics and certificates no longer apply, so ``pretrained_cfg`` is marked
        accordingly.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if global_pool is None:
            global_pool = self.pool_types[0] if num_classes > 0 and self.global_pool == "" else self.global_pool
        self._set_global_pool(global_pool, num_classes)
        like = next(self.parameters(), None)
        self.num_classes = num_classes
        head = self._make_head(num_classes) if num_classes > 0 else nn.Identity()
        if like is not None:
            head = head.to(device=like.device, dtype=like.dtype)
        self.head = head.train(self.training)
        if self.pretrained_cfg:
            self.pretrained_cfg = dict(self.pretrained_cfg, num_classes=num_classes, metrics={},
                                       head_reset=True)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """timm's feature API: the features of ``feature_info`` selected by ``indices`` (see
        :func:`feature_take_indices`), with (unless ``intermediates_only``) the output of
        :meth:`forward_features`. ``stop_early`` stops after the last selected feature (the first output is
        then that feature). The zoo's models have no final norm layer: ``norm`` changes nothing."""
        if output_fmt != "NCHW":
            raise ValueError(f"{type(self).__name__} gives NCHW features, got output_fmt={output_fmt!r}")
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        x = self._prologue(self.check_input(x))
        units = self._tap_units()
        stopped = stop_early and max_index < len(units) - 1
        if stopped:
            units = units[:max_index + 1]
        intermediates = []
        for i, unit in enumerate(units):
            x = self._run_unit(unit, x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return (x if stopped else self._epilogue(x)), intermediates

    def _prune_after(self, index: int, prune_tail: bool) -> None:
        """Drop every unit after feature ``index`` (and the epilogue's layers when ``prune_tail``)."""
        raise NotImplementedError

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the layers not needed for the features ``indices`` (timm's API; a feature extractor such as
        ``features_only=True`` calls it). Layers after the last feature that are part of
        :meth:`forward_features` (the dense part of the flagship) go when an earlier feature is the last one
        kept, or with ``prune_norm``; ``prune_head`` removes the head and the pooling. Returns the absolute
        indices. A pruned model no longer has its certificate."""
        take, max_index = feature_take_indices(len(self.feature_info), indices)
        self._prune_after(max_index, prune_tail=prune_norm or max_index < len(self.feature_info) - 1)
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each feature unit in the backward pass instead of storing its activations."""
        if enable and self.grad_checkpointing_unsupported:
            raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing: "
                                      f"{self.grad_checkpointing_unsupported}")
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameters to train without weight decay: every one with fewer than two dimensions (biases, step
        sizes, scalars), the rule of the zoo's own training loop."""
        return {n for n, p in self.named_parameters() if p.ndim < 2}

    def _cfg_layout(self) -> dict[str, Any]:
        """The layout keys of timm's pretrained_cfg: size of the unpooled features (``None`` when
        ``forward_features`` does not return the last feature map), first layer, classifier."""
        pool_size = None
        if self.features_are_maps and self.img_size is not None and self.feature_info:
            side = self.img_size // self.feature_info[-1]["reduction"]
            pool_size = (side, side)
        return {"pool_size": pool_size, "first_conv": self.first_conv, "classifier": "head"}

    @property
    def default_cfg(self) -> dict[str, Any]:  # timm's older name
        return self.pretrained_cfg

    # -- certificates ---------------------------------------------------------------------------
    def lipschitz_upper_bound(self) -> float | None:
        """Certified L2 Lipschitz bound of the logit map in pixel space, or ``None``."""
        return None

    def feature_lipschitz_upper_bound(self) -> float | None:
        """Certified L2 Lipschitz bound of the pre-logit features in pixel space, or ``None``."""
        return None


class SequentialBlocksMixin:
    """timm hooks of a classifier whose body is ``self.blocks``, an ``nn.Sequential`` of stages: features
    are tapped after each block, pruning keeps the first ones, one parameter group per block."""

    blocks: nn.Sequential

    def _tap_units(self) -> list[nn.Module]:
        return list(self.blocks)

    def _prune_after(self, index: int, prune_tail: bool) -> None:
        self.blocks = self.blocks[:index + 1]

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter groups (layer-wise learning rates): one per block; the head comes last."""
        return dict(blocks=r"^blocks\.(\d+)")
