"""Dot-product attention on tokens whose norms are bounded above (R7, R14): the factor and the
output token-norm bound of one multi-head layer (also shared with ``theory`` through
:mod:`dynamo.kernel`)."""

from __future__ import annotations

import math
from typing import Any

from .. import _formulas
from .._arith import sigma, sigma_blocks, up

__all__ = ["attention_rule"]


def attention_rule(att: Any, n_tokens: int, r_hi: float) -> tuple[float, float, str]:
    """(Lipschitz factor, output token-norm bound) of dot-product attention, inputs ``‖x_j‖ ≤ R``.

    Per head, with ``M = W_Qᵀ W_K / √d_h`` (or ``‖W_Q‖‖W_K‖/√d_h`` under RoPE, whose rotations sit
    between them) and ``V = W_V`` for the head:
    ``‖J‖₂ ≤ ‖V‖ (√T + (1 + √T) R² ‖M‖)`` (the value term: ``‖P‖₂ ≤ √T`` for a row-stochastic
    ``P``; the softmax term: a weighted covariance bound ``‖Σ_j p_j (x_j − μ) a_j‖ ≤ R max|a_j|``).
    Heads stack and ``W_O`` follows: ``‖J‖ ≤ ‖W_O‖ √(Σ_h ‖J_h‖²)`` (R7); or, since each head's
    Jacobian is ``(I_T ⊗ V_h) K_h`` with ``‖K_h‖ ≤ κ_h`` (the same bound with ``V = I``), read
    through ``C_h = W_O,h V_h``: ``‖J‖ ≤ ‖[C_1 … C_H]‖ √(Σ_h κ_h²)`` (R14). The rule takes the
    smaller. Each output token is ``W_O`` applied to per-head convex combinations ``m_h`` of
    value inputs, ``y_i = Σ_h C_h m_h`` with ``‖m_h‖ ≤ R``: ``‖y_i‖ ≤ R min(‖W_O‖ √(Σ_h ‖V_h‖²),
    ‖[C_1 … C_H]‖ √H)``.

    Examples
    --------
    >>> import dynamo as dy
    >>> from dynamo.kernel import attention_rule
    >>> model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=0).double()
    >>> lip, out_hi, note = attention_rule(model.layers[0].attn.branch, 4, 2.0)
    >>> round(lip, 3), round(out_hi, 3)
    (5.334, 2.31)
    """
    dh, H = att.d_head, att.n_heads
    wq, wk, wv = (m.weight.detach().double() for m in (att.q, att.k, att.v))
    wo = att.o.weight.detach().double()
    heads, kernels, vals, mixed = [], [], 0.0, []
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        qh, kh, vh = wq[rows], wk[rows], wv[rows]
        if att.pos == "rope":
            m_norm = _formulas.rope_score_norm(sigma(qh), sigma(kh), dh)
        else:
            m_norm = sigma(qh.T @ kh) / math.sqrt(dh)
        v_norm = sigma(vh)
        heads.append(_formulas.attention_head(v_norm, m_norm, n_tokens, r_hi))
        kernels.append(_formulas.attention_head(1.0, m_norm, n_tokens, r_hi))
        vals += v_norm**2
        mixed.append((wo[:, rows], vh))
    o, c = sigma(wo), sigma_blocks(mixed)
    stacked = _formulas.attention_heads(o, heads)
    through = _formulas.attention_heads_mixed(c, kernels)
    lip = min(stacked, through)
    out_hi = up(min(o * math.sqrt(vals), c * math.sqrt(H)) * r_hi)
    how = "‖W_O V_h‖ (R14)" if through < stacked else "‖W_O‖‖V_h‖ (R7)"
    return lip, out_hi, f"T={n_tokens}, R={r_hi:.4g}, {H} heads, pos={att.pos}, heads by {how}"
