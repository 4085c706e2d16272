"""Multi-start fixed-point search against maps with known answers."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

import dynamo as dy
from dynamo.errors import InvalidArgumentError, ShapeError

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hopfield_finds_every_pattern_and_its_negative_as_stable() -> None:
    model = dy.models.Hopfield(n=64, n_patterns=3, seed=0)
    found = dy.find_fixed_points(dy.LoopedSystem.from_module(model), 128, mode="all", seed=0)
    stable_signs = [torch.sign(p.state) for p in found.stable()]
    for pattern in torch.cat([model.patterns, -model.patterns]):
        assert any(torch.equal(s, pattern) for s in stable_signs), "a stored pattern is missing"
    for p in found.stable():
        assert p.spectral_radius < 1 and p.residual <= 1e-10
    assert found.start_outcomes["converged"] == 128
    json.dumps(found.to_dict(), allow_nan=False)


def test_mondeq_has_exactly_one_fixed_point_for_each_of_twenty_inputs() -> None:
    model = dy.models.MonDEQ(n=16, m=0.5, seed=0)
    x = torch.randn(20, 16, generator=gen(0), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    found = dy.find_fixed_points(system, 16, mode="all", seed=0)
    for i in range(20):
        pts = found.for_input(i)
        assert len(pts) == 1, f"input {i}: {len(pts)} points"
        one = system.with_input(x[i : i + 1])
        ref = dy.solve(
            one, torch.zeros(1, 16, dtype=F64), method="picard", damping=0.1, max_steps=5000
        )
        torch.testing.assert_close(pts[0].state, ref.state[0], rtol=0, atol=1e-8)


def test_henon_yields_exactly_its_two_saddles() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Henon())
    found = dy.find_fixed_points(system, 128, mode="all", scale=0.5, seed=1)
    assert len(found.points) == 2
    assert [p.stability for p in found.points] == ["saddle", "saddle"]
    by_x = sorted(found.points, key=lambda p: float(p.state[0]))
    torch.testing.assert_close(
        torch.stack([p.state for p in by_x]),
        dy.models.Henon().fixed_points().flip(0),
        rtol=0,
        atol=1e-12,
    )
    eig = [sorted(p.eigenvalues.real.tolist()) for p in by_x]
    assert eig[0] == pytest.approx([-0.092, 3.260], abs=1e-3)  # x ≈ −1.1314
    assert eig[1] == pytest.approx([-1.924, 0.156], abs=1e-3)  # x ≈ 0.6314
    assert all(p.n_unstable == 1 and p.n_unstable_exact for p in found.points)
    assert all(p.basin_count == 0 and p.found_by != ("iteration",) for p in found.points)
    # bounded starts fall on the strange attractor (no short cycle), the others escape
    assert found.start_outcomes["diverged"] > 0
    assert found.start_outcomes["unconverged"] > 0
    assert found.start_outcomes["converged"] == 0 and not found.cycles


def test_logistic_two_unstable_points_and_a_stable_two_cycle() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2))
    starts = 0.02 + 0.96 * torch.rand(64, 1, generator=gen(2), dtype=F64)
    found = dy.find_fixed_points(system, starts=starts, mode="all", seed=0)
    pts = sorted(found.points, key=lambda p: float(p.state[0]))
    assert len(pts) == 2
    assert [round(float(p.state[0]), 12) for p in pts] == [0.0, 0.6875]
    assert [p.stability for p in pts] == ["unstable", "unstable"]
    assert [round(float(p.eigenvalues[0].real), 10) for p in pts] == [3.2, -1.2]
    assert len(found.cycles) == 1
    cyc = found.cycles[0]
    assert cyc.period == 2 and cyc.stability == "stable"
    assert sorted(round(v, 4) for v in cyc.points.flatten().tolist()) == [0.513, 0.7995]
    assert float(cyc.multipliers[0].real) == pytest.approx(0.16, abs=1e-10)
    assert cyc.basin_count == 64 and found.start_outcomes["cycle"] == 64


@pytest.mark.parametrize(("d", "n_tokens", "dim"), [(4, None, 3), (8, None, 7), (4, 3, 9)])
def test_zero_branch_rmsnorm_is_a_continuum_not_a_count(
    d: int, n_tokens: int | None, dim: int
) -> None:
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=d, n_tokens=n_tokens))
    found = dy.find_fixed_points(system, 32, seed=0)
    assert len(found.points) == 0  # never "N fixed points"
    assert len(found.continua) == 1
    cont = found.continua[0]
    assert cont.dimension == dim
    assert cont.samples.shape[0] == 32 and cont.basin_count == 32
    assert "continuum of dimension" in str(found)
    # the dedup count tracks the number of starts at every tolerance: nothing is isolated
    assert all(count == 32 for t, count in found.dedup_curve if t < 0.1)


def test_bistable_map_nine_points_and_quadrant_basins() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    starts = -2 + 4 * torch.rand(400, 2, generator=gen(3), dtype=F64)
    found = dy.find_fixed_points(system, starts=starts, mode="all", seed=0)
    c = found.counts()
    assert (c["stable"], c["saddle"], c["unstable"]) == (4, 4, 1)
    for p in found.stable():
        torch.testing.assert_close(p.state.abs(), torch.ones(2, dtype=F64), rtol=0, atol=1e-12)
        assert p.spectral_radius == pytest.approx(0.6)
        quadrant = (torch.sign(starts) == torch.sign(p.state)).all(dim=1).sum().item()
        assert p.basin_count == quadrant
        assert p.basin_interval == dy.clopper_pearson(p.basin_count, starts.shape[0])
    (origin,) = found.with_stability("unstable")
    assert float(origin.state.norm()) <= 1e-12 and origin.spectral_radius == pytest.approx(1.2)
    assert found.unseen.observed == 4 and found.unseen.unseen == 0
    assert found.discovery[-1] == 4


def test_unseen_estimate_says_what_the_sample_size_guarantees_and_no_more() -> None:
    est = dy.chao1([10, 1, 1, 1, 2], n=15)
    assert est.f1 == 3 and est.f2 == 1
    assert est.chao1 == pytest.approx(5 + 9 / 2) and est.unseen == pytest.approx(4.5)
    # the detectable size: a class this large is missed by all 15 draws with probability 0.05
    assert (1 - est.min_detectable_fraction) ** 15 == pytest.approx(0.05, rel=1e-12)
    text = str(est)
    assert "not a bound" in text and "at 95%" not in text and "basin holds >= 18%" in text
    assert not hasattr(est, "unseen_upper")  # Chao1 has no upper bound to offer
    assert est.to_dict()["kind"] == "estimate"


def test_a_one_percent_basin_is_missed_without_any_claim_being_broken() -> None:
    """Issue 12, item 7: 99% / 1% basins, 16 starts, 100 seeds."""
    from problems import bistable_99_1
    from scipy import stats

    missed = 0
    for seed in range(100):
        system, starts = bistable_99_1(seed)
        found = dy.find_fixed_points(system, starts=starts, seed=seed)
        text = str(found)
        assert "unseen at 95%" not in text and "estimated <= 0" not in text
        # what is claimed: any basin of >= 17% would have been seen; the 1% basin is below that
        assert found.unseen.min_detectable_fraction == pytest.approx(1 - 0.05 ** (1 / 16))
        assert found.unseen.min_detectable_fraction > 0.01
        stable = {round(float(p.state[0])) for p in found.stable()}
        assert stable in ({1}, {-1, 1})
        missed += stable == {1}
    # 0.99^16 = 0.851 of runs miss it: the bank's basin is 1% (99.9% binomial range)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], 100, 0.99**16)
    assert lo <= missed <= hi


def test_nonfinite_starts_are_counted_and_the_rest_analysed() -> None:
    system = dy.LoopedSystem.from_function(torch.sqrt, state_shape=(1,), validate=False)
    starts = torch.tensor([[0.5], [-1.0], [4.0], [-0.3], [9.0]], dtype=F64)
    found = dy.find_fixed_points(system, starts=starts, seed=0)
    assert found.start_outcomes["nonfinite"] == 2
    assert found.start_outcomes["converged"] == 3
    assert [round(float(p.state[0]), 12) for p in found.points] == [1.0]
    assert found.labels.tolist()[1] == -3


def test_bad_arguments() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Henon())
    with pytest.raises(InvalidArgumentError, match="n_starts must be >= 1"):
        dy.find_fixed_points(system, 0)
    with pytest.raises(ShapeError, match=r"starts has shape \(4, 3\)"):
        dy.find_fixed_points(system, starts=torch.zeros(4, 3, dtype=F64))
    with pytest.raises(InvalidArgumentError, match="unknown mode 'everything'"):
        dy.find_fixed_points(system, 4, mode="everything")
    bad = torch.zeros(2, 2, dtype=F64)
    bad[0, 0] = math.nan
    with pytest.raises(InvalidArgumentError, match="starts contains NaN or inf"):
        dy.find_fixed_points(system, starts=bad)


# ---------------------------------------------------------------------- per layer, halting
def test_layer_cycle_of_a_three_layer_block() -> None:
    model = dy.models.LoopedTransformer(
        d_model=8, n_heads=2, n_layers=3, recall="outer", norm="outer", seed=2
    )  # a draw whose loop converges
    x = torch.randn(2, 4, 8, generator=gen(4), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    h = dy.solve(system, system.initial_states("input"), method="anderson").state
    lc = dy.layer_cycle(system, h, n_steps=80)
    assert lc.n_layers == 3
    assert float(lc.closure.max()) <= 1e-9
    off = lc.distinctness[:, ~torch.eye(3, dtype=torch.bool)]
    assert float(off.min()) > 1e-3  # the layers sit at distinct points of the cycle
    assert float(lc.rotation_spread.max()) <= 1e-9  # C10: eig(AB) = eig(BA)
    assert lc.stability == ("stable", "stable") and lc.attracts == (True, True)
    assert float(lc.convergence[-1].max()) < float(lc.convergence[0].max())
    assert lc.attention_change is not None
    assert float(lc.attention_change[-1].max()) < float(lc.attention_change[0].max())
    json.dumps(lc.to_dict(), allow_nan=False)


def test_layer_cycle_needs_layer_maps() -> None:
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(3,))
    with pytest.raises(InvalidArgumentError, match="does not know its layer maps"):
        dy.layer_cycle(system, torch.zeros(1, 3, dtype=F64))


def _layer_cycle_cases() -> list[Any]:
    from problems import LAYER_CYCLES

    return list(LAYER_CYCLES)


@pytest.mark.parametrize("case", _layer_cycle_cases(), ids=lambda c: c.name)
def test_layer_cycle_says_whether_the_cycle_attracts(case: Any) -> None:
    system, h_star, points = case.make()
    n = h_star.shape[0]
    lc = dy.layer_cycle(system, h_star, n_steps=60)
    assert torch.allclose(lc.states, points, rtol=0, atol=1e-14)
    assert float(lc.closure.max()) <= 1e-15
    # a 2×2 Jacobian by autodiff and a dense eigensolver: ρ to rounding; both eigenvalues are ±ρ
    # in every rotation (C10)
    assert lc.spectrum == "dense" and bool(lc.rotation_converged.all())
    assert lc.spectral_radius.tolist() == pytest.approx([case.rho] * n, abs=1e-13)
    mods = lc.rotation_eigenvalues.abs()
    assert mods.shape == (2, n, 2)
    assert torch.allclose(mods, torch.full_like(mods, case.rho), rtol=0, atol=1e-13)
    assert float(lc.rotation_spread.max()) <= 1e-13
    assert lc.stability == (case.stability,) * n
    assert lc.n_unstable == (case.n_unstable,) * n
    assert lc.attracts == (case.attracts,) * n
    text = str(lc)
    d = lc.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["stability"] == [case.stability] * n and d["attracts"] == [case.attracts] * n
    first, last = float(lc.convergence[0].max()), float(lc.convergence[-1].max())
    if case.attracts:
        assert "cycle attracts" in text and "NOT" not in text
        assert last < 1e-5 * first  # 60 steps at rate 0.8: 0.8⁶⁰ = 1.5e-6
    elif case.attracts is False:
        assert (
            f"does NOT attract: iteration does not converge to it (ρ > 1); ρ = {case.rho:.3g}"
            in text
        )
        assert last > first  # the layers leave their points
    else:
        assert "undecided by the linearisation" in text
    # an autonomous block has no input: its x (batch 3 here, vs 2 fixed points) is not used
    assert lc.start == "h_star + 10% noise (seed 0)"


def test_layer_cycle_of_an_autonomous_transformer_ignores_its_input_batch() -> None:
    model = dy.models.LoopedTransformer(
        d_model=8, n_heads=2, n_layers=2, recall="none", norm="outer", seed=0
    )
    x = torch.randn(3, 4, 8, generator=gen(0), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    sol = dy.solve(system, system.initial_states("input"), method="anderson", throw=False)
    h = sol.state[sol.converged]
    assert h.shape[0] == 2  # 2 fixed points for an input of batch 3
    lc = dy.layer_cycle(system, h, n_steps=10)  # raised "size of tensor a (3) must match … (2)"
    bare = dy.LoopedSystem.from_module(model, state_shape=(4, 8))  # the same map, no input
    ref = dy.layer_cycle(bare, h, n_steps=10)
    assert torch.equal(lc.states, ref.states)
    assert torch.equal(lc.convergence, ref.convergence)
    assert lc.attention_change is not None and ref.attention_change is not None
    assert torch.equal(lc.attention_change, ref.attention_change)
    assert lc.stability == ref.stability and len(lc.stability) == 2


def test_layer_cycle_refuses_points_that_are_not_fixed_and_batches_that_disagree() -> None:
    from problems import LAYER_CYCLE_STABLE

    system, h, _ = LAYER_CYCLE_STABLE.make()
    with pytest.raises(
        InvalidArgumentError,
        match=r"^layer_cycle\(system, h_star\): h_star\[0\] is not a fixed point of the block: "
        r"‖f\(h\*\) − h\*‖ = 4\.5\de-04",  # ‖(J − I) δ‖ for δ = (1e-3, 1e-3), J = 0.8/√2 A
    ):
        dy.layer_cycle(system, h + 1e-3)
    loose = dy.layer_cycle(system, h + 1e-3, tol=1e-2)  # the tolerance it was solved with
    assert float(loose.closure[0]) > 1e-4
    with pytest.raises(ShapeError, match=r"starts has batch 2 but h_star has batch 1"):
        dy.layer_cycle(system, h, starts=h.expand(2, 2))
    # the former keyword still works, with a warning, and names itself
    with (
        pytest.warns(DeprecationWarning, match="start= is now starts="),
        pytest.raises(ShapeError, match=r"start has batch 2 but h_star has batch 1"),
    ):
        dy.layer_cycle(system, h, start=h.expand(2, 2))
    f1, f2 = system.layers  # type: ignore[misc]
    wrong = dy.LoopedSystem.from_function(
        lambda z: f2(f1(z)) + 0.0 * z, state_shape=(2,), layers=[f1, lambda u, x=None: u]
    )
    with pytest.raises(InvalidArgumentError, match="the layer maps do not compose to the block"):
        dy.layer_cycle(wrong, h)
    layers = [lambda z, x: torch.tanh(0.5 * z + x), lambda z, x: -0.5 * z]
    x = torch.ones(3, 2, dtype=F64)
    driven = dy.LoopedSystem.from_function(
        lambda z, x: layers[1](layers[0](z, x), x), state_shape=(2,), x=x, layers=layers
    )
    with pytest.raises(
        ShapeError,
        match=r"^layer_cycle\(system, h_star\): h_star has batch 2 but the driven system's "
        r"input x has batch 3",
    ):
        dy.layer_cycle(driven, torch.zeros(2, 2, dtype=F64))


def test_layer_cycle_krylov_spectra_carry_their_convergence_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from problems import LAYER_CYCLE_UNSTABLE

    import dynamo._krylov as kry
    from dynamo._krylov import KrylovResult

    system, h, _ = LAYER_CYCLE_UNSTABLE.make()
    lc = dy.layer_cycle(system, h, dense_limit=1)  # Arnoldi, exact at dimension 2
    assert lc.spectrum == "arnoldi" and bool(lc.rotation_converged.all())
    assert float(lc.spectral_radius[0]) == pytest.approx(1.63, abs=1e-12)
    assert lc.stability == ("unstable",) and lc.attracts == (False,)

    real = kry.arnoldi
    calls: list[int] = []
    stall = {"all": False}

    def stall_first(*args: Any, **kwargs: Any) -> KrylovResult:  # rotation 0 runs out of steps
        calls.append(1)
        if len(calls) > 1 and not stall["all"]:
            return real(*args, **kwargs)
        k = int(kwargs["k"])
        return KrylovResult(
            values=torch.zeros(1, k, dtype=torch.complex128) + 0.5,  # would read as stable
            residuals=torch.ones(1, k, dtype=F64),
            steps=torch.zeros(1, dtype=torch.long),
            converged=torch.tensor([False]),
            vectors={},
        )

    monkeypatch.setattr(kry, "arnoldi", stall_first)  # the engine's one eigenvalue switch
    lc = dy.layer_cycle(system, h, dense_limit=1)
    assert lc.rotation_converged.tolist() == [[False], [True]]
    assert math.isnan(float(lc.rotation_spread[0]))  # unconverged Ritz values prove nothing
    assert float(lc.spectral_radius[0]) == pytest.approx(1.63, abs=1e-12)  # from rotation 1 (C10)
    assert lc.stability == ("unstable",)
    assert "Arnoldi did not converge for some rotation at 1 point(s)" in str(lc)

    stall["all"] = True
    lc = dy.layer_cycle(system, h, dense_limit=1)
    assert not bool(lc.rotation_converged.any())
    assert math.isnan(float(lc.spectral_radius[0]))
    assert lc.stability == ("unknown",) and lc.attracts == (None,)
    assert "point 0: stability unknown" in str(lc)
    d = lc.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["spectral_radius"] == [None] and d["rotation_spread"] == [None]


def test_halting_rules_fire_and_say_how_far_from_the_fixed_point() -> None:
    f = dy.models.ContractiveTanh(n=16, lipschitz=0.95, structure="symmetric", input_scale=0.1)
    system = dy.LoopedSystem.from_module(f, torch.ones(1, 16, dtype=F64))
    h0 = torch.randn(4, 16, generator=gen(5), dtype=F64)
    rep = dy.halting(system, h0, max_steps=600)
    assert bool(rep.h_star_converged.all())
    for name in ["fprm", "huginn", "residual"]:
        assert bool((rep.fired_at[name] > 0).all())
    # looser rules halt earlier and farther from the fixed point
    assert bool((rep.fired_at["fprm"] <= rep.fired_at["residual"]).all())
    assert bool((rep.distance_at_halt["fprm"] > rep.distance_at_halt["residual"]).all())
    assert float(rep.distance_at_halt["residual"].max()) < 1e-8
    k = int(rep.fired_at["huginn"][0])
    assert float(rep.values["huginn"][k - 1, 0]) < 0.03 <= float(rep.values["huginn"][k - 2, 0])
    json.dumps(rep.to_dict(), allow_nan=False)
    with pytest.raises(InvalidArgumentError, match="unknown halting rule 'kl'"):
        dy.halting(system, h0, rules={"kl": 5e-4})


def test_unconverged_ritz_values_never_classify_a_point(monkeypatch: pytest.MonkeyPatch) -> None:
    import dynamo._fixed_points as fp
    import dynamo._krylov as kry
    from dynamo._krylov import KrylovResult

    def stalled(*args: object, **kwargs: object) -> KrylovResult:  # as if Arnoldi ran out of steps
        k = int(kwargs["k"])  # type: ignore[call-overload]
        z = torch.zeros(2, k, dtype=torch.complex128)
        return KrylovResult(
            values=z + 5.0,  # far outside the true spectrum: would read as unstable
            residuals=torch.ones(2, k, dtype=F64),
            steps=torch.zeros(2, dtype=torch.long),
            converged=torch.tensor([False, True]),
            vectors={},
        )

    monkeypatch.setattr(kry, "arnoldi", stalled)
    lin = dy.models.LinearMap(n=6, spectral_radius=0.5, seed=0)
    system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 6))
    states = torch.zeros(2, 6, dtype=F64)
    rows = torch.zeros(2, dtype=torch.long)
    eigs, exact = fp._spectra(
        system, states, fp._Inputs(system, rows), rows, k=2, dense_limit=0, seed=0
    )
    assert not exact
    assert float(eigs[0].abs().max()) == pytest.approx(0.5)  # recomputed densely
    assert float(eigs[1].abs().max()) == 5.0  # a converged estimate is kept as it is


# ---------------------------------------------------------------- issue 12: known answers
def _long_run_periods(system: dy.LoopedSystem, starts: torch.Tensor) -> list[int | None]:
    """Independent truth: iterate 20,000 steps, then the least period (<= 8) of the limit."""
    h = starts.clone()
    with torch.no_grad():
        for _ in range(20_000):
            h = system.step(h)
        orbit = [h]
        for _ in range(8):
            orbit.append(system.step(orbit[-1]))
    out: list[int | None] = []
    for i in range(h.shape[0]):
        scale = max(1.0, float(h[i].norm()))
        out.append(
            next(
                (p for p in range(1, 9) if float((orbit[p][i] - h[i]).norm()) <= 1e-9 * scale),
                None,
            )
        )
    return out


@pytest.mark.parametrize(
    "seed", [0, *(pytest.param(s, marks=pytest.mark.slow) for s in range(1, 10))]
)
def test_flipflop_all_27_fixed_points_with_their_classes_at_every_seed(seed: int) -> None:
    """Issue 12, item 1: 8 stable, 12 index-1, 6 index-2, 1 index-3, from the given starts."""
    from collections import Counter

    from problems import flipflop

    ff = flipflop()
    found = dy.find_fixed_points(ff.system(), starts=ff.starts(), mode="all", seed=seed)
    assert len(found.points) == ff.n_points and not found.continua and not found.cycles
    assert dict(Counter(p.n_unstable for p in found.points)) == ff.by_index
    assert all(p.n_unstable_exact and p.nullity == 0 for p in found.points)
    assert max(p.residual for p in found.points) <= 1e-10
    assert [p.stability for p in found.points].count("stable") == 8
    # tanh sends every ball of radius >= √24 into its interior: the indices must sum to 1
    assert found.index_sums == (1,)
    assert found.unseen_points is not None and found.unseen_points.draws == 1024
    assert "fixed points, by random root-finding runs" in str(found)


def test_root_finding_starts_from_every_given_start() -> None:
    """Issue 12, item 1's cause: a third of the starts never seeded a root-finding run. With
    f(h) = h + 0.3 sin(2πh)/(2π), every integer is a repelling fixed point (f′ = 1.3) that only
    a Newton run from next to it finds; 32 starts beside 32 integers must give all 32."""
    system = dy.LoopedSystem.from_function(
        lambda h: h + 0.3 * torch.sin(2 * math.pi * h) / (2 * math.pi), state_shape=(1,)
    )
    starts = torch.arange(32, dtype=F64)[:, None] + 0.01
    found = dy.find_fixed_points(
        system, starts=starts, mode="all", qmin_steps=0, bridge_rounds=0, seed=0
    )
    unstable = sorted(round(float(p.state[0]), 9) for p in found.with_stability("unstable"))
    assert set(range(32)) <= set(unstable)


@pytest.mark.parametrize("case", ["mondeq_2cycle", "mondeq_3_and_4_cycles"])
def test_attracting_cycles_hold_the_starts_that_settle_on_them(case: str) -> None:
    """Issue 12, item 2: the cycles iteration settles on, with their least periods and basins."""
    from collections import Counter

    from problems import CYCLE_CASES

    (c,) = [c for c in CYCLE_CASES if c.name == case]
    system = c.make()
    starts = c.starts(system)
    truth = _long_run_periods(system, starts)
    assert dict(Counter(p for p in truth if p is not None and p > 1)) == c.settled
    assert truth.count(1) == 0  # no start converges to a fixed point

    found = dy.find_fixed_points(system, starts=starts, seed=0)
    assert {cyc.period: cyc.basin_count for cyc in found.cycles} == c.settled
    assert found.start_outcomes["cycle"] == sum(c.settled.values())
    assert found.start_outcomes["unconverged"] == len(truth) - sum(c.settled.values())
    for cyc in found.cycles:
        assert cyc.stability == "stable" and cyc.spectral_radius < 1
        orbit = [cyc.points[0][None]]
        with torch.no_grad():
            for _ in range(cyc.period):
                orbit.append(system.step(orbit[-1]))
        assert float((orbit[-1] - orbit[0]).norm()) <= 1e-9  # it closes after p steps
        assert all(float((orbit[q] - orbit[0]).norm()) > 1e-3 for q in range(1, cyc.period))
    # every start the search put on a cycle has the cycle's period in the long run
    for row, label in enumerate(found.labels.tolist()):
        if label >= 0:
            assert truth[row] == found.cycles[label].period


def test_a_slow_cycle_is_found_past_max_steps_not_from_an_early_transient() -> None:
    """The search continues from where iteration stopped: more steps, same cycle."""
    from problems import MONDEQ_2CYCLE

    system = MONDEQ_2CYCLE.make()
    starts = MONDEQ_2CYCLE.starts(system)
    basins = []
    for max_steps in (300, 1000, 3000):
        found = dy.find_fixed_points(system, starts=starts, max_steps=max_steps, seed=0)
        assert [cyc.period for cyc in found.cycles] == [2]
        basins.append(found.cycles[0].basin_count)
    # after 300 steps some starts are still outside the cycle's linear regime; from 1000 on, all
    assert basins[0] < 16 and basins[1:] == [16, 16]


@pytest.mark.parametrize("dedup_tol", [1e-15, 1e-1])
def test_a_cycle_keeps_its_period_whatever_the_dedup_tolerance(dedup_tol: float) -> None:
    """The least period is read against the residual Newton reached on f^p, not against the
    dedup tolerance (finer than that residual it raised StopIteration; coarse, a small 2-cycle
    closed at period 1 and its starts were counted unconverged)."""
    from problems import MONDEQ_2CYCLE

    system = MONDEQ_2CYCLE.make()
    found = dy.find_fixed_points(
        system, starts=MONDEQ_2CYCLE.starts(system), dedup_tol=dedup_tol, seed=0
    )
    assert [(cyc.period, cyc.basin_count) for cyc in found.cycles] == [(2, 16)]


def test_a_damped_search_says_whose_attractors_it_counts() -> None:
    """Damped iteration (α = 0.5) converges to the logistic map's 0.6875, unstable for f."""
    from problems import LOGISTIC32

    system = LOGISTIC32.make()
    found = dy.find_fixed_points(system, starts=LOGISTIC32.starts(system), damping=0.5, seed=0)
    (p,) = found.points
    assert float(p.state[0]) == pytest.approx(0.6875, abs=1e-12) and p.stability == "unstable"
    assert found.counts()["unstable"] == 1  # what iteration reached: a lower bound, not None
    assert found.counts()["saddle"] is None
    assert "attractors of the damped iteration (α = 0.5)" in str(found)
    assert "1 not attracting" in str(found)


