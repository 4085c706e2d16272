"""Rules for dynamo's reference models (the canonical maps of ``dynamo.models`` and the
:class:`~dynamo.models.LoopedTransformer`): the only rule file that knows them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import InvalidArgumentError
from ...models._canonical import (
    Bistable,
    ContractiveTanh,
    Henon,
    Hopfield,
    LinearMap,
    Logistic,
    MonDEQ,
    ZeroBranchRMSNorm,
)
from ...models._transformer import _MLP, LoopedTransformer, _Attention, _Layer, _Sublayer
from .. import _formulas
from .._arith import (
    U64,
    _product,
    affine_token_norms,
    down,
    gamma,
    linear_interval,
    mul,
    sigma,
    sigma_blocks,
    sigma_half_product_plus_identity,
    sigma_half_product_plus_identity_times,
    sigma_half_triple_plus_identity,
    sigma_min,
    sigma_triple,
    up,
    vnorm,
)
from .._registry import RuleContext, _apply, _Trace, builtin_rule
from .activations import ACTIVATION_SLOPES
from .attention import _widen, attention_rule, layer_heads
from .norms import apply_norm, norm_rule

__all__ = ["mlp_residual_factor", "mlp_rule", "mlp_through"]

#: A token set ``c + Σ_j A_j B(r_j)`` as ``([(A_j, r_j), …], c)`` (``A_j``, ``c`` None: identity, 0)
_Tokens = tuple[list[tuple["torch.Tensor | None", float]], "torch.Tensor | None"]


@dataclass(frozen=True)
class _Pending:
    """A sub-layer's step, not yet recorded: where R17 may bound it with its neighbour."""

    where: str
    rule: str
    factor: float
    note: str
    claims: tuple[str, ...]
    heads_at: tuple[float, Any, Any] | None = None  # attention's (R, parts, centre)
    norms: tuple[float, float] = (0.0, math.inf)  # the token norms after the sub-layer


@builtin_rule(ZeroBranchRMSNorm, name="RMSNorm", claims=("R5",))
def zero_branch_norm(m: ZeroBranchRMSNorm, tr: _Trace, ctx: RuleContext) -> None:
    where = (ctx.where + "." if ctx.where else "") + "norm"
    _apply(ctx.call, where, m.norm, tr, ctx.domain, ctx.n_tokens, ctx.x)


@builtin_rule(ContractiveTanh, name="tanh(W h + ...)", claims=("R1", "R2"))
def contractive_tanh(m: ContractiveTanh, tr: _Trace, ctx: RuleContext) -> None:
    tr.lo, tr.hi = 0.0, math.sqrt(m.state_shape[0])
    lip = _formulas.compose(_formulas.linear(sigma(m.W)), ACTIVATION_SLOPES[nn.Tanh])
    tr.add(ctx.where or "ContractiveTanh", "tanh(W h + ...)", lip, "σ_max(W) · 1", ("R1", "R2"))


@builtin_rule(LinearMap, name="A h + ...", claims=("R1",))
def linear_map(m: LinearMap, tr: _Trace, ctx: RuleContext) -> None:
    tr.lo, tr.hi = 0.0, math.inf
    tr.add(ctx.where or "LinearMap", "A h + ...", _formulas.linear(sigma(m.A)), "σ_max(A)", ("R1",))


@builtin_rule(MonDEQ, name="relu(W z + ...)", claims=("R1", "R2"))
def mon_deq(m: MonDEQ, tr: _Trace, ctx: RuleContext) -> None:
    tr.lo, tr.hi = 0.0, math.inf
    lip = _formulas.compose(_formulas.linear(sigma(m.W)), ACTIVATION_SLOPES[nn.ReLU])
    tr.add(ctx.where or "MonDEQ", "relu(W z + ...)", lip, "σ_max(W) · 1", ("R1", "R2"))


@builtin_rule(Hopfield, name="tanh(β W h)", claims=("R1", "R2"))
def hopfield(m: Hopfield, tr: _Trace, ctx: RuleContext) -> None:
    tr.lo, tr.hi = 0.0, math.sqrt(m.state_shape[0])
    lip = _formulas.compose(_formulas.linear(m.beta * sigma(m.W)), ACTIVATION_SLOPES[nn.Tanh])
    tr.add(ctx.where or "Hopfield", "tanh(β W h)", lip, "β σ_max(W)", ("R1", "R2"))


