"""The Lipschitz rules, registered by layer type, and the composition that applies them.

Each rule bounds one layer type: given the interval of its input tokens' norms, its Lipschitz
factor (Euclidean norm of the flattened input) and a sound interval for its output tokens' norms.
:func:`lipschitz_upper_bound` walks the block, applies the rule registered for each layer's exact
type (``nn.Sequential`` composes its children), and multiplies the factors (R8). dynamo's own
rules live one per file in :mod:`dynamo._lipschitz.rules`, each citing the claims of ``theory/``
that derive it; a user registers a rule for their own layer type with
:func:`register_lipschitz_rule`, declaring its trust.
"""

from __future__ import annotations

import contextvars
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._results import Trust
from ..errors import InvalidArgumentError
from . import _formulas
from ._arith import U64
from ._bounds import BoundStep, Domain

__all__ = [
    "LayerBound",
    "RuleContext",
    "lipschitz_rules",
    "register_lipschitz_rule",
    "unregister_lipschitz_rule",
]


@dataclass(frozen=True)
class LayerBound:
    """What a rule returns for one layer.

    Attributes
    ----------
    factor : float
        An upper bound on the layer's Lipschitz constant (Euclidean norm of the flattened input
        and output) over inputs whose token norms lie in the interval the rule was given.
    norms : (float, float)
        A sound interval for the norm of every output token over those inputs (``inf`` above
        when unbounded): the next rule's input interval.
    note : str
        What the factor is, e.g. ``"σ_max(W)"`` (shown in the derivation).

    Examples
    --------
    >>> from dynamo import LayerBound
    >>> LayerBound(2.0, (0.0, 6.0), "2 · max |h|").factor
    2.0
    """

    factor: float
    norms: tuple[float, float]
    note: str = ""


def cite(claims: Sequence[str]) -> str:
    """The claims a step rests on, in order, once each, with R8: every factor composes by it."""
    return ", ".join(dict.fromkeys([*claims, "R8"]))


class _Trace:
    """Accumulates the derivation and the running token-norm interval."""

    def __init__(self, lo: float, hi: float) -> None:
        self.lo, self.hi = lo, hi
        self.steps: list[BoundStep] = []
        self.lip = 1.0

    def add(
        self,
        where: str,
        rule: str,
        factor: float,
        note: str = "",
        claims: Sequence[str] = (),
        trust: Trust = Trust.PROVEN,
        norms: tuple[float, float] | None = None,
    ) -> None:
        # a factor is a few float64 operations from exact: widen it by 8u, and round the
        # product up, so that the bound is never below the true product
        self.lip = math.nextafter(_formulas.compose(self.lip, factor) * (1.0 + 8.0 * U64), math.inf)
        at = (self.lo, self.hi) if norms is None else norms  # the token norms after the step
        self.steps.append(BoundStep(where, rule, factor, at, note, cite(claims), trust))


