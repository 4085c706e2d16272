"""The pytest plugin and dynamo.testing, in a throwaway project run by pytester."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from typing import Any

import pytest

OK_SPEC = """
name = "additive recall"
requirements = ["reachability.converged_fraction >= 1", "input_dependence.verdict == 'strong'"]

[architecture]
d_model = 16
n_heads = 2
recall_mode = "add"

[inputs]
seq_len = 4
count = 3

[draws]
count = 2

[analysis]
geometry = false
"""

BAD_SPEC = """
name = "no recall"
requirements = ["input_dependence.verdict == 'strong'"]

[architecture]
d_model = 16
n_heads = 2
recall = "none"

[inputs]
seq_len = 4
count = 3

[draws]
count = 2

[analysis]
geometry = false
"""

TESTS = """
import pytest
import torch

import dynamo as dy
from dynamo.testing import assert_input_dependent, assert_reaches_fixed_point


@pytest.mark.dynamo(spec="specs/ok.toml")
def test_certified(dynamo_certificate):
    dynamo_certificate.assert_passed()
    assert dynamo_certificate.requirements[0].proportion == 1.0


@pytest.mark.dynamo(spec="specs/bad.toml")
def test_not_certified(dynamo_certificate):
    dynamo_certificate.assert_passed()


def test_same_spec_is_certified_once(dynamo_certify):
    assert dynamo_certify("specs/ok.toml") is dynamo_certify("specs/ok.toml")


def test_block_reaches_and_depends_on_input():
    block = dy.models.ContractiveTanh(n=6, lipschitz=0.8, seed=0)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_reaches_fixed_point(block, x)
    assert_input_dependent(block, x)


def test_chaotic_map_does_not_reach():
    chaotic = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.9))
    assert_reaches_fixed_point(chaotic, max_steps=100)


def test_fixture_needs_the_marker(dynamo_certificate):
    pass
"""


def test_plugin_is_registered_and_loads_without_torch() -> None:
    names = {e.name: e.value for e in metadata.entry_points(group="pytest11")}
    assert names.get("dynamo") == "verify.pytest_plugin"
    code = "import sys, verify.pytest_plugin; print(sorted({'torch', 'dynamo'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# Projects that run dynamo's analyses run in a subprocess: an in-process run drops the modules it
# imported (torch.func imports torch._dynamo lazily), and torch cannot register their operators
# a second time when this process imports them again.
def test_plugin_in_a_throwaway_project(pytester: pytest.Pytester) -> None:
    pytester.mkdir("specs")
    (pytester.path / "specs" / "ok.toml").write_text(textwrap.dedent(OK_SPEC))
    (pytester.path / "specs" / "bad.toml").write_text(textwrap.dedent(BAD_SPEC))
    pytester.makepyfile(test_blocks=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2, errors=1)
    out = result.stdout.str()
    # the failed certificate names its failed requirement, with the draws and values
    assert (
        "E       AssertionError: dynamo certificate 'no recall': 1 of 1 requirement(s) failed "
        "over 2 draw(s) (seeds 0, 1):\n"
        "E         FAIL input_dependence.verdict == 'strong': 0/2 draws (95% CI [0.00, 0.84]); "
        "values [none, undetermined]"
    ) in out
    # and the failure shows the test's line, not dynamo's internals
    assert "def assert_passed" not in out and "def assert_reaches_fixed_point" not in out
    # a dynamo.testing assertion says how many starts converged, and that none is a fixed point
    assert "assert_reaches_fixed_point(model): 0/4 starts converged" in out
    assert "No fixed point is reported for the starts that did not converge" in out
    assert "needs @pytest.mark.dynamo(spec='path/to/spec.toml')" in out
    # the session summary lists each certificate once
    result.stdout.fnmatch_lines(
        [
            "*dynamo certificates*",
            "additive recall: PASSED (2/2 requirements over 2 draw(s))",
            "no recall: FAILED (0/1 requirements over 2 draw(s))",
        ]
    )


def test_plugin_seeds_option_overrides_the_specs(pytester: pytest.Pytester) -> None:
    pytester.mkdir("specs")
    (pytester.path / "specs" / "ok.toml").write_text(textwrap.dedent(OK_SPEC))
    pytester.makepyfile(
        test_one="""
        import pytest

        @pytest.mark.dynamo(spec="specs/ok.toml")
        def test_certified(dynamo_certificate):
            assert [d.seed for d in dynamo_certificate.draws] == [0, 1, 2]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--dynamo-seeds", "3")
    result.assert_outcomes(passed=1)


