"""dynamo.tasks: targets against plain-Python references, masks, determinism, unique sudoku
puzzles (checked by an independent backtracking solver), registry, accuracy, bad input."""

from __future__ import annotations

import functools
import itertools
import json
import math
from typing import Any

import pytest
import torch

import dynamo as dy
from dynamo import tasks
from dynamo.errors import InvalidArgumentError
from dynamo.tasks import PrefixMajority, PrefixSums, Sudoku4, Task, TaskBatch

ALL: list[Task] = [PrefixSums(), PrefixMajority(), Sudoku4()]
IDS = [t.name for t in ALL]

# --- independent references -------------------------------------------------------------------


def ref_prefix_sums(x: list[int]) -> list[int]:
    out, s = [], 0
    for v in x:
        s += v
        out.append(s % 2)
    return out


def ref_prefix_majority(x: list[int]) -> list[int]:
    out, ones = [], 0
    for i, v in enumerate(x, start=1):
        ones += v
        out.append(1 if ones > i / 2 else 0)
    return out


def _units() -> list[list[int]]:
    rows = [[4 * r + c for c in range(4)] for r in range(4)]
    cols = [[4 * r + c for r in range(4)] for c in range(4)]
    boxes = [
        [4 * (br + r) + bc + c for r in range(2) for c in range(2)]
        for br in (0, 2)
        for bc in (0, 2)
    ]
    return rows + cols + boxes


UNITS = _units()


def valid_grid(g: list[int]) -> bool:
    return all(sorted(g[i] for i in unit) == [1, 2, 3, 4] for unit in UNITS)


def backtrack_count(puzzle: list[int], limit: int = 2) -> int:
    """Count completions of a 4x4 puzzle (0 = blank) by plain backtracking, up to ``limit``."""
    cells = list(puzzle)
    peers = [{j for unit in UNITS if i in unit for j in unit if j != i} for i in range(16)]
    for i, v in enumerate(cells):  # the givens themselves must not clash
        if v and any(cells[j] == v for j in peers[i]):
            return 0

    def rec() -> int:
        try:
            i = cells.index(0)
        except ValueError:
            return 1
        total = 0
        for v in range(1, 5):
            if all(cells[j] != v for j in peers[i]):
                cells[i] = v
                total += rec()
                cells[i] = 0
                if total >= limit:
                    return total
        return total

    return rec()


