"""The fixed point of a k-layer block seen layer by layer: cyclic fixed points (Blayney et al.)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ._fixed_points import _classify
from ._linearize import _top_eigenvalues
from ._results import Trust, _plain
from ._solvers import default_tolerance
from ._system import LoopedSystem
from ._validate import (
    call_form,
    check_finite_tensor,
    check_positive_float,
    check_positive_int,
    check_state_shape,
)
from .errors import InvalidArgumentError, ShapeError
from .protocols import AttentionMaps, offers

__all__ = ["LayerCycle", "layer_cycle"]


def _indices(idx: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in idx[:limit])
    return shown + (f", … ({len(idx)} in all)" if len(idx) > limit else "")


@dataclass(frozen=True)
class LayerCycle:
    """Per-layer view of a block's fixed point ``h* = f_k ∘ … ∘ f_1(h*)``.

    Attributes
    ----------
    states : torch.Tensor
        ``(k, N, *state_shape)``: ``h_ℓ* = f_ℓ(h_{ℓ−1}*)``, ``h_0* = h*``; ``h_k*`` closes the
        cycle.
    closure : torch.Tensor
        ``(N,)``: ``‖h_k* − h_0*‖ / ‖h_0*‖``, how well the per-layer cycle closes (the block's
        relative residual at ``h*``; :func:`layer_cycle` refuses points that are not fixed).
    distinctness : torch.Tensor
        ``(N, k, k)``: relative distances ``‖h_ℓ* − h_m*‖ / ‖h_0*‖`` between the layers' points
        (the layers converge to *different* points, cyclically).
    convergence : torch.Tensor
        ``(n_steps + 1, N, k)``: ``‖h_ℓ(t) − h_ℓ*‖ / ‖h_ℓ*‖`` along iteration from the start
        (see :attr:`start`). It falls only where the cycle attracts.
    rotation_eigenvalues : torch.Tensor
        ``(k, N, m)``: the top-``m`` eigenvalues by modulus of each rotated composition
        ``f_{s−1} ∘ … ∘ f_1 ∘ f_k ∘ … ∘ f_s`` at ``h_{s−1}*``. They coincide (eig(AB) = eig(BA),
        claim C10): a cycle's stability does not depend on the starting layer. Rows whose
        Arnoldi run did not converge (:attr:`rotation_converged`) are unconverged Ritz values.
    rotation_spread : torch.Tensor
        ``(N,)``: the largest difference of those moduli across rotations; NaN for a point where
        some rotation's Arnoldi run did not converge (unconverged Ritz values prove nothing).
    attention_change : torch.Tensor or None
        ``(n_steps, N, k)`` for the reference transformer: the largest change of any attention
        probability from one iteration to the next, per layer.
    spectral_radius : torch.Tensor
        ``(N,)``: ``ρ`` of the block Jacobian ``∂f/∂h`` at ``h*``, shared by every rotation
        (C10); NaN where no rotation's spectrum converged.
    stability : tuple of str
        Per point, the class of :func:`find_fixed_points` with the same neutral band ``δ``:
        ``"stable"`` (every ``|λ| < 1 − δ``: the cycle attracts nearby starts), ``"marginal"``
        (some ``|λ|`` within ``δ`` of 1; undecided unless another ``|λ| > 1 + δ``, see
        :attr:`attracts`), ``"saddle"`` or ``"unstable"`` (some ``|λ| > 1 + δ``: iteration does
        not converge to it), or
        ``"unknown"`` (no converged spectrum). A float eigenvalue test at the given point
        (CHECKED, not proven).
    n_unstable : tuple of int
        Per point, eigenvalues with ``|λ| > 1 + δ`` (among the computed ones).
    rotation_converged : torch.Tensor
        ``(k, N)`` bool: whether each rotation's spectrum converged (always True when dense).
    spectrum : str
        ``"dense"`` (full spectra of dense Jacobians) or ``"arnoldi"`` (top-``m`` Ritz values).
    neutral_band : float
    tol : float
        The relative tolerance ``h*`` was checked against: ``‖f(h*) − h*‖ ≤ tol·(1 + ‖h*‖)``.
    start : str
        Where the convergence curves start: ``"given"``, ``"input"`` (the driven system's
        input) or ``"h_star + 10% noise (seed s)"``.

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
    >>> lc.stability, lc.attracts
    (('stable',), (True,))
    """

    states: torch.Tensor
    closure: torch.Tensor
    distinctness: torch.Tensor
    convergence: torch.Tensor
    rotation_eigenvalues: torch.Tensor
    rotation_spread: torch.Tensor
    attention_change: torch.Tensor | None
    spectral_radius: torch.Tensor
    stability: tuple[str, ...]
    n_unstable: tuple[int, ...]
    rotation_converged: torch.Tensor
    spectrum: str
    neutral_band: float
    tol: float
    start: str

    @property
    def n_layers(self) -> int:
        """k."""
        return int(self.states.shape[0])

    @property
    def trust(self) -> Trust:
        """Of the stability classes: CHECKED (a float eigenvalue test of the dense Jacobian at
        the given point), ESTIMATED when the spectrum is Arnoldi's top Ritz values."""
        return Trust.CHECKED if self.spectrum == "dense" else Trust.ESTIMATED

    @property
    def attracts(self) -> tuple[bool | None, ...]:
        """Per point: does iteration near ``h*`` converge to its cycle?

        True when ``ρ < 1 − δ`` (Ostrowski, claim C9), False when ``ρ > 1 + δ`` (a repelling
        direction: generic starts leave), None when the linearisation does not decide
        (``|ρ − 1| ≤ δ``) or no spectrum converged.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> layers = [lambda h, x=None: 2.0 * h + 1.0, lambda h, x=None: 0.75 * h]
        >>> system = dy.LoopedSystem.from_function(
        ...     lambda h: layers[1](layers[0](h)), state_shape=(1,), layers=layers
        ... )
        >>> lc = dy.layer_cycle(system, torch.tensor([[-1.5]], dtype=torch.float64), n_steps=3)
        >>> float(lc.spectral_radius[0]), lc.stability, lc.attracts  # block map h ↦ 1.5 h + 0.75
        (1.5, ('unstable',), (False,))
        """
        out: list[bool | None] = []
        for r in self.spectral_radius.tolist():
            if not math.isfinite(r) or abs(r - 1.0) <= self.neutral_band:
                out.append(None)
            else:
                out.append(r < 1.0 - self.neutral_band)
        return tuple(out)

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
        (2, None, ['attention_change_last', 'attracts', 'closure'])
        >>> d["stability"], d["attracts"], d["trust"]
        (['stable'], [True], 'checked')
        """
        return {
            "n_layers": self.n_layers,
            "closure": self.closure.tolist(),
            "distinctness": self.distinctness.tolist(),
            "spectral_radius": [_plain(float(r)) for r in self.spectral_radius.tolist()],
            "stability": list(self.stability),
            "attracts": list(self.attracts),
            "n_unstable": list(self.n_unstable),
            "trust": self.trust.value,
            "spectrum": self.spectrum,
            "rotation_converged": self.rotation_converged.tolist(),
            "rotation_spread": [_plain(float(s)) for s in self.rotation_spread.tolist()],
            "rotation_top_moduli": self.rotation_eigenvalues.abs().tolist(),
            "final_convergence": self.convergence[-1].tolist(),
            "attention_change_last": None
            if self.attention_change is None
            else self.attention_change[-1].tolist(),
            "neutral_band": self.neutral_band,
            "tol": self.tol,
            "start": self.start,
        }

    def __str__(self) -> str:
        k = self.n_layers
        off = self.distinctness[:, ~torch.eye(k, dtype=torch.bool)] if k > 1 else None
        dist = "n/a" if off is None else f"{float(off.min()):.3g}"
        spread = self.rotation_spread
        ok = spread[~torch.isnan(spread)]
        agree = (
            f"rotation spectra ({self.spectrum}) agree to {float(ok.max()):.1e}"
            if ok.numel()
            else f"rotation spectra ({self.spectrum}) not compared"
        )
        lines = [
            f"LayerCycle({k} layers, {self.states.shape[1]} states): closure "
            f"{float(self.closure.max()):.1e}, smallest inter-layer distance {dist}, {agree}"
        ]
        unconverged = int((~self.rotation_converged).any(dim=0).sum())
        if unconverged:
            lines.append(
                f"  Arnoldi did not converge for some rotation at {unconverged} point(s): their "
                "spread is not reported"
            )
        rho = self.spectral_radius.tolist()
        att = self.attracts
        groups = [
            (True, "attracts: the layers converge to it (ρ < 1)"),
            (None, "undecided by the linearisation (ρ within the neutral band of 1)"),
            (False, "does NOT attract: iteration does not converge to it (ρ > 1)"),
        ]
        for flag, text in groups:
            idx = [i for i, a in enumerate(att) if a is flag and math.isfinite(rho[i])]
            if idx:
                top = max(rho[i] for i in idx)
                kinds = ", ".join(sorted({self.stability[i] for i in idx}))
                lines.append(
                    f"  {'point' if len(idx) == 1 else 'points'} {_indices(idx)} ({kinds}): "
                    f"cycle {text}; "
                    f"ρ {'=' if len(idx) == 1 else 'up to'} {top:.3g} (float eigenvalue check)"
                )
        unknown = [i for i, r in enumerate(rho) if not math.isfinite(r)]
        if unknown:
            lines.append(
                f"  {'point' if len(unknown) == 1 else 'points'} {_indices(unknown)}: stability "
                "unknown (no rotation's Arnoldi run "
                "converged; raise dense_limit for the dense spectrum)"
            )
        return "\n".join(lines)


def layer_cycle(
    system: LoopedSystem,
    h_star: torch.Tensor,
    *,
    starts: torch.Tensor | None = None,
    n_steps: int = 50,
    k: int = 4,
    dense_limit: int = 512,
    tol: float | None = None,
    neutral_band: float = 1e-4,
    seed: int = 0,
    start: torch.Tensor | None = None,
) -> LayerCycle:
    """The cyclic fixed point of a k-layer block at the block's fixed points ``h_star``.

    Each layer ``ℓ`` of the block converges to its own point ``h_ℓ*`` with ``h_ℓ* = f_ℓ(h_{ℓ−1}*)``
    and ``h_0* = h_k*`` (Blayney et al., arXiv:2604.11791). This reports those points, how distinct
    they are, how each layer's output converges along iteration from ``starts``, the top
    eigenvalues of every rotation of the composition (which must coincide, claim C10), whether
    the cycle attracts (the spectral radius ``ρ`` of the block Jacobian at ``h*``, shared by
    every rotation, with the stability class of :func:`find_fixed_points`), and, for the
    reference transformer, how much the attention maps still change per iteration.

    A per-layer cycle exists at every fixed point, attracting or not: an unstable block fixed
    point (``ρ > 1``) gives a cycle that iteration never settles on, and the result says so.

    Parameters
    ----------
    system : LoopedSystem
        Must know its layer maps (``system.layers``), whose composition must be the block. In an
        autonomous system the layers get no input (``x=None``) and the system's ``x`` is not
        used at all: it does not enter the map, and its rows are not paired with ``h_star``.
    h_star : torch.Tensor
        ``(N, *state_shape)`` fixed points of the block (e.g. from :func:`solve`, converged
        rows only). With a driven system, one per input (``N`` equal to the input batch), or
        any ``N`` for a single input. Each must satisfy ``‖f(h*) − h*‖ ≤ tol·(1 + ‖h*‖)``.
    starts : torch.Tensor, optional
        ``(N, *state_shape)`` starts for the convergence curves (a tensor of states, as
        ``starts`` is everywhere). Default: the driven system's input when it has the state's
        shape, else ``h_star`` plus 10% Gaussian noise.
    n_steps : int
        Iterations recorded.
    k : int
        Eigenvalues compared across rotations.
    dense_limit : int
        Dense Jacobians (full spectra) up to this state dimension, Arnoldi (top ``k``) above.
    tol : float, optional
        Relative residual tolerance for ``h_star`` (default :func:`default_tolerance` of the
        dtype, as in :func:`solve`).
    neutral_band : float
        ``δ``: eigenvalues with ``||λ| − 1| ≤ δ`` are marginal (as in :func:`find_fixed_points`).
    seed : int
    start : torch.Tensor, optional
        The former name of ``starts``; deprecated (elsewhere ``start`` names a kind of start).

    Raises
    ------
    InvalidArgumentError
        ``h_star`` is not a fixed point of the block to ``tol``, the layer maps do not compose to
        the block, or the batch of ``h_star``, ``start`` and a driven system's input disagree.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, n_layers=3, seed=0)
    >>> x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(0))
    >>> system = dy.LoopedSystem.from_module(m, x)
    >>> h = dy.solve(system, system.initial_states("input")).state
    >>> lc = dy.layer_cycle(system, h)
    >>> lc.n_layers, bool(lc.rotation_spread.max() < 1e-8)
    (3, True)

    The solver found a fixed point, but not one that iteration reaches: its per-layer cycle
    repels.

    >>> lc.stability, lc.attracts, round(float(lc.spectral_radius[0]), 2)
    (('saddle',), (False,), 1.45)
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
    check_positive_int(call, "dense_limit", dense_limit, minimum=0)
    rtol = default_tolerance(system.dtype) if tol is None else tol
    check_positive_float(call, "tol", rtol)
    check_positive_float(call, "neutral_band", neutral_band, upper=1.0, upper_inclusive=False)
    n = h_star.shape[0]
    if system.driven:
        assert system.x is not None
        b = int(system.x.shape[0])
        if b not in (1, n):
            raise ShapeError(
                f"{call}: h_star has batch {n} but the driven system's input x has batch {b}; "
                f"pass one fixed point per input (h_star[i] for x[i]), or a single input with "
                f"system.with_input(x[i : i + 1]) for the fixed points of input i"
            )
        x = system._input_for(call, n, None)
    else:
        x = None  # an autonomous block has no input: x only ever seeded initial states
    name = "starts"
    if start is not None:
        if starts is not None:
            raise InvalidArgumentError(f"{call}: pass starts= only (start= is its former name)")
        warnings.warn(
            f"{call}: start= is now starts= (a tensor of states, the keyword find_fixed_points "
            "and basin_graph use; start= names a kind of start there) and will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        starts, name = start, "start"
    start = starts
    if start is not None:
        check_state_shape(call, name, start, system.state_shape)
        check_finite_tensor(call, name, start)
        if start.shape[0] != n:
            raise ShapeError(
                f"{call}: {name} has batch {start.shape[0]} but h_star has batch {n}; pass one "
                "start per fixed point"
            )
    layers = system.layers
    kk = len(layers)
    h_star = h_star.to(system.dtype)
    tiny = torch.finfo(system.dtype).tiny

    with torch.no_grad():
        # is h_star a fixed point of the block, and do the layers compose to the block?
        pts = [h_star]
        for f in layers:
            pts.append(f(pts[-1], x))
        block = system._step_unchecked(h_star, x)
        h_flat = system.flatten(h_star)
        h_norm = h_flat.norm(dim=1)
        mismatch = system.flatten(pts[-1] - block).norm(dim=1)
        bad = torch.nonzero(mismatch > rtol * (1 + system.flatten(block).norm(dim=1))).flatten()
        if bad.numel():
            i = int(bad[0])
            raise InvalidArgumentError(
                f"{call}: the layer maps do not compose to the block: at h_star[{i}], "
                f"‖f_k ∘ … ∘ f_1(h) − f(h)‖ = {float(mismatch[i]):.2e}; pass layers whose "
                "composition is the system's map"
            )
        resid = system.flatten(block - h_star).norm(dim=1)
        bad = torch.nonzero(resid > rtol * (1 + h_norm)).flatten()
        if bad.numel():
            idx = [int(i) for i in bad]
            i = idx[0]
            raise InvalidArgumentError(
                f"{call}: h_star[{_indices(idx, 5)}] is not a fixed point of the block: "
                f"‖f(h*) − h*‖ = {float(resid[i]):.2e} at h_star[{i}], above tol·(1 + ‖h*‖) = "
                f"{rtol * (1 + float(h_norm[i])):.2e} (tol = {rtol:.2e}); the per-layer cycle "
                "of a point that is not fixed means nothing. Pass converged points only "
                "(sol.state[sol.converged] from solve(..., throw=False)), or the tol you "
                "solved with"
            )

        if start is None:
            if system.driven and x is not None and tuple(x.shape[1:]) == system.state_shape:
                start, start_kind = x.to(system.dtype), "input"
            else:
                gen = torch.Generator(device=system.device).manual_seed(seed)
                noise = torch.randn(
                    h_star.shape, generator=gen, dtype=system.dtype, device=system.device
                )
                start = h_star + 0.1 * h_star.norm() / math.sqrt(h_star.numel()) * noise
                start_kind = f"h_star + 10% noise (seed {seed})"
        else:
            start, start_kind = start.to(system.dtype), "given"

        states = torch.stack(pts[1:])  # (k, N, ...)
        flat = states.reshape(kk, n, -1)
        scale = torch.clamp(h_norm, min=tiny)
        closure = (flat[-1] - h_flat).norm(dim=1) / scale
        diff = flat[:, None] - flat[None, :]  # (k, k, N, n)
        distinct = (diff.norm(dim=-1) / scale).permute(2, 0, 1)
        curves = []
        att_change = []
        model = system.module
        want_att = offers(model, AttentionMaps)
        prev_att: list[torch.Tensor] | None = None
        h = start
        for t in range(n_steps + 1):
            out = []
            cur = h
            for f in layers:
                cur = f(cur, x)
                out.append(cur)
            layer_flat = torch.stack([system.flatten(o) for o in out])  # (k, N, n)
            ref = torch.clamp(flat.norm(dim=-1), min=tiny)
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
    dense = system.state_dim <= dense_limit
    m = min(k, system.state_dim)
    rot_eigs = []
    rot_conv = []
    full: torch.Tensor | None = None  # the whole spectrum of the block (rotation 0), dense only
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
        ev, conv, exact_s = _top_eigenvalues(
            rot, at, k=m, dense_limit=dense_limit, seed=seed, dense_fallback=False
        )
        if exact_s and s == 0:
            full = ev
        ev = ev[:, :m]
        rot_eigs.append(ev)
        rot_conv.append(conv)
    rot_t = torch.stack(rot_eigs)
    converged = torch.stack(rot_conv)  # (k, N)
    mods = rot_t.abs()
    spread = (mods.amax(dim=0) - mods.amin(dim=0)).amax(dim=1)
    spread = torch.where(converged.all(dim=0).to(spread.device), spread, math.nan)

    # stability of each block fixed point from a converged spectrum (any rotation: C10)
    rho = torch.full((n,), math.nan, dtype=mods.dtype)
    stability: list[str] = []
    n_unstable: list[int] = []
    for i in range(n):
        if full is not None:
            spec, exact = full[i].abs().cpu(), True
        else:
            ok = torch.nonzero(converged[:, i]).flatten()
            if not ok.numel():
                stability.append("unknown")
                n_unstable.append(0)
                continue
            spec, exact = mods[int(ok[0]), i].cpu(), False
        rho[i] = spec.max()
        label, n_out = _classify(spec, neutral_band, exact)
        stability.append(label)
        n_unstable.append(n_out)
    return LayerCycle(
        states=states,
        closure=closure,
        distinctness=distinct,
        convergence=convergence,
        rotation_eigenvalues=rot_t,
        rotation_spread=spread,
        attention_change=attention,
        spectral_radius=rho,
        stability=tuple(stability),
        n_unstable=tuple(n_unstable),
        rotation_converged=converged,
        spectrum="dense" if dense else "arnoldi",
        neutral_band=float(neutral_band),
        tol=float(rtol),
        start=start_kind,
    )
