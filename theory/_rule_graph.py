"""R10 (the operations of a traced computation graph) and R11 (scaled dot-product attention):
the rules :func:`dynamo.lipschitz_upper_bound` composes along a user's own block.

Both are proved about the closed forms the rules evaluate (``lipschitz_formulas.add``,
``concat``, ``scale``, ``select``, ``sdpa``), read when the proof runs.

R10 works on maps ``a, b, f_1, …, f_k`` of the state (on one domain) and the definition of the
Lipschitz constant: ``Lip(f) ≤ L`` gives ``‖f(x) − f(y)‖ ≤ L‖x − y‖`` for the two points ``x, y``,
and the bound shown for generic ``x, y`` (no assumption mentions them) gives ``Lip ≤ L`` back.
Linear pieces (``w ↦ −w``, ``w ↦ c ⊙ w``, ``w ↦ S w``) go through the affine-map lemma and the
composition lemma.

R11 is pairwise on two states ``a, b`` of the domain (no convexity of the domain is needed). In
each head ``Y_h(a) − Y_h(b) = P(a)ΔV + ΔP V(b)``; the first part by ``‖P‖₂ ≤ √(‖P‖₁‖P‖_∞) ≤
√T``, the second row by row from the ℓ∞ → ℓ1 bound of the softmax (its Jacobian
``diag(p) − ppᵀ`` along a direction derived by sympy, bounded by Cauchy–Schwarz and the weighted
variance for every score row and every direction, and the mean value inequality on the convex
space of score rows), then summed over the rows by Minkowski's inequality; the heads are summed
by Minkowski's inequality too, before the Lipschitz bounds of ``q, k, v`` (over all heads) enter.

Generic indices (a row ``i``, a key ``j``, a head ``h``, a part ``i`` of a concatenation) follow
R7's convention: every assumption that mentions one holds for each of its values, so a fact shown
for the generic index holds for all (finite sums over it use that).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import sympy as sp
import torch

from dynamo.kernel import lipschitz_formulas as formulas

from ._claims import LEIBNIZ
from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import (
    CAUCHY_SCHWARZ,
    LIP_COMPOSITION,
    LIP_SUM,
    SUBMULTIPLICATIVE,
    TRIANGLE,
    Lip,
    add,
    compose,
    inner,
    norm,
    opnorm,
)
from ._logic import Derivation, Pred, lemma
from ._rule_attention import (
    OPNORM_HOMOGENEOUS,
    ORTHOGONAL_NORM,
    PRODUCT_MONOTONE,
    SQUARE_ROOT_MONOTONE,
    SUM_MONOTONE,
    SUM_OF_BOUNDS,
    WEIGHTED_AVERAGE,
)
from ._rules import (
    AFFINE_LIP,
    COORD_PROJ,
    DIAG_NORM,
    IDENTITY_NORM,
    MAX_BELOW,
    ORDER_ADD,
    ORDER_SCALE,
    ORDER_SHIFT,
    ORDER_SUB,
    REVERSE_TRIANGLE,
    _lemma_forall,
    diag,
    maxabs,
)

F64 = torch.float64

# ---------------------------------------------------------------------- function symbols
#: ``ev(f, x)``: the map ``f`` at the point ``x`` (a tensor: noncommutative)
ev = sp.Function("ev", commutative=False)
#: ``cat(f, i, k)``: the map ``h ↦ [f_1(h); …; f_k(h)]`` (the parts ``f`` written in ``i``)
cat = sp.Function("cat")
#: ‖·‖₁ and ‖·‖_∞ of a vector; ‖·‖₁ and ‖·‖_∞ of a matrix (max column / row sum)
onenorm = sp.Function("onenorm", nonnegative=True)
infnorm = sp.Function("infnorm", nonnegative=True)
opnorm_1 = sp.Function("opnorm_1", nonnegative=True)
opnorm_inf = sp.Function("opnorm_inf", nonnegative=True)


class row(sp.Function):
    """``row(X, i)``: row ``i`` of the matrix ``X`` (a token); linear in ``X``, as the rows of a
    sum are the sums of the rows."""

    is_commutative = False

    @classmethod
    def eval(cls, x: Any, i: Any) -> Any:
        if isinstance(x, sp.Add):
            return sp.Add(*(cls(t, i) for t in x.args))
        if isinstance(x, sp.Mul):
            coeff, rest = x.args_cnc()
            if coeff and rest:
                return sp.Mul(*coeff) * cls(sp.Mul(*rest), i)
        return None


class head(sp.Function):
    """``head(X, h)``: head ``h`` of the tensor ``X`` (its block of columns); linear in ``X``."""

    is_commutative = False

    @classmethod
    def eval(cls, x: Any, h: Any) -> Any:
        return row.eval.__func__(cls, x, h)  # type: ignore[attr-defined]


class ent(sp.Function):
    """``ent(z, j)``: entry ``j`` of the row vector ``z`` (a real number); linear in ``z``."""

    is_real = True

    @classmethod
    def eval(cls, z: Any, j: Any) -> Any:
        if isinstance(z, sp.Add):
            return sp.Add(*(cls(t, j) for t in z.args))
        if isinstance(z, sp.Mul):
            coeff, rest = z.args_cnc()
            if coeff and rest:
                return sp.Mul(*coeff) * cls(sp.Mul(*rest), j)
        return None


class ddir(sp.Function):
    """``ddir(e, s, σ, ε)``: the directional derivative at ``ε = 0`` of the expression ``e`` in
    the entries ``s[·]`` of a point, moved to ``s[l] + ε σ(l)`` (``σ`` a one-argument
    :class:`sympy.Lambda`). Left unevaluated while ``e`` is a placeholder symbol."""

    @classmethod
    def eval(cls, e: Any, s: Any, sigma: Any, eps: Any) -> Any:
        if isinstance(e, sp.Symbol) or not isinstance(s, sp.IndexedBase):
            return None
        moved = e.replace(
            lambda t: isinstance(t, sp.Indexed) and t.base == s,
            lambda t: t + eps * sigma(t.indices[0]),
        )
        return sp.diff(moved, eps).subs(eps, 0)


# ---------------------------------------------------------------------- lemma variables
_f, _g, _x, _y, _X = sp.symbols("f g x y X")
_L = sp.Symbol("L", nonnegative=True)
_i, _k, _j, _n = sp.symbols("i k j n", integer=True, positive=True)
_A, _B = sp.symbols("A B", commutative=False)
_Vb = sp.Symbol("V_b", nonnegative=True)
_u, _v, _u2, _v2 = sp.symbols("u v u' v'")
_p, _q, _e, _gg = sp.symbols("p q e g", real=True)
_pw, _qw = sp.symbols("p q", nonnegative=True)

_LIP_DEF = (
    "definition of the Lipschitz constant: Lip(f) = sup_{x ≠ y} ‖f(x) − f(y)‖/‖x − y‖, e.g. "
    "J. Heinonen, Lectures on Analysis on Metric Spaces, Springer, 2001"
)
_EUCLID = (
    "definition of the Euclidean (Frobenius) norm of a tensor: the square root of the sum of "
    "its squared entries"
)
_HJ = "R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., Cambridge, 2013"
_RUDIN = "W. Rudin, Principles of Mathematical Analysis, 3rd ed., 1976"


def _both_ways(lhs: Any, rhs: Any) -> tuple[Any, Any]:
    """An equation and the same read right to left (both conclusions of a lemma)."""
    return (sp.Eq(lhs, rhs), sp.Eq(rhs, lhs))


# ---------------------------------------------------------------------- cited lemmas (R10)
LIP_POINTWISE = lemma(
    "graph: a Lipschitz bound at two points",
    "If Lip(f) ≤ L then ‖f(x) − f(y)‖ ≤ L‖x − y‖ for every two points x, y of f's domain.",
    (_LIP_DEF,),
    (_f, _L, _x, _y),
    (sp.Le(Lip(_f), _L),),
    (sp.Le(norm(ev(_f, _x) - ev(_f, _y)), _L * norm(_x - _y)),),
)

LIP_FROM_POINTWISE = lemma(
    "graph: a Lipschitz bound from every two points",
    "If L ≥ 0 and ‖f(x) − f(y)‖ ≤ L‖x − y‖ for all x and y of f's domain, then Lip(f) ≤ L.",
    (_LIP_DEF,),
    (_f, _L, _x, _y),
    (
        Pred(
            "forall",
            (_x, Pred("forall", (_y, sp.Le(norm(ev(_f, _x) - ev(_f, _y)), _L * norm(_x - _y))))),
        ),
    ),
    (sp.Le(Lip(_f), _L),),
)

CONCAT_SQUARES = lemma(
    "graph: the norm of a concatenation",
    "[f_1; …; f_k](x) − [f_1; …; f_k](y) = [f_1(x) − f_1(y); …; f_k(x) − f_k(y)] (concatenation "
    "is linear), and every entry of a concatenation, along any axis, is one entry of one part, "
    "each once; so ‖[f_1; …; f_k](x) − [f_1; …; f_k](y)‖² = Σ_i ‖f_i(x) − f_i(y)‖² for the "
    "Euclidean norm (the sum of the squared entries).",
    (_EUCLID,),
    (_f, _i, _k, _x, _y),
    (),
    (
        sp.Eq(
            norm(ev(cat(_f, _i, _k), _x) - ev(cat(_f, _i, _k), _y)) ** 2,
            sp.Sum(norm(ev(_f, _x) - ev(_f, _y)) ** 2, (_i, 1, _k)),
        ),
    ),
)

NORM_NEGATION = lemma(
    "graph: ‖−v‖ = ‖v‖",
    "‖−v‖ = |−1|‖v‖ = ‖v‖ (absolute homogeneity of a norm).",
    (f"{_HJ}, Def. 5.1.1 (norm axioms)",),
    (_v,),
    (),
    _both_ways(norm(-_v), norm(_v)),
)


def _rewrite(d: Derivation, eq: Any, z: Any, expr: Any, why: str) -> Any:
    """From the known ``a = b`` (``eq``), ``expr(a) = expr(b)`` for ``expr`` written in ``z``."""
    return d.lemma(LEIBNIZ, why, a=eq.lhs, b=eq.rhs, z=z, F=expr)


def _flip(eq: Any) -> Any:
    """``b = a`` for ``a = b`` (a lemma stating both gives it as its second conclusion)."""
    return sp.Eq(eq.rhs, eq.lhs)


def _prod(d: Derivation, a: Any, a_hi: Any, b: Any, b_hi: Any, why: str) -> Any:
    """``a b ≤ a_hi b_hi`` from ``0 ≤ a ≤ a_hi`` and ``0 ≤ b ≤ b_hi``."""
    return d.lemma(PRODUCT_MONOTONE, why, a=a, A_b=a_hi, b=b, B_b=b_hi)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- R10: numeric check
def _local_max(
    fn: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    seed: int,
    *,
    samples: int = 12,
    steps: int = 12,
    radius: float | None = None,
    rows: int = 1,
) -> float:
    """The largest local ‖J‖₂ of ``fn`` found at random points and by gradient ascent on it
    (points of ``dim`` entries; with ``radius``, the ``rows`` tokens are kept of norm ≤ it)."""

    def jnorm(h: torch.Tensor) -> torch.Tensor:
        jac = torch.func.jacrev(fn)(h)
        return torch.linalg.matrix_norm(jac.reshape(-1, dim), ord=2)

    def project(h: torch.Tensor) -> torch.Tensor:
        if radius is None:
            return h
        t = h.reshape(rows, -1)
        scale = torch.clamp(radius / t.norm(dim=-1, keepdim=True).clamp_min(1e-30), max=1.0)
        return (t * scale).reshape(-1)

    worst = 0.0
    g = _gen(seed)
    for _ in range(samples):
        h = project(torch.randn(dim, generator=g, dtype=F64) * (radius or 1.5))
        for _ in range(steps):
            grad, val = torch.func.grad_and_value(jnorm)(h)
            worst = max(worst, float(val))
            h = project(h + 0.3 * grad / grad.norm().clamp_min(1e-30))
        worst = max(worst, float(jnorm(h)))
    return worst


def _check_r10(seed: int = 0) -> CheckResult:
    g = _gen(seed)
    n, m = 6, 5
    Wa, Wb = (torch.randn(m, n, generator=g, dtype=F64) for _ in range(2))
    c = torch.randn(m, generator=g, dtype=F64)
    la = float(torch.linalg.matrix_norm(Wa, ord=2))  # tanh is 1-Lipschitz: Lip(a) ≤ σ_max(W_a)
    lb = float(torch.linalg.matrix_norm(Wb, ord=2))
    cmax = float(c.abs().max())

    def a(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(Wa @ h)

    def b(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(Wb @ h)

    cases: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {
        "a + b": (lambda h: a(h) + b(h), formulas.add(la, lb)),
        "a − b": (lambda h: a(h) - b(h), formulas.add(la, lb)),
        "[a; b]": (lambda h: torch.cat([a(h), b(h)]), formulas.concat([la, lb])),
        "[a, b] (axis 1)": (
            lambda h: torch.cat([a(h)[:, None], b(h)[:, None]], dim=1),
            formulas.concat([la, lb]),
        ),
        "[a; b; a]": (lambda h: torch.cat([a(h), b(h), a(h)]), formulas.concat([la, lb, la])),
        "c ⊙ a": (lambda h: c * a(h), formulas.scale(cmax, la)),
        "c₀ ⊙ a (broadcast)": (lambda h: c[:1] * a(h), formulas.scale(float(c[0].abs()), la)),
        "a[::2]": (lambda h: a(h)[::2], formulas.select(la)),
        "a reshaped, permuted": (
            lambda h: a(h)[torch.tensor([3, 0, 4, 1, 2])].reshape(5, 1).T,
            formulas.select(la),
        ),
    }
    found = {
        k: (_local_max(fn, n, seed + i, samples=6, steps=8), bound)
        for i, (k, (fn, bound)) in enumerate(cases.items())
    }
    ok = all(low <= up * (1 + 1e-12) for low, up in found.values())
    return CheckResult(
        "R10",
        ok,
        "rule >= largest local ‖J‖₂ found: "
        + ", ".join(f"{k} {up:.4g} >= {low:.4g}" for k, (low, up) in found.items()),
        {k: [up, low] for k, (low, up) in found.items()},
    )


# ---------------------------------------------------------------------- R10: symbols
_a, _b = sp.symbols("a b")  # two maps of the state
_La, _Lb = sp.symbols("L_a L_b", nonnegative=True)
_fp = sp.Function("f")  # f(i): part i of a concatenation
_Lp = sp.Function("L", nonnegative=True)  # L(i): its constant
_ii = sp.Symbol("i", integer=True, positive=True)
_kk = sp.Symbol("k", integer=True, positive=True)
_hx, _hy = sp.symbols("x y")  # two points of the domain
_w, _w2 = sp.symbols("w w'", commutative=False)  # a value of a map (a tensor, flattened)
_cvec = sp.Symbol("c", commutative=False)  # the constant factor, broadcast and flattened
_cmax = sp.Symbol("c_max", nonnegative=True)
_Id = sp.Symbol("I", commutative=False)
_E, _Pi = sp.symbols("E Pi", commutative=False)
_NEG, _SCALE, _SEL = sp.symbols("neg D_c S")  # w ↦ −w, w ↦ c ⊙ w, w ↦ E Π w
# the token-norm intervals: u = a(h), z = b(h) one token of each
_ut, _zt = sp.symbols("u z")
_ua, _ub, _la, _lb = sp.symbols("u_a u_b ell_a ell_b", nonnegative=True)


def _cat(k: Any) -> Any:
    return cat(_fp(_ii), _ii, k)


def _r10_goal() -> tuple[Any, ...]:
    # every bound is what dynamo's code evaluates, read now
    return (
        sp.Le(Lip(add(_a, _b)), formulas.add(_La, _Lb)),
        sp.Le(Lip(add(_a, compose(_NEG, _b))), formulas.add(_La, _Lb)),
        sp.Le(Lip(_cat(_kk)), sp.sqrt(sp.Sum(_Lp(_ii) ** 2, (_ii, 1, _kk)))),
        sp.Le(Lip(_cat(2)), formulas.concat([_Lp(1), _Lp(2)], sqrt=sp.sqrt)),
        sp.Le(Lip(_cat(3)), formulas.concat([_Lp(1), _Lp(2), _Lp(3)], sqrt=sp.sqrt)),
        sp.Le(Lip(compose(_SCALE, _a)), formulas.scale(_cmax, _La)),
        sp.Le(Lip(compose(_SEL, _a)), formulas.select(_La)),
        sp.Le(norm(_ut + _zt), _ua + _ub),
        sp.Le(sp.Max(0, _la - _ub, _lb - _ua), norm(_ut + _zt)),
        sp.Le(norm(_ut - _zt), _ua + _ub),
        sp.Le(sp.Max(0, _la - _ub, _lb - _ua), norm(_ut - _zt)),
    )


R10_ASSUMPTIONS = (
    sp.Le(Lip(_a), _La),  # 0
    sp.Le(Lip(_b), _Lb),  # 1
    sp.Le(Lip(_fp(_ii)), _Lp(_ii)),  # 2: every part i of a concatenation
    Pred("map", (_NEG, _w, -_Id * _w)),  # 3: w ↦ −w
    Pred("identity_matrix", (_Id,)),  # 4
    Pred("map", (_SCALE, _w, diag(_cvec) * _w)),  # 5: w ↦ c ⊙ w
    sp.Le(maxabs(_cvec), _cmax),  # 6: every entry of c (broadcast) has |c_j| ≤ c_max
    Pred("map", (_SEL, _w, _E * _Pi * _w)),  # 7: S = E Π
    Pred("coordinate_projection", (_E,)),  # 8: E keeps some entries
    Pred("orthogonal", (_Pi,)),  # 9: Π permutes entries
    sp.Le(norm(_ut), _ua),  # 10
    sp.Le(_la, norm(_ut)),  # 11
    sp.Le(norm(_zt), _ub),  # 12
    sp.Le(_lb, norm(_zt)),  # 13
)


def _code(d: Derivation, fact: Any, code: Any, why: str) -> Any:
    """From ``x ≤ derived``, ``x ≤ code`` where ``code`` is what dynamo evaluates."""
    return d.weaken(fact, code, why)


def _linear_map(d: Derivation, name: Any, K: Any, why: str) -> Any:
    """Lip(w ↦ K w) ≤ ‖K‖₂ (the map's differences are K times the points')."""
    d.identity(K * _w - K * _w2, K * (_w - _w2), f"{why}: differences")
    return _lemma_forall(d, AFFINE_LIP, f"{why} is linear", f=name, x=_w, y=_w2, f_x=K * _w, K=K)


def _concat(d: Derivation, k: Any) -> Any:
    """Lip([f_1; …; f_k]) ≤ √(Σ_i L_i²) from the definition and ‖[u; v]‖² = ‖u‖² + ‖v‖²."""
    delta = norm(_hx - _hy)
    fi = _fp(_ii)
    part = d.lemma(LIP_POINTWISE, "part i at x, y", f=fi, L=_Lp(_ii), x=_hx, y=_hy)
    sq = _prod(d, part.lhs, part.rhs, part.lhs, part.rhs, "squared")
    total = d.lemma(SUM_MONOTONE, f"summed over the {k} parts", a=sq.lhs, b=sq.rhs, k=_ii, n=k)
    whole = d.lemma(
        CONCAT_SQUARES, "‖Δ[f_1; …; f_k]‖² = Σ_i ‖Δf_i‖²", f=fi, i=_ii, k=k, x=_hx, y=_hy
    )
    root = sp.sqrt(sp.Sum(_Lp(_ii) ** 2, (_ii, 1, k)))
    pull = d.identity(total.rhs, (root * delta) ** 2, "Σ_i L_i² ‖x − y‖² = (√(Σ_i L_i²) ‖x − y‖)²")
    d.chain([whole, total, pull], "‖Δ[f_1; …; f_k]‖² ≤ (√(Σ_i L_i²) ‖x − y‖)²")
    # the bound at two generic points x, y: generalized over y, then x, by the next lemma
    d.lemma(
        SQUARE_ROOT_MONOTONE,
        "‖Δ[f_1; …; f_k]‖ ≤ √(Σ_i L_i²) ‖x − y‖",
        a=whole.lhs.base,
        b=root * delta,
    )
    return _lemma_forall(
        d, LIP_FROM_POINTWISE, f"Lip of {k} parts concatenated", f=_cat(k), L=root, x=_hx, y=_hy
    )


def _intervals(d: Derivation, z: Any, why: str, zn: str) -> None:
    """max(0, ℓ_a − u_b, ℓ_b − u_a) ≤ ‖u + z‖ ≤ u_a + u_b for ``z`` = ±(the token of b), given
    ℓ_b ≤ ‖z‖ ≤ u_b."""
    tri = d.lemma(TRIANGLE, f"‖{why}‖ ≤ ‖u‖ + ‖{zn}‖", u=_ut, v=z)
    both = d.lemma(ORDER_ADD, "≤ u_a + u_b", a=norm(_ut), b=_ua, c=norm(z), e=_ub)
    d.chain([tri, both], f"‖{why}‖ ≤ u_a + u_b")
    rev1 = d.lemma(REVERSE_TRIANGLE, f"‖u‖ − ‖{zn}‖ ≤ ‖{why}‖", a=_ut, b=z)
    sub1 = d.lemma(ORDER_SUB, f"ℓ_a − u_b ≤ ‖u‖ − ‖{zn}‖", a=_la, b=norm(_ut), c=norm(z), e=_ub)
    low1 = d.chain([sub1, rev1], f"ℓ_a − u_b ≤ ‖{why}‖")
    rev2 = d.lemma(REVERSE_TRIANGLE, f"‖{zn}‖ − ‖u‖ ≤ ‖{why}‖", a=z, b=_ut)
    sub2 = d.lemma(ORDER_SUB, f"ℓ_b − u_a ≤ ‖{zn}‖ − ‖u‖", a=_lb, b=norm(z), c=norm(_ut), e=_ua)
    low2 = d.chain([sub2, rev2], f"ℓ_b − u_a ≤ ‖{why}‖")
    m1 = d.lemma(MAX_BELOW, "and 0 ≤ a norm", a=0, b=low1.lhs, N=low1.rhs)
    d.lemma(MAX_BELOW, f"max(0, ℓ_a − u_b, ℓ_b − u_a) ≤ ‖{why}‖", a=m1.lhs, b=low2.lhs, N=low1.rhs)


def _sum(d: Derivation) -> Any:
    s = d.lemma(LIP_SUM, "a + b", f=_a, g=_b, L_f=_La, L_g=_Lb)
    return _code(d, s, formulas.add(_La, _Lb), "dynamo's add (lipschitz_formulas.add)")


def _difference(d: Derivation) -> Any:
    lin = _linear_map(d, _NEG, -_Id, "w ↦ −w = (−I)w")
    hom = d.lemma(OPNORM_HOMOGENEOUS, "‖−I‖ = |−1| ‖I‖", c=-1, A=_Id)
    one = d.lemma(IDENTITY_NORM, "‖I‖ ≤ 1", I=_Id)
    d.chain([lin, hom, one], "Lip(w ↦ −w) ≤ 1")
    neg = d.lemma(LIP_COMPOSITION, "−b", f=_b, g=_NEG, L_f=_Lb, L_g=1)
    diff = d.lemma(LIP_SUM, "a − b = a + (−b)", f=_a, g=compose(_NEG, _b), L_f=_La, L_g=neg.rhs)
    return _code(d, diff, formulas.add(_La, _Lb), "dynamo's add for a − b")


def _concat_code(d: Derivation, k: int) -> Any:
    fact = _concat(d, k)
    parts = [_Lp(i) for i in range(1, k + 1)]
    return _code(d, fact, formulas.concat(parts, sqrt=sp.sqrt), f"dynamo's concat of {k} parts")


def _scale(d: Derivation) -> Any:
    lin = _linear_map(d, _SCALE, diag(_cvec), "w ↦ c ⊙ w = diag(c) w")
    dn = d.lemma(DIAG_NORM, "‖diag(c)‖₂ = max_j |c_j|", gamma=_cvec)
    d.chain([lin, dn, R10_ASSUMPTIONS[6]], "Lip(w ↦ c ⊙ w) ≤ c_max")
    sc = d.lemma(LIP_COMPOSITION, "c ⊙ a", f=_a, g=_SCALE, L_f=_La, L_g=_cmax)
    return _code(d, sc, formulas.scale(_cmax, _La), "dynamo's scale (lipschitz_formulas.scale)")


def _select(d: Derivation) -> Any:
    lin = _linear_map(d, _SEL, _E * _Pi, "w ↦ E Π w")
    sub = d.lemma(SUBMULTIPLICATIVE, "‖EΠ‖ ≤ ‖E‖‖Π‖", A=_E, B=_Pi)
    d.lemma(COORD_PROJ, "‖E‖ ≤ 1", E=_E)
    d.lemma(ORTHOGONAL_NORM, "a permutation matrix is orthogonal: ‖Π‖ = 1", Q=_Pi)
    pm = _prod(d, opnorm(_E), 1, opnorm(_Pi), 1, "‖E‖‖Π‖ ≤ 1")
    d.chain([lin, sub, pm], "Lip(w ↦ S w) ≤ 1")
    se = d.lemma(LIP_COMPOSITION, "S a", f=_a, g=_SEL, L_f=_La, L_g=1)
    return _code(d, se, formulas.select(_La), "dynamo's select (lipschitz_formulas.select)")


@claim(
    "R10",
    "Rule: the operations of a traced graph",
    r"For maps $a, b, f_1, \dots, f_k$ of the state on one domain with "
    r"$\mathrm{Lip}(a) \le L_a$, $\mathrm{Lip}(b) \le L_b$, $\mathrm{Lip}(f_i) \le L_i$: "
    r"$\mathrm{Lip}(a \pm b) \le L_a + L_b$ "
    r"(lipschitz_formulas.add); a concatenation along any axis has "
    r"$\mathrm{Lip}([f_1; \dots; f_k]) \le \sqrt{\sum_i L_i^2}$ for every $k$, which for two "
    r"and three parts is lipschitz_formulas.concat (because "
    r"$\lVert [u; v]\rVert^2 = \lVert u\rVert^2 + \lVert v\rVert^2$); a product with a constant "
    r"tensor $c$ (broadcast) with $|c_j| \le c_{\max}$ has $\mathrm{Lip}(c \odot a) \le "
    r"c_{\max} L_a$ (lipschitz_formulas.scale); a selection, reshape or permutation $S = E\Pi$ "
    r"(each output entry a distinct entry of the input) has $\mathrm{Lip}(S a) \le L_a$ "
    r"(lipschitz_formulas.select). For one token $u$ of $a(h)$ and $z$ of $b(h)$ with "
    r"$\ell_a \le \lVert u\rVert \le u_a$, $\ell_b \le \lVert z\rVert \le u_b$: "
    r"$\max(0, \ell_a - u_b, \ell_b - u_a) \le \lVert u \pm z\rVert \le u_a + u_b$.",
    (
        "a, b and every f_i are maps of the state on one domain, with the given constants",
        "neg is w ↦ −w; D_c is w ↦ c ⊙ w = diag(c) w, c the constant broadcast to a's shape "
        "and flattened, every entry |c_j| ≤ c_max",
        "S is w ↦ E Π w: Π permutes the entries, E keeps some of them (a selection, reshape or "
        "permutation: each output entry is a distinct entry of the input)",
        "u, z: a token of a(h) and of b(h), with ℓ_a ≤ ‖u‖ ≤ u_a and ℓ_b ≤ ‖z‖ ≤ u_b",
    ),
    ("triangle inequality", "the Euclidean norm", _HJ),
    _check_r10,
    goal=_r10_goal,
    assumptions=R10_ASSUMPTIONS,
    variants=(
        Variant(
            "add's constant max(L_a, L_b)",
            goal=(sp.Le(Lip(add(_a, _b)), sp.Max(_La, _Lb)),),
        ),
        Variant(
            "concat's constant max(L_1, L_2)",
            goal=(sp.Le(Lip(_cat(2)), sp.Max(_Lp(1), _Lp(2))),),
        ),
        Variant(
            "scale's constant c_max/2",
            goal=(sp.Le(Lip(compose(_SCALE, _a)), _cmax * _La / 2),),
        ),
        Variant("dynamo's add divided by 100", patch=lambda: code_scaled("add", 0.01)),
        Variant("dynamo's concat divided by 100", patch=lambda: code_scaled("concat", 0.01)),
        Variant("dynamo's scale divided by 100", patch=lambda: code_scaled("scale", 0.01)),
        Variant("dynamo's select divided by 100", patch=lambda: code_scaled("select", 0.01)),
        Variant("without Lip(b) ≤ L_b", drop=(1,)),
        Variant("without |c_j| ≤ c_max", drop=(6,)),
        Variant("a selection S that is not E Π (E not a coordinate projection)", drop=(8,)),
    ),
    uses=("R8",),
)
def r10(d: Derivation) -> None:
    """Each operation in its own block (its intermediate facts stay local)."""
    _block(d, "a + b", _sum)
    _block(d, "a − b", _difference)
    _block(d, "k parts concatenated", lambda sub: _concat(sub, _kk))
    for k in (2, 3):
        _block(d, f"{k} parts concatenated", functools.partial(_concat_code, k=k))
    _block(d, "c ⊙ a", _scale)
    _block(d, "S a", _select)
    # the token-norm intervals of a sum and of a difference
    _intervals(d, _zt, "u + z", "z")
    neg_z = d.lemma(NORM_NEGATION, "‖−z‖ = ‖z‖", v=_zt)
    d.chain([neg_z, R10_ASSUMPTIONS[12]], "‖−z‖ ≤ u_b")
    d.chain([R10_ASSUMPTIONS[13], _flip(neg_z)], "ℓ_b ≤ ‖−z‖")
    _intervals(d, -_zt, "u − z", "−z")


# ---------------------------------------------------------------------- R11: the softmax
#: a generic row of scores s[1..n] and a generic direction σ_l = sin θ_l (every σ with
#: |σ_l| ≤ 1 is one): the lemmas below speak of them "for every s and every θ"
S_ROW = sp.IndexedBase("s", real=True)
THETA = sp.IndexedBase("theta", real=True)
_l = sp.Symbol("l", integer=True, positive=True)
_t = sp.Symbol("t", integer=True, positive=True)
_eps = sp.Symbol("epsilon", real=True)
SIGMA = sp.Lambda(_t, sp.sin(THETA[_t]))
_nn = sp.Symbol("n", integer=True, positive=True)


def _softmax_entry(n: Any) -> Any:
    """Entry j of the softmax of the score row s over its n kept keys."""
    # the normaliser's summation index is j too (bound there): sums over j then cancel it
    return sp.exp(S_ROW[_j]) / sp.Sum(sp.exp(S_ROW[_j]), (_j, 1, n))


def _entries(f: Any, e: Any, n: Any) -> Pred:
    """``f`` maps a row ``s`` of ``n`` scores to the row with entries ``e(s, j)``."""
    return Pred("entries_of", (f, sp.Lambda((S_ROW.label, _j), e), n))


def _forall_rows(fact: Any) -> Pred:
    return Pred("forall", (S_ROW.label, fact))


def _forall_dirs(fact: Any) -> Pred:
    return Pred("forall", (S_ROW.label, Pred("forall", (THETA.label, fact))))


_P, _S = sp.symbols("P S", commutative=False)
_m = sp.Symbol("m", integer=True, positive=True)
_B_ = sp.Symbol("B", nonnegative=True)
_zrow = sp.Symbol("z", commutative=False)

SOFTMAX_STOCHASTIC = lemma(
    "graph: softmax rows are probability vectors",
    "If row i of P (any i, m rows) is f applied to the kept scores of row i of S (zero at the "
    "masked keys), and f maps every row s of n scores to entries e(s, j) > 0 that sum to 1, "
    "then P is row-stochastic: its entries are ≥ 0 and every row sums to 1.",
    ("definition of a row-stochastic matrix",),
    (_P, _S, _f, _e, _n, _m, _i),
    (
        _entries(_f, _e, _n),
        _forall_rows(sp.Eq(sp.Sum(_e, (_j, 1, _n)), 1)),
        _forall_rows(sp.Lt(0, _e)),
        sp.Eq(row(_P, _i), ev(_f, row(_S, _i))),
        Pred("rows", (_P, _m)),
    ),
    (Pred("row_stochastic", (_P, _m)),),
)

ROW_STOCHASTIC_NORMS = lemma(
    "graph: norms of a row-stochastic matrix",
    "A row-stochastic P with m rows (entries ≥ 0, each row summing to 1) has ‖P‖_∞ = 1 (the "
    "largest row sum of |p_ij|), every entry at most 1 so every column sum at most m: "
    "‖P‖₁ ≤ m (the largest column sum), and ‖p_i‖₁ = 1 for each row i.",
    (f"{_HJ}, Examples 5.6.4 and 5.6.5 (maximum column and row sum norms)",),
    (_P, _m, _i),
    (Pred("row_stochastic", (_P, _m)),),
    (
        sp.Le(opnorm_inf(_P), 1),
        sp.Le(opnorm_1(_P), _m),
        sp.Le(onenorm(row(_P, _i)), 1),
    ),
)

TWO_NORM_ONE_INF = lemma(
    "graph: ‖A‖₂ ≤ √(‖A‖₁‖A‖_∞)",
    "For every matrix A, ‖A‖₂ ≤ √(‖A‖₁ ‖A‖_∞).",
    ("G. H. Golub, C. F. Van Loan, Matrix Computations, 4th ed., 2013, Corollary 2.3.2",),
    (_A,),
    (),
    (sp.Le(opnorm(_A), sp.sqrt(opnorm_1(_A) * opnorm_inf(_A))),),
)

FROBENIUS_SPECTRAL = lemma(
    "graph: ‖AB‖_F ≤ ‖A‖₂‖B‖_F",
    "‖AB‖_F ≤ ‖A‖₂‖B‖_F: ‖A b‖₂ ≤ ‖A‖₂‖b‖₂ for each column b of B, squared and summed.",
    (f"{_HJ}, §5.6 (the spectral norm is induced by ‖·‖₂), applied column by column",),
    (_A, _B),
    (),
    (sp.Le(norm(_A * _B), opnorm(_A) * norm(_B)),),
)


FROBENIUS_ROWS = lemma(
    "graph: the Frobenius norm by rows",
    "For a matrix X with n rows x_i, ‖X‖_F = √(Σ_i ‖x_i‖²).",
    (_EUCLID,),
    (_X, _i, _n),
    (Pred("rows", (_X, _n)),),
    _both_ways(norm(_X), sp.sqrt(sp.Sum(norm(row(_X, _i)) ** 2, (_i, 1, _n)))),
)

_hh, _HH = sp.symbols("h H", integer=True, positive=True)
FROBENIUS_HEADS = lemma(
    "graph: the Frobenius norm by heads",
    "For a tensor X split into H heads X_h (blocks of its entries, each entry in one), "
    "‖X‖_F = √(Σ_h ‖X_h‖_F²).",
    (_EUCLID,),
    (_X, _hh, _HH),
    (Pred("heads", (_X, _HH)),),
    _both_ways(norm(_X), sp.sqrt(sp.Sum(norm(head(_X, _hh)) ** 2, (_hh, 1, _HH)))),
)

ROW_BELOW_FROBENIUS = lemma(
    "graph: a row is at most the whole",
    "‖x_j‖ ≤ ‖X‖_F for every row x_j of X (‖X‖_F² is the sum of the rows' ‖x_i‖² ≥ 0).",
    (_EUCLID,),
    (_X, _j),
    (),
    (sp.Le(norm(row(_X, _j)), norm(_X)),),
)

ROW_COMBINATION = lemma(
    "graph: a row of a product",
    "Row i of AB is Σ_j a_ij b_j (b_j the rows of B); if ‖b_j‖ ≤ V for every j, then by the "
    "triangle inequality and homogeneity ‖Σ_j a_ij b_j‖ ≤ Σ_j |a_ij| ‖b_j‖ ≤ V ‖a_i‖₁.",
    ("triangle inequality; absolute homogeneity of a norm",),
    (_A, _B, _i, _j, _Vb),
    (sp.Le(norm(row(_B, _j)), _Vb),),
    (sp.Le(norm(row(_A * _B, _i)), _Vb * onenorm(row(_A, _i))),),
)

INNER_DIFFERENCE = lemma(
    "graph: a difference of inner products",
    "⟨u, v⟩ − ⟨u', v'⟩ = ⟨u − u', v⟩ + ⟨u', v − v'⟩ (bilinearity of the inner product).",
    ("any text on inner-product spaces (bilinearity)",),
    (_u, _v, _u2, _v2),
    (),
    (sp.Eq(inner(_u, _v) - inner(_u2, _v2), inner(_u - _u2, _v) + inner(_u2, _v - _v2)),),
)

ABS_TRIANGLE = lemma(
    "graph: |p + q| ≤ |p| + |q|",
    "For real p, q: |p + q| ≤ |p| + |q|.",
    (f"{_RUDIN}, Thm 1.33(e)",),
    (_p, _q),
    (),
    (sp.Le(sp.Abs(_p + _q), sp.Abs(_p) + sp.Abs(_q)),),
)

INF_NORM_BY_ENTRIES = lemma(
    "graph: the max norm from its entries",
    "If every entry z_j of a vector z has |z_j| ≤ B, then ‖z‖_∞ = max_j |z_j| ≤ B.",
    ("definition of ‖·‖_∞",),
    (_zrow, _j, _B_),
    (sp.Le(sp.Abs(ent(_zrow, _j)), _B_),),
    (sp.Le(infnorm(_zrow), _B_),),
)

MINKOWSKI_SUM = lemma(
    "graph: Minkowski's inequality (finite sums)",
    "For x_i, y_i ≥ 0 (i = 1, …, n): √(Σ_i (x_i + y_i)²) ≤ √(Σ_i x_i²) + √(Σ_i y_i²).",
    ("W. Rudin, Real and Complex Analysis, 3rd ed., 1987, Thm 3.5 (counting measure, p = 2)",),
    (_pw, _qw, _i, _n),
    (sp.Ge(_pw, 0), sp.Ge(_qw, 0)),
    (
        sp.Le(
            sp.sqrt(sp.Sum((_pw + _qw) ** 2, (_i, 1, _n))),
            sp.sqrt(sp.Sum(_pw**2, (_i, 1, _n))) + sp.sqrt(sp.Sum(_qw**2, (_i, 1, _n))),
        ),
    ),
)

WEIGHTED_CAUCHY_SCHWARZ = lemma(
    "graph: weighted Cauchy–Schwarz",
    "For weights w_j ≥ 0 and reals x_j (j = 1, …, n): (Σ_j w_j x_j)² ≤ (Σ_j w_j)(Σ_j w_j x_j²) "
    "(Cauchy–Schwarz for the vectors (√w_j) and (√w_j x_j)).",
    (f"{_RUDIN}, Thm 1.35",),
    (_pw, _e, _j, _n),
    (sp.Ge(_pw, 0),),
    (
        sp.Le(
            sp.Sum(_pw * _e, (_j, 1, _n)) ** 2,
            sp.Sum(_pw, (_j, 1, _n)) * sp.Sum(_pw * _e**2, (_j, 1, _n)),
        ),
    ),
)

MEAN_VALUE_INF_ONE = lemma(
    "graph: mean value inequality (ℓ∞ → ℓ1)",
    "Let f: ℝⁿ → ℝⁿ (entries e(s, j) at the point s) be continuously differentiable. Its "
    "derivative at s along σ is the vector g = d/dε f(s + εσ) at ε = 0; if Σ_j |g_j| ≤ L for "
    "every s and every σ with ‖σ‖_∞ ≤ 1 (every such σ is σ_l = sin θ_l), then the operator norm "
    "‖Df(s)‖_{∞→1} ≤ L everywhere, and since ℝⁿ is convex, ‖f(x) − f(y)‖₁ ≤ L‖x − y‖_∞ for all "
    "x, y (the mean value inequality in normed spaces).",
    ("J. Dieudonné, Foundations of Modern Analysis, 1960, §8.5 (the mean value theorem)",),
    (_f, _e, _gg, _n, _L, _x, _y),
    (
        Pred("C1", (_f,)),
        _entries(_f, _e, _n),
        _forall_dirs(sp.Eq(ddir(_e, S_ROW, SIGMA, _eps), _gg)),
        _forall_dirs(sp.Le(sp.Sum(sp.Abs(_gg), (_j, 1, _n)), _L)),
    ),
    (sp.Le(onenorm(ev(_f, _x) - ev(_f, _y)), _L * infnorm(_x - _y)),),
)


# ---------------------------------------------------------------------- R11: the claim's symbols
_T = sp.Symbol("T", integer=True, positive=True)  # tokens (rows of Q, K, V; P is T×T)
_H = sp.Symbol("H", integer=True, positive=True)  # heads
_h = sp.Symbol("h", integer=True, positive=True)  # a generic head
_c = sp.Symbol("c", nonnegative=True)  # |scale|
_Lq, _Lk, _Lv = sp.symbols("L_q L_k L_v", nonnegative=True)
_Qn, _Kn, _Vn = sp.symbols("Q K V", nonnegative=True)  # bounds on every row's norm
_sa, _sb = sp.symbols("a b")  # two states of the domain
_qm, _km, _vm, _ym = sp.symbols("q k v y")  # h ↦ Q(h), K(h), V(h), and the output Y(h)
_sm = sp.Symbol("softmax")  # a row of kept scores ↦ its probabilities
_mask = sp.Function("m", real=True)  # m(i, j): the constant mask on the kept keys
_PaF, _PbF, _SaF, _SbF = (
    sp.Function(name, commutative=False) for name in ("P_a", "P_b", "S_a", "S_b")
)
_Pa, _Pb, _Sa, _Sb = _PaF(_h), _PbF(_h), _SaF(_h), _SbF(_h)  # head h's P and S at a, b
_ri = sp.Symbol("i", integer=True, positive=True)  # a generic row (query)
_rj = sp.Symbol("j", integer=True, positive=True)  # a generic key
Qa, Qb = head(ev(_qm, _sa), _h), head(ev(_qm, _sb), _h)
Ka, Kb = head(ev(_km, _sa), _h), head(ev(_km, _sb), _h)
Va, Vb = head(ev(_vm, _sa), _h), head(ev(_vm, _sb), _h)
Ya, Yb = head(ev(_ym, _sa), _h), head(ev(_ym, _sb), _h)
_Y_DIFF = ev(_ym, _sa) - ev(_ym, _sb)
_DELTA = norm(_sa - _sb)
_RT = sp.sqrt(_T)


def _score(Qh: Any, Kh: Any) -> Any:
    return _c * inner(row(Qh, _ri), row(Kh, _rj)) + _mask(_ri, _rj)


R11_ASSUMPTIONS = (
    sp.Le(Lip(_qm), _Lq),  # 0
    sp.Le(Lip(_km), _Lk),  # 1
    sp.Le(Lip(_vm), _Lv),  # 2
    sp.Le(norm(row(Qb, _ri)), _Qn),  # 3: every query row of every head (state b)
    sp.Le(norm(row(Ka, _rj)), _Kn),  # 4: every key row (state a)
    sp.Le(norm(row(Vb, _rj)), _Vn),  # 5: every value row (state b)
    sp.Le(norm(row(Va, _rj)), _Vn),  # 6: every value row (state a)
    Pred("C1", (_sm,)),  # 7
    _entries(_sm, _softmax_entry(_nn), _nn),  # 8: softmax over the n kept keys of a row
    sp.Eq(row(_Pa, _ri), ev(_sm, row(_Sa, _ri))),  # 9: P(a) = softmax of S(a), row by row
    sp.Eq(row(_Pb, _ri), ev(_sm, row(_Sb, _ri))),  # 10
    sp.Eq(ent(row(_Sa, _ri), _rj), _score(Qa, Ka)),  # 11: S = c Q Kᵀ + M on the kept keys
    sp.Eq(ent(row(_Sb, _ri), _rj), _score(Qb, Kb)),  # 12
    sp.Eq(Ya, _Pa * Va),  # 13: head h of the output
    sp.Eq(Yb, _Pb * Vb),  # 14
    Pred("rows", (_Pa, _T)),  # 15: T tokens
    Pred("rows", (Qa - Qb, _T)),  # 16
    Pred("rows", ((_Pa - _Pb) * Vb, _T)),  # 17
    Pred("heads", (_Y_DIFF, _H)),  # 18: H heads
    Pred("heads", (ev(_qm, _sa) - ev(_qm, _sb), _H)),  # 19
    Pred("heads", (ev(_km, _sa) - ev(_km, _sb), _H)),  # 20
    Pred("heads", (ev(_vm, _sa) - ev(_vm, _sb), _H)),  # 21
)


def _r11_goal() -> tuple[Any, ...]:
    # the constant is what dynamo's code evaluates, read now
    lip = formulas.sdpa(_Lq, _Lk, _Lv, _Qn, _Kn, _Vn, _T, _c, sqrt=sp.sqrt)
    return (
        sp.Le(norm(_Y_DIFF), lip * _DELTA),
        sp.Le(norm(row(Ya, _ri)), _Vn),
    )


def _scale_le(d: Derivation, fact: Any, c: Any, why: str) -> Any:
    """``c x ≤ c y`` from ``x ≤ y`` and ``c ≥ 0``."""
    return d.lemma(ORDER_SCALE, why, a=fact.lhs, b=fact.rhs, c=c)


def _softmax_g(n: Any) -> Any:
    """Entry j of the softmax's derivative along σ: p_j(σ_j − σ̄), σ̄ = Σ_j p_j σ_j."""
    p = _softmax_entry(n)
    return p * (SIGMA(_j) - sp.Sum(p * SIGMA(_j), (_j, 1, n)))


