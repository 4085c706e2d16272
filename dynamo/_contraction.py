"""Is the looped map a contraction? A verdict with its evidence: proven, supported, or refuted."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch

from ._fixed_points import Continuum, FixedPoint, FixedPointSet, find_fixed_points
from ._linearize import jacobian
from ._lipschitz import Bound, Domain, lipschitz_lower_bound, lipschitz_upper_bound
from ._results import Trust, _plain
from ._system import LoopedSystem
from ._validate import call_form, check_finite_tensor, check_positive_int, check_state_shape
from .errors import InvalidArgumentError

__all__ = ["ContractionVerdict", "Evidence", "Verdict", "check_contraction", "lyapunov_certificate"]


class Verdict(enum.Enum):
    """What is known about contraction, from strongest to weakest evidence.

    Each member carries its meaning.

    Examples
    --------
    >>> from dynamo import Verdict
    >>> [str(v) for v in Verdict]
    ['PROVEN', 'REFUTED', 'SUPPORTED', 'UNDETERMINED']
    >>> Verdict.SUPPORTED.label, Verdict.SUPPORTED.message
    ('supported', 'sampled evidence only: no witness against, no proof for')
    """

    PROVEN = ("proven", "a certified bound shows contraction")
    REFUTED = ("refuted", "a checked witness shows the map is not a contraction")
    SUPPORTED = ("supported", "sampled evidence only: no witness against, no proof for")
    UNDETERMINED = ("undetermined", "no evidence either way")

    def __init__(self, label: str, message: str) -> None:
        self.label = label
        self.message = message

    def __str__(self) -> str:
        return self.label.upper()

    @property
    def trust(self) -> Trust:
        """What this verdict about the map rests on: PROVEN on a certified bound, CHECKED on a
        re-checkable witness (REFUTED), ESTIMATED otherwise (sampled evidence, or none).

        >>> from dynamo import Verdict
        >>> [v.trust.value for v in Verdict]
        ['proven', 'checked', 'estimated', 'estimated']
        """
        return {
            "proven": Trust.PROVEN,
            "refuted": Trust.CHECKED,
        }.get(self.label, Trust.ESTIMATED)


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: what was checked, the numbers, and how far it can be trusted.

    ``trust`` is a :class:`~dynamo.Trust` (a string works too): PROVEN (rigorous, rounding
    included: only then is ``certified`` true), CHECKED (a float test on a computed instance,
    such as a fixed point found numerically) or ESTIMATED (sampled); by default PROVEN when
    ``certified``, else ESTIMATED.

    Examples
    --------
    :func:`check_contraction` returns them in :attr:`ContractionVerdict.evidence`:

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
    >>> v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    >>> e = v.evidence[0]
    >>> e.kind, round(e.value, 6), e.certified, e.trust.value
    ('certified Lipschitz upper bound', 0.5, True, 'proven')
    >>> v.evidence[-2].kind, v.evidence[-2].trust.value  # a float test at the fixed point found
    ('discrete Lyapunov check', 'checked')
    >>> v.evidence[-1].kind, v.evidence[-1].trust.value  # its proof (Krawczyk, arb balls)
    ('certified basins at the fixed points', 'proven')
    """

    kind: str
    claim: str
    value: float | None
    certified: bool
    details: dict[str, Any] = field(default_factory=dict)
    trust: Trust | str = ""

    def __post_init__(self) -> None:
        given = self.trust or (Trust.PROVEN if self.certified else Trust.ESTIMATED)
        try:
            trust = Trust(given)
        except ValueError:
            known = ", ".join(t.value for t in Trust)
            raise InvalidArgumentError(
                f"Evidence(...): trust must be one of {known}, got {given!r}"
            ) from None
        if (trust is Trust.PROVEN) != bool(self.certified):
            raise InvalidArgumentError(
                f"Evidence(...): certified={self.certified} does not go with trust={trust!r}; "
                "only proven evidence is certified"
            )
        object.__setattr__(self, "trust", trust)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
        >>> v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
        >>> d = v.evidence[1].to_dict()
        >>> sorted(d), d["certified"], d["trust"]
        (['certified', 'claim', 'details', 'kind', 'trust', 'value'], False, 'estimated')
        """
        v = self.value
        return {
            "kind": self.kind,
            "claim": self.claim,
            "value": None if v is None or not math.isfinite(v) else v,
            "certified": self.certified,
            "trust": Trust(self.trust).value,
            "details": {k: _plain(val) for k, val in self.details.items()},
        }


@dataclass(frozen=True)
class ContractionVerdict:
    """Verdicts on contraction, each with its evidence.

    Attributes
    ----------
    verdict : Verdict
        About the map on the domain in the Euclidean norm: PROVEN (a certified Lipschitz bound
        below 1 on a domain the map sends into itself: Banach gives one fixed point reached from
        everywhere in it), REFUTED (a witness on the domain: two states of it whose images are
        farther apart, a fixed point in it with ρ > 1 along it, or two distinct fixed points in
        it for one input), SUPPORTED (every sampled local ``‖J‖₂`` along the domain below 1 and
        no witness), UNDETERMINED.
    local_verdict : Verdict
        About the fixed points found on the domain: PROVEN when every one is proven (Krawczyk in
        arb ball arithmetic, :func:`prove_fixed_point`: a fixed point exists there, is unique
        within a radius, is stable by eigenvalue enclosures, and has a certified basin that the
        map sends into itself while contracting); else SUPPORTED when a float check of a
        discrete Lyapunov inequality ``JᵀPJ ⪯ λ²P`` with ``λ < 1``, ``P ≻ 0`` passes at every one
        (local contraction in the ``P``-norm, checked at those computed points; above
        ``dense_limit``, when every computed ρ < 1), REFUTED when one has ρ > 1, UNDETERMINED
        when none was found or a check failed. The points were found by sampling either way: a
        point not found was not examined.
    evidence : tuple of Evidence
        Each with its :class:`~dynamo.Trust`: PROVEN, CHECKED or ESTIMATED.
    witness : dict
        The refuting witness (``"a"``, ``"b"`` states of the domain with their images' distance
        ratio, or fixed points on it), re-checkable by evaluating the map.
    domain : Domain or None
    upper_bound : Bound or None
        The Lipschitz upper bound the verdict rests on (None where no rule gives one; the
        evidence says why), with its derivation and trust.

    Examples
    --------
    :func:`check_contraction` returns one:

    >>> import dynamo as dy
    >>> henon = dy.LoopedSystem.from_module(dy.models.Henon())
    >>> ball = dy.Domain.ball(1.0)
    >>> v = dy.check_contraction(henon, ball, n_samples=4, ascent_steps=2, n_starts=2)
    >>> str(v.verdict), str(v.local_verdict), len(v.evidence)
    ('REFUTED', 'REFUTED', 5)
    >>> round(v.witness["ratio"], 4)  # two states whose images are farther apart
    2.3950
    """

    verdict: Verdict
    local_verdict: Verdict
    evidence: tuple[Evidence, ...]
    witness: dict[str, Any]
    domain: Domain | None
    upper_bound: Bound | None = None

    @property
    def trust(self) -> Trust:
        """What :attr:`verdict` rests on (see :attr:`Verdict.trust`)."""
        return self.verdict.trust

    @property
    def certified_radius(self) -> float | None:
        """On ``Domain.ball(center, r)``: the largest radius around the centre that was proven to
        lie in a region the map sends into itself and contracts on (in the norm the evidence
        names), so that every start within it converges to the one fixed point there; PROVEN
        (arb ball arithmetic, rounding included). None on other domains, or where no such region
        was proven. The domain itself is PROVEN when this reaches ``r``.

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> v = dy.check_contraction(system, dy.Domain.ball(torch.tensor([1.0]), 0.3))
        >>> str(v.verdict), 0.4 < v.certified_radius < 1 - 1 / 3**0.5
        ('PROVEN', True)
        """
        radii = [
            e.value
            for e in self.evidence
            if e.kind == "certified contraction radius" and e.certified and e.value is not None
        ]
        return max(radii) if radii else None

    @property
    def local_trust(self) -> Trust:
        """What :attr:`local_verdict` rests on: PROVEN when rigorous proofs at every fixed point
        found decided it, CHECKED when a float test at each one did (SUPPORTED or REFUTED),
        ESTIMATED when nothing did (UNDETERMINED). The points themselves were found by sampling:
        a point not found was not examined.

        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
        >>> v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
        >>> v.trust.value, v.local_trust.value  # the one fixed point is proven too
        ('proven', 'proven')
        """
        if self.local_verdict is Verdict.PROVEN:
            return Trust.PROVEN
        if self.local_verdict in (Verdict.SUPPORTED, Verdict.REFUTED):
            return Trust.CHECKED
        return Trust.ESTIMATED

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
        >>> v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
        >>> d = v.to_dict()
        >>> d["verdict"], d["local_verdict"], d["witness"], d["domain"]
        ('PROVEN', 'PROVEN', {}, None)
        """
        wit = {}
        for k, v in self.witness.items():
            wit[k] = float(v.norm()) if isinstance(v, torch.Tensor) and v.numel() > 1 else _plain(v)
        return {
            "verdict": self.verdict.label.upper(),
            "verdict_meaning": self.verdict.message,
            "trust": self.trust.value,
            "local_verdict": self.local_verdict.label.upper(),
            "local_trust": self.local_trust.value,
            "evidence": [e.to_dict() for e in self.evidence],
            "witness": wit,
            "domain": None if self.domain is None else self.domain.to_dict(),
            "certified_radius": self.certified_radius,
        }

    def __str__(self) -> str:
        lines = [f"contraction: {self.verdict} (local: {self.local_verdict})"]
        for e in self.evidence:
            # an entry without a value (no certified rule applies) is no result of any trust
            tag = Trust(e.trust).word if e.value is not None else "none"
            val = "" if e.value is None else f" = {e.value:.6g}"
            lines.append(f"  [{tag}] {e.kind}{val}: {e.claim}")
        return "\n".join(lines)


