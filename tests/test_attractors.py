"""dynamo.attractors: the distinct limits of each input from many starts, their basins,
stability and answers, on maps of the problem bank with known answers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from problems import (
    BISTABLE_DRIVEN,
    COUNT_BISTABLE_2,
    LINEAR,
    LOGISTIC32,
    TANH,
    TANH_12X4,
)

import dynamo as dy
from dynamo.errors import InvalidArgumentError, ShapeError, UnsupportedDtypeError

F64 = torch.float64
TOL = dy.default_tolerance(F64)


def _starts(system: dy.LoopedSystem, x: torch.Tensor, n: int, noise: float, seed: int):
    """The starts attractors draws: the system's own "input" starts on x."""
    return system.with_input(x).initial_states("input", n, scale=noise, seed=seed)


# ---------------------------------------------------------------------- known answers
def test_bistable_plane_reaches_the_four_stable_points_with_their_basins() -> None:
    # h ↦ h + 0.2 (h − h³) per coordinate: stable at (±1, ±1) with ρ = 1 − 2·0.2 = 0.6; a start
    # with every coordinate in (−√6, √6) \ {0} keeps its signs, so its quadrant is its basin
    system = COUNT_BISTABLE_2.make()
    x = torch.tensor([[0.05, -0.05]], dtype=F64)
    n, noise, seed = 256, 0.7, 5
    h0 = _starts(system, x, n, noise, seed)
    assert bool((h0.abs() < 2.0).all()) and bool((h0 != 0).all())  # spread over [−2, 2]²
    res = dy.attractors(system, x, n_starts=n, noise=noise, seed=seed)
    assert res.n_limits.tolist() == [4] and res.n_stable.tolist() == [4]
    assert res.not_converged.tolist() == [0] and res.start_outcomes["converged"] == n
    expected = {
        (sx, sy): int(((h0[:, 0].sign() == sx) & (h0[:, 1].sign() == sy)).sum())
        for sx in (-1.0, 1.0)
        for sy in (-1.0, 1.0)
    }
    seen = {}
    for lim in res.limits[0]:
        corner = tuple(lim.state.sign().tolist())
        torch.testing.assert_close(lim.state, torch.tensor(corner, dtype=F64), atol=1e-8, rtol=0)
        assert lim.spectral_radius == pytest.approx(0.6, abs=1e-6)
        assert lim.stable and lim.stable_trust is dy.Trust.CHECKED
        assert lim.basin_share == pytest.approx(0.25, abs=0.07)
        assert lim.n_starts == n and lim.residual <= TOL * 2
        seen[corner] = lim.count
        assert lim.first == (corner == (1.0, -1.0))  # h0 = x lies in the (+, −) quadrant
    assert seen == expected
    counts = [lim.count for lim in res.limits[0]]
    assert counts == sorted(counts, reverse=True)  # largest basin first
    assert res.multistable_fraction == 1.0
    assert res.max_per_input == 4 and res.mean_per_input == 4.0
    assert res.trust is dy.Trust.ESTIMATED and res.kind == "estimate"


def test_a_start_on_an_unstable_point_is_a_limit_but_not_an_attractor() -> None:
    # h0 = x = 0 is the repelling fixed point of h + 0.2 (h − h³) (f′ = 1.2): it converges there
    # at once, a limit with ρ = 1.2, stable False, never counted among the attractors
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
    res = dy.attractors(system, torch.zeros(1, 1, dtype=F64), n_starts=16, noise=0.5, seed=0)
    lims = res.limits[0]
    assert res.n_limits.tolist() == [3] and res.n_stable.tolist() == [2]
    origin = [lim for lim in lims if lim.first]
    assert len(origin) == 1 and origin[0].count == 1 and not origin[0].stable
    assert origin[0].spectral_radius == pytest.approx(1.2, abs=1e-12)
    assert float(origin[0].state.abs().max()) == 0.0
    assert res.max_per_input == 2 and res.multistable_fraction == 1.0


@pytest.mark.parametrize("problem", [TANH, LINEAR, TANH_12X4], ids=lambda p: p.name)
def test_a_contraction_has_exactly_one_limit_per_input(problem) -> None:
    system = problem.make()
    assert system.x is not None
    res = dy.attractors(system, system.x, n_starts=8, seed=1)
    b = int(system.x.shape[0])
    assert res.n_limits.tolist() == [1] * b and res.n_stable.tolist() == [1] * b
    assert res.not_converged.tolist() == [0] * b
    assert res.multistable_fraction == 0.0 and res.max_per_input == 1
    for lims in res.limits:
        (lim,) = lims
        assert lim.count == 8 and lim.basin_share == 1.0 and lim.first
        assert lim.stable and lim.spectral_radius < 1
    if problem.exact is not None:  # the linear map: h* = (I − A)⁻¹ (U x + b), ρ(A) = 0.9
        exact = problem.exact(system)
        got = torch.stack([lims[0].state for lims in res.limits])
        torch.testing.assert_close(got, exact, atol=1e-8, rtol=0)
        assert all(lims[0].spectral_radius == pytest.approx(0.9, abs=1e-9) for lims in res.limits)


