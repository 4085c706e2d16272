"""Attractor basin graphs on networkx, cell mapping, and basin statistics."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._fixed_points import (
    Continuum,
    Cycle,
    FixedPoint,
    FixedPointSet,
    _check_sharding,
    find_fixed_points,
)
from ._krylov import arnoldi
from ._linearize import _operator_at, jacobian
from ._solvers import default_tolerance, solve
from ._stats import clopper_pearson
from ._system import LoopedSystem
from ._validate import call_form, check_finite_tensor, check_positive_int, check_state_shape

if TYPE_CHECKING:
    import networkx as nx
from ._types import StartKind
from .errors import InvalidArgumentError, ShapeError

__all__ = [
    "BasinGraph",
    "CellMap",
    "Plane",
    "basin_entropy",
    "basin_graph",
    "cell_mapping",
    "label_states",
]

DIVERGED, UNCONVERGED = "diverged", "unconverged"


# ---------------------------------------------------------------------- planes
@dataclass(frozen=True)
class Plane:
    """A 2-D slice ``origin + a·u + b·v`` of the state space (``u``, ``v`` orthonormal).

    Build it with :meth:`through` (origin and two directions, orthonormalized) or :meth:`box`
    (the whole space of a 2-D map).

    Examples
    --------
    >>> from dynamo import Plane
    >>> p = Plane.box((-2, 2), (-1, 1))
    >>> p.origin.tolist(), p.u.tolist(), p.v.tolist()
    ([0.0, 0.0], [1.0, 0.0], [0.0, 1.0])
    """

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    extent: tuple[tuple[float, float], tuple[float, float]]

    @classmethod
    def through(
        cls, origin: torch.Tensor, u: torch.Tensor, v: torch.Tensor, extent: float | tuple = 1.0
    ) -> Plane:
        """The plane through ``origin`` spanned by ``u`` and ``v`` (Gram–Schmidt), with
        coordinates in ``[-extent, extent]²`` (or ``((a0, a1), (b0, b1))``).

        >>> import torch
        >>> from dynamo import Plane
        >>> p = Plane.through(torch.zeros(3), torch.tensor([1.0, 0, 0]), torch.tensor([1.0, 1, 0]))
        >>> p.v.tolist()
        [0.0, 1.0, 0.0]
        """
        call = "Plane.through(origin, u, v)"
        o = origin.detach().reshape(-1).double()
        a = u.detach().reshape(-1).double()
        b = v.detach().reshape(-1).double()
        if not (o.shape == a.shape == b.shape):
            raise ShapeError(f"{call}: origin, u and v must have the same number of entries")
        na = float(a.norm())
        if na == 0 or not math.isfinite(na):
            raise InvalidArgumentError(f"{call}: u must be a finite nonzero vector")
        a = a / na
        b = b - (b @ a) * a
        nb = float(b.norm())
        if nb <= 1e-10 * max(1.0, float(v.double().norm())):
            raise InvalidArgumentError(
                f"{call}: u and v are parallel, so they span a line, not a plane; choose two "
                "independent directions"
            )
        b = b / nb
        ext = (extent, extent) if isinstance(extent, (int, float)) else extent
        if isinstance(extent, (int, float)):
            ext = ((-float(extent), float(extent)), (-float(extent), float(extent)))
        return cls(o, a, b, (tuple(ext[0]), tuple(ext[1])))

    @classmethod
    def box(cls, x: tuple[float, float], y: tuple[float, float]) -> Plane:
        """The state space of a 2-D map, ``[x0, x1] × [y0, y1]``.

        >>> from dynamo import Plane
        >>> Plane.box((-2, 2), (-1, 1)).extent
        ((-2.0, 2.0), (-1.0, 1.0))
        """
        e = torch.eye(2, dtype=torch.float64)
        return cls(
            torch.zeros(2, dtype=torch.float64),
            e[0],
            e[1],
            ((float(x[0]), float(x[1])), (float(y[0]), float(y[1]))),
        )

    def grid(self, resolution: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Cell centres: coordinates ``a`` (res,), ``b`` (res,), and flat states (res², n).

        Examples
        --------
        >>> from dynamo import Plane
        >>> a, b, states = Plane.box((-1, 1), (-1, 1)).grid(2)
        >>> a.tolist(), b.tolist()
        ([-0.5, 0.5], [-0.5, 0.5])
        >>> states.tolist()
        [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
        """
        (a0, a1), (b0, b1) = self.extent
        a = a0 + (np.arange(resolution) + 0.5) * (a1 - a0) / resolution
        b = b0 + (np.arange(resolution) + 0.5) * (b1 - b0) / resolution
        A, B = np.meshgrid(a, b, indexing="xy")
        pts = (
            self.origin[None]
            + torch.as_tensor(A.reshape(-1))[:, None] * self.u[None]
            + torch.as_tensor(B.reshape(-1))[:, None] * self.v[None]
        )
        return a, b, pts

    def coordinates(self, flat: torch.Tensor) -> torch.Tensor:
        """Project flat states onto the plane: ``(N, 2)`` coordinates.

        Examples
        --------
        >>> import torch
        >>> from dynamo import Plane
        >>> p = Plane.through(torch.zeros(3), torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]))
        >>> p.coordinates(torch.tensor([[2.0, 3.0, 5.0]]))  # the third coordinate drops out
        tensor([[2., 3.]], dtype=torch.float64)
        """
        d = flat.double() - self.origin[None]
        return torch.stack([d @ self.u, d @ self.v], dim=1)


