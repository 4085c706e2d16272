"""Lipschitz rules as a registry (issue 14): a user registers a rule for their own layer type
from outside the package; the bound is certified only when every rule it rests on is proven."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import dynamo as dy
from dynamo import LayerBound, Trust

F64 = torch.float64


class ScaledTanh(nn.Module):
    """``h ↦ a·tanh(h)``: Lipschitz ``|a|``, and ``|a tanh(t)| ≤ |a||t|``."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = a

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.a * torch.tanh(h)


class Residual(nn.Module):
    """``h ↦ h + f(h)``: Lipschitz ``1 + L(f)``."""

    def __init__(self, f: nn.Module) -> None:
        super().__init__()
        self.f = f

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.f(h)


def scaled_tanh_rule(module: ScaledTanh, norms: tuple[float, float], ctx: dy.RuleContext) -> Any:
    a = abs(module.a)
    return LayerBound(a, (0.0, a * norms[1]), "|a| · sup |tanh′|")


def residual_rule(module: Residual, norms: tuple[float, float], ctx: dy.RuleContext) -> Any:
    inner = ctx.bound(module.f, norms)
    return LayerBound(1.0 + inner.factor, (0.0, norms[1] + inner.norms[1]), "1 + L(f)")


@pytest.fixture
def rules() -> Iterator[None]:
    dy.register_lipschitz_rule(ScaledTanh, scaled_tanh_rule, claims=("R2",), trust=Trust.PROVEN)
    dy.register_lipschitz_rule(Residual, residual_rule, claims=("R3",), trust=Trust.PROVEN)
    yield
    dy.unregister_lipschitz_rule(ScaledTanh)
    dy.unregister_lipschitz_rule(Residual)


