"""Matrix-free Krylov routines, batched over starts: the engine's one home for Arnoldi,
Golub–Kahan–Lanczos and symmetric Lanczos, each with full reorthogonalization.

Each takes a product ``v ↦ J v`` (and ``v ↦ Jᵀ v`` for singular values) acting on ``(N, dim)``
rows, one operator per row, and returns a :class:`KrylovResult`: the top values, their residual
bounds, the steps taken and whether each row converged. :mod:`dynamo._spectral` builds the public
verbs on them; the analyses (axes, basins, layers, fixed points, Lipschitz bounds) and the
packages above the engine (through :mod:`dynamo.kernel`) call them directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["KrylovResult", "Op", "arnoldi", "golub_kahan", "lanczos_sym"]

#: a batched linear operator: ``(N, dim) -> (N, out_dim)``, row i by the i-th operator
Op = Callable[[torch.Tensor], torch.Tensor]


def _orth(w: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical Gram–Schmidt twice against the rows of ``basis`` (N, j, n)."""
    if basis.shape[1] == 0:
        return w, torch.zeros(w.shape[0], 0, dtype=w.dtype, device=w.device)
    c1 = torch.einsum("bjn,bn->bj", basis, w)
    w = w - torch.einsum("bjn,bj->bn", basis, c1)
    c2 = torch.einsum("bjn,bn->bj", basis, w)
    w = w - torch.einsum("bjn,bj->bn", basis, c2)
    return w, c1 + c2


