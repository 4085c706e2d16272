"""The claims C1–C7 (SCIENCE.md §3) on the derivation engine.

Vectors are sympy symbols that are only added and scaled (so an identity sympy shows for them
holds in ℝ^d for every d), norms and inner products are symbols or the functions of
:mod:`theory._lemmas`, and matrices are noncommutative symbols. The textbook theorems a proof
rests on are cited lemmas (those of :mod:`theory._lemmas`, and the few defined below).
"""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch

import dynamo as dy

from ._core import CheckResult, Variant, claim
from ._lemmas import BROUWER, SUBMULTIPLICATIVE, Lip, inner, norm, opnorm
from ._logic import Derivation, Pred, lemma

F64 = torch.float64

# ---------------------------------------------------------------------- helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _nc(names: str) -> Any:
    """Noncommutative symbols (matrices, or vectors multiplied by matrices)."""
    return sp.symbols(names, commutative=False)


# ---------------------------------------------------------------------- lemmas used here
_a, _b, _z, _F = sp.symbols("a b z F")


class subst(sp.Function):
    """``subst(F, z, a)`` is F with z replaced by a, evaluated as soon as F contains z (in a
    lemma's template F is a placeholder, so it stays unevaluated until instantiated)."""

    @classmethod
    def eval(cls, expr: Any, var: Any, value: Any) -> Any:
        if expr.has(var):
            return expr.xreplace({var: value})
        return None


LEIBNIZ = lemma(
    "substitution of equals into an expression",
    "If a = b, then F(a) = F(b) for every expression F(z) (Leibniz's law, the substitution "
    "property of equality).",
    (
        "the equality axioms of first-order logic; e.g. H. B. Enderton, A Mathematical "
        "Introduction to Logic, 2nd ed., 2001, §2.4",
    ),
    (_a, _b, _z, _F),
    (sp.Eq(_a, _b),),
    (sp.Eq(subst(_F, _z, _a), subst(_F, _z, _b), evaluate=False),),
)


def _subst(d: Derivation, eq: Any, z: Any, expr: Any, why: str) -> Any:
    """From the known ``a = b`` (``eq``), ``expr(a) = expr(b)``: ``expr`` is written in the
    placeholder ``z``. Returns the fact (its sides are unevaluated ``Subs``)."""
    return d.lemma(LEIBNIZ, why, a=eq.lhs, b=eq.rhs, z=z, F=expr)


_G, _x, _hv, _p, _A = sp.symbols("G x h p A")
_Anc, _Mnc, _Xnc, _Ync = _nc("A M X Y")

PARAMETER_FREE = lemma(
    "zero set of a parameter-free equation",
    "If G(h, x) is differentiable in x with ∂G/∂x ≡ 0 on ℝⁿ × ℝᵐ, then G(h, x) = G(h, x') for "
    "all h, x, x' (ℝᵐ is connected: mean value theorem), so the solution set "
    "{h : G(h, x) = 0} is the same for every x.",
    ("J. Dieudonné, Foundations of Modern Analysis, 1960, (8.5.1)",),
    (_G, _x),
    (sp.Eq(sp.Derivative(_G, _x), 0),),
    (Pred("solution_set_independent_of", (_G, _x)),),
)

_q = sp.Symbol("q")

NONDEGENERATE_INSTANCE = lemma(
    "universal instantiation (nondegeneracy at every fixed point)",
    "If for every q: (f(q) = q implies Df(q) = A(q) with I − A(q) invertible), then the same "
    "holds at any particular point p (universal instantiation).",
    (
        "the quantifier axioms of first-order logic; e.g. H. B. Enderton, A Mathematical "
        "Introduction to Logic, 2nd ed., 2001, §2.4",
    ),
    (_F, _hv, _q, _p, _Anc),
    (Pred("forall", (_q, Pred("nondegenerate_if_fixed", (_F, _hv, _q, _Anc)))),),
    (Pred("nondegenerate_if_fixed", (_F, _hv, _p, subst(_Anc, _q, _p))),),
)

C1_MINUS_ID = lemma(
    "f − id is C¹ when f is",
    "If f is continuously differentiable, so is g(h) = f(h) − h (sums of C¹ maps are C¹).",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, §9 (Def. 9.11, Thm 9.21)",),
    (_F, _hv),
    (Pred("continuously_differentiable", (_F, _hv)),),
    (Pred("continuously_differentiable", (_F - _hv, _hv)),),
)

INVERSE_FUNCTION = lemma(
    "inverse function theorem (isolated fixed points)",
    "Let f be continuously differentiable and p a point such that, if f(p) = p, then "
    "Df(p) = A with I − A invertible. Then p is not a zero of g(h) = f(h) − h, or it is an "
    "isolated zero: Dg(p) = A − I = −(I − A) is invertible, so g maps a neighbourhood of p "
    "one-to-one onto a neighbourhood of 0.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 9.24",),
    (_F, _hv, _p, _Anc),
    (
        Pred("continuously_differentiable", (_F, _hv)),
        Pred("nondegenerate_if_fixed", (_F, _hv, _p, _Anc)),
    ),
    (Pred("isolated_if_zero", (_F - _hv, _hv, _p)),),
)

DISCRETE_COUNTABLE = lemma(
    "discrete subsets of ℝⁿ are countable",
    "If every zero p of g (for all p) is isolated in the zero set Z, then Z is countable: ℝⁿ "
    "is second countable, and distinct points of Z have disjoint basic neighbourhoods meeting "
    "Z only in them.",
    ("J. R. Munkres, Topology, 2nd ed., 2000, §30 (second-countable spaces)",),
    (_G, _hv, _p),
    (Pred("forall", (_p, Pred("isolated_if_zero", (_G, _hv, _p)))),),
    (Pred("countable_zero_set", (_G, _hv)),),
)

DISCRETE_COMPACT_FINITE = lemma(
    "isolated zeros are finitely many on a compact set",
    "If g is continuous and every zero p of g (for all p) is isolated, then every compact K "
    "contains finitely many zeros: an infinite subset of K has a limit point in K "
    "(Bolzano–Weierstrass), a zero of g by continuity, and not isolated.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 2.37",),
    (_G, _hv, _p),
    (
        Pred("continuously_differentiable", (_G, _hv)),
        Pred("forall", (_p, Pred("isolated_if_zero", (_G, _hv, _p)))),
    ),
    (Pred("finitely_many_zeros_in_every_compact", (_G, _hv)),),
)

_f, _hs = sp.symbols("f hs")
_Dh, _Bnc = _nc("Dh B")
#: the derivative dh*/dx of the solution map, a term fixed by f, h*, x (named by the IFT)
dhdx = sp.Function("dhdx", commutative=False)

IMPLICIT_FUNCTION = lemma(
    "implicit function theorem (fixed points)",
    "If f(h, x) is continuously differentiable, h* = f(h*, x₀) and I − ∂_h f(h*, x₀) = I − A "
    "is invertible, then near x₀ there is a unique continuously differentiable x ↦ h*(x) with "
    "h*(x) = f(h*(x), x); dhdx(h*, x₀) denotes its derivative at x₀.",
    (
        "W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 9.28; "
        "S. G. Krantz & H. R. Parks, The Implicit Function Theorem, 2002",
    ),
    (_f, _hs, _x, _Anc),
    (
        Pred("continuously_differentiable", (_f,)),
        Pred("fixed_point", (_f, _hs, _x)),
        Pred("partial_h", (_f, _hs, _x, _Anc)),
        Pred("invertible", (1 - _Anc,)),
    ),
    (
        Pred("differentiable_solution_map", (_hs, _x)),
        Pred("derivative_of", (dhdx(_hs, _x), _hs, _x)),
    ),
)

CHAIN_RULE_FIXED = lemma(
    "chain rule on h*(x) = f(h*(x), x)",
    "If x ↦ h*(x) is differentiable with derivative Dh at x and h*(x) = f(h*(x), x) "
    "identically, and f has partial derivatives A = ∂_h f, B = ∂_x f there, then "
    "differentiating both sides (chain rule) gives Dh = A Dh + B.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 9.15",),
    (_f, _hs, _x, _Anc, _Bnc, _Dh),
    (
        Pred("differentiable_solution_map", (_hs, _x)),
        Pred("derivative_of", (_Dh, _hs, _x)),
        Pred("partial_h", (_f, _hs, _x, _Anc)),
        Pred("partial_x", (_f, _hs, _x, _Bnc)),
    ),
    (sp.Eq(_Dh, _Anc * _Dh + _Bnc),),
)

