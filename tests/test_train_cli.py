"""`dynamo train` and certifying trained weights: the spec's [task], [training] and checkpoint
keys, `dynamo certify --checkpoint`, the pytest plugin, and every bad checkpoint refused with
exit 2 before anything is written."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest
import torch

import dynamo as dy
import verify
from verify._spec import SpecError, validate
from verify.cli import main

SPEC = """\
name = "tiny"
requirements = ["task.accuracy >= 0.9", "reachability.converged_fraction >= 0.99"]

[architecture]
d_model = 16
n_heads = 2
causal = true

[task]
name = "prefix_majority"
difficulty = 8
eval_difficulties = [16]
eval_iters = 12

[inputs]
kind = "task"
count = 6

[draws]
count = 2

[training]
steps = 60
batch_size = 16
iters = [2, 8]
eval_every = 20
eval_size = 64
save_every = 20
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny spec trained once (two draws, about 5 s): its folder holds spec.toml and
    runs/tiny-seed{0,1}.safetensors."""
    root = tmp_path_factory.mktemp("trained")
    (root / "spec.toml").write_text(SPEC)
    assert main(["train", str(root / "spec.toml"), "--out", str(root / "runs")]) == 0
    return root


def _ckpt(root: Path, seed: int = 0) -> Path:
    return root / "runs" / f"tiny-seed{seed}.safetensors"


# -------------------------------------------------------------------------------- the spec


def test_a_task_sets_the_blocks_vocabulary_readout_and_sequence_length() -> None:
    spec = validate(
        {"task": {"name": "sudoku4", "difficulty": 5}, "inputs": {"kind": "task", "count": 3}}
    )
    a = spec.architecture
    assert (a.vocab_size, a.n_outputs, spec.inputs.seq_len) == (5, 4, 16)
    block = verify.build_model(spec, 0)
    assert block.embed.num_embeddings == 5 and block.head.out_features == 4
    batch = verify.task_batch(spec)
    assert tuple(batch.tokens.shape) == (3, 16) and int(batch.mask.sum(1)[0]) == 5
    x = verify.draw_inputs(spec, block, torch.float64)
    assert torch.equal(x, block.encode(batch.tokens).double())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"inputs": {"kind": "task"}}, "inputs.kind = 'task' needs a \\[task\\] section"),
        ({"training": {}}, "\\[training\\] needs a \\[task\\] section"),
        ({"task": {"name": "mazes"}}, "unknown task name 'mazes'"),
        ({"task": {"name": "sudoku4", "difficulty": 14}}, "difficulty must be in 1..12"),
        (
            {"task": {"name": "prefix_sums"}, "architecture": {"n_outputs": 3}},
            "architecture.n_outputs = 3 but task 'prefix_sums' needs 2",
        ),
        (
            {
                "task": {"name": "prefix_sums", "difficulty": 8},
                "inputs": {"kind": "task", "seq_len": 9},
            },
            "inputs.seq_len = 9, but task 'prefix_sums' at difficulty 8 has 8 tokens",
        ),
        ({"requirements": ["task.accuracy > 0.5"]}, "needs a \\[task\\] section"),
        (
            {"task": {"name": "prefix_sums"}, "requirements": ["task.accuracy > 0.5"]},
            "needs inputs.kind = 'task'",
        ),
        ({"task": {"name": "prefix_sums"}, "training": {"iters": [8, 2]}}, "low must not exceed"),
        ({"checkpoint": []}, "checkpoint = \\[\\] names no checkpoint"),
    ],
)
def test_bad_task_training_and_checkpoint_keys_are_named(data: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        validate(data)


# ------------------------------------------------------------------------------ dynamo train


def test_train_writes_one_safetensors_checkpoint_per_draw_with_its_story(trained: Path) -> None:
    for seed in (0, 1):
        ckpt = dy.load_checkpoint(_ckpt(trained, seed))
        meta = ckpt.metadata
        assert meta["seed"] == seed and meta["task"]["name"] == "prefix_majority"
        assert meta["architecture"]["d_model"] == 16 and meta["training"]["steps"] == 60
        assert meta["spec"]["name"] == "tiny" and len(meta["history"]) == 3
        assert meta["metrics"]["token"] > 0.9
        extra = meta["metrics"]["extrapolation"]
        assert set(extra["best"]) == {"8", "16"} and 1 <= extra["best"]["16"]["iters"] <= 12
    # the training state is removed once the checkpoint is written
    assert sorted(p.name for p in (trained / "runs").iterdir()) == [
        "tiny-seed0.safetensors",
        "tiny-seed1.safetensors",
    ]


def test_train_keeps_finished_checkpoints_and_refuses_other_settings(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _ckpt(trained).stat().st_mtime_ns
    assert main(["train", str(trained / "spec.toml"), "--out", str(trained / "runs")]) == 0
    assert "not trained again" in capsys.readouterr().out
    assert _ckpt(trained).stat().st_mtime_ns == before
    other = trained / "other.toml"
    other.write_text(SPEC.replace("steps = 60", "steps = 61"))
    assert main(["train", str(other), "--out", str(trained / "runs")]) == 2
    err = capsys.readouterr().err
    assert "exists from another training than this spec's" in err and "another --out" in err


def test_train_reproduces_its_checkpoint_bit_for_bit(trained: Path, tmp_path: Path) -> None:
    spec = verify.load_spec(trained / "spec.toml")
    (again,) = verify.train(spec, tmp_path, seeds=[1])
    a, b = dy.load_checkpoint(again.path).tensors, dy.load_checkpoint(_ckpt(trained, 1)).tensors
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_task = tmp_path / "no_task.toml"
    no_task.write_text('requirements = ["reachability.converged_fraction >= 1"]\n')
    assert main(["train", str(no_task), "--out", str(tmp_path / "o")]) == 2
    assert "no [task] and [training] section" in capsys.readouterr().err
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main(["train", str(spec), "--out", str(a_file)]) == 2
    assert "that is a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "no_task.toml", "spec.toml"]


# --------------------------------------------------------------- certify the trained weights


def test_certify_a_checkpoint_with_every_report(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = {k: tmp_path / f"r.{k}" for k in ("json", "md", "xml")}
    code = main(
        [
            "certify",
            str(trained / "spec.toml"),
            "--checkpoint",
            str(_ckpt(trained, 0)),
            "--checkpoint",
            str(_ckpt(trained, 1)),
            "--json",
            str(out["json"]),
            "--markdown",
            str(out["md"]),
            "--junit",
            str(out["xml"]),
        ]
    )
    text = capsys.readouterr().out
    cert = json.loads(out["json"].read_text())
    assert [d["checkpoint"] for d in cert["draws"]] == [str(_ckpt(trained, s)) for s in (0, 1)]
    assert [d["seed"] for d in cert["draws"]] == [0, 1]
    accs = [d["metrics"]["task.accuracy"] for d in cert["draws"]]
    assert code == (0 if cert["passed"] else 1) and all(0 <= a <= 1 for a in accs)
    assert "2 trained checkpoint(s): tiny-seed0.safetensors, tiny-seed1.safetensors" in text
    assert "prefix_majority instances at difficulty 8" in text
    md = out["md"].read_text()
    assert "2 trained checkpoint(s) (tiny-seed0.safetensors, tiny-seed1.safetensors)" in md
    assert "| metric | tiny-seed0.safetensors | tiny-seed1.safetensors |" in md
    assert "task.accuracy" in out["xml"].read_text()


def test_trained_weights_change_the_certificate(trained: Path) -> None:
    """The same spec at initialisation and trained: the readout's accuracy is the model's."""
    spec = verify.load_spec(trained / "spec.toml")
    init = verify.certify(spec, seeds=[0], timestamp=False)
    after = verify.certify(spec, checkpoints=[_ckpt(trained)], timestamp=False)
    assert init.draws[0].checkpoint is None
    a0, a1 = init.draws[0].metrics["task.accuracy"], after.draws[0].metrics["task.accuracy"]
    assert a1 > 0.9 and a1 > a0
    model = verify.build_model(spec, 0)
    dy.load_checkpoint(_ckpt(trained), model)
    model = model.double()
    batch = verify.task_batch(spec)
    e = model.encode(batch.tokens)
    system = dy.LoopedSystem.from_module(model, e)
    sol = dy.solve(system, e, method="picard", max_steps=1000, throw=False)
    by_hand = dy.tasks.accuracy(model.readout(sol.last_state), batch)["token"]
    assert a1 == pytest.approx(by_hand, abs=1e-12)


def test_the_spec_checkpoint_key_is_relative_to_the_spec(trained: Path) -> None:
    keyed = trained / "keyed.toml"
    text = SPEC.replace(
        'name = "tiny"', 'name = "tiny"\ncheckpoint = "runs/tiny-seed1.safetensors"'
    )
    keyed.write_text(text)
    cert = verify.certify(keyed, timestamp=False)
    assert [d.checkpoint for d in cert.draws] == [str(trained / "runs" / "tiny-seed1.safetensors")]


def _bad_files(root: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    good = _ckpt(root).read_bytes()
    files: dict[str, tuple[Path, str]] = {}
    p = tmp / "pickle.safetensors"
    p.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
    files["pickle"] = (p, "is a pickle, not a safetensors file; dynamo never unpickles")
    z = tmp / "model.pt"
    torch.save({"a": torch.zeros(2)}, z)
    files["torch.save"] = (z, "zip archive")
    t = tmp / "truncated.safetensors"
    t.write_bytes(good[: len(good) // 2])
    files["truncated"] = (t, "is corrupt or truncated")
    state = dict(dy.load_checkpoint(_ckpt(root)).tensors)
    state.pop("head.bias")
    m = dy.save_checkpoint(tmp / "missing.safetensors", state)
    files["missing key"] = (m, "lacks tensor 'head.bias'")
    wide = dy.models.LoopedTransformer(d_model=32, n_heads=2, vocab_size=2, n_outputs=2)
    w = dy.save_checkpoint(tmp / "wide.safetensors", wide)
    files["another width"] = (w, "tensor 'adapter.weight' has shape")
    pre = dy.models.LoopedTransformer(
        d_model=16, n_heads=2, norm="pre", causal=True, vocab_size=2, n_outputs=2
    )
    n = dy.save_checkpoint(
        tmp / "pre.safetensors", pre, metadata={"architecture": {"norm": "pre", "d_model": 16}}
    )
    files["same tensors, other norm"] = (
        n,
        "trained with architecture.norm = 'pre' but the spec says 'outer'",
    )
    files["absent"] = (tmp / "absent.safetensors", "does not exist")
    return files


def test_bad_checkpoints_exit_2_and_write_nothing(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: a checkpoint of another architecture, a truncated file, a pickle file, a missing
    key: each a clear error, exit 2, nothing written."""
    src = tmp_path / "files"
    src.mkdir()
    for what, (path, match) in _bad_files(trained, src).items():
        reports = tmp_path / "reports"
        reports.mkdir()
        code = main(
            [
                "certify",
                str(trained / "spec.toml"),
                "--checkpoint",
                str(path),
                "--json",
                str(reports / "c.json"),
                "--markdown",
                str(reports / "c.md"),
            ]
        )
        err = capsys.readouterr().err
        assert code == 2, what
        assert match in err and str(path.name) in err, (what, err)
        assert list(reports.iterdir()) == [], what
        reports.rmdir()