@dataclass
class RuleContext:
    """What a rule may read besides its layer and input interval.

    Attributes
    ----------
    call : str
        The call form errors begin with (``lipschitz_upper_bound(model, domain)``).
    domain : Domain
        The whole domain (its input range ``x_min, x_max`` for driven blocks).
    n_tokens : int or None
        The sequence length, where known.
    where : str
        The layer's name inside the block (``""`` at the root).
    x : torch.Tensor or None
        The system's own inputs when the bound is asked for exactly those (a driven
        :class:`~dynamo.LoopedSystem` with a domain without an input range), else None.

    Examples
    --------
    A rule receives one; here a rule that records what it saw:

    >>> import dynamo as dy
    >>> from torch import nn
    >>> class Scale(nn.Module):
    ...     def forward(self, h):
    ...         return 0.5 * h
    >>> seen = []
    >>> def scale_rule(module, norms, ctx):
    ...     seen.append((ctx.where, ctx.n_tokens))
    ...     return dy.LayerBound(0.5, (0.5 * norms[0], 0.5 * norms[1]))
    >>> dy.register_lipschitz_rule(Scale, scale_rule, claims=(), trust="proven")
    >>> round(dy.lipschitz_upper_bound(nn.Sequential(nn.Tanh(), Scale()), dy.Domain()).value, 12)
    0.5
    >>> seen
    [('1', None)]
    >>> dy.unregister_lipschitz_rule(Scale)
    """

    call: str
    domain: Domain
    n_tokens: int | None
    where: str
    x: torch.Tensor | None = None

    def bound(self, module: nn.Module, norms: tuple[float, float]) -> LayerBound:
        """The registered rules applied to a sub-module on inputs with token norms in ``norms``:
        for a rule that composes others (a residual block ``x + F(x)`` has factor
        ``1 + L(F)``). Its steps' claims and trust carry over to the calling rule's step (so do
        those of any :func:`lipschitz_upper_bound` called while a rule runs).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> from torch import nn
        >>> class Residual(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.f = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
        ...     def forward(self, h):
        ...         return h + self.f(h)
        >>> def residual_rule(module, norms, ctx):
        ...     inner = ctx.bound(module.f, norms)
        ...     return dy.LayerBound(1 + inner.factor, (0.0, norms[1] + inner.norms[1]), "1 + L(f)")
        >>> dy.register_lipschitz_rule(Residual, residual_rule, claims=("R3",),
        ...                            trust=dy.Trust.PROVEN)
        >>> bound = dy.lipschitz_upper_bound(Residual(), dy.Domain.ball(1.0))
        >>> bound.certified, bound.steps[0].claims
        (True, 'R3, R1, R2, R8')
        >>> dy.unregister_lipschitz_rule(Residual)
        """
        lo, hi = _check_norms(self.call, f"ctx.bound(module, norms) at '{self.where}'", norms)
        sub = _Trace(lo, hi)
        _apply(self.call, self.where, module, sub, self.domain, self.n_tokens, self.x)
        note_nested(sub.steps)
        note = "; ".join(f"{s.where or s.rule}: {s.rule} ×{s.factor:.4g}" for s in sub.steps)
        return LayerBound(sub.lip, (sub.lo, sub.hi), note)


#: ``apply(module, trace, ctx)``: adds the layer's step(s) to the trace and moves its interval.
_Apply = Callable[[Any, _Trace, RuleContext], None]


@dataclass(frozen=True)
class _Rule:
    layer_type: type
    name: str
    claims: tuple[str, ...]
    trust: Trust
    apply: _Apply
    builtin: bool


_RULES: dict[type, _Rule] = {}

#: Rules for functions met in a traced block (``torch.erf``, or a method name ``"erf"``):
#: ``apply(op, norms, ctx) -> (factor, lo, hi, step)``.
_FN_RULES: dict[Any, Callable[[Any, tuple[float, float], RuleContext], Any]] = {}

#: While a registered rule runs: the steps of every bound computed inside it (by ctx.bound, or
#: by a nested lipschitz_upper_bound call), so that their trust and claims reach its own step
_INSIDE: contextvars.ContextVar[list[BoundStep] | None] = contextvars.ContextVar(
    "lipschitz_rule_inside", default=None
)


def note_nested(steps: Sequence[BoundStep]) -> None:
    """Record a bound's steps with the registered rule that is running, if any."""
    inside = _INSIDE.get()
    if inside is not None:
        inside.extend(steps)


def builtin_rule(*types: type, name: str, claims: Sequence[str]) -> Callable[[_Apply], _Apply]:
    """Register one of dynamo's own rules (PROVEN: derived in theory/ by ``claims``)."""

    def register(fn: _Apply) -> _Apply:
        for t in types:
            _RULES[t] = _Rule(t, name, tuple(claims), Trust.PROVEN, fn, True)
        return fn

    return register


def lipschitz_rules() -> dict[type, tuple[str, tuple[str, ...], Trust]]:
    """Every registered rule: layer type → (rule name, cited claims, trust).

    Examples
    --------
    >>> import dynamo as dy
    >>> from torch import nn
    >>> dy.lipschitz_rules()[nn.Linear]
    ('linear', ('R1',), <Trust.PROVEN: 'proven'>)
    """
    return {t: (r.name, r.claims, r.trust) for t, r in _RULES.items()}


