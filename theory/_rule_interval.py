"""R12 (interval slopes: the rules of dynamo's jet interpreter, and Krawczyk's inclusion) and R13
(Krawczyk's test: K(X) in the interior of X proves exactly one fixed point in X).

dynamo's proofs of fixed points (:mod:`dynamo._interval`) evaluate a traced map in arb ball
arithmetic. Each node gets a *jet*: balls enclosing its value over the box ``X`` of states, and a
ball array ``der`` enclosing its *pairwise slopes*: for any two states ``a, b`` of ``X``,
``v(a) − v(b) = S (a − b)`` for some ``S`` in ``der``. R12 proves the rules that keep this
invariant from a node's inputs to the node, on symbols: sums, a constant linear map, the
composition of two nodes, the elementwise product, every smooth entry of the interpreter's
``_UNARY`` table and GELU through the mean value theorem, ReLU's slopes in ``[0, 1]``, the
softmax's Jacobian and slope, and the centred form ``v(a) ∈ v(b) + S(a − b)`` the interpreter
intersects each value ball with. The table's formulas (values and derivatives) are stated here as
the table writes them: ``dynamo.kernel`` does not expose the interpreter, and ``theory`` may not
import it, so the numeric check runs them through dynamo's own interpreter (``prove_fixed_point``)
instead. With the invariant for ``f``, R12 proves Krawczyk's inclusion: for every ``x`` of ``X``,
``x − C F(x)`` lies in ``K(X) = c − C F(c) + (I − C(S(X) − I))(X − c)``, so every fixed point of
``f`` in ``X`` lies in ``K(X)``. R13 proves that ``K(X)`` in the interior of ``X`` gives exactly one
fixed point: existence by Brouwer's theorem on ``g(x) = x − C F(x)``, uniqueness from the
nonsingularity of every ``C(S − I)``, which is the cited textbook step.

The formal vocabulary:

* ``contains(A, x)``: ``x`` lies in the set ``A``; ``subset(A, B)``: ``A ⊆ B``.
* ``encloses_slope(D, y, z)``: ``y = S z`` for some ``S`` in the set ``D`` (a set of matrices, of
  rows, or of numbers); ``slope(y, z, D)`` is one such ``S``, chosen.
* ``slope_enclosure(f, D, X)``: ``encloses_slope(D, f(a) − f(b), a − b)`` for every ``a, b`` of
  ``X``.
* ``ieval(e, (z₁, …, z_k), (Z₁, …, Z_k))``, printed ``⟦e⟧(z₁ ← Z₁, …)``: the set arb computes for
  the formula ``e`` with each ``zᵢ`` replaced by the ball (array) ``Zᵢ``, operation by operation,
  as dynamo's code writes it. Interval operations are not ring operations (``X − X ≠ 0``,
  ``X(Y + Z) ⊆ XY + XZ`` only), so it is one opaque symbol named by the formula
  (:class:`IntervalSet`): sympy never simplifies inside it, two are the same set only when their
  formulas and balls are, and only the fundamental theorem of interval arithmetic (a cited lemma)
  says anything about it.
* Vectors and matrices are noncommutative symbols; ``1`` stands for the identity matrix.
* The set comes first in ``contains`` and ``encloses_slope``: the engine compares propositions
  argument by argument, and sets are cheap to tell apart.

Generic indices and points follow R7's convention: ``a, b`` are any two states of ``X``, the entry
values ``u_a, u_b, …`` are one entry of a node at them (every assumption that mentions them holds
for all of them), ``j`` is any entry of the softmax.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import sympy as sp
import torch

from ._claims import LEIBNIZ
from ._core import CheckResult, Variant, claim
from ._lemmas import BROUWER, at
from ._logic import Derivation, Pred, lemma
from ._rule_graph import S_ROW, _failed, _softmax_entry, ddir, ev
from ._rule_polynomial import slope_at

F64 = torch.float64

_RUDIN = "W. Rudin, Principles of Mathematical Analysis, 3rd ed., McGraw-Hill, 1976"
_FTIA = (
    "the fundamental theorem of interval arithmetic (R. E. Moore, Interval Analysis, "
    "Prentice-Hall, 1966; stated and proved for formulas in M. H. van Emden, B. Moa, 'The "
    "fundamental theorems of interval analysis', arXiv:cs/0701141, 2007)"
)
_ARB = (
    "F. Johansson, 'Arb: efficient arbitrary-precision midpoint-radius interval arithmetic', "
    "IEEE Trans. Computers 66(8), 2017 (every arb operation's ball contains the exact result of "
    "the operation on every point of its operands, rounding included)"
)
_LOGIC = (
    "the equality axioms of first-order logic; e.g. H. B. Enderton, A Mathematical Introduction "
    "to Logic, 2nd ed., 2001, §2.4"
)
_KRAWCZYK = (
    "R. Krawczyk, 'Newton-Algorithmen zur Bestimmung von Nullstellen mit Fehlerschranken', "
    "Computing 4, 187–201, 1969"
)
_MOORE77 = (
    "R. E. Moore, 'A test for existence of solutions to nonlinear systems', SIAM J. Numer. Anal. "
    "14(4), 611–615, 1977"
)
_NEUMAIER = (
    "A. Neumaier, Interval Methods for Systems of Equations, Cambridge University Press, 1990, "
    "ch. 5 (nonlinear systems; the Krawczyk operator)"
)
_RUMP = (
    "S. M. Rump, 'Verification methods: rigorous results using floating-point arithmetic', Acta "
    "Numerica 19, 287–449, 2010, part 2 (systems of nonlinear equations: the Krawczyk operator "
    "with slopes, and the nonsingularity that an inclusion in the interior implies)"
)


# ---------------------------------------------------------------------- function symbols
class _Var(sp.Symbol):
    """A variable of a lemma's template (so that :class:`ieval` stays unevaluated there)."""


class IntervalSet(sp.Symbol):
    """The set arb computes for a formula on balls, as one opaque symbol named by the formula:
    interval sets depend on the formula's syntax (``X − X ≠ 0``), so sympy must not simplify
    inside them, and two are the same set only when the formulas and balls are the same."""

    _parts: ClassVar[dict[str, tuple[Any, Any, Any]]] = {}

    def _latex(self, printer: Any) -> str:
        expr, zs, sets = self._parts[self.name]
        args = ", ".join(
            rf"{printer._print(z)} \leftarrow {printer._print(b)}"
            for z, b in zip(zs, sets, strict=True)
        )
        return rf"\llbracket {printer._print(expr)} \rrbracket({args})"


class ieval(sp.Function):
    """``ieval(e, (z₁, …), (Z₁, …))``: the set arb computes for the formula ``e`` with each
    ``zᵢ`` replaced by the ball ``Zᵢ``, operation by operation; an :class:`IntervalSet` once
    the formula is explicit (in a lemma's template it is a placeholder)."""

    @classmethod
    def eval(cls, expr: Any, zs: Any, sets: Any) -> Any:
        if isinstance(expr, sp.Symbol):
            return None
        if any(isinstance(v, _Var) for v in (*expr.free_symbols, *sp.Tuple(*sets).free_symbols)):
            return None
        pairs = ", ".join(f"{z} ← {b}" for z, b in zip(zs, sets, strict=True))
        name = f"⟦{expr}⟧({pairs})"
        IntervalSet._parts[name] = (expr, tuple(zs), tuple(sets))
        return IntervalSet(name)


#: ``slope(y, z, D)``: a chosen ``S`` in ``D`` with ``y = S z`` (a matrix or a row)
slope = sp.Function("slope", commutative=False)
#: ``pt(X, θ)``: the point of ``X`` with parameter ``θ`` (every point of ``X`` is one)
pt = sp.Function("pt", commutative=False)
#: ``xi(φ, p, q)``: a mean value point of ``φ`` between ``p`` and ``q``
mvt_pt = sp.Function("xi", real=True)
#: ``fixpt(g, X)``: a chosen fixed point of ``g`` in ``X``
fixpt = sp.Function("fixpt", commutative=False)
#: ``inv(M)``: the inverse of a nonsingular matrix
inv = sp.Function("inv", commutative=False)
#: ReLU, left unevaluated (its two branches are lemmas)
relu = sp.Function("relu", real=True)


class subs_all(sp.Function):
    """``subs_all(e, (z₁, …), (t₁, …))``: ``e`` with every ``zᵢ`` replaced by ``tᵢ`` at once,
    evaluated once ``e`` is an explicit formula (in a lemma's template it is a placeholder)."""

    @classmethod
    def eval(cls, expr: Any, zs: Any, ts: Any) -> Any:
        if isinstance(expr, sp.Symbol):
            return None
        return expr.xreplace(dict(zip(zs, ts, strict=True)))


class at_point(sp.Function):
    """``at_point(e, s, X)``: ``e`` (written in the entries ``s[·]`` of a point) at the point
    ``X`` (an IndexedBase), evaluated once ``e`` is explicit."""

    @classmethod
    def eval(cls, expr: Any, s: Any, point: Any) -> Any:
        if isinstance(expr, sp.Symbol) or not isinstance(point, sp.IndexedBase):
            return None
        if expr.has(ddir):
            return None
        return expr.xreplace({s: point})


class seg_dir(sp.Function):
    """``seg_dir(P, Q)``: the direction ``t ↦ P[t] − Q[t]`` from ``Q`` to ``P``."""

    @classmethod
    def eval(cls, p: Any, q: Any) -> Any:
        if not (isinstance(p, sp.IndexedBase) and isinstance(q, sp.IndexedBase)):
            return None
        return sp.Lambda(_tt, p[_tt] - q[_tt])


class seg_point(sp.Function):
    """``seg_point(f, j, P, Q)``: a mean value point on the segment from ``Q`` to ``P`` for
    entry ``j`` of the map ``f`` (a point: its entries are ``ξ[t]``); one per (f, j, P, Q)."""

    @classmethod
    def eval(cls, f: Any, j: Any, p: Any, q: Any) -> Any:
        if not (isinstance(p, sp.IndexedBase) and isinstance(q, sp.IndexedBase)):
            return None
        return sp.IndexedBase(f"xi_({f},{j};{p.label},{q.label})", real=True)


_tt = sp.Symbol("t", integer=True, positive=True)  # an entry index of a point
_eps = sp.Symbol("epsilon", real=True)


def _in(x: Any, s: Any) -> Pred:
    """``contains(A, x)``: x ∈ A (the set first: sets are cheap to tell apart)."""
    return Pred("contains", (s, x))


def _slope_in(y: Any, z: Any, s: Any) -> Pred:
    """``encloses_slope(D, y, z)``: y = S z for some S in D."""
    return Pred("encloses_slope", (s, y, z))


def _ieval(expr: Any, zs: tuple[Any, ...], sets: tuple[Any, ...]) -> Any:
    return ieval(expr, sp.Tuple(*zs), sp.Tuple(*sets))


# ---------------------------------------------------------------------- cited lemmas
def _inclusion(k: int) -> Any:
    expr = sp.Symbol("E")
    zs = sp.symbols(f"z1:{k + 1}")
    ts = sp.symbols(f"t1:{k + 1}")
    sets = sp.symbols(f"Z1:{k + 1}")
    return lemma(
        f"interval: inclusion ({k} variable{'s' if k > 1 else ''})",
        "If tᵢ ∈ Zᵢ for each i, the value of a formula E(z₁, …, z_k) at zᵢ = tᵢ lies in its "
        "interval evaluation E(Z₁, …, Z_k): each operation of the formula evaluated on balls "
        "gives a ball containing the operation's value at every point of its operands, so by "
        "induction over the formula the final ball contains the formula's value at (t₁, …, t_k).",
        (_FTIA, _ARB),
        (expr, *zs, *ts, *sets),
        tuple(_in(t, z) for t, z in zip(ts, sets, strict=True)),
        (_in(subs_all(expr, sp.Tuple(*zs), sp.Tuple(*ts)), _ieval(expr, zs, sets)),),
    )