# ---------------------------------------------------------------------- the graph
@dataclass(frozen=True)
class BasinGraph:
    """Which starts flow where: a ``networkx.DiGraph`` over attractors, saddles and sinks.

    Nodes (attributes are plain numbers and strings):

    * ``"start"`` (or ``"input:b"`` per input): the start distribution;
    * ``"fp:i"``: stable fixed points reached by iteration; ``"cycle:i"``; ``"continuum:i"``;
    * ``"saddle:i"``, ``"unstable:i"``, ``"marginal:i"``: points iteration does not reach
      (found by root-finding), with their unstable dimension;
    * ``"diverged"`` and ``"unconverged"`` (bounded, but no fixed point or cycle of period
      ``<= max_period`` was reached within ``max_steps``: too few steps, a slow transient, a long
      cycle or a strange attractor).

    Edges: ``start → attractor`` with ``fraction``, ``lo``, ``hi`` (95% Clopper–Pearson),
    ``count`` and ``median_steps``; ``saddle → attractor`` with ``kind="unstable_manifold"`` and
    ``direction`` (± along each unstable eigenvector): the heteroclinic skeleton.

    Attributes
    ----------
    graph : networkx.DiGraph
    fixed_points : FixedPointSet
        The search behind the nodes.
    node_of_label : dict
        Attractor label (as in ``fixed_points.labels``) → node id.
    targets : list
        ``(node, points, input_index)`` of every attractor, for matching states to nodes.

    Examples
    --------
    :func:`basin_graph` returns one:

    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
    >>> g.graph.number_of_edges(), g.fixed_points.counts()["stable"]
    (4, 4)
    >>> g.graph.nodes["fp:0"]["label"]
    'stable fixed point, ρ = 0.6'
    """

    graph: nx.DiGraph
    fixed_points: FixedPointSet
    node_of_label: dict[int, str] = field(default_factory=dict)
    targets: list[tuple[str, torch.Tensor, int]] = field(default_factory=list, repr=False)

    def node_of_point(self, point: Any, input_index: int = 0) -> str:
        """The attractor node nearest to a state, e.g. ``g.node_of_point([1, 1])``.

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
        >>> g.node_of_point([1, 1]), g.node_of_point([0.9, -1.2])
        ('fp:3', 'fp:2')
        """
        z = torch.as_tensor(point, dtype=torch.float64).reshape(1, -1)
        best, best_d = UNCONVERGED, math.inf
        for node, pts, inp in self.targets:
            if inp != input_index:
                continue
            d = float((pts.reshape(pts.shape[0], -1).double() - z).norm(dim=1).min())
            if d < best_d:
                best, best_d = node, d
        return best

    def attractors(self) -> list[str]:
        """Attractor node ids (fixed points, cycles, continua).

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
        >>> g.attractors()
        ['fp:0', 'fp:1', 'fp:2', 'fp:3']
        """
        return [n for n, d in self.graph.nodes(data=True) if d.get("attractor")]

    def nodes(self, kind: str) -> list[str]:
        """Node ids of one kind (``"fixed_point"``, ``"saddle"``, ``"cycle"``, …).

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
        >>> g.nodes("fixed_point"), g.nodes("saddle")  # no root-finding: no saddles
        (['fp:0', 'fp:1', 'fp:2', 'fp:3'], [])
        """
        return [n for n, d in self.graph.nodes(data=True) if d.get("kind") == kind]

    def basin_fractions(self, source: str = "start") -> dict[str, tuple[float, float, float]]:
        """``{target: (fraction, lo, hi)}`` of the start distribution (or one input).

        >>> import dynamo as dy
        >>> g = dy.basin_graph(dy.LoopedSystem.from_module(dy.models.Bistable(n=2)), n_starts=64)
        >>> round(sum(f for f, _, _ in g.basin_fractions().values()), 12)
        1.0
        """
        if source not in self.graph:
            raise InvalidArgumentError(
                f"BasinGraph.basin_fractions(source={source!r}): no such node; sources are "
                f"{[n for n, d in self.graph.nodes(data=True) if d.get('kind') == 'source']}"
            )
        return {
            t: (d["fraction"], d["lo"], d["hi"])
            for _, t, d in self.graph.out_edges(source, data=True)
        }

    def statistics(self) -> dict[str, dict[str, Any]]:
        """Per target node of the start distribution(s): count, fraction with its 95% interval,
        and the distribution of steps to convergence (quantiles over the starts that got there).

        Steps are a time to reach the target only for fixed points and continua (to tolerance)
        and for ``"diverged"`` (to escape). Starts on a cycle or ``"unconverged"`` ran to
        ``max_steps``, so their quantiles are ``None``, not the step cap.

        >>> import dynamo as dy
        >>> g = dy.basin_graph(dy.LoopedSystem.from_module(dy.models.Bistable(n=2)), n_starts=64,
        ...                    saddles=False)
        >>> stats = g.statistics()
        >>> sorted(round(v["fraction"], 4) for v in stats.values())
        [0.2031, 0.25, 0.25, 0.2969]
        """
        found = self.fixed_points
        per = found.starts_per_input
        out: dict[str, dict[str, Any]] = {}
        rows: dict[str, list[int]] = {}
        for row, lab in enumerate(found.labels.tolist()):
            node = (
                self.node_of_label.get(lab)
                if lab >= 0
                else (DIVERGED if lab in (-2, -3) else UNCONVERGED)
            )
            rows.setdefault(node or UNCONVERGED, []).append(row)
        total = found.n_inputs * per
        for node, rs in rows.items():
            st = found.steps[torch.tensor(rs)].double()
            lo, hi = clopper_pearson(len(rs), total)
            timed = node == DIVERGED or self.graph.nodes[node]["kind"] in (
                "fixed_point",
                "continuum",
            )
            out[node] = {
                "count": len(rs),
                "fraction": len(rs) / total,
                "interval": (lo, hi),
                "steps_min": float(st.min()) if timed else None,
                "steps_median": float(st.median()) if timed else None,
                "steps_p90": float(torch.quantile(st, 0.9)) if timed else None,
                "steps_max": float(st.max()) if timed else None,
            }
        return out

    def input_view(self) -> nx.DiGraph:
        """The bipartite input → attractor graph (one source node per input).

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
        >>> sorted(g.input_view().edges)
        [('start', 'fp:0'), ('start', 'fp:1'), ('start', 'fp:2'), ('start', 'fp:3')]
        """
        keep = [
            n
            for n, d in self.graph.nodes(data=True)
            if d.get("kind") == "source" or d.get("attractor") or n in (DIVERGED, UNCONVERGED)
        ]
        view = self.graph.subgraph(keep).copy()
        view.remove_edges_from(
            [(a, b) for a, b, d in view.edges(data=True) if d.get("kind") != "basin"]
        )
        return view

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"nodes": [...], "edges": [...]}`` (networkx node-link form).

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
        >>> d = g.to_dict()
        >>> sorted(d), d["nodes"][0]["id"], len(d["edges"])
        (['directed', 'edges', 'graph', 'multigraph', 'nodes'], 'start', 4)
        """
        import networkx as nx  # imported on use: `import dynamo` stays light

        return nx.node_link_data(self.graph, edges="edges")

    def to_json(self, path: str | Path | None = None) -> str:
        """The graph as JSON (written to ``path`` when given).

        Examples
        --------
        >>> import json
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
        >>> data = json.loads(g.to_json())
        >>> data["directed"], len(data["nodes"])
        (True, 7)
        """
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def write_graphml(self, path: str | Path) -> None:
        """The graph as GraphML (every attribute is a plain number or string).

        Examples
        --------
        >>> import pathlib, tempfile
        >>> import networkx as nx
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> g = dy.basin_graph(system, n_starts=16, saddles=False)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "basins.graphml"
        ...     g.write_graphml(path)
        ...     back = nx.read_graphml(path)
        >>> back.number_of_nodes(), back.number_of_edges()
        (7, 4)
        """
        import networkx as nx  # imported on use: `import dynamo` stays light

        nx.write_graphml(self.graph, str(path))

    def __str__(self) -> str:
        parts = []
        for n in self.attractors():
            d = self.graph.nodes[n]
            parts.append(f"{n} ({d['label']})")
        sinks = [n for n in (DIVERGED, UNCONVERGED) if self.graph.in_degree(n)]
        k, ns = len(parts), len(self.nodes("saddle"))
        return (
            f"BasinGraph: {k} attractor{'' if k == 1 else 's'} [{', '.join(parts)}], "
            f"{ns} saddle{'' if ns == 1 else 's'}, {len(self.nodes('unstable'))} unstable, "
            f"sinks: {', '.join(sinks) or 'none'}; {self.graph.number_of_edges()} edges"
        )


_Target = tuple[str, torch.Tensor, int]  # (node, points, input index): what a state is matched to


@dataclass(frozen=True)
class _BasinOptions:
    """:func:`basin_graph`'s arguments once checked: the system already bound to ``inputs`` and
    ``n_newton`` resolved to a number."""

    system: LoopedSystem
    starts: torch.Tensor | None
    n_starts: int
    start: StartKind
    scale: float
    tol: float | None
    max_steps: int
    max_period: int
    saddles: bool
    n_newton: int
    step: float
    dense_limit: int
    seed: int
    executor: Any = None
    shards: int | None = None

    @property
    def rtol(self) -> float:
        """The tolerance for iterating off a saddle: ``tol``, else the dtype's default."""
        # a property, not a field: computed only once a search with that dtype has succeeded
        return default_tolerance(self.system.dtype) if self.tol is None else self.tol