def test_a_stable_two_cycle_gives_no_fixed_point_attractor() -> None:
    # logistic r = 3.2: both fixed points repel and every start in (0, 1) settles on the 2-cycle
    # {0.5130, 0.7995}; a start that does not converge reaches no limit and is never counted
    system = LOGISTIC32.make()
    x = torch.tensor([[0.2], [0.4], [0.55], [0.9]], dtype=F64)
    res = dy.attractors(system, x, n_starts=8, noise=0.02, seed=0, max_steps=300)
    assert res.n_limits.tolist() == [0] * 4 and res.n_stable.tolist() == [0] * 4
    assert res.not_converged.tolist() == [8] * 4
    assert res.start_outcomes["converged"] == 0
    assert res.limits == ((), (), (), ())
    assert res.multistable_fraction == 0.0 and res.max_per_input == 0
    assert res.mean_per_input == 0.0
    assert "32 of 32 starts did not converge" in str(res)
    json.dumps(res.to_dict(), allow_nan=False)


def test_many_limits_are_examined_in_chunks_with_their_own_inputs() -> None:
    # 40 inputs of the driven bistable map, two attractors each: 80 limits, past one chunk of
    # spectra; each limit's ρ is f′ = 1.2 − 0.6 h*² at its own input's root
    system = BISTABLE_DRIVEN.make()
    x = torch.linspace(-0.3, 0.3, 40, dtype=F64)[:, None]
    res = dy.attractors(system, x, n_starts=32, noise=1.0, seed=2)
    assert res.n_stable.tolist() == [2] * 40
    for lims in res.limits:
        for lim in lims:
            h = float(lim.state[0])
            assert lim.spectral_radius == pytest.approx(abs(1.2 - 0.6 * h * h), abs=1e-9)


# ---------------------------------------------------------------------- readout
def _sign_readout(h: torch.Tensor) -> torch.Tensor:
    """Two positions: token 1 where h > 0 at position 0, and the opposite at position 1."""
    return torch.stack([torch.cat([-h, h], dim=-1), torch.cat([h, -h], dim=-1)], dim=1)