INCLUSION = {k: _inclusion(k) for k in (1, 2, 3, 4)}

_y, _D, _X = sp.symbols("y D X")
_zc = sp.Symbol("z", commutative=False)
_Tc = sp.Symbol("T", commutative=False)
_f, _g = sp.symbols("f g")
_a, _b, _p, _q = sp.symbols("a b p q", commutative=False)
_A, _B = sp.symbols("A B")

SLOPE_WITNESS = lemma(
    "interval: a slope from a slope set",
    "If y = S z for some S in the set D, one such S, chosen and written slope(y, z, D), lies in "
    "D and y = slope(y, z, D) z.",
    ("definition of slope_in(y, z, D) (∃ S ∈ D: y = S z), and the choice of a witness",),
    (_y, _zc, _D),
    (_slope_in(_y, _zc, _D),),
    (sp.Eq(_y, slope(_y, _zc, _D) * _zc), _in(slope(_y, _zc, _D), _D)),
)

SLOPE_INTRO = lemma(
    "interval: a slope set from a slope",
    "If y = T z and T lies in D, then y = S z for some S in D.",
    ("definition of slope_in(y, z, D) (∃ S ∈ D: y = S z)",),
    (_y, _Tc, _zc, _D),
    (sp.Eq(_y, _Tc * _zc), _in(_Tc, _D)),
    (_slope_in(_y, _zc, _D),),
)

SLOPE_AT = lemma(
    "interval: a slope enclosure at two points",
    "If D encloses the pairwise slopes of f on X (for every a, b of X, f(a) − f(b) = S(a − b) "
    "for some S in D), then for two points a, b of X, f(a) − f(b) = S(a − b) for some S in D.",
    (
        "definition of a pairwise slope enclosure (what dynamo's jets carry: "
        "dynamo/_interval/_jet.py); cf. Neumaier 1990 and Rump 2010 on slopes",
    ),
    (_f, _D, _X, _a, _b),
    (Pred("slope_enclosure", (_f, _D, _X)), _in(_a, _X), _in(_b, _X)),
    (_slope_in(ev(_f, _a) - ev(_f, _b), _a - _b, _D),),
)

_theta = sp.Symbol("theta")
POINT_OF = lemma(
    "interval: the points of a set",
    "pt(X, θ) lies in X for every parameter θ, and every point of X is pt(X, θ) for some θ (θ "
    "ranges over X itself and pt(X, θ) = θ): a fact shown for pt(X, θ) with θ generic holds for "
    "every point of X.",
    ("definition of pt",),
    (_X, _theta),
    (),
    (_in(pt(_X, _theta), _X),),
)

MEMBER_EQ = lemma(
    "interval: equals lie in the same sets",
    "If p = q and p lies in A, then q lies in A.",
    (_LOGIC,),
    (_p, _q, _A),
    (sp.Eq(_p, _q), _in(_p, _A)),
    (_in(_q, _A),),
)

SUBSET_MEMBER = lemma(
    "interval: a point of a subset",
    "If p lies in A and A ⊆ B, then p lies in B.",
    ("definition of ⊆",),
    (_p, _A, _B),
    (_in(_p, _A), Pred("subset", (_A, _B))),
    (_in(_p, _B),),
)

_E, _tv = sp.symbols("E t")
_pr, _qr = sp.symbols("p q", real=True)
_U, _Dom = sp.symbols("U D")
_G = sp.Symbol("G")
MEAN_VALUE_THEOREM = lemma(
    "interval: mean value theorem on an interval",
    "If φ (t ↦ E) is continuously differentiable on D with φ′(t) = G(t) for every t of D, U ⊆ D "
    "is an interval and p, q lie in U, then φ(p) − φ(q) = G(ξ)(p − q) for a point "
    "ξ = xi(φ, p, q) between p and q, so ξ lies in U (an interval is convex).",
    (f"{_RUDIN}, Thm 5.10 (the mean value theorem), on [min(p, q), max(p, q)] ⊆ U",),
    (_E, _G, _tv, _pr, _qr, _U, _Dom),
    (
        Pred("C1_on", (_Dom, _tv, _E)),
        Pred("derivative_on", (_Dom, _tv, _E, _G)),
        Pred("subset", (_U, _Dom)),
        Pred("interval", (_U,)),
        _in(_pr, _U),
        _in(_qr, _U),
    ),
    (
        sp.Eq(
            at(_E, _tv, _pr) - at(_E, _tv, _qr),
            at(_G, _tv, mvt_pt(sp.Lambda(_tv, _E), _pr, _qr)) * (_pr - _qr),
        ),
        _in(mvt_pt(sp.Lambda(_tv, _E), _pr, _qr), _U),
    ),
)

DIFFERENTIATION = lemma(
    "interval: the derivative of an explicit formula",
    "The derivative of an explicit formula E in t is the one the rules of differentiation give "
    "(sums, products, quotients, the chain rule, and the derivatives of exp, log, sin, cos, "
    "tanh = sinh/cosh, √t, and erf(t) = (2/√π)∫₀ᵗ e^(−s²) ds), as sympy applies them.",
    (
        f"{_RUDIN}, Thms 5.3 and 5.5 (the rules and the chain rule), §8.6–8.7 (exp, log, sin, "
        "cos), Thm 6.20 (the fundamental theorem of calculus, for erf)",
    ),
    (_E, _tv),
    (),
    (sp.Eq(sp.Derivative(_E, _tv), slope_at(_E, _tv, _tv)),),
)

_xr = sp.Symbol("x", real=True)
_lo, _hi = sp.symbols("lo hi", real=True)
RELU_POSITIVE = lemma(
    "interval: ReLU on x ≥ 0",
    "relu(x) = max(0, x) = x for x ≥ 0.",
    ("definition of relu",),
    (_xr,),
    (sp.Ge(_xr, 0),),
    (sp.Eq(relu(_xr), _xr),),
)
RELU_NEGATIVE = lemma(
    "interval: ReLU on x ≤ 0",
    "relu(x) = max(0, x) = 0 for x ≤ 0.",
    ("definition of relu",),
    (_xr,),
    (sp.Le(_xr, 0),),
    (sp.Eq(relu(_xr), 0),),
)
INTERVAL_MEMBER = lemma(
    "interval: a number between the ends",
    "If lo ≤ x ≤ hi then x lies in the interval [lo, hi].",
    ("definition of [lo, hi]",),
    (_xr, _lo, _hi),
    (sp.Le(_lo, _xr), sp.Le(_xr, _hi)),
    (_in(_xr, sp.Interval(_lo, _hi)),),
)

_e, _jj, _nn = sp.symbols("e j n")
_PP, _QQ = sp.symbols("P Q")
MEAN_VALUE_SEGMENT = lemma(
    "interval: mean value theorem for one entry, on a segment",
    "Let f: ℝⁿ → ℝⁿ be continuously differentiable with entries e(s, j) at the point s, and P, "
    "Q two points of a convex set B. For each entry j, t ↦ e(Q + t(P − Q), j) on [0, 1] has, "
    "by the mean value theorem and the chain rule, e(P, j) − e(Q, j) = d/dε e(ξ + ε(P − Q), j) "
    "at ε = 0 for a point ξ = seg_point(f, j, P, Q) of the segment from Q to P, which lies in B.",
    (f"{_RUDIN}, Thm 5.10 (mean value theorem) and Thm 9.15 (chain rule)",),
    (_f, _e, _jj, _nn, _PP, _QQ, _B),
    (
        Pred("C1", (_f,)),
        Pred("entries_of", (_f, sp.Lambda((S_ROW.label, _jj), _e), _nn)),
        _in(_PP, _B),
        _in(_QQ, _B),
        Pred("convex", (_B,)),
    ),
    (
        sp.Eq(
            at_point(_e, S_ROW, _PP) - at_point(_e, S_ROW, _QQ),
            at_point(ddir(_e, S_ROW, seg_dir(_PP, _QQ), _eps), S_ROW, seg_point(_f, _jj, _PP, _QQ)),
        ),
        _in(seg_point(_f, _jj, _PP, _QQ), _B),
    ),
)


def _entrywise(k: int) -> Any:
    a = sp.symbols(f"a1:{k + 1}")
    b = sp.symbols(f"b1:{k + 1}")
    return lemma(
        f"interval: {k} equations as one column",
        "If aᵢ = bᵢ for i = 1, …, k, the columns (a₁, …, a_k) and (b₁, …, b_k) are equal.",
        ("definition of equality of tuples",),
        (*a, *b),
        tuple(sp.Eq(x, y) for x, y in zip(a, b, strict=True)),
        (sp.Eq(sp.ImmutableMatrix(a), sp.ImmutableMatrix(b), evaluate=False),),
    )


_K, _Cm, _Fc, _SX = sp.symbols("K C F_c S_X")
FIXED_POINTS_IN = lemma(
    "interval: fixed points lie where x − C F(x) lies",
    "If x − C(f(x) − x) lies in K for every point x of X, then every fixed point x* of f in X "
    "(f(x*) − x* = 0) lies in K (there x − C(f(x) − x) = x*).",
    ("elementary: set f(x*) − x* = 0",),
    (_f, _Cm, _X, _K, _theta),
    (
        Pred(
            "forall",
            (
                _theta,
                _in(
                    pt(_X, _theta) - _Cm * (ev(_f, pt(_X, _theta)) - pt(_X, _theta)),
                    _K,
                ),
            ),
        ),
    ),
    (Pred("fixed_points_in", (_f, _X, _K)),),
)


# ---------------------------------------------------------------------- the interpreter's table
# The smooth entries of the interpreter's table (``_UNARY`` in dynamo/_interval/_jet.py), by domain
# class: "R" (C¹ on ℝ), "P" (C¹ on (0, ∞): the code refuses a ball reaching 0 or below), "N" (C¹
# on ℝ ∖ {0}); relu has its own rule. dynamo.kernel does not expose the interpreter, so the
# formulas are stated here, each as the table writes it (value φ(t), slope g(t, y) with y the value
# ball); the numeric check runs them through dynamo's own interpreter (prove_fixed_point).
_OPS = {
    "tanh": "R",
    "exp": "R",
    "sigmoid": "R",
    "erf": "R",
    "rsqrt": "P",
    "sqrt": "P",
    "log": "P",
    "neg": "R",
    "reciprocal": "N",
    "silu": "R",
    "sin": "R",
    "cos": "R",
}

# the variable the formulas are written in (positive for rsqrt, sqrt, log)
_tR = sp.Symbol("t", real=True)
_tP = sp.Symbol("t", positive=True)
_VAR = {"R": _tR, "P": _tP, "N": _tR}
_yv = sp.Symbol("y", real=True)  # the value ball's placeholder
_sv = sp.Symbol("sigma", commutative=False)  # the slope row's placeholder
_kpow = sp.Symbol("k", integer=True, positive=True)

# one entry of a node u: its values at a and b, its ball (an interval) and its slope-row set
_ua, _ub = sp.symbols("u_a u_b", real=True)
_Uset, _DU = sp.symbols("U D_U")
# two C¹ functions: φ with φ′(t) = G(t, φ(t)) on D_φ, ψ with ψ′(t) = H(t) on D_ψ
_phi = sp.Function("phi", real=True)
_psi = sp.Function("psi", real=True)
_Gf = sp.Function("G", real=True)
_Hf = sp.Function("H", real=True)
_Dphi, _Dpsi = sp.symbols("D_phi D_psi")


