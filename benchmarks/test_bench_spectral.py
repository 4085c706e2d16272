"""Spectral norm of a looped transformer's Jacobian: matrix-free Krylov vs dense jacfwd + SVD.

Run: ``python -m pytest benchmarks/test_bench_spectral.py --benchmark-enable -s`` (the dense
baseline at 8192 takes a few minutes on 2 cores). Targets from issue 3: at least 50x faster than
dense at state dimension 4096 with relative agreement 1e-4, and at most 8 forward-pass
equivalents per Krylov step.
"""

from __future__ import annotations

import time

import pytest
import torch

import dynamo as dy


def _system(T: int, d: int = 128) -> tuple[dy.LoopedSystem, torch.Tensor]:
    model = dy.models.LoopedTransformer(d_model=d, n_heads=4, recall="outer", norm="outer", seed=0)
    x = torch.randn(1, T, d, generator=torch.Generator().manual_seed(0))
    system = dy.LoopedSystem.from_module(model, x)
    return system, system.initial_states("input", 1)


def _forward_time(system: dy.LoopedSystem, h: torch.Tensor, rounds: int = 50) -> float:
    z = system.flatten(h)
    with torch.no_grad():
        system.flat_step(z)
        t0 = time.perf_counter()
        for _ in range(rounds):
            system.flat_step(z)
    return (time.perf_counter() - t0) / rounds


@pytest.mark.parametrize("T", [8, 32, 64], ids=["n1024", "n4096", "n8192"])
def test_spectral_norm_matrix_free_vs_dense(benchmark, T: int) -> None:  # type: ignore[no-untyped-def]
    system, h = _system(T)
    n = system.state_dim
    dy.spectral_norm(system, h)  # warm-up (first use of torch.func pays a one-off cost)
    est = benchmark.pedantic(lambda: dy.spectral_norm(system, h), rounds=3, iterations=1)
    t_free = benchmark.stats.stats.min
    steps = int(est.steps[0])
    t_fwd = _forward_time(system, h)

    op = dy.jacobian_operator(system, h)
    v = torch.randn_like(system.flatten(h))
    t0 = time.perf_counter()
    for _ in range(20):
        op.matvec(v)
    t_mv = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    for _ in range(20):
        op.rmatvec(v)
    t_rmv = (time.perf_counter() - t0) / 20

    t0 = time.perf_counter()
    J = dy.jacobian(system, h, mode="forward", chunk_size=256)  # the baseline the issue names
    dense = float(torch.linalg.matrix_norm(J[0], ord=2))
    t_dense = time.perf_counter() - t0
    del J

    rel = abs(float(est.values[0]) - dense) / dense
    per_step = t_free / steps / t_fwd
    benchmark.extra_info.update(
        n=n,
        dense_s=t_dense,
        matrix_free_s=t_free,
        speedup=t_dense / t_free,
        rel_err=rel,
        krylov_steps=steps,
        forward_equiv_per_step=per_step,
        matvec_forward_equiv=t_mv / t_fwd,
        rmatvec_forward_equiv=t_rmv / t_fwd,
    )
    print(
        f"\n[spectral norm n={n}] dense jacfwd+SVD {t_dense:.2f} s, matrix-free {t_free:.3f} s: "
        f"{t_dense / t_free:.0f}x; rel. agreement {rel:.1e}; {steps} Krylov steps, "
        f"{per_step:.1f} forward-pass equivalents per step (set-up and orthogonalization "
        f"included; J v {t_mv / t_fwd:.1f}, Jᵀu {t_rmv / t_fwd:.1f}; forward {t_fwd * 1e3:.2f} ms)"
    )
    assert rel <= 1e-4
    assert per_step <= 8
