"""R9: the Lipschitz rules of dynamo's polynomial reference maps (logistic, Hénon, bistable) on a
ball, derived from each map's derivative (differentiated by sympy from the map's definition),
bounded for every point of the ball (``Derivation.generalize`` over generic parameters of the
ball), and the mean value inequality; about the closed forms the rule evaluates
(``lipschitz_formulas.logistic``, ``henon``, ``bistable``)."""

from __future__ import annotations

from typing import Any

import sympy as sp
import torch

import dynamo as dy
from dynamo.kernel import lipschitz_formulas as formulas

from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import MEAN_VALUE, Lip, at, opnorm
from ._logic import Derivation, Pred, lemma

F64 = torch.float64

_R = sp.Symbol("R", positive=True)
#: generic parameters of the ball: t = u − R covers t ≥ −R, t = R − v covers t ≤ R; a coordinate
#: with x² ≤ R² is x = ±√(R² − w); t² ∈ [0, R²] is s ≥ 0 and s = R² − w
_u, _v, _w, _s = sp.symbols("u v w s", nonnegative=True)
_r, _eta = sp.symbols("r eta", positive=True)
_a, _b = sp.symbols("a b", real=True)
_t, _x, _y = sp.symbols("t x y", real=True)
_f_log, _f_hen, _f_bis = sp.symbols("logistic henon bistable")
ball = sp.Function("ball")  # ball(R): the closed ball of radius R of the state space


class slope_at(sp.Function):
    """``φ′(point)`` for ``φ = expr`` in the variable ``var``: evaluated once ``expr`` is an
    explicit expression (so a lemma instantiated with a map's definition differentiates it)."""

    @classmethod
    def eval(cls, expr: Any, var: Any, point: Any) -> Any:
        if isinstance(expr, sp.Symbol) or not isinstance(var, sp.Symbol):
            return None
        return sp.diff(expr, var).subs(var, point)


class jacobian_at(sp.Function):
    """The Jacobian of the explicit vector map ``expr`` (a column) in ``(x, y)`` at ``x = xx``."""

    @classmethod
    def eval(cls, expr: Any, x: Any, y: Any, xx: Any) -> Any:
        if not isinstance(expr, sp.MatrixBase):
            return None
        return sp.ImmutableMatrix(sp.Matrix(expr).jacobian([x, y]).subs(x, xx))


class jacobian_dy(sp.Function):
    """The derivative in ``y`` of the Jacobian of the explicit vector map ``expr``."""

    @classmethod
    def eval(cls, expr: Any, x: Any, y: Any) -> Any:
        if not isinstance(expr, sp.MatrixBase):
            return None
        return sp.ImmutableMatrix(sp.Matrix(expr).jacobian([x, y]).diff(y))


class frobenius2(sp.Function):
    """``‖A‖_F²``: the sum of the squared entries of an explicit matrix (unevaluated otherwise)."""

    @classmethod
    def eval(cls, a: Any) -> Any:
        if isinstance(a, sp.MatrixBase):
            return sum(e**2 for e in a)
        return None


# lemma variables carry no sign assumptions where the theorem does not need them
_F, _E, _V, _P, _Q, _RR, _BB = sp.symbols("f expr var p q rho B")
_UU, _VV = sp.symbols("u v", nonnegative=True)

SLOPE_ON_INTERVAL = lemma(
    "a slope bound on an interval",
    "If φ is defined by an explicit expression in t and, for every u ≥ 0, φ′(u − ρ) ≤ B and, for "
    "every v ≥ 0, −φ′(ρ − v) ≤ B, then |φ′(t)| ≤ B for every t in [−ρ, ρ], so φ applied "
    "elementwise has ‖Dφ‖₂ ≤ B on the ball of radius ρ (a diagonal Jacobian's norm is its "
    "largest |entry|, and each coordinate of a point of the ball lies in [−ρ, ρ]).",
    ("the definition of the spectral norm; Horn & Johnson, Matrix Analysis, 2nd ed., §5.6",),
    (_F, _E, _V, _RR, _BB, _UU, _VV),
    (
        Pred("map", (_F, _V, _E)),
        Pred("forall", (_UU, sp.Le(slope_at(_E, _V, _UU - _RR), _BB))),
        Pred("forall", (_VV, sp.Le(-slope_at(_E, _V, _RR - _VV), _BB))),
    ),
    (Pred("jacobian_norm_at_most", (_F, ball(_RR), _BB)),),
)