def _sigmoid(t: Any) -> Any:
    return 1 / (1 + sp.exp(-t))


#: Φ and φ as the interpreter's ``_phi``, ``_phi_d`` write them
_PHI = (1 + sp.erf(_tR / sp.sqrt(2))) / 2
_PHI_D = sp.exp(-(_tR**2) / 2) / sp.sqrt(2 * sp.pi)
#: name → (φ(t), g(t, y)) as the interpreter's table writes them (gelu: its branch, v Φ(v) and
#: Φ(v) + v φ(v); pow: ``kk * ipow(v, kk - 1)``, for every integer k ≥ 1)
_TABLE: dict[str, tuple[Any, Any]] = {
    "tanh": (sp.tanh(_tR), 1 - _yv**2),
    "exp": (sp.exp(_tR), _yv),
    "sigmoid": (_sigmoid(_tR), _yv * (1 - _yv)),
    "erf": (sp.erf(_tR), 2 / sp.sqrt(sp.pi) * sp.exp(-(_tR**2))),
    "rsqrt": (1 / sp.sqrt(_tP), -(_yv**3) / 2),
    "sqrt": (sp.sqrt(_tP), 1 / (2 * _yv)),
    "log": (sp.log(_tP), 1 / _tP),
    "neg": (-_tR, sp.Integer(-1)),
    "reciprocal": (1 / _tR, -(_yv**2)),
    "silu": (_tR * _sigmoid(_tR), _sigmoid(_tR) * (1 + _tR * (1 - _sigmoid(_tR)))),
    "sin": (sp.sin(_tR), sp.cos(_tR)),
    "cos": (sp.cos(_tR), -sp.sin(_tR)),
    "gelu": (_tR * _PHI, _PHI + _tR * _PHI_D),
    "pow": (_tR**_kpow, _kpow * _tR ** (_kpow - 1)),
}


def _read_op(name: str) -> tuple[Any, Any]:
    """(value, derivative) of one op as the table writes them: the value in the class variable
    t, the derivative in (t, y) with y the value ball's placeholder."""
    return _TABLE[name]


def _ops() -> list[str]:
    return [*_OPS, "gelu", "pow"]


def _op_formulas(name: str) -> tuple[Any, Any, Any]:
    """(variable, value, derivative as a function of t) of one op."""
    value, deriv = _read_op(name)
    return _VAR[_OPS.get(name, "R")], value, deriv.xreplace({_yv: value})


# ---------------------------------------------------------------------- R12: the claim's symbols
_sa, _sb = sp.symbols("a b", commutative=False)  # two states of the box
_DX = _sa - _sb
_ym, _zm, _gm = sp.symbols("y z g")  # vector nodes y, z; a map g of z's values
_Sy, _Sz, _Sg, _Zset = sp.symbols("S_y S_z S_g Z")  # their slope sets; a set holding z's values
_W = sp.Symbol("W", commutative=False)  # a constant matrix
_Yc, _DXc = sp.symbols("Y_c Delta_X")  # the ball of y at the reference point b; the balls X − b
_Zn = sp.symbols("Sigma1:5", commutative=False)  # slope placeholders (matrices, rows)
_zr = sp.symbols("zeta1:5", real=True)  # value placeholders
_va, _vb = sp.symbols("v_a v_b", real=True)  # one entry of the product's second factor
_V, _DV = sp.symbols("V D_V")
# ReLU: every real is P ≥ 0 or −N with N > 0
_P1, _P2 = sp.symbols("P_1 P_2", nonnegative=True)
_N1, _N2 = sp.symbols("N_1 N_2", positive=True)
_I01 = sp.Interval(0, 1)
# the softmax: entries j of a row of n logits; the input row at a and b, its box B
_jn = sp.Symbol("j", integer=True, positive=True)
_nsm = sp.Symbol("n", integer=True, positive=True)
_DIR = sp.IndexedBase("delta", real=True)  # any direction
_XA, _XB = sp.IndexedBase("x_a", real=True), sp.IndexedBase("x_b", real=True)
_Bsm, _sm = sp.symbols("B softmax")
# Krawczyk: the map f, its slope set S_X on the box X, the centre c, the matrix C, F(c)'s ball
_fk = sp.Symbol("f")
_Xk = sp.Symbol("X")
_ck, _Ck = sp.symbols("c C", commutative=False)
_zF, _zS, _zx = sp.symbols("zeta_F zeta_S zeta_x", commutative=False)
_th = sp.Symbol("theta")


def _krawczyk_formula(minus_identity: bool = True, c: Any = _ck, C: Any = _Ck) -> Any:
    """c − C ζ_F + (I − C(ζ_S − I))(ζ_x − c): what ``krawczyk()`` evaluates in arb."""
    inner = _zS - 1 if minus_identity else _zS
    return c - C * _zF + (1 - C * inner) * (_zx - c)


def _krawczyk_set(
    minus_identity: bool = True, names: tuple[Any, ...] = (_ck, _Ck, _Fc, _SX, _Xk)
) -> Any:
    c, C, Fc, SX, X = names
    return _ieval(_krawczyk_formula(minus_identity, c, C), (_zF, _zS, _zx), (Fc, SX, X))


def _newton_point(x: Any) -> Any:
    """x − C F(x), F(x) = f(x) − x."""
    return x - _Ck * (ev(_fk, x) - x)


def _softmax_g(direction: Any, mean: bool = True) -> Any:
    """The softmax's derivative along ``direction``: p_j(δ_j − Σ_k p_k δ_k) (without the mean
    term p_j δ_j: a false variant)."""
    p = _softmax_entry(_nsm)
    if not mean:
        return p * direction(_jn)
    return p * (direction(_jn) - sp.Sum(p * direction(_jn), (_jn, 1, _nsm)))


_ksm = sp.Symbol("k", integer=True, positive=True)


def _softmax_code_entry() -> Any:
    """Entry j of the softmax as the interpreter computes it: 1/Σ_k exp(x_k − x_j)."""
    return 1 / sp.Sum(sp.exp(S_ROW[_ksm] - S_ROW[_jn]), (_ksm, 1, _nsm))


def _softmax_textbook_entry() -> Any:
    """exp(x_j)/Σ_k exp(x_k) (the sum over k: sympy does not rename a sum's index)."""
    return sp.exp(S_ROW[_jn]) / sp.Sum(sp.exp(S_ROW[_ksm]), (_ksm, 1, _nsm))


def _product_fact(sets: tuple[Any, ...]) -> Pred:
    zs = (_Zn[0], _zr[1], _Zn[2], _zr[3])
    formula = _Zn[0] * _zr[1] + _Zn[2] * _zr[3]
    return _slope_in(_ua * _va - _ub * _vb, _DX, _ieval(formula, zs, sets))


def _composition_sets() -> tuple[Any, Any]:
    """The slope sets of φ(u) and ψ(u): ⟦G(t, y) σ⟧(t ← U, y ← ⟦φ(t)⟧(t ← U), σ ← D_U) and
    ⟦H(t) σ⟧(t ← U, σ ← D_U), as the interpreter evaluates its slope formula on the input ball
    (and the value ball)."""
    ball = _ieval(_phi(_tR), (_tR,), (_Uset,))
    with_value = _ieval(_Gf(_tR, _yv) * _sv, (_tR, _yv, _sv), (_Uset, ball, _DU))
    without = _ieval(_Hf(_tR) * _sv, (_tR, _sv), (_Uset, _DU))
    return with_value, without


def _r12_goal() -> tuple[Any, ...]:
    """R12's statement; the unary ops' slope sets and derivative formulas are built from the table
    now (a patched table changes the statement: a false variant)."""
    goal: list[Any] = [
        # sums, differences, a constant linear map, a composition
        _slope_in(
            ev(_ym, _sa) + ev(_zm, _sa) - (ev(_ym, _sb) + ev(_zm, _sb)),
            _DX,
            _ieval(_Zn[0] + _Zn[1], _Zn[:2], (_Sy, _Sz)),
        ),
        _slope_in(
            ev(_ym, _sa) - ev(_zm, _sa) - (ev(_ym, _sb) - ev(_zm, _sb)),
            _DX,
            _ieval(_Zn[0] - _Zn[1], _Zn[:2], (_Sy, _Sz)),
        ),
        _slope_in(_W * ev(_ym, _sa) - _W * ev(_ym, _sb), _DX, _ieval(_W * _Zn[0], _Zn[:1], (_Sy,))),
        _slope_in(
            ev(_gm, ev(_zm, _sa)) - ev(_gm, ev(_zm, _sb)),
            _DX,
            _ieval(_Zn[0] * _Zn[1], _Zn[:2], (_Sg, _Sz)),
        ),
        # the centred form: y(a) ∈ y(b)'s ball + S_y (X − b)
        _in(ev(_ym, _sa), _ieval(_Zn[0] + _Zn[1] * _Zn[2], _Zn[:3], (_Yc, _Sy, _DXc))),
        # the elementwise product, as _mul encloses it: D_U·V + D_V·U
        _product_fact((_DU, _V, _DV, _Uset)),
    ]
    # a C¹ function of one entry, through the mean value theorem
    with_value, without = _composition_sets()
    goal += [
        _slope_in(_phi(_ua) - _phi(_ub), _DX, with_value),
        _slope_in(_psi(_ua) - _psi(_ub), _DX, without),
    ]
    # the derivative formulas as one column of identities: φ′ = g for each op, and Φ′ = φ
    lhs, rhs = zip(*_identities(), strict=True)
    goal.append(sp.Eq(sp.ImmutableMatrix(lhs), sp.ImmutableMatrix(rhs), evaluate=False))
    # ReLU: slopes in [0, 1] for every sign pattern
    goal += [
        _slope_in(relu(_P1) - relu(_P2), _P1 - _P2, _I01),
        _slope_in(relu(-_N1) - relu(-_N2), _N2 - _N1, _I01),
        _slope_in(relu(_P1) - relu(-_N1), _P1 + _N1, _I01),
        _slope_in(relu(-_N1) - relu(_P1), -_N1 - _P1, _I01),
    ]
    # the softmax: the interpreter's form, its derivative along every direction, its slope
    p = _softmax_entry(_nsm)
    direction = sp.Lambda(_tt, _DIR[_tt])
    xi = seg_point(_sm, _jn, _XA, _XB)
    diff_dir = sp.Lambda(_tt, _XA[_tt] - _XB[_tt])
    rows = (
        (_softmax_code_entry(), _softmax_textbook_entry()),
        (ddir(p, S_ROW, direction, _eps), _softmax_g(direction)),
        (
            at_point(p, S_ROW, _XA) - at_point(p, S_ROW, _XB),
            at_point(_softmax_g(diff_dir), S_ROW, xi),
        ),
    )
    lhs, rhs = zip(*rows, strict=True)
    goal += [
        sp.Eq(sp.ImmutableMatrix(lhs), sp.ImmutableMatrix(rhs), evaluate=False),
        _in(xi, _Bsm),
    ]
    # Krawczyk's inclusion: x − C F(x) ∈ K(X) for every x of X; so every fixed point lies in K(X)
    x = pt(_Xk, _th)
    goal += [
        _in(_newton_point(x), _krawczyk_set()),
        Pred("fixed_points_in", (_fk, _Xk, _krawczyk_set())),
    ]
    return tuple(goal)


