"""The tightness table of issue 16: certified Lipschitz bound ÷ best lower bound found by attack.

For each of 24 cells (recall × normalization placement × layers) the table gives the ratio of
the certified upper bound :func:`dynamo.lipschitz_upper_bound` to the largest local ``‖∂f/∂h‖₂``
found by several attacks. A ratio near 1 means the certified bound is tight; a large ratio means
the bound, the attack, or both have room.

Definitions
-----------
Models
    ``dynamo.models.LoopedTransformer(d_model=d, n_heads=4, n_layers=L, recall=R, norm=N,
    norm_type=NT, seed=seed).double()`` with ``R`` in ``("none", "outer")``, ``L`` in
    ``layers`` (default ``(1, 2)``) and the six columns ``(N, NT)`` of :data:`COLUMNS`:
    none, pre RMS, post RMS, sandwich RMS, outer RMS, outer LayerNorm.
Domain (the natural domain of each column)
    ``d = d_model``, ``T = n_tokens``. Outer RMSNorm puts every token on the sphere of radius
    ``√d``: ``Domain.sphere(√d, x_max=√d, n_tokens=T)``. Every other column:
    ``Domain.shell(√d/2, 2√d, x_max=√d, n_tokens=T)``. ``x_max`` is passed for recall "none"
    too (the map ignores its input there).
Upper bound
    ``dynamo.lipschitz_upper_bound(model, domain).value`` (certified). When it raises
    :class:`dynamo.errors.InvalidArgumentError` the cell records ``bound=None`` and the message.
Lower bound
    The largest local Lipschitz value found that an independent secant check confirms (below), a
    true lower bound of the Lipschitz constant of ``h ↦ f(h, x)`` on the domain for some input
    ``x`` whose token norms lie in ``[0, √d]`` (``x`` is free for the attacker with recall
    "outer"; with recall "none" it is unused). The candidates come from four attacks:

    (a) ``dynamo.lipschitz_lower_bound(system, states, method="ascent", domain=domain)``, the
        library's plain ascent, from states drawn by ``Domain.sample`` and a fixed random input
        batch (token directions uniform, token norms uniform in ``[0, √d]``), one input per
        state;
    (b) a joint attack: Adam ascent over ``(h, x)`` together on ``σ_max`` of the Jacobian
        ``∂f/∂h`` from several random starts, with ``h`` projected radially into the domain
        (every token norm clamped into ``[r_min, r_max]``) and ``x`` into the input ball after
        each step. The objective is ``uᵀ J(h, x) v`` with ``u, v`` the top singular pair,
        kept current by warm-started power iterations (``jvp``/``vjp``);
    (c) a targeted attack: Adam descent over ``(h, x)`` on the smallest token norm seen at the
        input of any RMSNorm/LayerNorm inside the model (found with forward pre-hooks; for a
        LayerNorm the norm of the centred token, which is what its Jacobian divides by), then
        the ascent of (b) from there. Where a norm's input token can get small its Jacobian is
        large, and the certified bound must cover it;
    (d) zero finding: Levenberg–Marquardt (minimum-norm damped Gauss–Newton steps, the
        ``d × n`` Jacobian from ``torch.func.jacrev``) on the input ``z_i(h, x) ∈ R^d`` of one
        norm layer at one token (centred for LayerNorm), over ``(h, x)`` written in coordinates
        that map onto the domain (:class:`_Param`: a projected step stalls where a token norm is
        clamped), until ``‖z_i‖ < 10⁻⁹√d``. At ``z_i = 0`` the norm's Jacobian is
        ``max|γ|/√ε = 1000``, and a zero propagates: a post-norm's output is 0, a bias-free MLP
        maps 0 to 0, so the next norms along the token are saturated too. From the best
        solutions a later norm whose input at the token is still above ``√(dε)`` is added as a
        second (third) root, its residual taken with the token zeroed at the earlier roots, and
        the stacked residual solved. The value at a zero is ``1/√ε`` per saturated norm times
        ordinary layer Jacobians that depend on the rest of the point (at a double root of pre
        RMS: the uniform attention row of the zeroed token, through the other tokens), so the
        two best (by exact value) of the longest chains solved from each start, a single root
        included, are then moved along their zeros: ascent on ``σ_max`` over ``p``, the
        gradient of ``uᵀ J v`` projected onto the null space of the stacked residual's
        Jacobian, with momentum, each step pulled back onto the zeros by the same
        Levenberg–Marquardt and kept only if it gets there and the exact value grows
        (:meth:`_Attack.ascend_roots`). Starts: the (norm, token) pairs where (c) got
        smallest, and every norm from random points. The best points, the ends of the chains
        and of the ascents, and the points ``10⁻ᵏ`` (``k = 3..9``) away from them along a
        random and along the top singular direction are evaluated (the peak is only
        ``~√(dε)`` wide in ``z_i``, and its top can lie a fraction of that off the zero, where
        an MLP after the norm sees a non-zero input).

    On a sphere domain (``r_min == r_max``, the outer RMS column) the Jacobian is restricted to
    the tangent space, ``J·P`` with ``P = I − h_i h_iᵀ/‖h_i‖²`` block-wise: directions that leave
    the sphere do not count. On a shell the full ``J`` counts (every point of a shell with
    ``r_min < r_max`` lies in the closure of its interior). Every candidate is re-evaluated at
    its final ``(h, x)``, projected into the domain, as the exact float64 dense ``‖J‖₂``
    (``‖J·P‖₂`` on the sphere) from ``torch.func.jacrev`` and an SVD, never taken from an
    optimiser's running value.
Secant check
    Candidates are checked from the largest down; the first whose value ``σ`` a secant
    quotient ``‖f(a) − f(b)‖/‖a − b‖`` matches to :data:`FD_TOLERANCE` is the lower bound
    (``fd_check`` records the quotient). ``a, b`` are domain points ``δ/2`` either side of
    the candidate along its top right singular vector (see :meth:`_Attack.fd_check` for the
    boundary); the quotient is the first of ``δ = 10⁻², …, 10⁻¹⁵`` that agrees with the next to
    1 %. Where several norms are saturated at once the Jacobian peak is narrower than float64
    can resolve (the residual ``‖z_i‖ ~ 10⁻¹⁶`` times ``1000`` per saturated norm), and such a
    value stays unconfirmed: it is recorded as ``lower_exact_max`` but not used.
Ratio
    ``bound / lower``.

Run ``python benchmarks/lipschitz_table.py --out /tmp/t.json --markdown /tmp/t.md``; the
benchmark ``benchmarks/test_bench_lipschitz_table.py`` runs :func:`compute_table` once.
``effort`` scales the number of starts and steps of every attack (1.0 keeps the 24 cells within
about six minutes on one core).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dynamo as dy
from dynamo.errors import InvalidArgumentError

__all__ = [
    "COLUMNS",
    "RECALLS",
    "compute_table",
    "format_ratio",
    "main",
    "natural_domain",
    "to_markdown",
]

RECALLS: tuple[str, ...] = ("none", "outer")
"""Rows of the table: the recall of the block."""

COLUMNS: tuple[tuple[str, str], ...] = (
    ("none", "rms"),
    ("pre", "rms"),
    ("post", "rms"),
    ("sandwich", "rms"),
    ("outer", "rms"),
    ("outer", "layer"),
)
"""Columns of the table: ``(norm, norm_type)``."""

_COLUMN_LABELS = {
    ("none", "rms"): "none",
    ("pre", "rms"): "pre RMS",
    ("post", "rms"): "post RMS",
    ("sandwich", "rms"): "sandwich RMS",
    ("outer", "rms"): "outer RMS",
    ("outer", "layer"): "outer LN",
}

Tensor = torch.Tensor
_TINY = 1e-300
FD_TOLERANCE = 0.03
"""Largest relative gap between a reported local ``‖J‖₂`` and its secant check."""


# ---------------------------------------------------------------------------- domain


def natural_domain(norm: str, norm_type: str, d_model: int, n_tokens: int) -> dy.Domain:
    """The natural domain of a column.

    Parameters
    ----------
    norm, norm_type : str
        The column, as in :data:`COLUMNS`.
    d_model, n_tokens : int
        Width ``d`` and sequence length ``T``.

    Returns
    -------
    dynamo.Domain
        ``Domain.sphere(√d, x_max=√d, n_tokens=T)`` for outer RMSNorm, otherwise
        ``Domain.shell(√d/2, 2√d, x_max=√d, n_tokens=T)``.
    """
    s = math.sqrt(d_model)
    if (norm, norm_type) == ("outer", "rms"):
        return dy.Domain.sphere(s, x_max=s, n_tokens=n_tokens)
    return dy.Domain.shell(s / 2, 2 * s, x_max=s, n_tokens=n_tokens)


def _clamp_tokens(t: Tensor, lo: float, hi: float) -> Tensor:
    """Every token (last axis) scaled radially so that its norm lies in ``[lo, hi]``."""
    n = t.norm(dim=-1, keepdim=True)
    target = n.clamp(min=lo, max=hi)
    safe = torch.where(n > 0, n, torch.ones_like(n))
    out = t * (target / safe)
    if lo > 0:  # a zero token has no direction: give it one
        e = torch.zeros_like(t)
        e[..., 0] = lo
        out = torch.where(n > 0, out, e)
    return out


def _random_tokens(shape: Sequence[int], lo: float, hi: float, gen: torch.Generator) -> Tensor:
    """Random token directions with norms uniform in ``[lo, hi]`` (float64)."""
    t = torch.randn(*shape, generator=gen, dtype=torch.float64)
    r = lo + (hi - lo) * torch.rand(*shape[:-1], 1, generator=gen, dtype=torch.float64)
    return t / t.norm(dim=-1, keepdim=True) * r


def _centred(module: nn.Module, a: Tensor) -> Tensor:
    """What a norm layer's Jacobian divides by: the token itself (RMSNorm) or the token minus
    its mean (LayerNorm)."""
    if isinstance(module, nn.LayerNorm):
        return a - a.mean(dim=-1, keepdim=True)
    return a


class _Param:
    """Unconstrained coordinates ``p`` of the attack's free variables, onto the domain.

    Shell: ``h_j = u_j/‖u_j‖ · (c + w tanh ρ_j)`` with ``c, w`` the centre and half-width of
    ``[r_min, r_max]``; sphere: ``h_j = r u_j/‖u_j‖``; input (recall "outer"): ``x_j = x_max
    v_j/√(1 + ‖v_j‖²)``. Every ``p`` maps into the domain, so Gauss–Newton steps need no
    projection (a projected step stalls where a token norm is clamped at ``r_min``).
    """

    def __init__(self, attack: _Attack, n_tokens: int, d: int) -> None:
        dom = attack.domain
        self.sphere, self.driven = attack.sphere, attack.driven
        self.t, self.d = n_tokens, d
        self.c = (dom.r_min + dom.r_max) / 2
        self.w = (dom.r_max - dom.r_min) / 2
        self.x_max = attack.x_max
        self.n_h = n_tokens * d + (0 if self.sphere else n_tokens)

    def to_hx(self, p: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(h, x)`` (``(T, d)`` each; ``x`` None without recall) from ``p``."""
        td = self.t * self.d
        u = p[:td].reshape(self.t, self.d)
        u = u / u.norm(dim=-1, keepdim=True)
        if self.sphere:
            h = u * self.c
        else:
            h = u * (self.c + self.w * torch.tanh(p[td : self.n_h]))[:, None]
        if not self.driven:
            return h, None
        v = p[self.n_h :].reshape(self.t, self.d)
        return h, self.x_max * v / torch.sqrt(1 + (v * v).sum(-1, keepdim=True))

    def from_hx(self, h: Tensor, x: Tensor | None) -> Tensor:
        """A ``p`` whose image is ``(h, x)``, moved inside by at most 1 % of the shell's width and
        of the input radius (``tanh``'s end points are at infinity)."""
        parts = [h.reshape(-1)]
        if not self.sphere:
            parts.append(torch.atanh(((h.norm(dim=-1) - self.c) / self.w).clamp(-0.99, 0.99)))
        if self.driven:
            assert x is not None
            n = x.norm(dim=-1, keepdim=True)
            t = (n / self.x_max).clamp(max=0.99)
            e = torch.zeros_like(x)
            e[:, 0] = 1.0
            u = torch.where(n > 0, x / n.clamp_min(_TINY), e)
            parts.append((u * t / torch.sqrt(1 - t * t)).reshape(-1))
        return torch.cat(parts)


