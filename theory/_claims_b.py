"""The claims C8–C14 (SCIENCE.md §3) on the derivation engine.

Matrices are sympy noncommutative symbols; :class:`Tr` is the transpose (it distributes over sums,
reverses products and leaves scalars alone, so sympy checks transpose algebra), and the scalar
``1`` stands for the identity matrix. ``Ap(f, x)`` is the value ``f(x)`` of a map ``f``. Besides
the lemmas of :mod:`theory._lemmas`, the proofs cite the textbook facts registered below: the
order rules of the real numbers, the substitution of equals, series, spectral facts and the
theorems the claims rest on (Ostrowski, Winston & Kolter, Combettes & Pesquet, ...).
"""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch
from sympy.printing.precedence import PRECEDENCE

import dynamo as dy

from ._core import CheckResult, Variant, claim
from ._lemmas import BANACH, SUBMULTIPLICATIVE, SYLVESTER, TRIANGLE, Lip, charpoly, compose, norm
from ._lemmas import opnorm as opnorm_
from ._logic import Derivation, Fact, Pred, lemma

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- symbols


class Tr(sp.Function):
    """The transpose ``Xᵀ`` of a noncommutative (matrix) expression: ``(X + Y)ᵀ = Xᵀ + Yᵀ``,
    ``(XY)ᵀ = YᵀXᵀ``, ``(cX)ᵀ = cXᵀ`` for a scalar ``c``, ``Xᵀᵀ = X`` (scalars, the identity
    ``1`` among them, are their own transposes)."""

    is_commutative = False

    @classmethod
    def eval(cls, x: Any) -> Any:
        if x.is_commutative:
            return x
        if isinstance(x, Tr):
            return x.args[0]
        if isinstance(x, sp.Add):
            return sp.Add(*[cls(a) for a in x.args])
        if isinstance(x, sp.Mul):
            c, nc = x.args_cnc()
            return sp.Mul(*c) * sp.Mul(*[cls(a) for a in reversed(nc)])
        if isinstance(x, sp.Pow) and x.exp.is_integer:
            return cls(x.base) ** x.exp
        return None

    def _sympystr(self, printer: Any) -> str:
        return str(printer.parenthesize(self.args[0], PRECEDENCE["Atom"], strict=True)) + "^T"

    def _latex(self, printer: Any) -> str:
        inner = printer._print(self.args[0])
        return rf"\left({inner}\right)^{{\top}}" if self.args[0].args else rf"{inner}^{{\top}}"


class Ap(sp.Function):
    """``Ap(f, x)``: the value ``f(x)`` of the map ``f`` at ``x``; a sympy ``Lambda`` in place
    of ``f`` is applied (so that a lemma about every map instantiates to an expression)."""

    @classmethod
    def eval(cls, fn: Any, *args: Any) -> Any:
        if isinstance(fn, sp.Lambda):
            return fn(*args)
        return None

    def _sympystr(self, printer: Any) -> str:
        args = ", ".join(printer._print(a) for a in self.args[1:])
        return f"{printer._print(self.args[0])}({args})"

    def _latex(self, printer: Any) -> str:
        args = ", ".join(printer._print(a) for a in self.args[1:])
        return rf"{printer._print(self.args[0])}\left({args}\right)"


def sym(x: Any) -> Any:
    """The symmetric part ``(X + Xᵀ)/2``, written out (the transpose not yet applied)."""
    return (x + Tr(x, evaluate=False)) / 2


#: the spectral norm ‖·‖₂ of a matrix (the function :data:`theory.opnorm`)
opnorm = opnorm_
#: the largest eigenvalue of a symmetric matrix
lmax = sp.Function("lambda_max", real=True)
#: the logarithmic norm μ₂(A) = λ_max((A + Aᵀ)/2)
mu2 = sp.Function("mu_2", real=True)
#: the spectral radius
specrad = sp.Function("rho", nonnegative=True)
#: the root convergence factor R₁ of an iteration at a point of attraction
R1 = sp.Function("R_1", nonnegative=True)
#: the Jacobian ∂f(x) of a map (a matrix: noncommutative)
D = sp.Function("D", commutative=False)
#: the trace
tr = sp.Function("tr")
#: the expectation of a scalar random quantity
E = sp.Function("E")
#: the expectation of a random matrix
EM = sp.Function("E_M", commutative=False)
#: the Frobenius norm
fro = sp.Function("fro", nonnegative=True)
#: max_i |γ_i| of a gain vector
maxabs = sp.Function("max_abs", nonnegative=True)

# the variables of the lemmas below
_a, _b, _c = sp.symbols("a b c", real=True)
_an = sp.Symbol("a", nonnegative=True)
_x, _y = sp.symbols("x y")
_F, _f, _g, _S, _h, _hs, _sig = sp.symbols("F f g S h h_s sigma")
_L, _q = sp.symbols("L q", nonnegative=True)
_i, _j, _k = sp.symbols("i j k", integer=True, nonnegative=True)
_seq = sp.IndexedBase("s")
_X, _Y, _M, _P, _G, _V, _R = sp.symbols("X Y M P G V R", commutative=False)
_W, _A, _B, _r, _rn = sp.symbols("W A B r r_next", commutative=False)
_m = sp.Symbol("m", real=True)

# ---------------------------------------------------------------------- order and equality
ADD = lemma(
    "order: adding to both sides of ≤",
    "For real a, b, c: a ≤ b implies a + c ≤ b + c.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Def. 1.17",),
    (_a, _b, _c),
    (sp.Le(_a, _b),),
    (sp.Le(_a + _c, _b + _c),),
)
ADD_STRICT = lemma(
    "order: adding to both sides of <",
    "For real a, b, c: a < b implies a + c < b + c.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Def. 1.17",),
    (_a, _b, _c),
    (sp.Lt(_a, _b),),
    (sp.Lt(_a + _c, _b + _c),),
)
MUL = lemma(
    "order: multiplying ≤ by c ≥ 0",
    "For real a, b, c: a ≤ b and c ≥ 0 imply c a ≤ c b.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Prop. 1.18",),
    (_a, _b, _c),
    (sp.Le(_a, _b), sp.Ge(_c, 0)),
    (sp.Le(_c * _a, _c * _b),),
)
MUL_STRICT = lemma(
    "order: multiplying < by c > 0",
    "For real a, b, c: a < b and c > 0 imply c a < c b.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Def. 1.17",),
    (_a, _b, _c),
    (sp.Lt(_a, _b), sp.Gt(_c, 0)),
    (sp.Lt(_c * _a, _c * _b),),
)
DIV = lemma(
    "order: dividing ≤ by c > 0",
    "For real a, b, c: a ≤ b and c > 0 imply a/c ≤ b/c.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Prop. 1.18",),
    (_a, _b, _c),
    (sp.Le(_a, _b), sp.Gt(_c, 0)),
    (sp.Le(_a / _c, _b / _c),),
)
LEIBNIZ = lemma(
    "Leibniz's law",
    "If x = y then F(x) = F(y) for every function (expression) F.",
    ("Leibniz's law; the congruence rule of equality in first-order logic",),
    (_F, _x, _y),
    (sp.Eq(_x, _y),),
    (sp.Eq(Ap(_F, _x), Ap(_F, _y)),),
)

LEIBNIZ2 = lemma(
    "Leibniz's law (two arguments)",
    "If x₁ = y₁ and x₂ = y₂ then F(x₁, x₂) = F(y₁, y₂) for every function (expression) F.",
    ("Leibniz's law; the congruence rule of equality in first-order logic",),
    (_F, _x, _y, _a, _b),
    (sp.Eq(_x, _y), sp.Eq(_a, _b)),
    (sp.Eq(Ap(_F, _x, _a), Ap(_F, _y, _b)),),
)


def _rewrite(d: Derivation, expr: Any, old: Any, new: Any, why: str) -> Fact:
    """``expr = expr[old := new]`` from a known ``old = new`` (substitution of equals)."""
    t = sp.Dummy("t", commutative=bool(sp.sympify(old).is_commutative))
    body = sp.sympify(expr).xreplace({sp.sympify(old): t})
    return d.lemma(LEIBNIZ, why, F=sp.Lambda(t, body), x=old, y=new)