def _block(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    block = nn.Sequential(nn.Linear(5, 5), ScaledTanh(0.4), Residual(nn.Linear(5, 5)))
    return block.double()


def test_a_registered_rule_makes_a_users_layer_boundable_and_sound(rules: None) -> None:
    block = _block()
    bound = dy.lipschitz_upper_bound(block, dy.Domain.ball(3.0))
    assert bound.certified and bound.trust is Trust.PROVEN
    assert [s.rule for s in bound.steps] == ["linear", "ScaledTanh", "Residual"]
    assert bound.steps[2].claims == "R3, R1, R8"  # its own claim, then its child's
    w0, w2 = block[0].weight.detach(), block[2].f.weight.detach()
    expected = (
        float(torch.linalg.matrix_norm(w0, 2)) * 0.4 * (1 + float(torch.linalg.matrix_norm(w2, 2)))
    )
    assert bound.value == pytest.approx(expected, rel=1e-12)
    assert bound.value >= expected  # rounded outward, never below the exact product
    # sound: never below the largest local ‖J‖₂ an ascent finds on the domain
    system = dy.LoopedSystem.from_module(block, state_shape=(5,), dtype=F64)
    starts = dy.Domain.ball(3.0).sample(system, 32, seed=0)
    low = dy.lipschitz_lower_bound(system, starts, method="ascent", domain=dy.Domain.ball(3.0))
    assert 0 < low.value <= bound.value


def test_a_rule_declared_estimated_leaves_the_bound_uncertified(rules: None) -> None:
    dy.register_lipschitz_rule(
        ScaledTanh, scaled_tanh_rule, claims=("my notes",), trust="estimated", replace=True
    )
    block = nn.Sequential(ScaledTanh(0.5)).double()
    bound = dy.lipschitz_upper_bound(block, dy.Domain())
    assert bound.value == pytest.approx(0.5) and not bound.certified
    assert bound.trust is Trust.ESTIMATED and bound.steps[0].trust is Trust.ESTIMATED
    assert "(estimated," in str(bound)
    # a composite whose child rests on it is no better
    outer = Residual(ScaledTanh(0.5)).double()
    assert dy.lipschitz_upper_bound(outer, dy.Domain.ball(1.0)).trust is Trust.ESTIMATED
    # and a contraction check cannot turn it into a proof
    system = dy.LoopedSystem.from_module(block, state_shape=(3,), dtype=F64)
    v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    assert v.verdict is not dy.Verdict.PROVEN
    first = v.evidence[0]
    assert first.kind == "Lipschitz upper bound from rules not all proven"
    assert not first.certified and first.trust is Trust.ESTIMATED
    assert "[estimated] Lipschitz upper bound" in str(v)


def test_a_proven_registered_rule_can_prove_contraction(rules: None) -> None:
    block = nn.Sequential(ScaledTanh(0.5)).double()
    system = dy.LoopedSystem.from_module(block, state_shape=(3,), dtype=F64)
    v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    assert v.verdict is dy.Verdict.PROVEN and v.trust is Trust.PROVEN


def test_a_module_without_a_rule_points_at_registration() -> None:
    with pytest.raises(dy.errors.InvalidArgumentError, match="register_lipschitz_rule"):
        dy.lipschitz_upper_bound(ScaledTanh(0.5), dy.Domain())


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((nn.Linear, scaled_tanh_rule), {"claims": (), "trust": "proven"}, "cannot be replaced"),
        ((int, scaled_tanh_rule), {"claims": (), "trust": "proven"}, "nn.Module subclass"),
        ((ScaledTanh, 3), {"claims": (), "trust": "proven"}, "rule must be callable"),
        ((ScaledTanh, scaled_tanh_rule), {"claims": (), "trust": "sure"}, "trust must be one of"),
        ((ScaledTanh, scaled_tanh_rule), {"claims": "R2", "trust": "proven"}, "sequence of str"),
    ],
)
def test_a_bad_registration_is_refused(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(dy.errors.InvalidArgumentError, match=match):
        dy.register_lipschitz_rule(*args, **kwargs)
    assert ScaledTanh not in dy.lipschitz_rules()


def test_a_second_registration_needs_replace(rules: None) -> None:
    with pytest.raises(dy.errors.InvalidArgumentError, match="replace=True"):
        dy.register_lipschitz_rule(ScaledTanh, scaled_tanh_rule, claims=(), trust="proven")
    with pytest.raises(dy.errors.InvalidArgumentError, match="own rules cannot be removed"):
        dy.unregister_lipschitz_rule(nn.Tanh)


@pytest.mark.parametrize(
    ("returns", "match"),
    [
        (2.0, "returned float, not a dynamo.LayerBound"),
        (LayerBound(-1.0, (0.0, 1.0)), "a Lipschitz factor is a number >= 0"),
        (LayerBound(math.nan, (0.0, 1.0)), "a Lipschitz factor is a number >= 0"),
        (LayerBound(1.0, (2.0, 1.0)), "no interval of norms"),
        (LayerBound(1.0, (0.0,)), "must be a pair"),
    ],
)
def test_a_rule_that_returns_nonsense_is_named(returns: object, match: str) -> None:
    dy.register_lipschitz_rule(ScaledTanh, lambda m, n, c: returns, claims=(), trust="proven")
    try:
        with pytest.raises(dy.errors.InvalidArgumentError, match=match) as info:
            dy.lipschitz_upper_bound(nn.Sequential(ScaledTanh(1.0)), dy.Domain())
        assert "the rule for ScaledTanh at '0'" in str(info.value)
    finally:
        dy.unregister_lipschitz_rule(ScaledTanh)


def test_the_builtin_rules_cite_their_claims() -> None:
    table = dy.lipschitz_rules()
    assert table[nn.Linear] == ("linear", ("R1",), Trust.PROVEN)
    assert table[nn.RMSNorm][1] == ("R5",) and table[nn.LayerNorm][1] == ("R6",)
    assert all(trust is Trust.PROVEN for _, _, trust in table.values())
    f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0)
    assert dy.lipschitz_upper_bound(f, dy.Domain()).steps[0].claims == "R1, R2, R8"


def test_only_one_rule_file_knows_the_reference_models() -> None:
    rules = Path(dy.__file__).parent / "_lipschitz" / "rules"
    imports = re.compile(r"^\s*(from \.+models|import dynamo\.models|from dynamo\.models)", re.M)
    knowing = sorted(p.name for p in rules.glob("*.py") if imports.search(p.read_text()))
    assert knowing == ["reference.py"]


