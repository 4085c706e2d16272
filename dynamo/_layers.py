"""The fixed point of a k-layer block seen layer by layer: cyclic fixed points (Blayney et al.)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ._linearize import JacobianOperator, jacobian
from ._spectral import _arnoldi
from ._system import LoopedSystem
from ._validate import call_form, check_finite_tensor, check_positive_int, check_state_shape
from .errors import InvalidArgumentError

__all__ = ["LayerCycle", "layer_cycle"]


@dataclass(frozen=True)
class LayerCycle:
    """Per-layer view of a block's fixed point ``h* = f_k ∘ … ∘ f_1(h*)``.

    Attributes
    ----------
    states : torch.Tensor
        ``(k, N, *state_shape)``: ``h_ℓ* = f_ℓ(h_{ℓ−1}*)``, ``h_0* = h*``; ``h_k*`` closes the
        cycle.
    closure : torch.Tensor
        ``(N,)``: ``‖h_k* − h_0*‖ / ‖h_0*‖``, how well the per-layer cycle closes.
    distinctness : torch.Tensor
        ``(N, k, k)``: relative distances ``‖h_ℓ* − h_m*‖ / ‖h_0*‖`` between the layers' points
        (the layers converge to *different* points, cyclically).
    convergence : torch.Tensor
        ``(n_steps + 1, N, k)``: ``‖h_ℓ(t) − h_ℓ*‖ / ‖h_ℓ*‖`` along iteration from ``start``.
    rotation_eigenvalues : torch.Tensor
        ``(k, N, m)``: the top-``m`` eigenvalues by modulus of each rotated composition
        ``f_{s−1} ∘ … ∘ f_1 ∘ f_k ∘ … ∘ f_s`` at ``h_{s−1}*``. They coincide (eig(AB) = eig(BA),
        claim C10): a cycle's stability does not depend on the starting layer.
    rotation_spread : torch.Tensor
        ``(N,)``: the largest difference of those moduli across rotations.
    attention_change : torch.Tensor or None
        ``(n_steps, N, k)`` for the reference transformer: the largest change of any attention
        probability from one iteration to the next, per layer.

    Examples
    --------
    :func:`layer_cycle` returns one; here for a two-layer block whose layers settle on
    different points:

    >>> import torch, dynamo as dy
    >>> layers = [lambda h, x: torch.tanh(0.5 * h + x), lambda h, x: -0.5 * h]
    >>> x = torch.ones(1, 2, dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_function(
    ...     lambda h, x: layers[1](layers[0](h, x), x), state_shape=(2,), x=x, layers=layers
    ... )
    >>> h = dy.solve(system, torch.zeros(1, 2, dtype=torch.float64)).state
    >>> lc = dy.layer_cycle(system, h, n_steps=10)
    >>> lc.n_layers, lc.states.shape, bool(lc.closure.max() < 1e-8)
    (2, torch.Size([2, 1, 2]), True)
    >>> round(float(lc.distinctness[0, 0, 1]), 6)  # ‖h_1* − h_0*‖ / ‖h_0*‖
    3.0
    """

    states: torch.Tensor
    closure: torch.Tensor
    distinctness: torch.Tensor
    convergence: torch.Tensor
    rotation_eigenvalues: torch.Tensor
    rotation_spread: torch.Tensor
    attention_change: torch.Tensor | None

    @property
    def n_layers(self) -> int:
        """k."""
        return int(self.states.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> layers = [lambda h, x: torch.tanh(0.5 * h + x), lambda h, x: -0.5 * h]
        >>> x = torch.ones(1, 2, dtype=torch.float64)
        >>> system = dy.LoopedSystem.from_function(
        ...     lambda h, x: layers[1](layers[0](h, x), x), state_shape=(2,), x=x, layers=layers
        ... )
        >>> h = dy.solve(system, torch.zeros(1, 2, dtype=torch.float64)).state
        >>> lc = dy.layer_cycle(system, h, n_steps=10)
        >>> d = lc.to_dict()
        >>> d["n_layers"], d["attention_change_last"], sorted(d)[:3]
        (2, None, ['attention_change_last', 'closure', 'distinctness'])
        """
        return {
            "n_layers": self.n_layers,
            "closure": self.closure.tolist(),
            "distinctness": self.distinctness.tolist(),
            "rotation_spread": self.rotation_spread.tolist(),
            "rotation_top_moduli": self.rotation_eigenvalues.abs().tolist(),
            "final_convergence": self.convergence[-1].tolist(),
            "attention_change_last": None
            if self.attention_change is None
            else self.attention_change[-1].tolist(),
        }

    def __str__(self) -> str:
        k = self.n_layers
        off = self.distinctness[:, ~torch.eye(k, dtype=torch.bool)] if k > 1 else None
        dist = "n/a" if off is None else f"{float(off.min()):.3g}"
        return (
            f"LayerCycle({k} layers, {self.states.shape[1]} states): closure "
            f"{float(self.closure.max()):.1e}, smallest inter-layer distance {dist}, rotation "
            f"spectra agree to {float(self.rotation_spread.max()):.1e}"
        )


def layer_cycle(
    system: LoopedSystem,
    h_star: torch.Tensor,
    *,
    start: torch.Tensor | None = None,
    n_steps: int = 50,
    k: int = 4,
    dense_limit: int = 512,
    seed: int = 0,
) -> LayerCycle:
    """The cyclic fixed point of a k-layer block at the block's fixed points ``h_star``.

    Each layer ``ℓ`` of the block converges to its own point ``h_ℓ*`` with ``h_ℓ* = f_ℓ(h_{ℓ−1}*)``
    and ``h_0* = h_k*`` (Blayney et al., arXiv:2604.11791). This reports those points, how distinct
    they are, how each layer's output converges along iteration from ``start`` (default: the
    system's input as the start, or ``h_star`` plus 10% noise), the top eigenvalues of every
    rotation of the composition (which must coincide, claim C10), and, for the reference
    transformer, how much the attention maps still change per iteration.

    Parameters
    ----------
    system : LoopedSystem
        Must know its layer maps (``system.layers``).
    h_star : torch.Tensor
        ``(N, *state_shape)`` fixed points of the block (e.g. from :func:`solve`).
    start : torch.Tensor, optional
        ``(N, *state_shape)`` starts for the convergence curves.
    n_steps : int
        Iterations recorded.
    k : int
        Eigenvalues compared across rotations.
    dense_limit : int
        Dense Jacobians up to this state dimension, Arnoldi above.
    seed : int

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, n_layers=3, seed=0)
    >>> system = dy.LoopedSystem.from_module(m, torch.randn(1, 4, 8))
    >>> h = dy.solve(system, system.initial_states("input")).state
    >>> lc = dy.layer_cycle(system, h)
    >>> lc.n_layers, bool(lc.rotation_spread.max() < 1e-8)
    (3, True)
    """
    call = call_form("layer_cycle", ["system", "h_star"])
    if not isinstance(system, LoopedSystem):
        raise InvalidArgumentError(f"{call}: system must be a dynamo.LoopedSystem")
    if system.layers is None:
        raise InvalidArgumentError(
            f"{call}: the system does not know its layer maps; build it from a module with "
            "layer_maps() (the reference LoopedTransformer has them) or pass layers= to "
            "LoopedSystem.from_function"
        )
    check_state_shape(call, "h_star", h_star, system.state_shape)
    check_finite_tensor(call, "h_star", h_star)
    check_positive_int(call, "n_steps", n_steps)
    check_positive_int(call, "k", k)
    n = h_star.shape[0]
    x = system._input_for(call, n, None)
    layers = system.layers
    kk = len(layers)
    h_star = h_star.to(system.dtype)
    if start is None:
        if system.x is not None and tuple(system.x.shape[1:]) == system.state_shape:
            start = x.to(system.dtype) if x is not None else h_star.clone()
        else:
            gen = torch.Generator(device=system.device).manual_seed(seed)
            noise = torch.randn(
                h_star.shape, generator=gen, dtype=system.dtype, device=system.device
            )
            start = h_star + 0.1 * h_star.norm() / math.sqrt(h_star.numel()) * noise
    else:
        check_state_shape(call, "start", start, system.state_shape)
        check_finite_tensor(call, "start", start)
    with torch.no_grad():
        pts = [h_star]
        for f in layers:
            pts.append(f(pts[-1], x))
        states = torch.stack(pts[1:])  # (k, N, ...)
        flat = states.reshape(kk, n, -1)
        scale = torch.clamp(system.flatten(h_star).norm(dim=1), min=torch.finfo(system.dtype).tiny)
        closure = (flat[-1] - system.flatten(h_star)).norm(dim=1) / scale
        diff = flat[:, None] - flat[None, :]  # (k, k, N, n)
        distinct = (diff.norm(dim=-1) / scale).permute(2, 0, 1)
        curves = []
        att_change = []
        model = system.module
        want_att = (
            model is not None and hasattr(model, "attention_maps") and hasattr(model, "layers")
        )
        prev_att: list[torch.Tensor] | None = None
        h = start
        for t in range(n_steps + 1):
            out = []
            cur = h
            for f in layers:
                cur = f(cur, x)
                out.append(cur)
            layer_flat = torch.stack([system.flatten(o) for o in out])  # (k, N, n)
            ref = torch.clamp(flat.norm(dim=-1), min=torch.finfo(system.dtype).tiny)
            curves.append(((layer_flat - flat).norm(dim=-1) / ref).T)  # (N, k)
            if want_att:
                assert model is not None
                maps = model.attention_maps(h, x)  # type: ignore[operator]
                if prev_att is not None:
                    att_change.append(
                        torch.stack(
                            [
                                (a - b).abs().reshape(n, -1).amax(dim=1)
                                for a, b in zip(maps, prev_att, strict=True)
                            ]
                        ).T
                    )
                prev_att = maps
            if t < n_steps:
                h = out[-1]
    convergence = torch.stack(curves)
    attention = torch.stack(att_change) if att_change else None

    # rotated compositions g_s = f_{s-1} ∘ … ∘ f_1 ∘ f_k ∘ … ∘ f_s at h_{s-1}*
    rot_eigs = []
    for s in range(kk):
        order = list(range(s, kk)) + list(range(0, s))

        def g(
            hh: torch.Tensor, xx: torch.Tensor | None = None, order: list[int] = order
        ) -> torch.Tensor:
            for i in order:
                hh = layers[i](hh, xx)
            return hh

        at = h_star if s == 0 else states[s - 1]
        rot = LoopedSystem.from_function(
            g if system.driven else (lambda hh, g=g: g(hh, None)),
            system.state_shape,
            x=x if system.driven else None,
            driven=system.driven,
            validate=False,
            dtype=system.dtype,
            device=system.device,
        )
        m = min(k, system.state_dim)
        if system.state_dim <= dense_limit:
            ev = torch.linalg.eigvals(jacobian(rot, at))
            ev = torch.gather(ev, 1, torch.argsort(ev.abs(), dim=1, descending=True))[:, :m]
        else:
            from ._linearize import _flat

            op = JacobianOperator(_flat(rot, rot.x if rot.driven else None), rot.flatten(at))
            kr = _arnoldi(
                op.matvec,
                n,
                system.state_dim,
                op.dtype,
                op.device,
                k=m,
                tol=math.sqrt(torch.finfo(system.dtype).eps),
                max_steps=300,
                seed=seed,
            )
            ev = kr.values
        rot_eigs.append(ev)
    rot_t = torch.stack(rot_eigs)
    mods = rot_t.abs()
    spread = (mods.amax(dim=0) - mods.amin(dim=0)).amax(dim=1)
    return LayerCycle(
        states=states,
        closure=closure,
        distinctness=distinct,
        convergence=convergence,
        rotation_eigenvalues=rot_t,
        rotation_spread=spread,
        attention_change=attention,
    )
