"""The per-layer Lipschitz rules behind ``dynamo.lipschitz_upper_bound``, as checked claims.

Each certified number dynamo reports is a product of these factors; each rule's derivation is
checked here by sympy, and its numeric counterpart compares dynamo's rule with local Jacobian
norms sampled (and climbed by gradient ascent) inside the rule's domain.
"""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch
from torch import nn

import dynamo as dy
from dynamo.kernel import ACTIVATION_SLOPES
from dynamo.kernel import attention_rule as _attention_rule

from ._core import CheckResult, Proof, Prover, claim

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sound(
    name: str,
    module: nn.Module,
    domain: dy.Domain,
    shape: tuple[int, ...],
    *,
    seed: int = 0,
    tight: bool = False,
) -> CheckResult:
    system = dy.LoopedSystem.from_module(module.double(), state_shape=shape)
    up = dy.lipschitz_upper_bound(module, domain).value
    states = domain.sample(system, 16, seed=seed)
    low = dy.lipschitz_lower_bound(
        system, states, method="ascent", steps=15, domain=domain, seed=seed
    ).value
    ok = low <= up * (1 + 1e-12) and (not tight or abs(low - up) <= 1e-8 * up)
    return CheckResult(
        name,
        ok,
        f"certified {up:.6g} >= largest local ‖J‖₂ found "
        f"{low:.6g}" + (" (attained)" if tight else ""),
        {"upper": up, "lower": low},
    )


