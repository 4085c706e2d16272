"""The engine kernel: what dynamo's own packages above the engine (``theory``, ``verify``) may use
besides the public API.

These names are public to those packages and internal to users: they keep their meaning within a
release of dynamo, carry no promise across releases, and are not exported by ``import dynamo``.
Everything else with a leading underscore in ``dynamo`` is private to the engine; a test
(``tests/test_layering.py``) checks that nothing above the engine imports it.

Argument checking, with the call form every error message begins with:

* :func:`call_form`, :func:`check_positive_int`, :func:`check_positive_float`, :func:`check_seed`
  (and :data:`MAX_SEED`), :func:`check_memory`.

Results and statistics:

* :func:`plain` (a value made JSON-safe: tensors as numbers, NaN and infinities as ``None``),
  :func:`finite_or_none` (a number as JSON: ``float``, or ``None`` where not finite);
  :func:`clopper_pearson` (exact binomial interval, also public as ``dynamo.clopper_pearson``).

Rules the certificates and the claims share:

* :data:`ACTIVATION_SLOPES` (the Lipschitz constant of each elementwise activation the bound
  knows), :func:`attention_rule` (the Lipschitz factor and output token-norm bound of one
  dot-product attention layer, inputs of token norm at most ``R``); :mod:`lipschitz_formulas`
  (the closed forms every built-in rule evaluates, callable on floats and on sympy symbols, which
  ``theory`` proves the rules' claims R1–R11 and R14–R17 about).

Past one process (the sweeps of ``verify``): :func:`import_ray` (``ray``, or an error naming the
``[ray]`` extra), :func:`ray_address_error` (why a Ray cluster's address does not answer, found in
seconds rather than Ray's minute of retries).

Autodiff set-up:

* :func:`prime_forward_ad` (import torch's forward-mode decompositions once, with torch's own
  deprecation warning silenced).

Path independence: :func:`path_agreement` (pairwise cosines, spreads and agreeing inputs of
the limits each input's starts reached; the one definition behind ``dynamo.reachability``, the
certificate's ``reachability.path_independence`` and ``verify.reachability_report``).

Krylov routines (matrix-free, batched over starts): :func:`arnoldi`, :func:`golub_kahan`,
:func:`lanczos_sym`, in :mod:`dynamo._krylov`.

Examples
--------
>>> from dynamo.kernel import call_form, check_positive_int, plain
>>> call_form("certify", ["spec"], seeds=8)
'certify(spec, seeds=8)'
>>> check_positive_int("certify(spec, seeds=0)", "seeds", 0)
Traceback (most recent call last):
...
dynamo.errors.InvalidArgumentError: certify(spec, seeds=0): seeds must be >= 1, got 0
>>> plain(float("nan")), plain(2.5)
(None, 2.5)
"""

from __future__ import annotations

from ._axes import _path_agreement as path_agreement
from ._compat import _prime_forward_ad as prime_forward_ad
from ._executor import _import_ray as import_ray
from ._executor import ray_address_error
from ._krylov import arnoldi, golub_kahan, lanczos_sym
from ._lipschitz import ACTIVATION_SLOPES
from ._lipschitz import _attention_rule as attention_rule
from ._lipschitz import _formulas as lipschitz_formulas
from ._results import _finite_or_none as finite_or_none
from ._results import _plain as plain
from ._stats import clopper_pearson
from ._validate import (
    MAX_SEED,
    call_form,
    check_memory,
    check_positive_float,
    check_positive_int,
    check_seed,
)

__all__ = [
    "ACTIVATION_SLOPES",
    "MAX_SEED",
    "arnoldi",
    "attention_rule",
    "call_form",
    "check_memory",
    "check_positive_float",
    "check_positive_int",
    "check_seed",
    "clopper_pearson",
    "finite_or_none",
    "golub_kahan",
    "import_ray",
    "lanczos_sym",
    "lipschitz_formulas",
    "path_agreement",
    "plain",
    "prime_forward_ad",
    "ray_address_error",
]
