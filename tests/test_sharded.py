"""Sharded multi-start search (issue 20): ``find_fixed_points(..., executor=…)`` and
``basin_graph(..., executor=…)`` split the starts over an executor's workers and merge them as
the one-process run does: the same outcomes, labels, points, basins and unseen estimates, and
the same bits where the map evaluates each row of a batch independently of the others
(elementwise maps; the transformer with 8 tokens). A plain ``h @ W.T`` is not row-independent
on MKL (the last ``rows mod 4`` rows of a product round differently), so those problems agree
to rounding in the states and exactly in everything counted.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import torch
from problems import (
    BISTABLE_DRIVEN,
    LOGISTIC_DRIVEN,
    MONDEQ_2CYCLE,
    NO_FIXED_POINT,
    ZERO_BRANCH_RMS12,
    flipflop,
)

import dynamo as dy
from dynamo import _fixed_points as fixed_points_module
from dynamo.errors import InvalidArgumentError

F64 = torch.float64


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


@pytest.fixture(scope="module")
def transformer() -> dy.LoopedSystem:
    from verify import default_model

    model = default_model().double().requires_grad_(False)
    x = torch.randn(2, 8, 64, dtype=F64, generator=torch.Generator().manual_seed(0))
    return dy.LoopedSystem.from_module(model, x)


def bistable() -> dy.LoopedSystem:
    return dy.LoopedSystem.from_module(dy.models.Bistable(n=2))


def assert_same(a: dy.FixedPointSet, b: dy.FixedPointSet, *, bitwise: bool = True) -> None:
    """Everything a search reports agrees; the states bit for bit when ``bitwise``."""
    assert a.start_outcomes == b.start_outcomes
    assert a.counts() == b.counts()
    assert len(a.points) == len(b.points)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.steps, b.steps)
    assert a.discovery == b.discovery
    assert a.unseen == b.unseen
    assert a.unseen_points == b.unseen_points
    assert a.index_sums == b.index_sums
    assert [(p.basin_count, p.stability, p.found_by) for p in a.points] == [
        (p.basin_count, p.stability, p.found_by) for p in b.points
    ]
    assert [(c.period, c.basin_count) for c in a.cycles] == [
        (c.period, c.basin_count) for c in b.cycles
    ]
    assert [(c.dimension, c.basin_count) for c in a.continua] == [
        (c.dimension, c.basin_count) for c in b.continua
    ]
    pairs = [(p.state, q.state) for p, q in zip(a.points, b.points, strict=True)]
    pairs += [(c.points, d.points) for c, d in zip(a.cycles, b.cycles, strict=True)]
    if bitwise:
        assert a.dedup_tol == b.dedup_tol
        assert a.dedup_curve == b.dedup_curve
        assert all(torch.equal(s, t) for s, t in pairs)
        assert [c.samples.shape for c in a.continua] == [c.samples.shape for c in b.continua]
        for c, d in zip(a.continua, b.continua, strict=True):
            assert torch.equal(c.samples, d.samples)
    else:
        assert a.dedup_tol == pytest.approx(b.dedup_tol, rel=1e-12)
        for s, t in pairs:
            torch.testing.assert_close(s, t, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- equal to the local run
@pytest.mark.parametrize("shards", [1, 2, 3, 5])
def test_bistable_mode_all_is_bit_identical_for_every_split(
    pool: ThreadPoolExecutor, shards: int
) -> None:
    # 9 points (4 stable, 4 saddles, 1 repeller); 5 shards split 36 starts unevenly (7 or 8)
    system = bistable()
    local = dy.find_fixed_points(system, 36, mode="all")
    sharded = dy.find_fixed_points(system, 36, mode="all", executor=pool, shards=shards)
    assert_same(local, sharded)
    assert sharded.counts()["saddle"] == 4
    assert sharded.shards == shards and local.shards == 1
    assert sharded.to_dict()["shards"] == shards and local.to_dict()["shards"] == 1


def test_default_shards_are_the_executors_workers_and_at_most_the_starts() -> None:
    system = bistable()
    with ThreadPoolExecutor(max_workers=3) as ex:
        assert dy.find_fixed_points(system, 12, executor=ex).shards == 3
        # more shards than starts: one start a piece
        few = dy.find_fixed_points(
            system, starts=torch.ones(2, 2, dtype=F64), executor=ex, shards=7
        )
    assert few.shards == 2
    assert few.counts()["stable"] == 1


@pytest.mark.parametrize("problem", [BISTABLE_DRIVEN, LOGISTIC_DRIVEN], ids=lambda p: p.name)
def test_driven_problems_keep_each_start_with_its_input(pool: ThreadPoolExecutor, problem) -> None:
    # several inputs, the shards cutting across them: every chunk binds its rows' own inputs;
    # the driven logistic map has 2-cycles for three of its six inputs
    system = problem.make()
    starts = problem.starts(system)
    local = dy.find_fixed_points(system, starts=starts, mode="all")
    sharded = dy.find_fixed_points(system, starts=starts, mode="all", executor=pool, shards=3)
    assert_same(local, sharded)
    if problem is LOGISTIC_DRIVEN:
        assert len(sharded.cycles) == 3


def test_transformer_reach_is_bit_identical(
    pool: ThreadPoolExecutor, transformer: dy.LoopedSystem
) -> None:
    # the measured claim behind "bit for bit": 2 inputs x 12 starts, 8 tokens of width 64
    local = dy.find_fixed_points(transformer, 12)
    assert_same(local, dy.find_fixed_points(transformer, 12, executor=pool, shards=3))


def test_transformer_mode_all_is_bit_identical(
    pool: ThreadPoolExecutor, transformer: dy.LoopedSystem
) -> None:
    # 512 state entries: Newton-Krylov's GMRES is batch-wide and stays local, the iteration is
    # sharded
    local = dy.find_fixed_points(transformer, 2, mode="all")
    assert_same(local, dy.find_fixed_points(transformer, 2, mode="all", executor=pool, shards=2))


def test_q_minimisation_runs_in_shards(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # f(h) = h + 1 + exp(h) has no fixed point: every perturbed Newton run fails, and Adam on
    # q = ½‖f(h) − h‖² runs from each; its shards' results equal the one batched run's
    runs: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = fixed_points_module._qmin

    def spy(sub: dy.LoopedSystem, h: torch.Tensor, *, steps: int) -> torch.Tensor:
        out = real(sub, h, steps=steps)
        runs.append((h, out))
        return out

    monkeypatch.setattr(fixed_points_module, "_qmin", spy)
    system = NO_FIXED_POINT.make()
    starts = NO_FIXED_POINT.starts(system)
    local = dy.find_fixed_points(system, starts=starts, mode="all")
    ((h_local, q_local),) = runs
    runs.clear()
    sharded = dy.find_fixed_points(system, starts=starts, mode="all", executor=pool, shards=3)
    assert len(runs) == 3
    runs.sort(key=lambda run: run[0].data_ptr())  # the shards are slices of one tensor
    assert torch.equal(torch.cat([h for h, _ in runs]), h_local)
    assert torch.equal(torch.cat([q for _, q in runs]), q_local)
    assert_same(local, sharded)
    assert sharded.start_outcomes["diverged"] + sharded.start_outcomes["nonfinite"] == 6


def test_flipflop_matmul_map_agrees_to_rounding(pool: ThreadPoolExecutor) -> None:
    # tanh(W h + b): the 27 fixed points of the 3-bit flip-flop, counted the same, states equal
    # to rounding (a 2-D matrix product is not row-independent on MKL)
    ff = flipflop()
    system, starts = ff.system(), ff.starts(256)
    local = dy.find_fixed_points(system, starts=starts, mode="all", prove=False)
    sharded = dy.find_fixed_points(
        system, starts=starts, mode="all", prove=False, executor=pool, shards=3
    )
    assert len(sharded.points) == ff.n_points
    assert_same(local, sharded, bitwise=False)


def test_cycles_and_continua_match(pool: ThreadPoolExecutor) -> None:
    cyc = MONDEQ_2CYCLE.make()
    starts = MONDEQ_2CYCLE.starts(cyc)
    local = dy.find_fixed_points(cyc, starts=starts)
    sharded = dy.find_fixed_points(cyc, starts=starts, executor=pool, shards=3)
    assert [c.period for c in sharded.cycles] == [2]
    assert_same(local, sharded, bitwise=False)

    case = ZERO_BRANCH_RMS12  # the sphere of radius √12 in R^12: one continuum of dimension 11
    cont = case.make()
    local = dy.find_fixed_points(cont, case.n_starts, scale=case.scale)
    sharded = dy.find_fixed_points(cont, case.n_starts, scale=case.scale, executor=pool, shards=2)
    assert [c.dimension for c in sharded.continua] == list(case.dimensions)
    assert_same(local, sharded)


def test_basin_graph_matches(pool: ThreadPoolExecutor) -> None:
    system = bistable()
    local = dy.basin_graph(system, n_starts=48)
    sharded = dy.basin_graph(system, n_starts=48, executor=pool, shards=3)
    assert dict(sharded.graph.nodes(data=True)) == dict(local.graph.nodes(data=True))
    assert sorted(sharded.graph.edges(data=True)) == sorted(local.graph.edges(data=True))
    assert_same(local.fixed_points, sharded.fixed_points)
    assert sharded.fixed_points.shards == 3


def test_process_pool_gets_the_system_as_bytes() -> None:
    # spawn: a fresh interpreter that shares nothing; the system (closures inside) goes by
    # cloudpickle, the solutions come back pickled. Mode "reach": the workers' start-up (torch)
    # is most of the time already
    ctx = multiprocessing.get_context("spawn")
    system = BISTABLE_DRIVEN.make()
    starts = BISTABLE_DRIVEN.starts(system)
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
        sharded = dy.find_fixed_points(system, starts=starts, executor=ex, shards=3)
    assert sharded.shards == 3
    assert_same(dy.find_fixed_points(system, starts=starts), sharded)


# ---------------------------------------------------------------------- bad input
def test_an_executor_must_submit() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^find_fixed_points\(system.*executor must"):
        dy.find_fixed_points(bistable(), 4, executor=object())
    with pytest.raises(InvalidArgumentError, match=r"^basin_graph\(system.*executor must"):
        dy.basin_graph(bistable(), n_starts=4, executor=object())


@pytest.mark.parametrize("shards", [0, -1, True, 2.0, "2"])
def test_shards_must_be_a_positive_int(pool: ThreadPoolExecutor, shards: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"shards=.*shards must be an int >= 1"):
        dy.find_fixed_points(bistable(), 4, executor=pool, shards=shards)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^basin_graph\(system, shards=.*>= 1"):
        dy.basin_graph(bistable(), n_starts=4, executor=pool, shards=shards)  # type: ignore[arg-type]


def test_shards_need_an_executor() -> None:
    with pytest.raises(InvalidArgumentError, match=r"shards=2 needs an executor.*executor="):
        dy.find_fixed_points(bistable(), 4, shards=2)


def test_a_system_that_cannot_be_sent_is_refused_with_what_to_do() -> None:
    # a lock cannot leave its process, by cloudpickle or otherwise
    lock = threading.Lock()

    def step(h: torch.Tensor) -> torch.Tensor:
        with lock:
            return torch.tanh(h)

    system = dy.LoopedSystem.from_function(step, (2,))
    refused = pytest.raises(
        InvalidArgumentError,
        match=r"^find_fixed_points\(system.*cannot be sent to another process.*ThreadPoolExecutor",
    )
    with ProcessPoolExecutor(max_workers=1) as ex, refused:
        dy.find_fixed_points(system, 4, executor=ex)


# ---------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_local_ray_matches_the_one_process_run(transformer: dy.LoopedSystem) -> None:
    pytest.importorskip("ray")
    ex = dy.RayExecutor(num_cpus=1, num_cpus_local=2)
    try:
        reach = dy.find_fixed_points(transformer, 12, executor=ex)
        every = dy.find_fixed_points(bistable(), 36, mode="all", executor=ex, shards=3)
        graph = dy.basin_graph(bistable(), n_starts=48, executor=ex)
    finally:
        ex.shutdown()
    assert reach.shards == 2
    assert_same(dy.find_fixed_points(transformer, 12), reach)
    assert_same(dy.find_fixed_points(bistable(), 36, mode="all"), every)
    local = dy.basin_graph(bistable(), n_starts=48)
    assert sorted(graph.graph.edges(data=True)) == sorted(local.graph.edges(data=True))
