"""Multi-start fixed-point search: attractors reached by iteration, unstable points found by
root-finding, stability classes, cycles, continua, and a count with confidence."""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ._executor import RayExecutor, check_executor, dumps, executor_workers, loads
from ._interval._enumerate import Enumeration, _check_box, enumerate_fixed_points
from ._interval._jet import trace_map
from ._interval._prove import PointProof, prove_point
from ._linearize import _top_eigenvalues, jacobian
from ._results import Outcome, Solution, Trust
from ._solvers import default_tolerance, solve
from ._solvers.newton_krylov import NewtonKrylov
from ._stats import UnseenEstimate, chao1, clopper_pearson
from ._system import LoopedSystem
from ._types import SearchMode, StartKind
from ._validate import (
    call_form,
    check_choice,
    check_finite_tensor,
    check_memory,
    check_positive_float,
    check_positive_int,
    check_solvable_dtype,
    check_state_shape,
)
from .errors import InvalidArgumentError

__all__ = ["Continuum", "Cycle", "FixedPoint", "FixedPointSet", "find_fixed_points"]

STABILITY = ("stable", "marginal", "saddle", "unstable")


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class FixedPoint:
    """One isolated fixed point ``h* = f(h*, x)`` with its local spectrum.

    Attributes
    ----------
    state : torch.Tensor
        ``(*state_shape)``.
    input_index : int
        Which input of the system it belongs to (0 for autonomous maps).
    residual : float
        ``‖f(h*) − h*‖₂``.
    found_by : tuple of str
        ``"iteration"`` (plain iteration converged to it: it is reached), ``"newton"`` (root-finding
        from a start or a perturbed trajectory state), ``"qmin"`` (where Newton from a perturbed
        state failed: minimisation of ``½‖f(h) − h‖²`` from it, then Newton), ``"bridge"``
        (Newton from the midpoint of two points).
    basin_count : int
        Starts of this input whose plain iteration converged here.
    basin_fraction : float
        ``basin_count / starts per input``.
    basin_interval : (float, float)
        95% Clopper–Pearson interval of the basin fraction.
    eigenvalues : torch.Tensor
        Eigenvalues of ``∂f/∂h`` at ``state`` (all, or the top ``k`` by modulus), complex.
    spectral_radius : float
    n_unstable : int
        Eigenvalues with ``|λ| > 1 + δ`` (among those computed).
    n_unstable_exact : bool
        Whether ``eigenvalues`` is the full spectrum, so that ``n_unstable`` is the index.
    nullity : int
        Eigenvalues within ``δ`` of 1 (a direction of non-isolation).
    stability : {"stable", "marginal", "saddle", "unstable"}
        Stable: every ``|λ| < 1 − δ``; marginal: some ``|λ|`` within ``δ`` of 1; saddle: some
        inside and some outside; unstable: every computed ``|λ| > 1 + δ``.
    proof : PointProof or None
        The rigorous proof attempted at this point (:func:`prove_fixed_point`) when the search
        ran with ``prove``: existence and uniqueness within a radius, the stability class from
        eigenvalue enclosures, a certified basin for a stable point. None when not attempted.

    Examples
    --------
    :func:`find_fixed_points` returns them in :attr:`FixedPointSet.points`:

    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> found = dy.find_fixed_points(system, 16, mode="all")
    >>> p = found.points[0]
    >>> p.state, p.stability, round(p.spectral_radius, 6)
    (tensor([-1., -1.], dtype=torch.float64), 'stable', 0.6)
    >>> p.found_by, p.basin_count
    (('bridge', 'iteration', 'newton'), 6)
    """

    state: torch.Tensor
    input_index: int
    residual: float
    found_by: tuple[str, ...]
    basin_count: int
    basin_fraction: float
    basin_interval: tuple[float, float]
    eigenvalues: torch.Tensor
    spectral_radius: float
    n_unstable: int
    n_unstable_exact: bool
    nullity: int
    stability: str
    proof: PointProof | None = None

    @property
    def trust(self) -> Trust:
        """PROVEN when :attr:`proof` proved a fixed point near :attr:`state`, unique in its
        cube, with the same stability class (rigorous eigenvalue enclosures); else CHECKED when
        the spectrum is the dense one (``n_unstable_exact``): the residual and the eigenvalue
        test are float tests at this computed iterate, true of it, not a proof that a fixed point
        lies near it; ESTIMATED when the spectrum is Arnoldi's top Ritz values."""
        if self.proof is not None and self.proof.proven and self.proof.stability == self.stability:
            return Trust.PROVEN
        return Trust.CHECKED if self.n_unstable_exact else Trust.ESTIMATED

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (the state as its norm; eigenvalues as ``[re, im]`` pairs).

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> found = dy.find_fixed_points(system, 16, mode="all")
        >>> d = found.with_stability("unstable")[0].to_dict()
        >>> d["stability"], d["eigenvalues"], d["n_unstable"]
        ('unstable', [[1.2, 0.0], [1.2, 0.0]], 2)
        """
        return {
            "input_index": self.input_index,
            "state_norm": float(self.state.norm()),
            "residual": self.residual,
            "found_by": list(self.found_by),
            "basin_count": self.basin_count,
            "basin_fraction": self.basin_fraction,
            "basin_interval": list(self.basin_interval),
            "eigenvalues": torch.view_as_real(self.eigenvalues.cpu()).tolist(),
            "spectral_radius": self.spectral_radius,
            "n_unstable": self.n_unstable,
            "n_unstable_exact": self.n_unstable_exact,
            "nullity": self.nullity,
            "stability": self.stability,
            "proof": None if self.proof is None else self.proof.to_dict(),
            "trust": self.trust.value,
        }


@dataclass(frozen=True)
class Cycle:
    """A period-``p`` orbit ``h₀ → h₁ → … → h₀`` (least period ``p ≥ 2``) that iteration settles
    on, classified by the spectrum of ``∂f^p/∂h`` at ``h₀`` (its multipliers; the same at every
    point of the orbit, claim C10). Only attracting orbits that some start settled on are
    reported.

    Examples
    --------
    :func:`find_fixed_points` returns them in :attr:`FixedPointSet.cycles`; the logistic map at
    ``r = 3.2`` has a stable 2-cycle:

    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2))
    >>> starts = torch.linspace(0.1, 0.9, 4, dtype=torch.float64).reshape(4, 1)
    >>> found = dy.find_fixed_points(system, starts=starts, max_steps=200)
    >>> c = found.cycles[0]
    >>> c.period, c.stability, [round(v, 4) for v in c.points.flatten().tolist()]
    (2, 'stable', [0.513, 0.7995])
    >>> round(c.spectral_radius, 6), c.basin_fraction
    (0.16, 1.0)
    """

    period: int
    points: torch.Tensor
    input_index: int
    residual: float
    multipliers: torch.Tensor
    spectral_radius: float
    stability: str
    basin_count: int
    basin_fraction: float
    basin_interval: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2))
        >>> starts = torch.linspace(0.1, 0.9, 4, dtype=torch.float64).reshape(4, 1)
        >>> found = dy.find_fixed_points(system, starts=starts, max_steps=200)
        >>> d = found.cycles[0].to_dict()
        >>> d["period"], d["stability"], [round(v, 4) for v in d["point_norms"]]
        (2, 'stable', [0.513, 0.7995])
        """
        return {
            "period": self.period,
            "input_index": self.input_index,
            "point_norms": [float(p.norm()) for p in self.points],
            "residual": self.residual,
            "multipliers": torch.view_as_real(self.multipliers.cpu()).tolist(),
            "spectral_radius": self.spectral_radius,
            "stability": self.stability,
            "basin_count": self.basin_count,
            "basin_fraction": self.basin_fraction,
            "basin_interval": list(self.basin_interval),
        }


