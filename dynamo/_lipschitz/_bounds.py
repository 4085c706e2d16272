"""The results of the Lipschitz verbs: the :class:`Domain` a bound holds on, each rule applied
(:class:`BoundStep`) and the :class:`Bound` itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .._results import Trust, _finite_or_none
from .._system import LoopedSystem
from .._validate import check_positive_int
from ..errors import InvalidArgumentError

__all__ = ["Bound", "BoundStep", "Domain"]


@dataclass(frozen=True)
class Domain:
    """A set of states (and inputs) on which a certified bound holds.

    Every token (the last axis of the state; the whole vector for a state of shape ``(n,)``) has
    norm in ``[r_min, r_max]``; for a driven map every input token has norm in ``[x_min, x_max]``.
    Outer RMS normalization puts every token on the sphere of radius ``√d · |γ|``, so
    ``Domain.sphere(√d)`` is the natural domain of such blocks.

    Parameters
    ----------
    r_min, r_max : float
        Token-norm range of the state, ``0 <= r_min <= r_max`` (``r_max`` may be ``inf``).
    x_min, x_max : float or None
        Token-norm range of the input; None when the map is autonomous or the bound must not
        depend on the input.
    n_tokens : int or None
        Sequence length ``T``, needed by attention rules when the bound is asked of a bare module
        (a :class:`~dynamo.LoopedSystem` knows it).
    center, radius : torch.Tensor and float, or None
        A ball around a state (:meth:`ball` with two arguments): the states within Euclidean
        distance ``radius`` of ``center`` (the whole state, every token together). ``r_min`` and
        ``r_max`` then hold the token-norm range of that ball, rounded outward, so that every
        token-norm rule stays sound on it.

    Examples
    --------
    >>> from dynamo import Domain
    >>> Domain.sphere(8.0, x_max=10.0)
    Domain(token norm in [8, 8], input token norm in [0, 10])
    """

    r_min: float = 0.0
    r_max: float = math.inf
    x_min: float = 0.0
    x_max: float | None = None
    n_tokens: int | None = None
    center: torch.Tensor | None = field(default=None, compare=False, repr=False)
    radius: float | None = None

    def __post_init__(self) -> None:
        call = "Domain(...)"
        for name in ("r_min", "x_min"):
            v = getattr(self, name)
            if (
                not isinstance(v, (int, float))
                or isinstance(v, bool)
                or not math.isfinite(v)
                or v < 0
            ):
                raise InvalidArgumentError(
                    f"{call}: {name} must be a finite number >= 0, got {v!r}"
                )
        if (
            not isinstance(self.r_max, (int, float))
            or math.isnan(self.r_max)
            or self.r_max < self.r_min
        ):
            raise InvalidArgumentError(
                f"{call}: r_max must be >= r_min={self.r_min}, got {self.r_max!r}"
            )
        if self.x_max is not None and (math.isnan(self.x_max) or self.x_max < self.x_min):
            raise InvalidArgumentError(
                f"{call}: x_max must be >= x_min={self.x_min}, got {self.x_max!r}"
            )
        if self.n_tokens is not None:
            check_positive_int(call, "n_tokens", self.n_tokens)
        if (self.center is None) != (self.radius is None):
            raise InvalidArgumentError(
                f"{call}: center and radius go together (Domain.ball(center, radius))"
            )
        if self.center is not None:
            if not isinstance(self.center, torch.Tensor) or self.center.numel() == 0:
                raise InvalidArgumentError(
                    f"{call}: center must be a non-empty tensor (a state), got "
                    f"{type(self.center).__name__}"
                )
            if not bool(torch.isfinite(self.center).all()):
                raise InvalidArgumentError(f"{call}: center has non-finite entries")
            r = self.radius
            if (
                not isinstance(r, (int, float))
                or isinstance(r, bool)
                or not math.isfinite(r)
                or r <= 0
            ):
                raise InvalidArgumentError(f"{call}: radius must be finite and > 0, got {r!r}")
            # kept in float64 on the CPU (a proof is about the exact centre given), and the
            # token-norm range must hold the ball: every rule applied on the domain sees that range
            c = self.center.detach().to(torch.float64).cpu().clone()
            object.__setattr__(self, "center", c)
            lo, hi = _ball_token_range(c, float(r))
            if self.r_min > lo or self.r_max < hi:
                raise InvalidArgumentError(
                    f"{call}: the token-norm range [{self.r_min:g}, {self.r_max:g}] does not hold "
                    f"the ball of radius {r:g} around the center (its tokens' norms lie in "
                    f"[{lo:g}, {hi:g}]); build it with Domain.ball(center, radius)"
                )

    @classmethod
    def sphere(cls, radius: float, **kw: Any) -> Domain:
        """Every state token on the sphere of this radius."""
        return cls(r_min=radius, r_max=radius, **kw)

    @classmethod
    def ball(cls, a: float | torch.Tensor, b: float | None = None, /, **kw: Any) -> Domain:
        """``Domain.ball(r)``: every state token in the ball of radius ``r`` around 0.
        ``Domain.ball(center, r)``: every state within Euclidean distance ``r`` of the state
        ``center`` (the whole state), a neighbourhood of a fixed point for a local certificate
        (:func:`~dynamo.check_contraction`).

        >>> import torch
        >>> from dynamo import Domain
        >>> Domain.ball(2.0)
        Domain(token norm in [0, 2])
        >>> Domain.ball(torch.tensor([[3.0, 4.0], [0.0, 1.0]]), 0.5)
        Domain(ball of radius 0.5 around a state of shape (2, 2); token norm in [0.5, 5.5])
        """
        if b is None:
            if isinstance(a, torch.Tensor):
                raise InvalidArgumentError(
                    "Domain.ball(center, radius): the radius is missing (Domain.ball(r) alone "
                    "takes a number)"
                )
            return cls(r_min=0.0, r_max=a, **kw)
        if not isinstance(a, torch.Tensor):
            raise InvalidArgumentError(
                f"Domain.ball(center, radius): center must be a tensor (a state), got "
                f"{type(a).__name__}"
            )
        c = a.detach().to(torch.float64).cpu()  # the constructor keeps its own copy
        if not bool(torch.isfinite(c).all()):
            raise InvalidArgumentError("Domain.ball(center, radius): center has non-finite entries")
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not math.isfinite(b) or b <= 0:
            raise InvalidArgumentError(
                f"Domain.ball(center, radius): radius must be finite and > 0, got {b!r}"
            )
        r_min, r_max = _ball_token_range(c, float(b))
        return cls(r_min=r_min, r_max=r_max, center=c, radius=float(b), **kw)

    @classmethod
    def shell(cls, r_min: float, r_max: float, **kw: Any) -> Domain:
        """Every state token's norm in ``[r_min, r_max]``."""
        return cls(r_min=r_min, r_max=r_max, **kw)

    def sample(self, system: LoopedSystem, n: int, *, seed: int = 0) -> torch.Tensor:
        """``n`` states of ``system`` in this domain: random token directions, token norms uniform
        in ``[r_min, r_max]`` (``[r_min, r_min + 10]`` when ``r_max`` is infinite).

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=4, n_tokens=3))
        >>> h = dy.Domain.shell(1.0, 2.0).sample(system, 5)
        >>> h.shape, bool(((h.norm(dim=-1) >= 1) & (h.norm(dim=-1) <= 2)).all())
        (torch.Size([5, 3, 4]), True)
        """
        check_positive_int("Domain.sample(system, n)", "n", n)
        gen = torch.Generator(device=system.device).manual_seed(seed)
        shape = (n, *system.state_shape)
        if self.center is not None and self.radius is not None:
            c = self.center_for(system, "Domain.sample(system, n)")
            g = torch.randn(shape, generator=gen, dtype=system.dtype, device=system.device)
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-300).reshape(n, *[1] * c.ndim)
            u = torch.rand(n, generator=gen, dtype=system.dtype, device=system.device)
            r = self.radius * u ** (1.0 / c.numel())  # uniform in the ball
            return c + g * r.reshape(n, *[1] * c.ndim)
        h = torch.randn(shape, generator=gen, dtype=system.dtype, device=system.device)
        hi = self.r_max if math.isfinite(self.r_max) else self.r_min + 10.0
        u = torch.rand(*shape[:-1], 1, generator=gen, dtype=system.dtype, device=system.device)
        radius = self.r_min + (hi - self.r_min) * u
        return h / h.norm(dim=-1, keepdim=True) * radius

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Domain):
            return NotImplemented
        fields = ("r_min", "r_max", "x_min", "x_max", "n_tokens", "radius")
        if any(getattr(self, f) != getattr(other, f) for f in fields):
            return False
        if self.center is None or other.center is None:
            return self.center is None and other.center is None
        return self.center.shape == other.center.shape and bool(
            torch.equal(self.center, other.center)
        )

    def __hash__(self) -> int:  # equal domains hash alike; the center is left out (a tensor)
        return hash((self.r_min, self.r_max, self.x_min, self.x_max, self.n_tokens, self.radius))

    def center_for(self, system: LoopedSystem, call: str) -> torch.Tensor:
        """The centre as a state of ``system`` (its dtype and device); an error that names the
        shapes when it is not one.

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> dy.Domain.ball(torch.tensor([1.0]), 0.3).center_for(system, "f(...)")
        tensor([1.], dtype=torch.float64)
        """
        if self.center is None:
            raise InvalidArgumentError(f"{call}: the domain has no center")
        if tuple(self.center.shape) != tuple(system.state_shape):
            raise InvalidArgumentError(
                f"{call}: the domain's center has shape {tuple(self.center.shape)}, but the "
                f"system's states have shape {tuple(system.state_shape)}"
            )
        return self.center.to(dtype=system.dtype, device=system.device)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (an infinite ``r_max`` becomes None; a ball's center becomes a nested list).

        Examples
        --------
        >>> from dynamo import Domain
        >>> Domain.shell(1.0, 3.0).to_dict()
        {'r_min': 1.0, 'r_max': 3.0, 'x_min': 0.0, 'x_max': None, 'n_tokens': None}
        >>> Domain().to_dict()["r_max"] is None  # unbounded
        True
        """
        out: dict[str, Any] = {
            "r_min": self.r_min,
            "r_max": None if math.isinf(self.r_max) else self.r_max,
            "x_min": self.x_min,
            "x_max": self.x_max,
            "n_tokens": self.n_tokens,
        }
        if self.center is not None:
            out["center"] = self.center.tolist()
            out["radius"] = self.radius
        return out

    def __repr__(self) -> str:
        text = f"token norm in [{self.r_min:g}, {self.r_max:g}]"
        if self.center is not None:
            text = (
                f"ball of radius {self.radius:g} around a state of shape "
                f"{tuple(self.center.shape)}; {text}"
            )
        if self.x_max is not None:
            text += f", input token norm in [{self.x_min:g}, {self.x_max:g}]"
        if self.n_tokens is not None:
            text += f", {self.n_tokens} tokens"
        return f"Domain({text})"


@dataclass(frozen=True)
class BoundStep:
    """One rule applied: where, which rule, its factor, the token-norm interval after it, the
    claims (``dynamo prove R1`` …) whose derivations the factor rests on, and the rule's trust
    (PROVEN for dynamo's own rules; what its author declared for a registered one).

    Examples
    --------
    :func:`lipschitz_upper_bound` returns them in :attr:`Bound.steps`:

    >>> import dynamo as dy
    >>> norm = dy.models.ZeroBranchRMSNorm(d=4)
    >>> bound = dy.lipschitz_upper_bound(norm, dy.Domain.shell(1.0, 3.0))
    >>> step = bound.steps[0]
    >>> step.rule, step.factor, step.norms, step.claims
    ('RMSNorm', 2.0, (2.0, 2.0), 'R5, R8')
    """

    where: str
    rule: str
    factor: float
    norms: tuple[float, float]
    note: str = ""
    claims: str = ""
    trust: Trust = Trust.PROVEN

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import dynamo as dy
        >>> norm = dy.models.ZeroBranchRMSNorm(d=4)
        >>> bound = dy.lipschitz_upper_bound(norm, dy.Domain.shell(1.0, 3.0))
        >>> d = bound.steps[0].to_dict()
        >>> sorted(d)
        ['claims', 'factor', 'norms', 'note', 'rule', 'trust', 'where']
        >>> d["where"], d["norms"], d["note"]
        ('norm', [2.0, 2.0], 'input token norm >= 1, d=4, eps=0')
        """
        return {
            "where": self.where,
            "rule": self.rule,
            "claims": self.claims,
            "factor": _finite_or_none(self.factor),
            "norms": [_finite_or_none(self.norms[0]), _finite_or_none(self.norms[1])],
            "note": self.note,
            "trust": Trust(self.trust).value,
        }


@dataclass(frozen=True)
class Bound:
    """A bound on the Lipschitz constant of ``h ↦ f(h, x)`` (Euclidean norm of the flat state).

    Attributes
    ----------
    kind : {"upper", "lower"}
    value : float
    certified : bool
        True only for upper bounds composed on ``domain`` from rules that are all PROVEN
        (dynamo's own rules are; see :attr:`trust`). A lower bound is
        ``‖J‖₂`` at ``witness`` (up to rounding): an estimate of the constant, and a lower bound of
        it on any set with the witness in the closure of its interior.
    method : str
        ``"rules"`` (registered rules of the block's types), ``"graph"`` (rules composed along
        the block's graph traced by ``torch.fx``), ``"sampled"`` or ``"ascent"``.
    domain : Domain or None
        Where a certified bound holds.
    steps : tuple of BoundStep
        The derivation, in the order the rules were applied (upper bounds).
    witness : torch.Tensor or None
        The state of largest ``‖J‖₂`` (lower bounds), ``(1, *state_shape)``.
    n_evaluated : int
        States at which ``‖J‖₂`` was evaluated (lower bounds).
    local_values : torch.Tensor or None
        The local ``‖J‖₂`` at each final state (lower bounds).
    out_norms : (float, float) or None
        A sound interval for every output token's norm over the domain (upper bounds): the map
        sends the domain into itself when this lies inside ``[r_min, r_max]``.
    inputs : str or None
        For a driven map, which inputs the bound covers: every input in the domain's range, or
        (a domain without one, on a system) the system's own inputs.

    Examples
    --------
    :func:`lipschitz_upper_bound` and :func:`lipschitz_lower_bound` return one:

    >>> import dynamo as dy
    >>> norm = dy.models.ZeroBranchRMSNorm(d=4)
    >>> bound = dy.lipschitz_upper_bound(norm, dy.Domain.shell(1.0, 3.0))
    >>> bound.kind, bound.value, bound.certified, bound.method
    ('upper', 2.0, True, 'rules')
    >>> str(bound).splitlines()[0]
    'Lipschitz upper bound 2 (certified, rules) on Domain(token norm in [1, 3])'
    """

    kind: str
    value: float
    certified: bool
    method: str
    domain: Domain | None = None
    steps: tuple[BoundStep, ...] = ()
    witness: torch.Tensor | None = None
    n_evaluated: int = 0
    local_values: torch.Tensor | None = field(default=None, repr=False)
    out_norms: tuple[float, float] | None = None
    inputs: str | None = None

    @property
    def trust(self) -> Trust:
        """PROVEN for a certified upper bound (rules proved in theory/, rounding bounded
        outward), ESTIMATED for a lower bound found by sampling or ascent; an upper bound that
        uses a registered rule declared CHECKED or ESTIMATED has the weakest of its steps'.

        >>> import dynamo as dy
        >>> dy.lipschitz_upper_bound(dy.models.ZeroBranchRMSNorm(d=4),
        ...                          dy.Domain.shell(1.0, 3.0)).trust.value
        'proven'
        """
        if self.certified:
            return Trust.PROVEN
        if self.kind == "upper" and self.steps:  # rests on a registered rule that is not proven
            return Trust.weakest(s.trust for s in self.steps)
        return Trust.ESTIMATED

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the witness state is left out; its norm is kept).

        Examples
        --------
        >>> import dynamo as dy
        >>> norm = dy.models.ZeroBranchRMSNorm(d=4)
        >>> bound = dy.lipschitz_upper_bound(norm, dy.Domain.shell(1.0, 3.0))
        >>> d = bound.to_dict()
        >>> d["value"], d["domain"]["r_max"], len(d["steps"]), d["witness_norm"]
        (2.0, 3.0, 1, None)
        """
        return {
            "kind": self.kind,
            "value": _finite_or_none(self.value),
            "certified": self.certified,
            "trust": self.trust.value,
            "method": self.method,
            "domain": None if self.domain is None else self.domain.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "witness_norm": None if self.witness is None else float(self.witness.norm()),
            "n_evaluated": self.n_evaluated,
            "inputs": self.inputs,
        }

    def __str__(self) -> str:
        label = self.trust.word
        head = f"Lipschitz {self.kind} bound {self.value:.6g} ({label}, {self.method})"
        if self.domain is not None:
            head += f" on {self.domain!r}"
        if self.inputs is not None:
            head += f", for {self.inputs}"
        if self.kind == "lower":
            head += f", largest of {self.n_evaluated} local ‖J‖₂"
        lines = [head]
        for s in self.steps:
            note = f"  [{s.note}]" if s.note else ""
            note += f"  (claims {s.claims})" if s.claims else ""
            if Trust(s.trust) is not Trust.PROVEN:  # a registered rule that is not proven
                note += f"  [rule {Trust(s.trust).value}, not proven]"
            lines.append(
                f"  {s.where:<28s} {s.rule:<22s} × {s.factor:<10.4g} norms [{s.norms[0]:.4g}, "
                f"{s.norms[1]:.4g}]{note}"
            )
        return "\n".join(lines)


def _ball_token_range(c: torch.Tensor, r: float) -> tuple[float, float]:
    """The range of token norms over the Euclidean ball of radius ``r`` around ``c``, outward:
    a token's norm moves by at most ``r``, and the float norms get a relative slack of
    ``(d + 4)`` ulps for the rounding of their sums of squares."""
    tok = c.norm(dim=-1) if c.ndim else c.abs()
    d = c.shape[-1] if c.ndim else 1
    slack = (d + 4) * 2.0**-52
    lo = max(0.0, math.nextafter(float(tok.min()) * (1 - slack) - r, -math.inf))
    hi = math.nextafter(float(tok.max()) * (1 + slack) + r, math.inf)
    return lo, hi