@dataclass(frozen=True)
class _Node:
    """A node to add to the graph: its id and its attributes (plain numbers and strings)."""

    id: str
    attrs: dict[str, Any]


@dataclass(frozen=True)
class _Attractors:
    """The attractor nodes, in the order of ``find_fixed_points``' basin labels."""

    nodes: tuple[_Node, ...]
    node_of_label: dict[int, str]
    targets: tuple[_Target, ...]


@dataclass(frozen=True)
class _BasinEdge:
    """``source → target``: how many of the source's starts ended on the target."""

    source: str
    target: str
    count: int
    fraction: float
    lo: float
    hi: float
    median_steps: float

    def attrs(self) -> dict[str, Any]:
        """The edge's attributes, in the order the graph has always stored them."""
        return {
            "kind": "basin",
            "count": self.count,
            "fraction": self.fraction,
            "lo": self.lo,
            "hi": self.hi,
            "median_steps": self.median_steps,
        }


@dataclass(frozen=True)
class _Unstable:
    """A fixed point iteration does not reach (a saddle, unstable or marginal), with its node."""

    node: _Node
    point: FixedPoint


@dataclass(frozen=True)
class _ManifoldEdge:
    """``saddle → destination`` along unstable directions; ``direction`` lists them, e.g.
    ``"+v0,-v1"``."""

    source: str
    target: str
    direction: str


def _node_attrs(**kw: Any) -> dict[str, Any]:
    """Node attributes as plain numbers: tensors to floats, non-finite floats to -1 (GraphML
    and strict JSON have no NaN or infinity)."""
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = float(v)
        if isinstance(v, float) and not math.isfinite(v):
            v = -1.0
        out[k] = v
    return out


#: Ritz pairs examined for expanding directions above ``dense_limit``
_KRYLOV_DIRECTIONS = 8


def _unstable_directions(
    system: LoopedSystem, state: torch.Tensor, sub: LoopedSystem, dense_limit: int, seed: int
) -> list[torch.Tensor]:
    """Unit vectors along the expanding eigen-directions (real parts for complex pairs).

    This is the file's one dense-or-Krylov switch. It does not use
    ``_linearize._top_eigenvalues``, which returns eigenvalues only: the directions need the
    eigenvectors (and its Krylov tolerance and step cap differ from this one's).
    """
    n = system.state_dim
    if n <= dense_limit:
        J = jacobian(sub, state[None])[0]
        lam, vec = torch.linalg.eig(J)
        out = []
        for i in torch.nonzero(lam.abs() > 1).flatten().tolist():
            if float(lam[i].imag) < 0:
                continue  # one direction per conjugate pair
            d = vec[:, i].real
            if float(d.norm()) < 1e-8:
                d = vec[:, i].imag
            out.append(d / d.norm())
        return out
    # the top _KRYLOV_DIRECTIONS Ritz pairs: every expanding one among them (a saddle of
    # higher index than that keeps only its strongest directions)
    op = _operator_at(sub, state[None])
    k = min(_KRYLOV_DIRECTIONS, n)
    kr = arnoldi(
        op.matvec,
        1,
        n,
        op.dtype,
        op.device,
        k=k,
        tol=1e-6,
        max_steps=min(n, 200),
        seed=seed,
        all_vectors=True,
    )
    lam, vec = kr.values[0], kr.vectors["right_all"][0]
    out = []
    for i in torch.nonzero(lam.abs() > 1).flatten().tolist():
        if float(lam[i].imag) < 0:
            continue  # one direction per conjugate pair
        d = vec[i].real
        if float(d.norm()) < 1e-8:
            d = vec[i].imag
        out.append(d / d.norm())
    return out


