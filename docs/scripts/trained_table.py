"""The recall × normalization table, trained: certificate at initialisation, certificate after
training, attractors per input, and extrapolation to longer inputs with more iterations.

For each recall ∈ {none, outer, internal} × norm ∈ {pre, post, sandwich, outer} (the variants
the seed paper, Labovich arXiv 2604.15259, contrasts) and each seed, this script

1. writes the variant's spec (``OUT/specs/<recall>-<norm>.toml``: a one-layer LoopedTransformer,
   d_model 32, causal, RoPE, on prefix sums of length 16),
2. certifies the initialisation draw (``dynamo certify SPEC``),
3. trains it (``dynamo train SPEC --out OUT/checkpoints``: the deep-thinking recipe),
4. certifies the trained weights (``dynamo certify SPEC --checkpoint ...``),
5. finds the attractors of every input from 32 starts each (:func:`dynamo.attractors`, with the
   task accuracy at each attractor), and
6. measures the accuracy after 1..64 iterations at lengths 16 (trained), 32 and 48
   (:func:`dynamo.task_accuracy`).

Every job's result is kept in ``OUT/jobs/`` as soon as it is done: a rerun skips finished jobs.
The assembled table is written to ``--json`` (the docs page "Trained looped transformers" reads
``docs/data/trained_table.json``)::

    python docs/scripts/trained_table.py --out runs/table --workers 2 \\
        --json docs/data/trained_table.json

``--seeds 3 --steps 1200`` is the table in the docs. A second part trains the two-layer
outer/outer block and reports its per-layer cyclic fixed point (claim C10) and when its attention
maps stop changing; a third trains recall none / outer / internal with outer norm on 4×4 sudoku
(``--sudoku-steps``, 2000 by default; 0 skips it), where the seed paper puts internal recall. A
rerun adds its wall time to the earlier runs' in the table (``runs``, ``wall_seconds``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

RECALLS = ("none", "outer", "internal")
NORMS = ("pre", "post", "sandwich", "outer")
METRICS = (
    "reachability.converged_fraction",
    "reachability.path_independence",
    "reachability.steps_median",
    "input_dependence.verdict",
    "input_dependence.multistable_fraction",
    "input_dependence.max_attractors",
    "input_dependence.n_distinct",
    "geometry.spectral_radius",
    "task.accuracy",
    "task.sequence_accuracy",
)
LENGTHS = (16, 32, 48)
MAX_ITERS = 64
#: per task: the training difficulty, the harder ones measured, and causal attention (prefix
#: sums read left to right; a sudoku cell depends on every other cell)
TASKS = {
    "prefix_sums": {"difficulties": LENGTHS, "causal": True},
    "sudoku4": {"difficulties": (6, 9, 12), "causal": False},
}
SUDOKU_RECALLS = ("none", "outer", "internal")


def _name(recall: str, norm: str, n_layers: int, task: str) -> str:
    return (
        f"{recall}-{norm}"
        + ("" if n_layers == 1 else f"-{n_layers}layers")
        + ("" if task == "prefix_sums" else f"-{task}")
    )


def spec_text(
    recall: str, norm: str, seed: int, steps: int, n_layers: int = 1, task: str = "prefix_sums"
) -> str:
    """The variant's spec, as a user would write it."""
    t = TASKS[task]
    first, *harder = t["difficulties"]
    return f"""\
name = "{_name(recall, norm, n_layers, task)}"
requirements = ["reachability.converged_fraction >= 0.99", "task.accuracy >= 0.9"]

[architecture]
d_model = 32
n_heads = 4
n_layers = {n_layers}
recall = "{recall}"
norm = "{norm}"
causal = {"true" if t["causal"] else "false"}

[task]
name = "{task}"
difficulty = {first}
eval_difficulties = {list(harder)}
eval_iters = {MAX_ITERS}

[inputs]
kind = "task"
count = 8
seed = 1

[draws]
seeds = [{seed}]

[analysis]
starts_per_input = 8
max_steps = 500

[training]
steps = {steps}
batch_size = 32
iters = [4, 16]
eval_every = 100
eval_size = 256
save_every = 100
"""


