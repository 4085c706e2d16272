"""The claims C1–C14 dynamo relies on and the field's claims it tests (SCIENCE.md §3)."""

from __future__ import annotations

import math
from typing import Any

import sympy as sp
import torch
from sympy import stats as sps

import dynamo as dy

from ._core import CheckResult, Proof, Prover, claim

F64 = torch.float64

# ---------------------------------------------------------------------- helpers


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sym_matrix(name: str, n: int) -> sp.Matrix:
    return sp.Matrix(n, n, lambda i, j: sp.Symbol(f"{name}{i}{j}", real=True))


def _vec(name: str, n: int) -> sp.Matrix:
    return sp.Matrix([sp.Symbol(f"{name}{i}", real=True) for i in range(n)])


# ---------------------------------------------------------------------- C1
def _check_c1(
    system: dy.LoopedSystem | None = None, *, n_starts: int = 32, seed: int = 0
) -> CheckResult:
    if system is None:
        system = dy.LoopedSystem.from_module(dy.models.Bistable(n=2))
    if system.driven:
        return CheckResult(
            "C1",
            False,
            "the map takes its input at every step (recall), so C1 says nothing about it",
            violated=("no recall: f must not depend on x",),
        )
    found = dy.find_fixed_points(system, n_starts, mode="all", seed=seed)
    degenerate = [p for p in found.points if p.nullity > 0]
    if found.continua or degenerate:
        dims = sorted({c.dimension for c in found.continua})
        return CheckResult(
            "C1",
            False,
            "no count is reported: fixed points with eigenvalue 1 were found"
            + (f", forming a continuum of dimension {dims}" if dims else ""),
            {"continua": len(found.continua), "degenerate_points": len(degenerate)},
            violated=("nondegeneracy: 1 ∉ spec ∂f(h*) at every fixed point",),
        )
    # input independence: starts from different inputs reach points of one set
    counts = found.counts()
    return CheckResult(
        "C1",
        True,
        f"{len(found.points)} isolated, nondegenerate fixed points found (a lower bound on the "
        "countable set); f has no input, so the set does not depend on x",
        {"points": len(found.points), **counts},
    )


@claim(
    "C1",
    "Without recall, fixed points are input-independent and, if nondegenerate, countable",
    r"If $h_{t+1} = f(h_t)$ does not depend on $x$, then $\mathrm{Fix}(f)$ does not depend on "
    r"$x$. If $1 \notin \mathrm{spec}\,\partial f(h^*)$ at every fixed point, fixed points are "
    r"isolated, so $\mathrm{Fix}(f)$ is countable, and finite on a compact set. A continuous "
    r"$x \mapsto h^*(x)$ on a connected input set is then constant.",
    ("no recall (f does not depend on x)", "nondegeneracy: 1 ∉ spec ∂f(h*)"),
    ("Labovich, arXiv:2604.15259",),
    _check_c1,
)
def c1(count_bound: int = 9) -> Proof:
    pf = Prover("C1")
    h1, h2 = sp.symbols("h1 h2", real=True)
    eta = sp.Symbol("eta", positive=True)
    x = sp.Symbol("x", real=True)
    f = sp.Matrix([h1 + eta * (h1 - h1**3), h2 + eta * (h2 - h2**3)])
    eqs = list(f - sp.Matrix([h1, h2]))
    free = set().union(*(e.free_symbols for e in eqs))
    pf.fact(
        "the fixed-point equations f(h) − h = 0 of an autonomous map contain no x, so "
        "Fix(f) is the same set for every input",
        "free symbols of f(h) − h",
        sorted(map(str, free)),
        x not in free,
    )
    g = sp.groebner(eqs, h1, h2, order="lex")
    pf.fact(
        "Gröbner basis of the fixed-point ideal is zero-dimensional (finitely many points)",
        f"groebner({eqs})",
        f"{g.exprs}; zero-dimensional = {g.is_zero_dimensional}",
        bool(g.is_zero_dimensional),
    )
    sols = sp.solve(eqs, [h1, h2], dict=True)
    bezout = 3 * 3
    pf.fact(
        f"the ideal has {len(sols)} points, within the claimed bound {count_bound} "
        f"(Bézout: deg × deg = {bezout})",
        "solve(f(h) = h)",
        f"{len(sols)} solutions",
        len(sols) <= count_bound and len(sols) <= bezout,
    )
    J = f.jacobian([h1, h2])
    dets = [sp.simplify((sp.eye(2) - J).subs(s).det()) for s in sols]
    pf.fact(
        "nondegeneracy holds at every one: det(I − ∂f(h*)) ≠ 0 for η > 0",
        "det(I − J) at each solution",
        dets,
        all(d != 0 and d.is_zero is not True for d in dets),
    )
    # with recall: the fixed point moves with x
    h = sp.Symbol("h", real=True)
    hs = sp.solve(sp.Eq(h, h / 2 + x), h)
    pf.fact(
        "with recall (f(h, x) = h/2 + x) sympy solves h*(x) = 2x: it depends on x",
        "solve(h = h/2 + x)",
        hs,
        hs == [2 * x] and sp.diff(hs[0], x) != 0,
    )
    # the C2 counterexample violates nondegeneracy
    r = sp.Symbol("r", positive=True)
    sphere = [h1**2 + h2**2 - 2]
    gs = sp.groebner(sphere, h1, h2, order="lex")
    pf.fact(
        "without nondegeneracy the conclusion fails: the zero-branch RMSNorm map's "
        "fixed-point set h1² + h2² = 2 is not zero-dimensional (a circle)",
        "groebner(h1² + h2² − 2)",
        f"zero-dimensional = {gs.is_zero_dimensional}",
        gs.is_zero_dimensional is False,
    )
    del r
    return pf.proof()


