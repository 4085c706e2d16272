"""4x4 sudoku (2x2 boxes) with a unique solution; difficulty is the number of blank cells.

All 288 solution grids are enumerated once. A puzzle's solutions are exactly the grids that
agree with its givens, so counting them is one comparison against the 288 grids; the sampler
keeps only puzzles with exactly one.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from .._validate import call_form
from ..errors import InvalidArgumentError
from ._base import TaskBatch, check_int_range, check_sample_args

__all__ = ["Sudoku4"]

#: The largest number of blanks that still leaves a uniquely solvable 4x4 puzzle: the fewest
#: givens of a uniquely solvable 4x4 sudoku is 4 (checked exhaustively over all 288 grids and
#: 2**16 blank sets; see ``_UNIQUE``).
MAX_BLANKS = 12

#: Number of (grid, blank set) pairs with a unique solution, by number of blanks, out of
#: ``288 * C(16, blanks)`` pairs; computed exhaustively (the tests re-check blanks 1..3 and 12,
#: and that 13 gives none).
_UNIQUE = {
    1: 4608,
    2: 34560,
    3: 161280,
    4: 522624,
    5: 1239552,
    6: 2204928,
    7: 2958336,
    8: 2961024,
    9: 2141184,
    10: 1041408,
    11: 284160,
    12: 25728,
}

_WHY = (
    " (blanks: 0 leaves nothing to score, and a 4x4 sudoku needs at least 4 givens for a "
    "unique solution, so 13..16 blanks never give a uniquely solvable puzzle)"
)

_CHUNK = 8192


@functools.lru_cache(maxsize=1)
def _grids() -> torch.Tensor:
    """All 288 valid 4x4 grids, row-major, digits 1..4, in lexicographic order."""
    out: list[tuple[int, ...]] = []
    g = [0] * 16
    peers = [
        [
            j
            for j in range(16)
            if j != i
            and (
                j // 4 == i // 4
                or j % 4 == i % 4
                or (j // 8 == i // 8 and j % 4 // 2 == i % 4 // 2)
            )
        ]
        for i in range(16)
    ]

    def fill(i: int) -> None:
        if i == 16:
            out.append(tuple(g))
            return
        for v in range(1, 5):
            if all(g[j] != v for j in peers[i]):
                g[i] = v
                fill(i + 1)
        g[i] = 0

    fill(0)
    return torch.tensor(out, dtype=torch.int64)


@functools.lru_cache(maxsize=1)
def _differences() -> torch.Tensor:
    """``D[a, b]``: 16-bit mask of the cells where grids ``a`` and ``b`` differ (int32)."""
    g = _grids()
    bits = (1 << torch.arange(16, dtype=torch.int32)).to(torch.int32)
    return ((g[:, None, :] != g[None, :, :]).to(torch.int32) * bits).sum(-1, dtype=torch.int32)


class Sudoku4:
    """4x4 sudoku (2x2 boxes), ``T = 16`` cells row-major, every puzzle uniquely solvable.

    A puzzle is a uniform random solution grid with a uniform random set of ``difficulty``
    cells blanked, kept only if exactly one of the 288 grids agrees with its givens
    (rejection sampling, so puzzles are uniform over the uniquely solvable (grid, blank set)
    pairs). Tokens: 0 = blank, 1..4 = given digit (``vocab_size = 5``); targets: digit - 1 at
    every cell (``n_classes = 4``); mask: the blank cells. Difficulty = number of blanks, in
    ``1..12`` (default 6): 0 blanks leaves nothing to score, and a 4x4 sudoku needs at least 4
    givens for a unique solution, so 13..16 blanks never give one. The share of random blank
    sets that stay unique falls from 1 (up to 3 blanks) to 0.96 (6), 0.45 (10), 0.049 (12).

    Parameters
    ----------
    default_difficulty : int
        The number of blanks ``sample`` uses when called without one.

    Examples
    --------
    >>> from dynamo.tasks import Sudoku4
    >>> task = Sudoku4()
    >>> b = task.sample(3, 10, seed=0)
    >>> b.tokens.shape, b.mask.sum(dim=1).tolist()
    (torch.Size([3, 16]), [10, 10, 10])
    >>> task.count_solutions(b.tokens).tolist()
    [1, 1, 1]
    """

    name = "sudoku4"
    vocab_size = 5
    n_classes = 4
    difficulty_name = "blanks"

    def __init__(self, default_difficulty: int = 6) -> None:
        call = call_form("Sudoku4", default_difficulty=default_difficulty)
        self.default_difficulty: int = check_int_range(
            call, "default_difficulty", default_difficulty, 1, MAX_BLANKS, _WHY
        )

    @staticmethod
    def grids() -> torch.Tensor:
        """All 288 valid 4x4 solution grids, ``(288, 16)`` int64 digits 1..4, row-major.

        >>> from dynamo.tasks import Sudoku4
        >>> g = Sudoku4.grids()
        >>> g.shape, g[0].view(4, 4).tolist()
        (torch.Size([288, 16]), [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
        """
        return _grids().clone()

    @staticmethod
    def count_solutions(tokens: torch.Tensor) -> torch.Tensor:
        """Number of solution grids of each puzzle: the grids that agree with its givens.

        Parameters
        ----------
        tokens : torch.Tensor
            ``(n, 16)`` or ``(16,)`` integer puzzle(s), 0 = blank, 1..4 = given digit.

        Returns
        -------
        torch.Tensor
            ``(n,)`` int64 counts in ``0..288`` (``()`` for one puzzle).

        Examples
        --------
        >>> import torch
        >>> from dynamo.tasks import Sudoku4
        >>> int(Sudoku4.count_solutions(torch.zeros(16, dtype=torch.long)))
        288
        """
        call = call_form("Sudoku4.count_solutions", ["tokens"])
        if not isinstance(tokens, torch.Tensor):
            raise InvalidArgumentError(
                f"{call}: tokens must be a torch.Tensor, got {type(tokens).__name__}"
            )
        single = tokens.ndim == 1
        t = tokens.unsqueeze(0) if single else tokens
        if t.ndim != 2 or t.shape[1] != 16 or t.is_floating_point() or t.is_complex():
            raise InvalidArgumentError(
                f"{call}: tokens must be an integer tensor of shape (n, 16) or (16,), got "
                f"{tuple(tokens.shape)} {tokens.dtype}"
            )
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > 4):
            raise InvalidArgumentError(
                f"{call}: tokens must lie in 0..4 (0 = blank), got values in "
                f"{int(t.min())}..{int(t.max())}"
            )
        g = _grids().to(t.device)
        t = t.to(torch.int64)
        counts = [
            ((g[None] == part[:, None]) | (part[:, None] == 0)).all(dim=-1).sum(dim=1)
            for part in t.split(_CHUNK)
        ]
        out = torch.cat(counts) if counts else torch.zeros(0, dtype=torch.int64)
        return out[0] if single else out

    def seq_len(self, difficulty: int) -> int:
        """The sequence length: always 16 cells (``difficulty`` is checked, 1..12).

        >>> from dynamo.tasks import Sudoku4
        >>> Sudoku4().seq_len(12)
        16
        """
        call = call_form("Sudoku4.seq_len", difficulty=difficulty)
        check_int_range(call, "difficulty", difficulty, 1, MAX_BLANKS, _WHY)
        return 16

    def sample(
        self,
        n: int,
        difficulty: int | None = None,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> TaskBatch:
        """Draw ``n`` uniquely solvable puzzles with ``difficulty`` blank cells each.

        Parameters
        ----------
        n : int
            Number of puzzles, ``>= 1``.
        difficulty : int, optional
            Number of blanks in ``1..12`` (default: ``default_difficulty``).
        seed : int, optional
            Seed of a fresh CPU generator. Exactly one of ``seed`` and ``generator``.
        generator : torch.Generator, optional
            Generator to draw from (advanced by the call); tensors are made on its device.

        Returns
        -------
        TaskBatch
            ``(n, 16)`` tokens (0 = blank, 1..4 given), targets (digit - 1 everywhere), mask
            (the blanks).

        Examples
        --------
        >>> from dynamo.tasks import Sudoku4
        >>> b = Sudoku4().sample(1, 12, seed=0)
        >>> int((b.tokens == 0).sum()), bool(((b.tokens == 0) == b.mask).all())
        (12, True)
        """
        call, gen = check_sample_args("Sudoku4", n, difficulty, seed, generator)
        d = self.default_difficulty if difficulty is None else difficulty
        d = check_int_range(call, "difficulty", d, 1, MAX_BLANKS, _WHY)
        device = gen.device
        grids = _grids().to(device)
        diff = _differences().to(device)
        bits = (1 << torch.arange(16, dtype=torch.int32, device=device)).to(torch.int32)
        share = _UNIQUE[d] / (288 * math.comb(16, d))
        picked_g: list[torch.Tensor] = []
        picked_b: list[torch.Tensor] = []
        have = 0
        while have < n:
            m = math.ceil((n - have) / share * 1.1) + 64
            g = torch.randint(0, 288, (m,), generator=gen, device=device)
            order = torch.rand(m, 16, generator=gen, device=device).argsort(dim=1)
            blank = torch.zeros(m, 16, dtype=torch.bool, device=device)
            blank.scatter_(1, order[:, :d], True)
            givens = ((~blank).to(torch.int32) * bits).sum(dim=1, dtype=torch.int32)
            ok = torch.cat(
                [
                    ((diff[gp] & mp[:, None]) == 0).sum(dim=1) == 1
                    for gp, mp in zip(g.split(_CHUNK), givens.split(_CHUNK), strict=True)
                ]
            )
            picked_g.append(g[ok])
            picked_b.append(blank[ok])
            have += int(ok.sum())
        idx = torch.cat(picked_g)[:n]
        mask = torch.cat(picked_b)[:n]
        solution = grids[idx]
        tokens = solution.masked_fill(mask, 0)
        return TaskBatch(tokens=tokens, targets=solution - 1, mask=mask, difficulty=d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters; ``dynamo.tasks.get(**task.to_dict())`` rebuilds the task.

        >>> from dynamo.tasks import Sudoku4
        >>> Sudoku4(default_difficulty=8).to_dict()
        {'name': 'sudoku4', 'default_difficulty': 8}
        """
        return {"name": self.name, "default_difficulty": self.default_difficulty}

    def __repr__(self) -> str:
        return f"Sudoku4(default_difficulty={self.default_difficulty})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sudoku4) and other.default_difficulty == self.default_difficulty

    def __hash__(self) -> int:
        return hash(("Sudoku4", self.default_difficulty))
