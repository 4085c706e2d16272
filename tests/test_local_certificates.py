"""Local certificates (issue 16, item 3): ``check_contraction(system, Domain.ball(h*, r))`` proves
the fixed point near ``h*`` and reports the largest radius around it on which the map is proven to
contract into itself (a certified basin, in the Euclidean, eigenbasis or Lyapunov norm), and the
verified spectral-norm bound of interval matrices those certificates rest on.

The soundness property of the norm bound runs ``NORM_EXAMPLES`` random interval matrices by
default; ``DYNAMO_SOUNDNESS_EXAMPLES=N`` raises it (the slow run uses at least 10,000).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch
from flint import arb, arb_mat
from hypothesis import given, settings
from hypothesis import strategies as st
from problems import BISTABLE_BASIN_RADIUS

import dynamo as dy
from dynamo._interval._ball import precision
from dynamo._interval._prove import _abs_up, _norm2_svd, _norm2_upper, dist2_upper
from dynamo.errors import InvalidArgumentError

F64 = torch.float64
NORM_EXAMPLES = 300
SLOW_NORM_EXAMPLES = 10_000


def _examples(default: int) -> int:
    return max(default, int(os.environ.get("DYNAMO_SOUNDNESS_EXAMPLES", "0") or 0))


def _bistable() -> dy.LoopedSystem:
    return dy.LoopedSystem.from_module(dy.models.Bistable(n=1))


# --- the known answer: the bistable map's basin around 1 ---------------------------------------


def test_bistable_ball_inside_the_contraction_region_is_proven() -> None:
    v = dy.check_contraction(_bistable(), dy.Domain.ball(torch.tensor([1.0], dtype=F64), 0.3))
    assert v.verdict is dy.Verdict.PROVEN and v.trust is dy.Trust.PROVEN
    assert v.local_verdict is dy.Verdict.PROVEN
    radius = v.certified_radius
    assert radius is not None
    # sound: never past the true edge of the contraction region; and within 3 % of it
    assert 0.97 * BISTABLE_BASIN_RADIUS < radius <= BISTABLE_BASIN_RADIUS
    e = next(e for e in v.evidence if e.kind == "certified contraction radius")
    assert e.certified and e.trust is dy.Trust.PROVEN and e.details["rate"] < 1
    assert v.to_dict()["certified_radius"] == radius
    assert v.to_dict()["domain"]["radius"] == 0.3


def test_bistable_ball_past_the_certified_radius_is_not_proven() -> None:
    v = dy.check_contraction(_bistable(), dy.Domain.ball(torch.tensor([1.0], dtype=F64), 0.6))
    # every start in [0.4, 1.6] does converge to 1, but |f′| > 1 near 0.4: nothing is proven
    assert v.verdict is dy.Verdict.SUPPORTED and v.trust is dy.Trust.ESTIMATED
    assert v.certified_radius is not None and v.certified_radius < 0.6


def test_bistable_ball_holding_both_attractors_is_refuted() -> None:
    v = dy.check_contraction(_bistable(), dy.Domain.ball(torch.tensor([1.0], dtype=F64), 1.5))
    assert v.verdict is dy.Verdict.REFUTED
    a, b = v.witness["fixed_point_a"], v.witness["fixed_point_b"]
    assert {round(float(a), 6), round(float(b), 6)} == {-1.0, 1.0}
    # the local certificate at the centre stands: it is about a smaller ball
    assert v.certified_radius is not None and v.certified_radius < 1.5


def test_an_unstable_centre_is_refuted_by_its_proven_spectrum() -> None:
    v = dy.check_contraction(_bistable(), dy.Domain.ball(torch.tensor([0.0], dtype=F64), 0.1))
    assert v.verdict is dy.Verdict.REFUTED and v.local_verdict is dy.Verdict.REFUTED
    e = next(e for e in v.evidence if e.kind == "fixed point with ρ > 1")
    assert e.certified and e.trust is dy.Trust.PROVEN and e.value == pytest.approx(1.2)
    assert v.certified_radius is None


def test_an_offset_centre_gets_the_radius_around_itself_not_around_the_point() -> None:
    """16 uncoupled bistable coordinates (the contraction region around the point of ones is the
    cube |h_i − 1| < 1 − 1/√3), centred 0.02 off the point in every coordinate (0.08 away in the
    Euclidean norm): the certified ball around the centre lies inside the contraction region's
    largest Euclidean ball around the point, so its radius plus the offset cannot exceed it."""
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=16))
    centre = torch.full((16,), 0.98, dtype=F64)
    v = dy.check_contraction(system, dy.Domain.ball(centre, 0.2), n_samples=8)
    assert v.verdict is dy.Verdict.PROVEN and v.certified_radius is not None
    offset = float((centre - 1).norm())
    assert v.certified_radius + offset <= BISTABLE_BASIN_RADIUS
    assert v.certified_radius > 0.8 * (BISTABLE_BASIN_RADIUS - offset)
    near = next(e for e in v.evidence if e.kind == "fixed point near the centre")
    # Euclidean (not the max norm, 0.02), up to the enclosure's width (about 1e-11 here)
    assert offset <= near.value <= offset + 1e-9


def test_a_proven_saddle_is_refuted() -> None:
    """The Hénon map's fixed point in the domain is a saddle (eigenvalues about −1.92, 0.16)."""
    system = dy.LoopedSystem.from_module(dy.models.Henon())
    pts = dy.find_fixed_points(system, 32, mode="all", seed=0).points
    h = next(p.state for p in pts if float(p.state.abs().max()) < 1)
    v = dy.check_contraction(system, dy.Domain.ball(h, 0.01), n_samples=4)
    assert v.verdict is dy.Verdict.REFUTED and v.local_verdict is dy.Verdict.REFUTED
    e = next(e for e in v.evidence if e.kind == "fixed point with ρ > 1")
    assert e.trust is dy.Trust.PROVEN and e.value is not None and e.value > 1.9
    assert v.certified_radius is None