# ---------------------------------------------------------------------- C2
def _check_c2(d: int = 6, *, seed: int = 0) -> CheckResult:
    system = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=d))
    h = dy.Domain.sphere(math.sqrt(d)).sample(system, 4, seed=seed)
    with torch.no_grad():
        fixed = float((system.step(h) - h).norm(dim=1).max())
    eig = torch.linalg.eigvals(dy.jacobian(system, h)).real.sort(dim=1).values
    expect = torch.tensor([0.0] + [1.0] * (d - 1), dtype=F64)
    spec_err = float((eig - expect).abs().max())
    found = dy.find_fixed_points(system, 16, seed=seed)
    dims = [c.dimension for c in found.continua]
    ok = fixed < 1e-12 and spec_err < 1e-10 and dims == [d - 1] and not found.points
    return CheckResult(
        "C2",
        ok,
        f"every sampled sphere point is fixed (residual {fixed:.1e}); "
        f"spectrum {{0, 1 × {d - 1}}} to {spec_err:.1e}; the search reports a "
        f"continuum of dimension {dims}, not a count",
        {"residual": fixed, "spectrum_error": spec_err, "continua": dims},
    )


@claim(
    "C2",
    "A zero branch under RMSNorm fixes a whole sphere: 'countable' needs nondegeneracy",
    r"$f(h) = \mathrm{RMSNorm}(h + F(h))$ with $F \equiv 0$, $\gamma = 1$, $\varepsilon = 0$ fixes "
    r"every point of $\lVert h\rVert = \sqrt d$, and $\mathrm{spec}\,\partial f = \{0, 1\ "
    r"(d - 1\ \text{times})\}$ there.",
    ("γ = 1, ε = 0", "F ≡ 0 (zero-initialised output projections)"),
    ("SCIENCE.md C2",),
    _check_c2,
)
def c2(eigenvalue: Any = 1) -> Proof:
    pf = Prover("C2")
    d = 3
    h = _vec("h", d)
    nrm = sp.sqrt((h.T * h)[0])
    N = sp.sqrt(d) * h / nrm
    on_sphere = {h[2]: sp.sqrt(d - h[0] ** 2 - h[1] ** 2)}
    pf.equal(N.subs(on_sphere), h.subs(on_sphere), "N(h) = √d h/‖h‖ equals h on ‖h‖ = √d")
    J = N.jacobian(list(h))
    pf.equal((J * h).applyfunc(sp.simplify), sp.zeros(d, 1), "∂N h = 0: eigenvalue 0 along h")
    for v in (sp.Matrix([-h[1], h[0], 0]), sp.Matrix([-h[2], 0, h[0]])):
        pf.equal(
            (J * v).subs(on_sphere).applyfunc(sp.simplify),
            (eigenvalue * v).subs(on_sphere),
            f"∂N v = v for the tangent vector v = {list(v)}: eigenvalue 1 (d − 1 times)",
        )
    return pf.proof()


# ---------------------------------------------------------------------- C3
def _check_c3(system: dy.LoopedSystem | None = None, *, seed: int = 0) -> CheckResult:
    if system is None:
        f = dy.models.ContractiveTanh(n=12, lipschitz=0.9, seed=1)
        system = dy.LoopedSystem.from_module(f, torch.randn(3, 12, generator=_gen(seed), dtype=F64))
    if not system.driven or system.x is None:
        return CheckResult(
            "C3", False, "no input to differentiate by", violated=("recall: f depends on x",)
        )
    x = system.x

    def polish(s: dy.LoopedSystem, h0: torch.Tensor) -> torch.Tensor:
        return dy.solve(s, h0, method="newton_krylov", tol=1e-15, atol=1e-15, throw=False).state

    h0 = x.clone() if tuple(x.shape[1:]) == system.state_shape else system.initial_states("zeros")
    h = polish(system, h0)
    v = torch.randn(x.shape, generator=_gen(seed + 1), dtype=F64)
    got = dy.ift_sensitivity(system, h, v)
    eps = 1e-5
    fd = polish(system.with_input(x + eps * v), h) - polish(system.with_input(x - eps * v), h)
    fd = fd / (2 * eps)
    rel = float(
        (
            (got - fd).reshape(x.shape[0], -1).norm(dim=1) / fd.reshape(x.shape[0], -1).norm(dim=1)
        ).max()
    )
    return CheckResult(
        "C3",
        rel <= 1e-8,
        f"IFT sensitivity vs central differences: relative difference {rel:.1e} (target 1e-8)",
        {"relative_difference": rel},
    )


