"""Certified bounds on a user's own block: trace it with ``torch.fx`` and compose sound rules along
its graph.

Every value in the traced graph gets an abstract value (:class:`_Val`): whether it depends on the
state ``h``, an upper bound on its Lipschitz constant in ``h`` over the domain (Euclidean norm of
the flattened tensor), a sound interval for the norm of each of its tokens (vectors along the last
axis), and, for values that do not depend on ``h`` and are known exactly (parameters, the system's
own input), the computed value with a bound on its rounding error. Rules go forward through the
graph (a DAG, so a value used twice is counted twice): composition multiplies (R8), sums add (R10),
concatenations add in quadrature (R10), reshapes and selections keep the constant (R10), and the
layers keep the rules of :mod:`.rules` (R1–R7, R11). An operation on ``h`` with no rule is an
error naming it, its node and how to register a rule: never a silent fallback.

Rounding: every constant composed is rounded up (and every lower norm bound down); constants
computed from parameters and inputs carry a forward-error bound (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2002, §3.5: ``|fl(W x) − W x| ≤ γ_n |W| |x|``, ``γ_n = n u/(1 − n u)``; the
elementwise functions of the math library are taken to be within 8 ulp, which glibc's and Sleef's
documented bounds (≤ 4 ulp) meet).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .._results import Trust
from ..errors import InvalidArgumentError
from . import _formulas
from ._arith import (
    U64,
    affine_token_norms,
    down,
    gamma,
    mul,
    sigma,
    sigma_blocks,
    sigma_min,
    up,
    vnorm,
)
from ._bounds import BoundStep, Domain
from ._registry import _RULES, RuleContext, _apply, _Trace, cite
from .rules.activations import ACTIVATION_SLOPES, softplus_switch
from .rules.attention import _or_blocks

__all__ = ["GraphBound", "OpCall", "builtin_function_rules", "graph_bound"]

_INF = math.inf


_up, _down, _gamma = up, down, gamma


@dataclass(frozen=True)
class _Val:
    """What is known about one value of the graph over the domain.

    ``dep``: depends on the state. ``lip``: Lipschitz constant in the state (0 when not ``dep``).
    ``lo, hi``: every token's norm lies in ``[lo, hi]``. ``exact``: not ``dep``, and the concrete
    value computed is the value for every state, up to ``err`` (a bound on the norm of any token of
    the rounding error).
    """

    dep: bool
    lip: float
    lo: float
    hi: float
    exact: bool = False
    err: float = 0.0
    from_input: bool = False  # computed from the input x (not from parameters alone)

    @staticmethod
    def const(t: torch.Tensor, err: float = 0.0) -> _Val:
        """An exact constant: its token norms, widened by the rounding error ``err``."""
        if t.numel() == 0:
            return _Val(False, 0.0, 0.0, 0.0, True, err)
        tok = t.detach().double().reshape(-1, t.shape[-1]).norm(dim=-1) if t.ndim else t.abs()
        lo, hi = float(tok.min()), float(tok.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return _Val(False, 0.0, 0.0, _INF, False)
        rel = _gamma((t.shape[-1] if t.ndim else 1) + 2)  # a computed norm: d squares, a root
        return _Val(False, 0.0, _down(lo * (1 - rel) - err), _up(hi * (1 + rel) + err), True, err)


#: Values that are opaque to the rules (a tuple of outputs, a module's attention weights, ...).
_OPAQUE = _Val(False, 0.0, 0.0, _INF, False)


@dataclass(frozen=True)
class OpCall:
    """One call of a function in a traced block, as a function rule sees it.

    Attributes
    ----------
    target : callable or str
        The function (``torch.erf``) or method name (``"erf"``).
    args, kwargs :
        The call's arguments, evaluated on a sample state of the domain: the state-dependent one
        (at ``position``) is a sample (read its shape, never its values); the others are the
        constants the call uses.
    position : int
        Where the state-dependent tensor sits in ``args``.
    where : str
        The node's name in the traced graph.

    Examples
    --------
    A function rule receives one (see :func:`dynamo.register_lipschitz_rule`):

    >>> import torch
    >>> from dynamo import OpCall
    >>> call = OpCall(torch.erf, (torch.zeros(2, 3),), {}, 0, "erf")
    >>> call.position, tuple(call.args[0].shape)
    (0, (2, 3))
    """

    target: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    position: int
    where: str


@dataclass
class GraphBound:
    """The result of :func:`graph_bound`: the constant, the output's token norms and the steps."""

    lip: float
    lo: float
    hi: float
    steps: list[BoundStep]


