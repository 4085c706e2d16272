"""A shared bank of looped maps with known answers (SCIENCE.md section 6), used across the tests.

Each :class:`Problem` builds a system and its starts, and knows what is true about it: the exact
fixed points where they have a closed form, whether there is exactly one per input, whether plain
iteration reaches it, and which solver options the problem needs (damping for monDEQ).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

import dynamo as dy

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Problem:
    name: str
    make: Callable[[], dy.LoopedSystem]
    starts: Callable[[dy.LoopedSystem], torch.Tensor]
    #: exact fixed points, (K, *state_shape), for autonomous maps; for driven maps a function of x
    exact: Callable[[dy.LoopedSystem], torch.Tensor] | None = None
    unique: bool = False  # exactly one fixed point per input
    reachable: bool = False  # plain (undamped) iteration converges from the starts
    has_fixed_point: bool = True
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


def _tanh() -> dy.LoopedSystem:
    f = dy.models.ContractiveTanh(n=16, lipschitz=0.9, seed=3)
    return dy.LoopedSystem.from_module(f, torch.randn(4, 16, generator=gen(1), dtype=F64))


def _tanh_slow() -> dy.LoopedSystem:
    f = dy.models.ContractiveTanh(
        n=64, lipschitz=0.95, structure="symmetric", input_scale=0.1, seed=0
    )
    return dy.LoopedSystem.from_module(f, torch.randn(4, 64, generator=gen(0), dtype=F64))


def _linear() -> dy.LoopedSystem:
    f = dy.models.LinearMap(n=16, spectral_radius=0.9, seed=2)
    return dy.LoopedSystem.from_module(f, torch.randn(4, 16, generator=gen(2), dtype=F64))


def _linear_exact(system: dy.LoopedSystem) -> torch.Tensor:
    module = system.module
    assert isinstance(module, dy.models.LinearMap)
    assert system.x is not None
    return module.fixed_point(system.x)


def _mondeq() -> dy.LoopedSystem:
    f = dy.models.MonDEQ(n=16, m=0.5, seed=0)
    return dy.LoopedSystem.from_module(f, torch.randn(4, 16, generator=gen(3), dtype=F64))


def _expanding() -> dy.LoopedSystem:
    f = dy.models.LinearMap(n=8, spectral_radius=2.0, seed=4)
    return dy.LoopedSystem.from_module(f, torch.randn(4, 8, generator=gen(4), dtype=F64))


def _logistic39() -> dy.LoopedSystem:
    return dy.LoopedSystem.from_module(dy.models.Logistic(r=3.9))


def _henon() -> dy.LoopedSystem:
    return dy.LoopedSystem.from_module(dy.models.Henon())


def _no_fixed_point() -> dy.LoopedSystem:
    # f(h) − h = 1 + exp(h) >= 1 everywhere: no fixed point at all, and f′ = 1 + exp(h) > 1
    return dy.LoopedSystem.from_function(lambda h: h + 1 + torch.exp(h), state_shape=(3,))


def _exact_of(system: dy.LoopedSystem) -> torch.Tensor:
    module = system.module
    return module.fixed_points()  # type: ignore[union-attr, operator]


def _normal(scale: float, n: int = 1, seed: int = 5) -> Callable[[dy.LoopedSystem], torch.Tensor]:
    return lambda s: s.initial_states("normal", n, scale=scale, seed=seed)


def _uniform(lo: float, hi: float, n: int, seed: int) -> Callable[[dy.LoopedSystem], torch.Tensor]:
    def starts(s: dy.LoopedSystem) -> torch.Tensor:
        u = torch.rand(n, *s.state_shape, generator=gen(seed), dtype=F64)
        return lo + (hi - lo) * u

    return starts


TANH = Problem("tanh", _tanh, _normal(1.0), unique=True, reachable=True)
TANH_SLOW = Problem("tanh_slow", _tanh_slow, _normal(1.0), unique=True, reachable=True)
LINEAR = Problem("linear", _linear, _normal(1.0), exact=_linear_exact, unique=True, reachable=True)
MONDEQ = Problem(
    "mondeq",
    _mondeq,
    _normal(1.0),
    unique=True,
    reachable=False,  # ‖W‖₂ ≈ 3.3: undamped iteration does not converge
    options={"picard": {"damping": 0.1}, "anderson": {"damping": 0.5}},
)
EXPANDING = Problem("expanding_linear", _expanding, _normal(1.0), exact=_linear_exact, unique=True)
LOGISTIC39 = Problem("logistic_3.9", _logistic39, _uniform(0.05, 0.95, 8, 6), exact=_exact_of)
HENON = Problem("henon", _henon, _uniform(-0.3, 0.3, 8, 7), exact=_exact_of)
NO_FIXED_POINT = Problem(
    "no_fixed_point", _no_fixed_point, _uniform(-2.0, 1.0, 6, 8), has_fixed_point=False
)

#: maps with exactly one fixed point per input that every method must find to 1e-10
UNIQUE = [TANH, LINEAR, MONDEQ]
#: maps whose plain iteration does not converge although fixed points exist (all unstable)
UNREACHABLE = [LOGISTIC39, EXPANDING, HENON]

# ---------------------------------------------------------------------------------------------
# Known answers from the issue-12 audit (each section is kept by one author; add below its line).
# ---------------------------------------------------------------------------------------------

# --- fixed points: saddles, cycles, continua, labels ---
_DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class FlipFlop:
    """The trained 3-bit flip-flop RNN of Sussillo & Barak (2013), shipped as data.

    ``h ↦ tanh(W h + b)`` (the zero-input map) has 27 fixed points on the 3×3×3 grid of memory
    states: 8 stable (the memories), 12 index-1, 6 index-2 and 1 index-3 saddle (the cube's
    corners, edges, faces and centre). ``starts`` are FixedPointFinder's: 1024 states drawn from
    the network's own trajectories on the task.
    """

    W: torch.Tensor
    b: torch.Tensor
    U: torch.Tensor

    n_points: ClassVar[int] = 27
    #: fixed points per number of eigenvalues of modulus > 1 (the saddle index)
    by_index: ClassVar[dict[int, int]] = {0: 8, 1: 12, 2: 6, 3: 1}

    def step(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.W.T + self.b)

    def system(self) -> dy.LoopedSystem:
        return dy.LoopedSystem.from_function(self.step, state_shape=(self.W.shape[0],))

    def task(
        self, generator: torch.Generator, batch: int = 64, steps: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input pulses (±1 on each bit with probability 0.08 a step) and the bits to hold."""
        n_bits = self.U.shape[1]
        pulses = torch.rand(batch, steps, n_bits, generator=generator) < 0.08
        signs = torch.where(torch.rand(batch, steps, n_bits, generator=generator) < 0.5, -1.0, 1.0)
        u = (pulses * signs).to(F64)
        y = torch.zeros_like(u)
        state = torch.zeros(batch, n_bits, dtype=F64)
        for t in range(steps):
            state = torch.where(u[:, t] != 0, u[:, t], state)
            y[:, t] = state
        return u, y

    def run(self, u: torch.Tensor) -> torch.Tensor:
        """The hidden states along the task, ``(batch, steps, n_hidden)``."""
        h = torch.zeros(u.shape[0], self.W.shape[0], dtype=F64)
        out = []
        for t in range(u.shape[1]):
            h = torch.tanh(h @ self.W.T + self.b + u[:, t] @ self.U.T)
            out.append(h)
        return torch.stack(out, dim=1)

    def starts(self, n: int = 1024, seed: int = 1) -> torch.Tensor:
        g = gen(seed)
        u, _ = self.task(g)
        flat = self.run(u).reshape(-1, self.W.shape[0])
        return flat[torch.randperm(flat.shape[0], generator=g)[:n]]