@claim(
    "C3",
    "Implicit function theorem: the fixed point's derivative without unrolling",
    r"If $h^* = f(h^*, x)$ and $1 \notin \mathrm{spec}\,\partial_h f(h^*, x)$, then "
    r"$\frac{dh^*}{dx} = (I - \partial_h f)^{-1} \partial_x f$.",
    ("recall: f depends on x", "1 ∉ spec ∂_h f at h*"),
    ("Bai, Kolter & Koltun, arXiv:1909.01377",),
    _check_c3,
)
def c3(sign: int = -1) -> Proof:
    pf = Prover("C3")
    h, x = sp.symbols("h x", real=True)
    f = sp.sin(h) / 2 + x  # a nonlinear recall map with |f_h| <= 1/2
    implicit = sp.idiff(h - f, h, x)  # dh/dx along h = f(h, x), by implicit differentiation
    f_h, f_x = sp.diff(f, h), sp.diff(f, x)
    pf.equal(
        implicit,
        f_x / (1 + sign * f_h),
        "for h* = sin(h*)/2 + x, implicit differentiation gives dh*/dx = f_x / (1 − f_h)",
    )
    A, B = _sym_matrix("a", 2), _sym_matrix("b", 2)
    xv = _vec("x", 2)
    hstar = (sp.eye(2) - A).inv() * B * xv
    pf.equal(
        hstar.jacobian(list(xv)),
        (sp.eye(2) + sign * A).inv() * B,
        "for f(h, x) = A h + B x: dh*/dx = (I − A)⁻¹ B, the IFT formula with ∂_h f = A",
    )
    return pf.proof()


# ---------------------------------------------------------------------- C4
def _check_c4(d: int = 8, *, seed: int = 0) -> CheckResult:
    norm = torch.nn.RMSNorm(d, eps=0.0, elementwise_affine=False, dtype=F64)
    system = dy.LoopedSystem.from_module(norm, state_shape=(d,))
    x = 3 * torch.randn(3, d, generator=_gen(seed), dtype=F64)
    with torch.no_grad():
        y = system.step(x)
    norm_err = float((y.norm(dim=1) - math.sqrt(d)).abs().max())
    eig = torch.linalg.eigvals(dy.jacobian(system, x)).real.sort(dim=1).values
    expect = torch.cat(
        [torch.zeros(3, 1, dtype=F64), (math.sqrt(d) / x.norm(dim=1))[:, None].expand(3, d - 1)],
        dim=1,
    )
    spec = float((eig - expect).abs().max())
    ok = norm_err < 1e-12 and spec < 1e-10
    return CheckResult(
        "C4",
        ok,
        f"‖RMSNorm(x)‖ = √d to {norm_err:.1e}; Jacobian spectrum {{0, √d/‖x‖}} to {spec:.1e}",
        {"norm_error": norm_err, "spectrum_error": spec},
    )


@claim(
    "C4",
    "RMSNorm puts tokens on a sphere; its Jacobian; outer norm gives a fixed point for every x",
    r"With $\gamma = 1$, $\varepsilon = 0$: $\lVert N(x)\rVert = \sqrt d$, "
    r"$\partial N(x) = \frac{\sqrt d}{\lVert x\rVert}\left(I - \frac{x x^\top}{\lVert x\rVert^2}\right)$ "
    r"with eigenvalues $\{0, \sqrt d/\lVert x\rVert\}$. Outer normalization maps the ball of radius "
    r"$\sqrt d \max|\gamma|$ into itself, so (Brouwer, when the map is continuous: $\varepsilon > 0$ "
    r"or no zero pre-norm vector) a fixed point exists for every $x$.",
    ("γ = 1, ε = 0 (for the exact sphere)", "continuity for Brouwer"),
    ("SCIENCE.md C4",),
    _check_c4,
)
def c4(norm_squared: Any = None) -> Proof:
    pf = Prover("C4")
    d = 3
    x = sp.Matrix([sp.Symbol(f"x{i}", real=True, nonzero=True) for i in range(d)])
    nrm2 = (x.T * x)[0]
    y = sp.sqrt(d) * x / sp.sqrt(nrm2)
    pf.equal((y.T * y)[0], d if norm_squared is None else norm_squared, "‖N(x)‖² = d")
    J = y.jacobian(list(x))
    formula = sp.sqrt(d) / sp.sqrt(nrm2) * (sp.eye(d) - x * x.T / nrm2)
    pf.equal(J, formula, "∂N(x) = (√d/‖x‖)(I − x xᵀ/‖x‖²)")
    pf.equal(J * x, sp.zeros(d, 1), "eigenvalue 0 along x")
    v = sp.Matrix([-x[1], x[0], 0])
    pf.equal(J * v, sp.sqrt(d) / sp.sqrt(nrm2) * v, "eigenvalue √d/‖x‖ on x⊥")
    gmax = sp.Symbol("gmax", positive=True)
    w = [sp.Symbol(f"w{i}", nonnegative=True) for i in range(d)]  # γᵢ² = γmax² − wᵢ
    scaled = sum((gmax**2 - w[i]) * y[i] ** 2 for i in range(d))
    slack = d * sum(w[i] * x[i] ** 2 for i in range(d)) / nrm2
    pf.equal(
        gmax**2 * d - scaled,
        slack,
        "with gains γᵢ² = γmax² − wᵢ: γmax² d − ‖γ ⊙ N(x)‖² = d Σ wᵢ xᵢ² / ‖x‖²",
    )
    pf.nonnegative(slack, "which is >= 0: the ball of radius √d γmax is mapped into itself")
    return pf.proof()