def test_a_slow_contraction_is_not_refuted_by_its_float_iterates() -> None:
    """h ↦ 0.9999 h + b contracts everywhere (rate 0.9999): Picard from starts in the ball stops
    at iterates about tol/(1 − q) apart, which is no second fixed point."""

    def step(h: torch.Tensor) -> torch.Tensor:
        return 0.9999 * h + 1e-4

    system = dy.LoopedSystem.from_function(step, state_shape=(4,))
    v = dy.check_contraction(
        system, dy.Domain.ball(torch.ones(4, dtype=F64), 16.0), max_steps=10**5
    )
    assert v.verdict is dy.Verdict.PROVEN and v.certified_radius is not None
    assert v.certified_radius >= 16.0
    assert not v.witness


def test_a_global_contraction_certifies_the_whole_ball() -> None:
    f = dy.models.ContractiveTanh(n=4, lipschitz=0.9, seed=0)
    system = dy.LoopedSystem.from_module(f, torch.ones(1, 4, dtype=F64))
    h = dy.solve(system, torch.zeros(1, 4, dtype=F64), tol=1e-15, atol=1e-15).state[0]
    v = dy.check_contraction(system, dy.Domain.ball(h, 1.0))
    assert v.verdict is dy.Verdict.PROVEN and v.certified_radius == 1.0
    assert v.upper_bound is not None and v.upper_bound.value == pytest.approx(0.9)
    whole = [e for e in v.evidence if e.kind == "certified contraction radius" and e.value == 1.0]
    assert whole and whole[0].details["norm"] == "euclidean"


# --- a transformer: contraction proven near its fixed point though ‖J‖₂ > 1 there --------------


