"""Arrays of arb balls (python-flint): the rigorous arithmetic every proof of a fixed point
rests on.

An interval tensor is a numpy object array whose entries are ``flint.arb`` balls; every operation
on them is arb's, which encloses the exact real result, rounding included (Johansson, "Arb:
efficient arbitrary-precision midpoint-radius interval arithmetic", IEEE Trans. Computers 66(8),
2017). Exact float64 constants (weights, inputs, box corners) stay float64 arrays until an
operation needs them as balls; their conversion is exact. Matrix products go through
``flint.arb_mat`` (C speed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

try:  # python-flint is a dependency; imported here so that a missing wheel names itself
    import flint
    from flint import arb, arb_mat
except ImportError as err:  # pragma: no cover - the package depends on python-flint
    raise ImportError(
        "dynamo's proofs of fixed points need python-flint (pip install python-flint)"
    ) from err

__all__ = [
    "ZERO",
    "arb",
    "arb_mat",
    "as_balls",
    "box_ball",
    "hi",
    "lo",
    "map_balls",
    "matmul",
    "minus",
    "precision",
    "sqr",
]

ZERO = arb(0)
ONE = arb(1)
OBJ = np.dtype(object)


class precision:
    """Run arb at ``bits`` of working precision (restores the caller's afterwards)."""

    def __init__(self, bits: int = 53) -> None:
        self.bits = bits

    def __enter__(self) -> None:
        self.saved = flint.ctx.prec
        flint.ctx.prec = self.bits

    def __exit__(self, *exc: Any) -> None:
        flint.ctx.prec = self.saved


def as_balls(a: Any) -> np.ndarray:
    """An object array of arb balls (float entries converted exactly)."""
    arr = np.asarray(a)
    if arr.dtype == OBJ:
        if arr.size and not all(isinstance(v, arb) for v in arr.flat):
            return np.frompyfunc(_ball, 1, 1)(arr).astype(OBJ)
        return arr
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"cannot make balls of {arr.dtype}")
    out = np.empty(arr.shape, dtype=OBJ)
    flat = out.reshape(-1)
    for i, v in enumerate(arr.astype(np.float64).reshape(-1).tolist()):
        flat[i] = arb(v)
    return out


def _ball(v: Any) -> arb:
    return v if isinstance(v, arb) else arb(float(v))


def map_balls(fn: Callable[[arb], arb], a: np.ndarray) -> np.ndarray:
    """``fn`` applied to each ball."""
    a = as_balls(a)
    if a.size == 0:
        return a.copy()
    return np.asarray(np.frompyfunc(fn, 1, 1)(a), dtype=OBJ).reshape(a.shape)


def box_ball(lo: float, hi: float) -> arb:
    """A ball that contains ``[lo, hi]`` (both finite floats, ``lo <= hi``)."""
    if lo == hi:
        return arb(lo)
    return arb(lo).union(arb(hi))


def lo(b: arb) -> float:
    """A float ``<=`` every point of ``b``."""
    c = float(b.mid()) - float(b.rad())
    while not arb(c) <= b:  # arb's comparison holds only when it holds for every point
        c = math.nextafter(c, -math.inf) if math.isfinite(c) else c
        if not math.isfinite(c):
            return -math.inf
    return c


def hi(b: arb) -> float:
    """A float ``>=`` every point of ``b``."""
    return -lo(-b)


def sqr(b: arb) -> arb:
    """``{x² : x ∈ b}`` from the endpoints (a ball product ``b·b`` of a wide ball reaches below
    0, which a later square root or division cannot survive)."""
    lo_b, hi_b = b.lower(), b.upper()
    if lo_b >= 0:
        return (lo_b * lo_b).union(hi_b * hi_b)
    if hi_b <= 0:
        return (hi_b * hi_b).union(lo_b * lo_b)
    m = b.abs_upper()
    return (m * m).union(ZERO)


def ipow(b: arb, k: int) -> arb:
    """``{x^k : x ∈ b}`` for an integer ``k >= 0``: even powers through :func:`sqr`, odd ones
    from the endpoints (``x^k`` is increasing)."""
    if k == 0:
        return ONE
    if k == 1:
        return b
    if k % 2 == 0:
        return ipow(sqr(b), k // 2)
    return _thin_pow(b.lower(), k).union(_thin_pow(b.upper(), k))


def _thin_pow(b: arb, k: int) -> arb:
    out = b
    for _ in range(k - 1):
        out = out * b
    return out


def _mat(a: np.ndarray) -> arb_mat:
    r, c = a.shape
    if a.dtype == OBJ:
        return arb_mat(r, c, list(a.reshape(-1)))
    return arb_mat(r, c, a.astype(np.float64).reshape(-1).tolist())


def _from_mat(m: arb_mat, r: int, c: int) -> np.ndarray:
    out = np.empty((r, c), dtype=OBJ)
    rows = m.tolist()
    for i in range(r):
        out[i, :] = rows[i]
    return out


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` (numpy's batch broadcasting; 1-D operands as in numpy) with arb_mat products."""
    a_1d, b_1d = a.ndim == 1, b.ndim == 1
    if a_1d:
        a = a[None, :]
    if b_1d:
        b = b[:, None]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    r, k = a.shape[-2:]
    c = b.shape[-1]
    out = np.empty((*batch, r, c), dtype=OBJ)
    for idx in np.ndindex(*batch) if batch else [()]:
        if r == 0 or c == 0:
            continue
        if k == 0:
            out[idx] = np.full((r, c), ZERO, dtype=OBJ)
            continue
        out[idx] = _from_mat(_mat(a[idx]) * _mat(b[idx]), r, c)
    if a_1d:
        out = out[..., 0, :]
    if b_1d:
        out = out[..., 0]
    return out


def minus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a − b`` entry by entry (1-D; ``b`` balls or exact floats)."""
    return np.array([x - _ball(y) for x, y in zip(a.tolist(), b.tolist(), strict=True)], dtype=OBJ)
