"""R17 (an attention sub-layer and the GELU MLP sub-layer after it, with no norm between, bounded
together), derived on the derivation engine from R14's, R15's and R16's steps.

One step ``h ↦ v + F(v)``, ``v = u + Attn(u)``, ``u = A h + c`` (``A = I`` without recall, outer
recall's ``W_s`` with it; ``c`` constant in ``h``) on ``T`` tokens, with the token-wise MLP
``F(x) = W_d φ(W_u x + b_u) + b_d`` and ``1 − s ≤ φ′ ≤ s`` (R15's hypotheses: ``φ′ ≤ s`` and the
mirror ``φ′(−t) = 1 − φ′(t)``). By the chain rule its Jacobian in ``h`` at a point is

    ``J = M (I_T ⊗ A) + M Σ_h (I_T ⊗ X_h) K_h``,  ``M = blockdiag_t(I + W_d D_t W_u)``,

``D_t = diag(φ′(z_t1), …, φ′(z_tn))`` at the MLP's pre-activations ``z_t = W_u v_t + b_u`` (R15's
form), with the heads read through ``X = [X_1 … X_H]`` (column blocks): ``X_h = W_O,h`` and
``K_h`` head ``h``'s Jacobian in ``h`` (through ``A``), or ``X_h = W_O,h V_h`` and ``K_h`` its
kernel (R14's factorization); ``‖K_h‖ ≤ κ_h`` (R7, R16 or R14). The hypotheses on the weights are
``‖A + W_d W_u A/2‖ ≤ a1``, ``‖W_u A‖ ≤ ua``, ``‖X + W_d W_u X/2‖ ≤ x1``, ``‖W_u X‖ ≤ ux``,
``‖W_d‖ ≤ dn``, and the code passes ``f_A ≥ gelu_mlp_residual(a1, dn, ua, s)``, ``f_X ≥
gelu_mlp_residual(x1, dn, ux, s)``. The derivation:

1. the triangle inequality: ``‖J‖ ≤ ‖M (I_T ⊗ A)‖ + ‖M Σ_h (I_T ⊗ X_h) K_h‖``;
2. R15's slope step: ``D_t = I/2 + E_t`` with ``‖E_t‖ ≤ s − 1/2`` (``1 − s ≤ φ′ ≤ s`` at the
   pre-activations, a shifted diagonal matrix);
3. ``M (I_T ⊗ A) = blockdiag_t((I + W_d D_t W_u) A)`` (a block-diagonal matrix times ``I_T ⊗ A``),
   whose norm is its largest block's; each block is ``(A + W_d W_u A/2) + W_d E_t W_u A``, so
   its norm is at most ``a1 + (s − 1/2) dn ua`` = ``gelu_mlp_residual(a1, dn, ua, s) ≤ f_A``;
4. ``Σ_h (I_T ⊗ X_h) K_h = [I_T ⊗ X_1, …, I_T ⊗ X_H][K_1; …; K_H]`` (block multiplication),
   ``[I_T ⊗ X_1, …] = (I_T ⊗ X) Π`` with ``Π`` a permutation (R14's perfect shuffle), so
   ``M [I_T ⊗ X_1, …] = blockdiag_t((I + W_d D_t W_u) X) Π`` has norm at most ``x1 + (s − 1/2)
   dn ux ≤ f_X`` (as in step 3), and ``‖[K_1; …; K_H]‖ ≤ √(Σ_h κ_h²)`` (stacked blocks);
5. adding: ``‖J‖ ≤ f_A + f_X √(Σ_h κ_h²)`` = ``attention_mlp(f_A, f_X, [κ_1, …, κ_H])``.

The engine has no list of ``H`` symbolic arguments, so the code's closed form is read for two
heads (``attention_mlp(f_A, f_X, [κ_1, κ_2])``), as in R14; the derivation is also run for a
symbolic ``H`` (the statement in the sum form). Generic indices (a head ``h``, a token ``t``, a
neuron ``k``) follow R7's convention: every assumption that mentions one holds for each of its
values. The scalars ``1`` and ``1/2`` added to a matrix stand for ``I`` and ``I/2`` (as in R15).
"""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch
from torch import nn

import dynamo as dy
from dynamo.kernel import ACTIVATION_SLOPES
from dynamo.kernel import lipschitz_formulas as formulas

