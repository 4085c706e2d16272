"""Certificate metrics: one registry, each metric one object that knows its name, type, range,
values, trust and (for metrics registered from outside) how to compute it.

The built-in metrics are measured by :func:`verify.certify`'s analyses (reachability, input
dependence, geometry, contraction, the Lipschitz bound), several at once; a metric registered with
:func:`register_metric` carries its own ``compute``, called once per draw on a
:class:`DrawContext`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dynamo import Trust
from dynamo.errors import InvalidArgumentError

__all__ = [
    "METRICS",
    "VERDICT_VALUES",
    "DrawContext",
    "Metric",
    "metric",
    "register_metric",
    "unregister_metric",
]


@dataclass(frozen=True)
class DrawContext:
    """What a registered metric's ``compute`` sees of one initialisation draw.

    Attributes
    ----------
    system : dynamo.LoopedSystem
        The draw's looped block on the spec's inputs.
    x : torch.Tensor or None
        The inputs (None for an autonomous block).
    h0 : torch.Tensor
        The starts the reachability analysis iterates (``per`` starts for each input).
    seed : int
        The draw's initialisation seed.
    metrics : Mapping
        The built-in metrics measured on this draw so far (read-only).

    Examples
    --------
    :func:`verify.certify` builds one per draw for each registered metric's ``compute`` (the
    registry's tests run one through a whole certification); one by hand:

    >>> from verify import DrawContext
    >>> ctx = DrawContext(system=None, x=None, h0=None, seed=3,
    ...                   metrics={"reachability.converged": 6})
    >>> ctx.seed, ctx.metrics["reachability.converged"]
    (3, 6)
    """

    system: Any
    x: Any
    h0: Any
    seed: int
    metrics: Mapping[str, Any]


@dataclass(frozen=True)
class Metric:
    """One certificate metric.

    Parameters
    ----------
    name : str
        ``"family.quantity"`` in lower case, e.g. ``"geometry.spectral_radius"``.
    type : {"number", "string"}
        A number compared with ``<``, ``<=``, … or a verdict compared with ``==`` / ``!=``.
    description : str
        What it measures, per draw (shown in the spec reference and reports).
    trust : Trust or callable
        How far a value can be trusted (:class:`dynamo.Trust`): fixed, or a function of the
        value (a verdict that is PROVEN in one draw and SUPPORTED in another).
    values : tuple of str, optional
        A verdict's possible values (``type="string"`` only).
    range : (float, float), optional
        Where a number lies: a requirement that can never (or always) hold is refused.
    basis : dict, optional
        The words a report prints for each trust, e.g. ``{Trust.PROVEN: "certified bound"}``
        (default: ``"sampled estimate"`` for ESTIMATED, the trust's word otherwise).
    compute : callable, optional
        ``compute(ctx: DrawContext) -> float | str | None`` for a metric registered from
        outside; None for the built-in metrics, which the analyses measure.

    Examples
    --------
    >>> from dynamo import Trust
    >>> from verify import metric
    >>> m = metric("contraction.verdict")
    >>> m.type, m.trust_of("PROVEN").value, m.trust_of("SUPPORTED").value
    ('string', 'proven', 'estimated')
    >>> metric("lipschitz.upper_bound").basis_for(Trust.PROVEN)
    'certified bound'
    """

    name: str
    type: Literal["number", "string"]
    description: str
    trust: Trust | Callable[[Any], Trust] = Trust.ESTIMATED
    values: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None
    basis: Mapping[Trust, str] = field(default_factory=dict)
    compute: Callable[[DrawContext], Any] | None = None

    def __post_init__(self) -> None:
        call = f"Metric({self.name!r}, ...)"
        if not isinstance(self.name, str):
            raise InvalidArgumentError(f"{call}: name must be a string 'family.quantity'")
        if self.type not in ("number", "string"):
            raise InvalidArgumentError(
                f"{call}: type must be 'number' or 'string', got {self.type!r}"
            )
        if not isinstance(self.description, str):
            raise InvalidArgumentError(f"{call}: description must be a string")
        if isinstance(self.trust, str):  # "checked" as well as Trust.CHECKED
            try:
                object.__setattr__(self, "trust", Trust(self.trust))
            except ValueError:
                known = ", ".join(t.value for t in Trust)
                raise InvalidArgumentError(
                    f"{call}: trust must be one of {known} or a function of the value, got "
                    f"{self.trust!r}"
                ) from None
        elif not callable(self.trust):
            raise InvalidArgumentError(f"{call}: trust must be a Trust or a function of the value")
        if self.compute is not None and not callable(self.compute):
            raise InvalidArgumentError(f"{call}: compute must be a function of a DrawContext")
        if self.values is not None:
            ok = not isinstance(self.values, str) and all(isinstance(v, str) for v in self.values)
            if self.type != "string" or not ok or not self.values:
                raise InvalidArgumentError(
                    f"{call}: values lists a verdict's strings, e.g. ('yes', 'no'), for a "
                    "'string' metric only"
                )
            object.__setattr__(self, "values", tuple(self.values))
        if self.range is not None:
            lo_hi = tuple(self.range)
            numeric = len(lo_hi) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in lo_hi
            )
            if self.type != "number" or not numeric or not lo_hi[0] < lo_hi[1]:
                raise InvalidArgumentError(
                    f"{call}: range is (low, high) with low < high, for a 'number' metric only; "
                    f"got {self.range!r}"
                )
            object.__setattr__(self, "range", (float(lo_hi[0]), float(lo_hi[1])))

    def trust_of(self, value: Any) -> Trust:
        """The trust of one draw's value; ESTIMATED where there is no value (nothing was
        shown, so nothing is certified)."""
        if value is None:
            return Trust.ESTIMATED
        if isinstance(self.trust, Trust):
            return self.trust
        got = self.trust(value)
        try:
            return Trust(got)
        except ValueError:
            raise InvalidArgumentError(
                f"metric {self.name}: its trust function returned {got!r} for {value!r}; return "
                "a dynamo.Trust"
            ) from None

    def basis_for(self, trust: Trust) -> str:
        """What a report prints for values of this trust."""
        if trust in self.basis:
            return self.basis[trust]
        return "sampled estimate" if trust is Trust.ESTIMATED else trust.word


def _verdict_trust(value: Any) -> Trust:
    # PROVEN rests on a certified bound; REFUTED on a re-checkable witness
    return {"PROVEN": Trust.PROVEN, "REFUTED": Trust.CHECKED}.get(value, Trust.ESTIMATED)


def _local_trust(value: Any) -> Trust:
    # PROVEN: a rigorous proof (with a certified basin) at every fixed point found; otherwise a
    # float (Lyapunov, or ρ) test at each: checked
    if value == "PROVEN":
        return Trust.PROVEN
    return Trust.CHECKED if value in ("SUPPORTED", "REFUTED") else Trust.ESTIMATED


_ALL_CONVERGED = "n/a unless every input's iteration converged"

_BUILTIN = (
    Metric(
        "reachability.converged_fraction",
        "number",
        "share of starts whose iteration converged",
        range=(0.0, 1.0),
    ),
    Metric("reachability.converged", "number", "starts whose iteration converged"),
    Metric("reachability.starts", "number", "starts iterated (inputs × starts per input)"),
    Metric("reachability.diverged", "number", "starts whose iteration diverged"),
    Metric("reachability.nonfinite", "number", "starts whose iteration hit NaN or inf"),
    Metric(
        "reachability.path_independence",
        "number",
        "mean cosine of limits from different starts on one input (1: one limit per input); "
        "n/a unless every start converged",
        range=(-1.0, 1.0),
    ),
    Metric(
        "reachability.steps_median",
        "number",
        "median iterations to tolerance over all starts (an unconverged start counts as more "
        "than max_steps); n/a when half or more did not converge",
    ),
    Metric(
        "reachability.steps_max",
        "number",
        "largest iterations to tolerance; n/a unless every start converged",
    ),
    Metric(
        "input_dependence.verdict",
        "string",
        "'none', 'weak', 'partial', 'strong' or 'undetermined'",
        values=("none", "weak", "strong", "partial", "undetermined"),
    ),
    Metric(
        "input_dependence.n_distinct",
        "number",
        f"distinct fixed points across the inputs; {_ALL_CONVERGED}",
    ),
    Metric(
        "input_dependence.distance_ratio",
        "number",
        f"mean pairwise fixed-point distance over mean pairwise input distance; {_ALL_CONVERGED}",
    ),
    Metric("input_dependence.sensitivity_norm", "number", "largest ‖dh*/dx‖₂ over the inputs"),
    Metric(
        "input_dependence.multistable_fraction",
        "number",
        "share of inputs whose starts (analysis.starts_per_input of each) reach more than one "
        "distinct limit: several attractors for one input, whatever the verdict",
        range=(0.0, 1.0),
    ),
    Metric(
        "input_dependence.max_attractors",
        "number",
        "most distinct limits the starts of one input reach (a count from starts_per_input "
        "samples: attractors with small basins may be missed); n/a when some input had no "
        "converged start",
        range=(0.0, math.inf),
    ),
    Metric(
        "geometry.spectral_radius",
        "number",
        f"largest ρ(∂f/∂h) at the fixed points reached; {_ALL_CONVERGED}",
    ),
    Metric(
        "geometry.spectral_norm",
        "number",
        f"largest ‖∂f/∂h‖₂ at the fixed points reached; {_ALL_CONVERGED}",
    ),
    Metric(
        "geometry.sigma_min",
        "number",
        f"smallest σ_min(I − ∂f/∂h) at the fixed points reached; {_ALL_CONVERGED}",
    ),
    Metric(
        "contraction.verdict",
        "string",
        "'PROVEN', 'SUPPORTED', 'REFUTED' or 'UNDETERMINED'",
        trust=_verdict_trust,
        values=("PROVEN", "SUPPORTED", "REFUTED", "UNDETERMINED"),
        basis={
            Trust.PROVEN: "proof (PROVEN in every draw)",
            Trust.CHECKED: "checked witness (REFUTED) or proof (PROVEN) in every draw",
        },
    ),
    Metric(
        "contraction.local_verdict",
        "string",
        "the local verdict at the fixed points found: PROVEN when each is proven (Krawczyk) "
        "stable with a certified basin, else a float (Lyapunov) check, at most SUPPORTED",
        trust=_local_trust,
        values=("PROVEN", "SUPPORTED", "REFUTED", "UNDETERMINED"),
        basis={
            Trust.PROVEN: "proofs at the sampled fixed points (Krawczyk, certified basins)",
            Trust.CHECKED: "float check at the sampled fixed points (Lyapunov, or ρ < 1)",
        },
    ),
    Metric(
        "proofs.proven_fraction",
        "number",
        "share of the fixed points reached from h0 = x proven (Krawczyk, arb balls) to exist and "
        "be unique within a radius",
        trust=Trust.PROVEN,
        range=(0.0, 1.0),
        basis={Trust.PROVEN: "count of rigorous proofs"},
    ),
    Metric(
        "proofs.proof_radius_min",
        "number",
        "smallest radius (max norm) within which a fixed point reached is proven unique; n/a "
        "unless every one is proven",
        trust=Trust.PROVEN,
        basis={Trust.PROVEN: "rigorous proof"},
    ),
    Metric(
        "proofs.basin_radius_min",
        "number",
        "smallest certified basin radius (every start within it provably converges) over the "
        "fixed points reached; n/a unless every one is proven stable with a basin",
        trust=Trust.PROVEN,
        basis={Trust.PROVEN: "certified basin"},
    ),
    Metric(
        "lipschitz.upper_bound",
        "number",
        "certified Lipschitz upper bound on the spec's domain",
        trust=Trust.PROVEN,
        basis={Trust.PROVEN: "certified bound"},
    ),
    Metric(
        "task.accuracy",
        "number",
        "token accuracy of the readout at the point reached from h0 = x (after at most "
        "analysis.max_steps iterations, converged or not), over the task instances",
        range=(0.0, 1.0),
    ),
    Metric(
        "task.sequence_accuracy",
        "number",
        "share of task instances answered entirely right at the point reached from h0 = x",
        range=(0.0, 1.0),
    ),
)

_REGISTRY: dict[str, Metric] = {m.name: m for m in _BUILTIN}


class _View(Mapping[str, Any]):
    """A read-only view of the registry: what a table of metrics would hold, always current
    (nothing to keep in step when a metric is registered or removed)."""

    def __init__(self, pick: Callable[[Metric], Any | None]) -> None:
        self._pick = pick

    def _items(self) -> dict[str, Any]:
        out = {}
        for name, m in _REGISTRY.items():
            value = self._pick(m)
            if value is not None:
                out[name] = value
        return out

    def __getitem__(self, name: str) -> Any:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


#: Every metric a requirement may name: its type and what it measures (per draw); a view of
#: the registry.
METRICS: Mapping[str, tuple[str, str]] = _View(lambda m: (m.type, m.description))

#: The values a verdict metric can take (as reported in a certificate); a view of the registry.
VERDICT_VALUES: Mapping[str, tuple[str, ...]] = _View(lambda m: m.values)


def metric(name: str) -> Metric:
    """The registered metric called ``name``.

    Raises
    ------
    KeyError
        Naming the known metrics.

    Examples
    --------
    >>> from verify import metric
    >>> metric("reachability.converged_fraction").range
    (0.0, 1.0)
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"metric({name!r}): unknown metric; known metrics: {', '.join(_REGISTRY)}"
        ) from None