# ---------------------------------------------------------------------- C5
def _check_c5(eps: float = 1e-5, d: int = 8) -> CheckResult:
    ln = torch.nn.LayerNorm(d, eps=eps, dtype=F64)
    system = dy.LoopedSystem.from_module(ln, state_shape=(d,))
    const = torch.full((1, d), 0.7, dtype=F64)
    local = float(dy.spectral_norm(system, const).values[0])
    up = dy.lipschitz_upper_bound(ln, dy.Domain()).value
    target = 1 / math.sqrt(eps)
    ok = abs(local - target) <= 1e-6 * target and abs(up - target) <= 1e-9 * target
    return CheckResult(
        "C5",
        ok,
        f"‖∂LN‖₂ at zero variance = {local:.6f}, certified bound {up:.6f}, 1/√ε = {target:.6f}",
        {"local": local, "bound": up, "target": target},
    )


@claim(
    "C5",
    "LayerNorm's Lipschitz constant is max|γ|/√ε, attained at zero variance",
    r"$\lVert \partial\,\mathrm{LN}\rVert_2 \le \max|\gamma| / \sqrt\varepsilon$ (316.23 at "
    r"$\varepsilon = 10^{-5}$), attained at zero variance; with $\varepsilon = 0$ LayerNorm is "
    r"not globally Lipschitz.",
    ("ε > 0",),
    ("SCIENCE.md C5",),
    _check_c5,
)
def c5(bound: Any = None) -> Proof:
    pf = Prover("C5")
    d = 3
    x = _vec("x", d)
    eps = sp.Symbol("epsilon", positive=True)
    c = sp.Symbol("c", real=True)
    mean = sum(x) / d
    var = sum((xi - mean) ** 2 for xi in x) / d
    ln = (x - sp.Matrix([mean] * d)) / sp.sqrt(var + eps)
    J0 = ln.jacobian(list(x)).subs({xi: c for xi in x})
    P = sp.eye(d) - sp.ones(d, d) / d
    claimed = 1 / sp.sqrt(eps) if bound is None else bound
    pf.equal(J0, claimed * P, "at zero variance (x = c·1) the Jacobian is (1/√ε)(I − 11ᵀ/d)")
    pf.equal(P * P, P, "I − 11ᵀ/d is an orthogonal projection (norm 1), so ‖J‖ = 1/√ε there")
    v = sp.Symbol("v", nonnegative=True)
    gap = v / (sp.sqrt(eps) * sp.sqrt(v + eps) * (sp.sqrt(v + eps) + sp.sqrt(eps)))
    pf.equal(
        1 / sp.sqrt(eps) - 1 / sp.sqrt(v + eps),
        gap,
        "1/√ε − 1/√(var + ε) = var / (√ε √(var + ε) (√(var + ε) + √ε))",
    )
    pf.nonnegative(gap, "which is >= 0 for every variance: the bound holds everywhere")
    pf.numeric("at ε = 1e-5: 1/√ε", 1 / sp.sqrt(sp.Rational(1, 100000)), 316.2277660168379)
    pf.true(
        sp.Eq(sp.limit(1 / sp.sqrt(v), v, 0, "+"), sp.oo),
        "with ε = 0 the factor 1/√var is unbounded as var → 0: not globally Lipschitz",
    )
    return pf.proof()


# ---------------------------------------------------------------------- C6
def _attention_1d(x: torch.Tensor, a: float) -> torch.Tensor:
    scores = a * x[:, None] * x[None, :]
    return torch.softmax(scores, dim=1) @ x


def _check_c6(a: float = 1.0) -> CheckResult:
    from dynamo.kernel import prime_forward_ad as _prime_forward_ad

    _prime_forward_ad()  # jacfwd's first use would warn about torch's own deprecated internals
    vals = []
    for t in (1.0, 4.0, 16.0):
        x = torch.tensor([0.0, t], dtype=F64)
        J = torch.func.jacfwd(lambda z: _attention_1d(z, a))(x)
        vals.append((t, float(J[0, 0]), 0.5 + a * t * t / 4))
    err = max(abs(g - w) for _, g, w in vals)
    return CheckResult(
        "C6",
        err < 1e-10,
        "∂f₁/∂x₁ at x = (0, t): "
        + ", ".join(f"t={t:g}: {g:.6g}" for t, g, _ in vals)
        + f" (formula to {err:.1e}): unbounded in t",
        {"values": [g for _, g, _ in vals], "error": err},
    )


@claim(
    "C6",
    "Dot-product self-attention is not globally Lipschitz",
    r"For $n = 2$, $d = 1$, scores $a x_i x_j$, $x_1 = 0$, $x_2 = t$: "
    r"$\partial f_1/\partial x_1 = \tfrac12 + a t^2/4$, unbounded in $t$. On a bounded domain "
    r"(after normalization) attention is Lipschitz; any certificate is local to a bounded set.",
    ("a > 0",),
    ("Kim, Papamakarios & Mnih, arXiv:2006.04710", "Castin, Ablin & Peyré, arXiv:2312.14820"),
    _check_c6,
)
def c6(coefficient: Any = None) -> Proof:
    pf = Prover("C6")
    x1, x2, t = sp.symbols("x1 x2 t", real=True)
    a = sp.Symbol("a", positive=True)
    w1, w2 = sp.exp(a * x1 * x1), sp.exp(a * x1 * x2)
    f1 = (w1 * x1 + w2 * x2) / (w1 + w2)
    d = sp.diff(f1, x1).subs({x1: 0, x2: t})
    coef = sp.Rational(1, 4) if coefficient is None else coefficient
    pf.equal(d, sp.Rational(1, 2) + coef * a * t**2, "∂f₁/∂x₁ at (0, t) = 1/2 + a t²/4")
    pf.true(sp.Eq(sp.limit(d, t, sp.oo), sp.oo), "it grows without bound as t → ∞")
    R = sp.Symbol("R", positive=True)
    w = sp.Symbol("w", nonnegative=True)  # t² = R² − w on |t| <= R
    pf.nonnegative(
        sp.expand((sp.Rational(1, 2) + a * R**2 / 4) - d.subs(t, sp.sqrt(R**2 - w))),
        "on |t| <= R it stays below 1/2 + a R²/4: attention is Lipschitz on bounded sets",
    )
    return pf.proof()