def _softmax_bound(d: Derivation, const: Any) -> None:
    """For every score row s and every direction σ = (sin θ_l) (|σ_l| ≤ 1): the softmax's
    derivative along σ is g_j = p_j(σ_j − σ̄), and Σ_j |g_j| ≤ 1 (with ``const`` in place of 1
    for a false variant)."""
    n, j = _nn, _j
    p = _softmax_entry(n)
    sig = SIGMA(j)
    mean = sp.Sum(p * sig, (j, 1, n))
    total = d.identity(sp.Sum(p, (j, 1, n)), 1, "the probabilities sum to 1")
    d.inequality(0, p, "each probability is positive", strict=True)
    g = p * (sig - mean)
    d.identity(
        ddir(p, S_ROW, SIGMA, _eps),
        g,
        "the softmax's Jacobian diag(p) − ppᵀ along σ: g_j = p_j(σ_j − σ̄), σ̄ = Σ_l p_l σ_l",
    )
    dev = sp.Abs(sig - mean)
    cs = d.lemma(
        WEIGHTED_CAUCHY_SCHWARZ,
        "(Σ_j p_j|σ_j − σ̄|)² ≤ Σ_j p_j · Σ_j p_j(σ_j − σ̄)²",
        p=p,
        e=dev,
        j=j,
        n=n,
    )
    z = sp.Symbol("z")
    rest = cs.rhs / total.lhs  # Σ_j p_j(σ_j − σ̄)²
    one = _rewrite(d, total, z, z * rest, "Σ_j p_j = 1")
    var = sp.Sum(p * (sig - mean) ** 2, (j, 1, n))
    second = sp.Sum(p * sig**2, (j, 1, n))
    vi = d.identity(
        var, second - mean**2, "Σ_j p_j(σ_j − σ̄)² = Σ_j p_j σ_j² − σ̄² (weighted variance)"
    )
    drop = d.inequality(second - mean**2, second, "dropping −σ̄² ≤ 0")
    sq = d.inequality(sig**2, 1, "σ_j² = sin² θ_j ≤ 1", by=sp.cos(THETA[j]) ** 2)
    avg = d.lemma(
        WEIGHTED_AVERAGE, "Σ_j p_j σ_j² ≤ 1 (a weighted average)", w=p, a=sq.lhs, A_b=1, k=j, n=n
    )
    d.chain([cs, one, vi, drop, avg], "(Σ_j p_j|σ_j − σ̄|)² ≤ 1")
    fact = d.lemma(SQUARE_ROOT_MONOTONE, "Σ_j |g_j| = Σ_j p_j|σ_j − σ̄| ≤ 1", a=cs.lhs.base, b=1)
    if const != 1:  # a false variant: a smaller constant must follow from what was derived
        d.weaken(fact, const, f"Σ_j |g_j| ≤ {const}")


