"""Certification over initialisation draws: run the analyses, judge the requirements."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

import dynamo as dy
from dynamo import Trust
from dynamo.kernel import check_memory, clopper_pearson, finite_or_none, path_agreement
from dynamo.kernel import plain as _plain
from dynamo.protocols import Encodes, ReadsOut, offers

from ._checkpoints import CheckpointDraw, load_weights, resolve_checkpoints
from ._metrics import DrawContext, Metric
from ._metrics import metric as _metric
from ._metrics import registered as _registered
from ._report import Certificate, DrawResult, Environment, RequirementResult, Timestamp, basis
from ._spec import Spec, SpecError, check_seed, load_spec, resolve_factory

__all__ = ["build_model", "certify", "draw_inputs", "stacked_reach", "task_batch"]


def build_model(spec: Spec, seed: int, *, allow_modules: Iterable[str] = ()) -> nn.Module:
    """The spec's block for one initialisation seed, in eval mode.

    The reference :class:`dynamo.models.LoopedTransformer` with the spec's parameters, or the
    user's ``factory(seed=seed, **kwargs)``; a factory that fails or returns something other than
    an ``nn.Module`` is a :class:`SpecError`.

    Parameters
    ----------
    spec : Spec
    seed : int
        The initialisation seed (one draw).
    allow_modules : iterable of str
        Modules a ``package.module:function`` factory may come from (see
        :func:`verify.load_spec`); a spec loaded with them has its factory already.

    Returns
    -------
    torch.nn.Module

    Examples
    --------
    >>> import verify
    >>> spec = verify.Spec(architecture=verify.Architecture(d_model=16, n_heads=2))
    >>> block = verify.build_model(spec, seed=3)
    >>> type(block).__name__, block.training
    ('LoopedTransformer', False)
    """
    check_seed(f"build_model(spec, seed={seed!r})", "seed", seed)
    a = spec.architecture
    if a.kind == "factory":
        fn = resolve_factory(spec, allow_modules=allow_modules)
        call = f"{a.factory}(seed={seed}" + "".join(f", {k}={v!r}" for k, v in a.kwargs.items())
        try:
            model = fn(seed=seed, **a.kwargs)
        except TypeError as err:
            raise SpecError(
                f"architecture.factory: {call}) failed: {err}; check "
                "architecture.kwargs against the factory's parameters (it must "
                "also accept seed=)"
            ) from None
        except SystemExit as err:  # a factory that exits must not end a CI gate with its code
            raise SpecError(
                f"architecture.factory: {call}) called sys.exit({err.code!r}); a factory must "
                "return a torch.nn.Module (nothing was certified)"
            ) from None
        except Exception as err:
            raise SpecError(
                f"architecture.factory: {call}) raised {type(err).__name__}: {err}"
            ) from None
        if not isinstance(model, nn.Module):
            raise SpecError(
                f"architecture.factory: {call}) returned "
                f"{type(model).__name__}, not a torch.nn.Module"
            )
        return model.eval()
    kw = a.model_dump(exclude={"kind", "factory", "kwargs"})
    if kw["init_gain"] is None:
        kw.pop("init_gain")
    return dy.models.LoopedTransformer(**kw, seed=seed).eval()


def draw_inputs(spec: Spec, model: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The spec's encoded inputs ``(count, seq_len, d_model)``.

    Random embeddings ``scale · N(0, 1)`` are the same for every draw (they depend on
    ``inputs.seed`` only); random token ids are the same too, but are embedded by ``model.encode``,
    so each draw sees its own embeddings.

    Parameters
    ----------
    spec : Spec
    model : torch.nn.Module
        The draw's block (used only for tokens).
    dtype : torch.dtype

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch, verify
    >>> spec = verify.Spec(inputs=verify.Inputs(count=3, seq_len=5))
    >>> verify.draw_inputs(spec, verify.build_model(spec, 0), torch.float64).shape
    torch.Size([3, 5, 64])
    """
    i, a = spec.inputs, spec.architecture
    gen = torch.Generator().manual_seed(i.seed)
    if i.kind == "task":
        batch = task_batch(spec)
        if not offers(model, Encodes):
            raise SpecError(
                f"inputs.kind = 'task' needs a block with encode(tokens) -> embeddings; "
                f"{type(model).__name__} has none"
            )
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            encoded_task: torch.Tensor = model.encode(batch.tokens.to(dev))  # type: ignore[operator]
            return encoded_task.to(dtype) * i.scale
    if i.kind == "tokens":
        assert a.vocab_size is not None
        tokens = torch.randint(0, a.vocab_size, (i.count, i.seq_len), generator=gen)
        if not offers(model, Encodes):
            raise SpecError(
                f"inputs.kind = 'tokens' needs a block with encode(tokens) -> embeddings; "
                f"{type(model).__name__} has none: use inputs.kind = 'embeddings'"
            )
        with torch.no_grad():
            encoded: torch.Tensor = model.encode(tokens)  # type: ignore[operator]
            return encoded.to(dtype) * i.scale
    # drawn in float64 and cast: the same seed gives the same inputs in float32 and float64
    e = torch.randn(i.count, i.seq_len, a.d_model, generator=gen, dtype=torch.float64)
    return (i.scale * e).to(dtype)


def _git(*args: str) -> str | None:
    """``git args`` in the working directory: its output, or None outside a repository.

    A report's commit and dirtiness must not run commands the repository configures: file-system
    monitors (``core.fsmonitor``), hooks (``post-index-change`` fires when status refreshes the
    index), clean filters (``filter.<name>.clean``/``process``, run by status on files whose
    timestamps changed) and submodules' own configuration are all switched off, and git takes no
    optional locks (it never writes the index).
    """
    base = [
        "git",
        "--no-optional-locks",
        "-c",
        "core.fsmonitor=false",
        "-c",
        f"core.hooksPath={os.devnull}",
    ]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    filters = _run_git([*base, "config", "--get-regexp", r"^filter\."], env)
    for line in (filters or "").splitlines():
        key = line.split(maxsplit=1)[0]
        name = key[len("filter.") : key.rfind(".")]
        if name:
            for part in ("clean", "process"):
                base += ["-c", f"filter.{name}.{part}="]
            base += ["-c", f"filter.{name}.required=false"]
    return _run_git([*base, *args], env)


