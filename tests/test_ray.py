"""Ray as the engine: `dynamo sweep --executor ray` on a local Ray instance and on a real two-node
Ray cluster started on this machine (`ray start --head` plus a second node joining it, one CPU
each), with the same certificates as one process, and a worker killed mid-sweep.

Slow (each Ray start costs 15-40 s on two cores): run with ``python -m pytest -m slow
tests/test_ray.py``; `.ci/run` does, after installing the ``[ray]`` extra.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from verify._sweep import SweepReport, load_sweep, run_sweep

pytestmark = pytest.mark.slow

try:
    import ray
except ImportError:  # pragma: no cover - depends on the installation
    ray = None

from test_sweep import GRID, _certs, _killer_sweep, _write  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _ray_installed() -> None:
    """Skip on a machine without the ``[ray]`` extra; fail in CI, whose .ci/run installs it for
    the slow stage, so Ray cannot silently drop out of the run. Checked when a test runs, not
    when the module is collected: the default suite (no extra, slow tests deselected) collects
    this module too."""
    if ray is not None:
        return
    reason = "Ray is not installed: pip install 'looped-dynamo[ray]'"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, but .ci/run installs it before this stage")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A head node and a worker node, each a ``ray start --block`` process of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = root / "token"
        token.write_text(secrets.token_hex(32))
        # token authentication, as Ray 2.5x enables by default: every process shares the token
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[BinaryIO] = []

    def _start(self, *args: str, log: str) -> None:
        exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        self.logs.append((self.root / log).open("wb"))
        self.procs.append(
            subprocess.Popen(
                [exe, "start", "--num-cpus=1", "--block", *args],
                env={**os.environ, **self.env},
                stdout=self.logs[-1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def start(self) -> None:
        self._start(
            "--head",
            f"--port={self.port}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.root / 'tmp'}",
            log="head.log",
        )
        deadline = time.monotonic() + 600  # a startup wait, not a performance limit
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert self.procs[0].poll() is None, (self.root / "head.log").read_text()
                assert time.monotonic() < deadline, "the head node did not open its port"
                time.sleep(0.5)
        # the second node: Ray gives a node 30 s to register with the head, which a loaded
        # 2-core machine can miss; a node that gave up is started again (three tries)
        wait = (
            "import ray, time\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            "while sum(n['Alive'] for n in ray.nodes()) < 2: time.sleep(0.5)\n"
            "print(ray.cluster_resources()['CPU'])\n"
        )
        env = {**os.environ, **self.env, "OMP_NUM_THREADS": "1"}
        for attempt in range(3):
            self._start(f"--address={self.address}", log=f"worker{attempt}.log")
            waiter = subprocess.Popen(
                [sys.executable, "-c", wait],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            while waiter.poll() is None and self.procs[-1].poll() is None:
                assert time.monotonic() < deadline, "the two nodes did not come up"
                time.sleep(0.5)
            if waiter.poll() is None:  # the node gave up: stop waiting, start it again
                waiter.kill()
                waiter.wait()
                continue
            out, _ = waiter.communicate()
            assert waiter.returncode == 0
            assert out.split()[-1] == "2.0"
            return
        logs = "\n".join(f.name + ":\n" + Path(f.name).read_text()[-1500:] for f in self.logs)
        pytest.fail(f"the second node did not start in three tries:\n{logs}")

    def driver(self, args: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """A Python process that joins the cluster with its token (each driver is a process of
        its own: Ray reads the authentication settings once per process)."""
        return subprocess.run(
            [sys.executable, *args],
            env={**os.environ, **self.env, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            p.wait(timeout=120)
        for f in self.logs:
            f.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="ray"))  # short: Ray's socket paths must stay < 108 bytes
    c = Cluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_sweep_on_local_ray_equals_one_process(tmp_path: Path) -> None:
    sweep = load_sweep(_write(tmp_path, GRID))
    serial = run_sweep(sweep, tmp_path / "serial")
    on_ray = run_sweep(sweep, tmp_path / "ray", executor="ray", workers=2)
    assert not ray.is_initialized()  # the executor stopped the instance it started
    assert on_ray.executor == "ray" and on_ray.computed == 4
    assert _certs(tmp_path / "serial") == _certs(tmp_path / "ray")  # bit for bit
    assert [c.status for c in on_ray.cells] == [c.status for c in serial.cells]
    assert all("ray node" in (c.worker or "") for c in on_ray.cells)


def test_a_killed_ray_worker_reruns_its_cell(tmp_path: Path) -> None:
    sweep = load_sweep(_killer_sweep(tmp_path))
    report = run_sweep(sweep, tmp_path / "out", executor="ray", workers=2)
    assert all(c.status in ("passed", "failed") for c in report.cells)  # Ray reran the killed
    markers = sorted(p.name for p in (tmp_path / "markers").iterdir())
    assert markers == ["killed-0", "killed-10", "killed-20"]  # cells 1 and 3 were killed once
    serial = run_sweep(load_sweep(tmp_path / "sweep.toml"), tmp_path / "again")
    assert _certs(tmp_path / "out") == _certs(tmp_path / "again")
    assert [c.status for c in serial.cells] == [c.status for c in report.cells]


def test_two_node_cluster_runs_a_sweep_like_one_process(tmp_path: Path, cluster: Cluster) -> None:
    """`dynamo sweep --executor ray --address` on the cluster, against one process."""
    path = _write(tmp_path, GRID)
    serial = run_sweep(load_sweep(path), tmp_path / "serial")
    cli = ["-m", "verify.cli", "sweep", str(path), "--executor", "ray", "--no-progress"]
    cli += ["--address", cluster.address, "--out", str(tmp_path / "cluster")]
    done = cluster.driver([*cli, "--json", str(tmp_path / "cluster.json")])
    assert done.returncode == (0 if serial.passed else 1), done.stderr[-2000:]
    on_cluster = SweepReport.model_validate_json((tmp_path / "cluster.json").read_text())
    assert on_cluster.executor == f"ray ({cluster.address})" and on_cluster.computed == 4
    assert _certs(tmp_path / "serial") == _certs(tmp_path / "cluster")  # bit for bit
    assert [c.status for c in on_cluster.cells] == [c.status for c in serial.cells]
    nodes = {(c.worker or "").split("ray node ")[-1] for c in on_cluster.cells}
    assert len(nodes) == 2  # both nodes certified cells
    # the cluster keeps running after the sweep disconnects; a second sweep reuses every cell
    again = cluster.driver(cli)
    assert "0 cell(s) computed, 4 reused" in again.stdout, again.stderr[-2000:]
    stored = json.loads(next((tmp_path / "cluster" / "cells").glob("*.json")).read_text())
    assert stored["kind"] == "dynamo.sweep.cell"


#: A driver of its own (see Cluster.driver): the default transformer's reach search in 4 shards on
#: the cluster, printed exactly (every float in hex).
SEARCH = """
import json, sys
import torch
import dynamo as dy
import verify