from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import SUBMULTIPLICATIVE, opnorm
from ._logic import Derivation, Pred, lemma
from ._rule_attention import (
    BLOCK_DIAGONAL_NORM,
    I_T,
    OPNORM_TRIANGLE,
    ORTHOGONAL_NORM,
    SUM_OF_BOUNDS,
    H,
    _block,
    _code_bound,
    _failed,
    _prod,
    _to_code,
    blockdiag,
    h,
    kron,
    stack,
)
from ._rule_blocks import _head_selector
from ._rule_mixing import (
    D_T,
    HALF,
    JG,
    JG_T,
    PERFECT_SHUFFLE,
    R15_ASSUMPTIONS,
    K,
    Wd,
    Wu,
    _gen,
    _kernels_norm,
    _rewrite,
    _root,
    _sigma,
    _slopes,
    dn,
    hcat,
    kappa,
    s,
    shuffle,
    t,
)

F64 = torch.float64

_HJ = "R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013"
_HJ_TOPICS = "R. A. Horn, C. R. Johnson, Topics in Matrix Analysis, 1991"

# ---------------------------------------------------------------------- function symbols
#: ``hsum(A_h, h, H)``: the sum ``Σ_{h=1}^{H} A_h`` of matrices (sympy's ``Sum`` is not used: its
#: simplification assumes commuting terms)
hsum = sp.Function("hsum", commutative=False)

# ---------------------------------------------------------------------- lemma variables
_Bl, _Cl, _Il, _Al = sp.symbols("B C I A", commutative=False)
_tl, _hl, _Hl = sp.symbols("t h H", integer=True, positive=True)

# ---------------------------------------------------------------------- cited lemmas
BLOCKDIAG_TIMES_KRON = lemma(
    "a block-diagonal matrix times I ⊗ C",
    "For the T×T identity I and a matrix C (one and the same for every t), I ⊗ C = "
    "blockdiag(C, …, C) (block (t, t′) of I ⊗ C is δ_tt′ C), and the product of two conformally "
    "partitioned block-diagonal matrices is block diagonal with the products of their diagonal "
    "blocks: blockdiag_t(B_t)(I ⊗ C) = blockdiag_t(B_t C) whenever the products B_t C are "
    "defined (t = 1, …, T; the index t is bound).",
    (
        f"{_HJ_TOPICS}, Def. 4.2.1 (the Kronecker product as a block matrix)",
        f"{_HJ}, §0.7.2 (block multiplication of partitioned matrices) and §0.9.2 (block "
        "diagonal matrices)",
    ),
    (_Bl, _tl, _Il, _Cl),
    (Pred("identity_matrix", (_Il,)),),
    (sp.Eq(blockdiag(_Bl, _tl) * kron(_Il, _Cl), blockdiag(_Bl * _Cl, _tl)),),
)

SUM_AS_BLOCK_PRODUCT = lemma(
    "a sum of products is a block row times a block column",
    "For conformally partitioned blocks (A_h with one number of rows, B_h with one number of "
    "columns, each product A_h B_h defined), Σ_{h=1}^{H} A_h B_h = [A_1 … A_H][B_1; …; B_H]: "
    "block multiplication of a 1×H block row by an H×1 block column.",
    (f"{_HJ}, §0.7.2 (block multiplication of partitioned matrices)",),
    (_Al, _Bl, _hl, _Hl),
    (),
    (sp.Eq(hsum(_Al * _Bl, _hl, _Hl), hcat(_Al, _hl, _Hl) * stack(_Bl, _hl, _Hl)),),
)

# ---------------------------------------------------------------------- the claim's symbols
A_in = sp.Symbol("A", commutative=False)  # the input map: u = A h + c (I, or outer recall's W_s)
Xh = sp.Function("X", commutative=False)  # X(h): the column block of X that head h's output meets
#: J_step(H): the step's Jacobian in h at the point (H heads)
J_step = sp.Function("J_step", commutative=False)
a1, ua, x1, ux = sp.symbols("a1 ua x1 ux", nonnegative=True)
fa, fx = sp.symbols("f_A f_X", nonnegative=True)  # what the code passes as f_A, f_X


def _cat(nh: Any) -> Any:
    """X = [X_1 … X_nh]."""
    return hcat(Xh(h), h, nh)


def _row(nh: Any) -> Any:
    """The block row [I_T ⊗ X_1, …, I_T ⊗ X_nh]."""
    return hcat(kron(I_T, Xh(h)), h, nh)


def _kernels(nh: Any) -> Any:
    """The block column [K_1; …; K_nh]."""
    return stack(K(h), h, nh)