# ---------------------------------------------------------------------- C8
ORBIT_STEP = lemma(
    "Lipschitz bound along an orbit",
    "If f maps S into S, Lip(f on S) ≤ L, and s is an orbit of f in S (s_0 ∈ S, "
    "s_{i+1} = f(s_i)), then ‖s_{j+2} − s_{j+1}‖ = ‖f(s_{j+1}) − f(s_j)‖ ≤ L‖s_{j+1} − s_j‖ "
    "for every j ≥ 0.",
    (
        "definition of the Lipschitz constant; E. Zeidler, Nonlinear Functional Analysis I, 1986, "
        "proof of Thm 1.A",
    ),
    (_f, _S, _L, _seq, _j),
    (Pred("maps_into", (_f, _S)), sp.Le(Lip(_f, _S), _L), Pred("orbit", (_seq, _f, _S))),
    (sp.Le(norm(_seq[_j + 2] - _seq[_j + 1]), _L * norm(_seq[_j + 1] - _seq[_j])),),
)
INDUCTION = lemma(
    "geometric decay by induction",
    "If L ≥ 0 and ‖s_{i+2} − s_{i+1}‖ ≤ L‖s_{i+1} − s_i‖ for every i ≥ 0, then "
    "‖s_{j+1} − s_j‖ ≤ L^j‖s_1 − s_0‖ for every j ≥ 0 (induction on j).",
    ("induction on j; E. Zeidler, Nonlinear Functional Analysis I, 1986, proof of Thm 1.A",),
    (_seq, _L, _i, _j),
    (
        Pred(
            "forall",
            (_i, sp.Le(norm(_seq[_i + 2] - _seq[_i + 1]), _L * norm(_seq[_i + 1] - _seq[_i]))),
        ),
    ),
    (sp.Le(norm(_seq[_j + 1] - _seq[_j]), _L**_j * norm(_seq[1] - _seq[0])),),
)
TAIL = lemma(
    "distance to a limit by the triangle inequality",
    "If the orbit s of f converges to h_s, then ‖s_k − h_s‖ ≤ Σ_{j≥k} ‖s_{j+1} − s_j‖ for every "
    "k ≥ 0 (triangle inequality on s_k, …, s_n, then n → ∞ by continuity of the norm).",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 3.3 and Def. 2.15",),
    (_f, _S, _seq, _hs, _j, _k),
    (
        Pred("iteration_converges", (_f, _S)),
        Pred("orbit", (_seq, _f, _S)),
        Pred("the_fixed_point", (_hs, _f, _S)),
    ),
    (sp.Le(norm(_seq[_k] - _hs), sp.Sum(norm(_seq[_j + 1] - _seq[_j]), (_j, _k, sp.oo))),),
)
GEOMETRIC = lemma(
    "geometric series",
    "For 0 ≤ q < 1 and every c: Σ_{j≥k} c q^j converges to c q^k/(1 − q).",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 3.26",),
    (_q, _c, _j, _k),
    # q ≥ 0 is the declared sign of q (checked where the lemma is applied)
    (sp.Lt(_q, 1),),
    (
        sp.Eq(sp.Sum(_q**_j * _c, (_j, _k, sp.oo)), _c * _q**_k / (1 - _q)),
        Pred("converges", (sp.Sum(_q**_j * _c, (_j, _k, sp.oo)),)),
    ),
)
COMPARISON = lemma(
    "comparison of series",
    "If 0 ≤ a_j ≤ b_j for every j ≥ 0 and Σ_{j≥k} b_j converges, then Σ_{j≥k} a_j ≤ Σ_{j≥k} b_j.",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 3.25",),
    # a_j ≥ 0 is the declared sign of a (checked where the lemma is applied)
    (_an, _b, _j, _k),
    (
        Pred("forall", (_j, sp.Le(_an, _b))),
        Pred("converges", (sp.Sum(_b, (_j, _k, sp.oo)),)),
    ),
    (sp.Le(sp.Sum(_an, (_j, _k, sp.oo)), sp.Sum(_b, (_j, _k, sp.oo))),),
)
LIP_FIXED = lemma(
    "Lipschitz bound towards the fixed point",
    "If f has exactly one fixed point h_s in S (f(h_s) = h_s), h ∈ S and Lip(f on S) ≤ L, then "
    "‖f(h) − h_s‖ = ‖f(h) − f(h_s)‖ ≤ L‖h − h_s‖.",
    ("definition of the Lipschitz constant",),
    (_f, _S, _L, _h, _hs),
    (
        Pred("unique_fixed_point", (_f, _S)),
        Pred("the_fixed_point", (_hs, _f, _S)),
        Pred("in", (_h, _S)),
        sp.Le(Lip(_f, _S), _L),
    ),
    (sp.Le(norm(Ap(_f, _h) - _hs), _L * norm(_h - _hs)),),
)

_c8_f, _c8_S = sp.symbols("f S")
_c8_L = sp.Symbol("L", positive=True)
_c8_k = sp.Symbol("k", integer=True, nonnegative=True)
_c8_j = sp.Symbol("j", integer=True, nonnegative=True)
_c8_h = sp.IndexedBase("h")
_c8_hs = sp.Symbol("h^*")
_c8_x = sp.Symbol("x")
_C8_STEP0 = norm(_c8_h[1] - _c8_h[0])
_C8_RESID = norm(_c8_x - Ap(_c8_f, _c8_x))


def _c8_goal(denominator: Any = None) -> tuple[Fact, ...]:
    den = 1 - _c8_L if denominator is None else denominator
    return (
        Pred("unique_fixed_point", (_c8_f, _c8_S)),
        sp.Le(norm(_c8_h[_c8_k] - _c8_hs), _c8_L**_c8_k / den * _C8_STEP0),
        sp.Le(norm(_c8_x - _c8_hs), _C8_RESID / den),
    )


def _check_c8(lipschitz: float | None = None, *, seed: int = 0) -> CheckResult:
    f = dy.models.ContractiveTanh(n=16, lipschitz=0.9, seed=seed)
    x = torch.randn(2, 16, generator=_gen(seed), dtype=F64)
    system = dy.LoopedSystem.from_module(f, x)
    L = dy.lipschitz_upper_bound(f, dy.Domain()).value if lipschitz is None else lipschitz
    h0 = 3 * torch.randn(2, 16, generator=_gen(seed + 1), dtype=F64)
    traj = system.iterate(h0, n_steps=60)
    assert traj.states is not None
    star = dy.solve(system, traj.final, method="newton_krylov", tol=1e-15, atol=1e-15).state
    err = (traj.states - star[None]).reshape(61, 2, -1).norm(dim=2)
    step0 = (traj.states[1] - traj.states[0]).reshape(2, -1).norm(dim=1)
    k = torch.arange(61, dtype=F64)[:, None]
    apriori = L**k / (1 - L) * step0[None]
    resid = traj.residuals  # ‖f(h_k) − h_k‖, k < 60
    aposteriori = resid / (1 - L)
    slack = 1e-12
    ok_a = bool((err <= apriori + slack).all())
    ok_b = bool((err[:-1] <= aposteriori + slack).all())
    return CheckResult(
        "C8",
        ok_a and ok_b,
        f"with L = {L:.6g}: a-priori bound holds at every step: {ok_a}; a-posteriori bound: {ok_b}",
        {"L": L, "apriori_ok": ok_a, "aposteriori_ok": ok_b},
        violated=()
        if (ok_a and ok_b)
        else ("L must be a certified upper bound, not a sampled estimate",),
    )


