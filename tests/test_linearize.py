"""Dense and matrix-free Jacobians against finite differences and each other."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.autograd.function import once_differentiable

import dynamo as dy
from dynamo.errors import InvalidArgumentError, MapError, ShapeError

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def transformer(
    recall: str = "outer", norm: str = "outer", d: int = 8, T: int = 4
) -> dy.LoopedSystem:
    m = dy.models.LoopedTransformer(d_model=d, n_heads=2, recall=recall, norm=norm, seed=2)
    return dy.LoopedSystem.from_module(m, torch.randn(2, T, d, generator=gen(0)))


def central_difference(system: dy.LoopedSystem, h: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    z = system.flatten(h)
    n = z.shape[1]
    cols = []
    with torch.no_grad():
        for j in range(n):
            e = torch.zeros_like(z)
            e[:, j] = eps
            cols.append((system.flat_step(z + e) - system.flat_step(z - e)) / (2 * eps))
    return torch.stack(cols, dim=2)


@pytest.mark.parametrize("recall", ["none", "outer", "internal"])
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_jacobian_matches_finite_differences(recall: str, mode: str) -> None:
    system = transformer(recall=recall)
    h = torch.randn(2, 4, 8, generator=gen(1), dtype=F64)
    J = dy.jacobian(system, h, mode=mode)
    assert J.shape == (2, 32, 32)
    torch.testing.assert_close(J, central_difference(system, h), rtol=1e-6, atol=1e-7)


def test_chunked_jacobians_are_identical() -> None:
    system = transformer()
    h = torch.randn(2, 4, 8, generator=gen(1), dtype=F64)
    full = dy.jacobian(system, h)
    for mode in ["reverse", "forward"]:
        torch.testing.assert_close(
            dy.jacobian(system, h, mode=mode, chunk_size=5), full, rtol=0, atol=1e-13
        )


def test_input_jacobian_matches_finite_differences() -> None:
    system = transformer(recall="internal")
    h = torch.randn(2, 4, 8, generator=gen(1), dtype=F64)
    Jx = dy.input_jacobian(system, h)
    assert system.x is not None
    x = system.x.clone()
    eps = 1e-6
    cols = []
    with torch.no_grad():
        for j in range(32):
            e = torch.zeros(2, 32, dtype=F64)
            e[:, j] = eps
            plus = system.flat_step(system.flatten(h), (x.reshape(2, -1) + e).reshape(x.shape))
            minus = system.flat_step(system.flatten(h), (x.reshape(2, -1) - e).reshape(x.shape))
            cols.append((plus - minus) / (2 * eps))
    torch.testing.assert_close(Jx, torch.stack(cols, dim=2), rtol=1e-6, atol=1e-7)


def test_input_jacobian_of_an_autonomous_map_is_refused_with_the_reason() -> None:
    system = transformer(recall="none")
    with pytest.raises(InvalidArgumentError, match="zero by construction"):
        dy.input_jacobian(system, torch.zeros(2, 4, 8, dtype=F64))


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_operator_products_match_the_dense_jacobian(mode: str) -> None:
    system = transformer(norm="sandwich")
    h = torch.randn(2, 4, 8, generator=gen(3), dtype=F64)
    J = dy.jacobian(system, h)
    op = dy.jacobian_operator(system, h, mode=mode)
    v = torch.randn(2, 32, generator=gen(4), dtype=F64)
    torch.testing.assert_close(op.matvec(v), torch.einsum("bij,bj->bi", J, v), rtol=0, atol=1e-13)
    torch.testing.assert_close(op.rmatvec(v), torch.einsum("bij,bi->bj", J, v), rtol=0, atol=1e-13)
    assert op.counts == {"matvec": 1, "rmatvec": 1}
    torch.testing.assert_close(op.dense(), J, rtol=0, atol=1e-13)


def test_scipy_view_is_a_linear_operator_of_one_state() -> None:
    system = transformer()
    h = torch.randn(2, 4, 8, generator=gen(3), dtype=F64)
    J = dy.jacobian(system, h)
    L = dy.jacobian_operator(system, h).scipy(1)
    v = np.random.default_rng(0).standard_normal(32)
    np.testing.assert_allclose(L.matvec(v), J[1].numpy() @ v, atol=1e-13)
    np.testing.assert_allclose(L.rmatvec(v), J[1].numpy().T @ v, atol=1e-13)
    with pytest.raises(InvalidArgumentError, match=r"index must be in \[0, 2\)"):
        dy.jacobian_operator(system, h).scipy(2)


def test_bad_states_are_refused() -> None:
    system = transformer()
    with pytest.raises(ShapeError, match=r"h has shape \(2, 4, 7\)"):
        dy.jacobian(system, torch.zeros(2, 4, 7, dtype=F64))
    bad = torch.zeros(2, 4, 8, dtype=F64)
    bad[1, 0, 0] = float("nan")
    with pytest.raises(InvalidArgumentError, match="h contains NaN or inf"):
        dy.jacobian_operator(system, bad)
    with pytest.raises(InvalidArgumentError, match="unknown mode 'central'"):
        dy.jacobian(system, torch.zeros(2, 4, 8, dtype=F64), mode="central")
    with pytest.raises(InvalidArgumentError, match="chunk_size must be >= 1"):
        dy.jacobian(system, torch.zeros(2, 4, 8, dtype=F64), chunk_size=0)


@pytest.mark.parametrize("recall", ["none", "outer", "internal"])
@pytest.mark.parametrize("norm", ["none", "pre", "post", "sandwich", "outer"])
def test_every_architecture_works_under_torch_func(recall: str, norm: str) -> None:
    """Issue 3: dense, matrix-free and spectral paths agree on every recall × norm combination."""
    system = transformer(recall=recall, norm=norm)
    h = torch.randn(2, 4, 8, generator=gen(5), dtype=F64)
    J = dy.jacobian(system, h)
    op = dy.jacobian_operator(system, h)
    torch.testing.assert_close(op.dense(), J, rtol=0, atol=1e-12)
    est = dy.spectral_norm(system, h)
    torch.testing.assert_close(est.values, torch.linalg.matrix_norm(J, ord=2), rtol=1e-10, atol=0)


class _Opaque(torch.autograd.Function):
    """``g -> g`` with no derivative of its own, as a fused kernel's backward."""

    @staticmethod
    def forward(g: torch.Tensor) -> torch.Tensor:
        return g.clone()

    @staticmethod
    def setup_context(ctx: object, inputs: object, output: object) -> None:
        pass

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("derivative for opaque_backward is not implemented")


