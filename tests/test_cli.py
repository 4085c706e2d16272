"""The `dynamo` command line and the reachability report behind `dynamo certify`."""

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
    assert "converged       32/32 (100.0%; 95% CI 89.1%-100.0%)" in out
    assert "same limit      8/8 inputs" in out
    assert "PASS" in out
    assert "sampled estimate, not a proof" in out


def test_certify_fails_with_exit_1_and_never_claims_zero_fixed_points(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["certify", *FAST, "--max-steps", "3"]) == 1
    out = capsys.readouterr().out
    assert "converged       0/6" in out
    assert "6 max_steps_reached" in out
    assert "FAIL" in out and "No start converged, so no fixed point is reported" in out
    assert "0 fixed points" not in out


def test_certify_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "report.json"
    assert main(["certify", *FAST, "--json", str(target)]) == 0
    data = json.loads(target.read_text())
    report = data["report"]
    assert data["architecture"] == verify.DEFAULT_ARCHITECTURE
    assert report["passed"] is True
    assert report["n_starts"] == 6 and report["converged"] == 6
    assert report["solution"]["outcomes"] == ["converged"] * 6
    assert report["kind"] == "reachability (sampled estimate)"
    # the same seed gives the same numbers
    again = tmp_path / "again.json"
    assert main(["certify", *FAST, "--json", str(again)]) == 0
    assert json.loads(again.read_text())["report"] == report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certify", "--inputs", "0"], "Invalid value for '--inputs'"),
        (["certify", "--bogus"], "No such option"),
        (["certify", "--dtype", "bfloat16"], "Invalid value for '--dtype'"),
        (["certify", "--min-converged", "1.5"], "must be in (0, 1]"),
        (["certify", "--json", "/nonexistent/dir/r.json"], "does not exist"),
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


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "certify" in out and "Exit codes" in out
    assert main(["certify", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ["--inputs", "--starts", "--seq-len", "--seed", "--max-steps", "--json"]:
        assert option in out


def test_internal_errors_exit_3_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("verify._reach.reachability_report", broken)
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
    assert "FAIL" in done.stdout


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