_WW = sp.Symbol("w", nonnegative=True)
_XX, _YY = sp.symbols("x y", real=True)
JACOBIAN_ON_BALL = lemma(
    "a Jacobian bound on the ball (depending on one coordinate)",
    "If f(x, y) is defined by an explicit expression whose Jacobian depends on the point only "
    "through x, and ‖Df‖₂ ≤ B at x = √(ρ² − w) and at x = −√(ρ² − w) for every w ≥ 0, then "
    "‖Df‖₂ ≤ B on the ball of radius ρ (where x² ≤ ρ²).",
    ("the definition of the spectral norm",),
    (_F, _E, _RR, _BB, _WW, _XX, _YY),
    (
        Pred("map2", (_F, _XX, _YY, _E)),
        sp.Eq(jacobian_dy(_E, _XX, _YY), sp.ImmutableMatrix(sp.zeros(2, 2)), evaluate=False),
        Pred(
            "forall",
            (_WW, sp.Le(opnorm(jacobian_at(_E, _XX, _YY, sp.sqrt(_RR**2 - _WW))), _BB)),
        ),
        Pred(
            "forall",
            (_WW, sp.Le(opnorm(jacobian_at(_E, _XX, _YY, -sp.sqrt(_RR**2 - _WW))), _BB)),
        ),
    ),
    (Pred("jacobian_norm_at_most", (_F, ball(_RR), _BB)),),
)

_SS = sp.Symbol("s", nonnegative=True)
SLOPE_OF_SQUARE = lemma(
    "a slope bound through the square of the point",
    "If φ′(t) = g(t²) for an explicit g and, for every s ≥ 0, g(s) ≤ B and, for every w ≥ 0, "
    "−g(ρ² − w) ≤ B, then |φ′(t)| ≤ B for every t in [−ρ, ρ] (t² lies in [0, ρ²]), so φ "
    "elementwise has ‖Dφ‖₂ ≤ B on the ball of radius ρ.",
    ("the definition of the spectral norm; Horn & Johnson, Matrix Analysis, 2nd ed., §5.6",),
    (_F, _E, _V, _P, _RR, _BB, _SS, _WW),
    (
        Pred("map", (_F, _V, _E)),
        sp.Eq(slope_at(_E, _V, _V), at(_P, _SS, _V**2), evaluate=False),
        Pred("forall", (_SS, sp.Le(_P, _BB))),
        Pred("forall", (_WW, sp.Le(-at(_P, _SS, _RR**2 - _WW), _BB))),
    ),
    (Pred("jacobian_norm_at_most", (_F, ball(_RR), _BB)),),
)

_A, _F2, _N, _B = sp.symbols("A F2 N B")
SPECTRAL_FROBENIUS = lemma(
    "spectral norm at most Frobenius",
    "‖A‖₂² ≤ ‖A‖_F² = Σ_ij a_ij² for every matrix A.",
    ("Horn & Johnson, Matrix Analysis, 2nd ed., 2013, §5.6 (5.6.P20)",),
    (_A, _F2),
    (sp.Eq(_F2, frobenius2(_A)),),
    (sp.Le(opnorm(_A) ** 2, _F2),),
)

FROM_SQUARES = lemma(
    "comparison of squares",
    "If N ≥ 0, B ≥ 0 and N² ≤ B², then N ≤ B.",
    ("order properties of the real numbers",),
    (_N, _B),
    (sp.Le(0, _N), sp.Le(0, _B), sp.Le(_N**2, _B**2)),
    (sp.Le(_N, _B),),
)

_X1, _Y1 = sp.symbols("x y")
MAX_ABS = lemma(
    "max of absolute values",
    "x ≤ |x| ≤ max(|x|, |y|), −x ≤ |x|, and likewise for y.",
    ("order properties of the real numbers",),
    (_X1, _Y1),
    (),
    (
        sp.Le(_X1, sp.Max(sp.Abs(_X1), sp.Abs(_Y1))),
        sp.Le(-_X1, sp.Max(sp.Abs(_X1), sp.Abs(_Y1))),
        sp.Le(_Y1, sp.Max(sp.Abs(_X1), sp.Abs(_Y1))),
        sp.Le(-_Y1, sp.Max(sp.Abs(_X1), sp.Abs(_Y1))),
    ),
)

#: the maps' definitions, as dynamo's models compute them (dynamo/models/_canonical.py)
LOGISTIC = _r * _t * (1 - _t)
HENON = sp.Matrix([1 - _a * _x**2 + _y, _b * _x])
BISTABLE = _t + _eta * (_t - _t**3)


