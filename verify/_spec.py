"""The certification spec: a TOML file validated by pydantic, with a published JSON Schema."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from dynamo.errors import InvalidArgumentError
from dynamo.kernel import MAX_SEED as _MAX_SEED
from dynamo.kernel import check_seed as check_seed

from ._metrics import METRICS, VERDICT_VALUES
from ._metrics import metric as _metric
from ._schema import _summary_only

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "METRICS",
    "VERDICT_VALUES",
    "Analysis",
    "Architecture",
    "Draws",
    "Inputs",
    "Requirement",
    "Spec",
    "SpecError",
    "default_spec",
    "load_spec",
    "parse_requirement",
    "spec_schema",
    "validate",
]


class SpecError(InvalidArgumentError):
    """A spec that cannot be used: the message names the key and what to do.

    >>> import verify
    >>> try:
    ...     verify._spec.validate({"draws": {"count": 0}})
    ... except verify.SpecError as err:
    ...     print(err)
    spec: invalid spec:
      draws.count: Input should be greater than or equal to 1 (got 0)
    """


#: Upper limit on counts and sizes: beyond it a spec is a typo, not a plan.
_MAX_COUNT = 1_000_000
#: Seeds are torch generator seeds: non-negative and within a signed 64-bit integer.

_OPS = ("<=", ">=", "==", "!=", "<", ">")
#: Unicode bidirectional controls (embeddings, overrides, isolates, marks): text that displays
#: in another order than it reads ("Trojan Source", CVE-2021-42574).
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


_REQ = re.compile(r"^\s*([a-z_]+\.[a-z_0-9]+)\s*(<=|>=|==|!=|<|>)\s*(.+?)\s*$")


class _Strict(BaseModel):
    # inf and nan are TOML floats; no key of a spec means anything with them
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        json_schema_extra=_summary_only,
    )


#: ``file.py:function`` (a path, relative to the spec) and ``package.module:function``.
_FILE = re.compile(r"^[^:\x00]+\.py:[A-Za-z_]\w*$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class _Origin:
    """Where a spec came from and what its factory loaded: the spec file, the factory's file and
    function. Carried along copies of the spec; not part of its value (two specs with the same
    keys are equal wherever they came from)."""

    def __init__(self) -> None:
        self.spec_file: Path | None = None
        self.factory_file: Path | None = None
        self.function: Callable[..., Any] | None = None
        self.factory: str | None = None  # the architecture.factory that function was loaded for

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Origin)

    __hash__ = None  # type: ignore[assignment]


_TRANSFORMER_ONLY = frozenset(
    {"n_heads", "n_layers", "d_ff", "recall", "norm", "norm_type", "pos", "causal", "recall_mode"}
    | {"norm_eps", "init_gain", "branch_gain"}
)


class Architecture(_Strict):
    """The block: the reference transformer's parameters, or a factory returning an
    ``nn.Module`` whose ``forward(h, x)`` is one loop step: ``file.py:function`` (a Python file,
    relative to the spec) or ``package.module:function`` (a module allowed on the command line
    with ``--allow-module``). A spec with a factory runs that code.

    >>> from verify import Architecture
    >>> Architecture(recall_mode="add").d_model, Architecture(factory="my_blocks.py:make").kind
    (64, 'factory')
    """

    kind: Literal["looped_transformer", "factory"] = "looped_transformer"
    d_model: int = Field(64, ge=1, le=65536)
    n_heads: int = Field(4, ge=1, le=4096)
    n_layers: int = Field(1, ge=1, le=1024)
    d_ff: int | None = Field(None, ge=1, le=1_048_576)
    recall: Literal["none", "outer", "internal"] = "outer"
    norm: Literal["none", "pre", "post", "sandwich", "outer"] = "outer"
    norm_type: Literal["rms", "layer"] = "rms"
    pos: Literal["rope", "none", "absolute"] = "rope"
    causal: bool = False
    recall_mode: Literal["concat", "add"] = "concat"
    norm_eps: float = Field(1e-6, gt=0)
    init_gain: float | None = Field(None, gt=0)
    branch_gain: float = Field(1.0, gt=0)
    vocab_size: int | None = Field(None, ge=1, le=10_000_000)
    n_outputs: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="classes the readout head gives per token (a task sets it to its own)",
    )
    factory: str | None = Field(
        None,
        description="'file.py:function' (a Python file, relative to the spec) or "
        "'package.module:function' (allowed with --allow-module); the spec runs that code",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)

    def changed(self) -> list[str]:
        """The keys set away from their defaults, in field order.

        Compared with the defaults rather than read from ``model_fields_set``: a spec re-validated
        from its own dump (as ``--seeds`` does) sets every field.

        >>> from verify import Architecture
        >>> Architecture(recall_mode="add", d_model=32).changed()
        ['d_model', 'recall_mode']
        """
        fields = type(self).model_fields
        return [
            k
            for k in fields
            if getattr(self, k) != fields[k].get_default(call_default_factory=True)
        ]

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        # ``factory = "m:f"`` alone means a factory block; never run the reference model instead
        if isinstance(data, dict) and data.get("factory") and "kind" not in data:
            return {**data, "kind": "factory"}
        return data

    @model_validator(mode="after")
    def _factory(self) -> Architecture:
        given = set(self.changed())
        if self.kind == "looped_transformer" and given & {"factory", "kwargs"}:
            keys = ", ".join(sorted(given & {"factory", "kwargs"}))
            raise ValueError(
                f"{keys} belong to kind = 'factory', but kind = 'looped_transformer'; drop them "
                "or set kind = 'factory'"
            )
        ignored = sorted(given & _TRANSFORMER_ONLY)
        if self.kind == "factory" and ignored:
            raise ValueError(
                f"{', '.join(ignored)} configure the reference transformer and would be ignored "
                "with kind = 'factory'; pass the factory's own arguments in kwargs = {...}"
            )
        if self.kind == "factory" and not self.factory:
            raise ValueError(
                "kind = 'factory' needs factory = 'file.py:function' (a Python file next to the "
                "spec) or 'package.module:function'"
            )
        if self.factory and not (_FILE.match(self.factory) or _MODULE.match(self.factory)):
            raise ValueError(
                f"factory {self.factory!r} must look like 'file.py:function' (a Python file, "
                "relative to the spec) or 'package.module:function'"
            )
        if self.kind == "looped_transformer" and self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        return self


class Inputs(_Strict):
    """Random inputs: encoded embeddings ``e ~ N(0, scale²)`` or random token ids.

    >>> from verify import Inputs
    >>> Inputs(count=4, seq_len=8).kind
    'embeddings'
    """

    kind: Literal["embeddings", "tokens", "task"] = Field(
        "embeddings",
        description="'embeddings': N(0, scale²); 'tokens': random token ids, embedded by the "
        "block; 'task': instances of the [task] at its difficulty, embedded by the block",
    )
    seq_len: int = Field(16, ge=1, le=_MAX_COUNT)
    count: int = Field(8, ge=1, le=_MAX_COUNT)
    scale: float = Field(
        1.0, gt=0, description="embeddings ~ N(0, scale²); token embeddings are multiplied by it"
    )
    seed: int = Field(0, ge=0, le=_MAX_SEED)


class Draws(_Strict):
    """Initialisation draws: ``count`` seeds from ``first_seed``, or an explicit list.

    >>> from verify import Draws
    >>> Draws(count=3, first_seed=5).resolved(), Draws(seeds=[7, 2]).resolved()
    ([5, 6, 7], [7, 2])
    """

    count: int = Field(1, ge=1, le=_MAX_COUNT)
    first_seed: int = Field(0, ge=0, le=_MAX_SEED)
    seeds: list[Annotated[int, Field(ge=0, le=_MAX_SEED)]] | None = Field(
        None, description="explicit seeds (distinct); then count, if given, must equal their number"
    )

    @model_validator(mode="after")
    def _one_way(self) -> Draws:
        if self.seeds is None:
            if self.first_seed + self.count - 1 > _MAX_SEED:
                raise ValueError(f"first_seed + count - 1 exceeds the largest seed, {_MAX_SEED}")
            return self
        if not self.seeds:
            raise ValueError("seeds = [] gives no draws: list at least one seed, or drop seeds")
        dup = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if dup:
            raise ValueError(
                f"seeds repeat {dup}: a repeated seed is the same draw, not more evidence"
            )
        if self.count != 1 and self.count != len(self.seeds):
            raise ValueError(
                f"count = {self.count} disagrees with the {len(self.seeds)} listed seeds; give one"
            )
        if self.first_seed != 0:
            raise ValueError("first_seed and seeds both given; give one")
        return self

    def resolved(self, count: int | None = None) -> list[int]:
        """The seeds in order; ``count`` overrides how many (from the first seed on).

        Examples
        --------
        >>> from verify import Draws
        >>> Draws(count=3, first_seed=10).resolved()
        [10, 11, 12]
        >>> Draws(seeds=[7, 3]).resolved(), Draws(seeds=[7, 3]).resolved(count=3)
        ([7, 3], [7, 8, 9])
        """
        if count is None:
            return (
                list(self.seeds)
                if self.seeds
                else list(range(self.first_seed, self.first_seed + self.count))
            )
        start = self.seeds[0] if self.seeds else self.first_seed
        return list(range(start, start + count))


class Domain(_Strict):
    """Token-norm ranges for certified bounds (see ``dynamo.Domain``).

    >>> from verify._spec import Domain
    >>> Domain(x_max=10.0).r_max is None
    True
    """

    r_min: float = Field(0.0, ge=0)
    r_max: float | None = Field(None, gt=0, description="omit for no upper limit")
    x_min: float = Field(0.0, ge=0)
    x_max: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Domain:
        for lo, hi in (("r_min", "r_max"), ("x_min", "x_max")):
            a, b = getattr(self, lo), getattr(self, hi)
            if b is not None and b < a:
                raise ValueError(f"{hi} = {b:g} is below {lo} = {a:g}")
        return self


class Analysis(_Strict):
    """Which analyses run and how.

    >>> from verify import Analysis
    >>> a = Analysis(contraction=True, max_steps=500)
    >>> a.reachability, a.contraction, a.dtype
    (True, True, 'float64')
    """

    dtype: Literal["float64", "float32"] = "float64"
    starts_per_input: int = Field(4, ge=1, le=_MAX_COUNT)
    start_noise: float = Field(1.0, gt=0)
    max_steps: int = Field(1000, ge=1, le=_MAX_COUNT)
    reachability: bool = True
    input_dependence: bool = True
    geometry: bool = True
    contraction: bool = False
    lipschitz: bool = False
    proofs: bool = Field(
        False,
        description="prove the fixed points reached from h0 = x (Krawczyk in arb ball "
        "arithmetic: existence, uniqueness within a radius, stability, a certified basin); "
        "about a second a point at 32 state entries, 20 s at 128",
    )
    all_metrics: bool = Field(
        False,
        description="also compute the costly metrics (input_dependence.sensitivity_norm, "
        "geometry.sigma_min: tens of seconds per draw at d_model 64) when no requirement names "
        "them",
    )
    domain: Domain | None = None


class TaskSection(_Strict):
    """The task a block is trained on and judged by (``dynamo.tasks``): its name, its
    parameters and the difficulty instances are drawn at.

    >>> from verify._spec import TaskSection
    >>> TaskSection(name="prefix_sums", difficulty=16).build().vocab_size
    2
    """

    name: str = Field(description="a dynamo.tasks name, e.g. 'prefix_sums', 'sudoku4'")
    difficulty: int | None = Field(
        None, ge=1, le=_MAX_COUNT, description="length, blanks, ...: the task's default if omitted"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the task's own parameters")
    eval_difficulties: list[Annotated[int, Field(ge=1, le=_MAX_COUNT)]] = Field(
        default_factory=list,
        description="harder difficulties at which dynamo train measures extrapolation",
    )
    eval_iters: int = Field(
        64, ge=1, le=_MAX_COUNT, description="largest iteration count of that measurement"
    )

    @model_validator(mode="after")
    def _known(self) -> TaskSection:
        self.build()
        return self

    def build(self) -> Any:
        """The ``dynamo.tasks`` task (its difficulty checked).

        >>> from verify._spec import TaskSection
        >>> TaskSection(name="sudoku4").build().name
        'sudoku4'
        """
        import dynamo.tasks

        try:
            task = dynamo.tasks.get(self.name, **self.params)
            task.seq_len(self.resolved_difficulty(task))
            for d in self.eval_difficulties:
                task.seq_len(d)
        except (dynamo.errors.InvalidArgumentError, TypeError) as err:
            raise ValueError(str(err)) from None
        return task

    def resolved_difficulty(self, task: Any = None) -> int:
        """The difficulty given, or the task's default.

        >>> from verify._spec import TaskSection
        >>> TaskSection(name="prefix_sums").resolved_difficulty()
        16
        """
        if self.difficulty is not None:
            return self.difficulty
        return int((task or self.build()).default_difficulty)


class Training(_Strict):
    """How ``dynamo train`` trains each draw (see :func:`dynamo.train_looped`).

    >>> from verify._spec import Training
    >>> Training().iters, Training().progressive
    ([4, 16], 0.5)
    """

    steps: int = Field(1500, ge=1, le=_MAX_COUNT)
    batch_size: int = Field(32, ge=1, le=_MAX_COUNT)
    lr: float = Field(2e-3, gt=0, le=10)
    weight_decay: float = Field(0.01, ge=0, lt=1)
    iters: list[Annotated[int, Field(ge=1, le=_MAX_COUNT)]] = Field(
        default_factory=lambda: [4, 16],
        min_length=2,
        max_length=2,
        description="[low, high]: the iteration count of each batch is drawn in this range",
    )
    backprop: int | None = Field(
        None, ge=1, le=_MAX_COUNT, description="backpropagate through the last k iterations only"
    )
    progressive: float = Field(0.5, ge=0, le=1, description="weight of the progressive loss")
    warmup: int = Field(50, ge=0, le=_MAX_COUNT)
    grad_clip: float = Field(1.0, gt=0)
    eval_every: int = Field(100, ge=1, le=_MAX_COUNT)
    eval_size: int = Field(256, ge=1, le=_MAX_COUNT)
    save_every: int = Field(100, ge=1, le=_MAX_COUNT)

    @model_validator(mode="after")
    def _ordered(self) -> Training:
        if self.iters[0] > self.iters[1]:
            raise ValueError(f"iters = {self.iters}: low must not exceed high")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`dynamo.train_looped`.

        >>> from verify._spec import Training
        >>> Training(steps=10).kwargs()["steps"]
        10
        """
        return {**self.model_dump(), "iters": tuple(self.iters)}


