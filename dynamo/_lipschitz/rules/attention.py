"""Dot-product attention on tokens whose norms are bounded above (R7, R14, R16): the factor and
the output token-norm bound of one multi-head layer (also shared with ``theory`` through
:mod:`dynamo.kernel`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import _formulas
from .._arith import U64, _product, products, sigma, sigma_blocks, sigma_pairs_max, sigma_triple, up

__all__ = ["Heads", "attention_rule", "layer_heads"]


def _widen(n_heads: int) -> float:
    """The factor is a few float64 operations per head on upward-rounded inputs (sums, products,
    square roots and one division per head, then a sum of squares over the heads and one square
    root), at most ``4H + 24`` roundings of a unit error each: widen it by twice that."""
    return 1.0 + (8.0 * n_heads + 48.0) * U64


# Where R16's block form (α + b)(α + 2b)²/(8b) is smallest in b, as a multiple of α: the root of
# 4β² + 2β − 1 = 0 (its logarithmic derivative 1/(α + b) + 4/(α + 2b) − 1/b vanishes there).
_BETA = (math.sqrt(5.0) - 1.0) / 4.0

# Above this sequence length RoPE's score matrices are bounded by ‖W_Q‖‖W_K‖/√d_h instead of
# pair by pair (T² small SVDs per head).
_PAIRS_MAX_TOKENS = 64


def _rotations(att: Any, n_tokens: int) -> torch.Tensor | None:
    """RoPE's rotation of each position as a ``d_h × d_h`` matrix, built from the layer's own
    cos/sin tables (the parameters its forward uses, so the entries are exact); None without
    RoPE or for ``T`` above ``_PAIRS_MAX_TOKENS``."""
    if att.pos != "rope" or n_tokens > _PAIRS_MAX_TOKENS:
        return None
    dh, half = att.d_head, att.d_head // 2
    like = att.q.weight
    cos = att._table("cos", like, n_tokens).detach().double()
    sin = att._table("sin", like, n_tokens).detach().double()
    rot = torch.zeros(n_tokens, dh, dh, dtype=torch.float64, device=like.device)
    j = torch.arange(half, device=like.device)
    rot[:, j, j] = cos
    rot[:, j, j + half] = -sin
    rot[:, j + half, j] = sin
    rot[:, j + half, j + half] = cos
    if 2 * half < dh:  # odd head width: the last channel is not rotated
        rot[:, dh - 1, dh - 1] = 1.0
    return rot


def _rotated(
    rotations: torch.Tensor, w: torch.Tensor, inner: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fl(R_i (w inner))`` for every position ``i`` and a bound on each one's Frobenius error:
    ``‖R_i‖ e_p + e_i`` with ``e_p`` the error of ``fl(w inner)`` and ``e_i`` that of the product
    with ``R_i``."""
    w = w.detach().double()
    if inner is None:
        return products(rotations, w)
    p, e_p = _product(w, inner)
    rp, e_i = products(rotations, p)
    r_norm = torch.linalg.matrix_norm(rotations, ord=2) / (1.0 - 64.0 * U64)
    return rp, e_i + r_norm * e_p * (1.0 + 2.0 * U64)


