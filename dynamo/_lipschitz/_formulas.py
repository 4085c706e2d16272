"""The closed forms the built-in Lipschitz rules evaluate, written once for floats and symbols.

The rules call these functions with floats (``sqrt=math.sqrt``); ``theory`` calls the very same
functions with sympy symbols (``sqrt=sympy.sqrt``) and proves that what they return bounds the
Lipschitz constant it derives (claims R1–R11, ``dynamo prove R7``). So a change to a constant here
changes both the bound dynamo reports and the statement the proof must reach: a factor made too
small no longer follows from the derivation. Rules call them through this module (``_formulas.f``),
never through a copied name, so that what the proof reads is what the rules run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "add",
    "attention_head",
    "attention_head_blocks",
    "attention_head_terms",
    "attention_heads",
    "attention_heads_mixed",
    "attention_mlp",
    "bistable",
    "compose",
    "concat",
    "concat_state",
    "gelu_mlp",
    "gelu_mlp_residual",
    "henon",
    "linear",
    "logistic",
    "residual",
    "rmsnorm",
    "rope_score_norm",
    "scale",
    "sdpa",
    "select",
]

Sqrt = Callable[[Any], Any]


def compose(lip_f: Any, lip_g: Any) -> Any:
    """R8: the constant of ``g ∘ f`` from those of ``f`` and ``g``."""
    return lip_f * lip_g


def residual(lip_branch: Any) -> Any:
    """R3: the constant of ``h ↦ h + F(h)`` from that of ``F``."""
    return 1 + lip_branch


def add(lip_a: Any, lip_b: Any) -> Any:
    """R10: the constant of ``h ↦ a(h) + b(h)`` (or ``a − b``) from those of ``a`` and ``b``."""
    return lip_a + lip_b


def concat(lips: Sequence[Any], *, sqrt: Sqrt = math.sqrt) -> Any:
    """R10: the constant of ``h ↦ [a₁(h); …; a_k(h)]`` (concatenation along any axis) from those
    of the parts: ``√(Σ L_i²)``."""
    return sqrt(sum(lip**2 for lip in lips))


def scale(c_max: Any, lip: Any) -> Any:
    """R10: the constant of ``h ↦ c ⊙ a(h)`` for a constant ``c`` (broadcast) with ``|c| ≤ c_max``
    entrywise."""
    return c_max * lip


def select(lip: Any) -> Any:
    """R10: the constant of ``h ↦ S a(h)`` where ``S`` reshapes, permutes or selects entries
    (each output entry is a distinct input entry, or a copy of one along a broadcast axis of
    size 1 that is not expanded): ``‖S v‖ ≤ ‖v‖``."""
    return lip


def sdpa(
    lip_q: Any,
    lip_k: Any,
    lip_v: Any,
    q_hi: Any,
    k_hi: Any,
    v_hi: Any,
    n_rows: Any,
    c: Any,
    *,
    sqrt: Sqrt = math.sqrt,
) -> Any:
    """R11: the constant of ``h ↦ softmax(c q kᵀ + mask) v`` (per head; ``n_rows`` is ``T``,
    the number of query rows, which is the number of keys in self-attention) from the
    constants of ``q``, ``k``, ``v`` in ``h`` and bounds ``Q, K, V`` on the norms of their rows
    (tokens) over the domain: ``√T L_v + |c| V (K L_q + √T Q L_k)``."""
    return sqrt(n_rows) * lip_v + c * v_hi * (k_hi * lip_q + sqrt(n_rows) * q_hi * lip_k)


def linear(sigma_w: Any) -> Any:
    """R1: the constant of ``x ↦ W x + b`` token-wise, from ``σ_max(W)``."""
    return sigma_w


def concat_state(sigma_ws: Any) -> Any:
    """R4: the constant in ``h`` of ``[h; e] ↦ W_s h + W_e e + b`` from ``σ_max(W_s)``."""
    return sigma_ws


def rmsnorm(gmax: Any, d: Any, lo: Any, eps: Any, *, sqrt: Sqrt = math.sqrt) -> Any:
    """R5 (and R6 with ``lo = 0``): the constant of ``x ↦ γ ⊙ √d x / √(‖x‖² + dε)`` on tokens
    of norm at least ``lo``."""
    return gmax * sqrt(d / (lo**2 + d * eps))


def rope_score_norm(q_norm: Any, k_norm: Any, d_head: Any, *, sqrt: Sqrt = math.sqrt) -> Any:
    """R7: a bound on ``‖M‖₂`` for the scores ``x_iᵀ M_ij x_j`` of one head under RoPE, where
    ``M_ij = W_Qᵀ R_{j−i} W_K / √d_h`` with ``R`` orthogonal."""
    return q_norm * k_norm / sqrt(d_head)


def attention_head(
    v_norm: Any, m_norm: Any, n_tokens: Any, r: Any, *, sqrt: Sqrt = math.sqrt
) -> Any:
    """R7: the constant of one softmax-attention head on ``T`` tokens of norm at most ``R``:
    ``‖V‖ (√T + (1 + √T) R² ‖M‖)``."""
    return v_norm * (sqrt(n_tokens) + (1 + sqrt(n_tokens)) * r**2 * m_norm)


def attention_head_terms(
    value: Any, query: Any, key: Any, n_tokens: Any, *, sqrt: Sqrt = math.sqrt
) -> Any:
    """R16: R7's three terms for a head that reads ``u_k = W h_k + c_k`` (``‖u_k‖ ≤ R``), as a
    function of ``h``: ``√T ‖V W‖ + ‖V‖ R² m_q + √T ‖V‖ R² m_k`` with ``value = ‖V W‖``,
    ``query = ‖V‖ R² m_q`` (``m_q ≥ ‖Wᵀ M_ik‖``) and ``key = ‖V‖ R² m_k`` (``m_k ≥ ‖M_ik W‖``);
    with ``W = I`` it is R7's ``attention_head``."""
    return sqrt(n_tokens) * value + query + sqrt(n_tokens) * key


