"""R16 (one attention head read through an input map ``u = W h + c``, its value and key terms
bounded together by the norms of their blocks and the Schur test), derived on the derivation
engine.

One softmax head on ``T`` tokens reads ``u_k = W h_k + c_k`` (``W`` a fixed matrix, the ``c_k``
constants; ``W = I`` is R7's plain head) with ``‖u_k‖ ≤ R``: ``o_i = Σ_k P_ik V u_k`` with
``P_ik = exp(s_ik) / Σ_l exp(s_il)`` over the ``n ≤ T`` tokens row ``i`` attends to (``n = T``
without a mask, ``n = i`` under a causal mask; ``P_ik = 0`` for the others, so the sums of the
norm bounds run over all ``T`` tokens with those zeros), scores ``s_ik = u_iᵀ M_ik u_k`` (``M_ik =
M`` plain, ``W_Qᵀ R_{k−i} W_K / √d_h`` under RoPE) and ``μ_i = Σ_k P_ik u_k``. The constant is in
``h``; the formal statement writes ``u_k`` as ``x(k)``, the name R7's cited lemmas give their
vectors. The hypotheses are ``‖V W‖ ≤ α``, ``‖V‖ ≤ v``, ``‖Wᵀ M_ik‖ ≤ m_q`` and ``‖M_ik W‖ ≤ m_k``
for all ``i, k``, ``v R² m_q ≤ q`` and ``v R² m_k ≤ b`` (the code passes these products rounded
up), and ``v R² m_k ≤ b₊`` with ``b₊ > 0`` for the block form. The derivation, every step on
symbols or a cited lemma:

1. the Jacobian (R7's derivation, the chain rule through ``u = W h + c``): moving ``h`` along
   ``δh`` moves ``u_k`` along ``W δh_k`` and the scores by ``δh_iᵀ (Wᵀ M_ik u_k) + u_iᵀ (M_ik W)
   δh_k`` (and second order), and the directional derivative of one coordinate of ``o_i`` (a
   sympy identity on sums over the ``n`` attended tokens) reads ``J = P ⊗ (V W) +
   blockdiag_i(V Y_i G_iᵀ) + (I_T ⊗ V) B``, ``Y_i`` with the columns ``√P_ik (u_k − μ_i)``,
   ``G_i`` with the columns ``√P_ik Wᵀ M_ik u_k``, and ``B`` the ``T`` block rows
   ``Y_i blockdiag_k(√P_ik u_iᵀ M_ik W)``, whose block ``(i, k)`` is
   ``P_ik (u_k − μ_i) u_iᵀ M_ik W``;
2. the query part (R7's step 3 with ``Wᵀ M_ik`` for ``M_ik``): ``‖Y_i‖ ≤ R`` (the weighted
   variance ``Σ_k P_ik ‖u_k − μ_i‖² = Σ_k P_ik ‖u_k‖² − ‖μ_i‖² ≤ R²``), ``‖G_i‖ ≤ m_q R``, so
   ``‖blockdiag_i(V Y_i G_iᵀ)‖ ≤ v m_q R² ≤ q``;
3. (a), R7's other two terms: ``‖P ⊗ V W‖ = ‖P‖‖V W‖ ≤ √T α`` (rows of ``P`` sum to 1), block
   row ``i`` of ``B`` has norm at most ``R · R m_k``, so ``‖B‖ ≤ √T m_k R²`` and ``‖(I_T ⊗ V) B‖
   ≤ √T b``; the triangle inequality: ``‖J‖ ≤ √T α + q + √T b`` = ``attention_head_terms``;
4. (b): ``E = P ⊗ (V W) + (I_T ⊗ V) B`` has the blocks ``E_ik = P_ik V W + P_ik V (u_k − μ_i)
   u_iᵀ M_ik W`` (the blocks of a Kronecker product, block multiplication, blockwise sums), so
   ``‖E_ik‖ ≤ N_ik := P_ik α + v R m_k P_ik ‖u_k − μ_i‖`` (the triangle inequality,
   homogeneity, submultiplicativity, ``‖u_i‖ ≤ R``);
5. the centred spread: ``‖u_k − μ_i‖ ≤ 2R (1 − P_ik)`` (``u_k − μ_i = Σ_{l≠k} P_il (u_k −
   u_l)``), so ``N_ik ≤ f(P_ik)`` with ``f(p) = (α + 2b₊) p − 2b₊ p²`` (``0 ≤ P_ik ≤ 1``), and
   ``(α + 2b₊)²/(8b₊) − f(p) = 2b₊ (p − (α + 2b₊)/(4b₊))² ≥ 0``: every column of ``N`` (``T``
   entries) sums to at most ``T (α + 2b₊)²/(8b₊)``;
6. every row of ``N`` sums to at most ``α + v R m_k Σ_k P_ik ‖u_k − μ_i‖ ≤ α + v R m_k · R ≤
   α + b₊`` (the weights sum to 1; ``(Σ_k P_ik ‖u_k − μ_i‖)² ≤ Σ_k P_ik ‖u_k − μ_i‖² ≤ R²`` by
   Cauchy–Schwarz and step 2's variance);
7. ``‖E‖ ≤ ‖N‖`` (a block matrix by the norms of its blocks), ``‖N‖² ≤ ‖N‖₁‖N‖_∞`` (Golub & Van
   Loan) with ``‖N‖₁``, ``‖N‖_∞`` the largest column and row sums of the nonnegative ``N``, so
   ``‖E‖ ≤ √(T (α + b₊)(α + 2b₊)²/(8b₊))``; with step 2 and the triangle inequality, ``‖J‖ ≤ q +
   √(T (α + b₊)(α + 2b₊)²/(8b₊))`` = ``attention_head_blocks``.

The code takes, per head, the smaller of R7's ``attention_head`` (plain heads), (a) and (b) (the
latter where its key term is positive). With ``V = I`` (``α = ‖W‖``, ``v = 1``) the same bounds
hold for R14's kernels ``K_h``. Generic indices ``i, k`` follow R7's convention: every assumption
that mentions one holds for each of its values, so a fact shown for the generic index holds for
all. The block matrices enter as in R7, given by their columns, entries or blocks (:class:`Pred`
facts); reading them off the directional derivative is linear algebra, not a sympy step.
"""

from __future__ import annotations

import copy
import math
from functools import cache
from typing import Any

import sympy as sp
import torch

import dynamo as dy
from dynamo.kernel import lipschitz_formulas as formulas

from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import SUBMULTIPLICATIVE, opnorm
from ._logic import Derivation, Pred, lemma
from ._rule_attention import (
    BLOCK_DIAGONAL_NORM,
    FROBENIUS_COLUMNS,
    I_T,
    KRONECKER_NORM,
    OPNORM_HOMOGENEOUS,
    OPNORM_TRIANGLE,
    ROW_SUM_NORM,
    SQUARE_ROOT_MONOTONE,
    SUM_MONOTONE,
    SUM_OF_BOUNDS,
    TRANSPOSE_NORM,
    TWO_NORM_BY_INF_NORM,
    WEIGHTED_AVERAGE,
    WEIGHTED_VARIANCE,
    M,
    P,
    R,
    T,
    V,
    Y,
    _block,
    _code_bound,
    _failed,
    _prod,
    _stacked_rows,
    _to_code,
    blockdiag,
    i,
    k,
    kron,
    mu,
    n,
    opnorm_inf,
    s,
    stack,
    transpose,
    v,
)
from ._rule_mixing import _rewrite
from ._rules import IDENTITY_NORM, ORDER_NEG, ORDER_SCALE