def test_readout_accuracy_tells_the_right_attractor_from_the_wrong_one() -> None:
    # driven h ↦ h + 0.2 (h − h³ + 0.1 x): two attractors per input, near ±1; the "right" answer
    # is the sign of x, the limit reached from h0 = x. The basin boundary is the middle root of
    # h³ − h − 0.1 x, near −0.1 x
    system = BISTABLE_DRIVEN.make()
    assert system.x is not None
    x = system.x
    n, noise, seed = 32, 0.8, 4
    h0 = _starts(system, x, n, noise, seed).reshape(4, n)
    assert bool((h0.abs() < 2.4).all())
    middle = torch.tensor(
        [
            sorted(
                complex(r).real
                for r in torch.linalg.eigvals(
                    torch.tensor([[0.0, 1.0, 0.1 * v], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
                ).tolist()
            )[1]
            for v in x[:, 0].tolist()
        ],
        dtype=F64,
    )
    right_side = (h0 > middle[:, None]) == (x > 0)  # (4, n): the start reaches x's root
    targets = (x > 0).long().expand(4, 2).clone()  # position 0: the sign; position 1 too
    mask = torch.tensor([[True, False]] * 4)
    res = dy.attractors(
        system,
        x,
        n_starts=n,
        noise=noise,
        seed=seed,
        readout=_sign_readout,
        targets=targets,
        mask=mask,
    )
    assert res.n_limits.tolist() == [2] * 4 and res.has_readout
    share_right = right_side.double().mean(dim=1)
    for b, lims in enumerate(res.limits):
        for lim in lims:
            right = bool((lim.state[0] > 0) == (x[b, 0] > 0))
            assert lim.accuracy == (1.0 if right else 0.0) and lim.correct is right
            assert lim.first is right  # h0 = x reaches the right one
            assert lim.count == int((right_side[b] if right else ~right_side[b]).sum())
    majority_right = (share_right > 0.5).double()
    assert res.accuracy_first == 1.0 and res.accuracy_minority == 0.0
    assert res.accuracy_majority == pytest.approx(float(majority_right.mean()))
    assert res.accuracy_basin_weighted == pytest.approx(float(share_right.mean()))
    # without the mask, position 1 (read the other way round) halves every limit's accuracy
    full = dy.attractors(
        system, x, n_starts=n, noise=noise, seed=seed, readout=_sign_readout, targets=targets
    )
    assert {lim.accuracy for lims in full.limits for lim in lims} == {0.5}
    assert not any(lim.correct for lims in full.limits for lim in lims)
    d = res.to_dict()
    assert d["accuracy_first"] == 1.0 and d["limits"][0][0]["accuracy"] in (0.0, 1.0)
    json.dumps(d, allow_nan=False)
    assert "accuracy first 100.0%" in str(res)


def test_without_a_readout_every_accuracy_is_none() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
    res = dy.attractors(system, torch.tensor([[0.3]], dtype=F64), n_starts=8)
    assert not res.has_readout
    assert res.accuracy_first is None and res.accuracy_majority is None
    assert res.accuracy_minority is None and res.accuracy_basin_weighted is None
    assert all(lim.accuracy is None and lim.correct is None for lim in res.limits[0])


def test_minority_accuracy_is_none_when_no_input_has_a_second_limit() -> None:
    system = TANH.make()
    assert system.x is not None
    w = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=F64)

    def readout(h: torch.Tensor) -> torch.Tensor:
        return (h @ w)[:, None, :]  # (k, 1, 3)

    targets = torch.zeros(4, 1, dtype=torch.long)
    res = dy.attractors(system, system.x, n_starts=4, readout=readout, targets=targets)
    assert res.accuracy_minority is None
    assert res.accuracy_first == res.accuracy_majority == res.accuracy_basin_weighted


# ---------------------------------------------------------------------- determinism, output
def test_the_same_seed_gives_the_same_answer_and_another_seed_other_starts() -> None:
    system = COUNT_BISTABLE_2.make()
    x = torch.tensor([[0.1, 0.2], [-0.3, 0.1]], dtype=F64)
    a = dy.attractors(system, x, n_starts=32, seed=7)
    b = dy.attractors(system, x, n_starts=32, seed=7)
    c = dy.attractors(system, x, n_starts=32, seed=8)
    assert a.to_dict() == b.to_dict()
    for la, lb in zip(a.limits, b.limits, strict=True):
        for p, q in zip(la, lb, strict=True):
            assert torch.equal(p.state, q.state)
    counts = [[lim.count for lim in lims] for lims in a.limits]
    assert counts != [[lim.count for lim in lims] for lims in c.limits]
    assert a.seed == 7 and c.seed == 8


def test_to_dict_is_json_and_str_is_short() -> None:
    system = COUNT_BISTABLE_2.make()
    res = dy.attractors(system, torch.tensor([[0.1, -0.1]], dtype=F64), n_starts=32, seed=1)
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert d["kind"] == "estimate" and d["trust"] == "estimated"
    assert d["n_starts"] == 32 and d["n_limits"] == [4] and d["max_per_input"] == 4
    assert d["dedup_tol"] == pytest.approx(1e3 * TOL * math.sqrt(2), rel=1e-6)
    assert d["limits"][0][0]["stable_trust"] == "checked" and "state" not in d["limits"][0][0]
    assert "tensor" not in text
    s = str(res)
    assert s.startswith("attractors: 1 input(s) × 32 start(s)") and "\n" not in s
    assert "estimate from 32 starts per input" in s and len(s) < 400


def test_a_module_or_a_factory_works_as_the_system() -> None:
    f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    by_module = dy.attractors(f, xs, n_starts=4)
    by_factory = dy.attractors(lambda x: dy.LoopedSystem.from_module(f, x), xs, n_starts=4)
    assert by_module.to_dict() == by_factory.to_dict()
    assert by_module.n_limits.tolist() == [1, 1]


# ---------------------------------------------------------------------- bad arguments
def _bistable() -> tuple[dy.LoopedSystem, torch.Tensor]:
    return dy.LoopedSystem.from_module(dy.models.Bistable(n=1)), torch.tensor([[0.3], [-0.2]])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_starts": 0}, InvalidArgumentError, r"n_starts=0\): n_starts must be >= 1"),
        ({"n_starts": 2.5}, InvalidArgumentError, r"n_starts must be an integer"),
        ({"noise": 0.0}, InvalidArgumentError, r"noise=0.0\): noise must be finite and > 0"),
        ({"noise": float("nan")}, InvalidArgumentError, r"noise must be finite"),
        ({"seed": -1}, InvalidArgumentError, r"seed=-1"),
        ({"max_steps": 0}, InvalidArgumentError, r"max_steps must be >= 1"),
        ({"tol": 0.0}, InvalidArgumentError, r"tol=0.0\): tol must be finite and > 0"),
        ({"tol": 1.0}, InvalidArgumentError, r"tol must be < 1.0"),
        ({"dedup_tol": -1.0}, InvalidArgumentError, r"dedup_tol must be finite and > 0"),
        (
            {"readout": 3, "targets": torch.zeros(2, 1, dtype=torch.long)},
            InvalidArgumentError,
            r"readout must be callable",
        ),
        ({"readout": _sign_readout}, InvalidArgumentError, r"a readout needs targets"),
        (
            {"targets": torch.zeros(2, 1, dtype=torch.long)},
            InvalidArgumentError,
            r"targets and mask are read only with a readout",
        ),
        (
            {"readout": _sign_readout, "targets": torch.zeros(2, 2)},
            InvalidArgumentError,
            r"targets must be an int64 tensor",
        ),
        (
            {"readout": _sign_readout, "targets": torch.zeros(3, 2, dtype=torch.long)},
            ShapeError,
            r"targets has shape \(3, 2\); it needs \(2, T\)",
        ),
        (
            {
                "readout": _sign_readout,
                "targets": torch.zeros(2, 2, dtype=torch.long),
                "mask": torch.ones(2, 2),
            },
            InvalidArgumentError,
            r"mask must be a bool tensor",
        ),
        (
            {
                "readout": _sign_readout,
                "targets": torch.zeros(2, 2, dtype=torch.long),
                "mask": torch.ones(2, 3, dtype=torch.bool),
            },
            ShapeError,
            r"mask has shape \(2, 3\)",
        ),
        (
            {
                "readout": _sign_readout,
                "targets": torch.zeros(2, 2, dtype=torch.long),
                "mask": torch.tensor([[True, False], [False, False]]),
            },
            InvalidArgumentError,
            r"mask selects no position of input\(s\) \[1\]",
        ),
        (
            {"readout": _sign_readout, "targets": torch.zeros(2, 3, dtype=torch.long)},
            ShapeError,
            r"readout returned \(1, 2, 2\) for 1 state\(s\); it must return logits \(1, 3, C\)",
        ),
    ],
)
def test_bad_arguments_are_refused_with_the_call_form(kwargs, error, match) -> None:
    system, x = _bistable()
    with pytest.raises(error, match=match) as info:
        dy.attractors(system, x, **kwargs)
    assert str(info.value).startswith("attractors(system, inputs")