def _identities() -> list[tuple[Any, Any]]:
    """(φ′ as a derivative, the table's formula for it) for each op, then (Φ′, φ)."""
    out = []
    for name in _ops():
        t, value, deriv = _op_formulas(name)
        out.append((sp.Derivative(value, t), deriv))
    phi, dphi = _gelu_parts()
    out.append((sp.Derivative(phi, _tR), dphi))
    return out


def _gelu_parts() -> tuple[Any, Any]:
    """Φ and φ as the interpreter computes them (``_phi``, ``_phi_d``), in t."""
    return _PHI, _PHI_D


#: the column of the derivative identities: one per op, and Φ′ = φ; the softmax's three
ENTRYWISE = _entrywise(len(_OPS) + 3)
ENTRYWISE_3 = _entrywise(3)


def _r12_assumptions() -> tuple[Any, ...]:
    out: list[Any] = [
        _slope_in(ev(_ym, _sa) - ev(_ym, _sb), _DX, _Sy),  # 0: node y's invariant at a, b
        _slope_in(ev(_zm, _sa) - ev(_zm, _sb), _DX, _Sz),  # 1: node z's
        _in(ev(_ym, _sb), _Yc),  # y at the reference point b lies in the ball Y_c
        _in(_DX, _DXc),  # a − b lies in the balls X − b
        Pred("slope_enclosure", (_gm, _Sg, _Zset)),  # g's slopes on Z
        _in(ev(_zm, _sa), _Zset),  # z's values lie in Z
        _in(ev(_zm, _sb), _Zset),
        _in(_va, _V),  # the product's second factor, one entry
        _in(_vb, _V),
        _slope_in(_va - _vb, _DX, _DV),
    ]
    out += [
        # one entry of u: its ball U (an interval) holds u_a, u_b; its slope row lies in D_U
        _in(_ua, _Uset),
        _in(_ub, _Uset),
        _slope_in(_ua - _ub, _DX, _DU),
        Pred("interval", (_Uset,)),
        # φ, ψ: C¹ on their domains, which hold U, with derivatives G(t, φ(t)) and H(t)
        Pred("C1_on", (_Dphi, _tR, _phi(_tR))),
        Pred("derivative_on", (_Dphi, _tR, _phi(_tR), _Gf(_tR, _phi(_tR)))),
        Pred("subset", (_Uset, _Dphi)),
        Pred("C1_on", (_Dpsi, _tR, _psi(_tR))),
        Pred("derivative_on", (_Dpsi, _tR, _psi(_tR), _Hf(_tR))),
        Pred("subset", (_Uset, _Dpsi)),
        Pred("C1", (_sm,)),
        Pred("entries_of", (_sm, sp.Lambda((S_ROW.label, _jn), _softmax_entry(_nsm)), _nsm)),
        _in(_XA, _Bsm),
        _in(_XB, _Bsm),
        Pred("convex", (_Bsm,)),
        # Krawczyk
        Pred("slope_enclosure", (_fk, _SX, _Xk)),
        _in(_ck, _Xk),
        _in(ev(_fk, _ck) - _ck, _Fc),
    ]
    return tuple(out)


R12_ASSUMPTIONS = _r12_assumptions()
_IX = {  # indices of assumptions the variants drop
    "c_in_X": R12_ASSUMPTIONS.index(_in(_ck, _Xk)),
    "phi_C1": R12_ASSUMPTIONS.index(Pred("C1_on", (_Dphi, _tR, _phi(_tR)))),
    "U_in_D": R12_ASSUMPTIONS.index(Pred("subset", (_Uset, _Dphi))),
    "u_b_in_U": R12_ASSUMPTIONS.index(_in(_ub, _Uset)),
    "Y_c": R12_ASSUMPTIONS.index(_in(ev(_ym, _sb), _Yc)),
}


# ---------------------------------------------------------------------- R12: the derivation
_w = sp.Symbol("w", commutative=False)  # a placeholder for substitutions
_wr = sp.Symbol("w", real=True)


def _rewrite(d: Derivation, a: Any, b: Any, z: Any, expr: Any, why: str) -> Any:
    """From the known ``a = b`` (either way round), ``expr(a) = expr(b)``, ``expr`` written in
    the placeholder ``z``."""
    return d.lemma(LEIBNIZ, why, a=a, b=b, z=z, F=expr)


def _witness(d: Derivation, y: Any, z: Any, D: Any, why: str) -> Any:
    """``S = slope(y, z, D)`` with ``y = S z`` and ``S ∈ D``, from ``slope_in(y, z, D)``."""
    d.lemma(SLOPE_WITNESS, why, y=y, z=z, D=D)
    return slope(y, z, D)


def _include(
    d: Derivation, expr: Any, zs: tuple[Any, ...], points: tuple[Any, ...], sets: tuple[Any, ...]
) -> Any:
    """``expr(points) ∈ ieval(expr, zs, sets)`` by the fundamental theorem; returns the point."""
    k = len(zs)
    mapping: dict[str, Any] = {"E": expr}
    for i, (z, t, s) in enumerate(zip(zs, points, sets, strict=True), 1):
        mapping |= {f"z{i}": z, f"t{i}": t, f"Z{i}": s}
    d.lemma(INCLUSION[k], "interval evaluation encloses the value", **mapping)
    return subs_all(expr, sp.Tuple(*zs), sp.Tuple(*points))


def _conclude(d: Derivation, y: Any, T: Any, z: Any, D: Any, why: str) -> Any:
    if _failed(d):
        return None
    return d.lemma(SLOPE_INTRO, why, y=y, T=T, z=z, D=D)


class _Stop(Exception):
    """A step of the block failed: its later steps would only compare against facts that are
    not there (slowly), so the block stops."""


def _chain(d: Derivation, links: list[Any], why: str) -> Any:
    """``d.chain`` once every step so far holds (else the block stops)."""
    if _failed(d):
        raise _Stop
    return d.chain(links, why)


def _sum_rule(d: Derivation, sign: int) -> Any:
    """(y ± z)(a) − (y ± z)(b) = (S_y ± S_z)(a − b)."""
    ya, yb, za, zb = ev(_ym, _sa), ev(_ym, _sb), ev(_zm, _sa), ev(_zm, _sb)
    sy = _witness(d, ya - yb, _DX, _Sy, "y's slope")
    sz = _witness(d, za - zb, _DX, _Sz, "z's slope")
    y = ya + sign * za - (yb + sign * zb)
    split = d.identity(y, (ya - yb) + sign * (za - zb), "Δ(y ± z) = Δy ± Δz")
    r1 = _rewrite(d, ya - yb, sy * _DX, _w, _w + sign * (za - zb), "Δy = S_y (a − b)")
    r2 = _rewrite(d, za - zb, sz * _DX, _w, sy * _DX + sign * _w, "Δz = S_z (a − b)")
    out = d.identity(sy * _DX + sign * sz * _DX, (sy + sign * sz) * _DX, "(a − b) factored out")
    _chain(d, [split, r1, r2, out], "Δ(y ± z) = (S_y ± S_z)(a − b)")
    formula = _Zn[0] + sign * _Zn[1]
    T = _include(d, formula, _Zn[:2], (sy, sz), (_Sy, _Sz))
    return _conclude(d, y, T, _DX, _ieval(formula, _Zn[:2], (_Sy, _Sz)), "the slope set")


def _linear_rule(d: Derivation) -> Any:
    """W y(a) − W y(b) = (W S_y)(a − b)."""
    ya, yb = ev(_ym, _sa), ev(_ym, _sb)
    sy = _witness(d, ya - yb, _DX, _Sy, "y's slope")
    lin = d.identity(_W * ya - _W * yb, _W * (ya - yb), "W is linear")
    r = _rewrite(d, ya - yb, sy * _DX, _w, _W * _w, "Δy = S_y (a − b)")
    eq = _chain(d, [lin, r], "Δ(W y) = W S_y (a − b)")
    T = _include(d, _W * _Zn[0], _Zn[:1], (sy,), (_Sy,))
    return _conclude(d, eq.lhs, T, _DX, _ieval(_W * _Zn[0], _Zn[:1], (_Sy,)), "the slope set")


def _chain_rule(d: Derivation) -> Any:
    """g(z(a)) − g(z(b)) = S_g (z(a) − z(b)) = (S_g S_z)(a − b), S_g a slope of g on Z."""
    za, zb = ev(_zm, _sa), ev(_zm, _sb)
    d.lemma(
        SLOPE_AT, "g's slope between z(a) and z(b), both in Z", f=_gm, D=_Sg, X=_Zset, a=za, b=zb
    )
    ga, gb = ev(_gm, za), ev(_gm, zb)
    sg = _witness(d, ga - gb, za - zb, _Sg, "g's slope")
    sz = _witness(d, za - zb, _DX, _Sz, "z's slope")
    first = sp.Eq(ga - gb, sg * (za - zb))
    r = _rewrite(d, za - zb, sz * _DX, _w, sg * _w, "Δz = S_z (a − b)")
    eq = _chain(d, [first, r], "Δ(g ∘ z) = S_g S_z (a − b)")
    T = _include(d, _Zn[0] * _Zn[1], _Zn[:2], (sg, sz), (_Sg, _Sz))
    sets = _ieval(_Zn[0] * _Zn[1], _Zn[:2], (_Sg, _Sz))
    return _conclude(d, eq.lhs, T, _DX, sets, "the slope set")


def _centred_form(d: Derivation) -> Any:
    """y(a) = y(b) + S_y (a − b) ∈ Y_c + S_y ΔX (``_centred`` in dynamo's interpreter)."""
    ya, yb = ev(_ym, _sa), ev(_ym, _sb)
    sy = _witness(d, ya - yb, _DX, _Sy, "y's slope")
    eq = _rewrite(d, ya - yb, sy * _DX, _w, yb + _w, "y(a) = y(b) + S_y (a − b)")
    formula = _Zn[0] + _Zn[1] * _Zn[2]
    sets = (_Yc, _Sy, _DXc)
    _include(d, formula, _Zn[:3], (yb, sy, _DX), sets)
    if _failed(d):
        return None
    return d.lemma(
        MEMBER_EQ, "y(a) in the centred form", p=eq.rhs, q=eq.lhs, A=_ieval(formula, _Zn[:3], sets)
    )


def _product_rule(d: Derivation, point: str) -> Any:
    """u_a v_a − u_b v_b = v_b(u_a − u_b) + u_a(v_a − v_b) = (s_u v_b + s_v u_a)(a − b), with
    v_b ∈ V and u_a ∈ U: the slope lies in D_U·V + D_V·U (``point="a"`` takes v_a for v_b: a
    false variant)."""
    ua, ub, U, DU = _ua, _ub, _Uset, _DU
    su = _witness(d, ua - ub, _DX, DU, "u's slope")
    sv = _witness(d, _va - _vb, _DX, _DV, "v's slope")
    other = _vb if point == "b" else _va
    split = d.identity(
        ua * _va - ub * _vb,
        other * (ua - ub) + ua * (_va - _vb),
        "u_a v_a − u_b v_b = v_b(u_a − u_b) + u_a(v_a − v_b)",
    )
    r1 = _rewrite(d, ua - ub, su * _DX, _w, other * _w + ua * (_va - _vb), "Δu = s_u (a − b)")
    r2 = _rewrite(d, _va - _vb, sv * _DX, _w, other * su * _DX + ua * _w, "Δv = s_v (a − b)")
    out = d.identity(
        other * su * _DX + ua * sv * _DX, (su * other + sv * ua) * _DX, "(a − b) factored out"
    )
    eq = _chain(d, [split, r1, r2, out], "Δ(u v) = (s_u v_b + s_v u_a)(a − b)")
    zs = (_Zn[0], _zr[1], _Zn[2], _zr[3])
    formula = _Zn[0] * _zr[1] + _Zn[2] * _zr[3]
    T = _include(d, formula, zs, (su, other, sv, ua), (DU, _V, _DV, U))
    return _conclude(d, eq.lhs, T, _DX, _ieval(formula, zs, (DU, _V, _DV, U)), "the slope set")


