"""`dynamo sweep` and verify.run_sweep: cells as certifications, the output folder, resuming, worker
faults, the combined reports and bad input. The Ray executor is in tests/test_ray.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import verify
from verify._spec import SpecError
from verify._sweep import MAX_RETRIES, SweepReport, load_sweep, run_sweep
from verify.cli import main

#: Small cells (a second or two each): a 16-wide block on 2 inputs of 4 tokens, 2 draws.
SHARED = """
name = "small sweep"
requirements = ["reachability.converged_fraction >= 1"]

[architecture]
d_model = 16
n_heads = 2

[inputs]
count = 2
seq_len = 4

[draws]
count = 2

[analysis]
input_dependence = false
geometry = false
"""

GRID = (
    SHARED
    + """
[sweep.grid]
"architecture.recall" = ["none", "outer"]
"architecture.norm" = ["pre", "outer"]
"""
)

#: A factory whose first call in each draw's marker folder kills its own process (SIGKILL, as the
#: out-of-memory killer or a lost node would), and builds the reference block afterwards.
KILLER = """
import os
import pathlib
import signal

from dynamo.models import LoopedTransformer


def make(seed, marker_dir, raise_instead=False, always=-1):
    marker = pathlib.Path(marker_dir) / f"killed-{seed}"
    if seed == always:
        os.kill(os.getpid(), signal.SIGKILL)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        if raise_instead:
            raise RuntimeError("the factory failed on purpose")
        os.kill(os.getpid(), signal.SIGKILL)
    return LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer", seed=seed)
"""


def _factory_shared(markers: Path, raise_instead: bool = False, always: int = -1) -> str:
    """SHARED with the block from blocks.py:make (KILLER) instead of the reference keys."""
    kwargs = (
        f'{{ marker_dir = "{markers}", raise_instead = {str(raise_instead).lower()}, '
        f"always = {always} }}"
    )
    return SHARED.replace("n_heads = 2\n", f'factory = "blocks.py:make"\nkwargs = {kwargs}\n')


def _write(folder: Path, text: str, name: str = "sweep.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _cert(path: Path) -> dict:
    """A stored cell's certificate without its timestamp (the one field that differs by run)."""
    cert = json.loads(path.read_text())["certificate"]
    cert["environment"].pop("timestamp")
    return cert


def _certs(out: Path) -> dict[str, dict]:
    return {p.name: _cert(p) for p in sorted((out / "cells").glob("*.json"))}


def _differences(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON values differ (key paths, with both values), for a readable failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b))
            for d in _differences(a.get(k), b.get(k), f"{path}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r:.120} != {b!r:.120}"]


# ---------------------------------------------------------------------- the sweep file
def test_grid_is_every_combination_in_order(tmp_path: Path) -> None:
    sweep = load_sweep(_write(tmp_path, GRID))
    assert [c.label for c in sweep.cells] == [
        "recall=none, norm=pre",
        "recall=none, norm=outer",
        "recall=outer, norm=pre",
        "recall=outer, norm=outer",
    ]
    assert sweep.keys == ("architecture.recall", "architecture.norm")
    assert sweep.name == "small sweep"
    cell = sweep.cells[2].spec
    assert (cell.architecture.recall, cell.architecture.norm) == ("outer", "pre")
    assert cell.architecture.d_model == 16 and cell.inputs.seq_len == 4  # the shared keys
    assert len({c.key for c in sweep.cells}) == 4
    assert len({c.file_name for c in sweep.cells}) == 4


def test_nested_tables_and_quoted_dotted_keys_are_the_same_grid(tmp_path: Path) -> None:
    nested = SHARED + '[sweep.grid.architecture]\nrecall = ["none", "outer"]\n'
    quoted = SHARED + '[sweep.grid]\n"architecture.recall" = ["none", "outer"]\n'
    a = load_sweep(_write(tmp_path, nested, "a.toml"))
    b = load_sweep(_write(tmp_path, quoted, "b.toml"))
    assert [c.key for c in a.cells] == [c.key for c in b.cells]


