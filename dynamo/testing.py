"""Assertions for a researcher's own test suite: does my looped block behave?

Each assertion runs one dynamo analysis, raises :class:`AssertionError` with a readable account of
what failed (counts, intervals, the witness), and otherwise returns the analysis result so a test
can look further. Tolerances follow the dtype the block is analysed in
(:func:`dynamo.default_tolerance`: about 4e-11 in float64, 2e-5 in float32), so a float32 block is
not held to float64 digits. By default the block is analysed in its own dtype; pass
``dtype=torch.float64`` to analyse a converted copy instead.

The pytest plugin (``pytest -p dynamo``, loaded automatically when dynamo is installed) adds a
``dynamo`` marker and a ``dynamo_certificate`` fixture for whole specs; see the docs' certify page.

Examples
--------
>>> import torch, dynamo as dy
>>> from dynamo.testing import assert_reaches_fixed_point
>>> block = dy.models.ContractiveTanh(n=8, lipschitz=0.8, seed=0)
>>> x = torch.randn(4, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
>>> sol = assert_reaches_fixed_point(block, x)
>>> int(sol.converged.sum())
16
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._axes import InputDependence, input_dependence
from ._contraction import ContractionVerdict, Verdict, check_contraction
from ._lipschitz import Domain
from ._results import Solution, Trust
from ._solvers import default_tolerance, solve
from ._stats import clopper_pearson
from ._system import LoopedSystem
from ._validate import call_form
from .errors import InvalidArgumentError

__all__ = [
    "assert_contractive",
    "assert_input_dependent",
    "assert_reaches_fixed_point",
]


def _system(
    call: str, model: LoopedSystem | nn.Module, inputs: torch.Tensor | None, dtype: Any
) -> LoopedSystem:
    if isinstance(model, LoopedSystem):
        if inputs is not None and model.driven:
            return model.with_input(inputs)
        return model
    if isinstance(model, nn.Module):
        return LoopedSystem.from_module(model, inputs, dtype=dtype)
    raise InvalidArgumentError(
        f"{call}: model must be an nn.Module whose forward(h, x) is one loop step, or a "
        f"dynamo.LoopedSystem; got {type(model).__name__}"
    )


def assert_reaches_fixed_point(
    model: LoopedSystem | nn.Module,
    inputs: torch.Tensor | None = None,
    *,
    starts: int = 4,
    min_fraction: float = 1.0,
    max_steps: int = 1000,
    tol: float | None = None,
    noise: float = 1.0,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> Solution:
    """Assert that plain iteration ``h ← f(h, x)`` reaches a fixed point from (most) starts.

    Runs undamped Picard iteration, the block's own loop, from ``starts`` starts per input
    (``h₀ = x`` then ``x`` plus ``N(0, noise²)`` when the state has the input's shape, else
    ``N(0, noise²)`` states) and asserts that at least ``min_fraction`` of them converge to
    ``‖f(h) − h‖ <= tol (1 + ‖h‖)`` within ``max_steps``. A sampled check, not a proof.

    Parameters
    ----------
    model : nn.Module or LoopedSystem
        The block (``forward(h, x)`` is one loop step) or a system.
    inputs : torch.Tensor, optional
        ``(B, *input_shape)``; required for a driven block.
    starts : int
        Starts per input.
    min_fraction : float
        Share of starts that must converge, in ``(0, 1]``.
    max_steps : int
    tol : float, optional
        Relative tolerance (default: :func:`dynamo.default_tolerance` of the analysis dtype).
    noise : float
        Standard deviation of the start noise.
    dtype : torch.dtype, optional
        Analysis dtype (default: the block's own).
    seed : int

    Returns
    -------
    Solution
        The iteration's result (``converged``, ``steps``, ``residual`` per start).

    Raises
    ------
    AssertionError
        Fewer than ``min_fraction`` of the starts converged; the message gives the count with its
        95% interval, the outcomes, and the largest final residual against the tolerance.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> from dynamo.testing import assert_reaches_fixed_point
    >>> chaotic = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.9))
    >>> assert_reaches_fixed_point(chaotic, max_steps=200)
    Traceback (most recent call last):
    ...
    AssertionError: assert_reaches_fixed_point(model): 0/4 starts converged ...
    """
    __tracebackhide__ = True  # pytest: failures point at the test, not here
    call = call_form(
        "assert_reaches_fixed_point", ["model"] + ([] if inputs is None else ["inputs"])
    )
    if not 0.0 < min_fraction <= 1.0:
        raise InvalidArgumentError(f"{call}: min_fraction={min_fraction} must be in (0, 1]")
    for name, value in (("starts", starts), ("max_steps", max_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"{call}: {name}={value!r} must be a positive integer")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise > 0):
        raise InvalidArgumentError(f"{call}: noise={noise!r} must be a finite positive number")
    if tol is not None and not (math.isfinite(tol) and tol > 0):
        raise InvalidArgumentError(f"{call}: tol={tol!r} must be a finite positive number")
    system = _system(call, model, inputs, dtype)
    rtol = default_tolerance(system.dtype) if tol is None else tol
    same = system.x is not None and tuple(system.x.shape[1:]) == system.state_shape
    run = system.repeat_input(starts) if system.x is not None and system.driven else system
    h0 = system.initial_states("input" if same else "normal", starts, scale=noise, seed=seed)
    if not system.driven and system.x is None:
        run = system
    sol = solve(run, h0, method="picard", tol=rtol, atol=rtol, max_steps=max_steps, throw=False)
    n = int(sol.converged.numel())
    k = int(sol.converged.sum())
    if k >= min_fraction * n:
        return sol
    lo, hi = clopper_pearson(k, n)
    counts = ", ".join(f"{c} {name}" for name, c in sol.outcome_counts().items())
    worst = float(sol.relative_residual[~sol.converged].max())
    raise AssertionError(
        f"{call}: {k}/{n} starts converged ({k / n:.0%}, 95% CI [{lo:.0%}, {hi:.0%}]) within "
        f"{max_steps} steps; required {min_fraction:.0%}. Outcomes: {counts}. Largest final "
        f"relative residual {worst:.3g} (tolerance {rtol:.2g} in {system.dtype}). No fixed "
        "point is reported for the starts that did not converge."
    )


def assert_contractive(
    model: LoopedSystem | nn.Module,
    inputs: torch.Tensor | None = None,
    domain: Domain | None = None,
    *,
    proven: bool = False,
    n_samples: int = 16,
    ascent_steps: int = 10,
    n_starts: int = 8,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> ContractionVerdict:
    """Assert that the looped map contracts: nothing refutes it (and, with ``proven``, a
    certified bound proves it).

    Runs :func:`dynamo.check_contraction`. Fails when the verdict is REFUTED (a checked witness:
    two states pulled apart, a fixed point with ρ > 1, or two fixed points for one input); with
    ``proven=True`` also when it is not PROVEN (a certified Lipschitz bound below 1 on a domain
    the map sends into itself). Without ``proven`` a pass is sampled support, not a proof.

    Parameters
    ----------
    model : nn.Module or LoopedSystem
    inputs : torch.Tensor, optional
    domain : Domain, optional
        Where the claim is made (see :func:`dynamo.check_contraction`).
    proven : bool
        Require a proof.
    n_samples, ascent_steps, n_starts : int
        Effort of the witness search.
    dtype : torch.dtype, optional
        Analysis dtype (default: the block's own).
    seed : int

    Returns
    -------
    ContractionVerdict

    Raises
    ------
    AssertionError
        Naming the verdict, its meaning and its evidence (and the witness, when refuted).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> from dynamo.testing import assert_contractive
    >>> x = torch.zeros(2, 6, dtype=torch.float64)
    >>> v = assert_contractive(dy.models.ContractiveTanh(n=6, lipschitz=0.8, seed=0), x,
    ...                        proven=True)
    >>> str(v.verdict)
    'PROVEN'
    >>> assert_contractive(dy.models.ContractiveTanh(n=6, lipschitz=1.5, seed=0), x)
    Traceback (most recent call last):
    ...
    AssertionError: assert_contractive(model, inputs): REFUTED: ...
    """
    __tracebackhide__ = True  # pytest: failures point at the test, not here
    call = call_form("assert_contractive", ["model"] + ([] if inputs is None else ["inputs"]))
    for name, value in (("n_samples", n_samples), ("n_starts", n_starts)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidArgumentError(f"{call}: {name}={value!r} must be a positive integer")
    if not isinstance(ascent_steps, int) or isinstance(ascent_steps, bool) or ascent_steps < 0:
        raise InvalidArgumentError(
            f"{call}: ascent_steps={ascent_steps!r} must be a non-negative integer"
        )
    system = _system(call, model, inputs, dtype)
    v = check_contraction(
        system,
        domain,
        n_samples=n_samples,
        ascent_steps=ascent_steps,
        n_starts=n_starts,
        seed=seed,
    )
    failed = v.verdict is Verdict.REFUTED or (proven and v.verdict is not Verdict.PROVEN)
    if not failed:
        return v
    evidence = "; ".join(
        f"{e.kind}: {e.claim}"
        + ("" if e.value is None else f" = {e.value:.4g}")
        + ("" if e.value is None else f" ({Trust(e.trust).word})")
        for e in v.evidence
    )
    need = " (proven=True needs PROVEN)" if proven and v.verdict is not Verdict.REFUTED else ""
    witness = ""
    if v.witness:
        parts = []
        for key, val in v.witness.items():
            if isinstance(val, torch.Tensor) and val.numel() > 1:
                parts.append(f"{key}: ‖·‖ = {float(val.norm()):.4g}")
            else:
                parts.append(f"{key} = {val if not isinstance(val, torch.Tensor) else val.item()}")
        witness = " Witness: " + ", ".join(parts) + "."
    raise AssertionError(
        f"{call}: {v.verdict}{need}: {v.verdict.message}. Local verdict at the fixed points: "
        f"{v.local_verdict}. Evidence: {evidence}.{witness}"
    )


def assert_input_dependent(
    model: LoopedSystem | nn.Module,
    inputs: torch.Tensor,
    *,
    strength: str = "strong",
    max_steps: int = 1000,
    tol: float | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> InputDependence:
    """Assert that the reached fixed point depends on the input.

    Runs :func:`dynamo.input_dependence`. ``strength="strong"``: every input reaches a fixed
    point where ``dh*/dx`` (implicit function theorem) is nonzero and of full rank: the point
    moves smoothly with the input in every direction; ``"weak"``: at least the reached point
    changes with the input (``"partial"``, a rank-deficient ``dh*/dx``, and ``"strong"`` also
    pass). A network without recall cannot pass ``"strong"`` (claim C1).

    Parameters
    ----------
    model : nn.Module or LoopedSystem
    inputs : torch.Tensor
        ``(B, *input_shape)``, ``B >= 2``.
    strength : {"strong", "weak"}
    max_steps : int
    tol : float, optional
        Relative tolerance (default: from the analysis dtype).
    dtype : torch.dtype, optional
        Analysis dtype (default: the block's own).
    seed : int

    Returns
    -------
    InputDependence

    Raises
    ------
    AssertionError
        With the verdict and its reason.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> from dynamo.testing import assert_input_dependent
    >>> xs = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    >>> assert_input_dependent(dy.models.ContractiveTanh(n=6, seed=0), xs).verdict
    'strong'
    >>> assert_input_dependent(dy.models.ContractiveTanh(n=6, recall=False, seed=0), xs)
    Traceback (most recent call last):
    ...
    AssertionError: assert_input_dependent(model, inputs): verdict 'none', required 'strong': ...
    """
    __tracebackhide__ = True  # pytest: failures point at the test, not here
    call = call_form("assert_input_dependent", ["model", "inputs"])
    if strength not in ("strong", "weak"):
        raise InvalidArgumentError(f"{call}: strength={strength!r} must be 'strong' or 'weak'")
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 1 or inputs.shape[0] < 2:
        raise InvalidArgumentError(
            f"{call}: inputs must be a tensor (B, ...) with B >= 2 inputs to compare"
        )
    system = _system(call, model, inputs, dtype)
    dep = input_dependence(system, inputs, max_steps=max_steps, tol=tol, seed=seed)
    ok = {"strong": ("strong",), "weak": ("strong", "partial", "weak")}[strength]
    if dep.verdict in ok:
        return dep
    raise AssertionError(f"{call}: verdict {dep.verdict!r}, required {strength!r}: {dep.reason}")