class _TanhOnce(torch.autograd.Function):
    """tanh whose backward is ``once_differentiable`` (its double vjp is silently zero)."""

    @staticmethod
    def forward(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)

    @staticmethod
    def setup_context(ctx: Any, inputs: object, output: torch.Tensor) -> None:
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return t * (1 - y * y)


class _TanhOpaque(_TanhOnce):
    """tanh whose backward goes through an op without a derivative (its double vjp raises)."""

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return _Opaque.apply(g) * (1 - y * y)


class _TanhOnceNoJvp(_TanhOnce):
    jvp = torch.autograd.Function.jvp  # forward mode unsupported too


_W = torch.tensor([[0.5, 0.2, 0.0], [-0.1, 0.4, 0.3], [0.2, 0.0, -0.3]], dtype=F64)


@pytest.mark.parametrize(
    ("fn", "skip", "why"),
    [
        (_TanhOnce, 0.0, "disagrees with the vjp"),  # J v silently 0
        (_TanhOnce, 0.5, "disagrees with the vjp"),  # J v silently 0.5 v: part of J dropped
        (_TanhOpaque, 0.0, "the first J v raised RuntimeError"),  # raised at the first product
    ],
)
def test_operator_falls_back_to_forward_mode_without_double_backward(
    fn: type[torch.autograd.Function], skip: float, why: str
) -> None:
    """Issue 13: the reverse-over-reverse product of a map without double backward raised at
    the first product, or (once_differentiable) came out silently wrong; the operator checks it
    before use and differentiates in forward mode instead, exactly."""
    system = dy.LoopedSystem.from_function(
        lambda h: fn.apply(h @ _W.T + 0.1) + skip * h, state_shape=(3,)
    )
    h = torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.5, -0.4]], dtype=F64)
    y = torch.tanh(h @ _W.T + 0.1)
    J = (1 - y * y)[:, :, None] * _W + skip * torch.eye(3, dtype=F64)
    op = dy.jacobian_operator(system, h)
    torch.testing.assert_close(op.dense(), J, rtol=0, atol=1e-15)
    assert op.mode == "forward" and op.fallback is not None and why in op.fallback
    est = dy.spectral_norm(system, h)
    torch.testing.assert_close(est.values, torch.linalg.matrix_norm(J, ord=2), rtol=1e-12, atol=0)


def test_operator_says_when_no_mode_of_differentiation_works() -> None:
    system = dy.LoopedSystem.from_function(
        lambda h: _TanhOnceNoJvp.apply(h @ _W.T + 0.1), state_shape=(3,)
    )
    op = dy.jacobian_operator(system, torch.zeros(1, 3, dtype=F64))
    with pytest.raises(MapError, match=r"supports neither .* jvp staticmethod"):
        op.matvec(torch.ones(1, 3, dtype=F64))
