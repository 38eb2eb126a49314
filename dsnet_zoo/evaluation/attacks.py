"""AutoAttack (standard version) on one batch, with every adversarial example re-checked here.

Backend: the official ``autoattack`` package (``pip install git+https://github.com/fra31/auto-attack``)
when it is importable, else ``pyautoattack`` from PyPI, which carries the upstream attack files
unchanged (APGD, APGD-T, FAB, Square; see ``docs/autoattack.md`` for the file-by-file comparison)
behind a different wrapper. Both are run with ``version='standard'``: APGD-CE (1 restart), APGD-T and
FAB-T with 9 target classes, Square with 5,000 queries, the settings of RobustBench's leaderboards.

The attack's own bookkeeping is not trusted: an example counts as broken only when the returned point
lies in the threat ball (norm at most ``eps`` up to float32 rounding), in ``[0, 1]``, and the model
misclassifies it when evaluated here.
"""
from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..utils import weights_in_layout

__all__ = ["AutoAttackBackend", "autoattack_backend", "run_autoattack", "check_adversarial", "STANDARD_THREATS",
           "STANDARD_ATTACKS"]

# RobustBench's threat models for CIFAR: L2 at 0.5 and Linf at 8/255; L2 at 36/255 matches the
# certified-robustness literature's smallest radius
STANDARD_THREATS: tuple[tuple[str, float], ...] = (("L2", 0.5), ("L2", 36 / 255), ("Linf", 8 / 255))
STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")

NORM_TOL = 1e-5  # relative slack on the perturbation norm (float32 projections overshoot by ulps)


@dataclass(frozen=True)
class AutoAttackBackend:
    package: str
    version: str
    module: Any

    def to_dict(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version}


def autoattack_backend(prefer: str | None = None) -> AutoAttackBackend:
    """The official ``autoattack`` if importable (or ``prefer``), else ``pyautoattack``."""
    order = [prefer] if prefer else ["autoattack", "pyautoattack"]
    errors = []
    for name in order:
        try:
            mod = importlib.import_module(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
            continue
        if not hasattr(mod, "AutoAttack"):
            errors.append(f"{name}: no AutoAttack class")
            continue
        version = getattr(mod, "__version__", None)
        if version is None:
            try:
                from importlib.metadata import version as _v
                version = _v(name)
            except Exception:
                version = "unknown"
        return AutoAttackBackend(name, str(version), mod)
    raise ImportError("AutoAttack is not installed: pip install 'dsnet_zoo[eval]' (pyautoattack), or the "
                      "official code: pip install git+https://github.com/fra31/auto-attack. "
                      + "; ".join(errors))


class _FlagCollector(logging.Handler):
    """Keeps the warnings AutoAttack's checks emit (randomised or dynamic models, Square success...)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _make_attack(backend: AutoAttackBackend, model: nn.Module, norm: str, eps: float, seed: int, device):
    if backend.package == "pyautoattack":
        return backend.module.AutoAttack(model, norm=norm, eps=eps, seed=seed, version="standard",
                                         device=device)
    return backend.module.AutoAttack(model, norm=norm, eps=eps, seed=seed, version="standard",
                                     device=device, verbose=False)


def _check_standard(adversary) -> None:
    """Refuse to run if the wrapper's 'standard' settings are not the upstream standard version's."""
    got = {
        "attacks": tuple(adversary.attacks_to_run),
        "apgd.n_restarts": adversary.apgd.n_restarts,
        "apgd.n_iter": adversary.apgd.n_iter,
        "apgd_t.n_target_classes": adversary.apgd_targeted.n_target_classes,
        "apgd_t.n_restarts": adversary.apgd_targeted.n_restarts,
        "fab.n_target_classes": adversary.fab.n_target_classes,
        "fab.n_restarts": adversary.fab.n_restarts,
        "square.n_queries": adversary.square.n_queries,
    }
    want = {"attacks": STANDARD_ATTACKS, "apgd.n_restarts": 1, "apgd.n_iter": 100,
            "apgd_t.n_target_classes": 9, "apgd_t.n_restarts": 1, "fab.n_target_classes": 9,
            "fab.n_restarts": 1, "square.n_queries": 5000}
    if got != want:
        raise RuntimeError(f"AutoAttack 'standard' settings differ from upstream's: {got} != {want}")


def check_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, norm: str,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(broken, invalid)`` per example: broken = valid point in the ball that the model misclassifies;
    invalid = a returned point outside the ball or outside ``[0, 1]`` (never counted as broken)."""
    delta = (x_adv - x).flatten(1).to(torch.float64)
    size = delta.norm(dim=1) if norm == "L2" else delta.abs().amax(dim=1)
    in_ball = size <= eps * (1 + NORM_TOL) + 1e-7
    in_box = (x_adv >= -1e-6).flatten(1).all(1) & (x_adv <= 1 + 1e-6).flatten(1).all(1)
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    wrong = pred != y
    moved = size > 0
    invalid = moved & ~(in_ball & in_box)
    return wrong & in_ball & in_box, invalid


class _ChannelsLastInput(nn.Module):
    """Hands the wrapped model its input in the channels-last memory layout (same values)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, seed: int,
                   device: torch.device, backend: AutoAttackBackend | None = None,
                   channels_last: bool = False) -> dict[str, Any]:
    """Standard AutoAttack on one batch. Returns per-example ``robust``/``invalid`` bool tensors (CPU)
    and the checks' warnings. ``robust`` = correctly classified and no valid adversarial point found.

    ``channels_last``: the attacks see the model with its 4-d weights and its inputs in the channels-last
    memory layout, and the model is put back in the default layout afterwards. This only changes speed
    (oneDNN's channels-last convolutions are faster on CPU for most conv nets) and float32 rounding: the
    same function, its sums taken in another order. Whether a point is correct and whether a returned point
    breaks it are decided afterwards in the default layout, as in the clean evaluation."""
    if norm not in ("L2", "Linf"):
        raise ValueError(f"norm must be 'L2' or 'Linf', got {norm!r}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be positive, got {eps}")
    backend = backend or autoattack_backend()
    if channels_last and x.dim() != 4:
        raise ValueError(f"channels_last needs image batches [N, C, H, W], got shape {tuple(x.shape)}")
    x = x.to(device).contiguous()
    y = y.to(device)
    adversary = _make_attack(backend, _ChannelsLastInput(model) if channels_last else model, norm, eps, seed, device)
    _check_standard(adversary)
    collector = _FlagCollector()
    logger = logging.getLogger("auto-attack")
    logger.addHandler(collector)
    try:
        with weights_in_layout(model, channels_last):
            if backend.package == "pyautoattack":
                x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
            else:
                x_adv = adversary.run_standard_evaluation(x, y, bs=len(x))
    finally:
        logger.removeHandler(collector)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    broken, invalid = check_adversarial(model, x, y, x_adv.to(device).contiguous(), norm, eps)
    robust = correct & ~broken
    return {"robust": robust.cpu(), "invalid": invalid.cpu(), "flags": collector.messages}