def test_reach_mode_never_says_zero_fixed_points_when_a_cycle_attracts() -> None:
    """Issue 12, item 6: logistic r = 3.2 has two unstable fixed points and a stable 2-cycle."""
    from problems import LOGISTIC32

    system = LOGISTIC32.make()
    starts = LOGISTIC32.starts(system)
    found = dy.find_fixed_points(system, starts=starts, seed=0)
    text = str(found)
    assert "0 isolated" not in text and "0 fixed point" not in text
    assert "no start converged to an isolated fixed point" in text and "mode='all'" in text
    counts = found.counts()
    assert counts["saddle"] is None and counts["unstable"] is None  # not searched, not zero
    assert counts["stable"] == 0 and counts["cycles"] == 1
    (cyc,) = found.cycles
    assert cyc.period == 2 and cyc.basin_count == 16 and cyc.stability == "stable"
    assert sorted(cyc.points.flatten().tolist()) == pytest.approx([0.5130, 0.7995], abs=1e-4)
    assert cyc.spectral_radius == pytest.approx(0.16, abs=1e-9)

    every = dy.find_fixed_points(system, starts=starts, mode="all", seed=0)
    assert sorted(float(p.state[0]) for p in every.points) == pytest.approx(
        sorted(LOGISTIC32.exact(system).flatten().tolist()),
        abs=1e-12,  # type: ignore[misc]
    )
    assert {p.stability for p in every.points} == {"unstable"}
    assert every.counts()["unstable"] == 2