def _goal() -> tuple[Any, ...]:
    # the bounds are what dynamo's rule evaluates, read at prove time
    return (
        sp.Le(Lip(_f_log, ball(_R)), formulas.logistic(_r, _R)),
        sp.Le(Lip(_f_hen, ball(_R)), formulas.henon(_a, _b, _R, sqrt=sp.sqrt)),
        sp.Le(
            Lip(_f_bis, ball(_R)),
            formulas.bistable(_eta, _R, maximum=sp.Max, absolute=sp.Abs),
        ),
    )


_ASSUMPTIONS = (
    Pred("convex", (ball(_R),)),
    Pred("map", (_f_log, _t, LOGISTIC)),
    Pred("map2", (_f_hen, _x, _y, sp.ImmutableMatrix(HENON))),
    Pred("map", (_f_bis, _t, BISTABLE)),
    Pred("differentiable_on", (_f_log, ball(_R))),
    Pred("differentiable_on", (_f_hen, ball(_R))),
    Pred("differentiable_on", (_f_bis, ball(_R))),
)


def _check_r9(seed: int = 0) -> CheckResult:
    cases = [
        ("Logistic", dy.models.Logistic(r=3.2), (1,)),
        ("Henon", dy.models.Henon(), (2,)),
        ("Bistable", dy.models.Bistable(n=2), (2,)),
    ]
    dom = dy.Domain.ball(1.5)
    numbers: dict[str, Any] = {}
    ok = True
    for name, model, shape in cases:
        system = dy.LoopedSystem.from_module(model, state_shape=shape)
        up = dy.lipschitz_upper_bound(model, dom).value
        low = dy.lipschitz_lower_bound(
            system, dom.sample(system, 16, seed=seed), method="ascent", steps=20, domain=dom
        ).value
        numbers[name] = [up, low]
        ok = ok and low <= up * (1 + 1e-12)
    return CheckResult(
        "R9",
        ok,
        "on the ball of radius 1.5, certified >= largest local ‖J‖₂ found: "
        + ", ".join(f"{k} {u:.5g} >= {lo:.5g}" for k, (u, lo) in numbers.items()),
        numbers,
    )


@claim(
    "R9",
    "Rule: the polynomial reference maps on a ball",
    r"On the ball of radius $R$: the logistic map $h \mapsto r h(1 - h)$ ($r > 0$) has "
    r"$\mathrm{Lip} \le r(1 + 2R)$; the Hénon map $(x, y) \mapsto (1 - a x^2 + y, b x)$ has "
    r"$\mathrm{Lip} \le \sqrt{4a^2R^2 + 1 + b^2}$; the bistable map $h \mapsto h + \eta(h - h^3)$ "
    r"($\eta > 0$, elementwise) has $\mathrm{Lip} \le \max(|1 + \eta|, |1 + \eta - 3\eta R^2|)$.",
    ("states in the ball of radius R (convex)", "r > 0, η > 0", "the maps as defined"),
    ("mean value inequality",),
    _check_r9,
    goal=_goal,
    assumptions=_ASSUMPTIONS,
    variants=(
        Variant("the logistic bound without the factor 2: r(1 + R)", overrides={"two": 1}),
        Variant("a ball that is not convex", drop=(0,)),
        Variant("the Hénon map's definition missing", drop=(2,)),
        Variant("the logistic map r h (1 + h) in place of r h (1 − h)", overrides={"sign": 1}),
        Variant("the logistic rule divided by 100", patch=lambda: code_scaled("logistic", 0.01)),
        Variant("the Hénon rule divided by 100", patch=lambda: code_scaled("henon", 0.01)),
        Variant("the bistable rule divided by 100", patch=lambda: code_scaled("bistable", 0.01)),
    ),
)
def r9(d: Derivation, two: int = 2, sign: int = -1) -> None:
    _logistic(d, two, sign)
    _henon(d)
    _bistable(d)


def _logistic(d: Derivation, two: int, sign: int) -> None:
    # the slope of the map the proof reasons about (the assumption says which map that is; the
    # variant r h (1 + h) reasons about another map, whose slope bound then fails to match)
    expr = _r * _t * (1 + sign * _t)
    bound = _r * (1 + two * _R)
    up = d.inequality(
        slope_at(expr, _t, _u - _R),
        bound,
        "φ′(t) ≤ r(1 + 2R) for t = u − R ≥ −R: the gap is 2r(R + t) = 2ru",
        by=2 * _r * _u,
    )
    low = d.inequality(
        -slope_at(expr, _t, _R - _v),
        bound,
        "−φ′(t) ≤ r(1 + 2R) for t = R − v ≤ R: the gap is 2r(1 + R − t) = 2r(1 + v)",
        by=2 * _r * (1 + _v),
    )
    d.generalize(up, _u, "for every u ≥ 0 (u is free in every assumption)")
    d.generalize(low, _v, "for every v ≥ 0")
    d.lemma(
        SLOPE_ON_INTERVAL,
        "|φ′| ≤ r(1 + 2R) on [−R, R]",
        f=_f_log,
        expr=expr,
        var=_t,
        rho=_R,
        B=bound,
        u=_u,
        v=_v,
    )
    d.lemma(MEAN_VALUE, "the logistic map on the ball", f=_f_log, S=ball(_R), L=bound)
    d.weaken(
        sp.Le(Lip(_f_log, ball(_R)), bound),
        formulas.logistic(_r, _R),
        "dynamo's logistic rule (lipschitz_formulas.logistic)",
    )


