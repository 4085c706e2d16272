"""Training a looped block on a task, with the looped recipe of the literature, and measuring
task accuracy as the iteration count grows (test-time compute).

The recipe (Bansal et al., arXiv 2202.05826, "deep thinking"): the encoded input ``e`` starts the
loop (``h_0 = e``) and, with recall, enters every step; each batch runs a random number of
iterations ``m``; the loss mixes the answer after ``m`` iterations (backpropagated through the
last ``backprop`` iterations, all by default) with the *progressive loss*: ``n`` iterations
without gradient, then ``k`` with gradient from there (``n``, ``k`` random), so the block cannot
learn an iteration-specific trick and keeps improving when iterated longer.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ._results import Trust
from ._system import _takes_two_args
from ._validate import call_form, check_positive_float, check_positive_int, check_seed
from .errors import InvalidArgumentError
from .protocols import DeclaresDriven, Encodes, ReadsOut, offers

__all__ = ["AccuracyCurve", "TrainResult", "task_accuracy", "train_looped"]


def _stepper(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One loop step ``(h, e) -> h'`` whether the block takes the input or not, decided as
    :meth:`LoopedSystem.from_module` decides it."""
    driven = bool(model.driven) if offers(model, DeclaresDriven) else _takes_two_args(model.forward)
    if driven:
        return lambda h, e: model(h, e)
    return lambda h, e: model(h)


def _check_model(call: str, model: Any, task: Any) -> None:
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"{call}: model must be a torch.nn.Module, got {type(model)}")
    for proto, what in ((Encodes, "encode(tokens)"), (ReadsOut, "readout(h)")):
        if not offers(model, proto):
            raise InvalidArgumentError(
                f"{call}: the model has no {what}; a block trained on a task embeds its tokens "
                "and reads its answer out (dynamo.models.LoopedTransformer(vocab_size=..., "
                "n_outputs=...) has both)"
            )
    for name in ("name", "vocab_size", "n_classes", "sample", "seq_len"):
        if not hasattr(task, name):
            raise InvalidArgumentError(
                f"{call}: task has no {name!r}: pass a dynamo.tasks task, e.g. "
                "dynamo.tasks.get('prefix_sums')"
            )
    embed = getattr(model, "embed", None)
    if isinstance(embed, nn.Embedding) and embed.num_embeddings < task.vocab_size:
        raise InvalidArgumentError(
            f"{call}: the model embeds {embed.num_embeddings} token ids but task "
            f"{task.name!r} uses {task.vocab_size}; build it with vocab_size={task.vocab_size}"
        )
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear) and head.out_features != task.n_classes:
        raise InvalidArgumentError(
            f"{call}: the model reads out {head.out_features} classes but task {task.name!r} "
            f"has {task.n_classes}; build it with n_outputs={task.n_classes}"
        )


def _loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[mask], targets[mask])


