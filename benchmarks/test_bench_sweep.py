"""Past one process: a 12-cell sweep and a 100,000-start reach search, one process against local
Ray (and against plain worker processes), on the same machine, in the same run.

Run: ``python -m pytest benchmarks/test_bench_sweep.py --benchmark-enable -s`` (needs the
``[ray]`` extra). Each figure is wall time; Ray's own start (15-40 s on two cores) is timed apart
from the work, since a cluster is started once and serves many sweeps.

The sweep is the recall x normalization grid of the seed paper (3 x 4 = 12 cells), each cell the
default requirements on a 32-wide block with 2 draws, 4 inputs of 8 tokens and 4 starts each: the
certification a user would run per variant, small enough for the benchmark to take minutes.
Cells are independent, so the ideal speed-up is the number of workers (2 here); the ratio says
how much of it survives process start-up, imports and scheduling.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from verify._sweep import load_sweep, run_sweep

ray = pytest.importorskip("ray")

SWEEP = """
name = "recall x norm (benchmark)"
requirements = ["reachability.converged_fraction >= 1"]

[architecture]
d_model = 32
n_heads = 2

[inputs]
count = 4
seq_len = 8

[draws]
count = 2

[sweep.grid]
"architecture.recall" = ["none", "outer", "internal"]
"architecture.norm" = ["pre", "post", "sandwich", "outer"]
"""


def _timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def test_sweep_one_process_vs_local_ray(benchmark) -> None:  # type: ignore[no-untyped-def]
    root = Path(tempfile.mkdtemp(prefix="bench-sweep"))
    try:
        (root / "sweep.toml").write_text(SWEEP)
        sweep = load_sweep(root / "sweep.toml")
        serial, t_serial = _timed(lambda: run_sweep(sweep, root / "serial"))
        local, t_local = _timed(
            lambda: run_sweep(sweep, root / "local", executor="local", workers=2)
        )
        from dynamo import RayExecutor

        ex = RayExecutor(num_cpus=1, num_cpus_local=2)
        _, t_start = _timed(ex.connect)  # Ray is already running: the sweep joins it
        on_ray = benchmark.pedantic(
            lambda: run_sweep(sweep, root / "ray", executor="ray", address="auto"),
            rounds=1,
            iterations=1,
        )
        t_ray = benchmark.stats.stats.min
        ex.shutdown()
        per_cell = sorted(c.seconds or 0.0 for c in serial.cells)
        assert [c.status for c in on_ray.cells] == [c.status for c in serial.cells]
        assert [c.status for c in local.cells] == [c.status for c in serial.cells]
        benchmark.extra_info.update(
            serial_s=t_serial,
            local_s=t_local,
            ray_s=t_ray,
            ray_start_s=t_start,
            ratio_ray=t_serial / t_ray,
            ratio_local=t_serial / t_local,
            cell_median_s=per_cell[len(per_cell) // 2],
            cpus=os.cpu_count(),
        )
        print(
            f"\n[sweep] 12 cells (recall x norm, d_model 32, 2 draws), {os.cpu_count()} CPUs:"
            f"\n  one process                    {t_serial:6.1f} s (cells: median "
            f"{per_cell[len(per_cell) // 2]:.2f} s, {per_cell[0]:.2f}-{per_cell[-1]:.2f} s)"
            f"\n  2 worker processes (local)     {t_local:6.1f} s ({t_serial / t_local:.2f}x)"
            f"\n  local Ray, 2 CPUs              {t_ray:6.1f} s ({t_serial / t_ray:.2f}x; Ray's "
            f"start, once, {t_start:.1f} s more)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_reach_search_100k_starts_one_process_vs_local_ray(benchmark) -> None:  # type: ignore[no-untyped-def]
    """100,000 starts of a 32-dimensional contractive tanh map (one stable point, every start
    converges in at most about 220 steps): ``find_fixed_points`` alone, against the same search in
    two shards on a process pool and on local Ray, started and warmed up before the clock."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    import dynamo as dy

    model = dy.models.ContractiveTanh(
        n=32, lipschitz=0.95, structure="symmetric", input_scale=0.1, seed=0
    )
    x = torch.randn(1, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    system = dy.LoopedSystem.from_module(model, x)
    n = 100_000
    ray_ex = dy.RayExecutor(num_cpus=1, num_cpus_local=2)
    _, t_start = _timed(ray_ex.connect)
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    try:
        for ex in (ray_ex, pool):  # warm-up: workers started, torch and dynamo imported
            dy.find_fixed_points(system, 64, executor=ex, shards=2)
        alone, t_alone = _timed(lambda: dy.find_fixed_points(system, n))
        in_pool, t_pool = _timed(lambda: dy.find_fixed_points(system, n, executor=pool, shards=2))
        on_ray = benchmark.pedantic(
            lambda: dy.find_fixed_points(system, n, executor=ray_ex, shards=2),
            rounds=1,
            iterations=1,
        )
        t_ray = benchmark.stats.stats.min
    finally:
        pool.shutdown()
        ray_ex.shutdown()
    for other in (in_pool, on_ray):
        assert other.start_outcomes == alone.start_outcomes
        assert torch.equal(other.labels, alone.labels)
        assert len(other.points) == len(alone.points)
    same = all(
        torch.equal(a.state, b.state) for a, b in zip(alone.points, on_ray.points, strict=True)
    )
    benchmark.extra_info.update(
        alone_s=t_alone,
        pool_s=t_pool,
        ray_s=t_ray,
        ray_start_s=t_start,
        ratio_ray=t_alone / t_ray,
        ratio_pool=t_alone / t_pool,
        bit_identical=same,
    )
    print(
        f"\n[search] {n:,} starts, ContractiveTanh(n=32), mode 'reach', {os.cpu_count()} CPUs "
        f"({len(alone.points)} point, {alone.start_outcomes['converged']:,} starts converged, "
        f"steps <= {int(alone.steps.max())}):"
        f"\n  one process                    {t_alone:6.1f} s"
        f"\n  process pool, 2 shards         {t_pool:6.1f} s ({t_alone / t_pool:.2f}x)"
        f"\n  local Ray, 2 shards            {t_ray:6.1f} s ({t_alone / t_ray:.2f}x; Ray's start, "
        f"once, {t_start:.1f} s more)"
        f"\n  same outcomes, labels and points; states bit for bit: {same}"
    )
