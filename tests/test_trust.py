"""One trust vocabulary (issue 14): every result says PROVEN, CHECKED or ESTIMATED, the word
"certified" goes only with PROVEN, and a certificate records each value's trust with the value;
and certificate metrics are a registry a user extends from outside the package."""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import pytest
import torch

import dynamo as dy
import verify
from dynamo import Trust

F64 = torch.float64

SMALL = """
[architecture]
d_model = 8
n_heads = 2
recall = "outer"
recall_mode = "add"
norm = "outer"

[inputs]
seq_len = 3
count = 2

[draws]
count = 2

[analysis]
starts_per_input = 2
max_steps = 300
input_dependence = false
geometry = false
"""


def _spec(tmp_path: Path, extra: str, analysis: str = "") -> verify.Spec:
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(extra + SMALL) + analysis)
    return verify.load_spec(path)


# ---------------------------------------------------------------------- the vocabulary
def test_trust_orders_from_proven_to_estimated_and_reads_as_a_string() -> None:
    assert [t.value for t in Trust] == ["proven", "checked", "estimated"]
    assert Trust.weakest([Trust.PROVEN, Trust.ESTIMATED, Trust.CHECKED]) is Trust.ESTIMATED
    assert Trust.weakest(["proven", "checked"]) is Trust.CHECKED
    assert Trust.weakest([Trust.PROVEN]) is Trust.PROVEN
    assert Trust.weakest([]) is Trust.ESTIMATED  # nothing shown: no claim to more
    # only PROVEN is printed as certified
    assert [t.word for t in Trust] == ["certified", "checked", "estimated"]
    assert Trust("checked") is Trust.CHECKED and Trust.PROVEN == "proven"
    with pytest.raises(ValueError, match="is not a valid Trust"):
        Trust("certified")  # a word, not a trust


def test_every_result_carries_its_trust_and_writes_it() -> None:
    f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
    xs = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    system = dy.LoopedSystem.from_module(f, xs)

    up = dy.lipschitz_upper_bound(f, dy.Domain.ball(2.0, x_max=3.0))
    low = dy.lipschitz_lower_bound(system, torch.zeros(2, 3, dtype=F64))
    assert (up.trust, low.trust) == (Trust.PROVEN, Trust.ESTIMATED)
    assert (up.to_dict()["trust"], low.to_dict()["trust"]) == ("proven", "estimated")
    assert "(certified," in str(up) and "(estimated," in str(low)

    found = dy.find_fixed_points(system, 4)
    assert found.trust is Trust.ESTIMATED and found.to_dict()["trust"] == "estimated"
    # each point: proven (Krawczyk, on by default for small states) with its stability class
    assert all(p.trust is Trust.PROVEN for p in found.points)
    assert all(d["trust"] == "proven" for d in found.to_dict()["points"])
    # without the proof, a float test at a computed iterate (dense spectrum): checked, not proven
    unproven = dy.find_fixed_points(system, 4, prove=False)
    assert all(p.trust is Trust.CHECKED and p.proof is None for p in unproven.points)
    assert all(d["trust"] == "checked" for d in unproven.to_dict()["points"])
    krylov = dy.find_fixed_points(system, 4, dense_limit=1, k_eigenvalues=2, prove=False)
    assert all(p.trust is Trust.ESTIMATED for p in krylov.points)  # Arnoldi's Ritz values
    assert found.unseen.trust is Trust.ESTIMATED
    assert found.unseen.to_dict()["trust"] == "estimated"

    est = dy.spectral_norm(system, torch.zeros(2, 3, dtype=F64))
    assert est.trust is Trust.ESTIMATED and est.to_dict()["trust"] == "estimated"

    axes = dy.stability_axes(system, n_starts=2, basin_samples=2, contraction=False)
    assert axes.geometry is not None
    for result in (axes.reachability, axes.input_dependence, axes.geometry):
        assert result.trust is Trust.ESTIMATED and result.to_dict()["trust"] == "estimated"

    v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    # the local verdict rests on the proofs at the points found (small state: proven by default)
    assert (v.trust, v.local_trust) == (Trust.PROVEN, Trust.PROVEN)
    d = v.to_dict()
    assert (d["trust"], d["local_trust"]) == ("proven", "proven")