def _derivative(d: Derivation, name: str) -> Any:
    """φ′ = the table's derivative formula, by the rules of differentiation."""
    t, value, deriv = _op_formulas(name)
    fact = d.lemma(DIFFERENTIATION, f"{name}′ by the rules of differentiation", E=value, t=t)
    if sp.sympify(fact.rhs) == sp.sympify(deriv):  # sympy's rules give the table's formula as is
        return fact
    same = d.identity(fact.rhs, deriv, f"{name}′ is the formula the interpreter's table writes")
    return _chain(d, [fact, same], f"{name}′ = the table's formula")


def _gelu_phi(d: Derivation) -> Any:
    """Φ′ = φ for the interpreter's Φ and φ (the normal distribution's cdf and density)."""
    phi, dphi = _gelu_parts()
    fact = d.lemma(DIFFERENTIATION, "Φ′ by the rules of differentiation", E=phi, t=_tR)
    if sp.sympify(fact.rhs) == sp.sympify(dphi):
        return fact
    same = d.identity(fact.rhs, dphi, "φ is the formula the interpreter's table writes")
    return _chain(d, [fact, same], "Φ′ = φ")


def _derivatives(d: Derivation) -> Any:
    """Every op's φ′ = the table's formula, and Φ′ = φ, as one column of identities."""
    facts = [_derivative(d, name) for name in _ops()]
    facts.append(_gelu_phi(d))
    if _failed(d):
        return None
    lem = ENTRYWISE
    mapping = {f"a{i}": f.lhs for i, f in enumerate(facts, 1)}
    mapping |= {f"b{i}": f.rhs for i, f in enumerate(facts, 1)}
    return d.lemma(lem, "the derivative formulas, as one column", **mapping)


def _composition_rule(d: Derivation, with_value: bool) -> Any:
    """φ(u_a) − φ(u_b) = G(ξ, φ(ξ))(u_a − u_b) with ξ between them, so in U (the mean value
    theorem on the interval U) = G(ξ, φ(ξ)) s_u (a − b), and G(ξ, φ(ξ)) s_u lies in
    ⟦G(t, y) σ⟧ on (U, ⟦φ(t)⟧(U), D_U) since ξ ∈ U, φ(ξ) ∈ ⟦φ(t)⟧(U), s_u ∈ D_U. With
    ``with_value`` False: ψ, ψ′ = H(t), and ⟦H(t) σ⟧ on (U, D_U)."""
    t = _tR
    if with_value:
        fn, deriv, dom, name = _phi(t), _Gf(t, _phi(t)), _Dphi, "φ"
    else:
        fn, deriv, dom, name = _psi(t), _Hf(t), _Dpsi, "ψ"
    su = _witness(d, _ua - _ub, _DX, _DU, "u's slope")
    mvt = d.lemma(
        MEAN_VALUE_THEOREM,
        f"{name}: mean value theorem on U",
        E=fn,
        G=deriv,
        t=t,
        p=_ua,
        q=_ub,
        U=_Uset,
        D=dom,
    )
    xi = mvt_pt(sp.Lambda(t, fn), _ua, _ub)
    gxi = deriv.xreplace({t: xi})
    r = _rewrite(d, _ua - _ub, su * _DX, _w, gxi * _w, "Δu = s_u (a − b)")
    eq = _chain(d, [mvt, r], f"Δ{name}(u) = {name}′(ξ) s_u (a − b)")
    with_ball, without = _composition_sets()
    if with_value:
        _include(d, fn, (t,), (xi,), (_Uset,))  # φ(ξ) ∈ ⟦φ(t)⟧(U): the value ball
        ball = _ieval(fn, (t,), (_Uset,))
        formula = _Gf(t, _yv) * _sv
        T = _include(d, formula, (t, _yv, _sv), (xi, fn.xreplace({t: xi}), su), (_Uset, ball, _DU))
        return _conclude(d, eq.lhs, T, _DX, with_ball, f"{name}'s slope set")
    formula = _Hf(t) * _sv
    T = _include(d, formula, (t, _sv), (xi, su), (_Uset, _DU))
    return _conclude(d, eq.lhs, T, _DX, without, f"{name}'s slope set")


def _relu_rule(d: Derivation, p: Any, q: Any) -> Any:
    """relu(p) − relu(q) = t(p − q) with t ∈ [0, 1], for p, q each ≥ 0 (P) or < 0 (−N)."""
    vals = []
    for x in (p, q):
        lem = RELU_POSITIVE if x.is_nonnegative else RELU_NEGATIVE
        vals.append(d.lemma(lem, f"relu({x})", x=x))
    r1 = _rewrite(d, relu(p), vals[0].rhs, _wr, _wr - relu(q), f"relu({p}) = {vals[0].rhs}")
    r2 = _rewrite(d, relu(q), vals[1].rhs, _wr, vals[0].rhs - _wr, f"relu({q}) = {vals[1].rhs}")
    eq = _chain(d, [r1, r2], f"relu({p}) − relu({q}) = {vals[0].rhs - vals[1].rhs}")
    if p.is_nonnegative and q.is_nonnegative:
        t = sp.Integer(1)
    elif p.is_nonnegative or q.is_nonnegative:
        pos, neg = (p, -q) if p.is_nonnegative else (q, -p)
        t = pos / (pos + neg)
        d.inequality(t, 1, f"{t} ≤ 1", by=neg / (pos + neg))
    else:
        t = sp.Integer(0)
    d.lemma(INTERVAL_MEMBER, f"{t} ∈ [0, 1]", x=t, lo=0, hi=1)
    return _conclude(d, eq.lhs, t, p - q, _I01, "a slope in [0, 1]")


def _softmax_code(d: Derivation) -> Any:
    return d.identity(
        _softmax_code_entry(),
        _softmax_textbook_entry(),
        "the interpreter's 1/Σ_k exp(x_k − x_j) is exp(x_j)/Σ_k exp(x_k)",
    )


def _softmax_jacobian(d: Derivation, mean: bool) -> Any:
    p = _softmax_entry(_nsm)
    direction = sp.Lambda(_tt, _DIR[_tt])
    return d.identity(
        ddir(p, S_ROW, direction, _eps),
        _softmax_g(direction, mean),
        "the softmax's Jacobian diag(p) − p pᵀ along δ: p_j(δ_j − Σ_k p_k δ_k)",
    )


def _softmax_slope(d: Derivation, mean: bool) -> Any:
    """p_j(x_a) − p_j(x_b) = p_j(ξ)(Δ_j − Σ_k p_k(ξ) Δ_k), Δ = x_a − x_b, ξ in the box B."""
    p = _softmax_entry(_nsm)
    mvt = d.lemma(
        MEAN_VALUE_SEGMENT,
        "entry j of the softmax on the segment from x_b to x_a",
        f=_sm,
        e=p,
        j=_jn,
        n=_nsm,
        P=_XA,
        Q=_XB,
        B=_Bsm,
    )
    xi = seg_point(_sm, _jn, _XA, _XB)
    g = at_point(_softmax_g(sp.Lambda(_tt, _XA[_tt] - _XB[_tt]), mean), S_ROW, xi)
    same = d.identity(mvt.rhs, g, "the derivative along x_a − x_b at ξ: p_j(Δ_j − Σ_k p_k Δ_k)")
    return _chain(d, [mvt, same], "the softmax's slope")


def _softmax_identities(d: Derivation, mean: bool) -> Any:
    """The interpreter's form, the Jacobian along any direction, and the slope at ξ, as one
    column of identities."""
    facts = [_softmax_code(d), _softmax_jacobian(d, mean), _softmax_slope(d, mean)]
    if _failed(d):
        return None
    mapping = {f"a{i}": f.lhs for i, f in enumerate(facts, 1)}
    mapping |= {f"b{i}": f.rhs for i, f in enumerate(facts, 1)}
    return d.lemma(ENTRYWISE_3, "the softmax's identities, as one column", **mapping)


def _softmax_point(d: Derivation) -> Any:
    d.lemma(
        MEAN_VALUE_SEGMENT,
        "the mean value point lies in B",
        f=_sm,
        e=_softmax_entry(_nsm),
        j=_jn,
        n=_nsm,
        P=_XA,
        Q=_XB,
        B=_Bsm,
    )
    return _in(seg_point(_sm, _jn, _XA, _XB), _Bsm)


def _krawczyk_point(d: Derivation, theta: Any, minus_identity: bool = True) -> Any:
    """x − C F(x) ∈ K(X) for x = pt(X, θ): with S the slope between x and c, the point of K's
    formula at (F(c), S, x) is c − C F(c) + (I − C(S − I))(x − c) = x − C F(x)."""
    x = pt(_Xk, theta)
    d.lemma(POINT_OF, "x is a point of X", X=_Xk, theta=theta)
    d.lemma(SLOPE_AT, "the slope between x and c (both in X)", f=_fk, D=_SX, X=_Xk, a=x, b=_ck)
    fx, fc = ev(_fk, x), ev(_fk, _ck)
    S = _witness(d, fx - fc, x - _ck, _SX, "S = slope(f(x) − f(c), x − c, S_X)")
    formula = _krawczyk_formula(minus_identity)
    kp = subs_all(formula, sp.Tuple(_zF, _zS, _zx), sp.Tuple(fc - _ck, S, x))
    alg = d.identity(kp, x - _Ck * (fc - x + S * (x - _ck)), "expanded")
    r = _rewrite(d, S * (x - _ck), fx - fc, _w, x - _Ck * (fc - x + _w), "S(x − c) = f(x) − f(c)")
    eq = _chain(d, [alg, r], "c − C F(c) + (I − C(S − I))(x − c) = x − C F(x)")
    if _failed(d):
        return None
    _include(d, formula, (_zF, _zS, _zx), (fc - _ck, S, x), (_Fc, _SX, _Xk))
    return d.lemma(
        MEMBER_EQ, "x − C F(x) ∈ K(X)", p=eq.lhs, q=eq.rhs, A=_krawczyk_set(minus_identity)
    )


def _block(d: Derivation, name: str, fn: Callable[[Derivation], Any]) -> Any:
    """Run ``fn`` on a sub-derivation that starts from the claim's assumptions alone (one case
    under no condition) and bring back the one fact it returns: the block neither sees nor
    compares against the other blocks' results, which keeps sympy's work small. None (and the
    block's steps recorded) where a step failed."""
    sub = Derivation(f"{d.claim} [{name}]", list(d.hypotheses))
    sub._condition = sp.true  # type: ignore[attr-defined]
    try:
        fact = fn(sub)
    except _Stop:
        fact = None
    if _failed(sub) or fact is None:
        d.steps.extend(sub.steps)
        return None
    return d.cases(fact, [sub], name)


