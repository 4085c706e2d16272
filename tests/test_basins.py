"""Basin graphs against brute-force grids, cell mapping, statistics, plots and export."""

from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import pytest
import torch
from scipy.stats import qmc

import dynamo as dy
from dynamo.errors import InvalidArgumentError, ShapeError

F64 = torch.float64


def sobol_box(n_log2: int, lo: float, hi: float, seed: int = 0) -> torch.Tensor:
    pts = qmc.Sobol(d=2, scramble=True, seed=seed).random_base2(n_log2)
    return torch.as_tensor(lo + (hi - lo) * pts, dtype=F64)


def grid_box(res: int, lo: float, hi: float) -> torch.Tensor:
    c = lo + (np.arange(res) + 0.5) * (hi - lo) / res
    A, B = np.meshgrid(c, c)
    return torch.as_tensor(np.stack([A.ravel(), B.ravel()], axis=1), dtype=F64)


def test_bistable_basin_fractions_match_a_brute_force_grid() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    g = dy.basin_graph(system, starts=sobol_box(12, -2, 2))
    assert len(g.attractors()) == 4
    assert len(g.nodes("saddle")) == 4 and len(g.nodes("unstable")) == 1
    fractions = g.basin_fractions()
    # brute force: iterate a fine grid and label by the nearest stable point
    grid = grid_box(200, -2, 2)
    with torch.no_grad():
        final = system.iterate(grid, n_steps=300, record=False).final
    stable = torch.tensor([[a, b] for a in (-1.0, 1.0) for b in (-1.0, 1.0)], dtype=F64)
    dist = torch.cdist(final, stable)
    for k, point in enumerate(stable):
        brute = float(((dist.argmin(dim=1) == k) & (dist.min(dim=1).values < 1e-6)).double().mean())
        node = g.node_of_point(point.tolist())
        frac, lo, hi = fractions[node]
        assert abs(frac - brute) <= 0.01
        assert lo <= frac <= hi


def test_henon_escapes_to_diverged_and_the_rest_to_a_node_that_says_so() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Henon())
    g = dy.basin_graph(system, starts=sobol_box(12, -2, 2))
    assert g.attractors() == []  # no stable fixed point or short cycle
    assert len(g.nodes("saddle")) == 2
    fractions = g.basin_fractions()
    assert set(fractions) == {"diverged", "unconverged"}
    assert "strange attractor" in g.graph.nodes["unconverged"]["label"]
    grid = grid_box(200, -2, 2)
    with torch.no_grad():
        final = system.iterate(grid, n_steps=300, record=False).final
    escaped = ~torch.isfinite(final).all(dim=1) | (final.norm(dim=1) > 1e3)
    assert abs(fractions["diverged"][0] - float(escaped.double().mean())) <= 0.01
    assert abs(fractions["unconverged"][0] - float((~escaped).double().mean())) <= 0.01


def test_hopfield_one_node_per_pattern_and_saddles_link_what_they_separate() -> None:
    model = dy.models.Hopfield(n=64, n_patterns=3, seed=0)
    system = dy.LoopedSystem.from_module(model)
    g = dy.basin_graph(system, n_starts=128)
    attractor_signs = {n: torch.sign(pts[0]) for n, pts, _ in g.targets}
    for pattern in torch.cat([model.patterns, -model.patterns]):
        owners = [n for n, s in attractor_signs.items() if torch.equal(s, pattern)]
        assert len(owners) == 1, "each pattern and its negative is one node"
    assert len(g.attractors()) == 6
    saddles = g.nodes("saddle")
    assert saddles
    for s in saddles:
        reached = {
            v for _, v, d in g.graph.out_edges(s, data=True) if d["kind"] == "unstable_manifold"
        }
        assert reached <= set(g.attractors())
        assert len(reached) >= 2  # a saddle sits between the attractors it separates


def test_cell_mapping_agrees_with_the_solver_on_the_bistable_map() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    cm = dy.cell_mapping(system, dy.Plane.box((-2, 2), (-2, 2)), resolution=60)
    g = dy.basin_graph(system, n_starts=64, saddles=False)
    assert len(cm.attractors) == len(g.attractors()) == 4
    cell = 4 / 60
    solver_points = torch.stack([pts[0] for _, pts, _ in g.targets])
    for centre in cm.centres:
        assert float(torch.cdist(centre[None].double(), solver_points).min()) <= cell
    for frac in (v for k, v in cm.fractions().items() if k >= 0):
        assert abs(frac - 0.25) <= 0.01


def test_cell_mapping_on_henon_finds_only_the_strange_attractor() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Henon())
    cm = dy.cell_mapping(system, dy.Plane.box((-2, 2), (-2, 2)), resolution=100)
    assert cm.attractors  # the bounded attractor, at this resolution
    with torch.no_grad():
        orbit = system.iterate(torch.tensor([[0.1, 0.1]], dtype=F64), n_steps=3000).states
    assert orbit is not None
    on_attractor = orbit[1000:, 0]
    cell = 4 / 100
    for centre in cm.centres:  # every cell attractor sits on the strange attractor ...
        assert float(torch.cdist(centre[None].double(), on_attractor).min()) <= 2 * cell
    saddles = dy.models.Henon().fixed_points()
    for centre in cm.centres:  # ... and none is a saddle mistaken for a sink
        assert float(torch.cdist(centre[None].double(), saddles).min()) > cell
    g = dy.basin_graph(system, starts=sobol_box(12, -2, 2), saddles=False)
    assert abs(cm.fractions()[-1] - g.basin_fractions()["diverged"][0]) <= 0.02


