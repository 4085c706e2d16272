"""Dot-product attention on tokens whose norms are bounded above (R7): the factor and the output
token-norm bound of one multi-head layer (also shared with ``theory`` through
:mod:`dynamo.kernel`)."""

from __future__ import annotations

import math
from typing import Any

from .. import _formulas
from .._arith import sigma

__all__ = ["attention_rule"]


def attention_rule(att: Any, n_tokens: int, r_hi: float) -> tuple[float, float, str]:
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
    heads, vals = [], 0.0
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        qh, kh, vh = wq[rows], wk[rows], wv[rows]
        if att.pos == "rope":
            m_norm = _formulas.rope_score_norm(sigma(qh), sigma(kh), dh)
        else:
            m_norm = sigma(qh.T @ kh) / math.sqrt(dh)
        v_norm = sigma(vh)
        heads.append(_formulas.attention_head(v_norm, m_norm, n_tokens, r_hi))
        vals += v_norm**2
    o = sigma(wo)
    lip = _formulas.attention_heads(o, heads)
    out_hi = o * math.sqrt(vals) * r_hi
    return lip, out_hi, f"T={n_tokens}, R={r_hi:.4g}, {H} heads, pos={att.pos}"