def test_a_rule_cannot_launder_an_unproven_rule_through_the_public_verb() -> None:
    """A rule declared PROVEN that calls lipschitz_upper_bound (not ctx.bound) on a part resting
    on an ESTIMATED rule still rests on it."""

    def wrapping_rule(module: Residual, norms: tuple[float, float], ctx: dy.RuleContext) -> Any:
        inner = dy.lipschitz_upper_bound(module.f, dy.Domain.ball(norms[1]))
        return LayerBound(inner.value, (0.0, math.inf), "via the public verb")

    dy.register_lipschitz_rule(ScaledTanh, scaled_tanh_rule, claims=(), trust="estimated")
    dy.register_lipschitz_rule(Residual, wrapping_rule, claims=(), trust="proven")
    try:
        bound = dy.lipschitz_upper_bound(Residual(ScaledTanh(0.5)), dy.Domain.ball(1.0))
        assert not bound.certified and bound.trust is Trust.ESTIMATED
        assert "[rule estimated, not proven]" in str(bound)
    finally:
        dy.unregister_lipschitz_rule(ScaledTanh)
        dy.unregister_lipschitz_rule(Residual)


def test_a_rule_that_raises_is_named_and_is_no_bound() -> None:
    def broken(module: ScaledTanh, norms: tuple[float, float], ctx: dy.RuleContext) -> Any:
        return 1 / 0

    dy.register_lipschitz_rule(ScaledTanh, broken, claims=(), trust="proven")
    try:
        with pytest.raises(
            dy.errors.InvalidArgumentError,
            match=r"the rule for ScaledTanh at '<root>' raised ZeroDivisionError",
        ):
            dy.lipschitz_upper_bound(ScaledTanh(0.5), dy.Domain())
        # a contraction check records it as no bound at all, never as a certified one
        system = dy.LoopedSystem.from_module(ScaledTanh(0.5), state_shape=(3,), dtype=F64)
        v = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
        first = v.evidence[0]
        assert first.kind == "no Lipschitz upper bound" and first.value is None
        assert not first.certified and first.to_dict()["trust"] == "estimated"
    finally:
        dy.unregister_lipschitz_rule(ScaledTanh)


def test_sequential_takes_no_rule_of_its_own() -> None:
    with pytest.raises(dy.errors.InvalidArgumentError, match="composed from its children"):
        dy.register_lipschitz_rule(nn.Sequential, residual_rule, claims=(), trust="estimated")


def test_the_certificate_has_no_certified_bound_on_an_unproven_rule(
    tmp_path: Path,
) -> None:
    """lipschitz.upper_bound is a certified bound: null, with the reason, when a rule of the
    block is only estimated (a factory block made of a registered layer)."""
    import verify

    (tmp_path / "toyblock.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Half(nn.Module):\n"
        "    def forward(self, h, x):\n"
        "        return 0.5 * torch.tanh(h) + 0.1 * x\n"
        "def make(seed=0):\n"
        "    return Half()\n"
    )
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(
        'requirements = ["lipschitz.upper_bound < 1"]\n'
        "[architecture]\nfactory = 'toyblock:make'\nd_model = 4\n"
        "[inputs]\nseq_len = 2\ncount = 2\n[draws]\ncount = 1\n"
        "[analysis]\nstarts_per_input = 1\nlipschitz = true\ninput_dependence = false\n"
        "geometry = false\ndomain = {x_max = 10.0}\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        import toyblock  # type: ignore[import-not-found]

        def half_rule(module: Any, norms: tuple[float, float], ctx: dy.RuleContext) -> Any:
            return LayerBound(0.5, (0.0, 0.5 * norms[1] + 0.1 * 10.0), "0.5 sup|tanh'|")

        dy.register_lipschitz_rule(toyblock.Half, half_rule, claims=(), trust="estimated")
        try:
            spec = verify.load_spec(spec_file, allow_modules=["toyblock"])
            cert = verify.certify(spec, timestamp=False)
        finally:
            dy.unregister_lipschitz_rule(toyblock.Half)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("toyblock", None)
    draw = cert.draws[0]
    assert draw.metrics["lipschitz.upper_bound"] is None
    assert "not every rule applied is proven" in draw.notes["lipschitz.upper_bound"]
    assert draw.trust["lipschitz.upper_bound"] == "estimated"
    assert not cert.passed and cert.requirements[0].trust == "estimated"