F64 = torch.float64

_HJ = "R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013"
_HJ_TOPICS = "R. A. Horn, C. R. Johnson, Topics in Matrix Analysis, 1991"
_GVL = "G. H. Golub, C. F. Van Loan, Matrix Computations, 4th ed., 2013"
_RUDIN = "W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976"

# ---------------------------------------------------------------------- function symbols
#: ``entrymat(a_ik, i, k, n)``: the n×n matrix whose entry (i, k) is a_ik
entrymat = sp.Function("entrymat")
#: the max-column-sum norm ``‖A‖₁`` (induced by the vector 1-norm)
opnorm_one = sp.Function("opnorm_1", nonnegative=True)

# ---------------------------------------------------------------------- lemma variables
_A, _B, _C, _E, _Id, _Yv, _yv, _F = sp.symbols("A B C E I Y y F", commutative=False)
_a, _c, _r, _w, _N = sp.symbols("a c r w N")
_an, _bn, _en = sp.symbols("a b e", commutative=False)  # blocks (matrices)
_ii, _kk, _nn = sp.symbols("i k n", integer=True, positive=True)
_X = sp.Function("x", commutative=False)  # lemma copy: vectors x_k
_mu = sp.Symbol("mu", commutative=False)

# ---------------------------------------------------------------------- cited lemmas
KRON_BLOCKS = lemma(
    "the blocks of a Kronecker product",
    "A ⊗ C is the block matrix [a_ik C]: if row i of A has the entries a_i1, …, a_in, then "
    "block (i, k) of A ⊗ C is a_ik C (for every i, k).",
    (f"{_HJ_TOPICS}, Def. 4.2.1",),
    (_A, _a, _ii, _kk, _nn, _C),
    (Pred("row_entries", (_A, _a, _ii, _kk, _nn)),),
    (Pred("blocks", (kron(_A, _C), _a * _C, _ii, _kk, _nn)),),
)

LEFT_KRON_BLOCKS = lemma(
    "the blocks of (I ⊗ C) B",
    "I ⊗ C is block diagonal with the diagonal blocks C, so by block multiplication, if block "
    "(i, k) of B is b_ik then block (i, k) of (I ⊗ C) B is C b_ik (for every i, k).",
    (f"{_HJ}, §0.7.2 (block multiplication of partitioned matrices)",),
    (_Id, _C, _B, _bn, _ii, _kk, _nn),
    (Pred("identity_matrix", (_Id,)), Pred("blocks", (_B, _bn, _ii, _kk, _nn))),
    (Pred("blocks", (kron(_Id, _C) * _B, _C * _bn, _ii, _kk, _nn)),),
)

BLOCK_SUM = lemma(
    "the blocks of a sum",
    "If block (i, k) of A is a_ik and block (i, k) of B is b_ik, conformally partitioned, then "
    "block (i, k) of A + B is a_ik + b_ik (matrices add entry by entry).",
    (f"{_HJ}, §0.7 (partitioned matrices)",),
    (_A, _an, _B, _bn, _ii, _kk, _nn),
    (Pred("blocks", (_A, _an, _ii, _kk, _nn)), Pred("blocks", (_B, _bn, _ii, _kk, _nn))),
    (Pred("blocks", (_A + _B, _an + _bn, _ii, _kk, _nn)),),
)

STACKED_ROW_BLOCKS = lemma(
    "the blocks of stacked block rows Y_i blockdiag_k(F_ik)",
    "If Y_i = [c_1 y_1, …, c_n y_n] (column blocks), then Y_i blockdiag_k(F_ik) = "
    "[c_1 y_1 F_i1, …, c_n y_n F_in] by block multiplication: stacking these block rows over "
    "i = 1, …, n gives the block matrix whose block (i, k) is c_k y_k F_ik.",
    (f"{_HJ}, §0.7.2 (block multiplication of partitioned matrices)",),
    (_Yv, _c, _yv, _F, _ii, _kk, _nn),
    (Pred("columns", (_Yv, _c, _yv, _kk, _nn)),),
    (Pred("blocks", (stack(_Yv * blockdiag(_F, _kk), _ii, _nn), _c * _yv * _F, _ii, _kk, _nn)),),
)

BLOCK_NORMS = lemma(
    "a block matrix's norm is at most that of its blocks' norms",
    "If block (i, k) of E (i, k = 1, …, n) satisfies ‖E_ik‖₂ ≤ N_ik with N_ik ≥ 0, then "
    "‖E‖₂ ≤ ‖N‖₂ for the n×n matrix N = [N_ik]: for x = (x_1; …; x_n) split like E's columns, "
    "‖Ex‖² = Σ_i ‖Σ_k E_ik x_k‖² ≤ Σ_i (Σ_k N_ik ‖x_k‖)² = ‖N ν‖² ≤ ‖N‖₂² ‖ν‖² with "
    "ν = (‖x_1‖, …, ‖x_n‖), ‖ν‖ = ‖x‖ (the triangle inequality, then N ≥ 0). The hypotheses are "
    "read for every i, k: they are applied only to a generic block (every assumption that "
    "mentions i or k holds for each i, k).",
    (
        f"elementary: the triangle inequality and the definition of the spectral norm as the "
        f"norm induced by ‖·‖₂ ({_HJ}, Example 5.6.6)",
    ),
    (_E, _en, _N, _ii, _kk, _nn),
    (Pred("blocks", (_E, _en, _ii, _kk, _nn)), sp.Le(opnorm(_en), _N), sp.Ge(_N, 0)),
    (sp.Le(opnorm(_E), opnorm(entrymat(_N, _ii, _kk, _nn))),),
)

MAX_ROW_SUM = lemma(
    "max-row-sum norm of a nonnegative matrix",
    "‖A‖_∞ (induced by the vector ∞-norm) is the largest row sum of |a_ik|. So if the entries "
    "a_ik of the n×n matrix A are ≥ 0 and every row sums to at most r (Σ_k a_ik ≤ r for every "
    "i), then ‖A‖_∞ ≤ r.",
    (f"{_HJ}, Example 5.6.5",),
    (_a, _ii, _kk, _nn, _r),
    (sp.Ge(_a, 0), sp.Le(sp.Sum(_a, (_kk, 1, _nn)), _r)),
    (sp.Le(opnorm_inf(entrymat(_a, _ii, _kk, _nn)), _r),),
)

MAX_COLUMN_SUM = lemma(
    "max-column-sum norm of a nonnegative matrix",
    "‖A‖₁ (induced by the vector 1-norm) is the largest column sum of |a_ik|. So if the "
    "entries a_ik of the n×n matrix A are ≥ 0 and every column sums to at most c (Σ_i a_ik ≤ c "
    "for every k), then ‖A‖₁ ≤ c.",
    (f"{_HJ}, Example 5.6.4",),
    (_a, _ii, _kk, _nn, _c),
    (sp.Ge(_a, 0), sp.Le(sp.Sum(_a, (_ii, 1, _nn)), _c)),
    (sp.Le(opnorm_one(entrymat(_a, _ii, _kk, _nn)), _c),),
)

