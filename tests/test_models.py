"""Reference models: every architecture runs under forward-mode AD and vmap; known answers hold."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.func import jacfwd, jvp, vmap

import dynamo as dy
from dynamo.errors import InvalidArgumentError

F64 = torch.float64
RECALLS = ["none", "outer", "internal"]
NORMS = ["none", "pre", "post", "sandwich", "outer"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def transformer_system(**kw: object) -> dy.LoopedSystem:
    args: dict = {"d_model": 16, "n_heads": 4, "seed": 1, **kw}
    model = dy.models.LoopedTransformer(**args)
    x = torch.randn(2, 6, args["d_model"], generator=gen(0))
    return dy.LoopedSystem.from_module(model, x)


ARCHS = [
    {"recall": r, "norm": n, "norm_type": t, "pos": p}
    for r, n in itertools.product(RECALLS, NORMS)
    for t, p in [("rms", "rope"), ("layer", "absolute")]
] + [{"recall": "outer", "norm": "outer", "pos": "none", "causal": True, "recall_mode": "add"}]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_forward_mode_ad_matches_central_differences(arch: dict) -> None:
    """jvp (forward-mode AD) works on CPU in every architecture and is the true derivative."""
    system = transformer_system(**arch)
    h = torch.randn(2, 6, 16, dtype=F64, generator=gen(2))
    v = torch.randn(2, 6, 16, dtype=F64, generator=gen(3))
    with torch.no_grad():
        out, tangent = jvp(system.step, (h,), (v,))
        eps = 1e-6
        fd = (system.step(h + eps * v) - system.step(h - eps * v)) / (2 * eps)
    torch.testing.assert_close(out, system.step(h))
    assert float((tangent - fd).norm() / tangent.norm()) < 1e-7


@pytest.mark.parametrize("recall", RECALLS)
def test_vmap_of_jacfwd_over_states(recall: str) -> None:
    system = transformer_system(recall=recall, norm="outer", d_model=8, n_heads=2)
    h = torch.randn(2, 6, 8, dtype=F64, generator=gen(4))
    xs = system.x
    assert xs is not None

    def one(hi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return system.step(hi[None], xi[None])[0]

    with torch.no_grad():
        jac = vmap(jacfwd(one))(h, xs)
        for i in range(2):
            ref = jacfwd(one)(h[i], xs[i])
            torch.testing.assert_close(jac[i], ref)
    assert jac.shape == (2, 6, 8, 6, 8)


def test_outer_rms_norm_puts_every_token_on_the_sphere() -> None:
    system = transformer_system(recall="outer", norm="outer", norm_eps=1e-12)
    h = 10 * torch.randn(2, 6, 16, dtype=F64, generator=gen(5))
    with torch.no_grad():
        out = system.step(h)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((2, 6), 4.0, dtype=F64))


def test_causal_attention_ignores_later_tokens() -> None:
    system = transformer_system(recall="outer", norm="pre", causal=True)
    h = torch.randn(2, 6, 16, dtype=F64, generator=gen(6))
    h2 = h.clone()
    h2[:, 4:] += 1.0
    with torch.no_grad():
        a, b = system.step(h), system.step(h2)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=1e-14)
    assert float((a[:, 4:] - b[:, 4:]).abs().max()) > 1e-3


@pytest.mark.parametrize(("pos", "uniform"), [("rope", True), ("none", True), ("absolute", False)])
def test_uniform_sequences_stay_uniform_without_absolute_positions(pos: str, uniform: bool) -> None:
    """SCIENCE.md C7: [x,…,x] maps to a uniform sequence with RoPE or no positions, not with
    absolute positions added inside the block."""
    system = transformer_system(recall="none", norm="pre", pos=pos)
    token = torch.randn(1, 1, 16, dtype=F64, generator=gen(7))
    h = token.expand(1, 6, 16).clone()
    with torch.no_grad():
        out = system.to(F64).step(h, torch.zeros(1, 6, 16, dtype=F64))
    spread = float((out - out[:, :1]).abs().max())
    assert (spread < 1e-12) is uniform


def test_parameters_are_a_function_of_the_seed() -> None:
    a = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=3)
    b = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=3)
    c = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=4)
    for (k, va), (_, vb), (_, vc) in zip(
        a.state_dict().items(), b.state_dict().items(), c.state_dict().items(), strict=True
    ):
        assert torch.equal(va, vb), k
        if k.endswith(".weight") and "norm" not in k and va.ndim == 2:
            assert not torch.equal(va, vc), k


def test_init_scales() -> None:
    model = dy.models.LoopedTransformer(d_model=64, n_heads=4, seed=0, branch_gain=0.5)
    q = model.layers[0].attn.branch.q.weight.detach()
    o = model.layers[0].attn.branch.o.weight.detach()
    assert float(q.std()) == pytest.approx(1 / math.sqrt(3 * 64), rel=0.05)
    assert float(o.std()) == pytest.approx(0.5 / math.sqrt(3 * 64), rel=0.05)


def test_encode_embeds_tokens() -> None:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=11, seed=0)
    e = model.encode(torch.tensor([[1, 2, 3]]))
    assert e.shape == (1, 3, 8)
    with pytest.raises(InvalidArgumentError, match="vocab_size"):
        dy.models.LoopedTransformer(d_model=8, n_heads=2).encode(torch.tensor([[1]]))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"d_model": 10, "n_heads": 4}, "n_heads=4 must divide d_model=10"),
        ({"recall": "inner"}, "unknown recall 'inner'; choose one of 'none', 'outer', 'internal'"),
        ({"norm": "final"}, "unknown norm 'final'"),
        ({"norm_type": "batch"}, "unknown norm_type 'batch'"),
        ({"pos": "alibi"}, "unknown pos 'alibi'"),
        ({"n_layers": 0}, "n_layers must be >= 1"),
        ({"norm_eps": 0.0}, "norm_eps must be finite and > 0"),
        ({"seed": 1.5}, "seed must be an int"),
    ],
)
def test_bad_architecture_arguments(kwargs: dict, pattern: str) -> None:
    args = {"d_model": 8, "n_heads": 2, **kwargs}
    with pytest.raises(InvalidArgumentError, match=pattern):
        dy.models.LoopedTransformer(**args)


def test_sequence_longer_than_max_len_is_refused() -> None:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, max_len=4)
    with pytest.raises(dy.errors.ShapeError, match="exceeds max_len=4"):
        dy.LoopedSystem.from_module(model, torch.randn(1, 5, 8))


# ---------------------------------------------------------------------- canonical maps
def test_contractive_tanh_has_the_requested_lipschitz_constant() -> None:
    for structure in ["gaussian", "orthogonal", "symmetric"]:
        f = dy.models.ContractiveTanh(n=12, lipschitz=0.7, structure=structure, seed=1)
        w = f.W.detach()
        assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(0.7, abs=1e-12)
    w = dy.models.ContractiveTanh(n=12, lipschitz=0.7, structure="orthogonal").W.detach()
    torch.testing.assert_close(torch.linalg.eigvals(w).abs(), torch.full((12,), 0.7, dtype=F64))


def test_linear_map_spectral_radius_and_fixed_point() -> None:
    f = dy.models.LinearMap(n=10, spectral_radius=2.0, seed=0)
    assert float(torch.linalg.eigvals(f.A.detach()).abs().max()) == pytest.approx(2.0)
    x = torch.randn(3, 10, dtype=F64, generator=gen(0))
    with torch.no_grad():
        h = f.fixed_point(x)
        torch.testing.assert_close(f(h, x), h, rtol=0, atol=1e-13)


def test_mondeq_is_strongly_monotone() -> None:
    f = dy.models.MonDEQ(n=16, m=0.5, seed=0)
    w = f.W.detach()
    sym = torch.eye(16, dtype=F64) - (w + w.T) / 2
    assert float(torch.linalg.eigvalsh(sym).min()) >= 0.5 - 1e-12
    assert float(torch.linalg.matrix_norm(w, ord=2)) > 1  # not a contraction


def test_logistic_and_henon_fixed_points_and_eigenvalues() -> None:
    lo = dy.models.Logistic(r=3.2)
    p = lo.fixed_points()
    torch.testing.assert_close(lo(p), p)
    cyc = lo.two_cycle()
    assert cyc is not None
    torch.testing.assert_close(lo(cyc).flip(0), cyc)
    torch.testing.assert_close(
        cyc.flatten(), torch.tensor([0.5130, 0.7995], dtype=F64), atol=1e-4, rtol=0
    )
    he = dy.models.Henon()
    fp = he.fixed_points()
    torch.testing.assert_close(he(fp), fp, rtol=0, atol=1e-14)
    eig = []
    for i in range(2):
        jac = jacfwd(lambda z: he(z[None])[0])(fp[i])
        eig.append(sorted(torch.linalg.eigvals(jac).real.tolist()))
    assert eig[0] == pytest.approx([-1.924, 0.156], abs=1e-3)
    assert eig[1] == pytest.approx([-0.092, 3.260], abs=1e-3)


def test_bistable_and_zero_branch_rmsnorm() -> None:
    bi = dy.models.Bistable(n=2)
    fps = bi.fixed_points()
    torch.testing.assert_close(bi(fps), fps)
    zb = dy.models.ZeroBranchRMSNorm(d=5, n_tokens=3)
    h = torch.randn(4, 3, 5, dtype=F64, generator=gen(0))
    on_sphere = zb(h)
    torch.testing.assert_close(on_sphere.norm(dim=-1), torch.full((4, 3), math.sqrt(5), dtype=F64))
    torch.testing.assert_close(zb(on_sphere), on_sphere)  # every point of the sphere is fixed
    jac = jacfwd(lambda z: zb(z[None])[0, 0])(on_sphere[0, 0:1])[:, 0]
    eig = sorted(torch.linalg.eigvals(jac).real.tolist())
    assert eig == pytest.approx([0, 1, 1, 1, 1], abs=1e-12)


def test_hopfield_patterns_are_stable_fixed_points() -> None:
    f = dy.models.Hopfield(n=64, n_patterns=3, seed=0)
    system = dy.LoopedSystem.from_module(f)
    starts = torch.cat([f.patterns, -f.patterns])
    sol = dy.solve(system, starts, method="picard")
    assert torch.equal(torch.sign(sol.state), starts)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: dy.models.Logistic(r=5.0), r"r must be a finite number in \(0, 4\]"),
        (lambda: dy.models.ContractiveTanh(n=0), "n must be >= 1"),
        (lambda: dy.models.ContractiveTanh(n=3, structure="random"), "unknown structure"),
        (lambda: dy.models.LinearMap(n=3, spectral_radius=1.0), "must differ from 1"),
        (lambda: dy.models.Hopfield(n=4, n_patterns=4), "n_patterns must be < n"),
        (lambda: dy.models.Bistable(eta=1.5), "eta must be < 1.0"),
        (lambda: dy.models.Henon(a=math.nan), "a must be finite"),
        (lambda: dy.models.ZeroBranchRMSNorm(d=1), "d must be >= 2"),
    ],
)
def test_canonical_argument_errors(make: object, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern):
        make()  # type: ignore[operator]
