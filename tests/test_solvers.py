"""Solvers against maps with known answers, honest failure, and argument checks."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given
from hypothesis import strategies as st
from problems import (
    EXPANDING,
    HENON,
    LOGISTIC39,
    NO_FIXED_POINT,
    TANH,
    TANH_SLOW,
    UNIQUE,
    UNREACHABLE,
    Problem,
)
from torch.func import jacfwd

import dynamo as dy
from dynamo.errors import (
    ConvergenceError,
    InvalidArgumentError,
    ShapeError,
    UnsupportedDtypeError,
)

METHODS = list(dy.METHODS)


def residual_by_hand(system: dy.LoopedSystem, h: torch.Tensor) -> torch.Tensor:
    """‖f(h) − h‖ evaluated directly on the module, independently of the solver's bookkeeping."""
    module = system.module
    assert module is not None
    with torch.no_grad():
        out = module(h, system.x) if system.driven else module(h)
    return (out - h).reshape(h.shape[0], -1).norm(dim=1)


def scipy_root(system: dy.LoopedSystem, x_row: torch.Tensor, h0: np.ndarray) -> np.ndarray:
    def g(v: np.ndarray) -> np.ndarray:
        h = torch.as_tensor(v, dtype=torch.float64)[None]
        with torch.no_grad():
            return (system.step(h, x_row[None]) - h)[0].numpy()

    out = scipy.optimize.root(g, h0, method="hybr", tol=1e-13)
    # hybr may stop with "not making good progress" once it sits at rounding level: judge the root
    assert np.abs(g(out.x)).max() <= 1e-11, out.message
    return np.asarray(out.x)


@pytest.mark.parametrize("problem", UNIQUE, ids=lambda p: p.name)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_the_unique_fixed_point(problem: Problem, method: str) -> None:
    system = problem.make()
    h0 = problem.starts(system)
    sol = dy.solve(
        system, h0, method=method, tol=1e-12, atol=1e-12, **problem.options.get(method, {})
    )
    assert sol.all_converged
    assert sol.outcomes == (dy.Outcome.CONVERGED,) * h0.shape[0]
    # the reported residual is real: re-evaluate the map by hand
    by_hand = residual_by_hand(system, sol.state)
    assert float(by_hand.max()) <= 1e-10
    torch.testing.assert_close(by_hand, sol.residual, rtol=0, atol=1e-12)
    # and agrees with scipy.optimize.root, started elsewhere
    assert system.x is not None
    for i in range(h0.shape[0]):
        ref = scipy_root(system, system.x[i], np.zeros(system.state_dim))
        assert np.abs(sol.state[i].numpy() - ref).max() <= 1e-8
    if problem.exact is not None:
        torch.testing.assert_close(sol.state, problem.exact(system), rtol=0, atol=1e-9)