def _score_norms(
    wq: torch.Tensor,
    wk: torch.Tensor,
    dh: int,
    rope: bool,
    inner: torch.Tensor | None,
    rotations: torch.Tensor | None = None,
) -> tuple[float, float]:
    """Upper bounds ``(m_q, m_k)`` on ``‖Wᵀ M_ik‖`` and ``‖M_ik W‖`` for the head's score matrices
    ``M_ik = W_Qᵀ R_iᵀ R_k W_K / √d_h`` (``R = I`` without RoPE), ``W = inner`` (``I`` when None),
    in exact arithmetic: products through :func:`sigma_blocks`, the division by ``√d_h`` rounded
    up. Under RoPE with the position rotations given, the largest over every pair ``(i, k)`` of
    positions (:func:`sigma_pairs_max`); without them ``‖W_Q‖‖W_K‖/√d_h``, which holds for any
    rotations between the two."""
    root = math.sqrt(dh)  # correctly rounded; dividing by a value within u of √d_h costs 2u
    if rotations is not None:  # M_ik = (R_i W_Q)ᵀ (R_k W_K) / √d_h, every pair of positions
        q_rot, q_err = _rotated(rotations, wq, None)
        k_rot, k_err = _rotated(rotations, wk, None)
        qw_rot, qw_err = (q_rot, q_err) if inner is None else _rotated(rotations, wq, inner)
        kw_rot, kw_err = (k_rot, k_err) if inner is None else _rotated(rotations, wk, inner)
        m_q = up(sigma_pairs_max(qw_rot, qw_err, k_rot, k_err) / root * (1.0 + 2.0 * U64))
        m_k = up(sigma_pairs_max(q_rot, q_err, kw_rot, kw_err) / root * (1.0 + 2.0 * U64))
        return m_q, m_k
    if rope:  # R_{k−i} sits between W_Q and W_K: only the factors' norms are common to all pairs
        q_side = sigma(wq) if inner is None else sigma_blocks([(wq, inner)])
        k_side = sigma(wk) if inner is None else sigma_blocks([(wk, inner)])
        m_q = up(up(q_side * sigma(wk)) / root * (1.0 + 2.0 * U64))
        m_k = up(up(sigma(wq) * k_side) / root * (1.0 + 2.0 * U64))
        return m_q, m_k
    if inner is None:
        m = up(sigma_blocks([(wq.T, wk)]) / root * (1.0 + 2.0 * U64))
        return m, m
    # ‖Wᵀ M‖ = ‖W_Kᵀ (W_Q W)‖ and ‖M W‖ = ‖W_Qᵀ (W_K W)‖ (products of exact bounds, each
    # evaluated as one product of the computed inner factor, whose own error is added)
    m_q = up(sigma_triple(wk.T, wq, inner) / root * (1.0 + 2.0 * U64))
    m_k = up(sigma_triple(wq.T, wk, inner) / root * (1.0 + 2.0 * U64))
    return m_q, m_k


