"""Proofs about one fixed point: existence and uniqueness in a box (Krawczyk), the spectrum at it
(rigorous eigenvalue enclosures), and a certified basin (a region ``f`` maps into itself and
contracts).
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._results import Trust, _finite_or_none
from .._system import LoopedSystem
from .._validate import call_form, check_positive_float
from ..errors import InvalidArgumentError, ShapeError
from ._ball import OBJ, ONE, ZERO, arb, arb_mat, as_balls, hi, lo, minus, precision
from ._jet import Jet, Traced, WideEnclosure, trace_map

__all__ = [
    "BasinCertificate",
    "PointProof",
    "ProofOutcome",
    "prove_fixed_point",
]


class ProofOutcome(enum.Enum):
    """How the attempt to prove a fixed point ended; each member carries its message.

    Examples
    --------
    >>> import dynamo as dy
    >>> dy.ProofOutcome.PROVEN.ok, dy.ProofOutcome.SINGULAR.label
    (True, 'singular')
    """

    PROVEN = (
        "proven",
        "the Krawczyk operator maps the box into its interior: exactly one fixed point lies in it",
    )
    SINGULAR = (
        "singular",
        "I − ∂f/∂h is singular (or its condition number is past 1e12) at the point: an isolated "
        "fixed point cannot be proven there",
    )
    TOO_WIDE = (
        "too_wide",
        "the Krawczyk operator left every box tried: the enclosures are too wide, or no fixed "
        "point lies close enough to the given state",
    )
    EXCLUDED = (
        "excluded",
        "the Krawczyk operator proves that the smallest box tried holds no fixed point: the state "
        "is not close to one",
    )

    def __init__(self, label: str, message: str) -> None:
        self.label = label
        self.message = message

    @property
    def ok(self) -> bool:
        """True only for :attr:`PROVEN`."""
        return self is ProofOutcome.PROVEN

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class BasinCertificate:
    """A region every start in which is proven to converge to the fixed point.

    ``g = f^k`` (``k = steps``) maps the region ``{c + P y : ‖y‖₂ <= rho}`` into itself and is a
    contraction on it with rate ``rate`` in the norm ``‖P⁻¹ ·‖₂`` (every matrix of the enclosure
    of ``g``'s slopes over the region's bounding box has that norm ``<= rate``). By Banach's
    theorem ``g``'s iteration converges to the fixed point from every start in it, at least as
    fast as ``rate^t``; ``f``'s iterates in between are ``f^j`` of those, so they converge to
    ``f^j(h*) = h*`` too (continuity).

    Attributes
    ----------
    radius : float
        A Euclidean ball of this radius around the fixed point lies inside the region
        (certified: outward rounded).
    rate : float
        The contraction rate (an upper bound).
    norm : {"euclidean", "eigenbasis", "lyapunov"}
        ``P = I``; ``P`` the real eigenbasis of ``∂f/∂h`` at the point (columns of unit norm); or
        ``P = X^{-1/2}``, ``X`` the solution of a discrete Lyapunov equation at the point, whose
        norm ``‖·‖_X`` the linearisation contracts in even where ``‖∂f/∂h‖₂ > 1``.
    rho : float
        The region's radius in its own norm.
    steps : int
        ``k``: the certificate is about ``f^k`` (a point with ``ρ(J) < 1 <= ‖J‖`` often needs
        ``k > 1`` for a contraction in a simple norm).
    trust : Trust
        PROVEN.
    """

    radius: float
    rate: float
    norm: str
    rho: float
    steps: int = 1
    trust: Trust = Trust.PROVEN

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields.

        >>> import dynamo as dy
        >>> dy.BasinCertificate(0.5, 0.9, "euclidean", 0.5).to_dict()["trust"]
        'proven'
        """
        return {
            "radius": self.radius,
            "rate": self.rate,
            "norm": self.norm,
            "rho": self.rho,
            "steps": self.steps,
            "trust": self.trust.value,
        }