def test_transformer_fixed_point_gets_a_certified_radius_where_the_euclidean_norm_expands() -> None:
    model = dy.models.LoopedTransformer(d_model=16, n_heads=4, recall="outer", norm="outer", seed=0)
    x = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(0), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    start = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    h = dy.solve(system, start, method="picard", max_steps=3000, tol=1e-14, atol=1e-14).state[0]
    J = dy.jacobian(system, h[None])[0].reshape(64, 64)
    assert float(torch.linalg.matrix_norm(J, ord=2)) > 1.2  # no Euclidean contraction at h*
    assert float(torch.linalg.eigvals(J).abs().max()) < 1
    v = dy.check_contraction(system, dy.Domain.ball(h, 1e-6), n_samples=4)
    assert v.verdict is dy.Verdict.PROVEN and v.trust is dy.Trust.PROVEN
    radius = v.certified_radius
    assert radius is not None and radius >= 1e-6
    e = next(e for e in v.evidence if e.kind == "certified contraction radius")
    assert e.details["norm"] == "lyapunov" and e.details["rate"] < 1
    # starts inside the certified radius do converge to the point (sanity, not the proof)
    u = torch.randn(8, 4, 16, generator=torch.Generator().manual_seed(2), dtype=F64)
    starts = h + 0.999 * radius * u / u.flatten(1).norm(dim=1).reshape(8, 1, 1)
    sol = dy.solve(system, starts, method="picard", max_steps=3000, tol=1e-13, atol=1e-13)
    assert sol.all_converged
    assert float((sol.state - h).flatten(1).norm(dim=1).max()) < 1e-9
    # a ball far wider than the certificate is not proven (and nothing refutes it either)
    wide = dy.check_contraction(system, dy.Domain.ball(h, 10 * radius), n_samples=4)
    assert wide.verdict is not dy.Verdict.PROVEN
    assert wide.certified_radius == pytest.approx(radius)


# --- the domain and bad input ------------------------------------------------------------------


def test_ball_domain_samples_inside_and_reports_itself() -> None:
    c = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=F64)
    dom = dy.Domain.ball(c, 0.5)
    assert repr(dom).startswith("Domain(ball of radius 0.5 around a state of shape (2, 2)")
    assert dom.r_min <= 0.5 and dom.r_max >= 5.5  # the token-norm range, outward
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(2, 2))
    h = dom.sample(system, 200, seed=3)
    dist = (h - c).flatten(1).norm(dim=1)
    assert h.shape == (200, 2, 2) and float(dist.max()) <= 0.5 and float(dist.min()) > 0.05
    d = dom.to_dict()
    assert d["center"] == c.tolist() and d["radius"] == 0.5
    assert dom != dy.Domain.ball(torch.zeros(2, 2, dtype=F64) + 1e-3 + c, 0.5)
    assert dom == dy.Domain.ball(c.clone(), 0.5)
    assert dy.Domain.ball(2.0) == dy.Domain(r_min=0.0, r_max=2.0)  # the token-norm ball as before


