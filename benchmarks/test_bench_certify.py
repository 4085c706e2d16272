"""Certification benchmarks: 16 initialisation draws of the default architecture, and
reachability of all draws at once (vmapped, and the default path of the device) against a
Python loop of :func:`dynamo.solve` over draws, timed in the same run.

Run: ``python -m pytest benchmarks/test_bench_certify.py --benchmark-enable -s``.
"""

from __future__ import annotations

import time

import pytest
import torch

import dynamo as dy
import verify


def test_certify_16_seeds_of_the_default_architecture(benchmark) -> None:  # type: ignore[no-untyped-def]
    spec = verify.default_spec()
    seeds = list(range(16))
    result: dict[str, verify.Certificate] = {}

    def run() -> None:
        result["cert"] = verify.certify(spec, seeds=seeds, progress=True)

    benchmark.pedantic(run, rounds=1, iterations=1)
    cert = result["cert"]
    elapsed = benchmark.stats.stats.min
    req = cert.requirements[0]
    benchmark.extra_info.update(
        seconds=elapsed,
        threads=torch.get_num_threads(),
        draws_passing=sum(req.passes),
        reach_path=cert.environment.reach_path,
    )
    print(
        f"\n[certify] default architecture, 16 draws, {torch.get_num_threads()} threads: "
        f"{elapsed:.1f} s ({cert.environment.reach_path} reachability); "
        f"{req.text}: {sum(req.passes)}/16 draws (95% CI [{req.interval[0]:.2f}, "
        f"{req.interval[1]:.2f}])"
    )
    assert len(cert.draws) == 16


@pytest.mark.parametrize("d_model", [16, 64])
def test_vmapped_reachability_vs_a_loop_over_draws(benchmark, d_model: int) -> None:  # type: ignore[no-untyped-def]
    spec = verify.default_spec().model_copy(
        update={
            "architecture": verify.Architecture(d_model=d_model, n_heads=4),  # type: ignore[call-arg]
            "inputs": verify.Inputs(count=8, seq_len=16),  # type: ignore[call-arg]
        }
    )
    models = [verify.build_model(spec, s).double().requires_grad_(False) for s in range(16)]
    x = verify.draw_inputs(spec, models[0], torch.float64)
    base = dy.LoopedSystem.from_module(models[0], x, dtype=None)
    h0 = base.initial_states("input", 4, seed=0)
    xr = base.repeat_input(4).x
    assert xr is not None
    tol = dy.default_tolerance(torch.float64)
    steps = 1000

    def loop() -> list[torch.Tensor]:
        out = []
        for m in models:
            system = dy.LoopedSystem.from_module(m, x, dtype=None).repeat_input(4)
            sol = dy.solve(
                system, h0, method="picard", tol=tol, atol=tol, max_steps=steps, throw=False
            )
            out.append(sol.converged)
        return out

    t0 = time.perf_counter()
    looped = loop()
    t_loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    vm = verify.stacked_reach(models, xr, h0, tol=tol, max_steps=steps, batching="vmap")
    t_vmap = time.perf_counter() - t0
    result: dict[str, dict[str, torch.Tensor]] = {}

    def stacked() -> None:  # the path certify takes on this device ("auto")
        result["out"] = verify.stacked_reach(models, xr, h0, tol=tol, max_steps=steps)

    benchmark.pedantic(stacked, rounds=1, iterations=1)
    t_auto = benchmark.stats.stats.min
    same = torch.equal(torch.stack(looped), result["out"]["converged"]) and torch.equal(
        vm["converged"], result["out"]["converged"]
    )
    benchmark.extra_info.update(
        loop_s=t_loop, vmap_s=t_vmap, auto_s=t_auto, auto_over_loop=t_auto / t_loop, same=same
    )
    print(
        f"\n[reach over 16 draws] d_model={d_model}, {h0.shape[0]} starts each, up to {steps} "
        "steps, "
        f"{torch.get_num_threads()} thread(s): loop of dynamo.solve {t_loop:.2f} s; all draws at "
        f"once: vmap {t_vmap:.2f} s ({t_vmap / t_loop:.2f}x the loop), the default path on this "
        f"device {t_auto:.2f} s ({t_auto / t_loop:.2f}x the loop; goal <= 1.0x); same "
        f"outcomes: {same}"
    )
    assert same