@dataclass(frozen=True)
class PointProof:
    """What was proven about one fixed point.

    Attributes
    ----------
    state : torch.Tensor
        The state the proof started from (a float iterate), ``(*state_shape)``.
    outcome : ProofOutcome
    proof_radius : float
        With :attr:`outcome` PROVEN: exactly one fixed point lies in the cube ``center ± r`` (max
        norm), hence in the Euclidean ball of radius ``r`` around :attr:`center`; the largest
        ``r`` tried that the Krawczyk operator proved. 0 otherwise.
    enclosure : (torch.Tensor, torch.Tensor)
        Lower and upper corners of a box that holds that fixed point (outward rounded); empty
        tensors when not proven.
    error_bound : float
        ``max |h* − state|`` over the enclosure: how far the given float iterate can be from the
        true point.
    center : torch.Tensor
        The centre of the proof's cubes: the state after up to three float Newton steps (each
        kept only if it lowers the residual).
    eigenvalues : list of (complex, float)
        Midpoint and radius of a disc that holds each eigenvalue of ``∂f/∂h(h*)`` (rigorous, for
        the Jacobian enclosed over the enclosure box); empty when they could not be isolated.
    spectral_radius : (float, float)
        Certified bounds on ``ρ(∂f/∂h(h*))`` (``(nan, nan)`` when unknown).
    stability : str or None
        ``"stable"``, ``"saddle"`` or ``"unstable"`` when every eigenvalue is proven inside or
        outside the unit circle, else None (undecided: an eigenvalue disc meets the circle, or
        the spectrum could not be isolated).
    n_unstable : int or None
        Eigenvalues proven outside the unit circle, when the stability is decided.
    basin : BasinCertificate or None
        For a proven stable point: a certified basin (None if none could be proven).
    seconds : float
        Wall time of the proof.
    trust : Trust
        PROVEN when the outcome is PROVEN (existence and uniqueness; the stability and the
        basin carry their own), else ESTIMATED (the point stays a float estimate).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Henon())
    >>> p = dy.prove_fixed_point(system, torch.tensor([0.6314, 0.1894], dtype=torch.float64))
    >>> p.outcome.label, p.stability, p.n_unstable, p.trust.value
    ('proven', 'saddle', 1, 'proven')
    >>> p.error_bound < 1e-4 < p.proof_radius
    True
    """

    state: torch.Tensor
    outcome: ProofOutcome
    proof_radius: float
    enclosure: tuple[torch.Tensor, torch.Tensor]
    error_bound: float
    center: torch.Tensor
    eigenvalues: tuple[tuple[complex, float], ...]
    spectral_radius: tuple[float, float]
    stability: str | None
    n_unstable: int | None
    basin: BasinCertificate | None
    seconds: float
    trust: Trust = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trust", Trust.PROVEN if self.outcome.ok else Trust.ESTIMATED)

    @property
    def proven(self) -> bool:
        """Existence and uniqueness proven."""
        return self.outcome.ok

    @property
    def stability_proven(self) -> bool:
        """The stability class is decided by rigorous eigenvalue enclosures."""
        return self.stability is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (the enclosure as its corners' lists).

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> d = dy.prove_fixed_point(system, torch.tensor([1.0], dtype=torch.float64)).to_dict()
        >>> d["outcome"], d["stability"], d["basin"]["trust"]
        ('proven', 'stable', 'proven')
        """
        return {
            "outcome": self.outcome.label,
            "message": self.outcome.message,
            "proof_radius": self.proof_radius,
            "error_bound": _finite_or_none(self.error_bound),
            "enclosure": [self.enclosure[0].tolist(), self.enclosure[1].tolist()],
            "eigenvalues": [[z.real, z.imag, r] for z, r in self.eigenvalues],
            "spectral_radius": [_finite_or_none(v) for v in self.spectral_radius],
            "stability": self.stability,
            "n_unstable": self.n_unstable,
            "basin": None if self.basin is None else self.basin.to_dict(),
            "seconds": self.seconds,
            "trust": self.trust.value,
        }

    def __str__(self) -> str:
        if not self.proven:
            return f"not proven ({self.outcome.label}): {self.outcome.message}"
        stab = self.stability or "stability undecided"
        text = (
            f"proven: exactly one fixed point within {self.proof_radius:.3g} (max norm), "
            f"within {self.error_bound:.2g} of the state; {stab}"
        )
        if self.basin is not None:
            text += f"; certified basin radius {self.basin.radius:.3g} (rate {self.basin.rate:.3g})"
        return text


# ---------------------------------------------------------------------------- machinery
def identity_der(n: int) -> np.ndarray:
    der = np.full((n, n), ZERO, dtype=OBJ)
    for i in range(n):
        der[i, i] = ONE
    return der


def box_jet(center: np.ndarray, radius: np.ndarray | float, with_der: bool = True) -> Jet:
    """Balls ``center_i ± radius_i`` (the radius rounded up by arb) and the identity slopes, with
    the centre as the reference point of the centred form."""
    r = np.broadcast_to(np.asarray(radius, dtype=np.float64), center.shape)
    val = np.empty(center.shape, dtype=OBJ)
    for i, (c, rr) in enumerate(zip(center.tolist(), r.tolist(), strict=True)):
        val[i] = arb(c, rr) if rr > 0 else arb(c)
    return balls_jet(val, with_der, center)


def balls_jet(val: np.ndarray, with_der: bool = True, center: np.ndarray | None = None) -> Jet:
    """The state box ``val`` (balls) with identity slopes and a reference point for the centred
    form: ``center`` (exact floats inside the box) or the balls' midpoints."""
    if not with_der:
        return Jet(val)
    c = mids(val) if center is None else center
    ctr = as_balls(c)
    if not all(x.contains(y) for x, y in zip(val.tolist(), ctr.tolist(), strict=True)):
        return Jet(val, identity_der(val.shape[0]))  # no reference point inside: natural form
    return Jet(val, identity_der(val.shape[0]), ctr=ctr, dx=minus(val, c))


def _col(v: np.ndarray) -> arb_mat:
    return arb_mat(len(v), 1, list(v))


def _fmat(a: np.ndarray) -> arb_mat:
    r, c = a.shape
    return arb_mat(r, c, a.astype(np.float64).reshape(-1).tolist())


def _bmat(a: np.ndarray) -> arb_mat:
    r, c = a.shape
    return arb_mat(r, c, list(a.reshape(-1)))


def _entries(m: arb_mat) -> np.ndarray:
    rows = m.tolist()
    out = np.empty((m.nrows(), m.ncols()), dtype=OBJ)
    for i, row in enumerate(rows):
        out[i, :] = row
    return out


def mids(v: np.ndarray) -> np.ndarray:
    return np.array([float(b.mid()) for b in v.reshape(-1)], dtype=np.float64).reshape(v.shape)


@dataclass
class Krawczyk:
    """One Krawczyk test of ``F(h) = f^p(h) − h`` on the box ``X`` (balls)."""

    status: str  # "inside" | "empty" | "neither"
    K: np.ndarray  # balls


def f_power(tr: Traced, z: Jet, period: int) -> Jet:
    """The jet of ``f^p`` (slopes compose by the chain rule)."""
    out = z
    for _ in range(period):
        out = tr.enclose(out)
    return out


def preconditioner(S_mid: np.ndarray) -> np.ndarray | None:
    """A float inverse of ``S − I`` at the midpoint, None when it is (near) singular."""
    a = S_mid - np.eye(S_mid.shape[0])
    if not np.all(np.isfinite(a)):
        return None
    try:
        cond = np.linalg.cond(a)
        if not np.isfinite(cond) or cond > 1e12:
            return None
        return np.linalg.inv(a)
    except np.linalg.LinAlgError:
        return None


def krawczyk(
    tr: Traced,
    X: np.ndarray,
    c: np.ndarray,
    Fc: np.ndarray,
    C: np.ndarray,
    period: int,
    slopes: np.ndarray | None = None,
) -> Krawczyk:
    """``K(X) = c − C F(c) + (I − C (S − I)) (X − c)`` with ``S`` the slopes of ``f^p`` over X
    (computed here unless given).

    Krawczyk (1969), in Moore's slope form, with ``c`` in ``X``: every zero of ``F`` in ``X``
    lies in ``K(X)`` (R12 in theory/); when ``K(X)`` lies in the interior of ``X``, exactly one
    does (R13)."""
    n = c.shape[0]
    if not _inside(X, c):  # the slopes enclosed are between points of X: c must be one
        return Krawczyk("neither", X)
    if slopes is None:
        try:
            jet = f_power(tr, balls_jet(X), period)
        except WideEnclosure:
            return Krawczyk("neither", X)  # no enclosure on this box: nothing decided
        assert jet.der is not None
        slopes = jet.der
    eye = arb_mat(n, n, [1 if i == j else 0 for i in range(n) for j in range(n)])
    Cm = _fmat(C)
    M = eye - Cm * (_bmat(slopes) - eye)
    K = _col(as_balls(c)) - Cm * _col(Fc) + M * _col(minus(X, c))
    Kv = np.array([K[i, 0] for i in range(n)], dtype=OBJ)
    if all(x.contains_interior(k) for x, k in zip(X.tolist(), Kv.tolist(), strict=True)):
        return Krawczyk("inside", Kv)
    for x, k in zip(X.tolist(), Kv.tolist(), strict=True):
        if not x.overlaps(k):
            return Krawczyk("empty", Kv)
    return Krawczyk("neither", Kv)


def residual_balls(tr: Traced, c: np.ndarray, period: int) -> np.ndarray:
    """``F(c) = f^p(c) − c`` at the (exact float) point ``c``."""
    out = f_power(tr, box_jet(c, 0.0, with_der=False), period)
    return minus(out.val, c)


def tighten(
    tr: Traced,
    X: np.ndarray,
    c: np.ndarray,
    Fc: np.ndarray,
    C: np.ndarray,
    period: int,
    rounds: int = 5,
) -> np.ndarray:
    """``X ← K(X) ∩ X`` a few times: a small box that still holds the fixed point.

    Each round centres the operator at the current box's midpoint (``K``'s inclusion needs the
    centre inside the box: the slopes enclosed are those between points of the box); ``c`` and
    ``Fc`` serve the first round when ``c`` lies in ``X``."""
    for i in range(rounds):
        if i > 0 or not _inside(X, c):
            c = mids(X)
            Fc = residual_balls(tr, c, period)
        k = krawczyk(tr, X, c, Fc, C, period)
        if k.status == "empty" or not all(
            x.overlaps(kk) for x, kk in zip(X.tolist(), k.K.tolist(), strict=True)
        ):
            break  # cannot happen for a box proven to hold a point; keep the box
        new = np.array(
            [x.intersection(kk) for x, kk in zip(X.tolist(), k.K.tolist(), strict=True)], dtype=OBJ
        )
        shrink = max(float(a.rad()) for a in new) / max(max(float(a.rad()) for a in X), 1e-300)
        X = new
        if shrink > 0.5:
            break
    return X


def _inside(X: np.ndarray, c: np.ndarray) -> bool:
    """Every coordinate of the point ``c`` (exact floats) lies in the box ``X`` (balls)."""
    return all(x.contains(arb(v)) for x, v in zip(X.tolist(), c.tolist(), strict=True))


def _exact_zero_near(tr: Traced, c: np.ndarray, period: int) -> np.ndarray | None:
    """``c`` or a short decimal rounding of it, when ``f^p`` fixes it exactly (as balls)."""
    for cand in (c, np.round(c, 12), np.round(c, 6)):
        if all(v.is_zero() for v in residual_balls(tr, cand, period)):
            return np.array([arb(v) for v in cand.tolist()], dtype=OBJ)
    return None


def small_enclosure(
    tr: Traced, c: np.ndarray, period: int, within: tuple[np.ndarray, np.ndarray]
) -> np.ndarray | None:
    """A tight box around the solution near ``c`` (see :func:`_small_enclosure`); None where an
    enclosure fails."""
    try:
        return _small_enclosure(tr, c, period, within)
    except WideEnclosure:
        return None


def _small_enclosure(
    tr: Traced, c: np.ndarray, period: int, within: tuple[np.ndarray, np.ndarray]
) -> np.ndarray | None:
    """A tight box around the solution near ``c``: float Newton steps, then the smallest cube the
    Krawczyk operator proves, tightened; None unless that cube lies in ``within`` (where the
    solution is already known to be unique, so that it is the same one)."""
    thin = f_power(tr, box_jet(c, 0.0), period)
    assert thin.der is not None
    C = preconditioner(mids(thin.der))
    if C is None:
        return None
    Fc = residual_balls(tr, c, period)
    for _ in range(4):
        exact = _exact_zero_near(tr, c, period)
        if exact is not None:
            return exact
        cand = c - C @ mids(Fc)
        Fcand = residual_balls(tr, cand, period)
        if not np.abs(mids(Fcand)).max() < np.abs(mids(Fc)).max():
            break
        c, Fc = cand, Fcand
    exact = _exact_zero_near(tr, c, period)
    if exact is not None:
        return exact
    step = max(hi(abs(v)) for v in (_fmat(C) * _col(Fc)).entries())
    r = max(4 * step, 1e-300)
    for _ in range(12):
        X = box_jet(c, r).val
        lo_x, hi_x = box_bounds(X)
        if np.any(lo_x < within[0]) or np.any(hi_x > within[1]):
            return None
        if krawczyk(tr, X, c, Fc, C, period).status == "inside":
            return tighten(tr, X, c, Fc, C, period)
        r *= 4
    return None


def box_bounds(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([lo(b) for b in X], dtype=np.float64),
        np.array([hi(b) for b in X], dtype=np.float64),
    )


def spectrum(
    J: np.ndarray,
) -> tuple[list[tuple[complex, float]], tuple[float, float], int | None, str | None]:
    """Rigorous eigenvalue discs of the ball matrix ``J`` (arb's ``acb_mat.eig``), the
    spectral-radius bounds, and the stability class when every disc avoids the unit circle."""
    from flint import acb_mat

    n = J.shape[0]
    eig = None
    if n <= EIG_LIMIT:
        m = acb_mat(_bmat(J))
        for multiple in (False, True):
            try:
                eig = m.eig(multiple=multiple)
                break
            except (ValueError, NotImplementedError):
                continue
    if eig is None or any(not e.is_finite() for e in eig):
        return _gershgorin(J)
    discs: list[tuple[complex, float]] = []
    outside = inside = 0
    rho_lo, rho_hi = 0.0, 0.0
    for e in eig:
        re, im = e.real, e.imag
        rad = math.hypot(float(re.rad()), float(im.rad()))
        discs.append((complex(float(re.mid()), float(im.mid())), math.nextafter(rad, math.inf)))
        a = abs(e)
        rho_lo = max(rho_lo, lo(a))
        rho_hi = max(rho_hi, hi(a))
        if a > 1:
            outside += 1
        elif a < 1:
            inside += 1
    if outside + inside < n:
        alt = _gershgorin(J)
        if alt[3] is not None:
            return alt
        return discs, (rho_lo, rho_hi), None, None
    kind = "stable" if outside == 0 else "unstable" if inside == 0 else "saddle"
    return discs, (rho_lo, rho_hi), outside, kind


#: larger Jacobians skip arb's eigenvalue isolation (minutes at n = 128, and it fails on the
#: repeated eigenvalues a normalisation layer creates) for the norm bound
EIG_LIMIT = 48


def _gershgorin(
    J: np.ndarray,
) -> tuple[list[tuple[complex, float]], tuple[float, float], int | None, str | None]:
    """Classification without isolating eigenvalues (repeated ones, large ``n``).

    Gershgorin's discs of ``P⁻¹ J P`` (``P`` the real eigenbasis at the midpoint, when every
    eigenvalue there is real): each connected union of ``k`` discs holds exactly ``k``
    eigenvalues, so when every disc lies inside or outside the unit circle, the count outside is
    the number of discs outside. Else a norm bound ``ρ <= ‖P⁻¹ J P‖₂ < 1`` still proves stability.
    Both hold for every matrix in the enclosure ``J``."""
    n = J.shape[0]
    Jm = mids(J)
    w = np.linalg.eigvals(Jm) if np.all(np.isfinite(Jm)) else np.array([np.nan])
    if np.all(np.isfinite(w)) and np.all(np.abs(w.imag) <= 1e-12 * np.maximum(1.0, np.abs(w))):
        P = _real_eigenbasis(Jm)
        if P is not None:
            Pm = _fmat(P)
            A = Pm.inv() * _bmat(J) * Pm
            discs: list[tuple[complex, float]] = []
            inside = outside = 0
            rho_hi = 0.0
            for i in range(n):
                r = sum((abs(A[i, j]) for j in range(n) if j != i), ZERO)
                c = A[i, i]
                discs.append((complex(float(c.mid()), 0.0), hi(r + c.rad())))
                rho_hi = max(rho_hi, hi(abs(c) + r))
                if abs(c) + r < 1:
                    inside += 1
                elif abs(c) - r > 1:
                    outside += 1
            if inside + outside == n:
                kind = "stable" if outside == 0 else "unstable" if inside == 0 else "saddle"
                return [], (math.nan, rho_hi), outside, kind
    q = _norm_bound(J)
    if q < 1:
        return [], (0.0, q), 0, "stable"
    # ρ(A)^k = ρ(A^k) <= ‖P⁻¹ A^k P‖₂, and A^k lies in the ball power [J]^k for every A in [J]
    power, k = _bmat(J), 1
    for _ in range(6):
        power, k = power * power, 2 * k
        qk = _norm_bound(_entries(power))
        if qk < 1:
            return [], (0.0, hi(arb(qk).root(k))), 0, "stable"
    return [], (math.nan, math.nan), None, None


def _norm_bound(J: np.ndarray) -> float:
    """``min(‖J‖₂, ‖P⁻¹ J P‖₂)`` over the enclosure, ``P`` the real eigenbasis at its midpoint:
    an upper bound on the spectral radius of every matrix in ``J``."""
    q = _norm2_upper(_bmat(J))
    P = _real_eigenbasis(mids(J))
    if P is not None:
        Pm = _fmat(P)
        q = min(q, _norm2_upper(Pm.inv() * _bmat(J) * Pm))
    return q


def _norm2_upper(A: arb_mat) -> float:
    """An upper bound on the spectral norm of every matrix in the ball matrix ``A``: the smaller of
    the square root of the largest Gershgorin row of ``AᵀA`` (tight for orthogonal-times-scalar
    blocks) and the verified-SVD bound of :func:`_norm2_svd` (tight for any matrix whose balls
    are narrow)."""
    if A.nrows() == 0 or A.ncols() == 0:
        return 0.0
    Bm, Br = _mid_rad(A.transpose() * A)
    best = float(np.max(_sum_up(_abs_up(Bm, Br), axis=1)))
    if not math.isfinite(best):  # an entry without a finite enclosure: no bound
        return math.inf
    gersh = math.nextafter(math.sqrt(best), math.inf) * (1 + 2**-50)
    return min(gersh, _norm2_svd(A))


def _mid_rad(m: arb_mat) -> tuple[np.ndarray, np.ndarray]:
    """Float midpoints ``M`` and radii ``R`` with every point of every ball within ``M ± R``: the
    float midpoint may round arb's by half an ulp, so ``R`` is widened by a full one (rounded
    up). Non-finite entries stay non-finite (the callers' bounds become inf)."""
    r, c = m.nrows(), m.ncols()
    ent = m.entries()
    M = np.array([float(v.mid()) for v in ent], dtype=np.float64).reshape(r, c)
    R = np.array([float(v.rad()) for v in ent], dtype=np.float64).reshape(r, c)
    return M, np.nextafter(R + np.abs(M) * 2.0**-52, np.inf)


def _abs_up(M: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``|v|`` over every point of the balls ``M ± R``, rounded up (an exact zero, a sum of two
    zeros, stays zero; a ball that is not finite, NaN included, is bounded by ``inf`` only)."""
    a = np.abs(M) + R
    return np.where(a == 0, 0.0, np.where(np.isnan(a), np.inf, np.nextafter(a, np.inf)))


def _sum_up(x: np.ndarray, axis: int | None = None) -> Any:
    """An upper bound on the exact sum of the non-negative floats ``x`` (along ``axis``): a float
    sum of ``k`` terms in any order is within ``(k − 1)·2⁻⁵³`` of the exact one, relatively, so
    a factor ``1 + (k + 4)·2⁻⁵¹`` and a step up cover it (subnormal sums are exact)."""
    k = x.size if axis is None else x.shape[axis]
    return np.nextafter(np.sum(x, axis=axis) * (1 + (k + 4) * 2.0**-51), np.inf)


def _frob_up(M: np.ndarray, R: np.ndarray) -> float:
    """An upper bound on the Frobenius norm of every matrix in the balls ``M ± R``."""
    a = _abs_up(M, R)
    top = float(np.max(a)) if a.size else 0.0
    if top == 0 or not math.isfinite(top):
        return top
    # scaled by the largest entry (rounded up), so that squares of tiny entries do not underflow
    u = np.nextafter(a / top, np.inf)
    t = float(np.nextafter(np.sqrt(_sum_up(np.nextafter(u * u, np.inf))), np.inf))
    return math.nextafter(top * t, math.inf)


def _norm2_svd(A: arb_mat) -> float:
    """``‖A′‖₂ <= ‖M‖₂ + ‖R‖₂`` for every ``A′`` in the ball matrix ``A = M ± R`` (``|A′ − M| <= R``
    entrywise, and the spectral norm is monotone on non-negative matrices), with
    ``‖R‖₂ <= min(√(‖R‖₁ ‖R‖_∞), ‖R‖_F)`` and ``‖M‖₂`` verified from a float SVD
    ``M ≈ U Σ Vᵀ``: ``U`` and ``V`` are exact float matrices, so ``G = Uᵀ M V`` is enclosed in arb,
    ``‖G‖₂ <= max|G_ii| + ‖G − diag G‖_F``, and ``M = U⁻ᵀ G V⁻¹`` with
    ``σ_min(U)² >= 1 − ‖UᵀU − I‖_F`` (likewise ``V``). Sums and norms of the enclosures' float
    midpoints and radii are rounded up (:func:`_sum_up`), so rounding is enclosed throughout;
    ``inf`` where a step does not verify (a non-finite entry, a float basis too far from
    orthogonal)."""
    r, c = A.nrows(), A.ncols()
    if r == 0 or c == 0:
        return 0.0
    M, R = _mid_rad(A)
    if not (np.isfinite(M).all() and np.isfinite(R).all()):
        return math.inf
    rows, cols = float(np.max(_sum_up(R, axis=1))), float(np.max(_sum_up(R, axis=0)))
    rad_norm = min(
        float(np.nextafter(math.sqrt(np.nextafter(rows * cols, np.inf)), np.inf)),
        _frob_up(R, np.zeros_like(R)),
    )
    try:
        U, _, Vt = np.linalg.svd(M)
    except np.linalg.LinAlgError:
        return math.inf
    Ua, Va = _fmat(U), _fmat(Vt.T)
    Gm, Gr = _mid_rad(Ua.transpose() * _fmat(M) * Va)
    k = min(r, c)
    diag = float(np.max(_abs_up(np.diagonal(Gm), np.diagonal(Gr)))) if k else 0.0
    Gm[np.arange(k), np.arange(k)] = 0.0
    Gr[np.arange(k), np.arange(k)] = 0.0
    off = _frob_up(Gm, Gr)
    e_u = _frob_up(*_mid_rad(Ua.transpose() * Ua - arb_mat(r, r, _eye(r))))
    e_v = _frob_up(*_mid_rad(Va.transpose() * Va - arb_mat(c, c, _eye(c))))
    if not (e_u < 1 and e_v < 1 and math.isfinite(diag + off)):
        return math.inf
    m_norm = (arb(diag) + arb(off)) / ((ONE - arb(e_u)) * (ONE - arb(e_v))).sqrt()
    return hi(m_norm + arb(rad_norm))


def _eye(n: int) -> list[float]:
    return np.eye(n).reshape(-1).tolist()


def _real_eigenbasis(Jmid: np.ndarray) -> np.ndarray | None:
    if not np.all(np.isfinite(Jmid)):  # a failed enclosure: no basis (the caller's bound is inf)
        return None
    w, v = np.linalg.eig(Jmid)
    n = Jmid.shape[0]
    cols: list[np.ndarray] = []
    used = np.zeros(n, dtype=bool)
    for i in range(n):
        if used[i]:
            continue
        if abs(w[i].imag) < 1e-12 * max(1.0, abs(w[i])):
            cols.append(v[:, i].real)
            used[i] = True
        else:
            j = next(
                (
                    k
                    for k in range(i + 1, n)
                    if not used[k] and abs(w[k] - np.conj(w[i])) < 1e-9 * max(1.0, abs(w[i]))
                ),
                None,
            )
            if j is None:
                return None
            cols += [v[:, i].real, v[:, i].imag]
            used[i] = used[j] = True
    if len(cols) != n:
        return None
    P = np.stack(cols, axis=1)
    P = P / np.linalg.norm(P, axis=0, keepdims=True)
    if not np.all(np.isfinite(P)) or np.linalg.cond(P) > 1e8:
        return None
    return P


def _basin_test(
    tr: Traced,
    c: np.ndarray,
    fc_minus_c: np.ndarray,
    P: np.ndarray,
    Pinv: arb_mat,
    row_norms: np.ndarray,
    rho: float,
    steps: int = 1,
) -> float | None:
    """The contraction rate if ``{c + P y : ‖y‖₂ <= rho}`` is proven invariant under ``f^k``
    (``k = steps``) and ``f^k`` contracts on it."""
    try:
        jet = f_power(tr, box_jet(c, rho * row_norms), steps)
    except WideEnclosure:
        return None
    assert jet.der is not None
    Pm = _fmat(P)
    Jt = Pinv * _bmat(jet.der) * Pm
    q = _norm2_upper(Jt)
    if not q < 1:
        return None
    d = Pinv * _col(fc_minus_c)
    dn = math.sqrt(sum(hi(d[i, 0].abs_upper()) ** 2 for i in range(d.nrows())))
    dn = math.nextafter(dn, math.inf) * (1 + 2**-50)
    # ‖g(y)‖ <= ‖g(0)‖ + q ‖y‖ <= d + q rho <= rho  (computed with upward slack)
    if dn + q * rho * (1 + 2**-50) <= rho * (1 - 2**-50):
        return q
    return None


def certify_basin(
    tr: Traced,
    c: np.ndarray,
    err: float,
    J_mid: np.ndarray,
    rho_max: float,
    steps: tuple[int, ...] = (1,),
) -> BasinCertificate | None:
    """The largest certified basin found over ``f^k`` for ``k`` in ``steps`` and, for each, the
    norms of ``P = I`` and of the real eigenbasis of ``J^k``."""
    best: BasinCertificate | None = None
    for k in steps:
        try:
            cert = _certify_basin(tr, c, err, np.linalg.matrix_power(J_mid, k), rho_max, k)
        except WideEnclosure:
            continue
        if cert is not None and (best is None or cert.radius > best.radius):
            best = cert
    return best


def _certify_basin(
    tr: Traced, c: np.ndarray, err: float, J_mid: np.ndarray, rho_max: float, k: int
) -> BasinCertificate | None:
    n = c.shape[0]
    fcm = minus(f_power(tr, box_jet(c, 0.0, with_der=False), k).val, c)
    best: BasinCertificate | None = None
    bases: list[tuple[str, np.ndarray]] = [("euclidean", np.eye(n))]
    eb = _real_eigenbasis(J_mid)
    if eb is not None:
        bases.append(("eigenbasis", eb))
    lb = _lyapunov_basis(J_mid)
    if lb is not None:
        bases.append(("lyapunov", lb))
    for name, P in bases:
        # a norm the linearisation does not contract in at the point cannot contract on any
        # region around it: skip it before the interval passes (float screen, not a proof)
        try:
            q0 = float(np.linalg.norm(np.linalg.solve(P, J_mid @ P), 2))
        except np.linalg.LinAlgError:
            continue
        if not q0 < 1:
            continue
        Pinv = _fmat(P).inv()
        # float row norms: a sum of n squares may round down by about n ulps
        rn = np.sqrt((P**2).sum(axis=1)) * (1 + (n + 4) * 2.0**-52) + 1e-300
        inv_norm = _norm2_upper(Pinv)
        rates: dict[float, float] = {}

        def ok(
            rho: float,
            P: np.ndarray = P,
            Pinv: Any = Pinv,
            rn: np.ndarray = rn,
            rates: dict[float, float] = rates,
        ) -> bool:
            q = _basin_test(tr, c, fcm, P, Pinv, rn, rho, k)
            if q is not None:
                rates[rho] = q
            return q is not None

        good = largest(ok, 1e-12, rho_max, 1e-3, rounds=6)
        if good == 0:
            continue
        rate = rates[good]
        # the region holds the ball of radius rho / ‖P⁻¹‖ around c, and the point lies within
        # √n · err of c: rounded down in arb, as a certified radius must be
        radius = lo(arb(good) / arb(inv_norm) - arb(n).sqrt() * arb(err))
        if radius > 0 and (best is None or radius > best.radius):
            best = BasinCertificate(radius=radius, rate=rate, norm=name, rho=good, steps=k)
    return best


def _lyapunov_basis(J_mid: np.ndarray) -> np.ndarray | None:
    """``P = X^{-1/2}`` (scaled to ``max|P| = 1``), ``X`` solving the discrete Lyapunov equation
    ``AᵀXA − X = −I`` for ``A = J/λ``, ``λ = (ρ(J) + 1)/2``: in the norm ``‖P⁻¹ ·‖₂ = ‖·‖_X`` the
    linearisation contracts at rate about ``λ`` even where ``‖J‖₂ > 1`` and the eigenbasis is ill
    conditioned (a non-normal ``J``). Only a choice of norm: the basin test encloses everything it
    uses. None where ``ρ(J) >= 1`` or the solve fails."""
    import scipy.linalg

    if not np.all(np.isfinite(J_mid)):
        return None
    rho = float(np.abs(np.linalg.eigvals(J_mid)).max())
    if not rho < 1:
        return None
    lam = (rho + 1) / 2
    try:
        X = scipy.linalg.solve_discrete_lyapunov((J_mid / lam).T, np.eye(J_mid.shape[0]))
    except (np.linalg.LinAlgError, ValueError):
        return None
    w, V = np.linalg.eigh((X + X.T) / 2)
    if not (np.all(np.isfinite(w)) and w.min() > 0) or w.max() / w.min() > 1e12:
        return None
    P = (V * w**-0.5) @ V.T
    return P / np.abs(P).max()


def largest(
    test: Any,
    r_min: float,
    r_max: float,
    start: float,
    *,
    known_good: bool = False,
    rounds: int = 5,
) -> float:
    """The largest ``r`` in ``[r_min, r_max]`` found to pass ``test`` (0 if none): from ``start``,
    steps of 16× up or down, then ``rounds`` bisections in log scale (the test is expected to hold
    below some radius, as the Krawczyk and contraction tests do)."""
    good, bad = (r_min if known_good else 0.0), math.inf
    r = min(max(start, r_min), r_max)
    if r > good and test(r):
        good = r
        while good < r_max:
            r = min(good * 16, r_max)
            if not test(r):
                bad = r
                break
            good = r
    else:
        bad = r
        while good == 0:
            r = bad / 16
            if r < r_min:
                if known_good or test(r_min):
                    good = r_min
                break
            if test(r):
                good = r
            else:
                bad = r
    if good == 0:
        return 0.0
    for _ in range(rounds if math.isfinite(bad) else 0):
        mid = math.sqrt(good * bad)
        if test(mid):
            good = mid
        else:
            bad = mid
    return good


def _prove_flat(
    tr: Traced, c: np.ndarray, *, radius_max: float, period: int = 1
) -> tuple[ProofOutcome, float, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """The largest proven radius around ``c`` (after float Newton steps from it), the tight
    enclosure (balls), the Jacobian's midpoint there and the centre used."""
    c.shape[0]
    thin = f_power(tr, box_jet(c, 0.0), period)
    assert thin.der is not None
    S_mid = mids(thin.der)
    C = preconditioner(S_mid)
    if C is None:
        return ProofOutcome.SINGULAR, 0.0, None, S_mid, c
    Fc = residual_balls(tr, c, period)
    for _ in range(3):  # float Newton steps (the float iterate may sit 1e-11 off the point)
        if all(v.is_zero() for v in Fc):
            break
        cand = c - C @ mids(Fc)
        Fcand = residual_balls(tr, cand, period)
        if not np.abs(mids(Fcand)).max() < np.abs(mids(Fc)).max():
            break
        c, Fc = cand, Fcand
    exact = all(v.is_zero() for v in Fc)
    step = max(hi(abs(v)) for v in (_fmat(C) * _col(Fc)).entries()) if not exact else 0.0
    r_min = max(4 * step, 1e-13 * max(1.0, float(np.abs(c).max())), 1e-300)
    if r_min > radius_max:
        return ProofOutcome.TOO_WIDE, 0.0, None, S_mid, c
    first = krawczyk(tr, box_jet(c, r_min).val, c, Fc, C, period)
    if first.status == "empty":
        return ProofOutcome.EXCLUDED, 0.0, None, S_mid, c

    def inside(r: float) -> bool:
        return krawczyk(tr, box_jet(c, r).val, c, Fc, C, period).status == "inside"

    start = min(radius_max, max(r_min, 1e-2 * max(1.0, float(np.abs(c).max()))))
    good = largest(inside, r_min, radius_max, start, known_good=first.status == "inside")
    if good == 0:
        return ProofOutcome.TOO_WIDE, 0.0, None, S_mid, c
    if exact:  # F(c) = 0 exactly: c itself is the fixed point
        E = np.array([arb(v) for v in c.tolist()], dtype=OBJ)
    else:
        E = tighten(
            tr, box_jet(c, r_min if first.status == "inside" else good).val, c, Fc, C, period
        )
    return ProofOutcome.PROVEN, good, E, S_mid, c


def prove_point(
    tr: Traced,
    state: torch.Tensor,
    *,
    radius_max: float,
    basin: bool,
    basin_steps: tuple[int, ...] = (1,),
) -> PointProof:
    t0 = time.perf_counter()
    shape = tuple(state.shape)
    c = state.detach().cpu().double().reshape(-1).numpy().copy()
    with precision(53):
        given = c
        try:
            outcome, r, E, _, c = _prove_flat(tr, c, radius_max=radius_max)
        except WideEnclosure:  # no enclosure even on the smallest box around the point
            outcome, r, E = ProofOutcome.TOO_WIDE, 0.0, None
        empty = torch.zeros(0, dtype=torch.float64)
        if not outcome.ok or E is None:
            return PointProof(
                state=state.detach().cpu().double().clone(),
                outcome=outcome,
                proof_radius=0.0,
                enclosure=(empty, empty),
                error_bound=math.nan,
                center=torch.from_numpy(c.copy()).reshape(shape),
                eigenvalues=(),
                spectral_radius=(math.nan, math.nan),
                stability=None,
                n_unstable=None,
                basin=None,
                seconds=time.perf_counter() - t0,
            )
        lo_e, hi_e = box_bounds(E)
        err = _dist(lo_e, hi_e, c)  # from the centre (for the basin)
        err_given = _dist(lo_e, hi_e, given)
        J: np.ndarray | None = None
        discs: list[tuple[complex, float]] = []
        rho: tuple[float, float] = (math.nan, math.nan)
        n_unst: int | None = None
        kind: str | None = None
        try:
            J = tr.enclose(balls_jet(E)).der
            assert J is not None
            discs, rho, n_unst, kind = spectrum(J)
        except WideEnclosure:
            pass
        cert = None
        if basin and kind == "stable" and J is not None:
            cert = certify_basin(tr, c, err, mids(J), rho_max=max(4.0 * r, 4.0), steps=basin_steps)
    return PointProof(
        state=state.detach().cpu().double().clone(),
        outcome=outcome,
        proof_radius=r,
        enclosure=(
            torch.from_numpy(lo_e).reshape(shape),
            torch.from_numpy(hi_e).reshape(shape),
        ),
        error_bound=err_given,
        center=torch.from_numpy(c.copy()).reshape(shape),
        eigenvalues=tuple(discs),
        spectral_radius=rho,
        stability=kind,
        n_unstable=n_unst,
        basin=cert,
        seconds=time.perf_counter() - t0,
    )


def dist2_upper(lo_e: np.ndarray, hi_e: np.ndarray, c: np.ndarray) -> float:
    """``max ‖h − c‖₂`` over the box ``[lo_e, hi_e]`` (rounded up): each coordinate's farthest
    deviation rounded up, their Euclidean norm rounded up (:func:`_frob_up`)."""
    dev = np.maximum(np.maximum(hi_e - c, c - lo_e), 0.0)
    # a float difference is 0 only between equal floats: keep exact zeros, round the rest up
    dev = np.where(dev == 0, 0.0, np.nextafter(dev, np.inf))
    if not np.all(np.isfinite(dev)):  # NaN included: no bound
        return math.inf
    return _frob_up(dev.reshape(1, -1), np.zeros((1, dev.size)))


def _dist(lo_e: np.ndarray, hi_e: np.ndarray, c: np.ndarray) -> float:
    """``max |h − c|`` over the box (rounded up)."""
    err = float(max(np.max(hi_e - c), np.max(c - lo_e), 0.0))
    if not math.isfinite(err) or not np.all(np.isfinite(hi_e - c) & np.isfinite(c - lo_e)):
        return math.inf  # NaN included: no bound
    return math.nextafter(err, math.inf) if err > 0 else 0.0


def _input_index(call: str, system: LoopedSystem, x: Any) -> tuple[LoopedSystem, int]:
    if not system.driven:
        if x is not None:
            raise InvalidArgumentError(f"{call}: x was given but the system is autonomous")
        return system, 0
    if x is None:
        if system.x is None or system.x.shape[0] != 1:
            n = 0 if system.x is None else int(system.x.shape[0])
            raise InvalidArgumentError(
                f"{call}: the system holds {n} inputs; pass x (one input, shape "
                f"{tuple(system.input_shape or ())}) to say which one the point belongs to"
            )
        return system, 0
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(f"{call}: x must be a tensor, got {type(x).__name__}")
    xs = x if x.dim() == len(system.input_shape or ()) + 1 else x.unsqueeze(0)
    if xs.shape[0] != 1:
        raise ShapeError(f"{call}: x must be one input, shape {tuple(system.input_shape or ())}")
    return system.with_input(xs.to(system.dtype)), 0


def prove_fixed_point(
    system: LoopedSystem,
    h: torch.Tensor,
    x: torch.Tensor | None = None,
    *,
    radius_max: float = 1.0,
    basin: bool = True,
    basin_steps: int | tuple[int, ...] = 1,
) -> PointProof:
    """Prove that a fixed point exists near ``h``, that it is the only one within a radius, its
    stability, and a basin of attraction: rigorous, rounding included.

    The map is traced (ATen level) and evaluated in arb ball arithmetic (python-flint): enclosures
    of ``f`` and of all its pairwise slopes over a box. The Krawczyk operator
    ``K(X) = c − C F(c) + (I − C S(X)) (X − c)`` of ``F(h) = f(h) − h`` (``C`` a float inverse
    of ``S − I`` at ``c``) is tested on cubes ``c ± r`` of growing ``r``: when ``K(X)`` lies in
    the interior of ``X``, exactly one fixed point lies in ``X`` (R12, R13). The largest such ``r``
    is the proof radius; ``K`` iterated on the smallest proven box encloses the point. ``arb``'s
    rigorous eigenvalue enclosures of the Jacobian over that enclosure then decide stability, and
    for a stable point the largest region ``f`` maps into itself while contracting (in the
    Euclidean norm or the Jacobian's eigenbasis) is a certified basin: every start in it converges
    to the point.

    What is proven is about the real-arithmetic map of the program (its float64 parameters and
    inputs as exact reals), not about the float iteration.

    Parameters
    ----------
    system : LoopedSystem
    h : torch.Tensor
        A numerically found fixed point, ``(*state_shape)``.
    x : torch.Tensor, optional
        The input it belongs to (one input, ``input_shape``); needed when a driven system holds
        more than one.
    radius_max : float
        The largest proof radius tried (max norm).
    basin : bool
        Certify a basin for a proven stable point.
    basin_steps : int or tuple of int
        Iterates ``k`` of the map tried for the basin (the largest certified region over them is
        kept): ``f^k`` may contract in a simple norm where ``f`` does not. Each ``k`` costs about
        ``k`` times the ``k = 1`` search; on the flip-flop RNN's memories ``(1, 4)`` certified
        basins about 17 times wider than ``1`` alone.

    Returns
    -------
    PointProof

    Raises
    ------
    InvalidArgumentError
        ``h`` of the wrong shape or not finite, ``radius_max <= 0``, or a map with an operation
        that has no rigorous enclosure (the message names it; the point stays an estimate).

    Examples
    --------
    The 1-D bistable map ``h + 0.2 (h − h³)`` has a stable point at 1 (``f′ = 0.6``); it
    contracts on ``[1 − ρ, 1 + ρ]`` for ``ρ < 1 − 1/√3 ≈ 0.4226``:

    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
    >>> p = dy.prove_fixed_point(system, torch.tensor([1.0], dtype=torch.float64))
    >>> p.outcome.label, p.stability, p.error_bound
    ('proven', 'stable', 0.0)
    >>> round(p.spectral_radius[1], 6), 0.4 < p.basin.radius < 0.4227
    (0.6, True)

    References
    ----------
    R. Krawczyk, "Newton-Algorithmen zur Bestimmung von Nullstellen mit Fehlerschranken",
    Computing 4 (1969). R. E. Moore, "A test for existence of solutions to nonlinear systems",
    SIAM J. Numer. Anal. 14 (1977). F. Johansson, "Arb: efficient arbitrary-precision
    midpoint-radius interval arithmetic", IEEE Trans. Computers 66 (2017).
    """
    call = call_form("prove_fixed_point", ["system", "h"], radius_max=radius_max, basin=basin)
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(
            f"{call}: system must be a LoopedSystem, got {type(system).__name__}"
        )
    check_point(call, system, h)
    check_positive_float(call, "radius_max", radius_max)
    ks = (basin_steps,) if isinstance(basin_steps, int) else tuple(basin_steps)
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise InvalidArgumentError(
            f"{call}: basin_steps must be a positive int or a non-empty tuple of them, got "
            f"{basin_steps!r}"
        )
    sub, idx = _input_index(call, system, x)
    tr = trace_map(call, sub, idx)
    return prove_point(
        tr, h.reshape(system.state_shape), radius_max=radius_max, basin=basin, basin_steps=ks
    )


def check_point(call: str, system: LoopedSystem, h: Any) -> None:
    if not isinstance(h, torch.Tensor):
        raise InvalidArgumentError(
            f"{call}: h must be a tensor of shape {tuple(system.state_shape)}"
        )
    shape = tuple(system.state_shape)
    if tuple(h.shape) != shape and tuple(h.shape) != (1, *shape):
        raise ShapeError(
            f"{call}: h has shape {tuple(h.shape)}, the system's states have shape {shape}; pass "
            "one state"
        )
    if not h.is_floating_point() or not bool(torch.isfinite(h).all()):
        raise InvalidArgumentError(f"{call}: h must be a finite floating-point state")