@claim(
    "C8",
    "Banach: a certified Lipschitz bound below 1 gives one fixed point and error bounds",
    r"If $f$ maps a nonempty closed set $S$ into itself and $\mathrm{Lip}(f|_S) \le L < 1$, "
    r"then $f$ has exactly one fixed point $h^*$ in $S$; along every orbit $h_0 \in S$, "
    r"$h_{j+1} = f(h_j)$: $\lVert h_k - h^*\rVert \le \frac{L^k}{1 - L}\lVert h_1 - h_0\rVert$, "
    r"and for every $x \in S$: $\lVert x - h^*\rVert \le \frac{\lVert x - f(x)\rVert}{1 - L}$.",
    (
        "S nonempty and closed, f(S) ⊆ S",
        "Lip(f on S) ≤ L < 1 (L a certified upper bound, not a sampled estimate)",
        "h_0 ∈ S, h_{j+1} = f(h_j); x ∈ S; h* denotes the fixed point",
    ),
    (
        "S. Banach, Fund. Math. 3, 1922",
        "E. Zeidler, Nonlinear Functional Analysis I, 1986, Thm 1.A",
    ),
    _check_c8,
    goal=_c8_goal(),
    assumptions=(
        Pred("nonempty_closed", (_c8_S,)),
        Pred("maps_into", (_c8_f, _c8_S)),
        sp.Le(Lip(_c8_f, _c8_S), _c8_L),
        sp.Lt(_c8_L, 1),
        Pred("orbit", (_c8_h, _c8_f, _c8_S)),
        Pred("the_fixed_point", (_c8_hs, _c8_f, _c8_S)),
        Pred("in", (_c8_x, _c8_S)),
    ),
    variants=(
        Variant("L ≥ 1 allowed (the hypothesis L < 1 dropped)", drop=(3,)),
        Variant("the denominator 1 + L in place of 1 − L", goal=_c8_goal(1 + _c8_L)),
        Variant(
            "the a-priori bound L^k ‖h_1 − h_0‖ without the factor 1/(1 − L)",
            goal=(sp.Le(norm(_c8_h[_c8_k] - _c8_hs), _c8_L**_c8_k * _C8_STEP0),),
        ),
    ),
)
def c8(d: Derivation) -> None:
    f, S, L, k, j, h, hs, x = _c8_f, _c8_S, _c8_L, _c8_k, _c8_j, _c8_h, _c8_hs, _c8_x
    d.lemma(BANACH, "f contracts the closed set S", f=f, S=S, L=L)
    # a-priori: the increments decay geometrically, and the tail of their series bounds the error
    # one step at a generic index j (no assumption mentions j), then for every j
    step = d.lemma(
        ORBIT_STEP, "one step of the orbit contracts its increment", f=f, S=S, L=L, s=h, j=j
    )
    d.generalize(step, j, "for every index j")
    inc = d.lemma(INDUCTION, "‖h_{j+1} − h_j‖ ≤ L^j ‖h_1 − h_0‖", s=h, L=L, i=j, j=j)
    d.generalize(inc, j, "for every index j")
    tail = d.lemma(TAIL, "‖h_k − h*‖ ≤ Σ_{j≥k} ‖h_{j+1} − h_j‖", f=f, S=S, s=h, h_s=hs, j=j, k=k)
    geo = d.lemma(GEOMETRIC, "Σ_{j≥k} L^j c = c L^k/(1 − L)", q=L, c=_C8_STEP0, j=j, k=k)
    comp = d.lemma(COMPARISON, "termwise comparison", a=inc.lhs, b=inc.rhs, j=j, k=k)
    d.chain([tail, comp, geo], "the a-priori bound")
    # a-posteriori: ‖h − h*‖ ≤ ‖h − f(h)‖ + ‖f(h) − h*‖ ≤ r + L‖h − h*‖, solved for ‖h − h*‖
    e = norm(x - hs)
    tri = d.lemma(TRIANGLE, "through f(h)", u=x - Ap(f, x), v=Ap(f, x) - hs)
    lip = d.lemma(LIP_FIXED, "f contracts towards h*", f=f, S=S, L=L, h=x, h_s=hs)
    plus = d.lemma(ADD, "add ‖h − f(h)‖", a=lip.lhs, b=lip.rhs, c=_C8_RESID)
    both = d.chain([tri, plus], "‖h − h*‖ ≤ ‖h − f(h)‖ + L‖h − h*‖")
    moved = d.lemma(ADD, "subtract L‖h − h*‖", a=e, b=both.rhs, c=-L * e)
    gap = d.lemma(ADD_STRICT, "0 < 1 − L from L < 1", a=L, b=1, c=-L)
    d.lemma(DIV, "divide by 1 − L > 0", a=moved.lhs, b=moved.rhs, c=gap.rhs)


# ---------------------------------------------------------------------- C9
OSTROWSKI = lemma(
    "Ostrowski's theorem",
    "If f: D ⊂ ℝⁿ → ℝⁿ has a fixed point h* in the interior of D, is (Fréchet) differentiable at "
    "h* with Jacobian J and ρ(J) < 1, then h* is a point of attraction of h_{k+1} = f(h_k); if "
    "moreover ρ(J) > 0, the root convergence factor of the iteration at h* is R₁ = ρ(J).",
    (
        "A. M. Ostrowski, Solution of Equations and Systems of Equations, 1966",
        "J. M. Ortega, W. C. Rheinboldt, Iterative Solution of Nonlinear Equations in Several "
        "Variables, 1970, Thms 10.1.3 and 10.1.4",
    ),
    (_f, _h, _M),
    (
        Pred("fixed_point_interior", (_h, _f)),
        Pred("differentiable_at", (_f, _h)),
        Pred("jacobian_at", (_f, _h, _M)),
        sp.Lt(specrad(_M), 1),
        sp.Gt(specrad(_M), 0),
    ),
    (Pred("point_of_attraction", (_h, _f)), sp.Eq(R1(_f, _h), specrad(_M))),
)
POWER_METHOD = lemma(
    "power method",
    "If r_{k+1} = A r_k for every k, A is diagonalizable with a simple eigenvalue λ₁ of largest "
    "modulus (|λ₁| > |λ| for every other eigenvalue λ) and r_0 has a nonzero component along "
    "its eigenvector, then ‖r_{k+1}‖/‖r_k‖ → |λ₁| = ρ(A).",
    ("G. H. Golub, C. F. Van Loan, Matrix Computations, 4th ed., 2013, §7.3.1",),
    (_A, _r, _rn),
    (
        sp.Eq(_rn, _A * _r),
        Pred("diagonalizable_with_simple_dominant_eigenvalue", (_A,)),
        Pred("component_along_dominant_eigenvector", (_r, _A)),
    ),
    (Pred("residual_ratio_tends_to", (_A, specrad(_A))),),
)

_c9_f = sp.Symbol("f")
_c9_hs = sp.Symbol("h^*", commutative=False)
_c9_J = sp.Symbol("J", commutative=False)
_c9_h = sp.Symbol("h", commutative=False)
#: the first residual g(h) − h of the linearized iteration g(h) = h* + J(h − h*)
_C9_R0 = _c9_hs + _c9_J * (_c9_h - _c9_hs) - _c9_h


def _c9_goal(rate: Any = None) -> tuple[Fact, ...]:
    rho = specrad(_c9_J) if rate is None else rate
    return (
        Pred("point_of_attraction", (_c9_hs, _c9_f)),
        sp.Eq(R1(_c9_f, _c9_hs), rho),
        Pred("residual_ratio_tends_to", (_c9_J, rho)),
    )


def _check_c9(*, seed: int = 0) -> CheckResult:
    # a draw whose dominant eigenvalue at h* is real and simple (a complex top pair makes the
    # ratio oscillate: the claim's "dominant eigenvalue" hypothesis)
    f = dy.models.ContractiveTanh(n=8, lipschitz=0.95, input_scale=0.1, seed=seed)
    system = dy.LoopedSystem.from_module(f, torch.ones(1, 8, dtype=F64))
    traj = system.iterate(torch.randn(1, 8, generator=_gen(seed), dtype=F64), n_steps=200)
    r = traj.residuals[:, 0]
    k = int((r > 1e-11).sum()) - 2  # the last ratio above the rounding floor
    ratio = float(r[k + 1] / r[k])
    star = dy.solve(system, traj.final, method="newton_krylov", tol=1e-15, atol=1e-15).state
    rho = float(dy.spectral_radius(system, star).values[0])
    ok = abs(ratio - rho) <= 1e-3
    return CheckResult(
        "C9",
        ok,
        f"residual ratio r_k+1/r_k = {ratio:.6f} at step {k}; ρ(∂f(h*)) = {rho:.6f}",
        {"ratio": ratio, "rho": rho},
    )


