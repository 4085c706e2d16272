"""Batched restarted GMRES in torch, for ``(I − J) s = g`` on Jacobian-vector products.

scipy's GMRES solves one system at a time on NumPy arrays; Newton-Krylov here needs one solve per
start, all at once, on whatever device the map lives on. This is the textbook algorithm (Saad &
Schultz 1986): Arnoldi with classical Gram-Schmidt applied twice, Givens rotations for the small
least-squares problem, restarts (stopped early once a restart gains less than 10% on every row).
Rows that break down ("happy breakdown") stop growing their Krylov space and solve exactly there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["GmresResult", "gmres"]


@dataclass(frozen=True)
class GmresResult:
    """Per-row solution, final residual norm, convergence flag and matrix-vector count."""

    x: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    n_matvec: int


def gmres(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    rtol: torch.Tensor | float = 1e-8,
    atol: float = 0.0,
    restart: int = 30,
    max_restarts: int = 5,
) -> GmresResult:
    """Solve ``A x = b`` for every row of ``b`` (shape ``(N, n)``), ``A`` given by ``matvec``.

    Convergence per row: ``‖b − A x‖ <= max(rtol·‖b‖, atol)``.

    Examples
    --------
    >>> import torch
    >>> from dynamo._solvers._gmres import gmres
    >>> A = torch.tensor([[3.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    >>> out = gmres(lambda v: v @ A.T, torch.tensor([[1.0, 2.0]], dtype=torch.float64), rtol=1e-12)
    >>> out.x
    tensor([[0., 1.]], dtype=torch.float64)
    """
    n_rows, dim = b.shape
    m = max(1, min(restart, dim))
    dtype, dev = b.dtype, b.device
    rt = torch.as_tensor(rtol, dtype=dtype, device=dev).expand(n_rows)
    bnorm = b.norm(dim=1)
    target = torch.maximum(rt * bnorm, torch.full_like(bnorm, atol))
    x = torch.zeros_like(b)
    r = b.clone()
    n_matvec = 0
    tiny = torch.finfo(dtype).tiny ** 0.5
    eps = torch.finfo(dtype).eps
    beta = r.norm(dim=1)
    for _ in range(max_restarts):
        if bool((beta <= target).all()):
            break
        basis = torch.zeros(n_rows, m + 1, dim, dtype=dtype, device=dev)
        basis[:, 0] = r / torch.clamp(beta, min=tiny)[:, None]
        R = torch.zeros(n_rows, m + 1, m, dtype=dtype, device=dev)
        cs = torch.zeros(n_rows, m, dtype=dtype, device=dev)
        sn = torch.zeros(n_rows, m, dtype=dtype, device=dev)
        g = torch.zeros(n_rows, m + 1, dtype=dtype, device=dev)
        g[:, 0] = beta
        grown = torch.ones(n_rows, dtype=torch.bool, device=dev)  # rows still extending
        k = 0
        for j in range(m):
            w = matvec(basis[:, j])
            n_matvec += 1
            V = basis[:, : j + 1]
            h = torch.einsum("bjn,bn->bj", V, w)
            w = w - torch.einsum("bjn,bj->bn", V, h)
            h2 = torch.einsum("bjn,bn->bj", V, w)  # second pass: CGS2
            w = w - torch.einsum("bjn,bj->bn", V, h2)
            h = h + h2
            hn = w.norm(dim=1)
            col = torch.zeros(n_rows, j + 2, dtype=dtype, device=dev)
            col[:, : j + 1] = h
            col[:, j + 1] = hn
            col = torch.where(grown[:, None], col, torch.zeros_like(col))
            for i in range(j):  # apply the earlier rotations
                a, c = col[:, i].clone(), col[:, i + 1].clone()
                col[:, i] = cs[:, i] * a + sn[:, i] * c
                col[:, i + 1] = -sn[:, i] * a + cs[:, i] * c
            a, c = col[:, j], col[:, j + 1]
            denom = torch.hypot(a, c)
            ok = denom > 0
            safe = torch.where(ok, denom, torch.ones_like(denom))
            cs[:, j] = torch.where(ok, a / safe, torch.ones_like(a))
            sn[:, j] = torch.where(ok, c / safe, torch.zeros_like(c))
            col[:, j] = torch.where(ok, denom, torch.zeros_like(denom))
            col[:, j + 1] = 0
            R[:, : j + 2, j] = col
            gj = g[:, j].clone()
            g[:, j] = cs[:, j] * gj
            g[:, j + 1] = -sn[:, j] * gj
            breakdown = hn <= 1e-14 * torch.clamp(col[:, j].abs(), min=tiny)
            basis[:, j + 1] = torch.where(
                (grown & ~breakdown)[:, None],
                w / torch.clamp(hn, min=tiny)[:, None],
                torch.zeros_like(w),
            )
            grown = grown & ~breakdown
            k = j + 1
            if bool((g[:, j + 1].abs() <= target).all()) or not bool(grown.any()):
                break
        Rk = R[:, :k, :k].clone()
        rhs = g[:, :k].clone()
        diag = torch.diagonal(Rk, dim1=1, dim2=2).abs()
        scale = Rk.abs().amax(dim=(1, 2), keepdim=True)[:, :, 0]
        # columns a row never built, and directions where R is numerically singular (a singular
        # operator once the Krylov space fills the whole space): y = 0 there, whole row zeroed
        empty = diag <= 100 * eps * scale
        eye = torch.eye(k, dtype=dtype, device=dev).expand(n_rows, k, k)
        Rk = torch.where(empty[:, :, None], eye, Rk)
        rhs = torch.where(empty, torch.zeros_like(rhs), rhs)
        y = torch.linalg.solve_triangular(Rk, rhs[:, :, None], upper=True)[:, :, 0]
        x_new = x + torch.einsum("bjn,bj->bn", basis[:, :k], y)
        r_new = b - matvec(x_new)
        n_matvec += 1
        beta_new = r_new.norm(dim=1)
        better = beta_new <= beta  # never return a worse iterate than the one we had
        stalled = bool((beta_new > 0.9 * beta).all())
        x = torch.where(better[:, None], x_new, x)
        r = torch.where(better[:, None], r_new, r)
        beta = torch.where(better, beta_new, beta)
        if stalled:  # a restart that gained less than 10% everywhere will not gain much more
            break
    return GmresResult(x=x, residual=beta, converged=beta <= target * (1 + 1e-6), n_matvec=n_matvec)
