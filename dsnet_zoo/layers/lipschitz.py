"""Certified operator norms, a power-iteration estimate, and 1-Lipschitz linear layers.

Certified bounds (provable *upper* bounds of the L2 operator norm, computed in float64 from the
exact weights that run, then multiplied by ``1 + REL_MARGIN``). What is provable: the reductions
below are exact identities or inequalities; the only numerical step is a float64 FFT plus either a
backward-stable Hermitian eigensolver (``method='eig'``: computed eigenvalues within about
``dim * eps * lambda_max``, i.e. ~1e-13 relative here) or Gram iteration (``method='gram'``: an upper
bound by construction, up to the same rounding). ``REL_MARGIN = 1e-6`` covers that rounding by
seven orders of magnitude.

- Dense ``W``: ``||W||_2`` from the eigenvalues of the smaller Gram matrix (``eigvalsh``), or the
  Gram-iteration bound (``method='gram'``).
- 3x3 (any odd k) convolution, stride 1, ``'same'`` padding, on ``n x n`` inputs:
  * ``padding_mode='circular'``: the operator is block-diagonalised by the ``n x n`` 2-D DFT, its
    singular values are exactly those of the symbols ``K(w) = sum_p k[:, :, p] e^{-i<w, p>}`` over
    the DFT grid; the bound is their largest singular value (exact up to the margin), and the smallest
    one is a certified *lower* bound of ``sigma_min`` (needed by the switching pairs).
  * ``padding_mode='zeros'``: embed ``x`` into an ``N x N`` grid, ``N = n + k - 1``, with zeros. On
    that grid the circular convolution of the embedded input never wraps around a non-zero value,
    so it equals the full zero-padded convolution, and the zero-padded 'same' output is a restriction
    of it: ``A_n = R C_N E`` with ``E`` an isometry and ``R`` a coordinate projection, hence
    ``||A_n|| <= ||C_N||`` = max singular value of the symbol over the ``N x N`` grid. (The ``n x n``
    grid alone is not used: no argument makes it a bound for zero padding.) The bound for ``n`` also
    covers every input of side ``<= n`` (a smaller input is a compression of the ``n x n`` operator).
    Zero padding has no certified lower bound of ``sigma_min`` here (0 is returned).
  Per frequency the block norm is taken from ``eigvalsh`` of the smaller Gram matrix
  (``method='eig'``, default) or bounded by Gram iteration (``method='gram'``, after Delattre,
  Barthelemy, Araujo, Allauzen 2023: ``||M||_2 <= ||G_t||_F^(1/2^t)``, ``G_{t+1} = G_t^H G_t``,
  an upper bound by construction, looser by at most ``rank^(1/2^(t+1))``).

The power-iteration estimate :func:`power_iteration_norm` returns ``||A v||`` for a unit ``v``: a
*lower* bound of ``||A||``. It serves checks, diagnostics and the training-time normaliser's
gradient path, never a certificate.

Layers (:class:`LipConv2d`, :class:`LipLinear`) store an unconstrained ``raw_weight`` and expose the
effective ``weight``. In training mode the effective weight is recomputed at every access
(differentiably, see :class:`ConstrainedLinearMap`); in eval mode it is computed once and cached
until a parameter changes (its ``data_ptr`` or ``_version`` counter, which optimizer steps and
``load_state_dict`` bump), or the dtype/device changes. Cached tensors are constants: don't train in
eval mode.
"""
from __future__ import annotations

import math
import weakref
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .functional import conv_adjoint, conv_op

__all__ = [
    "REL_MARGIN",
    "PADDING_MODES",
    "lip_conv",
    "lip_conv_adjoint",
    "conv_symbols",
    "gram_iteration_norm_bound",
    "singular_value_bounds",
    "operator_norm_bound",
    "power_iteration_norm",
    "operator_power_iteration",
    "empirical_lipschitz",
    "CachedModule",
    "ConstrainedLinearMap",
    "LipConv2d",
    "LipLinear",
    "iter_certified",
    "clear_caches",
    "normalizer_states",
    "load_normalizer_states",
]

