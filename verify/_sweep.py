"""Sweeps: many certifications over a grid of spec keys, each cell stored in an output folder so
that an interrupted sweep resumes where it stopped, run in this process, in worker processes, or on
a Ray cluster.

A sweep file is a spec (the keys every cell shares) plus a ``[sweep]`` table::

    requirements = ["reachability.converged_fraction >= 1"]

    [inputs]
    count = 2
    seq_len = 4

    [sweep.grid]                                  # every combination: 3 x 4 = 12 cells
    "architecture.recall" = ["none", "outer", "internal"]
    "architecture.norm" = ["pre", "post", "sandwich", "outer"]

``[[sweep.cells]]`` lists cells one by one instead (or as well); ``[sweep] spec = "base.toml"``
takes the shared keys from another spec file.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import html
import io
import itertools
import json
import math
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._report import Certificate, _md, _slug
from ._spec import Spec, SpecError, input_files, read_toml, validate

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

__all__ = [
    "CellResult",
    "Sweep",
    "SweepCell",
    "SweepReport",
    "load_sweep",
    "run_sweep",
]

ExecutorName = Literal["serial", "local", "ray"]
#: The sections a dotted sweep key may start with (the spec's own keys).
_SECTIONS = ("name", "architecture", "inputs", "draws", "analysis", "requirements")
#: Reruns of a cell whose worker process died (killed, out of memory, a lost node).
MAX_RETRIES = 3


# ---------------------------------------------------------------------- the sweep file
@dataclass(frozen=True)
class SweepCell:
    """One cell: its overrides of the shared spec, its validated spec and its key.

    ``key`` hashes the cell's complete spec (every default filled in), the contents of the files
    it reads (a factory's file, a checkpoint named in ``architecture.kwargs``), the device and
    dynamo's version: a finished cell is reused only when all of them are the same.
    """

    index: int
    overrides: dict[str, Any]
    label: str
    spec: Spec
    key: str

    @property
    def file_name(self) -> str:
        """The cell's file in the output folder's ``cells/``."""
        return f"{_slug(self.label)[:80]}-{self.key[:16]}.json"


@dataclass(frozen=True)
class Sweep:
    """A loaded, checked sweep: the shared spec's name, the grid's keys and every cell."""

    name: str
    source: str
    keys: tuple[str, ...]
    grid: dict[str, list[Any]]
    cells: tuple[SweepCell, ...]
    base: Path
    allow_modules: tuple[str, ...] = ()
    device: str | None = None


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables as dotted keys: ``{architecture = {recall = [..]}}`` and
    ``"architecture.recall" = [..]`` are the same key; a list (or a non-table) is a leaf, and a
    table under ``architecture.kwargs`` sets those arguments one by one."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if parts[0] not in _SECTIONS or any(not p for p in parts):
        raise SpecError(
            f"{where}: {key!r} is not a spec key; write section.key, e.g. 'architecture.recall', "
            f"with a section among {', '.join(_SECTIONS)}"
        )
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise SpecError(f"{where}: {key!r}: {p!r} is not a table in the spec")
        node = nxt
    node[parts[-1]] = value


def _label(overrides: dict[str, Any]) -> str:
    """``recall=none, norm=pre``: each key by its last part unless two keys share it."""
    keys = list(overrides)
    tails = [k.rsplit(".", 1)[-1] for k in keys]
    shown = [t if tails.count(t) == 1 else k for k, t in zip(keys, tails, strict=True)]
    return (
        ", ".join(f"{s}={_short(overrides[k])}" for s, k in zip(shown, keys, strict=True)) or "base"
    )


def _short(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cell_key(spec: Spec, device: str | None) -> str:
    import dynamo

    files = sorted(
        (what, _file_digest(p)) for p, what in input_files(spec) if what != "the spec itself"
    )
    payload = {
        "spec": spec.model_dump(mode="json"),
        "files": files,
        "device": device or "cpu",
        "dynamo": dynamo.__version__,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_sweep(
    path: str | os.PathLike[str],
    *,
    allow_modules: Iterable[str] = (),
    device: str | None = None,
) -> Sweep:
    """Read a sweep file and check every cell's spec before any work.

    Parameters
    ----------
    path : str or pathlib.Path
        A TOML file: a spec plus a ``[sweep]`` table with ``grid`` (every combination of the
        listed values) and/or ``cells`` (a list of overrides), and optionally ``spec``, a base spec
        file (relative to the sweep file) instead of the file's own spec keys.
    allow_modules : iterable of str
        Modules a ``package.module:function`` factory may come from (as for ``certify``).
    device : str, optional
        Where the cells will run (part of each cell's key).

    Returns
    -------
    Sweep

    Raises
    ------
    verify.SpecError
        The file, the ``[sweep]`` table, or any cell's spec, naming the cell and the key.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from verify import load_sweep
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sweep.toml"
    >>> _ = path.write_text('''
    ... requirements = ["reachability.converged_fraction >= 1"]
    ... [sweep.grid]
    ... "architecture.recall" = ["none", "outer"]
    ... "architecture.d_model" = [16, 32]
    ... ''')
    >>> sweep = load_sweep(path)
    >>> len(sweep.cells), sweep.cells[1].label
    (4, 'recall=none, d_model=32')
    """
    p = Path(path)
    data = read_toml(p, "sweep")
    return _sweep_from(data, p, allow_modules=tuple(allow_modules), device=device)


def _sweep_from(
    data: dict[str, Any], p: Path, *, allow_modules: tuple[str, ...], device: str | None
) -> Sweep:
    source = str(p)
    table = data.pop("sweep", None)
    if not isinstance(table, dict):
        raise SpecError(
            f"{source}: a sweep file needs a [sweep] table with grid = {{...}} or [[sweep.cells]] "
            "(for one certification, run `dynamo certify` on it)"
        )
    unknown = sorted(set(table) - {"grid", "cells", "spec"})
    if unknown:
        raise SpecError(
            f"{source}: sweep.{unknown[0]}: unknown key; [sweep] takes grid, cells and spec"
        )
    base = p.resolve().parent
    spec_path = p.resolve()
    if "spec" in table:
        if data:
            raise SpecError(
                f"{source}: sweep.spec = {table['spec']!r} names the shared spec, but this file "
                f"has spec keys too ({', '.join(sorted(data))}); keep them in one place"
            )
        base_path = base / str(table["spec"])
        if not base_path.is_file():
            raise SpecError(f"{source}: sweep.spec: no such spec file {base_path}")
        data = read_toml(base_path, "spec")
        base = base_path.resolve().parent
        spec_path = base_path.resolve()
    grid_table = table.get("grid", {})
    if not isinstance(grid_table, dict):
        raise SpecError(f"{source}: sweep.grid must be a table of key = [values]")
    grid = _flatten(grid_table)
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise SpecError(
                f"{source}: sweep.grid.{k} must be a non-empty list of values, e.g. "
                f'"{k}" = [..., ...]; got {v!r}'
            )
    listed = table.get("cells", [])
    if not isinstance(listed, list) or not all(isinstance(c, dict) for c in listed):
        raise SpecError(f"{source}: sweep.cells must be a list of tables ([[sweep.cells]])")
    if not grid and not listed:
        raise SpecError(
            f"{source}: the sweep has no cells; give [sweep.grid] with key = [values] or "
            "[[sweep.cells]] tables"
        )
    overrides: list[dict[str, Any]] = (
        [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
        if grid
        else []
    )
    overrides += [_flatten(c) for c in listed]
    keys = tuple(dict.fromkeys(k for o in overrides for k in o))
    cells: list[SweepCell] = []
    seen: dict[str, int] = {}
    for i, o in enumerate(overrides):
        label = _label(o)
        where = f"{source}: cell {i + 1} ({label})"
        cell_data = json.loads(json.dumps(data))  # a deep copy of the shared keys
        for k, v in o.items():
            _set(cell_data, k, v, where)
        try:
            spec = validate(cell_data, where, base=base, allow_modules=allow_modules)
        except SpecError as err:
            raise SpecError(str(err)) from None
        # a file named in architecture.kwargs is looked up beside the spec, as certify does
        spec._origin.spec_file = spec_path
        key = _cell_key(spec, device)
        if key in seen:
            raise SpecError(
                f"{where}: the same certification as cell {seen[key] + 1}; list each cell once"
            )
        seen[key] = i
        cells.append(SweepCell(index=i, overrides=o, label=label, spec=spec, key=key))
    return Sweep(
        name=str(data.get("name") or p.stem),
        source=source,
        keys=keys,
        grid=grid,
        cells=tuple(cells),
        base=base,
        allow_modules=allow_modules,
        device=device,
    )


# ---------------------------------------------------------------------- the report
class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="null")


class RequirementShare(_Frozen):
    """One requirement in one cell: the share of draws that satisfy it."""

    text: str
    n_pass: int
    n_draws: int
    proportion: float
    interval: tuple[float, float]
    passed: bool
    trust: str

    def __str__(self) -> str:
        return f"{self.n_pass}/{self.n_draws} [{self.interval[0]:.2f}, {self.interval[1]:.2f}]"


class CellResult(_Frozen):
    """One cell of a sweep report."""

    index: int
    label: str
    overrides: dict[str, Any]
    key: str
    file: str = Field(description="the cell's certificate, relative to the output folder")
    status: Literal["passed", "failed", "analysis", "error"]
    passed: bool | None
    requirements: list[RequirementShare]
    error: str | None = None
    reused: bool = Field(description="finished by an earlier run of the sweep, not recomputed")
    worker: str | None = Field(
        None, description="where it ran: host:pid, and the Ray node for a Ray task"
    )
    seconds: float | None = Field(description="the certification's wall time, when it ran")
    attempts: int = Field(description="runs this time (more than 1: its worker died and it reran)")

    def share(self, requirement: str) -> RequirementShare | None:
        """This cell's result for one requirement (by its text), if the cell has it."""
        return next((r for r in self.requirements if r.text == requirement), None)


class SweepReport(_Frozen):
    """The combined result of :func:`run_sweep`: one entry per cell, in the sweep's order.

    Render it with :meth:`to_json`, :meth:`to_markdown`, :meth:`to_junit` or :meth:`to_html`.

    >>> from verify import SweepReport
    >>> report = SweepReport.model_validate_json(_EXAMPLE)
    >>> report.passed, [c.label for c in report.failed]
    (False, ['recall=none'])
    """

    schema_version: Literal[1] = 1
    kind: Literal["dynamo.sweep"] = "dynamo.sweep"
    name: str
    keys: list[str]
    grid: dict[str, list[Any]]
    cells: list[CellResult]
    passed: bool | None = Field(
        description="every cell's requirements hold; null when no cell has requirements"
    )
    executor: str
    workers: int
    threads_per_cell: int
    computed: int
    reused: int
    elapsed_s: float

    @property
    def failed(self) -> list[CellResult]:
        """The cells where a requirement does not hold, or whose certification raised."""
        return [c for c in self.cells if c.status in ("failed", "error")]

    def requirement_texts(self) -> list[str]:
        """Every requirement of any cell, in first-seen order."""
        return list(dict.fromkeys(r.text for c in self.cells for r in c.requirements))

    def __str__(self) -> str:
        n = len(self.cells)
        head = f"dynamo sweep: {self.name}: " + (
            "analysis" if self.passed is None else ("PASSED" if self.passed else "FAILED")
        )
        lines = [f"{head} ({n - len(self.failed)}/{n} cells pass)"]
        for c in self.cells:
            shares = "; ".join(f"{r.text} {r.n_pass}/{r.n_draws}" for r in c.requirements)
            lines.append(
                f"  {c.status.upper():8} {c.label}: " + (c.error or shares or "no requirements")
            )
        return "\n".join(lines)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON, ending with a newline.

        >>> import json
        >>> from verify import SweepReport
        >>> json.loads(SweepReport.model_validate_json(_EXAMPLE).to_json())["kind"]
        'dynamo.sweep'
        """
        return self.model_dump_json(indent=indent) + "\n"

    def to_markdown(self) -> str:
        """A table: one row per cell, one column per requirement (draws passing, 95% interval).

        >>> from verify import SweepReport
        >>> print(SweepReport.model_validate_json(_EXAMPLE).to_markdown().splitlines()[0])
        ## ❌ dynamo sweep: example — FAILED (1/2 cells pass)
        """
        n = len(self.cells)
        verdict = "analysis" if self.passed is None else ("PASSED" if self.passed else "FAILED")
        mark = "" if self.passed is None else ("✅ " if self.passed else "❌ ")
        reqs = self.requirement_texts()
        out = [
            f"## {mark}dynamo sweep: {_md(self.name)} — {verdict} "
            f"({n - len(self.failed)}/{n} cells pass)",
            "",
            f"{n} cells over {', '.join(f'`{k}`' for k in self.keys) or 'listed overrides'}; "
            f"{self.computed} computed, {self.reused} reused from an earlier run; executor "
            f"{self.executor}, {self.workers} worker(s) of {self.threads_per_cell} thread(s); "
            f"{self.elapsed_s:.1f} s.",
            "",
            "| | Cell | " + " | ".join(f"`{t}`" for t in reqs) + " |",
            "|---|---|" + "---|" * len(reqs),
        ]
        for c in self.cells:
            cols = [str(c.share(t) or "—") for t in reqs]
            if c.status == "error":
                cols = [f"error: {_md(c.error or '')}"] + [""] * (len(reqs) - 1)
            icon = {"passed": "✅", "failed": "❌", "error": "⚠️", "analysis": ""}[c.status]
            out.append(f"| {icon} | {_md(c.label)} | " + " | ".join(cols) + " |")
        out += [
            "",
            "Each entry: initialisation draws satisfying the requirement, with its exact 95% "
            "Clopper–Pearson interval. Each cell's certificate is in the output folder.",
        ]
        return "\n".join(out) + "\n"

    def to_junit(self) -> str:
        """JUnit XML: one test suite per cell, one test case per requirement; a cell whose
        certification raised is one test case with an error.

        >>> from verify import SweepReport
        >>> xml = SweepReport.model_validate_json(_EXAMPLE).to_junit()
        >>> 'tests="2"' in xml and 'failures="1"' in xml
        True
        """
        from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

        xml = JUnitXml(f"dynamo sweep: {self.name}")
        for c in self.cells:
            suite = TestSuite(f"dynamo sweep: {self.name}: {c.label}")
            suite.add_property("cell_key", c.key)
            suite.add_property("certificate", c.file)
            cls = f"dynamo.sweep.{_slug(self.name)}.{_slug(c.label)}"
            if c.status == "error":
                case = TestCase("certification", classname=cls, time=0.0)
                err = Error(f"the cell's certification raised: {c.error}", "dynamo.CellError")
                case.result = [err]
                suite.add_testcase(case)
            for r in c.requirements:
                case = TestCase(r.text, classname=cls, time=0.0)
                if not r.passed:
                    failure = Failure(f"requirement failed: {r.text}", "dynamo.RequirementFailed")
                    failure.text = (
                        f"{r.n_pass}/{r.n_draws} draws pass, 95% interval "
                        f"[{r.interval[0]:.2f}, {r.interval[1]:.2f}]"
                    )
                    case.result = [failure]
                suite.add_testcase(case)
            suite.update_statistics()
            xml.add_testsuite(suite)
        xml.update_statistics()
        buf = io.BytesIO()
        xml.write(buf, pretty=True)
        return buf.getvalue().decode()

    def share_grid(self, requirement: str) -> tuple[list[str], list[str], list[list[float]]]:
        """Each requirement's pass share laid out over the grid: rows are the first key's values,
        columns the combinations of the others (a single row without a grid).

        Returns ``(row_labels, column_labels, shares)`` with NaN where a cell errored or has no
        such requirement.

        >>> from verify import SweepReport
        >>> rows, cols, v = SweepReport.model_validate_json(_EXAMPLE).share_grid(
        ...     "reachability.converged_fraction >= 1")
        >>> rows, cols, v
        (['none', 'outer'], [''], [[0.5], [1.0]])
        """

        def share(c: CellResult) -> float:
            r = c.share(requirement)
            return math.nan if r is None else r.proportion

        def on_grid(c: CellResult) -> bool:  # exactly one combination of the grid's values
            return set(c.overrides) == set(self.grid) and all(
                _short(c.overrides[k]) in [_short(v) for v in vals] for k, vals in self.grid.items()
            )

        gridded = [c for c in self.cells if on_grid(c)]
        if not self.grid or len(gridded) != len(self.cells):
            return [""], [c.label for c in self.cells], [[share(c) for c in self.cells]]
        first, rest = next(iter(self.grid)), list(self.grid)[1:]
        rows = [_short(v) for v in self.grid[first]]
        cols = [
            ", ".join(
                f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in zip(rest, combo, strict=True)
            )
            for combo in itertools.product(*(self.grid[k] for k in rest))
        ] or [""]
        values = [[math.nan] * len(cols) for _ in rows]
        for c in gridded:
            i = rows.index(_short(c.overrides[first]))
            col = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(c.overrides[k])}" for k in rest)
            values[i][cols.index(col) if rest else 0] = share(c)
        return rows, cols, values

    def to_html(self, plots: bool = True) -> str:
        """A standalone page: the table, and a heat-map of each requirement's pass share over the
        grid (PNG, embedded) when matplotlib is installed.

        >>> from verify import SweepReport
        >>> page = SweepReport.model_validate_json(_EXAMPLE).to_html(plots=False)
        >>> page.startswith("<!DOCTYPE html>") and "recall=none" in page
        True
        """
        reqs = self.requirement_texts()
        head = "".join(f"<th><code>{html.escape(t)}</code></th>" for t in reqs)
        body = []
        for c in self.cells:
            tds = [
                "<td>—</td>"
                if r is None
                else f"<td class='{'pass' if r.passed else 'fail'}'>{r}</td>"
                for r in (c.share(t) for t in reqs)
            ]
            if c.status == "error":
                tds = [
                    f"<td colspan='{max(1, len(reqs))}'>error: {html.escape(c.error or '')}</td>"
                ]
            body.append(
                f"<tr><td>{c.status.upper()}</td><td>{html.escape(c.label)}</td>{''.join(tds)}"
                f"<td><code>{html.escape(c.file)}</code></td></tr>"
            )
        figures = ""
        if plots:
            pngs = [(t, self._heatmap_png(t)) for t in reqs]
            if any(p is None for _, p in pngs):
                figures = (
                    "<p><em>Heat-maps need matplotlib: pip install 'looped-dynamo[plots]'.</em></p>"
                )
            else:
                figures = "".join(
                    f"<h2>{html.escape(t)}</h2><img alt='pass share of {html.escape(t)} over the "
                    f"grid' src='data:image/png;base64,{p}'>"
                    for t, p in pngs
                )
        verdict = "analysis" if self.passed is None else ("PASSED" if self.passed else "FAILED")
        n = len(self.cells)
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>dynamo sweep: {html.escape(self.name)}</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:2em auto}}
td,th{{border:1px solid #ccc;padding:.2em .5em}}table{{border-collapse:collapse}}
.pass{{background:#dafbe1}}.fail{{background:#ffebe9}}</style></head><body>
<h1>dynamo sweep: {html.escape(self.name)} — {verdict}</h1>
<p>{n - len(self.failed)}/{n} cells pass; {self.computed} computed, {self.reused} reused;
executor {html.escape(self.executor)}, {self.workers} worker(s); {self.elapsed_s:.1f} s.</p>
<table><tr><th>status</th><th>cell</th>{head}<th>certificate</th></tr>
{"".join(body)}</table>
{figures}
</body></html>
"""

    def _heatmap_png(self, requirement: str) -> str | None:
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        fig = plot_shares(self, requirement)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()


def plot_shares(report: SweepReport, requirement: str, ax: Any = None) -> Any:
    """A heat-map of one requirement's pass share over the sweep's grid (a matplotlib Figure).

    >>> from verify import SweepReport
    >>> from verify._sweep import plot_shares
    >>> fig = plot_shares(SweepReport.model_validate_json(_EXAMPLE),
    ...                   "reachability.converged_fraction >= 1")
    >>> len(fig.axes[0].texts)
    2
    """
    import matplotlib.pyplot as plt
    import numpy as np

    rows, cols, values = report.share_grid(requirement)
    v = np.array(values, dtype=float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(cols), 0.9 + 0.55 * len(rows)))
    else:
        fig = ax.figure
    im = ax.imshow(np.ma.masked_invalid(v), vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    keys = list(report.grid)
    if keys and rows != [""]:
        ax.set_ylabel(keys[0].rsplit(".", 1)[-1])
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(
                j,
                i,
                "error" if math.isnan(v[i, j]) else f"{v[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
            )
    ax.set_title(f"share of draws: {requirement}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return fig


_EXAMPLE = """{"name": "example", "keys": ["architecture.recall"],
"grid": {"architecture.recall": ["none", "outer"]},
"cells": [
 {"index": 0, "label": "recall=none", "overrides": {"architecture.recall": "none"},
  "key": "0a", "file": "cells/recall_none-0a.json", "status": "failed", "passed": false,
  "requirements": [{"text": "reachability.converged_fraction >= 1", "n_pass": 1, "n_draws": 2,
   "proportion": 0.5, "interval": [0.0126, 0.987], "passed": false, "trust": "estimated"}],
  "reused": false, "seconds": 1.5, "attempts": 1},
 {"index": 1, "label": "recall=outer", "overrides": {"architecture.recall": "outer"},
  "key": "0b", "file": "cells/recall_outer-0b.json", "status": "passed", "passed": true,
  "requirements": [{"text": "reachability.converged_fraction >= 1", "n_pass": 2, "n_draws": 2,
   "proportion": 1.0, "interval": [0.158, 1.0], "passed": true, "trust": "estimated"}],
  "reused": true, "seconds": null, "attempts": 0}],
"passed": false, "executor": "serial", "workers": 1, "threads_per_cell": 1,
"computed": 1, "reused": 1, "elapsed_s": 1.6}"""


# ---------------------------------------------------------------------- running
def _run_cell(payload: dict[str, Any]) -> dict[str, str]:
    """Certify one cell where the executor runs it; returns the certificate's JSON text and
    where it ran (``host:pid``, and the Ray node when it ran as a Ray task).

    Module level (process pools and Ray send it by reference); everything it needs is plain data.
    """
    import torch

    from ._certify import certify

    t0 = time.perf_counter()
    torch.set_num_threads(int(payload["threads"]))
    cwd = payload.get("cwd")
    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)  # the certificate's git commit is read from the working directory
    spec = validate(
        payload["spec"],
        payload["source"],
        base=Path(payload["base"]),
        allow_modules=payload["allow_modules"],
    )
    if payload.get("spec_file"):
        spec._origin.spec_file = Path(payload["spec_file"])
    cert = certify(
        spec,
        device=payload["device"],
        progress=False,
        allow_modules=payload["allow_modules"],
    )
    where = f"{socket.gethostname()}:{os.getpid()}"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        where += f" (ray node {ray.get_runtime_context().get_node_id()[:12]})"
    return {
        "certificate": cert.to_json(),
        "worker": where,
        "seconds": repr(time.perf_counter() - t0),
    }


@dataclass
class _Progress:
    done: int = 0
    computed: int = 0
    attempts: dict[int, int] = field(default_factory=dict)


def _atomic_write(path: Path, text: str) -> None:
    """``text`` into ``path`` all at once: a temporary file in the same folder, then a rename, so
    an interrupted write never leaves a half cell behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finished(path: Path, cell: SweepCell) -> Certificate | None:
    """The cell's certificate from an earlier run, when its file is complete and is this cell."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") != cell.key:
            return None
        return Certificate.model_validate(stored["certificate"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _result(
    cell: SweepCell,
    cert: Certificate | None,
    *,
    reused: bool,
    seconds: float | None,
    attempts: int,
    error: str | None = None,
    worker: str | None = None,
) -> CellResult:
    reqs = []
    status: Literal["passed", "failed", "analysis", "error"] = "error"
    if cert is not None:
        for r in cert.requirements:
            reqs.append(
                RequirementShare(
                    text=r.text,
                    n_pass=r.n_pass,
                    n_draws=len(r.passes),
                    proportion=r.proportion,
                    interval=r.interval,
                    passed=r.passed,
                    trust=r.trust,
                )
            )
        status = "analysis" if cert.passed is None else ("passed" if cert.passed else "failed")
    return CellResult(
        index=cell.index,
        label=cell.label,
        overrides=cell.overrides,
        key=cell.key,
        file=f"cells/{cell.file_name}",
        status=status,
        passed=None if cert is None else cert.passed,
        requirements=reqs,
        error=error,
        reused=reused,
        seconds=seconds,
        attempts=attempts,
        worker=worker,
    )


def _make_executor(
    name: ExecutorName, workers: int, threads: int, address: str | None, gpus: float
) -> concurrent.futures.Executor | None:
    if name == "serial":
        return None
    if name == "local":
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
    from dynamo import RayExecutor

    ex = RayExecutor(
        address,
        num_cpus=threads,
        num_gpus=gpus,
        max_retries=MAX_RETRIES,
        num_cpus_local=workers * threads,
    )
    ex.connect()  # an unreachable address is an error now, before any cell runs
    return ex


def run_sweep(
    sweep: Sweep,
    out: str | os.PathLike[str],
    *,
    executor: ExecutorName = "serial",
    workers: int | None = None,
    threads: int = 1,
    address: str | None = None,
    gpus_per_cell: float = 0.0,
    progress: bool = False,
    on_cell: Callable[[CellResult], None] | None = None,
) -> SweepReport:
    """Certify every cell of ``sweep``, storing each cell's certificate in ``out/cells/``.

    A cell whose file is already in ``out`` (from an interrupted or earlier run of the same
    cell: same spec, same input files, same device, same dynamo) is reused, never recomputed or
    overwritten; every other cell is certified and its file written whole (a temporary file,
    then a rename) as soon as it finishes, so an interruption loses at most the cells running at
    that moment. The same cell gives the same certificate on any executor (bit-identical apart
    from its timestamp and wall time: each cell is one deterministic certification).

    Parameters
    ----------
    sweep : Sweep
        From :func:`load_sweep`.
    out : str or os.PathLike
        The output folder (created if missing).
    executor : {"serial", "local", "ray"}
        In this process; in ``workers`` worker processes; or as Ray tasks (local Ray, or the
        cluster at ``address``). A cell whose worker process dies is rerun (at most
        ``MAX_RETRIES`` times); a cell whose certification raises is reported as an error.
    workers : int, optional
        Worker processes (``"local"``) or the size of the local Ray instance in cells
        (``"ray"`` without ``address``); default: the CPUs over ``threads``.
    threads : int
        torch threads of each cell (and the CPUs each Ray task asks for).
    address : str, optional
        A Ray cluster (``host:port`` or ``"auto"``); ``"ray"`` only.
    gpus_per_cell : float
        GPUs each Ray task asks for (Ray places it on a node that has them).
    progress : bool
        A progress bar over the cells (stderr).
    on_cell : callable, optional
        Called with each cell's result as it is stored (in completion order).

    Returns
    -------
    SweepReport

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from verify import load_sweep, run_sweep
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "sweep.toml").write_text('''
    ... requirements = ["reachability.converged_fraction >= 1"]
    ... [inputs]
    ... count = 2
    ... seq_len = 4
    ... [analysis]
    ... input_dependence = false
    ... geometry = false
    ... [sweep.grid]
    ... "architecture.d_model" = [16, 32]
    ... ''')
    >>> report = run_sweep(load_sweep(folder / "sweep.toml"), folder / "out")
    >>> [(c.label, c.status) for c in report.cells]
    [('d_model=16', 'passed'), ('d_model=32', 'passed')]
    >>> again = run_sweep(load_sweep(folder / "sweep.toml"), folder / "out")
    >>> again.computed, again.reused
    (0, 2)
    """
    from dynamo.errors import InvalidArgumentError
    from dynamo.kernel import call_form

    call = call_form("run_sweep", ["sweep", "out"], executor=executor)
    if not isinstance(sweep, Sweep):
        raise InvalidArgumentError(f"{call}: sweep must come from verify.load_sweep")
    if executor not in ("serial", "local", "ray"):
        raise InvalidArgumentError(f"{call}: executor must be 'serial', 'local' or 'ray'")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidArgumentError(f"{call}: threads must be an int >= 1")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise InvalidArgumentError(f"{call}: workers must be an int >= 1")
    if address is not None and executor != "ray":
        raise InvalidArgumentError(f"{call}: address= is for executor='ray'")
    if gpus_per_cell and executor != "ray":
        raise InvalidArgumentError(f"{call}: gpus_per_cell= is for executor='ray'")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"{call}: out={str(folder)!r} is a file; give a folder")
    cells_dir = folder / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    n_workers = workers or max(1, (os.cpu_count() or 1) // threads)
    t0 = time.perf_counter()
    results: dict[int, CellResult] = {}
    todo: list[SweepCell] = []
    for cell in sweep.cells:
        cert = _finished(cells_dir / cell.file_name, cell)
        if cert is None:
            todo.append(cell)
        else:
            results[cell.index] = _result(cell, cert, reused=True, seconds=None, attempts=0)
    state = _Progress()
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="cells", unit="cell", file=sys.stderr)

    def store(cell: SweepCell, done: dict[str, str] | None, error: str | None) -> None:
        cert = None
        worker = None
        seconds = None
        if done is not None:
            text, worker = done["certificate"], done["worker"]
            seconds = float(done["seconds"])
            cert = Certificate.model_validate_json(text)
            record = {
                "kind": "dynamo.sweep.cell",
                "key": cell.key,
                "label": cell.label,
                "overrides": cell.overrides,
                "worker": worker,
                "certificate": json.loads(text),
            }
            target = cells_dir / cell.file_name
            if _finished(target, cell) is None:  # else another run stored it meanwhile: keep it
                _atomic_write(target, json.dumps(record, indent=1) + "\n")
            state.computed += 1
        res = _result(
            cell,
            cert,
            reused=False,
            seconds=seconds,
            attempts=state.attempts.get(cell.index, 1),
            error=error,
            worker=worker,
        )
        results[cell.index] = res
        if bar is not None:
            bar.update(1)
        if on_cell is not None:
            on_cell(res)

    cwd = os.getcwd()

    def payload(cell: SweepCell) -> dict[str, Any]:
        o = cell.spec._origin
        return {
            "spec": cell.spec.model_dump(mode="json"),
            "source": f"{sweep.source}: cell {cell.index + 1} ({cell.label})",
            "base": str(sweep.base),
            "spec_file": None if o.spec_file is None else str(o.spec_file),
            "allow_modules": list(sweep.allow_modules),
            "threads": threads,
            "device": sweep.device,
            "cwd": cwd,
        }

    pool = _make_executor(executor, n_workers, threads, address, gpus_per_cell) if todo else None
    if executor == "ray" and pool is not None:
        n_workers = getattr(pool, "max_workers", n_workers)  # the cluster's size, in cells
    try:
        if pool is None:
            import torch

            saved = torch.get_num_threads()  # the caller's own setting, restored after the cells
            try:
                for cell in todo:
                    state.attempts[cell.index] = 1
                    try:
                        done = _run_cell(payload(cell))
                    except Exception as err:  # the cell's own failure: reported, the sweep goes on
                        store(cell, None, f"{type(err).__name__}: {err}")
                        continue
                    store(cell, done, None)
            finally:
                torch.set_num_threads(saved)
        else:
            pool = _drive(
                pool,
                lambda: _make_executor(executor, n_workers, threads, address, gpus_per_cell),
                todo,
                payload,
                store,
                state,
            )
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            _stop(pool)
    ordered = [results[c.index] for c in sweep.cells]
    judged = [c for c in ordered if c.status != "analysis"]
    return SweepReport(
        name=sweep.name,
        keys=list(sweep.keys),
        grid=sweep.grid,
        cells=ordered,
        passed=None if not judged else all(c.status == "passed" for c in judged),
        executor=executor if address is None else f"ray ({address})",
        workers=1 if executor == "serial" else n_workers,
        threads_per_cell=threads,
        computed=state.computed,
        reused=sum(c.reused for c in ordered),
        elapsed_s=time.perf_counter() - t0,
    )


def _drive(
    pool: concurrent.futures.Executor,
    remake: Callable[[], concurrent.futures.Executor | None],
    todo: list[SweepCell],
    payload: Callable[[SweepCell], dict[str, Any]],
    store: Callable[[SweepCell, dict[str, str] | None, str | None], None],
    state: _Progress,
) -> concurrent.futures.Executor:
    """Submit every cell and store each as it finishes. A process pool whose worker died is
    broken as a whole (every pending future fails, whichever cell killed it): it is replaced and
    the unfinished cells are resubmitted; after ``MAX_RETRIES`` broken rounds the rest run one at
    a time, so that a cell whose worker dies twice when it runs alone is the one reported. Ray
    reruns a task whose worker died by itself (``max_retries``); what still fails is reported as
    the cell's error. Returns the pool in use at the end (to be stopped)."""
    from concurrent.futures.process import BrokenProcessPool

    pending = list(todo)
    broken_rounds = 0
    deaths_alone: dict[int, int] = {}  # a cell may die once alone (its first run may be that)
    while pending:
        # after MAX_RETRIES broken rounds, one cell at a time: a death is then that cell's own
        alone = broken_rounds >= MAX_RETRIES
        batch, rest = (pending[:1], pending[1:]) if alone else (pending, [])
        started: dict[concurrent.futures.Future[dict[str, str]], SweepCell] = {}
        retry: list[SweepCell] = []
        broken = False
        for cell in batch:
            try:
                fut = pool.submit(_run_cell, payload(cell))
            except BrokenProcessPool:  # a worker died while the sweep was still submitting
                broken = True
                retry.append(cell)
                continue
            state.attempts[cell.index] = state.attempts.get(cell.index, 0) + 1
            started[fut] = cell
        for fut in concurrent.futures.as_completed(started):
            cell = started[fut]
            try:
                done = fut.result()
            except BrokenProcessPool:
                broken = True
                deaths_alone[cell.index] = deaths_alone.get(cell.index, 0) + alone
                if deaths_alone.get(cell.index, 0) >= 2:
                    store(
                        cell,
                        None,
                        f"its worker process died each time it ran ({state.attempts[cell.index]} "
                        "runs, the last two alone)",
                    )
                else:
                    retry.append(cell)
                continue
            except Exception as err:  # the cell's own failure, or Ray's after its retries
                store(cell, None, _why(err))
                continue
            store(cell, done, None)
        if broken:
            broken_rounds += 1
            _stop(pool)
            if retry or rest:
                fresh = remake()
                assert fresh is not None
                pool = fresh
        pending = sorted(retry, key=lambda c: c.index) + rest
    return pool


def _why(err: BaseException) -> str:
    """A cell's error in one line: Ray wraps the task's own exception; show that one."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"[:500]


def _stop(pool: concurrent.futures.Executor) -> None:
    """Stop the workers now: queued cells are cancelled, running ones are terminated (their cells
    were not stored, so a resumed sweep runs them again)."""
    processes = getattr(pool, "_processes", None)
    pool.shutdown(wait=False, cancel_futures=True)
    if isinstance(processes, dict):
        for proc in list(processes.values()):
            if proc.is_alive():
                proc.terminate()