def _continuum_case(name: str) -> Any:
    from problems import CONTINUUM_CASES

    (c,) = [c for c in CONTINUUM_CASES if c.name == name]
    return c


def _check_continua(c: Any, found: dy.FixedPointSet) -> None:
    assert sorted(k.dimension for k in found.continua) == sorted(c.dimensions)
    assert not any(k.dimension_is_lower_bound for k in found.continua)
    assert len(found.points) == c.isolated
    if c.label is not None:
        # Newton stops at a residual of tol·‖h‖; across a continuum whose map moves off it
        # slowly (|1 − f′| = 0.027 across the repelling ring at 10.3) that is ~40 tol·‖h‖ away
        rel = 1e3 * found.tol
        levels = []
        for k in found.continua:
            lab = c.label(k.samples.double())
            scale = max(1.0, float(k.samples.double().norm(dim=1).max()))
            assert float(lab.max() - lab.min()) <= rel * scale
            levels.append(float(lab.mean()))
        assert sorted(levels) == pytest.approx(list(c.values), abs=1e-6)
    # every start that converged is on a continuum: one attractor per reached continuum
    assert found.start_outcomes["converged"] == 0
    assert found.unseen.observed == sum(1 for k in found.continua if k.basin_count > 0)


@pytest.mark.parametrize("dedup_tol", [None, 1e-3, 1e-1])
@pytest.mark.parametrize(
    "case",
    [
        "line_attractor",
        "zero_branch_rmsnorm_12",
        "three_rings",
        "three_close_rings",
        "three_far_lines",
    ],
)
def test_a_continuum_is_one_continuum_whatever_the_dedup_tolerance(
    case: str, dedup_tol: float | None
) -> None:
    """Issue 12, item 3: one continuum stays one, and separate ones stay apart (three circles
    0.3 apart at radius 10; three lines 1 apart sampled over ±200)."""
    c = _continuum_case(case)
    system = c.make()
    kw = {"starts": c.starts(system)} if c.starts is not None else {"n_starts": c.n_starts}
    found = dy.find_fixed_points(
        system, mode="all", scale=c.scale, dedup_tol=dedup_tol, seed=0, **kw
    )
    _check_continua(c, found)


