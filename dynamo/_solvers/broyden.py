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
        g = fz - z
        return {
            "U": torch.zeros(n_rows, m, dim, dtype=z.dtype, device=z.device),
            "V": torch.zeros(n_rows, m, dim, dtype=z.dtype, device=z.device),
            "used": torch.zeros(n_rows, dtype=torch.long, device=z.device),
            "z_prev": z,
            "g_prev": g,
            "Hg_prev": -g,  # B⁻¹ g at the previous iterate, with the inverse of that step
            "started": torch.zeros(n_rows, dtype=torch.bool, device=z.device),
        }

    def propose(
        self, st: dict[str, torch.Tensor], z: torch.Tensor, fz: torch.Tensor, ctx: Context
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """One product with ``B⁻¹`` and one with its transpose per step: ``B⁻¹y`` is
        ``B⁻¹g − B⁻¹g_prev`` (the second kept from the last step), and after the rank-one update
        ``B⁻¹g`` changes by ``u (v·g)``, so the step needs no third product. Rows where that
        difference would cancel (``‖y‖ < ½ max(‖g‖, ‖g_prev‖)``) or where the last step fell back
        to Picard take the product ``B⁻¹y`` itself."""
        m = int(self.options["memory"])
        g = fz - z
        U, V, used = st["U"], st["V"], st["used"]  # owned by this solve: updated in place
        k = int(used.max())  # only the pairs in use take part in the products
        Hg = _apply(U[:, :k], V[:, :k], g)
        if bool(st["started"].any()):
            s = z - st["z_prev"]
            y = g - st["g_prev"]
            Hy = Hg - st["Hg_prev"]
            # the difference loses digits when y is small against g (short or damped steps), and
            # is no use after a step that fell back to Picard (B⁻¹g_prev was not finite): there,
            # the product itself
            g_big = torch.maximum(g.norm(dim=1), st["g_prev"].norm(dim=1))
            direct = ~torch.isfinite(Hy).all(dim=1) | (y.norm(dim=1) < 0.5 * g_big)
            if bool(direct.any()):
                rows_d = torch.nonzero(direct).flatten()
                Hy[rows_d] = _apply(U[rows_d, :k], V[rows_d, :k], y[rows_d])
            # restart where the memory is full (before the update, which is then relative to −I):
            # dropping only the oldest pair of a product-form inverse breaks the secant
            # conditions of the later pairs and can diverge
            full = used >= m
            if bool(full.any()):
                U[full] = 0
                V[full] = 0
                used[full] = 0
                Hg = torch.where(full[:, None], -g, Hg)
                Hy = torch.where(full[:, None], -y, Hy)
                k = int(used.max())
            denom = (s * Hy).sum(dim=1)
            ok = st["started"] & (denom.abs() > 1e-12 * s.norm(dim=1) * Hy.norm(dim=1))
            ok = ok & torch.isfinite(denom)
            rows = torch.nonzero(ok).flatten()
            if rows.numel():
                v_new = _apply_t(U[:, :k], V[:, :k], s)  # sᵀB⁻¹ before this update
                u_new = (s - Hy) / torch.where(ok, denom, 1.0)[:, None]
                slot = used[rows]
                U[rows, slot] = u_new[rows]
                V[rows, slot] = v_new[rows]
                used[rows] += 1
                # B⁻¹g under the updated inverse: + u (v·g) on the updated rows
                Hg = torch.where(ok[:, None], Hg + (v_new * g).sum(dim=1)[:, None] * u_new, Hg)
        step = -Hg * float(self.options["damping"])
        # z and g are not changed in place by the loop (it replaces them): no copies needed
        st["z_prev"], st["g_prev"], st["Hg_prev"] = z, g, Hg
        st["started"] = torch.ones_like(st["started"])
        z_next = z + step
        fallback = ~torch.isfinite(z_next).all(dim=1)
        return torch.where(fallback[:, None], z + g, z_next), None, None