@dataclass(frozen=True)
class Continuum:
    """A connected set of non-isolated fixed points of dimension ``dimension``.

    Reported instead of a count: its points are not isolated, so "how many" has no answer (a
    dedup tolerance would only decide how finely it gets chopped up). ``dimension`` is the
    number of tangent directions confirmed by Newton (an estimate; ``dimension_is_lower_bound``
    when a partial Arnoldi spectrum may have hidden more), and the samples are joined by paths
    of fixed points whose hops are at most ``4·s``, ``s`` the non-isolation test's step (a scale
    of the state): continua closer than that cannot be told apart.

    Examples
    --------
    :func:`find_fixed_points` returns them in :attr:`FixedPointSet.continua`; every point of the
    sphere ``‖h‖ = √3`` is fixed by :class:`~dynamo.models.ZeroBranchRMSNorm` with ``d = 3``:

    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=3))
    >>> found = dy.find_fixed_points(system, 8)
    >>> c = found.continua[0]
    >>> c.dimension, c.samples.shape, len(found.points)
    (2, torch.Size([8, 3]), 0)
    """

    dimension: int
    input_index: int
    samples: torch.Tensor
    basin_count: int
    basin_fraction: float
    evidence: str
    dimension_is_lower_bound: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=3))
        >>> found = dy.find_fixed_points(system, 8)
        >>> d = found.continua[0].to_dict()
        >>> d["dimension"], d["n_samples"], d["basin_fraction"]
        (2, 8, 1.0)
        """
        return {
            "dimension": self.dimension,
            "dimension_is_lower_bound": self.dimension_is_lower_bound,
            "input_index": self.input_index,
            "n_samples": int(self.samples.shape[0]),
            "basin_count": self.basin_count,
            "basin_fraction": self.basin_fraction,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class FixedPointSet:
    """What a multi-start search found: points, cycles, continua, and how sure it is.

    Attributes
    ----------
    points : tuple of FixedPoint
        Isolated fixed points (deduplicated), stable ones first.
    cycles : tuple of Cycle
    continua : tuple of Continuum
    n_inputs, starts_per_input : int
    start_outcomes : dict
        For the iteration starts: how many converged to a point, landed on a cycle or a continuum,
        stayed bounded without settling (``"unconverged"``), diverged, or went non-finite.
    labels : torch.Tensor
        ``(n_inputs · starts_per_input,)``: per iteration start, the index of the attractor it
        reached in :attr:`attractors` order, or -1 unconverged, -2 diverged, -3 non-finite.
    discovery : tuple of int
        Distinct attractors seen after 1, 2, …, N starts (the discovery curve).
    unseen : UnseenEstimate
        Attractors (fixed points, cycles, continua reached by iteration): the basin size that
        the starts would have detected with 95% probability, and a Chao1 estimate of the unseen
        ones (an estimate, not a bound).
    unseen_points : UnseenEstimate or None
        Mode "all": the same for every fixed point (saddles and repellers included), from the
        random sample of perturbed root-finding runs: how often each point was landed on.
        None in mode "reach", which does not search for points iteration cannot reach.
    index_sums : tuple of (int or None)
        Mode "all", per input: the sum of the fixed-point indices ``sign det(I − ∂f/∂h)`` (that
        is ``(−1)^(number of real eigenvalues > 1)``) over the isolated points found. When the
        map sends a ball (any compact convex set) holding every point found into its interior,
        its fixed points are all nondegenerate and the search found every one, they sum to
        exactly 1 (Lefschetz–Hopf); a sum other than 1 for such a map shows that points were
        missed (up to the float eigenvalue signs). The hypothesis is the user's to know (a tanh
        RNN sends every ball of radius ``>= √n`` into its interior; a map with escaping orbits,
        such as Hénon's, sends no ball into itself). None where the index is undefined: a
        degenerate point (eigenvalue within δ of 1), a continuum, a partial (Arnoldi) spectrum,
        or mode "reach". A float eigenvalue test at the computed points (checked, not proven).
    dedup_tol : float
        Distance under which two converged states count as one point.
    dedup_curve : tuple of (float, int)
        Distinct points at other dedup tolerances: a count that moves a lot with the tolerance
        signals points that are not isolated. Iteration's limits within a quarter of the dedup
        radius of their group's polished point count as that point (only one per group is
        polished), so below that scale a continuum's close samples count as one.
    steps : torch.Tensor
        ``(n_inputs · starts_per_input,)``: iterations each start took (until it converged or
        stopped).
    mode, tol, neutral_band, seed, dtype, device, damping :
        Settings (with ``damping < 1`` the reach search iterates ``(1 − α) h + α f(h)``, whose
        attractors can be points that are unstable for ``f`` itself).
    proof_note : str or None
        Why the points carry no proofs, when they do not (not attempted, or the map has an
        operation without a rigorous enclosure); None when proofs were attempted.
    enumerations : tuple of Enumeration
        With ``box``: per input, the branch-and-prune enumeration of every fixed point in the
        box (:func:`enumerate_fixed_points`); complete means proven to be all of them.
    shards : int
        How many pieces the starts' independent work was split into, each run as a task on the
        ``executor`` passed to :func:`find_fixed_points` (1: one piece; with no executor, all of
        it ran in this process).
    trust : Trust
        ESTIMATED: a multi-start search can miss basins, and each point is a float iterate
        (each point's own :attr:`FixedPoint.trust` is PROVEN where its proof succeeded).
    guaranteed : bool
        False (kept for compatibility; read :attr:`trust`).

    Examples
    --------
    :func:`find_fixed_points` returns one:

    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> found = dy.find_fixed_points(system, 16, mode="all")
    >>> len(found.points), found.start_outcomes["converged"], found.trust.value
    (9, 16, 'estimated')
    """

    points: tuple[FixedPoint, ...]
    cycles: tuple[Cycle, ...]
    continua: tuple[Continuum, ...]
    n_inputs: int
    starts_per_input: int
    start_outcomes: dict[str, int]
    labels: torch.Tensor
    discovery: tuple[int, ...]
    unseen: UnseenEstimate
    dedup_tol: float
    dedup_curve: tuple[tuple[float, int], ...]
    mode: str
    tol: float
    neutral_band: float
    seed: int
    dtype: str
    device: str
    steps: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    unseen_points: UnseenEstimate | None = None
    index_sums: tuple[int | None, ...] = ()
    damping: float = 1.0
    proof_note: str | None = None
    enumerations: tuple[Enumeration, ...] = ()
    shards: int = 1
    guaranteed: bool = field(default=False, init=False)
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

    def stable(self) -> tuple[FixedPoint, ...]:
        """The stable points.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> found = dy.find_fixed_points(system, 16, mode="all")
        >>> sorted([round(v) for v in p.state.tolist()] for p in found.stable())
        [[-1, -1], [-1, 1], [1, -1], [1, 1]]
        """
        return tuple(p for p in self.points if p.stability == "stable")

    def with_stability(self, kind: str) -> tuple[FixedPoint, ...]:
        """Points of one stability class.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> found = dy.find_fixed_points(system, 16, mode="all")
        >>> len(found.with_stability("saddle"))
        4
        >>> [round(v, 6) for v in found.with_stability("unstable")[0].state.tolist()]
        [0.0, 0.0]
        """
        check_choice("FixedPointSet.with_stability(kind)", "kind", kind, STABILITY)
        return tuple(p for p in self.points if p.stability == kind)

    def for_input(self, index: int) -> tuple[FixedPoint, ...]:
        """Points of one input.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> found = dy.find_fixed_points(system, 16, mode="all")
        >>> len(found.for_input(0))  # an autonomous map has one input, index 0
        9
        """
        return tuple(p for p in self.points if p.input_index == index)

    def counts(self) -> dict[str, int | None]:
        """Points per stability class, cycles, continua.

        In mode ``"reach"`` only what iteration reaches is searched for, so the saddle and
        unstable counts are ``None`` (not searched) when iteration reached none, not 0: the
        logistic map at ``r = 3.2`` has two unstable fixed points that no start converges to.
        When it reached some (a start on a stable manifold, or a damped iteration), their count
        is a lower bound.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> found = dy.find_fixed_points(system, 16, mode="all")
        >>> found.counts()
        {'stable': 4, 'marginal': 0, 'saddle': 4, 'unstable': 1, 'cycles': 0, 'continua': 0}
        >>> dy.find_fixed_points(system, 16).counts()  # mode "reach"
        {'stable': 4, 'marginal': 0, 'saddle': None, 'unstable': None, 'cycles': 0, 'continua': 0}
        """
        out: dict[str, int | None] = {k: len(self.with_stability(k)) for k in STABILITY}
        if self.mode == "reach":
            for k in ("saddle", "unstable"):
                out[k] = out[k] or None
        out["cycles"] = len(self.cycles)
        out["continua"] = len(self.continua)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> found = dy.find_fixed_points(system, 16, mode="all")
        >>> d = found.to_dict()
        >>> d["kind"], len(d["points"]), d["counts"]["stable"], d["index_sums"]
        ('estimate', 9, 4, [1])
        """
        return {
            "kind": "estimate",
            "trust": self.trust.value,
            "mode": self.mode,
            "points": [p.to_dict() for p in self.points],
            "cycles": [c.to_dict() for c in self.cycles],
            "continua": [c.to_dict() for c in self.continua],
            "counts": self.counts(),
            "n_inputs": self.n_inputs,
            "starts_per_input": self.starts_per_input,
            "start_outcomes": dict(self.start_outcomes),
            "discovery": list(self.discovery),
            "unseen": self.unseen.to_dict(),
            "unseen_points": None if self.unseen_points is None else self.unseen_points.to_dict(),
            "index_sums": list(self.index_sums),
            "proofs": self.proof_summary(),
            "completeness": [e.to_dict() for e in self.enumerations],
            "damping": self.damping,
            "dedup_tol": self.dedup_tol,
            "dedup_curve": [[t, c] for t, c in self.dedup_curve],
            "tol": self.tol,
            "neutral_band": self.neutral_band,
            "seed": self.seed,
            "dtype": self.dtype,
            "device": self.device,
            "shards": self.shards,
        }

    def __str__(self) -> str:
        c = self.counts()
        head = (
            f"FixedPointSet({self.mode}, {self.n_inputs} input(s) x {self.starts_per_input} "
            "starts): "
        )
        if self.mode == "reach":
            if self.points:
                n_stable, n_marginal = len(self.stable()), len(self.with_stability("marginal"))
                other = len(self.points) - n_stable - n_marginal
                parts = [
                    head + f"{len(self.points)} fixed point(s) reached by iteration "
                    f"({n_stable} stable, {n_marginal} marginal"
                    + (f", {other} not attracting" if other else "")
                    + "); unstable points not searched for (mode='all')"
                ]
            else:
                # not "0 fixed points": the map may well have some that no start converged to
                parts = [
                    head + "no start converged to an isolated fixed point; unstable points "
                    "are not searched for in this mode (mode='all' does)"
                ]
        elif self.points:
            parts = [
                head + f"{len(self.points)} isolated points ({c['stable']} stable, "
                f"{c['saddle']} saddle, {c['unstable']} unstable, {c['marginal']} marginal)"
            ]
        else:
            parts = [head + "no isolated fixed point found, by iteration or root-finding"]
        for cont in self.continua:
            parts.append(
                f"  a continuum of dimension {'>= ' if cont.dimension_is_lower_bound else ''}"
                f"{cont.dimension} (input {cont.input_index}; "
                f"{cont.samples.shape[0]} sample points, not a count)"
            )
        for cyc in self.cycles:
            parts.append(
                f"  a {cyc.stability} {cyc.period}-cycle (input {cyc.input_index}, basin "
                f"{100 * cyc.basin_fraction:.1f}%)"
            )
        outcomes = ", ".join(f"{v} {k}" for k, v in self.start_outcomes.items() if v)
        parts.append(f"  iteration starts: {outcomes}")
        unsettled = self.start_outcomes.get("unconverged", 0)
        if self.unseen.observed == 0:
            parts.append(
                "  attractors: none reached (no start settled on a fixed point or short cycle); "
                "nothing can be said about attractors not seen"
            )
        else:
            of = (
                "attractors"
                if self.damping == 1
                else f"attractors of the damped iteration (α = {self.damping:g})"
            )
            parts.append(f"  {of}: {self.unseen}")
            if unsettled:
                parts.append(
                    f"  ({unsettled} start(s) did not settle: their basins are unaccounted for, "
                    "so an attractor may hide there whatever its basin size)"
                )
        if self.unseen_points is not None:
            if self.unseen_points.observed:
                parts.append(f"  fixed points, by random root-finding runs: {self.unseen_points}")
            else:
                parts.append("  fixed points: no random root-finding run converged")
        if self.index_sums:
            defined = [s for s in self.index_sums if s is not None]
            off = [i for i, s in enumerate(self.index_sums) if s is not None and s != 1]
            if len(defined) < len(self.index_sums):
                text = (
                    f"{list(self.index_sums)} (None: undefined, for a degenerate point, a "
                    "continuum or a partial spectrum)"
                )
            elif off:
                text = (
                    f"{list(self.index_sums)}: not 1 for input(s) {off}; if the map sends a ball "
                    "holding every point found into its interior, points were missed there"
                )
            else:
                text = (
                    "all 1: consistent with a complete search, if the map sends a ball holding "
                    "every point found into its interior"
                )
            parts.append(f"  fixed-point index sums (Σ sign det(I − J)) {text}")
        parts.append(f"  proofs: {self._proof_text()}")
        for i, e in enumerate(self.enumerations):
            parts.append(f"  completeness (input {i}): {self._completeness_text(i, e)}")
        return "\n".join(parts)

    def proof_summary(self) -> dict[str, Any]:
        """How many points were proven (Krawczyk), with their radii and certified basins.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> s = dy.find_fixed_points(system, 16, mode="all").proof_summary()
        >>> s["attempted"], s["proven"], s["stability_proven"], s["basins"]
        (9, 9, 9, 4)
        """
        proofs = [p.proof for p in self.points if p.proof is not None]
        ok = [q for q in proofs if q.proven]
        basins = [q.basin.radius for q in ok if q.basin is not None]
        radii = [q.proof_radius for q in ok]
        return {
            "attempted": len(proofs),
            "proven": len(ok),
            "stability_proven": sum(1 for q in ok if q.stability is not None),
            "basins": len(basins),
            "proof_radius": [min(radii), max(radii)] if radii else None,
            "basin_radius": [min(basins), max(basins)] if basins else None,
            "note": self.proof_note,
        }

    def _proof_text(self) -> str:
        s = self.proof_summary()
        if not s["attempted"]:
            return self.proof_note or "not attempted"
        text = f"{s['proven']} of {len(self.points)} points proven to exist and be unique"
        if s["proof_radius"] is not None:
            lo_r, hi_r = s["proof_radius"]
            text += f" within r in [{lo_r:.3g}, {hi_r:.3g}] (max norm)"
        text += f", {s['stability_proven']} with their stability class proven"
        if s["basin_radius"] is not None:
            lo_b, hi_b = s["basin_radius"]
            text += f"; {s['basins']} certified basin(s), radius {lo_b:.3g} to {hi_b:.3g}"
        failed = [p.proof.outcome.label for p in self.points if p.proof and not p.proof.proven]
        if failed:
            from collections import Counter

            text += "; not proven: " + ", ".join(f"{v} {k}" for k, v in Counter(failed).items())
        return text

    def _completeness_text(self, i: int, e: Enumeration) -> str:
        found = len(self.for_input(i))
        if e.complete:
            return (
                f"proven: exactly {len(e.points)} fixed points in the box (the search found "
                f"{found} of them overall)"
            )
        return (
            f"not proven ({len(e.undecided)} boxes undecided, {e.ambiguous} ambiguous, after "
            f"{e.boxes} boxes; {100 * e.decided_fraction:.3g}% of the volume decided; "
            f"{len(e.points)} proven in the box)"
        )

    def __repr__(self) -> str:
        return str(self)


# ---------------------------------------------------------------------- helpers
class _UnionFind:
    """Disjoint sets of ``0 … n − 1`` (path halving; a union keeps the smaller root)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


#: graphs with up to this many nodes and edges get their components from :class:`_UnionFind`:
#: scipy's ``connected_components`` costs about 0.4 ms a call in set-up, 10x a union-find over a
#: few hundred edges
_SMALL_GRAPH = 4096


def _components(m: int, rows: np.ndarray, cols: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the undirected graph on ``0 … m − 1`` with edges
    ``(rows[i], cols[i])``: their number and a label per node (equal labels, same component)."""
    if max(m, len(rows)) > _SMALL_GRAPH:
        graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(m, m))
        count, labels = connected_components(graph, directed=False)
        return int(count), labels
    uf = _UnionFind(m)
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        uf.union(i, j)
    labels = np.array([uf.find(i) for i in range(m)], dtype=np.int64)
    return int(np.count_nonzero(labels == np.arange(m))), labels


def _clusters(points: np.ndarray, groups: np.ndarray, radius: float) -> list[list[int]]:
    """Connected components of "within ``radius``" (single linkage), within each group: exact,
    in about O(N log N).

    A search lands on each fixed point many times, to within Newton's tolerance, and ``k``
    copies of one point are ``k²/2`` KD-tree pairs (100,000 copies of 27 points took 100 s
    that way). Instead, each group is covered greedily by balls of radius ``radius / 2`` around
    leaders (a point not yet covered becomes the next leader; one ball query each): the points
    of one ball are within the radius of each other, so each ball is connected. Two balls are
    joined when some point of one lies within the radius of the other's points (a
    nearest-neighbour query of the smaller against the larger one's KD-tree), which is asked
    only of balls whose leaders are within ``2 · radius``, the most two such points can be
    apart. A grid would do the covering in high dimension only if the copies' spread were far
    below the cell's side; balls do not care. The components come from :func:`_components`.
    """
    n = len(points)
    ball_of = np.full(n, -1, dtype=np.int64)
    leaders: list[int] = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        pts = points[idx]
        tree = cKDTree(pts)
        free = np.ones(len(idx), dtype=bool)
        j = 0  # the first point not yet covered (found by argmax, not a Python scan)
        while j < len(idx) and free[j]:
            near = np.asarray(tree.query_ball_point(pts[j], 0.5 * radius), dtype=np.int64)
            near = near[free[near]]
            free[near] = False
            ball_of[idx[near]] = len(leaders)
            leaders.append(int(idx[j]))
            j += int(np.argmax(free[j:]))
    m = len(leaders)
    order = np.argsort(ball_of, kind="stable")
    bounds = np.searchsorted(ball_of[order], np.arange(m + 1))
    members = [order[bounds[c] : bounds[c + 1]] for c in range(m)]
    lead = np.asarray(leaders, dtype=np.int64)
    trees: dict[int, cKDTree] = {}
    rows: list[int] = []
    cols: list[int] = []
    for g in np.unique(groups[lead]) if m else ():
        idx = np.flatnonzero(groups[lead] == g)
        if len(idx) < 2:
            continue
        near = cKDTree(points[lead[idx]]).query_pairs(2 * radius, output_type="ndarray")
        for a, b in near.tolist():
            ca, cb = int(idx[a]), int(idx[b])
            small, big = (ca, cb) if len(members[ca]) <= len(members[cb]) else (cb, ca)
            if big not in trees:
                trees[big] = cKDTree(points[members[big]])
            d, _ = trees[big].query(points[members[small]], k=1, distance_upper_bound=radius)
            if bool(np.isfinite(d).any()):
                rows.append(ca)
                cols.append(cb)
    _, comp = _components(m, np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))
    labels = comp[ball_of]
    order = np.argsort(labels, kind="stable")  # members of a component in increasing order
    parts = np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if n else []
    return sorted((part.tolist() for part in parts), key=lambda mem: mem[0])