def _metrics(cert: Any) -> dict[str, Any]:
    d = cert.draws[0]
    return {k: d.metrics.get(k) for k in METRICS}


def _trained(spec: Any, path: Path) -> tuple[Any, Any, Any]:
    """The trained block in float64, the spec's task instances and their encoded inputs."""
    import torch

    import dynamo as dy
    import verify

    model = verify.build_model(spec, spec.draws.resolved()[0])
    dy.load_checkpoint(path, model)
    model = model.double().eval().requires_grad_(False)
    batch = verify.task_batch(spec)
    with torch.no_grad():
        x = model.encode(batch.tokens)
    return model, batch, x


def _attractors(spec: Any, path: Path) -> dict[str, Any]:

    import dynamo as dy

    model, batch, x = _trained(spec, path)
    system = dy.LoopedSystem.from_module(model, x)
    att = dy.attractors(
        system,
        x,
        n_starts=32,
        noise=1.0,
        seed=0,
        max_steps=500,
        readout=model.readout,
        targets=batch.targets,
        mask=batch.mask,
    )
    out = att.to_dict()
    keep = (
        "multistable_fraction",
        "max_per_input",
        "mean_per_input",
        "accuracy_first",
        "accuracy_majority",
        "accuracy_minority",
        "accuracy_basin_weighted",
    )
    summary = {k: out.get(k) for k in keep}
    summary["n_limits"] = out["n_limits"]
    summary["n_stable"] = out["n_stable"]
    summary["not_converged"] = out["not_converged"]
    # per input, each limit's basin share, stability and accuracy (the largest basin first)
    summary["limits"] = [
        [
            {k: lim[k] for k in ("basin_share", "stable", "spectral_radius", "accuracy", "first")}
            for lim in lims
        ]
        for lims in out["limits"]
    ]
    return summary


def job(
    recall: str,
    norm: str,
    seed: int,
    steps: int,
    out: str,
    n_layers: int = 1,
    task: str = "prefix_sums",
) -> dict:
    """One variant and seed: certificate at init, training, certificate after, attractors,
    extrapolation."""
    import torch

    torch.set_num_threads(1)
    import dynamo as dy
    import verify

    root = Path(out)
    name = _name(recall, norm, n_layers, task)
    spec_path = root / "specs" / f"{name}-seed{seed}.toml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(spec_text(recall, norm, seed, steps, n_layers, task))
    t_job = time.perf_counter()
    difficulties = list(TASKS[task]["difficulties"])
    spec = verify.load_spec(spec_path)
    t0 = time.perf_counter()
    init = verify.certify(spec, timestamp=False)
    t_init = time.perf_counter() - t0
    (trained,) = verify.train(spec, root / "checkpoints")
    t1 = time.perf_counter()
    after = verify.certify(spec, checkpoints=[trained.path], timestamp=False)
    t_after = time.perf_counter() - t1
    model = verify.build_model(spec, seed)
    dy.load_checkpoint(trained.path, model)
    curve = dy.task_accuracy(
        model, spec.task.build(), difficulties=difficulties, max_iters=MAX_ITERS, n=256, seed=3
    )
    t2 = time.perf_counter()
    att = _attractors(spec, trained.path)
    t_att = time.perf_counter() - t2
    meta = dy.load_checkpoint(trained.path).metadata
    result: dict[str, Any] = {
        "task": task,
        "recall": recall,
        "norm": norm,
        "n_layers": n_layers,
        "seed": seed,
        "steps": steps,
        "init": _metrics(init),
        "trained": _metrics(after),
        "notes_trained": after.draws[0].notes,
        "train_seconds": meta.get("seconds"),
        "train_history": meta.get("history"),
        "curve": {
            "lengths": difficulties,
            "token": curve.token.tolist(),
            "sequence": curve.sequence.tolist(),
        },
        "attractors": att,
        "seconds": {"checks_at_init": t_init, "checks_trained": t_after, "attractors": t_att},
        "checkpoint": str(trained.path),
    }
    if n_layers > 1:
        result["layer_cycle"] = _layer_cycle(spec, trained.path)
    result["seconds"]["job"] = time.perf_counter() - t_job
    return result


