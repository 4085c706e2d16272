"""Broyden's ("good") quasi-Newton method on ``g(h) = f(h) − h``, limited memory.

The inverse Jacobian of ``g`` is kept as ``B⁻¹ = −I + Σᵢ uᵢ vᵢᵀ`` (so the first step is a Picard
step) and updated by Sherman–Morrison after each step ``s`` with residual change ``y``::

    B⁻¹ ← B⁻¹ + (s − B⁻¹y) sᵀB⁻¹ / (sᵀB⁻¹y)

When the memory is full it restarts from ``B⁻¹ = −I``. An update whose denominator is tiny relative
to ``‖s‖ ‖B⁻¹y‖`` is skipped. The step is scaled by ``damping``.

References
----------
C. G. Broyden, "A class of methods for solving nonlinear simultaneous equations", Math. Comp. 19,
1965. Bai, Kolter & Koltun use limited-memory Broyden for deep equilibrium models
(arXiv:1909.01377).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._common import Context, Method

__all__ = ["Broyden"]


def _apply(U: torch.Tensor, V: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``B⁻¹ v = −v + Σ uᵢ (vᵢ·v)``."""
    return -v + torch.einsum("akn,ak->an", U, torch.einsum("akn,an->ak", V, v))


def _apply_t(U: torch.Tensor, V: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(B⁻¹)ᵀ v = −v + Σ vᵢ (uᵢ·v)``."""
    return -v + torch.einsum("akn,ak->an", V, torch.einsum("akn,an->ak", U, v))


class Broyden(Method):
    """Options: ``memory`` (pairs kept, default 30), ``damping`` (step scale, default 1)."""

    name = "broyden"
    defaults: ClassVar[dict[str, Any]] = {"memory": 30, "damping": 1.0}

    def start(self, z: torch.Tensor, fz: torch.Tensor, ctx: Context) -> dict[str, torch.Tensor]:
        m = int(self.options["memory"])
        n_rows, dim = z.shape
        return {
            "U": torch.zeros(n_rows, m, dim, dtype=z.dtype, device=z.device),
            "V": torch.zeros(n_rows, m, dim, dtype=z.dtype, device=z.device),
            "used": torch.zeros(n_rows, dtype=torch.long, device=z.device),
            "z_prev": z.clone(),
            "g_prev": fz - z,
            "started": torch.zeros(n_rows, dtype=torch.bool, device=z.device),
        }

    def propose(
        self, st: dict[str, torch.Tensor], z: torch.Tensor, fz: torch.Tensor, ctx: Context
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        m = int(self.options["memory"])
        g = fz - z
        U, V = st["U"], st["V"]
        started = st["started"]
        if bool(started.any()):
            # restart where the memory is full (before the update, which is then relative to −I):
            # dropping only the oldest pair of a product-form inverse breaks the secant
            # conditions of the later pairs and can diverge
            full = st["used"] >= m
            U = torch.where(full[:, None, None], torch.zeros_like(U), U)
            V = torch.where(full[:, None, None], torch.zeros_like(V), V)
            used = torch.where(full, torch.zeros_like(st["used"]), st["used"])
            s = z - st["z_prev"]
            y = g - st["g_prev"]
            Hy = _apply(U, V, y)
            denom = (s * Hy).sum(dim=1)
            ok = started & (denom.abs() > 1e-12 * s.norm(dim=1) * Hy.norm(dim=1))
            ok = ok & torch.isfinite(denom)
            u = (s - Hy) / torch.where(ok, denom, torch.ones_like(denom))[:, None]
            v = _apply_t(U, V, s)
            idx = torch.arange(U.shape[0], device=z.device)
            U_new, V_new = U.clone(), V.clone()
            U_new[idx, used] = u
            V_new[idx, used] = v
            U = torch.where(ok[:, None, None], U_new, U)
            V = torch.where(ok[:, None, None], V_new, V)
            st["U"], st["V"] = U, V
            st["used"] = torch.where(ok, used + 1, used)
        step = -_apply(U, V, g) * float(self.options["damping"])
        st["z_prev"], st["g_prev"] = z.clone(), g.clone()
        st["started"] = torch.ones_like(started)
        z_next = z + step
        fallback = ~torch.isfinite(z_next).all(dim=1)
        z_next = torch.where(fallback[:, None], z + g, z_next)
        return z_next, None, None
