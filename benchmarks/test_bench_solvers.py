"""Solver benchmarks, each against a baseline timed in the same run; the ratio is printed.

Run: ``python -m pytest benchmarks --benchmark-enable -s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

import dynamo as dy
import verify


def _best_of(fn: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _slow_tanh() -> dy.LoopedSystem:
    # ‖W‖₂ = 0.95, symmetric W, fixed point near 0 where tanh′ ≈ 1: a contraction at ≈ 0.95
    f = dy.models.ContractiveTanh(
        n=64, lipschitz=0.95, structure="symmetric", input_scale=0.1, seed=0
    )
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return dy.LoopedSystem.from_module(f, x)


def test_anderson_vs_picard_on_a_tanh_contraction(benchmark) -> None:  # type: ignore[no-untyped-def]
    system = _slow_tanh()
    h0 = system.initial_states("normal", 1, seed=1)
    kw = {"tol": 1e-12, "atol": 1e-12}
    picard = dy.solve(system, h0, method="picard", **kw)
    anderson = dy.solve(system, h0, method="anderson", **kw)
    t_picard = _best_of(lambda: dy.solve(system, h0, method="picard", **kw), 5)
    benchmark.pedantic(lambda: dy.solve(system, h0, method="anderson", **kw), rounds=5)
    t_anderson = benchmark.stats.stats.min
    step_ratio = float(picard.steps.double().mean() / anderson.steps.double().mean())
    benchmark.extra_info.update(
        picard_steps_mean=float(picard.steps.double().mean()),
        anderson_steps_mean=float(anderson.steps.double().mean()),
        step_ratio=step_ratio,
        time_ratio=t_picard / t_anderson,
    )
    print(
        f"\n[anderson vs picard] 16 starts, n=64, L=0.95: steps {picard.steps.double().mean():.0f}"
        f" vs {anderson.steps.double().mean():.0f} (Picard/Anderson = {step_ratio:.1f}x); "
        f"time {t_picard * 1e3:.1f} ms vs {t_anderson * 1e3:.1f} ms "
        f"(Picard/Anderson = {t_picard / t_anderson:.1f}x)"
    )
    assert int(anderson.steps.max()) * 3 <= int(picard.steps.min())


def test_batched_starts_vs_a_loop_over_starts(benchmark) -> None:  # type: ignore[no-untyped-def]
    """DESIGN.md pitfall: batching was once slower per start than a loop on 2 cores. Measure."""
    system = verify.default_system(n_inputs=8, seq_len=16).repeat_input(4)
    h0 = system.initial_states("input", 1, seed=0)
    singles = [system.with_input(system.x[i : i + 1]) for i in range(h0.shape[0])]  # type: ignore[index]

    def loop() -> None:
        for i, s in enumerate(singles):
            dy.solve(s, h0[i : i + 1], method="picard")

    t_loop = _best_of(loop, 2)
    benchmark.pedantic(lambda: dy.solve(system, h0, method="picard"), rounds=3)
    t_batch = benchmark.stats.stats.min
    benchmark.extra_info.update(loop_s=t_loop, batched_s=t_batch, speedup=t_loop / t_batch)
    print(
        f"\n[batched vs loop] default architecture, 32 starts, state 16x64: loop {t_loop:.2f} s, "
        f"batched {t_batch:.2f} s (loop/batched = {t_loop / t_batch:.1f}x, "
        f"{torch.get_num_threads()} threads)"
    )