def test_verdict_trust_follows_what_decided_it() -> None:
    henon = dy.LoopedSystem.from_module(dy.models.Henon())
    v = dy.check_contraction(henon, dy.Domain.ball(1.0), n_samples=4, ascent_steps=2, n_starts=2)
    assert str(v.verdict) == "REFUTED" and v.trust is Trust.CHECKED  # a re-checkable witness
    assert dy.Verdict.SUPPORTED.trust is Trust.ESTIMATED
    assert dy.Verdict.UNDETERMINED.trust is Trust.ESTIMATED


def test_the_word_certified_is_printed_only_for_proven_evidence() -> None:
    f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
    system = dy.LoopedSystem.from_module(f, torch.ones(1, 3, dtype=F64))
    v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    tagged = re.findall(r"^\s*\[(\w+)\] (.*)$", str(v), flags=re.M)
    assert len(tagged) == len(v.evidence)
    for (tag, _), e in zip(tagged, v.evidence, strict=True):
        if e.value is None:
            assert tag == "none"
        else:
            assert tag == Trust(e.trust).word
            assert (tag == "certified") == (e.trust is Trust.PROVEN) == e.certified
    with pytest.raises(dy.errors.InvalidArgumentError, match="only proven evidence"):
        dy.Evidence("a float test", "x", 0.5, certified=True, trust=Trust.CHECKED)
    with pytest.raises(dy.errors.InvalidArgumentError, match="trust must be one of"):
        dy.Evidence("k", "x", 0.5, certified=False, trust="certified")


# ---------------------------------------------------------------------- certificates
def test_a_certificate_records_each_values_trust(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        "requirements = [\"contraction.local_verdict != 'REFUTED'\", "
        '"reachability.converged_fraction >= 0.5"]\n',
        analysis="contraction = true\n",
    )
    cert = verify.certify(spec, timestamp=False)
    for draw in cert.draws:
        assert set(draw.trust) == set(draw.metrics)
        assert draw.trust["reachability.converged_fraction"] == "estimated"
        local = draw.metrics["contraction.local_verdict"]
        assert draw.trust["contraction.local_verdict"] == (
            "proven"
            if local == "PROVEN"
            else "checked"
            if local in ("SUPPORTED", "REFUTED")
            else "estimated"
        )
        verdict = draw.metrics["contraction.verdict"]
        assert draw.trust["contraction.verdict"] == {"PROVEN": "proven", "REFUTED": "checked"}.get(
            verdict, "estimated"
        )
    for r in cert.requirements:
        assert r.trust == Trust.weakest(d.trust[r.metric] for d in cert.draws).value
    # the trust survives the JSON round trip, and a report reads it from there
    back = verify.Certificate.model_validate_json(cert.to_json())
    assert back.draws[0].trust == cert.draws[0].trust
    assert back.requirements[1].trust == "estimated"


def test_an_old_certificate_without_trust_still_reads() -> None:
    cert = verify.Certificate.model_validate_json(verify._report._EXAMPLE)
    assert cert.requirements[0].trust == "estimated" and cert.draws[0].trust == {}
    assert "sampled estimate" in cert.to_markdown()


# ---------------------------------------------------------------------- the metric registry
def _max_weight(ctx: verify.DrawContext) -> float:
    module = ctx.system.module
    return max(float(p.detach().abs().max()) for p in module.parameters())


def _has_converged(ctx: verify.DrawContext) -> str:
    return "yes" if ctx.metrics["reachability.converged"] > 0 else "no"


