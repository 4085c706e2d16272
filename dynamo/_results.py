"""Result types shared by every solver and analysis: outcomes (values, not exceptions), the trust
every reported number carries, the solver's :class:`Solution`, and the JSON-safe conversion of a
value."""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Outcome", "Solution", "Trust"]


class Outcome(enum.Enum):
    """How one solve of one start ended. Each member carries its human message.

    Only :attr:`CONVERGED` means that the returned state is a fixed point to the stated tolerance;
    every other member means that no fixed point is reported for that start.

    Examples
    --------
    >>> from dynamo import Outcome
    >>> Outcome.MAX_STEPS_REACHED.message
    'the residual did not fall below the tolerance within max_steps'
    >>> Outcome.CONVERGED.ok, Outcome.DIVERGED.ok
    (True, False)
    """

    CONVERGED = ("converged", "the residual fell below the tolerance")
    MAX_STEPS_REACHED = (
        "max_steps_reached",
        "the residual did not fall below the tolerance within max_steps",
    )
    DIVERGED = ("diverged", "the state norm grew past the divergence threshold")
    NONFINITE = ("nonfinite", "the map returned NaN or inf at an iterate")
    DEGENERATE = (
        "degenerate",
        "the step could not make progress: singular or ill-conditioned linearisation, "
        "or a failed line search",
    )

    def __init__(self, label: str, message: str) -> None:
        self.label = label
        self.message = message

    @property
    def ok(self) -> bool:
        """True only for :attr:`CONVERGED`."""
        return self is Outcome.CONVERGED

    def __str__(self) -> str:
        return self.label

    @classmethod
    def from_label(cls, label: str) -> Outcome:
        """Look an outcome up by its label (the inverse of ``str(outcome)``).

        >>> Outcome.from_label("diverged")
        <Outcome.DIVERGED: ('diverged', 'the state norm grew past the divergence threshold')>
        """
        for member in cls:
            if member.label == label:
                return member
        known = ", ".join(m.label for m in cls)
        raise ValueError(f"Outcome.from_label({label!r}): unknown label; known labels: {known}")


class Trust(str, enum.Enum):
    """How far a reported number or verdict can be trusted: the one vocabulary of every result
    (SCIENCE.md §7), strongest first.

    * ``PROVEN``: rigorous for every point of the stated set, every rounding error accounted for,
      from rules proved in general. Only this may be called *certified*.
    * ``CHECKED``: an exact or floating-point test on a computed instance (an eigenvalue test at
      a fixed point found numerically, an identity on one instance): true of that instance, not
      of a claim about all of them.
    * ``ESTIMATED``: sampled or iterated; its result says from how many samples.

    A member is a string (``Trust.PROVEN == "proven"``), so it reads and writes as JSON as it is.

    Examples
    --------
    >>> from dynamo import Trust
    >>> Trust.PROVEN.word, Trust.ESTIMATED.word
    ('certified', 'estimated')
    >>> Trust("checked") is Trust.CHECKED, Trust.PROVEN == "proven"
    (True, True)
    >>> Trust.weakest([Trust.PROVEN, Trust.CHECKED]).value
    'checked'
    """

    PROVEN = "proven"
    CHECKED = "checked"
    ESTIMATED = "estimated"

    @property
    def word(self) -> str:
        """The word a report prints beside the number: ``certified`` (only for PROVEN),
        ``checked`` or ``estimated``."""
        return {"proven": "certified", "checked": "checked", "estimated": "estimated"}[self.value]

    @property
    def meaning(self) -> str:
        """One line on what this trust means."""
        return {
            "proven": "rigorous on the stated set, rounding included, from rules proved in general",
            "checked": "a test on a computed instance: true of that instance, not of the claim",
            "estimated": "sampled or iterated: an estimate from the stated number of samples",
        }[self.value]

    @classmethod
    def weakest(cls, trusts: Iterable[Trust | str]) -> Trust:
        """The weakest of several trusts (what a statement resting on all of them has);
        ``ESTIMATED`` for none.

        >>> from dynamo import Trust
        >>> Trust.weakest(["proven", "proven"]).value, Trust.weakest([]).value
        ('proven', 'estimated')
        """
        order = list(cls)
        got = [cls(t) for t in trusts]
        return max(got, key=order.index) if got else cls.ESTIMATED

    def __str__(self) -> str:
        return self.value