def _heads_sum(nh: Any) -> Any:
    """Σ_h (I_T ⊗ X_h) K_h."""
    return hsum(kron(I_T, Xh(h)) * K(h), h, nh)


def _jacobian(nh: Any) -> Any:
    """M (I_T ⊗ A) + M Σ_h (I_T ⊗ X_h) K_h, M = blockdiag_t(I + W_d D_t W_u) (R15's form)."""
    return JG * kron(I_T, A_in) + JG * _heads_sum(nh)


def _lead(y: Any) -> Any:
    """Y + W_d W_u Y/2."""
    return y + Wd * Wu * y / 2


def _code(nh: int = 2) -> Any:
    return formulas.attention_mlp(fa, fx, [kappa(j) for j in range(1, nh + 1)], sqrt=sp.sqrt)


def _r17_goal() -> tuple[Any, ...]:
    # the two-head bound is what dynamo's code evaluates, read now (a changed constant changes it)
    return (
        sp.Le(opnorm(J_step(H)), fa + fx * _root(H)),
        sp.Le(opnorm(J_step(2)), _code(2)),
    )


R17_ASSUMPTIONS = (
    Pred("identity_matrix", (I_T,)),  # 0
    sp.Eq(J_step(H), _jacobian(H)),  # 1: the step's Jacobian (H heads)
    sp.Eq(J_step(2), _jacobian(2)),  # 2: the same for the two-head layer
    R15_ASSUMPTIONS[0],  # 3: φ′ ≤ s (R2)
    R15_ASSUMPTIONS[2],  # 4: the mirror φ′(−t) = 1 − φ′(t)
    sp.Le(opnorm(K(h)), kappa(h)),  # 5: every head's bound
    sp.Le(opnorm(_lead(A_in)), a1),  # 6
    sp.Le(opnorm(Wu * A_in), ua),  # 7
    sp.Le(opnorm(_lead(_cat(H))), x1),  # 8
    sp.Le(opnorm(_lead(_cat(2))), x1),  # 9: the same for [X_1 X_2]
    sp.Le(opnorm(Wu * _cat(H)), ux),  # 10
    sp.Le(opnorm(Wu * _cat(2)), ux),  # 11: the same for [X_1 X_2]
    sp.Le(opnorm(Wd), dn),  # 12
    sp.Le(formulas.gelu_mlp_residual(a1, dn, ua, s), fa),  # 13: what the code passes as f_A
    sp.Le(formulas.gelu_mlp_residual(x1, dn, ux, s), fx),  # 14: what the code passes as f_X
)


def _through(d: Derivation, y: Any, n: str, y1: Any, uy: Any, f_hyp: Any, mid: Any, b: Any) -> Any:
    """‖blockdiag_t((I + W_d D_t W_u) Y)‖ ≤ f for the read-in matrix Y (A or X): each block is
    ``(Y + W_d W_u Y/2) + W_d E_t W_u Y`` with ‖E_t‖ ≤ b (R15's midpoint), so it is at most
    ``y1 + dn b uy``, which the code's ``gelu_mlp_residual(y1, dn, uy, s)`` and the hypothesis on
    f bound (``n`` names Y in the steps' descriptions). None where a step failed."""
    E = D_T - mid
    block = JG_T * y
    lead = y + Wd * Wu * y * mid
    split = d.identity(
        block, lead + Wd * E * Wu * y, f"(I + W_d D_t W_u) {n} with D_t = {mid}·I + E_t"
    )
    nrm = _rewrite(d, split, opnorm, "its norm")
    tri = d.lemma(OPNORM_TRIANGLE, "the triangle inequality", A=lead, B=Wd * E * Wu * y)
    s1 = d.lemma(SUBMULTIPLICATIVE, f"‖E_t W_u {n}‖ ≤ ‖E_t‖‖W_u {n}‖", A=E, B=Wu * y)
    p1 = _prod(d, opnorm(E), b, opnorm(Wu * y), uy, f"‖E_t‖‖W_u {n}‖ ≤ ({b}) {uy}")
    c1 = d.chain([s1, p1], f"‖E_t W_u {n}‖ ≤ ({b}) {uy}")
    s2 = d.lemma(SUBMULTIPLICATIVE, f"‖W_d E_t W_u {n}‖ ≤ ‖W_d‖‖E_t W_u {n}‖", A=Wd, B=E * Wu * y)
    p2 = _prod(d, opnorm(Wd), dn, c1.lhs, c1.rhs, f"‖W_d‖‖E_t W_u {n}‖ ≤ dn ({b}) {uy}")
    if _failed(d):
        return None
    cpl = d.chain([s2, p2], f"‖W_d E_t W_u {n}‖ ≤ dn ({b}) {uy}")
    add_b = d.lemma(
        SUM_OF_BOUNDS, "adding the two bounds", a=opnorm(lead), A_b=y1, b=cpl.lhs, B_b=cpl.rhs
    )
    if _failed(d):
        return None
    tok = d.chain([nrm, tri, add_b], f"token t's block: ‖(I + W_d D_t W_u) {n}‖ ≤ {y1} + …")
    bd = d.lemma(
        BLOCK_DIAGONAL_NORM,
        "a block-diagonal matrix's norm is its largest block's (every token t)",
        B=block,
        i=t,
        b=tok.rhs,
    )
    pre = _code_bound(
        d,
        tok.rhs,
        formulas.gelu_mlp_residual(y1, dn, uy, s),
        "dynamo's residual MLP rule (gelu_mlp_residual) is at least the blocks' bound",
    )
    if _failed(d):
        return None
    links = [bd, pre, f_hyp] if pre is not None else [bd, f_hyp]
    out = d.chain(links, f"≤ {f_hyp.rhs}, what the code passes")
    return None if _failed(d) else out