def test_a_metric_registered_from_outside_is_computed_per_draw_with_its_trust(
    tmp_path: Path,
) -> None:
    weight = verify.Metric(
        "toy.max_weight",
        "number",
        "largest |weight| of the draw",
        trust=Trust.CHECKED,
        range=(0.0, 1e6),
        compute=_max_weight,
    )
    seen = verify.Metric(
        "toy.reached",
        "string",
        "whether any start converged",
        values=("yes", "no"),
        compute=_has_converged,
    )
    verify.register_metric(weight)
    verify.register_metric(seen)
    try:
        assert "toy.max_weight" in verify.METRICS and verify.VERDICT_VALUES["toy.reached"]
        spec = _spec(
            tmp_path, 'requirements = ["toy.max_weight < 100", "toy.reached == \'yes\'"]\n'
        )
        cert = verify.certify(spec, timestamp=False)
        assert cert.passed
        for seed, draw in zip(cert.environment.seeds, cert.draws, strict=True):
            model = verify.build_model(spec, seed)
            expected = max(float(p.detach().abs().max()) for p in model.parameters())
            assert draw.metrics["toy.max_weight"] == pytest.approx(expected, rel=1e-6)
            assert draw.trust["toy.max_weight"] == "checked"
            assert draw.metrics["toy.reached"] == "yes"
            assert draw.trust["toy.reached"] == "estimated"
        assert [r.trust for r in cert.requirements] == ["checked", "estimated"]
        # the declaration is enforced where requirements are read
        with pytest.raises(verify.SpecError, match="lies in"):
            _spec(tmp_path, 'requirements = ["toy.max_weight < -1"]\n')
        with pytest.raises(verify.SpecError, match="never 'maybe'"):
            _spec(tmp_path, "requirements = [\"toy.reached == 'maybe'\"]\n")
    finally:
        verify.unregister_metric("toy.max_weight")
        verify.unregister_metric("toy.reached")
    assert "toy.max_weight" not in verify.METRICS
    with pytest.raises(verify.SpecError, match=r"unknown metric 'toy\.max_weight'"):
        _spec(tmp_path, 'requirements = ["toy.max_weight < 100"]\n')


@pytest.mark.parametrize(
    ("returns", "match"),
    [
        (RuntimeError("boom"), r"metric toy\.bad: its compute function raised RuntimeError: boom"),
        (SystemExit(0), r"metric toy\.bad: its compute function called sys\.exit\(0\)"),
        ("text", r"metric toy\.bad: compute returned str; a number metric"),
        (True, r"metric toy\.bad: compute returned bool"),
    ],
)
def test_a_failing_registered_metric_names_itself(
    tmp_path: Path, returns: object, match: str
) -> None:
    def compute(ctx: verify.DrawContext) -> object:
        if isinstance(returns, BaseException):
            raise returns
        return returns

    verify.register_metric(verify.Metric("toy.bad", "number", "fails", compute=compute))
    try:
        spec = _spec(tmp_path, 'requirements = ["toy.bad < 1"]\n')
        with pytest.raises(verify.SpecError, match=match):
            verify.certify(spec, timestamp=False)
    finally:
        verify.unregister_metric("toy.bad")