def _plain(v: Any, *, other: Callable[[Any], Any] | None = None) -> Any:
    """JSON-safe: a tensor as (nested) Python numbers, NaN and infinities as None; with
    ``other``, any value that is not a plain scalar or a tensor goes through it (``repr`` for
    a solver's options). The one JSON helper of the packages, with :func:`_finite_or_none`."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if other is not None and not (isinstance(v, (bool, int, float, str)) or v is None):
        return other(v)
    return v


@dataclass(frozen=True)
class Solution:
    """The result of :func:`dynamo.solve` for a batch of N starts.

    Only starts whose outcome is :attr:`Outcome.CONVERGED` hold a fixed point (to ``residual <=
    atol + tol·‖h‖``); the others hold their best iterate, which is **not** a fixed point.
    :attr:`fixed_points` returns the converged states alone.

    Attributes
    ----------
    method : str
        Solver name.
    state : torch.Tensor
        ``(N, *state_shape)``: per start the converged state, or the iterate of least residual.
    last_state : torch.Tensor or None
        ``(N, *state_shape)``: per start the iterate at which it stopped. For a start that ran out
        of steps this is where the iteration had got to (on a cycle, say), while :attr:`state` may
        be an early transient that merely passed close to a fixed point.
    residual : torch.Tensor
        ``(N,)``: ``‖f(h) − h‖₂`` at ``state``.
    relative_residual : torch.Tensor
        ``(N,)``: ``residual / ‖state‖₂``.
    steps : torch.Tensor
        ``(N,)``: iterations taken by each start before it stopped.
    outcomes : tuple of Outcome
        Per start.
    residual_trace : torch.Tensor
        ``(K + 1, N)``: residual at every iterate (row 0 is the start), NaN once a start stopped.
    f_evals, jvp_evals : torch.Tensor
        ``(N,)``: map evaluations and Jacobian-vector products spent on each start.
    tol, atol : float
        Relative and absolute tolerance.
    max_steps : int
    dtype, device : str
    options : dict
        The method's options as used (damping, memory, ...).

    Examples
    --------
    :func:`dynamo.solve` returns one:

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
    >>> sol = dy.solve(system, torch.zeros(2, 3, dtype=torch.float64), method="picard")
    >>> sol.method, sol.n_converged, sol.steps.tolist()
    ('picard', 2, [13, 13])
    >>> sol.fixed_points.shape, sol.options
    (torch.Size([2, 3]), {'damping': 1.0})
    """

    method: str
    state: torch.Tensor
    residual: torch.Tensor
    relative_residual: torch.Tensor
    steps: torch.Tensor
    outcomes: tuple[Outcome, ...]
    residual_trace: torch.Tensor
    f_evals: torch.Tensor
    jvp_evals: torch.Tensor
    tol: float
    atol: float
    max_steps: int
    dtype: str
    device: str
    options: dict[str, Any] = field(default_factory=dict)
    last_state: torch.Tensor | None = None

    @property
    def converged(self) -> torch.Tensor:
        """``(N,)`` bool: which starts converged."""
        return torch.tensor([o is Outcome.CONVERGED for o in self.outcomes], dtype=torch.bool)

    @property
    def n_converged(self) -> int:
        """How many starts converged."""
        return sum(o is Outcome.CONVERGED for o in self.outcomes)

    @property
    def all_converged(self) -> bool:
        """True when every start converged."""
        return self.n_converged == len(self.outcomes)

    @property
    def fixed_points(self) -> torch.Tensor:
        """``(n_converged, *state_shape)``: the states of the converged starts only."""
        return self.state[self.converged.to(self.state.device)]

    def outcome_counts(self) -> dict[str, int]:
        """``{label: count}`` over the starts, in the enum's order.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> henon = dy.LoopedSystem.from_module(dy.models.Henon())
        >>> starts = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=torch.float64)
        >>> sol = dy.solve(henon, starts, method="picard", max_steps=50, throw=False)
        >>> sol.outcome_counts()  # the chaotic orbit never settles; the far start escapes
        {'max_steps_reached': 1, 'diverged': 1}
        """
        counts = Counter(self.outcomes)
        return {o.label: counts[o] for o in Outcome if counts[o]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: per-start outcome, residual and steps, plus the settings.

        A residual that is NaN or inf (a start whose map was never finite) becomes ``None``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
        >>> sol = dy.solve(system, torch.zeros(2, 3, dtype=torch.float64), method="picard")
        >>> d = sol.to_dict()
        >>> d["n_converged"], d["outcomes"], d["f_evals"]
        (2, ['converged', 'converged'], [14, 14])
        """
        return {
            "method": self.method,
            "n_starts": len(self.outcomes),
            "n_converged": self.n_converged,
            "outcome_counts": self.outcome_counts(),
            "outcomes": [o.label for o in self.outcomes],
            "residual": [_finite_or_none(v) for v in self.residual.tolist()],
            "relative_residual": [_finite_or_none(v) for v in self.relative_residual.tolist()],
            "steps": [int(v) for v in self.steps.tolist()],
            "f_evals": [int(v) for v in self.f_evals.tolist()],
            "jvp_evals": [int(v) for v in self.jvp_evals.tolist()],
            "tol": self.tol,
            "atol": self.atol,
            "max_steps": self.max_steps,
            "dtype": self.dtype,
            "device": self.device,
            "options": {k: _plain(v, other=repr) for k, v in self.options.items()},
        }

    def __str__(self) -> str:
        n = len(self.outcomes)
        counts = ", ".join(f"{c} {label}" for label, c in self.outcome_counts().items())
        steps = self.steps.to(torch.float64)
        conv = self.converged.to(self.residual.device)
        if bool(conv.any()):
            res = f"residual max {float(self.residual[conv].max()):.2e} over converged"
        else:
            res = f"best residual min {float(self.residual.min()):.2e}: no fixed point reported"
        return (
            f"Solution({self.method}: {self.n_converged}/{n} converged ({counts}); steps median "
            f"{float(steps.median()):.0f}, max {int(steps.max())}; {res}; tol {self.tol:.1e} "
            f"rel + {self.atol:.1e} abs)"
        )

    def __repr__(self) -> str:
        return str(self)


def _finite_or_none(v: float) -> float | None:
    """A number as JSON, which has no NaN or inf: ``float(v)``, or ``None`` where it is not finite
    (a residual that was never finite is reported as null). The one such helper of the packages."""
    return float(v) if math.isfinite(v) else None