def _input_term(d: Derivation, mid: Any, b: Any) -> Any:
    """‖M (I_T ⊗ A)‖ ≤ f_A."""
    bk = d.lemma(
        BLOCKDIAG_TIMES_KRON,
        "M (I_T ⊗ A) = blockdiag_t((I + W_d D_t W_u) A)",
        B=JG_T,
        t=t,
        I=I_T,
        C=A_in,
    )
    nrm = _rewrite(d, bk, opnorm, "its norm")
    thr = _through(d, A_in, "A", a1, ua, R17_ASSUMPTIONS[13], mid, b)
    if thr is None:
        return None
    out = d.chain([nrm, thr], "the input term: ‖M (I_T ⊗ A)‖ ≤ f_A")
    return None if _failed(d) else out


def _heads_term(d: Derivation, nh: Any, mid: Any, b: Any) -> Any:
    """‖M [I_T ⊗ X_1, …][K_1; …]‖ ≤ f_X √(Σ_h κ_h²) (nh heads)."""
    cat, row = _cat(nh), _row(nh)
    perm = shuffle(I_T, Xh(h), h, nh)
    sh = d.lemma(
        PERFECT_SHUFFLE,
        "[I_T ⊗ X_1, …] = (I_T ⊗ [X_1 … X_H]) Π, Π a permutation",
        I=I_T,
        C=Xh(h),
        h=h,
        H=nh,
    )
    r1 = _rewrite(d, sh, lambda z: JG * z, "M [I_T ⊗ X_1, …] = M (I_T ⊗ X) Π")
    bk = d.lemma(
        BLOCKDIAG_TIMES_KRON,
        "M (I_T ⊗ X) = blockdiag_t((I + W_d D_t W_u) X)",
        B=JG_T,
        t=t,
        I=I_T,
        C=cat,
    )
    r2 = _rewrite(d, bk, lambda z: z * perm, "times Π")
    if _failed(d):
        return None
    eq = d.chain([r1, r2], "M [I_T ⊗ X_1, …] = blockdiag_t((I + W_d D_t W_u) X) Π")
    n1 = _rewrite(d, eq, opnorm, "its norm")
    bdx = blockdiag(JG_T * cat, t)
    sm = d.lemma(SUBMULTIPLICATIVE, "‖blockdiag_t(·) Π‖ ≤ ‖blockdiag_t(·)‖‖Π‖", A=bdx, B=perm)
    thr = _through(d, cat, "X", x1, ux, R17_ASSUMPTIONS[14], mid, b)
    if thr is None:
        return None
    d.lemma(ORTHOGONAL_NORM, "a permutation matrix is orthogonal: ‖Π‖ = 1", Q=perm)
    p1 = _prod(d, opnorm(bdx), fx, opnorm(perm), 1, "‖blockdiag_t(·)‖‖Π‖ ≤ f_X")
    if _failed(d):
        return None
    mix = d.chain([n1, sm, p1], "‖M [I_T ⊗ X_1, …]‖ ≤ f_X")
    ker = _kernels_norm(d, nh)
    s0 = d.lemma(
        SUBMULTIPLICATIVE,
        "‖M [I_T ⊗ X_h][K_h]‖ ≤ ‖M [I_T ⊗ X_h]‖‖[K_h]‖",
        A=JG * row,
        B=_kernels(nh),
    )
    p0 = _prod(d, mix.lhs, fx, ker.lhs, _root(nh), "≤ f_X √(Σ_h κ_h²)")
    if _failed(d):
        return None
    out = d.chain([s0, p0], "the heads' term: ‖M Σ_h (I_T ⊗ X_h) K_h‖ ≤ f_X √(Σ_h κ_h²)")
    return None if _failed(d) else out


