"""dynamo's own Lipschitz rules, one file per family, each registered by layer type with the
claims of ``theory/`` that derive it (``dynamo prove R1`` … ``R8``). Only :mod:`.reference` knows
dynamo's reference models."""

from . import activations, attention, linear, norms, reference

__all__ = ["activations", "attention", "linear", "norms", "reference"]
