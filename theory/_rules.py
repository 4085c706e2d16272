"""The per-layer Lipschitz rules behind ``dynamo.lipschitz_upper_bound``, as checked claims.

Each certified number dynamo reports is a product of these factors. Each rule's statement is built,
when it is proved, from the closed form dynamo's code evaluates (``dynamo.kernel.lipschitz_formulas``
and ``dynamo.kernel.ACTIVATION_SLOPES``), so a changed constant changes what the derivation must
reach; its numeric counterpart compares dynamo's rule with local Jacobian norms sampled (and climbed
by gradient ascent) inside the rule's domain.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mpmath
import sympy as sp
import torch
from torch import nn

import dynamo as dy
from dynamo.kernel import ACTIVATION_SLOPES
from dynamo.kernel import lipschitz_formulas as formulas

from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import (
    LIP_COMPOSITION,
    LIP_SUM,
    SUBMULTIPLICATIVE,
    TRIANGLE,
    Lip,
    add,
    at,
    compose,
    norm,
    opnorm,
)
from ._logic import Derivation, Pred, lemma

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sound(
    name: str,
    module: nn.Module,
    domain: dy.Domain,
    shape: tuple[int, ...],
    *,
    seed: int = 0,
    tight: bool = False,
) -> CheckResult:
    system = dy.LoopedSystem.from_module(module.double(), state_shape=shape)
    up = dy.lipschitz_upper_bound(module, domain).value
    states = domain.sample(system, 16, seed=seed)
    low = dy.lipschitz_lower_bound(
        system, states, method="ascent", steps=15, domain=domain, seed=seed
    ).value
    ok = low <= up * (1 + 1e-12) and (not tight or abs(low - up) <= 1e-8 * up)
    return CheckResult(
        name,
        ok,
        f"certified {up:.6g} >= largest local ‖J‖₂ found "
        f"{low:.6g}" + (" (attained)" if tight else ""),
        {"upper": up, "lower": low},
    )


# ---------------------------------------------------------------------- symbols and functions
#: σ_max(A), σ_min(A) of a matrix; max_i |γ_i| of a vector
sigma_max = sp.Function("sigma_max", nonnegative=True)
maxabs = sp.Function("maxabs", nonnegative=True)
#: A ⊗ B; diag(γ); the map x ↦ (φ(x_i))_i; the set {‖x‖ ≥ ρ}; the map x ↦ (x, s)
kron = sp.Function("kron")
diag = sp.Function("diag")
elementwise = sp.Function("elementwise")
shell = sp.Function("shell")
lift = sp.Function("lift")

_ORDER_REF = "W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Def. 1.17, Prop. 1.18"
_HJ = "R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013"

# lemma variables (replaced by name when a lemma is applied)
_a, _b, _c, _e, _k, _N = sp.symbols("a b c e k N", real=True)
_x, _y, _K, _P, _u, _uT = sp.symbols("x y K P u uT", commutative=False)
_fx = sp.Symbol("f_x", commutative=False)
_A, _B = sp.symbols("A B", commutative=False)
_f, _g, _S, _S2 = sp.symbols("f g S S_2")
_Lf, _Lg, _L = sp.symbols("L_f L_g L", nonnegative=True)
_s, _rho = sp.symbols("s rho", nonnegative=True)
_al, _be, _ka = sp.symbols("alpha beta kappa", nonnegative=True)
_t = sp.Symbol("t", real=True)
_v = sp.Symbol("v", positive=True)
_phi, _p, _g0, _v0 = sp.symbols("phi p g v_0", real=True)
_gam = sp.Symbol("gamma", commutative=False)
_Id, _E = sp.symbols("I E", commutative=False)
_id = sp.Symbol("id")  # the identity map

# ---------------------------------------------------------------------- order (ordered field)
ORDER_ADD = lemma(
    "rules: adding inequalities",
    "If a ≤ b and c ≤ e then a + c ≤ b + e.",
    (_ORDER_REF,),
    (_a, _b, _c, _e),
    (sp.Le(_a, _b), sp.Le(_c, _e)),
    (sp.Le(_a + _c, _b + _e),),
)
ORDER_SHIFT = lemma(
    "rules: adding to both sides",
    "If a ≤ b then a + k ≤ b + k.",
    (_ORDER_REF,),
    (_a, _b, _k),
    (sp.Le(_a, _b),),
    (sp.Le(_a + _k, _b + _k),),
)
ORDER_SUB = lemma(
    "rules: subtracting inequalities",
    "If a ≤ b and c ≤ e then a − e ≤ b − c.",
    (_ORDER_REF,),
    (_a, _b, _c, _e),
    (sp.Le(_a, _b), sp.Le(_c, _e)),
    (sp.Le(_a - _e, _b - _c),),
)
ORDER_NEG = lemma(
    "rules: subtracting from a constant",
    "If a ≤ b then k − b ≤ k − a.",
    (_ORDER_REF,),
    (_a, _b, _k),
    (sp.Le(_a, _b),),
    (sp.Le(_k - _b, _k - _a),),
)
ORDER_SCALE = lemma(
    "rules: scaling an inequality",
    "If a ≤ b and c ≥ 0 then c a ≤ c b.",
    (_ORDER_REF,),
    (_a, _b, _c),
    (sp.Le(_a, _b), sp.Ge(_c, 0)),
    (sp.Le(_c * _a, _c * _b),),
)
ORDER_MUL = lemma(
    "rules: multiplying inequalities",
    "If 0 ≤ a ≤ b and 0 ≤ c ≤ e then a c ≤ b e.",
    (_ORDER_REF,),
    (_a, _b, _c, _e),
    (sp.Ge(_a, 0), sp.Le(_a, _b), sp.Ge(_c, 0), sp.Le(_c, _e)),
    (sp.Le(_a * _c, _b * _e),),
)
MAX_BELOW = lemma(
    "rules: maximum of lower bounds",
    "If a ≤ N and b ≤ N then max(a, b) ≤ N.",
    ("definition of the maximum",),
    (_a, _b, _N),
    (sp.Le(_a, _N), sp.Le(_b, _N)),
    (sp.Le(sp.Max(_a, _b), _N),),
)
EXP_TANGENT = lemma(
    "rules: exponential above its tangent",
    "For every real x, 1 + x ≤ eˣ (eˣ is convex and its tangent at 0 is 1 + x).",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, §8.6",),
    (_t,),
    (),
    (sp.Le(1 + _t, sp.exp(_t)),),
)
REVERSE_TRIANGLE = lemma(
    "rules: reverse triangle inequality",
    "‖u‖ − ‖v‖ ≤ ‖u + v‖ for every norm (the triangle inequality for u = (u + v) + (−v)).",
    ("Minkowski; any text on normed spaces",),
    (_a, _b),
    (),
    (sp.Le(norm(_a) - norm(_b), norm(_a + _b)),),
)

RECIP_SQRT = lemma(
    "rules: reciprocal square root of a positive number",
    "If a > 0 then √a > 0 (positive roots exist) and so 1/√a > 0.",
    (f"{_ORDER_REF}; Thm 1.21 (positive n-th roots)",),
    (_a,),
    (sp.Gt(_a, 0),),
    (sp.Gt(1 / sp.sqrt(_a), 0),),
)


# ---------------------------------------------------------------------- linear algebra
AFFINE_LIP = lemma(
    "rules: Lipschitz constant of an affine map",
    "If f is the map x ↦ f_x (x its variable) and f(x) − f(y) = K(x − y) for every y (an affine "
    "map x ↦ Kx + b), then ‖f(x) − f(y)‖ = ‖K(x − y)‖ ≤ ‖K‖₂‖x − y‖: Lip(f) ≤ ‖K‖₂ (definition of "
    "the induced norm).",
    (f"{_HJ}, §5.6 (induced matrix norms)",),
    (_f, _x, _y, _fx, _K),
    (
        Pred("map", (_f, _x, _fx)),
        Pred("forall", (_y, sp.Eq(_fx - at(_fx, _x, _y), _K * (_x - _y)))),
    ),
    (sp.Le(Lip(_f), opnorm(_K)),),
)
SPECTRAL = lemma(
    "rules: the spectral norm is the largest singular value",
    "‖A‖₂ = σ_max(A) (in particular ‖A‖₂ ≤ σ_max(A)).",
    (f"{_HJ}, Example 5.6.6",),
    (_A,),
    (),
    (sp.Le(opnorm(_A), sigma_max(_A)),),
)
KRON_NORM = lemma(
    "rules: spectral norm of a Kronecker product",
    "The singular values of A ⊗ B are the products σ_i(A)σ_j(B), so ‖A ⊗ B‖₂ = ‖A‖₂‖B‖₂; "
    "hence ‖A‖₂ ≤ a and ‖B‖₂ ≤ b give ‖A ⊗ B‖₂ ≤ ab.",
    ("R. A. Horn, C. R. Johnson, Topics in Matrix Analysis, 1991, Thm 4.2.15",),
    (_A, _B, _a, _b),
    (sp.Le(opnorm(_A), _a), sp.Le(opnorm(_B), _b)),
    (sp.Le(opnorm(kron(_A, _B)), _a * _b),),
)
IDENTITY_NORM = lemma(
    "rules: the identity matrix has norm 1",
    "‖I‖ = 1 for every induced norm (‖Iv‖/‖v‖ = 1), so ‖I‖ ≤ 1.",
    (f"{_HJ}, §5.6",),
    (_Id,),
    (Pred("identity_matrix", (_Id,)),),
    (sp.Le(opnorm(_Id), 1),),
)
DIAG_NORM = lemma(
    "rules: spectral norm of a diagonal matrix",
    "The singular values of diag(γ) are the |γ_i|, so ‖diag(γ)‖₂ = max_i |γ_i|.",
    (f"{_HJ}, §7.3 (singular value decomposition)",),
    (_gam,),
    (),
    (sp.Le(opnorm(diag(_gam)), maxabs(_gam)),),
)
HOMOGENEITY = lemma(
    "rules: absolute homogeneity of the norm",
    "‖cA‖ = |c|‖A‖; so ‖A‖ ≤ a and c ≥ 0 give ‖cA‖ ≤ c a.",
    (f"{_HJ}, §5.6 (norm axioms)",),
    (_A, _c, _a),
    (sp.Le(opnorm(_A), _a), sp.Ge(_c, 0)),
    (sp.Le(opnorm(_c * _A), _c * _a),),
)
COORD_PROJ = lemma(
    "rules: a coordinate projection has norm at most 1",
    "E = [I 0] (keep some coordinates, drop the others) satisfies ‖Ev‖ ≤ ‖v‖: ‖E‖₂ ≤ 1.",
    (f"{_HJ}, §5.6",),
    (_E,),
    (Pred("coordinate_projection", (_E,)),),
    (sp.Le(opnorm(_E), 1),),
)
ORTHO_PROJ = lemma(
    "rules: an orthogonal projection has norm at most 1",
    "If P = I − u uᵀ/s (symmetric) with uᵀu = s > 0 and P² − P = u(uᵀu − s)uᵀ/s², then P² = P: "
    "P is the orthogonal projection onto u^⊥, and ‖Pv‖² = ‖v‖² − ‖(I − P)v‖² ≤ ‖v‖²: ‖P‖₂ ≤ 1.",
    (f"{_HJ}, §0.9.13 (projections); any text on inner-product spaces",),
    (_P, _u, _uT, _s),
    (
        sp.Eq(_P, 1 - _u * _uT / _s),
        sp.Eq(_uT * _u, _s),
        sp.Gt(_s, 0),
        sp.Eq(_P * _P - _P, _u * (_uT * _u - _s) * _uT / _s**2),
    ),
    (sp.Eq(_P * _P, _P), sp.Le(opnorm(_P), 1)),
)

# ---------------------------------------------------------------------- maps and sets
IDENTITY_LIP = lemma(
    "rules: the identity map is 1-Lipschitz",
    "‖id(x) − id(y)‖ = ‖x − y‖: Lip(id) ≤ 1.",
    ("definition of the Lipschitz constant",),
    (),
    (),
    (sp.Le(Lip(_id), 1),),
)
COMPOSE_INTO = lemma(
    "rules: composition through a set",
    "If Lip(f) ≤ L_f, f maps S into S₂ and Lip(g on S₂) ≤ L_g, then Lip(g ∘ f on S) ≤ L_f L_g.",
    ("chain of the two Lipschitz inequalities",),
    (_f, _g, _S, _S2, _Lf, _Lg),
    (sp.Le(Lip(_f), _Lf), Pred("maps_into", (_f, _S, _S2)), sp.Le(Lip(_g, _S2), _Lg)),
    (sp.Le(Lip(compose(_g, _f), _S), _Lf * _Lg),),
)
COMPOSE_AFTER = lemma(
    "rules: a Lipschitz map after a map on a set",
    "If Lip(f on S) ≤ L_f and Lip(g) ≤ L_g, then Lip(g ∘ f on S) ≤ L_f L_g.",
    ("chain of the two Lipschitz inequalities",),
    (_f, _g, _S, _Lf, _Lg),
    (sp.Le(Lip(_f, _S), _Lf), sp.Le(Lip(_g), _Lg)),
    (sp.Le(Lip(compose(_g, _f), _S), _Lf * _Lg),),
)
WHOLE_SPACE = lemma(
    "rules: the shell of radius 0 is the whole space",
    "{x : ‖x‖ ≥ 0} is the whole space, so Lip(f on it) ≤ L is Lip(f) ≤ L.",
    ("norms are nonnegative",),
    (_f, _L),
    (sp.Le(Lip(_f, shell(0)), _L),),
    (sp.Le(Lip(_f), _L),),
)
LIFT = lemma(
    "rules: appending a constant coordinate",
    "x̃ = (x, s) satisfies x̃ − ỹ = (x − y, 0), so Lip(x ↦ x̃) ≤ 1, and ‖x̃‖² = ‖x‖² + s² "
    "(Pythagoras). If ∀α ≥ 0: ρ² + s² ≤ (ρ + α)² + s² (‖x‖ = ρ + α), the map sends "
    "{‖x‖ ≥ ρ} into {‖x̃‖ ≥ √(ρ² + s²)}.",
    ("definition of the Euclidean norm",),
    (_rho, _s, _al),
    (Pred("forall", (_al, sp.Le(_rho**2 + _s**2, (_rho + _al) ** 2 + _s**2))),),
    (
        sp.Le(Lip(lift(_s)), 1),
        Pred("maps_into", (lift(_s), shell(_rho), shell(sp.sqrt(_rho**2 + _s**2)))),
    ),
)
_radial = sp.Symbol("radial")  # the map z ↦ z/‖z‖
_ra, _rb, _rc = _rho + _al, _rho + _be, 1 - _ka
RADIAL = lemma(
    "rules: radial projection outside a ball",
    "Law of cosines: with a = ‖x‖, b = ‖y‖, c = cos θ = ⟨x, y⟩/(ab), ‖x − y‖² = a² + b² − 2abc "
    "and ‖x/a − y/b‖² = 2 − 2c. So if ρ > 0 and ρ²(2 − 2c) ≤ a² + b² − 2abc for all a = ρ + α, "
    "b = ρ + β, c = 1 − κ (α, β, κ ≥ 0: a, b ≥ ρ, c ≤ 1), then ‖x/‖x‖ − y/‖y‖‖ ≤ ‖x − y‖/ρ on "
    "{‖x‖ ≥ ρ}: Lip(radial projection on it) ≤ 1/ρ.",
    ("the law of cosines (expansion of ‖x − y‖² by the inner product)",),
    (_rho, _al, _be, _ka),
    (
        sp.Gt(_rho**2, 0),
        Pred(
            "forall",
            (
                _al,
                Pred(
                    "forall",
                    (
                        _be,
                        Pred(
                            "forall",
                            (
                                _ka,
                                sp.Le(
                                    _rho**2 * (2 - 2 * _rc), _ra**2 + _rb**2 - 2 * _ra * _rb * _rc
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    ),
    (sp.Le(Lip(_radial, shell(_rho)), 1 / _rho),),
)

# ---------------------------------------------------------------------- one-variable calculus


class slope(sp.Function):
    """φ′(x): the derivative in ``t`` of the expression ``φ``, at ``x``. Left unevaluated in a
    lemma's template (where φ is a bare symbol); computed by sympy's differentiation as soon as
    a concrete φ(t) is put in."""

    @classmethod
    def eval(cls, phi: Any, t: Any, x: Any) -> Any:
        if phi.has(t):
            return sp.diff(phi, t).subs(t, x)
        return None


_name = sp.Symbol("name")
ELEMENTWISE = lemma(
    "rules: elementwise map from a bound on the slope",
    "Let φ: ℝ → ℝ (named φ_name) be continuous and continuously differentiable except possibly at 0, with "
    "|φ′(t)| ≤ c for every t ≠ 0 (∀v > 0: |φ′(v)| ≤ c and |φ′(−v)| ≤ c). By the mean value theorem "
    "on each side of 0 (and continuity at 0), |φ(a) − φ(b)| ≤ c|a − b|; so "
    "‖Φ(x) − Φ(y)‖² = Σ_i |φ(x_i) − φ(y_i)|² ≤ c²‖x − y‖² for Φ(x) = (φ(x_i))_i: Lip(Φ) ≤ c. "
    "(Equivalently: where Φ is differentiable its Jacobian is diag(φ′(x_i)), whose spectral norm "
    "is max_i |φ′(x_i)| ≤ c.)",
    (
        "W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 5.10 (mean value "
        "theorem)",
        f"{_HJ}, §7.3 (a diagonal matrix's singular values are |d_i|)",
    ),
    (_name, _phi, _t, _v, _c),
    (
        Pred("activation_C1_off_0", (_name, _t, _phi)),
        Pred("forall", (_v, sp.Le(slope(_phi, _t, _v), _c))),
        Pred("forall", (_v, sp.Le(-_c, slope(_phi, _t, _v)))),
        Pred("forall", (_v, sp.Le(slope(_phi, _t, -_v), _c))),
        Pred("forall", (_v, sp.Le(-_c, slope(_phi, _t, -_v)))),
    ),
    (sp.Le(Lip(elementwise(_name)), _c),),
)
PEAK = lemma(
    "rules: first-derivative test on a half-line",
    "Let g be differentiable on (0, ∞), v₀ > 0, and g′(v) = p(v)(v₀ − v) with p(v) > 0 for "
    "every v > 0. Then g is nondecreasing on (0, v₀] and nonincreasing on [v₀, ∞) (the sign "
    "of the derivative, by the mean value theorem), so g(v) ≤ g(v₀) for every v > 0.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 5.11",),
    (_g0, _v, _v0, _p),
    (
        Pred("forall", (_v, sp.Eq(slope(_g0, _v, _v), _p * (_v0 - _v)))),
        Pred("forall", (_v, sp.Gt(_p, 0))),
        sp.Gt(_v0, 0),
    ),
    (sp.Le(_g0, at(_g0, _v, _v0)),),
)


# ---------------------------------------------------------------------- rigorous constants
def _erf_iv(x: Any) -> Any:
    """erf on an interval of [−2, 2]: its Taylor series to 40 terms, plus the first omitted term
    as an error interval (alternating series with decreasing terms: Leibniz)."""
    iv = mpmath.iv
    total, term = iv.mpf(0), x
    for n in range(40):
        total += term / (2 * n + 1)
        term = -term * x * x / (n + 1)
    rest = abs(term) / 81
    return 2 / iv.sqrt(iv.pi) * (total + iv.mpf([-rest.b, rest.b]))


def _iv(expr: Any) -> Any:
    """An mpmath.iv interval enclosing the closed-form constant ``expr``."""
    iv = mpmath.iv
    e = sp.sympify(expr)
    if e.is_Rational:
        return iv.mpf(int(e.p)) / iv.mpf(int(e.q))
    if e.is_Float:
        return iv.mpf(float(e))
    if e is sp.pi:
        return iv.pi
    if e is sp.E:
        return iv.e
    if e.is_Add:
        return sum((_iv(a) for a in e.args), iv.mpf(0))
    if e.is_Mul:
        out = iv.mpf(1)
        for a in e.args:
            out *= _iv(a)
        return out
    if e.is_Pow:
        base, ex = _iv(e.base), e.exp
        if ex.is_Integer:
            return base ** int(ex)
        if ex == sp.Rational(1, 2):
            return iv.sqrt(base)
        if ex == sp.Rational(-1, 2):
            return 1 / iv.sqrt(base)
    if isinstance(e, sp.exp):
        return iv.exp(_iv(e.args[0]))
    if isinstance(e, sp.erf):
        return _erf_iv(_iv(e.args[0]))
    raise TypeError(f"no interval evaluation for {e}")


def _constant_le(d: Derivation, value: Any, bound: Any, why: str) -> Any:
    """``value ≤ bound`` for closed-form constants: sympy's inequality step, run only when an
    mpmath.iv interval enclosure of both sides shows it rigorously (else a failed step)."""
    old = mpmath.iv.prec
    mpmath.iv.prec = 120
    try:
        lo, hi = _iv(value), _iv(bound)
    finally:
        mpmath.iv.prec = old
    if hi.a >= lo.b:
        enc = mpmath.iv.nstr(lo, 12)
        return d.inequality(value, bound, f"{why} (interval enclosure of the left: {enc})")
    d.instance(
        why, sp.Le(value, bound), f"enclosures {lo} vs {hi}", False, instance="interval enclosure"
    )
    return sp.Le(value, bound)


def _lemma_forall(d: Derivation, lem: Any, why: str, **mapping: Any) -> Any:
    """Apply ``lem`` after generalizing, innermost quantifier first, each of its ``∀`` hypotheses
    as instantiated (the instance facts must already be derived, or be decided true by sympy;
    each quantified variable must be free in every assumption of the claim)."""
    hyps, _ = lem.instantiate(mapping)
    for h in hyps:
        if isinstance(h, Pred) and h.name == "forall":
            bound, inner = [], h
            while isinstance(inner, Pred) and inner.name == "forall":
                bound.append(inner.args[0])
                inner = inner.args[1]
            if not all(isinstance(var, sp.Symbol) for var in bound):
                continue  # only a symbol can be generic: the lemma then fails on this hypothesis
            for var in reversed(bound):
                inner = d.generalize(inner, var, f"{why}: for every {var}")
    return d.lemma(lem, why, **mapping)


# ---------------------------------------------------------------------- R1 linear
def _check_r1(seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    return _sound("R1", nn.Linear(5, 5), dy.Domain(), (5,), seed=seed, tight=True)


# T tokens flattened: X ↦ (I_T ⊗ W) X + (1_T ⊗ b)
_I_T, _W, _X, _Y, _Bias = sp.symbols("I_T W X Y B", commutative=False)
_R1_MAP = sp.Symbol("f_lin")  # the map X ↦ (I_T ⊗ W) X + B


def _r1_goal() -> tuple[Any, ...]:
    return (sp.Le(Lip(_R1_MAP), formulas.linear(sigma_max(_W))),)


@claim(
    "R1",
    "Rule: a token-wise linear map has Lipschitz constant σ_max(W)",
    r"$x \mapsto Wx + b$ applied to each of $T$ tokens is $X \mapsto (I_T \otimes W)X + "
    r"1_T \otimes b$ on the flattened state; its Lipschitz constant is at most "
    r"$\lVert I_T \otimes W\rVert_2 = \lVert I_T\rVert_2\,\sigma_{\max}(W) = \sigma_{\max}(W)$ "
    r"(the bias cancels in differences): the factor dynamo's linear rule evaluates.",
    (
        "I_T is the T×T identity (the same W acts on every token)",
        "f_lin is X ↦ (I_T ⊗ W)X + B, B = 1_T ⊗ b",
    ),
    ("Horn & Johnson, Topics in Matrix Analysis, Thm 4.2.15", "Horn & Johnson, Matrix Analysis"),
    _check_r1,
    goal=_r1_goal,
    assumptions=(
        Pred("identity_matrix", (_I_T,)),
        Pred("map", (_R1_MAP, _X, kron(_I_T, _W) * _X + _Bias)),
    ),
    variants=(
        Variant("a bound σ_max(W)/2", goal=(sp.Le(Lip(_R1_MAP), sigma_max(_W) / 2),)),
        Variant("a different matrix on each token (I_T not the identity)", drop=(0,)),
        Variant("dynamo's linear factor divided by 100", patch=lambda: code_scaled("linear", 0.01)),
    ),
)
def r1(d: Derivation) -> None:
    K = kron(_I_T, _W)
    fx = K * _X + _Bias
    d.identity(fx - fx.subs(_X, _Y), K * (_X - _Y), "the bias cancels in differences")
    lip = _lemma_forall(
        d, AFFINE_LIP, "the flattened map is affine", f=_R1_MAP, x=_X, y=_Y, f_x=fx, K=K
    )
    d.lemma(IDENTITY_NORM, "‖I_T‖₂ ≤ 1", I=_I_T)
    d.lemma(SPECTRAL, "‖W‖₂ = σ_max(W)", A=_W)
    kr = d.lemma(KRON_NORM, "‖I_T ⊗ W‖₂ ≤ ‖I_T‖₂ σ_max(W)", A=_I_T, B=_W, a=1, b=sigma_max(_W))
    fact = d.chain([lip, kr], "Lip ≤ ‖I_T ⊗ W‖₂ ≤ σ_max(W)")
    d.weaken(fact, formulas.linear(sigma_max(_W)), "dynamo's factor (lipschitz_formulas.linear)")


# ---------------------------------------------------------------------- R2 activations
def _check_r2() -> CheckResult:
    t = torch.linspace(-12, 12, 240001, dtype=F64, requires_grad=True)
    worst = {}
    pairs: list[tuple[type, Any]] = [
        (nn.GELU, nn.functional.gelu),
        (nn.SiLU, nn.functional.silu),
        (nn.Sigmoid, torch.sigmoid),
        (nn.Tanh, torch.tanh),
        (nn.ReLU, torch.relu),
        (nn.Softplus, nn.functional.softplus),
    ]
    for kind, fn in pairs:
        (g,) = torch.autograd.grad(fn(t).sum(), t)
        worst[kind.__name__] = (float(g.abs().max()), ACTIVATION_SLOPES[kind])
    g = torch.autograd.grad(nn.functional.gelu(t, approximate="tanh").sum(), t)[0]
    worst["GELU(tanh)"] = (float(g.abs().max()), ACTIVATION_SLOPES[nn.GELU])
    ok = all(obs <= bound for obs, bound in worst.values())
    return CheckResult(
        "R2",
        ok,
        "sup |φ′| on a fine grid within each rule: "
        + ", ".join(f"{k} {o:.6f} <= {b}" for k, (o, b) in worst.items()),
        {k: list(v) for k, v in worst.items()},
    )


_t2 = sp.Symbol("t", real=True)
_v2 = sp.Symbol("v", positive=True)
_sig2 = 1 / (1 + sp.exp(-_t2))
_Phi2 = (1 + sp.erf(_t2 / sp.sqrt(2))) / 2
#: each activation dynamo's table lists, as a closed form in t
_ACTIVATIONS: dict[type, Any] = {
    nn.ReLU: sp.Max(0, _t2),
    nn.Tanh: sp.tanh(_t2),
    nn.Softplus: sp.log(1 + sp.exp(_t2)),
    nn.Identity: _t2,
    nn.Sigmoid: _sig2,
    nn.GELU: _t2 * _Phi2,
    nn.SiLU: _t2 * _sig2,
}


def _act_map(kind: type) -> Any:
    return elementwise(sp.Symbol(kind.__name__))


def _r2_goal() -> tuple[Any, ...]:
    # the bound for each activation is the code's table entry, read now
    return tuple(sp.Le(Lip(_act_map(k)), sp.sympify(ACTIVATION_SLOPES[k])) for k in _ACTIVATIONS)


@contextmanager
def _slopes_scaled(factor: float, kinds: tuple[type, ...] = ()) -> Iterator[None]:
    """Multiply dynamo's ACTIVATION_SLOPES entries (all, or ``kinds``) by ``factor`` while the
    block runs: a false variant "the code's constant changed"."""
    saved = dict(ACTIVATION_SLOPES)
    for k in kinds or tuple(ACTIVATION_SLOPES):
        ACTIVATION_SLOPES[k] = saved[k] * factor
    try:
        yield
    finally:
        ACTIVATION_SLOPES.update(saved)


def _slope(kind: type, x: Any) -> Any:
    """φ′(x) as sympy computes it."""
    return sp.diff(_ACTIVATIONS[kind], _t2).subs(_t2, x)


def _bounded(d: Derivation, expr: Any, c: Any, why: str, hi: Any = None, lo: Any = None) -> None:
    """−c ≤ expr ≤ c, each side by an inequality step (with certificate ``hi``/``lo``)."""
    d.inequality(expr, c, f"{why}: upper bound", by=hi)
    d.inequality(-c, expr, f"{why}: lower bound", by=lo)


def _mirror_lower(d: Derivation, kind: type, c: Any) -> None:
    """φ′(−v) = 1 − φ′(v) (GELU, SiLU) and φ′(v) ≤ c give −c ≤ 1 − c ≤ φ′(−v)."""
    up, um = _slope(kind, _v2), _slope(kind, -_v2)
    neg = d.lemma(ORDER_NEG, f"1 − c ≤ 1 − {kind.__name__}′(v)", a=up, b=c, k=1)
    gap = d.inequality(-c, 1 - c, "−c ≤ 1 − c")
    links = [gap, neg]
    if sp.sympify(1 - up) != um:  # sympy may already write φ′(−v) as 1 − φ′(v)
        links.append(d.identity(1 - up, um, f"{kind.__name__}′(−v) = 1 − {kind.__name__}′(v)"))
    d.chain(links, f"−c ≤ {kind.__name__}′(−v)")


def _silu_upper(d: Derivation, x: Any) -> Any:
    """SiLU′(x) ≤ t0²/(4A), A = t0 − 1 − e^{−t0}, t0 = 12/5, for every real x: with s = σ(x),
    SiLU′ = s + s(1 − s)x, x ≤ t0 − 1 + e^{x − t0} (tangent), s(1 − s)e^{x} = s², and a square."""
    t0 = sp.Rational(12, 5)
    A = t0 - 1 - sp.exp(-t0)
    s, w = _sig2.subs(_t2, x), sp.exp(-x) / (1 + sp.exp(-x)) ** 2  # σ(x), σ′(x) = σ(1 − σ)
    d.lemma(EXP_TANGENT, f"1 + ({x} − t0) ≤ e^({x} − t0)", t=x - t0)
    d.lemma(ORDER_SCALE, "times σ′(x) ≥ 0", a=1 + x - t0, b=sp.exp(x - t0), c=w)
    q = s + w * (t0 - 1)
    sh = d.lemma(
        ORDER_SHIFT, "plus σ(x) + σ′(x)(t0 − 1)", a=w * (1 + x - t0), b=w * sp.exp(x - t0), k=q
    )
    M = t0**2 / (4 * A)
    sq = d.inequality(
        w * sp.exp(x - t0) + q,
        M,
        "t0 s − A s² ≤ t0²/(4A) (complete the square; σ′(x)e^x = σ(x)²)",
        by=A * (s - t0 / (2 * A)) ** 2,
    )
    # SiLU′(x) written as the shifted side (so later steps meet SiLU′(x) itself)
    form = d.identity(
        _slope(nn.SiLU, x), w * (1 + x - t0) + q, "SiLU′ = σ′(x)(1 + x − t0) + σ + σ′(t0 − 1)"
    )
    return d.chain([form, sh, sq], f"SiLU′({x}) ≤ t0²/(4A)")


@claim(
    "R2",
    "Rule: an elementwise activation has Lipschitz constant sup |φ′|",
    r"For each activation $\varphi$ in dynamo's table, $|\varphi'(t)| \le c$ for every "
    r"$t \ne 0$, hence (mean value theorem, coordinatewise) $\mathrm{Lip}(x \mapsto "
    r"(\varphi(x_i))_i) \le c \le$ the table's entry: ReLU, tanh, softplus, identity $1$; "
    r"sigmoid $1/4$ ($\sigma' = \sigma(1 - \sigma)$); GELU $\Phi(\sqrt2) + \sqrt2\,\phi(\sqrt2) "
    r"= 1.128904\ldots$ (GELU$'' = \phi(t)(2 - t^2)$); SiLU $t_0^2/(4(t_0 - 1 - e^{-t_0})) = "
    r"1.099848\ldots$ at $t_0 = 12/5$ (from $e^x \ge 1 + x$).",
    (
        "each activation (named by its torch class) is the continuous function t ↦ φ(t) listed, "
        "C¹ away from 0 (ReLU has its kink at 0)",
    ),
    ("calculus: the mean value theorem", "Horn & Johnson, Matrix Analysis, §7.3"),
    _check_r2,
    goal=_r2_goal,
    assumptions=tuple(
        Pred("activation_C1_off_0", (sp.Symbol(k.__name__), _t2, f))
        for k, f in _ACTIVATIONS.items()
    ),
    variants=(
        Variant("every table entry divided by 100", patch=lambda: _slopes_scaled(0.01)),
        Variant(
            "GELU's slope bound 1 (as for ReLU)",
            patch=lambda: _slopes_scaled(1 / 1.1290, (nn.GELU,)),
        ),
        Variant(
            "SiLU's slope bound 1.0998 (just under sup |SiLU′| = 1.099839…)",
            patch=lambda: _slopes_scaled(1.0998 / 1.0999, (nn.SiLU,)),
        ),
        Variant("sigmoid's slope bound 1/5", patch=lambda: _slopes_scaled(0.8, (nn.Sigmoid,))),
        Variant("without ReLU's regularity (a kink at 0 only)", drop=(0,)),
    ),
)
def r2(d: Derivation) -> None:
    for kind, bound_of in _SLOPE_PROOFS.items():
        # each activation in its own block: its facts stay local (and sympy's work small)
        c = _block(
            d,
            f"{kind.__name__}: Lip ≤ sup |φ′|",
            lambda sub, k=kind, b=bound_of: _slope_fact(sub, k, b),
        )
        lip = sp.Le(Lip(_act_map(kind)), c)
        slope = sp.sympify(ACTIVATION_SLOPES[kind])
        le = _constant_le(d, c, slope, f"{kind.__name__}: {c} ≤ the table's entry {slope}")
        d.chain([lip, le], f"{kind.__name__}: Lip ≤ ACTIVATION_SLOPES[{kind.__name__}]")


def _block(d: Derivation, name: str, fn: Any) -> Any:
    """Run ``fn`` on a sub-derivation (a single case under no condition) and bring back the fact it
    returns: the block's intermediate facts stay local. Returns the fact's right-hand side."""
    sub = d.case(sp.true)
    sub.claim = f"{d.claim} [{name}]"
    fact = fn(sub)
    d.cases(fact, [sub], name)
    return fact.rhs


def _slope_fact(d: Derivation, kind: type, bound_of: Any) -> Any:
    """Derive |φ′(±v)| ≤ c (``bound_of(d)`` returns c) and apply the elementwise lemma."""
    c = bound_of(d)
    mapping = {"name": sp.Symbol(kind.__name__), "phi": _ACTIVATIONS[kind], "t": _t2, "v": _v2}
    mapping["c"] = c
    # the four slope bounds at ±v, each for every v > 0 (v is free in every assumption)
    return _lemma_forall(d, ELEMENTWISE, f"{kind.__name__}: Lip ≤ {c}", **mapping)


def _slopes_relu(d: Derivation) -> Any:
    # φ′ = 1 for t > 0, 0 for t < 0 (ReLU), 1 (identity): sympy decides these outright
    del d
    return sp.Integer(1)


def _slopes_tanh(d: Derivation) -> Any:
    for x in (_v2, -_v2):  # tanh′ = 1 − tanh² = 1/cosh²
        e = _slope(nn.Tanh, x)
        _bounded(d, e, 1, f"tanh′({x}) = 1 − tanh²", hi=sp.tanh(x) ** 2, lo=1 + 1 / sp.cosh(x) ** 2)
    return sp.Integer(1)


def _slopes_softplus(d: Derivation) -> Any:
    for x in (_v2, -_v2):  # softplus′ = σ ∈ (0, 1)
        e = _slope(nn.Softplus, x)
        _bounded(d, e, 1, f"softplus′({x}) = σ({x})", hi=1 / (1 + sp.exp(x)), lo=1 + e)
    return sp.Integer(1)


def _slopes_sigmoid(d: Derivation) -> Any:
    quarter = sp.Rational(1, 4)
    for x in (_v2, -_v2):  # σ′ = σ(1 − σ) = 1/4 − (σ − 1/2)²
        e = _slope(nn.Sigmoid, x)
        cert = (_sig2.subs(_t2, x) - sp.Rational(1, 2)) ** 2
        _bounded(d, e, quarter, f"σ′({x}) = 1/4 − (σ − 1/2)²", hi=cert, lo=quarter + e)
    return quarter


def _slopes_gelu(d: Derivation) -> Any:
    # GELU″ = φ(v)(√2 + v)(√2 − v) on v > 0: the slope peaks at v = √2
    v = _v2
    g1 = _slope(nn.GELU, v)
    phi = sp.exp(-(v**2) / 2) / sp.sqrt(2 * sp.pi)
    d.identity(sp.diff(g1, v), phi * (sp.sqrt(2) + v) * (sp.sqrt(2) - v), "GELU″ = φ(v)(2 − v²)")
    d.inequality(0, phi * (sp.sqrt(2) + v), "φ(v)(√2 + v) > 0", strict=True)
    _lemma_forall(
        d, PEAK, "GELU′(v) ≤ GELU′(√2)", g=g1, v=v, v_0=sp.sqrt(2), p=phi * (sp.sqrt(2) + v)
    )
    top = _slope(nn.GELU, sp.sqrt(2))
    d.inequality(-top, g1, "GELU′(v) = Φ(v) + vφ(v) ≥ 0", by=top + _Phi2.subs(_t2, v) + v * phi)
    d.inequality(
        _slope(nn.GELU, -v),
        top,
        "GELU′(−v) = Φ(−v) − vφ(v) ≤ 1/2 ≤ GELU′(√2)",
        by=(top - sp.Rational(1, 2)) + sp.erf(v / sp.sqrt(2)) / 2 + v * phi,
    )
    _mirror_lower(d, nn.GELU, top)
    return top


def _slopes_silu(d: Derivation) -> Any:
    # a closed-form bound from eˣ ≥ 1 + x on v > 0; the mirror identity on v < 0
    v = _v2
    t0 = sp.Rational(12, 5)
    M = t0**2 / (4 * (t0 - 1 - sp.exp(-t0)))
    _silu_upper(d, v)
    s_v, s_m = _sig2.subs(_t2, v), _sig2.subs(_t2, -v)
    below1 = d.inequality(
        _slope(nn.SiLU, -v), 1, "SiLU′(−v) = σ(−v) − vσ(−v)σ(v) ≤ 1", by=s_v + v * s_m * s_v
    )
    one = _constant_le(d, sp.Integer(1), M, "1 ≤ t0²/(4A)")
    d.chain([below1, one], "SiLU′(−v) ≤ t0²/(4A)")
    d.inequality(
        -M,
        _slope(nn.SiLU, v),
        "SiLU′(v) = σ + vσ′ ≥ 0",
        by=M + s_v + v * sp.exp(-v) / (1 + sp.exp(-v)) ** 2,
    )
    _mirror_lower(d, nn.SiLU, M)
    return M


#: how each activation's slope bound is derived
_SLOPE_PROOFS: dict[type, Any] = {
    nn.ReLU: _slopes_relu,
    nn.Tanh: _slopes_tanh,
    nn.Softplus: _slopes_softplus,
    nn.Identity: _slopes_relu,
    nn.Sigmoid: _slopes_sigmoid,
    nn.GELU: _slopes_gelu,
    nn.SiLU: _slopes_silu,
}


# ---------------------------------------------------------------------- R3 residual
def _check_r3(seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, recall="none", norm="none", seed=seed)
    system = dy.LoopedSystem.from_module(model, torch.randn(1, 4, 8))
    dom = dy.Domain.ball(2.0)
    up = dy.lipschitz_upper_bound(system, dom)
    steps = [s for s in up.steps if s.rule.startswith("residual")]
    low = dy.lipschitz_lower_bound(
        system, dom.sample(system, 8, seed=seed), method="ascent", steps=10, domain=dom
    ).value
    ok = low <= up.value and all(s.factor >= 1 for s in steps)
    return CheckResult(
        "R3",
        ok,
        f"residual blocks bounded by 1 + L each; block bound {up.value:.4g} >= ascent {low:.4g}",
        {"upper": up.value, "lower": low},
    )


_F = sp.Symbol("F")
_LF = sp.Symbol("L_F", nonnegative=True)
_h, _Fh = sp.symbols("h F_h")  # a token of the input and the branch's output on it
_uh, _uF, _lh = sp.symbols("u_h u_F ell_h", nonnegative=True)


def _r3_goal() -> tuple[Any, ...]:
    return (
        sp.Le(Lip(add(_id, _F)), formulas.residual(_LF)),
        sp.Le(norm(_h + _Fh), _uh + _uF),
        sp.Le(sp.Max(0, _lh - _uF), norm(_h + _Fh)),
    )


@claim(
    "R3",
    "Rule: a residual connection adds 1 to the branch's constant",
    r"If $\mathrm{Lip}(F) \le L_F$ then $\mathrm{Lip}(h \mapsto h + F(h)) \le 1 + L_F$ (the "
    r"factor dynamo's residual rule evaluates); and a token with $\ell_h \le \lVert h\rVert \le "
    r"u_h$, $\lVert F(h)\rVert \le u_F$ has $\max(0, \ell_h - u_F) \le \lVert h + F(h)\rVert "
    r"\le u_h + u_F$ (the norm interval dynamo propagates).",
    ("Lip(F) ≤ L_F", "ℓ_h ≤ ‖h‖ ≤ u_h and ‖F(h)‖ ≤ u_F for the token norms"),
    ("triangle inequality",),
    _check_r3,
    goal=_r3_goal,
    assumptions=(
        sp.Le(Lip(_F), _LF),
        sp.Le(norm(_h), _uh),
        sp.Le(_lh, norm(_h)),
        sp.Le(norm(_Fh), _uF),
    ),
    variants=(
        Variant(
            "Lip ≤ L_F (the skip connection forgotten)",
            goal=(sp.Le(Lip(add(_id, _F)), _LF),),
        ),
        Variant("ℓ' = ℓ_h (the branch cannot lower a norm)", goal=(sp.Le(_lh, norm(_h + _Fh)),)),
        Variant("without Lip(F) ≤ L_F", drop=(0,)),
        Variant(
            "dynamo's residual factor divided by 100", patch=lambda: code_scaled("residual", 0.01)
        ),
    ),
)
def r3(d: Derivation) -> None:
    d.lemma(IDENTITY_LIP, "the skip path")
    lip = d.lemma(LIP_SUM, "identity plus branch", f=_id, g=_F, L_f=1, L_g=_LF)
    d.weaken(lip, formulas.residual(_LF), "dynamo's factor (lipschitz_formulas.residual)")
    # the token-norm interval
    tri = d.lemma(TRIANGLE, "‖h + F(h)‖ ≤ ‖h‖ + ‖F(h)‖", u=_h, v=_Fh)
    both = d.lemma(ORDER_ADD, "‖h‖ + ‖F(h)‖ ≤ u_h + u_F", a=norm(_h), b=_uh, c=norm(_Fh), e=_uF)
    d.chain([tri, both], "u' = u_h + u_F")
    rev = d.lemma(REVERSE_TRIANGLE, "‖h‖ − ‖F(h)‖ ≤ ‖h + F(h)‖", a=_h, b=_Fh)
    sub = d.lemma(ORDER_SUB, "ℓ_h − u_F ≤ ‖h‖ − ‖F(h)‖", a=_lh, b=norm(_h), c=norm(_Fh), e=_uF)
    d.chain([sub, rev], "ℓ_h − u_F ≤ ‖h + F(h)‖")
    d.lemma(MAX_BELOW, "ℓ' = max(0, ℓ_h − u_F) (norms are ≥ 0)", a=0, b=_lh - _uF, N=norm(_h + _Fh))


# ---------------------------------------------------------------------- R4 concat recall
def _check_r4(seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=8, n_heads=2, recall="outer", norm="pre", seed=seed
    )  # a pre-norm in front of the first attention: the adapter's step stands alone (no R16 fold)
    w = model.adapter.weight.detach().double()  # type: ignore[union-attr]
    up = dy.lipschitz_upper_bound(model, dy.Domain.ball(1.0, x_max=1.0, n_tokens=4))
    factor = next(s.factor for s in up.steps if s.where == "adapter (outer recall)")
    exact = float(torch.linalg.matrix_norm(w[:, :8], ord=2))
    ok = abs(factor - exact) <= 1e-12 * exact
    return CheckResult(
        "R4",
        ok,
        f"adapter factor {factor:.6g} = σ_max(W_s) {exact:.6g}",
        {"factor": factor, "sigma_max_Ws": exact},
    )


_Ws, _We, _hh, _h2, _ee, _bb = sp.symbols("W_s W_e h h' e b", commutative=False)
_R4_MAP = sp.Symbol("f_recall")  # the map h ↦ W_s h + W_e e + b


def _r4_goal() -> tuple[Any, ...]:
    return (sp.Le(Lip(_R4_MAP), formulas.concat_state(sigma_max(_Ws))),)


@claim(
    "R4",
    "Rule: concat recall contributes σ_max of its state block",
    r"$\mathrm{Linear}([h; e]) = W[h; e] + b = W_s h + W_e e + b$ (block product, any sizes) "
    r"has Lipschitz constant at most $\sigma_{\max}(W_s)$ in $h$ for a fixed input $e$: the "
    r"factor dynamo's concat-recall rule evaluates.",
    ("the input e is held fixed: f_recall is h ↦ W_s h + W_e e + b",),
    ("linear algebra",),
    _check_r4,
    goal=_r4_goal,
    assumptions=(Pred("map", (_R4_MAP, _hh, _Ws * _hh + _We * _ee + _bb)),),
    variants=(
        Variant(
            "the constant σ_max(W_e) of the input block",
            goal=(sp.Le(Lip(_R4_MAP), sigma_max(_We)),),
        ),
        Variant(
            "the input block's differences in place of the state's", overrides={"block": "input"}
        ),
        Variant(
            "dynamo's concat factor divided by 100", patch=lambda: code_scaled("concat_state", 0.01)
        ),
    ),
)
def r4(d: Derivation, block: str = "state") -> None:
    # the block product entry by entry, for any sizes n (state) and k (input)
    n, k = sp.symbols("n k", positive=True, integer=True)
    i, j = sp.symbols("i j", integer=True)
    W, z = sp.IndexedBase("W"), sp.IndexedBase("z")  # W = [W_s W_e], z = [h; e]
    d.identity(
        sp.Sum(W[i, j] * z[j], (j, 1, n + k)),
        sp.Sum(W[i, j] * z[j], (j, 1, n)) + sp.Sum(W[i, j] * z[j], (j, n + 1, n + k)),
        "(W[h; e])_i = (W_s h)_i + (W_e e)_i: columns 1..n meet h, n+1..n+k meet e",
    )
    fx = _Ws * _hh + _We * _ee + _bb
    K = _Ws if block == "state" else _We
    d.identity(fx - fx.subs(_hh, _h2), _Ws * (_hh - _h2), "e and b cancel in differences in h")
    lip = _lemma_forall(d, AFFINE_LIP, "affine in h", f=_R4_MAP, x=_hh, y=_h2, f_x=fx, K=K)
    sig = d.lemma(SPECTRAL, "‖W_s‖₂ = σ_max(W_s)", A=_Ws)
    fact = d.chain([lip, sig], "Lip in h ≤ σ_max(W_s)")
    d.weaken(fact, formulas.concat_state(sigma_max(_Ws)), "dynamo's factor (concat_state)")


# ---------------------------------------------------------------------- R5 RMSNorm
def _check_r5(d: int = 6, seed: int = 0) -> CheckResult:
    out = _sound("R5", dy.models.ZeroBranchRMSNorm(d=d), dy.Domain.shell(1.5, 4.0), (d,), seed=seed)
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=d))
    at_inner = dy.lipschitz_lower_bound(system, dy.Domain.sphere(1.5).sample(system, 4)).value
    tight = abs(at_inner - math.sqrt(d) / 1.5) <= 1e-10
    return CheckResult(
        "R5",
        out.ok and tight,
        out.message + f"; attained on the inner sphere: {at_inner:.10f} = √d/r_min",
        {**out.numbers, "attained": at_inner},
    )


_dd = sp.Symbol("d", positive=True, integer=True)
_gamma = sp.Symbol("gamma", commutative=False)
_Ed, _z, _z2 = sp.symbols("E z z'", commutative=False)  # E = [I_d 0]: drop the last coordinate
_rho5 = sp.Symbol("rho", nonnegative=True)
_eps5 = sp.Symbol("epsilon", nonnegative=True)
_GMAX = maxabs(_gamma)


_READOUT = sp.Symbol("R_gamma")  # the map z ↦ √d diag(γ) E z
_READOUT_DEF = Pred("map", (_READOUT, _z, sp.sqrt(_dd) * diag(_gamma) * _Ed * _z))


def _rms_map(eps: Any) -> Any:
    """RMSNorm x ↦ γ ⊙ √d x/√(‖x‖² + dε) = (z ↦ √d diag(γ) E z) ∘ (z ↦ z/‖z‖) ∘ (x ↦ (x, √(dε)))."""
    return compose(_READOUT, compose(_radial, lift(sp.sqrt(_dd * eps))))


def _rms(d: Derivation, rho: Any, eps: Any, *, floor: bool = True) -> Any:
    """Lip(RMSNorm on {‖x‖ ≥ ρ}) ≤ max|γ| √d/√(ρ² + dε), weakened to dynamo's rmsnorm()."""
    al, be, ka = sp.symbols("alpha beta kappa", nonnegative=True)
    s = sp.sqrt(_dd * eps)
    rt = sp.sqrt(rho**2 + _dd * eps)
    # ε as an extra coordinate: ‖x̃‖² = ‖x‖² + dε ≥ ρ² + dε when ‖x‖ = ρ + α
    norm_x = rho + al if floor else al  # floor=False: no lower bound on ‖x‖
    d.inequality(
        rho**2 + _dd * eps,
        norm_x**2 + _dd * eps,
        "‖x̃‖² = ‖x‖² + dε ≥ ρ² + dε",
        by=al * (2 * rho + al),
    )
    _lemma_forall(d, LIFT, "x ↦ x̃ = (x, √(dε))", rho=rho, s=s, alpha=norm_x - rho)
    # radial projection: the law-of-cosines identity and its sign for a, b ≥ ρ̃, cos θ ≤ 1
    a, b, c = sp.symbols("a b c", real=True)
    d.identity(
        a**2 + b**2 - 2 * a * b * c - rt**2 * (2 - 2 * c),
        (a - b) ** 2 + (a * b - rt**2) * (2 - 2 * c),
        "‖x − y‖² − ρ̃²‖x̂ − ŷ‖² = (a − b)² + (ab − ρ̃²)(2 − 2 cos θ)",
    )
    ra, rb, rc = rt + al, rt + be, 1 - ka
    d.inequality(
        rt**2 * (2 - 2 * rc),
        ra**2 + rb**2 - 2 * ra * rb * rc,
        "≥ 0 for a = ρ̃ + α, b = ρ̃ + β, cos θ = 1 − κ (α, β, κ ≥ 0)",
        by=(al - be) ** 2 + 2 * ka * (rt * al + rt * be + al * be),
    )
    # 1/ρ̃ > 0, the bound the composition lemmas take as a nonnegative constant
    d.lemma(RECIP_SQRT, "1/ρ̃ > 0 (ρ̃² = ρ² + dε > 0)", a=rt**2)
    _lemma_forall(d, RADIAL, "z ↦ z/‖z‖ on {‖z‖ ≥ ρ̃}", rho=rt, alpha=al, beta=be, kappa=ka)
    inner = d.lemma(
        COMPOSE_INTO,
        "normalise the lifted token",
        f=lift(s),
        g=_radial,
        S=shell(rho),
        S_2=shell(rt),
        L_f=1,
        L_g=1 / rt,
    )
    # the read-out z ↦ √d diag(γ) E z
    D = diag(_gamma)
    d.lemma(DIAG_NORM, "‖diag(γ)‖₂ = max|γ|", gamma=_gamma)
    d.lemma(COORD_PROJ, "‖E‖₂ ≤ 1", E=_Ed)
    sub = d.lemma(SUBMULTIPLICATIVE, "‖diag(γ)E‖₂ ≤ ‖diag(γ)‖₂‖E‖₂", A=D, B=_Ed)
    mul = d.lemma(ORDER_MUL, "≤ max|γ|·1", a=opnorm(D), b=_GMAX, c=opnorm(_Ed), e=1)
    d.chain([sub, mul], "‖diag(γ)E‖₂ ≤ max|γ|")
    hom = d.lemma(HOMOGENEITY, "‖√d diag(γ)E‖₂ ≤ √d max|γ|", A=D * _Ed, c=sp.sqrt(_dd), a=_GMAX)
    K = sp.sqrt(_dd) * D * _Ed
    d.identity(K * _z - K * _z2, K * (_z - _z2), "the read-out's differences")
    aff = _lemma_forall(
        d, AFFINE_LIP, "the read-out is linear", f=_READOUT, x=_z, y=_z2, f_x=K * _z, K=K
    )
    d.chain([aff, hom], "Lip(read-out) ≤ √d max|γ|")
    readout = _READOUT
    whole = d.lemma(
        COMPOSE_AFTER,
        "RMSNorm = read-out ∘ normalise ∘ lift",
        f=inner.lhs.args[0],
        g=readout,
        S=shell(rho),
        L_f=1 / rt,
        L_g=sp.sqrt(_dd) * _GMAX,
    )
    return d.weaken(
        whole,
        formulas.rmsnorm(_GMAX, _dd, rho, eps, sqrt=sp.sqrt),
        "dynamo's factor (lipschitz_formulas.rmsnorm)",
    )


