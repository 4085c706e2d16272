"""The batched solve loop shared by every method (its frozen result, :class:`Solution`, lives in
:mod:`dynamo._results` with the other shared result types).

Each method proposes the next iterate for the starts still running; the loop evaluates residuals,
keeps each start's best iterate, decides outcomes and drops finished starts from the batch (so a
start that converged costs nothing more).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .._results import Outcome

__all__ = ["Context", "Method", "Settings", "run"]

FlatMap = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Settings:
    """Stopping rules of one solve (all per start, on the flattened state)."""

    tol: float
    atol: float
    max_steps: int
    divergence: float  # a start diverges when its RMS entry ‖h‖/√n exceeds this


class Context:
    """What a method may call while proposing a step: the map and its JVP on active starts."""

    def __init__(self, fmap: FlatMap, x: torch.Tensor | None, n: int, device: torch.device) -> None:
        self._fmap = fmap
        self._x_all = x
        self.x = x
        self.f_evals = torch.zeros(n, dtype=torch.long, device=device)
        self.jvp_evals = torch.zeros(n, dtype=torch.long, device=device)
        self.rows = torch.arange(n, device=device)  # original indices of the active starts
        # evaluations on every active start so far: a start's count is this number when it
        # stops (recorded by the loop) plus its own entry in f_evals (evaluations on subsets)
        self.full_evals = 0
        self.step = 0  # the iteration under way, for error messages
        self._jac_mode: str | None = None  # set once the first Jacobian product has run

    def _x_for(self, idx: torch.Tensor | None) -> torch.Tensor | None:
        if self.x is None:
            return None
        return self.x if idx is None else self.x[idx]

    def f(self, z: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The flat map on active starts (all, or the subset ``idx`` of the active list)."""
        if idx is None:
            self.full_evals += 1
        else:
            self.f_evals[self.rows[idx]] += 1
        try:
            return self._fmap(z, self._x_for(idx))
        except Exception as err:
            rows = self.rows if idx is None else self.rows[idx]
            raise _map_failure(err, "evaluating the map", self.step, rows) from err

    def linearize(self, z: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v ↦ J(z) v`` for all active starts (the map acts per example), counted per start.

        Reverse mode twice (a ``vjp`` of the ``vjp``): after a set-up of about 4 forward passes
        each product costs about 1.5, against 8-14 for forward-mode ``jvp`` through eager code.
        """
        from .._linearize import JacobianOperator

        xx = self.x
        rows = self.rows
        try:
            # the first operator checks reverse-over-reverse on this map (and may fall back to
            # forward mode); later ones, the same map at other states, reuse the verdict
            op = JacobianOperator(
                lambda zz: self._fmap(zz, xx),
                z,
                mode=self._jac_mode or "reverse",
                check=self._jac_mode is None,
            )
        except Exception as err:
            raise _map_failure(err, "differentiating the map", self.step, rows) from err

        def matvec(v: torch.Tensor) -> torch.Tensor:
            self.jvp_evals[rows] += 1
            try:
                out = op.matvec(v)
            except Exception as err:
                raise _map_failure(err, "differentiating the map", self.step, rows) from err
            self._jac_mode = op.mode
            return out

        return matvec

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """The dense ``J(z)``, ``(N, n, n)``, for all active starts: its ``n`` rows at once by
        ``vmap`` of one ``vjp`` over the unit vectors (one reverse pass per row, against the
        double ``vjp`` that a ``J v`` product costs), a loop over them when the map does not
        ``vmap``. Counted as ``n`` products per start.
        """
        from torch.func import vjp, vmap

        xx = self.x
        rows = self.rows
        n = int(z.shape[1])
        try:
            with torch.no_grad():
                primal = vjp(lambda zz: self._fmap(zz, xx), z)
                value, vjp_fn = primal[0], primal[1]
                eye = torch.eye(int(value.shape[1]), dtype=z.dtype, device=z.device)
                basis = eye[:, None, :].expand(eye.shape[0], z.shape[0], eye.shape[1])
                try:
                    lines = vmap(lambda u: vjp_fn(u)[0])(basis)  # row k of every J: (n, N, n)
                except Exception:  # an operation without a batching rule: one row at a time
                    lines = torch.stack([vjp_fn(u)[0] for u in basis])
        except Exception as err:
            raise _map_failure(err, "differentiating the map", self.step, rows) from err
        self.jvp_evals[rows] += n
        return lines.transpose(0, 1)

    def keep(self, mask: torch.Tensor) -> None:
        """Drop the finished starts from the active list."""
        self.rows = self.rows[mask]
        if self.x is not None:
            self.x = self.x[mask]


class MapFailure(Exception):
    """The user's map (or its derivative) raised inside the solve loop: where, for :func:`solve`
    to report with its call form."""

    def __init__(
        self, what: str, step: int, rows: list[int], err: BaseException, total: int | None = None
    ) -> None:
        super().__init__(f"{what} raised {type(err).__name__} at iteration {step}")
        self.what, self.step, self.rows, self.err = what, step, rows, err
        self.total = len(rows) if total is None else total  # starts evaluated (rows: the first)


def _map_failure(err: Exception, what: str, step: int, rows: torch.Tensor) -> BaseException:
    """Wrap a failure of the user's map with where it happened; dynamo's own errors and
    allocation failures pass through unchanged."""
    from .._validate import out_of_memory
    from ..errors import DynamoError, ShapeError

    # a ShapeError here can only be the map's own output failing its check: say where
    passes = isinstance(err, DynamoError) and not isinstance(err, ShapeError)
    if passes or isinstance(err, MapFailure) or out_of_memory(err):
        return err
    return MapFailure(what, step, rows[:8].tolist(), err, int(rows.numel()))


class Method:
    """A fixed-point method. Per-start state: a dict of tensors, leading dim = active starts."""

    name = "method"
    defaults: ClassVar[dict[str, Any]] = {}
    #: a start that converged may stay in the batch (ignored) until enough have stopped to make
    #: dropping them worth its indexing: only for methods whose step for one start never
    #: depends on, or fails because of, another start's state
    lazy_drop: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = {**self.defaults, **options}

    def start(self, z: torch.Tensor, fz: torch.Tensor, ctx: Context) -> dict[str, torch.Tensor]:
        """Per-start state before the first step."""
        return {}

    def propose(
        self,
        st: dict[str, torch.Tensor],
        z: torch.Tensor,
        fz: torch.Tensor,
        ctx: Context,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Next iterate for every active start.

        Returns ``(z_next, f(z_next) or None, degenerate mask or None)``. Starts marked degenerate
        stop with :attr:`Outcome.DEGENERATE`.
        """
        raise NotImplementedError


def row_norm(z: torch.Tensor) -> torch.Tensor:
    """2-norm of each row, scaled so that finite rows never overflow (``‖z‖² > max float``) or
    lose their small entries to underflow.

    The plain norm is taken first; only rows where it may have overflowed (inf) or underflowed
    (below ``√tiny / eps``, where squares under ``tiny`` could matter) are recomputed scaled by
    their largest entry: a solver calls this every step, and almost every row is ordinary.
    """
    out = torch.linalg.vector_norm(z, dim=1)
    fi = torch.finfo(z.dtype)
    suspect = torch.isinf(out) | (out < math.sqrt(fi.tiny) / fi.eps)
    if bool(suspect.any()):
        zs = z[suspect]
        big = zs.abs().amax(dim=1)
        safe = torch.where((big > 0) & torch.isfinite(big), big, torch.ones_like(big))
        scaled = safe * (zs / safe[:, None]).norm(dim=1)
        out[suspect] = torch.where(torch.isfinite(big), scaled, big)
    return out


def _step_norms(
    g: torch.Tensor, z: torch.Tensor, limit: float
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """:func:`row_norm` of both, and whether every row is plain: both norms at least
    ``√tiny / eps`` (so neither underflowed) and at most the divergence ``limit`` (so finite and
    not diverged). One reduction decides the common case, in which the loop skips its tests for
    non-finite and diverged rows."""
    r = torch.linalg.vector_norm(g, dim=1)
    zn = torch.linalg.vector_norm(z, dim=1)
    if not r.shape[0]:
        return r, zn, True
    fi = torch.finfo(z.dtype)
    low = math.sqrt(fi.tiny) / fi.eps
    lo, hi = torch.stack(torch.aminmax(torch.cat([r, zn]))).tolist()  # NaN fails every test
    if lo >= low and hi <= limit:
        return r, zn, True
    if not (lo >= low and hi < math.inf):  # inf, NaN or possibly underflowed: rescale those
        r, zn = row_norm(g), row_norm(z)
    return r, zn, False


def run(
    method: Method,
    fmap: FlatMap,
    z0: torch.Tensor,
    x: torch.Tensor | None,
    settings: Settings,
) -> dict[str, Any]:
    """The shared loop. ``z0`` is ``(N, n)`` flat; returns the raw fields of a :class:`Solution`.

    The per-step bookkeeping works on the active starts only (their best iterate and residual
    are kept aligned with them, and written out once, when a start stops); the residual trace
    is kept as segments between the steps where starts stop. For a cheap map (a small RNN, a
    DEQ layer) this bookkeeping, not the map, was most of a step.
    """
    n_starts, dim = z0.shape
    dev = z0.device
    ctx = Context(fmap, x, n_starts, dev)
    best_z = z0.clone()  # written row by row when each start stops
    best_r = torch.full((n_starts,), math.inf, dtype=z0.dtype, device=dev)
    last_z = z0.clone()
    steps = torch.zeros(n_starts, dtype=torch.long, device=dev)
    full_evals = torch.zeros(n_starts, dtype=torch.long, device=dev)  # ctx.full_evals at stop
    outcome = [Outcome.MAX_STEPS_REACHED] * n_starts
    segments: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # (active rows, residuals)
    limit = settings.divergence * math.sqrt(dim)

    z = z0
    fz = ctx.f(z)
    st = method.start(z, fz, ctx)
    act_z = z0  # best iterate and residual of each active start (never changed in place)
    act_r = torch.full((n_starts,), math.inf, dtype=z0.dtype, device=dev)
    degenerate: torch.Tensor | None = None
    lazy = method.lazy_drop
    done: torch.Tensor | None = None  # stopped starts still carried in the batch (lazy_drop)
    n_done = 0
    for k in range(settings.max_steps + 1):
        ctx.step = k
        rows = ctx.rows
        r, zn, plain = _step_norms(fz - z, z, limit)
        if not segments or segments[-1][0] is not rows:
            segments.append((rows, []))
        segments[-1][1].append(r)

        # r < act_r only for a finite r; a finite z may still have an infinite norm
        better = r < act_r if plain else (r < act_r) & (zn < math.inf)
        if bool(better.all()):  # the common case: no copy (z and r are never changed in place)
            act_r, act_z = r, z
        else:
            act_r = torch.where(better, r, act_r)
            act_z = torch.where(better[:, None], z, act_z)
        # a start goes on while its norms are finite (NaN fails every comparison), it is within
        # the divergence limit and it has not converged; the stopped ones are labelled below
        go = r > zn.mul(settings.tol).add_(settings.atol)
        if not plain:
            go &= (r < math.inf) & (zn <= limit)
        if degenerate is not None:
            go &= ~degenerate
        if k == settings.max_steps:
            stop = torch.ones_like(go) if done is None else ~done
        else:
            stop = ~go if done is None else ~(go | done)
        idx = torch.nonzero(stop).flatten()
        n_stop = int(idx.numel())
        if n_stop:
            # the stopped starts at once (a search stops hundreds in one step), then their labels.
            # Beyond the divergence limit nothing counts as converged: far out, a relative
            # residual is met trivially and h + c rounds to h, so the computed map has spurious
            # fixed points
            at = rows[idx]
            steps[at] = k
            full_evals[at] = ctx.full_evals
            z_s, r_s = z[idx], r[idx]
            last_z[at] = z_s
            if plain and degenerate is None and k < settings.max_steps:
                # every norm is ordinary and nothing else stops a start: all converged
                all_conv = True
                best_z[at], best_r[at] = z_s, r_s
                for row in at.tolist():
                    outcome[row] = Outcome.CONVERGED
            else:
                zn_s = zn[idx]
                finite = torch.isfinite(r_s) & torch.isfinite(zn_s)
                div = finite & (zn_s > limit)
                c = finite & ~div & (r_s <= settings.atol + settings.tol * zn_s)
                all_conv = bool(c.all())
                best_z[at] = torch.where(c[:, None], z_s, act_z[idx])
                best_r[at] = torch.where(c, r_s, act_r[idx])
                deg = (
                    degenerate[idx] & finite & ~c if degenerate is not None else torch.zeros_like(c)
                )
                flags = zip(
                    at.tolist(),
                    c.tolist(),
                    (~finite).tolist(),
                    div.tolist(),
                    deg.tolist(),
                    strict=True,
                )
                for row, is_conv, is_bad, is_div, is_deg in flags:
                    if is_conv:
                        outcome[row] = Outcome.CONVERGED
                    elif is_bad:
                        outcome[row] = Outcome.NONFINITE
                    elif is_div:
                        outcome[row] = Outcome.DIVERGED
                    elif is_deg:
                        outcome[row] = Outcome.DEGENERATE
            n_done += n_stop
            if n_done == int(rows.numel()):
                break
            done = stop if done is None else done | stop
            # carried starts cost a share of the map; dropping them costs a dozen indexing
            # operations: drop once they are an eighth of the batch, at once when one stopped
            # for any reason but convergence (its map values may be NaN or far out)
            if not (lazy and all_conv and 8 * n_done < int(rows.numel())):
                keep = ~done
                z, fz = z[keep], fz[keep]
                act_z, act_r = act_z[keep], act_r[keep]
                st = {key: val[keep] for key, val in st.items()}
                ctx.keep(keep)
                done, n_done = None, 0
        z_next, f_next, degenerate = method.propose(st, z, fz, ctx)
        z = z_next
        fz = ctx.f(z) if f_next is None else f_next

    trace = torch.full(
        (sum(len(rs) for _, rs in segments), n_starts), math.nan, dtype=z0.dtype, device=dev
    )
    k0 = 0
    for seg_rows, rs in segments:
        trace[k0 : k0 + len(rs), seg_rows] = torch.stack(rs)
        k0 += len(rs)
    if lazy:  # a carried start's residuals after its stop are not part of its run
        after = torch.arange(trace.shape[0], device=dev)[:, None] > steps[None, :].to(dev)
        trace[after] = math.nan
    # the residual at the returned state: NaN where the best iterate was never evaluated
    unset = ~torch.isfinite(best_r)
    res = best_r.clone()
    if bool(unset.any()):
        res[unset] = math.nan
    rel = res / row_norm(best_z)
    return {
        "state": best_z,
        "last_state": last_z,
        "residual": res,
        "relative_residual": rel,
        "steps": steps.cpu(),
        "outcomes": tuple(outcome),
        "residual_trace": trace,
        "f_evals": (ctx.f_evals + full_evals).cpu(),
        "jvp_evals": ctx.jvp_evals.cpu(),
    }