def _classify(mods: torch.Tensor, delta: float, exact: bool) -> tuple[str, int]:
    """Stability class from the eigenvalue moduli ``mods`` with neutral band ``delta``, and the
    number of moduli above ``1 + delta``; ``exact``: ``mods`` is the full spectrum."""
    n_out = int((mods > 1 + delta).sum())
    n_in = int((mods < 1 - delta).sum())
    n_mid = int(mods.numel() - n_out - n_in)
    if n_mid > 0:
        return "marginal", n_out
    if n_out == 0:
        return "stable", 0
    if n_in > 0 or not exact:
        # with a partial (top-k) spectrum and every computed |λ| > 1, smaller eigenvalues may still
        # lie inside: only the full spectrum can call a point a repeller
        return ("saddle" if n_in > 0 else "unstable"), n_out
    return "unstable", n_out


class _Inputs:
    """A system bound to per-row inputs (row i uses input ``index[i]``)."""

    def __init__(self, system: LoopedSystem, index: torch.Tensor) -> None:
        self.system = system
        self.index = index

    def sub(self, rows: torch.Tensor) -> LoopedSystem:
        x = self.system.x
        if not self.system.driven or x is None:
            return self.system
        return self.system.with_input(x[self.index[rows].to(x.device)])


class _Candidates:
    """Converged states found by any route, with their input row and how they were found.

    Append-only, in batches (one per solve): candidate ``i`` keeps its index for the whole
    search, so results computed for it (its spectrum) can be cached by that index.
    """

    def __init__(self) -> None:
        self._chunks: list[torch.Tensor] = []
        self._stacked: torch.Tensor | None = None
        self.row: list[int] = []
        self.src: list[str] = []
        self.reach: list[int] = []  # the iteration start that converged here, or -1
        self.sampled: list[bool] = []  # from the random root-finding sample

    def __len__(self) -> int:
        return len(self.row)

    def add(
        self,
        states: torch.Tensor,
        rows: torch.Tensor,
        src: str,
        reach: torch.Tensor | None = None,
        sampled: bool = False,
    ) -> None:
        """Add ``states`` (``(k, *state_shape)``) found for the input rows ``rows``."""
        k = int(rows.numel())
        if k == 0:
            return
        self._chunks.append(states.detach())
        self._stacked = None
        self.row.extend(rows.tolist())
        self.src.extend([src] * k)
        self.reach.extend(reach.tolist() if reach is not None else [-1] * k)
        self.sampled.extend([sampled] * k)

    @property
    def states(self) -> torch.Tensor:
        """All candidates, ``(len(self), *state_shape)``."""
        if self._stacked is None:
            self._stacked = torch.cat(self._chunks)
            self._chunks = [self._stacked]
        return self._stacked


# ---------------------------------------------------------------------- stage records
@dataclass(frozen=True)
class _Options:
    """Every setting of a :func:`find_fixed_points` call, checked (:func:`_check_options`).

    The values are the caller's own (an int ``damping`` stays an int in the result), except
    ``rtol``, the residual tolerance with its dtype default filled in; ``call`` is the call form
    that every error message starts with.
    """

    call: str
    n_starts: int
    mode: SearchMode
    start: StartKind
    scale: float
    rtol: float
    max_steps: int
    damping: float
    dedup_tol: float | None
    neutral_band: float
    max_period: int
    n_newton: int | None
    perturb: float
    qmin_steps: int
    newton_steps: int
    bridge_rounds: int
    k_eigenvalues: int
    dense_limit: int
    seed: int
    executor: Any = None
    shards: int = 1


@dataclass(frozen=True)
class _Seeds:
    """The iteration starts of every input, input after input: row ``i`` is start ``i % per`` of
    input ``index[i]``; ``inputs`` binds rows to their inputs and ``run_sys`` is the system with
    every row's input at once."""

    h0: torch.Tensor
    per: int
    n_inputs: int
    index: torch.Tensor
    inputs: _Inputs
    run_sys: LoopedSystem

    @property
    def total(self) -> int:
        """Starts over all inputs, ``n_inputs · per``."""
        return int(self.h0.shape[0])


@dataclass(frozen=True)
class _Reach:
    """Plain iteration from every start: its outcome, the iterate it stopped at (where cycles are
    looked for) and the steps it took."""

    outcomes: tuple[Outcome, ...]
    last_state: torch.Tensor
    steps: torch.Tensor


@dataclass(frozen=True)
class _Cluster:
    """Candidates of one input within the dedup radius of each other, represented by the one of
    least residual.

    ``cand`` is the representative's index in the candidate pool (a key for what is computed
    for it), ``row`` its input row; ``reach_rows`` are the iteration starts that converged into
    the cluster (sorted) and ``hits`` the candidates it holds from the random root-finding sample.
    """

    state: torch.Tensor
    cand: int
    row: int
    input: int
    found_by: tuple[str, ...]
    reach_rows: tuple[int, ...]
    hits: int


@dataclass(frozen=True)
class _Point(_Cluster):
    """A classified cluster: the eigenvalues ``eig`` of ``∂f/∂h`` at its state, their largest
    modulus ``rho``, its stability class, ``n_out`` eigenvalues outside the neutral band,
    ``nullity`` eigenvalues within it of 1, and the residual ``‖f(h) − h‖₂``."""

    eig: torch.Tensor
    rho: float
    stability: str
    n_out: int
    nullity: int
    residual: float


@dataclass(frozen=True)
class _Classified:
    """The deduplicated, classified points (continua's samples still among them), the dedup
    radius, whether their spectra are full rather than top-``k``, and the count of distinct
    candidates at other radii."""

    points: tuple[_Point, ...]
    radius: float
    exact: bool
    dedup_curve: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class _ContinuumRecord:
    """A continuum of fixed points before assembly: what :class:`Continuum` reports, the
    iteration starts that converged onto it (sorted), and its samples' indices among the
    classified points (``members``)."""

    dimension: int
    dimension_is_lower_bound: bool
    input_index: int
    samples: torch.Tensor
    evidence: str
    reach_rows: tuple[int, ...]
    members: tuple[int, ...]


@dataclass(frozen=True)
class _CycleRecord:
    """A cycle before assembly: what :class:`Cycle` reports (``flat``: its points flattened, for
    distances), and the iteration starts that settled on it (sorted)."""

    period: int
    points: torch.Tensor
    flat: torch.Tensor
    input_index: int
    residual: float
    multipliers: torch.Tensor
    spectral_radius: float
    stability: str
    reach_rows: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Structure:
    """What the classified points make up: the isolated points (degenerate duplicates merged, in
    report order), the continua, and the attracting cycles that iteration settled on."""

    isolated: tuple[_Point, ...]
    continua: tuple[_ContinuumRecord, ...]
    cycles: tuple[_CycleRecord, ...]


# ---------------------------------------------------------------------- helpers of the stages
def _dedup(
    system: LoopedSystem,
    inputs: _Inputs,
    index: torch.Tensor,
    cands: _Candidates,
    dedup_tol: float | None,
    rtol: float,
) -> tuple[list[_Cluster], float]:
    """Clusters of candidates within the dedup radius (per input), least residual first."""
    if not len(cands):
        return [], (dedup_tol if dedup_tol is not None else 1e3 * rtol)
    stacked = cands.states
    rows_c = torch.tensor(cands.row, dtype=torch.long)
    res_c = _residuals(inputs, rows_c, stacked)
    flat = system.flatten(stacked).detach().cpu().double().numpy()
    scale_states = max(1.0, float(np.linalg.norm(flat, axis=1).max()))
    radius = dedup_tol if dedup_tol is not None else 1e3 * rtol * scale_states
    groups = index[rows_c].numpy()
    clusters = _clusters(flat, groups, radius)
    out: list[_Cluster] = []
    res_list = res_c.tolist()
    for comp in clusters:
        best = min(comp, key=res_list.__getitem__)
        out.append(
            _Cluster(
                state=stacked[best],
                cand=best,
                row=cands.row[best],
                input=int(index[cands.row[best]]),
                found_by=tuple(sorted({cands.src[i] for i in comp})),
                reach_rows=tuple(sorted({cands.reach[i] for i in comp if cands.reach[i] >= 0})),
                hits=sum(cands.sampled[i] for i in comp),
            )
        )
    return out, float(radius)


def _dedup_curve(
    system: LoopedSystem, index: torch.Tensor, cands: _Candidates, radius: float
) -> list[tuple[float, int]]:
    """Distinct points at tolerances from 1e-3 to 1e6 times the dedup radius."""
    if not len(cands):
        return []
    flat = system.flatten(cands.states).detach().cpu().double().numpy()
    groups = index[torch.tensor(cands.row, dtype=torch.long)].numpy()
    return _single_linkage_counts(flat, groups, radius, [radius * 10.0**e for e in range(-3, 7)])


#: clusters up to this size get their merge heights from one dense single linkage
_DENSE_LINKAGE = 2048