@functools.lru_cache(maxsize=1)
def brute_force_grids() -> frozenset[tuple[int, ...]]:
    """All valid grids: rows chosen among the 24 permutations, one at a time, keeping only
    choices whose columns and boxes hold no repeated digit so far."""
    perms = list(itertools.permutations([1, 2, 3, 4]))
    out: set[tuple[int, ...]] = set()

    def ok(rows: list[tuple[int, ...]]) -> bool:
        for unit in UNITS:
            seen = [rows[i // 4][i % 4] for i in unit if i // 4 < len(rows)]
            if len(seen) != len(set(seen)):
                return False
        return True

    def rec(rows: list[tuple[int, ...]]) -> None:
        if len(rows) == 4:
            out.add(tuple(v for row in rows for v in row))
            return
        for p in perms:
            if ok([*rows, p]):
                rec([*rows, p])

    rec([])
    return frozenset(out)


# --- prefix tasks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "ref"),
    [(PrefixSums(), ref_prefix_sums), (PrefixMajority(), ref_prefix_majority)],
    ids=["prefix_sums", "prefix_majority"],
)
@pytest.mark.parametrize("length", [1, 2, 7, 16, 33])
def test_prefix_targets_match_reference(task: Any, ref: Any, length: int) -> None:
    b = task.sample(64, length, seed=length)
    assert b.tokens.shape == b.targets.shape == b.mask.shape == (64, length)
    assert b.tokens.dtype == b.targets.dtype == torch.int64 and b.mask.dtype == torch.bool
    assert bool(b.mask.all()) and b.difficulty == length
    assert set(b.tokens.unique().tolist()) <= {0, 1}
    for x, y in zip(b.tokens.tolist(), b.targets.tolist(), strict=True):
        assert y == ref(x)
    assert task.seq_len(length) == length


def test_prefix_majority_ties_give_zero() -> None:
    assert ref_prefix_majority([1, 0, 1, 0]) == [1, 0, 1, 0]
    b = PrefixMajority().sample(512, 4, seed=0)
    tie = (b.tokens.cumsum(1) * 2) == torch.arange(1, 5)
    assert bool(tie.any()) and bool((b.targets[tie] == 0).all())


def test_prefix_default_length_and_bits_balanced() -> None:
    b = PrefixSums().sample(1000, seed=0)
    assert b.tokens.shape == (1000, 16) and b.difficulty == 16
    assert abs(float(b.tokens.double().mean()) - 0.5) < 0.02
    assert PrefixMajority(default_difficulty=5).sample(3, seed=0).tokens.shape == (3, 5)


# --- sudoku -----------------------------------------------------------------------------------


def test_sudoku_288_grids_all_valid() -> None:
    g = Sudoku4.grids()
    assert g.shape == (288, 16) and g.dtype == torch.int64
    rows = [tuple(r) for r in g.tolist()]
    assert len(set(rows)) == 288
    assert all(valid_grid(list(r)) for r in rows)
    assert set(rows) == brute_force_grids()


@pytest.mark.parametrize("blanks", range(1, 13))
def test_sudoku_puzzles_unique_and_consistent(blanks: int) -> None:
    task = Sudoku4()
    b = task.sample(60, blanks, seed=100 + blanks)
    assert b.tokens.shape == (60, 16) and b.difficulty == blanks
    assert int(b.tokens.min()) >= 0 and int(b.tokens.max()) <= 4
    assert int(b.targets.min()) >= 0 and int(b.targets.max()) <= 3
    assert bool((b.mask == (b.tokens == 0)).all())
    assert b.mask.sum(dim=1).tolist() == [blanks] * 60
    for tok, tgt in zip(b.tokens.tolist(), b.targets.tolist(), strict=True):
        solution = [v + 1 for v in tgt]
        assert valid_grid(solution)
        assert all(t in (0, s) for t, s in zip(tok, solution, strict=True))  # givens match target
        assert backtrack_count(tok) == 1
    assert task.count_solutions(b.tokens).tolist() == [1] * 60
    assert task.seq_len(blanks) == 16


def test_sudoku_count_solutions_matches_backtracking() -> None:
    gen = torch.Generator().manual_seed(7)
    grids = Sudoku4.grids()
    idx = torch.randint(0, 288, (200,), generator=gen)
    keep = torch.rand(200, 16, generator=gen) < 0.3
    puzzles = grids[idx].masked_fill(~keep, 0)
    puzzles[:5, :2] = 1  # a digit given twice in row 0: no solution
    counts = Sudoku4.count_solutions(puzzles).tolist()
    assert counts == [backtrack_count(p, limit=10**6) for p in puzzles.tolist()]
    assert counts[:5] == [0] * 5 and any(c > 1 for c in counts)


def _exhaustive_unique(blanks: int) -> int:
    """(grid, blank set) pairs with a unique completion, counted without dynamo's tables: a
    pair is unique when every other grid differs from its grid on some given cell."""
    g = torch.tensor(sorted(brute_force_grids()))
    bits = 2 ** torch.arange(16)
    differ = ((g[:, None, :] != g[None, :, :]).long() * bits).sum(-1)  # (288, 288) cell masks
    givens = torch.tensor(
        [sum(1 << c for c in cells) for cells in itertools.combinations(range(16), 16 - blanks)]
    )
    total = 0
    for part in givens.split(64):
        agree = (differ[None] & part[:, None, None]) == 0  # (k, 288 grids, 288 candidates)
        total += int((agree.sum(dim=2) == 1).sum())
    return total


@pytest.mark.parametrize(
    ("blanks", "unique"), [(1, 4608), (2, 34560), (3, 161280), (12, 25728), (13, 0)]
)
def test_sudoku_unique_counts_and_max_blanks(blanks: int, unique: int) -> None:
    from dynamo.tasks import _sudoku

    assert _exhaustive_unique(blanks) == unique
    if blanks <= _sudoku.MAX_BLANKS:
        assert _sudoku._UNIQUE[blanks] == unique
        assert 0 < unique <= 288 * math.comb(16, blanks)
    else:  # no puzzle with 4 - 1 givens is unique, so none with fewer is either
        assert _sudoku.MAX_BLANKS == 12


def test_sudoku_blanks_spread_over_cells_and_grids() -> None:
    b = Sudoku4().sample(4000, 6, seed=0)
    per_cell = b.mask.double().mean(dim=0)
    assert float((per_cell - 6 / 16).abs().max()) < 0.05
    grids = {tuple(r) for r in b.targets.tolist()}
    assert len(grids) > 250


def test_sudoku_fast() -> None:
    import time

    task = Sudoku4()
    task.sample(10, 12, seed=0)  # build the cached tables
    t0 = time.perf_counter()
    task.sample(10_000, 12, seed=1)
    assert time.perf_counter() - t0 < 2.0


# --- determinism ------------------------------------------------------------------------------


def _same(a: TaskBatch, b: TaskBatch) -> bool:
    return (
        torch.equal(a.tokens, b.tokens)
        and torch.equal(a.targets, b.targets)
        and torch.equal(a.mask, b.mask)
        and a.difficulty == b.difficulty
    )


@pytest.mark.parametrize("task", ALL, ids=IDS)
def test_deterministic(task: Any) -> None:
    d = task.default_difficulty
    a = task.sample(50, d, seed=5)
    assert _same(a, task.sample(50, d, seed=5))
    assert _same(a, task.sample(50, seed=5))
    assert _same(a, task.sample(50, d, generator=torch.Generator().manual_seed(5)))
    assert not _same(a, task.sample(50, d, seed=6))
    gen = torch.Generator().manual_seed(5)
    first, second = task.sample(50, d, generator=gen), task.sample(50, d, generator=gen)
    assert _same(first, a) and not _same(first, second)


# --- registry, to_dict ------------------------------------------------------------------------


def test_names_and_get() -> None:
    assert tasks.names() == ["prefix_majority", "prefix_sums", "sudoku4"]
    assert isinstance(tasks.get("prefix_sums"), PrefixSums)
    assert isinstance(tasks.get("prefix_majority"), PrefixMajority)
    assert tasks.get("sudoku4", default_difficulty=9).default_difficulty == 9
    assert dy.tasks is tasks


@pytest.mark.parametrize(
    "task", [PrefixSums(8), PrefixMajority(default_difficulty=20), Sudoku4(11)], ids=IDS
)
def test_to_dict_round_trip(task: Any) -> None:
    d = json.loads(json.dumps(task.to_dict()))
    assert d["name"] == task.name
    assert tasks.get(**d) == task and repr(tasks.get(**d)) == repr(task)
    assert task.difficulty_name in ("length", "blanks")


def test_get_unknown_name_lists_known() -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown task name 'maze'.*prefix_sums"):
        tasks.get("maze")


def test_get_bad_params() -> None:
    with pytest.raises(InvalidArgumentError, match=r"parameters do not fit task 'prefix_sums'"):
        tasks.get("prefix_sums", length=3)
    with pytest.raises(InvalidArgumentError, match=r"default_difficulty must be in 1..12"):
        tasks.get("sudoku4", default_difficulty=14)


def test_register(monkeypatch: pytest.MonkeyPatch) -> None:
    from dynamo.tasks import _registry

    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    class Parity(PrefixSums):
        name = "my_parity"

    tasks.register("my_parity", Parity)
    assert "my_parity" in tasks.names()
    assert tasks.get("my_parity", default_difficulty=4).sample(2, seed=0).tokens.shape == (2, 4)
    with pytest.raises(InvalidArgumentError, match=r"name 'my_parity' is already registered"):
        tasks.register("my_parity", Parity)
    with pytest.raises(InvalidArgumentError, match=r"name 'prefix_sums' is already registered"):
        tasks.register("prefix_sums", Parity)
    with pytest.raises(InvalidArgumentError, match=r"name must be a non-empty str"):
        tasks.register("", Parity)
    with pytest.raises(InvalidArgumentError, match=r"factory must be callable"):
        tasks.register("x", 3)  # type: ignore[arg-type]


# --- accuracy ---------------------------------------------------------------------------------


def test_accuracy_perfect_and_one_wrong() -> None:
    b = PrefixSums().sample(4, 5, seed=0)
    logits = torch.nn.functional.one_hot(b.targets, 2).double()
    assert tasks.accuracy(logits, b) == {"token": 1.0, "sequence": 1.0, "n": 4}
    logits[2, 3] = logits[2, 3].flip(0)  # one wrong position in instance 2
    acc = tasks.accuracy(logits, b)
    assert acc["token"] == pytest.approx(19 / 20) and acc["sequence"] == pytest.approx(3 / 4)


def test_accuracy_ignores_unscored_positions() -> None:
    b = Sudoku4().sample(2, 4, seed=0)
    logits = torch.nn.functional.one_hot(b.targets, 4).float()
    given = torch.nonzero(~b.mask[0])[0, 0]
    logits[0, given] = logits[0, given].roll(1)  # wrong on a given: not scored
    assert tasks.accuracy(logits, b)["token"] == 1.0
    blank = torch.nonzero(b.mask[1])[:2, 0]
    logits[1, blank] = logits[1, blank].roll(1, dims=-1)  # two of instance 1's 4 blanks wrong
    assert tasks.accuracy(logits, b) == {"token": 6 / 8, "sequence": 0.5, "n": 2}


def test_accuracy_bad_input() -> None:
    b = PrefixSums().sample(2, 3, seed=0)
    with pytest.raises(InvalidArgumentError, match=r"logits must have shape \(n, T, n_classes\)"):
        tasks.accuracy(torch.zeros(2, 4, 2), b)
    with pytest.raises(InvalidArgumentError, match=r"logits must be a torch.Tensor"):
        tasks.accuracy([[0.0]], b)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"batch must be a TaskBatch"):
        tasks.accuracy(torch.zeros(2, 3, 2), b.tokens)  # type: ignore[arg-type]
    empty = TaskBatch(b.tokens, b.targets, torch.zeros_like(b.mask), 3)
    with pytest.raises(InvalidArgumentError, match=r"batch.mask scores no position"):
        tasks.accuracy(torch.zeros(2, 3, 2), empty)