# ---------------------------------------------------------------------- C7
def _check_c7(pos: str = "rope", *, seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=16, n_heads=4, recall="none", norm="pre", pos=pos, seed=seed
    )
    system = dy.LoopedSystem.from_module(model, torch.zeros(1, 6, 16))
    token = torch.randn(1, 1, 16, generator=_gen(seed), dtype=F64)
    with torch.no_grad():
        out = system.step(token.expand(1, 6, 16).clone())
    dev = float((out - out[:, :1]).abs().max())
    ok = dev <= 1e-12
    return CheckResult(
        "C7",
        ok,
        f"pos={pos!r}: a uniform sequence maps to tokens that differ by {dev:.1e}",
        {"deviation": dev},
        violated=() if ok else ("no additive absolute positions inside the block",),
    )


@claim(
    "C7",
    "Uniform sequences stay uniform without absolute positions",
    r"With RoPE, no positional encoding, ALiBi or causal masks, a uniform sequence "
    r"$[x, \dots, x]$ stays uniform through every layer, so $[x] = T([x])$ implies "
    r"$[x, \dots, x] = T([x, \dots, x])$; false with additive absolute positions.",
    ("positions enter only the attention scores (or not at all)",),
    ("SCIENCE.md C7, seed 004",),
    _check_c7,
)
def c7(absolute: bool = False) -> Proof:
    pf = Prover("C7")
    T = 3
    v = sp.Symbol("v", real=True)
    s = sp.Matrix(T, T, lambda i, j: sp.Symbol(f"s{i}{j}", real=True))
    p = sp.Matrix(T, 1, lambda i, _: sp.Symbol(f"p{i}", real=True))
    values = [v + (p[j] if absolute else 0) for j in range(T)]
    outs = []
    for i in range(T):
        w = [sp.exp(s[i, j]) for j in range(T)]
        outs.append(sum(wj * vj for wj, vj in zip(w, values, strict=True)) / sum(w))
    for i in range(1, T):
        pf.equal(
            outs[i],
            outs[0],
            f"token {i}'s attention output equals token 0's, whatever "
            "position-dependent scores s_ij (RoPE, ALiBi, masks) the softmax sees",
        )
    pf.equal(outs[0], v, "each output is the common value: softmax weights sum to 1")
    return pf.proof()


# ---------------------------------------------------------------------- C8
def _check_c8(lipschitz: float | None = None, *, seed: int = 0) -> CheckResult:
    f = dy.models.ContractiveTanh(n=16, lipschitz=0.9, seed=seed)
    x = torch.randn(2, 16, generator=_gen(seed), dtype=F64)
    system = dy.LoopedSystem.from_module(f, x)
    L = dy.lipschitz_upper_bound(f, dy.Domain()).value if lipschitz is None else lipschitz
    h0 = 3 * torch.randn(2, 16, generator=_gen(seed + 1), dtype=F64)
    traj = system.iterate(h0, n_steps=60)
    assert traj.states is not None
    star = dy.solve(system, traj.final, method="newton_krylov", tol=1e-15, atol=1e-15).state
    err = (traj.states - star[None]).reshape(61, 2, -1).norm(dim=2)
    step0 = (traj.states[1] - traj.states[0]).reshape(2, -1).norm(dim=1)
    k = torch.arange(61, dtype=F64)[:, None]
    apriori = L**k / (1 - L) * step0[None]
    resid = traj.residuals  # ‖f(h_k) − h_k‖, k < 60
    aposteriori = resid / (1 - L)
    slack = 1e-12
    ok_a = bool((err <= apriori + slack).all())
    ok_b = bool((err[:-1] <= aposteriori + slack).all())
    return CheckResult(
        "C8",
        ok_a and ok_b,
        f"with L = {L:.6g}: a-priori bound holds at every step: {ok_a}; a-posteriori bound: {ok_b}",
        {"L": L, "apriori_ok": ok_a, "aposteriori_ok": ok_b},
        violated=()
        if (ok_a and ok_b)
        else ("L must be a certified upper bound, not a sampled estimate",),
    )


