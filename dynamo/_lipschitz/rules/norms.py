"""RMSNorm (R5) and LayerNorm (R6) on tokens whose norms are bounded below."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import InvalidArgumentError
from .. import _formulas
from .._arith import down, up, vnorm
from .._registry import RuleContext, _Trace, builtin_rule

__all__ = ["norm_rule"]

_CLAIM = {nn.RMSNorm: "R5", nn.LayerNorm: "R6"}


def norm_rule(
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
        beta_norm = vnorm(getattr(norm, "bias", None))
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
    lip = _formulas.rmsnorm(gmax, d, centred_lo, eps)
    if math.isinf(hi):
        hi_out = gmax * math.sqrt(d) + beta_norm
    else:
        hi_out = gmax * math.sqrt(d) * hi / math.sqrt(hi**2 + d * eps) + beta_norm
    lo_out = (
        0.0 if kind == "layernorm" else gmin * math.sqrt(d) * lo / math.sqrt(lo**2 + d * eps_lo)
    )
    # a few float operations each: rounded outward, so that the interval is never too narrow
    lo_out, hi_out = down(lo_out), up(hi_out)
    note = f"input token norm >= {centred_lo:.4g}, d={d}, eps={eps:g}"
    return lip, lo_out, hi_out, note


def apply_norm(call: str, where: str, norm: nn.Module, tr: _Trace) -> None:
    """One norm layer's step on the trace (also used inside the reference transformer)."""
    lip, lo, hi, note = norm_rule(call, where, norm, tr.lo, tr.hi)
    tr.lo, tr.hi = lo, hi
    tr.add(where, type(norm).__name__, lip, note, (_CLAIM[type(norm)],))


@builtin_rule(nn.RMSNorm, name="RMSNorm", claims=("R5",))
@builtin_rule(nn.LayerNorm, name="LayerNorm", claims=("R6",))
def norm(m: nn.Module, tr: _Trace, ctx: RuleContext) -> None:
    apply_norm(ctx.call, ctx.where or "norm", m, tr)
