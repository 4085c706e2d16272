"""LoopedSystem: construction, stepping, iteration, flat and functional views, validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

import dynamo as dy
from dynamo.errors import InvalidArgumentError, MapError, NonDeterministicMapError, ShapeError

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_transformer(**kw: object) -> dy.models.LoopedTransformer:
    args: dict = {"d_model": 16, "n_heads": 2, "seed": 0, **kw}
    return dy.models.LoopedTransformer(**args)


@pytest.mark.parametrize(
    ("recall", "driven"), [("none", False), ("outer", True), ("internal", True)]
)
def test_from_module_knows_driven_or_autonomous(recall: str, driven: bool) -> None:
    x = torch.randn(3, 5, 16, generator=gen(0))
    system = dy.LoopedSystem.from_module(small_transformer(recall=recall), x)
    assert system.driven is driven
    assert system.state_shape == (5, 16)
    assert system.state_dim == 80
    assert system.input_shape == (5, 16)
    assert system.dtype == F64  # analysed in float64 by default
    assert system.n_layers == 1


def test_autonomous_step_ignores_the_input() -> None:
    system = dy.LoopedSystem.from_module(small_transformer(recall="none"), torch.randn(2, 5, 16))
    h = torch.randn(2, 5, 16, dtype=F64, generator=gen(1))
    torch.testing.assert_close(system.step(h), system.step(h, torch.zeros(2, 5, 16, dtype=F64)))


def test_driven_step_depends_on_the_input_and_broadcasts_a_single_one() -> None:
    x = torch.randn(1, 5, 16, generator=gen(0))
    system = dy.LoopedSystem.from_module(small_transformer(recall="outer"), x)
    h = torch.randn(4, 5, 16, dtype=F64, generator=gen(1))
    out = system.step(h)
    for i in range(4):
        torch.testing.assert_close(out[i : i + 1], system.step(h[i : i + 1]))
    other = system.step(h, torch.randn(4, 5, 16, dtype=F64, generator=gen(2)))
    assert float((other - out).abs().max()) > 1e-3


def test_from_module_leaves_the_callers_module_alone() -> None:
    model = small_transformer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    system = dy.LoopedSystem.from_module(model, torch.randn(2, 5, 16))
    assert system.module is not model  # a float64 copy
    assert next(model.parameters()).dtype == torch.float32
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    same = dy.LoopedSystem.from_module(model, torch.randn(2, 5, 16), dtype=None)
    assert same.module is model and same.dtype == torch.float32


def test_iterate_records_states_and_residuals() -> None:
    system = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=6, seed=0), torch.ones(2, 6))
    h0 = torch.zeros(2, 6, dtype=F64)
    traj = system.iterate(h0, n_steps=5)
    assert traj.states is not None
    assert traj.states.shape == (6, 2, 6)
    assert traj.n_steps == 5
    for t in range(5):
        torch.testing.assert_close(traj.states[t + 1], system.step(traj.states[t]))
        diff = (traj.states[t + 1] - traj.states[t]).norm(dim=1)
        torch.testing.assert_close(traj.residuals[t], diff)
        torch.testing.assert_close(traj.relative_residuals[t], diff / traj.states[t].norm(dim=1))
    light = system.iterate(h0, n_steps=5, record=False)
    assert light.states is None
    torch.testing.assert_close(light.final, traj.states[-1])
    assert "5 steps" in str(traj)
    assert len(traj.to_dict()["residuals"]) == 2


def test_flat_views_round_trip() -> None:
    system = dy.LoopedSystem.from_module(small_transformer(), torch.randn(3, 5, 16))
    h = torch.randn(3, 5, 16, dtype=F64, generator=gen(0))
    z = system.flatten(h)
    assert z.shape == (3, 80)
    torch.testing.assert_close(system.unflatten(z), h)
    torch.testing.assert_close(system.flat_step(z), system.flatten(system.step(h)))


def test_functional_step_vmaps_over_stacked_weight_draws() -> None:
    x = torch.randn(2, 5, 16, generator=gen(0), dtype=F64)
    models = [small_transformer(seed=s).double() for s in range(3)]
    systems = [dy.LoopedSystem.from_module(m, x) for m in models]
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    h = torch.randn(2, 5, 16, dtype=F64, generator=gen(1))
    base = systems[0]

    def one(p: dict, b: dict) -> torch.Tensor:
        return base.functional_step(p, h, buffers=b)

    batched = vmap(one)(params, buffers)
    for i, s in enumerate(systems):
        torch.testing.assert_close(batched[i], s.step(h), rtol=0, atol=1e-13)
        torch.testing.assert_close(s.functional_step(s.params, h), s.step(h))
    assert set(base.params) == {k for k, _ in models[0].named_parameters()}


@pytest.mark.parametrize("recall", ["none", "outer", "internal"])
@pytest.mark.parametrize("norm", ["none", "pre", "post", "sandwich", "outer"])
def test_layer_maps_compose_to_the_block(recall: str, norm: str) -> None:
    x = torch.randn(2, 5, 16, generator=gen(0))
    system = dy.LoopedSystem.from_module(small_transformer(recall=recall, norm=norm, n_layers=3), x)
    assert system.layers is not None and len(system.layers) == 3
    h = torch.randn(2, 5, 16, dtype=F64, generator=gen(1))
    out = h
    with torch.no_grad():
        for layer in system.layers:
            out = layer(out, system.x)
        torch.testing.assert_close(out, system.step(h), rtol=0, atol=1e-13)


def test_from_function_autonomous_and_driven() -> None:
    auto = dy.LoopedSystem.from_function(lambda h: 0.5 * h, state_shape=(2, 3))
    assert not auto.driven and auto.x is None and auto.state_shape == (2, 3)
    torch.testing.assert_close(
        auto.step(torch.ones(1, 2, 3, dtype=F64)), torch.full((1, 2, 3), 0.5, dtype=F64)
    )
    driven = dy.LoopedSystem.from_function(
        lambda h, x: 0.5 * h + x, (3,), x=torch.ones(1, 3, dtype=F64)
    )
    assert driven.driven and driven.params == {}
    torch.testing.assert_close(
        driven.step(torch.zeros(2, 3, dtype=F64)), torch.ones(2, 3, dtype=F64)
    )


def test_initial_states() -> None:
    x = torch.randn(3, 4, generator=gen(0), dtype=F64)
    system = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=4, seed=0), x)
    zeros = system.initial_states("zeros", 2)
    assert zeros.shape == (6, 4) and not zeros.any()
    a = system.initial_states("normal", 2, seed=7)
    torch.testing.assert_close(a, system.initial_states("normal", 2, seed=7))
    assert not torch.equal(a, system.initial_states("normal", 2, seed=8))
    inp = system.initial_states("input", 3, scale=0.1, seed=1).reshape(3, 3, 4)
    torch.testing.assert_close(inp[:, 0], x)  # the first start of each input is the input itself
    assert float((inp[:, 1:] - x[:, None]).abs().max()) > 0
    torch.testing.assert_close(system.repeat_input(3).x, x.repeat_interleave(3, dim=0))
    with pytest.raises(InvalidArgumentError, match="unknown kind 'uniform'"):
        system.initial_states("uniform")


def test_to_changes_dtype_and_keeps_the_map() -> None:
    system = dy.LoopedSystem.from_module(dy.models.Henon())
    s32 = system.to(torch.float32)
    assert s32.dtype == torch.float32
    h = torch.tensor([[0.1, 0.2]])
    torch.testing.assert_close(s32.step(h), system.step(h.double()).float())


def test_with_input_swaps_the_input() -> None:
    system = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=3, seed=1), torch.zeros(1, 3))
    other = system.with_input(torch.ones(2, 3))
    assert other.x is not None and other.x.dtype == F64 and other.x.shape == (2, 3)
    with pytest.raises(ShapeError, match="per-example shape"):
        system.with_input(torch.ones(2, 4))


def test_repr_says_what_the_system_is() -> None:
    system = dy.LoopedSystem.from_module(small_transformer(n_layers=2), torch.randn(2, 5, 16))
    assert repr(system) == (
        "LoopedSystem(LoopedTransformer: driven, state_shape=(5, 16), input batch 2, 2 layers, "
        "float64, cpu)"
    )


# ---------------------------------------------------------------------- validation
class _NoisyBlock(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + 0.1 * torch.randn_like(h)


class _DropoutBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.drop = nn.Dropout(0.1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.drop(self.lin(h))


def test_train_mode_dropout_is_refused_with_the_fix() -> None:
    block = _DropoutBlock()
    with pytest.raises(
        NonDeterministicMapError, match=r"Dropout\(p=0.1\) at 'drop'.*module.eval\(\)"
    ):
        dy.LoopedSystem.from_module(block, state_shape=(4,))
    system = dy.LoopedSystem.from_module(block.eval(), state_shape=(4,))
    assert not system.driven


def test_train_mode_batchnorm_is_refused() -> None:
    block = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(NonDeterministicMapError, match="BatchNorm1d at '1' is in train mode"):
        dy.LoopedSystem.from_module(block, state_shape=(4,))


def test_random_map_is_refused() -> None:
    with pytest.raises(NonDeterministicMapError, match="two evaluations of the map"):
        dy.LoopedSystem.from_module(_NoisyBlock(), state_shape=(4,))


def test_batch_coupled_map_is_refused() -> None:
    with pytest.raises(NonDeterministicMapError, match="depends on the other examples"):
        dy.LoopedSystem.from_function(lambda h: h - h.mean(dim=0, keepdim=True), state_shape=(3,))


def test_map_that_changes_the_shape_is_refused() -> None:
    with pytest.raises(ShapeError, match=r"returned \(2, 2\) for a state batch of shape \(2, 3\)"):
        dy.LoopedSystem.from_function(lambda h: h[:, :2], state_shape=(3,))


def test_map_that_raises_is_reported_with_its_cause() -> None:
    def broken(h: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(InvalidArgumentError, match="raised RuntimeError: boom"):
        dy.LoopedSystem.from_function(broken, state_shape=(3,))


def test_input_errors() -> None:
    model = small_transformer(recall="outer")
    with pytest.raises(InvalidArgumentError, match=r"the block is driven .* but x is None"):
        dy.LoopedSystem.from_module(model)
    with pytest.raises(ShapeError, match="x must have shape"):
        dy.LoopedSystem.from_module(model, torch.randn(5, 16))
    with pytest.raises(InvalidArgumentError, match="x contains NaN or inf"):
        dy.LoopedSystem.from_module(model, torch.full((1, 5, 16), math.inf))
    with pytest.raises(InvalidArgumentError, match=r"module must be a torch\.nn\.Module"):
        dy.LoopedSystem.from_module(lambda h: h)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="state_shape must hold positive sizes"):
        dy.LoopedSystem.from_function(lambda h: h, state_shape=(0, 3))


def test_step_shape_errors() -> None:
    system = dy.LoopedSystem.from_module(small_transformer(), torch.randn(2, 5, 16))
    with pytest.raises(ShapeError, match=r"h has shape \(2, 5, 15\)"):
        system.step(torch.zeros(2, 5, 15, dtype=F64))
    with pytest.raises(ShapeError, match="h has batch size 3 but the input has batch size 2"):
        system.step(torch.zeros(3, 5, 16, dtype=F64))
    with pytest.raises(InvalidArgumentError, match="n_steps must be >= 1"):
        system.iterate(torch.zeros(2, 5, 16, dtype=F64), n_steps=0)


def test_module_without_x_needs_a_state_shape() -> None:
    with pytest.raises(InvalidArgumentError, match="pass state_shape"):
        dy.LoopedSystem.from_module(nn.Linear(3, 3))
    system = dy.LoopedSystem.from_module(nn.Linear(3, 3), state_shape=(3,))
    assert system.state_shape == (3,) and not system.driven


def test_functional_call_matches_for_plain_modules() -> None:
    lin = nn.Linear(3, 3).double()
    system = dy.LoopedSystem.from_module(lin, state_shape=(3,))
    h = torch.randn(2, 3, dtype=F64, generator=gen(0))
    torch.testing.assert_close(
        system.functional_step(system.params, h),
        functional_call(lin, dict(lin.named_parameters()), (h,)),
    )


# ---------------------------------------------------------------------- issue 13, item 5
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda m, x: dy.LoopedSystem.from_module(m, x, dtype=torch.int64),
            r"from_module\(module, x, dtype=torch\.int64\): dtype must be one of torch\.float64, "
            r"torch\.float32, torch\.bfloat16, torch\.float16 or None .*, got torch\.int64",
        ),
        (
            lambda m, x: dy.LoopedSystem.from_module(m, x, dtype="float64"),
            r"dtype must be .* got the string 'float64'; pass torch\.float64",
        ),
        (
            lambda m, x: dy.LoopedSystem.from_function(lambda h: h, (3,), dtype=torch.complex128),
            r"from_function\(fn, state_shape, dtype=torch\.complex128\): dtype must be one of "
            r"torch\.float64.*, got torch\.complex128",
        ),
        (
            lambda m, x: dy.LoopedSystem.from_module(m, x).to(torch.int32),
            r"LoopedSystem\.to\(dtype=torch\.int32\): dtype must be .* got torch\.int32",
        ),
        (
            lambda m, x: dy.LoopedSystem.from_module(m, x).to("cuda"),
            r"dtype must be .* got the string 'cuda'; to move the system, pass device='cuda'",
        ),
    ],
    ids=["int64", "name", "complex", "to-int32", "to-device-as-dtype"],
)
def test_dtype_must_be_a_floating_torch_dtype(build: Any, match: str) -> None:
    """A torch dtype, not its name (torch's own API takes no names either), and a floating one."""
    with pytest.raises(InvalidArgumentError, match=match):
        build(dy.models.ContractiveTanh(n=3, seed=0), torch.zeros(1, 3))


def test_state_shape_given_as_a_tensor_is_named_not_printed() -> None:
    h = torch.randn(40, 3, generator=gen(0))  # a state batch passed where its shape belongs
    for build in (
        lambda: dy.LoopedSystem.from_function(lambda h: h / 2, state_shape=h),
        lambda: dy.LoopedSystem.from_module(nn.Linear(3, 3), state_shape=h),
    ):
        with pytest.raises(InvalidArgumentError, match="state_shape") as err:
            build()
        assert "got a tensor <tensor (40, 3) float32>" in str(err.value)
        assert len(str(err.value)) < 300  # the tensor's values are not in the message
    with pytest.raises(InvalidArgumentError, match=r"got \(2, 3\.0\) \(entry 3\.0 is not an int\)"):
        dy.LoopedSystem.from_function(lambda h: h / 2, state_shape=(2, 3.0))
    system = dy.LoopedSystem.from_function(lambda h: h / 2, state_shape=torch.Size([2, 3]))
    assert system.state_shape == (2, 3)


def _grows_after(calls: int) -> Any:
    """A map that returns the state's shape for ``calls`` calls (the probe passes), then adds an
    entry: its output shape changes in the middle of an iteration."""
    count = [0]

    def f(h: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        out = 0.5 * torch.tanh(h)
        return torch.cat([out, out[:, :1]], dim=1) if count[0] > calls else out

    return f


def test_map_that_changes_shape_mid_iteration_is_reported_where() -> None:
    system = dy.LoopedSystem.from_function(_grows_after(5), state_shape=(3,))  # 3 probe calls
    h = torch.ones(2, 3, dtype=F64)
    with pytest.raises(
        ShapeError,
        match=r"LoopedSystem\.iterate\(h0, n_steps=20\): at step 2 \(h_2 -> h_3\) the map "
        r"returned shape \(2, 4\) for a state batch of shape \(2, 3\); .* \(N, 3\) on every call",
    ):
        system.iterate(h, n_steps=20)
    with pytest.raises(
        ShapeError, match=r"LoopedSystem\.step\(h\): the map returned shape \(2, 4\)"
    ):
        system.step(h)
    for method in ("picard", "anderson", "broyden", "newton_krylov"):
        grown = dy.LoopedSystem.from_function(_grows_after(5), state_shape=(3,))
        # inside solve: where (the call, the iteration, the starts) and what, the check's own
        # ShapeError chained as the cause
        with pytest.raises(
            MapError,
            match=rf"solve\(system, h0, method='{method}'\): evaluating the map raised ShapeError "
            r"at iteration \d+ \(evaluating starts 0, 1\): .*returned shape \(2, 4\) for a "
            r"state batch",
        ) as info:
            dy.solve(grown, h, method=method)
        assert isinstance(info.value.__cause__, ShapeError)


def test_same_size_reshape_mid_iteration_is_not_analysed_silently() -> None:
    """A (2, 3) state returned as (3, 2) has as many entries: the solvers' flat view would take
    it and analyse the entries in the wrong places."""
    count = [0]

    def f(h: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        out = 0.5 * torch.tanh(h)
        return out.reshape(h.shape[0], 3, 2) if count[0] > 5 else out

    system = dy.LoopedSystem.from_function(f, state_shape=(2, 3))
    with pytest.raises(
        MapError, match=r"f\(h\): the map returned shape \(1, 3, 2\) for a state"
    ) as e:
        dy.solve(system, torch.ones(1, 2, 3, dtype=F64), method="picard")
    assert isinstance(e.value.__cause__, ShapeError)


def test_function_returning_float64_for_a_float32_state_is_refused_at_the_probe() -> None:
    """Issue 13: a closure over float64 weights, converted with .to(float32), ran on and crashed
    deep in the solver ("Index put requires the source and destination dtypes match")."""
    w = torch.tensor([0.5, 0.4, 0.3], dtype=F64)
    system = dy.LoopedSystem.from_function(lambda h: torch.tanh(h * w), state_shape=(3,))
    with pytest.raises(
        InvalidArgumentError,
        match=r"LoopedSystem\.to\(dtype=torch\.float32\): the map returned float64 for a float32 "
        r"state; a looped block must return its state's dtype",
    ):
        system.to(dtype=torch.float32)
    with pytest.raises(InvalidArgumentError, match="returned float64 for a float32 state"):
        dy.LoopedSystem.from_function(
            lambda h: torch.tanh(h * w), state_shape=(3,), dtype=torch.float32
        )
    follows = dy.LoopedSystem.from_function(lambda h: torch.tanh(h * w.to(h.dtype)), (3,))
    s32 = follows.to(dtype=torch.float32)
    sol = dy.solve(s32, torch.ones(2, 3), method="anderson")
    assert sol.all_converged and sol.state.dtype == torch.float32


def test_a_negative_or_too_large_seed_is_refused_not_wrapped() -> None:
    """torch.Generator.manual_seed(-1) silently means 2**64 - 1: the seed check lives where the
    generator is made, so every verb (and verify, which imports it) refuses alike."""
    system = dy.LoopedSystem.from_function(torch.tanh, state_shape=(3,))
    for bad in (-1, 2**63):
        with pytest.raises(InvalidArgumentError, match=rf"seed={bad}: Input should be"):
            system.initial_states("normal", 2, seed=bad)
        with pytest.raises(InvalidArgumentError, match=rf"seed={bad}: Input should be"):
            dy.find_fixed_points(system, 4, seed=bad)
    assert system.initial_states("normal", 2, seed=2**63 - 1).shape == (2, 3)


def test_a_users_block_offers_the_protocols_and_dynamo_uses_them() -> None:
    """Issue 14: what a block may offer is a declared Protocol, read by isinstance."""
    from dynamo.protocols import DeclaresDriven, Encodes, LayerMaps, StateShapeFor, offers

    class TwoLayers(torch.nn.Module):
        driven = True

        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)

        def state_shape_for(self, x: torch.Tensor) -> tuple[int, ...]:
            return (4,)

        def layer_maps(self) -> list:  # type: ignore[type-arg]
            return [lambda h, x: torch.tanh(self.a(h) + x), lambda h, x: torch.tanh(self.b(h))]

        def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            for f in self.layer_maps():
                h = f(h, x)
            return h

    block = TwoLayers()
    assert offers(block, DeclaresDriven) and offers(block, StateShapeFor)
    assert offers(block, LayerMaps) and not offers(block, Encodes)
    x = torch.randn(2, 6, dtype=torch.float64)[:, :4]
    system = dy.LoopedSystem.from_module(block, x)
    assert system.driven and system.state_shape == (4,)
    assert system.layers is not None and len(system.layers) == 2
    # a plain module offers none of them, and dynamo falls back to forward's signature and x
    plain = torch.nn.Linear(4, 4)
    assert not offers(plain, DeclaresDriven) and not offers(plain, LayerMaps)
    # looked up as attribute access does: a submodule called encode counts, as it did before
    plain.encode = torch.nn.Identity()
    assert offers(plain, Encodes)
    assert dy.LoopedSystem.from_module(plain, state_shape=(4,)).driven is False