def _layer_cycle(spec: Any, path: Path) -> dict[str, Any]:
    """Per-layer cyclic fixed point (C10) and attention settling at the fixed point reached
    from h0 = x by the first task input whose iteration converges."""
    import torch

    import dynamo as dy

    model, _, xs = _trained(spec, path)
    sol = dy.solve(
        dy.LoopedSystem.from_module(model, xs), xs, method="picard", max_steps=2000, throw=False
    )
    if not bool(sol.converged.any()):
        return {"converged": False}
    i = int(torch.nonzero(sol.converged)[0])
    x = xs[i : i + 1]
    system = dy.LoopedSystem.from_module(model, x)
    cyc = dy.layer_cycle(system, sol.state[i : i + 1], starts=x, n_steps=200)
    out = {
        "converged": True,
        "input": i,
        "inputs_converged": int(sol.converged.sum()),
        **{k: v for k, v in cyc.to_dict().items() if k != "points"},
    }
    # per layer, the first iteration after which its attention maps move by < 1e-6 (entrywise)
    # and its output is within 1e-6 (relative) of its cycle point
    conv = cyc.convergence[:, 0, :]
    out["state_settled_at"] = [
        _first_below(conv[:, j].tolist(), 1e-6) for j in range(conv.shape[1])
    ]
    if cyc.attention_change is not None:
        att = cyc.attention_change[:, 0, :]
        out["attention_settled_at"] = [
            _first_below(att[:, j].tolist(), 1e-6) for j in range(att.shape[1])
        ]
        out["attention_change"] = att.tolist()
    out["convergence"] = conv.tolist()
    return out


def _first_below(trace: list[float], level: float) -> int | None:
    """The first iteration (1-based) from which every later value is below ``level``."""
    last_above = max((i for i, v in enumerate(trace) if not v < level), default=-1)
    return last_above + 2 if last_above + 1 < len(trace) else None


def _interval(values: list[float]) -> dict[str, Any]:
    """Mean and a 95% t-interval over the seeds (Student t, n − 1 degrees of freedom)."""
    from scipy import stats

    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return {"mean": None, "lo": None, "hi": None, "n": 0, "values": values}
    m = sum(v) / len(v)
    if len(v) == 1:
        return {"mean": m, "lo": None, "hi": None, "n": 1, "values": values}
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    h = float(stats.t.ppf(0.975, len(v) - 1)) * sd / math.sqrt(len(v))
    return {"mean": m, "lo": max(0.0, m - h), "hi": min(1.0, m + h), "n": len(v), "values": values}