def test_plugin_certifies_with_its_own_thread_count_and_restores_the_sessions(
    pytester: pytest.Pytester,
) -> None:
    pytester.mkdir("specs")
    (pytester.path / "specs" / "ok.toml").write_text(textwrap.dedent(OK_SPEC))
    pytester.makeconftest(
        """
        import types

        import torch
        import verify

        torch.set_num_threads(2)
        SEEN = []


        def record(spec, **kwargs):
            SEEN.append(torch.get_num_threads())
            return types.SimpleNamespace(
                name=spec.name, requirements=[], failed=[], draws=[], passed=True
            )


        verify.certify = record
        """
    )
    pytester.makepyfile(
        test_one="""
        import torch

        from conftest import SEEN


        def test_threads(dynamo_certify):
            dynamo_certify("specs/ok.toml")
            assert SEEN == [3] and torch.get_num_threads() == 2
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--dynamo-threads", "3")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dynamo-seeds", "0"], "--dynamo-seeds 0: give at least 1 initialisation draw"),
        (["--dynamo-device", "tpu"], "--dynamo-device tpu: not a device"),
        (["--dynamo-threads", "0"], "--dynamo-threads 0: give at least 1 thread"),
    ],
)
def test_plugin_rejects_bad_options_before_any_test(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_one="def test_nothing():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", *args)  # nothing lazy is imported
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m, x: _testing().assert_reaches_fixed_point(m, x, starts=0),
            "assert_reaches_fixed_point(model, inputs): starts=0 must be a positive integer",
        ),
        (
            lambda m, x: _testing().assert_reaches_fixed_point(m, x, noise=float("nan")),
            "noise=nan must be a finite positive number",
        ),
        (
            lambda m, x: _testing().assert_contractive(m, x, n_samples=0),
            "assert_contractive(model, inputs): n_samples=0 must be a positive integer",
        ),
    ],
)
def test_assertions_name_their_own_bad_arguments(call: Any, message: str) -> None:
    import torch

    import dynamo as dy

    model = dy.models.ContractiveTanh(n=4, lipschitz=0.5, seed=0)
    x = torch.zeros(2, 4, dtype=torch.float64)
    with pytest.raises(dy.errors.InvalidArgumentError) as info:
        call(model, x)
    assert message in str(info.value)


def _testing() -> Any:
    import dynamo.testing

    return dynamo.testing


def test_plugin_refuses_a_spec_without_requirements_in_one_line(
    pytester: pytest.Pytester,
) -> None:
    (pytester.path / "empty.toml").write_text("name = 'nothing'\n")
    (pytester.path / "bad.toml").write_text("[draws]\ncount = 0\n")
    pytester.makepyfile(
        test_one="""
        import pytest

        @pytest.mark.dynamo(spec="empty.toml")
        def test_empty(dynamo_certificate):
            pass

        @pytest.mark.dynamo(spec="bad.toml")
        def test_bad(dynamo_certificate):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")  # fails before dynamo runs anything
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "dynamo spec 'nothing' has no requirements: nothing to certify; add some" in out
    assert "draws.count: Input should be greater than or equal to 1" in out
    assert "def load_spec" not in out and "def _certify" not in out


#: one test that asks for the certificate of spec.toml next to it
ONE_MARKED_TEST = """
import pytest

@pytest.mark.dynamo(spec="spec.toml")
def test_block(dynamo_certificate):
    pass
"""


def test_plugin_reports_a_failing_factory_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        blocks="def make(seed):\n    raise RuntimeError('the block cannot be built')\n"
    )
    (pytester.path / "spec.toml").write_text(
        "requirements = ['reachability.converged_fraction >= 1']\n"
        "[architecture]\nfactory = 'blocks.py:make'\n"
    )
    pytester.makepyfile(test_one=ONE_MARKED_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert (
        "architecture.factory: blocks.py:make(seed=0) raised RuntimeError: the block cannot be "
        "built"
    ) in out
    assert "Traceback" not in out and "_certify.py" not in out and "def _run" not in out


def test_plugin_imports_a_module_only_when_allowed(pytester: pytest.Pytester) -> None:
    pkg = pytester.mkpydir("blocks_pkg")
    (pkg / "linear.py").write_text(
        "import torch\n\ndef make(seed):\n    return torch.nn.Linear(4, 4)\n"
    )
    (pytester.path / "spec.toml").write_text("[architecture]\nfactory = 'blocks_pkg.linear:make'\n")
    pytester.makepyfile(test_one=ONE_MARKED_TEST)
    refused = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    refused.assert_outcomes(errors=1)
    assert "the module 'blocks_pkg.linear' is not allowed" in refused.stdout.str()
    assert "--allow-module blocks_pkg" in refused.stdout.str()
    # allowed, the spec loads (and, having no requirements, is refused for that alone)
    allowed = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--dynamo-allow-module", "blocks_pkg"
    )
    allowed.assert_outcomes(errors=1)
    assert "has no requirements: nothing to certify" in allowed.stdout.str()
    assert "not allowed" not in allowed.stdout.str()
