"""The attention rule R7 (SCIENCE.md §7) derived on the derivation engine.

One softmax-attention head on ``T`` tokens ``x_1, …, x_T`` of norm at most ``R``:
``o_i = Σ_k P_ik V x_k`` with ``P_ik = exp(s_ik) / Σ_l exp(s_il)`` over the ``n ≤ T`` tokens
row ``i`` attends to (``n = T`` without a mask, ``n = i`` under a causal mask) and scores
``s_ik = x_iᵀ M_ik x_k`` (``M_ik = M`` for plain attention, ``W_Qᵀ R_{k−i} W_K / √d_h`` under
RoPE).

The derivation, every step on symbols (``T``, ``n``, ``R``, norms) or a cited lemma:

1. the directional derivative of ``o_i`` (one generic coordinate; a sympy identity on sums over
   ``n`` tokens) is ``Σ_k P_ik h_k + C_i h_i + Σ_k P_ik (x_k − μ_i) x_iᵀ M_ik h_k`` with
   ``μ_i = Σ_k P_ik x_k`` and ``C_i h = Σ_k P_ik (x_k − μ_i) (M_ik x_k)ᵀ h``: so
   ``J = P ⊗ V + blockdiag_i(V C_i) + (I_T ⊗ V) B``, ``B`` the block matrix of
   ``P_ik (x_k − μ_i) x_iᵀ M_ik``;
2. ``‖P ⊗ V‖ = ‖P‖‖V‖ ≤ √T ‖P‖_∞ ‖V‖ = √T ‖V‖`` (rows of ``P`` sum to 1);
3. ``C_i = Y_i G_iᵀ`` with the columns ``√P_ik (x_k − μ_i)`` of ``Y_i`` and ``√P_ik M_ik x_k``
   of ``G_i``: ``‖Y_i‖² ≤ Σ_k P_ik ‖x_k − μ_i‖² = Σ_k P_ik ‖x_k‖² − ‖μ_i‖² ≤ R²`` and
   ``‖G_i‖ ≤ mR``, so ``‖V C_i‖ ≤ ‖V‖ m R²``;
4. block row ``i`` of ``B`` is ``Y_i blockdiag_k(√P_ik x_iᵀ M_ik)``, of norm ``≤ R · mR``;
   ``T`` block rows stacked: ``‖B‖ ≤ √T m R²``;
5. the triangle inequality: ``‖J‖ ≤ ‖V‖(√T + (1 + √T) R² m)`` = ``attention_head``;
6. RoPE: ``‖W_Qᵀ R_{k−i} W_K / √d_h‖ ≤ ‖W_Q‖‖W_K‖/√d_h`` = ``rope_score_norm``;
7. heads stacked and mixed: ``‖W_O [J_1; …; J_H]‖ ≤ ‖W_O‖ √(Σ_h L_h²)`` = ``attention_heads``
   (for ``H`` heads, and for two heads to read the code's list form).

The weights ``P_ik`` of the norm bounds are positive symbols whose row sums to 1 (an
assumption: the softmax's normalisation); the derivative step writes the softmax out. The blocks
``Y_i``, ``G_i``, ``B`` and the rows of ``P`` enter as matrices given by their columns / entries
(:class:`Pred` facts that define them); reading the block matrices off the directional derivative
of step 1 is linear algebra (the coefficient of ``h_k``), not a sympy step.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sympy as sp
import torch

import dynamo as dy
from dynamo.kernel import attention_rule as _attention_rule
from dynamo.kernel import lipschitz_formulas as formulas

from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import SUBMULTIPLICATIVE, opnorm
from ._logic import Derivation, Pred, lemma

F64 = torch.float64

# ---------------------------------------------------------------------- function symbols
#: the Kronecker product ``A ⊗ B``
kron = sp.Function("kron")
#: ``blockdiag(B_i, i)``: the block-diagonal matrix of the blocks ``B_i`` over the index ``i``
blockdiag = sp.Function("blockdiag")
#: ``stack(A_h, h, H)``: the blocks ``A_1, …, A_H`` stacked vertically
stack = sp.Function("stack")
#: the transpose of a matrix
transpose = sp.Function("transpose", commutative=False)
#: the max-row-sum norm ``‖A‖_∞`` (induced by the vector ∞-norm)
opnorm_inf = sp.Function("opnorm_inf", nonnegative=True)

# ---------------------------------------------------------------------- lemma variables
_A, _B, _Q = sp.symbols("A B Q", commutative=False)
_a, _b, _c, _r, _m = sp.symbols("a b c r m")
_aa, _bb = sp.symbols("A_b B_b")
_kk, _nn, _ii = sp.symbols("k n i", integer=True, positive=True)
_w = sp.Symbol("w")

# ---------------------------------------------------------------------- cited lemmas
OPNORM_TRIANGLE = lemma(
    "triangle inequality (spectral norm)",
    "‖A + B‖₂ ≤ ‖A‖₂ + ‖B‖₂ for matrices of one size (the spectral norm is a matrix norm).",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, Def. 5.6.1 (axiom 3), Thm 5.6.2",),
    (_A, _B),
    (),
    (sp.Le(opnorm(_A + _B), opnorm(_A) + opnorm(_B)),),
)

OPNORM_HOMOGENEOUS = lemma(
    "absolute homogeneity (spectral norm)",
    "‖cA‖₂ = |c| ‖A‖₂ for every scalar c and matrix (or vector) A.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., Def. 5.6.1 (axiom 2)",),
    (_c, _A),
    (),
    (sp.Eq(opnorm(_c * _A), sp.Abs(_c) * opnorm(_A)),),
)

KRONECKER_NORM = lemma(
    "spectral norm of a Kronecker product",
    "The singular values of A ⊗ B are the products σ_i(A) σ_j(B); hence ‖A ⊗ B‖₂ = ‖A‖₂‖B‖₂.",
    ("R. A. Horn, C. R. Johnson, Topics in Matrix Analysis, 1991, Thm 4.2.15",),
    (_A, _B),
    (),
    (sp.Eq(opnorm(kron(_A, _B)), opnorm(_A) * opnorm(_B)),),
)

ROW_SUM_NORM = lemma(
    "max-row-sum norm",
    "‖A‖_∞ (induced by the vector ∞-norm) is the largest row sum of |a_ik|. So if the nonzero "
    "entries of every row i of A are a_i1, …, a_in, all ≥ 0, and each row sums to r, "
    "then ‖A‖_∞ = r ≤ r, and every entry (at most its row sum) is ≤ r.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., Example 5.6.5",),
    (_A, _a, _ii, _kk, _nn, _r),
    (
        Pred("row_entries", (_A, _a, _ii, _kk, _nn)),
        sp.Ge(_a, 0),
        sp.Eq(sp.Sum(_a, (_kk, 1, _nn)), _r),
    ),
    (sp.Le(opnorm_inf(_A), _r), sp.Le(_a, _r)),
)

TWO_NORM_BY_INF_NORM = lemma(
    "‖A‖₂ ≤ √m ‖A‖_∞",
    "For A with m rows, ‖A‖₂ ≤ √m ‖A‖_∞.",
    ("G. H. Golub, C. F. Van Loan, Matrix Computations, 4th ed., 2013, §2.3.2",),
    (_A, _m),
    (Pred("rows", (_A, _m)),),
    (sp.Le(opnorm(_A), sp.sqrt(_m) * opnorm_inf(_A)),),
)

FROBENIUS_COLUMNS = lemma(
    "‖A‖₂ ≤ ‖A‖_F by columns",
    "If A = [c_1 y_1, …, c_n y_n] (columns, or column blocks, c_k scalars), then "
    "‖A‖₂² ≤ ‖A‖_F² ≤ Σ_k c_k² ‖y_k‖₂² (‖A‖₂ ≤ ‖A‖_F, and ‖A‖_F² is the sum of the squared "
    "Frobenius norms of its column blocks).",
    ("Golub & Van Loan, Matrix Computations, 4th ed., §2.3.2 (‖A‖₂ ≤ ‖A‖_F)",),
    (_A, _c, _B, _kk, _nn),
    (Pred("columns", (_A, _c, _B, _kk, _nn)),),
    (sp.Le(opnorm(_A) ** 2, sp.Sum(_c**2 * opnorm(_B) ** 2, (_kk, 1, _nn))),),
)

BLOCK_DIAGONAL_NORM = lemma(
    "spectral norm of a block-diagonal matrix",
    "The singular values of blockdiag(B_1, …, B_T) are those of the blocks together, so if "
    "‖B_i‖₂ ≤ b for every i then ‖blockdiag(B_i)‖₂ ≤ b. The hypothesis is read for every i: "
    "it is applied only to a generic row i (each assumption of R7 that mentions i or k holds for "
    "every i, k, so a fact shown for a generic i holds for all).",
    (
        "Horn & Johnson, Matrix Analysis, 2nd ed., Thm 2.6.3 (singular value decomposition) "
        "applied block by block",
    ),
    (_B, _ii, _b),
    (sp.Le(opnorm(_B), _b),),
    (sp.Le(opnorm(blockdiag(_B, _ii)), _b),),
)

STACKED_NORM = lemma(
    "spectral norm of stacked blocks",
    "‖[A_1; …; A_H]‖₂² ≤ Σ_h ‖A_h‖₂²: ‖[A_1; …; A_H] x‖² = Σ_h ‖A_h x‖² ≤ Σ_h ‖A_h‖₂² ‖x‖².",
    (
        "Horn & Johnson, Matrix Analysis, 2nd ed., Example 5.6.6 (the spectral norm as the norm "
        "induced by ‖·‖₂)",
    ),
    (_A, _ii, _nn),
    (),
    (sp.Le(opnorm(stack(_A, _ii, _nn)) ** 2, sp.Sum(opnorm(_A) ** 2, (_ii, 1, _nn))),),
)

TRANSPOSE_NORM = lemma(
    "‖Aᵀ‖₂ = ‖A‖₂",
    "A and Aᵀ have the same singular values, so ‖Aᵀ‖₂ = ‖A‖₂.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., Thm 2.6.3 (A = UΣW* gives Aᵀ = W̄ΣUᵀ)",),
    (_A,),
    (),
    (sp.Eq(opnorm(transpose(_A)), opnorm(_A)),),
)

ORTHOGONAL_NORM = lemma(
    "orthogonal matrices are isometries",
    "A real orthogonal (unitary) Q satisfies ‖Qx‖₂ = ‖x‖₂ for every x, so ‖Q‖₂ = 1.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., Thm 2.1.4",),
    (_Q,),
    (Pred("orthogonal", (_Q,)),),
    (sp.Eq(opnorm(_Q), 1), sp.Le(opnorm(_Q), 1)),
)

SUM_MONOTONE = lemma(
    "finite sums are monotone",
    "If a_k ≤ b_k for every k = 1, …, n, then Σ_k a_k ≤ Σ_k b_k.",
    (
        "the ordered-field axiom y ≤ z ⇒ x + y ≤ x + z, by induction on n; W. Rudin, Principles "
        "of Mathematical Analysis, 3rd ed., 1976, Def. 1.17",
    ),
    (_a, _b, _kk, _nn),
    (sp.Le(_a, _b),),
    (sp.Le(sp.Sum(_a, (_kk, 1, _nn)), sp.Sum(_b, (_kk, 1, _nn))),),
)

PRODUCT_MONOTONE = lemma(
    "products of nonnegative bounds",
    "If 0 ≤ a ≤ A and 0 ≤ b ≤ B then ab ≤ AB.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Def. 1.17 and Prop. 1.18",),
    (_a, _aa, _b, _bb),
    (sp.Ge(_a, 0), sp.Le(_a, _aa), sp.Ge(_b, 0), sp.Le(_b, _bb)),
    (sp.Le(_a * _b, _aa * _bb),),
)

SUM_OF_BOUNDS = lemma(
    "sums of bounds",
    "If a ≤ A and b ≤ B then a + b ≤ A + B.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Def. 1.17 and Prop. 1.18",),
    (_a, _aa, _b, _bb),
    (sp.Le(_a, _aa), sp.Le(_b, _bb)),
    (sp.Le(_a + _b, _aa + _bb),),
)

SQUARE_ROOT_MONOTONE = lemma(
    "squares order nonnegative numbers",
    "If a ≥ 0, b ≥ 0 and a² ≤ b², then a ≤ b.",
    (
        "W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Prop. 1.18 (0 < a < b ⇒ "
        "a² < b²)",
    ),
    (_a, _b),
    (sp.Ge(_a, 0), sp.Ge(_b, 0), sp.Le(_a**2, _b**2)),
    (sp.Le(_a, _b),),
)

WEIGHTED_AVERAGE = lemma(
    "a weighted average is at most the largest value",
    "If w_k ≥ 0, Σ_k w_k = 1 and a_k ≤ A for every k = 1, …, n, then Σ_k w_k a_k ≤ A "
    "(Σ_k w_k a_k ≤ Σ_k w_k A = A).",
    (
        "elementary: Σ_k w_k a_k ≤ Σ_k w_k A = A term by term (w_k ≥ 0) from the ordered-field "
        "axioms, W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Def. 1.17 and "
        "Prop. 1.18",
    ),
    (_w, _a, _aa, _kk, _nn),
    (sp.Ge(_w, 0), sp.Eq(sp.Sum(_w, (_kk, 1, _nn)), 1), sp.Le(_a, _aa)),
    (sp.Le(sp.Sum(_w * _a, (_kk, 1, _nn)), _aa),),
)

_X = sp.Function("x", commutative=False)  # lemma copy: vectors x_k
_mu = sp.Symbol("mu", commutative=False)
WEIGHTED_VARIANCE = lemma(
    "weighted variance identity",
    "If w_k ≥ 0, Σ_k w_k = 1 and μ = Σ_k w_k x_k (vectors of an inner-product space), then "
    "Σ_k w_k ‖x_k − μ‖² = Σ_k w_k ‖x_k‖² − ‖μ‖² (expand ‖x_k − μ‖² = ‖x_k‖² − 2⟨x_k, μ⟩ + ‖μ‖² "
    "and sum: the König–Huygens formula).",
    (
        "elementary: expand ‖x_k − μ‖² by bilinearity of the inner product and sum with "
        "Σ_k w_k = 1, Σ_k w_k x_k = μ (no theorem is needed)",
    ),
    (_w, _kk, _nn, _X, _mu),
    (
        sp.Ge(_w, 0),
        sp.Eq(sp.Sum(_w, (_kk, 1, _nn)), 1),
        Pred("weighted_mean", (_mu, _w, _X, _kk, _nn)),
    ),
    (
        sp.Eq(
            sp.Sum(_w * opnorm(_X(_kk) - _mu) ** 2, (_kk, 1, _nn)),
            sp.Sum(_w * opnorm(_X(_kk)) ** 2, (_kk, 1, _nn)) - opnorm(_mu) ** 2,
        ),
    ),
)

# ---------------------------------------------------------------------- the claim's symbols
T = sp.Symbol("T", integer=True, positive=True)  # tokens
n = sp.Symbol("n", integer=True, positive=True)  # tokens row i attends to (n ≤ T)
i, k = sp.symbols("i k", integer=True, positive=True)  # a generic row, a generic token
R = sp.Symbol("R", nonnegative=True)  # token-norm bound
v = sp.Symbol("v", nonnegative=True)  # bound on ‖V‖
m = sp.Symbol("m", nonnegative=True)  # bound on every ‖M_ik‖
s = sp.IndexedBase("s", real=True)  # scores s_ik

V = sp.Symbol("V", commutative=False)
P = sp.Symbol("P", commutative=False)
I_T = sp.Symbol("I_T", commutative=False)
x = sp.Function("x", commutative=False)  # x(k): token k, a d×1 matrix
M = sp.Function("M", commutative=False)  # M(i, k): the score matrix of the pair (i, k)
Y = sp.Function("Y", commutative=False)  # Y(i): columns √P_ik (x_k − μ_i)
G = sp.Function("G", commutative=False)  # G(i): columns √P_ik M_ik x_k
mu = sp.Function("mu", commutative=False)  # mu(i) = Σ_k P_ik x_k

#: the softmax weight P_ik = exp(s_ik) / Σ_l exp(s_il) of row i over its n attended tokens
#: (positive; an assumption says that row i sums to 1)
p = sp.IndexedBase("p", positive=True)[i, k]
#: the same with the normaliser written out (for the derivative, which moves it)
p_sum = sp.exp(s[i, k]) / sp.Sum(sp.exp(s[i, k]), (k, 1, n))

# one coordinate of the tokens and of the direction, and the scores' directional derivatives
_xc, _hc = sp.IndexedBase("xi", real=True), sp.IndexedBase("eta", real=True)
_qd = sp.IndexedBase("a", real=True)  # a_k = (M_ik x_k)ᵀ h_i   (the query moves)
_kd = sp.IndexedBase("b", real=True)  # b_k = x_iᵀ M_ik h_k     (the key moves)
_s2 = sp.IndexedBase("c", real=True)  # c_k = h_iᵀ M_ik h_k     (second order)
_eps = sp.Symbol("epsilon", real=True)


def _directional_derivative() -> Any:
    """d/dε of one coordinate of Σ_k P_ik(ε) x_k(ε) at ε = 0, tokens moved to x_k + ε h_k: the
    scores x_iᵀ M_ik x_k become s_ik + ε(a_k + b_k) + ε² c_k (bilinear in the two tokens)."""
    se = s[i, k] + _eps * (_qd[k] + _kd[k]) + _eps**2 * _s2[k]
    num = sp.Sum(sp.exp(se) * (_xc[k] + _eps * _hc[k]), (k, 1, n))
    den = sp.Sum(sp.exp(se), (k, 1, n))
    return sp.diff(num / den, _eps).subs(_eps, 0)


def _block_form(centred: bool = True) -> Any:
    """The same coordinate read as Σ_k J_ik h_k: the value part Σ_k P_ik h_k, the diagonal part
    C_i h_i = Σ_k P_ik (x_k − μ_i) a_k, the off-diagonal part Σ_k P_ik (x_k − μ_i) b_k."""
    nu = sp.Sum(p_sum * _xc[k], (k, 1, n))
    out = sp.Sum(p_sum * _hc[k], (k, 1, n)) + sp.Sum(p_sum * (_xc[k] - nu) * _kd[k], (k, 1, n))
    centre = nu if centred else 0  # the false variant forgets to centre C_i
    out += sp.Sum(p_sum * (_xc[k] - centre) * _qd[k], (k, 1, n))
    return out


#: F(i, k) = √P_ik x_iᵀ M_ik (a 1×d block) and block row i of B: Y_i blockdiag_k(F(i, k))
F_IK = sp.sqrt(p) * transpose(x(i)) * M(i, k)
B_ROW = Y(i) * blockdiag(F_IK, k)
#: B: the T block rows stacked (block (i, k) is P_ik (x_k − μ_i) x_iᵀ M_ik)
B_MAT = stack(B_ROW, i, T)

#: the Jacobian of one head, as read off the directional derivative
J_VALUE = kron(P, V)
J_DIAG = blockdiag(V * Y(i) * transpose(G(i)), i)
J_OFF = kron(I_T, V) * B_MAT
J_HEAD = J_VALUE + J_DIAG + J_OFF

# RoPE
WQ, WK = sp.symbols("W_Q W_K", commutative=False)
Rot = sp.Function("Rot", commutative=False)  # Rot(k − i): the orthogonal RoPE rotation
q_n, k_n = sp.symbols("q k_norm", nonnegative=True)
d_h = sp.Symbol("d_h", integer=True, positive=True)
M_ROPE = transpose(WQ) * Rot(k - i) * WK / sp.sqrt(d_h)

# heads
H = sp.Symbol("H", integer=True, positive=True)
h = sp.Symbol("h", integer=True, positive=True)
o_n = sp.Symbol("o", nonnegative=True)
WO = sp.Symbol("W_O", commutative=False)
Jh = sp.Function("J", commutative=False)  # J(h): head h's Jacobian
Lh = sp.Function("L", nonnegative=True)  # L(h): a bound on ‖J(h)‖


#: the Jacobian identity's two sides, built on first use and kept (no code constant enters
#: them; comparing fresh copies of these Sums is what made every run slow)
@cache
def _derivative() -> Any:
    return _directional_derivative()


@cache
def _block_rhs(centred: bool) -> Any:
    return _block_form(centred)


@cache
def _jacobian(centred: bool) -> Any:
    return sp.Eq(_derivative(), _block_rhs(centred), evaluate=False)


def _goal(centred: bool = True) -> tuple[Any, ...]:
    # the bounds are what dynamo's code evaluates, read now (a changed constant changes them)
    return (
        _jacobian(centred),
        sp.Le(opnorm(J_HEAD), formulas.attention_head(v, m, T, R, sqrt=sp.sqrt)),
        sp.Le(opnorm(M_ROPE), formulas.rope_score_norm(q_n, k_n, d_h, sqrt=sp.sqrt)),
        sp.Le(opnorm(WO * stack(Jh(h), h, H)), o_n * sp.sqrt(sp.Sum(Lh(h) ** 2, (h, 1, H)))),
        sp.Le(
            opnorm(WO * stack(Jh(h), h, 2)),
            formulas.attention_heads(o_n, [Lh(1), Lh(2)], sqrt=sp.sqrt),
        ),
    )


ASSUMPTIONS = (
    sp.Le(opnorm(x(k)), R),  # 0: every token k in the ball of radius R ...
    sp.Le(opnorm(x(i)), R),  # 1: ... so also the query token i
    sp.Le(opnorm(V), v),  # 2
    sp.Le(opnorm(M(i, k)), m),  # 3: every score matrix M_ik
    Pred("row_entries", (P, p, i, k, n)),  # 4: row i of P: softmax over its n attended tokens
    sp.Eq(sp.Sum(p, (k, 1, n)), 1),  # 5: row i of the softmax sums to 1
    Pred("rows", (P, T)),  # 6: P is T×T
    Pred("weighted_mean", (mu(i), p, x, k, n)),  # 7: μ_i = Σ_k P_ik x_k
    Pred("columns", (Y(i), sp.sqrt(p), x(k) - mu(i), k, n)),  # 8: Y_i's columns
    Pred("columns", (G(i), sp.sqrt(p), M(i, k) * x(k), k, n)),  # 9: G_i's columns
    Pred("orthogonal", (I_T,)),  # 10: the identity matrix
    Pred("orthogonal", (Rot(k - i),)),  # 11: the RoPE rotations
    sp.Le(opnorm(WQ), q_n),  # 12
    sp.Le(opnorm(WK), k_n),  # 13
    sp.Le(opnorm(Jh(h)), Lh(h)),  # 14: each head's bound
    sp.Le(opnorm(WO), o_n),  # 15
)


def _prod(d: Derivation, a: Any, a_hi: Any, b: Any, b_hi: Any, why: str) -> Any:
    """``a b ≤ a_hi b_hi`` from ``0 ≤ a ≤ a_hi`` and ``0 ≤ b ≤ b_hi``."""
    return d.lemma(PRODUCT_MONOTONE, why, a=a, A_b=a_hi, b=b, B_b=b_hi)


def _weighted_bound(d: Derivation, term: Any, bound: Any, why: str) -> Any:
    """From ``0 ≤ term ≤ bound`` (``term`` depending on ``k``): ``Σ_k P_ik term² ≤ bound²``."""
    _prod(d, term, bound, term, bound, f"{why}: squared")
    return d.lemma(
        WEIGHTED_AVERAGE,
        f"{why}: the P_ik-weighted average of the squares",
        w=p,
        a=term**2,
        A_b=bound**2,
        k=k,
        n=n,
    )


def _value_part(d: Derivation, root_t: Any) -> Any:
    """‖P ⊗ V‖ ≤ √T v (``root_t`` in place of √T for a false variant)."""
    d.lemma(ROW_SUM_NORM, "‖P‖_∞ ≤ 1 and P_ik ≤ 1", A=P, a=p, i=i, k=k, n=n, r=1)
    p2 = d.lemma(TWO_NORM_BY_INF_NORM, "P has T rows", A=P, m=T)
    p2b = _prod(d, sp.sqrt(T), root_t, opnorm_inf(P), 1, "√T ‖P‖_∞ ≤ √T")
    d.chain([p2, p2b], "‖P‖₂ ≤ √T")
    kv = d.lemma(KRONECKER_NORM, "‖P ⊗ V‖ = ‖P‖‖V‖", A=P, B=V)
    kvb = _prod(d, opnorm(P), root_t, opnorm(V), v, "‖P‖‖V‖ ≤ √T v")
    return d.chain([kv, kvb], "the value part: ‖P ⊗ V‖ ≤ √T v")


def _covariance_factors(d: Derivation) -> None:
    """‖Y_i‖ ≤ R (the weighted variance) and ‖G_i‖ ≤ mR."""
    var = d.lemma(
        WEIGHTED_VARIANCE,
        "Σ_k P_ik ‖x_k − μ_i‖² = Σ_k P_ik ‖x_k‖² − ‖μ_i‖²",
        w=p,
        k=k,
        n=n,
        x=x,
        mu=mu(i),
    )
    second = _weighted_bound(d, opnorm(x(k)), R, "tokens in the ball of radius R")
    drop_mean = d.inequality(
        var.rhs, sp.Sum(p * opnorm(x(k)) ** 2, (k, 1, n)), "dropping −‖μ_i‖² ≤ 0"
    )
    yf = d.lemma(
        FROBENIUS_COLUMNS,
        "‖Y_i‖² by its columns √P_ik (x_k − μ_i)",
        A=Y(i),
        c=sp.sqrt(p),
        B=x(k) - mu(i),
        k=k,
        n=n,
    )
    d.chain([yf, var, drop_mean, second], "‖Y_i‖² ≤ R²")
    d.lemma(SQUARE_ROOT_MONOTONE, "‖Y_i‖ ≤ R", a=opnorm(Y(i)), b=R)
    mx = d.lemma(SUBMULTIPLICATIVE, "‖M_ik x_k‖ ≤ ‖M_ik‖‖x_k‖", A=M(i, k), B=x(k))
    mxb = _prod(d, opnorm(M(i, k)), m, opnorm(x(k)), R, "‖M_ik‖‖x_k‖ ≤ mR")
    d.chain([mx, mxb], "‖M_ik x_k‖ ≤ mR")
    gsum = _weighted_bound(d, opnorm(M(i, k) * x(k)), m * R, "‖M_ik x_k‖ ≤ mR")
    gf = d.lemma(
        FROBENIUS_COLUMNS,
        "‖G_i‖² by its columns √P_ik M_ik x_k",
        A=G(i),
        c=sp.sqrt(p),
        B=M(i, k) * x(k),
        k=k,
        n=n,
    )
    d.chain([gf, gsum], "‖G_i‖² ≤ (mR)²")
    d.lemma(SQUARE_ROOT_MONOTONE, "‖G_i‖ ≤ mR", a=opnorm(G(i)), b=m * R)


def _diagonal_part(d: Derivation) -> Any:
    """‖blockdiag_i(V Y_i G_iᵀ)‖ ≤ v m R²."""
    gt = d.lemma(TRANSPOSE_NORM, "‖G_iᵀ‖ = ‖G_i‖", A=G(i))
    d.chain([gt, sp.Le(opnorm(G(i)), m * R)], "‖G_iᵀ‖ ≤ mR")
    c1 = d.lemma(SUBMULTIPLICATIVE, "‖Y_i G_iᵀ‖ ≤ ‖Y_i‖‖G_iᵀ‖", A=Y(i), B=transpose(G(i)))
    c2 = _prod(d, opnorm(Y(i)), R, opnorm(transpose(G(i))), m * R, "‖Y_i‖‖G_iᵀ‖ ≤ m R²")
    d.chain([c1, c2], "‖C_i‖ = ‖Y_i G_iᵀ‖ ≤ m R²")
    vc1 = d.lemma(SUBMULTIPLICATIVE, "‖V C_i‖ ≤ ‖V‖‖C_i‖", A=V, B=Y(i) * transpose(G(i)))
    vc2 = _prod(d, opnorm(V), v, opnorm(Y(i) * transpose(G(i))), m * R**2, "≤ v m R²")
    d.chain([vc1, vc2], "‖V C_i‖ ≤ v m R²")
    return d.lemma(
        BLOCK_DIAGONAL_NORM,
        "the diagonal part: ‖blockdiag_i(V C_i)‖ ≤ v m R²",
        B=V * Y(i) * transpose(G(i)),
        i=i,
        b=v * m * R**2,
    )


def _off_diagonal_part(d: Derivation) -> Any:
    """‖(I_T ⊗ V) B‖ ≤ √T v m R²: block row i of B is Y_i blockdiag_k(√P_ik x_iᵀ M_ik)."""
    d.lemma(SQUARE_ROOT_MONOTONE, "√P_ik ≤ 1 (P_ik ≤ 1)", a=sp.sqrt(p), b=1)
    xm = transpose(x(i)) * M(i, k)
    f1 = d.lemma(OPNORM_HOMOGENEOUS, "‖√P_ik x_iᵀ M_ik‖ = √P_ik ‖x_iᵀ M_ik‖", c=sp.sqrt(p), A=xm)
    f2 = d.lemma(SUBMULTIPLICATIVE, "‖x_iᵀ M_ik‖ ≤ ‖x_iᵀ‖‖M_ik‖", A=transpose(x(i)), B=M(i, k))
    xt = d.lemma(TRANSPOSE_NORM, "‖x_iᵀ‖ = ‖x_i‖", A=x(i))
    d.chain([xt, ASSUMPTIONS[1]], "‖x_iᵀ‖ ≤ R")
    f3 = _prod(d, opnorm(transpose(x(i))), R, opnorm(M(i, k)), m, "‖x_iᵀ‖‖M_ik‖ ≤ Rm")
    d.chain([f2, f3], "‖x_iᵀ M_ik‖ ≤ Rm")
    f4 = _prod(d, sp.sqrt(p), 1, opnorm(xm), R * m, "√P_ik ‖x_iᵀ M_ik‖ ≤ Rm")
    d.chain([f1, f4], "‖√P_ik x_iᵀ M_ik‖ ≤ Rm")
    d.lemma(ORTHOGONAL_NORM, "‖I_T‖ = 1", Q=I_T)
    return _stacked_rows(d, F_IK, B_ROW, B_MAT, m, "M_ik")


def _stacked_rows(d: Derivation, f_ik: Any, b_row: Any, b_mat: Any, mm: Any, name: str) -> Any:
    """From ``‖f_ik‖ ≤ R·mm`` (shown for a generic ``i, k``) and ``‖I_T‖ ≤ 1`` (shown by the
    caller, from its own hypotheses) to ``‖(I_T ⊗ V) B‖ ≤ v √T mm R²``
    for ``B`` the ``T`` stacked block rows ``b_row = Y_i blockdiag_k(f_ik)``: R7's off-diagonal
    part (``f_ik = √P_ik x_iᵀ M_ik``, ``mm = m``) and R16's key part (``M_ik W``, ``m_k``).

    Parameters
    ----------
    d : Derivation
        The derivation the steps are added to.
    f_ik, b_row, b_mat : sympy expressions
        The block ``f_ik``, block row ``i`` of ``B`` and ``B`` itself.
    mm : sympy expression
        The bound on the score matrices in ``f_ik`` (``‖f_ik‖ ≤ R·mm``).
    name : str
        How the step labels name that matrix.

    Returns
    -------
    Any
        The fact ``‖(I_T ⊗ V) B‖ ≤ v √T mm R²``.
    """
    blk = f"‖blockdiag_k(√P_ik x_iᵀ {name})‖ ≤ R {mm}"
    d.lemma(BLOCK_DIAGONAL_NORM, blk, B=f_ik, i=k, b=R * mm)
    b1 = d.lemma(SUBMULTIPLICATIVE, "‖B_i·‖ ≤ ‖Y_i‖‖blockdiag_k(·)‖", A=Y(i), B=blockdiag(f_ik, k))
    b2 = _prod(d, opnorm(Y(i)), R, opnorm(blockdiag(f_ik, k)), R * mm, f"≤ R · R {mm}")
    d.chain([b1, b2], f"block row i of B: ‖B_i·‖ ≤ {mm} R²")
    sq = _prod(d, opnorm(b_row), mm * R**2, opnorm(b_row), mm * R**2, f"‖B_i·‖² ≤ {mm}² R⁴")
    tot = d.lemma(SUM_MONOTONE, "summed over the T block rows", a=sq.lhs, b=sq.rhs, k=i, n=T)
    bst = d.lemma(STACKED_NORM, "B stacks its T block rows: ‖B‖² ≤ Σ_i ‖B_i·‖²", A=b_row, i=i, n=T)
    d.chain([bst, tot], f"‖B‖² ≤ Σ_(i ≤ T) {mm}² R⁴")
    root = sp.sqrt(sp.Sum(mm**2 * R**4, (i, 1, T)))
    bb = d.lemma(SQUARE_ROOT_MONOTONE, f"‖B‖ ≤ √(Σ_(i ≤ T) {mm}² R⁴)", a=opnorm(b_mat), b=root)
    cnt = d.identity(root, sp.sqrt(T) * mm * R**2, f"T equal terms: √(T {mm}² R⁴) = √T {mm} R²")
    d.chain([bb, cnt], f"‖B‖ ≤ √T {mm} R²")
    ki = d.lemma(KRONECKER_NORM, "‖I_T ⊗ V‖ = ‖I_T‖‖V‖", A=I_T, B=V)
    kib = _prod(d, opnorm(I_T), 1, opnorm(V), v, "‖I_T‖‖V‖ ≤ v")
    d.chain([ki, kib], "‖I_T ⊗ V‖ ≤ v")
    o1 = d.lemma(SUBMULTIPLICATIVE, "‖(I_T ⊗ V) B‖ ≤ ‖I_T ⊗ V‖‖B‖", A=kron(I_T, V), B=b_mat)
    o2 = _prod(d, opnorm(kron(I_T, V)), v, opnorm(b_mat), sp.sqrt(T) * mm * R**2, f"≤ v √T {mm} R²")
    return d.chain([o1, o2], f"‖(I_T ⊗ V) B‖ ≤ √T v {mm} R²")


def _rope(d: Derivation, pre: Any) -> Any:
    """‖W_Qᵀ R_{k−i} W_K / √d_h‖ ≤ ‖W_Q‖‖W_K‖/√d_h (then the code's bound)."""
    core = transpose(WQ) * Rot(k - i) * WK
    d.lemma(ORTHOGONAL_NORM, "the RoPE rotation is orthogonal: ‖R_{k−i}‖ = 1", Q=Rot(k - i))
    if _failed(d):
        return None
    h1 = d.lemma(OPNORM_HOMOGENEOUS, "pull out 1/√d_h", c=1 / sp.sqrt(d_h), A=core)
    s1 = d.lemma(
        SUBMULTIPLICATIVE, "‖W_Qᵀ R W_K‖ ≤ ‖W_Qᵀ‖‖R W_K‖", A=transpose(WQ), B=Rot(k - i) * WK
    )
    s2 = d.lemma(SUBMULTIPLICATIVE, "‖R W_K‖ ≤ ‖R‖‖W_K‖", A=Rot(k - i), B=WK)
    r1 = _prod(d, opnorm(Rot(k - i)), 1, opnorm(WK), k_n, "‖R‖‖W_K‖ ≤ ‖W_K‖")
    d.chain([s2, r1], "‖R_{k−i} W_K‖ ≤ ‖W_K‖")
    qt = d.lemma(TRANSPOSE_NORM, "‖W_Qᵀ‖ = ‖W_Q‖", A=WQ)
    d.chain([qt, ASSUMPTIONS[12]], "‖W_Qᵀ‖ ≤ ‖W_Q‖ bound")
    c1 = _prod(d, opnorm(transpose(WQ)), q_n, opnorm(Rot(k - i) * WK), k_n, "≤ ‖W_Q‖‖W_K‖")
    d.chain([s1, c1], "‖W_Qᵀ R W_K‖ ≤ ‖W_Q‖‖W_K‖")
    sc = _prod(d, 1 / sp.sqrt(d_h), 1 / sp.sqrt(d_h), opnorm(core), q_n * k_n, "divided by √d_h")
    mb = d.chain([h1, sc], "‖M_ik‖ ≤ ‖W_Q‖‖W_K‖/√d_h under RoPE")
    out = _to_code(d, mb, pre, "dynamo's RoPE score bound (lipschitz_formulas.rope_score_norm)")
    return None if _failed(d) else out


def _heads(d: Derivation, nh: Any, pre: Any) -> Any:
    """‖W_O [J_1; …; J_nh]‖ ≤ ‖W_O‖ √(Σ_h L_h²) (for nh = 2 then the code's bound)."""
    st = d.lemma(STACKED_NORM, f"{nh} heads stacked", A=Jh(h), i=h, n=nh)
    sq = _prod(d, opnorm(Jh(h)), Lh(h), opnorm(Jh(h)), Lh(h), "‖J_h‖² ≤ L_h²")
    tot = d.lemma(SUM_MONOTONE, "summed over the heads", a=sq.lhs, b=sq.rhs, k=h, n=nh)
    d.chain([st, tot], "‖[J_1; …]‖² ≤ Σ_h L_h²")
    root = sp.sqrt(sp.Sum(Lh(h) ** 2, (h, 1, nh)))
    d.lemma(SQUARE_ROOT_MONOTONE, "‖[J_1; …]‖ ≤ √(Σ_h L_h²)", a=opnorm(stack(Jh(h), h, nh)), b=root)
    w1 = d.lemma(SUBMULTIPLICATIVE, "‖W_O S‖ ≤ ‖W_O‖‖S‖", A=WO, B=stack(Jh(h), h, nh))
    w2 = _prod(d, opnorm(WO), o_n, opnorm(stack(Jh(h), h, nh)), root, "≤ o √(Σ_h L_h²)")
    lay = d.chain([w1, w2], f"the layer ({nh} heads)")
    out = _to_code(d, lay, pre, "dynamo's heads rule (lipschitz_formulas.attention_heads)")
    return None if _failed(d) else out


def _failed(d: Derivation) -> bool:
    return not all(step.ok for step in d.steps)


def _block(d: Derivation, name: str, fn: Any) -> Any:
    """Run ``fn`` on a sub-derivation (one case under no condition) and bring back the fact it
    returns: its intermediate facts stay local, so later scans of ``d``'s facts (a failed
    hypothesis, an unreached goal) compare against few. None where ``fn`` stopped early."""
    sub = d.case(sp.true)
    sub.claim = f"{d.claim} [{name}]"
    fact = fn(sub)
    if fact is None:  # a step failed and the block stopped: record its steps, add nothing
        d.steps.extend(sub.steps)
        return None
    return d.cases(fact, [sub], name)


def _code_bound(d: Derivation, derived: Any, code: Any, why: str) -> Any:
    """``derived ≤ code`` for the bound dynamo's code evaluates (None where it is ``derived``
    itself: nothing to show). Checked first, so a changed code constant fails at once."""
    if sp.sympify(code) == sp.sympify(derived):
        return None
    return d.inequality(derived, code, why)


def _to_code(d: Derivation, fact: Any, pre: Any, why: str) -> Any:
    """``x ≤ code`` from ``x ≤ derived`` and the checked ``derived ≤ code``."""
    return fact if pre is None else d.chain([fact, pre], why)


#: the bounds the derivation reaches (the code must be at least these)
HEAD_DERIVED = sp.sqrt(T) * v + (v * m * R**2 + v * sp.sqrt(T) * m * R**2)
ROPE_DERIVED = q_n * k_n / sp.sqrt(d_h)
HEADS2_DERIVED = o_n * sp.sqrt(sp.Sum(Lh(h) ** 2, (h, 1, 2)))


def _head(d: Derivation, root_t: Any, pre: Any) -> Any:
    """‖J‖ ≤ √T v + (1 + √T) v m R² (then the code's bound), stopping at a failed step."""
    jv = _value_part(d, sp.sqrt(T) if root_t is None else root_t)
    if _failed(d):
        return None
    _covariance_factors(d)
    if _failed(d):
        return None
    jd = _diagonal_part(d)
    jo = _off_diagonal_part(d)
    if _failed(d):
        return None
    # the triangle inequality
    t1 = d.lemma(OPNORM_TRIANGLE, "‖J‖ ≤ ‖P ⊗ V‖ + ‖rest‖", A=J_VALUE, B=J_DIAG + J_OFF)
    t2 = d.lemma(OPNORM_TRIANGLE, "‖rest‖ ≤ ‖diagonal‖ + ‖off-diagonal‖", A=J_DIAG, B=J_OFF)
    s1 = d.lemma(
        SUM_OF_BOUNDS,
        "adding the diagonal and off-diagonal bounds",
        a=jd.lhs,
        A_b=jd.rhs,
        b=jo.lhs,
        B_b=jo.rhs,
    )
    rest = d.chain([t2, s1], "‖blockdiag(V C_i) + (I ⊗ V) B‖ ≤ v m R² + √T v m R²")
    s2 = d.lemma(
        SUM_OF_BOUNDS, "adding the value bound", a=jv.lhs, A_b=jv.rhs, b=rest.lhs, B_b=rest.rhs
    )
    head = d.chain([t1, s2], "‖J‖ ≤ √T v + (1 + √T) v m R²")
    out = _to_code(d, head, pre, "dynamo's per-head rule (lipschitz_formulas.attention_head)")
    return None if _failed(d) else out


def r7_proof(d: Derivation, root_t: Any = None) -> None:
    """The derivation; ``root_t`` replaces √T in the value term (a false variant). Each part
    runs in its own block (:func:`_block`), and the proof stops at the first failed step."""
    # first what dynamo's code evaluates: each of its bounds is at least the one derived below
    pre_head = _code_bound(
        d,
        HEAD_DERIVED,
        formulas.attention_head(v, m, T, R, sqrt=sp.sqrt),
        "dynamo's per-head rule is at least √T v + (1 + √T) v m R²",
    )
    pre_rope = _code_bound(
        d,
        ROPE_DERIVED,
        formulas.rope_score_norm(q_n, k_n, d_h, sqrt=sp.sqrt),
        "dynamo's RoPE score bound is at least ‖W_Q‖‖W_K‖/√d_h",
    )
    pre_heads = _code_bound(
        d,
        HEADS2_DERIVED,
        formulas.attention_heads(o_n, [Lh(1), Lh(2)], sqrt=sp.sqrt),
        "dynamo's heads rule is at least ‖W_O‖ √(L_1² + L_2²)",
    )
    if _failed(d):
        return
    # the Jacobian: softmax derivative, chain rule and product rule, on n tokens
    d.identity(
        _derivative(),
        _block_rhs(True),
        "directional derivative of o_i (one coordinate; n attended tokens) = value + diagonal "
        "(C_i h_i) + off-diagonal parts: J = P ⊗ V + blockdiag(V C_i) + (I ⊗ V) B",
    )
    parts = (
        ("the per-head bound", lambda sub: _head(sub, root_t, pre_head)),
        ("RoPE", lambda sub: _rope(sub, pre_rope)),
        ("H heads", lambda sub: _heads(sub, H, None)),
        ("two heads (the code's form)", lambda sub: _heads(sub, 2, pre_heads)),
    )
    for name, fn in parts:
        _block(d, name, fn)
        if _failed(d):
            return


# ---------------------------------------------------------------------- numeric check
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def largest_sampled_jacobian(att: Any, n_tok: int, radius: float, seed: int) -> float:
    """The largest ``‖J‖₂`` of the attention layer ``att`` (width 8) over 40 random sets of
    ``n_tok`` tokens of norm ``radius`` (the numeric counterpart of R7 and R14)."""
    worst = 0.0
    for j in range(40):
        X = torch.randn(n_tok, 8, generator=_gen(1000 * seed + j), dtype=F64)
        X = X / X.norm(dim=-1, keepdim=True) * radius  # tokens of norm R

        def f(z: torch.Tensor) -> torch.Tensor:
            return att(z.reshape(1, n_tok, 8)).reshape(-1)

        with torch.no_grad():
            J = torch.func.jacfwd(f)(X.reshape(-1))
        worst = max(worst, float(torch.linalg.matrix_norm(J, ord=2)))
    return worst


def _check_r7(seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, pos="rope", seed=seed, dtype=F64)
    layer: Any = model.layers[0]
    att = layer.attn.branch
    n_tok, radius = 5, 2.0
    lip, _, _ = _attention_rule(att, n_tok, radius)
    worst = largest_sampled_jacobian(att, n_tok, radius, seed)
    ok = worst <= lip
    return CheckResult(
        "R7",
        ok,
        f"attention rule {lip:.5g} >= largest sampled ‖J‖₂ {worst:.5g} on tokens of norm "
        f"{radius} (RoPE, 2 heads)",
        {"rule": lip, "sampled": worst},
    )


@claim(
    "R7",
    "Rule: dot-product attention on a bounded set",
    r"One softmax-attention head on $T$ tokens $\lVert x_k\rVert \le R$, row $i$ attending to "
    r"$n \le T$ of them (any mask, e.g. causal), scores $x_i^\top M_{ik} x_k$ with "
    r"$\lVert M_{ik}\rVert \le m$, $\lVert V\rVert \le v$: its Jacobian is "
    r"$J = P \otimes V + \mathrm{blockdiag}_i(V Y_i G_i^\top) + (I_T \otimes V) B$ and "
    r"$\lVert J\rVert_2 \le v(\sqrt T + (1 + \sqrt T) R^2 m)$; under RoPE "
    r"$\lVert W_Q^\top R_{k-i} W_K/\sqrt{d_h}\rVert \le \lVert W_Q\rVert\lVert W_K\rVert/"
    r"\sqrt{d_h}$; heads stacked under $W_O$: $\lVert W_O[J_1;\dots;J_H]\rVert \le "
    r"\lVert W_O\rVert\sqrt{\sum_h L_h^2}$ when $\lVert J_h\rVert \le L_h$.",
    (
        "token norms <= R at the attention input",
        "bias-free projections (o_i = Σ_k P_ik V x_k)",
        "P row-stochastic: softmax over the n <= T tokens a row attends to",
        "RoPE rotations orthogonal",
    ),
    (
        "Castin, Ablin & Peyré, arXiv:2312.14820",
        "Kim, Papamakarios & Mnih, arXiv:2006.04710",
        "Horn & Johnson, Matrix Analysis, 2nd ed., 2013",
        "Horn & Johnson, Topics in Matrix Analysis, 1991",
        "Golub & Van Loan, Matrix Computations, 4th ed., 2013",
    ),
    _check_r7,
    goal=_goal,
    assumptions=ASSUMPTIONS,
    variants=(
        Variant(
            "dynamo's per-head rule divided by 100",
            patch=lambda: code_scaled("attention_head", 0.01),
        ),
        Variant(
            "dynamo's RoPE score bound divided by 100",
            patch=lambda: code_scaled("rope_score_norm", 0.01),
        ),
        Variant(
            "dynamo's heads rule divided by 100", patch=lambda: code_scaled("attention_heads", 0.01)
        ),
        Variant("√T replaced by 1 in the value term", overrides={"root_t": sp.Integer(1)}),
        Variant(
            "the statement with √T replaced by 1 in the value term",
            goal=(sp.Le(opnorm(J_HEAD), v * (1 + (1 + sp.sqrt(T)) * R**2 * m)),),
        ),
        Variant("without the hypothesis that token norms are <= R", drop=(0, 1)),
        Variant("without P row-stochastic (softmax rows)", drop=(4, 5)),
        Variant("without RoPE rotations orthogonal", drop=(11,)),
        Variant(
            "a Jacobian whose diagonal term C_i is not centred (x_k in place of x_k − μ_i)",
            goal=lambda: (_jacobian(False),),
        ),
    ),
    uses=("C6",),
)
def r7(d: Derivation, root_t: Any = None) -> None:
    r7_proof(d, root_t)