def summarise(rows: list[dict]) -> list[dict]:
    """One summary per variant over its seeds."""
    out = []
    for recall in RECALLS:
        for norm in NORMS:
            rs = [
                r
                for r in rows
                if (r["recall"], r["norm"], r["n_layers"]) == (recall, norm, 1)
                and r.get("task", "prefix_sums") == "prefix_sums"
            ]
            if not rs:
                continue

            def best(r: dict, length: int) -> float:
                return max(r["curve"]["token"][LENGTHS.index(length)])

            def at(r: dict, length: int, t: int) -> float:
                return r["curve"]["token"][LENGTHS.index(length)][t - 1]

            out.append(
                {
                    "recall": recall,
                    "norm": norm,
                    "seeds": [r["seed"] for r in rs],
                    "init_converged": _interval(
                        [r["init"]["reachability.converged_fraction"] for r in rs]
                    ),
                    "init_verdicts": [r["init"]["input_dependence.verdict"] for r in rs],
                    "init_rho": [r["init"]["geometry.spectral_radius"] for r in rs],
                    "trained_converged": _interval(
                        [r["trained"]["reachability.converged_fraction"] for r in rs]
                    ),
                    "trained_verdicts": [r["trained"]["input_dependence.verdict"] for r in rs],
                    "trained_rho": [r["trained"]["geometry.spectral_radius"] for r in rs],
                    "multistable": _interval([r["attractors"]["multistable_fraction"] for r in rs]),
                    "accuracy_16_at_16": _interval([at(r, 16, 16) for r in rs]),
                    "accuracy_32_at_64": _interval([at(r, 32, MAX_ITERS) for r in rs]),
                    "accuracy_48_at_16": _interval([at(r, 48, 16) for r in rs]),
                    "accuracy_48_at_64": _interval([at(r, 48, MAX_ITERS) for r in rs]),
                    "accuracy_48_best": _interval([best(r, 48) for r in rs]),
                    "accuracy_majority": _interval(
                        [r["attractors"]["accuracy_majority"] for r in rs]
                    ),
                    "accuracy_minority": _interval(
                        [r["attractors"]["accuracy_minority"] for r in rs]
                    ),
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for specs, checkpoints, jobs")
    p.add_argument("--json", type=Path, required=True, help="the assembled table")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-two-layer", action="store_true", help="skip the two-layer block")
    p.add_argument(
        "--sudoku-steps",
        type=int,
        default=2000,
        help="training steps of the sudoku part (recall none / outer / internal, outer norm); "
        "0 skips it",
    )
    args = p.parse_args(argv)
    jobs_dir = args.out / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    todo = [
        (recall, norm, seed, args.steps, str(args.out), 1)
        for seed in range(args.seeds)
        for recall in RECALLS
        for norm in NORMS
    ]
    if not args.no_two_layer:
        todo.append(("outer", "outer", 0, args.steps, str(args.out), 2))
    if args.sudoku_steps:
        todo += [
            (recall, "outer", seed, args.sudoku_steps, str(args.out), 1, "sudoku4")
            for seed in range(args.seeds)
            for recall in SUDOKU_RECALLS
        ]

    def key(j: tuple) -> Path:
        tail = "" if len(j) < 7 else f"-{j[6]}"
        return jobs_dir / f"{j[0]}-{j[1]}-{j[5]}layers-seed{j[2]}-steps{j[3]}{tail}.json"

    t0 = time.perf_counter()
    pending = [j for j in todo if not key(j).exists()]
    print(f"{len(todo)} jobs, {len(todo) - len(pending)} done before", flush=True)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {pool.submit(job, *j): j for j in pending}
        for fut in futures:
            j = futures[fut]
            r = fut.result()
            tmp = key(j).with_suffix(".tmp")
            tmp.write_text(json.dumps(r))
            os.replace(tmp, key(j))
            a = r["attractors"]
            print(
                f"{j[0]:>8} {j[1]:>8} L{j[5]} {r.get('task')} seed {j[2]}: init conv "
                f"{r['init']['reachability.converged_fraction']}, trained conv "
                f"{r['trained']['reachability.converged_fraction']}, acc@16 it. "
                f"{r['curve']['token'][0][15]:.3f}, hardest@64 {r['curve']['token'][2][-1]:.3f}, "
                f"multistable {a['multistable_fraction']}, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    rows = [json.loads(key(j).read_text()) for j in todo]
    wall = time.perf_counter() - t0
    # a rerun that found finished jobs adds its own wall time to the earlier runs' (which the
    # table already written records), so the total is the whole table's
    runs = []
    if args.json.exists():
        before = json.loads(args.json.read_text())
        runs = before.get("runs") or [
            {"jobs": before.get("jobs_run", 37), "wall_seconds": before["wall_seconds_this_run"]}
        ]
    runs.append({"jobs": len(pending), "wall_seconds": wall})
    table = {
        "command": "python docs/scripts/trained_table.py " + " ".join(sys.argv[1:] or []),
        "wall_seconds_this_run": wall,
        "runs": runs,
        "wall_seconds": sum(r["wall_seconds"] for r in runs),
        "sudoku_steps": args.sudoku_steps,
        "workers": args.workers,
        "seeds": args.seeds,
        "steps": args.steps,
        "lengths": list(LENGTHS),
        "max_iters": MAX_ITERS,
        "rows": rows,
        "summary": summarise(rows),
    }
    args.json.write_text(json.dumps(table, indent=1))
    print(f"wrote {args.json} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