def attention_rule(
    att: Any,
    n_tokens: int,
    r_hi: float,
    inner: torch.Tensor | None = None,
    parts: Sequence[tuple[torch.Tensor | None, float]] | None = None,
    centre: torch.Tensor | None = None,
) -> tuple[float, float, str]:
    """(Lipschitz factor, output token-norm bound) of dot-product attention, inputs ``‖u_j‖ ≤ R``.

    Per head, with ``‖M‖`` the norm of ``W_Qᵀ W_K / √d_h`` (under RoPE the largest of
    ``‖(R_i W_Q)ᵀ (R_k W_K)‖ / √d_h`` over the pairs of positions, for ``T ≤ 64``, and otherwise
    ``‖W_Q‖‖W_K‖/√d_h``, which holds whatever rotations sit between them) and ``V = W_V``:
    ``‖J‖₂ ≤ ‖V‖ (√T + (1 + √T) R² ‖M‖)`` (R7: the value term ``‖P‖₂ ≤ √T`` for a row-stochastic
    ``P``; the query term, a weighted covariance bound; the key term, ``T`` block rows of norm at
    most ``R · R‖M‖``). R16 bounds the value and key terms together block by block: block
    ``(i, k)`` has norm at most ``P_ik (‖V‖ + 2‖V‖R²‖M‖(1 − P_ik))``, and the Schur test on the
    rows (sums ``≤ ‖V‖(1 + R²‖M‖)``) and columns (sums ``≤ T‖V‖(1 + 2R²‖M‖)²/(8R²‖M‖)``) gives
    ``‖V‖R²‖M‖ + √(row · column)``. Each head takes the smaller.
    Heads stack and ``W_O`` follows: ``‖J‖ ≤ ‖W_O‖ √(Σ_h ‖J_h‖²)`` (R7); or, since each head's
    Jacobian is ``(I_T ⊗ V_h) K_h`` with ``‖K_h‖ ≤ κ_h`` (the same bounds with ``V = I``), read
    through ``C_h = W_O,h V_h``: ``‖J‖ ≤ ‖[C_1 … C_H]‖ √(Σ_h κ_h²)`` (R14). The rule takes the
    smaller. Each output token is ``W_O`` applied to per-head convex combinations ``m_h`` of
    value inputs, ``y_i = Σ_h C_h m_h`` with ``‖m_h‖ ≤ R``: ``‖y_i‖ ≤ R min(‖W_O‖ √(Σ_h ‖V_h‖²),
    ‖[C_1 … C_H]‖ √H)``.

    With ``inner = W`` the layer reads ``u = W h + c`` and the factor is its constant in ``h``
    (R16): ``V`` becomes ``V W`` in the value term and ``M`` becomes ``Wᵀ M`` (query) and
    ``M W`` (key) in the score terms, which can be much smaller than ``‖W‖`` times the plain
    factor when ``W`` does not align with them. ``R`` still bounds the norms of the ``u_j``.

    With ``parts = [(A_1, r_1), …]`` (and ``centre = c``) the tokens are known to lie in the set
    ``u = c + Σ_j A_j z_j``, ``‖z_j‖ ≤ r_j`` (``A_j = None`` is the identity), for instance
    ``u = W_s h + W_e e + b`` behind outer recall. R16 then needs only ``ρ ≥ ‖V (u − c)‖``
    (``Σ_j ‖V A_j‖ r_j``) and the score factors ``g_q ≥ ‖Wᵀ M_ik u‖``, ``g_k ≥ ‖uᵀ M_ik W‖``
    (``Σ_j ‖Wᵀ M_ik A_j‖ r_j + ‖Wᵀ M_ik c‖`` and likewise), with ``ρ g_q`` and ``ρ g_k`` in place
    of ``‖V‖ R² m_q`` and ``‖V‖ R² m_k``: each is at most the plain one, and much smaller where
    ``V`` or ``M`` do not align with the maps that make the tokens.

    Parameters
    ----------
    att : module
        The attention layer (``dynamo.models.LoopedTransformer``'s, bias-free projections).
    n_tokens : int
        Sequence length ``T``.
    r_hi : float
        An upper bound on every input token's norm.
    inner : torch.Tensor, optional
        The linear map ``W`` (``d × d'``) in front of the layer; ``None`` is the identity.
    parts : sequence of (torch.Tensor or None, float), optional
        The token set ``u = c + Σ_j A_j z_j`` with ``‖z_j‖ ≤ r_j``, as pairs ``(A_j, r_j)``
        (``A_j`` of shape ``d × d_j``, ``None`` for the identity); ``None`` is the ball of radius
        ``r_hi``. ``r_hi`` must still bound every token's norm (the output bound uses it).
    centre : torch.Tensor, optional
        The constant ``c`` of that set (``d``); ``None`` is 0.

    Returns
    -------
    tuple of (float, float, str)
        The factor, the bound on output token norms, and a note.

    Examples
    --------
    >>> import dynamo as dy
    >>> from dynamo.kernel import attention_rule
    >>> model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=0).double()
    >>> lip, out_hi, note = attention_rule(model.layers[0].attn.branch, 4, 2.0)
    >>> round(lip, 3), round(out_hi, 3)
    (4.227, 2.31)
    """
    found = layer_heads(att, n_tokens, r_hi, inner, parts, centre)
    return found.lip, found.out_hi, found.note


@dataclass(frozen=True)
class Heads:
    """One attention layer's per-head bounds, as :func:`attention_rule` combines them.

    Attributes
    ----------
    heads : list of float
        ``L_h``: a bound on head ``h``'s Jacobian (its value map ``V_h`` included), in ``h``
        through the input map.
    kernels : list of float
        ``κ_h``: the same with ``V_h = I`` (R14's kernels).
    wo : torch.Tensor
        ``W_O`` (float64).
    mixed : list of (torch.Tensor, torch.Tensor)
        ``(W_O,h, V_h)`` per head: ``C = [W_O,1 V_1 … W_O,H V_H]``.
    lip, out_hi : float
        The layer's factor (the smaller of R7's and R14's mixing, widened for its rounding) and
        its output token-norm bound.
    note : str
        How the factor was reached.
    """

    heads: list[float]
    kernels: list[float]
    wo: torch.Tensor
    mixed: list[tuple[torch.Tensor, torch.Tensor]]
    lip: float
    out_hi: float
    note: str


