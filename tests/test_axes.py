"""The stability axes and the contraction verdicts."""

from __future__ import annotations

import json

import pytest
import torch

import dynamo as dy
from dynamo.errors import InvalidArgumentError, ShapeError

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _polished(system: dy.LoopedSystem, h0: torch.Tensor) -> torch.Tensor:
    sol = dy.solve(system, h0, method="newton_krylov", tol=1e-15, atol=1e-15, throw=False)
    assert bool((sol.residual < 1e-13).all())
    return sol.state


def _central_difference(system: dy.LoopedSystem, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    assert system.x is not None
    eps = 1e-5
    plus = _polished(system.with_input(system.x + eps * v), h)
    minus = _polished(system.with_input(system.x - eps * v), h)
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("which", ["tanh", "transformer"])
def test_ift_sensitivity_matches_central_differences(which: str) -> None:
    if which == "tanh":
        f = dy.models.ContractiveTanh(n=12, lipschitz=0.9, seed=1)
        system = dy.LoopedSystem.from_module(f, torch.randn(3, 12, generator=gen(0), dtype=F64))
        h0 = torch.zeros(3, 12, dtype=F64)
    else:
        m = dy.models.LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer", seed=2)
        x = torch.randn(2, 6, 16, generator=gen(0), dtype=F64)
        system = dy.LoopedSystem.from_module(m, x)
        h0 = x.clone()
    h = _polished(system, h0)
    assert system.x is not None
    v = torch.randn(system.x.shape, generator=gen(1), dtype=F64)
    got = dy.ift_sensitivity(system, h, v)
    ref = _central_difference(system, h, v)
    rel = (got - ref).reshape(got.shape[0], -1).norm(dim=1) / ref.reshape(ref.shape[0], -1).norm(
        dim=1
    )
    assert float(rel.max()) <= 1e-8


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", ["none", "pre", "outer"])
def test_without_recall_input_dependence_is_never_strong(seed: int, norm: str) -> None:
    m = dy.models.LoopedTransformer(d_model=16, n_heads=2, recall="none", norm=norm, seed=seed)
    xs = torch.randn(4, 6, 16, generator=gen(seed), dtype=F64)
    dep = dy.input_dependence(m, xs, max_steps=300)
    assert dep.verdict in ("none", "weak")
    assert not dep.driven
    assert bool((dep.sensitivity_norm == 0).all())
    assert "by construction" in dep.reason


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_outer_recall_and_outer_norm_at_contracting_scale_is_strong(seed: int) -> None:
    # C14: with outer normalization the step contracts more as the pre-norm update grows; inputs
    # of RMS 4 (token norm ≈ 16 against the state's √16 = 4) make the loop contract
    m = dy.models.LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer", seed=seed)
    xs = 4 * torch.randn(4, 6, 16, generator=gen(seed), dtype=F64)
    dep = dy.input_dependence(m, xs)
    assert dep.verdict == "strong", dep.reason
    assert dep.n_distinct == 4
    assert bool((dep.sensitivity_norm > 0).all())
    assert bool((dep.sensitivity_rank == 8).all())
    assert dep.distance_ratio is not None and dep.distance_ratio > 0
    json.dumps(dep.to_dict(), allow_nan=False)


def test_input_dependence_accepts_a_factory_and_reports_undetermined() -> None:
    def factory(x: torch.Tensor) -> dy.LoopedSystem:
        return dy.LoopedSystem.from_module(dy.models.LinearMap(n=3, spectral_radius=2.0, seed=0), x)

    dep = dy.input_dependence(factory, torch.randn(3, 3, generator=gen(0), dtype=F64), max_steps=50)
    assert dep.verdict == "undetermined"  # iteration diverges: nothing to say


def test_input_dependence_bad_inputs() -> None:
    f = dy.models.ContractiveTanh(n=4, seed=0)
    with pytest.raises(InvalidArgumentError, match="inputs is empty"):
        dy.input_dependence(f, torch.zeros(0, 4))
    with pytest.raises(InvalidArgumentError, match="inputs is empty"):
        dy.input_dependence(f, [])
    with pytest.raises(ShapeError, match="inputs have mixed shapes"):
        dy.input_dependence(f, [torch.zeros(4), torch.zeros(5)])
    auto = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(4,))
    dep = dy.input_dependence(auto, torch.zeros(2, 4))  # an autonomous map: none, not an error
    assert dep.verdict == "none" and "by construction" in dep.reason


def test_reachability_on_a_contraction_and_on_a_bistable_map() -> None:
    f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    system = dy.LoopedSystem.from_module(f, torch.randn(3, 8, generator=gen(0), dtype=F64))
    r = dy.reachability(system, n_starts=6)
    assert r.converged_fraction == 1.0 and r.interval[1] == 1.0
    assert r.path_independence == pytest.approx(1.0, abs=1e-12)
    assert r.max_spectral_radius is not None and r.max_spectral_radius < 0.9
    assert r.steps["max"] is not None and r.steps["max"] < 1000
    bi = dy.reachability(dy.LoopedSystem.from_module(dy.models.Bistable(n=2)), n_starts=64)
    assert bi.path_independence is not None and bi.path_independence < 0.5  # four basins
    assert len(bi.basin_fractions) == 4 and sum(bi.basin_fractions) == pytest.approx(1.0)
    json.dumps(r.to_dict(), allow_nan=False)