class Requirement(_Strict):
    """``metric op value``, e.g. ``reachability.converged_fraction >= 0.99``; it passes when at
    least ``quorum`` of the draws satisfy it.

    >>> from verify import Requirement
    >>> Requirement(metric="geometry.spectral_radius", op="<", value=1.0).text()
    'geometry.spectral_radius < 1'
    """

    metric: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float | str
    quorum: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _known(self) -> Requirement:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; known metrics: {', '.join(METRICS)}")
        kind = METRICS[self.metric][0]
        if kind == "number" and not isinstance(self.value, (int, float)):
            raise ValueError(
                f"{self.metric} is a number; compare it with a number, not {self.value!r}"
            )
        if kind == "string":
            if not isinstance(self.value, str):
                raise ValueError(f"{self.metric} is a verdict; compare it with a quoted string")
            if self.op not in ("==", "!="):
                raise ValueError(f"{self.metric} is a verdict: use == or !=, not {self.op}")
            allowed = VERDICT_VALUES[self.metric]
            if self.value not in allowed:
                raise ValueError(
                    f"{self.metric} is never {self.value!r}; its values are "
                    + ", ".join(repr(v) for v in allowed)
                )
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError(f"{self.metric} compared with {self.value}: use a finite threshold")
        rng = _metric(self.metric).range
        if isinstance(self.value, (int, float)) and rng is not None:
            lo, hi = rng
            v = self.value
            never = {">": v >= hi, ">=": v > hi, "<": v <= lo, "<=": v < lo}.get(self.op, False)
            if not lo <= v <= hi or never:
                raise ValueError(
                    f"{self.metric} lies in [{lo:g}, {hi:g}]; {self.op} {v:g} is always or "
                    "never met"
                )
        return self

    def text(self) -> str:
        """The requirement as written, e.g. ``geometry.spectral_radius < 1``.

        >>> from verify import parse_requirement
        >>> parse_requirement("geometry.spectral_radius < 1", quorum=0.9).text()
        'geometry.spectral_radius < 1 (in >= 90% of draws)'
        """
        v = f"'{self.value}'" if isinstance(self.value, str) else f"{self.value:g}"
        q = "" if self.quorum == 1 else f" (in >= {100 * self.quorum:g}% of draws)"
        return f"{self.metric} {self.op} {v}{q}"

    def holds(self, observed: Any) -> bool:
        """Whether one draw's value satisfies it (a missing or NaN value never does).

        >>> from verify import parse_requirement
        >>> r = parse_requirement("geometry.spectral_radius < 1")
        >>> r.holds(0.9), r.holds(1.2), r.holds(None)
        (True, False, False)
        """
        if observed is None or (isinstance(observed, float) and math.isnan(observed)):
            return False
        a, b = observed, self.value
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[
            self.op
        ]