model = verify.default_model().double().requires_grad_(False)
x = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
system = dy.LoopedSystem.from_module(model, x)
ex = dy.RayExecutor(sys.argv[1])
try:
    found = dy.find_fixed_points(system, 16, seed=0, executor=ex, shards=4)
finally:
    ex.shutdown()
print(json.dumps(_summary(found)))
"""


def _summary(found):  # type: ignore[no-untyped-def]
    """What must agree between two searches, floats exactly (hex)."""
    return {
        "outcomes": found.start_outcomes,
        "labels": found.labels.tolist(),
        "steps": found.steps.tolist(),
        "basins": [p.basin_count for p in found.points],
        "states": [[v.hex() for v in p.state.flatten().tolist()] for p in found.points],
        "unseen": repr(found.unseen),
        "dedup_tol": found.dedup_tol.hex(),
    }


def test_two_node_cluster_runs_a_sharded_search_like_one_process(cluster: Cluster) -> None:
    import inspect

    import torch

    import dynamo as dy
    import verify

    script = inspect.getsource(_summary) + SEARCH
    done = cluster.driver(["-c", script, cluster.address])
    assert done.returncode == 0, done.stderr[-2000:]
    on_cluster = json.loads(done.stdout.strip().splitlines()[-1])
    model = verify.default_model().double().requires_grad_(False)
    x = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alone = dy.find_fixed_points(dy.LoopedSystem.from_module(model, x), 16, seed=0)
    assert on_cluster == json.loads(json.dumps(_summary(alone)))  # bit for bit
    assert on_cluster["outcomes"]["converged"] == 32


def test_tasks_no_node_can_hold_are_refused() -> None:
    import torch

    import dynamo as dy
    from dynamo.errors import InvalidArgumentError

    if torch.cuda.is_available():  # pragma: no cover - a machine with a GPU can place the task
        pytest.skip("this machine has a GPU")
    # a task no node can hold would wait forever: both requests are refused at once
    for kwargs, message in (
        ({"num_gpus": 1}, r"asks for 1 GPU\(s\) but the largest node of the cluster has 0"),
        ({"num_cpus": 2}, r"asks for 2 CPU\(s\) but the largest node of the cluster has 1"),
    ):
        ex = dy.RayExecutor(num_cpus_local=1, **kwargs)  # type: ignore[arg-type]
        try:
            with pytest.raises(InvalidArgumentError, match=message):
                ex.connect()
        finally:
            ex.shutdown()
        assert not ray.is_initialized()