def r12_proof(
    d: Derivation, product_point: str = "b", softmax_mean: bool = True, minus_identity: bool = True
) -> None:
    """Each rule in its own block (its intermediate facts stay local)."""
    _block(d, "y + z", functools.partial(_sum_rule, sign=1))
    _block(d, "y − z", functools.partial(_sum_rule, sign=-1))
    _block(d, "W y", _linear_rule)
    _block(d, "g ∘ z", _chain_rule)
    _block(d, "the centred form", _centred_form)
    _block(d, "u v", functools.partial(_product_rule, point=product_point))
    _block(d, "φ(u)", functools.partial(_composition_rule, with_value=True))
    _block(d, "ψ(u)", functools.partial(_composition_rule, with_value=False))
    _block(d, "the derivative formulas", _derivatives)
    for p, q in ((_P1, _P2), (-_N1, -_N2), (_P1, -_N1), (-_N1, _P1)):
        _block(d, f"relu({p}) − relu({q})", functools.partial(_relu_rule, p=p, q=q))
    _block(d, "softmax", functools.partial(_softmax_identities, mean=softmax_mean))
    _block(d, "softmax: the mean value point", _softmax_point)
    fact = _block(
        d,
        "x − C F(x) ∈ K(X)",
        functools.partial(_krawczyk_point, theta=_th, minus_identity=minus_identity),
    )
    if fact is None:
        return
    d.generalize(fact, _th, "for every point x of X")
    d.lemma(
        FIXED_POINTS_IN,
        "every fixed point of f in X lies in K(X)",
        f=_fk,
        C=_Ck,
        X=_Xk,
        K=_krawczyk_set(minus_identity),
        theta=_th,
    )