def lyapunov_certificate(J: torch.Tensor, rate: float | None = None) -> dict[str, Any]:
    """A float check of the discrete Lyapunov inequality ``JᵀPJ ⪯ λ²P``, ``P ≻ 0``, for one dense
    Jacobian ``J``; not a proof.

    With ``λ = (ρ(J) + 1)/2`` (or ``rate``) and ``A = J/λ``, ``P`` solves ``AᵀPA − P = −I``
    (``scipy.linalg.solve_discrete_lyapunov``), which has a positive definite solution exactly when
    ``ρ(A) < 1``. Then ``λ²P − JᵀPJ = λ² I ≻ 0``, and the linearisation contracts at rate λ in
    the norm ``‖v‖_P = √(vᵀPv)``. Both conditions are re-checked in float64 on the returned ``P``,
    with a margin of ``1e3·eps·max|P|``. Rounding in ``J``, in solving for ``P`` and in the
    eigenvalues is not enclosed, so the answer is true of this computed instance (SCIENCE.md §7:
    *checked*), and at a fixed point found numerically it is a check at that computed point; a
    rigorous version would enclose ``P`` and the eigenvalues with interval arithmetic. In exact
    arithmetic such a ``P`` exists exactly when ``ρ(J) < 1``: the check adds a margin, not a
    stronger claim.

    The name is kept for compatibility; the returned ``trust`` says what it is.

    Returns
    -------
    dict
        ``ok`` (bool), ``rate`` λ, ``rho`` (float ``ρ(J)``), ``min_eig_P``, ``min_eig_gap``
        (smallest eigenvalue of ``λ²P − JᵀPJ``), ``cond_P``, and ``trust`` (``"checked"``).

    Examples
    --------
    >>> import torch
    >>> from dynamo import lyapunov_certificate
    >>> J = torch.tensor([[0.5, 10.0], [0.0, 0.5]], dtype=torch.float64)  # ‖J‖₂ ≈ 10, ρ = 0.5
    >>> check = lyapunov_certificate(J)
    >>> check["ok"], check["rate"], check["trust"]
    (True, 0.75, 'checked')
    """
    Jn = J.detach().cpu().double().numpy()
    rho = float(np.abs(np.linalg.eigvals(Jn)).max())
    lam = (rho + 1) / 2 if rate is None else float(rate)
    if rho >= 1 or lam <= rho:
        return {
            "ok": False,
            "rate": lam,
            "rho": rho,
            "min_eig_P": None,
            "min_eig_gap": None,
            "cond_P": None,
            "trust": Trust.CHECKED.value,
        }
    A = Jn / lam
    P = scipy.linalg.solve_discrete_lyapunov(A.T, np.eye(Jn.shape[0]))
    P = (P + P.T) / 2
    eig_p = np.linalg.eigvalsh(P)
    gap = np.linalg.eigvalsh(lam * lam * P - Jn.T @ P @ Jn)
    tol = 1e3 * np.finfo(float).eps * max(1.0, float(np.abs(P).max()))
    ok = bool(eig_p.min() > tol and gap.min() > tol)
    return {
        "ok": ok,
        "rate": lam,
        "rho": rho,
        "min_eig_P": float(eig_p.min()),
        "min_eig_gap": float(gap.min()),
        "cond_P": float(eig_p.max() / eig_p.min()),
        "trust": Trust.CHECKED.value,
    }