LEFT_INVERSE = lemma(
    "solving M X = Y",
    "If M is invertible and M X = Y, then X = M⁻¹ Y.",
    ("any linear-algebra text; e.g. Horn & Johnson, Matrix Analysis, 2nd ed., 2013, §0.5",),
    (_Mnc, _Xnc, _Ync),
    (Pred("invertible", (_Mnc,)), sp.Eq(_Mnc * _Xnc, _Ync)),
    (sp.Eq(_Xnc, _Mnc**-1 * _Ync),),
)

_c, _u, _R = sp.symbols("c u R")
_R_nn = sp.Symbol("R", nonnegative=True)
_gam, _gmax = sp.symbols("gamma gamma_max")
hadamard = sp.Function("hadamard")  # hadamard(γ, u) = γ ⊙ u
ball = sp.Function("ball")  # the closed ball of radius R about 0 in ℝ^d

HOMOGENEITY = lemma(
    "‖c u‖ = |c| ‖u‖ (vector norm)",
    "‖c u‖ = |c| ‖u‖ for every scalar c and vector u.",
    ("any text on normed spaces",),
    (_c, _u),
    (),
    (sp.Eq(norm(_c * _u), sp.Abs(_c) * norm(_u)),),
)

HADAMARD_BOUND = lemma(
    "‖γ ⊙ u‖ ≤ max|γᵢ| ‖u‖",
    "If max_i |γᵢ| = γ_max, then ‖γ ⊙ u‖ ≤ γ_max ‖u‖ (diag(γ) has spectral norm max|γᵢ|).",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., 2013, §5.6",),
    (_gam, _gmax, _u),
    (Pred("max_abs", (_gam, _gmax)),),
    (sp.Le(norm(hadamard(_gam, _u)), _gmax * norm(_u)),),
)

_yl = sp.Symbol("y")

INTO_BALL = lemma(
    "bounded values map a ball into itself",
    "If every value of f is u(y) for some y, and ‖u(y)‖ ≤ R for every y, then f maps the "
    "closed ball B̄(0, R) into itself.",
    ("definition of the ball",),
    (_f, _yl, _u, _R),
    (
        Pred("values_are", (_f, sp.Lambda(_yl, _u))),
        Pred("forall", (_yl, sp.Le(norm(_u), _R))),
    ),
    (Pred("maps_into", (_f, ball(_R))),),
)

NORMALIZED = lemma(
    "‖c y/‖y‖‖ = |c| for y ≠ 0",
    "For every vector y with ‖y‖ > 0 and scalar c, ‖c y/‖y‖‖ = |c| ‖y‖/‖y‖ = |c|.",
    ("any text on normed spaces (absolute homogeneity of the norm)",),
    (_c, _u),
    (sp.Lt(0, norm(_u)),),
    (sp.Eq(norm(_c * _u / norm(_u)), sp.Abs(_c)),),
)

_Epos = sp.Symbol("E")

POSITIVE_INSTANCE = lemma(
    "universal instantiation (a positive quantity)",
    "If 0 < E(q) for every q, then 0 < E(p) at any particular p (universal instantiation).",
    (
        "the quantifier axioms of first-order logic; e.g. H. B. Enderton, A Mathematical "
        "Introduction to Logic, 2nd ed., 2001, §2.4",
    ),
    (_q, _p, _Epos),
    (Pred("forall", (_q, sp.Lt(0, _Epos))),),
    (sp.Lt(0, subst(_Epos, _q, _p)),),
)

BALL_COMPACT_CONVEX = lemma(
    "closed balls are compact and convex",
    "For R ≥ 0 the closed ball B̄(0, R) of ℝ^d is nonempty, compact (closed and bounded: "
    "Heine–Borel) and convex (triangle inequality).",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 2.41",),
    (_R_nn,),
    (sp.Ge(_R_nn, 0),),
    (Pred("nonempty_compact_convex", (ball(_R_nn),)),),
)

_al, _be, _rho, _L = sp.symbols("alpha beta rho L")
_Cv, _CvT = _nc("c c^T")

RANK_ONE = lemma(
    "spectral norm of αI + β c cᵀ",
    "For c ∈ ℝ^d with transpose cᵀ, ‖c‖ = ρ and real α, β, the symmetric matrix αI + β c cᵀ has eigenvalue "
    "α on c⊥ and α + βρ² on c, so ‖αI + β c cᵀ‖₂ ≤ L whenever |α| ≤ L and |α + βρ²| ≤ L.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., 2013, Thm 2.5.6 (spectral theorem) and §5.6",),
    (_al, _be, _Cv, _CvT, _rho, _L),
    (
        Pred("transpose", (_Cv, _CvT)),
        sp.Eq(norm(_Cv), _rho),
        sp.Le(sp.Abs(_al), _L),
        sp.Le(sp.Abs(_al + _be * _rho**2), _L),
    ),
    (sp.Le(opnorm(_al + _be * _Cv * _CvT), _L),),
)

_wl, _Ll = sp.symbols("w L_w")
_sl = sp.Symbol("s", real=True)

JACOBIAN_FROM_LINES = lemma(
    "a derivative is determined by its directional derivatives",
    "If M is the derivative of a map at a point, i.e. M w = d/ds|₀ L(w, s) for every direction "
    "w (L(w, s) the map along the line through the point in direction w), and "
    "d/ds|₀ L(w, s) = α w + β c ⟨c, w⟩ for every w, with cᵀ the transpose of c, then "
    "M w = (αI + β c cᵀ) w for every w, so M = αI + β c cᵀ.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 9.17",),
    (_Mnc, _sl, _wl, _Ll, _al, _be, _Cv, _CvT),
    (
        Pred("derivative_along_lines", (_Mnc, _sl, sp.Lambda(_wl, _Ll))),
        Pred(
            "forall",
            (
                _wl,
                sp.Eq(
                    sp.Subs(sp.Derivative(_Ll, _sl), _sl, 0),
                    _al * _wl + _be * _Cv * inner(_Cv, _wl),
                ),
            ),
        ),
        Pred("transpose", (_Cv, _CvT)),
    ),
    (sp.Eq(_Mnc, _al + _be * _Cv * _CvT),),
)

_Gnc = sp.Symbol("Gamma", commutative=False)

DIAGONAL_NORM = lemma(
    "spectral norm of a diagonal matrix",
    "If max_i |γᵢ| = γ_max, then Γ = diag(γ) has ‖Γ‖₂ = γ_max.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., 2013, §5.6",),
    (_Gnc, _gam, _gmax),
    (Pred("diagonal_of", (_Gnc, _gam)), Pred("max_abs", (_gam, _gmax))),
    (sp.Le(opnorm(_Gnc), _gmax),),
)

_sa, _sA, _sb, _sB = sp.symbols("a A b B")

PRODUCT_MONOTONE = lemma(
    "product of two nonnegative bounds",
    "If 0 ≤ a ≤ A and 0 ≤ b ≤ B, then a b ≤ A B.",
    ("order axioms of the real numbers",),
    (_sa, _sA, _sb, _sB),
    (sp.Ge(_sa, 0), sp.Ge(_sb, 0), sp.Le(_sa, _sA), sp.Le(_sb, _sB)),
    (sp.Le(_sa * _sb, _sA * _sB),),
)

_Pnc_l = sp.Symbol("P", commutative=False)
_dd3 = sp.Symbol("d", positive=True, integer=True)

EIGEN_LOWER = lemma(
    "‖(αI + β c cᵀ) P‖₂ ≥ |α| for d ≥ 3",
    "For d ≥ 3, c ∈ ℝ^d with transpose cᵀ and P = I − 11ᵀ/d the centring matrix, there is a "
    "unit u ⊥ c, u ⊥ 1 (c⊥ ∩ 1⊥ has dimension ≥ d − 2 ≥ 1); P u = u and "
    "(αI + β c cᵀ) u = α u, so ‖M P‖₂ ≥ ‖M P u‖ = |α| for M = αI + β c cᵀ.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., 2013, §5.6 (‖A‖₂ = max over unit u of ‖A u‖)",),
    (_Mnc, _al, _be, _Cv, _CvT, _Pnc_l, _dd3),
    (
        sp.Eq(_Mnc, _al + _be * _Cv * _CvT),
        Pred("transpose", (_Cv, _CvT)),
        Pred("centring_matrix", (_Pnc_l, _dd3)),
        sp.Ge(_dd3, 3),
    ),
    (sp.Le(sp.Abs(_al), opnorm(_Mnc * _Pnc_l)),),
)

_dd = sp.Symbol("d", positive=True, integer=True)
_Pnc = sp.Symbol("P", commutative=False)

OPNORM_HOMOGENEITY = lemma(
    "‖c A‖₂ = |c| ‖A‖₂",
    "The spectral norm is absolutely homogeneous: ‖c A‖₂ = |c| ‖A‖₂.",
    ("any text on normed spaces",),
    (_c, _Anc),
    (),
    (sp.Eq(opnorm(_c * _Anc), sp.Abs(_c) * opnorm(_Anc)),),
)

