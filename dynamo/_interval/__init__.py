"""Rigorous proofs about fixed points: arb ball arithmetic on the traced map, Krawczyk's
operator per point, certified basins, and complete enumeration in a box."""

from ._enumerate import Enumeration as Enumeration
from ._enumerate import ProvenRoot as ProvenRoot
from ._enumerate import enumerate_fixed_points as enumerate_fixed_points
from ._prove import BasinCertificate as BasinCertificate
from ._prove import PointProof as PointProof
from ._prove import ProofOutcome as ProofOutcome
from ._prove import prove_fixed_point as prove_fixed_point

__all__ = [
    "BasinCertificate",
    "Enumeration",
    "PointProof",
    "ProofOutcome",
    "ProvenRoot",
    "enumerate_fixed_points",
    "prove_fixed_point",
]