def _single_linkage_counts(
    points: np.ndarray, groups: np.ndarray, radius: float, scales: list[float]
) -> list[tuple[float, int]]:
    """Components of "within ``t``" (single linkage, within each group) at each scale ``t``,
    exactly, from one clustering at ``radius``.

    Components at a finer scale split those at ``radius``: each cluster's single-linkage merge
    heights (``scipy.cluster.hierarchy.linkage``, from its own pairwise distances; the ball
    cover of :func:`_clusters` per scale for clusters over ``_DENSE_LINKAGE``) give its count at
    every finer scale at once. Components at a coarser scale join whole clusters: two clusters
    are within ``t`` of each other for certain when two of their members are (the
    representatives' distance ``d``), and cannot be when ``d`` minus both clusters' radii about
    their representatives exceeds ``t``; only pairs in between get their exact least distance
    (a KD-tree query). Groups with more than ``_DENSE_LINKAGE`` clusters fall back to
    :func:`_clusters` per scale.
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import cdist, pdist

    base = _clusters(points, groups, radius)
    counts = dict.fromkeys(scales, 0)
    fine = [t for t in scales if t < radius]
    coarse = [t for t in scales if t >= radius]
    for mem in base:
        m = len(mem)
        if m == 1:
            for t in fine:
                counts[t] += 1
        elif m <= _DENSE_LINKAGE:
            heights = linkage(pdist(points[mem]), method="single")[:, 2]
            for t in fine:
                counts[t] += m - int((heights <= t).sum())
        else:
            for t in fine:
                counts[t] += len(_clusters(points[mem], np.zeros(m, dtype=np.int64), t))
    if coarse:
        first = np.array([mem[0] for mem in base], dtype=np.int64)
        for g in np.unique(groups[first]):
            sel = np.flatnonzero(groups[first] == g)
            k = len(sel)
            if k > _DENSE_LINKAGE:
                idx = np.flatnonzero(groups == g)
                zero = np.zeros(len(idx), dtype=np.int64)
                for t in coarse:
                    counts[t] += len(_clusters(points[idx], zero, t))
                continue
            reps = points[first[sel]]
            members = [np.asarray(base[c], dtype=np.int64) for c in sel]
            reach = np.array(
                [float(np.linalg.norm(points[mm] - points[mm[0]], axis=1).max()) for mm in members]
            )
            upper = cdist(reps, reps)
            lower = upper - reach[:, None] - reach[None, :]
            exact: dict[tuple[int, int], float] = {}
            iu, ju = np.triu_indices(k, 1)
            for t in coarse:
                near = upper[iu, ju] <= t
                maybe = np.flatnonzero(~near & (lower[iu, ju] <= t))
                for q in maybe.tolist():
                    i, j = int(iu[q]), int(ju[q])
                    if (i, j) not in exact:
                        small, big = (i, j) if len(members[i]) <= len(members[j]) else (j, i)
                        d, _ = cKDTree(points[members[big]]).query(points[members[small]], k=1)
                        exact[(i, j)] = float(np.min(d))
                    near[q] = exact[(i, j)] <= t
                counts[t] += _components(k, iu[near], ju[near])[0]
    return [(float(t), counts[t]) for t in scales]


def _root_finding(system: LoopedSystem, seeds: _Seeds, cands: _Candidates, opts: _Options) -> int:
    """Stage 2 (mode "all"): Newton–Krylov from every start, and Newton (and Adam on ``q``
    followed by Newton) from perturbed states of the starts' short trajectories, adding what
    converges to ``cands``; returns the size of the random sample per input (the Newton runs from
    perturbed states, independent draws from one distribution).

    Every given start seeds a run of its own, unperturbed (no start is left out), and the
    sample of ``m`` perturbed states per input (``n_newton``, default one per start) cycles
    through the starts without replacement (each start once before any twice), at a random time
    of its first 16 steps plus Gaussian noise of ``perturb`` times the state's RMS entry
    (FixedPointFinder's recipe).
    """
    h0, per, inputs, rtol = seeds.h0, seeds.per, seeds.inputs, opts.rtol
    m = per if opts.n_newton is None else opts.n_newton
    shape_ones = [1] * len(system.state_shape)
    gen = torch.Generator().manual_seed(opts.seed + 7)
    with torch.no_grad():
        traj = seeds.run_sys.iterate(h0, n_steps=16, record=True).states
    assert traj is not None
    picks = []
    for b in range(seeds.n_inputs):
        reps = -(-m // per)
        order = torch.cat([torch.randperm(per, generator=gen) for _ in range(reps)])[:m]
        picks.append(order + b * per)
    pick_s = torch.cat(picks)
    pick_t = torch.randint(0, traj.shape[0], (pick_s.numel(),), generator=gen)
    base = traj[pick_t, pick_s]
    # escaped or exploded trajectory states are no place to look: use the start instead
    rms_b = system.flatten(base).norm(dim=1) / math.sqrt(system.state_dim)
    rms_0 = system.flatten(h0[pick_s]).norm(dim=1) / math.sqrt(system.state_dim)
    bad = ~torch.isfinite(rms_b) | (rms_b > 100 * torch.clamp(rms_0, min=1.0))
    base[bad] = h0[pick_s[bad.cpu()]]  # pick_s lives on the CPU, the states where the system does
    rms = system.flatten(base).norm(dim=1) / math.sqrt(system.state_dim)
    rms = torch.clamp(rms, min=1e-3, max=1e3).reshape(-1, *shape_ones)
    noise = torch.randn(base.shape, generator=gen, dtype=torch.float64).to(base)
    pert = base + opts.perturb * rms * noise
    total = h0.shape[0]
    rows = torch.cat([torch.arange(total), pick_s])
    nk = _newton_rows(opts, inputs, rows, torch.cat([h0, pert]), rtol, opts.newton_steps)
    ok_nk = nk.converged
    given = ok_nk.clone()
    given[total:] = False
    cands.add(nk.state[given], rows[given], "newton")
    ok_nk[:total] = False
    cands.add(nk.state[ok_nk], rows[ok_nk], "newton", sampled=True)
    failed = ~ok_nk[total:]
    if opts.qmin_steps > 0 and bool(failed.any()):
        sel = torch.nonzero(failed).flatten()
        q = _qmin_rows(opts, inputs, pick_s[sel], pert[sel], opts.qmin_steps)
        ok = torch.nonzero(torch.isfinite(system.flatten(q)).all(dim=1)).flatten().cpu()
        if ok.numel():
            qp = _newton_rows(opts, inputs, pick_s[sel][ok], q[ok], rtol)
            good = qp.converged
            cands.add(qp.state[good], pick_s[sel][ok][good], "qmin")
    return m


def _bridge(
    inputs: _Inputs,
    points: list[_Point],
    prev: list[_Point],
    cands: _Candidates,
    *,
    radius: float,
    rtol: float,
    newton_steps: int,
    max_pairs: int,
) -> None:
    """Newton–Krylov from the midpoint of each pair of nondegenerate points of one input, at least
    one of them new since the last round (``prev``).

    Saddles sit between attractors: an index-1 saddle on the boundary between two basins, an
    index-2 one between index-1 saddles, and so on (for the 3-bit flip-flop, the edges, faces
    and centre of the cube whose corners are the 8 memories). The nearest pairs go first, up to
    ``max_pairs`` per input a round. Points with an eigenvalue near 1 are left out: on a
    continuum every midpoint polishes into yet another sample of it.
    """
    pts = [r for r in points if r.nullity == 0]
    if len(pts) < 2:
        return
    flat = torch.stack([r.state.flatten() for r in pts])
    inp = torch.tensor([r.input for r in pts])
    new = torch.ones(len(pts), dtype=torch.bool)
    if prev:
        old = torch.stack([r.state.flatten() for r in prev])
        old_inp = torch.tensor([r.input for r in prev])
        near = (torch.cdist(flat, old) <= 10 * radius).cpu() & (inp[:, None] == old_inp[None, :])
        new = ~near.any(dim=1)
    iu, ju = torch.triu_indices(len(pts), len(pts), 1)
    keep = (inp[iu] == inp[ju]) & (new[iu] | new[ju])
    iu, ju = iu[keep], ju[keep]
    if iu.numel() == 0:
        return
    dist = (flat[iu] - flat[ju]).norm(dim=1).cpu()
    order = torch.argsort(dist)
    # the nearest max_pairs of each input: one input's larger scale must not crowd out another's
    pair_inp = inp[iu[order]]
    rank_in_input = torch.zeros_like(order)
    for b in torch.unique(pair_inp).tolist():
        sel = torch.nonzero(pair_inp == b).flatten()
        rank_in_input[sel] = torch.arange(sel.numel())
    order = order[rank_in_input < max_pairs]
    iu, ju = iu[order], ju[order]
    states = torch.stack([r.state for r in pts])
    mids = 0.5 * (states[iu] + states[ju])
    rows = torch.tensor([pts[int(a)].row for a in iu], dtype=torch.long)
    nk = _newton(inputs, rows, mids, rtol, newton_steps)
    good = nk.converged
    cands.add(nk.state[good], rows[good], "bridge")


def _classify_all(
    system: LoopedSystem,
    inputs: _Inputs,
    clusters: list[_Cluster],
    cache: dict[int, tuple[torch.Tensor, float]],
    *,
    k: int,
    dense_limit: int,
    neutral_band: float,
    seed: int,
) -> tuple[list[_Point], bool]:
    """Eigenvalues, class, nullity and residual of every cluster's representative; spectra already
    computed for the same representative (``cache``, by its candidate index) are reused. Returns
    the points and whether the spectra are full (dense) rather than top-``k``."""
    exact = system.state_dim <= dense_limit
    todo = [c for c in clusters if c.cand not in cache]
    if todo:
        rows_r = torch.tensor([c.row for c in todo], dtype=torch.long)
        states = torch.stack([c.state for c in todo])
        eigs, exact = _spectra(
            system, states, inputs, rows_r, k=k, dense_limit=dense_limit, seed=seed
        )
        res_r = _residuals(inputs, rows_r, states)
        for c, ev, rr in zip(todo, eigs, res_r.tolist(), strict=True):
            cache[c.cand] = (ev.detach(), float(rr))
    points = []
    for c in clusters:
        ev, rr = cache[c.cand]
        stability, n_out = _classify(ev.abs(), neutral_band, exact)
        points.append(
            _Point(
                **vars(c),
                eig=ev,
                rho=float(ev.abs().max()),
                stability=stability,
                n_out=n_out,
                nullity=int(((ev - 1).abs() <= neutral_band).sum()),
                residual=rr,
            )
        )
    return points, exact


def _spectra(
    system: LoopedSystem,
    states: torch.Tensor,
    inputs: _Inputs,
    rows: torch.Tensor,
    *,
    k: int,
    dense_limit: int,
    seed: int,
) -> tuple[list[torch.Tensor], bool]:
    """Eigenvalues of ∂f/∂h at each state: all of them when n <= dense_limit, else top-k."""
    if states.shape[0] == 0:
        return [], True
    values, _, exact = _top_eigenvalues(
        inputs.sub(rows), states, k=k, dense_limit=dense_limit, seed=seed, dense_fallback=True
    )
    return list(values), exact


def _residuals(inputs: _Inputs, rows: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """``‖f(h) − h‖₂`` of each state with the input of its row."""
    sub = inputs.sub(rows)
    with torch.no_grad():
        out = sub._step_unchecked(states, sub.step_x)
    return sub.flatten(out - states).norm(dim=1)


def _qmin(sub: LoopedSystem, h: torch.Tensor, *, steps: int) -> torch.Tensor:
    """Adam on ``q(h) = ½‖f(h) − h‖²`` per start (Sussillo & Barak), gradients by ``vjp``.

    The step size is 1% of each start's RMS entry, so that the search moves on the state's own
    scale; the weights of the module are never touched.
    """
    from torch.func import vjp

    x = sub.step_x
    z = sub.flatten(h).clone()
    rms = torch.clamp(z.norm(dim=1, keepdim=True) / math.sqrt(z.shape[1]), min=1e-3)
    lr = 1e-2 * rms
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    b1, b2, eps = 0.9, 0.999, 1e-12

    def g(zz: torch.Tensor) -> torch.Tensor:
        return sub.flatten(sub._step_unchecked(sub.unflatten(zz), x)) - zz

    with torch.no_grad():
        for t in range(1, steps + 1):
            primal = vjp(g, z)
            grad = primal[1](primal[0])[0]
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            mh = m / (1 - b1**t)
            vh = v / (1 - b2**t)
            z = z - lr * mh / (vh.sqrt() + eps)
    return sub.unflatten(z)


def _polish_limits(
    system: LoopedSystem,
    inputs: _Inputs,
    index: torch.Tensor,
    limits: torch.Tensor,
    res: torch.Tensor,
    rows: torch.Tensor,
    dedup_tol: float | None,
    rtol: float,
) -> torch.Tensor:
    """Iteration's limits (row i with the input of ``rows[i]``, residual ``res[i]``) polished by
    Newton–Krylov well below the search tolerance (near rounding level), keeping whichever of the
    limit and Newton's best iterate has the smaller residual.

    Hundreds of starts converge to each attractor: the limits are grouped at a quarter of the
    dedup radius and one limit of each group (the least residual) is polished; a limit within
    that quarter radius of its group's polished point takes that point (deduplication would
    merge them anyway), any other (along a continuum, say) is polished on its own. So the
    discovery curve's scales below a quarter of the radius count such limits as one point (on a
    continuum, samples that close to a polished one merge there).
    """
    fine = 100 * torch.finfo(system.dtype).eps
    flat_t = system.flatten(limits)
    flat = flat_t.detach().cpu().double().numpy()
    scale = max(1.0, float(np.linalg.norm(flat, axis=1).max()))
    tight = 0.25 * (dedup_tol if dedup_tol is not None else 1e3 * rtol * scale)
    res_list = res.tolist()
    groups = _clusters(flat, index[rows.cpu()].numpy(), tight)
    lead = torch.tensor([min(g, key=res_list.__getitem__) for g in groups], dtype=torch.long)
    member_of = torch.empty(len(rows), dtype=torch.long)
    for k, g in enumerate(groups):
        member_of[g] = k

    def polish(sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pol = _newton(inputs, rows[sel], limits[sel], fine, max_steps=20)
        return pol.state, pol.residual

    lead_state, lead_res = polish(lead)
    out_state = lead_state[member_of.to(lead_state.device)]
    out_res = lead_res[member_of]
    far = (system.flatten(out_state) - flat_t).norm(dim=1).cpu() > tight
    far[lead] = False  # a group's own lead keeps its polish, wherever it went
    if bool(far.any()):
        own = torch.nonzero(far).flatten()
        own_state, own_res = polish(own)
        out_state[own.to(out_state.device)] = own_state
        out_res[own] = own_res
    better = (out_res.to(res.device) <= res).reshape(-1, *([1] * len(system.state_shape)))
    return torch.where(better.to(limits.device), out_state, limits)


def _newton(
    inputs: _Inputs, rows: torch.Tensor, starts: torch.Tensor, tol: float, max_steps: int = 30
) -> Solution:
    """Newton–Krylov from ``starts`` (row i with the input of ``rows[i]``) to ``tol`` (relative
    and absolute), never raising: the search's one root-finding call."""
    return solve(
        inputs.sub(rows),
        starts,
        method="newton_krylov",
        tol=tol,
        atol=tol,
        max_steps=max_steps,
        throw=False,
    )


def _polish(
    inputs: _Inputs, rows: torch.Tensor, starts: torch.Tensor, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton–Krylov from ``starts`` (row i with the input of ``rows[i]``): states, converged."""
    pol = _newton(inputs, rows, starts, rtol)
    return pol.state, pol.converged.to(starts.device)


# ---------------------------------------------------------------------- shards
#: Newton–Krylov solves ``(I − J) s = g`` densely, each start on its own, up to this many state
#: entries; above it by one batched GMRES whose iterations go on until every start of the batch
#: has converged, so that a start's bits depend on the others: only dense runs are sharded
_NEWTON_DENSE = int(NewtonKrylov.defaults["dense_limit"])


def _check_sharding(call: str, executor: Any, shards: Any) -> int:
    """The number of shards once ``executor`` and ``shards`` are checked: 1 without an executor,
    by default as many as the executor runs at once."""
    if executor is None:
        if shards is not None:
            raise InvalidArgumentError(
                f"{call}: shards={shards!r} needs an executor to run them; pass executor= (a "
                "concurrent.futures.ThreadPoolExecutor or ProcessPoolExecutor, or "
                "dynamo.RayExecutor), or leave shards out"
            )
        return 1
    check_executor(call, executor)
    if shards is None:
        return executor_workers(executor)
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidArgumentError(
            f"{call}: shards must be an int >= 1 (the number of pieces the starts are split "
            f"into), got {type(shards).__name__} {shards!r}; leave it out for one piece per "
            "worker of the executor"
        )
    return shards


def _run_shard(
    task: Callable[..., Any], system: LoopedSystem, states: torch.Tensor, options: dict[str, Any]
) -> Any:
    """One shard's work, where the executor runs it: ``task(system, states, **options)``."""
    return task(system, states, **options)


def _run_packed(payload: bytes) -> bytes:
    """One shard's work sent as bytes by :func:`dumps` (for executors that pickle their
    arguments with the standard pickle, which cannot send closures); its result as bytes."""
    task, system, states, options = loads(payload)
    return pickle.dumps(task(system, states, **options))


def _solve_task(system: LoopedSystem, states: torch.Tensor, **options: Any) -> Solution:
    """A shard of a batched solve (never raising for starts that fail)."""
    return solve(system, states, throw=False, **options)


def _qmin_task(system: LoopedSystem, states: torch.Tensor, *, steps: int) -> torch.Tensor:
    """A shard of the q-minimisation."""
    return _qmin(system, states, steps=steps)


def _cuts(n: int, shards: int) -> list[int]:
    """Where ``n`` rows are cut into at most ``shards`` contiguous chunks of even size.

    >>> _cuts(10, 3), _cuts(2, 7)
    ([0, 3, 6, 10], [0, 1, 2])
    """
    k = max(1, min(shards, n))
    return [(i * n) // k for i in range(k + 1)]


def _on_shards(
    opts: _Options,
    task: Callable[..., Any],
    inputs: _Inputs,
    rows: torch.Tensor | None,
    states: torch.Tensor,
    **options: Any,
) -> list[Any]:
    """``task(inputs.sub(rows[c]), states[c], **options)`` for ``opts.shards`` contiguous chunks
    ``c`` of the rows (fewer when there are fewer rows; ``rows`` None: all of them), each a task
    on ``opts.executor``; their results in row order.

    A thread pool gets the objects themselves (no copy), Ray its chunk of the states copied (a
    slice pickles with its whole storage) and the system as it is (Ray sends it by cloudpickle),
    any other executor both as bytes (:func:`dumps`) and returns the result as bytes.
    """
    executor = opts.executor
    n = int(states.shape[0])
    cuts = _cuts(n, opts.shards)
    if rows is None:
        rows = torch.arange(n)
    shared = isinstance(executor, concurrent.futures.ThreadPoolExecutor)
    packed = not shared and not isinstance(executor, RayExecutor)
    futures = []
    try:
        for a, b in itertools.pairwise(cuts):
            sub = inputs.sub(rows[a:b])
            part = states[a:b] if shared else states[a:b].clone()
            if packed:
                payload = dumps(opts.call, (task, sub, part, options))
                futures.append(executor.submit(_run_packed, payload))
            else:
                futures.append(executor.submit(_run_shard, task, sub, part, options))
        out = [f.result() for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        raise
    return [pickle.loads(r) for r in out] if packed else out


def _merge_solutions(parts: list[Solution], device: torch.device) -> Solution:
    """The shards' solutions as one, rows in order (as one batched solve reports them): per-start
    fields concatenated, the residual traces padded with NaN to the longest."""
    n = sum(len(p.outcomes) for p in parts)
    first = parts[0]
    width = max(int(p.residual_trace.shape[0]) for p in parts)
    trace = torch.full((width, n), math.nan, dtype=first.residual_trace.dtype, device=device)
    at = 0
    for p in parts:
        m = len(p.outcomes)
        trace[: p.residual_trace.shape[0], at : at + m] = p.residual_trace.to(device)
        at += m

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name).to(device) for p in parts])

    def cat_cpu(name: str) -> torch.Tensor:
        return torch.cat([getattr(p, name).cpu() for p in parts])

    lasts = [p.last_state for p in parts]
    return replace(
        first,
        state=cat("state"),
        residual=cat("residual"),
        relative_residual=cat("relative_residual"),
        steps=cat_cpu("steps"),
        outcomes=tuple(o for p in parts for o in p.outcomes),
        residual_trace=trace,
        f_evals=cat_cpu("f_evals"),
        jvp_evals=cat_cpu("jvp_evals"),
        device=str(device),
        last_state=(
            None
            if any(t is None for t in lasts)
            else torch.cat([t.to(device) for t in lasts if t is not None])
        ),
    )


