"""R14 (attention heads mixed through ``W_O V_h``) and R15 (an MLP whose activation slope lies in
``[1 − s, s]``, bounded through the slope's midpoint), derived on the derivation engine.

Both are proved about the closed forms the rules evaluate (``lipschitz_formulas.
attention_heads_mixed``, ``gelu_mlp``, ``gelu_mlp_residual``), read when the proof runs.

R14. R7 writes head ``h``'s Jacobian as ``P ⊗ V_h + blockdiag_i(V_h Y_i G_iᵀ) + (I_T ⊗ V_h) B``;
with ``V_h`` factored out on the left it is ``J_h = (I_T ⊗ V_h) K_h``, ``K_h = P ⊗ I +
blockdiag_i(Y_i G_iᵀ) + B``, and R7's or R16's per-head bound with ``V = I`` gives
``‖K_h‖ ≤ κ_h``. The layer applies ``W_O = [W_O,1 … W_O,H]`` token by token to the heads'
outputs, so its Jacobian is ``Σ_h (I_T ⊗ W_O,h) J_h = [I_T ⊗ W_O,1, …, I_T ⊗ W_O,H] [J_1; …;
J_H]``. The derivation:

1. ``(I_T ⊗ W_O,h) J_h = (I_T ⊗ W_O,h)(I_T ⊗ V_h) K_h = (I_T ⊗ C_h) K_h`` with ``C_h = W_O,h V_h``
   (the mixed-product property), for every head, so by block multiplication the layer's Jacobian
   is ``[I_T ⊗ C_1, …, I_T ⊗ C_H] [K_1; …; K_H]``;
2. ``[I_T ⊗ C_1, …, I_T ⊗ C_H] = (I_T ⊗ [C_1 … C_H]) Π`` with ``Π`` a permutation (the perfect
   shuffle of the column blocks), so its norm is at most ``‖I_T‖‖[C_1 … C_H]‖‖Π‖ ≤ c``;
3. ``‖[K_1; …; K_H]‖ ≤ √(Σ_h κ_h²)`` (stacked blocks), and submultiplicativity: ``‖J‖ ≤
   c √(Σ_h κ_h²)`` = ``attention_heads_mixed`` (for ``H`` heads, and for two heads in the code's
   list form).

R15. ``F(x) = W_d φ(W_u x + b_u) + b_d`` token by token, with ``1 − s ≤ φ′ ≤ s`` everywhere (GELU:
R2's bound ``GELU′ ≤ s`` and its mirror ``GELU′(−t) = 1 − GELU′(t)``). At a point ``X`` of
``ℝ^{T×d}`` the Jacobian is ``blockdiag_t(W_d D_t W_u)``, ``D_t = diag(φ′(z_t1), …, φ′(z_tn))`` at
the pre-activations ``z_t = W_u x_t + b_u``. The derivation:

1. the slope bounds at the pre-activations (universal instantiation; the lower one from the upper
   one at ``−z`` and the mirror): ``1 − s ≤ φ′(z_tk) ≤ s``, so ``E_t = D_t − I/2`` has
   ``‖E_t‖ ≤ s − 1/2`` (a shifted diagonal matrix);
2. ``W_d D_t W_u = W_d W_u/2 + W_d E_t W_u`` (and ``I + W_d D_t W_u = (I + W_d W_u/2) +
   W_d E_t W_u``): the triangle inequality, homogeneity and submultiplicativity bound each token
   block, and a block-diagonal matrix's norm is its largest block's;
3. the bound holds at every point of the convex ``ℝ^{T×d}``: the mean value inequality gives
   ``Lip(F) ≤ ‖W_d W_u‖/2 + (s − 1/2)‖W_d‖‖W_u‖`` = ``gelu_mlp`` and ``Lip(id + F) ≤
   ‖I + W_d W_u/2‖ + (s − 1/2)‖W_d‖‖W_u‖`` = ``gelu_mlp_residual``.

Generic indices (a head ``h``, a token ``t``, a neuron ``k``) follow R7's convention: every
assumption that mentions one holds for each of its values, so a fact shown for the generic index
holds for all. The point ``X`` is generic in the strict sense: no assumption mentions it freely
(the Jacobians are given as functions of it), so a bound shown at ``X`` is generalized to every
point by the engine's ``generalize`` step. The scalars ``1`` and ``1/2`` added to a matrix stand
for ``I`` and ``I/2`` (as in R6).
"""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch
from torch import nn

import dynamo as dy
from dynamo.kernel import ACTIVATION_SLOPES
from dynamo.kernel import attention_rule as _attention_rule
from dynamo.kernel import lipschitz_formulas as formulas

from ._claims import LEIBNIZ
from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import MEAN_VALUE, SUBMULTIPLICATIVE, Lip, add, opnorm
from ._logic import Derivation, Pred, lemma
from ._rule_attention import (
    BLOCK_DIAGONAL_NORM,
    I_T,
    KRONECKER_NORM,
    OPNORM_TRIANGLE,
    ORTHOGONAL_NORM,
    SQUARE_ROOT_MONOTONE,
    STACKED_NORM,
    SUM_MONOTONE,
    SUM_OF_BOUNDS,
    H,
    Jh,
    _block,
    _code_bound,
    _failed,
    _prod,
    _to_code,
    blockdiag,
    h,
    kron,
    largest_sampled_jacobian,
    stack,
)
from ._rules import HOMOGENEITY, IDENTITY_NORM, ORDER_NEG, WHOLE_SPACE, _id, shell

F64 = torch.float64

# ---------------------------------------------------------------------- function symbols
#: ``hcat(A_h, h, H)``: the blocks ``A_1, …, A_H`` side by side, ``[A_1 … A_H]``
hcat = sp.Function("hcat")
#: ``shuffle(I, C_h, h, H)``: the permutation matrix that reorders the column blocks of
#: ``I ⊗ [C_1 … C_H]`` from token-major ``(t, h)`` to head-major ``(h, t)`` order
shuffle = sp.Function("shuffle", commutative=False)
#: ``Diag(e_k, k)``: the diagonal matrix with the entries ``e_k`` over the index ``k``
Diag = sp.Function("Diag", commutative=False)


