"""theory: claims about looped maps, with hypotheses, sympy-checked proofs and numeric checks.

Every claim has a statement (LaTeX), its hypotheses and references, ``prove()`` returning a
:class:`Proof` whose steps each record the sympy expression checked and sympy's answer, and
``check(...)`` running the numeric counterpart through dynamo. The claims C1–C14 are the field's
and dynamo's own; R1–R8 are the per-layer Lipschitz rules behind every certified bound.

>>> import theory
>>> theory.get("C11").prove().ok
True
>>> [c.name for c in theory.registry()][:3]
['C1', 'C2', 'C3']
"""

from . import _claims as _claims
from . import _rules as _rules
from ._core import CheckResult as CheckResult
from ._core import Claim as Claim
from ._core import Proof as Proof
from ._core import Prover as Prover
from ._core import Step as Step
from ._core import get as get
from ._core import registry as registry

__all__ = ["CheckResult", "Claim", "Proof", "Prover", "Step", "get", "registry"]
