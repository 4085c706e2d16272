"""Claims, proofs whose every step sympy checks, and numeric checks through dynamo."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

__all__ = ["CheckResult", "Claim", "Proof", "Prover", "Step", "claim", "get", "registry"]


@dataclass(frozen=True)
class Step:
    """One checked step: what it says, the sympy expression examined, and sympy's answer.

    Examples
    --------
    Every :class:`Prover` method records one:

    >>> import sympy as sp
    >>> from theory import Prover
    >>> x = sp.Symbol("x", real=True)
    >>> pf = Prover("demo")
    >>> pf.equal(x * (x + 1), x**2 + x, "expand")
    True
    >>> step = pf.steps[0]
    >>> step.description, step.result, step.ok
    ('expand', 'simplify(lhs - rhs) = 0', True)
    """

    description: str
    expression: str
    latex: str
    result: str
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import theory
        >>> step = theory.get("R4").prove().steps[0]
        >>> sorted(step.to_dict())
        ['description', 'expression', 'ok', 'result']
        """
        return {
            "description": self.description,
            "expression": self.expression,
            "result": self.result,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Proof:
    """The steps of a claim's proof; it holds when every step does.

    Examples
    --------
    :meth:`Claim.prove` returns one:

    >>> import theory
    >>> proof = theory.get("R4").prove()
    >>> proof.claim, proof.ok, len(proof.steps)
    ('R4', True, 1)
    """

    claim: str
    steps: tuple[Step, ...]

    @property
    def ok(self) -> bool:
        """True when every step checked."""
        return bool(self.steps) and all(s.ok for s in self.steps)

    def failed(self) -> tuple[Step, ...]:
        """The steps that did not check.

        Examples
        --------
        >>> import theory
        >>> theory.get("C12").prove().failed()
        ()
        >>> bad = theory.get("C12").prove(value=2.5)  # a wrong constant
        >>> [s.result for s in bad.failed()]
        ['1.985 (target 2.5)']
        """
        return tuple(s for s in self.steps if not s.ok)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe.

        Examples
        --------
        >>> import theory
        >>> d = theory.get("R4").prove().to_dict()
        >>> d["claim"], d["ok"], len(d["steps"])
        ('R4', True, 1)
        """
        return {"claim": self.claim, "ok": self.ok, "steps": [s.to_dict() for s in self.steps]}

    def __str__(self) -> str:
        lines = [f"{self.claim}: {'PROVED' if self.ok else 'FAILED'} ({len(self.steps)} steps)"]
        for i, s in enumerate(self.steps, 1):
            mark = "ok  " if s.ok else "FAIL"
            lines.append(f"  [{mark}] {i}. {s.description}")
            lines.append(f"         checked: {s.expression}")
            lines.append(f"         sympy:   {s.result}")
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


class Prover:
    """Accumulates proof steps. Each method asks sympy a question and records its answer.

    >>> import sympy as sp
    >>> from theory import Prover
    >>> x = sp.Symbol("x", real=True)
    >>> pf = Prover("demo")
    >>> pf.equal((x + 1) ** 2, x**2 + 2 * x + 1, "expand a square")
    True
    >>> pf.proof().ok
    True
    """

    def __init__(self, claim: str) -> None:
        self.claim = claim
        self.steps: list[Step] = []

    def _add(self, description: str, expr: Any, result: Any, ok: bool) -> bool:
        try:
            latex = sp.latex(expr)
        except Exception:  # a plain string or a structure sympy cannot typeset
            latex = str(expr)
        self.steps.append(Step(description, str(expr), latex, str(result), bool(ok)))
        return bool(ok)

    def equal(self, lhs: Any, rhs: Any, description: str) -> bool:
        """``simplify(lhs − rhs) == 0`` (matrices entrywise).

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Prover
        >>> x = sp.Symbol("x", real=True)
        >>> pf = Prover("demo")
        >>> pf.equal(x * (x + 1), x**2 + x, "expand"), pf.equal(x + 1, x, "off by one")
        (True, False)
        """
        diff = sp.simplify(sp.sympify(lhs) - sp.sympify(rhs))
        if isinstance(diff, sp.MatrixBase):
            diff = diff.applyfunc(sp.simplify)
            ok = diff.is_zero_matrix is True
        else:
            ok = diff == 0 or diff.is_zero is True
        return self._add(
            description,
            sp.Eq(sp.sympify(lhs), sp.sympify(rhs), evaluate=False)
            if not isinstance(diff, sp.MatrixBase)
            else f"{lhs} == {rhs}",
            f"simplify(lhs - rhs) = {diff}",
            ok,
        )

    def true(self, expr: Any, description: str) -> bool:
        """A boolean sympy expression that must simplify to ``True``.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Prover
        >>> x = sp.Symbol("x", real=True)
        >>> pf = Prover("demo")
        >>> pf.true(sp.Eq(sp.sin(x) ** 2 + sp.cos(x) ** 2, 1), "Pythagoras")
        True
        """
        res = sp.simplify(expr)
        return self._add(description, expr, res, res is sp.true or res is True)

    def nonnegative(self, expr: Any, description: str, assumptions: Any = None) -> bool:
        """``expr >= 0`` under the symbols' assumptions (sympy's ``is_nonnegative``).

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Prover
        >>> x = sp.Symbol("x", real=True)
        >>> pf = Prover("demo")
        >>> pf.nonnegative(x**2, "a real square"), pf.nonnegative(x, "a real number")
        (True, False)
        """
        e = sp.simplify(expr)
        return self._add(
            description,
            sp.Ge(expr, 0, evaluate=False),
            f"{e}: is_nonnegative = {e.is_nonnegative}",
            e.is_nonnegative is True,
        )

    def fact(self, description: str, expr: Any, result: Any, ok: bool) -> bool:
        """Record a computed fact (e.g. a Gröbner basis, a solution set) and its verdict.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Prover
        >>> x = sp.Symbol("x", real=True)
        >>> pf = Prover("demo")
        >>> roots = sp.solve(x**2 - 1, x)
        >>> pf.fact("x² = 1 has two real roots", x**2 - 1, roots, len(roots) == 2)
        True
        >>> pf.steps[0].result
        '[-1, 1]'
        """
        return self._add(description, expr, result, ok)

    def numeric(self, description: str, value: Any, target: float, *, rel: float = 1e-9) -> bool:
        """A closed-form number evaluated by sympy equals ``target`` to ``rel``.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Prover
        >>> pf = Prover("demo")
        >>> pf.numeric("√2", sp.sqrt(2), 1.41421356237), pf.numeric("√2", sp.sqrt(2), 1.5)
        (True, False)
        """
        v = float(sp.N(value, 30))
        ok = abs(v - target) <= rel * max(1.0, abs(target))
        return self._add(description, value, f"{v!r} (target {target!r})", ok)

    def proof(self) -> Proof:
        """The steps so far.

        Examples
        --------
        >>> import sympy as sp
        >>> from theory import Prover
        >>> x = sp.Symbol("x", real=True)
        >>> pf = Prover("demo")
        >>> pf.nonnegative(x**2, "a real square")
        True
        >>> proof = pf.proof()
        >>> proof.claim, proof.ok, len(proof.steps)
        ('demo', True, 1)
        """
        return Proof(self.claim, tuple(self.steps))


@dataclass
class Claim:
    """A claim: statement, hypotheses, references, a sympy-checked proof, a numeric check.

    ``prove(**overrides)`` runs the derivation; overrides replace named quantities in it (a
    constant, a bound), so that tests can show that a wrong variant fails. ``check(**kw)`` runs
    the numeric counterpart through dynamo.

    Examples
    --------
    :func:`get` returns a registered claim:

    >>> import theory
    >>> c = theory.get("R4")
    >>> c.name, c.hypotheses
    ('R4', ('the input is held fixed',))
    >>> c.prove().ok, c.check().ok
    (True, True)
    """

    name: str
    title: str
    statement: str
    hypotheses: tuple[str, ...]
    references: tuple[str, ...]
    proof_fn: Callable[..., Proof]
    check_fn: Callable[..., CheckResult]
    uses: tuple[str, ...] = ()

    def prove(self, **overrides: Any) -> Proof:
        """Run the sympy derivation (every step recorded with sympy's answer).

        Examples
        --------
        >>> import theory
        >>> c = theory.get("C12")
        >>> c.prove().ok, c.prove(value=2.5).ok  # an override that breaks the derivation
        (True, False)
        """
        return self.proof_fn(**overrides)

    def check(self, *args: Any, **kwargs: Any) -> CheckResult:
        """Run the numeric counterpart through dynamo.

        Examples
        --------
        >>> import theory
        >>> print(theory.get("R4").check())
        R4 check: OK: adapter factor 0.643507 = σ_max(W_s) 0.643507
        """
        return self.check_fn(*args, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (no proof run).

        Examples
        --------
        >>> import theory
        >>> d = theory.get("R4").to_dict()
        >>> sorted(d)
        ['hypotheses', 'name', 'references', 'statement', 'title']
        >>> d["references"]
        ['linear algebra']
        """
        return {
            "name": self.name,
            "title": self.title,
            "statement": self.statement,
            "hypotheses": list(self.hypotheses),
            "references": list(self.references),
        }


_REGISTRY: dict[str, Claim] = {}


def claim(
    name: str,
    title: str,
    statement: str,
    hypotheses: tuple[str, ...],
    references: tuple[str, ...],
    check: Callable[..., CheckResult],
    uses: tuple[str, ...] = (),
) -> Callable[[Callable[..., Proof]], Claim]:
    """Register a claim whose proof is the decorated function."""

    def wrap(fn: Callable[..., Proof]) -> Claim:
        c = Claim(name, title, statement, hypotheses, references, fn, check, uses)
        if name in _REGISTRY:
            raise ValueError(f"claim {name!r} registered twice")
        _REGISTRY[name] = c
        return c

    return wrap


def registry() -> Iterator[Claim]:
    """Every registered claim, in registration order.

    Examples
    --------
    >>> import theory
    >>> names = [c.name for c in theory.registry()]
    >>> names[:2], names[-1], len(names)
    (['C1', 'C2'], 'R8', 22)
    """
    return iter(list(_REGISTRY.values()))


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
    known = ", ".join(_REGISTRY)
    raise KeyError(f"no claim named {name!r}; known claims: {known}")