def test_continua_in_float32_and_above_dense_limit() -> None:
    """float32: the steps of the non-isolation test stay above Newton's landing noise; Arnoldi:
    the sphere's 11 dimensions are found from a 6-eigenvalue spectrum."""
    line = _continuum_case("line_attractor")
    found = dy.find_fixed_points(line.make().to(dtype=torch.float32), 64, seed=0)
    assert found.dtype == "float32"
    _check_continua(line, found)
    sphere = _continuum_case("zero_branch_rmsnorm_12")
    found = dy.find_fixed_points(sphere.make(), sphere.n_starts, dense_limit=0, seed=0)
    assert found.points == () and [k.dimension for k in found.continua] == [11]


def test_a_degenerate_isolated_point_is_one_point() -> None:
    """h ↦ h − h³: Newton stops anywhere within tol^(1/3) of 0; that is still one point, and
    not a continuum."""
    from problems import CUBIC_DEGENERATE

    system = CUBIC_DEGENERATE.make()
    found = dy.find_fixed_points(system, starts=CUBIC_DEGENERATE.starts(system), mode="all", seed=0)
    assert not found.continua
    (p,) = found.points
    assert p.stability == "marginal" and p.nullity == 1
    assert abs(float(p.state[0])) <= 1e-3
    assert found.index_sums == (None,)  # a degenerate point has no index