def _basin_options(
    system: LoopedSystem,
    starts: torch.Tensor | None,
    inputs: torch.Tensor | None,
    *,
    n_starts: int,
    start: StartKind,
    scale: float,
    tol: float | None,
    max_steps: int,
    max_period: int,
    saddles: bool,
    n_newton: int | None,
    step: float,
    dense_limit: int,
    seed: int,
    executor: Any = None,
    shards: int | None = None,
) -> _BasinOptions:
    """Check what :func:`basin_graph` checks itself (the rest is :func:`find_fixed_points`'),
    bind ``inputs``, resolve ``n_newton`` and the number of shards."""
    call = call_form("basin_graph", ["system"])
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    if starts is not None:
        check_state_shape(call, "starts", starts, system.state_shape)
    if inputs is not None:
        system = system.with_input(inputs)
    if n_newton is None:
        # basins need many starts, saddles far fewer
        n_newton = min(n_starts if starts is None else int(starts.shape[0]), 256)
    if executor is not None or shards is not None:
        shown = {} if shards is None else {"shards": shards}
        shards = _check_sharding(call_form("basin_graph", ["system"], **shown), executor, shards)
    return _BasinOptions(
        system=system,
        starts=starts,
        n_starts=n_starts,
        start=start,
        scale=scale,
        tol=tol,
        max_steps=max_steps,
        max_period=max_period,
        saddles=saddles,
        n_newton=n_newton,
        step=step,
        dense_limit=dense_limit,
        seed=seed,
        executor=executor,
        shards=shards,
    )


def _search(opts: _BasinOptions) -> FixedPointSet:
    """The multi-start search behind the graph (root-finding for the saddles only when asked)."""
    return find_fixed_points(
        opts.system,
        opts.n_starts,
        starts=opts.starts,
        mode="all" if opts.saddles else "reach",
        start=opts.start,
        scale=opts.scale,
        tol=opts.tol,
        max_steps=opts.max_steps,
        max_period=opts.max_period,
        dense_limit=opts.dense_limit,
        n_newton=opts.n_newton,
        seed=opts.seed,
        executor=opts.executor,
        shards=opts.shards,
    )


def _sources(found: FixedPointSet) -> tuple[str, ...]:
    """One source node id per input: ``"start"`` for a single one, else ``"input:b"``."""
    if found.n_inputs == 1:
        return ("start",)
    return tuple(f"input:{b}" for b in range(found.n_inputs))


def _frame_nodes(sources: tuple[str, ...], per: int, opts: _BasinOptions) -> tuple[_Node, ...]:
    """The nodes every graph has: the sources (``per`` starts each) and the two sinks."""
    unconverged = (
        f"bounded, no fixed point or cycle of period <= {opts.max_period} reached in "
        f"{opts.max_steps} steps (too few steps, a slow transient, a long cycle or a strange "
        "attractor: this run cannot tell which)"
    )
    return (
        *(
            _Node(s, dict(kind="source", input_index=b, label=s, n_starts=per, attractor=False))
            for b, s in enumerate(sources)
        ),
        _Node(
            DIVERGED,
            dict(
                kind="sink",
                label="diverged (escaped the divergence limit or went non-finite)",
                attractor=False,
                input_index=-1,
            ),
        ),
        _Node(UNCONVERGED, dict(kind="sink", label=unconverged, attractor=False, input_index=-1)),
    )


def _fixed_point_node(node: str, p: FixedPoint) -> _Node:
    """The node of a fixed point that iteration reached."""
    return _Node(
        node,
        _node_attrs(
            kind="fixed_point",
            attractor=True,
            stability=p.stability,
            input_index=p.input_index,
            residual=p.residual,
            spectral_radius=p.spectral_radius,
            basin_fraction=p.basin_fraction,
            basin_lo=p.basin_interval[0],
            basin_hi=p.basin_interval[1],
            state_norm=float(p.state.norm()),
            label=f"{p.stability} fixed point, ρ = {p.spectral_radius:.3g}",
        ),
    )


def _continuum_node(node: str, c: Continuum) -> _Node:
    """The node of a continuum of fixed points that iteration reached."""
    return _Node(
        node,
        _node_attrs(
            kind="continuum",
            attractor=True,
            dimension=c.dimension,
            input_index=c.input_index,
            basin_fraction=c.basin_fraction,
            label=f"continuum of dimension {c.dimension}",
        ),
    )


def _cycle_node(node: str, cyc: Cycle) -> _Node:
    """The node of a cycle that iteration reached."""
    return _Node(
        node,
        _node_attrs(
            kind="cycle",
            attractor=True,
            period=cyc.period,
            stability=cyc.stability,
            input_index=cyc.input_index,
            spectral_radius=cyc.spectral_radius,
            basin_fraction=cyc.basin_fraction,
            basin_lo=cyc.basin_interval[0],
            basin_hi=cyc.basin_interval[1],
            label=f"{cyc.stability} {cyc.period}-cycle",
        ),
    )


