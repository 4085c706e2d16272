"""The three stability axes of a looped block: reachability, input-dependence, geometry.

After Labovich, "Stability and Generalization in Looped Transformers" (arXiv:2604.15259; the
operational definitions here are reconstructed from its abstract, see the docs): an architecture
generalises when its fixed points are *reachable* by iteration, *depend on the input* smoothly,
and are *well conditioned*; recall plus outer normalization is what gets all three.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._fixed_points import FixedPointSet, find_fixed_points
from ._linearize import JacobianOperator, _flat, jacobian
from ._solvers import default_tolerance, solve
from ._solvers._gmres import gmres
from ._spectral import _arnoldi, _golub_kahan
from ._stats import clopper_pearson
from ._system import LoopedSystem
from ._validate import (
    call_form,
    check_finite_tensor,
    check_positive_int,
    check_state_shape,
)
from .errors import InvalidArgumentError, ShapeError

__all__ = [
    "AxesReport",
    "Geometry",
    "InputDependence",
    "Reachability",
    "geometry",
    "input_dependence",
    "reachability",
    "stability_axes",
]


def _q(values: torch.Tensor) -> dict[str, float | None]:
    if values.numel() == 0:
        return {"min": None, "median": None, "p90": None, "max": None}
    v = values.double()
    return {
        "min": float(v.min()),
        "median": float(v.median()),
        "p90": float(torch.quantile(v, 0.9)),
        "max": float(v.max()),
    }


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------- reachability
@dataclass(frozen=True)
class Reachability:
    """Does plain iteration reach a fixed point, how fast, where, and from every start alike?

    Attributes
    ----------
    converged_fraction : float
        Starts whose iteration converged (to an isolated point or onto a continuum).
    interval : (float, float)
        Its 95% Clopper–Pearson interval.
    steps : dict
        Quantiles (min, median, p90, max) of the iterations to tolerance of converged starts.
    basin_fractions : list of float
        Per attractor (points, continua, stable cycles) reached by iteration, the share of its
        input's starts.
    path_independence : float or None
        Mean cosine similarity of the limits reached from different starts on the same input
        (Anil et al.'s asymptotic alignment); 1 when every start of an input reaches one point.
        None with fewer than two converged starts on every input.
    path_independence_min : float or None
        The worst pair.
    max_spectral_radius : float or None
        Largest ρ(∂f/∂h) at a reached point (< 1: every reached point attracts locally).
    fixed_points : FixedPointSet
        The search behind the numbers.

    Examples
    --------
    :func:`reachability` returns one:

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_module(f, xs)
    >>> r = dy.reachability(system, n_starts=4)
    >>> r.converged_fraction, r.basin_fractions, r.steps["median"]
    (1.0, [1.0, 1.0], 16.0)
    """

    converged_fraction: float
    interval: tuple[float, float]
    steps: dict[str, float | None]
    basin_fractions: list[float]
    path_independence: float | None
    path_independence_min: float | None
    max_spectral_radius: float | None
    fixed_points: FixedPointSet
    kind: str = field(default="estimate", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
        >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> system = dy.LoopedSystem.from_module(f, xs)
        >>> d = dy.reachability(system, n_starts=4).to_dict()
        >>> d["kind"], d["converged_fraction"], d["start_outcomes"]["converged"]
        ('estimate', 1.0, 8)
        """
        return {
            "kind": self.kind,
            "converged_fraction": self.converged_fraction,
            "converged_fraction_ci95": list(self.interval),
            "steps": dict(self.steps),
            "basin_fractions": list(self.basin_fractions),
            "path_independence": self.path_independence,
            "path_independence_min": self.path_independence_min,
            "max_spectral_radius": self.max_spectral_radius,
            "start_outcomes": dict(self.fixed_points.start_outcomes),
        }

    def __str__(self) -> str:
        lo, hi = self.interval
        pi = "n/a" if self.path_independence is None else f"{self.path_independence:.6f}"
        med = self.steps["median"]
        steps = "n/a" if med is None else f"median {med:.0f}, max {self.steps['max']:.0f}"
        return (
            f"reachability: {100 * self.converged_fraction:.1f}% converged (95% CI "
            f"{100 * lo:.1f}-{100 * hi:.1f}%), steps {steps}, path independence {pi}"
        )


def reachability(
    system: LoopedSystem,
    starts: torch.Tensor | None = None,
    *,
    n_starts: int = 16,
    start: str = "normal",
    scale: float = 1.0,
    tol: float | None = None,
    max_steps: int = 1000,
    seed: int = 0,
) -> Reachability:
    """Iterate ``system`` from many starts per input and measure whether it settles.

    A thin, focused view of :func:`find_fixed_points` in ``mode="reach"``: converged fraction with
    its exact interval, the distribution of steps to tolerance, basin fractions, path independence
    (cosine similarity of limits from different starts on one input), and the largest spectral
    radius at a reached point.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    >>> x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    >>> system = dy.LoopedSystem.from_module(f, x)
    >>> r = dy.reachability(system, n_starts=4)
    >>> r.converged_fraction, round(r.path_independence, 12)
    (1.0, 1.0)
    """
    found = find_fixed_points(
        system,
        n_starts,
        starts=starts,
        mode="reach",
        start=start,
        scale=scale,
        tol=tol,
        max_steps=max_steps,
        seed=seed,
    )
    outcomes = found.start_outcomes
    total = found.n_inputs * found.starts_per_input
    conv = outcomes["converged"] + outcomes["continuum"]
    conv_mask = torch.tensor([int(lab) >= 0 for lab in found.labels.tolist()], dtype=torch.bool) & (
        found.steps < max_steps
    )
    basins = (
        [p.basin_fraction for p in found.points if p.basin_count]
        + [c.basin_fraction for c in found.continua if c.basin_count]
        + [c.basin_fraction for c in found.cycles if c.basin_count and c.stability == "stable"]
    )
    # limits per input: the attractor of each converged start (a point's state; for a start on
    # a continuum, its own limit is not kept, so it counts as aligned with its continuum)
    cos_all: list[float] = []
    by_label = {}
    for i, p in enumerate(q for q in found.points if q.basin_count):
        by_label[i] = p.state
    per = found.starts_per_input
    for b in range(found.n_inputs):
        labels = found.labels[b * per : (b + 1) * per].tolist()
        states = [by_label[lab] for lab in labels if lab in by_label]
        for i in range(len(states)):
            for j in range(i + 1, len(states)):
                a, c = states[i].reshape(-1), states[j].reshape(-1)
                denom = float(a.norm() * c.norm())
                cos_all.append(float(a @ c) / denom if denom > 0 else 1.0)
    rho = [p.spectral_radius for p in found.points if p.basin_count]
    return Reachability(
        converged_fraction=conv / total,
        interval=clopper_pearson(conv, total),
        steps=_q(found.steps[conv_mask]),
        basin_fractions=basins,
        path_independence=sum(cos_all) / len(cos_all) if cos_all else None,
        path_independence_min=min(cos_all) if cos_all else None,
        max_spectral_radius=max(rho) if rho else None,
        fixed_points=found,
    )


# ---------------------------------------------------------------------- IFT machinery
class _Sensitivity:
    """``S = dh*/dx = (I − ∂_h f)⁻¹ ∂_x f`` at fixed points, matrix-free, batched over states."""

    def __init__(self, system: LoopedSystem, h_star: torch.Tensor, x: torch.Tensor) -> None:
        self.system = system
        zf = system.flatten(h_star.detach())
        self.x_shape = tuple(x.shape[1:])
        self.Jh = JacobianOperator(_flat(system, x), zf)

        def fx(xf: torch.Tensor) -> torch.Tensor:
            xs = xf.reshape(xf.shape[0], *self.x_shape)
            return system.flatten(system._step_unchecked(system.unflatten(zf), xs))

        self.Jx = JacobianOperator(fx, x.reshape(x.shape[0], -1).to(system.dtype))
        self.n_in = int(self.Jx.shape[2])
        self.n = int(self.Jh.shape[1])
        self.tol = 1e-12 if system.dtype == torch.float64 else 1e-6
        self.solved = True

    def _solve(self, b: torch.Tensor, transpose: bool) -> torch.Tensor:
        op = self.Jh.rmatvec if transpose else self.Jh.matvec
        out = gmres(lambda v: v - op(v), b, rtol=self.tol, restart=min(60, self.n), max_restarts=20)
        self.solved = self.solved and bool(out.converged.all())
        return out.x

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``S v`` for ``v`` of shape ``(N, n_in)``."""
        return self._solve(self.Jx.matvec(v), transpose=False)

    def apply_t(self, u: torch.Tensor) -> torch.Tensor:
        """``Sᵀ u`` for ``u`` of shape ``(N, n)``."""
        return self.Jx.rmatvec(self._solve(u, transpose=True))

    def norm(self, seed: int, max_steps: int = 40) -> torch.Tensor:
        """``‖S‖₂`` to about 4 digits, or the best lower estimate after ``max_steps`` Krylov steps
        (a summary; each step costs two GMRES solves)."""
        kr = _golub_kahan(
            self.apply,
            self.apply_t,
            self.Jh.shape[0],
            self.n_in,
            self.Jh.dtype,
            self.Jh.device,
            k=1,
            tol=1e-4,
            max_steps=min(self.n_in, max_steps),
            seed=seed,
        )
        return kr.values[:, 0]

    def rank(self, probes: int, seed: int) -> torch.Tensor:
        """Numerical rank of ``S Ω`` for ``probes`` random directions: a lower bound of rank S."""
        gen = torch.Generator(device=self.Jh.device).manual_seed(seed)
        cols = []
        for _ in range(probes):
            v = torch.randn(
                self.Jh.shape[0],
                self.n_in,
                generator=gen,
                dtype=self.Jh.dtype,
                device=self.Jh.device,
            )
            cols.append(self.apply(v))
        sketch = torch.stack(cols, dim=2)  # (N, n, probes)
        sv = torch.linalg.svdvals(sketch)
        thresh = 1e-8 * torch.clamp(sv[:, :1], min=torch.finfo(sv.dtype).tiny)
        return (sv > thresh).sum(dim=1)


def ift_sensitivity(
    system: LoopedSystem, h_star: torch.Tensor, v: torch.Tensor, *, x: torch.Tensor | None = None
) -> torch.Tensor:
    """``(dh*/dx) v = (I − ∂_h f)⁻¹ (∂_x f) v`` at fixed points, by GMRES on Jacobian products.

    The implicit function theorem gives the derivative of the fixed point with respect to the
    input wherever ``1 ∉ spec(∂_h f)``; nothing is differentiated through the iteration.

    Parameters
    ----------
    system : LoopedSystem
        A driven system.
    h_star : torch.Tensor
        ``(N, *state_shape)`` fixed points.
    v : torch.Tensor
        ``(N, *input_shape)`` input directions.
    x : torch.Tensor, optional
        Inputs (default: the system's own).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=4, spectral_radius=0.5, seed=0)
    >>> x = torch.ones(1, 4, dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_module(lin, x)
    >>> h = lin.fixed_point(x)
    >>> s = dy.ift_sensitivity(system, h, torch.eye(4, dtype=torch.float64)[:1])
    >>> eye = torch.eye(4, dtype=torch.float64)
    >>> exact = torch.linalg.solve(eye - lin.A.detach(), lin.B.detach())
    >>> bool(torch.allclose(s[0], exact[:, 0]))
    True
    """
    call = call_form("ift_sensitivity", ["system", "h_star", "v"])
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    if not system.driven:
        raise InvalidArgumentError(
            f"{call}: the system is autonomous (no recall): its fixed points do not depend on x "
            "through f, so dh*/dx = 0 by construction"
        )
    check_state_shape(call, "h_star", h_star, system.state_shape)
    xx = system._input_for(call, h_star.shape[0], x, check_values=True)
    assert xx is not None
    if tuple(v.shape) != tuple(xx.shape):
        raise ShapeError(f"{call}: v has shape {tuple(v.shape)}, the inputs {tuple(xx.shape)}")
    sens = _Sensitivity(system, h_star.to(system.dtype), xx.to(system.dtype))
    out = sens.apply(v.reshape(v.shape[0], -1).to(system.dtype))
    if not sens.solved:
        raise InvalidArgumentError(
            f"{call}: GMRES on (I − ∂f/∂h) s = ∂f/∂x v did not converge: 1 is (nearly) an "
            "eigenvalue of ∂f/∂h at some state, where the implicit function theorem does not apply"
        )
    return system.unflatten(out)


# ---------------------------------------------------------------------- input dependence
VERDICTS = ("none", "weak", "strong", "undetermined")


@dataclass(frozen=True)
class InputDependence:
    """Does the reached fixed point move with the input, and smoothly?

    Attributes
    ----------
    verdict : {"none", "weak", "strong", "undetermined"}
        *strong*: every input reaches its own fixed point and ``dh*/dx`` is nonzero there (it moves
        smoothly with x); *weak*: inputs reach different points but ``dh*/dx = 0`` (only the
        basin changes, as without recall); *none*: one point for all inputs and ``dh*/dx = 0``,
        which is also the verdict for every map without recall, by construction (its fixed points
        cannot depend on x); *undetermined*: fewer than two inputs converged (with recall).
    reason : str
        The numbers behind the verdict, in words.
    converged : torch.Tensor
        ``(B,)`` bool per input.
    fixed_points : torch.Tensor
        ``(B, *state_shape)``: the reached point per input (meaningful where converged).
    sensitivity_norm : torch.Tensor
        ``(B,)``: ``‖dh*/dx‖₂`` (0 by construction without recall; NaN where not converged or
        ``I − ∂f/∂h`` is singular).
    sensitivity_rank : torch.Tensor
        ``(B,)``: numerical rank of ``dh*/dx`` on random probes (a lower bound).
    n_distinct : int
        Distinct fixed points among the converged inputs.
    distance_ratio : float or None
        Mean pairwise fixed-point distance over mean pairwise input distance.
    driven : bool

    Examples
    --------
    :func:`input_dependence` returns one:

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_module(f, xs)
    >>> dep = dy.input_dependence(system, xs)
    >>> dep.verdict, dep.n_distinct, dep.converged.tolist()
    ('strong', 2, [True, True])
    """

    verdict: str
    reason: str
    converged: torch.Tensor
    fixed_points: torch.Tensor
    sensitivity_norm: torch.Tensor
    sensitivity_rank: torch.Tensor
    n_distinct: int
    distance_ratio: float | None
    driven: bool
    kind: str = field(default="estimate", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
        >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> system = dy.LoopedSystem.from_module(f, xs)
        >>> d = dy.input_dependence(system, xs).to_dict()
        >>> d["verdict"], d["n_inputs"], d["sensitivity_rank"]
        ('strong', 2, [4, 4])
        """
        return {
            "kind": self.kind,
            "verdict": self.verdict,
            "reason": self.reason,
            "driven": self.driven,
            "n_inputs": int(self.converged.numel()),
            "n_converged": int(self.converged.sum()),
            "n_distinct": self.n_distinct,
            "distance_ratio": self.distance_ratio,
            "sensitivity_norm": [_finite(v) for v in self.sensitivity_norm.tolist()],
            "sensitivity_rank": [int(v) for v in self.sensitivity_rank.tolist()],
        }

    def __str__(self) -> str:
        return f"input-dependence: {self.verdict} ({self.reason})"


SystemSource = LoopedSystem | nn.Module | Callable[[torch.Tensor], LoopedSystem]


def _as_system(call: str, source: Any, inputs: torch.Tensor) -> LoopedSystem:
    if isinstance(source, LoopedSystem):
        if source.x is None:
            return source
        return source.with_input(inputs)
    if isinstance(source, nn.Module):
        return LoopedSystem.from_module(source, inputs)
    if callable(source):
        out = source(inputs)
        if not isinstance(out, LoopedSystem):
            raise InvalidArgumentError(
                f"{call}: the factory must return a dynamo.LoopedSystem, got {type(out).__name__}"
            )
        return out
    raise InvalidArgumentError(
        f"{call}: expected a LoopedSystem, an nn.Module or a factory x -> LoopedSystem, got "
        f"{type(source).__name__}"
    )


def input_dependence(
    model_or_system_factory: SystemSource,
    inputs: torch.Tensor | list[torch.Tensor],
    *,
    starts: str = "input",
    tol: float | None = None,
    max_steps: int = 1000,
    probes: int = 8,
    sensitivity_tol: float = 1e-6,
    sensitivity_steps: int = 40,
    seed: int = 0,
) -> InputDependence:
    """Does the reached fixed point depend on the input, and smoothly?

    For each input, iterate to the reached fixed point ``h*(x)`` (from ``h_0 = x`` when the state
    has the input's shape, else from the system's ``starts`` distribution). With recall, the
    implicit function theorem gives ``dh*/dx = (I − ∂_h f)⁻¹ ∂_x f``, applied matrix-free (GMRES
    on Jacobian products): its norm (Golub–Kahan on ``S`` and ``Sᵀ``) and a numerical rank on
    ``probes`` random directions. Across inputs: the number of distinct fixed points and the ratio
    of mean pairwise fixed-point distance to mean pairwise input distance.

    Without recall ``f`` does not depend on ``x``, so ``dh*/dx = 0`` by construction and the
    verdict can only be *none* or *weak* (claim C1): that is reported, not raised.

    Parameters
    ----------
    model_or_system_factory : LoopedSystem, nn.Module, or callable
        A system (its input is replaced by ``inputs``), a module (wrapped with
        :meth:`LoopedSystem.from_module`), or a factory ``x -> LoopedSystem``.
    inputs : torch.Tensor or list of tensors
        ``(B, *input_shape)``, ``B >= 1`` (pairwise statistics need ``B >= 2``).
    starts : {"input", "zeros", "normal"}
        Start of each input's iteration when the state has the input's shape (``"input"``:
        ``h_0 = x``).
    tol, max_steps :
        Iteration settings.
    probes : int
        Random directions for the rank estimate.
    sensitivity_tol : float
        ``‖dh*/dx‖`` below this (relative to ``‖h*‖ / ‖x‖``) counts as zero.
    sensitivity_steps : int
        Golub–Kahan steps for ``‖dh*/dx‖₂`` (each costs two GMRES solves); fewer steps give a
        cheaper lower estimate of the norm.
    seed : int

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=6, lipschitz=0.8, seed=0)
    >>> xs = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    >>> dy.input_dependence(f, xs).verdict
    'strong'
    >>> auto = dy.models.ContractiveTanh(n=6, lipschitz=0.8, recall=False, seed=0)
    >>> dy.input_dependence(auto, xs).verdict  # no recall: the one fixed point ignores x
    'none'
    """
    call = call_form("input_dependence", ["model_or_system_factory", "inputs"])
    if isinstance(inputs, (list, tuple)):
        if len(inputs) == 0:
            raise InvalidArgumentError(f"{call}: inputs is empty; pass at least one input")
        shapes = {tuple(t.shape) for t in inputs}
        if len(shapes) > 1:
            raise ShapeError(
                f"{call}: inputs have mixed shapes {sorted(shapes)}; every input must have the "
                "same shape (pad or split them into separate calls)"
            )
        inputs = torch.stack(list(inputs))
    if not isinstance(inputs, torch.Tensor):
        raise InvalidArgumentError(f"{call}: inputs must be a tensor (B, ...) or a list of tensors")
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise InvalidArgumentError(f"{call}: inputs is empty; pass at least one input")
    check_finite_tensor(call, "inputs", inputs)
    check_positive_int(call, "probes", probes)
    check_positive_int(call, "sensitivity_steps", sensitivity_steps)
    system = _as_system(call, model_or_system_factory, inputs)
    b = int(inputs.shape[0])
    rtol = default_tolerance(system.dtype) if tol is None else tol
    xs = inputs.to(system.dtype)
    if system.x is None and not system.driven:
        return InputDependence(
            verdict="none",
            reason="the map takes no input at all: nothing can depend on it (by construction)",
            converged=torch.zeros(b, dtype=torch.bool),
            fixed_points=torch.zeros(b, *system.state_shape, dtype=system.dtype),
            sensitivity_norm=torch.zeros(b, dtype=system.dtype),
            sensitivity_rank=torch.zeros(b, dtype=torch.long),
            n_distinct=0,
            distance_ratio=None,
            driven=False,
        )
    same_shape = tuple(xs.shape[1:]) == system.state_shape
    if same_shape and starts == "input":
        h0 = xs.clone()
    else:
        kind = "zeros" if starts == "zeros" else "normal"
        h0 = (
            system.with_input(xs).initial_states(kind, 1, seed=seed)
            if system.x is not None
            else (system.initial_states(kind, b, seed=seed))
        )
    run_sys = system.with_input(xs) if system.x is not None else system
    sol = solve(run_sys, h0, method="picard", tol=rtol, atol=rtol, max_steps=max_steps, throw=False)
    conv = sol.converged
    fps = sol.state
    norms = torch.full((b,), math.nan, dtype=system.dtype)
    ranks = torch.zeros(b, dtype=torch.long)
    if system.driven and bool(conv.any()):
        idx = torch.nonzero(conv).flatten()
        sub = system.with_input(xs[idx])
        assert sub.x is not None
        sens = _Sensitivity(sub, fps[idx], sub.x)
        nrm = sens.norm(seed, sensitivity_steps)
        rk = sens.rank(min(probes, sens.n_in), seed)
        if sens.solved:
            norms[idx] = nrm.cpu()
            ranks[idx] = rk.cpu()
    elif not system.driven:
        norms = torch.zeros(b, dtype=system.dtype)
    # distinct fixed points and the distance ratio among converged inputs
    ci = torch.nonzero(conv).flatten()
    flat = system.flatten(fps[ci]).double()
    scale = max(1.0, float(flat.norm(dim=1).max())) if ci.numel() else 1.0
    radius = 1e3 * rtol * scale
    n_distinct = 0
    ratio = None
    if ci.numel():
        dist = torch.cdist(flat, flat)
        # greedy cover: the number of radius-balls needed (exact for well-separated points)
        remaining = set(range(ci.numel()))
        while remaining:
            i = remaining.pop()
            remaining -= {j for j in list(remaining) if float(dist[i, j]) <= radius}
            n_distinct += 1
        if ci.numel() >= 2:
            xin = xs[ci].reshape(ci.numel(), -1).double()
            dx = torch.cdist(xin, xin)
            mask = ~torch.eye(ci.numel(), dtype=torch.bool)
            ratio = float(dist[mask].mean() / torch.clamp(dx[mask].mean(), min=1e-300))
    n_conv = int(conv.sum())
    rel = torch.tensor(
        [float(fps[i].norm()) / max(float(xs[i].norm()), 1e-300) for i in range(b)],
        dtype=system.dtype,
    )
    moves = (norms > sensitivity_tol * torch.clamp(rel, min=1e-3)) & conv
    if not system.driven:
        # f does not depend on x: its fixed-point set is the same for every input (claim C1),
        # so the verdict is none by construction unless x-dependent starts pick different basins
        verdict = "weak" if n_distinct > 1 else "none"
        reason = (
            f"no recall: f does not depend on x, so its fixed points and dh*/dx = 0 do not "
            f"either (by construction); from h0 = x, {n_conv}/{b} inputs converged, to "
            f"{n_distinct} distinct point(s)"
        )
    elif n_conv < 2:
        verdict = "undetermined"
        reason = f"only {n_conv}/{b} inputs converged; input-dependence needs at least two"
    elif bool(torch.isnan(norms[conv]).any()):
        # the linear solves behind dh*/dx did not converge: the sensitivity is unknown, and an
        # unknown value is not a zero one
        verdict = "undetermined"
        reason = (
            f"{n_conv}/{b} inputs converged to {n_distinct} distinct points, but the GMRES "
            "solves for dh*/dx = (I − ∂f/∂h)⁻¹ ∂f/∂x did not converge: its size is unknown"
        )
    elif n_distinct == n_conv and bool(moves[conv].all()):
        verdict = "strong"
        reason = (
            f"{n_conv}/{b} inputs converged to {n_distinct} distinct points; ‖dh*/dx‖ in "
            f"[{float(norms[conv].min()):.3g}, {float(norms[conv].max()):.3g}], rank >= "
            f"{int(ranks[conv].min())} on {min(probes, int(xs[0].numel()))} probes; distance "
            f"ratio {ratio:.3g}"
        )
    elif n_distinct > 1:
        verdict = "weak"
        reason = (
            f"{n_conv}/{b} inputs converged to {n_distinct} distinct points but dh*/dx is "
            "zero (below tolerance) at some: the point changes only by switching basins"
        )
    else:
        verdict = "none"
        reason = f"all {n_conv} converged inputs reached one point and dh*/dx is zero"
    return InputDependence(
        verdict=verdict,
        reason=reason,
        converged=conv.cpu(),
        fixed_points=fps.detach(),
        sensitivity_norm=norms,
        sensitivity_rank=ranks,
        n_distinct=n_distinct,
        distance_ratio=ratio,
        driven=system.driven,
    )


# ---------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Geometry:
    """Local geometry of the map at fixed points ``h*`` (each entry per state, ``(N, ...)``).

    Attributes
    ----------
    eigenvalues : torch.Tensor
        Top-``k`` eigenvalues of ``J = ∂f/∂h`` by modulus (complex).
    spectral_radius : torch.Tensor
        ``ρ(J)``: below 1, iteration near ``h*`` converges at asymptotic rate ρ (Ostrowski).
    spectral_norm : torch.Tensor
        ``‖J‖₂``: above 1, one step can separate nearby states even when ρ < 1 (non-normal J).
    transient : dict
        ``{k: ‖J^k‖₂}`` for k = 1, 2, 4, …: transient growth before the asymptotic decay.
    max_transient : torch.Tensor
        ``max_k ‖J^k‖₂``.
    sigma_min : torch.Tensor
        ``σ_min(I − J)``: conditions the IFT sensitivity and the implicit backward pass
        ``(I − J)^{-T} g``; 0 means ``h*`` is not isolated.
    ift_norm : torch.Tensor or None
        ``‖dh*/dx‖₂`` for driven systems.
    basin_radius : torch.Tensor
        Largest tested radius ``r`` (relative to ``‖h*‖``) from which at least 95% of
        ``basin_samples`` random perturbations of norm ``r ‖h*‖`` iterate back to ``h*`` (0 when
        none of the tested radii qualifies).
    basin_samples : int
        Perturbations per radius.
    radii : tuple of float
        The relative radii tested.
    return_fraction : torch.Tensor
        ``(N, len(radii))``: fraction returning at each radius.
    exact : bool
        Dense linear algebra (True) or Krylov estimates (False).

    Examples
    --------
    :func:`geometry` returns one:

    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
    >>> x = torch.ones(1, 3, dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_module(lin, x)
    >>> g = dy.geometry(system, lin.fixed_point(x), basin_samples=4)
    >>> round(float(g.spectral_radius[0]), 6), g.exact, g.basin_radius.tolist()
    (0.5, True, [1.0])
    """

    eigenvalues: torch.Tensor
    spectral_radius: torch.Tensor
    spectral_norm: torch.Tensor
    transient: dict[int, torch.Tensor]
    max_transient: torch.Tensor
    sigma_min: torch.Tensor
    ift_norm: torch.Tensor | None
    basin_radius: torch.Tensor
    basin_samples: int
    radii: tuple[float, ...]
    return_fraction: torch.Tensor
    exact: bool
    kind: str = field(default="estimate", init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
        >>> x = torch.ones(1, 3, dtype=torch.float64)
        >>> system = dy.LoopedSystem.from_module(lin, x)
        >>> g = dy.geometry(system, lin.fixed_point(x), basin_samples=4)
        >>> d = g.to_dict()
        >>> d["exact_linear_algebra"], d["basin_samples"], d["basin_radius"]
        (True, 4, [1.0])
        """
        return {
            "kind": self.kind,
            "exact_linear_algebra": self.exact,
            "spectral_radius": self.spectral_radius.tolist(),
            "spectral_norm": self.spectral_norm.tolist(),
            "eigenvalues": torch.view_as_real(self.eigenvalues.cpu()).tolist(),
            "transient": {str(k): v.tolist() for k, v in self.transient.items()},
            "max_transient": self.max_transient.tolist(),
            "sigma_min_I_minus_J": [_finite(v) for v in self.sigma_min.tolist()],
            "ift_norm": None
            if self.ift_norm is None
            else [_finite(v) for v in self.ift_norm.tolist()],
            "basin_radius": self.basin_radius.tolist(),
            "basin_samples": self.basin_samples,
            "radii": list(self.radii),
            "return_fraction": self.return_fraction.tolist(),
        }

    def __str__(self) -> str:
        ift = "" if self.ift_norm is None else f", ‖dh*/dx‖ max {float(self.ift_norm.max()):.3g}"
        return (
            f"geometry: ρ max {float(self.spectral_radius.max()):.4g}, ‖J‖₂ max "
            f"{float(self.spectral_norm.max()):.4g}, transient max "
            f"{float(self.max_transient.max()):.4g}, σ_min(I − J) min "
            f"{float(self.sigma_min.min()):.3g}{ift}, basin radius min "
            f"{float(self.basin_radius.min()):.3g} (×‖h*‖, {self.basin_samples} samples)"
        )


def geometry(
    system: LoopedSystem,
    h_star: torch.Tensor,
    *,
    x: torch.Tensor | None = None,
    k: int = 6,
    transient_steps: int = 32,
    basin_samples: int = 32,
    radii: tuple[float, ...] = (1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0),
    max_steps: int = 1000,
    dense_limit: int = 512,
    seed: int = 0,
) -> Geometry:
    """Local geometry at fixed points: spectrum, norm, transient growth, conditioning of
    ``I − J``, IFT sensitivity, and an empirical basin radius.

    Dense linear algebra for state dimension ``<= dense_limit``, Krylov estimates above
    (Arnoldi, Golub–Kahan, and Golub–Kahan on ``(I − J)⁻¹`` through GMRES for ``σ_min``).

    Parameters
    ----------
    system : LoopedSystem
    h_star : torch.Tensor
        ``(N, *state_shape)`` fixed points.
    x : torch.Tensor, optional
        Inputs instead of the system's own.
    k : int
        Eigenvalues kept.
    transient_steps : int
        Largest power in ``‖J^k‖`` (powers of two up to it).
    basin_samples : int
        Random perturbations per radius.
    radii : tuple of float
        Perturbation radii relative to ``‖h*‖``, tested in increasing order until fewer than 95%
        return.
    max_steps : int
        Iterations allowed to return.
    dense_limit : int
    seed : int

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=6, spectral_radius=0.5, seed=0)
    >>> x = torch.ones(1, 6, dtype=torch.float64)
    >>> g = dy.geometry(dy.LoopedSystem.from_module(lin, x), lin.fixed_point(x), basin_samples=8)
    >>> round(float(g.spectral_radius[0]), 6), float(g.basin_radius[0])  # linear: global basin
    (0.5, 1.0)
    """
    call = call_form("geometry", ["system", "h_star"])
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    check_state_shape(call, "h_star", h_star, system.state_shape)
    check_finite_tensor(call, "h_star", h_star)
    check_positive_int(call, "k", k)
    check_positive_int(call, "transient_steps", transient_steps)
    check_positive_int(call, "basin_samples", basin_samples)
    if not radii or any((not isinstance(r, (int, float))) or r <= 0 for r in radii):
        raise InvalidArgumentError(f"{call}: radii must be positive numbers")
    n_states = h_star.shape[0]
    xx = system._input_for(call, n_states, x, check_values=x is not None)
    sub = system.with_input(xx) if (system.driven and xx is not None) else system
    h_star = h_star.to(system.dtype)
    n = system.state_dim
    eye = torch.eye(n, dtype=system.dtype, device=system.device)
    powers = [2**i for i in range(int(math.log2(transient_steps)) + 1)]
    exact = n <= dense_limit
    if exact:
        J = jacobian(sub, h_star)
        ev = torch.linalg.eigvals(J)
        ev = torch.gather(ev, 1, torch.argsort(ev.abs(), dim=1, descending=True))[:, : min(k, n)]
        rho = ev[:, 0].abs()  # sorted by modulus: the first is the largest
        norm2 = torch.linalg.matrix_norm(J, ord=2)
        transient = {
            p: torch.linalg.matrix_norm(torch.linalg.matrix_power(J, p), ord=2) for p in powers
        }
        smin = torch.linalg.svdvals(eye - J)[:, -1]
    else:
        op = JacobianOperator(_flat(sub, sub.x if sub.driven else None), sub.flatten(h_star))
        dims = (n_states, n, system.dtype, system.device)
        tol = math.sqrt(torch.finfo(system.dtype).eps)
        kr = _arnoldi(op.matvec, *dims, k=min(k, n), tol=tol, max_steps=min(n, 300), seed=seed)
        ev = kr.values
        rho = ev.abs().amax(dim=1)
        gk = _golub_kahan(
            op.matvec, op.rmatvec, *dims, k=1, tol=tol, max_steps=min(n, 300), seed=seed
        )
        norm2 = gk.values[:, 0]
        transient = {}
        for p in powers:

            def mv(v: torch.Tensor, p: int = p) -> torch.Tensor:
                for _ in range(p):
                    v = op.matvec(v)
                return v

            def rmv(u: torch.Tensor, p: int = p) -> torch.Tensor:
                for _ in range(p):
                    u = op.rmatvec(u)
                return u

            transient[p] = _golub_kahan(
                mv, rmv, *dims, k=1, tol=1e-4, max_steps=min(n, 60), seed=seed
            ).values[:, 0]

        def inv(b: torch.Tensor) -> torch.Tensor:
            return gmres(
                lambda v: v - op.matvec(v), b, rtol=1e-10, restart=min(60, n), max_restarts=10
            ).x

        def inv_t(b: torch.Tensor) -> torch.Tensor:
            return gmres(
                lambda v: v - op.rmatvec(v), b, rtol=1e-10, restart=min(60, n), max_restarts=10
            ).x

        big = _golub_kahan(inv, inv_t, *dims, k=1, tol=1e-6, max_steps=min(n, 60), seed=seed)
        smin = 1.0 / big.values[:, 0]
    max_tr = torch.stack(list(transient.values())).amax(dim=0)
    ift = None
    if system.driven and sub.x is not None:
        try:
            sens = _Sensitivity(sub, h_star, sub.x)
            ift = sens.norm(seed)
            if not sens.solved:
                ift = torch.full_like(ift, math.nan)
        except RuntimeError:
            ift = torch.full((n_states,), math.nan, dtype=system.dtype)
    # empirical basin radius
    gen = torch.Generator(device=system.device).manual_seed(seed + 13)
    zs = sub.flatten(h_star)
    scale = torch.clamp(zs.norm(dim=1), min=1.0)
    rtol = default_tolerance(system.dtype)
    fractions = []
    radius = torch.zeros(n_states, dtype=system.dtype)
    alive = torch.ones(n_states, dtype=torch.bool)
    for r in sorted(radii):
        d = torch.randn(
            n_states, basin_samples, n, generator=gen, dtype=system.dtype, device=system.device
        )
        d = d / d.norm(dim=2, keepdim=True) * (r * scale)[:, None, None]
        starts = (zs[:, None, :] + d).reshape(-1, n)
        rep = sub.repeat_input(basin_samples) if (sub.driven and sub.x is not None) else sub
        sol = solve(
            rep,
            rep.unflatten(starts),
            method="picard",
            tol=rtol,
            atol=rtol,
            max_steps=max_steps,
            throw=False,
        )
        back = (rep.flatten(sol.state).reshape(n_states, basin_samples, n) - zs[:, None, :]).norm(
            dim=2
        ) <= 1e3 * rtol * scale[:, None]
        ok = back & sol.converged.reshape(n_states, basin_samples).to(back.device)
        frac = ok.double().mean(dim=1).cpu()
        fractions.append(frac)
        good = alive & (frac >= 0.95)
        radius = torch.where(good, torch.full_like(radius, r), radius)
        alive = good
    return Geometry(
        eigenvalues=ev.detach(),
        spectral_radius=rho.detach(),
        spectral_norm=norm2.detach(),
        transient={p: t.detach() for p, t in transient.items()},
        max_transient=max_tr.detach(),
        sigma_min=smin.detach(),
        ift_norm=None if ift is None else ift.detach(),
        basin_radius=radius,
        basin_samples=basin_samples,
        radii=tuple(sorted(radii)),
        return_fraction=torch.stack(fractions, dim=1),
        exact=exact,
    )


# ---------------------------------------------------------------------- all three
@dataclass(frozen=True)
class AxesReport:
    """Reachability, input-dependence, geometry, and the contraction verdict, together.

    Examples
    --------
    :func:`stability_axes` returns one (``contraction=False`` skips the contraction check):

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_module(f, xs)
    >>> report = dy.stability_axes(system, n_starts=2, basin_samples=4, contraction=False)
    >>> report.reachability.converged_fraction, report.input_dependence.verdict
    (1.0, 'strong')
    >>> report.contraction is None
    True
    """

    reachability: Reachability
    input_dependence: InputDependence
    geometry: Geometry | None
    contraction: Any | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
        >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> system = dy.LoopedSystem.from_module(f, xs)
        >>> report = dy.stability_axes(system, n_starts=2, basin_samples=4, contraction=False)
        >>> d = report.to_dict()
        >>> sorted(d), d["contraction"]
        (['contraction', 'geometry', 'input_dependence', 'reachability'], None)
        """
        return {
            "reachability": self.reachability.to_dict(),
            "input_dependence": self.input_dependence.to_dict(),
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
            "contraction": None if self.contraction is None else self.contraction.to_dict(),
        }

    def __str__(self) -> str:
        lines = [
            "AxesReport (estimates unless marked certified)",
            f"  {self.reachability}",
            f"  {self.input_dependence}",
            f"  {self.geometry}"
            if self.geometry is not None
            else "  geometry: no converged fixed point to examine",
        ]
        if self.contraction is not None:
            lines.append("  " + str(self.contraction).replace("\n", "\n  "))
        return "\n".join(lines)


def stability_axes(
    system: LoopedSystem,
    inputs: torch.Tensor | None = None,
    *,
    n_starts: int = 8,
    domain: Any | None = None,
    contraction: bool = True,
    basin_samples: int = 16,
    seed: int = 0,
) -> AxesReport:
    """The three stability axes of a looped block, and whether it contracts.

    ``reachability`` from ``n_starts`` starts per input, ``input_dependence`` across ``inputs``
    (default: the system's own), ``geometry`` at each input's reached fixed point, and (unless
    ``contraction=False``) :func:`check_contraction` on ``domain``.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=6, lipschitz=0.9, seed=0)
    >>> xs = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> report = dy.stability_axes(dy.LoopedSystem.from_module(f, xs), basin_samples=4)
    >>> report.input_dependence.verdict, str(report.contraction.verdict)
    ('strong', 'PROVEN')
    """
    from ._contraction import check_contraction

    call = call_form("stability_axes", ["system"])
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    if inputs is not None:
        system = system.with_input(inputs)
    start = (
        "input"
        if (system.x is not None and tuple(system.x.shape[1:]) == system.state_shape)
        else "normal"
    )
    reach = reachability(system, n_starts=n_starts, start=start, seed=seed)
    xs = system.x
    if xs is None:
        dep = input_dependence(system, torch.zeros(1, 1, dtype=system.dtype), seed=seed)
    else:
        dep = input_dependence(system, xs, seed=seed)
    geo = None
    conv = torch.nonzero(dep.converged).flatten()
    if conv.numel():
        sub = system.with_input(xs[conv]) if (system.driven and xs is not None) else system
        geo = geometry(sub, dep.fixed_points[conv], basin_samples=basin_samples, seed=seed)
    verdict = check_contraction(system, domain, seed=seed) if contraction else None
    return AxesReport(reachability=reach, input_dependence=dep, geometry=geo, contraction=verdict)
