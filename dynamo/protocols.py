"""What a looped block may offer dynamo, as ``typing.Protocol`` classes.

A block is any ``torch.nn.Module`` whose ``forward(h)`` or ``forward(h, x)`` is one step of the
loop. Each protocol below is optional: a block that offers one gets the matching behaviour, and
dynamo asks with ``isinstance(block, Protocol)`` (they are runtime-checkable). From Python 3.12
that check looks attributes up statically: declare ``driven`` and ``state_shape`` as class
attributes, properties or plain instance attributes (not as buffers or submodules).

* :class:`DeclaresDriven`: ``driven`` says whether ``forward`` takes the input ``x`` (otherwise
  dynamo reads it from ``forward``'s signature).
* :class:`DeclaresStateShape`: ``state_shape``, the shape of one state, when it does not depend on
  the input.
* :class:`StateShapeFor`: ``state_shape_for(x)``, the shape of one state for the encoded input
  ``x`` (a transformer's ``(T, d)`` follows the sequence length).
* :class:`LayerMaps`: ``layer_maps()``, the block as ``f_k ∘ … ∘ f_1`` (cyclic fixed points per
  layer, layer-wise Jacobians).
* :class:`AttentionMaps`: ``attention_maps(h, x)``, the attention probabilities of every layer
  during one step (how attention settles along the loop).
* :class:`Encodes`: ``encode(tokens)``, token ids to the encoded input (``inputs.kind =
  "tokens"`` in a certify spec).

Examples
--------
>>> import torch
>>> from torch import nn
>>> import dynamo as dy
>>> from dynamo.protocols import DeclaresStateShape, LayerMaps
>>> class Block(nn.Module):
...     driven = False
...     state_shape = (3,)
...     def __init__(self):
...         super().__init__()
...         self.lin = nn.Linear(3, 3)
...     def forward(self, h):
...         return torch.tanh(0.5 * self.lin(h))
>>> isinstance(Block(), DeclaresStateShape), isinstance(Block(), LayerMaps)
(True, False)
>>> dy.LoopedSystem.from_module(Block()).state_shape
(3,)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "AttentionMaps",
    "DeclaresDriven",
    "DeclaresStateShape",
    "Encodes",
    "LayerMaps",
    "StateShapeFor",
]


@runtime_checkable
class DeclaresDriven(Protocol):
    """``driven``: whether the block's ``forward`` takes the input, ``forward(h, x)``."""

    driven: bool


@runtime_checkable
class DeclaresStateShape(Protocol):
    """``state_shape``: the shape of one state (without the batch dimension)."""

    state_shape: Sequence[int]


@runtime_checkable
class StateShapeFor(Protocol):
    """``state_shape_for(x)``: the shape of one state for the encoded input ``x`` ``(B, ...)``."""

    def state_shape_for(self, x: torch.Tensor) -> Sequence[int]: ...


@runtime_checkable
class LayerMaps(Protocol):
    """``layer_maps()``: the block's layers ``f_1, …, f_k``, each ``(h, x) -> h``, whose
    composition is one step."""

    def layer_maps(
        self,
    ) -> Sequence[Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]]: ...


@runtime_checkable
class AttentionMaps(Protocol):
    """``attention_maps(h, x)``: the attention probabilities of every layer during one step,
    ``(B, H, T, T)`` each."""

    def attention_maps(
        self, h: torch.Tensor, x: torch.Tensor | None = None
    ) -> list[torch.Tensor]: ...


@runtime_checkable
class Encodes(Protocol):
    """``encode(tokens)``: token ids ``(B, T)`` to the encoded input ``(B, T, d)``."""

    def encode(self, tokens: torch.Tensor) -> torch.Tensor: ...