@builtin_rule(Logistic, Henon, Bistable, name="polynomial on a ball", claims=("R9",))
def polynomial(m: Logistic | Henon | Bistable, tr: _Trace, ctx: RuleContext) -> None:
    """The sup of ``‖J‖`` over the ball of radius ``R`` that holds the domain (convex: the mean
    value theorem gives the Lipschitz bound)."""
    kind = type(m)
    if not math.isfinite(tr.hi):  # NaN included: no radius to bound the ball by
        raise InvalidArgumentError(
            f"{ctx.call}: {kind.__name__} is polynomial, not globally Lipschitz; bound the "
            "domain (r_max < inf)"
        )
    R = tr.hi  # the domain lies in the ball of radius R, which is convex
    if isinstance(m, Logistic):
        r = float(m.r)
        lip, note = _formulas.logistic(r, R), "sup |r(1 − 2h)| on |h| <= R"
    elif isinstance(m, Henon):
        a, b = float(m.a), float(m.b)
        lip, note = _formulas.henon(a, b, R), "Frobenius of [[−2ax, 1], [b, 0]]"
    else:
        eta = float(m.eta)
        lip, note = _formulas.bistable(eta, R), "sup |1 + η(1 − 3h²)|"
    tr.lo, tr.hi = 0.0, math.inf
    tr.add(ctx.where or kind.__name__, "polynomial on a ball", lip, note, ("R9",))


# ---------------------------------------------------------------------- the looped transformer
def mlp_rule(mlp: _MLP, lo: float, hi: float) -> tuple[float, float]:
    """``W₂ gelu(W₁ x + b₁) + b₂``: the smaller of ``‖W₂‖ s ‖W₁‖`` (R1, R2, R8; ``s = 1.1290``
    bounds ``|gelu′|``) and ``‖W₂ W₁‖/2 + (s − 1/2) ‖W₂‖ ‖W₁‖`` (R15: ``gelu′`` lies in
    ``[1 − s, s]``, so the Jacobian is ``W₂ (I/2 + E) W₁`` with ``‖E‖ ≤ s − 1/2``); the output's
    token norms from ``|gelu(t)| ≤ |t|``.

    Examples
    --------
    >>> import dynamo as dy
    >>> from dynamo._lipschitz.rules.reference import mlp_rule
    >>> model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=0).double()
    >>> lip, out_hi = mlp_rule(model.layers[0].mlp.branch, 0.0, 2.0)
    >>> round(lip, 3), round(out_hi, 3)
    (1.36, 3.401)
    """
    w1, w2 = mlp.up.weight, mlp.down.weight
    s, s1, s2 = ACTIVATION_SLOPES[nn.GELU], sigma(w1), sigma(w2)
    up = _formulas.compose(_formulas.linear(s1), s)
    product = _formulas.compose(up, _formulas.linear(s2))
    midpoint = _formulas.gelu_mlp(sigma_blocks([(w2, w1)]), s2, s1, s)
    lip = min(product, midpoint)
    _, hi1 = linear_interval(w1, mlp.up.bias, lo, hi)
    out_hi = mul(s2, hi1) + vnorm(mlp.down.bias)
    return lip, out_hi


