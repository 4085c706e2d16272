"""Can the outer RMSNorm's input vanish? A homotopy in the branch gain, for the table's cell
"no recall, outer RMS" (``d = 16``, four heads, ``T = 8``, one layer, seed 0).

The certified bound of that cell charges the final norm ``1/√ε = 1000`` because no rule proves
that its input ``z_i = u + MLP(u)``, ``u = h + Attn(h)``, stays away from 0 on the sphere domain
(every token of norm ``√d``); the best attack never gets ``‖z_i‖`` below 0.94. This script follows
a minimiser of ``‖z_0‖`` (L-BFGS over the token directions, tokens kept at norm ``√d``) from a large
branch gain, where zeros exist, down to the model's own gain 1, warm-starting each gain from the
last, and prints the smallest ``‖z_0‖`` reached at each gain and what the minimiser looks like:
the norm of ``u_0`` (a zero of ``z_0`` with ``u_0 = 0`` means attention cancels the token) and of
the attention output ``a_0 = u_0 − h_0``.

Run ``python docs/scripts/norm_input_homotopy.py`` (about two minutes on one core).
"""

from __future__ import annotations

import math

import torch

import dynamo as dy

F64 = torch.float64
D, T = 16, 8
GAINS = (3.0, 2.0, 1.5, 1.35, 1.3, 1.25, 1.2, 1.1, 1.0)


def model(gain: float) -> dy.models.LoopedTransformer:
    return (
        dy.models.LoopedTransformer(
            d_model=D, n_heads=4, recall="none", norm="outer", seed=0, branch_gain=gain
        )
        .double()
        .requires_grad_(False)
    )


def sphere(p: torch.Tensor) -> torch.Tensor:
    return p / p.norm(dim=-1, keepdim=True) * math.sqrt(D)


def norm_input(m: dy.models.LoopedTransformer, h: torch.Tensor) -> torch.Tensor:
    """``z``: the block without its final norm."""
    for layer in m.layers:
        h = layer(h, None)
    return h


def descend(m: dy.models.LoopedTransformer, p: torch.Tensor) -> torch.Tensor:
    p = p.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [p],
        max_iter=400,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-15,
        tolerance_change=1e-18,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = norm_input(m, sphere(p))[0, 0].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return p.detach()


def main() -> None:
    best: dict[float, tuple[float, float, float]] = {}
    for start in range(3):
        p = torch.randn(1, T, D, generator=torch.Generator().manual_seed(start), dtype=F64)
        for gain in GAINS:
            m = model(gain)
            p = descend(m, p)
            h = sphere(p)
            with torch.no_grad():
                u = m.layers[0].attn(h, None)[0, 0]
                z = float(norm_input(m, h)[0, 0].norm())
            if gain not in best or z < best[gain][0]:
                best[gain] = (z, float(u.norm()), float((u - h[0, 0]).norm()))
    print("| branch gain | min ‖z_0‖ | ‖u_0‖ there | ‖a_0‖ there |")
    print("|---|---|---|---|")
    for gain in GAINS:
        z, u, a = best[gain]
        print(f"| {gain:g} | {z:.3g} | {u:.3g} | {a:.3g} |")


if __name__ == "__main__":
    main()