# ---------------------------------------------------------------------- R12: numeric check
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _check_maps(n: int, seed: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Small maps h ↦ b + ½ g(h) on ℝⁿ (batched), g through one rule of the interpreter each."""
    g = _gen(seed)
    W = torch.randn(n, n, generator=g, dtype=F64)
    W = 0.7 * W / torch.linalg.matrix_norm(W, ord=2)
    V = torch.randn(n, n, generator=g, dtype=F64)
    V = 0.7 * V / torch.linalg.matrix_norm(V, ord=2)
    gamma, beta = torch.randn(n, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    F = torch.nn.functional

    def lin(h: torch.Tensor) -> torch.Tensor:
        return h @ W.T

    def pos(h: torch.Tensor) -> torch.Tensor:  # positive values for rsqrt, sqrt, log
        return lin(h) ** 2 + 0.5

    inner: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "tanh": lambda h: torch.tanh(lin(h)),
        "exp": lambda h: torch.exp(lin(h)),
        "sigmoid": lambda h: torch.sigmoid(lin(h)),
        "erf": lambda h: torch.erf(lin(h)),
        "rsqrt": lambda h: torch.rsqrt(pos(h)),
        "sqrt": lambda h: torch.sqrt(pos(h)),
        "log": lambda h: torch.log(pos(h)),
        "neg": lambda h: -lin(h),
        "reciprocal": lambda h: torch.reciprocal(lin(h) + 3.0),
        "silu": lambda h: F.silu(lin(h)),
        "sin": lambda h: torch.sin(lin(h)),
        "cos": lambda h: torch.cos(lin(h)),
        "relu": lambda h: torch.relu(lin(h)),
        "gelu": lambda h: F.gelu(lin(h)),
        "pow": lambda h: lin(h) ** 3,
        "product": lambda h: torch.tanh(lin(h)) * torch.sin(h @ V.T),
        "quotient": lambda h: torch.sin(lin(h)) / (torch.cos(h @ V.T) + 3.0),
        "sums and means": lambda h: lin(h) - (h @ V.T).mean(-1, keepdim=True) + h.sum(-1, True),
        "product of two matrices": lambda h: (
            torch.tanh(h).reshape(-1, 2, 2) @ torch.sin(lin(h)).reshape(-1, 2, 2)
        ).reshape(-1, n),
        "softmax": lambda h: torch.softmax(3.0 * lin(h), dim=-1),
        "layer_norm": lambda h: 0.3 * F.layer_norm(lin(h) + h, (n,), weight=gamma, bias=beta),
        "composition": lambda h: torch.tanh(torch.sigmoid(lin(h)) @ V.T) * F.gelu(h),
    }
    b = 0.5 * torch.randn(n, generator=g, dtype=F64)

    def shifted(
        fn: Callable[[torch.Tensor], torch.Tensor],
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda h: b + 0.5 * fn(h)

    return {k: shifted(fn) for k, fn in inner.items()}


def _fixed_point(fn: Callable[[torch.Tensor], torch.Tensor], n: int) -> torch.Tensor:
    """A fixed point of ``fn`` by Newton's method on F(h) = fn(h) − h, from 0."""
    h = torch.zeros(n, dtype=F64)

    def F(z: torch.Tensor) -> torch.Tensor:
        return fn(z[None])[0] - z

    for _ in range(40):
        h = h - torch.linalg.solve(torch.func.jacrev(F)(h), F(h))
    return h


def _proof_errors(fn: Callable[[torch.Tensor], torch.Tensor], n: int) -> dict[str, Any]:
    """dynamo's prove_fixed_point on ``fn`` at its fixed point h*: whether it is proven, how far
    h* lies outside the proven enclosure, and how far each eigenvalue of ∂f(h*) (by autograd)
    lies outside every eigenvalue disc dynamo proves (from its slope balls over the enclosure)."""
    import dynamo as dy

    h = _fixed_point(fn, n)
    system = dy.LoopedSystem.from_function(fn, state_shape=(n,))
    proof = dy.prove_fixed_point(system, h, radius_max=0.1, basin=False)
    if not proof.outcome.ok:
        return {"proven": False, "outside": math.inf, "eig": math.inf}
    lo_e, hi_e = proof.enclosure
    outside = float(torch.clamp(torch.maximum(lo_e - h, h - hi_e), min=0).max())
    J = torch.func.jacrev(lambda z: fn(z[None])[0])(h)
    eig = 0.0
    for lam in torch.linalg.eigvals(J).tolist():
        eig = max(eig, min(max(abs(lam - c) - r, 0.0) for c, r in proof.eigenvalues))
    return {"proven": True, "outside": outside, "eig": eig}


def _check_r12(seed: int = 0) -> CheckResult:
    """dynamo's own interpreter, through the public ``prove_fixed_point``, on small maps through
    every rule (each op of the interpreter's table, GELU, powers, products, quotients, sums,
    means, matrix products, softmax, layer norm, a composition): each fixed point must be proven,
    lie in its proven enclosure (the Krawczyk inclusion and the value balls, the centred form
    included), and every eigenvalue of the Jacobian there (autograd) must lie in one of the
    eigenvalue discs dynamo proves from the slope balls over the enclosure. A wrong slope rule
    (tanh′ = 1 − tanh, a product rule at one point, the softmax without its mean term, ReLU's
    slopes halved, K(X) with S in place of S − I) fails it."""
    n = 4
    found = {name: _proof_errors(fn, n) for name, fn in _check_maps(n, seed).items()}
    tol = 1e-9
    bad = sorted(
        k for k, v in found.items() if not v["proven"] or v["outside"] > 0 or v["eig"] > tol
    )
    worst_eig = max(v["eig"] for v in found.values())
    return CheckResult(
        "R12",
        not bad,
        f"{len(found) - len(bad)} of {len(found)} maps (one per rule) proven with the fixed point "
        f"in its enclosure and every Jacobian eigenvalue in a proven disc (worst excess "
        f"{worst_eig:.1e})" + (f"; failed: {bad}" if bad else ""),
        {"maps": found, "failed": bad},
    )


# ---------------------------------------------------------------------- R12: the claim
@contextmanager
def _table_patched(name: str, deriv: Any) -> Iterator[None]:
    """The table's slope formula for ``name`` replaced while the block runs (the statement and the
    derivation both read the table): a false variant "the rule's formula changed"."""
    saved = _TABLE[name]
    _TABLE[name] = (saved[0], deriv)
    try:
        yield
    finally:
        _TABLE[name] = saved


def _wrong_product() -> tuple[Any, ...]:
    return (_product_fact((_DU, _Uset, _DV, _Uset)),)


def _wrong_krawczyk() -> tuple[Any, ...]:
    return (_in(_newton_point(pt(_Xk, _th)), _krawczyk_set(minus_identity=False)),)


def _wrong_softmax() -> tuple[Any, ...]:
    direction = sp.Lambda(_tt, _DIR[_tt])
    p = _softmax_entry(_nsm)
    return (
        sp.Eq(ddir(p, S_ROW, direction, _eps), _softmax_g(direction, mean=False), evaluate=False),
    )


@claim(
    "R12",
    "Rule: interval slopes and Krawczyk's inclusion",
    r"Let $a, b$ be any two states of the box; a node $w$ has slope set $D$ when "
    r"$w(a) - w(b) = S(a - b)$ for some $S \in D$. Every set below is arb's interval "
    r"evaluation of the formula dynamo's interpreter writes, on the balls named. "
    r"(1) $y \pm z$ has $S_y \pm S_z$; $Wy$ ($W$ constant) has $W S_y$; $g \circ z$ has "
    r"$S_g S_z$ when $S_g$ encloses $g$'s pairwise slopes on a set holding $z(a), z(b)$; "
    r"and $y(a) \in Y_c + S_y \Delta_X$ when $y(b) \in Y_c$ and $a - b \in \Delta_X$ (the "
    r"centred form, $b$ the reference point). (2) One entry of $u \odot v$ "
    r"($u_a, u_b \in U$; $v_a, v_b \in V$) has "
    r"$D_U V + D_V U$, from $u_a v_a - u_b v_b = v_b(u_a - u_b) + u_a(v_a - v_b)$. "
    r"(3) For $\varphi$ C$^1$ on a domain holding $U$ with $\varphi'(t) = G(t, \varphi(t))$ "
    r"there, one entry of $\varphi(u)$ has $G(U, \varphi(U))\,D_U$, and for $\psi$ with "
    r"$\psi'(t) = H(t)$, $\psi(u)$ has $H(U)\,D_U$ (the mean value theorem on the interval "
    r"$U$); and the formulas of the interpreter's table are such derivatives, as one column of "
    r"identities: tanh, exp, sigmoid, erf, rsqrt, sqrt, log, neg, reciprocal, silu, sin, cos "
    r"($G$), GELU $t\Phi(t)$ and $t^k$, $k \ge 1$ ($H$): $\tanh' = 1 - \tanh^2$, "
    r"$\sigma' = \sigma(1 - \sigma)$, $\mathrm{rsqrt}' = -y^3/2$ ($y = t^{-1/2}$), "
    r"$\mathrm{erf}' = 2e^{-t^2}/\sqrt\pi$, $\mathrm{silu}' = \sigma(1 + t(1 - \sigma))$, "
    r"$\mathrm{gelu}' = \Phi + t\phi$ with $\Phi' = \phi$, $(t^k)' = k t^{k-1}$, … "
    r"(4) $\mathrm{relu}(p) - \mathrm{relu}(q) = \tau(p - q)$ with $\tau \in [0, 1]$, for "
    r"$p, q$ of every sign. (5) The softmax: the interpreter's $1/\sum_k e^{x_k - x_j}$ is "
    r"$e^{x_j}/\sum_k e^{x_k}$; its derivative along any $\delta$ is "
    r"$s_j(\delta_j - \sum_k s_k\delta_k)$; for two logit rows $x_a, x_b$ of a convex $B$, "
    r"$s_j(x_a) - s_j(x_b) = s_j(\xi)(\Delta_j - \sum_k s_k(\xi)\Delta_k)$, "
    r"$\Delta = x_a - x_b$, for a point $\xi$ of $B$. (6) Krawczyk: if $S_X$ encloses "
    r"$f$'s pairwise slopes on $X$, $c \in X$ and $f(c) - c \in F_c$, then for every "
    r"$x \in X$, $x - C F(x)$ ($F(x) = f(x) - x$, any matrix $C$) lies in "
    r"$K(X) = c - C F_c + (I - C(S_X - I))(X - c)$, so every fixed point of $f$ in $X$ "
    r"lies in $K(X)$.",
    (
        "a, b: any two states of the box; y, z, g, u, v, p, q: nodes of the traced map "
        "(maps of the state); a node's slope set holds a slope between its values at a and b",
        "U, V: the balls (intervals) of one entry of u, v, holding its values at a and b",
        "φ, ψ: C¹ on domains D_φ, D_ψ that hold U, with φ′(t) = G(t, φ(t)) and ψ′(t) = H(t) "
        "there; the softmax is C¹, entry j of a row s being exp(s_j)/Σ_k exp(s_k); B is convex "
        "(a box) and holds the logit rows x_a, x_b",
        "every set the code computes is arb's evaluation of the formula it writes, on the balls "
        "named (ieval); arb's balls contain the exact results, rounding included",
        "the centred form: Y_c holds y(b) (b the reference point) and Δ_X holds a − b",
        "Krawczyk: S_X encloses the pairwise slopes of f on X; c ∈ X; F_c holds f(c) − c; C is "
        "any real matrix",
    ),
    (_FTIA, _ARB, _RUDIN, _KRAWCZYK, _MOORE77, _NEUMAIER, _RUMP),
    _check_r12,
    goal=_r12_goal,
    assumptions=R12_ASSUMPTIONS,
    variants=(
        Variant(
            "the product rule with both factors' balls at one point: D_U·U + D_V·U",
            goal=_wrong_product,
        ),
        Variant(
            "the product rule at one point (v(a) in place of v(b) in the decomposition)",
            overrides={"product_point": "a"},
        ),
        Variant(
            "tanh′ = 1 − tanh in the table (statement and derivation)",
            patch=lambda: _table_patched("tanh", 1 - _yv),
        ),
        Variant(
            "the table's sigmoid slope σ(1 − σ) scaled by 1/2",
            patch=lambda: _table_patched("sigmoid", _yv * (1 - _yv) / 2),
        ),
        Variant("the softmax's Jacobian without the mean term (p_j δ_j)", goal=_wrong_softmax),
        Variant(
            "the softmax's slope without the mean term, in the derivation",
            overrides={"softmax_mean": False},
        ),
        Variant("Krawczyk's K(X) with S_X in place of S_X − I", goal=_wrong_krawczyk),
        Variant(
            "Krawczyk's K(X) with S_X in place of S_X − I, in the derivation",
            overrides={"minus_identity": False},
        ),
        Variant(
            "ReLU's slopes in [0, 1/2]",
            goal=(_slope_in(relu(_P1) - relu(_P2), _P1 - _P2, sp.Interval(0, sp.Rational(1, 2))),),
        ),
        Variant("without c ∈ X (Krawczyk's centre outside the box)", drop=(_IX["c_in_X"],)),
        Variant("without φ being C¹ (no mean value theorem)", drop=(_IX["phi_C1"],)),
        Variant("without U inside φ's domain", drop=(_IX["U_in_D"],)),
        Variant("without u_b ∈ U (the mean value point may leave U)", drop=(_IX["u_b_in_U"],)),
        Variant(
            "the centred form without y(b) ∈ Y_c (the reference point's ball)",
            drop=(_IX["Y_c"],),
        ),
    ),
)
def r12(
    d: Derivation, product_point: str = "b", softmax_mean: bool = True, minus_identity: bool = True
) -> None:
    """The rules, each in its own block (``product_point``, ``softmax_mean`` and
    ``minus_identity`` change the derivation: false variants)."""
    r12_proof(d, product_point, softmax_mean, minus_identity)


# ---------------------------------------------------------------------- R13: lemmas
_xv = sp.Symbol("x", commutative=False)  # the variable of the map g's definition
_gk = sp.Symbol("g")
_M, _zz = sp.symbols("M z", commutative=False)
_th1, _th2 = sp.symbols("theta_1 theta_2")

BOX_COMPACT_CONVEX = lemma(
    "interval: a box is compact and convex",
    "A box (a product of closed bounded intervals [lo_i, hi_i], lo_i ≤ hi_i) is nonempty, "
    "compact and convex.",
    (f"{_RUDIN}, Thm 2.40 (k-cells are compact) and §2.17 (k-cells are convex)",),
    (_X,),
    (Pred("box", (_X,)),),
    (Pred("nonempty_compact_convex", (_X,)),),
)

NEWTON_MAP_CONTINUOUS = lemma(
    "interval: x − C(f(x) − x) is continuous",
    "If f is continuous, then so is g(x) = x − C(f(x) − x) (C a constant matrix): sums and "
    "linear images of continuous maps are continuous.",
    (f"{_RUDIN}, Thm 4.9 and §9.7 (linear maps are continuous)",),
    (_f, _g, _Cm, _xv),
    (Pred("continuous", (_f,)), Pred("map", (_g, _xv, _xv - _Cm * (ev(_f, _xv) - _xv)))),
    (Pred("continuous", (_g,)),),
)

_yv2 = sp.Symbol("y", commutative=False)
MAP_VALUE = lemma(
    "interval: a map's value",
    "If g is the map x ↦ E, then g(y) is E with x replaced by y.",
    ("definition of a map by a formula",),
    (_g, _xv, _E, _yv2),
    (Pred("map", (_g, _xv, _E)),),
    (sp.Eq(ev(_g, _yv2), at(_E, _xv, _yv2)),),
)

MAPS_INTO_BY_POINTS = lemma(
    "interval: a map of a set into itself",
    "If g(pt(X, θ)) lies in X for every θ (every point of X), g maps X into X.",
    ("definition of 'maps X into X', with pt(X, ·) enumerating X",),
    (_g, _X, _theta),
    (Pred("forall", (_theta, _in(ev(_g, pt(_X, _theta)), _X))),),
    (Pred("maps_into", (_g, _X)),),
)

FIXED_WITNESS = lemma(
    "interval: a fixed point, chosen",
    "If g has a fixed point in K, one of them, fixpt(g, K), lies in K and g(fixpt(g, K)) = "
    "fixpt(g, K).",
    ("definition of has_fixed_point, and the choice of a witness",),
    (_g, _K),
    (Pred("has_fixed_point", (_g, _K)),),
    (_in(fixpt(_g, _K), _K), sp.Eq(ev(_g, fixpt(_g, _K)), fixpt(_g, _K))),
)

_HJ = "R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., Cambridge, 2013"
NONSINGULAR_KERNEL = lemma(
    "interval: a nonsingular matrix has a trivial kernel",
    "If M is nonsingular and M z = 0, then z = 0.",
    (f"{_HJ}, §0.5 (nonsingular matrices)",),
    (_M, _zz),
    (Pred("nonsingular", (_M,)), sp.Eq(_M * _zz, 0)),
    (sp.Eq(_zz, 0),),
)

INVERSE = lemma(
    "interval: the inverse of a nonsingular matrix",
    "A nonsingular M has an inverse: inv(M) M = I.",
    (f"{_HJ}, §0.5 (nonsingular matrices)",),
    (_M,),
    (Pred("nonsingular", (_M,)),),
    (sp.Eq(inv(_M) * _M, 1),),
)

FIXED_INTRO = lemma(
    "interval: a fixed point in X",
    "If x lies in X and f(x) − x = 0, f has a fixed point in X.",
    ("definition of has_fixed_point",),
    (_f, _X, _xv),
    (_in(_xv, _X), sp.Eq(ev(_f, _xv) - _xv, 0)),
    (Pred("has_fixed_point", (_f, _X)),),
)

_Ac = sp.Symbol("A", commutative=False)
_pt1, _pt2 = pt(_X, _th1), pt(_X, _th2)
AT_MOST_ONE = lemma(
    "interval: at most one fixed point",
    "If for every two points x₁, x₂ of X, x₁ − x₂ = A (F(x₁) − F(x₂)) for some matrix A "
    "(F(x) = f(x) − x), then two fixed points of f in X (F = 0 at both) are equal: f has at "
    "most one fixed point in X.",
    ("elementary: F(x₁) = F(x₂) = 0 gives x₁ − x₂ = A·0 = 0",),
    (_f, _X, _Ac, _th1, _th2),
    (
        Pred(
            "forall",
            (
                _th1,
                Pred(
                    "forall",
                    (
                        _th2,
                        sp.Eq(
                            _pt1 - _pt2,
                            _Ac * ((ev(_f, _pt1) - _pt1) - (ev(_f, _pt2) - _pt2)),
                        ),
                    ),
                ),
            ),
        ),
    ),
    (Pred("at_most_one_fixed_point", (_f, _X)),),
)

EXACTLY_ONE = lemma(
    "interval: exactly one fixed point",
    "A fixed point in X, and at most one: exactly one.",
    ("definition",),
    (_f, _X),
    (Pred("has_fixed_point", (_f, _X)), Pred("at_most_one_fixed_point", (_f, _X))),
    (Pred("unique_fixed_point", (_f, _X)),),
)

_Sv = sp.Symbol("S", commutative=False)
# the template's variables (the set K stays unevaluated in the template)
_KV = (
    _Var("c", commutative=False),
    _Var("C", commutative=False),
    _Var("F_c"),
    _Var("S_X"),
    _Var("X"),
)
KRAWCZYK_NONSINGULAR = lemma(
    "interval: Krawczyk's test gives nonsingular matrices",
    "Let X be a box, c a point, C a real matrix, S_X an interval matrix, F_c an interval vector, "
    "and K = c − C F_c + (I − C(S_X − I))(X − c) evaluated in interval (ball) arithmetic. If K "
    "lies in X and misses X's boundary (K ⊆ int X), then every real matrix in "
    "M = I − C(S_X − I) has spectral radius below 1, so C(S − I) is nonsingular for every S "
    "in S_X, and C is nonsingular. (Widths: w(K) ≥ |M| w(X − c), and K ⊆ int X gives "
    "|M| w(X) < w(X) with w(X) > 0, so ρ(|M|) < 1 by Perron–Frobenius, and ρ(M̃) ≤ ρ(|M|) for "
    "every real M̃ ∈ M.) With the existence from Brouwer's theorem this is Krawczyk's "
    "existence and uniqueness test in its slope form.",
    (_KRAWCZYK, _MOORE77, _NEUMAIER, _RUMP),
    (*_KV, _Sv),
    (
        Pred("box", (_KV[4],)),
        _in(_Sv, _KV[3]),
        Pred("subset", (_krawczyk_set(names=_KV), _KV[4])),
        Pred("misses_boundary", (_krawczyk_set(names=_KV), _KV[4])),
    ),
    (Pred("nonsingular", (_KV[1],)), Pred("nonsingular", (_KV[1] * (_Sv - 1),))),
)


# ---------------------------------------------------------------------- R13: the claim
R13_ASSUMPTIONS = (
    Pred("slope_enclosure", (_fk, _SX, _Xk)),  # 0
    _in(_ck, _Xk),  # 1
    _in(ev(_fk, _ck) - _ck, _Fc),  # 2
    Pred("box", (_Xk,)),  # 3
    Pred("continuous", (_fk,)),  # 4
    Pred("map", (_gk, _xv, _xv - _Ck * (ev(_fk, _xv) - _xv))),  # 5: g(x) = x − C F(x)
    Pred("subset", (_krawczyk_set(), _Xk)),  # 6: K(X) ⊆ X
    Pred("misses_boundary", (_krawczyk_set(), _Xk)),  # 7: … and misses X's boundary
)


def _r13_goal() -> tuple[Any, ...]:
    return (
        Pred("has_fixed_point", (_fk, _Xk)),
        Pred("at_most_one_fixed_point", (_fk, _Xk)),
        Pred("unique_fixed_point", (_fk, _Xk)),
    )


def _into_x(d: Derivation, minus_identity: bool) -> Any:
    """g(x) ∈ X for x = pt(X, θ): g(x) = x − C F(x) ∈ K(X) ⊆ X."""
    x = pt(_Xk, _th)
    fact = _krawczyk_point(d, _th, minus_identity)
    if fact is None:
        return None
    point = fact.args[1]
    d.lemma(SUBSET_MEMBER, "K(X) ⊆ X", p=point, A=_krawczyk_set(minus_identity), B=_Xk)
    val = d.lemma(MAP_VALUE, "g(x) = x − C F(x)", g=_gk, x=_xv, E=_newton_point(_xv), y=x)
    return d.lemma(MEMBER_EQ, "g(x) ∈ X", p=val.rhs, q=val.lhs, A=_Xk)


def _pair() -> tuple[Any, Any, Any, Any]:
    """Two points x₁, x₂ of X, their slope S and M = C(S − I)."""
    x1, x2 = pt(_Xk, _th1), pt(_Xk, _th2)
    S = slope(ev(_fk, x1) - ev(_fk, x2), x1 - x2, _SX)
    return x1, x2, S, _Ck * (S - 1)


def _unique_step(d: Derivation) -> Any:
    """x₁ − x₂ = inv(M) C (F(x₁) − F(x₂)) for any two points of X, M = C(S − I) with S their
    slope (nonsingular by Krawczyk's test)."""
    x1, x2, _, _ = _pair()
    d.lemma(POINT_OF, "x₁ ∈ X", X=_Xk, theta=_th1)
    d.lemma(POINT_OF, "x₂ ∈ X", X=_Xk, theta=_th2)
    d.lemma(SLOPE_AT, "the slope between x₁ and x₂", f=_fk, D=_SX, X=_Xk, a=x1, b=x2)
    f1, f2 = ev(_fk, x1), ev(_fk, x2)
    S = _witness(d, f1 - f2, x1 - x2, _SX, "S = slope(f(x₁) − f(x₂), x₁ − x₂, S_X)")
    d.lemma(
        KRAWCZYK_NONSINGULAR,
        "C(S − I) is nonsingular (K(X) ⊆ int X)",
        c=_ck,
        C=_Ck,
        F_c=_Fc,
        S_X=_SX,
        X=_Xk,
        S=S,
    )
    M = _Ck * (S - 1)
    d.lemma(INVERSE, "inv(M) M = I", M=M)
    one = _rewrite(d, inv(M) * M, 1, _w, _w * (x1 - x2), "x₁ − x₂ = inv(M) M (x₁ − x₂)")
    alg = d.identity(
        inv(M) * M * (x1 - x2), inv(M) * _Ck * (S * (x1 - x2) - x1 + x2), "M = C(S − I) expanded"
    )
    r = _rewrite(
        d, S * (x1 - x2), f1 - f2, _w, inv(M) * _Ck * (_w - x1 + x2), "S(x₁ − x₂) = f(x₁) − f(x₂)"
    )
    back = sp.Eq(one.rhs, one.lhs)
    return _chain(d, [back, alg, r], "x₁ − x₂ = inv(M) C (F(x₁) − F(x₂))")


def _check_r13(seed: int = 0) -> CheckResult:
    """dynamo's prove_fixed_point on (a) a contraction tanh(Wh + b): proven, the fixed point in
    the enclosure, and Newton's method from starts spread over the proven box all reach that one
    point; (b) h ↦ h + (h − h³)/2 on ℝ² (fixed points {−1, 0, 1}²): the boxes proven around
    (1, 1) and (0, 0) hold no other fixed point (radius below 1)."""
    import dynamo as dy

    g = _gen(seed + 2)
    n = 3
    W = torch.randn(n, n, generator=g, dtype=F64)
    W = 0.6 * W / torch.linalg.matrix_norm(W, ord=2)
    b = torch.randn(n, generator=g, dtype=F64)

    def f(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ W.T + b)

    h = torch.zeros(n, dtype=F64)
    for _ in range(300):
        h = f(h[None])[0]
    proof = dy.prove_fixed_point(dy.LoopedSystem.from_function(f, state_shape=(n,)), h, basin=False)
    lo_e, hi_e = proof.enclosure
    inside = bool(proof.outcome.ok and torch.all(lo_e <= h) and torch.all(h <= hi_e))
    r, centre = proof.proof_radius, proof.center
    far = 0.0
    for _ in range(8):  # Newton on F(x) = f(x) − x from starts spread over the proven box
        x = centre + r * 0.999 * (2 * torch.rand(n, generator=g, dtype=F64) - 1)
        for _ in range(30):
            Fx = f(x[None])[0] - x
            J = torch.func.jacrev(lambda z: f(z[None])[0] - z)(x)
            x = x - torch.linalg.solve(J, Fx)
        far = max(far, float((x - h).abs().max()))

    def bistable(z: torch.Tensor) -> torch.Tensor:
        return z + 0.5 * (z - z**3)

    system = dy.LoopedSystem.from_function(bistable, state_shape=(2,))
    radii = {}
    for start in (1.0, 0.0):
        p = dy.prove_fixed_point(
            system, torch.full((2,), start, dtype=F64), radius_max=4.0, basin=False
        )
        radii[start] = p.proof_radius if p.outcome.ok else math.nan
    separate = all(0 < v < 1 for v in radii.values())
    ok = inside and far <= 1e-9 and separate
    return CheckResult(
        "R13",
        ok,
        f"contraction: {proof.outcome.label}, proof radius {r:.3g}, fixed point in the "
        f"enclosure: {inside}, Newton from 8 starts in the proven box reaches it (worst "
        f"{far:.1e}); bistable map: proven radii {radii[1.0]:.3g} at (1, 1) and {radii[0.0]:.3g} "
        "at (0, 0), each below the distance 1 to the next fixed point",
        {
            "radius": r,
            "newton_distance": far,
            "bistable_radius_1": radii[1.0],
            "bistable_radius_0": radii[0.0],
        },
    )


@claim(
    "R13",
    "Rule: Krawczyk's test proves exactly one fixed point",
    r"Let $S_X$ enclose the pairwise slopes of $f$ on the box $X$ (for every $a, b \in X$, "
    r"$f(a) - f(b) = S(a - b)$ for some $S \in S_X$), $c \in X$, $f(c) - c \in F_c$, $C$ "
    r"a real matrix, $f$ continuous, and $K(X) = c - C F_c + (I - C(S_X - I))(X - c)$ "
    r"evaluated in interval arithmetic. If $K(X) \subseteq X$ and $K(X)$ misses the boundary "
    r"of $X$ ($K(X) \subseteq \mathrm{int}\,X$), then $f$ has exactly one fixed point in "
    r"$X$: $g(x) = x - C(f(x) - x)$ maps $X$ into $K(X) \subseteq X$ (R12), so has a fixed "
    r"point (Brouwer), which is a fixed point of $f$ since $C$ is nonsingular; and for any "
    r"$x_1, x_2 \in X$, $x_1 - x_2 = (C(S - I))^{-1} C (F(x_1) - F(x_2))$ with $S$ their "
    r"slope, every $C(S - I)$ being nonsingular (the cited step of Krawczyk's test).",
    (
        "S_X encloses the pairwise slopes of f on the box X; c ∈ X; F_c holds f(c) − c; C is "
        "any real matrix; f is continuous",
        "g is the map x ↦ x − C(f(x) − x)",
        "K(X), evaluated in interval (ball) arithmetic as dynamo's krawczyk() does, lies in X "
        "and misses X's boundary (every end of K(X)_i strictly inside X_i)",
    ),
    (_KRAWCZYK, _MOORE77, _NEUMAIER, _RUMP, "L. E. J. Brouwer, Math. Ann. 71, 1912", _HJ),
    _check_r13,
    goal=_r13_goal,
    assumptions=R13_ASSUMPTIONS,
    variants=(
        Variant("existence and uniqueness from K(X) ⊆ X alone (not the interior)", drop=(7,)),
        Variant("without f continuous (no Brouwer)", drop=(4,)),
        Variant("without c ∈ X", drop=(1,)),
        Variant(
            "Krawczyk's K(X) with S_X in place of S_X − I, in the derivation",
            overrides={"minus_identity": False},
        ),
    ),
    uses=("R12",),
)
def r13(d: Derivation, minus_identity: bool = True) -> None:
    """Existence (Brouwer on g) and uniqueness (x₁ − x₂ = inv(M) C (F(x₁) − F(x₂))), each
    from blocks on generic points of X generalised over their parameters."""
    into = _block(d, "g maps a point of X into X", lambda sub: _into_x(sub, minus_identity))
    if into is not None:
        d.generalize(into, _th, "for every point of X")
        d.lemma(MAPS_INTO_BY_POINTS, "g maps X into X", g=_gk, X=_Xk, theta=_th)
        d.lemma(BOX_COMPACT_CONVEX, "X is a box", X=_Xk)
        d.lemma(NEWTON_MAP_CONTINUOUS, "g is continuous", f=_fk, g=_gk, C=_Ck, x=_xv)
        d.lemma(BROUWER, "g has a fixed point in X", f=_gk, K=_Xk)
        d.lemma(FIXED_WITNESS, "x* = fixpt(g, X)", g=_gk, K=_Xk)
        xf = fixpt(_gk, _Xk)
        val = d.lemma(MAP_VALUE, "g(x*) = x* − C F(x*)", g=_gk, x=_xv, E=_newton_point(_xv), y=xf)
        if _failed(d):
            return
        fixed = d.chain([sp.Eq(val.rhs, val.lhs), sp.Eq(ev(_gk, xf), xf)], "x* − C F(x*) = x*")
        _rewrite(d, fixed.lhs, fixed.rhs, _w, xf - _w, "C F(x*) = 0")
        d.lemma(SLOPE_AT, "a slope between x* and c", f=_fk, D=_SX, X=_Xk, a=xf, b=_ck)
        S = _witness(d, ev(_fk, xf) - ev(_fk, _ck), xf - _ck, _SX, "S = that slope")
        d.lemma(
            KRAWCZYK_NONSINGULAR,
            "C is nonsingular (K(X) ⊆ int X)",
            c=_ck,
            C=_Ck,
            F_c=_Fc,
            S_X=_SX,
            X=_Xk,
            S=S,
        )
        d.lemma(NONSINGULAR_KERNEL, "F(x*) = 0", M=_Ck, z=ev(_fk, xf) - xf)
        d.lemma(FIXED_INTRO, "f has a fixed point in X", f=_fk, X=_Xk, x=xf)
    step = _block(d, "two points of X", _unique_step)
    if step is None:
        return
    inner = d.generalize(step, _th2, "for every x₂")
    d.generalize(inner, _th1, "for every x₁")
    M = _pair()[3]
    d.lemma(
        AT_MOST_ONE,
        "at most one fixed point in X",
        f=_fk,
        X=_Xk,
        A=inv(M) * _Ck,
        theta_1=_th1,
        theta_2=_th2,
    )
    d.lemma(EXACTLY_ONE, "exactly one fixed point in X", f=_fk, X=_Xk)
