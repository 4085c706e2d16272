"""Lipschitz constants of looped maps: sampled lower bounds and certified upper bounds.

Two kinds, two meanings:

* :func:`lipschitz_lower_bound` evaluates ``‖∂f/∂h‖₂`` at states (given, or found by gradient
  ascent) and reports the largest with its witness: the Lipschitz constant on any set containing
  the witness is at least that (up to rounding). It is an **estimate** of the constant.
* :func:`lipschitz_upper_bound` composes per-layer rules into a bound that is **certified** on a
  stated :class:`Domain` (every state token's norm in ``[r_min, r_max]``, every input token's
  norm in ``[x_min, x_max]``). Each rule is written out, with its derivation, on the "Lipschitz
  bounds" docs page; a module without a rule is an error naming its type, never a silent skip.

The norm is the Euclidean norm of the flattened state. Rules track, next to the Lipschitz factor,
an interval for the norm of every token at every intermediate value (a norm layer's constant
depends on how small its input can get; attention's on how large).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._krylov import golub_kahan
from ._linearize import _flat, _prepare
from ._results import Trust, _finite_or_none
from ._system import LoopedSystem
from ._types import LowerBoundMethod
from ._validate import call_form, check_choice, check_positive_float, check_positive_int
from .errors import InvalidArgumentError
from .models._canonical import (
    Bistable,
    ContractiveTanh,
    Henon,
    Hopfield,
    LinearMap,
    Logistic,
    MonDEQ,
    ZeroBranchRMSNorm,
)
from .models._transformer import _MLP, LoopedTransformer, _Attention, _Layer, _Sublayer

__all__ = [
    "ACTIVATION_SLOPES",
    "Bound",
    "BoundStep",
    "Domain",
    "lipschitz_lower_bound",
    "lipschitz_upper_bound",
]

#: Upper bounds of ``sup |φ′|`` for elementwise activations, rounded up at the 4th decimal.
#: GELU: ``Φ(√2) + √2 φ(√2) = 1.128904…`` (exact form; the tanh form peaks at 1.128993…);
#: SiLU: ``1.099839…``; sigmoid ``1/4``; tanh, ReLU, softplus ``1``.
ACTIVATION_SLOPES: dict[type, float] = {
    nn.ReLU: 1.0,
    nn.Tanh: 1.0,
    nn.Softplus: 1.0,
    nn.Identity: 1.0,
    nn.Sigmoid: 0.25,
    nn.GELU: 1.1290,
    nn.SiLU: 1.0999,
}


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

    @classmethod
    def sphere(cls, radius: float, **kw: Any) -> Domain:
        """Every state token on the sphere of this radius."""
        return cls(r_min=radius, r_max=radius, **kw)

    @classmethod
    def ball(cls, radius: float, **kw: Any) -> Domain:
        """Every state token in the ball of this radius."""
        return cls(r_min=0.0, r_max=radius, **kw)

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
        h = torch.randn(shape, generator=gen, dtype=system.dtype, device=system.device)
        hi = self.r_max if math.isfinite(self.r_max) else self.r_min + 10.0
        u = torch.rand(*shape[:-1], 1, generator=gen, dtype=system.dtype, device=system.device)
        radius = self.r_min + (hi - self.r_min) * u
        return h / h.norm(dim=-1, keepdim=True) * radius

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (an infinite ``r_max`` becomes None).

        Examples
        --------
        >>> from dynamo import Domain
        >>> Domain.shell(1.0, 3.0).to_dict()
        {'r_min': 1.0, 'r_max': 3.0, 'x_min': 0.0, 'x_max': None, 'n_tokens': None}
        >>> Domain().to_dict()["r_max"] is None  # unbounded
        True
        """
        return {
            "r_min": self.r_min,
            "r_max": None if math.isinf(self.r_max) else self.r_max,
            "x_min": self.x_min,
            "x_max": self.x_max,
            "n_tokens": self.n_tokens,
        }

    def __repr__(self) -> str:
        text = f"token norm in [{self.r_min:g}, {self.r_max:g}]"
        if self.x_max is not None:
            text += f", input token norm in [{self.x_min:g}, {self.x_max:g}]"
        if self.n_tokens is not None:
            text += f", {self.n_tokens} tokens"
        return f"Domain({text})"