SCHUR_TEST = lemma(
    "‖A‖₂² ≤ ‖A‖₁ ‖A‖_∞",
    "For every matrix A, ‖A‖₂ ≤ √(‖A‖₁ ‖A‖_∞) (for a nonnegative A: the square root of the "
    "largest column sum times the largest row sum, the Schur test). Proof: ‖A‖₂² = ρ(AᵀA) ≤ "
    "‖AᵀA‖₁ ≤ ‖Aᵀ‖₁ ‖A‖₁ = ‖A‖_∞ ‖A‖₁.",
    (f"{_GVL}, §2.3 (the norm inequalities of §2.3.2; the one-line proof above)",),
    (_A,),
    (),
    (sp.Le(opnorm(_A) ** 2, opnorm_one(_A) * opnorm_inf(_A)),),
)

CENTRED_SPREAD = lemma(
    "the spread of a point about a weighted mean",
    "If w_k ≥ 0, Σ_k w_k = 1 (k = 1, …, n), μ = Σ_k w_k x_k and ‖x_k‖ ≤ r for every k, then "
    "‖x_k − μ‖ ≤ 2r (1 − w_k) for every k: x_k − μ = Σ_l w_l (x_k − x_l) = Σ_{l≠k} w_l (x_k − "
    "x_l) (the weights sum to 1; the term l = k vanishes), ‖x_k − x_l‖ ≤ ‖x_k‖ + ‖x_l‖ ≤ 2r, and "
    "Σ_{l≠k} w_l = 1 − w_k. The hypotheses are read for every k (as in R7).",
    (
        "elementary: the triangle inequality (Horn & Johnson, Matrix Analysis, 2nd ed., Def. "
        "5.1.1) applied to the convex combination Σ_{l≠k} w_l (x_k − x_l)",
    ),
    (_w, _kk, _nn, _X, _mu, _r),
    (
        sp.Ge(_w, 0),
        sp.Eq(sp.Sum(_w, (_kk, 1, _nn)), 1),
        Pred("weighted_mean", (_mu, _w, _X, _kk, _nn)),
        sp.Le(opnorm(_X(_kk)), _r),
    ),
    (sp.Le(opnorm(_X(_kk) - _mu), 2 * _r * (1 - _w)),),
)

WEIGHTED_MEAN_SQUARE = lemma(
    "a weighted mean squared is at most the weighted mean of the squares",
    "If w_k ≥ 0 and Σ_k w_k = 1 (k = 1, …, n), then (Σ_k w_k a_k)² ≤ Σ_k w_k a_k² for real a_k: "
    "the Cauchy–Schwarz inequality for the vectors (√w_k) and (√w_k a_k) gives "
    "(Σ_k w_k a_k)² ≤ (Σ_k w_k)(Σ_k w_k a_k²).",
    (f"the Cauchy–Schwarz inequality, {_RUDIN}, Thm 1.35",),
    (_w, _a, _kk, _nn),
    (sp.Ge(_w, 0), sp.Eq(sp.Sum(_w, (_kk, 1, _nn)), 1)),
    (sp.Le(sp.Sum(_w * _a, (_kk, 1, _nn)) ** 2, sp.Sum(_w * _a**2, (_kk, 1, _nn))),),
)

# ---------------------------------------------------------------------- the claim's symbols
alpha = sp.Symbol("alpha", nonnegative=True)  # a bound on ‖V W‖
m_q, m_k = sp.symbols("m_q m_k", nonnegative=True)  # bounds on ‖Wᵀ M_ik‖, ‖M_ik W‖
q = sp.Symbol("q", nonnegative=True)  # the query term: v R² m_q ≤ q
kb = sp.Symbol("b", nonnegative=True)  # the key term of (a): v R² m_k ≤ b
kbp = sp.Symbol("b_+", positive=True)  # the key term of (b): v R² m_k ≤ b₊, b₊ > 0

W = sp.Symbol("W", commutative=False)  # the input map: u_k = W h_k + c_k
#: u(k): token k as the head reads it, u_k = W h_k + c_k. Its sympy name is ``x``, the name R7's
#: cited lemmas give their vectors (a lemma's function variable is matched by name)
u = sp.Function("x", commutative=False)
G = sp.Function("G", commutative=False)  # G(i): columns √P_ik Wᵀ M_ik u_k

#: the softmax weight P_ik (zero for a token row i does not attend to); row i sums to 1
p = sp.IndexedBase("p", nonnegative=True)[i, k]
#: the same with the normaliser written out, over the n tokens row i attends to
p_sum = sp.exp(s[i, k]) / sp.Sum(sp.exp(s[i, k]), (k, 1, n))

DEV = u(k) - mu(i)  # u_k − μ_i
WM = transpose(W) * M(i, k)  # Wᵀ M_ik
MW = M(i, k) * W  # M_ik W
#: F(i, k) = √P_ik u_iᵀ M_ik W (a 1×d block) and block row i of B: Y_i blockdiag_k(F(i, k))
F_IK = sp.sqrt(p) * transpose(u(i)) * MW
B_ROW = Y(i) * blockdiag(F_IK, k)
B_MAT = stack(B_ROW, i, T)

#: the Jacobian in h: value, diagonal (query) and off-diagonal (key) parts
J_VALUE = kron(P, V * W)
J_DIAG = blockdiag(V * Y(i) * transpose(G(i)), i)
J_OFF = kron(I_T, V) * B_MAT
J_HEAD = J_VALUE + J_DIAG + J_OFF
#: (b) splits off E = P ⊗ (V W) + (I_T ⊗ V) B: its block (i, k) and the bound N_ik on its norm
E_MAT = J_VALUE + J_OFF
E_IK = p * V * W + p * V * DEV * transpose(u(i)) * MW
N_IK = p * alpha + p * v * R * m_k * opnorm(DEV)

# one coordinate of the tokens and of their direction, and the scores' directional derivatives
_uc, _wc = sp.IndexedBase("upsilon", real=True), sp.IndexedBase("omega", real=True)
_qd = sp.IndexedBase("a", real=True)  # a_k = δh_iᵀ (Wᵀ M_ik u_k)    (the query moves)
_kd = sp.IndexedBase("beta", real=True)  # β_k = u_iᵀ (M_ik W) δh_k  (the key moves)
_s2 = sp.IndexedBase("c", real=True)  # c_k = δh_iᵀ Wᵀ M_ik W δh_k (second order)
_eps = sp.Symbol("epsilon", real=True)


@cache
def _derivative() -> Any:
    """d/dε of one coordinate of Σ_k P_ik(ε) u_k(ε) at ε = 0 for h moved to h + ε δh: the tokens
    become u_k + ε W δh_k (coordinate υ_k + ε ω_k) and the scores s_ik + ε(a_k + β_k) + ε² c_k."""
    se = s[i, k] + _eps * (_qd[k] + _kd[k]) + _eps**2 * _s2[k]
    num = sp.Sum(sp.exp(se) * (_uc[k] + _eps * _wc[k]), (k, 1, n))
    den = sp.Sum(sp.exp(se), (k, 1, n))
    return sp.diff(num / den, _eps).subs(_eps, 0)


@cache
def _block_rhs() -> Any:
    """The same coordinate read as Σ_k J_ik δh_k: Σ_k P_ik ω_k (P ⊗ V W, once V is applied),
    Σ_k P_ik (u_k − μ_i) a_k (Y_i G_iᵀ δh_i) and Σ_k P_ik (u_k − μ_i) β_k (B δh)."""
    nu = sp.Sum(p_sum * _uc[k], (k, 1, n))
    out = sp.Sum(p_sum * _wc[k], (k, 1, n)) + sp.Sum(p_sum * (_uc[k] - nu) * _kd[k], (k, 1, n))
    return out + sp.Sum(p_sum * (_uc[k] - nu) * _qd[k], (k, 1, n))


