"""Matrix-free spectra agree with dense SVD/eig; estimates carry their evidence."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import torch

import dynamo as dy
from dynamo.errors import ConvergenceError, InvalidArgumentError, ShapeError

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def transformer_1024(recall: str, norm: str) -> tuple[dy.LoopedSystem, torch.Tensor]:
    """A reference block at state dimension 1024 (T = 32, d = 32), two states."""
    m = dy.models.LoopedTransformer(d_model=32, n_heads=4, recall=recall, norm=norm, seed=0)
    system = dy.LoopedSystem.from_module(m, torch.randn(2, 32, 32, generator=gen(0)))
    return system, system.initial_states("normal", 1, seed=3)


ARCHS = [("outer", "outer"), ("none", "pre"), ("internal", "sandwich")]


@pytest.mark.parametrize(("recall", "norm"), ARCHS)
def test_norm_and_top_six_agree_with_dense_at_dimension_1024(recall: str, norm: str) -> None:
    system, h = transformer_1024(recall, norm)
    J = dy.jacobian(system, h)
    dense_sv = torch.linalg.svdvals(J)[:, :6]
    dense_eig = torch.linalg.eigvals(J).abs().sort(dim=1, descending=True).values[:, :6]
    sn = dy.spectral_norm(system, h)
    sv = dy.singular_values(system, h, k=6)
    ev = dy.eigenvalues(system, h, k=6)
    # a converged Ritz singular value is within its residual, <= tol·σ₁ (tol = √eps), of the true
    # one; eigenvalues of a non-normal J have no such guarantee (measured: 5e-9)
    tol = math.sqrt(torch.finfo(F64).eps)
    assert float(((sn.values - dense_sv[:, 0]) / dense_sv[:, 0]).abs().max()) <= tol
    assert float(((sv.values - dense_sv) / dense_sv[:, :1]).abs().max()) <= tol
    assert float(((ev.values.abs() - dense_eig) / dense_eig).abs().max()) <= 1e-7
    # a Ritz value of the compression never exceeds the true norm (beyond rounding)
    assert bool((sn.values <= dense_sv[:, 0] * (1 + 1e-12)).all())


def test_complex_top_pair_is_resolved() -> None:
    lin = dy.models.LinearMap(n=200, spectral_radius=0.9, seed=0)
    A = lin.A.detach()
    top = torch.linalg.eigvals(A)
    top = top[top.abs().argsort(descending=True)][:6]
    assert abs(float(top[0].imag)) > 1e-3  # the draw has a complex top pair
    system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 200))
    h = torch.zeros(1, 200, dtype=F64)
    ev = dy.eigenvalues(system, h, k=6)
    got = ev.values[0]
    for lam in top:
        assert float((got - lam).abs().min()) <= 1e-6 * float(top[0].abs())
    rho = dy.spectral_radius(system, h)
    assert float(rho.values[0]) == pytest.approx(0.9, rel=1e-8)


def test_log_norm_and_its_sign() -> None:
    system, h = transformer_1024("outer", "outer")
    J = dy.jacobian(system, h)
    dense = torch.linalg.eigvalsh((J + J.transpose(1, 2)) / 2)[:, -1]
    est = dy.log_norm(system, h)
    torch.testing.assert_close(est.values, dense, rtol=1e-8, atol=1e-10)
    assert est.lower_bound


def test_batched_results_equal_one_state_at_a_time() -> None:
    system, h = transformer_1024("outer", "outer")
    both = dy.spectral_norm(system, h, seed=5)
    for i in range(2):
        one = dy.spectral_norm(system.with_input(system.x[i : i + 1]), h[i : i + 1], seed=5)  # type: ignore[index]
        assert float(one.values[0]) == pytest.approx(float(both.values[i]), rel=1e-10)


def test_estimate_reports_evidence_and_is_json_safe() -> None:
    system, h = transformer_1024("outer", "outer")
    est = dy.spectral_norm(system, h)
    assert est.all_converged and not est.guaranteed and est.lower_bound
    assert bool((est.residuals <= est.tol * est.values).all())
    assert est.products["matvec"] == est.products["rmatvec"] == int(est.steps.max())
    right, left = est.vectors["right"], est.vectors["left"]
    op = dy.jacobian_operator(system, h)
    # J v = σ u for the returned Ritz vectors
    torch.testing.assert_close(op.matvec(right), est.values[:, None] * left, rtol=0, atol=1e-8)
    d = est.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["kind"] == "estimate"
    ev = dy.eigenvalues(system, h, k=2, max_steps=200, throw=False)
    json.dumps(ev.to_dict(), allow_nan=False)
    assert "lower-bound estimate" in str(est)


def test_not_converged_is_reported_and_raises_with_throw() -> None:
    system, h = transformer_1024("outer", "outer")
    est = dy.eigenvalues(system, h, k=6, max_steps=8, throw=False)
    assert all(o is dy.Outcome.MAX_STEPS_REACHED for o in est.outcomes)
    assert torch.isfinite(est.values.abs()).all()
    with pytest.raises(ConvergenceError, match="did not reach residual"):
        dy.eigenvalues(system, h, k=6, max_steps=8)


def test_bad_arguments() -> None:
    system, h = transformer_1024("outer", "outer")
    with pytest.raises(ShapeError, match="h has shape"):
        dy.spectral_norm(system, h[:, :, :5])
    bad = h.clone()
    bad[0, 0, 0] = math.inf
    with pytest.raises(InvalidArgumentError, match="h contains NaN or inf"):
        dy.spectral_norm(system, bad)
    with pytest.raises(InvalidArgumentError, match="tol must be finite and > 0"):
        dy.spectral_norm(system, h, tol=0.0)
    with pytest.raises(InvalidArgumentError, match="tol must be finite and > 0"):
        dy.log_norm(system, h, tol=-1e-3)
    with pytest.raises(InvalidArgumentError, match="k=2000 exceeds the state dimension 1024"):
        dy.eigenvalues(system, h, k=2000)


# ---------------------------------------------------------------------- found in review
def test_breakdown_restarts_instead_of_reporting_zero_columns() -> None:
    """J = 0.5 I breaks down at once: every singular value is 0.5, not [0.5, 0, 0]."""
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(6,))
    h = torch.randn(2, 6, generator=gen(0), dtype=F64)
    sv = dy.singular_values(system, h, k=3)
    torch.testing.assert_close(sv.values, torch.full((2, 3), 0.5, dtype=F64))
    ev = dy.eigenvalues(system, h, k=3)
    torch.testing.assert_close(ev.values.real, torch.full((2, 3), 0.5, dtype=F64))


def test_repeated_eigenvalues_of_a_projection_are_all_found() -> None:
    # the zero-branch RMSNorm Jacobian on its sphere: eigenvalue 1 six times, 0 twice
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=4, n_tokens=2))
    h = system.step(torch.randn(1, 2, 4, generator=gen(1), dtype=F64))
    ev = dy.eigenvalues(system, h, k=4)
    torch.testing.assert_close(ev.values.real, torch.ones(1, 4, dtype=F64))
    sv = dy.singular_values(system, h, k=6)
    torch.testing.assert_close(sv.values, torch.ones(1, 6, dtype=F64))


def test_rotation_block_has_no_spurious_zero() -> None:
    R = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.3]], dtype=F64)
    system = dy.LoopedSystem.from_function(lambda h: h @ R.T, state_shape=(3,))
    ev = dy.eigenvalues(system, torch.randn(1, 3, generator=gen(2), dtype=F64), k=3)
    got = sorted(ev.values[0].tolist(), key=lambda z: (round(z.real, 6), round(z.imag, 6)))
    want = [complex(0, -1), complex(0, 1), complex(0.3, 0)]
    for g, w in zip(got, sorted(want, key=lambda z: (z.real, z.imag)), strict=True):
        assert abs(g - w) < 1e-12


def test_max_steps_below_k_is_refused() -> None:
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(6,))
    with pytest.raises(InvalidArgumentError, match="max_steps=1 must be >= k=2"):
        dy.eigenvalues(system, torch.ones(1, 6, dtype=F64), k=2, max_steps=1)


# ---------------------------------------------------------------------- rectangular operators
def _batched(A: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], ...]:
    """``v ↦ A v`` and ``u ↦ Aᵀ u`` for a batch of matrices ``A`` of shape ``(N, m, n)``."""
    return (
        lambda v: torch.einsum("bmn,bn->bm", A, v),
        lambda u: torch.einsum("bmn,bm->bn", A, u),
    )


@pytest.mark.parametrize("shape", [(7, 13), (13, 7), (60, 200), (200, 60)])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_golub_kahan_on_rectangular_matrices_agrees_with_svdvals(
    shape: tuple[int, int], k: int
) -> None:
    """dh*/dx is n_state × n_input: the kernel must size its left basis by the output (issue 12)."""
    from dynamo._krylov import golub_kahan

    m, n = shape
    A = torch.randn(2, m, n, generator=gen(m + n), dtype=F64)
    mv, rmv = _batched(A)
    tol = math.sqrt(torch.finfo(F64).eps)
    kr = golub_kahan(
        mv, rmv, 2, n, F64, torch.device("cpu"), k=k, tol=tol, max_steps=300, seed=0, out_dim=m
    )
    dense = torch.linalg.svdvals(A)[:, :k]
    assert bool(kr.converged.all())
    # converged: each residual <= tol·σ₁, and a Ritz value lies within its residual of a true
    # singular value; after min(m, n) steps the basis is full and the residual is 0
    assert bool((kr.residuals <= tol * dense[:, :1]).all())
    assert float(((kr.values - dense) / dense[:, :1]).abs().max()) <= tol
    # Ritz values of a compression never exceed the true ones (beyond rounding)
    assert bool((kr.values <= dense * (1 + 1e-12)).all())
    if min(m, n) <= 13:
        assert kr.steps.tolist() == [min(m, n)] * 2
    right, left = kr.vectors["right"], kr.vectors["left"]
    assert right.shape == (2, n) and left.shape == (2, m)
    torch.testing.assert_close(mv(right), kr.values[:, :1] * left, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(7, 13), (13, 7)])
def test_golub_kahan_on_a_rank_deficient_rectangular_matrix(shape: tuple[int, int]) -> None:
    """Rank 3 of 7: breakdowns restart in fresh blocks; the zero singular values come out 0."""
    from dynamo._krylov import golub_kahan

    m, n = shape
    g = gen(5)
    A = torch.randn(1, m, 3, generator=g, dtype=F64) @ torch.randn(1, 3, n, generator=g, dtype=F64)
    mv, rmv = _batched(A)
    tol = math.sqrt(torch.finfo(F64).eps)
    kr = golub_kahan(
        mv, rmv, 1, n, F64, torch.device("cpu"), k=7, tol=tol, max_steps=300, seed=0, out_dim=m
    )
    dense = torch.linalg.svdvals(A)
    assert float(((kr.values - dense) / dense[:, :1]).abs().max()) <= tol
    assert float(kr.values[0, 3:].abs().max()) <= tol * float(dense[0, 0])


def test_golub_kahan_refuses_more_values_than_a_rectangular_matrix_has() -> None:
    from dynamo._krylov import golub_kahan

    mv, rmv = _batched(torch.ones(1, 3, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"k=4 exceeds min\(dim, out_dim\) = 3"):
        golub_kahan(
            mv, rmv, 1, 5, F64, torch.device("cpu"), k=4, tol=1e-8, max_steps=10, seed=0, out_dim=3
        )


def test_a_non_finite_jacobian_is_refused_before_the_krylov_kernel() -> None:
    """Issue 13, item 5: an inf weight gave a LinAlgError from an SVD of NaNs."""
    model = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    with torch.no_grad():
        model.W.fill_(float("inf"))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    system = dy.LoopedSystem.from_module(model, x)
    for verb in (dy.spectral_norm, dy.spectral_radius):
        with pytest.raises(dy.errors.InvalidArgumentError, match=r"is not finite at h\[0, 1, 2\]"):
            verb(system, torch.zeros(3, 4, dtype=torch.float64))
    # a finite map whose Jacobian is not: √|h| at 0
    root = dy.LoopedSystem.from_function(lambda h: torch.sqrt(h.abs()) + 0.5, state_shape=(3,))
    for verb in (dy.spectral_norm, dy.spectral_radius):
        with pytest.raises(dy.errors.InvalidArgumentError, match=r"its Jacobian is not finite"):
            verb(root, torch.zeros(2, 3, dtype=torch.float64))
