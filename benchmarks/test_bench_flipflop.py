"""Peer comparison on the 3-bit flip-flop (Sussillo & Barak 2013): dynamo vs FixedPointFinder's
algorithm on the same trained RNN.

Run: ``python -m pytest benchmarks/test_bench_flipflop.py --benchmark-enable -s``.

The network is the problem bank's (``tests/problems.py``: a tanh RNN trained to hold three bits,
shipped as data), and both searches look for the fixed points of the zero-input map
``h ↦ tanh(W h + b)`` from the same 1024 states of its task trajectories:

* **baseline**: ``FixedPointFinderTorch.find_fixed_points`` with its default hyperparameters,
  re-implemented here from its source (Golub & Sussillo 2018, JOSS 10.21105/joss.01003;
  github.com/mattgolub/fixed-point-finder, ``FixedPointFinderBase.py`` and
  ``FixedPointFinderTorch.py``). In float32 (``dtype``), from the starts plus Gaussian noise of
  σ = 0.5 (the flip-flop example's ``noise_scale``; ``sample_states`` defaults to none), one
  joint Adam run (torch's defaults: β = (0.9, 0.999), ε = 1e-8) on the mean over starts of
  ``q(h) = ½‖f(h) − h‖²``. Its adaptive learning rate starts at ``lr_init`` = 1 and is cut ×0.95
  by ``ReduceLROnPlateau`` on that mean (patience 2, cooldown 0, relative threshold 1e-4); there
  is no gradient-norm clipping. It stops once every start has ``q < tol_q`` (1e-12) or
  ``|Δq| < tol_dq · rate`` (``tol_dq`` = 1e-20), or after ``max_iters`` (5000) steps. Then the
  lowest-q point of each group within 2-norm ``tol_unique`` (1e-3) is kept, whatever its q;
  points farther from the starts' centroid than ``outlier_distance_scale`` (10) times the starts'
  mean distance to it are dropped (``do_exclude_distance_outliers``); no q-outlier rerun
  (``do_rerun_q_outliers`` is off); and the Jacobian is formed and eigendecomposed at every kept
  point (``do_compute_jacobians``, ``do_decompose_jacobians``), which classifies it. The timing
  covers all of that. (FixedPointFinderTF instead drives Adam, ε = 0.01, with
  AdaptiveLearningRate (rate 1, ×1/0.95 after 5 straight improvements, ×0.95 when a mean q is
  the worst of the last 6, at most one change per 5 steps) and AdaptiveGradNormClip (the 95th
  percentile of the last 128 gradient norms); the PyTorch port replaced both by the plateau
  schedule above.)
* **dynamo**: ``find_fixed_points(mode="all", prove=False)`` from the same states (the search
  alone, as FixedPointFinder's is: the proofs dynamo adds by default at this size, about 0.1 s a
  point, are measured in test_bench_proofs.py).

Expected: 27 points, 8 stable (one per memory state) and 12 index-1, 6 index-2 and 1 index-3
saddles.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from problems import flipflop

import dynamo as dy

# FixedPointFinder's defaults (FixedPointFinderBase._default_hps, FixedPointFinderTorch.__init__)
TOL_Q = 1e-12
TOL_DQ = 1e-20
MAX_ITERS = 5000
TOL_UNIQUE = 1e-3
OUTLIER_DISTANCE_SCALE = 10.0
LR_INIT = 1.0
NOISE_SCALE = 0.5  # the flip-flop example's


def _classify(moduli: torch.Tensor) -> tuple[int, dict[int, int]]:
    """Stable count and saddles by index from the eigenvalue moduli, one row per point."""
    index = (moduli > 1).sum(dim=1)
    stable = int((index == 0).sum())
    saddles: dict[int, int] = {}
    for k in index[index > 0].tolist():
        saddles[k] = saddles.get(k, 0) + 1
    return stable, saddles


def _baseline(
    step: Callable[[torch.Tensor], torch.Tensor], starts: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """FixedPointFinderTorch's search: the unique points, their eigenvalue moduli, the steps."""
    noise = NOISE_SCALE * torch.randn(starts.shape, generator=gen, dtype=starts.dtype)
    x0 = (starts + noise).to(torch.float32)
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=LR_INIT)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.95, patience=2, cooldown=0)
    q_prev = torch.full(x.shape[:1], float("nan"))
    for it in range(1, MAX_ITERS + 1):
        q = 0.5 * ((step(x) - x) ** 2).sum(dim=1)  # at the iterate before this step
        q_mean = q.mean()
        opt.zero_grad()
        q_mean.backward()
        opt.step()
        plateau.step(q_mean.item())
        q = q.detach()
        rate = opt.param_groups[0]["lr"]
        done = ((q - q_prev).abs() < TOL_DQ * rate) | (q < TOL_Q)
        if it > 1 and bool(done.all()):
            break
        q_prev = q
    xs = x.detach()
    # unique: each not-yet-grouped point gathers the ungrouped ones within TOL_UNIQUE; keep the
    # member with the least q
    keep: list[int] = []
    grouped = torch.zeros(len(xs), dtype=torch.bool)
    for i in range(len(xs)):
        if grouped[i]:
            continue
        free = (~grouped).nonzero().squeeze(1)
        group = free[(xs[free] - xs[i]).norm(dim=1) <= TOL_UNIQUE]
        keep.append(int(group[q[group].argmin()]))
        if len(group) > 1:
            grouped[group] = True
    pts = xs[keep]
    centre = x0.mean(dim=0)
    scale = (x0 - centre).norm(dim=1).mean()
    pts = pts[(pts - centre).norm(dim=1) / scale < OUTLIER_DISTANCE_SCALE]
    # rows are independent, so the Jacobian of the batch sum gives every point's at once
    jac = torch.autograd.functional.jacobian(lambda h: step(h).sum(dim=0), pts).transpose(0, 1)
    return pts, torch.linalg.eigvals(jac).abs(), it