@cache
def _jacobian() -> Any:
    return sp.Eq(_derivative(), _block_rhs(), evaluate=False)


def _terms_code() -> Any:
    return formulas.attention_head_terms(alpha, q, kb, T, sqrt=sp.sqrt)


def _blocks_code() -> Any:
    return formulas.attention_head_blocks(alpha, q, kbp, T, sqrt=sp.sqrt)


def _r16_goal() -> tuple[Any, ...]:
    # the bounds are what dynamo's code evaluates, read now (a changed constant changes them)
    return (
        _jacobian(),
        sp.Le(opnorm(J_HEAD), _terms_code()),
        sp.Le(opnorm(J_HEAD), _blocks_code()),
    )


R16_ASSUMPTIONS = (
    sp.Le(opnorm(u(k)), R),  # 0: every token k in the ball of radius R ...
    sp.Le(opnorm(u(i)), R),  # 1: ... so also the query token i
    sp.Le(opnorm(V), v),  # 2
    sp.Le(opnorm(V * W), alpha),  # 3: the value term
    sp.Le(opnorm(WM), m_q),  # 4: every ‖Wᵀ M_ik‖
    sp.Le(opnorm(MW), m_k),  # 5: every ‖M_ik W‖
    Pred("row_entries", (P, p, i, k, T)),  # 6: row i of P (zero where row i does not attend)
    sp.Eq(sp.Sum(p, (k, 1, T)), 1),  # 7: row i of the softmax sums to 1
    Pred("rows", (P, T)),  # 8: P is T×T
    Pred("weighted_mean", (mu(i), p, u, k, T)),  # 9: μ_i = Σ_k P_ik u_k
    Pred("columns", (Y(i), sp.sqrt(p), DEV, k, T)),  # 10: Y_i's columns
    Pred("columns", (G(i), sp.sqrt(p), WM * u(k), k, T)),  # 11: G_i's columns
    Pred("identity_matrix", (I_T,)),  # 12
    sp.Le(v * R**2 * m_q, q),  # 13: the query term
    sp.Le(v * R**2 * m_k, kb),  # 14: the key term of (a)
    sp.Le(v * R**2 * m_k, kbp),  # 15: the key term of (b), b₊ > 0
)


# ---------------------------------------------------------------------- shared steps
def _variance(d: Derivation) -> Any:
    """Σ_k P_ik ‖u_k − μ_i‖² ≤ R² (the weighted variance, R7's step 3), so ‖Y_i‖ ≤ R; and
    P_ik ≤ 1."""
    d.lemma(ROW_SUM_NORM, "‖P‖_∞ ≤ 1 and P_ik ≤ 1", A=P, a=p, i=i, k=k, n=T, r=1)
    if _failed(d):
        return None
    var = d.lemma(
        WEIGHTED_VARIANCE,
        "Σ_k P_ik ‖u_k − μ_i‖² = Σ_k P_ik ‖u_k‖² − ‖μ_i‖²",
        w=p,
        k=k,
        n=T,
        x=u,
        mu=mu(i),
    )
    drop = d.inequality(var.rhs, sp.Sum(p * opnorm(u(k)) ** 2, (k, 1, T)), "dropping −‖μ_i‖² ≤ 0")
    _prod(d, opnorm(u(k)), R, opnorm(u(k)), R, "‖u_k‖² ≤ R²")
    avg = d.lemma(
        WEIGHTED_AVERAGE,
        "the P_ik-weighted average of ‖u_k‖² ≤ R²",
        w=p,
        a=opnorm(u(k)) ** 2,
        A_b=R**2,
        k=k,
        n=T,
    )
    variance = d.chain([var, drop, avg], "Σ_k P_ik ‖u_k − μ_i‖² ≤ R²")
    yf = d.lemma(
        FROBENIUS_COLUMNS,
        "‖Y_i‖² by its columns √P_ik (u_k − μ_i)",
        A=Y(i),
        c=sp.sqrt(p),
        B=DEV,
        k=k,
        n=T,
    )
    d.chain([yf, variance], "‖Y_i‖² ≤ R²")
    d.lemma(SQUARE_ROOT_MONOTONE, "‖Y_i‖ ≤ R", a=opnorm(Y(i)), b=R)
    return variance


def _key_factor(d: Derivation) -> Any:
    """‖u_iᵀ M_ik W‖ ≤ R m_k."""
    f1 = d.lemma(SUBMULTIPLICATIVE, "‖u_iᵀ M_ik W‖ ≤ ‖u_iᵀ‖‖M_ik W‖", A=transpose(u(i)), B=MW)
    ut = d.lemma(TRANSPOSE_NORM, "‖u_iᵀ‖ = ‖u_i‖", A=u(i))
    d.chain([ut, R16_ASSUMPTIONS[1]], "‖u_iᵀ‖ ≤ R")
    f2 = _prod(d, opnorm(transpose(u(i))), R, opnorm(MW), m_k, "‖u_iᵀ‖‖M_ik W‖ ≤ R m_k")
    return d.chain([f1, f2], "‖u_iᵀ M_ik W‖ ≤ R m_k")


def _query_part(d: Derivation, variance: Any) -> Any:
    """‖blockdiag_i(V Y_i G_iᵀ)‖ ≤ q: ‖Y_i‖ ≤ R (known), ‖G_i‖ ≤ m_q R."""
    g1 = d.lemma(SUBMULTIPLICATIVE, "‖Wᵀ M_ik u_k‖ ≤ ‖Wᵀ M_ik‖‖u_k‖", A=WM, B=u(k))
    g2 = _prod(d, opnorm(WM), m_q, opnorm(u(k)), R, "‖Wᵀ M_ik‖‖u_k‖ ≤ m_q R")
    gk = d.chain([g1, g2], "‖Wᵀ M_ik u_k‖ ≤ m_q R")
    _prod(d, gk.lhs, m_q * R, gk.lhs, m_q * R, "‖Wᵀ M_ik u_k‖² ≤ (m_q R)²")
    gsum = d.lemma(
        WEIGHTED_AVERAGE,
        "the P_ik-weighted average of ‖Wᵀ M_ik u_k‖² ≤ (m_q R)²",
        w=p,
        a=gk.lhs**2,
        A_b=(m_q * R) ** 2,
        k=k,
        n=T,
    )
    gf = d.lemma(
        FROBENIUS_COLUMNS,
        "‖G_i‖² by its columns √P_ik Wᵀ M_ik u_k",
        A=G(i),
        c=sp.sqrt(p),
        B=WM * u(k),
        k=k,
        n=T,
    )
    d.chain([gf, gsum], "‖G_i‖² ≤ (m_q R)²")
    d.lemma(SQUARE_ROOT_MONOTONE, "‖G_i‖ ≤ m_q R", a=opnorm(G(i)), b=m_q * R)
    gt = d.lemma(TRANSPOSE_NORM, "‖G_iᵀ‖ = ‖G_i‖", A=G(i))
    d.chain([gt, sp.Le(opnorm(G(i)), m_q * R)], "‖G_iᵀ‖ ≤ m_q R")
    c1 = d.lemma(SUBMULTIPLICATIVE, "‖Y_i G_iᵀ‖ ≤ ‖Y_i‖‖G_iᵀ‖", A=Y(i), B=transpose(G(i)))
    c2 = _prod(d, opnorm(Y(i)), R, opnorm(transpose(G(i))), m_q * R, "‖Y_i‖‖G_iᵀ‖ ≤ m_q R²")
    yg = d.chain([c1, c2], "‖Y_i G_iᵀ‖ ≤ m_q R²")
    v1 = d.lemma(SUBMULTIPLICATIVE, "‖V Y_i G_iᵀ‖ ≤ ‖V‖‖Y_i G_iᵀ‖", A=V, B=yg.lhs.args[0])
    v2 = _prod(d, opnorm(V), v, yg.lhs, m_q * R**2, "‖V‖‖Y_i G_iᵀ‖ ≤ v m_q R²")
    d.chain([v1, v2, R16_ASSUMPTIONS[13]], "‖V Y_i G_iᵀ‖ ≤ v R² m_q ≤ q")
    if _failed(d):
        return None
    return d.lemma(
        BLOCK_DIAGONAL_NORM,
        "the query part: ‖blockdiag_i(V Y_i G_iᵀ)‖ ≤ q",
        B=V * Y(i) * transpose(G(i)),
        i=i,
        b=q,
    )


