"""Certified operator norms of dense and 'same'-conv weights.

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
"""
from __future__ import annotations

import torch

from .functional import check_padding_mode

__all__ = ["REL_MARGIN", "conv_symbols", "gram_iteration_norm_bound", "singular_value_bounds", "operator_norm_bound",
           "certificate_grid_size"]

REL_MARGIN = 1e-6


def _check_conv_weight(weight: torch.Tensor) -> None:
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2] or weight.shape[-1] % 2 == 0:
        raise ValueError(f"expected a conv weight [C_out, C_in, k, k] with odd k, got {tuple(weight.shape)}")


def certificate_grid_size(kernel_size: int, input_size: int, padding_mode: str) -> int:
    """The side of the DFT grid whose symbols certify a ``kernel_size`` conv on ``input_size`` inputs
    (``n + k - 1`` for zero padding, ``n`` for circular); raises on an invalid ``input_size``."""
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
    check_padding_mode(padding_mode)
    n_grid = certificate_grid_size(weight.shape[-1], input_size, padding_mode)
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
