"""Certification: specs, `verify.certify`, the four reports, and the examples' exit codes."""

from __future__ import annotations

import json
import operator
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from junitparser import Failure, JUnitXml

import dynamo as dy
import verify
from verify.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

SMALL = """
[architecture]
d_model = 16
n_heads = 2

[inputs]
seq_len = 4
count = 3
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("reachability.converged_fraction >= 0.99", "reachability.converged_fraction", ">=", 0.99),
        ("geometry.spectral_radius<1", "geometry.spectral_radius", "<", 1.0),
        ('input_dependence.verdict == "strong"', "input_dependence.verdict", "==", "strong"),
        ("contraction.verdict != 'REFUTED'", "contraction.verdict", "!=", "REFUTED"),
    ],
)
def test_requirements_parse(text: str, metric: str, op: str, value: object) -> None:
    r = verify.parse_requirement(text)
    assert (r.metric, r.op, r.value) == (metric, op, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("geometry.spectral_radius ~ 1", "must read 'metric op value'"),
        ("geometry.spectral_radius < one", "neither a number nor a quoted string"),
        ("geometry.radius < 1", "unknown metric 'geometry.radius'"),
        ("input_dependence.verdict < 'strong'", "use == or !="),
        ("geometry.spectral_radius == 'small'", "compare it with a number"),
    ],
)
def test_bad_requirements_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify.parse_requirement(text)


def test_requirement_semantics_and_quorum() -> None:
    r = verify.parse_requirement("geometry.spectral_radius < 1", quorum=0.5)
    assert r.holds(0.5) and not r.holds(1.0) and not r.holds(None) and not r.holds(float("nan"))
    assert r.text() == "geometry.spectral_radius < 1 (in >= 50% of draws)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[architecture]\nd_modle = 64\n", "architecture.d_modle: unknown key"),
        (
            "[inputs]\ncount = 'many'\n",
            "inputs.count: Input should be a valid integer (got 'many')",
        ),
        ("[draws]\ncount = 0\n", "draws.count: Input should be greater than or equal to 1"),
        ("[architecture]\nkind = 'factory'\n", "needs factory = 'file.py:function'"),
        (
            "[architecture]\nkind = 'factory'\nfactory = 'no_such_module_xyz:make'\n",
            "the module 'no_such_module_xyz' is not allowed",
        ),
        (  # a module the user did not allow is refused before it is imported
            "[architecture]\nkind = 'factory'\nfactory = 'json:no_such_function'\n",
            "the module 'json' is not allowed",
        ),
        (  # a factory without kind is a factory block, not silently the reference model
            "[architecture]\nfactory = 'no_such_module_xyz:make'\n",
            "the module 'no_such_module_xyz' is not allowed",
        ),
        (
            "[architecture]\nfactory = 'no_such_file.py:make'\n",
            "no_such_file.py:make': no file",
        ),
        ("[architecture]\nfactory = 'a b:make'\n", "must look like 'file.py:function'"),
        (
            "[architecture]\nkind = 'looped_transformer'\nfactory = 'json:loads'\n",
            "factory belong to kind = 'factory', but kind = 'looped_transformer'",
        ),
        (
            "[architecture]\nfactory = 'json:loads'\nrecall = 'none'\n",
            "recall configure the reference transformer and would be ignored",
        ),
        ("[architecture]\nn_heads = 5\n", "n_heads=5 must divide d_model=64"),
        (
            "requirements = [\"input_dependence.verdict == 'stronk'\"]\n",
            "input_dependence.verdict is never 'stronk'; its values are 'none', 'weak', 'strong'",
        ),
        (
            "requirements = ['contraction.verdict == \"proven\"']\n"
            "[analysis]\ncontraction = true\n",
            "contraction.verdict is never 'proven'; its values are 'PROVEN'",
        ),
        ("requirements = ['geometry.spectral_radius < nan']\n", "use a finite threshold"),
        ("requirements = ['geometry.spectral_radius < inf']\n", "use a finite threshold"),
        (
            "requirements = ['reachability.converged_fraction >= 1.5']\n",
            "lies in [0, 1]; >= 1.5 is always or never met",
        ),
        (
            "requirements = ['reachability.converged_fraction > 1']\n",
            "lies in [0, 1]; > 1 is always or never met",
        ),
        ("[draws]\nseeds = [-1, 0]\n", "draws.seeds.0: Input should be greater than or equal"),
        ("[draws]\nseeds = [9223372036854775808]\n", "draws.seeds.0: Input should be less"),
        (
            "[draws]\nfirst_seed = 9223372036854775807\ncount = 2\n",
            "first_seed + count - 1 exceeds the largest seed",
        ),
        ("[inputs]\nseed = 18446744073709551616\n", "inputs.seed: Input should be less than"),
        (
            "requirements = ['geometry.spectral_radius < 1', 'geometry.spectral_radius < 1']\n",
            "requirement(s) given twice: ['geometry.spectral_radius < 1']",
        ),
        (
            "requirements = [\"input_dependence.verdict == 'strong'\"]\n[inputs]\ncount = 1\n",
            "needs inputs.count >= 2",
        ),
        (
            "requirements = [{ require = 'geometry.spectral_radius < 1', quorum = 2 }]\n",
            "requirement 1: 'geometry.spectral_radius < 1': quorum: Input should be less than",
        ),
        ("[inputs]\nscale = inf\n", "inputs.scale: Input should be a finite number"),
        ("[analysis]\nstart_noise = nan\n", "analysis.start_noise: Input should be a finite"),
        ("[draws]\ncount = 99999999999999999999\n", "draws.count: Input should be less than"),
        ("[draws]\nseeds = []\n", "seeds = [] gives no draws"),
        ("[draws]\nseeds = [1, 1]\n", "seeds repeat [1]"),
        ("[draws]\nseeds = [5, 6]\ncount = 3\n", "count = 3 disagrees with the 2 listed seeds"),
        (
            "[analysis.domain]\nx_min = 5.0\nx_max = 1.0\n",
            "analysis.domain: x_max = 1 is below x_min = 5",
        ),
        ("[analysis.domain]\nr_max = -5.0\n", "analysis.domain.r_max: Input should be greater"),
        ('name = "a\\u0001b"\n', "name: control characters"),
        ('name = "a\\u0085b"\n', "name: control characters"),
        (  # right-to-left override: a report would show "PASSED" where the text reads "DESSAP"
            'name = "block \\u202eDESSAP"\n',
            "name: bidirectional-text controls (U+202E) cannot appear in name",
        ),
        ("[analysis]\nrequirements = []\n", "'requirements' is a top-level key"),
        (
            "requirements = ['geometry.sigma_min > 0.1']\n[analysis]\ngeometry = false\n",
            "needs analysis.geometry = true",
        ),
        ("requirements = ['lipschitz.upper_bound < 1']\n", "needs analysis.lipschitz = true"),
        ("[inputs]\nkind = 'tokens'\n", "needs architecture.vocab_size"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_malformed_specs_exit_2_naming_the_key(
    tmp_path: Path, body: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, body)
    with pytest.raises(verify.SpecError):
        verify.load_spec(path)
    assert main(["certify", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_certify_refuses_a_spec_without_requirements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "name = 'nothing to check'\n")
    assert main(["certify", str(path)]) == 2
    assert "has no requirements: add some, or run `dynamo analyze" in capsys.readouterr().err


def test_a_folder_is_not_a_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certify", str(tmp_path)]) == 2
    assert "is a folder; give the spec file" in capsys.readouterr().err


def test_certify_checks_its_own_arguments_before_any_work() -> None:
    spec = verify.load_spec(EXAMPLES / "passing.toml")
    with pytest.raises(dy.errors.InvalidArgumentError, match=r"certify\(spec, seeds=\[\]\)"):
        verify.certify(spec, seeds=[])
    with pytest.raises(dy.errors.InvalidArgumentError, match="seeds repeat"):
        verify.certify(spec, seeds=[2, 2])
    with pytest.raises(
        dy.errors.InvalidArgumentError, match=r"certify\(spec, device='meta'\): unsupported"
    ):
        verify.certify(spec, device="meta")
    with pytest.raises(dy.errors.InvalidArgumentError, match="not a device"):
        verify.certify(spec, device="tpu")


def test_seeds_override_counts_from_the_specs_first_seed(tmp_path: Path) -> None:
    path = write(tmp_path, SMALL + "[draws]\nseeds = [7, 3]\n")
    out = tmp_path / "c.json"
    assert main(["analyze", str(path), "--quick", "--seeds", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["environment"]["seeds"] == [7, 8]


def test_basis_follows_the_values_of_a_verdict() -> None:
    assert verify.basis("geometry.spectral_radius", [0.5, 0.7]) == "sampled estimate"
    assert verify.basis("lipschitz.upper_bound") == "certified bound"
    assert verify.basis("contraction.verdict", ["PROVEN"] * 3).startswith("proof")
    assert verify.basis("contraction.verdict", ["REFUTED"] * 2).startswith("checked witness")
    for mixed in (["PROVEN", "SUPPORTED"], ["SUPPORTED"], ["PROVEN", None], []):
        assert verify.basis("contraction.verdict", mixed) == "sampled estimate"
    # the local verdict is a float check at sampled fixed points, or proofs there when it reads
    # PROVEN in every draw
    assert verify.basis("contraction.local_verdict", ["SUPPORTED"] * 2).startswith("float check")
    assert verify.basis("contraction.local_verdict", ["PROVEN"]).startswith("proofs at the")
    assert verify.basis("contraction.local_verdict", ["PROVEN", "SUPPORTED"]).startswith("float")
    # each draw's value is then a float check (passing in one draw, failing in the other): the
    # values are checked, whatever they read (this said "sampled estimate" before Trust)
    assert verify.basis("contraction.local_verdict", ["SUPPORTED", "REFUTED"]).startswith("float")
    assert verify.basis("contraction.verdict", ["PROVEN", "REFUTED"]).startswith("checked")
    assert verify.basis("contraction.local_verdict", ["SUPPORTED", "UNDETERMINED"]) == (
        "sampled estimate"
    )


def test_two_reports_cannot_share_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = str(tmp_path / "r.txt")
    assert main(["certify", "--json", same, "--markdown", same]) == 2
    assert "--json writes there too; give each report its own file" in capsys.readouterr().err


def test_running_out_of_memory_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def oom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        )

    monkeypatch.setattr("verify._certify.certify", oom)
    assert main(["certify"]) == 2
    err = capsys.readouterr().err
    assert "out of memory" in err and "make the problem smaller: fewer inputs.count" in err


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[architecture]\nd_modle = 1\n[inputs]\ncount = -1\n")
    with pytest.raises(verify.SpecError) as info:
        verify.load_spec(path)
    assert "architecture.d_modle" in str(info.value) and "inputs.count" in str(info.value)


def test_factory_errors_are_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "blocks_for_test.py").write_text(
        "def not_a_module(seed):\n    return 42\n"
        "def strict(seed, width):\n    raise AssertionError('unreachable')\n"
    )
    bad_kwargs = write(
        tmp_path,
        """
        requirements = ["reachability.converged_fraction >= 1"]
        [architecture]
        kind = "factory"
        factory = "blocks_for_test.py:strict"
        kwargs = { depth = 3 }
        """,
        "kwargs.toml",
    )
    assert main(["certify", str(bad_kwargs)]) == 2
    err = capsys.readouterr().err
    assert "blocks_for_test.py:strict(seed=0, depth=3) failed" in err
    assert "check architecture.kwargs" in err
    not_module = write(
        tmp_path,
        "requirements = ['reachability.converged_fraction >= 1']\n"
        '[architecture]\nkind = "factory"\nfactory = "blocks_for_test.py:not_a_module"\n',
        "notmodule.toml",
    )
    assert main(["certify", str(not_module)]) == 2
    assert "returned int, not a torch.nn.Module" in capsys.readouterr().err


def test_spec_schema_is_published_and_checks_specs() -> None:
    schema = verify.spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    good = verify.default_spec().model_dump(mode="json")
    jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "draws": {"count": "three"}}, schema)
    # the specs as users write them (strings and { require, quorum } tables) satisfy it too
    for path in sorted(EXAMPLES.glob("*.toml")):
        jsonschema.validate(tomllib.loads(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"requirements": ["geometry.spectral_radius"]}, schema)


# ---------------------------------------------------------------------- certify
def test_certify_reports_share_interval_and_environment(tmp_path: Path) -> None:
    spec = verify.load_spec(
        write(
            tmp_path,
            "requirements = ['geometry.spectral_radius < 1', "
            "{ require = 'reachability.steps_max <= 10', quorum = 0.5 }]\n"
            + SMALL
            + "[draws]\ncount = 3\n",
        )
    )
    cert = verify.certify(spec)
    assert len(cert.draws) == 3 and [d.seed for d in cert.draws] == [0, 1, 2]
    radius, steps = cert.requirements
    for r in cert.requirements:
        k = sum(r.passes)
        assert r.proportion == k / 3
        assert r.interval == pytest.approx(verify.clopper_pearson(k, 3))
        assert r.passes == [_holds(r.op, v, r.value) for v in r.values]
    assert radius.values == [d.metrics["geometry.spectral_radius"] for d in cert.draws]
    # draw 1 of this small concatenated-recall block reaches nothing (oscillates), so it has no
    # fixed point to measure: n/a, which fails the requirement, and is never counted as 0
    assert radius.passes == [True, False, True] and radius.values[1] is None
    assert cert.draws[1].metrics["input_dependence.n_distinct"] is None
    assert not steps.passed  # no draw settles in 10 steps
    assert not cert.passed and cert.failed == [radius, steps]
    env = cert.environment
    assert env.torch == torch.__version__ and env.dynamo == dy.__version__
    assert env.dtype == "float64" and env.device == "cpu" and env.seeds == [0, 1, 2]
    assert env.reach_path == "loop" and env.timestamp is not None  # the CPU's path


def _holds(op: str, a: Any, b: Any) -> bool:
    ops = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
        "==": operator.eq,
        "!=": operator.ne,
    }
    return a is not None and bool(ops[op](a, b))


def test_same_spec_gives_byte_identical_json_without_timestamp(tmp_path: Path) -> None:
    spec = verify.load_spec(write(tmp_path, SMALL + "[draws]\ncount = 2\n"))
    one = verify.certify(spec, timestamp=False).to_json()
    two = verify.certify(spec, timestamp=False).to_json()
    assert one == two
    assert json.loads(one)["environment"]["timestamp"] is None


def test_vmapped_path_matches_the_loop_over_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accelerator's path (all draws vmapped over stacked parameters), forced on the CPU,
    gives the metrics of the CPU's loop of dynamo.solve over the draws."""
    spec = verify.load_spec(write(tmp_path, SMALL + "[draws]\ncount = 4\n"))
    looped = verify.certify(spec, timestamp=False)
    monkeypatch.setattr(verify._certify, "_batching", lambda device: "vmap")
    stacked = verify.certify(spec, timestamp=False)
    assert stacked.environment.reach_path == "vmap" and looped.environment.reach_path == "loop"
    assert [d.metrics for d in stacked.draws] == [d.metrics for d in looped.draws]


