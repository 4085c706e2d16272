"""R16 (one attention head read through an input map ``u = W h + c``, its value and key terms
bounded together by the norms of their blocks and the Schur test), derived on the derivation
engine.

One softmax head on ``T`` tokens reads ``u_k = W h_k + c_k`` (``W`` a fixed matrix, the ``c_k``
constants; ``W = I`` is R7's plain head): ``o_i = Σ_k P_ik V u_k`` with ``P_ik = exp(s_ik) /
Σ_l exp(s_il)`` over the ``n ≤ T`` tokens row ``i`` attends to (``n = T`` without a mask, ``n = i``
under a causal mask; ``P_ik = 0`` for the others, so the sums of the norm bounds run over all
``T`` tokens with those zeros), scores ``s_ik = u_iᵀ M_ik u_k`` (``M_ik = M`` plain, ``W_Qᵀ
R_{k−i} W_K / √d_h`` under RoPE) and ``μ_i = Σ_k P_ik u_k``. The constant is in ``h``. The
hypotheses, for some fixed vector ``c`` (a centre) and all ``i, k``:

* ``‖V (u_k − c)‖ ≤ ρ`` (the value map's image of the tokens lies in the ball of radius ``ρ``
  about ``V c``; the formal statement names ``y_k = V (u_k − c)`` and writes it ``x(k)``, the
  name the cited lemmas give their vectors);
* ``‖Wᵀ M_ik u_k‖ ≤ g_q`` (the query factor) and ``‖u_iᵀ M_ik W‖ ≤ g_k`` (the key factor);
* ``‖V W‖ ≤ α``, ``ρ g_q ≤ q``, ``ρ g_k ≤ b`` and ``ρ g_k ≤ b₊`` with ``b₊ > 0`` for the block
  form (the code passes these products rounded up);

with the softmax facts (row ``i`` of ``P`` has the entries ``P_ik ≥ 0`` summing to 1, ``μ_i`` is
their weighted mean of the ``u_k``) and the columns that define ``V Y_i`` and ``G_i``. R16's
earlier form is the case ``c = 0``, ``ρ = ‖V‖R``, ``g_q = m_q R``, ``g_k = m_k R`` for tokens
``‖u_k‖ ≤ R`` and ``‖Wᵀ M_ik‖ ≤ m_q``, ``‖M_ik W‖ ≤ m_k`` (submultiplicativity), so
``v R² m_q ≤ q`` and ``v R² m_k ≤ b`` still suffice. The derivation, every step on symbols or a
cited lemma:

1. the Jacobian (R7's derivation, the chain rule through ``u = W h + c``): moving ``h`` along
   ``δh`` moves ``V u_k`` along ``V W δh_k`` and the scores by ``δh_iᵀ (Wᵀ M_ik u_k) + u_iᵀ
   (M_ik W) δh_k`` (and second order), and the directional derivative of one coordinate of
   ``o_i = Σ_k P_ik (V u_k)`` (a sympy identity on sums over the ``n`` attended tokens) reads
   ``J = P ⊗ (V W) + blockdiag_i(V Y_i G_iᵀ) + B``, ``V Y_i`` with the columns ``√P_ik V (u_k −
   μ_i)``, ``G_i`` with the columns ``√P_ik Wᵀ M_ik u_k``, and ``B`` the ``T`` block rows
   ``V Y_i blockdiag_k(√P_ik u_iᵀ M_ik W)``, whose block ``(i, k)`` is ``P_ik V (u_k − μ_i) u_iᵀ
   M_ik W``;
2. the variance with ``V`` inside: with ``y_k = V (u_k − c)``, ``ν_i = V (μ_i − c) = Σ_k P_ik
   y_k`` (the weights sum to 1) and ``V (u_k − μ_i) = y_k − ν_i``, so ``Σ_k P_ik ‖V (u_k −
   μ_i)‖² = Σ_k P_ik ‖y_k‖² − ‖ν_i‖² ≤ ρ²`` (the weighted variance) and ``‖V Y_i‖ ≤ ρ``;
3. the query part: ``‖G_i‖ ≤ g_q`` (a weighted average of squares), so ``‖blockdiag_i(V Y_i
   G_iᵀ)‖ ≤ ρ g_q ≤ q``;
4. (a), R7's other two terms: ``‖P ⊗ V W‖ = ‖P‖‖V W‖ ≤ √T α`` (rows of ``P`` sum to 1), block
   row ``i`` of ``B`` has norm at most ``ρ g_k``, so ``‖B‖ ≤ √T ρ g_k ≤ √T b``; the triangle
   inequality: ``‖J‖ ≤ √T α + q + √T b`` = ``attention_head_terms``;
5. (b): ``E = P ⊗ (V W) + B`` has the blocks ``E_ik = P_ik V W + P_ik V (u_k − μ_i) u_iᵀ M_ik
   W`` (the blocks of a Kronecker product, block multiplication, blockwise sums), so ``‖E_ik‖ ≤
   N_ik := P_ik α + g_k P_ik ‖V (u_k − μ_i)‖`` (the triangle inequality, homogeneity,
   submultiplicativity);
6. the centred spread of the ``y_k`` (``‖y_k‖ ≤ ρ``): ``‖V (u_k − μ_i)‖ = ‖y_k − ν_i‖ ≤ 2ρ (1 −
   P_ik)``, so ``N_ik ≤ f(P_ik)`` with ``f(p) = (α + 2b₊) p − 2b₊ p²`` (``0 ≤ P_ik ≤ 1``), and
   ``(α + 2b₊)²/(8b₊) − f(p) = 2b₊ (p − (α + 2b₊)/(4b₊))² ≥ 0``: every column of ``N`` (``T``
   entries) sums to at most ``T (α + 2b₊)²/(8b₊)``;
7. every row of ``N`` sums to at most ``α + g_k Σ_k P_ik ‖V (u_k − μ_i)‖ ≤ α + g_k ρ ≤ α + b₊``
   (the weights sum to 1; ``(Σ_k P_ik ‖V (u_k − μ_i)‖)² ≤ Σ_k P_ik ‖V (u_k − μ_i)‖² ≤ ρ²`` by
   Cauchy–Schwarz and step 2);
8. ``‖E‖ ≤ ‖N‖`` (a block matrix by the norms of its blocks), ``‖N‖² ≤ ‖N‖₁‖N‖_∞`` (Golub & Van
   Loan) with ``‖N‖₁``, ``‖N‖_∞`` the largest column and row sums of the nonnegative ``N``, so
   ``‖E‖ ≤ √(T (α + b₊)(α + 2b₊)²/(8b₊))``; with step 3 and the triangle inequality, ``‖J‖ ≤ q +
   √(T (α + b₊)(α + 2b₊)²/(8b₊))`` = ``attention_head_blocks``.

The code takes, per head, the smaller of R7's ``attention_head`` (plain heads), (a) and (b) (the
latter where its key term is positive). With ``V = I`` (``α = ‖W‖``, ``ρ ≥ ‖u_k − c‖``) the same
bounds hold for R14's kernels ``K_h``. Generic indices ``i, k`` follow R7's convention: every
assumption that mentions one holds for each of its values, so a fact shown for the generic index
holds for all. The block matrices enter as in R7, given by their columns, entries or blocks
(:class:`Pred` facts); reading them off the directional derivative is linear algebra, not a sympy
step.
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
    KRONECKER_NORM,
    OPNORM_HOMOGENEOUS,
    OPNORM_TRIANGLE,
    ROW_SUM_NORM,
    SQUARE_ROOT_MONOTONE,
    STACKED_NORM,
    SUM_MONOTONE,
    SUM_OF_BOUNDS,
    TRANSPOSE_NORM,
    TWO_NORM_BY_INF_NORM,
    WEIGHTED_AVERAGE,
    WEIGHTED_VARIANCE,
    M,
    P,
    T,
    V,
    _block,
    _code_bound,
    _failed,
    _prod,
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
)
from ._rule_mixing import _rewrite
from ._rules import ORDER_NEG, ORDER_SCALE

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
_A, _B, _C, _E, _Yv, _yv, _F = sp.symbols("A B C E Y y F", commutative=False)
_a, _c, _r, _w, _N = sp.symbols("a c r w N")
_an, _bn, _en = sp.symbols("a b e", commutative=False)  # blocks (matrices)
_ii, _kk, _nn = sp.symbols("i k n", integer=True, positive=True)
_X = sp.Function("x", commutative=False)  # lemma copy: vectors x_k
_U = sp.Function("u", commutative=False)  # lemma copy: vectors u_k
_cv = sp.Symbol("c", commutative=False)  # a vector (a centre)
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

AFFINE_MEAN = lemma(
    "the weighted mean of an affine image",
    "If Σ_k w_k = 1 (k = 1, …, n), μ = Σ_k w_k u_k and x_k = A (u_k − c) for every k (A a "
    "matrix, c a vector), then A (μ − c) = Σ_k w_k x_k: Σ_k w_k A (u_k − c) = A (Σ_k w_k u_k − "
    "(Σ_k w_k) c) = A (μ − c) by the linearity of matrix–vector multiplication. The hypothesis "
    "on x_k is read for every k (as in R7).",
    (
        "elementary: the linearity of matrix–vector multiplication, A(a y + b z) = a Ay + "
        "b Az, summed over k with Σ_k w_k = 1 (no theorem is needed)",
    ),
    (_w, _kk, _nn, _U, _X, _A, _mu, _cv),
    (
        sp.Eq(sp.Sum(_w, (_kk, 1, _nn)), 1),
        Pred("weighted_mean", (_mu, _w, _U, _kk, _nn)),
        sp.Eq(_X(_kk), _A * (_U(_kk) - _cv)),
    ),
    (Pred("weighted_mean", (_A * (_mu - _cv), _w, _X, _kk, _nn)),),
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
rho = sp.Symbol("rho", nonnegative=True)  # every ‖V (u_k − c)‖ ≤ ρ
g_q = sp.Symbol("g_q", nonnegative=True)  # the query factor: every ‖Wᵀ M_ik u_k‖ ≤ g_q
g_k = sp.Symbol("g_k", nonnegative=True)  # the key factor: every ‖u_iᵀ M_ik W‖ ≤ g_k
q = sp.Symbol("q", nonnegative=True)  # the query term: ρ g_q ≤ q
kb = sp.Symbol("b", nonnegative=True)  # the key term of (a): ρ g_k ≤ b
kbp = sp.Symbol("b_+", positive=True)  # the key term of (b): ρ g_k ≤ b₊, b₊ > 0

W = sp.Symbol("W", commutative=False)  # the input map: u_k = W h_k + c_k
cen = sp.Symbol("c", commutative=False)  # the centre c (a fixed vector)
u = sp.Function("u", commutative=False)  # u(k): token k as the head reads it, W h_k + c_k
#: y(k) = V (u_k − c): token k's value image about the centre. Its sympy name is ``x``, the name
#: the cited lemmas give their vectors (a lemma's function variable is matched by name)
y = sp.Function("x", commutative=False)
VY = sp.Function("VY", commutative=False)  # VY(i) = V Y_i: columns √P_ik V (u_k − μ_i)
G = sp.Function("G", commutative=False)  # G(i): columns √P_ik Wᵀ M_ik u_k

#: the softmax weight P_ik (zero for a token row i does not attend to); row i sums to 1
p = sp.IndexedBase("p", nonnegative=True)[i, k]
#: the same with the normaliser written out, over the n tokens row i attends to
p_sum = sp.exp(s[i, k]) / sp.Sum(sp.exp(s[i, k]), (k, 1, n))

Y_DEF = sp.Eq(y(k), V * (u(k) - cen))  # y_k names V (u_k − c)
NU = V * (mu(i) - cen)  # ν_i = V (μ_i − c): the P_ik-weighted mean of the y_k
DEV = V * (u(k) - mu(i))  # V (u_k − μ_i) = y_k − ν_i
WM = transpose(W) * M(i, k)  # Wᵀ M_ik
MW = M(i, k) * W  # M_ik W
QF = WM * u(k)  # the query factor Wᵀ M_ik u_k
KF = transpose(u(i)) * MW  # the key factor u_iᵀ M_ik W
#: F(i, k) = √P_ik u_iᵀ M_ik W (a 1×d block) and block row i of B: V Y_i blockdiag_k(F(i, k))
F_IK = sp.sqrt(p) * KF
B_ROW = VY(i) * blockdiag(F_IK, k)
B_MAT = stack(B_ROW, i, T)

#: the Jacobian in h: value, diagonal (query) and off-diagonal (key) parts
J_VALUE = kron(P, V * W)
J_DIAG = blockdiag(VY(i) * transpose(G(i)), i)
J_OFF = B_MAT
J_HEAD = J_VALUE + J_DIAG + J_OFF
#: (b) splits off E = P ⊗ (V W) + B: its block (i, k) and the bound N_ik on its norm
E_MAT = J_VALUE + J_OFF
E_IK = p * V * W + p * DEV * KF
N_IK = p * alpha + g_k * p * opnorm(DEV)

# one coordinate of the value images V u_k and of their direction V W δh_k, and the scores'
# directional derivatives
_uc, _wc = sp.IndexedBase("upsilon", real=True), sp.IndexedBase("omega", real=True)
_qd = sp.IndexedBase("a", real=True)  # a_k = δh_iᵀ (Wᵀ M_ik u_k)    (the query moves)
_kd = sp.IndexedBase("beta", real=True)  # β_k = u_iᵀ (M_ik W) δh_k  (the key moves)
_s2 = sp.IndexedBase("c", real=True)  # c_k = δh_iᵀ Wᵀ M_ik W δh_k (second order)
_eps = sp.Symbol("epsilon", real=True)


@cache
def _derivative() -> Any:
    """d/dε of one coordinate of o_i = Σ_k P_ik(ε) V u_k(ε) at ε = 0 for h moved to h + ε δh:
    the value images become V u_k + ε V W δh_k (coordinate υ_k + ε ω_k) and the scores s_ik +
    ε(a_k + β_k) + ε² c_k."""
    se = s[i, k] + _eps * (_qd[k] + _kd[k]) + _eps**2 * _s2[k]
    num = sp.Sum(sp.exp(se) * (_uc[k] + _eps * _wc[k]), (k, 1, n))
    den = sp.Sum(sp.exp(se), (k, 1, n))
    return sp.diff(num / den, _eps).subs(_eps, 0)


@cache
def _block_rhs() -> Any:
    """The same coordinate read as Σ_k J_ik δh_k: Σ_k P_ik ω_k (P ⊗ V W), Σ_k P_ik (υ_k − ν) a_k
    (V Y_i G_iᵀ δh_i; υ_k − ν is the coordinate of V (u_k − μ_i)) and Σ_k P_ik (υ_k − ν) β_k
    (B δh)."""
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
    sp.Le(opnorm(V * (u(k) - cen)), rho),  # 0: every token's value image within ρ of V c
    Y_DEF,  # 1: the name y_k = V (u_k − c)
    sp.Le(opnorm(V * W), alpha),  # 2: the value term
    sp.Le(opnorm(QF), g_q),  # 3: the query factor, every ‖Wᵀ M_ik u_k‖
    sp.Le(opnorm(KF), g_k),  # 4: the key factor, every ‖u_iᵀ M_ik W‖
    Pred("row_entries", (P, p, i, k, T)),  # 5: row i of P (zero where row i does not attend)
    sp.Eq(sp.Sum(p, (k, 1, T)), 1),  # 6: row i of the softmax sums to 1
    Pred("rows", (P, T)),  # 7: P is T×T
    Pred("weighted_mean", (mu(i), p, u, k, T)),  # 8: μ_i = Σ_k P_ik u_k
    Pred("columns", (VY(i), sp.sqrt(p), DEV, k, T)),  # 9: V Y_i's columns
    Pred("columns", (G(i), sp.sqrt(p), QF, k, T)),  # 10: G_i's columns
    sp.Le(rho * g_q, q),  # 11: the query term
    sp.Le(rho * g_k, kb),  # 12: the key term of (a)
    sp.Le(rho * g_k, kbp),  # 13: the key term of (b), b₊ > 0
)


# ---------------------------------------------------------------------- shared steps
def _variance(d: Derivation) -> Any:
    """P_ik ≤ 1; ‖y_k‖ ≤ ρ; ‖V (u_k − μ_i)‖ = ‖y_k − ν_i‖; Σ_k P_ik ‖V (u_k − μ_i)‖² ≤ ρ² (the
    weighted variance of the y_k), so ‖V Y_i‖ ≤ ρ. Returns the variance fact (None where a step
    failed)."""
    d.lemma(ROW_SUM_NORM, "‖P‖_∞ ≤ 1 and P_ik ≤ 1", A=P, a=p, i=i, k=k, n=T, r=1)
    yn = _rewrite(d, Y_DEF, opnorm, "‖y_k‖ = ‖V (u_k − c)‖ (y_k names V (u_k − c))")
    d.chain([yn, R16_ASSUMPTIONS[0]], "‖y_k‖ ≤ ρ")
    d.lemma(
        AFFINE_MEAN,
        "ν_i = V (μ_i − c) is the P_ik-weighted mean of the y_k",
        w=p,
        k=k,
        n=T,
        u=u,
        x=y,
        A=V,
        mu=mu(i),
        c=cen,
    )
    if _failed(d):
        return None
    var = d.lemma(
        WEIGHTED_VARIANCE,
        "Σ_k P_ik ‖y_k − ν_i‖² = Σ_k P_ik ‖y_k‖² − ‖ν_i‖²",
        w=p,
        k=k,
        n=T,
        x=y,
        mu=NU,
    )
    drop = d.inequality(var.rhs, sp.Sum(p * opnorm(y(k)) ** 2, (k, 1, T)), "dropping −‖ν_i‖² ≤ 0")
    _prod(d, opnorm(y(k)), rho, opnorm(y(k)), rho, "‖y_k‖² ≤ ρ²")
    avg = d.lemma(
        WEIGHTED_AVERAGE,
        "the P_ik-weighted average of ‖y_k‖² ≤ ρ²",
        w=p,
        a=opnorm(y(k)) ** 2,
        A_b=rho**2,
        k=k,
        n=T,
    )
    # V (u_k − μ_i) = y_k − ν_i: the centre cancels
    dn = _rewrite(d, Y_DEF, lambda z: opnorm(z - NU), "‖y_k − ν_i‖ = ‖V (u_k − c) − V (μ_i − c)‖")
    lin = d.identity(
        dn.rhs, opnorm(DEV), "V (u_k − c) − V (μ_i − c) = V (u_k − μ_i) (distributivity)"
    )
    dev = d.chain([dn, lin], "‖y_k − ν_i‖ = ‖V (u_k − μ_i)‖")
    sums = _rewrite(
        d,
        sp.Eq(dev.rhs, dev.lhs),
        lambda z: sp.Sum(p * z**2, (k, 1, T)),
        "Σ_k P_ik ‖V (u_k − μ_i)‖² = Σ_k P_ik ‖y_k − ν_i‖²",
        commutative=True,
    )
    variance = d.chain([sums, var, drop, avg], "Σ_k P_ik ‖V (u_k − μ_i)‖² ≤ ρ²")
    yf = d.lemma(
        FROBENIUS_COLUMNS,
        "‖V Y_i‖² by its columns √P_ik V (u_k − μ_i)",
        A=VY(i),
        c=sp.sqrt(p),
        B=DEV,
        k=k,
        n=T,
    )
    d.chain([yf, variance], "‖V Y_i‖² ≤ ρ²")
    d.lemma(SQUARE_ROOT_MONOTONE, "‖V Y_i‖ ≤ ρ", a=opnorm(VY(i)), b=rho)
    return None if _failed(d) else variance


def _query_part(d: Derivation) -> Any:
    """‖blockdiag_i(V Y_i G_iᵀ)‖ ≤ q: ‖V Y_i‖ ≤ ρ (known), ‖G_i‖ ≤ g_q."""
    _prod(d, opnorm(QF), g_q, opnorm(QF), g_q, "‖Wᵀ M_ik u_k‖² ≤ g_q²")
    gsum = d.lemma(
        WEIGHTED_AVERAGE,
        "the P_ik-weighted average of ‖Wᵀ M_ik u_k‖² ≤ g_q²",
        w=p,
        a=opnorm(QF) ** 2,
        A_b=g_q**2,
        k=k,
        n=T,
    )
    gf = d.lemma(
        FROBENIUS_COLUMNS,
        "‖G_i‖² by its columns √P_ik Wᵀ M_ik u_k",
        A=G(i),
        c=sp.sqrt(p),
        B=QF,
        k=k,
        n=T,
    )
    d.chain([gf, gsum], "‖G_i‖² ≤ g_q²")
    gb = d.lemma(SQUARE_ROOT_MONOTONE, "‖G_i‖ ≤ g_q", a=opnorm(G(i)), b=g_q)
    gt = d.lemma(TRANSPOSE_NORM, "‖G_iᵀ‖ = ‖G_i‖", A=G(i))
    d.chain([gt, gb], "‖G_iᵀ‖ ≤ g_q")
    c1 = d.lemma(SUBMULTIPLICATIVE, "‖V Y_i G_iᵀ‖ ≤ ‖V Y_i‖‖G_iᵀ‖", A=VY(i), B=transpose(G(i)))
    c2 = _prod(d, opnorm(VY(i)), rho, opnorm(transpose(G(i))), g_q, "‖V Y_i‖‖G_iᵀ‖ ≤ ρ g_q")
    d.chain([c1, c2, R16_ASSUMPTIONS[11]], "‖V Y_i G_iᵀ‖ ≤ ρ g_q ≤ q")
    if _failed(d):
        return None
    return d.lemma(
        BLOCK_DIAGONAL_NORM,
        "the query part: ‖blockdiag_i(V Y_i G_iᵀ)‖ ≤ q",
        B=VY(i) * transpose(G(i)),
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


def _key_part(d: Derivation) -> Any:
    """‖B‖ ≤ √T b: block row i of B is V Y_i blockdiag_k(√P_ik u_iᵀ M_ik W), of norm ≤ ρ g_k."""
    d.lemma(SQUARE_ROOT_MONOTONE, "√P_ik ≤ 1 (P_ik ≤ 1)", a=sp.sqrt(p), b=1)
    f1 = d.lemma(
        OPNORM_HOMOGENEOUS, "‖√P_ik u_iᵀ M_ik W‖ = √P_ik ‖u_iᵀ M_ik W‖", c=sp.sqrt(p), A=KF
    )
    f2 = _prod(d, sp.sqrt(p), 1, opnorm(KF), g_k, "√P_ik ‖u_iᵀ M_ik W‖ ≤ g_k")
    d.chain([f1, f2], "‖√P_ik u_iᵀ M_ik W‖ ≤ g_k")
    bd = d.lemma(BLOCK_DIAGONAL_NORM, "‖blockdiag_k(√P_ik u_iᵀ M_ik W)‖ ≤ g_k", B=F_IK, i=k, b=g_k)
    b1 = d.lemma(
        SUBMULTIPLICATIVE, "‖B_i·‖ ≤ ‖V Y_i‖‖blockdiag_k(·)‖", A=VY(i), B=blockdiag(F_IK, k)
    )
    b2 = _prod(d, opnorm(VY(i)), rho, bd.lhs, g_k, "‖V Y_i‖‖blockdiag_k(·)‖ ≤ ρ g_k")
    d.chain([b1, b2], "block row i of B: ‖B_i·‖ ≤ ρ g_k")
    sq = _prod(d, opnorm(B_ROW), rho * g_k, opnorm(B_ROW), rho * g_k, "‖B_i·‖² ≤ (ρ g_k)²")
    tot = d.lemma(SUM_MONOTONE, "summed over the T block rows", a=sq.lhs, b=sq.rhs, k=i, n=T)
    bst = d.lemma(STACKED_NORM, "B stacks its T block rows: ‖B‖² ≤ Σ_i ‖B_i·‖²", A=B_ROW, i=i, n=T)
    d.chain([bst, tot], "‖B‖² ≤ Σ_(i ≤ T) (ρ g_k)²")
    root = sp.sqrt(sp.Sum(rho**2 * g_k**2, (i, 1, T)))
    bb = d.lemma(SQUARE_ROOT_MONOTONE, "‖B‖ ≤ √(Σ_(i ≤ T) (ρ g_k)²)", a=opnorm(B_MAT), b=root)
    cnt = d.identity(root, sp.sqrt(T) * rho * g_k, "T equal terms: √(T (ρ g_k)²) = √T ρ g_k")
    o2 = d.chain([bb, cnt], "‖B‖ ≤ √T ρ g_k")
    o3 = _prod(d, sp.sqrt(T), sp.sqrt(T), rho * g_k, kb, "√T ρ g_k ≤ √T b")
    if _failed(d):
        return None
    return d.chain([o2, o3], "the key part: ‖B‖ ≤ √T b")


def _terms(d: Derivation, query: Any, pre: Any) -> Any:
    """(a): ‖J‖ ≤ √T α + q + √T b (then the code's bound)."""
    jv = _value_part(d)
    jo = _key_part(d)
    if jo is None or _failed(d):
        return None
    t1 = d.lemma(OPNORM_TRIANGLE, "‖J‖ ≤ ‖P ⊗ V W‖ + ‖rest‖", A=J_VALUE, B=J_DIAG + J_OFF)
    t2 = d.lemma(OPNORM_TRIANGLE, "‖rest‖ ≤ ‖query part‖ + ‖key part‖", A=J_DIAG, B=J_OFF)
    s1 = d.lemma(
        SUM_OF_BOUNDS, "adding the query and key bounds", a=query.lhs, A_b=q, b=jo.lhs, B_b=jo.rhs
    )
    rest = d.chain([t2, s1], "‖blockdiag(V Y_i G_iᵀ) + B‖ ≤ q + √T b")
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
    """E = P ⊗ (V W) + B has the blocks E_ik = P_ik V W + P_ik V (u_k − μ_i) u_iᵀ M_ik W."""
    bk = d.lemma(
        STACKED_ROW_BLOCKS,
        "block (i, k) of B is P_ik V (u_k − μ_i) u_iᵀ M_ik W",
        Y=VY(i),
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
    return d.lemma(
        BLOCK_SUM,
        "block (i, k) of E is P_ik V W + P_ik V (u_k − μ_i) u_iᵀ M_ik W",
        A=J_VALUE,
        a=kp.args[1],
        B=J_OFF,
        b=bk.args[1],
        i=i,
        k=k,
        n=T,
    )


def _block_bound(d: Derivation) -> Any:
    """‖E_ik‖ ≤ N_ik = P_ik α + g_k P_ik ‖V (u_k − μ_i)‖."""
    first, second = p * V * W, p * DEV * KF
    tri = d.lemma(
        OPNORM_TRIANGLE, "‖E_ik‖ ≤ ‖P_ik V W‖ + ‖P_ik V (u_k − μ_i) …‖", A=first, B=second
    )
    h1 = d.lemma(OPNORM_HOMOGENEOUS, "‖P_ik V W‖ = P_ik ‖V W‖", c=p, A=V * W)
    p1 = _prod(d, p, p, opnorm(V * W), alpha, "P_ik ‖V W‖ ≤ P_ik α")
    a1 = d.chain([h1, p1], "‖P_ik V W‖ ≤ P_ik α")
    z = DEV * KF
    h2 = d.lemma(OPNORM_HOMOGENEOUS, "‖P_ik Z‖ = P_ik ‖Z‖", c=p, A=z)
    z1 = d.lemma(
        SUBMULTIPLICATIVE,
        "‖V (u_k − μ_i) u_iᵀ M_ik W‖ ≤ ‖V (u_k − μ_i)‖‖u_iᵀ M_ik W‖",
        A=DEV,
        B=KF,
    )
    z2 = _prod(d, opnorm(DEV), opnorm(DEV), opnorm(KF), g_k, "≤ ‖V (u_k − μ_i)‖ g_k")
    zb = d.chain([z1, z2], "‖Z‖ ≤ g_k ‖V (u_k − μ_i)‖")
    p2 = _prod(d, p, p, zb.lhs, zb.rhs, "P_ik ‖Z‖ ≤ g_k P_ik ‖V (u_k − μ_i)‖")
    a2 = d.chain([h2, p2], "‖P_ik V (u_k − μ_i) u_iᵀ M_ik W‖ ≤ g_k P_ik ‖V (u_k − μ_i)‖")
    s1 = d.lemma(SUM_OF_BOUNDS, "adding the two bounds", a=a1.lhs, A_b=a1.rhs, b=a2.lhs, B_b=a2.rhs)
    return d.chain([tri, s1], "‖E_ik‖ ≤ N_ik = P_ik α + g_k P_ik ‖V (u_k − μ_i)‖")


def _column_sums(d: Derivation, spread: Any) -> tuple[Any, Any]:
    """Each N_ik ≤ (α + 2b₊)²/(8b₊), so each column sums to at most T (α + 2b₊)²/(8b₊).
    ``spread`` replaces the factor 2 of the centred spread (a false variant). Returns the
    column-sum fact and the bound c on an entry (None where a step failed)."""
    cy = d.lemma(
        CENTRED_SPREAD,
        "the centred spread of the y_k: ‖y_k − ν_i‖ ≤ 2ρ (1 − P_ik)",
        w=p,
        k=k,
        n=T,
        x=y,
        mu=NU,
        r=rho,
    )
    dev = sp.Eq(opnorm(DEV), opnorm(y(k) - NU))  # shown by _variance
    cs = d.chain([dev, cy], "‖V (u_k − μ_i)‖ = ‖y_k − ν_i‖ ≤ 2ρ (1 − P_ik)")
    if spread != 2:
        cs = d.weaken(cs, spread * rho * (1 - p), f"‖V (u_k − μ_i)‖ ≤ {spread}ρ (1 − P_ik)")
    if _failed(d):
        return None, None
    coef = g_k * p
    e1 = _prod(d, coef, coef, cs.lhs, cs.rhs, "g_k P_ik ‖V (u_k − μ_i)‖ ≤ 2 ρ g_k P_ik (1 − P_ik)")
    e2 = d.lemma(
        SUM_OF_BOUNDS,
        "N_ik ≤ P_ik α + 2 ρ g_k P_ik (1 − P_ik)",
        a=p * alpha,
        A_b=p * alpha,
        b=e1.lhs,
        B_b=e1.rhs,
    )
    one = d.lemma(ORDER_NEG, "0 ≤ 1 − P_ik (P_ik ≤ 1)", a=p, b=1, k=1)
    pq = d.lemma(ORDER_SCALE, "0 ≤ 2 P_ik (1 − P_ik)", a=one.lhs, b=one.rhs, c=spread * p)
    e3 = _prod(d, rho * g_k, kbp, pq.rhs, pq.rhs, "ρ g_k · 2P_ik(1 − P_ik) ≤ b₊ · 2P_ik(1 − P_ik)")
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
    """Σ_k N_ik ≤ α + b₊ (the weights sum to 1; Σ_k P_ik ‖V (u_k − μ_i)‖ ≤ ρ)."""
    spread = sp.Sum(p * opnorm(DEV), (k, 1, T))
    js = d.lemma(
        WEIGHTED_MEAN_SQUARE,
        "(Σ_k P_ik ‖V (u_k − μ_i)‖)² ≤ Σ_k P_ik ‖V (u_k − μ_i)‖² (Cauchy–Schwarz, weights "
        "summing to 1)",
        w=p,
        a=opnorm(DEV),
        k=k,
        n=T,
    )
    d.chain([js, variance], "(Σ_k P_ik ‖V (u_k − μ_i)‖)² ≤ ρ²")
    d.lemma(SQUARE_ROOT_MONOTONE, "Σ_k P_ik ‖V (u_k − μ_i)‖ ≤ ρ", a=spread, b=rho)
    lin = d.identity(
        sp.Sum(N_IK, (k, 1, T)),
        alpha * sp.Sum(p, (k, 1, T)) + g_k * spread,
        "Σ_k N_ik = α Σ_k P_ik + g_k Σ_k P_ik ‖V (u_k − μ_i)‖",
    )
    one = _rewrite(
        d,
        R16_ASSUMPTIONS[6],
        lambda z: alpha * z + g_k * spread,
        "the weights sum to 1",
        commutative=True,
    )
    r1 = _prod(d, g_k, g_k, spread, rho, "g_k Σ_k P_ik ‖V (u_k − μ_i)‖ ≤ g_k ρ")
    r2 = d.lemma(SUM_OF_BOUNDS, "α + …", a=alpha, A_b=alpha, b=r1.lhs, B_b=r1.rhs)
    r3 = d.lemma(SUM_OF_BOUNDS, "ρ g_k ≤ b₊", a=alpha, A_b=alpha, b=rho * g_k, B_b=kbp)
    if _failed(d):
        return None
    return d.chain([lin, one, r2, r3], "every row of N sums to at most α + b₊")


def _blocks(d: Derivation, query: Any, variance: Any, pre: Any, spread: Any) -> Any:
    """(b): ‖J‖ ≤ q + √(T (α + b₊)(α + 2b₊)²/(8b₊)) (then the code's bound)."""
    eb = _blocks_of_e(d)
    nb = _block_bound(d)
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
    weighted-variance step (with ``V`` inside, about the centre ``c``), the query part, (a) and
    (b), each part in its own block; it stops at the first failed step.

    Parameters
    ----------
    d : Derivation
        A derivation started from R16's assumptions (:data:`R16_ASSUMPTIONS`).
    spread : sympy expression, default 2
        The factor of the centred spread ``‖V (u_k − μ_i)‖ ≤ spread · ρ (1 − P_ik)``; any other
        value than 2 is a false variant, which the derivation must reject.

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
        "directional derivative of o_i = Σ_k P_ik V u_k along δh (value images moved along "
        "V W δh_k; one coordinate, n attended tokens) = value + query + key parts: "
        "J = P ⊗ V W + blockdiag(V Y_i G_iᵀ) + B",
    )
    variance = _variance(d)
    if variance is None:
        return
    query = _block(d, "the query part", _query_part)
    if query is None or _failed(d):
        return
    _block(d, "(a) R7's terms", lambda sub: _terms(sub, query, pre_terms))
    if _failed(d):
        return
    _block(
        d,
        "(b) the block form",
        lambda sub: _blocks(sub, query, variance, pre_blocks, spread),
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


def _rotations(att: Any, n_tok: int) -> torch.Tensor:
    """The ``n_tok`` rotations ``R_t`` (``d_h × d_h``) the layer applies to a head's queries and
    keys at position ``t`` (the identity without RoPE), read off the layer's own ``_rotate``."""
    dh = att.d_head
    eye = torch.eye(dh, dtype=F64)
    if att.pos != "rope":
        return eye.expand(n_tok, dh, dh).clone()
    basis = eye[:, None, None, :].expand(dh, 1, n_tok, dh)  # basis[j, 0, t] = e_j at position t
    with torch.no_grad():
        rotated = att._rotate(basis)  # rotated[j, 0, t] = R_t e_j
    return rotated[:, 0].permute(1, 2, 0).contiguous()  # [t, :, j] = R_t e_j


def _check_r16(seed: int = 0) -> CheckResult:
    """Random heads behind random input maps: tokens ``u_k = W h_k + E x_k + b`` (a set with the
    centre ``b``); at the sampled point, ``ρ = max_k ‖V (u_k − c)‖`` for the centre ``c = b`` and
    the exact score factors ``g_q = max_{i,k} ‖Wᵀ M_ik u_k‖``, ``g_k = max_{i,k} ‖u_iᵀ M_ik W‖``
    with the layer's own rotations in ``M_ik = (R_i W_Q)ᵀ (R_k W_K)/√d_h``; the dense Jacobian
    of ``h ↦ head(W h + c)`` must lie below both closed forms, and below those of the case
    ``c = 0``, ``ρ = ‖V‖R``, ``g = m R`` (R16's corollary for tokens ``‖u_k‖ ≤ R``)."""
    n_tok, width, trials = 5, 8, 8
    worst_ratio, worst_plain, worst, n_heads, n_blocks = 0.0, 0.0, 0.0, 0, 0
    deviation, score_deviation = 0.0, 0.0
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
        rot = _rotations(att, n_tok)
        selectors = [_head_selector(att, j) for j in range(att.n_heads)]
        gen = _gen(1000 * seed + 10 * (pos == "rope") + causal)
        for _ in range(trials):
            scale = 0.3 + 1.7 * float(torch.rand(1, generator=gen))
            w = torch.randn(width, width, generator=gen, dtype=F64) * scale / math.sqrt(width)
            e = torch.randn(width, width, generator=gen, dtype=F64) * 0.5 / math.sqrt(width)
            b = (
                torch.randn(width, generator=gen, dtype=F64)
                * 2.0
                * float(torch.rand(1, generator=gen))
            )
            x = torch.randn(n_tok, width, generator=gen, dtype=F64)
            c = x @ e.T + b  # the per-token constants c_k = E x_k + b
            h0 = torch.randn(n_tok, width, generator=gen, dtype=F64)
            u0 = h0 @ w.T + c  # u_k = W h_k + c_k
            radius = float(u0.norm(dim=-1).max())  # every ‖u_k‖ ≤ R (the corollary's case)
            with torch.no_grad():  # the selectors read the heads the layer mixes
                heads = [sel(u0[None])[0] for sel in selectors]
                mixed = torch.stack(heads).sum(0) @ wo.T
                deviation = max(deviation, float((mixed - att(u0[None])[0]).abs().max()))
            for j, sel in enumerate(selectors):
                rows = slice(j * dh, (j + 1) * dh)

                def f(
                    z: torch.Tensor, sel: Any = sel, rows: slice = rows, w: Any = w, c: Any = c
                ) -> Any:
                    xs = z.reshape(n_tok, width) @ w.T + c
                    return sel(xs[None])[0][:, rows].reshape(-1)

                jac = torch.func.jacrev(f)(h0.reshape(-1)).detach()
                lip = _sigma(jac)
                qh, kh, vh = wq[rows], wk[rows], wv[rows]
                value = _sigma(vh @ w)
                # M_ik = (R_i W_Q)ᵀ (R_k W_K) / √d_h for every pair (i, k), all T² of them
                rq, rk = rot @ qh, rot @ kh  # [t] = R_t W_Q, R_t W_K
                mik = torch.einsum("iac,kad->ikcd", rq, rk) / math.sqrt(dh)
                # these M_ik give the head's output: softmax(u_iᵀ M_ik u_k) over the attended k
                scores = torch.einsum("ic,ikcf,kf->ik", u0, mik, u0)
                if causal:
                    hidden = torch.ones(n_tok, n_tok, dtype=torch.bool).triu(1)
                    scores = scores.masked_fill(hidden, float("-inf"))
                out = torch.softmax(scores, dim=-1) @ (u0 @ vh.T)
                score_deviation = max(score_deviation, float((out - heads[j][:, rows]).abs().max()))
                rho = float(((u0 - b) @ vh.T).norm(dim=-1).max())  # about the centre b
                gq = float(torch.einsum("dc,ikcf,kf->ikd", w, mik, u0).norm(dim=-1).max())
                gk = float(torch.einsum("ic,ikcf,fd->ikd", u0, mik, w).norm(dim=-1).max())
                terms = formulas.attention_head_terms(value, rho * gq, rho * gk, n_tok)
                blocks = formulas.attention_head_blocks(value, rho * gq, rho * gk, n_tok)
                # the corollary: c = 0, ρ = ‖V‖R, g_q = m_q R, g_k = m_k R
                mq = max(_sigma(w.T @ mik[a, bb]) for a in range(n_tok) for bb in range(n_tok))
                mk = max(_sigma(mik[a, bb] @ w) for a in range(n_tok) for bb in range(n_tok))
                r2v = _sigma(vh) * radius**2
                plain = min(
                    formulas.attention_head_terms(value, r2v * mq, r2v * mk, n_tok),
                    formulas.attention_head_blocks(value, r2v * mq, r2v * mk, n_tok),
                )
                ok = ok and lip <= terms and lip <= blocks and lip <= plain
                best = min(terms, blocks)
                n_heads += 1
                n_blocks += blocks < terms
                worst = max(worst, lip)
                worst_ratio = max(worst_ratio, lip / best)
                worst_plain = max(worst_plain, lip / plain)
    ok = ok and deviation <= 1e-12 and score_deviation <= 1e-12
    return CheckResult(
        "R16",
        ok,
        f"{n_heads} heads (plain, RoPE, RoPE causal; T = {n_tok}, random input maps W and "
        f"tokens u = W h + E x + b about the centre b; ρ, g_q, g_k exact at the point, with the "
        f"layer's rotations): every dense ‖J‖₂ of h ↦ head(W h + c) is below both closed forms; "
        f"the largest ‖J‖₂ / min(terms, blocks) is {worst_ratio:.4g} ({worst_plain:.4g} for the "
        f"case c = 0, ρ = ‖V‖R, g = mR), the block form is the smaller for {n_blocks} of "
        f"{n_heads}; heads read as the layer mixes them (deviation {deviation:.2g}), and the "
        f"M_ik reproduce each head's output (deviation {score_deviation:.2g})",
        {
            "heads": n_heads,
            "blocks_smaller": n_blocks,
            "largest_ratio": worst_ratio,
            "largest_ratio_plain": worst_plain,
            "largest_jacobian": worst,
            "head_deviation": deviation,
            "score_deviation": score_deviation,
        },
    )


@claim(
    "R16",
    "Rule: an attention head on an affine input, and its value and key terms by block norms "
    "(Schur test)",
    r"One softmax head on $T$ tokens reading $u_k = W h_k + c_k$ (row $i$ attending to "
    r"$n \le T$ of them, any mask), scores $u_i^\top M_{ik} u_k$: its Jacobian in $h$ is "
    r"$J = P \otimes (VW) + \mathrm{blockdiag}_i(V Y_i G_i^\top) + B$, $V Y_i$ with the "
    r"columns $\sqrt{P_{ik}}\, V(u_k - \mu_i)$. For a vector $c$ with "
    r"$\lVert V(u_k - c)\rVert \le \rho$, $\lVert W^\top M_{ik} u_k\rVert \le g_q$, "
    r"$\lVert u_i^\top M_{ik} W\rVert \le g_k$ for all $i, k$, $\lVert VW\rVert \le \alpha$, "
    r"$\rho g_q \le q$ and $\rho g_k \le b$: (a) $\lVert J\rVert_2 \le \sqrt T \alpha + q + "
    r"\sqrt T b$ (lipschitz_formulas.attention_head_terms); (b) for $b > 0$, "
    r"$\lVert J\rVert_2 \le q + \sqrt{T (\alpha + b)(\alpha + 2b)^2/(8b)}$ "
    r"(lipschitz_formulas.attention_head_blocks): $\sum_k P_{ik}\lVert V(u_k - \mu_i)\rVert^2 "
    r"\le \rho^2$ and $\lVert V(u_k - \mu_i)\rVert \le 2\rho(1 - P_{ik})$ (the $V(u_k - c)$ "
    r"about their weighted mean $V(\mu_i - c)$), the blocks of $E = P \otimes (VW) + B$ have "
    r"norms at most $N_{ik} = P_{ik}\alpha + g_k P_{ik}\lVert V(u_k - \mu_i)\rVert \le "
    r"P_{ik}(\alpha + 2b(1 - P_{ik}))$, whose rows sum to at most $\alpha + b$ and columns to "
    r"at most $T(\alpha + 2b)^2/(8b)$, and $\lVert E\rVert_2 \le \lVert N\rVert_2 \le "
    r"\sqrt{\lVert N\rVert_1 \lVert N\rVert_\infty}$. Corollary ($c = 0$): for "
    r"$\lVert u_k\rVert \le R$, $\lVert V\rVert \le v$, $\lVert W^\top M_{ik}\rVert \le m_q$, "
    r"$\lVert M_{ik} W\rVert \le m_k$ take $\rho = vR$, $g_q = m_q R$, $g_k = m_k R$.",
    (
        "for a fixed vector c (the centre): ‖V (u_k − c)‖ <= ρ for every token k at the head's "
        "input u = W h + c_k (c = 0, ρ = ‖V‖R for tokens ‖u_k‖ <= R)",
        "bias-free projections (o_i = Σ_k P_ik V u_k)",
        "P row-stochastic: softmax over the n <= T tokens a row attends to, zero elsewhere",
        "the score factors ‖Wᵀ M_ik u_k‖ <= g_q and ‖u_iᵀ M_ik W‖ <= g_k for all i, k (under "
        "RoPE, M_ik = W_Qᵀ R_{k−i} W_K/√d_h; g = m R for ‖Wᵀ M_ik‖, ‖M_ik W‖ <= m and "
        "‖u_k‖ <= R), and ‖V W‖ <= α",
        "ρ g_q <= q and ρ g_k <= b (the code passes these products rounded up); b > 0 for the "
        "block form (b)",
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
            "the centred spread taken as ρ (1 − P_ik), without its factor 2, in the derivation",
            overrides={"spread": 1},
        ),
        Variant("without P row-stochastic (rows summing to 1)", drop=(6,)),
        Variant(
            "without ‖V (u_k − c)‖ <= ρ (the tokens' value images about the centre)", drop=(0,)
        ),
        Variant("without the key factor ‖u_iᵀ M_ik W‖ <= g_k", drop=(4,)),
        Variant("without the query factor ‖Wᵀ M_ik u_k‖ <= g_q", drop=(3,)),
        Variant("without ‖V W‖ <= α", drop=(2,)),
        Variant("without ρ g_k <= b₊ (the key term of the block form)", drop=(13,)),
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