# ---------------------------------------------------------------------- (a)
def _value_part(d: Derivation) -> Any:
    """‖P ⊗ V W‖ ≤ √T α."""
    p2 = d.lemma(TWO_NORM_BY_INF_NORM, "P has T rows", A=P, m=T)
    p2b = _prod(d, sp.sqrt(T), sp.sqrt(T), opnorm_inf(P), 1, "√T ‖P‖_∞ ≤ √T")
    d.chain([p2, p2b], "‖P‖₂ ≤ √T")
    kv = d.lemma(KRONECKER_NORM, "‖P ⊗ V W‖ = ‖P‖‖V W‖", A=P, B=V * W)
    kvb = _prod(d, opnorm(P), sp.sqrt(T), opnorm(V * W), alpha, "‖P‖‖V W‖ ≤ √T α")
    return d.chain([kv, kvb], "the value part: ‖P ⊗ V W‖ ≤ √T α")


def _key_part(d: Derivation, key_factor: Any) -> Any:
    """‖(I_T ⊗ V) B‖ ≤ √T b: block row i of B is Y_i blockdiag_k(√P_ik u_iᵀ M_ik W)."""
    d.lemma(SQUARE_ROOT_MONOTONE, "√P_ik ≤ 1 (P_ik ≤ 1)", a=sp.sqrt(p), b=1)
    xm = transpose(u(i)) * MW
    f1 = d.lemma(
        OPNORM_HOMOGENEOUS, "‖√P_ik u_iᵀ M_ik W‖ = √P_ik ‖u_iᵀ M_ik W‖", c=sp.sqrt(p), A=xm
    )
    f2 = _prod(d, sp.sqrt(p), 1, opnorm(xm), key_factor.rhs, "√P_ik ‖u_iᵀ M_ik W‖ ≤ R m_k")
    d.chain([f1, f2], "‖√P_ik u_iᵀ M_ik W‖ ≤ R m_k")
    d.lemma(IDENTITY_NORM, "‖I_T‖ ≤ 1", I=I_T)
    o2 = _stacked_rows(d, F_IK, B_ROW, B_MAT, m_k, "M_ik W")
    o3 = _prod(d, sp.sqrt(T), sp.sqrt(T), v * R**2 * m_k, kb, "√T v R² m_k ≤ √T b")
    if _failed(d):
        return None
    return d.chain([o2, o3], "the key part: ‖(I_T ⊗ V) B‖ ≤ √T b")


def _terms(d: Derivation, query: Any, key_factor: Any, pre: Any) -> Any:
    """(a): ‖J‖ ≤ √T α + q + √T b (then the code's bound)."""
    jv = _value_part(d)
    jo = _key_part(d, key_factor)
    if jo is None or _failed(d):
        return None
    t1 = d.lemma(OPNORM_TRIANGLE, "‖J‖ ≤ ‖P ⊗ V W‖ + ‖rest‖", A=J_VALUE, B=J_DIAG + J_OFF)
    t2 = d.lemma(OPNORM_TRIANGLE, "‖rest‖ ≤ ‖query part‖ + ‖key part‖", A=J_DIAG, B=J_OFF)
    s1 = d.lemma(
        SUM_OF_BOUNDS, "adding the query and key bounds", a=query.lhs, A_b=q, b=jo.lhs, B_b=jo.rhs
    )
    rest = d.chain([t2, s1], "‖blockdiag(V Y_i G_iᵀ) + (I_T ⊗ V) B‖ ≤ q + √T b")
    s2 = d.lemma(
        SUM_OF_BOUNDS, "adding the value bound", a=jv.lhs, A_b=jv.rhs, b=rest.lhs, B_b=rest.rhs
    )
    head = d.chain([t1, s2], "(a): ‖J‖ ≤ √T α + q + √T b")
    out = _to_code(
        d, head, pre, "dynamo's three-term rule (lipschitz_formulas.attention_head_terms)"
    )
    return None if _failed(d) else out


# ---------------------------------------------------------------------- (b)
def _blocks_of_e(d: Derivation) -> Any:
    """E = P ⊗ (V W) + (I_T ⊗ V) B has the blocks E_ik = P_ik V W + P_ik V (u_k − μ_i) u_iᵀ
    M_ik W."""
    bk = d.lemma(
        STACKED_ROW_BLOCKS,
        "block (i, k) of B is P_ik (u_k − μ_i) u_iᵀ M_ik W",
        Y=Y(i),
        c=sp.sqrt(p),
        y=DEV,
        F=F_IK,
        i=i,
        k=k,
        n=T,
    )
    kp = d.lemma(
        KRON_BLOCKS, "block (i, k) of P ⊗ V W is P_ik V W", A=P, a=p, i=i, k=k, n=T, C=V * W
    )
    ob = d.lemma(
        LEFT_KRON_BLOCKS,
        "block (i, k) of (I_T ⊗ V) B is V B_ik",
        I=I_T,
        C=V,
        B=B_MAT,
        b=bk.args[1],
        i=i,
        k=k,
        n=T,
    )
    return d.lemma(
        BLOCK_SUM,
        "block (i, k) of E is P_ik V W + P_ik V (u_k − μ_i) u_iᵀ M_ik W",
        A=J_VALUE,
        a=kp.args[1],
        B=J_OFF,
        b=ob.args[1],
        i=i,
        k=k,
        n=T,
    )


