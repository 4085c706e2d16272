"""Jacobians of looped maps: dense (batched, chunked) and matrix-free operators.

The state map of a :class:`~dynamo.LoopedSystem` acts on each example independently, so the
Jacobian of a batch is block diagonal; everything here works per example, batched over N states.

Matrix-free products use reverse mode twice: ``vjp`` gives ``u ↦ Jᵀu``, and since that function is
linear in ``u``, the ``vjp`` of it gives ``v ↦ J v``. After a one-off set-up (about 4 forward
passes) each product costs about 1.5 forward passes, against 8-14 for forward-mode ``jvp`` through
an eager transformer block on 2 CPU cores (measured at state dimension 1024-8192; the benchmark in
``benchmarks/`` prints the current figures). Forward mode is the fallback when a map does not
support double backward: before its first ``J v`` an operator checks the reverse-over-reverse
product against the first-order ``vjp`` (the adjoint identity ``⟨u, J Jᵀu⟩ = ‖Jᵀu‖²``), because a
``torch.autograd.Function`` whose backward is ``once_differentiable`` makes that product silently
zero rather than raise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch.func import jacfwd, jacrev, vjp, vmap

from ._compat import jvp
from ._system import LoopedSystem
from ._types import ADMode
from ._validate import call_form, check_choice, check_finite_tensor, check_positive_int
from ._validate import check_state_shape as _check_shape
from .errors import InvalidArgumentError, MapError

__all__ = ["JacobianOperator", "input_jacobian", "jacobian", "jacobian_operator"]

FlatFn = Callable[[torch.Tensor], torch.Tensor]


def _prepare(
    call: str, system: Any, h: Any, x: torch.Tensor | None
) -> tuple[LoopedSystem, torch.Tensor, torch.Tensor | None]:
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(
            f"{call}: system must be a dynamo.LoopedSystem, got {type(system).__name__}"
        )
    _check_shape(call, "h", h, system.state_shape)
    if h.device != system.device:
        raise InvalidArgumentError(
            f"{call}: h is on {h.device} but the system is on {system.device}; pass "
            "h.to(system.device)"
        )
    check_finite_tensor(call, "h", h)
    xx = system._input_for(call, h.shape[0], x, check_values=x is not None)
    if not system.driven:
        xx = None  # an autonomous map ignores its input: nothing to map over
    z = system.flatten(h.detach().to(system.dtype))
    return system, z, xx


def _flat(system: LoopedSystem, xx: torch.Tensor | None) -> FlatFn:
    def f(z: torch.Tensor) -> torch.Tensor:
        return system.flatten(system._step_unchecked(system.unflatten(z), xx))

    return f


def _operator_at(system: LoopedSystem, states: torch.Tensor) -> JacobianOperator:
    """``J = ∂f/∂h`` of the flat step at a batch of states (row i with the system's input row i),
    matrix-free."""
    return JacobianOperator(_flat(system, system.step_x), system.flatten(states))


def _top_eigenvalues(
    system: LoopedSystem,
    states: torch.Tensor,
    *,
    k: int,
    dense_limit: int,
    seed: int,
    dense_fallback: bool,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Eigenvalues of ``∂f/∂h`` at each state, by modulus, largest first: the engine's one switch
    between dense and Krylov.

    Up to ``dense_limit`` state entries, every eigenvalue of the dense Jacobian (``exact``);
    above, the top ``k`` by Arnoldi (tolerance ``√eps``, at most 300 steps), with the rows where
    Arnoldi did not converge either given the dense spectrum's top ``k`` (``dense_fallback``:
    unconverged Ritz values of a non-normal ``J`` may lie anywhere, even outside the spectrum)
    or flagged unconverged. Returns ``(values (N, m) complex, converged (N,) bool on the CPU,
    exact)``.
    """
    from ._krylov import arnoldi

    n = system.state_dim
    if n <= dense_limit:
        ev = torch.linalg.eigvals(jacobian(system, states))
        ev = torch.gather(ev, 1, torch.argsort(ev.abs(), dim=1, descending=True))
        return ev, torch.ones(ev.shape[0], dtype=torch.bool), True
    op = _operator_at(system, states)
    kr = arnoldi(
        op.matvec,
        op.shape[0],
        n,
        op.dtype,
        op.device,
        k=min(k, n),
        tol=math.sqrt(torch.finfo(system.dtype).eps),
        max_steps=min(n, 300),
        seed=seed,
    )
    values, converged = kr.values, kr.converged.to(torch.bool).cpu()
    bad = torch.nonzero(~converged).flatten()
    if dense_fallback and bad.numel():
        values = values.clone()
        # one input row per state only where the step takes the input: an autonomous system's x
        # (a source of starts) has its own batch size
        x = system.step_x
        sub = system.with_input(x[bad.to(x.device)]) if x is not None else system
        J = jacobian(sub, states[bad.to(states.device)])
        ev = torch.linalg.eigvals(J)
        ev = torch.gather(ev, 1, torch.argsort(ev.abs(), dim=1, descending=True))
        values[bad.to(values.device)] = ev[:, : values.shape[1]].to(values.dtype)
        converged = torch.ones_like(converged)
    return values, converged, False


def _per_example(
    system: LoopedSystem,
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    def f(z: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        xb = None if x is None else x[None]
        return system.flatten(system._step_unchecked(system.unflatten(z[None]), xb))[0]

    return f


def jacobian(
    system: LoopedSystem,
    h: torch.Tensor,
    *,
    x: torch.Tensor | None = None,
    mode: ADMode = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dense Jacobians ``∂f/∂h`` of the flat state map at a batch of states, ``(N, n, n)``.

    Parameters
    ----------
    system : LoopedSystem
    h : torch.Tensor
        States ``(N, *state_shape)``.
    x : torch.Tensor, optional
        Input to use instead of the system's own.
    mode : {"auto", "reverse", "forward"}
        ``"reverse"`` (``vmap`` over ``vjp``, i.e. ``jacrev``) or ``"forward"`` (``jacfwd``).
        ``"auto"`` takes reverse mode: for a square Jacobian both need ``n`` products, and a
        reverse product through an eager block costs a fraction of a forward-mode one.
    chunk_size : int, optional
        Compute at most this many rows (reverse) or columns (forward) at once, to bound memory
        (``n × chunk_size`` numbers per state instead of ``n × n`` intermediates).

    Returns
    -------
    torch.Tensor
        ``J[i] = ∂ flat(f)(h_i) / ∂ flat(h_i)``.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 3))
    >>> J = dy.jacobian(system, torch.zeros(2, 3, dtype=torch.float64))
    >>> J.shape, bool(torch.allclose(J[1], lin.A.detach()))
    (torch.Size([2, 3, 3]), True)
    """
    call = call_form("jacobian", ["system", "h"], mode=mode)
    system, z, xx = _prepare(call, system, h, x)
    check_choice(call, "mode", mode, ("auto", "reverse", "forward"))
    if chunk_size is not None:
        check_positive_int(call, "chunk_size", chunk_size)
    one = _per_example(system)
    in_dims = (0, None if xx is None else 0)
    with torch.no_grad():
        if mode == "forward":
            eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)

            def cols(zi: torch.Tensor, xi: torch.Tensor | None) -> torch.Tensor:
                def tangent(v: torch.Tensor) -> torch.Tensor:
                    return jvp(lambda w: one(w, xi), (zi,), (v,))[1]

                return vmap(tangent, chunk_size=chunk_size)(eye).T

            return vmap(cols, in_dims=in_dims)(z, xx)
        return vmap(jacrev(one, chunk_size=chunk_size), in_dims=in_dims)(z, xx)


def input_jacobian(
    system: LoopedSystem, h: torch.Tensor, *, x: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense ``∂f/∂x`` at a batch of states: ``(N, n_state, n_input)`` (flattened input).

    Forward mode when the input is smaller than the state (fewer products), else reverse mode.
    An autonomous system does not depend on its input: its input Jacobian is zero by construction.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, d_in=2, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.ones(1, 2))
    >>> Jx = dy.input_jacobian(system, torch.zeros(1, 3, dtype=torch.float64))
    >>> bool(torch.allclose(Jx[0], lin.B.detach()))
    True
    """
    call = call_form("input_jacobian", ["system", "h"])
    system, z, xx = _prepare(call, system, h, x)
    if not system.driven or xx is None:
        raise InvalidArgumentError(
            f"{call}: the system is autonomous (no recall), so f does not depend on x and its "
            "input Jacobian is zero by construction"
        )
    one = _per_example(system)
    n_in = int(np.prod(xx.shape[1:]))
    x_shape = xx.shape[1:]

    def g(xf: torch.Tensor, zi: torch.Tensor) -> torch.Tensor:
        return one(zi, xf.reshape(x_shape))

    transform = jacfwd if n_in < z.shape[1] else jacrev
    with torch.no_grad():
        return vmap(transform(g))(xx.reshape(xx.shape[0], -1).to(system.dtype), z)


@dataclass
class _Counts:
    matvec: int = 0
    rmatvec: int = 0


class JacobianOperator:
    """Matrix-free ``J = ∂f/∂h`` at a batch of N states: ``matvec`` (``J v``) and ``rmatvec``
    (``Jᵀ u``) on ``(N, n)`` tensors, one product per state at once.

    Build it with :func:`jacobian_operator`. ``J v`` is a ``vjp`` of the ``vjp`` (exact, about 1.5
    forward passes a product after set-up) or, with ``mode="forward"``, a forward-mode ``jvp``.
    :meth:`scipy` views one state's Jacobian as a ``scipy.sparse.linalg.LinearOperator``.

    In reverse mode the first :meth:`matvec` first checks the reverse-over-reverse product on one
    seeded direction (``⟨u, J Jᵀu⟩ = ‖Jᵀu‖²`` per state, to ``√eps``; one extra product and one
    ``vjp``, not counted in :attr:`counts`). A map without a usable double backward (the product
    raises, or comes out inconsistent, as with a ``once_differentiable`` autograd Function) is
    then differentiated in forward mode instead, and :attr:`mode` says ``"forward"``. A caller
    that builds operators for one map at many states (a Newton solve) can check the first and
    pass ``check=False``, or ``mode="forward"`` after a fallback, to the others.

    Attributes
    ----------
    shape : tuple
        ``(N, n_out, n_in)`` (square for ``∂f/∂h``).
    mode : {"reverse", "forward"}
        How ``J v`` is formed; ``"forward"`` after a fallback.
    fallback : str or None
        Why reverse mode was given up, or None.

    Examples
    --------
    :func:`jacobian_operator` returns one:

    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 3))
    >>> op = dy.jacobian_operator(system, torch.zeros(2, 3, dtype=torch.float64))
    >>> op
    JacobianOperator(N=2, n=3, mode='reverse')
    >>> op.shape, op.counts
    ((2, 3, 3), {'matvec': 0, 'rmatvec': 0})
    """

    def __init__(
        self, fn: FlatFn, z: torch.Tensor, *, mode: str = "reverse", check: bool = True
    ) -> None:
        self._fn = fn
        self.z = z
        self.mode = mode
        self.dtype = z.dtype
        self.device = z.device
        self._counts = _Counts()
        with torch.no_grad():
            primal = vjp(fn, z)
        self.value, vjp_fn = primal[0], primal[1]
        self.shape = (int(z.shape[0]), int(self.value.shape[1]), int(z.shape[1]))
        self._vjp = vjp_fn
        self._jvp_rev: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None
        # reverse-over-reverse is checked before its first use, unless the caller knows the map
        # passed (the same map at another state: the check is about its operations)
        self._checked = mode != "reverse" or not check
        self.fallback: str | None = None  # why reverse mode was given up, if it was
        if mode == "reverse":
            try:
                with torch.no_grad():
                    dual = vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(self.value))
                self._jvp_rev = dual[1]
            except RuntimeError as err:  # a map without double backward: fall back to forward
                self._use_forward(f"building the double vjp raised {type(err).__name__}: {err}")

    def _use_forward(self, why: str) -> None:
        self.mode, self._jvp_rev, self._checked, self.fallback = "forward", None, True, why

    def _check_reverse(self) -> None:
        """Check ``⟨u, J a⟩ = ‖a‖²`` with ``a = Jᵀu`` for a seeded ``u``, per state.

        ``a`` comes from the first-order ``vjp``, which every map that dynamo can analyse supports;
        ``J a`` from the reverse-over-reverse product under test. Both sides are sums of ``n``
        products, equal to rounding, about ``eps·√n·‖u‖‖J‖‖a‖`` against the right side's
        ``‖a‖² ≈ ‖J‖_F²‖u‖²/n`` for a random ``u``: ``√eps`` leaves a wide margin for any state
        dimension in float32 and float64. A product that raises, or a broken one (zero, or missing
        part of J), fails the check.
        """
        self._checked = True
        assert self._jvp_rev is not None
        gen = torch.Generator(device="cpu").manual_seed(20240613)
        u = torch.randn(tuple(self.value.shape), generator=gen, dtype=torch.float64)
        u = u.to(dtype=self.value.dtype, device=self.device)
        try:
            with torch.no_grad():
                a = self._vjp(u)[0]
                ja = self._jvp_rev(a)[0]
        except RuntimeError as err:
            self._use_forward(f"the first J v raised {type(err).__name__}: {err}")
            return
        aa = (a.double() ** 2).sum(dim=1)
        uja = (u.double() * ja.double()).sum(dim=1)
        tol = math.sqrt(torch.finfo(self.dtype).eps) * aa
        if not bool(((uja - aa).abs() <= tol).all()):
            worst = float(((uja - aa).abs() / aa.clamp_min(torch.finfo(torch.float64).tiny)).max())
            self._use_forward(
                f"the double vjp disagrees with the vjp (relative {worst:.2g} in <u, J J^T u> = "
                "|J^T u|^2; a once_differentiable backward?)"
            )

    @property
    def counts(self) -> dict[str, int]:
        """Products computed so far."""
        return {"matvec": self._counts.matvec, "rmatvec": self._counts.rmatvec}

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``J v`` for each state: ``v`` and the result are ``(N, n)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 3))
        >>> op = dy.jacobian_operator(system, torch.zeros(2, 3, dtype=torch.float64))
        >>> v = torch.eye(3, dtype=torch.float64)[:2]  # e_1 for state 0, e_2 for state 1
        >>> bool(torch.allclose(op.matvec(v), v @ lin.A.detach().T))  # columns of A
        True
        """
        if not self._checked:
            self._check_reverse()
        self._counts.matvec += 1
        with torch.no_grad():
            if self._jvp_rev is not None:
                return self._jvp_rev(v)[0]
            try:
                return jvp(self._fn, (self.z,), (v,))[1]
            except RuntimeError as err:
                if self.fallback is None:
                    raise
                raise MapError(
                    f"JacobianOperator.matvec(v): J v needs reverse-over-reverse or forward-mode "
                    f"differentiation of the map, and it supports neither ({self.fallback}; "
                    f"forward mode raised {type(err).__name__}: {err}); every operation in the "
                    "map needs a differentiable backward or a forward-mode rule (for a custom "
                    "torch.autograd.Function: a backward without once_differentiable, or a jvp "
                    "staticmethod)"
                ) from err

    def rmatvec(self, u: torch.Tensor) -> torch.Tensor:
        """``Jᵀ u`` for each state: ``u`` and the result are ``(N, n)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 3))
        >>> op = dy.jacobian_operator(system, torch.zeros(2, 3, dtype=torch.float64))
        >>> u = torch.eye(3, dtype=torch.float64)[:2]
        >>> bool(torch.allclose(op.rmatvec(u), u @ lin.A.detach()))  # rows of A
        True
        """
        self._counts.rmatvec += 1
        with torch.no_grad():
            return self._vjp(u)[0]

    def dense(self) -> torch.Tensor:
        """The dense ``(N, n_out, n_in)`` Jacobian, column by column from ``matvec`` (checks).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 3))
        >>> op = dy.jacobian_operator(system, torch.zeros(2, 3, dtype=torch.float64))
        >>> J = op.dense()
        >>> J.shape, bool(torch.allclose(J[0], lin.A.detach())), op.counts["matvec"]
        (torch.Size([2, 3, 3]), True, 3)
        """
        n_rows, n = self.shape[0], self.shape[2]
        cols = []
        for j in range(n):
            e = torch.zeros(n_rows, n, dtype=self.dtype, device=self.device)
            e[:, j] = 1
            cols.append(self.matvec(e))
        return torch.stack(cols, dim=2)

    def scipy(self, index: int = 0) -> sla.LinearOperator:
        """State ``index``'s Jacobian as a ``scipy.sparse.linalg.LinearOperator`` (float64 NumPy).

        The other states of the batch ride along with zero vectors; build the operator on a single
        state for efficiency when you only need scipy.

        Examples
        --------
        >>> import numpy as np
        >>> import torch, dynamo as dy
        >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
        >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 3))
        >>> op = dy.jacobian_operator(system, torch.zeros(2, 3, dtype=torch.float64))
        >>> L = op.scipy(1)
        >>> L.shape, bool(np.allclose(L @ np.ones(3), lin.A.detach().numpy() @ np.ones(3)))
        ((3, 3), True)
        """
        n_rows, n_out, n_in = self.shape
        if not 0 <= index < n_rows:
            raise InvalidArgumentError(
                f"JacobianOperator.scipy(index={index}): index must be in [0, {n_rows})"
            )

        def lift(v: np.ndarray, n: int) -> torch.Tensor:
            full = torch.zeros(n_rows, n, dtype=self.dtype, device=self.device)
            full[index] = torch.as_tensor(np.ravel(v), dtype=self.dtype, device=self.device)
            return full

        def mv(v: np.ndarray) -> np.ndarray:
            return self.matvec(lift(v, n_in))[index].cpu().double().numpy()

        def rmv(v: np.ndarray) -> np.ndarray:
            return self.rmatvec(lift(v, n_out))[index].cpu().double().numpy()

        return sla.LinearOperator((n_out, n_in), matvec=mv, rmatvec=rmv, dtype=np.float64)

    def __repr__(self) -> str:
        return f"JacobianOperator(N={self.shape[0]}, n={self.shape[1]}, mode={self.mode!r})"


def jacobian_operator(
    system: LoopedSystem, h: torch.Tensor, *, x: torch.Tensor | None = None, mode: str = "reverse"
) -> JacobianOperator:
    """The matrix-free Jacobian ``∂f/∂h`` at a batch of states.

    Parameters
    ----------
    system : LoopedSystem
    h : torch.Tensor
        States ``(N, *state_shape)``.
    x : torch.Tensor, optional
        Input to use instead of the system's own.
    mode : {"reverse", "forward"}
        How ``J v`` is formed: reverse mode twice (default, fast after set-up) or forward-mode
        ``jvp`` (no set-up, no stored graph, slower per product through eager code).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lin = dy.models.LinearMap(n=3, spectral_radius=0.5, seed=0)
    >>> system = dy.LoopedSystem.from_module(lin, torch.zeros(1, 3))
    >>> op = dy.jacobian_operator(system, torch.zeros(1, 3, dtype=torch.float64))
    >>> v = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    >>> bool(torch.allclose(op.matvec(v), v @ lin.A.detach().T))
    True
    >>> bool(torch.allclose(op.rmatvec(v), v @ lin.A.detach()))
    True
    """
    call = call_form("jacobian_operator", ["system", "h"], mode=mode)
    system, z, xx = _prepare(call, system, h, x)
    check_choice(call, "mode", mode, ("reverse", "forward"))
    return JacobianOperator(_flat(system, xx), z, mode=mode)