def _solve_rows(
    opts: _Options,
    inputs: _Inputs,
    rows: torch.Tensor | None,
    starts: torch.Tensor,
    *,
    local: LoopedSystem | None = None,
    **options: Any,
) -> Solution:
    """``solve(inputs.sub(rows), starts, throw=False, **options)`` (``rows`` None: every row;
    ``local``: that system, already bound): in this process without an executor, else in
    :func:`_on_shards` merged by :func:`_merge_solutions`. Equal to the one batched solve bit
    for bit when the map's batched evaluation is row-independent."""
    if opts.executor is None:
        if local is None:
            local = inputs.sub(torch.arange(int(starts.shape[0])) if rows is None else rows)
        return solve(local, starts, throw=False, **options)
    parts = _on_shards(opts, _solve_task, inputs, rows, starts, **options)
    return _merge_solutions(parts, starts.device)


def _newton_rows(
    opts: _Options,
    inputs: _Inputs,
    rows: torch.Tensor,
    starts: torch.Tensor,
    tol: float,
    max_steps: int = 30,
) -> Solution:
    """:func:`_newton`, in shards on the executor when its runs are independent per start (the
    dense linear solves, up to ``_NEWTON_DENSE`` state entries)."""
    if opts.executor is None or inputs.system.state_dim > _NEWTON_DENSE:
        return _newton(inputs, rows, starts, tol, max_steps)
    return _solve_rows(
        opts,
        inputs,
        rows,
        starts,
        method="newton_krylov",
        tol=tol,
        atol=tol,
        max_steps=max_steps,
    )


def _qmin_rows(
    opts: _Options, inputs: _Inputs, rows: torch.Tensor, states: torch.Tensor, steps: int
) -> torch.Tensor:
    """:func:`_qmin` from ``states`` (row i with the input of ``rows[i]``), in shards on the
    executor when there is one (each start's Adam run is its own)."""
    if opts.executor is None:
        return _qmin(inputs.sub(rows), states, steps=steps)
    parts = _on_shards(opts, _qmin_task, inputs, rows, states, steps=steps)
    return torch.cat([p.to(states.device) for p in parts])


#: halvings of a path between two continuum samples: at most 2**_LINK_ROUNDS hops
_LINK_ROUNDS = 12


def _joined_by_fixed_points(
    system: LoopedSystem,
    inputs: _Inputs,
    pairs: list[tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor, float]],
    *,
    rtol: float,
    max_rounds: int = _LINK_ROUNDS,
) -> list[bool]:
    """Whether a path of fixed points joins each pair ``(a, b, row, T_a, T_b, resolution)``: flat
    states, the input row, orthonormal bases (rows) of the tangent spaces found at ``a`` and
    ``b``, and the length below which a hop is not split further.

    The path is built by bisection along a curve, not a chord: each hop ``(p, q)`` carries unit
    tangents ``t_p, t_q`` (at the ends, ``b − a`` projected on ``T_a``, ``T_b``; at an inserted
    point, the direction of the hop it halves), and its midpoint is predicted by cubic Hermite
    interpolation, ``(p + q)/2 + ‖q − p‖ (t_p − t_q)/8``, which follows a circle's sagitta to
    second order, then polished by Newton. A hop is sound when Newton converged, landed within a
    quarter of the hop from the prediction, and between the ends (within three quarters of the
    hop from each). Hops are halved, for at most ``max_rounds`` rounds, until every one is at
    most the pair's resolution: on one continuum every test passes; a gap between two continua
    sits inside some hop, whose midpoint snaps to one side and fails. So continua closer than
    the resolution cannot be told apart, and a sample spacing wider than the continuum's
    curvature allows leaves it in pieces (not merged with another).
    """
    points: list[torch.Tensor] = []  # per pair, (k, n): the path so far, from a to b
    tangents: list[torch.Tensor] = []  # (k, n): unit tangents along it, oriented from a to b
    for a, b, _, ta_basis, tb_basis, _ in pairs:
        ab = b - a
        ln = float(ab.norm())
        ends = []
        for basis in (ta_basis, tb_basis):
            t = basis.T @ (basis @ ab) if basis.numel() else ab
            t = t / t.norm() if float(t.norm()) > 1e-3 * ln else ab / ln
            ends.append(t)
        points.append(torch.stack([a, b]))
        tangents.append(torch.stack(ends))
    alive = [True] * len(pairs)
    for _ in range(max_rounds):
        todo: list[tuple[int, torch.Tensor]] = []  # (pair, indices of the hops to split)
        preds: list[torch.Tensor] = []
        for e in range(len(pairs)):
            if not alive[e]:
                continue
            pts, tan = points[e], tangents[e]
            hop = (pts[1:] - pts[:-1]).norm(dim=1)
            split = torch.nonzero(hop > pairs[e][5]).flatten()
            if split.numel():
                todo.append((e, split))
                h = hop[split, None]
                preds.append(
                    0.5 * (pts[split] + pts[split + 1]) + h * (tan[split] - tan[split + 1]) / 8
                )
        if not todo:
            break
        rows = torch.cat(
            [torch.full((sp.numel(),), pairs[e][2], dtype=torch.long) for e, sp in todo]
        )
        pred = torch.cat(preds)
        out, ok = _polish(inputs, rows, system.unflatten(pred), rtol)
        out = system.flatten(out)
        at = 0
        for e, split in todo:
            k = split.numel()
            m, good, pr = out[at : at + k], ok[at : at + k], pred[at : at + k]
            at += k
            pts = points[e]
            p, q = pts[split], pts[split + 1]
            hop = (q - p).norm(dim=1)
            sound = (
                good
                & ((m - pr).norm(dim=1) <= 0.25 * hop)
                & ((m - p).norm(dim=1) <= 0.75 * hop)
                & ((m - q).norm(dim=1) <= 0.75 * hop)
            )
            if not bool(sound.all()):
                alive[e] = False
                continue
            # insert each midpoint after its hop's start, with the hop's direction as tangent
            n_old = pts.shape[0]
            slot = (
                torch.arange(n_old)
                + torch.cumsum(torch.zeros(n_old, dtype=torch.long).index_fill_(0, split, 1), 0)
                - torch.zeros(n_old, dtype=torch.long).index_fill_(0, split, 1)
            )
            new_pts = torch.empty(n_old + k, pts.shape[1], dtype=pts.dtype, device=pts.device)
            new_tan = torch.empty_like(new_pts)
            new_pts[slot] = pts
            new_tan[slot] = tangents[e]
            new_pts[slot[split] + 1] = m
            new_tan[slot[split] + 1] = (q - p) / hop[:, None]
            points[e], tangents[e] = new_pts, new_tan
    joined = []
    for e, pts in enumerate(points):
        hops = (pts[1:] - pts[:-1]).norm(dim=1)
        joined.append(alive[e] and float(hops.max()) <= pairs[e][5])
    return joined


def _continua(
    system: LoopedSystem,
    inputs: _Inputs,
    points: Sequence[_Point],
    *,
    rtol: float,
    exact: bool,
    seed: int,
    tries_per_pair: int = 2,
) -> tuple[list[_ContinuumRecord], set[int]]:
    """Group neutral, non-isolated fixed points into continua; returns them and the indices (in
    ``points``) of the points they hold.

    **Non-isolation** of a point with ``nullity >= 1`` (an eigenvalue within δ of 1) is tested in
    two rounds of Newton–Krylov with steps of ``s = max(1e-3·ρ, 300·tol·r)``, ``ρ = max(1,
    ‖h‖/√n)`` the state's RMS scale and ``r = max(1, ‖h‖)``: a scale of the state itself, far
    above Newton's landing noise (about ``tol·r``) in every dtype, and never of the dedup
    tolerance (a test against the tolerance could not fire once it exceeded the step). Round 1
    starts from ``h + s·d`` for ``nullity + 3`` random unit directions ``d`` (``2·nullity + 3``
    when the spectrum is a partial Arnoldi one, whose nullity may undercount): on a manifold of
    fixed points Newton lands on it near ``h``, and the landing displacements span (the
    projection of ``d`` onto) its tangent space. Round 2 steps ``s`` and ``s/2`` along each
    orthonormal direction ``v`` of those displacements: ``v`` is confirmed tangent when Newton
    lands within a quarter step of ``h + s·v`` and of ``h + s·v/2``. An isolated point, even a
    degenerate one such as ``0`` for ``h ↦ h − h³``, pulls such steps back, and a transverse step
    onto a neighbouring continuum cannot land on both predictions. The number of confirmed
    directions is the local dimension (a lower bound when a partial spectrum was saturated).

    **Linking** joins the non-isolated points of one input in Kruskal's order (nearest pairs
    first, only pairs in different groups so far, at most ``tries_per_pair`` pairs per pair of
    groups: the nearest ones), when a path of fixed points joins them
    (:func:`_joined_by_fixed_points`), so samples of one connected continuum end in one group
    whatever the dedup tolerance made of them, and separate continua stay apart down to a gap of
    about ``4·s`` (each path is built of at most 4096 pieces: samples farther apart than that
    are not joined directly).
    """
    neutral = [i for i, r in enumerate(points) if r.nullity >= 1]
    if not neutral:
        return [], set()
    n = system.state_dim
    dt = points[neutral[0]].state.dtype
    dev = points[neutral[0]].state.device
    gen = torch.Generator(device=system.device).manual_seed(seed + 11)
    base = system.flatten(torch.stack([points[i].state for i in neutral]))
    row_of = torch.tensor([points[i].row for i in neutral], dtype=torch.long)
    norms = base.norm(dim=1)
    step = torch.maximum(
        1e-3 * torch.clamp(norms / math.sqrt(n), min=1.0), 300 * rtol * torch.clamp(norms, min=1.0)
    )  # (m,)
    noise = 3 * rtol * torch.clamp(norms, min=1.0)

    # round 1: random directions; the landing displacements estimate the tangent space
    n_dir = [min(n, points[i].nullity * (1 if exact else 2) + 3) for i in neutral]
    owner = torch.cat([torch.full((c,), j, dtype=torch.long) for j, c in enumerate(n_dir)])
    d = torch.randn(int(owner.numel()), n, generator=gen, dtype=dt, device=dev)
    d = d / d.norm(dim=1, keepdim=True) * step[owner, None]
    land, ok = _polish(inputs, row_of[owner], system.unflatten(base[owner] + d), rtol)
    disp = system.flatten(land) - base[owner]
    # round 2: steps s and s/2 along each orthonormal direction of the displacements
    dirs: list[torch.Tensor] = []
    dir_owner: list[int] = []
    for j in range(len(neutral)):
        mine = (owner == j) & ok & torch.isfinite(disp).all(dim=1)
        dj = disp[mine]
        dj = dj[dj.norm(dim=1) > 10 * noise[j]]  # above Newton's own landing noise
        if dj.shape[0] == 0:
            continue
        _, sv, vh = torch.linalg.svd(dj, full_matrices=False)
        for v in vh[sv > 1e-2 * sv[0]]:
            dirs.append(v)
            dir_owner.append(j)
    local: dict[int, int] = {}
    tangents: dict[int, torch.Tensor] = {}
    saturated: set[int] = set()
    if dirs:
        v = torch.stack(dirs)
        own = torch.tensor(dir_owner, dtype=torch.long)
        preds = torch.cat([base[own] + step[own, None] * v, base[own] + 0.5 * step[own, None] * v])
        land2, ok2 = _polish(
            inputs, torch.cat([row_of[own], row_of[own]]), system.unflatten(preds), rtol
        )
        miss = (system.flatten(land2) - preds).norm(dim=1)
        half = own.numel()
        limit = 0.25 * step[own]
        conf = ok2[:half] & ok2[half:] & (miss[:half] <= limit) & (miss[half:] <= 0.5 * limit)
        for j in range(len(neutral)):
            mine = conf & (own == j)
            if bool(mine.any()):
                local[neutral[j]] = int(mine.sum())
                tangents[neutral[j]] = v[mine]
                if not exact and int(mine.sum()) >= n_dir[j]:
                    saturated.add(neutral[j])
    if not local:
        return [], set()

    # linking: Kruskal's order over the pairs of one input, the nearest few per pair of groups
    members = sorted(local)
    m = len(members)
    flat = system.flatten(torch.stack([points[i].state for i in members]))
    slot = {i: j for j, i in enumerate(neutral)}
    res = [4 * float(step[slot[i]]) for i in members]  # gaps wider than this are seen
    inp = torch.tensor([points[i].input for i in members])
    uf = _UnionFind(m)
    if m > 1:
        dist = torch.cdist(flat, flat)
        iu, ju = torch.triu_indices(m, m, 1)
        keep = (inp[:, None] == inp[None, :])[iu, ju]
        iu, ju = iu[keep], ju[keep]
        near = dist[iu, ju].cpu()
        order = torch.argsort(near)
        pairs = list(zip(iu[order].tolist(), ju[order].tolist(), near[order].tolist(), strict=True))
        tries: dict[tuple[int, int], int] = {}
        pos = 0
        while pos < len(pairs):
            batch: list[tuple[int, int]] = []
            in_batch: set[tuple[int, int]] = set()
            while pos < len(pairs) and len(batch) < 64:
                a, b, gap = pairs[pos]
                pos += 1
                if gap > 2**_LINK_ROUNDS * max(res[a], res[b]):
                    continue  # more pieces than the path's halvings make: not resolvable
                ga, gb = uf.find(a), uf.find(b)
                key = (min(ga, gb), max(ga, gb))
                if ga != gb and key not in in_batch and tries.get(key, 0) < tries_per_pair:
                    in_batch.add(key)
                    tries[key] = tries.get(key, 0) + 1
                    batch.append((a, b))
            if not batch:
                break
            joined = _joined_by_fixed_points(
                system,
                inputs,
                [
                    (
                        flat[a],
                        flat[b],
                        points[members[a]].row,
                        tangents[members[a]],
                        tangents[members[b]],
                        max(res[a], res[b]),
                    )
                    for a, b in batch
                ],
                rtol=rtol,
            )
            for (a, b), linked in zip(batch, joined, strict=True):
                ra, rb = uf.find(a), uf.find(b)
                if linked and ra != rb:
                    uf.union(a, b)
                    # the joined group inherits the tries its parts had with every other group
                    r, gone = uf.find(a), (rb if uf.find(a) == ra else ra)
                    for key in [k for k in tries if gone in k]:
                        other = key[0] if key[1] == gone else key[1]
                        if other != r:
                            new_key = (min(r, other), max(r, other))
                            tries[new_key] = tries.get(new_key, 0) + tries.pop(key)
                        else:
                            tries.pop(key)
            if len({uf.find(j) for j in range(m)}) == len(set(inp.tolist())):
                break  # one group per input: nothing left to join
    comps: dict[int, list[int]] = {}
    for j in range(m):
        comps.setdefault(uf.find(j), []).append(j)
    out = []
    taken: set[int] = set()
    for comp in comps.values():
        idx = [members[j] for j in comp]
        taken.update(idx)
        dim = max(local[i] for i in idx)
        lower = any(i in saturated and local[i] == dim for i in idx)
        out.append(
            _ContinuumRecord(
                dimension=dim,
                dimension_is_lower_bound=lower,
                input_index=points[idx[0]].input,
                samples=torch.stack([points[i].state for i in idx]),
                evidence=(
                    f"{len(idx)} fixed points with eigenvalue 1 (nullity up to "
                    f"{max(points[i].nullity for i in idx)}); Newton from steps along the "
                    f"tangent directions lands on them (local dimension {'>= ' if lower else ''}"
                    f"{dim}); {len(comp) - 1} paths of fixed points join the samples"
                ),
                reach_rows=tuple(sorted({row for i in idx for row in points[i].reach_rows})),
                members=tuple(idx),
            )
        )
    return out, taken