class instantiated(sp.Function):
    """``instantiated(R, q, p)``: the relation ``R`` (a statement about ``q``) with ``q`` set to
    ``p``. In a lemma's template ``R`` is a placeholder and the call stays unevaluated; once a
    relation is put in, the substitution happens."""

    @classmethod
    def eval(cls, rel: Any, q: Any, p: Any) -> Any:
        if isinstance(rel, sp.Rel):
            return rel.xreplace({q: p})
        return None


# ---------------------------------------------------------------------- lemma variables
_A, _B, _A2, _B2, _C, _Id = sp.symbols("A_1 B_1 A_2 B_2 C I", commutative=False)
_hh, _HH = sp.symbols("h H", integer=True, positive=True)
_e, _c, _b = sp.symbols("e c b", real=True)
_kk = sp.Symbol("k", integer=True, positive=True)
_q, _p, _R = sp.symbols("q p R")
_f, _S, _x, _J, _L = sp.symbols("f S x J L")

_HJ = "R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013"
_HJ_TOPICS = "R. A. Horn, C. R. Johnson, Topics in Matrix Analysis, 1991"

# ---------------------------------------------------------------------- cited lemmas
KRON_MIXED_PRODUCT = lemma(
    "mixed-product property (I ⊗ A)(I ⊗ B) = I ⊗ AB",
    "(A ⊗ B)(C ⊗ D) = AC ⊗ BD whenever the products AC and BD are defined; with A = C = I the "
    "identity (I I = I): (I ⊗ A)(I ⊗ B) = I ⊗ AB.",
    (f"{_HJ_TOPICS}, Lemma 4.2.10",),
    (_Id, _A, _B),
    (Pred("identity_matrix", (_Id,)),),
    (sp.Eq(kron(_Id, _A) * kron(_Id, _B), kron(_Id, _A * _B)),),
)

BLOCK_PRODUCT = lemma(
    "block multiplication (a block row times a block column)",
    "For conformally partitioned blocks, [A_1, …, A_H][B_1; …; B_H] = Σ_h A_h B_h. So if "
    "A_h B_h = A′_h B′_h for every h, then [A_1, …, A_H][B_1; …; B_H] = [A′_1, …, A′_H]"
    "[B′_1; …; B′_H]. The hypothesis is read for every h: it is applied only to a generic head h "
    "(every assumption that mentions h holds for each h).",
    (f"{_HJ}, §0.7.2 (block multiplication of partitioned matrices)",),
    (_A, _B, _A2, _B2, _hh, _HH),
    (sp.Eq(_A * _B, _A2 * _B2),),
    (
        sp.Eq(
            hcat(_A, _hh, _HH) * stack(_B, _hh, _HH),
            hcat(_A2, _hh, _HH) * stack(_B2, _hh, _HH),
        ),
    ),
)

PERFECT_SHUFFLE = lemma(
    "a block row of Kronecker products I ⊗ C_h is I ⊗ [C_1 … C_H] with its columns permuted",
    "For the T×T identity I and blocks C_1, …, C_H with one number of rows, the column block "
    "(h, t) of [I ⊗ C_1, …, I ⊗ C_H] is e_t ⊗ C_h, which is the column block (t, h) of "
    "I ⊗ [C_1 … C_H]. Hence [I ⊗ C_1, …, I ⊗ C_H] = (I ⊗ [C_1 … C_H]) Π for the permutation "
    "matrix Π (a perfect shuffle) that reorders the column blocks from (t, h) to (h, t); a "
    "permutation matrix is orthogonal.",
    (
        "C. F. Van Loan, The ubiquitous Kronecker product, J. Comput. Appl. Math. 123 (2000) "
        "85–100 (perfect shuffle permutations)",
        f"{_HJ_TOPICS}, §4.3 (the commutation matrix, a permutation matrix)",
    ),
    (_Id, _C, _hh, _HH),
    (Pred("identity_matrix", (_Id,)),),
    (
        sp.Eq(
            hcat(kron(_Id, _C), _hh, _HH),
            kron(_Id, hcat(_C, _hh, _HH)) * shuffle(_Id, _C, _hh, _HH),
        ),
        Pred("orthogonal", (shuffle(_Id, _C, _hh, _HH),)),
    ),
)

UNIVERSAL_INSTANCE = lemma(
    "universal instantiation (a relation)",
    "If a relation R(q) holds for every q, it holds at any particular p: R(p) (universal "
    "instantiation).",
    (
        "the quantifier axioms of first-order logic; e.g. H. B. Enderton, A Mathematical "
        "Introduction to Logic, 2nd ed., 2001, §2.4",
    ),
    (_q, _p, _R),
    (Pred("forall", (_q, _R)),),
    (instantiated(_R, _q, _p),),
)

SHIFTED_DIAGONAL_NORM = lemma(
    "spectral norm of a shifted diagonal matrix",
    "If D = diag(e_1, …, e_n) and c − b ≤ e_k ≤ c + b for every k, then D − cI = "
    "diag(e_1 − c, …, e_n − c), whose singular values are the |e_k − c| ≤ b: ‖D − cI‖₂ = "
    "max_k |e_k − c| ≤ b. The hypotheses are read for every k: they are applied only to a "
    "generic entry k (every assumption that mentions k holds for each k). The scalar c added to "
    "a matrix stands for cI.",
    (f"{_HJ}, Thm 2.6.3 (singular value decomposition) and Example 5.6.6 (‖A‖₂ = σ_max(A))",),
    (_e, _kk, _c, _b),
    (sp.Le(_e, _c + _b), sp.Le(_c - _b, _e)),
    (sp.Le(opnorm(Diag(_e, _kk) - _c), _b),),
)

