"""The proof engine: facts, cited lemmas and derivations whose every step sympy checks.

A :class:`Derivation` starts from a claim's hypotheses (facts taken as given) and adds facts one
checked step at a time:

* an **identity** or **inequality** on symbols, decided by sympy (``simplify(lhs − rhs) = 0``;
  ``rhs − lhs ≥ 0`` from the symbols' assumptions, optionally through a certificate: an
  expression sympy shows equal to the difference and nonnegative);
* the application of a named, cited :class:`Lemma`, whose every hypothesis, instantiated, must
  already be a fact (or be decided true by sympy from the symbols' assumptions);
* a **chain** of known relations (``a ≤ b``, ``b = c``, ``c < d`` gives ``a < d``);
* a **case split**: the same fact derived under each of a set of conditions that sympy shows
  exhaustive;
* an **instance check** (a computation on one concrete instance, e.g. ``d = 3``) or a
  **numeric** evaluation: recorded and checked, but a proof containing one is labelled as such,
  never as a proof of the general statement.

A claim's statement is a tuple of facts (its *goal*); the proof holds only if every step checks
and every goal fact has been derived. A step that compares an expression with itself (after
sympy's automatic evaluation) is refused: it would check nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from itertools import pairwise
from typing import Any

import sympy as sp

__all__ = [
    "LEMMAS",
    "Derivation",
    "Lemma",
    "Pred",
    "ProofKind",
    "Step",
    "fact_latex",
    "fact_str",
    "same_fact",
]


class ProofKind(str, Enum):
    """What a proof shows, weakest step first: a proof is as strong as its weakest step.

    Examples
    --------
    >>> from theory import ProofKind
    >>> ProofKind.GENERAL.label, ProofKind.weakest([ProofKind.GENERAL, ProofKind.INSTANCE])
    ('proved in general', <ProofKind.INSTANCE: 'instance'>)
    """

    GENERAL = "general"
    INSTANCE = "instance"
    NUMERIC = "numeric"

    @property
    def label(self) -> str:
        """The words ``dynamo prove`` prints."""
        return {
            "general": "proved in general",
            "instance": "instance check",
            "numeric": "numeric only",
        }[self.value]

    @staticmethod
    def weakest(kinds: Iterable[ProofKind]) -> ProofKind:
        """The weakest of ``kinds`` (GENERAL for none)."""
        order = [ProofKind.GENERAL, ProofKind.INSTANCE, ProofKind.NUMERIC]
        return max(kinds, key=order.index, default=ProofKind.GENERAL)


@dataclass(frozen=True)
class Pred:
    """A proposition that is not an arithmetic relation: ``name(args)``, e.g.
    ``Pred("maps_into", f, S)`` or ``Pred("unique_fixed_point", f, S)``.

    Examples
    --------
    >>> import sympy as sp
    >>> from theory import Pred
    >>> f, S = sp.symbols("f S")
    >>> str(Pred("maps_into", (f, S)))
    'maps_into(f, S)'
    """

    name: str
    args: tuple[Any, ...] = ()

    def xreplace(self, mapping: Mapping[Any, Any]) -> Pred:
        """The proposition with ``mapping`` applied to every argument."""
        return Pred(self.name, tuple(_replace(a, mapping) for a in self.args))

    def __str__(self) -> str:
        return f"{self.name}({', '.join(str(a) for a in self.args)})"


Fact = Any  # a sympy Relational (Eq, Le, Lt, Ge, Gt), a sympy Boolean, or a Pred


def _free(fact: Any) -> set[Any]:
    """The free symbols (and applied undefined functions' symbols) of a fact."""
    if isinstance(fact, Pred):
        out: set[Any] = set()
        for a in fact.args:
            out |= _free(a)
        return out
    if isinstance(fact, tuple):
        out = set()
        for a in fact:
            out |= _free(a)
        return out
    if isinstance(fact, sp.Basic):
        return set(fact.free_symbols)
    return set()


def _replace(obj: Any, mapping: Mapping[Any, Any]) -> Any:
    if isinstance(obj, Pred):
        return obj.xreplace(mapping)
    if isinstance(obj, tuple):
        return tuple(_replace(o, mapping) for o in obj)
    if isinstance(obj, sp.Basic):
        return obj.xreplace(dict(mapping))
    return obj


def fact_str(fact: Fact) -> str:
    """A fact in one line.

    Examples
    --------
    >>> import sympy as sp
    >>> from theory import fact_str
    >>> x = sp.Symbol("x")
    >>> fact_str(sp.Le(x, 1))
    'x <= 1'
    """
    return str(fact)


def fact_latex(fact: Fact) -> str:
    """A fact in LaTeX (a :class:`Pred` as ``\\mathrm{name}(args)``).

    Examples
    --------
    >>> import sympy as sp
    >>> from theory import fact_latex
    >>> fact_latex(sp.Le(sp.Symbol("x"), 1))
    'x \\\\leq 1'
    """
    if isinstance(fact, Pred):
        args = ", ".join(sp.latex(a) if isinstance(a, sp.Basic) else str(a) for a in fact.args)
        return rf"\mathrm{{{fact.name}}}({args})"
    try:
        return str(sp.latex(fact))
    except Exception:  # something sympy cannot typeset
        return str(fact)


_SAME = "refused: both sides are the same expression"


def _zero(expr: Any) -> bool:
    """``expr`` simplifies to zero (matrices entrywise)."""
    e = sp.sympify(expr)
    if isinstance(e, sp.MatrixBase):
        return all(_zero(v) for v in e)
    if e == 0 or isinstance(e, sp.ZeroMatrix):
        return True
    try:
        return _zero_cached(e)
    except TypeError:  # unhashable: no cache
        return _zero_uncached(e)


def _zero_uncached(e: Any) -> bool:
    # expand first (cheap, and enough for polynomial identities), simplify only if needed; where
    # sympy itself fails (deep nesting, its Sum simplifier's StopIteration) nothing is shown zero
    try:
        x = sp.expand(e)
        if x == 0 or isinstance(x, sp.ZeroMatrix):
            return True
        s = sp.simplify(e)  # the original: simplify may not undo what expand did
    except (RecursionError, RuntimeError, StopIteration):
        return False
    return bool(s == 0 or isinstance(s, sp.ZeroMatrix) or s.is_zero is True)


@lru_cache(maxsize=4096)
def _zero_cached(e: Any) -> bool:
    return _zero_uncached(e)


def _sides(fact: Any) -> tuple[str, Any, Any] | None:
    """``(rel, small, big)`` with rel in {"=", "<=", "<"} for a relational, None otherwise."""
    if isinstance(fact, sp.Equality):
        return "=", fact.lhs, fact.rhs
    if isinstance(fact, sp.LessThan):
        return "<=", fact.lhs, fact.rhs
    if isinstance(fact, sp.StrictLessThan):
        return "<", fact.lhs, fact.rhs
    if isinstance(fact, sp.GreaterThan):
        return "<=", fact.rhs, fact.lhs
    if isinstance(fact, sp.StrictGreaterThan):
        return "<", fact.rhs, fact.lhs
    return None


def same_fact(a: Fact, b: Fact) -> bool:
    """``a`` and ``b`` say the same thing: the same relation between sides that simplify to
    each other (an equation read either way), or equal propositions.

    Examples
    --------
    >>> import sympy as sp
    >>> from theory import same_fact
    >>> x = sp.Symbol("x", positive=True)
    >>> same_fact(sp.Le(x + x, 3), sp.Ge(3, 2 * x)), same_fact(sp.Le(x, 3), sp.Lt(x, 3))
    (True, False)
    """
    if isinstance(a, Pred) or isinstance(b, Pred):
        if not (isinstance(a, Pred) and isinstance(b, Pred)):
            return False
        if a.name != b.name or len(a.args) != len(b.args):
            return False
        return all(_same_arg(x, y) for x, y in zip(a.args, b.args, strict=True))
    if a == b:
        return True
    sa, sb = _sides(a), _sides(b)
    if sa is None or sb is None:
        return False  # booleans other than relations: equal only structurally (above)
    if sa[0] != sb[0]:
        return False
    if _same_expr(sa[1], sb[1]) and _same_expr(sa[2], sb[2]):
        return True
    return sa[0] == "=" and _same_expr(sa[1], sb[2]) and _same_expr(sa[2], sb[1])


def _same_expr(x: Any, y: Any) -> bool:
    """``x − y`` simplifies to zero (structurally equal first; False where it cannot be formed)."""
    if x == y:
        return True
    try:
        return _zero(x - y)
    except (TypeError, ValueError, AttributeError, sp.matrices.exceptions.ShapeError):
        return False


def _same_arg(x: Any, y: Any) -> bool:
    if isinstance(x, (Pred, sp.Rel)) or isinstance(y, (Pred, sp.Rel)):
        return same_fact(x, y)
    if isinstance(x, sp.Basic) and isinstance(y, sp.Basic):
        return x == y or _same_expr(x, y) if not isinstance(x, sp.Set) else x == y
    return bool(x == y)


def _implies(known: Fact, wanted: Fact) -> bool:
    """``known`` gives ``wanted`` directly: the same fact, or ``a < b`` for a wanted ``a ≤ b``."""
    if same_fact(known, wanted):
        return True
    sk, sw = _sides(known), _sides(wanted)
    if sk is None or sw is None or sw[0] != "<=" or sk[0] != "<":
        return False
    return _same_expr(sk[1], sw[1]) and _same_expr(sk[2], sw[2])


@dataclass(frozen=True)
class Lemma:
    """A named, cited theorem: for every value of ``variables`` satisfying ``hypotheses``, the
    ``conclusions`` hold. Its statement is the cited one (not proved here: it is what a proof
    may cite); :meth:`Derivation.lemma` checks that every hypothesis holds where it is applied.

    Examples
    --------
    >>> from theory import LEMMAS
    >>> lem = LEMMAS["lipschitz composition"]
    >>> [str(h) for h in lem.hypotheses]
    ['Lip(f) <= L_f', 'Lip(g) <= L_g']
    """

    name: str
    statement: str
    references: tuple[str, ...]
    variables: tuple[Any, ...]
    hypotheses: tuple[Fact, ...]
    conclusions: tuple[Fact, ...]

    def implicit_hypotheses(self, mapping: Mapping[str, Any]) -> list[Fact]:
        """The sign and integrality a variable was declared with, as hypotheses on the value
        given for it (a lemma about ``q ≥ 0`` applied to ``q = −2`` must fail, although sympy
        evaluated the written hypothesis ``q ≥ 0`` to True when the lemma was registered)."""
        out: list[Fact] = []
        for var in self.variables:
            if not isinstance(var, sp.Symbol) or str(var) not in mapping:
                continue
            value = mapping[str(var)]
            if isinstance(value, Pred):
                continue
            value = sp.sympify(value)
            if var.is_positive:
                out.append(_Property("positive", value))
            elif var.is_nonnegative:
                out.append(_Property("nonnegative", value))
            elif var.is_negative:
                out.append(_Property("negative", value))
            if var.is_integer:
                out.append(_Property("integer", value))
        return out

    def instantiate(self, mapping: Mapping[str, Any]) -> tuple[list[Fact], list[Fact]]:
        """Hypotheses and conclusions with the variables (by name) replaced."""
        names = {str(v): v for v in self.variables}
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise KeyError(
                f"lemma {self.name!r} has no variable(s) {unknown}; it has {list(names)}"
            )
        missing = sorted(set(names) - set(mapping))
        if missing:
            raise KeyError(f"lemma {self.name!r}: give a value for {missing}")
        sub = {
            names[k]: sp.sympify(v) if not isinstance(v, Pred) else v for k, v in mapping.items()
        }
        return (
            [_replace(h, sub) for h in self.hypotheses],
            [_replace(c, sub) for c in self.conclusions],
        )


@dataclass(frozen=True)
class _Property:
    """A declared property of a lemma variable's value: ``positive``, ``nonnegative``,
    ``negative`` or ``integer``; it holds where sympy's assumptions say so or a known fact does
    (``0 < v``, ``0 <= v``, ``v < 0``)."""

    name: str
    value: Any

    def __str__(self) -> str:
        return f"{self.value} is {self.name}"


#: every lemma a proof may cite, by name (:func:`lemma` adds to it)
LEMMAS: dict[str, Lemma] = {}


def lemma(
    name: str,
    statement: str,
    references: Sequence[str],
    variables: Sequence[Any],
    hypotheses: Sequence[Fact],
    conclusions: Sequence[Fact],
) -> Lemma:
    """Register a cited lemma (its statement must be the cited theorem's, hypotheses included).

    Examples
    --------
    >>> import sympy as sp
    >>> from theory import LEMMAS
    >>> LEMMAS["triangle inequality"].references
    ('Minkowski; any text on normed spaces',)
    """
    if name in LEMMAS:
        raise ValueError(f"lemma {name!r} registered twice")
    lem = Lemma(
        name, statement, tuple(references), tuple(variables), tuple(hypotheses), tuple(conclusions)
    )
    LEMMAS[name] = lem
    return lem


@dataclass(frozen=True)
class Step:
    """One checked step: what it says, what was checked, sympy's answer, and its kind.

    ``kind`` is one of "identity", "inequality", "lemma", "chain", "cases", "instance",
    "numeric"; ``proof_kind`` is GENERAL for all but the last two.

    Examples
    --------
    >>> import sympy as sp
    >>> from theory import Derivation
    >>> x = sp.Symbol("x", real=True)
    >>> d = Derivation("demo")
    >>> _ = d.identity(x * (x + 1), x**2 + x, "expand")
    >>> step = d.steps[0]
    >>> step.kind, step.ok, step.proof_kind.label
    ('identity', True, 'proved in general')
    """

    description: str
    expression: str
    latex: str
    result: str
    ok: bool
    kind: str
    proof_kind: ProofKind = ProofKind.GENERAL
    lemma: str | None = None
    instance: str | None = None  # the instance an instance check is about, e.g. "d = 3"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import theory
        >>> sorted(theory.get("R8").prove().steps[0].to_dict())
        ['description', 'expression', 'instance', 'kind', 'lemma', 'ok', 'proof_kind', 'result']
        """
        return {
            "description": self.description,
            "expression": self.expression,
            "result": self.result,
            "ok": self.ok,
            "kind": self.kind,
            "proof_kind": self.proof_kind.value,
            "lemma": self.lemma,
            "instance": self.instance,
        }


@dataclass
class Derivation:
    """Facts derived one checked step at a time from ``hypotheses`` (taken as given).

    Every method records a :class:`Step` and returns the fact it establishes (also when the
    step fails, so that a proof runs to its end and reports every failed step; a failed step's
    fact is not added to :attr:`known`).

    Examples
    --------
    >>> import sympy as sp
    >>> from theory import LEMMAS, Derivation, Lip
    >>> Lf, Lg = sp.symbols("L_f L_g", positive=True)
    >>> f, g = sp.symbols("f g")
    >>> d = Derivation("demo", [sp.Le(Lip(f), Lf), sp.Le(Lip(g), Lg)])
    >>> fact = d.lemma(LEMMAS["lipschitz composition"], f=f, g=g, L_f=Lf, L_g=Lg)
    >>> fact, d.steps[-1].ok
    (Lip(compose(g, f)) <= L_f*L_g, True)
    """

    claim: str
    hypotheses: Sequence[Fact] = ()
    steps: list[Step] = field(default_factory=list)
    known: list[Fact] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.known = list(self.hypotheses) + list(self.known)

    # ---------------------------------------------------------------- bookkeeping
    def _add(
        self,
        description: str,
        expr: Any,
        result: Any,
        ok: bool,
        kind: str,
        fact: Fact | None,
        proof_kind: ProofKind = ProofKind.GENERAL,
        lemma_name: str | None = None,
        instance: str | None = None,
    ) -> Fact | None:
        try:
            latex = fact_latex(expr) if isinstance(expr, (Pred, sp.Basic)) else str(expr)
        except Exception:  # pragma: no cover - typesetting is best effort
            latex = str(expr)
        self.steps.append(
            Step(
                description,
                str(expr),
                latex,
                str(result),
                bool(ok),
                kind,
                proof_kind,
                lemma_name,
                instance,
            )
        )
        if ok and fact is not None:
            self.known.append(fact)
        return fact

    def holds(self, fact: Fact) -> bool:
        """``fact`` is known (or follows from a known one directly: ``a < b`` gives ``a ≤ b``),
        or sympy decides it true from the symbols' assumptions alone.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> x = sp.Symbol("x", positive=True)
        >>> d = Derivation("demo", [sp.Lt(x, 1)])
        >>> d.holds(sp.Le(x, 1)), d.holds(sp.Ge(x**2, 0)), d.holds(sp.Le(x, 2))
        (True, True, False)
        """
        if isinstance(fact, _Property):
            return self._property(fact)
        if any(k == fact for k in self.known):  # the common case, without simplify
            return True
        if any(_implies(k, fact) for k in self.known):
            return True
        if isinstance(fact, Pred):
            return False
        if fact is sp.true or fact is True:
            return True
        # an equation is established by a step, never by simplify(Eq(...)): sympy 1.14 says True
        # for false equations between Sums (a softmax Jacobian without its diagonal term)
        sides = _sides(fact)
        if sides is None or sides[0] == "=":
            return False
        if any(not s.is_commutative for s in fact.free_symbols):
            return False
        # an inequality: the sign of the gap from the symbols' assumptions alone
        gap = sides[2] - sides[1]
        for g in (gap, sp.expand(gap)):
            sign = g.is_positive if sides[0] == "<" else g.is_nonnegative
            if sign is True:
                return True
        return False

    def _property(self, prop: _Property) -> bool:
        v = prop.value
        if prop.name == "integer":
            return v.is_integer is True
        if not v.is_commutative:
            return False
        direct = {
            "positive": v.is_positive,
            "nonnegative": v.is_nonnegative,
            "negative": v.is_negative,
        }[prop.name]
        if direct is True:
            return True
        as_fact = {
            "positive": sp.Lt(0, v, evaluate=False),
            "nonnegative": sp.Le(0, v, evaluate=False),
            "negative": sp.Lt(v, 0, evaluate=False),
        }[prop.name]
        return any(_implies(k, as_fact) for k in self.known)

    def generalize(self, fact: Fact, var: Any, description: str) -> Pred:
        """``∀ var: fact`` from ``fact`` shown for ``var``: sound when ``var`` is generic, i.e. no
        hypothesis of the claim mentions it (the claim's assumptions constrain nothing about
        it), so what was shown for it holds for every value. Returns ``Pred("forall", (var,
        fact))``; lemmas that need a statement for every point ask for that form.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> t = sp.Symbol("t", real=True)
        >>> d = Derivation("demo")
        >>> fact = d.inequality(0, t**2, "a square")
        >>> str(d.generalize(fact, t, "for every t"))
        'forall(t, 0 <= t**2)'
        >>> d2 = Derivation("demo", [sp.Le(t, 1)])
        >>> _ = d2.inequality(0, t**2, "a square")
        >>> _ = d2.generalize(d2.known[-1], t, "for every t")
        >>> d2.steps[-1].ok, d2.steps[-1].result
        (False, 'not generic: the assumptions mention t (t <= 1)')
        """
        out = Pred("forall", (var, fact))
        problems = []
        if not isinstance(var, sp.Symbol):
            problems.append(f"{var} is not a variable: 'for all' binds a symbol")
        if not self.holds(fact):
            problems.append(f"not established: {fact_str(fact)}")
        bound = [h for h in self.hypotheses if var in _free(h)]
        if bound:
            problems.append(
                f"not generic: the assumptions mention {var} ("
                + "; ".join(fact_str(h) for h in bound)
                + ")"
            )
        self._add(
            description,
            out,
            "; ".join(problems) if problems else f"{var} is free in no assumption",
            not problems,
            "generalize",
            out,
        )
        return out

    @staticmethod
    def _refuse_same(lhs: Any, rhs: Any) -> bool:
        """Both sides are one expression once sympy has evaluated them: the step checks nothing."""
        a, b = sp.sympify(lhs), sp.sympify(rhs)
        return bool(a == b)

    # ---------------------------------------------------------------- arithmetic steps
    def identity(
        self, lhs: Any, rhs: Any, description: str, *, instance: str | None = None
    ) -> Fact:
        """``lhs = rhs``: ``simplify(lhs − rhs) = 0`` (matrices entrywise). With ``instance``
        (e.g. ``"d = 3"``) the step is an instance check.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> x = sp.Symbol("x", real=True)
        >>> d = Derivation("demo")
        >>> _ = d.identity((x + 1) ** 2, x**2 + 2 * x + 1, "a square")
        >>> _ = d.identity(x + 1, x + 1, "the same expression twice")
        >>> [s.ok for s in d.steps], d.steps[1].result
        ([True, False], 'refused: both sides are the same expression')
        """
        lhs_s, rhs_s = sp.sympify(lhs), sp.sympify(rhs)
        matrix = isinstance(lhs_s, sp.MatrixBase) or isinstance(rhs_s, sp.MatrixBase)
        fact = (
            sp.Eq(lhs_s, rhs_s, evaluate=False)
            if not matrix
            else sp.Eq(sp.ImmutableMatrix(lhs_s), sp.ImmutableMatrix(rhs_s), evaluate=False)
        )
        kind = ProofKind.INSTANCE if instance else ProofKind.GENERAL
        desc = description + (f" [instance: {instance}]" if instance else "")
        if self._refuse_same(lhs_s, rhs_s):
            return self._add(desc, fact, _SAME, False, "identity", fact, kind, instance=instance)
        diff = lhs_s - rhs_s
        ok = _zero(diff)
        shown = "0" if ok else str(sp.simplify(diff))
        return self._add(
            desc,
            fact,
            f"simplify(lhs - rhs) = {shown}",
            ok,
            "identity",
            fact,
            kind,
            instance=instance,
        )

    def inequality(
        self,
        lhs: Any,
        rhs: Any,
        description: str,
        *,
        strict: bool = False,
        by: Any = None,
        instance: str | None = None,
    ) -> Fact:
        """``lhs ≤ rhs`` (``<`` with ``strict``): sympy shows ``rhs − lhs`` nonnegative (positive)
        from the symbols' assumptions, directly or through the certificate ``by`` (an expression
        equal to ``rhs − lhs`` whose sign sympy can see, e.g. a sum of squares).

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> a, b = sp.symbols("a b", real=True)
        >>> d = Derivation("demo")
        >>> fact = d.inequality(2 * a * b, a**2 + b**2, "AM-GM", by=(a - b) ** 2)
        >>> fact, d.steps[0].ok
        (2*a*b <= a**2 + b**2, True)
        """
        lhs_s, rhs_s = sp.sympify(lhs), sp.sympify(rhs)
        fact = (
            sp.Lt(lhs_s, rhs_s, evaluate=False) if strict else sp.Le(lhs_s, rhs_s, evaluate=False)
        )
        kind = ProofKind.INSTANCE if instance else ProofKind.GENERAL
        desc = description + (f" [instance: {instance}]" if instance else "")
        if self._refuse_same(lhs_s, rhs_s):
            return self._add(desc, fact, _SAME, False, "inequality", fact, kind, instance=instance)
        gap = rhs_s - lhs_s
        if by is not None:
            cert = sp.sympify(by)
            if not _zero(gap - cert):
                return self._add(
                    desc,
                    fact,
                    f"the certificate {cert} is not rhs - lhs (difference "
                    f"{sp.simplify(gap - cert)})",
                    False,
                    "inequality",
                    fact,
                    kind,
                    instance=instance,
                )
            gap = cert
        else:
            gap = sp.simplify(gap)
        sign = gap.is_positive if strict else gap.is_nonnegative
        if sign is not True:  # one more try on the expanded form
            expanded = sp.expand(gap)
            sign = expanded.is_positive if strict else expanded.is_nonnegative
        word = "positive" if strict else "nonnegative"
        return self._add(
            desc,
            fact,
            f"rhs - lhs = {gap}: is_{word} = {sign}",
            sign is True,
            "inequality",
            fact,
            kind,
            instance=instance,
        )

    # ---------------------------------------------------------------- logical steps
    def lemma(self, lem: Lemma, description: str | None = None, **mapping: Any) -> Fact:
        """Apply ``lem`` with its variables set by ``mapping``: every instantiated hypothesis
        must hold (:meth:`holds`); every conclusion becomes a fact. Returns the first conclusion
        (all are in :attr:`known`).

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import LEMMAS, Derivation, Lip, Pred
        >>> L = sp.Symbol("L", positive=True)
        >>> f, S = sp.symbols("f S")
        >>> given = [Pred("nonempty_closed", (S,)), Pred("maps_into", (f, S)), sp.Le(Lip(f, S), L)]
        >>> d = Derivation("demo", given)
        >>> _ = d.lemma(LEMMAS["Banach fixed-point theorem"], f=f, S=S, L=L)
        >>> d.steps[-1].ok, d.steps[-1].result.split(";")[0]
        (False, 'hypothesis not established: L < 1')
        """
        hyps, concls = lem.instantiate(mapping)
        hyps = lem.implicit_hypotheses(mapping) + hyps
        missing = [h for h in hyps if not self.holds(h)]
        ok = not missing
        result = (
            "; ".join(f"hypothesis not established: {fact_str(h)}" for h in missing)
            if missing
            else "hypotheses hold: " + ("; ".join(fact_str(h) for h in hyps) or "none")
        )
        desc = description or f"{lem.name}"
        expr = " and ".join(fact_str(c) for c in concls)
        self.steps.append(
            Step(
                f"{desc} ({lem.name}; {', '.join(lem.references)})",
                expr,
                " \\wedge ".join(fact_latex(c) for c in concls),
                result,
                ok,
                "lemma",
                ProofKind.GENERAL,
                lem.name,
            )
        )
        if ok:
            self.known.extend(concls)
        return concls[0]

    def chain(self, facts: Sequence[Fact], description: str) -> Fact:
        """``a R₁ b R₂ c … ⇒ a R z``: every link a known fact, each link's larger side the next
        one's smaller side; the result is ``<`` if any link is, ``=`` if all are, else ``≤``.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> a, b, c = sp.symbols("a b c", real=True)
        >>> d = Derivation("demo", [sp.Le(a, b), sp.Eq(b, c)])
        >>> d.chain([sp.Le(a, b), sp.Eq(b, c)], "transitivity")
        a <= c
        """
        sides = [_sides(f) for f in facts]
        problems = []
        for f, s in zip(facts, sides, strict=True):
            if s is None:
                problems.append(f"not a relation: {fact_str(f)}")
            elif not self.holds(f):
                problems.append(f"not established: {fact_str(f)}")
        links = [s for s in sides if s is not None]
        if not problems and len(links) >= 2:
            for (_, _, big), (_, small, _) in pairwise(links):
                if not _zero(big - small):
                    problems.append(f"the links do not meet: {big} vs {small}")
        if not links:
            problems.append("nothing to chain")
        rels = {s[0] for s in links}
        rel = "<" if "<" in rels else ("=" if rels == {"="} else "<=")
        first = links[0][1] if links else sp.Integer(0)
        last = links[-1][2] if links else sp.Integer(0)
        fact = {"<": sp.Lt, "<=": sp.Le, "=": sp.Eq}[rel](first, last, evaluate=False)
        ok = not problems
        return self._add(
            description,
            fact,
            "; ".join(problems) if problems else f"{len(links)} known links meet",
            ok,
            "chain",
            fact,
        )

    def weaken(self, fact: Fact, bound: Any, description: str) -> Fact:
        """From a known ``x ≤ b`` (or ``x < b``, ``x = b``), ``x ≤ bound``: nothing to check when
        ``bound`` is ``b`` itself; otherwise sympy shows ``b ≤ bound`` and the two are chained.
        Used where a statement's bound is what dynamo's code evaluates (which may round up).

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> x, b = sp.Symbol("x"), sp.Symbol("b", positive=True)
        >>> d = Derivation("demo", [sp.Le(x, b)])
        >>> d.weaken(sp.Le(x, b), 2 * b, "round up")
        x <= 2*b
        >>> d.weaken(sp.Le(x, b), b, "the same bound"), len(d.steps)
        (x <= b, 2)
        """
        s = _sides(fact)
        if s is None or s[0] not in ("<=", "<", "="):
            raise ValueError(f"weaken: {fact_str(fact)} is not an upper bound")
        target = sp.Le(s[1], bound, evaluate=False)
        if sp.sympify(bound) == sp.sympify(s[2]):  # nothing to add: the bound is the one known
            return target
        step = self.inequality(s[2], bound, description)
        return self.chain([fact, step], f"{description}: chained")

    def case(self, condition: Fact) -> Derivation:
        """A sub-derivation under ``condition`` (and everything known here); see :meth:`cases`."""
        sub = Derivation(f"{self.claim} [case {fact_str(condition)}]", [*self.known, condition])
        sub._condition = condition  # type: ignore[attr-defined]
        return sub

    def cases(self, fact: Fact, branches: Sequence[Derivation], description: str) -> Fact:
        """``fact`` by cases: each branch (from :meth:`case`) derived it with every step
        checked, and sympy shows the branches' conditions exhaustive (their disjunction true).

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> q = sp.Symbol("q", positive=True)
        >>> d = Derivation("demo")
        >>> small, big = d.case(sp.Le(q, 1)), d.case(sp.Gt(q, 1))
        >>> _ = small.inequality(1 - q, 1 + q, "1 − q <= 1 + q", by=2 * q)
        >>> _ = big.inequality(q - 1, 1 + q, "q − 1 <= 1 + q", by=sp.Integer(2))
        >>> d.cases(sp.Le(sp.Abs(1 - q), 1 + q), [small, big], "|1 − q| <= 1 + q")
        Abs(q - 1) <= q + 1
        >>> d.steps[-1].ok
        False
        """
        conds = [getattr(b, "_condition", None) for b in branches]
        problems = []
        if any(c is None for c in conds) or not conds:
            problems.append("every branch must come from case()")
        else:
            cover = sp.simplify(sp.Or(*conds))
            if cover is not sp.true:
                problems.append(f"the cases are not exhaustive: {cover}")
        for b in branches:
            bad = [s for s in b.steps if not s.ok]
            if bad:
                problems.append(f"{b.claim}: step failed: {bad[0].description}")
            if not (any(k == fact for k in b.known) or any(_implies(k, fact) for k in b.known)):
                problems.append(f"{b.claim}: does not derive {fact_str(fact)}")
        kinds = [s.proof_kind for b in branches for s in b.steps]
        for b in branches:
            for s in b.steps:
                self.steps.append(
                    Step(
                        f"[{b.claim.split('[', 1)[-1][:-1]}] {s.description}",
                        s.expression,
                        s.latex,
                        s.result,
                        s.ok,
                        s.kind,
                        s.proof_kind,
                        s.lemma,
                        s.instance,
                    )
                )
        return self._add(
            description,
            fact,
            "; ".join(problems) if problems else f"{len(branches)} exhaustive cases",
            not problems,
            "cases",
            fact,
            ProofKind.weakest(kinds),
        )

    # ---------------------------------------------------------------- non-general steps
    def instance(
        self, description: str, expr: Any, result: Any, ok: bool, *, instance: str
    ) -> None:
        """A computation on one concrete instance (``instance`` says which, e.g. ``"d = 3"``):
        recorded and checked, and the proof is then an instance check. It adds no fact.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> d = Derivation("demo")
        >>> d.instance("two roots", "solve(x² − 1)", [-1, 1], True, instance="x real")
        >>> d.steps[0].proof_kind.label
        'instance check'
        """
        self._add(
            f"{description} [instance: {instance}]",
            expr,
            result,
            ok,
            "instance",
            None,
            ProofKind.INSTANCE,
            instance=instance,
        )

    def numeric(self, description: str, value: Any, target: float, *, rel: float = 1e-9) -> None:
        """A closed-form number evaluated by sympy equals ``target`` to ``rel`` (numeric only).

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Derivation
        >>> d = Derivation("demo")
        >>> d.numeric("√2", sp.sqrt(2), 1.41421356237)
        >>> d.steps[0].ok, d.steps[0].proof_kind.label
        (True, 'numeric only')
        """
        v = float(sp.N(value, 30))
        ok = abs(v - target) <= rel * max(1.0, abs(target))
        self._add(
            description, value, f"{v!r} (target {target!r})", ok, "numeric", None, ProofKind.NUMERIC
        )