def _step(d: Derivation, nh: Any, mid: Any, b: Any, inp: Any, pre: Any) -> Any:
    """‖J‖ ≤ f_A + f_X √(Σ_h κ_h²) for nh heads (then the code's bound)."""
    br = d.lemma(
        SUM_AS_BLOCK_PRODUCT,
        "Σ_h (I_T ⊗ X_h) K_h = [I_T ⊗ X_1, …][K_1; …] (block multiplication)",
        A=kron(I_T, Xh(h)),
        B=K(h),
        h=h,
        H=nh,
    )
    inp_term = JG * kron(I_T, A_in)
    heads_term = JG * _row(nh) * _kernels(nh)
    r1 = _rewrite(d, br, lambda z: inp_term + JG * z, "in the Jacobian")
    hyp = sp.Eq(J_step(nh), _jacobian(nh))
    if _failed(d):
        return None
    jeq = d.chain([hyp, r1], "J = M (I_T ⊗ A) + M [I_T ⊗ X_1, …][K_1; …]")
    nrm = _rewrite(d, jeq, opnorm, "its norm")
    heads = _heads_term(d, nh, mid, b)
    if heads is None:
        return None
    tri = d.lemma(OPNORM_TRIANGLE, "the triangle inequality", A=inp_term, B=heads_term)
    add_b = d.lemma(
        SUM_OF_BOUNDS,
        "adding the two terms' bounds",
        a=inp.lhs,
        A_b=inp.rhs,
        b=heads.lhs,
        B_b=heads.rhs,
    )
    if _failed(d):
        return None
    out = d.chain([nrm, tri, add_b], f"the step ({nh} heads): ‖J‖ ≤ f_A + f_X √(Σ_h κ_h²)")
    out = _to_code(d, out, pre, "dynamo's fused rule (lipschitz_formulas.attention_mlp)")
    return None if _failed(d) else out


def r17_proof(d: Derivation, mid: Any = HALF) -> None:
    """R17's derivation on ``d``: the code's two-head bound first, then R15's slope step, the
    input term, and the step for ``H`` heads and for two (each in its own block); it stops at the
    first failed step.

    Parameters
    ----------
    d : Derivation
        A derivation started from R17's assumptions (:data:`R17_ASSUMPTIONS`).
    mid : sympy expression, default 1/2
        The midpoint ``D_t = mid·I + E_t`` of R15's slope step; any other value than 1/2 is a
        false variant, which the derivation must reject.

    Examples
    --------
    >>> import theory
    >>> proof = theory.get("R17").prove()
    >>> proof.ok, proof.kind.label
    (True, 'proved in general')
    >>> theory.get("R17").prove(mid=1).ok
    False
    """
    pre = _code_bound(
        d,
        fa + fx * _root(2),
        _code(2),
        "dynamo's fused rule is at least f_A + f_X √(κ_1² + κ_2²)",
    )
    if _failed(d):
        return
    b = _slopes(d, mid, "mirror")
    if b is None:
        return
    inp = _input_term(d, mid, b)
    if inp is None:
        return
    for name, nh, bound in (("H heads", H, None), ("two heads (the code's form)", 2, pre)):
        _block(d, name, lambda sub, nh=nh, bound=bound: _step(sub, nh, mid, b, inp, bound))
        if _failed(d):
            return


# ---------------------------------------------------------------------- numeric check
def _gelu_slope(z: torch.Tensor) -> torch.Tensor:
    """GELU′(z) = Φ(z) + z φ(z) (exact GELU, as nn.functional.gelu)."""
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    pdf = torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    return cdf + z * pdf