@claim(
    "C8",
    "Banach: a certified Lipschitz bound below 1 gives one fixed point and error bounds",
    r"If $\mathrm{Lip}(f) \le L < 1$ on a closed forward-invariant set, there is one $h^*$ and "
    r"$\lVert h_k - h^*\rVert \le \frac{L^k}{1 - L}\lVert h_1 - h_0\rVert$, "
    r"$\lVert h - h^*\rVert \le \frac{\lVert f(h) - h\rVert}{1 - L}$.",
    ("L is a certified upper bound", "the set is closed and forward-invariant"),
    ("Banach fixed-point theorem",),
    _check_c8,
)
def c8(denominator_sign: int = -1) -> Proof:
    pf = Prover("C8")
    L = sp.Symbol("L", positive=True)
    j, k = sp.symbols("j k", integer=True, nonnegative=True)
    tail = sp.summation(L**j, (j, k, sp.oo))
    tail = sp.piecewise_fold(tail).args[0][0] if isinstance(tail, sp.Piecewise) else tail
    pf.equal(
        tail,
        L**k / (1 + denominator_sign * L),
        "Σ_{j>=k} L^j = L^k/(1 − L) for 0 < L < 1: the a-priori bound, by the triangle "
        "inequality along h_k, h_{k+1}, …",
    )
    e, r = sp.symbols("e r", nonnegative=True)
    sol = sp.solve(sp.Eq(e, r + L * e), e)
    pf.equal(
        sol[0],
        r / (1 + denominator_sign * L),
        "‖h − h*‖ <= ‖h − f(h)‖ + ‖f(h) − f(h*)‖ <= r + L‖h − h*‖ gives e <= r/(1 − L)",
    )
    return pf.proof()


# ---------------------------------------------------------------------- C9
def _check_c9(*, seed: int = 0) -> CheckResult:
    # a draw whose dominant eigenvalue at h* is real and simple (a complex top pair makes the
    # ratio oscillate: the claim's "dominant eigenvalue" hypothesis)
    f = dy.models.ContractiveTanh(n=8, lipschitz=0.95, input_scale=0.1, seed=seed)
    system = dy.LoopedSystem.from_module(f, torch.ones(1, 8, dtype=F64))
    traj = system.iterate(torch.randn(1, 8, generator=_gen(seed), dtype=F64), n_steps=200)
    r = traj.residuals[:, 0]
    k = int((r > 1e-11).sum()) - 2  # the last ratio above the rounding floor
    ratio = float(r[k + 1] / r[k])
    star = dy.solve(system, traj.final, method="newton_krylov", tol=1e-15, atol=1e-15).state
    rho = float(dy.spectral_radius(system, star).values[0])
    ok = abs(ratio - rho) <= 1e-3
    return CheckResult(
        "C9",
        ok,
        f"residual ratio r_k+1/r_k = {ratio:.6f} at step {k}; ρ(∂f(h*)) = {rho:.6f}",
        {"ratio": ratio, "rho": rho},
    )


@claim(
    "C9",
    "Ostrowski: ρ(∂f(h*)) < 1 gives local attraction at rate ρ",
    r"If $\rho(\partial f(h^*)) < 1$, iterates near $h^*$ converge to it, asymptotically at rate "
    r"$\rho$: the residual ratio $r_{k+1}/r_k \to \rho$.",
    ("f continuously differentiable near h*", "ρ < 1", "a dominant eigenvalue"),
    ("A. M. Ostrowski, Solution of Equations and Systems of Equations, 1966",),
    _check_c9,
)
def c9(rate: Any = None) -> Proof:
    pf = Prover("C9")
    k = sp.Symbol("k", integer=True, positive=True)
    l1, l2 = sp.Rational(1, 2), sp.Rational(-1, 3)
    c1, c2 = sp.Rational(2), sp.Rational(5)
    rk = sp.sqrt((c1 * l1**k * (l1 - 1)) ** 2 + (c2 * l2**k * (l2 - 1)) ** 2)
    ratio = sp.limit(rk.subs(k, k + 1) / rk, k, sp.oo)
    pf.equal(
        ratio,
        sp.Rational(1, 2) if rate is None else rate,
        "for h ↦ A h with A = diag(1/2, −1/3), the residual ratio tends to ρ(A) = 1/2",
    )
    return pf.proof()