def _run_git(argv: list[str], env: dict[str, str]) -> str | None:
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
            cwd=Path.cwd(),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _resolve_device(device: str | None, where: str) -> torch.device:
    """``torch.device(device)`` (default CPU) if it exists here; else an
    :class:`~dynamo.errors.InvalidArgumentError` that begins with ``where``."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise dy.errors.InvalidArgumentError(
            f"{where}: not a device ({err}); use cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise dy.errors.InvalidArgumentError(f"{where}: unsupported; use cpu, cuda or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise dy.errors.InvalidArgumentError(f"{where}: CUDA is not available here; use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise dy.errors.InvalidArgumentError(
            f"{where}: only {torch.cuda.device_count()} CUDA device(s) here"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise dy.errors.InvalidArgumentError(f"{where}: MPS is not available here; use cpu")
    return dev


def _batching(device: torch.device) -> Literal["vmap", "per_draw"]:
    """How :func:`stacked_reach` steps all draws on ``device`` (see its ``batching``)."""
    return "per_draw" if device.type == "cpu" else "vmap"


def stacked_reach(
    models: list[nn.Module],
    x: torch.Tensor,
    h0: torch.Tensor,
    *,
    tol: float,
    max_steps: int,
    divergence: float = 1e6,  # dynamo.solve's default
    per_draw: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    batching: Literal["auto", "vmap", "per_draw"] = "auto",
) -> dict[str, torch.Tensor]:
    """Plain iteration of every draw at once, all draws stepping together.

    ``x`` and ``h0`` are ``(N, *shape)``, the same inputs and starts for every draw, or with
    ``per_draw=True`` ``(D, N, *shape)``, one set per draw (e.g. tokens embedded by each draw's own
    embedding). Semantics
    match :func:`dynamo.solve` with ``method="picard"``: a start converges when
    ``‖f(h) − h‖ <= tol (1 + ‖h‖)``, stops (frozen) there, diverges past an RMS entry of
    ``divergence``. Each step evaluates only the draws with a start still running, and in them
    only the running starts (padded to the longest such list), so slow draws do not make the fast
    ones pay. Returns ``converged``, ``diverged``, ``nonfinite`` (bool, ``(D, N)``), ``steps`` and
    ``state`` (``(D, N, *state)``, the last iterate of each start).

    ``batching`` says how the draws are evaluated: ``"vmap"`` stacks their parameters and
    ``vmap``-s the block over draws (one batched kernel per layer, the running starts padded to
    the longest list); ``"per_draw"`` iterates each draw in turn with :func:`dynamo.solve`
    (``method="picard"``: the engine's one Picard loop, on exactly the running starts).
    ``"auto"`` takes ``"per_draw"`` on the CPU (the default block with d_model 64, 16 draws, 8
    inputs × 4 starts, one thread, ``benchmarks/test_bench_certify.py``: ``"vmap"`` took 1.66×
    the loop of :func:`dynamo.solve` over draws, batched ``bmm`` and the padding) and
    ``"vmap"`` on an accelerator, where one launch per layer replaces one per draw (not
    measured here). ``on_step(k, running)`` is called every 25 steps when vmapped, after each
    draw when not.

    Examples
    --------
    >>> import torch, verify
    >>> spec = verify.Spec(architecture=verify.Architecture(d_model=16, n_heads=2))
    >>> models = [verify.build_model(spec, s).double() for s in range(3)]
    >>> x = torch.randn(2, 4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> out = verify.stacked_reach(models, x, x.clone(), tol=1e-8, max_steps=500)
    >>> out["converged"].shape, out["state"].shape
    (torch.Size([3, 2]), torch.Size([3, 2, 4, 16]))
    """
    if batching not in ("auto", "vmap", "per_draw"):
        raise ValueError(
            f"stacked_reach(batching={batching!r}): choose 'auto', 'vmap' or 'per_draw'"
        )
    n_draws = len(models)
    if per_draw and (h0.shape[0] != n_draws or x.shape[0] != n_draws):
        raise ValueError(
            f"stacked_reach(per_draw=True): x and h0 need a leading dimension of {n_draws} "
            f"draws, got {tuple(x.shape)} and {tuple(h0.shape)}"
        )
    if batching == "auto":
        batching = _batching(h0.device)
    if batching == "per_draw":
        return _reach_by_solve(models, x, h0, tol, max_steps, divergence, per_draw, on_step)
    base = models[0]
    params, buffers = stack_module_state(models)

    def one(
        p: dict[str, torch.Tensor],
        b: dict[str, torch.Tensor],
        h: torch.Tensor,
        xx: torch.Tensor,
    ) -> torch.Tensor:
        return functional_call(base, (p, b), (h, xx))

    step = vmap(one, in_dims=(0, 0, 0, 0))
    h = h0.clone() if per_draw else h0.unsqueeze(0).expand(n_draws, *h0.shape).clone()
    n_starts = h.shape[1]
    n = h[0, 0].numel()
    done = torch.zeros(n_draws, n_starts, dtype=torch.bool, device=h0.device)
    conv = torch.zeros_like(done)
    div = torch.zeros_like(done)
    bad = torch.zeros_like(done)
    steps = torch.full(done.shape, max_steps, dtype=torch.long, device=h0.device)
    limit = divergence * math.sqrt(n)
    live_draws: torch.Tensor | None = None

    def judge(
        fh: torch.Tensor, hs: torch.Tensor, shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Converged, diverged, non-finite: dynamo.solve's picard criteria, per start."""
        r = (fh - hs).reshape(*shape, -1).norm(dim=-1)
        hn = hs.reshape(*shape, -1).norm(dim=-1)
        finite = torch.isfinite(r) & torch.isfinite(hn)
        far = finite & (hn > limit)
        # the very expression dynamo.solve tests (atol + tol·‖h‖, atol = tol), so that the two
        # batchings stop every start at the same step
        return finite & ~far & (r <= hn * tol + tol), far, ~finite

    with torch.no_grad():
        for k in range(max_steps + 1):
            running = ~done
            draws = torch.nonzero(running.any(dim=1)).flatten()
            if draws.numel() == 0:
                break
            count = running[draws].sum(dim=1)
            width = int(count.max())
            if on_step is not None and k % 25 == 0:
                on_step(k, int(count.sum()))
            # running starts first (stable), then the first `width` columns of each draw
            order = torch.argsort((~running[draws]).to(torch.int8), dim=1, stable=True)
            idx = order[:, :width]
            valid = torch.arange(width, device=h0.device)[None, :] < count[:, None]
            if live_draws is None or not torch.equal(draws, live_draws):
                live_draws = draws
                p_sub = {name: v[draws] for name, v in params.items()}
                b_sub = {name: v[draws] for name, v in buffers.items()}
            rows = draws[:, None].expand_as(idx)
            hs = h[rows, idx]
            fh = step(p_sub, b_sub, hs, x[rows, idx] if per_draw else x[idx])
            c_all, d_all, b_all = judge(fh, hs, tuple(idx.shape))
            new_conv, new_div, new_bad = valid & c_all, valid & d_all, valid & b_all
            stop = new_conv | new_div | new_bad
            rs, cs = rows[stop], idx[stop]
            steps[rs, cs] = k
            conv[rows[new_conv], idx[new_conv]] = True
            div[rows[new_div], idx[new_div]] = True
            bad[rows[new_bad], idx[new_bad]] = True
            done[rs, cs] = True
            if k == max_steps:
                break
            move = valid & ~stop
            h[rows[move], idx[move]] = fh[move]
    return {"converged": conv, "diverged": div, "nonfinite": bad, "steps": steps, "state": h}


def _reach_by_solve(
    models: list[nn.Module],
    x: torch.Tensor,
    h0: torch.Tensor,
    tol: float,
    max_steps: int,
    divergence: float,
    per_draw: bool,
    on_step: Callable[[int, int], None] | None,
) -> dict[str, torch.Tensor]:
    """:func:`stacked_reach` draw after draw, each with :func:`dynamo.solve`'s Picard loop."""
    n_draws = len(models)
    fields: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("converged", "diverged", "nonfinite", "steps", "state")
    }
    left = n_draws * int(h0.shape[1] if per_draw else h0.shape[0])
    for d, model in enumerate(models):
        xd, hd = (x[d], h0[d]) if per_draw else (x, h0)
        system = dy.LoopedSystem.from_module(model, xd, dtype=None)
        one = _picard(system, hd, tol, max_steps, divergence)
        for key, value in one.items():
            fields[key].append(value)
        left -= int(hd.shape[0])
        if on_step is not None:
            on_step(int(one["steps"].max()), left)
    return {k: torch.stack(v) for k, v in fields.items()}


def _picard(
    system: dy.LoopedSystem, h0: torch.Tensor, tol: float, max_steps: int, divergence: float
) -> dict[str, torch.Tensor]:
    """One draw's plain iteration with :func:`dynamo.solve`: ``converged``, ``diverged``,
    ``nonfinite``, ``steps`` and the last iterate ``state`` of each start. A start already
    beyond ``divergence`` (which ``solve`` refuses as a start) counts as diverged at step 0,
    as the vmapped path counts it."""
    n, dev = int(h0.shape[0]), h0.device
    rms = system.flatten(h0).norm(dim=1) / math.sqrt(system.state_dim)
    far = (rms > divergence).cpu()
    out = {
        "converged": torch.zeros(n, dtype=torch.bool, device=dev),
        "diverged": far.to(dev).clone(),
        "nonfinite": torch.zeros(n, dtype=torch.bool, device=dev),
        "steps": torch.zeros(n, dtype=torch.long, device=dev),
        "state": h0.clone(),
    }
    rows = torch.nonzero(~far).flatten()
    if rows.numel() == 0:
        return out
    x = system.step_x  # one input row per start where the step takes the input
    sub = system if rows.numel() == n or x is None else system.with_input(x[rows.to(x.device)])
    sol = dy.solve(
        sub,
        h0[rows.to(dev)],
        method="picard",
        tol=tol,
        atol=tol,
        max_steps=max_steps,
        divergence=divergence,
        throw=False,
    )
    assert sol.last_state is not None
    at = rows.to(dev)
    out["converged"][at] = sol.converged.to(dev)
    for key, kind in (("diverged", dy.Outcome.DIVERGED), ("nonfinite", dy.Outcome.NONFINITE)):
        out[key][at] = torch.tensor([o is kind for o in sol.outcomes], device=dev)
    out["steps"][at] = sol.steps.to(dev)
    out["state"][at] = sol.last_state
    return out


def task_batch(spec: Spec) -> Any:
    """The spec's task instances (``inputs.count`` of them at the task's difficulty, drawn with
    ``inputs.seed``): the inputs of ``inputs.kind = 'task'`` and their answers.

    >>> import verify
    >>> spec = verify._spec.validate({"task": {"name": "prefix_sums", "difficulty": 6},
    ...                               "inputs": {"kind": "task", "count": 3}})
    >>> tuple(verify._certify.task_batch(spec).tokens.shape)
    (3, 6)
    """
    assert spec.task is not None
    task = spec.task.build()
    return task.sample(
        spec.inputs.count, spec.task.resolved_difficulty(task), seed=spec.inputs.seed
    )


def certify(
    spec: Spec | str | os.PathLike[str],
    *,
    seeds: list[int] | None = None,
    checkpoints: Sequence[str | os.PathLike[str]] | None = None,
    device: str | None = None,
    progress: bool = False,
    vectorize: bool = True,
    timestamp: bool = True,
    allow_modules: Iterable[str] = (),
) -> Certificate:
    """Run the spec's analyses over its initialisation draws and judge each requirement.

    Reachability iterates each draw in :func:`dynamo.solve`'s Picard loop; on an accelerator,
    all draws at once (:func:`stacked_reach`, the step ``vmap``-ed over stacked parameters)
    when they share one structure. Input-dependence, geometry,
    contraction and Lipschitz bounds run draw by draw. Each requirement gets the share of draws
    that satisfy it with its exact 95% Clopper–Pearson interval, and passes when that share
    reaches its quorum (all draws by default). The certificate records versions, seeds, dtype,
    device and the git commit; the same spec gives the same JSON apart from the timestamp.

    Parameters
    ----------
    spec : Spec, or a path to a TOML spec
        A path is read with :func:`verify.load_spec` (with ``allow_modules``).
    seeds : list of int, optional
        Override the spec's draws: particular seeds, distinct integers in ``[0, 2**63 - 1]``, at
        least one (``range(3)``, ``[0, 5, 9]``). Not a count: ``seeds=3`` is refused, because
        ``[3]`` would mean another thing (the command line's ``--seeds 3`` is a count from the
        spec's first seed, which is ``spec.draws.resolved(count=3)`` here).
    device : str, optional
        Where to run (default: the CPU).
    progress : bool
        Show a tqdm progress bar (on stderr).
    vectorize : bool
        On an accelerator, step all draws' reachability together when possible
        (:func:`stacked_reach`); False runs :func:`dynamo.solve` draw by draw there too (the
        CPU always does).
    timestamp : bool
        Record the time (False gives byte-identical JSON across runs).
    allow_modules : iterable of str
        Modules a ``package.module:function`` factory may come from; a spec runs no other
        module's code (see :func:`verify.load_spec`).
    checkpoints : sequence of str or os.PathLike, optional
        Trained weights (safetensors files of the spec's architecture, e.g. written by ``dynamo
        train``): each is one draw, in place of the initialisation draws; overrides the spec's
        ``checkpoint`` key. Every file is read and matched against the architecture before any
        work (a pickle, a truncated file, a missing or differently shaped tensor, or metadata
        naming another architecture is a :class:`SpecError`).

    Examples
    --------
    >>> import verify
    >>> small = verify.Inputs(count=2, seq_len=4)
    >>> spec = verify.default_spec().model_copy(update={"inputs": small})
    >>> cert = verify.certify(spec, timestamp=False)
    >>> cert.passed, [r.text for r in cert.requirements]
    (True, ['reachability.converged_fraction >= 1'])
    """
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    run = _prepare_run(spec, seeds, device, allow_modules, vectorize, checkpoints)
    draws = _build_draws(run)
    bar = _Bar(len(run.seeds), progress)
    reach = _reach_all_draws(run, draws, bar)
    bar.phase("analyses per draw")
    results = []
    for d in range(len(run.seeds)):
        results.append(_measure_draw(run, draws, reach, d))
        bar.draw(d + 1)
    bar.close()
    judged = _judge(run.spec, results)
    env = _environment(run, reach, started if timestamp else None, t0)
    return Certificate(
        name=run.spec.name,
        spec=run.spec.model_dump(mode="json"),
        environment=env,
        draws=results,
        requirements=judged,
        passed=all(r.passed for r in judged) if judged else None,
    )


@dataclass(frozen=True)
class _Run:
    """A certification's checked settings: the spec, its draws' seeds, dtype and device."""

    spec: Spec
    seeds: list[int]
    dtype: torch.dtype
    device: torch.device
    vectorize: bool
    domain: dy.Domain | None  # where contraction and the Lipschitz bound are judged
    checkpoints: list[CheckpointDraw] = field(default_factory=list)  # trained weights per draw

    @property
    def needed(self) -> set[str]:
        """The metrics the requirements name."""
        return {r.metric for r in self.spec.requirements}

    def wants(self, metric: str) -> bool:
        """A costly metric is measured when a requirement names it or every metric is asked."""
        return self.spec.analysis.all_metrics or metric in self.needed


@dataclass(frozen=True)
class _Draws:
    """Every draw's block, inputs, system and starts (``per`` starts for each input)."""

    models: list[nn.Module]
    xs: list[torch.Tensor]
    systems: list[dy.LoopedSystem]
    h0s: list[torch.Tensor]
    per: int
    tol: float
    shared: bool  # one set of inputs and starts for every draw (random embeddings)


@dataclass(frozen=True)
class _AllReach:
    """Reachability of all draws at once, when that ran (``result`` None: draw by draw)."""

    result: dict[str, torch.Tensor] | None
    path: Literal["vmap", "loop"]
    note: str | None


@dataclass
class _Measured:
    """One draw's metrics and the notes on them, filled in by each analysis in turn."""

    metrics: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _prepare_run(
    spec: Spec | str | os.PathLike[str],
    seeds: list[int] | None,
    device: str | None,
    allow_modules: Iterable[str],
    vectorize: bool,
    checkpoints: Sequence[str | os.PathLike[str]] | None = None,
) -> _Run:
    """Load and check everything before any work: the spec, the seeds, the device, the factory
    (it may import only what the user allowed) and the memory reachability will need."""
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec, allow_modules=allow_modules)
    if not isinstance(spec, Spec):
        raise dy.errors.InvalidArgumentError(
            f"certify(spec): spec must be a verify.Spec or a path to a TOML spec, not "
            f"{type(spec).__name__}"
        )
    dtype = torch.float64 if spec.analysis.dtype == "float64" else torch.float32
    dev = _resolve_device(device, f"certify(spec, device={device!r})")
    draw_seeds = _check_seeds(seeds) if seeds is not None else spec.draws.resolved()
    resolve_factory(spec, "certify(spec)", allow_modules=allow_modules)
    if checkpoints is not None and (
        isinstance(checkpoints, (str, bytes, os.PathLike)) or not checkpoints
    ):
        raise dy.errors.InvalidArgumentError(
            f"certify(spec, checkpoints={checkpoints!r}): checkpoints must be a non-empty list "
            "of paths"
        )
    ckpts = resolve_checkpoints(spec, checkpoints, "certify(spec)", lambda s: build_model(spec, s))
    if ckpts:
        if seeds is not None:
            raise dy.errors.InvalidArgumentError(
                "certify(spec, seeds=..., checkpoints=...): the checkpoints are the draws"
                + (" (the spec's checkpoint key names them)" if checkpoints is None else "")
                + "; give seeds or checkpoints, not both"
            )
        draw_seeds = [c.seed for c in ckpts]
    return _Run(spec, draw_seeds, dtype, dev, vectorize, _domain(spec), ckpts)


