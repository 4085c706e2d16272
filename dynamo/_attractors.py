"""Attractors per input: the distinct stable limits that iteration reaches from many starts of
one input, their basin shares, and (with a readout) which of them give the right answer.

A trained looped block with recall can be *multistable per input* (SCIENCE.md §8): from ``h0 = x``
it reaches one limit, from other starts of the same input other, equally stable, limits, and
only some of them decode to the right answer. Iterating from ``h0 = x`` alone does not see them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._axes import SystemSource, _as_system, _input_batch
from ._fixed_points import _clusters
from ._linearize import _top_eigenvalues
from ._results import Outcome, Trust, _finite_or_none
from ._solvers import default_tolerance, solve
from ._system import LoopedSystem
from ._types import StartKind
from ._validate import (
    call_form,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_solvable_dtype,
)
from .errors import InvalidArgumentError, ShapeError

__all__ = ["Attractors", "Limit", "attractors"]

#: Largest state dimension at which ρ(∂f/∂h) comes from the dense Jacobian's full spectrum (the
#: default of :func:`dynamo.geometry` and :func:`dynamo.find_fixed_points`); Arnoldi above.
_DENSE_LIMIT = 512

#: Eigenvalues Arnoldi computes above the dense limit (ρ is the largest modulus among them).
_K_EIGENVALUES = 6

#: Limits whose spectra are computed at once (at most this many dense Jacobians in memory).
_CHUNK = 64

Readout = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Limit:
    """One distinct limit that iteration reached from some starts of one input.

    Attributes
    ----------
    input : int
        Index of the input (row of ``inputs``).
    state : torch.Tensor
        ``(*state_shape)``: the limit (the converged start of least residual among those that
        reached it).
    count : int
        Converged starts of this input that reached it.
    n_starts : int
        Starts of this input (converged or not).
    first : bool
        Whether the input's first start (``h0 = x`` when the state has the input's shape)
        reached it.
    spectral_radius : float
        ``ρ(∂f/∂h)`` at ``state``.
    stable : bool
        ``spectral_radius < 1``: a floating-point test at this computed point (Ostrowski), so
        its trust is CHECKED (``stable_trust``): true of this point, not a proof.
    residual : float
        ``‖f(h) − h‖₂`` at ``state``.
    accuracy : float or None
        With a readout: the token accuracy of ``argmax(readout(state))`` against the input's
        targets (over the masked positions); None without one.
    correct : bool or None
        With a readout: every (masked) token right; None without one.

    Examples
    --------
    :func:`attractors` returns them per input, largest basin first:

    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
    >>> res = dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64), n_starts=8)
    >>> top = res.limits[0][0]
    >>> round(float(top.state[0]), 6), top.stable, round(top.spectral_radius, 6)
    (1.0, True, 0.6)
    """

    input: int
    state: torch.Tensor
    count: int
    n_starts: int
    first: bool
    spectral_radius: float
    stable: bool
    residual: float
    accuracy: float | None = None
    correct: bool | None = None
    stable_trust: Trust = field(default=Trust.CHECKED, init=False)

    @property
    def basin_share(self) -> float:
        """``count / n_starts``: the share of the input's starts that reached this limit.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> res = dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64), n_starts=4)
        >>> [lim.basin_share for lim in res.limits[0]]
        [0.75, 0.25]
        """
        return self.count / self.n_starts

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (without the state itself).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> res = dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64), n_starts=4)
        >>> d = res.limits[0][0].to_dict()
        >>> d["count"], d["basin_share"], d["first"], d["stable"], d["stable_trust"]
        (3, 0.75, True, True, 'checked')
        """
        return {
            "input": self.input,
            "count": self.count,
            "n_starts": self.n_starts,
            "basin_share": self.basin_share,
            "first": self.first,
            "spectral_radius": _finite_or_none(self.spectral_radius),
            "stable": self.stable,
            "stable_trust": self.stable_trust.value,
            "residual": _finite_or_none(self.residual),
            "accuracy": self.accuracy,
            "correct": self.correct,
        }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Attractors:
    """The distinct limits each input reaches from ``n_starts`` starts, with basin shares,
    stability and (with a readout) the answer each one gives.

    An estimate from ``n_starts`` samples of the start distribution per input: an attractor
    whose basin holds a share ``p`` of that distribution is missed with probability
    ``(1 − p)^n_starts``, so one with a share below ``1/n_starts`` may well not be seen, and
    no statement is made about unseen ones. Starts that did not converge (on a cycle, still
    moving at ``max_steps``, diverged, non-finite) reach no limit and are never counted as
    attractors; they are counted in ``not_converged``.

    Attributes
    ----------
    limits : tuple of tuple of Limit
        Per input, its distinct limits, the largest basin first (ties: the first start's limit,
        then the order of the starts).
    n_starts : int
        Starts per input (the first ``h0 = x`` when the state has the input's shape, else a
        ``N(0, noise²)`` draw; the others ``x + N(0, noise²)``, or ``N(0, noise²)``).
    noise, seed, max_steps, tol :
        The start noise, its seed, and the iteration's settings (``tol`` relative and absolute).
    dedup_tol : float
        Two converged starts of one input within this distance (single linkage) are one limit.
    not_converged : torch.Tensor
        ``(B,)`` per input: starts that did not converge.
    start_outcomes : dict
        ``{outcome label: starts}`` over every start (:class:`dynamo.Outcome` labels).
    exact : bool
        ρ from the dense Jacobian's full spectrum (True) or from Arnoldi (False).
    has_readout : bool
        Whether a readout and targets were given (the accuracies are None otherwise).
    dtype, device : str
    kind, trust :
        ``"estimate"`` and ESTIMATED: from sampled starts and iterated solves (each limit's
        ``stable`` is a float check there, CHECKED).

    Examples
    --------
    :func:`attractors` returns one:

    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
    >>> x = torch.tensor([[0.3], [-0.4]], dtype=torch.float64)
    >>> res = dy.attractors(system, x, n_starts=8)
    >>> res.n_limits.tolist(), res.n_stable.tolist(), res.multistable_fraction
    ([2, 2], [2, 2], 1.0)
    """

    limits: tuple[tuple[Limit, ...], ...]
    n_starts: int
    noise: float
    seed: int
    max_steps: int
    tol: float
    dedup_tol: float
    not_converged: torch.Tensor
    start_outcomes: dict[str, int]
    exact: bool
    has_readout: bool
    dtype: str
    device: str
    kind: str = field(default="estimate", init=False)
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

    @property
    def n_inputs(self) -> int:
        """Number of inputs."""
        return len(self.limits)

    @property
    def n_limits(self) -> torch.Tensor:
        """``(B,)``: distinct limits per input (stable or not).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64)).n_limits.tolist()
        [2]
        """
        return torch.tensor([len(lims) for lims in self.limits], dtype=torch.long)

    @property
    def n_stable(self) -> torch.Tensor:
        """``(B,)``: distinct stable limits (``ρ < 1``) per input: the attractors seen.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64)).n_stable.tolist()
        [2]
        """
        return torch.tensor(
            [sum(lim.stable for lim in lims) for lims in self.limits], dtype=torch.long
        )

    @property
    def multistable_fraction(self) -> float:
        """Share of the inputs with at least two distinct stable limits.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> xs = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> dy.attractors(f, xs, n_starts=4).multistable_fraction  # a contraction: one each
        0.0
        """
        return float((self.n_stable >= 2).double().mean())

    @property
    def max_per_input(self) -> int:
        """The most distinct stable limits (attractors) any input has.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> dy.attractors(system, torch.tensor([[0.1, -0.1]], dtype=torch.float64),
        ...               n_starts=32).max_per_input
        4
        """
        return int(self.n_stable.max())

    @property
    def mean_per_input(self) -> float:
        """Mean number of distinct stable limits (attractors) per input.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
        >>> xs = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> dy.attractors(f, xs, n_starts=4).mean_per_input
        1.0
        """
        return float(self.n_stable.double().mean())

    def _scores(self) -> dict[str, float | None]:
        """The four accuracies (None without a readout, or with nothing to average)."""
        if not self.has_readout:
            return dict.fromkeys(("first", "majority", "minority", "basin_weighted"))
        first, major, minor, weighted = [], [], [], []
        for lims in self.limits:
            if not lims:
                continue
            accs = [float(lim.accuracy or 0.0) for lim in lims]
            first += [a for a, lim in zip(accs, lims, strict=True) if lim.first]
            major.append(accs[0])
            minor += accs[1:]
            total = sum(lim.count for lim in lims)
            weighted.append(sum(a * lim.count for a, lim in zip(accs, lims, strict=True)) / total)
        return {
            "first": _mean(first),
            "majority": _mean(major),
            "minority": _mean(minor),
            "basin_weighted": _mean(weighted),
        }

    @property
    def accuracy_first(self) -> float | None:
        """Token accuracy at the limit reached from each input's first start (``h0 = x``),
        averaged over the inputs whose first start converged; None without a readout or
        without such an input.

        Examples
        --------
        See :func:`attractors`.

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64)).accuracy_first
        """
        return self._scores()["first"]

    @property
    def accuracy_majority(self) -> float | None:
        """Token accuracy at each input's largest-basin limit, averaged over the inputs with a
        limit; None without a readout.

        Examples
        --------
        See :func:`attractors`.

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64)).accuracy_majority
        """
        return self._scores()["majority"]

    @property
    def accuracy_minority(self) -> float | None:
        """Mean token accuracy over every limit that is not its input's largest basin; None
        without a readout or when no input has a second limit.

        Examples
        --------
        See :func:`attractors`.

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64)).accuracy_minority
        """
        return self._scores()["minority"]

    @property
    def accuracy_basin_weighted(self) -> float | None:
        """Per input, the accuracy of its limits weighted by their converged starts (the
        accuracy of a random converged start), averaged over the inputs with a limit; None
        without a readout.

        Examples
        --------
        See :func:`attractors`.

        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> res = dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64))
        >>> res.accuracy_basin_weighted is None
        True
        """
        return self._scores()["basin_weighted"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (the limits' states are left out).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
        >>> d = dy.attractors(system, torch.tensor([[0.3]], dtype=torch.float64)).to_dict()
        >>> d["kind"], d["n_limits"], d["multistable_fraction"], len(d["limits"][0])
        ('estimate', [2], 1.0, 2)
        """
        scores = self._scores()
        return {
            "kind": self.kind,
            "trust": self.trust.value,
            "n_inputs": self.n_inputs,
            "n_starts": self.n_starts,
            "noise": self.noise,
            "seed": self.seed,
            "max_steps": self.max_steps,
            "tol": self.tol,
            "dedup_tol": self.dedup_tol,
            "exact_spectra": self.exact,
            "dtype": self.dtype,
            "device": self.device,
            "n_limits": self.n_limits.tolist(),
            "n_stable": self.n_stable.tolist(),
            "not_converged": self.not_converged.tolist(),
            "start_outcomes": dict(self.start_outcomes),
            "multistable_fraction": self.multistable_fraction,
            "max_per_input": self.max_per_input,
            "mean_per_input": self.mean_per_input,
            "accuracy_first": scores["first"],
            "accuracy_majority": scores["majority"],
            "accuracy_minority": scores["minority"],
            "accuracy_basin_weighted": scores["basin_weighted"],
            "limits": [[lim.to_dict() for lim in lims] for lims in self.limits],
        }

    def __str__(self) -> str:
        b, per = self.n_inputs, self.n_starts
        stable = self.n_stable.tolist()
        shown = ", ".join(str(v) for v in stable[:12]) + (", …" if b > 12 else "")
        text = (
            f"attractors: {b} input(s) × {per} start(s); stable limits per input {shown} "
            f"(max {self.max_per_input}); multistable {100 * self.multistable_fraction:.0f}% "
            f"of inputs; {int(self.not_converged.sum())} of {b * per} starts did not converge"
        )
        if self.has_readout:
            s = self._scores()

            def pct(v: float | None) -> str:
                return "n/a" if v is None else f"{100 * v:.1f}%"

            text += (
                f"; accuracy first {pct(s['first'])}, majority {pct(s['majority'])}, "
                f"minority {pct(s['minority'])}"
            )
        return text + f" (estimate from {per} starts per input)"

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class _Plan:
    """:func:`attractors`' arguments, checked."""

    system: LoopedSystem
    xs: torch.Tensor
    n_starts: int
    noise: float
    seed: int
    max_steps: int
    tol: float
    readout: Readout | None
    targets: torch.Tensor | None
    mask: torch.Tensor | None
    dedup_tol: float | None

    @property
    def same_shape(self) -> bool:
        """The state has the input's shape: the first start is ``h0 = x``."""
        return tuple(self.xs.shape[1:]) == self.system.state_shape


def _call(**shown: Any) -> str:
    """The call form of an error about the arguments ``shown`` (none: the bare call)."""
    return call_form("attractors", ["system", "inputs"], **shown)


def _optional_float(name: str, value: Any, **bounds: Any) -> float | None:
    """``None``, or a finite positive float (within ``bounds``)."""
    if value is None:
        return None
    return check_positive_float(_call(**{name: value}), name, value, **bounds)


def _check_targets(
    call: str, b: int, readout: Any, targets: Any, mask: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``targets`` as a long ``(B, T)`` tensor and ``mask`` as bool ``(B, T)`` (None: all)."""
    if readout is None:
        if targets is not None or mask is not None:
            raise InvalidArgumentError(
                f"{call}: targets and mask are read only with a readout; pass readout= (a "
                "function from states (k, *state_shape) to logits (k, T, C)) or drop them"
            )
        return None, None
    if not callable(readout):
        raise InvalidArgumentError(
            f"{call}: readout must be callable (states (k, *state_shape) -> logits (k, T, C)), "
            f"got {type(readout).__name__}"
        )
    if targets is None:
        raise InvalidArgumentError(
            f"{call}: a readout needs targets, an int64 tensor (B, T) of the right token per "
            "input and position"
        )
    if (
        not isinstance(targets, torch.Tensor)
        or targets.dtype in (torch.bool,)
        or (targets.is_floating_point() or targets.is_complex())
    ):
        got = targets.dtype if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise InvalidArgumentError(f"{call}: targets must be an int64 tensor (B, T), got {got}")
    if targets.ndim != 2 or targets.shape[0] != b:
        raise ShapeError(
            f"{call}: targets has shape {tuple(targets.shape)}; it needs ({b}, T), one row of "
            "token ids per input"
        )
    if mask is None:
        return targets.long().cpu(), None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InvalidArgumentError(f"{call}: mask must be a bool tensor (B, T), got {got}")
    if tuple(mask.shape) != tuple(targets.shape):
        raise ShapeError(
            f"{call}: mask has shape {tuple(mask.shape)} but targets has "
            f"{tuple(targets.shape)}; they must match"
        )
    empty = torch.nonzero(~mask.any(dim=1)).flatten()
    if empty.numel():
        raise InvalidArgumentError(
            f"{call}: mask selects no position of input(s) {empty[:5].tolist()}; every input "
            "needs at least one scored position"
        )
    return targets.long().cpu(), mask.cpu()


def _plan(
    source: SystemSource,
    inputs: Any,
    *,
    n_starts: Any,
    noise: Any,
    seed: Any,
    max_steps: Any,
    tol: Any,
    readout: Any,
    targets: Any,
    mask: Any,
    dedup_tol: Any,
) -> _Plan:
    """Check every argument (in a fixed order; the factory is called only once the others
    passed), then build the system and probe the readout on one start."""
    call = _call()
    xs = _input_batch(call, inputs)
    check_positive_int(_call(n_starts=n_starts), "n_starts", n_starts)
    check_positive_float(_call(noise=noise), "noise", noise)
    check_seed(_call(seed=seed), "seed", seed)
    check_positive_int(_call(max_steps=max_steps), "max_steps", max_steps)
    tol_v = _optional_float("tol", tol, upper=1.0, upper_inclusive=False)
    dedup_v = _optional_float("dedup_tol", dedup_tol)
    tg, mk = _check_targets(call, int(xs.shape[0]), readout, targets, mask)
    try:
        system = _as_system(call, source, xs)
    except ShapeError as err:  # the system's own complaint about the inputs, under this call
        if str(err).startswith(call):
            raise
        raise ShapeError(f"{call}: {err}") from err
    check_solvable_dtype(call, "the system", system.dtype)
    plan = _Plan(
        system=system,
        xs=xs.to(system.dtype),
        n_starts=n_starts,
        noise=float(noise),
        seed=seed,
        max_steps=max_steps,
        tol=default_tolerance(system.dtype) if tol_v is None else tol_v,
        readout=readout,
        targets=tg,
        mask=mk,
        dedup_tol=dedup_v,
    )
    if readout is not None:
        _probe_readout(call, plan)
    return plan


def _call_readout(call: str, plan: _Plan, states: torch.Tensor) -> torch.Tensor:
    """``readout(states)`` as ``(k, T, C)`` logits, or an error naming what it returned."""
    assert plan.readout is not None and plan.targets is not None
    try:
        with torch.no_grad():
            out = plan.readout(states)
    except Exception as err:  # the user's readout failed: say where, keep the cause
        raise InvalidArgumentError(
            f"{call}: readout raised {type(err).__name__} on states of shape "
            f"{tuple(states.shape)}: {err}"
        ) from err
    k, t = int(states.shape[0]), int(plan.targets.shape[1])
    if not isinstance(out, torch.Tensor) or out.ndim != 3 or tuple(out.shape[:2]) != (k, t):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(
            f"{call}: readout returned {got} for {k} state(s); it must return logits "
            f"({k}, {t}, C), T = {t} positions as in targets"
        )
    return out


def _probe_readout(call: str, plan: _Plan) -> None:
    """One readout call on the first input's first start, before any iteration."""
    x0 = plan.xs[:1]
    if plan.same_shape:
        h = x0.clone()
    else:
        h = torch.zeros(1, *plan.system.state_shape, dtype=plan.system.dtype)
    _call_readout(call, plan, h.to(plan.system.device))


def _starts(plan: _Plan, base: LoopedSystem) -> torch.Tensor:
    """``(B · n_starts, *state_shape)``, input by input: the system's ``"input"`` starts when the
    state has the input's shape (``h0 = x``, then ``x + N(0, noise²)``), else its default
    ``N(0, noise²)`` draws."""
    kind: StartKind = "input" if plan.same_shape else "normal"
    return base.initial_states(kind, plan.n_starts, scale=plan.noise, seed=plan.seed)


@dataclass(frozen=True)
class _Clustered:
    """The converged starts' limits grouped per input: per cluster its input, members (start
    indices within the input), representative (flat row index) and the dedup radius used."""

    inputs: list[int]
    members: list[list[int]]
    reps: list[int]
    radius: float


def _cluster(plan: _Plan, flat: torch.Tensor, conv: torch.Tensor, res: torch.Tensor) -> _Clustered:
    """Single-linkage clusters (the helper :func:`dynamo.find_fixed_points` uses) of the
    converged limits of each input within the dedup radius: ``dedup_tol``, else ``1e3 · tol``
    times the largest converged limit's norm (at least 1), as :func:`find_fixed_points` and
    :func:`input_dependence` do: the iteration stops within about ``tol`` of a point."""
    per = plan.n_starts
    rows = torch.nonzero(conv).flatten()
    pts = flat[rows].double().cpu().numpy()
    scale = max(1.0, float(np.linalg.norm(pts, axis=1).max())) if len(pts) else 1.0
    radius = plan.dedup_tol if plan.dedup_tol is not None else 1e3 * plan.tol * scale
    if not len(pts):
        return _Clustered([], [], [], float(radius))
    groups = (rows // per).numpy()
    comps = _clusters(pts, groups, radius)
    res_list = res.tolist()
    inputs, members, reps = [], [], []
    for comp in comps:
        flat_rows = [int(rows[i]) for i in comp]
        inputs.append(flat_rows[0] // per)
        members.append(sorted(r % per for r in flat_rows))
        reps.append(min(flat_rows, key=res_list.__getitem__))
    return _Clustered(inputs, members, reps, float(radius))


def _spectral_radii(
    plan: _Plan, base: LoopedSystem, states: torch.Tensor, inputs: list[int]
) -> torch.Tensor:
    """ρ(∂f/∂h) at each limit, with its own input: the full dense spectrum up to
    :data:`_DENSE_LIMIT` state entries, Arnoldi above (dense where it does not converge), the
    switch :func:`dynamo.geometry` and :func:`dynamo.find_fixed_points` use."""
    if states.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    out = []
    for lo in range(0, int(states.shape[0]), _CHUNK):  # bounds the dense Jacobians' memory
        rows = torch.tensor(inputs[lo : lo + _CHUNK], dtype=torch.long)
        sub = base.with_input(plan.xs[rows.to(plan.xs.device)]) if base.driven else base
        values, _, _ = _top_eigenvalues(
            sub,
            states[lo : lo + _CHUNK],
            k=_K_EIGENVALUES,
            dense_limit=_DENSE_LIMIT,
            seed=plan.seed,
            dense_fallback=True,
        )
        out.append(values.abs().amax(dim=1).detach().double().cpu())
    return torch.cat(out)


def _accuracies(
    call: str, plan: _Plan, states: torch.Tensor, inputs: list[int]
) -> list[float | None]:
    """Token accuracy of ``argmax(readout(state))`` against each limit's input's targets."""
    if plan.readout is None or states.shape[0] == 0:
        return [None] * int(states.shape[0])
    assert plan.targets is not None
    pred = _call_readout(call, plan, states).argmax(dim=-1).cpu()
    idx = torch.tensor(inputs, dtype=torch.long)
    right = pred == plan.targets[idx]
    if plan.mask is None:
        return right.double().mean(dim=1).tolist()
    m = plan.mask[idx]
    return ((right & m).sum(dim=1).double() / m.sum(dim=1).double()).tolist()


def attractors(
    system: SystemSource,
    inputs: torch.Tensor | list[torch.Tensor],
    *,
    n_starts: int = 16,
    noise: float = 1.0,
    seed: int = 0,
    max_steps: int = 1000,
    tol: float | None = None,
    readout: Readout | None = None,
    targets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    dedup_tol: float | None = None,
) -> Attractors:
    """The distinct limits each input reaches from many starts: basin shares, stability, and
    which of them give the right answer.

    For each input ``x_b`` the system iterates (plain Picard, every start of every input in one
    batch) from ``n_starts`` starts: the first is ``h0 = x_b`` when the state has the input's
    shape (the system's ``"input"`` start; otherwise its default ``N(0, noise²)`` draw), the
    others ``x_b + N(0, noise²)`` (or ``N(0, noise²)``), as
    :meth:`LoopedSystem.initial_states` draws them. The converged limits of each input are
    merged when within ``dedup_tol`` of each other (single linkage, as in
    :func:`find_fixed_points`). For each distinct limit: its basin share (converged starts
    that reached it over ``n_starts``), whether the first start reached it, ``ρ(∂f/∂h)`` there
    (dense spectrum for small states, Arnoldi above) and ``stable = ρ < 1``.

    With a ``readout`` (states ``(k, *state_shape)`` → logits ``(k, T, C)``) and ``targets``
    ``(B, T)``: the token accuracy of ``argmax(readout(limit))`` at each limit (over the
    positions ``mask`` selects), and the accuracy at the first start's limit, at each input's
    largest basin (majority), at the others (minority) and weighted by basin.

    What is guaranteed: each limit is a point where ``‖f(h) − h‖ <= tol · (1 + ‖h‖)`` (a
    converged Picard iterate); ``stable`` is a floating-point test of ``ρ < 1`` at that
    point (CHECKED there, not proven); the counts and shares are an **estimate** from
    ``n_starts`` samples per input: an attractor whose basin holds less than ``1/n_starts``
    of the start distribution may be missed, and none is claimed absent. Starts that end on a
    cycle, are still moving at ``max_steps`` or diverge reach no limit: they are counted in
    ``not_converged``, never as attractors.

    Parameters
    ----------
    system : LoopedSystem, nn.Module, or callable
        A system (its input is replaced by ``inputs``; for an autonomous one the inputs only
        place the starts), a module (wrapped with :meth:`LoopedSystem.from_module`), or a
        factory ``x -> LoopedSystem``, as for :func:`input_dependence`.
    inputs : torch.Tensor or list of tensors
        ``(B, *input_shape)``, ``B >= 1``.
    n_starts : int
        Starts per input, the first included.
    noise : float
        Standard deviation of the start noise.
    seed : int
        Seed of the start noise (the same seed gives the same starts, as
        :meth:`LoopedSystem.initial_states` does) and of Arnoldi.
    max_steps : int
        Iterations allowed per start.
    tol : float, optional
        Relative and absolute residual tolerance (default from the dtype,
        :func:`default_tolerance`).
    readout : callable, optional
        States ``(k, *state_shape)`` → logits ``(k, T, C)``; called once on a start before any
        iteration (to check its shape) and once on every limit, under ``torch.no_grad``.
    targets : torch.Tensor, optional
        ``(B, T)`` int64 token ids, needed with ``readout``.
    mask : torch.Tensor, optional
        ``(B, T)`` bool: the positions scored (default all); each input needs one.
    dedup_tol : float, optional
        Distance within which two limits of one input are one (default ``1e3 · tol`` times the
        largest limit's norm, at least 1).

    Returns
    -------
    Attractors

    Raises
    ------
    dynamo.errors.InvalidArgumentError, dynamo.errors.ShapeError
        Before any iteration, for a bad argument, a readout that fails or returns the wrong
        shape; the message starts with the call form.

    Examples
    --------
    ``h ↦ h + 0.2 (h − h³)`` per coordinate has four stable points ``(±1, ±1)`` (``ρ = 0.6``)
    and starts around the origin fall into all four:

    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> res = dy.attractors(system, torch.tensor([[0.1, -0.1]], dtype=torch.float64),
    ...                     n_starts=64, seed=1)
    >>> res.n_stable.tolist(), sorted(round(lim.spectral_radius, 6) for lim in res.limits[0])
    ([4], [0.6, 0.6, 0.6, 0.6])
    >>> [lim.first for lim in res.limits[0]].count(True)  # h0 = x reached one of them
    1

    A readout that reads the sign of the state as a token (the right answer: the input's own
    sign): the first start's limit is right, the other basin wrong.

    >>> one = dy.LoopedSystem.from_module(dy.models.Bistable(n=1))
    >>> x = torch.tensor([[0.3], [-0.3]], dtype=torch.float64)
    >>> def sign_logits(h):
    ...     return torch.stack([-h, h], dim=-1)  # (k, 1, 2): token 1 when h > 0
    >>> res = dy.attractors(one, x, n_starts=16, noise=0.5, readout=sign_logits,
    ...                     targets=torch.tensor([[1], [0]]))
    >>> res.accuracy_first, res.accuracy_minority
    (1.0, 0.0)
    """
    plan = _plan(
        system,
        inputs,
        n_starts=n_starts,
        noise=noise,
        seed=seed,
        max_steps=max_steps,
        tol=tol,
        readout=readout,
        targets=targets,
        mask=mask,
        dedup_tol=dedup_tol,
    )
    call = _call()
    sys_, b, per = plan.system, int(plan.xs.shape[0]), plan.n_starts
    base = sys_.with_input(plan.xs)
    h0 = _starts(plan, base)
    run_sys = base.repeat_input(per) if per > 1 else base
    sol = solve(
        run_sys,
        h0,
        method="picard",
        tol=plan.tol,
        atol=plan.tol,
        max_steps=plan.max_steps,
        throw=False,
    )
    conv = sol.converged.cpu()
    states = sol.state.detach()
    clustered = _cluster(plan, sys_.flatten(states), conv, sol.residual.detach().cpu())
    rep_rows = torch.tensor(clustered.reps, dtype=torch.long)
    rep_states = states[rep_rows.to(states.device)]
    rho = _spectral_radii(plan, base, rep_states, clustered.inputs)
    accs = _accuracies(call, plan, rep_states, clustered.inputs)
    res_rep = sol.residual.detach().cpu()[rep_rows].tolist() if len(clustered.reps) else []
    per_input: list[list[Limit]] = [[] for _ in range(b)]
    for j, (inp, mem) in enumerate(zip(clustered.inputs, clustered.members, strict=True)):
        acc = accs[j]
        per_input[inp].append(
            Limit(
                input=inp,
                state=rep_states[j],
                count=len(mem),
                n_starts=per,
                first=mem[0] == 0,
                spectral_radius=float(rho[j]),
                stable=bool(float(rho[j]) < 1.0),
                residual=float(res_rep[j]),
                accuracy=acc,
                correct=None if acc is None else bool(acc == 1.0),
            )
        )
    # largest basin first; a tie goes to the first start's limit, then to the earlier starts
    ordered = tuple(
        tuple(sorted(lims, key=lambda lim: (-lim.count, not lim.first))) for lims in per_input
    )
    not_conv = (~conv).reshape(b, per).sum(dim=1)
    counts = {o.label: 0 for o in Outcome}
    for o in sol.outcomes:
        counts[o.label] += 1
    return Attractors(
        limits=ordered,
        n_starts=per,
        noise=plan.noise,
        seed=plan.seed,
        max_steps=plan.max_steps,
        tol=plan.tol,
        dedup_tol=clustered.radius,
        not_converged=not_conv,
        start_outcomes=counts,
        exact=sys_.state_dim <= _DENSE_LIMIT,
        has_readout=plan.readout is not None,
        dtype=str(sys_.dtype).replace("torch.", ""),
        device=str(sys_.device),
    )