def _attractors(found: FixedPointSet) -> _Attractors:
    """A node for every attractor some start reached, in the order of ``found.labels``' basin
    labels: fixed points, then continua, then cycles."""
    nodes: list[_Node] = []
    targets: list[_Target] = []
    for p in found.points:
        if p.basin_count:  # fixed points come first, so len(nodes) counts them
            nodes.append(_fixed_point_node(f"fp:{len(nodes)}", p))
            targets.append((nodes[-1].id, p.state[None], p.input_index))
    for i, c in enumerate(found.continua):
        if c.basin_count:
            nodes.append(_continuum_node(f"continuum:{i}", c))
            targets.append((nodes[-1].id, c.samples, c.input_index))
    for i, cyc in enumerate(found.cycles):
        # every cycle that iteration landed on gets a label, in find_fixed_points' order
        if cyc.basin_count:
            nodes.append(_cycle_node(f"cycle:{i}", cyc))
            targets.append((nodes[-1].id, cyc.points, cyc.input_index))
    return _Attractors(
        nodes=tuple(nodes),
        node_of_label={label: n.id for label, n in enumerate(nodes)},
        targets=tuple(targets),
    )


def _basin_edges(
    found: FixedPointSet, sources: tuple[str, ...], node_of_label: dict[int, str]
) -> tuple[_BasinEdge, ...]:
    """Per source, one edge to each node its starts ended on, with the fraction's 95%
    Clopper–Pearson interval and the median steps."""
    per = found.starts_per_input
    edges: list[_BasinEdge] = []
    for b, s in enumerate(sources):
        labs = found.labels[b * per : (b + 1) * per]
        st = found.steps[b * per : (b + 1) * per]
        buckets: dict[str, list[int]] = {}
        for j, lab in enumerate(labs.tolist()):
            if lab >= 0:
                node = node_of_label[lab]
            elif lab in (-2, -3):
                node = DIVERGED
            else:
                node = UNCONVERGED
            buckets.setdefault(node, []).append(j)
        for node, js in buckets.items():
            lo, hi = clopper_pearson(len(js), per)
            med = float(st[torch.tensor(js)].double().median()) if js else 0.0
            edges.append(_BasinEdge(s, node, len(js), len(js) / per, lo, hi, med))
    return tuple(edges)


def _unstable_points(found: FixedPointSet) -> tuple[_Unstable, ...]:
    """A node for every fixed point no start reached, numbered per stability
    (``"saddle:0"``, ``"unstable:0"``, …)."""
    counters: dict[str, int] = {}
    out: list[_Unstable] = []
    for p in found.points:
        if p.basin_count:
            continue
        idx = counters.get(p.stability, 0)
        counters[p.stability] = idx + 1
        attrs = _node_attrs(
            kind=p.stability,
            attractor=False,
            input_index=p.input_index,
            residual=p.residual,
            spectral_radius=p.spectral_radius,
            n_unstable=p.n_unstable,
            state_norm=float(p.state.norm()),
            label=f"{p.stability}, {p.n_unstable} unstable direction(s), "
            f"ρ = {p.spectral_radius:.3g}",
        )
        out.append(_Unstable(_Node(f"{p.stability}:{idx}", attrs), p))
    return tuple(out)


def _manifold_ends(
    opts: _BasinOptions, p: FixedPoint, every: list[_Target], radius: float
) -> list[tuple[str, str]]:
    """Where plain iteration takes a step off ``p`` along each unstable direction, both ways:
    ``(destination node, "±vk")`` in the order ``+v0, -v0, +v1, …``."""
    system = opts.system
    sub = (
        system.with_input(system.x[p.input_index : p.input_index + 1])
        if (system.driven and system.x is not None)
        else system
    )
    dirs = _unstable_directions(system, p.state, sub, opts.dense_limit, opts.seed)
    if not dirs:
        return []
    scale_p = max(1.0, float(p.state.norm()))
    z0 = sub.flatten(p.state[None])
    pushed = torch.cat(
        [z0 + sgn * opts.step * scale_p * d[None] for d in dirs for sgn in (1.0, -1.0)]
    )
    rep = sub.repeat_input(pushed.shape[0]) if (sub.driven and sub.x is not None) else sub
    sol = solve(
        rep,
        rep.unflatten(pushed),
        method="picard",
        tol=opts.rtol,
        atol=opts.rtol,
        max_steps=opts.max_steps,
        throw=False,
    )
    return [
        (
            _match(
                system,
                sol.state[j],
                sol.outcomes[j].ok,
                every,
                p.input_index,
                radius,
                sol.outcomes[j].label,
            ),
            f"{'+' if j % 2 == 0 else '-'}v{j // 2}",
        )
        for j in range(pushed.shape[0])
    ]


def _unstable_manifolds(
    opts: _BasinOptions,
    found: FixedPointSet,
    targets: tuple[_Target, ...],
    unstable: tuple[_Unstable, ...],
) -> tuple[_ManifoldEdge, ...]:
    """The heteroclinic skeleton: one edge from each unstable point to each node its unstable
    directions lead to, the directions that do so joined by commas."""
    # an unstable manifold may end on another unstable point (a heteroclinic connection
    # along an invariant set), so the skeleton matches against every fixed point
    every = [*targets, *((u.node.id, u.point.state[None], u.point.input_index) for u in unstable)]
    directions: dict[tuple[str, str], str] = {}  # first-seen order: the graph's edge order
    for u in unstable:
        for dest, direction in _manifold_ends(opts, u.point, every, found.dedup_tol):
            key = (u.node.id, dest)
            directions[key] = f"{directions[key]},{direction}" if key in directions else direction
    return tuple(_ManifoldEdge(a, b, d) for (a, b), d in directions.items())


def _graph(
    nodes: tuple[_Node, ...],
    basins: tuple[_BasinEdge, ...],
    unstable: tuple[_Unstable, ...],
    manifolds: tuple[_ManifoldEdge, ...],
) -> nx.DiGraph:
    """The networkx graph; a sink no edge touches says so in its label."""
    import networkx as nx  # imported on use: `import dynamo` stays light

    # insertion order is the order of nodes, edges and JSON output, so it is kept as it was
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.id, **n.attrs)
    for e in basins:
        g.add_edge(e.source, e.target, **e.attrs())
    for u in unstable:
        g.add_node(u.node.id, **u.node.attrs)
    for m in manifolds:
        g.add_edge(m.source, m.target, kind="unstable_manifold", direction=m.direction)
    for n in list(g.nodes):
        if g.nodes[n].get("kind") == "sink" and g.degree(n) == 0:
            g.nodes[n]["label"] += " [no start ended here]"
    return g


