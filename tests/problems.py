"""A shared bank of looped maps with known answers (SCIENCE.md section 6), used across the tests.

Each :class:`Problem` builds a system and its starts, and knows what is true about it: the exact
fixed points where they have a closed form, whether there is exactly one per input, whether plain
iteration reaches it, and which solver options the problem needs (damping for monDEQ).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
