"""Sound float64 arithmetic for the rules: singular values rounded outward, products of
nonnegative bounds, and the norm interval of an affine map."""

from __future__ import annotations

import math

import torch

__all__ = [
    "U64",
    "linear_interval",
    "mul",
    "products",
    "sigma",
    "sigma_blocks",
    "sigma_half_product_plus_identity",
    "sigma_half_product_plus_identity_times",
    "sigma_half_triple_plus_identity",
    "sigma_min",
    "sigma_pairs_max",
    "sigma_triple",
    "vnorm",
]

U64 = 2.0**-53  # unit roundoff of float64


def svd_slack(w: torch.Tensor) -> float:
    """Relative slack covering a float64 SVD's error.

    A backward-stable SVD returns the exact singular values of ``A + E`` with
    ``‖E‖₂ <= p(m, n)·u·‖A‖₂``; by Weyl's inequality each computed value is within ``‖E‖₂`` of
    the true one. ``p = 16·max(m, n)`` is generous for LAPACK's one-sided methods.
    """
    return 16.0 * max(w.shape[-2:]) * U64


def sigma(w: torch.Tensor) -> float:
    """An upper bound on the largest singular value: the float64 SVD's value rounded outward.

    With ``γ`` the slack of :func:`svd_slack`, ``σ <= σ̂ + γσ``, so ``σ <= σ̂/(1 − γ)``.
    """
    w = w.detach().double()
    value = float(torch.linalg.matrix_norm(w, ord=2))
    return math.nextafter(value / (1.0 - svd_slack(w)), math.inf)


def sigma_min(w: torch.Tensor) -> float:
    """A lower bound on the smallest singular value of a square matrix (0 for a wide or tall
    one): ``σ̂_min − γ·σ_max``, rounded down and clamped at 0."""
    w = w.detach().double()
    if w.shape[0] != w.shape[1]:
        return 0.0
    sv = torch.linalg.svdvals(w)
    gamma = svd_slack(w)
    low = float(sv[-1]) - gamma * float(sv[0]) / (1.0 - gamma)
    return max(0.0, math.nextafter(low, -math.inf))


def vnorm(b: torch.Tensor | None) -> float:
    return 0.0 if b is None else float(b.detach().double().norm())


def mul(a: float, b: float) -> float:
    """Product of nonnegative bounds with ``0 · inf = 0`` (a zero map sends everything to 0)."""
    return 0.0 if a == 0 or b == 0 else a * b


def linear_interval(
    w: torch.Tensor, b: torch.Tensor | None, lo: float, hi: float
) -> tuple[float, float]:
    s, smin, bn = sigma(w), sigma_min(w), vnorm(b)
    return max(0.0, mul(smin, lo) - bn), mul(s, hi) + bn


def up(v: float) -> float:
    """``v`` rounded up past the few float64 operations that produced it (``inf`` and 0 stay; NaN,
    an undefined product such as ``0 · inf``, bounds nothing and becomes ``inf``)."""
    if math.isnan(v):
        return math.inf
    if v == 0 or math.isinf(v):
        return v
    return math.nextafter(v * (1.0 + 8.0 * U64), math.inf)


def down(v: float) -> float:
    """``v`` rounded down the same way, and clamped at 0 (a lower bound of a norm)."""
    if v <= 0:
        return 0.0
    return max(0.0, math.nextafter(v * (1.0 - 8.0 * U64), -math.inf))


def gamma(n: int) -> float:
    """Higham's ``γ_n = n u / (1 − n u)``: ``|fl(Σ_k a_k b_k) − Σ_k a_k b_k| ≤ γ_n Σ_k |a_k b_k|``
    for a sum of ``n`` products in any order (Higham, *Accuracy and Stability of Numerical
    Algorithms*, 2nd ed., 2002, §3.1, eq. (3.5))."""
    nu = n * U64
    return math.inf if nu >= 1 else nu / (1.0 - nu)