@claim(
    "C9",
    "Ostrowski: ρ(∂f(h*)) < 1 gives local attraction at rate ρ",
    r"If $h^*$ is a fixed point of $f$ (interior to its domain), $f$ is differentiable at $h^*$ "
    r"with Jacobian $J$ and $0 < \rho(J) < 1$, then $h^*$ is a point of attraction and the "
    r"root convergence factor is $R_1 = \rho(J)$. If $J$ is diagonalizable with a simple "
    r"dominant eigenvalue, the residuals $r_k = h_{k+1} - h_k$ of the linearized iteration "
    r"$h \mapsto h^* + J(h - h^*)$ satisfy $r_{k+1} = J r_k$, so "
    r"$\lVert r_{k+1}\rVert/\lVert r_k\rVert \to \rho(J)$ (for a start with a component along "
    r"the dominant eigenvector). This rate of the residual ratio is shown for the linearized "
    r"iteration only, not for the residuals of $f$ itself.",
    (
        "f differentiable at h*, h* interior",
        "0 < ρ(∂f(h*)) < 1",
        "for the ratio: a simple dominant eigenvalue and a start with a component along it",
    ),
    (
        "A. M. Ostrowski, Solution of Equations and Systems of Equations, 1966",
        "Ortega & Rheinboldt, Iterative Solution of Nonlinear Equations, 1970, 10.1.3/10.1.4",
    ),
    _check_c9,
    goal=_c9_goal(),
    assumptions=(
        Pred("fixed_point_interior", (_c9_hs, _c9_f)),
        Pred("differentiable_at", (_c9_f, _c9_hs)),
        Pred("jacobian_at", (_c9_f, _c9_hs, _c9_J)),
        sp.Lt(specrad(_c9_J), 1),
        sp.Gt(specrad(_c9_J), 0),
        Pred("diagonalizable_with_simple_dominant_eigenvalue", (_c9_J,)),
        Pred("component_along_dominant_eigenvector", (_C9_R0, _c9_J)),
    ),
    variants=(
        Variant("the rate ρ² in place of ρ", goal=_c9_goal(specrad(_c9_J) ** 2)),
        Variant("without ρ(∂f(h*)) < 1", drop=(3,)),
        Variant(
            "the ratio without a dominant eigenvalue",
            drop=(5,),
            goal=(Pred("residual_ratio_tends_to", (_c9_J, specrad(_c9_J))),),
        ),
    ),
)
def c9(d: Derivation) -> None:
    f, hs, J, h = _c9_f, _c9_hs, _c9_J, _c9_h
    d.lemma(OSTROWSKI, "attraction and rate at h*", f=f, h=hs, M=J)
    # the linearized iteration g(h) = h* + J(h − h*): residuals r = g(h) − h, r' = g(g(h)) − g(h)
    z = sp.Dummy("z", commutative=False)
    g = sp.Lambda(z, hs + J * (z - hs))
    r = g(h) - h
    r_next = g(g(h)) - g(h)
    d.identity(r_next, J * r, "the residuals of the linearized iteration obey r_{k+1} = J r_k")
    d.lemma(POWER_METHOD, "the residual ratio tends to ρ(J)", A=J, r=r, r_next=r_next)


# ---------------------------------------------------------------------- C10
CHAIN_RULE = lemma(
    "chain rule for Jacobians",
    "If f and g are differentiable, then ∂(g ∘ f)(x) = ∂g(f(x)) ∂f(x).",
    ("W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976, Thm 9.15",),
    (_f, _g, _x),
    (Pred("differentiable", (_f,)), Pred("differentiable", (_g,))),
    (sp.Eq(D(compose(_g, _f), _x), D(_g, Ap(_f, _x)) * D(_f, _x)),),
)

_c10_f, _c10_g, _c10_x, _c10_y = sp.symbols("f g x y")
_c10_A, _c10_B, _c10_C = sp.symbols("A B C", commutative=False)


def _c10_goal() -> tuple[Fact, ...]:
    f, g, x, y = _c10_f, _c10_g, _c10_x, _c10_y
    A, B, C = _c10_A, _c10_B, _c10_C
    return (
        sp.Eq(charpoly(D(compose(g, f), x)), charpoly(D(compose(f, g), y))),
        sp.Eq(charpoly(A * B * C), charpoly(B * C * A)),
        sp.Eq(charpoly(A * B * C), charpoly(C * A * B)),
    )


def _check_c10(*, seed: int = 2) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=8, n_heads=2, n_layers=3, recall="outer", norm="outer", seed=seed
    )
    x = torch.randn(2, 4, 8, generator=_gen(4), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    h = dy.solve(system, system.initial_states("input"), method="anderson").state
    lc = dy.layer_cycle(system, h, n_steps=5)
    spread = float(lc.rotation_spread.max())
    return CheckResult(
        "C10",
        spread <= 1e-9,
        f"top eigenvalue moduli of the 3 rotations agree to {spread:.1e}",
        {"spread": spread},
    )


@claim(
    "C10",
    "A cycle's stability does not depend on the starting layer",
    r"Split a composition of layers $\mathbb R^n \to \mathbb R^n$ at any layer: "
    r"$F = g \circ f$ with $f = f_{s-1} \circ \dots \circ f_1$, $g = f_k \circ \dots \circ f_s$, "
    r"and let $x$ be a cycle point: $y = f(x)$, $g(y) = x$. The rotation $f \circ g$ at its "
    r"cycle point $y$ has the Jacobian characteristic polynomial of $F$ at $x$: "
    r"$\det(\lambda I - \partial(g\circ f)(x)) = \det(\lambda I - \partial(f \circ g)(y))$, "
    r"so the same spectrum. For three layer Jacobians $A, B, C$: $ABC$, $BCA$ and $CAB$ share "
    r"their characteristic polynomial.",
    ("the per-layer maps are differentiable", "x is a cycle point: y = f(x), g(y) = x"),
    ("Blayney et al., arXiv:2604.11791",),
    _check_c10,
    goal=_c10_goal(),
    assumptions=(
        Pred("differentiable", (_c10_f,)),
        Pred("differentiable", (_c10_g,)),
        sp.Eq(Ap(_c10_f, _c10_x), _c10_y),
        sp.Eq(Ap(_c10_g, _c10_y), _c10_x),
    ),
    variants=(
        Variant(
            "a non-rotation: ABC and ACB",
            goal=(sp.Eq(charpoly(_c10_A * _c10_B * _c10_C), charpoly(_c10_A * _c10_C * _c10_B)),),
        ),
        Variant(
            "the rotation's Jacobian taken at x instead of its cycle point y = f(x)",
            goal=(
                sp.Eq(
                    charpoly(D(compose(_c10_g, _c10_f), _c10_x)),
                    charpoly(D(compose(_c10_f, _c10_g), _c10_x)),
                ),
            ),
        ),
        Variant("without the cycle-point hypothesis g(y) = x (y = f(x))", drop=(3,)),
    ),
)
def c10(d: Derivation) -> None:
    f, g, x, y = _c10_f, _c10_g, _c10_x, _c10_y
    A, B, C = _c10_A, _c10_B, _c10_C
    gf = d.lemma(CHAIN_RULE, "∂(g ∘ f)(x) = ∂g(f(x)) ∂f(x)", f=f, g=g, x=x)
    fg = d.lemma(CHAIN_RULE, "∂(f ∘ g)(y) = ∂f(g(y)) ∂g(y)", f=g, g=f, x=y)
    l1 = _rewrite(d, charpoly(gf.lhs), gf.lhs, gf.rhs, "the chain rule inside det(λI − ·)")
    l2 = _rewrite(d, l1.rhs, Ap(f, x), y, "f(x) = y")
    closes = d.steps[-1].ok
    swap = d.lemma(SYLVESTER, "eig(AB) = eig(BA), A = ∂g(y), B = ∂f(x)", A=D(g, y), B=D(f, x))
    r1 = _rewrite(d, charpoly(fg.lhs), fg.lhs, fg.rhs, "the chain rule inside det(λI − ·)")
    r2 = _rewrite(d, r1.rhs, Ap(g, y), x, "g(y) = x: the cycle closes")
    if not (closes and d.steps[-1].ok):
        # the cycle does not close: nothing links the rotations (and sympy cannot decide an
        # equation between characteristic polynomials of noncommutative products on its own)
        return
    d.chain(
        [l1, l2, swap, sp.Eq(r2.rhs, r2.lhs), sp.Eq(r1.rhs, r1.lhs)],
        "the rotation has the same characteristic polynomial",
    )
    # three layers: ABC = (A)(BC) and (AB)(C)
    d.lemma(SYLVESTER, "ABC = (A)(BC) against (BC)(A)", A=A, B=B * C)
    d.lemma(SYLVESTER, "ABC = (AB)(C) against (C)(AB)", A=A * B, B=C)


# ---------------------------------------------------------------------- C11
GRAM_PSD = lemma(
    "Gram matrices are positive semidefinite",
    "AᵀA ⪰ 0 for every real matrix A: vᵀAᵀAv = ‖Av‖² ≥ 0.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, Thm 7.2.10",),
    (_A,),
    (),
    (Pred("psd", (Tr(_A) * _A,)),),
)
COMBETTES_PESQUET = lemma(
    "proximal maps on the line",
    "A function σ: ℝ → ℝ is the proximal map of a proper lower-semicontinuous convex function "
    "iff it is nondecreasing and nonexpansive (1-Lipschitz); applied elementwise, it is the "
    "proximal map of the separable sum.",
    (
        "P. L. Combettes, J.-C. Pesquet, Proximal thresholding algorithm for minimization over "
        "orthonormal bases, SIAM J. Optim. 18, 2007, Prop. 2.4",
    ),
    (_sig,),
    (Pred("nondecreasing", (_sig,)), sp.Le(Lip(_sig), 1)),
    (Pred("proximal_map_of_convex", (_sig,)),),
)
WINSTON_KOLTER = lemma(
    "monotone operator equilibrium (Winston & Kolter Thm 1)",
    "If sym(I − W) − mI ⪰ 0 with m > 0 (I − W strongly monotone) and σ is the proximal map of a "
    "convex closed proper function, then z = σ(Wz + Ux + b) has exactly one solution for every "
    "x, U, b (the zero of the sum of a strongly monotone and a maximal monotone operator: "
    "Minty–Browder).",
    (
        "E. Winston, J. Z. Kolter, Monotone operator equilibrium networks, arXiv:2006.08591, Thm 1",
        "E. K. Ryu, S. Boyd, A primer on monotone operator methods, 2016",
    ),
    (_W, _m, _sig),
    (
        Pred("psd", ((1 - _W + Tr(1 - _W)) / 2 - _m,)),
        sp.Gt(_m, 0),
        Pred("proximal_map_of_convex", (_sig,)),
    ),
    (Pred("unique_fixed_point_for_every_input", (_W, _sig)),),
)