# ---------------------------------------------------------------------- C10
def _check_c10(*, seed: int = 2) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=8, n_heads=2, n_layers=3, recall="outer", norm="outer", seed=seed
    )
    x = torch.randn(2, 4, 8, generator=_gen(4), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    h = dy.solve(system, system.initial_states("input"), method="anderson").state
    lc = dy.layer_cycle(system, h, n_steps=5)
    spread = float(lc.rotation_spread.max())
    return CheckResult(
        "C10",
        spread <= 1e-9,
        f"top eigenvalue moduli of the 3 rotations agree to {spread:.1e}",
        {"spread": spread},
    )


@claim(
    "C10",
    "A cycle's stability does not depend on the starting layer",
    r"All rotated compositions $f_{s-1} \circ \dots \circ f_1 \circ f_k \circ \dots \circ f_s$ "
    r"share their nonzero Jacobian spectrum at their cycle points: "
    r"$\mathrm{eig}(AB) = \mathrm{eig}(BA)$.",
    ("the per-layer maps are differentiable at the cycle points",),
    ("Blayney et al., arXiv:2604.11791",),
    _check_c10,
)
def c10(transpose: bool = False) -> Proof:
    pf = Prover("C10")
    lam = sp.Symbol("lambda")
    A, B, C = _sym_matrix("a", 2), _sym_matrix("b", 2), _sym_matrix("c", 2)
    Bx = B.T if transpose else B
    pf.equal(
        (A * B).charpoly(lam).as_expr(),
        (Bx * A).charpoly(lam).as_expr(),
        "det(λI − AB) = det(λI − BA): the same characteristic polynomial",
    )
    pf.equal(
        (A * B * C).charpoly(lam).as_expr(),
        (B * C * A).charpoly(lam).as_expr(),
        "and for three layers, ABC and BCA (a rotation)",
    )
    return pf.proof()


# ---------------------------------------------------------------------- C11
def _check_c11(*, n_inputs: int = 5, seed: int = 0) -> CheckResult:
    model = dy.models.MonDEQ(n=16, m=0.5, seed=seed)
    w = model.W.detach()
    sym = torch.eye(16, dtype=F64) - (w + w.T) / 2
    lam = float(torch.linalg.eigvalsh(sym).min())
    x = torch.randn(n_inputs, 16, generator=_gen(seed), dtype=F64)
    found = dy.find_fixed_points(dy.LoopedSystem.from_module(model, x), 8, mode="all", seed=seed)
    counts = [len(found.for_input(i)) for i in range(n_inputs)]
    ok = lam >= 0.5 - 1e-12 and counts == [1] * n_inputs
    return CheckResult(
        "C11",
        ok,
        f"λ_min(sym(I − W)) = {lam:.6f} >= m = 0.5; fixed points per input {counts}",
        {"lambda_min": lam, "counts": counts},
    )


@claim(
    "C11",
    "monDEQ has exactly one fixed point for every input",
    r"$W = (1 - m)I - A^\top A + B - B^\top$ gives $\mathrm{sym}(I - W) = mI + A^\top A \succeq mI$, "
    r"so $z = \mathrm{ReLU}(Wz + Ux + b)$ has exactly one fixed point for every $x$.",
    ("m > 0",),
    ("Winston & Kolter, arXiv:2006.08591",),
    _check_c11,
)
def c11(skew: bool = True) -> Proof:
    pf = Prover("C11")
    m = sp.Symbol("m", positive=True)
    A, B = _sym_matrix("a", 2), _sym_matrix("b", 2)
    W = (1 - m) * sp.eye(2) - A.T * A + B + (-B.T if skew else B.T)
    IW = sp.eye(2) - W
    pf.equal((IW + IW.T) / 2, m * sp.eye(2) + A.T * A, "sym(I − W) = m I + AᵀA")
    v = _vec("v", 2)
    q = (v.T * A.T * A * v)[0]
    Av = A * v
    pf.equal(q, (Av.T * Av)[0], "vᵀAᵀAv = ‖Av‖² >= 0, so sym(I − W) ⪰ m I")
    return pf.proof()


# ---------------------------------------------------------------------- C12
def _check_c12(eta: float = 0.5, n: int = 4) -> CheckResult:
    S = torch.zeros(n, n, dtype=F64)
    s = math.sqrt(5.69)
    S[0, 1], S[1, 0], S[2, 3], S[3, 2] = s, -s, s, -s
    A = -0.5 * torch.eye(n, dtype=F64) + S
    step = torch.eye(n, dtype=F64) + eta * A
    system = dy.LoopedSystem.from_function(lambda h: h @ step.T, state_shape=(n,))
    norm2 = float(dy.spectral_norm(system, torch.ones(1, n, dtype=F64)).values[0]) ** 2
    mu = float(torch.linalg.eigvalsh((A + A.T) / 2).max())
    bound = 1 + 2 * eta * mu + eta**2 * float(torch.linalg.matrix_norm(A, ord=2)) ** 2
    ok = abs(norm2 - 1.985) < 1e-9 and norm2 <= bound + 1e-12
    return CheckResult(
        "C12",
        ok,
        f"μ₂(A) = {mu:.3f}, ‖A‖² = 5.94, η = {eta}: ‖I + ηA‖² = "
        f"{norm2:.6f} (bound {bound:.6f}): the step expands although μ₂ < 0",
        {"norm_squared": norm2, "bound": bound, "mu": mu},
    )


@claim(
    "C12",
    "A residual step contracts only if μ₂(DF) < 0 and η is small",
    r"$\lVert I + \eta A\rVert_2^2 \le 1 + 2\eta\mu_2(A) + \eta^2\lVert A\rVert_2^2$, so "
    r"$h + \eta F(h)$ contracts only if $\mu_2(DF) < 0$ and $\eta < -2\mu_2/\lVert DF\rVert^2$ "
    r"($\mu_2 = -0.5$, $\lVert A\rVert^2 = 5.94$, $\eta = 0.5$: 1.985).",
    ("μ₂ the logarithmic norm λ_max((A + Aᵀ)/2)",),
    ("Jafarpour et al., arXiv:2106.03194",),
    _check_c12,
)
def c12(value: float = 1.985) -> Proof:
    pf = Prover("C12")
    eta = sp.Symbol("eta", positive=True)
    A = _sym_matrix("a", 2)
    M = (sp.eye(2) + eta * A).T * (sp.eye(2) + eta * A)
    pf.equal(
        M,
        sp.eye(2) + eta * (A + A.T) + eta**2 * A.T * A,
        "(I + ηA)ᵀ(I + ηA) = I + η(A + Aᵀ) + η²AᵀA; for unit v its quadratic form is "
        "<= 1 + 2ημ₂ + η²‖A‖²",
    )
    mu = sp.Symbol("mu", negative=True)
    a2 = sp.Symbol("a2", positive=True)
    crit = sp.solve(sp.Eq(1 + 2 * eta * mu + eta**2 * a2, 1), eta)
    pf.equal(crit[0], -2 * mu / a2, "the bound drops below 1 exactly for 0 < η < −2μ₂/‖A‖²")
    pf.numeric(
        "μ₂ = −1/2, ‖A‖² = 5.94, η = 1/2: the bound",
        1 + 2 * sp.Rational(1, 2) * sp.Rational(-1, 2) + sp.Rational(1, 4) * sp.Rational(594, 100),
        value,
    )
    return pf.proof()


# ---------------------------------------------------------------------- C13
def _check_c13(n_samples: int = 400, *, seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=seed)
    system = dy.LoopedSystem.from_module(model, torch.randn(1, 4, 8, generator=_gen(seed)))
    h = system.initial_states("input")
    J = dy.jacobian(system, h)[0]
    fro2 = float((J**2).sum())
    op = dy.jacobian_operator(system, h)
    gen = _gen(seed + 1)
    vals = []
    for _ in range(n_samples):
        v = torch.randn(1, 32, generator=gen, dtype=F64)
        vals.append(float((op.rmatvec(v) ** 2).sum()))
    t = torch.tensor(vals, dtype=F64)
    est, se = float(t.mean()), float(t.std() / math.sqrt(n_samples))
    ok = abs(est - fro2) <= 4 * se
    return CheckResult(
        "C13",
        ok,
        f"Hutchinson estimate {est:.4f} ± {se:.4f} (sampled) vs ‖J‖_F² = {fro2:.4f}",
        {"estimate": est, "standard_error": se, "frobenius2": fro2},
    )


@claim(
    "C13",
    "Hutchinson: the DEQ Jacobian regulariser estimates the Frobenius norm",
    r"$\mathbb E\lVert v^\top J\rVert^2 = \lVert J\rVert_F^2$ for $v \sim N(0, I)$.",
    ("v has identity covariance",),
    ("Bai, Koltun & Kolter, arXiv:2106.14342",),
    _check_c13,
)
def c13(scale: Any = 1) -> Proof:
    pf = Prover("C13")
    J = _sym_matrix("j", 2)
    v = sp.Matrix([sps.Normal("v0", 0, 1), sps.Normal("v1", 0, 1)])
    q = ((v.T * J) * (v.T * J).T)[0]
    fro = sum(J[i, k] ** 2 for i in range(2) for k in range(2))
    pf.equal(sps.E(sp.expand(q)), scale * fro, "E‖vᵀJ‖² = tr(J Jᵀ E[v vᵀ]) = ‖J‖_F²")
    return pf.proof()


# ---------------------------------------------------------------------- C14
def _check_c14(*, seed: int = 0) -> CheckResult:
    model = dy.models.LoopedTransformer(
        d_model=16, n_heads=2, recall="outer", norm="outer", norm_eps=1e-12, seed=seed
    )
    x = 4 * torch.randn(2, 6, 16, generator=_gen(seed), dtype=F64)
    system = dy.LoopedSystem.from_module(model, x)
    m = system.module
    assert m is not None

    mm: Any = m

    def pre(h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        u = mm._enter(h, e)
        for layer in mm.layers:
            u = layer(u, e)
        return u

    pre_sys = dy.LoopedSystem.from_function(pre, system.state_shape, x=system.x, validate=False)
    h = system.initial_states("normal", 1, seed=seed)
    with torch.no_grad():
        u = pre_sys.step(h)
    total = dy.spectral_norm(system, h).values
    inner = dy.spectral_norm(pre_sys, h).values
    final: Any = m.final_norm
    gmax = float(final.weight.detach().abs().max())
    bound = math.sqrt(16) * gmax / u.norm(dim=-1).amin(dim=1) * inner
    ok = bool((total <= bound * (1 + 1e-9)).all())
    return CheckResult(
        "C14",
        ok,
        f"‖∂h⁺/∂h‖ = {total.tolist()} <= (√d max|γ| / min‖u_t‖)·‖∂u/∂h‖ = {bound.tolist()}",
        {"local": total.tolist(), "bound": bound.tolist()},
    )


@claim(
    "C14",
    "Outer normalization as a contraction knob",
    r"For $h^+ = N(u)$, $u = h + F(h, x)$: "
    r"$\lVert\partial h^+/\partial h\rVert \le \frac{\sqrt d \max|\gamma|}{\lVert u\rVert}"
    r"\lVert\partial u/\partial h\rVert$ (per token; ε = 0): a larger pre-norm update contracts more.",
    ("RMSNorm with ε = 0 (ε > 0 only lowers the factor)",),
    ("SCIENCE.md C14",),
    _check_c14,
    uses=("C4", "R5"),
)
def c14(power: int = 1) -> Proof:
    pf = Prover("C14")
    n, g, du = sp.symbols("n g du", positive=True)
    d = sp.Symbol("d", positive=True, integer=True)
    factor = sp.sqrt(d) * g / n**power
    pf.equal(
        factor * du,
        sp.sqrt(d) * g / n * du,
        "chain rule: ‖J_N(u) ∂u/∂h‖ <= ‖J_N(u)‖·‖∂u/∂h‖ with ‖J_N(u)‖ = √d max|γ|/‖u‖ (C4)",
    )
    pf.true(
        sp.diff(sp.sqrt(d) * g / n, n) < 0,
        "the factor decreases as ‖u‖ grows: a larger pre-norm update contracts more",
    )
    return pf.proof()