def test_anderson_takes_at_most_a_third_of_picards_steps() -> None:
    # ‖W‖₂ = 0.95, symmetric W and a fixed point near 0, where tanh′ ≈ 1: iteration contracts at
    # nearly 0.95 per step
    system = TANH_SLOW.make()
    h0 = TANH_SLOW.starts(system)
    picard = dy.solve(system, h0, method="picard", tol=1e-12, atol=1e-12)
    anderson = dy.solve(system, h0, method="anderson", tol=1e-12, atol=1e-12)
    assert int(anderson.steps.max()) * 3 <= int(picard.steps.min())
    torch.testing.assert_close(anderson.state, picard.state, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_no_fixed_point_is_never_reported_where_none_exists(method: str) -> None:
    system = NO_FIXED_POINT.make()
    h0 = NO_FIXED_POINT.starts(system)
    sol = dy.solve(system, h0, method=method, max_steps=300, throw=False)
    assert sol.n_converged == 0
    assert sol.fixed_points.shape[0] == 0
    assert all(not o.ok for o in sol.outcomes)
    assert "no fixed point reported" in str(sol)
    with pytest.raises(ConvergenceError, match="did not converge") as err:
        dy.solve(system, h0, method=method, max_steps=300)
    assert isinstance(err.value.solution, dy.Solution)
    assert err.value.solution.n_converged == 0


@pytest.mark.parametrize(
    ("problem", "expected"),
    [(LOGISTIC39, dy.Outcome.MAX_STEPS_REACHED), (EXPANDING, dy.Outcome.DIVERGED)],
    ids=["logistic_3.9", "expanding_linear"],
)
def test_plain_iteration_reports_no_fixed_point_where_it_does_not_settle(
    problem: Problem, expected: dy.Outcome
) -> None:
    system = problem.make()
    h0 = problem.starts(system)
    sol = dy.solve(system, h0, method="picard", max_steps=2000, throw=False)
    assert sol.outcomes == (expected,) * h0.shape[0]
    assert sol.fixed_points.shape[0] == 0
    with pytest.raises(ConvergenceError, match=expected.label):
        dy.solve(system, h0, method="picard", max_steps=2000)


@pytest.mark.parametrize("problem", UNREACHABLE, ids=lambda p: p.name)
@pytest.mark.parametrize("method", ["anderson", "broyden", "newton_krylov"])
def test_root_finders_report_only_true_unstable_fixed_points(problem: Problem, method: str) -> None:
    """Where iteration does not settle, a root-finder may converge, but only to a real fixed point.

    The logistic map at r = 3.9 has the fixed points 0 and 1 − 1/r, the expanding linear map
    (I − A)⁻¹(Bx + c), Hénon two saddles. Every converged start must sit on one of them, and each
    of those must be unstable (spectral radius of ∂f > 1), so that a converged root-finder is never
    evidence that iteration reaches the point.
    """
    system = problem.make()
    h0 = problem.starts(system)
    sol = dy.solve(system, h0, method=method, max_steps=500, throw=False)
    assert problem.exact is not None
    exact = problem.exact(system)
    by_hand = residual_by_hand(system, sol.state)
    for i, outcome in enumerate(sol.outcomes):
        if not outcome.ok:
            continue
        assert float(by_hand[i]) <= 1e-9
        candidates = exact[i : i + 1] if system.driven else exact
        dist = (candidates - sol.state[i]).reshape(candidates.shape[0], -1).norm(dim=1)
        assert float(dist.min()) <= 1e-8
        point = sol.state[i : i + 1]
        xi = None if system.x is None else system.x[i : i + 1]
        with torch.no_grad():
            jac = jacfwd(lambda z, xi=xi: system.flat_step(z[None], xi)[0])(
                system.flatten(point)[0]
            )
        assert float(torch.linalg.eigvals(jac).abs().max()) > 1.0


def test_best_iterate_is_kept_when_not_converged() -> None:
    system = LOGISTIC39.make()
    h0 = LOGISTIC39.starts(system)
    sol = dy.solve(system, h0, method="picard", max_steps=300, throw=False)
    trace = sol.residual_trace
    best = torch.nan_to_num(trace, nan=math.inf).min(dim=0).values
    torch.testing.assert_close(sol.residual, best)
    torch.testing.assert_close(residual_by_hand(system, sol.state), sol.residual)


def test_residual_trace_and_counters() -> None:
    system = TANH.make()
    h0 = TANH.starts(system)
    sol = dy.solve(system, h0, method="picard")
    steps = sol.steps
    assert sol.residual_trace.shape == (int(steps.max()) + 1, h0.shape[0])
    torch.testing.assert_close(sol.residual_trace[0], residual_by_hand(system, h0))
    for i in range(h0.shape[0]):
        k = int(steps[i])
        assert torch.isfinite(sol.residual_trace[: k + 1, i]).all()
        assert torch.isnan(sol.residual_trace[k + 1 :, i]).all()
        assert int(sol.f_evals[i]) == k + 1  # one evaluation per iterate
    assert int(sol.jvp_evals.sum()) == 0
    d = sol.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["n_converged"] == h0.shape[0]
    assert d["outcomes"] == ["converged"] * h0.shape[0]


def test_a_batch_gives_each_start_what_it_gets_alone() -> None:
    # 64 starts that converge at 64 different steps (and one that goes to NaN): Picard keeps the
    # converged ones in its batch until dropping them pays, which must change nothing a start
    # reports: state, steps, evaluations, residual trace, outcome
    def f(h: torch.Tensor) -> torch.Tensor:
        return 0.7 * h + 0.1 * torch.sin(h) + torch.sqrt(h[:, :1] + 1.0)

    system = dy.LoopedSystem.from_function(f, state_shape=(2,), validate=False)
    scale = torch.logspace(-6, 6, 64, dtype=torch.float64)
    h0 = torch.stack([scale, -scale], dim=1)
    h0 = torch.cat([h0, torch.tensor([[-5.0, 0.0]], dtype=torch.float64)])
    batch = dy.solve(system, h0, method="picard", tol=1e-12, atol=1e-12, throw=False)
    assert len(set(batch.steps.tolist())) > 20
    for i in range(h0.shape[0]):
        alone = dy.solve(system, h0[i : i + 1], method="picard", tol=1e-12, atol=1e-12, throw=False)
        assert batch.outcomes[i] == alone.outcomes[0]
        assert int(batch.steps[i]) == int(alone.steps[0])
        assert int(batch.f_evals[i]) == int(alone.f_evals[0]) == int(alone.steps[0]) + 1
        torch.testing.assert_close(batch.state[i], alone.state[0], rtol=0, atol=1e-15)
        k = int(alone.steps[0])
        torch.testing.assert_close(
            batch.residual_trace[: k + 1, i],
            alone.residual_trace[:, 0],
            rtol=0,
            atol=1e-15,
            equal_nan=True,
        )
        assert torch.isnan(batch.residual_trace[k + 1 :, i]).all()
    assert batch.outcomes[-1].label == "nonfinite"


def test_nonfinite_starts_are_reported_and_the_others_still_solved() -> None:
    # sqrt has fixed points 0 and 1; from a negative start the map returns NaN
    system = dy.LoopedSystem.from_function(torch.sqrt, state_shape=(1,), validate=False)
    h0 = torch.tensor([[0.5], [-1.0], [4.0], [-0.1]], dtype=torch.float64)
    sol = dy.solve(system, h0, method="picard", throw=False)
    assert [o.label for o in sol.outcomes] == ["converged", "nonfinite", "converged", "nonfinite"]
    torch.testing.assert_close(sol.fixed_points, torch.ones(2, 1, dtype=torch.float64))
    d = sol.to_dict()
    assert d["residual"][1] is None
    json.dumps(d, allow_nan=False)


def test_zero_branch_rmsnorm_every_start_is_fixed_after_one_step() -> None:
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=8))
    h0 = system.initial_states("normal", 5, scale=3.0, seed=0)
    sol = dy.solve(system, h0, method="picard")
    assert sol.steps.tolist() == [1] * 5
    torch.testing.assert_close(
        sol.state.norm(dim=1), torch.full((5,), math.sqrt(8), dtype=torch.float64)
    )


