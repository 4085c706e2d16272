"""Claims: every proof checks, every numeric counterpart holds, and the checker can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import dynamo as dy
import theory
from verify.cli import main

NAMES = [c.name for c in theory.registry()]

#: for each claim, an override that makes its derivation wrong (a wrong constant, a dropped or
#: altered hypothesis): prove() must then fail
WRONG = {
    "C1": {"count_bound": 8},
    "C2": {"eigenvalue": 2},
    "C3": {"sign": 1},
    "C4": {"norm_squared": 4},
    "C5": {"bound": 1},
    "C6": {"coefficient": 0.5},
    "C7": {"absolute": True},
    "C8": {"denominator_sign": 1},
    "C9": {"rate": 0.4},
    "C10": {"transpose": True},
    "C11": {"skew": False},
    "C12": {"value": 1.9},
    "C13": {"scale": 2},
    "C14": {"power": 2},
    "R1": {"extra": 1},
    "R2": {"gelu_bound": 1.12},
    "R3": {"one": 0},
    "R4": {"block": "input"},
    "R5": {"rho_power": 1},
    "R6": {"centre": False},
    "R7": {"variance_term": 0},
    "R8": {"power": 2},
}


def test_every_claim_has_a_wrong_variant() -> None:
    assert set(WRONG) == set(NAMES)
    assert [n for n in NAMES if n.startswith("C")] == [f"C{i}" for i in range(1, 15)]


@pytest.mark.parametrize("name", NAMES)
def test_proof_checks_every_step(name: str) -> None:
    proof = theory.get(name).prove()
    assert proof.ok, str(proof)
    assert len(proof.steps) >= 1
    assert all(s.expression and s.result for s in proof.steps)


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_variant_fails(name: str) -> None:
    proof = theory.get(name).prove(**WRONG[name])
    assert not proof.ok
    assert proof.failed()


@pytest.mark.parametrize("name", NAMES)
def test_numeric_counterpart_holds(name: str) -> None:
    result = theory.get(name).check()
    assert result.ok, str(result)
    assert not result.violated
    json.dumps(result.to_dict(), allow_nan=False)


def test_c1_on_the_zero_branch_map_reports_the_violated_hypothesis_not_a_count() -> None:
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=5))
    result = theory.get("C1").check(system)
    assert not result.ok
    assert any("nondegeneracy" in v for v in result.violated)
    assert "no count is reported" in result.message
    assert "continuum of dimension [4]" in result.message


def test_c1_refuses_a_driven_map() -> None:
    f = dy.models.ContractiveTanh(n=4, seed=0)
    result = theory.get("C1").check(dy.LoopedSystem.from_module(f, torch.zeros(1, 4)))
    assert not result.ok and result.violated == ("no recall: f must not depend on x",)


def test_c7_holds_with_rope_and_fails_with_absolute_positions() -> None:
    rope = theory.get("C7").check(pos="rope")
    assert rope.ok and rope.numbers["deviation"] <= 1e-12
    none = theory.get("C7").check(pos="none")
    assert none.ok
    absolute = theory.get("C7").check(pos="absolute")
    assert not absolute.ok and absolute.numbers["deviation"] > 1e-3
    assert absolute.violated


def test_c8_fails_with_a_lipschitz_constant_that_is_too_small() -> None:
    result = theory.get("C8").check(lipschitz=0.3)
    assert not result.ok
    assert "certified upper bound" in result.violated[0]


def test_cli_prove_all_prints_every_step(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json = tmp_path / "proofs.json"
    assert main(["prove", "--all", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    n_steps = sum(len(theory.get(n).prove().steps) for n in NAMES)
    assert out.count("[ok  ]") == n_steps
    assert f"{len(NAMES)} claims, {n_steps} steps: all proved" in out
    data = json.loads(out_json.read_text())
    assert [d["claim"]["name"] for d in data] == NAMES


def test_cli_prove_one_with_check_and_bad_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prove", "C5", "--check"]) == 0
    out = capsys.readouterr().out
    assert "C5 check: OK" in out and "316.227766" in out
    assert main(["prove", "C99"]) == 2
    assert "no claim named 'C99'" in capsys.readouterr().err
    assert main(["prove"]) == 2
