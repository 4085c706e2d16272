"""The first certification: is a fixed point reached by plain iteration, from every start?"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

import dynamo as dy
from dynamo.errors import InvalidArgumentError
from dynamo.kernel import (
    call_form,
    check_positive_float,
    check_positive_int,
    clopper_pearson,
    finite_or_none,
    path_agreement,
)

from ._spec import check_seed

__all__ = [
    "DEFAULT_ARCHITECTURE",
    "ReachabilityReport",
    "clopper_pearson",
    "default_model",
    "default_system",
    "reachability_report",
]

#: The built-in default architecture: recall at loop entry plus outer normalization, the
#: combination the seed paper (Labovich, arXiv:2604.15259) finds reachable and input-smooth.
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "d_model": 64,
    "n_heads": 4,
    "n_layers": 1,
    "recall": "outer",
    "norm": "outer",
    "norm_type": "rms",
    "pos": "rope",
    "seed": 0,
}


def default_model(**overrides: Any) -> dy.models.LoopedTransformer:
    """The built-in default architecture (``DEFAULT_ARCHITECTURE``), with optional overrides.

    Parameters
    ----------
    **overrides
        Any :class:`dynamo.models.LoopedTransformer` argument, e.g. ``recall_mode="add"``.

    Returns
    -------
    dynamo.models.LoopedTransformer

    Examples
    --------
    >>> from verify import default_model
    >>> default_model().config["recall"], default_model().config["norm"]
    ('outer', 'outer')
    """
    return dy.models.LoopedTransformer(**{**DEFAULT_ARCHITECTURE, **overrides})


def default_system(
    n_inputs: int = 8, seq_len: int = 16, *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> dy.LoopedSystem:
    """The default model on ``n_inputs`` random encoded inputs ``e ~ N(0, 1)``, ``seq_len`` long.

    Parameters
    ----------
    n_inputs, seq_len : int
        How many inputs, and tokens per input.
    seed : int
        Seed of the inputs (the model's own seed is the default's).
    dtype : torch.dtype
        Analysis dtype (float64 or float32).

    Returns
    -------
    dynamo.LoopedSystem
        Driven: ``h ← f(h, x)`` with ``x`` the inputs.

    Examples
    --------
    >>> from verify import default_system
    >>> system = default_system(n_inputs=2, seq_len=4)
    >>> system.x.shape, system.driven
    (torch.Size([2, 4, 64]), True)
    """
    call = call_form("default_system", [], n_inputs=n_inputs, seq_len=seq_len, seed=seed)
    check_positive_int(call, "n_inputs", n_inputs)
    check_positive_int(call, "seq_len", seq_len)
    check_seed(call, "seed", seed)
    model = default_model()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_inputs, seq_len, model.d_model, generator=gen, dtype=torch.float64)
    return dy.LoopedSystem.from_module(model, x, dtype=dtype)


@dataclass(frozen=True)
class ReachabilityReport:
    """Did plain iteration reach a fixed point from every start? A sampled estimate, not a proof.

    Attributes
    ----------
    converged, n_starts : int
        Starts whose iteration met the tolerance, out of all starts.
    interval : (float, float)
        95% Clopper–Pearson interval of the converged fraction.
    steps_median, steps_max : float, int
        Iterations to tolerance over the converged starts (NaN/0 when none converged).
    residual_max, relative_residual_max : float
        Over the converged starts.
    outcome_counts : dict
        Starts per outcome label.
    n_inputs, starts_per_input : int
    path_independent_inputs : int
        Inputs whose converged starts all reached one point (relative spread <= ``same_point``).
    max_spread : float
        Largest relative distance between limits reached from starts of the same input.
    same_point : float
        Relative distance under which two limits count as one point (``eps ** (1/3)``).
    min_converged : float
        The requirement on the converged fraction.
    passed : bool
        ``converged / n_starts >= min_converged``.
    solution : dynamo.Solution
        The Picard run behind the numbers.

    Examples
    --------
    >>> from verify import default_system, reachability_report
    >>> report = reachability_report(default_system(n_inputs=2, seq_len=4), starts_per_input=2)
    >>> report.converged, report.n_starts, report.passed
    (4, 4, True)
    """

    converged: int
    n_starts: int
    interval: tuple[float, float]
    steps_median: float
    steps_max: int
    residual_max: float
    relative_residual_max: float
    outcome_counts: dict[str, int]
    n_inputs: int
    starts_per_input: int
    path_independent_inputs: int
    max_spread: float
    same_point: float
    min_converged: float
    passed: bool
    solution: dy.Solution
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Converged fraction."""
        return self.converged / self.n_starts

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every number in the report (the per-start solution included).

        >>> from verify import default_system, reachability_report
        >>> report = reachability_report(default_system(n_inputs=2, seq_len=4), starts_per_input=2)
        >>> d = report.to_dict()
        >>> d["kind"], d["n_starts"], d["converged"]
        ('reachability (sampled estimate)', 4, 4)
        """

        return {
            "kind": "reachability (sampled estimate)",
            "passed": self.passed,
            "requirement": {"converged_fraction_min": self.min_converged},
            "converged": self.converged,
            "n_starts": self.n_starts,
            "converged_fraction": self.fraction,
            "converged_fraction_ci95": list(self.interval),
            "steps_median": finite_or_none(self.steps_median),
            "steps_max": self.steps_max,
            "residual_max": finite_or_none(self.residual_max),
            "relative_residual_max": finite_or_none(self.relative_residual_max),
            "outcome_counts": dict(self.outcome_counts),
            "n_inputs": self.n_inputs,
            "starts_per_input": self.starts_per_input,
            "path_independent_inputs": self.path_independent_inputs,
            "max_spread_same_input": finite_or_none(self.max_spread),
            "same_point_tolerance": self.same_point,
            "context": dict(self.context),
            "solution": self.solution.to_dict(),
        }

    def __str__(self) -> str:
        sol = self.solution
        lo, hi = self.interval
        lines = [
            "Reachability (plain iteration h <- f(h, x); a sampled estimate, not a proof)",
            f"  starts          {self.n_inputs} inputs x {self.starts_per_input} starts = "
            f"{self.n_starts}",
            f"  converged       {self.converged}/{self.n_starts} ({100 * self.fraction:.1f}%; "
            f"95% CI {100 * lo:.1f}%-{100 * hi:.1f}%)",
        ]
        if self.converged < self.n_starts:
            rest = ", ".join(f"{v} {k}" for k, v in self.outcome_counts.items() if k != "converged")
            lines.append(f"  not converged   {rest}")
        if self.converged:
            lines += [
                f"  steps to tol    median {self.steps_median:.0f}, max {self.steps_max} "
                f"(of max_steps {sol.max_steps})",
                f"  final residual  max {self.residual_max:.2e} (relative "
                f"{self.relative_residual_max:.2e}; tol {sol.tol:.1e} rel + {sol.atol:.1e} abs, "
                f"{sol.dtype})",
                f"  same limit      {self.path_independent_inputs}/{self.n_inputs} inputs: all "
                f"their converged starts reached one point (max relative spread "
                f"{self.max_spread:.1e}, threshold {self.same_point:.1e})",
            ]
        lines.append("")
        lines.append(self.meaning())
        return "\n".join(lines)

    def meaning(self) -> str:
        """One paragraph saying what the numbers mean.

        >>> from verify import default_system, reachability_report
        >>> report = reachability_report(default_system(n_inputs=2, seq_len=4), starts_per_input=2)
        >>> report.meaning().split(".")[0]
        'PASS (requirement: converged fraction >= 1)'
        """
        verdict = "PASS" if self.passed else "FAIL"
        req = f"requirement: converged fraction >= {self.min_converged:g}"
        if self.converged == 0:
            return (
                f"{verdict} ({req}). No start converged, so no fixed point is reported: iteration "
                "did not settle within max_steps from any start. This says nothing about whether "
                "fixed points exist (a root-finder may still find unstable ones)."
            )
        parts = [f"{verdict} ({req})."]
        if self.converged == self.n_starts:
            parts.append(
                "Every start's residual ‖f(h) − h‖ fell below the tolerance: numerically, the loop "
                "settles from these starts. A residual test is evidence, not proof (a drift slower "
                "than the tolerance passes it too)."
            )
        else:
            parts.append(
                f"{self.n_starts - self.converged} starts did not settle; no fixed point is "
                "reported for them."
            )
        if self.path_independent_inputs == self.n_inputs:
            parts.append(
                "For every input the starts agreed on one limit (path independence), as expected "
                "when the fixed point is unique for each input."
            )
        else:
            parts.append(
                f"{self.n_inputs - self.path_independent_inputs} inputs reached different limits "
                "from different starts (several attractors, or starts that did not settle)."
            )
        parts.append(
            f"Sampled over {self.n_starts} starts: the true fraction lies in the 95% interval "
            "above; a certified contraction needs a Lipschitz upper bound."
        )
        return " ".join(parts)


def reachability_report(
    system: dy.LoopedSystem,
    starts_per_input: int = 4,
    *,
    max_steps: int = 1000,
    min_converged: float = 1.0,
    noise: float = 1.0,
    seed: int = 0,
    tol: float | None = None,
) -> ReachabilityReport:
    """Iterate ``system`` (Picard, no damping) from several starts per input and summarise.

    Starts of input ``b``: ``h_0 = e_b`` for the first (when the state has the input's shape,
    else ``N(0, noise²)``) and ``e_b + N(0, noise²)`` for the others.

    Parameters
    ----------
    system : dynamo.LoopedSystem
        Its input batch defines the inputs (an autonomous system counts as one input).
    starts_per_input : int
    max_steps : int
    min_converged : float
        Required converged fraction in (0, 1].
    noise : float
        Standard deviation of the start perturbation.
    seed : int
    tol : float, optional
        Relative and absolute tolerance (default: ``dynamo.default_tolerance`` of the dtype).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> sys = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=8, seed=0), torch.eye(8)[:3])
    >>> report = reachability_report(sys, starts_per_input=2)
    >>> report.passed, report.converged, report.path_independent_inputs
    (True, 6, 3)
    """
    call = call_form("reachability_report", ["system"], starts_per_input=starts_per_input)
    if not isinstance(system, dy.LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    check_positive_int(call, "starts_per_input", starts_per_input)
    check_positive_int(call, "max_steps", max_steps)
    check_positive_float(call, "min_converged", min_converged, upper=1.0)
    check_positive_float(call, "noise", noise)
    check_seed(call, "seed", seed)
    x = system.x
    n_inputs = 1 if x is None else int(x.shape[0])
    kind: Literal["input", "normal"] = (
        "input" if (x is not None and tuple(x.shape[1:]) == system.state_shape) else "normal"
    )
    h0 = system.initial_states(kind, starts_per_input, scale=noise, seed=seed)
    run_sys = system.repeat_input(starts_per_input) if x is not None else system
    sol = dy.solve(
        run_sys, h0, method="picard", max_steps=max_steps, tol=tol, atol=tol, throw=False
    )
    conv = sol.converged
    k = int(conv.sum())
    n = len(sol.outcomes)
    lo, hi = clopper_pearson(k, n)
    steps = sol.steps[conv].to(torch.float64)
    res = sol.residual.cpu()[conv]
    rel = sol.relative_residual.cpu()[conv]
    same = float(torch.finfo(system.dtype).eps ** (1.0 / 3.0))
    flat = sol.state.reshape(n_inputs, starts_per_input, -1).cpu()
    conv_by_input = conv.reshape(n_inputs, starts_per_input)
    agreement = path_agreement(flat, conv_by_input, same)
    agree = agreement.agreeing
    worst = max((v for v in agreement.spreads if not math.isnan(v)), default=0.0)
    return ReachabilityReport(
        converged=k,
        n_starts=n,
        interval=(lo, hi),
        steps_median=float(steps.median()) if k else math.nan,
        steps_max=int(steps.max()) if k else 0,
        residual_max=float(res.max()) if k else math.nan,
        relative_residual_max=float(rel.max()) if k else math.nan,
        outcome_counts=sol.outcome_counts(),
        n_inputs=n_inputs,
        starts_per_input=starts_per_input,
        path_independent_inputs=agree,
        max_spread=worst,
        same_point=same,
        min_converged=min_converged,
        passed=(k / n) >= min_converged,
        solution=sol,
        context={
            "system": system.name,
            "state_shape": list(system.state_shape),
            "dtype": str(system.dtype).replace("torch.", ""),
            "device": str(system.device),
            "seed": seed,
            "noise": noise,
            "start_kind": kind,
        },
    )
