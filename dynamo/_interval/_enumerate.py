"""Every fixed point (or period-p point) in a box, proven: branch and prune with exclusion by
interval evaluation and inclusion by the Krawczyk operator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._results import Trust, _finite_or_none
from .._system import LoopedSystem
from .._validate import call_form, check_positive_int
from ..errors import InvalidArgumentError, ShapeError
from ._ball import OBJ, box_ball, minus, precision
from ._jet import Jet, Traced, WideEnclosure, trace_map
from ._prove import (
    _input_index,
    balls_jet,
    box_bounds,
    f_power,
    krawczyk,
    mids,
    preconditioner,
    residual_balls,
    small_enclosure,
    spectrum,
    tighten,
)

__all__ = ["Enumeration", "ProvenRoot", "enumerate_fixed_points"]

#: bisection point as a fraction of the width: off the middle, so that the symmetric points of
#: symmetric maps (0 of an odd map) do not fall on the faces of the boxes
SPLIT = 0.4921875
#: Krawczyk is tested on the box inflated by this fraction of its width: a point on a shared face
#: is then inside some inflated box (the two records are merged by uniqueness)
INFLATE = 2.0**-8


@dataclass(frozen=True)
class ProvenRoot:
    """One point of ``f^p(h) = h`` proven to exist and to be the only one in its uniqueness box.

    Attributes
    ----------
    enclosure : (torch.Tensor, torch.Tensor)
        Corners of a small box holding the point (outward rounded).
    unique_in : (torch.Tensor, torch.Tensor)
        Corners of the box in which it is the only solution.
    period : int or None
        Least period (1 for a fixed point of ``f``), None when it could not be decided.
    stability : str or None
        From rigorous eigenvalue enclosures of ``∂f^p/∂h`` (None: undecided).
    n_unstable : int or None
    spectral_radius : (float, float)
    """

    enclosure: tuple[torch.Tensor, torch.Tensor]
    unique_in: tuple[torch.Tensor, torch.Tensor]
    period: int | None
    stability: str | None
    n_unstable: int | None
    spectral_radius: tuple[float, float]

    @property
    def state(self) -> torch.Tensor:
        """The enclosure's midpoint."""
        return (self.enclosure[0] + self.enclosure[1]) / 2

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields.

        >>> import torch, dynamo as dy
        >>> e = dy.enumerate_fixed_points(dy.LoopedSystem.from_module(dy.models.Bistable(n=1)),
        ...                               (-2.0, 2.0))
        >>> e.points[0].to_dict()["stability"]
        'stable'
        """
        return {
            "state": self.state.tolist(),
            "enclosure": [self.enclosure[0].tolist(), self.enclosure[1].tolist()],
            "unique_in": [self.unique_in[0].tolist(), self.unique_in[1].tolist()],
            "period": self.period,
            "stability": self.stability,
            "n_unstable": self.n_unstable,
            "spectral_radius": [_finite_or_none(v) for v in self.spectral_radius],
        }


@dataclass(frozen=True)
class Enumeration:
    """The solutions of ``f^p(h) = h`` in a box, each proven, and whether they are all of them.

    Attributes
    ----------
    box : (torch.Tensor, torch.Tensor)
        The box searched (corners, state shape).
    period : int
        ``p``: the points are fixed points of ``f^p`` (``p = 1``: of ``f``).
    points : tuple of ProvenRoot
        Every point proven, sorted by state.
    undecided : tuple of (torch.Tensor, torch.Tensor)
        Boxes left when the budget ran out (or in which a point could not be isolated).
    ambiguous : int
        Proven points whose sameness or membership in the box could not be decided.
    complete : bool
        True only when nothing is undecided: then :attr:`points` are *all* the solutions in the
        box (PROVEN).
    cycles : tuple of tuple of int
        For ``p > 1``: the orbits of least period ``p`` (indices into :attr:`points`, in orbit
        order), when every image was identified.
    boxes : int
        Boxes evaluated.
    decided_fraction : float
        Share of the box's volume excluded or covered by a proof (an indication of progress).
    seconds : float
    trust : Trust
        PROVEN when complete (the count is exact), else ESTIMATED (the count is a lower bound;
        each point listed is still proven).

    Examples
    --------
    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2))
    >>> e = dy.enumerate_fixed_points(system, (0.0, 1.0), period=2)
    >>> e.complete, len(e.points), [p.period for p in e.points], len(e.cycles)
    (True, 4, [1, 2, 1, 2], 1)
    """

    box: tuple[torch.Tensor, torch.Tensor]
    period: int
    points: tuple[ProvenRoot, ...]
    undecided: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    ambiguous: int
    cycles: tuple[tuple[int, ...], ...]
    boxes: int
    decided_fraction: float
    seconds: float
    complete: bool = field(init=False)
    trust: Trust = field(init=False)

    def __post_init__(self) -> None:
        done = not self.undecided and self.ambiguous == 0
        object.__setattr__(self, "complete", done)
        object.__setattr__(self, "trust", Trust.PROVEN if done else Trust.ESTIMATED)

    @property
    def count(self) -> int | None:
        """The exact number of solutions in the box when :attr:`complete`, else None."""
        return len(self.points) if self.complete else None

    def __str__(self) -> str:
        what = "fixed points" if self.period == 1 else f"points of period dividing {self.period}"
        lo_b, hi_b = self.box
        where = f"[{float(lo_b.min()):g}, {float(hi_b.max()):g}]^{lo_b.numel()}"
        if self.complete:
            head = f"exactly {len(self.points)} {what} in {where} (proven, {self.boxes} boxes)"
        else:
            head = (
                f"{len(self.points)} {what} proven in {where}; completeness not proven: "
                f"{len(self.undecided)} boxes undecided, {self.ambiguous} ambiguous, after "
                f"{self.boxes} boxes ({100 * self.decided_fraction:.3g}% of the volume decided)"
            )
        if self.period > 1 and self.cycles:
            head += f"; {len(self.cycles)} cycle(s) of least period {self.period}"
        return head

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields.

        >>> import dynamo as dy
        >>> henon = dy.LoopedSystem.from_module(dy.models.Henon())
        >>> e = dy.enumerate_fixed_points(henon, (-2.0, 2.0))
        >>> e.to_dict()["count"], e.to_dict()["trust"]
        (2, 'proven')
        """
        return {
            "box": [self.box[0].tolist(), self.box[1].tolist()],
            "period": self.period,
            "count": self.count,
            "complete": self.complete,
            "points": [p.to_dict() for p in self.points],
            "undecided": len(self.undecided),
            "ambiguous": self.ambiguous,
            "cycles": [list(c) for c in self.cycles],
            "boxes": self.boxes,
            "decided_fraction": self.decided_fraction,
            "seconds": self.seconds,
            "trust": self.trust.value,
        }