def test_given_states_outside_the_ball_are_moved_into_it() -> None:
    v = dy.check_contraction(
        _bistable(),
        dy.Domain.ball(torch.tensor([1.0], dtype=F64), 0.3),
        states=torch.tensor([[5.0], [1.1], [-3.0]], dtype=F64),
    )
    # moved to 1.3, kept at 1.1, moved to 0.7: all in the basin of 1
    assert v.verdict is dy.Verdict.PROVEN
    starts = next(e for e in v.evidence if e.kind == "starts in the ball")
    assert starts.value == 3 and starts.details["spread"] < 1e-6
    assert "3 of 3 given starts" in starts.claim


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: dy.Domain.ball(torch.ones(2)), r"^Domain\.ball\(center, radius\): the radius"),
        (lambda: dy.Domain.ball(torch.ones(2), 0.0), r"radius must be finite and > 0, got 0\.0"),
        (lambda: dy.Domain.ball(torch.ones(2), math.nan), r"radius must be finite and > 0"),
        (lambda: dy.Domain.ball(torch.ones(2), True), r"radius must be finite and > 0, got True"),
        (lambda: dy.Domain.ball([1.0, 2.0], 0.5), r"center must be a tensor \(a state\), got list"),
        (
            lambda: dy.Domain.ball(torch.tensor([1.0, math.inf]), 0.5),
            r"center has non-finite entries",
        ),
        (lambda: dy.Domain(center=torch.ones(2)), r"center and radius go together"),
        (
            lambda: dy.Domain(center=torch.tensor([0.5]), radius=2.0, r_min=1.0, r_max=3.0),
            r"the token-norm range \[1, 3\] does not hold the ball of radius 2 around the "
            r"center \(its tokens' norms lie in \[0, 2\.5\]\); build it with Domain\.ball",
        ),
        (
            lambda: dataclasses.replace(dy.Domain.ball(torch.ones(3), 0.5), r_min=1.5),
            r"does not hold the ball of radius 0\.5",
        ),
    ],
)
def test_bad_balls_are_refused(make: object, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make()  # type: ignore[operator]


def test_a_centre_of_the_wrong_shape_or_input_is_refused_before_any_work() -> None:
    with pytest.raises(
        InvalidArgumentError,
        match=r"^check_contraction\(system\): the domain's center has shape \(2,\), but the "
        r"system's states have shape \(1,\)",
    ):
        dy.check_contraction(_bistable(), dy.Domain.ball(torch.ones(2, dtype=F64), 0.1))
    f = dy.models.ContractiveTanh(n=2, lipschitz=0.5, seed=0)
    system = dy.LoopedSystem.from_module(f, torch.ones(3, 2, dtype=F64))
    with pytest.raises(InvalidArgumentError, match=r"system\.with_input\(x\[i : i \+ 1\]\)"):
        dy.check_contraction(system, dy.Domain.ball(torch.zeros(2, dtype=F64), 0.1))


# --- the verified spectral-norm bound of an interval matrix ----------------------------------


def _ball_matrix(mid: np.ndarray, rad: np.ndarray) -> arb_mat:
    r, c = mid.shape
    return arb_mat(r, c, [arb(m, d) for m, d in zip(mid.reshape(-1), rad.reshape(-1), strict=True)])


@st.composite
def interval_matrices(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    r, c = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["gauss", "nonnormal", "rank1", "tiny", "huge", "wide"]))
    mid = rng.standard_normal((r, c))
    if kind == "nonnormal":
        mid = np.triu(mid) * np.array([10.0**k for k in range(c)])
    elif kind == "rank1":
        mid = np.outer(rng.standard_normal(r), rng.standard_normal(c))
    elif kind == "tiny":
        mid = mid * 1e-200
    elif kind == "huge":
        mid = mid * 1e150
    rad = np.abs(mid) * 10.0 ** draw(st.floats(-16, 0)) * rng.random((r, c))
    if kind == "wide":  # balls wider than their midpoints, some around 0
        rad = (np.abs(mid) + 1.0) * 10.0 ** draw(st.floats(-3, 1)) * rng.random((r, c))
    return mid, rad, seed


def _check_norm_bound(mid: np.ndarray, rad: np.ndarray, seed: int) -> None:
    with precision(53):
        A = _ball_matrix(mid, rad)
        bound = _norm2_upper(A)
        svd = _norm2_svd(A)
    if seed % 2:
        # midpoints that are not float64 numbers (200 bits; a product of balls has such): the
        # float midpoint the bound starts from is then rounded, which the bound must cover
        with precision(200):
            wide = [arb(m) * (1 + arb(2) ** -60) for m in mid.reshape(-1).tolist()]
            B = arb_mat(
                *mid.shape, [w + arb(0, d) for w, d in zip(wide, rad.reshape(-1), strict=True)]
            )
        with precision(53):
            bound_b = _norm2_upper(B)
        mid_b = mid * (1 + 2.0**-60)  # within an ulp of B's midpoints
        for a in (mid_b, mid_b + rad, mid_b - rad):
            assert np.linalg.norm(a, 2) * (1 - 1e-13) <= bound_b, (mid, rad, a, bound_b)
    rng = np.random.default_rng(seed + 1)
    samples = [mid, mid + rad, mid - rad]
    samples += [mid + rad * rng.choice([-1.0, 1.0], size=mid.shape) for _ in range(8)]
    samples += [mid + rad * rng.uniform(-1, 1, size=mid.shape) for _ in range(4)]
    for a in samples:
        # the float norm of a float matrix is off by a few ulps: compare with that slack
        assert np.linalg.norm(a, 2) * (1 - 1e-13) <= bound, (mid, rad, a, bound)
    # tight: within the balls' own width of the midpoint's norm (Gershgorin alone is not)
    if np.isfinite(mid).all() and np.linalg.norm(mid, 2) > 1e-280:
        scale = float(np.abs(rad).max())  # scaled: a Frobenius norm of 1e-200s underflows
        frob = scale * float(np.linalg.norm(rad / scale)) if scale > 0 else 0.0
        width = frob + 1e-12 * np.linalg.norm(mid, 2)
        assert svd <= np.linalg.norm(mid, 2) + 1.01 * width + 1e-300