def test_geometry_on_a_non_normal_linear_map() -> None:
    A = torch.tensor([[0.5, 4.0], [0.0, 0.5]], dtype=F64)
    lin = dy.models.LinearMap(n=2, spectral_radius=0.5, seed=0)
    with torch.no_grad():
        lin.A.copy_(A)
    x = torch.ones(1, 2, dtype=F64)
    system = dy.LoopedSystem.from_module(lin, x)
    g = dy.geometry(system, lin.fixed_point(x), basin_samples=8, transient_steps=16)
    assert float(g.spectral_radius[0]) == pytest.approx(0.5)
    assert float(g.spectral_norm[0]) == pytest.approx(float(torch.linalg.matrix_norm(A, ord=2)))
    assert float(g.max_transient[0]) > 2  # transient growth before the decay
    assert float(g.transient[16][0]) < 0.01
    eye = torch.eye(2, dtype=F64)
    assert float(g.sigma_min[0]) == pytest.approx(float(torch.linalg.svdvals(eye - A)[-1]))
    assert float(g.basin_radius[0]) == 1.0  # a linear contraction: every radius returns
    json.dumps(g.to_dict(), allow_nan=False)


def test_geometry_matrix_free_agrees_with_dense() -> None:
    m = dy.models.LoopedTransformer(d_model=8, n_heads=2, recall="outer", norm="outer", seed=0)
    x = torch.randn(1, 4, 8, generator=gen(0), dtype=F64)
    system = dy.LoopedSystem.from_module(m, x)
    h = _polished(system, x.clone())
    dense = dy.geometry(system, h, basin_samples=4, radii=(0.01,))
    free = dy.geometry(system, h, basin_samples=4, radii=(0.01,), dense_limit=0)
    assert dense.exact and not free.exact
    for name in ["spectral_radius", "spectral_norm", "sigma_min"]:
        torch.testing.assert_close(getattr(free, name), getattr(dense, name), rtol=1e-8, atol=0)
    torch.testing.assert_close(free.transient[4], dense.transient[4], rtol=1e-8, atol=0)


def test_contraction_proven_for_a_tanh_contraction() -> None:
    f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    system = dy.LoopedSystem.from_module(f, torch.ones(1, 8, dtype=F64))
    cv = dy.check_contraction(system)
    assert cv.verdict is dy.Verdict.PROVEN
    # the local verdict rests on a float Lyapunov check at the fixed point found: never PROVEN
    assert cv.local_verdict is dy.Verdict.SUPPORTED
    bound = next(e for e in cv.evidence if e.kind == "certified Lipschitz upper bound")
    assert bound.certified and bound.value == pytest.approx(0.9)
    json.dumps(cv.to_dict(), allow_nan=False)


def test_contraction_refuted_on_henon_with_a_witness_that_rechecks() -> None:
    henon = dy.models.Henon()
    system = dy.LoopedSystem.from_module(henon)
    cv = dy.check_contraction(system, dy.Domain.ball(1.0))
    assert cv.verdict is dy.Verdict.REFUTED
    assert cv.local_verdict is dy.Verdict.REFUTED
    a, b = cv.witness["a"], cv.witness["b"]
    with torch.no_grad():
        ratio = float((henon(a[None]) - henon(b[None])).norm() / (a - b).norm())
    assert ratio > 1
    assert ratio == pytest.approx(cv.witness["ratio"])
    p = cv.witness["unstable_fixed_point"]
    with torch.no_grad():
        assert float((henon(p[None])[0] - p).norm()) < 1e-10
    J = dy.jacobian(system, p[None])[0]
    assert float(torch.linalg.eigvals(J).abs().max()) > 1


def test_lyapunov_certificate_sees_through_a_non_normal_jacobian() -> None:
    J = torch.tensor([[0.5, 10.0], [0.0, 0.5]], dtype=F64)
    cert = dy.lyapunov_certificate(J)
    assert cert["ok"] and cert["rate"] == 0.75
    assert not dy.lyapunov_certificate(torch.diag(torch.tensor([1.2, 0.1], dtype=F64)))["ok"]


def test_stability_axes_bundle() -> None:
    m = dy.models.LoopedTransformer(d_model=8, n_heads=2, recall="outer", norm="outer", seed=0)
    x = 4 * torch.randn(3, 4, 8, generator=gen(3), dtype=F64)  # a contracting input scale (C14)
    report = dy.stability_axes(dy.LoopedSystem.from_module(m, x), n_starts=4, basin_samples=4)
    assert report.reachability.converged_fraction == 1.0
    assert report.input_dependence.verdict == "strong"
    assert report.geometry is not None and bool((report.geometry.spectral_radius < 1).all())
    assert report.contraction is not None
    text = str(report)
    assert "reachability" in text and "input-dependence: strong" in text
    json.dumps(report.to_dict(), allow_nan=False)


def test_unconverged_sensitivity_solves_are_undetermined_not_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import dynamo._axes as axes

    original = axes._Sensitivity._solve

    def failing(self: axes._Sensitivity, b: torch.Tensor, transpose: bool) -> torch.Tensor:
        out = original(self, b, transpose)
        self.solved = False  # as when GMRES stops short of its tolerance
        return out

    f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    xs = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    system = dy.LoopedSystem.from_module(f, xs)
    assert dy.input_dependence(system, xs).verdict == "strong"
    monkeypatch.setattr(axes._Sensitivity, "_solve", failing)
    dep = dy.input_dependence(system, xs)
    assert dep.verdict == "undetermined" and "did not converge" in dep.reason
    assert bool(torch.isnan(dep.sensitivity_norm).all())
