"""The certificate: one pydantic model, four renderers (JSON, Markdown, JUnit XML, HTML)."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dynamo import Trust

from ._metrics import metric as _metric
from ._metrics import registered as _registered
from ._metrics import trust_of as _trust_of
from ._schema import _summary_only

__all__ = [
    "BASIS",
    "Certificate",
    "DrawResult",
    "Environment",
    "RequirementResult",
    "Timestamp",
    "TrustLabel",
    "basis",
    "certificate_schema",
]

#: What each built-in metric's value rests on where that does not depend on the value (a
#: certified Lipschitz bound is sound on the spec's domain: derivation theory R1–R9); every other
#: metric is a sampled estimate unless its values say otherwise: see :func:`basis`.
BASIS: dict[str, str] = {
    m.name: m.basis_for(m.trust)
    for m in _registered()
    if isinstance(m.trust, Trust) and m.trust is not Trust.ESTIMATED
}

#: A trust as the certificate's JSON writes it (the values of :class:`dynamo.Trust`).
TrustLabel = Literal["proven", "checked", "estimated"]


#: Metrics plotted for an analysis (a certificate without requirements).
_HEADLINE = (
    "reachability.converged_fraction",
    "reachability.steps_median",
    "input_dependence.distance_ratio",
    "geometry.spectral_radius",
    "geometry.spectral_norm",
)


def basis(metric: str, values: list[Any] | None = None) -> str:
    """What a metric's values rest on, in words: ``"sampled estimate"`` unless they rest on a
    proof or a check (the weakest :class:`dynamo.Trust` of the values, see
    :meth:`verify.Metric.trust_of`).

    ``lipschitz.upper_bound`` is a certified bound. ``contraction.verdict`` is a proof when it
    reads PROVEN in every draw (a certified bound below 1), a checked witness or a proof when it
    reads REFUTED or PROVEN in every draw; ``contraction.local_verdict`` SUPPORTED or REFUTED in
    every draw is a float check (a discrete Lyapunov inequality, or ρ < 1) at each fixed point
    found, those points themselves found by sampling: a check at computed points, not a proof.
    Other values are sampled estimates.

    Parameters
    ----------
    metric : str
        A metric name (see ``verify.METRICS``).
    values : list, optional
        Its value in each draw; without them only value-independent bases are known.

    Returns
    -------
    str

    Examples
    --------
    >>> from verify import basis
    >>> basis("geometry.spectral_radius"), basis("lipschitz.upper_bound")
    ('sampled estimate', 'certified bound')
    >>> basis("contraction.verdict", ["PROVEN", "PROVEN"])
    'proof (PROVEN in every draw)'
    >>> basis("contraction.verdict", ["PROVEN", "SUPPORTED"])
    'sampled estimate'
    >>> basis("contraction.local_verdict", ["SUPPORTED", "SUPPORTED"])
    'float check at the sampled fixed points (Lyapunov, or ρ < 1)'
    """
    try:
        m = _metric(metric)
    except KeyError:  # a certificate written with a metric this process has not registered
        return "sampled estimate"
    return m.basis_for(_trust_of(metric, values))


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_inf_nan="null", json_schema_extra=_summary_only
    )


class Timestamp(_Frozen):
    """When a certification ran and for how long.

    >>> from verify import Timestamp
    >>> Timestamp(started="2026-11-22T09:00:00+00:00", elapsed_s=4.2).elapsed_s
    4.2
    """

    started: str = Field(description="UTC, ISO 8601")
    elapsed_s: float = Field(description="wall time in seconds")


class Environment(_Frozen):
    """Where and with what the certificate was made.

    >>> from verify import Certificate
    >>> env = Certificate.model_validate_json(_EXAMPLE).environment
    >>> env.device, env.dtype, env.seeds, env.reach_path
    ('cpu', 'float64', [0, 1], 'vmap')
    """

    dynamo: str
    torch: str
    python: str
    platform: str
    git_commit: str | None = Field(description="HEAD of the working directory's git repository")
    device: str
    dtype: str
    seeds: list[int] = Field(description="initialisation seeds, one per draw")
    input_seed: int
    reach_path: Literal["vmap", "stacked", "loop"] = Field(
        description="reachability for all draws at once, vmapped over stacked parameters "
        "('vmap', on an accelerator), or one draw after another in dynamo.solve's Picard loop "
        "('loop', the CPU's choice); 'stacked' appears in certificates made before that loop "
        "replaced verify's own per-draw stepping (the same iteration)"
    )
    reach_note: str | None = Field(
        None, description="why reachability ran one draw at a time, when all at once was possible"
    )
    git_dirty: bool | None = Field(
        None, description="the working tree had uncommitted changes (null: not a git repository)"
    )
    timestamp: Timestamp | None = Field(
        None,
        description="when and for how long it ran: the only part that differs between runs of "
        "the same spec; null for reproducible output",
    )


class DrawResult(_Frozen):
    """One initialisation draw: its seed and every metric measured on it (null: not available,
    e.g. no start converged so there is no fixed point to measure).

    >>> from verify import Certificate
    >>> draw = Certificate.model_validate_json(_EXAMPLE).draws[1]
    >>> draw.seed, draw.metrics["geometry.spectral_radius"]
    (1, 1.2)
    """

    seed: int
    checkpoint: str | None = Field(
        None,
        description="the safetensors file whose trained weights this draw is, if any (then "
        "seed is the initialisation seed its metadata names, or its position in the list of "
        "checkpoints when it names none)",
    )
    metrics: dict[str, float | int | str | None]
    notes: dict[str, str] = Field(
        default_factory=dict, description="metric -> why it is null, or what its verdict rests on"
    )
    trust: dict[str, TrustLabel] = Field(
        default_factory=dict,
        description="metric -> how far its value can be trusted (dynamo.Trust): 'proven' "
        "(rigorous, rounding included: only these are certified), 'checked' (a test on a "
        "computed instance) or 'estimated' (sampled)",
    )


class RequirementResult(_Frozen):
    """One requirement judged over the draws.

    >>> from verify import Certificate
    >>> r = Certificate.model_validate_json(_EXAMPLE).requirements[0]
    >>> r.passed, r.n_pass, r.interval
    (False, 1, (0.0126, 0.9874))
    """

    text: str = Field(description="the requirement as written")
    metric: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float | str
    quorum: float = Field(description="share of draws that must satisfy it")
    basis: str = Field(description="'sampled estimate', 'certified bound', ...")
    trust: TrustLabel = Field(
        default="estimated",
        description="the weakest trust of the values over the draws (dynamo.Trust): 'proven' "
        "only when every draw's value is",
    )
    values: list[float | int | str | None] = Field(description="the metric in each draw")
    passes: list[bool] = Field(description="whether each draw satisfies it")
    proportion: float = Field(description="share of draws that satisfy it")
    interval: tuple[float, float] = Field(
        description="exact (Clopper-Pearson) 95% interval of the share over the draw distribution"
    )
    passed: bool

    @property
    def n_pass(self) -> int:
        """Draws that satisfy the requirement."""
        return sum(self.passes)

    def summary(self) -> str:
        """One line: ``PASS|FAIL text: k/n draws (95% CI [lo, hi]) ...``.

        >>> from verify import Certificate
        >>> print(Certificate.model_validate_json(_EXAMPLE).requirements[0].summary())
        FAIL geometry.spectral_radius < 1: 1/2 draws (95% CI [0.01, 0.99]); values [0.8, 1.2]
        """
        n = len(self.passes)
        need = "" if self.quorum == 1 else f", needs {100 * self.quorum:g}%"
        word = "PASS" if self.passed else "FAIL"
        lo, hi = self.interval
        return (
            f"{word} {self.text}: {self.n_pass}/{n} draws (95% CI [{lo:.2f}, {hi:.2f}]{need}); "
            f"values {_values(self.values)}"
        )


class Certificate(_Frozen):
    """The result of :func:`verify.certify`: each requirement over the initialisation draws.

    Render it with :meth:`to_json`, :meth:`to_markdown`, :meth:`to_junit` or :meth:`to_html`;
    its JSON Schema is :func:`certificate_schema`. Every per-draw metric is a sampled estimate
    unless :func:`basis` says otherwise.

    >>> from verify import Certificate
    >>> cert = Certificate.model_validate_json(_EXAMPLE)
    >>> cert.passed, [r.text for r in cert.failed]
    (False, ['geometry.spectral_radius < 1'])
    """

    schema_version: Literal[1] = 1
    kind: Literal["dynamo.certificate"] = "dynamo.certificate"
    name: str
    passed: bool | None = Field(
        description="every requirement holds; null for an analysis (a spec without requirements)"
    )
    requirements: list[RequirementResult]
    draws: list[DrawResult]
    environment: Environment
    spec: dict[str, Any] = Field(description="the validated spec, every default filled in")

    @property
    def failed(self) -> list[RequirementResult]:
        """The requirements that do not hold."""
        return [r for r in self.requirements if not r.passed]

    def assert_passed(self) -> None:
        """Raise :class:`AssertionError` naming each failed requirement (for test suites).

        >>> from verify import Certificate
        >>> Certificate.model_validate_json(
        ...     _EXAMPLE).assert_passed()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        AssertionError: dynamo certificate 'example': 1 of 1 requirement(s) failed ...
        """
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        if self.passed is None:
            raise AssertionError(
                f"dynamo certificate {self.name!r}: the spec has no requirements, so nothing was "
                "certified; add requirements to it"
            )
        if self.passed:
            return
        n = len(self.requirements)
        lines = [
            f"dynamo certificate {self.name!r}: {len(self.failed)} of {n} requirement(s) failed "
            f"over {len(self.draws)} draw(s) (seeds {_seeds(self.environment.seeds)}):"
        ]
        lines += ["  " + r.summary() for r in self.failed]
        raise AssertionError("\n".join(lines))

    def __str__(self) -> str:
        n = len(self.requirements)
        if not n:
            return (
                f"dynamo analyze: {self.name}: {len(self.draws)} draw(s), "
                f"{len(self._metric_names())} metrics (no requirements)"
            )
        head = (
            f"dynamo certify: {self.name}: "
            + ("PASSED" if self.passed else "FAILED")
            + f" ({n - len(self.failed)}/{n} requirements hold over {len(self.draws)} draw(s))"
        )
        return "\n".join([head] + ["  " + r.summary() for r in self.requirements])

    # ------------------------------------------------------------------ renderers
    def to_json(self, indent: int | None = 2) -> str:
        """The certificate as JSON (NaN and infinities as null), ending with a newline.

        It validates against :func:`certificate_schema`, and reads back with
        ``Certificate.model_validate_json``.

        >>> import json
        >>> from verify import Certificate
        >>> cert = Certificate.model_validate_json(_EXAMPLE)
        >>> json.loads(cert.to_json())["requirements"][0]["text"]
        'geometry.spectral_radius < 1'
        """
        return self.model_dump_json(indent=indent) + "\n"

    def draws_phrase(self) -> str:
        """What the draws are, in words: initialisation draws with their seeds, or trained
        checkpoints with their files.

        >>> from verify import Certificate
        >>> Certificate.model_validate_json(_EXAMPLE).draws_phrase()
        '2 initialisation draw(s) (seeds 0, 1)'
        """
        files = [Path(d.checkpoint).name for d in self.draws if d.checkpoint]
        if files:
            return f"{len(self.draws)} trained checkpoint(s) ({', '.join(files)})"
        return f"{len(self.draws)} initialisation draw(s) (seeds {_seeds(self.environment.seeds)})"

    def to_markdown(self) -> str:
        """Markdown for a CI step summary: the verdict, a requirement table, per-draw metrics.

        >>> from verify import Certificate
        >>> print(Certificate.model_validate_json(_EXAMPLE).to_markdown().splitlines()[0])
        ## ❌ dynamo certify: example — FAILED
        """
        n = len(self.requirements)
        if n:
            mark = "✅" if self.passed else "❌"
            out = [
                f"## {mark} dynamo certify: {_md(self.name)} — "
                + ("PASSED" if self.passed else "FAILED"),
                "",
                f"{n - len(self.failed)}/{n} requirements hold over {self.draws_phrase()}.",
                "",
            ]
        else:
            out = [
                f"## dynamo analyze: {_md(self.name)}",
                "",
                f"{self.draws_phrase()}.",
                "",
            ]
        for r in self.failed:
            out.append(
                f"- **Failed:** `{r.text}` holds in {r.n_pass}/{len(r.passes)} draws "
                f"(values: {_values(r.values)})"
            )
        if self.failed:
            out.append("")
        if self.requirements:
            out += [
                "| | Requirement | Draws passing | 95% interval | Basis |",
                "|---|---|---|---|---|",
            ]
            for r in self.requirements:
                lo, hi = r.interval
                out.append(
                    f"| {'✅' if r.passed else '❌'} | `{r.text}` | {r.n_pass}/{len(r.passes)} "
                    f"({100 * r.proportion:.0f}%) | [{lo:.2f}, {hi:.2f}] | {r.basis} |"
                )
            out.append("")
        else:
            out += ["No requirements: an analysis, not a certification.", ""]
        header, rows = self._metric_rows()
        if rows:
            out += [
                "<details><summary>Metrics per draw (sampled estimates unless marked)</summary>",
                "",
            ]
            out.append("| " + " | ".join(header) + " |")
            out.append("|---" * len(header) + "|")
            out += ["| " + " | ".join([f"`{r[0]}`", *r[1:]]) + " |" for r in rows]
            out += ["", *self._note_lines(), "</details>", ""]
        e = self.environment
        commit = e.git_commit[:12] if e.git_commit else "n/a"
        out.append(
            f"<sub>dynamo {e.dynamo} · torch {e.torch} · Python {e.python} · {e.device} · "
            f"{e.dtype} · reachability path {e.reach_path} · commit {commit}"
            + (" (uncommitted changes)" if e.git_dirty else "")
            + (f" · {e.timestamp.started}" if e.timestamp else "")
            + "</sub>"
        )
        return "\n".join(out) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one test suite, one test case per requirement (a failure names it).

        Written and read with junitparser; CI systems show each requirement as a test.

        >>> from verify import Certificate
        >>> xml = Certificate.model_validate_json(_EXAMPLE).to_junit()
        >>> 'failures="1"' in xml and "requirement failed: geometry.spectral_radius" in xml
        True
        """
        from junitparser import Failure, JUnitXml, TestCase, TestSuite

        suite = TestSuite(f"dynamo certify: {self.name}")
        e = self.environment
        keys = ("dynamo", "torch", "python", "device", "dtype", "git_commit", "git_dirty")
        for key in (*keys, "reach_path"):
            value = getattr(e, key)
            if value is not None:
                suite.add_property(key, str(value))
        suite.add_property("seeds", ",".join(str(s) for s in e.seeds))
        for r in self.requirements:
            case = TestCase(r.text, classname=f"dynamo.certify.{_slug(self.name)}", time=0.0)
            if not r.passed:
                failure = Failure(f"requirement failed: {r.text}", "dynamo.RequirementFailed")
                failure.text = r.summary()
                case.result = [failure]
            suite.add_testcase(case)
        suite.update_statistics()
        xml = JUnitXml("dynamo certify")
        xml.add_testsuite(suite)
        xml.update_statistics()
        buf = io.BytesIO()
        xml.write(buf, pretty=True)
        return buf.getvalue().decode()

    def to_html(self, plots: bool = True) -> str:
        """A standalone HTML page: the Markdown's content plus plots embedded as PNG.

        Each numeric requirement gets a panel of its per-draw values against the threshold.
        Without matplotlib (``pip install looped-dynamo[plots]``) the page says so instead.

        >>> from verify import Certificate
        >>> page = Certificate.model_validate_json(_EXAMPLE).to_html(plots=False)
        >>> page.startswith("<!DOCTYPE html>") and "FAILED" in page
        True
        """
        e = self.environment
        n = len(self.requirements)
        status = ("PASSED" if self.passed else "FAILED") if n else "analysis"
        color = ("#1a7f37" if self.passed else "#cf222e") if n else "#57606a"
        verb = "certify" if n else "analyze"
        rows = []
        for r in self.requirements:
            lo, hi = r.interval
            rows.append(
                f"<tr class='{'pass' if r.passed else 'fail'}'><td>"
                f"{'PASS' if r.passed else 'FAIL'}</td><td><code>{_h(r.text)}</code></td>"
                f"<td>{r.n_pass}/{len(r.passes)}</td><td>[{lo:.2f}, {hi:.2f}]</td>"
                f"<td>{_h(r.basis)}</td><td>{_h(_values(r.values))}</td></tr>"
            )
        header, table = self._metric_rows()
        mrows = [
            f"<tr><td><code>{_h(r[0])}</code></td>"
            + "".join(f"<td>{_h(c)}</td>" for c in r[1:])
            + "</tr>"
            for r in table
        ]
        figure = ""
        if plots:
            png = self._plot_png()
            figure = (
                f"<h2>Per draw</h2><img alt='per-draw values against each "
                f"requirement' src='data:image/png;base64,{png}'>"
                if png
                else "<p><em>Plots need matplotlib: pip install 'looped-dynamo[plots]'.</em></p>"
            )
        note_items = "".join(
            f"<li><code>{_h(m)}</code> (seeds {_h(_seeds(seeds))}): {_h(note)}</li>"
            for (m, note), seeds in self._notes().items()
        )
        notes = f"<ul>{note_items}</ul>" if note_items else ""

        def shown(v: Any) -> str:
            if v is None:
                return "n/a"
            if isinstance(v, dict):
                return ", ".join(f"{k} {shown(x)}" for k, x in v.items())
            if isinstance(v, list):
                return _seeds(v) if all(isinstance(x, int) for x in v) else ", ".join(map(str, v))
            return str(v)

        env_rows = "".join(
            f"<tr><th>{_h(k)}</th><td>{_h(shown(v))}</td></tr>" for k, v in e.model_dump().items()
        )
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>dynamo {verb}: {_h(self.name)} ({status})</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left; }}
tr.pass td:first-child {{ color: #1a7f37; font-weight: bold; }}
tr.fail td:first-child {{ color: #cf222e; font-weight: bold; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>dynamo {verb}: {_h(self.name)} — <span style="color:{color}">{status}</span></h1>
<p>{n - len(self.failed)}/{n} requirements hold over {_h(self.draws_phrase())}.
Per-draw values are sampled estimates unless marked; intervals are
exact 95% Clopper–Pearson intervals of the share of draws.</p>
<table><tr><th></th><th>Requirement</th><th>Draws passing</th><th>95% interval</th>
<th>Basis</th><th>Values</th></tr>
{"".join(rows)}</table>
{figure}
<h2>Metrics per draw</h2>
<table><tr>{"".join(f"<th>{_h(c)}</th>" for c in header)}</tr>
{"".join(mrows)}</table>
{notes}
<h2>Environment</h2><table>{env_rows}</table>
</body></html>
"""

    # ------------------------------------------------------------------ helpers
    def _basis(self, metric: str) -> str:
        """What a metric's values rest on, read from the trust each draw recorded (a
        certificate written before trust was recorded: from the metric's registration)."""
        values = [d.metrics.get(metric) for d in self.draws]
        recorded = [d.trust[metric] for d in self.draws if metric in d.trust]
        if len(recorded) < len(self.draws):
            return basis(metric, values)
        trust = Trust.weakest(recorded)
        try:
            return _metric(metric).basis_for(trust)
        except KeyError:
            return "sampled estimate" if trust is Trust.ESTIMATED else trust.word

    def _metric_names(self) -> list[str]:
        names: list[str] = []
        for d in self.draws:
            names += [m for m in d.metrics if m not in names]
        return names

    def _notes(self) -> dict[tuple[str, str], list[int]]:
        """``(metric, note) -> seeds``: identical notes merged over draws."""
        merged: dict[tuple[str, str], list[int]] = {}
        for d in self.draws:
            for metric, note in d.notes.items():
                merged.setdefault((metric, note), []).append(d.seed)
        return merged

    def _note_lines(self) -> list[str]:
        """``- metric (seed s): note`` for every note, identical notes merged over draws."""
        lines = [
            f"- `{m}` (seeds {_seeds(seeds)}): {_md(note)}"
            for (m, note), seeds in self._notes().items()
        ]
        return [*lines, ""] if lines else []

    def _metric_rows(self, max_columns: int = 8) -> tuple[list[str], list[list[str]]]:
        """Rows per metric: one column per draw when there are few, else median/min/max."""
        names = self._metric_names()
        based = {m: self._basis(m) for m in names}
        label = {m: m if based[m] == "sampled estimate" else f"{m} ({based[m]})" for m in names}
        if len(self.draws) <= max_columns:
            header = ["metric"] + [_draw_label(d) for d in self.draws]
            rows = [[label[m]] + [_fmt(d.metrics.get(m)) for d in self.draws] for m in names]
            return header, rows
        header = ["metric", "median", "min", "max", "n/a"]
        rows = []
        for m in names:
            vals = [d.metrics.get(m) for d in self.draws]
            nums = sorted(float(v) for v in vals if isinstance(v, (int, float)))
            texts = [v for v in vals if isinstance(v, str)]
            missing = str(sum(v is None for v in vals))
            if texts:
                counts = ", ".join(f"{t} ×{texts.count(t)}" for t in dict.fromkeys(texts))
                rows.append([label[m], counts, "", "", missing])
            elif nums:
                mid = len(nums) // 2
                med = nums[mid] if len(nums) % 2 else 0.5 * (nums[mid - 1] + nums[mid])
                rows.append([label[m], _fmt(med), _fmt(nums[0]), _fmt(nums[-1]), missing])
            else:
                rows.append([label[m], "n/a", "", "", missing])
        return header, rows

    def _plot_png(self) -> str | None:
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        reqs = list(self.requirements)
        if not reqs:  # an analysis: show the headline metrics per draw instead
            reqs = [
                RequirementResult(
                    text=m,
                    metric=m,
                    op="==",
                    value=math.nan,
                    quorum=1.0,
                    basis=basis(m),
                    values=[d.metrics.get(m) for d in self.draws],
                    passes=[d.metrics.get(m) is not None for d in self.draws],
                    proportion=1.0,
                    interval=(0.0, 1.0),
                    passed=True,
                )
                for m in _HEADLINE
                if any(d.metrics.get(m) is not None for d in self.draws)
            ]
        n = max(1, len(reqs))
        fig, axes = plt.subplots(n, 1, figsize=(7, 1.6 * n + 0.6), squeeze=False)
        seeds = [d.seed for d in self.draws]
        if not reqs:
            axes[0, 0].text(0.5, 0.5, "no metrics", ha="center", va="center")
            axes[0, 0].set_axis_off()
        for ax, r in zip(axes[:, 0], reqs, strict=False):
            numeric = isinstance(r.value, (int, float)) and not isinstance(r.value, bool)
            colors = (
                ["#1a7f37" if p else "#cf222e" for p in r.passes]
                if self.requirements
                else ["#0969da"] * len(r.passes)
            )
            if numeric:
                ys = [math.nan if v is None or isinstance(v, str) else float(v) for v in r.values]
                ax.scatter(range(len(ys)), ys, c=colors, zorder=3)
                assert isinstance(r.value, (int, float))
                if not math.isnan(float(r.value)):
                    ax.axhline(
                        float(r.value), color="0.3", ls="--", lw=1, label=f"{r.op} {r.value:g}"
                    )
                    ax.legend(loc="best", fontsize=8, frameon=False)
                missing = [i for i, y in enumerate(ys) if math.isnan(y)]
                finite = [y for y in ys if not math.isnan(y)]
                anchor = (
                    float(r.value)
                    if not math.isnan(float(r.value))
                    else (finite[0] if finite else 0.0)
                )
                for i in missing:
                    ax.annotate("n/a", (i, anchor), ha="center", color="#cf222e")
            else:
                labels = [str(v) for v in r.values]
                cats = sorted(set(labels) | {str(r.value)})
                ax.scatter(range(len(labels)), [cats.index(s) for s in labels], c=colors, zorder=3)
                ax.set_yticks(range(len(cats)), cats)
            title = f"{'PASS' if r.passed else 'FAIL'}: {r.text}" if self.requirements else r.text
            ax.set_title(title, fontsize=9, loc="left")
            ax.set_xticks(range(len(seeds)), [str(s) for s in seeds], fontsize=7)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("initialisation seed")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()


#: A small certificate for the docstring examples: one requirement failing in one of two draws.
_EXAMPLE = """{"name": "example", "passed": false, "spec": {},
 "requirements": [{"text": "geometry.spectral_radius < 1", "metric": "geometry.spectral_radius",
  "op": "<", "value": 1.0, "quorum": 1.0, "basis": "sampled estimate", "values": [0.8, 1.2],
  "passes": [true, false], "proportion": 0.5, "interval": [0.0126, 0.9874], "passed": false}],
 "draws": [{"seed": 0, "metrics": {"geometry.spectral_radius": 0.8}},
           {"seed": 1, "metrics": {"geometry.spectral_radius": 1.2}}],
 "environment": {"dynamo": "0.1.0", "torch": "2.13.0", "python": "3.11", "platform": "linux",
  "git_commit": null, "device": "cpu", "dtype": "float64", "seeds": [0, 1], "input_seed": 0,
  "reach_path": "vmap"}}"""


def certificate_schema() -> dict[str, Any]:
    """The JSON Schema of a certificate's JSON (published in the docs; ``schema_version`` 1).

    >>> from verify import certificate_schema
    >>> certificate_schema()["properties"]["schema_version"]["const"]
    1
    """
    schema = Certificate.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _values(values: list[Any], limit: int = 8) -> str:
    shown = ", ".join(_fmt(v) for v in values[:limit])
    return f"[{shown}{', …' if len(values) > limit else ''}]"


def _draw_label(d: DrawResult) -> str:
    """A draw's column heading: its checkpoint's file name, else its seed."""
    return Path(d.checkpoint).name if d.checkpoint else f"seed {d.seed}"


def _seeds(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


#: Markdown punctuation that can start markup (links ``[..](..)``, images ``![..](..)``,
#: emphasis, code, headings, lists, tables): escaped with a backslash, which CommonMark renders
#: as the character itself.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def _md(text: str) -> str:
    """``text`` as literal Markdown: no link, image, emphasis, table cell break or HTML in it.

    >>> print(_md("[click](https://x.y) ![i](z.png) <b>|"))
    \\[click\\]\\(https://x\\.y\\) \\!\\[i\\]\\(z\\.png\\) &lt;b&gt;\\|
    """
    return html.escape(_MD_SPECIAL.sub(r"\\\1", text), quote=False)


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_") or "spec"
