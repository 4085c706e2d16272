"""Claims: a formal statement (a goal of facts under hypotheses), a derivation that must reach
it, false variants that must fail, and a numeric check through dynamo."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

from ._logic import Derivation, Fact, Pred, ProofKind, Step, fact_latex, fact_str

__all__ = ["CheckResult", "Claim", "Proof", "Variant", "claim", "code_scaled", "get", "registry"]


@dataclass(frozen=True)
class Proof:
    """A claim's derivation: its steps, the goal it had to reach, and what kind of proof it is.

    It holds (``ok``) when every step checks and every goal fact was derived. ``kind`` is the
    weakest step's: GENERAL (every step on symbols or a cited lemma), INSTANCE (some step on one
    concrete instance) or NUMERIC.

    Examples
    --------
    :meth:`Claim.prove` returns one:

    >>> import theory
    >>> proof = theory.get("R8").prove()
    >>> proof.ok, proof.kind.label, proof.lemmas
    (True, 'proved in general', ('lipschitz composition',))
    """

    claim: str
    steps: tuple[Step, ...]
    goal: tuple[Fact, ...]
    reached: tuple[bool, ...]

    @property
    def ok(self) -> bool:
        """Every step checked and every goal fact was derived."""
        return bool(self.steps) and all(s.ok for s in self.steps) and all(self.reached)

    @property
    def kind(self) -> ProofKind:
        """The weakest step's kind."""
        return ProofKind.weakest(s.proof_kind for s in self.steps)

    @property
    def lemmas(self) -> tuple[str, ...]:
        """The cited lemmas applied, in order of first use."""
        return tuple(dict.fromkeys(s.lemma for s in self.steps if s.lemma))

    @property
    def instances(self) -> tuple[str, ...]:
        """What the instance checks are about (e.g. ``"d = 3"``)."""
        return tuple(dict.fromkeys(s.instance for s in self.steps if s.instance))

    def describe(self) -> str:
        """One line: the kind of proof, its size and what it cites.

        Examples
        --------
        >>> import theory
        >>> theory.get("R8").prove().describe()
        'proved in general (1 step; lemmas: lipschitz composition)'
        """
        if self.kind is ProofKind.INSTANCE:
            what = f"instance check ({'; '.join(self.instances)})"
        else:
            what = self.kind.label
        cites = f"; lemmas: {', '.join(self.lemmas)}" if self.lemmas else ""
        n = len(self.steps)
        return f"{what} ({n} step{'' if n == 1 else 's'}{cites})"

    def failed(self) -> tuple[str, ...]:
        """What did not hold: failed steps' descriptions, then goal facts not derived.

        Examples
        --------
        >>> import theory
        >>> theory.get("R8").prove().failed()
        ()
        """
        out = [s.description for s in self.steps if not s.ok]
        out += [
            f"goal not reached: {fact_str(g)}"
            for g, r in zip(self.goal, self.reached, strict=True)
            if not r
        ]
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import theory
        >>> d = theory.get("R8").prove().to_dict()
        >>> d["claim"], d["ok"], d["kind"], len(d["steps"])
        ('R8', True, 'general', 1)
        """
        return {
            "claim": self.claim,
            "ok": self.ok,
            "kind": self.kind.value,
            "lemmas": list(self.lemmas),
            "instances": list(self.instances),
            "goal": [fact_str(g) for g in self.goal],
            "reached": list(self.reached),
            "steps": [s.to_dict() for s in self.steps],
        }

    def __str__(self) -> str:
        verdict = "PROVED" if self.ok else "FAILED"
        lines = [f"{self.claim}: {verdict}, {self.describe()}"]
        for i, s in enumerate(self.steps, 1):
            mark = "ok  " if s.ok else "FAIL"
            lines.append(f"  [{mark}] {i}. {s.description}")
            lines.append(f"         {s.kind}: {s.expression}")
            lines.append(f"         sympy:   {s.result}")
        for g, r in zip(self.goal, self.reached, strict=True):
            lines.append(f"  [{'ok  ' if r else 'FAIL'}] goal: {fact_str(g)}")
        return "\n".join(lines)


@dataclass(frozen=True)
class CheckResult:
    """The numeric counterpart of a claim run through dynamo on a concrete system.

    ``violated`` names hypotheses the system does not satisfy: then the claim's conclusion is
    not asserted (and ``ok`` is False), rather than a number being reported as if it held.

    Examples
    --------
    :meth:`Claim.check` returns one:

    >>> import theory
    >>> result = theory.get("R4").check()
    >>> result.claim, result.ok, result.violated
    ('R4', True, ())
    >>> sorted(result.numbers)
    ['factor', 'sigma_max_Ws']
    """

    claim: str
    ok: bool
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)
    violated: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import theory
        >>> d = theory.get("R4").check().to_dict()
        >>> sorted(d)
        ['claim', 'message', 'numbers', 'ok', 'violated']
        >>> d["ok"], d["violated"]
        (True, [])
        """
        nums = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.numbers.items()
        }
        return {
            "claim": self.claim,
            "ok": self.ok,
            "message": self.message,
            "numbers": nums,
            "violated": list(self.violated),
        }

    def __str__(self) -> str:
        head = f"{self.claim} check: {'OK' if self.ok else 'FAILED'}: {self.message}"
        if self.violated:
            head += f" [violated hypotheses: {'; '.join(self.violated)}]"
        return head