# ---------------------------------------------------------------------- R1 linear
def _check_r1(seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    return _sound("R1", nn.Linear(5, 5), dy.Domain(), (5,), seed=seed, tight=True)


@claim(
    "R1",
    "Rule: a token-wise linear map has Lipschitz constant σ_max(W)",
    r"$x \mapsto Wx + b$ applied to every token: $\mathrm{Lip} = \sigma_{\max}(W)$ in the "
    r"flattened norm ($I_T \otimes W$ has the singular values of $W$).",
    (),
    ("linear algebra",),
    _check_r1,
)
def r1(extra: Any = 0) -> Proof:
    pf = Prover("R1")
    W = sp.Matrix([[2, 1], [0, 1]])
    K = sp.kronecker_product(sp.eye(2), W)
    lam = sp.Symbol("lam")
    pf.equal(
        sp.factor((K.T * K).charpoly(lam).as_expr()),
        sp.factor(((W.T * W).charpoly(lam).as_expr()) ** 2) + extra,
        "the Gram matrix of I₂ ⊗ W has the eigenvalues of WᵀW, each twice: same σ_max",
    )
    return pf.proof()


# ---------------------------------------------------------------------- R2 activations
def _check_r2() -> CheckResult:
    t = torch.linspace(-12, 12, 240001, dtype=F64, requires_grad=True)
    worst = {}
    pairs: list[tuple[type, Any]] = [
        (nn.GELU, nn.functional.gelu),
        (nn.SiLU, nn.functional.silu),
        (nn.Sigmoid, torch.sigmoid),
        (nn.Tanh, torch.tanh),
        (nn.ReLU, torch.relu),
    ]
    for kind, fn in pairs:
        (g,) = torch.autograd.grad(fn(t).sum(), t)
        worst[kind.__name__] = (float(g.abs().max()), ACTIVATION_SLOPES[kind])
    g = torch.autograd.grad(nn.functional.gelu(t, approximate="tanh").sum(), t)[0]
    worst["GELU(tanh)"] = (float(g.abs().max()), ACTIVATION_SLOPES[nn.GELU])
    ok = all(obs <= bound for obs, bound in worst.values())
    return CheckResult(
        "R2",
        ok,
        "sup |φ′| on a fine grid within each rule: "
        + ", ".join(f"{k} {o:.6f} <= {b}" for k, (o, b) in worst.items()),
        {k: list(v) for k, v in worst.items()},
    )


@claim(
    "R2",
    "Rule: an elementwise activation has Lipschitz constant sup |φ′|",
    r"GELU: $\varphi' = \Phi + t\phi$, $\varphi'' = \phi(t)(2 - t^2)$, maximal at $t = \sqrt2$: "
    r"$\Phi(\sqrt2) + \sqrt2\phi(\sqrt2) = 1.128904\ldots \le 1.1290$; SiLU $\le 1.0999$; "
    r"sigmoid $1/4$; tanh and ReLU $1$.",
    (),
    ("calculus",),
    _check_r2,
)
def r2(gelu_bound: float = ACTIVATION_SLOPES[nn.GELU]) -> Proof:
    pf = Prover("R2")
    t = sp.Symbol("t", real=True)
    phi = sp.exp(-(t**2) / 2) / sp.sqrt(2 * sp.pi)
    Phi = (1 + sp.erf(t / sp.sqrt(2))) / 2
    gelu = t * Phi
    d1, d2 = sp.diff(gelu, t), sp.diff(gelu, t, 2)
    pf.equal(d1, Phi + t * phi, "GELU′(t) = Φ(t) + t φ(t)")
    pf.equal(d2, phi * (2 - t**2), "GELU″(t) = φ(t)(2 − t²): zero at t = ±√2")
    peak = d1.subs(t, sp.sqrt(2))
    v = float(sp.N(peak, 30))
    pf.fact(
        f"the largest slope Φ(√2) + √2 φ(√2) = {v:.12f} is <= the rule's {gelu_bound}",
        "GELU′(√2)",
        v,
        v <= gelu_bound,
    )
    s = 1 / (1 + sp.exp(-t))
    pf.equal(sp.diff(s, t), s * (1 - s), "σ′ = σ(1 − σ) <= 1/4 (maximal at σ = 1/2)")
    silu_d2 = sp.diff(t * s, t, 2)
    root = sp.nsolve(silu_d2, t, 2.4)
    slope = float(sp.N(sp.diff(t * s, t).subs(t, root), 20))
    pf.fact(
        f"SiLU′ peaks at t = {float(root):.6f} with {slope:.10f} <= {ACTIVATION_SLOPES[nn.SiLU]}",
        "SiLU″(t) = 0",
        slope,
        slope <= ACTIVATION_SLOPES[nn.SiLU],
    )
    return pf.proof()


# ---------------------------------------------------------------------- R3 residual
def _check_r3(seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, recall="none", norm="none", seed=seed)
    system = dy.LoopedSystem.from_module(model, torch.randn(1, 4, 8))
    dom = dy.Domain.ball(2.0)
    up = dy.lipschitz_upper_bound(system, dom)
    steps = [s for s in up.steps if s.rule.startswith("residual")]
    low = dy.lipschitz_lower_bound(
        system, dom.sample(system, 8, seed=seed), method="ascent", steps=10, domain=dom
    ).value
    ok = low <= up.value and all(s.factor >= 1 for s in steps)
    return CheckResult(
        "R3",
        ok,
        f"residual blocks bounded by 1 + L each; block bound {up.value:.4g} >= ascent {low:.4g}",
        {"upper": up.value, "lower": low},
    )


@claim(
    "R3",
    "Rule: a residual connection adds 1 to the branch's constant",
    r"$\mathrm{Lip}(h \mapsto h + F(h)) \le 1 + \mathrm{Lip}(F)$; token norms: "
    r"$u' = u_h + u_F$, $\ell' = \max(0, \ell_h - u_F)$.",
    (),
    ("triangle inequality",),
    _check_r3,
)
def r3(one: Any = 1) -> Proof:
    pf = Prover("R3")
    p = sp.Symbol("p", nonnegative=True)
    q = sp.Symbol("q", positive=True)
    # in one dimension the slope of t + F(t) is 1 + F′; the triangle inequality
    # |1 + F′| <= 1 + |F′|, case by case (F′ = p >= 0, F′ = −q < 0), gives Lip <= 1 + L
    pf.nonnegative(one + p - sp.Abs(1 + p), "F′ = p >= 0: 1 + |F′| − |1 + F′| = 0")
    abs_1mq = sp.Piecewise((1 - q, q <= 1), (q - 1, True))  # |1 − q|, case by case
    pf.nonnegative(
        sp.piecewise_fold(one + q - abs_1mq),
        "F′ = −q < 0: 1 + |F′| − |1 + F′| = 2q (q <= 1) or 2 (q > 1), >= 0",
    )
    return pf.proof()


# ---------------------------------------------------------------------- R4 concat recall
def _check_r4(seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=8, n_heads=2, recall="outer", norm="none", seed=seed
    )
    w = model.adapter.weight.detach().double()  # type: ignore[union-attr]
    up = dy.lipschitz_upper_bound(model, dy.Domain.ball(1.0, x_max=1.0, n_tokens=4))
    factor = next(s.factor for s in up.steps if s.where.startswith("adapter"))
    exact = float(torch.linalg.matrix_norm(w[:, :8], ord=2))
    ok = abs(factor - exact) <= 1e-12 * exact
    return CheckResult(
        "R4",
        ok,
        f"adapter factor {factor:.6g} = σ_max(W_s) {exact:.6g}",
        {"factor": factor, "sigma_max_Ws": exact},
    )


@claim(
    "R4",
    "Rule: concat recall contributes σ_max of its state block",
    r"$\mathrm{Linear}([h; e]) = W_s h + W_e e + b$ has constant $\sigma_{\max}(W_s)$ in $h$ for a "
    r"fixed input; token norms grow by $\sigma_{\max}(W_e) x_{\max} + \lVert b\rVert$.",
    ("the input is held fixed",),
    ("linear algebra",),
    _check_r4,
)
def r4(block: str = "state") -> Proof:
    pf = Prover("R4")
    Ws = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"s{i}{j}", real=True))
    We = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"e{i}{j}", real=True))
    h = sp.Matrix(sp.symbols("h0 h1", real=True))
    e = sp.Matrix(sp.symbols("x0 x1", real=True))
    b = sp.Matrix(sp.symbols("b0 b1", real=True))
    W = Ws.row_join(We)
    out = W * h.col_join(e) + b
    pf.equal(
        out.jacobian(list(h)),
        Ws if block == "state" else We,
        "∂ Linear([h; e]) / ∂h = W_s: the input block and the bias drop out",
    )
    return pf.proof()


