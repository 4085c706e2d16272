"""``dynamo train``: train the architecture a spec describes, on its task, one checkpoint per
initialisation draw."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import dynamo as dy

from ._certify import build_model
from ._spec import Spec, SpecError, load_spec

__all__ = ["TrainedDraw", "checkpoint_name", "train"]


@dataclass(frozen=True)
class TrainedDraw:
    """One draw trained (or found already trained) by :func:`train`.

    Attributes
    ----------
    seed : int
        The initialisation seed (and the training seed).
    path : pathlib.Path
        The checkpoint (safetensors).
    metrics : dict
        Held-out token and sequence accuracy at the training difficulty after ``max(iters)``
        iterations; with ``task.eval_difficulties``, ``extrapolation``: the best token accuracy
        over ``1..task.eval_iters`` iterations at each, and the count that gave it.
    seconds : float
        Training time of this call (0 when the checkpoint existed).
    reused : bool
        The checkpoint was there already, from the same spec and seed.
    """

    seed: int
    path: Path
    metrics: dict[str, Any]
    seconds: float
    reused: bool


def checkpoint_name(spec: Spec, seed: int) -> str:
    """The checkpoint file of a draw: ``<spec name>-seed<seed>.safetensors``.

    >>> import verify
    >>> from verify._train import checkpoint_name
    >>> checkpoint_name(verify.Spec(name="majority"), 3)
    'majority-seed3.safetensors'
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name)
    return f"{safe}-seed{seed}.safetensors"


def _identity(spec: Spec) -> dict[str, Any]:
    """What makes two trainings the same: the architecture, the task and the training."""
    assert spec.task is not None and spec.training is not None
    return {
        "architecture": spec.architecture.model_dump(mode="json"),
        "task": spec.task.model_dump(mode="json"),
        "training": spec.training.model_dump(mode="json"),
    }


def _extrapolation(model: Any, task: Any, spec: Spec) -> dict[str, Any]:
    assert spec.task is not None
    ds = [spec.task.resolved_difficulty(task), *spec.task.eval_difficulties]
    curve = dy.task_accuracy(
        model, task, difficulties=ds, max_iters=spec.task.eval_iters, n=256, seed=10_007
    )
    out: dict[str, Any] = {"curve": curve.to_dict()}
    best = {}
    for d in ds:
        t, acc = curve.best(d)
        best[str(d)] = {"iters": t, "token": acc}
    out["best"] = best
    return out