def basin_graph(
    system: LoopedSystem,
    starts: torch.Tensor | None = None,
    *,
    n_starts: int = 256,
    inputs: torch.Tensor | None = None,
    start: StartKind = "normal",
    scale: float = 1.0,
    tol: float | None = None,
    max_steps: int = 1000,
    max_period: int = 8,
    saddles: bool = True,
    n_newton: int | None = None,
    step: float = 1e-3,
    dense_limit: int = 512,
    seed: int = 0,
    executor: Any = None,
    shards: int | None = None,
) -> BasinGraph:
    """The basin graph of a looped map: which starts (and inputs) flow to which attractor, and
    which saddles separate which attractors.

    Runs :func:`find_fixed_points` (``mode="all"`` when ``saddles``, else ``"reach"``), adds one
    source node per input (``"start"`` for a single one) with basin edges weighted by the
    fraction of its starts (with Clopper–Pearson intervals and median steps), and follows each
    saddle's unstable eigen-directions both ways (a step of ``step · max(1, ‖h*‖)``, then plain
    iteration) to link it to the attractors it separates.

    Parameters
    ----------
    system : LoopedSystem
    starts : torch.Tensor, optional
        ``(n, *state_shape)``, used for every input; default ``n_starts`` from ``start``/``scale``.
    n_starts : int
    inputs : torch.Tensor, optional
        Inputs to use instead of the system's own: the input → attractor view shows
        input-dependence at a glance.
    start, scale, tol, max_steps, max_period, dense_limit, seed :
        As in :func:`find_fixed_points`.
    saddles : bool
        Find saddles (root-finding) and their unstable manifolds.
    n_newton : int, optional
        Root-finding starts per input for the saddles (default ``min(starts, 256)``: basins need
        many starts, saddles far fewer).
    step : float
        Relative step off a saddle along its unstable directions.
    executor : concurrent.futures.Executor, optional
        Runs the search's independent per-start work in ``shards`` pieces, as
        :func:`find_fixed_points` does with it (a thread or process pool,
        :class:`dynamo.RayExecutor`); the graph, and the unstable manifolds followed from the
        saddles, are built in this process. The graph equals the one-process one (bit for bit
        when the map evaluates each state of a batch independently of the others, as
        elementwise maps and :class:`~dynamo.models.LoopedTransformer` with a multiple of 4
        tokens do on the CPU). None (default): everything in this process.
    shards : int, optional
        Pieces the starts are split into (default: as many as the executor runs at once).

    Examples
    --------
    >>> import dynamo as dy
    >>> g = dy.basin_graph(dy.LoopedSystem.from_module(dy.models.Bistable(n=2)), n_starts=128)
    >>> len(g.attractors()), len(g.nodes("saddle")), len(g.nodes("unstable"))
    (4, 4, 1)

    Sharded over two threads, the same graph:

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> with ThreadPoolExecutor(max_workers=2) as pool:
    ...     g2 = dy.basin_graph(system, n_starts=128, executor=pool)
    >>> len(g2.attractors()), len(g2.nodes("saddle")), len(g2.nodes("unstable"))
    (4, 4, 1)
    >>> sorted(g2.graph.edges(data="weight")) == sorted(g.graph.edges(data="weight"))
    True
    >>> g2.fixed_points.shards
    2
    """
    opts = _basin_options(
        system,
        starts,
        inputs,
        n_starts=n_starts,
        start=start,
        scale=scale,
        tol=tol,
        max_steps=max_steps,
        max_period=max_period,
        saddles=saddles,
        n_newton=n_newton,
        step=step,
        dense_limit=dense_limit,
        seed=seed,
        executor=executor,
        shards=shards,
    )
    found = _search(opts)
    sources = _sources(found)
    attractors = _attractors(found)
    basins = _basin_edges(found, sources, attractors.node_of_label)
    unstable = _unstable_points(found) if saddles else ()
    manifolds = _unstable_manifolds(opts, found, attractors.targets, unstable) if saddles else ()
    nodes = (*_frame_nodes(sources, found.starts_per_input, opts), *attractors.nodes)
    return BasinGraph(
        graph=_graph(nodes, basins, unstable, manifolds),
        fixed_points=found,
        node_of_label=attractors.node_of_label,
        targets=list(attractors.targets),
    )


def _match(
    system: LoopedSystem,
    state: torch.Tensor,
    ok: bool,
    targets: list[_Target],
    input_index: int,
    radius: float,
    outcome: str,
) -> str:
    """The node an iteration's end state is on: the nearest target of its input within
    ``max(1e3·radius, 1e-6·‖z‖)``, a sink when it failed (by its outcome) or is near none."""
    if not ok:
        return DIVERGED if outcome in ("diverged", "nonfinite") else UNCONVERGED
    z = system.flatten(state[None])
    best, best_d = UNCONVERGED, math.inf
    for node, pts, inp in targets:
        if inp != input_index:
            continue
        d = float((system.flatten(pts) - z).norm(dim=1).min())
        if d < best_d:
            best, best_d = node, d
    scale = max(1.0, float(z.norm()))
    return best if best_d <= max(1e3 * radius, 1e-6 * scale) else UNCONVERGED


