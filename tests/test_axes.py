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
    assert not dep.driven
    assert bool((dep.sensitivity_norm == 0).all())
    if bool(dep.converged.any()):
        assert dep.verdict in ("none", "weak")
        assert "by construction" in dep.reason
    else:  # most of these random blocks do not settle in 300 steps: nothing seen, nothing said
        assert dep.verdict == "undetermined"
        assert "without recall any fixed point would ignore x" in dep.reason


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
    # outer RMSNorm puts each of the 6 tokens on a sphere in ℝ¹⁶ (up to its ε): the step's image
    # has dimension 6 · 15 = 90 of 96 at the coarse threshold; dh*/dx has rank 90 plus those of
    # the ε-sized radial directions that clear rank_tol, and full rank counts them too
    assert bool((dep.image_dim == 90).all())
    assert bool((dep.sensitivity_rank == dep.full_rank).all())
    assert bool((dep.sensitivity_rank >= 90).all()) and bool((dep.sensitivity_rank <= 96).all())
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
    # the local verdict rests on the proof at the fixed point found (8 entries: proven by
    # default), with the float Lyapunov check beside it, labelled checked
    assert cv.local_verdict is dy.Verdict.PROVEN
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
        # as when GMRES stops short of its tolerance
        self.solved_rows = torch.zeros_like(self.solved_rows)
        return out

    f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    xs = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    system = dy.LoopedSystem.from_module(f, xs)
    assert dy.input_dependence(system, xs).verdict == "strong"
    monkeypatch.setattr(axes._Sensitivity, "_solve", failing)
    dep = dy.input_dependence(system, xs)
    assert dep.verdict == "undetermined" and "did not converge" in dep.reason
    assert bool(torch.isnan(dep.sensitivity_norm).all())


# ---------------------------------------------------------------------- issue 12: items 4 and 8
def _tanh_dense(system: dy.LoopedSystem) -> tuple[torch.Tensor, torch.Tensor]:
    """h* and dh*/dx = (I − D W)⁻¹ D U, D = diag(1 − h*²), of tanh(W h + U x + b) by dense algebra
    on the module's own weights: h* by 600 steps of the formula (‖W‖₂ = 0.9, so the error is
    below 0.9⁶⁰⁰ of the start's), no dynamo solver or Jacobian."""
    f = system.module
    assert isinstance(f, dy.models.ContractiveTanh) and system.x is not None
    W, U, b, x = f.W.detach(), f.U.detach(), f.b.detach(), system.x
    h = torch.zeros(x.shape[0], W.shape[0], dtype=F64)
    for _ in range(600):
        h = torch.tanh(h @ W.T + x @ U.T + b)
    d = 1 - h**2
    eye = torch.eye(W.shape[0], dtype=F64)
    S = torch.linalg.solve(eye - d[:, :, None] * W, d[:, :, None] * U)
    return h, S


def _dense_rank(S: torch.Tensor) -> list[int]:
    sv = torch.linalg.svdvals(S)
    return (sv > torch.finfo(F64).eps ** 0.5 * sv[:, :1]).sum(dim=1).tolist()