def _index_sum(points: list[_Point], *, exact: bool, continuum: bool) -> int | None:
    """``Σ sign det(I − J)`` over isolated points: ``(−1)^(number of real eigenvalues > 1)``
    each (a complex pair contributes ``|1 − λ|² > 0``); None where it is undefined."""
    if not exact or continuum or any(r.nullity >= 1 for r in points):
        return None
    total = 0
    for r in points:
        ev = r.eig
        tiny = 1e3 * torch.finfo(ev.real.dtype).eps * max(1.0, float(ev.abs().max()))
        real_above = int(((ev.imag.abs() <= tiny) & (ev.real > 1)).sum())
        total += -1 if real_above % 2 else 1
    return total


def _merge_degenerate(
    system: LoopedSystem,
    inputs: _Inputs,
    iso: list[_Point],
    *,
    radius: float,
    dense_limit: int,
) -> list[_Point]:
    """Merge isolated points closer than their location uncertainty.

    Newton converges only linearly to a degenerate root (``I − J`` singular there, as at 0 for
    ``h ↦ h − h³``) and stops wherever the residual meets the tolerance, which may be far wider
    than the dedup radius: one point would be counted many times. A point is known to within a
    few Newton steps ``δ = (I − J)⁻¹(f(h) − h)`` (the distance to a root of multiplicity ``m`` is
    ``m·‖δ‖``), so points with a neutral direction whose balls of radius ``max(radius, 4‖δ‖)``
    overlap are one point (the one of least residual represents it). Dense, for state
    dimensions up to ``dense_limit``; for a nondegenerate point ``4‖δ‖`` is far below the dedup
    radius and nothing changes.
    """
    cand = [i for i, r in enumerate(iso) if r.nullity >= 1]
    if len(cand) < 2 or system.state_dim > dense_limit:
        return iso
    rows = torch.tensor([iso[i].row for i in cand], dtype=torch.long)
    states = torch.stack([iso[i].state for i in cand])
    sub = inputs.sub(rows)
    J = jacobian(sub, states)
    with torch.no_grad():
        F = sub.flatten(sub._step_unchecked(states, sub.step_x) - states)
    eye = torch.eye(J.shape[-1], dtype=J.dtype, device=J.device)
    delta = torch.linalg.lstsq(eye - J, F[..., None]).solution[..., 0]
    u = torch.clamp(4 * delta.norm(dim=1), min=radius)
    flat = sub.flatten(states)
    uf = _UnionFind(len(cand))
    for a in range(len(cand)):
        for b in range(a + 1, len(cand)):
            if iso[cand[a]].input != iso[cand[b]].input:
                continue
            if float((flat[a] - flat[b]).norm()) <= float(u[a] + u[b]):
                uf.union(a, b)
    groups: dict[int, list[int]] = {}
    for j in range(len(cand)):
        groups.setdefault(uf.find(j), []).append(cand[j])
    drop: set[int] = set()
    for members in groups.values():
        if len(members) < 2:
            continue
        best = min(members, key=lambda i: iso[i].residual)
        iso[best] = replace(
            iso[best],
            found_by=tuple(sorted({s for i in members for s in iso[i].found_by})),
            reach_rows=tuple(sorted({row for i in members for row in iso[i].reach_rows})),
            hits=sum(iso[i].hits for i in members),
        )
        drop.update(i for i in members if i != best)
    return [r for i, r in enumerate(iso) if i not in drop]


def _compose(system: LoopedSystem, sub: LoopedSystem, p: int) -> LoopedSystem:
    """``f^p`` with the inputs of ``sub``."""
    x = sub.step_x

    def fp(h: torch.Tensor, xx: torch.Tensor | None = None) -> torch.Tensor:
        for _ in range(p):
            h = system._step_unchecked(h, xx if system.driven else None)
        return h

    if system.driven:
        return LoopedSystem.from_function(
            fp,
            system.state_shape,
            x=x,
            driven=True,
            validate=False,
            dtype=system.dtype,
            device=system.device,
        )
    return LoopedSystem.from_function(
        lambda h: fp(h),
        system.state_shape,
        validate=False,
        dtype=system.dtype,
        device=system.device,
    )


def _cycle_record(
    system: LoopedSystem,
    inputs: _Inputs,
    row: int,
    points: torch.Tensor,
    inp: int,
    *,
    dense_limit: int,
    k: int,
    delta: float,
    seed: int,
) -> _CycleRecord:
    """A q-cycle's residual under ``f^q``, multipliers (spectrum of ``∂f^q/∂h``) and class."""
    q = int(points.shape[0])
    zero = torch.zeros(1, dtype=torch.long)
    fq = _Inputs(_compose(system, inputs.sub(torch.tensor([row])), q), zero)
    res = float(_residuals(fq, zero, points[:1])[0])
    mult, exact = _spectra(fq.system, points[:1], fq, zero, k=k, dense_limit=dense_limit, seed=seed)
    ev = mult[0].detach()
    stability, _ = _classify(ev.abs(), delta, exact)
    return _CycleRecord(
        period=q,
        points=points,
        flat=system.flatten(points),
        input_index=inp,
        residual=res,
        multipliers=ev,
        spectral_radius=float(ev.abs().max()),
        stability=stability,
    )


def _find_cycles(
    system: LoopedSystem,
    inputs: _Inputs,
    last: torch.Tensor,
    rows: list[int],
    *,
    max_period: int,
    rtol: float,
    radius: float,
    dense_limit: int,
    k: int,
    delta: float,
    seed: int,
) -> list[_CycleRecord]:
    """Period-p orbits (2 <= p <= max_period) among starts that neither converged nor diverged.

    Each such start is followed on from ``last``, the iterate where its plain iteration stopped
    (not its least-residual iterate, which is often an early transient that passed near a fixed
    point), for ``2·max_period`` more steps. Where the recent iterates nearly recur with period
    ``p`` (``‖h_{t+p} − h_t‖`` below a tenth of the step size, and below ``100 √tol`` relative,
    which a start that will count as settled meets), Newton–Krylov on ``f^p`` polishes
    the recurrence into an exact orbit, whose least period ``q`` (the smallest divisor of ``p``
    that closes it) and multipliers (the spectrum of ``∂f^q/∂h``) are then taken. A slowly
    converging 2-cycle with a multiplier near −1 nearly recurs with period 4 first: the least
    period keeps it a 2-cycle.

    A start counts as settled on a cycle when the orbit is stable (every multiplier inside the
    unit circle) and the start's last iterate lies within ``√tol · max(1, ‖orbit‖)`` of it: inside
    the linear regime of an attracting orbit, which it then approaches geometrically. Orbits that
    are not stable (Newton may find them near a start that lingers on a chaotic attractor, which
    holds infinitely many) are not reported: no start settles on them. Each orbit returned carries
    the starts that settled on it.
    """
    if not rows or max_period < 2:
        return []
    rows_t = torch.tensor(rows, dtype=torch.long)
    sub = inputs.sub(rows_t)
    window = 2 * max_period
    with torch.no_grad():
        traj = sub.iterate(last[rows_t], n_steps=window, record=True).states
    assert traj is not None
    flat = traj.reshape(traj.shape[0], traj.shape[1], -1)
    t0 = window - max_period
    step = (flat[t0 + 1 :] - flat[t0:-1]).norm(dim=2).amax(dim=0)  # the motion per step
    # candidate periods: the recent iterates recur with period p to a tenth of their motion
    recur = torch.stack(
        [(flat[t0 + p] - flat[t0]).norm(dim=1) for p in range(2, max_period + 1)], dim=1
    )  # (n, max_period - 1); NaN compares False
    # a start within ε = √tol·max(1, ‖h‖) of an orbit (the settling test below) recurs to within
    # (1 + Lip f^p)·ε: farther recurrences (chaotic orbits pass near themselves) cannot settle
    near = 100 * math.sqrt(rtol) * torch.clamp(flat[t0].norm(dim=1), min=1.0)
    cand = ((recur <= 0.1 * step[:, None]) & (recur <= near[:, None])).cpu()

    end = flat[-1]
    settle = math.sqrt(rtol)
    out: list[_CycleRecord] = []
    settled_rows: list[list[int]] = []  # per orbit in out, the starts settled on it so far

    def settled_on(i: int, inp: int) -> int | None:
        """The stable orbit of input ``inp`` whose linear regime start ``i`` ended in, if any."""
        best, best_d = None, math.inf
        for c_i, c in enumerate(out):
            if c.input_index != inp or c.stability != "stable":
                continue
            d = float((c.flat - end[i][None]).norm(dim=1).min())
            if d <= settle * max(1.0, float(c.flat.norm(dim=1).max())) and d < best_d:
                best, best_d = c_i, d
        return best

    done = torch.zeros(len(rows), dtype=torch.bool)
    for p in range(2, max_period + 1):
        # a start near a period-doubled orbit recurs with period p/2 too, where Newton finds the
        # (unstable) parent orbit: every candidate period is tried until the start has settled
        sel = torch.nonzero(cand[:, p - 2] & ~done).flatten()
        if sel.numel() == 0:
            continue
        pol = solve(
            _compose(system, inputs.sub(rows_t[sel]), p),
            traj[t0][sel],
            method="newton_krylov",
            tol=rtol,
            atol=rtol,
            max_steps=30,
            throw=False,
        )
        for j in range(sel.numel()):
            i, row = int(sel[j]), int(rows_t[sel[j]])
            inp = int(inputs.index[row])
            if pol.outcomes[j].ok:
                one = inputs.sub(torch.tensor([row]))
                orbit = [pol.state[j]]
                with torch.no_grad():
                    for _ in range(p):
                        orbit.append(one._step_unchecked(orbit[-1][None], one.step_x)[0])
                orb = system.flatten(torch.stack(orbit))
                # least period: the smallest divisor q of p whose orbit closes as well as Newton
                # closed f^p (tied to the solve's residual, not to the dedup tolerance)
                closed = max(10 * float(pol.residual[j]), 100 * rtol * (1 + float(orb[0].norm())))
                q = next(
                    (
                        d
                        for d in range(1, p + 1)
                        if p % d == 0 and float((orb[d] - orb[0]).norm()) <= closed
                    ),
                    None,
                )  # None: stepping p times did not close the orbit Newton found: not a cycle
                known = q is None or any(
                    c.period == q
                    and c.input_index == inp
                    and float((c.flat - orb[0][None]).norm(dim=1).min()) <= 10 * radius
                    for c in out
                )
                if q is not None and q > 1 and not known:
                    settled_rows.append([])
                    out.append(
                        _cycle_record(
                            system,
                            inputs,
                            row,
                            torch.stack(orbit[:q]).detach(),
                            inp,
                            dense_limit=dense_limit,
                            k=k,
                            delta=delta,
                            seed=seed,
                        )
                    )
            c_i = settled_on(i, inp)
            if c_i is not None:
                done[i] = True
                settled_rows[c_i].append(row)
    # only attracting orbits that starts settled on are reported: unstable periodic orbits met on
    # the way are incidental (a chaotic attractor holds infinitely many) and not searched for
    return [
        replace(c, reach_rows=tuple(sorted(rows_c)))
        for c, rows_c in zip(out, settled_rows, strict=True)
        if rows_c
    ]


