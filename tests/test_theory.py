"""Claims: every proof reaches its formal statement, every false variant is rejected, the engine
refuses steps that check nothing, the rules' claims read the code, and the numeric counterparts
hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sympy as sp
import torch

import dynamo as dy
import theory
from theory import LEMMAS, Derivation, Pred, ProofKind, same_fact
from theory._core import code_scaled
from verify.cli import main

NAMES = [c.name for c in theory.registry()]
VARIANTS = [(c.name, i) for c in theory.registry() for i in range(len(c.variants))]


def test_every_claim_is_registered_with_a_goal_and_false_variants() -> None:
    assert [f"C{i}" for i in range(1, 15)] + [f"R{i}" for i in range(1, 18)] == NAMES
    for c in theory.registry():
        assert c.goal, c.name
        assert c.variants, c.name


@pytest.mark.parametrize("name", NAMES)
def test_proof_reaches_its_statement(name: str) -> None:
    proof = theory.get(name).prove()
    assert proof.ok, str(proof)
    assert all(proof.reached)
    assert all(s.expression and s.result for s in proof.steps)


@pytest.mark.parametrize(("name", "index"), VARIANTS)
def test_each_false_variant_is_rejected(name: str, index: int) -> None:
    c = theory.get(name)
    proof = c.prove_variant(c.variants[index])
    assert not proof.ok, f"{name}: accepted the false variant {c.variants[index].description!r}"
    assert proof.failed()


def _stronger(fact: object) -> object:
    """A false, stronger version of a goal fact."""
    if isinstance(fact, Pred):
        return Pred(fact.name + "_not", fact.args)
    if isinstance(fact, sp.Equality):
        rhs = fact.rhs
        shift = sp.ones(*rhs.shape) if isinstance(rhs, sp.MatrixBase) else sp.Integer(1)
        return sp.Eq(fact.lhs, rhs + shift, evaluate=False)
    if isinstance(fact, (sp.LessThan, sp.StrictLessThan)):
        return sp.Lt(fact.lhs, fact.rhs / 2, evaluate=False)
    if isinstance(fact, (sp.GreaterThan, sp.StrictGreaterThan)):
        return sp.Gt(fact.lhs, 2 * fact.rhs + 1, evaluate=False)
    raise TypeError(type(fact))


@pytest.mark.parametrize("name", NAMES)
def test_a_statement_edited_to_a_false_one_fails(name: str) -> None:
    c = theory.get(name)
    for i in range(len(c.goal)):
        goal = list(c.goal)
        goal[i] = _stronger(goal[i])
        assert not c.prove(goal=goal).ok, (name, i, goal[i])


#: the false statements issue 15 lists: each must be a registered variant that is rejected
ISSUE_VARIANTS = {
    "C5": "4899",
    "C11": "tanh",
    "C12": "necessity",
    "C14": "half",
    "R5": "100",
    "R6": "100",
    "R7": "100",
    "R8": "100",
}


@pytest.mark.parametrize(("name", "keyword"), sorted(ISSUE_VARIANTS.items()))
def test_the_false_statements_of_the_issue_are_registered_variants(name: str, keyword: str) -> None:
    """Each is a registered variant, so test_each_false_variant_is_rejected runs it (once)."""
    c = theory.get(name)
    matching = [v for v in c.variants if keyword in v.description]
    assert matching, (
        f"{name}: no variant mentions {keyword!r}: {[v.description for v in c.variants]}"
    )


# ------------------------------------------------------------------ the engine
def test_the_engine_refuses_a_step_that_compares_an_expression_with_itself() -> None:
    x, y = sp.symbols("x y", positive=True)
    d = Derivation("t")
    d.identity(x * (y + 1), x * (y + 1), "same")
    d.identity(x * (y * 1), (x * y) ** 1, "the same once sympy evaluates")
    d.inequality(x + y, y + x, "same inequality")
    assert [s.ok for s in d.steps] == [False, False, False]
    assert all("same expression" in s.result for s in d.steps)
    assert not d.known


def test_a_lemma_applies_only_where_its_hypotheses_hold() -> None:
    f, g = sp.symbols("f g")
    a, b = sp.symbols("a b", positive=True)
    composition = LEMMAS["lipschitz composition"]
    d = Derivation("t", [sp.Le(theory.Lip(f), a)])
    d.lemma(composition, f=f, g=g, L_f=a, L_g=b)
    assert not d.steps[-1].ok and "Lip(g) <= b" in d.steps[-1].result
    d2 = Derivation("t", [sp.Le(theory.Lip(f), a), sp.Le(theory.Lip(g), b)])
    fact = d2.lemma(composition, f=f, g=g, L_f=a, L_g=b)
    assert d2.steps[-1].ok and d2.holds(fact)
    with pytest.raises(KeyError, match="no variable"):
        d2.lemma(composition, f=f, g=g, L_f=a, L_g=b, M=a)


def test_a_lemma_variables_declared_sign_is_checked_on_the_value_given() -> None:
    """A hypothesis ``q >= 0`` about a variable declared nonnegative is evaluated to True when
    the lemma is registered: the declared sign itself must then hold for the value applied."""
    from theory._logic import lemma

    q = sp.Symbol("q_demo", nonnegative=True)
    c = sp.Symbol("c_demo")
    geometric = lemma(
        "test: geometric tail",
        "for 0 <= q < 1, the tail of the geometric series",
        ("test",),
        (q, c),
        (sp.Ge(q, 0), sp.Lt(q, 1)),
        (sp.Eq(sp.Symbol("tail_demo"), c / (1 - q)),),
    )
    try:
        assert geometric.hypotheses[0] is sp.true  # what made the written hypothesis empty
        d = Derivation("t", [sp.Lt(-2, 1)])
        d.lemma(geometric, q_demo=-2, c_demo=1)
        assert not d.steps[-1].ok and "-2 is nonnegative" in d.steps[-1].result
        half = sp.Rational(1, 2)
        d.lemma(geometric, q_demo=half, c_demo=1)
        assert d.steps[-1].ok
    finally:
        del LEMMAS["test: geometric tail"]


def test_for_all_only_over_a_variable_no_assumption_mentions() -> None:
    t = sp.Symbol("t", real=True)
    d = Derivation("t")
    square = d.inequality(0, t**2, "a square")
    assert d.generalize(square, t, "every t") == Pred("forall", (t, square))
    assert d.steps[-1].ok
    bound = Derivation("t", [sp.Le(t, 1)])
    fact = bound.inequality(0, t**2, "a square")
    bound.generalize(fact, t, "every t")
    assert not bound.steps[-1].ok and "not generic" in bound.steps[-1].result
    unknown = Derivation("t")
    unknown.generalize(sp.Le(t, 1), t, "never shown")
    assert not unknown.steps[-1].ok
    one = Derivation("t", [sp.Le(sp.Integer(1), 2)])
    one.generalize(sp.Le(sp.Integer(1), 2), sp.Integer(1), "over a number")
    assert not one.steps[-1].ok and "not a variable" in one.steps[-1].result


def test_chains_cases_and_inequalities_check_what_they_claim() -> None:
    a, b, c, q = sp.symbols("a b c q", positive=True)
    d = Derivation("t", [sp.Le(a, b), sp.Lt(b, c)])
    assert d.chain([sp.Le(a, b), sp.Lt(b, c)], "ok") == sp.Lt(a, c)
    d.chain([sp.Lt(b, c), sp.Le(a, b)], "links that do not meet")
    assert [s.ok for s in d.steps] == [True, False]
    d.inequality(a, a + b, "a <= a + b")
    d.inequality(a + b, a, "false")
    d.inequality(a, b, "a certificate that is not the difference", by=b)
    assert [s.ok for s in d.steps[2:]] == [True, False, False]
    small, big = d.case(sp.Le(q, 1)), d.case(sp.Gt(q, 1))
    small.inequality(1 - q, 1 + q, "", by=2 * q)
    big.inequality(q - 1, 1 + q, "", by=sp.Integer(2))
    target = sp.Le(sp.Abs(1 - q), 1 + q)
    d.cases(target, [small, big], "branches derived other facts")
    assert not d.steps[-1].ok
    only = d.case(sp.Le(q, 1))
    only.inequality(sp.Abs(1 - q), 1 + q, "", by=2 * q)
    d.cases(target, [only], "one case does not cover q > 1")
    assert not d.steps[-1].ok and "not exhaustive" in d.steps[-1].result


def test_an_instance_step_makes_the_proof_an_instance_check() -> None:
    d = Derivation("t")
    x = sp.Symbol("x", real=True)
    d.identity((x + 1) ** 2, x**2 + 2 * x + 1, "general")
    d.identity(sp.Matrix([[1, 2]]) * 2, sp.Matrix([[2, 4]]), "one matrix", instance="1 × 2")
    assert ProofKind.weakest(s.proof_kind for s in d.steps) is ProofKind.INSTANCE
    d.numeric("√2", sp.sqrt(2), 1.4142135623730951)
    assert ProofKind.weakest(s.proof_kind for s in d.steps) is ProofKind.NUMERIC


def test_same_fact_reads_relations_either_way() -> None:
    x, y = sp.symbols("x y", real=True)
    assert same_fact(sp.Le(x, y), sp.Ge(y, x))
    assert same_fact(sp.Eq(x + x, y), sp.Eq(y, 2 * x))
    assert not same_fact(sp.Le(x, y), sp.Lt(x, y))
    assert not same_fact(sp.Le(x, y), sp.Le(y, x))


# ------------------------------------------------------------------ rules read the code
@pytest.mark.parametrize(
    "formula",
    [
        "compose",
        "residual",
        "linear",
        "rmsnorm",
        "attention_head",
        "attention_heads",
        "attention_heads_mixed",
        "gelu_mlp",
        "gelu_mlp_residual",
    ],
)
def test_the_certified_bound_is_computed_by_the_formulas_the_proofs_read(formula: str) -> None:
    """The rules call the closed forms through lipschitz_formulas: scaling one down lowers the
    bound dynamo reports (so the proof and the code cannot read different constants). Down,
    because where a rule keeps the smaller of two proven forms (R7 or R14 for attention's heads,
    the product or R15's midpoint for the MLP) a larger losing form changes nothing."""
    model = dy.models.LoopedTransformer(
        d_model=8, n_heads=2, n_layers=1, recall="none", norm="outer", seed=0
    )
    system = dy.LoopedSystem.from_module(model, torch.zeros(1, 4, 8))
    domain = dy.Domain.shell(1.0, 3.0, n_tokens=4)
    before = dy.lipschitz_upper_bound(system, domain).value
    with code_scaled(formula, 0.01):
        after = dy.lipschitz_upper_bound(system, domain).value
    assert after < before * (1 - 1e-9)


def test_every_proven_builtin_rule_rests_on_claims_proved_in_general() -> None:
    """A rule dynamo declares PROVEN (so that bounds built from it are certified) cites claims,
    and every one of them has a proof of the general statement, not an instance check."""
    kinds = {c.name: c.prove() for c in theory.registry()}
    for layer, (rule, claims, trust) in dy.lipschitz_rules().items():
        if trust is not dy.Trust.PROVEN:
            continue
        assert claims, f"{layer.__name__}: rule {rule!r} is PROVEN but cites no claim"
        for name in claims:
            proof = kinds[name]
            assert proof.ok and proof.kind is ProofKind.GENERAL, (
                f"{layer.__name__}: rule {rule!r} rests on {name}, which is {proof.describe()}"
            )


# ------------------------------------------------------------------ numeric counterparts
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


# ------------------------------------------------------------------ the command line
def test_cli_prove_all_says_what_kind_of_proof_each_claim_has(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_json = tmp_path / "proofs.json"
    assert main(["prove", "--all", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    proofs = [theory.get(n).prove() for n in NAMES]
    n_steps = sum(len(p.steps) for p in proofs)
    assert out.count("[ok  ]") == n_steps + sum(len(p.goal) for p in proofs)
    general = sum(p.kind is ProofKind.GENERAL for p in proofs)
    assert f"{len(NAMES)} claims, {n_steps} steps: {general} proved in general" in out
    data = json.loads(out_json.read_text())
    assert [d["claim"]["name"] for d in data] == NAMES
    assert {d["proof"]["kind"] for d in data} <= {"general", "instance", "numeric"}


def test_cli_prove_one_with_variants_and_check_and_bad_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["prove", "R8", "--variants", "--check"]) == 0
    out = capsys.readouterr().out
    assert out.count("false variant rejected") == len(theory.get("R8").variants)
    assert "R8 check: OK" in out
    assert main(["prove", "C99"]) == 2
    assert "no claim named 'C99'" in capsys.readouterr().err
    assert main(["prove"]) == 2
