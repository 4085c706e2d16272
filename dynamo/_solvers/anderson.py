"""Anderson acceleration (type II, Walker & Ni 2011) of the damped iteration.

With residuals ``g_i = f(h_i) − h_i`` and the last ``m`` differences ``ΔH``, ``ΔG``::

    γ = argmin ‖g_k − ΔG γ‖² + λ ‖γ‖²        (columns of ΔG scaled to unit norm first)
    h_{k+1} = h_k + β g_k − (ΔH + β ΔG) γ

``β`` is the damping (mixing) parameter and ``λ`` a regularisation relative to the scaled
problem. A proposal that is not finite for a start falls back to the damped Picard step there.

References
----------
H. F. Walker, P. Ni, "Anderson acceleration for fixed-point iterations", SIAM J. Numer. Anal. 49(4),
2011. TorchDEQ uses memory 6 and λ = 1e-4 in float32 (Geng & Kolter, arXiv:2310.18605).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ._common import Context, Method

__all__ = ["Anderson"]


class Anderson(Method):
    """Options: ``damping`` (β, default 1), ``memory`` (m, default 6), ``regularization`` (λ)."""

    name = "anderson"
    defaults: ClassVar[dict[str, Any]] = {"damping": 1.0, "memory": 6, "regularization": 1e-10}

    def start(self, z: torch.Tensor, fz: torch.Tensor, ctx: Context) -> dict[str, torch.Tensor]:
        m = int(self.options["memory"])
        n_rows, dim = z.shape
        self._count = 0
        self._slot = 0
        return {
            "dH": torch.zeros(n_rows, m, dim, dtype=z.dtype, device=z.device),
            "dG": torch.zeros(n_rows, m, dim, dtype=z.dtype, device=z.device),
            "h_prev": z.clone(),
            "g_prev": fz - z,
        }

    def propose(
        self, st: dict[str, torch.Tensor], z: torch.Tensor, fz: torch.Tensor, ctx: Context
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        beta = float(self.options["damping"])
        m = int(self.options["memory"])
        g = fz - z
        if self._count > 0:
            st["dH"][:, self._slot] = z - st["h_prev"]
            st["dG"][:, self._slot] = g - st["g_prev"]
            self._slot = (self._slot + 1) % m
        st["h_prev"], st["g_prev"] = z.clone(), g.clone()
        self._count += 1
        k = min(self._count - 1, m)
        picard = z + beta * g
        if k == 0:
            return picard, None, None
        dH, dG = st["dH"][:, :k], st["dG"][:, :k]
        scale = dG.norm(dim=2)  # (A, k)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        dGs = dG / safe[:, :, None]
        gram = dGs @ dGs.transpose(1, 2)
        lam = float(self.options["regularization"])
        eye = torch.eye(k, dtype=z.dtype, device=z.device)
        rhs = torch.einsum("akn,an->ak", dGs, g)
        sol, info = torch.linalg.solve_ex(gram + lam * eye, rhs[:, :, None])
        gamma = sol[:, :, 0] / safe
        gamma = torch.where(scale > 0, gamma, torch.zeros_like(gamma))
        step = torch.einsum("akn,ak->an", dH + beta * dG, gamma)
        z_next = picard - step
        ok = (info == 0) & torch.isfinite(z_next).all(dim=1)
        return torch.where(ok[:, None], z_next, picard), None, None