CENTRING_NORM = lemma(
    "the centring matrix has norm 1",
    "For d ≥ 2, P = I − 11ᵀ/d is the orthogonal projection onto the (d − 1)-dimensional "
    "1⊥ ≠ {0}, so ‖P‖₂ = 1.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., 2013, §5.6 (norm of an orthogonal projection)",),
    (_Pnc, _dd),
    (Pred("centring_matrix", (_Pnc, _dd)), sp.Ge(_dd, 2)),
    (sp.Eq(opnorm(_Pnc), 1),),
)

LIP_GE_PARTIAL = lemma(
    "a partial derivative bounds the Lipschitz constant from below",
    "If f is differentiable at p, every partial derivative satisfies "
    "|∂fᵢ/∂xⱼ(p)| ≤ ‖Df(p)‖₂ ≤ Lip(f).",
    (
        "‖Df(p)u‖ = lim ‖f(p + su) − f(p)‖/s ≤ Lip(f) for unit u; e.g. Rudin, Principles of "
        "Mathematical Analysis, 3rd ed., 1976, Def. 9.11",
    ),
    (_f, _u, _p),
    (Pred("differentiable", (_f,)), Pred("partial_derivative_of", (_u, _f, _p))),
    (sp.Le(sp.Abs(_u), Lip(_f)),),
)


# ---------------------------------------------------------------------- C1
def _check_c1(
    system: dy.LoopedSystem | None = None, *, n_starts: int = 32, seed: int = 0
) -> CheckResult:
    if system is None:
        system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    if system.driven:
        return CheckResult(
            "C1",
            False,
            "the map takes its input at every step (recall), so C1 says nothing about it",
            violated=("no recall: f must not depend on x",),
        )
    found = dy.find_fixed_points(system, n_starts, mode="all", seed=seed)
    degenerate = [p for p in found.points if p.nullity > 0]
    if found.continua or degenerate:
        dims = sorted({c.dimension for c in found.continua})
        return CheckResult(
            "C1",
            False,
            "no count is reported: fixed points with eigenvalue 1 were found"
            + (f", forming a continuum of dimension {dims}" if dims else ""),
            {"continua": len(found.continua), "degenerate_points": len(degenerate)},
            violated=("nondegeneracy: 1 ∉ spec ∂f(h*) at every fixed point",),
        )
    counts = found.counts()
    return CheckResult(
        "C1",
        True,
        f"{len(found.points)} isolated, nondegenerate fixed points found (a lower bound on the "
        "countable set); f has no input, so the set does not depend on x",
        {"points": len(found.points), **counts},
    )


_fF = sp.Function("f")
_h1, _x1 = sp.symbols("h x", real=True)
_hstar = sp.Symbol("h^*", real=True)
_Jf = sp.Function("J", commutative=False)  # J(q) = ∂f(q)
_fmap = _fF(_h1)  # no recall: f reads h only
_g1 = _fmap - _h1  # the fixed-point residual g(h) = f(h) − h
_pg = sp.Symbol("p", real=True)  # a generic point: no assumption mentions it


def _nondegenerate(q: Any) -> Pred:
    """If f(q) = q, then ∂f(q) = J(q) and I − J(q) is invertible."""
    return Pred("nondegenerate_if_fixed", (_fmap, _h1, q, _Jf(q)))


_C1_ASSUME = (
    Pred("continuously_differentiable", (_fmap, _h1)),
    _nondegenerate(_hstar),  # at one fixed point h* (implied by the next; a variant keeps only it)
    Pred("forall", (_q, _nondegenerate(_q))),  # nondegeneracy at EVERY fixed point
)
_C1_GOAL = (
    Pred("solution_set_independent_of", (_g1, _x1)),
    Pred("forall", (_pg, Pred("isolated_if_zero", (_g1, _h1, _pg)))),
    Pred("countable_zero_set", (_g1, _h1)),
    Pred("finitely_many_zeros_in_every_compact", (_g1, _h1)),
)


@claim(
    "C1",
    "Without recall, fixed points are input-independent and, if nondegenerate, countable",
    r"If $h_{t+1} = f(h_t)$ does not read $x$ and $f$ is $C^1$, the fixed-point set "
    r"$\{h : f(h) - h = 0\}$ is the same for every input $x$. If $I - \partial f(h^*)$ is "
    r"invertible ($1 \notin \mathrm{spec}\,\partial f(h^*)$) at every fixed point $h^*$, every "
    r"fixed point is isolated, so $\mathrm{Fix}(f)$ is countable, and finite in every compact "
    r"set. (Nondegeneracy at a single fixed point is not enough: $f(h) = h + h(\lVert h\rVert^2"
    r" - 1)$ on $\mathbb{R}^2$ is nondegenerate at $0$ and fixes the whole unit circle.)",
    (
        "no recall (f does not depend on x)",
        "f continuously differentiable",
        "nondegeneracy: 1 ∉ spec ∂f(h*) at every fixed point h* (a ∀ hypothesis)",
    ),
    ("Labovich, arXiv:2604.15259",),
    _check_c1,
    goal=_C1_GOAL,
    assumptions=_C1_ASSUME,
    variants=(
        Variant("without nondegeneracy (1 may be an eigenvalue of ∂f(h*))", drop=(1, 2)),
        Variant(
            "nondegeneracy at one fixed point h* only (f(h) = h + h(‖h‖² − 1) on ℝ²: Fix ⊃ the "
            "unit circle): the argument at h* does not generalize",
            drop=(2,),
            overrides={"point": _hstar},
        ),
        Variant("nondegeneracy at one fixed point h* only, generic argument", drop=(2,)),
        Variant(
            "with recall f(h, x): the fixed-point set would not depend on x",
            overrides={"recall": True},
            goal=(Pred("solution_set_independent_of", (_fF(_h1, _x1) - _h1, _x1)),),
        ),
        Variant(
            "finitely many fixed points on all of ℝⁿ (not only in each compact set)",
            goal=(Pred("finite_zero_set", (_g1, _h1)),),
        ),
    ),
)
def c1(d: Derivation, recall: bool = False, point: Any = None) -> None:
    fmap = _fF(_h1, _x1) if recall else _fmap
    p = _pg if point is None else point
    # the fixed-point equation of an autonomous map has no x in it
    d.identity(sp.Derivative(fmap - _h1, _x1), 0, "∂/∂x (f(h) − h) = 0: f does not read x")
    d.lemma(PARAMETER_FREE, "Fix(f) = {h : f(h) − h = 0} is one set for all x", G=fmap - _h1, x=_x1)
    # at a generic point p: if p is fixed, it is nondegenerate (the ∀ hypothesis), so isolated
    d.lemma(
        NONDEGENERATE_INSTANCE,
        "at p: if f(p) = p then ∂f(p) = J(p) and I − J(p) is invertible",
        F=_fmap,
        h=_h1,
        q=_q,
        p=p,
        A=_Jf(_q),
    )
    d.lemma(C1_MINUS_ID, "g(h) = f(h) − h is C¹", F=_fmap, h=_h1)
    iso = d.lemma(
        INVERSE_FUNCTION, "p is not a zero of g, or an isolated one", F=_fmap, h=_h1, p=p, A=_Jf(p)
    )
    d.generalize(iso, p, "p was generic: every zero of g is isolated")
    d.lemma(DISCRETE_COUNTABLE, "Fix(f) is countable", G=_g1, h=_h1, p=p)
    d.lemma(DISCRETE_COMPACT_FINITE, "Fix(f) ∩ K is finite", G=_g1, h=_h1, p=p)


# ---------------------------------------------------------------------- C2 and C4: RMSNorm
_d = sp.Symbol("d", positive=True, integer=True)
_s = sp.Symbol("s", real=True)
_hv2, _v2 = sp.symbols("h v")  # vectors: only added and scaled
_r = sp.Symbol("r", positive=True)  # r = ‖h‖
_ip = sp.Symbol("b", real=True)  # b = ⟨h, v⟩
_w = sp.Symbol("w", nonnegative=True)  # w = ‖v‖


def _dN(v: Any, b: Any, w: Any) -> Any:
    """∂N(h)[v] = d/ds N(h + s v) at s = 0 for N(y) = √d y/‖y‖, with
    ‖h + s v‖² = r² + 2 s b + s² w² (r = ‖h‖, b = ⟨h, v⟩, w = ‖v‖)."""
    y = _hv2 + _s * v
    unit = y / sp.sqrt(_r**2 + 2 * _s * b + _s**2 * w**2)  # y/‖y‖ along the line
    return sp.sqrt(_d) * sp.Subs(sp.Derivative(unit, _s), _s, 0)