def register_lipschitz_rule(
    layer_type: type,
    rule: Callable[[Any, tuple[float, float], RuleContext], LayerBound],
    *,
    claims: Sequence[str],
    trust: Trust | str,
    name: str | None = None,
    replace: bool = False,
) -> None:
    """Register a Lipschitz rule for your own layer type, so that :func:`lipschitz_upper_bound`
    (and everything built on it: :func:`check_contraction`, ``dynamo certify``) can bound blocks
    that contain it.

    Parameters
    ----------
    layer_type : type, function or str
        An ``nn.Module`` subclass (the rule applies to modules of exactly this type), or a
        function (``torch.erf``) or Tensor method name (``"erf"``) called in a block that
        dynamo traces with ``torch.fx`` (the rule applies to its calls with one state-dependent
        positional argument).
    rule : callable
        ``rule(module, norms, ctx) -> LayerBound``: given the interval ``norms = (lo, hi)`` of
        the input tokens' norms and a :class:`RuleContext`, an upper bound on the layer's
        Lipschitz factor there and a sound interval for its output tokens' norms.
        ``ctx.bound(submodule, norms)`` applies the registered rules to a sub-module. A function
        rule is called as ``rule(op, norms, ctx)`` with ``op`` an :class:`~dynamo.OpCall` (the
        call's other arguments).
    claims : sequence of str
        Where the rule is derived (claim IDs of ``theory``, or your own references); printed in
        each step of the derivation.
    trust : Trust or str
        What the rule is: PROVEN when it is derived in general with rounding accounted for (then
        a bound made only of PROVEN rules is certified), or ESTIMATED / CHECKED otherwise (a
        bound that uses it is not certified, and says so). Required: dynamo cannot check it.
    name : str, optional
        The rule's name in the derivation (default: the type's name).
    replace : bool
        Allow replacing your earlier rule for the same type (dynamo's own rules stay).

    Raises
    ------
    InvalidArgumentError
        A type that is not an ``nn.Module`` subclass (nor a function), a type or function
        dynamo already has a rule for, a second registration without ``replace``, a trust that
        is not one of Trust's values.

    Examples
    --------
    A layer ``h ↦ a·tanh(h)`` (elementwise, ``|a·tanh(t)| ≤ |a||t|``):

    >>> import torch, dynamo as dy
    >>> from torch import nn
    >>> class ScaledTanh(nn.Module):
    ...     def __init__(self, a):
    ...         super().__init__()
    ...         self.a = a
    ...     def forward(self, h):
    ...         return self.a * torch.tanh(h)
    >>> def scaled_tanh_rule(module, norms, ctx):
    ...     a = abs(module.a)
    ...     return dy.LayerBound(a, (0.0, a * norms[1]), "|a| · sup |tanh′|")
    >>> dy.register_lipschitz_rule(ScaledTanh, scaled_tanh_rule, claims=("R2",),
    ...                            trust=dy.Trust.PROVEN)
    >>> block = nn.Sequential(nn.Linear(4, 4, bias=False), ScaledTanh(0.5))
    >>> with torch.no_grad():
    ...     _ = block[0].weight.copy_(torch.eye(4))
    >>> bound = dy.lipschitz_upper_bound(block, dy.Domain())
    >>> round(bound.value, 12), bound.certified, [s.rule for s in bound.steps]
    (0.5, True, ['linear', 'ScaledTanh'])
    >>> dy.unregister_lipschitz_rule(ScaledTanh)

    A function in a traced block, ``erf`` (``erf′ ≤ 2/√π``):

    >>> import math
    >>> slope = math.nextafter(2 / math.sqrt(math.pi), math.inf)  # rounded up
    >>> def erf_rule(op, norms, ctx):
    ...     return dy.LayerBound(slope, (0.0, slope * norms[1]))
    >>> dy.register_lipschitz_rule(torch.erf, erf_rule, claims=("erf′ ≤ 2/√π",), trust="proven")
    >>> system = dy.LoopedSystem.from_function(lambda h: 0.5 * torch.erf(h), state_shape=(3,))
    >>> round(dy.lipschitz_upper_bound(system, dy.Domain()).value, 6)
    0.56419
    >>> dy.unregister_lipschitz_rule(torch.erf)
    """
    call = "register_lipschitz_rule(layer_type, rule, claims=..., trust=...)"
    is_function = not isinstance(layer_type, type) and (
        callable(layer_type) or isinstance(layer_type, str)
    )
    if not is_function and (
        not isinstance(layer_type, type) or not issubclass(layer_type, nn.Module)
    ):
        raise InvalidArgumentError(
            f"{call}: layer_type must be an nn.Module subclass, a function or a Tensor method "
            f"name, got {layer_type!r}"
        )
    if not callable(rule):
        raise InvalidArgumentError(f"{call}: rule must be callable: rule(module, norms, ctx)")
    try:
        level = Trust(trust)
    except ValueError:
        known = ", ".join(t.value for t in Trust)
        raise InvalidArgumentError(f"{call}: trust must be one of {known}, got {trust!r}") from None
    if isinstance(claims, str) or not isinstance(claims, Sequence):
        raise InvalidArgumentError(
            f"{call}: claims must be a sequence of strings, e.g. ('R2',), got {claims!r}"
        )
    claims = tuple(claims)
    if not all(isinstance(c, str) for c in claims):
        raise InvalidArgumentError(
            f"{call}: claims must be a sequence of strings, e.g. ('R2',), got {claims!r}"
        )
    if name is not None and not isinstance(name, str):
        raise InvalidArgumentError(f"{call}: name must be a string, got {name!r}")
    if not isinstance(replace, bool):
        raise InvalidArgumentError(f"{call}: replace must be True or False, got {replace!r}")
    if is_function:
        _register_function_rule(call, layer_type, rule, claims, level, name, replace)
        return
    if layer_type is nn.Sequential:
        raise InvalidArgumentError(
            f"{call}: nn.Sequential is composed from its children's rules (R8), never by a rule "
            "of its own; register rules for the layers inside it"
        )
    old = _RULES.get(layer_type)
    if old is not None and old.builtin:
        raise InvalidArgumentError(
            f"{call}: dynamo has its own rule for {layer_type.__name__} ({old.name}, claims "
            f"{', '.join(old.claims)}); it cannot be replaced"
        )
    if old is not None and not replace:
        raise InvalidArgumentError(
            f"{call}: {layer_type.__name__} already has a registered rule; pass replace=True"
        )
    label = name or layer_type.__name__

    def apply(module: Any, tr: _Trace, ctx: RuleContext) -> None:
        what = f"the rule for {layer_type.__name__} at '{ctx.where or '<root>'}'"
        out, trust_, cited = _run_rule(rule, module, (tr.lo, tr.hi), ctx, what, level, claims)
        tr.lo, tr.hi = out.norms
        tr.add(ctx.where or label, label, out.factor, out.note, cited, trust_)

    _RULES[layer_type] = _Rule(layer_type, label, tuple(claims), level, apply, False)