def _build_draws(run: _Run) -> _Draws:
    """Each draw's block (built from its seed), inputs, system and starts."""
    spec, dtype, dev, a = run.spec, run.dtype, run.device, run.spec.analysis

    def block(d: int) -> nn.Module:
        model = build_model(spec, run.checkpoints[d].seed if run.checkpoints else run.seeds[d])
        if run.checkpoints:
            load_weights(model, run.checkpoints[d])
        return model.to(dtype=dtype, device=dev).requires_grad_(False)

    first = block(0)
    _check_reach_memory(spec, len(run.seeds), first, dtype, dev, run.vectorize)
    models = [first] + [block(d) for d in range(1, len(run.seeds))]
    # random embeddings are the same for every draw; random tokens (and task instances) are
    # embedded by each draw's own embedding table, so their encoded inputs (and the starts
    # h0 = e) differ per draw
    shared = spec.inputs.kind == "embeddings"
    if shared:
        xs = [draw_inputs(spec, models[0], dtype).to(dev)] * len(models)
    else:
        xs = [draw_inputs(spec, m, dtype).to(dev) for m in models]
    per = a.starts_per_input
    systems = [_first_step(spec, run.seeds[0], models[0], xs[0])] + [
        dy.LoopedSystem.from_module(m, x, dtype=None)
        for m, x in zip(models[1:], xs[1:], strict=True)
    ]
    same_shape = tuple(xs[0].shape[1:]) == systems[0].state_shape
    h0s = [
        s.initial_states(
            "input" if same_shape else "normal", per, scale=a.start_noise, seed=spec.inputs.seed
        )
        for s in (systems[:1] if shared else systems)
    ]
    if shared:
        h0s = h0s * len(models)
    for h0, system in zip(h0s, systems, strict=True):
        rms = float((system.flatten(h0).norm(dim=1) / math.sqrt(system.state_dim)).max())
        if rms > _DIVERGENCE:
            raise SpecError(
                f"inputs.scale = {spec.inputs.scale:g} (analysis.start_noise = {a.start_noise:g}) "
                f"gives starts with RMS entry up to {rms:.3g}, beyond {_DIVERGENCE:g}, where an "
                "iterate counts as diverged: such starts would diverge before their first step. "
                "Lower inputs.scale"
            )
    return _Draws(models, xs, systems, h0s, per, dy.default_tolerance(dtype), shared)