def test_a_search_too_large_for_the_machine_is_refused_before_allocating() -> None:
    """Issue 13, item 5: n_starts = 10⁹ gave a raw allocation error."""
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    with pytest.raises(InvalidArgumentError, match=r"n_starts=1000000000.*GiB.*fewer starts"):
        dy.find_fixed_points(system, 10**9)


def test_dedup_curve_counts_are_exactly_single_linkage_at_every_scale(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The discovery curve's counts from one clustering (merge heights below the dedup radius,
    bounds and exact least distances above it) equal a separate clustering at every scale,
    also on the fallback paths for clusters and groups too large for a dense linkage."""
    import numpy as np

    import dynamo._fixed_points as fp

    rng = np.random.default_rng(0)
    for limit in (fp._DENSE_LINKAGE, 5):
        monkeypatch.setattr(fp, "_DENSE_LINKAGE", limit)
        for trial in range(12):
            dim = (2, 3, 24)[trial % 3]
            n = 300
            pts = rng.uniform(size=(n, dim)) * (0.1, 1.0, 3.0)[trial % 3]
            groups = rng.integers(0, 1 + trial % 3, n)
            # copies of a few points, at Newton-sized and coarser spreads
            c = n // 2
            spread = (1e-11, 1e-6, 1e-3)[trial % 3]
            pts[:c] = pts[rng.integers(c, c + 10, c)] + spread * rng.normal(size=(c, dim))
            radius = (1e-9, 1e-5, 1e-3, 0.05)[trial % 4]
            scales = [radius * 10.0**e for e in range(-3, 7)]
            expected = [(t, len(fp._clusters(pts, groups, t))) for t in scales]
            assert fp._single_linkage_counts(pts, groups, radius, scales) == expected
        # chains (single linkage joins them at the radius) whose representatives are far apart
        # while their ends come close: the coarse scales need the exact least distances
        for trial in range(12):
            chains = []
            for _ in range(8):
                steps = rng.normal(size=(40, 2))
                steps *= 0.4 / np.linalg.norm(steps, axis=1, keepdims=True)
                chains.append(rng.uniform(-30, 30, size=2) + np.cumsum(steps, axis=0))
            pts = np.concatenate(chains)
            groups = rng.integers(0, 1 + trial % 2, len(pts))
            scales = [10.0**e for e in range(-3, 7)] + [1.5, 2.5, 4.0, 7.0]
            expected = [(t, len(fp._clusters(pts, groups, t))) for t in scales]
            assert fp._single_linkage_counts(pts, groups, 1.0, scales) == expected


def test_dedup_clusters_are_exactly_single_linkage() -> None:
    """The ball cover is exact: the same partition as joining every pair within the radius."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    from dynamo._fixed_points import _clusters

    rng = np.random.default_rng(0)
    for dim in (2, 3, 24):
        pts = rng.uniform(size=(300, dim))
        groups = rng.integers(0, 2, 300)
        # copies of a few points with Newton-sized noise, as a search produces
        pts[:100] = pts[:5].repeat(20, axis=0) + 1e-11 * rng.normal(size=(100, dim))
        groups[:100] = 0
        for r in (0.05, 0.2, 0.5, 1.0):
            label = np.empty(300, dtype=np.int64)
            for k, members in enumerate(_clusters(pts, groups, r)):
                label[members] = k
            for g in (0, 1):
                sel = np.flatnonzero(groups == g)
                pairs = cKDTree(pts[sel]).query_pairs(r, output_type="ndarray")
                graph = coo_matrix(
                    (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(sel),) * 2
                )
                _, ref = connected_components(graph, directed=False)
                # the same partition: equal labels exactly where the reference's are equal
                same_mine = label[sel][:, None] == label[sel][None, :]
                same_ref = ref[:, None] == ref[None, :]
                assert (same_mine == same_ref).all(), (dim, r, g)
            assert len(set(label[groups == 0]) & set(label[groups == 1])) == 0