def _run_rule(
    rule: Callable[..., Any],
    subject: Any,
    norms: tuple[float, float],
    ctx: RuleContext,
    what: str,
    level: Trust,
    claims: Sequence[str],
) -> tuple[LayerBound, Trust, list[str]]:
    """Run a registered rule (a user's) on its module or call: its result checked (a factor
    ``>= 0``, an interval of norms), the trust it rests on (the weakest of its own and of any
    bound computed inside it) and the claims it cites."""
    used: list[BoundStep] = []
    token = _INSIDE.set(used)
    try:
        out = rule(subject, norms, ctx)
    except InvalidArgumentError:
        raise
    except Exception as err:  # the user's rule: say which one, never a bare traceback
        raise InvalidArgumentError(
            f"{ctx.call}: {what} raised {type(err).__name__}: {err}"
        ) from err
    finally:
        _INSIDE.reset(token)
    if not isinstance(out, LayerBound):
        raise InvalidArgumentError(
            f"{ctx.call}: {what} returned {type(out).__name__}, not a dynamo.LayerBound"
        )
    factor = _check_factor(ctx.call, what, out.factor)
    lo, hi = _check_norms(ctx.call, what, out.norms)
    trust_ = Trust.weakest([level, *(s.trust for s in used)])
    cited = [*claims, *(c for s in used for c in s.claims.split(", ") if c not in ("", "R8"))]
    return LayerBound(factor, (lo, hi), out.note), trust_, cited


def _fn_name(fn: Any) -> str:
    from ._graph import _name

    return _name(fn)