@dataclass(frozen=True)
class BoundStep:
    """One rule applied: where, which rule, its factor, the token-norm interval after it, and the
    claims (``dynamo prove R1`` …) whose checked derivations the factor rests on.

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import dynamo as dy
        >>> norm = dy.models.ZeroBranchRMSNorm(d=4)
        >>> bound = dy.lipschitz_upper_bound(norm, dy.Domain.shell(1.0, 3.0))
        >>> d = bound.steps[0].to_dict()
        >>> sorted(d)
        ['claims', 'factor', 'norms', 'note', 'rule', 'where']
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
        }


@dataclass(frozen=True)
class Bound:
    """A bound on the Lipschitz constant of ``h ↦ f(h, x)`` (Euclidean norm of the flat state).

    Attributes
    ----------
    kind : {"upper", "lower"}
    value : float
    certified : bool
        True only for upper bounds composed from the written rules on ``domain``. A lower bound is
        ``‖J‖₂`` at ``witness`` (up to rounding): an estimate of the constant, and a lower bound of
        it on any set with the witness in the closure of its interior.
    method : str
        ``"rules"``, ``"sampled"`` or ``"ascent"``.
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

    @property
    def trust(self) -> Trust:
        """PROVEN for a certified upper bound (rules proved in theory/, rounding bounded
        outward), ESTIMATED for a lower bound found by sampling or ascent.

        >>> import dynamo as dy
        >>> dy.lipschitz_upper_bound(dy.models.ZeroBranchRMSNorm(d=4),
        ...                          dy.Domain.shell(1.0, 3.0)).trust.value
        'proven'
        """
        return Trust.PROVEN if self.certified else Trust.ESTIMATED

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
        }

    def __str__(self) -> str:
        label = self.trust.word
        head = f"Lipschitz {self.kind} bound {self.value:.6g} ({label}, {self.method})"
        if self.domain is not None:
            head += f" on {self.domain!r}"
        if self.kind == "lower":
            head += f", largest of {self.n_evaluated} local ‖J‖₂"
        lines = [head]
        for s in self.steps:
            note = f"  [{s.note}]" if s.note else ""
            note += f"  (claims {s.claims})" if s.claims else ""
            lines.append(
                f"  {s.where:<28s} {s.rule:<22s} × {s.factor:<10.4g} norms [{s.norms[0]:.4g}, "
                f"{s.norms[1]:.4g}]{note}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------- certified rules
_U64 = 2.0**-53  # unit roundoff of float64


def _svd_slack(w: torch.Tensor) -> float:
    """Relative slack covering a float64 SVD's error.

    A backward-stable SVD returns the exact singular values of ``A + E`` with
    ``‖E‖₂ <= p(m, n)·u·‖A‖₂``; by Weyl's inequality each computed value is within ``‖E‖₂`` of
    the true one. ``p = 16·max(m, n)`` is generous for LAPACK's one-sided methods.
    """
    return 16.0 * max(w.shape[-2:]) * _U64


def _sigma(w: torch.Tensor) -> float:
    """An upper bound on the largest singular value: the float64 SVD's value rounded outward.

    With ``γ`` the slack of :func:`_svd_slack`, ``σ <= σ̂ + γσ``, so ``σ <= σ̂/(1 − γ)``.
    """
    w = w.detach().double()
    value = float(torch.linalg.matrix_norm(w, ord=2))
    return math.nextafter(value / (1.0 - _svd_slack(w)), math.inf)


def _sigma_min(w: torch.Tensor) -> float:
    """A lower bound on the smallest singular value of a square matrix (0 for a wide or tall
    one): ``σ̂_min − γ·σ_max``, rounded down and clamped at 0."""
    w = w.detach().double()
    if w.shape[0] != w.shape[1]:
        return 0.0
    sv = torch.linalg.svdvals(w)
    gamma = _svd_slack(w)
    low = float(sv[-1]) - gamma * float(sv[0]) / (1.0 - gamma)
    return max(0.0, math.nextafter(low, -math.inf))


def _vnorm(b: torch.Tensor | None) -> float:
    return 0.0 if b is None else float(b.detach().double().norm())


class _Trace:
    """Accumulates the derivation and the running token-norm interval."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.steps: list[BoundStep] = []
        self.lip = 1.0

    def add(self, where: str, rule: str, factor: float, note: str = "") -> None:
        # a factor is a few float64 operations from exact: widen it by 8u, and round the
        # product up, so that the bound is never below the true product
        self.lip = math.nextafter(self.lip * factor * (1.0 + 8.0 * _U64), math.inf)
        self.steps.append(
            BoundStep(where, rule, factor, (self.lo, self.hi), note, _claims_for(f"{rule} {note}"))
        )


def _claims_for(rule: str) -> str:
    """The checked derivations (``dynamo prove R…``) a rule's factor rests on; every factor
    multiplies into the bound by R8 (composition)."""
    r = rule.lower()
    parts = []
    for key, name in (
        ("linear", "R1"),
        ("a h", "R1"),
        ("elementwise", "R2"),
        ("tanh", "R2"),
        ("relu", "R2"),
        ("residual", "R3"),
        ("[h; e]", "R4"),
        ("h + p e", "R4"),
        ("rmsnorm", "R5"),
        ("layernorm", "R6"),
        ("attention", "R7"),
        ("mlp", "R1, R2"),
        ("polynomial", "R8"),
    ):
        if key in r and name not in parts:
            parts.append(name)
    return ", ".join([*parts, "R8"])


def _norm_rule(
    call: str, where: str, norm: nn.Module, lo: float, hi: float
) -> tuple[float, float, float, str]:
    """(Lipschitz factor, lo', hi', note) of RMSNorm/LayerNorm on tokens with norms in [lo, hi].

    RMSNorm: ``x ↦ γ ⊙ √d x / √(‖x‖² + dε)``. With ``x̃ = (x, √(dε))``, this is ``√d`` times the
    first ``d`` coordinates of ``x̃/‖x̃‖``, and radial projection onto a ball is nonexpansive, so on
    ``{‖x‖ ≥ lo}``: ``Lip ≤ max|γ| √d / √(lo² + dε)``. LayerNorm is RMSNorm after centering
    ``x ↦ x − mean(x)``, whose image can vanish whatever ``‖x‖`` is, so ``lo`` drops to 0:
    ``Lip ≤ max|γ| / √ε``.
    """
    axes = tuple(norm.normalized_shape)  # type: ignore[arg-type]
    if len(axes) != 1:
        raise InvalidArgumentError(
            f"{call}: {type(norm).__name__} at '{where}' normalizes over the axes {axes}; the "
            "rules bound per-token norms and cover normalization over the last axis only"
        )
    if isinstance(norm, nn.RMSNorm):
        d = int(norm.normalized_shape[-1])
        # eps=None means the dtype's machine epsilon at run time. float64's is the smallest, so
        # it gives the largest Lipschitz factor and upper output norm; the lower output norm
        # lo/√(lo² + d·eps) is smallest with the largest eps of a supported dtype (float32's)
        eps = norm.eps if norm.eps is not None else torch.finfo(torch.float64).eps
        eps_lo = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
        gamma = norm.weight.detach().double().abs() if norm.weight is not None else None
        gmax = float(gamma.max()) if gamma is not None else 1.0
        gmin = float(gamma.min()) if gamma is not None else 1.0
        centred_lo = lo
        kind = "rmsnorm"
        beta_norm = 0.0
    elif isinstance(norm, nn.LayerNorm):
        d = int(norm.normalized_shape[-1])
        eps = norm.eps
        gamma = norm.weight.detach().double().abs() if norm.weight is not None else None
        gmax = float(gamma.max()) if gamma is not None else 1.0
        gmin = float(gamma.min()) if gamma is not None else 1.0
        eps_lo = eps
        centred_lo = 0.0
        kind = "layernorm"
        beta_norm = _vnorm(getattr(norm, "bias", None))
    else:  # pragma: no cover - callers dispatch on type
        raise TypeError(type(norm).__name__)
    denom2 = centred_lo**2 + d * eps
    if denom2 <= 0:
        raise InvalidArgumentError(
            f"{call}: {type(norm).__name__}(eps={eps}) at '{where}' has inputs whose token norm "
            "can reach 0 on this domain, where it is not Lipschitz: the bound does not exist "
            "there. "
            "Restrict the domain to token norms >= r_min > 0 or use eps > 0"
        )
    lip = gmax * math.sqrt(d / denom2)
    if math.isinf(hi):
        hi_out = gmax * math.sqrt(d) + beta_norm
    else:
        hi_out = gmax * math.sqrt(d) * hi / math.sqrt(hi**2 + d * eps) + beta_norm
    lo_out = (
        0.0 if kind == "layernorm" else gmin * math.sqrt(d) * lo / math.sqrt(lo**2 + d * eps_lo)
    )
    note = f"input token norm >= {centred_lo:.4g}, d={d}, eps={eps:g}"
    return lip, lo_out, hi_out, note


def _attention_rule(att: _Attention, n_tokens: int, r_hi: float) -> tuple[float, float, str]:
    """(Lipschitz factor, output token-norm bound) of dot-product attention, inputs ``‖x_j‖ ≤ R``.

    Per head, with ``M = W_Qᵀ W_K / √d_h`` (or ``‖W_Q‖‖W_K‖/√d_h`` under RoPE, whose rotations sit
    between them) and ``V = W_V`` for the head:
    ``‖J‖₂ ≤ ‖V‖ (√T + (1 + √T) R² ‖M‖)`` (the value term: ``‖P‖₂ ≤ √T`` for a row-stochastic
    ``P``; the softmax term: a weighted covariance bound ``‖Σ_j p_j (x_j − μ) a_j‖ ≤ R max|a_j|``).
    Heads stack and ``W_O`` follows: ``‖J‖ ≤ ‖W_O‖ √(Σ_h ‖J_h‖²)``. Each output token is ``W_O``
    applied to per-head convex combinations of values: ``‖y_i‖ ≤ ‖W_O‖ √(Σ_h ‖V_h‖²) R``.
    """
    dh, H = att.d_head, att.n_heads
    wq, wk, wv = (m.weight.detach().double() for m in (att.q, att.k, att.v))
    wo = att.o.weight.detach().double()
    sq_t = math.sqrt(n_tokens)
    total, vals = 0.0, 0.0
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        qh, kh, vh = wq[rows], wk[rows], wv[rows]
        if att.pos == "rope":
            m_norm = _sigma(qh) * _sigma(kh) / math.sqrt(dh)
        else:
            m_norm = _sigma(qh.T @ kh) / math.sqrt(dh)
        v_norm = _sigma(vh)
        jh = v_norm * (sq_t + (1 + sq_t) * r_hi**2 * m_norm)
        total += jh**2
        vals += v_norm**2
    o = _sigma(wo)
    lip = o * math.sqrt(total)
    out_hi = o * math.sqrt(vals) * r_hi
    return lip, out_hi, f"T={n_tokens}, R={r_hi:.4g}, {H} heads, pos={att.pos}"


def _mul(a: float, b: float) -> float:
    """Product of nonnegative bounds with ``0 · inf = 0`` (a zero map sends everything to 0)."""
    return 0.0 if a == 0 or b == 0 else a * b


def _linear_interval(
    w: torch.Tensor, b: torch.Tensor | None, lo: float, hi: float
) -> tuple[float, float]:
    s, smin, bn = _sigma(w), _sigma_min(w), _vnorm(b)
    return max(0.0, _mul(smin, lo) - bn), _mul(s, hi) + bn


def _mlp_rule(mlp: _MLP, lo: float, hi: float) -> tuple[float, float]:
    """``W₂ gelu(W₁ x + b₁) + b₂``: ``Lip ≤ ‖W₂‖ · 1.1290 · ‖W₁‖``; ``|gelu(t)| ≤ |t|``."""
    w1, w2 = mlp.up.weight, mlp.down.weight
    lip = _sigma(w2) * ACTIVATION_SLOPES[nn.GELU] * _sigma(w1)
    _, hi1 = _linear_interval(w1, mlp.up.bias, lo, hi)
    out_hi = _mul(_sigma(w2), hi1) + _vnorm(mlp.down.bias)
    return lip, out_hi


_TRANSFORMER_PARTS = (
    LoopedTransformer,
    nn.ModuleList,
    _Layer,
    _Sublayer,
    _Attention,
    _MLP,
    nn.Linear,
    nn.RMSNorm,
    nn.LayerNorm,
    nn.Embedding,
)


def _check_plain(call: str, module: nn.Module) -> None:
    """Rules read weights, not ``forward``: refuse what would make them describe another map."""
    hooks = [
        getattr(torch.nn.modules.module, name, {})
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
    ]
    if any(hooks):
        raise InvalidArgumentError(
            f"{call}: global forward hooks are registered; they change what modules compute and no "
            "rule covers them"
        )
    for name, sub in module.named_modules():
        if sub._forward_hooks or sub._forward_pre_hooks:
            raise InvalidArgumentError(
                f"{call}: {type(sub).__name__} at '{name or '<root>'}' has a forward hook, which "
                "changes what it computes; no rule covers it"
            )
    if type(module) is LoopedTransformer:
        for name, sub in module.named_modules():
            if type(sub) not in _TRANSFORMER_PARTS:
                raise InvalidArgumentError(
                    f"{call}: no Lipschitz rule for {type(sub).__name__} at '{name}' inside the "
                    "LoopedTransformer (its rules cover the reference parts only)"
                )
            if type(sub) is _Attention:
                for proj in ("q", "k", "v", "o"):
                    if getattr(sub, proj).bias is not None:
                        raise InvalidArgumentError(
                            f"{call}: the attention projection '{name}.{proj}' has a bias; the "
                            "attention rule covers bias-free projections only"
                        )


def _transformer_rule(
    call: str, model: LoopedTransformer, domain: Domain, n_tokens: int, tr: _Trace
) -> None:
    e_lo = domain.x_min
    e_hi = domain.x_max
    if model.driven and (e_hi is None or math.isinf(e_hi)):
        raise InvalidArgumentError(
            f"{call}: the block has recall='{model.recall}', so the token-norm ranges inside it "
            "depend on the input: give the input's, Domain(..., x_max=...)"
        )
    e_hi_f = 0.0 if e_hi is None else float(e_hi)
    # entry: recall
    if model.adapter is not None:
        w = model.adapter.weight.detach().double()
        d = model.d_model
        if model.recall_mode == "concat":
            ws, we = w[:, :d], w[:, d:]
            bn = _vnorm(model.adapter.bias)
            tr.lo = max(0.0, _mul(_sigma_min(ws), tr.lo) - _mul(_sigma(we), e_hi_f) - bn)
            tr.hi = _mul(_sigma(ws), tr.hi) + _mul(_sigma(we), e_hi_f) + bn
            tr.add("adapter (outer recall)", "linear [h; e]", _sigma(ws), "σ_max(W_s)")
        else:
            tr.lo = max(0.0, tr.lo - _mul(_sigma(w), e_hi_f))
            tr.hi = tr.hi + _mul(_sigma(w), e_hi_f)
            tr.add("adapter (outer recall)", "h + P e", 1.0)
    for li, layer in enumerate(model.layers):
        for name in ("attn", "mlp"):
            sub = getattr(layer, name)
            assert isinstance(sub, _Sublayer)
            _sublayer_rule(call, f"layers.{li}.{name}", sub, n_tokens, tr, e_lo, e_hi_f)
    if model.final_norm is not None:
        lip, lo, hi, note = _norm_rule(call, "final_norm", model.final_norm, tr.lo, tr.hi)
        tr.lo, tr.hi = lo, hi
        tr.add("final_norm (outer)", type(model.final_norm).__name__, lip, note)


def _sublayer_rule(
    call: str, where: str, sub: _Sublayer, n_tokens: int, tr: _Trace, e_lo: float, e_hi: float
) -> None:
    """``u ↦ N_out(u + F(N_in(r(u))))``: ``Lip ≤ L(N_out) (1 + L(r) L(N_in) L(F))``."""
    u_lo, u_hi = tr.lo, tr.hi
    branch = 1.0
    notes = []
    r_lo, r_hi = u_lo, u_hi
    if sub.rec is not None:
        w = sub.rec.weight.detach().double()
        d = w.shape[0]
        ws, we = w[:, :d], w[:, d:]
        bn = _vnorm(sub.rec.bias)
        r_lo = max(0.0, _mul(_sigma_min(ws), u_lo) - _mul(_sigma(we), e_hi) - bn)
        r_hi = _mul(_sigma(ws), u_hi) + _mul(_sigma(we), e_hi) + bn
        branch *= _sigma(ws)
        notes.append(f"recall σ(W_rec,h)={_sigma(ws):.4g}")
    if sub.n_in is not None:
        lip, r_lo, r_hi, note = _norm_rule(call, where + ".n_in", sub.n_in, r_lo, r_hi)
        branch *= lip
        notes.append(f"N_in {type(sub.n_in).__name__} ×{lip:.4g} ({note})")
    if isinstance(sub.branch, _Attention):
        att = sub.branch
        if att.pos == "absolute":
            pmax = float(att._tables["abs"][:n_tokens].norm(dim=1).max())
            r_hi = r_hi + pmax
        if math.isinf(r_hi):
            raise InvalidArgumentError(
                f"{call}: attention at '{where}' sees unbounded token norms on this domain, where "
                "dot-product attention is not Lipschitz (Kim et al. 2021); bound the domain "
                "(r_max < inf) or normalize before attention"
            )
        lip_f, f_hi, note = _attention_rule(att, n_tokens, r_hi)
        rule = "attention"
    else:
        assert isinstance(sub.branch, _MLP)
        lip_f, f_hi = _mlp_rule(sub.branch, r_lo, r_hi)
        note = "‖W₂‖ · 1.1290 · ‖W₁‖"
        rule = "mlp (gelu)"
    branch *= lip_f
    notes.append(f"F ×{lip_f:.4g} ({note})")
    tr.lo = max(0.0, u_lo - f_hi)
    tr.hi = u_hi + f_hi
    tr.add(where, f"residual + {rule}", 1.0 + branch, "; ".join(notes))
    if sub.n_out is not None:
        lip, lo, hi, note = _norm_rule(call, where + ".n_out", sub.n_out, tr.lo, tr.hi)
        tr.lo, tr.hi = lo, hi
        tr.add(where + ".n_out", type(sub.n_out).__name__, lip, note)


def _module_rule(call: str, where: str, module: nn.Module, tr: _Trace, domain: Domain) -> None:
    """Rules for generic torch modules (Linear, activations, norms, Sequential) and the canonical
    maps; anything else is an error naming its type."""
    kind = type(module)
    m: Any = module  # exact-type dispatch below; attributes read through an untyped alias
    if kind is nn.Sequential:
        for i, child in enumerate(m):
            _module_rule(call, f"{where}.{i}" if where else str(i), child, tr, domain)
        return
    if kind is nn.Linear:
        tr.lo, tr.hi = _linear_interval(m.weight, m.bias, tr.lo, tr.hi)
        tr.add(where or "linear", "linear", _sigma(m.weight), "σ_max(W)")
        return
    if kind in ACTIVATION_SLOPES:
        slope = ACTIVATION_SLOPES[kind]
        # |φ(t)| <= |t| for ReLU, tanh, GELU, SiLU (and identity); not for sigmoid/softplus
        if kind in (nn.Sigmoid, nn.Softplus):
            tr.lo, tr.hi = 0.0, math.inf
        else:
            tr.lo = 0.0
        tr.add(where or kind.__name__, f"elementwise {kind.__name__}", slope, "sup |φ′|")
        return
    if kind is nn.LeakyReLU:
        slope = max(1.0, abs(m.negative_slope))
        tr.lo, tr.hi = 0.0, _mul(slope, tr.hi)  # |φ(t)| <= max(1, |a|) |t|
        tr.add(where or "leaky_relu", "elementwise LeakyReLU", slope)
        return
    if kind in (nn.RMSNorm, nn.LayerNorm):
        lip, lo, hi, note = _norm_rule(call, where or "norm", module, tr.lo, tr.hi)
        tr.lo, tr.hi = lo, hi
        tr.add(where or "norm", type(module).__name__, lip, note)
        return
    if kind is ZeroBranchRMSNorm:
        _module_rule(call, (where + "." if where else "") + "norm", m.norm, tr, domain)
        return
    if kind is ContractiveTanh:
        tr.lo, tr.hi = 0.0, math.sqrt(m.state_shape[0])
        tr.add(where or "ContractiveTanh", "tanh(W h + ...)", _sigma(m.W), "σ_max(W) · 1")
        return
    if kind is LinearMap:
        tr.lo, tr.hi = 0.0, math.inf
        tr.add(where or "LinearMap", "A h + ...", _sigma(m.A), "σ_max(A)")
        return
    if kind is MonDEQ:
        tr.lo, tr.hi = 0.0, math.inf
        tr.add(where or "MonDEQ", "relu(W z + ...)", _sigma(m.W), "σ_max(W) · 1")
        return
    if kind is Hopfield:
        tr.lo, tr.hi = 0.0, math.sqrt(m.state_shape[0])
        tr.add(where or "Hopfield", "tanh(β W h)", m.beta * _sigma(m.W), "β σ_max(W)")
        return
    if kind in (Logistic, Henon, Bistable):
        if math.isinf(tr.hi):
            raise InvalidArgumentError(
                f"{call}: {type(module).__name__} is polynomial, not globally Lipschitz; bound the "
                "domain (r_max < inf)"
            )
        R = tr.hi  # the domain lies in the ball of radius R, which is convex
        if kind is Logistic:
            r = float(m.r)
            lip, note = r * (1 + 2 * R), "sup |r(1 − 2h)| on |h| <= R"
        elif kind is Henon:
            a, b = float(m.a), float(m.b)
            lip, note = math.sqrt(4 * a * a * R * R + 1 + b * b), "Frobenius of [[−2ax, 1], [b, 0]]"
        else:
            eta = float(m.eta)
            lip, note = max(abs(1 + eta), abs(1 + eta - 3 * eta * R * R)), "sup |1 + η(1 − 3h²)|"
        tr.lo, tr.hi = 0.0, math.inf
        tr.add(where or type(module).__name__, "polynomial on a ball", lip, note)
        return
    supported = (
        "LoopedTransformer, Sequential, Linear, ReLU, LeakyReLU, Tanh, Sigmoid, GELU, SiLU, "
        "Softplus, Identity, RMSNorm, LayerNorm and dynamo's canonical maps"
    )
    raise InvalidArgumentError(
        f"{call}: no Lipschitz rule for {type(module).__name__} at '{where or '<root>'}'; a "
        f"certified bound needs a rule for every part (supported: {supported}). Split the block "
        "into supported modules, or use lipschitz_lower_bound for an estimate"
    )


def lipschitz_upper_bound(model: nn.Module | LoopedSystem, domain: Domain) -> Bound:
    """A **certified** upper bound on the Lipschitz constant of ``h ↦ f(h, x)`` over ``domain``.

    Composed from per-layer rules (see the "Lipschitz bounds" docs page for each derivation): linear
    maps (exact ``σ_max``), elementwise activations (``sup |φ′|``), residual connections (``1 +
    L``), concat recall (``σ_max`` of the state block), RMSNorm/LayerNorm on inputs whose token
    norms are bounded below, dot-product attention on inputs whose token norms are bounded above,
    and composition (product). Token-norm intervals are propagated through the block so that each
    rule sees the range of its own input. The bound holds for every pair of states in the domain
    and, for driven maps, every input whose tokens lie in the domain's input range.

    Parameters
    ----------
    model : nn.Module or LoopedSystem
        The block (a system contributes its module and sequence length).
    domain : Domain

    Returns
    -------
    Bound
        ``kind="upper"``, ``certified=True``, with the derivation in ``steps``.

    Raises
    ------
    InvalidArgumentError
        A part without a rule (named by type), a norm layer whose input can vanish with ``eps = 0``,
        attention on unbounded inputs, a driven block without an input range.

    References
    ----------
    H. Kim, G. Papamakarios, A. Mnih, "The Lipschitz constant of self-attention", arXiv:2006.04710
    (not globally Lipschitz); V. Castin, P. Ablin, G. Peyré, "How smooth is attention?",
    arXiv:2312.14820 (Lipschitz on bounded sets).

    Examples
    --------
    >>> import math, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    >>> round(dy.lipschitz_upper_bound(f, dy.Domain()).value, 12)
    0.9
    >>> norm = dy.models.ZeroBranchRMSNorm(d=4)
    >>> dy.lipschitz_upper_bound(norm, dy.Domain.shell(1.0, 3.0)).value  # √d / r_min
    2.0
    """
    call = call_form("lipschitz_upper_bound", ["model", "domain"])
    if not isinstance(domain, Domain):
        raise InvalidArgumentError(
            f"{call}: domain must be a dynamo.Domain, got {type(domain).__name__}"
        )
    n_tokens = domain.n_tokens
    module: nn.Module | None
    if isinstance(model, LoopedSystem):
        module = model.module
        if module is None:
            raise InvalidArgumentError(
                f"{call}: the system wraps a plain function, which has no rules; build it from a "
                "module, or use lipschitz_lower_bound for an estimate"
            )
        if len(model.state_shape) >= 2:
            own = int(model.state_shape[-2])
            if n_tokens is not None and n_tokens != own:
                raise InvalidArgumentError(
                    f"{call}: domain.n_tokens={n_tokens} but the system's states have {own} tokens"
                )
            n_tokens = own
        x = model.x
        if model.driven and x is not None and domain.x_max is not None:
            tok = x.detach().double().norm(dim=-1)
            lo_x, hi_x = float(tok.min()), float(tok.max())
            slack = 1e-9 * max(1.0, hi_x)
            if lo_x < domain.x_min - slack or hi_x > domain.x_max + slack:
                raise InvalidArgumentError(
                    f"{call}: the system's own input has token norms in [{lo_x:.4g}, {hi_x:.4g}], "
                    f"outside the domain's input range [{domain.x_min:g}, {domain.x_max:g}]: the "
                    "bound would not cover this system; widen the range or pass the module"
                )
    else:
        module = model
    if not isinstance(module, nn.Module):
        raise InvalidArgumentError(f"{call}: model must be an nn.Module or a LoopedSystem")
    _check_plain(call, module)
    tr = _Trace(domain.r_min, domain.r_max)
    if type(module) is LoopedTransformer:
        if n_tokens is None:
            raise InvalidArgumentError(
                f"{call}: attention's bound depends on the sequence length; pass a LoopedSystem "
                "or Domain(..., n_tokens=T)"
            )
        _transformer_rule(call, module, domain, n_tokens, tr)
    else:
        _module_rule(call, "", module, tr, domain)
    if math.isnan(tr.lip):  # every rule returns a number or inf; NaN would be a bug, not a bound
        raise RuntimeError(f"{call}: the composed bound is NaN (steps: {tr.steps}); please report")
    return Bound(
        kind="upper",
        value=tr.lip,
        certified=True,
        method="rules",
        domain=domain,
        steps=tuple(tr.steps),
        out_norms=(tr.lo, tr.hi),
    )


# ---------------------------------------------------------------------- sampled lower bounds
def lipschitz_lower_bound(
    system: LoopedSystem,
    states: torch.Tensor,
    *,
    method: LowerBoundMethod = "sampled",
    steps: int = 20,
    step_size: float = 0.1,
    domain: Domain | None = None,
    tol: float | None = None,
    seed: int = 0,
) -> Bound:
    """The largest local ``‖∂f/∂h‖₂`` seen: a lower bound on the Lipschitz constant, with witness.

    ``method="sampled"`` evaluates ``‖J‖₂`` (Golub–Kahan–Lanczos, itself a lower bound of the true
    local norm) at each of the given states. ``method="ascent"`` then climbs: from every state it
    takes ``steps`` normalized gradient steps on ``σ_max(J(h)) = uᵀJ(h)v`` (``u, v`` the top
    singular vectors, so the gradient is ``∇_h (uᵀ J(h) v)``), each of relative size
    ``step_size``, projecting every token back into ``domain`` when one is given.

    ``value`` is ``‖J‖₂`` at the witness (up to rounding), so the Lipschitz constant on any set that
    contains a neighbourhood of the witness, or has it on the boundary of its interior (a shell
    with ``r_min < r_max``, all of space), is at least ``value``: a lower bound on those, and an
    estimate of the constant itself. On a set without interior, such as a sphere
    (``r_min == r_max``), ``‖J‖₂`` also counts directions that leave the set and can exceed the
    constant restricted to it.

    Parameters
    ----------
    system : LoopedSystem
    states : torch.Tensor
        ``(N, *state_shape)`` starting states.
    method : {"sampled", "ascent"}
    steps : int
        Ascent steps.
    step_size : float
        Ascent step as a fraction of the state's norm.
    domain : Domain, optional
        Keep the ascent inside it (token norms clamped into ``[r_min, r_max]``).
    tol : float, optional
        Relative residual for each ``‖J‖₂`` (default ``√eps``).
    seed : int

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.zeros(1, 8))
    >>> h = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> low = dy.lipschitz_lower_bound(system, h)
    >>> up = dy.lipschitz_upper_bound(f, dy.Domain())
    >>> bool(low.value <= up.value), low.certified, up.certified
    (True, False, True)
    """
    call = call_form("lipschitz_lower_bound", ["system", "states"], method=method)
    check_choice(call, "method", method, ("sampled", "ascent"))
    check_positive_int(call, "steps", steps)
    check_positive_float(call, "step_size", step_size)
    if domain is not None and not isinstance(domain, Domain):
        raise InvalidArgumentError(f"{call}: domain must be a dynamo.Domain or None")
    system, z, xx = _prepare(call, system, states, None)
    eps = torch.finfo(system.dtype).eps
    rtol = math.sqrt(eps) if tol is None else check_positive_float(call, "tol", tol, upper=1.0)
    fn = _flat(system, xx)

    def norms(zz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from ._linearize import JacobianOperator

        op = JacobianOperator(fn, zz)
        kr = golub_kahan(
            op.matvec,
            op.rmatvec,
            zz.shape[0],
            zz.shape[1],
            zz.dtype,
            zz.device,
            k=1,
            tol=rtol,
            max_steps=min(zz.shape[1], 300),
            seed=seed,
        )
        return kr.values[:, 0], kr.vectors["left"], kr.vectors["right"]

    sig, u, v = norms(z)
    best_sig, best_z = sig.clone(), z.clone()
    evaluated = z.shape[0]
    if method == "ascent":
        from ._compat import jvp

        cur = z.clone()
        for _ in range(steps):

            def objective(
                zz: torch.Tensor, u: torch.Tensor = u, v: torch.Tensor = v
            ) -> torch.Tensor:
                return (u * jvp(fn, (zz,), (v,))[1]).sum()

            grad = torch.func.grad(objective)(cur)
            gn = grad.norm(dim=1, keepdim=True)
            scale = torch.clamp(cur.norm(dim=1, keepdim=True), min=1.0)
            cur = cur + step_size * scale * grad / torch.clamp(gn, min=torch.finfo(z.dtype).tiny)
            if domain is not None:
                cur = _project(system, cur, domain)
            with torch.no_grad():
                sig, u, v = norms(cur)
            evaluated += cur.shape[0]
            better = sig > best_sig
            best_sig = torch.where(better, sig, best_sig)
            best_z = torch.where(better[:, None], cur, best_z)
    i = int(torch.argmax(best_sig))
    return Bound(
        kind="lower",
        value=float(best_sig[i]),
        certified=False,
        method=method,
        domain=domain,
        witness=system.unflatten(best_z[i : i + 1]).detach(),
        n_evaluated=evaluated,
        local_values=best_sig.detach(),
    )


def _project(system: LoopedSystem, z: torch.Tensor, domain: Domain) -> torch.Tensor:
    h = system.unflatten(z)
    tok = h.norm(dim=-1, keepdim=True)
    target = torch.clamp(tok, min=domain.r_min, max=domain.r_max)
    safe = torch.where(tok > 0, tok, torch.ones_like(tok))
    return system.flatten(h * (target / safe))