_c11_A, _c11_B = sp.symbols("A B", commutative=False)
_c11_m = sp.Symbol("m", positive=True)
_c11_sig = sp.Symbol("sigma")


def _c11_W(skew: bool = True) -> Any:
    A, B, m = _c11_A, _c11_B, _c11_m
    return (1 - m) - Tr(A) * A + B + (-Tr(B) if skew else Tr(B))


def _c11_goal() -> tuple[Fact, ...]:
    W = _c11_W()
    return (
        sp.Eq(sym(1 - W), _c11_m + Tr(_c11_A) * _c11_A),
        Pred("unique_fixed_point_for_every_input", (W, _c11_sig)),
    )


def _fixed_points_1d(fn: Any, lo: float, hi: float, n: int = 4001) -> list[float]:
    """The roots of ``fn(z) − z`` on ``[lo, hi]``: sign changes on a grid, then bisection."""
    grid = torch.linspace(lo, hi, n, dtype=F64)
    g = fn(grid) - grid
    roots = []
    for i in range(n - 1):
        a, b = float(grid[i]), float(grid[i + 1])
        ga, gb = float(g[i]), float(g[i + 1])
        if ga == 0.0:
            roots.append(a)
        elif ga * gb < 0:
            for _ in range(80):
                mid = (a + b) / 2
                gm = float(fn(torch.tensor(mid, dtype=F64))) - mid
                a, b, ga = (mid, b, gm) if ga * gm > 0 else (a, mid, ga)
            roots.append((a + b) / 2)
    return roots


def _check_c11(*, n_inputs: int = 5, seed: int = 0) -> CheckResult:
    model = dy.models.MonDEQ(n=16, m=0.5, seed=seed)
    w = model.W.detach()
    sym_iw = torch.eye(16, dtype=F64) - (w + w.T) / 2
    lam = float(torch.linalg.eigvalsh(sym_iw).min())
    x = torch.randn(n_inputs, 16, generator=_gen(seed), dtype=F64)
    found = dy.find_fixed_points(dy.LoopedSystem.from_module(model, x), 8, mode="all", seed=seed)
    counts = [len(found.for_input(i)) for i in range(n_inputs)]
    # the activation hypothesis matters: A = B = 0, m = 0.5 (W = 0.5), σ = 4·tanh (monotone but
    # 4-Lipschitz, not a proximal map): z = σ(0.5 z) = 4 tanh(0.5 z) has three fixed points
    roots = _fixed_points_1d(lambda z: 4 * torch.tanh(0.5 * z), -10.0, 10.0)
    ok = lam >= 0.5 - 1e-12 and counts == [1] * n_inputs and len(roots) == 3
    return CheckResult(
        "C11",
        ok,
        f"λ_min(sym(I − W)) = {lam:.6f} >= m = 0.5; fixed points per input {counts}; with "
        f"σ = 4·tanh in place of ReLU (W = 0.5): {len(roots)} fixed points "
        f"{[round(r, 2) for r in roots]}",
        {"lambda_min": lam, "counts": counts, "tanh_fixed_points": roots},
    )


@claim(
    "C11",
    "monDEQ has exactly one fixed point for every input",
    r"Let $W = (1 - m)I - A^\top A + B - B^\top$ with $m > 0$, and let the activation $\sigma$ "
    r"(applied elementwise) be nondecreasing and 1-Lipschitz (ReLU, for one), so that it is the "
    r"proximal map of a convex function. Then $\mathrm{sym}(I - W) = mI + A^\top A \succeq mI$ "
    r"and $z = \sigma(Wz + Ux + b)$ has exactly one fixed point for every $x$.",
    (
        "m > 0",
        "σ nondecreasing and 1-Lipschitz, i.e. the proximal map of a convex function (ReLU); "
        "the W condition alone is not enough (σ = 4·tanh: three fixed points)",
    ),
    ("Winston & Kolter, arXiv:2006.08591", "Combettes & Pesquet, SIAM J. Optim. 18, 2007"),
    _check_c11,
    goal=_c11_goal(),
    assumptions=(Pred("nondecreasing", (_c11_sig,)), sp.Le(Lip(_c11_sig), 1)),
    variants=(
        Variant(
            "σ = 4·tanh allowed (monotone but 4-Lipschitz, not a proximal map: the hypothesis "
            "Lip(σ) ≤ 1 dropped; with A = B = 0, m = 0.5, i.e. W = 0.5, the map "
            "z ↦ 4·tanh(0.5 z) has three fixed points −3.83, 0, 3.83)",
            drop=(1,),
        ),
        Variant("without any hypothesis on the activation (the old statement)", drop=(0, 1)),
        Variant("the skew part B + Bᵀ in place of B − Bᵀ", overrides={"skew": False}),
    ),
)
def c11(d: Derivation, skew: bool = True) -> None:
    A, m, sig = _c11_A, _c11_m, _c11_sig
    W = _c11_W(skew)
    d.identity(sym(1 - W), m + Tr(A) * A, "sym(I − W) = mI + AᵀA")
    d.lemma(GRAM_PSD, "AᵀA ⪰ 0, so sym(I − W) − mI ⪰ 0", A=A)
    # the activation's hypotheses (nondecreasing, Lip(σ) ≤ 1) are the claim's assumptions on σ
    d.lemma(COMBETTES_PESQUET, "σ is the proximal map of a convex function", sigma=sig)
    d.lemma(WINSTON_KOLTER, "I − W strongly monotone, σ a proximal map", W=W, m=m, sigma=sig)