def _iterate(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    h: torch.Tensor,
    e: torch.Tensor,
    n: int,
    grad_last: int,
) -> torch.Tensor:
    """``n`` steps from ``h``; only the last ``grad_last`` build a graph."""
    free = max(n - grad_last, 0)
    if free:
        with torch.no_grad():
            for _ in range(free):
                h = step(h, e)
        h = h.detach()
    for _ in range(n - free):
        h = step(h, e)
    return h


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_looped` did.

    Attributes
    ----------
    steps : int
        Optimiser steps taken in all (including those before a resume).
    history : tuple of dict
        Every evaluation: ``step``, training ``loss`` (mean since the last one), ``token`` and
        ``sequence`` accuracy on the evaluation batch after ``max(iters)`` iterations (fresh
        instances from their own seed; at small difficulties they can repeat training ones,
        since there are only ``2^length`` prefix strings).
    final : dict
        The last evaluation.
    seconds : float
        Wall time of this call (not of the steps before a resume).
    resumed_from : int or None
        The step the run was resumed from.
    settings : dict
        The training settings (seed, recipe, task), as stored in the checkpoint.
    kind, trust :
        ``"estimate"``, ESTIMATED: accuracies are measured on ``eval_size`` sampled instances.

    Examples
    --------
    >>> import dynamo as dy
    >>> task = dy.tasks.get("prefix_majority")
    >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=2)
    >>> r = dy.train_looped(m, task, steps=2, batch_size=4, difficulty=6, eval_every=2, eval_size=8)
    >>> r.steps, sorted(r.final)
    (2, ['loss', 'sequence', 'step', 'token'])
    """

    steps: int
    history: tuple[dict[str, float], ...]
    final: dict[str, float]
    seconds: float
    resumed_from: int | None
    settings: dict[str, Any]
    kind: str = field(default="estimate", init=False)
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields.

        >>> import dynamo as dy
        >>> task = dy.tasks.get("prefix_majority")
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=2)
        >>> r = dy.train_looped(m, task, steps=1, batch_size=2, difficulty=4, eval_size=4)
        >>> r.to_dict()["trust"]
        'estimated'
        """
        return {
            "steps": self.steps,
            "history": [dict(h) for h in self.history],
            "final": dict(self.final),
            "seconds": self.seconds,
            "resumed_from": self.resumed_from,
            "settings": dict(self.settings),
            "kind": self.kind,
            "trust": self.trust.value,
        }

    def __str__(self) -> str:
        f = self.final
        return (
            f"trained {self.steps} steps on {self.settings['task']['name']}: token accuracy "
            f"{f['token']:.3f}, sequence accuracy {f['sequence']:.3f} on "
            f"{self.settings['eval_size']} fresh instances (estimate)"
        )


def _settings(call: str, task: Any, **kw: Any) -> dict[str, Any]:
    check_positive_int(call, "steps", kw["steps"])
    check_positive_int(call, "batch_size", kw["batch_size"])
    check_positive_float(call, "lr", kw["lr"])
    if not (isinstance(kw["weight_decay"], (int, float)) and 0 <= kw["weight_decay"] < 1):
        raise InvalidArgumentError(f"{call}: weight_decay must be in [0, 1)")
    iters = kw["iters"]
    if (
        not isinstance(iters, Sequence)
        or len(iters) != 2
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in iters)
        or not 1 <= iters[0] <= iters[1]
    ):
        raise InvalidArgumentError(
            f"{call}: iters must be (low, high) integers with 1 <= low <= high, got {iters!r}"
        )
    if kw["backprop"] is not None:
        check_positive_int(call, "backprop", kw["backprop"])
    p = kw["progressive"]
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise InvalidArgumentError(f"{call}: progressive must be a weight in [0, 1], got {p!r}")
    check_positive_int(call, "warmup", kw["warmup"], minimum=0)
    check_positive_float(call, "grad_clip", kw["grad_clip"])
    check_seed(call, "seed", kw["seed"])
    check_positive_int(call, "eval_every", kw["eval_every"])
    check_positive_int(call, "eval_size", kw["eval_size"])
    d = kw["difficulty"]
    if d is None:
        d = task.default_difficulty
    check_positive_int(call, "difficulty", d)
    task.seq_len(d)  # the task refuses a difficulty it cannot draw
    return {
        **{k: kw[k] for k in kw if k != "iters"},
        "iters": [int(iters[0]), int(iters[1])],
        "difficulty": int(d),
        "weight_decay": float(kw["weight_decay"]),
        "lr": float(kw["lr"]),
        "progressive": float(p),
        "grad_clip": float(kw["grad_clip"]),
        "task": task.to_dict(),
    }


def _identity(model: nn.Module) -> dict[str, Any]:
    """What a training state must have been trained from: the model's class, its configuration
    when it declares one (a LoopedTransformer's, initialisation seed included) and its
    tensors' shapes."""
    config = getattr(model, "config", None)
    try:
        config = json.loads(json.dumps(config)) if isinstance(config, dict) else None
    except (TypeError, ValueError):
        config = None
    return {
        "class": type(model).__name__,
        "config": config,
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


def _lr(settings: dict[str, Any], step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    base, warm, total = settings["lr"], settings["warmup"], settings["steps"]
    if step < warm:
        return base * (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _gen_state(g: torch.Generator) -> torch.Tensor:
    return g.get_state().clone()


def _save_state(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    gens: dict[str, torch.Generator],
    step: int,
    settings: dict[str, Any],
    history: list[dict[str, float]],
    running: list[float],
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for name, value in opt.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{i}.{name}"] = value.reshape(-1) if value.ndim == 0 else value
    for name, g in gens.items():
        tensors[f"rng.{name}"] = _gen_state(g)
    meta = {
        "kind": "training state",
        "step": step,
        "settings": settings,
        "history": history,
        "running": running,
    }
    save_checkpoint(path, tensors, metadata=meta)


def _load_state(
    call: str,
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    gens: dict[str, torch.Generator],
    settings: dict[str, Any],
) -> tuple[int, list[dict[str, float]], list[float]]:
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        raise CheckpointError(
            f"{call}: the training state cannot be resumed: {str(err).split(': ', 1)[-1]}; "
            "delete it to start over"
        ) from None
    meta = ckpt.metadata
    if meta.get("kind") != "training state":
        raise CheckpointError(f"{call}: {path} is not a training state written by train_looped")
    stored = meta.get("settings", {})
    differ = sorted(
        k
        for k in set(stored) | set(settings)
        if k != "eval_every" and stored.get(k) != settings.get(k)
    )
    if differ:
        k = differ[0]
        what = "the model" if k == "model" else f"{k}={stored.get(k)!r}, not {settings.get(k)!r}"
        raise CheckpointError(
            f"{call}: {path} was trained with other settings ({what}"
            + (": another architecture or initialisation" if k == "model" else "")
            + "); resume with the same settings and model, or delete it to start over"
        )
    state = {k[len("model.") :]: v for k, v in ckpt.tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    bad = sorted(k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape))
    try:
        if bad:
            raise KeyError(bad[0])
        step = int(meta["step"])
        history, running = list(meta["history"]), list(meta.get("running", []))
        rng = {name: ckpt.tensors[f"rng.{name}"] for name in gens}
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{call}: {path} is an incomplete training state ({err!s} is missing or does not "
            "fit); delete it to start over"
        ) from None
    if step > settings["steps"]:
        raise CheckpointError(f"{call}: {path} is at step {step}, past steps={settings['steps']}")
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(state[k].to(dtype=t.dtype, device=t.device))
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st: dict[str, Any] = {}
        for k, v in ckpt.tensors.items():
            prefix = f"optim.{i}."
            if k.startswith(prefix):
                name = k[len(prefix) :]
                st[name] = v.reshape(()) if name == "step" else v.to(p.device, p.dtype)
        if st:
            opt.state[p] = st
    for name, g in gens.items():
        g.set_state(rng[name])
    return step, history, running


@torch.no_grad()
def _evaluate(
    model: nn.Module, step: Callable[..., torch.Tensor], batch: Any, iters: int
) -> dict[str, float]:
    from .tasks import accuracy

    e = model.encode(batch.tokens)  # type: ignore[operator]
    h = _iterate(step, e, e, iters, 0)
    acc = accuracy(model.readout(h), batch)  # type: ignore[operator]
    return {"token": float(acc["token"]), "sequence": float(acc["sequence"])}


def train_looped(
    model: nn.Module,
    task: Any,
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    iters: Sequence[int] = (4, 16),
    backprop: int | None = None,
    progressive: float = 0.5,
    difficulty: int | None = None,
    warmup: int = 50,
    grad_clip: float = 1.0,
    seed: int = 0,
    eval_every: int = 100,
    eval_size: int = 256,
    resume: str | os.PathLike[str] | None = None,
    save_every: int = 100,
    progress: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a looped block on a task with the looped recipe (Bansal et al. 2022).

    Each step draws a batch of ``batch_size`` instances at ``difficulty`` and an iteration count
    ``m`` uniformly in ``iters``; the block runs ``m`` steps from ``h_0 = encode(tokens)`` and
    the cross-entropy of ``readout(h_m)`` on the scored positions is the *full* loss (its
    gradient flows through the last ``backprop`` iterations, all when None). With
    ``progressive = α > 0`` the loss is ``(1 − α)·full + α·progressive``, where the progressive
    loss runs ``n ~ U{0..m−1}`` steps without gradient and then ``k ~ U{1..m−n}`` with gradient
    (deep thinking's incremental progress training). AdamW, linear warm-up then cosine decay to
    a tenth of ``lr``, gradient norm clipped at ``grad_clip``.

    Seeded and reproducible on the CPU: the data and the iteration counts come from generators
    seeded by ``seed``; the model's initial weights are the caller's. With ``resume``, the full
    training state (weights, optimiser moments, generator states, history) is written there
    every ``save_every`` steps and at the end (atomically), and a call that finds the file picks
    up where it stopped: an interrupted run resumed gives the weights an uninterrupted run gives.

    Parameters
    ----------
    model : torch.nn.Module
        A block with ``forward(h, x)`` (or ``forward(h)``), ``encode(tokens)`` and
        ``readout(h)`` (:class:`dynamo.models.LoopedTransformer` with ``vocab_size`` and
        ``n_outputs``). Trained in place.
    task : dynamo.tasks.Task
    steps, batch_size : int
    lr, weight_decay : float
    iters : (int, int)
        Range of the iteration count per batch (inclusive).
    backprop : int, optional
        Truncated backpropagation: only the last ``backprop`` iterations of the full loss carry
        gradient.
    progressive : float
        Weight α of the progressive loss in ``[0, 1]``.
    difficulty : int, optional
        Training difficulty (default: the task's).
    warmup : int
        Warm-up steps.
    grad_clip : float
    seed : int
        Seeds the data and iteration-count generators.
    eval_every, eval_size : int
        Evaluate every ``eval_every`` steps (and at the end) on ``eval_size`` instances drawn
        with a seed of their own (not from the training stream; short instances can still
        coincide with training ones), after ``max(iters)`` iterations.
    resume : str or os.PathLike, optional
        Training-state file (safetensors): read if present, written as training goes.
    save_every : int
    progress : bool
        A tqdm progress bar on stderr.
    callback : callable, optional
        ``callback(step, evaluation)`` after every evaluation.

    Returns
    -------
    TrainResult

    Raises
    ------
    InvalidArgumentError
        A setting out of range, a model without ``encode``/``readout``, a model whose embedding
        or head does not fit the task, or a resume file from other settings.

    Examples
    --------
    >>> import dynamo as dy
    >>> task = dy.tasks.get("prefix_majority")
    >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=2, seed=1)
    >>> r = dy.train_looped(m, task, steps=3, batch_size=4, difficulty=6, eval_size=8, seed=0)
    >>> r.steps, len(r.history)
    (3, 1)

    References
    ----------
    Bansal, Schwarzschild, Borgnia, Emam, Huang, Goldblum, Goldstein, "End-to-end Algorithm
    Synthesis with Recurrent Networks", NeurIPS 2022, arXiv 2202.05826.
    """
    call = call_form("train_looped", ["model", "task"], steps=steps, seed=seed)
    _check_model(call, model, task)
    settings = _settings(
        call,
        task,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        iters=iters,
        backprop=backprop,
        progressive=progressive,
        difficulty=difficulty,
        warmup=warmup,
        grad_clip=grad_clip,
        seed=seed,
        eval_every=eval_every,
        eval_size=eval_size,
    )
    check_positive_int(call, "save_every", save_every)
    settings["model"] = _identity(model)
    t0 = time.perf_counter()
    step_fn = _stepper(model)
    diff, (lo, hi) = settings["difficulty"], settings["iters"]
    gens = {
        "data": torch.Generator().manual_seed(seed),
        "iters": torch.Generator().manual_seed(seed + 1 if seed < 2**63 - 1 else 0),
    }
    held_out = task.sample(eval_size, diff, seed=(seed + 7919) % 2**63)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    held_out = held_out.to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
    )
    start = 0
    history: list[dict[str, float]] = []
    running: list[float] = []
    state_path = Path(resume) if resume is not None else None
    if state_path is not None and state_path.exists():
        start, history, running = _load_state(call, state_path, model, opt, gens, settings)
    resumed = start if state_path is not None and start > 0 else None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=f"training on {task.name}", leave=False)
    model.train()
    try:
        for k in range(start, steps):
            batch = task.sample(batch_size, diff, generator=gens["data"]).to(device)
            m = int(torch.randint(lo, hi + 1, (1,), generator=gens["iters"]))
            n = int(torch.randint(0, m, (1,), generator=gens["iters"]))
            kk = int(torch.randint(1, m - n + 1, (1,), generator=gens["iters"]))
            for group in opt.param_groups:
                group["lr"] = _lr(settings, k)
            e = model.encode(batch.tokens)  # type: ignore[operator]
            loss = torch.zeros((), device=device)
            if settings["progressive"] < 1:
                h = _iterate(step_fn, e, e, m, backprop if backprop is not None else m)
                full = _loss(model.readout(h), batch.targets, batch.mask)  # type: ignore[operator]
                loss = loss + (1 - settings["progressive"]) * full
            if settings["progressive"] > 0:
                with torch.no_grad():
                    h = _iterate(step_fn, e, e, n, 0)
                h = _iterate(step_fn, h.detach(), e, kk, kk)
                prog = _loss(model.readout(h), batch.targets, batch.mask)  # type: ignore[operator]
                loss = loss + settings["progressive"] * prog
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
            opt.step()
            running.append(float(loss.detach()))
            done = k + 1
            if done % eval_every == 0 or done == steps:
                model.eval()
                ev = {
                    "step": float(done),
                    "loss": sum(running) / len(running),
                    **_evaluate(model, step_fn, held_out, hi),
                }
                model.train()
                running = []
                history.append(ev)
                if callback is not None:
                    callback(done, ev)
                if bar is not None:
                    bar.set_postfix(loss=f"{ev['loss']:.3f}", acc=f"{ev['token']:.3f}")
            if state_path is not None and (done % save_every == 0 or done == steps):
                _save_state(state_path, model, opt, gens, done, settings, history, running)
            if bar is not None:
                bar.update(1)
    finally:
        model.eval()
        if bar is not None:
            bar.close()
    if not history:  # resumed at the end: evaluate once more, for the record
        ev = {"step": float(steps), "loss": float("nan"), **_evaluate(model, step_fn, held_out, hi)}
        history.append(ev)
    return TrainResult(
        steps=steps,
        history=tuple(history),
        final=dict(history[-1]),
        seconds=time.perf_counter() - t0,
        resumed_from=resumed,
        settings=json.loads(json.dumps(settings)),
    )


@dataclass(frozen=True)
class AccuracyCurve:
    """Task accuracy after each iteration, per difficulty: does more test-time compute help,
    and on harder instances than trained on?

    Attributes
    ----------
    difficulties : tuple of int
    token, sequence : torch.Tensor
        ``(len(difficulties), max_iters)``: accuracy after ``t = 1..max_iters`` iterations from
        ``h_0 = encode(tokens)``.
    n : int
        Instances per difficulty.
    seed : int
    kind, trust :
        ``"estimate"``, ESTIMATED (``n`` sampled instances per difficulty).

    Examples
    --------
    >>> import dynamo as dy
    >>> task = dy.tasks.get("prefix_majority")
    >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=2)
    >>> c = dy.task_accuracy(m, task, difficulties=[4, 8], max_iters=3, n=16)
    >>> tuple(c.token.shape), c.best(8)[0] in (1, 2, 3)
    ((2, 3), True)
    """

    difficulties: tuple[int, ...]
    token: torch.Tensor
    sequence: torch.Tensor
    n: int
    seed: int
    kind: str = field(default="estimate", init=False)
    trust: Trust = field(default=Trust.ESTIMATED, init=False)

    def best(self, difficulty: int) -> tuple[int, float]:
        """The iteration count with the highest token accuracy at ``difficulty``, and that
        accuracy (the first such count on ties).

        >>> import dynamo as dy
        >>> task = dy.tasks.get("prefix_majority")
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=2)
        >>> t, acc = dy.task_accuracy(m, task, difficulties=[4], max_iters=2, n=8).best(4)
        >>> 0 <= acc <= 1
        True
        """
        if difficulty not in self.difficulties:
            raise InvalidArgumentError(
                f"AccuracyCurve.best({difficulty}): not measured; measured: "
                f"{list(self.difficulties)}"
            )
        row = self.token[self.difficulties.index(difficulty)]
        t = int(torch.argmax(row))
        return t + 1, float(row[t])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields.

        >>> import dynamo as dy
        >>> task = dy.tasks.get("prefix_majority")
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=2)
        >>> sorted(dy.task_accuracy(m, task, difficulties=[4], max_iters=2, n=8).to_dict())
        ['difficulties', 'kind', 'n', 'seed', 'sequence', 'token', 'trust']
        """
        return {
            "difficulties": list(self.difficulties),
            "token": self.token.tolist(),
            "sequence": self.sequence.tolist(),
            "n": self.n,
            "seed": self.seed,
            "kind": self.kind,
            "trust": self.trust.value,
        }


@torch.no_grad()
def task_accuracy(
    model: nn.Module,
    task: Any,
    *,
    difficulties: Sequence[int],
    max_iters: int,
    n: int = 256,
    seed: int = 0,
) -> AccuracyCurve:
    """Task accuracy of a looped block after every iteration ``1..max_iters``, at each
    difficulty: the extrapolation test of the looped-model literature (train on easy
    instances with a few iterations; test on harder ones with more).

    Parameters
    ----------
    model : torch.nn.Module
        With ``encode`` and ``readout`` (see :func:`train_looped`).
    task : dynamo.tasks.Task
    difficulties : sequence of int
    max_iters : int
    n : int
        Instances per difficulty (drawn with ``seed``; the same instances for every iteration).
    seed : int

    Returns
    -------
    AccuracyCurve

    Examples
    --------
    >>> import dynamo as dy
    >>> task = dy.tasks.get("prefix_sums")
    >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=2)
    >>> curve = dy.task_accuracy(m, task, difficulties=[8, 16], max_iters=4, n=32)
    >>> curve.difficulties, tuple(curve.sequence.shape)
    ((8, 16), (2, 4))
    """
    from .tasks import accuracy

    call = call_form("task_accuracy", ["model", "task"], max_iters=max_iters, n=n)
    _check_model(call, model, task)
    check_positive_int(call, "max_iters", max_iters)
    check_positive_int(call, "n", n)
    check_seed(call, "seed", seed)
    ds = tuple(int(check_positive_int(call, "difficulties[]", d)) for d in difficulties)
    if not ds:
        raise InvalidArgumentError(f"{call}: difficulties must list at least one difficulty")
    step = _stepper(model)
    was = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tok = torch.zeros(len(ds), max_iters, dtype=torch.float64)
    seq = torch.zeros_like(tok)
    try:
        for i, d in enumerate(ds):
            batch = task.sample(n, d, seed=seed).to(device)
            e = model.encode(batch.tokens)  # type: ignore[operator]
            h = e
            for t in range(max_iters):
                h = step(h, e)
                acc = accuracy(model.readout(h), batch)  # type: ignore[operator]
                tok[i, t], seq[i, t] = float(acc["token"]), float(acc["sequence"])
    finally:
        model.train(was)
    return AccuracyCurve(ds, tok, seq, n, seed)