def layer_heads(
    att: Any,
    n_tokens: int,
    r_hi: float,
    inner: torch.Tensor | None = None,
    parts: Sequence[tuple[torch.Tensor | None, float]] | None = None,
    centre: torch.Tensor | None = None,
) -> Heads:
    """The per-head bounds behind :func:`attention_rule` (same arguments), for rules that mix
    the heads with what follows the layer (R17)."""
    dh, H = att.d_head, att.n_heads
    wq, wk, wv = (m.weight.detach().double() for m in (att.q, att.k, att.v))
    wo = att.o.weight.detach().double()
    w = None if inner is None else inner.detach().double()
    w_norm = 1.0 if w is None else sigma(w)
    rotations = _rotations(att, n_tokens)
    heads, kernels, vals, mixed = [], [], 0.0, []
    by_blocks = 0
    for h in range(H):
        rows = slice(h * dh, (h + 1) * dh)
        qh, kh, vh = wq[rows], wk[rows], wv[rows]
        v_norm = sigma(vh)
        vw = v_norm if w is None else sigma_blocks([(vh, w)])
        if parts is None:
            m_q, m_k = _score_norms(qh, kh, dh, att.pos == "rope", w, rotations)
            head, used = _head(vw, v_norm, m_q, m_k, n_tokens, r_hi, w is None)
            kernel, _ = _head(w_norm, 1.0, m_q, m_k, n_tokens, r_hi, w is None)
        else:
            g_q, g_k = _score_sups(qh, kh, dh, att.pos == "rope", w, parts, centre, rotations)
            rho_v, rho_1 = _radius(vh, parts), _radius(None, parts)
            head, used = _head_set(vw, rho_v, g_q, g_k, n_tokens)
            kernel, _ = _head_set(w_norm, rho_1, g_q, g_k, n_tokens)
        by_blocks += used
        heads.append(head)
        kernels.append(kernel)
        vals += v_norm**2
        mixed.append((wo[:, rows], vh))
    o, c = sigma(wo), sigma_blocks(mixed)
    stacked = _formulas.attention_heads(o, heads)
    through = _formulas.attention_heads_mixed(c, kernels)
    lip = up(min(stacked, through) * _widen(H))
    out_hi = up(min(o * math.sqrt(vals), c * math.sqrt(H)) * r_hi)
    how = "‖W_O V_h‖ (R14)" if through < stacked else "‖W_O‖‖V_h‖ (R7)"
    blocks = f", {by_blocks}/{H} heads by blocks (R16)" if by_blocks else ""
    folded = "" if w is None else ", through the input map (R16)"
    folded += "" if parts is None else f", tokens in a set of {len(parts)} parts (R16)"
    note = f"T={n_tokens}, R={r_hi:.4g}, {H} heads, pos={att.pos}, heads by {how}{blocks}{folded}"
    return Heads(heads, kernels, wo, mixed, lip, out_hi, note)


def _head(
    value: float, v_norm: float, m_q: float, m_k: float, n_tokens: int, r_hi: float, plain: bool
) -> tuple[float, int]:
    """One head's factor: the smaller of R7's three terms (R7's own closed form for a plain
    layer, R16's with an input map) and R16's block form; ``1`` in the second place where the
    block form is the smaller."""
    r2 = up(r_hi * r_hi)
    query, key = up(v_norm * r2 * m_q), up(v_norm * r2 * m_k)
    if plain:  # value = ‖V‖ and m_q = m_k = ‖M‖
        terms = _formulas.attention_head(v_norm, m_q, n_tokens, r_hi)
    else:
        terms = _formulas.attention_head_terms(value, query, key, n_tokens)
    return _or_blocks(terms, value, query, key, n_tokens)


def _or_blocks(
    terms: float, value: float, query: float, key: float, n_tokens: int
) -> tuple[float, int]:
    """The smaller of ``terms`` and R16's block form (where its key term is positive), with ``1``
    in the second place where the block form is the smaller. The block form takes ``b₊ =
    max(key, β α)`` with ``β = (√5 − 1)/4`` (R16 needs only ``b₊ ≥ key``): its ``(α + b₊)(α +
    2b₊)²/(8b₊)`` is smallest at ``b₊ = β α`` and grows above it, so a smaller key term never
    gives a larger bound."""
    if key <= 0:
        return terms, 0
    blocks = _formulas.attention_head_blocks(value, query, max(key, _BETA * value), n_tokens)
    return (blocks, 1) if blocks < terms else (terms, 0)