def _failed(d: Derivation) -> bool:
    return not all(step.ok for step in d.steps)


def _block(d: Derivation, name: str, fn: Callable[[Derivation], Any]) -> Any:
    """Run ``fn`` on a sub-derivation (one case under no condition) and bring back the one fact
    it returns: its intermediate facts stay local, so later steps compare against few. None (and
    the block's steps recorded) where a step failed."""
    sub = d.case(sp.true)
    sub.claim = f"{d.claim} [{name}]"
    fact = fn(sub)
    if _failed(sub) or fact is None:
        d.steps.extend(sub.steps)
        return None
    return d.cases(fact, [sub], name)


def _softmax_rows(d: Derivation, const: Any) -> Any:
    """‖Δp_i‖₁ ≤ ‖Δs_i‖_∞ for row i: the softmax's bound, then the mean value inequality."""
    _softmax_bound(d, const)
    if _failed(d):
        return None
    return _lemma_forall(
        d,
        MEAN_VALUE_INF_ONE,
        "‖Δp_i‖₁ ≤ ‖Δs_i‖_∞ (the softmax is 1-Lipschitz from ℓ∞ to ℓ1)",
        f=_sm,
        e=_softmax_entry(_nn),
        g=_softmax_g(_nn),
        n=_nn,
        L=1,
        x=row(_Sa, _ri),
        y=row(_Sb, _ri),
    )