def test_vmapped_and_per_draw_batching_give_the_same_iteration() -> None:
    """The accelerator's batching (vmap over stacked parameters, padded) and the CPU's (each
    draw in dynamo.solve's Picard loop) are the same iteration: same outcomes, same steps."""
    spec = verify.Spec(architecture=verify.Architecture(d_model=16, n_heads=2))  # type: ignore[call-arg]
    models = [verify.build_model(spec, s).double().requires_grad_(False) for s in range(3)]
    x = torch.randn(4, 4, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = {
        b: verify.stacked_reach(models, x, x.clone(), tol=1e-10, max_steps=300, batching=b)
        for b in ("vmap", "per_draw")
    }
    v, p = out["vmap"], out["per_draw"]
    assert 0 < int(p["converged"].sum()) < p["converged"].numel()  # some run to the end
    for key in ("converged", "diverged", "nonfinite", "steps"):
        assert torch.equal(v[key], p[key]), key
    assert torch.allclose(v["state"], p["state"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"batching='fast'\): choose 'auto', 'vmap' or"):
        verify.stacked_reach(models, x, x, tol=1e-10, max_steps=3, batching="fast")  # type: ignore[arg-type]


def test_token_inputs_are_embedded_by_each_draw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = verify.load_spec(
        write(
            tmp_path,
            SMALL.replace("d_model = 16", "d_model = 16\nvocab_size = 50").replace(
                "[inputs]", "[inputs]\nkind = 'tokens'"
            )
            + "[draws]\ncount = 3\n[analysis]\ninput_dependence = false\ngeometry = false\n",
        )
    )
    e0, e1 = (verify.draw_inputs(spec, verify.build_model(spec, s), torch.float64) for s in (0, 1))
    assert e0.shape == (3, 4, 16) and not torch.allclose(e0, e1)
    looped = verify.certify(spec, timestamp=False)
    monkeypatch.setattr(verify._certify, "_batching", lambda device: "vmap")
    stacked = verify.certify(spec, timestamp=False)
    assert stacked.environment.reach_path == "vmap"
    assert [d.metrics for d in stacked.draws] == [d.metrics for d in looped.draws]


def test_stacked_reach_counts_divergence_and_freezes_converged_starts() -> None:
    class Scaled(torch.nn.Module):
        def __init__(self, a: float) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(a, dtype=torch.float64))

        def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.a * h + x

    models = [Scaled(0.5), Scaled(3.0)]  # a contraction (h* = 2x) and an expansion
    x = torch.ones(2, 3, dtype=torch.float64)
    h0 = torch.zeros(2, 3, dtype=torch.float64)
    out = verify.stacked_reach(models, x, h0, tol=1e-12, max_steps=500)
    assert out["converged"].tolist() == [[True, True], [False, False]]
    assert out["diverged"].tolist() == [[False, False], [True, True]]
    assert torch.allclose(out["state"][0], 2 * x, atol=1e-10)
    for model in models:  # the same outcome as dynamo.solve
        system = dy.LoopedSystem.from_module(model, x)
        sol = dy.solve(
            system, h0, method="picard", tol=1e-12, atol=1e-12, max_steps=500, throw=False
        )
        i = models.index(model)
        assert sol.converged.tolist() == out["converged"][i].tolist()
        if bool(sol.converged.all()):
            assert sol.steps.tolist() == out["steps"][i].tolist()


def test_nothing_converged_is_never_zero_fixed_points(tmp_path: Path) -> None:
    spec = verify.load_spec(
        write(
            tmp_path,
            "requirements = ['reachability.converged_fraction > 0']\n"
            + SMALL
            + "[analysis]\nmax_steps = 2\n",
        )
    )
    cert = verify.certify(spec)
    m = cert.draws[0].metrics
    assert m["reachability.converged"] == 0
    assert m["geometry.spectral_radius"] is None and m["reachability.steps_median"] is None
    assert "no fixed point is reported" in cert.draws[0].notes["reachability.converged"]
    # no input has a converged start: its limits are unknown, so the most per input is too
    assert m["input_dependence.max_attractors"] is None
    assert "no converged start" in cert.draws[0].notes["input_dependence.max_attractors"]
    assert m["input_dependence.multistable_fraction"] == 0.0
    assert not cert.passed
    assert "n/a" in cert.to_markdown()


BISTABLE_FILE = """
import torch


class Bistable(torch.nn.Module):
    # h + 0.2 (h - h**3 + 0.1 x) per entry: two stable roots near +-1 for each entry of x

    def forward(self, h, x):
        return h + 0.2 * (h - h**3 + 0.1 * x)


def make(seed):
    return Bistable()
"""


def test_multistability_per_input_is_a_metric(tmp_path: Path) -> None:
    # each of the 2 entries of the state settles on its own root (±1) by the sign it starts
    # with: the 8 starts of an input (h0 = x, then x + noise) reach several limits
    (tmp_path / "bistable_for_test.py").write_text(BISTABLE_FILE)
    spec = verify.load_spec(
        write(
            tmp_path,
            "requirements = ['input_dependence.multistable_fraction <= 0.5', "
            "'input_dependence.max_attractors <= 1']\n"
            "[architecture]\nkind = 'factory'\nfactory = 'bistable_for_test.py:make'\n"
            "d_model = 2\n[inputs]\nseq_len = 1\ncount = 3\n[draws]\ncount = 1\n"
            "[analysis]\nstarts_per_input = 8\ngeometry = false\n",
        )
    )
    cert = verify.certify(spec, timestamp=False)
    m, notes = cert.draws[0].metrics, cert.draws[0].notes
    # the same numbers as dynamo.input_dependence on the same starts (noise, seed)
    model = verify.build_model(spec, 0)
    x = verify.draw_inputs(spec, model, torch.float64)
    dep = dy.input_dependence(
        dy.LoopedSystem.from_module(model, x), x, n_starts=8, seed=spec.inputs.seed
    )
    assert dep.multistable and int(dep.n_limits.min()) >= 2
    assert m["input_dependence.multistable_fraction"] == 1.0
    assert m["input_dependence.max_attractors"] == int(dep.n_limits.max()) >= 2
    assert cert.draws[0].trust["input_dependence.max_attractors"] == "estimated"
    assert "input_dependence.max_attractors" not in notes
    assert m["input_dependence.verdict"] == dep.verdict
    assert not any(r.passed for r in cert.requirements)
    # one start per input cannot see a second attractor, and the note says so
    one = verify.certify(
        spec.model_copy(
            update={"analysis": spec.analysis.model_copy(update={"starts_per_input": 1})}
        ),
        timestamp=False,
    )
    m1, notes1 = one.draws[0].metrics, one.draws[0].notes
    assert m1["input_dependence.multistable_fraction"] == 0.0
    assert m1["input_dependence.max_attractors"] == 1
    assert "one start per input" in notes1["input_dependence.multistable_fraction"]


def test_multistability_metrics_have_their_ranges() -> None:
    frac = verify.metric("input_dependence.multistable_fraction")
    most = verify.metric("input_dependence.max_attractors")
    assert frac.type == most.type == "number" and frac.range == (0.0, 1.0)
    assert most.range is not None and most.range[0] == 0.0
    with pytest.raises(ValueError, match=r"lies in \[0, 1\]"):
        verify.parse_requirement("input_dependence.multistable_fraction <= 1.5")
    with pytest.raises(ValueError, match=r"always or never met"):
        verify.parse_requirement("input_dependence.max_attractors < 0")
    assert verify.parse_requirement("input_dependence.max_attractors <= 1").value == 1


def test_partial_convergence_never_flatters_a_metric(tmp_path: Path) -> None:
    # at 150 steps 4 of 12 starts converge: an extreme over those alone would be optimistic
    # (the largest spectral radius over the converged inputs is 0.81, over all of them 0.91)
    spec = verify.load_spec(
        write(
            tmp_path,
            "requirements = ['reachability.steps_max <= 150', 'geometry.spectral_radius < 0.85',"
            " 'input_dependence.n_distinct >= 1', 'reachability.path_independence >= 0.9']\n"
            + SMALL
            + "[analysis]\nmax_steps = 150\n",
        )
    )
    cert = verify.certify(spec, timestamp=False)
    m, notes = cert.draws[0].metrics, cert.draws[0].notes
    assert 0 < m["reachability.converged"] < m["reachability.starts"]
    for key in (
        "reachability.steps_max",
        "reachability.path_independence",
        "input_dependence.n_distinct",
        "input_dependence.distance_ratio",
        "geometry.spectral_radius",
        "geometry.spectral_norm",
    ):
        assert m[key] is None and key in notes, key
    assert "did not converge within 150 steps" in notes["reachability.steps_max"]
    assert "inputs' iterations converged" in notes["geometry.spectral_radius"]
    assert not any(r.passed for r in cert.requirements)
    # with enough steps every start converges and the same metrics are numbers
    full = verify.certify(
        spec.model_copy(update={"analysis": spec.analysis.model_copy(update={"max_steps": 400})}),
        timestamp=False,
    )
    fm = full.draws[0].metrics
    assert fm["reachability.steps_max"] == 241 and fm["input_dependence.n_distinct"] == 3
    assert fm["geometry.spectral_radius"] > 0.85


def test_steps_median_counts_unconverged_starts_as_censored() -> None:
    from verify._certify import _reach_metrics

    conv = torch.tensor([True, True, True, False])
    steps = torch.tensor([10, 20, 30, 100])
    state = torch.randn(4, 3, dtype=torch.float64)
    out = {"diverged": 0, "nonfinite": 0}
    notes: dict[str, str] = {}
    m = _reach_metrics(conv, steps, state, 2, out, 100, notes)
    assert m["reachability.steps_median"] == 20.0  # lower median of 10, 20, 30, >100
    assert (
        m["reachability.steps_max"] is None and "1 of 4 starts" in notes["reachability.steps_max"]
    )
    m = _reach_metrics(torch.tensor([True, False, False, False]), steps, state, 2, out, 100, {})
    assert m["reachability.steps_median"] is None


def test_float32_sees_the_same_inputs_and_starts_as_float64(tmp_path: Path) -> None:
    spec = verify.load_spec(write(tmp_path, SMALL))
    model = verify.build_model(spec, 0)
    x64 = verify.draw_inputs(spec, model, torch.float64)
    x32 = verify.draw_inputs(spec, model, torch.float32)
    assert torch.equal(x64.float(), x32)
    s64 = dy.LoopedSystem.from_module(model, x64, dtype=torch.float64)
    s32 = dy.LoopedSystem.from_module(model, x32, dtype=torch.float32)
    h64 = s64.initial_states("input", 3, seed=5)
    # x + noise rounds once in float32 and once in float64: equal to float32 rounding, where a
    # float32 draw would differ by O(1) (torch.randn draws different numbers per dtype)
    torch.testing.assert_close(h64.float(), s32.initial_states("input", 3, seed=5))


def test_a_report_never_overwrites_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "requirements = ['reachability.converged_fraction >= 1']\n" + SMALL)
    before = path.read_text()
    assert main(["certify", str(path), "--json", str(path)]) == 2
    assert "that is the spec itself" in capsys.readouterr().err
    assert path.read_text() == before