def _register_function_rule(
    call: str,
    fn: Any,
    rule: Callable[..., Any],
    claims: tuple[str, ...],
    level: Trust,
    name: str | None,
    replace: bool,
) -> None:
    """A rule for a function called in a traced block: ``rule(op, norms, ctx) -> LayerBound``,
    ``op`` an :class:`~dynamo.OpCall`."""
    from ._graph import builtin_function_rules

    label = name or _fn_name(fn)
    if fn in builtin_function_rules():
        raise InvalidArgumentError(
            f"{call}: dynamo has its own rule for {label}; it cannot be replaced"
        )
    if fn in _FN_RULES and not replace:
        raise InvalidArgumentError(
            f"{call}: {label} already has a registered rule; pass replace=True"
        )

    def apply(op: Any, norms: tuple[float, float], ctx: RuleContext) -> Any:
        what = f"the rule for {label} at '{ctx.where}'"
        out, trust_, cited = _run_rule(rule, op, norms, ctx, what, level, claims)
        factor, (lo, hi) = out.factor, out.norms
        step = BoundStep(ctx.where, label, factor, (lo, hi), out.note, cite(cited), trust_)
        return factor, lo, hi, step

    _FN_RULES[fn] = apply
    _FN_META[fn] = (label, claims, level)


#: What each registered function rule is: name, claims, trust.
_FN_META: dict[Any, tuple[str, tuple[str, ...], Trust]] = {}


def _check_factor(call: str, what: str, factor: Any) -> float:
    if isinstance(factor, torch.Tensor) and factor.numel() == 1:
        factor = float(factor)
    if isinstance(factor, numbers.Real) and not isinstance(factor, bool):
        factor = float(factor)
    if not isinstance(factor, float) or math.isnan(factor) or factor < 0:
        raise InvalidArgumentError(
            f"{call}: {what} returned the factor {factor!r}; a Lipschitz factor is a "
            "number >= 0 (inf where unbounded)"
        )
    return factor


def unregister_lipschitz_rule(layer_type: type) -> None:
    """Remove a rule added by :func:`register_lipschitz_rule` (dynamo's own stay).

    >>> import dynamo as dy
    >>> from torch import nn
    >>> dy.unregister_lipschitz_rule(nn.Linear)
    Traceback (most recent call last):
    ...
    dynamo.errors.InvalidArgumentError: unregister_lipschitz_rule(Linear): dynamo's own rules ...
    """
    name = getattr(layer_type, "__name__", repr(layer_type))
    call = f"unregister_lipschitz_rule({name})"
    if not isinstance(layer_type, type) and layer_type in _FN_RULES:
        del _FN_RULES[layer_type]
        del _FN_META[layer_type]
        return
    r = _RULES.get(layer_type)
    if r is None:
        raise InvalidArgumentError(f"{call}: no rule is registered for {name}")
    if r.builtin:
        raise InvalidArgumentError(f"{call}: dynamo's own rules cannot be removed")
    del _RULES[layer_type]


def _check_norms(call: str, what: str, norms: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in norms)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{call}: {what}: norms must be a pair (lo, hi) of numbers, got {norms!r}"
        ) from None
    if math.isnan(lo) or math.isnan(hi) or lo < 0 or hi < lo:
        raise InvalidArgumentError(
            f"{call}: {what}: norms ({lo}, {hi}) is no interval of norms: need 0 <= lo <= hi"
        )
    return lo, hi


def _apply(
    call: str,
    where: str,
    module: nn.Module,
    tr: _Trace,
    domain: Domain,
    n_tokens: int | None,
    x: torch.Tensor | None = None,
) -> None:
    """Apply the rule registered for ``module``'s exact type (``nn.Sequential``: its children in
    order); a module without one is an error naming its type, never a silent skip."""
    kind = type(module)
    if isinstance(module, nn.Sequential) and kind is nn.Sequential:
        for i, child in enumerate(module):
            _apply(call, f"{where}.{i}" if where else str(i), child, tr, domain, n_tokens, x)
        return
    r = _RULES.get(kind)
    if r is None:
        supported = ", ".join(sorted({"Sequential", *(t.__name__ for t in _RULES)}))
        raise InvalidArgumentError(
            f"{call}: no Lipschitz rule for {kind.__name__} at '{where or '<root>'}'; a "
            f"certified bound needs a rule for every part (supported: {supported}). Split the "
            "block into supported modules, register a rule for your layer "
            "(dynamo.register_lipschitz_rule), pass a LoopedSystem of the block (dynamo then "
            "traces it with torch.fx and composes rules along its graph), or use "
            "lipschitz_lower_bound for an estimate"
        )
    r.apply(module, tr, RuleContext(call, domain, n_tokens, where, x))


def check_plain(call: str, module: nn.Module) -> None:
    """Rules read weights, not ``forward``: refuse hooks, which would make them describe another
    map."""
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