# --------------------------------------------------------------------------- the tracer
class _Tracer(fx.Tracer):
    """Keeps modules that have a rule (and torch's own modules) as leaves; traces through the
    user's modules that have none."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in _RULES or type(m) is nn.MultiheadAttention:
            return True
        if isinstance(m, nn.Sequential) and type(m) is nn.Sequential:
            return False
        if any(True for _ in m.children()):  # a composite of torch's (an encoder layer): go in
            return False
        return super().is_leaf_module(m, qualname)


class _FnRoot(nn.Module):
    """A plain step function as a module, so that it traces like one."""

    def __init__(self, fn: Callable[..., torch.Tensor], driven: bool) -> None:
        super().__init__()
        self.fn = fn
        self.driven = driven

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(h, x) if self.driven else self.fn(h)


def _trace(call: str, root: nn.Module) -> fx.GraphModule:
    tracer = _Tracer()
    try:
        graph = tracer.trace(root)
    except Exception as err:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise InvalidArgumentError(
            f"{call}: {type(root).__name__} could not be traced by torch.fx to compose rules along "
            f"its graph ({type(err).__name__}: {err}). Data-dependent control flow (if/for on "
            "tensor values) cannot be traced: register a rule for the whole block "
            "(dynamo.register_lipschitz_rule), or use lipschitz_lower_bound for an estimate"
        ) from err
    return fx.GraphModule(tracer.root, graph)


# --------------------------------------------------------------------------- the rules
_ELEMENTWISE: dict[Any, type] = {
    torch.tanh: nn.Tanh,
    torch.relu: nn.ReLU,
    F.relu: nn.ReLU,
    torch.sigmoid: nn.Sigmoid,
    F.sigmoid: nn.Sigmoid,
    F.gelu: nn.GELU,
    F.silu: nn.SiLU,
    F.softplus: nn.Softplus,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
}
_ADD = {operator.add, torch.add, "add", operator.iadd}
_SUB = {operator.sub, torch.sub, "sub", operator.isub}
_MUL = {operator.mul, torch.mul, "mul", operator.imul}
_DIV = {operator.truediv, torch.div, "div"}
_NEG = {operator.neg, torch.neg, "neg"}
_POS = {operator.pos}
_MATMUL = {operator.matmul, torch.matmul, "matmul", torch.mm, torch.bmm, "mm", "bmm"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_RESHAPE = {
    "view",
    "reshape",
    torch.reshape,
    "flatten",
    torch.flatten,
    "unflatten",
    torch.unflatten,
    "squeeze",
    torch.squeeze,
    "unsqueeze",
    torch.unsqueeze,
}
_PERMUTE = {"transpose", torch.transpose, "permute", torch.permute, "t", torch.t, "mT"}
_IDENTITY = {"contiguous", "clone", torch.clone, F.dropout, nn.functional.dropout}
_GETITEM = {operator.getitem}
_SPLIT = {"chunk", torch.chunk, "split", torch.split, "unbind", torch.unbind, "tensor_split"}


def builtin_function_rules() -> set[Any]:
    """The functions and method names the traced-graph rules handle themselves."""
    out: set[Any] = set(_ELEMENTWISE) | {F.leaky_relu, "leaky_relu", F.linear}
    for group in (_ADD, _SUB, _MUL, _DIV, _NEG, _POS, _MATMUL, _CAT, _RESHAPE, _PERMUTE, _SPLIT):
        out |= group
    out |= _IDENTITY | _GETITEM | {F.layer_norm, F.rms_norm, F.scaled_dot_product_attention}
    return out


def _name(target: Any) -> str:
    if isinstance(target, str):
        return f"Tensor.{target}"
    short = getattr(target, "__name__", "")
    for space, label in (
        (torch, "torch"),
        (F, "torch.nn.functional"),
        (torch.special, "torch.special"),
        (operator, "operator"),
    ):
        if short and getattr(space, short, None) is target:
            return f"{label}.{short}"
    mod = getattr(target, "__module__", "") or ""
    qual = getattr(target, "__qualname__", getattr(target, "__name__", repr(target)))
    if mod.startswith("torch.nn.functional"):
        return f"torch.nn.functional.{qual}"
    if mod.startswith("torch") or mod == "" or mod.startswith("_operator"):
        return f"{'operator' if mod.startswith('_operator') else 'torch'}.{qual}"
    return f"{mod}.{qual}"


class _Stop(Exception):
    """Ends the interpretation at a node without a rule (see :attr:`_Interp.failure`)."""


class _Interp(fx.Interpreter):
    """Runs the graph on a sample (for shapes and the exact constants) and, node by node, the
    abstract values."""

    def __init__(
        self,
        gm: fx.GraphModule,
        call: str,
        domain: Domain,
        x_exact: bool,
        n_tokens: int | None,
        fn_rules: dict[Any, Any],
    ) -> None:
        super().__init__(gm, garbage_collect_values=False)  # rules read earlier values
        self.call = call
        self.domain = domain
        self.x_exact = x_exact
        self.n_tokens = n_tokens
        self.fn_rules = fn_rules
        self.vals: dict[fx.Node, _Val] = {}
        self.steps: list[BoundStep] = []
        self.placeholder_index = 0
        self.failure: InvalidArgumentError | None = None
        self.splits: dict[fx.Node, str] = {}
        self.mha_nodes: set[fx.Node] = set()  # their output is (attention output, weights)

    # -------------------------------------------------------------- plumbing
    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        try:
            self.vals[n] = self._abstract(n, out)
        except InvalidArgumentError as err:
            # raised again by graph_bound as it is: the interpreter would append its own notes
            self.failure = err
            raise _Stop from None
        return out

    def _av(self, a: Any) -> _Val | None:
        """The abstract value of an argument (None for a Python constant)."""
        if isinstance(a, fx.Node):
            return self.vals[a]
        return None

    def _fail(self, n: fx.Node, what: str, hint: str = "") -> InvalidArgumentError:
        if not hint and n.target in builtin_function_rules():
            hint = (
                f"dynamo's rule for {_name(n.target)} covers other calls of it only; register a "
                "rule for the enclosing module (dynamo.register_lipschitz_rule), or use "
                "lipschitz_lower_bound for an estimate"
            )
        hint = hint or (
            f"register a rule for it: dynamo.register_lipschitz_rule({_name(n.target)}, rule, "
            "claims=..., trust=...) for a function (the rule receives an OpCall), or for a "
            "module type; or use lipschitz_lower_bound for an estimate"
        )
        return InvalidArgumentError(
            f"{self.call}: no Lipschitz rule for {what} at node '{n.name}' "
            f"({n.format_node()}) of the traced block: the certified bound is unavailable; {hint}"
        )

    def _unbounded(self, n: fx.Node) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{self.call}: attention at node '{n.name}' ({n.format_node()}) sees unbounded "
            "token norms on this domain, where dot-product attention is not Lipschitz (Kim et "
            "al. 2021); bound the domain (r_max < inf), or normalize before attention"
        )

    def _step(
        self,
        n: fx.Node,
        rule: str,
        factor: float,
        v: _Val,
        note: str = "",
        claims: Sequence[str] = (),
        trust: Trust = Trust.PROVEN,
    ) -> None:
        self.steps.append(BoundStep(n.name, rule, factor, (v.lo, v.hi), note, cite(claims), trust))

    # -------------------------------------------------------------- dispatch
    def _abstract(self, n: fx.Node, out: Any) -> _Val:
        if n.op == "placeholder":
            return self._placeholder(n, out)
        if n.op == "get_attr":
            return _Val.const(out) if isinstance(out, torch.Tensor) else _OPAQUE
        if n.op == "output":
            arg = _args(n)[0]
            v = self._av(arg)
            if v is None:
                raise InvalidArgumentError(
                    f"{self.call}: the traced block returns {type(arg).__name__}, not one tensor"
                )
            return v
        if _metadata(n):  # shape, dtype, device, ndim: the same for every state
            return _OPAQUE
        args = [self._av(a) for a in _flat(_args(n))] + [self._av(a) for a in _flat(_kwargs(n))]
        known = [a for a in args if a is not None]
        if not any(a.dep for a in known):
            v = self._constant(n, out, known)
            if any(a.from_input for a in known):
                v = dataclasses.replace(v, from_input=True)
            return v
        if n.op == "call_module":
            return self._module(n, out)
        return self._function(n, out)

    def _placeholder(self, n: fx.Node, out: Any) -> _Val:
        i = self.placeholder_index
        self.placeholder_index += 1
        d = self.domain
        if i == 0:
            return _Val(True, 1.0, d.r_min, d.r_max)
        if i == 1 and isinstance(out, torch.Tensor):
            if self.x_exact:
                return dataclasses.replace(_Val.const(out), from_input=True)
            if d.x_max is None:
                return _Val(False, 0.0, 0.0, _INF, from_input=True)
            return _Val(False, 0.0, d.x_min, d.x_max, from_input=True)
        if isinstance(out, torch.Tensor):
            return _Val.const(out)
        return _OPAQUE

    def _constant(self, n: fx.Node, out: Any, known: list[_Val]) -> _Val:
        """A node that does not depend on the state: exact when its inputs are and a rule bounds
        its rounding; otherwise only what a rule says about its norms (or nothing)."""
        if not isinstance(out, torch.Tensor):
            return _OPAQUE
        if all(a.exact for a in known):
            err = self._const_error(n, out, known)
            if err is not None:
                return _Val.const(out, err)
        lo, hi = self._const_norms(n, out, known)
        if math.isinf(hi):  # the state's rules, read for norms only (an input path)
            lo, hi = self._norms_only(n, out, lo, hi)
        return _Val(False, 0.0, lo, hi)

    def _norms_only(self, n: fx.Node, out: Any, lo: float, hi: float) -> tuple[float, float]:
        """Token norms of a value computed from an input known only by its range: the rules that
        serve the state, run with that input in the state's place (constant 0), their steps
        dropped. Where no rule applies the interval stays ``[lo, hi]``."""
        saved = dict(self.vals)
        steps = len(self.steps)
        for a in _flat(n.args) + _flat(n.kwargs):
            if isinstance(a, fx.Node) and a in self.vals:
                v = self.vals[a]
                if v.from_input and not v.dep:  # the input in the state's place, constant 0
                    self.vals[a] = _Val(True, 0.0, v.lo, v.hi)
        try:
            v = self._module(n, out) if n.op == "call_module" else self._function(n, out)
            return v.lo, v.hi
        except InvalidArgumentError:  # no rule for this input path: its norms stay unknown
            return lo, hi
        finally:
            self.vals = saved
            del self.steps[steps:]

    def _const_error(self, n: fx.Node, out: torch.Tensor, known: list[_Val]) -> float | None:
        """A bound on any token's rounding error in a constant computed from exact ones (None
        where no bound is known: the node then keeps only a norm interval)."""
        t = n.target
        err_in = max((a.err for a in known), default=0.0)
        hi_out = float(out.detach().double().abs().max()) if out.numel() else 0.0
        width = out.shape[-1] if out.ndim else 1
        if n.op == "call_module":
            m = self.fetch_attr(str(t))
            if isinstance(m, nn.Linear):
                w = m.weight.detach().double()
                a = self.vals[_args(n)[0]]
                mag = float(w.abs().sum(dim=1).max()) * a.hi + vnorm(m.bias)
                return _up(sigma(w) * err_in + math.sqrt(width) * _gamma(w.shape[1] + 1) * mag)
            if type(m) in ACTIVATION_SLOPES:
                slope = ACTIVATION_SLOPES[type(m)]
                return _up(slope * err_in + 8 * U64 * math.sqrt(width) * hi_out)
            return None
        if n.op == "call_function" and t is getattr and _args(n)[1] in ("T", "mT"):
            return _up(math.sqrt(width) * err_in)  # a transpose: each entry's error <= err_in
        if t in _RESHAPE or t in _PERMUTE or t in _IDENTITY or t in _GETITEM or t in _CAT:
            # tokens kept: the same error; otherwise each entry's error is at most err_in
            return err_in if _keeps_tokens(n, out, self) else _up(math.sqrt(width) * err_in)
        if t in _ADD or t in _SUB or t in _NEG or t in _POS:
            total = sum(a.err for a in known)
            return _up(total + U64 * math.sqrt(width) * hi_out)
        if t in _ELEMENTWISE:
            slope = ACTIVATION_SLOPES[_ELEMENTWISE[t]]
            return _up(slope * err_in + 8 * U64 * math.sqrt(width) * hi_out)
        return None

    def _const_norms(self, n: fx.Node, out: torch.Tensor, known: list[_Val]) -> tuple[float, float]:
        """Token norms of a constant that is not known exactly (it depends on an input range)."""
        t = n.target
        if n.op == "call_module":
            m = self.fetch_attr(str(t))
            a = (
                self.vals.get(_args(n)[0])
                if _args(n) and isinstance(_args(n)[0], fx.Node)
                else None
            )
            if a is not None and type(m) in _RULES:
                tr = _Trace(a.lo, a.hi)
                try:
                    _apply(self.call, n.name, m, tr, self.domain, self.n_tokens)
                except InvalidArgumentError:
                    return 0.0, _INF
                return tr.lo, tr.hi
            return 0.0, _INF
        if t in _RESHAPE or t in _IDENTITY or t in _GETITEM:
            a = known[0] if known else None
            if a is not None and _keeps_tokens(n, out, self):
                return a.lo, a.hi
        return 0.0, _INF

    # -------------------------------------------------------------- modules
    def _module(self, n: fx.Node, out: Any) -> _Val:
        m = self.fetch_attr(str(n.target))
        kind = type(m)
        if kind is nn.MultiheadAttention:
            return self._mha(n, m, out)
        dep = [a for a in _args(n) if isinstance(a, fx.Node) and self.vals[a].dep]
        if len(dep) != 1 or _args(n)[0] is not dep[0] or _kwargs(n):
            raise self._fail(
                n,
                f"{kind.__name__} called with the state-dependent value in another position or "
                "with more arguments",
                "a module rule bounds one input; register a rule for the enclosing module",
            )
        a = self.vals[dep[0]]
        if kind is nn.Linear:
            recall = self._linear_of_cat(n, m.weight, m.bias, dep[0])
            if recall is not None:
                return recall
        if kind not in _RULES:
            raise self._fail(
                n,
                f"the module {kind.__name__} ('{n.target}')",
                f"register a rule for it: dynamo.register_lipschitz_rule({kind.__name__}, rule, "
                "claims=..., trust=...), or use lipschitz_lower_bound for an estimate",
            )
        tr = _Trace(a.lo, a.hi)
        _apply(self.call, str(n.target), m, tr, self.domain, self.n_tokens)
        lip = _up(_formulas.compose(a.lip, tr.lip))
        v = _Val(True, lip, tr.lo, tr.hi)
        self.steps.extend(tr.steps)
        return v

    def _linear_of_cat(
        self, n: fx.Node, weight: torch.Tensor, bias: torch.Tensor | None, inp: fx.Node
    ) -> _Val | None:
        """``Linear(cat([parts], -1))`` with parts that do not depend on the state (recall by
        concatenation, R4): ``W_s a + (W_c c + b)``, constant ``σ_max(W_s)`` in the state and, for
        exact constant parts, token norms from the exact offset. None when the pattern is not
        there."""
        if not (inp.op == "call_function" and inp.target in _CAT):
            return None
        parts = _args(inp)[0] if _args(inp) else _kwargs(inp).get("tensors")
        dim = _args(inp)[1] if len(_args(inp)) > 1 else _kwargs(inp).get("dim", 0)
        src = self.env[inp]
        if not isinstance(parts, (list, tuple)) or not isinstance(dim, int):
            return None
        if dim % src.ndim != src.ndim - 1 or not all(isinstance(p, fx.Node) for p in parts):
            return None
        w = weight.detach().double()
        cols, start = [], 0
        for p in parts:
            width = int(self.env[p].shape[-1])
            cols.append((p, slice(start, start + width)))
            start += width
        if start != w.shape[1]:
            return None
        dep = [(p, c) for p, c in cols if self.vals[p].dep]
        const = [(p, c) for p, c in cols if not self.vals[p].dep]
        if not dep or not const:
            return None
        ws = torch.cat([w[:, c] for _, c in dep], dim=1)
        wc = torch.cat([w[:, c] for _, c in const], dim=1)
        s_state = _up(sigma(ws))
        a = self.vals[inp]  # the concatenation's own value: lip √(Σ L²) of the state parts
        lip = _up(_formulas.compose(a.lip, _formulas.concat_state(s_state)))
        hi_s = _up(math.sqrt(sum(self.vals[p].hi ** 2 for p, _ in dep)))
        lo, hi = (
            0.0,
            _up(
                s_state * hi_s
                + sigma(wc) * math.sqrt(sum(self.vals[p].hi ** 2 for p, _ in const))
                + vnorm(bias)
            ),
        )
        if all(self.vals[p].exact for p, _ in const):
            c = torch.cat([self.env[p].detach().double() for p, _ in const], dim=-1)
            err = sigma(wc) * math.sqrt(sum(self.vals[p].err ** 2 for p, _ in const))
            c_lo, c_hi = affine_token_norms(wc, bias, c)
            lo = max(lo, _down(c_lo - err - s_state * hi_s))
            hi = min(hi, _up(c_hi + err + s_state * hi_s))
        v = _Val(True, lip, lo, hi)
        self._step(n, "linear [state; input]", s_state, v, "σ_max(W_s)", ("R1", "R4"))
        return v

    def _mha(self, n: fx.Node, m: nn.MultiheadAttention, out: Any) -> _Val:
        """``nn.MultiheadAttention(query, key, value)``: the projections (R1), scaled dot-product
        attention per head (R11), the output projection (R1); or, the smaller, the heads read
        through ``C_h = W_O,h W_v,h`` (R14): head ``h``'s Jacobian is ``(I ⊗ W_v,h) K_h`` with
        ``K_h`` that of ``softmax(c q_h k_hᵀ) v_in`` (the value bias drops out, since each row of
        the softmax's derivative sums to 0), which R11 bounds with the value input's own rows."""
        names = ("query", "key", "value")
        args = list(_args(n)) + [_kwargs(n).get(k) for k in names[len(_args(n)) :]]
        extra = {k: v for k, v in _kwargs(n).items() if k not in names}
        for k, v in extra.items():
            if isinstance(v, fx.Node) and self.vals[v].dep:
                raise self._fail(n, f"nn.MultiheadAttention with a state-dependent {k}")
        if m.dropout and m.training:
            raise self._fail(n, "nn.MultiheadAttention with dropout in training mode")
        if m.bias_k is not None or m.add_zero_attn:
            raise self._fail(n, "nn.MultiheadAttention with add_bias_kv or add_zero_attn")
        vals = [self.vals[a] if isinstance(a, fx.Node) else None for a in args[:3]]
        if any(v is None for v in vals):
            raise self._fail(n, "nn.MultiheadAttention with a non-tensor query, key or value")
        q_in, k_in, v_in = (v for v in vals if v is not None)
        e = m.embed_dim
        if m._qkv_same_embed_dim:
            w = m.in_proj_weight.detach().double()
            wq, wk, wv = w[:e], w[e : 2 * e], w[2 * e :]
        else:
            wq, wk, wv = (getattr(m, f"{p}_proj_weight").detach().double() for p in ("q", "k", "v"))
        b = m.in_proj_bias.detach().double() if m.in_proj_bias is not None else None
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e : 2 * e], b[2 * e :])
        proj = [(wq, bq, q_in), (wk, bk, k_in), (wv, bv, v_in)]
        lips, his = [], []
        for w_, b_, a in proj:
            lips.append(_up(_formulas.compose(a.lip, _formulas.linear(sigma(w_)))))
            his.append(_up(sigma(w_) * a.hi + vnorm(b_)))
        if math.isinf(max(his)):
            raise self._unbounded(n)
        query = args[0]
        qshape = self.env[query].shape if isinstance(query, fx.Node) else None
        if qshape is None:
            raise self._fail(n, "nn.MultiheadAttention without a tensor query")
        # R11's √T counts the query rows (unbatched (L, E), or (N, L, E) / (L, N, E))
        n_rows = int(qshape[0] if len(qshape) == 2 or not m.batch_first else qshape[1])
        dh = e // m.num_heads
        c = 1.0 / math.sqrt(dh)
        att = _up(_formulas.sdpa(lips[0], lips[1], lips[2], his[0], his[1], his[2], n_rows, c))
        # one node for query, key and value, no additive mask: R16 on its tokens (biases folded in)
        masks = [_kwargs(n).get(k) for k in ("attn_mask", "key_padding_mask")]
        self_attention = (
            isinstance(args[0], fx.Node)
            and args[0] is args[1] is args[2]
            and len(_args(n)) <= 3
            and all(mk is None for mk in masks)
        )
        wo = m.out_proj.weight.detach().double()
        stacked = _up(_formulas.compose(att, _formulas.linear(sigma(wo))))
        kernels, pairs = [], []
        for h in range(m.num_heads):
            rows = slice(h * dh, (h + 1) * dh)
            qk = []
            for w_, b_, a in proj[:2]:  # the head's query and key rows, and their constants
                s_h = sigma(w_[rows])
                bias = 0.0 if b_ is None else vnorm(b_[rows])
                qk.append((_up(_formulas.compose(a.lip, s_h)), _up(s_h * a.hi + bias)))
            (lq, q_hi), (lk, k_hi) = qk
            kernel = _up(_formulas.sdpa(lq, lk, v_in.lip, q_hi, k_hi, v_in.hi, n_rows, c))
            if self_attention:
                kernel = min(kernel, _self_attention_kernel(wq, bq, wk, bk, rows, q_in, n_rows))
            kernels.append(kernel)
            pairs.append((wo[:, rows], wv[rows]))
        c_norm = sigma_blocks(pairs)
        mixed = _up(_formulas.attention_heads_mixed(c_norm, kernels))
        lip = min(stacked, mixed)
        # head h's output row is a convex combination of its value rows (R11), each of norm at
        # most σ(W_v,h)·‖v_in‖ + ‖b_v,h‖; the heads stack under W_O
        heads = [
            sigma(wv[h * dh : (h + 1) * dh]) * v_in.hi
            + (0.0 if bv is None else vnorm(bv[h * dh : (h + 1) * dh]))
            for h in range(m.num_heads)
        ]
        hi = _up(sigma(wo) * math.sqrt(sum(v**2 for v in heads)) + vnorm(m.out_proj.bias))
        # or through C_h: y_i = Σ_h C_h m_h + W_O b_v + b_O, m_h convex combinations of v_in rows
        bias_out = _up(sigma(wo) * vnorm(bv) + vnorm(m.out_proj.bias))
        hi = min(hi, _up(c_norm * math.sqrt(m.num_heads) * v_in.hi + bias_out))
        v = _Val(True, lip, 0.0, hi)
        note = f"T={n_rows}, {m.num_heads} heads, Q≤{his[0]:.4g}, K≤{his[1]:.4g}, V≤{his[2]:.4g}"
        note += ", heads by ‖W_O,h W_v,h‖ (R14)" if mixed < stacked else ""
        note += ", self-attention kernels by R16" if self_attention else ""
        claims = ("R1", "R11", "R14") + (("R16",) if self_attention else ())
        self._step(n, "multi-head attention", lip, v, note, claims)
        self.mha_nodes.add(n)
        return v

    # -------------------------------------------------------------- functions
    def _function(self, n: fx.Node, out: Any) -> _Val:
        t = n.target
        if n.op == "call_method" and t in ("to", "type", "double", "float"):
            return self._cast(n, out)
        if t in _GETITEM:
            return self._getitem(n, out)
        if t in _SPLIT and isinstance(out, (tuple, list)):
            return self._split(n, out)
        if isinstance(out, (tuple, list)):
            raise self._fail(n, f"{_name(t)} (it returns several state-dependent values)")
        if t in _ELEMENTWISE or t in (F.leaky_relu, "leaky_relu"):
            return self._elementwise(n, out)
        if t in _ADD or t in _SUB:
            return self._add(n, out)
        if t in _NEG or t in _POS:
            a = self._dep_arg(n)  # ‖−v‖ = ‖v‖: constant and norms unchanged (R10)
            return _Val(True, a.lip, a.lo, a.hi)
        if t in _MUL or t in _DIV:
            return self._scale(n, out)
        if t in _MATMUL or t is F.linear:
            return self._linear(n, out)
        if t in _CAT:
            return self._cat(n, out)
        if t in _RESHAPE or t in _PERMUTE or t in _IDENTITY:
            return self._reshape(n, out)
        if t in (F.layer_norm, F.rms_norm):
            return self._norm_fn(n, out)
        if t is F.scaled_dot_product_attention:
            return self._sdpa(n, out)
        rule = self.fn_rules.get(t)
        if rule is not None:
            return self._registered(n, out, rule)
        raise self._fail(n, f"the operation {_name(t)}")

    def _dep_arg(self, n: fx.Node) -> _Val:
        dep = [a for a in _flat(_args(n)) + _flat(_kwargs(n)) if isinstance(a, fx.Node)]
        dep = [a for a in dep if self.vals[a].dep]
        if len(dep) != 1:
            raise self._fail(n, f"{_name(n.target)} of {len(dep)} state-dependent values")
        return self.vals[dep[0]]

    def _cast(self, n: fx.Node, out: Any) -> _Val:
        a = self._dep_arg(n)
        src = self.env[_args(n)[0]]
        if (
            isinstance(out, torch.Tensor)
            and isinstance(src, torch.Tensor)
            and out.dtype == src.dtype
            and out.device == src.device
        ):
            return a
        raise self._fail(
            n,
            f"Tensor.{n.target} changing the dtype or device",
            "a cast rounds, which no rule covers; analyse the block in one dtype",
        )

    def _elementwise(self, n: fx.Node, out: Any) -> _Val:
        a = self._dep_arg(n)
        t = n.target
        width = out.shape[-1] if out.ndim else 1
        if t in (F.leaky_relu, "leaky_relu"):
            slope_arg = _kwargs(n).get("negative_slope", _args(n)[1] if len(_args(n)) > 1 else 0.01)
            slope = max(1.0, abs(float(slope_arg)))
            lo, hi, kind_name = 0.0, _up(slope * a.hi), "LeakyReLU"
        else:
            kind = _ELEMENTWISE[t]
            if kind is nn.GELU and _kwargs(n).get("approximate", "none") not in ("none", "tanh"):
                raise self._fail(n, "gelu with an unknown approximation")
            slope = ACTIVATION_SLOPES[kind]
            kind_name = kind.__name__
            if kind in (nn.Sigmoid,):
                lo, hi = 0.0, math.sqrt(width)  # values in (0, 1)
            elif kind is nn.Softplus:
                given = dict(zip(("input", "beta", "threshold"), _args(n), strict=False))
                given |= dict(_kwargs(n))
                softplus_switch(
                    self.call, n.name, given.get("beta", 1.0), given.get("threshold", 20.0), a.hi
                )
                lo, hi = 0.0, _INF
            elif kind is nn.Tanh:
                lo, hi = 0.0, min(a.hi, math.sqrt(width))  # |tanh t| <= min(|t|, 1)
            else:
                lo, hi = 0.0, a.hi  # |φ(t)| <= |t| for ReLU, GELU, SiLU
        lip = _up(_formulas.compose(a.lip, slope))
        v = _Val(True, lip, lo, hi)
        self._step(n, f"elementwise {kind_name}", slope, v, "sup |φ′|", ("R2",))
        return v

    def _broadcast(self, arg: Any, out: torch.Tensor) -> float:
        """How many times broadcasting copies each entry of ``arg`` into ``out`` (the constant of
        a broadcast is its square root)."""
        src = self.env[arg] if isinstance(arg, fx.Node) else None
        if not isinstance(src, torch.Tensor) or src.numel() == 0:
            return 1.0
        return max(1.0, out.numel() / src.numel())

    def _last_copies(self, arg: Any, out: torch.Tensor) -> float:
        """``√k`` when broadcasting copies each token entry of ``arg`` ``k`` times along the
        output's last axis (1 otherwise)."""
        src = self.env[arg] if isinstance(arg, fx.Node) else None
        if not isinstance(src, torch.Tensor) or out.ndim == 0:
            return 1.0
        width = out.shape[-1]
        have = src.shape[-1] if src.ndim else 1
        return math.sqrt(width / have) if have < width else 1.0

    def _add(self, n: fx.Node, out: Any) -> _Val:
        x, y = _args(n)[0], _args(n)[1] if len(_args(n)) > 1 else _kwargs(n).get("other")
        alpha = _kwargs(n).get("alpha", 1)
        if isinstance(alpha, fx.Node):
            raise self._fail(n, f"{_name(n.target)} with a tensor alpha")
        parts = []
        for arg, c in ((x, 1.0), (y, abs(float(alpha)))):
            v = self._av(arg)
            if v is None:  # a Python number: shifts every entry
                num = abs(float(arg)) if isinstance(arg, (int, float)) else _INF
                width = out.shape[-1] if out.ndim else 1
                v = _Val(False, 0.0, num * math.sqrt(width), num * math.sqrt(width), True)
                parts.append((v, c, 1.0))
                continue
            # copies along the last axis lengthen each token: its norm grows by √(copies)
            w = self._last_copies(arg, out)
            v = _Val(v.dep, v.lip, _down(w * v.lo), _up(w * v.hi), v.exact, v.err * w)
            parts.append((v, c, self._broadcast(arg, out)))
        (a, ca, ka), (b, cb, kb) = parts
        la = _formulas.scale(ca, a.lip) * math.sqrt(ka) if a.dep else 0.0
        lb = _formulas.scale(cb, b.lip) * math.sqrt(kb) if b.dep else 0.0
        lip = _up(_formulas.add(la, lb))
        a_lo, a_hi = _down(ca * a.lo), _up(ca * a.hi)
        b_lo, b_hi = _down(cb * b.lo), _up(cb * b.hi)
        lo = _down(max(0.0, a_lo - b_hi, b_lo - a_hi))
        hi = _up(a_hi + b_hi)
        v = _Val(True, lip, lo, hi)
        if a.dep and b.dep:
            self._step(n, "sum", lip, v, f"{la:.4g} + {lb:.4g}", ("R10",))
        return v

    def _scale(self, n: fx.Node, out: Any) -> _Val:
        x, y = _args(n)[0], _args(n)[1] if len(_args(n)) > 1 else _kwargs(n).get("other")
        div = n.target in _DIV
        if div and _kwargs(n).get("rounding_mode") is not None:
            raise self._fail(n, "division with rounding")
        vx, vy = self._av(x), self._av(y)
        if vx is not None and vy is not None and vx.dep and vy.dep:
            raise self._fail(n, f"the product of two state-dependent values ({_name(n.target)})")
        if vy is not None and vy.dep:
            if div:
                raise self._fail(n, "division by a state-dependent value")
            x, y, vx, vy = y, x, vy, vx
        assert vx is not None
        # the constant factor c: a number or a tensor that does not depend on the state
        if vy is None:
            c = float(y) if isinstance(y, (int, float)) else _INF
            c_max = abs(1.0 / c) if div and c != 0 else (_INF if div else abs(c))
            c_min = c_max
        else:
            t = self.env[y]
            if vy.exact:
                mags = t.detach().double().abs()
                c_max_t = float(mags.max()) + vy.err if mags.numel() else 0.0
                c_min_t = max(0.0, float(mags.min()) - vy.err) if mags.numel() else 0.0
                if div:
                    c_max, c_min = (1.0 / c_min_t if c_min_t > 0 else _INF), 1.0 / c_max_t
                else:
                    c_max, c_min = c_max_t, c_min_t
            else:  # each entry is at most its token's norm
                c_max = _INF if div else vy.hi
                c_min = 0.0
        k = self._broadcast(x, out)
        w = self._last_copies(x, out)  # copies along the last axis lengthen each token
        lip = _up(_formulas.scale(c_max, vx.lip) * math.sqrt(k))
        # each entry is scaled by a factor of size in [c_min, c_max]: so is each token's norm
        lo, hi = _down(mul(w * c_min, vx.lo)), _up(mul(w * c_max, vx.hi))
        v = _Val(True, lip, lo, hi)
        self._step(n, "scale by a constant", c_max, v, f"max |c| = {c_max:.4g}", ("R10",))
        return v

    def _linear(self, n: fx.Node, out: Any) -> _Val:
        """``F.linear(a, W, b)``, ``a @ W`` (token-wise) and ``W @ a`` (mixing tokens) with a
        constant ``W``."""
        t = n.target
        if t is F.linear:
            a_node, w_node = (
                _args(n)[0],
                _args(n)[1] if len(_args(n)) > 1 else _kwargs(n).get("weight"),
            )
            b_node = _args(n)[2] if len(_args(n)) > 2 else _kwargs(n).get("bias")
            right = True
        else:
            a_node, w_node = (
                _args(n)[0],
                _args(n)[1] if len(_args(n)) > 1 else _kwargs(n).get("other"),
            )
            b_node = None
            right = True
            va, vw = self._av(a_node), self._av(w_node)
            if va is not None and vw is not None and va.dep and vw.dep:
                raise self._fail(
                    n,
                    f"the product of two state-dependent matrices ({_name(t)})",
                    "write attention with torch.nn.functional.scaled_dot_product_attention or "
                    "nn.MultiheadAttention, which have rules (R11), or register a rule for the "
                    "enclosing module",
                )
            if vw is not None and vw.dep:
                a_node, w_node, right = w_node, a_node, False
        a = self._av(a_node)
        assert a is not None and a.dep
        vw = self._av(w_node)
        w = self.env[w_node] if isinstance(w_node, fx.Node) else None
        if vw is None or w is None or not vw.exact or not isinstance(w, torch.Tensor):
            raise self._fail(n, f"{_name(t)} with a weight that is not a known constant")
        if w.ndim != 2:
            raise self._fail(n, f"{_name(t)} with a weight of {w.ndim} dimensions (2 needed)")
        w = w.detach().double()
        if t is F.linear and vw.err == 0 and isinstance(a_node, fx.Node):
            vb0 = self._av(b_node)
            b0 = self.env[b_node] if vb0 is not None and vb0.exact and vb0.err == 0 else None
            if b_node is None or b0 is not None:  # recall by concatenation, as nn.Linear's
                recall = self._linear_of_cat(n, w, b0, a_node)
                if recall is not None:
                    return recall
        w_err = vw.err * math.sqrt(w.shape[0])  # ‖E‖₂ ≤ ‖E‖_F ≤ √rows · (row error bound)
        s = _up(sigma(w) + w_err)
        s_min = _down(sigma_min(w) - w_err) if w.shape[0] == w.shape[1] else 0.0
        bias = 0.0
        if b_node is not None:
            vb = self._av(b_node)
            if vb is None or not vb.exact:
                raise self._fail(n, "F.linear with a bias that is not a known constant")
            bias = _up(vb.hi)
        lip = _up(_formulas.compose(a.lip, _formulas.linear(s)))
        if right:
            lo, hi = _down(max(0.0, mul(s_min, a.lo) - bias)), _up(mul(s, a.hi) + bias)
        else:  # W @ a mixes tokens: an output token is Σ_j W_ij a_j
            lo, hi = 0.0, _up(mul(float(w.abs().sum(dim=1).max()), a.hi))
        v = _Val(True, lip, lo, hi)
        self._step(n, "linear", s, v, "σ_max(W)", ("R1",))
        return v

    def _cat(self, n: fx.Node, out: Any) -> _Val:
        parts = _args(n)[0] if _args(n) else _kwargs(n).get("tensors")
        dim = _args(n)[1] if len(_args(n)) > 1 else _kwargs(n).get("dim", 0)
        if not isinstance(parts, (list, tuple)):
            raise self._fail(n, "torch.cat of a state-dependent sequence")
        vals = [self._av(p) for p in parts]
        if any(v is None for v in vals):
            raise self._fail(n, "torch.cat of a value the rules cannot read")
        vs = [v for v in vals if v is not None]
        lip = _up(_formulas.concat([v.lip for v in vs if v.dep]))
        last = isinstance(dim, int) and (dim == -1 or dim == out.ndim - 1)
        if last:
            lo = _down(math.sqrt(sum(v.lo**2 for v in vs)))
            hi = _up(math.sqrt(sum(v.hi**2 for v in vs)))
        else:
            lo = min(v.lo for v in vs)
            # Python's max skips a NaN that is not first: a NaN bound bounds nothing
            hi = _INF if any(math.isnan(v.hi) for v in vs) else max(v.hi for v in vs)
        v = _Val(True, lip, lo, hi)
        self._step(n, "concatenation", lip, v, f"dim={dim}", ("R10",))
        return v

    def _reshape(self, n: fx.Node, out: Any) -> _Val:
        a = self._dep_arg(n)
        if n.target in (F.dropout, nn.functional.dropout):
            p = _kwargs(n).get("p", _args(n)[1] if len(_args(n)) > 1 else 0.5)
            training = _kwargs(n).get("training", _args(n)[2] if len(_args(n)) > 2 else True)
            if training and p:
                raise self._fail(n, "dropout in training mode (a random map)")
        src = self.env[_args(n)[0]]
        if _keeps_tokens(n, out, self):
            lo, hi = a.lo, a.hi
        elif (
            isinstance(src, torch.Tensor)
            and out.ndim >= 1
            and src.ndim >= 1
            and out.shape[-1] <= src.shape[-1]
            and src.shape[-1] % out.shape[-1] == 0
            and n.target in _RESHAPE
        ):
            lo, hi = 0.0, a.hi  # the last axis split: each new token is a piece of an old one
        else:
            width = out.shape[-1] if out.ndim else 1
            lo, hi = 0.0, _up(math.sqrt(width) * a.hi)  # every entry is at most a token's norm
        return _Val(True, _up(_formulas.select(a.lip)), lo, hi)

    def _split(self, n: fx.Node, out: Any) -> _Val:
        """``chunk``/``split``/``unbind``: each piece selects distinct entries (R10); read
        through ``getitem``."""
        a = self._dep_arg(n)
        src = self.env[_args(n)[0]]
        dim = _kwargs(n).get("dim", _args(n)[2] if len(_args(n)) > 2 else 0)
        if n.target in ("unbind", torch.unbind):
            dim = _kwargs(n).get("dim", _args(n)[1] if len(_args(n)) > 1 else 0)
        last = isinstance(dim, int) and dim % max(1, src.ndim) == src.ndim - 1
        unbind = n.target in ("unbind", torch.unbind)
        # unbind along the last axis removes it: a piece's tokens run along another axis
        self.splits[n] = ("other" if unbind else "slice") if last else "whole"
        return a

    def _getitem(self, n: fx.Node, out: Any) -> _Val:
        src_node = _args(n)[0]
        assert isinstance(src_node, fx.Node)
        a = self.vals[src_node]
        src = self.env[src_node]
        idx = _args(n)[1]
        if isinstance(src, (tuple, list)) and src_node in self.splits:
            lo, hi = _selected_norms(self.splits[src_node], a, out)
            return _Val(True, _up(_formulas.select(a.lip)), lo, hi)
        if isinstance(src, (tuple, list)):
            if src_node in self.mha_nodes:
                if idx == 0:
                    return a
                raise self._fail(n, "the attention weights returned by nn.MultiheadAttention")
            raise self._fail(n, "an item of a tuple of state-dependent values")
        if not isinstance(out, torch.Tensor) or not isinstance(src, torch.Tensor):
            raise self._fail(n, "an index that does not give a tensor")
        items = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(i, (fx.Node, torch.Tensor, list)) for i in items):
            raise self._fail(
                n,
                "indexing with tensors or lists (it may repeat entries)",
                "use slices, or register a rule for the enclosing module",
            )
        # basic indexing selects distinct entries (R10); tokens survive when the last axis does
        lo, hi = _selected_norms(_last_axis_fate(items, src.ndim), a, out)
        return _Val(True, _up(_formulas.select(a.lip)), lo, hi)

    def _norm_fn(self, n: fx.Node, out: Any) -> _Val:
        a = self._dep_arg(n)
        if _args(n)[0] is not None and not (
            isinstance(_args(n)[0], fx.Node) and self.vals[_args(n)[0]].dep
        ):
            raise self._fail(n, f"{_name(n.target)} of a constant with state-dependent weights")
        shape = _args(n)[1] if len(_args(n)) > 1 else _kwargs(n).get("normalized_shape")
        names = ("weight", "bias", "eps") if n.target is F.layer_norm else ("weight", "eps")
        given = dict(zip(names, _args(n)[2:], strict=False)) | {
            k: v for k, v in _kwargs(n).items() if k in names
        }
        shape_t = tuple(shape) if isinstance(shape, (list, tuple)) else (int(shape),)
        eps = given.get("eps")
        for k in ("weight", "bias"):
            node = given.get(k)
            if node is not None and not (isinstance(node, fx.Node) and self.vals[node].exact):
                raise self._fail(n, f"{_name(n.target)} with a {k} that is not a known constant")
        if n.target is F.layer_norm:
            mod: nn.Module = nn.LayerNorm(shape_t, eps=1e-5 if eps is None else float(eps))
        else:
            mod = nn.RMSNorm(shape_t, eps=None if eps is None else float(eps))
        with torch.no_grad():
            mod = mod.double()
            for k in ("weight", "bias"):
                node = given.get(k)
                param = getattr(mod, k, None)
                if param is None:
                    continue
                if node is None:
                    setattr(mod, k, None)
                else:
                    val = self.env[node]
                    if self.vals[node].err:  # computed, not a parameter: γ only up to rounding
                        raise self._fail(n, f"{_name(n.target)} with a computed {k}")
                    param.copy_(val.detach().double())
        from .rules.norms import norm_rule

        lip_n, lo, hi, note = norm_rule(self.call, n.name, mod, a.lo, a.hi)
        lip = _up(_formulas.compose(a.lip, lip_n))
        v = _Val(True, lip, lo, hi)
        claim = "R6" if n.target is F.layer_norm else "R5"
        self._step(n, type(mod).__name__, lip_n, v, note, (claim,))
        return v

    def _sdpa(self, n: fx.Node, out: Any) -> _Val:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        given = dict(zip(names, _args(n), strict=False)) | dict(_kwargs(n))
        q, k, v = (given.get(x) for x in names[:3])
        vals = [self._av(x) for x in (q, k, v)]
        if any(x is None for x in vals):
            raise self._fail(n, "scaled_dot_product_attention with a non-tensor input")
        mask = given.get("attn_mask")
        if isinstance(mask, fx.Node) and self.vals[mask].dep:
            raise self._fail(n, "scaled_dot_product_attention with a state-dependent mask")
        if given.get("dropout_p", 0.0):
            raise self._fail(n, "scaled_dot_product_attention with dropout_p > 0 (a random map)")
        if given.get("enable_gqa", False):
            raise self._fail(n, "scaled_dot_product_attention with enable_gqa")
        vq, vk, vv = (x for x in vals if x is not None)
        if math.isinf(max(vq.hi, vk.hi, vv.hi)):
            raise self._unbounded(n)
        qt = self.env[q]  # type: ignore[index]
        # R11's √T counts the rows of P: the queries (the keys too, in self-attention)
        n_rows = int(qt.shape[-2])
        scale = given.get("scale")
        c = abs(float(scale)) if scale is not None else 1.0 / math.sqrt(qt.shape[-1])
        lip = _up(_formulas.sdpa(vq.lip, vk.lip, vv.lip, vq.hi, vk.hi, vv.hi, n_rows, _up(c)))
        hi = vv.hi  # every output row is a convex combination of value rows
        val = _Val(True, lip, 0.0, hi)
        note = f"T={n_rows}, Q≤{vq.hi:.4g}, K≤{vk.hi:.4g}, V≤{vv.hi:.4g}, c={c:.4g}"
        self._step(n, "scaled dot-product attention", lip, val, note, ("R11",))
        return val

    def _registered(self, n: fx.Node, out: Any, rule: Any) -> _Val:
        args = list(_args(n))
        pos = [i for i, a in enumerate(args) if isinstance(a, fx.Node) and self.vals[a].dep]
        kw_dep = [k for k, a in _kwargs(n).items() if isinstance(a, fx.Node) and self.vals[a].dep]
        if len(pos) != 1 or kw_dep:
            raise self._fail(
                n,
                f"{_name(n.target)} with {len(pos) + len(kw_dep)} state-dependent arguments",
                "a function rule covers calls with one state-dependent positional argument",
            )
        a = self.vals[args[pos[0]]]
        concrete_args = tuple(self.env[x] if isinstance(x, fx.Node) else x for x in args)
        concrete_kw = {
            k: self.env[x] if isinstance(x, fx.Node) else x for k, x in _kwargs(n).items()
        }
        opcall = OpCall(n.target, concrete_args, concrete_kw, pos[0], n.name)
        ctx = RuleContext(self.call, self.domain, self.n_tokens, n.name)
        factor, lo, hi, step = rule(opcall, (a.lo, a.hi), ctx)
        lip = _up(_formulas.compose(a.lip, factor))
        self.steps.append(step)
        return _Val(True, lip, lo, hi)


