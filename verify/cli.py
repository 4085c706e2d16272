"""The ``dynamo`` command line.

Exit codes: 0 every requirement holds; 1 a requirement fails; 2 bad usage or bad input (the message
names what to fix); 3 an internal error (a bug in dynamo: please report it).
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

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
)


class DType(str, Enum):
    float64 = "float64"
    float32 = "float32"


@app.callback()
def _root() -> None:
    """Dynamical-systems analysis of looped (weight-tied) transformer blocks."""


@app.command()
def certify(
    inputs: Annotated[int, typer.Option(min=1, help="Random encoded inputs e ~ N(0, 1).")] = 8,
    starts: Annotated[
        int, typer.Option(min=1, help="Starts per input (h0 = e, then e + noise).")
    ] = 4,
    seq_len: Annotated[int, typer.Option(min=1, help="Tokens per input (T).")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of the inputs and start noise.")] = 0,
    max_steps: Annotated[int, typer.Option(min=1, help="Iterations per start.")] = 1000,
    min_converged: Annotated[
        float, typer.Option(help="Required converged fraction, in (0, 1].")
    ] = 1.0,
    dtype: Annotated[DType, typer.Option(help="Analysis dtype.")] = DType.float64,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the full report as JSON here.")
    ] = None,
) -> None:
    """Certify the built-in default architecture: does plain iteration reach a fixed point?

    Builds LoopedTransformer(d_model=64, n_heads=4, n_layers=1, recall='outer', norm='outer',
    norm_type='rms', pos='rope', seed=0), iterates h <- f(h, e) from several starts on random
    inputs and reports the converged fraction (with its exact 95% interval), steps, final
    residuals, whether the starts of each input agree, and what that means. Exit 0 when the
    converged fraction meets --min-converged, else 1.
    """
    t0 = time.perf_counter()
    if not 0.0 < min_converged <= 1.0:
        raise _UsageError(f"certify --min-converged {min_converged}: must be in (0, 1]")
    if json_out is not None and not json_out.parent.is_dir():
        raise _UsageError(
            f"certify --json {json_out}: the folder {json_out.parent} does not exist; create it "
            "or choose another path"
        )
    import torch

    from ._reach import DEFAULT_ARCHITECTURE, default_system, reachability_report

    torch_dtype = torch.float64 if dtype is DType.float64 else torch.float32
    system = default_system(inputs, seq_len, seed=seed, dtype=torch_dtype)
    report = reachability_report(
        system, starts, max_steps=max_steps, min_converged=min_converged, seed=seed
    )
    arch = ", ".join(f"{k}={v!r}" for k, v in DEFAULT_ARCHITECTURE.items())
    typer.echo("dynamo certify: the built-in default architecture")
    typer.echo(f"  LoopedTransformer({arch})")
    typer.echo(
        f"  state {tuple(system.state_shape)} ({system.state_dim} numbers per start), "
        f"{report.context['dtype']} on {report.context['device']}, input seed {seed}"
    )
    typer.echo("")
    typer.echo(str(report))
    typer.echo(f"\n({time.perf_counter() - t0:.1f} s)")
    if json_out is not None:
        payload = {
            "command": "certify",
            "architecture": dict(DEFAULT_ARCHITECTURE),
            "seq_len": seq_len,
            "report": report.to_dict(),
        }
        try:
            json_out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        except OSError as err:
            raise _UsageError(f"certify --json {json_out}: cannot write the file: {err}") from err
    raise typer.Exit(EXIT_PASS if report.passed else EXIT_FAIL)


@app.command()
def prove(
    name: Annotated[
        str | None, typer.Argument(help="A claim (C1–C14, R1–R8); omit with --all.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Prove every registered claim.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Also run each claim's numeric check through dynamo.")
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the proofs (and checks) as JSON here.")
    ] = None,
) -> None:
    """Print sympy-checked proofs of dynamo's claims; exit 1 if any step (or check) fails.

    Each step shows what it says, the expression sympy examined, and sympy's answer. The claims
    C1–C14 are the field's and dynamo's (see the theory pages of the docs); R1–R8 are the
    per-layer Lipschitz rules behind every certified bound.
    """
    if (name is None) == (not all_):
        raise _UsageError("prove: give a claim name (e.g. `dynamo prove C4`) or --all, not both")
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
    failed = []
    payload = []
    for c in claims:
        proof = c.prove()
        typer.echo(f"{c.name} — {c.title}")
        typer.echo("  hypotheses: " + ("; ".join(c.hypotheses) or "none"))
        typer.echo("  " + str(proof).replace("\n", "\n  "))
        entry = {"claim": c.to_dict(), "proof": proof.to_dict()}
        if not proof.ok:
            failed.append(c.name)
        if check:
            result = c.check()
            typer.echo(f"  {result}")
            entry["check"] = result.to_dict()
            if not result.ok:
                failed.append(f"{c.name} (check)")
        typer.echo("")
        payload.append(entry)
    n_steps = sum(len(e["proof"]["steps"]) for e in payload)
    typer.echo(
        f"{len(claims)} claims, {n_steps} steps: "
        + ("all proved" if not failed else f"FAILED: {', '.join(failed)}")
        + (" (numeric checks run)" if check else "")
    )
    if json_out is not None:
        json_out.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    raise typer.Exit(EXIT_FAIL if failed else EXIT_PASS)


class _UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (the ``dynamo`` script exits with it).

    Usage errors (unknown option, bad value) are reported by the parser with exit code 2; dynamo's
    own argument errors likewise; anything else is an internal error (3), reported in one line.
    """
    from dynamo.errors import DynamoError

    try:
        app(args=argv, prog_name="dynamo")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    except (DynamoError, _UsageError) as err:
        typer.echo(f"dynamo: error: {err}", err=True)
        return EXIT_USAGE
    except Exception as err:
        typer.echo(
            f"dynamo: internal error ({type(err).__name__}: {err}). This is a bug in dynamo; "
            "please report it with the command you ran.",
            err=True,
        )
        return EXIT_INTERNAL
    return EXIT_PASS


def _entry() -> None:  # pragma: no cover - exercised through the console script
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    _entry()