@pytest.mark.parametrize(
    ("metric", "match"),
    [
        (verify.Metric("toy", "number", "", compute=_max_weight), "must read 'family.quantity'"),
        (verify.Metric("Toy.x", "number", "", compute=_max_weight), "lower case"),
        (verify.Metric("toy.x", "number", ""), "has no compute function"),
        (verify.Metric("toy.x", "string", "", compute=_has_converged), "list its values"),
        (
            verify.Metric("geometry.spectral_radius", "number", "", compute=_max_weight),
            "is a built-in metric",
        ),
    ],
)
def test_a_bad_registration_is_refused(metric: verify.Metric, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        verify.register_metric(metric)


def test_a_second_registration_needs_replace() -> None:
    m = verify.Metric("toy.twice", "number", "", compute=_max_weight)
    verify.register_metric(m)
    try:
        with pytest.raises(ValueError, match="replace=True"):
            verify.register_metric(m)
        assert verify.register_metric(m, replace=True) is m
    finally:
        verify.unregister_metric("toy.twice")
    with pytest.raises(KeyError, match="unknown metric"):
        verify.unregister_metric("toy.twice")


def test_the_builtin_metrics_declare_what_the_spec_checks_used_to_hold() -> None:
    # what the spec checks and the reports print, stated independently of the registry
    assert verify.VERDICT_VALUES == {
        "input_dependence.verdict": ("none", "weak", "strong", "partial", "undetermined"),
        "contraction.verdict": ("PROVEN", "SUPPORTED", "REFUTED", "UNDETERMINED"),
        "contraction.local_verdict": ("PROVEN", "SUPPORTED", "REFUTED", "UNDETERMINED"),
    }
    ranged = {m: verify.metric(m).range for m in verify.METRICS if verify.metric(m).range}
    assert ranged == {
        "reachability.converged_fraction": (0.0, 1.0),
        "reachability.path_independence": (-1.0, 1.0),
        "input_dependence.multistable_fraction": (0.0, 1.0),
        "input_dependence.max_attractors": (0.0, math.inf),
        "proofs.proven_fraction": (0.0, 1.0),
        "task.accuracy": (0.0, 1.0),
        "task.sequence_accuracy": (0.0, 1.0),
    }
    assert verify.BASIS == {
        "proofs.proven_fraction": "count of rigorous proofs",
        "proofs.proof_radius_min": "rigorous proof",
        "proofs.basin_radius_min": "certified basin",
        "lipschitz.upper_bound": "certified bound",
    }
    assert [m for m in verify.METRICS if verify.metric(m).trust is Trust.PROVEN] == [
        "proofs.proven_fraction",
        "proofs.proof_radius_min",
        "proofs.basin_radius_min",
        "lipschitz.upper_bound",
    ]
    # no value, no trust: a missing certified bound is not certified
    assert verify.metric("lipschitz.upper_bound").trust_of(None) is Trust.ESTIMATED


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trust": "sure"}, "trust must be one of proven, checked, estimated"),
        ({"compute": "f"}, "compute must be a function"),
        ({"range": (1.0, 0.0)}, r"range is \(low, high\) with low < high"),
        ({"range": "ab"}, "range is"),
        ({"values": ("a",)}, "for a 'string' metric only"),
        ({"type": "int"}, "type must be 'number' or 'string'"),
        ({"description": 3}, "description must be a string"),
    ],
)
def test_a_bad_metric_declaration_is_refused_where_it_is_made(kwargs: dict, match: str) -> None:
    args = {"name": "toy.x", "type": "number", "description": "x", "compute": _max_weight}
    with pytest.raises(dy.errors.InvalidArgumentError, match=match):
        verify.Metric(**{**args, **kwargs})


def test_a_metric_trust_may_be_given_as_a_word_and_a_trust_function_is_checked() -> None:
    assert verify.Metric("toy.x", "number", "", trust="checked").trust is Trust.CHECKED
    odd = verify.Metric("toy.y", "string", "", trust=lambda v: "sure", values=("a",))
    with pytest.raises(dy.errors.InvalidArgumentError, match="its trust function returned 'sure'"):
        odd.trust_of("a")


# ---------------------------------------------------------------------- the renderer registry
def _one_line(cert: verify.Certificate) -> str:
    trusts = ",".join(r.trust for r in cert.requirements)
    return f"{cert.name}: {'PASS' if cert.passed else 'FAIL'} [{trusts}]\n"


