"""Typed exceptions raised by dynamo.

Every message starts with the call form that failed, names the argument at fault and says what to
do, e.g. ``solve(system, h0, max_steps=0): max_steps must be >= 1``.

Examples
--------
>>> import dynamo as dy
>>> try:
...     dy.models.Logistic(r=-1.0)
... except dy.errors.InvalidArgumentError as err:
...     print(err)
Logistic(r=-1.0): r must be a finite number in (0, 4] so that [0, 1] maps into itself
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ._results import Solution

__all__ = [
    "ConvergenceError",
    "DynamoError",
    "InvalidArgumentError",
    "MapError",
    "MissingExtraError",
    "NonDeterministicMapError",
    "ShapeError",
    "UnsupportedDtypeError",
]


class DynamoError(Exception):
    """Base class of every error dynamo raises on purpose."""


class InvalidArgumentError(DynamoError, ValueError):
    """An argument has a bad value: out of range, non-finite, unknown option name."""


class ShapeError(InvalidArgumentError):
    """A tensor has the wrong shape for the system it is used with."""


class UnsupportedDtypeError(InvalidArgumentError, TypeError):
    """A dtype that cannot support the requested analysis (bf16 and fp16 for fixed-point search)."""


class NonDeterministicMapError(InvalidArgumentError):
    """The map is not a deterministic function of its state (train-mode dropout, batch coupling)."""


class MapError(DynamoError, RuntimeError):
    """The user's map raised while dynamo evaluated it.

    The message says which call, at which iteration and for which starts; the map's own error is
    chained as ``__cause__``.
    """


class ConvergenceError(DynamoError, RuntimeError):
    """A solver did not converge and was called with ``throw=True``.

    The full result, with per-start outcomes, residuals and traces, is kept in ``solution``.
    """

    def __init__(self, message: str, solution: Solution | Any = None) -> None:
        super().__init__(message)
        self.solution = solution


class MissingExtraError(DynamoError, ImportError):
    """An optional dependency of dynamo is not installed; the message names the extra to install
    (``pip install 'looped-dynamo[llm]'`` for language models, ``[ray]`` for Ray)."""