def test_input_of_another_size_than_the_state_matches_dense_algebra() -> None:
    from problems import TANH_12X4

    system = TANH_12X4.make()
    assert system.x is not None and system.x.shape == (6, 4) and system.state_shape == (12,)
    h, S = _tanh_dense(system)
    assert S.shape == (6, 12, 4)
    ref = torch.linalg.matrix_norm(S, ord=2)
    dep = dy.input_dependence(system, system.x)
    assert dep.verdict == "strong", dep.reason
    assert dep.converged.tolist() == [True] * 6
    # Picard stops at ‖f(h) − h‖ <= tol (1 + ‖h‖); a 0.9-contraction is then within that / 0.1
    tol = dy.default_tolerance(F64)
    assert bool(((dep.fixed_points - h).norm(dim=1) <= tol * (1 + h.norm(dim=1)) / 0.1).all())
    # at those points dh*/dx moves by O(1e-9): the norm (exact after 4 Golub–Kahan steps, to the
    # GMRES accuracy 1e-12) agrees with the dense one to 1e-8
    torch.testing.assert_close(dep.sensitivity_norm, ref, rtol=1e-8, atol=0)
    assert dep.sensitivity_rank.tolist() == _dense_rank(S) == [4] * 6
    assert dep.full_rank.tolist() == [4] * 6 and dep.image_dim.tolist() == [12] * 6
    json.dumps(dep.to_dict(), allow_nan=False)
    # the public product, rectangular too: (dh*/dx) v for v ∈ ℝ⁴
    v = torch.randn(6, 4, generator=gen(3), dtype=F64)
    got = dy.ift_sensitivity(system, h, v)
    torch.testing.assert_close(got, torch.einsum("bij,bj->bi", S, v), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dense_limit", [512, 0])
def test_geometry_reports_the_true_ift_norm_for_a_rectangular_input(dense_limit: int) -> None:
    from problems import TANH_12X4

    system = TANH_12X4.make()
    h, S = _tanh_dense(system)
    ref = torch.linalg.matrix_norm(S, ord=2)
    g = dy.geometry(system, h, basin_samples=4, radii=(0.01,), dense_limit=dense_limit)
    assert g.exact is (dense_limit > 0)
    assert g.ift_norm is not None and g.notes == ()
    torch.testing.assert_close(g.ift_norm, ref, rtol=1e-8, atol=0)
    assert f"‖dh*/dx‖ max {float(ref.max()):.3g}" in str(g)


def test_stability_axes_on_a_rectangular_input() -> None:
    from problems import TANH_12X4

    system = TANH_12X4.make()
    _, S = _tanh_dense(system)
    ref = torch.linalg.matrix_norm(S, ord=2)
    report = dy.stability_axes(system, n_starts=2, basin_samples=4, contraction=False)
    assert report.reachability.converged_fraction == 1.0
    assert report.input_dependence.verdict == "strong", report.input_dependence.reason
    assert report.geometry is not None and report.geometry.ift_norm is not None
    torch.testing.assert_close(report.geometry.ift_norm, ref, rtol=1e-8, atol=0)
    json.dumps(report.to_dict(), allow_nan=False)


def test_geometry_does_not_turn_an_error_into_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    from problems import TANH_12X4

    import dynamo._axes as axes

    system = TANH_12X4.make()
    h, _ = _tanh_dense(system)

    def broken(self: axes._Sensitivity, seed: int, max_steps: int = 40) -> torch.Tensor:
        raise RuntimeError("a bug in the sensitivity")

    monkeypatch.setattr(axes._Sensitivity, "norm", broken)
    with pytest.raises(RuntimeError, match="a bug in the sensitivity"):
        dy.geometry(system, h, basin_samples=4, radii=(0.01,))


def test_geometry_says_why_an_ift_norm_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from problems import TANH_12X4

    import dynamo._axes as axes

    system = TANH_12X4.make()
    h, S = _tanh_dense(system)
    ref = torch.linalg.matrix_norm(S, ord=2)
    original = axes._Sensitivity._solve

    def first_fails(self: axes._Sensitivity, b: torch.Tensor, transpose: bool) -> torch.Tensor:
        out = original(self, b, transpose)
        self.solved_rows = self.solved_rows.clone()
        self.solved_rows[0] = False  # as when GMRES stops short at the first state only
        return out

    monkeypatch.setattr(axes._Sensitivity, "_solve", first_fails)
    g = dy.geometry(system, h, basin_samples=4, radii=(0.01,))
    assert g.ift_norm is not None
    assert bool(torch.isnan(g.ift_norm[0])) and not bool(torch.isnan(g.ift_norm[1:]).any())
    torch.testing.assert_close(g.ift_norm[1:], ref[1:], rtol=1e-8, atol=0)
    assert len(g.notes) == 1 and "at 1 of 6 states" in g.notes[0] and "GMRES" in g.notes[0]
    d = g.to_dict()
    assert d["ift_norm"][0] is None and d["notes"] == list(g.notes)
    json.dumps(d, allow_nan=False)
    assert "note:" in str(g)


@pytest.mark.parametrize("n_starts", [1, 4])
def test_input_dependence_is_undetermined_when_only_some_inputs_converge(n_starts: int) -> None:
    from problems import LOGISTIC_DRIVEN, LOGISTIC_DRIVEN_CONVERGES, logistic_rate

    system = LOGISTIC_DRIVEN.make()
    assert system.x is not None and LOGISTIC_DRIVEN.exact is not None
    dep = dy.input_dependence(system, system.x, n_starts=n_starts, scale=0.05)
    assert dep.converged.tolist() == list(LOGISTIC_DRIVEN_CONVERGES)  # 3 of 6
    assert dep.verdict == "undetermined", dep.reason
    assert "only 3/6 inputs converged" in dep.reason
    # the converged ones sit on 1 − 1/r, within the Picard tolerance over 1 − |f′| = 1 − |2 − r|
    exact = LOGISTIC_DRIVEN.exact(system)[:3]
    contraction = 1 - (2 - logistic_rate(system.x[:3])).abs()
    tol = dy.default_tolerance(F64)
    assert bool(((dep.fixed_points[:3] - exact).abs() <= tol * 2 / contraction).all())
    assert dep.starts_converged.tolist() == [n_starts] * 3 + [0] * 3
    if n_starts == 1:
        assert "one start per input" in dep.reason
    else:
        assert f"{3 * n_starts} of {6 * n_starts} starts did not converge" in dep.reason
    json.dumps(dep.to_dict(), allow_nan=False)


def test_rank_deficient_sensitivity_is_partial_not_strong() -> None:
    from problems import SUM_INPUT_B, SUM_INPUT_RANK, SUM_INPUT_U, SUM_INPUT_W, TANH_SUM_INPUT

    system = TANH_SUM_INPUT.make()
    assert system.x is not None
    # dense reference: h* by iteration of the formula (‖W‖₂ = 0.5), dh*/dx = (I − DW)⁻¹ D u [1, 1]
    s = system.x[:, :1] + system.x[:, 1:]
    h = torch.zeros(system.x.shape[0], 2, dtype=F64)
    for _ in range(200):
        h = torch.tanh(h @ SUM_INPUT_W.T + s * SUM_INPUT_U + SUM_INPUT_B)
    d = 1 - h**2
    F = (d * SUM_INPUT_U)[:, :, None] * torch.ones(1, 1, 2, dtype=F64)
    S = torch.linalg.solve(torch.eye(2, dtype=F64) - d[:, :, None] * SUM_INPUT_W, F)
    assert _dense_rank(S) == [SUM_INPUT_RANK] * 4
    dep = dy.input_dependence(system, system.x)
    assert dep.verdict == "partial", dep.reason
    assert "rank-deficient at 4/4 inputs" in dep.reason
    assert dep.sensitivity_rank.tolist() == [SUM_INPUT_RANK] * 4
    assert dep.full_rank.tolist() == [2] * 4 and dep.image_dim.tolist() == [2] * 4
    torch.testing.assert_close(
        dep.sensitivity_norm, torch.linalg.matrix_norm(S, ord=2), rtol=1e-8, atol=0
    )


def test_a_weak_but_nonzero_input_direction_is_not_taken_for_a_missing_one() -> None:
    """f(h, x) = A h + U x with A = diag(.9, .9, 0) and U = [e₁, 1e-5 e₃]: dh*/dx has singular
    values 10 and 1e-5, rank 2 of 2, though the strong ∂_h f dwarfs the e₃ direction of the
    step's image."""
    a = torch.diag(torch.tensor([0.9, 0.9, 0.0], dtype=F64))
    u = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1e-5]], dtype=F64)
    xs = torch.randn(3, 2, generator=gen(0), dtype=F64)
    system = dy.LoopedSystem.from_function(lambda h, x: h @ a.T + x @ u.T, (3,), x=xs)
    exact = torch.linalg.svdvals(torch.linalg.solve(torch.eye(3, dtype=F64) - a, u))
    assert exact.tolist() == pytest.approx([10.0, 1e-5], rel=1e-12)
    dep = dy.input_dependence(system, xs)
    assert dep.verdict == "strong", dep.reason
    assert dep.sensitivity_rank.tolist() == [2, 2, 2] and dep.full_rank.tolist() == [2, 2, 2]


