"""R9: the Lipschitz rules of dynamo's polynomial reference maps (logistic, Hénon, bistable) on a
ball, derived from each map's Jacobian at a generic point of the ball and the mean value
inequality, about the closed forms the rule evaluates (``lipschitz_formulas.logistic``,
``henon``, ``bistable``)."""

from __future__ import annotations

from typing import Any

import sympy as sp
import torch

import dynamo as dy
from dynamo.kernel import lipschitz_formulas as formulas

from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import MEAN_VALUE, Lip, opnorm
from ._logic import Derivation, Pred, lemma

F64 = torch.float64

# generic points: t ≥ −R is t = u − R, t ≤ R is t = R − v (u, v ≥ 0); x² ≤ R² is x² = R² − w
_R = sp.Symbol("R", positive=True)
_u, _v, _w = sp.symbols("u v w", nonnegative=True)
_s = sp.Symbol("s", nonnegative=True)  # t² for the bistable coordinate
_r, _eta = sp.symbols("r eta", positive=True)
_a, _b = sp.symbols("a b", real=True)
_f_log, _f_hen, _f_bis, _ball = sp.symbols("logistic henon bistable B_R")

GENERIC_BOUND = lemma(
    "derivative bound at generic points",
    "If φ′(t) ≤ B (upper) and −φ′(t) ≤ B (lower) are shown at points t whose symbols carry only "
    "constraints that hold on all of S (generic points; for a vector map, ‖Df(t)‖₂ ≤ B at a "
    "generic t, with upper = lower = that norm), then ‖Df‖₂ ≤ B on S: ∀-introduction (a "
    "diagonal Jacobian of such entries has spectral norm at most B).",
    ("first-order logic (universal generalization); Horn & Johnson, Matrix Analysis, §5.6",),
    (sp.Symbol("f"), sp.Symbol("S"), sp.Symbol("B"), sp.Symbol("lower"), sp.Symbol("upper")),
    (
        sp.Le(sp.Symbol("lower"), sp.Symbol("B")),
        sp.Le(sp.Symbol("upper"), sp.Symbol("B")),
    ),
    (Pred("jacobian_norm_at_most", (sp.Symbol("f"), sp.Symbol("S"), sp.Symbol("B"))),),
)

_x, _y = sp.Symbol("x"), sp.Symbol("y")
MAX_ABS = lemma(
    "max of absolute values",
    "x ≤ |x| ≤ max(|x|, |y|), −x ≤ |x|, and likewise for y.",
    ("order properties of the real numbers",),
    (_x, _y),
    (),
    (
        sp.Le(_x, sp.Max(sp.Abs(_x), sp.Abs(_y))),
        sp.Le(-_x, sp.Max(sp.Abs(_x), sp.Abs(_y))),
        sp.Le(_y, sp.Max(sp.Abs(_x), sp.Abs(_y))),
        sp.Le(-_y, sp.Max(sp.Abs(_x), sp.Abs(_y))),
    ),
)


class frobenius2(sp.Function):
    """``‖A‖_F²``: the sum of the squared entries of an explicit matrix (unevaluated otherwise)."""

    @classmethod
    def eval(cls, a: Any) -> Any:
        if isinstance(a, sp.MatrixBase):
            return sum(e**2 for e in a)
        return None


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


def _goal() -> tuple[Any, ...]:
    # the bounds are what dynamo's rule evaluates, read at prove time
    return (
        sp.Le(Lip(_f_log, _ball), formulas.logistic(_r, _R)),
        sp.Le(Lip(_f_hen, _ball), formulas.henon(_a, _b, _R, sqrt=sp.sqrt)),
        sp.Le(
            Lip(_f_bis, _ball),
            formulas.bistable(_eta, _R, maximum=sp.Max, absolute=sp.Abs),
        ),
    )