JACOBIAN_EVERYWHERE = lemma(
    "a Jacobian bound at every point",
    "If the Jacobian of f at every point x of S is J(x), and ‖J(x)‖₂ ≤ L for every x, then "
    "‖Df(x)‖₂ ≤ L at every point of S (the hypothesis of the mean value inequality).",
    ("J. Dieudonné, Foundations of Modern Analysis, 1960, §8.5 (the derivative and its norm)",),
    (_f, _S, _x, _J, _L),
    (
        Pred("jacobian_on", (_f, _S, sp.Lambda(_x, _J))),
        Pred("forall", (_x, sp.Le(opnorm(_J), _L))),
    ),
    (Pred("jacobian_norm_at_most", (_f, _S, _L)),),
)


def _rewrite(d: Derivation, eq: Any, expr_of: Any, why: str, *, commutative: bool = False) -> Any:
    """From the known ``a = b`` (``eq``), ``F(a) = F(b)`` for ``F = expr_of(z)`` (a noncommutative
    placeholder ``z`` keeps the order of matrix products)."""
    z = sp.Symbol("z", commutative=commutative)
    return d.lemma(LEIBNIZ, why, a=eq.lhs, b=eq.rhs, z=z, F=expr_of(z))


# ====================================================================== R14
V = sp.Function("V", commutative=False)  # V(h): head h's value projection
WOh = sp.Function("W_O", commutative=False)  # W_O(h): the column block of W_O for head h
C = sp.Function("C", commutative=False)  # C(h) = W_O(h) V(h)
K = sp.Function("K", commutative=False)  # K(h): head h's Jacobian with V_h factored out
kappa = sp.Function("kappa", nonnegative=True)  # kappa(h): a bound on ‖K(h)‖
c_n = sp.Symbol("c", nonnegative=True)  # a bound on ‖[C_1 … C_H]‖


def _layer(nh: Any) -> Any:
    """The layer's Jacobian Σ_h (I_T ⊗ W_O,h) J_h = [I_T ⊗ W_O,1, …][J_1; …] (nh heads)."""
    return hcat(kron(I_T, WOh(h)), h, nh) * stack(Jh(h), h, nh)


def _mixed(nh: Any) -> Any:
    """[I_T ⊗ C_1, …, I_T ⊗ C_nh] [K_1; …; K_nh]."""
    return hcat(kron(I_T, C(h)), h, nh) * stack(K(h), h, nh)


def _root(nh: Any) -> Any:
    return sp.sqrt(sp.Sum(kappa(h) ** 2, (h, 1, nh)))


def _r14_goal() -> tuple[Any, ...]:
    # the two-head bound is what dynamo's code evaluates, read now
    return (
        sp.Eq(_layer(H), _mixed(H)),
        sp.Le(opnorm(_layer(H)), c_n * _root(H)),
        sp.Le(
            opnorm(_layer(2)),
            formulas.attention_heads_mixed(c_n, [kappa(1), kappa(2)], sqrt=sp.sqrt),
        ),
    )


R14_ASSUMPTIONS = (
    Pred("identity_matrix", (I_T,)),  # 0
    sp.Eq(Jh(h), kron(I_T, V(h)) * K(h)),  # 1: R7's Jacobian with V_h factored out (every h)
    sp.Eq(C(h), WOh(h) * V(h)),  # 2: C_h = W_O,h V_h (every h)
    sp.Le(opnorm(K(h)), kappa(h)),  # 3: R7 or R16 with V = I (every h)
    sp.Le(opnorm(hcat(C(h), h, H)), c_n),  # 4: ‖[C_1 … C_H]‖ ≤ c
    sp.Le(opnorm(hcat(C(h), h, 2)), c_n),  # 5: the same for the two-head layer
)


def _per_head(d: Derivation) -> Any:
    """(I_T ⊗ W_O,h) J_h = (I_T ⊗ C_h) K_h for a generic head h."""
    left = kron(I_T, WOh(h))
    r1 = _rewrite(
        d,
        R14_ASSUMPTIONS[1],
        lambda z: left * z,
        "(I_T ⊗ W_O,h) J_h = (I_T ⊗ W_O,h)(I_T ⊗ V_h) K_h",
    )
    mp = d.lemma(
        KRON_MIXED_PRODUCT,
        "(I_T ⊗ W_O,h)(I_T ⊗ V_h) = I_T ⊗ W_O,h V_h",
        I=I_T,
        A_1=WOh(h),
        B_1=V(h),
    )
    r2 = _rewrite(d, mp, lambda z: z * K(h), "times K_h")
    cdef = sp.Eq(WOh(h) * V(h), C(h))  # the assumption C_h = W_O,h V_h, read right to left
    r3 = _rewrite(d, cdef, lambda z: kron(I_T, z) * K(h), "C_h = W_O,h V_h")
    if _failed(d):
        return None
    return d.chain([r1, r2, r3], "(I_T ⊗ W_O,h) J_h = (I_T ⊗ C_h) K_h")


def _mixing_norm(d: Derivation, nh: Any) -> Any:
    """‖[I_T ⊗ C_1, …, I_T ⊗ C_nh]‖ ≤ c (a permutation of I_T ⊗ [C_1 … C_nh])."""
    sh = d.lemma(
        PERFECT_SHUFFLE,
        "[I_T ⊗ C_1, …] = (I_T ⊗ [C_1 … C_H]) Π, Π a permutation",
        I=I_T,
        C=C(h),
        h=h,
        H=nh,
    )
    n1 = _rewrite(d, sh, opnorm, "its norm")
    cat, perm = hcat(C(h), h, nh), shuffle(I_T, C(h), h, nh)
    s1 = d.lemma(SUBMULTIPLICATIVE, "‖(I_T ⊗ [C]) Π‖ ≤ ‖I_T ⊗ [C]‖‖Π‖", A=kron(I_T, cat), B=perm)
    k1 = d.lemma(KRONECKER_NORM, "‖I_T ⊗ [C]‖ = ‖I_T‖‖[C]‖", A=I_T, B=cat)
    d.lemma(IDENTITY_NORM, "‖I_T‖ ≤ 1", I=I_T)
    p1 = _prod(d, opnorm(I_T), 1, opnorm(cat), c_n, "‖I_T‖‖[C_1 … C_H]‖ ≤ c")
    kb = d.chain([k1, p1], "‖I_T ⊗ [C_1 … C_H]‖ ≤ c")
    d.lemma(ORTHOGONAL_NORM, "a permutation matrix is orthogonal: ‖Π‖ = 1", Q=perm)
    p2 = _prod(d, kb.lhs, c_n, opnorm(perm), 1, "‖I_T ⊗ [C]‖‖Π‖ ≤ c")
    if _failed(d):
        return None
    return d.chain([n1, s1, p2], "‖[I_T ⊗ C_1, …, I_T ⊗ C_H]‖ ≤ c")