def test_listed_cells_and_a_base_spec_file(tmp_path: Path) -> None:
    _write(tmp_path, SHARED, "base.toml")
    text = (
        '[sweep]\nspec = "base.toml"\n'
        '[[sweep.cells]]\n"architecture.d_model" = 8\n"architecture.n_heads" = 1\n'
        '[[sweep.cells]]\n"draws.first_seed" = 5\n'
    )
    sweep = load_sweep(_write(tmp_path, text))
    assert [c.label for c in sweep.cells] == ["d_model=8, n_heads=1", "first_seed=5"]
    assert sweep.cells[1].spec.draws.resolved() == [5, 6]
    assert sweep.cells[1].spec.architecture.d_model == 16


def test_a_cells_key_follows_its_factory_file(tmp_path: Path) -> None:
    """A finished cell is reused only for the same code: editing the factory's file is a new
    cell."""
    factory = tmp_path / "blocks.py"
    factory.write_text(KILLER)
    text = _factory_shared(tmp_path) + '[[sweep.cells]]\n"draws.count" = 1\n'
    first = load_sweep(_write(tmp_path, text)).cells[0].key
    assert load_sweep(tmp_path / "sweep.toml").cells[0].key == first
    factory.write_text(KILLER + "\n# edited\n")
    assert load_sweep(tmp_path / "sweep.toml").cells[0].key != first


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SHARED, "needs a [sweep] table"),
        (SHARED + "[sweep]\n", "the sweep has no cells"),
        (SHARED + "[sweep]\ngird = {}\n", "sweep.gird: unknown key"),
        (SHARED + '[sweep.grid]\n"architecture.recall" = "none"\n', "must be a non-empty list"),
        (SHARED + '[sweep.grid]\n"architecture.recall" = []\n', "must be a non-empty list"),
        (SHARED + '[sweep.grid]\n"recall" = ["none"]\n', "'recall' is not a spec key"),
        (
            SHARED + '[sweep.grid]\n"architecture.recal" = ["none"]\n',
            "cell 1 (recal=none): invalid spec",
        ),
        (
            SHARED + '[sweep.grid]\n"architecture.n_heads" = [2, 3]\n',
            "cell 2 (n_heads=3): invalid spec",
        ),
        (
            SHARED + '[sweep.grid]\n"architecture.recall" = ["none", "none"]\n',
            "the same certification as cell 1",
        ),
        ('[sweep]\nspec = "nope.toml"\n[sweep.grid]\n"draws.count" = [1]\n', "no such spec"),
        (SHARED + '[sweep]\nspec = "x.toml"\n', "keep them in one place"),
    ],
)
def test_bad_sweep_files_are_refused_naming_the_cell_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        load_sweep(_write(tmp_path, text))


CHECKPOINTED = """
from safetensors.torch import load_file

from dynamo.models import LoopedTransformer


def make(seed, checkpoint):
    model = LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer", seed=seed)
    model.load_state_dict(load_file(checkpoint))
    return model
"""


def test_a_grid_over_checkpoints_reruns_only_the_cell_whose_file_changed(tmp_path: Path) -> None:
    """Checkpoints as a sweep key (a factory's argument): a cell's key includes the checkpoint's
    contents, so a rewritten checkpoint is a new cell and the others are reused."""
    from safetensors.torch import save_file

    from dynamo.models import LoopedTransformer

    paths = []
    for k in range(2):
        model = LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer", seed=k)
        paths.append(tmp_path / f"ckpt{k}.safetensors")
        save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(paths[k]))
    (tmp_path / "blocks.py").write_text(CHECKPOINTED)
    text = SHARED.replace("n_heads = 2\n", 'factory = "blocks.py:make"\n') + (
        "[sweep.grid.architecture.kwargs]\n"
        f"checkpoint = [{', '.join(repr(str(p)) for p in paths)}]\n"
    )
    sweep = load_sweep(_write(tmp_path, text))
    assert [c.spec.architecture.kwargs["checkpoint"] for c in sweep.cells] == [
        str(p) for p in paths
    ]
    first = run_sweep(sweep, tmp_path / "out")
    assert first.computed == 2
    scaled = {
        n: (0.5 * t).contiguous()
        for n, t in LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer", seed=1)
        .state_dict()
        .items()
    }
    save_file(scaled, str(paths[1]))
    again = run_sweep(load_sweep(tmp_path / "sweep.toml"), tmp_path / "out")
    assert (again.computed, again.reused) == (1, 1)
    assert [c.reused for c in again.cells] == [True, False]
    assert again.cells[1].key != first.cells[1].key