# ---------------------------------------------------------------------- R5 RMSNorm
def _check_r5(d: int = 6, seed: int = 0) -> CheckResult:
    out = _sound("R5", dy.models.ZeroBranchRMSNorm(d=d), dy.Domain.shell(1.5, 4.0), (d,), seed=seed)
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=d))
    at_inner = dy.lipschitz_lower_bound(system, dy.Domain.sphere(1.5).sample(system, 4)).value
    tight = abs(at_inner - math.sqrt(d) / 1.5) <= 1e-10
    return CheckResult(
        "R5",
        out.ok and tight,
        out.message + f"; attained on the inner sphere: {at_inner:.10f} = √d/r_min",
        {**out.numbers, "attained": at_inner},
    )


@claim(
    "R5",
    "Rule: RMSNorm away from zero has constant max|γ|√d/√(ρ² + dε)",
    r"On $\{\lVert x\rVert \ge \rho\}$: $\mathrm{Lip}(N) \le \max|\gamma|\sqrt d/"
    r"\sqrt{\rho^2 + d\varepsilon}$, because radial projection onto a ball is nonexpansive: "
    r"$\lVert x - y\rVert^2 - \rho^2\lVert \hat x - \hat y\rVert^2 = (a - b)^2 + (ab - \rho^2)"
    r"(2 - 2\cos\theta) \ge 0$ for $a = \lVert x\rVert, b = \lVert y\rVert \ge \rho$.",
    ("token norms >= ρ at the norm's input", "ρ² + dε > 0"),
    ("SCIENCE.md C4, C14",),
    _check_r5,
)
def r5(rho_power: int = 2) -> Proof:
    pf = Prover("R5")
    a, b, rho = sp.symbols("a b rho", positive=True)
    c = sp.Symbol("c", real=True)  # cos θ
    dist2 = a**2 + b**2 - 2 * a * b * c
    unit2 = 2 - 2 * c
    pf.equal(
        dist2 - rho**rho_power * unit2,
        (a - b) ** 2 + (a * b - rho**2) * unit2,
        "‖x − y‖² − ρ²‖x̂ − ŷ‖² = (a − b)² + (ab − ρ²)(2 − 2 cos θ)",
    )
    u, w = sp.symbols("u w", nonnegative=True)  # ab − ρ² = u >= 0, 2 − 2cos θ = w >= 0
    pf.nonnegative((a - b) ** 2 + u * w, "both terms are >= 0 when a, b >= ρ: ‖x̂ − ŷ‖ <= ‖x − y‖/ρ")
    d, eps, x2 = sp.symbols("d epsilon x2", positive=True)
    pf.equal(
        (x2 + d * eps),
        (sp.sqrt(x2 + d * eps)) ** 2,
        "ε enters as an extra coordinate √(dε): ‖x̃‖² = ‖x‖² + dε >= ρ² + dε",
    )
    return pf.proof()


# ---------------------------------------------------------------------- R6 LayerNorm
def _check_r6(eps: float = 1e-4, d: int = 6, seed: int = 0) -> CheckResult:
    return _sound("R6", nn.LayerNorm(d, eps=eps), dy.Domain(), (d,), seed=seed)


@claim(
    "R6",
    "Rule: LayerNorm has constant max|γ|/√ε (its centred input can vanish)",
    r"LayerNorm is RMSNorm after $x \mapsto x - \bar x$, whose image can be 0 for any $\lVert x\rVert$: "
    r"$\rho = 0$ in R5, so $\mathrm{Lip} \le \max|\gamma| / \sqrt\varepsilon$ (claim C5).",
    ("ε > 0",),
    ("SCIENCE.md C5",),
    _check_r6,
    uses=("C5", "R5"),
)
def r6(centre: bool = True) -> Proof:
    pf = Prover("R6")
    c = sp.Symbol("c", real=True)
    x = sp.Matrix([c, c, c])
    centred = x - sp.Matrix([sum(x) / 3] * 3) if centre else x
    pf.equal(
        centred,
        sp.zeros(3, 1),
        "a constant vector c·1 centres to 0 whatever c is: the "
        "input norm gives no lower bound after centring",
    )
    return pf.proof()