class _StopForward(Exception):
    """Raised by a hook once everything a residual needs is captured."""


# ---------------------------------------------------------------------------- the attack


@dataclass
class _Found:
    """The best point of one attack, re-evaluated exactly."""

    value: float
    h: Tensor  # (T, d)
    x: Tensor | None  # (T, d) or None


class _Attack:
    """Local Lipschitz values of one model on one domain, and the attacks (b) and (c)."""

    def __init__(self, model: nn.Module, domain: dy.Domain, driven: bool) -> None:
        self.model = model
        self.domain = domain
        self.driven = driven
        self.sphere = domain.r_min == domain.r_max
        self.x_max = float(domain.x_max) if domain.x_max is not None else 0.0
        self.norms = [m for m in model.modules() if isinstance(m, (nn.RMSNorm, nn.LayerNorm))]

    # ---- the map and its Jacobian
    def step(self, h: Tensor, x: Tensor | None) -> Tensor:
        """``f(h, x)`` for a batch ``(K, T, d)``."""
        return self.model(h, x) if self.driven else self.model(h)

    def project(self, h: Tensor, x: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``h`` into the domain, ``x`` into the input ball (token-wise, radially)."""
        h = _clamp_tokens(h, self.domain.r_min, self.domain.r_max)
        if x is not None:
            x = _clamp_tokens(x, self.domain.x_min, self.x_max)
        return h, x

    def _tangent(self, h: Tensor, v: Tensor) -> Tensor:
        """``P v`` (block-wise projection onto the tangent space of the token spheres)."""
        if not self.sphere:
            return v
        u = h / h.norm(dim=-1, keepdim=True)
        return v - (v * u).sum(-1, keepdim=True) * u

    def exact(self, h: Tensor, x: Tensor | None) -> Tensor:
        """Exact float64 ``‖J‖₂`` (``‖J·P‖₂`` on a sphere) at each ``(h, x)`` of a batch, from the
        dense Jacobian (``torch.func.jacrev``) and an SVD."""
        return torch.linalg.matrix_norm(self._dense(h, x), ord=2).detach()

    def token_norm_inputs(self, h: Tensor, x: Tensor | None) -> Tensor | None:
        """The norm of every token at the input of every norm layer (``(K, n_norms, T)``; the
        centred token for LayerNorm), or None when the model has no norm layer."""
        if not self.norms:
            return None
        seen: list[Tensor] = []

        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            seen.append(_centred(module, args[0]).norm(dim=-1))

        handles = [m.register_forward_pre_hook(hook) for m in self.norms]
        try:
            self.step(h, x)
        finally:
            for hd in handles:
                hd.remove()
        return torch.stack(seen, dim=1)

    def norm_inputs(self, h: Tensor, x: Tensor | None) -> Tensor | None:
        """The smallest token norm at the input of any norm layer, per example (``(K,)``; the
        centred token for LayerNorm), or None when the model has no norm layer."""
        z = self.token_norm_inputs(h, x)
        return None if z is None else z.flatten(1).amin(dim=1)

    # ---- (b): joint ascent on σ_max over (h, x)
    def _local(
        self, h: Tensor, x: Tensor | None, v: Tensor, iters: int, lr: float | None = None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """Warm-started power iterations on ``A = J·P`` at ``(h, x)``, from one forward pass.

        Returns ``(s, v, grads)``: ``s = ‖Aᵀu‖`` per example (a lower estimate of ``σ_max``),
        the updated unit right vector ``v`` and, when ``lr`` is given, the gradient of
        ``Σ uᵀ A(h, x) v / s`` with respect to ``h`` (and ``x``), ``u, v`` held fixed.
        ``Jv`` is the double-backward ``∂/∂c ⟨Jᵀc, v⟩``, cheaper here than forward mode.
        """
        hh = h.detach().requires_grad_(True)
        xx = None if x is None else x.detach().requires_grad_(lr is not None)
        out = self.step(hh, xx)
        c = torch.zeros_like(out, requires_grad=True)
        (jtc,) = torch.autograd.grad(out, hh, c, create_graph=True)  # Jᵀc, linear in c
        hd = hh.detach()
        s = torch.zeros(h.shape[0], dtype=h.dtype)
        u = v
        for _ in range(iters):
            (av,) = torch.autograd.grad(jtc, c, self._tangent(hd, v), retain_graph=True)
            u = av / av.norm(dim=(1, 2), keepdim=True).clamp_min(_TINY)
            (jtu,) = torch.autograd.grad(out, hh, u, retain_graph=True)
            atu = self._tangent(hd, jtu)
            s = atu.norm(dim=(1, 2))
            v = atu / s.clamp_min(_TINY)[:, None, None]
        if lr is None:
            return s, v, ()
        (g,) = torch.autograd.grad(out, hh, u, create_graph=True)  # Jᵀu, differentiable
        obj = ((g * self._tangent(hh, v)).sum(dim=(1, 2)) / s.clamp_min(_TINY)).sum()
        grads = torch.autograd.grad(obj, [hh] if xx is None else [hh, xx])
        return s, v, grads

    def ascend(
        self, h: Tensor, x: Tensor | None, *, steps: int, lr: float, gen: torch.Generator
    ) -> _Found:
        """Adam ascent on ``σ_max(J·P)`` over ``(h, x)`` from a batch of starts; the best point
        seen (by the power-iteration value, a lower estimate) re-evaluated exactly."""
        h, x = self.project(h.detach().clone(), None if x is None else x.detach().clone())
        hp = h.clone().requires_grad_(True)
        xp = None if x is None else x.clone().requires_grad_(True)
        params = [hp] if xp is None else [hp, xp]
        opt = torch.optim.Adam(params, lr=lr)
        v = torch.randn(h.shape, generator=gen, dtype=h.dtype)
        v = v / v.norm(dim=(1, 2), keepdim=True)
        _, v, _ = self._local(hp, xp, v, 4)
        best_s = torch.zeros(h.shape[0], dtype=h.dtype)
        best_h, best_x = hp.detach().clone(), None if xp is None else xp.detach().clone()
        for i in range(steps + 1):
            last = i == steps
            s, v, grads = self._local(hp, xp, v, 2, None if last else lr)
            better = s > best_s
            best_s = torch.where(better, s, best_s)
            best_h = torch.where(better[:, None, None], hp.detach(), best_h)
            if best_x is not None and xp is not None:
                best_x = torch.where(better[:, None, None], xp.detach(), best_x)
            if last:
                break
            opt.param_groups[0]["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * i / steps)))
            opt.zero_grad()
            for p, gr in zip(params, grads, strict=True):
                p.grad = -gr
            opt.step()
            with torch.no_grad():
                ph, px = self.project(hp, xp)
                hp.copy_(ph)
                if xp is not None and px is not None:
                    xp.copy_(px)
        return self._best_exact(best_h, best_x)

    def _best_exact(self, h: Tensor, x: Tensor | None) -> _Found:
        h, x = self.project(h, x)
        vals = self.exact(h, x)
        i = int(torch.argmax(vals))
        return _Found(float(vals[i]), h[i], None if x is None else x[i])

    # ---- (c): drive a norm input token to zero, then ascend
    def shrink_norm_inputs(
        self, h: Tensor, x: Tensor | None, *, steps: int, lr: float
    ) -> tuple[Tensor, Tensor | None]:
        """Adam descent on ``log`` of the smallest norm-input token norm over ``(h, x)``."""
        h, x = self.project(h.detach().clone(), None if x is None else x.detach().clone())
        hp = h.clone().requires_grad_(True)
        xp = None if x is None else x.clone().requires_grad_(True)
        params = [hp] if xp is None else [hp, xp]
        opt = torch.optim.Adam(params, lr=lr)
        best = torch.full((h.shape[0],), math.inf, dtype=h.dtype)
        best_h, best_x = hp.detach().clone(), None if xp is None else xp.detach().clone()
        for i in range(steps):
            opt.param_groups[0]["lr"] = lr * (
                1e-3 + 0.5 * (1 - 1e-3) * (1 + math.cos(math.pi * i / steps))
            )
            m = self.norm_inputs(hp, xp)
            assert m is not None
            with torch.no_grad():
                better = m < best
                best = torch.where(better, m.detach(), best)
                best_h = torch.where(better[:, None, None], hp.detach(), best_h)
                if best_x is not None and xp is not None:
                    best_x = torch.where(better[:, None, None], xp.detach(), best_x)
            opt.zero_grad()
            torch.log(m.clamp_min(_TINY)).sum().backward()
            opt.step()
            with torch.no_grad():
                ph, px = self.project(hp, xp)
                hp.copy_(ph)
                if xp is not None and px is not None:
                    xp.copy_(px)
        return self.project(best_h, best_x)

    # ---- (d): Gauss–Newton to an exact zero of a norm's input token
    def _chain_residual(
        self, param: _Param, chain: Sequence[int], tok: int
    ) -> Callable[[Tensor], Tensor]:
        """``p ↦`` the inputs of token ``tok`` (centred for LayerNorm) at the norms ``chain``
        (indices into :attr:`norms`, increasing), stacked.

        At every root but the last the token is then replaced by exactly zero (its mean, for
        LayerNorm) before the norm is applied, so a later root's residual is what is left once
        the earlier roots are solved, and Gauss–Newton cannot cancel it by leaving an earlier
        root's saturation (its huge Jacobian invites exactly that). The forward pass stops at the
        last root.
        """
        where = {id(m): k for k, m in enumerate(self.norms)}
        wanted, last = set(chain), chain[-1]

        def fn(p: Tensor) -> Tensor:
            h, x = param.to_hx(p)
            seen: dict[int, Tensor] = {}

            def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
                k = where[id(module)]
                if k not in wanted:
                    return None
                a = args[0]
                z = _centred(module, a[:, tok])  # (1, d)
                seen[k] = z[0]
                if k == last:
                    raise _StopForward
                mask = torch.zeros(a.shape[1], 1, dtype=a.dtype)
                mask[tok] = 1.0
                return (a - mask * z[:, None, :], *args[1:])

            handles = [m.register_forward_pre_hook(hook) for m in self.norms]
            try:
                self.step(h[None], None if x is None else x[None])
            except _StopForward:
                pass
            finally:
                for hd in handles:
                    hd.remove()
            return torch.cat([seen[k] for k in chain])

        return fn

    def zero_token(
        self,
        param: _Param,
        chain: Sequence[int],
        tok: int,
        p: Tensor,
        *,
        iters: int,
        tol: float,
        slow: bool = False,
    ) -> tuple[Tensor, float]:
        """Levenberg–Marquardt on the residual of :meth:`_chain_residual` over ``p``: minimum-norm
        damped steps ``−Aᵀ(AAᵀ + λI)⁻¹r`` with ``A = ∂r/∂p`` from ``torch.func.jacrev``, until
        ``‖r‖ < tol`` (then at most two polishing steps while ``‖r‖`` at least halves) or
        stagnation: ``‖r‖`` not halved in six steps, or with ``slow`` (chained roots, whose
        residual crawls along ill-conditioned valleys) not down 2 % in ten. Returns the final
        ``p`` and ``‖r‖``."""
        fn = self._chain_residual(param, chain, tok)
        jac = torch.func.jacrev(fn)
        r = fn(p).detach()
        a = jac(p).detach()
        res = float(r.norm())
        floor = 1e-14 * float((a * a).sum()) / a.shape[0]
        lam = max(1e-3 * float((a * a).sum()) / a.shape[0], floor)
        history = [res]
        eye = torch.eye(r.numel(), dtype=r.dtype)
        for _ in range(iters):
            aat = a @ a.T
            accepted = False
            for _ in range(8):
                try:
                    step = -a.T @ torch.linalg.solve(aat + lam * eye, r)
                except RuntimeError:  # singular: damp more
                    lam *= 10
                    continue
                q = p + step
                rq = fn(q).detach()
                new = float(rq.norm())
                if math.isfinite(new) and new < res:
                    accepted = True
                    break
                lam *= 10
            if not accepted:
                break
            converged_before = res < tol
            p, r, res = q, rq, new
            lam = max(lam / 10, floor)
            history.append(res)
            if converged_before and res > 0.5 * history[-2]:
                break  # polished to rounding
            if len(history) > 3 and history[-1] < tol and history[-4] < tol:
                break  # two polishing steps done
            if not slow and len(history) > 6 and res > 0.5 * history[-7]:
                break  # stagnation: not halved in six steps
            if slow and len(history) > 10 and res > 0.98 * history[-11]:
                break  # stagnation: not down 2 % in ten steps
            a = jac(p).detach()
        return p.detach(), res

    def extend(
        self,
        param: _Param,
        chain: list[int],
        tok: int,
        p: Tensor,
        *,
        iters: int,
        tol: float,
        sat: float,
        max_roots: int,
    ) -> tuple[list[Tensor], list[int], Tensor]:
        """From a solved ``chain`` (token ``tok`` is zero at the input of its norms), add the
        first later norm whose input at ``tok`` is still above ``sat`` (those in between are then
        saturated by themselves: a post-norm's output is 0 where its input is, and a bias-free
        MLP maps 0 to 0) and solve the longer chain, and so on up to ``max_roots`` roots.
        Returns the point ``p`` after every added root, and the longest chain solved (to ``tol``)
        with its point (``chain`` and ``p`` themselves when no root could be added)."""
        points: list[Tensor] = []
        while len(chain) < max_roots:
            h, x = param.to_hx(p)
            z = self.token_norm_inputs(h[None], None if x is None else x[None])
            assert z is not None
            later = [k for k in range(chain[-1] + 1, len(self.norms)) if float(z[0, k, tok]) > sat]
            if not later:
                break
            longer = [*chain, later[0]]
            q, res = self.zero_token(param, longer, tok, p, iters=iters, tol=tol, slow=True)
            points.append(q)
            if res >= tol:
                break
            chain, p = longer, q
        return points, chain, p

    def _value_and_pair(self, param: _Param, p: Tensor) -> tuple[float, Tensor, Tensor]:
        """Exact ``‖J‖₂`` (``‖J·P‖₂``) at the image of ``p``, and its top singular pair
        ``(u, v)`` (``(T, d)`` each)."""
        h, x = param.to_hx(p.detach())
        u, s, vh = torch.linalg.svd(self._dense(h[None], None if x is None else x[None])[0])
        return float(s[0]), u[:, 0].reshape(h.shape), vh[0].reshape(h.shape)

    def ascend_roots(
        self,
        param: _Param,
        chain: Sequence[int],
        tok: int,
        p: Tensor,
        *,
        steps: int,
        iters: int,
        tol: float,
    ) -> Tensor:
        """Ascent on ``σ_max(J·P)`` along the zeros of the residual of :meth:`_chain_residual`
        (``p`` solves it to ``tol``): the gradient over ``p`` of ``uᵀ J v`` (``u, v`` the top
        singular pair), projected onto the null space of ``∂r/∂p``, with momentum 0.9; each
        step is pulled back onto the zeros by :meth:`zero_token` and kept only when the residual
        is below ``tol`` again and the exact value has grown (else the step is cut by 3, and
        after a kept step grown by 1.5). Returns the best point.

        At a zero the saturated norms multiply everything after them by ``1/√ε``, so the value
        there depends on the rest of the point (the other tokens, through attention) like a
        product of ordinary layer Jacobians, and moving along the zeros can gain much more than
        any single solve finds by chance. The unprojected gradient is dominated by the peak
        (leaving the zero); the projection removes it."""
        fn = self._chain_residual(param, chain, tok)
        jac = torch.func.jacrev(fn)
        model = self.model

        def objective(q: Tensor, u: Tensor, v: Tensor) -> Tensor:
            hh, xx = param.to_hx(q)
            vv = self._tangent(hh[None], v[None])[0]

            def f(a: Tensor) -> Tensor:
                return (model(a[None]) if xx is None else model(a[None], xx[None]))[0]

            jv = torch.func.jvp(f, (hh,), (vv,))[1]
            return (u * jv).sum()

        grad = torch.func.grad(objective)
        p = p.detach()
        val, u, v = self._value_and_pair(param, p)
        eta, prev = 0.1, None
        for _ in range(steps):
            _, _, basis = torch.linalg.svd(jac(p).detach(), full_matrices=False)
            g = grad(p, u, v).detach()
            d = g - basis.T @ (basis @ g)
            if not bool(torch.isfinite(d).all()) or float(d.norm()) == 0.0:
                break
            d = d / d.norm()
            if prev is not None:
                d = d + 0.9 * (prev - basis.T @ (basis @ prev))
                d = d / d.norm()
            prev = d
            while eta > 1e-4:
                q, res = self.zero_token(
                    param, chain, tok, p + eta * d, iters=iters, tol=tol, slow=True
                )
                if res < tol:
                    vq, uq, vvq = self._value_and_pair(param, q)
                    if vq > val:
                        p, val, u, v = q, vq, uq, vvq
                        eta *= 1.5
                        break
                eta /= 3
            else:
                break
        return p

    def _dense(self, h: Tensor, x: Tensor | None) -> Tensor:
        """The dense Jacobian ``J`` (``J·P`` on a sphere) at each ``(h, x)`` of a batch,
        ``(K, T·d, T·d)``."""
        h = h.detach()
        k, t, d = h.shape
        if self.driven:
            assert x is not None

            def one(hh: Tensor, xx: Tensor) -> Tensor:
                return self.model(hh[None], xx[None])[0]

            jac = torch.func.vmap(torch.func.jacrev(one))(h, x.detach())
        else:

            def one_auto(hh: Tensor) -> Tensor:
                return self.model(hh[None])[0]

            jac = torch.func.vmap(torch.func.jacrev(one_auto))(h)
        if self.sphere:  # J·P: project the input side of every column block
            u = (h / h.norm(dim=-1, keepdim=True))[:, None, None]
            jac = jac - (jac * u).sum(-1, keepdim=True) * u
        return jac.reshape(k, t * d, t * d).detach()

    def top_direction(self, h: Tensor, x: Tensor | None) -> tuple[float, Tensor]:
        """``σ_max`` of ``J`` (``J·P``) at one point ``(T, d)`` and its right singular vector."""
        _, s, vh = torch.linalg.svd(self._dense(h[None], None if x is None else x[None])[0])
        return float(s[0]), vh[0].reshape(h.shape)

    def around(self, found: _Found, gen: torch.Generator) -> list[_Found]:
        """The exact values at ``found`` and at points ``10⁻ᵏ`` away (``k = 3..9``) along a
        random direction and along the top right singular vector, re-projected (the peak of a
        saturated norm is only ``~√(dε)`` wide in its input)."""
        h, x = found.h, found.x
        _, v = self.top_direction(h, x)
        r = self._tangent(h[None], torch.randn(h.shape, generator=gen, dtype=h.dtype))[0]
        r = r / r.norm()
        steps = [10.0**-k * e for k in range(3, 10) for e in (r, v)]
        hs = torch.stack([h] + [h + s for s in steps])
        xs = None if x is None else x[None].expand(hs.shape[0], *x.shape)
        return self.all_exact(hs, xs)

    def all_exact(self, h: Tensor, x: Tensor | None) -> list[_Found]:
        """Every point of a batch, projected into the domain, with its exact value."""
        h, x = self.project(h, x)
        vals = self.exact(h, x)
        return [
            _Found(float(vals[i]), h[i], None if x is None else x[i]) for i in range(h.shape[0])
        ]

    def fd_check(self, found: _Found) -> tuple[float | None, list[float]]:
        """An independent secant check of ``found.value``: ``‖f(a) − f(b)‖/‖a − b‖`` for two
        domain points ``a, b = c ± (δ/2) v``, ``v`` the top right singular vector at ``found``,
        ``δ = 10⁻ᵏ`` (``k = 2..15``). ``c`` is ``found`` itself on a sphere (``a, b`` then
        re-projected onto it), and on a shell ``found`` with every token norm clamped into
        ``[r_min + δ, r_max − δ]``, so that ``a`` and ``b`` lie in the domain even where
        ``found`` is on its boundary (``c`` is at most ``δ`` from ``found``). ``x`` is held.
        Returns the first quotient that agrees with the next smaller step's to 1 % (the
        plateau between curvature and rounding; None when there is none) and the ladder."""
        h, x = found.h, found.x
        _, v = self.top_direction(h, x)
        xs = None if x is None else x[None]
        lo, hi = self.domain.r_min, self.domain.r_max
        ladder = []
        for k in range(2, 16):
            delta = 10.0**-k
            c = (
                h
                if self.sphere or hi - lo <= 2 * delta
                else _clamp_tokens(h, lo + delta, hi - delta)
            )
            a, _ = self.project((c + delta / 2 * v)[None], None)
            b, _ = self.project((c - delta / 2 * v)[None], None)
            num = (self.step(a, xs) - self.step(b, xs)).norm()
            ladder.append(float(num / (a - b).norm()))
        for q0, q1 in itertools.pairwise(ladder):
            if abs(q0 - q1) <= 0.01 * q1:
                return q1, ladder
        return None, ladder


# ---------------------------------------------------------------------------- one cell


def _stack_points(param: _Param, points: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
    """The points ``p`` of (d) as a batch ``(h, x)``."""
    pairs = [param.to_hx(q) for q in points]
    h = torch.stack([a for a, _ in pairs])
    xs = [b for _, b in pairs if b is not None]
    return h, torch.stack(xs) if xs else None


def _budget(effort: float) -> dict[str, int]:
    def n(base: float) -> int:
        return max(1, round(base * effort))

    return dict(
        a_states=n(6),
        a_steps=n(12),
        b_starts=n(4),
        b_steps=n(50),
        c_starts=n(6),
        c_shrink=n(150),
        c_steps=n(30),
        d_seeds=n(4),
        d_random=n(3),
        d_iters=30,
        d_extend=n(2),
        d_iters_chain=n(150),
        d_roots=3,
        d_ascend=n(2),
        d_ascend_steps=n(40),
        d_around=n(1),
    )


def _cell(
    recall: str,
    norm: str,
    norm_type: str,
    layers: int,
    *,
    d_model: int,
    n_heads: int,
    n_tokens: int,
    seed: int,
    effort: float,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    budget = _budget(effort)
    model = (
        dy.models.LoopedTransformer(
            d_model=d_model,
            n_heads=n_heads,
            n_layers=layers,
            recall=recall,
            norm=norm,
            norm_type=norm_type,
            seed=seed,
        )
        .double()
        .requires_grad_(False)
    )
    domain = natural_domain(norm, norm_type, d_model, n_tokens)
    driven = recall != "none"
    shape = (n_tokens, d_model)
    x_max = float(domain.x_max) if domain.x_max is not None else 0.0
    row: dict[str, Any] = dict(
        recall=recall, norm=norm, norm_type=norm_type, layers=layers, domain=repr(domain)
    )
    try:
        row["bound"] = float(dy.lipschitz_upper_bound(model, domain).value)
        row["bound_error"] = None
    except InvalidArgumentError as err:
        row["bound"], row["bound_error"] = None, str(err)
    attack = _Attack(model, domain, driven)
    gen = torch.Generator().manual_seed(seed)

    def inputs(k: int) -> Tensor | None:
        x = _random_tokens((k, *shape), 0.0, x_max, gen)
        return x if driven else None

    # (a) the library's plain ascent, one fixed random input per state
    xa = _random_tokens((budget["a_states"], *shape), 0.0, x_max, gen)
    system = dy.LoopedSystem.from_module(model, xa)
    states = domain.sample(system, budget["a_states"], seed=seed)
    low = dy.lipschitz_lower_bound(
        system, states, method="ascent", steps=budget["a_steps"], domain=domain, seed=seed
    )
    assert low.witness is not None and low.local_values is not None
    i = int(torch.argmax(low.local_values))
    found_a = attack._best_exact(low.witness.to(torch.float64), xa[i : i + 1] if driven else None)

    # (b) joint ascent over (h, x) from random starts
    lr = 0.075 * math.sqrt(d_model)
    kb = budget["b_starts"]
    hb = _random_tokens((kb, *shape), domain.r_min, domain.r_max, gen)
    found_b = attack.ascend(hb, inputs(kb), steps=budget["b_steps"], lr=lr, gen=gen)

    # (c) shrink a norm input token, then ascend
    found_c: _Found | None = None
    shrunk: float | None = None
    if attack.norms:
        kc = budget["c_starts"]
        hc = _random_tokens((kc, *shape), domain.r_min, domain.r_max, gen)
        hc, xc = attack.shrink_norm_inputs(hc, inputs(kc), steps=budget["c_shrink"], lr=lr)
        m = attack.norm_inputs(hc, xc)
        assert m is not None
        shrunk = float(m.min())
        at_start = attack._best_exact(hc, xc)
        found_c = attack.ascend(hc, xc, steps=budget["c_steps"], lr=0.02 * lr, gen=gen)
        if at_start.value > found_c.value:
            found_c = at_start

    # (d) Gauss–Newton to exact zeros of norm-input tokens, chained along a token
    found_d: list[_Found] = []
    reached_d: float | None = None
    sat = math.inf
    if attack.norms:
        param = _Param(attack, n_tokens, d_model)
        sat = math.sqrt(d_model * float(attack.norms[0].eps or 0.0))
        tol = 1e-9 * math.sqrt(d_model)
        starts: list[tuple[int, int, Tensor]] = []
        z = attack.token_norm_inputs(hc, xc)  # seeds: where (c) got a token smallest
        assert z is not None
        for j in torch.argsort(z.flatten(1).amin(dim=1))[: budget["d_seeds"]].tolist():
            k, tok = divmod(int(torch.argmin(z[j])), n_tokens)
            starts.append((k, tok, param.from_hx(hc[j], None if xc is None else xc[j])))
        for k in range(len(attack.norms)):  # and every norm from random points
            for _ in range(budget["d_random"]):
                tok = int(torch.randint(n_tokens, (1,), generator=gen))
                h0 = _random_tokens((1, *shape), domain.r_min, domain.r_max, gen)[0]
                x0 = inputs(1)
                starts.append((k, tok, param.from_hx(h0, None if x0 is None else x0[0])))
        solved: list[tuple[int, int, Tensor]] = []
        points: list[Tensor] = []
        for k, tok, p0 in starts:
            q, res = attack.zero_token(param, [k], tok, p0, iters=budget["d_iters"], tol=tol)
            points.append(q)
            if res < tol:
                solved.append((k, tok, q))
        ends: list[Tensor] = []
        if solved:  # chain further roots from the best solved points of every root
            first = attack.all_exact(*_stack_points(param, [q for _, _, q in solved]))
            order = sorted(range(len(solved)), key=lambda i: -first[i].value)
            picked = [
                i
                for i in order
                if sum(solved[j][0] == solved[i][0] for j in order[: order.index(i)])
                < budget["d_extend"]
            ]
            chains: list[tuple[list[int], int, Tensor]] = []  # the longest chain solved
            for i in picked:
                k, tok, q = solved[i]
                more, chain, q = attack.extend(
                    param,
                    [k],
                    tok,
                    q,
                    iters=budget["d_iters_chain"],
                    tol=tol,
                    sat=sat,
                    max_roots=budget["d_roots"],
                )
                points += more
                ends += more[-1:]
                chains.append((chain, tok, q))
            # then ascend along the zeros of the best chains
            at = attack.all_exact(*_stack_points(param, [q for _, _, q in chains]))
            for i in sorted(range(len(chains)), key=lambda i: -at[i].value)[: budget["d_ascend"]]:
                chain, tok, q = chains[i]
                q = attack.ascend_roots(
                    param,
                    chain,
                    tok,
                    q,
                    steps=budget["d_ascend_steps"],
                    iters=budget["d_iters"],
                    tol=tol,
                )
                points.append(q)
                ends.append(q)
        found_d = attack.all_exact(*_stack_points(param, points))
        m = attack.norm_inputs(*_stack_points(param, points))
        assert m is not None
        reached_d = float(m.min())
        order = sorted(range(len(points)), key=lambda i: -found_d[i].value)
        centres = [found_d[i] for i in order[: budget["d_around"]]]
        centres += attack.all_exact(*_stack_points(param, ends)) if ends else []
        for f in centres:
            found_d += attack.around(f, gen)

    # the best value that an independent secant check confirms
    found = [found_a, found_b] + ([found_c] if found_c is not None else []) + found_d
    found.sort(key=lambda f: -f.value)
    best, fd, ladder = found[0], None, []  # (fd None: nothing confirmed)
    for f in found:
        quot, lad = attack.fd_check(f)
        if quot is not None and abs(quot / f.value - 1) <= FD_TOLERANCE:
            best, fd, ladder = f, quot, lad
            break
    top = found[0]
    bc = found_b if found_c is None or found_b.value >= found_c.value else found_c
    at_best = attack.token_norm_inputs(best.h[None], None if best.x is None else best.x[None])
    at_top = attack.token_norm_inputs(top.h[None], None if top.x is None else top.x[None])
    bound = row["bound"]

    def n_saturated(z: Tensor | None) -> int:
        return 0 if z is None else int((z[0].amin(dim=-1) < sat / 10).sum())

    row.update(
        lower=best.value,
        lower_exact_max=top.value,
        lower_a=found_a.value,
        lower_bc=bc.value,
        lower_b=found_b.value,
        lower_c=None if found_c is None else found_c.value,
        lower_d=max((f.value for f in found_d), default=None),
        ratio=None if bound is None else bound / best.value,
        norm_input_min=shrunk,
        norm_input_min_d=reached_d,
        norm_input_at_best=None if at_best is None else float(at_best.min()),
        saturated=n_saturated(at_best),
        saturated_at_max=n_saturated(at_top),
        fd_check=fd,
        fd_ladder=ladder,
        seconds=time.perf_counter() - t0,
    )
    return row


def compute_table(
    *,
    d_model: int = 16,
    n_heads: int = 4,
    n_tokens: int = 8,
    seed: int = 0,
    layers: Sequence[int] = (1, 2),
    effort: float = 1.0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Certified bound, lower bounds and their ratio for every cell of the table.

    Parameters
    ----------
    d_model, n_heads, n_tokens : int
        Width, heads and sequence length of every block.
    seed : int
        Seed of the parameter draw, the random inputs and the attacks' starts.
    layers : sequence of int
        Layers per block (one table entry per count).
    effort : float
        Scales the starts and steps of every attack.
    progress : callable, optional
        Called with each row as it is done.

    Returns
    -------
    list of dict
        One row per cell, in the order recall, column, layers, with keys ``recall``, ``norm``,
        ``norm_type``, ``layers``, ``domain`` (repr), ``bound`` (None when no bound could be
        certified; ``bound_error`` then holds the message), ``lower`` (the largest local
        ``‖J‖₂`` found that the secant check confirms), ``lower_exact_max`` (the largest exact
        local value evaluated, confirmed or not), ``lower_a`` (plain ascent), ``lower_bc`` (the
        better of the joint and targeted attacks), ``lower_b``, ``lower_c``, ``lower_d`` (the
        last two None without a norm layer), ``ratio`` (``bound / lower``), ``fd_check`` (the
        secant quotient that confirms ``lower``; None when no value could be confirmed) and
        ``fd_ladder`` (its quotients for ``δ = 10⁻²..10⁻¹⁵``), ``norm_input_min`` and
        ``norm_input_min_d`` (the smallest norm-input token norm reached by attacks (c) and
        (d)), ``norm_input_at_best`` (the smallest at ``lower``'s point), ``saturated`` and
        ``saturated_at_max`` (how many norm layers have an input token below ``√(dε)/10`` at
        ``lower``'s point and at ``lower_exact_max``'s) and ``seconds``.
    """
    if effort <= 0 or not math.isfinite(effort):
        raise ValueError(f"compute_table(effort={effort!r}): effort must be a positive number")
    rows = []
    for recall in RECALLS:
        for norm, norm_type in COLUMNS:
            for n_layers in layers:
                row = _cell(
                    recall,
                    norm,
                    norm_type,
                    n_layers,
                    d_model=d_model,
                    n_heads=n_heads,
                    n_tokens=n_tokens,
                    seed=seed,
                    effort=effort,
                )
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


