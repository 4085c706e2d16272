"""Multi-start fixed-point search against maps with known answers."""

from __future__ import annotations

import json
import math

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


def test_unseen_estimate_counts_rare_attractors() -> None:
    est = dy.chao1([10, 1, 1, 1, 2], n=15)
    assert est.f1 == 3 and est.f2 == 1
    assert est.chao1 == pytest.approx(5 + 9 / 2)
    assert est.unseen_upper >= est.unseen > 0
    assert "estimated <=" in str(est)


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
    assert float(lc.convergence[-1].max()) < float(lc.convergence[0].max())
    assert lc.attention_change is not None
    assert float(lc.attention_change[-1].max()) < float(lc.attention_change[0].max())
    json.dumps(lc.to_dict(), allow_nan=False)


def test_layer_cycle_needs_layer_maps() -> None:
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(3,))
    with pytest.raises(InvalidArgumentError, match="does not know its layer maps"):
        dy.layer_cycle(system, torch.zeros(1, 3, dtype=F64))


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
    from dynamo._spectral import _Krylov

    def stalled(*args: object, **kwargs: object) -> _Krylov:  # as if Arnoldi ran out of steps
        k = int(kwargs["k"])  # type: ignore[call-overload]
        z = torch.zeros(2, k, dtype=torch.complex128)
        return _Krylov(
            values=z + 5.0,  # far outside the true spectrum: would read as unstable
            residuals=torch.ones(2, k, dtype=F64),
            steps=torch.zeros(2, dtype=torch.long),
            converged=torch.tensor([False, True]),
            vectors={},
        )

    monkeypatch.setattr(fp, "_arnoldi", stalled)
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