# ---------------------------------------------------------------------- R7 attention
def _check_r7(seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, pos="rope", seed=seed, dtype=F64)
    layer: Any = model.layers[0]
    att = layer.attn.branch
    T, R = 5, 2.0
    lip, _, _ = _attention_rule(att, T, R)
    worst = 0.0
    for s in range(40):
        X = torch.randn(T, 8, generator=_gen(s), dtype=F64)
        X = X / X.norm(dim=-1, keepdim=True) * R

        def f(z: torch.Tensor) -> torch.Tensor:
            return att(z.reshape(1, T, 8)).reshape(-1)

        with torch.no_grad():
            J = torch.func.jacfwd(f)(X.reshape(-1))
        worst = max(worst, float(torch.linalg.matrix_norm(J, ord=2)))
    ok = worst <= lip
    return CheckResult(
        "R7",
        ok,
        f"attention rule {lip:.5g} >= largest sampled ‖J‖₂ {worst:.5g} on tokens of norm {R}",
        {"rule": lip, "sampled": worst},
    )


@claim(
    "R7",
    "Rule: dot-product attention on a bounded set",
    r"For one head on $\{\lVert x_j\rVert \le R\}$ with $T$ tokens: "
    r"$\lVert J\rVert_2 \le \lVert V\rVert(\sqrt T + (1 + \sqrt T) R^2 \max_{ij}\lVert M_{ij}\rVert)$; "
    r"heads stack under $W_O$.",
    ("token norms <= R at the attention input", "bias-free projections"),
    ("Castin, Ablin & Peyré, arXiv:2312.14820",),
    _check_r7,
    uses=("C6",),
)
def r7(variance_term: Any = None) -> Proof:
    pf = Prover("R7")
    p0, p1 = sp.symbols("p0 p1", positive=True)
    x0, x1, x2 = sp.symbols("x0 x1 x2", real=True)
    p2 = 1 - p0 - p1
    mu = p0 * x0 + p1 * x1 + p2 * x2
    var = p0 * (x0 - mu) ** 2 + p1 * (x1 - mu) ** 2 + p2 * (x2 - mu) ** 2
    second = p0 * x0**2 + p1 * x1**2 + p2 * x2**2
    pf.equal(
        var,
        second - mu**2 if variance_term is None else variance_term,
        "the softmax-weighted variance is the second moment minus μ²: <= R² on the ball",
    )
    P = sp.Matrix(
        [
            [sp.Rational(1, 2), sp.Rational(1, 2), 0],
            [sp.Rational(1, 3), sp.Rational(1, 3), sp.Rational(1, 3)],
            [1, 0, 0],
        ]
    )
    norm2 = sp.sqrt(max(float(sp.re(sp.N(e))) for e in (P.T * P).eigenvals()))
    pf.fact(
        f"‖P‖₂ = {float(norm2):.6f} <= √(‖P‖₁‖P‖∞) = √T-bounded for a row-stochastic P (example)",
        "‖P‖₂ for a 3×3 row-stochastic P",
        float(norm2),
        float(norm2) <= math.sqrt(float(max(sum(P.col(j)) for j in range(3)))),
    )
    return pf.proof()


# ---------------------------------------------------------------------- R8 composition
def _check_r8(seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    block = nn.Sequential(nn.Linear(6, 9), nn.GELU(), nn.Linear(9, 6), nn.Tanh())
    return _sound("R8", block, dy.Domain(), (6,), seed=seed)


@claim(
    "R8",
    "Rule: compositions multiply constants; intervals travel with them",
    r"$\mathrm{Lip}(g \circ f) \le \mathrm{Lip}(g)\,\mathrm{Lip}(f)$, provided each rule's domain "
    r"contains the image of the previous layer: dynamo propagates a sound interval for every "
    r"token's norm from layer to layer.",
    ("each layer's rule holds on the previous layer's image",),
    ("chain rule",),
    _check_r8,
)
def r8(power: int = 1) -> Proof:
    pf = Prover("R8")
    a, b = sp.symbols("a b", real=True)
    Lf, Lg = sp.symbols("L_f L_g", positive=True)
    ga, gb = sp.symbols("g_a g_b", real=True)
    # |g(f(a)) − g(f(b))| <= Lg |f(a) − f(b)| <= Lg Lf |a − b|
    pf.equal(
        Lg * (Lf * sp.Abs(a - b)),
        (Lg * Lf) ** power * sp.Abs(a - b),
        "chaining |g(u) − g(v)| <= L_g|u − v| with |f(a) − f(b)| <= L_f|a − b|",
    )
    del ga, gb
    return pf.proof()