def test_probes_is_ignored_and_says_so() -> None:
    f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    xs = torch.randn(2, 4, generator=gen(0), dtype=F64)
    with pytest.warns(DeprecationWarning, match=r"probes is ignored"):
        dep = dy.input_dependence(f, xs, probes=4)
    assert dep.verdict == "strong"


def test_several_limits_per_input_are_counted_and_said() -> None:
    from problems import BISTABLE_DRIVEN

    system = BISTABLE_DRIVEN.make()
    assert system.x is not None and BISTABLE_DRIVEN.exact is not None
    roots = BISTABLE_DRIVEN.exact(system)  # (4, 2, 1): the two attracting roots per input
    dep = dy.input_dependence(system, system.x, n_starts=16, scale=0.5)
    assert dep.n_limits.tolist() == [2] * 4 and dep.multistable
    assert dep.starts_converged.tolist() == [16] * 4
    assert "multistable: 4/4 inputs reach more than one limit (up to 2)" in dep.reason
    assert "limit reached from each input's first start" in dep.reason
    # from h0 = x the iteration reaches the root of x's sign; f′ = 0.6 there
    first = torch.where(system.x > 0, roots[:, 1], roots[:, 0])  # (4, 1)
    tol = dy.default_tolerance(F64)
    assert bool(((dep.fixed_points - first).abs() <= tol * 2 / 0.4 + 1e-12).all())
    # on that branch h* moves with x, dh*/dx = 0.1 / (3h*² − 1) ≠ 0, of full rank 1
    assert dep.verdict == "strong", dep.reason
    torch.testing.assert_close(
        dep.sensitivity_norm, (0.1 / (3 * first**2 - 1)).abs()[:, 0], rtol=1e-8, atol=0
    )
    d = dep.to_dict()
    assert d["multistable"] is True and d["n_limits"] == [2] * 4
    json.dumps(d, allow_nan=False)
    one = dy.input_dependence(system, system.x, n_starts=1)
    assert not one.multistable and one.n_limits.tolist() == [1] * 4
    assert "one start per input" in one.reason