@contextmanager
def code_scaled(name: str, factor: float) -> Iterator[None]:
    """Multiply what ``dynamo.kernel.lipschitz_formulas.<name>`` returns by ``factor`` while the
    block runs (the rules and the proofs both read it): a false variant "the code's constant
    changed".

    Examples
    --------
    >>> from dynamo.kernel import lipschitz_formulas as formulas
    >>> from theory._core import code_scaled
    >>> with code_scaled("compose", 0.01):
    ...     formulas.compose(2.0, 3.0)
    0.06
    >>> formulas.compose(2.0, 3.0)
    6.0
    """
    from dynamo.kernel import lipschitz_formulas as formulas

    original = getattr(formulas, name)

    def scaled(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs) * factor

    setattr(formulas, name, scaled)
    try:
        yield
    finally:
        setattr(formulas, name, original)


@dataclass(frozen=True)
class Variant:
    """A false variant of a claim that its proof must reject: a wrong constant or a dropped
    hypothesis (``overrides`` to the proof function), a stronger statement (``goal``), a
    hypothesis removed (``drop``, by index into the claim's hypotheses; a ``goal`` may be a
    function, built when the variant runs), or the code's rule
    changed (``patch``, a context manager that alters dynamo while the proof runs).

    Examples
    --------
    >>> import theory
    >>> v = theory.get("R8").variants[0]
    >>> v.description, theory.get("R8").prove_variant(v).ok
    ('the bound L_f + L_g of a sum instead of the product', False)
    """

    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    goal: tuple[Fact, ...] | Callable[[], tuple[Fact, ...]] | None = None
    drop: tuple[int, ...] = ()
    patch: Callable[[], AbstractContextManager[Any]] | None = None