# ---------------------------------------------------------------------------- search
@dataclass
class _Record:
    E: np.ndarray  # balls: the point
    U: tuple[np.ndarray, np.ndarray]  # float corners: uniqueness box


def _balls(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array(
        [box_ball(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)], dtype=OBJ
    )


def _test_box(tr: Traced, lo: np.ndarray, hi: np.ndarray, p: int) -> tuple[str, Any]:
    """One box: ("excluded", None), ("proven", record), or ("split", (lo, hi)) possibly shrunk."""
    X = _balls(lo, hi)
    try:
        return _test_balls(tr, X, lo, hi, p)
    except WideEnclosure:  # no enclosure on this box: split it
        return "split", (lo, hi)


def _test_balls(
    tr: Traced, X: np.ndarray, lo: np.ndarray, hi: np.ndarray, p: int
) -> tuple[str, Any]:
    jet = f_power(tr, balls_jet(X), p)
    assert jet.der is not None
    F = minus(jet.val, X)
    if any(not f.contains(0) for f in F):
        return "excluded", None
    c = (lo + hi) / 2
    S = mids(jet.der)
    C = preconditioner(S)
    if C is None:
        return "split", (lo, hi)
    # Krawczyk on the slightly inflated box
    w = (hi - lo) * INFLATE + 1e-300
    lo_i, hi_i = lo - w, hi + w
    Xi = _balls(lo_i, hi_i)
    jet_i = f_power(tr, balls_jet(Xi), p)
    assert jet_i.der is not None
    Fc = residual_balls(tr, c, p)
    k = krawczyk(tr, Xi, c, Fc, C, p, slopes=jet_i.der)
    Kv = k.K.tolist()
    if k.status == "inside":
        E = tighten(tr, np.array(Kv, dtype=OBJ), c, Fc, C, p)
        small = small_enclosure(tr, mids(E), p, (lo_i, hi_i))
        return "proven", _Record(E if small is None else small, (lo_i, hi_i))
    if k.status == "empty":
        return "excluded", None
    # shrink to the hull of K ∩ X (inside the original box), then split
    new_lo, new_hi = lo.copy(), hi.copy()
    for i, kv in enumerate(Kv):
        if kv.is_finite():
            klo, khi = box_bounds(np.array([kv], dtype=OBJ))
            new_lo[i] = max(lo[i], float(klo[0]))
            new_hi[i] = min(hi[i], float(khi[0]))
    if np.any(new_lo > new_hi):
        return "excluded", None
    return "split", (new_lo, new_hi)


def _same(a: _Record, b: _Record) -> bool | None:
    """Whether two records are one point: True when one's enclosure lies in the other's
    uniqueness box, False when the enclosures are disjoint, None otherwise."""
    ea = box_bounds(a.E)
    eb = box_bounds(b.E)
    if np.all(ea[0] >= b.U[0]) and np.all(ea[1] <= b.U[1]):
        return True
    if np.all(eb[0] >= a.U[0]) and np.all(eb[1] <= a.U[1]):
        return True
    if np.any(ea[1] < eb[0]) or np.any(eb[1] < ea[0]):
        return False
    return None


def _inside(E: np.ndarray, U: tuple[np.ndarray, np.ndarray]) -> bool:
    e_lo, e_hi = box_bounds(E)
    return bool(np.all(e_lo >= U[0]) and np.all(e_hi <= U[1]))


def _least_period(tr: Traced, rec: _Record, p: int) -> int | None:
    """The least period of the point: the smallest divisor ``q`` of ``p`` with ``f^q`` having a
    zero of ``f^q(h) − h`` proven in the uniqueness box (then it is this point), when every
    smaller divisor is excluded."""
    for q in [d for d in range(1, p + 1) if p % d == 0]:
        if q == p:
            return p
        try:
            val = f_power(tr, Jet(rec.E), q).val
        except WideEnclosure:
            return None
        F = minus(val, rec.E)
        if any(not f.contains(0) for f in F):
            continue  # not a point of period q
        # maybe a q-periodic point: prove a zero of f^q − id in the uniqueness box
        lo_u, hi_u = rec.U
        status, res = _test_box(tr, lo_u, hi_u, q)
        if status == "proven" and _same(rec, res) is True:
            return q
        return None
    return p


def enumerate_fixed_points(
    system: LoopedSystem,
    box: tuple[Any, Any],
    *,
    x: torch.Tensor | None = None,
    period: int = 1,
    max_boxes: int = 20_000,
) -> Enumeration:
    """Every solution of ``f^p(h) = h`` in a box, each proven to exist and be unique in its own
    box, and a proof that there are no others when nothing is left undecided.

    Branch and prune: a box is discarded when the interval enclosure of ``f^p(h) − h`` over it
    excludes 0 (coordinate-wise), or when the Krawczyk operator maps it off itself; it holds
    exactly one solution when the Krawczyk operator maps the (slightly inflated) box into its
    interior; otherwise it is narrowed to its intersection with the Krawczyk image and bisected
    (at 0.49 of its widest side). Solutions found from neighbouring boxes are merged by
    uniqueness. With ``max_boxes`` reached, the boxes left are reported, and the count is a lower
    bound (ESTIMATED) rather than exact (PROVEN). The cost grows exponentially with the state
    dimension: meant for small states.

    Parameters
    ----------
    system : LoopedSystem
    box : (lo, hi)
        Corners: floats (the same for every coordinate) or tensors of the state shape.
    x : torch.Tensor, optional
        The input (one), for a driven system holding several.
    period : int
        ``p >= 1``. With ``p > 1`` each point's least period is decided and the orbits of least
        period ``p`` are grouped into :attr:`Enumeration.cycles`.
    max_boxes : int
        Budget of box evaluations (each is one enclosure of ``f^p`` and of its slopes).

    Returns
    -------
    Enumeration

    Examples
    --------
    The Hénon map at the classic parameters has exactly two fixed points in ``[−2, 2]²``, both
    saddles:

    >>> import dynamo as dy
    >>> e = dy.enumerate_fixed_points(dy.LoopedSystem.from_module(dy.models.Henon()), (-2.0, 2.0))
    >>> e.count, [p.stability for p in e.points], e.trust.value
    (2, ['saddle', 'saddle'], 'proven')

    References
    ----------
    R. E. Moore, R. B. Kearfott, M. J. Cloud, *Introduction to Interval Analysis*, SIAM (2009),
    ch. 8. The ``fixedpoints`` of ChaosTools.jl (Datseris, DynamicalSystems.jl) follow the same
    scheme through IntervalRootFinding.jl.
    """
    call = call_form(
        "enumerate_fixed_points", ["system", "box"], period=period, max_boxes=max_boxes
    )
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a LoopedSystem")
    check_positive_int(call, "period", period)
    check_positive_int(call, "max_boxes", max_boxes)
    lo0, hi0 = _check_box(call, system, box)
    sub, idx = _input_index(call, system, x)
    tr = trace_map(call, sub, idx)
    t0 = time.perf_counter()
    total = float(np.prod(hi0 - lo0)) if np.all(hi0 > lo0) else 0.0
    decided = 0.0
    stack = [(lo0.copy(), hi0.copy())]
    records: list[_Record] = []
    undecided: list[tuple[np.ndarray, np.ndarray]] = []
    boxes = 0
    with precision(53):
        while stack:
            if boxes >= max_boxes:
                undecided.extend(stack)
                break
            lo, hi = stack.pop()
            boxes += 1
            status, res = _test_box(tr, lo, hi, period)
            if status == "excluded":
                decided += float(np.prod(hi - lo))
                continue
            if status == "proven":
                records.append(res)
                decided += float(np.prod(hi - lo))
                continue
            nlo, nhi = res
            decided += float(np.prod(hi - lo)) - float(np.prod(nhi - nlo))
            width = nhi - nlo
            if not np.any(width > 0) or np.max(width) <= 1e-14 * max(1.0, float(np.abs(nlo).max())):
                undecided.append((nlo, nhi))  # cannot split further: a singular solution?
                continue
            i = int(np.argmax(width))
            cut = nlo[i] + SPLIT * width[i]
            left_hi, right_lo = nhi.copy(), nlo.copy()
            left_hi[i] = cut
            right_lo[i] = cut
            stack.append((right_lo, nhi))
            stack.append((nlo, left_hi))
        # merge the records of one point, keep those in the box
        kept: list[_Record] = []
        ambiguous = 0
        for rec in records:
            e_lo, e_hi = box_bounds(rec.E)
            if np.any(e_hi < lo0) or np.any(e_lo > hi0):
                continue  # found in an inflated margin, outside the box
            if np.any(e_lo < lo0) or np.any(e_hi > hi0):
                ambiguous += 1  # on the box's boundary within its enclosure
                continue
            verdicts = [_same(rec, k) for k in kept]
            if any(v is True for v in verdicts):
                continue
            if any(v is None for v in verdicts):
                ambiguous += 1
                continue
            kept.append(rec)
        kept.sort(key=lambda r: tuple(mids(r.E).tolist()))
        points, cycles = _describe(tr, kept, period)
    shape = tuple(system.state_shape)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64).copy()).reshape(shape)

    return Enumeration(
        box=(t(lo0), t(hi0)),
        period=period,
        points=points,
        undecided=tuple((t(a), t(b)) for a, b in undecided),
        ambiguous=ambiguous,
        cycles=cycles,
        boxes=boxes,
        decided_fraction=min(1.0, decided / total) if total > 0 else 1.0,
        seconds=time.perf_counter() - t0,
    )


