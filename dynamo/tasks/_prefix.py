"""Prefix tasks on bit strings: prefix sums (parity) and prefix majority.

Difficulty is the string length; a model trained at one length is tested at longer ones
(Bansal et al., "End-to-end algorithm synthesis with recurrent networks", arXiv 2202.05826).
"""

from __future__ import annotations

from typing import Any

import torch

from .._validate import call_form
from ._base import TaskBatch, check_int_range, check_sample_args

__all__ = ["PrefixMajority", "PrefixSums"]


class _PrefixTask:
    """Shared machinery: uniform random bits of length ``difficulty``, every position scored."""

    name = "prefix"
    vocab_size = 2
    n_classes = 2
    difficulty_name = "length"

    def __init__(self, default_difficulty: int = 16) -> None:
        call = call_form(type(self).__name__, default_difficulty=default_difficulty)
        self.default_difficulty: int = check_int_range(
            call, "default_difficulty", default_difficulty, 1, None, " (a string length)"
        )

    def _targets(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def seq_len(self, difficulty: int) -> int:
        """The sequence length at ``difficulty``: the length itself.

        >>> from dynamo.tasks import PrefixSums
        >>> PrefixSums().seq_len(48)
        48
        """
        call = call_form(f"{type(self).__name__}.seq_len", difficulty=difficulty)
        return check_int_range(call, "difficulty", difficulty, 1, None, " (a string length)")

    def sample(
        self,
        n: int,
        difficulty: int | None = None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw ``n`` uniform random bit strings of length ``difficulty`` with their targets.

        Parameters
        ----------
        n : int
            Number of instances, ``>= 1``.
        difficulty : int, optional
            String length ``>= 1`` (default: ``default_difficulty``).
        seed : int, optional
            Seed of a fresh CPU generator. Exactly one of ``seed`` and ``generator``.
        generator : torch.Generator, optional
            Generator to draw from (advanced by the call); tensors are made on its device.

        Returns
        -------
        TaskBatch
            ``(n, difficulty)`` tokens and targets, mask all True.

        Examples
        --------
        >>> from dynamo.tasks import PrefixSums
        >>> b = PrefixSums().sample(2, 5, seed=0)
        >>> b.tokens.shape, bool(b.mask.all())
        (torch.Size([2, 5]), True)
        """
        call, gen = check_sample_args(type(self).__name__, n, difficulty, seed, generator)
        d = self.default_difficulty if difficulty is None else difficulty
        d = check_int_range(call, "difficulty", d, 1, None, " (a string length)")
        tokens = torch.randint(0, 2, (n, d), generator=gen, device=gen.device, dtype=torch.int64)
        targets = self._targets(tokens)
        mask = torch.ones(n, d, dtype=torch.bool, device=tokens.device)
        return TaskBatch(tokens=tokens, targets=targets, mask=mask, difficulty=d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters; ``dynamo.tasks.get(**task.to_dict())`` rebuilds the task.

        >>> from dynamo.tasks import PrefixSums
        >>> PrefixSums(default_difficulty=32).to_dict()
        {'name': 'prefix_sums', 'default_difficulty': 32}
        """
        return {"name": self.name, "default_difficulty": self.default_difficulty}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(default_difficulty={self.default_difficulty})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.default_difficulty))


class PrefixSums(_PrefixTask):
    """Prefix sums mod 2: ``target_i = (x_1 + ... + x_i) mod 2`` (running parity).

    The deep-thinking prefix-sums task (Schwarzschild et al. 2021; Bansal et al. 2022, arXiv
    2202.05826): tokens are uniform random bits, every position is scored. ``vocab_size = 2``,
    ``n_classes = 2``, difficulty = string length (default 16).

    Parameters
    ----------
    default_difficulty : int
        The length ``sample`` uses when called without one.

    Examples
    --------
    >>> from dynamo.tasks import PrefixSums
    >>> b = PrefixSums().sample(1, 6, seed=3)
    >>> x, y = b.tokens[0].tolist(), b.targets[0].tolist()
    >>> all(y[i] == sum(x[: i + 1]) % 2 for i in range(6))
    True
    """

    name = "prefix_sums"

    def _targets(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.cumsum(dim=1).remainder(2)


class PrefixMajority(_PrefixTask):
    """Prefix majority: ``target_i = 1`` if the ones among ``x_1..x_i`` are more than half of
    ``i``, else 0 (a tie gives 0).

    Tokens are uniform random bits, every position is scored. ``vocab_size = 2``,
    ``n_classes = 2``, difficulty = string length (default 16).

    Parameters
    ----------
    default_difficulty : int
        The length ``sample`` uses when called without one.

    Examples
    --------
    >>> from dynamo.tasks import PrefixMajority
    >>> b = PrefixMajority().sample(1, 6, seed=3)
    >>> x, y = b.tokens[0].tolist(), b.targets[0].tolist()
    >>> all(y[i] == int(2 * sum(x[: i + 1]) > i + 1) for i in range(6))
    True
    """

    name = "prefix_majority"

    def _targets(self, tokens: torch.Tensor) -> torch.Tensor:
        ones = tokens.cumsum(dim=1)
        i = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=torch.int64)
        return (2 * ones > i).to(torch.int64)
