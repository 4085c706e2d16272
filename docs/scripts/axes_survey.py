"""Survey the three stability axes of the reference LoopedTransformer at initialisation.

For recall ∈ {none, outer, internal} × norm ∈ {none, pre, outer} and several seeds, build the
block at its default initialisation, feed it random inputs, and measure reachability,
input-dependence, geometry at the reached points, and the contraction verdicts. Everything is an
estimate on random draws (the contraction verdicts say which evidence they rest on).

Run as a script to print the table (``python docs/scripts/axes_survey.py``); the docs page
"Stability axes" imports :func:`survey` and draws it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import torch

import dynamo as dy

RECALLS = ("none", "outer", "internal")
NORMS = ("none", "pre", "outer")


@dataclass
class Row:
    recall: str
    norm: str
    seed: int
    converged: float
    path_independence: float | None
    dependence: str
    rho: float | None
    norm2: float | None
    contraction: str
    local: str
    seconds: float


def survey(
    seeds: tuple[int, ...] = (0, 1, 2),
    *,
    d_model: int = 16,
    n_tokens: int = 6,
    n_inputs: int = 4,
    input_scale: float = 1.0,
    max_steps: int = 300,
) -> list[Row]:
    """One row per (recall, norm, seed)."""
    rows = []
    for recall, norm, seed in itertools.product(RECALLS, NORMS, seeds):
        t0 = time.perf_counter()
        model = dy.models.LoopedTransformer(
            d_model=d_model, n_heads=2, recall=recall, norm=norm, seed=seed
        )
        gen = torch.Generator().manual_seed(100 + seed)
        x = input_scale * torch.randn(
            n_inputs, n_tokens, d_model, generator=gen, dtype=torch.float64
        )
        system = dy.LoopedSystem.from_module(model, x)
        reach = dy.reachability(
            system, n_starts=4, start="input", scale=0.5, max_steps=max_steps, seed=seed
        )
        dep = dy.input_dependence(system, x, max_steps=max_steps, seed=seed)
        conv = torch.nonzero(dep.converged).flatten()
        rho = norm2 = None
        if conv.numel():
            sub = system.with_input(x[conv]) if system.driven else system
            geo = dy.geometry(
                sub,
                dep.fixed_points[conv],
                basin_samples=4,
                radii=(0.01,),
                max_steps=max_steps,
                seed=seed,
            )
            rho = float(geo.spectral_radius.max())
            norm2 = float(geo.spectral_norm.max())
        verdict = dy.check_contraction(
            system, n_samples=4, ascent_steps=4, n_starts=2, max_steps=max_steps, seed=seed
        )
        rows.append(
            Row(
                recall,
                norm,
                seed,
                reach.converged_fraction,
                reach.path_independence,
                dep.verdict,
                rho,
                norm2,
                str(verdict.verdict),
                str(verdict.local_verdict),
                time.perf_counter() - t0,
            )
        )
    return rows


def markdown(rows: list[Row]) -> str:
    """The table as Markdown."""

    def f(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    lines = [
        "| recall | norm | seed | converged | path indep. | input-dep. | max ρ(J) | max ‖J‖₂ "
        "| contraction | local |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.recall} | {r.norm} | {r.seed} | {100 * r.converged:.0f}% | "
            f"{f(r.path_independence, '.4f')} | {r.dependence} | {f(r.rho, '.3f')} | "
            f"{f(r.norm2, '.3f')} | {r.contraction} | {r.local} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    t = time.perf_counter()
    table = survey()
    print(markdown(table))
    print(f"\n{time.perf_counter() - t:.0f} s")
