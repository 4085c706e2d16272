"""Lipschitz constants of looped maps: sampled lower bounds and certified upper bounds.

Two kinds, two meanings:

* :func:`lipschitz_lower_bound` evaluates ``‖∂f/∂h‖₂`` at states (given, or found by gradient
  ascent) and reports the largest with its witness: the Lipschitz constant on any set containing
  the witness is at least that (up to rounding). It is an **estimate** of the constant.
* :func:`lipschitz_upper_bound` composes per-layer rules into a bound that is **certified** on a
  stated :class:`Domain` (every state token's norm in ``[r_min, r_max]``, every input token's
  norm in ``[x_min, x_max]``). Each rule is written out, with its derivation, on the "Lipschitz
  bounds" docs page; a module without a rule is an error naming its type, never a silent skip.

The norm is the Euclidean norm of the flattened state. Rules track, next to the Lipschitz factor,
an interval for the norm of every token at every intermediate value (a norm layer's constant
depends on how small its input can get; attention's on how large).

Layout: :mod:`._bounds` (Domain, BoundStep, Bound), :mod:`._arith` (sound float64 helpers),
:mod:`._registry` (the rules by layer type, their composition, and the public registration),
:mod:`.rules` (dynamo's own rules, one file per family; only ``rules/reference.py`` knows the
reference models), :mod:`._upper` and :mod:`._lower` (the two verbs).
"""

from __future__ import annotations

from ._bounds import Bound, BoundStep, Domain
from ._graph import OpCall
from ._lower import lipschitz_lower_bound
from ._registry import (
    LayerBound,
    RuleContext,
    lipschitz_rules,
    register_lipschitz_rule,
    unregister_lipschitz_rule,
)
from ._upper import lipschitz_upper_bound
from .rules.activations import ACTIVATION_SLOPES
from .rules.attention import attention_rule as _attention_rule  # noqa: F401  (dynamo.kernel)
from .rules.reference import mlp_rule as _mlp_rule  # noqa: F401  (tests)

__all__ = [
    "ACTIVATION_SLOPES",
    "Bound",
    "BoundStep",
    "Domain",
    "LayerBound",
    "OpCall",
    "RuleContext",
    "lipschitz_lower_bound",
    "lipschitz_rules",
    "lipschitz_upper_bound",
    "register_lipschitz_rule",
    "unregister_lipschitz_rule",
]