_DN_GEN = _dN(_v2, _ip, _w)  # along any v
_DN_FORMULA = sp.sqrt(_d) / _r * (_v2 - _hv2 * _ip / _r**2)  # (√d/r)(I − h hᵀ/r²) v
_DN_H = _dN(_hv2, _r**2, _r)  # along h itself: ⟨h, h⟩ = r², ‖h‖ = r
_DN_PERP = _dN(_v2, 0, _w)  # along v ⊥ h: ⟨h, v⟩ = 0


def _check_c2(d: int = 6, *, seed: int = 0) -> CheckResult:
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=d))
    h = dy.Domain.sphere(math.sqrt(d)).sample(system, 4, seed=seed)
    with torch.no_grad():
        fixed = float((system.step(h) - h).norm(dim=1).max())
    eig = torch.linalg.eigvals(dy.jacobian(system, h)).real.sort(dim=1).values
    expect = torch.tensor([0.0] + [1.0] * (d - 1), dtype=F64)
    spec_err = float((eig - expect).abs().max())
    found = dy.find_fixed_points(system, 16, seed=seed)
    dims = [c.dimension for c in found.continua]
    ok = fixed < 1e-12 and spec_err < 1e-10 and dims == [d - 1] and not found.points
    return CheckResult(
        "C2",
        ok,
        f"every sampled sphere point is fixed (residual {fixed:.1e}); "
        f"spectrum {{0, 1 × {d - 1}}} to {spec_err:.1e}; the search reports a "
        f"continuum of dimension {dims}, not a count",
        {"residual": fixed, "spectrum_error": spec_err, "continua": dims},
    )


@claim(
    "C2",
    "A zero branch under RMSNorm fixes a whole sphere: 'countable' needs nondegeneracy",
    r"$f(h) = \mathrm{RMSNorm}(h + F(h))$ with $F \equiv 0$, $\gamma = 1$, $\varepsilon = 0$ is "
    r"$N(h) = \sqrt d\, h/\lVert h\rVert$; for every $d$ it fixes every $h$ with "
    r"$r = \lVert h\rVert = \sqrt d$, and there $\partial f\, h = 0$ and $\partial f\, v = v$ for "
    r"every $v \perp h$: eigenvalue 0 once and eigenvalue 1 on the $(d - 1)$-dimensional "
    r"$h^\perp$, so $\mathrm{spec}\,\partial f = \{0, 1\ (d - 1\ \text{times})\}$ and no fixed "
    r"point on the sphere is nondegenerate.",
    ("γ = 1, ε = 0", "F ≡ 0 (zero-initialised output projections)"),
    ("SCIENCE.md C2",),
    _check_c2,
    goal=(
        sp.Eq(sp.sqrt(_d) * _hv2 / _r, _hv2),
        sp.Eq(_DN_H, 0),
        sp.Eq(_DN_PERP.subs(_r, sp.sqrt(_d)), _v2),
    ),
    assumptions=(sp.Eq(_r, sp.sqrt(_d)),),
    variants=(
        Variant("eigenvalue 1 along h as well (∂f = I)", goal=(sp.Eq(_DN_H, _hv2),)),
        Variant("the sphere of radius d instead of √d", overrides={"radius": _d}),
        Variant(
            "eigenvalue 1 on every v, not only v ⊥ h",
            goal=(sp.Eq(_DN_GEN.subs(_r, sp.sqrt(_d)), _v2),),
        ),
    ),
)
def c2(d: Derivation, radius: Any = None) -> None:
    radius = sp.sqrt(_d) if radius is None else radius
    z = sp.Symbol("z")
    _subst(
        d,
        sp.Eq(_r, radius),
        z,
        sp.sqrt(_d) * _hv2 / z,
        "N(h) = √d h/r = h where r = √d: every point of the sphere is fixed",
    )
    d.identity(_DN_H, 0, "∂N(h)[h] = 0: eigenvalue 0 along h (N(c h) = N(h) for c > 0)")
    d.identity(
        _DN_PERP.subs(_r, radius),
        _v2,
        "∂N(h)[v] = v for every v ⊥ h on the sphere (‖h + s v‖² = d + s²‖v‖²): eigenvalue 1 "
        "on the (d − 1)-dimensional h⊥",
    )


# ---------------------------------------------------------------------- C3
def _check_c3(system: dy.LoopedSystem | None = None, *, seed: int = 0) -> CheckResult:
    if system is None:
        f = dy.models.ContractiveTanh(n=12, lipschitz=0.9, seed=1)
        system = dy.LoopedSystem.from_module(f, torch.randn(3, 12, generator=_gen(seed), dtype=F64))
    if not system.driven or system.x is None:
        return CheckResult(
            "C3", False, "no input to differentiate by", violated=("recall: f depends on x",)
        )
    x = system.x

    def polish(s: dy.LoopedSystem, h0: torch.Tensor) -> torch.Tensor:
        return dy.solve(s, h0, method="newton_krylov", tol=1e-15, atol=1e-15, throw=False).state

    h0 = x.clone() if tuple(x.shape[1:]) == system.state_shape else system.initial_states("zeros")
    h = polish(system, h0)
    v = torch.randn(x.shape, generator=_gen(seed + 1), dtype=F64)
    got = dy.ift_sensitivity(system, h, v)
    eps = 1e-5
    fd = polish(system.with_input(x + eps * v), h) - polish(system.with_input(x - eps * v), h)
    fd = fd / (2 * eps)
    rel = float(
        (
            (got - fd).reshape(x.shape[0], -1).norm(dim=1) / fd.reshape(x.shape[0], -1).norm(dim=1)
        ).max()
    )
    return CheckResult(
        "C3",
        rel <= 1e-8,
        f"IFT sensitivity vs central differences: relative difference {rel:.1e} (target 1e-8)",
        {"relative_difference": rel},
    )


_fsym, _xsym = sp.symbols("f x")
_Ah, _Bx = _nc("A B")  # A = ∂_h f(h*, x), B = ∂_x f(h*, x)
_Dstar = dhdx(_hstar, _xsym)  # dh*/dx at x, as the IFT names it
_C3_GOAL = (
    Pred("derivative_of", (_Dstar, _hstar, _xsym)),
    sp.Eq(_Dstar, (1 - _Ah) ** -1 * _Bx),
)


@claim(
    "C3",
    "Implicit function theorem: the fixed point's derivative without unrolling",
    r"If $f$ is $C^1$, $h^* = f(h^*, x)$ and $I - \partial_h f(h^*, x)$ is invertible "
    r"($1 \notin \mathrm{spec}\,\partial_h f$), then $h^*$ is a $C^1$ function of $x$ near $x$ "
    r"and $\frac{dh^*}{dx} = (I - \partial_h f)^{-1} \partial_x f$.",
    ("f continuously differentiable", "h* = f(h*, x)", "1 ∉ spec ∂_h f at h*"),
    ("Bai, Kolter & Koltun, arXiv:1909.01377",),
    _check_c3,
    goal=_C3_GOAL,
    assumptions=(
        Pred("continuously_differentiable", (_fsym,)),
        Pred("fixed_point", (_fsym, _hstar, _xsym)),
        Pred("partial_h", (_fsym, _hstar, _xsym, _Ah)),
        Pred("partial_x", (_fsym, _hstar, _xsym, _Bx)),
        Pred("invertible", (1 - _Ah,)),
    ),
    variants=(
        Variant("sign error: (I + ∂_h f)⁻¹ ∂_x f", goal=(sp.Eq(_Dstar, (1 + _Ah) ** -1 * _Bx),)),
        Variant("without 1 ∉ spec ∂_h f", drop=(4,)),
        Variant("without the factor (I − ∂_h f)⁻¹ (one unrolled step)", goal=(sp.Eq(_Dstar, _Bx),)),
        Variant(
            "the chain rule applied to Dh = 0 (not the derivative): 0 = B", overrides={"dh": 0}
        ),
    ),
)
def c3(d: Derivation, dh: Any = None) -> None:
    dh = _Dstar if dh is None else dh
    d.lemma(IMPLICIT_FUNCTION, "h*(x) exists and is C¹ near x", f=_fsym, hs=_hstar, x=_xsym, A=_Ah)
    fixed = d.lemma(
        CHAIN_RULE_FIXED,
        "differentiate h*(x) = f(h*(x), x)",
        f=_fsym,
        hs=_hstar,
        x=_xsym,
        A=_Ah,
        B=_Bx,
        Dh=dh,
    )
    z = sp.Symbol("z", commutative=False)
    moved = _subst(d, fixed, z, z - _Ah * dh, "subtract A Dh*: Dh* − A Dh* = B")
    factored = d.identity((1 - _Ah) * dh, dh - _Ah * dh, "(I − A) Dh* = Dh* − A Dh*")
    d.chain([factored, sp.Eq(moved.lhs, moved.rhs)], "(I − A) Dh* = B")
    d.lemma(
        LEFT_INVERSE,
        "multiply by (I − A)⁻¹",
        M=1 - _Ah,
        X=dh,
        Y=_Bx,
    )