def mlp_through(mlp: _MLP, w: torch.Tensor) -> tuple[float, float]:
    """The MLP behind a linear map, ``x ↦ W₂ gelu(W₁ (W x + c) + b₁) + b₂``: an MLP with the
    up-projection ``W₁ W`` (R15 holds for any bias), so ``(min(‖W₂‖ s ‖W₁W‖, ‖W₂W₁W‖/2 +
    (s − 1/2)‖W₂‖‖W₁W‖), ‖I + W₂W₁W/2‖ + (s − 1/2)‖W₂‖‖W₁W‖)``: its constant, and that of
    ``x + `` it when ``W`` is square (the residual read jointly). Products in exact arithmetic.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> from dynamo._lipschitz.rules.reference import mlp_rule, mlp_through
    >>> model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=0).double()
    >>> mlp = model.layers[0].mlp.branch
    >>> lip, joint = mlp_through(mlp, torch.eye(8, dtype=torch.float64))
    >>> lip >= mlp_rule(mlp, 0.0, 2.0)[0] > 0.99 * lip
    True
    """
    w1, w2 = mlp.up.weight.detach().double(), mlp.down.weight.detach().double()
    w = w.detach().double()
    s, s2, s1w = ACTIVATION_SLOPES[nn.GELU], sigma(w2), sigma_blocks([(w1, w)])
    product = _formulas.compose(_formulas.compose(_formulas.linear(s1w), s), _formulas.linear(s2))
    midpoint = _formulas.gelu_mlp(sigma_triple(w2, w1, w), s2, s1w, s)
    joint = math.inf
    if w.shape[0] == w.shape[1] == w2.shape[0]:
        i_half = sigma_half_triple_plus_identity(w2, w1, w)
        joint = float(_formulas.gelu_mlp_residual(i_half, s2, s1w, s))
    return min(product, midpoint), joint


def mlp_residual_factor(mlp: _MLP) -> float:
    """The constant of ``x ↦ x + W₂ gelu(W₁ x + b₁) + b₂`` read jointly (R15):
    ``‖I + W₂ W₁/2‖ + (s − 1/2) ‖W₂‖ ‖W₁‖``, which can be below ``1 + Lip(MLP)`` because the
    identity and ``W₂ W₁/2`` need not align.

    Examples
    --------
    >>> import dynamo as dy
    >>> from dynamo._lipschitz.rules.reference import mlp_residual_factor, mlp_rule
    >>> model = dy.models.LoopedTransformer(d_model=8, n_heads=2, seed=0).double()
    >>> mlp = model.layers[0].mlp.branch
    >>> mlp_residual_factor(mlp) < 1 + mlp_rule(mlp, 0.0, 2.0)[0]
    True
    """
    w1, w2 = mlp.up.weight, mlp.down.weight
    s = ACTIVATION_SLOPES[nn.GELU]
    joint = sigma_half_product_plus_identity(w2, w1)
    return float(_formulas.gelu_mlp_residual(joint, sigma(w2), sigma(w1), s))


_PARTS = (
    LoopedTransformer,
    nn.ModuleList,
    _Layer,
    _Sublayer,
    _Attention,
    _MLP,
    nn.Linear,
    nn.RMSNorm,
    nn.LayerNorm,
    nn.Embedding,
)


def _check_parts(call: str, model: LoopedTransformer) -> None:
    """The transformer's rules cover its reference parts only, with bias-free attention."""
    for name, sub in model.named_modules():
        if type(sub) not in _PARTS:
            raise InvalidArgumentError(
                f"{call}: no Lipschitz rule for {type(sub).__name__} at '{name}' inside the "
                "LoopedTransformer (its rules cover the reference parts only)"
            )
        if type(sub) is _Attention:
            for proj in ("q", "k", "v", "o"):
                if getattr(sub, proj).bias is not None:
                    raise InvalidArgumentError(
                        f"{call}: the attention projection '{name}.{proj}' has a bias; the "
                        "attention rule covers bias-free projections only"
                    )


