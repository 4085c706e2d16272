"""Canonical maps with known answers, used as a test bank across dynamo.

Each is an ``nn.Module`` whose ``forward`` is one step of the map, batch-first, with a ``driven``
flag and a ``state_shape``; most also carry their analytic answers (``fixed_points()``,
``fixed_point(x)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validate import call_form, check_choice, check_positive_float, check_positive_int
from ..errors import InvalidArgumentError

__all__ = [
    "Bistable",
    "ContractiveTanh",
    "Henon",
    "Hopfield",
    "LinearMap",
    "Logistic",
    "MonDEQ",
    "ZeroBranchRMSNorm",
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _gauss(shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    return std * torch.randn(shape, generator=gen, dtype=torch.float64)


class ContractiveTanh(nn.Module):
    """``h ↦ tanh(W h + U x + b)`` with ``‖W‖₂ = lipschitz`` exactly.

    tanh is 1-Lipschitz, so the map is a contraction in ``h`` with constant ``lipschitz`` for every
    input: by Banach's theorem it has exactly one fixed point per input and plain iteration reaches
    it from every start, at rate ``lipschitz``.

    Parameters
    ----------
    n : int
        State dimension.
    lipschitz : float
        ``‖W‖₂`` (the map's Lipschitz constant in ``h`` is at most this).
    d_in : int, optional
        Input dimension (default ``n``).
    recall : bool
        With recall the input enters every step (driven); without, the map is ``tanh(W h + b)``.
    structure : {"gaussian", "orthogonal", "symmetric"}
        ``W`` is a rescaled Gaussian draw (spectral radius about half of ``‖W‖₂``);
        ``lipschitz`` times an orthogonal matrix (every eigenvalue on the circle of radius
        ``lipschitz``: a slow contraction that no Krylov method accelerates much); or a rescaled
        symmetric Gaussian draw (real eigenvalues filling ``[−lipschitz, lipschitz]``: a slow
        contraction that Anderson and Broyden accelerate).
    input_scale : float
        Scale of ``U`` and ``b``; small values keep the fixed point near 0, where ``tanh′ ≈ 1``.
    seed : int
        Seed of the weight draw.
    dtype : torch.dtype
        Parameter dtype (default float64).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ContractiveTanh(n=8, lipschitz=0.9, seed=0)
    >>> round(float(torch.linalg.matrix_norm(f.W.detach(), ord=2)), 12)
    0.9
    """

    def __init__(
        self,
        n: int,
        lipschitz: float = 0.9,
        *,
        d_in: int | None = None,
        recall: bool = True,
        structure: str = "gaussian",
        input_scale: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        call = call_form("ContractiveTanh", [], n=n, lipschitz=lipschitz)
        check_positive_int(call, "n", n)
        check_positive_float(call, "lipschitz", lipschitz)
        check_choice(call, "structure", structure, ("gaussian", "orthogonal", "symmetric"))
        check_positive_float(call, "input_scale", input_scale)
        d_in = n if d_in is None else check_positive_int(call, "d_in", d_in)
        g = _gen(seed)
        w = _gauss((n, n), 1.0, g)
        if structure == "orthogonal":
            q, r = torch.linalg.qr(w)
            w = q * torch.sign(torch.diagonal(r))
        elif structure == "symmetric":
            w = (w + w.T) / 2
        w = w * (lipschitz / torch.linalg.matrix_norm(w, ord=2))
        self.W = nn.Parameter(w.to(dtype))
        self.U = nn.Parameter(_gauss((n, d_in), input_scale / math.sqrt(d_in), g).to(dtype))
        self.b = nn.Parameter(_gauss((n,), 0.1 * input_scale, g).to(dtype))
        self.driven = bool(recall)
        self.state_shape = (n,)
        self.lipschitz = float(lipschitz)

    def state_shape_for(self, x: torch.Tensor) -> tuple[int, ...]:
        """The state shape ``(n,)`` whatever the input.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> dy.models.ContractiveTanh(n=3).state_shape_for(torch.zeros(2, 3))
        (3,)
        """
        return self.state_shape

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """One step.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, seed=0)
        >>> h = x = torch.zeros(2, 3, dtype=torch.float64)
        >>> out = f(h, x)
        >>> out.shape, bool(out.abs().max() < 1)
        (torch.Size([2, 3]), True)
        """
        pre = h @ self.W.T + self.b
        if self.driven:
            if x is None:
                raise InvalidArgumentError("ContractiveTanh.forward(h, x): x is required")
            pre = pre + x @ self.U.T
        return torch.tanh(pre)


class LinearMap(nn.Module):
    """``h ↦ A h + B x + c``: the fixed point is ``(I − A)⁻¹ (B x + c)`` when ``1 ∉ spec A``.

    ``A`` is a Gaussian draw rescaled to the requested spectral radius, so its top eigenvalues are
    usually a complex pair. With ``spectral_radius < 1`` iteration converges; with ``> 1`` it
    diverges from almost every start although the (repelling) fixed point still exists.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.LinearMap(n=4, spectral_radius=0.5, seed=0)
    >>> x = torch.ones(1, 4, dtype=torch.float64)
    >>> h = f.fixed_point(x)
    >>> bool(torch.allclose(f(h, x), h, atol=1e-14))
    True
    """

    def __init__(
        self,
        n: int,
        spectral_radius: float = 0.9,
        *,
        d_in: int | None = None,
        recall: bool = True,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        call = call_form("LinearMap", [], n=n, spectral_radius=spectral_radius)
        check_positive_int(call, "n", n)
        check_positive_float(call, "spectral_radius", spectral_radius)
        if abs(spectral_radius - 1.0) < 1e-9:
            raise InvalidArgumentError(
                f"{call}: spectral_radius must differ from 1 (an eigenvalue on the unit circle can "
                "make I − A singular)"
            )
        d_in = n if d_in is None else check_positive_int(call, "d_in", d_in)
        g = _gen(seed)
        a = _gauss((n, n), 1.0, g)
        a = a * (spectral_radius / torch.linalg.eigvals(a).abs().max())
        self.A = nn.Parameter(a.to(dtype))
        self.B = nn.Parameter(_gauss((n, d_in), 1.0 / math.sqrt(d_in), g).to(dtype))
        self.c = nn.Parameter(_gauss((n,), 0.1, g).to(dtype))
        self.driven = bool(recall)
        self.state_shape = (n,)

    def state_shape_for(self, x: torch.Tensor) -> tuple[int, ...]:
        """The state shape ``(n,)`` whatever the input.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> dy.models.LinearMap(n=3).state_shape_for(torch.zeros(2, 3))
        (3,)
        """
        return self.state_shape

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """One step.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
        >>> h = torch.zeros(1, 3, dtype=torch.float64)
        >>> x = torch.ones(1, 3, dtype=torch.float64)
        >>> bool(torch.allclose(f(h, x), f.c + x @ f.B.T))  # A·0 vanishes
        True
        """
        out = h @ self.A.T + self.c
        if self.driven:
            if x is None:
                raise InvalidArgumentError("LinearMap.forward(h, x): x is required")
            out = out + x @ self.B.T
        return out

    def fixed_point(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The unique fixed point for each input, by a dense linear solve, ``(B, n)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
        >>> x = torch.ones(2, 3, dtype=torch.float64)
        >>> h = f.fixed_point(x)
        >>> h.shape, bool(torch.allclose(f(h, x), h))
        (torch.Size([2, 3]), True)
        """
        with torch.no_grad():
            rhs = self.c.unsqueeze(0)
            if self.driven:
                if x is None:
                    raise InvalidArgumentError("LinearMap.fixed_point(x): x is required")
                rhs = rhs + x @ self.B.T
            eye = torch.eye(self.A.shape[0], dtype=self.A.dtype, device=self.A.device)
            return torch.linalg.solve(eye - self.A, rhs.T).T