_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout"}
_META_METHODS = {"size", "dim", "numel", "ndimension", "get_device", "nelement"}


def _metadata(n: fx.Node) -> bool:
    """A query of a tensor's metadata, which every state of the domain shares."""
    if n.op == "call_function" and n.target is getattr:
        return len(_args(n)) > 1 and _args(n)[1] in _META_ATTRS
    return n.op == "call_method" and n.target in _META_METHODS


def _self_attention_kernel(
    wq: torch.Tensor,
    bq: torch.Tensor | None,
    wk: torch.Tensor,
    bk: torch.Tensor | None,
    rows: slice,
    x: Any,
    n_tokens: int,
) -> float:
    """R16's bound on head ``rows``' kernel ``K_h`` (its Jacobian with ``V = I``) when query, key
    and value are one node ``x`` (token norms at most ``x.hi``, constant ``x.lip`` in the state).

    The scores ``(W_q x_i + b_q)ᵀ (W_k x_k + b_k) / √d_h`` are ``ũ_iᵀ M̃ ũ_k`` on the tokens
    ``ũ = [x; 1] = W x + c`` with ``W = [I; 0]``, ``c = [0; 1]``, ``M̃ = [W_q b_q]ᵀ [W_k b_k] /
    √d_h`` (without biases ``ũ = x``, ``W = I``); the value's last column meets only ``W`` and
    ``ũ_k − μ̃_i``, whose last entries are 0, so ``V = [I 0]``, ``‖V W‖ = 1`` and ``ρ = ‖V (ũ −
    c)‖ = ‖x‖ ≤ x.hi``. The score factors are at most ``‖Wᵀ M̃‖ ‖ũ‖`` with ``‖ũ‖ ≤ √(x.hi² +
    1)``, and ``‖W_qᵀ (W_k x + b_k)‖/√d_h ≤ (‖W_qᵀ W_k‖ x.hi + ‖W_qᵀ b_k‖)/√d_h`` (likewise with
    ``q`` and ``k`` swapped): each takes the smaller. R16 then bounds ``K_h`` in ``x`` by the
    smaller of its two forms, and the chain rule multiplies by ``x.lip``.
    """
    q, k = wq[rows], wk[rows]
    root = math.sqrt(q.shape[0]) * (1.0 - 2.0 * U64)  # √d_h rounded down: the quotient up
    mm = _up(sigma_blocks([(q.T, k)]) / root)  # ‖W_qᵀ W_k‖ / √d_h = ‖W_kᵀ W_q‖ / √d_h
    g_q = g_k = _up(mm * x.hi)
    if bq is not None or bk is not None:
        zero = torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
        b_q = (zero if bq is None else bq[rows].detach().double())[:, None]
        b_k = (zero if bk is None else bk[rows].detach().double())[:, None]
        r_aug = math.sqrt(_up(_up(x.hi * x.hi) + 1.0)) * (1.0 + 2.0 * U64)  # ‖ũ‖ rounded up
        whole_q = _up(sigma_blocks([(q.T, torch.cat([k, b_k], 1))]) / root)  # ‖Wᵀ M̃‖
        whole_k = _up(sigma_blocks([(k.T, torch.cat([q, b_q], 1))]) / root)  # ‖M̃ W‖
        parts_q = _up(g_q + _up(sigma_blocks([(q.T, b_k)]) / root))  # + ‖W_qᵀ b_k‖ / √d_h
        parts_k = _up(g_k + _up(sigma_blocks([(k.T, b_q)]) / root))  # + ‖W_kᵀ b_q‖ / √d_h
        g_q = min(_up(whole_q * r_aug), parts_q)
        g_k = min(_up(whole_k * r_aug), parts_k)
    query, key = _up(x.hi * g_q), _up(x.hi * g_k)
    terms = _formulas.attention_head_terms(1.0, query, key, n_tokens)
    bound, _ = _or_blocks(terms, 1.0, query, key, n_tokens)  # or R16's block form, b₊ = max(key, β)
    return _up(_up(bound * (1.0 + 32.0 * U64)) * x.lip)