def _stochastic(d: Derivation) -> None:
    """P(a) is row-stochastic (its rows are softmax rows), with the norms that follow."""
    p = _softmax_entry(_nn)
    d.identity(sp.Sum(p, (_j, 1, _nn)), 1, "a softmax row sums to 1")
    d.inequality(0, p, "each probability is positive", strict=True)
    _lemma_forall(
        d,
        SOFTMAX_STOCHASTIC,
        "P(a) is row-stochastic",
        P=_Pa,
        S=_Sa,
        f=_sm,
        e=p,
        n=_nn,
        m=_T,
        i=_ri,
    )
    d.lemma(ROW_STOCHASTIC_NORMS, "‖P(a)‖_∞ ≤ 1, ‖P(a)‖₁ ≤ T, ‖p_i‖₁ = 1", P=_Pa, m=_T, i=_ri)


def _value_part(d: Derivation, root_t: Any) -> Any:
    """‖P(a)ΔV‖_F ≤ √T ‖ΔV‖_F for head h (``root_t`` in place of √T: a false variant)."""
    _stochastic(d)
    two = d.lemma(TWO_NORM_ONE_INF, "‖P(a)‖₂ ≤ √(‖P(a)‖₁‖P(a)‖_∞)", A=_Pa)
    _prod(d, opnorm_1(_Pa), _T, opnorm_inf(_Pa), 1, "‖P(a)‖₁‖P(a)‖_∞ ≤ T")
    root = d.lemma(SQUARE_ROOT_MONOTONE, "√(‖P‖₁‖P‖_∞) ≤ √T", a=two.rhs, b=root_t)
    if _failed(d):
        return None
    pn = d.chain([two, root], "‖P(a)‖₂ ≤ √T (a row-stochastic T×T matrix)")
    fs = d.lemma(FROBENIUS_SPECTRAL, "‖P(a)ΔV‖_F ≤ ‖P(a)‖₂‖ΔV‖_F", A=_Pa, B=Va - Vb)
    dv = norm(Va - Vb)
    both = _prod(d, pn.lhs, pn.rhs, dv, dv, "‖P(a)‖₂‖ΔV‖_F ≤ √T ‖ΔV‖_F")
    return d.chain([fs, both], "the value part: ‖P(a)ΔV‖_F ≤ √T ‖ΔV‖_F")