def _kernels_norm(d: Derivation, nh: Any) -> Any:
    """‖[K_1; …; K_nh]‖ ≤ √(Σ_h κ_h²)."""
    st = d.lemma(STACKED_NORM, f"{nh} heads' K_h stacked", A=K(h), i=h, n=nh)
    sq = _prod(d, opnorm(K(h)), kappa(h), opnorm(K(h)), kappa(h), "‖K_h‖² ≤ κ_h²")
    tot = d.lemma(SUM_MONOTONE, "summed over the heads", a=sq.lhs, b=sq.rhs, k=h, n=nh)
    d.chain([st, tot], "‖[K_1; …]‖² ≤ Σ_h κ_h²")
    return d.lemma(
        SQUARE_ROOT_MONOTONE, "‖[K_1; …]‖ ≤ √(Σ_h κ_h²)", a=opnorm(stack(K(h), h, nh)), b=_root(nh)
    )


def _block_product(d: Derivation, nh: Any, why: str) -> Any:
    """The layer's Jacobian [I_T ⊗ W_O,1, …][J_1; …] is [I_T ⊗ C_1, …][K_1; …] (nh heads), from
    the per-head factorization by block multiplication."""
    return d.lemma(
        BLOCK_PRODUCT,
        f"{why}: the layer's Jacobian is [I_T ⊗ C_1, …][K_1; …]",
        A_1=kron(I_T, WOh(h)),
        B_1=Jh(h),
        A_2=kron(I_T, C(h)),
        B_2=K(h),
        h=h,
        H=nh,
    )


def _heads(d: Derivation, nh: Any, pre: Any) -> Any:
    """‖layer Jacobian‖ ≤ c √(Σ_h κ_h²) for nh heads (then the code's bound)."""
    if nh == H:
        fact = sp.Eq(_layer(H), _mixed(H))  # derived before the block
    else:
        fact = _block_product(d, nh, f"block multiplication ({nh} heads)")
    n0 = _rewrite(d, fact, opnorm, "its norm")
    mix, ker = hcat(kron(I_T, C(h)), h, nh), stack(K(h), h, nh)
    s0 = d.lemma(SUBMULTIPLICATIVE, "‖[I ⊗ C][K]‖ ≤ ‖[I ⊗ C]‖‖[K]‖", A=mix, B=ker)
    mb = _mixing_norm(d, nh)
    if mb is None:
        return None
    kb = _kernels_norm(d, nh)
    p0 = _prod(d, mb.lhs, c_n, kb.lhs, _root(nh), "≤ c √(Σ_h κ_h²)")
    if _failed(d):
        return None
    lay = d.chain([n0, s0, p0], f"the layer ({nh} heads): ‖J‖ ≤ c √(Σ_h κ_h²)")
    out = _to_code(
        d, lay, pre, "dynamo's mixed-heads rule (lipschitz_formulas.attention_heads_mixed)"
    )
    return None if _failed(d) else out


def r14_proof(d: Derivation) -> None:
    """The derivation: the code's two-head bound first, then the per-head factorization, then the
    layer for H heads and for two."""
    pre = _code_bound(
        d,
        c_n * _root(2),
        formulas.attention_heads_mixed(c_n, [kappa(1), kappa(2)], sqrt=sp.sqrt),
        "dynamo's mixed-heads rule is at least c √(κ_1² + κ_2²)",
    )
    if _failed(d):
        return
    per_head = _per_head(d)
    if per_head is None:
        return
    _block_product(d, H, "block multiplication: Σ_h (I_T ⊗ W_O,h) J_h = Σ_h (I_T ⊗ C_h) K_h")
    if _failed(d):
        return
    for name, nh, bound in (("H heads", H, None), ("two heads (the code's form)", 2, pre)):
        _block(d, name, lambda sub, nh=nh, bound=bound: _heads(sub, nh, bound))
        if _failed(d):
            return


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sigma(m: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord=2))


def _check_r14(seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, pos="rope", seed=seed, dtype=F64)
    layer: Any = model.layers[0]
    att = layer.attn.branch
    n_tok, radius = 5, 2.0
    dh, nh = att.d_head, att.n_heads
    wq, wk, wv, wo = (m.weight.detach().double() for m in (att.q, att.k, att.v, att.o))
    kappas, heads, blocks = [], [], []
    for j in range(nh):
        rows = slice(j * dh, (j + 1) * dh)
        m_h = formulas.rope_score_norm(_sigma(wq[rows]), _sigma(wk[rows]), dh)
        kappas.append(formulas.attention_head(1.0, m_h, n_tok, radius))
        heads.append(formulas.attention_head(_sigma(wv[rows]), m_h, n_tok, radius))
        blocks.append(wo[:, rows] @ wv[rows])  # C_h = W_O,h V_h
    c = _sigma(torch.cat(blocks, dim=1))
    mixed = formulas.attention_heads_mixed(c, kappas)
    stacked = formulas.attention_heads(_sigma(wo), heads)  # R7's ‖W_O‖ √(Σ_h L_h²)
    rule, _, _ = _attention_rule(att, n_tok, radius)
    worst = largest_sampled_jacobian(att, n_tok, radius, seed)
    ok = worst <= mixed
    return CheckResult(
        "R14",
        ok,
        f"mixed-heads rule c √(Σ κ_h²) = {mixed:.5g} (c = σ_max([C_1 C_2]) = {c:.4g}, κ = "
        f"{', '.join(f'{k:.4g}' for k in kappas)}) >= largest sampled ‖J‖₂ {worst:.5g} on tokens "
        f"of norm {radius} (RoPE, 2 heads, T = {n_tok}); R7's ‖W_O‖ √(Σ L_h²) {stacked:.5g}, "
        f"dynamo's attention rule {rule:.5g}",
        {
            "mixed": mixed,
            "c": c,
            "kappa": kappas,
            "sampled": worst,
            "stacked": stacked,
            "attention_rule": rule,
        },
    )


