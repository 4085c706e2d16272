"""The ``dynamo`` command line.

Exit codes: 0 every requirement holds; 1 a requirement fails; 2 bad usage or bad input (the message
names what to fix); 3 an internal error (a bug in dynamo: please report it).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C

app = typer.Typer(
    name="dynamo",
    help=(
        "Dynamical-systems analysis of looped (weight-tied) transformer blocks.\n\n"
        "Exit codes: 0 all requirements hold, 1 a requirement fails, 2 bad usage or input, "
        "3 internal error."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)


class DType(str, Enum):
    float64 = "float64"
    float32 = "float32"


def _print_version(value: bool) -> None:
    """``--version``: dynamo's version, and the torch and Python it runs on (torch's version read
    from its metadata, so that asking does not import it)."""
    if not value:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(
        f"dynamo {of('looped-dynamo')} (torch {of('torch')}, Python {platform.python_version()})"
    )
    raise typer.Exit(EXIT_PASS)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print dynamo's version (and torch's and Python's) and exit.",
        ),
    ] = False,
) -> None:
    """Dynamical-systems analysis of looped (weight-tied) transformer blocks."""


_SPEC_HELP = "A TOML spec (see the docs' spec reference); omit for the built-in default."
SpecArg = Annotated[
    Path | None, typer.Argument(help=_SPEC_HELP, show_default=False, metavar="SPEC")
]
SeedsOpt = Annotated[
    int | None, typer.Option("--seeds", min=1, help="Initialisation draws (overrides the spec).")
]
DeviceOpt = Annotated[
    str | None, typer.Option(help="Where to run: cpu, cuda, cuda:1, mps (default cpu).")
]
InputsOpt = Annotated[int | None, typer.Option("--inputs", min=1, help="Random inputs per draw.")]
SeqLenOpt = Annotated[int | None, typer.Option("--seq-len", min=1, help="Tokens per input.")]
StartsOpt = Annotated[int | None, typer.Option("--starts", min=1, help="Starts per input.")]
_MAX_SEED = 2**63 - 1  # dynamo.kernel.MAX_SEED, without importing torch at start-up
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", min=0, max=_MAX_SEED, help="Seed of the inputs and starts."),
]
MaxStepsOpt = Annotated[
    int | None, typer.Option("--max-steps", min=1, help="Iterations per start.")
]
DTypeOpt = Annotated[DType | None, typer.Option("--dtype", help="Analysis dtype.")]
#: Why one thread: dynamo's kernels are small (a 64-wide block on 16 tokens), so torch's
#: intra-op threads mostly wait on each other, and on a machine with anything else running a
#: thread that is descheduled stalls every parallel region. Measured on 2 cores (torch 2.13, the
#: built-in default, wall time): idle, 32.5 s with 1 thread and 23.3 s with 2; with one core kept
#: busy by another process, 33.1 s with 1 thread and 98.4 s with 2.
_THREADS_WHY = (
    "CPU threads for torch's kernels (default 1: dynamo's kernels are small, and more threads "
    "mostly wait on each other; on a 2-core machine with one core busy, `dynamo certify` took "
    "98 s with 2 threads and 33 s with 1). Raise it for a large block on an idle machine."
)
ThreadsOpt = Annotated[int, typer.Option("--threads", min=1, help=_THREADS_WHY)]
ReportOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--report",
        metavar="FORMAT=PATH",
        help="Write the report in FORMAT here; repeat for more. FORMAT is any registered format: "
        "json, markdown, junit, html, and those a package registers "
        "(verify.register_renderer, or the entry-point group dynamo.renderers).",
        show_default=False,
    ),
]
AllowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-module",
        help="Let a spec's factory = 'package.module:function' import this module (and its "
        "submodules); repeat for more. A spec runs no other module's code.",
        show_default=False,
    ),
]
CheckpointOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--checkpoint",
        help="Trained weights (a safetensors file of the spec's architecture, e.g. from "
        "`dynamo train`): certify them instead of the initialisation draws; repeat for more, "
        "each one draw. Overrides the spec's checkpoint key.",
        show_default=False,
    ),
]
ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress", help="Progress bar on stderr (default: if a terminal)."
    ),
]


_REPORT_NAMES = {
    "--json": "JSON",
    "--markdown": "Markdown",
    "--junit": "JUnit XML",
    "--html": "HTML",
}


def _out(flag: str) -> object:
    return typer.Option(
        flag, help=f"Write the {_REPORT_NAMES[flag]} report here.", show_default=False
    )


JsonOpt = Annotated[Path | None, _out("--json")]
MarkdownOpt = Annotated[Path | None, _out("--markdown")]
JunitOpt = Annotated[Path | None, _out("--junit")]
HtmlOpt = Annotated[Path | None, _out("--html")]


def _guarded(command: Callable[..., None]) -> Callable[..., None]:
    """A command whose body (and the user code it runs: a factory, a block) cannot end the
    process through ``sys.exit``: a stray exit would pass a CI gate with nothing checked."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except SystemExit as err:
            raise _UsageError(
                f"something called sys.exit({err.code!r}) while {_Run.phase}: dynamo's own "
                "commands never do; the spec's factory or block code must not exit (nothing was "
                "certified, nothing was written)"
            ) from None

    return run


