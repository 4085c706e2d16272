"""Training looped blocks on tasks (dynamo.train_looped, dynamo.task_accuracy) and safetensors
checkpoints (dynamo.save_checkpoint, dynamo.load_checkpoint)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import dynamo as dy


def _tiny(seed: int = 0, **kw: object) -> dy.models.LoopedTransformer:
    args: dict = dict(d_model=16, n_heads=2, vocab_size=2, n_outputs=2, causal=True, seed=seed)
    args.update(kw)
    return dy.models.LoopedTransformer(**args)


MAJORITY = dy.tasks.get("prefix_majority")
FAST = dict(batch_size=16, difficulty=8, eval_every=20, eval_size=64, iters=(2, 8))


# ------------------------------------------------------------------------------- training


def test_a_tiny_model_learns_prefix_majority_in_seconds() -> None:
    """The recipe works: 60 steps take a 16-wide block from chance to above 90% token accuracy
    on freshly drawn instances (measured 0.98 / 0.99 for seeds 0 / 1)."""
    model = _tiny()
    before = dy.task_accuracy(model, MAJORITY, difficulties=[8], max_iters=8, n=256, seed=5)
    r = dy.train_looped(model, MAJORITY, steps=60, seed=0, **FAST)
    after = dy.task_accuracy(model, MAJORITY, difficulties=[8], max_iters=8, n=256, seed=5)
    assert float(before.token[0, -1]) < 0.8
    assert r.final["token"] > 0.9 and float(after.token[0, -1]) > 0.9
    assert [h["step"] for h in r.history] == [20.0, 40.0, 60.0]
    assert r.trust is dy.Trust.ESTIMATED and "fresh instances" in str(r)
    assert not model.training  # left in eval mode


def test_training_is_reproducible_bit_for_bit() -> None:
    a, b = _tiny(), _tiny()
    dy.train_looped(a, MAJORITY, steps=15, seed=3, **FAST)
    dy.train_looped(b, MAJORITY, steps=15, seed=3, **FAST)
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    c = _tiny()
    dy.train_looped(c, MAJORITY, steps=15, seed=4, **FAST)
    assert not torch.equal(a.head.weight, c.head.weight)  # another data seed, other weights


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = _tiny()
    dy.train_looped(whole, MAJORITY, steps=30, seed=1, **FAST)

    class Stop(Exception):
        pass

    def stop_at_20(step: int, ev: dict) -> None:
        if step == 20:
            raise Stop

    state = tmp_path / "state.safetensors"
    part = _tiny()
    with pytest.raises(Stop):
        dy.train_looped(
            part,
            MAJORITY,
            steps=30,
            seed=1,
            resume=state,
            save_every=10,
            callback=stop_at_20,
            **FAST,
        )
    # the crash came at step 20 before its save: the state on disk is step 10's
    assert dy.load_checkpoint(state).metadata["step"] == 10
    fresh = _tiny()  # a new process would start from the initial weights again
    r = dy.train_looped(fresh, MAJORITY, steps=30, seed=1, resume=state, save_every=10, **FAST)
    assert r.resumed_from == 10
    for (k, x), y in zip(whole.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert [h["step"] for h in r.history] == [20.0, 30.0]


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s.safetensors"
    dy.train_looped(_tiny(), MAJORITY, steps=5, seed=0, resume=state, **FAST)
    with pytest.raises(dy.CheckpointError, match=r"other settings \(lr=0\.002, not 0\.01\)"):
        dy.train_looped(_tiny(), MAJORITY, steps=5, seed=0, resume=state, lr=0.01, **FAST)
    # a longer run has another learning-rate schedule: not the run that was interrupted
    with pytest.raises(dy.CheckpointError, match=r"other settings \(steps=5, not 9\)"):
        dy.train_looped(_tiny(), MAJORITY, steps=9, seed=0, resume=state, **FAST)
    # the same tensors, another function (causal attention), or another initialisation
    for other in (_tiny(causal=False), _tiny(seed=1)):
        with pytest.raises(dy.CheckpointError, match="another architecture or initialisation"):
            dy.train_looped(other, MAJORITY, steps=5, seed=0, resume=state, **FAST)


def test_a_broken_training_state_says_delete_it(tmp_path: Path) -> None:
    state = tmp_path / "s.safetensors"
    dy.train_looped(_tiny(), MAJORITY, steps=4, seed=0, resume=state, save_every=2, **FAST)
    data = state.read_bytes()
    state.write_bytes(data[: len(data) - 50])
    with pytest.raises(dy.CheckpointError, match=r"cannot be resumed: .*delete it to start over"):
        dy.train_looped(_tiny(), MAJORITY, steps=4, seed=0, resume=state, **FAST)
    ckpt = dy.load_checkpoint(dy.save_checkpoint(tmp_path / "x.safetensors", _tiny()))
    assert ckpt.metadata.get("kind") is None


def test_a_header_whose_length_starts_with_0x80_is_not_a_pickle(tmp_path: Path) -> None:
    """The first byte of a safetensors file is the low byte of its header's length: 0x80 for
    one length in 256 (every 32nd, headers being padded to 8 bytes)."""
    path = dy.save_checkpoint(
        tmp_path / "m.safetensors", torch.nn.Linear(2, 3), metadata={"note": "x" * 154}
    )
    assert path.read_bytes()[:1] == b"\x80"
    assert dy.load_checkpoint(path).metadata["note"] == "x" * 154


def test_progressive_loss_and_truncated_backprop_run() -> None:
    for progressive, backprop in ((0.0, None), (1.0, None), (0.5, 2)):
        r = dy.train_looped(
            _tiny(), MAJORITY, steps=3, seed=0, progressive=progressive, backprop=backprop, **FAST
        )
        assert r.settings["progressive"] == progressive and r.settings["backprop"] == backprop


def test_a_block_without_recall_trains_too() -> None:
    """recall = 'none': the input enters only through h0 = encode(tokens)."""
    r = dy.train_looped(_tiny(recall="none"), MAJORITY, steps=40, seed=0, **FAST)
    assert r.final["token"] > 0.8


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(steps=0), "steps must be >= 1"),
        (dict(iters=(5, 2)), "iters must be"),
        (dict(progressive=1.5), "progressive must be a weight in"),
        (dict(lr=-1.0), "lr must be finite and > 0"),
        (dict(backprop=0), "backprop must be >= 1"),
        (dict(seed=-1), "seed=-1"),
        (dict(difficulty=0), "difficulty must be >= 1"),
        (dict(weight_decay=1.5), "weight_decay must be in"),
    ],
)
def test_bad_training_settings_are_named(kw: dict, match: str) -> None:
    with pytest.raises(dy.errors.InvalidArgumentError, match=match):
        dy.train_looped(_tiny(), MAJORITY, **{"steps": 2, **kw})


def test_a_model_that_does_not_fit_the_task_is_refused() -> None:
    with pytest.raises(dy.errors.InvalidArgumentError, match="no readout"):
        dy.train_looped(dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2), MAJORITY)
    sudoku = dy.tasks.get("sudoku4")
    with pytest.raises(dy.errors.InvalidArgumentError, match="build it with vocab_size=5"):
        dy.train_looped(_tiny(), sudoku)
    with pytest.raises(dy.errors.InvalidArgumentError, match="build it with n_outputs=4"):
        dy.train_looped(_tiny(vocab_size=5), sudoku)
    with pytest.raises(dy.errors.InvalidArgumentError, match="task has no 'name'"):
        dy.train_looped(_tiny(), object())


def test_task_accuracy_follows_the_iterations_and_the_difficulties() -> None:
    model = _tiny()
    dy.train_looped(model, MAJORITY, steps=60, seed=0, **FAST)
    c = dy.task_accuracy(model, MAJORITY, difficulties=[8, 24], max_iters=12, n=128, seed=2)
    assert c.difficulties == (8, 24) and tuple(c.token.shape) == (2, 12)
    assert bool(((c.token >= 0) & (c.token <= 1)).all())
    assert bool((c.sequence <= c.token + 1e-12).all())  # a right sequence has right tokens
    # by hand at one point: iterate 5 times and score
    batch = MAJORITY.sample(128, 24, seed=2)
    with torch.no_grad():
        e = model.encode(batch.tokens)
        h = e
        for _ in range(5):
            h = model(h, e)
        acc = dy.tasks.accuracy(model.readout(h), batch)
    assert float(c.token[1, 4]) == pytest.approx(acc["token"], abs=0)
    with pytest.raises(dy.errors.InvalidArgumentError, match="not measured"):
        c.best(16)


# ----------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_round_trips_tensors_and_metadata(tmp_path: Path) -> None:
    model = _tiny(seed=4)
    meta = {"seed": 4, "task": {"name": "prefix_majority"}, "metrics": {"token": 0.9}}
    path = dy.save_checkpoint(tmp_path / "m.safetensors", model, metadata=meta)
    other = _tiny(seed=5)
    ckpt = dy.load_checkpoint(path, other)
    assert ckpt.metadata["seed"] == 4 and ckpt.metadata["format"] == "dynamo.checkpoint"
    for (k, x), y in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    assert "task prefix_majority" in ckpt.describe() and "seed 4" in ckpt.describe()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() would have made it


def test_loading_casts_to_the_models_dtype(tmp_path: Path) -> None:
    path = dy.save_checkpoint(tmp_path / "m.safetensors", _tiny(seed=1))
    m64 = _tiny(seed=2).double()
    dy.load_checkpoint(path, m64)
    assert m64.head.weight.dtype == torch.float64
    assert torch.equal(m64.head.weight.float(), _tiny(seed=1).head.weight)


def _refused(path: Path, match: str, model: torch.nn.Module | None = None) -> None:
    target = _tiny(seed=9) if model is None else model
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(dy.CheckpointError, match=match):
        dy.load_checkpoint(path, target)
    for k, v in target.state_dict().items():  # the model is left as it was
        assert torch.equal(v, before[k]), k


def test_pickles_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps(Evil()))
    _refused(p, "is a pickle, not a safetensors file; dynamo never unpickles")
    z = tmp_path / "model.pt"
    torch.save(_tiny().state_dict(), z)
    _refused(z, r"zip archive \(torch.save's format\)")
    assert not marker.exists()


def test_truncated_corrupt_and_missing_files_are_named(tmp_path: Path) -> None:
    good = dy.save_checkpoint(tmp_path / "good.safetensors", _tiny())
    data = good.read_bytes()
    head = tmp_path / "head.safetensors"
    head.write_bytes(data[:20])
    _refused(head, "is truncated: its header announces")
    body = tmp_path / "body.safetensors"
    body.write_bytes(data[: len(data) - 100])
    _refused(body, "is corrupt or truncated")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello world, not a checkpoint at all")
    _refused(junk, "is not a safetensors file")
    _refused(tmp_path / "absent.safetensors", "does not exist")
    _refused(tmp_path, "is not a file")


def test_another_architecture_names_the_tensor(tmp_path: Path) -> None:
    wide = dy.save_checkpoint(tmp_path / "wide.safetensors", _tiny(d_model=32, n_heads=2))
    _refused(wide, r"tensor 'adapter.weight' has shape \(32, 64\) in the file but \(16, 32\)")
    no_recall = dy.save_checkpoint(tmp_path / "none.safetensors", _tiny(recall="none"))
    _refused(no_recall, "lacks tensor 'adapter.weight'")
    outer = dy.save_checkpoint(tmp_path / "outer.safetensors", _tiny())
    _refused(
        outer,
        r"holds tensor 'adapter.bias' \(shape \(16,\)\) that the model does not have \(2 such\)",
        _tiny(recall="none"),
    )


def test_extra_tensors_are_refused_when_strict(tmp_path: Path) -> None:
    state = dict(_tiny().state_dict())
    state["extra.weight"] = torch.zeros(3)
    path = dy.save_checkpoint(tmp_path / "x.safetensors", state)
    _refused(path, "holds tensor 'extra.weight'")
    dy.load_checkpoint(path, _tiny(), strict=False)


def test_unserialisable_metadata_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(dy.CheckpointError, match="metadata must be JSON-serialisable"):
        dy.save_checkpoint(tmp_path / "m.safetensors", _tiny(), metadata={"x": object()})
    with pytest.raises(dy.CheckpointError, match="metadata must be JSON-serialisable"):
        dy.save_checkpoint(tmp_path / "m.safetensors", _tiny(), metadata={"x": float("nan")})
    with pytest.raises(dy.CheckpointError, match="does not exist; create it first"):
        dy.save_checkpoint(tmp_path / "no" / "m.safetensors", _tiny())
    assert list(tmp_path.iterdir()) == []
