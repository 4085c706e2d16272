"""Enclosures of a map and of its Jacobian over a box, by interpreting its traced graph in arb.

The step function is traced by ``make_fx`` (ATen operations, shapes concrete, in-place operations
functionalised). Each node then gets a *jet*: a ball array that encloses the node's value for every
state in the box, and, for nodes that depend on the state, a ball array ``der`` (value shape + the
state dimension) that encloses every **pairwise slope** of the node: for any two states ``h, h'`` in
the box, ``v(h) − v(h') = S (h − h')`` for some matrix ``S`` in ``der``. For smooth operations the
enclosure of the derivative over the box is such an enclosure (mean value theorem); the chain,
product and quotient rules keep the property, since a slope of a composition is a product of slopes
taken at points of the box (theory claim R12). ``relu``'s slopes lie in ``[0, 1]``.

What the map is: the real-arithmetic map of the program, with its parameters, inputs and literal
constants as the exact real numbers their float64 values are. Values computed from literals alone
(position tables, masks) are taken as the program computes them: they are part of the program.
An operation on the state (or on parameters) without a rule here is an error that names it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import fx

from ..errors import InvalidArgumentError
from ._ball import OBJ, ONE, ZERO, arb, as_balls, ipow, map_balls, matmul, sqr

__all__ = ["Jet", "Traced", "WideEnclosure", "trace_map"]

aten = torch.ops.aten


@dataclass
class Jet:
    """A node's enclosure. ``val``: object array of balls, or a float64 array of exact values;
    ``der``: slopes with respect to the flat state (``val.shape + (n,)``), None when the node does
    not depend on the state; ``literal``: computed from literal constants only."""

    val: np.ndarray
    der: np.ndarray | None = None
    exact: bool = False
    literal: bool = False
    #: for a flat state jet: the value at the box's reference point ``c`` (balls) and the
    #: offsets ``X − c`` of the original state box, for the centred (mean value) form
    ctr: np.ndarray | None = None
    dx: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.val.shape)

    def balls(self) -> np.ndarray:
        return as_balls(self.val)


class _Refused(Exception):
    def __init__(self, node: fx.Node, op: str, why: str) -> None:
        super().__init__(why)
        self.node = node
        self.op = op
        self.why = why


class WideEnclosure(ArithmeticError):
    """An operation's enclosure failed on this box (an RMS norm's mean square, a divisor or a
    log argument whose ball reaches 0): the box is too wide here, not the map unprovable.
    Callers treat the box as undecided (a Krawczyk test that fails)."""


def _norm_dim(d: int, ndim: int) -> int:
    return d % ndim if ndim else 0


def _bcast_der(j: Jet, shape: tuple[int, ...], n: int) -> np.ndarray | None:
    if j.der is None:
        return None
    return np.broadcast_to(j.der, (*shape, n))


def _add_der(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None if b is None else np.array(b, dtype=OBJ)
    if b is None:
        return np.array(a, dtype=OBJ)
    return a + b


def _scale_der(der: np.ndarray | None, factor: np.ndarray) -> np.ndarray | None:
    """Row-scale: ``factor[..., None] * der``."""
    if der is None:
        return None
    return as_balls(factor)[..., None] * der


def _tanh_d(t: arb) -> arb:
    return ONE - sqr(t)


def _erf_d(x: arb) -> arb:
    return (arb(2) / arb.pi().sqrt()) * (-sqr(x)).exp()


def _phi(x: arb) -> arb:  # standard normal cdf
    return (ONE + (x / arb(2).sqrt()).erf()) / 2


def _phi_d(x: arb) -> arb:  # standard normal density
    return (-sqr(x) / 2).exp() / (2 * arb.pi()).sqrt()


def _relu(x: arb) -> arb:
    if x >= 0:
        return x
    if x <= 0:
        return ZERO
    return x.upper().union(ZERO)


def _relu_slope(x: arb) -> arb:
    if x > 0:
        return ONE
    if x < 0:
        return ZERO
    return arb(0.5, 0.5)  # [0, 1]: every slope of relu


def _sigmoid(x: arb) -> arb:
    return ONE / (ONE + (-x).exp())


def _rsqrt(x: arb) -> arb:
    if not x > 0:
        raise ValueError("rsqrt of a ball that reaches 0 or below")
    return x.rsqrt()


def _sqrt(x: arb) -> arb:
    if not x > 0:
        raise ValueError("sqrt of a ball that reaches 0 or below (no slope bound)")
    return x.sqrt()


def _log(x: arb) -> arb:
    if not x > 0:
        raise ValueError("log of a ball that reaches 0 or below")
    return x.log()


# elementwise unary rules: value function, derivative from (x, value)
_UNARY: dict[Any, tuple[Callable[[arb], arb], Callable[[arb, arb], arb]]] = {
    aten.tanh.default: (lambda x: x.tanh(), lambda x, y: _tanh_d(y)),
    aten.exp.default: (lambda x: x.exp(), lambda x, y: y),
    aten.sigmoid.default: (_sigmoid, lambda x, y: y * (ONE - y)),
    aten.erf.default: (lambda x: x.erf(), lambda x, y: _erf_d(x)),
    aten.rsqrt.default: (_rsqrt, lambda x, y: -(y * y * y) / 2),
    aten.sqrt.default: (_sqrt, lambda x, y: ONE / (2 * y)),
    aten.log.default: (_log, lambda x, y: ONE / x),
    aten.relu.default: (_relu, lambda x, y: _relu_slope(x)),
    aten.neg.default: (lambda x: -x, lambda x, y: -ONE),
    aten.reciprocal.default: (lambda x: ONE / x, lambda x, y: -(y * y)),
    aten.silu.default: (
        lambda x: x * _sigmoid(x),
        lambda x, y: _sigmoid(x) * (ONE + x * (ONE - _sigmoid(x))),
    ),
    aten.sin.default: (lambda x: x.sin(), lambda x, y: x.cos()),
    aten.cos.default: (lambda x: x.cos(), lambda x, y: -x.sin()),
}

_ADD_SUB = (
    aten.add.Tensor,
    aten.add.Scalar,
    aten.sub.Tensor,
    aten.sub.Scalar,
    aten.rsub.Scalar,
    aten.rsub.Tensor,
)
_VIEW = {
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.flatten.using_ints,
}
_SAME = {
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten.lift_fresh_copy.default,
    aten.contiguous.default,
}
# literal creators: their values are the program's constants
_CREATE = {
    aten.full.default,
    aten.ones.default,
    aten.zeros.default,
    aten.arange.default,
    aten.arange.start,
    aten.arange.start_step,
    aten.scalar_tensor.default,
    aten.empty.memory_format,
    aten.ones_like.default,
    aten.zeros_like.default,
    aten.full_like.default,
    aten.eye.default,
    aten.new_ones.default,
    aten.new_zeros.default,
    aten.new_full.default,
}


def op_name(target: Any) -> str:
    """``aten.tanh.default`` style name of an ATen overload (or the callable's name)."""
    s = str(target)
    return s if s.startswith("aten.") else getattr(target, "__name__", s)


class _Interp(fx.Interpreter):
    def __init__(
        self,
        gm: fx.GraphModule,
        n: int,
        inputs: Sequence[Jet],
        centre: dict[fx.Node, Any] | None = None,
        dx: np.ndarray | None = None,
    ) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.n = n
        self.jets: dict[fx.Node, Any] = {}
        self.inputs = list(inputs)
        self.k = 0
        self.centre = centre  # each node's jet at the reference point (a thin pass)
        # x.add_(c) at node m: later reads of x read m (each node keeps its own jet, so the
        # centred form compares like with like)
        self.mutated: dict[fx.Node, fx.Node] = {}
        self.dx = dx  # X − c of the state box (balls, n)
        # the nodes whose value enclosure a later rule reads: only those are worth centring
        self.read = _values_read(gm) if centre is not None else set()

    def run_node(self, node: fx.Node) -> Any:
        out = super().run_node(node)
        if node.op == "placeholder":
            self.jets[node] = self.inputs[self.k]
            self.k += 1
        elif node.op == "get_attr":
            self.jets[node] = self._exact(out, literal=False)
        elif node.op == "call_function":
            self.jets[node] = self._centred(node, self._call(node, out))
        elif node.op == "output":
            pass
        else:  # pragma: no cover - make_fx graphs have only these
            raise _Refused(node, node.op, "an unexpected node kind")
        return out

    def _centred(self, node: fx.Node, res: Any) -> Any:
        """The value enclosure intersected with the centred form ``v(c) + S (X − c)``: every
        ``v(h) − v(c)`` is a slope times ``h − c`` (``c`` and ``h`` both in the box), so the
        intersection still encloses every value, and it does not accumulate the wrapping of
        the natural interval extension through a deep graph."""
        if self.centre is None or self.dx is None or not isinstance(res, Jet) or res.der is None:
            return res
        if node not in self.read:  # only linear rules use it: their slopes ignore values, and
            return res  # the next node that is read gets its own centred form
        c = self.centre.get(node)
        if not isinstance(c, Jet) or c.val.shape != res.val.shape:
            return res
        size = int(np.prod(res.val.shape)) if res.val.shape else 1
        spread = matmul(res.der.reshape(size, self.n), self.dx).reshape(res.val.shape)
        cent = c.balls() + spread
        nat = res.balls()
        out = np.empty(nat.shape, dtype=OBJ)
        for idx in np.ndindex(*nat.shape) if nat.shape else [()]:
            a, b = cast(arb, nat[idx]), cast(arb, cent[idx])
            out[idx] = a.intersection(b) if a.overlaps(b) else a
        return Jet(out, res.der)

    # ------------------------------------------------------------------ values
    @staticmethod
    def _exact(out: Any, literal: bool) -> Any:
        if isinstance(out, torch.Tensor):
            if out.is_floating_point():
                if out.dtype != torch.float64:
                    return Jet(out.detach().cpu().double().numpy(), exact=True, literal=literal)
                return Jet(out.detach().cpu().numpy().copy(), exact=True, literal=literal)
            return out  # integer / bool tensors: concrete
        return out

    def _j(self, a: Any) -> Any:
        """The jet of an argument (fx nodes; a node an in-place operation mutated reads as that
        operation's result), or the argument itself (python values)."""
        if isinstance(a, fx.Node):
            while a in self.mutated:
                a = self.mutated[a]
            return self.jets[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._j(v) for v in a)
        return a

    def _operand(self, a: Any) -> Jet:
        """A tensor-like operand as a jet (python scalars as exact literals)."""
        if isinstance(a, Jet):
            return a
        if isinstance(a, (int, float, bool)):
            return Jet(np.asarray(float(a)), exact=True, literal=True)
        if isinstance(a, torch.Tensor):  # a concrete integer/bool tensor
            return Jet(a.detach().cpu().double().numpy(), exact=True, literal=True)
        raise TypeError(type(a).__name__)

    # ------------------------------------------------------------------ dispatch
    def _call(self, node: fx.Node, out: Any) -> Any:
        t = node.target
        args = [self._j(a) for a in node.args]
        kwargs = {k: self._j(v) for k, v in node.kwargs.items()}
        jets = [a for a in _flat(args) + _flat(list(kwargs.values())) if isinstance(a, Jet)]
        if t is operator.getitem:
            seq, i = args
            return seq[i]
        dep = any(j.der is not None for j in jets)
        if not isinstance(out, (torch.Tensor, list, tuple)) or (
            isinstance(out, torch.Tensor) and not out.is_floating_point()
        ):
            if dep:  # a comparison, rounding or integer view of the state: a step, no slopes
                raise _Refused(
                    node,
                    op_name(t),
                    "an integer or boolean value computed from the state (a comparison, a mask, "
                    "an argmax, a cast to an integer type) is piecewise constant: the map is not "
                    "continuous there and has no slope enclosure",
                )
            return out  # sizes, integer and bool tensors (masks) of constants: concrete
        literal = all(j.literal for j in jets)
        if t in _CREATE or (jets and literal and not dep):
            return (
                self._exact(out, literal=True)
                if not isinstance(out, (list, tuple))
                else [self._exact(o, literal=True) for o in out]
            )
        inplace = _out_of_place(t)
        try:
            if inplace is not None:  # x.add_(c): the value of x is the result from here on
                res = self._rule(node, inplace, args, kwargs, out)
                if isinstance(node.args[0], fx.Node):
                    self.mutated[node.args[0]] = node
                return res
            return self._rule(node, t, args, kwargs, out)
        except _Refused:
            raise
        except (ValueError, ZeroDivisionError) as err:
            raise WideEnclosure(f"{op_name(t)} (node {node.name}): {err}") from None

    def _rule(self, node: fx.Node, t: Any, args: list[Any], kw: dict[str, Any], out: Any) -> Any:
        n = self.n
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
        if t in _SAME:
            return args[0]
        if t in _VIEW:
            return self._reshape(args[0], shape)
        if t is aten.expand.default:
            a = args[0]
            val = np.broadcast_to(a.val, shape)
            return Jet(val, _bcast_der(a, shape, n), a.exact, a.literal)
        if t is aten.permute.default:
            a = args[0]
            dims = [_norm_dim(d, a.val.ndim) for d in args[1]]
            der = None if a.der is None else a.der.transpose([*dims, a.val.ndim])
            return Jet(a.val.transpose(dims), der, a.exact, a.literal)
        if t in (aten.t.default, aten.transpose.int):
            a = args[0]
            nd = a.val.ndim
            if nd < 2:
                return a
            d0, d1 = (
                (0, 1) if t is aten.t.default else (_norm_dim(args[1], nd), _norm_dim(args[2], nd))
            )
            dims = list(range(nd))
            dims[d0], dims[d1] = dims[d1], dims[d0]
            der = None if a.der is None else a.der.transpose([*dims, nd])
            return Jet(a.val.transpose(dims), der, a.exact, a.literal)
        if t is aten.unsqueeze.default:
            a = args[0]
            d = _norm_dim(args[1], a.val.ndim + 1)
            der = None if a.der is None else np.expand_dims(a.der, d)
            return Jet(np.expand_dims(a.val, d), der, a.exact, a.literal)
        if t is aten.slice.Tensor:
            a = args[0]
            dim = _norm_dim(args[1] if len(args) > 1 else kw.get("dim", 0), a.val.ndim)
            start = args[2] if len(args) > 2 else kw.get("start")
            end = args[3] if len(args) > 3 else kw.get("end")
            step = args[4] if len(args) > 4 else kw.get("step", 1)
            idx = (slice(None),) * dim + (slice(start, end, step),)
            return Jet(a.val[idx], None if a.der is None else a.der[idx], a.exact, a.literal)
        if t is aten.select.int:
            a, dim, i = args[0], _norm_dim(args[1], args[0].val.ndim), args[2]
            idx = (slice(None),) * dim + (i,)
            return Jet(a.val[idx], None if a.der is None else a.der[idx], a.exact, a.literal)
        if t in (aten.cat.default, aten.stack.default):
            parts = [self._operand(p) for p in args[0]]
            dim = args[1] if len(args) > 1 else kw.get("dim", 0)
            return self._join(parts, dim, shape, stack=t is aten.stack.default)
        if t in (aten.split.Tensor, aten.split_with_sizes.default, aten.unbind.int):
            return self._split(t, args, out)
        if t in _ADD_SUB:
            a, b = self._operand(args[0]), self._operand(args[1])
            alpha = float(kw.get("alpha", args[2] if len(args) > 2 else 1))
            rsub = t in (aten.rsub.Scalar, aten.rsub.Tensor)
            if rsub:  # rsub(input, other, alpha) = other − alpha · input
                a, b = b, a
            if alpha != 1:  # alpha scales the operand that is added or subtracted
                b = self._mul(b, self._operand(alpha), shape=b.shape)
            sign = (
                -1
                if t in (aten.sub.Tensor, aten.sub.Scalar, aten.rsub.Scalar, aten.rsub.Tensor)
                else 1
            )
            val = np.asarray(as_balls(a.val) + sign * as_balls(b.val), dtype=OBJ)
            val = np.broadcast_to(val, shape).copy() if val.shape != shape else val
            db = _bcast_der(b, shape, n)
            der = _add_der(_bcast_der(a, shape, n), None if db is None else sign * db)
            return Jet(val, der)
        if t in (aten.mul.Tensor, aten.mul.Scalar):
            return self._mul(self._operand(args[0]), self._operand(args[1]), shape)
        if t in (aten.div.Tensor, aten.div.Scalar):
            if kw.get("rounding_mode") is not None:
                raise _Refused(node, op_name(t), "division with rounding is not continuous")
            a, b = self._operand(args[0]), self._operand(args[1])
            inv = self._unary(b, aten.reciprocal.default)
            return self._mul(a, inv, shape)
        if t is aten.pow.Tensor_Scalar:
            a, k = args[0], args[1]
            if float(k) == int(k) and int(k) >= 0:
                kk = int(k)
                val = map_balls(lambda v: ipow(v, kk), a.val)
                dp = None
                if a.der is not None:
                    dp = _scale_der(a.der, kk * map_balls(lambda v: ipow(v, kk - 1), a.val))
                return Jet(val, dp)
            raise _Refused(node, op_name(t), f"a power {k!r} that is not a nonnegative integer")
        if t in _UNARY:
            return self._unary(args[0], t)
        if t is aten.gelu.default:
            approx = kw.get("approximate", args[1] if len(args) > 1 else "none")
            if approx != "none":
                raise _Refused(node, op_name(t), "gelu's tanh approximation has no rule yet")
            a = args[0]
            val = map_balls(lambda v: v * _phi(v), a.val)
            dg = (
                None
                if a.der is None
                else _scale_der(a.der, map_balls(lambda v: _phi(v) + v * _phi_d(v), a.val))
            )
            return Jet(val, dg)
        if t in (
            aten.mm.default,
            aten.bmm.default,
            aten.matmul.default,
            aten.mv.default,
            aten.dot.default,
        ):
            return self._matmul(self._operand(args[0]), self._operand(args[1]))
        if t is aten.addmm.default:
            beta = float(kw.get("beta", 1))
            alpha = float(kw.get("alpha", 1))
            if beta != 1 or alpha != 1:
                raise _Refused(node, op_name(t), "addmm with beta or alpha other than 1")
            prod = self._matmul(self._operand(args[1]), self._operand(args[2]))
            bias = self._operand(args[0])
            val = prod.balls() + as_balls(bias.val)
            return Jet(val, _add_der(prod.der, _bcast_der(bias, shape, n)))
        if t in (aten.sum.dim_IntList, aten.mean.dim, aten.sum.default, aten.mean.default):
            return self._reduce(t, args, kw, shape)
        if t in (aten._softmax.default, aten._safe_softmax.default):
            # _safe_softmax differs only on rows that are all -inf, which masked_fill's refusal
            # keeps out of these graphs
            return self._softmax(args[0], args[1])
        if t is aten.native_layer_norm.default:
            return self._layer_norm(args, out)
        if t is aten.where.self:
            cond, a, b = args[0], self._operand(args[1]), self._operand(args[2])
            c = np.broadcast_to(cond.detach().cpu().numpy().astype(bool), shape)
            val = np.where(c, np.broadcast_to(a.balls(), shape), np.broadcast_to(b.balls(), shape))
            da, db = _bcast_der(a, shape, n), _bcast_der(b, shape, n)
            der = None
            if da is not None or db is not None:
                z = np.full((*shape, n), ZERO, dtype=OBJ)
                der = np.where(c[..., None], z if da is None else da, z if db is None else db)
            return Jet(np.asarray(val, dtype=OBJ), der)
        if t is aten._to_copy.default:
            a = args[0]
            if kw.get("dtype", out.dtype) == torch.float64 or out.dtype == torch.float64:
                return a
            raise _Refused(node, op_name(t), f"a cast to {out.dtype} rounds every value")
        raise _Refused(node, op_name(t), "no rigorous enclosure rule")

    # ------------------------------------------------------------------ rules
    def _reshape(self, a: Jet, shape: tuple[int, ...]) -> Jet:
        der = None if a.der is None else a.der.reshape((*shape, self.n))
        return Jet(a.val.reshape(shape), der, a.exact, a.literal)

    def _join(self, parts: list[Jet], dim: int, shape: tuple[int, ...], stack: bool) -> Jet:
        nd = len(shape)
        d = _norm_dim(dim, nd)
        exact = all(p.exact for p in parts)
        vals = [p.val if exact else p.balls() for p in parts]
        val = np.stack(vals, axis=d) if stack else np.concatenate(vals, axis=d)
        der = None
        if any(p.der is not None for p in parts):
            ders = [
                p.der if p.der is not None else np.full((*p.shape, self.n), ZERO, dtype=OBJ)
                for p in parts
            ]
            der = np.stack(ders, axis=d) if stack else np.concatenate(ders, axis=d)
        return Jet(val, der, exact and der is None, all(p.literal for p in parts))

    def _split(self, t: Any, args: list[Any], out: Any) -> list[Jet]:
        a = args[0]
        if t is aten.unbind.int:
            dim = _norm_dim(args[1] if len(args) > 1 else 0, a.val.ndim)
            return [
                Jet(
                    np.take(a.val, i, axis=dim),
                    None if a.der is None else np.take(a.der, i, axis=dim),
                    a.exact,
                    a.literal,
                )
                for i in range(a.val.shape[dim])
            ]
        dim = _norm_dim(args[2] if len(args) > 2 else 0, a.val.ndim)
        sizes = [int(o.shape[dim]) for o in out]
        res, start = [], 0
        for s in sizes:
            idx = (slice(None),) * dim + (slice(start, start + s),)
            res.append(Jet(a.val[idx], None if a.der is None else a.der[idx], a.exact, a.literal))
            start += s
        return res

    def _mul(self, a: Jet, b: Jet, shape: tuple[int, ...]) -> Jet:
        av, bv = a.balls(), b.balls()
        val = np.asarray(av * bv, dtype=OBJ)  # 0-d products come back as bare balls
        val = np.broadcast_to(val, shape).copy() if val.shape != shape else val
        n = self.n
        der = None
        if a.der is not None:
            der = _add_der(
                der, np.broadcast_to(a.der, (*shape, n)) * np.broadcast_to(bv, shape)[..., None]
            )
        if b.der is not None:
            der = _add_der(
                der, np.broadcast_to(b.der, (*shape, n)) * np.broadcast_to(av, shape)[..., None]
            )
        return Jet(np.asarray(val, dtype=OBJ), der)

    def _unary(self, a: Jet, t: Any) -> Jet:
        f, df = _UNARY[t]
        xs = a.balls()
        val = map_balls(f, xs)
        der = None
        if a.der is not None:
            slope = np.empty(xs.shape, dtype=OBJ)
            for idx in np.ndindex(*xs.shape) if xs.shape else [()]:
                slope[idx] = df(cast(arb, xs[idx]), cast(arb, val[idx]))
            der = _scale_der(a.der, slope)
        return Jet(val, der)

    def _matmul(self, a: Jet, b: Jet) -> Jet:
        val = matmul(a.val, b.val)
        n = self.n
        der = None
        if a.der is not None:
            da = a.der
            if a.val.ndim == 1:
                da = da[None]
            # (..., r, k, n) -> (..., r, n, k) -> (..., r·n, k) @ b -> (..., r, c, n)
            r, k = da.shape[-3], da.shape[-2]
            moved = np.swapaxes(da, -1, -2).reshape((*da.shape[:-3], r * n, k))
            bb = b.val if b.val.ndim > 1 else b.val[:, None]
            prod = matmul(moved, bb)
            c = prod.shape[-1]
            part = np.swapaxes(prod.reshape((*prod.shape[:-2], r, n, c)), -1, -2)
            if a.val.ndim == 1:
                part = part[..., 0, :, :]
            if b.val.ndim == 1:
                part = part[..., 0, :]
            der = _add_der(der, part)
        if b.der is not None:
            db = b.der
            if b.val.ndim == 1:
                db = db[:, None, :]
            k, c = db.shape[-3], db.shape[-2]
            flat = db.reshape((*db.shape[:-3], k, c * n))
            aa = a.val if a.val.ndim > 1 else a.val[None, :]
            prod = matmul(aa, flat)
            part = prod.reshape((*prod.shape[:-1], c, n))
            if a.val.ndim == 1:
                part = part[..., 0, :, :]
            if b.val.ndim == 1:
                part = part[..., 0, :]
            der = _add_der(der, part)
        return Jet(val, der)

    def _reduce(self, t: Any, args: list[Any], kw: dict[str, Any], shape: tuple[int, ...]) -> Jet:
        a = args[0]
        nd = a.val.ndim
        dims = args[1] if len(args) > 1 else kw.get("dim")
        if dims is None or dims == []:
            dims = list(range(nd))
        dims = tuple(
            sorted(
                {_norm_dim(d, nd) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
            )
        )
        keep = bool(args[2] if len(args) > 2 else kw.get("keepdim", False))
        count = int(np.prod([a.val.shape[d] for d in dims])) if dims else 1
        val = a.balls().sum(axis=dims, keepdims=keep)
        der = None if a.der is None else a.der.sum(axis=dims, keepdims=keep)
        if t in (aten.mean.dim, aten.mean.default):
            c = arb(count)
            val = val / c
            der = None if der is None else der / c
        val = np.asarray(val, dtype=OBJ).reshape(shape)
        der = None if der is None else np.asarray(der, dtype=OBJ).reshape((*shape, self.n))
        return Jet(val, der)

    def _softmax(self, a: Jet, dim: int) -> Jet:
        """``s_i = 1 / Σ_j exp(x_j − x_i)`` (each weight from differences: tighter than
        ``exp(x_i) / Σ exp(x_j)``); slopes ``s_i (dx_i − Σ_j s_j dx_j)``."""
        d = _norm_dim(dim, a.val.ndim)
        x = np.moveaxis(a.balls(), d, -1)
        m = x.shape[-1]
        s = np.empty(x.shape, dtype=OBJ)
        for idx in np.ndindex(*x.shape[:-1]) if x.ndim > 1 else [()]:
            row = x[idx]
            for i in range(m):
                tot = ZERO
                for j in range(m):
                    tot = tot + (ONE if i == j else (row[j] - row[i]).exp())
                s[idx + (i,)] = ONE / tot  # noqa: RUF005 (python 3.10)
        val = np.moveaxis(s, -1, d)
        der = None
        if a.der is not None:
            dx = np.moveaxis(a.der, d, -2)  # (..., m, n)
            mean = (s[..., None] * dx).sum(axis=-2, keepdims=True)
            der = np.moveaxis(s[..., None] * (dx - mean), -2, d)
        return Jet(np.asarray(val, dtype=OBJ), der)

    def _layer_norm(self, args: list[Any], out: Any) -> tuple[Jet, Jet, Jet]:
        a, normalized_shape, weight, bias, eps = args[:5]
        k = len(normalized_shape)
        nd = a.val.ndim
        dims = tuple(range(nd - k, nd))
        count = arb(int(np.prod(a.val.shape[nd - k :])))
        x = a.balls()
        mean = x.sum(axis=dims, keepdims=True) / count
        xc = x - mean
        var = map_balls(sqr, xc).sum(axis=dims, keepdims=True) / count
        r = map_balls(lambda v: _rsqrt(v + arb(float(eps))), var)
        y = xc * r
        der = None
        if a.der is not None:
            dm = a.der.sum(axis=dims, keepdims=True) / count
            dxc = a.der - dm
            dvar = (2 * xc[..., None] * dxc).sum(axis=dims, keepdims=True) / count
            dr = -(r * r * r)[..., None] * dvar / 2
            der = dxc * r[..., None] + xc[..., None] * dr
        outj = Jet(np.asarray(y, dtype=OBJ), der)
        if weight is not None:
            outj = self._mul(outj, self._operand(weight), tuple(out[0].shape))
        if bias is not None:
            b = self._operand(bias)
            outj = Jet(outj.val + b.balls(), outj.der)
        return outj, Jet(mean), Jet(r)


#: rules whose result is linear in every operand's value (views, selections, joins, sums):
#: the operands' value enclosures only pass through, and their slopes do not read values
_LINEAR_USES = (
    _VIEW
    | _SAME
    | {
        aten.expand.default,
        aten.permute.default,
        aten.t.default,
        aten.transpose.int,
        aten.unsqueeze.default,
        aten.slice.Tensor,
        aten.select.int,
        aten.cat.default,
        aten.stack.default,
        aten.split.Tensor,
        aten.split_with_sizes.default,
        aten.unbind.int,
        *_ADD_SUB,
        aten.neg.default,
        aten.sum.dim_IntList,
        aten.sum.default,
        aten.mean.dim,
        aten.mean.default,
        aten.where.self,
        aten._to_copy.default,
        operator.getitem,
    }
)
#: products: an operand's value is read only when another factor depends on the state (the
#: product rule multiplies that factor's slopes by this operand's value)
_PRODUCTS = {
    aten.mul.Tensor: (0, 1),
    aten.mul.Scalar: (0, 1),
    aten.mm.default: (0, 1),
    aten.bmm.default: (0, 1),
    aten.matmul.default: (0, 1),
    aten.mv.default: (0, 1),
    aten.dot.default: (0, 1),
    aten.addmm.default: (1, 2),
}


def _values_read(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes whose value enclosure some rule reads: used by the output, by a nonlinear rule
    (an activation, a power, a softmax, a norm, a divisor), or by a product with another factor
    that depends on the state. The first placeholder is the state. Unknown rules count as
    reading (a node left out only loses the centred form's tightness, never soundness)."""
    nodes = list(gm.graph.nodes)
    holders = [nd for nd in nodes if nd.op == "placeholder"]
    dep: dict[fx.Node, bool] = {}
    for nd in nodes:
        if nd.op == "placeholder":
            dep[nd] = nd is holders[0]
        elif nd.op == "get_attr":
            dep[nd] = False
        else:
            args = _flat(list(nd.args)) + _flat(list(nd.kwargs.values()))
            dep[nd] = any(dep.get(a, False) for a in args if isinstance(a, fx.Node))

    def reads(user: fx.Node, nd: fx.Node) -> bool:
        if user.op != "call_function":
            return True
        t = _out_of_place(user.target) or user.target
        if t in _LINEAR_USES:
            return False
        if t in _PRODUCTS:
            factors = [user.args[i] if i < len(user.args) else None for i in _PRODUCTS[t]]
            if nd not in factors:  # addmm's bias: added
                return False
            others = list(factors)
            others.remove(nd)
            return any(isinstance(o, fx.Node) and dep.get(o, False) for o in others)
        if t in (aten.div.Tensor, aten.div.Scalar):
            divisor = user.args[1] if len(user.args) > 1 else None
            if nd is divisor:
                return True
            return isinstance(divisor, fx.Node) and dep.get(divisor, False)
        return True

    return {nd for nd in nodes if any(reads(u, nd) for u in nd.users)}


def _out_of_place(t: Any) -> Any:
    """``aten.add.Scalar`` for ``aten.add_.Scalar`` (None for an out-of-place operation)."""
    name = getattr(t, "_opname", "")
    if not name.endswith("_") or name.startswith("_"):
        return None
    packet = getattr(aten, name[:-1], None)
    return None if packet is None else getattr(packet, t._overloadname, None)


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _flat(item)]
    return [x]


@dataclass
class Traced:
    """A map traced once for interval evaluation: ``g(z)`` on flat states ``z`` of size ``n``."""

    gm: fx.GraphModule
    n: int
    state_shape: tuple[int, ...]
    x: torch.Tensor | None
    call: str

    def enclose(self, z: Jet) -> Jet:
        """The jet of the map's flat output for the input jet ``z`` (balls of shape ``(n,)``).

        When ``z`` carries ``ctr`` and ``dx`` (a state box and its reference point), a thin pass
        at the reference point runs first and every value is also enclosed by the centred form
        (:meth:`_Interp._centred`); the output carries its own ``ctr`` for the next step."""
        centre: dict[fx.Node, Any] | None = None
        out_ctr: np.ndarray | None = None
        if z.ctr is not None and z.dx is not None and z.der is not None:
            thin = self._run(Jet(z.ctr), None, None)
            centre = thin.jets
            out_ctr = self._output(thin).balls().reshape(-1)
        interp = self._run(z, centre, z.dx)
        res = self._output(interp)
        val = res.balls().reshape(-1)
        der = None if res.der is None else res.der.reshape(val.shape[0], -1)
        return Jet(val, der, ctr=out_ctr, dx=z.dx if out_ctr is not None else None)

    def _output(self, interp: _Interp) -> Jet:
        out_node = next(nd for nd in self.gm.graph.nodes if nd.op == "output")
        arg = out_node.args[0]
        return interp.jets[arg if not isinstance(arg, (list, tuple)) else arg[0]]

    def _run(self, z: Jet, centre: dict[fx.Node, Any] | None, dx: np.ndarray | None) -> _Interp:
        inputs = [
            Jet(
                z.val.reshape((1, *self.state_shape)),
                None if z.der is None else z.der.reshape((1, *self.state_shape, z.der.shape[-1])),
                z.exact,
            )
        ]
        if self.x is not None:
            inputs.append(Jet(self.x.detach().cpu().double().numpy(), exact=True))
        n = z.der.shape[-1] if z.der is not None else self.n
        interp = _Interp(self.gm, n, inputs, centre, dx)
        sample = [torch.zeros((1, *self.state_shape), dtype=torch.float64)]
        if self.x is not None:
            sample.append(self.x)
        try:
            interp.run(*sample)
        except _Refused as r:
            raise InvalidArgumentError(
                f"{self.call}: the map uses {r.op} (node {r.node.name}) on the state: {r.why}. "
                "No proof is possible through it, so the point stays an estimate. Write the step "
                "with operations that have enclosures (affine maps, tanh, sigmoid, exp, erf, GELU, "
                "relu, silu, powers, sums, norms, softmax attention without -inf masks)"
            ) from None
        return interp


def trace_map(call: str, system: Any, input_index: int = 0) -> Traced:
    """Trace ``h ↦ f(h, x_i)`` of a LoopedSystem at the ATen level in float64."""
    from torch.fx.experimental.proxy_tensor import make_fx

    sys64 = system.to(dtype=torch.float64) if system.dtype != torch.float64 else system
    shape = tuple(sys64.state_shape)
    x = None
    if sys64.driven:
        assert sys64.x is not None
        x = sys64.x[input_index : input_index + 1].detach()

    def g(h: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        return sys64._fn(h, xs[0] if xs else None)

    sample = [torch.zeros((1, *shape), dtype=torch.float64)]
    if x is not None:
        sample.append(x)
    try:
        with torch.no_grad():
            gm = make_fx(torch.func.functionalize(g))(*sample)
    except Exception as err:  # make_fx raises many kinds on data-dependent control flow
        raise InvalidArgumentError(
            f"{call}: the map could not be traced for interval evaluation ({type(err).__name__}: "
            f"{err}); control flow on tensor values cannot be traced, so the point stays an "
            "estimate"
        ) from err
    return Traced(gm, int(math.prod(shape)), shape, x, call)