def test_float32_uses_its_own_tolerance_and_agrees_with_float64() -> None:
    system = TANH.make()
    h0 = TANH.starts(system)
    s32 = system.to(torch.float32)
    sol32 = dy.solve(s32, h0.float(), method="anderson")
    sol64 = dy.solve(system, h0, method="anderson")
    assert sol32.tol == pytest.approx(dy.default_tolerance(torch.float32))
    assert sol32.state.dtype == torch.float32
    torch.testing.assert_close(sol32.state.double(), sol64.state, rtol=0, atol=1e-4)


def test_starting_at_a_fixed_point_takes_zero_steps() -> None:
    system = TANH.make()
    first = dy.solve(system, TANH.starts(system), method="newton_krylov")
    again = dy.solve(system, first.state, method="picard")
    assert again.steps.tolist() == [0] * first.state.shape[0]


def test_picard_damping_makes_mondeq_converge_where_plain_iteration_does_not() -> None:
    from problems import MONDEQ

    system = MONDEQ.make()
    h0 = MONDEQ.starts(system)
    plain = dy.solve(system, h0, method="picard", max_steps=2000, throw=False)
    damped = dy.solve(system, h0, method="picard", max_steps=2000, damping=0.1)
    assert plain.n_converged < h0.shape[0]  # ‖W‖₂ > 1: plain iteration fails for some inputs
    assert damped.all_converged
    module = system.module
    assert isinstance(module, dy.models.MonDEQ)
    assert float(torch.linalg.matrix_norm(module.W.detach(), ord=2)) > 1


