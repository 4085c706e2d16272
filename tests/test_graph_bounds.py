"""Certified bounds on a user's own block, composed along its ``torch.fx`` graph
(``dynamo/_lipschitz/_graph.py``): known answers, refusals that name the operation, and soundness
over random blocks built from a small grammar (hypothesis).

The soundness properties run about 250 cases by default; ``DYNAMO_SOUNDNESS_EXAMPLES=N`` raises
every property's ``max_examples`` to ``N``; the ``slow`` test runs at least 5000 cases per property
(10,000 in all) and asserts on the number of cases it actually ran::

    DYNAMO_SOUNDNESS_EXAMPLES=5000 python -m pytest tests/test_graph_bounds.py -m slow -q -s
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dynamo as dy
from dynamo.errors import InvalidArgumentError

F64 = torch.float64
U64 = torch.finfo(F64).eps / 2

#: Cases per property in the default (not slow) suite, and the environment variable raising it.
DEFAULT_EXAMPLES = 125
ENV_EXAMPLES = "DYNAMO_SOUNDNESS_EXAMPLES"
#: Cases per property in the slow test (two properties: at least 10,000 in all).
SLOW_EXAMPLES = 5000
#: Relative slack allowed for rounding when a sampled value is compared with a bound.
REL = 1e-9


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def with_sigma(shape: tuple[int, int], sigma: float, seed: int) -> torch.Tensor:
    """A Gaussian matrix rescaled to have largest singular value ``sigma`` (float64)."""
    g = torch.randn(*shape, generator=gen(seed), dtype=F64)
    return sigma * g / torch.linalg.matrix_norm(g, ord=2)


def sigma_max(w: torch.Tensor) -> float:
    """``σ_max(w)`` in float64."""
    return float(torch.linalg.matrix_norm(w.detach().double(), ord=2))


def difference_quotients(
    system: dy.LoopedSystem, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor | None = None
) -> torch.Tensor:
    """``‖f(a) − f(b)‖ / ‖a − b‖`` per example, with the input ``x`` (the system's own if None)."""
    with torch.no_grad():
        num = system.flatten(system.step(a, x) - system.step(b, x)).norm(dim=1)
    return num / system.flatten(a - b).norm(dim=1)


# ====================================================================== known answers
class TanhRecall(nn.Module):
    """The user's own block ``φ(W h + U x + b)`` (no registered rule: it is traced)."""

    def __init__(self, d: int, lipschitz: float, act: Callable[..., Any] = torch.tanh) -> None:
        super().__init__()
        self.W = nn.Linear(d, d, bias=False).double()
        self.U = nn.Linear(d, d).double()
        self.act = act
        with torch.no_grad():
            self.W.weight.copy_(with_sigma((d, d), lipschitz, seed=1))
            self.U.weight.copy_(torch.randn(d, d, generator=gen(2), dtype=F64))
            self.U.bias.copy_(torch.randn(d, generator=gen(3), dtype=F64))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.W(h) + self.U(x))


def _inputs(d: int = 6) -> torch.Tensor:
    return torch.randn(3, d, generator=gen(4), dtype=F64)


def test_users_tanh_block_gets_the_exact_constant_and_proves_contraction() -> None:
    block = TanhRecall(6, 0.7)
    system = dy.LoopedSystem.from_module(block, _inputs())
    bound = dy.lipschitz_upper_bound(system, dy.Domain())
    assert bound.method == "graph" and bound.kind == "upper" and bound.certified
    assert bound.value == pytest.approx(0.7, rel=1e-12) and bound.value >= 0.7
    assert "own" in (bound.inputs or "")
    assert bound.out_norms is not None and bound.out_norms[1] <= math.sqrt(6) * (1 + REL)
    verdict = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    assert verdict.verdict is dy.Verdict.PROVEN
    # a range of inputs: the same constant (the input path does not touch the state)
    ranged = dy.lipschitz_upper_bound(system, dy.Domain(x_max=10.0))
    assert ranged.value == pytest.approx(0.7, rel=1e-12) and ranged.certified
    assert "every input" in (ranged.inputs or "")


def test_the_same_map_as_a_plain_function_and_as_dynamos_model() -> None:
    block = TanhRecall(6, 0.7)
    w, u, b = (p.detach().clone() for p in (block.W.weight, block.U.weight, block.U.bias))

    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.linear(h, w) + F.linear(x, u, b))

    system = dy.LoopedSystem.from_function(step, state_shape=(6,), x=_inputs())
    bound = dy.lipschitz_upper_bound(system, dy.Domain())
    assert bound.method == "graph" and bound.certified
    assert bound.value == pytest.approx(0.7, rel=1e-12) and bound.value >= 0.7
    verdict = dy.check_contraction(system, n_samples=4, ascent_steps=2, n_starts=2)
    assert verdict.verdict is dy.Verdict.PROVEN
    # dynamo's own model of the same form keeps its registered rule
    model = dy.models.ContractiveTanh(n=6, lipschitz=0.7)
    own = dy.lipschitz_upper_bound(model, dy.Domain())
    assert own.method == "rules" and own.certified
    assert own.value == pytest.approx(0.7, rel=1e-12)
    assert bound.value == pytest.approx(own.value, rel=1e-12)


def test_an_operation_without_a_rule_is_named_and_a_registered_rule_is_used() -> None:
    system = dy.LoopedSystem.from_module(TanhRecall(6, 0.7, act=torch.erf), _inputs())
    with pytest.raises(InvalidArgumentError) as info:
        dy.lipschitz_upper_bound(system, dy.Domain())
    message = str(info.value)
    assert "torch.erf" in message and "'erf'" in message
    assert "register_lipschitz_rule" in message

    c = math.nextafter(2 / math.sqrt(math.pi), math.inf)  # sup |erf′| rounded up; |erf| <= c|t|
    seen: list[dy.OpCall] = []

    def erf_rule(op: dy.OpCall, norms: tuple[float, float], ctx: Any) -> dy.LayerBound:
        seen.append(op)
        width = op.args[op.position].shape[-1]
        return dy.LayerBound(c, (0.0, min(c * norms[1], math.sqrt(width))), "2/√π")

    dy.register_lipschitz_rule(torch.erf, erf_rule, claims=("erf′ ≤ 2/√π",), trust="proven")
    try:
        bound = dy.lipschitz_upper_bound(system, dy.Domain())
    finally:
        dy.unregister_lipschitz_rule(torch.erf)
    assert bound.certified and bound.method == "graph"
    assert bound.value == pytest.approx(0.7 * c, rel=1e-12) and bound.value >= 0.7 * c
    assert seen and seen[0].target is torch.erf and seen[0].where == "erf"
    # unregistered again: the error is back
    with pytest.raises(InvalidArgumentError, match="register_lipschitz_rule"):
        dy.lipschitz_upper_bound(system, dy.Domain())


def test_an_estimated_function_rule_is_not_certified() -> None:
    system = dy.LoopedSystem.from_module(TanhRecall(6, 0.7, act=torch.erf), _inputs())

    def erf_rule(op: dy.OpCall, norms: tuple[float, float], ctx: Any) -> dy.LayerBound:
        return dy.LayerBound(math.nextafter(2 / math.sqrt(math.pi), math.inf), (0.0, math.sqrt(6)))

    dy.register_lipschitz_rule(torch.erf, erf_rule, claims=(), trust="estimated")
    try:
        bound = dy.lipschitz_upper_bound(system, dy.Domain())
    finally:
        dy.unregister_lipschitz_rule(torch.erf)
    assert not bound.certified