# --- TaskBatch --------------------------------------------------------------------------------


def test_task_batch_checks_and_to() -> None:
    b = PrefixSums().sample(2, 3, seed=0)
    assert _same(b.to("cpu"), b) and b.n == 2 and b.seq_len == 3
    assert "TaskBatch(n=2, seq_len=3" in repr(b)
    with pytest.raises(InvalidArgumentError, match=r"tokens must have dtype torch.int64"):
        TaskBatch(b.tokens.int(), b.targets, b.mask, 3)
    with pytest.raises(InvalidArgumentError, match=r"mask must have dtype torch.bool"):
        TaskBatch(b.tokens, b.targets, b.mask.long(), 3)
    with pytest.raises(InvalidArgumentError, match=r"must have one shape"):
        TaskBatch(b.tokens, b.targets[:, :2], b.mask, 3)
    with pytest.raises(InvalidArgumentError, match=r"targets must have shape \(n, T\)"):
        TaskBatch(b.tokens, b.targets[0], b.mask, 3)
    with pytest.raises(InvalidArgumentError, match=r"difficulty must be an int"):
        TaskBatch(b.tokens, b.targets, b.mask, 3.0)  # type: ignore[arg-type]


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("task", ALL, ids=IDS)
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0, "seed": 0}, r"\.sample\(n=0, .*\): n must be >= 1"),
        ({"n": 2.0, "seed": 0}, r"n must be an integer >= 1"),
        ({"n": True, "seed": 0}, r"n must be an integer >= 1"),
        ({"n": 2}, r"pass seed= \(an int\) or generator="),
        ({"n": 2, "seed": 0, "generator": torch.Generator()}, "exactly one of seed= and gen"),
        ({"n": 2, "seed": -1}, r"seed=-1: Input should be greater than or equal to 0"),
        ({"n": 2, "seed": 1.5}, r"seed=1.5 must be an integer"),
        ({"n": 2, "generator": 3}, "generator must be a torch.Generator"),
        ({"n": 2, "difficulty": 0, "seed": 0}, "difficulty must be .*got 0"),
        ({"n": 2, "difficulty": "4", "seed": 0}, "difficulty must be an integer"),
    ],
)
def test_sample_bad_arguments(task: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as info:
        task.sample(**kwargs)
    assert str(info.value).startswith(f"{type(task).__name__}.sample(")


def test_sudoku_too_many_blanks_says_why() -> None:
    with pytest.raises(
        InvalidArgumentError,
        match=r"Sudoku4.sample\(n=3, difficulty=13, seed=0\): difficulty must be in 1..12.*"
        r"at least 4 givens for a unique solution",
    ):
        Sudoku4().sample(3, 13, seed=0)
    with pytest.raises(InvalidArgumentError, match=r"difficulty must be in 1..12, got 16"):
        Sudoku4().seq_len(16)


def test_bad_constructor_and_seq_len() -> None:
    with pytest.raises(InvalidArgumentError, match=r"PrefixSums\(default_difficulty=0\): def"):
        PrefixSums(0)
    with pytest.raises(InvalidArgumentError, match=r"default_difficulty must be an integer"):
        PrefixMajority(default_difficulty="8")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"Sudoku4\(default_difficulty=0\)"):
        Sudoku4(0)
    with pytest.raises(InvalidArgumentError, match=r"PrefixSums.seq_len\(difficulty=0\)"):
        PrefixSums().seq_len(0)


def test_count_solutions_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match=r"tokens must be an integer tensor"):
        Sudoku4.count_solutions(torch.zeros(3, 15, dtype=torch.long))
    with pytest.raises(InvalidArgumentError, match=r"tokens must lie in 0..4"):
        Sudoku4.count_solutions(torch.full((16,), 5))
    with pytest.raises(InvalidArgumentError, match=r"tokens must be a torch.Tensor"):
        Sudoku4.count_solutions([0] * 16)  # type: ignore[arg-type]