REL_MARGIN = 1e-6
PADDING_MODES = ("zeros", "circular")


# -- operators ---------------------------------------------------------------------------------
def _check_padding_mode(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def lip_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             padding_mode: str = "zeros") -> torch.Tensor:
    """``A x + b``: 'same' convolution (zero or circular padding), or dense if ``weight`` is 2-D."""
    if weight.dim() == 2 or padding_mode == "zeros":
        return conv_op(x, weight, bias)
    _check_padding_mode(padding_mode)
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight, bias)


def lip_conv_adjoint(y: torch.Tensor, weight: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """``A^T y``, the exact adjoint of :func:`lip_conv` without bias.

    The adjoint of a circular convolution is the circular convolution with the kernel flipped in
    space and transposed in channels.
    """
    if weight.dim() == 2 or padding_mode == "zeros":
        return conv_adjoint(y, weight)
    _check_padding_mode(padding_mode)
    p = weight.shape[-1] // 2
    return F.conv2d(F.pad(y, (p, p, p, p), mode="circular"), weight.transpose(0, 1).flip(-1, -2))


# -- certified bounds ----------------------------------------------------------------------------
def _check_conv_weight(weight: torch.Tensor) -> None:
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        raise ValueError(f"expected a conv weight [C_out, C_in, k, k] with odd k, got {tuple(weight.shape)}")


def _grid_size(kernel_size: int, input_size: int, padding_mode: str) -> int:
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive int (the spatial side n of n x n inputs), "
                         f"got {input_size!r}")
    if padding_mode == "zeros":
        return input_size + kernel_size - 1
    if input_size < kernel_size:
        raise ValueError(f"circular padding needs input_size >= kernel_size ({kernel_size}), got {input_size}")
    return input_size


def conv_symbols(weight: torch.Tensor, input_size: int, padding_mode: str = "zeros") -> torch.Tensor:
    """The DFT symbols ``K(w)`` [F, C_out, C_in] (complex128) on the grid that certifies the conv.

    Only half the frequencies are returned (``rfft2``): for a real kernel ``K(-w) = conj(K(w))``
    has the same singular values. Phase conventions do not change singular values.
    """
    _check_conv_weight(weight)
    _check_padding_mode(padding_mode)
    n_grid = _grid_size(weight.shape[-1], input_size, padding_mode)
    sym = torch.fft.rfft2(weight.to(torch.float64), s=(n_grid, n_grid))  # [C_out, C_in, N, N//2+1]
    return sym.permute(2, 3, 0, 1).reshape(-1, weight.shape[0], weight.shape[1])


def gram_iteration_norm_bound(mats: torch.Tensor, n_iter: int = 10) -> torch.Tensor:
    """Per-matrix upper bound of the spectral norm by Gram iteration, ``[..., m, n] -> [...]``.

    ``||M||_2 <= ||G_t||_F^(1/2^t)`` with ``G_0 = M``, ``G_{t+1} = G_t^H G_t``; the iterates are
    rescaled to unit Frobenius norm and the scale is tracked in log space (no overflow). Exact in exact
    arithmetic; float64 rounding (~1e-15 relative) is covered by ``REL_MARGIN`` in the callers.
    """
    g = mats.to(torch.complex128 if mats.is_complex() else torch.float64)
    fro = torch.linalg.matrix_norm(g, ord="fro")
    tiny = torch.finfo(torch.float64).tiny
    log_c = torch.log(fro.clamp_min(tiny))
    g = g / fro.clamp_min(tiny)[..., None, None]
    for _ in range(n_iter):
        g = g.mH @ g
        fro = torch.linalg.matrix_norm(g, ord="fro").clamp_min(tiny)
        g = g / fro[..., None, None]
        log_c = 2 * log_c + torch.log(fro)
    return torch.exp(log_c / 2 ** n_iter)