def flipflop() -> FlipFlop:
    """The shipped network (weights as exact float64 hex in tests/data/flipflop_3bit.json)."""
    data = json.loads((_DATA / "flipflop_3bit.json").read_text())

    def tensor(key: str) -> torch.Tensor:
        entry = data[key]
        values = [float.fromhex(v) for v in entry["values"]]
        return torch.tensor(values, dtype=F64).reshape(entry["shape"])

    return FlipFlop(W=tensor("W.weight"), b=tensor("W.bias"), U=tensor("U.weight"))


@dataclass(frozen=True)
class CycleCase:
    """A driven map whose starts settle on known attracting cycles (checked in the tests by
    iterating 20,000 steps from each start and reading the least period of the limit)."""

    name: str
    make: Callable[[], dy.LoopedSystem]
    starts: Callable[[dy.LoopedSystem], torch.Tensor]
    #: how many starts settle on an attracting cycle of each period; the rest do not settle
    settled: dict[int, int]


def _mondeq7(input_seed: int, which: int) -> Callable[[], dy.LoopedSystem]:
    def make() -> dy.LoopedSystem:
        x = torch.randn(4, 16, generator=gen(input_seed), dtype=F64)[which : which + 1]
        return dy.LoopedSystem.from_module(dy.models.MonDEQ(n=16, m=0.5, seed=7), x)

    return make


#: undamped monDEQ iteration (‖W‖₂ > 1): every start settles on one stable 2-cycle whose
#: multipliers reach modulus 0.93; the old search started from an early transient, looked 200
#: steps on and reported it as unconverged
MONDEQ_2CYCLE = CycleCase("mondeq_2cycle", _mondeq7(5, 2), _normal(1.0, 16, 0), {2: 16})
#: one input, two attracting cycles (period 3 for five starts, 4 for eight), three unsettled
MONDEQ_3_AND_4_CYCLES = CycleCase(
    "mondeq_3_and_4_cycles", _mondeq7(8, 1), _normal(1.0, 16, 0), {3: 5, 4: 8}
)
CYCLE_CASES = [MONDEQ_2CYCLE, MONDEQ_3_AND_4_CYCLES]

#: logistic r = 3.2: fixed points 0 (f′ = 3.2) and 1 − 1/r = 0.6875 (f′ = −1.2), both unstable;
#: the stable 2-cycle {0.5130, 0.7995} (multiplier r²(1 − 2p)(1 − 2q) = 0.16) attracts every
#: start in (0, 1) but the two fixed points and their preimages
LOGISTIC32 = Problem(
    "logistic_3.2",
    lambda: dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2)),
    _uniform(0.05, 0.95, 16, 9),
    exact=_exact_of,
)


@dataclass(frozen=True)
class ContinuumCase:
    """Fixed points that come in connected sets, with their number and dimensions."""

    name: str
    make: Callable[[], dy.LoopedSystem]
    n_starts: int
    scale: float
    dimensions: tuple[int, ...]  # one per connected set
    isolated: int = 0  # isolated fixed points besides
    #: a quantity constant on each continuum (the radius of a circle, the height of a line) and
    #: its values, one per continuum, in increasing order
    label: Callable[[torch.Tensor], torch.Tensor] | None = None
    values: tuple[float, ...] = ()
    starts: Callable[[dy.LoopedSystem], torch.Tensor] | None = None


