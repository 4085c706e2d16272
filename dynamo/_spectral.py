"""Matrix-free spectra of Jacobians: batched Krylov methods in torch.

* :func:`spectral_norm`, :func:`singular_values`: Golub–Kahan–Lanczos bidiagonalization with full
  reorthogonalization. Ritz values of the bidiagonal compression never exceed the true singular
  values (in exact arithmetic), so each estimate is a lower bound; the residual
  ``‖Jᵀy − σx‖`` bounds its distance to a true singular value.
* :func:`eigenvalues`, :func:`spectral_radius`: Arnoldi with full reorthogonalization. The top
  eigenvalues of a Jacobian are often a complex pair, which power iteration cannot resolve; Arnoldi
  can. The residual ``‖Jx − θx‖`` is a backward error (θ is an exact eigenvalue of ``J + E`` with
  ``‖E‖`` = residual); for non-normal ``J`` the forward error can be larger.
* :func:`log_norm`: the logarithmic norm ``μ₂(J) = λ_max((J + Jᵀ)/2)`` by symmetric Lanczos; Ritz
  values are lower bounds and the residual bounds the error.

All run on a batch of N states at once, on the system's device, and return a
:class:`SpectralEstimate`: an estimate, never a certificate.

References
----------
G. Golub, W. Kahan, "Calculating the singular values and pseudo-inverse of a matrix", SIAM J.
Numer. Anal. 2(2), 1965. Y. Saad, *Numerical Methods for Large Eigenvalue Problems*, 2nd ed.,
SIAM 2011 (Arnoldi, Lanczos, residual bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ._krylov import KrylovResult, arnoldi, golub_kahan, lanczos_sym
from ._linearize import JacobianOperator, _flat, _prepare
from ._results import Outcome, Trust
from ._system import LoopedSystem
from ._types import ReverseOrForward
from ._validate import call_form, check_positive_float, check_positive_int
from .errors import ConvergenceError, InvalidArgumentError

__all__ = [
    "SpectralEstimate",
    "eigenvalues",
    "log_norm",
    "singular_values",
    "spectral_norm",
    "spectral_radius",
]


@dataclass(frozen=True)
class SpectralEstimate:
    """A sampled spectral quantity of ``J = ∂f/∂h`` at each of N states, with its evidence.

    Attributes
    ----------
    quantity : str
        ``"spectral_norm"``, ``"singular_values"``, ``"eigenvalues"``, ``"spectral_radius"`` or
        ``"log_norm"``.
    values : torch.Tensor
        ``(N,)`` for a scalar quantity, ``(N, k)`` for the top-k values (eigenvalues are complex,
        sorted by decreasing modulus).
    residuals : torch.Tensor
        Same shape, real: ``‖A x − θ x‖`` of each Ritz pair (an error bound for singular values and
        the log norm, a backward error for eigenvalues).
    steps : torch.Tensor
        ``(N,)`` Krylov steps taken.
    outcomes : tuple of Outcome
        Per state: CONVERGED when the residuals of the requested values fell below
        ``tol · scale``; MAX_STEPS_REACHED otherwise (the values are still the best estimates).
    lower_bound : bool
        True when each value is, in exact arithmetic, a lower bound of the true one (singular
        values, log norm); False for eigenvalues (Ritz values of a non-normal matrix can lie
        outside the spectrum).
    vectors : dict
        Ritz vectors of the top value (``"right"``, ``"left"`` for singular values), ``(N, n)``.
    products : dict
        Jacobian products spent: ``{"matvec": .., "rmatvec": ..}`` (per batch; each acts on all
        N states at once).
    tol : float
    method : str
    seed : int
    dtype, device : str
    trust : Trust
        ESTIMATED: Krylov values from a random start (``guaranteed`` is False, kept for
        compatibility).

    Examples
    --------
    :func:`spectral_norm` (and the other spectral verbs) return one:

    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=4, spectral_radius=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 4))
    >>> est = dy.spectral_norm(system, torch.zeros(2, 4, dtype=torch.float64))
    >>> est.quantity, est.method, est.lower_bound, est.all_converged
    ('spectral_norm', 'golub_kahan_lanczos', True, True)
    >>> exact = float(torch.linalg.matrix_norm(lin.A.detach(), ord=2))
    >>> bool(torch.allclose(est.values, torch.tensor([exact, exact], dtype=torch.float64)))
    True
    """

    quantity: str
    values: torch.Tensor
    residuals: torch.Tensor
    steps: torch.Tensor
    outcomes: tuple[Outcome, ...]
    lower_bound: bool
    vectors: dict[str, torch.Tensor]
    products: dict[str, int]
    tol: float
    method: str
    seed: int
    dtype: str
    device: str
    guaranteed: bool = field(default=False, init=False)
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

    @property
    def converged(self) -> torch.Tensor:
        """``(N,)`` bool."""
        return torch.tensor([o is Outcome.CONVERGED for o in self.outcomes], dtype=torch.bool)

    @property
    def all_converged(self) -> bool:
        """True when every state converged."""
        return all(o is Outcome.CONVERGED for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: values as floats (complex as ``[re, im]``), residuals, steps, outcomes.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> lin = dy.models.LinearMap(n=4, spectral_radius=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 4))
        >>> est = dy.spectral_norm(system, torch.zeros(2, 4, dtype=torch.float64))
        >>> d = est.to_dict()
        >>> d["kind"], d["outcomes"], [round(v, 6) for v in d["values"]]
        ('estimate', ['converged', 'converged'], [0.621282, 0.621282])
        """

        def plain(t: torch.Tensor) -> Any:
            if t.is_complex():
                return torch.view_as_real(t.detach().cpu()).tolist()
            return t.detach().cpu().tolist()

        return {
            "quantity": self.quantity,
            "kind": "estimate",
            "trust": self.trust.value,
            "lower_bound": self.lower_bound,
            "values": plain(self.values),
            "residuals": plain(self.residuals),
            "steps": [int(s) for s in self.steps.tolist()],
            "outcomes": [o.label for o in self.outcomes],
            "products": dict(self.products),
            "tol": self.tol,
            "method": self.method,
            "seed": self.seed,
            "dtype": self.dtype,
            "device": self.device,
        }

    def __str__(self) -> str:
        vals = self.values if self.values.ndim == 1 else self.values[:, 0]
        mags = vals.abs() if vals.is_complex() else vals
        n_ok = sum(o.ok for o in self.outcomes)
        bound = "lower-bound estimate" if self.lower_bound else "estimate"
        return (
            f"SpectralEstimate({self.quantity}, {self.method}: {len(self.outcomes)} states, "
            f"{n_ok} converged; top value {float(mags.min()):.6g}..{float(mags.max()):.6g} "
            f"({bound}); max residual {float(self.residuals.max()):.1e}; steps max "
            f"{int(self.steps.max())})"
        )

    def __repr__(self) -> str:
        return str(self)