def _scores(d: Derivation) -> Any:
    """‖Δs_i‖_∞ ≤ c (K‖Δq_i‖ + Q‖ΔK‖_F) for a generic row i."""
    z = sp.Symbol("z")
    qa, qb, ka, kb = row(Qa, _ri), row(Qb, _ri), row(Ka, _rj), row(Kb, _rj)
    # the scores' difference on a kept key j: the mask cancels
    xb = ent(row(_Sb, _ri), _rj)
    r1 = _rewrite(d, R11_ASSUMPTIONS[11], z, z - xb, "s_ij(a) = c⟨q_i(a), k_j(a)⟩ + m_ij")
    r2 = _rewrite(
        d, R11_ASSUMPTIONS[12], z, r1.rhs.xreplace({xb: z}), "s_ij(b) likewise: m_ij cancels"
    )
    bil = d.lemma(
        INNER_DIFFERENCE,
        "⟨q_i(a), k_j(a)⟩ − ⟨q_i(b), k_j(b)⟩",
        u=qa,
        v=ka,
        **{"u'": qb, "v'": kb},
    )
    r3 = _rewrite(d, bil, z, _c * z, "times c")
    ds = d.chain([r1, r2, r3], "Δs_ij = c(⟨Δq_i, k_j(a)⟩ + ⟨q_i(b), Δk_j⟩)")
    ab = _rewrite(d, ds, z, sp.Abs(z), "|Δs_ij|")
    iq, ik = inner(qa - qb, ka), inner(qb, ka - kb)
    tri = d.lemma(ABS_TRIANGLE, "|⟨Δq_i, k_j(a)⟩ + ⟨q_i(b), Δk_j⟩| ≤ |·| + |·|", p=iq, q=ik)
    cq = d.lemma(CAUCHY_SCHWARZ, "|⟨Δq_i, k_j(a)⟩| ≤ ‖Δq_i‖‖k_j(a)‖", u=qa - qb, v=ka)
    ck = d.lemma(CAUCHY_SCHWARZ, "|⟨q_i(b), Δk_j⟩| ≤ ‖q_i(b)‖‖Δk_j‖", u=qb, v=ka - kb)
    alpha, beta = norm(qa - qb), norm(Ka - Kb)
    bq = _prod(d, alpha, alpha, norm(ka), _Kn, "≤ K ‖Δq_i‖ (‖k_j(a)‖ ≤ K)")
    d.chain([cq, bq], "|⟨Δq_i, k_j(a)⟩| ≤ K ‖Δq_i‖")
    rk = d.lemma(ROW_BELOW_FROBENIUS, "‖Δk_j‖ ≤ ‖ΔK‖_F", X=Ka - Kb, j=_rj)
    bk = _prod(d, norm(qb), _Qn, rk.lhs, beta, "≤ Q ‖ΔK‖_F (‖q_i(b)‖ ≤ Q)")
    d.chain([ck, bk], "|⟨q_i(b), Δk_j⟩| ≤ Q ‖ΔK‖_F")
    sb = d.lemma(
        SUM_OF_BOUNDS, "adding", a=sp.Abs(iq), A_b=alpha * _Kn, b=sp.Abs(ik), B_b=_Qn * beta
    )
    s1 = _scale_le(d, tri, _c, "times c ≥ 0")
    s2 = _scale_le(d, sb, _c, "times c")
    if _failed(d):
        return None
    entry = d.chain([ab, s1, s2], "|Δs_ij| ≤ c(K ‖Δq_i‖ + Q ‖ΔK‖_F) for every kept key j")
    return d.lemma(
        INF_NORM_BY_ENTRIES,
        "‖Δs_i‖_∞ ≤ c(K ‖Δq_i‖ + Q ‖ΔK‖_F)",
        z=row(_Sa, _ri) - row(_Sb, _ri),
        j=_rj,
        B=entry.rhs,
    )


