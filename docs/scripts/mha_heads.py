"""R14 and R16 on a user's block: ``h ↦ h + nn.MultiheadAttention(h, h, h)`` traced by dynamo,
bounded with R11 alone and with the rule, which also reads the heads through ``W_O,h W_v,h``
(R14) and, query, key and value being one node, bounds each head's kernel by R16 on the tokens
``[h; 1]`` (the projections' biases folded in).

``d = 16``, four heads, ``T = 8``, torch's default initialisation (seed 0), on the shells
``[1, 4]`` and ``[1, 8]``. "R11 alone" is the bound with R14's closed form disabled (its value
set to ``inf``, so the rule keeps R11's; R16's kernels go with R14's form); the lower bound is
``dynamo.lipschitz_lower_bound``'s ascent from 16 states (50 steps).

Run ``python docs/scripts/mha_heads.py`` (a few seconds).
"""

from __future__ import annotations

import math

import torch
from torch import nn

import dynamo as dy
from dynamo.kernel import lipschitz_formulas


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return h + self.att(h, h, h, need_weights=False)[0]


def main() -> None:
    torch.manual_seed(0)
    system = dy.LoopedSystem.from_module(Block(), torch.zeros(1, 8, 16, dtype=torch.float64))
    mixed = lipschitz_formulas.attention_heads_mixed
    print("| shell | R11 alone | the rule (R11, R14, R16) | ratio | ascent lower bound |")
    print("|---|---|---|---|---|")
    for r_max in (4.0, 8.0):
        domain = dy.Domain.shell(1.0, r_max)
        rule = dy.lipschitz_upper_bound(system, domain).value
        lipschitz_formulas.attention_heads_mixed = lambda *a, **k: math.inf
        try:
            alone = dy.lipschitz_upper_bound(system, domain).value
        finally:
            lipschitz_formulas.attention_heads_mixed = mixed
        states = domain.sample(system, 16, seed=0)
        low = dy.lipschitz_lower_bound(system, states, method="ascent", steps=50, domain=domain)
        print(
            f"| [1, {r_max:g}] | {alone:.4g} | {rule:.4g} | {alone / rule:.2f} | {low.value:.4g} |"
        )


if __name__ == "__main__":
    main()