def _check_r17(seed: int = 0) -> CheckResult:
    """The first layer of a ``norm="none"`` looped transformer (two heads, RoPE, width 8), without
    recall (``A = I``) and behind outer recall (``A = W_s``, the adapter's block on ``h``, with a
    fixed input ``x``): at random states of ``T`` tokens of norm at most ``r``, the dense Jacobian
    of ``h ↦ layer(A h + c)`` in ``h`` must lie below ``attention_mlp(f_A, f_X, κ)`` with ``X =
    W_O``, ``f_A``, ``f_X`` from ``gelu_mlp_residual`` with SVD norms, ``s`` the GELU slope
    bound, and ``κ_h = ‖A‖ attention_head(‖V_h‖, m_h, T, R)`` for tokens ``‖u_k‖ ≤ R``. The
    Jacobian is also assembled as ``M (I_T ⊗ A) + M Σ_h (I_T ⊗ W_O,h) K_h`` from the heads'
    own Jacobians ``K_h`` (the hypothesis), and ``‖K_h‖ ≤ κ_h`` is checked."""
    n_tok, width, r_h, trials = 5, 8, 2.0, 24
    slope = float(ACTIVATION_SLOPES[nn.GELU])
    worst_ratio, worst_kernel, deviation = 0.0, 0.0, 0.0
    numbers: dict[str, Any] = {}
    ok = True
    for recall in ("none", "outer"):
        model = dy.models.LoopedTransformer(
            d_model=width, n_heads=2, n_layers=1, recall=recall, norm="none", seed=seed, dtype=F64
        )
        layer: Any = model.layers[0]
        att, mlp = layer.attn.branch, layer.mlp.branch
        dh = att.d_head
        wq, wk, wv, wo = (m.weight.detach() for m in (att.q, att.k, att.v, att.o))
        w_up, b_up, w_dn = mlp.up.weight.detach(), mlp.up.bias.detach(), mlp.down.weight.detach()
        gen = _gen(1000 * seed + (recall == "outer"))
        eye = torch.eye(width, dtype=F64)
        adapter: Any = model.adapter  # None without recall
        x = torch.randn(n_tok, width, generator=gen, dtype=F64)  # the fixed input (outer recall)
        if adapter is not None:
            a_mat = adapter.weight.detach()[:, :width]  # W_s
            shift = x @ adapter.weight.detach()[:, width:].T + adapter.bias.detach()
            radius = _sigma(a_mat) * r_h + float(shift.norm(dim=-1).max())
        else:
            a_mat, radius = eye, r_h

        def enter(z: torch.Tensor, x: torch.Tensor = x, adapter: Any = adapter) -> Any:
            """u = A h + c: the adapter on [h; x] with outer recall, h itself without."""
            return z if adapter is None else adapter(torch.cat((z, x), dim=-1))

        # the code's quantities: f_A, f_X (X = W_O) by R15's midpoint, κ_h by R7 through A
        dn_v = _sigma(w_dn)
        f_a = formulas.gelu_mlp_residual(
            _sigma(a_mat + w_dn @ w_up @ a_mat / 2), dn_v, _sigma(w_up @ a_mat), slope
        )
        f_x = formulas.gelu_mlp_residual(
            _sigma(wo + w_dn @ w_up @ wo / 2), dn_v, _sigma(w_up @ wo), slope
        )
        kappas = []
        for j in range(att.n_heads):
            rows = slice(j * dh, (j + 1) * dh)
            m_h = formulas.rope_score_norm(_sigma(wq[rows]), _sigma(wk[rows]), dh)
            head = formulas.attention_head(_sigma(wv[rows]), m_h, n_tok, radius)
            kappas.append(_sigma(a_mat) * head)
        bound = formulas.attention_mlp(f_a, f_x, kappas)
        selectors = [_head_selector(att, j) for j in range(att.n_heads)]

        def step(z: torch.Tensor, enter: Any = enter, layer: Any = layer) -> Any:
            return layer(enter(z.reshape(n_tok, width))[None], None)[0].reshape(-1)

        largest = 0.0
        for trial in range(trials):
            h0 = torch.randn(n_tok, width, generator=gen, dtype=F64)
            norms = torch.rand(n_tok, 1, generator=gen, dtype=F64) if trial % 2 else 1.0
            h0 = h0 / h0.norm(dim=-1, keepdim=True) * r_h * norms  # tokens of norm ≤ r
            with torch.no_grad():
                u0 = enter(h0)
                v0 = u0 + att(u0[None])[0]
            jac = torch.func.jacrev(step)(h0.reshape(-1)).detach()
            lip = _sigma(jac)
            largest = max(largest, lip)
            worst_ratio = max(worst_ratio, lip / bound)
            # the tokens the heads read lie in the ball of radius R (up to rounding)
            inside = float(u0.norm(dim=-1).max()) <= radius * (1 + 1e-12)
            ok = ok and lip <= bound and inside
            # the hypothesis: J = M (I_T ⊗ A) + M Σ_h (I_T ⊗ W_O,h) K_h at this point
            inner = torch.zeros(
                n_tok, width, n_tok, width, dtype=F64
            )  # (I ⊗ A) + Σ_h (I ⊗ X_h) K_h
            for tt in range(n_tok):
                inner[tt, :, tt, :] = a_mat
            for j, sel in enumerate(selectors):
                rows = slice(j * dh, (j + 1) * dh)

                def head_j(
                    z: torch.Tensor, sel: Any = sel, rows: slice = rows, e: Any = enter
                ) -> Any:
                    return sel(e(z.reshape(n_tok, width))[None])[0][:, rows].reshape(-1)

                k_h = torch.func.jacrev(head_j)(h0.reshape(-1)).detach()
                worst_kernel = max(worst_kernel, _sigma(k_h) / kappas[j])
                ok = ok and _sigma(k_h) <= kappas[j]
                inner += torch.einsum(
                    "ae,tebc->tabc", wo[:, rows], k_h.reshape(n_tok, dh, n_tok, width)
                )
            slopes = _gelu_slope(v0 @ w_up.T + b_up)  # D_t's diagonals
            blocks = eye + torch.einsum("ak,tk,kb->tab", w_dn, slopes, w_up)  # I + W_d D_t W_u
            assembled = torch.einsum("tac,tcsb->tasb", blocks, inner).reshape(jac.shape)
            deviation = max(deviation, float((assembled - jac).abs().max()))
        numbers[recall] = {
            "rule": bound,
            "f_A": f_a,
            "f_X": f_x,
            "kappa": kappas,
            "largest_jacobian": largest,
            "radius": radius,
        }
    ok = ok and deviation <= 1e-10 and worst_ratio <= 1
    numbers |= {
        "largest_ratio": worst_ratio,
        "largest_kernel_ratio": worst_kernel,
        "jacobian_deviation": deviation,
    }
    none, outer = numbers["none"], numbers["outer"]
    return CheckResult(
        "R17",
        ok,
        f"attention then MLP, no norm between (2 heads, RoPE, T = {n_tok}, tokens ‖h_k‖ <= "
        f"{r_h}, {trials} states each): A = I: rule f_A + f_X √(Σ κ_h²) = {none['rule']:.5g} "
        f"(f_A = {none['f_A']:.4g}, f_X = {none['f_X']:.4g}) >= largest ‖J‖₂ "
        f"{none['largest_jacobian']:.5g}; A = W_s (outer recall): {outer['rule']:.5g} >= "
        f"{outer['largest_jacobian']:.5g}; largest ‖J‖₂ / rule {worst_ratio:.4g}, largest "
        f"‖K_h‖/κ_h {worst_kernel:.4g}; J = M (I ⊗ A) + M Σ_h (I ⊗ W_O,h) K_h to "
        f"{deviation:.2g}",
        numbers,
    )