# ---------------------------------------------------------------------- the stages
def _check_options(
    system: LoopedSystem,
    n_starts: int,
    *,
    mode: SearchMode,
    start: StartKind,
    scale: float,
    tol: float | None,
    max_steps: int,
    damping: float,
    dedup_tol: float | None,
    neutral_band: float,
    max_period: int,
    n_newton: int | None,
    perturb: float,
    qmin_steps: int,
    newton_steps: int,
    bridge_rounds: int,
    k_eigenvalues: int,
    dense_limit: int,
    seed: int,
) -> _Options:
    """Every setting of :func:`find_fixed_points` checked before any work, one at a time in a
    fixed order (the first bad one is the one named); the starts are checked by :func:`_seed`."""
    call = call_form("find_fixed_points", ["system"], n_starts=n_starts, mode=mode)
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    check_positive_int(call, "n_starts", n_starts)
    check_choice(call, "mode", mode, ("reach", "all"))
    check_choice(call, "start", start, ("normal", "input", "zeros"))
    check_positive_float(call, "scale", scale)
    check_positive_int(call, "max_steps", max_steps)
    check_positive_float(call, "damping", damping, upper=1.0)
    check_positive_float(call, "neutral_band", neutral_band, upper=1.0, upper_inclusive=False)
    check_positive_int(call, "max_period", max_period)
    check_positive_float(call, "perturb", perturb)
    check_positive_int(call, "qmin_steps", qmin_steps, minimum=0)
    check_positive_int(call, "newton_steps", newton_steps)
    check_positive_int(call, "bridge_rounds", bridge_rounds, minimum=0)
    check_positive_int(call, "k_eigenvalues", k_eigenvalues)
    check_positive_int(call, "dense_limit", dense_limit, minimum=0)
    if n_newton is not None:
        check_positive_int(call, "n_newton", n_newton)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"{call}: seed must be an int, got {seed!r}")
    check_solvable_dtype(call, "the system", system.dtype)
    rtol = (
        default_tolerance(system.dtype) if tol is None else check_positive_float(call, "tol", tol)
    )
    if dedup_tol is not None:
        check_positive_float(call, "dedup_tol", dedup_tol)
    return _Options(
        call=call,
        n_starts=n_starts,
        mode=mode,
        start=start,
        scale=scale,
        rtol=rtol,
        max_steps=max_steps,
        damping=damping,
        dedup_tol=dedup_tol,
        neutral_band=neutral_band,
        max_period=max_period,
        n_newton=n_newton,
        perturb=perturb,
        qmin_steps=qmin_steps,
        newton_steps=newton_steps,
        bridge_rounds=bridge_rounds,
        k_eigenvalues=k_eigenvalues,
        dense_limit=dense_limit,
        seed=seed,
    )


def _seed(system: LoopedSystem, starts: torch.Tensor | None, opts: _Options) -> _Seeds:
    """The starts of every input: ``starts`` (checked) repeated per input, or ``n_starts`` drawn
    by :meth:`LoopedSystem.initial_states`, once the search is known to fit in memory."""
    driven_inputs = system.driven and system.x is not None
    n_inputs = int(system.x.shape[0]) if driven_inputs and system.x is not None else 1
    shape_ones = [1] * len(system.state_shape)
    if starts is not None:
        check_state_shape(opts.call, "starts", starts, system.state_shape)
        check_finite_tensor(opts.call, "starts", starts)
    per = int(starts.shape[0]) if starts is not None else opts.n_starts
    # the search keeps about 16 copies of the starts at once (iterates, best and last states,
    # trajectories, root-finding runs): refuse what cannot fit before allocating any of it
    itemsize = torch.empty(0, dtype=system.dtype).element_size()
    check_memory(
        opts.call,
        f"a search from {per} starts x {n_inputs} input(s) of {system.state_dim} entries",
        16.0 * per * n_inputs * system.state_dim * itemsize,
        system.device,
        "pass fewer starts (n_starts= or starts=) or fewer inputs",
    )
    if starts is not None:
        h0 = (
            starts.detach()
            .to(dtype=system.dtype, device=system.device)
            .repeat(n_inputs, *shape_ones)
        )
    else:
        h0 = system.initial_states(opts.start, opts.n_starts, scale=opts.scale, seed=opts.seed)
        per = int(h0.shape[0]) // n_inputs
    index = torch.arange(n_inputs).repeat_interleave(per)
    inputs = _Inputs(system, index)
    run_sys = inputs.sub(torch.arange(int(h0.shape[0])))
    return _Seeds(h0=h0, per=per, n_inputs=n_inputs, index=index, inputs=inputs, run_sys=run_sys)


def _iterate(system: LoopedSystem, seeds: _Seeds, cands: _Candidates, opts: _Options) -> _Reach:
    """Stage 1: plain (damped) iteration from every start; the limits of the converged starts,
    polished, join ``cands`` as found by ``"iteration"``."""
    reach = _solve_rows(
        opts,
        seeds.inputs,
        None,
        seeds.h0,
        local=seeds.run_sys,
        method="picard",
        damping=opts.damping,
        tol=opts.rtol,
        atol=opts.rtol,
        max_steps=opts.max_steps,
    )
    outcomes = tuple(reach.outcomes)
    conv = torch.tensor([i for i, o in enumerate(outcomes) if o.ok], dtype=torch.long)
    if conv.numel():
        lims, lim_res = reach.state[conv], reach.residual[conv]
        polished = _polish_limits(
            system, seeds.inputs, seeds.index, lims, lim_res, conv, opts.dedup_tol, opts.rtol
        )
        cands.add(polished, conv, "iteration", reach=conv)
    assert reach.last_state is not None
    return _Reach(outcomes=outcomes, last_state=reach.last_state, steps=reach.steps)


def _classify_points(
    system: LoopedSystem, seeds: _Seeds, cands: _Candidates, opts: _Options
) -> _Classified:
    """Stage 3: deduplicate the candidates per input, keeping the least-residual representative,
    and classify them; in mode "all", then Newton from the midpoints of pairs of nondegenerate
    points (saddles sit between attractors), round after round while new points appear."""
    # by candidate index: a representative that survives a round keeps its spectrum
    spectra: dict[int, tuple[torch.Tensor, float]] = {}

    def dedup_and_classify() -> tuple[list[_Point], float, bool]:
        """Cluster the whole pool as it stands and classify each cluster's representative."""
        clusters, radius = _dedup(
            system, seeds.inputs, seeds.index, cands, opts.dedup_tol, opts.rtol
        )
        points, exact = _classify_all(
            system,
            seeds.inputs,
            clusters,
            spectra,
            k=opts.k_eigenvalues,
            dense_limit=opts.dense_limit,
            neutral_band=opts.neutral_band,
            seed=opts.seed,
        )
        return points, radius, exact

    points, radius, exact = dedup_and_classify()
    if opts.mode == "all":
        prev: list[_Point] = []
        for _ in range(opts.bridge_rounds):
            _bridge(
                seeds.inputs,
                points,
                prev,
                cands,
                radius=radius,
                rtol=opts.rtol,
                newton_steps=opts.newton_steps,
                max_pairs=max(4 * seeds.per, 512),
            )
            prev = points
            points, radius, exact = dedup_and_classify()
            if len(points) == len(prev):
                break
    curve = _dedup_curve(system, seeds.index, cands, radius)
    return _Classified(points=tuple(points), radius=radius, exact=exact, dedup_curve=tuple(curve))


def _structure(
    system: LoopedSystem, seeds: _Seeds, reach: _Reach, found: _Classified, opts: _Options
) -> _Structure:
    """Stages 4 and 5: the continua among the neutral points, the attracting cycles among the
    bounded, unconverged starts, and the isolated points that remain (degenerate duplicates
    merged), stable first, then by input and basin size."""
    continua, in_continuum = _continua(
        system, seeds.inputs, found.points, rtol=opts.rtol, exact=found.exact, seed=opts.seed
    )
    cycles = _find_cycles(
        system,
        seeds.inputs,
        reach.last_state,
        [i for i, o in enumerate(reach.outcomes) if o is Outcome.MAX_STEPS_REACHED],
        max_period=opts.max_period,
        rtol=opts.rtol,
        radius=found.radius,
        dense_limit=opts.dense_limit,
        k=opts.k_eigenvalues,
        delta=opts.neutral_band,
        seed=opts.seed,
    )
    iso = _merge_degenerate(
        system,
        seeds.inputs,
        [r for i, r in enumerate(found.points) if i not in in_continuum],
        radius=found.radius,
        dense_limit=opts.dense_limit,
    )
    iso.sort(key=lambda r: (STABILITY.index(r.stability), r.input, -len(r.reach_rows)))
    return _Structure(isolated=tuple(iso), continua=tuple(continua), cycles=tuple(cycles))


def _label_starts(
    reach: _Reach, structure: _Structure
) -> tuple[torch.Tensor, dict[str, int], list[int]]:
    """Each iteration start's label (the attractor it reached, in points, continua, cycles order;
    -1 unconverged, -2 diverged, -3 non-finite), the count of each outcome, and each attractor's
    basin count."""
    label = torch.full((len(reach.outcomes),), -1, dtype=torch.long)
    attractor_counts: list[int] = []
    for rows_a in (
        [r.reach_rows for r in structure.isolated]
        + [c.reach_rows for c in structure.continua]
        + [c.reach_rows for c in structure.cycles]
    ):
        if rows_a:
            label[torch.tensor(rows_a)] = len(attractor_counts)
            attractor_counts.append(len(rows_a))
    cont_rows = {row for c in structure.continua for row in c.reach_rows}
    cycle_rows = {row for c in structure.cycles for row in c.reach_rows}
    outcomes = dict.fromkeys(
        ("converged", "continuum", "cycle", "unconverged", "diverged", "nonfinite", "degenerate"),
        0,
    )
    for row, o in enumerate(reach.outcomes):
        if o.ok:
            outcomes["continuum" if row in cont_rows else "converged"] += 1
        elif o is Outcome.MAX_STEPS_REACHED:
            outcomes["cycle" if row in cycle_rows else "unconverged"] += 1
        elif o is Outcome.DIVERGED:
            outcomes["diverged"] += 1
            label[row] = -2
        elif o is Outcome.NONFINITE:
            outcomes["nonfinite"] += 1
            label[row] = -3
        else:
            outcomes["degenerate"] += 1
    return label, outcomes, attractor_counts


def _discovery(label: torch.Tensor) -> tuple[int, ...]:
    """Distinct attractors among the labels of the first 1, 2, …, N starts."""
    seen: set[int] = set()
    curve = []
    for lab in label.tolist():
        if lab >= 0:
            seen.add(lab)
        curve.append(len(seen))
    return tuple(curve)


def _assemble(
    system: LoopedSystem,
    seeds: _Seeds,
    reach: _Reach,
    found: _Classified,
    structure: _Structure,
    n_sampled: int,
    opts: _Options,
) -> FixedPointSet:
    """Stage 6: the result, with basins per start of an input, each start's label and outcome,
    the discovery curve, the unseen estimates and, in mode "all", the index sums per input."""
    per = seeds.per
    points = tuple(
        FixedPoint(
            state=r.state,
            input_index=r.input,
            residual=r.residual,
            found_by=r.found_by,
            basin_count=len(r.reach_rows),
            basin_fraction=len(r.reach_rows) / per,
            basin_interval=clopper_pearson(len(r.reach_rows), per),
            eigenvalues=r.eig,
            spectral_radius=r.rho,
            n_unstable=r.n_out,
            n_unstable_exact=found.exact,
            nullity=r.nullity,
            stability=r.stability,
        )
        for r in structure.isolated
    )
    continua = tuple(
        Continuum(
            dimension=c.dimension,
            dimension_is_lower_bound=c.dimension_is_lower_bound,
            input_index=c.input_index,
            samples=c.samples,
            basin_count=len(c.reach_rows),
            basin_fraction=len(c.reach_rows) / per,
            evidence=c.evidence,
        )
        for c in structure.continua
    )
    cycles = tuple(
        Cycle(
            period=c.period,
            points=c.points,
            input_index=c.input_index,
            residual=c.residual,
            multipliers=c.multipliers,
            spectral_radius=c.spectral_radius,
            stability=c.stability,
            basin_count=len(c.reach_rows),
            basin_fraction=len(c.reach_rows) / per,
            basin_interval=clopper_pearson(len(c.reach_rows), per),
        )
        for c in structure.cycles
    )
    label, outcomes, attractor_counts = _label_starts(reach, structure)
    unseen_points = None
    index_sums: tuple[int | None, ...] = ()
    if opts.mode == "all":
        hits = [r.hits for r in structure.isolated] + [
            sum(found.points[i].hits for i in c.members) for c in structure.continua
        ]
        unseen_points = chao1(
            [h for h in hits if h > 0],
            seeds.n_inputs * n_sampled,
            draws=n_sampled,
            of="fixed points",
        )
        index_sums = tuple(
            _index_sum(
                [r for r in structure.isolated if r.input == b],
                exact=found.exact,
                continuum=any(c.input_index == b for c in structure.continua),
            )
            for b in range(seeds.n_inputs)
        )
    return FixedPointSet(
        points=points,
        cycles=cycles,
        continua=continua,
        n_inputs=seeds.n_inputs,
        starts_per_input=per,
        start_outcomes=outcomes,
        steps=reach.steps,
        labels=label,
        discovery=_discovery(label),
        unseen=chao1(attractor_counts, seeds.total, draws=per),
        dedup_tol=float(found.radius),
        dedup_curve=found.dedup_curve,
        mode=opts.mode,
        tol=opts.rtol,
        neutral_band=opts.neutral_band,
        seed=opts.seed,
        dtype=str(system.dtype).replace("torch.", ""),
        device=str(system.device),
        unseen_points=unseen_points,
        index_sums=index_sums,
        damping=opts.damping,
        shards=1 if opts.executor is None else len(_cuts(seeds.total, opts.shards)) - 1,
    )