# ---------------------------------------------------------------------------- output


def format_ratio(value: float | None) -> str:
    """Two significant digits as in the issue: ``19``, ``2.5e2``, ``1e5``; ``n/a`` for None.

    Parameters
    ----------
    value : float or None

    Returns
    -------
    str
    """
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    if abs(value) < 100:
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def _g(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _one_layer_ratios(rows: Sequence[dict[str, Any]]) -> list[float]:
    return [r["ratio"] for r in rows if r["layers"] == 1 and r["ratio"] is not None]


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The table as Markdown: ratios shaped like the issue's, then the raw bounds, then the
    median and max ratio over one-layer cells and over all cells.

    Parameters
    ----------
    rows : sequence of dict
        As returned by :func:`compute_table`.

    Returns
    -------
    str
    """
    layers = sorted({r["layers"] for r in rows})
    cell = {(r["recall"], r["norm"], r["norm_type"], r["layers"]): r for r in rows}
    label = " / ".join(f"{n} layer{'s' if n > 1 else ''}" for n in layers)
    head = [f"recall ({label})"] + [_COLUMN_LABELS[c] for c in COLUMNS]
    lines = [
        "Certified Lipschitz bound ÷ best lower bound found:",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for recall in RECALLS:
        entries = [recall]
        for norm, norm_type in COLUMNS:
            rs = [cell.get((recall, norm, norm_type, n)) for n in layers]
            entries.append(" / ".join(format_ratio(r["ratio"] if r else None) for r in rs))
        lines.append("| " + " | ".join(entries) + " |")
    lines += [
        "",
        "Bounds per cell (lower: the largest local ‖J‖₂ found that the secant check confirms; "
        "(a) plain ascent, (b/c) joint / targeted attack, (d) Gauss–Newton zeros of norm inputs; "
        "fd: the secant quotient; max ‖J‖: the largest exact local value evaluated, confirmed or "
        "not; min z (c), (d): the smallest norm-input token norm reached; sat.: norm layers "
        "saturated (an input token below √(dε)/10) at the lower bound's point / at max ‖J‖'s):",
        "",
        "| recall | norm | layers | bound | lower | ratio | (a) | (b/c) | (d) | fd | max ‖J‖ "
        "| min z (c) | min z (d) | sat. | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bound = _g(r["bound"]) if r["bound_error"] is None else f"error: {r['bound_error']}"
        lines.append(
            f"| {r['recall']} | {_COLUMN_LABELS[(r['norm'], r['norm_type'])]} | {r['layers']} "
            f"| {bound} | {_g(r['lower'])} | {format_ratio(r['ratio'])} | {_g(r['lower_a'])} "
            f"| {_g(r['lower_bc'])} | {_g(r['lower_d'])} | {_g(r['fd_check'])} "
            f"| {_g(r['lower_exact_max'])} | {_g(r['norm_input_min'])} "
            f"| {_g(r['norm_input_min_d'])} | {r['saturated']} / {r['saturated_at_max']} "
            f"| {r['seconds']:.1f} |"
        )
    one = _one_layer_ratios(rows)
    every = [r["ratio"] for r in rows if r["ratio"] is not None]
    lines.append("")
    for name, ratios in (("one-layer cells", one), ("all cells", every)):
        if ratios:
            lines.append(
                f"median ratio over {name}: {format_ratio(statistics.median(ratios))}; "
                f"max: {format_ratio(max(ratios))}"
            )
        else:
            lines.append(f"no {name} with a bound")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: compute the table, print it, write JSON and/or Markdown.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the Markdown tables here")
    parser.add_argument("--effort", type=float, default=1.0, help="scale of the attacks")
    parser.add_argument(
        "--layers", type=int, nargs="+", default=[1, 2], help="layers per block (default 1 2)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    def show(row: dict[str, Any]) -> None:
        print(
            f"{row['recall']:>5s} {_COLUMN_LABELS[(row['norm'], row['norm_type'])]:>12s} "
            f"L={row['layers']}: bound {_g(row['bound'])}, lower {_g(row['lower'])} "
            f"(a {_g(row['lower_a'])}, b/c {_g(row['lower_bc'])}, d {_g(row['lower_d'])}, "
            f"fd {_g(row['fd_check'])}, max {_g(row['lower_exact_max'])}), "
            f"ratio {format_ratio(row['ratio'])}, {row['seconds']:.1f} s",
            flush=True,
        )

    t0 = time.perf_counter()
    rows = compute_table(
        seed=args.seed, layers=tuple(args.layers), effort=args.effort, progress=show
    )
    total = time.perf_counter() - t0
    text = to_markdown(rows)
    print()
    print(text)
    print(f"total {total:.1f} s ({torch.get_num_threads()} threads)")
    if args.out is not None:
        payload = dict(
            rows=rows,
            seconds=total,
            effort=args.effort,
            seed=args.seed,
            threads=torch.get_num_threads(),
        )
        args.out.write_text(json.dumps(payload, indent=1) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