def test_a_renderer_registered_from_outside_is_written_by_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from verify.cli import main

    verify.register_renderer(verify.Renderer("oneline", "one-line", _one_line, ".txt"))
    try:
        assert [r.name for r in verify.renderers()][:4] == ["json", "markdown", "junit", "html"]
        spec = tmp_path / "spec.toml"
        spec.write_text(
            textwrap.dedent('requirements = ["reachability.converged_fraction >= 0.5"]\n' + SMALL)
        )
        line, md = tmp_path / "r.txt", tmp_path / "r.md"
        args = ["certify", str(spec), "--report", f"oneline={line}", "--report", f"markdown={md}"]
        assert main(args) == 0
        assert line.read_text() == "spec: PASS [estimated]\n"
        assert md.read_text().startswith("## ✅ dynamo certify: spec — PASSED")
        out = capsys.readouterr().out
        assert f"wrote oneline report: {line}" in out
        # the API renders the same text
        cert = verify.certify(verify.load_spec(spec), timestamp=False)
        assert verify.render(cert, "oneline") == line.read_text()

        # a renderer that fails writes nothing, and says which one failed
        def broken(cert: verify.Certificate) -> str:
            raise RuntimeError("no ink")

        verify.register_renderer(verify.Renderer("oneline", "one-line", broken), replace=True)
        other = tmp_path / "other.md"
        assert main([*args[:3], f"oneline={tmp_path / 'x.txt'}", "--markdown", str(other)]) == 2
        err = capsys.readouterr().err
        assert "the one-line renderer raised RuntimeError: no ink (no report was written)" in err
        assert not other.exists() and not (tmp_path / "x.txt").exists()
    finally:
        verify.unregister_renderer("oneline")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("nosuch=out.txt", "unknown report format; known formats: json, markdown, junit, html"),
        ("markdown", "write FORMAT=PATH"),
        ("=out.txt", "write FORMAT=PATH"),
    ],
)
def test_a_bad_report_option_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, message: str
) -> None:
    from verify.cli import main

    assert main(["certify", "--report", entry]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_two_reports_to_one_file_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from verify.cli import main

    out = tmp_path / "r.json"
    assert main(["certify", "--json", str(out), "--report", f"json={out}"]) == 2
    err = capsys.readouterr().err
    assert f"--report json={out}: --json writes there too" in err
    assert main(["certify", "--report", f"markdown={out}", "--report", f"json={out}"]) == 2
    err = capsys.readouterr().err
    assert f"--report json={out}: --report markdown writes there too" in err


def test_a_bad_renderer_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="lower-case word"):
        verify.register_renderer(verify.Renderer("One Line", "x", _one_line))
    with pytest.raises(ValueError, match="is a built-in format"):
        verify.register_renderer(verify.Renderer("html", "x", _one_line))
    with pytest.raises(KeyError, match="unknown report format"):
        verify.renderer("nosuch")


def test_render_checks_what_it_is_given() -> None:
    cert = verify.Certificate.model_validate_json(verify._report._EXAMPLE)
    with pytest.raises(TypeError, match=r"render\(cert, 'json'\): cert must be a verify.Cert"):
        verify.render("not a certificate", "json")  # type: ignore[arg-type]
    verify.register_renderer(verify.Renderer("bytes", "bytes", lambda c: b"x"))  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(TypeError, match="the bytes renderer returned bytes, not text"):
            verify.render(cert, "bytes")
    finally:
        verify.unregister_renderer("bytes")
    with pytest.raises(dy.errors.InvalidArgumentError, match="title and suffix must be strings"):
        verify.register_renderer(verify.Renderer("t", 5, _one_line))  # type: ignore[arg-type]


def test_a_broken_installed_renderer_is_named_and_leaves_the_others_working(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata as md

    from verify import _render

    class Broken:
        name, value, group = "shiny", "shiny_pkg:renderer", "dynamo.renderers"

        def load(self) -> object:
            raise ImportError("No module named 'shiny_pkg'")

    monkeypatch.setattr(md, "entry_points", lambda group: [Broken()])
    monkeypatch.setattr(_render, "_loaded_entry_points", False)
    monkeypatch.setattr(_render, "_BROKEN", {})
    assert [r.name for r in verify.renderers()] == ["json", "markdown", "junit", "html"]
    with pytest.raises(KeyError, match=r"shiny_pkg:renderer.*failed to load: ImportError"):
        verify.renderer("shiny")
    cert = verify.Certificate.model_validate_json(verify._report._EXAMPLE)
    assert verify.render(cert, "json").startswith("{")