# ---------------------------------------------------------------------- verbs
def _setup(
    name: str,
    system: Any,
    h: Any,
    x: torch.Tensor | None,
    tol: float | None,
    max_steps: int | None,
    seed: int,
    k: int | None,
    mode: str,
) -> tuple[JacobianOperator, float, int, str]:
    shown: dict[str, Any] = {}
    if k is not None:
        shown["k"] = k
    if tol is not None:
        shown["tol"] = tol
    call = call_form(name, ["system", "h"], **shown)
    system, z, xx = _prepare(call, system, h, x)
    if k is not None:
        check_positive_int(call, "k", k)
        if k > z.shape[1]:
            raise InvalidArgumentError(f"{call}: k={k} exceeds the state dimension {z.shape[1]}")
    eps = torch.finfo(system.dtype).eps
    rtol = math.sqrt(eps) if tol is None else check_positive_float(call, "tol", tol, upper=1.0)
    steps = (
        min(z.shape[1], 300)
        if max_steps is None
        else check_positive_int(call, "max_steps", max_steps)
    )
    if k is not None and steps < k:
        raise InvalidArgumentError(f"{call}: max_steps={steps} must be >= k={k}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"{call}: seed must be an int, got {seed!r}")
    if mode not in ("reverse", "forward"):
        raise InvalidArgumentError(f"{call}: unknown mode {mode!r}; choose 'reverse' or 'forward'")
    op = JacobianOperator(_flat(system, xx), z, mode=mode)
    bad = torch.nonzero(~torch.isfinite(op.value).all(dim=1)).flatten().tolist()
    if bad:
        raise InvalidArgumentError(_not_finite(call, "the map", bad))
    return op, rtol, steps, call


def _not_finite(call: str, what: str, rows: list[int]) -> str:
    shown = ", ".join(str(i) for i in rows[:8]) + (", ..." if len(rows) > 8 else "")
    return (
        f"{call}: {what} is not finite at h[{shown}], so it has no spectrum there; check the "
        "weights (inf or NaN?) and that h lies where the map is defined"
    )


def _finish(
    name: str,
    call: str,
    op: JacobianOperator,
    kr: KrylovResult,
    *,
    scalar: bool,
    lower: bool,
    tol: float,
    method: str,
    seed: int,
    throw: bool,
) -> SpectralEstimate:
    outcomes = tuple(
        Outcome.CONVERGED if bool(c) else Outcome.MAX_STEPS_REACHED for c in kr.converged
    )
    est = SpectralEstimate(
        quantity=name,
        values=kr.values[:, 0] if scalar else kr.values,
        residuals=kr.residuals[:, 0] if scalar else kr.residuals,
        steps=kr.steps,
        outcomes=outcomes,
        lower_bound=lower,
        vectors=kr.vectors,
        products=op.counts,
        tol=tol,
        method=method,
        seed=seed,
        dtype=str(op.dtype).replace("torch.", ""),
        device=str(op.device),
    )
    if throw and not est.all_converged:
        n_bad = sum(not o.ok for o in outcomes)
        raise ConvergenceError(
            f"{call}: {n_bad} of {len(outcomes)} states did not reach residual <= tol·scale within "
            f"{int(kr.steps.max())} Krylov steps; raise max_steps, loosen tol, or pass throw=False "
            "to take the (still valid) estimate",
            est,
        )
    return est


def _estimate(
    name: str,
    system: LoopedSystem,
    h: torch.Tensor,
    *,
    k: int | None,
    x: torch.Tensor | None,
    tol: float | None,
    max_steps: int | None,
    seed: int,
    mode: str,
    throw: bool,
) -> SpectralEstimate:
    """Shared body of the five verbs: validate, build the operator, run the kernel, package."""
    op, rtol, steps, call = _setup(name, system, h, x, tol, max_steps, seed, k, mode)
    # op.shape is (N, n_out, n_in); ∂f/∂h is square, so the Arnoldi and Lanczos kernels apply
    dims = (op.shape[0], op.shape[2], op.dtype, op.device)
    kk = 1 if k is None else k
    try:
        if name in ("spectral_norm", "singular_values"):
            kr = golub_kahan(
                op.matvec,
                op.rmatvec,
                *dims,
                k=kk,
                tol=rtol,
                max_steps=steps,
                seed=seed,
                out_dim=op.shape[1],
            )
            method, lower = "golub_kahan_lanczos", True
        elif name in ("eigenvalues", "spectral_radius"):
            kr = arnoldi(op.matvec, *dims, k=kk, tol=rtol, max_steps=steps, seed=seed)
            method, lower = "arnoldi", False
            if name == "spectral_radius":
                kr = KrylovResult(
                    kr.values[:, :1].abs(), kr.residuals[:, :1], kr.steps, kr.converged, kr.vectors
                )
        else:

            def sym(v: torch.Tensor) -> torch.Tensor:
                return 0.5 * (op.matvec(v) + op.rmatvec(v))

            kr = lanczos_sym(sym, *dims, tol=rtol, max_steps=steps, seed=seed)
            method, lower = "lanczos", True
    except RuntimeError as err:
        # a Krylov basis of NaNs (the Jacobian is not finite) fails in the small SVD or eig
        if not (isinstance(err, torch.linalg.LinAlgError) or "nan" in str(err).lower()):
            raise
        raise InvalidArgumentError(
            _not_finite(call, "its Jacobian", list(range(op.shape[0])))
        ) from err
    bad = torch.nonzero(~torch.isfinite(kr.values).reshape(op.shape[0], -1).all(dim=1))
    if bad.numel():
        raise InvalidArgumentError(_not_finite(call, "its Jacobian", bad.flatten().tolist()))
    scalar = name in ("spectral_norm", "spectral_radius", "log_norm")
    return _finish(
        name,
        call,
        op,
        kr,
        scalar=scalar,
        lower=lower,
        tol=rtol,
        method=method,
        seed=seed,
        throw=throw,
    )


def spectral_norm(
    system: LoopedSystem,
    h: torch.Tensor,
    *,
    x: torch.Tensor | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    mode: ReverseOrForward = "reverse",
    throw: bool = True,
) -> SpectralEstimate:
    """``‖J‖₂ = σ_max(∂f/∂h)`` at each state, matrix-free (Golub–Kahan–Lanczos).

    Each value is a lower bound of the true ``‖J‖₂`` in exact arithmetic (a Ritz value of a
    compression), within its residual of a true singular value. Converged when the residual is
    at most ``tol · σ``; ``tol`` defaults to ``√eps`` of the dtype (1.5e-8 in float64).

    Parameters
    ----------
    system : LoopedSystem
    h : torch.Tensor
        States ``(N, *state_shape)``.
    x : torch.Tensor, optional
        Input instead of the system's own.
    tol : float, optional
        Relative residual tolerance in (0, 1].
    max_steps : int, optional
        Krylov steps (default ``min(n, 300)``); each costs one ``J v`` and one ``Jᵀ u``.
    seed : int
        Seed of the random start vector.
    mode : {"reverse", "forward"}
        How ``J v`` is formed (see :func:`jacobian_operator`).
    throw : bool
        Raise :class:`~dynamo.errors.ConvergenceError` when a state did not converge.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=32, lipschitz=0.9, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.zeros(1, 32))
    >>> est = dy.spectral_norm(system, torch.zeros(1, 32, dtype=torch.float64))
    >>> round(float(est.values[0]), 8)  # at h = 0, J = diag(tanh′(b)) W
    0.89216605
    >>> est.lower_bound, est.guaranteed
    (True, False)
    """
    return _estimate(
        "spectral_norm",
        system,
        h,
        k=None,
        x=x,
        tol=tol,
        max_steps=max_steps,
        seed=seed,
        mode=mode,
        throw=throw,
    )


def singular_values(
    system: LoopedSystem,
    h: torch.Tensor,
    k: int = 6,
    *,
    x: torch.Tensor | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    mode: ReverseOrForward = "reverse",
    throw: bool = True,
) -> SpectralEstimate:
    """The ``k`` largest singular values of ``∂f/∂h`` at each state, ``(N, k)``, descending.

    Same method and guarantees as :func:`spectral_norm` (each is a lower bound of the true one).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=20, spectral_radius=0.9, seed=1)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 20))
    >>> est = dy.singular_values(system, torch.zeros(1, 20, dtype=torch.float64), k=3)
    >>> dense = torch.linalg.svdvals(lin.A.detach())[:3]
    >>> bool(torch.allclose(est.values[0], dense, rtol=1e-8))
    True
    """
    return _estimate(
        "singular_values",
        system,
        h,
        k=k,
        x=x,
        tol=tol,
        max_steps=max_steps,
        seed=seed,
        mode=mode,
        throw=throw,
    )


def eigenvalues(
    system: LoopedSystem,
    h: torch.Tensor,
    k: int = 6,
    *,
    x: torch.Tensor | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    mode: ReverseOrForward = "reverse",
    throw: bool = True,
) -> SpectralEstimate:
    """The ``k`` eigenvalues of ``∂f/∂h`` of largest modulus at each state, complex ``(N, k)``.

    Arnoldi with full reorthogonalization; complex-conjugate pairs are resolved. Converged when
    every requested Ritz pair has residual ``‖Jx − θx‖ <= tol·|θ₁|``.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=12, spectral_radius=0.9, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 12))
    >>> est = dy.eigenvalues(system, torch.zeros(1, 12, dtype=torch.float64), k=2)
    >>> [round(v, 6) for v in est.values[0].abs().tolist()]  # a complex pair
    [0.9, 0.9]
    """
    return _estimate(
        "eigenvalues",
        system,
        h,
        k=k,
        x=x,
        tol=tol,
        max_steps=max_steps,
        seed=seed,
        mode=mode,
        throw=throw,
    )


def spectral_radius(
    system: LoopedSystem,
    h: torch.Tensor,
    *,
    k: int = 2,
    x: torch.Tensor | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    mode: ReverseOrForward = "reverse",
    throw: bool = True,
) -> SpectralEstimate:
    """``ρ(∂f/∂h) = max |λ|`` at each state, ``(N,)`` (Arnoldi on the top ``k`` eigenvalues).

    ``k = 2`` by default so that a complex-conjugate top pair converges as a pair. The local
    convergence rate of iteration near a fixed point is ρ (Ostrowski).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=12, spectral_radius=0.9, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 12))
    >>> rho = dy.spectral_radius(system, torch.zeros(1, 12, dtype=torch.float64))
    >>> round(float(rho.values[0]), 8)
    0.9
    """
    return _estimate(
        "spectral_radius",
        system,
        h,
        k=k,
        x=x,
        tol=tol,
        max_steps=max_steps,
        seed=seed,
        mode=mode,
        throw=throw,
    )


def log_norm(
    system: LoopedSystem,
    h: torch.Tensor,
    *,
    x: torch.Tensor | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    mode: ReverseOrForward = "reverse",
    throw: bool = True,
) -> SpectralEstimate:
    """The logarithmic norm ``μ₂(J) = λ_max((J + Jᵀ)/2)`` of ``J = ∂f/∂h`` at each state.

    ``μ₂(J) < 0`` means the flow ``ḣ = F(h)`` with Jacobian ``J`` contracts in the Euclidean norm;
    a residual step ``h + ηF(h)`` contracts only if ``μ₂(DF) < 0`` and η is small enough. Symmetric
    Lanczos on ``v ↦ (Jv + Jᵀv)/2``: the value is a lower bound of μ₂, within its residual.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=10, spectral_radius=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 10))
    >>> est = dy.log_norm(system, torch.zeros(1, 10, dtype=torch.float64))
    >>> A = lin.A.detach()
    >>> bool(abs(est.values[0] - torch.linalg.eigvalsh((A + A.T) / 2)[-1]) < 1e-8)
    True
    """
    return _estimate(
        "log_norm",
        system,
        h,
        k=None,
        x=x,
        tol=tol,
        max_steps=max_steps,
        seed=seed,
        mode=mode,
        throw=throw,
    )