@claim(
    "R17",
    "Rule: an attention sub-layer and the MLP after it, bounded together",
    r"An attention sub-layer and the GELU MLP sub-layer after it with no norm between, "
    r"$h \mapsto v + F(v)$, $v = u + \mathrm{Attn}(u)$, $u = A h + c$ ($A = I$, or outer "
    r"recall's $W_s$), $F(x) = W_d\varphi(W_u x + b_u) + b_d$ token by token with "
    r"$1 - s \le \varphi' \le s$: its Jacobian is $J = M(I_T \otimes A) + M\sum_h (I_T \otimes "
    r"X_h) K_h$ with $M = \mathrm{blockdiag}_t(I + W_d D_t W_u)$, $X = [X_1 \dots X_H]$ and "
    r"$\lVert K_h\rVert \le \kappa_h$. With $D_t = I/2 + E_t$, $\lVert E_t\rVert \le s - 1/2$: "
    r"$M(I_T \otimes A) = \mathrm{blockdiag}_t((I + W_d D_t W_u) A)$ has norm at most "
    r"$\lVert A + W_d W_u A/2\rVert + (s - 1/2)\lVert W_d\rVert\lVert W_u A\rVert \le f_A$ "
    r"(gelu_mlp_residual), the block row $[M(I_T \otimes X_1), \dots, M(I_T \otimes X_H)]$ is "
    r"$\mathrm{blockdiag}_t((I + W_d D_t W_u) X)$ with its columns permuted, of norm at most "
    r"$\lVert X + W_d W_u X/2\rVert + (s - 1/2)\lVert W_d\rVert\lVert W_u X\rVert \le f_X$, and "
    r"$\lVert [K_1; \dots; K_H]\rVert \le \sqrt{\sum_h \kappa_h^2}$: so $\lVert J\rVert_2 \le "
    r"f_A + f_X \sqrt{\sum_h \kappa_h^2}$ (lipschitz_formulas.attention_mlp; for $H$ heads, "
    r"and for two in the code's list form).",
    (
        "I_T is the T×T identity (A, X and the MLP act on every token alike)",
        "the step's Jacobian in h at the point (the chain rule through u = A h + c, v = u + "
        "Attn(u) and v + F(v)): J = M (I_T ⊗ A) + M Σ_h (I_T ⊗ X_h) K_h, M = blockdiag_t(I + "
        "W_d D_t W_u), D_t = diag(φ′(z_t1), …, φ′(z_tn)) at the MLP's pre-activations z_t = W_u "
        "v_t + b_u (R15's form); X = [X_1 … X_H] with X_h = W_O,h and K_h head h's Jacobian in h "
        "(through A), or X_h = W_O,h V_h and K_h its kernel (R14); for H heads and for the "
        "two-head layer the code evaluates",
        "φ′(t) ≤ s and φ′(−t) = 1 − φ′(t) for every t (R15: GELU′ ≤ ACTIVATION_SLOPES[GELU] = s "
        "by R2, and GELU′'s mirror), hence 1 − s ≤ φ′",
        "‖K_h‖ ≤ κ_h for every head h (R7's, R16's or R14's per-head bounds; through A for outer "
        "recall, e.g. κ_h = ‖W_s‖ attention_head(‖V_h‖, m_h, T, R) for tokens ‖u_k‖ ≤ R)",
        "‖A + W_d W_u A/2‖ ≤ a1, ‖W_u A‖ ≤ ua, ‖X + W_d W_u X/2‖ ≤ x1, ‖W_u X‖ ≤ ux (for "
        "X = [X_1 … X_H] and for [X_1 X_2]) and ‖W_d‖ ≤ dn",
        "f_A ≥ gelu_mlp_residual(a1, dn, ua, s) and f_X ≥ gelu_mlp_residual(x1, dn, ux, s) (what "
        "the code passes)",
    ),
    (
        "Horn & Johnson, Matrix Analysis, 2nd ed., 2013",
        "Horn & Johnson, Topics in Matrix Analysis, 1991, Def. 4.2.1",
        "Van Loan, The ubiquitous Kronecker product, J. Comput. Appl. Math. 123, 2000",
    ),
    _check_r17,
    goal=_r17_goal,
    assumptions=R17_ASSUMPTIONS,
    variants=(
        Variant(
            "dynamo's fused rule divided by 100", patch=lambda: code_scaled("attention_mlp", 0.01)
        ),
        Variant(
            "the statement with f_X max_h κ_h in place of f_X √(Σ_h κ_h²)",
            goal=(sp.Le(opnorm(J_step(2)), fa + fx * sp.Max(kappa(1), kappa(2))),),
        ),
        Variant("without ‖K_h‖ ≤ κ_h", drop=(5,)),
        Variant(
            "without the lower slope bound φ′ ≥ 1 − s (the mirror φ′(−t) = 1 − φ′(t) dropped)",
            drop=(4,),
        ),
        Variant("the derivation split at the midpoint 1 (D_t = I + E_t)", overrides={"mid": 1}),
        Variant("without ‖X + W_d W_u X/2‖ ≤ x1", drop=(8, 9)),
        Variant(
            "the statement with the input term f_A dropped: f_X √(Σ_h κ_h²)",
            goal=(sp.Le(opnorm(J_step(2)), fx * sp.sqrt(kappa(1) ** 2 + kappa(2) ** 2)),),
        ),
        Variant("without the upper slope bound φ′ ≤ s", drop=(3,)),
        Variant("without ‖W_u A‖ ≤ ua", drop=(7,)),
        Variant("without the Jacobian's form J = M (I_T ⊗ A) + M Σ_h (I_T ⊗ X_h) K_h", drop=(1, 2)),
    ),
    uses=("R14", "R15", "R16"),
)
def r17(d: Derivation, mid: Any = HALF) -> None:
    """R17's proof function (registered as the claim ``R17``): :func:`r17_proof`.

    Parameters
    ----------
    d : Derivation
        A derivation started from R17's assumptions.
    mid : sympy expression, default 1/2
        R15's midpoint (1/2; another value is a false variant).
    """
    r17_proof(d, mid)