def train(
    spec: Spec | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    seeds: Iterable[int] | None = None,
    progress: bool = False,
    allow_modules: Iterable[str] = (),
    log: Callable[[str], None] | None = None,
) -> list[TrainedDraw]:
    """Train the spec's architecture on its ``[task]`` with its ``[training]`` recipe, one
    checkpoint per initialisation draw, into the folder ``out``.

    Each draw's block is built exactly as ``dynamo certify`` builds it for that seed, trained
    by :func:`dynamo.train_looped` (seeded by the draw's seed), and written to
    ``out/<name>-seed<seed>.safetensors`` with the spec, the task, the training settings, the
    history and the final metrics in its metadata. While it trains, the full training state is
    kept in ``out/.<name>-seed<seed>.state.safetensors`` (every ``training.save_every`` steps):
    a rerun after an interruption resumes there and ends with the weights an uninterrupted run
    gives. A draw whose checkpoint exists from the same architecture, task and training is not
    trained again; one from different settings is an error (use another folder).

    Parameters
    ----------
    spec : Spec, or a path to a TOML spec
        With ``[task]`` and ``[training]`` sections.
    out : str or os.PathLike
        The folder (created if missing).
    seeds : iterable of int, optional
        The draws (default: the spec's).
    progress : bool
        tqdm bars.
    allow_modules : iterable of str
        As for :func:`verify.load_spec`.
    log : callable, optional
        Called with one line per draw.

    Returns
    -------
    list of TrainedDraw

    Raises
    ------
    SpecError
        No ``[task]`` or ``[training]``, a block without ``encode``/``readout``, an ``out`` that
        is a file, or a checkpoint there from other settings.

    Examples
    --------
    >>> import tempfile, verify
    >>> spec = verify._spec.validate({
    ...     "name": "tiny", "architecture": {"d_model": 8, "n_heads": 2},
    ...     "task": {"name": "prefix_majority", "difficulty": 6},
    ...     "training": {"steps": 3, "batch_size": 4, "eval_size": 8}})
    >>> [d.path.name for d in verify.train(spec, tempfile.mkdtemp())]
    ['tiny-seed0.safetensors']
    """
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec, allow_modules=allow_modules)
    call = f"train(spec, {os.fspath(out)!r})"
    if spec.task is None or spec.training is None:
        missing = " and ".join(
            s for s, v in (("[task]", spec.task), ("[training]", spec.training)) if v is None
        )
        raise SpecError(f"{call}: the spec has no {missing} section: say what to train on and how")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SpecError(f"{call}: {folder} is a file; give a folder for the checkpoints")
    draw_seeds = list(seeds) if seeds is not None else spec.draws.resolved()
    task = spec.task.build()
    identity = _identity(spec)
    # check every draw before training any: the block fits the task, no stale checkpoint
    plans = []
    for seed in draw_seeds:
        path = folder / checkpoint_name(spec, seed)
        reuse = False
        if path.exists():
            try:
                meta = dy.load_checkpoint(path).metadata
            except dy.CheckpointError as err:
                raise SpecError(f"{call}: {err}") from None
            stored = {k: meta.get(k) for k in identity}
            if stored != identity:
                key = next(k for k in identity if stored[k] != identity[k])
                raise SpecError(
                    f"{call}: {path} exists from another {key} than this spec's; train into "
                    "another --out folder (dynamo never overwrites a checkpoint)"
                )
            reuse = True
        model = build_model(spec, seed, allow_modules=allow_modules)
        try:
            # one step on one instance: the block embeds the task's tokens and reads out its
            # classes (a factory's block may not)
            difficulty = spec.task.resolved_difficulty(task)
            dy.task_accuracy(model, task, difficulties=[difficulty], max_iters=1, n=1)
        except dy.errors.InvalidArgumentError as err:
            raise SpecError(f"{call}: {str(err).split(': ', 1)[-1]}") from None
        for d in spec.task.eval_difficulties:  # measured after training: checked before it
            try:
                dy.task_accuracy(model, task, difficulties=[d], max_iters=1, n=1)
            except Exception as err:
                raise SpecError(
                    f"{call}: task.eval_difficulties: the block cannot run {task.name} at "
                    f"difficulty {d} ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                ) from None
        state = folder / f".{path.stem}.state.safetensors"
        if state.exists() and not reuse:
            try:
                dy.load_checkpoint(state)
            except dy.CheckpointError as err:
                raise SpecError(
                    f"{call}: the training state {state} cannot be resumed "
                    f"({str(err).split(': ', 1)[-1]}); delete it to start over"
                ) from None
        plans.append((seed, path, reuse, model))  # checked, untouched: trained as it is
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for seed, path, reuse, model in plans:
        if reuse:
            meta = dy.load_checkpoint(path).metadata
            results.append(TrainedDraw(seed, path, meta.get("metrics", {}), 0.0, True))
            if log:
                log(f"seed {seed}: {path} exists from this spec: not trained again")
            continue
        t0 = time.perf_counter()
        model.train()
        state = folder / f".{path.stem}.state.safetensors"
        res = dy.train_looped(
            model,
            task,
            **spec.training.model_dump(exclude={"save_every", "iters"}),
            iters=tuple(spec.training.iters),
            difficulty=spec.task.resolved_difficulty(task),
            seed=seed,
            resume=state,
            save_every=spec.training.save_every,
            progress=progress,
        )
        model.eval()
        metrics: dict[str, Any] = {"token": res.final["token"], "sequence": res.final["sequence"]}
        if spec.task.eval_difficulties:
            metrics["extrapolation"] = _extrapolation(model, task, spec)
        seconds = time.perf_counter() - t0
        meta = {
            **identity,
            "spec": spec.model_dump(mode="json", exclude={"checkpoint"}),
            "seed": seed,
            "metrics": metrics,
            "history": [dict(h) for h in res.history],
            "resumed_from": res.resumed_from,
            "seconds": seconds,
            "versions": {"dynamo": dy.__version__, "torch": torch.__version__},
        }
        dy.save_checkpoint(path, model, metadata=meta)
        state.unlink(missing_ok=True)
        results.append(TrainedDraw(seed, path, metrics, seconds, False))
        if log:
            log(
                f"seed {seed}: token accuracy {metrics['token']:.3f}, sequence "
                f"{metrics['sequence']:.3f} ({res.steps} steps, {seconds:.0f} s) -> {path}"
            )
    return results