# ---------------------------------------------------------------------- labelling and entropy
def label_states(
    system: LoopedSystem,
    graph: BasinGraph,
    states: torch.Tensor,
    *,
    input_index: int = 0,
    max_steps: int = 1000,
) -> tuple[torch.Tensor, list[str]]:
    """Iterate ``states`` and label each by the graph node it ends on (brute force).

    Returns ``(labels, names)``: ``labels[i]`` indexes ``names``, the attractor nodes followed by
    ``"diverged"`` and ``"unconverged"``.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> g = dy.basin_graph(system, n_starts=64, saddles=False)
    >>> h = torch.tensor([[0.5, 0.5], [-1.5, 0.1]], dtype=torch.float64)
    >>> labels, names = dy.label_states(system, g, h)
    >>> [names[i] for i in labels.tolist()] == [g.node_of_point([1, 1]), g.node_of_point([-1, 1])]
    True
    """
    call = call_form("label_states", ["system", "graph", "states"])
    if not isinstance(graph, BasinGraph):
        raise InvalidArgumentError(f"{call}: graph must be a dynamo.BasinGraph")
    check_state_shape(call, "states", states, system.state_shape)
    check_finite_tensor(call, "states", states)
    names = [*graph.attractors(), DIVERGED, UNCONVERGED]
    index = {n: i for i, n in enumerate(names)}
    sub = (
        system.with_input(system.x[input_index : input_index + 1])
        if (system.driven and system.x is not None)
        else system
    )
    rtol = graph.fixed_points.tol
    sol = solve(
        sub,
        states.to(system.dtype),
        method="picard",
        tol=rtol,
        atol=rtol,
        max_steps=max_steps,
        throw=False,
    )
    labels = torch.empty(states.shape[0], dtype=torch.long)
    targets = graph.targets
    for j in range(states.shape[0]):
        node = _match(
            system,
            sol.state[j],
            sol.outcomes[j].ok,
            targets,
            input_index,
            graph.fixed_points.dedup_tol,
            sol.outcomes[j].label,
        )
        labels[j] = index[node]
    return labels, names


@dataclass(frozen=True)
class CellMap:
    """Cell mapping on a 2-D plane: attractors and basins without any solver.

    The plane is cut into ``resolution²`` cells; ``samples²`` points of each cell are mapped by
    ``f^steps`` and projected onto the plane, and the cell's successor is the cell where most of
    them land (or the ``"escape"`` sink outside the extent). The attracting components of this
    functional graph (``networkx.attracting_components``: the cell cycles) are the attractors at
    the grid's resolution, merged where they touch; a cell's basin is the component its path
    reaches (simple cell mapping, Hsu 1980, with a majority vote per cell).

    Attributes
    ----------
    graph : networkx.DiGraph
        Cell → cell transitions (cells are ``(i, j)`` with ``i`` along ``u``; the sink is
        ``"escape"``).
    attractors : list of list of (int, int)
        Cells of each attracting component (the escape sink excluded).
    centres : list of torch.Tensor
        Mean plane coordinates ``(2,)`` of each attractor's cells.
    labels : numpy.ndarray
        ``(resolution, resolution)`` indexed ``[j, i]``: the attractor each cell flows to, -1 for
        escape.
    plane : Plane
    resolution : int

    Examples
    --------
    :func:`cell_mapping` returns one:

    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> cm = dy.cell_mapping(system, dy.Plane.box((-2, 2), (-2, 2)), resolution=10)
    >>> len(cm.attractors), cm.labels.shape, cm.resolution
    (4, (10, 10), 10)
    """

    graph: nx.DiGraph
    attractors: list[list[tuple[int, int]]]
    centres: list[torch.Tensor]
    labels: np.ndarray
    plane: Plane
    resolution: int

    def fractions(self) -> dict[int, float]:
        """Share of cells flowing to each attractor (-1: escape).

        Examples
        --------
        >>> import dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
        >>> cm = dy.cell_mapping(system, dy.Plane.box((-2, 2), (-2, 2)), resolution=10)
        >>> cm.fractions()  # four quadrant basins, nothing escapes
        {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25}
        """
        vals, counts = np.unique(self.labels, return_counts=True)
        return {int(v): float(c) / self.labels.size for v, c in zip(vals, counts, strict=True)}