def _unit(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nrm = w.norm(dim=1)
    tiny = torch.finfo(w.dtype).tiny ** 0.5
    return w / torch.clamp(nrm, min=tiny)[:, None], nrm


def _extend(
    w: torch.Tensor, basis: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthogonalize ``w`` against ``basis`` and normalize: ``(vector, norm, projections)``.

    Where ``w`` lies in the span already (an invariant subspace: "breakdown"), the coefficient is
    set to 0 and the vector is a fresh random one orthogonal to the basis, so the recurrence goes
    on in a new block instead of producing zero columns and spurious zero Ritz values.
    """
    pre = w.norm(dim=1)
    w, coef = _orth(w, basis)
    nrm = w.norm(dim=1)
    eps = torch.finfo(w.dtype).eps
    broke = nrm <= 64 * eps * torch.clamp(pre, min=torch.finfo(w.dtype).tiny)
    if bool(broke.any()):
        fresh = torch.randn(w.shape, generator=gen, dtype=w.dtype, device=w.device)
        fresh, _ = _orth(fresh, basis)
        w = torch.where(broke[:, None], fresh, w)
        nrm = torch.where(broke, torch.zeros_like(nrm), nrm)
    unit = w / torch.clamp(w.norm(dim=1), min=torch.finfo(w.dtype).tiny)[:, None]
    return unit, nrm, coef


def _min_steps(k: int, dim: int) -> int:
    """Krylov steps before a top-k answer may count as converged.

    A single-vector Krylov space holds one copy of each eigenvalue; copies of an exactly repeated
    one enter only through fresh blocks after breakdowns. Waiting for ``max(2k, k + 10)`` steps
    lets several blocks in before the top k are trusted.
    """
    return min(dim, max(2 * k, k + 10))


def _start(
    n_rows: int, dim: int, dtype: torch.dtype, device: torch.device, seed: int
) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    v = torch.randn(n_rows, dim, generator=gen, dtype=dtype, device=device)
    return _unit(v)[0]


@dataclass(frozen=True)
class KrylovResult:
    """Top values per row (``values``), residual bounds (``residuals``), steps taken and
    ``converged`` (both on the CPU), and the vectors found (``"right"``, and ``"left"`` for
    singular values)."""

    values: torch.Tensor
    residuals: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor
    vectors: dict[str, torch.Tensor]


def golub_kahan(
    mv: Op,
    rmv: Op,
    n_rows: int,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    k: int,
    tol: float,
    max_steps: int,
    seed: int,
    out_dim: int | None = None,
) -> KrylovResult:
    """Top-k singular triplets by Golub–Kahan–Lanczos with full reorthogonalization.

    ``J`` maps ``dim`` (its input, the right vectors) to ``out_dim`` (its output, the left
    vectors; default ``dim``): ``mv`` takes ``(N, dim)`` to ``(N, out_dim)`` and ``rmv`` back, so
    rectangular operators (``dh*/dx``: state × input) work as well as square ones.

    With ``J V = U B`` and ``Jᵀ U = V Bᵀ + β v e_lastᵀ``, a Ritz triplet ``(σ, Up, Vq)`` of the
    bidiagonal ``B`` satisfies ``J Vq = σ Up`` exactly and ``‖Jᵀ Up − σ Vq‖ = |β p_last|``.
    At most ``min(dim, out_dim)`` steps are taken: then one basis spans its whole space. When it
    is the right one, ``β = 0`` and ``B`` holds every singular value. When it is the left one
    (``out_dim < dim``), ``J v_next = β u_last`` exactly, so ``J Jᵀ U = U C Cᵀ`` with
    ``C = [B | β e_last]``: the singular values of ``C`` are those of ``J`` (residual 0).

    Examples
    --------
    >>> import torch
    >>> from dynamo.kernel import golub_kahan
    >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))[None]  # one row
    >>> mv = lambda v: (A @ v[..., None])[..., 0]
    >>> kr = golub_kahan(mv, mv, 1, 3, torch.float64, torch.device("cpu"), k=2, tol=1e-10,
    ...                  max_steps=3, seed=0)
    >>> [round(float(s), 6) for s in kr.values[0]], bool(kr.converged[0])
    ([3.0, 2.0], True)
    """
    m_out = dim if out_dim is None else out_dim
    full = min(dim, m_out)  # J has at most this many nonzero singular values
    if k > full:
        raise ValueError(f"golub_kahan: k={k} exceeds min(dim, out_dim) = {full}")
    m = min(max_steps, full)
    V = torch.zeros(n_rows, m + 1, dim, dtype=dtype, device=device)
    U = torch.zeros(n_rows, m, m_out, dtype=dtype, device=device)
    alpha = torch.zeros(n_rows, m, dtype=dtype, device=device)
    beta = torch.zeros(n_rows, m, dtype=dtype, device=device)
    V[:, 0] = _start(n_rows, dim, dtype, device, seed)
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)
    steps = torch.zeros(n_rows, dtype=torch.long, device=device)
    vals = torch.zeros(n_rows, k, dtype=dtype, device=device)
    resid = torch.full((n_rows, k), math.inf, dtype=dtype, device=device)
    right = torch.zeros(n_rows, dim, dtype=dtype, device=device)
    left = torch.zeros(n_rows, m_out, dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    first = _min_steps(k, full)
    for j in range(m):
        u = mv(V[:, j])
        if j > 0:
            u = u - beta[:, j - 1, None] * U[:, j - 1]
        u, a, _ = _extend(u, U[:, :j], gen)
        U[:, j], alpha[:, j] = u, a
        w = rmv(u) - a[:, None] * V[:, j]
        w, b, _ = _extend(w, V[:, : j + 1], gen)
        V[:, j + 1], beta[:, j] = w, b
        kk = j + 1
        B = torch.diag_embed(alpha[:, :kk]) + torch.diag_embed(beta[:, : kk - 1], offset=1)
        top = min(k, kk)
        left_full = kk == m_out and m_out < dim
        if left_full:
            # U spans the whole output space: the singular values of [B | β e_last] are exact
            C = torch.cat((B, torch.zeros(n_rows, kk, 1, dtype=dtype, device=device)), dim=2)
            C[:, kk - 1, kk] = b
            P, S, Qh = torch.linalg.svd(C, full_matrices=False)
            res = torch.zeros(n_rows, top, dtype=dtype, device=device)
            nv = kk + 1
        else:
            P, S, Qh = torch.linalg.svd(B)
            res = b[:, None].abs() * P[:, kk - 1, :top].abs()
            nv = kk
        scale = torch.clamp(S[:, :1], min=torch.finfo(dtype).tiny)
        conv_now = ((kk >= first) & (res <= tol * scale).all(dim=1)) | (kk == full)
        new_vals = torch.zeros(n_rows, k, dtype=dtype, device=device)
        new_res = torch.full((n_rows, k), math.inf, dtype=dtype, device=device)
        new_vals[:, :top], new_res[:, :top] = S[:, :top], res
        new_right = torch.einsum("bjn,bj->bn", V[:, :nv], Qh[:, 0, :nv])
        new_left = torch.einsum("bjn,bj->bn", U[:, :kk], P[:, :kk, 0])
        vals = torch.where(done[:, None], vals, new_vals)
        resid = torch.where(done[:, None], resid, new_res)
        right = torch.where(done[:, None], right, new_right)
        left = torch.where(done[:, None], left, new_left)
        steps = torch.where(~done, torch.full_like(steps, kk), steps)
        done = done | conv_now
        if bool(done.all()):
            break
    return KrylovResult(vals, resid, steps.cpu(), done.cpu(), {"right": right, "left": left})


def arnoldi(
    mv: Op,
    n_rows: int,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    k: int,
    tol: float,
    max_steps: int,
    seed: int,
    all_vectors: bool = False,
) -> KrylovResult:
    """Top-k eigenvalues by modulus, Arnoldi with full reorthogonalization.

    The Ritz vector of the top value is returned as ``vectors["right"]`` ``(N, dim)``; with
    ``all_vectors``, those of all ``k`` values too, as ``vectors["right_all"]`` ``(N, k, dim)``
    (zero columns where fewer than ``k`` values were found).

    Examples
    --------
    >>> import torch
    >>> from dynamo.kernel import arnoldi
    >>> A = torch.tensor([[[0.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.5]]],
    ...                  dtype=torch.float64)  # eigenvalues ±2i and 0.5
    >>> kr = arnoldi(lambda v: (A @ v[..., None])[..., 0], 1, 3, torch.float64,
    ...              torch.device("cpu"), k=2, tol=1e-10, max_steps=3, seed=0)
    >>> sorted(round(float(v.abs()), 6) for v in kr.values[0])
    [2.0, 2.0]
    """
    m = min(max_steps, dim)
    Q = torch.zeros(n_rows, m + 1, dim, dtype=dtype, device=device)
    H = torch.zeros(n_rows, m + 1, m, dtype=dtype, device=device)
    Q[:, 0] = _start(n_rows, dim, dtype, device, seed)
    ctype = torch.complex128 if dtype == torch.float64 else torch.complex64
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)
    steps = torch.zeros(n_rows, dtype=torch.long, device=device)
    vals = torch.zeros(n_rows, k, dtype=ctype, device=device)
    resid = torch.full((n_rows, k), math.inf, dtype=dtype, device=device)
    vec = torch.zeros(n_rows, dim, dtype=ctype, device=device)
    vecs = torch.zeros(n_rows, k, dim, dtype=ctype, device=device) if all_vectors else None
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    first = _min_steps(k, dim)
    for j in range(m):
        w, hn, c = _extend(mv(Q[:, j]), Q[:, : j + 1], gen)
        H[:, : j + 1, j] = c
        H[:, j + 1, j] = hn
        Q[:, j + 1] = w
        kk = j + 1
        # the small eigenproblem costs O(kk³): past 40 steps, test convergence every 4th step
        if kk < m and (kk < first or (kk > 40 and kk % 4)):
            continue
        theta, Y = torch.linalg.eig(H[:, :kk, :kk])
        order = torch.argsort(theta.abs(), dim=1, descending=True)
        top = min(k, kk)
        idx = order[:, :top]
        th = torch.gather(theta, 1, idx)
        Ysel = torch.gather(Y, 2, idx[:, None, :].expand(-1, kk, -1))
        Ysel = Ysel / torch.clamp(Ysel.abs().pow(2).sum(dim=1, keepdim=True).sqrt(), min=1e-300)
        res = hn[:, None] * Ysel[:, kk - 1, :].abs()
        scale = torch.clamp(th.abs()[:, :1], min=torch.finfo(dtype).tiny)
        conv_now = ((kk >= first) & (res <= tol * scale).all(dim=1)) | (kk == dim)
        newly_vals = torch.zeros(n_rows, k, dtype=ctype, device=device)
        newly_res = torch.full((n_rows, k), math.inf, dtype=dtype, device=device)
        newly_vals[:, :top], newly_res[:, :top] = th, res
        v0 = torch.einsum("bjn,bj->bn", Q[:, :kk].to(ctype), Ysel[:, :, 0])
        vals = torch.where(done[:, None], vals, newly_vals)
        resid = torch.where(done[:, None], resid, newly_res)
        vec = torch.where(done[:, None], vec, v0)
        if vecs is not None:
            now = torch.zeros_like(vecs)
            now[:, :top] = torch.einsum("bjn,bjt->btn", Q[:, :kk].to(ctype), Ysel)
            vecs = torch.where(done[:, None, None], vecs, now)
        steps = torch.where(~done, torch.full_like(steps, kk), steps)
        done = done | conv_now
        if bool(done.all()):
            break
    found = {"right": vec} if vecs is None else {"right": vec, "right_all": vecs}
    return KrylovResult(vals, resid, steps.cpu(), done.cpu(), found)


def lanczos_sym(
    mv: Op,
    n_rows: int,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    *,
    tol: float,
    max_steps: int,
    seed: int,
) -> KrylovResult:
    """Largest eigenvalue of a symmetric operator, Lanczos with full reorthogonalization.

    Examples
    --------
    >>> import torch
    >>> from dynamo.kernel import lanczos_sym
    >>> A = torch.tensor([[[2.0, 1.0], [1.0, 2.0]]], dtype=torch.float64)  # eigenvalues 1, 3
    >>> kr = lanczos_sym(lambda v: (A @ v[..., None])[..., 0], 1, 2, torch.float64,
    ...                  torch.device("cpu"), tol=1e-10, max_steps=2, seed=0)
    >>> round(float(kr.values[0, 0]), 6)
    3.0
    """
    m = min(max_steps, dim)
    Q = torch.zeros(n_rows, m + 1, dim, dtype=dtype, device=device)
    T = torch.zeros(n_rows, m, m, dtype=dtype, device=device)
    Q[:, 0] = _start(n_rows, dim, dtype, device, seed)
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)
    steps = torch.zeros(n_rows, dtype=torch.long, device=device)
    val = torch.zeros(n_rows, 1, dtype=dtype, device=device)
    resid = torch.full((n_rows, 1), math.inf, dtype=dtype, device=device)
    vec = torch.zeros(n_rows, dim, dtype=dtype, device=device)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    first = _min_steps(1, dim)
    for j in range(m):
        w, b, c = _extend(mv(Q[:, j]), Q[:, : j + 1], gen)
        T[:, j, : j + 1] = c
        T[:, : j + 1, j] = c
        if j + 1 < m:
            T[:, j + 1, j] = b
            T[:, j, j + 1] = b
        Q[:, j + 1] = w
        kk = j + 1
        lam, Y = torch.linalg.eigh(T[:, :kk, :kk])
        th, y = lam[:, -1:], Y[:, :, -1]
        res = b[:, None] * y[:, -1:].abs()
        scale = torch.clamp(lam.abs().amax(dim=1, keepdim=True), min=torch.finfo(dtype).tiny)
        conv_now = ((kk >= first) & (res <= tol * scale).all(dim=1)) | (kk == dim)
        v0 = torch.einsum("bjn,bj->bn", Q[:, :kk], y)
        val = torch.where(done[:, None], val, th)
        resid = torch.where(done[:, None], resid, res)
        vec = torch.where(done[:, None], vec, v0)
        steps = torch.where(~done, torch.full_like(steps, kk), steps)
        done = done | conv_now
        if bool(done.all()):
            break
    return KrylovResult(val, resid, steps.cpu(), done.cpu(), {"right": vec})