_LINE = torch.tensor([1.0, 0.5, 0.5], dtype=F64)


def _norm(h: torch.Tensor) -> torch.Tensor:
    return h.norm(dim=1)


def _height(h: torch.Tensor) -> torch.Tensor:
    return h[:, 1]


def _rings(h: torch.Tensor) -> torch.Tensor:
    s = (h * h).sum(dim=-1, keepdim=True)
    return h * (1 - 0.04 * (s - 1) * (s - 2.25) * (s - 4))


def _close_rings(h: torch.Tensor) -> torch.Tensor:
    r = h.norm(dim=-1, keepdim=True)
    return h * (1 - 0.3 * (r - 10) * (r - 10.3) * (r - 10.6) / r)


def _close_ring_starts(system: dy.LoopedSystem) -> torch.Tensor:
    g = gen(0)
    th = 2 * torch.pi * torch.rand(64, generator=g, dtype=F64)
    r = 9.8 + torch.rand(64, generator=g, dtype=F64)
    return torch.stack([r * th.cos(), r * th.sin()], dim=1)


def _lines(h: torch.Tensor) -> torch.Tensor:
    y = h[..., 1:2]
    return torch.cat([h[..., :1], y + 0.5 * (y - y**3)], dim=-1)


def _far_line_starts(system: dy.LoopedSystem) -> torch.Tensor:
    g = gen(13)
    x = 200 * (2 * torch.rand(64, generator=g, dtype=F64) - 1)
    y = 3 * torch.rand(64, generator=g, dtype=F64) - 1.5
    return torch.stack([x, y], dim=1)


#: h ↦ diag(1, .5, .5) h: the fixed points are the line ℝ·e₁, one continuum of dimension 1
LINE_ATTRACTOR = ContinuumCase(
    "line_attractor",
    lambda: dy.LoopedSystem.from_function(lambda h: h * _LINE.to(h.dtype), state_shape=(3,)),
    128,
    1.0,
    (1,),
)
#: every point of the sphere ‖h‖ = √12 is fixed: one continuum of dimension 11
ZERO_BRANCH_RMS12 = ContinuumCase(
    "zero_branch_rmsnorm_12",
    lambda: dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=12)),
    32,
    1.0,
    (11,),
    label=_norm,
    values=(12**0.5,),
)
#: h ↦ h (1 − 0.04 (s − 1)(s − 2.25)(s − 4)), s = ‖h‖²: three concentric circles of fixed
#: points (r = 1 and 2 attract radially, with r′ = 0.7 and −0.68; r = 1.5 repels, r′ = 1.39) and
#: the origin, an isolated repeller (J = 1.36 I)
RINGS = ContinuumCase(
    "three_rings",
    lambda: dy.LoopedSystem.from_function(_rings, state_shape=(2,)),
    64,
    1.5,
    (1, 1, 1),
    isolated=1,
    label=_norm,
    values=(1.0, 1.5, 2.0),
)
#: three circles of fixed points 0.3 apart at radius 10 (r = 10.3 repels): a chord between two
#: samples of one circle bulges onto the next one, so linking must follow the curve
CLOSE_RINGS = ContinuumCase(
    "three_close_rings",
    lambda: dy.LoopedSystem.from_function(_close_rings, state_shape=(2,)),
    64,
    1.0,
    (1, 1, 1),
    label=_norm,
    values=(10.0, 10.3, 10.6),
    starts=_close_ring_starts,
)
#: (x, y) ↦ (x, y + 0.5 (y − y³)): three lines of fixed points, y = −1 and 1 (attracting) and
#: y = 0 (repelling), 1 apart, sampled over x in ±200 (a chord between far samples of two lines
#: is 400 long: it must not link them)
FAR_LINES = ContinuumCase(
    "three_far_lines",
    lambda: dy.LoopedSystem.from_function(_lines, state_shape=(2,)),
    64,
    1.0,
    (1, 1, 1),
    label=_height,
    values=(-1.0, 0.0, 1.0),
    starts=_far_line_starts,
)
CONTINUUM_CASES = [LINE_ATTRACTOR, ZERO_BRANCH_RMS12, RINGS, CLOSE_RINGS, FAR_LINES]

#: h ↦ h − h³: one fixed point, 0, degenerate (f′(0) = 1) and isolated; Newton approaches it only
#: linearly and stops anywhere within (tol)^(1/3) of it
CUBIC_DEGENERATE = Problem(
    "cubic_degenerate",
    lambda: dy.LoopedSystem.from_function(lambda h: h - h**3, state_shape=(1,)),
    _uniform(-0.3, 0.3, 16, 10),
)


BISTABLE_BASIN_RADIUS = 1 - 1 / math.sqrt(3)
"""``dy.models.Bistable(n=1)``, ``f(h) = h + 0.2 (h − h³)``: around its stable point 1 the map
contracts (``|f′| < 1``) exactly on ``|h − 1| < 1 − 1/√3`` (``f′(h) = 1.2 − 0.6 h² = −1`` at
``h = √(11/3)`` on the right, ``= 1`` at ``h = 1/√3`` on the left): the largest ball around 1 on
which a contraction certificate in the Euclidean norm can hold."""