@builtin_rule(
    LoopedTransformer,
    name="looped transformer",
    claims=("R1", "R3", "R4", "R5", "R6", "R7", "R10", "R14", "R15", "R16", "R17"),
)
def transformer(model: LoopedTransformer, tr: _Trace, ctx: RuleContext) -> None:
    """``h ↦ N_final(…(sublayers)…(recall(h, e)))``: each part's rule in order."""
    call, domain, n_tokens = ctx.call, ctx.domain, ctx.n_tokens
    if n_tokens is None:
        raise InvalidArgumentError(
            f"{call}: attention's bound depends on the sequence length; pass a LoopedSystem "
            "or Domain(..., n_tokens=T)"
        )
    _check_parts(call, model)
    e_lo = domain.x_min
    e_hi = domain.x_max
    own = ctx.x if model.driven else None  # the system's own inputs: the bound is for those
    if model.driven and own is None and (e_hi is None or math.isinf(e_hi)):
        raise InvalidArgumentError(
            f"{call}: the block has recall='{model.recall}', so the token-norm ranges inside it "
            "depend on the input: give the input's, Domain(..., x_max=...), or pass a "
            "LoopedSystem with its inputs (the bound is then for those)"
        )
    e_hi_f = 0.0 if e_hi is None else float(e_hi)
    inner: torch.Tensor | None = None  # the adapter's W_s where the first sublayer absorbs it
    tokens: _Tokens | None = None  # where the adapter's output tokens lie: (parts, centre)
    if own is not None:  # tokens of the own inputs: their largest norm bounds them
        e_hi_f = up(float(own.norm(dim=-1).max()) * (1.0 + gamma(own.shape[-1] + 1)))
    # entry: recall
    if model.adapter is not None:
        w = model.adapter.weight.detach().double()
        d = model.d_model
        if model.recall_mode == "concat":
            ws, we = w[:, :d], w[:, d:]
            bn = vnorm(model.adapter.bias)
            lo = max(0.0, mul(sigma_min(ws), tr.lo) - mul(sigma(we), e_hi_f) - bn)
            hi = mul(sigma(ws), tr.hi) + mul(sigma(we), e_hi_f) + bn
            # u = W_s h + W_e e + b: h in the ball of radius tr.hi, e in that of e_hi, centre b
            tokens = ([(ws, tr.hi), (we, e_hi_f)], model.adapter.bias)
            if own is not None:  # u = W_s h + c with c = W_e e + b known exactly
                c_lo, c_hi = affine_token_norms(we, model.adapter.bias, own)
                lo = max(lo, down(c_lo - mul(sigma(ws), tr.hi)))
                hi = min(hi, up(c_hi + mul(sigma(ws), tr.hi)))
                tokens = ([(ws, tr.hi), (None, c_hi)], None)  # ‖c_k‖ ≤ c_hi
            tr.lo, tr.hi = lo, hi
            first = model.layers[0].attn if len(model.layers) else None
            if isinstance(first, _Sublayer) and first.rec is None and first.n_in is None:
                inner = ws  # the first attention reads u = W_s h + c itself: bound them jointly
            else:
                factor = _formulas.concat_state(sigma(ws))
                tr.add(
                    "adapter (outer recall)", "linear [h; e]", factor, "σ_max(W_s)", ("R1", "R4")
                )
        else:
            lo = max(0.0, tr.lo - mul(sigma(w), e_hi_f))
            hi = tr.hi + mul(sigma(w), e_hi_f)
            tokens = ([(None, tr.hi), (w, e_hi_f)], None)  # u = h + P e
            if own is not None:  # u = h + c with c = P e known exactly
                c_lo, c_hi = affine_token_norms(w, None, own)
                lo = max(lo, down(c_lo - tr.hi), down(tr.lo - c_hi))
                hi = min(hi, up(c_hi + tr.hi))
                tokens = ([(None, tr.hi), (None, c_hi)], None)
            tr.lo, tr.hi = lo, hi
            tr.add("adapter (outer recall)", "h + P e", 1.0, "", ("R4",))
    for li, layer in enumerate(model.layers):
        # attention and an MLP with no norm between: R17 may bound them together
        if isinstance(layer, _Layer) and _fusable(layer):
            entry_tokens = tokens if li == 0 else None
            inner_li = inner if li == 0 else None
            _layer_together(
                call, li, layer, n_tokens, tr, e_lo, e_hi_f, own, inner_li, entry_tokens
            )
            continue
        for name in ("attn", "mlp"):
            sub = getattr(layer, name)
            assert isinstance(sub, _Sublayer)
            entry = (li, name) == (0, "attn")
            _sublayer(
                call,
                f"layers.{li}.{name}",
                sub,
                n_tokens,
                tr,
                e_lo,
                e_hi_f,
                own,
                inner if entry else None,
                tokens if entry and sub.n_in is None and sub.rec is None else None,
            )
    if model.final_norm is not None:
        lip, lo, hi, note = norm_rule(call, "final_norm", model.final_norm, tr.lo, tr.hi)
        tr.lo, tr.hi = lo, hi
        claim = "R5" if isinstance(model.final_norm, nn.RMSNorm) else "R6"
        tr.add("final_norm (outer)", type(model.final_norm).__name__, lip, note, (claim,))


