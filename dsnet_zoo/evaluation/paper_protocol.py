"""The paper's robustness protocol: Foolbox 3 ``L2PGD(steps=10)`` with Foolbox's defaults.

What the authors' notebooks (``Adversarial Robustness/CIFAR10/*/main.ipynb`` at 8ad721a) do, and so
what this module does:

- the model takes images in [0, 1] (normalisation inside), wrapped as
  ``foolbox.PyTorchModel(model, bounds=(0, 1))`` with no Foolbox preprocessing;
- ``foolbox.attacks.L2PGD(steps=10)``: every other argument at its default (``rel_stepsize=0.025``,
  ``abs_stepsize=None``, ``random_start=True``, cross-entropy loss, untargeted), one independent run per
  radius, step size ``0.025 * eps``;
- an example counts as robust at ``eps`` when Foolbox's ``success`` is False for it, i.e. the *final*
  PGD iterate (projected to the eps-ball and [0, 1]) is still classified correctly. At ``eps = 0`` the
  attack returns the clean image, so a clean misclassification counts as not robust and the eps = 0
  column is the clean accuracy.

This is a weak attack (10 steps, no restarts, last iterate): use it to reproduce the paper's numbers,
not to measure robustness. Foolbox 3.3.3 (the paper's) and 3.3.4 have identical ``L2PGD`` code
(``projected_gradient_descent.py`` is byte-identical; ``gradient_descent_base.py`` differs only in a
``# type: ignore`` comment).
"""
from __future__ import annotations

import torch
from torch import nn

from ..models.lipnet_paper import PAPER_ATTACK_EPS, PAPER_EPS_GRID
from ..utils import weights_in_layout

__all__ = ["PAPER_EPS_GRID", "PAPER_ATTACK_EPS", "clean_outcomes", "paper_pgd_outcomes", "paper_pgd_accuracy"]

# Deprecated alias of PAPER_EPS_GRID (the grid *with* eps = 0), kept for callers of this module; note that
# dsnet_zoo.evaluation.PAPER_EPS (metrics.py) is the other one, PAPER_ATTACK_EPS. Use the explicit names.
PAPER_EPS = PAPER_EPS_GRID


def _foolbox():
    try:
        import foolbox
    except ImportError as e:  # an optional dependency: say how to get it
        raise ImportError("the paper's PGD protocol needs Foolbox 3: pip install 'dsnet_zoo[eval]' "
                          "(or pip install 'foolbox>=3.3.3,<3.4')") from e
    major = int(str(foolbox.__version__).split(".")[0])
    if major != 3:
        raise ImportError(f"the paper's PGD protocol needs Foolbox 3.x, found {foolbox.__version__}")
    return foolbox


def clean_outcomes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512,
                   device: str | torch.device = "cpu", channels_last: bool | None = None) -> torch.Tensor:
    """Per-example clean correctness (BoolTensor [N]): ``argmax model(x) == y``, in eval mode.

    ``channels_last`` (default: on for CPU) only changes the memory layout, for speed; the model is
    returned to the contiguous layout afterwards.
    """
    if x.dim() != 4 or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"expected x [N, C, H, W] and y [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cpu"
    model = model.eval().to(device)
    outs = []
    with weights_in_layout(model, channels_last) as layout, torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(device).contiguous(memory_format=layout)
            outs.append((model(xb).argmax(1).cpu() == y[i:i + batch_size].cpu()))
    return torch.cat(outs) if outs else torch.zeros(0, dtype=torch.bool)


def paper_pgd_outcomes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list=PAPER_EPS_GRID, *,
                       batch_size: int = 256, device: str | torch.device = "cpu",
                       seed: int = 0, channels_last: bool | None = None) -> dict[float, torch.Tensor]:
    """Per-example outcome of the paper's attack: ``{eps: BoolTensor[N]}``, True where the example is
    still correctly classified after Foolbox ``L2PGD(steps=10)`` at L2 radius ``eps`` (pixel space).

    ``x``: float images [N, C, H, W] in [0, 1]; ``y``: integer labels [N]. The model is put in eval
    mode and moved to ``device``. The random starts come from torch's global generator seeded with
    ``seed`` inside a forked RNG state, so the outcome is reproducible and the caller's RNG untouched.
    The batch split changes the random draws but not what is computed (the model has no batch coupling).
    ``channels_last`` (default: on for CPU) runs the convolutions in that memory layout, for speed.
    """
    fb = _foolbox()
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor [N, C, H, W], got {getattr(x, 'shape', type(x))}")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be an integer tensor [N] matching x, got {getattr(y, 'shape', type(y))}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError("x must lie in [0, 1] (the attack's bounds); normalisation belongs inside the model")
    eps_values = [float(e) for e in eps_list]
    if not eps_values or any(e < 0 for e in eps_values):
        raise ValueError(f"eps_list must be non-empty and non-negative, got {list(eps_list)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cpu"
    model = model.eval().to(device)
    # Speed only, not semantics: the attack needs gradients w.r.t. the input, not the weights, and
    # channels-last convolutions are about twice as fast on CPU (summation order changes at the 1e-7
    # level). Both are undone on exit.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
    attack = fb.attacks.L2PGD(steps=10)
    outs: list[torch.Tensor] = []
    fork_devices = [device] if device.type == "cuda" else []
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with weights_in_layout(model, channels_last) as layout, torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size].to(device).contiguous(memory_format=layout)
                yb = y[i:i + batch_size].to(device).long()
                _, _, success = attack(fmodel, xb, yb, epsilons=eps_values)
                outs.append((~success).cpu())  # [n_eps, batch]
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    robust = torch.cat(outs, dim=1) if outs else torch.zeros(len(eps_values), 0, dtype=torch.bool)
    return {e: robust[k].clone() for k, e in enumerate(eps_values)}


def paper_pgd_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_list=PAPER_EPS_GRID,
                       **kwargs) -> dict[float, float]:
    """Robust accuracy per radius under the paper's protocol (mean of :func:`paper_pgd_outcomes`)."""
    return {e: float(o.float().mean()) for e, o in paper_pgd_outcomes(model, x, y, eps_list, **kwargs).items()}