# ---------------------------------------------------------------------- C12
NORM_LMAX = lemma(
    "spectral norm and λ_max",
    "‖M‖₂² = λ_max(MᵀM) for every real matrix M.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, Example 5.6.6",),
    (_M,),
    (),
    (sp.Eq(opnorm(_M) ** 2, lmax(Tr(_M) * _M)),),
)
WEYL = lemma(
    "Weyl's inequality for λ_max",
    "λ_max(X + Y) ≤ λ_max(X) + λ_max(Y) for symmetric X, Y of one size.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, Thm 4.3.1",),
    (_X, _Y),
    (sp.Eq(Tr(_X), _X), sp.Eq(Tr(_Y), _Y)),
    (sp.Le(lmax(_X + _Y), lmax(_X) + lmax(_Y)),),
)
LMAX_SHIFT = lemma(
    "λ_max of a shift",
    "λ_max(I + X) = 1 + λ_max(X) for symmetric X (the spectrum shifts by 1).",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, Obs. 1.1.7",),
    (_X,),
    (sp.Eq(Tr(_X), _X),),
    (sp.Eq(lmax(1 + _X), 1 + lmax(_X)),),
)
LMAX_SCALE = lemma(
    "λ_max of a nonnegative multiple",
    "λ_max(cX) = c λ_max(X) for symmetric X and c ≥ 0.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, Obs. 1.1.7",),
    (_c, _X),
    (sp.Eq(Tr(_X), _X), sp.Ge(_c, 0)),
    (sp.Eq(lmax(_c * _X), _c * lmax(_X)),),
)
LOGNORM = lemma(
    "logarithmic norm (2-norm)",
    "The logarithmic norm of A in the 2-norm is μ₂(A) = λ_max((A + Aᵀ)/2), i.e. "
    "λ_max(A + Aᵀ) = 2μ₂(A).",
    (
        "G. Dahlquist, Stability and error bounds in the numerical integration of ordinary "
        "differential equations, 1958",
        "G. Söderlind, The logarithmic norm. History and modern theory, BIT 46, 2006",
    ),
    (_A,),
    (),
    (sp.Eq(lmax(_A + Tr(_A)), 2 * mu2(_A)),),
)

_c12_A = sp.Symbol("A", commutative=False)
_c12_eta = sp.Symbol("eta", positive=True)
_C12_MU = mu2(_c12_A)
_C12_A2 = opnorm(_c12_A) ** 2
_C12_STEP = 1 + _c12_eta * _c12_A


def _c12_goal(two: Any = 2) -> tuple[Fact, ...]:
    eta = _c12_eta
    return (
        sp.Le(opnorm(_C12_STEP) ** 2, 1 + two * eta * _C12_MU + eta**2 * _C12_A2),
        sp.Lt(opnorm(_C12_STEP) ** 2, 1),
    )


def _check_c12(eta: float = 0.5, n: int = 4) -> CheckResult:
    S = torch.zeros(n, n, dtype=F64)
    s = math.sqrt(5.69)
    S[0, 1], S[1, 0], S[2, 3], S[3, 2] = s, -s, s, -s
    A = -0.5 * torch.eye(n, dtype=F64) + S
    step = torch.eye(n, dtype=F64) + eta * A
    system = dy.LoopedSystem.from_function(lambda h: h @ step.T, state_shape=(n,))
    norm2 = float(dy.spectral_norm(system, torch.ones(1, n, dtype=F64)).values[0]) ** 2
    mu = float(torch.linalg.eigvalsh((A + A.T) / 2).max())
    bound = 1 + 2 * eta * mu + eta**2 * float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    # the condition is not necessary: A = diag(−1, −0.1), η = 1 contracts beyond −2μ₂/‖A‖²
    a2 = torch.diag(torch.tensor([-1.0, -0.1], dtype=F64))
    step2 = torch.eye(2, dtype=F64) + a2
    sys2 = dy.LoopedSystem.from_function(lambda h: h @ step2.T, state_shape=(2,))
    norm_b = float(dy.spectral_norm(sys2, torch.ones(1, 2, dtype=F64)).values[0])
    mu_b = float(torch.linalg.eigvalsh(a2).max())
    thr_b = -2 * mu_b / float(torch.linalg.matrix_norm(a2, ord=2)) ** 2
    ok = (
        abs(norm2 - 1.985) < 1e-9
        and norm2 <= bound + 1e-12
        and abs(norm_b - 0.9) < 1e-12
        and abs(thr_b - 0.2) < 1e-12
    )
    return CheckResult(
        "C12",
        ok,
        f"μ₂(A) = {mu:.3f}, ‖A‖² = 5.94, η = {eta}: ‖I + ηA‖² = "
        f"{norm2:.6f} (bound {bound:.6f}): the step expands although μ₂ < 0; "
        f"A = diag(−1, −0.1), η = 1: ‖I + ηA‖ = {norm_b:.3f} < 1 although η > −2μ₂/‖A‖² = "
        f"{thr_b:.3f} (the condition is sufficient, not necessary)",
        {"norm_squared": norm2, "bound": bound, "mu": mu, "norm_b": norm_b, "threshold_b": thr_b},
    )


@claim(
    "C12",
    "A residual step contracts if μ₂(DF) < 0 and η is small enough (sufficient, not necessary)",
    r"For every real square $A$ and $\eta > 0$: $\lVert I + \eta A\rVert_2^2 \le "
    r"1 + 2\eta\mu_2(A) + \eta^2\lVert A\rVert_2^2$, with $\mu_2(A) = \lambda_{\max}((A + "
    r"A^\top)/2)$. So $\mu_2(A) < 0$ and $0 < \eta < -2\mu_2(A)/\lVert A\rVert_2^2$ are "
    r"sufficient for $\lVert I + \eta A\rVert_2 < 1$ (a contracting step $h + \eta F(h)$ where "
    r"$A = DF$).",
    ("μ₂ the logarithmic norm λ_max((A + Aᵀ)/2)", "A ≠ 0", "μ₂(A) < 0, 0 < η < −2μ₂/‖A‖²"),
    ("Jafarpour et al., arXiv:2106.03194", "Söderlind, BIT 46, 2006"),
    _check_c12,
    goal=_c12_goal(),
    assumptions=(
        sp.Gt(_C12_A2, 0),
        sp.Lt(_C12_MU, 0),
        sp.Lt(_c12_eta, -2 * _C12_MU / _C12_A2),
    ),
    variants=(
        Variant(
            "μ₂ < 0 alone is sufficient (no step-size condition; μ₂ = −0.5, ‖A‖² = 5.94, "
            "η = 0.5 gives 1.985)",
            drop=(2,),
        ),
        Variant(
            "necessity ('only if'): a contracting step has η < −2μ₂/‖A‖² (false: A = "
            "diag(−1, −0.1), η = 1 contracts with threshold 0.2; the goal is never derived)",
            drop=(2,),
            goal=(sp.Lt(_c12_eta, -2 * _C12_MU / _C12_A2),),
        ),
        Variant("the bound with 4ημ₂ in place of 2ημ₂", goal=_c12_goal(4)[:1]),
    ),
)
def c12(d: Derivation) -> None:
    A, eta, mu, a2 = _c12_A, _c12_eta, _C12_MU, _C12_A2
    M = _C12_STEP
    sym_a, gram = A + Tr(A), Tr(A) * A
    expanded = 1 + eta * sym_a + eta**2 * gram
    x1, y1 = eta * sym_a, eta**2 * gram
    # the Gram matrix of the step (the chain below reads λ_max of it as λ_max of its expansion)
    d.identity(Tr(M, evaluate=False) * M, expanded, "(I + ηA)ᵀ(I + ηA) = I + η(A + Aᵀ) + η²AᵀA")
    n2 = d.lemma(NORM_LMAX, "‖I + ηA‖² = λ_max((I + ηA)ᵀ(I + ηA))", M=M)
    # the pieces: λ_max(η(A + Aᵀ)) = 2ημ₂(A) and λ_max(η²AᵀA) = η²‖A‖²
    s1 = d.lemma(LMAX_SCALE, "pull η out", c=eta, X=sym_a)
    ln = d.lemma(LOGNORM, "λ_max(A + Aᵀ) = 2μ₂(A)", A=A)
    s3 = d.lemma(LMAX_SCALE, "pull η² out", c=eta**2, X=gram)
    gn = d.lemma(NORM_LMAX, "‖A‖² = λ_max(AᵀA)", M=A)
    sh = d.lemma(LMAX_SHIFT, "shift by I", X=x1 + y1)
    weyl = d.lemma(WEYL, "Weyl", X=x1, Y=y1)
    w1 = d.lemma(ADD, "add 1", a=weyl.lhs, b=weyl.rhs, c=1)
    u, v = sp.Dummy("u"), sp.Dummy("v")
    both1 = d.lemma(
        LEIBNIZ2,
        "pull η and η² out inside 1 + · + ·",
        F=sp.Lambda((u, v), 1 + u + v),
        x=s1.lhs,
        y=s1.rhs,
        a=s3.lhs,
        b=s3.rhs,
    )
    both2 = d.lemma(
        LEIBNIZ2,
        "λ_max(A + Aᵀ) = 2μ₂(A) and λ_max(AᵀA) = ‖A‖² inside 1 + η· + η²·",
        F=sp.Lambda((u, v), 1 + eta * u + eta**2 * v),
        x=ln.lhs,
        y=ln.rhs,
        a=gn.rhs,
        b=gn.lhs,
    )
    bound = d.chain([n2, sh, w1, both1, both2], "‖I + ηA‖² ≤ 1 + 2ημ₂ + η²‖A‖²")
    # sufficiency: η‖A‖² < −2μ₂, so η(η‖A‖² + 2μ₂) < 0
    thr = sp.Lt(eta, -2 * mu / a2)
    t1 = d.lemma(MUL_STRICT, "multiply by ‖A‖² > 0", a=eta, b=thr.rhs, c=a2)
    t2 = d.lemma(ADD_STRICT, "add 2μ₂", a=t1.lhs, b=t1.rhs, c=2 * mu)
    t3 = d.lemma(MUL_STRICT, "multiply by η > 0", a=t2.lhs, b=0, c=eta)
    t4 = d.lemma(ADD_STRICT, "add 1", a=t3.lhs, b=0, c=1)
    d.chain([bound, t4], "‖I + ηA‖² < 1")