def _block_bound(d: Derivation, key_factor: Any) -> Any:
    """‖E_ik‖ ≤ N_ik = P_ik α + v R m_k P_ik ‖u_k − μ_i‖."""
    first, second = p * V * W, p * V * DEV * transpose(u(i)) * MW
    tri = d.lemma(
        OPNORM_TRIANGLE, "‖E_ik‖ ≤ ‖P_ik V W‖ + ‖P_ik V (u_k − μ_i) …‖", A=first, B=second
    )
    h1 = d.lemma(OPNORM_HOMOGENEOUS, "‖P_ik V W‖ = P_ik ‖V W‖", c=p, A=V * W)
    p1 = _prod(d, p, p, opnorm(V * W), alpha, "P_ik ‖V W‖ ≤ P_ik α")
    a1 = d.chain([h1, p1], "‖P_ik V W‖ ≤ P_ik α")
    z = V * DEV * transpose(u(i)) * MW
    h2 = d.lemma(OPNORM_HOMOGENEOUS, "‖P_ik Z‖ = P_ik ‖Z‖", c=p, A=z)
    z1 = d.lemma(
        SUBMULTIPLICATIVE, "‖Z‖ ≤ ‖V‖‖(u_k − μ_i) u_iᵀ M_ik W‖", A=V, B=DEV * key_factor.lhs.args[0]
    )
    z2 = d.lemma(
        SUBMULTIPLICATIVE,
        "‖(u_k − μ_i) u_iᵀ M_ik W‖ ≤ ‖u_k − μ_i‖‖u_iᵀ M_ik W‖",
        A=DEV,
        B=key_factor.lhs.args[0],
    )
    z3 = _prod(d, opnorm(DEV), opnorm(DEV), key_factor.lhs, key_factor.rhs, "≤ ‖u_k − μ_i‖ R m_k")
    zz = d.chain([z2, z3], "‖(u_k − μ_i) u_iᵀ M_ik W‖ ≤ R m_k ‖u_k − μ_i‖")
    z4 = _prod(d, opnorm(V), v, zz.lhs, zz.rhs, "‖V‖‖…‖ ≤ v R m_k ‖u_k − μ_i‖")
    zb = d.chain([z1, z4], "‖Z‖ ≤ v R m_k ‖u_k − μ_i‖")
    p2 = _prod(d, p, p, zb.lhs, zb.rhs, "P_ik ‖Z‖ ≤ v R m_k P_ik ‖u_k − μ_i‖")
    a2 = d.chain([h2, p2], "‖P_ik V (u_k − μ_i) u_iᵀ M_ik W‖ ≤ v R m_k P_ik ‖u_k − μ_i‖")
    s1 = d.lemma(SUM_OF_BOUNDS, "adding the two bounds", a=a1.lhs, A_b=a1.rhs, b=a2.lhs, B_b=a2.rhs)
    return d.chain([tri, s1], "‖E_ik‖ ≤ N_ik = P_ik α + v R m_k P_ik ‖u_k − μ_i‖")


def _column_sums(d: Derivation, spread: Any) -> tuple[Any, Any]:
    """Each N_ik ≤ (α + 2b₊)²/(8b₊), so each column sums to at most T (α + 2b₊)²/(8b₊).
    ``spread`` replaces the factor 2 of the centred spread (a false variant). Returns the
    column-sum fact and the bound c on an entry (None where a step failed)."""
    cs = d.lemma(
        CENTRED_SPREAD,
        "the centred spread: ‖u_k − μ_i‖ ≤ 2R (1 − P_ik)",
        w=p,
        k=k,
        n=T,
        x=u,
        mu=mu(i),
        r=R,
    )
    if spread != 2:
        cs = d.weaken(cs, spread * R * (1 - p), f"‖u_k − μ_i‖ ≤ {spread}R (1 − P_ik)")
    if _failed(d):
        return None, None
    coef = p * v * R * m_k
    e1 = _prod(
        d, coef, coef, cs.lhs, cs.rhs, "v R m_k P_ik ‖u_k − μ_i‖ ≤ 2 v R² m_k P_ik (1 − P_ik)"
    )
    e2 = d.lemma(
        SUM_OF_BOUNDS,
        "N_ik ≤ P_ik α + 2 v R² m_k P_ik (1 − P_ik)",
        a=p * alpha,
        A_b=p * alpha,
        b=e1.lhs,
        B_b=e1.rhs,
    )
    one = d.lemma(ORDER_NEG, "0 ≤ 1 − P_ik (P_ik ≤ 1)", a=p, b=1, k=1)
    pq = d.lemma(ORDER_SCALE, "0 ≤ 2 P_ik (1 − P_ik)", a=one.lhs, b=one.rhs, c=spread * p)
    e3 = _prod(
        d, v * R**2 * m_k, kbp, pq.rhs, pq.rhs, "v R² m_k · 2P_ik(1 − P_ik) ≤ b₊ · 2P_ik(1 − P_ik)"
    )
    e4 = d.lemma(
        SUM_OF_BOUNDS,
        "N_ik ≤ f(P_ik) = P_ik α + 2 b₊ P_ik (1 − P_ik)",
        a=p * alpha,
        A_b=p * alpha,
        b=e3.lhs,
        B_b=e3.rhs,
    )
    top = (alpha + spread * kbp) ** 2 / (4 * spread * kbp)
    centre = (alpha + spread * kbp) / (2 * spread * kbp)
    e5 = d.inequality(
        e4.rhs,
        top,
        "f(p) ≤ (α + 2b₊)²/(8b₊): the gap is 2b₊ (p − (α + 2b₊)/(4b₊))² ≥ 0 (b₊ > 0)",
        by=spread * kbp * (p - centre) ** 2,
    )
    if _failed(d):
        return None, None
    entry = d.chain([e2, e4, e5], "every entry: N_ik ≤ (α + 2b₊)²/(8b₊)")
    col = d.lemma(SUM_MONOTONE, "summed over the T rows of column k", a=N_IK, b=top, k=i, n=T)
    cnt = d.inequality(col.rhs, T * top, "T equal terms: Σ_{i ≤ T} c = T c")
    return d.chain([col, cnt], "every column of N sums to at most T (α + 2b₊)²/(8b₊)"), entry.rhs


def _row_sums(d: Derivation, variance: Any) -> Any:
    """Σ_k N_ik ≤ α + b₊ (the weights sum to 1; Σ_k P_ik ‖u_k − μ_i‖ ≤ R)."""
    spread = sp.Sum(p * opnorm(DEV), (k, 1, T))
    js = d.lemma(
        WEIGHTED_MEAN_SQUARE,
        "(Σ_k P_ik ‖u_k − μ_i‖)² ≤ Σ_k P_ik ‖u_k − μ_i‖² (Cauchy–Schwarz, weights summing to 1)",
        w=p,
        a=opnorm(DEV),
        k=k,
        n=T,
    )
    d.chain([js, variance], "(Σ_k P_ik ‖u_k − μ_i‖)² ≤ R²")
    d.lemma(SQUARE_ROOT_MONOTONE, "Σ_k P_ik ‖u_k − μ_i‖ ≤ R", a=spread, b=R)
    lin = d.identity(
        sp.Sum(N_IK, (k, 1, T)),
        alpha * sp.Sum(p, (k, 1, T)) + v * R * m_k * spread,
        "Σ_k N_ik = α Σ_k P_ik + v R m_k Σ_k P_ik ‖u_k − μ_i‖",
    )
    one = _rewrite(
        d,
        R16_ASSUMPTIONS[7],
        lambda z: alpha * z + v * R * m_k * spread,
        "the weights sum to 1",
        commutative=True,
    )
    r1 = _prod(d, v * R * m_k, v * R * m_k, spread, R, "v R m_k Σ_k P_ik ‖u_k − μ_i‖ ≤ v R² m_k")
    r2 = d.lemma(SUM_OF_BOUNDS, "α + …", a=alpha, A_b=alpha, b=r1.lhs, B_b=r1.rhs)
    r3 = d.lemma(SUM_OF_BOUNDS, "v R² m_k ≤ b₊", a=alpha, A_b=alpha, b=v * R**2 * m_k, B_b=kbp)
    if _failed(d):
        return None
    return d.chain([lin, one, r2, r3], "every row of N sums to at most α + b₊")


