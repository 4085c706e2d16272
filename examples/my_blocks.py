"""A user's own looped block, for ``examples/user_factory.toml``.

A spec names it as ``architecture.factory = "my_blocks.py:gated_tanh"`` (a file relative to the
spec); ``dynamo certify`` runs this file and calls the factory once per initialisation seed, with
the spec's ``architecture.kwargs``.
"""

from __future__ import annotations

import torch
from torch import nn


class GatedTanhBlock(nn.Module):
    """``h ← (1 − γ) h + γ tanh(W h + U x + b)``, token-wise: a minimal recurrent-depth block
    with input injection (recall).

    ``W`` is rescaled to spectral norm ``gain``, so the map is a contraction in ``h`` with
    Lipschitz constant at most ``1 − γ + γ·gain`` (< 1 when ``gain < 1``).
    """

    def __init__(self, d_model: int, gain: float, gate: float, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(d_model, d_model, generator=gen) / d_model**0.5
        w = w * (gain / torch.linalg.matrix_norm(w, ord=2))
        self.w = nn.Linear(d_model, d_model, bias=True)
        self.u = nn.Linear(d_model, d_model, bias=False)
        with torch.no_grad():
            self.w.weight.copy_(w)
            self.w.bias.copy_(0.1 * torch.randn(d_model, generator=gen))
            self.u.weight.copy_(torch.randn(d_model, d_model, generator=gen) / d_model**0.5)
        self.gate = gate

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (1 - self.gate) * h + self.gate * torch.tanh(self.w(h) + self.u(x))


def gated_tanh(seed: int, d_model: int = 32, gain: float = 0.9, gate: float = 0.5) -> nn.Module:
    """The factory a spec names: one block per initialisation ``seed``."""
    return GatedTanhBlock(d_model, gain, gate, seed)
