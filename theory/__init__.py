"""theory: claims about looped maps, each a formal statement, a derivation that must reach it, the
false variants it must reject, and a numeric check through dynamo.

A claim's statement is a tuple of facts (sympy relations, or :class:`Pred` propositions) under
stated assumptions; :meth:`Claim.prove` starts a :class:`Derivation` from the assumptions, runs its
proof and checks that every step holds and every goal fact was derived. Steps are identities and
inequalities on symbols, applications of cited :data:`LEMMAS`, chains and case splits (a proof of
the general statement), or instance checks and numeric evaluations (labelled as such: a proof
containing one is an *instance check* or *numeric only*, never a general proof). C1–C14 are the
field's and dynamo's own; R1–R11 are the Lipschitz rules behind every certified bound,
proved about the very closed forms the rules evaluate (``dynamo.kernel.lipschitz_formulas``);
R12–R13 are the interval-slope rules and Krawczyk's test behind every proven fixed point; R14–R15
bound attention heads mixed through ``W_O V_h`` and an MLP by its activation slope's midpoint; R16
bounds an attention head read through an input map ``u = W h + c``, and its value and key terms
together by the norms of their blocks (the Schur test); R17 bounds an attention sub-layer and the
GELU MLP sub-layer after it, with no norm between, together.

>>> import theory
>>> proof = theory.get("R8").prove()
>>> proof.ok, proof.kind.label
(True, 'proved in general')
>>> [c.name for c in theory.registry()][-1]
'R17'
"""

from . import _claims as _claims
from . import _claims_b as _claims_b
from . import _lemmas as _lemmas
from . import _rule_attention as _rule_attention
from . import _rule_blocks as _rule_blocks
from . import _rule_fused as _rule_fused
from . import _rule_graph as _rule_graph
from . import _rule_interval as _rule_interval
from . import _rule_mixing as _rule_mixing
from . import _rule_polynomial as _rule_polynomial
from . import _rules as _rules
from ._core import CheckResult as CheckResult
from ._core import Claim as Claim
from ._core import Proof as Proof
from ._core import Variant as Variant
from ._core import get as get
from ._core import registry as registry
from ._lemmas import Lip as Lip
from ._lemmas import add as add
from ._lemmas import charpoly as charpoly
from ._lemmas import compose as compose
from ._lemmas import inner as inner
from ._lemmas import norm as norm
from ._lemmas import opnorm as opnorm
from ._logic import LEMMAS as LEMMAS
from ._logic import Derivation as Derivation
from ._logic import Lemma as Lemma
from ._logic import Pred as Pred
from ._logic import ProofKind as ProofKind
from ._logic import Step as Step
from ._logic import fact_latex as fact_latex
from ._logic import fact_str as fact_str
from ._logic import same_fact as same_fact

__all__ = [
    "LEMMAS",
    "CheckResult",
    "Claim",
    "Derivation",
    "Lemma",
    "Lip",
    "Pred",
    "Proof",
    "ProofKind",
    "Step",
    "Variant",
    "add",
    "charpoly",
    "compose",
    "fact_latex",
    "fact_str",
    "get",
    "inner",
    "norm",
    "opnorm",
    "registry",
    "same_fact",
]