@claim(
    "R14",
    "Rule: attention heads mixed through W_O V_h",
    r"One attention layer with $H$ heads on $T$ tokens: R7's head Jacobian factors as "
    r"$J_h = (I_T \otimes V_h) K_h$ with $\lVert K_h\rVert \le \kappa_h$ (R7 or R16 with $V = I$), "
    r"and the layer's Jacobian $\sum_h (I_T \otimes W_{O,h}) J_h = [I_T \otimes C_1, \dots, "
    r"I_T \otimes C_H][K_1; \dots; K_H]$ with $C_h = W_{O,h} V_h$; the block row is "
    r"$I_T \otimes [C_1 \dots C_H]$ with its columns permuted, so $\lVert J\rVert_2 \le "
    r"\lVert [C_1 \dots C_H]\rVert_2 \sqrt{\sum_h \kappa_h^2}$ "
    r"(lipschitz_formulas.attention_heads_mixed).",
    (
        "I_T is the T×T identity (W_O acts on every token alike)",
        "J_h = (I_T ⊗ V_h) K_h for every head h: R7's Jacobian P ⊗ V_h + blockdiag_i(V_h Y_i "
        "G_iᵀ) + (I_T ⊗ V_h) B read with V_h factored out on the left (K_h = P ⊗ I + "
        "blockdiag_i(Y_i G_iᵀ) + B)",
        "C_h = W_O,h V_h, W_O,h the column block of W_O = [W_O,1 … W_O,H] that head h's output "
        "meets",
        "‖K_h‖ ≤ κ_h for every head (R7's or R16's per-head bound with V = I: κ_h = "
        "attention_head(1, m_h, T, R), or R16's attention_head_terms or attention_head_blocks "
        "with α = ‖W‖ and ρ ≥ ‖u_k − c‖ for a head that reads u = W h + c, K_h = P ⊗ W + "
        "blockdiag_i(Y_i G_iᵀ) + B)",
        "‖[C_1 … C_H]‖ ≤ c (and ‖[C_1 C_2]‖ ≤ c for the two-head layer the code evaluates)",
    ),
    (
        "Horn & Johnson, Topics in Matrix Analysis, 1991, Lemma 4.2.10, Thm 4.2.15",
        "Van Loan, The ubiquitous Kronecker product, J. Comput. Appl. Math. 123, 2000",
        "Horn & Johnson, Matrix Analysis, 2nd ed., 2013",
    ),
    _check_r14,
    goal=_r14_goal,
    assumptions=R14_ASSUMPTIONS,
    variants=(
        Variant(
            "dynamo's mixed-heads rule divided by 100",
            patch=lambda: code_scaled("attention_heads_mixed", 0.01),
        ),
        Variant("without the factorization J_h = (I_T ⊗ V_h) K_h", drop=(1,)),
        Variant("without the bound ‖[C_1 … C_H]‖ ≤ c", drop=(4, 5)),
        Variant("without ‖K_h‖ ≤ κ_h", drop=(3,)),
        Variant("without C_h = W_O,h V_h", drop=(2,)),
        Variant(
            "the statement with c max_h κ_h in place of c √(Σ_h κ_h²)",
            goal=(sp.Le(opnorm(_layer(2)), c_n * sp.Max(kappa(1), kappa(2))),),
        ),
    ),
    uses=("R7", "R16"),
)
def r14(d: Derivation) -> None:
    r14_proof(d)


# ====================================================================== R15
Wd, Wu = sp.symbols("W_d W_u", commutative=False)
du, idu, dn, un = sp.symbols("du idu dn un", nonnegative=True)  # ‖W_d W_u‖, ‖I + W_d W_u/2‖, ...
s = sp.Symbol("s", real=True)  # the activation's slope bound (ACTIVATION_SLOPES[nn.GELU])
u = sp.Symbol("u", real=True)  # the variable of the slope hypotheses
X = sp.Symbol("X")  # a point of ℝ^{T×d} (T tokens)
t, k = sp.symbols("t k", integer=True, positive=True)  # a generic token, a generic neuron
z = sp.Function("z", real=True)  # z(X, t, k): neuron k's pre-activation (W_u x_t + b_u)_k at X
dphi = sp.Function("phi'", real=True)  # φ′
F_MLP = sp.Symbol("F")  # the map X ↦ (W_d φ(W_u x_t + b_u) + b_d)_t
RESIDUAL = add(_id, F_MLP)  # X ↦ X + F(X)
SPACE = shell(0)  # {‖X‖ ≥ 0}: all of ℝ^{T×d}

Z = z(X, t, k)
D_T = Diag(dphi(Z), k)  # D_t = diag(φ′(z_t1), …, φ′(z_tn)) at X
JF_T = Wd * D_T * Wu  # token t's block of DF(X)
JG_T = 1 + Wd * D_T * Wu  # token t's block of D(id + F)(X)
JF = blockdiag(JF_T, t)
JG = blockdiag(JG_T, t)
HALF = sp.Rational(1, 2)


