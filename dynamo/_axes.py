"""The three stability axes of a looped block: reachability, input-dependence, geometry.

After Labovich, "Stability and Generalization in Looped Transformers" (arXiv:2604.15259; the
operational definitions here are reconstructed from its abstract, see the docs): an architecture
generalises when its fixed points are *reachable* by iteration, *depend on the input* smoothly,
and are *well conditioned*; recall plus outer normalization is what gets all three.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import jacrev

from ._fixed_points import FixedPointSet, find_fixed_points
from ._krylov import golub_kahan
from ._linearize import (
    JacobianOperator,
    _flat,
    _operator_at,
    _per_example,
    _top_eigenvalues,
    jacobian,
)
from ._results import Trust, _finite_or_none
from ._solvers import default_tolerance, solve
from ._solvers._gmres import gmres
from ._stats import clopper_pearson
from ._system import LoopedSystem
from ._types import StartKind
from ._validate import (
    call_form,
    check_choice,
    check_finite_tensor,
    check_positive_float,
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
    """Min, median, 90th percentile and max of ``values`` (all None when it is empty)."""
    if values.numel() == 0:
        return {"min": None, "median": None, "p90": None, "max": None}
    v = values.double()
    return {
        "min": float(v.min()),
        "median": float(v.median()),
        "p90": float(torch.quantile(v, 0.9)),
        "max": float(v.max()),
    }


# ---------------------------------------------------------------------- reachability
@dataclass(frozen=True)
class _PathAgreement:
    """Whether the starts of each input reach one limit (path independence), measured once for
    every verb that reports it.

    ``cosines``: the cosine similarity of every pair of limits of one input (Anil et al.'s
    asymptotic alignment; 1 for a zero limit); ``spreads``: per input, the largest distance
    between two of its limits relative to ``max(1, largest limit norm)`` (0 with fewer than two,
    NaN with none); ``agreeing``: inputs all of whose starts have a limit and whose spread is at
    most ``same``.
    """

    cosines: tuple[float, ...]
    spreads: tuple[float, ...]
    agreeing: int

    @property
    def mean(self) -> float | None:
        """Mean cosine over all pairs (None without a pair)."""
        return sum(self.cosines) / len(self.cosines) if self.cosines else None

    @property
    def worst(self) -> float | None:
        """The least cosine of any pair (None without a pair)."""
        return min(self.cosines) if self.cosines else None


def _path_agreement(
    limits: torch.Tensor, has_limit: torch.Tensor, same: float = 0.0
) -> _PathAgreement:
    """:class:`_PathAgreement` of ``limits`` ``(B, per, n)``, of which ``has_limit`` ``(B, per)``
    marks the starts that reached one (computed in the limits' own dtype)."""
    cosines: list[float] = []
    spreads: list[float] = []
    agreeing = 0
    for b in range(limits.shape[0]):
        pts = limits[b][has_limit[b]]
        if pts.shape[0] > 1:  # every pair i < j at once: a Gram matrix, not a Python loop
            norms = pts.norm(dim=1)
            den = norms[:, None] * norms[None, :]
            gram = pts @ pts.T
            cos = torch.where(den > 0, gram / torch.where(den > 0, den, 1.0), 1.0)
            iu, ju = torch.triu_indices(pts.shape[0], pts.shape[0], 1)
            cosines.extend(cos[iu, ju].tolist())
        if pts.shape[0] == 0:
            spreads.append(math.nan)
            continue
        scale = torch.clamp(pts.norm(dim=1).max(), min=1.0)
        spread = float(torch.cdist(pts, pts).max() / scale) if pts.shape[0] > 1 else 0.0
        spreads.append(spread)
        if spread <= same and bool(has_limit[b].all()):
            agreeing += 1
    return _PathAgreement(tuple(cosines), tuple(spreads), agreeing)


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
    kind, trust :
        ``"estimate"`` and ESTIMATED: from sampled starts and iterated solves.

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
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

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
            "trust": self.trust.value,
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
    start: StartKind = "normal",
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
    reached = [q for q in found.points if q.basin_count]  # label i is reached[i]
    per = found.starts_per_input
    labels = found.labels.reshape(found.n_inputs, per)
    on_point = (labels >= 0) & (labels < len(reached))
    # each start's limit is its attractor's state (a table lookup; masked where it has none)
    table = torch.stack(
        [q.state.reshape(-1).cpu() for q in reached]
        or [torch.zeros(system.state_dim, dtype=system.dtype)]
    )
    limits = table[torch.where(on_point, labels, 0)]
    agreement = _path_agreement(limits, on_point)
    rho = [p.spectral_radius for p in found.points if p.basin_count]
    return Reachability(
        converged_fraction=conv / total,
        interval=clopper_pearson(conv, total),
        steps=_q(found.steps[conv_mask]),
        basin_fractions=basins,
        path_independence=agreement.mean,
        path_independence_min=agreement.worst,
        max_spectral_radius=max(rho) if rho else None,
        fixed_points=found,
    )


# ---------------------------------------------------------------------- IFT machinery
class _Sensitivity:
    """``S = dh*/dx = (I − ∂_h f)⁻¹ ∂_x f`` at fixed points, matrix-free, batched over states.

    ``S`` maps the flat input (``n_in`` entries) to the flat state (``n`` entries): it is
    rectangular whenever the input and the state differ in size. ``solved_rows`` records, per
    state, whether every GMRES solve so far reached its tolerance.
    """

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
        self.solved_rows = torch.ones(zf.shape[0], dtype=torch.bool, device=zf.device)

    @property
    def solved(self) -> bool:
        """True when every solve of every state converged."""
        return bool(self.solved_rows.all())

    def _solve(self, b: torch.Tensor, transpose: bool) -> torch.Tensor:
        """GMRES on ``(I − ∂_h f) s = b`` (``transpose``: its transpose), recording per state
        whether it reached its tolerance."""
        op = self.Jh.rmatvec if transpose else self.Jh.matvec
        out = gmres(lambda v: v - op(v), b, rtol=self.tol, restart=min(60, self.n), max_restarts=20)
        self.solved_rows = self.solved_rows & out.converged.to(self.solved_rows.device)
        return out.x

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        """``S v`` for ``v`` of shape ``(N, n_in)``: ``(N, n)``."""
        return self._solve(self.Jx.matvec(v), transpose=False)

    def apply_t(self, u: torch.Tensor) -> torch.Tensor:
        """``Sᵀ u`` for ``u`` of shape ``(N, n)``: ``(N, n_in)``."""
        return self.Jx.rmatvec(self._solve(u, transpose=True))

    def norm(self, seed: int, max_steps: int = 40) -> torch.Tensor:
        """``‖S‖₂`` to about 4 digits, or the best lower estimate after ``max_steps`` Krylov steps
        (a summary; each step costs two GMRES solves). Exact (to the solves' accuracy) once the
        Krylov space is full, after ``min(n, n_in)`` steps."""
        kr = golub_kahan(
            self.apply,
            self.apply_t,
            self.Jh.shape[0],
            self.n_in,
            self.Jh.dtype,
            self.Jh.device,
            k=1,
            tol=1e-4,
            max_steps=max_steps,
            seed=seed,
            out_dim=self.n,
        )
        return kr.values[:, 0]


def _rank_evidence(
    system: LoopedSystem, h_star: torch.Tensor, x: torch.Tensor, rank_tol: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per state: ``(rank of dh*/dx, the rank a full-rank dh*/dx has there, local image dim)``.

    ``dh*/dx = (I − ∂_h f)⁻¹ ∂_x f`` with ``I − ∂_h f`` invertible (the implicit function
    theorem's hypothesis), so ``rank dh*/dx = rank ∂_x f``: read off the dense ``∂_x f`` (singular
    values above ``rank_tol`` relative to the largest), with no linear solve. Full rank is
    ``min(n_in, max(d, rank))``, where ``d`` is the local dimension of the step's image, the
    number of singular values of ``[∂_h f, ∂_x f]`` above ``√rank_tol`` relative to the largest
    (coarse, so that the nearly flat radial direction of an RMSNorm with small ε counts as
    flat): ``h*(x) = f(h*(x), x)`` lies in that image, so a normalization that puts the state on
    a sphere (``d = n − 1`` per token) caps what full rank can mean below ``min(n_in, n)``; a
    direction of ``∂_x f`` itself, however weak, widens it again (``max``), so a small but
    nonzero sensitivity is never taken for a missing one. ``d`` comes from the eigenvalues of
    the Gram matrix (a quarter of the SVD's time; its threshold stays far above rounding). A
    CHECKED float test at each state, not a proof.
    """
    one = _per_example(system)
    x_shape = tuple(x.shape[1:])

    def g(zi: torch.Tensor, xf: torch.Tensor) -> torch.Tensor:
        return one(zi, xf.reshape(x_shape))

    z = system.flatten(h_star.detach().to(system.dtype))
    xf = x.reshape(x.shape[0], -1).to(system.dtype)
    n, n_in = int(z.shape[1]), int(xf.shape[1])
    jac = jacrev(g, argnums=(0, 1), chunk_size=min(n, 256))
    tiny = torch.finfo(z.dtype).tiny
    ranks, full, image = [], [], []
    for i in range(z.shape[0]):  # one state at a time: n × (n + n_in) numbers at once
        with torch.no_grad():
            jh, jx = jac(z[i], xf[i])
        sx = torch.linalg.svdvals(jx)
        rank = int((sx > rank_tol * max(float(sx[0]), tiny)).sum())
        a = torch.cat((jh, jx), dim=1)
        lam = torch.linalg.eigvalsh(a @ a.T)
        d = int((lam > rank_tol * max(float(lam[-1]), tiny)).sum())  # σ > √rank_tol · σ_max
        ranks.append(rank)
        full.append(min(n_in, max(d, rank)))
        image.append(d)
    return torch.tensor(ranks), torch.tensor(full), torch.tensor(image)


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
VERDICTS = ("none", "weak", "strong", "partial", "undetermined")


@dataclass(frozen=True)
class InputDependence:
    """Does the reached fixed point move with the input, smoothly and in every direction?

    The verdict follows the definition (SCIENCE.md §2, after Labovich): *strong* input-dependence
    is ``h*(·)`` non-constant and locally full rank; *weak* is only the choice of basin changing
    with x. Both are checked at the given inputs, by float tests at each (CHECKED there; nothing
    is claimed between them).

    Attributes
    ----------
    verdict : {"strong", "partial", "weak", "none", "undetermined"}
        *strong*: every input's iteration (from its first start) converged, and at every input
        ``dh*/dx`` is nonzero and has full rank (``sensitivity_rank == full_rank``); *partial*:
        every input converged and ``dh*/dx ≠ 0`` at each, but it is rank-deficient at some
        input, where ``h*`` is locally constant along some input direction; *weak*: inputs reach
        different points but ``dh*/dx = 0`` at some (the point changes by switching basins, as
        without recall); *none*: one point for all inputs and ``dh*/dx = 0``, which is also the
        verdict for every map without recall, by construction (its fixed points cannot depend
        on x) once some input reached a fixed point; *undetermined*: no input converged (with or
        without recall), fewer than two inputs, some input's iteration did not converge (a
        cycle, still moving at ``max_steps``, or diverged), a linear solve behind ``dh*/dx`` did
        not converge, or the rank was not examined (state dimension above ``dense_limit``).
    reason : str
        The numbers behind the verdict, in words, with what was not looked at. When some input
        reached more than one limit from its starts (:attr:`multistable`), the reason opens
        with ``"multistable: ..."`` and the limits per input, whatever the verdict: the verdict
        is about the limit of each input's first start, and ``str()`` says ``MULTISTABLE``
        next to it.
    converged : torch.Tensor
        ``(B,)`` bool per input: the iteration from its first start converged.
    fixed_points : torch.Tensor
        ``(B, *state_shape)``: the point reached from each input's first start (meaningful where
        converged).
    sensitivity_norm : torch.Tensor
        ``(B,)``: ``‖dh*/dx‖₂`` (0 by construction without recall; NaN where not converged or
        ``I − ∂f/∂h`` is singular).
    sensitivity_rank : torch.Tensor
        ``(B,)``: numerical rank of ``dh*/dx`` (which equals ``rank ∂_x f`` where the implicit
        function theorem applies); −1 where not examined.
    full_rank : torch.Tensor
        ``(B,)``: the rank ``dh*/dx`` has when it is of full rank,
        ``min(n_input, max(image_dim, sensitivity_rank))``; −1 where not examined.
    image_dim : torch.Tensor
        ``(B,)``: local dimension of the step's image at ``(h*, x)``, the numerical rank of
        ``[∂_h f, ∂_x f]`` (``n`` for a generic map, less when a normalization confines the
        state to a sphere); −1 where not examined.
    n_distinct : int
        Distinct fixed points among the converged inputs.
    distance_ratio : float or None
        Mean pairwise fixed-point distance over mean pairwise input distance.
    n_starts : int
        Starts per input.
    n_limits : torch.Tensor
        ``(B,)``: distinct limits reached by the converged starts of each input (more than one:
        the input has several attractors).
    starts_converged : torch.Tensor
        ``(B,)``: starts of each input whose iteration converged.
    driven : bool
    kind, trust :
        ``"estimate"`` and ESTIMATED: from sampled starts and iterated solves.

    Examples
    --------
    :func:`input_dependence` returns one:

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_module(f, xs)
    >>> dep = dy.input_dependence(system, xs)
    >>> dep.verdict, dep.n_distinct, dep.converged.tolist(), dep.n_limits.tolist()
    ('strong', 2, [True, True], [1, 1])
    """

    verdict: str
    reason: str
    converged: torch.Tensor
    fixed_points: torch.Tensor
    sensitivity_norm: torch.Tensor
    sensitivity_rank: torch.Tensor
    full_rank: torch.Tensor
    image_dim: torch.Tensor
    n_distinct: int
    distance_ratio: float | None
    n_starts: int
    n_limits: torch.Tensor
    starts_converged: torch.Tensor
    driven: bool
    kind: str = field(default="estimate", init=False)
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

    @property
    def multistable(self) -> bool:
        """True when some input reached more than one limit from its starts.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
        >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> dy.input_dependence(f, xs, n_starts=4).multistable  # a contraction: one limit
        False
        """
        return bool((self.n_limits > 1).any())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
        >>> xs = torch.randn(2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> system = dy.LoopedSystem.from_module(f, xs)
        >>> d = dy.input_dependence(system, xs).to_dict()
        >>> d["verdict"], d["n_inputs"], d["sensitivity_rank"], d["full_rank"]
        ('strong', 2, [4, 4], [4, 4])
        """

        def ints(t: torch.Tensor) -> list[int | None]:
            return [None if int(v) < 0 else int(v) for v in t.tolist()]

        return {
            "kind": self.kind,
            "trust": self.trust.value,
            "verdict": self.verdict,
            "reason": self.reason,
            "driven": self.driven,
            "n_inputs": int(self.converged.numel()),
            "n_converged": int(self.converged.sum()),
            "n_distinct": self.n_distinct,
            "distance_ratio": self.distance_ratio,
            "sensitivity_norm": [_finite_or_none(v) for v in self.sensitivity_norm.tolist()],
            "sensitivity_rank": ints(self.sensitivity_rank),
            "full_rank": ints(self.full_rank),
            "image_dim": ints(self.image_dim),
            "n_starts": self.n_starts,
            "n_limits": [int(v) for v in self.n_limits.tolist()],
            "starts_converged": [int(v) for v in self.starts_converged.tolist()],
            "multistable": self.multistable,
        }

    def __str__(self) -> str:
        if self.multistable:  # the reason opens with the limits per input
            return f"input-dependence: {self.verdict}, MULTISTABLE ({self.reason})"
        starts = f"{self.n_starts} start{'s' if self.n_starts != 1 else ''} each"
        limits = f"limits per input {_limit_counts(self.n_limits)} from {starts}"
        return f"input-dependence: {self.verdict}; {limits} ({self.reason})"


SystemSource = LoopedSystem | nn.Module | Callable[[torch.Tensor], LoopedSystem]


def _as_system(call: str, source: Any, inputs: torch.Tensor) -> LoopedSystem:
    """The system :func:`input_dependence` analyses on ``inputs``, from any :data:`SystemSource`
    (a system without an input is kept as it is)."""
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


def _cover(points: torch.Tensor, radius: float) -> int:
    """Balls of ``radius`` needed to cover ``points`` (greedy; exact for well-separated points)."""
    if points.shape[0] == 0:
        return 0
    dist = torch.cdist(points, points)
    remaining = set(range(points.shape[0]))
    count = 0
    while remaining:
        i = remaining.pop()
        remaining -= {j for j in list(remaining) if float(dist[i, j]) <= radius}
        count += 1
    return count


def _limit_counts(n_limits: torch.Tensor) -> str:
    """The distinct limits of each input, in words: listed for up to 12 inputs, else how many
    inputs have each count (``1 ×40, 2 ×24``)."""
    values = [int(v) for v in n_limits.tolist()]
    if len(values) <= 12:
        return ", ".join(str(v) for v in values)
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{v} ×{counts[v]}" for v in sorted(counts))


def _multistable_lead(n_starts: int, n_limits: torch.Tensor) -> str | None:
    """The opening of the reason when some input reached more than one limit from its starts
    (None otherwise): the verdict below it is about the first start's limit only."""
    multi = n_limits > 1
    if n_starts == 1 or not bool(multi.any()):
        return None
    b = int(n_limits.numel())
    return (
        f"multistable: {int(multi.sum())}/{b} inputs reach more than one limit (up to "
        f"{int(n_limits.max())}) from their {n_starts} starts (limits per input: "
        f"{_limit_counts(n_limits)}); the verdict is about the limit reached from each input's "
        "first start, and the others are further limits of the same input "
        "(dynamo.attractors says which are stable and what each one answers)"
    )


def _starts_note(n_starts: int, n_limits: torch.Tensor, settled: torch.Tensor) -> str:
    """What the starts showed about the limits of each input, in words (several limits of one
    input are said at the opening of the reason instead, :func:`_multistable_lead`)."""
    b = int(n_limits.numel())
    if n_starts == 1:
        return (
            "one start per input: a second attractor of the same input would not be seen "
            "(pass n_starts > 1)"
        )
    parts = []
    unsettled = b * n_starts - int(settled.sum())
    if unsettled:
        parts.append(
            f"{unsettled} of {b * n_starts} starts did not converge (on a cycle, still moving, "
            "or diverged)"
        )
    if bool((n_limits > 1).any()):  # said at the opening of the reason
        return "; ".join(parts) if parts else "every start converged"
    if not parts:
        return f"all {n_starts} starts of each input reached one limit"
    return "; ".join(parts)


def _unexamined(b: int) -> torch.Tensor:
    """``(b,)`` of −1: the rank entries of inputs whose rank was not examined."""
    return torch.full((b,), -1, dtype=torch.long)


@dataclass(frozen=True)
class _DependencePlan:
    """:func:`input_dependence`'s arguments, checked: the system, the inputs in its dtype
    (``xs``), and the settings the stages read (``tol`` resolved from the dtype when not given)."""

    system: LoopedSystem
    xs: torch.Tensor
    start: StartKind
    n_starts: int
    scale: float
    tol: float
    max_steps: int
    sensitivity_tol: float
    sensitivity_steps: int
    rank_tol: float
    dense_limit: int
    seed: int

    @property
    def b(self) -> int:
        """Number of inputs."""
        return int(self.xs.shape[0])


@dataclass(frozen=True)
class _Limits:
    """Where each input's starts ended: ``converged`` ``(B, n_starts)`` bool on the CPU and
    ``states`` ``(B, n_starts, *state_shape)``. The first start's limit is the input's ``h*``."""

    converged: torch.Tensor
    states: torch.Tensor

    @property
    def first_converged(self) -> torch.Tensor:
        """``(B,)``: each input's first start converged."""
        return self.converged[:, 0]

    @property
    def fixed_points(self) -> torch.Tensor:
        """``(B, *state_shape)``: each input's first limit (meaningful where it converged)."""
        return self.states[:, 0]


@dataclass(frozen=True)
class _SensitivityEvidence:
    """Per input: ``‖dh*/dx‖₂`` (``norm``, NaN where unknown) and the rank evidence of
    :func:`_rank_evidence` (``rank``, ``full_rank``, ``image_dim``; −1 where not examined)."""

    norm: torch.Tensor
    rank: torch.Tensor
    full_rank: torch.Tensor
    image_dim: torch.Tensor


@dataclass(frozen=True)
class _Spread:
    """How far apart the limits lie: per input, its converged starts (``settled``) and distinct
    limits (``n_limits``); across the inputs' first limits, the distinct points and the ratio
    of mean pairwise fixed-point distance to mean pairwise input distance."""

    settled: torch.Tensor
    n_limits: torch.Tensor
    n_distinct: int
    distance_ratio: float | None


def _input_batch(call: str, inputs: Any) -> torch.Tensor:
    """``inputs`` as one nonempty, finite ``(B, ...)`` tensor (a list is stacked), or raise."""
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
    return inputs


def _former_start(start: StartKind, starts: StartKind) -> StartKind:
    """``starts=`` (the former name) given: ``start=`` must not say something else."""
    if start != "input":
        raise InvalidArgumentError(
            "input_dependence(model_or_system_factory, inputs): pass start= only (starts= is "
            f"its former name), not start={start!r} and starts={starts!r}"
        )
    return starts


def _dependence_plan(
    source: SystemSource,
    inputs: torch.Tensor | list[torch.Tensor],
    *,
    start: StartKind,
    start_name: str,
    n_starts: int,
    scale: float,
    tol: float | None,
    max_steps: int,
    probes: int | None,
    sensitivity_tol: float,
    sensitivity_steps: int,
    rank_tol: float | None,
    dense_limit: int,
    seed: int,
) -> _DependencePlan:
    """Check :func:`input_dependence`'s arguments and build its system.

    The checks run in a fixed order (the factory is called only after every argument that does
    not need its system passed), so that the first complaint a caller sees does not change.
    """
    call = call_form("input_dependence", ["model_or_system_factory", "inputs"])
    xs = _input_batch(call, inputs)
    check_choice(call, start_name, start, ("input", "zeros", "normal"))
    if start_name == "starts":
        warnings.warn(
            f"{call}: starts= is now start= (the kind of first start, the keyword "
            "find_fixed_points and reachability use; starts= names a tensor of states there) "
            "and will be removed",
            DeprecationWarning,
            stacklevel=3,  # input_dependence's caller
        )
    check_positive_int(call, "n_starts", n_starts)
    check_positive_float(call, "scale", scale)
    if probes is not None:
        warnings.warn(
            f"{call}: probes is ignored (the rank of dh*/dx now comes from the dense ∂f/∂x, "
            "not from random probes) and will be removed; drop the argument",
            DeprecationWarning,
            stacklevel=3,  # input_dependence's caller
        )
    check_positive_int(call, "sensitivity_steps", sensitivity_steps)
    check_positive_int(call, "dense_limit", dense_limit)
    system = _as_system(call, source, xs)
    rk_tol = (
        math.sqrt(torch.finfo(system.dtype).eps)
        if rank_tol is None
        else check_positive_float(call, "rank_tol", rank_tol, upper=1.0, upper_inclusive=False)
    )
    return _DependencePlan(
        system=system,
        xs=xs.to(system.dtype),
        start=start,
        n_starts=n_starts,
        scale=scale,
        tol=default_tolerance(system.dtype) if tol is None else tol,
        max_steps=max_steps,
        sensitivity_tol=sensitivity_tol,
        sensitivity_steps=sensitivity_steps,
        rank_tol=rk_tol,
        dense_limit=dense_limit,
        seed=seed,
    )


def _inputless_dependence(plan: _DependencePlan) -> InputDependence:
    """The answer for a map that takes no input at all: *none* by construction, with nothing
    iterated (there is no fixed point of an input to look at)."""
    b, system = plan.b, plan.system
    return InputDependence(
        verdict="none",
        reason="the map takes no input at all: nothing can depend on it (by construction)",
        converged=torch.zeros(b, dtype=torch.bool),
        fixed_points=torch.zeros(b, *system.state_shape, dtype=system.dtype),
        sensitivity_norm=torch.zeros(b, dtype=system.dtype),
        sensitivity_rank=torch.zeros(b, dtype=torch.long),
        full_rank=_unexamined(b),
        image_dim=_unexamined(b),
        n_distinct=0,
        distance_ratio=None,
        n_starts=plan.n_starts,
        n_limits=torch.zeros(b, dtype=torch.long),
        starts_converged=torch.zeros(b, dtype=torch.long),
        driven=False,
    )


def _all_starts(plan: _DependencePlan, base: LoopedSystem) -> torch.Tensor:
    """``(B · n_starts, *state_shape)`` starts, input by input: the first as ``starts`` says
    (``h_0 = x`` only when the state has the input's shape), the others noisy."""
    b, per, shape = plan.b, plan.n_starts, plan.system.state_shape
    if tuple(plan.xs.shape[1:]) == shape and plan.start == "input":
        return base.initial_states("input", per, scale=plan.scale, seed=plan.seed)
    h0 = base.initial_states("normal", per, scale=plan.scale, seed=plan.seed)
    if plan.start == "zeros":
        h0 = h0.reshape(b, per, *shape)
        h0[:, 0] = 0
        h0 = h0.reshape(b * per, *shape)
    return h0


def _iterate_inputs(plan: _DependencePlan) -> _Limits:
    """Plain iteration of every start of every input at once (no throw: a start that does not
    converge is a finding, not an error)."""
    b, per = plan.b, plan.n_starts
    base = plan.system.with_input(plan.xs)
    h0 = _all_starts(plan, base)
    run_sys = base.repeat_input(per) if per > 1 else base
    sol = solve(
        run_sys,
        h0,
        method="picard",
        tol=plan.tol,
        atol=plan.tol,
        max_steps=plan.max_steps,
        throw=False,
    )
    return _Limits(
        converged=sol.converged.cpu().reshape(b, per),
        states=sol.state.detach().reshape(b, per, *plan.system.state_shape),
    )


def _sensitivity_evidence(plan: _DependencePlan, limits: _Limits) -> _SensitivityEvidence:
    """``‖dh*/dx‖₂`` at each converged input's ``h*`` and, where its solves converged and the
    state is small enough for the dense step Jacobian, the rank evidence."""
    system, xs, b = plan.system, plan.xs, plan.b
    if not system.driven:
        # f ignores x: dh*/dx = 0 by construction, whether or not an input converged
        return _SensitivityEvidence(
            torch.zeros(b, dtype=system.dtype),
            torch.zeros(b, dtype=torch.long),
            _unexamined(b),
            _unexamined(b),
        )
    conv, fps = limits.first_converged, limits.fixed_points
    norms = torch.full((b,), math.nan, dtype=system.dtype)
    ranks, full, image = _unexamined(b), _unexamined(b), _unexamined(b)
    if bool(conv.any()):
        idx = torch.nonzero(conv).flatten()
        sub = system.with_input(xs[idx])
        assert sub.x is not None
        sens = _Sensitivity(sub, fps[idx], sub.x)
        nrm = sens.norm(plan.seed, plan.sensitivity_steps).cpu()
        ok = sens.solved_rows.cpu()
        norms[idx[ok]] = nrm[ok]
        good = idx[ok]
        if good.numel() and system.state_dim <= plan.dense_limit:
            rk, fr, im = _rank_evidence(
                system.with_input(xs[good]), fps[good], xs[good], plan.rank_tol
            )
            ranks[good], full[good], image[good] = rk, fr, im
    return _SensitivityEvidence(norms, ranks, full, image)


def _distance_ratio(points: torch.Tensor, inputs: torch.Tensor) -> float | None:
    """Mean pairwise distance of ``points`` over that of their ``inputs`` (None below two)."""
    m = int(points.shape[0])
    if m < 2:
        return None
    dist = torch.cdist(points, points)
    xin = inputs.reshape(m, -1).double().cpu()
    dx = torch.cdist(xin, xin)
    mask = ~torch.eye(m, dtype=torch.bool)
    return float(dist[mask].mean() / torch.clamp(dx[mask].mean(), min=1e-300))


def _spread(plan: _DependencePlan, limits: _Limits) -> _Spread:
    """Distinct limits per input and across inputs, and the distance ratio.

    Two limits are one when a ball of ``1e3 · tol`` times the largest converged limit's norm
    (at least 1) covers both: the iteration stops within about ``tol`` of a point, so closer
    limits cannot be told apart.
    """
    system, b, per = plan.system, plan.b, plan.n_starts
    conv_all = limits.converged
    all_flat = system.flatten(limits.states.reshape(b * per, *system.state_shape)).double().cpu()
    ok_flat = all_flat[conv_all.reshape(-1)]
    scale_fp = max(1.0, float(ok_flat.norm(dim=1).max())) if ok_flat.shape[0] else 1.0
    radius = 1e3 * plan.tol * scale_fp
    by_input = all_flat.reshape(b, per, -1)
    n_limits = torch.tensor(
        [_cover(by_input[i][conv_all[i]], radius) for i in range(b)], dtype=torch.long
    )
    ci = torch.nonzero(limits.first_converged).flatten()
    flat = by_input[ci, 0]
    return _Spread(
        settled=conv_all.sum(dim=1),
        n_limits=n_limits,
        n_distinct=_cover(flat, radius),
        distance_ratio=_distance_ratio(flat, plan.xs[ci]),
    )


def _moving_verdict(
    plan: _DependencePlan, sens: _SensitivityEvidence, spread: _Spread, note: str
) -> tuple[str, str]:
    """Verdict and reason when every input converged and ``h*`` moves with ``x`` at each: the
    rank decides between *strong* and *partial* (*undetermined* when it was not examined)."""
    b, n, n_in = plan.b, plan.system.state_dim, int(plan.xs[0].numel())
    norms, ranks, full, image = sens.norm, sens.rank, sens.full_rank, sens.image_dim
    span = f"‖dh*/dx‖ in [{float(norms.min()):.3g}, {float(norms.max()):.3g}]"
    if bool((ranks < 0).any()):
        return "undetermined", (
            f"all {b} inputs converged and h* moves with x ({span}), but the rank of "
            f"dh*/dx was not examined: the state dimension {n} exceeds dense_limit="
            f"{plan.dense_limit} (the check needs the dense n × (n + n_input) step Jacobian); "
            f"{note}"
        )
    if bool((ranks == full).all()):

        def span_of(t: torch.Tensor) -> str:
            lo, hi = int(t.min()), int(t.max())
            return str(lo) if lo == hi else f"{lo}-{hi}"

        return "strong", (
            f"all {b} inputs converged, to {spread.n_distinct} distinct points; {span}, of full "
            f"rank {span_of(full)} = min(input dim {n_in}, local image dim "
            f"{span_of(image)}) at every input; distance ratio {spread.distance_ratio:.3g}; "
            f"{note}"
        )
    bad = torch.nonzero(ranks < full).flatten()
    i0 = int(bad[0])
    return "partial", (
        f"all {b} inputs converged and h* moves with x ({span}), but dh*/dx is "
        f"rank-deficient at {bad.numel()}/{b} inputs (e.g. input {i0}: rank "
        f"{int(ranks[i0])} < {int(full[i0])} = min(input dim {n_in}, local image dim "
        f"{int(image[i0])})): h* is locally constant along some input directions "
        f"there, and strong input-dependence needs full rank; {note}"
    )


def _dependence_verdict(
    plan: _DependencePlan, limits: _Limits, sens: _SensitivityEvidence, spread: _Spread
) -> tuple[str, str]:
    """The verdict and its reason, by the definition (SCIENCE.md §2; see
    :class:`InputDependence`): the first case that applies wins."""
    b, max_steps = plan.b, plan.max_steps
    conv, fps, xs, norms = limits.first_converged, limits.fixed_points, plan.xs, sens.norm
    n_conv, n_distinct = int(conv.sum()), spread.n_distinct
    note = _starts_note(plan.n_starts, spread.n_limits, spread.settled)
    if not plan.system.driven and n_conv == 0:
        # the structure says any fixed point ignores x, but none was reached: nothing was seen
        return "undetermined", (
            f"no input converged from its first start (0/{b}: on a cycle, still moving after "
            f"{max_steps} steps, or diverged), so no fixed point was seen; without recall any "
            f"fixed point would ignore x (f does not depend on x), but this run reached none; "
            f"{note}"
        )
    if not plan.system.driven:
        # f does not depend on x: its fixed-point set is the same for every input (claim C1),
        # so the verdict is none by construction unless x-dependent starts pick different basins
        return "weak" if n_distinct > 1 else "none", (
            f"no recall: f does not depend on x, so its fixed points and dh*/dx = 0 do not "
            f"either (by construction); from the first start, {n_conv}/{b} inputs converged, to "
            f"{n_distinct} distinct point(s); {note}"
        )
    if b < 2:
        return "undetermined", (
            f"one input ({n_conv} converged); input-dependence compares at least two"
        )
    if n_conv < b:
        return "undetermined", (
            f"only {n_conv}/{b} inputs converged from their first start (the others are on a "
            f"cycle, still moving after {max_steps} steps, or diverged): input-dependence is a "
            f"statement about every input's fixed point; {note}"
        )
    if bool(torch.isnan(norms).any()):
        # the linear solves behind dh*/dx did not converge: the sensitivity is unknown, and an
        # unknown value is not a zero one
        n_bad = int(torch.isnan(norms).sum())
        return "undetermined", (
            f"{n_conv}/{b} inputs converged to {n_distinct} distinct points, but the GMRES "
            f"solves for dh*/dx = (I − ∂f/∂h)⁻¹ ∂f/∂x did not converge at {n_bad}: its size is "
            f"unknown there (1 is nearly an eigenvalue of ∂f/∂h); {note}"
        )
    # zero below sensitivity_tol relative to ‖h*‖ / ‖x‖, the scale of a unit sensitivity
    rel = torch.tensor(
        [float(fps[i].norm()) / max(float(xs[i].norm()), 1e-300) for i in range(b)],
        dtype=plan.system.dtype,
    )
    moves = (norms > plan.sensitivity_tol * torch.clamp(rel, min=1e-3)) & conv
    if bool(moves.all()):
        return _moving_verdict(plan, sens, spread, note)
    if n_distinct > 1:
        return "weak", (
            f"all {b} inputs converged, to {n_distinct} distinct points, but dh*/dx is zero "
            f"(below tolerance) at {b - int(moves.sum())}: the point changes only by switching "
            f"basins there; {note}"
        )
    return "none", f"all {b} inputs reached one point and dh*/dx is zero; {note}"


def input_dependence(
    model_or_system_factory: SystemSource,
    inputs: torch.Tensor | list[torch.Tensor],
    *,
    start: StartKind = "input",
    n_starts: int = 4,
    scale: float = 1.0,
    tol: float | None = None,
    max_steps: int = 1000,
    starts: StartKind | None = None,
    probes: int | None = None,
    sensitivity_tol: float = 1e-6,
    sensitivity_steps: int = 40,
    rank_tol: float | None = None,
    dense_limit: int = 4096,
    seed: int = 0,
) -> InputDependence:
    """Does the reached fixed point depend on the input, smoothly and in every direction?

    For each input, iterate from ``n_starts`` starts: the first is ``h_0 = x`` when the state
    has the input's shape (else as ``start`` says), the others add ``N(0, scale²)`` noise. The
    first start's limit is ``h*(x)``; the others count the limits (attractors) each input has.
    With recall, the implicit function theorem gives ``dh*/dx = (I − ∂_h f)⁻¹ ∂_x f`` (a
    ``n_state × n_input`` matrix), applied matrix-free (GMRES on Jacobian products): its norm by
    Golub–Kahan on ``S`` and ``Sᵀ``. Its rank equals ``rank ∂_x f`` (``I − ∂_h f`` is
    invertible), read from the dense step Jacobian ``[∂_h f, ∂_x f]`` (``n`` reverse products
    per input), and is compared with the full rank ``min(n_input, d)``, ``d`` the local
    dimension of the step's image (``n`` for a generic map; a normalization that puts each
    token on a sphere removes one direction per token). Across inputs: the number of distinct
    fixed points and the ratio of mean pairwise fixed-point distance to mean pairwise input
    distance.

    The verdict follows the definition (SCIENCE.md §2): **strong** needs every input converged
    and, at each, ``dh*/dx ≠ 0`` of full rank; rank-deficient but moving is **partial**; see
    :class:`InputDependence` for the others. Without recall ``f`` does not depend on ``x``, so
    ``dh*/dx = 0`` by construction and the verdict can only be *none* or *weak* (claim C1): that
    is reported, not raised.

    Parameters
    ----------
    model_or_system_factory : LoopedSystem, nn.Module, or callable
        A system (its input is replaced by ``inputs``), a module (wrapped with
        :meth:`LoopedSystem.from_module`), or a factory ``x -> LoopedSystem``.
    inputs : torch.Tensor or list of tensors
        ``(B, *input_shape)``, ``B >= 1`` (a verdict other than *none* needs ``B >= 2``).
    start : {"input", "zeros", "normal"}
        First start of each input: ``h_0 = x`` (``"input"``, when the state has the input's
        shape; otherwise ``"normal"``), zeros, or an ``N(0, scale²)`` draw (the same keyword
        and kinds as :func:`find_fixed_points`' ``start``).
    starts : {"input", "zeros", "normal"}, optional
        The former name of ``start``; deprecated (elsewhere ``starts`` is a tensor of states).
    n_starts : int
        Starts per input; the ones after the first are the first plus ``N(0, scale²)`` noise
        (``"input"``) or ``N(0, scale²)`` draws. With one, a second attractor of the same input
        cannot be seen, and the reason says so.
    scale : float
        Standard deviation of the start noise.
    tol, max_steps :
        Iteration settings.
    probes : int, optional
        Deprecated and ignored (a warning says so): the rank no longer comes from random
        probes of ``dh*/dx`` (a lower bound only)
        but from the dense ``∂_x f``; accepted so that existing calls keep working.
    sensitivity_tol : float
        ``‖dh*/dx‖`` below this (relative to ``‖h*‖ / ‖x‖``) counts as zero.
    sensitivity_steps : int
        Golub–Kahan steps for ``‖dh*/dx‖₂`` (each costs two GMRES solves); fewer steps give a
        cheaper lower estimate of the norm (exact after ``min(n_state, n_input)`` steps).
    rank_tol : float, optional
        Relative threshold of the numerical rank (default ``√eps`` of the dtype); the image
        dimension uses ``√rank_tol``.
    dense_limit : int
        Largest state dimension at which the rank is examined (it needs the dense
        ``n × (n + n_input)`` step Jacobian per input); above it *strong* cannot be shown.
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

    A state of 12 and an input of 4: ``dh*/dx`` is a 12 × 4 matrix, of full rank 4.

    >>> g = dy.models.ContractiveTanh(n=12, d_in=4, lipschitz=0.9, seed=2)
    >>> dep = dy.input_dependence(g, xs[:, :4])
    >>> dep.verdict, dep.sensitivity_rank.tolist(), dep.full_rank.tolist()
    ('strong', [4, 4, 4, 4], [4, 4, 4, 4])
    """
    plan = _dependence_plan(
        model_or_system_factory,
        inputs,
        start=start if starts is None else _former_start(start, starts),
        start_name="start" if starts is None else "starts",
        n_starts=n_starts,
        scale=scale,
        tol=tol,
        max_steps=max_steps,
        probes=probes,
        sensitivity_tol=sensitivity_tol,
        sensitivity_steps=sensitivity_steps,
        rank_tol=rank_tol,
        dense_limit=dense_limit,
        seed=seed,
    )
    if plan.system.x is None and not plan.system.driven:
        return _inputless_dependence(plan)
    limits = _iterate_inputs(plan)
    sens = _sensitivity_evidence(plan, limits)
    spread = _spread(plan, limits)
    verdict, reason = _dependence_verdict(plan, limits, sens, spread)
    lead = _multistable_lead(plan.n_starts, spread.n_limits)
    if lead is not None:  # a verdict (even "strong") never hides several limits of one input
        reason = f"{lead}; {reason}"
    return InputDependence(
        verdict=verdict,
        reason=reason,
        converged=limits.first_converged,
        fixed_points=limits.fixed_points,
        sensitivity_norm=sens.norm,
        sensitivity_rank=sens.rank,
        full_rank=sens.full_rank,
        image_dim=sens.image_dim,
        n_distinct=spread.n_distinct,
        distance_ratio=spread.distance_ratio,
        n_starts=plan.n_starts,
        n_limits=spread.n_limits,
        starts_converged=spread.settled,
        driven=plan.system.driven,
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
        ``‖dh*/dx‖₂`` for driven systems (an ``n_state × n_input`` matrix); NaN, with a note,
        where the linear solves behind it did not converge.
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
    notes : tuple of str
        What could not be computed, where, and why (a NaN entry always has one): e.g. GMRES on
        ``I − J`` did not converge at a state where 1 is nearly an eigenvalue of ``J``.
    kind, trust :
        ``"estimate"`` and ESTIMATED: from sampled starts and iterated solves.

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
    notes: tuple[str, ...] = ()
    kind: str = field(default="estimate", init=False)
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

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
            "trust": self.trust.value,
            "exact_linear_algebra": self.exact,
            "spectral_radius": self.spectral_radius.tolist(),
            "spectral_norm": self.spectral_norm.tolist(),
            "eigenvalues": torch.view_as_real(self.eigenvalues.cpu()).tolist(),
            "transient": {str(k): v.tolist() for k, v in self.transient.items()},
            "max_transient": self.max_transient.tolist(),
            "sigma_min_I_minus_J": [_finite_or_none(v) for v in self.sigma_min.tolist()],
            "ift_norm": None
            if self.ift_norm is None
            else [_finite_or_none(v) for v in self.ift_norm.tolist()],
            "basin_radius": self.basin_radius.tolist(),
            "basin_samples": self.basin_samples,
            "radii": list(self.radii),
            "return_fraction": self.return_fraction.tolist(),
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        def most(t: torch.Tensor, largest: bool) -> str:
            ok = t[~torch.isnan(t)]
            if ok.numel() == 0:
                return "unknown"
            return f"{float(ok.max() if largest else ok.min()):.3g}"

        ift = "" if self.ift_norm is None else f", ‖dh*/dx‖ max {most(self.ift_norm, True)}"
        notes = "".join(f"; note: {n}" for n in self.notes)
        return (
            f"geometry: ρ max {float(self.spectral_radius.max()):.4g}, ‖J‖₂ max "
            f"{float(self.spectral_norm.max()):.4g}, transient max "
            f"{float(self.max_transient.max()):.4g}, σ_min(I − J) min "
            f"{most(self.sigma_min, False)}{ift}, basin radius min "
            f"{float(self.basin_radius.min()):.3g} (×‖h*‖, {self.basin_samples} samples){notes}"
        )


@dataclass(frozen=True)
class _GeometryPlan:
    """:func:`geometry`'s arguments, checked: the system on the analysed states' inputs, the
    states in its dtype, and the settings the stages read (``radii`` increasing, ``powers`` the
    transient powers 1, 2, 4, …, ``exact`` the choice of dense linear algebra)."""

    system: LoopedSystem
    h_star: torch.Tensor
    k: int
    powers: tuple[int, ...]
    basin_samples: int
    radii: tuple[float, ...]
    max_steps: int
    exact: bool
    seed: int

    @property
    def dims(self) -> tuple[int, int, torch.dtype, torch.device]:
        """``(N, n, dtype, device)``: the leading arguments of the Krylov routines."""
        s = self.system
        return int(self.h_star.shape[0]), s.state_dim, s.dtype, s.device


@dataclass(frozen=True)
class _Linearization:
    """What ``J = ∂f/∂h`` says at each fixed point (see :class:`Geometry` for each entry), with
    a note for each quantity an iterative method did not pin down."""

    eigenvalues: torch.Tensor
    spectral_radius: torch.Tensor
    spectral_norm: torch.Tensor
    transient: dict[int, torch.Tensor]
    sigma_min: torch.Tensor
    notes: tuple[str, ...]


def _geometry_plan(
    system: LoopedSystem,
    h_star: torch.Tensor,
    x: torch.Tensor | None,
    *,
    k: int,
    transient_steps: int,
    basin_samples: int,
    radii: tuple[float, ...],
    max_steps: int,
    dense_limit: int,
    seed: int,
) -> _GeometryPlan:
    """Check :func:`geometry`'s arguments (in a fixed order, so that the first complaint a caller
    sees does not change) and fix what every stage shares."""
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
    xx = system._input_for(call, h_star.shape[0], x, check_values=x is not None)
    return _GeometryPlan(
        # an autonomous system's x is only a source of starts, with its own batch size: kept
        system=system.with_input(xx) if (system.driven and xx is not None) else system,
        h_star=h_star.to(system.dtype),
        k=k,
        powers=tuple(2**i for i in range(int(math.log2(transient_steps)) + 1)),
        basin_samples=basin_samples,
        radii=tuple(sorted(radii)),
        max_steps=max_steps,
        exact=system.state_dim <= dense_limit,
        seed=seed,
    )


def _dense_linearization(plan: _GeometryPlan) -> _Linearization:
    """Every quantity from the dense Jacobian, exact to rounding."""
    sub, n = plan.system, plan.system.state_dim
    J = jacobian(sub, plan.h_star)
    ev = torch.linalg.eigvals(J)
    ev = torch.gather(ev, 1, torch.argsort(ev.abs(), dim=1, descending=True))[:, : min(plan.k, n)]
    eye = torch.eye(n, dtype=sub.dtype, device=sub.device)
    return _Linearization(
        eigenvalues=ev,
        spectral_radius=ev[:, 0].abs(),  # sorted by modulus: the first is the largest
        spectral_norm=torch.linalg.matrix_norm(J, ord=2),
        transient={
            p: torch.linalg.matrix_norm(torch.linalg.matrix_power(J, p), ord=2) for p in plan.powers
        },
        sigma_min=torch.linalg.svdvals(eye - J)[:, -1],
        notes=(),
    )


def _power_norm(
    op: JacobianOperator, p: int, dims: tuple[int, int, torch.dtype, torch.device], seed: int
) -> torch.Tensor:
    """``‖J^p‖₂`` per state to about 4 digits, by Golub–Kahan on ``p`` products with ``J``
    (and with ``Jᵀ``): ``J^p`` itself is never formed."""

    def mv(v: torch.Tensor) -> torch.Tensor:
        for _ in range(p):
            v = op.matvec(v)
        return v

    def rmv(u: torch.Tensor) -> torch.Tensor:
        for _ in range(p):
            u = op.rmatvec(u)
        return u

    n = dims[1]
    return golub_kahan(mv, rmv, *dims, k=1, tol=1e-4, max_steps=min(n, 60), seed=seed).values[:, 0]


def _krylov_sigma_min(
    op: JacobianOperator, dims: tuple[int, int, torch.dtype, torch.device], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``σ_min(I − J) = 1 / ‖(I − J)⁻¹‖₂`` per state, by Golub–Kahan on GMRES solves with
    ``I − J`` and ``I − Jᵀ``; returns it (NaN where a solve did not converge: near a singular
    ``I − J`` a stopped solve says nothing about the norm) and the per-state solve flags."""
    n_states, n, _, device = dims
    solved = torch.ones(n_states, dtype=torch.bool, device=device)

    def inverse(
        product: Callable[[torch.Tensor], torch.Tensor],
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``b ↦ (I − P)⁻¹ b`` for the product ``P`` (``J`` or ``Jᵀ``), tracking convergence."""

        def solve_with(b: torch.Tensor) -> torch.Tensor:
            nonlocal solved
            out = gmres(
                lambda v: v - product(v), b, rtol=1e-10, restart=min(60, n), max_restarts=10
            )
            solved = solved & out.converged.to(solved.device)
            return out.x

        return solve_with

    big = golub_kahan(
        inverse(op.matvec),
        inverse(op.rmatvec),
        *dims,
        k=1,
        tol=1e-6,
        max_steps=min(n, 60),
        seed=seed,
    )
    top = big.values[:, 0]
    return torch.where(solved, 1.0 / top, torch.full_like(top, math.nan)), solved


def _krylov_linearization(plan: _GeometryPlan) -> _Linearization:
    """Krylov estimates (Arnoldi for the eigenvalues, Golub–Kahan for the norms), with a note for
    each quantity that stopped short of its tolerance at some state."""
    sub, dims, seed = plan.system, plan.dims, plan.seed
    n_states, n = dims[0], dims[1]
    op = _operator_at(sub, plan.h_star)
    tol = math.sqrt(torch.finfo(sub.dtype).eps)
    # dense_limit=0: the plan chose Krylov, and an unconverged Ritz value is noted, not replaced
    ev, ev_converged, _ = _top_eigenvalues(
        sub, plan.h_star, k=plan.k, dense_limit=0, seed=seed, dense_fallback=False
    )
    gk = golub_kahan(op.matvec, op.rmatvec, *dims, k=1, tol=tol, max_steps=min(n, 300), seed=seed)
    notes = [
        f"{what} at {int((~conv).sum())} of {n_states} states: the Krylov method "
        f"did not reach its tolerance in {min(n, 300)} steps (best estimates shown)"
        for what, conv in (("eigenvalues and ρ", ev_converged), ("‖J‖₂", gk.converged))
        if not bool(conv.all())
    ]
    transient = {p: _power_norm(op, p, dims, seed) for p in plan.powers}
    smin, solved = _krylov_sigma_min(op, dims, seed)
    if not bool(solved.all()):
        notes.append(
            f"σ_min(I − J) unknown (NaN) at {int((~solved).sum())} of {n_states} states: "
            "GMRES on (I − J) s = b did not converge (1 is nearly an eigenvalue of J there)"
        )
    return _Linearization(
        eigenvalues=ev,
        spectral_radius=ev.abs().amax(dim=1),
        spectral_norm=gk.values[:, 0],
        transient=transient,
        sigma_min=smin,
        notes=tuple(notes),
    )


def _linearize_at(plan: _GeometryPlan) -> _Linearization:
    """The one switch between dense linear algebra and Krylov estimates."""
    return _dense_linearization(plan) if plan.exact else _krylov_linearization(plan)


def _ift_norm(plan: _GeometryPlan) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """``‖dh*/dx‖₂`` per state (None without recall) and its notes: NaN, with a note, where the
    GMRES solves behind it did not converge (where the implicit function theorem fails)."""
    sub = plan.system
    x = sub.step_x
    if x is None:
        return None, ()
    # dh*/dx is n_state × n_input; any error here is a bug and propagates
    sens = _Sensitivity(sub, plan.h_star, x)
    ift = sens.norm(plan.seed)
    bad = ~sens.solved_rows
    if not bool(bad.any()):
        return ift, ()
    return torch.where(bad, torch.full_like(ift, math.nan), ift), (
        f"‖dh*/dx‖ unknown (NaN) at {int(bad.sum())} of {plan.dims[0]} states: GMRES on "
        "(I − ∂f/∂h) s = ∂f/∂x v did not converge (1 is nearly an eigenvalue of ∂f/∂h "
        "there, where the implicit function theorem does not apply)",
    )


def _return_fraction(
    plan: _GeometryPlan,
    rep: LoopedSystem,
    zs: torch.Tensor,
    scale: torch.Tensor,
    r: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Per state, the fraction of ``basin_samples`` random perturbations of norm ``r · scale``
    from the flat fixed points ``zs`` that iterate back to within ``1e3 · tol · scale`` of them
    (``rep``: the system with each input repeated once per perturbation)."""
    n_states, n = zs.shape
    samples = plan.basin_samples
    rtol = default_tolerance(rep.dtype)
    d = torch.randn(n_states, samples, n, generator=gen, dtype=rep.dtype, device=rep.device)
    d = d / d.norm(dim=2, keepdim=True) * (r * scale)[:, None, None]
    starts = (zs[:, None, :] + d).reshape(-1, n)
    sol = solve(
        rep,
        rep.unflatten(starts),
        method="picard",
        tol=rtol,
        atol=rtol,
        max_steps=plan.max_steps,
        throw=False,
    )
    back = (rep.flatten(sol.state).reshape(n_states, samples, n) - zs[:, None, :]).norm(
        dim=2
    ) <= 1e3 * rtol * scale[:, None]
    ok = back & sol.converged.reshape(n_states, samples).to(back.device)
    return ok.double().mean(dim=1).cpu()


def _basin_radius(plan: _GeometryPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Per state, the empirical basin radius and the ``(N, len(radii))`` return fractions.

    The radius is the largest of the increasing ``radii`` up to which every radius had at least
    95% of its perturbations return (0 if the smallest already fails): one seeded generator
    draws every radius's perturbations, in order.
    """
    sub, n_states = plan.system, plan.dims[0]
    gen = torch.Generator(device=sub.device).manual_seed(plan.seed + 13)
    zs = sub.flatten(plan.h_star)
    scale = torch.clamp(zs.norm(dim=1), min=1.0)
    rep = sub.repeat_input(plan.basin_samples) if sub.step_x is not None else sub
    fractions = []
    radius = torch.zeros(n_states, dtype=sub.dtype)
    alive = torch.ones(n_states, dtype=torch.bool)
    for r in plan.radii:
        frac = _return_fraction(plan, rep, zs, scale, r, gen)
        fractions.append(frac)
        good = alive & (frac >= 0.95)
        radius = torch.where(good, torch.full_like(radius, r), radius)
        alive = good
    return radius, torch.stack(fractions, dim=1)


def _assemble_geometry(
    plan: _GeometryPlan,
    linear: _Linearization,
    ift: tuple[torch.Tensor | None, tuple[str, ...]],
    basin: tuple[torch.Tensor, torch.Tensor],
) -> Geometry:
    """The :class:`Geometry` of the stages' results, detached, notes in the order computed."""
    ift_norm, ift_notes = ift
    radius, fractions = basin
    return Geometry(
        eigenvalues=linear.eigenvalues.detach(),
        spectral_radius=linear.spectral_radius.detach(),
        spectral_norm=linear.spectral_norm.detach(),
        transient={p: t.detach() for p, t in linear.transient.items()},
        max_transient=torch.stack(list(linear.transient.values())).amax(dim=0).detach(),
        sigma_min=linear.sigma_min.detach(),
        ift_norm=None if ift_norm is None else ift_norm.detach(),
        basin_radius=radius,
        basin_samples=plan.basin_samples,
        radii=plan.radii,
        return_fraction=fractions,
        exact=plan.exact,
        notes=linear.notes + ift_notes,
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
    plan = _geometry_plan(
        system,
        h_star,
        x,
        k=k,
        transient_steps=transient_steps,
        basin_samples=basin_samples,
        radii=radii,
        max_steps=max_steps,
        dense_limit=dense_limit,
        seed=seed,
    )
    return _assemble_geometry(plan, _linearize_at(plan), _ift_norm(plan), _basin_radius(plan))


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
            "AxesReport (estimated unless marked checked or certified)",
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
    (default: the system's own; also from ``n_starts`` starts per input, so that several limits
    of one input are seen), ``geometry`` at each input's reached fixed point, and (unless
    ``contraction=False``) :func:`check_contraction` on ``domain``. Inputs need not have the
    state's size.

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
    start: StartKind = (
        "input"
        if (system.x is not None and tuple(system.x.shape[1:]) == system.state_shape)
        else "normal"
    )
    reach = reachability(system, n_starts=n_starts, start=start, seed=seed)
    xs = system.x
    if xs is None:
        dep = input_dependence(
            system, torch.zeros(1, 1, dtype=system.dtype), n_starts=n_starts, seed=seed
        )
    else:
        dep = input_dependence(system, xs, n_starts=n_starts, seed=seed)
    geo = None
    conv = torch.nonzero(dep.converged).flatten()
    if conv.numel():
        step_x = system.step_x  # the inputs the step takes, None when it takes none
        sub = system.with_input(step_x[conv]) if step_x is not None else system
        geo = geometry(sub, dep.fixed_points[conv], basin_samples=basin_samples, seed=seed)
    verdict = check_contraction(system, domain, seed=seed) if contraction else None
    return AxesReport(reachability=reach, input_dependence=dep, geometry=geo, contraction=verdict)