def _describe(
    tr: Traced, kept: list[_Record], period: int
) -> tuple[tuple[ProvenRoot, ...], tuple[tuple[int, ...], ...]]:
    shape = tr.state_shape
    out: list[ProvenRoot] = []
    periods: list[int | None] = []
    for rec in kept:
        try:
            jet = f_power(tr, balls_jet(rec.E), period)
            assert jet.der is not None
            _, rho, n_unst, kind = spectrum(jet.der)
        except WideEnclosure:
            rho, n_unst, kind = (math.nan, math.nan), None, None
        per = _least_period(tr, rec, period) if period > 1 else 1
        periods.append(per)
        e_lo, e_hi = box_bounds(rec.E)

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.asarray(a, dtype=np.float64).copy()).reshape(shape)

        out.append(
            ProvenRoot(
                enclosure=(t(e_lo), t(e_hi)),
                unique_in=(t(rec.U[0]), t(rec.U[1])),
                period=per,
                stability=kind,
                n_unstable=n_unst,
                spectral_radius=rho,
            )
        )
    cycles: list[tuple[int, ...]] = []
    if period > 1:
        succ: dict[int, int | None] = {}
        for i, rec in enumerate(kept):
            if periods[i] != period:
                continue
            try:
                img = _Record(f_power(tr, Jet(rec.E), 1).val, rec.U)
            except WideEnclosure:
                succ[i] = None
                continue
            js = [j for j, k in enumerate(kept) if periods[j] == period and _inside(img.E, k.U)]
            succ[i] = js[0] if len(js) == 1 else None
        seen: set[int] = set()
        for i in sorted(succ):
            if i in seen:
                continue
            orbit = [i]
            j = succ[i]
            while j is not None and j != i and j not in orbit and len(orbit) <= period:
                orbit.append(j)
                j = succ.get(j)
            if j == i and len(orbit) == period:
                cycles.append(tuple(orbit))
                seen.update(orbit)
    return tuple(out), tuple(cycles)


def _check_box(call: str, system: LoopedSystem, box: Any) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(system.state_shape)
    if not isinstance(box, (tuple, list)) or len(box) != 2:
        raise InvalidArgumentError(
            f"{call}: box must be a pair (lo, hi) of floats or tensors of shape {shape}"
        )
    out = []
    for name, v in zip(("lo", "hi"), box, strict=True):
        t = torch.as_tensor(v, dtype=torch.float64)
        try:
            t = torch.broadcast_to(t, shape)
        except RuntimeError:
            raise ShapeError(
                f"{call}: box {name} has shape {tuple(t.shape)}, not the state shape {shape}"
            ) from None
        if not bool(torch.isfinite(t).all()):
            raise InvalidArgumentError(f"{call}: box {name} must be finite")
        out.append(t.reshape(-1).numpy().copy())
    lo, hi = out
    if np.any(lo > hi):
        i = int(np.argmax(lo > hi))
        raise InvalidArgumentError(
            f"{call}: box has lo > hi at coordinate {i} ({lo[i]:g} > {hi[i]:g}); pass (lo, hi) "
            "with lo <= hi"
        )
    return lo, hi
