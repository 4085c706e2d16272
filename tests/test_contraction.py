"""Contraction verdicts on a domain, and what their local evidence may be called."""

from __future__ import annotations

import pytest
import torch
from problems import (
    CIRCLE_018,
    CIRCLE_CONTRACTING,
    CIRCLE_EXPANDING,
    DOMAIN_CASES,
    DomainCase,
)

import dynamo as dy
from dynamo.errors import InvalidArgumentError, ShapeError

F64 = torch.float64


def _points(angles: list[float]) -> torch.Tensor:
    th = torch.tensor(angles, dtype=F64)
    return torch.stack([th.cos(), th.sin()], -1)


def _in_domain(h: torch.Tensor, domain: dy.Domain) -> bool:
    """Every token's norm in [r_min, r_max] up to rounding."""
    tok = h.norm(dim=-1)
    slack = 1e-14 * max(1.0, domain.r_max)
    return bool(((tok >= domain.r_min - slack) & (tok <= domain.r_max + slack)).all())


def _evidence(v: dy.ContractionVerdict, kind: str) -> dy.Evidence:
    return next(e for e in v.evidence if e.kind == kind)


@pytest.mark.parametrize("case", DOMAIN_CASES, ids=lambda c: c.name)
def test_contraction_verdict_and_witnesses_on_a_domain(case: DomainCase) -> None:
    system = case.problem.make()
    v = dy.check_contraction(system, case.domain)
    assert str(v.verdict) == case.verdict
    low = _evidence(v, "largest local ‖J‖₂ found (gradient ascent)")
    # the local norm along the domain: at most its Lipschitz constant (up to the Golub–Kahan
    # tolerance √eps), and the ascent gets there
    assert case.lipschitz * (1 - 1e-3) <= low.value <= case.lipschitz * (1 + 1e-7)
    for key in ("a", "b", "fixed_point_a", "fixed_point_b", "unstable_fixed_point"):
        if key in v.witness:
            assert _in_domain(v.witness[key], case.domain), key
    if "a" in v.witness:
        a, b = v.witness["a"], v.witness["b"]
        with torch.no_grad():
            ratio = float((system.step(a[None]) - system.step(b[None])).norm() / (a - b).norm())
        assert ratio == pytest.approx(v.witness["ratio"], rel=1e-12)
        # it expands, and by no more than the Lipschitz constant on the domain allows
        assert ratio > 1 and ratio <= case.lipschitz * (1 + 1e-9)


def test_a_map_contracting_along_the_circle_is_not_refuted_by_leaving_it() -> None:
    case = CIRCLE_CONTRACTING
    v = dy.check_contraction(case.problem.make(), case.domain)
    assert v.verdict is dy.Verdict.SUPPORTED and v.local_verdict is dy.Verdict.SUPPORTED
    assert v.witness == {}
    kinds = {e.kind for e in v.evidence}
    refuting = {"expanding pair", "fixed point with ρ > 1", "two fixed points for one input"}
    assert not kinds & refuting
    # one fixed point on the circle, θ*, with multiplier 0.18 along it: λ = (ρ + 1)/2 = 0.59
    assert case.on_domain is not None
    check = _evidence(v, "discrete Lyapunov check")
    assert check.value == pytest.approx((case.on_domain[1][0] + 1) / 2, rel=1e-10)
    assert "at the 1 fixed point(s)" in check.claim


def test_a_map_expanding_along_the_circle_is_refuted_with_witnesses_on_it() -> None:
    case = CIRCLE_EXPANDING
    assert case.on_domain is not None
    exact = _points(case.on_domain[0])
    v = dy.check_contraction(case.problem.make(), case.domain)
    assert v.verdict is dy.Verdict.REFUTED and v.local_verdict is dy.Verdict.REFUTED
    # θ*, with multiplier 1.8 along the circle (2 across it, which does not count)
    torch.testing.assert_close(v.witness["unstable_fixed_point"], exact[0], rtol=0, atol=1e-10)
    rho = _evidence(v, "fixed point with ρ > 1")
    assert rho.value == pytest.approx(case.on_domain[1][0], rel=1e-8)
    # the three fixed points on the circle, not the origin
    assert _evidence(v, "two fixed points for one input").value == 3
    for key in ("fixed_point_a", "fixed_point_b"):
        assert float((exact - v.witness[key]).norm(dim=-1).min()) < 1e-10


