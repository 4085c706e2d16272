"""Reference looped blocks and canonical maps with known answers.

The reference :class:`LoopedTransformer` spans the architectures the field argues about (recall ×
normalization placement × layers); the canonical maps carry analytic answers and form the test
bank used across dynamo (see the Models page of the docs).
"""

from ._canonical import Bistable as Bistable
from ._canonical import ContractiveTanh as ContractiveTanh
from ._canonical import Henon as Henon
from ._canonical import Hopfield as Hopfield
from ._canonical import LinearMap as LinearMap
from ._canonical import Logistic as Logistic
from ._canonical import MonDEQ as MonDEQ
from ._canonical import ZeroBranchRMSNorm as ZeroBranchRMSNorm
from ._trained import from_checkpoint as from_checkpoint
from ._trained import shipped as shipped
from ._trained import shipped_checkpoint as shipped_checkpoint
from ._transformer import LoopedTransformer as LoopedTransformer

__all__ = [
    "Bistable",
    "ContractiveTanh",
    "Henon",
    "Hopfield",
    "LinearMap",
    "Logistic",
    "LoopedTransformer",
    "MonDEQ",
    "ZeroBranchRMSNorm",
    "from_checkpoint",
    "shipped",
    "shipped_checkpoint",
]
