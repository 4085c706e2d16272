"""Halting rules of looped models evaluated against the true distance to the fixed point."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ._solvers import default_tolerance, solve
from ._system import LoopedSystem
from ._validate import call_form, check_finite_tensor, check_positive_int, check_state_shape
from .errors import InvalidArgumentError

__all__ = ["HALTING_RULES", "HaltingReport", "halting"]

#: Default thresholds: FPRM (Movahedi et al., arXiv:2606.18206) stops when the relative
#: ℓ∞ residual per token, maxed over tokens, falls below 0.1; Huginn (Geiping et al.,
#: arXiv:2502.05171) when the mean over tokens of ‖s_k − s_{k−1}‖/‖s_k‖ falls below 0.03;
#: "residual" is dynamo's own test ‖f(h) − h‖ <= tol (1 + ‖h‖) with the dtype's default tol.
HALTING_RULES: dict[str, float] = {"fprm": 0.1, "huginn": 0.03, "residual": float("nan")}


def _tokens(h: torch.Tensor) -> torch.Tensor:
    """``(N, T, d)`` view: a state of shape ``(d,)`` is one token."""
    return h[:, None, :] if h.ndim == 2 else h.reshape(h.shape[0], -1, h.shape[-1])


def _rule_value(name: str, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
    tiny = torch.finfo(cur.dtype).tiny
    a, b = _tokens(prev), _tokens(cur)
    if name == "fprm":
        num = (b - a).abs().amax(dim=-1)
        den = torch.clamp(a.abs().amax(dim=-1), min=tiny)
        return (num / den).amax(dim=1)
    if name == "huginn":
        return ((b - a).norm(dim=-1) / torch.clamp(b.norm(dim=-1), min=tiny)).mean(dim=1)
    flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    return (flat_b - flat_a).norm(dim=1) / (1 + flat_a.norm(dim=1))


@dataclass(frozen=True)
class HaltingReport:
    """When each halting rule fires along plain iteration, and how far from ``h*`` it is then.

    Attributes
    ----------
    rules : dict
        ``{name: threshold}``.
    fired_at : dict
        ``{name: (N,) tensor}``: the first step ``k`` at which the rule's value fell below its
        threshold (-1: never within ``max_steps``).
    distance_at_halt : dict
        ``{name: (N,) tensor}``: ``‖h_k − h*‖ / ‖h*‖`` at that step (NaN when the rule never fired
        or ``h*`` is unknown).
    values : dict
        ``{name: (max_steps, N) tensor}``: each rule's value at every step.
    distance : torch.Tensor
        ``(max_steps + 1, N)``: the true relative distance to ``h*`` along the trajectory.
    h_star_converged : torch.Tensor
        ``(N,)`` bool: whether ``h*`` was found (Newton–Krylov from the last iterate).

    Examples
    --------
    :func:`halting` returns one:

    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
    >>> rep = dy.halting(system, torch.zeros(2, 3, dtype=torch.float64), max_steps=20)
    >>> rep.fired_at["fprm"].tolist(), rep.fired_at["residual"].tolist()
    ([3, 3], [14, 14])
    >>> [round(v, 4) for v in rep.distance_at_halt["fprm"].tolist()]  # 0.3% from h* at halt
    [0.003, 0.003]
    """

    rules: dict[str, float]
    fired_at: dict[str, torch.Tensor]
    distance_at_halt: dict[str, torch.Tensor]
    values: dict[str, torch.Tensor]
    distance: torch.Tensor
    h_star_converged: torch.Tensor

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (per-start firing steps and distances; NaN as null).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 3))
        >>> rep = dy.halting(system, torch.zeros(2, 3, dtype=torch.float64), max_steps=20)
        >>> d = rep.to_dict()
        >>> sorted(d), d["fired_at"]["huginn"], d["h_star_converged"]
        (['distance_at_halt', 'fired_at', 'h_star_converged', 'rules'], [3, 3], [True, True])
        """

        def clean(t: torch.Tensor) -> list[Any]:
            return [None if not math.isfinite(v) else v for v in t.tolist()]

        return {
            "rules": {k: (None if math.isnan(v) else v) for k, v in self.rules.items()},
            "fired_at": {k: v.tolist() for k, v in self.fired_at.items()},
            "distance_at_halt": {k: clean(v) for k, v in self.distance_at_halt.items()},
            "h_star_converged": self.h_star_converged.tolist(),
        }

    def __str__(self) -> str:
        lines = ["HaltingReport"]
        for name in self.rules:
            steps = self.fired_at[name]
            fired = steps >= 0
            d = self.distance_at_halt[name][fired]
            when = (
                f"median step {float(steps[fired].double().median()):.0f}"
                if bool(fired.any())
                else "never"
            )
            dist = (
                f", distance to h* there up to {float(d.max()):.2e}"
                if d.numel() and bool(torch.isfinite(d).any())
                else ""
            )
            lines.append(
                f"  {name:9s} fires for {int(fired.sum())}/{steps.numel()} starts ({when}{dist})"
            )
        return "\n".join(lines)