def _blocks(
    d: Derivation, query: Any, variance: Any, key_factor: Any, pre: Any, spread: Any
) -> Any:
    """(b): ‖J‖ ≤ q + √(T (α + b₊)(α + 2b₊)²/(8b₊)) (then the code's bound)."""
    eb = _blocks_of_e(d)
    nb = _block_bound(d, key_factor)
    if _failed(d):
        return None
    bn = d.lemma(BLOCK_NORMS, "‖E‖ ≤ ‖N‖", E=E_MAT, e=eb.args[1], N=nb.rhs, i=i, k=k, n=T)
    cols, _ = _column_sums(d, spread)
    if cols is None:
        return None
    rows = _row_sums(d, variance)
    if rows is None:
        return None
    nmat = entrymat(N_IK, i, k, T)
    c1 = d.lemma(MAX_COLUMN_SUM, "‖N‖₁ ≤ T (α + 2b₊)²/(8b₊)", a=N_IK, i=i, k=k, n=T, c=cols.rhs)
    r1 = d.lemma(MAX_ROW_SUM, "‖N‖_∞ ≤ α + b₊", a=N_IK, i=i, k=k, n=T, r=rows.rhs)
    st = d.lemma(SCHUR_TEST, "‖N‖² ≤ ‖N‖₁‖N‖_∞", A=nmat)
    pr = _prod(d, c1.lhs, c1.rhs, r1.lhs, r1.rhs, "‖N‖₁‖N‖_∞ ≤ T (α + 2b₊)²/(8b₊) · (α + b₊)")
    d.chain([st, pr], "‖N‖² ≤ T (α + b₊)(α + 2b₊)²/(8b₊)")
    root = sp.sqrt(pr.rhs)
    nr = d.lemma(
        SQUARE_ROOT_MONOTONE, "‖N‖ ≤ √(T (α + b₊)(α + 2b₊)²/(8b₊))", a=opnorm(nmat), b=root
    )
    eb2 = d.chain([bn, nr], "‖E‖ ≤ √(T (α + b₊)(α + 2b₊)²/(8b₊))")
    t1 = d.lemma(OPNORM_TRIANGLE, "‖J‖ ≤ ‖E‖ + ‖query part‖", A=E_MAT, B=J_DIAG)
    s1 = d.lemma(
        SUM_OF_BOUNDS, "adding the query bound", a=eb2.lhs, A_b=eb2.rhs, b=query.lhs, B_b=q
    )
    head = d.chain([t1, s1], "(b): ‖J‖ ≤ q + √(T (α + b₊)(α + 2b₊)²/(8b₊))")
    out = _to_code(d, head, pre, "dynamo's block rule (lipschitz_formulas.attention_head_blocks)")
    return None if _failed(d) else out


#: the bounds the derivation reaches (the code must be at least these)
TERMS_DERIVED = sp.sqrt(T) * alpha + (q + sp.sqrt(T) * kb)
BLOCKS_DERIVED = sp.sqrt(T * (alpha + 2 * kbp) ** 2 / (8 * kbp) * (alpha + kbp)) + q


def r16_proof(d: Derivation, spread: Any = 2) -> None:
    """R16's derivation on ``d``: the code's two bounds first, then the Jacobian, the shared
    weighted-variance and key-factor steps, the query part, (a) and (b), each part in its own
    block; it stops at the first failed step.

    Parameters
    ----------
    d : Derivation
        A derivation started from R16's assumptions (:data:`R16_ASSUMPTIONS`).
    spread : sympy expression, default 2
        The factor of the centred spread ``‖u_k − μ_i‖ ≤ spread · R (1 − P_ik)``; any other value
        than 2 is a false variant, which the derivation must reject.

    Examples
    --------
    >>> import theory
    >>> proof = theory.get("R16").prove()
    >>> proof.ok, proof.kind.label
    (True, 'proved in general')
    >>> theory.get("R16").prove(spread=1).ok
    False
    """
    pre_terms = _code_bound(
        d, TERMS_DERIVED, _terms_code(), "dynamo's three-term rule is at least √T α + q + √T b"
    )
    pre_blocks = _code_bound(
        d,
        BLOCKS_DERIVED,
        _blocks_code(),
        "dynamo's block rule is at least q + √(T (α + b₊)(α + 2b₊)²/(8b₊))",
    )
    if _failed(d):
        return
    d.identity(
        _derivative(),
        _block_rhs(),
        "directional derivative of o_i along δh (tokens moved along W δh_k; one coordinate, n "
        "attended tokens) = value + query + key parts: J = P ⊗ V W + blockdiag(V Y_i G_iᵀ) + "
        "(I_T ⊗ V) B",
    )
    variance = _variance(d)
    if variance is None:
        return
    key_factor = _key_factor(d)
    if _failed(d):
        return
    query = _block(d, "the query part", lambda sub: _query_part(sub, variance))
    if query is None or _failed(d):
        return
    _block(d, "(a) R7's terms", lambda sub: _terms(sub, query, key_factor, pre_terms))
    if _failed(d):
        return
    _block(
        d,
        "(b) the block form",
        lambda sub: _blocks(sub, query, variance, key_factor, pre_blocks, spread),
    )


# ---------------------------------------------------------------------- numeric check
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sigma(m: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord=2))


def _head_selector(att: Any, j: int) -> Any:
    """A copy of the attention layer ``att`` whose output projection keeps head ``j``'s output
    in its own coordinates and drops the others: ``o_i = Σ_k P_ik V_j u_k`` in those rows."""
    sel = copy.deepcopy(att)
    dh = att.d_head
    rows = slice(j * dh, (j + 1) * dh)
    with torch.no_grad():
        sel.o.weight.zero_()
        sel.o.weight[rows, rows] = torch.eye(dh, dtype=sel.o.weight.dtype)
    return sel