def _product(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``fl(a b)`` and a bound on ``‖fl(a b) − a b‖_F``: each entry is a sum of ``k`` products,
    within ``γ_k (|a||b|)_ij`` of the exact one (Higham, §3.1); the Frobenius norm of ``|a||b|``,
    itself computed in float64, is widened by ``(1 + γ_k)(1 + γ_{N+1})`` for its own rounding
    (``N`` entries)."""
    a, b = a.detach().double(), b.detach().double()
    k = a.shape[1]
    fro = float((a.abs() @ b.abs()).norm())
    n_entries = a.shape[0] * b.shape[1]
    err = gamma(k) * fro * (1.0 + gamma(k)) * (1.0 + gamma(n_entries + 1))
    return a @ b, up(err)


def sigma_blocks(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """An upper bound on ``‖[A_1 B_1, …, A_H B_H]‖₂`` (products side by side) in exact arithmetic:
    the float64 SVD bound of the computed blocks plus the Frobenius bound on their rounding
    (``‖X‖₂ ≤ ‖fl X‖₂ + ‖X − fl X‖_F``)."""
    found = [_product(a, b) for a, b in pairs]
    blocks, errs = [f[0] for f in found], [f[1] for f in found]
    err = math.sqrt(sum(e * e for e in errs))
    return up(sigma(torch.cat(blocks, dim=1)) + up(err * (1.0 + 2.0 * U64)))


def sigma_triple(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
    """An upper bound on ``‖a b c‖₂`` in exact arithmetic: ``‖a (bc)‖ ≤ ‖a fl(bc)‖ +
    ‖a‖ ‖bc − fl(bc)‖_F``, the first by :func:`sigma_blocks` (which adds its own product's
    rounding), the second from Higham's bound on ``fl(bc)``."""
    bc, err = _product(b, c)
    return up(sigma_blocks([(a, bc)]) + up(sigma(a) * err * (1.0 + 2.0 * U64)))


def sigma_half_triple_plus_identity(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
    """An upper bound on ``‖I + a b c/2‖₂`` in exact arithmetic: that of ``‖I + a fl(bc)/2‖``
    (:func:`sigma_half_product_plus_identity`) plus ``‖a‖ ‖bc − fl(bc)‖_F / 2``."""
    bc, err = _product(b, c)
    return up(sigma_half_product_plus_identity(a, bc) + up(sigma(a) * err / 2 * (1.0 + 2.0 * U64)))


def products(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched :func:`_product`: ``fl(a_i b_i)`` for ``a`` of shape ``(n, p, k)`` and ``b`` of
    shape ``(n, k, q)`` (or one of them unbatched), and per ``i`` a bound on
    ``‖fl(a_i b_i) − a_i b_i‖_F`` (Higham's ``γ_k``, as in :func:`_product`)."""
    a, b = a.detach().double(), b.detach().double()
    k = a.shape[-1]
    fro = torch.linalg.matrix_norm(a.abs() @ b.abs()).reshape(-1)
    n_entries = a.shape[-2] * b.shape[-1]
    scale = gamma(k) * (1.0 + gamma(k)) * (1.0 + gamma(n_entries + 1)) * (1.0 + 8.0 * U64)
    return a @ b, fro * scale


def sigma_pairs_max(
    xs: torch.Tensor, ex: torch.Tensor, ys: torch.Tensor, ey: torch.Tensor
) -> float:
    """An upper bound on ``max_{i,k} ‖X_iᵀ Y_k‖₂`` in exact arithmetic, where ``X_i`` lies within
    ``ex[i]`` (Frobenius) of the computed ``xs[i]`` and ``Y_k`` within ``ey[k]`` of ``ys[k]``:
    ``‖X_iᵀ Y_k‖ ≤ ‖x̂_iᵀ ŷ_k‖ + ex_i ‖ŷ_k‖ + ‖x̂_i‖ ey_k + ex_i ey_k``, each norm of a computed
    matrix rounded outward (:func:`svd_slack`) and the products ``x̂_iᵀ ŷ_k`` bounded with their
    own rounding as in :func:`sigma_blocks`."""
    xs, ys = xs.detach().double(), ys.detach().double()
    prod = torch.einsum("iad,kae->ikde", xs, ys)
    mag = torch.einsum("iad,kae->ikde", xs.abs(), ys.abs())
    k = xs.shape[-2]
    n_entries = prod.shape[-2] * prod.shape[-1]
    err = torch.linalg.matrix_norm(mag) * (
        gamma(k) * (1.0 + gamma(k)) * (1.0 + gamma(n_entries + 1)) * (1.0 + 8.0 * U64)
    )
    slack = 1.0 / (1.0 - svd_slack(prod[0, 0]))
    pn = torch.linalg.matrix_norm(prod, ord=2) * slack + err
    xn = torch.linalg.matrix_norm(xs, ord=2) / (1.0 - svd_slack(xs[0]))
    yn = torch.linalg.matrix_norm(ys, ord=2) / (1.0 - svd_slack(ys[0]))
    exd, eyd = ex.double(), ey.double()
    total = (
        pn + exd[:, None] * yn[None, :] + xn[:, None] * eyd[None, :] + exd[:, None] * eyd[None, :]
    )
    return up(float(total.max()) * (1.0 + 16.0 * U64))


def sigma_half_product_plus_identity(a: torch.Tensor, b: torch.Tensor) -> float:
    """An upper bound on ``‖I + a b/2‖₂`` (``a b`` square) in exact arithmetic: ``fl(a b)/2`` is
    exact after ``fl(a b)``; adding ``I`` rounds each diagonal entry by at most ``u`` of the
    result, so ``‖fl(I + fl(a b)/2) − (I + a b/2)‖_F ≤ ‖fl(a b) − a b‖_F/2 + u‖fl(I + …)‖_F``
    (the last widened by ``1 + γ_{N+1}`` for its own evaluation)."""
    m, err = _half_product_plus_identity(a, b)
    return up(sigma(m) + err)


def _half_product_plus_identity(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``fl(I + fl(a b)/2)`` and a bound on its Frobenius distance to ``I + a b/2`` (see
    :func:`sigma_half_product_plus_identity`)."""
    p, err = _product(a, b)
    m = torch.eye(p.shape[0], dtype=p.dtype, device=p.device) + p / 2
    n_entries = m.shape[0] * m.shape[1]
    add = U64 * float(m.norm()) * (1.0 + U64) * (1.0 + gamma(n_entries + 1))
    return m, up(err / 2 + add)


def sigma_half_product_plus_identity_times(
    a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, ex: float = 0.0
) -> float:
    """An upper bound on ``‖(I + a b/2) X‖₂`` in exact arithmetic, where ``X`` lies within
    ``ex`` (Frobenius) of the computed ``x``: ``‖m̂ x‖`` by :func:`sigma_blocks` (``m̂ =
    fl(I + fl(a b)/2)``), plus ``‖(I + a b/2) − m̂‖_F ‖x‖`` and ``‖I + a b/2‖ ex``."""
    m, err = _half_product_plus_identity(a, b)
    near = sigma_blocks([(m, x.detach().double())])
    return up(near + up(err * sigma(x) * (1.0 + 2.0 * U64)) + up((sigma(m) + err) * ex))


def affine_token_norms(
    w: torch.Tensor, b: torch.Tensor | None, e: torch.Tensor
) -> tuple[float, float]:
    """A sound interval for the norms of the tokens of ``c = e Wᵀ + b`` (exact arithmetic), from
    its float64 evaluation: each entry is within ``γ_{n+1} (|e||W|ᵀ + |b|)`` of the computed one
    (``n`` the inner width), and each computed norm within ``γ_{d+1}`` relative (a sum of ``d``
    squares and a square root)."""
    w, e = w.detach().double(), e.detach().double()
    c = e @ w.T
    mag = e.abs() @ w.abs().T
    if b is not None:
        c = c + b.detach().double()
        mag = mag + b.detach().double().abs()
    err = gamma(w.shape[1] + 1) * float(mag.norm(dim=-1).max())
    tok = c.norm(dim=-1)
    rel = gamma(c.shape[-1] + 1)
    lo = float(tok.min()) * (1.0 - rel) - err
    hi = float(tok.max()) * (1.0 + rel) + err
    return down(lo), up(hi)