def _r15_goal() -> tuple[Any, ...]:
    # the bounds are what dynamo's code evaluates, read now (a changed constant changes them)
    return (
        sp.Le(Lip(F_MLP), formulas.gelu_mlp(du, dn, un, s)),
        sp.Le(Lip(RESIDUAL), formulas.gelu_mlp_residual(idu, dn, un, s)),
    )


R15_ASSUMPTIONS = (
    Pred("forall", (u, sp.Le(dphi(u), s))),  # 0: φ′ ≤ s (R2)
    Pred("forall", (u, sp.Le(-s, dphi(u)))),  # 1: −s ≤ φ′ (R2: |φ′| ≤ s)
    Pred("forall", (u, sp.Eq(dphi(-u), 1 - dphi(u)))),  # 2: the mirror φ′(−t) = 1 − φ′(t)
    Pred("differentiable_on", (F_MLP, SPACE)),  # 3
    Pred("differentiable_on", (RESIDUAL, SPACE)),  # 4
    Pred("convex", (SPACE,)),  # 5
    Pred("jacobian_on", (F_MLP, SPACE, sp.Lambda(X, JF))),  # 6: DF(X), every X
    Pred("jacobian_on", (RESIDUAL, SPACE, sp.Lambda(X, JG))),  # 7: D(id + F)(X), every X
    sp.Le(opnorm(Wd * Wu), du),  # 8
    sp.Le(opnorm(1 + Wd * Wu / 2), idu),  # 9
    sp.Le(opnorm(Wd), dn),  # 10
    sp.Le(opnorm(Wu), un),  # 11
)


def _slopes(d: Derivation, mid: Any, lower: str) -> Any:
    """‖D_t − mid·I‖ ≤ b at the generic point, token and neuron: b = s − 1/2 from 1 − s ≤ φ′ ≤ s
    (``lower="mirror"``), or b = s + 1/2 from |φ′| ≤ s alone (``lower="abs"``, a false
    variant). Returns b, or None where a step failed."""
    up = d.lemma(UNIVERSAL_INSTANCE, "φ′(z_tk) ≤ s", q=u, R=R15_ASSUMPTIONS[0].args[1], p=Z)
    if lower == "abs":
        d.lemma(UNIVERSAL_INSTANCE, "−s ≤ φ′(z_tk)", q=u, R=R15_ASSUMPTIONS[1].args[1], p=Z)
        d.weaken(up, s + 1, "φ′(z_tk) ≤ s + 1")
        b = s + HALF
    else:
        neg = d.lemma(UNIVERSAL_INSTANCE, "φ′(−z_tk) ≤ s", q=u, R=R15_ASSUMPTIONS[0].args[1], p=-Z)
        mirror = d.lemma(
            UNIVERSAL_INSTANCE,
            "the mirror at z_tk: φ′(−z_tk) = 1 − φ′(z_tk)",
            q=u,
            R=R15_ASSUMPTIONS[2].args[1],
            p=Z,
        )
        flip = d.lemma(ORDER_NEG, "1 − s ≤ 1 − φ′(−z_tk)", a=neg.lhs, b=s, k=1)
        back = _rewrite(d, mirror, lambda w: 1 - w, "1 − φ′(−z_tk) = φ′(z_tk)", commutative=True)
        if _failed(d):
            return None
        d.chain([flip, back], "1 − s ≤ φ′(z_tk)")
        b = s - mid
    d.lemma(
        SHIFTED_DIAGONAL_NORM,
        f"E_t = D_t − {mid}·I: ‖E_t‖ ≤ {b}",
        e=dphi(Z),
        k=k,
        c=mid,
        b=b,
    )
    return None if _failed(d) else b


def _coupling(d: Derivation, mid: Any, b: Any) -> Any:
    """‖W_d E_t W_u‖ ≤ dn b un."""
    E = D_T - mid
    s1 = d.lemma(SUBMULTIPLICATIVE, "‖E_t W_u‖ ≤ ‖E_t‖‖W_u‖", A=E, B=Wu)
    p1 = _prod(d, opnorm(E), b, opnorm(Wu), un, "‖E_t‖‖W_u‖ ≤ b un")
    c1 = d.chain([s1, p1], "‖E_t W_u‖ ≤ b un")
    s2 = d.lemma(SUBMULTIPLICATIVE, "‖W_d E_t W_u‖ ≤ ‖W_d‖‖E_t W_u‖", A=Wd, B=E * Wu)
    p2 = _prod(d, opnorm(Wd), dn, c1.lhs, c1.rhs, "‖W_d‖‖E_t W_u‖ ≤ dn b un")
    if _failed(d):
        return None
    return d.chain([s2, p2], "‖W_d E_t W_u‖ ≤ dn b un")


def _token(d: Derivation, block: Any, lead: Any, lead_bound: Any, mid: Any, cpl: Any) -> Any:
    """Token t's Jacobian block ``block`` = ``lead`` + W_d E_t W_u: ‖block‖ ≤ lead's bound +
    dn b un, then ‖blockdiag_t(block)‖ ≤ the same."""
    E = D_T - mid
    split = d.identity(block, lead + Wd * E * Wu, f"D_t = {mid}·I + E_t")
    nrm = _rewrite(d, split, opnorm, "its norm")
    tri = d.lemma(OPNORM_TRIANGLE, "the triangle inequality", A=lead, B=Wd * E * Wu)
    add_b = d.lemma(
        SUM_OF_BOUNDS,
        "adding the two bounds",
        a=lead_bound.lhs,
        A_b=lead_bound.rhs,
        b=cpl.lhs,
        B_b=cpl.rhs,
    )
    if _failed(d):
        return None
    tok = d.chain([nrm, tri, add_b], "token t's block")
    return d.lemma(
        BLOCK_DIAGONAL_NORM,
        "a block-diagonal matrix's norm is its largest block's (every token t)",
        B=block,
        i=t,
        b=tok.rhs,
    )