def halting(
    system: LoopedSystem,
    h0: torch.Tensor,
    *,
    rules: Mapping[str, float] | None = None,
    h_star: torch.Tensor | None = None,
    max_steps: int = 200,
) -> HaltingReport:
    """Evaluate halting rules on plain iteration from ``h0`` against the true fixed point.

    Adaptive-depth looped models stop iterating when a cheap statistic of the latest step falls
    below a threshold. This runs the loop, records each rule's statistic, the step at which it
    would halt, and the true relative distance ``‖h_k − h*‖/‖h*‖`` there, so that a rule's
    threshold can be judged by the error it leaves.

    Parameters
    ----------
    system : LoopedSystem
    h0 : torch.Tensor
        ``(N, *state_shape)`` starts.
    rules : mapping, optional
        ``{name: threshold}`` with names from :data:`HALTING_RULES` (default: all, at their
        published thresholds).
    h_star : torch.Tensor, optional
        The fixed points; default: Newton–Krylov from the last iterate (NaN distances where it
        does not converge).
    max_steps : int

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    >>> system = dy.LoopedSystem.from_module(f, torch.ones(1, 8))
    >>> rep = dy.halting(system, torch.zeros(3, 8, dtype=torch.float64), max_steps=100)
    >>> bool((rep.fired_at["fprm"] < rep.fired_at["residual"]).all())  # FPRM halts much earlier
    True
    """
    call = call_form("halting", ["system", "h0"])
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    check_state_shape(call, "h0", h0, system.state_shape)
    check_finite_tensor(call, "h0", h0)
    check_positive_int(call, "max_steps", max_steps)
    chosen = dict(HALTING_RULES if rules is None else rules)
    for name, thr in chosen.items():
        if name not in HALTING_RULES:
            raise InvalidArgumentError(
                f"{call}: unknown halting rule {name!r}; choose from {sorted(HALTING_RULES)}"
            )
        if name != "residual" and not (isinstance(thr, (int, float)) and thr > 0):
            raise InvalidArgumentError(
                f"{call}: the threshold of {name!r} must be > 0, got {thr!r}"
            )
    if "residual" in chosen and (rules is None or math.isnan(chosen["residual"])):
        chosen["residual"] = default_tolerance(system.dtype)
    traj = system.iterate(h0.to(system.dtype), n_steps=max_steps, record=True)
    assert traj.states is not None
    n = h0.shape[0]
    if h_star is None:
        sol = solve(system, traj.final, method="newton_krylov", throw=False, max_steps=50)
        star = sol.state
        ok = sol.converged
    else:
        check_state_shape(call, "h_star", h_star, system.state_shape)
        star = h_star.to(system.dtype)
        ok = torch.ones(n, dtype=torch.bool)
    flat_traj = traj.states.reshape(traj.states.shape[0], n, -1)
    flat_star = system.flatten(star)
    scale = torch.clamp(flat_star.norm(dim=1), min=torch.finfo(system.dtype).tiny)
    dist = (flat_traj - flat_star).norm(dim=-1) / scale
    dist[:, ~ok.to(dist.device)] = math.nan
    values: dict[str, torch.Tensor] = {}
    fired: dict[str, torch.Tensor] = {}
    at_halt: dict[str, torch.Tensor] = {}
    for name, thr in chosen.items():
        vals = torch.stack(
            [_rule_value(name, traj.states[t], traj.states[t + 1]) for t in range(max_steps)]
        )
        values[name] = vals
        below = vals < thr
        first = torch.where(below.any(dim=0), below.double().argmax(dim=0), torch.full((n,), -1))
        # the rule looks at the step from h_k to h_{k+1} and halts with h_{k+1}
        fired[name] = torch.where(first >= 0, first + 1, first).long()
        idx = torch.clamp(fired[name], min=0)
        d = dist[idx, torch.arange(n)]
        at_halt[name] = torch.where(fired[name] >= 0, d, torch.full_like(d, math.nan))
    return HaltingReport(
        rules=chosen,
        fired_at=fired,
        distance_at_halt=at_halt,
        values=values,
        distance=dist,
        h_star_converged=ok.cpu(),
    )