@dataclass
class Claim:
    """A claim: a formal statement (``goal`` facts under ``assumptions``), its prose reading,
    references, a derivation, false variants, and a numeric check through dynamo.

    ``prove()`` starts a :class:`Derivation` from the assumptions, runs the proof function on it
    and checks that it reached every goal fact. ``check()`` runs the numeric counterpart.

    Examples
    --------
    >>> import theory
    >>> c = theory.get("R8")
    >>> c.prove().ok, c.check().ok
    (True, True)
    >>> [c.prove_variant(v).ok for v in c.variants]
    [False, False, False]
    """

    name: str
    title: str
    statement: str
    hypotheses: tuple[str, ...]
    references: tuple[str, ...]
    proof_fn: Callable[..., Any]
    check_fn: Callable[..., CheckResult]
    goal_src: Sequence[Fact] | Callable[[], Sequence[Fact]] = ()
    assumptions: tuple[Fact, ...] = ()
    variants: tuple[Variant, ...] = ()
    uses: tuple[str, ...] = ()

    @property
    def goal(self) -> tuple[Fact, ...]:
        """The formal statement the proof must reach (built now where it reads dynamo's code,
        so a changed constant changes the statement)."""
        src = self.goal_src
        return tuple(src() if callable(src) else src)

    def prove(
        self,
        *,
        goal: Sequence[Fact] | None = None,
        drop: Sequence[int] = (),
        **overrides: Any,
    ) -> Proof:
        """Run the derivation from the assumptions (less those in ``drop``) and check that it
        reaches ``goal`` (the claim's own by default).

        Examples
        --------
        >>> import sympy as sp
        >>> import theory
        >>> c = theory.get("R8")
        >>> c.prove().ok
        True
        >>> stronger = (sp.Le(c.goal[0].lhs, c.goal[0].rhs / 2),)
        >>> c.prove(goal=stronger).failed()[-1]
        'goal not reached: Lip(compose(g, f)) <= L_f*L_g/2'
        """
        target = tuple(self.goal if goal is None else goal)
        given = [a for i, a in enumerate(self.assumptions) if i not in set(drop)]
        d = Derivation(self.name, given)
        self.proof_fn(d, **overrides)
        reached = tuple(d.holds(g) for g in target)
        return Proof(self.name, tuple(d.steps), target, reached)

    def prove_variant(self, variant: Variant) -> Proof:
        """The proof run on a false variant (it must fail)."""
        ctx = variant.patch() if variant.patch is not None else nullcontext()
        with ctx:
            goal = variant.goal() if callable(variant.goal) else variant.goal
            return self.prove(goal=goal, drop=variant.drop, **variant.overrides)

    def check(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Run the numeric counterpart through dynamo.

        Examples
        --------
        >>> import theory
        >>> print(theory.get("R4").check())
        R4 check: OK: adapter factor 0.643507 = σ_max(W_s) 0.643507
        """
        return self.check_fn(*args, **kwargs)

    def formal(self, latex: bool = False) -> str:
        """The formal statement: the assumptions, the symbols' standing assumptions, then the
        goal, as the proof must reach it.

        Examples
        --------
        >>> import theory
        >>> print(theory.get("R8").formal().replace(", then", ",\\nthen"))
        For L_f >= 0, L_g >= 0: if Lip(f) <= L_f and Lip(g) <= L_g,
        then Lip(compose(g, f)) <= L_f*L_g.
        """
        show = fact_latex if latex else fact_str

        def words(w: str) -> str:
            return rf"\text{{{w}}}" if latex else w

        conj = words(" and ")
        symbols = _standing(self.goal, self.assumptions, latex)
        parts = []
        if symbols:
            parts.append(words("For ") + symbols + words(": "))
        if self.assumptions:
            parts.append(
                words("if ") + conj.join(show(a) for a in self.assumptions) + words(", then ")
            )
        parts.append(conj.join(show(g) for g in self.goal) + ".")
        text = "".join(parts)
        return text[0].upper() + text[1:] if text and not latex else text

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (no proof run).

        Examples
        --------
        >>> import theory
        >>> d = theory.get("R4").to_dict()
        >>> sorted(d)
        ['formal', 'hypotheses', 'name', 'references', 'statement', 'title', 'variants']
        >>> d["references"]
        ['linear algebra']
        """
        return {
            "name": self.name,
            "title": self.title,
            "statement": self.statement,
            "formal": self.formal(),
            "hypotheses": list(self.hypotheses),
            "references": list(self.references),
            "variants": [v.description for v in self.variants],
        }


def _standing(goal: Sequence[Fact], assumptions: Sequence[Fact], latex: bool) -> str:
    """The sign and integrality assumptions of the symbols a statement mentions."""
    syms: set[sp.Symbol] = set()
    for f in (*goal, *assumptions):
        items = f.args if isinstance(f, Pred) else (f,)
        for it in items:
            if isinstance(it, sp.Basic):
                syms |= {s for s in it.free_symbols if isinstance(s, sp.Symbol)}
    out = []
    for s in sorted(syms, key=str):
        name = sp.latex(s) if latex else str(s)
        if s.is_integer and s.is_positive:
            out.append(
                rf"{name} \in \mathbb{{N}}_{{\ge 1}}" if latex else f"{name} a positive integer"
            )
        elif s.is_integer and s.is_nonnegative:
            out.append(rf"{name} \in \mathbb{{N}}" if latex else f"{name} a nonnegative integer")
        elif s.is_positive:
            out.append(f"{name} > 0")
        elif s.is_nonnegative:
            out.append(rf"{name} \ge 0" if latex else f"{name} >= 0")
        elif s.is_negative:
            out.append(f"{name} < 0")
    return ", ".join(out)


_REGISTRY: dict[str, Claim] = {}


def claim(
    name: str,
    title: str,
    statement: str,
    hypotheses: tuple[str, ...],
    references: tuple[str, ...],
    check: Callable[..., CheckResult],
    *,
    goal: Sequence[Fact] | Callable[[], Sequence[Fact]],
    assumptions: Sequence[Fact] = (),
    variants: Sequence[Variant] = (),
    uses: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Claim]:
    """Register a claim whose derivation is the decorated function ``fn(d, **overrides)``,
    which adds steps to the :class:`Derivation` ``d``.

    Examples
    --------
    >>> import theory
    >>> theory.get("R8").goal
    (Lip(compose(g, f)) <= L_f*L_g,)
    """

    def wrap(fn: Callable[..., Any]) -> Claim:
        if not goal:
            raise ValueError(f"claim {name!r}: a claim needs a goal (its formal statement)")
        if not variants:
            raise ValueError(f"claim {name!r}: register at least one false variant")
        c = Claim(
            name,
            title,
            statement,
            hypotheses,
            references,
            fn,
            check,
            goal if callable(goal) else tuple(goal),
            tuple(assumptions),
            tuple(variants),
            uses,
        )
        if name in _REGISTRY:
            raise ValueError(f"claim {name!r} registered twice")
        _REGISTRY[name] = c
        return c

    return wrap


def registry() -> Iterator[Claim]:
    """Every registered claim: C1–C14, then the rules R1–R17.

    Examples
    --------
    >>> import theory
    >>> names = [c.name for c in theory.registry()]
    >>> names[:2], names[-1], len(names)
    (['C1', 'C2'], 'R17', 31)
    """
    order = {f"C{i}": i for i in range(1, 15)} | {f"R{i}": 100 + i for i in range(1, 18)}
    return iter(sorted(_REGISTRY.values(), key=lambda c: order.get(c.name, 1000)))


def get(name: str) -> Claim:
    """A claim by name (case-insensitive).

    Examples
    --------
    >>> import theory
    >>> theory.get("r4").name
    'R4'
    >>> theory.get("C99")
    Traceback (most recent call last):
        ...
    KeyError: "no claim named 'C99'; known claims: C1, C2, ...
    """
    for key, c in _REGISTRY.items():
        if key.lower() == name.lower():
            return c
    known = ", ".join(c.name for c in registry())
    raise KeyError(f"no claim named {name!r}; known claims: {known}")