def _lipschitz(d: Derivation, fmap: Any, jac: Any, bd: Any, pre: Any, why: str) -> None:
    """From ‖Df(X)‖ ≤ L at the generic point X: Lip(f) ≤ L (then the code's bound)."""
    nn0 = d.inequality(0, opnorm(jac), "a norm is nonnegative")
    d.chain([nn0, bd], "so the bound is nonnegative")
    d.generalize(bd, X, "at every point X (no assumption mentions X freely)")
    d.lemma(
        JACOBIAN_EVERYWHERE,
        "‖Df‖ ≤ L on ℝ^{T×d}",
        f=fmap,
        S=SPACE,
        x=X,
        J=jac,
        L=bd.rhs,
    )
    mv = d.lemma(MEAN_VALUE, "ℝ^{T×d} is convex", f=fmap, S=SPACE, L=bd.rhs)
    whole = d.lemma(WHOLE_SPACE, "on all of ℝ^{T×d}", f=fmap, L=mv.rhs)
    _to_code(d, whole, pre, why)


def r15_proof(d: Derivation, mid: Any = HALF, lower: str = "mirror") -> None:
    """The derivation; ``mid`` replaces the midpoint 1/2 and ``lower="abs"`` bounds φ′ − 1/2 from
    |φ′| ≤ s alone (false variants). It stops at the first failed step."""
    b_code = s - mid if lower == "mirror" else s + HALF
    derived_f = du * mid + dn * b_code * un
    derived_g = idu + dn * b_code * un
    pre_f = _code_bound(
        d,
        derived_f,
        formulas.gelu_mlp(du, dn, un, s),
        "dynamo's MLP rule is at least ‖W_d W_u‖/2 + (s − 1/2)‖W_d‖‖W_u‖",
    )
    pre_g = _code_bound(
        d,
        derived_g,
        formulas.gelu_mlp_residual(idu, dn, un, s),
        "dynamo's residual MLP rule is at least ‖I + W_d W_u/2‖ + (s − 1/2)‖W_d‖‖W_u‖",
    )
    if _failed(d):
        return
    b = _slopes(d, mid, lower)
    if b is None:
        return
    cpl = _coupling(d, mid, b)
    if cpl is None:
        return
    lead_f = Wd * Wu * mid
    hom = d.lemma(HOMOGENEITY, "‖W_d W_u/2‖ ≤ du/2", A=Wd * Wu, c=mid, a=du)
    bd_f = _block(d, "the branch F", lambda sub: _token(sub, JF_T, lead_f, hom, mid, cpl))
    if bd_f is None or _failed(d):
        return
    _lipschitz(d, F_MLP, JF, bd_f, pre_f, "dynamo's MLP rule (lipschitz_formulas.gelu_mlp)")
    if _failed(d):
        return
    lead_g = 1 + Wd * Wu * mid
    lead_g_bound = sp.Le(opnorm(lead_g), idu)
    bd_g = _block(
        d, "the residual id + F", lambda sub: _token(sub, JG_T, lead_g, lead_g_bound, mid, cpl)
    )
    if bd_g is None or _failed(d):
        return
    _lipschitz(
        d,
        RESIDUAL,
        JG,
        bd_g,
        pre_g,
        "dynamo's residual MLP rule (lipschitz_formulas.gelu_mlp_residual)",
    )