def _check_r16(seed: int = 0) -> CheckResult:
    n_tok, width, trials = 5, 8, 8
    worst_ratio, worst, n_heads, n_blocks, deviation = 0.0, 0.0, 0, 0, 0.0
    ok = True
    for pos, causal in (("none", False), ("rope", False), ("rope", True)):
        model = dy.models.LoopedTransformer(
            d_model=width, n_heads=2, pos=pos, causal=causal, seed=seed, dtype=F64
        )
        layer: Any = model.layers[0]
        att = layer.attn.branch
        dh = att.d_head
        wq, wk, wv = (m.weight.detach().double() for m in (att.q, att.k, att.v))
        wo = att.o.weight.detach().double()
        selectors = [_head_selector(att, j) for j in range(att.n_heads)]
        gen = _gen(1000 * seed + 10 * (pos == "rope") + causal)
        for _ in range(trials):
            scale = 0.3 + 1.7 * float(torch.rand(1, generator=gen))
            w = torch.randn(width, width, generator=gen, dtype=F64) * scale / math.sqrt(width)
            c = torch.randn(n_tok, width, generator=gen, dtype=F64) * 0.5
            h0 = torch.randn(n_tok, width, generator=gen, dtype=F64)
            u0 = h0 @ w.T + c  # u_k = W h_k + c_k
            radius = float(u0.norm(dim=-1).max())  # every ‖u_k‖ ≤ R
            with torch.no_grad():  # the selectors read the heads the layer mixes
                heads = [sel(u0[None])[0] for sel in selectors]
                mixed = torch.stack(heads).sum(0) @ wo.T
                deviation = max(deviation, float((mixed - att(u0[None])[0]).abs().max()))
            for j, sel in enumerate(selectors):
                rows = slice(j * dh, (j + 1) * dh)

                def f(
                    z: torch.Tensor, sel: Any = sel, rows: slice = rows, w: Any = w, c: Any = c
                ) -> Any:
                    x = z.reshape(n_tok, width) @ w.T + c
                    return sel(x[None])[0][:, rows].reshape(-1)

                jac = torch.func.jacrev(f)(h0.reshape(-1)).detach()
                lip = _sigma(jac)
                qh, kh, vh = wq[rows], wk[rows], wv[rows]
                value, v_n = _sigma(vh @ w), _sigma(vh)
                if pos == "rope":  # ‖Wᵀ W_Qᵀ R W_K‖ ≤ ‖W_Q W‖‖W_K‖ (R orthogonal), likewise M W
                    mq = _sigma(qh @ w) * _sigma(kh) / math.sqrt(dh)
                    mk = _sigma(qh) * _sigma(kh @ w) / math.sqrt(dh)
                else:
                    mat = qh.T @ kh / math.sqrt(dh)
                    mq, mk = _sigma(w.T @ mat), _sigma(mat @ w)
                query, key = v_n * radius**2 * mq, v_n * radius**2 * mk
                terms = formulas.attention_head_terms(value, query, key, n_tok)
                blocks = formulas.attention_head_blocks(value, query, key, n_tok)
                ok = ok and lip <= terms and lip <= blocks
                best = min(terms, blocks)
                n_heads += 1
                n_blocks += blocks < terms
                worst = max(worst, lip)
                worst_ratio = max(worst_ratio, lip / best)
    ok = ok and deviation <= 1e-12
    return CheckResult(
        "R16",
        ok,
        f"{n_heads} heads (plain, RoPE, RoPE causal; T = {n_tok}, random input maps W and "
        f"constants c): every dense ‖J‖₂ of h ↦ head(W h + c) is below both closed forms; the "
        f"largest ‖J‖₂ / min(terms, blocks) is {worst_ratio:.4g}, the block form is the smaller "
        f"for {n_blocks} of {n_heads}; heads read as the layer mixes them (deviation "
        f"{deviation:.2g})",
        {
            "heads": n_heads,
            "blocks_smaller": n_blocks,
            "largest_ratio": worst_ratio,
            "largest_jacobian": worst,
            "head_deviation": deviation,
        },
    )


@claim(
    "R16",
    "Rule: an attention head on an affine input, and its value and key terms by block norms "
    "(Schur test)",
    r"One softmax head on $T$ tokens reading $u_k = W h_k + c_k$, $\lVert u_k\rVert \le R$ "
    r"(row $i$ attending to $n \le T$ of them, any mask), scores $u_i^\top M_{ik} u_k$: its "
    r"Jacobian in $h$ is $J = P \otimes (VW) + \mathrm{blockdiag}_i(V Y_i G_i^\top) + "
    r"(I_T \otimes V) B$. With $\lVert VW\rVert \le \alpha$, $\lVert V\rVert \le v$, "
    r"$\lVert W^\top M_{ik}\rVert \le m_q$, $\lVert M_{ik} W\rVert \le m_k$, "
    r"$v R^2 m_q \le q$ and $v R^2 m_k \le b$: (a) $\lVert J\rVert_2 \le \sqrt T \alpha + q + "
    r"\sqrt T b$ (lipschitz_formulas.attention_head_terms); (b) for $b > 0$, "
    r"$\lVert J\rVert_2 \le q + \sqrt{T (\alpha + b)(\alpha + 2b)^2/(8b)}$ "
    r"(lipschitz_formulas.attention_head_blocks): the blocks of "
    r"$E = P \otimes (VW) + (I_T \otimes V) B$ have norms at most "
    r"$N_{ik} = P_{ik}\alpha + v R m_k P_{ik}\lVert u_k - \mu_i\rVert \le P_{ik}(\alpha + "
    r"2b(1 - P_{ik}))$, whose rows sum to at most $\alpha + b$ and columns to at most "
    r"$T(\alpha + 2b)^2/(8b)$, and $\lVert E\rVert_2 \le \lVert N\rVert_2 \le "
    r"\sqrt{\lVert N\rVert_1 \lVert N\rVert_\infty}$.",
    (
        "token norms ‖u_k‖ <= R at the head's input u = W h + c",
        "bias-free projections (o_i = Σ_k P_ik V u_k)",
        "P row-stochastic: softmax over the n <= T tokens a row attends to, zero elsewhere",
        "‖V W‖ <= α, ‖V‖ <= v, ‖Wᵀ M_ik‖ <= m_q and ‖M_ik W‖ <= m_k for all i, k (under RoPE, "
        "M_ik = W_Qᵀ R_{k−i} W_K/√d_h)",
        "v R² m_q <= q and v R² m_k <= b (the code passes these products rounded up); b > 0 for "
        "the block form (b)",
    ),
    (
        "Horn & Johnson, Matrix Analysis, 2nd ed., 2013",
        "Horn & Johnson, Topics in Matrix Analysis, 1991",
        "Golub & Van Loan, Matrix Computations, 4th ed., 2013",
        "Rudin, Principles of Mathematical Analysis, 3rd ed., 1976",
    ),
    _check_r16,
    goal=_r16_goal,
    assumptions=R16_ASSUMPTIONS,
    variants=(
        Variant(
            "dynamo's block rule divided by 100",
            patch=lambda: code_scaled("attention_head_blocks", 0.01),
        ),
        Variant(
            "dynamo's three-term rule divided by 100",
            patch=lambda: code_scaled("attention_head_terms", 0.01),
        ),
        Variant(
            "the statement with (α + 2b)²/(16b) in place of (α + 2b)²/(8b)",
            goal=(
                sp.Le(
                    opnorm(J_HEAD),
                    q + sp.sqrt(T * (alpha + kbp) * (alpha + 2 * kbp) ** 2 / (16 * kbp)),
                ),
            ),
        ),
        Variant(
            "the statement with the column sum T (α + b) in place of T (α + 2b)²/(8b)",
            goal=(sp.Le(opnorm(J_HEAD), q + sp.sqrt(T * (alpha + kbp) * (alpha + kbp))),),
        ),
        Variant(
            "the centred spread taken as R (1 − P_ik), without its factor 2, in the derivation",
            overrides={"spread": 1},
        ),
        Variant("without P row-stochastic (rows summing to 1)", drop=(7,)),
        Variant("without the hypothesis that token norms are <= R", drop=(0, 1)),
        Variant("without ‖M_ik W‖ <= m_k", drop=(5,)),
        Variant("without ‖V W‖ <= α", drop=(3,)),
        Variant(
            "(a) with the query term q dropped: √T α + √T b",
            goal=(sp.Le(opnorm(J_HEAD), sp.sqrt(T) * alpha + sp.sqrt(T) * kb),),
        ),
    ),
    uses=("R7",),
)
def r16(d: Derivation, spread: Any = 2) -> None:
    """R16's proof function (registered as the claim ``R16``): :func:`r16_proof`.

    Parameters
    ----------
    d : Derivation
        A derivation started from R16's assumptions.
    spread : sympy expression, default 2
        The centred spread's factor (2; another value is a false variant).
    """
    r16_proof(d, spread)