def register_metric(m: Metric, *, replace: bool = False) -> Metric:
    """Add a metric that specs may then name in requirements; its ``compute`` runs once per draw.

    Parameters
    ----------
    m : Metric
        With a ``compute`` function (the built-in names are measured by the analyses and cannot
        be replaced).
    replace : bool
        Allow replacing an earlier registration of the same name (not a built-in one).

    Returns
    -------
    Metric
        ``m``, so that it can be used as a decorator's result.

    Examples
    --------
    >>> import torch
    >>> from dynamo import Trust
    >>> from verify import DrawContext, Metric, register_metric, unregister_metric
    >>> def weight_norm(ctx: DrawContext) -> float:
    ...     '''the largest entry of the draw's parameters, in absolute value'''
    ...     return max(float(p.abs().max()) for p in ctx.system.module.parameters())
    >>> m = register_metric(Metric("custom.max_weight", "number", "largest |weight|",
    ...                            trust=Trust.CHECKED, compute=weight_norm), replace=True)
    >>> m.name, m.trust_of(0.5).value
    ('custom.max_weight', 'checked')
    >>> unregister_metric("custom.max_weight")
    """
    if not isinstance(m, Metric):
        raise TypeError(f"register_metric(m): m must be a verify.Metric, got {type(m).__name__}")
    parts = m.name.split(".")
    if len(parts) != 2 or not all(p and p.replace("_", "a").isalnum() for p in parts):
        raise InvalidArgumentError(
            f"register_metric(m): m.name={m.name!r} must read 'family.quantity' (letters, digits "
            "and underscores)"
        )
    if m.name != m.name.lower():
        raise InvalidArgumentError(f"register_metric(m): m.name={m.name!r} must be lower case")
    if m.compute is None:
        raise InvalidArgumentError(
            f"register_metric(m): {m.name} has no compute function; give compute=f, where "
            "f(ctx: DrawContext) returns the value for one draw"
        )
    if m.type not in ("number", "string"):
        raise InvalidArgumentError(
            f"register_metric(m): m.type={m.type!r} must be 'number' or 'string'"
        )
    if m.type == "string" and not m.values:
        raise InvalidArgumentError(
            f"register_metric(m): {m.name} is a verdict (type 'string'); list its values"
        )
    builtin = {b.name for b in _BUILTIN}
    if m.name in builtin:
        raise InvalidArgumentError(
            f"register_metric(m): {m.name} is a built-in metric; choose another name"
        )
    if m.name in _REGISTRY and not replace:
        raise InvalidArgumentError(
            f"register_metric(m): {m.name} is already registered; pass replace=True to replace it"
        )
    _REGISTRY[m.name] = m
    return m


def unregister_metric(name: str) -> None:
    """Remove a metric added by :func:`register_metric` (the built-in ones stay).

    >>> from verify import unregister_metric
    >>> unregister_metric("geometry.spectral_radius")
    Traceback (most recent call last):
    ...
    dynamo.errors.InvalidArgumentError: unregister_metric('geometry.spectral_radius'): ...
    """
    if name in {b.name for b in _BUILTIN}:
        raise InvalidArgumentError(
            f"unregister_metric({name!r}): a built-in metric cannot be removed"
        )
    metric(name)  # a KeyError naming the known metrics
    del _REGISTRY[name]


def registered() -> tuple[Metric, ...]:
    """Every metric, built-in ones first, in registration order."""
    return tuple(_REGISTRY.values())


def trust_of(name: str, values: list[Any] | None) -> Trust:
    """The weakest trust of ``name``'s values over the draws (its fixed trust without values)."""
    m = metric(name)
    if not values:
        return m.trust if isinstance(m.trust, Trust) else Trust.ESTIMATED
    return Trust.weakest(m.trust_of(v) for v in values)
