"""The string options of the public verbs, as ``Literal`` types: a type checker then catches a
misspelt option before the run does (each verb still checks its options at run time, with an
error that lists the valid ones)."""

from __future__ import annotations

from typing import Literal

__all__ = [
    "ADMode",
    "LowerBoundMethod",
    "MethodName",
    "ReverseOrForward",
    "SearchMode",
    "StartKind",
]

#: where random starts come from: N(0, scale²), zeros, or the system's input
StartKind = Literal["normal", "zeros", "input"]
#: find_fixed_points: iteration only, or iteration plus root-finding
SearchMode = Literal["reach", "all"]
#: dynamo.solve's methods (the keys of dynamo.METHODS)
MethodName = Literal["picard", "anderson", "broyden", "newton_krylov"]
#: how a Jacobian is formed: chosen by dynamo, reverse mode, or forward mode
ADMode = Literal["auto", "reverse", "forward"]
#: how Jacobian-vector products are taken by the matrix-free verbs
ReverseOrForward = Literal["reverse", "forward"]
#: lipschitz_lower_bound: sampled states, or gradient ascent on ‖J‖ from them
LowerBoundMethod = Literal["sampled", "ascent"]