def _henon(d: Derivation) -> None:
    expr = sp.ImmutableMatrix(HENON)
    top = 4 * _a**2 * _R**2 + 1 + _b**2
    for sgn, word in ((1, "x = √(R² − w)"), (-1, "x = −√(R² − w)")):
        at = jacobian_at(expr, _x, _y, sgn * sp.sqrt(_R**2 - _w))
        sq = d.lemma(SPECTRAL_FROBENIUS, f"‖J‖₂² ≤ ‖J‖_F² at {word}", A=at, F2=frobenius2(at))
        gap = d.inequality(
            frobenius2(at), top, f"‖J‖_F² ≤ 4a²R² + 1 + b² at {word}", by=4 * _a**2 * _w
        )
        both = d.chain([sq, gap], f"‖J‖₂² ≤ 4a²R² + 1 + b² at {word}")
        norm_j = d.lemma(
            FROM_SQUARES, f"‖J‖₂ ≤ √(4a²R² + 1 + b²) at {word}", N=opnorm(at), B=sp.sqrt(top)
        )
        del both
        d.generalize(norm_j, _w, "for every w ≥ 0")
    d.lemma(
        JACOBIAN_ON_BALL,
        "‖J‖₂ ≤ √(4a²R² + 1 + b²) on the ball",
        f=_f_hen,
        expr=expr,
        rho=_R,
        B=sp.sqrt(top),
        w=_w,
        x=_x,
        y=_y,
    )
    d.lemma(MEAN_VALUE, "the Hénon map on the ball", f=_f_hen, S=ball(_R), L=sp.sqrt(top))
    d.weaken(
        sp.Le(Lip(_f_hen, ball(_R)), sp.sqrt(top)),
        formulas.henon(_a, _b, _R, sqrt=sp.sqrt),
        "dynamo's Hénon rule (lipschitz_formulas.henon)",
    )


def _bistable(d: Derivation) -> None:
    expr = BISTABLE
    in_square = 1 + _eta * (1 - 3 * _s)  # φ′(t) as a function of s = t²
    hi, lo = 1 + _eta, 1 + _eta - 3 * _eta * _R**2
    cap = sp.Max(sp.Abs(hi), sp.Abs(lo))
    d.lemma(MAX_ABS, "both ends are at most max(|1 + η|, |1 + η − 3ηR²|)", x=hi, y=lo)
    up = d.inequality(in_square, hi, "φ′ ≤ 1 + η for t² = s ≥ 0", by=3 * _eta * _s)
    low_at = -in_square.subs(_s, _R**2 - _w)
    low = d.inequality(low_at, -lo, "−φ′ ≤ −(1 + η − 3ηR²) for t² = R² − w ≤ R²", by=3 * _eta * _w)
    upper = d.chain([up, sp.Le(hi, cap)], "φ′ ≤ max(|1 + η|, |1 + η − 3ηR²|)")
    lower = d.chain([low, sp.Le(-lo, cap)], "−φ′ ≤ max(|1 + η|, |1 + η − 3ηR²|)")
    d.generalize(upper, _s, "for every s ≥ 0")
    d.generalize(lower, _w, "for every w ≥ 0")
    d.lemma(
        SLOPE_OF_SQUARE,
        "|φ′| ≤ max(|1 + η|, |1 + η − 3ηR²|) on [−R, R]",
        f=_f_bis,
        expr=expr,
        var=_t,
        p=in_square,
        rho=_R,
        B=cap,
        s=_s,
        w=_w,
    )
    d.lemma(MEAN_VALUE, "the bistable map on the ball", f=_f_bis, S=ball(_R), L=cap)
    d.weaken(
        sp.Le(Lip(_f_bis, ball(_R)), cap),
        formulas.bistable(_eta, _R, maximum=sp.Max, absolute=sp.Abs),
        "dynamo's bistable rule (lipschitz_formulas.bistable)",
    )