# ---------------------------------------------------------------------- the verb
def find_fixed_points(
    system: LoopedSystem,
    n_starts: int = 128,
    *,
    starts: torch.Tensor | None = None,
    mode: SearchMode = "reach",
    start: StartKind = "normal",
    scale: float = 1.0,
    tol: float | None = None,
    max_steps: int = 1000,
    damping: float = 1.0,
    dedup_tol: float | None = None,
    neutral_band: float = 1e-4,
    max_period: int = 8,
    n_newton: int | None = None,
    perturb: float = 0.5,
    qmin_steps: int = 200,
    newton_steps: int = 50,
    bridge_rounds: int = 3,
    k_eigenvalues: int = 6,
    dense_limit: int = 512,
    seed: int = 0,
    prove: bool | None = None,
    box: tuple[Any, Any] | None = None,
    max_boxes: int = 20_000,
    executor: Any = None,
    shards: int | None = None,
) -> FixedPointSet:
    """Find a looped map's fixed points from many starts: which ones iteration reaches, how stable
    each is, whether they come in continua, and how many may have been missed.

    **mode="reach"** iterates the map itself (damped Picard; ``damping = 1`` is the model's own
    loop) from every start. Converged starts are polished by Newton–Krylov and deduplicated:
    these are the attractors iteration reaches, with basin fractions. Starts that neither converge
    nor diverge are followed on from where their iteration stopped and examined for attracting
    period-``p`` orbits (``2 <= p <= max_period``, least period, Newton on ``f^p``); a start
    counts on a cycle once it is inside the orbit's linear regime.
    **mode="all"** adds root-finding, which finds saddles and repellers too, which iteration
    never reaches: Newton–Krylov from every start itself; Newton–Krylov from perturbed states of
    the starts' short trajectories, each start's trajectory used once before any twice, and where
    that run fails, minimisation of ``q(h) = ½‖f(h) − h‖²`` (Sussillo & Barak 2013) from the
    same state followed by Newton; then
    Newton from the midpoints of pairs of the points found (saddles sit between attractors),
    round after round while new points appear. The perturbed Newton runs are the random sample
    behind :attr:`FixedPointSet.unseen_points`, and the fixed-point indices are summed in
    :attr:`FixedPointSet.index_sum`.

    Every point gets its residual, basin count and fraction (Clopper–Pearson interval), the
    eigenvalues of ``∂f/∂h`` (all of them for ``n <= dense_limit``, else the top ``k`` by Arnoldi)
    and a stability class with a neutral band ``δ``. Points with an eigenvalue within ``δ`` of 1
    are tested for non-isolation (Newton from small steps away lands on other fixed points, and
    chords between them polish into fixed points): those are reported as a :class:`Continuum` with
    its dimension, not counted. The discovery curve and a Chao1 estimate say how many attractors
    may remain unseen. Unconverged, diverged and non-finite starts are counted, never dropped.

    **Sharded** (``executor=``): the work each start does on its own is split into ``shards``
    contiguous pieces of the starts, each run as a task on the executor, and the pieces'
    results are joined in start order in this process, which then goes on exactly as the
    one-process run does (polishing, deduplication, classification, cycles, counts, the unseen
    estimates). The pieces are the plain iteration from every start (the bulk of mode
    "reach"), and in mode "all" also the Newton–Krylov runs from the starts and the perturbed
    states and the q-minimisation; Newton–Krylov on states of more than 64 entries shares one
    GMRES across the batch, which makes a start's bits depend on the others, so those runs stay
    in this process. Every random draw is made here, so a seed gives the same
    search. When the map evaluates each state of a batch independently of the others
    (elementwise maps do, and so does :class:`~dynamo.models.LoopedTransformer` on the CPU
    when its number of tokens is a multiple of 4), the result equals the one-process run bit
    for bit. A plain matrix product ``h @ W.T`` does not (torch's MKL on an AVX2 CPU rounds the
    last ``rows mod 4`` rows of a product its own way, and which rows those are depends on the
    batch): then the starts' limits agree to rounding, and the counts, labels and basins agree
    unless a start sits on the edge of a tolerance.

    Parameters
    ----------
    system : LoopedSystem
        Each input of a driven system is searched separately; an autonomous system is one input.
    n_starts : int
        Starts per input when ``starts`` is not given (>= 1).
    starts : torch.Tensor, optional
        ``(n, *state_shape)``, used for every input.
    mode : {"reach", "all"}
    start : {"normal", "input", "zeros"}
        Start distribution when ``starts`` is not given (:meth:`LoopedSystem.initial_states`).
    scale : float
        Noise scale of that distribution.
    tol : float, optional
        Residual tolerance, relative and absolute (default :func:`default_tolerance`).
    max_steps : int
        Iterations per start.
    damping : float
        Picard damping of the reach search.
    dedup_tol : float, optional
        Points closer than this are one (default ``1e3 · tol · max(1, largest state norm)``).
    neutral_band : float
        ``δ``: ``|λ|`` within ``δ`` of 1 makes a point marginal; ``λ`` within ``δ`` of 1 is a
        neutral direction (nullity of ``I − J``).
    max_period : int
        Longest cycle looked for (iteration is followed ``2 · max_period`` steps past
        ``max_steps`` to see it recur).
    n_newton : int, optional
        Perturbed root-finding starts per input in mode "all" (default: the number of starts, so
        each start is perturbed once), on top of one unperturbed run from every start.
    perturb : float
        Noise on trajectory states for mode "all", relative to their RMS entry (0.5, as
        FixedPointFinder's examples use: diverse starts reach more saddles).
    qmin_steps : int
        Adam steps on ``q`` in mode "all", from each perturbed state whose Newton run failed
        (0: no q-minimisation).
    newton_steps : int
        Newton–Krylov steps per root-finding start in mode "all".
    bridge_rounds : int
        Rounds of Newton from midpoints of pairs of points found, in mode "all" (0: none); a
        round runs only while the previous one found new points.
    k_eigenvalues : int
        Eigenvalues kept per point when the spectrum comes from Arnoldi.
    dense_limit : int
        Largest state dimension for a dense Jacobian and the full spectrum.
    seed : int
    prove : bool, optional
        Prove every point found (:func:`prove_fixed_point`: Krawczyk in arb ball arithmetic;
        existence and uniqueness within a radius, the stability class, a certified basin for
        stable points), each in :attr:`FixedPoint.proof`. Default: on for states of at most
        ``PROVE_LIMIT`` (32) entries (about 0.1 s a point at 24 entries on one core, plus a
        one-off 3 s to import the tracer in a fresh process); a map with an
        operation that has no rigorous enclosure then keeps its points as estimates and says
        why in :attr:`FixedPointSet.proof_note`. ``True`` forces proofs (and raises on such a
        map), ``False`` skips them.
    box : (lo, hi), optional
        Also enumerate every fixed point in this box, per input (:func:`enumerate_fixed_points`),
        proving the list complete when the budget allows; reported in
        :attr:`FixedPointSet.enumerations`.
    max_boxes : int
        The enumeration's budget of boxes per input.
    executor : concurrent.futures.Executor, optional
        Where the starts' independent work runs (see **Sharded** above): a
        ``ThreadPoolExecutor`` (the objects are shared, nothing is copied), a
        ``ProcessPoolExecutor`` (the system goes as bytes, by cloudpickle when installed, which
        sends closures and locally defined modules; else pickle), :class:`dynamo.RayExecutor`
        (a local Ray instance or a cluster; each node needs dynamo installed), or any object with
        ``submit``. None (default): everything in this process.
    shards : int, optional
        How many pieces the starts are split into (>= 1; default: as many as the executor runs
        at once). Recorded in :attr:`FixedPointSet.shards`. Only with an executor.

    Returns
    -------
    FixedPointSet
        An estimate (``trust`` is ESTIMATED, ``guaranteed`` False): a multi-start search can
        miss basins.

    References
    ----------
    D. Sussillo, O. Barak, "Opening the black box", Neural Computation 25(3), 2013; M. D. Golub,
    D. Sussillo, FixedPointFinder, JOSS 10.21105/joss.01003; A. Chao, Biometrics 43(4), 1987.

    Examples
    --------
    >>> import dynamo as dy
    >>> henon = dy.LoopedSystem.from_module(dy.models.Henon())
    >>> found = dy.find_fixed_points(henon, 64, mode="all", scale=0.5)
    >>> sorted(round(float(p.state[0]), 4) for p in found.points)
    [-1.1314, 0.6314]
    >>> [p.stability for p in found.points]
    ['saddle', 'saddle']

    The same search split over two threads gives the same numbers:

    >>> import torch
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> local = dy.find_fixed_points(system, 64, mode="all")
    >>> with ThreadPoolExecutor(max_workers=2) as pool:
    ...     sharded = dy.find_fixed_points(system, 64, mode="all", executor=pool)
    >>> sharded.shards, sharded.counts()
    (2, {'stable': 4, 'marginal': 0, 'saddle': 4, 'unstable': 1, 'cycles': 0, 'continua': 0})
    >>> sharded.counts() == local.counts(), torch.equal(sharded.labels, local.labels)
    (True, True)
    >>> sharded.unseen == local.unseen, sharded.start_outcomes == local.start_outcomes
    (True, True)
    """
    opts = _check_options(
        system,
        n_starts,
        mode=mode,
        start=start,
        scale=scale,
        tol=tol,
        max_steps=max_steps,
        damping=damping,
        dedup_tol=dedup_tol,
        neutral_band=neutral_band,
        max_period=max_period,
        n_newton=n_newton,
        perturb=perturb,
        qmin_steps=qmin_steps,
        newton_steps=newton_steps,
        bridge_rounds=bridge_rounds,
        k_eigenvalues=k_eigenvalues,
        dense_limit=dense_limit,
        seed=seed,
    )
    check_positive_int(opts.call, "max_boxes", max_boxes)
    if prove is not None and not isinstance(prove, bool):
        raise InvalidArgumentError(f"{opts.call}: prove must be True, False or None")
    if box is not None:
        _check_box(opts.call, system, box)
    if executor is not None or shards is not None:
        shown = {"n_starts": n_starts, "mode": mode} | (
            {} if shards is None else {"shards": shards}
        )
        call = call_form("find_fixed_points", ["system"], **shown)
        opts = replace(opts, executor=executor, shards=_check_sharding(call, executor, shards))
    seeds = _seed(system, starts, opts)
    # one append-only pool for every route, so a candidate's index keys what is computed for it
    cands = _Candidates()
    reach = _iterate(system, seeds, cands, opts)
    # mode "all": root-finding from every start and from perturbed trajectory states (the random
    # sample the unseen estimate of points rests on); the bridges between points come in stage 3
    n_sampled = _root_finding(system, seeds, cands, opts) if opts.mode == "all" else 0
    found = _classify_points(system, seeds, cands, opts)
    structure = _structure(system, seeds, reach, found, opts)
    result = _assemble(system, seeds, reach, found, structure, n_sampled, opts)
    return _proofs(system, result, opts.call, prove, box, max_boxes)


#: the largest state for which find_fixed_points proves its points by default
PROVE_LIMIT = 32


def _proofs(
    system: LoopedSystem,
    result: FixedPointSet,
    call: str,
    prove: bool | None,
    box: tuple[Any, Any] | None,
    max_boxes: int,
) -> FixedPointSet:
    """Stage 7: the rigorous proofs of the points found, and the enumeration in ``box``."""
    auto = prove is None
    if prove is None:
        prove = system.state_dim <= PROVE_LIMIT
        why_not = (
            f"not attempted (state dimension {system.state_dim} > {PROVE_LIMIT}; prove=True "
            "forces them)"
        )
    else:
        why_not = "not attempted (prove=False)"
    note: str | None = None if prove else why_not
    points = result.points
    if prove and points:
        traced: dict[int, Any] = {}
        proven = []
        try:
            for p in points:
                if p.input_index not in traced:
                    traced[p.input_index] = trace_map(call, _one_input(system, p.input_index))
                pr = prove_point(traced[p.input_index], p.state, radius_max=1.0, basin=True)
                proven.append(replace(p, proof=pr))
            points = tuple(proven)
        except InvalidArgumentError as err:
            if not auto:
                raise
            note = f"not possible: {err}"
    enums: list[Enumeration] = []
    if box is not None:
        for i in range(result.n_inputs):
            x = None
            if system.driven and system.x is not None and system.x.shape[0] > 1:
                x = system.x[i]
            enums.append(enumerate_fixed_points(system, box, x=x, max_boxes=max_boxes))
    return replace(result, points=points, proof_note=note, enumerations=tuple(enums))


def _one_input(system: LoopedSystem, i: int) -> LoopedSystem:
    if not system.driven or system.x is None:
        return system
    return system.with_input(system.x[i : i + 1])