def _args(n: fx.Node) -> Any:
    """A node's positional arguments (typed loosely: rules inspect them case by case)."""
    return n.args


def _kwargs(n: fx.Node) -> Any:
    return n.kwargs


def _flat(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [z for y in x for z in _flat(y)]
    if isinstance(x, dict):
        return [z for y in x.values() for z in _flat(y)]
    return [x]


def _last_axis_fate(items: tuple[Any, ...], ndim: int) -> str:
    """What a basic index does to the last axis: ``"whole"`` (kept, so every token is a token
    of the input), ``"slice"`` (sliced: every token is a piece of one) or ``"other"`` (removed
    by an integer, or moved by a new axis after it: tokens run along another axis)."""
    if ndim == 0:
        return "other"
    consumed = sum(1 for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in items:
        k = items.index(Ellipsis)
        full = [*items[:k], *[slice(None)] * (ndim - consumed), *items[k + 1 :]]
    else:
        full = [*items, *[slice(None)] * (ndim - consumed)]
    positions = [j for j, i in enumerate(full) if i is not None]
    if not positions:
        return "other"
    last = full[positions[-1]]
    if any(i is None for i in full[positions[-1] + 1 :]) or not isinstance(last, slice):
        return "other"
    return "whole" if last == slice(None) else "slice"


def _selected_norms(fate: str, a: _Val, out: Any) -> tuple[float, float]:
    """Token norms of a selection: kept, pieces (at most the whole), or entries gathered from
    several tokens (each entry at most its token's norm: ``√width`` times that)."""
    if fate == "whole":
        return a.lo, a.hi
    if fate == "slice":
        return 0.0, a.hi
    width = out.shape[-1] if isinstance(out, torch.Tensor) and out.ndim else 1
    return 0.0, _up(math.sqrt(width) * a.hi)


def _keeps_tokens(n: fx.Node, out: Any, interp: _Interp) -> bool:
    """Whether every token (last-axis vector) of the output is a token of the input."""
    if not _args(n) or not isinstance(_args(n)[0], fx.Node):
        return False
    src = interp.env[_args(n)[0]]
    if not isinstance(src, torch.Tensor) or not isinstance(out, torch.Tensor):
        return False
    if src.ndim == 0 or out.ndim == 0 or src.shape[-1] != out.shape[-1]:
        return False
    t = n.target
    if t in _IDENTITY or t in _RESHAPE:
        return True  # row-major: with the last axis unchanged, each output row is an input row
    if t in ("transpose", torch.transpose):
        dims = [d % src.ndim for d in _args(n)[1:3] if isinstance(d, int)]
        return len(dims) == 2 and src.ndim - 1 not in dims
    if t in ("permute", torch.permute):
        dims = (
            _args(n)[1:]
            if len(_args(n)) > 2 or not isinstance(_args(n)[1], (list, tuple))
            else _args(n)[1]
        )
        dims_l = [d % src.ndim for d in dims if isinstance(d, int)]
        return bool(dims_l) and dims_l[-1] == src.ndim - 1
    return False


def graph_bound(
    call: str,
    root: nn.Module | Callable[..., torch.Tensor],
    domain: Domain,
    h: torch.Tensor,
    x: torch.Tensor | None,
    *,
    driven: bool,
    x_exact: bool,
    n_tokens: int | None,
    fn_rules: dict[Any, Any],
) -> GraphBound:
    """Trace ``root`` and compose the rules along its graph (see the module docstring).

    ``h`` is a sample batch of states of the domain and ``x`` the matching inputs (the system's
    own when ``x_exact``); the trace runs on them once, for shapes and the exact constants.
    """
    module = root if isinstance(root, nn.Module) else _FnRoot(root, driven)
    gm = _trace(call, module)
    interp = _Interp(gm, call, domain, x_exact, n_tokens, fn_rules)
    args: tuple[Any, ...] = (h, x) if driven else (h,)
    placeholders = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
    if len(placeholders) < len(args):
        args = args[: len(placeholders)]
    with torch.no_grad():
        try:
            interp.run(*args)
        except _Stop:
            assert interp.failure is not None
            raise InvalidArgumentError(*interp.failure.args[:1]) from None
        except InvalidArgumentError as err:
            raise InvalidArgumentError(str(err.args[0]) if err.args else str(err)) from None
        except Exception as err:
            raise InvalidArgumentError(
                f"{call}: running the traced block failed ({type(err).__name__}: {err})"
            ) from err
    out_node = next(nd for nd in gm.graph.nodes if nd.op == "output")
    v = interp.vals[out_node]
    if not v.dep:
        v = _Val(True, 0.0, v.lo, v.hi)
    if math.isnan(v.lip) or math.isnan(v.hi) or math.isnan(v.lo):
        # every rule returns a number or inf: NaN would be a bug, never a bound
        raise RuntimeError(
            f"{call}: the traced bound is NaN (steps: {interp.steps}); please report"
        )
    return GraphBound(v.lip, v.lo, v.hi, interp.steps)
