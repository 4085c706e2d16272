"""Outcomes shared by every solver and analysis: values, not exceptions."""

from __future__ import annotations

import enum
import math
from typing import Any

import torch

__all__ = ["Outcome"]


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


def _plain(v: Any) -> Any:
    """JSON-safe: a tensor as (nested) Python numbers, NaN and infinities as None."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
