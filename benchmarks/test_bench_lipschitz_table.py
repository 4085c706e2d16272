"""The tightness table of issue 16: certified Lipschitz bound ÷ best lower bound found by attack,
for 24 looped transformer blocks (recall × normalization placement × 1 and 2 layers); the
definitions are in ``benchmarks/lipschitz_table.py``.

Run: ``python -m pytest benchmarks/test_bench_lipschitz_table.py --benchmark-enable -s``.

Only soundness and structure are asserted (every cell certified, every lower bound positive,
confirmed by its secant check and at most the certified bound, as is every larger local value
evaluated); the ratios are reported, not judged.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch
from lipschitz_table import FD_TOLERANCE, compute_table, to_markdown


def test_lipschitz_tightness_table(benchmark) -> None:  # type: ignore[no-untyped-def]
    result: dict[str, list[dict[str, Any]]] = {}

    def run() -> None:
        result["rows"] = compute_table()

    benchmark.pedantic(run, rounds=1, iterations=1)
    rows = result["rows"]
    elapsed = benchmark.stats.stats.min
    one = [r["ratio"] for r in rows if r["layers"] == 1 and r["ratio"] is not None]
    every = [r["ratio"] for r in rows if r["ratio"] is not None]
    benchmark.extra_info.update(
        seconds=elapsed,
        threads=torch.get_num_threads(),
        median_ratio_one_layer=statistics.median(one) if one else None,
        max_ratio_one_layer=max(one) if one else None,
        median_ratio=statistics.median(every) if every else None,
        max_ratio=max(every) if every else None,
    )
    print(f"\n[lipschitz table] 24 cells, {torch.get_num_threads()} threads: {elapsed:.1f} s\n")
    print(to_markdown(rows))  # ends with the median and max ratios (one-layer cells, all cells)

    assert len(rows) == 24
    for r in rows:
        where = f"{r['recall']} / {r['norm']} {r['norm_type']} / {r['layers']} layers"
        assert r["bound"] is not None, f"{where}: no certified bound ({r['bound_error']})"
        assert not math.isnan(r["bound"]), where  # finite or inf
        for key in ("lower", "lower_a", "lower_bc", "lower_exact_max"):
            assert math.isfinite(r[key]) and r[key] > 0, f"{where}: {key} = {r[key]}"
        found = [r["lower_a"], r["lower_bc"]] + ([r["lower_d"]] if r["lower_d"] is not None else [])
        assert r["lower_exact_max"] == max(found), where
        assert r["lower"] <= r["lower_exact_max"], where
        # the lower bound is confirmed by an independent secant quotient
        assert r["fd_check"] is not None, f"{where}: no value confirmed ({r['fd_ladder']})"
        assert abs(r["fd_check"] / r["lower"] - 1) <= FD_TOLERANCE, where
        # soundness: the certified bound covers every local ‖J‖₂ found in the domain
        assert r["bound"] >= r["lower_exact_max"], (
            f"{where}: bound {r['bound']} < local ‖J‖₂ {r['lower_exact_max']}"
        )
