"""A user's attention block through every Jacobian-based verb (issue 13, item 2).

torch's fused CPU attention kernels (``F.scaled_dot_product_attention``'s flash kernel, the
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` fast path) have no forward-mode rule and
no double backward, so these verbs used to fail on every textbook block. dynamo now runs the map
through the math kernels whenever it differentiates or vmaps it. The three blocks below are what a
user writes; each is checked against finite differences and dense linear algebra.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dynamo as dy
from dynamo._compat import math_attention

F64 = torch.float64
D, HEADS = 8, 2


class MultiheadBlock(nn.Module):
    """``h -> LayerNorm(h + MHA(h + x))``: a textbook post-norm attention block with recall."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)
        self.norm = nn.LayerNorm(D)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u = h + x
        return self.norm(h + self.attn(u, u, u, need_weights=False)[0])


class SDPABlock(nn.Module):
    """The same block written on ``F.scaled_dot_product_attention``, as Hugging Face models are."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)
        self.norm = nn.LayerNorm(D)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, t, d = h.shape
        q, k, v = (
            z.reshape(n, t, HEADS, d // HEADS).transpose(1, 2)
            for z in self.qkv(h + x).chunk(3, dim=-1)
        )
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        return self.norm(h + self.out(o))


class EncoderBlock(nn.Module):
    """``nn.TransformerEncoderLayer`` (default dropout, eval mode) with additive recall."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(D, HEADS, dim_feedforward=16, batch_first=True)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.layer(h + x)


BLOCKS: dict[str, Callable[[], nn.Module]] = {
    "multihead": MultiheadBlock,
    "sdpa": SDPABlock,
    "encoder_layer": EncoderBlock,
}


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def block(name: str) -> nn.Module:
    with torch.random.fork_rng():  # the user's default initialisation, from a fixed seed
        torch.manual_seed(0)
        return BLOCKS[name]().eval()


def system(name: str, T: int = 4, n_inputs: int = 1) -> dy.LoopedSystem:
    return dy.LoopedSystem.from_module(block(name), torch.randn(n_inputs, T, D, generator=gen(1)))


def central_difference(s: dy.LoopedSystem, h: torch.Tensor, eps: float) -> torch.Tensor:
    z = s.flatten(h)
    cols = []
    with torch.no_grad():
        for j in range(z.shape[1]):
            e = torch.zeros_like(z)
            e[:, j] = eps
            cols.append((s.flat_step(z + e) - s.flat_step(z - e)) / (2 * eps))
    return torch.stack(cols, dim=2)


@pytest.mark.parametrize("name", BLOCKS)
def test_the_fused_kernels_and_the_math_kernels_agree(name: str) -> None:
    """A plain forward keeps torch's fused kernels, a differentiated one runs the math kernels:
    the map analysed is the same function to rounding."""
    m = block(name).double()
    h = torch.randn(16, 4, D, generator=gen(2), dtype=F64)
    x = torch.randn(16, 4, D, generator=gen(3), dtype=F64)
    with torch.no_grad():
        fused = m(h, x)
        with math_attention():
            reference = m(h, x)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-12)


def _residual_ok(s: dy.LoopedSystem, sol: dy.Solution) -> bool:
    """The solver's criterion, evaluated again outside the solver."""
    with torch.no_grad():
        r = s.flatten(s.step(sol.state) - sol.state).norm(dim=1)
    return bool((r <= sol.atol + sol.tol * s.flatten(sol.state).norm(dim=1)).all())


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("method", ["anderson", "broyden"])
def test_solve_reaches_a_fixed_point(name: str, method: str) -> None:
    s = system(name)
    sol = dy.solve(s, s.initial_states("normal", 2, seed=2), method=method)
    assert sol.all_converged and _residual_ok(s, sol)