def test_the_circle_bank_multipliers_are_those_of_the_map() -> None:
    for case in (CIRCLE_CONTRACTING, CIRCLE_EXPANDING):
        assert case.on_domain is not None
        system = case.problem.make()
        points = _points(case.on_domain[0])
        with torch.no_grad():
            assert float((system.step(points) - points).norm()) < 1e-14
        J = dy.jacobian(system, points)
        tangent = torch.stack([-points[:, 1], points[:, 0]], -1)
        along = torch.einsum("ni,nij,nj->n", tangent, J, tangent)
        across = torch.einsum("ni,nij,nj->n", points, J, points)
        torch.testing.assert_close(along, torch.tensor(case.on_domain[1], dtype=F64))
        torch.testing.assert_close(across, torch.full_like(across, 2.0))


def test_given_states_off_the_domain_are_moved_onto_it() -> None:
    system = CIRCLE_018.make()
    states = 3.0 * dy.Domain.sphere(1.0).sample(system, 8, seed=2)  # ‖J‖₂ = 6 out there
    v = dy.check_contraction(system, dy.Domain.sphere(1.0), states=states, ascent_steps=0)
    low = _evidence(v, "largest local ‖J‖₂ found (gradient ascent)")
    assert low.value <= 0.18 * (1 + 1e-7)
    assert v.verdict is dy.Verdict.SUPPORTED


def test_bad_states_are_rejected_before_any_work() -> None:
    system = CIRCLE_018.make()
    with pytest.raises(ShapeError, match=r"^check_contraction\(system\): states has shape"):
        dy.check_contraction(system, states=torch.zeros(3, 5, dtype=F64))
    nan = torch.full((2, 2), float("nan"), dtype=F64)
    with pytest.raises(InvalidArgumentError, match=r"^check_contraction\(system\): states"):
        dy.check_contraction(system, states=nan)


def test_the_lyapunov_check_is_a_float_check_and_the_local_proof_a_proof() -> None:
    """Issue 17, item 6: the Lyapunov check keeps its place, labelled as the float check it is;
    the local verdict is PROVEN only on the proofs (Krawczyk, certified basins) at the points."""
    f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    v = dy.check_contraction(dy.LoopedSystem.from_module(f, torch.ones(1, 8, dtype=F64)))
    assert v.verdict is dy.Verdict.PROVEN  # the certified global bound, 0.9
    assert v.local_verdict is dy.Verdict.PROVEN and v.local_trust == "proven"
    basins = _evidence(v, "certified basins at the fixed points")
    assert basins.certified and basins.trust == "proven" and basins.value > 0
    check = _evidence(v, "discrete Lyapunov check")
    assert not check.certified and check.trust == "checked"
    assert check.to_dict()["trust"] == "checked"
    assert "certif" not in (check.kind + check.claim).lower()
    line = next(line for line in str(v).splitlines() if "Lyapunov" in line)
    assert line.startswith("  [checked] ")
    # only the certified bound and the proofs are tagged certified
    assert [e.kind for e in v.evidence if e.certified] == [
        "certified Lipschitz upper bound",
        "certified basins at the fixed points",
    ]
    assert "certificate" not in dy.Verdict.PROVEN.message
    J = torch.tensor([[0.5, 10.0], [0.0, 0.5]], dtype=F64)
    assert dy.lyapunov_certificate(J)["trust"] == "checked"


def test_without_proofs_the_local_verdict_is_the_float_check() -> None:
    """Above the default proof limit (or with a map that has no enclosure) nothing is proven
    locally: the local verdict rests on the float check and is at most SUPPORTED."""
    f = dy.models.ContractiveTanh(n=40, lipschitz=0.9, seed=0)
    v = dy.check_contraction(
        dy.LoopedSystem.from_module(f, torch.ones(1, 40, dtype=F64)), n_starts=2
    )
    assert v.local_verdict is dy.Verdict.SUPPORTED and v.local_trust == "checked"
    assert all(e.kind != "certified basins at the fixed points" for e in v.evidence)


def test_evidence_trust_must_match_certified() -> None:
    with pytest.raises(InvalidArgumentError, match=r"^Evidence\(\.\.\.\): certified=True"):
        dy.Evidence("k", "c", 1.0, True, trust="checked")
    with pytest.raises(InvalidArgumentError, match=r"^Evidence\(\.\.\.\): trust must be"):
        dy.Evidence("k", "c", 1.0, False, trust="certain")
    assert dy.Evidence("k", "c", 1.0, False).trust == "estimated"