# ---------------------------------------------------------------------- C13
ROW_NORM = lemma(
    "squared norm as a trace",
    "‖x‖² = x xᵀ = tr(x xᵀ) for a row vector x.",
    ("definition of the Euclidean norm",),
    (_X,),
    (Pred("row_vector", (_X,)),),
    (sp.Eq(norm(_X) ** 2, tr(_X * Tr(_X))),),
)
ROW_TIMES_MATRIX = lemma(
    "a transposed column vector times a matrix is a row vector",
    "If x is a column vector (n × 1) and M an n × p matrix, then xᵀM is a row vector (1 × p).",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, §0.2 (matrix product)",),
    (_X, _M),
    (Pred("column_vector", (_X,)),),
    (Pred("row_vector", (Tr(_X) * _M,)),),
)
TRACE_CYCLIC = lemma(
    "cyclic property of the trace",
    "tr(XY) = tr(YX) whenever both products are defined.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, §0.4.5 (c)",),
    (_X, _Y),
    (),
    (sp.Eq(tr(_X * _Y), tr(_Y * _X)),),
)
TRACE_EXPECTATION = lemma(
    "expectation commutes with a linear map",
    "For a deterministic matrix M and a random matrix R with finite mean: "
    "E[tr(M R)] = tr(M E[R]) (linearity of expectation and of the trace).",
    ("W. Feller, An Introduction to Probability Theory and Its Applications II, 1971, §V.4",),
    (_M, _R),
    (Pred("deterministic", (_M,)), Pred("finite_second_moments", (_R,))),
    (sp.Eq(E(tr(_M * _R)), tr(_M * EM(_R))),),
)
FROBENIUS = lemma(
    "Frobenius norm as a trace",
    "‖J‖_F² = Σ_ik J_ik² = tr(J Jᵀ).",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, §5.6 (Frobenius norm)",),
    (_M,),
    (),
    (sp.Eq(fro(_M) ** 2, tr(_M * Tr(_M))),),
)

_c13_J, _c13_v = sp.symbols("J v", commutative=False)


def _c13_goal(scale: Any = 1) -> tuple[Fact, ...]:
    return (sp.Eq(E(norm(Tr(_c13_v) * _c13_J) ** 2), scale * fro(_c13_J) ** 2),)


def _check_c13(n_samples: int = 400, *, seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=seed)
    system = dy.LoopedSystem.from_module(model, torch.randn(1, 4, 8, generator=_gen(seed)))
    h = system.initial_states("input")
    J = dy.jacobian(system, h)[0]
    fro2 = float((J**2).sum())
    op = dy.jacobian_operator(system, h)
    gen = _gen(seed + 1)
    vals = []
    for _ in range(n_samples):
        v = torch.randn(1, 32, generator=gen, dtype=F64)
        vals.append(float((op.rmatvec(v) ** 2).sum()))
    t = torch.tensor(vals, dtype=F64)
    est, se = float(t.mean()), float(t.std() / math.sqrt(n_samples))
    ok = abs(est - fro2) <= 4 * se
    return CheckResult(
        "C13",
        ok,
        f"Hutchinson estimate {est:.4f} ± {se:.4f} (sampled) vs ‖J‖_F² = {fro2:.4f}",
        {"estimate": est, "standard_error": se, "frobenius2": fro2},
    )


@claim(
    "C13",
    "Hutchinson: the DEQ Jacobian regulariser estimates the Frobenius norm",
    r"For a deterministic matrix $J$ and a random vector $v$ with $\mathbb E[vv^\top] = I$ "
    r"(e.g. $v \sim N(0, I)$): $\mathbb E\lVert v^\top J\rVert^2 = \lVert J\rVert_F^2$.",
    ("v a column vector with E[v vᵀ] = I (identity second moment)", "J does not depend on v"),
    ("Bai, Koltun & Kolter, arXiv:2106.14342", "Hutchinson, 1989"),
    _check_c13,
    goal=_c13_goal(),
    assumptions=(
        sp.Eq(EM(_c13_v * Tr(_c13_v)), 1),
        Pred("deterministic", (_c13_J * Tr(_c13_J),)),
        Pred("finite_second_moments", (_c13_v * Tr(_c13_v),)),
        Pred("column_vector", (_c13_v,)),
    ),
    variants=(
        Variant(
            "v with covariance 2I (E[vvᵀ] = 2I in place of I)",
            drop=(0,),
            overrides={"covariance": 2},
        ),
        Variant("the estimate scaled by 1/2", goal=_c13_goal(sp.Rational(1, 2))),
        Variant("v not a column vector (vᵀJ then need not be a row vector)", drop=(3,)),
    ),
)
def c13(d: Derivation, covariance: Any = 1) -> None:
    J, v = _c13_J, _c13_v
    row = Tr(v) * J
    d.lemma(ROW_TIMES_MATRIX, "vᵀJ is a row vector", X=v, M=J)
    n2 = d.lemma(ROW_NORM, "‖vᵀJ‖² = tr(vᵀJJᵀv)", X=row)
    cyc = d.lemma(TRACE_CYCLIC, "tr(vᵀ · JJᵀv) = tr(JJᵀv · vᵀ)", X=Tr(v), Y=J * Tr(J) * v)
    e_n = _rewrite(d, E(n2.lhs), n2.lhs, n2.rhs, "take expectations")
    e_c = _rewrite(d, e_n.rhs, cyc.lhs, cyc.rhs, "the cyclic trace inside E")
    lin = d.lemma(TRACE_EXPECTATION, "E tr(JJᵀ vvᵀ) = tr(JJᵀ E[vvᵀ])", M=J * Tr(J), R=v * Tr(v))
    cov = _rewrite(d, lin.rhs, EM(v * Tr(v)), covariance, "E[vvᵀ] = I")
    fr = d.lemma(FROBENIUS, "‖J‖_F² = tr(JJᵀ)", M=J)
    d.chain([e_n, e_c, lin, cov, sp.Eq(fr.rhs, fr.lhs)], "E‖vᵀJ‖² = ‖J‖_F²")