# ---------------------------------------------------------------------- C4
def _check_c4(d: int = 8, *, seed: int = 0) -> CheckResult:
    norm_ = torch.nn.RMSNorm(d, eps=0.0, elementwise_affine=False, dtype=F64)
    system = dy.LoopedSystem.from_module(norm_, state_shape=(d,))
    x = 3 * torch.randn(3, d, generator=_gen(seed), dtype=F64)
    with torch.no_grad():
        y = system.step(x)
    norm_err = float((y.norm(dim=1) - math.sqrt(d)).abs().max())
    eig = torch.linalg.eigvals(dy.jacobian(system, x)).real.sort(dim=1).values
    expect = torch.cat(
        [torch.zeros(3, 1, dtype=F64), (math.sqrt(d) / x.norm(dim=1))[:, None].expand(3, d - 1)],
        dim=1,
    )
    spec = float((eig - expect).abs().max())
    ok = norm_err < 1e-12 and spec < 1e-10
    return CheckResult(
        "C4",
        ok,
        f"‖RMSNorm(x)‖ = √d to {norm_err:.1e}; Jacobian spectrum {{0, √d/‖x‖}} to {spec:.1e}",
        {"norm_error": norm_err, "spectrum_error": spec},
    )


_gmax4 = sp.Symbol("gamma_max", positive=True)
_gamma4 = sp.Symbol("gamma")
_fx = sp.Symbol("f_x")  # h ↦ γ ⊙ N(h + F(h, x)) for one input x
_N4 = sp.sqrt(_d) * _hv2 / _r  # N at a nonzero pre-norm vector h = y with ‖y‖ = r
_RADIUS = sp.sqrt(_d) * _gmax4
_pre = sp.Function("pre")  # pre(h) = h + F(h, x): f_x's pre-norm vector at state h
_y4 = sp.Symbol("y")  # a generic state (bound in the assumptions, free in none)


def _Npre(h: Any) -> Any:
    """N(pre(h)) = √d pre(h)/‖pre(h)‖."""
    return sp.sqrt(_d) * _pre(h) / norm(_pre(h))


_C4_ASSUME = (
    sp.Eq(norm(_hv2), _r),  # r = ‖h‖ > 0: the pre-norm vector is not 0
    Pred("max_abs", (_gamma4, _gmax4)),  # γ_max = max_i |γ_i|
    Pred("values_are", (_fx, sp.Lambda(_y4, hadamard(_gamma4, _Npre(_y4))))),  # f_x = γ ⊙ N∘pre
    Pred("continuous", (_fx,)),  # ε > 0, or no pre-norm vector is 0
    Pred("forall", (_q, sp.Lt(0, norm(_pre(_q))))),  # no pre-norm vector is 0
)
_C4_GOAL = (
    sp.Eq(norm(_N4), sp.sqrt(_d)),
    sp.Eq(_DN_GEN, _DN_FORMULA),
    sp.Eq(_DN_H, 0),
    sp.Eq(_DN_PERP, sp.sqrt(_d) / _r * _v2),
    Pred("has_fixed_point", (_fx, ball(_RADIUS))),
)


@claim(
    "C4",
    "RMSNorm puts tokens on a sphere; its Jacobian; outer norm gives a fixed point for every x",
    r"With $\gamma = 1$, $\varepsilon = 0$, for every $d$ and $x$ with $r = \lVert x\rVert > 0$: "
    r"$\lVert N(x)\rVert = \sqrt d$ and $\partial N(x) = \frac{\sqrt d}{r}\left(I - "
    r"\frac{x x^\top}{r^2}\right)$, with eigenvalue 0 on $x$ and $\sqrt d/r$ on $x^\perp$. An "
    r"outer normalization $f_x(h) = \gamma \odot N(h + F(h, x))$ maps the ball of radius "
    r"$\sqrt d \max|\gamma|$ into itself, so when $f_x$ is continuous ($\varepsilon > 0$ or no "
    r"zero pre-norm vector) it has a fixed point there (Brouwer), for every $x$.",
    (
        "γ = 1, ε = 0 (for the exact sphere)",
        "f_x(h) = γ ⊙ N(pre(h)), pre(h) = h + F(h, x) ≠ 0 for every h",
        "f_x continuous (for Brouwer)",
    ),
    ("SCIENCE.md C4", "L. E. J. Brouwer, Math. Ann. 71, 1912"),
    _check_c4,
    goal=_C4_GOAL,
    assumptions=_C4_ASSUME,
    variants=(
        Variant("‖N(x)‖ = d (the wrong norm)", goal=(sp.Eq(norm(_N4), _d),)),
        Variant("Brouwer without continuity", drop=(3,)),
        Variant("a pre-norm vector may be 0 (N undefined there)", drop=(4,)),
        Variant("a ball of negative radius −1", overrides={"radius": sp.Integer(-1)}),
        Variant("the ball of radius max|γ| (without √d)", overrides={"radius": _gmax4}),
        Variant("∂N(x) = (√d/r) I (no projection)", goal=(sp.Eq(_DN_H, sp.sqrt(_d) / _r * _hv2),)),
    ),
)
def c4(d: Derivation, radius: Any = None) -> None:
    radius = _RADIUS if radius is None else radius
    z = sp.Symbol("z")
    # ‖N(x)‖ = (√d/r)‖x‖ = √d
    scaled = d.lemma(HOMOGENEITY, "‖(√d/r) x‖ = (√d/r)‖x‖", c=sp.sqrt(_d) / _r, u=_hv2)
    on = _subst(d, sp.Eq(norm(_hv2), _r), z, sp.sqrt(_d) * z / _r, "with ‖x‖ = r: (√d/r) r = √d")
    d.chain([scaled, on], "‖N(x)‖ = √d: RMSNorm puts every token on the sphere")
    # Brouwer for the outer norm, at a generic state y: ‖γ ⊙ N(pre(y))‖ ≤ √d γ_max
    y, u = _y4, _Npre(_y4)
    d.lemma(POSITIVE_INSTANCE, "pre(y) ≠ 0", q=_q, p=y, E=norm(_pre(_q)))
    on = d.lemma(NORMALIZED, "‖N(pre(y))‖ = √d", c=sp.sqrt(_d), u=_pre(y))
    had = d.lemma(HADAMARD_BOUND, "‖γ ⊙ N‖ ≤ γ_max ‖N‖", gamma=_gamma4, gamma_max=_gmax4, u=u)
    cap = _subst(d, on, z, _gmax4 * z, "γ_max ‖N‖ = √d γ_max on the sphere")
    bound = d.chain([had, cap], "the value of f_x at y has norm ≤ √d γ_max")
    d.generalize(bound, y, "y was generic: every value of f_x has norm ≤ √d γ_max")
    d.lemma(
        INTO_BALL,
        "f_x maps the ball into itself",
        f=_fx,
        y=y,
        u=hadamard(_gamma4, u),
        R=radius,
    )
    d.lemma(BALL_COMPACT_CONVEX, "the ball is nonempty, compact and convex", R=radius)
    d.lemma(BROUWER, "f_x has a fixed point in the ball", f=_fx, K=ball(radius))
    # the Jacobian and its eigenvalues, for every d and r (last: keeps look-ups fast)
    d.identity(
        _DN_GEN,
        _DN_FORMULA,
        "∂N(x)[v] = (√d/r)(v − x⟨x, v⟩/r²), i.e. ∂N = (√d/r)(I − x xᵀ/r²) "
        "(‖x + s v‖² = r² + 2s⟨x, v⟩ + s²‖v‖² by bilinearity)",
    )
    d.identity(_DN_H, 0, "∂N(x)[x] = 0: eigenvalue 0 along x")
    d.identity(
        _DN_PERP, sp.sqrt(_d) / _r * _v2, "∂N(x)[v] = (√d/r) v for v ⊥ x: eigenvalue √d/r on x⊥"
    )


# ---------------------------------------------------------------------- C5
def _check_c5(eps: float = 1e-5, d: int = 8) -> CheckResult:
    ln = torch.nn.LayerNorm(d, eps=eps, dtype=F64)
    system = dy.LoopedSystem.from_module(ln, state_shape=(d,))
    const = torch.full((1, d), 0.7, dtype=F64)
    local = float(dy.spectral_norm(system, const).values[0])
    up = dy.lipschitz_upper_bound(ln, dy.Domain()).value
    target = 1 / math.sqrt(eps)
    ok = abs(local - target) <= 1e-6 * target and abs(up - target) <= 1e-9 * target
    return CheckResult(
        "C5",
        ok,
        f"‖∂LN‖₂ at zero variance = {local:.6f}, certified bound {up:.6f}, 1/√ε = {target:.6f}",
        {"local": local, "bound": up, "target": target},
    )