#: Largest RMS entry of a live iterate (dynamo.solve's default divergence threshold)
_DIVERGENCE = 1e6


def _reach_all_draws(run: _Run, draws: _Draws, bar: _Bar) -> _AllReach:
    """Reachability for all draws at once (:func:`stacked_reach`) when the analysis asks for it
    and the draws allow it; otherwise each draw iterates on its own in :func:`_measure_draw`."""
    a, models, per = run.spec.analysis, draws.models, draws.per
    batching = _batching(run.device)
    # on the CPU the draws iterate one after another in dynamo.solve's Picard loop (what
    # stacked_reach's per-draw batching would do too): only an accelerator steps them together
    together = a.reachability and run.vectorize and len(models) > 1 and batching == "vmap"
    if not (together and draws.systems[0].driven):
        return _AllReach(None, "loop", None)
    reps: list[torch.Tensor] = []
    for s in draws.systems[:1] if draws.shared else draws.systems:
        rx = s.repeat_input(per).x
        assert rx is not None  # driven systems carry their input
        reps.append(rx)
    try:
        bar.phase(f"reachability, {len(models)} draws at once ({batching})")
        if draws.shared:
            x, h0 = reps[0], draws.h0s[0]
        else:
            x, h0 = torch.stack(reps), torch.stack(draws.h0s)
        result = stacked_reach(
            models,
            x,
            h0,
            tol=draws.tol,
            max_steps=a.max_steps,
            per_draw=not draws.shared,
            on_step=bar.step,
            batching=batching,
        )
    except Exception as err:  # different structures or a non-vmappable module: loop instead
        note = f"all draws at once ({batching}) failed ({type(err).__name__}: {err})"[:280]
        return _AllReach(None, "loop", note + "; looped")
    return _AllReach(result, "vmap", None)


