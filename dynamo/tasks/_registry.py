"""The task registry: names to factories, open to tasks defined outside dynamo."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .._validate import call_form
from ..errors import InvalidArgumentError
from ._base import Task
from ._prefix import PrefixMajority, PrefixSums
from ._sudoku import Sudoku4

__all__ = ["get", "names", "register"]

_REGISTRY: dict[str, Callable[..., Task]] = {
    "prefix_sums": PrefixSums,
    "prefix_majority": PrefixMajority,
    "sudoku4": Sudoku4,
}


def names() -> list[str]:
    """The registered task names, sorted.

    >>> import dynamo.tasks as tasks
    >>> tasks.names()
    ['prefix_majority', 'prefix_sums', 'sudoku4']
    """
    return sorted(_REGISTRY)


def get(name: str, **params: Any) -> Task:
    """Build the task registered as ``name`` with ``params``.

    Parameters
    ----------
    name : str
        A registered name (see :func:`names`).
    **params
        Keyword arguments of the task's factory (e.g. ``default_difficulty=32``).
        ``get(**task.to_dict())`` rebuilds ``task``.

    Raises
    ------
    InvalidArgumentError
        An unknown name (the message lists the known ones), or parameters the factory does not
        take.

    Examples
    --------
    >>> import dynamo.tasks as tasks
    >>> task = tasks.get("prefix_sums", default_difficulty=32)
    >>> task, tasks.get(**task.to_dict()) == task
    (PrefixSums(default_difficulty=32), True)
    """
    call = call_form("get", [repr(name)], **params)
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(repr(k) for k in names())
        raise InvalidArgumentError(f"{call}: unknown task name {name!r}; known names: {known}")
    factory = _REGISTRY[name]
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        sig = None
    if sig is not None:
        try:
            sig.bind(**params)
        except TypeError as err:
            raise InvalidArgumentError(
                f"{call}: parameters do not fit task {name!r} (accepts {sig}): {err}"
            ) from None
    return factory(**params)


def register(name: str, factory: Callable[..., Task]) -> None:
    """Register a task factory under ``name`` so that :func:`get` can build it.

    Parameters
    ----------
    name : str
        A new, non-empty name; a name already taken is refused.
    factory : callable
        ``factory(**params) -> Task`` (a task class works).

    Raises
    ------
    InvalidArgumentError
        An empty or non-string name, a name already registered, a factory that is not callable.

    Examples
    --------
    >>> import dynamo.tasks as tasks
    >>> class LongParity(tasks.PrefixSums):
    ...     name = "long_parity"
    ...     def __init__(self, default_difficulty: int = 64) -> None:
    ...         super().__init__(default_difficulty)
    >>> tasks.register("long_parity", LongParity)
    >>> tasks.get("long_parity").sample(2, seed=0).tokens.shape
    torch.Size([2, 64])
    >>> from dynamo.tasks._registry import _REGISTRY
    >>> del _REGISTRY["long_parity"]  # leave the registry as it was
    """
    call = call_form("register", [repr(name), getattr(factory, "__name__", "factory")])
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"{call}: name must be a non-empty str, got {name!r}")
    if not callable(factory):
        raise InvalidArgumentError(
            f"{call}: factory must be callable (a task class or a function returning a task), "
            f"got {type(factory).__name__}"
        )
    if name in _REGISTRY:
        raise InvalidArgumentError(
            f"{call}: name {name!r} is already registered; choose another name"
        )
    _REGISTRY[name] = factory