@pytest.mark.parametrize("name", BLOCKS)
def test_newton_krylov_converges_to_a_nearby_fixed_point(name: str) -> None:
    """Newton steps need ``J v`` through the attention (the products that used to raise). Newton
    is a local method: from within 5% of a fixed point it must converge, and to that point."""
    s = system(name)
    h_star = dy.solve(s, s.initial_states("normal", 1, seed=2), method="anderson").state
    noise = torch.randn(h_star.shape, generator=gen(4), dtype=F64)
    h0 = h_star + 0.05 * h_star.norm() / noise.norm() * noise
    sol = dy.solve(s, h0, method="newton_krylov")
    assert sol.all_converged and _residual_ok(s, sol)
    torch.testing.assert_close(sol.state, h_star, rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_jacobian_matches_central_differences(name: str, mode: str) -> None:
    """Step 1e-5: truncation ~1e-10·|f'''| and rounding ~eps·|f|/1e-5 ~ 1e-10 (measured 5e-11 to
    7e-11 at entries up to 1.5); 1e-9 leaves a factor 10."""
    s = system(name)
    h = s.initial_states("normal", 2, seed=2)
    J = dy.jacobian(s, h, mode=mode)
    torch.testing.assert_close(J, central_difference(s, h, 1e-5), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", BLOCKS)
def test_operator_and_spectral_norm_match_dense_linear_algebra(name: str) -> None:
    s = system(name)
    h = s.initial_states("normal", 2, seed=2)
    J = dy.jacobian(s, h)
    op = dy.jacobian_operator(s, h)
    torch.testing.assert_close(op.dense(), J, rtol=0, atol=1e-12)
    assert op.mode == "reverse"  # reverse-over-reverse passed its check: no forward fallback
    est = dy.spectral_norm(s, h)
    torch.testing.assert_close(est.values, torch.linalg.matrix_norm(J, ord=2), rtol=1e-10, atol=0)


@pytest.mark.parametrize("name", BLOCKS)
def test_find_fixed_points_all(name: str) -> None:
    """Mode "all" (Newton, minimisation, bridges: all through Jacobian products) on a two-token
    state; each point is checked again: residual, and spectral radius from the dense Jacobian."""
    s = system(name, T=2)
    found = dy.find_fixed_points(s, 4, mode="all", seed=0)
    assert found.points, "mode 'all' found no fixed point"
    for p in found.points:
        h = p.state[None]
        with torch.no_grad():
            r = float(s.flatten(s.step(h) - h).norm())
        assert r <= found.tol * max(1.0, float(h.norm()))
        rho = float(torch.linalg.eigvals(dy.jacobian(s, h)[0]).abs().max())
        assert p.spectral_radius == pytest.approx(rho, rel=1e-8)
        assert (p.stability == "stable") == (rho < 1)


@pytest.mark.parametrize("name", BLOCKS)
def test_input_dependence_matches_the_dense_implicit_function(name: str) -> None:
    """``‖dh*/dx‖₂`` against ``(I − ∂_h f)⁻¹ ∂_x f`` formed densely at each h*, and its rank by
    the documented rule: singular values of ``∂_x f`` above ``√eps`` relative to the largest."""
    s = system(name, n_inputs=2)
    inputs = s.x
    assert inputs is not None
    dep = dy.input_dependence(s, inputs, n_starts=2)
    assert bool(dep.converged.all())
    for b in range(inputs.shape[0]):
        sb = s.with_input(inputs[b : b + 1])
        h = dep.fixed_points[b : b + 1]
        Jh, Jx = dy.jacobian(sb, h)[0], dy.input_jacobian(sb, h)[0]
        S = torch.linalg.solve(torch.eye(Jh.shape[0], dtype=F64) - Jh, Jx)
        assert float(dep.sensitivity_norm[b]) == pytest.approx(
            float(torch.linalg.svdvals(S)[0]), rel=1e-6
        )
        sx = torch.linalg.svdvals(Jx)
        rank = int((sx > torch.finfo(F64).eps ** 0.5 * sx[0]).sum())
        assert int(dep.sensitivity_rank[b]) == rank


@pytest.mark.parametrize("name", BLOCKS)
def test_geometry_matches_the_dense_jacobian(name: str) -> None:
    s = system(name)
    h = dy.solve(s, s.initial_states("normal", 1, seed=2)).state
    g = dy.geometry(s, h, basin_samples=4, radii=(0.1,))
    J = dy.jacobian(s, h)[0]
    eye = torch.eye(J.shape[0], dtype=F64)
    rho = torch.linalg.eigvals(J).abs().max()
    assert float(g.spectral_radius[0]) == pytest.approx(float(rho), rel=1e-8)
    assert float(g.spectral_norm[0]) == pytest.approx(float(torch.linalg.svdvals(J)[0]), rel=1e-8)
    assert float(g.sigma_min[0]) == pytest.approx(
        float(torch.linalg.svdvals(eye - J)[-1]), rel=1e-8
    )
    assert g.ift_norm is not None
    Jx = dy.input_jacobian(s, h)[0]
    ift = torch.linalg.svdvals(torch.linalg.solve(eye - J, Jx))[0]
    assert float(g.ift_norm[0]) == pytest.approx(float(ift), rel=1e-6)


def _attention_settings() -> tuple[bool, ...]:
    cuda = torch.backends.cuda
    return (
        cuda.flash_sdp_enabled(),
        cuda.mem_efficient_sdp_enabled(),
        cuda.math_sdp_enabled(),
        torch.backends.mha.get_fastpath_enabled(),
    )


def test_math_kernels_only_while_differentiating_and_settings_restored() -> None:
    """Plain iteration keeps the fused kernels (faster); a differentiated or vmapped evaluation
    runs the math kernels; torch's settings are as before afterwards, also after an error."""
    seen: list[tuple[bool, ...]] = []

    def f(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        seen.append(_attention_settings())
        return torch.tanh(0.5 * h + x)

    before = _attention_settings()
    assert before == (True, True, True, True)  # torch's defaults: the fused kernels allowed
    s = dy.LoopedSystem.from_function(f, state_shape=(3,), x=torch.ones(1, 3, dtype=F64))
    h = torch.zeros(2, 3, dtype=F64)
    seen.clear()
    s.iterate(h, n_steps=2)
    assert seen == [before, before]
    seen.clear()
    dy.jacobian(s, h)
    assert seen and all(v == (False, False, True, False) for v in seen)
    assert _attention_settings() == before

    def broken(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if h.requires_grad:
            raise RuntimeError("boom")
        return h / 2

    bad = dy.LoopedSystem.from_function(broken, state_shape=(3,), x=torch.ones(1, 3, dtype=F64))
    with pytest.raises(RuntimeError, match="boom"):
        bad.step(h.requires_grad_())
    assert _attention_settings() == before