_eps = sp.Symbol("epsilon", positive=True)
_var = sp.Symbol("v", nonnegative=True)  # the variance ‖c‖²/d of the centred input c
_cv5, _wv5 = sp.symbols("c w")  # the centred input c = P x and a centred direction w = P u
_k5 = sp.Symbol("k", real=True)  # k = ⟨c, w⟩
_m5 = sp.Symbol("m", nonnegative=True)  # m = ‖w‖
_Bnd = sp.Symbol("B", positive=True)
_E5, _ET5 = _nc("one one^T")  # the all-ones vector 1 and 1ᵀ
_P5 = 1 - _E5 * _ET5 / _d  # the centring matrix I − 11ᵀ/d
_lnf = sp.Symbol("LN")

_PHI_LN = 1 / sp.sqrt(_var + _eps)  # LayerNorm: c ↦ c/√(var + ε)
#: a map that agrees with LayerNorm at zero variance (Jacobian P/√ε there) but multiplies by the
#: scale instead of dividing: c ↦ c √(var + ε)/ε. Its ‖J‖ grows with the variance (about 4899
#: at var ≈ 6e-4, ε = 1e-5), so no proof may show the LayerNorm bound for it.
_PHI_BAD = sp.sqrt(_var + _eps) / _eps


def _alpha_beta(phi: Any) -> tuple[Any, Any]:
    """The Jacobian of c ↦ c φ(‖c‖²/d) along centred directions is αI + β c cᵀ, with α = φ(v),
    β = 2φ'(v)/d; returned in terms of e = √ε and t = √(v + ε) − √ε ≥ 0."""
    at = {_var: _t5**2 + 2 * _e5 * _t5, _eps: _e5**2}
    return sp.factor(phi.subs(at)), sp.factor((2 * sp.diff(phi, _var) / _d).subs(at))


_e5 = sp.Symbol("e", positive=True)  # e = √ε
_t5 = sp.Symbol("t", nonnegative=True)  # t = √(v + ε) − √ε: v = t² + 2 e t ranges over v ≥ 0
_Msym, _Psym = _nc("M P")
_M0, _MB, _PB = _nc("M_0 M_B P'")  # the Jacobians at zero variance and at ε = 0; P in ℝ^d'
_CB, _CBT = _nc("c_B c_B^T")  # an input of variance 1/(4B²)
_d3 = sp.Symbol("d'", positive=True, integer=True)  # the dimension of the ε = 0 statement
_AL_LN, _BE_LN = _alpha_beta(_PHI_LN)
_J5 = _Gnc * _Msym * _Psym  # J = Γ M P
_V_T = _t5**2 + 2 * _e5 * _t5  # the variance v in terms of t
_V_T_SQ = (_e5 + _t5) ** 2 - _e5**2  # the same v, written so that v + ε = (e + t)²
_V_B = 1 / (4 * _Bnd**2)  # the variance where, at ε = 0, α = 2B


def _line(phi: Any, c: Any, v: Any, eps: Any, dim: Any) -> Any:
    """c ↦ c φ(‖c‖²/d) along the line c + s w: ‖c + s w‖²/d = v + (2 s⟨c, w⟩ + s²‖w‖²)/d."""
    moved = phi.subs(_var, _var + (2 * _s * inner(c, _wv5) + _s**2 * norm(_wv5) ** 2) / dim)
    return (c + _s * _wv5) * moved.subs({_var: v, _eps: eps})


def _along(M: Any, line: Any) -> Pred:
    """M is the derivative: M w = d/ds|₀ line(w, s) for every w."""
    return Pred("derivative_along_lines", (M, _s, sp.Lambda(_wv5, line)))


_C5_ASSUME = (
    _along(_Msym, _line(_PHI_LN, _Cv, _V_T_SQ, _e5**2, _d)),  # M = D(c ↦ c/√(‖c‖²/d + ε)) at c
    Pred("transpose", (_Cv, _CvT)),
    sp.Eq(_Psym, _P5),  # P = I − 11ᵀ/d
    sp.Eq(norm(_Cv), sp.sqrt(_d * _V_T)),  # ‖c‖ = √(d v), v = t² + 2 e t
    Pred("diagonal_of", (_Gnc, _gam)),  # Γ = diag(γ)
    Pred("max_abs", (_gam, _gmax4)),  # γ_max = max |γ_i|
    sp.Eq(norm(_E5), sp.sqrt(_d)),  # ‖1‖ = √d
    Pred("transpose", (_E5, _ET5)),
    Pred("centring_matrix", (_Psym, _d)),
    sp.Ge(_d, 2),
    _along(_M0, _line(_PHI_LN, 0, 0, _e5**2, _d)),  # M₀: the same derivative at c = 0
    _along(_MB, _line(_PHI_LN, _CB, _V_B, 0, _d3)),  # M_B: at ε = 0, at c_B in ℝ^d'
    Pred("transpose", (_CB, _CBT)),
    sp.Eq(norm(_CB), sp.sqrt(_d3 * _V_B)),  # c_B has variance 1/(4B²)
    Pred("centring_matrix", (_PB, _d3)),
    sp.Ge(_d3, 3),
)
_C5_GOAL = (
    sp.Le(opnorm(_J5), _gmax4 / _e5),
    sp.Eq(opnorm(_M0 * _Psym), 1 / _e5),
    sp.Lt(_Bnd, opnorm(_MB * _PB)),
)
_CERT_ALONG_C = _t5 * (_t5**2 + 3 * _e5 * _t5 + 3 * _e5**2) / (_e5 * (_e5 + _t5) ** 3)


def _le_with(d: Derivation, lhs: Any, rhs: Any, cert: Any, why: str) -> Any:
    """``lhs ≤ rhs``, through ``cert`` when it is the gap, else by sympy alone (so a map that
    breaks the bound fails here, with sympy's verdict on the gap)."""
    use = cert if cert is not None and sp.simplify(rhs - lhs - cert) == 0 else None
    return d.inequality(lhs, rhs, why, by=use)


def _jacobian(d: Derivation, M: Any, line: Any, al: Any, be: Any, c: Any, cT: Any, why: str) -> Any:
    """M = αI + β c cᵀ from the directional derivative along a generic w."""
    along = d.identity(
        sp.Subs(sp.Derivative(line, _s), _s, 0),
        al * _wv5 + be * c * inner(c, _wv5),
        f"{why}: d/ds|₀ along w is α w + β c ⟨c, w⟩",
    )
    d.generalize(along, _wv5, "w was generic")
    return d.lemma(
        JACOBIAN_FROM_LINES, why, M=M, s=_s, w=_wv5, L_w=line, alpha=al, beta=be, c=c, **{"c^T": cT}
    )


