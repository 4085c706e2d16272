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
from ._lemmas import BROUWER, SUBMULTIPLICATIVE, Lip, norm, opnorm
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

DERIVATIVE_MINUS_ID = lemma(
    "derivative of f − id",
    "If f is continuously differentiable with Df(p) = A, then g(h) = f(h) − h is continuously "
    "differentiable with Dg(p) = A − I (the derivative is linear and D id = I).",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, §9 (Def. 9.11, Thm 9.12)",),
    (_F, _hv, _p, _Anc),
    (
        Pred("continuously_differentiable", (_F, _hv)),
        Pred("derivative_at", (_F, _hv, _p, _Anc)),
    ),
    (
        Pred("continuously_differentiable", (_F - _hv, _hv)),
        Pred("derivative_at", (_F - _hv, _hv, _p, _Anc - 1)),
    ),
)

NEGATIVE_INVERTIBLE = lemma(
    "−A invertible",
    "If A is invertible, so is −A, with (−A)⁻¹ = −A⁻¹.",
    ("any linear-algebra text; e.g. Horn & Johnson, Matrix Analysis, 2nd ed., 2013, §0.5",),
    (_Anc,),
    (Pred("invertible", (_Anc,)),),
    (Pred("invertible", (-_Anc,)),),
)

INVERSE_FUNCTION = lemma(
    "inverse function theorem (isolated zeros)",
    "If g: U ⊂ ℝⁿ → ℝⁿ is continuously differentiable, Dg(p) = A is invertible and g(p) = 0, "
    "then g maps a neighbourhood of p one-to-one onto a neighbourhood of 0; in particular p "
    "is an isolated zero of g.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 9.24",),
    (_G, _hv, _p, _Anc),
    (
        Pred("continuously_differentiable", (_G, _hv)),
        Pred("derivative_at", (_G, _hv, _p, _Anc)),
        Pred("invertible", (_Anc,)),
        sp.Eq(sp.Subs(_G, _hv, _p), 0),
    ),
    (Pred("isolated_zero", (_G, _hv, _p)),),
)

DISCRETE_COUNTABLE = lemma(
    "discrete subsets of ℝⁿ are countable",
    "If every point p of a set Z ⊂ ℝⁿ (p arbitrary) is isolated in Z, then Z is countable: "
    "ℝⁿ is second countable, and distinct points of Z have disjoint basic neighbourhoods "
    "meeting Z only in them.",
    ("J. R. Munkres, Topology, 2nd ed., 2000, §30 (second-countable spaces)",),
    (_G, _hv, _p),
    (Pred("isolated_zero", (_G, _hv, _p)),),
    (Pred("countable_zero_set", (_G, _hv)),),
)

DISCRETE_COMPACT_FINITE = lemma(
    "isolated zeros are finitely many on a compact set",
    "If g is continuous and every zero p of g (p arbitrary) is isolated, then every compact K "
    "contains finitely many zeros: an infinite subset of K has a limit point in K "
    "(Bolzano–Weierstrass), a zero of g by continuity, and not isolated.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 2.37",),
    (_G, _hv, _p),
    (
        Pred("continuously_differentiable", (_G, _hv)),
        Pred("isolated_zero", (_G, _hv, _p)),
    ),
    (Pred("finitely_many_zeros_in_every_compact", (_G, _hv)),),
)

_f, _hs = sp.symbols("f hs")
_Dh, _Bnc = _nc("Dh B")

IMPLICIT_FUNCTION = lemma(
    "implicit function theorem (fixed points)",
    "If f(h, x) is continuously differentiable, h* = f(h*, x₀) and I − ∂_h f(h*, x₀) = I − A "
    "is invertible, then near x₀ there is a unique continuously differentiable x ↦ h*(x) with "
    "h*(x) = f(h*(x), x).",
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
    (Pred("differentiable_solution_map", (_hs, _x)),),
)

