"""The task protocol, the batch type, scoring, and the argument checks every task shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .._validate import call_form, check_positive_int, check_seed
from ..errors import InvalidArgumentError

__all__ = ["Task", "TaskBatch", "accuracy"]


@dataclass(frozen=True, eq=False)
class TaskBatch:
    """A batch of task instances: inputs, per-position targets and which positions are scored.

    Parameters
    ----------
    tokens : torch.Tensor
        ``(n, T)`` int64 input token ids in ``[0, task.vocab_size)``.
    targets : torch.Tensor
        ``(n, T)`` int64 class ids in ``[0, task.n_classes)``, defined at every position.
    mask : torch.Tensor
        ``(n, T)`` bool, the positions that are scored (all of them for the prefix tasks, the
        blank cells of a sudoku).
    difficulty : int
        The difficulty the batch was drawn at (a length, a number of blanks).

    Examples
    --------
    >>> import torch
    >>> from dynamo.tasks import TaskBatch
    >>> b = TaskBatch(
    ...     tokens=torch.tensor([[1, 0, 1]]),
    ...     targets=torch.tensor([[1, 1, 0]]),
    ...     mask=torch.ones(1, 3, dtype=torch.bool),
    ...     difficulty=3,
    ... )
    >>> b.n, b.seq_len, b.to("cpu").tokens.tolist()
    (1, 3, [[1, 0, 1]])
    """

    tokens: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    difficulty: int

    def __post_init__(self) -> None:
        call = "TaskBatch(tokens, targets, mask, difficulty)"
        for name, want in (
            ("tokens", torch.int64),
            ("targets", torch.int64),
            ("mask", torch.bool),
        ):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise InvalidArgumentError(
                    f"{call}: {name} must be a torch.Tensor, got {type(value).__name__}"
                )
            if value.dtype != want:
                raise InvalidArgumentError(
                    f"{call}: {name} must have dtype {want}, got {value.dtype}"
                )
            if value.ndim != 2:
                raise InvalidArgumentError(
                    f"{call}: {name} must have shape (n, T), got {tuple(value.shape)}"
                )
        if self.targets.shape != self.tokens.shape or self.mask.shape != self.tokens.shape:
            raise InvalidArgumentError(
                f"{call}: tokens, targets and mask must have one shape, got "
                f"{tuple(self.tokens.shape)}, {tuple(self.targets.shape)}, "
                f"{tuple(self.mask.shape)}"
            )
        if isinstance(self.difficulty, bool) or not isinstance(self.difficulty, int):
            raise InvalidArgumentError(
                f"{call}: difficulty must be an int, got {type(self.difficulty).__name__}"
            )

    @property
    def n(self) -> int:
        """Number of instances."""
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        """Sequence length ``T``."""
        return int(self.tokens.shape[1])

    def to(self, device: torch.device | str) -> TaskBatch:
        """The same batch with its tensors on ``device``.

        >>> import dynamo.tasks as tasks
        >>> tasks.get("prefix_sums").sample(2, seed=0).to("cpu").tokens.device.type
        'cpu'
        """
        return TaskBatch(
            tokens=self.tokens.to(device),
            targets=self.targets.to(device),
            mask=self.mask.to(device),
            difficulty=self.difficulty,
        )

    def __repr__(self) -> str:
        return (
            f"TaskBatch(n={self.n}, seq_len={self.seq_len}, difficulty={self.difficulty}, "
            f"scored={int(self.mask.sum())})"
        )


class Task(Protocol):
    """What a task offers: a seeded sampler with difficulty as a dial.

    Attributes
    ----------
    name : str
        The registry name (``dynamo.tasks.get(name)``).
    vocab_size : int
        Input token ids lie in ``[0, vocab_size)``.
    n_classes : int
        Target class ids lie in ``[0, n_classes)``.
    difficulty_name : str
        What the difficulty counts (``"length"``, ``"blanks"``).
    default_difficulty : int
        The difficulty used when ``sample`` is called without one (training's default).

    Examples
    --------
    >>> import dynamo.tasks as tasks
    >>> task: tasks.Task = tasks.get("prefix_sums")
    >>> task.vocab_size, task.n_classes, task.difficulty_name, task.seq_len(32)
    (2, 2, 'length', 32)
    """

    name: str
    vocab_size: int
    n_classes: int
    difficulty_name: str
    default_difficulty: int

    def sample(
        self,
        n: int,
        difficulty: int | None = None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw ``n`` instances at ``difficulty`` (default: ``default_difficulty``); exactly
        one of ``seed`` and ``generator`` is required."""
        ...

    def seq_len(self, difficulty: int) -> int:
        """The sequence length ``T`` of instances at ``difficulty``."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe ``{"name": ..., **parameters}``; ``dynamo.tasks.get(**d)`` rebuilds it."""
        ...


def accuracy(logits: torch.Tensor, batch: TaskBatch) -> dict[str, float]:
    """Score a model's logits against a batch, on the scored positions only.

    Parameters
    ----------
    logits : torch.Tensor
        ``(n, T, n_classes)`` scores; the prediction at each position is the argmax.
    batch : TaskBatch
        The batch the logits were computed for.

    Returns
    -------
    dict
        ``"token"``: share of scored positions predicted correctly; ``"sequence"``: share of
        instances whose scored positions are all correct; ``"n"``: number of instances.

    Examples
    --------
    >>> import torch, dynamo.tasks as tasks
    >>> batch = tasks.get("prefix_sums").sample(4, 8, seed=0)
    >>> perfect = torch.nn.functional.one_hot(batch.targets, 2).float()
    >>> tasks.accuracy(perfect, batch)
    {'token': 1.0, 'sequence': 1.0, 'n': 4}
    """
    call = call_form("accuracy", ["logits", "batch"])
    if not isinstance(batch, TaskBatch):
        raise InvalidArgumentError(f"{call}: batch must be a TaskBatch, got {type(batch).__name__}")
    if not isinstance(logits, torch.Tensor):
        raise InvalidArgumentError(
            f"{call}: logits must be a torch.Tensor, got {type(logits).__name__}"
        )
    n, t = batch.tokens.shape
    if logits.ndim != 3 or tuple(logits.shape[:2]) != (n, t) or logits.shape[2] < 1:
        raise InvalidArgumentError(
            f"{call}: logits must have shape (n, T, n_classes) = ({n}, {t}, n_classes) for "
            f"this batch, got {tuple(logits.shape)}"
        )
    mask = batch.mask.to(logits.device)
    scored = int(mask.sum())
    if scored == 0:
        raise InvalidArgumentError(f"{call}: batch.mask scores no position; accuracy is undefined")
    correct = logits.argmax(dim=-1) == batch.targets.to(logits.device)
    token = float((correct & mask).sum()) / scored
    sequence = float((correct | ~mask).all(dim=1).double().mean())
    return {"token": token, "sequence": sequence, "n": n}


def check_sample_args(
    owner: str,
    n: Any,
    difficulty: Any,
    seed: Any,
    generator: Any,
) -> tuple[str, torch.Generator]:
    """Check ``sample``'s arguments common to every task; return the call form and the generator
    to draw from (a fresh CPU generator seeded with ``seed``, or the one given)."""
    shown: dict[str, Any] = {"n": n, "difficulty": difficulty}
    if seed is not None:
        shown["seed"] = seed
    if generator is not None:
        shown["generator"] = generator
    call = call_form(f"{owner}.sample", **shown)
    check_positive_int(call, "n", n)
    if seed is None and generator is None:
        raise InvalidArgumentError(
            f"{call}: pass seed= (an int) or generator= (a torch.Generator); sampling is "
            "never seeded implicitly"
        )
    if seed is not None and generator is not None:
        raise InvalidArgumentError(f"{call}: pass exactly one of seed= and generator=, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise InvalidArgumentError(
                f"{call}: generator must be a torch.Generator, got {type(generator).__name__}"
            )
        return call, generator
    check_seed(call, "seed", seed)
    return call, torch.Generator().manual_seed(seed)


def check_int_range(call: str, name: str, value: Any, lo: int, hi: int | None, why: str) -> int:
    """Return ``value`` if it is an int in ``[lo, hi]`` (``hi=None``: no upper end)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(
            f"{call}: {name} must be an integer, got {type(value).__name__} {value!r}"
        )
    if value < lo or (hi is not None and value > hi):
        span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise InvalidArgumentError(f"{call}: {name} must be {span}, got {value}{why}")
    return value