def bistable_99_1(seed: int, n: int = 16) -> tuple[dy.LoopedSystem, torch.Tensor]:
    """Two attractors, ±1, with basins of 99% and 1% of the start distribution (uniform on
    [−0.02, 1.98]; the basin boundary is 0): ``n`` starts miss the small one with probability
    0.99ⁿ (85% for 16)."""
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
    return system, -0.02 + 2.0 * torch.rand(n, 1, generator=gen(seed), dtype=F64)


# --- axes: rectangular inputs, input-dependence verdicts ---
# Driven maps whose input has another size than the state, or whose fixed points do not follow
# the input in every direction. Each knows its answer in closed form or by dense algebra on its
# own weights (the tests build (I − J)⁻¹ ∂f/∂x from W, U and h*, without dynamo).


def _tanh_12x4() -> dy.LoopedSystem:
    # tanh(W h + U x + b), h ∈ ℝ¹², x ∈ ℝ⁴, ‖W‖₂ = 0.9: one fixed point per input; dh*/dx is a
    # 12 × 4 matrix of rank 4, ‖dh*/dx‖₂ up to ≈ 2.81 over these six inputs (the instance,
    # ≈ 2.82, was not recorded; this draw is the nearest of 4 model seeds × 3 input seeds)
    f = dy.models.ContractiveTanh(n=12, d_in=4, lipschitz=0.9, seed=2)
    return dy.LoopedSystem.from_module(f, torch.randn(6, 4, generator=gen(1), dtype=F64))


TANH_12X4 = Problem("tanh_state12_input4", _tanh_12x4, _normal(1.0), unique=True, reachable=True)


def logistic_rate(x: torch.Tensor) -> torch.Tensor:
    """r(x) = 2.8 + 0.8 (x − 0.25) of the driven logistic map."""
    return 2.8 + 0.8 * (x - 0.25)


#: r = 2.80, 2.84, 2.88 (the fixed point 1 − 1/r attracts, |f′| = |2 − r| < 1) and r = 3.16, 3.20,
#: 3.24 (it repels, |2 − r| > 1; a stable 2-cycle attracts, e.g. {0.5130, 0.7995} at r = 3.2)
LOGISTIC_DRIVEN_X = torch.tensor([[0.25], [0.30], [0.35], [0.70], [0.75], [0.80]], dtype=F64)
#: which inputs' iteration converges to a fixed point: 3 of 6
LOGISTIC_DRIVEN_CONVERGES = (True, True, True, False, False, False)


def _logistic_driven() -> dy.LoopedSystem:
    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return logistic_rate(x) * h * (1 - h)

    return dy.LoopedSystem.from_function(
        step, state_shape=(1,), x=LOGISTIC_DRIVEN_X, name="driven logistic"
    )


def _logistic_driven_exact(system: dy.LoopedSystem) -> torch.Tensor:
    # the nonzero fixed point of each input (0 is the other, repelling for r > 1)
    assert system.x is not None
    return 1 - 1 / logistic_rate(system.x)


LOGISTIC_DRIVEN = Problem(
    "logistic_driven_r_2.8_to_3.24",
    _logistic_driven,
    _uniform(0.2, 0.8, 4, 9),
    exact=_logistic_driven_exact,
)

#: weights of tanh(W h + u (x₁ + x₂) + b) on ℝ², ‖W‖₂ = 0.5: x enters only through x₁ + x₂, so
#: ∂f/∂x = diag(1 − h*²) u [1, 1] and dh*/dx has rank 1, not the full min(2, 2) = 2 (state and
#: input of one size: the old code ran, computed rank ≥ 1 on its probes, and said "strong")
_SUM_G = gen(11)
_SUM_W = torch.randn(2, 2, generator=_SUM_G, dtype=F64)
SUM_INPUT_W = 0.5 * _SUM_W / torch.linalg.matrix_norm(_SUM_W, ord=2)
SUM_INPUT_U = torch.randn(2, generator=_SUM_G, dtype=F64)
SUM_INPUT_B = 0.1 * torch.randn(2, generator=_SUM_G, dtype=F64)
SUM_INPUT_RANK = 1


def _tanh_sum_input() -> dy.LoopedSystem:
    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :1] + x[:, 1:2]
        return torch.tanh(h @ SUM_INPUT_W.T + s * SUM_INPUT_U + SUM_INPUT_B)

    xs = torch.randn(4, 2, generator=gen(12), dtype=F64)
    return dy.LoopedSystem.from_function(step, state_shape=(2,), x=xs, name="tanh of x1 + x2")


TANH_SUM_INPUT = Problem(
    "tanh_sum_input", _tanh_sum_input, _normal(1.0), unique=True, reachable=True
)

#: h ↦ h + 0.2 (h − h³ + 0.1 x): for |x| ≤ 0.3 two attracting fixed points per input, the roots of
#: h³ − h − 0.1 x = 0 near ±1 (f′ ≈ 0.6), and a repelling one near 0 (f′ ≈ 1.2); from h₀ = x the
#: iteration reaches the root of x's sign; dh*/dx = 0.1 / (3h*² − 1) ≠ 0 on both branches
BISTABLE_DRIVEN_X = torch.tensor([[-0.3], [-0.1], [0.1], [0.3]], dtype=F64)