def parse_requirement(text: str, quorum: float = 1.0) -> Requirement:
    """Parse ``"metric op value"``.

    Parameters
    ----------
    text : str
        E.g. ``"geometry.spectral_radius < 1"`` or ``"input_dependence.verdict == 'strong'"``;
        ``op`` is one of ``< <= > >= == !=``, a verdict's value is quoted.
    quorum : float
        Share of draws that must satisfy it, in ``(0, 1]``.

    Returns
    -------
    Requirement

    Raises
    ------
    ValueError
        Naming what is wrong: the form, an unknown metric, a verdict value it never takes, a
        non-finite or out-of-range threshold.

    Examples
    --------
    >>> from verify import parse_requirement
    >>> parse_requirement("geometry.spectral_radius < 1").text()
    'geometry.spectral_radius < 1'
    >>> parse_requirement("input_dependence.verdict == 'strong'").value
    'strong'
    """
    m = _REQ.match(text)
    if not m:
        raise ValueError(
            f"requirement {text!r} must read 'metric op value' with op one of {', '.join(_OPS)}"
        )
    metric, op, raw = m.groups()
    value: float | str
    if raw[:1] in "'\"" and raw[-1:] == raw[:1] and len(raw) >= 2:
        value = raw[1:-1]
    else:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(
                f"requirement {text!r}: the value {raw!r} is neither a number nor a quoted string"
            ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"requirement {text!r} compares with {raw}: use a finite threshold")
    try:
        return Requirement(metric=metric, op=op, value=value, quorum=quorum)  # type: ignore[arg-type]
    except ValidationError as err:
        msgs = "; ".join(
            ("".join(f"{p}: " for p in e["loc"][:1])) + e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise ValueError(f"{text!r}: {msgs}") from None


def _requirements_schema(schema: dict[str, Any]) -> None:
    """A spec writes requirements as strings or ``{require, quorum}`` tables (the validated
    ``Requirement`` form is accepted too): the published schema says so."""
    ref = schema["items"]
    schema["items"] = {
        "anyOf": [
            {
                "type": "string",
                "pattern": _REQ.pattern,
                "description": "'metric op value', e.g. 'geometry.spectral_radius < 1'",
            },
            {
                "type": "object",
                "properties": {
                    "require": {"type": "string", "pattern": _REQ.pattern},
                    "quorum": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                },
                "required": ["require"],
                "additionalProperties": False,
            },
            ref,
        ]
    }
    schema["description"] = (
        "each 'metric op value' or { require = 'metric op value', quorum = share of draws }"
    )


class Spec(_Strict):
    """A certification spec (TOML). Every key is checked; unknown keys are errors.

    >>> from verify import Spec
    >>> spec = Spec(name="demo", requirements=["geometry.spectral_radius < 1"])
    >>> spec.architecture.recall, spec.draws.resolved(), spec.requirements[0].op
    ('outer', [0], '<')
    """

    schema_version: Literal[1] = 1
    name: str = Field("spec", min_length=1, max_length=200)
    architecture: Architecture = Field(default_factory=Architecture)  # type: ignore[arg-type]
    inputs: Inputs = Field(default_factory=Inputs)  # type: ignore[arg-type]
    draws: Draws = Field(default_factory=Draws)  # type: ignore[arg-type]
    analysis: Analysis = Field(default_factory=Analysis)  # type: ignore[arg-type]
    task: TaskSection | None = None
    training: Training | None = None
    checkpoint: str | list[str] | None = Field(
        None,
        description="safetensors checkpoint(s) of the architecture, relative to the spec: each "
        "is one draw (its trained weights) instead of an initialisation draw",
    )
    requirements: list[Requirement] = Field(
        default_factory=list, json_schema_extra=_requirements_schema
    )
    _origin: _Origin = PrivateAttr(default_factory=_Origin)

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(unicodedata.category(c) == "Cc" for c in value):
            raise ValueError(
                "control characters (tabs, newlines, \\u0001...) cannot appear in name"
            )
        bidi = sorted({f"U+{ord(c):04X}" for c in value if c in _BIDI_CONTROLS})
        if bidi:
            raise ValueError(
                f"bidirectional-text controls ({', '.join(bidi)}) cannot appear in name: they "
                "make every report that shows the name read differently from what it says"
            )
        return value

    @field_validator("requirements", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for i, item in enumerate(value):
            try:
                if isinstance(item, str):
                    out.append(parse_requirement(item))
                elif isinstance(item, dict) and "require" in item:
                    rest = {k: v for k, v in item.items() if k != "require"}
                    unknown = set(rest) - {"quorum"}
                    if unknown:
                        raise ValueError(f"unknown key(s) {sorted(unknown)} next to 'require'")
                    out.append(parse_requirement(item["require"], rest.get("quorum", 1.0)))
                else:
                    out.append(item)
            except ValueError as err:
                raise ValueError(f"requirement {i + 1}: {err}") from None
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        a = self.analysis
        for r in self.requirements:
            section = r.metric.split(".")[0]
            if section in (
                "reachability",
                "input_dependence",
                "geometry",
                "contraction",
            ) and not getattr(a, section):
                raise ValueError(f"requirement {r.text()!r} needs analysis.{section} = true")
            if section == "lipschitz" and not a.lipschitz:
                raise ValueError(f"requirement {r.text()!r} needs analysis.lipschitz = true")
            if section == "proofs" and not a.proofs:
                raise ValueError(f"requirement {r.text()!r} needs analysis.proofs = true")
        if a.lipschitz and a.domain is None:
            raise ValueError("analysis.lipschitz = true needs an analysis.domain")
        texts = [r.text() for r in self.requirements]
        dup = sorted({t for t in texts if texts.count(t) > 1})
        if dup:
            raise ValueError(f"requirement(s) given twice: {dup}")
        for r in self.requirements:
            if r.metric == "input_dependence.verdict" and self.inputs.count < 2:
                raise ValueError(
                    f"requirement {r.text()!r} needs inputs.count >= 2: one input cannot show "
                    "that the fixed point depends on it"
                )
        if self.inputs.kind == "tokens" and self.architecture.vocab_size is None:
            raise ValueError("inputs.kind = 'tokens' needs architecture.vocab_size")
        self._check_task()
        if isinstance(self.checkpoint, list) and not self.checkpoint:
            raise ValueError("checkpoint = [] names no checkpoint: list at least one, or drop it")
        return self

    def _check_task(self) -> None:
        """A task needs a block that embeds its tokens and reads out its classes; the
        reference transformer's sizes follow the task (set by ``_task_sizes``)."""
        uses = [r.text() for r in self.requirements if r.metric.startswith("task.")]
        if self.task is None:
            if self.inputs.kind == "task":
                raise ValueError("inputs.kind = 'task' needs a [task] section")
            if self.training is not None:
                raise ValueError("[training] needs a [task] section: the task to train on")
            if uses:
                raise ValueError(f"requirement {uses[0]!r} needs a [task] section")
            return
        if uses and self.inputs.kind != "task":
            raise ValueError(
                f"requirement {uses[0]!r} needs inputs.kind = 'task' (task instances with "
                "their answers)"
            )
        task = self.task.build()
        a = self.architecture
        if a.kind == "looped_transformer":
            for key, want in (("vocab_size", task.vocab_size), ("n_outputs", task.n_classes)):
                got = getattr(a, key)
                if got is not None and got != want:
                    raise ValueError(
                        f"architecture.{key} = {got} but task {task.name!r} needs {want}; drop "
                        f"architecture.{key} (the task sets it)"
                    )
        if self.inputs.kind == "task" and self.inputs.scale != 1:
            raise ValueError(
                "inputs.scale multiplies random embeddings; with inputs.kind = 'task' the inputs "
                "are the block's own embeddings of the task's tokens, as it was trained on "
                "them: drop inputs.scale"
            )
        if self.inputs.kind == "task":
            want = task.seq_len(self.task.resolved_difficulty(task))
            if self.inputs.seq_len != want:
                raise ValueError(
                    f"inputs.seq_len = {self.inputs.seq_len}, but task {task.name!r} at "
                    f"difficulty {self.task.resolved_difficulty(task)} has {want} tokens; drop "
                    "inputs.seq_len (the task sets it)"
                )

    @model_validator(mode="before")
    @classmethod
    def _task_sizes(cls, data: Any) -> Any:
        """With a [task], the reference transformer embeds the task's tokens and reads out its
        classes: ``architecture.vocab_size`` and ``n_outputs`` default to the task's."""
        if not isinstance(data, dict) or not isinstance(data.get("task"), (dict, TaskSection)):
            return data
        task = data["task"]
        arch = data.get("architecture", {})
        if isinstance(arch, Architecture):
            arch = arch.model_dump(exclude_unset=True)
        try:
            built = task.build() if isinstance(task, TaskSection) else TaskSection(**task).build()
        except Exception:  # reported where the task section is validated
            return data
        reference = isinstance(arch, dict) and not arch.get("factory")
        if reference and arch.get("kind", "looped_transformer") == "looped_transformer":
            sizes = {"vocab_size": built.vocab_size, "n_outputs": built.n_classes}
            data = {**data, "architecture": {**sizes, **arch}}
        inputs = data.get("inputs", {})
        if isinstance(inputs, Inputs):
            inputs = inputs.model_dump(exclude_unset=True)
        if isinstance(inputs, dict) and inputs.get("kind") == "task" and "seq_len" not in inputs:
            sec = task if isinstance(task, TaskSection) else TaskSection(**task)
            data["inputs"] = {**inputs, "seq_len": built.seq_len(sec.resolved_difficulty(built))}
        return data


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden":
            hint = "check its spelling against the spec reference"
            if len(e["loc"]) > 1 and e["loc"][-1] in Spec.model_fields:
                hint = (
                    f"'{e['loc'][-1]}' is a top-level key: in TOML, put it before the first "
                    "[section] header"
                )
            lines.append(f"{loc}: unknown key; {hint}")
        elif kind == "missing":
            lines.append(f"{loc}: required key is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            given = e.get("input")
            shown = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
            lines.append(f"{loc}: {msg}{shown}")
    return f"{source}: invalid spec:\n  " + "\n  ".join(lines)


def load_spec(path: str | os.PathLike[str], *, allow_modules: Iterable[str] = ()) -> Spec:
    """Read and validate a TOML spec; a bad one raises :class:`SpecError` naming every bad key.

    A ``factory`` is loaded here, so that a missing one is reported before any work starts. **A
    spec with a factory runs that code**: ``factory = "my_blocks.py:make"`` executes the Python
    file ``my_blocks.py`` (relative to the spec's folder), and ``factory = "pkg.blocks:make"``
    imports the module ``pkg.blocks``, which a spec may name only when ``allow_modules`` allows
    it (``--allow-module pkg`` on the command line). Nothing else is imported, and ``sys.path``
    is the same after loading as before.

    Parameters
    ----------
    path : str or pathlib.Path
        A TOML file.
    allow_modules : iterable of str
        Modules (and their submodules) a ``package.module:function`` factory may come from.

    Returns
    -------
    Spec

    Raises
    ------
    SpecError
        A missing file, a folder, bad TOML, every bad key with what to do, or a factory that
        cannot be loaded or is not allowed.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from verify import load_spec
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "spec.toml"
    >>> _ = path.write_text('requirements = ["geometry.spectral_radius < 1"]')
    >>> load_spec(path).requirements[0].text()
    'geometry.spectral_radius < 1'
    >>> _ = path.write_text('[architecture]\\nd_modle = 64')
    >>> load_spec(path)
    Traceback (most recent call last):
    ...
    verify._spec.SpecError: ...: invalid spec:
      architecture.d_modle: unknown key; check its spelling against the spec reference
    """
    call = f"load_spec({path!r})"
    if not isinstance(path, (str, os.PathLike)):
        raise SpecError(f"{call}: path must be a str or pathlib.Path naming a TOML spec file")
    p = Path(path)
    data = read_toml(p, "spec")
    spec = validate(data, str(p), base=p.resolve().parent, allow_modules=allow_modules)
    spec._origin.spec_file = p.resolve()
    return spec


def read_toml(p: Path, what: str) -> dict[str, Any]:
    """The TOML table in the file ``p`` (a ``what``: "spec", "sweep"), or a :class:`SpecError`
    that says what is wrong with the file.

    >>> from pathlib import Path
    >>> from verify._spec import read_toml
    >>> read_toml(Path("no-such.toml"), "sweep")
    Traceback (most recent call last):
    ...
    verify._spec.SpecError: no-such.toml: no such sweep file
    """
    if p.is_dir():
        raise SpecError(f"{p} is a folder; give the {what} file (a .toml) inside it")
    if not p.is_file():
        raise SpecError(f"{p}: no such {what} file")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{p}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{p}: not a text file (TOML is UTF-8 text)") from None


def validate(
    data: dict[str, Any],
    source: str = "spec",
    base: Path | None = None,
    *,
    allow_modules: Iterable[str] = (),
) -> Spec:
    """Validate a spec given as a dict (e.g. parsed TOML), loading its factory.

    Raises :class:`SpecError` naming every bad key. A factory file is looked up relative to
    ``base`` (default: the current directory).

    >>> from verify._spec import validate
    >>> validate({"draws": {"count": 3}}).draws.resolved()
    [0, 1, 2]
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec is a table of keys (a dict), not {type(data).__name__}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_describe(err, source)) from None
    resolve_factory(spec, source, base, allow_modules=allow_modules)
    return spec


def revalidate(spec: Spec, data: dict[str, Any], source: str) -> Spec:
    """``data`` (a changed dump of ``spec``, e.g. with command-line overrides) validated, keeping
    where ``spec`` came from and its loaded factory, so that nothing is loaded twice.

    >>> from verify._spec import default_spec, revalidate
    >>> data = default_spec().model_dump(mode="json")
    >>> data["draws"]["count"] = 2
    >>> revalidate(default_spec(), data, "demo").draws.resolved()
    [0, 1]
    """
    try:
        new = Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_describe(err, source)) from None
    if new.architecture != spec.architecture:
        raise SpecError(f"{source}: the architecture cannot change once its factory is loaded")
    new._origin = spec._origin
    return new


def input_files(spec: Spec) -> list[tuple[Path, str]]:
    """The files a run reads, each with what it is: the spec file, the factory's file, and any
    existing file named by a string in ``architecture.kwargs`` (e.g. a checkpoint; relative to the
    spec's folder, else the current directory).

    A report must never be written over one of them.

    >>> from verify._spec import default_spec, input_files
    >>> input_files(default_spec())
    []
    """
    o = spec._origin
    out: list[tuple[Path, str]] = []
    if o.spec_file is not None:
        out.append((o.spec_file, "the spec itself"))
    if o.factory_file is not None:
        out.append((o.factory_file, "the factory's file"))
    folder = o.spec_file.parent if o.spec_file is not None else Path.cwd()
    ckpts = [spec.checkpoint] if isinstance(spec.checkpoint, str) else spec.checkpoint or []
    for value in ckpts:
        path = Path(value) if Path(value).is_absolute() else folder / value
        if path.is_file():
            out.append((path.resolve(), f"a checkpoint: {value!r}"))
    for value in _strings(spec.architecture.kwargs):
        for candidate in (folder / value, Path(value)):
            try:
                if candidate.is_file():
                    out.append((candidate.resolve(), f"named in architecture.kwargs: {value!r}"))
                    break
            except (OSError, ValueError):  # not a path at all (too long, a NUL byte)
                break
    return out


def _strings(value: Any) -> list[str]:
    """Every string inside ``value`` (dicts and lists walked)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def resolve_factory(
    spec: Spec,
    source: str = "spec",
    base: Path | None = None,
    *,
    allow_modules: Iterable[str] = (),
) -> Any:
    """Load ``architecture.factory`` and return the function; every failure is a SpecError.

    ``"file.py:function"`` executes that Python file (relative to ``base``, the spec's folder;
    the current directory without one). While it runs, its folder is at the *end* of
    ``sys.path``, so that its own imports of modules next to it resolve but no installed package
    is shadowed; ``sys.path`` is restored afterwards. ``"package.module:function"`` imports the
    module, which must be in ``allow_modules`` (or a submodule of one). Nothing else is imported.
    The function is remembered with the spec (and its copies).
    """
    f = spec.architecture.factory
    if spec.architecture.kind != "factory" or not f:
        return None
    o = spec._origin
    if o.function is not None and o.factory == f:
        return o.function
    if o.factory is not None:  # a copy with another architecture: its own origin from here on
        fresh = _Origin()
        fresh.spec_file = o.spec_file
        spec._origin = o = fresh
    target, func_name = f.rsplit(":", 1)
    allowed = [str(m) for m in allow_modules]
    where = f"{source}: architecture.factory = {f!r}"
    saved = list(sys.path)
    try:
        if target.endswith(".py"):
            folder = base if base is not None else Path.cwd()
            file = Path(target) if Path(target).is_absolute() else folder / target
            file = file.resolve()
            if not file.is_file():
                raise SpecError(
                    f"{where}: no file {file} (a factory file is named relative to the spec's "
                    "folder)"
                )
            module = _exec_file(file, where)
            o.factory_file = file
        else:
            if not any(target == m or target.startswith(m + ".") for m in allowed):
                raise SpecError(_not_allowed(where, target, func_name, base))
            try:
                module = importlib.import_module(target)
            except ModuleNotFoundError as err:
                raise SpecError(
                    f"{where}: cannot import {target!r} ({err}); install it or add its folder "
                    "to PYTHONPATH"
                ) from None
            except SystemExit as err:
                raise SpecError(
                    f"{where}: importing {target!r} called sys.exit({err.code!r}); a factory "
                    "module must not exit"
                ) from None
            except Exception as err:
                raise SpecError(
                    f"{where}: importing {target!r} failed: {type(err).__name__}: {err}"
                ) from None
            file_of = getattr(module, "__file__", None)
            o.factory_file = Path(file_of).resolve() if file_of else None
    finally:
        sys.path[:] = saved
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise SpecError(f"{where}: {target!r} has no function {func_name!r}")
    o.function, o.factory = fn, f
    return fn


def _not_allowed(where: str, target: str, func_name: str, base: Path | None) -> str:
    """Why a ``module:function`` factory is refused, and what to write instead."""
    top = target.split(".")[0]
    folder = base if base is not None else Path.cwd()
    local = folder / (target.replace(".", "/") + ".py")
    if local.is_file():  # the form older specs used for a module next to the spec
        rel = target.replace(".", "/") + ".py"
        return (
            f"{where}: the module {target!r} is not allowed: a spec imports no module on its "
            f"own. For the file next to the spec write factory = '{rel}:{func_name}', or allow "
            f"the module with --allow-module {top} (allow_modules=['{top}'] in Python)"
        )
    return (
        f"{where}: the module {target!r} is not allowed. A spec's factory runs code, so it is a "
        f"Python file next to the spec (factory = 'file.py:function') or a module you allow "
        f"on the command line: --allow-module {top} (allow_modules=['{top}'] in Python)"
    )


def _exec_file(file: Path, where: str) -> ModuleType:
    """Execute a factory file as a module of its own (not registered under a name an installed
    package could have); its folder is last on ``sys.path`` while it runs (the caller restores
    ``sys.path``)."""
    digest = hashlib.sha256(str(file).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", file.stem)
    name = f"_dynamo_factory_{digest}_{stem}"
    loader_spec = importlib.util.spec_from_file_location(name, file)
    if loader_spec is None or loader_spec.loader is None:  # pragma: no cover - a .py file loads
        raise SpecError(f"{where}: {file} cannot be loaded as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.append(str(file.parent))
    sys.modules[name] = module  # classes defined in it pickle and introspect as usual
    try:
        loader_spec.loader.exec_module(module)
    except SystemExit as err:
        sys.modules.pop(name, None)
        raise SpecError(
            f"{where}: running {file.name} called sys.exit({err.code!r}); a factory file must "
            "not exit"
        ) from None
    except Exception as err:
        sys.modules.pop(name, None)
        raise SpecError(
            f"{where}: running {file.name} failed: {type(err).__name__}: {err}"
        ) from None
    return module


def default_spec() -> Spec:
    """The built-in default: the reference architecture ``dynamo certify`` checks without a spec.

    Eight initialisation draws (seeds 0-7), each on 4 random inputs of 8 tokens with 4 starts:
    one draw's verdict says little (passing 1/1 gives the 95% interval [0.03, 1.00]), eight give
    an interval worth reading in about half a minute on one CPU core (8/8 would give [0.63, 1]).

    >>> from verify import default_spec
    >>> spec = default_spec()
    >>> [r.text() for r in spec.requirements], spec.draws.resolved(), spec.inputs.seq_len
    (['reachability.converged_fraction >= 1'], [0, 1, 2, 3, 4, 5, 6, 7], 8)
    """
    return Spec(
        name="default architecture (built in)",
        requirements=[parse_requirement("reachability.converged_fraction >= 1")],
        inputs=Inputs(count=4, seq_len=8),  # type: ignore[call-arg]
        draws=Draws(count=8),  # type: ignore[call-arg]
        analysis=Analysis(geometry=True, input_dependence=True),  # type: ignore[call-arg]
    )


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of the spec (published in the docs).

    >>> from verify import spec_schema
    >>> spec_schema()["title"]
    'Spec'
    """
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
