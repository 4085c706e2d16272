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

LEIBNIZ = lemma(
    "substitution of equals",
    "If a = b, then F(a) = F(b) for every expression F(z) (Leibniz's law, the substitution "
    "property of equality).",
    (
        "the equality axioms of first-order logic; e.g. H. B. Enderton, A Mathematical "
        "Introduction to Logic, 2nd ed., 2001, §2.4",
    ),
    (_a, _b, _z, _F),
    (sp.Eq(_a, _b),),
    (sp.Eq(sp.Subs(_F, _z, _a), sp.Subs(_F, _z, _b)),),
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
    "inverse function theorem",
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
    "implicit function theorem",
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
    "absolute homogeneity of a norm",
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
    "products of nonnegative bounds",
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
    return sp.Subs(sp.Derivative(sp.sqrt(_d) * y / sp.sqrt(_r**2 + 2 * _s * b + _s**2 * w**2), _s), _s, 0)


_DN_GEN = _dN(_v2, _ip, _w)
_DN_H = _dN(_hv2, _r**2, _r)  # along h itself: ⟨h, h⟩ = r², ‖h‖ = r
_DN_FORMULA = sp.sqrt(_d) / _r * (_v2 - _hv2 * _ip / _r**2)  # (√d/r)(I − h hᵀ/r²) v


def _rmsnorm_jacobian(d: Derivation, r_value: Any = None) -> None:
    """∂N(h) = (√d/r)(I − h hᵀ/r²): 0 along h, √d/r on h⊥ (and 1 there when r = √d)."""
    d.identity(
        _DN_GEN,
        _DN_FORMULA,
        "∂N(h)[v] = (√d/r)(v − h⟨h, v⟩/r²), i.e. ∂N = (√d/r)(I − h hᵀ/r²) "
        "(‖h + s v‖² = r² + 2s⟨h, v⟩ + s²‖v‖² by bilinearity)",
    )
    d.identity(_DN_H, 0, "∂N(h)[h] = 0: eigenvalue 0 along h (N(c h) = N(h) for c > 0)")
    z = sp.Symbol("z")
    perp = _subst(
        d,
        sp.Eq(_ip, 0),
        z,
        sp.sqrt(_d) / _r * (_v2 - _hv2 * z / _r**2),
        "for v ⊥ h (b = ⟨h, v⟩ = 0): ∂N(h)[v] = (√d/r) v",
    )
    d.chain([sp.Eq(_DN_GEN, _DN_FORMULA), perp], "∂N(h)[v] = (√d/r) v on h⊥ (dimension d − 1)")
    if r_value is not None:
        on = _subst(
            d,
            sp.Eq(_r, r_value),
            z,
            sp.sqrt(_d) * _v2 / z,
            f"on the sphere ‖h‖ = {r_value}: (√d/r) v = v",
        )
        d.chain(
            [sp.Eq(_DN_GEN, sp.sqrt(_d) * _v2 / _r), on], "∂N(h)[v] = v on h⊥: eigenvalue 1"
        )


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
        sp.Eq(_DN_GEN, _v2),
    ),
    assumptions=(sp.Eq(_r, sp.sqrt(_d)), sp.Eq(_ip, 0)),
    variants=(
        Variant("eigenvalue 1 along h as well (∂f = I)", goal=(sp.Eq(_DN_H, _hv2),)),
        Variant("the sphere of radius d instead of √d", overrides={"radius": _d}),
        Variant("eigenvalue 1 on every v, not only v ⊥ h", drop=(1,)),
    ),
)
def c2(d: Derivation, radius: Any = None) -> None:
    radius = sp.sqrt(_d) if radius is None else radius
    z = sp.Symbol("z")
    fixed = _subst(
        d, sp.Eq(_r, radius), z, sp.sqrt(_d) * _hv2 / z, "N(h) = √d h/r = h where r = √d"
    )
    d.identity(fixed.rhs, _hv2, "so N(h) = h on the sphere")
    d.chain([fixed, sp.Eq(fixed.rhs, _hv2)], "every point of the sphere is fixed")
    _rmsnorm_jacobian(d, radius)


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