def _row_bound(d: Derivation, mv: Any, inf: Any) -> Any:
    """‖row i of ΔP V(b)‖ ≤ V c (K‖Δq_i‖ + Q‖ΔK‖_F) from ‖Δp_i‖₁ ≤ ‖Δs_i‖_∞ (``mv``) and the
    scores' bound (``inf``)."""
    z = sp.Symbol("z")
    pa = _rewrite(d, R11_ASSUMPTIONS[9], z, onenorm(z - row(_Pb, _ri)), "row i of P(a)")
    pb = _rewrite(d, R11_ASSUMPTIONS[10], z, onenorm(ev(_sm, row(_Sa, _ri)) - z), "row i of P(b)")
    dp = d.chain([pa, pb, mv, inf], "‖Δp_i‖₁ ≤ c(K ‖Δq_i‖ + Q ‖ΔK‖_F)")
    comb = d.lemma(
        ROW_COMBINATION,
        "row i of ΔP V(b) is Σ_j Δp_ij v_j(b): ‖·‖ ≤ V ‖Δp_i‖₁",
        A=_Pa - _Pb,
        B=Vb,
        i=_ri,
        j=_rj,
        V_b=_Vn,
    )
    scaled = _scale_le(d, dp, _Vn, "times V")
    if _failed(d):
        return None
    return d.chain([comb, scaled], "‖row i of ΔP V(b)‖ ≤ V c (K ‖Δq_i‖ + Q ‖ΔK‖_F)")


