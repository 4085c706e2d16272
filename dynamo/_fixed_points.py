"""Multi-start fixed-point search: attractors reached by iteration, unstable points found by
root-finding, stability classes, cycles, continua, and a count with confidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ._linearize import JacobianOperator, jacobian
from ._results import Outcome
from ._solvers import default_tolerance, solve
from ._spectral import _arnoldi
from ._stats import UnseenEstimate, chao1, clopper_pearson
from ._system import LoopedSystem
from ._validate import (
    call_form,
    check_choice,
    check_finite_tensor,
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
        from a perturbed trajectory state), ``"qmin"`` (minimisation of ``½‖f(h) − h‖²``).
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
    (('iteration', 'newton', 'qmin'), 6)
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
        }


@dataclass(frozen=True)
class Cycle:
    """A period-``p`` orbit ``h₀ → h₁ → … → h₀`` (``p ≥ 2``), classified by the spectrum of
    ``∂f^p/∂h`` at ``h₀`` (its multipliers; the same at every point of the orbit, claim C10).

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
    dedup tolerance would only decide how finely it gets chopped up).

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
        Chao1 estimate of attractors not yet seen, with the rule-of-three detectable basin size.
    dedup_tol : float
        Distance under which two converged states count as one point.
    dedup_curve : tuple of (float, int)
        Distinct points at other dedup tolerances: a count that moves a lot with the tolerance
        signals points that are not isolated.
    steps : torch.Tensor
        ``(n_inputs · starts_per_input,)``: iterations each start took (until it converged or
        stopped).
    mode, tol, neutral_band, seed, dtype, device :
        Settings.

    Examples
    --------
    :func:`find_fixed_points` returns one:

    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> found = dy.find_fixed_points(system, 16, mode="all")
    >>> len(found.points), found.start_outcomes["converged"], found.guaranteed
    (9, 16, False)
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
    guaranteed: bool = field(default=False, init=False)

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

    def counts(self) -> dict[str, int]:
        """Points per stability class, cycles, continua.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> found = dy.find_fixed_points(system, 16, mode="all")
        >>> found.counts()
        {'stable': 4, 'marginal': 0, 'saddle': 4, 'unstable': 1, 'cycles': 0, 'continua': 0}
        """
        out = {k: len(self.with_stability(k)) for k in STABILITY}
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
        >>> d["kind"], len(d["points"]), d["counts"]["stable"]
        ('estimate', 9, 4)
        """
        return {
            "kind": "estimate",
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
            "dedup_tol": self.dedup_tol,
            "dedup_curve": [[t, c] for t, c in self.dedup_curve],
            "tol": self.tol,
            "neutral_band": self.neutral_band,
            "seed": self.seed,
            "dtype": self.dtype,
            "device": self.device,
        }

    def __str__(self) -> str:
        c = self.counts()
        head = (
            f"FixedPointSet({self.mode}, {self.n_inputs} input(s) x {self.starts_per_input} "
            "starts): "
        )
        if not self.points and not self.continua and not self.cycles:
            # nothing converged is not "0 fixed points": say what happened instead
            parts = [head + "no fixed point found (no start converged to one)"]
        else:
            parts = [
                head + f"{len(self.points)} isolated points ({c['stable']} stable, "
                f"{c['saddle']} saddle, {c['unstable']} unstable, {c['marginal']} marginal)"
            ]
        for cont in self.continua:
            parts.append(
                f"  a continuum of dimension {cont.dimension} (input {cont.input_index}; "
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
            parts.append(f"  attractors: {self.unseen}")
            if unsettled:
                parts.append(
                    f"  ({unsettled} start(s) did not settle: their basins are unaccounted for, "
                    "so an attractor may hide there whatever its basin size)"
                )
        return "\n".join(parts)

    def __repr__(self) -> str:
        return str(self)


# ---------------------------------------------------------------------- helpers
class _UnionFind:
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


def _clusters(points: np.ndarray, groups: np.ndarray, radius: float) -> list[list[int]]:
    """Connected components of "within ``radius``" (KD-tree pairs), within each group.

    The pairs go to ``scipy.sparse.csgraph.connected_components``: at coarse tolerances almost
    every pair is close, and a Python union-find over millions of pairs took seconds.
    """
    n = len(points)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            continue
        pairs = cKDTree(points[idx]).query_pairs(radius, output_type="ndarray")
        if len(pairs):
            rows.append(idx[pairs[:, 0]])
            cols.append(idx[pairs[:, 1]])
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    out: dict[int, list[int]] = {}
    for i, k in enumerate(comp.tolist()):
        out.setdefault(k, []).append(i)
    return sorted(out.values(), key=lambda members: members[0])


def _classify(mods: torch.Tensor, delta: float, exact: bool) -> tuple[str, int]:
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
    sub = inputs.sub(rows)
    n = system.state_dim
    if n <= dense_limit:
        J = jacobian(sub, states)
        eig = torch.linalg.eigvals(J)
        order = torch.argsort(eig.abs(), dim=1, descending=True)
        eig = torch.gather(eig, 1, order)
        return list(eig), True
    from ._linearize import _flat

    op = JacobianOperator(_flat(sub, sub.x if sub.driven else None), sub.flatten(states))
    tol = math.sqrt(torch.finfo(system.dtype).eps)
    kr = _arnoldi(
        op.matvec,
        op.shape[0],
        n,
        op.dtype,
        op.device,
        k=min(k, n),
        tol=tol,
        max_steps=min(n, 300),
        seed=seed,
    )
    values = kr.values.clone()
    bad = torch.nonzero(~kr.converged.to(values.device)).flatten()
    if bad.numel():
        # unconverged Ritz values of a non-normal J may lie anywhere (even outside the spectrum):
        # never classify a point by them; pay for the dense spectrum of those states instead
        J = jacobian(inputs.sub(rows[bad.cpu()]), states[bad])
        eig = torch.linalg.eigvals(J)
        eig = torch.gather(eig, 1, torch.argsort(eig.abs(), dim=1, descending=True))
        values[bad] = eig[:, : values.shape[1]].to(values.dtype)
    return list(values), False


def _residuals(inputs: _Inputs, rows: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """``‖f(h) − h‖₂`` of each state with the input of its row."""
    sub = inputs.sub(rows)
    with torch.no_grad():
        out = sub._step_unchecked(states, sub.x if sub.driven else None)
    return sub.flatten(out - states).norm(dim=1)


def _qmin(sub: LoopedSystem, h: torch.Tensor, *, steps: int) -> torch.Tensor:
    """Adam on ``q(h) = ½‖f(h) − h‖²`` per start (Sussillo & Barak), gradients by ``vjp``.

    The step size is 1% of each start's RMS entry, so that the search moves on the state's own
    scale; the weights of the module are never touched.
    """
    from torch.func import vjp

    x = sub.x if sub.driven else None
    z = sub.flatten(h).clone()
    rms = torch.clamp(z.norm(dim=1, keepdim=True) / math.sqrt(z.shape[1]), min=1e-3)
    lr = 1e-2 * rms
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    b1, b2, eps = 0.9, 0.999, 1e-12
    with torch.no_grad():
        for t in range(1, steps + 1):

            def g(zz: torch.Tensor) -> torch.Tensor:
                return sub.flatten(sub._step_unchecked(sub.unflatten(zz), x)) - zz

            primal = vjp(g, z)
            grad = primal[1](primal[0])[0]
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            mh = m / (1 - b1**t)
            vh = v / (1 - b2**t)
            z = z - lr * mh / (vh.sqrt() + eps)
    return sub.unflatten(z)


def _continua(
    system: LoopedSystem,
    inputs: _Inputs,
    raw: list[dict[str, Any]],
    *,
    rtol: float,
    radius: float,
    seed: int,
) -> tuple[list[dict[str, Any]], set[int]]:
    """Group neutral, non-isolated fixed points into continua.

    A point with ``nullity >= 1`` (eigenvalue 1 within δ) is tested locally: Newton–Krylov from
    small random steps away from it. An isolated point pulls them back; on a manifold of fixed
    points they land nearby on the manifold, and the rank of the displacements estimates its
    dimension. Non-isolated points of one input are then linked when the chord between near
    neighbours, cut in pieces and polished by Newton, is made of fixed points all the way.
    """
    neutral = [i for i, r in enumerate(raw) if r["nullity"] >= 1]
    if not neutral:
        return [], set()
    n = system.state_dim
    gen = torch.Generator(device=system.device).manual_seed(seed + 11)
    local: dict[int, int] = {}
    for i in neutral:
        r = raw[i]
        h = r["state"]
        n_dir = min(n, r["nullity"] + 3)
        scale = max(1.0, float(h.norm()) / math.sqrt(n))
        step = 1e-2 * scale
        d = torch.randn(n_dir, n, generator=gen, dtype=h.dtype, device=h.device)
        d = d / d.norm(dim=1, keepdim=True) * step
        starts = (system.flatten(h[None]) + d).reshape(n_dir, *system.state_shape)
        rows = torch.full((n_dir,), r["row"], dtype=torch.long)
        pol = solve(
            inputs.sub(rows),
            starts,
            method="newton_krylov",
            tol=rtol,
            atol=rtol,
            max_steps=30,
            throw=False,
        )
        ok = pol.converged.to(h.device)
        if not bool(ok.any()):
            continue
        disp = system.flatten(pol.state[ok]) - system.flatten(h[None])
        moved = disp.norm(dim=1) > max(10 * radius, 1e-3 * step)
        if not bool(moved.any()):
            continue  # Newton pulls every step back: isolated despite the neutral eigenvalue
        sv = torch.linalg.svdvals(disp[moved])
        rank = int((sv > 1e-2 * sv[0]).sum())
        local[i] = rank
    if not local:
        return [], set()
    members = sorted(local)
    uf = _UnionFind(len(members))
    pts = torch.stack([raw[i]["state"] for i in members])
    flat = system.flatten(pts)
    inp = torch.tensor([raw[i]["input"] for i in members])
    pieces = 6
    edge_set: set[tuple[int, int]] = set()
    for a in range(len(members)):
        same = torch.nonzero(inp == inp[a]).flatten()
        same = same[same != a]
        if same.numel() == 0:
            continue
        dist = (flat[same] - flat[a]).norm(dim=1)
        for b in same[torch.argsort(dist)[:4]].tolist():
            edge_set.add((min(a, b), max(a, b)))
    edges = sorted(edge_set)
    if edges:
        ts = torch.linspace(0, 1, pieces + 1, dtype=flat.dtype, device=flat.device)[1:-1]
        chords = torch.cat(
            [flat[a][None] + ts[:, None] * (flat[b] - flat[a])[None] for a, b in edges]
        )
        rows = torch.tensor(
            [raw[members[a]]["row"] for a, _ in edges for _ in range(pieces - 1)], dtype=torch.long
        )
        pol = solve(
            inputs.sub(rows),
            system.unflatten(chords),
            method="newton_krylov",
            tol=rtol,
            atol=rtol,
            max_steps=30,
            throw=False,
        )
        conv = pol.converged.reshape(len(edges), pieces - 1)
        path = system.flatten(pol.state).reshape(len(edges), pieces - 1, -1)
        for e, (a, b) in enumerate(edges):
            if not bool(conv[e].all()):
                continue
            chain = torch.cat([flat[a][None], path[e], flat[b][None]])
            hops = (chain[1:] - chain[:-1]).norm(dim=1)
            if float(hops.max()) <= 0.5 * float((flat[b] - flat[a]).norm()) + 10 * radius:
                uf.union(a, b)
    comps: dict[int, list[int]] = {}
    for j in range(len(members)):
        comps.setdefault(uf.find(j), []).append(j)
    out = []
    taken: set[int] = set()
    for comp in comps.values():
        idx = [members[j] for j in comp]
        taken.update(idx)
        dim = max(local[i] for i in idx)
        reach_rows = sorted({row for i in idx for row in raw[i]["reach_rows"]})
        n_links = len(comp) - 1
        out.append(
            {
                "dimension": dim,
                "input_index": raw[idx[0]]["input"],
                "samples": torch.stack([raw[i]["state"] for i in idx]),
                "evidence": (
                    f"{len(idx)} fixed points with eigenvalue 1 (nullity up to "
                    f"{max(raw[i]['nullity'] for i in idx)}); Newton from small steps away lands "
                    "on "
                    f"nearby fixed points (displacement rank {dim}); {n_links} chords between "
                    "samples polished into fixed points all along"
                ),
                "reach_rows": reach_rows,
            }
        )
    return out, taken


def _compose(system: LoopedSystem, sub: LoopedSystem, p: int) -> LoopedSystem:
    """``f^p`` with the inputs of ``sub``."""
    x = sub.x if sub.driven else None

    def fp(h: torch.Tensor, xx: torch.Tensor | None = None) -> torch.Tensor:
        for _ in range(p):
            h = system._step_unchecked(h, xx if system.driven else None)
        return h

    if system.driven:
        return LoopedSystem.from_function(
            fp, system.state_shape, x=x, driven=True, validate=False, dtype=system.dtype
        )
    return LoopedSystem.from_function(
        lambda h: fp(h),
        system.state_shape,
        validate=False,
        dtype=system.dtype,
        device=system.device,
    )


def _find_cycles(
    system: LoopedSystem,
    inputs: _Inputs,
    states: torch.Tensor,
    rows: list[int],
    *,
    max_period: int,
    rtol: float,
    radius: float,
    dense_limit: int,
    k: int,
    delta: float,
    seed: int,
    warmup: int = 200,
) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """Period-p orbits (2 <= p <= max_period) among starts that neither converged nor diverged."""
    if not rows or max_period < 2:
        return [], {}
    rows_t = torch.tensor(rows, dtype=torch.long)
    sub = inputs.sub(rows_t)
    with torch.no_grad():
        warm = sub.iterate(states[rows_t], n_steps=warmup, record=False).final
        traj = sub.iterate(warm, n_steps=max_period, record=True).states
    assert traj is not None
    flat = traj.reshape(traj.shape[0], traj.shape[1], -1)
    scale = torch.clamp(flat[0].norm(dim=1), min=1.0)
    close = math.sqrt(rtol)
    period = torch.zeros(len(rows), dtype=torch.long)
    for p in range(max_period, 1, -1):  # the smallest period wins
        hit = (flat[p] - flat[0]).norm(dim=1) <= close * scale  # NaN compares False
        period = torch.where(hit.cpu(), torch.full_like(period, p), period)
    found: list[dict[str, Any]] = []
    cycle_of_row: dict[int, int] = {}
    for p in sorted({int(v) for v in period.tolist() if v > 0}):
        sel = torch.nonzero(period == p).flatten()
        sel_rows = rows_t[sel]
        fp_sys = _compose(system, inputs.sub(sel_rows), p)
        pol = solve(
            fp_sys,
            traj[0][sel],
            method="newton_krylov",
            tol=rtol,
            atol=rtol,
            max_steps=30,
            throw=False,
        )
        for j, row in enumerate(sel_rows.tolist()):
            if not pol.outcomes[j].ok:
                continue
            h = pol.state[j]
            one = inputs.sub(torch.tensor([row]))
            orbit = [h]
            with torch.no_grad():
                for _ in range(p - 1):
                    orbit.append(one.step(orbit[-1][None])[0])
            orb = torch.stack(orbit)
            if float((system.flatten(orb[1:2]) - system.flatten(orb[:1])).norm()) <= 10 * radius:
                continue  # a fixed point after all, not a cycle
            inp = int(inputs.index[row])
            match = None
            for c_i, c in enumerate(found):
                if c["period"] != p or c["input_index"] != inp:
                    continue
                d = (system.flatten(c["points"]) - system.flatten(h[None])).norm(dim=1).min()
                if float(d) <= 1e3 * radius:
                    match = c_i
                    break
            if match is None:
                found.append(
                    {
                        "period": p,
                        "points": orb.detach(),
                        "input_index": inp,
                        "row": row,
                        "reach_rows": [row],
                    }
                )
                match = len(found) - 1
            else:
                found[match]["reach_rows"].append(row)
            cycle_of_row[row] = match
    out = []
    for c in found:
        one_rows = torch.tensor([c["row"]])
        fp_sys = _compose(system, inputs.sub(one_rows), c["period"])
        h0 = c["points"][:1]
        res = float(
            _residuals(
                _Inputs(fp_sys, torch.zeros(1, dtype=torch.long)),
                torch.zeros(1, dtype=torch.long),
                h0,
            )[0]
        )
        mult, exact = _spectra(
            fp_sys,
            h0,
            _Inputs(fp_sys, torch.zeros(1, dtype=torch.long)),
            torch.zeros(1, dtype=torch.long),
            k=k,
            dense_limit=dense_limit,
            seed=seed,
        )
        ev = mult[0]
        stability, _ = _classify(ev.abs(), delta, exact)
        out.append(
            {
                "period": c["period"],
                "points": c["points"],
                "input_index": c["input_index"],
                "residual": res,
                "multipliers": ev.detach(),
                "spectral_radius": float(ev.abs().max()),
                "stability": stability,
                "reach_rows": sorted(c["reach_rows"]),
            }
        )
    return out, cycle_of_row


# ---------------------------------------------------------------------- the verb
def find_fixed_points(
    system: LoopedSystem,
    n_starts: int = 128,
    *,
    starts: torch.Tensor | None = None,
    mode: str = "reach",
    start: str = "normal",
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
    k_eigenvalues: int = 6,
    dense_limit: int = 512,
    seed: int = 0,
) -> FixedPointSet:
    """Find a looped map's fixed points from many starts: which ones iteration reaches, how stable
    each is, whether they come in continua, and how many may have been missed.

    **mode="reach"** iterates the map itself (damped Picard; ``damping = 1`` is the model's own
    loop) from every start. Converged starts are polished by Newton–Krylov and deduplicated:
    these are the attractors iteration reaches, with basin fractions. Starts that neither converge
    nor diverge are examined for period-``p`` orbits (``2 <= p <= max_period``).
    **mode="all"** adds Newton–Krylov, and minimisation of ``q(h) = ½‖f(h) − h‖²`` followed by
    Newton (Sussillo & Barak 2013), from perturbed trajectory states: this finds saddles and
    repellers too, which iteration never reaches.

    Every point gets its residual, basin count and fraction (Clopper–Pearson interval), the
    eigenvalues of ``∂f/∂h`` (all of them for ``n <= dense_limit``, else the top ``k`` by Arnoldi)
    and a stability class with a neutral band ``δ``. Points with an eigenvalue within ``δ`` of 1
    are tested for non-isolation (Newton from small steps away lands on other fixed points, and
    chords between them polish into fixed points): those are reported as a :class:`Continuum` with
    its dimension, not counted. The discovery curve and a Chao1 estimate say how many attractors
    may remain unseen. Unconverged, diverged and non-finite starts are counted, never dropped.

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
        Longest cycle looked for.
    n_newton : int, optional
        Root-finding starts per input in mode "all" (default: the number of starts).
    perturb : float
        Noise on trajectory states for mode "all", relative to their RMS entry (0.5, as
        FixedPointFinder's examples use: diverse starts reach more saddles).
    qmin_steps : int
        Adam steps on ``q`` in mode "all" (0: no q-minimisation).
    newton_steps : int
        Newton–Krylov steps per root-finding start in mode "all".
    k_eigenvalues : int
        Eigenvalues kept per point when the spectrum comes from Arnoldi.
    dense_limit : int
        Largest state dimension for a dense Jacobian and the full spectrum.
    seed : int

    Returns
    -------
    FixedPointSet
        An estimate (``guaranteed`` is False): a multi-start search can miss basins.

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
    """
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

    driven_inputs = system.driven and system.x is not None
    n_inputs = int(system.x.shape[0]) if driven_inputs and system.x is not None else 1
    shape_ones = [1] * len(system.state_shape)
    if starts is not None:
        check_state_shape(call, "starts", starts, system.state_shape)
        check_finite_tensor(call, "starts", starts)
        per = int(starts.shape[0])
        h0 = (
            starts.detach()
            .to(dtype=system.dtype, device=system.device)
            .repeat(n_inputs, *shape_ones)
        )
    else:
        h0 = system.initial_states(start, n_starts, scale=scale, seed=seed)
        per = int(h0.shape[0]) // n_inputs
    total = int(h0.shape[0])
    index = torch.arange(n_inputs).repeat_interleave(per)
    inputs = _Inputs(system, index)
    run_sys = inputs.sub(torch.arange(total))

    # 1. plain iteration from every start
    reach = solve(
        run_sys,
        h0,
        method="picard",
        damping=damping,
        tol=rtol,
        atol=rtol,
        max_steps=max_steps,
        throw=False,
    )
    outcomes_list = list(reach.outcomes)
    cand: list[torch.Tensor] = []
    cand_row: list[int] = []
    cand_src: list[str] = []
    cand_reach: list[int] = []
    conv = torch.tensor([i for i, o in enumerate(outcomes_list) if o.ok], dtype=torch.long)
    if conv.numel():
        # polish well below the search tolerance (near rounding level), keeping whichever of the
        # iteration's limit and Newton's best iterate has the smaller residual
        fine = 100 * torch.finfo(system.dtype).eps
        pol = solve(
            inputs.sub(conv),
            reach.state[conv],
            method="newton_krylov",
            tol=fine,
            atol=fine,
            max_steps=20,
            throw=False,
        )
        better = pol.residual <= reach.residual[conv]
        for j, row in enumerate(conv.tolist()):
            cand.append(pol.state[j] if bool(better[j]) else reach.state[row])
            cand_row.append(row)
            cand_src.append("iteration")
            cand_reach.append(row)

    # 2. mode "all": root-finding from perturbed trajectory states
    if mode == "all":
        m = per if n_newton is None else n_newton
        gen = torch.Generator().manual_seed(seed + 7)
        with torch.no_grad():
            traj = run_sys.iterate(h0, n_steps=16, record=True).states
        assert traj is not None
        pick_t = torch.randint(0, traj.shape[0], (n_inputs * m,), generator=gen)
        pick_s = torch.cat(
            [torch.randint(0, per, (m,), generator=gen) + b * per for b in range(n_inputs)]
        )
        base = traj[pick_t, pick_s]
        # escaped or exploded trajectory states are no place to look: use the start instead
        rms_b = system.flatten(base).norm(dim=1) / math.sqrt(system.state_dim)
        rms_0 = system.flatten(h0[pick_s]).norm(dim=1) / math.sqrt(system.state_dim)
        bad = ~torch.isfinite(rms_b) | (rms_b > 100 * torch.clamp(rms_0, min=1.0))
        base[bad] = h0[pick_s[bad]]
        rms = system.flatten(base).norm(dim=1) / math.sqrt(system.state_dim)
        rms = torch.clamp(rms, min=1e-3, max=1e3).reshape(-1, *shape_ones)
        noise = torch.randn(base.shape, generator=gen, dtype=torch.float64).to(base)
        pert = base + perturb * rms * noise
        sub = inputs.sub(pick_s)
        nk = solve(
            sub,
            pert,
            method="newton_krylov",
            tol=rtol,
            atol=rtol,
            max_steps=newton_steps,
            throw=False,
        )
        found = [
            (nk.state[j], int(pick_s[j]), "newton")
            for j in range(pert.shape[0])
            if nk.outcomes[j].ok
        ]
        if qmin_steps > 0:
            q = _qmin(sub, pert, steps=qmin_steps)
            ok = torch.nonzero(torch.isfinite(system.flatten(q)).all(dim=1)).flatten()
            if ok.numel():
                qp = solve(
                    inputs.sub(pick_s[ok]),
                    q[ok],
                    method="newton_krylov",
                    tol=rtol,
                    atol=rtol,
                    max_steps=30,
                    throw=False,
                )
                found += [
                    (qp.state[j], int(pick_s[r]), "qmin")
                    for j, r in enumerate(ok.tolist())
                    if qp.outcomes[j].ok
                ]
        for state, row, src in found:
            cand.append(state)
            cand_row.append(row)
            cand_src.append(src)
            cand_reach.append(-1)

    # 3. deduplicate per input, keeping the least-residual representative
    radius = 0.0
    clusters: list[list[int]] = []
    dedup_curve: list[tuple[float, int]] = []
    if cand:
        stacked = torch.stack(cand)
        rows_c = torch.tensor(cand_row, dtype=torch.long)
        res_c = _residuals(inputs, rows_c, stacked)
        flat = system.flatten(stacked).detach().cpu().double().numpy()
        scale_states = max(1.0, float(np.linalg.norm(flat, axis=1).max()))
        radius = dedup_tol if dedup_tol is not None else 1e3 * rtol * scale_states
        groups = index[rows_c].numpy()
        clusters = _clusters(flat, groups, radius)
        floor = len(np.unique(groups))  # once everything has merged, coarser tolerances agree
        for e in range(-3, 7):
            t = radius * 10.0**e
            done = bool(dedup_curve) and dedup_curve[-1][1] == floor
            dedup_curve.append((float(t), floor if done else len(_clusters(flat, groups, t))))
    else:
        radius = dedup_tol if dedup_tol is not None else 1e3 * rtol
    raw: list[dict[str, Any]] = []
    for comp in clusters:
        best = min(comp, key=lambda i: float(res_c[i]))
        raw.append(
            {
                "state": cand[best].detach(),
                "row": cand_row[best],
                "input": int(index[cand_row[best]]),
                "found_by": tuple(sorted({cand_src[i] for i in comp})),
                "reach_rows": sorted({cand_reach[i] for i in comp if cand_reach[i] >= 0}),
            }
        )

    # 4. spectra and classes
    exact = system.state_dim <= dense_limit
    if raw:
        rows_r = torch.tensor([r["row"] for r in raw], dtype=torch.long)
        eigs, exact = _spectra(
            system,
            torch.stack([r["state"] for r in raw]),
            inputs,
            rows_r,
            k=k_eigenvalues,
            dense_limit=dense_limit,
            seed=seed,
        )
        res_r = _residuals(inputs, rows_r, torch.stack([r["state"] for r in raw]))
        for r, ev, rr in zip(raw, eigs, res_r.tolist(), strict=True):
            r["eig"] = ev.detach()
            r["rho"] = float(ev.abs().max())
            r["stability"], r["n_out"] = _classify(ev.abs(), neutral_band, exact)
            r["nullity"] = int(((ev - 1).abs() <= neutral_band).sum())
            r["residual"] = float(rr)

    # 5. continua
    cont_raw, in_continuum = _continua(system, inputs, raw, rtol=rtol, radius=radius, seed=seed)

    # 6. cycles among bounded, unconverged iteration starts
    unconv = [i for i, o in enumerate(outcomes_list) if o is Outcome.MAX_STEPS_REACHED]
    cyc_raw, cycle_of_row = _find_cycles(
        system,
        inputs,
        reach.state,
        unconv,
        max_period=max_period,
        rtol=rtol,
        radius=radius,
        dense_limit=dense_limit,
        k=k_eigenvalues,
        delta=neutral_band,
        seed=seed,
    )

    # 7. assemble; label each iteration start by the attractor it reached
    iso = [r for i, r in enumerate(raw) if i not in in_continuum]
    iso.sort(key=lambda r: (STABILITY.index(r["stability"]), r["input"], -len(r["reach_rows"])))
    points = []
    for r in iso:
        cnt = len(r["reach_rows"])
        points.append(
            FixedPoint(
                state=r["state"],
                input_index=r["input"],
                residual=r["residual"],
                found_by=r["found_by"],
                basin_count=cnt,
                basin_fraction=cnt / per,
                basin_interval=clopper_pearson(cnt, per),
                eigenvalues=r["eig"],
                spectral_radius=r["rho"],
                n_unstable=r["n_out"],
                n_unstable_exact=exact,
                nullity=r["nullity"],
                stability=r["stability"],
            )
        )
    continua = [
        Continuum(
            dimension=c["dimension"],
            input_index=c["input_index"],
            samples=c["samples"],
            basin_count=len(c["reach_rows"]),
            basin_fraction=len(c["reach_rows"]) / per,
            evidence=c["evidence"],
        )
        for c in cont_raw
    ]
    cycles = [
        Cycle(
            period=c["period"],
            points=c["points"],
            input_index=c["input_index"],
            residual=c["residual"],
            multipliers=c["multipliers"],
            spectral_radius=c["spectral_radius"],
            stability=c["stability"],
            basin_count=len(c["reach_rows"]),
            basin_fraction=len(c["reach_rows"]) / per,
            basin_interval=clopper_pearson(len(c["reach_rows"]), per),
        )
        for c in cyc_raw
    ]
    label = torch.full((total,), -1, dtype=torch.long)
    attractor_counts: list[int] = []
    groups_of_rows: list[list[int]] = (
        [r["reach_rows"] for r in iso]
        + [c["reach_rows"] for c in cont_raw]
        + [c["reach_rows"] for c in cyc_raw]
    )
    for rows_a in groups_of_rows:
        if rows_a:
            label[torch.tensor(rows_a)] = len(attractor_counts)
            attractor_counts.append(len(rows_a))
    cont_rows = {row for c in cont_raw for row in c["reach_rows"]}
    outcomes = {
        "converged": 0,
        "continuum": 0,
        "cycle": 0,
        "unconverged": 0,
        "diverged": 0,
        "nonfinite": 0,
        "degenerate": 0,
    }
    for row, o in enumerate(outcomes_list):
        if o.ok:
            outcomes["continuum" if row in cont_rows else "converged"] += 1
        elif o is Outcome.MAX_STEPS_REACHED:
            outcomes["cycle" if row in cycle_of_row else "unconverged"] += 1
        elif o is Outcome.DIVERGED:
            outcomes["diverged"] += 1
            label[row] = -2
        elif o is Outcome.NONFINITE:
            outcomes["nonfinite"] += 1
            label[row] = -3
        else:
            outcomes["degenerate"] += 1
    seen: set[int] = set()
    discovery = []
    for row in range(total):
        if int(label[row]) >= 0:
            seen.add(int(label[row]))
        discovery.append(len(seen))
    return FixedPointSet(
        points=tuple(points),
        cycles=tuple(cycles),
        continua=tuple(continua),
        n_inputs=n_inputs,
        starts_per_input=per,
        start_outcomes=outcomes,
        steps=reach.steps,
        labels=label,
        discovery=tuple(discovery),
        unseen=chao1(attractor_counts, total, draws=per),
        dedup_tol=float(radius),
        dedup_curve=tuple(dedup_curve),
        mode=mode,
        tol=rtol,
        neutral_band=neutral_band,
        seed=seed,
        dtype=str(system.dtype).replace("torch.", ""),
        device=str(system.device),
    )