def test_run_header_names_every_key_set_away_from_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["certify", str(EXAMPLES / "passing.toml"), "--seeds", "1"]) == 0
    assert "recall_mode='add'" in capsys.readouterr().out


def test_an_analysis_neither_passes_nor_fails(tmp_path: Path) -> None:
    cert = verify.certify(verify.load_spec(write(tmp_path, SMALL)), timestamp=False)
    assert cert.passed is None and json.loads(cert.to_json())["passed"] is None
    with pytest.raises(AssertionError, match="has no requirements, so nothing was certified"):
        cert.assert_passed()


def test_costly_metrics_only_when_asked(tmp_path: Path) -> None:
    cheap = verify.certify(verify.load_spec(write(tmp_path, SMALL)))
    assert "geometry.sigma_min" not in cheap.draws[0].metrics
    asked = verify.load_spec(
        write(tmp_path, "requirements = ['geometry.sigma_min > 0']\n" + SMALL, "asked.toml")
    )
    metrics = verify.certify(asked).draws[0].metrics
    sigma, rho = metrics["geometry.sigma_min"], metrics["geometry.spectral_radius"]
    # σ_min(I − J) <= |1 − λ| for every eigenvalue λ of J, so it is at most 1 + ρ(J)
    assert isinstance(sigma, float) and isinstance(rho, float)
    assert 0 < sigma <= 1 + rho


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = verify.load_spec(write(tmp_path, SMALL + "[analysis]\ngeometry = false\n"))
    verify.certify(spec, progress=True)
    err = capsys.readouterr().err
    assert "dynamo certify" in err and "draw" in err