@app.command()
@_guarded
def certify(
    spec: SpecArg = None,
    seeds: SeedsOpt = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = None,
    markdown: MarkdownOpt = None,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    report: ReportOpt = None,
    inputs: InputsOpt = None,
    seq_len: SeqLenOpt = None,
    starts: StartsOpt = None,
    seed: SeedOpt = None,
    max_steps: MaxStepsOpt = None,
    dtype: DTypeOpt = None,
    progress: ProgressOpt = None,
    threads: ThreadsOpt = 1,
    allow_module: AllowOpt = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Certify an architecture over its initialisation draws; exit 0 if every requirement holds.

    Without SPEC: the built-in default (LoopedTransformer d_model=64, n_heads=4, one layer,
    recall='outer', norm='outer', RMS, RoPE; 8 inputs of 16 tokens, 4 starts each, seed 0) must
    reach a fixed point from every start. Each requirement reports the share of draws that
    satisfy it with its exact 95% interval. Every value carries its trust: estimated (sampled)
    unless the report marks it checked or certified.
    """
    t0 = time.perf_counter()
    _threads(threads)
    outputs = _check_outputs(
        "certify",
        spec,
        json=json_out,
        markdown=markdown,
        junit=junit,
        html=html,
        **_report_paths("certify", report),
    )
    _Run.at("loading the spec")
    s = _spec("certify", spec, seeds, inputs, seq_len, starts, seed, max_steps, dtype, allow_module)
    if not s.requirements:
        raise _UsageError(
            f"certify {spec}: the spec has no requirements: add some, or run `dynamo analyze "
            f"{spec}` to measure without judging"
        )
    _check_inputs("certify", outputs, s, checkpoint)
    if checkpoint and seeds is not None:
        raise _UsageError(
            "certify --seeds with --checkpoint: the checkpoints are the draws; give one of them"
        )
    dev = _device("certify", device)
    from ._certify import certify as run

    n_draws = len(checkpoint) if checkpoint else len(s.draws.resolved())
    _Run.at(f"certifying {n_draws} draw(s)")
    cert = run(s, device=dev, progress=_progress(progress), checkpoints=checkpoint or None)
    typer.echo(_describe_run(s, cert))
    typer.echo("")
    typer.echo(_requirement_text(cert, spec))
    typer.echo(f"\n({time.perf_counter() - t0:.1f} s)")
    verdict = (
        f"certify: {'PASSED' if cert.passed else 'FAILED'} "
        f"({len(cert.requirements) - len(cert.failed)}/{len(cert.requirements)} requirement(s) "
        f"hold over {len(cert.draws)} draw(s))"
    )
    _write_reports(_renderers(cert, outputs), outputs, verdict)
    raise typer.Exit(EXIT_PASS if cert.passed else EXIT_FAIL)


@app.command()
@_guarded
def analyze(
    spec: SpecArg = None,
    seeds: SeedsOpt = None,
    device: DeviceOpt = None,
    json_out: JsonOpt = None,
    markdown: MarkdownOpt = None,
    html: HtmlOpt = None,
    report: ReportOpt = None,
    inputs: InputsOpt = None,
    seq_len: SeqLenOpt = None,
    starts: StartsOpt = None,
    seed: SeedOpt = None,
    max_steps: MaxStepsOpt = None,
    dtype: DTypeOpt = None,
    quick: Annotated[
        bool, typer.Option(help="Skip the costly metrics (‖dh*/dx‖₂, σ_min(I − J)).")
    ] = False,
    progress: ProgressOpt = None,
    threads: ThreadsOpt = 1,
    allow_module: AllowOpt = None,
) -> None:
    """Measure every metric of a spec's analyses, without judging: exit 0 unless the input is bad.

    For ad-hoc runs: a spec's requirements (if any) are ignored, and every metric is computed,
    including the costly ones unless --quick.
    """
    t0 = time.perf_counter()
    _threads(threads)
    outputs = _check_outputs(
        "analyze",
        spec,
        json=json_out,
        markdown=markdown,
        html=html,
        **_report_paths("analyze", report),
    )
    _Run.at("loading the spec")
    s = _spec("analyze", spec, seeds, inputs, seq_len, starts, seed, max_steps, dtype, allow_module)
    _check_inputs("analyze", outputs, s)
    ignored = len(s.requirements)
    s = s.model_copy(
        update={
            "requirements": [],
            "analysis": s.analysis.model_copy(update={"all_metrics": not quick}),
        }
    )
    dev = _device("analyze", device)
    from ._certify import certify as run

    _Run.at(f"analysing {len(s.draws.resolved())} draw(s)")
    cert = run(s, device=dev, progress=_progress(progress))
    typer.echo(_describe_run(s, cert))
    if ignored:
        typer.echo(
            f"  ({ignored} requirement(s) in the spec ignored: `dynamo certify` judges them)"
        )
    typer.echo("")
    typer.echo(_metric_table(cert))
    typer.echo(f"\n({time.perf_counter() - t0:.1f} s)")
    _write_reports(
        _renderers(cert, outputs), outputs, f"analyze: {len(cert.draws)} draw(s) measured"
    )
    raise typer.Exit(EXIT_PASS)


@app.command()
@_guarded
def basins(
    spec: SpecArg = None,
    draw: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=_MAX_SEED,
            help="Initialisation seed of the block (default: the spec's first).",
        ),
    ] = None,
    n_starts: Annotated[
        int, typer.Option("--starts", "--n-starts", min=1, help="Starts per input.")
    ] = 16,
    inputs: InputsOpt = None,
    seq_len: SeqLenOpt = None,
    seed: SeedOpt = None,
    max_steps: MaxStepsOpt = None,
    dtype: DTypeOpt = None,
    saddles: Annotated[
        bool, typer.Option(help="Also find saddles (Newton–Krylov) and their unstable manifolds.")
    ] = False,
    device: DeviceOpt = None,
    json_out: Annotated[Path | None, _out("--json")] = None,
    graphml: Annotated[
        Path | None, typer.Option(help="Write the graph as GraphML here.", show_default=False)
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Draw the input → attractor graph (PNG/SVG/PDF) here.", show_default=False
        ),
    ] = None,
    threads: ThreadsOpt = 1,
    allow_module: AllowOpt = None,
) -> None:
    """Basin graph of one draw of a spec's block: which starts, on which inputs, reach which
    attractor (fixed points, cycles) and how many never settle. Sampled estimates."""
    t0 = time.perf_counter()
    _threads(threads)
    outputs = _check_outputs("basins", spec, json=json_out, graphml=graphml, plot=plot)
    if outputs.get("plot"):  # before any work: without matplotlib there is no plot to write
        try:
            from dynamo import plots
        except ImportError as err:  # pragma: no cover - matplotlib missing
            raise _UsageError(
                f"basins --plot needs matplotlib ({err}); pip install 'looped-dynamo[plots]'"
            ) from err
    _Run.at("loading the spec")
    s = _spec("basins", spec, None, inputs, seq_len, None, seed, max_steps, dtype, allow_module)
    _check_inputs("basins", outputs, s)
    dev = _device("basins", device)
    import torch

    import dynamo as dy

    from ._certify import build_model, draw_inputs
    from ._checkpoints import load_weights, resolve_checkpoints

    the_seed = s.draws.resolved()[0] if draw is None else draw
    # a spec with a checkpoint key maps its trained weights: the draw is a checkpoint's seed
    ckpts = resolve_checkpoints(s, None, f"basins {spec}", lambda q: build_model(s, q))
    pick = None
    if ckpts:
        pick = ckpts[0] if draw is None else next((c for c in ckpts if c.seed == draw), None)
        if pick is None:
            raise _UsageError(
                f"basins --draw {draw}: the spec's checkpoints come from seeds "
                + ", ".join(str(c.seed) for c in ckpts)
            )
        the_seed = pick.seed
    torch_dtype = torch.float64 if s.analysis.dtype == "float64" else torch.float32
    model = build_model(s, the_seed)
    if pick is not None:
        load_weights(model, pick)
        typer.echo(f"  (the trained weights of {pick.path})")
    model = model.to(dtype=torch_dtype, device=dev).requires_grad_(False)
    x = draw_inputs(s, model, torch_dtype).to(dev)
    system = dy.LoopedSystem.from_module(model, x, dtype=None)
    _Run.at(f"mapping the basins of draw {the_seed}")
    graph = dy.basin_graph(
        system,
        n_starts=n_starts,
        scale=s.analysis.start_noise,
        max_steps=s.analysis.max_steps,
        saddles=saddles,
        seed=s.inputs.seed,
    )
    typer.echo(
        f"dynamo basins: {s.name}, draw seed {the_seed}, {x.shape[0]} input(s) x "
        f"{n_starts} starts (sampled estimates)"
    )
    typer.echo(f"  {graph}")
    typer.echo("")
    typer.echo(f"  {'target':<14} {'starts':>7} {'share':>7}  95% interval     median steps")
    for node, st in sorted(graph.statistics().items(), key=lambda kv: -kv[1]["count"]):
        lo, hi = st["interval"]
        steps = "n/a" if st["steps_median"] is None else f"{st['steps_median']:.0f}"
        label = graph.graph.nodes[node].get("label", node)
        typer.echo(
            f"  {node:<14} {st['count']:>7} {st['fraction']:>7.1%}  [{lo:.2f}, {hi:.2f}]"
            f"     {steps:>6}   {label}"
        )
    if "unconverged" in graph.graph and graph.graph.in_degree("unconverged"):
        typer.echo(
            "  'unconverged': bounded but no fixed point or short cycle was reached "
            f"within {s.analysis.max_steps} steps; no fixed point is reported for them"
        )
    writers: dict[str, Callable[[Path], object]] = {}
    if outputs.get("json"):
        writers["json"] = graph.to_json
    if outputs.get("graphml"):
        writers["graphml"] = graph.write_graphml
    if outputs.get("plot"):

        def draw_plot(path: Path) -> None:
            ax = plots.basin_graph(graph)
            fig: Any = ax.figure
            fig.savefig(path, dpi=120, bbox_inches="tight")

        writers["plot"] = draw_plot
    typer.echo(f"\n({time.perf_counter() - t0:.1f} s)")
    _write_reports(writers, outputs, f"basins: draw {the_seed} mapped")
    raise typer.Exit(EXIT_PASS)


# ---------------------------------------------------------------------- helpers
#: The key of a ``--report FORMAT=PATH`` output (the built-in flags use the format's name).
_REPORT = "report:"


def _flag(key: str, path: Path | None = None) -> str:
    """How the user wrote an output option: ``--json out.json`` or ``--report toy=out.txt``."""
    if key.startswith(_REPORT):
        name = key.removeprefix(_REPORT)
        return f"--report {name}" + ("" if path is None else f"={path}")
    return f"--{key}" + ("" if path is None else f" {path}")


def _report_paths(command: str, entries: list[str] | None) -> dict[str, Path]:
    """``--report FORMAT=PATH`` entries as output keys, each format checked to be registered
    (before any work)."""
    if not entries:
        return {}
    from ._render import renderer

    out: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise _UsageError(
                f"{command} --report {entry}: write FORMAT=PATH, e.g. --report markdown=report.md"
            )
        try:
            renderer(name)
        except KeyError as err:
            raise _UsageError(f"{command} --report {entry}: {err.args[0]}") from None
        key = _REPORT + name
        if key in out:
            raise _UsageError(f"{command} --report {entry}: --report {name} is given twice")
        out[key] = Path(path)
    return out


def _check_outputs(command: str, spec: Path | None, **paths: Path | None) -> dict[str, Path]:
    """Every output path must be writable before any work starts, and overwrite nothing of ours.

    Each report's folder must exist and take a new file (tried, not guessed from permission
    bits); a report is not a folder, not the spec, and not another report's file. The inputs a
    spec names (its factory's file) are checked once it is loaded, by :func:`_check_inputs`.
    """
    out: dict[str, Path] = {}
    for key, path in paths.items():
        if path is None:
            continue
        if spec is not None and _same_file(path, spec):
            raise _UsageError(
                f"{command} {_flag(key, path)}: that is the spec itself; write the report elsewhere"
            )
        same = [k for k, p in out.items() if _same_file(p, path)]
        if same:
            raise _UsageError(
                f"{command} {_flag(key, path)}: {_flag(same[0])} writes there too; give each "
                "report its own file"
            )
        if not path.parent.is_dir():
            raise _UsageError(
                f"{command} {_flag(key, path)}: the folder {path.parent} does not exist; create "
                "it or choose another path"
            )
        if path.is_dir():
            raise _UsageError(f"{command} {_flag(key, path)}: is a folder; give a file name")
        try:  # the same operation the report will need: a new file in that folder
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".dynamo-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise _UsageError(
                f"{command} {_flag(key, path)}: cannot write in {path.parent} "
                f"({err.strerror or err}); choose a writable folder"
            ) from None
        out[key] = path
    return out


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name one file (through links, relative paths, or hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_inputs(
    command: str, outputs: dict[str, Path], spec: Any, checkpoints: list[Path] | None = None
) -> None:
    """No report may overwrite a file the run reads: the spec, its factory's file, its
    checkpoints, or any file named in ``architecture.kwargs``."""
    from ._spec import input_files

    inputs = input_files(spec) + [(p, f"a checkpoint: {str(p)!r}") for p in checkpoints or []]
    for key, path in outputs.items():
        for f, what in inputs:
            if _same_file(path, f):
                if what == "the spec itself":
                    raise _UsageError(
                        f"{command} {_flag(key, path)}: that is the spec itself; write the report "
                        "elsewhere"
                    )
                raise _UsageError(
                    f"{command} {_flag(key, path)}: that is an input of this run ({what}); a "
                    "report never overwrites an input: write it elsewhere"
                )


class _Run:
    """What the command is doing, for the message when it is interrupted (Ctrl-C)."""

    command = ""
    phase = "starting"
    written: list[str] = []  # noqa: RUF012 - reset by main() for each run

    @classmethod
    def at(cls, phase: str) -> None:
        cls.phase = phase


def _threads(n: int) -> None:
    """Give torch ``n`` intra-op threads for this command (see ``_THREADS_WHY``).

    Set when a command starts, not when dynamo is imported: importing a library should not change
    the thread count of the program that imports it.
    """
    import torch

    torch.set_num_threads(n)


def _spec(
    command: str,
    path: Path | None,
    seeds: int | None,
    inputs: int | None,
    seq_len: int | None,
    starts: int | None,
    seed: int | None,
    max_steps: int | None,
    dtype: DType | None,
    allow: list[str] | None,
) -> Any:
    from ._spec import Spec, SpecError, default_spec, load_spec, revalidate

    spec: Spec = default_spec() if path is None else load_spec(path, allow_modules=allow or ())
    if seeds is not None and spec.checkpoint is not None:
        raise _UsageError(
            f"{command} {path} --seeds {seeds}: --seeds counts initialisation draws, but the "
            "spec's checkpoint key makes its checkpoints the draws; drop --seeds"
        )
    data = spec.model_dump(mode="json")
    changes = {
        ("draws", "count"): seeds,
        ("inputs", "count"): inputs,
        ("inputs", "seq_len"): seq_len,
        ("inputs", "seed"): seed,
        ("analysis", "starts_per_input"): starts,
        ("analysis", "max_steps"): max_steps,
        ("analysis", "dtype"): None if dtype is None else dtype.value,
    }
    if seeds is not None:  # N draws from the spec's first seed on
        data["draws"]["first_seed"] = spec.draws.resolved()[0]
        data["draws"]["seeds"] = None
    for (section, key), value in changes.items():
        if value is not None:
            data[section][key] = value
    try:
        where = f"{command} {path or '(default spec)'} with the given options"
        return revalidate(spec, data, where)
    except SpecError:
        raise
    except Exception as err:  # pragma: no cover - defensive
        raise _UsageError(f"{command}: {err}") from err


def _device(command: str, device: str | None) -> str | None:
    if device is None:
        return None
    from ._certify import _resolve_device

    _resolve_device(device, f"{command} --device {device}")
    return device


def _progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _describe_run(spec: Any, cert: Any) -> str:
    from ._report import _seeds

    a, i, e = spec.architecture, spec.inputs, cert.environment
    if a.kind == "factory":
        arch = f"{a.factory}(seed=..., " + ", ".join(f"{k}={v!r}" for k, v in a.kwargs.items())
        arch = arch.rstrip(", ") + ")"
    else:
        keys = ["d_model", "n_heads", "n_layers", "recall", "norm", "norm_type", "pos"]
        keys += [k for k in a.changed() if k not in keys]  # and every other key set
        arch = "LoopedTransformer(" + ", ".join(f"{k}={getattr(a, k)!r}" for k in keys) + ")"
    what = {
        "embeddings": f"embeddings ~ N(0, {i.scale:g}²)",
        "tokens": "random tokens",
        "task": "task instances",
    }[i.kind]
    if i.kind == "task" and spec.task is not None:
        what = f"{spec.task.name} instances at difficulty {spec.task.resolved_difficulty()}"
    files = [Path(d.checkpoint).name for d in cert.draws if d.checkpoint]
    draws = (
        f"  {len(files)} trained checkpoint(s): {', '.join(files)}"
        if files
        else f"  {len(cert.draws)} initialisation draw(s): seeds {_seeds(e.seeds)}"
    )
    return "\n".join(
        [
            f"dynamo {('certify' if spec.requirements else 'analyze')}: {spec.name}",
            f"  {arch}",
            f"  {i.count} input(s) x {i.seq_len} tokens ({what}, seed {i.seed}), "
            f"{spec.analysis.starts_per_input} start(s) each, {e.dtype} on {e.device}",
            draws
            + (" (reachability vmapped over stacked parameters)" if e.reach_path == "vmap" else ""),
        ]
    )


def _requirement_text(cert: Any, spec_path: Path | None) -> str:
    from ._report import _seeds

    n, failed = len(cert.requirements), len(cert.failed)
    lines = ["requirements (share of draws satisfying each, exact 95% interval):"]
    lines += [f"  {r.summary()}" for r in cert.requirements] or ["  (none)"]
    if cert.requirements:
        d = len(cert.draws)
        from dynamo.kernel import clopper_pearson

        best = clopper_pearson(d, d)[0]  # the interval's lower end when every draw passes
        if any(x.checkpoint for x in cert.draws):
            lines.append(
                f"  (the interval holds, with 95% confidence, the share of all training runs of "
                f"this spec whose trained weights satisfy the requirement; {d} checkpoint(s) are "
                f"a sample, so even {d}/{d} gives [{best:.2f}, 1.00]: more trained seeds narrow "
                "it)"
            )
        else:
            lines.append(
                f"  (the interval holds, with 95% confidence, the share of all initialisation "
                f"draws of this architecture that satisfy the requirement; {d} draw(s) are a "
                f"sample, so even {d}/{d} gives [{best:.2f}, 1.00]: more draws (--seeds) narrow "
                "it)"
            )
    lines += ["", _metric_table(cert)]
    for d in cert.draws:
        if d.metrics.get("reachability.converged") == 0:
            lines.append(
                f"  draw {d.seed}: no start converged, so no fixed point is reported and its "
                "geometry is n/a (nothing converged; this is not '0 fixed points')"
            )
    bad = [
        d.seed
        for d in cert.draws
        if isinstance(d.metrics.get("reachability.converged_fraction"), float)
        and d.metrics["reachability.converged_fraction"] < 1.0
    ]
    unsettled = [Path(d.checkpoint).name for d in cert.draws if d.checkpoint and d.seed in bad]
    if unsettled:
        lines.append(
            f"  checkpoints where some start did not converge: {', '.join(unsettled)} (the "
            "trained map itself: dynamo.attractors shows where those starts go)"
        )
    elif bad:
        lines.append(
            f"  draws where some start did not converge: {_seeds(bad)}; see where those starts "
            "go with `"
            + " ".join(
                ["dynamo basins", *([str(spec_path)] if spec_path else []), "--draw", str(bad[0])]
            )
            + "`"
        )
    lines += [
        "",
        ("PASSED" if cert.passed else "FAILED")
        + f": {n - failed}/{n} requirement(s) hold over {len(cert.draws)} draw(s)"
        + ("" if cert.passed else " (failed: " + "; ".join(r.text for r in cert.failed) + ")"),
    ]
    return "\n".join(lines)


def _metric_table(cert: Any) -> str:
    """The certificate's per-metric rows (one value, or median/min/max over draws), aligned."""
    header, rows = cert._metric_rows(max_columns=1)
    if not rows:
        return "  (no metrics)"
    header = ["metric (sampled estimate unless marked)", *header[1:]]
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return "\n".join(
        "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )


def _renderers(cert: Any, outputs: dict[str, Path]) -> dict[str, Callable[[Path], object]]:
    """A writer per requested report; every report is rendered here, before any is written."""
    from ._render import renderer

    texts = {}
    for key in outputs:
        fmt = renderer(key.removeprefix(_REPORT))
        try:
            text = fmt.render(cert)
        except Exception as err:  # a registered format's own code
            raise _UsageError(
                f"{_flag(key, outputs[key])}: the {fmt.title} renderer raised "
                f"{type(err).__name__}: {err} (no report was written)"
            ) from None
        if not isinstance(text, str):
            raise _UsageError(
                f"{_flag(key, outputs[key])}: the {fmt.title} renderer returned "
                f"{type(text).__name__}, not text (no report was written)"
            )
        texts[key] = text

    def writer(text: str) -> Callable[[Path], object]:
        return lambda path: path.write_text(text, encoding="utf-8")

    return {key: writer(text) for key, text in texts.items()}


def _write_reports(
    writers: dict[str, Callable[[Path], object]], outputs: dict[str, Path], verdict: str
) -> None:
    """Write every report, or none: each goes to a temporary file in its own folder, and only when
    all of them are complete are they renamed into place (``os.replace``, atomic on one file
    system). A failure removes the temporaries and says the verdict anyway, with what was not
    written; a full disk never leaves a truncated report next to complete ones."""
    if not outputs:
        return
    _Run.at("writing the reports")
    temps: dict[str, Path] = {}
    try:
        for key, path in outputs.items():
            fd, name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp"
            )
            os.close(fd)
            temps[key] = Path(name)
            try:
                writers[key](temps[key])
            except OSError as err:
                raise _UsageError(
                    f"{verdict}; but no report was written: {_flag(key, path)}: "
                    f"{err.strerror or err} (the other reports were not written either)"
                ) from None
            _keep_mode(temps[key], path)
        for key, path in outputs.items():
            try:
                os.replace(temps[key], path)
            except OSError as err:
                shown = ", ".join(_Run.written) or "none"
                raise _UsageError(
                    f"{verdict}; but {_flag(key, path)} could not be written: "
                    f"{err.strerror or err} (written: {shown})"
                ) from None
            del temps[key]
            _Run.written.append(_flag(key, path))
            typer.echo(f"wrote {key.removeprefix(_REPORT)} report: {path}")
    finally:  # failed, interrupted or done: no temporary file stays behind
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def _keep_mode(tmp: Path, target: Path) -> None:
    """A temporary file is private (0600); the report gets the target's mode, or the default."""
    try:
        if target.exists():
            mode = target.stat().st_mode & 0o777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        tmp.chmod(mode)
    except OSError:  # pragma: no cover - a mode we cannot set leaves the report private
        pass


@app.command()
@_guarded
def train(
    spec: Annotated[Path, typer.Argument(help="A TOML spec with [task] and [training] sections.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for the checkpoints (created if missing).", show_default=False
        ),
    ],
    seeds: SeedsOpt = None,
    progress: ProgressOpt = None,
    threads: ThreadsOpt = 1,
    allow_module: AllowOpt = None,
) -> None:
    """Train the spec's architecture on its task, one safetensors checkpoint per draw.

    Each initialisation draw is built as `dynamo certify` builds it, trained with the looped
    recipe (random iteration counts, progressive loss) of the [training] section, and written to
    OUT/<name>-seed<seed>.safetensors with the spec, task, settings and metrics in its metadata.
    An interrupted run resumes where it stopped when run again; a finished checkpoint from the
    same settings is kept, one from other settings is an error (exit 2). Then: `dynamo certify
    SPEC --checkpoint OUT/<name>-seed0.safetensors`.
    """
    t0 = time.perf_counter()
    _threads(threads)
    _Run.at("loading the spec")
    s = _spec("train", spec, seeds, None, None, None, None, None, None, allow_module)
    if out.exists() and not out.is_dir():
        raise _UsageError(f"train --out {out}: that is a file; give a folder for the checkpoints")
    for f, what in _input_paths(s):
        if _same_file(out, f):
            raise _UsageError(f"train --out {out}: that is an input of this run ({what})")
    from ._train import train as run

    _Run.at(
        f"training {len(s.draws.resolved())} draw(s) (rerun the same command to resume: "
        "finished checkpoints are kept, the draw in progress resumes from its last saved state)"
    )
    finished: list[str] = []

    def log(line: str) -> None:
        finished.append(line)
        _Run.written[:] = [f"{len(finished)} finished checkpoint(s) in {out}"]
        typer.echo(line)

    done = run(s, out, progress=_progress(progress), allow_modules=allow_module or (), log=log)
    trained = sum(not d.reused for d in done)
    typer.echo(
        f"train: {trained} draw(s) trained, {len(done) - trained} kept, into {out} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    raise typer.Exit(EXIT_PASS)


def _input_paths(spec: Any) -> list[tuple[Path, str]]:
    from ._spec import input_files

    return input_files(spec)


@app.command()
@_guarded
def prove(
    name: Annotated[
        str | None, typer.Argument(help="A claim (C1–C14, R1–R9); omit with --all.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Prove every registered claim.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Also run each claim's numeric check through dynamo.")
    ] = False,
    variants: Annotated[
        bool,
        typer.Option(
            "--variants", help="Also run each claim's false variants: every one must be rejected."
        ),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the proofs (and checks) as JSON here.")
    ] = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Derive dynamo's claims step by step; exit 1 if any step fails or a goal is not reached.

    Each claim prints its formal statement, then what kind of proof it has: "proved in general"
    (every step on symbols or a cited lemma whose hypotheses are checked), "instance check" (some
    step holds for one concrete instance only) or "numeric only"; then every step with the
    expression checked and sympy's answer. With ``--variants``, each claim's registered false
    variants (a wrong constant, a dropped hypothesis, a stronger statement, dynamo's rule changed)
    are run too, and each must fail. C1–C14 are the field's claims and dynamo's own; R1–R9 are the
    per-layer Lipschitz rules behind every certified bound, proved about the closed forms the
    rules evaluate.
    """
    _threads(threads)
    if name is None and not all_:
        raise _UsageError("prove: give a claim name (e.g. `dynamo prove C4`) or --all")
    if name is not None and all_:
        raise _UsageError(f"prove {name} --all: give a claim name or --all, not both")
    if json_out is not None and not json_out.parent.is_dir():
        raise _UsageError(f"prove --json {json_out}: the folder {json_out.parent} does not exist")
    import theory

    if all_:
        claims = list(theory.registry())
    else:
        assert name is not None
        try:
            claims = [theory.get(name)]
        except KeyError as err:
            raise _UsageError(f"prove {name}: {err.args[0]}") from err
    failed: list[str] = []
    payload = []
    kinds: dict[str, int] = {}
    n_variants = 0
    for c in claims:
        _Run.phase = f"proving {c.name}"
        proof = c.prove()
        typer.echo(f"{c.name} — {c.title}")
        typer.echo(f"  statement: {c.formal()}")
        typer.echo("  hypotheses: " + ("; ".join(c.hypotheses) or "none"))
        typer.echo("  " + str(proof).replace("\n", "\n  "))
        entry: dict[str, Any] = {"claim": c.to_dict(), "proof": proof.to_dict()}
        if proof.ok:
            kinds[proof.kind.label] = kinds.get(proof.kind.label, 0) + 1
        else:
            failed.append(c.name)
        if variants:
            rejected = []
            for v in c.variants:
                ok = c.prove_variant(v).ok
                n_variants += 1
                typer.echo(
                    f"  false variant {'rejected' if not ok else 'ACCEPTED'}: {v.description}"
                )
                rejected.append({"variant": v.description, "rejected": not ok})
                if ok:
                    failed.append(f"{c.name} (variant accepted: {v.description})")
            entry["variants"] = rejected
        if check:
            result = c.check()
            typer.echo(f"  {result}")
            entry["check"] = result.to_dict()
            if not result.ok:
                failed.append(f"{c.name} (check)")
        typer.echo("")
        payload.append(entry)
    n_steps = sum(len(e["proof"]["steps"]) for e in payload)
    order = ("proved in general", "instance check", "numeric only")
    tally = ", ".join(f"{kinds[k]} {k}" for k in order if kinds.get(k))
    typer.echo(
        f"{len(claims)} claim{'s' * (len(claims) != 1)}, {n_steps} step{'s' * (n_steps != 1)}: "
        + (tally or "none proved")
        + ("" if not failed else f"; FAILED: {', '.join(failed)}")
        + (f"; {n_variants} false variants run" if variants else "")
        + (" (numeric checks run)" if check else "")
    )
    if json_out is not None:
        json_out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    raise typer.Exit(EXIT_FAIL if failed else EXIT_PASS)


class SweepExecutor(str, Enum):
    serial = "serial"
    local = "local"
    ray = "ray"


def _default_executor() -> SweepExecutor:
    """Ray when the extra is installed (found without importing it), plain processes otherwise."""
    import importlib.util

    return SweepExecutor.ray if importlib.util.find_spec("ray") else SweepExecutor.local


@app.command()
@_guarded
def sweep(
    path: Annotated[
        Path,
        typer.Argument(
            help="A sweep file: a spec plus a [sweep] table with grid = {key = [values]} or "
            "[[sweep.cells]].",
            show_default=False,
            metavar="SWEEP",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder: one file per finished cell (default: SWEEP's name with "
            ".sweep, beside it). Rerun the same command to resume an interrupted sweep.",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        SweepExecutor | None,
        typer.Option(
            help="serial (this process), local (worker processes) or ray (default: ray when "
            "looped-dynamo[ray] is installed, else local).",
            show_default=False,
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="A Ray cluster to run on (host:port from `ray start --head`, or auto); "
            "default: a local Ray instance.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Cells at once on this machine (default: the CPUs over --threads).",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="torch threads (and Ray CPUs) of each cell.")
    ] = 1,
    device: DeviceOpt = None,
    gpus_per_cell: Annotated[
        float,
        typer.Option(
            "--gpus-per-cell", min=0.0, help="GPUs each Ray task asks for (with --device cuda)."
        ),
    ] = 0.0,
    json_out: JsonOpt = None,
    markdown: MarkdownOpt = None,
    junit: JunitOpt = None,
    html: HtmlOpt = None,
    progress: ProgressOpt = None,
    allow_module: AllowOpt = None,
) -> None:
    """Certify every cell of a grid over spec keys; exit 0 if every cell's requirements hold.

    Each cell is a certification as `dynamo certify` runs it. Its certificate is stored in the
    output folder as soon as it finishes, so an interrupted sweep resumes where it stopped and
    never recomputes or overwrites a finished cell. Exit 1 when a cell fails a requirement or its
    certification raises (named in the output), 2 on bad input (nothing runs).
    """
    t0 = time.perf_counter()
    outputs = _check_outputs(
        "sweep", path, json=json_out, markdown=markdown, junit=junit, html=html
    )
    ex = executor or _default_executor()
    if address is not None and ex is not SweepExecutor.ray:
        raise _UsageError(f"sweep --address {address}: --address is for --executor ray")
    if gpus_per_cell and ex is not SweepExecutor.ray:
        raise _UsageError("sweep --gpus-per-cell: GPUs per task are for --executor ray")
    if gpus_per_cell and device != "cuda":
        raise _UsageError(
            "sweep --gpus-per-cell: give --device cuda too (the cells run there; each task sees "
            "only the GPUs Ray assigns it, as cuda)"
        )
    if ex is SweepExecutor.ray and (device or "").startswith("cuda") and not gpus_per_cell:
        raise _UsageError(
            f"sweep --device {device} --executor ray: give --gpus-per-cell (e.g. 1) so that Ray "
            "places each cell on a GPU of its own; without it every cell would share GPU 0"
        )
    if workers is not None and (ex is SweepExecutor.serial or address is not None):
        raise _UsageError(
            f"sweep --workers {workers}: sets the size of a local pool (--executor local, or ray "
            "without --address); a serial sweep runs one cell at a time and a cluster's size is "
            "its own"
        )
    folder = out if out is not None else path.with_suffix(".sweep")
    if folder.exists() and not folder.is_dir():
        raise _UsageError(f"sweep --out {folder}: is a file; give a folder")
    if not folder.parent.is_dir():
        raise _UsageError(
            f"sweep --out {folder}: the folder {folder.parent} does not exist; create it first"
        )
    try:  # the output folder (or the one it will be made in) must take files: tried, not guessed
        where = next(f for f in (folder / "cells", folder, folder.parent) if f.is_dir())
        fd, probe = tempfile.mkstemp(dir=where, prefix=".dynamo-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise _UsageError(
            f"sweep --out {folder}: cannot write there ({err.strerror or err}); choose a writable "
            "folder (nothing was run)"
        ) from None
    for key, p in outputs.items():
        if _same_file(p.parent, folder / "cells"):
            raise _UsageError(
                f"sweep {_flag(key, p)}: that folder holds the cells; write elsewhere"
            )
    if ex is SweepExecutor.ray:
        from dynamo.kernel import import_ray, ray_address_error

        import_ray("sweep --executor ray")
        if address is not None:
            why = ray_address_error(address)
            if why is not None:
                raise _UsageError(
                    f"sweep --address {address}: no Ray cluster there: {why}; start one with "
                    "`ray start --head` and pass the address it prints, or omit --address for a "
                    "local Ray instance (nothing was run)"
                )
    _Run.at("loading the sweep")
    # GPUs on Ray live on the worker nodes: the driver need not have one
    dev = device if ex is SweepExecutor.ray and gpus_per_cell else _device("sweep", device)
    from ._sweep import load_sweep, run_sweep

    sw = load_sweep(path, allow_modules=allow_module or (), device=dev)
    for cell in sw.cells:
        _check_inputs("sweep", outputs, cell.spec)
    total = len(sw.cells)
    stored: list[str] = []

    def on_cell(res: Any) -> None:
        if res.status != "error":
            stored.append(res.label)
            _Run.written[:] = [f"{len(stored)} finished cell(s) in {folder}"]
        _Run.at("running the sweep (rerun the same command to resume it)")
        if not _progress(progress):
            typer.echo(f"  [{len(stored)}] {res.status.upper():8} {res.label}")

    _Run.at(f"starting the {ex.value} executor for {total} cell(s)")
    typer.echo(
        f"dynamo sweep: {sw.name}: {total} cell(s) over {', '.join(sw.keys)}; "
        f"executor {ex.value}" + (f" at {address}" if address else "") + f"; out {folder}"
    )
    report = run_sweep(
        sw,
        folder,
        executor=ex.value,
        workers=workers,
        threads=threads,
        address=address,
        gpus_per_cell=gpus_per_cell,
        progress=_progress(progress),
        on_cell=on_cell,
    )
    typer.echo("")
    typer.echo(str(report))
    typer.echo(
        f"\n{report.computed} cell(s) computed, {report.reused} reused from {folder} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    writers: dict[str, Callable[[Path], object]] = {}
    texts = {
        "json": report.to_json,
        "markdown": report.to_markdown,
        "junit": report.to_junit,
        "html": report.to_html,
    }

    def writer(text: str) -> Callable[[Path], object]:
        return lambda p: p.write_text(text, encoding="utf-8")

    for key in outputs:
        writers[key] = writer(texts[key]())
    summary = folder / "sweep.json"
    outputs_all = {**outputs}
    if not any(_same_file(p, summary) for p in outputs.values()):
        outputs_all["summary"] = summary
        writers["summary"] = writer(report.to_json())
    n_bad = len(report.failed)
    word = "analysis" if report.passed is None else ("PASSED" if report.passed else "FAILED")
    verdict = f"sweep: {word} ({total - n_bad}/{total} cells pass)"
    _write_reports(writers, outputs_all, verdict)
    raise typer.Exit(EXIT_FAIL if n_bad else EXIT_PASS)


class LLMDType(str, Enum):
    float32 = "float32"
    float64 = "float64"
    bfloat16 = "bfloat16"
    float16 = "float16"


class LLMMethod(str, Enum):
    iteration = "iteration"
    gradient = "gradient"
    both = "both"


@app.command()
@_guarded
def llm(
    path: Annotated[
        Path,
        typer.Argument(
            help="A local folder (config.json + safetensors weights) or a .gguf file.",
            show_default=False,
        ),
    ],
    tokens: Annotated[
        bool, typer.Option("--tokens", help="Scan the vocabulary for token fixed points.")
    ] = False,
    embeddings: Annotated[
        bool,
        typer.Option(
            "--embeddings", help="Search continuous fixed points of T(x) = softmax(logits(x)) @ E."
        ),
    ] = False,
    uniform: Annotated[
        bool, typer.Option("--uniform", help="Check that uniform sequences stay uniform (C7).")
    ] = False,
    method: Annotated[
        LLMMethod,
        typer.Option(help="Embedding search: fixed-point iteration, gradient descent, or both."),
    ] = LLMMethod.both,
    n_seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="Random starts of each embedding search.")
    ] = 10,
    seed: Annotated[
        int, typer.Option(min=0, max=_MAX_SEED, help="Start i is drawn from seed + i.")
    ] = 0,
    tol: Annotated[float, typer.Option(min=0.0, help="Converged when ‖T(x) − x‖₂ < tol.")] = 1e-6,
    dedup: Annotated[float, typer.Option(min=0.0, help="Points closer than this are one.")] = 1e-4,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Steps per seed.")] = 10_000,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Tokens per forward pass of the scan.")
    ] = 256,
    rollout_steps: Annotated[
        int,
        typer.Option("--rollout-steps", min=0, help="Autoregressive rollout per point (0: none)."),
    ] = 100,
    prefix: Annotated[
        str,
        typer.Option(
            help="Tokens before t in the scan: 'bos' (the model's BOS token) or ids separated "
            "by commas (default: none, the one-token protocol [t])."
        ),
    ] = "",
    lengths: Annotated[
        str, typer.Option(help="Uniform-sequence lengths, comma-separated.")
    ] = "2,4,8,16,32,64",
    dtype: Annotated[LLMDType, typer.Option(help="Compute dtype.")] = LLMDType.float32,
    allow_low_precision: Annotated[
        bool,
        typer.Option(
            "--allow-low-precision",
            help="Run the searches in bfloat16/float16 anyway (a quick look; residuals of 1e-6 "
            "are below their rounding).",
        ),
    ] = False,
    json_out: JsonOpt = None,
    markdown_out: MarkdownOpt = None,
    progress: ProgressOpt = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch (default: torch's own, every core: a language model's "
            "kernels are large enough to use them).",
        ),
    ] = None,
) -> None:
    """Fixed points of a local causal language model (seed 004): token fixed points over the whole
    vocabulary, continuous fixed points of its embedding map with their token mixtures, rollout
    stability and spectral radius, and the uniform-sequence check. Without --tokens,
    --embeddings or --uniform, all three run. Weights are read from local files only.

    Exit 0 when the analysis ran (it judges nothing), 2 on bad input.
    """
    t0 = time.perf_counter()
    if threads is not None:
        _threads(threads)
    outputs = _check_outputs("llm", None, json=json_out, markdown=markdown_out)
    try:
        sizes = [int(v) for v in lengths.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise _UsageError(
            f"llm --lengths {lengths}: give positive integers separated by commas, e.g. 2,4,8"
        )
    try:
        prefix_ids: list[int] | str = (
            "bos" if prefix.strip() == "bos" else [int(v) for v in prefix.split(",") if v.strip()]
        )
    except ValueError:
        raise _UsageError(
            f"llm --prefix {prefix}: give 'bos' or token ids separated by commas, e.g. 1,2"
        ) from None
    if not (tokens or embeddings or uniform):
        tokens = embeddings = uniform = True
    methods = ["iteration", "gradient"] if method is LLMMethod.both else [method.value]
    import dynamo as dy

    from . import _llm

    _Run.at(f"loading {path}")
    lm = dy.llm.load_causal_lm(path, dtype=dtype.value, allow_low_precision=allow_low_precision)
    show = _progress(progress)
    payload = _llm.run(
        lm,
        tokens=tokens,
        embeddings=embeddings,
        uniform=uniform,
        methods=methods,
        n_seeds=n_seeds,
        seed=seed,
        tol=tol,
        dedup=dedup,
        max_steps=max_steps,
        batch_size=batch_size,
        rollout_steps=rollout_steps,
        lengths=sizes,
        prefix=prefix_ids,
        allow_low_precision=allow_low_precision,
        progress=show,
        echo=typer.echo,
        phase=_Run.at,
    )
    seconds = time.perf_counter() - t0
    payload["seconds"] = seconds
    typer.echo(f"\n({seconds:.1f} s)")
    writers: dict[str, Callable[[Path], object]] = {}
    if outputs.get("json"):
        text = json.dumps(payload, indent=1, allow_nan=False) + "\n"
        writers["json"] = lambda p: p.write_text(text, encoding="utf-8")
    if outputs.get("markdown"):
        md = _llm.markdown(payload, seconds=seconds)
        writers["markdown"] = lambda p: p.write_text(md, encoding="utf-8")
    _write_reports(writers, outputs, "llm: analysis done")
    raise typer.Exit(EXIT_PASS)


class _UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (the ``dynamo`` script exits with it).

    Usage errors (unknown option, bad value) are reported by the parser with exit code 2; dynamo's
    own argument errors likewise; anything else is an internal error (3), reported in one line.
    Ctrl-C ends with 130 and says what it interrupted and what was (not) written.
    """
    from dynamo.errors import DynamoError

    args = list(sys.argv[1:] if argv is None else argv)
    _Run.command = next((a for a in args if not a.startswith("-")), "")
    _Run.phase, _Run.written = "starting", []
    try:
        app(args=args, prog_name="dynamo")
    except SystemExit as done:
        if _interrupted(done):
            return _interrupt_message()
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        return _interrupt_message()
    except (DynamoError, _UsageError) as err:
        typer.echo(f"dynamo: error: {err}", err=True)
        return EXIT_USAGE
    except MemoryError as err:
        typer.echo(f"dynamo: error: out of memory ({err}); {_SMALLER}", err=True)
        return EXIT_USAGE
    except RuntimeError as err:
        if not _out_of_memory(err):
            return _internal(err)
        typer.echo(f"dynamo: error: out of memory ({str(err)[:200]}); {_SMALLER}", err=True)
        return EXIT_USAGE
    except Exception as err:
        return _internal(err)
    return EXIT_PASS


def _chain(err: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _interrupted(done: SystemExit) -> bool:
    """typer turns Ctrl-C into ``Exit(130)`` and that into ``SystemExit(130)``."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(done))


def _interrupt_message() -> int:
    written = (
        "nothing was written"
        if not _Run.written
        else f"written before it: {', '.join(_Run.written)}; no other report was written"
    )
    typer.echo(
        f"dynamo: interrupted (Ctrl-C) while {_Run.phase}"
        + (f" in `dynamo {_Run.command}`" if _Run.command else "")
        + f": {written}",
        err=True,
    )
    return EXIT_INTERRUPTED


_SMALLER = (
    "make the problem smaller: fewer inputs.count, draws.count or analysis.starts_per_input, a "
    "shorter inputs.seq_len, or a smaller architecture"
)


def _out_of_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def _internal(err: BaseException) -> int:
    typer.echo(
        f"dynamo: internal error ({type(err).__name__}: {err}). This is a bug in dynamo; "
        "please report it with the command you ran.",
        err=True,
    )
    return EXIT_INTERNAL


def _entry() -> None:  # pragma: no cover - exercised through the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
