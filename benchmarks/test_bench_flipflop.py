"""Peer comparison on the 3-bit flip-flop (Sussillo & Barak 2013): dynamo vs a
FixedPointFinder-style search on the same trained RNN.

Run: ``python -m pytest benchmarks/test_bench_flipflop.py --benchmark-enable -s``.

The network is the problem bank's (``tests/problems.py``: a tanh RNN trained to hold three bits,
shipped as data), and both searches look for the fixed points of the zero-input map
``h ↦ tanh(W h + b)`` from the same 1024 states of its task trajectories:

* **baseline** (FixedPointFinder's recipe, written here from its paper and documentation):
  the starts plus Gaussian noise (σ = 0.5), Adam on ``q(h) = ½‖f(h) − h‖²`` (Adam ε = 0.01,
  rate 0.1, up to 5000 steps), keep ``q < 1e-12``, deduplicate at 1e-3, classify by the
  eigenvalues of the Jacobian;
* **dynamo**: ``find_fixed_points(mode="all")`` from the same states.

Expected: 27 points, 8 stable (one per memory state) and 12 index-1, 6 index-2 and 1 index-3
saddles.
"""

from __future__ import annotations

import time

import torch
from problems import flipflop

import dynamo as dy

N_HIDDEN = 24


def _classify(system: dy.LoopedSystem, pts: torch.Tensor) -> tuple[int, dict[int, int]]:
    if pts.shape[0] == 0:
        return 0, {}
    eig = torch.linalg.eigvals(dy.jacobian(system, pts)).abs()
    index = (eig > 1).sum(dim=1)
    stable = int((index == 0).sum())
    saddles: dict[int, int] = {}
    for k in index[index > 0].tolist():
        saddles[k] = saddles.get(k, 0) + 1
    return stable, saddles


def _baseline(system: dy.LoopedSystem, starts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    h = (starts + 0.5 * torch.randn(starts.shape, generator=gen, dtype=starts.dtype)).clone()
    h.requires_grad_(True)
    opt = torch.optim.Adam([h], lr=0.1, eps=0.01)
    for _ in range(5000):
        q = 0.5 * ((system.step(h) - h) ** 2).sum(dim=1)
        if bool((q < 1e-12).all()):
            break
        opt.zero_grad()
        q.sum().backward()
        opt.step()
    with torch.no_grad():
        q = 0.5 * ((system.step(h) - h) ** 2).sum(dim=1)
        good = h[q < 1e-12].detach()
    unique: list[torch.Tensor] = []
    for p in good:
        if all(float((p - u).norm()) > 1e-3 for u in unique):
            unique.append(p)
    return torch.stack(unique) if unique else torch.zeros(0, N_HIDDEN, dtype=starts.dtype)


def test_flipflop_fixed_points_dynamo_vs_fixedpointfinder_style(benchmark) -> None:  # type: ignore[no-untyped-def]
    ff = flipflop()
    system = ff.system()
    starts = ff.starts()

    t0 = time.perf_counter()
    base_pts = _baseline(system, starts, torch.Generator().manual_seed(2))
    t_base = time.perf_counter() - t0
    b_stable, b_saddles = _classify(system, base_pts)

    found = benchmark.pedantic(
        lambda: dy.find_fixed_points(system, starts=starts, mode="all", seed=0),
        rounds=1,
        iterations=1,
    )
    t_dyn = benchmark.stats.stats.min
    with torch.no_grad():
        base_res = (
            float((system.step(base_pts) - base_pts).norm(dim=1).max())
            if len(base_pts)
            else float("nan")
        )
    dyn_res = max(p.residual for p in found.points)
    d_stable = len(found.stable())
    d_saddles: dict[int, int] = {}
    for p in found.with_stability("saddle") + found.with_stability("unstable"):
        d_saddles[p.n_unstable] = d_saddles.get(p.n_unstable, 0) + 1
    benchmark.extra_info.update(
        baseline_stable=b_stable,
        baseline_saddles=b_saddles,
        dynamo_stable=d_stable,
        dynamo_saddles=d_saddles,
        baseline_s=t_base,
        dynamo_s=t_dyn,
        ratio=t_base / t_dyn,
        baseline_residual=base_res,
        dynamo_residual=dyn_res,
        marginal=len(found.with_stability("marginal")),
        continua=len(found.continua),
    )
    b_idx, d_idx = dict(sorted(b_saddles.items())), dict(sorted(d_saddles.items()))
    n_marg = len(found.with_stability("marginal"))
    print(
        "\n[3-bit flip-flop, the problem bank's trained network]"
        f"\n  FixedPointFinder-style: {b_stable} stable, saddles by index {b_idx}, "
        f"{t_base:.1f} s, residual up to {base_res:.1e}"
        f"\n  dynamo mode='all':      {d_stable} stable, saddles by index {d_idx}, "
        f"{n_marg} marginal, {len(found.continua)} continua, {t_dyn:.1f} s, residual up to "
        f"{dyn_res:.1e}  (baseline/dynamo time = {t_base / t_dyn:.1f}x)"
        f"\n  {found.unseen}"
        f"\n  {found.unseen_points}; fixed-point index sum {found.index_sums[0]}"
    )
    assert d_stable >= b_stable
    assert sum(d_saddles.values()) >= sum(b_saddles.values())
