"""``x ↦ W x + b``: the factor is ``σ_max(W)`` (R1), rounded outward."""

from __future__ import annotations

from torch import nn

from .. import _formulas
from .._arith import linear_interval, sigma
from .._registry import RuleContext, _Trace, builtin_rule


@builtin_rule(nn.Linear, name="linear", claims=("R1",))
def linear(m: nn.Linear, tr: _Trace, ctx: RuleContext) -> None:
    tr.lo, tr.hi = linear_interval(m.weight, m.bias, tr.lo, tr.hi)
    factor = _formulas.linear(sigma(m.weight))
    tr.add(ctx.where or "linear", "linear", factor, "σ_max(W)", ("R1",))
