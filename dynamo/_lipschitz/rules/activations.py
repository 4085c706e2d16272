"""Elementwise activations: the factor is ``sup |φ′|`` (R2)."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ...errors import InvalidArgumentError
from .._arith import mul
from .._registry import RuleContext, _Trace, builtin_rule

__all__ = ["ACTIVATION_SLOPES", "softplus_switch"]

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


def softplus_switch(call: str, where: str, beta: Any, threshold: Any, hi: float) -> None:
    """torch's softplus is ``log(1 + exp(βt))/β`` below ``threshold/β`` and ``t`` above it: a
    jump of ``log1p(exp(−threshold))/β`` (2·10⁻⁹ at the default 20) where it switches, so it is
    Lipschitz only on inputs that stay below the switch (every entry is at most its token's
    norm ``hi``)."""
    if not float(beta) * hi < float(threshold):  # NaN included: no bound below the switch
        raise InvalidArgumentError(
            f"{call}: softplus at '{where}' may see inputs up to {hi:.4g}, past its switch to the "
            f"identity at threshold/β = {float(threshold) / float(beta):.4g}, where torch's form "
            "jumps (by log1p(exp(−threshold))/β) and is not Lipschitz: bound the domain below "
            "the switch, or raise threshold"
        )


@builtin_rule(*ACTIVATION_SLOPES, name="elementwise", claims=("R2",))
def elementwise(m: nn.Module, tr: _Trace, ctx: RuleContext) -> None:
    kind = type(m)
    if kind is nn.Softplus:
        softplus_switch(ctx.call, ctx.where or "softplus", m.beta, m.threshold, tr.hi)
    # |φ(t)| <= |t| for ReLU, tanh, GELU, SiLU (and identity); not for sigmoid/softplus
    if kind in (nn.Sigmoid, nn.Softplus):
        tr.lo, tr.hi = 0.0, math.inf
    else:
        tr.lo = 0.0
    name = f"elementwise {kind.__name__}"
    tr.add(ctx.where or kind.__name__, name, ACTIVATION_SLOPES[kind], "sup |φ′|", ("R2",))


@builtin_rule(nn.LeakyReLU, name="elementwise LeakyReLU", claims=("R2",))
def leaky_relu(m: nn.LeakyReLU, tr: _Trace, ctx: RuleContext) -> None:
    slope = max(1.0, abs(m.negative_slope))
    tr.lo, tr.hi = 0.0, mul(slope, tr.hi)  # |φ(t)| <= max(1, |a|) |t|
    tr.add(ctx.where or "leaky_relu", "elementwise LeakyReLU", slope, "", ("R2",))


@builtin_rule(nn.Dropout, name="dropout (evaluation mode)", claims=("R10",))
def dropout(m: nn.Dropout, tr: _Trace, ctx: RuleContext) -> None:
    """In evaluation mode (or with ``p = 0``) dropout is the identity (a selection, R10); in
    training mode it is a random map, which no rule covers."""
    if m.training and m.p > 0:
        raise InvalidArgumentError(
            f"{ctx.call}: nn.Dropout at '{ctx.where or '<root>'}' is in training mode, a random "
            "map; call .eval() on the block"
        )
    tr.add(ctx.where or "dropout", "dropout (evaluation mode)", 1.0, "the identity", ("R10",))
