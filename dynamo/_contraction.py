"""Is the looped map a contraction? A verdict with its evidence: proven, supported, or refuted."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import torch

from ._fixed_points import find_fixed_points
from ._linearize import jacobian
from ._lipschitz import Domain, lipschitz_lower_bound, lipschitz_upper_bound
from ._results import _plain
from ._system import LoopedSystem
from ._validate import call_form, check_positive_int
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

    PROVEN = ("proven", "a certified bound or certificate shows contraction")
    REFUTED = ("refuted", "a checked witness shows the map is not a contraction")
    SUPPORTED = ("supported", "sampled evidence only: no witness against, no proof for")
    UNDETERMINED = ("undetermined", "no evidence either way")

    def __init__(self, label: str, message: str) -> None:
        self.label = label
        self.message = message

    def __str__(self) -> str:
        return self.label.upper()


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: what was checked, the numbers, and whether it is certified.

    Examples
    --------
    :func:`check_contraction` returns them in :attr:`ContractionVerdict.evidence`:

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
    >>> v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    >>> e = v.evidence[0]
    >>> e.kind, round(e.value, 6), e.certified
    ('certified Lipschitz upper bound', 0.5, True)
    """

    kind: str
    claim: str
    value: float | None
    certified: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
        >>> v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
        >>> d = v.evidence[1].to_dict()
        >>> sorted(d), d["certified"]
        (['certified', 'claim', 'details', 'kind', 'value'], False)
        """
        v = self.value
        return {
            "kind": self.kind,
            "claim": self.claim,
            "value": None if v is None or not math.isfinite(v) else v,
            "certified": self.certified,
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
        everywhere in it), REFUTED (a witness: two states whose images are farther apart, a fixed
        point with ρ > 1, or two distinct fixed points for one input), SUPPORTED (every sampled
        local ‖J‖₂ below 1 and no witness), UNDETERMINED.
    local_verdict : Verdict
        About the fixed points found: PROVEN when a discrete Lyapunov certificate
        ``JᵀPJ ⪯ λ²P`` with ``λ < 1``, ``P ≻ 0`` checks at every one (local contraction in the
        ``P``-norm), REFUTED when one has ρ > 1, UNDETERMINED when none was found.
    evidence : tuple of Evidence
    witness : dict
        The refuting witness (``"a"``, ``"b"`` states with their images' distance, or a fixed
        point), re-checkable by evaluating the map.
    domain : Domain or None

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
            "local_verdict": self.local_verdict.label.upper(),
            "evidence": [e.to_dict() for e in self.evidence],
            "witness": wit,
            "domain": None if self.domain is None else self.domain.to_dict(),
        }

    def __str__(self) -> str:
        lines = [f"contraction: {self.verdict} (local: {self.local_verdict})"]
        for e in self.evidence:
            tag = "certified" if e.certified else "sampled"
            val = "" if e.value is None else f" = {e.value:.6g}"
            lines.append(f"  [{tag}] {e.kind}{val}: {e.claim}")
        return "\n".join(lines)


def lyapunov_certificate(J: torch.Tensor, rate: float | None = None) -> dict[str, Any]:
    """A discrete Lyapunov certificate ``JᵀPJ ⪯ λ²P``, ``P ≻ 0``, for one Jacobian ``J`` (dense).

    With ``λ = (ρ(J) + 1)/2`` (or ``rate``) and ``A = J/λ``, ``P`` solves ``AᵀPA − P = −I``
    (``scipy.linalg.solve_discrete_lyapunov``), which has a positive definite solution exactly when
    ``ρ(A) < 1``. Then ``λ²P − JᵀPJ = λ² I ≻ 0``, and the map's linearisation contracts at rate λ in
    the norm ``‖v‖_P = √(vᵀPv)``. Both conditions are re-checked numerically on the returned ``P``.

    Returns
    -------
    dict
        ``ok`` (bool), ``rate`` λ, ``min_eig_P``, ``min_eig_gap`` (smallest eigenvalue of
        ``λ²P − JᵀPJ``), ``cond_P``.

    Examples
    --------
    >>> import torch
    >>> from dynamo import lyapunov_certificate
    >>> J = torch.tensor([[0.5, 10.0], [0.0, 0.5]], dtype=torch.float64)  # ‖J‖₂ ≈ 10, ρ = 0.5
    >>> cert = lyapunov_certificate(J)
    >>> cert["ok"], cert["rate"]
    (True, 0.75)
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
    """Decide, with evidence, whether the looped map contracts.

    In order: (1) a certified Lipschitz upper bound on ``domain`` (:func:`lipschitz_upper_bound`)
    with the image of the domain checked to lie inside it; below 1, that is a proof (Banach);
    (2) a search for witnesses against: gradient ascent on the local ``‖J‖₂`` from sampled states
    (a state with ``σ_max > 1`` gives two nearby states whose images are farther apart, checked by
    evaluating the map), and a multi-start fixed-point search (two distinct fixed points for one
    input, or one with ρ > 1); (3) a discrete Lyapunov certificate at every fixed point found
    (dense, ``n <= dense_limit``) for the local verdict. A witness overrides sampled support; a
    proof is never inferred from samples.

    Parameters
    ----------
    system : LoopedSystem
    domain : Domain, optional
        Where the global claim is made; default: everywhere (then only maps with global rules can
        be proven). States are sampled from it.
    states : torch.Tensor, optional
        States to start the witness search from (default: sampled from the domain, or from the
        system's start distribution).
    n_samples, ascent_steps : int
        Witness search size.
    n_starts : int
        Starts per input of the fixed-point search.
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
    <Verdict.PROVEN: ('proven', 'a certified bound or certificate shows contraction')>
    >>> henon = dy.LoopedSystem.from_module(dy.models.Henon())
    >>> str(dy.check_contraction(henon, dy.Domain.ball(1.0)).verdict)
    'REFUTED'
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
    dom = domain if domain is not None else Domain()
    evidence: list[Evidence] = []
    witness: dict[str, Any] = {}

    # (1) certified global bound
    proven = False
    try:
        ub = lipschitz_upper_bound(system, dom)
        lo, hi = ub.out_norms if ub.out_norms is not None else (0.0, math.inf)
        # leaning inward: an image that only rounds into the domain is not inside it
        invariant = lo * (1 - 1e-12) >= dom.r_min and hi * (1 + 1e-12) <= dom.r_max
        evidence.append(
            Evidence(
                "certified Lipschitz upper bound",
                f"Lip(f) <= {ub.value:.6g} on {dom!r}; the image's "
                f"token norms lie in [{lo:.4g}, {hi:.4g}]"
                + (" (inside the domain)" if invariant else " (not inside the domain)"),
                ub.value,
                True,
                {"out_norms": [lo, hi]},
            )
        )
        proven = ub.value < 1 and invariant
    except InvalidArgumentError as err:
        evidence.append(Evidence("certified Lipschitz upper bound", f"none: {err}", None, True))

    # (2) witnesses against
    if states is None:
        if dom.r_max < math.inf or dom.r_min > 0:
            states = dom.sample(system, n_samples, seed=seed)
        else:
            states = system.initial_states(
                "normal", max(1, n_samples // max(1, _batch(system))), seed=seed
            )
    x1 = (
        system
        if system.x is None or not system.driven
        else system.with_input(system.x[:1].expand(states.shape[0], *system.x.shape[1:]))
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
            f"max over {low.n_evaluated} evaluations",
            low.value,
            False,
        )
    )
    refuted = False
    if low.value > 1 and low.witness is not None:
        pair = _expanding_pair(x1, low.witness, seed)
        if pair is not None:
            refuted = True
            witness.update(pair)
            evidence.append(
                Evidence(
                    "expanding pair",
                    f"‖f(a) − f(b)‖ / ‖a − b‖ = {pair['ratio']:.6g} > 1, "
                    "checked by evaluating the map",
                    pair["ratio"],
                    False,
                )
            )
    found = find_fixed_points(
        system,
        n_starts,
        mode="all",
        seed=seed,
        qmin_steps=0,
        max_steps=max_steps,
        newton_steps=max(10, max_steps // 15),
        dense_limit=dense_limit,
    )
    for b in range(found.n_inputs):
        pts = found.for_input(b)
        if len(pts) >= 2 or any(c.input_index == b for c in found.continua):
            refuted = True
            if "fixed_point_a" not in witness and len(pts) >= 2:
                witness.update(
                    {"fixed_point_a": pts[0].state, "fixed_point_b": pts[1].state, "input_index": b}
                )
            evidence.append(
                Evidence(
                    "two fixed points for one input",
                    f"input {b}: {len(pts)} isolated fixed points"
                    + (
                        ", and a continuum"
                        if any(c.input_index == b for c in found.continua)
                        else ""
                    )
                    + " (a contraction has exactly one)",
                    float(len(pts)),
                    False,
                )
            )
            break
    unstable = [p for p in found.points if p.spectral_radius > 1]
    if unstable:
        refuted = True
        worst = max(unstable, key=lambda p: p.spectral_radius)
        witness.setdefault("unstable_fixed_point", worst.state)
        witness.setdefault("unstable_input_index", worst.input_index)
        evidence.append(
            Evidence(
                "fixed point with ρ > 1",
                f"ρ(∂f/∂h) = {worst.spectral_radius:.6g} at a fixed point "
                f"(residual {worst.residual:.1e})",
                worst.spectral_radius,
                False,
            )
        )

    # (3) local certificates at the fixed points found
    local = Verdict.UNDETERMINED
    if found.points:
        if unstable:
            local = Verdict.REFUTED
        elif system.state_dim <= dense_limit:
            certs = []
            for p in found.points:
                sub = (
                    system
                    if not system.driven or system.x is None
                    else system.with_input(system.x[p.input_index : p.input_index + 1])
                )
                certs.append(lyapunov_certificate(jacobian(sub, p.state[None])[0]))
            if all(c["ok"] for c in certs):
                rate_max = max(c["rate"] for c in certs)
                local = Verdict.PROVEN
                evidence.append(
                    Evidence(
                        "discrete Lyapunov certificate",
                        f"JᵀPJ ⪯ λ²P with P ≻ 0 at all "
                        f"{len(certs)} fixed points found, λ up to {rate_max:.4g}",
                        max(c["rate"] for c in certs),
                        True,
                        {"cond_P_max": max(c["cond_P"] for c in certs)},
                    )
                )
            else:
                local = Verdict.REFUTED if unstable else Verdict.UNDETERMINED
        else:
            local = Verdict.SUPPORTED if all(p.spectral_radius < 1 for p in found.points) else local

    if refuted:
        verdict = Verdict.REFUTED
    elif proven:
        verdict = Verdict.PROVEN
    elif low.value < 1:
        verdict = Verdict.SUPPORTED
    else:
        verdict = Verdict.UNDETERMINED
    return ContractionVerdict(
        verdict=verdict,
        local_verdict=local,
        evidence=tuple(evidence),
        witness=witness,
        domain=domain,
    )


def _batch(system: LoopedSystem) -> int:
    return 1 if system.x is None or not system.driven else int(system.x.shape[0])


def _expanding_pair(system: LoopedSystem, h: torch.Tensor, seed: int) -> dict[str, Any] | None:
    """Two states near ``h`` whose images are farther apart than they are (or None).

    The direction is the top right singular vector of ``∂f/∂h`` at ``h``; it need not be exact,
    since the pair is checked by evaluating the map.
    """
    from ._spectral import spectral_norm

    x = system.x[:1] if (system.driven and system.x is not None) else None
    one = system if x is None else system.with_input(x)
    z = one.flatten(h.to(system.dtype))
    est = spectral_norm(one, h.to(system.dtype), tol=1e-8, seed=seed, throw=False)
    v = est.vectors["right"]
    scale = max(1.0, float(z.norm()))
    for eps in (1e-4, 1e-5, 1e-3, 1e-6):
        a = h.to(system.dtype)
        b = one.unflatten(z + eps * scale * v)
        with torch.no_grad():
            fa, fb = one.step(a), one.step(b)
        ratio = float((fa - fb).norm() / (a - b).norm())
        # a witness must expand by more than the rounding of the two steps can explain
        if ratio > 1 + 1e3 * torch.finfo(system.dtype).eps:
            return {"a": a[0], "b": b[0], "ratio": ratio}
    return None