def _rows_part(d: Derivation, one: Any) -> Any:
    """‖ΔP V(b)‖_F ≤ V c (K ‖ΔQ‖_F + √T Q ‖ΔK‖_F) for head h: the rows' bounds (``one``)
    summed by Minkowski's inequality."""
    z = sp.Symbol("z")
    sq = _prod(d, one.lhs, one.rhs, one.lhs, one.rhs, "squared")
    tot = d.lemma(SUM_MONOTONE, "summed over the T rows", a=sq.lhs, b=sq.rhs, k=_ri, n=_T)
    X = (_Pa - _Pb) * Vb
    fr = d.lemma(FROBENIUS_ROWS, "‖ΔP V(b)‖_F = √(Σ_i ‖row i‖²)", X=X, i=_ri, n=_T)
    rt = d.lemma(SQUARE_ROOT_MONOTONE, "≤ √(Σ_i (row i's bound)²)", a=fr.rhs, b=sp.sqrt(tot.rhs))
    alpha, beta = norm(row(Qa, _ri) - row(Qb, _ri)), norm(Ka - Kb)
    xs, ys = _Kn * alpha, _Qn * beta
    pull = d.identity(
        rt.rhs, _Vn * _c * sp.sqrt(sp.Sum((xs + ys) ** 2, (_ri, 1, _T))), "V c out of the sum"
    )
    mk = d.lemma(MINKOWSKI_SUM, "Minkowski over the rows", p=xs, q=ys, i=_ri, n=_T)
    smk = _scale_le(d, mk, _Vn * _c, "times V c")
    if _failed(d):
        return None
    # √(Σ_i K²‖Δq_i‖²) = K ‖ΔQ‖_F and √(Σ_{i ≤ T} Q²‖ΔK‖_F²) = √T Q ‖ΔK‖_F
    x_sum = sp.sqrt(sp.Sum(xs**2, (_ri, 1, _T)))
    y_sum = sp.sqrt(sp.Sum(ys**2, (_ri, 1, _T)))
    fq = d.lemma(FROBENIUS_ROWS, "‖ΔQ‖_F = √(Σ_i ‖Δq_i‖²)", X=Qa - Qb, i=_ri, n=_T)
    ka = d.identity(x_sum, _Kn * fq.rhs, "K out of the sum")
    kq = _rewrite(d, _flip(fq), z, _Kn * z, "K ‖ΔQ‖_F")
    xq = d.chain([ka, kq], "√(Σ_i K²‖Δq_i‖²) = K ‖ΔQ‖_F")
    d.inequality(y_sum**2, (_RT * ys) ** 2, "T equal terms: Σ_{i ≤ T} Q²‖ΔK‖_F² = T Q²‖ΔK‖_F²")
    yk = d.lemma(SQUARE_ROOT_MONOTONE, "√(Σ_{i ≤ T} Q²‖ΔK‖_F²) ≤ √T Q ‖ΔK‖_F", a=y_sum, b=_RT * ys)
    shift = d.lemma(ORDER_SHIFT, "plus √(Σ_i K²‖Δq_i‖²)", a=yk.lhs, b=yk.rhs, k=x_sum)
    vb = _scale_le(d, shift, _Vn * _c, "times V c")
    kq2 = _rewrite(d, xq, z, _Vn * _c * (z + yk.rhs), "√(Σ_i K²‖Δq_i‖²) = K ‖ΔQ‖_F")
    if _failed(d):
        return None
    return d.chain(
        [fr, rt, pull, smk, vb, kq2], "the softmax part: ‖ΔP V(b)‖_F ≤ V c (K ‖ΔQ‖_F + √T Q ‖ΔK‖_F)"
    )


def _one_head(d: Derivation, first: Any, second: Any) -> Any:
    """‖ΔY_h‖_F ≤ √T ‖ΔV_h‖ + V c (K ‖ΔQ_h‖ + √T Q ‖ΔK_h‖) for head h."""
    z = sp.Symbol("z")
    ea = _rewrite(d, R11_ASSUMPTIONS[13], z, norm(z - Yb), "head h of Y(a) is P(a)V(a)")
    eb = _rewrite(d, R11_ASSUMPTIONS[14], z, norm(_Pa * Va - z), "head h of Y(b) is P(b)V(b)")
    split = d.identity(
        _Pa * Va - _Pb * Vb,
        _Pa * (Va - Vb) + (_Pa - _Pb) * Vb,
        "P(a)V(a) − P(b)V(b) = P(a)ΔV + ΔP V(b)",
    )
    eq = _rewrite(d, split, z, norm(z), "its norm")
    tri = d.lemma(
        TRIANGLE,
        "‖P(a)ΔV + ΔP V(b)‖ ≤ ‖P(a)ΔV‖ + ‖ΔP V(b)‖",
        u=first.lhs.args[0],
        v=second.lhs.args[0],
    )
    both = d.lemma(
        SUM_OF_BOUNDS,
        "adding the two parts",
        a=first.lhs,
        A_b=first.rhs,
        b=second.lhs,
        B_b=second.rhs,
    )
    return d.chain(
        [ea, eb, eq, tri, both], "head h: ‖ΔY_h‖ ≤ √T‖ΔV_h‖ + V c (K‖ΔQ_h‖ + √T Q‖ΔK_h‖)"
    )


def _heads(d: Derivation, one: Any) -> Any:
    """The heads together (``one``: head h's bound): Minkowski over the heads, then the
    Lipschitz bounds of q, k, v on the whole tensors."""
    z = sp.Symbol("z")
    dv, dq, dk = norm(Va - Vb), norm(Qa - Qb), norm(Ka - Kb)
    consts = (_RT, _Vn * _c * _Kn, _Vn * _c * _RT * _Qn)
    xs, ys, zs = (k * t for k, t in zip(consts, (dv, dq, dk), strict=True))
    fy = d.lemma(FROBENIUS_HEADS, "‖ΔY‖_F = √(Σ_h ‖ΔY_h‖²)", X=_Y_DIFF, h=_h, H=_H)
    sq = _prod(d, one.lhs, one.rhs, one.lhs, one.rhs, "squared")
    tot = d.lemma(SUM_MONOTONE, "summed over the H heads", a=sq.lhs, b=sq.rhs, k=_h, n=_H)
    rt = d.lemma(SQUARE_ROOT_MONOTONE, "≤ √(Σ_h (head h's bound)²)", a=fy.rhs, b=sp.sqrt(tot.rhs))
    form = d.identity(rt.rhs, sp.sqrt(sp.Sum((xs + ys + zs) ** 2, (_h, 1, _H))), "expanded")
    m1 = d.lemma(MINKOWSKI_SUM, "Minkowski over the heads", p=xs, q=ys + zs, i=_h, n=_H)
    m2 = d.lemma(MINKOWSKI_SUM, "and once more", p=ys, q=zs, i=_h, n=_H)
    x_sum = sp.sqrt(sp.Sum(xs**2, (_h, 1, _H)))
    shift = d.lemma(ORDER_SHIFT, "so", a=m2.lhs, b=m2.rhs, k=x_sum)
    if _failed(d):
        return None
    # each sum is a constant times ‖ΔV‖_F, ‖ΔQ‖_F, ‖ΔK‖_F: then the Lipschitz bounds
    bounds = []
    for name, mp, lip, diff, const in zip(
        ("V", "Q", "K"), (_vm, _qm, _km), (_Lv, _Lq, _Lk), (dv, dq, dk), consts, strict=True
    ):
        whole = ev(mp, _sa) - ev(mp, _sb)
        fh = d.lemma(FROBENIUS_HEADS, f"‖Δ{name}‖_F = √(Σ_h ‖Δ{name}_h‖²)", X=whole, h=_h, H=_H)
        term = sp.sqrt(sp.Sum((const * diff) ** 2, (_h, 1, _H)))
        out = d.identity(term, const * fh.rhs, "the constant out of the sum")
        back = _rewrite(d, _flip(fh), z, const * z, f"the whole Δ{name}")
        lp = d.lemma(LIP_POINTWISE, f"‖Δ{name}‖_F ≤ L ‖a − b‖", f=mp, L=lip, x=_sa, y=_sb)
        sc = _scale_le(d, lp, const, "times the constant")
        bounds.append(d.chain([out, back, sc], f"the {name} term ≤ its constant × L ‖a − b‖"))
    bx, by, bz = bounds
    s1 = d.lemma(SUM_OF_BOUNDS, "adding", a=bx.lhs, A_b=bx.rhs, b=by.lhs, B_b=by.rhs)
    s2 = d.lemma(SUM_OF_BOUNDS, "adding", a=s1.lhs, A_b=s1.rhs, b=bz.lhs, B_b=bz.rhs)
    if _failed(d):
        return None
    return d.chain(
        [fy, rt, form, m1, shift, s2],
        "‖Y(a) − Y(b)‖_F ≤ (√T L_v + V c (K L_q + √T Q L_k))‖a − b‖",
    )