def _fusable(layer: _Layer) -> bool:
    """Attention then an MLP, each a plain residual (no norm, no internal recall)."""
    subs = (layer.attn, layer.mlp)
    plain = all(s.rec is None and s.n_in is None and s.n_out is None for s in subs)
    return (
        plain and isinstance(layer.attn.branch, _Attention) and isinstance(layer.mlp.branch, _MLP)
    )


def _through_mlp(mlp: _MLP, x: torch.Tensor, ex: float = 0.0) -> float:
    """``max_t ‖(I + W₂ D_t W₁) X‖`` over the MLP's slope matrices ``D_t`` (R15's midpoint: at
    most ``‖X + W₂ W₁ X/2‖ + (s − 1/2) ‖W₂‖ ‖W₁ X‖``), ``X`` within ``ex`` (Frobenius) of the
    computed ``x``, in exact arithmetic."""
    w1, w2 = mlp.up.weight.detach().double(), mlp.down.weight.detach().double()
    near = sigma_half_product_plus_identity_times(w2, w1, x, ex)
    ux = up(sigma_blocks([(w1, x.detach().double())]) + up(sigma(w1) * ex))
    return float(_formulas.gelu_mlp_residual(near, sigma(w2), ux, ACTIVATION_SLOPES[nn.GELU]))


def _layer_together(
    call: str,
    li: int,
    layer: _Layer,
    n_tokens: int,
    tr: _Trace,
    e_lo: float,
    e_hi: float,
    own: torch.Tensor | None,
    inner: torch.Tensor | None,
    tokens: _Tokens | None,
) -> None:
    """``h ↦ v + F(v)``, ``v = u + Attn(u)`` (``u = A h + c``, ``A = W_s`` where the adapter is
    folded in, else ``I``): the two sub-layers' steps, or one step by R17 where smaller. The
    Jacobian is ``M (I ⊗ A) + Σ_h M (I ⊗ X_h) K_h`` with ``M = blockdiag_t(I + W₂ D_t W₁)``, so
    ``‖J‖ ≤ max_t ‖(I + W₂ D_t W₁) A‖ + max_t ‖(I + W₂ D_t W₁) X‖ √(Σ_h κ_h²)`` with ``X = W_O``
    and the heads' bounds ``L_h`` (R7's mixing), or ``X = [W_O,1 V_1 … W_O,H V_H]`` and the
    kernels (R14's): the MLP's Jacobian meets the directions ``A`` and ``W_O`` actually
    produce, not its own worst ones."""
    a = _sublayer(
        call,
        f"layers.{li}.attn",
        layer.attn,
        n_tokens,
        tr,
        e_lo,
        e_hi,
        own,
        inner,
        tokens,
        emit=False,
    )
    m = _sublayer(call, f"layers.{li}.mlp", layer.mlp, n_tokens, tr, e_lo, e_hi, own, emit=False)
    assert a is not None and m is not None and a.heads_at is not None
    att, mlp = layer.attn.branch, layer.mlp.branch
    assert isinstance(att, _Attention) and isinstance(mlp, _MLP)
    r_hi, parts, centre = a.heads_at
    found = layer_heads(att, n_tokens, r_hi, inner, parts, centre)
    f_a = mlp_residual_factor(mlp) if inner is None else _through_mlp(mlp, inner)
    f_o = _through_mlp(mlp, found.wo)
    blocks = [_product(w_oh, v_h) for w_oh, v_h in found.mixed]  # C = [W_O,h V_h], rounded
    c_err = up(math.sqrt(sum(e * e for _, e in blocks)) * (1.0 + 2.0 * U64))
    f_c = _through_mlp(mlp, torch.cat([c for c, _ in blocks], dim=1), c_err)
    stacked = _formulas.attention_mlp(f_a, f_o, found.heads)
    mixed = _formulas.attention_mlp(f_a, f_c, found.kernels)
    together = up(up(min(stacked, mixed) * _widen(att.n_heads)) * (1.0 + 8.0 * U64))
    if together < mul(a.factor, m.factor):
        how = "W_O V_h (R14's kernels)" if mixed < stacked else "W_O (R7's heads)"
        note = (
            f"attention and MLP together (R17): max_t ‖(I + W₂D_tW₁)A‖ = {f_a:.4g}, heads read "
            f"through {how}; apart ×{a.factor:.4g} and ×{m.factor:.4g}; attention: {a.note}"
        )
        claims = tuple(dict.fromkeys(a.claims + m.claims + ("R17",)))
        where = f"{a.where} + mlp"
        tr.add(where, "residual attention + residual mlp (R17)", together, note, claims)
        return
    tr.add(a.where, a.rule, a.factor, a.note, a.claims, norms=a.norms)
    tr.add(m.where, m.rule, m.factor, m.note, m.claims)