def test_components_match_scipy_on_small_and_large_graphs() -> None:
    """Union-find for small graphs, scipy for large ones: the same partition either way."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from dynamo._fixed_points import _SMALL_GRAPH, _components

    rng = np.random.default_rng(1)
    for m, n_edges in ((1, 0), (30, 0), (30, 12), (300, 250), (3000, 2 * _SMALL_GRAPH)):
        rows, cols = rng.integers(0, m, n_edges), rng.integers(0, m, n_edges)
        count, labels = _components(m, rows, cols)
        graph = coo_matrix((np.ones(n_edges), (rows, cols)), shape=(m, m))
        ref_count, ref = connected_components(graph, directed=False)
        assert count == ref_count == len(set(labels.tolist()))
        assert ((labels[:, None] == labels[None, :]) == (ref[:, None] == ref[None, :])).all()


def test_dense_fallback_for_unconverged_ritz_values_on_an_autonomous_map_with_an_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An autonomous system keeps x only as a source of starts, with its own batch size: the
    dense fallback must not index x by the states' rows (review of issue 14's eigenvalue
    switch: IndexError for any unconverged row past x's batch)."""
    import dynamo._krylov as kry
    from dynamo._krylov import KrylovResult

    real = kry.arnoldi

    def stalls(*args: Any, **kwargs: Any) -> KrylovResult:  # Ritz values far off, unconverged
        kr = real(*args, **kwargs)
        conv = torch.zeros_like(kr.converged)
        return KrylovResult(kr.values + 5.0, kr.residuals, kr.steps, conv, kr.vectors)

    monkeypatch.setattr(kry, "arnoldi", stalls)
    m = dy.models.Hopfield(n=8, n_patterns=2, seed=0)
    system = dy.LoopedSystem.from_module(m, torch.zeros(1, 8))
    assert not system.driven and system.x is not None and system.x.shape[0] == 1
    found = dy.find_fixed_points(system, 32, dense_limit=1, seed=0)
    assert len(found.points) >= 2  # rows past x's single row reach the fallback
    # every spectrum recomputed densely: none of the +5 Ritz values classifies a point
    assert all(p.stability == "stable" and p.spectral_radius < 1 for p in found.points)