def _output_rows(d: Derivation) -> Any:
    """‖y_i(a)‖ ≤ V for every row of every head: a convex combination of value rows."""
    _stochastic(d)
    z = sp.Symbol("z")
    yr = _rewrite(d, R11_ASSUMPTIONS[13], z, norm(row(z, _ri)), "row i of head h of Y(a)")
    comb = d.lemma(ROW_COMBINATION, "y_i(a) = Σ_j p_ij v_j(a)", A=_Pa, B=Va, i=_ri, j=_rj, V_b=_Vn)
    sc = _scale_le(d, sp.Le(onenorm(row(_Pa, _ri)), 1), _Vn, "‖p_i‖₁ = 1")
    if _failed(d):
        return None
    return d.chain([yr, comb, sc], "‖y_i(a)‖ ≤ V")


def _check_r11(seed: int = 0) -> CheckResult:
    """sdpa's rule against local Jacobian norms of h ↦ sdpa(hW_qᵀ, hW_kᵀ, hW_vᵀ) (two heads, T = 5
    tokens of norm ≤ R, plain and causal), at random and gradient-ascended points."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = _gen(seed)
    n_tok, dim, heads, radius = 5, 4, 2, 1.5
    Wq, Wk, Wv = (torch.randn(dim, dim, generator=g, dtype=F64) for _ in range(3))
    sig = [float(torch.linalg.matrix_norm(w, ord=2)) for w in (Wq, Wk, Wv)]
    # h ↦ h Wᵀ on all tokens has Lip σ_max(W); a row of one head is part of a row: ≤ σ_max(W) R
    lq, lk, lv = sig
    qh, kh, vh = (s * radius for s in sig)
    scale = 1 / math.sqrt(dim // heads)
    bound = formulas.sdpa(lq, lk, lv, qh, kh, vh, n_tok, scale)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(n_tok, heads, dim // heads).transpose(0, 1)

    found, rows = {}, 0.0
    for causal in (False, True):

        def fn(h: torch.Tensor, causal: bool = causal) -> torch.Tensor:
            x = h.reshape(n_tok, dim)
            q, k, v = split(x @ Wq.T), split(x @ Wk.T), split(x @ Wv.T)
            with sdpa_kernel(SDPBackend.MATH):
                y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return y.reshape(-1)

        found["causal" if causal else "plain"] = _local_max(
            fn, n_tok * dim, seed + int(causal), samples=8, steps=10, radius=radius, rows=n_tok
        )
        for _ in range(16):  # every output row is a convex combination of value rows
            h = torch.randn(n_tok, dim, generator=g, dtype=F64)
            h = h / h.norm(dim=-1, keepdim=True) * radius
            y = fn(h.reshape(-1)).reshape(heads, n_tok, -1)
            rows = max(rows, float(y.norm(dim=-1).max()))
    ok = all(low <= bound * (1 + 1e-12) for low in found.values()) and rows <= vh * (1 + 1e-12)
    return CheckResult(
        "R11",
        ok,
        f"sdpa rule {bound:.5g} >= largest local ‖J‖₂ found "
        + ", ".join(f"{k} {v:.5g}" for k, v in found.items())
        + f" (2 heads, T = {n_tok}, tokens of norm ≤ {radius}); output rows ≤ {rows:.4g} <= V "
        f"{vh:.4g}",
        {"rule": bound, **found, "row_norm": rows, "V": vh},
    )


def _bound(lv: Any, lq_term: Any, lk_term: Any) -> tuple[Any, ...]:
    """A (false) statement with the bound (lv + c V (lq_term + lk_term)) ‖a − b‖."""
    return (sp.Le(norm(_Y_DIFF), (lv + _c * _Vn * (lq_term + lk_term)) * _DELTA),)


@claim(
    "R11",
    "Rule: scaled dot-product attention",
    r"Attention with $H$ heads on $T$ tokens: in head $h$, $y_i = \sum_j p_{ij} v_j$, "
    r"$p_i = \mathrm{softmax}(s_i)$ over the keys row $i$ keeps, $s_{ij} = c\,q_i^\top k_j + "
    r"m_{ij}$ ($c \ge 0$ standing for $|c|$; a constant mask whose $-\infty$ entries drop keys, "
    r"every row keeping one), where $Q, K, V$ (all heads) are maps of the state with "
    r"$\mathrm{Lip} \le L_q, L_k, L_v$ and every row of every head has norm at most $Q, K, V$ on "
    r"the domain. For every two states $a, b$ of the domain (no convexity needed): "
    r"$\lVert Y(a) - Y(b)\rVert_F \le (\sqrt T L_v + c V (K L_q + \sqrt T Q L_k))"
    r"\lVert a - b\rVert$ (lipschitz_formulas.sdpa), from $Y_h(a) - Y_h(b) = P(a)\Delta V + "
    r"\Delta P\,V(b)$, $\lVert P\rVert_2 \le \sqrt{\lVert P\rVert_1\lVert P\rVert_\infty} \le "
    r"\sqrt T$, the softmax being 1-Lipschitz from $\ell_\infty$ to $\ell_1$, and Minkowski over "
    r"the rows and over the heads; and every output row has $\lVert y_i\rVert \le V$.",
    (
        "q, k, v: maps of the state (h ↦ Q(h), K(h), V(h): H heads of T rows) with Lip ≤ L_q, "
        "L_k, L_v over all heads",
        "every row of every head of Q(b), K(a), V(a), V(b) has norm ≤ Q, K, V (a, b are any two "
        "states of the domain: the row bounds hold on all of it)",
        "in head h, P(h) is the softmax of S(h) = c Q_h K_hᵀ + M row by row over the n keys row "
        "i keeps (zero at the masked keys, relabelled 1..n); M is the same for both states",
        "c ≥ 0 stands for |scale| (a negative scale is the same with k replaced by −k)",
        "the output Y has head h equal to P(h) V_h",
    ),
    (
        "Kim, Papamakarios & Mnih, arXiv:2006.04710",
        "Castin, Ablin & Peyré, arXiv:2312.14820",
        "Golub & Van Loan, Matrix Computations, 4th ed., 2013, Cor. 2.3.2",
        "Dieudonné, Foundations of Modern Analysis, 1960, §8.5",
        _HJ,
    ),
    _check_r11,
    goal=_r11_goal,
    assumptions=R11_ASSUMPTIONS,
    variants=(
        Variant(
            "without √T on L_v (as if ‖P‖₂ ≤ 1)",
            goal=_bound(_Lv, _Kn * _Lq, _RT * _Qn * _Lk),
        ),
        Variant("‖P‖₂ ≤ 1 used in the derivation", overrides={"root_t": sp.Integer(1)}),
        Variant(
            "the softmax term without √T on L_k",
            goal=_bound(_RT * _Lv, _Kn * _Lq, _Qn * _Lk),
        ),
        Variant(
            "V dropped from the softmax term",
            goal=(
                sp.Le(
                    norm(_Y_DIFF),
                    (_RT * _Lv + _c * (_Kn * _Lq + _RT * _Qn * _Lk)) * _DELTA,
                ),
            ),
        ),
        Variant("dynamo's sdpa divided by 100", patch=lambda: code_scaled("sdpa", 0.01)),
        Variant(
            "the softmax's ℓ∞ → ℓ1 constant 1/2", overrides={"softmax_const": sp.Rational(1, 2)}
        ),
        Variant("without the bound K on the key rows", drop=(4,)),
    ),
)
def r11(d: Derivation, root_t: Any = None, softmax_const: Any = 1) -> None:
    """The derivation, in blocks (each keeps its intermediate facts local); it stops at the
    first failed step. ``root_t`` replaces √T in ‖P‖₂ ≤ √T, ``softmax_const`` the softmax's
    ℓ∞ → ℓ1 constant 1 (false variants)."""
    rt = _RT if root_t is None else root_t
    parts: list[Any] = []
    first = _block(d, "head h: the value part", lambda sub: _value_part(sub, rt))
    steps: list[tuple[str, Callable[[Derivation], Any]]] = [
        ("head h: the softmax", lambda sub: _softmax_rows(sub, softmax_const)),
        ("head h: the scores", _scores),
        ("head h: row i", lambda sub: _row_bound(sub, parts[0], parts[1])),
        ("head h: the rows summed", lambda sub: _rows_part(sub, parts[2])),
        ("head h", lambda sub: _one_head(sub, first, parts[3])),
        ("the heads together", lambda sub: _heads(sub, parts[4])),
    ]
    if first is None:
        return
    for name, fn in steps:
        fact = _block(d, name, fn)
        if fact is None:
            return
        parts.append(fact)
    code = formulas.sdpa(_Lq, _Lk, _Lv, _Qn, _Kn, _Vn, _T, _c, sqrt=sp.sqrt)
    d.weaken(parts[-1], code * _DELTA, "dynamo's sdpa (lipschitz_formulas.sdpa)")
    _block(d, "the output rows", _output_rows)