def _r5_goal() -> tuple[Any, ...]:
    bound = formulas.rmsnorm(_GMAX, _dd, _rho5, _eps5, sqrt=sp.sqrt)
    return (sp.Le(Lip(_rms_map(_eps5), shell(_rho5)), bound),)


@claim(
    "R5",
    "Rule: RMSNorm away from zero has constant max|γ|√d/√(ρ² + dε)",
    r"On $\{\lVert x\rVert \ge \rho\}$ with $\rho^2 + d\varepsilon > 0$, RMSNorm $x \mapsto "
    r"\gamma \odot \sqrt d\,x/\sqrt{\lVert x\rVert^2 + d\varepsilon}$ (read-out $\circ$ radial "
    r"projection $\circ$ $x \mapsto (x, \sqrt{d\varepsilon})$) has $\mathrm{Lip} \le "
    r"\max|\gamma|\sqrt d/\sqrt{\rho^2 + d\varepsilon}$, because radial projection onto a ball of "
    r"radius $\tilde\rho$ is $1/\tilde\rho$-Lipschitz outside it: $\lVert x - y\rVert^2 - "
    r"\tilde\rho^2\lVert \hat x - \hat y\rVert^2 = (a - b)^2 + (ab - \tilde\rho^2)(2 - 2\cos\theta) "
    r"\ge 0$ for $a, b \ge \tilde\rho$.",
    (
        "token norms ≥ ρ at the norm's input",
        "ρ² + dε > 0",
        "E = [I_d 0] drops the extra coordinate; R_gamma is z ↦ √d diag(γ) E z",
    ),
    ("SCIENCE.md C4, C14", "the law of cosines"),
    _check_r5,
    goal=_r5_goal,
    assumptions=(
        sp.Gt(_rho5**2 + _dd * _eps5, 0),
        Pred("coordinate_projection", (_Ed,)),
        _READOUT_DEF,
    ),
    variants=(
        Variant(
            "the bound max|γ|/√(ρ² + dε) (without √d)",
            goal=(
                sp.Le(Lip(_rms_map(_eps5), shell(_rho5)), _GMAX / sp.sqrt(_rho5**2 + _dd * _eps5)),
            ),
        ),
        Variant("without ‖x‖ ≥ ρ", overrides={"floor": False}),
        Variant("without ρ² + dε > 0", drop=(0,)),
        Variant("dynamo's norm factor divided by 100", patch=lambda: code_scaled("rmsnorm", 0.01)),
    ),
)
def r5(d: Derivation, floor: bool = True) -> None:
    _rms(d, _rho5, _eps5, floor=floor)


