"""Fixed-point solvers, one method a file, behind one verb: :func:`solve`."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._results import Outcome, Solution
from .._system import LoopedSystem
from .._types import MethodName
from .._validate import (
    call_form,
    check_choice,
    check_finite_tensor,
    check_positive_float,
    check_positive_int,
    check_solvable_dtype,
    check_state_shape,
)
from ..errors import ConvergenceError, InvalidArgumentError, MapError
from ._common import MapFailure, Method, Settings, row_norm, run
from .anderson import Anderson
from .broyden import Broyden
from .newton_krylov import NewtonKrylov
from .picard import Picard

__all__ = ["METHODS", "Solution", "default_tolerance", "solve"]

METHODS: dict[str, type[Method]] = {
    "picard": Picard,
    "anderson": Anderson,
    "broyden": Broyden,
    "newton_krylov": NewtonKrylov,
}


def default_tolerance(dtype: torch.dtype) -> float:
    """The default relative tolerance ``eps ** (2/3)`` of a dtype.

    3.7e-11 in float64 and 2.4e-5 in float32: well above rounding noise in ``f(h) − h`` for states
    of unit scale, and tight enough that a reported fixed point holds most of the digits available.

    >>> import torch
    >>> from dynamo import default_tolerance
    >>> f"{default_tolerance(torch.float64):.2e}", f"{default_tolerance(torch.float32):.2e}"
    ('3.67e-11', '2.42e-05')
    """
    return float(torch.finfo(dtype).eps ** (2.0 / 3.0))


def solve(
    system: LoopedSystem,
    h0: torch.Tensor,
    *,
    method: MethodName = "anderson",
    tol: float | None = None,
    atol: float | None = None,
    max_steps: int = 1000,
    x: torch.Tensor | None = None,
    divergence: float = 1e6,
    throw: bool = True,
    **options: Any,
) -> Solution:
    """Find fixed points ``h* = f(h*, x)`` from a batch of starts, all at once.

    A start converges when ``‖f(h) − h‖₂ <= atol + tol·‖h‖₂`` (norms over its flattened state).
    Each start keeps its best iterate. A start whose RMS entry ``‖h‖₂/√n`` exceeds
    ``divergence`` stops as DIVERGED (nothing beyond that limit counts as converged: far out a
    relative residual is met trivially and ``h + c`` rounds to ``h``); one whose map value is
    NaN/inf stops as NONFINITE; the other starts go on. Only converged starts hold fixed points
    (:attr:`Solution.fixed_points`).

    Methods
    -------
    ``"picard"``
        Damped iteration ``h ← (1 − α)h + α f(h)``; with ``α = 1`` it is the model's own loop, so
        its convergence is *reachability*. Option ``damping``.
    ``"anderson"``
        Anderson acceleration (type II). Options ``damping``, ``memory`` (6), ``regularization``.
    ``"broyden"``
        Limited-memory good Broyden on ``f(h) − h``. Options ``memory`` (30), ``damping``.
    ``"newton_krylov"``
        Inexact Newton, GMRES on Jacobian-vector products, Armijo backtracking. Options
        ``restart`` (30), ``max_restarts`` (3), ``eta_max`` (0.1), ``max_backtracks`` (12).

    The root-finders (Anderson, Broyden, Newton–Krylov) can converge to *unstable* fixed points
    (saddles, repellers) that the plain iteration never reaches; that is a true fixed point, not
    evidence of reachability. Use ``method="picard"`` to ask what iteration reaches.

    Parameters
    ----------
    system : LoopedSystem
    h0 : torch.Tensor
        Starts, ``(N, *state_shape)``, on the system's device; converted to the system's dtype.
    method : str
        One of the methods above.
    tol, atol : float, optional
        Relative and absolute tolerance; both default to :func:`default_tolerance` of the dtype
        (the state's natural scale is taken as 1).
    max_steps : int
        Iterations per start (>= 1).
    x : torch.Tensor, optional
        Input to use instead of the system's own (batch N or 1, the same per-example shape and
        device; converted to the system's dtype).
    divergence : float
        Largest RMS entry ``‖h‖₂/√n`` of a live iterate (> 1, default 1e6); the starts must lie
        below it.
    throw : bool
        Raise :class:`~dynamo.errors.ConvergenceError` (holding the Solution) when any start did not
        converge; with False the failures are returned inside the Solution.
    **options
        Method options (see above); an unknown name is an error.

    Returns
    -------
    Solution

    Raises
    ------
    InvalidArgumentError, ShapeError, UnsupportedDtypeError
        Before any work, for bad arguments (the message names the argument).
    ConvergenceError
        With ``throw=True`` when a start did not converge.

    References
    ----------
    Walker & Ni (2011) for Anderson; Broyden (1965); Knoll & Keyes (2004) for Newton–Krylov;
    Bai, Kolter & Koltun, arXiv:1909.01377 for their use on deep equilibrium models.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=16, lipschitz=0.95, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 16))
    >>> h0 = torch.zeros(4, 16, dtype=torch.float64)
    >>> sol = dy.solve(system, h0, method="anderson")
    >>> sol.all_converged, bool(sol.residual.max() < 1e-9)
    (True, True)
    >>> bad = dy.solve(dy.LoopedSystem.from_module(dy.models.Logistic(r=3.9)),
    ...                torch.full((2, 1), 0.3, dtype=torch.float64), method="picard",
    ...                max_steps=200, throw=False)
    >>> bad.n_converged, bad.fixed_points.shape[0]
    (0, 0)
    """
    shown: dict[str, Any] = {"method": method}
    for key, val in (("tol", tol), ("atol", atol)):
        if val is not None:
            shown[key] = val
    if max_steps != 1000:
        shown["max_steps"] = max_steps
    shown.update(options)
    call = call_form("solve", ["system", "h0"], **shown)
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(
            f"{call}: system must be a dynamo.LoopedSystem, got {type(system).__name__}; build one "
            "with LoopedSystem.from_module(module, x) or LoopedSystem.from_function(fn, shape)"
        )
    check_choice(call, "method", method, METHODS)
    cls = METHODS[method]
    unknown = sorted(set(options) - set(cls.defaults))
    if unknown:
        valid = ", ".join(sorted(cls.defaults)) or "none"
        raise InvalidArgumentError(
            f"{call}: unknown option {unknown[0]!r} for method {method!r}; its options are: {valid}"
        )
    _check_options(call, options)
    check_positive_int(call, "max_steps", max_steps)
    check_positive_float(call, "divergence", divergence)
    if divergence <= 1:
        raise InvalidArgumentError(f"{call}: divergence must be > 1, got {divergence!r}")
    if not isinstance(throw, bool):
        raise InvalidArgumentError(f"{call}: throw must be True or False, got {throw!r}")
    check_state_shape(call, "h0", h0, system.state_shape)
    check_solvable_dtype(call, "h0", h0.dtype)
    check_solvable_dtype(call, "the system", system.dtype)
    if h0.device != system.device:
        raise InvalidArgumentError(
            f"{call}: h0 is on {h0.device} but the system is on {system.device}; pass "
            "h0.to(system.device)"
        )
    check_finite_tensor(call, "h0", h0)
    rms = row_norm(system.flatten(h0.detach()).double()) / math.sqrt(system.state_dim)
    if bool((rms > divergence).any()):
        raise InvalidArgumentError(
            f"{call}: h0 has states with RMS entry up to {float(rms.max()):.3g}, beyond the "
            f"divergence threshold {divergence:g} (an iterate that large counts as diverged); "
            "rescale the starts or raise divergence="
        )
    dtype = system.dtype
    rtol = default_tolerance(dtype) if tol is None else check_positive_float(call, "tol", tol)
    if atol is None:
        a_tol = default_tolerance(dtype)
    else:
        if (
            isinstance(atol, bool)
            or not isinstance(atol, (int, float))
            or not (math.isfinite(atol) and atol >= 0)
        ):
            raise InvalidArgumentError(f"{call}: atol must be finite and >= 0, got {atol!r}")
        a_tol = float(atol)
    n = h0.shape[0]
    if x is not None:
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(f"{call}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.is_floating_point():
            check_solvable_dtype(call, "x", x.dtype)
    xx = system._input_for(call, n, x, check_values=True) if system.driven else None
    if system.driven and xx is None:
        raise InvalidArgumentError(f"{call}: the system is driven but has no input x")
    z0 = system.flatten(h0.to(dtype=dtype))

    def fmap(z: torch.Tensor, xs: torch.Tensor | None) -> torch.Tensor:
        return system.flatten(system._step_unchecked(system.unflatten(z), xs))

    impl = cls(**options)
    settings = Settings(tol=rtol, atol=a_tol, max_steps=max_steps, divergence=float(divergence))
    try:
        with torch.no_grad():
            raw = run(impl, fmap, z0, xx, settings)
    except MapFailure as fail:
        more = fail.total - len(fail.rows)
        starts = ", ".join(str(r) for r in fail.rows) + (f" and {more} more" if more else "")
        raise MapError(
            f"{call}: {fail.what} raised {type(fail.err).__name__} at iteration {fail.step} "
            f"(evaluating starts {starts}): {fail.err}. The map must accept every state the "
            "solver visits; a state that left the map's domain may call for smaller steps "
            "(damping) or starts closer to the fixed point"
        ) from fail.err
    sol = Solution(
        method=method,
        state=system.unflatten(raw["state"]),
        residual=raw["residual"],
        relative_residual=raw["relative_residual"],
        steps=raw["steps"],
        outcomes=raw["outcomes"],
        residual_trace=raw["residual_trace"],
        f_evals=raw["f_evals"],
        jvp_evals=raw["jvp_evals"],
        tol=rtol,
        atol=a_tol,
        max_steps=max_steps,
        dtype=str(dtype).replace("torch.", ""),
        device=str(system.device),
        options=dict(impl.options),
        last_state=system.unflatten(raw["last_state"]),
    )
    if throw and not sol.all_converged:
        failed = {k: v for k, v in sol.outcome_counts().items() if k != Outcome.CONVERGED.label}
        worst = next(o for o in sol.outcomes if not o.ok)
        listed = ", ".join(f"{k}: {v}" for k, v in failed.items())
        raise ConvergenceError(
            f"{call}: {n - sol.n_converged} of {n} starts did not converge ({listed}); "
            f"{worst.label} means {worst.message}. No fixed point is reported for them; pass "
            "throw=False to inspect the Solution (also attached as err.solution)",
            sol,
        )
    return sol


def _check_options(call: str, options: dict[str, Any]) -> None:
    for key, val in options.items():
        if key == "damping":
            check_positive_float(call, "damping", val, upper=1.0)
        elif key in ("memory", "restart", "max_restarts"):
            check_positive_int(call, key, val)
        elif key == "max_backtracks":
            check_positive_int(call, key, val, minimum=0)
        elif key == "regularization":
            if (
                isinstance(val, bool)
                or not isinstance(val, (int, float))
                or not (math.isfinite(val) and val >= 0)
            ):
                raise InvalidArgumentError(f"{call}: regularization must be finite and >= 0")
        elif key == "eta_max":
            check_positive_float(call, "eta_max", val, upper=1.0, upper_inclusive=False)
