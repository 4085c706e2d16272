"""dynamo: dynamical-systems analysis of looped (weight-tied) transformer blocks.

A looped block ``h_{t+1} = f_θ(h_t, x)`` is wrapped in a :class:`LoopedSystem` and analysed by
verbs that return frozen results saying what is proven and what is estimated.

>>> import torch, dynamo as dy
>>> model = dy.models.LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer")
>>> x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
>>> system = dy.LoopedSystem.from_module(model, x)
>>> sol = dy.solve(system, system.initial_states("input"), method="picard", throw=False)
>>> sol.method, len(sol.outcomes)
('picard', 2)
"""

from . import errors as errors
from . import models as models
from ._results import Outcome as Outcome
from ._solvers import METHODS as METHODS
from ._solvers import Solution as Solution
from ._solvers import default_tolerance as default_tolerance
from ._solvers import solve as solve
from ._system import LoopedSystem as LoopedSystem
from ._system import Trajectory as Trajectory

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "LoopedSystem",
    "Outcome",
    "Solution",
    "Trajectory",
    "default_tolerance",
    "errors",
    "models",
    "solve",
]
