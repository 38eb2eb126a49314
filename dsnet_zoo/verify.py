"""Measure each structural claim of a model, in float64, and say whether it holds.

Claims and how they are measured (all on a float64 deep copy of the model, in eval mode):

- ``lipschitz_certified``: ``model.lipschitz_upper_bound()`` (and ``feature_lipschitz_upper_bound()``)
  as the model reports them; invalid when not a finite number >= 0.
- ``lipschitz_empirical``: the largest ratio ``||f(x) - f(y)|| / ||x - y||`` found by gradient ascent
  (:func:`dsnet_zoo.layers.diagnostics.empirical_lipschitz`: Adam on ``x`` and ``y - x``) from
  :func:`random_pairs` of images in ``[0, 1]``; every ratio is evaluated at points actually inside
  the box, so it is a valid *lower* bound of the true constant. Fails when it exceeds the certified
  bound by more than a relative ``1e-6``.
- Per structured block (``model.structure_blocks()`` -> ``(name, block, kind)``), at a small
  spatial size (conv blocks are size-agnostic) so the full Jacobian ``J`` is affordable:
  ``symplectic`` ``max|J^T Omega J - Omega|``; ``volume`` ``|log|det J||``; ``inverse``
  ``max|block.inverse(block(x)) - x|`` (any block with ``inverse``); ``conserved_sum`` the relative
  error ``|sum f(x) - sum x| / max(sum|x|, sum|f(x)|)`` per sample (kind ``mass``); ``norm`` ``| ||f(x)|| - ||x|| | /
  ||x||`` (kind ``sphere``).
- ``model_inverse`` (models with ``inverse(features)``, the exactly invertible feature extractors of hamnet
  and vpnet): the largest relative reconstruction error ``||inverse(forward_features(x)) - x|| / ||x||`` over
  images ``x``: real test images when given (``images=``; the CLI's ``--images N``), else seeded random ones.

Tolerances (float64): symplectic and volume ``1e-10 * max(1, max|J|)^2`` (rounding grows with the
size of the entries), inverse ``1e-10 * max(1, max|x|, max|f(x)|)``, conserved sum and norm ``1e-12``,
model inverse ``1e-10`` (relative).
A claim that does not apply to a model is reported as "n/a".

The block protocol: ``model.structure_blocks()`` returns ``(name, block, kind)`` tuples with
``kind`` in ``{'symplectic', 'volume', 'mass', 'sphere'}``; each block has
``sample_input(spatial, batch, dtype, generator)`` returning a random input of its shape, and
``inverse(y)`` where it is exactly invertible.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .layers.diagnostics import empirical_lipschitz

__all__ = ["ClaimResult", "VerifyReport", "verify_model", "random_pairs", "block_jacobian",
           "symplectic_error", "volume_error", "inverse_error", "conserved_sum_error", "norm_error",
           "reconstruction_error",
           "TOLERANCES", "CLAIMS"]

TOLERANCES = {"symplectic": 1e-10, "volume": 1e-10, "inverse": 1e-10, "conserved_sum": 1e-12, "norm": 1e-12,
              "model_inverse": 1e-10, "lipschitz_rel": 1e-6}

# claim key -> human label, in report order
CLAIMS = {
    "lipschitz_certified": "certified Lipschitz bound",
    "lipschitz_empirical": "empirical Lipschitz ratio (gradient ascent)",
    "feature_lipschitz_certified": "certified feature Lipschitz bound",
    "feature_lipschitz_empirical": "empirical feature Lipschitz ratio",
    "symplectic": "symplecticity error max|J^T Omega J - Omega|",
    "volume": "volume error |log|det J||",
    "inverse": "inverse error max|f^-1(f(x)) - x|",
    "model_inverse": "image reconstruction |inverse(features) - x| / |x|",
    "conserved_sum": "conserved-sum error (relative)",
    "norm": "norm error (relative, sphere)",
}

_KIND_CLAIM = {"symplectic": "symplectic", "volume": "volume", "mass": "conserved_sum", "sphere": "norm"}


@dataclass
class ClaimResult:
    """One claim: its worst measured ``value`` against ``tolerance``; ``passed`` is ``None`` when
    the claim is informational (a certified bound) or does not apply (``applies=False``)."""

    claim: str
    label: str
    applies: bool = False
    value: float | None = None
    tolerance: float | None = None
    passed: bool | None = None
    detail: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class VerifyReport:
    name: str
    claims: dict[str, ClaimResult]
    settings: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.claims.values())

    def failures(self) -> list[ClaimResult]:
        return [c for c in self.claims.values() if c.passed is False]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "settings": dict(self.settings),
                "claims": {k: asdict(v) for k, v in self.claims.items()}}


# ----------------------------------------------------------------------------------------------
# measurements on one block


def block_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
    """The full Jacobian of ``fn`` at ``x`` (a batch of one) as an ``(n_out, n_in)`` matrix."""
    if x.shape[0] != 1:
        raise ValueError(f"block_jacobian needs a batch of one sample, got batch {x.shape[0]}")
    shape = x.shape

    def flat(z: torch.Tensor) -> torch.Tensor:
        return fn(z.reshape(shape)).reshape(-1)

    return torch.func.jacrev(flat, chunk_size=chunk_size)(x.reshape(-1).detach())


def symplectic_error(jac: torch.Tensor) -> float:
    """``max|J^T Omega J - Omega|`` with ``Omega = [[0, I], [-I, 0]]`` (first half of the
    coordinates ``q``, second half ``p``)."""
    n = jac.shape[0]
    if n % 2 or jac.shape[1] != n:
        raise ValueError(f"symplecticity needs a square Jacobian of even size, got {tuple(jac.shape)}")
    k = n // 2
    upper, lower = jac[:k], jac[k:]
    form = upper.T @ lower - lower.T @ upper
    form[:k, k:] -= torch.eye(k, dtype=jac.dtype, device=jac.device)
    form[k:, :k] += torch.eye(k, dtype=jac.dtype, device=jac.device)
    return form.abs().max().item()


def volume_error(jac: torch.Tensor) -> float:
    """``|log|det J||``."""
    sign, logabs = torch.linalg.slogdet(jac)
    if sign.item() == 0:
        return math.inf
    return abs(logabs.item())


def inverse_error(block: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """``(max|inverse(block(x)) - x|, scale)`` with ``scale = max(1, max|x|, max|block(x)|)``."""
    y = block(x)
    err = (block.inverse(y) - x).abs().max().item()
    return err, max(1.0, x.abs().max().item(), y.abs().max().item())


def reconstruction_error(model: nn.Module, x: torch.Tensor) -> float:
    """The largest relative error ``||model.inverse(model.forward_features(x_i)) - x_i|| / ||x_i||`` over the
    images ``x_i`` (in ``x``'s dtype; eval mode)."""
    with torch.no_grad():
        rec = model.inverse(model.forward_features(x))
    err = (rec - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(torch.finfo(x.dtype).tiny)
    return err.max().item()


def conserved_sum_error(block: nn.Module, x: torch.Tensor) -> float:
    """Worst per-sample ``|sum f(x) - sum x| / max(sum|x|, sum|f(x)|)`` (rounding of the sums
    scales with the larger of the two masses)."""
    y = block(x)
    diff = (y.flatten(1).sum(1) - x.flatten(1).sum(1)).abs()
    scale = torch.maximum(x.flatten(1).abs().sum(1), y.flatten(1).abs().sum(1)).clamp_min(1e-300)
    return (diff / scale).max().item()


def norm_error(block: nn.Module, x: torch.Tensor) -> float:
    """Worst per-sample ``| ||f(x)|| - ||x|| | / ||x||``."""
    y = block(x)
    nx = x.flatten(1).norm(dim=1)
    return ((y.flatten(1).norm(dim=1) - nx).abs() / nx.clamp_min(1e-300)).max().item()


# ----------------------------------------------------------------------------------------------
# starting pairs of the empirical Lipschitz ratio


def random_pairs(input_shape: Sequence[int], *, pairs: int = 8, seed: int = 0, dtype: torch.dtype = torch.float64,
                 box: tuple[float, float] = (0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting pairs of the gradient ascent: ``x`` uniform in the box, ``y = x + 1e-2 * N(0, 1)``
    (``y`` is clamped into the box by :func:`~dsnet_zoo.layers.diagnostics.empirical_lipschitz`)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = box
    x = lo + (hi - lo) * torch.rand((pairs, *input_shape), generator=gen, dtype=dtype)
    return x, x + 1e-2 * torch.randn((pairs, *input_shape), generator=gen, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# the whole model


def _certified(model: nn.Module, method: str) -> float | None:
    fn = getattr(model, method, None)
    if fn is None:
        return None
    value = fn()
    return None if value is None else float(value)


def _input_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    if input_size is not None:
        return tuple(input_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("input_size"):
        return tuple(cfg["input_size"])
    raise ValueError("cannot tell the model's input size: pass input_size=(C, H, W) "
                     "(or set pretrained_cfg['input_size'])")


def _lipschitz_claims(model: nn.Module, claims: dict[str, ClaimResult], *, prefix: str,
                      method: str, fn64: Callable, input_size, pairs: int, steps: int, seed: int) -> None:
    cert = claims[f"{prefix}lipschitz_certified"]
    emp = claims[f"{prefix}lipschitz_empirical"]
    bound = _certified(model, method)
    if bound is None:
        return
    cert.applies = True
    cert.value = bound
    if not (math.isfinite(bound) and bound >= 0):
        cert.passed = False
        cert.detail = f"{method}() returned {bound!r}, not a finite number >= 0"
        return
    x, y = random_pairs(_input_size(model, input_size), pairs=pairs, seed=seed)
    ratio = empirical_lipschitz(fn64, x, y, steps=steps, box=(0.0, 1.0))
    emp.applies = True
    emp.value = ratio
    emp.tolerance = bound * (1 + TOLERANCES["lipschitz_rel"])
    emp.passed = ratio <= emp.tolerance
    emp.detail = f"{ratio / bound:.4f} of the certified bound" if bound > 0 else ""


def verify_model(model: nn.Module, name: str = "", *, spatial: int = 4, seed: int = 0, pairs: int = 8,
                 steps: int = 100, input_size: Sequence[int] | None = None,
                 blocks: Sequence[tuple[str, nn.Module, str]] | None = None,
                 images: torch.Tensor | None = None, images_label: str = "") -> VerifyReport:
    """Measure every claim of ``model`` (see the module doc) and return a :class:`VerifyReport`.

    ``blocks`` overrides ``model.structure_blocks()``; ``spatial`` is the side of the random inputs
    given to conv blocks; ``pairs`` and ``steps`` set the gradient ascent of the Lipschitz ratio.
    ``images`` (float, in [0, 1]) are the inputs of the model-inverse claim, ``images_label`` says what they
    are; without them 4 seeded random images are used.
    """
    claims = {k: ClaimResult(k, label) for k, label in CLAIMS.items()}
    model64 = copy.deepcopy(model).double().eval()
    gen = torch.Generator().manual_seed(seed)

    _lipschitz_claims(model, claims, prefix="", method="lipschitz_upper_bound", fn64=model64,
                      input_size=input_size, pairs=pairs, steps=steps, seed=seed)
    if hasattr(model64, "forward_features") and hasattr(model64, "forward_head"):
        def features(x: torch.Tensor) -> torch.Tensor:
            return model64.forward_head(model64.forward_features(x), pre_logits=True)

        _lipschitz_claims(model, claims, prefix="feature_", method="feature_lipschitz_upper_bound",
                          fn64=features, input_size=input_size, pairs=pairs, steps=steps, seed=seed + 1)

    if blocks is None:
        blocks = model64.structure_blocks() if hasattr(model64, "structure_blocks") else []
    else:  # the caller's blocks belong to the float32 model: measure float64 copies
        blocks = [(n, copy.deepcopy(b).double().eval(), k) for n, b in blocks]

    with torch.no_grad():
        for bname, block, kind in blocks:
            if kind not in _KIND_CLAIM:
                raise ValueError(f"block {bname!r} has unknown kind {kind!r}; use one of {sorted(_KIND_CLAIM)}")
            if not hasattr(block, "sample_input"):
                raise ValueError(f"block {bname!r} ({type(block).__name__}) has no sample_input(spatial, batch, dtype, "
                                 "generator): add one so verify knows the shape of its input")
            x = block.sample_input(spatial=spatial, batch=1 if kind in ("symplectic", "volume") else 4,
                                   dtype=torch.float64, generator=gen)
            claim = claims[_KIND_CLAIM[kind]]
            if kind in ("symplectic", "volume"):
                with torch.enable_grad():
                    jac = block_jacobian(block, x)
                scale = max(1.0, jac.abs().max().item()) ** 2
                value = symplectic_error(jac) if kind == "symplectic" else volume_error(jac)
                _record(claim, bname, value, TOLERANCES[kind] * scale, n=jac.shape[0])
            elif kind == "mass":
                _record(claim, bname, conserved_sum_error(block, x), TOLERANCES["conserved_sum"])
            else:
                _record(claim, bname, norm_error(block, x), TOLERANCES["norm"])
            if hasattr(block, "inverse"):
                err, scale = inverse_error(block, x)
                _record(claims["inverse"], bname, err, TOLERANCES["inverse"] * scale)

    if hasattr(model64, "inverse") and hasattr(model64, "forward_features"):
        if images is None:
            x = torch.rand((4, *_input_size(model, input_size)), dtype=torch.float64, generator=gen)
            images_label = "4 random images"
        else:
            x = images.to(torch.float64)
            images_label = images_label or f"{len(x)} given images"
        claim = claims["model_inverse"]
        _record(claim, "model", reconstruction_error(model64, x), TOLERANCES["model_inverse"])
        claim.detail = images_label

    settings = {"dtype": "float64", "spatial": spatial, "seed": seed, "pairs": pairs, "steps": steps,
                "blocks": len(blocks)}
    return VerifyReport(name=name, claims=claims, settings=settings)


def _record(claim: ClaimResult, block: str, value: float, tolerance: float, **extra: Any) -> None:
    ok = value <= tolerance
    claim.blocks.append({"block": block, "value": value, "tolerance": tolerance, "passed": ok, **extra})
    claim.applies = True
    # the claim's headline is its worst block relative to that block's tolerance
    worst = max(claim.blocks, key=lambda b: b["value"] / b["tolerance"] if b["tolerance"] > 0 else math.inf)
    claim.value, claim.tolerance = worst["value"], worst["tolerance"]
    claim.passed = all(b["passed"] for b in claim.blocks)
    failed = sum(not b["passed"] for b in claim.blocks)
    claim.detail = f"{len(claim.blocks)} blocks" + (f", {failed} FAILED (worst: {worst['block']})" if failed else "")