def check_contraction(
    system: LoopedSystem,
    domain: Domain | None = None,
    *,
    states: torch.Tensor | None = None,
    n_samples: int = 32,
    ascent_steps: int = 20,
    n_starts: int = 16,
    max_steps: int = 1000,
    dense_limit: int = 512,
    seed: int = 0,
) -> ContractionVerdict:
    """Decide, with evidence, whether the looped map contracts on a domain.

    In order: (1) a certified Lipschitz upper bound on ``domain`` (:func:`lipschitz_upper_bound`)
    with the image of the domain checked to lie inside it; below 1, that is a proof (Banach);
    (2) a search for witnesses against, all on the domain: gradient ascent on the local ``‖J‖₂``
    from states of the domain, kept in it (a state with ``σ_max > 1`` gives two nearby states of
    the domain whose images are farther apart, checked by evaluating the map), and a multi-start
    fixed-point search from states of the domain, of which only the fixed points on the domain
    count (two distinct ones for one input, or one with ρ > 1); (3) a float check of a discrete
    Lyapunov inequality at every fixed point found (dense, ``n <= dense_limit``) for the local
    verdict, which is at most SUPPORTED. A witness overrides sampled support; a proof is never
    inferred from samples or float checks.

    On a sphere (``r_min == r_max``: no interior) the map is analysed along the domain: local
    norms, singular directions and the spectra at fixed points are those of ``∂f/∂h`` restricted
    to the tangent space (the Jacobian of ``f∘π``, ``π`` the radial projection onto the sphere,
    which is ``J·P`` there with ``P`` the tangent projector). A direction that leaves the sphere,
    such as a radially expanding one, is no witness against contraction on it. When the map
    sends the sphere into itself, ``J`` maps the tangent space at a fixed point into itself and
    these are the eigenvalues of ``J`` on it; in any case ρ > 1 there implies ``‖J·P‖₂ > 1``,
    i.e. nearby states of the sphere whose images are farther apart. On a domain with interior
    (a ball, a shell, all of space) every direction counts and points are kept inside it.

    **A local certificate** on ``Domain.ball(h_star, r)``, a Euclidean ball around a state (one
    input): the fixed point near ``h_star`` is proven (Krawczyk, :func:`prove_fixed_point`) and
    the largest region around it that ``f`` sends into itself while contracting (in the
    Euclidean norm, the Jacobian's real eigenbasis, or the norm of a discrete Lyapunov solution
    ``‖·‖_X``, which contracts where ``ρ(J) < 1 < ‖J‖₂``) gives
    :attr:`ContractionVerdict.certified_radius`, the radius of the ball around ``h_star`` inside
    it (PROVEN, rounding included, the proven distance from ``h_star`` to the point taken off); a
    certified Lipschitz bound below 1 on the ball proves the whole ball. The verdict is PROVEN
    when that radius reaches ``r``; REFUTED when the point has an eigenvalue proven outside the
    unit circle (a saddle too), or when starts in the ball reach two fixed points, each proven,
    with disjoint enclosures (never against a proof); SUPPORTED when every start sampled in the
    ball converges. ``ascent_steps``, ``n_starts`` and ``dense_limit`` are not used
    there: a Euclidean ``‖J‖₂ > 1`` is no witness against contraction in another norm.

    Parameters
    ----------
    system : LoopedSystem
    domain : Domain, optional
        Where the global claim is made; default: everywhere (then only maps with global rules can
        be proven). States are sampled from it. ``Domain.ball(h_star, r)`` asks for a local
        certificate (above).
    states : torch.Tensor, optional
        ``(N, *state_shape)`` states to start the witness search from, moved into the domain
        (every token's norm clamped into its range); default: sampled from the domain, or from
        the system's start distribution when the domain is all of space.
    n_samples, ascent_steps : int
        Witness search size.
    n_starts : int
        Starts per input of the fixed-point search (sampled from the domain when it is bounded).
    max_steps : int
        Iterations per start of that search (Newton gets a fifteenth of them, at least 10).
    dense_limit : int
    seed : int

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 8))
    >>> dy.check_contraction(system).verdict
    <Verdict.PROVEN: ('proven', 'a certified bound shows contraction')>
    >>> henon = dy.LoopedSystem.from_module(dy.models.Henon())
    >>> str(dy.check_contraction(henon, dy.Domain.ball(1.0)).verdict)
    'REFUTED'

    A map of the unit circle into itself that contracts along it (rate 0.18) but expands
    radially (``r ↦ r²``): the radial direction leaves the circle and is no witness.

    >>> def circle(h):
    ...     r2 = (h * h).sum(-1, keepdim=True)
    ...     phi = 0.18 * h[..., 1:] / r2.sqrt()  # θ ↦ 0.18·sin θ
    ...     return r2 * torch.cat([torch.cos(phi), torch.sin(phi)], -1)
    >>> s = dy.LoopedSystem.from_function(circle, state_shape=(2,))
    >>> v = dy.check_contraction(s, dy.Domain.sphere(1.0), n_samples=8, n_starts=4)
    >>> str(v.verdict), str(v.local_verdict), round(v.evidence[1].value, 4)
    ('SUPPORTED', 'SUPPORTED', 0.18)
    """
    call = call_form("check_contraction", ["system"])
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    if domain is not None and not isinstance(domain, Domain):
        raise InvalidArgumentError(f"{call}: domain must be a dynamo.Domain or None")
    check_positive_int(call, "n_samples", n_samples)
    check_positive_int(call, "ascent_steps", ascent_steps, minimum=0)
    check_positive_int(call, "n_starts", n_starts)
    check_positive_int(call, "max_steps", max_steps)
    if states is not None:
        check_state_shape(call, "states", states, system.state_shape)
        check_finite_tensor(call, "states", states)
    dom = domain if domain is not None else Domain()
    if dom.center is not None:
        return _check_ball(system, dom, call, states, n_samples, max_steps, seed)
    bounded = dom.r_max < math.inf or dom.r_min > 0
    sphere = dom.r_min == dom.r_max
    # the map as seen along the domain: f∘π on a sphere (equal to f on it), f elsewhere
    along = _along(system, dom) if sphere else system
    evidence: list[Evidence] = []
    witness: dict[str, Any] = {}

    # (1) certified global bound
    proven = False
    ub: Bound | None = None
    try:
        ub = lipschitz_upper_bound(system, dom)
        lo, hi = ub.out_norms if ub.out_norms is not None else (0.0, math.inf)
        # leaning inward: an image that only rounds into the domain is not inside it
        invariant = lo * (1 - 1e-12) >= dom.r_min and hi * (1 + 1e-12) <= dom.r_max
        evidence.append(
            Evidence(
                "certified Lipschitz upper bound"
                if ub.certified
                else "Lipschitz upper bound from rules not all proven",
                f"Lip(f) <= {ub.value:.6g} on {dom!r}; the image's "
                f"token norms lie in [{lo:.4g}, {hi:.4g}]"
                + (" (inside the domain)" if invariant else " (not inside the domain)"),
                ub.value,
                ub.certified,
                {"out_norms": [lo, hi]},
                ub.trust,
            )
        )
        proven = ub.certified and ub.value < 1 and invariant
    except InvalidArgumentError as err:
        # no bound at all: nothing is certified, and the entry prints as [none]
        evidence.append(Evidence("no Lipschitz upper bound", f"none: {err}", None, False))

    # (2) witnesses against, on the domain
    if states is None:
        if bounded:
            states = dom.sample(system, n_samples, seed=seed)
        else:
            states = system.initial_states(
                "normal", max(1, n_samples // max(1, _batch(system))), seed=seed
            )
    else:
        states = _into(states.to(system.dtype), dom)
    x1 = (
        along
        if system.x is None or not system.driven
        else along.with_input(system.x[:1].expand(states.shape[0], *system.x.shape[1:]))
    )
    low = lipschitz_lower_bound(
        x1,
        states,
        method="ascent" if ascent_steps else "sampled",
        steps=max(1, ascent_steps),
        domain=domain,
        seed=seed,
    )
    evidence.append(
        Evidence(
            "largest local ‖J‖₂ found (gradient ascent)",
            f"max over {low.n_evaluated} evaluations"
            + (", along the domain (∂f/∂h on the sphere's tangent space)" if sphere else ""),
            low.value,
            False,
        )
    )
    refuted = False
    if low.value > 1 and low.witness is not None:
        pair = _expanding_pair(system, along, low.witness, dom, seed)
        if pair is not None:
            refuted = True
            witness.update(pair)
            evidence.append(
                Evidence(
                    "expanding pair",
                    f"‖f(a) − f(b)‖ / ‖a − b‖ = {pair['ratio']:.6g} > 1 for a, b in the domain, "
                    "checked by evaluating the map",
                    pair["ratio"],
                    False,
                    trust=Trust.CHECKED,
                )
            )
    found = find_fixed_points(
        along,
        n_starts,
        starts=dom.sample(system, n_starts, seed=seed) if bounded else None,
        mode="all",
        seed=seed,
        qmin_steps=0,
        max_steps=max_steps,
        newton_steps=max(10, max_steps // 15),
        dense_limit=dense_limit,
    )
    points, continua, off = _on_domain(system, found, dom, projected=sphere)
    if off:
        evidence.append(
            Evidence(
                "fixed points off the domain",
                f"{len(off)} fixed point(s) or continua found off {dom!r}, the nearest at relative "
                f"distance {min(off):.2g} from it, set aside: they say nothing about the map on it",
                float(len(off)),
                False,
                {"relative_distances": sorted(off)},
                trust=Trust.CHECKED,
            )
        )
    for b in range(found.n_inputs):
        pts = [p for p in points if p.input_index == b]
        cont = any(c.input_index == b for c in continua)
        if len(pts) >= 2 or cont:
            refuted = True
            if "fixed_point_a" not in witness and len(pts) >= 2:
                witness.update(
                    {"fixed_point_a": pts[0].state, "fixed_point_b": pts[1].state, "input_index": b}
                )
            evidence.append(
                Evidence(
                    "two fixed points for one input",
                    f"input {b}: {len(pts)} isolated fixed points"
                    + (", and a continuum" if cont else "")
                    + " on the domain (a contraction has exactly one)",
                    float(len(pts)),
                    False,
                    trust=Trust.CHECKED,
                )
            )
            break
    along_text = ", restricted to the sphere's tangent space" if sphere else ""
    unstable = [p for p in points if p.spectral_radius > 1]
    if unstable:
        refuted = True
        worst = max(unstable, key=lambda p: p.spectral_radius)
        witness.setdefault("unstable_fixed_point", worst.state)
        witness.setdefault("unstable_input_index", worst.input_index)
        evidence.append(
            Evidence(
                "fixed point with ρ > 1",
                f"ρ(∂f/∂h{along_text}) = {worst.spectral_radius:.6g} at a fixed point on the "
                f"domain (residual {worst.residual:.1e})",
                worst.spectral_radius,
                False,
                trust=Trust.CHECKED,
            )
        )

    # (3) local checks at the fixed points found: rigorous where every point is proven (with
    # a certified basin), else float checks, at most SUPPORTED
    local = Verdict.UNDETERMINED
    proofs = [p.proof for p in points]
    if points:
        if unstable:
            local = Verdict.REFUTED
        elif system.state_dim <= dense_limit:
            checks = []
            for p in points:
                sub = (
                    along
                    if not system.driven or system.x is None
                    else along.with_input(system.x[p.input_index : p.input_index + 1])
                )
                checks.append(lyapunov_certificate(jacobian(sub, p.state[None])[0]))
            if all(c["ok"] for c in checks):
                rate_max = max(c["rate"] for c in checks)
                local = Verdict.SUPPORTED
                evidence.append(
                    Evidence(
                        "discrete Lyapunov check",
                        f"float check JᵀPJ ⪯ λ²P with P ≻ 0{along_text}, λ up to {rate_max:.4g}, "
                        f"at the {len(checks)} fixed point(s) found on the domain (computed "
                        "points found by sampling; rounding not enclosed: not a proof)",
                        rate_max,
                        False,
                        {"cond_P_max": max(c["cond_P"] for c in checks)},
                        trust=Trust.CHECKED,
                    )
                )
        elif all(p.spectral_radius < 1 for p in points):
            local = Verdict.SUPPORTED
            evidence.append(
                Evidence(
                    "spectral radius at the fixed points",
                    f"float ρ(∂f/∂h{along_text}) < 1 at the {len(points)} fixed point(s) found "
                    "on the domain (computed points found by sampling: not a proof)",
                    max(p.spectral_radius for p in points),
                    False,
                    trust=Trust.CHECKED,
                )
            )

    if (
        points
        and not unstable
        and all(
            q is not None and q.proven and q.stability == "stable" and q.basin is not None
            for q in proofs
        )
    ):
        # every point found proven, stable, with a certified basin: the float check above keeps
        # its place (and its label), and the local verdict rests on the proofs
        done = [q for q in proofs if q is not None and q.basin is not None]
        radius = min(q.basin.radius for q in done if q.basin is not None)
        local = Verdict.PROVEN
        evidence.append(
            Evidence(
                "certified basins at the fixed points",
                f"each of the {len(done)} fixed point(s) found on the domain{along_text} "
                "proven (Krawczyk, arb ball arithmetic) to exist, be unique within "
                f"{min(q.proof_radius for q in done):.3g} (max norm) and be stable "
                "(eigenvalue enclosures), with a region the map sends into itself and "
                f"contracts on that holds a ball of radius >= {radius:.3g} around it: "
                "every start there converges to it",
                radius,
                True,
                {"proof_radius_min": min(q.proof_radius for q in done)},
                trust=Trust.PROVEN,
            )
        )
    return ContractionVerdict(
        verdict=_ladder(refuted, proven, low.value < 1),
        local_verdict=local,
        evidence=tuple(evidence),
        witness=witness,
        domain=domain,
        upper_bound=ub,
    )


def _check_ball(
    system: LoopedSystem,
    dom: Domain,
    call: str,
    states: torch.Tensor | None,
    n_samples: int,
    max_steps: int,
    seed: int,
) -> ContractionVerdict:
    """:func:`check_contraction` on ``Domain.ball(center, r)``: a local certificate. The fixed
    point near the centre is proven (Krawczyk) with its certified basin, whose radius around the
    centre is the certified contraction radius; the domain is PROVEN when that radius reaches
    ``r``. Starts sampled in the ball and iterated are the witness search: two limits, each
    proven and apart, refute contraction in every norm, as a point with a proven eigenvalue
    outside the unit circle does."""
    from ._interval._ball import arb, lo
    from ._interval._jet import trace_map
    from ._interval._prove import dist2_upper, prove_point
    from ._solvers import solve

    center = dom.center_for(system, call)  # the system's dtype, for sampling and iterating
    exact = dom.center  # float64: what the proof is about
    assert exact is not None
    if _batch(system) != 1:
        raise InvalidArgumentError(
            f"{call}: a ball around one state belongs to one input, but the system holds "
            f"{_batch(system)}; pass system.with_input(x[i : i + 1]) for the input whose fixed "
            "point the center is"
        )
    if states is not None:
        states = _into_ball(states.to(system.dtype), center, float(dom.radius or 0.0))
    r = float(dom.radius or 0.0)
    evidence: list[Evidence] = []
    witness: dict[str, Any] = {}
    refuted = False
    radius: float | None = None
    delta = math.inf  # Euclidean distance from the centre to the proven point, rounded up
    local = Verdict.UNDETERMINED

    # (1) the proof at the centre: existence, uniqueness, stability, a certified basin
    proof = None
    traced = None
    try:
        traced = trace_map(call, system)
        proof = prove_point(traced, exact, radius_max=max(1.0, 4.0 * r), basin=True)
    except InvalidArgumentError as err:
        evidence.append(Evidence("no proof at the centre", f"none: {err}", None, False))
    if proof is not None and not proof.proven:
        evidence.append(
            Evidence(
                "no proof at the centre",
                f"no fixed point proven near the centre: {proof.outcome.message}",
                None,
                False,
            )
        )
    elif proof is not None:
        lo_e, hi_e = (t.reshape(-1).numpy() for t in proof.enclosure)
        delta = dist2_upper(lo_e, hi_e, exact.reshape(-1).numpy())
        evidence.append(
            Evidence(
                "fixed point near the centre",
                f"a fixed point exists within {delta:.3g} (Euclidean) of the centre and is the "
                f"only one within {proof.proof_radius:.3g} (max norm) of the point its proof "
                "was centred on (Krawczyk, arb ball arithmetic)",
                delta,
                True,
                {"proof_radius": proof.proof_radius, "stability": proof.stability},
                trust=Trust.PROVEN,
            )
        )
        rho_lo, rho_hi = proof.spectral_radius
        if proof.stability in ("unstable", "saddle") or (proof.n_unstable or 0) > 0:
            refuted = True
            local = Verdict.REFUTED
            witness["unstable_fixed_point"] = proof.center
            evidence.append(
                Evidence(
                    "fixed point with ρ > 1",
                    f"{proof.stability} fixed point near the centre, "
                    f"{proof.n_unstable} eigenvalue(s) proven outside the unit circle"
                    + (f" (ρ >= {rho_lo:.6g})" if rho_lo > 1 else "")
                    + ": no map contracts around it, in any norm",
                    rho_lo if rho_lo > 1 else None,
                    True,
                    trust=Trust.PROVEN,
                )
            )
        elif proof.stability == "stable":
            local = Verdict.SUPPORTED
            cert = proof.basin
            if cert is not None:
                # the region holds the ball of cert.radius around the fixed point, which lies
                # within delta of the centre: rounded down, as a certified radius must be
                radius = lo(arb(cert.radius) - arb(delta))
            if cert is not None and radius is not None and radius > 0:
                local = Verdict.PROVEN
                evidence.append(
                    Evidence(
                        "certified contraction radius",
                        f"f{'' if cert.steps == 1 else f'^{cert.steps}'} maps a region holding "
                        f"the ball of radius {radius:.3g} around the centre into itself and "
                        f"contracts on it at rate <= {cert.rate:.6g} in the norm ‖P⁻¹ ·‖₂ "
                        f"(P: {cert.norm}); every start there converges to the fixed point "
                        "(arb ball arithmetic, rounding included)",
                        radius,
                        True,
                        {
                            "rate": cert.rate,
                            "norm": cert.norm,
                            "steps": cert.steps,
                            "rho": cert.rho,
                            "spectral_radius_upper": rho_hi,
                        },
                        trust=Trust.PROVEN,
                    )
                )
            else:
                radius = None
                evidence.append(
                    Evidence(
                        "no certified contraction radius",
                        f"the fixed point is proven stable (ρ <= {rho_hi:.6g}), but no region "
                        "around it was proven invariant and contracting",
                        None,
                        False,
                    )
                )

    # (1b) a certified Lipschitz bound on the ball (rules on its token-norm range, which holds
    # the ball): below 1, Banach on the ball itself once the proven point lies near enough to
    # the centre, since ‖f(h) − c‖ <= L (‖h − c‖ + δ) + δ <= r when δ (1 + L) <= r (1 − L)
    ub: Bound | None = None
    try:
        ub = lipschitz_upper_bound(system, dom)
    except InvalidArgumentError as err:
        evidence.append(Evidence("no Lipschitz upper bound", f"none: {err}", None, False))
    if ub is not None:
        whole = bool(
            ub.certified
            and ub.value < 1
            and not refuted
            and math.isfinite(delta)
            and delta * (1 + ub.value) * (1 + 1e-12) <= r * (1 - ub.value) * (1 - 1e-12)
        )
        evidence.append(
            Evidence(
                "certified Lipschitz upper bound"
                if ub.certified
                else "Lipschitz upper bound from rules not all proven",
                f"Lip(f) <= {ub.value:.6g} on the ball (rules on its token-norm range)"
                + (
                    ": the ball is mapped into itself and contracted in the Euclidean norm"
                    if whole
                    else ""
                ),
                ub.value,
                ub.certified,
                trust=ub.trust,
            )
        )
        if whole and (radius is None or radius < r):
            radius = r
            local = Verdict.PROVEN
            evidence.append(
                Evidence(
                    "certified contraction radius",
                    f"the whole ball, radius {r:.3g}: the map sends it into itself and contracts "
                    f"on it at rate <= {ub.value:.6g} in the Euclidean norm (the certified "
                    "Lipschitz bound, Banach); every start there converges to the fixed point",
                    r,
                    True,
                    {"rate": ub.value, "norm": "euclidean", "steps": 1},
                    trust=Trust.PROVEN,
                )
            )
    proven = radius is not None and radius >= r and not refuted

    # (2) the witness search: starts in the ball, iterated. Two limits count against only when
    # each is proven and their enclosures are disjoint (a slow contraction stops its float
    # iterates farther apart than any fixed tolerance), and never against a proof.
    given = states is not None
    if states is None:
        states = dom.sample(system, n_samples, seed=seed)
    sol = solve(system, states, method="picard", max_steps=max_steps, throw=False)
    n_conv = sol.n_converged
    limits = sol.fixed_points.flatten(1)
    spread = float(torch.cdist(limits, limits).max()) if n_conv > 1 else 0.0
    apart = False
    scale = max(1.0, float(exact.norm()))
    if spread > 1e-6 * scale and not proven and traced is not None:  # proofs only when it may pay
        i, j = divmod(int(torch.cdist(limits, limits).argmax()), n_conv)
        pair = [limits[k].reshape(system.state_shape) for k in (i, j)]
        pa: Any = None
        pb: Any = None
        try:
            pa = prove_point(traced, pair[0].double().cpu(), radius_max=1.0, basin=False)
            pb = prove_point(traced, pair[1].double().cpu(), radius_max=1.0, basin=False)
        except InvalidArgumentError:
            pass
        if pa is not None and pb is not None and pa.proven and pb.proven:
            (la, ha), (lb, hb) = pa.enclosure, pb.enclosure
            apart = bool(((la > hb) | (lb > ha)).any())
        if apart:
            refuted = True
            witness.update({"fixed_point_a": pair[0], "fixed_point_b": pair[1]})
    evidence.append(
        Evidence(
            "starts in the ball",
            f"{n_conv} of {states.shape[0]} "
            + ("given starts moved into" if given else "starts sampled in")
            + f" the ball converged within {max_steps} steps"
            + (
                f", to two fixed points {spread:.3g} apart, each proven (a contraction has one)"
                if apart
                else (f", limits within {spread:.2g} of each other" if n_conv else "")
            ),
            float(n_conv),
            False,
            {"starts": int(states.shape[0]), "spread": spread},
            trust=Trust.CHECKED if apart else Trust.ESTIMATED,
        )
    )
    return ContractionVerdict(
        verdict=_ladder(refuted, proven, n_conv == states.shape[0] and n_conv > 0),
        local_verdict=local,
        evidence=tuple(evidence),
        witness=witness,
        domain=dom,
        upper_bound=ub,
    )


def _ladder(refuted: bool, proven: bool, supported: bool) -> Verdict:
    """A witness against outranks a proof (which it would contradict), a proof outranks
    sampled support."""
    if refuted:
        return Verdict.REFUTED
    if proven:
        return Verdict.PROVEN
    return Verdict.SUPPORTED if supported else Verdict.UNDETERMINED


def _into_ball(h: torch.Tensor, center: torch.Tensor, r: float) -> torch.Tensor:
    """Each state moved toward ``center`` until it lies in the ball of radius ``r``."""
    d = h - center
    n = d.flatten(1).norm(dim=1).reshape(-1, *[1] * center.ndim)
    return center + d * torch.clamp(r / torch.where(n > 0, n, torch.ones_like(n)), max=1.0)


def _batch(system: LoopedSystem) -> int:
    return 1 if system.x is None or not system.driven else int(system.x.shape[0])


def _into(h: torch.Tensor, dom: Domain) -> torch.Tensor:
    """Every token moved along its ray so that its norm lies in ``[r_min, r_max]`` (on a sphere,
    the radial projection ``π`` onto it); a zero token stays zero."""
    tok = h.norm(dim=-1, keepdim=True)
    if dom.r_min == dom.r_max:
        # a constant, not a clamp: clamp's derivative at its bound is 1, and π's radial one is 0
        return h * (dom.r_min / torch.where(tok > 0, tok, torch.ones_like(tok)))
    target = torch.clamp(tok, min=dom.r_min, max=dom.r_max)
    return h * (target / torch.where(tok > 0, tok, torch.ones_like(tok)))


def _slack(h: torch.Tensor, dom: Domain, rel: float) -> float:
    """Distance from the domain that counts as on it: ``rel`` times the token scale."""
    scale = dom.r_max if math.isfinite(dom.r_max) else float(h.norm(dim=-1).max())
    return rel * max(1.0, scale)


def _inside(h: torch.Tensor, dom: Domain, slack: float) -> bool:
    """Whether every token of ``h`` has its norm in ``[r_min, r_max]`` up to ``slack``."""
    tok = h.norm(dim=-1)
    return bool(((tok >= dom.r_min - slack) & (tok <= dom.r_max + slack)).all())


def _along(system: LoopedSystem, dom: Domain) -> LoopedSystem:
    """``f∘π``, ``π`` the radial projection onto the sphere ``dom``: equal to ``f`` on the
    sphere, with Jacobian ``J·P`` there (``P`` the projector onto its tangent space), and with
    the same fixed points on it."""
    step = system._step_unchecked

    def fn(h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return step(_into(h, dom), x)

    return LoopedSystem(
        fn,
        system.state_shape,
        system.x,
        driven=system.driven,
        name=f"{system.name} along {dom!r}",
        dtype=system.dtype,
        device=system.device,
    )


def _off_by(h: torch.Tensor, dom: Domain) -> float:
    """How far the farthest token of ``h`` is from the domain, relative to the token scale."""
    tok = h.norm(dim=-1)
    gap = torch.clamp(torch.maximum(dom.r_min - tok, tok - dom.r_max), min=0.0)
    return float(gap.max()) / _slack(h, dom, 1.0)


def _on_domain(
    system: LoopedSystem, found: FixedPointSet, dom: Domain, *, projected: bool
) -> tuple[list[FixedPoint], list[Continuum], list[float]]:
    """The fixed points and continua of ``found`` that lie on the domain, and the relative
    distances from it of those set aside.

    On the domain means within ``10·tol`` of it (relative to the token scale: the accuracy of a
    converged point, whose residual is at most ``tol·(1 + ‖h‖)``). With ``projected`` (a sphere,
    searched as ``f∘π``), each point is moved onto the sphere and kept only when it is a fixed
    point of ``f`` itself there, to the search's tolerance (its residual is then ``f``'s there).
    """
    if dom.r_min == 0 and dom.r_max == math.inf:
        return list(found.points), list(found.continua), []
    rel = 10 * found.tol

    def keep(h: torch.Tensor, b: int) -> tuple[torch.Tensor, float] | None:
        if _off_by(h, dom) > rel:
            return None
        if not projected:
            return h, math.nan
        h = _into(h, dom)
        sub = (
            system
            if not system.driven or system.x is None
            else system.with_input(system.x[b : b + 1])
        )
        with torch.no_grad():
            res = float((sub.step(h[None])[0] - h).norm())
        return (h, res) if res <= found.tol * (1 + float(h.norm())) else None

    points: list[FixedPoint] = []
    off: list[float] = []
    for p in found.points:
        kept_p = keep(p.state, p.input_index)
        if kept_p is None:
            off.append(_off_by(p.state, dom))
            continue
        h, res = kept_p
        points.append(dataclasses.replace(p, state=h, residual=res) if projected else p)
    continua: list[Continuum] = []
    for c in found.continua:
        kept = [k[0] for k in (keep(s, c.input_index) for s in c.samples) if k is not None]
        on = torch.stack(kept) if kept else c.samples[:0]
        if len(kept) >= 2 and float(torch.cdist(on.flatten(1), on.flatten(1)).max()) > max(
            found.dedup_tol, _slack(on, dom, rel)
        ):
            continua.append(dataclasses.replace(c, samples=on))
        else:
            off.append(min(_off_by(h[None], dom) for h in c.samples))
    return points, continua, off


def _expanding_pair(
    system: LoopedSystem, along: LoopedSystem, h: torch.Tensor, dom: Domain, seed: int
) -> dict[str, Any] | None:
    """Two states of the domain near ``h`` whose images are farther apart than they are (or None).

    The direction is the top right singular vector of ``∂f/∂h`` along the domain (of ``along``)
    at ``h``; it need not be exact, since the pair is moved into the domain, checked to lie in it
    up to rounding, and checked to expand by evaluating the map itself.
    """
    from ._spectral import spectral_norm

    x = system.x[:1] if (system.driven and system.x is not None) else None
    one = system if x is None else system.with_input(x)
    one_along = along if x is None else along.with_input(x)
    a = _into(h.to(system.dtype), dom)
    z = one.flatten(a)
    est = spectral_norm(one_along, a, tol=1e-8, seed=seed, throw=False)
    v = est.vectors["right"]
    eps = torch.finfo(system.dtype).eps
    scale = max(1.0, float(z.norm()))
    slack = _slack(a, dom, 1e2 * eps)
    for step in (1e-4, 1e-5, 1e-3, 1e-6):
        for sign in (1.0, -1.0):
            b = _into(one.unflatten(z + sign * step * scale * v), dom)
            dist = float((a - b).norm())
            if dist == 0 or not (_inside(a, dom, slack) and _inside(b, dom, slack)):
                continue
            with torch.no_grad():
                fa, fb = one.step(a), one.step(b)
            ratio = float((fa - fb).norm()) / dist
            # a witness must expand by more than the rounding of the two steps can explain: that
            # is relative to the images' size, so over a short distance it is not small
            size = float(fa.norm() + fb.norm() + a.norm() + b.norm())
            if ratio > 1 + 1e3 * eps * (1 + size / dist):
                return {"a": a[0], "b": b[0], "ratio": ratio}
    return None