@claim(
    "C5",
    "LayerNorm's Lipschitz constant is max|γ|/√ε, attained at zero variance",
    r"For every $d \ge 2$ and $\varepsilon = e^2 > 0$: the Jacobian of "
    r"$\mathrm{LN}(x) = \gamma \odot (x - \bar x)/\sqrt{\mathrm{var}(x) + \varepsilon}$ is "
    r"$J = \Gamma M P$ with $\Gamma = \mathrm{diag}(\gamma)$, $P = I - 11^\top/d$ and $M$ the "
    r"derivative of $c \mapsto c/\sqrt{\lVert c\rVert^2/d + \varepsilon}$ at the centred input "
    r"$c = Px$ (variance $v = \lVert c\rVert^2/d = t^2 + 2et$, $t \ge 0$); $M = \alpha I + "
    r"\beta c c^\top$ with $\alpha = (v + \varepsilon)^{-1/2}$, $\beta = -d^{-1}(v + "
    r"\varepsilon)^{-3/2}$, and $\lVert J\rVert_2 \le \max|\gamma|/\sqrt\varepsilon$ (316.23 at "
    r"$\varepsilon = 10^{-5}$). At zero variance with $\gamma = 1$, $J = M_0 P$ has norm exactly "
    r"$1/\sqrt\varepsilon$. With $\varepsilon = 0$, in every dimension $d' \ge 3$ and for every "
    r"$B > 0$, at an input $c_B$ of variance $1/(4B^2)$ (with $\gamma = 1$) "
    r"$\lVert J\rVert_2 = \lVert M_B P\rVert_2 \ge \alpha = 2B > B$ (the eigenvalue $\alpha$ on "
    r"$c_B^\perp \cap 1^\perp \ne \{0\}$): no global bound.",
    (
        "ε > 0 (ε = 0 in the last statement)",
        "d ≥ 2; d' ≥ 3 for the ε = 0 statement",
        "M, M₀, M_B are the derivatives of c ↦ c φ(‖c‖²/d) at the inputs named (assumed as "
        "facts: derivative_along_lines); cᵀ is the transpose of c",
    ),
    (
        "SCIENCE.md C5",
        "J. L. Ba, J. R. Kiros & G. E. Hinton, Layer Normalization, arXiv:1607.06450",
    ),
    _check_c5,
    goal=_C5_GOAL,
    assumptions=_C5_ASSUME,
    variants=(
        Variant("half the bound, max|γ|/(2√ε)", goal=(sp.Le(opnorm(_J5), _gmax4 / (2 * _e5)),)),
        Variant(
            "the bound for c ↦ c √(var + ε)/ε, whose Jacobian equals LayerNorm's, P/√ε, at zero "
            "variance but whose ‖J‖ reaches 4899 (vs 316) at ε = 1e-5",
            overrides={"phi": _PHI_BAD},
        ),
        Variant("without the variance's definition ‖c‖² = d v", drop=(3,)),
        Variant("1ᵀ replaced by −1ᵀ (‖I + 11ᵀ/d‖ ≤ 1; true norm 2)", overrides={"ones_t": -_ET5}),
        Variant("the Jacobian M = αI (no rank-one term)", overrides={"rank_one": False}),
        Variant("without cᵀ the transpose of c", drop=(1,)),
        Variant(
            "‖J‖ = 1/(2√ε) at zero variance", goal=(sp.Eq(opnorm(_M0 * _Psym), 1 / (2 * _e5)),)
        ),
        Variant("the zero-variance norm without LayerNorm's Jacobian there", drop=(10,)),
        Variant("the ε = 0 lower bound without LayerNorm's Jacobian there", drop=(11,)),
        Variant("the ε = 0 lower bound for d' ≥ 2 (d' = 2: c⊥ ∩ 1⊥ may be {0})", drop=(15,)),
        Variant("‖J‖ > 2B at ε = 0", goal=(sp.Lt(2 * _Bnd, opnorm(_MB * _PB)),)),
    ),
)
def c5(d: Derivation, phi: Any = None, ones_t: Any = None, rank_one: bool = True) -> None:
    phi = _PHI_LN if phi is None else phi
    ones_t = _ET5 if ones_t is None else ones_t
    al, be = _alpha_beta(phi)  # the map's own coefficients
    be = be if rank_one else sp.Integer(0)
    L = 1 / _e5
    z = sp.Symbol("z")
    v_t = _V_T
    # the eigenvalues of αI + β c cᵀ: α on c⊥ and α + βρ² = α + β d v on c; both ≤ 1/√ε
    _le_with(d, sp.Abs(al), L, None, "|α| ≤ 1/√ε for every variance v ≥ 0")
    _le_with(d, sp.Abs(al + be * _d * v_t), L, _CERT_ALONG_C, "|α + β‖c‖²| = |α + β d v| ≤ 1/√ε")
    if not (d.steps[-1].ok and d.steps[-2].ok):  # a proof stops at its first failed step
        return
    # M = αI + β c cᵀ: LayerNorm's derivative along every direction w
    mdef = _jacobian(
        d, _Msym, _line(phi, _Cv, _V_T_SQ, _e5**2, _d), al, be, _Cv, _CvT, "M = αI + β c cᵀ"
    )
    if not all(st.ok for st in d.steps):  # a proof stops at its first failed step
        return
    m0 = d.lemma(
        RANK_ONE,
        "‖αI + β c cᵀ‖₂ ≤ 1/√ε",
        alpha=al,
        beta=be,
        c=_Cv,
        **{"c^T": _CvT},
        rho=sp.sqrt(_d * v_t),
        L=L,
    )
    m1 = _subst(d, mdef, z, opnorm(z), "‖M‖ = ‖αI + β c cᵀ‖")
    m = d.chain([m1, m0], "‖M‖₂ ≤ 1/√ε")
    # ‖P‖₂ ≤ 1: P = I − 11ᵀ/d has eigenvalues 1 (on 1⊥) and 1 − d/d = 0
    p0 = d.lemma(
        RANK_ONE,
        "‖I − 11ᵀ/d‖₂ ≤ 1",
        alpha=1,
        beta=-1 / _d,
        c=_E5,
        **{"c^T": ones_t},
        rho=sp.sqrt(_d),
        L=1,
    )
    p1 = _subst(d, sp.Eq(_Psym, 1 - _E5 * ones_t / _d), z, opnorm(z), "‖P‖ = ‖I − 11ᵀ/d‖")
    p = d.chain([p1, p0], "‖P‖₂ ≤ 1")
    if not all(st.ok for st in d.steps):
        return
    g = d.lemma(DIAGONAL_NORM, "‖Γ‖₂ ≤ γ_max", Gamma=_Gnc, gamma=_gam, gamma_max=_gmax4)
    s1 = d.lemma(SUBMULTIPLICATIVE, "‖Γ M P‖ ≤ ‖Γ‖ ‖M P‖", A=_Gnc, B=_Msym * _Psym)
    s2 = d.lemma(SUBMULTIPLICATIVE, "‖M P‖ ≤ ‖M‖ ‖P‖", A=_Msym, B=_Psym)
    mp = d.lemma(
        PRODUCT_MONOTONE, "‖M‖ ‖P‖ ≤ (1/√ε)·1", a=opnorm(_Msym), A=m.rhs, b=opnorm(_Psym), B=p.rhs
    )
    mp2 = d.chain([s2, mp], "‖M P‖ ≤ 1/√ε")
    gmp = d.lemma(
        PRODUCT_MONOTONE,
        "‖Γ‖ ‖M P‖ ≤ γ_max/√ε",
        a=opnorm(_Gnc),
        A=g.rhs,
        b=opnorm(_Msym * _Psym),
        B=mp2.rhs,
    )
    d.chain([s1, gmp], "‖J‖₂ ≤ max|γ|/√ε")
    # attained at zero variance (c = 0, γ = 1): M₀ = α(0) I = I/√ε, J = M₀ P, ‖P‖₂ = 1 (d ≥ 2)
    a0 = al.subs(_t5, 0)
    m0def = _jacobian(
        d, _M0, _line(phi, 0, 0, _e5**2, _d), a0, sp.Integer(0), _Cv, _CvT, "M₀ = I/√ε at c = 0"
    )
    w = sp.Symbol("z", commutative=False)
    at = _subst(d, m0def, w, opnorm(w * _Psym), "‖M₀ P‖ = ‖P/√ε‖")
    hom = d.lemma(OPNORM_HOMOGENEITY, "‖P/√ε‖ = ‖P‖/√ε", c=a0, A=_Psym)
    one = d.lemma(CENTRING_NORM, "‖P‖₂ = 1", P=_Psym, d=_d)
    at0 = _subst(d, one, z, a0 * z, "‖P‖/√ε = 1/√ε")
    d.chain([at, hom, at0], "‖J‖₂ = ‖M₀ P‖₂ = 1/√ε at zero variance: the bound is attained")
    # ε = 0: at variance 1/(4B²), α = 1/√v = 2B is an eigenvalue of M_B P on c⊥ ∩ 1⊥ (d' ≥ 3)
    phi0 = phi.subs(_eps, 0)
    aB = phi0.subs(_var, _V_B)
    bB = (2 * sp.diff(phi0, _var) / _d3).subs(_var, _V_B)
    _jacobian(
        d, _MB, _line(phi, _CB, _V_B, 0, _d3), aB, bB, _CB, _CBT, "M_B = α I + β c_B c_Bᵀ, ε = 0"
    )
    low = d.lemma(
        EIGEN_LOWER,
        "‖M_B P'‖₂ ≥ |α| (a unit u ⊥ c_B, 1)",
        M=_MB,
        alpha=aB,
        beta=bB,
        c=_CB,
        **{"c^T": _CBT},
        P=_PB,
        d=_d3,
    )
    big = d.inequality(_Bnd, low.lhs, "B < |α| = 2B", strict=True)
    d.chain([big, low], "‖J‖₂ > B at ε = 0, for every B > 0: no global bound")


# ---------------------------------------------------------------------- C6
def _attention_1d(x: torch.Tensor, a: float) -> torch.Tensor:
    scores = a * x[:, None] * x[None, :]
    return torch.softmax(scores, dim=1) @ x