class _SingleThreaded:
    """Run LAPACK single-threaded: MKL's threaded eigensolvers on many small matrices are no faster,
    and on a loaded 2-core machine they were seen to take seconds instead of milliseconds."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        if self.threads > 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.threads > 1:
            torch.set_num_threads(self.threads)


def _block_bounds(mats: torch.Tensor, method: str, need_lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(upper bound of max_i ||M_i||, lower bound of min_i sigma_min(M_i)) for a batch [B, m, n]."""
    if mats.device.type == "cpu":
        with _SingleThreaded():
            return _block_bounds_impl(mats, method, need_lower)
    return _block_bounds_impl(mats, method, need_lower)


def _block_bounds_impl(mats: torch.Tensor, method: str, need_lower: bool) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = mats.shape[-2:]
    lower = mats.new_zeros((), dtype=torch.float64)
    if method == "gram":
        upper = gram_iteration_norm_bound(mats).max()
        lam_max = upper ** 2
    elif method == "eig":
        gram = mats.mH @ mats if n <= m else mats @ mats.mH
        lam = torch.linalg.eigvalsh(gram)
        lam_max = lam[..., -1].max().clamp_min(0)
        upper = lam_max.sqrt()
    else:
        raise ValueError(f"method must be 'eig' or 'gram', got {method!r}")
    if need_lower and n <= m:
        lam_min = (lam if method == "eig" else torch.linalg.eigvalsh(mats.mH @ mats))[..., 0].min()
        # eigvalsh is backward stable: absolute errors ~ dim * eps * lam_max, covered by the margin.
        lower = (lam_min - 2 * REL_MARGIN * lam_max).clamp_min(0).sqrt()
    return upper * (1 + REL_MARGIN), lower