class Hopfield(nn.Module):
    """Continuous Hopfield network ``h ↦ tanh(β W h)``, ``W = ξᵀξ / N`` with zero diagonal.

    With ``P ≪ N`` random ±1 patterns and ``β = 4`` every pattern and its negative is a stable
    fixed point carrying that pattern's signs; spurious mixtures may add more. Autonomous.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.Hopfield(n=64, n_patterns=3, seed=0)
    >>> f.patterns.shape
    torch.Size([3, 64])
    """

    def __init__(
        self,
        n: int = 64,
        n_patterns: int = 3,
        *,
        beta: float = 4.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        call = call_form("Hopfield", [], n=n, n_patterns=n_patterns)
        check_positive_int(call, "n", n, minimum=2)
        check_positive_int(call, "n_patterns", n_patterns)
        check_positive_float(call, "beta", beta)
        if n_patterns >= n:
            raise InvalidArgumentError(f"{call}: n_patterns must be < n for a working memory")
        g = _gen(seed)
        xi = torch.where(torch.rand((n_patterns, n), generator=g) < 0.5, -1.0, 1.0)
        w = xi.T @ xi / n
        w.fill_diagonal_(0.0)
        self.patterns: torch.Tensor
        self.register_buffer("patterns", xi.to(dtype))
        self.W = nn.Parameter(w.to(dtype))
        self.beta = float(beta)
        self.driven = False
        self.state_shape = (n,)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One step.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.Hopfield(n=6, n_patterns=1, seed=0)
        >>> p = f.patterns
        >>> torch.equal(torch.sign(f(p)), p)  # a stored pattern keeps its signs
        True
        """
        return torch.tanh(self.beta * (h @ self.W.T))


class MonDEQ(nn.Module):
    """Monotone operator equilibrium layer ``z ↦ ReLU(W z + U x + b)`` (Winston & Kolter 2020).

    ``W = (1 − m) I − AᵀA + B − Bᵀ`` makes ``sym(I − W) = m I + AᵀA ⪰ m I``, so there is exactly one
    fixed point for every input (claim C11). ``‖W‖₂`` can exceed 1 (2.6 to 4.7, median 3.6, over
    seeds 0-199 at ``n = 16``, ``m = 0.5``): plain iteration may diverge while damped iteration or
    Newton converges.

    References
    ----------
    E. Winston, J. Z. Kolter, "Monotone operator equilibrium networks", arXiv:2006.08591.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.MonDEQ(n=16, m=0.5, seed=0)
    >>> sym = torch.eye(16, dtype=torch.float64) - f.W.detach()
    >>> bool(torch.linalg.eigvalsh((sym + sym.T) / 2).min() >= 0.5 - 1e-12)
    True
    """

    def __init__(
        self,
        n: int = 16,
        d_in: int | None = None,
        *,
        m: float = 0.5,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        call = call_form("MonDEQ", [], n=n, m=m)
        check_positive_int(call, "n", n)
        check_positive_float(call, "m", m)
        d_in = n if d_in is None else check_positive_int(call, "d_in", d_in)
        g = _gen(seed)
        a = _gauss((n, n), 1.0 / math.sqrt(n), g)
        b = _gauss((n, n), 1.0 / math.sqrt(n), g)
        w = (1 - m) * torch.eye(n, dtype=torch.float64) - a.T @ a + b - b.T
        self.W = nn.Parameter(w.to(dtype))
        self.U = nn.Parameter(_gauss((n, d_in), 1.0 / math.sqrt(d_in), g).to(dtype))
        self.bias = nn.Parameter(_gauss((n,), 0.1, g).to(dtype))
        self.m = float(m)
        self.driven = True
        self.state_shape = (n,)

    def state_shape_for(self, x: torch.Tensor) -> tuple[int, ...]:
        """The state shape ``(n,)`` whatever the input.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> dy.models.MonDEQ(n=4).state_shape_for(torch.zeros(2, 4))
        (4,)
        """
        return self.state_shape

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.MonDEQ(n=4, seed=0)
        >>> z = x = torch.zeros(2, 4, dtype=torch.float64)
        >>> out = f(z, x)
        >>> out.shape, bool((out >= 0).all())  # ReLU output
        (torch.Size([2, 4]), True)
        """
        return torch.relu(z @ self.W.T + x @ self.U.T + self.bias)


class Logistic(nn.Module):
    """The logistic map ``x ↦ r x (1 − x)`` on states of shape ``(1,)``.

    At ``r = 3.2``: fixed points 0 (``f′ = 3.2``) and ``1 − 1/r`` (``f′ = 2 − r = −1.2``), both
    unstable, and a stable 2-cycle ``{0.5130, 0.7995}``. At ``r = 3.9``: chaos, no stable point or
    short cycle.

    Examples
    --------
    >>> import dynamo as dy
    >>> dy.models.Logistic(r=3.2).fixed_points().flatten().tolist()
    [0.0, 0.6875]
    """

    r: torch.Tensor

    def __init__(self, r: float = 3.2, *, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if not isinstance(r, (int, float)) or not (0 < float(r) <= 4) or not math.isfinite(r):
            raise InvalidArgumentError(
                f"Logistic(r={r!r}): r must be a finite number in (0, 4] so that [0, 1] maps into "
                "itself"
            )
        self.register_buffer("r", torch.tensor(float(r), dtype=dtype))
        self.driven = False
        self.state_shape = (1,)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One step.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> dy.models.Logistic(r=3.2)(torch.tensor([[0.5]], dtype=torch.float64))
        tensor([[0.8000]], dtype=torch.float64)
        """
        return self.r * h * (1 - h)

    def fixed_points(self) -> torch.Tensor:
        """Both fixed points, ``(2, 1)``: 0 and ``1 − 1/r``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.Logistic(r=3.2)
        >>> fp = f.fixed_points()
        >>> fp.flatten().tolist(), bool(torch.allclose(f(fp), fp))
        ([0.0, 0.6875], True)
        """
        r = float(self.r)
        return torch.tensor([[0.0], [1 - 1 / r]], dtype=self.r.dtype)

    def two_cycle(self) -> torch.Tensor | None:
        """The period-2 orbit ``(r + 1 ∓ √((r − 3)(r + 1))) / (2r)`` for ``r > 3``, else None.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.Logistic(r=3.2)
        >>> c = f.two_cycle()
        >>> [round(v, 4) for v in c.flatten().tolist()], bool(torch.allclose(f(c), c.flip(0)))
        ([0.513, 0.7995], True)
        >>> dy.models.Logistic(r=2.5).two_cycle() is None
        True
        """
        r = float(self.r)
        if r <= 3:
            return None
        s = math.sqrt((r - 3) * (r + 1))
        return torch.tensor([[(r + 1 - s) / (2 * r)], [(r + 1 + s) / (2 * r)]], dtype=self.r.dtype)


class Henon(nn.Module):
    """The Hénon map ``(x, y) ↦ (1 − a x² + y, b x)`` on states of shape ``(2,)``.

    At the classic ``a = 1.4, b = 0.3``: two fixed points, ``x ≈ 0.6314`` and ``x ≈ −1.1314``, both
    saddles (eigenvalues ≈ (−1.924, 0.156) and (3.260, −0.092)); bounded orbits fall on the strange
    attractor, many starts escape to infinity.

    Examples
    --------
    >>> import dynamo as dy
    >>> [round(v, 4) for v in dy.models.Henon().fixed_points()[:, 0].tolist()]
    [0.6314, -1.1314]
    """

    a: torch.Tensor
    b: torch.Tensor

    def __init__(
        self, a: float = 1.4, b: float = 0.3, *, dtype: torch.dtype = torch.float64
    ) -> None:
        super().__init__()
        for name, v in (("a", a), ("b", b)):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidArgumentError(f"Henon(a={a!r}, b={b!r}): {name} must be finite")
        self.register_buffer("a", torch.tensor(float(a), dtype=dtype))
        self.register_buffer("b", torch.tensor(float(b), dtype=dtype))
        self.driven = False
        self.state_shape = (2,)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One step.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> dy.models.Henon()(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
        tensor([[1., 0.]], dtype=torch.float64)
        """
        x, y = h[..., 0], h[..., 1]
        return torch.stack((1 - self.a * x * x + y, self.b * x), dim=-1)

    def fixed_points(self) -> torch.Tensor:
        """``x = (−(1 − b) ± √((1 − b)² + 4a)) / (2a)``, ``y = b x``; ``(2, 2)`` (or fewer rows).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.Henon()
        >>> fp = f.fixed_points()
        >>> fp.shape, bool(torch.allclose(f(fp), fp))
        (torch.Size([2, 2]), True)
        """
        a, b = float(self.a), float(self.b)
        if a == 0:
            x = 1 / (1 - b)
            return torch.tensor([[x, b * x]], dtype=self.a.dtype)
        disc = (1 - b) ** 2 + 4 * a
        if disc < 0:
            return torch.zeros(0, 2, dtype=self.a.dtype)
        xs = [(-(1 - b) + math.sqrt(disc)) / (2 * a), (-(1 - b) - math.sqrt(disc)) / (2 * a)]
        return torch.tensor([[x, b * x] for x in xs], dtype=self.a.dtype)


class Bistable(nn.Module):
    """``h ↦ h + η (h − h³)`` per coordinate: ``3ⁿ`` fixed points ``{−1, 0, 1}ⁿ``.

    In 2-D with ``η = 0.2``: four stable points ``(±1, ±1)`` (``f′ = 1 − 2η = 0.6``), four saddles,
    and the unstable origin (``f′ = 1 + η = 1.2``); starts in ``[−2, 2]²`` fall into the four basins
    by quadrant.

    Examples
    --------
    >>> import dynamo as dy
    >>> dy.models.Bistable(n=2).fixed_points().shape
    torch.Size([9, 2])
    """

    eta: torch.Tensor

    def __init__(self, n: int = 2, eta: float = 0.2, *, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        call = call_form("Bistable", [], n=n, eta=eta)
        check_positive_int(call, "n", n)
        check_positive_float(call, "eta", eta, upper=1.0, upper_inclusive=False)
        self.register_buffer("eta", torch.tensor(float(eta), dtype=dtype))
        self.driven = False
        self.state_shape = (n,)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One step.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> dy.models.Bistable(n=2)(torch.tensor([[0.5, -2.0]], dtype=torch.float64))
        tensor([[ 0.5750, -0.8000]], dtype=torch.float64)
        """
        return h + self.eta * (h - h**3)

    def fixed_points(self) -> torch.Tensor:
        """All ``3ⁿ`` fixed points, ``(3ⁿ, n)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.Bistable(n=2)
        >>> fp = f.fixed_points()
        >>> fp[:3].tolist(), torch.equal(f(fp), fp)
        ([[-1.0, -1.0], [-1.0, 0.0], [-1.0, 1.0]], True)
        """
        n = self.state_shape[0]
        vals = torch.tensor([-1.0, 0.0, 1.0], dtype=self.eta.dtype)
        return torch.cartesian_prod(*([vals] * n)).reshape(-1, n)


class ZeroBranchRMSNorm(nn.Module):
    """``h ↦ RMSNorm(h + F(h))`` with ``F ≡ 0`` (zero-initialised output projections), γ = 1, ε = 0.

    Per token ``h ↦ √d · h / ‖h‖``: every point of the sphere ``‖h‖ = √d`` (per token) is fixed, and
    the Jacobian there has eigenvalues ``{0, 1 (d − 1 times)}`` per token. The fixed-point set is a
    continuum of dimension ``n_tokens · (d − 1)``, the counterexample C2 to "no recall ⇒ countably
    many fixed points" without the nondegeneracy hypothesis.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> f = dy.models.ZeroBranchRMSNorm(d=4)
    >>> f(torch.tensor([[3.0, 0.0, 0.0, 0.0]], dtype=torch.float64))
    tensor([[2., 0., 0., 0.]], dtype=torch.float64)
    """

    def __init__(
        self, d: int = 8, n_tokens: int | None = None, *, dtype: torch.dtype = torch.float64
    ) -> None:
        super().__init__()
        call = call_form("ZeroBranchRMSNorm", [], d=d, n_tokens=n_tokens)
        check_positive_int(call, "d", d, minimum=2)
        if n_tokens is not None:
            check_positive_int(call, "n_tokens", n_tokens)
        self.norm = nn.RMSNorm(d, eps=0.0, elementwise_affine=False, dtype=dtype)
        self.driven = False
        self.state_shape = (d,) if n_tokens is None else (n_tokens, d)
        self.register_buffer("_anchor", torch.zeros((), dtype=dtype))  # carries dtype/device

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One step: ``RMSNorm(h + 0)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ZeroBranchRMSNorm(d=2)
        >>> h = torch.tensor([[1.0, 1.0], [3.0, -3.0]], dtype=torch.float64)
        >>> f(h)  # each row lands on the sphere of radius √2
        tensor([[ 1.,  1.],
                [ 1., -1.]], dtype=torch.float64)
        """
        return self.norm(h)