def _sublayer(
    call: str,
    where: str,
    sub: _Sublayer,
    n_tokens: int,
    tr: _Trace,
    e_lo: float,
    e_hi: float,
    own: torch.Tensor | None = None,
    inner: torch.Tensor | None = None,
    tokens: _Tokens | None = None,
    emit: bool = True,
) -> _Pending | None:
    """``u ↦ N_out(u + F(N_in(r(u))))``: ``Lip ≤ L(N_out) (1 + L(r) L(N_in) L(F))``.

    With ``inner = W_s`` (outer recall, an attention sublayer with neither internal recall nor
    ``N_in``) the step is ``h ↦ N_out(u + F(u))`` with ``u = W_s h + c``, whose constant is at
    most ``L(N_out) min(‖W_s‖ (1 + L(F)), ‖W_s‖ + L(F ∘ W_s))`` (R10's sum, R16's attention
    through an input map). Likewise attention behind internal recall with no ``N_in`` reads
    ``r = W_rec,h u + c``: its branch costs ``min(σ(W_rec,h) L(F), L(F ∘ W_rec,h))``. Where the
    attention's input tokens are known to lie in ``c + Σ_j A_j B(r_j)`` (``tokens``, the adapter's
    or the internal recall's affine image of the state and input balls), R16 bounds each head on
    that set rather than on the ball of radius ``R``. With ``emit=False`` (a sub-layer with no
    norm, bounded with its neighbour by R17) the step is returned instead of recorded."""
    u_lo, u_hi = tr.lo, tr.hi
    branch = 1.0
    heads_at: tuple[float, Any, Any] | None = None  # attention's (R, parts, centre), for R17
    notes = []
    claims = ["R3"]
    r_lo, r_hi = u_lo, u_hi
    ws_rec: torch.Tensor | None = None  # internal recall's state block W_rec,h
    if sub.rec is not None:
        w = sub.rec.weight.detach().double()
        d = w.shape[0]
        ws, we = w[:, :d], w[:, d:]
        ws_rec = ws
        bn = vnorm(sub.rec.bias)
        r_lo = max(0.0, mul(sigma_min(ws), u_lo) - mul(sigma(we), e_hi) - bn)
        r_hi = mul(sigma(ws), u_hi) + mul(sigma(we), e_hi) + bn
        tokens = ([(ws, u_hi), (we, e_hi)], sub.rec.bias)
        if own is not None:  # r = W_s u + c with c = W_e e + b known exactly
            c_lo, c_hi = affine_token_norms(we, sub.rec.bias, own)
            r_lo = max(r_lo, down(c_lo - mul(sigma(ws), u_hi)))
            r_hi = min(r_hi, up(c_hi + mul(sigma(ws), u_hi)))
            tokens = ([(ws, u_hi), (None, c_hi)], None)
        branch *= sigma(ws)
        notes.append(f"recall σ(W_rec,h)={sigma(ws):.4g}")
        claims += ["R1", "R4"]
    if sub.n_in is not None:
        lip, r_lo, r_hi, note = norm_rule(call, where + ".n_in", sub.n_in, r_lo, r_hi)
        branch *= lip
        notes.append(f"N_in {type(sub.n_in).__name__} ×{lip:.4g} ({note})")
        claims.append("R5" if isinstance(sub.n_in, nn.RMSNorm) else "R6")
    if isinstance(sub.branch, _Attention):
        att = sub.branch
        if sub.n_in is not None:  # the norm's output tokens: the ball of radius r_hi
            tokens = None
        if att.pos == "absolute":
            pmax = float(att._tables["abs"][:n_tokens].norm(dim=1).max())
            r_hi = r_hi + pmax
            if tokens is not None:  # every position's vector lies in the ball of radius pmax
                tokens = ([*tokens[0], (None, up(pmax))], tokens[1])
        if math.isinf(r_hi):
            raise InvalidArgumentError(
                f"{call}: attention at '{where}' sees unbounded token norms on this domain, where "
                "dot-product attention is not Lipschitz (Kim et al. 2021); bound the domain "
                "(r_max < inf) or normalize before attention"
            )
        parts, centre = (None, None) if tokens is None else tokens
        heads_at = (r_hi, parts, centre)
        lip_f, f_hi, note = attention_rule(att, n_tokens, r_hi, parts=parts, centre=centre)
        rule = "attention"
        claims += ["R7", "R14", "R16"]
        joint = math.inf
        if ws_rec is not None and sub.n_in is None:  # attention reads W_rec,h u + c directly
            lip_r, _, _ = attention_rule(
                att, n_tokens, r_hi, inner=ws_rec, parts=parts, centre=centre
            )
            if lip_r < branch * lip_f:  # L(F ∘ W_rec,h) in place of σ(W_rec,h) L(F)
                branch, lip_f = 1.0, lip_r
                note += ", through W_rec,h (R16)"
        if inner is not None:  # ‖W_s + J_F(u) W_s‖ ≤ ‖W_s‖ + ‖J_F(u) W_s‖, or ‖W_s‖(1 + L(F))
            s_w = sigma(inner)
            lip_w, _, _ = attention_rule(
                att, n_tokens, r_hi, inner=inner, parts=parts, centre=centre
            )
            product = mul(_formulas.concat_state(s_w), _formulas.residual(lip_f))
            summed = _formulas.add(s_w, lip_w)
            joint = min(product, summed)
            how = "σ(W_s) + L(F∘W_s)" if summed < product else "σ(W_s)(1 + L(F))"
            notes.append(f"adapter W_s folded in, σ(W_s)={s_w:.4g}: {how} (F∘W_s ×{lip_w:.4g})")
            claims += ["R1", "R4", "R10"]
    else:
        assert isinstance(sub.branch, _MLP)
        lip_f, f_hi = mlp_rule(sub.branch, r_lo, r_hi)
        note = "min(‖W₂‖ s ‖W₁‖, ‖W₂W₁‖/2 + (s − 1/2)‖W₂‖‖W₁‖), s = 1.1290"
        rule = "mlp (gelu)"
        claims += ["R1", "R2", "R15"]
        # the branch reads u itself: the residual's Jacobian I + W₂DW₁ can be bounded jointly
        plain = sub.rec is None and sub.n_in is None
        joint = mlp_residual_factor(sub.branch) if plain else math.inf
        if ws_rec is not None and sub.n_in is None:  # the MLP reads W_rec,h u + c: W₁ W_rec,h
            lip_r, joint = mlp_through(sub.branch, ws_rec)
            if lip_r < branch * lip_f:
                branch, lip_f = 1.0, lip_r
                note += "; through W_rec,h: W₁ W_rec,h in place of W₁"
    branch *= lip_f
    notes.append(f"F ×{lip_f:.4g} ({note})")
    tr.lo = max(0.0, u_lo - f_hi)
    tr.hi = u_hi + f_hi
    factor = _formulas.residual(branch)
    if inner is not None:  # the adapter's step and this one, bounded together
        factor = joint
        where, rule = "adapter + " + where, rule + " (adapter folded in)"
    elif joint < factor:
        factor = joint
        notes.append(
            f"joint ‖I + W₂W₁W/2‖ + (s − 1/2)‖W₂‖‖W₁W‖ = {joint:.4g} (R15, W = I or W_rec,h)"
        )
    if not emit:
        step = _Pending(where, f"residual + {rule}", factor, "; ".join(notes), tuple(claims))
        return dataclasses.replace(step, heads_at=heads_at, norms=(tr.lo, tr.hi))
    tr.add(where, f"residual + {rule}", factor, "; ".join(notes), claims)
    if sub.n_out is not None:
        apply_norm(call, where + ".n_out", sub.n_out, tr)
    return None
