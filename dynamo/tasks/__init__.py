"""Algorithmic tasks with difficulty as a dial, for training looped transformers.

Each task samples seeded batches of (tokens, targets, mask) at a chosen difficulty, so that a
model trained at one difficulty can be tested at harder ones: prefix sums and prefix majority
(difficulty = string length; Bansal et al., "End-to-end algorithm synthesis with recurrent
networks", arXiv 2202.05826) and 4x4 sudoku (difficulty = number of blanks).

>>> import torch, dynamo as dy
>>> task = dy.tasks.get("sudoku4")
>>> batch = task.sample(8, seed=0)
>>> batch.tokens.shape, task.vocab_size, task.n_classes
(torch.Size([8, 16]), 5, 4)
>>> logits = torch.nn.functional.one_hot(batch.targets, task.n_classes).float()
>>> dy.tasks.accuracy(logits, batch)["sequence"]
1.0
"""

from ._base import Task as Task
from ._base import TaskBatch as TaskBatch
from ._base import accuracy as accuracy
from ._prefix import PrefixMajority as PrefixMajority
from ._prefix import PrefixSums as PrefixSums
from ._registry import get as get
from ._registry import names as names
from ._registry import register as register
from ._sudoku import Sudoku4 as Sudoku4

__all__ = [
    "PrefixMajority",
    "PrefixSums",
    "Sudoku4",
    "Task",
    "TaskBatch",
    "accuracy",
    "get",
    "names",
    "register",
]
