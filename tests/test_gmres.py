"""The batched GMRES behind Newton–Krylov, against dense solves and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
import torch

from dynamo._solvers._gmres import gmres

F64 = torch.float64


def batch_of_matrices(n_rows: int, dim: int, seed: int, shift: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_rows, dim, dim, generator=g, dtype=F64) / dim**0.5
    return a + shift * torch.eye(dim, dtype=F64)


@pytest.mark.parametrize(("dim", "restart"), [(5, 30), (40, 10), (40, 40)])
def test_each_row_solves_its_own_system(dim: int, restart: int) -> None:
    A = batch_of_matrices(6, dim, seed=dim)
    b = torch.randn(6, dim, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = gmres(
        lambda v: torch.einsum("bij,bj->bi", A, v), b, rtol=1e-12, restart=restart, max_restarts=20
    )
    exact = torch.linalg.solve(A, b)
    assert bool(out.converged.all())
    torch.testing.assert_close(out.x, exact, rtol=0, atol=1e-10)
    assert float(out.residual.max()) <= 1e-12 * float(b.norm(dim=1).max())


def test_agrees_with_scipy_gmres_at_the_same_restart() -> None:
    A = batch_of_matrices(1, 30, seed=3, shift=1.5)
    b = torch.randn(1, 30, generator=torch.Generator().manual_seed(2), dtype=F64)
    out = gmres(lambda v: torch.einsum("bij,bj->bi", A, v), b, rtol=1e-10, restart=30)
    ref, info = scipy.sparse.linalg.gmres(A[0].numpy(), b[0].numpy(), rtol=1e-10, restart=30)
    assert info == 0
    np.testing.assert_allclose(out.x[0].numpy(), ref, atol=1e-8)


def test_happy_breakdown_on_the_identity() -> None:
    b = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = gmres(lambda v: v, b, rtol=1e-14)
    torch.testing.assert_close(out.x, b)
    assert out.n_matvec <= 3  # one Arnoldi step and the final residual check


def test_per_row_tolerances_and_an_unsolvable_row() -> None:
    # row 0 singular with b outside the range: GMRES cannot converge there, row 1 can
    A = torch.stack([torch.diag(torch.tensor([1.0, 0.0], dtype=F64)), torch.eye(2, dtype=F64)])
    b = torch.tensor([[1.0, 1.0], [2.0, 3.0]], dtype=F64)
    out = gmres(lambda v: torch.einsum("bij,bj->bi", A, v), b, rtol=torch.tensor([1e-10, 1e-10]))
    assert out.converged.tolist() == [False, True]
    assert torch.isfinite(out.x).all()
    torch.testing.assert_close(out.x[1], b[1])


def test_singular_operator_never_makes_the_residual_worse() -> None:
    # A = diag(0..5) with b outside its range, and a Krylov space that fills the whole space:
    # the answer must not be worse than x = 0 (found by review: a 1e16 step with residual 10.7)
    A = torch.diag(torch.arange(6, dtype=F64))[None]
    b = torch.ones(1, 6, dtype=F64) + torch.linspace(0, 1, 6, dtype=F64)[None]
    out = gmres(lambda v: torch.einsum("bij,bj->bi", A, v), b, rtol=1e-12, restart=6)
    assert not bool(out.converged[0])
    assert float(out.residual[0]) <= float(b.norm()) + 1e-12
    assert float(out.x.norm()) < 1e3
    # the best it can do is to remove the part of b in the range of A: residual |b_0|
    assert float(out.residual[0]) == pytest.approx(float(b[0, 0].abs()), rel=1e-8)