def _measure_draw(run: _Run, draws: _Draws, reach: _AllReach, d: int) -> DrawResult:
    """Every analysis the spec asks for on draw ``d``, then the registered metrics; each value
    is stored with its trust."""
    a = run.spec.analysis
    system, x, h0 = draws.systems[d], draws.xs[d], draws.h0s[d]
    out = _Measured()
    if a.reachability:
        _reachability(run, draws, reach, d, out)
    fixed, conv_in = _dependence(run, system, x, out) if a.input_dependence else (None, None)
    if a.geometry:
        want_smin = run.wants("geometry.sigma_min")
        out.metrics.update(
            _geometry_metrics(
                system, x, fixed, conv_in, draws.tol, a.max_steps, want_smin, out.notes
            )
        )
    if run.spec.inputs.kind == "task":
        _task_metrics(run, draws, d, out)
    if a.proofs:
        _proofs(system, x, fixed, conv_in, draws.tol, a.max_steps, out)
    dom = run.domain
    cv = _contraction(system, dom, a.max_steps, out) if a.contraction else None
    if a.lipschitz:
        assert dom is not None
        _lipschitz(system, dom, cv, out)
    for m in _registered():
        if m.compute is not None and run.wants(m.name):
            out.metrics[m.name] = _compute_metric(m, system, x, h0, run.seeds[d], out.metrics)
    if out.metrics.get("reachability.converged") == 0:
        out.notes["reachability.converged"] = (
            "no start converged: no fixed point is reported (this is not '0 fixed points')"
        )
    plain = {k: _plain(v) for k, v in out.metrics.items()}
    return DrawResult(
        seed=run.seeds[d],
        checkpoint=str(run.checkpoints[d].path) if run.checkpoints else None,
        metrics=plain,
        notes=out.notes,
        trust={k: _metric(k).trust_of(v).value for k, v in plain.items()},
    )


def _reachability(run: _Run, draws: _Draws, reach: _AllReach, d: int, out: _Measured) -> None:
    """Draw ``d``'s reachability metrics: from the all-draws run, or by its own iteration."""
    a, per = run.spec.analysis, draws.per
    if reach.result is not None:
        r = reach.result
        conv, steps, state = r["converged"][d], r["steps"][d], r["state"][d]
        outcomes = {
            "converged": int(conv.sum()),
            "diverged": int(r["diverged"][d].sum()),
            "nonfinite": int(r["nonfinite"][d].sum()),
        }
    else:
        system = draws.systems[d]
        rep = system.repeat_input(per) if system.x is not None else system
        one = _picard(rep, draws.h0s[d], draws.tol, a.max_steps, _DIVERGENCE)
        conv, steps, state = one["converged"], one["steps"], one["state"]
        outcomes = {key: int(one[key].sum()) for key in ("converged", "diverged", "nonfinite")}
    out.metrics.update(_reach_metrics(conv, steps, state, per, outcomes, a.max_steps, out.notes))