def singular_value_bounds(weight: torch.Tensor, input_size: int | None = None, padding_mode: str = "zeros",
                          method: str = "eig", need_lower: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified ``(upper >= ||A||_2, lower <= sigma_min(A))`` as float64 scalars, differentiable.

    ``A`` is the dense map ``x -> W x`` (2-D weight, ``input_size`` ignored) or the 'same' conv on
    ``n x n`` inputs, ``n = input_size`` (see the module docstring for why these are bounds).
    ``sigma_min`` means ``sqrt(lambda_min(A^T A))``; the lower bound is 0 unless ``need_lower``,
    and always 0 for zero padding or a map into fewer dimensions than it has inputs.
    """
    if weight.dim() == 2:
        return _block_bounds(weight.to(torch.float64)[None], method, need_lower)
    if input_size is None:
        raise ValueError("a conv weight needs input_size (the spatial side n of the n x n inputs)")
    need_lower = need_lower and padding_mode == "circular"
    return _block_bounds(conv_symbols(weight, input_size, padding_mode), method, need_lower)


def operator_norm_bound(weight: torch.Tensor, input_size: int | None = None, padding_mode: str = "zeros",
                        method: str = "eig") -> float:
    """Certified upper bound of ``||A||_2`` as a Python float (see :func:`singular_value_bounds`)."""
    with torch.no_grad():
        return float(singular_value_bounds(weight, input_size, padding_mode, method)[0])


# -- power iteration (a lower bound) -------------------------------------------------------------
def power_iteration_norm(op: Callable[[torch.Tensor], torch.Tensor],
                         adjoint: Callable[[torch.Tensor], torch.Tensor], v0: torch.Tensor,
                         n_iter: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate ``||A||_2`` by power iteration on ``A^T A``, warm-started from ``v0``.

    Returns ``(sigma, v)``: ``v`` the last unit iterate (pass it back as ``v0`` to warm-start) and
    ``sigma = ||A v||``, which is a *lower* bound of ``||A||_2`` (exactly so in exact arithmetic).
    Runs without gradients.
    """
    with torch.no_grad():
        v = v0 / v0.norm().clamp_min(1e-30)
        for _ in range(n_iter):
            w = adjoint(op(v))
            v = w / w.norm().clamp_min(1e-30)
        return op(v).norm(), v


def operator_power_iteration(weight: torch.Tensor, input_size: int | None = None, padding_mode: str = "zeros",
                             v0: torch.Tensor | None = None, n_iter: int = 50,
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`power_iteration_norm` for a dense or 'same'-conv weight (see :func:`lip_conv`)."""
    if v0 is None:
        shape = (1, weight.shape[1]) if weight.dim() == 2 else (1, weight.shape[1], input_size, input_size)
        v0 = torch.randn(shape, dtype=weight.dtype, device=weight.device, generator=generator)
    return power_iteration_norm(lambda v: lip_conv(v, weight, None, padding_mode),
                                lambda y: lip_conv_adjoint(y, weight, padding_mode), v0, n_iter)


def empirical_lipschitz(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                        steps: int = 50, lr: float = 1e-2) -> float:
    """Largest ``||fn(x_i) - fn(y_i)|| / ||x_i - y_i||`` over a batch of pairs, after ``steps`` of Adam
    ascent on that ratio (pairs are moved, ``fn`` is fixed). A *lower* bound of the Lipschitz constant,
    for tests and ``verify``: a certified bound must be ``>=`` it.
    """
    x = x.detach().clone().requires_grad_(True)
    y = y.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x, y], lr=lr)
    best = 0.0

    def ratios():
        d_out = (fn(x) - fn(y)).flatten(1).norm(dim=1)
        return d_out / (x - y).flatten(1).norm(dim=1).clamp_min(1e-12)

    for _ in range(steps):
        r = ratios()
        best = max(best, float(r.detach().max()))
        opt.zero_grad()
        (-r.sum()).backward()
        opt.step()
    with torch.no_grad():
        best = max(best, float(ratios().max()))
    return best


# -- caching --------------------------------------------------------------------------------------
class CachedModule(nn.Module):
    """A module whose derived tensors (normalised weights, step sizes) are cached in eval mode.

    ``self._cached(name, fn)`` returns ``fn()``; in training mode it is recomputed each call, in
    eval mode it is computed once under ``no_grad`` and reused until a parameter of this module
    (recursively) is replaced or modified in place (its ``_version`` counter: optimizer steps,
    ``load_state_dict``, in-place ops under ``no_grad``), the dtype/device changes, or the mode
    changes. In-place edits through ``param.data`` bypass the version counter: call
    :meth:`clear_cache` after them (or edit under ``torch.no_grad()`` without ``.data``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, tuple[tuple, list, object]] = {}

    def _params_key(self) -> tuple:
        # Tensors made under inference_mode cannot be saved for backward later: keep their cache apart.
        return (torch.is_inference_mode_enabled(),) + tuple(
            (p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    def _cached(self, name: str, fn: Callable[[], object]):
        if self.training:
            return fn()
        try:
            key = self._params_key()
        except RuntimeError:  # parameters made under inference_mode have no version counter: no cache
            with torch.no_grad():
                return fn()
        params = list(self.parameters())
        hit = self._cache.get(name)
        # identity check too: a replaced parameter may reuse a freed address with version 0
        if hit is not None and hit[0] == key and len(hit[1]) == len(params) and all(
                r() is p for r, p in zip(hit[1], params)):
            return hit[2]
        with torch.no_grad():
            value = fn()
        self._cache[name] = (key, [weakref.ref(p) for p in params], value)
        return value

    def train(self, mode: bool = True):
        if mode != self.training:
            self._cache.clear()
        return super().train(mode)

    def clear_cache(self) -> None:
        for m in self.modules():
            if isinstance(m, CachedModule):
                m._cache.clear()


# -- constrained linear maps ----------------------------------------------------------------------
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
        _check_padding_mode(padding_mode)
        if kernel_size is not None:
            if kernel_size % 2 != 1:
                raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
            _grid_size(kernel_size, input_size, padding_mode)  # validates input_size
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


def clear_caches(module: nn.Module) -> None:
    """Drop the eval-mode caches of every :class:`CachedModule` inside ``module``."""
    for m in module.modules():
        if isinstance(m, CachedModule):
            m._cache.clear()


def iter_certified(module: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    """Every sub-module with a ``lipschitz_upper_bound`` method, with its qualified name."""
    for name, m in module.named_modules():
        if hasattr(m, "lipschitz_upper_bound"):
            yield name, m
