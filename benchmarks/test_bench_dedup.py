"""Deduplication of a search's candidates: dynamo's ball cover against all KD-tree pairs.

Run: ``python -m pytest benchmarks/test_bench_dedup.py --benchmark-enable -s``.

A search lands on each fixed point many times, to within Newton's tolerance; the baseline joins
every pair within the radius (``cKDTree.query_pairs`` + connected components), which is
quadratic in the copies of one point. Both give the same partition (tests/test_fixed_points.py
checks exactness against it).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from dynamo._fixed_points import _clusters


def _pairs_baseline(points: np.ndarray, radius: float) -> int:
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    n = len(points)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), (n, n))
    return int(connected_components(graph, directed=False)[0])


def test_dedup_100k_near_identical_states(benchmark) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(27, 24))
    radius = 3.7e-8  # the default at float64: 1e3 · tol · scale
    rows = []
    for n in (2_000, 10_000, 100_000):
        pts = centers[rng.integers(0, 27, n)] + 1e-11 * rng.normal(size=(n, 24))
        groups = np.zeros(n, dtype=np.int64)
        t0 = time.perf_counter()
        ours = len(_clusters(pts, groups, radius))
        t_ours = time.perf_counter() - t0
        if n <= 10_000:  # the baseline's pairs grow as n²/54: 185 M pairs at 100k
            t0 = time.perf_counter()
            base = _pairs_baseline(pts, radius)
            t_base = time.perf_counter() - t0
            assert base == ours == 27
            rows.append(
                f"  {n:>7} states: ball cover {t_ours:.3f} s, all pairs {t_base:.3f} s "
                f"(ratio {t_base / t_ours:.0f}x)"
            )
        else:
            assert ours == 27
            rows.append(f"  {n:>7} states: ball cover {t_ours:.3f} s (all pairs: not run)")
    pts = centers[rng.integers(0, 27, 100_000)] + 1e-11 * rng.normal(size=(100_000, 24))
    benchmark.pedantic(
        lambda: _clusters(pts, np.zeros(100_000, dtype=np.int64), radius), rounds=3, iterations=1
    )
    print("\n[dedup] 27 fixed points, copies with 1e-11 noise, d = 24\n" + "\n".join(rows))