def test_bad_inputs_and_systems_are_refused_before_any_step() -> None:
    calls = []

    def step(h: torch.Tensor) -> torch.Tensor:
        calls.append(h.shape[0])
        return h + 0.2 * (h - h**3)

    system = dy.LoopedSystem.from_function(step, state_shape=(1,), dtype=F64)
    before = len(calls)
    with pytest.raises(
        InvalidArgumentError, match=r"^attractors\(system, inputs\): inputs is empty"
    ):
        dy.attractors(system, torch.zeros(0, 1, dtype=F64))
    with pytest.raises(InvalidArgumentError, match=r"inputs contains NaN or inf"):
        dy.attractors(system, torch.tensor([[math.nan]], dtype=F64))

    def broken(h: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no head")

    with pytest.raises(InvalidArgumentError, match=r"readout raised RuntimeError .*no head"):
        dy.attractors(
            system,
            torch.ones(1, 1, dtype=F64),
            readout=broken,
            targets=torch.zeros(1, 1, dtype=torch.long),
        )
    with pytest.raises(InvalidArgumentError, match=r"expected a LoopedSystem"):
        dy.attractors(42, torch.ones(1, 1, dtype=F64))  # type: ignore[arg-type]
    assert len(calls) == before  # nothing was iterated
    tanh = TANH.make()  # its input has 16 entries per example
    with pytest.raises(ShapeError, match=r"^attractors\(system, inputs\): .*per-example shape"):
        dy.attractors(tanh, torch.zeros(2, 3, dtype=F64))
    half = dy.LoopedSystem.from_module(dy.models.Bistable(n=1)).to(dtype=torch.bfloat16)
    with pytest.raises(UnsupportedDtypeError, match=r"^attractors\(system, inputs\).*bfloat16"):
        dy.attractors(half, torch.ones(1, 1))