# ---------------------------------------------------------------------- running
def test_each_cell_is_the_certification_dynamo_certify_runs(tmp_path: Path) -> None:
    sweep = load_sweep(_write(tmp_path, GRID))
    report = run_sweep(sweep, tmp_path / "out")
    assert report.computed == 4 and report.reused == 0
    for cell, res in zip(sweep.cells, report.cells, strict=True):
        direct = verify.certify(cell.spec)
        stored = _cert(tmp_path / "out" / res.file)
        mine = json.loads(direct.to_json())
        mine["environment"].pop("timestamp")
        assert stored == mine
        assert res.passed == direct.passed
        assert res.status == ("passed" if direct.passed else "failed")
        assert [r.n_pass for r in res.requirements] == [r.n_pass for r in direct.requirements]
    assert report.passed == all(c.passed for c in report.cells)


def test_an_interrupted_sweep_resumes_without_recomputing_or_overwriting(tmp_path: Path) -> None:
    sweep = load_sweep(_write(tmp_path, GRID))
    out = tmp_path / "out"
    seen: list[str] = []

    def stop_after_two(res: object) -> None:
        seen.append(res.label)  # type: ignore[attr-defined]
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, on_cell=stop_after_two)
    files = sorted((out / "cells").iterdir())
    assert [p.suffix for p in files] == [".json", ".json"]  # two whole cells, no temporaries
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in files}
    resumed = run_sweep(load_sweep(tmp_path / "sweep.toml"), out)
    assert (resumed.computed, resumed.reused) == (2, 2)
    assert [c.reused for c in resumed.cells] == [True, True, False, False]
    for name, (mtime, ino, data) in before.items():
        p = out / "cells" / name
        assert (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) == (mtime, ino, data)
    fresh = run_sweep(load_sweep(tmp_path / "sweep.toml"), tmp_path / "fresh")
    assert _certs(out) == _certs(tmp_path / "fresh")
    assert [c.status for c in resumed.cells] == [c.status for c in fresh.cells]


def test_worker_processes_give_the_same_certificates(tmp_path: Path) -> None:
    sweep = load_sweep(_write(tmp_path, GRID))
    serial = run_sweep(sweep, tmp_path / "serial")
    local = run_sweep(sweep, tmp_path / "local", executor="local", workers=2)
    assert local.executor == "local" and local.workers == 2
    serial_certs, local_certs = _certs(tmp_path / "serial"), _certs(tmp_path / "local")
    assert serial_certs == local_certs, _differences(serial_certs, local_certs)  # bit for bit
    assert [c.status for c in local.cells] == [c.status for c in serial.cells]
    assert all(c.worker and ":" in c.worker for c in local.cells)
    assert {c.worker for c in local.cells} != {serial.cells[0].worker}  # not this process


def _killer_sweep(tmp_path: Path, *, raise_instead: bool = False, always: int = -1) -> Path:
    (tmp_path / "blocks.py").write_text(KILLER)
    markers = tmp_path / "markers"
    markers.mkdir()
    text = _factory_shared(markers, raise_instead, always) + (
        '[sweep.grid]\n"draws.first_seed" = [0, 10, 20]\n"draws.count" = [1]\n'
    )
    # the first draw's seed of cell 2 (seed 10) already has its marker: only cells 1 and 3 fail
    (markers / "killed-10").write_text("spared")
    return _write(tmp_path, text)