# ---------------------------------------------------------------------- R6 LayerNorm
def _check_r6(eps: float = 1e-4, d: int = 6, seed: int = 0) -> CheckResult:
    return _sound("R6", nn.LayerNorm(d, eps=eps), dy.Domain(), (d,), seed=seed)


_eps6 = sp.Symbol("epsilon", positive=True)
_one, _oneT, _x6, _y6 = sp.symbols("1_d 1_d^T x y", commutative=False)
_CENTRE = 1 - _one * _oneT / _dd  # P = I − 1 1ᵀ/d
_CENTRE_MAP = sp.Symbol("P_c")  # the map x ↦ P x


def _r6_goal() -> tuple[Any, ...]:
    bound = formulas.rmsnorm(_GMAX, _dd, 0, _eps6, sqrt=sp.sqrt)
    return (sp.Le(Lip(compose(_rms_map(_eps6), _CENTRE_MAP)), bound),)


@claim(
    "R6",
    "Rule: LayerNorm has constant max|γ|/√ε (its centred input can vanish)",
    r"LayerNorm is RMSNorm after centring $P = I - \mathbf 1\mathbf 1^\top/d$ (the bias $\beta$ "
    r"cancels in differences). $P$ is an orthogonal projection ($P^2 = P$), so "
    r"$\mathrm{Lip}(P) \le 1$, and its image contains $0$ whatever $\lVert x\rVert$ is, so R5 "
    r"applies with $\rho = 0$: $\mathrm{Lip} \le \max|\gamma|\sqrt d/\sqrt{d\varepsilon} = "
    r"\max|\gamma|/\sqrt\varepsilon$ (claim C5), the factor dynamo evaluates.",
    (
        "ε > 0",
        "1ᵀ1 = d",
        "E = [I_d 0] drops the extra coordinate; R_gamma is z ↦ √d diag(γ) E z",
        "P_c is x ↦ (I − 11ᵀ/d) x",
    ),
    ("SCIENCE.md C5",),
    _check_r6,
    goal=_r6_goal,
    assumptions=(
        sp.Eq(_oneT * _one, _dd),
        Pred("coordinate_projection", (_Ed,)),
        _READOUT_DEF,
        Pred("map", (_CENTRE_MAP, _x6, _CENTRE * _x6)),
    ),
    variants=(
        Variant(
            "the RMSNorm bound with ρ = 1 (as if centred tokens kept norm ≥ 1)",
            goal=(
                sp.Le(
                    Lip(compose(_rms_map(_eps6), _CENTRE_MAP)),
                    _GMAX * sp.sqrt(_dd) / sp.sqrt(1 + _dd * _eps6),
                ),
            ),
        ),
        Variant("without 1ᵀ1 = d", drop=(0,)),
        Variant("dynamo's norm factor divided by 100", patch=lambda: code_scaled("rmsnorm", 0.01)),
    ),
    uses=("R5", "C5"),
)
def r6(d: Derivation) -> None:
    P = _CENTRE
    d.identity(
        P * P - P,
        _one * (_oneT * _one - _dd) * _oneT / _dd**2,
        "P² − P = 1(1ᵀ1 − d)1ᵀ/d²",
    )
    d.lemma(ORTHO_PROJ, "P is an orthogonal projection", P=P, u=_one, uT=_oneT, s=_dd)
    d.identity(P * _x6 - P * _y6, P * (_x6 - _y6), "centring's differences")
    aff = _lemma_forall(
        d, AFFINE_LIP, "centring is linear", f=_CENTRE_MAP, x=_x6, y=_y6, f_x=P * _x6, K=P
    )
    d.chain([aff, sp.Le(opnorm(P), 1)], "Lip(P) ≤ 1")
    # why ρ = 0: a constant token c·1 centres to 0 whatever its norm √d|c|
    i = sp.Symbol("i", integer=True)
    cc = sp.Symbol("c", real=True)
    d.identity(cc - sp.Sum(cc, (i, 1, _dd)) / _dd, 0, "(P c1)_i = c − (1/d)Σ_k c = 0")
    rms = _rms(d, sp.Integer(0), _eps6)
    glob = d.lemma(WHOLE_SPACE, "{‖x‖ ≥ 0} is every input", f=rms.lhs.args[0], L=rms.rhs)
    d.lemma(
        LIP_COMPOSITION,
        "RMSNorm after centring",
        f=_CENTRE_MAP,
        g=rms.lhs.args[0],
        L_f=1,
        L_g=glob.rhs,
    )