def _dependence(
    run: _Run, system: dy.LoopedSystem, x: torch.Tensor, out: _Measured
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input-dependence metrics; returns the fixed points reached from ``h0 = x`` and which
    inputs they belong to (geometry examines them)."""
    # the verdict needs ‖dh*/dx‖ > 0, which one Golub–Kahan step (a lower estimate) shows, and
    # the rank of ∂f/∂x from the dense step Jacobian; the norm itself is reported when asked
    # for (40 steps, two GMRES each). Every start of each input (the same starts as the
    # reachability metrics: same kind, noise and seed), so that several attractors of one
    # input are seen and said, whatever the verdict
    a = run.spec.analysis
    want_norm = run.wants("input_dependence.sensitivity_norm")
    dep = dy.input_dependence(
        system,
        x,
        n_starts=a.starts_per_input,
        scale=a.start_noise,
        seed=run.spec.inputs.seed,
        max_steps=a.max_steps,
        sensitivity_steps=40 if want_norm else 1,
    )
    m, notes = out.metrics, out.notes
    m["input_dependence.verdict"] = dep.verdict
    _multistability_metrics(dep, out)
    n_in, n_ok = dep.converged.numel(), int(dep.converged.sum())
    if n_ok == n_in:
        m["input_dependence.n_distinct"] = dep.n_distinct
        m["input_dependence.distance_ratio"] = dep.distance_ratio
    else:  # a count over the converged inputs only would undercount: unknown, not less
        m["input_dependence.n_distinct"] = None
        m["input_dependence.distance_ratio"] = None
        why = (
            "no input's iteration from h0 = x converged: no fixed point to count"
            if n_ok == 0
            else f"only {n_ok} of {n_in} inputs' iterations from h0 = x converged: "
            "a count over those would leave the others out"
        )
        notes["input_dependence.n_distinct"] = why
        notes["input_dependence.distance_ratio"] = why
    if want_norm:
        sn = dep.sensitivity_norm[dep.converged] if bool(dep.converged.any()) else None
        m["input_dependence.sensitivity_norm"] = (
            None if sn is None or not bool(torch.isfinite(sn).all()) else float(sn.max())
        )
    return dep.fixed_points[dep.converged], torch.nonzero(dep.converged).flatten()


def _multistability_metrics(dep: dy.InputDependence, out: _Measured) -> None:
    """``input_dependence.multistable_fraction`` and ``.max_attractors`` from the distinct
    limits each input's starts reached (``dep.n_limits``, converged starts only)."""
    m, notes = out.metrics, out.notes
    n_in, per = int(dep.n_limits.numel()), dep.n_starts
    m["input_dependence.multistable_fraction"] = float((dep.n_limits > 1).sum()) / n_in
    empty = int((dep.starts_converged == 0).sum())
    unsettled = n_in * per - int(dep.starts_converged.sum())
    if empty:  # a maximum that leaves an input out is unknown, not smaller
        m["input_dependence.max_attractors"] = None
        notes["input_dependence.max_attractors"] = (
            f"{empty} of {n_in} inputs had no converged start (of {per} each): their limits "
            "are unknown"
        )
    else:
        m["input_dependence.max_attractors"] = int(dep.n_limits.max())
    if per == 1:
        notes["input_dependence.multistable_fraction"] = (
            "one start per input (analysis.starts_per_input = 1): a second attractor of an "
            "input cannot be seen"
        )
    elif unsettled:
        notes["input_dependence.multistable_fraction"] = (
            f"counts the limits of converged starts only; {unsettled} of {n_in * per} starts "
            "did not converge"
        )


def _task_metrics(run: _Run, draws: _Draws, d: int, out: _Measured) -> None:
    """Task accuracy of the readout at the point reached from ``h0 = x`` (the loop as it is
    used: iterated until it converges or ``max_steps``)."""
    model, system, x = draws.models[d], draws.systems[d], draws.xs[d]
    names = ("task.accuracy", "task.sequence_accuracy")
    if not offers(model, ReadsOut):
        for k in names:
            out.metrics[k] = None
            out.notes[k] = f"{type(model).__name__} has no readout(h): no answer to score"
        return
    batch = task_batch(run.spec).to(x.device)
    start = x if tuple(x.shape[1:]) == system.state_shape else system.initial_states("normal", 1)
    one = _picard(system, start, draws.tol, run.spec.analysis.max_steps, _DIVERGENCE)
    state = one["state"].reshape(x.shape[0], *system.state_shape)
    with torch.no_grad():
        logits = model.readout(state.to(dtype=next(model.parameters()).dtype))  # type: ignore[operator]
    acc = dy.tasks.accuracy(logits, batch)
    out.metrics["task.accuracy"] = float(acc["token"])
    out.metrics["task.sequence_accuracy"] = float(acc["sequence"])
    n_conv = int(one["converged"].sum())
    if n_conv < x.shape[0]:
        for k in names:
            out.notes[k] = (
                f"{x.shape[0] - n_conv} of {x.shape[0]} instances' iterations did not converge "
                f"within {run.spec.analysis.max_steps} steps: scored at their last iterate"
            )


def _proofs(
    system: dy.LoopedSystem,
    x: torch.Tensor,
    fixed: torch.Tensor | None,
    conv_in: torch.Tensor | None,
    tol: float,
    max_steps: int,
    out: _Measured,
) -> None:
    """Rigorous proofs (:func:`dynamo.prove_fixed_point`) at the fixed points reached from
    ``h0 = x`` (those input-dependence found, else iterated here)."""
    if fixed is None or conv_in is None:
        same = tuple(x.shape[1:]) == system.state_shape
        h0 = x.clone() if same else torch.zeros(x.shape[0], *system.state_shape, dtype=x.dtype)
        sol = dy.solve(system, h0, tol=tol, max_steps=max_steps)
        reached = sol.converged
        fixed, conv_in = sol.state[reached], torch.nonzero(reached).flatten()
    m, notes = out.metrics, out.notes
    n_in = int(x.shape[0])
    if fixed.shape[0] == 0:
        _no_proofs(out, "no input's iteration from h0 = x converged: no fixed point to prove")
        return
    proofs = []
    try:
        for h, i in zip(fixed, conv_in.tolist(), strict=True):
            sub = system.with_input(x[i : i + 1]) if system.driven else system
            proofs.append(dy.prove_fixed_point(sub, h))
    except dy.errors.InvalidArgumentError as err:
        _no_proofs(out, f"no proof possible: {err}")
        return
    ok: list[dy.PointProof] = [q for q in proofs if q.proven]
    m["proofs.proven_fraction"] = len(ok) / len(proofs)
    m["proofs.proof_radius_min"] = (
        min(q.proof_radius for q in ok) if len(ok) == len(proofs) else None
    )
    basins = [q.basin.radius for q in ok if q.basin is not None]
    m["proofs.basin_radius_min"] = min(basins) if len(basins) == len(proofs) else None
    unconverged = n_in - len(proofs)
    text = (
        f"{len(proofs)} fixed point(s) reached from h0 = x"
        + (f" ({unconverged} input(s) did not converge)" if unconverged else "")
        + f", {len(ok)} proven to exist and be unique"
    )
    if ok:
        text += (
            f" within r in [{min(q.proof_radius for q in ok):.3g}, "
            f"{max(q.proof_radius for q in ok):.3g}] (max norm)"
        )
    stable = [q for q in ok if q.stability == "stable"]
    text += f"; {len(stable)} proven stable, {len(basins)} with a certified basin"
    if basins:
        text += f" (radius {min(basins):.3g} to {max(basins):.3g})"
    failed = [q.outcome.label for q in proofs if not q.proven]
    if failed:
        text += "; not proven: " + ", ".join(sorted(set(failed)))
    text += (
        "; completeness: not attempted (dynamo.enumerate_fixed_points, for small states, "
        "says whether these are all)"
    )
    notes["proofs.proven_fraction"] = text
    if m["proofs.proof_radius_min"] is None:
        notes["proofs.proof_radius_min"] = "not every fixed point reached is proven"
    if m["proofs.basin_radius_min"] is None:
        notes["proofs.basin_radius_min"] = (
            "not every fixed point reached is proven stable with a certified basin"
        )


def _no_proofs(out: _Measured, why: str) -> None:
    """Every proofs metric n/a, with the reason."""
    for k in ("proofs.proven_fraction", "proofs.proof_radius_min", "proofs.basin_radius_min"):
        out.metrics[k] = None
        out.notes[k] = why


def _contraction(
    system: dy.LoopedSystem, dom: dy.Domain | None, max_steps: int, out: _Measured
) -> dy.ContractionVerdict:
    """The contraction verdicts, with a note listing the evidence and its trust."""
    cv = dy.check_contraction(
        system, dom, n_samples=8, ascent_steps=8, n_starts=4, max_steps=max_steps
    )
    out.metrics["contraction.verdict"] = str(cv.verdict)
    out.metrics["contraction.local_verdict"] = str(cv.local_verdict)
    out.notes["contraction.verdict"] = (
        f"{cv.verdict.message} ("
        + "; ".join(
            f"{e.kind}: "
            + ("none" if e.value is None else f"{e.value:.4g}")
            + ("" if e.value is None else f" ({Trust(e.trust).word})")
            for e in cv.evidence
        )
        + ")"
    )
    return cv


def _lipschitz(
    system: dy.LoopedSystem, dom: dy.Domain, cv: dy.ContractionVerdict | None, out: _Measured
) -> None:
    """The certified Lipschitz upper bound on the spec's domain (null, with the reason, where
    no certified bound exists)."""
    notes = out.notes
    ub: dy.Bound | None = None
    if cv is not None:  # check_contraction computed this very bound on the same domain
        ub = cv.upper_bound
        if ub is None:
            why = next(e.claim for e in cv.evidence if e.kind == "no Lipschitz upper bound")
            notes["lipschitz.upper_bound"] = f"no certified bound: {why.removeprefix('none: ')}"
    else:
        try:
            ub = dy.lipschitz_upper_bound(system, dom)
        except dy.errors.InvalidArgumentError as err:
            notes["lipschitz.upper_bound"] = f"no certified bound: {err}"
    value = None if ub is None else ub.value
    if ub is not None and not ub.certified:
        # the metric is a certified bound: one resting on an unproven registered rule is not
        # one (its value is in the contraction evidence, with its trust)
        notes["lipschitz.upper_bound"] = (
            f"no certified bound: the rules give {ub.value:.6g}, but not every rule applied is "
            "proven (a registered rule declared checked or estimated)"
        )
        value = None
    out.metrics["lipschitz.upper_bound"] = value


def _judge(spec: Spec, draws: list[DrawResult]) -> list[RequirementResult]:
    """Each requirement over the draws: the share that satisfies it, its exact 95% interval,
    and the weakest trust of its values."""
    results = []
    for req in spec.requirements:
        values = [dr.metrics.get(req.metric) for dr in draws]
        passes = [req.holds(v) for v in values]
        k = sum(passes)
        lo, hi = clopper_pearson(k, len(passes))
        results.append(
            RequirementResult(
                text=req.text(),
                metric=req.metric,
                op=req.op,
                value=req.value,
                quorum=req.quorum,
                basis=basis(req.metric, values),
                trust=Trust.weakest(dr.trust[req.metric] for dr in draws).value,
                values=values,
                passes=passes,
                proportion=k / len(passes),
                interval=(lo, hi),
                passed=k / len(passes) >= req.quorum,
            )
        )
    return results


def _environment(run: _Run, reach: _AllReach, started: datetime | None, t0: float) -> Environment:
    """Versions, platform, git state, device, dtype, seeds, and (unless ``started`` is None,
    for reproducible output) when it ran and for how long."""
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--ignore-submodules=all")
    return Environment(
        dynamo=dy.__version__,
        torch=torch.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        git_commit=_git("rev-parse", "HEAD") or None,
        device=str(run.device),
        dtype=run.spec.analysis.dtype,
        seeds=list(run.seeds),
        input_seed=run.spec.inputs.seed,
        reach_path=reach.path,
        reach_note=reach.note,
        git_dirty=None if dirty is None else bool(dirty),
        timestamp=Timestamp(
            started=started.isoformat(timespec="seconds"),
            elapsed_s=round(time.perf_counter() - t0, 3),
        )
        if started is not None
        else None,
    )


def _check_seeds(seeds: Any) -> list[int]:
    """``certify``'s ``seeds=``: particular seeds (an iterable of distinct ints in range)."""
    call = f"certify(spec, seeds={seeds!r})"
    if isinstance(seeds, int):  # bool included
        raise dy.errors.InvalidArgumentError(
            f"{call}: seeds are the particular initialisation seeds, not a count: pass "
            f"range({seeds}) or a list such as [0, 1, 2] (the command line's --seeds N is a "
            "count from the spec's first seed: spec.draws.resolved(count=N))"
        )
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise dy.errors.InvalidArgumentError(
            f"{call}: seeds must be a list (or range) of integer seeds, not {type(seeds).__name__}"
        )
    out = list(seeds)
    if not out:
        raise dy.errors.InvalidArgumentError(f"{call}: give at least one seed")
    for s in out:
        check_seed(call, "seed", s)
    if len(set(out)) != len(out):
        raise dy.errors.InvalidArgumentError(
            f"{call}: seeds repeat; a repeated seed is the same draw"
        )
    return out


#: Peak working memory of the vmapped reachability, in units of all draws' states (the state, its
#: image, the gathered copies, and the block's activations inside vmap: attention scores, the
#: feed-forward layer). Measured with ``ru_maxrss`` on the default block (d_model 64, 16 tokens,
#: float64, torch 2.13) at 4-64 draws x 32-512 starts: 23-36 times the states, plus one stacked
#: copy of the parameters. 20 keeps the estimate below every measurement: a refusal is certain to
#: be right, never a guess.
_REACH_FACTOR = 20.0


def _check_reach_memory(
    spec: Spec, n_draws: int, model: nn.Module, dtype: torch.dtype, dev: torch.device, vec: bool
) -> None:
    """Refuse before any work a run whose draws and reachability states cannot fit in memory.

    Every draw's block is built (and, on the vmapped path, its parameters stacked once more):
    ``draws × parameters`` entries (twice when vmapped). Reachability, when the spec runs it,
    holds every draw's states at once, a state and its image per start: ``2 × draws × inputs ×
    starts × state``; on the vmapped path the block's activations for all draws come on top,
    and the measured ``_REACH_FACTOR`` replaces the 2. Entries of the dtype: a lower estimate of
    the peak (the activations of the one draw evaluated at a time on the other paths, 7-15× its
    states, are left out), so a refusal is never a guess.
    """
    a, i = spec.analysis, spec.inputs
    size = torch.tensor([], dtype=dtype).element_size()
    n_params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    state = i.seq_len * spec.architecture.d_model
    starts = i.count * a.starts_per_input
    vmapped = a.reachability and vec and n_draws > 1 and _batching(dev) == "vmap"
    per_state = (_REACH_FACTOR if vmapped else 2.0) if a.reachability else 0.0
    nbytes = size * (
        n_draws * n_params * (2 if vmapped else 1) + n_draws * per_state * starts * state
    )
    check_memory(
        f"certify({spec.name!r})",
        f"{n_draws} draw(s) × {i.count} input(s) × {a.starts_per_input} start(s) "
        f"({n_params} parameters per draw, states of {i.seq_len} × {spec.architecture.d_model})",
        nbytes,
        dev,
        "use fewer draws (--seeds, draws.count), starts (--starts, analysis.starts_per_input) "
        "or inputs (--inputs, inputs.count)",
    )


def _first_step(spec: Spec, seed: int, model: nn.Module, x: torch.Tensor) -> dy.LoopedSystem:
    """The first draw's system; when a factory's block fails its first steps, the error names
    the factory, the keys it was called with, and the input width the spec gives it."""
    try:
        return dy.LoopedSystem.from_module(model, x, dtype=None)
    except Exception as err:
        a = spec.architecture
        if a.kind != "factory":
            raise
        kw = ", ".join(f"{k}={v!r}" for k, v in a.kwargs.items())
        width = (
            f"architecture.d_model = {a.d_model}"
            if "d_model" in a.changed()
            else f"architecture.d_model = {a.d_model} (the default: the spec does not set it)"
        )
        raise SpecError(
            f"architecture.factory = {a.factory!r}, called as factory(seed={seed}"
            + (f", {kw}" if kw else "")
            + f") (architecture.kwargs: {sorted(a.kwargs) or 'none'}), built a block whose first "
            f"step failed on inputs of shape {tuple(x.shape)}: {type(err).__name__}: "
            f"{str(err)[:300]}. The inputs' width is {width}: set it to the width the block "
            "expects, and check architecture.kwargs"
        ) from None


def _domain(spec: Spec) -> dy.Domain | None:
    d = spec.analysis.domain
    if d is None:
        return None
    return dy.Domain(
        r_min=d.r_min, r_max=math.inf if d.r_max is None else d.r_max, x_min=d.x_min, x_max=d.x_max
    )


def _compute_metric(
    m: Metric, system: Any, x: Any, h0: Any, seed: int, metrics: dict[str, Any]
) -> float | int | str | None:
    """One draw's value of a metric registered from outside, checked against its declaration."""
    ctx = DrawContext(system=system, x=x, h0=h0, seed=seed, metrics=dict(metrics))
    assert m.compute is not None
    try:
        value = m.compute(ctx)
    except SystemExit as err:  # user code must not end a CI gate with its own exit code
        raise SpecError(
            f"metric {m.name}: its compute function called sys.exit({err.code!r}) at draw seed "
            f"{seed} (nothing was certified)"
        ) from None
    except Exception as err:
        raise SpecError(
            f"metric {m.name}: its compute function raised {type(err).__name__}: {err} "
            f"(draw seed {seed})"
        ) from None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if value is None:
        return None
    if m.type == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(
                f"metric {m.name}: compute returned {type(value).__name__}; a number metric "
                "returns an int, a float or None"
            )
        return value
    if not isinstance(value, str) or value not in (m.values or ()):
        raise SpecError(
            f"metric {m.name}: compute returned {value!r}; its values are "
            + ", ".join(repr(v) for v in m.values or ())
        )
    return value


def _reach_metrics(
    conv: torch.Tensor,
    steps: torch.Tensor,
    state: torch.Tensor,
    per: int,
    outcomes: dict[str, int],
    max_steps: int,
    notes: dict[str, str],
) -> dict[str, Any]:
    n = conv.numel()
    out: dict[str, Any] = {
        "reachability.converged_fraction": float(conv.double().mean()),
        "reachability.converged": int(conv.sum()),
        "reachability.starts": n,
        "reachability.diverged": outcomes["diverged"],
        "reachability.nonfinite": outcomes["nonfinite"],
    }
    # an unconverged start took more than max_steps: a censored count, never left out
    k = int(conv.sum())
    st = torch.where(conv, steps.double(), torch.full_like(steps, math.inf, dtype=torch.float64))
    median = float(st.sort().values[(n - 1) // 2])  # the lower median, an order statistic
    out["reachability.steps_median"] = finite_or_none(median)
    out["reachability.steps_max"] = float(st.max()) if k == n else None
    if k < n:
        notes["reachability.steps_max"] = (
            f"{n - k} of {n} starts did not converge within {max_steps} steps: the largest "
            "count is unknown (more than max_steps)"
        )
        if out["reachability.steps_median"] is None:
            notes["reachability.steps_median"] = (
                f"half or more of the starts ({n - k} of {n}) did not converge within "
                f"{max_steps} steps"
            )
    flat = state.reshape(n // per, per, -1).double()
    cv = conv.reshape(n // per, per)
    if k < n:  # a start without a limit has no direction to agree with
        out["reachability.path_independence"] = None
        notes["reachability.path_independence"] = (
            f"{n - k} of {n} starts did not converge: path independence needs every start's limit"
        )
        return out
    out["reachability.path_independence"] = path_agreement(flat, cv).mean
    return out


def _geometry_metrics(
    system: dy.LoopedSystem,
    x: torch.Tensor,
    fixed: torch.Tensor | None,
    conv_in: torch.Tensor | None,
    tol: float,
    max_steps: int,
    want_smin: bool,
    notes: dict[str, str],
) -> dict[str, Any]:
    if fixed is None:
        same = tuple(x.shape[1:]) == system.state_shape
        h0 = x.clone() if same else system.initial_states("normal", 1)
        sol = dy.solve(
            system, h0, method="picard", tol=tol, atol=tol, max_steps=max_steps, throw=False
        )
        conv_in = torch.nonzero(sol.converged).flatten()
        fixed = sol.state[sol.converged]
    if fixed.shape[0] == 0 or conv_in is None:
        none: dict[str, Any] = {"geometry.spectral_radius": None, "geometry.spectral_norm": None}
        if want_smin:
            none["geometry.sigma_min"] = None
        for key in none:
            notes[key] = "no input's iteration converged: no fixed point to linearize at"
        return none
    if fixed.shape[0] < x.shape[0]:  # a largest value over some inputs would be optimistic
        part: dict[str, Any] = {"geometry.spectral_radius": None, "geometry.spectral_norm": None}
        if want_smin:
            part["geometry.sigma_min"] = None
        for key in part:
            notes[key] = (
                f"only {fixed.shape[0]} of {x.shape[0]} inputs' iterations converged: an extreme "
                "over those would leave the others out"
            )
        return part
    sub = system.with_input(x[conv_in]) if system.driven else system
    # 6 digits are plenty for a threshold and cost half the Krylov steps of the default 8
    out: dict[str, Any] = {}
    for key, fn in (
        ("geometry.spectral_radius", dy.spectral_radius),
        ("geometry.spectral_norm", dy.spectral_norm),
    ):
        est = fn(sub, fixed, tol=1e-6, throw=False)
        if est.all_converged:
            out[key] = float(est.values.max())
        else:  # an unconverged Krylov estimate may sit below the truth: never compare it
            out[key] = None
            notes[key] = "the Krylov estimate did not converge (tol 1e-6) at some fixed point"
    if not want_smin:
        return out
    if system.state_dim <= 512:
        J = dy.jacobian(sub, fixed)
        eye = torch.eye(system.state_dim, dtype=J.dtype)
        out["geometry.sigma_min"] = float(torch.linalg.svdvals(eye - J)[:, -1].min())
    else:
        g = dy.geometry(sub, fixed, basin_samples=1, radii=(1e-3,), transient_steps=1, max_steps=50)
        out["geometry.sigma_min"] = float(g.sigma_min.min())
    return out


class _Bar:
    """A tqdm bar over the draws on stderr (nothing when disabled); the reachability phase, which
    runs all draws at once, shows its step and the starts still running."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, desc="dynamo certify", unit="draw", file=sys.stderr, leave=False
            )

    def phase(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"dynamo certify: {text}")
            self.bar.set_postfix_str("")

    def step(self, k: int, running: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {k}, {running} starts running", refresh=True)

    def draw(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