def test_checkpoint_usage_errors(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(trained / "spec.toml")
    ck = str(_ckpt(trained))
    assert main(["certify", spec, "--checkpoint", ck, "--seeds", "2"]) == 2
    assert "the checkpoints are the draws" in capsys.readouterr().err
    assert main(["certify", spec, "--checkpoint", ck, "--checkpoint", ck]) == 2
    assert "is listed twice" in capsys.readouterr().err
    assert main(["certify", spec, "--checkpoint", ck, "--json", ck]) == 2
    assert "that is an input of this run (a checkpoint" in capsys.readouterr().err
    with pytest.raises(dy.errors.InvalidArgumentError, match="non-empty list of paths"):
        verify.certify(spec, checkpoints=ck)  # type: ignore[arg-type]


def test_a_training_state_is_not_a_checkpoint(tmp_path: Path) -> None:
    spec = validate(
        {
            "architecture": {"d_model": 16, "n_heads": 2},
            "task": {"name": "prefix_majority", "difficulty": 6},
            "inputs": {"kind": "task", "count": 2},
        }
    )
    model = verify.build_model(spec, 0)
    state = tmp_path / "state.safetensors"
    dy.train_looped(model, spec.task.build(), steps=2, difficulty=6, eval_size=4, resume=state)
    with pytest.raises(SpecError, match="is a training state"):
        verify.certify(spec, checkpoints=[state])


# ------------------------------------------------------------------------- the pytest plugin


def test_the_plugin_gates_each_checkpoint(trained: Path, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_gate=textwrap.dedent(
            f"""
            import pytest

            SPEC = {str(trained / "spec.toml")!r}
            RUNS = {str(trained / "runs")!r}

            @pytest.mark.parametrize("seed", [0, 1])
            def test_each_checkpoint(dynamo_certify, seed):
                cert = dynamo_certify(SPEC, checkpoint=f"{{RUNS}}/tiny-seed{{seed}}.safetensors")
                (draw,) = cert.draws
                assert draw.checkpoint.endswith(f"seed{{seed}}.safetensors")
                assert 0.5 < draw.metrics["task.accuracy"] <= 1

            @pytest.mark.dynamo(spec=SPEC, checkpoint=[f"{{RUNS}}/tiny-seed0.safetensors"])
            def test_marker(dynamo_certificate):
                assert dynamo_certificate.draws[0].seed == 0

            def test_both(dynamo_certify):
                with pytest.raises(BaseException, match="the checkpoints are the draws"):
                    dynamo_certify(SPEC, seeds=2, checkpoint=f"{{RUNS}}/tiny-seed0.safetensors")
            """
        )
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--dynamo-seeds", "3")
    result.assert_outcomes(passed=4)


def test_ctrl_c_during_training_and_the_rerun_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """A real interrupt (SIGINT to `dynamo train`) once the training state is on disk; the same
    command again finishes the draw, and the checkpoint equals an uninterrupted run's bit for
    bit (another process, the same seed)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    spec = tmp_path / "spec.toml"
    spec.write_text(
        SPEC.replace("steps = 60", "steps = 240").replace(
            "[draws]\ncount = 2", "[draws]\ncount = 1"
        )
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "verify.cli", "train", str(spec), "--out", str(out)]
    cmd += ["--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    state = out / ".tiny-seed0.state.safetensors"
    while proc.poll() is None and not state.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    if proc.returncode == 130:
        assert "interrupted (Ctrl-C) while training 1 draw(s)" in err
        assert "rerun the same command to resume" in err
        assert not (out / "tiny-seed0.safetensors").exists()
        step = dy.load_checkpoint(state).metadata["step"]
        assert 0 < step < 240
    else:  # pragma: no cover - training finished before the signal arrived
        assert proc.returncode == 0
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    resumed = dy.load_checkpoint(out / "tiny-seed0.safetensors")
    assert not state.exists()
    (whole,) = verify.train(verify.load_spec(spec), tmp_path / "whole")
    ref = dy.load_checkpoint(whole.path).tensors
    assert all(torch.equal(resumed.tensors[k], ref[k]) for k in ref)
    if proc.returncode == 130:
        assert resumed.metadata["resumed_from"] == step


# -------------------------------------------------------------------- shipped checkpoints

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trained_outer_outer.toml"


def test_every_shipped_checkpoint_is_a_trained_block_of_its_spec() -> None:
    names = dy.models.shipped()
    recalls, norms = ("none", "outer", "internal"), ("pre", "post", "sandwich", "outer")
    assert names == sorted(f"{r}-{n}" for r in recalls for n in norms)
    total = 0
    for name in names:
        path = dy.models.shipped_checkpoint(name)
        total += path.stat().st_size
        meta = dy.load_checkpoint(path).metadata
        recall, norm = name.split("-")
        assert (meta["architecture"]["recall"], meta["architecture"]["norm"]) == (recall, norm)
        assert meta["task"]["name"] == "prefix_sums" and meta["training"]["steps"] == 1200
        model = dy.models.from_checkpoint(path)
        spec = verify._spec.validate(meta["spec"])
        again = verify.build_model(spec, meta["seed"])
        dy.load_checkpoint(path, again)  # the spec it was trained from rebuilds the same block
        assert all(
            torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
        )
        # trained: far above chance (0.5) on held-out prefix sums of the training length
        assert meta["metrics"]["token"] > 0.75
    assert total < 2_000_000  # shipped with the package: a few hundred kB in all
    with pytest.raises(dy.errors.InvalidArgumentError, match="no such shipped checkpoint"):
        dy.models.shipped_checkpoint("outer-none")


def test_certify_the_shipped_checkpoint_from_its_example_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: `dynamo certify` on a shipped checkpoint with JSON/Markdown/JUnit output, exit
    codes as for any spec. Trained, the outer/outer block converges from every start but is
    multistable (half its inputs have several attractors) and its fixed points answer worse
    (0.78 token accuracy) than its 16-iteration transient did in training: exit 1."""
    args = ["certify", str(EXAMPLE), "--json", str(tmp_path / "c.json")]
    args += ["--markdown", str(tmp_path / "c.md"), "--junit", str(tmp_path / "c.xml")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "1 trained checkpoint(s): outer-outer.safetensors" in out
    assert "PASS reachability.converged_fraction >= 0.99" in out
    assert "FAIL input_dependence.multistable_fraction <= 0.25" in out
    assert "FAIL task.accuracy >= 0.9" in out
    assert "share of all training runs of this spec" in out
    cert = json.loads((tmp_path / "c.json").read_text())
    (draw,) = cert["draws"]
    assert draw["checkpoint"].endswith("outer-outer.safetensors")
    assert draw["metrics"]["task.accuracy"] == pytest.approx(0.78125)
    assert "trained checkpoint(s) (outer-outer.safetensors)" in (tmp_path / "c.md").read_text()
    assert 'failures="2"' in (tmp_path / "c.xml").read_text()


def test_the_same_weights_or_the_same_seed_twice_are_not_two_draws(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(trained / "spec.toml")
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(_ckpt(trained).read_bytes())
    assert (
        main(["certify", spec, "--checkpoint", str(_ckpt(trained)), "--checkpoint", str(copy)]) == 2
    )
    assert "hold the same weights" in capsys.readouterr().err
    ckpt = dy.load_checkpoint(_ckpt(trained, 1))
    relabelled = dy.save_checkpoint(
        tmp_path / "relabelled.safetensors", ckpt.tensors, metadata={**ckpt.metadata, "seed": 0}
    )
    code = main(
        ["certify", spec, "--checkpoint", str(_ckpt(trained)), "--checkpoint", str(relabelled)]
    )
    assert code == 2
    assert "both come from initialisation seed 0" in capsys.readouterr().err
    bad_seed = dy.save_checkpoint(
        tmp_path / "bad_seed.safetensors", ckpt.tensors, metadata={**ckpt.metadata, "seed": -3}
    )
    assert main(["certify", spec, "--checkpoint", str(bad_seed)]) == 2
    assert "names seed -3 in its metadata" in capsys.readouterr().err
    other_task = dy.save_checkpoint(
        tmp_path / "other_task.safetensors",
        ckpt.tensors,
        metadata={**ckpt.metadata, "task": {"name": "prefix_sums"}},
    )
    assert main(["certify", spec, "--checkpoint", str(other_task)]) == 2
    assert "was trained on task 'prefix_sums'" in capsys.readouterr().err


def test_a_checkpoint_key_with_seeds_or_basins(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keyed = trained / "keyed_seeds.toml"
    keyed.write_text(
        SPEC.replace('name = "tiny"', 'name = "tiny"\ncheckpoint = "runs/tiny-seed1.safetensors"')
    )
    assert main(["certify", str(keyed), "--seeds", "3"]) == 2
    assert "--seeds counts initialisation draws" in capsys.readouterr().err
    code = main(["basins", str(keyed), "--starts", "4", "--inputs", "2", "--max-steps", "200"])
    out = capsys.readouterr().out
    assert code == 0 and "the trained weights of" in out and "draw seed 1" in out
    assert main(["basins", str(keyed), "--draw", "0", "--starts", "2"]) == 2
    assert "the spec's checkpoints come from seeds 1" in capsys.readouterr().err


def test_eval_difficulties_the_block_cannot_run_are_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("eval_difficulties = [16]", "eval_difficulties = [600]"))
    assert main(["train", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "task.eval_difficulties: the block cannot run prefix_majority at difficulty 600" in err
    assert not (tmp_path / "out").exists()


def test_task_inputs_are_the_blocks_own_embeddings() -> None:
    with pytest.raises(SpecError, match=r"drop inputs\.scale"):
        validate({"task": {"name": "prefix_sums"}, "inputs": {"kind": "task", "scale": 2.0}})
    # a factory's block gets the task's sequence length too (its sizes are its own business)
    spec = validate(
        {
            "architecture": {"factory": "my_blocks.py:gated_tanh"},
            "task": {"name": "prefix_sums", "difficulty": 5},
            "inputs": {"kind": "task"},
        },
        base=Path(__file__).resolve().parents[1] / "examples",
    )
    assert spec.inputs.seq_len == 5 and spec.architecture.vocab_size is None