def run_norm_property(n: int) -> None:
    @settings(max_examples=n)  # the derandomized profile of conftest.py
    @given(case=interval_matrices())
    def prop(case: tuple[np.ndarray, np.ndarray, int]) -> None:
        _check_norm_bound(*case)

    prop()


def test_the_norm_bound_encloses_every_matrix_of_the_ball_and_is_tight() -> None:
    run_norm_property(_examples(NORM_EXAMPLES))


@pytest.mark.slow
def test_the_norm_bound_on_ten_thousand_interval_matrices() -> None:
    run_norm_property(_examples(SLOW_NORM_EXAMPLES))


def test_empty_matrices_have_norm_zero() -> None:
    with precision(53):
        for r, c in ((0, 3), (3, 0), (0, 0)):
            assert _norm2_svd(arb_mat(r, c)) == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_matrix_with_an_entry_that_is_not_finite_has_no_norm_bound(bad: float) -> None:
    """An enclosure that failed (arb's NaN or an infinite ball) bounds nothing: the norm bound
    is ``inf``, never a small number (a NaN once read as an exact zero and certified a false
    basin)."""
    with precision(53):
        A = arb_mat(2, 2, [arb(0.5), arb(bad), arb(0.0), arb(0.5)])
        assert _norm2_upper(A) == math.inf
        B = arb_mat(2, 2, [arb(0.5), arb(0.1), arb(0.0), arb(0.5) + arb(0, bad)])
        assert _norm2_upper(B) == math.inf
    nan = np.array([[math.nan, 0.0]])
    assert _abs_up(nan, np.zeros_like(nan))[0, 0] == math.inf
    assert _abs_up(nan, np.zeros_like(nan))[0, 1] == 0.0
    box = np.array([0.0, math.nan])
    assert dist2_upper(box, box, np.zeros(2)) == math.inf


def test_the_verified_svd_bound_is_tight_where_gershgorin_is_not() -> None:
    """A non-normal 2×2 (‖J‖₂ = 1.2071, Gershgorin's row bound on JᵀJ: 1.3229)."""
    mid = np.array([[0.5, 1.0], [0.0, 0.5]])
    with precision(53):
        bound = _norm2_upper(_ball_matrix(mid, np.zeros((2, 2))))
    assert np.linalg.norm(mid, 2) <= bound <= np.linalg.norm(mid, 2) * (1 + 1e-12)


@pytest.mark.slow
def test_the_default_architecture_gets_a_certified_contraction_radius() -> None:
    """The built-in default (d_model 64, 8 tokens: 512 entries), draw 0, first input: ρ(J) < 1 <
    ‖J‖₂ at the point the loop reaches from h0 = x, and a positive certified radius, PROVEN
    (about six minutes on one core; docs/scripts/local_radius.py runs all four inputs)."""
    import verify
    from verify import build_model, draw_inputs

    spec = verify.default_spec()
    model = build_model(spec, 0)
    x = draw_inputs(spec, model, F64)[:1]
    system = dy.LoopedSystem.from_module(model, x)
    sol = dy.solve(system, x, method="picard", max_steps=5000, tol=1e-14, atol=1e-14)
    h = sol.state[0]
    J = dy.jacobian(system, h[None])[0].reshape(h.numel(), h.numel())
    assert float(torch.linalg.eigvals(J).abs().max()) < 1 < float(torch.linalg.matrix_norm(J, 2))
    v = dy.check_contraction(system, dy.Domain.ball(h, 1e-9), n_samples=4)
    assert v.verdict is dy.Verdict.PROVEN and v.trust is dy.Trust.PROVEN
    assert v.certified_radius is not None and v.certified_radius >= 1e-9
