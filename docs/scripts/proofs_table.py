"""The measured tables of the "Proven fixed points" page: certified against sampled basins.

Run ``python docs/scripts/proofs_table.py`` (about ten minutes on one core). For the flip-flop RNN's
8 memories and for the fixed points the default architecture's loop reaches from ``h0 = x`` (two
widths), it prints the proof radius, the proven stability, the certified basin radius (``f`` alone
and, for the flip-flop, the best of ``f`` and ``f^4``) and the sampled radius: the largest radius
on a grid (quarter or half decades) at which every one of the random starts at that distance
converged to the point.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

import dynamo as dy
from verify import build_model, default_spec, draw_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from problems import flipflop


def sampled_radius(
    system: dy.LoopedSystem, h: torch.Tensor, radii: list[float], n_dir: int, seed: int = 0
) -> float:
    """The largest radius of ``radii`` (ascending) at which all ``n_dir`` random starts at that
    distance converge to ``h`` (0 if none)."""
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for s in radii:
        d = torch.randn(n_dir, *h.shape, generator=g, dtype=torch.float64)
        d = d / d.reshape(n_dir, -1).norm(dim=1).reshape(-1, *[1] * h.dim())
        sys_ = system if not system.driven else system.repeat_input(n_dir)
        sol = dy.solve(sys_, h + s * d, max_steps=3000)
        ok = sol.converged & ((sol.state - h).reshape(n_dir, -1).norm(dim=1) < 1e-6)
        if not bool(ok.all()):
            break
        best = s
    return best


def flipflop_rows() -> None:
    ff = flipflop()
    system = ff.system()
    found = dy.find_fixed_points(system, starts=ff.starts(), mode="all", seed=0, prove=False)
    print(
        "| memory | basin share of the task's states | proof radius | basin, f | basin, f or f^4 "
        "| sampled radius (32 starts) |"
    )
    print("|---|---|---|---|---|---|")
    for i, p in enumerate(found.stable()):
        one = dy.prove_fixed_point(system, p.state)
        best = dy.prove_fixed_point(system, p.state, basin_steps=(1, 4))
        assert one.basin is not None and best.basin is not None
        s = sampled_radius(system, p.state, [10 ** (k / 4) for k in range(-20, 4)], 32)
        print(
            f"| {i} | {100 * p.basin_fraction:.1f} % | {one.proof_radius:.3g} | "
            f"{one.basin.radius:.2g} | {best.basin.radius:.2g} (k = {best.basin.steps}) | {s:.3g} |"
        )


def transformer_rows() -> None:
    print(
        "| block | input | proof radius | stability (ρ bound) | certified basin | sampled radius "
        "(16 starts) | seconds |"
    )
    print("|---|---|---|---|---|---|---|")
    for d, T, gain, scale in ((8, 4, 0.1, 8.0), (16, 8, 1.0, 1.0)):
        spec = default_spec()
        arch = spec.architecture.model_copy(update={"d_model": d, "branch_gain": gain})
        inputs = spec.inputs.model_copy(update={"seq_len": T, "scale": scale})
        spec = spec.model_copy(update={"architecture": arch, "inputs": inputs})
        model = build_model(spec, 0).double().requires_grad_(False)
        x = draw_inputs(spec, model, torch.float64)
        system = dy.LoopedSystem.from_module(model, x, dtype=None)
        sol = dy.solve(system, x.clone(), max_steps=3000)
        for i in range(x.shape[0]):
            if not bool(sol.converged[i]):
                print(f"| d={d}, T={T} | {i} | did not converge | | | | |")
                continue
            sub = system.with_input(x[i : i + 1])
            t0 = time.perf_counter()
            q = dy.prove_fixed_point(sub, sol.state[i])
            el = time.perf_counter() - t0
            s = sampled_radius(sub, sol.state[i], [10 ** (k / 2) for k in range(-12, 3)], 16)
            basin = "none" if q.basin is None else f"{q.basin.radius:.2g}"
            print(
                f"| d={d}, T={T}, gain {gain:g}, scale {scale:g} | {i} | {q.proof_radius:.2g} | "
                f"{q.stability} ({q.spectral_radius[1]:.3g}) | {basin} | {s:.3g} | {el:.0f} |"
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    flipflop_rows()
    print()
    transformer_rows()