def test_a_killed_worker_reruns_its_cell_and_loses_nothing(tmp_path: Path) -> None:
    sweep = load_sweep(_killer_sweep(tmp_path))
    report = run_sweep(sweep, tmp_path / "out", executor="local", workers=2)
    assert all(c.status in ("passed", "failed") for c in report.cells)  # none lost to the kills
    assert report.computed == 3
    # the killed cells ran again (a broken pool fails every pending cell: each reruns once)
    assert all(1 <= c.attempts <= MAX_RETRIES + 1 for c in report.cells)
    assert max(c.attempts for c in report.cells) >= 2
    files = sorted(p.name for p in (tmp_path / "out" / "cells").iterdir())
    assert files == sorted(c.file.removeprefix("cells/") for c in report.cells)  # one each
    serial = run_sweep(load_sweep(tmp_path / "sweep.toml"), tmp_path / "again")
    assert serial.reused == 0 and _certs(tmp_path / "out") == _certs(tmp_path / "again")
    assert [c.status for c in serial.cells] == [c.status for c in report.cells]


def test_a_cell_that_always_kills_its_worker_is_the_one_reported(tmp_path: Path) -> None:
    """A broken pool fails every pending cell; after the retries the rest run one at a time, so
    the cell whose worker dies (twice) when it runs alone is the one named; the others finish,
    among them one that kills its worker once, on its first run, which happens alone."""
    sweep = load_sweep(_killer_sweep(tmp_path, always=0))
    report = run_sweep(sweep, tmp_path / "out", executor="local", workers=2)
    assert [c.status == "error" for c in report.cells] == [True, False, False]
    assert "died each time it ran" in (report.cells[0].error or "")
    assert "the last two alone" in (report.cells[0].error or "")
    assert report.cells[0].attempts == MAX_RETRIES + 2
    assert len(list((tmp_path / "out" / "cells").iterdir())) == 2


def test_a_cell_that_raises_is_reported_and_the_rest_are_stored(tmp_path: Path) -> None:
    report = run_sweep(load_sweep(_killer_sweep(tmp_path, raise_instead=True)), tmp_path / "out")
    assert [c.status != "error" for c in report.cells] == [False, True, False]
    assert "the factory failed on purpose" in (report.cells[0].error or "")
    assert report.passed is False
    assert [c.index for c in report.failed if c.status == "error"] == [0, 2]
    assert len(list((tmp_path / "out" / "cells").iterdir())) == 1  # an error is not a result
    again = run_sweep(load_sweep(tmp_path / "sweep.toml"), tmp_path / "out")
    assert all(c.status != "error" for c in again.cells)  # the errors are retried, once
    assert (again.computed, again.reused) == (2, 1)


# ---------------------------------------------------------------------- the reports
def test_reports_render_every_cell(tmp_path: Path) -> None:
    from junitparser import JUnitXml

    report = run_sweep(load_sweep(_write(tmp_path, GRID)), tmp_path / "out")
    back = SweepReport.model_validate_json(report.to_json())
    assert back == report
    md = report.to_markdown()
    assert md.count("\n| ") == 1 + 4 and "`reachability.converged_fraction >= 1`" in md
    path = tmp_path / "junit.xml"
    path.write_text(report.to_junit())
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 4 and sum(s.tests for s in suites) == 4
    assert sum(s.failures for s in suites) == sum(c.status == "failed" for c in report.cells)
    rows, cols, shares = report.share_grid("reachability.converged_fraction >= 1")
    assert rows == ["none", "outer"] and cols == ["norm=pre", "norm=outer"]
    assert shares[1][0] == report.cells[2].requirements[0].proportion
    page = report.to_html()
    assert page.count("data:image/png;base64,") == 1


def test_the_heat_map_lays_out_only_cells_that_are_grid_combinations(tmp_path: Path) -> None:
    """Cells listed besides the grid (another value, or another key) are not forced onto it: the
    shares are then shown cell by cell."""
    text = GRID + (
        '[[sweep.cells]]\n"architecture.recall" = "internal"\n"architecture.norm" = "pre"\n'
        '[[sweep.cells]]\n"architecture.recall" = "outer"\n"architecture.norm" = "pre"\n'
        '"architecture.d_model" = 8\n"architecture.n_heads" = 1\n'
    )
    report = run_sweep(load_sweep(_write(tmp_path, text)), tmp_path / "out")
    rows, cols, shares = report.share_grid("reachability.converged_fraction >= 1")
    assert rows == [""] and cols == [c.label for c in report.cells] and len(cols) == 6
    assert shares[0] == [c.requirements[0].proportion for c in report.cells]
    assert report.to_html().count("data:image/png;base64,") == 1