def test_certificate_round_trips_through_json(tmp_path: Path) -> None:
    cert = verify.certify(verify.load_spec(write(tmp_path, SMALL)), timestamp=False)
    again = verify.Certificate.model_validate_json(cert.to_json())
    assert again == cert


# ---------------------------------------------------------------------- the examples
def test_passing_example_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cert.json"
    assert main(["certify", str(EXAMPLES / "passing.toml"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASSED: 5/5 requirement(s) hold over 8 draw(s)" in text
    data = json.loads(out.read_text())
    assert data["passed"] and all(r["passed"] for r in data["requirements"])


def test_failing_example_names_the_failed_requirement_in_all_four_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {k: tmp_path / f"report.{k}" for k in ("json", "md", "xml", "html")}
    code = main(
        [
            "certify",
            str(EXAMPLES / "failing.toml"),
            "--json",
            str(paths["json"]),
            "--markdown",
            str(paths["md"]),
            "--junit",
            str(paths["xml"]),
            "--html",
            str(paths["html"]),
        ]
    )
    assert code == 1
    failed = "input_dependence.verdict == 'strong'"
    out = capsys.readouterr().out
    assert f"FAILED: 1/2 requirement(s) hold over 4 draw(s) (failed: {failed})" in out
    data = json.loads(paths["json"].read_text())
    assert [r["text"] for r in data["requirements"] if not r["passed"]] == [failed]
    md = paths["md"].read_text()
    assert md.startswith("## ❌ dynamo certify") and f"**Failed:** `{failed}`" in md
    html = paths["html"].read_text()
    assert "FAILED" in html and failed.replace("'", "&#x27;") in html
    assert "data:image/png;base64," in html
    # JUnit: read back with junitparser, one case per requirement, the failure names it
    xml = JUnitXml.fromfile(str(paths["xml"]))
    suites = list(xml)
    assert len(suites) == 1 and suites[0].tests == 2 and suites[0].failures == 1
    cases = list(suites[0])
    assert [c.name for c in cases] == [r["text"] for r in data["requirements"]]
    bad = [c for c in cases if not c.is_passed]
    assert len(bad) == 1 and bad[0].name == failed
    result = bad[0].result[0]
    assert isinstance(result, Failure) and failed in (result.message or "")
    assert "0/4 draws" in (result.text or "")


def test_user_factory_example_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certify", str(EXAMPLES / "user_factory.toml")]) == 0
    out = capsys.readouterr().out
    assert "my_blocks.py:gated_tanh" in out
    # the verdict read SUPPORTED (an estimate); the local one SUPPORTED (a float check per point)
    assert "SUPPORTED ×4" in out
    assert "contraction.local_verdict (float check at the sampled fixed points" in out
    assert "PASS contraction.local_verdict == 'SUPPORTED': 4/4 draws" in out


def test_proofs_analysis_proves_the_fixed_points_reached(tmp_path: Path) -> None:
    """Issue 17, item 5: `dynamo certify` says how many points were found and proven, with the
    radii and the basins, and that completeness was not attempted; the values are PROVEN."""
    text = (
        (EXAMPLES / "proven_fixed_points.toml")
        .read_text()
        .replace("count = 2\n\n[analysis]", "count = 1\n\n[analysis]")
    )
    cert = verify.certify(verify.load_spec(write(tmp_path, text)), timestamp=False)
    assert cert.passed
    (draw,) = cert.draws
    assert draw.metrics["proofs.proven_fraction"] == 1
    assert (
        0 < draw.metrics["proofs.basin_radius_min"] <= draw.metrics["proofs.proof_radius_min"] * 10
    )
    assert {draw.trust[k] for k in draw.metrics if k.startswith("proofs.")} == {"proven"}
    note = draw.notes["proofs.proven_fraction"]
    assert "2 fixed point(s) reached from h0 = x, 2 proven to exist and be unique" in note
    assert "certified basin" in note and "completeness: not attempted" in note


def test_proofs_requirements_need_the_analysis(tmp_path: Path) -> None:
    spec = "requirements = ['proofs.proven_fraction >= 1']\n" + SMALL
    with pytest.raises(verify.SpecError, match=r"needs analysis.proofs = true"):
        verify.load_spec(write(tmp_path, spec))


def test_json_report_validates_against_the_published_schema(tmp_path: Path) -> None:
    cert = verify.certify(
        verify.load_spec(
            write(tmp_path, "requirements = ['geometry.spectral_radius < 1']\n" + SMALL)
        )
    )
    schema = verify.certificate_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    data = json.loads(cert.to_json())
    jsonschema.validate(data, schema)
    for broken in (
        {**data, "passed": "yes"},
        {**data, "schema_version": 2},
        {k: v for k, v in data.items() if k != "environment"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_published_schemas_match_the_docs() -> None:
    for name, schema in (
        ("spec.schema.json", verify.spec_schema()),
        ("certificate.schema.json", verify.certificate_schema()),
    ):
        published = json.loads((ROOT / "docs" / "schemas" / name).read_text())
        assert published == schema, f"docs/schemas/{name} is stale: run docs/scripts/schemas.py"


def test_analyze_measures_without_judging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(
        tmp_path, "requirements = ['reachability.steps_max < 1']\n" + SMALL + "[draws]\ncount = 2\n"
    )
    md = tmp_path / "a.md"
    assert main(["analyze", str(spec), "--quick", "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "1 requirement(s) in the spec ignored" in out
    assert "geometry.spectral_radius" in out
    assert md.read_text().startswith("## dynamo analyze")


def test_analyze_computes_the_costly_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, SMALL)
    target = tmp_path / "a.json"
    assert main(["analyze", str(spec), "--json", str(target)]) == 0
    metrics = json.loads(target.read_text())["draws"][0]["metrics"]
    assert metrics["geometry.sigma_min"] > 0
    assert metrics["input_dependence.sensitivity_norm"] > 0


def test_basins_command_maps_starts_to_attractors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, SMALL)
    graph = tmp_path / "g.json"
    assert main(["basins", str(spec), "--starts", "4", "--json", str(graph)]) == 0
    out = capsys.readouterr().out
    assert "BasinGraph:" in out and "fp:" in out
    data = json.loads(graph.read_text())
    assert {n["id"] for n in data["nodes"]} >= {"input:0", "input:1", "input:2"}


def test_contraction_and_lipschitz_share_one_certified_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = verify.load_spec(
        write(
            tmp_path,
            "requirements = ['lipschitz.upper_bound > 0']\n"
            + SMALL
            + "[analysis]\ncontraction = true\nlipschitz = true\ndomain = { x_max = 10.0 }\n",
        )
    )
    calls = []
    original = dy.lipschitz_upper_bound

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dy, "lipschitz_upper_bound", counted)
    monkeypatch.setattr("dynamo._contraction.lipschitz_upper_bound", counted)
    cert = verify.certify(spec, timestamp=False)
    assert len(calls) == 1  # once per draw, not once per analysis
    # on this domain attention's token norms are unbounded: no bound, and the reason is kept
    assert cert.draws[0].metrics["lipschitz.upper_bound"] is None
    note = cert.draws[0].notes["lipschitz.upper_bound"]
    assert note.startswith("no certified bound: lipschitz_upper_bound(model, domain): attention")
    assert not cert.passed
    # on a bounded domain there is one, and it is the same number lipschitz_upper_bound gives
    calls.clear()
    bounded = spec.analysis.model_copy(
        update={"domain": verify._spec.Domain(x_max=10.0, r_min=0.5, r_max=10.0)}
    )
    cert = verify.certify(spec.model_copy(update={"analysis": bounded}), timestamp=False)
    assert len(calls) == 1
    model = verify.build_model(spec, 0).double()
    system = dy.LoopedSystem.from_module(model, verify.draw_inputs(spec, model, torch.float64))
    direct = original(system, dy.Domain(r_min=0.5, r_max=10.0, x_max=10.0)).value
    assert cert.draws[0].metrics["lipschitz.upper_bound"] == direct
    assert cert.requirements[0].passed and cert.requirements[0].basis == "certified bound"
    # the trust is recorded with the value, not guessed from the name when the report is read
    assert cert.requirements[0].trust == "proven"
    assert cert.draws[0].trust["lipschitz.upper_bound"] == "proven"


# ---------------------------------------------------------------------- what a spec may run
FACTORY_FILE = """
import torch


def make(seed, width=4):
    return torch.nn.Linear(width, width)
"""


def test_a_spec_cannot_run_a_module_nobody_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # torch.hub.load(repo, model, source="local") runs repo/hubconf.py: a spec alone must not
    repo = tmp_path / "repo"
    repo.mkdir()
    ran = tmp_path / "hubconf_ran"
    (repo / "hubconf.py").write_text(
        f"import pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n"
        "def block(seed):\n    raise AssertionError('unreachable')\n"
    )
    spec = write(
        tmp_path,
        f"""
        requirements = ["reachability.converged_fraction >= 1"]
        [architecture]
        factory = "torch.hub:load"
        kwargs = {{ repo_or_dir = "{repo}", model = "block", source = "local" }}
        """,
    )
    assert main(["certify", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "the module 'torch.hub' is not allowed" in err and "--allow-module torch" in err
    assert "Traceback" not in err
    assert not ran.exists()
    with pytest.raises(verify.SpecError, match="is not allowed"):
        verify.certify(verify.Spec(architecture=verify.Architecture(factory="torch.hub:load")))
    assert not ran.exists()


def test_an_allowed_module_is_imported_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "lib" / "blocks_pkg_for_test"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "linear.py").write_text(FACTORY_FILE)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    spec = write(tmp_path, "[architecture]\nfactory = 'blocks_pkg_for_test.linear:make'\n")
    with pytest.raises(verify.SpecError, match="--allow-module blocks_pkg_for_test"):
        verify.load_spec(spec)
    assert "blocks_pkg_for_test.linear" not in sys.modules
    with pytest.raises(verify.SpecError, match="not allowed"):  # a sibling is not a submodule
        verify.load_spec(spec, allow_modules=["blocks_pkg"])
    loaded = verify.load_spec(spec, allow_modules=["blocks_pkg_for_test"])
    assert isinstance(verify.build_model(loaded, 0), torch.nn.Linear)


def test_loading_a_spec_leaves_sys_path_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "helper_for_test_xyz.py").write_text("WIDTH = 3\n")
    (tmp_path / "blocks.py").write_text(
        "import sys\nsys.path.insert(0, '/somewhere/else')\n"
        "from helper_for_test_xyz import WIDTH\n" + FACTORY_FILE.replace("width=4", "width=WIDTH")
    )
    spec = write(tmp_path, "[architecture]\nfactory = 'blocks.py:make'\n")
    before = list(sys.path)
    loaded = verify.load_spec(spec)
    assert sys.path == before
    # the file's own imports of modules next to it resolved while it ran
    assert verify.build_model(loaded, 0).in_features == 3
    assert sys.path == before


def test_a_module_next_to_a_spec_does_not_shadow_an_installed_package(tmp_path: Path) -> None:
    (tmp_path / "junitparser.py").write_text("raise RuntimeError('the fake junitparser')\n")
    (tmp_path / "blocks.py").write_text(FACTORY_FILE)
    spec = write(tmp_path, "[architecture]\nfactory = 'blocks.py:make'\n")
    # a fresh process: this one has junitparser imported already
    code = (
        "import sys, verify\n"
        f"verify.load_spec({str(spec)!r})\n"
        "import junitparser\n"
        "print(junitparser.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) not in done.stdout and "site-packages" in done.stdout


def test_the_old_module_form_says_what_to_write_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my_blocks.py").write_text(FACTORY_FILE)
    spec = write(
        tmp_path,
        "requirements = ['reachability.converged_fraction >= 1']\n"
        "[architecture]\nfactory = 'my_blocks:make'\n",
    )
    assert main(["certify", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "write factory = 'my_blocks.py:make'" in err
    assert "--allow-module my_blocks" in err and "Traceback" not in err


def test_a_factory_file_without_the_function_is_named(tmp_path: Path) -> None:
    (tmp_path / "blocks.py").write_text(FACTORY_FILE)
    spec = write(tmp_path, "[architecture]\nfactory = 'blocks.py:build'\n")
    with pytest.raises(verify.SpecError, match=r"'blocks\.py' has no function 'build'"):
        verify.load_spec(spec)


def _git_repo(path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "test@example.com")
    git("config", "user.name", "test")
    (path / "tracked.txt").write_text("one\n")
    git("add", "tracked.txt")
    git("commit", "-q", "-m", "one")


def test_the_reports_git_fields_run_no_command_the_repository_configures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from verify._certify import _git

    repo = tmp_path / "repo"
    repo.mkdir()
    _git_repo(repo)
    marker = tmp_path / "ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho ran >> {marker}\ncat\n")
    hook.chmod(0o755)
    subprocess.run(["git", "config", "core.fsmonitor", str(hook)], cwd=repo, check=True)
    subprocess.run(["git", "config", "filter.evil.clean", str(hook)], cwd=repo, check=True)
    (repo / ".git" / "info" / "attributes").write_text("* filter=evil\n")
    (repo / "tracked.txt").write_text("two\n")  # status must read it: through the clean filter
    args = ("status", "--porcelain", "--untracked-files=no")
    # plain git runs them (so this test can fail) ...
    subprocess.run(["git", *args], cwd=repo, check=False, capture_output=True)
    assert marker.exists()
    marker.unlink()
    # ... the report's git does not, and still sees the change
    monkeypatch.chdir(repo)
    assert _git(*args, "--ignore-submodules=all") == "M tracked.txt"
    assert _git("rev-parse", "HEAD") is not None
    assert not marker.exists()


def test_markdown_reports_escape_link_and_image_markup_in_names() -> None:
    from verify._report import _EXAMPLE

    cert = verify.Certificate.model_validate_json(_EXAMPLE)
    name = "[click me](https://evil.example) ![x](https://evil.example/p.png) <img src=x> | *b*"
    md = cert.model_copy(update={"name": name}).to_markdown()
    heading = md.splitlines()[0]
    assert "](" not in heading and "<img" not in heading and "*b*" not in heading
    assert r"\[click me\]\(https://evil\.example\)" in heading and "&lt;img" in heading
    assert "\\|" in heading


def test_starts_beyond_the_divergence_threshold_are_refused_before_any_work(
    tmp_path: Path,
) -> None:
    spec = verify.load_spec(write(tmp_path, SMALL.replace("count = 3", "count = 3\nscale = 1e7")))
    with pytest.raises(verify.SpecError, match=r"inputs.scale = 1e\+07 .* Lower inputs.scale"):
        verify.certify(spec, timestamp=False)


def test_stacked_reach_counts_starts_already_beyond_divergence_in_both_batchings() -> None:
    spec = verify.Spec(architecture=verify.Architecture(d_model=8, n_heads=2))  # type: ignore[call-arg]
    models = [verify.build_model(spec, s).double().requires_grad_(False) for s in range(2)]
    x = torch.randn(3, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    h0 = x.clone()
    h0[1] *= 1e8  # one start far beyond an RMS entry of 1e6
    out = {
        b: verify.stacked_reach(models, x, h0, tol=1e-10, max_steps=50, batching=b)
        for b in ("vmap", "per_draw")
    }
    for b in out:
        assert out[b]["diverged"][:, 1].all() and int(out[b]["steps"][0, 1]) == 0, b
    for key in ("converged", "diverged", "nonfinite", "steps"):
        assert torch.equal(out["vmap"][key], out["per_draw"][key]), key
