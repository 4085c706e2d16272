"""Sampled lower bounds on the Lipschitz constant: the largest local ``‖∂f/∂h‖₂`` seen, with its
witness (an estimate of the constant)."""

from __future__ import annotations

import math

import torch

from .._krylov import golub_kahan
from .._linearize import _flat, _prepare
from .._system import LoopedSystem
from .._types import LowerBoundMethod
from .._validate import call_form, check_choice, check_positive_float, check_positive_int
from ..errors import InvalidArgumentError
from ._bounds import Bound, Domain

__all__ = ["lipschitz_lower_bound"]


def lipschitz_lower_bound(
    system: LoopedSystem,
    states: torch.Tensor,
    *,
    method: LowerBoundMethod = "sampled",
    steps: int = 20,
    step_size: float = 0.1,
    domain: Domain | None = None,
    tol: float | None = None,
    seed: int = 0,
) -> Bound:
    """The largest local ``‖∂f/∂h‖₂`` seen: a lower bound on the Lipschitz constant, with witness.

    ``method="sampled"`` evaluates ``‖J‖₂`` (Golub–Kahan–Lanczos, itself a lower bound of the true
    local norm) at each of the given states. ``method="ascent"`` then climbs: from every state it
    takes ``steps`` normalized gradient steps on ``σ_max(J(h)) = uᵀJ(h)v`` (``u, v`` the top
    singular vectors, so the gradient is ``∇_h (uᵀ J(h) v)``), each of relative size
    ``step_size``, projecting every token back into ``domain`` when one is given.

    ``value`` is ``‖J‖₂`` at the witness (up to rounding), so the Lipschitz constant on any set that
    contains a neighbourhood of the witness, or has it on the boundary of its interior (a shell
    with ``r_min < r_max``, all of space), is at least ``value``: a lower bound on those, and an
    estimate of the constant itself. On a set without interior, such as a sphere
    (``r_min == r_max``), ``‖J‖₂`` also counts directions that leave the set and can exceed the
    constant restricted to it.

    Parameters
    ----------
    system : LoopedSystem
    states : torch.Tensor
        ``(N, *state_shape)`` starting states.
    method : {"sampled", "ascent"}
    steps : int
        Ascent steps.
    step_size : float
        Ascent step as a fraction of the state's norm.
    domain : Domain, optional
        Keep the ascent inside it (token norms clamped into ``[r_min, r_max]``).
    tol : float, optional
        Relative residual for each ``‖J‖₂`` (default ``√eps``).
    seed : int

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.zeros(1, 8))
    >>> h = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> low = dy.lipschitz_lower_bound(system, h)
    >>> up = dy.lipschitz_upper_bound(f, dy.Domain())
    >>> bool(low.value <= up.value), low.certified, up.certified
    (True, False, True)
    """
    call = call_form("lipschitz_lower_bound", ["system", "states"], method=method)
    check_choice(call, "method", method, ("sampled", "ascent"))
    check_positive_int(call, "steps", steps)
    check_positive_float(call, "step_size", step_size)
    if domain is not None and not isinstance(domain, Domain):
        raise InvalidArgumentError(f"{call}: domain must be a dynamo.Domain or None")
    system, z, xx = _prepare(call, system, states, None)
    eps = torch.finfo(system.dtype).eps
    rtol = math.sqrt(eps) if tol is None else check_positive_float(call, "tol", tol, upper=1.0)
    fn = _flat(system, xx)

    def norms(zz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from .._linearize import JacobianOperator

        op = JacobianOperator(fn, zz)
        kr = golub_kahan(
            op.matvec,
            op.rmatvec,
            zz.shape[0],
            zz.shape[1],
            zz.dtype,
            zz.device,
            k=1,
            tol=rtol,
            max_steps=min(zz.shape[1], 300),
            seed=seed,
        )
        return kr.values[:, 0], kr.vectors["left"], kr.vectors["right"]

    sig, u, v = norms(z)
    best_sig, best_z = sig.clone(), z.clone()
    evaluated = z.shape[0]
    if method == "ascent":
        from .._compat import jvp

        cur = z.clone()
        for _ in range(steps):

            def objective(
                zz: torch.Tensor, u: torch.Tensor = u, v: torch.Tensor = v
            ) -> torch.Tensor:
                return (u * jvp(fn, (zz,), (v,))[1]).sum()

            grad = torch.func.grad(objective)(cur)
            gn = grad.norm(dim=1, keepdim=True)
            scale = torch.clamp(cur.norm(dim=1, keepdim=True), min=1.0)
            cur = cur + step_size * scale * grad / torch.clamp(gn, min=torch.finfo(z.dtype).tiny)
            if domain is not None:
                cur = _project(system, cur, domain)
            with torch.no_grad():
                sig, u, v = norms(cur)
            evaluated += cur.shape[0]
            better = sig > best_sig
            best_sig = torch.where(better, sig, best_sig)
            best_z = torch.where(better[:, None], cur, best_z)
    i = int(torch.argmax(best_sig))
    return Bound(
        kind="lower",
        value=float(best_sig[i]),
        certified=False,
        method=method,
        domain=domain,
        witness=system.unflatten(best_z[i : i + 1]).detach(),
        n_evaluated=evaluated,
        local_values=best_sig.detach(),
    )


def _project(system: LoopedSystem, z: torch.Tensor, domain: Domain) -> torch.Tensor:
    h = system.unflatten(z)
    tok = h.norm(dim=-1, keepdim=True)
    target = torch.clamp(tok, min=domain.r_min, max=domain.r_max)
    safe = torch.where(tok > 0, tok, torch.ones_like(tok))
    return system.flatten(h * (target / safe))
