"""Inexact Newton–Krylov on ``g(h) = f(h) − h`` with a backtracking line search.

Each step solves ``(I − J) s = g`` (``J = ∂f/∂h``) by batched GMRES on Jacobian-vector products
(reverse mode twice, see :func:`dynamo.jacobian_operator`; no Jacobian is ever formed) to the
relative accuracy ``η_k`` (Eisenstat–Walker choice 2: ``η_k = 0.9 (‖g_k‖/‖g_{k−1}‖)²``, capped at
``eta_max``), then backtracks ``h + t s`` until ``‖g‖`` drops by the Armijo factor
``1 − 1e-4 t``. A start whose line search fails ``max_backtracks`` times stops as DEGENERATE: at a
local minimum of ``‖f(h) − h‖`` that is not a fixed point, or where ``I − J`` is singular.

References
----------
D. A. Knoll, D. E. Keyes, "Jacobian-free Newton–Krylov methods", J. Comput. Phys. 193, 2004.
S. C. Eisenstat, H. F. Walker, "Choosing the forcing terms in an inexact Newton method", SIAM J.
Sci. Comput. 17(1), 1996.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from ._common import Context, Method
from ._gmres import gmres

__all__ = ["NewtonKrylov"]


def _dense_solve(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a⁻¹ g`` for a batch of small systems, and which of them are singular (a zero pivot).

    On the CPU, NumPy's batched ``solve`` (LAPACK ``gesv`` per matrix) takes about 7 µs per
    24 × 24 system against 9-12 µs for ``torch.linalg.solve_ex``, and dense Newton spends most
    of its time here; it raises when any system of the batch is singular, and then the batch
    goes to ``solve_ex``, which says which ones.
    """
    if a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64):
        try:
            out = np.linalg.solve(a.numpy(), g.numpy()[..., None])[..., 0]
        except np.linalg.LinAlgError:
            pass
        else:
            return torch.from_numpy(out), torch.zeros(g.shape[0], dtype=torch.bool)
    s, info = torch.linalg.solve_ex(a, g)
    return s, info != 0


class NewtonKrylov(Method):
    """Options: ``restart`` (GMRES subspace, 30), ``max_restarts`` (3), ``eta_max`` (0.1),
    ``max_backtracks`` (12), ``dense_limit`` (64).

    Up to ``dense_limit`` state entries, ``I − J`` is formed from ``n`` reverse products (the
    rows of ``J``, all starts and rows at once) and solved exactly by batched LU, by the
    pseudo-inverse where it is singular: for a small state, ``n`` products cost less than GMRES's
    orthogonalisation (the 3-bit flip-flop, ``n = 24``: most of a search's time went to GMRES's
    Gram–Schmidt).
    """

    name = "newton_krylov"
    defaults: ClassVar[dict[str, Any]] = {
        "restart": 30,
        "max_restarts": 3,
        "eta_max": 0.1,
        "max_backtracks": 12,
        "dense_limit": 64,
    }

    def start(self, z: torch.Tensor, fz: torch.Tensor, ctx: Context) -> dict[str, torch.Tensor]:
        r = (fz - z).norm(dim=1)
        return {"r_prev": r, "eta": torch.full_like(r, float(self.options["eta_max"]))}

    def propose(
        self, st: dict[str, torch.Tensor], z: torch.Tensor, fz: torch.Tensor, ctx: Context
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        g = fz - z
        r = g.norm(dim=1)
        eta = st["eta"]  # the dense step is exact: the forcing term is kept for GMRES alone
        n = z.shape[1]
        if n <= int(self.options["dense_limit"]):
            eye = torch.eye(n, dtype=z.dtype, device=z.device)
            a = eye - ctx.jacobian(z)
            s, singular = _dense_solve(a, g)
            if bool(singular.any()):
                # minimum-norm least squares by SVD: lstsq's default CPU driver (gelsy)
                # returns 0 for a singular float32 system, and CUDA offers only full-rank gels
                s[singular] = (torch.linalg.pinv(a[singular]) @ g[singular, :, None])[..., 0]
        else:
            # Eisenstat–Walker choice 2 with the usual safeguard
            eps = torch.finfo(z.dtype).eps
            ratio = r / torch.clamp(st["r_prev"], min=torch.finfo(z.dtype).tiny)
            eta = 0.9 * ratio**2
            eta = torch.maximum(
                eta, torch.where(0.9 * st["eta"] ** 2 > 0.1, 0.9 * st["eta"] ** 2, 0)
            )
            eta = torch.clamp(eta, min=10 * eps, max=float(self.options["eta_max"]))
            jac = ctx.linearize(z)

            def matvec(v: torch.Tensor) -> torch.Tensor:
                return v - jac(v)

            sol = gmres(
                matvec,
                g,
                rtol=eta,
                restart=int(self.options["restart"]),
                max_restarts=int(self.options["max_restarts"]),
            )
            s = sol.x
        finite = torch.isfinite(s).all(dim=1)
        s = torch.where(finite[:, None], s, g)  # a broken linear solve falls back to Picard

        # batched backtracking on ‖g‖; the full step first, for every start at once (near a root
        # Newton's step is taken whole, and then no copy or index is needed)
        z_new = z + s
        f_new = ctx.f(z_new)
        r_new = (f_new - z_new).norm(dim=1)
        accepted = torch.isfinite(r_new) & (r_new <= (1 - 1e-4) * r)
        todo = torch.nonzero(~accepted).flatten()
        if todo.numel():
            t = torch.ones_like(r)
            for _ in range(int(self.options["max_backtracks"])):
                t[todo] *= 0.5
                trial = z[todo] + t[todo, None] * s[todo]
                f_trial = ctx.f(trial, todo)
                r_trial = (f_trial - trial).norm(dim=1)
                good = torch.isfinite(r_trial) & (r_trial <= (1 - 1e-4 * t[todo]) * r[todo])
                idx = todo[good]
                z_new[idx], f_new[idx] = trial[good], f_trial[good]
                accepted[idx] = True
                todo = todo[~good]
                if todo.numel() == 0:
                    break
            # a start whose line search failed keeps its iterate (and stops as degenerate)
            z_new[todo], f_new[todo] = z[todo], fz[todo]
        st["r_prev"], st["eta"] = r, eta
        return z_new, f_new, ~accepted
