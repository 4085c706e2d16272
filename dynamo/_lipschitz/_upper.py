"""Certified upper bounds on the Lipschitz constant: the registered per-layer rules composed
over a block (R8), with the token-norm interval carried from each layer to the next."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from .._results import Trust
from .._system import LoopedSystem
from .._validate import call_form
from ..errors import InvalidArgumentError
from . import rules as _rules  # noqa: F401  (registers dynamo's own rules)
from ._bounds import Bound, BoundStep, Domain
from ._graph import graph_bound
from ._registry import _FN_RULES, _RULES, _apply, _Trace, check_plain, note_nested

__all__ = ["lipschitz_upper_bound"]


def lipschitz_upper_bound(model: nn.Module | LoopedSystem, domain: Domain) -> Bound:
    """A **certified** upper bound on the Lipschitz constant of ``h ↦ f(h, x)`` over ``domain``.

    Composed from per-layer rules (see the "Lipschitz bounds" docs page for each derivation): linear
    maps (exact ``σ_max``), elementwise activations (``sup |φ′|``), residual connections (``1 +
    L``), concat recall (``σ_max`` of the state block), RMSNorm/LayerNorm on inputs whose token
    norms are bounded below, dot-product attention on inputs whose token norms are bounded above,
    and composition (product). Token-norm intervals are propagated through the block so that each
    rule sees the range of its own input. The bound holds for every pair of states in the domain
    and, for driven maps, every input whose tokens lie in the domain's input range; asked of a
    driven :class:`~dynamo.LoopedSystem` with a domain without an input range, it holds for the
    system's own inputs, which enter exactly (``Bound.inputs`` says which).

    A system whose block has no rule as a type (the user's own module, or a plain function) is
    traced with ``torch.fx`` and the rules are composed along its graph (``method="graph"``):
    sums, concatenations, scaling by constants, reshapes and selections (R10), scaled
    dot-product attention and ``nn.MultiheadAttention`` (R11), and the layer rules above. An
    operation on the state without a rule is an error naming it and its node.

    Parameters
    ----------
    model : nn.Module or LoopedSystem
        The block (a system contributes its module and sequence length).
    domain : Domain

    Returns
    -------
    Bound
        ``kind="upper"``, with the derivation in ``steps``; ``certified`` (trust PROVEN) when
        every rule applied is proven: dynamo's own rules are, a rule registered with
        :func:`register_lipschitz_rule` carries the trust its author declared.

    Raises
    ------
    InvalidArgumentError
        A part without a rule (named by type, or by operation and graph node for a traced
        block; see :func:`lipschitz_rules` and :func:`register_lipschitz_rule`), a block that
        ``torch.fx`` cannot trace, a norm layer whose input can vanish with ``eps = 0``,
        attention on unbounded inputs, a bare driven module without an input range.

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

    A block of the user's own, traced (``h ↦ h/2 + tanh(W h)/4`` with ``‖W‖₂ ≤ 1``):

    >>> import torch
    >>> W = torch.eye(3, dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_function(lambda h: h / 2 + torch.tanh(h @ W) / 4,
    ...                                        state_shape=(3,))
    >>> bound = dy.lipschitz_upper_bound(system, dy.Domain())
    >>> bound.method, round(bound.value, 12), bound.certified
    ('graph', 0.75, True)
    """
    call = call_form("lipschitz_upper_bound", ["model", "domain"])
    if not isinstance(domain, Domain):
        raise InvalidArgumentError(
            f"{call}: domain must be a dynamo.Domain, got {type(domain).__name__}"
        )
    n_tokens = domain.n_tokens
    module: nn.Module | None
    if not isinstance(model, (nn.Module, LoopedSystem)):
        raise InvalidArgumentError(
            f"{call}: model must be an nn.Module or a LoopedSystem, got {type(model).__name__}"
        )
    if isinstance(model, LoopedSystem):
        module = model.module
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
    if module is not None and not isinstance(module, nn.Module):
        raise InvalidArgumentError(f"{call}: model must be an nn.Module or a LoopedSystem")
    if module is None and not isinstance(model, LoopedSystem):
        raise InvalidArgumentError(f"{call}: model must be an nn.Module or a LoopedSystem")
    if module is not None:
        check_plain(call, module)
    if isinstance(model, LoopedSystem) and (module is None or not _has_rule(module)):
        return _traced(call, model, domain, n_tokens)
    own_x = None  # the system's own inputs, when the bound is for those
    if isinstance(model, LoopedSystem) and model.driven and domain.x_max is None:
        own_x = None if model.x is None else model.x.detach().double()
    if module is None:  # a plain function has no rules of its own: only the graph path
        raise InvalidArgumentError(
            f"{call}: the system wraps a plain function; pass the LoopedSystem itself to trace it"
        )
    tr = _Trace(domain.r_min, domain.r_max)
    _apply(call, "", module, tr, domain, n_tokens, own_x)
    if math.isnan(tr.lip):  # every rule returns a number or inf; NaN would be a bug, not a bound
        raise RuntimeError(f"{call}: the composed bound is NaN (steps: {tr.steps}); please report")
    return _composed(tr.lip, tr.steps, "rules", domain, (tr.lo, tr.hi), _inputs(model, domain))


def _has_rule(module: nn.Module) -> bool:
    """Whether the registered rules cover ``module`` without tracing (its own type has a rule, or
    it is an ``nn.Sequential`` of such parts)."""
    if type(module) is nn.Sequential:
        return all(_has_rule(m) for m in module)
    return type(module) in _RULES


def _traced(call: str, system: LoopedSystem, domain: Domain, n_tokens: int | None) -> Bound:
    """The rules composed along the block's traced graph (a user's own block or function)."""
    x = system.x if system.driven else None
    if system.driven and x is None:
        raise InvalidArgumentError(f"{call}: the driven system has no input x")
    batch = 1 if x is None else int(x.shape[0])
    root: Any = system.module if system.module is not None else system._user_fn
    g = graph_bound(
        call,
        root,
        domain,
        domain.sample(system, batch, seed=0),
        x,
        driven=system.driven,
        x_exact=system.driven and domain.x_max is None,
        n_tokens=n_tokens,
        fn_rules=_FN_RULES,
    )
    return _composed(g.lip, g.steps, "graph", domain, (g.lo, g.hi), _inputs(system, domain))


def _inputs(model: nn.Module | LoopedSystem, domain: Domain) -> str | None:
    """Which inputs a bound on a driven system covers (None for an autonomous map)."""
    if not isinstance(model, LoopedSystem) or not model.driven:
        return None
    if domain.x_max is None and model.x is not None:
        return f"the system's own {int(model.x.shape[0])} input(s)"
    if domain.x_max is not None:
        return f"every input with token norms in [{domain.x_min:g}, {domain.x_max:g}]"
    return None


def _composed(
    value: float,
    steps: Sequence[BoundStep],
    method: str,
    domain: Domain,
    out_norms: tuple[float, float],
    inputs: str | None,
) -> Bound:
    """The bound the rules composed: certified only when every rule it rests on is proven
    (dynamo's own are; a registered rule is what its author declared)."""
    note_nested(steps)  # called from inside a registered rule: that rule rests on these
    return Bound(
        kind="upper",
        value=value,
        certified=all(s.trust is Trust.PROVEN for s in steps),
        method=method,
        domain=domain,
        steps=tuple(steps),
        out_norms=out_norms,
        inputs=inputs,
    )