class Residual(nn.Module):
    """``h + tanh(W h)``, autonomous."""

    def __init__(self, d: int, sigma: float) -> None:
        super().__init__()
        self.W = nn.Parameter(with_sigma((d, d), sigma, seed=5))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.tanh(F.linear(h, self.W))


def test_an_autonomous_traced_block_returns_a_bound() -> None:
    """An autonomous system (no input) through the traced path: ``Bound.inputs`` is None.

    Fails at the time of writing with ``TypeError: unsupported format string passed to
    NoneType.__format__`` in ``_upper._traced`` (it formats ``domain.x_max`` for the ``inputs``
    text when ``x_exact`` is False, which it also is for a system without input).
    """
    system = dy.LoopedSystem.from_function(lambda h: 0.5 * torch.tanh(h), state_shape=(3,))
    bound = dy.lipschitz_upper_bound(system, dy.Domain())
    assert bound.method == "graph" and bound.value == pytest.approx(0.5, rel=1e-12)
    assert bound.inputs is None


def test_residual_block_is_one_plus_the_branch() -> None:
    block = Residual(6, 0.45)
    system = dy.LoopedSystem.from_module(block, state_shape=(6,))
    bound = dy.lipschitz_upper_bound(system, dy.Domain())
    expected = 1 + sigma_max(block.W)
    assert bound.certified and bound.value == pytest.approx(expected, rel=1e-12)
    assert bound.value >= expected and bound.inputs is None


class ConcatRecall(nn.Module):
    """``Linear(cat[h, x])``: the recall input path; its constant in ``h`` is ``σ_max(W_h)``
    (dynamo's rule R4)."""

    def __init__(self, d: int, d_x: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d + d_x, d).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(d, d + d_x, generator=gen(6), dtype=F64) / 3)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([h, x], dim=-1))


def _concat_system() -> tuple[dy.LoopedSystem, ConcatRecall]:
    block = ConcatRecall(5, 3)
    x = torch.randn(2, 4, 3, generator=gen(7), dtype=F64)
    return dy.LoopedSystem.from_module(block, x, state_shape=(4, 5)), block


_CONCAT_DOMAINS = [dy.Domain(), dy.Domain.ball(2.0, x_max=5.0)]


@pytest.mark.parametrize("domain", _CONCAT_DOMAINS, ids=["own-input", "input-range"])
def test_concat_recall_is_sound(domain: dy.Domain) -> None:
    system, block = _concat_system()
    state_block, whole = sigma_max(block.lin.weight[:, :5]), sigma_max(block.lin.weight)
    assert state_block < whole  # the input block does not count
    bound = dy.lipschitz_upper_bound(system, domain)
    assert bound.certified and bound.method == "graph"
    assert state_block <= bound.value <= whole * (1 + 1e-12)


@pytest.mark.parametrize("domain", _CONCAT_DOMAINS, ids=["own-input", "input-range"])
def test_concat_recall_is_the_state_block_of_the_weight(domain: dy.Domain) -> None:
    system, block = _concat_system()
    expected = sigma_max(block.lin.weight[:, :5])
    bound = dy.lipschitz_upper_bound(system, domain)
    assert bound.value == pytest.approx(expected, rel=1e-12) and bound.value >= expected


class Branching(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d).double()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.norm() >= 0:
            return torch.tanh(self.lin(h))
        return h


def test_a_block_that_cannot_be_traced_says_so() -> None:
    system = dy.LoopedSystem.from_module(Branching(4), state_shape=(4,))
    with pytest.raises(InvalidArgumentError, match=r"torch\.fx") as info:
        dy.lipschitz_upper_bound(system, dy.Domain())
    assert "trace" in str(info.value) and "register_lipschitz_rule" in str(info.value)


def test_a_product_of_two_state_dependent_values_is_refused() -> None:
    system = dy.LoopedSystem.from_function(lambda h: 0.1 * (h * h), state_shape=(4,))
    with pytest.raises(InvalidArgumentError, match="product of two state-dependent") as info:
        dy.lipschitz_upper_bound(system, dy.Domain.ball(1.0))
    assert "operator.mul" in str(info.value) and "'mul'" in str(info.value)


class Dropped(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d).double()
        self.drop = nn.Dropout(0.2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop(self.lin(h))


def test_random_maps_and_casts_are_refused() -> None:
    block = Dropped(4).eval()
    system = dy.LoopedSystem.from_module(block, state_shape=(4,))
    block.train()  # after construction: from_module itself refuses a module in train mode
    with pytest.raises(InvalidArgumentError, match="Dropout"):
        dy.lipschitz_upper_bound(system, dy.Domain())
    w = torch.randn(4, 4, generator=gen(8), dtype=F64)

    def dropped(h: torch.Tensor) -> torch.Tensor:
        return F.dropout(h @ w, p=0.2, training=True)

    system = dy.LoopedSystem.from_function(dropped, state_shape=(4,), validate=False)
    with pytest.raises(InvalidArgumentError, match="dropout in training mode"):
        dy.lipschitz_upper_bound(system, dy.Domain())

    def cast(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h.float() @ w.float()).double()

    system = dy.LoopedSystem.from_function(cast, state_shape=(4,))
    with pytest.raises(InvalidArgumentError, match="changing the dtype") as info:
        dy.lipschitz_upper_bound(system, dy.Domain())
    assert "Tensor.float" in str(info.value)


class TransposedWeight(nn.Module):
    """``tanh(h @ W.T)`` with ``W`` a parameter: the usual way to write ``F.linear(h, W)``."""

    def __init__(self, d: int, sigma: float) -> None:
        super().__init__()
        self.W = nn.Parameter(with_sigma((d, d), sigma, seed=10))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.W.T)


def test_matmul_with_a_transposed_parameter() -> None:
    block = TransposedWeight(5, 0.8)
    system = dy.LoopedSystem.from_module(block, torch.zeros(1, 5, dtype=F64), state_shape=(5,))
    bound = dy.lipschitz_upper_bound(system, dy.Domain())
    assert bound.value == pytest.approx(0.8, rel=1e-12) and bound.value >= 0.8


class DroppedDriven(Dropped):
    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.drop(self.lin(h))


def test_dropout_in_eval_mode_is_the_identity() -> None:
    block = DroppedDriven(4).eval()
    x = torch.zeros(1, 4, dtype=F64)
    w = block.lin.weight.detach().clone()
    for system in (
        dy.LoopedSystem.from_module(block, x, state_shape=(4,)),
        dy.LoopedSystem.from_function(
            lambda h, x: F.dropout(h @ w.T, 0.3, training=False), (4,), x
        ),
    ):
        bound = dy.lipschitz_upper_bound(system, dy.Domain())
        assert bound.certified and bound.value == pytest.approx(sigma_max(w), rel=1e-12)


# ====================================================================== found in review
# Broadcasting a state-dependent value along the last axis, or an integer index / unbind on the
# last axis, makes each output token gather several entries of the input tokens: the token-norm
# interval the graph carries must grow (by up to √width). The interval feeds the attention and
# norm rules, so a certified Lipschitz bound would otherwise be too small.