_ASSUMPTIONS = (
    Pred("convex", (_ball,)),
    Pred("differentiable_on", (_f_log, _ball)),
    Pred("differentiable_on", (_f_hen, _ball)),
    Pred("differentiable_on", (_f_bis, _ball)),
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
    ("states in the ball of radius R (convex)", "r > 0, η > 0"),
    ("mean value inequality",),
    _check_r9,
    goal=_goal,
    assumptions=_ASSUMPTIONS,
    variants=(
        Variant("the logistic bound without the factor 2: r(1 + R)", overrides={"two": 1}),
        Variant("the Hénon map not differentiable", drop=(2,)),
        Variant("a ball that is not convex", drop=(0,)),
        Variant("the logistic rule divided by 100", patch=lambda: code_scaled("logistic", 0.01)),
        Variant("the Hénon rule divided by 100", patch=lambda: code_scaled("henon", 0.01)),
        Variant("the bistable rule divided by 100", patch=lambda: code_scaled("bistable", 0.01)),
    ),
)
def r9(d: Derivation, two: int = 2) -> None:
    # logistic: φ′(t) = r(1 − 2t), differentiated from the map's expression
    t = sp.Symbol("t", real=True)
    slope = sp.diff(_r * t * (1 - t), t)
    bound = _r * (1 + two * _R)
    upper = slope.subs(t, _u - _R)  # t ≥ −R
    lower = -slope.subs(t, _R - _v)  # t ≤ R
    d.inequality(upper, bound, "φ′(t) ≤ r(1 + 2R) for t ≥ −R: the gap is 2r(R + t)", by=2 * _r * _u)
    d.inequality(
        lower, bound, "−φ′(t) ≤ r(1 + 2R) for t ≤ R: the gap is 2r(1 + R − t)", by=2 * _r * (1 + _v)
    )
    d.lemma(
        GENERIC_BOUND,
        "|φ′| ≤ r(1 + 2R) on the ball",
        f=_f_log,
        S=_ball,
        B=bound,
        lower=lower,
        upper=upper,
    )
    d.lemma(MEAN_VALUE, "the logistic map on the ball", f=_f_log, S=_ball, L=bound)
    d.weaken(
        sp.Le(Lip(_f_log, _ball), bound),
        formulas.logistic(_r, _R),
        "dynamo's logistic rule (lipschitz_formulas.logistic)",
    )

    # Hénon: J = [[−2ax, 1], [b, 0]] from the map's expression, at a generic point of the ball:
    # |x| ≤ ‖(x, y)‖ ≤ R, so x = ±√(R² − w) with w ≥ 0 (J depends on x², the sign is immaterial)
    x, y = sp.symbols("x y", real=True)
    jac = sp.Matrix([1 - _a * x**2 + y, _b * x]).jacobian([x, y])
    jac_w = sp.ImmutableMatrix(jac.subs(x, sp.sqrt(_R**2 - _w)))
    fro = frobenius2(jac_w)
    sq = d.lemma(SPECTRAL_FROBENIUS, "‖J‖₂² ≤ ‖J‖_F² = 4a²x² + 1 + b²", A=jac_w, F2=fro)
    top = 4 * _a**2 * _R**2 + 1 + _b**2
    gap = d.inequality(fro, top, "‖J‖_F² ≤ 4a²R² + 1 + b² as x² ≤ R²", by=4 * _a**2 * _w)
    both = d.chain([sq, gap], "‖J‖₂² ≤ 4a²R² + 1 + b²")
    norm_j = d.lemma(FROM_SQUARES, "‖J‖₂ ≤ √(4a²R² + 1 + b²)", N=both.lhs.base, B=sp.sqrt(top))
    d.lemma(
        GENERIC_BOUND,
        "at every point of the ball",
        f=_f_hen,
        S=_ball,
        B=sp.sqrt(top),
        lower=norm_j.lhs,
        upper=norm_j.lhs,
    )
    d.lemma(MEAN_VALUE, "the Hénon map on the ball", f=_f_hen, S=_ball, L=sp.sqrt(top))
    d.weaken(
        sp.Le(Lip(_f_hen, _ball), sp.sqrt(top)),
        formulas.henon(_a, _b, _R, sqrt=sp.sqrt),
        "dynamo's Hénon rule (lipschitz_formulas.henon)",
    )

    # bistable, elementwise: φ′(t) = 1 + η(1 − 3t²), linear in s = t² ∈ [0, R²]; J is diagonal
    dphi = sp.diff(t + _eta * (t - t**3), t).subs(t**2, _s)
    hi, lo = 1 + _eta, 1 + _eta - 3 * _eta * _R**2
    cap = sp.Max(sp.Abs(hi), sp.Abs(lo))
    d.lemma(MAX_ABS, "both ends are at most max(|1 + η|, |1 + η − 3ηR²|)", x=hi, y=lo)
    up_b = d.inequality(dphi, hi, "φ′ ≤ 1 + η (its value at t = 0), as t² ≥ 0", by=3 * _eta * _s)
    low_at = -dphi.subs(_s, _R**2 - _w)
    low_b = d.inequality(low_at, -lo, "−φ′ ≤ −(1 + η − 3ηR²), as t² ≤ R²", by=3 * _eta * _w)
    upper = d.chain([up_b, sp.Le(hi, cap)], "φ′ ≤ max(|1 + η|, |1 + η − 3ηR²|)")
    lower = d.chain([low_b, sp.Le(-lo, cap)], "−φ′ ≤ max(|1 + η|, |1 + η − 3ηR²|)")
    d.lemma(
        GENERIC_BOUND,
        "every diagonal entry of J, so ‖J‖₂, is at most that on the ball",
        f=_f_bis,
        S=_ball,
        B=cap,
        lower=lower.lhs,
        upper=upper.lhs,
    )
    d.lemma(MEAN_VALUE, "the bistable map on the ball", f=_f_bis, S=_ball, L=cap)
    d.weaken(
        sp.Le(Lip(_f_bis, _ball), cap),
        formulas.bistable(_eta, _R, maximum=sp.Max, absolute=sp.Abs),
        "dynamo's bistable rule (lipschitz_formulas.bistable)",
    )