def test_statistics_and_input_view() -> None:
    f = dy.models.ContractiveTanh(n=4, lipschitz=0.8, seed=0)
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    g = dy.basin_graph(dy.LoopedSystem.from_module(f, x), n_starts=8)
    view = g.input_view()
    sources = [n for n, d in view.nodes(data=True) if d["kind"] == "source"]
    assert sorted(sources) == ["input:0", "input:1", "input:2"]
    targets = {next(iter(view.successors(s))) for s in sources}
    assert len(targets) == 3  # each input its own fixed point: input-dependence at a glance
    stats = g.statistics()
    assert sum(v["count"] for v in stats.values()) == 24
    for v in stats.values():
        lo, hi = v["interval"]
        assert lo <= v["fraction"] <= hi
        assert v["steps_min"] <= v["steps_median"] <= v["steps_max"]


def test_statistics_give_no_step_count_for_starts_that_ran_to_the_cap() -> None:
    logistic = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2))
    stats = dy.basin_graph(logistic, n_starts=16, saddles=False, max_steps=300).statistics()
    assert stats["cycle:0"]["count"] > 0 and stats["cycle:0"]["steps_median"] is None
    assert stats["diverged"]["steps_median"] is not None  # escaping is timed


def test_basin_entropy() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    g = dy.basin_graph(system, n_starts=64, saddles=False)
    labels, _ = dy.label_states(system, g, grid_box(62, -2, 2))  # boxes straddle the axes
    sb, sbb = dy.basin_entropy(labels.numpy().reshape(62, 62), box=5)
    assert 0 < sb < sbb <= math.log(2) + 1e-12  # smooth quadrant boundaries
    rng = np.random.default_rng(0)
    _, noisy_sbb = dy.basin_entropy(rng.integers(0, 4, size=(60, 60)), box=5)
    assert noisy_sbb > math.log(2)  # a riddled labelling
    with pytest.raises(InvalidArgumentError, match="box must be >= 1"):
        dy.basin_entropy(np.zeros((4, 4), dtype=int), box=0)


def test_export_graphml_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = dy.basin_graph(dy.LoopedSystem.from_module(dy.models.Bistable(n=2)), n_starts=64)
    path = tmp_path / "basins.graphml"
    g.write_graphml(path)
    back = nx.read_graphml(path)
    assert set(back.nodes) == set(g.graph.nodes)
    assert back.number_of_edges() == g.graph.number_of_edges()
    data = json.loads(g.to_json(tmp_path / "basins.json"))
    assert {n["id"] for n in data["nodes"]} == set(g.graph.nodes)
    for _, attrs in g.graph.nodes(data=True):
        assert all(isinstance(v, (int, float, str, bool)) for v in attrs.values())


def test_plots_render_headless(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    g = dy.basin_graph(system, n_starts=64)
    for name, ax in [
        ("map", dy.plots.basin_map(system, dy.Plane.box((-2, 2), (-2, 2)), g, resolution=40)),
        ("graph", dy.plots.basin_graph(g)),
        ("traj", dy.plots.trajectories(system, torch.randn(5, 2, dtype=F64), 30, graph=g)),
    ]:
        out = tmp_path / f"{name}.png"
        ax.figure.savefig(out)
        assert out.stat().st_size > 5000


def test_bad_input() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    with pytest.raises(ShapeError, match="empty batch dimension"):
        dy.basin_graph(system, starts=torch.zeros(0, 2, dtype=F64))
    with pytest.raises(InvalidArgumentError, match="u and v are parallel"):
        dy.Plane.through(torch.zeros(2), torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
    with pytest.raises(InvalidArgumentError, match="resolution must be >= 1"):
        dy.cell_mapping(system, dy.Plane.box((-1, 1), (-1, 1)), resolution=0)
    g = dy.basin_graph(system, n_starts=8, saddles=False)
    with pytest.raises(InvalidArgumentError, match="resolution must be >= 1"):
        dy.plots.basin_map(system, dy.Plane.box((-1, 1), (-1, 1)), g, resolution=0)


def test_krylov_unstable_directions_keep_every_expanding_direction() -> None:
    """Above dense_limit, a saddle of index 2 or 3 has as many unstable directions as the dense
    spectrum gives (the Krylov path used to keep only the top one)."""
    from dynamo._basins import _unstable_directions

    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=3))
    found = dy.find_fixed_points(system, 32, mode="all")
    saddles = [p for p in found.points if p.n_unstable >= 2]
    assert {p.n_unstable for p in saddles} == {2, 3}
    for p in saddles:
        dense = _unstable_directions(system, p.state, system, dense_limit=64, seed=0)
        krylov = _unstable_directions(system, p.state, system, dense_limit=1, seed=0)
        assert len(dense) == len(krylov) == p.n_unstable
        # the same expanding subspace: each Krylov direction lies in the dense directions' span
        q, _ = torch.linalg.qr(torch.stack(dense).T)
        for d in krylov:
            assert float((d - q @ (q.T @ d)).norm()) < 1e-5