def _check_r15(seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=seed, dtype=F64)
    layer: Any = model.layers[0]
    mlp = layer.mlp.branch
    Wup, bup = mlp.up.weight.detach(), mlp.up.bias.detach()
    Wdn = mlp.down.weight.detach()
    dim, width = Wup.shape[1], Wup.shape[0]
    slope = float(ACTIVATION_SLOPES[nn.GELU])
    eye = torch.eye(dim, dtype=F64)
    du_v, idu_v = _sigma(Wdn @ Wup), _sigma(eye + Wdn @ Wup / 2)
    dn_v, un_v = _sigma(Wdn), _sigma(Wup)
    bound_f = formulas.gelu_mlp(du_v, dn_v, un_v, slope)
    bound_g = formulas.gelu_mlp_residual(idu_v, dn_v, un_v, slope)

    # the hypotheses on a fine grid: 1 − s ≤ GELU′ ≤ s
    grid = torch.linspace(-12, 12, 48001, dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(nn.functional.gelu(grid).sum(), grid)
    slope_lo, slope_hi = float(g.min()), float(g.max())

    def branch(x: torch.Tensor) -> torch.Tensor:
        return mlp(x)

    def res(x: torch.Tensor) -> torch.Tensor:
        return x + mlp(x)

    def jac_norms(x: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            jf = torch.func.jacfwd(branch)(x)
        return _sigma(jf), _sigma(eye + jf)

    gen = _gen(seed)
    points = [
        torch.randn(dim, generator=gen, dtype=F64) * float(10 * torch.rand(1, generator=gen))
        for _ in range(200)
    ]
    # points where `dim` of the pre-activations sit exactly at ±√2 (GELU′ at its extremes)
    for _ in range(100):
        rows = torch.randperm(width, generator=gen)[:dim]
        signs = torch.randint(0, 2, (dim,), generator=gen).to(F64) * 2 - 1
        points.append(torch.linalg.solve(Wup[rows], signs * math.sqrt(2) - bup[rows]))
    worst_f = worst_g = 0.0
    for x in points:
        a, b = jac_norms(x)
        worst_f, worst_g = max(worst_f, a), max(worst_g, b)
    # 200 random slope patterns at the ends of [1 − s, s]: the matrix inequality itself
    corner_f = corner_g = 0.0
    for _ in range(200):
        pick = torch.randint(0, 2, (width,), generator=gen).to(F64)
        diag = torch.diag((1 - slope) + pick * (2 * slope - 1))
        jd = Wdn @ diag @ Wup
        corner_f, corner_g = max(corner_f, _sigma(jd)), max(corner_g, _sigma(eye + jd))
    # difference quotients on states of 4 tokens
    quot_f = quot_g = 0.0
    for _ in range(200):
        scale = float(10 * torch.rand(1, generator=gen))
        xa = torch.randn(4, dim, generator=gen, dtype=F64) * scale
        xb = xa + torch.randn(4, dim, generator=gen, dtype=F64) * float(
            torch.rand(1, generator=gen)
        )
        with torch.no_grad():
            step = float((xa - xb).norm())
            quot_f = max(quot_f, float((branch(xa) - branch(xb)).norm()) / step)
            quot_g = max(quot_g, float((res(xa) - res(xb)).norm()) / step)
    observed_f = max(worst_f, corner_f, quot_f)
    observed_g = max(worst_g, corner_g, quot_g)
    hyp_ok = 1 - slope <= slope_lo and slope_hi <= slope
    ok = hyp_ok and observed_f <= bound_f and observed_g <= bound_g
    composed = dn_v * slope * un_v  # R1 · R2 · R1, for comparison
    return CheckResult(
        "R15",
        ok,
        f"MLP rule {bound_f:.5g} >= largest ‖J‖₂ {worst_f:.5g} (300 points), at the slope "
        f"corners {corner_f:.5g}, difference quotients {quot_f:.5g}; residual rule "
        f"{bound_g:.5g} >= {worst_g:.5g}, {corner_g:.5g}, {quot_g:.5g}; GELU′ in "
        f"[{slope_lo:.6f}, {slope_hi:.6f}] ⊆ [1 − s, s] = [{1 - slope:.4f}, {slope:.4f}]; "
        f"σ(W_d) s σ(W_u) = {composed:.5g}",
        {
            "rule": bound_f,
            "rule_residual": bound_g,
            "sampled": worst_f,
            "sampled_residual": worst_g,
            "corners": corner_f,
            "corners_residual": corner_g,
            "quotients": quot_f,
            "quotients_residual": quot_g,
            "gelu_slope_range": [slope_lo, slope_hi],
            "composed": composed,
        },
        () if hyp_ok else ("1 − s ≤ GELU′ ≤ s on the grid",),
    )


@claim(
    "R15",
    "Rule: an MLP whose activation slope lies in [1 − s, s], by the slope's midpoint",
    r"$F(x) = W_d\varphi(W_u x + b_u) + b_d$ token by token, with $1 - s \le \varphi' \le s$ "
    r"(GELU: $\mathrm{GELU}' \le s$ by R2 and $\mathrm{GELU}'(-t) = 1 - \mathrm{GELU}'(t)$). Its "
    r"Jacobian's token blocks are $W_d D W_u = W_d W_u/2 + W_d E W_u$ with $D = "
    r"\mathrm{diag}(\varphi')$, $E = D - I/2$, $\lVert E\rVert_2 \le s - 1/2$; so "
    r"$\mathrm{Lip}(F) \le \lVert W_d W_u\rVert/2 + (s - 1/2)\lVert W_d\rVert\lVert W_u\rVert$ "
    r"(lipschitz_formulas.gelu_mlp) and $\mathrm{Lip}(x \mapsto x + F(x)) \le \lVert I + W_d W_u/2"
    r"\rVert + (s - 1/2)\lVert W_d\rVert\lVert W_u\rVert$ (gelu_mlp_residual), by the mean "
    r"value inequality on $\mathbb{R}^{T\times d}$.",
    (
        "φ′(t) ≤ s for every t (R2: GELU′ ≤ ACTIVATION_SLOPES[GELU] = s) and −s ≤ φ′(t) (R2's "
        "|GELU′| ≤ s)",
        "φ′(−t) = 1 − φ′(t) for every t (GELU′ = Φ + tφ: Φ(−t) = 1 − Φ(t)), hence φ′ ≥ 1 − s",
        "F and x ↦ x + F(x) are differentiable on ℝ^{T×d} (φ is C¹), a convex set ({‖X‖ ≥ 0})",
        "the Jacobians at every X, token by token (the chain rule): DF(X) = blockdiag_t(W_d D_t "
        "W_u), D(id + F)(X) = blockdiag_t(I + W_d D_t W_u), D_t = diag(φ′(z_t1), …, φ′(z_tn)) at "
        "the pre-activations z_t = W_u x_t + b_u",
        "‖W_d W_u‖ ≤ du, ‖I + W_d W_u/2‖ ≤ idu, ‖W_d‖ ≤ dn, ‖W_u‖ ≤ un",
    ),
    (
        "Horn & Johnson, Matrix Analysis, 2nd ed., 2013",
        "Dieudonné, Foundations of Modern Analysis, 1960, §8.5",
    ),
    _check_r15,
    goal=_r15_goal,
    assumptions=R15_ASSUMPTIONS,
    variants=(
        Variant("dynamo's MLP rule divided by 100", patch=lambda: code_scaled("gelu_mlp", 0.01)),
        Variant(
            "dynamo's residual MLP rule divided by 100",
            patch=lambda: code_scaled("gelu_mlp_residual", 0.01),
        ),
        Variant(
            "the statement with the midpoint 1 in place of 1/2: ‖W_d W_u‖ + (s − 1)‖W_d‖‖W_u‖",
            goal=(sp.Le(Lip(F_MLP), du + (s - 1) * dn * un),),
        ),
        Variant("the derivation split at the midpoint 1 (D = I + E)", overrides={"mid": 1}),
        Variant(
            "without the lower slope bound φ′ ≥ 1 − s (the mirror dropped: only |φ′| ≤ s)",
            drop=(2,),
        ),
        Variant(
            "|φ′ − 1/2| ≤ s + 1/2 from |φ′| ≤ s alone, in the derivation",
            overrides={"lower": "abs"},
        ),
        Variant("without the upper slope bound φ′ ≤ s", drop=(0,)),
        Variant("without the bound on ‖W_d W_u‖", drop=(8,)),
        Variant("without ℝ^{T×d} convex", drop=(5,)),
    ),
    uses=("R2",),
)
def r15(d: Derivation, mid: Any = HALF, lower: str = "mirror") -> None:
    r15_proof(d, mid, lower)
