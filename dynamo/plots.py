"""matplotlib figures of dynamo's results: basin maps, basin graphs, trajectories.

matplotlib is an optional dependency (``pip install looped-dynamo[plots]``); it is imported when a
plot is drawn, never when dynamo is imported. Every function takes an optional ``ax`` and returns
the axes it drew on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ._basins import BasinGraph, Plane, label_states
from ._system import LoopedSystem
from ._validate import call_form, check_positive_int, check_state_shape
from .errors import DynamoError, InvalidArgumentError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["basin_graph", "basin_map", "trajectories"]

_KIND_COLOUR = {
    "source": "#4c72b0",
    "fixed_point": "#2ca02c",
    "cycle": "#17becf",
    "continuum": "#bcbd22",
    "saddle": "#d62728",
    "unstable": "#9467bd",
    "marginal": "#ff7f0e",
    "sink": "#7f7f7f",
}


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DynamoError(
            "dynamo.plots needs matplotlib: pip install 'looped-dynamo[plots]'"
        ) from err
    return plt


def _axes(ax: Axes | None, size: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    plt = _pyplot()
    _, ax = plt.subplots(figsize=size)
    return ax


def basin_map(
    system: LoopedSystem,
    plane: Plane,
    graph: BasinGraph,
    *,
    resolution: int = 100,
    input_index: int = 0,
    max_steps: int = 1000,
    ax: Axes | None = None,
) -> Axes:
    """Colour each point of a 2-D plane by the attractor its iteration reaches (a basin map).

    Points are iterated from a ``resolution × resolution`` grid on ``plane`` and labelled by the
    graph's attractor nodes (:func:`dynamo.label_states`), with diverged and unconverged points in
    their own colours; fixed points and saddles of the graph that lie near the plane are marked.

    Examples
    --------
    >>> import dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    >>> g = dy.basin_graph(system, n_starts=64)
    >>> ax = dy.plots.basin_map(system, dy.Plane.box((-2, 2), (-2, 2)), g, resolution=30)
    >>> ax.get_title()
    'basin map: 4 attractors'
    """
    call = call_form("plots.basin_map", ["system", "plane", "graph"], resolution=resolution)
    check_positive_int(call, "resolution", resolution)
    if not isinstance(plane, Plane):
        raise InvalidArgumentError(f"{call}: plane must be a dynamo.Plane")
    if plane.origin.numel() != system.state_dim:
        raise InvalidArgumentError(
            f"{call}: the plane lives in {plane.origin.numel()} dimensions, the state in "
            f"{system.state_dim}"
        )
    plt = _pyplot()
    _, _, pts = plane.grid(resolution)
    labels, names = label_states(
        system,
        graph,
        system.unflatten(pts.to(system.dtype)),
        input_index=input_index,
        max_steps=max_steps,
    )
    ax = _axes(ax, (5.5, 5))
    n_att = len(names) - 2
    cmap = plt.get_cmap("tab10" if n_att <= 10 else "tab20")
    colours = [cmap(i % cmap.N) for i in range(n_att)] + [(0.95, 0.95, 0.95, 1), (0.3, 0.3, 0.3, 1)]
    from matplotlib.colors import ListedColormap

    img = labels.numpy().reshape(resolution, resolution)
    (a0, a1), (b0, b1) = plane.extent
    ax.imshow(
        img,
        origin="lower",
        extent=(a0, a1, b0, b1),
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        interpolation="nearest",
        aspect="auto",
    )
    handles = []
    from matplotlib.patches import Patch

    present = set(img.ravel().tolist())
    for i, name in enumerate(names):
        if i in present:
            handles.append(Patch(color=colours[i], label=name))
    # fixed points and saddles near the plane
    fps = graph.fixed_points
    for p in fps.points:
        if p.input_index != input_index:
            continue
        z = p.state.reshape(1, -1).double()
        c = plane.coordinates(z)[0]
        off = float((z[0] - plane.origin - c[0] * plane.u - c[1] * plane.v).norm())
        if off > 1e-6 * max(1.0, float(z.norm())):
            continue
        marker = {"stable": "o", "saddle": "X", "unstable": "^", "marginal": "s"}[p.stability]
        ax.scatter(
            [float(c[0])],
            [float(c[1])],
            marker=marker,
            s=90,
            color="black",
            edgecolor="white",
            zorder=3,
        )
    ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.85)
    ax.set_xlabel("coordinate along u")
    ax.set_ylabel("coordinate along v")
    ax.set_title(f"basin map: {len(graph.attractors())} attractors")
    return ax


def basin_graph(graph: BasinGraph, *, ax: Axes | None = None, seed: int = 0) -> Axes:
    """Draw a basin graph: node size by basin fraction, colour by kind, edge width by fraction.

    Examples
    --------
    >>> import dynamo as dy
    >>> g = dy.basin_graph(dy.LoopedSystem.from_module(dy.models.Bistable(n=2)), n_starts=64)
    >>> ax = dy.plots.basin_graph(g)
    >>> len(ax.collections) >= 1
    True
    """
    import networkx as nx

    plt = _pyplot()
    if not isinstance(graph, BasinGraph):
        raise InvalidArgumentError("plots.basin_graph(graph): graph must be a dynamo.BasinGraph")
    g = graph.graph
    ax = _axes(ax, (7, 5))
    keep = [n for n in g.nodes if g.degree(n) > 0]
    sub = g.subgraph(keep)
    pos = nx.spring_layout(sub, seed=seed, k=1.2 / math.sqrt(max(1, sub.number_of_nodes())))
    sizes, colours = [], []
    for n in sub.nodes:
        d = sub.nodes[n]
        frac = sum(
            e.get("fraction", 0.0)
            for _, _, e in g.in_edges(n, data=True)
            if e.get("kind") == "basin"
        )
        sizes.append(250 + 2500 * frac if d.get("kind") != "source" else 600)
        colours.append(_KIND_COLOUR.get(str(d.get("kind")), "#cccccc"))
    nx.draw_networkx_nodes(sub, pos, node_size=sizes, node_color=colours, ax=ax, alpha=0.9)
    basin = [(u, v) for u, v, d in sub.edges(data=True) if d.get("kind") == "basin"]
    skel = [(u, v) for u, v, d in sub.edges(data=True) if d.get("kind") != "basin"]
    widths = [0.5 + 6 * sub.edges[e]["fraction"] for e in basin]
    nx.draw_networkx_edges(
        sub,
        pos,
        edgelist=basin,
        width=widths,
        ax=ax,
        alpha=0.6,
        edge_color="#4c72b0",
        arrows=True,
        node_size=sizes,
    )
    nx.draw_networkx_edges(
        sub,
        pos,
        edgelist=skel,
        width=1.0,
        ax=ax,
        style="dashed",
        edge_color="#d62728",
        arrows=True,
        node_size=sizes,
    )
    nx.draw_networkx_labels(sub, pos, font_size=7, ax=ax)
    ax.set_title("basin graph: blue = share of starts, red dashed = unstable manifolds", fontsize=9)
    ax.set_axis_off()
    plt.tight_layout()
    return ax


def trajectories(
    system: LoopedSystem,
    h0: torch.Tensor,
    n_steps: int = 100,
    *,
    graph: BasinGraph | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Trajectories projected on their first two principal components, fixed points marked.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.Hopfield(n=32, n_patterns=2, seed=0)
    >>> system = dy.LoopedSystem.from_module(f)
    >>> ax = dy.plots.trajectories(system, 0.3 * torch.randn(6, 32, dtype=torch.float64), 30)
    >>> ax.get_xlabel()
    'PC 1'
    """
    call = call_form("plots.trajectories", ["system", "h0"], n_steps=n_steps)
    check_state_shape(call, "h0", h0, system.state_shape)
    check_positive_int(call, "n_steps", n_steps)
    traj = system.iterate(h0.to(system.dtype), n_steps=n_steps)
    assert traj.states is not None
    flat = traj.states.reshape(traj.states.shape[0] * h0.shape[0], -1).double()
    flat = flat[torch.isfinite(flat).all(dim=1)]
    mean = flat.mean(dim=0)
    _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    basis = vh[:2].T  # (n, 2)
    ax = _axes(ax, (5.5, 4.5))
    for k in range(h0.shape[0]):
        path = traj.states[:, k].reshape(traj.states.shape[0], -1).double()
        ok = torch.isfinite(path).all(dim=1)
        xy = ((path[ok] - mean) @ basis).numpy()
        ax.plot(xy[:, 0], xy[:, 1], lw=0.8, alpha=0.7)
        ax.scatter(xy[:1, 0], xy[:1, 1], s=10, color="0.4")
    if graph is not None:
        for p in graph.fixed_points.points:
            xy = ((p.state.reshape(1, -1).double() - mean) @ basis).numpy()
            marker = {"stable": "o", "saddle": "X", "unstable": "^", "marginal": "s"}[p.stability]
            ax.scatter(
                xy[:, 0], xy[:, 1], marker=marker, s=80, color="black", zorder=3, label=p.stability
            )
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=False))
        if uniq:
            ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{h0.shape[0]} trajectories, {n_steps} steps (PCA of all states)", fontsize=9)
    return ax