def _times(a: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``fl(a b)`` (``a`` alone for ``b = None``) and a bound on its Frobenius error, as a stack
    of one for :func:`sigma_pairs_max`."""
    if b is None:
        return a[None], torch.zeros(1, dtype=a.dtype, device=a.device)
    prod, err = _product(a, b)
    return prod[None], torch.full((1,), err, dtype=a.dtype, device=a.device)


def _pairs_max(
    wq: torch.Tensor,
    x: torch.Tensor | None,
    wk: torch.Tensor,
    y: torch.Tensor | None,
    rope: bool,
    rotations: torch.Tensor | None,
) -> float:
    """An upper bound on ``max_{i,k} ‖(R_i W_Q X)ᵀ (R_k W_K Y)‖`` in exact arithmetic (``R = I``
    without RoPE; ``X = None`` or ``Y = None`` the identity): every pair of positions where the
    rotations are given; under RoPE without them ``‖W_Q X‖ ‖W_K Y‖``, which holds for any
    rotations between the two."""
    if rotations is not None:
        xs, ex = _rotated(rotations, wq, x)
        ys, ey = _rotated(rotations, wk, y)
        return sigma_pairs_max(xs, ex, ys, ey)
    if rope:
        left = sigma(wq) if x is None else sigma_blocks([(wq, x)])
        right = sigma(wk) if y is None else sigma_blocks([(wk, y)])
        return up(left * right)
    return sigma_pairs_max(*_times(wq, x), *_times(wk, y))


def _score_sups(
    wq: torch.Tensor,
    wk: torch.Tensor,
    dh: int,
    rope: bool,
    inner: torch.Tensor | None,
    parts: Sequence[tuple[torch.Tensor | None, float]],
    centre: torch.Tensor | None,
    rotations: torch.Tensor | None,
) -> tuple[float, float]:
    """Upper bounds ``(g_q, g_k)`` on ``‖Wᵀ M_ik u‖`` and ``‖uᵀ M_ik W‖`` over the tokens ``u =
    c + Σ_j A_j z_j`` (``‖z_j‖ ≤ r_j``) and every pair of positions, ``M_ik = (R_i W_Q)ᵀ (R_k
    W_K)/√d_h``: ``Σ_j r_j max_ik ‖(R_i W_Q W)ᵀ (R_k W_K A_j)‖/√d_h + max_ik ‖(R_i W_Q W)ᵀ (R_k
    W_K c)‖/√d_h`` for ``g_q`` and the same with ``W`` and ``A_j`` (``c``) swapped for ``g_k``,
    in exact arithmetic (the products through :func:`sigma_pairs_max`, each sum and the division
    by ``√d_h`` rounded up)."""
    w = None if inner is None else inner.detach().double()
    terms: list[tuple[torch.Tensor | None, float]] = [
        (None if a is None else a.detach().double(), float(r)) for a, r in parts
    ]
    if centre is not None and float(centre.detach().abs().max()) > 0:
        terms.append((centre.detach().double().reshape(-1, 1), 1.0))
    root = math.sqrt(dh)  # correctly rounded; dividing by a value within u of √d_h costs 2u
    g_q = g_k = 0.0
    for a, r in terms:
        g_q = up(g_q + up(r * _pairs_max(wq, w, wk, a, rope, rotations)))
        g_k = up(g_k + up(r * _pairs_max(wq, a, wk, w, rope, rotations)))
    return up(g_q / root * (1.0 + 2.0 * U64)), up(g_k / root * (1.0 + 2.0 * U64))


def _radius(v: torch.Tensor | None, parts: Sequence[tuple[torch.Tensor | None, float]]) -> float:
    """``ρ ≥ ‖V (u − c)‖`` over the tokens ``u = c + Σ_j A_j z_j``: ``Σ_j r_j ‖V A_j‖`` in exact
    arithmetic (``V = None`` the identity, ``A_j = None`` likewise)."""
    total = 0.0
    for a, r in parts:
        if a is None:
            norm = 1.0 if v is None else sigma(v)
        elif v is None:
            norm = sigma(a.detach().double())
        else:
            norm = sigma_blocks([(v, a.detach().double())])
        total = up(total + up(float(r) * norm))
    return total


def _head_set(value: float, rho: float, g_q: float, g_k: float, n_tokens: int) -> tuple[float, int]:
    """One head's factor on a token set (R16 with ``ρ``, ``g_q``, ``g_k``): the smaller of the
    three terms and the block form; ``1`` in the second place where the block form is the
    smaller."""
    query, key = up(rho * g_q), up(rho * g_k)
    terms = _formulas.attention_head_terms(value, query, key, n_tokens)
    return _or_blocks(terms, value, query, key, n_tokens)
