"""Damped Picard iteration ``h ← (1 − α) h + α f(h)`` (Krasnosel'skii–Mann for α < 1).

With ``α = 1`` this is the looped model's own iteration: convergence here is what *reachability*
means. Damping can make a non-contractive map's fixed point attracting (e.g. monDEQ, whose
``Re λ(∂f) < 1`` at the fixed point).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._common import Context, Method

__all__ = ["Picard"]


class Picard(Method):
    """Damped fixed-point iteration; option ``damping`` (α in (0, 1])."""

    name = "picard"
    defaults: ClassVar[dict[str, Any]] = {"damping": 1.0}
    lazy_drop = True  # each start's step is its own map value

    def propose(
        self, st: dict[str, torch.Tensor], z: torch.Tensor, fz: torch.Tensor, ctx: Context
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        a = float(self.options["damping"])
        return (fz if a == 1.0 else z + a * (fz - z)), None, None
