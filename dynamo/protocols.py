"""What a looped block may offer dynamo, as ``typing.Protocol`` classes.

A block is any ``torch.nn.Module`` whose ``forward(h)`` or ``forward(h, x)`` is one step of the
loop. Each protocol below is optional: a block that offers one gets the matching behaviour.
dynamo asks with :func:`offers`, which looks the members up as attribute access does (through
``nn.Module.__getattr__``, and through wrappers such as ``torch.compile``'s); the protocols are
also runtime-checkable, but from Python 3.12 ``isinstance`` looks attributes up statically and
misses a compiled block's members or an ``encode`` that is a submodule.

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
* :class:`ReadsOut`: ``readout(h)``, a state to task logits (training on a task, task accuracy
  at the fixed points and attractors of a trained block).

Examples
--------
>>> import torch
>>> from torch import nn
>>> import dynamo as dy
>>> from dynamo.protocols import DeclaresStateShape, LayerMaps, offers
>>> class Block(nn.Module):
...     driven = False
...     state_shape = (3,)
...     def __init__(self):
...         super().__init__()
...         self.lin = nn.Linear(3, 3)
...     def forward(self, h):
...         return torch.tanh(0.5 * self.lin(h))
>>> offers(Block(), DeclaresStateShape), offers(Block(), LayerMaps)
(True, False)
>>> dy.LoopedSystem.from_module(Block()).state_shape
(3,)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "AttentionMaps",
    "DeclaresDriven",
    "DeclaresStateShape",
    "Encodes",
    "LayerMaps",
    "ReadsOut",
    "StateShapeFor",
    "offers",
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


@runtime_checkable
class ReadsOut(Protocol):
    """``readout(h)``: states ``(B, *state_shape)`` to task logits ``(B, T, n_classes)``."""

    def readout(self, h: torch.Tensor) -> torch.Tensor: ...


#: each protocol's members, and which of them are methods (callable)
_MEMBERS: dict[type, tuple[tuple[str, bool], ...]] = {
    DeclaresDriven: (("driven", False),),
    DeclaresStateShape: (("state_shape", False),),
    StateShapeFor: (("state_shape_for", True),),
    LayerMaps: (("layer_maps", True),),
    AttentionMaps: (("attention_maps", True),),
    Encodes: (("encode", True),),
    ReadsOut: (("readout", True),),
}


def offers(block: Any, protocol: Any) -> bool:
    """Whether ``block`` offers ``protocol``: each member is there and not None, and each method
    is callable, looked up as attribute access does.

    Parameters
    ----------
    block : object
        Usually an ``nn.Module`` (or a wrapper of one, such as ``torch.compile``'s).
    protocol : type
        One of this module's protocols.

    Returns
    -------
    bool
        True when the block offers it.

    Examples
    --------
    >>> import torch
    >>> from dynamo.protocols import DeclaresDriven, offers
    >>> class Block(torch.nn.Module):
    ...     driven = None  # not declared: dynamo reads forward's signature instead
    ...     def forward(self, h):
    ...         return h
    >>> offers(Block(), DeclaresDriven)
    False
    """
    try:
        members = _MEMBERS[protocol]
    except KeyError:
        known = ", ".join(p.__name__ for p in _MEMBERS)
        raise TypeError(
            f"offers(block, {protocol!r}): not a dynamo protocol; known: {known}"
        ) from None
    for name, is_method in members:
        value = getattr(block, name, None)
        if value is None or (is_method and not callable(value)):
            return False
    return True