CHAIN_RULE_FIXED = lemma(
    "chain rule on h*(x) = f(h*(x), x)",
    "If x ↦ h*(x) is differentiable with h*(x) = f(h*(x), x) identically, and f has partial "
    "derivatives A = ∂_h f, B = ∂_x f there, then differentiating both sides (chain rule) "
    "gives Dh* = A Dh* + B.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 9.15",),
    (_f, _hs, _x, _Anc, _Bnc, _Dh),
    (
        Pred("differentiable_solution_map", (_hs, _x)),
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

INTO_BALL = lemma(
    "bounded values map a ball into itself",
    "If every value f(h) (h arbitrary in ℝ^d) has ‖f(h)‖ ≤ R, then f maps the closed ball "
    "B̄(0, R) into itself.",
    ("definition of the ball",),
    (_f, _u, _R),
    (Pred("value_of", (_f, _u)), sp.Le(norm(_u), _R)),
    (Pred("maps_into", (_f, ball(_R))),),
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
    "For c ∈ ℝ^d with ‖c‖ = ρ and real α, β, the symmetric matrix αI + β c cᵀ has eigenvalue "
    "α on c⊥ and α + βρ² on c, so ‖αI + β c cᵀ‖₂ ≤ L whenever |α| ≤ L and |α + βρ²| ≤ L.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., 2013, Thm 2.5.6 (spectral theorem) and §5.6",),
    (_al, _be, _Cv, _CvT, _rho, _L),
    (
        sp.Eq(norm(_Cv), _rho),
        sp.Le(sp.Abs(_al), _L),
        sp.Le(sp.Abs(_al + _be * _rho**2), _L),
    ),
    (sp.Le(opnorm(_al + _be * _Cv * _CvT), _L),),
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
_J = sp.Symbol("J", commutative=False)  # ∂f(h*)
_fmap = _fF(_h1)  # no recall: f reads h only
_g1 = _fmap - _h1  # the fixed-point residual g(h) = f(h) − h

_C1_ASSUME = (
    Pred("continuously_differentiable", (_fmap, _h1)),
    sp.Eq(_fF(_hstar), _hstar),  # h* is a fixed point (an arbitrary one)
    Pred("derivative_at", (_fmap, _h1, _hstar, _J)),  # J = ∂f(h*)
    Pred("invertible", (1 - _J,)),  # nondegeneracy: 1 ∉ spec J
)
_C1_GOAL = (
    Pred("solution_set_independent_of", (_g1, _x1)),
    Pred("isolated_zero", (_g1, _h1, _hstar)),
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
    r"set.",
    (
        "no recall (f does not depend on x)",
        "f continuously differentiable",
        "nondegeneracy: 1 ∉ spec ∂f(h*) at every fixed point h*",
    ),
    ("Labovich, arXiv:2604.15259",),
    _check_c1,
    goal=_C1_GOAL,
    assumptions=_C1_ASSUME,
    variants=(
        Variant("without nondegeneracy (1 may be an eigenvalue of ∂f(h*))", drop=(3,)),
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
def c1(d: Derivation, recall: bool = False) -> None:
    fmap = _fF(_h1, _x1) if recall else _fmap
    # the fixed-point equation of an autonomous map has no x in it
    d.identity(sp.Derivative(fmap - _h1, _x1), 0, "∂/∂x (f(h) − h) = 0: f does not read x")
    d.lemma(PARAMETER_FREE, "Fix(f) = {h : f(h) − h = 0} is one set for all x", G=fmap - _h1, x=_x1)
    # isolation: the inverse function theorem for g = f − id at an arbitrary fixed point h*
    d.lemma(
        DERIVATIVE_MINUS_ID,
        "g(h) = f(h) − h is C¹ with Dg(h*) = J − I",
        F=_fmap,
        h=_h1,
        p=_hstar,
        A=_J,
    )
    d.lemma(NEGATIVE_INVERTIBLE, "J − I = −(I − J) is invertible", A=1 - _J)
    z = sp.Symbol("z")
    _subst(d, sp.Eq(_fF(_hstar), _hstar), z, z - _hstar, "g(h*) = f(h*) − h* = 0")
    d.lemma(INVERSE_FUNCTION, "h* is an isolated zero of g", G=_g1, h=_h1, p=_hstar, A=_J - 1)
    # h* was an arbitrary fixed point: every fixed point is isolated
    d.lemma(DISCRETE_COUNTABLE, "Fix(f) is countable", G=_g1, h=_h1, p=_hstar)
    d.lemma(DISCRETE_COMPACT_FINITE, "Fix(f) ∩ K is finite", G=_g1, h=_h1, p=_hstar)


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
_C3_GOAL = (sp.Eq(_Dh, (1 - _Ah) ** -1 * _Bx),)


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
        Variant("sign error: (I + ∂_h f)⁻¹ ∂_x f", goal=(sp.Eq(_Dh, (1 + _Ah) ** -1 * _Bx),)),
        Variant("without 1 ∉ spec ∂_h f", drop=(4,)),
        Variant("without the factor (I − ∂_h f)⁻¹ (one unrolled step)", goal=(sp.Eq(_Dh, _Bx),)),
    ),
)
def c3(d: Derivation) -> None:
    d.lemma(IMPLICIT_FUNCTION, "h*(x) exists and is C¹ near x", f=_fsym, hs=_hstar, x=_xsym, A=_Ah)
    fixed = d.lemma(
        CHAIN_RULE_FIXED,
        "differentiate h*(x) = f(h*(x), x)",
        f=_fsym,
        hs=_hstar,
        x=_xsym,
        A=_Ah,
        B=_Bx,
        Dh=_Dh,
    )
    z = sp.Symbol("z", commutative=False)
    moved = _subst(d, fixed, z, z - _Ah * _Dh, "subtract A Dh*: Dh* − A Dh* = B")
    factored = d.identity((1 - _Ah) * _Dh, _Dh - _Ah * _Dh, "(I − A) Dh* = Dh* − A Dh*")
    d.chain([factored, sp.Eq(moved.lhs, moved.rhs)], "(I − A) Dh* = B")
    d.lemma(
        LEFT_INVERSE,
        "multiply by (I − A)⁻¹",
        M=1 - _Ah,
        X=_Dh,
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
_C4_ASSUME = (
    sp.Eq(norm(_hv2), _r),  # r = ‖h‖ > 0: the pre-norm vector is not 0
    Pred("max_abs", (_gamma4, _gmax4)),  # γ_max = max_i |γ_i|
    Pred("value_of", (_fx, hadamard(_gamma4, _N4))),  # f_x's values are γ ⊙ N(pre-norm vector)
    Pred("continuous", (_fx,)),  # ε > 0, or no pre-norm vector is 0
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
    ("γ = 1, ε = 0 (for the exact sphere)", "continuity for Brouwer: ε > 0 or no zero pre-norm"),
    ("SCIENCE.md C4", "L. E. J. Brouwer, Math. Ann. 71, 1912"),
    _check_c4,
    goal=_C4_GOAL,
    assumptions=_C4_ASSUME,
    variants=(
        Variant("‖N(x)‖ = d (the wrong norm)", goal=(sp.Eq(norm(_N4), _d),)),
        Variant("Brouwer without continuity", drop=(3,)),
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
    # Brouwer for the outer norm
    had = d.lemma(HADAMARD_BOUND, "‖γ ⊙ N‖ ≤ γ_max ‖N‖", gamma=_gamma4, gamma_max=_gmax4, u=_N4)
    cap = _subst(
        d, sp.Eq(norm(_N4), sp.sqrt(_d)), z, _gmax4 * z, "γ_max ‖N‖ = √d γ_max on the sphere"
    )
    d.chain([had, cap], "every value of f_x has norm ≤ √d γ_max")
    d.lemma(INTO_BALL, "f_x maps the ball into itself", f=_fx, u=hadamard(_gamma4, _N4), R=radius)
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
_AL_LN, _BE_LN = _alpha_beta(_PHI_LN)
_M5 = _AL_LN + _BE_LN * _Cv * _CvT  # M = αI + β c cᵀ
_J5 = _Gnc * _Msym * _Psym  # J = Γ M P

_C5_ASSUME = (
    sp.Eq(_Msym, _M5),  # M = αI + β c cᵀ, LayerNorm's α = (v + ε)^(-1/2), β = −(v + ε)^(-3/2)/d
    sp.Eq(_Psym, _P5),  # P = I − 11ᵀ/d
    sp.Eq(norm(_Cv), sp.sqrt(_d * (_t5**2 + 2 * _e5 * _t5))),  # ‖c‖ = √(d v), v = t² + 2 e t
    Pred("diagonal_of", (_Gnc, _gam)),  # Γ = diag(γ)
    Pred("max_abs", (_gam, _gmax4)),  # γ_max = max |γ_i|
    sp.Eq(norm(_E5), sp.sqrt(_d)),  # ‖1‖ = √d
    Pred("centring_matrix", (_Psym, _d)),
    sp.Ge(_d, 2),
)
_C5_GOAL = (
    sp.Le(opnorm(_J5), _gmax4 / _e5),
    sp.Eq(opnorm(_Psym / _e5), 1 / _e5),
    sp.Lt(_Bnd, sp.Subs(_PHI_LN.subs(_eps, 0), _var, 1 / (4 * _Bnd**2))),
)
_CERT_ALONG_C = _t5 * (_t5**2 + 3 * _e5 * _t5 + 3 * _e5**2) / (_e5 * (_e5 + _t5) ** 3)


def _le_with(d: Derivation, lhs: Any, rhs: Any, cert: Any, why: str) -> Any:
    """``lhs ≤ rhs``, through ``cert`` when it is the gap, else by sympy alone (so a map that
    breaks the bound fails here, with sympy's verdict on the gap)."""
    use = cert if cert is not None and sp.simplify(rhs - lhs - cert) == 0 else None
    return d.inequality(lhs, rhs, why, by=use)


@claim(
    "C5",
    "LayerNorm's Lipschitz constant is max|γ|/√ε, attained at zero variance",
    r"For every $d \ge 2$ and $\varepsilon = e^2 > 0$: the Jacobian of "
    r"$\mathrm{LN}(x) = \gamma \odot (x - \bar x)/\sqrt{\mathrm{var}(x) + \varepsilon}$ is "
    r"$J = \Gamma M P$ with $\Gamma = \mathrm{diag}(\gamma)$, $P = I - 11^\top/d$, "
    r"$M = \alpha I + \beta c c^\top$, $c = Px$ the centred input, $v = \lVert c\rVert^2/d$, "
    r"$\alpha = (v + \varepsilon)^{-1/2}$, $\beta = -d^{-1}(v + \varepsilon)^{-3/2}$ (written "
    r"with $t = \sqrt{v + \varepsilon} - \sqrt\varepsilon \ge 0$), and "
    r"$\lVert J\rVert_2 \le \max|\gamma|/\sqrt\varepsilon$ (316.23 at $\varepsilon = 10^{-5}$); "
    r"at zero variance with $\gamma = 1$, $J = P/\sqrt\varepsilon$ has norm exactly "
    r"$1/\sqrt\varepsilon$. With $\varepsilon = 0$ the eigenvalue $\alpha = 1/\sqrt v$ (on "
    r"$c^\perp \cap 1^\perp \ne \{0\}$ for $d \ge 3$) exceeds every $B > 0$ (at $v = 1/4B^2$): "
    r"no global bound.",
    ("ε > 0", "d ≥ 2"),
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
        Variant("without the variance's definition ‖c‖² = d v", drop=(2,)),
    ),
)
def c5(d: Derivation, phi: Any = None) -> None:
    phi = _PHI_LN if phi is None else phi
    al, be = _alpha_beta(phi)  # the map's own coefficients (its derivative is checked last)
    L = 1 / _e5
    z = sp.Symbol("z")
    v_t = _t5**2 + 2 * _e5 * _t5
    # the eigenvalues of αI + β c cᵀ: α on c⊥ and α + βρ² = α + β d v on c; both ≤ 1/√ε
    _le_with(d, sp.Abs(al), L, None, "|α| ≤ 1/√ε for every variance v ≥ 0")
    _le_with(d, sp.Abs(al + be * _d * v_t), L, _CERT_ALONG_C, "|α + β‖c‖²| = |α + β d v| ≤ 1/√ε")
    if not (d.steps[-1].ok and d.steps[-2].ok):  # a proof stops at its first failed step
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
    m1 = _subst(d, sp.Eq(_Msym, al + be * _Cv * _CvT), z, opnorm(z), "‖M‖ = ‖αI + β c cᵀ‖")
    m = d.chain([m1, m0], "‖M‖₂ ≤ 1/√ε")
    # ‖P‖₂ ≤ 1: P = I − 11ᵀ/d has eigenvalues 1 (on 1⊥) and 1 − d/d = 0
    p0 = d.lemma(
        RANK_ONE,
        "‖I − 11ᵀ/d‖₂ ≤ 1",
        alpha=1,
        beta=-1 / _d,
        c=_E5,
        **{"c^T": _ET5},
        rho=sp.sqrt(_d),
        L=1,
    )
    p1 = _subst(d, sp.Eq(_Psym, _P5), z, opnorm(z), "‖P‖ = ‖I − 11ᵀ/d‖")
    p = d.chain([p1, p0], "‖P‖₂ ≤ 1")
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
    # attained at zero variance (γ = 1): c = 0, J = α(0) P = P/√ε, and ‖P‖₂ = 1 for d ≥ 2
    d.identity(sp.Subs(al, _t5, 0), L, "at zero variance (t = 0) α = 1/√ε; c = 0, so J = P/√ε")
    hom = d.lemma(OPNORM_HOMOGENEITY, "‖P/√ε‖ = ‖P‖/√ε", c=L, A=_Psym)
    one = d.lemma(CENTRING_NORM, "‖P‖₂ = 1", P=_Psym, d=_d)
    at0 = _subst(d, one, z, L * z, "‖P‖/√ε = 1/√ε")
    d.chain([hom, at0], "‖J‖₂ = 1/√ε at zero variance: the bound is attained")
    # ε = 0: α = 1/√v exceeds any B at v = 1/(4B²)
    alpha0 = sp.Subs(phi.subs(_eps, 0), _var, 1 / (4 * _Bnd**2))
    val = d.identity(alpha0, 2 * _Bnd, "with ε = 0, α(1/(4B²)) = 2B")
    big = d.inequality(_Bnd, 2 * _Bnd, "2B > B", strict=True)
    d.chain([big, sp.Eq(val.rhs, val.lhs)], "α exceeds every B: no global bound at ε = 0")
    # last (to keep the look-ups above fast): the map's Jacobian is Γ(αI + β c cᵀ)P. Along a
    # centred direction w (P is linear), d/ds at 0 of (c + s w) φ(‖c + s w‖²/d), with
    # ‖c + s w‖²/d = v + (2 s k + s² m²)/d (k = ⟨c, w⟩, m = ‖w‖), is α w + β c k
    s = _s
    line = (_cv5 + s * _wv5) * phi.subs(_var, _var + (2 * s * _k5 + s**2 * _m5**2) / _d)
    a_v, b_v = phi, 2 * sp.diff(phi, _var) / _d
    d.identity(
        sp.Subs(sp.Derivative(line, s), s, 0),
        a_v * _wv5 + b_v * _cv5 * _k5,
        "the derivative along w is α w + β c ⟨c, w⟩ (α = φ(v), β = 2φ'(v)/d): J = Γ(αI + β c cᵀ)P",
    )


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
    ("a > 0", "f differentiable"),
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