def test_a_broadcast_along_the_last_axis_gets_a_sound_out_norm_interval() -> None:
    d, T = 4, 2
    ones = torch.ones(d, dtype=F64)
    system = dy.LoopedSystem.from_function(
        lambda h, x: h[..., :1] * ones, state_shape=(T, d), x=torch.zeros(1, T, d, dtype=F64)
    )
    bound = dy.lipschitz_upper_bound(system, dy.Domain.sphere(1.0))
    h = torch.zeros(1, T, d, dtype=F64)
    h[..., 0] = 1.0  # on the sphere; the output tokens are (1, 1, 1, 1), of norm 2
    out = float(system.step(h).norm(dim=-1).max())
    assert bound.out_norms is not None and out <= bound.out_norms[1] * (1 + REL)


def test_multihead_attention_read_through_w_o_w_v_is_attained() -> None:
    """R14 on ``nn.MultiheadAttention``: with no scores (``W_q = 0``), one token and every head
    the same ``C = A B`` the layer is ``v ↦ H A B v + const``, whose constant ``H‖AB‖`` the rule
    reaches (value biases drop out of R14's kernels), where R11 with ``‖W_O‖`` and ``‖W_v‖``
    apart is looser by ``‖A‖‖B‖/‖AB‖``."""
    d, heads = 8, 2
    m = nn.MultiheadAttention(d, heads, batch_first=True, dtype=F64)  # key and value biases
    a = torch.randn(d, d // heads, generator=gen(1), dtype=F64)
    b = torch.randn(d // heads, d, generator=gen(2), dtype=F64)
    with torch.no_grad():
        m.in_proj_weight[:d].zero_()  # W_q = 0: every score is the bias's, equal
        m.in_proj_weight[2 * d :].copy_(torch.cat([b, b]))
        m.in_proj_bias.copy_(torch.randn(3 * d, generator=gen(3), dtype=F64))
        m.in_proj_bias[:d].zero_()  # queries 0, so R11's score terms vanish
        m.out_proj.weight.copy_(torch.cat([a, a], dim=1))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = m

        def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.m(h, h, h, need_weights=False)[0]

    system = dy.LoopedSystem.from_module(Block(), torch.zeros(1, 1, d, dtype=F64))
    bound = dy.lipschitz_upper_bound(system, dy.Domain.shell(0.5, 2.0))
    exact = 2 * float(torch.linalg.matrix_norm(a @ b, ord=2))
    assert bound.certified and "R14" in bound.steps[0].note
    assert exact <= bound.value <= exact * (1 + 1e-12)
    h = torch.ones(1, 1, d, dtype=F64)
    with torch.no_grad():
        J = torch.func.jacfwd(lambda z: system.step(z.reshape(1, 1, d)).reshape(-1))(h.reshape(-1))
    assert float(torch.linalg.matrix_norm(J, ord=2)) == pytest.approx(exact, rel=1e-12)


def test_self_attention_kernels_by_r16_tighten_multihead_attention_soundly() -> None:
    """Query, key and value one node: each head's kernel is also bounded by R16 on the tokens
    ``[h; 1]`` (biases folded into the scores), more than 1.2× below the same block whose key and
    value are a copy of ``h`` (``h + 0.0``: another node, so R11's kernels), and never below the
    Jacobians that ascent finds."""
    torch.manual_seed(0)
    att = nn.MultiheadAttention(16, 4, batch_first=True, dtype=F64)

    class Same(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = att

        def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return h + self.att(h, h, h, need_weights=False)[0]

    class Copies(Same):
        def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            z = h + 0.0
            return h + self.att(h, z, z, need_weights=False)[0]

    x0 = torch.zeros(1, 8, 16, dtype=F64)
    domain = dy.Domain.shell(1.0, 4.0)
    same = dy.LoopedSystem.from_module(Same(), x0)
    bound = dy.lipschitz_upper_bound(same, domain)
    other = dy.lipschitz_upper_bound(dy.LoopedSystem.from_module(Copies(), x0), domain)
    notes = [[s.note for s in b.steps if s.rule == "multi-head attention"] for b in (bound, other)]
    assert len(notes[0]) == len(notes[1]) == 1
    assert "self-attention kernels by R16" in notes[0][0] and "R16" not in notes[1][0]
    assert other.value / bound.value > 1.2
    states = domain.sample(same, 8, seed=0)
    low = dy.lipschitz_lower_bound(same, states, method="ascent", steps=30, domain=domain)
    assert low.value <= bound.value


def test_a_broadcast_before_attention_gets_a_sound_lipschitz_bound() -> None:
    d, T, R = 16, 2, 3.0
    ones = torch.ones(d, dtype=F64)

    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g = h[..., :1] * ones  # a rank-one token map: tokens of norm 4 |h_0|, not |h_0|
        return F.scaled_dot_product_attention(g, g, g)

    system = dy.LoopedSystem.from_function(
        step, state_shape=(T, d), x=torch.zeros(1, T, d, dtype=F64)
    )
    bound = dy.lipschitz_upper_bound(system, dy.Domain.ball(R))  # certified, about 27.4
    h = torch.zeros(1, T, d, dtype=F64)
    h[0, :, 0] = torch.tensor([-2.9921, 0.0169], dtype=F64)  # in the ball
    local = float(torch.linalg.matrix_norm(dy.jacobian(system, h)[0], ord=2))  # about 38.3
    _, _, vh = torch.linalg.svd(dy.jacobian(system, h)[0])
    b = h + 1e-4 * vh[0].reshape(1, T, d)  # still in the ball
    quotient = float(difference_quotients(system, h, b).max())
    assert local <= bound.value * (1 + REL) and quotient <= bound.value * (1 + REL)


@pytest.mark.parametrize("select", ["index", "unbind"])
def test_an_index_that_removes_the_last_axis_gets_a_sound_out_norm_interval(select: str) -> None:
    d = T = 4

    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g = h[..., 0] if select == "index" else h.unbind(-1)[0]  # (B, T): entry 0 of each token
        return torch.cat([g.unsqueeze(1)] * T, dim=1)  # (B, T, d) since d == T

    system = dy.LoopedSystem.from_function(
        step, state_shape=(T, d), x=torch.zeros(1, T, d, dtype=F64)
    )
    bound = dy.lipschitz_upper_bound(system, dy.Domain.ball(3.0))
    h = torch.zeros(1, T, d, dtype=F64)
    h[..., 0] = 3.0  # every token on the sphere of radius 3: the output tokens have norm 6
    out = float(system.step(h).norm(dim=-1).max())
    assert bound.out_norms is not None and out <= bound.out_norms[1] * (1 + REL)


def test_attention_on_unbounded_token_norms_is_refused() -> None:
    T, d = 3, 4
    w = torch.randn(3 * d, d, generator=gen(9), dtype=F64) / 2

    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(h, w).chunk(3, dim=-1)
        return h + F.scaled_dot_product_attention(q, k, v)

    system = dy.LoopedSystem.from_function(step, (T, d), torch.zeros(1, T, d, dtype=F64))
    try:
        bound = dy.lipschitz_upper_bound(system, dy.Domain())
    except InvalidArgumentError:
        return
    raise AssertionError(f"a bound of {bound.value} (certified: {bound.certified})")


@pytest.mark.parametrize("x_max", [None, 3.0], ids=["own-input", "input-range"])
@pytest.mark.parametrize("form", ["F.linear", "matmul", "scale"])
def test_a_functional_input_path_gets_finite_token_norms(form: str, x_max: float | None) -> None:
    T, d = 3, 4
    g = gen(12)
    p = torch.randn(d, d, generator=g, dtype=F64) / 2
    w = torch.randn(3 * d, d, generator=g, dtype=F64) / 2
    x = torch.randn(1, T, d, generator=g, dtype=F64)

    def inject(x: torch.Tensor) -> torch.Tensor:
        if form == "F.linear":
            return F.linear(x, p)
        return x @ p if form == "matmul" else 2 * x

    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z = h + inject(x)
        q, k, v = F.linear(z, w).chunk(3, dim=-1)
        return z + F.scaled_dot_product_attention(q, k, v)

    system = dy.LoopedSystem.from_function(step, (T, d), x)
    bound = dy.lipschitz_upper_bound(system, dy.Domain.ball(1.0, x_max=x_max))
    assert math.isfinite(bound.value)


@pytest.mark.parametrize("path", ["rules", "graph"])
def test_norm_output_interval_is_rounded_outward(path: str) -> None:
    if path == "rules":
        norm = nn.RMSNorm(6, eps=1e-5, elementwise_affine=False, dtype=F64)
        bound = dy.lipschitz_upper_bound(norm, dy.Domain.shell(0.5, 0.5 * (1 + 1e-15)))
    else:
        system = dy.LoopedSystem.from_function(
            lambda h, x: F.rms_norm(0.5 * h, (6,), eps=1e-5),
            state_shape=(2, 6),
            x=torch.zeros(1, 2, 6, dtype=F64),
        )
        bound = dy.lipschitz_upper_bound(system, dy.Domain.sphere(0.5))
    assert bound.out_norms is not None
    lo, hi = bound.out_norms
    assert lo <= hi


# ====================================================================== the random grammar
ACTIVATIONS = ("tanh", "relu", "gelu", "gelu_tanh", "silu", "sigmoid", "softplus", "leaky_relu")


@dataclass(frozen=True)
class Sub:
    """One sublayer of a random block.

    ``kind``: ``mlp`` (``h ± W₂ φ(W₁ z + b₁) + b₂``), ``sdpa`` (``h ± W_o SDPA(q, k, v)`` with
    ``q, k, v`` from one Linear, ``chunk``, ``view``/``transpose``), ``mha`` (``h ±
    nn.MultiheadAttention(z, z, z)[0]``), ``scale`` (by a number, a channel or a token vector) or
    ``norm`` (a norm layer alone). ``norm``: where the sublayer's norm sits (``pre``: the branch
    reads ``z = norm(h)``; ``post``: ``norm(h ± branch)``).
    """

    kind: str
    norm: str = "none"
    norm_kind: str = "rms"
    norm_module: bool = False
    eps: float | None = 1e-5
    affine: bool = True
    act: str = "tanh"
    act_style: str = "function"
    slope: float = 0.01
    lin_style: str = "module"
    hidden: int = 8
    heads: int = 1
    causal: str = "none"
    bias: bool = True
    sign: float = 1.0
    gain: float = 1.0
    scale_kind: str = "scalar"
    need_weights: bool = False
    dropout: bool = False


@dataclass(frozen=True)
class Case:
    """A random block, its input and its domain."""

    functional: bool
    d: int
    T: int
    B: int
    inject: str  # none (autonomous) | add (h + P x) | cat (Linear(cat[h, x]))
    inject_style: str
    d_x: int
    subs: tuple[Sub, ...]
    seed: int
    domain_kind: str  # shell | sphere | unbounded
    r_min: float
    r_max: float
    x_range: tuple[float, float] | None

    @property
    def driven(self) -> bool:
        return self.inject != "none"

    def domain(self) -> dy.Domain:
        """The domain of the case."""
        xr = {} if self.x_range is None else {"x_min": self.x_range[0], "x_max": self.x_range[1]}
        if self.domain_kind == "unbounded":
            return dy.Domain(**xr)
        return dy.Domain.shell(self.r_min, self.r_max, **xr)


def _linear_names(case: Case) -> dict[str, tuple[int, int, bool, str]]:
    """Every linear map of the block: name -> (fan_in, fan_out, bias, style)."""
    out: dict[str, tuple[int, int, bool, str]] = {}
    d = case.d
    if case.inject == "add":
        out["inj"] = (case.d_x, d, True, case.inject_style)
    elif case.inject == "cat":
        out["inj"] = (d + case.d_x, d, True, case.inject_style)
    for i, s in enumerate(case.subs):
        if s.kind == "mlp":
            out[f"s{i}_w1"] = (d, s.hidden, s.bias, s.lin_style)
            out[f"s{i}_w2"] = (s.hidden, d, s.bias, s.lin_style)
        elif s.kind == "sdpa":
            out[f"s{i}_qkv"] = (d, 3 * d, s.bias, s.lin_style)
            out[f"s{i}_wo"] = (d, d, s.bias, s.lin_style)
    return out


def _gain_of(case: Case, name: str) -> float:
    if name == "inj":
        return 1.0
    return case.subs[int(name[1 : name.index("_")])].gain


def _tensors(case: Case) -> dict[str, torch.Tensor]:
    """Every constant of the block, drawn from ``case.seed`` (weights scaled by the gains)."""
    g = gen(case.seed)
    d, T = case.d, case.T
    out: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out, bias, style) in _linear_names(case).items():
        gain = _gain_of(case, name)
        out[name + "_W"] = torch.randn(fan_out, fan_in, generator=g, dtype=F64) * (
            gain / math.sqrt(fan_in)
        )
        if bias:
            out[name + "_b"] = 0.3 * gain * torch.randn(fan_out, generator=g, dtype=F64)
        if style == "matmul":  # z @ Wᵀ with the transpose stored
            out[name + "_Wt"] = out[name + "_W"].T.contiguous()
    for i, s in enumerate(case.subs):
        p = f"s{i}"
        if s.norm != "none" or s.kind == "norm":
            signs = torch.where(torch.rand(d, generator=g) < 0.2, -1.0, 1.0).to(F64)
            out[p + "_nw"] = signs * (0.5 + torch.rand(d, generator=g, dtype=F64)) * s.gain
            out[p + "_nb"] = 0.3 * torch.randn(d, generator=g, dtype=F64)
        if s.kind == "scale":
            shape = {"channel": (d,), "token": (T, 1)}.get(s.scale_kind, (1,))
            c = s.gain * (0.5 + torch.rand(shape, generator=g, dtype=F64))
            out[p + "_c"] = c * torch.where(torch.rand(shape, generator=g) < 0.3, -1.0, 1.0)
            if s.scale_kind == "zero":  # 0 · (an unbounded norm) is NaN in floats, 0 exactly
                out[p + "_c"] = torch.zeros(shape, dtype=F64)
        if s.kind in ("sdpa", "mha"):
            if s.causal == "bias":  # an additive float mask (ALiBi-like)
                out[p + "_mask"] = torch.randn(T, T, generator=g, dtype=F64)
            elif s.causal == "mask":
                out[p + "_mask"] = torch.ones(T, T).tril().bool()
    return out


def _numbers(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    """The one-entry constants as Python numbers (a scale written ``c * h`` with a float ``c``)."""
    return {k: float(v) for k, v in tensors.items() if v.numel() == 1}


class _Ops:
    """How the block's operations are written: functional ops on plain tensors (``tensors``) or,
    for a module, on its parameters and sub-modules."""

    def __init__(
        self, case: Case, tensors: Any, numbers: dict[str, float], modules: Any = None
    ) -> None:
        self.case = case
        self.t = tensors
        self.numbers = numbers
        self.m = modules

    def tensor(self, name: str) -> torch.Tensor:
        return self.t[name]

    def linear(self, name: str, z: torch.Tensor) -> torch.Tensor:
        _, _, bias, style = _linear_names(self.case)[name]
        if self.m is not None and style == "module":
            return self.m[name](z)
        w = self.tensor(name + "_W")
        b = self.tensor(name + "_b") if bias else None
        if style == "matmul":
            out = z @ self.tensor(name + "_Wt")
            return out + b if b is not None else out
        return F.linear(z, w, b)

    def act(self, i: int, s: Sub, z: torch.Tensor) -> torch.Tensor:
        if self.m is not None and s.act_style == "module":
            return self.m[f"s{i}_act"](z)
        a = s.act
        if s.act_style == "method" and a in ("tanh", "relu", "sigmoid"):
            return getattr(z, a)()
        if a == "tanh":
            return torch.tanh(z)
        if a == "relu":
            return F.relu(z) if s.act_style == "function" else torch.relu(z)
        if a in ("gelu", "gelu_tanh"):
            return F.gelu(z, approximate="tanh" if a == "gelu_tanh" else "none")
        if a == "silu":
            return F.silu(z)
        if a == "sigmoid":
            return torch.sigmoid(z)
        if a == "softplus":
            return F.softplus(z, beta=abs(s.slope))
        return F.leaky_relu(z, negative_slope=s.slope)

    def dropout(self, i: int, s: Sub, z: torch.Tensor) -> torch.Tensor:
        """Dropout in evaluation mode (the identity), when the sublayer has it."""
        if not s.dropout:
            return z
        if self.m is not None and f"s{i}_drop" in self.m:
            return self.m[f"s{i}_drop"](z)
        return F.dropout(z, p=0.1, training=False)

    def norm(self, i: int, s: Sub, z: torch.Tensor) -> torch.Tensor:
        p = f"s{i}"
        if self.m is not None and s.norm_module:
            return self.m[p + "_norm"](z)
        w = self.tensor(p + "_nw") if s.affine else None
        if s.norm_kind == "layer":
            b = self.tensor(p + "_nb") if s.affine else None
            return F.layer_norm(z, (self.case.d,), w, b, eps=s.eps)  # type: ignore[arg-type]
        return F.rms_norm(z, (self.case.d,), w, eps=s.eps)

    def scale(self, i: int, s: Sub, z: torch.Tensor) -> torch.Tensor:
        if s.scale_kind in ("scalar", "zero"):
            return self.numbers[f"s{i}_c"] * z
        if s.scale_kind == "divide":
            return z / self.numbers[f"s{i}_c"]
        c = self.tensor(f"s{i}_c")
        return c * z if s.scale_kind == "token" else z * c

    def mha(self, i: int, s: Sub, z: torch.Tensor) -> torch.Tensor:
        p = f"s{i}"
        if s.causal == "none":
            return self.m[p + "_mha"](z, z, z, need_weights=s.need_weights)[0]
        mask = self.tensor(p + "_mask")
        mask = ~mask if s.causal == "mask" else mask  # MHA's boolean masks mark what is hidden
        return self.m[p + "_mha"](z, z, z, need_weights=s.need_weights, attn_mask=mask)[0]


def _sdpa_branch(ops: _Ops, i: int, s: Sub, z: torch.Tensor) -> torch.Tensor:
    p = f"s{i}"
    d, heads = ops.case.d, s.heads
    b, t = z.shape[0], z.shape[1]
    q, k, v = ops.linear(p + "_qkv", z).chunk(3, dim=-1)
    q = q.view(b, t, heads, d // heads).transpose(1, 2)
    k = k.view(b, t, heads, d // heads).transpose(1, 2)
    v = v.reshape(b, t, heads, d // heads).permute(0, 2, 1, 3)
    if s.causal == "is_causal":
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif s.causal in ("mask", "bias"):
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=ops.tensor(p + "_mask"))
    else:
        o = F.scaled_dot_product_attention(q, k, v)
    o = o.transpose(1, 2).reshape(b, t, d)
    return ops.linear(p + "_wo", o)


def _forward(ops: _Ops, h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """The block: input injection, then the sublayers in order."""
    case = ops.case
    if case.inject == "add":
        h = h + ops.linear("inj", x)  # type: ignore[arg-type]
    elif case.inject == "cat":
        h = ops.linear("inj", torch.cat([h, x], dim=-1))  # type: ignore[list-item]
    for i, s in enumerate(case.subs):
        if s.kind == "scale":
            h = ops.scale(i, s, h)
            continue
        if s.kind == "norm":
            h = ops.norm(i, s, h)
            continue
        z = ops.norm(i, s, h) if s.norm == "pre" else h
        if s.kind == "mlp":
            hidden = ops.act(i, s, ops.linear(f"s{i}_w1", z))
            branch = ops.linear(f"s{i}_w2", ops.dropout(i, s, hidden))
        elif s.kind == "sdpa":
            branch = _sdpa_branch(ops, i, s, z)
        else:
            branch = ops.mha(i, s, z)
        h = h + branch if s.sign > 0 else h - branch
        if s.norm == "post":
            h = ops.norm(i, s, h)
    return h


def _activation_module(s: Sub) -> nn.Module:
    a = s.act
    if a in ("gelu", "gelu_tanh"):
        return nn.GELU(approximate="tanh" if a == "gelu_tanh" else "none")
    if a == "softplus":
        return nn.Softplus(beta=abs(s.slope))
    if a == "leaky_relu":
        return nn.LeakyReLU(s.slope)
    return {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}[a]()


class RandomBlock(nn.Module):
    """A user's block from the grammar, written with its own parameters and sub-modules
    (driven: ``forward(h, x)``)."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.case = case
        tensors = _tensors(case)
        self.numbers = _numbers(tensors)
        self.p = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in tensors.items() if v.dtype != torch.bool}
        )
        for k, v in tensors.items():
            if v.dtype == torch.bool:
                self.register_buffer("mask_" + k, v)
        self.mods = nn.ModuleDict()
        for name, (fan_in, fan_out, bias, style) in _linear_names(case).items():
            if style == "module":
                lin = nn.Linear(fan_in, fan_out, bias=bias, dtype=F64)
                with torch.no_grad():
                    lin.weight.copy_(tensors[name + "_W"])
                    if bias:
                        lin.bias.copy_(tensors[name + "_b"])
                self.mods[name] = lin
        for i, s in enumerate(case.subs):
            p = f"s{i}"
            if s.kind == "mlp":
                self.mods[p + "_act"] = _activation_module(s)
                if s.dropout and s.act_style == "module":
                    self.mods[p + "_drop"] = nn.Dropout(0.1)
            if (s.norm != "none" or s.kind == "norm") and s.norm_module:
                self.mods[p + "_norm"] = _norm_module(
                    case.d, s, tensors[p + "_nw"], tensors[p + "_nb"]
                )
            if s.kind == "mha":
                self.mods[p + "_mha"] = _mha_module(case.d, s, case.seed + i + 1)
        self.eval()

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _forward(_Ops(self.case, _Lookup(self), self.numbers, self.mods), h, x)


class AutonomousRandomBlock(RandomBlock):
    """The same block without an input: ``forward(h)``."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _forward(_Ops(self.case, _Lookup(self), self.numbers, self.mods), h, None)


class _Lookup:
    """A block's constants by name: its parameters, or its boolean mask buffers."""

    def __init__(self, block: RandomBlock) -> None:
        self.block = block

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self.block.p:
            return self.block.p[name]
        return getattr(self.block, "mask_" + name)


def _norm_module(d: int, s: Sub, w: torch.Tensor, b: torch.Tensor) -> nn.Module:
    """``nn.LayerNorm`` or ``nn.RMSNorm`` with the weights ``w`` (and bias ``b``)."""
    norm: nn.Module
    if s.norm_kind == "layer":
        assert s.eps is not None
        norm = nn.LayerNorm(d, eps=s.eps, elementwise_affine=s.affine, dtype=F64)
    else:
        norm = nn.RMSNorm(d, eps=s.eps, elementwise_affine=s.affine, dtype=F64)
    if s.affine:
        with torch.no_grad():
            norm.weight.copy_(w)
            if getattr(norm, "bias", None) is not None:
                norm.bias.copy_(b)
    return norm


def _mha_module(d: int, s: Sub, seed: int) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention(batch_first=True)`` with random weights scaled by the gain."""
    m = nn.MultiheadAttention(d, s.heads, bias=s.bias, batch_first=True, dtype=F64)
    g = gen(seed)
    with torch.no_grad():
        m.in_proj_weight.copy_(torch.randn(3 * d, d, generator=g, dtype=F64) * s.gain / d**0.5)
        m.out_proj.weight.copy_(torch.randn(d, d, generator=g, dtype=F64) * s.gain / d**0.5)
        if s.bias:
            m.in_proj_bias.copy_(0.3 * torch.randn(3 * d, generator=g, dtype=F64))
            m.out_proj.bias.copy_(0.3 * torch.randn(d, generator=g, dtype=F64))
    return m.eval()


def _tokens(g: torch.Generator, shape: tuple[int, ...], norms: torch.Tensor) -> torch.Tensor:
    """Random token directions of the given norms (``norms`` broadcasts against
    ``(*shape[:-1], 1)``)."""
    z = torch.randn(*shape, generator=g, dtype=F64)
    z = z / z.norm(dim=-1, keepdim=True)
    return z * norms


def _norms_in(
    g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, ends: bool
) -> torch.Tensor:
    """Token norms in ``[lo, hi]``: uniform, and with ``ends`` a third of them at each end."""
    u = torch.rand(*shape, 1, generator=g, dtype=F64)
    r = lo + (hi - lo) * u
    if ends:
        pick = torch.randint(0, 3, (*shape, 1), generator=g)
        r = torch.where(pick == 0, torch.full_like(r, lo), r)
        r = torch.where(pick == 1, torch.full_like(r, hi), r)
    return r


def _inputs_in(
    g: torch.Generator, n: int, case: Case, lo: float, hi: float, ends: bool = True
) -> torch.Tensor:
    """``n`` inputs ``(n, T, d_x)`` with token norms in ``[lo, hi]`` (up to rounding): a third
    at each end with ``ends``, otherwise strictly inside when ``lo < hi``."""
    r = _norms_in(g, (n, case.T), lo, hi, ends=ends)
    if not ends:
        r = lo + (hi - lo) * (0.01 + 0.98 * (r - lo) / max(hi - lo, 1e-300))
    return _tokens(g, (n, case.T, case.d_x), r)


def build_system(case: Case) -> dy.LoopedSystem:
    """The case's block as a :class:`~dynamo.LoopedSystem`: a module of :class:`RandomBlock`,
    or, for ``case.functional``, a plain function of the same map on plain tensors."""
    shape = (case.T, case.d)
    x = None
    if case.driven:
        lo, hi = case.x_range if case.x_range is not None else (0.0, 3.0)
        # strictly inside the range (with lo == hi, rounding may put a token an ulp outside it,
        # which the bound refuses: an acceptable outcome)
        x = _inputs_in(gen(case.seed + 7), case.B, case, lo, hi, ends=False)
    if case.functional:
        tensors = _tensors(case)
        ops = _Ops(case, tensors, _numbers(tensors))
        if case.driven:

            def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                return _forward(ops, h, x)

            return dy.LoopedSystem.from_function(step, shape, x, validate=False)

        def auto(h: torch.Tensor) -> torch.Tensor:
            return _forward(ops, h, None)

        return dy.LoopedSystem.from_function(auto, shape, validate=False)
    block = RandomBlock(case) if case.driven else AutonomousRandomBlock(case)
    return dy.LoopedSystem.from_module(block, x, state_shape=shape, validate=False)


# ---------------------------------------------------------------------- strategies
@st.composite
def sublayers(draw: st.DrawFn, functional: bool) -> Sub:
    """One sublayer of the grammar (no modules in a plain function: no ``nn.MultiheadAttention``,
    no activation or norm modules, no ``nn.Linear``)."""
    kinds = ["mlp", "sdpa", "scale", "norm"] + ([] if functional else ["mha"])
    kind = draw(st.sampled_from(kinds))
    norm_kind = draw(st.sampled_from(["rms", "layer"]))
    eps_choices: list[float | None] = [0.0, 1e-5, 1e-5, 1e-2, 1e-2]
    if norm_kind == "rms":
        eps_choices.append(None)
    causal = draw(st.sampled_from(["none", "is_causal", "mask", "bias"]))
    if kind == "mha" and causal == "is_causal":
        causal = "mask"
    return Sub(
        kind=kind,
        norm=draw(st.sampled_from(["none", "pre", "post"])),
        norm_kind=norm_kind,
        norm_module=False if functional else draw(st.booleans()),
        eps=draw(st.sampled_from(eps_choices)),
        affine=draw(st.booleans()),
        act=draw(st.sampled_from(ACTIVATIONS)),
        act_style=draw(
            st.sampled_from(["function", "method"] + ([] if functional else ["module"]))
        ),
        slope=draw(st.sampled_from([0.01, -0.5, 1.0, 2.0])),
        lin_style=draw(st.sampled_from(["flinear", "matmul"] + ([] if functional else ["module"]))),
        hidden=draw(st.sampled_from([4, 8, 12])),
        heads=draw(st.sampled_from([1, 2])),
        causal=causal,
        bias=draw(st.booleans()),
        sign=draw(st.sampled_from([1.0, -1.0])),
        gain=draw(st.floats(0.1, 2.0)),
        scale_kind=draw(st.sampled_from(["scalar", "divide", "channel", "token", "zero"])),
        need_weights=draw(st.booleans()),
        dropout=draw(st.booleans()),
    )


#: Token-norm ends: 0 or at least 1e-3 (below ~1e-154 a token's squared norm underflows to 0, so
#: the float map is not the real one the rules bound: outside what is tested here).
_radii = st.one_of(st.just(0.0), st.floats(1e-3, 4.0))


@st.composite
def cases(draw: st.DrawFn, functional: bool) -> Case:
    """A random block of 1–3 sublayers, its input and a random domain."""
    d = draw(st.sampled_from([4, 6, 8]))
    inject = draw(st.sampled_from(["none", "add", "cat"]))
    domain_kind = draw(st.sampled_from(["shell", "shell", "sphere", "unbounded"]))
    if domain_kind == "shell":
        r_min = draw(_radii)
        r_max = draw(st.floats(r_min, 4.0))
    elif domain_kind == "sphere":
        r_min = r_max = draw(st.floats(0.1, 4.0))
    else:
        r_min, r_max = 0.0, math.inf
    x_range = None
    if inject != "none" and draw(st.booleans()):
        # a range of positive width: with x_min == x_max the own input's token norms are an ulp
        # off it, which the bound refuses
        lo = draw(_radii)
        x_range = (lo, lo + draw(st.floats(1e-3, 4.0)))
    return Case(
        functional=functional,
        d=d,
        T=draw(st.sampled_from([2, 3, 5])),
        B=draw(st.sampled_from([1, 2])),
        inject=inject,
        inject_style=draw(
            st.sampled_from(["flinear", "matmul"] + ([] if functional else ["module"]))
        ),
        d_x=draw(st.sampled_from([3, d])),
        subs=tuple(draw(st.lists(sublayers(functional), min_size=1, max_size=3))),
        seed=draw(st.integers(0, 2**16)),
        domain_kind=domain_kind,
        r_min=r_min,
        r_max=r_max,
        x_range=x_range,
    )


# ---------------------------------------------------------------------- the checks
#: What the property tests ran: cases, bounds returned, refusals (by reason), values checked.
COUNTS: Counter[str] = Counter()
REFUSALS: Counter[str] = Counter()
#: Per bounded case with a finite bound: the largest sampled value over the bound (≤ 1).
TIGHTNESS: list[float] = []
N_STATES = 8


def _reason(err: InvalidArgumentError) -> str:
    """A short label of a refusal, for the report."""
    text = str(err)
    for key in (
        "no Lipschitz rule for ",
        "the bound does not exist",
        "unbounded",
        "could not be traced",
    ):
        if key in text:
            i = text.index(key)
            return text[i : i + 70].split(" at node")[0]
    return text[:70]


def _project(case: Case, h: torch.Tensor) -> torch.Tensor:
    """``h`` with each token's norm put back into ``[r_min, r_max]``."""
    if case.domain_kind == "unbounded":
        return h
    r = h.norm(dim=-1, keepdim=True)
    target = r.clamp(case.r_min, case.r_max)
    return torch.where(r > 0, h * (target / r), h)


def _states(g: torch.Generator, case: Case, n: int, interior: bool) -> torch.Tensor:
    """``n`` states of the domain: token norms uniform or at the ends of the range (far out, 30,
    for the unbounded domain); ``interior`` keeps them strictly inside a shell. In a quarter of
    the states every token lies on one line (sharp attention patterns)."""
    lo, hi = (0.0, 8.0) if case.domain_kind == "unbounded" else (case.r_min, case.r_max)
    shape = (n, case.T)
    if interior:
        u = 0.02 + 0.96 * torch.rand(*shape, 1, generator=g, dtype=F64)
        r = lo + (hi - lo) * u
    else:
        r = _norms_in(g, shape, lo, hi, ends=True)
        if case.domain_kind == "unbounded":
            r = torch.where(r == hi, torch.full_like(r, 30.0), r)
    h = _tokens(g, (n, case.T, case.d), r)
    line = _tokens(g, (n, 1, case.d), torch.ones(1, dtype=F64))
    sign = torch.where(torch.rand(n, case.T, 1, generator=g) < 0.5, -1.0, 1.0).to(F64)
    aligned = torch.rand(n, 1, 1, generator=g) < 0.25
    return torch.where(aligned, line * sign * r, h)


def _check_inputs(g: torch.Generator, case: Case, system: dy.LoopedSystem) -> torch.Tensor | None:
    """Inputs for the sampled states: the system's own (repeated) when the bound is for them,
    random inputs over the whole range otherwise."""
    if not case.driven:
        return None
    if case.x_range is None:
        own = system.x
        assert own is not None
        return own[torch.arange(N_STATES) % own.shape[0]]
    return _inputs_in(g, N_STATES, case, *case.x_range)


def _tangent_projector(h: torch.Tensor) -> torch.Tensor:
    """``(N, n, n)``: the orthogonal projection onto the tangent space of the product of token
    spheres at each state."""
    n_, T, d = h.shape
    u = h / h.norm(dim=-1, keepdim=True)
    outer = torch.einsum("nti,ntj,ts->ntisj", u, u, torch.eye(T, dtype=F64))
    return torch.eye(T * d, dtype=F64) - outer.reshape(n_, T * d, T * d)


def _check_samples(case: Case, system: dy.LoopedSystem, bound: dy.Bound) -> None:
    """(a) the bound is at least every sampled difference quotient (far and close pairs) and
    every local ‖∂f/∂h‖₂ (tangential on a sphere); (b) every sampled output token norm lies in
    ``bound.out_norms``; (c) with an input range, on random inputs of the range."""
    g = gen(case.seed + 11)
    lip = bound.value
    assert bound.out_norms is not None
    lo, hi = bound.out_norms
    # lo may exceed hi by an ulp (see test_norm_output_interval_is_rounded_outward)
    assert not math.isnan(lip) and lip >= 0 and 0 <= lo <= hi * (1 + REL)
    xs = _check_inputs(g, case, system)
    a = _states(g, case, N_STATES, interior=False)
    b = _states(g, case, N_STATES, interior=False)
    step = 1e-3 * a.norm(dim=-1, keepdim=True).clamp(min=1e-2)
    c = _project(case, a + step * torch.randn(a.shape, generator=g, dtype=F64))
    with torch.no_grad():
        fa, fb, fc = (system.step(z, xs) for z in (a, b, c))
    for f in (fa, fb, fc):
        tok = f.norm(dim=-1)
        assert torch.isfinite(tok).all(), f"non-finite output\n{case}"
        assert float(tok.max()) <= hi * (1 + REL), (
            f"output token norm {float(tok.max())!r} above out_norms {bound.out_norms}\n{case}"
        )
        assert float(tok.min()) >= lo * (1 - REL), (
            f"output token norm {float(tok.min())!r} below out_norms {bound.out_norms}\n{case}"
        )
    COUNTS["outputs"] += 3 * N_STATES
    if math.isinf(lip):
        return
    seen = 0.0
    for u, v, fu, fv in ((a, b, fa, fb), (a, c, fa, fc)):
        num = system.flatten(fu - fv).norm(dim=1)
        den = system.flatten(u - v).norm(dim=1)
        keep = den > 0
        # the computed difference of f is within a few ulps of ‖f‖ of the exact one
        slack = 64 * U64 * (system.flatten(fu).norm(dim=1) + system.flatten(fv).norm(dim=1))
        quotient = num[keep] / den[keep]
        limit = lip * (1 + REL) + slack[keep] / den[keep]
        worst = int((quotient - limit).argmax()) if keep.any() else 0
        assert bool((quotient <= limit).all()), (
            f"difference quotient {float(quotient[worst])!r} above the bound {lip!r}\n{case}"
        )
        COUNTS["pairs"] += int(keep.sum())
        seen = max(seen, float(quotient.max()) if keep.any() else 0.0)
    if case.domain_kind != "unbounded" and case.r_min == case.r_max:  # a sphere (or shell)
        if case.r_min == 0:  # a single state: no direction to differentiate along
            return
        jac = dy.jacobian(system, a, x=xs) @ _tangent_projector(a)
    else:
        h = _states(g, case, N_STATES, interior=True)
        jac = dy.jacobian(system, h, x=xs)
    local = torch.linalg.matrix_norm(jac, ord=2)
    assert float(local.max()) <= lip * (1 + REL), (
        f"local ‖∂f/∂h‖₂ {float(local.max())!r} above the bound {lip!r}\n{case}"
    )
    COUNTS["jacobians"] += N_STATES
    if lip > 0:
        TIGHTNESS.append(max(seen, float(local.max())) / lip)


def _soundness(case: Case) -> None:
    """The property: a bound, when one is returned, is never below a sampled value; a refusal is
    an :class:`InvalidArgumentError` and nothing else."""
    COUNTS["cases"] += 1
    system = build_system(case)
    try:
        bound = dy.lipschitz_upper_bound(system, case.domain())
    except InvalidArgumentError as err:
        COUNTS["refused"] += 1
        REFUSALS[_reason(err)] += 1
        return
    COUNTS["bounded"] += 1
    COUNTS["infinite"] += math.isinf(bound.value)
    assert bound.kind == "upper" and bound.method == "graph" and bound.certified
    if case.driven:
        assert bound.inputs is not None
        assert ("own" in bound.inputs) == (case.x_range is None)
    else:
        assert bound.inputs is None
    _check_samples(case, system, bound)


def _examples(default: int) -> int:
    """``default``, raised to ``$DYNAMO_SOUNDNESS_EXAMPLES`` when that is larger."""
    return max(default, int(os.environ.get(ENV_EXAMPLES, "0") or 0))


def run_property(functional: bool, n: int) -> Counter[str]:
    """Run the soundness property on ``n`` derandomized cases of one half of the grammar; return
    what ran (measured, not assumed)."""
    before = COUNTS.copy()

    @settings(max_examples=n)  # the derandomized profile of conftest.py
    @given(case=cases(functional))
    def prop(case: Case) -> None:
        _soundness(case)

    prop()
    ran = COUNTS.copy()
    ran.subtract(before)
    assert ran["cases"] >= n
    # not vacuous: most cases get a bound to check
    assert ran["bounded"] >= 0.4 * ran["cases"], dict(ran)
    return ran


def test_graph_bounds_are_sound_on_random_module_blocks() -> None:
    run_property(functional=False, n=_examples(DEFAULT_EXAMPLES))


def test_graph_bounds_are_sound_on_random_plain_functions() -> None:
    run_property(functional=True, n=_examples(DEFAULT_EXAMPLES))


@pytest.mark.slow
def test_ten_thousand_random_blocks_without_a_violation() -> None:
    n = _examples(SLOW_EXAMPLES)
    total: Counter[str] = Counter()
    for functional in (False, True):
        total.update(run_property(functional, n))
    tight = sorted(TIGHTNESS)
    print(
        f"\n{total['cases']} cases ({total['bounded']} bounded, of which {total['infinite']} "
        f"infinite; {total['refused']} refused); "
        f"{total['pairs']} difference quotients, {total['jacobians']} Jacobians and "
        f"{total['outputs']} output token-norm samples checked; 0 violations"
    )
    for reason, count in REFUSALS.most_common(12):
        print(f"  refused {count:6d}: {reason}")
    if tight:
        q = [tight[int(p * (len(tight) - 1))] for p in (0.5, 0.9, 0.99, 1.0)]
        print(
            f"  largest sampled value / bound: median {q[0]:.3g}, 90% {q[1]:.3g}, "
            f"99% {q[2]:.3g}, max {q[3]:.6g}"
        )
    assert total["cases"] >= 2 * SLOW_EXAMPLES >= 10_000


def test_functional_concat_recall_is_the_state_block_of_the_weight() -> None:
    """``F.linear(torch.cat([h, x], -1), W, b)`` costs σ_max of W's state columns (R4), as
    ``nn.Linear`` does, and stays sound."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(4, 9, generator=g, dtype=F64)
    b = torch.randn(4, generator=g, dtype=F64)
    x = torch.randn(2, 5, generator=g, dtype=F64)

    def step(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(F.linear(torch.cat([h, x], -1), W, b))

    system = dy.LoopedSystem.from_function(step, state_shape=(4,), x=x)
    bound = dy.lipschitz_upper_bound(system, dy.Domain())
    state_block = float(torch.linalg.matrix_norm(W[:, :4], ord=2))
    assert bound.certified and bound.value == pytest.approx(state_block, rel=1e-12)
    assert state_block < float(torch.linalg.matrix_norm(W, ord=2))
    a = torch.randn(64, 4, generator=g, dtype=F64)
    c = a + 1e-3 * torch.randn(64, 4, generator=g, dtype=F64)
    one = system.with_input(x[:1].expand(64, 5))
    with torch.no_grad():
        q = (one.step(a) - one.step(c)).norm(dim=1) / (a - c).norm(dim=1)
    assert float(q.max()) <= bound.value


# ---------------------------------------------------------------- NaN never reads as a bound
# ``0 · inf`` (a zero constant times an unbounded value) is NaN in float arithmetic; a check or a
# Python ``max`` that skipped it once certified the three maps below.


def test_a_zero_scaled_unbounded_branch_keeps_the_image_bound() -> None:
    """``cat([0.5 tanh(h₁), softplus(h₂)·0 + b])`` along the token axis, ‖b‖ = 5: the image's
    token norms reach 5, outside the ball of radius 1, so invariance is not certified."""
    b = torch.full((1, 3), 5.0 / 3**0.5, dtype=torch.float64)

    def f(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 * torch.tanh(h[:, :1]), F.softplus(h[:, 1:]) * 0.0 + b], dim=1)

    s = dy.LoopedSystem.from_function(f, state_shape=(2, 3))
    ub = dy.lipschitz_upper_bound(s, dy.Domain.ball(1.0))
    assert ub.out_norms is not None and ub.out_norms[1] >= 5.0
    v = dy.check_contraction(s, dy.Domain.ball(1.0), n_samples=4, ascent_steps=2, n_starts=2)
    assert v.verdict is not dy.Verdict.PROVEN


def test_softplus_past_its_switch_behind_a_zero_scaled_branch_is_refused() -> None:
    """``h + (softplus(h)·0 + 20)`` crosses torch's softplus switch at 20, where it jumps."""

    def f(h: torch.Tensor) -> torch.Tensor:
        t = h + (F.softplus(h) * 0.0 + 20.0)
        return torch.sigmoid(0.5 * F.softplus(t) - 10.0)

    s = dy.LoopedSystem.from_function(f, state_shape=(1,))
    with pytest.raises(InvalidArgumentError, match="past its switch"):
        dy.lipschitz_upper_bound(s, dy.Domain.ball(2.0))


def test_a_polynomial_behind_a_zero_scaled_unbounded_branch_is_not_global() -> None:
    """``0.1 · Bistable(h + relu(h)·0)`` on all of space is cubic: no global bound, and no
    PROVEN contraction (iterates from 20 diverge)."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = dy.models.Bistable(n=1, eta=0.2)

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return 0.1 * self.b(h + F.relu(h) * 0.0)

    s = dy.LoopedSystem.from_module(Block(), state_shape=(1,))
    with pytest.raises(InvalidArgumentError, match="not globally Lipschitz"):
        dy.lipschitz_upper_bound(s, dy.Domain())
    v = dy.check_contraction(s, n_samples=4, ascent_steps=2, n_starts=2)
    assert v.verdict is not dy.Verdict.PROVEN


def test_an_undefined_rounding_input_bounds_nothing() -> None:
    from dynamo._lipschitz._arith import up

    assert up(math.nan) == math.inf


def test_the_spectrum_of_a_failed_enclosure_is_undecided_not_a_crash() -> None:
    import numpy as np
    from flint import arb

    from dynamo._interval._ball import precision
    from dynamo._interval._prove import spectrum

    with precision(53):
        for x in (arb("nan"), arb(1e300, 1e300)):
            J = np.array([[arb(0.5), x], [arb(0.001), arb(0.5)]], dtype=object)
            _, (_, rho_hi), _, kind = spectrum(J)
            assert kind is None and not rho_hi < 1
