"""The cited lemmas proofs may apply, and the symbols and functions facts are written in.

Each lemma states its theorem as cited, hypotheses included; a proof applies it with
:meth:`theory.Derivation.lemma`, which checks every instantiated hypothesis. Vectors, matrices and
maps are sympy symbols (noncommutative where their products do not commute); norms, Lipschitz
constants and the like are undefined functions of them, so a fact about ``norm(A*B)`` is about
every ``A`` and ``B``.
"""

from __future__ import annotations

from typing import Any

import sympy as sp

from ._logic import Pred, lemma

__all__ = [
    "Lip",
    "add",
    "at",
    "charpoly",
    "compose",
    "inner",
    "norm",
    "opnorm",
]

#: ‖·‖₂ of a vector (or the spectral norm of a matrix): nonnegative
norm = sp.Function("norm", nonnegative=True)
#: the spectral norm ‖·‖₂ of a linear map
opnorm = sp.Function("opnorm", nonnegative=True)
#: the Lipschitz constant (in the 2-norm) of a map, on a set when a second argument is given
Lip = sp.Function("Lip", nonnegative=True)
#: ``compose(g, f) = g ∘ f``
compose = sp.Function("compose")
#: ``add(f, g) = f + g`` (pointwise)
add = sp.Function("add")
#: the Euclidean inner product
inner = sp.Function("inner", real=True)
#: the characteristic polynomial ``det(λI − A)`` of a square matrix, as a function of λ
charpoly = sp.Function("charpoly")


class at(sp.Function):
    """``expr`` with ``var`` set to ``value``. In a lemma's template ``expr`` is a bare symbol and
    the call stays unevaluated; once the lemma is instantiated with an explicit expression, the
    substitution happens, so a hypothesis can speak of "f at the point y" for the f applied."""

    @classmethod
    def eval(cls, expr: Any, var: Any, value: Any) -> Any:
        if isinstance(expr, sp.Symbol) and expr != var:
            return None
        return expr.xreplace({var: value})


_u, _v = sp.symbols("u v")
_A, _B = sp.symbols("A B", commutative=False)
_f, _g, _S, _K = sp.symbols("f g S K")
_Lf, _Lg, _L = sp.symbols("L_f L_g L", nonnegative=True)
_lam = sp.Symbol("lambda")

TRIANGLE = lemma(
    "triangle inequality",
    "‖u + v‖ ≤ ‖u‖ + ‖v‖ for every norm and all u, v.",
    ("Minkowski; any text on normed spaces",),
    (_u, _v),
    (),
    (sp.Le(norm(_u + _v), norm(_u) + norm(_v)),),
)

SUBMULTIPLICATIVE = lemma(
    "submultiplicativity",
    "‖AB‖₂ ≤ ‖A‖₂‖B‖₂ for the operator norm induced by a vector norm.",
    ("R. A. Horn, C. R. Johnson, Matrix Analysis, 2nd ed., 2013, §5.6",),
    (_A, _B),
    (),
    (sp.Le(opnorm(_A * _B), opnorm(_A) * opnorm(_B)),),
)

CAUCHY_SCHWARZ = lemma(
    "Cauchy-Schwarz inequality",
    "|⟨u, v⟩| ≤ ‖u‖‖v‖ in an inner-product space.",
    ("any text on inner-product spaces",),
    (_u, _v),
    (),
    (sp.Le(sp.Abs(inner(_u, _v)), norm(_u) * norm(_v)),),
)

LIP_COMPOSITION = lemma(
    "lipschitz composition",
    "If Lip(f) ≤ L_f and Lip(g) ≤ L_g (g defined on f's image), then Lip(g ∘ f) ≤ L_g L_f.",
    (
        "chain of the two Lipschitz inequalities; e.g. Heinonen, Lectures on Analysis on Metric "
        "Spaces, 2001",
    ),
    (_f, _g, _Lf, _Lg),
    (sp.Le(Lip(_f), _Lf), sp.Le(Lip(_g), _Lg)),
    (sp.Le(Lip(compose(_g, _f)), _Lf * _Lg),),
)

LIP_SUM = lemma(
    "lipschitz sum",
    "If Lip(f) ≤ L_f and Lip(g) ≤ L_g on one domain, then Lip(f + g) ≤ L_f + L_g.",
    ("triangle inequality",),
    (_f, _g, _Lf, _Lg),
    (sp.Le(Lip(_f), _Lf), sp.Le(Lip(_g), _Lg)),
    (sp.Le(Lip(add(_f, _g)), _Lf + _Lg),),
)

MEAN_VALUE = lemma(
    "mean value inequality",
    "If f is differentiable on a convex set S and ‖Df(x)‖₂ ≤ L for every x in S, then "
    "‖f(x) − f(y)‖ ≤ L‖x − y‖ on S: Lip(f on S) ≤ L.",
    ("J. Dieudonné, Foundations of Modern Analysis, 1960, (8.5.1)",),
    (_f, _S, _L),
    (
        Pred("differentiable_on", (_f, _S)),
        Pred("convex", (_S,)),
        Pred("jacobian_norm_at_most", (_f, _S, _L)),
    ),
    (sp.Le(Lip(_f, _S), _L),),
)

BANACH = lemma(
    "Banach fixed-point theorem",
    "If S is a nonempty closed subset of a complete metric space, f maps S into S and "
    "Lip(f on S) ≤ L < 1, then f has exactly one fixed point h* in S, every iteration from S "
    "converges to it, ‖h_{j+1} − h_j‖ ≤ L^j ‖h_1 − h_0‖, and ‖h − h*‖ ≤ L‖h − h*‖ + ‖f(h) − h‖ "
    "(the contraction inequality the error bounds come from).",
    ("S. Banach, Fund. Math. 3, 1922; E. Zeidler, Nonlinear Functional Analysis I, 1986, Thm 1.A",),
    (_f, _S, _L),
    (
        Pred("nonempty_closed", (_S,)),
        Pred("maps_into", (_f, _S)),
        sp.Le(Lip(_f, _S), _L),
        sp.Lt(_L, 1),
    ),
    (
        Pred("unique_fixed_point", (_f, _S)),
        Pred("iteration_converges", (_f, _S)),
    ),
)

BROUWER = lemma(
    "Brouwer fixed-point theorem",
    "A continuous map of a nonempty compact convex subset of ℝⁿ into itself has a fixed point.",
    ("L. E. J. Brouwer, Math. Ann. 71, 1912",),
    (_f, _K),
    (
        Pred("continuous", (_f,)),
        Pred("nonempty_compact_convex", (_K,)),
        Pred("maps_into", (_f, _K)),
    ),
    (Pred("has_fixed_point", (_f, _K)),),
)

SYLVESTER = lemma(
    "eig(AB) = eig(BA)",
    "For square A, B of one size, AB and BA have the same characteristic polynomial "
    "(det(λI − AB) = det(λI − BA); for A m×n, B n×m the nonzero eigenvalues agree).",
    ("Horn & Johnson, Matrix Analysis, Thm 1.3.22",),
    (_A, _B),
    (),
    (sp.Eq(charpoly(_A * _B), charpoly(_B * _A)),),
)
