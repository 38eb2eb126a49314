"""1-Lipschitz linear layers: :class:`ConstrainedLinearMap` (dense or 'same' conv), :class:`LipConv2d`,
:class:`LipLinear`, and the training-time normalisers' state.

Layers store an unconstrained ``raw_weight`` and expose the effective ``weight``. In training mode the
effective weight is recomputed at every access (differentiably, see :class:`ConstrainedLinearMap`); in
eval mode it is computed once and cached (:class:`~dsnet_zoo.layers.caching.CachedModule`) until a
parameter changes. The eval-mode weight is divided by its certified norm
(:mod:`~dsnet_zoo.layers.norm_bounds`), so the bound holds for the exact weight that runs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .caching import CachedModule
from .diagnostics import operator_power_iteration
from .functional import check_padding_mode, lip_conv, lip_conv_adjoint
from .norm_bounds import REL_MARGIN, certificate_grid_size, singular_value_bounds

__all__ = ["ConstrainedLinearMap", "LipConv2d", "LipLinear", "normalizer_states", "load_normalizer_states"]


class ConstrainedLinearMap(CachedModule):
    """``x -> A x (+ b)`` with ``A`` a dense or 'same'-conv weight, optionally normalised.

    With ``normalize=True``, in eval mode the effective weight is ``max_norm * raw_weight / (B (1 +
    REL_MARGIN))`` with ``B`` the certified bound of ``raw_weight``: ``||A|| <= max_norm / (1 + REL_MARGIN)``
    provably, for the exact weight that runs (float32 rounding of the division is ~1e-7, inside the
    margin). In training mode a conv (``train_normalizer='power'``) divides instead by a warm-started
    power estimate ``sigma`` (one step per forward, differentiable as in spectral normalisation) times
    the ratio ``B / sigma`` of the last refresh, recomputed every ``cert_every`` steps: training runs
    (nearly) the certified weight at the cost of a power step, and ``cert_every=1`` makes it exact.
    ``train_normalizer='certified'`` (the default of dense maps) differentiates through ``B`` itself;
    a wide dense map trains faster with ``'power'`` (the same scheme as a conv).

    ``input_size`` (conv only) is the largest spatial side the certificate covers: zero padding
    covers every ``n <= input_size``, circular padding exactly ``n == input_size``; other inputs raise.
    """

    # Mixed precision: the normaliser runs in float32 by itself (see ``_compute_weight``), so the training
    # loop's bf16 autocast may run the map's own conv/matmul in bf16 like any other layer's.
    autocast_float32 = False

    def __init__(self, in_features: int, out_features: int, kernel_size: int | None = 3, *,
                 input_size: int | None = None, bias: bool = True, padding_mode: str = "zeros",
                 normalize: bool = True, max_norm: float = 1.0, method: str = "eig",
                 init: str = "orthogonal", train_normalizer: str | None = None, cert_every: int = 10) -> None:
        super().__init__()
        check_padding_mode(padding_mode)
        if kernel_size is not None:
            if kernel_size % 2 != 1:
                raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
            certificate_grid_size(kernel_size, input_size, padding_mode)  # validates input_size
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm}")
        if method not in ("eig", "gram"):
            raise ValueError(f"method must be 'eig' or 'gram', got {method!r}")
        self.in_features, self.out_features = in_features, out_features
        self.kernel_size, self.input_size, self.padding_mode = kernel_size, input_size, padding_mode
        self.normalize, self.max_norm, self.method = normalize, float(max_norm), method
        shape = (out_features, in_features) if kernel_size is None else (
            out_features, in_features, kernel_size, kernel_size)
        self.raw_weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if train_normalizer is None:  # dense maps are cheap to certify at every step unless they are wide
            train_normalizer = "power" if kernel_size is not None else "certified"
        if train_normalizer not in ("power", "certified"):
            raise ValueError(f"train_normalizer must be 'power' or 'certified', got {train_normalizer!r}")
        if cert_every < 1:
            raise ValueError(f"cert_every must be >= 1, got {cert_every}")
        self.train_normalizer = train_normalizer
        self.cert_every = int(cert_every)
        pi_shape = (1, in_features) if kernel_size is None else (1, in_features, input_size, input_size)
        self.register_buffer("_pi_vector", torch.randn(pi_shape), persistent=False)
        # certified bound / power estimate, and certified sigma_min / bound, at the last refresh
        self.register_buffer("_cert_ratio", torch.ones((), dtype=torch.float64), persistent=False)
        self.register_buffer("_min_ratio", torch.zeros((), dtype=torch.float64), persistent=False)
        self._since_refresh: int | None = None
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "orthogonal") -> None:
        with torch.no_grad():
            if init == "orthogonal":  # delta-orthogonal for convs: an isometry up to boundary effects
                q = torch.empty(self.out_features, self.in_features)
                nn.init.orthogonal_(q)
                if self.kernel_size is None:
                    self.raw_weight.copy_(q)
                else:
                    self.raw_weight.zero_()
                    c = self.kernel_size // 2
                    self.raw_weight[:, :, c, c] = q
            elif init == "kaiming":
                nn.init.kaiming_uniform_(self.raw_weight, a=math.sqrt(5))
            else:
                raise ValueError(f"init must be 'orthogonal' or 'kaiming', got {init!r}")
            if self.bias is not None:
                self.bias.zero_()

    @property
    def is_conv(self) -> bool:
        return self.kernel_size is not None

    def _bounds(self, w: torch.Tensor, need_lower: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return singular_value_bounds(w, self.input_size, self.padding_mode, self.method, need_lower)

    def _power_sigma(self, v: torch.Tensor, n_iter: int = 1) -> torch.Tensor:
        """Warm-started power-iteration steps; ``||A u||`` is differentiable in ``v`` (u is not)."""
        with torch.no_grad():
            u = self._pi_vector.to(v.dtype)
            for _ in range(n_iter):
                u = self.adjoint(self.op(u, v), v)
                u = u / u.norm().clamp_min(1e-30)
            self._pi_vector.copy_(u)
        return self.op(u, v).norm().to(torch.float64)

    def _refresh(self, v: torch.Tensor, sigma: torch.Tensor) -> None:
        with torch.no_grad():
            up, lo = self._bounds(v.detach(), need_lower=True)
            self._cert_ratio.copy_(up / sigma.detach().clamp_min(1e-30))
            self._min_ratio.copy_(lo / up)

    def _compute_weight(self) -> torch.Tensor:
        v = self.raw_weight
        if not self.normalize:
            return v
        # The normaliser runs in float32 even inside a bf16 autocast region: a bf16 power estimate
        # would be off by ~0.4 % (the certificate never depends on it, but the trained weights would).
        with torch.autocast(device_type=v.device.type, enabled=False):
            return self._normalised(v)

    def _normalised(self, v: torch.Tensor) -> torch.Tensor:
        if self.training and self.train_normalizer == "power":
            # Training only: the power estimate times the certified/estimate ratio of the last refresh
            # (every ``cert_every`` steps). The certificate never relies on it: in eval mode the weight is
            # divided by the certified bound of ``raw_weight`` itself.
            refresh = self._since_refresh is None or self._since_refresh >= self.cert_every
            # at a refresh, converge the estimate first so the ratio stays valid until the next one
            sigma = self._power_sigma(v, 20 if refresh else 1)
            if refresh:
                self._refresh(v, sigma)
                self._since_refresh = 0
            self._since_refresh += 1
            bound = sigma * self._cert_ratio
        else:
            bound = self._bounds(v)[0]
        scale = bound * (1 + REL_MARGIN) / self.max_norm
        if self.training:
            # in the weight's own dtype: a float64 division and its backward over a wide dense weight
            # cost more than the layer itself; the eval-mode weight (the certified one) is exact
            return v / scale.to(v.dtype)
        return (v.to(torch.float64) / scale).to(v.dtype)

    def _load_from_state_dict(self, *args, **kwargs):
        self._since_refresh = None  # new weights: refresh the training-time ratio at the next step
        return super()._load_from_state_dict(*args, **kwargs)

    def normalizer_state(self) -> dict[str, torch.Tensor]:
        """The training-time normaliser's evolving state (power vector, refresh ratios, steps since the
        last refresh). It is not part of the weights (``state_dict``), but a resumed run needs it to
        continue bit for bit."""
        since = -1 if self._since_refresh is None else self._since_refresh
        return {"pi_vector": self._pi_vector.detach().clone(), "cert_ratio": self._cert_ratio.detach().clone(),
                "min_ratio": self._min_ratio.detach().clone(), "since_refresh": torch.tensor(since)}

    def load_normalizer_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self._pi_vector.copy_(state["pi_vector"])
            self._cert_ratio.copy_(state["cert_ratio"])
            self._min_ratio.copy_(state["min_ratio"])
        since = int(state["since_refresh"])
        self._since_refresh = None if since < 0 else since

    def train_time_min_ratio(self) -> float:
        """Certified ``sigma_min / ||A||`` of ``raw_weight`` at the last training-time refresh (not a certificate)."""
        return float(self._min_ratio)

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight that runs (normalised if ``normalize``)."""
        return self._cached("weight", self._compute_weight)

    def check_input(self, x: torch.Tensor) -> None:
        if not self.is_conv:
            return
        if x.dim() != 4:
            raise ValueError(f"expected NCHW input, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ok = (h <= self.input_size and w <= self.input_size) if self.padding_mode == "zeros" else (
            h == w == self.input_size)
        if not ok:
            rule = "<=" if self.padding_mode == "zeros" else "=="
            raise ValueError(f"this layer's certificate covers {self.padding_mode}-padded inputs with side "
                             f"{rule} {self.input_size}, got {h}x{w}; build it with input_size={max(h, w)}")

    def op(self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        """``A x + b`` with the given (or the effective) weight."""
        return lip_conv(x, self.weight if weight is None else weight, bias, self.padding_mode)

    def adjoint(self, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``A^T y``."""
        return lip_conv_adjoint(y, self.weight if weight is None else weight, self.padding_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.op(x, self.weight, self.bias)

    def norm_bound(self) -> float:
        """Certified upper bound of ``||A||_2`` for the effective weight (recomputed from it)."""
        return self.singular_value_bounds()[0]

    def singular_value_bounds(self) -> tuple[float, float]:
        """Certified ``(upper of ||A||, lower of sigma_min(A))`` of the effective weight."""
        def fn():
            up, lo = self._bounds(self.weight.detach(), need_lower=True)
            return float(up), float(lo)
        return self._cached("sv_bounds", fn)

    def lipschitz_upper_bound(self) -> float:
        """Certified L2 Lipschitz bound of ``x -> A x + b`` (= :meth:`norm_bound`)."""
        return self.norm_bound()

    def power_iteration_estimate(self, n_iter: int = 50, v0: torch.Tensor | None = None,
                                 generator: torch.Generator | None = None) -> float:
        """Power-iteration estimate of ``||A||`` (a *lower* bound; diagnostics only)."""
        n = self.input_size
        return float(operator_power_iteration(self.weight.detach(), n, self.padding_mode, v0, n_iter, generator)[0])

    def extra_repr(self) -> str:
        kind = f"kernel_size={self.kernel_size}, input_size={self.input_size}, padding_mode={self.padding_mode}, " \
            if self.is_conv else ""
        return (f"{self.in_features}, {self.out_features}, {kind}normalize={self.normalize}, "
                f"max_norm={self.max_norm}, bias={self.bias is not None}")


class LipConv2d(ConstrainedLinearMap):
    """1-Lipschitz 'same' convolution (stride 1): ``raw_weight`` scaled by its certified norm.

    Guarantee: ``||conv(x) - conv(y)|| <= max_norm * ||x - y||`` for inputs of side ``<= input_size``
    (zero padding) or ``== input_size`` (circular), for the exact weight that runs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, input_size: int,
                 bias: bool = True, padding_mode: str = "zeros", max_norm: float = 1.0, method: str = "eig",
                 init: str = "orthogonal", train_normalizer: str = "power", cert_every: int = 10) -> None:
        super().__init__(in_channels, out_channels, kernel_size, input_size=input_size, bias=bias,
                         padding_mode=padding_mode, normalize=True, max_norm=max_norm, method=method, init=init,
                         train_normalizer=train_normalizer, cert_every=cert_every)


class LipLinear(ConstrainedLinearMap):
    """Constrained dense layer (the classifier head), ``y = W x + b``.

    - ``mode='spectral'``: ``W = V / (||V||_2 (1 + REL_MARGIN))``, so ``||W||_2 < max_norm``: 1-Lipschitz.
    - ``mode='rownorm'``: every row of ``W`` has norm ``max_norm / (1 + REL_MARGIN)``; the global bound is
      then the certified ``||W||_2`` (up to ``sqrt(num_classes)``), and per class pair
      ``|(z_i - z_j)(x) - (z_i - z_j)(y)| <= ||W_i - W_j|| ||x - y||`` (``||W_i - W_j|| <= 2 max_norm``),
      the quantity the per-class-pair certificate uses.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, mode: str = "spectral",
                 max_norm: float = 1.0, method: str = "eig", train_normalizer: str | None = None,
                 cert_every: int = 10) -> None:
        if mode not in ("spectral", "rownorm"):
            raise ValueError(f"mode must be 'spectral' or 'rownorm', got {mode!r}")
        self.mode = mode
        super().__init__(in_features, out_features, None, bias=bias, normalize=True, max_norm=max_norm,
                         method=method, train_normalizer=train_normalizer, cert_every=cert_every)

    def _compute_weight(self) -> torch.Tensor:
        if self.mode == "spectral":
            return super()._compute_weight()
        v = self.raw_weight.to(torch.float64)
        w = v * (self.max_norm / (1 + REL_MARGIN)) / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return w.to(self.raw_weight.dtype)

    def pair_norms(self) -> torch.Tensor:
        """``||W_i - W_j||`` for every class pair [K, K] (float64), from the weight that runs."""
        w = self.weight.detach().to(torch.float64)
        return torch.cdist(w, w)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}"


def normalizer_states(module: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """:meth:`ConstrainedLinearMap.normalizer_state` of every constrained map in ``module``, by name."""
    return {name: m.normalizer_state() for name, m in module.named_modules() if isinstance(m, ConstrainedLinearMap)}


def load_normalizer_states(module: nn.Module, states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Restore :func:`normalizer_states` (after ``load_state_dict``, which resets them)."""
    maps = {name: m for name, m in module.named_modules() if isinstance(m, ConstrainedLinearMap)}
    if set(maps) != set(states):
        raise ValueError(f"normaliser states do not match the model's constrained maps: missing "
                         f"{sorted(set(maps) - set(states))}, unexpected {sorted(set(states) - set(maps))}")
    for name, m in maps.items():
        m.load_normalizer_state(states[name])