def _bistable_driven() -> dy.LoopedSystem:
    return dy.LoopedSystem.from_function(
        lambda h, x: h + 0.2 * (h - h**3 + 0.1 * x),
        state_shape=(1,),
        x=BISTABLE_DRIVEN_X,
        name="driven bistable",
    )


def _bistable_driven_exact(system: dy.LoopedSystem) -> torch.Tensor:
    # (B, 2, 1): the two attracting roots of h³ − h − 0.1 x, negative first
    assert system.x is not None
    out = []
    for x in system.x[:, 0].tolist():
        roots = sorted(
            complex(r).real
            for r in torch.linalg.eigvals(
                torch.tensor([[0.0, 1.0, 0.1 * x], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
            ).tolist()
        )
        out.append([[roots[0]], [roots[2]]])
    return torch.tensor(out, dtype=F64)


BISTABLE_DRIVEN = Problem(
    "bistable_driven",
    _bistable_driven,
    _uniform(-1.5, 1.5, 8, 10),
    exact=_bistable_driven_exact,
)

# --- layer cycles ---
# A two-layer block on R², f_1(h) = A h + c_1, f_2(u) = tanh(b u + c_2), built so that
# h* = (1/2, −1/2) is a block fixed point with layer point h_1* = f_1(h*) = (1, 1/4)
# (c_1 = h_1* − A h*, c_2 = atanh(h*) − b h_1*). With A = [[0, 2], [1, 0]] the block Jacobian at h*
# is diag(1 − h*²) b A = (3/4) b A, eigenvalues ±(3/4) b √2: b = ρ / ((3/4) √2) gives ρ exactly
# (to rounding), and the rotation f_1 ∘ f_2 at h_1* has A (3/4) b, the same spectrum (C10).


@dataclass(frozen=True)
class LayerCycleCase:
    name: str
    #: () -> (system, h_star (N, 2), exact layer points (2, N, 2): h_1*, h_2* = h*)
    make: Callable[[], tuple[dy.LoopedSystem, torch.Tensor, torch.Tensor]]
    rho: float  # spectral radius of the block Jacobian at h*: the moduli of both eigenvalues
    stability: str  # with the default neutral band 1e-4
    n_unstable: int  # eigenvalues of modulus > 1 + 1e-4
    attracts: bool | None


def _two_layer_cycle(
    rho: float, *, x_batch: int = 0, n: int = 1
) -> Callable[[], tuple[dy.LoopedSystem, torch.Tensor, torch.Tensor]]:
    def make() -> tuple[dy.LoopedSystem, torch.Tensor, torch.Tensor]:
        a = torch.tensor([[0.0, 2.0], [1.0, 0.0]], dtype=F64)
        b = rho / (0.75 * 2.0**0.5)
        h = torch.tensor([0.5, -0.5], dtype=F64)
        h1 = torch.tensor([1.0, 0.25], dtype=F64)
        c1, c2 = h1 - a @ h, torch.atanh(h) - b * h1

        def f1(z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
            return z @ a.T + c1

        def f2(u: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
            return torch.tanh(b * u + c2)

        # an autonomous map; x (when given) only seeds initial states, as LoopedSystem documents
        x = torch.randn(x_batch, 2, generator=gen(12), dtype=F64) if x_batch else None
        system = dy.LoopedSystem.from_function(
            lambda z: f2(f1(z)), state_shape=(2,), x=x, driven=False, layers=[f1, f2]
        )
        points = torch.stack([h1, h])[:, None].expand(2, n, 2).clone()
        return system, h.expand(n, 2).clone(), points

    return make


LAYER_CYCLE_STABLE = LayerCycleCase(
    "two_layer_cycle_stable", _two_layer_cycle(0.8), 0.8, "stable", 0, True
)
#: ρ = 1.63, the largest ρ the audit saw on a per-layer "cycle" reported without a word on stability
LAYER_CYCLE_UNSTABLE = LayerCycleCase(
    "two_layer_cycle_unstable", _two_layer_cycle(1.63), 1.63, "unstable", 2, False
)
LAYER_CYCLE_MARGINAL = LayerCycleCase(
    "two_layer_cycle_marginal", _two_layer_cycle(1.0), 1.0, "marginal", 0, None
)
#: autonomous, with an input of batch 3 (a source of starts only) and 2 fixed points: the old
#: layer_cycle started the curves from x and crashed ("size of tensor a (3) must match … (2)")
LAYER_CYCLE_AUTONOMOUS_X = LayerCycleCase(
    "two_layer_cycle_autonomous_x_batch_3",
    _two_layer_cycle(0.8, x_batch=3, n=2),
    0.8,
    "stable",
    0,
    True,
)
LAYER_CYCLES = [
    LAYER_CYCLE_STABLE,
    LAYER_CYCLE_UNSTABLE,
    LAYER_CYCLE_MARGINAL,
    LAYER_CYCLE_AUTONOMOUS_X,
]

# --- contraction on a domain ---
# A map of the plane that sends the unit circle onto itself, in polar form
# θ ↦ θ* + a·sin(θ − θ*), r ↦ r². Along the circle its Lipschitz constant is a:
# ∂θ'/∂θ = a·cos(θ − θ*), and the chord ratio ‖f(p) − f(q)‖/‖p − q‖ is largest for nearby pairs at
# θ = θ* (on a 4000-point grid it never exceeds a: 0.1800 and 1.8000). Across the circle the
# radius doubles its distance from 1 (∂r'/∂r = 2 at r = 1), so ‖∂f/∂h‖₂ = 2 on the circle whatever
# a is: a radial expanding pair and a fixed point with ρ(∂f/∂h) = 2, both through directions that
# leave the circle. Its fixed points: the origin (off the circle), and on it θ* + x for every root
# of x = a·sin x: x = 0 alone when a < 1 (multiplier a along the circle), and also
# ±x₁ = ±1.7659… when a = 1.8 (multiplier a·cos x₁ = −0.3489…). In the unit ball the radial
# direction lies inside the domain, so there ‖J‖₂ = 2r reaches 2 at r = 1: Lip = 2 (the ball is
# convex).
CIRCLE_THETA = 0.7


def _circle(rate: float) -> Callable[[], dy.LoopedSystem]:
    def make() -> dy.LoopedSystem:
        t = torch.tensor(CIRCLE_THETA, dtype=F64)
        c, s = float(t.cos()), float(t.sin())

        def f(h: torch.Tensor) -> torch.Tensor:
            r2 = (h * h).sum(-1, keepdim=True)
            r = r2.sqrt().clamp(min=torch.finfo(F64).tiny)
            sin = (c * h[..., 1:] - s * h[..., :1]) / r  # sin(θ − θ*)
            phi = CIRCLE_THETA + rate * sin
            return r2 * torch.cat([torch.cos(phi), torch.sin(phi)], -1)

        return dy.LoopedSystem.from_function(f, state_shape=(2,), name=f"circle_{rate}")

    return make


def circle_angles(rate: float) -> list[float]:
    """θ* + x for the roots x of x = rate·sin x (Newton, to rounding): the fixed points on the
    circle, θ* first."""
    xs = [0.0]
    if rate > 1:
        x = torch.tensor(2.0, dtype=F64)
        for _ in range(50):
            x = x - (x - rate * torch.sin(x)) / (1 - rate * torch.cos(x))
        xs += [float(x), -float(x)]
    return [CIRCLE_THETA + x for x in xs]


def _circle_exact(rate: float) -> Callable[[dy.LoopedSystem], torch.Tensor]:
    def exact(system: dy.LoopedSystem) -> torch.Tensor:
        th = torch.tensor(circle_angles(rate), dtype=F64)
        on = torch.stack([th.cos(), th.sin()], -1)
        return torch.cat([torch.zeros(1, 2, dtype=F64), on])

    return exact


def _on_circle(n: int, seed: int) -> Callable[[dy.LoopedSystem], torch.Tensor]:
    return lambda s: dy.Domain.sphere(1.0).sample(s, n, seed=seed)


CIRCLE_018 = Problem("circle_0.18", _circle(0.18), _on_circle(8, 13), exact=_circle_exact(0.18))
CIRCLE_18 = Problem("circle_1.8", _circle(1.8), _on_circle(8, 14), exact=_circle_exact(1.8))


@dataclass(frozen=True)
class DomainCase:
    """A map with a known answer about contraction on a domain (issue 12, item 9)."""

    name: str
    problem: Problem
    domain: dy.Domain
    lipschitz: float  # Lipschitz constant of the map on the domain, Euclidean distance
    #: check_contraction's verdict: a plain function has no certified rule, so never PROVEN
    verdict: str
    #: (fixed points on the domain, multipliers along it there, same order); None: not checked
    on_domain: tuple[list[float], list[float]] | None = None


#: contracts along the circle (0.18) and expands across it: the old check said REFUTED, from a
#: radial pair with one point off the circle and the radial multiplier 2 of the fixed point θ*
CIRCLE_CONTRACTING = DomainCase(
    "circle_0.18_on_circle",
    CIRCLE_018,
    dy.Domain.sphere(1.0),
    0.18,
    "SUPPORTED",
    (circle_angles(0.18), [0.18]),
)
#: expands along the circle: REFUTED with witnesses on it (multiplier 1.8 at θ*, 3 fixed points)
CIRCLE_EXPANDING = DomainCase(
    "circle_1.8_on_circle",
    CIRCLE_18,
    dy.Domain.sphere(1.0),
    1.8,
    "REFUTED",
    (
        circle_angles(1.8),
        [1.8] + [1.8 * float(torch.tensor(circle_angles(1.8)[1] - CIRCLE_THETA).cos())] * 2,
    ),
)
#: the contracting circle map in the unit ball: the radial direction is inside the domain now
CIRCLE_IN_BALL = DomainCase("circle_0.18_in_ball", CIRCLE_018, dy.Domain.ball(1.0), 2.0, "REFUTED")
DOMAIN_CASES = [CIRCLE_CONTRACTING, CIRCLE_EXPANDING, CIRCLE_IN_BALL]

# --- proofs: exact counts in a box ---
# Maps whose solutions of f^p(h) = h in a box are known in closed form: their number, their
# values, their least periods and the number of eigenvalues of ∂f^p/∂h outside the unit circle at
# each (the saddle index; checked against float eigenvalues in tests/test_proofs.py). A proof is
# about the map's real arithmetic with its float64 parameters taken as exact reals, so the closed
# forms take a number type: ``float`` for float64 values, ``flint.arb`` (at any precision) for
# rigorous balls around the exact values.

Num = Callable[[float], Any]


def _sqrt(v: Any) -> Any:
    return v.sqrt() if hasattr(v, "sqrt") else v**0.5


@dataclass(frozen=True)
class CountCase:
    """Every solution of ``f^p(h) = h`` in ``[lo, hi]^n``, in closed form."""

    name: str
    make: Callable[[], dy.LoopedSystem]
    box: tuple[float, float]
    #: ``num`` (float, or flint.arb) -> one list of coordinates per solution
    solutions: Callable[[Num], list[list[Any]]]
    #: per solution, in the same order: eigenvalues of ∂f^p/∂h of modulus > 1
    n_unstable: tuple[int, ...]
    period: int = 1
    #: per solution: its least period (all 1 when ``period`` is 1)
    least_periods: tuple[int, ...] | None = None
    #: orbits of least period ``period``
    cycles: int = 0

    @property
    def count(self) -> int:
        return len(self.n_unstable)

    def points(self) -> torch.Tensor:
        """The solutions in float64, ``(count, n)``."""
        return torch.tensor(self.solutions(float), dtype=F64)

    def stability(self, i: int) -> str:
        """The class of solution ``i``: stable, saddle or unstable."""
        k, n = self.n_unstable[i], len(self.solutions(float)[i])
        return "stable" if k == 0 else "unstable" if k == n else "saddle"


def _logistic_fixed(num: Num) -> list[list[Any]]:
    r = num(3.2)
    return [[num(0.0)], [1 - 1 / r]]


def _logistic_period2(num: Num) -> list[list[Any]]:
    # the 2-cycle {(r + 1 ∓ √((r − 3)(r + 1))) / (2r)} between the fixed points, in increasing order
    r = num(3.2)
    s = _sqrt((r - 3) * (r + 1))
    return [[num(0.0)], [(r + 1 - s) / (2 * r)], [1 - 1 / r], [(r + 1 + s) / (2 * r)]]


def _henon_fixed(num: Num) -> list[list[Any]]:
    # x = (−(1 − b) ± √((1 − b)² + 4a)) / (2a), y = b x
    a, b = num(1.4), num(0.3)
    s = _sqrt((1 - b) ** 2 + 4 * a)
    xs = [(-(1 - b) - s) / (2 * a), (-(1 - b) + s) / (2 * a)]
    return [[x, b * x] for x in xs]


def _henon_period2(num: Num) -> list[list[Any]]:
    # the 2-cycle: x₁ + x₂ = (1 − b)/a, x₁x₂ = ((1 − b)² − a)/a², so
    # x₁,₂ = ((1 − b) ∓ √(4a − 3(1 − b)²)) / (2a), points (x₁, b x₂) and (x₂, b x₁)
    a, b = num(1.4), num(0.3)
    s = _sqrt(4 * a - 3 * (1 - b) ** 2)
    x1, x2 = ((1 - b) - s) / (2 * a), ((1 - b) + s) / (2 * a)
    return [*_henon_fixed(num), [x1, b * x2], [x2, b * x1]]


def _grid(n: int) -> Callable[[Num], list[list[Any]]]:
    # h + 0.2 (h − h³) = h exactly where every coordinate is −1, 0 or 1
    def solutions(num: Num) -> list[list[Any]]:
        return [[num(v) for v in p] for p in itertools.product((-1.0, 0.0, 1.0), repeat=n)]

    return solutions


def _zeros_per_point(n: int) -> tuple[int, ...]:
    # f′ = 1.2 at 0 and 0.6 at ±1, coordinate by coordinate: one unstable direction per zero
    return tuple(p.count(0.0) for p in itertools.product((-1.0, 0.0, 1.0), repeat=n))


#: the generalized Hénon map of Baier & Klein, "Maximum hyperchaos in generalized Hénon maps",
#: Phys. Lett. A 151 (1990): (x, y, z) ↦ (a − y² − b z, x, y)
BAIER_KLEIN_A, BAIER_KLEIN_B = 1.76, 0.1


def _baier_klein_step(h: torch.Tensor) -> torch.Tensor:
    x, y, z = h[..., 0], h[..., 1], h[..., 2]
    return torch.stack((BAIER_KLEIN_A - y * y - BAIER_KLEIN_B * z, x, y), dim=-1)


def _baier_klein_fixed(num: Num) -> list[list[Any]]:
    # x = y = z with x² + (1 + b) x − a = 0
    a, b = num(BAIER_KLEIN_A), num(BAIER_KLEIN_B)
    s = _sqrt((1 + b) ** 2 + 4 * a)
    return [[x, x, x] for x in ((-(1 + b) - s) / 2, (-(1 + b) + s) / 2)]


def _logistic32() -> dy.LoopedSystem:
    return dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2))


#: logistic r = 3.2 on [0, 1]: the fixed points 0 (f′ = 3.2) and 1 − 1/r (f′ = −1.2), both
#: repelling
COUNT_LOGISTIC = CountCase("logistic_3.2", _logistic32, (0.0, 1.0), _logistic_fixed, (1, 1))
#: f² on [0, 1]: the two fixed points (multipliers 10.24, 1.44) and the stable 2-cycle
#: {0.5130, 0.7995} (multiplier r²(1 − 2p)(1 − 2q) = 0.16): 4 points, periods 1, 2, 1, 2, one cycle
COUNT_LOGISTIC_2 = CountCase(
    "logistic_3.2_period_2",
    _logistic32,
    (0.0, 1.0),
    _logistic_period2,
    (1, 0, 1, 0),
    period=2,
    least_periods=(1, 2, 1, 2),
    cycles=1,
)
#: Hénon a = 1.4, b = 0.3 on [−2, 2]²: two saddles (eigenvalues −0.092, 3.260 and −1.924, 0.156)
COUNT_HENON = CountCase("henon", _henon, (-2.0, 2.0), _henon_fixed, (1, 1))
#: f² of Hénon: the two fixed points and one saddle 2-cycle (|μ| = 3.010, 0.030)
COUNT_HENON_2 = CountCase(
    "henon_period_2",
    _henon,
    (-2.0, 2.0),
    _henon_period2,
    (1, 1, 1, 1),
    period=2,
    least_periods=(1, 1, 2, 2),
    cycles=1,
)
#: h + 0.2 (h − h³) on [−2, 2]²: 9 points, 4 stable (±1, ±1), 4 saddles, 1 unstable (the origin)
COUNT_BISTABLE_2 = CountCase(
    "bistable_2",
    lambda: dy.LoopedSystem.from_module(dy.models.Bistable(n=2)),
    (-2.0, 2.0),
    _grid(2),
    _zeros_per_point(2),
)
#: the same on [−2, 2]³: 27 points, 8 stable, 12 of index 1, 6 of index 2, 1 unstable
COUNT_BISTABLE_3 = CountCase(
    "bistable_3",
    lambda: dy.LoopedSystem.from_module(dy.models.Bistable(n=3)),
    (-2.0, 2.0),
    _grid(3),
    _zeros_per_point(3),
)
#: Baier-Klein a = 1.76, b = 0.1 on [−3, 3]³: x = −1.9861 (|λ| = 2.006, 1.980, 0.025) and
#: x = 0.8861 (|λ| = 1.332 twice, complex pair, and 0.056): two saddles of index 2
COUNT_BAIER_KLEIN = CountCase(
    "baier_klein_3d",
    lambda: dy.LoopedSystem.from_function(_baier_klein_step, state_shape=(3,), name="Baier-Klein"),
    (-3.0, 3.0),
    _baier_klein_fixed,
    (2, 2),
)
COUNT_CASES = [
    COUNT_LOGISTIC,
    COUNT_LOGISTIC_2,
    COUNT_HENON,
    COUNT_HENON_2,
    COUNT_BISTABLE_2,
    COUNT_BISTABLE_3,
    COUNT_BAIER_KLEIN,
]


# --- language models: the planted model's fixed points (dynamo.llm.PlantedLM) ---
@dataclass(frozen=True)
class PlantedLMCase:
    """``PlantedLM(vocab, dim, fixed_tokens, beta)``: logits ``beta * P E x`` with orthonormal
    embedding rows and a permutation ``P`` fixing ``fixed_tokens`` and swapping the rest in pairs.

    Known answers, derived in closed form (the docstring of PlantedLM) and solved here to float64
    precision by bisection on the scalar equation:

    * token fixed points: exactly ``fixed_tokens``, each with probability
      ``e^beta / (e^beta + vocab - 1)``;
    * stable embedding fixed points: one per fixed token, ``x = E_t a + (1 - a)/(vocab - 1)
      Σ_{s≠t} E_s`` with ``a`` the largest root of ``a = e^{beta a} / (e^{beta a} + (vocab - 1)
      e^{beta b})``, spectral radius ``beta (1 - a² - (vocab-1) b² - (vocab-2) b)``;
    * the uniform mixture ``mean(E)`` is a fixed point with spectral radius ``beta / vocab``.
    """

    vocab: int
    dim: int
    fixed_tokens: tuple[int, ...]
    beta: float

    def model(self, dtype: torch.dtype = F64) -> dy.llm.PlantedLM:
        return dy.llm.PlantedLM(self.vocab, self.dim, self.fixed_tokens, self.beta, dtype=dtype)

    @property
    def token_probability(self) -> float:
        import math

        return 1.0 / (1.0 + (self.vocab - 1) * math.exp(-self.beta))

    def weight(self) -> float:
        """``a``: the largest root, by bisection on ``g(a) = a − softmax weight``."""
        import math

        v, beta = self.vocab, self.beta

        def g(a: float) -> float:
            b = (1 - a) / (v - 1)
            return a - 1.0 / (1.0 + (v - 1) * math.exp(beta * (b - a)))

        lo, hi = 0.5, 1.0  # g(0.5) < 0 for beta > 2 ln(v-1)·…, g(1) > 0
        assert g(lo) < 0 < g(hi)
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
        return 0.5 * (lo + hi)

    def stable_points(self, model: dy.llm.PlantedLM) -> dict[int, torch.Tensor]:
        a = self.weight()
        b = (1 - a) / (self.vocab - 1)
        E = model.get_input_embeddings().weight.to(F64)
        out = {}
        for t in self.fixed_tokens:
            p = torch.full((self.vocab,), b, dtype=F64)
            p[t] = a
            out[t] = p @ E
        return out

    @property
    def stable_radius(self) -> float:
        a = self.weight()
        v = self.vocab
        b = (1 - a) / (v - 1)
        return self.beta * (1 - a * a - (v - 1) * b * b - (v - 2) * b)

    @property
    def uniform_radius(self) -> float:
        return self.beta / self.vocab


PLANTED_LM = PlantedLMCase(vocab=12, dim=16, fixed_tokens=(2, 5, 7, 9), beta=20.0)
#: a milder one: the uniform mixture is the only attractor (beta < vocab)
PLANTED_LM_MILD = PlantedLMCase(vocab=12, dim=16, fixed_tokens=(2, 5, 7, 9), beta=5.0)