def attention_head_blocks(
    value: Any, query: Any, key: Any, n_tokens: Any, *, sqrt: Sqrt = math.sqrt
) -> Any:
    """R16: the same head with its value and key terms bounded together, block by block: block
    ``(i, k)`` of their sum has norm at most ``P_ik (value + 2 key (1 − P_ik))``
    (``P_ik ‖u_k − μ_i‖ ≤ 2R P_ik (1 − P_ik)``), whose rows sum to at most ``value + key`` and
    whose columns to at most ``T (value + 2 key)² / (8 key)``; the Schur test then gives
    ``query + √(T (value + key) (value + 2 key)² / (8 key))`` (``key > 0``)."""
    return query + sqrt(n_tokens * (value + key) * (value + 2 * key) ** 2 / (8 * key))


def attention_heads(o_norm: Any, heads: Sequence[Any], *, sqrt: Sqrt = math.sqrt) -> Any:
    """R7: the constant of heads stacked and mixed by ``W_O``: ``‖W_O‖ √(Σ_h L_h²)``."""
    return o_norm * sqrt(sum(h**2 for h in heads))


def attention_heads_mixed(c_norm: Any, kernels: Sequence[Any], *, sqrt: Sqrt = math.sqrt) -> Any:
    """R14: the constant of heads mixed by ``W_O`` read through ``C_h = W_O,h V_h``: each head's
    Jacobian is ``(I_T ⊗ V_h) K_h`` with ``‖K_h‖ ≤ κ_h`` (R7 with ``V = I``, ``κ_h =
    attention_head(1, m_h, T, R)``), so the layer's is ``[I_T ⊗ C_1, …, I_T ⊗ C_H] [K_1; …; K_H]``
    and ``‖J‖ ≤ ‖[C_1 … C_H]‖ √(Σ_h κ_h²)``."""
    return c_norm * sqrt(sum(k**2 for k in kernels))