def test_flipflop_fixed_points_dynamo_vs_fixedpointfinder_style(benchmark) -> None:  # type: ignore[no-untyped-def]
    ff = flipflop()
    system = ff.system()
    starts = ff.starts()

    # FixedPointFinder runs in float32 (its default dtype)
    ff32 = type(ff)(W=ff.W.float(), b=ff.b.float(), U=ff.U.float())
    # the first optimizer a process builds imports torch._dynamo (seconds, once per process, not
    # part of the algorithm), so build one before the clock starts
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])

    # and one small dynamo search, for its lazy imports and first-call set-up
    dy.find_fixed_points(system, starts=starts[:64], mode="all", seed=0, prove=False)

    def peer() -> tuple[torch.Tensor, torch.Tensor, int]:
        return _baseline(ff32.step, starts, torch.Generator().manual_seed(2))

    def ours() -> dy.FixedPointSet:
        return dy.find_fixed_points(system, starts=starts, mode="all", seed=0, prove=False)

    t_base, t_dyn = float("inf"), float("inf")
    for _ in range(5):  # interleaved rounds, best of each
        t0 = time.perf_counter()
        base_pts, base_moduli, base_iters = peer()
        t_base = min(t_base, time.perf_counter() - t0)
        t0 = time.perf_counter()
        found = ours()
        t_dyn = min(t_dyn, time.perf_counter() - t0)
    b_stable, b_saddles = _classify(base_moduli)
    base_pts = base_pts.to(starts.dtype)
    benchmark.pedantic(ours, rounds=1, iterations=1)
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
        baseline_iters=base_iters,
        dynamo_s=t_dyn,
        ratio=t_dyn / t_base,
        baseline_residual=base_res,
        dynamo_residual=dyn_res,
        marginal=len(found.with_stability("marginal")),
        continua=len(found.continua),
    )
    b_idx, d_idx = dict(sorted(b_saddles.items())), dict(sorted(d_saddles.items()))
    n_marg = len(found.with_stability("marginal"))
    print(
        "\n[3-bit flip-flop, the problem bank's trained network]"
        f"\n  FixedPointFinder (torch, defaults): {b_stable} stable, saddles by index {b_idx}, "
        f"{base_iters} Adam steps, {t_base:.2f} s, residual up to {base_res:.1e} (float32)"
        f"\n  dynamo mode='all':                  {d_stable} stable, saddles by index {d_idx}, "
        f"{n_marg} marginal, {len(found.continua)} continua, {t_dyn:.2f} s, residual up to "
        f"{dyn_res:.1e}"
        f"\n  dynamo/FixedPointFinder time = {t_dyn / t_base:.2f}x (best of 5 interleaved rounds "
        "each, one thread; issue 13's goal: <= 0.5x; measured when it was filed: 3.79 s against "
        "FixedPointFinder's 1.04 s, 3.7x)"
        f"\n  iteration from the starts: {found.unseen}"
        f"\n  the random root-finding sample alone: {found.unseen_points}"
        f"\n  fixed-point index sum {found.index_sums[0]}"
    )
    assert d_stable >= b_stable
    assert sum(d_saddles.values()) >= sum(b_saddles.values())