def _check_c6(a: float = 1.0) -> CheckResult:
    from dynamo.kernel import prime_forward_ad as _prime_forward_ad

    _prime_forward_ad()  # jacfwd's first use would warn about torch's own deprecated internals
    vals = []
    for t in (1.0, 4.0, 16.0):
        x = torch.tensor([0.0, t], dtype=F64)
        J = torch.func.jacfwd(lambda z: _attention_1d(z, a))(x)
        vals.append((t, float(J[0, 0]), 0.5 + a * t * t / 4))
    err = max(abs(g - w) for _, g, w in vals)
    return CheckResult(
        "C6",
        err < 1e-10,
        "∂f₁/∂x₁ at x = (0, t): "
        + ", ".join(f"t={t:g}: {g:.6g}" for t, g, _ in vals)
        + f" (formula to {err:.1e}): unbounded in t",
        {"values": [g for _, g, _ in vals], "error": err},
    )


_x61, _x62 = sp.symbols("x1 x2", real=True)
_t6 = sp.Symbol("t", real=True)
_a6 = sp.Symbol("a", positive=True)
_att = sp.Symbol("Att")  # the attention map (x1, x2) ↦ (f1, f2), scores a x_i x_j


def _f1() -> Any:
    """Token 1's output: softmax over the scores a x₁x₁, a x₁x₂ applied to the values x₁, x₂."""
    w1, w2 = sp.exp(_a6 * _x61 * _x61), sp.exp(_a6 * _x61 * _x62)
    return (w1 * _x61 + w2 * _x62) / (w1 + w2)


def _partial_at(t: Any) -> Any:
    """∂f₁/∂x₁ at (x₁, x₂) = (0, t)."""
    return sp.Subs(sp.Derivative(_f1(), _x61), (_x61, _x62), (0, t))


_T_OF_B = 2 * sp.sqrt(_Bnd / _a6)  # where ∂f₁/∂x₁ = 1/2 + B


@claim(
    "C6",
    "Dot-product self-attention is not globally Lipschitz",
    r"For $n = 2$ tokens in $d = 1$ with scores $a x_i x_j$ ($a > 0$): at $x = (0, t)$, "
    r"$\partial f_1/\partial x_1 = \tfrac12 + a t^2/4$ for every $t$, so for every $B > 0$ "
    r"(at $t = 2\sqrt{B/a}$) $\mathrm{Lip}(f) \ge \tfrac12 + B > B$: attention is not globally "
    r"Lipschitz, and any certificate for it is local to a bounded set (on bounded sets the "
    r"bound is R7's).",
    (
        "a > 0",
        "f differentiable",
        "∂f₁/∂x₁ at (0, 2√(B/a)) is a partial derivative of f (assumed as a fact: "
        "partial_derivative_of)",
    ),
    ("Kim, Papamakarios & Mnih, arXiv:2006.04710", "Castin, Ablin & Peyré, arXiv:2312.14820"),
    _check_c6,
    goal=(
        sp.Eq(_partial_at(_t6), sp.Rational(1, 2) + _a6 * _t6**2 / 4),
        sp.Lt(_Bnd, Lip(_att)),
    ),
    assumptions=(
        Pred("differentiable", (_att,)),
        Pred("partial_derivative_of", (_partial_at(_T_OF_B), _att, (0, _T_OF_B))),
    ),
    variants=(
        Variant("the coefficient a t²/2 instead of a t²/4", overrides={"coefficient": 2}),
        Variant(
            "globally Lipschitz with constant 1/2 + a",
            goal=(sp.Le(Lip(_att), sp.Rational(1, 2) + _a6),),
        ),
        Variant("without differentiability (no link from ∂f to Lip f)", drop=(0,)),
    ),
    uses=("R7",),
)
def c6(d: Derivation, coefficient: Any = None) -> None:
    coef = sp.Rational(1, 4) if coefficient is None else sp.Rational(1, 4) * coefficient
    d.identity(
        _partial_at(_t6),
        sp.Rational(1, 2) + coef * _a6 * _t6**2,
        "∂f₁/∂x₁ at (0, t) = 1/2 + a t²/4",
    )
    value = d.identity(
        _partial_at(_T_OF_B), sp.Rational(1, 2) + coef * 4 * _Bnd, "at t = 2√(B/a): 1/2 + B"
    )
    z = sp.Symbol("z")
    absval = _subst(d, value, z, sp.Abs(z), "|∂f₁/∂x₁| = 1/2 + B there")
    low = d.lemma(
        LIP_GE_PARTIAL, "|∂f₁/∂x₁| ≤ Lip(f)", f=_att, u=_partial_at(_T_OF_B), p=(0, _T_OF_B)
    )
    gap = d.inequality(_Bnd, value.rhs, "B < 1/2 + B", strict=True)
    d.chain(
        [gap, sp.Eq(absval.rhs, absval.lhs), low],
        "Lip(f) > B for every B > 0: not globally Lipschitz",
    )


# ---------------------------------------------------------------------- C7
def _check_c7(pos: str = "rope", *, seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=16, n_heads=4, recall="none", norm="pre", pos=pos, seed=seed
    )
    system = dy.LoopedSystem.from_module(model, torch.zeros(1, 6, 16))
    token = torch.randn(1, 1, 16, generator=_gen(seed), dtype=F64)
    with torch.no_grad():
        out = system.step(token.expand(1, 6, 16).clone())
    dev = float((out - out[:, :1]).abs().max())
    ok = dev <= 1e-12
    return CheckResult(
        "C7",
        ok,
        f"pos={pos!r}: a uniform sequence maps to tokens that differ by {dev:.1e}",
        {"deviation": dev},
        violated=() if ok else ("no additive absolute positions inside the block",),
    )


_i7, _j7 = sp.symbols("i j", integer=True, positive=True)
_m7 = sp.Symbol("m", integer=True, positive=True)  # the keys token i attends to: T, or i if causal
_S7 = sp.IndexedBase("s")  # scores s_ij: any function of the tokens and positions
_p7 = sp.IndexedBase("p")  # additive absolute positions (the false variant)
_v7 = sp.Symbol("v")  # the common token
_V7 = sp.Function("V")  # the value map (all heads, concatenated and projected)
_g7 = sp.Function("g")  # the position-wise rest of the block (norms, MLP)
_U7 = _v7 + _V7(_v7) + _g7(_v7 + _V7(_v7))  # the block's output on the single token [v]


def _block_output(absolute: bool) -> tuple[Any, Any, Any]:
    """Token i's attention numerator, denominator, and the block output built on them."""
    value = _V7(_v7 + _p7[_j7]) if absolute else _V7(_v7)
    weights = sp.exp(_S7[_i7, _j7])
    num = sp.Sum(weights * value, (_j7, 1, _m7))
    den = sp.Sum(weights, (_j7, 1, _m7))
    att = num / den
    return num, den, _v7 + att + _g7(_v7 + att)


_NUM7, _DEN7, _OUT7 = _block_output(False)


@claim(
    "C7",
    "Uniform sequences stay uniform without absolute positions",
    r"If positions enter a block only through the attention scores $s_{ij}$ (RoPE, ALiBi, "
    r"causal or other masks, or no positional encoding) and the rest of the block is "
    r"position-wise, then on a uniform sequence $[v, \dots, v]$ token $i$'s output, for every "
    r"$i$, every number $m \ge 1$ of attended keys and every scores, is $u = v + V(v) + "
    r"g(v + V(v))$: the block's output on the single token $[v]$. So the sequence stays "
    r"uniform, layer after layer, and $[x] = T([x])$ implies $[x, \dots, x] = T([x, \dots, x])$; "
    r"false with additive absolute positions.",
    ("positions enter only the attention scores (or not at all)", "the rest is position-wise"),
    ("SCIENCE.md C7, seed 004",),
    _check_c7,
    goal=(sp.Eq(_OUT7, _U7),),
    variants=(
        Variant(
            "with additive absolute positions (values V(v + p_j))", overrides={"absolute": True}
        ),
        Variant(
            "each token's output is V(v), without the residual",
            goal=(sp.Eq(_OUT7, _V7(_v7) + _g7(_V7(_v7))),),
        ),
    ),
)
def c7(d: Derivation, absolute: bool = False) -> None:
    num, den, _out = _block_output(absolute)
    z = sp.Symbol("z")
    total = d.identity(
        num, _V7(_v7) * den, "Σ_j w_ij V(v_j) = V(v) Σ_j w_ij when every v_j = v, whatever the s_ij"
    )
    if not d.steps[-1].ok:  # a proof stops at its first failed step
        return
    att = _subst(d, total, z, z / den, "token i's attention output is V(v): the weights sum to 1")
    _subst(
        d,
        att,
        z,
        _v7 + z + _g7(_v7 + z),
        "the residual and the position-wise layers see only token i's vector: every token's "
        "output is u = v + V(v) + g(v + V(v)), the block's output on [v]",
    )