# ---------------------------------------------------------------------- R8 composition
def _check_r8(seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    block = nn.Sequential(nn.Linear(6, 9), nn.GELU(), nn.Linear(9, 6), nn.Tanh())
    return _sound("R8", block, dy.Domain(), (6,), seed=seed)


# ---------------------------------------------------------------------- R8 composition
_f, _g = sp.symbols("f g")
_Lf, _Lg = sp.symbols("L_f L_g", nonnegative=True)


def _r8_goal() -> tuple[Any, ...]:
    # the statement's bound is what dynamo's code computes for a composition
    return (sp.Le(Lip(compose(_g, _f)), formulas.compose(_Lf, _Lg)),)


@claim(
    "R8",
    "Rule: compositions multiply constants; intervals travel with them",
    r"$\mathrm{Lip}(g \circ f) \le \mathrm{Lip}(g)\,\mathrm{Lip}(f)$, provided each rule's domain "
    r"contains the image of the previous layer: dynamo propagates a sound interval for every "
    r"token's norm from layer to layer.",
    ("each layer's rule holds on the previous layer's image",),
    ("chain rule",),
    _check_r8,
    goal=_r8_goal,
    assumptions=(sp.Le(Lip(_f), _Lf), sp.Le(Lip(_g), _Lg)),
    variants=(
        Variant(
            "the bound L_f + L_g of a sum instead of the product",
            goal=(sp.Le(Lip(compose(_g, _f)), _Lf + _Lg),),
        ),
        Variant("without the hypothesis on g", drop=(1,)),
        Variant("dynamo's composition divided by 100", patch=lambda: code_scaled("compose", 0.01)),
    ),
)
def r8(d: Derivation) -> None:
    fact = d.lemma(
        LIP_COMPOSITION, "g ∘ f is Lipschitz with the product", f=_f, g=_g, L_f=_Lf, L_g=_Lg
    )
    d.weaken(fact, formulas.compose(_Lf, _Lg), "dynamo's composition (lipschitz_formulas.compose)")