# ---------------------------------------------------------------------- C14
OPNORM_SCALE = lemma(
    "homogeneity of the operator norm",
    "‖cX‖₂ = |c| ‖X‖₂ for a scalar c.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, §5.1 (norm axioms)",),
    (_c, _X),
    (),
    (sp.Eq(opnorm(_c * _X), sp.Abs(_c) * opnorm(_X)),),
)
DIAG_NORM = lemma(
    "‖diag(γ)‖₂ = max|γ_i|",
    "‖diag(γ)‖₂ = max_i |γ_i|.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, §5.6",),
    (_G, _g),
    (Pred("diagonal_with_entries", (_G, _g)),),
    (sp.Eq(opnorm(_G), maxabs(_g)),),
)
PROJECTOR_NORM = lemma(
    "orthogonal projector norm",
    "For a unit vector û, I − ûûᵀ is an orthogonal projector, so ‖I − ûûᵀ‖₂ ≤ 1.",
    (
        "R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, §5.6; an orthogonal "
        "projector's eigenvalues are 0 and 1",
    ),
    (_V,),
    (Pred("unit_vector", (_V,)),),
    (sp.Le(opnorm(1 - _V * Tr(_V)), 1),),
)

_c14_d = sp.Symbol("d", integer=True, positive=True)
_c14_nu = sp.Symbol("nu", positive=True)  # ‖u‖
_c14_N, _c14_U, _c14_h, _c14_gam = sp.symbols("N u h gamma")
_c14_G, _c14_uh = sp.symbols("G uhat", commutative=False)
_C14_FACTOR = sp.sqrt(_c14_d) * maxabs(_c14_gam) / _c14_nu
_C14_JN = sp.sqrt(_c14_d) / _c14_nu * _c14_G * (1 - _c14_uh * Tr(_c14_uh))


def _c14_goal(factor: Any = None) -> tuple[Fact, ...]:
    fac = _C14_FACTOR if factor is None else factor
    dh = D(compose(_c14_N, _c14_U), _c14_h)
    return (
        sp.Le(opnorm(dh), fac * opnorm(D(_c14_U, _c14_h))),
        sp.Le(sp.Derivative(fac, _c14_nu), 0, evaluate=False),
    )


def _check_c14(*, seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=16, n_heads=2, recall="outer", norm="outer", norm_eps=1e-12, seed=seed
    )
    x = 4 * torch.randn(2, 6, 16, generator=_gen(seed), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    m = system.module
    assert m is not None

    mm: Any = m

    def pre(h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        u = mm._enter(h, e)
        for layer in mm.layers:
            u = layer(u, e)
        return u

    pre_sys = dy.LoopedSystem.from_function(pre, system.state_shape, x=system.x, validate=False)
    h = system.initial_states("normal", 1, seed=seed)
    with torch.no_grad():
        u = pre_sys.step(h)
    total = dy.spectral_norm(system, h).values
    inner = dy.spectral_norm(pre_sys, h).values
    final: Any = m.final_norm
    gmax = float(final.weight.detach().abs().max())
    bound = math.sqrt(16) * gmax / u.norm(dim=-1).amin(dim=1) * inner
    ok = bool((total <= bound * (1 + 1e-9)).all())
    return CheckResult(
        "C14",
        ok,
        f"‖∂h⁺/∂h‖ = {total.tolist()} <= (√d max|γ| / min‖u_t‖)·‖∂u/∂h‖ = {bound.tolist()}",
        {"local": total.tolist(), "bound": bound.tolist()},
    )


@claim(
    "C14",
    "Outer normalization as a contraction knob",
    r"For $h^+ = N(u(h))$ with $N$ RMSNorm (gains $\gamma$, $\varepsilon = 0$) on one token "
    r"$u \in \mathbb R^d$, $u \ne 0$, whose Jacobian is $\partial N(u) = \frac{\sqrt d}"
    r"{\lVert u\rVert}\mathrm{diag}(\gamma)(I - \hat u\hat u^\top)$, $\hat u = u/\lVert u\rVert$ "
    r"(C4): $\lVert\partial h^+/\partial h\rVert_2 \le \frac{\sqrt d \max|\gamma|}{\lVert u\rVert}"
    r"\lVert\partial u/\partial h\rVert_2$, and the factor of this bound does not increase with "
    r"$\lVert u\rVert$ ($\partial/\partial\lVert u\rVert$ of it is $-\sqrt d\max|\gamma|/"
    r"\lVert u\rVert^2 \le 0$): a larger pre-norm update lowers the bound (not necessarily "
    r"the Jacobian's norm itself).",
    (
        "RMSNorm with ε = 0 (ε > 0 only lowers the factor)",
        "∂N(u) = (√d/‖u‖) diag(γ)(I − ûûᵀ) (C4)",
        "u and N differentiable",
    ),
    ("SCIENCE.md C14",),
    _check_c14,
    goal=_c14_goal(),
    assumptions=(
        Pred("differentiable", (_c14_U,)),
        Pred("differentiable", (_c14_N,)),
        sp.Eq(D(_c14_N, Ap(_c14_U, _c14_h)), _C14_JN),
        Pred("diagonal_with_entries", (_c14_G, _c14_gam)),
        Pred("unit_vector", (_c14_uh,)),
    ),
    variants=(
        Variant("half the bound", goal=_c14_goal(_C14_FACTOR / 2)[:1]),
        Variant("the factor with ‖u‖² in place of ‖u‖", goal=_c14_goal(_C14_FACTOR / _c14_nu)[:1]),
        Variant("without ‖I − ûûᵀ‖ ≤ 1 (û not a unit vector)", drop=(4,)),
        Variant(
            "the bound's factor increases with ‖u‖",
            goal=(sp.Lt(0, sp.Derivative(_C14_FACTOR, _c14_nu), evaluate=False),),
        ),
    ),
    uses=("C4",),
)
def c14(d: Derivation) -> None:
    N, U, h, gam, G, uh, nu = _c14_N, _c14_U, _c14_h, _c14_gam, _c14_G, _c14_uh, _c14_nu
    c = sp.sqrt(_c14_d) / nu
    proj = 1 - uh * Tr(uh)
    ch = d.lemma(CHAIN_RULE, "∂h⁺/∂h = ∂N(u) ∂u/∂h", f=U, g=N, x=h)
    jn, ju = ch.rhs.args
    n_ch = _rewrite(d, opnorm(ch.lhs), ch.lhs, ch.rhs, "take norms")
    sub = d.lemma(SUBMULTIPLICATIVE, "‖∂N ∂u‖ ≤ ‖∂N‖‖∂u‖", A=jn, B=ju)
    # ‖∂N(u)‖ ≤ (√d/‖u‖) max|γ| from the Jacobian of C4
    jac = sp.Eq(jn, _C14_JN)
    n_jn = _rewrite(d, opnorm(jn), jac.lhs, jac.rhs, "C4's Jacobian")
    sub2 = d.lemma(SUBMULTIPLICATIVE, "‖c G (I − ûûᵀ)‖ ≤ ‖cG‖‖I − ûûᵀ‖", A=c * G, B=proj)
    sc = d.lemma(OPNORM_SCALE, "‖cG‖ = c‖G‖", c=c, X=G)
    dg = d.lemma(DIAG_NORM, "‖diag(γ)‖ = max|γ|", G=G, g=gam)
    pr = d.lemma(PROJECTOR_NORM, "‖I − ûûᵀ‖ ≤ 1", V=uh)
    r1 = _rewrite(d, sub2.rhs, sc.lhs, sc.rhs, "pull c out")
    r2 = _rewrite(d, r1.rhs, dg.lhs, dg.rhs, "the gains")
    m1 = d.lemma(MUL, "times c max|γ| ≥ 0", a=pr.lhs, b=pr.rhs, c=c * maxabs(gam))
    b_jn = d.chain([n_jn, sub2, r1, r2, m1], "‖∂N(u)‖ ≤ √d max|γ|/‖u‖")
    m2 = d.lemma(MUL, "times ‖∂u/∂h‖ ≥ 0", a=b_jn.lhs, b=b_jn.rhs, c=opnorm(ju))
    d.chain([n_ch, sub, m2], "‖∂h⁺/∂h‖ ≤ (√d max|γ|/‖u‖)‖∂u/∂h‖")
    # the bound's factor does not increase with ‖u‖: differentiate, then the sign
    slope = -sp.sqrt(_c14_d) * maxabs(gam) / nu**2
    dv = d.identity(sp.Derivative(_C14_FACTOR, nu), slope, "d/d‖u‖ (√d max|γ|/‖u‖)")
    neg = d.inequality(slope, 0, "−√d max|γ|/‖u‖² ≤ 0 (max|γ| ≥ 0, ‖u‖ > 0)")
    d.chain([dv, neg], "the factor does not increase with ‖u‖")
