"""The reference looped transformer block: recall × normalization placement × layers."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._validate import call_form, check_choice, check_positive_float, check_positive_int
from ..errors import InvalidArgumentError, ShapeError

__all__ = ["LoopedTransformer"]

RECALLS = ("none", "outer", "internal")
NORMS = ("none", "pre", "post", "sandwich", "outer")
NORM_TYPES = ("rms", "layer")
POSITIONS = ("rope", "none", "absolute")
RECALL_MODES = ("concat", "add")


def _norm(kind: str, d: int, eps: float) -> nn.Module:
    if kind == "rms":
        return nn.RMSNorm(d, eps=eps)
    return nn.LayerNorm(d, eps=eps)


def _rope_tables(max_len: int, d_head: int, base: float = 10000.0) -> tuple[torch.Tensor, ...]:
    half = d_head // 2
    inv = base ** (-torch.arange(half, dtype=torch.float64) / half)
    ang = torch.arange(max_len, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)


def _sinusoidal(max_len: int, d: int) -> torch.Tensor:
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / (10000.0 ** (i / d))
    table = torch.zeros(max_len, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(ang)
    table[:, 1::2] = torch.cos(ang[:, : d // 2])
    return table


class _Attention(nn.Module):
    """Multi-head dot-product self-attention written out explicitly.

    No ``scaled_dot_product_attention``: its CPU kernels break forward-mode AD (torch 2.13),
    while this form works under ``jvp``, ``jacfwd``, ``vjp`` and ``vmap``.
    """

    def __init__(self, d: int, n_heads: int, pos: str, causal: bool, max_len: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d // n_heads
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.pos, self.causal = pos, causal
        # Position tables are exact float64 tensors, cast once per (dtype, device) and cached:
        # buffers would be rounded to float32 at construction and stay rounded after .double().
        self._tables: dict[str, torch.Tensor] = {}
        if pos == "rope":
            self._tables["cos"], self._tables["sin"] = _rope_tables(max_len, self.d_head)
        if pos == "absolute":
            self._tables["abs"] = _sinusoidal(max_len, d)
        self._cast: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}
        self._capture: list[torch.Tensor] | None = None  # set by LoopedTransformer.attention_maps

    def _table(self, name: str, like: torch.Tensor, n: int) -> torch.Tensor:
        key = (name, like.dtype, like.device)
        if key not in self._cast:
            self._cast[key] = self._tables[name].to(dtype=like.dtype, device=like.device)
        return self._cast[key][:n]

    def _rotate(self, t: torch.Tensor) -> torch.Tensor:
        # t: (B, H, T, dh); rotate pairs (first half, second half) by position-dependent angles
        n = t.shape[-2]
        half = self.d_head // 2
        cos, sin = self._table("cos", t, n), self._table("sin", t, n)
        a, b = t[..., :half], t[..., half : 2 * half]
        rotated = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
        if 2 * half < self.d_head:  # odd head width: the last channel is not rotated
            rotated = torch.cat((rotated, t[..., 2 * half :]), dim=-1)
        return rotated

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        bsz, n, d = r.shape
        if self.pos == "absolute":
            r = r + self._table("abs", r, n)
        q = self.q(r).view(bsz, n, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k(r).view(bsz, n, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v(r).view(bsz, n, self.n_heads, self.d_head).transpose(1, 2)
        if self.pos == "rope":
            q, k = self._rotate(q), self._rotate(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if self.causal:
            mask = torch.ones(n, n, dtype=torch.bool, device=r.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        att = torch.softmax(scores, dim=-1)
        if self._capture is not None:
            self._capture.append(att.detach())
        out = (att @ v).transpose(1, 2).reshape(bsz, n, d)
        return self.o(out)


class _MLP(nn.Module):
    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d, d_ff)
        self.down = nn.Linear(d_ff, d)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(r)))


class _Sublayer(nn.Module):
    """``h ← N_out(h + F(N_in(branch_input)))`` with the norms present according to ``norm``.

    ``branch_input`` is ``h``, or ``W_rec [h; e]`` with internal recall.
    """

    def __init__(
        self,
        branch: nn.Module,
        d: int,
        norm: str,
        norm_type: str,
        eps: float,
        internal_recall: bool,
    ) -> None:
        super().__init__()
        self.branch = branch
        self.rec = nn.Linear(2 * d, d) if internal_recall else None
        self.n_in = _norm(norm_type, d, eps) if norm in ("pre", "sandwich") else None
        self.n_out = _norm(norm_type, d, eps) if norm in ("post", "sandwich") else None

    def forward(self, h: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        r = h
        if self.rec is not None:
            if e is None:
                raise InvalidArgumentError("LoopedTransformer(recall='internal'): x is required")
            r = self.rec(torch.cat((h, e), dim=-1))
        if self.n_in is not None:
            r = self.n_in(r)
        h = h + self.branch(r)
        if self.n_out is not None:
            h = self.n_out(h)
        return h


class _Layer(nn.Module):
    def __init__(
        self,
        d: int,
        n_heads: int,
        d_ff: int,
        norm: str,
        norm_type: str,
        eps: float,
        internal: bool,
        pos: str,
        causal: bool,
        max_len: int,
    ) -> None:
        super().__init__()
        self.attn = _Sublayer(
            _Attention(d, n_heads, pos, causal, max_len), d, norm, norm_type, eps, internal
        )
        self.mlp = _Sublayer(_MLP(d, d_ff), d, norm, norm_type, eps, internal)

    def forward(self, h: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        return self.mlp(self.attn(h, e), e)


class LoopedTransformer(nn.Module):
    """A weight-tied transformer block applied as ``h_{t+1} = f_θ(h_t, e)``.

    The state ``h`` and encoded input ``e`` have shape ``(B, T, d_model)``. One step:

    1. **Recall** (input injection). ``"none"``: ``u = h`` (the map is autonomous; ``x`` only enters
       through ``h_0``). ``"outer"``: at loop entry, ``u = W_s h + W_e e + b`` (``recall_mode=
       "concat"``: ``Linear([h; e])``) or ``u = h + P e`` (``"add"``). ``"internal"``: the residual
       stream carries ``h``; each sub-layer's branch reads ``W_rec [h; e]``.
    2. **Layers** ``ℓ = 1..n_layers``, each an attention and an MLP sub-layer, with normalization
       placed by ``norm``: ``"none"``: ``h + F(h)``; ``"pre"``: ``h + F(N(h))``; ``"post"``:
       ``N(h + F(h))``; ``"sandwich"``: ``N₂(h + F(N₁ h))``; ``"outer"``: no norm inside, and
    3. with ``norm="outer"``, one normalization of the whole update: ``h_{t+1} = N(u + Σ F)``.

    Attention is written out (no SDPA) so that ``jvp``/``jacfwd``/``vmap`` work on the CPU; RoPE
    rotates queries and keys; ``pos="absolute"`` adds a sinusoidal table to the attention input at
    every step (so positions enter the map itself). Parameters are drawn from ``seed`` alone:
    weights ``N(0, init_gain² / fan_in)`` (the default ``init_gain = 1/√3`` gives the variance of
    ``torch.nn.Linear``'s default initialisation), the output projections of every branch scaled by
    ``branch_gain``, biases 0, norm gains 1.

    Parameters
    ----------
    d_model, n_heads, n_layers, d_ff : int
        Width, heads (must divide ``d_model``), layers in the block, MLP width (default 4·d_model).
    recall : {"none", "outer", "internal"}
    norm : {"none", "pre", "post", "sandwich", "outer"}
    norm_type : {"rms", "layer"}
    pos : {"rope", "none", "absolute"}
    causal : bool
    recall_mode : {"concat", "add"}
        How outer recall injects ``e`` (both give ``W_s h + W_e e + b``; "add" fixes ``W_s = I``).
    norm_eps : float
        ε of every norm (> 0 keeps the map continuous at zero pre-norm vectors).
    max_len : int
        Longest sequence for the position tables.
    vocab_size : int, optional
        When given, :meth:`encode` embeds token ids into ``e``.
    n_outputs : int, optional
        When given, :meth:`readout` maps a state to ``n_outputs`` logits per token (a linear
        head, the task readout of a trained model; not part of the loop step).
    init_gain, branch_gain : float
        Scales of the weight draw (see above; ``init_gain`` defaults to ``1/√3``).
    seed : int
        Seed of the parameter draw.
    dtype : torch.dtype
        Parameter dtype (float32 by default, like torch modules; ``LoopedSystem.from_module``
        analyses in float64).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> model = dy.models.LoopedTransformer(d_model=32, n_heads=4, recall="outer", norm="outer")
    >>> h = torch.randn(2, 10, 32); e = torch.randn(2, 10, 32)
    >>> with torch.no_grad():
    ...     out = model(h, e)
    >>> out.shape, round(float(out.pow(2).mean(-1).sqrt().mean()), 4)  # tokens on the RMS sphere
    (torch.Size([2, 10, 32]), 1.0)
    """

    def __init__(
        self,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 1,
        d_ff: int | None = None,
        *,
        recall: str = "outer",
        norm: str = "outer",
        norm_type: str = "rms",
        pos: str = "rope",
        causal: bool = False,
        recall_mode: str = "concat",
        norm_eps: float = 1e-6,
        max_len: int = 512,
        vocab_size: int | None = None,
        n_outputs: int | None = None,
        init_gain: float = 1 / math.sqrt(3),
        branch_gain: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        call = call_form(
            "LoopedTransformer", [], d_model=d_model, n_heads=n_heads, recall=recall, norm=norm
        )
        check_positive_int(call, "d_model", d_model)
        check_positive_int(call, "n_heads", n_heads)
        check_positive_int(call, "n_layers", n_layers)
        if d_model % n_heads:
            raise InvalidArgumentError(f"{call}: n_heads={n_heads} must divide d_model={d_model}")
        d_ff = 4 * d_model if d_ff is None else check_positive_int(call, "d_ff", d_ff)
        check_choice(call, "recall", recall, RECALLS)
        check_choice(call, "norm", norm, NORMS)
        check_choice(call, "norm_type", norm_type, NORM_TYPES)
        check_choice(call, "pos", pos, POSITIONS)
        check_choice(call, "recall_mode", recall_mode, RECALL_MODES)
        check_positive_float(call, "norm_eps", norm_eps)
        check_positive_int(call, "max_len", max_len)
        check_positive_float(call, "init_gain", init_gain)
        check_positive_float(call, "branch_gain", branch_gain)
        if pos == "rope" and (d_model // n_heads) < 2:
            raise InvalidArgumentError(f"{call}: pos='rope' needs a head width >= 2")
        if vocab_size is not None:
            check_positive_int(call, "vocab_size", vocab_size)
        if n_outputs is not None:
            check_positive_int(call, "n_outputs", n_outputs)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidArgumentError(f"{call}: seed must be an int, got {seed!r}")

        self.config = dict(
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            d_ff=d_ff,
            recall=recall,
            norm=norm,
            norm_type=norm_type,
            pos=pos,
            causal=causal,
            recall_mode=recall_mode,
            norm_eps=norm_eps,
            max_len=max_len,
            vocab_size=vocab_size,
            n_outputs=n_outputs,
            init_gain=init_gain,
            branch_gain=branch_gain,
            seed=seed,
        )
        self.d_model, self.recall, self.norm = d_model, recall, norm
        self.max_len = max_len
        self.driven = recall != "none"
        self.adapter: nn.Linear | None = None
        if recall == "outer":
            self.adapter = (
                nn.Linear(2 * d_model, d_model)
                if recall_mode == "concat"
                else nn.Linear(d_model, d_model, bias=False)
            )
        self.recall_mode = recall_mode
        self.layers = nn.ModuleList(
            _Layer(
                d_model,
                n_heads,
                d_ff,
                norm,
                norm_type,
                norm_eps,
                recall == "internal",
                pos,
                causal,
                max_len,
            )
            for _ in range(n_layers)
        )
        self.final_norm = _norm(norm_type, d_model, norm_eps) if norm == "outer" else None
        self.embed = nn.Embedding(vocab_size, d_model) if vocab_size is not None else None
        # registered last: its draw comes after every other parameter's, so a model without a
        # head has the same parameters for a seed as before heads existed
        self.head = nn.Linear(d_model, n_outputs) if n_outputs is not None else None
        self._init_parameters(seed, init_gain, branch_gain)
        self.to(dtype=dtype)

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def _init_parameters(self, seed: int, init_gain: float, branch_gain: float) -> None:
        gen = torch.Generator().manual_seed(seed)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = init_gain / math.sqrt(module.in_features)
                if name.endswith(("attn.branch.o", "mlp.branch.down")):
                    std *= branch_gain
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen))
            elif isinstance(module, (nn.RMSNorm, nn.LayerNorm)):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    bias.zero_()

    # ------------------------------------------------------------------ the map
    def state_shape_for(self, x: torch.Tensor) -> tuple[int, int]:
        """The state shape ``(T, d_model)`` for an encoded input ``x`` of shape ``(B, T, d)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2)
        >>> m.state_shape_for(torch.zeros(2, 5, 8))
        (5, 8)
        """
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ShapeError(
                f"LoopedTransformer.state_shape_for(x): x must have shape (B, T, {self.d_model}), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[1] > self.max_len:
            raise ShapeError(
                f"LoopedTransformer.state_shape_for(x): sequence length {x.shape[1]} exceeds "
                f"max_len={self.max_len}; build the model with a larger max_len"
            )
        return (int(x.shape[1]), self.d_model)

    def _enter(self, h: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        if self.adapter is None:
            return h
        if e is None:
            raise InvalidArgumentError(
                "LoopedTransformer(recall='outer').forward(h, x): x is required"
            )
        if self.recall_mode == "concat":
            return self.adapter(torch.cat((h, e), dim=-1))
        return h + self.adapter(e)

    def _exit(self, h: torch.Tensor) -> torch.Tensor:
        return self.final_norm(h) if self.final_norm is not None else h

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """One loop step ``h ↦ f(h, x)``; ``x`` (the encoded input) is unused with no recall.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, recall="outer", norm="outer")
        >>> with torch.no_grad():
        ...     out = m(torch.randn(1, 3, 8), torch.randn(1, 3, 8))
        >>> out.shape
        torch.Size([1, 3, 8])
        """
        e = x if self.driven else None
        u = self._enter(h, e)
        for layer in self.layers:
            u = layer(u, e)
        return self._exit(u)

    def layer_maps(self) -> list[Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]]:
        """The block as ``f_k ∘ … ∘ f_1``: recall adapter in ``f_1``, outer norm in ``f_k``.

        >>> import torch, dynamo as dy
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, n_layers=3)
        >>> h, e = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
        >>> out = h
        >>> for f in m.layer_maps():
        ...     out = f(out, e)
        >>> torch.allclose(out, m(h, e))
        True
        """
        k = len(self.layers)

        def make(i: int) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
            def f(h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
                e = x if self.driven else None
                if i == 0:
                    h = self._enter(h, e)
                h = self.layers[i](h, e)
                if i == k - 1:
                    h = self._exit(h)
                return h

            return f

        return [make(i) for i in range(k)]

    @torch.no_grad()
    def attention_maps(self, h: torch.Tensor, x: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The attention probabilities of every layer during one step, ``(B, H, T, T)`` each.

        >>> import torch, dynamo as dy
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, n_layers=2)
        >>> maps = m.attention_maps(torch.randn(1, 5, 8), torch.randn(1, 5, 8))
        >>> len(maps), tuple(maps[0].shape)
        (2, (1, 2, 5, 5))
        """
        atts: list[Any] = [layer.attn.branch for layer in self.layers]  # type: ignore[union-attr]
        store: list[torch.Tensor] = []
        for a in atts:
            a._capture = store
        try:
            self(h, x)
        finally:
            for a in atts:
                a._capture = None
        return store

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embed token ids ``(B, T)`` into the encoded input ``e`` ``(B, T, d_model)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=10)
        >>> m.encode(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 8])
        """
        if self.embed is None:
            raise InvalidArgumentError(
                "LoopedTransformer.encode(tokens): the model has no embedding; build it with "
                "vocab_size=..."
            )
        return self.embed(tokens)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Task logits ``(B, T, n_outputs)`` of a state ``(B, T, d_model)``: the linear head.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> m = dy.models.LoopedTransformer(d_model=8, n_heads=2, vocab_size=2, n_outputs=3)
        >>> m.readout(torch.zeros(1, 5, 8)).shape
        torch.Size([1, 5, 3])
        """
        if self.head is None:
            raise InvalidArgumentError(
                "LoopedTransformer.readout(h): the model has no readout head; build it with "
                "n_outputs=..."
            )
        return self.head(h)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c['d_model']}, n_heads={c['n_heads']}, n_layers={c['n_layers']}, "
            f"recall={c['recall']!r}, norm={c['norm']!r}, norm_type={c['norm_type']!r}, "
            f"pos={c['pos']!r}, causal={c['causal']}, seed={c['seed']}"
        )