def test_a_strong_verdict_never_hides_several_limits_per_input() -> None:
    from problems import BISTABLE_DRIVEN

    system = BISTABLE_DRIVEN.make()
    assert system.x is not None
    dep = dy.input_dependence(system, system.x, n_starts=16, scale=0.5)
    assert dep.verdict == "strong" and dep.multistable
    # the reason opens with the multistability, before the numbers behind "strong"
    assert dep.reason.startswith(
        "multistable: 4/4 inputs reach more than one limit (up to 2) from their 16 starts "
        "(limits per input: 2, 2, 2, 2)"
    )
    assert dep.reason.index("multistable") < dep.reason.index("all 4 inputs converged")
    assert str(dep).startswith("input-dependence: strong, MULTISTABLE (multistable: 4/4")
    d = dep.to_dict()
    assert d["multistable"] is True and d["n_limits"] == [2] * 4 and d["n_starts"] == 16
    assert d["reason"].startswith("multistable:")
    # one limit per input: no such opening, and str() still gives the counts
    f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    xs = torch.randn(3, 4, generator=gen(0), dtype=F64)
    one = dy.input_dependence(f, xs, n_starts=4)
    assert not one.multistable and not one.reason.startswith("multistable")
    assert str(one).startswith("input-dependence: strong; limits per input 1, 1, 1 from 4 starts")
    # past 12 inputs the counts are tallied: how many inputs have each number of limits
    many = torch.linspace(-0.3, 0.3, 14, dtype=F64)[:, None]
    dep14 = dy.input_dependence(system, many, n_starts=16, scale=0.5)
    k = int((dep14.n_limits == 2).sum())
    assert k >= 12 and int((dep14.n_limits == 1).sum()) == 14 - k
    tally = f"2 ×{k}" if k == 14 else f"1 ×{14 - k}, 2 ×{k}"
    assert f"from their 16 starts (limits per input: {tally})" in dep14.reason


