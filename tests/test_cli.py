"""The `dynamo` command line (certify, analyze, basins) and the reachability report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dynamo as dy
import verify
from verify.cli import main

FAST = ["--inputs", "3", "--starts", "2", "--seq-len", "6"]


def test_certify_default_passes_and_says_what_it_means(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certify"]) == 0
    out = capsys.readouterr().out
    assert "recall='outer', norm='outer'" in out
    assert "8 input(s) x 16 tokens" in out and "seeds 0" in out
    assert "PASS reachability.converged_fraction >= 1: 1/1 draws" in out
    assert "reachability.converged 32" in " ".join(out.split())
    assert "PASSED: 1/1 requirement(s) hold over 1 draw(s)" in out
    assert "sampled estimate" in out


def test_certify_fails_with_exit_1_and_never_claims_zero_fixed_points(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["certify", *FAST, "--max-steps", "3"]) == 1
    out = capsys.readouterr().out
    assert "FAIL reachability.converged_fraction >= 1: 0/1 draws" in out
    assert "no start converged, so no fixed point is reported" in out
    assert "geometry.spectral_radius n/a" in " ".join(out.split())
    assert "0 fixed points" not in out.replace("'0 fixed points'", "")


def test_certify_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "report.json"
    assert main(["certify", *FAST, "--json", str(target)]) == 0
    data = json.loads(target.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "dynamo.certificate"
    assert data["passed"] is True
    assert data["spec"]["architecture"]["recall"] == verify.DEFAULT_ARCHITECTURE["recall"]
    assert (
        data["spec"]["inputs"]["count"] == 3 and data["spec"]["analysis"]["starts_per_input"] == 2
    )
    metrics = data["draws"][0]["metrics"]
    assert metrics["reachability.starts"] == 6 and metrics["reachability.converged"] == 6
    assert data["requirements"][0]["basis"] == "sampled estimate"
    assert data["environment"]["timestamp"] is not None
    # the same spec and seed give the same JSON, apart from when it was made
    again = tmp_path / "again.json"
    assert main(["certify", *FAST, "--json", str(again)]) == 0
    second = json.loads(again.read_text())
    for d in (data, second):
        d["environment"]["timestamp"] = None
    assert second == data


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certify", "--inputs", "0"], "Invalid value for '--inputs'"),
        (["certify", "--bogus"], "No such option"),
        (["certify", "--dtype", "bfloat16"], "Invalid value for '--dtype'"),
        (["certify", "--seeds", "0"], "Invalid value for '--seeds'"),
        (["certify", "--json", "/nonexistent/dir/r.json"], "does not exist"),
        (["certify", "--junit", "/nonexistent/dir/r.xml"], "certify --junit"),
        (["certify", "--device", "quantum"], "certify --device quantum"),
        (["certify", "no/such/spec.toml"], "no such spec file"),
        (["analyze", "--markdown", "/nonexistent/x.md"], "analyze --markdown"),
        (["basins", "--starts", "0"], "Invalid value for '--starts'"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_usage_exits_2_without_a_traceback(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert message in " ".join(text.split())
    assert "Traceback" not in text


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_unavailable_device_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certify", "--device", "cuda"]) == 2
    assert "CUDA is not available here; use cpu" in capsys.readouterr().err


def test_prove_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prove"]) == 2
    assert "give a claim name (e.g. `dynamo prove C4`) or --all" in capsys.readouterr().err
    assert main(["prove", "C4", "--all"]) == 2
    assert "not both" in capsys.readouterr().err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ["certify", "analyze", "basins", "prove", "Exit codes"]:
        assert command in out
    assert main(["certify", "--help"]) == 0
    out = capsys.readouterr().out
    for option in [
        "--seeds",
        "--device",
        "--json",
        "--markdown",
        "--junit",
        "--html",
        "--inputs",
        "--starts",
        "--seq-len",
        "--seed",
        "--max-steps",
        "--progress",
    ]:
        assert option in out


def test_internal_errors_exit_3_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("verify._certify.certify", broken)
    assert main(["certify", *FAST]) == 3
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: simulated bug)" in err
    assert "Traceback" not in err


def test_console_entry_point_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "verify.cli", "certify", *FAST, "--max-steps", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "FAILED" in done.stdout
    assert "dynamo certify" not in done.stderr  # no progress bar when stderr is not a terminal


# ---------------------------------------------------------------------- the report itself
def test_report_on_a_contraction_passes_and_counts_path_independence() -> None:
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    system = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=8, seed=0), x)
    report = verify.reachability_report(system, starts_per_input=3)
    assert report.passed and report.converged == 15
    assert report.path_independent_inputs == 5
    assert report.max_spread <= report.same_point
    assert report.interval[1] == 1.0
    json.dumps(report.to_dict(), allow_nan=False)


def test_report_on_a_bistable_map_sees_several_limits_per_input() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    report = verify.reachability_report(system, starts_per_input=16, seed=3)
    assert report.passed  # every start settles ...
    assert report.path_independent_inputs == 0  # ... but not on one point
    assert "reached different limits" in report.meaning()


def test_report_respects_the_requirement() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.9))
    report = verify.reachability_report(system, starts_per_input=4, max_steps=200)
    assert not report.passed and report.converged == 0
    d = report.to_dict()
    assert d["steps_median"] is None and d["residual_max"] is None
    json.dumps(d, allow_nan=False)


def test_clopper_pearson_matches_known_values() -> None:
    lo, hi = verify.clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.3084971, abs=1e-6)
    lo, hi = verify.clopper_pearson(5, 10)
    assert (lo, hi) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    with pytest.raises(dy.errors.InvalidArgumentError):
        verify.clopper_pearson(3, 2)


def test_report_is_json_safe_when_a_limit_is_zero_and_wording_stays_modest() -> None:
    # converged at step 0 at h = 0: relative residual inf must become null, not break JSON
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * h + 1e-12, state_shape=(1,))
    report = verify.reachability_report(system, starts_per_input=1)
    json.dumps(report.to_dict(), allow_nan=False)
    assert "evidence, not proof" in report.meaning()