# ---------------------------------------------------------------------- the command line
def test_cli_sweep_writes_reports_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write(tmp_path, GRID)
    out = tmp_path / "out"
    args = ["sweep", str(path), "--out", str(out), "--executor", "serial"]
    code = main([*args, "--json", str(tmp_path / "r.json"), "--junit", str(tmp_path / "r.xml")])
    report = SweepReport.model_validate_json((tmp_path / "r.json").read_text())
    assert code == (0 if report.passed else 1)
    assert (out / "sweep.json").read_text() == (tmp_path / "r.json").read_text()
    assert "4 cell(s) computed, 0 reused" in capsys.readouterr().out
    assert main(args) == code
    assert "0 cell(s) computed, 4 reused" in capsys.readouterr().out


def test_cli_sweep_default_folder_sits_beside_the_sweep_file(tmp_path: Path) -> None:
    path = _write(tmp_path, SHARED + '[[sweep.cells]]\n"draws.count" = 1\n')
    main(["sweep", str(path), "--executor", "serial"])
    assert len(list((tmp_path / "sweep.sweep" / "cells").iterdir())) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "local", "--address", "127.0.0.1:1"], "--address is for --executor ray"),
        (["--executor", "local", "--gpus-per-cell", "1"], "GPUs per task are for --executor ray"),
        (["--out", "{tmp}/missing/out"], "does not exist"),
        (["--out", "{tmp}/sweep.toml"], "is a file"),
        (["--json", "{tmp}/sweep.toml"], "that is the spec itself"),
        (["--executor", "serial", "--device", "tpu"], "device"),
        (["--executor", "serial", "--workers", "2"], "a serial sweep runs one cell at a time"),
        (["--executor", "ray", "--device", "cuda"], "give --gpus-per-cell"),
        (["--executor", "ray", "--gpus-per-cell", "1"], "give --device cuda too"),
    ],
)
def test_cli_sweep_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    path = _write(tmp_path, GRID)
    code = main(["sweep", str(path), *[e.replace("{tmp}", str(tmp_path)) for e in extra]])
    assert code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.toml"]


def test_cli_sweep_unreachable_ray_address_exits_2_within_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write(tmp_path, GRID)
    address = f"127.0.0.1:{_free_port()}"
    code = main(["sweep", str(path), "--executor", "ray", "--address", address])
    err = capsys.readouterr().err
    assert code == 2
    try:
        import ray  # noqa: F401
    except ImportError:
        assert "looped-dynamo[ray]" in err
    else:
        assert f"no Ray cluster there: cannot connect to {address}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.toml"]


def test_cli_sweep_bad_spec_key_exits_2_before_any_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write(tmp_path, SHARED + '[sweep.grid]\n"architecture.n_heads" = [2, 3]\n')
    assert main(["sweep", str(path), "--executor", "serial"]) == 2
    assert "cell 2 (n_heads=3)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.toml"]


def test_cli_sweep_ctrl_c_keeps_finished_cells_and_the_rerun_resumes(tmp_path: Path) -> None:
    """A real interrupt (SIGINT to the command's process) after the first cell is stored."""
    path = _write(tmp_path, GRID)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "verify.cli", "sweep", str(path), "--out", str(out)]
    cmd += ["--executor", "serial", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    cells = out / "cells"
    while proc.poll() is None and not (cells.is_dir() and any(cells.glob("*.json"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 130:
        assert "interrupted (Ctrl-C) while running the sweep" in err
        assert "rerun the same command to resume it" in err
        assert "finished cell(s) in" in err
    else:  # pragma: no cover - the whole sweep finished before the signal arrived
        assert proc.returncode in (0, 1)
    kept = sorted(p.name for p in cells.iterdir())
    assert kept and all(name.endswith(".json") for name in kept)  # no half-written cell
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert done.returncode in (0, 1)
    assert f"reused from {out}" in done.stdout
    assert f"{len(kept)} reused" in done.stdout or len(kept) == 4