def test_input_dependence_rejects_bad_start_options() -> None:
    f = dy.models.ContractiveTanh(n=4, seed=0)
    xs = torch.zeros(2, 4, dtype=F64)
    with pytest.raises(InvalidArgumentError, match=r"input_dependence\(.*n_starts"):
        dy.input_dependence(f, xs, n_starts=0)
    with pytest.raises(InvalidArgumentError, match=r"input_dependence\(.*start 'uniform'"):
        dy.input_dependence(f, xs, start="uniform")
    with pytest.raises(InvalidArgumentError, match=r"input_dependence\(.*scale"):
        dy.input_dependence(f, xs, scale=0.0)
    with pytest.raises(InvalidArgumentError, match=r"input_dependence\(.*rank_tol"):
        dy.input_dependence(f, xs, rank_tol=1.0)


def test_input_dependence_without_recall_is_undetermined_when_nothing_converged() -> None:
    """Issue 13, item 5: 'none' (one point for all inputs) is never said when no input reached a
    fixed point, even where the structure (no recall) says any fixed point would ignore x."""
    xs = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    auto = dy.models.ContractiveTanh(n=6, lipschitz=0.8, recall=False, seed=0)
    stopped = dy.input_dependence(auto, xs, max_steps=1)
    assert stopped.verdict == "undetermined"
    assert "no input converged" in stopped.reason and "reached none" in stopped.reason
    assert dy.input_dependence(auto, xs).verdict == "none"  # reached: none by construction


def test_input_dependence_names_an_unknown_starts_value() -> None:
    """Issue 13, item 5: any value other than the three choices fell back to normal starts."""
    xs = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    f = dy.models.ContractiveTanh(n=6, lipschitz=0.8, seed=0)
    with pytest.raises(
        InvalidArgumentError,
        match=r"input_dependence\(model_or_system_factory, inputs\): unknown starts 'foo'; "
        r"choose one of 'input', 'zeros', 'normal'",
    ):
        dy.input_dependence(f, xs, starts="foo")
    # start= is the keyword (as in find_fixed_points); starts= its deprecated former name
    with pytest.warns(DeprecationWarning, match="starts= is now start="):
        old = dy.input_dependence(f, xs, starts="zeros", n_starts=1)
    new = dy.input_dependence(f, xs, start="zeros", n_starts=1)
    assert torch.equal(old.fixed_points, new.fixed_points) and old.verdict == new.verdict
    with pytest.raises(InvalidArgumentError, match="pass start= only"):
        dy.input_dependence(f, xs, start="zeros", starts="normal")


def test_path_agreement_is_the_one_definition_of_path_independence() -> None:
    """Issue 14: reachability, the certificate metric and verify's reachability report all read
    path independence from dynamo.kernel.path_agreement."""
    from dynamo.kernel import path_agreement

    limits = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]]], dtype=F64
    )
    has = torch.tensor([[True, True, True], [True, True, False]])
    a = path_agreement(limits, has, same=1e-6)
    # input 0: pairs (e1,e2), (e1,e1), (e2,e1) -> 0, 1, 0; input 1: one pair of equal limits
    assert a.cosines == (0.0, 1.0, 0.0, 1.0)
    assert a.mean == pytest.approx(0.5) and a.worst == 0.0
    assert a.spreads[0] == pytest.approx(2**0.5) and a.spreads[1] == 0.0
    assert a.agreeing == 0  # input 1 agrees, but one of its starts has no limit
    assert path_agreement(limits, torch.ones(2, 3, dtype=torch.bool), same=1e-6).agreeing == 0
    one = path_agreement(limits[1:, :2], has[1:, :2], same=1e-6)
    assert one.agreeing == 1 and one.mean == 1.0
    empty = path_agreement(limits, torch.zeros(2, 3, dtype=torch.bool))
    assert empty.mean is None and empty.worst is None
    assert all(v != v for v in empty.spreads)  # NaN: no limit to spread