def gelu_mlp(du_norm: Any, d_norm: Any, u_norm: Any, slope: Any) -> Any:
    """R15: the constant of ``x ↦ W_d φ(W_u x + b_u) + b_d`` for an activation whose derivative
    lies in ``[1 − s, s]`` (GELU, ``s = ACTIVATION_SLOPES[GELU]``): its Jacobian is
    ``W_d (I/2 + E) W_u`` with ``E`` diagonal, ``|E_kk| ≤ s − 1/2``, so
    ``‖J‖ ≤ ‖W_d W_u‖/2 + (s − 1/2) ‖W_d‖ ‖W_u‖``."""
    return (du_norm + (2 * slope - 1) * d_norm * u_norm) / 2


def gelu_mlp_residual(i_du_norm: Any, d_norm: Any, u_norm: Any, slope: Any) -> Any:
    """R15: the constant of ``x ↦ x + W_d φ(W_u x + b_u) + b_d`` (derivative of ``φ`` in
    ``[1 − s, s]``): ``‖I + W_d W_u/2‖ + (s − 1/2) ‖W_d‖ ‖W_u‖``."""
    return i_du_norm + (2 * slope - 1) * d_norm * u_norm / 2


def attention_mlp(
    through_a: Any, through_heads: Any, heads: Sequence[Any], *, sqrt: Sqrt = math.sqrt
) -> Any:
    """R17: the constant of an attention sub-layer and the GELU MLP sub-layer after it, with no
    norm between, bounded together: ``h ↦ v + F(v)``, ``v = u + Attn(u)``, ``u = A h + c``. Its
    Jacobian is ``M (I_T ⊗ A) + Σ_h M (I_T ⊗ X_h) K_h`` with ``M = blockdiag_t(I + W_d D_t W_u)``
    and the heads read through ``X = [X_1 … X_H]`` (``X_h = W_O,h`` and ``K_h`` head ``h``'s
    Jacobian, or ``X_h = W_O,h V_h`` and ``K_h`` its kernel), ``‖K_h‖ ≤`` ``heads[h]``: ``‖J‖ ≤
    f_A + f_X √(Σ_h heads[h]²)`` with ``through_a = f_A ≥ max_t ‖(I + W_d D_t W_u) A‖`` and
    ``through_heads = f_X ≥ max_t ‖(I + W_d D_t W_u) X‖`` (each by R15's midpoint,
    :func:`gelu_mlp_residual` with ``‖Y + W_d W_u Y/2‖`` and ``‖W_u Y‖``)."""
    return through_a + through_heads * sqrt(sum(h**2 for h in heads))


def logistic(r: Any, radius: Any) -> Any:
    """R9: the constant of ``h ↦ r h (1 − h)`` (``r > 0``) on ``|h| ≤ R``: ``r (1 + 2R)``."""
    return r * (1 + 2 * radius)


def henon(a: Any, b: Any, radius: Any, *, sqrt: Sqrt = math.sqrt) -> Any:
    """R9: the constant of ``(x, y) ↦ (1 − a x² + y, b x)`` on ``‖(x, y)‖ ≤ R``: the Frobenius
    norm of its Jacobian at ``|x| = R``, ``√(4a²R² + 1 + b²)``."""
    return sqrt(4 * a**2 * radius**2 + 1 + b**2)


def bistable(
    eta: Any,
    radius: Any,
    *,
    maximum: Callable[..., Any] = max,
    absolute: Callable[[Any], Any] = abs,
) -> Any:
    """R9: the constant of ``h ↦ h + η(h − h³)`` elementwise on ``‖h‖ ≤ R``: the largest
    ``|1 + η(1 − 3t²)|`` over ``|t| ≤ R``, at ``t = 0`` or ``|t| = R``."""
    return maximum(absolute(1 + eta), absolute(1 + eta - 3 * eta * radius**2))