def test_henon_root_finders_find_both_saddles() -> None:
    system = HENON.make()
    h0 = torch.tensor([[0.6, 0.2], [-1.1, -0.3]], dtype=torch.float64)
    sol = dy.solve(system, h0, method="newton_krylov")
    module = system.module
    assert isinstance(module, dy.models.Henon)
    torch.testing.assert_close(sol.state, module.fixed_points(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- bad input
@pytest.fixture
def tanh_system() -> dy.LoopedSystem:
    return TANH.make()


def test_wrong_state_shape_names_h0(tanh_system: dy.LoopedSystem) -> None:
    with pytest.raises(ShapeError, match=r"solve\(system, h0.*h0 has shape \(4, 15\)"):
        dy.solve(tanh_system, torch.zeros(4, 15, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"add a batch dimension with h0.unsqueeze\(0\)"):
        dy.solve(tanh_system, torch.zeros(16, dtype=torch.float64))


def test_batch_mismatch_with_input_is_named(tanh_system: dy.LoopedSystem) -> None:
    with pytest.raises(ShapeError, match="batch size 3 but the input has batch size 4"):
        dy.solve(tanh_system, torch.zeros(3, 16, dtype=torch.float64))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nonfinite_h0_is_refused(tanh_system: dy.LoopedSystem, bad: float) -> None:
    h0 = torch.zeros(4, 16, dtype=torch.float64)
    h0[2, 3] = bad
    with pytest.raises(
        InvalidArgumentError, match=r"h0 contains NaN or inf \(batch indices \[2\]\)"
    ):
        dy.solve(tanh_system, h0)


def test_nonfinite_x_is_refused(tanh_system: dy.LoopedSystem) -> None:
    x = torch.zeros(4, 16, dtype=torch.float64)
    x[1, 0] = math.nan
    with pytest.raises(InvalidArgumentError, match="x contains NaN or inf"):
        dy.solve(tanh_system, torch.zeros(4, 16, dtype=torch.float64), x=x)
    with pytest.raises(InvalidArgumentError, match="x contains NaN or inf"):
        dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=16), x)


def test_bf16_is_refused_with_a_way_out(tanh_system: dy.LoopedSystem) -> None:
    with pytest.raises(UnsupportedDtypeError, match=r"bfloat16.*system.to\(dtype=torch.float32\)"):
        dy.solve(tanh_system.to(torch.bfloat16), torch.zeros(4, 16, dtype=torch.bfloat16))
    with pytest.raises(UnsupportedDtypeError, match="h0 has dtype bfloat16"):
        dy.solve(tanh_system, torch.zeros(4, 16, dtype=torch.bfloat16))
    with pytest.raises(UnsupportedDtypeError, match="float16"):
        dy.solve(tanh_system.to(torch.float16), torch.zeros(4, 16, dtype=torch.float16))


@pytest.mark.parametrize("max_steps", [0, -3])
def test_max_steps_must_be_positive(tanh_system: dy.LoopedSystem, max_steps: int) -> None:
    with pytest.raises(
        InvalidArgumentError, match=rf"max_steps={max_steps}\): max_steps must be >= 1"
    ):
        dy.solve(tanh_system, torch.zeros(4, 16, dtype=torch.float64), max_steps=max_steps)


def test_unknown_method_lists_the_valid_ones(tanh_system: dy.LoopedSystem) -> None:
    with pytest.raises(
        InvalidArgumentError, match="unknown method 'newton'; choose one of 'picard'"
    ):
        dy.solve(tanh_system, torch.zeros(4, 16, dtype=torch.float64), method="newton")


def test_unknown_option_is_refused(tanh_system: dy.LoopedSystem) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown option 'memory' for method 'picard'"):
        dy.solve(tanh_system, torch.zeros(4, 16, dtype=torch.float64), method="picard", memory=3)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"tol": 0.0}, "tol must be finite and > 0"),
        ({"tol": -1e-3}, "tol must be finite and > 0"),
        ({"atol": -1.0}, "atol must be finite and >= 0"),
        ({"method": "picard", "damping": 1.5}, "damping must be <= 1.0"),
        ({"method": "anderson", "memory": 0}, "memory must be >= 1"),
        ({"divergence": 0.5}, "divergence must be > 1"),
        ({"throw": "yes"}, "throw must be True or False"),
    ],
)
def test_bad_settings_are_named(tanh_system: dy.LoopedSystem, kwargs: dict, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        dy.solve(tanh_system, torch.zeros(4, 16, dtype=torch.float64), **kwargs)


def test_system_must_be_a_looped_system() -> None:
    with pytest.raises(InvalidArgumentError, match=r"system must be a dynamo\.LoopedSystem"):
        dy.solve(torch.nn.Linear(2, 2), torch.zeros(1, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- property


@given(
    n=st.integers(min_value=1, max_value=12),
    rho=st.floats(min_value=0.05, max_value=0.85),
    seed=st.integers(min_value=0, max_value=10_000),
    method=st.sampled_from(METHODS),
)
def test_any_contractive_linear_map_is_solved_exactly(
    n: int, rho: float, seed: int, method: str
) -> None:
    """Whatever the draw, a converged solve is the linear solve (I − A)⁻¹(Bx + c)."""
    f = dy.models.LinearMap(n=n, spectral_radius=rho, seed=seed)
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    system = dy.LoopedSystem.from_module(f, x)
    sol = dy.solve(system, torch.zeros(3, n, dtype=torch.float64), method=method, max_steps=3000)
    exact = f.fixed_point(x)
    scale = 1 + float(exact.norm(dim=1).max())
    assert float((sol.state - exact).norm(dim=1).max()) <= 1e-8 * scale


# ---------------------------------------------------------------------- found in review
def test_huge_finite_states_are_not_called_nonfinite() -> None:
    # ‖h‖² overflows float64 at 1e160 although h is finite: norms are taken scaled
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(3,))
    h0 = torch.full((1, 3), 1e160, dtype=torch.float64)
    sol = dy.solve(system, h0, method="picard", divergence=1e200, max_steps=2000)
    assert sol.outcomes == (dy.Outcome.CONVERGED,)


def test_starts_beyond_the_divergence_limit_are_refused() -> None:
    # f(h) = h + 1 has no fixed point, but from h0 = 1e11 a relative test would pass at step 0
    system = dy.LoopedSystem.from_function(lambda h: h + 1, state_shape=(3,))
    with pytest.raises(
        InvalidArgumentError, match=r"RMS entry up to 1e\+11, beyond the divergence"
    ):
        dy.solve(system, torch.full((1, 3), 1e11, dtype=torch.float64))
    sol = dy.solve(system, torch.full((1, 3), 1e5, dtype=torch.float64), max_steps=50, throw=False)
    assert sol.n_converged == 0


def test_an_explicit_input_is_checked_like_the_systems_own(tanh_system: dy.LoopedSystem) -> None:
    h0 = torch.zeros(4, 16, dtype=torch.float64)
    with pytest.raises(ShapeError, match=r"x has per-example shape \(5,\)"):
        dy.solve(tanh_system, h0, x=torch.ones(4, 5, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"x has per-example shape \(5,\)"):
        tanh_system.step(h0, torch.ones(4, 5))
    with pytest.raises(InvalidArgumentError, match="x is on meta but the system is on cpu"):
        tanh_system.with_input(torch.ones(2, 16, device="meta"))
    with pytest.raises(InvalidArgumentError, match="h0 is on meta but the system is on cpu"):
        dy.solve(tanh_system, torch.zeros(4, 16, dtype=torch.float64, device="meta"))
    # a float32 input is cast to the system's float64
    sol = dy.solve(tanh_system, h0, x=torch.ones(4, 16))
    ref = dy.solve(tanh_system, h0, x=torch.ones(4, 16, dtype=torch.float64))
    torch.testing.assert_close(sol.state, ref.state)


@pytest.mark.parametrize("method", ["picard", "anderson", "broyden"])
def test_a_map_that_raises_mid_solve_is_named_with_the_iteration_and_starts(method: str) -> None:
    """Issue 13, item 5: the user's error comes back chained, with the call, the iteration and
    the starts, not as a bare traceback from inside the solver loop."""

    def fussy(h: torch.Tensor) -> torch.Tensor:
        if bool((h.abs() > 5).any()):
            raise ValueError("state left the table")
        return h + 1.0  # no fixed point: every method walks off the table

    system = dy.LoopedSystem.from_function(fussy, state_shape=(2,))
    with pytest.raises(dy.errors.MapError) as info:
        dy.solve(system, torch.zeros(3, 2, dtype=torch.float64), method=method)
    text = str(info.value)
    assert text.startswith(f"solve(system, h0, method='{method}'): evaluating the map raised")
    assert "ValueError at iteration" in text and "(evaluating starts 0, 1, 2)" in text
    assert "state left the table" in text
    assert isinstance(info.value.__cause__, ValueError)
    # eight starts are listed whole; beyond that, the first eight and how many more
    for n, shown in ((8, "0, 1, 2, 3, 4, 5, 6, 7)"), (11, "0, 1, 2, 3, 4, 5, 6, 7 and 3 more)")):
        with pytest.raises(dy.errors.MapError, match=re.escape(f"(evaluating starts {shown}")):
            dy.solve(system, torch.zeros(n, 2, dtype=torch.float64), method=method)


def test_row_norm_neither_overflows_nor_loses_small_rows() -> None:
    """The solvers' residual norm: the plain norm, recomputed scaled only where it may have
    overflowed or underflowed; compared with math.hypot, which scales exactly."""
    import math

    from dynamo._solvers._common import row_norm

    rows = [[1e200, 1e200], [3.0, 4.0], [1e-200, 1e-200], [0.0, 0.0], [1e-160, 3e-161]]
    got = row_norm(torch.tensor(rows, dtype=torch.float64)).tolist()
    assert got == pytest.approx([math.hypot(*r) for r in rows], rel=1e-15)
    assert got[2] > 0  # squares of 1e-200 underflow to 0 in the plain norm
    odd = row_norm(torch.tensor([[math.inf, 1.0], [math.nan, 1.0]], dtype=torch.float64))
    assert math.isinf(odd[0]) and math.isnan(odd[1])
    f32 = row_norm(torch.tensor([[3e30, 4e30], [3e-30, 4e-30]], dtype=torch.float32)).tolist()
    assert f32 == pytest.approx([5e30, 5e-30], rel=1e-6)


def test_broyden_secant_condition_holds_for_short_damped_steps() -> None:
    """After each update, B⁻¹ y = s for the latest pair (Sherman–Morrison's good Broyden). With a
    damping of 1e-3 the steps are short and y is tiny against g: B⁻¹y taken as the difference
    B⁻¹g − B⁻¹g_prev loses digits (1e-4 relative in float32 here), so those rows take the
    product itself (1e-7)."""
    from dynamo._solvers._common import Context
    from dynamo._solvers.broyden import Broyden, _apply

    worst = 0.0
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        A = torch.randn(8, 8, generator=gen, dtype=torch.float32)
        A = 0.5 * A / torch.linalg.matrix_norm(A, ord=2)
        c = torch.randn(8, generator=gen, dtype=torch.float32)

        def fmap(
            z: torch.Tensor, x: torch.Tensor | None, A: torch.Tensor = A, c: torch.Tensor = c
        ) -> torch.Tensor:
            return z @ A.T + c

        method = Broyden(damping=1e-3)
        z = torch.randn(4, 8, generator=gen, dtype=torch.float32)
        ctx = Context(fmap, None, 4, z.device)
        fz = fmap(z, None)
        st = method.start(z, fz, ctx)
        z_prev, fz_prev = z, fz
        for step in range(20):
            z_new, _, _ = method.propose(st, z, fz, ctx)
            if step:  # the pair (s, y) of the previous step went in during this propose
                k = int(st["used"].max())
                s, y = z - z_prev, (fz - z) - (fz_prev - z_prev)
                lhs = _apply(st["U"][:, :k], st["V"][:, :k], y)
                worst = max(worst, float(((lhs - s).norm(dim=1) / s.norm(dim=1)).max()))
            z_prev, fz_prev = z, fz
            z, fz = z_new, fmap(z_new, None)
    assert worst < 1e-5, worst


def test_a_state_whose_norm_overflows_is_never_the_best_iterate() -> None:
    """A finite state can have an infinite norm in float32; its residual must not be reported
    as the best one (with a relative residual of 0)."""
    system = dy.LoopedSystem.from_function(
        lambda h: torch.clamp(2 * h, max=1e38), state_shape=(16,), dtype=torch.float32
    )
    h0 = torch.full((1, 16), 9e37, dtype=torch.float32)
    sol = dy.solve(system, h0, method="picard", max_steps=5, divergence=1e38, throw=False)
    assert sol.outcomes[0] is not dy.Outcome.CONVERGED
    assert float(sol.relative_residual[0]) != 0.0  # NaN: the norm never was finite