def cell_mapping(
    system: LoopedSystem,
    plane: Plane,
    resolution: int = 100,
    *,
    samples: int = 3,
    steps: int | None = None,
    input_index: int = 0,
) -> CellMap:
    """Attractors and basins of a map on a 2-D plane by cell mapping (after Hsu).

    For a 2-D map (:meth:`Plane.box`) this is a solver-free cross-check of
    :func:`find_fixed_points`; on a slice of a larger state it is a heuristic (images are
    projected back onto the plane).

    Parameters
    ----------
    system : LoopedSystem
    plane : Plane
    resolution : int
        Cells per side (>= 1).
    samples : int
        Sample points per cell and side.
    steps : int, optional
        Map applications per transition. A slow map needs several to leave a cell (else a cell
        next to a repelling point, whose samples move less than a cell per step, looks closed);
        default: doubled from 1 until two doublings in a row leave the number of attractors
        unchanged (at most 32).
    input_index : int

    Examples
    --------
    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> cm = dy.cell_mapping(system, dy.Plane.box((-2, 2), (-2, 2)), resolution=40)
    >>> len(cm.attractors), sorted(round(float(c.abs().max()), 1) for c in cm.centres)
    (4, [1.0, 1.0, 1.0, 1.0])
    """
    import networkx as nx  # imported on use: `import dynamo` stays light

    call = call_form("cell_mapping", ["system", "plane"], resolution=resolution)
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    if not isinstance(plane, Plane):
        raise InvalidArgumentError(f"{call}: plane must be a dynamo.Plane")
    check_positive_int(call, "resolution", resolution)
    check_positive_int(call, "samples", samples)
    if steps is not None:
        check_positive_int(call, "steps", steps)
    if plane.origin.numel() != system.state_dim:
        raise ShapeError(
            f"{call}: the plane lives in {plane.origin.numel()} dimensions, the state in "
            f"{system.state_dim}"
        )
    (a0, a1), (b0, b1) = plane.extent
    fine = resolution * samples
    _, _, pts = Plane(plane.origin, plane.u, plane.v, plane.extent).grid(fine)
    sub = (
        system.with_input(system.x[input_index : input_index + 1])
        if (system.driven and system.x is not None)
        else system
    )
    n = resolution * resolution
    fi = np.arange(fine * fine) % fine // samples  # the cell each sample point starts in
    fj = np.arange(fine * fine) // fine // samples
    source = fj * resolution + fi

    def transitions(z: torch.Tensor) -> tuple[nx.DiGraph, list[list[int]]]:
        coords = plane.coordinates(z).numpy()
        coords = np.where(np.abs(coords) < 1e300, coords, np.nan)  # escaped: no cell
        with np.errstate(invalid="ignore"):
            i = np.floor((coords[:, 0] - a0) / (a1 - a0) * resolution)
            j = np.floor((coords[:, 1] - b0) / (b1 - b0) * resolution)
        finite = np.isfinite(coords).all(axis=1)
        inside = finite & (i >= 0) & (i < resolution) & (j >= 0) & (j < resolution)
        target = np.where(inside, np.nan_to_num(j) * resolution + np.nan_to_num(i), n)
        target = target.astype(np.int64)
        # each cell goes where most of its samples land (a functional graph, as in simple cell
        # mapping, but a cell beside a basin boundary follows its majority, not its centre)
        pairs = source * (n + 1) + target
        uniq, counts = np.unique(pairs, return_counts=True)
        src, dst = uniq // (n + 1), uniq % (n + 1)
        order = np.lexsort((-counts, src))
        first = np.ones(len(order), dtype=bool)
        first[1:] = src[order][1:] != src[order][:-1]
        succ = np.full(n, n, dtype=np.int64)
        succ[src[order][first]] = dst[order][first]
        graph = nx.DiGraph()
        graph.add_nodes_from(range(n + 1))
        graph.add_edges_from(zip(range(n), succ.tolist(), strict=True))
        graph.add_edge(n, n)
        return graph, _merge_touching(
            [sorted(c) for c in nx.attracting_components(graph) if n not in c], resolution
        )

    z = pts.to(system.dtype)
    done = 0
    counts: list[int] = []
    with torch.no_grad():
        for power in range(6):  # steps 1, 2, 4, ..., 32 when automatic
            want = steps if steps is not None else 2**power
            while done < want:
                z = sub.flat_step(z)
                done += 1
            g, comps = transitions(z)
            counts.append(len(comps))
            # automatic: stop once two doublings in a row leave the attractor count unchanged
            # (a cell beside a repelling point looks closed until its samples leave it)
            if steps is not None or (len(counts) >= 3 and len(set(counts[-3:])) == 1):
                break
    reach = np.full(n + 1, -1, dtype=np.int64)  # -1: none yet; k: component k; -2: several
    rev = g.reverse(copy=False)
    for k, comp in enumerate(comps):
        basin = set(comp)
        for c in comp:
            basin |= nx.descendants(rev, c)
        idx = np.fromiter(basin, dtype=np.int64)
        prev = reach[idx]
        reach[idx] = np.where(prev == -1, k, -2)
    labels = reach[:n].reshape(resolution, resolution)
    cells = [[(int(c % resolution), int(c // resolution)) for c in comp] for comp in comps]
    a, b, _ = plane.grid(resolution)
    centres = [
        torch.tensor(
            [float(np.mean([a[ci] for ci, _ in cs])), float(np.mean([b[cj] for _, cj in cs]))]
        )
        for cs in cells
    ]
    names = {k: (k % resolution, k // resolution) for k in range(n)}
    names[n] = "escape"  # type: ignore[assignment]
    named = nx.relabel_nodes(g, names)
    return CellMap(
        graph=named,
        attractors=cells,
        centres=centres,
        labels=labels,
        plane=plane,
        resolution=resolution,
    )


def _merge_touching(raw: list[list[int]], resolution: int) -> list[list[int]]:
    """An attractor on a cell corner or edge is shared by touching closed cell sets: merge them."""
    import networkx as nx  # imported on use: `import dynamo` stays light

    uf = nx.utils.UnionFind(range(len(raw)))
    owner = {c: k for k, comp in enumerate(raw) for c in comp}
    for k, comp in enumerate(raw):
        for c in comp:
            ci, cj = c % resolution, c // resolution
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    ni, nj = ci + di, cj + dj
                    if 0 <= ni < resolution and 0 <= nj < resolution:
                        other = owner.get(nj * resolution + ni)
                        if other is not None and other != k:
                            uf.union(k, other)
    merged: dict[int, list[int]] = {}
    for k, comp in enumerate(raw):
        merged.setdefault(uf[k], []).extend(comp)
    return sorted((sorted(c) for c in merged.values()), key=lambda c: c[0])


def basin_entropy(labels: np.ndarray, box: int = 5) -> tuple[float, float]:
    """Basin entropy ``S_b`` and boundary basin entropy ``S_bb`` of a labelled grid.

    The grid is cut into ``box × box`` boxes; in each, ``S_i = −Σ_j p_j log p_j`` over the
    labels' frequencies. ``S_b`` averages over all boxes, ``S_bb`` over boxes holding more than
    one label (Daza et al., Sci. Rep. 6, 31416, 2016). ``S_bb > log 2`` is a sufficient sign of a
    fractal basin boundary.

    >>> import numpy as np
    >>> from dynamo import basin_entropy
    >>> labels = np.zeros((10, 10), dtype=int); labels[:, 5:] = 1
    >>> basin_entropy(labels, box=5)
    (0.0, 0.0)
    """
    if box < 1:
        raise InvalidArgumentError(f"basin_entropy(labels, box={box}): box must be >= 1")
    h, w = labels.shape
    ents = []
    for i0 in range(0, h - h % box, box):
        for j0 in range(0, w - w % box, box):
            cell = labels[i0 : i0 + box, j0 : j0 + box].ravel()
            _, counts = np.unique(cell, return_counts=True)
            p = counts / counts.sum()
            ents.append(float(-(p * np.log(p)).sum()))
    arr = np.array(ents)
    boundary = arr[arr > 0]
    return float(arr.mean()) if arr.size else 0.0, float(boundary.mean()) if boundary.size else 0.0
