"""Gradient-flow steps and the paper's switching pairs, each with a certified Lipschitz bound.

Notation: ``A`` a dense or 'same'-conv map (:class:`~dsnet_zoo.layers.constrained_linear.ConstrainedLinearMap`),
``L >= ||A||_2`` and ``s <= sigma_min(A)`` its certified bounds (``s = 0`` unless certified, which needs
circular padding or a dense map), ``sigma`` a LeakyReLU with slope ``a`` in ``[0, 1]`` (``a = 0``: ReLU),
so ``sigma'`` lies in ``[a, 1]``.

The bound used for a contractive step ``x <- x - h A^T sigma(A x + b)``: for inputs ``x, y``,
``sigma(A x + b) - sigma(A y + b) = D A (x - y)`` with ``D`` diagonal, entries in ``[a, 1]`` (difference
quotients of a monotone function with slopes in ``[a, 1]``), so the difference of the outputs is
``(I - h A^T D A)(x - y)``. ``M = A^T D A`` is symmetric with spectrum in ``[a s^2, L^2]``
(``z^T M z >= a ||A z||^2 >= a s^2 ||z||^2``), hence

    Lip <= rho(h) = max(|1 - h a s^2|, |1 - h L^2|),

which is ``<= 1`` whenever ``h L^2 <= 2`` (non-expansive), and ``< 1`` when also ``a s^2 > 0``. This is
never larger than the paper's ``sqrt(1 - 2 h a s^2 + h^2 L^4)`` (from expanding ``||(I - hM) z||^2``),
which equals ``sqrt(1 - h_c/2 + h_c^2/4)`` for ``h = h_c / 2``, ``a = 1/2``, ``s = L = 1``.

Expansive steps: ``x + h A^T sigma(A x + b)`` has ``Lip <= 1 + h L^2`` (``I + h M``, ``M`` as above);
``x + h sigma(W x + v)`` has ``Lip <= 1 + h ||W||``.

Step sizes are parametrised so the condition holds by construction: ``h = max_step * sigmoid(u) / L^2``
with ``L`` the certified bound of the weight that runs (``L = 1`` when ``A`` is normalised by its
certified bound). In eval mode the weights, step sizes and certified constants are cached
(:class:`~dsnet_zoo.layers.caching.CachedModule`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .caching import CachedModule
from .constrained_linear import ConstrainedLinearMap

__all__ = [
    "contractive_factor",
    "prescribed_expansive_step",
    "ContractiveStep",
    "ExpansiveStep",
    "SwitchingPair",
]

# Guards shrink the expansive step by this relative amount so that float32 rounding of the step
# that runs cannot push a pair's certified factor above 1.
_GUARD_SLACK = 1e-6


def contractive_factor(h: float, L: float, s: float = 0.0, negative_slope: float = 0.0) -> float:
    """``max(|1 - h a s^2|, |1 - h L^2|)``: Lipschitz bound of ``x - h A^T sigma(A x + b)``.

    ``L >= ||A||``, ``s <= sigma_min(A)``, ``a = negative_slope`` (``sigma'`` in ``[a, 1]``).
    """
    return max(abs(1.0 - h * negative_slope * s * s), abs(1.0 - h * L * L))


def prescribed_expansive_step(h_c: float, negative_slope: float = 0.5, substeps: int = 2) -> float:
    """The paper's prescribed coupling: the ``h_e`` with
    ``(1 + h_e/S) sqrt(1 - 2 a h_c/S + (h_c/S)^2) = 1`` (``S = 2``, ``a = 1/2``: ``(1 + h_e/2)
    sqrt(1 - h_c/2 + h_c^2/4) = 1``; ``h_c = 0.3`` gives ``h_e = 0.1412``). Non-expansive for
    orthogonal ``A`` and ``||W|| <= 1``; :class:`SwitchingPair` certifies it for the weights that run.
    """
    hc = h_c / substeps
    q = 1.0 - 2.0 * negative_slope * hc + hc * hc
    if not 0 < q < 1:
        raise ValueError(f"h_c={h_c} gives no expansion room (1 - 2 a h + h^2 = {q}); pick 0 < h_c/S < 2a")
    return substeps * (1.0 / math.sqrt(q) - 1.0)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _check_slope(negative_slope: float) -> None:
    if not 0.0 <= negative_slope <= 1.0:
        raise ValueError(f"negative_slope must lie in [0, 1] (sigma' in [a, 1]), got {negative_slope}")


def _make_map(features, kernel_size, input_size, padding_mode, normalize, method, train_normalizer, cert_every,
              hidden=None):
    return ConstrainedLinearMap(features, hidden or features, kernel_size, input_size=input_size, bias=True,
                                padding_mode=padding_mode, normalize=normalize, method=method,
                                train_normalizer=train_normalizer, cert_every=cert_every)


class _StepBase(CachedModule):
    def _op_constants(self, op: ConstrainedLinearMap, weight: torch.Tensor,
                      need_lower: bool = True) -> tuple[float, float]:
        """``(L, s)`` used to set step sizes in forward: certified in eval mode; in training the
        normalised bound (1) and the last training-time refresh of ``s / L``.

        An eval-mode normalised map runs ``raw / (B (1 + REL_MARGIN))`` with ``B >= ||raw||``
        certified, so ``L = 1`` is a bound without recomputing it (``lipschitz_upper_bound()`` does
        recompute it from the weight that runs)."""
        if not self.training:
            if op.normalize and not need_lower:
                return 1.0, 0.0
            # exactly the constants lipschitz_upper_bound() uses: rho is not monotone in L
            return op.singular_value_bounds()
        if op.normalize:
            return 1.0, op.train_time_min_ratio()
        with torch.no_grad():
            up, _ = op._bounds(weight.detach())
        return float(up), 0.0

    def plan(self) -> dict:
        """Weights and step sizes that run (cached in eval mode)."""
        return self._cached("plan", self._plan)

    def _plan(self) -> dict:
        raise NotImplementedError


class ContractiveStep(_StepBase):
    """``x <- x - h A^T sigma(A x + b)``: explicit Euler on the gradient flow of a convex potential.

    Guarantee: ``Lip <= max(|1 - h a s^2|, |1 - h L^2|) <= 1`` (see the module docstring), as
    ``h = max_step * sigmoid(u) / L^2 < 2 / L^2`` with ``max_step <= 2``. ``max_step > 2`` is
    accepted (the bound stays valid and reports the expansion) so that tests can break the condition.
    ``kernel_size=None`` gives the dense form (``features``-dimensional vectors). ``hidden`` is the
    number of rows (channels) of ``A`` (default ``features``); the bound holds for any ``hidden``.
    """

    def __init__(self, features: int, kernel_size: int | None = 3, *, hidden: int | None = None,
                 input_size: int | None = None,
                 padding_mode: str = "zeros", negative_slope: float = 0.0, max_step: float = 2.0,
                 init_step: float = 1.0, normalize: bool = True, method: str = "eig",
                 train_normalizer: str | None = None, cert_every: int = 10) -> None:
        super().__init__()
        _check_slope(negative_slope)
        if not max_step > 0 or not 0 < init_step < max_step:
            raise ValueError(f"need max_step > 0 and 0 < init_step < max_step, got {max_step}, {init_step}")
        self.negative_slope, self.max_step = float(negative_slope), float(max_step)
        self.A = _make_map(features, kernel_size, input_size, padding_mode, normalize, method,
                           train_normalizer, cert_every, hidden)
        self.u = torch.nn.Parameter(torch.tensor(_logit(init_step / max_step)))

    def _plan(self) -> dict:
        a = self.A.weight
        L, _ = self._op_constants(self.A, a, need_lower=False)
        h = (self.max_step * torch.sigmoid(self.u) / (L * L)).to(a.dtype)
        return {"A": a, "h": h}

    def step_size(self) -> float:
        return float(self.plan()["h"].detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.A.check_input(x)
        p = self.plan()
        z = self.A.op(x, p["A"], self.A.bias)
        z = F.relu(z) if self.negative_slope == 0 else F.leaky_relu(z, self.negative_slope)
        return x - p["h"] * self.A.adjoint(z, p["A"])

    def lipschitz_upper_bound(self) -> float:
        """Certified bound ``max(|1 - h a s^2|, |1 - h L^2|)`` for the weights and ``h`` that run."""
        def fn():
            L, s = self.A.singular_value_bounds()
            return contractive_factor(self.step_size(), L, s, self.negative_slope)
        return self._cached("lip", fn)


class ExpansiveStep(_StepBase):
    """An expansive explicit-Euler step, ``h = max_step * sigmoid(u)``.

    - ``form='gradient'``: ``x <- x + h A^T sigma(A x + b)``, ``Lip <= 1 + h L^2``.
    - ``form='residual'``: ``x <- x + h sigma(W x + v)``, ``Lip <= 1 + h ||W||``.
    """

    def __init__(self, features: int, kernel_size: int | None = 3, *, form: str = "gradient",
                 input_size: int | None = None, padding_mode: str = "zeros", negative_slope: float = 0.0,
                 max_step: float = 1.0, init_step: float = 0.1, normalize: bool = True, method: str = "eig",
                 train_normalizer: str | None = None, cert_every: int = 10) -> None:
        super().__init__()
        _check_slope(negative_slope)
        if form not in ("gradient", "residual"):
            raise ValueError(f"form must be 'gradient' or 'residual', got {form!r}")
        if not max_step > 0 or not 0 < init_step < max_step:
            raise ValueError(f"need max_step > 0 and 0 < init_step < max_step, got {max_step}, {init_step}")
        self.form, self.negative_slope, self.max_step = form, float(negative_slope), float(max_step)
        self.A = _make_map(features, kernel_size, input_size, padding_mode, normalize, method,
                           train_normalizer, cert_every)
        self.u = torch.nn.Parameter(torch.tensor(_logit(init_step / max_step)))

    def _plan(self) -> dict:
        a = self.A.weight
        return {"A": a, "h": (self.max_step * torch.sigmoid(self.u)).to(a.dtype)}

    def step_size(self) -> float:
        return float(self.plan()["h"].detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.A.check_input(x)
        p = self.plan()
        z = F.leaky_relu(self.A.op(x, p["A"], self.A.bias), self.negative_slope)
        if self.form == "residual":
            return x + p["h"] * z
        return x + p["h"] * self.A.adjoint(z, p["A"])

    def lipschitz_upper_bound(self) -> float:
        L = self.A.norm_bound()
        return 1.0 + self.step_size() * (L * L if self.form == "gradient" else L)


class SwitchingPair(_StepBase):
    """The paper's switching pairs: expansive and contractive sub-steps whose product is certified.

    - ``mode='prescribed'``: ``substeps`` times ``x <- x + (h_e/S) r sigma(W x + v)``, then
      ``x <- x - (h_c/S) A^T sigma(A x + b)``, ``sigma = LeakyReLU(1/2)``, ``h_c`` fixed, ``h_e`` from the
      paper's coupling (:func:`prescribed_expansive_step`), ``r = sigmoid(.)`` in ``(0, 1)``.
      Bound per sub-step: ``(1 + (h_e/S) r ||W||) * rho(h_c/S)``.
    - ``mode='flexible'``: ``x <- x - (h_1/2) A^T sigma(A x + b)`` twice (LeakyReLU(1/2)), then
      ``x <- x + h_2 A^T ReLU(A x + b)`` with the same ``A``; the paper's box ``h_1`` in ``[0.11, 1.89]``,
      ``h_2`` in ``[0, 0.05]`` (by sigmoids). Bound: ``rho(h_1/2)^2 (1 + h_2 L^2)``.

    ``rho(h) = max(|1 - h a s^2|, |1 - h L^2|)`` needs the smallest singular value ``s`` of ``A``: the
    certified one exists for circular padding (the DFT symbol's exact spectrum) and dense maps, so
    ``padding_mode='circular'`` is the default; with zero padding ``s = 0`` and the contraction vanishes.
    The paper's couplings make the pair non-expansive only for orthogonal ``A``. With ``guard=True`` the
    expansive step that runs is ``min(h_e, cap)``, ``cap`` the largest step whose certified pair bound is
    ``<= 1`` for the current ``L, s`` (computed from the exact weights in eval mode), so the pair is
    non-expansive by construction. ``guard=False`` runs the paper's steps as they are.
    """

    def __init__(self, features: int, kernel_size: int | None = 3, *, mode: str = "prescribed",
                 input_size: int | None = None, padding_mode: str = "circular", negative_slope: float = 0.5,
                 h_c: float = 0.3, substeps: int = 2, contractive_box: tuple[float, float] = (0.11, 1.89),
                 expansive_max: float = 0.05, guard: bool = True, normalize: bool = True, method: str = "eig",
                 train_normalizer: str | None = None, cert_every: int = 10) -> None:
        super().__init__()
        _check_slope(negative_slope)
        if mode not in ("prescribed", "flexible"):
            raise ValueError(f"mode must be 'prescribed' or 'flexible', got {mode!r}")
        if substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        self.mode, self.negative_slope, self.guard = mode, float(negative_slope), guard
        self.substeps = int(substeps) if mode == "prescribed" else 2
        self.A = _make_map(features, kernel_size, input_size, padding_mode, normalize, method,
                           train_normalizer, cert_every)
        if mode == "prescribed":
            self.h_c = float(h_c)
            self.h_e = prescribed_expansive_step(h_c, negative_slope, substeps)
            self.W = _make_map(features, kernel_size, input_size, padding_mode, normalize, method,
                               train_normalizer, cert_every)
            self.r = torch.nn.Parameter(torch.tensor(_logit(0.5)))
        else:
            lo, hi = contractive_box
            if not 0 < lo < hi <= 2:
                raise ValueError(f"contractive_box must satisfy 0 < lo < hi <= 2, got {contractive_box}")
            if not expansive_max > 0:
                raise ValueError(f"expansive_max must be > 0, got {expansive_max}")
            self.box, self.expansive_max = (float(lo), float(hi)), float(expansive_max)
            self.u_c = torch.nn.Parameter(torch.tensor(0.0))
            self.u_e = torch.nn.Parameter(torch.tensor(0.0))

    def _plan(self) -> dict:
        a = self.A.weight
        L, s = self._op_constants(self.A, a)
        S = self.substeps
        if self.mode == "prescribed":
            w = self.W.weight
            L_w, _ = self._op_constants(self.W, w, need_lower=False)
            rho = contractive_factor(self.h_c / S, L, s, self.negative_slope)
            r = torch.sigmoid(self.r)
            coef_e = self.h_e / S * r
            if self.guard:
                cap = (1.0 / rho - 1.0) / L_w * (1 - _GUARD_SLACK)
                coef_e = torch.clamp(coef_e, max=cap)
            return {"A": a, "W": w, "hc": torch.tensor(self.h_c / S, dtype=a.dtype, device=a.device),
                    "coef_e": coef_e.to(a.dtype)}
        lo, hi = self.box
        h1 = lo + (hi - lo) * torch.sigmoid(self.u_c)
        h2 = self.expansive_max * torch.sigmoid(self.u_e)
        if self.guard:
            rho = contractive_factor(float(h1) / 2, L, s, self.negative_slope)
            cap = (1.0 / rho ** 2 - 1.0) / (L * L) * (1 - _GUARD_SLACK)
            h2 = torch.clamp(h2, max=cap)
        return {"A": a, "hc": (h1 / 2).to(a.dtype), "he": h2.to(a.dtype)}

    def _contract(self, x, a, h):
        z = F.leaky_relu(self.A.op(x, a, self.A.bias), self.negative_slope)
        return x - h * self.A.adjoint(z, a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.A.check_input(x)
        p = self.plan()
        if self.mode == "prescribed":
            for _ in range(self.substeps):
                x = x + p["coef_e"] * F.leaky_relu(self.W.op(x, p["W"], self.W.bias), self.negative_slope)
                x = self._contract(x, p["A"], p["hc"])
            return x
        x = self._contract(self._contract(x, p["A"], p["hc"]), p["A"], p["hc"])
        return x + p["he"] * self.A.adjoint(F.relu(self.A.op(x, p["A"], self.A.bias)), p["A"])

    def step_sizes(self) -> dict[str, float]:
        """The step sizes that run (after the guard), as floats."""
        return {k: float(v.detach()) for k, v in self.plan().items() if v.dim() == 0}

    def lipschitz_upper_bound(self) -> float:
        """Certified bound of the pair for the weights and steps that run (see the class docstring)."""
        def fn():
            L, s = self.A.singular_value_bounds()
            st = self.step_sizes()
            rho = contractive_factor(st["hc"], L, s, self.negative_slope)
            if self.mode == "prescribed":
                return ((1.0 + st["coef_e"] * self.W.norm_bound()) * rho) ** self.substeps
            return rho * rho * (1.0 + st["he"] * L * L)
        return self._cached("lip", fn)
