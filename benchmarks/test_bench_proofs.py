"""What a rigorous proof of a fixed point costs, as a multiple of one dense Jacobian evaluation.

Run: ``python -m pytest benchmarks/test_bench_proofs.py --benchmark-enable -s``.

For each system, at fixed points found numerically:

* **baseline**: one dense Jacobian ``∂f/∂h`` at the point (``dynamo.jacobian``, float64, the
  cost of the float eigenvalue check that classified points before);
* **dynamo**: ``prove_fixed_point`` without and with the certified basin: the map traced once,
  then evaluated in arb ball arithmetic (value and pairwise slopes over boxes) for the Krawczyk
  radius search, the enclosure, the rigorous spectrum and, with ``basin=True``, the basin search.

Systems: the problem bank's trained 3-bit flip-flop RNN (24 units, its 27 points), and looped
transformers of the default architecture (outer recall, outer RMSNorm, RoPE, one layer) with
``d_model`` 8 on 4 tokens (32 state entries) and ``d_model`` 16 on 8 tokens (128), at the point
reached from ``h0 = x``. One thread; the best of 3 rounds for the Jacobian, one round for the proofs
(each is seconds and the spread is small next to the ratios).
"""

from __future__ import annotations

import time

import torch
from problems import flipflop

import dynamo as dy
from verify import build_model, default_spec, draw_inputs


def _transformer(d_model: int, seq_len: int, branch_gain: float, scale: float) -> tuple:
    spec = default_spec()
    arch = spec.architecture.model_copy(update={"d_model": d_model, "branch_gain": branch_gain})
    inputs = spec.inputs.model_copy(update={"seq_len": seq_len, "count": 1, "scale": scale})
    spec = spec.model_copy(update={"architecture": arch, "inputs": inputs})
    model = build_model(spec, 0).double().requires_grad_(False)
    x = draw_inputs(spec, model, torch.float64)
    system = dy.LoopedSystem.from_module(model, x, dtype=None)
    sol = dy.solve(system, x.clone(), max_steps=3000)
    assert bool(sol.converged.all()), "the benchmark's transformer did not converge"
    return system, [sol.state[0]]


def _best(fn, rounds: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_proof_cost_per_point_vs_a_dense_jacobian(benchmark) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    ff = flipflop()
    ff_sys = ff.system()
    found = dy.find_fixed_points(ff_sys, starts=ff.starts(), mode="all", seed=0, prove=False)
    cases = [
        ("flip-flop RNN (24)", ff_sys, [p.state for p in found.points]),
        ("transformer d=8, T=4 (32)", *_transformer(8, 4, 0.1, 8.0)),
        ("transformer d=16, T=8 (128)", *_transformer(16, 8, 1.0, 1.0)),
    ]
    dy.prove_fixed_point(ff_sys, found.points[0].state)  # the tracer's one-off imports
    rows = []
    for name, system, points in cases:
        t_jac = sum(_best(lambda h=h, s=system: dy.jacobian(s, h[None])) for h in points) / len(
            points
        )
        t0 = time.perf_counter()
        for h in points:
            dy.prove_fixed_point(system, h, basin=False)
        t_bare = (time.perf_counter() - t0) / len(points)
        t0 = time.perf_counter()
        full = [dy.prove_fixed_point(system, h) for h in points]
        t_full = (time.perf_counter() - t0) / len(points)
        proven = sum(q.proven for q in full)
        basins = [q.basin.radius for q in full if q.basin is not None]
        rows.append((name, len(points), proven, t_jac, t_bare, t_full, basins))
        benchmark.extra_info[name] = {
            "points": len(points),
            "proven": proven,
            "jacobian_s": t_jac,
            "proof_s": t_bare,
            "proof_with_basin_s": t_full,
            "ratio": t_bare / t_jac,
            "ratio_with_basin": t_full / t_jac,
        }
    benchmark.pedantic(lambda: dy.prove_fixed_point(ff_sys, found.points[0].state), rounds=1)
    print("\n[proof cost per point, one thread]")
    print(
        f"  {'system (state entries)':30} {'points':>6} {'proven':>6} {'dense J':>9} "
        f"{'proof':>8} {'ratio':>7} {'+basin':>8} {'ratio':>7}  basin radii"
    )
    for name, n, proven, t_jac, t_bare, t_full, basins in rows:
        radii = f"{min(basins):.2g} to {max(basins):.2g}" if basins else "none"
        print(
            f"  {name:30} {n:6d} {proven:6d} {1e3 * t_jac:7.2f}ms {t_bare:7.3f}s "
            f"{t_bare / t_jac:6.0f}x {t_full:7.3f}s {t_full / t_jac:6.0f}x  {radii}"
        )
    assert all(r[2] == r[1] for r in rows), "a point that was proven before is no longer"
