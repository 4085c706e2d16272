"""Broyden against TorchDEQ's Broyden on the same tanh DEQ, one thread, interleaved rounds.

Run: ``pip install torchdeq`` then
``python -m pytest benchmarks/test_bench_broyden_peer.py --benchmark-enable -s``.

Both solve ``z = tanh(W z + U x + b)`` (n = 256, 64 inputs at once, ‖W‖₂ = 0.9) from zeros to
the same relative tolerance; the printout gives each one's iterations and best time, and the
ratio. TorchDEQ (Geng & Kolter) is the standard DEQ toolkit; it is only a peer here.
"""

from __future__ import annotations

import time

import pytest
import torch

import dynamo as dy

torchdeq_broyden = pytest.importorskip("torchdeq.solver.broyden")


def test_broyden_vs_torchdeq(benchmark) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    f = dy.models.ContractiveTanh(n=256, lipschitz=0.9, seed=0)
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    system = dy.LoopedSystem.from_module(f, x)
    model = system.module
    h0 = torch.zeros(64, 256, dtype=torch.float64)

    def peer_map(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(z, x)

    lines = []
    for tol in (1e-6, 1e-10):
        ours_t, peer_t = float("inf"), float("inf")
        for _ in range(5):  # interleaved rounds, best of each
            t0 = time.perf_counter()
            sol = dy.solve(system, h0, method="broyden", tol=tol, atol=tol)
            ours_t = min(ours_t, time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.no_grad():
                z, _, info = torchdeq_broyden.broyden_solver(
                    peer_map, h0.clone(), max_iter=200, tol=tol, stop_mode="rel"
                )
            peer_t = min(peer_t, time.perf_counter() - t0)
        assert sol.all_converged
        ours_it = int(sol.steps.max())
        peer_it = int(info["nstep"].max())
        gap = float((sol.state - z).norm() / sol.state.norm())
        lines.append(
            f"  tol {tol:g}: dynamo {ours_it} iterations {ours_t * 1e3:.1f} ms, TorchDEQ "
            f"{peer_it} iterations {peer_t * 1e3:.1f} ms; dynamo/TorchDEQ time = "
            f"{ours_t / peer_t:.2f}x (solutions agree to {gap:.1e})"
        )
    benchmark.pedantic(
        lambda: dy.solve(system, h0, method="broyden", tol=1e-10, atol=1e-10), rounds=3
    )
    print("\n[broyden] tanh DEQ n = 256, 64 inputs, one thread\n" + "\n".join(lines))
