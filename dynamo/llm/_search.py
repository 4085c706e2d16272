"""Fixed points of a causal language model (seed 004): token fixed points over the whole
vocabulary, continuous fixed points of the embedding map by iteration and by gradient descent,
their stability under autoregressive rollout, and the uniform-sequence claim (C7)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from .._results import Trust, _plain
from .._validate import (
    MAX_SEED,
    call_form,
    check_choice,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from ..errors import InvalidArgumentError
from ._model import decode, embedding_map, embedding_matrix, logits_last, resolve

__all__ = [
    "EmbeddingFixedPoint",
    "EmbeddingSearch",
    "Rollout",
    "TokenFixedPoints",
    "UniformSequenceCheck",
    "embedding_fixed_points",
    "rollout_stability",
    "token_fixed_points",
    "uniform_sequence_check",
]

Method = Literal["iteration", "gradient"]


def _progress(iterable: Any, enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ================================================================== token fixed points
@dataclass(frozen=True)
class TokenFixedPoints:
    """Every token ``t`` with ``argmax logits([t]) == t``: greedy decoding repeats it forever.

    A float check of every token of the vocabulary (trust CHECKED: exhaustive, but each argmax
    is that of the logits as computed in ``dtype``; a token whose top-two logit margin is below
    ``fragile_margin`` could flip under another kernel or batch size and is counted in
    ``n_fragile``).

    Attributes
    ----------
    tokens : list of int
        The fixed tokens, most probable first.
    probabilities : list of float
        ``softmax(logits([t]))[t]`` of each.
    margins : list of float
        Its logit minus the runner-up's.
    texts : list of str or None
        Each token's text (None without a tokenizer).
    n_scanned : int
        Tokens evaluated (the whole vocabulary unless ``tokens=`` narrowed it).
    n_successors : int
        Distinct greedy successors ``argmax logits([t])`` over the tokens scanned: 1 means the
        model predicts the same token whatever ``t`` is (context-blind at that position).
    prefix : tuple of int
        Token ids placed before ``t`` (e.g. a BOS token); empty for the one-token protocol.
    vocab_size : int
        Rows of the embedding table.
    batch_size : int
    dtype : str
    seconds : float
        Wall time of the scan.
    fragile_margin : float
    trust : Trust

    Examples
    --------
    >>> import dynamo as dy
    >>> result = dy.llm.token_fixed_points(dy.llm.PlantedLM())
    >>> result.tokens, result.n_scanned
    ([2, 5, 7, 9], 12)
    """

    tokens: list[int]
    probabilities: list[float]
    margins: list[float]
    texts: list[str | None]
    n_scanned: int
    vocab_size: int
    batch_size: int
    dtype: str
    seconds: float
    fragile_margin: float
    n_successors: int
    prefix: tuple[int, ...] = ()
    trust: Trust = Trust.CHECKED

    @property
    def count(self) -> int:
        """Number of token fixed points."""
        return len(self.tokens)

    @property
    def n_fragile(self) -> int:
        """Fixed tokens whose top-two margin is below ``fragile_margin``."""
        return sum(m < self.fragile_margin for m in self.margins)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per fixed token: ``token``, ``text``, ``probability``, ``margin``."""
        return [
            {"token": t, "text": s, "probability": p, "margin": m}
            for t, s, p, m in zip(
                self.tokens, self.texts, self.probabilities, self.margins, strict=True
            )
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "count": self.count,
            "n_scanned": self.n_scanned,
            "vocab_size": self.vocab_size,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "seconds": self.seconds,
            "fragile_margin": self.fragile_margin,
            "n_fragile": self.n_fragile,
            "n_successors": self.n_successors,
            "prefix": list(self.prefix),
            "trust": self.trust.value,
            "fixed_points": [{k: _plain(v) for k, v in r.items()} for r in self.rows()],
        }

    def __str__(self) -> str:
        whole = (
            "the whole vocabulary"
            if self.n_scanned == self.vocab_size
            else (f"{self.n_scanned} of {self.vocab_size} tokens")
        )
        seq = "[t]" if not self.prefix else f"[{', '.join(map(str, self.prefix))}, t]"
        head = (
            f"{self.count} token fixed point{'s' * (self.count != 1)} (argmax logits({seq}) == t) "
            f"over {whole}, {self.dtype}, checked ({self.seconds:.1f} s); "
            f"{self.n_successors} distinct greedy successor{'s' * (self.n_successors != 1)}"
        )
        if self.n_fragile:
            head += f"; {self.n_fragile} with a top-two margin below {self.fragile_margin:g}"
        lines = [head]
        for r in self.rows()[:10]:
            text = "" if r["text"] is None else f" {r['text']!r}"
            lines.append(f"  {r['token']:>7}{text}: p = {r['probability']:.4g}")
        if self.count > 10:
            lines.append(f"  ... {self.count - 10} more")
        return "\n".join(lines)


def token_fixed_points(
    model: Any,
    *,
    tokenizer: Any = None,
    batch_size: int = 256,
    tokens: Sequence[int] | range | None = None,
    prefix: Sequence[int] = (),
    fragile_margin: float = 1e-4,
    progress: bool = False,
    allow_low_precision: bool = False,
) -> TokenFixedPoints:
    """Every token ``t`` whose greedy continuation of the one-token sequence ``[t]`` is ``t``.

    Each token is run alone (no BOS, one position), in batches; the scan costs the model's own
    forward passes plus an argmax and a log-sum-exp per row.

    Parameters
    ----------
    model : LanguageModel or torch.nn.Module
        A causal LM (see :func:`load_causal_lm`).
    tokenizer : optional
        Overrides the tokenizer of a :class:`LanguageModel` (used only to show texts).
    batch_size : int
        Tokens per forward pass.
    tokens : sequence of int, optional
        Scan only these token ids (default: every row of the embedding table).
    prefix : sequence of int
        Token ids placed before each ``t`` (for example the BOS token, for models whose first
        position is an attention sink); the test is then ``argmax logits([*prefix, t]) == t``.
    fragile_margin : float
        Fixed tokens whose top-two logit margin is below this are counted as fragile.
    progress : bool
        Show a progress bar over the batches.
    allow_low_precision : bool
        Allow a bfloat16/float16 model.

    Returns
    -------
    TokenFixedPoints

    Examples
    --------
    >>> import dynamo as dy
    >>> found = dy.llm.token_fixed_points(dy.llm.PlantedLM(), batch_size=5)
    >>> found.count, round(found.probabilities[0], 6)
    (4, 1.0)
    """
    call = call_form("token_fixed_points", ["model"], batch_size=batch_size)
    lm, tok = resolve(call, model, tokenizer, allow_low_precision=allow_low_precision)
    batch_size = check_positive_int(call, "batch_size", batch_size)
    check_positive_float(call, "fragile_margin", fragile_margin)
    E = embedding_matrix(lm)
    vocab = int(E.shape[0])
    if tokens is None:
        ids = torch.arange(vocab, device=E.device)
    else:
        ids = torch.as_tensor(list(tokens), dtype=torch.long, device=E.device)
        if ids.ndim != 1 or ids.numel() == 0:
            raise InvalidArgumentError(f"{call}: tokens must be a non-empty list of token ids")
        bad = ids[(ids < 0) | (ids >= vocab)]
        if bad.numel():
            raise InvalidArgumentError(
                f"{call}: token id {int(bad[0])} is outside the vocabulary [0, {vocab})"
            )
    pre = torch.as_tensor(list(prefix), dtype=torch.long, device=E.device).reshape(-1)
    if pre.numel() and bool(((pre < 0) | (pre >= vocab)).any()):
        raise InvalidArgumentError(f"{call}: prefix ids must lie in [0, {vocab})")
    # the last position's logits only, where the model lets us (transformers >= 4.50)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in _forward_params(lm) else {}
    found_t: list[torch.Tensor] = []
    found_lp: list[torch.Tensor] = []
    found_m: list[torch.Tensor] = []
    successors = torch.zeros(vocab, dtype=torch.bool, device=E.device)
    t0 = time.perf_counter()
    batches = ids.split(batch_size)
    with torch.inference_mode():
        for batch in _progress(batches, progress, desc="vocabulary", unit="batch"):
            seqs = torch.cat([pre.expand(batch.shape[0], -1), batch[:, None]], dim=1)
            logits = lm(input_ids=seqs, use_cache=False, **keep).logits[:, -1, :]
            # one argmax pass over every row; the runner-up (a topk) only on the rows that are
            # fixed points: topk(2) over every row of the vocabulary is not free
            arg = logits.argmax(dim=-1)
            successors[arg] = True
            hit = arg == batch
            if bool(hit.any()):
                rows = logits[hit].double()
                lse = torch.logsumexp(rows, dim=-1)
                top = rows.topk(2, dim=-1).values
                found_t.append(batch[hit])
                found_lp.append(top[:, 0] - lse)
                found_m.append(top[:, 0] - top[:, 1])
    seconds = time.perf_counter() - t0
    if found_t:
        t_all = torch.cat(found_t)
        lp = torch.cat(found_lp)
        margins = torch.cat(found_m)
        order = torch.argsort(lp, descending=True, stable=True)
        t_list = [int(v) for v in t_all[order]]
        p_list = [float(v) for v in lp[order].exp()]
        m_list = [float(v) for v in margins[order]]
    else:
        t_list, p_list, m_list = [], [], []
    return TokenFixedPoints(
        tokens=t_list,
        probabilities=p_list,
        margins=m_list,
        texts=[decode(tok, t) for t in t_list],
        n_scanned=int(ids.numel()),
        vocab_size=vocab,
        batch_size=batch_size,
        dtype=_dt(E.dtype),
        seconds=seconds,
        fragile_margin=float(fragile_margin),
        n_successors=int(successors.sum()),
        prefix=tuple(int(v) for v in pre.tolist()),
    )


def _forward_params(lm: nn.Module) -> set[str]:
    """The keyword names the model's ``forward`` takes (empty when it has no signature)."""
    import inspect

    try:
        return set(inspect.signature(lm.forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover - a forward without a signature
        return set()


# ================================================================== rollout stability
@dataclass(frozen=True)
class Rollout:
    """Autoregressive rollout from a fixed point ``x*``: feed ``x*``, then each output
    ``y_l = softmax(logits_l) @ E`` back as the next input, and measure ``‖y_l − x*‖₂`` at each
    decoding length ``l = 1 … steps`` (seed 004's ``rollout_dist_by_l``).

    ``stable`` means every distance stayed at most ``stable_tol``: a finite-horizon float check
    (trust CHECKED), not a proof for longer sequences.

    Examples
    --------
    >>> import dynamo as dy
    >>> lm = dy.llm.PlantedLM()
    >>> x = dy.llm.embedding_fixed_points(lm, n_seeds=8, seed=0).points[0].x
    >>> r = dy.llm.rollout_stability(lm, x, steps=20)
    >>> r.stable, r.max_distance < 1e-6  # within the residual of the point found
    (True, True)
    """

    distances: list[float]
    stable_tol: float
    used_cache: bool
    dtype: str
    trust: Trust = Trust.CHECKED

    @property
    def steps(self) -> int:
        """Decoding lengths measured."""
        return len(self.distances)

    @property
    def max_distance(self) -> float:
        """The largest distance over the rollout (``rollout_dist_max``); inf if it went NaN."""
        return max((d if math.isfinite(d) else math.inf for d in self.distances), default=0.0)

    @property
    def stable(self) -> bool:
        """Every decoded vector stayed within ``stable_tol`` of ``x*``."""
        return self.max_distance <= self.stable_tol

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "steps": self.steps,
            "stable": self.stable,
            "stable_tol": self.stable_tol,
            "max_distance": _plain(self.max_distance),
            "distances": [_plain(d) for d in self.distances],
            "used_cache": self.used_cache,
            "dtype": self.dtype,
            "trust": self.trust.value,
        }

    def __str__(self) -> str:
        word = "stable" if self.stable else "unstable"
        return (
            f"rollout of {self.steps} steps: {word} (max distance {self.max_distance:.3g}, "
            f"threshold {self.stable_tol:g}; {self.dtype}, checked)"
        )


def rollout_stability(
    model: Any,
    x_star: torch.Tensor,
    steps: int = 100,
    *,
    stable_tol: float = 1e-4,
    allow_low_precision: bool = False,
) -> Rollout:
    """Decode ``steps`` vectors autoregressively from ``x*`` and measure how far they drift.

    Parameters
    ----------
    model : LanguageModel or torch.nn.Module
    x_star : torch.Tensor
        A point of the embedding space, shape ``(D,)``.
    steps : int
        Decoding lengths ``1 … steps`` (seed 004: 100).
    stable_tol : float
        The rollout is stable when every distance is at most this (default: the dedup radius
        of :func:`embedding_fixed_points`).
    allow_low_precision : bool

    Returns
    -------
    Rollout

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lm = dy.llm.PlantedLM()
    >>> uniform = lm.get_input_embeddings().weight.mean(0)  # a fixed point, but unstable
    >>> rollout = dy.llm.rollout_stability(lm, uniform, steps=100)
    >>> rollout.distances[0] < 1e-15, rollout.stable  # exact at first, then it drifts away
    (True, False)
    """
    call = call_form("rollout_stability", ["model", "x_star"], steps=steps)
    lm, _ = resolve(call, model, allow_low_precision=allow_low_precision)
    steps = check_positive_int(call, "steps", steps)
    check_positive_float(call, "stable_tol", stable_tol)
    E = embedding_matrix(lm)
    x = _check_vector(call, "x_star", x_star, E)
    dists: list[float] = []
    used_cache = True
    # the key-value cache: ``cache`` since transformers 5.24, ``past_key_values`` before
    key = "cache" if "cache" in _forward_params(lm) else "past_key_values"
    with torch.inference_mode():
        out = lm(inputs_embeds=x[None, None, :], use_cache=True)
        past = getattr(out, key, None)
        seq = [x]
        for _ in range(steps):
            y = torch.softmax(out.logits[0, -1, :].to(E.dtype), dim=-1) @ E
            dists.append(float(torch.linalg.vector_norm(y - x)))
            seq.append(y)
            if len(dists) == steps:
                break
            if past is not None:
                out = lm(inputs_embeds=y[None, None, :], use_cache=True, **{key: past})
                past = getattr(out, key, None)
            else:  # no cache offered: run the whole sequence again
                used_cache = False
                out = lm(inputs_embeds=torch.stack(seq)[None], use_cache=False)
    return Rollout(dists, float(stable_tol), used_cache, _dt(E.dtype))


def _check_vector(call: str, name: str, x: Any, E: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(f"{call}: {name} must be a torch.Tensor of shape (D,)")
    x = x.detach().reshape(-1) if x.ndim == 2 and x.shape[0] == 1 else x.detach()
    if x.ndim != 1 or x.shape[0] != E.shape[1]:
        raise InvalidArgumentError(
            f"{call}: {name} must have shape ({E.shape[1]},) (the embedding width), got "
            f"{tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidArgumentError(f"{call}: {name} holds NaN or inf")
    return x.to(dtype=E.dtype, device=E.device)


# ================================================================== embedding fixed points
@dataclass(frozen=True)
class EmbeddingFixedPoint:
    """One distinct continuous fixed point ``x* = T(x*)`` of the embedding map.

    Attributes
    ----------
    x : torch.Tensor
        The point, shape ``(D,)``, with ``‖T(x) − x‖₂ = residual < tol`` (a float check in the
        model's dtype: trust CHECKED).
    residual : float
    steps : int
        Steps of the first seed that reached it.
    seeds : list of int
        The seeds whose runs converged to it.
    top_tokens, top_probabilities, top_texts : lists
        The largest weights of the mixture ``softmax(logits(x*))`` whose product with ``E`` is
        ``x*``.
    rollout : Rollout or None
        Autoregressive stability, when measured.
    residual_alone : float or None
        ``‖T(x) − x‖₂`` evaluated again with the point alone in its batch. The run's residual
        was measured in a batch of seeds, and a model's kernels round differently for other
        batch shapes; where the two straddle ``tol`` (see :attr:`at_rounding`), ``tol`` lies at
        the float rounding of ``T`` there and the point is located only to that level.
    spectral_radius : float or None
        ρ(∂T(x*)) estimated by Arnoldi (< 1: the iteration is attracted to it; trust
        ESTIMATED), when measured.

    Examples
    --------
    >>> import dynamo as dy
    >>> point = dy.llm.embedding_fixed_points(dy.llm.PlantedLM(), n_seeds=1, seed=0).points[0]
    >>> point.mixture_text(2), point.residual < 1e-6
    ('#9 100.0%, #7 0.0%', True)
    """

    x: torch.Tensor
    residual: float
    steps: int
    seeds: list[int]
    top_tokens: list[int]
    top_probabilities: list[float]
    top_texts: list[str | None]
    rollout: Rollout | None = None
    spectral_radius: float | None = None
    residual_alone: float | None = None

    def at_rounding(self, tol: float) -> bool:
        """True when the residual re-measured alone is not below ``tol``: the search's
        tolerance is at the float rounding of ``T`` at this point."""
        return self.residual_alone is not None and not self.residual_alone < tol

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the point itself as a list of numbers)."""
        return {
            "residual": self.residual,
            "residual_alone": _plain(self.residual_alone),
            "steps": self.steps,
            "seeds": self.seeds,
            "norm": float(torch.linalg.vector_norm(self.x)),
            "mixture": [
                {"token": t, "text": s, "probability": p}
                for t, p, s in zip(
                    self.top_tokens, self.top_probabilities, self.top_texts, strict=True
                )
            ],
            "rollout": None if self.rollout is None else self.rollout.to_dict(),
            "spectral_radius": self.spectral_radius,
            "spectral_radius_trust": None if self.spectral_radius is None else "estimated",
            "x": _plain(self.x),
        }

    def mixture_text(self, k: int = 5) -> str:
        """``'tok' 97.0%, …`` for the ``k`` largest weights."""
        parts = []
        for t, p, s in list(
            zip(self.top_tokens, self.top_probabilities, self.top_texts, strict=True)
        )[:k]:
            parts.append(f"{s!r} {100 * p:.1f}%" if s is not None else f"#{t} {100 * p:.1f}%")
        return ", ".join(parts)


@dataclass(frozen=True)
class EmbeddingSearch:
    """Continuous fixed points of ``T(x) = softmax(logits(x)) @ E`` found from random starts.

    Only runs whose residual fell below ``tol`` report a point; the others are counted by
    outcome (``"max_steps"``: the residual never fell below ``tol``; ``"stalled"``: gradient
    descent's learning rate fell below 1e-9 first; ``"nonfinite"``). The number of distinct
    points is an estimate from ``n_seeds`` starts (trust ESTIMATED): a point with a small basin
    can be missed.

    Attributes
    ----------
    method : str
        ``"iteration"`` or ``"gradient"``.
    points : list of EmbeddingFixedPoint
        The distinct points, in the order their first seed reached them.
    n_seeds : int
    outcomes, steps, residuals : lists
        Per seed: how its run ended, its steps, and its last residual ``‖T(x) − x‖₂``.
    histories : list of list of float
        Per seed, the residual at every step (for convergence plots).
    tol, dedup, max_steps, seed, init_scale : as passed
    dtype : str
    seconds : float
        Wall time of the search (with rollouts and spectra).
    n : int
        Length of the uniform sequence.
    trust : Trust
        ESTIMATED, for the count.

    Examples
    --------
    >>> import dynamo as dy
    >>> search = dy.llm.embedding_fixed_points(dy.llm.PlantedLM(), n_seeds=8, seed=0)
    >>> search.n_converged + sum(search.failures.values()) == search.n_seeds
    True
    """

    method: str
    points: list[EmbeddingFixedPoint]
    n_seeds: int
    outcomes: list[str]
    steps: list[int]
    residuals: list[float]
    histories: list[list[float]]
    tol: float
    dedup: float
    max_steps: int
    seed: int
    init_scale: float
    dtype: str
    seconds: float
    n: int = 1
    trust: Trust = Trust.ESTIMATED

    @property
    def n_converged(self) -> int:
        """Seeds whose run reached ``‖T(x) − x‖ < tol``."""
        return sum(o == "converged" for o in self.outcomes)

    @property
    def failures(self) -> dict[str, int]:
        """Seeds that reported no point, by outcome."""
        out: dict[str, int] = {}
        for o in self.outcomes:
            if o != "converged":
                out[o] = out.get(o, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "method": self.method,
            "count": len(self.points),
            "count_trust": self.trust.value,
            "n_at_rounding": sum(p.at_rounding(self.tol) for p in self.points),
            "n_seeds": self.n_seeds,
            "n_converged": self.n_converged,
            "failures": self.failures,
            "tol": self.tol,
            "dedup": self.dedup,
            "max_steps": self.max_steps,
            "seed": self.seed,
            "init_scale": self.init_scale,
            "sequence_length": self.n,
            "dtype": self.dtype,
            "seconds": self.seconds,
            "runs": [
                {"seed": self.seed + i, "outcome": o, "steps": s, "residual": _plain(r)}
                for i, (o, s, r) in enumerate(
                    zip(self.outcomes, self.steps, self.residuals, strict=True)
                )
            ],
            "points": [p.to_dict() for p in self.points],
        }

    def __str__(self) -> str:
        k = len(self.points)
        fails = ", ".join(f"{v} {o}" for o, v in self.failures.items())
        crit = f"‖T(x) − x‖ < {self.tol:g}"
        if self.n_converged == 0:  # not "0 fixed points": nothing converged
            head = (
                f"no embedding fixed point found by {self.method}: none of the {self.n_seeds} "
                f"seeds reached {crit} ({fails}; {self.dtype}, {self.seconds:.1f} s)"
            )
        else:
            head = (
                f"{k} distinct embedding fixed point{'s' * (k != 1)} by {self.method} "
                f"({crit}, dedup {self.dedup:g}): {self.n_converged} of {self.n_seeds} seeds "
                "converged"
                + (f"; no point from {fails}" if fails else "")
                + f" ({self.dtype}, estimated count, {self.seconds:.1f} s)"
            )
        lines = [head]
        for i, p in enumerate(self.points):
            extra = ""
            if p.rollout is not None:
                extra += f"; rollout {'stable' if p.rollout.stable else 'unstable'} "
                extra += f"(max {p.rollout.max_distance:.2g})"
            if p.spectral_radius is not None:
                extra += f"; ρ ≈ {p.spectral_radius:.3g}"
            if p.at_rounding(self.tol):
                extra += (
                    f"; alone in its batch the residual is {p.residual_alone:.2g}: tol is at "
                    f"the {self.dtype} rounding of T here"
                )
            lines.append(
                f"  [{i}] residual {p.residual:.2g}, {p.steps} steps, seeds {p.seeds}: "
                f"{p.mixture_text()}{extra}"
            )
        return "\n".join(lines)


def embedding_fixed_points(
    model: Any,
    n_seeds: int = 10,
    *,
    method: Method = "iteration",
    tol: float = 1e-6,
    dedup: float = 1e-4,
    max_steps: int = 10_000,
    seed: int = 0,
    init_scale: float | None = None,
    n: int = 1,
    lr: float = 1e-2,
    top_k: int = 5,
    rollout_steps: int = 0,
    stable_tol: float = 1e-4,
    spectral: bool = False,
    batched: bool = False,
    tokenizer: Any = None,
    progress: bool = False,
    allow_low_precision: bool = False,
) -> EmbeddingSearch:
    """Continuous fixed points of the embedding map ``T(x) = softmax(logits([x, …, x])) @ E``.

    Seed 004's protocol: ``n_seeds`` starts ``x₀ ~ N(0, init_scale²)`` (default: the model's
    ``initializer_range``), each run to ``‖T(x) − x‖₂ < tol`` or ``max_steps``; converged points
    closer than ``dedup`` (L2) are one point.

    * ``method="iteration"``: ``x ← T(x)``; the reported point is the last ``x`` whose residual
      was measured.
    * ``method="gradient"``: AdamW on ``‖x − detach(T(x))‖₂`` with learning rate ``lr`` and
      ``ReduceLROnPlateau``, until the residual is below ``tol`` or the learning rate below 1e-9.

    Each seed runs alone, one point per forward pass, as in seed 004: a model's kernels round
    differently for other batch shapes, and on SmolLM2-135M in float32 the same ``T(x)``
    evaluated in a batch of ten and alone differed by 2e-4, above both ``tol`` and ``dedup``
    (``batched=True`` runs all seeds in one batch anyway: faster, and each point is re-measured
    alone, see :attr:`EmbeddingFixedPoint.residual_alone`). Each seed keeps its own optimizer
    and scheduler.

    Parameters
    ----------
    model : LanguageModel or torch.nn.Module
    n_seeds : int
        Random starts; start ``i`` is drawn from seed ``seed + i``.
    method : {"iteration", "gradient"}
    tol : float
        Convergence threshold on ``‖T(x) − x‖₂`` (seed 004: 1e-6).
    dedup : float
        Points within this L2 distance are the same point (seed 004: 1e-4).
    max_steps : int
        Step budget per seed (seed 004: 10,000).
    seed : int
    init_scale : float, optional
    n : int
        Length of the uniform sequence ``[x, …, x]`` (1: the single-position map).
    lr : float
        Initial AdamW learning rate for ``method="gradient"``.
    top_k : int
        Mixture weights kept per point.
    rollout_steps : int
        When > 0, each point's :func:`rollout_stability` over this many steps.
    stable_tol : float
        Threshold of the rollout's stability.
    spectral : bool
        Also estimate ρ(∂T(x*)) at each point (Arnoldi through ``torch.func``).
    batched : bool
        Run all seeds in one batch (see above).
    tokenizer : optional
    progress : bool
        A progress bar over the seeds.
    allow_low_precision : bool

    Returns
    -------
    EmbeddingSearch

    Examples
    --------
    >>> import dynamo as dy
    >>> lm = dy.llm.PlantedLM()
    >>> search = dy.llm.embedding_fixed_points(lm, n_seeds=32, seed=0)
    >>> sorted(p.top_tokens[0] for p in search.points)  # the planted stable points
    [2, 5, 7, 9]
    """
    call = call_form("embedding_fixed_points", ["model"], n_seeds=n_seeds, method=method)
    lm, tok = resolve(call, model, tokenizer, allow_low_precision=allow_low_precision)
    n_seeds = check_positive_int(call, "n_seeds", n_seeds)
    check_choice(call, "method", method, ("iteration", "gradient"))
    check_positive_float(call, "tol", tol)
    check_positive_float(call, "dedup", dedup)
    max_steps = check_positive_int(call, "max_steps", max_steps)
    seed = check_seed(call, "seed", seed)
    if seed + n_seeds - 1 > MAX_SEED:
        raise InvalidArgumentError(
            f"{call}: the starts use seeds seed … seed + n_seeds - 1, which must stay at most "
            f"{MAX_SEED}; pass a smaller seed"
        )
    n = check_positive_int(call, "n", n)
    check_positive_float(call, "lr", lr)
    top_k = check_positive_int(call, "top_k", top_k)
    rollout_steps = check_positive_int(call, "rollout_steps", rollout_steps, minimum=0)
    E = embedding_matrix(lm)
    if init_scale is None:
        init_scale = float(getattr(getattr(lm, "config", None), "initializer_range", 0.02))
    check_positive_float(call, "init_scale", init_scale)
    starts = (
        torch.stack(
            [
                torch.randn(
                    E.shape[1],
                    generator=torch.Generator().manual_seed(seed + i),
                    dtype=torch.float64,
                )
                for i in range(n_seeds)
            ]
        ).to(dtype=E.dtype, device=E.device)
        * init_scale
    )
    t0 = time.perf_counter()
    runner = _iterate if method == "iteration" else _descend
    groups = [starts] if batched else list(starts.split(1))
    parts = [
        runner(lm, g, n=n, tol=tol, max_steps=max_steps, lr=lr)
        for g in _progress(groups, progress and not batched, desc=method, unit="seed")
    ]
    xs = torch.cat([part[0] for part in parts])
    outcomes = [o for part in parts for o in part[1]]
    steps = [k for part in parts for k in part[2]]
    residuals = [r for part in parts for r in part[3]]
    histories = [h for part in parts for h in part[4]]
    points = _dedup(lm, tok, xs, outcomes, steps, residuals, seed, dedup, top_k, n)
    if rollout_steps or spectral:
        points = [
            _assess(lm, p, n, rollout_steps, stable_tol, spectral, allow_low_precision)
            for p in points
        ]
    return EmbeddingSearch(
        method=method,
        points=points,
        n_seeds=n_seeds,
        outcomes=outcomes,
        steps=steps,
        residuals=residuals,
        histories=histories,
        tol=float(tol),
        dedup=float(dedup),
        max_steps=max_steps,
        seed=seed,
        init_scale=float(init_scale),
        dtype=_dt(E.dtype),
        seconds=time.perf_counter() - t0,
        n=n,
    )


_Runs = tuple[torch.Tensor, list[str], list[int], list[float], list[list[float]]]


def _iterate(
    lm: nn.Module,
    x: torch.Tensor,
    *,
    n: int,
    tol: float,
    max_steps: int,
    **_: Any,
) -> _Runs:
    x = x.clone()
    S = x.shape[0]
    active = torch.ones(S, dtype=torch.bool)
    outcomes = ["max_steps"] * S
    steps = [max_steps] * S
    residuals = [math.inf] * S
    histories: list[list[float]] = [[] for _ in range(S)]
    with torch.inference_mode():
        for k in range(max_steps):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            y = embedding_map(lm, x[idx], n)
            r = torch.linalg.vector_norm(y - x[idx], dim=-1)
            for j, i in enumerate(idx.tolist()):
                rj = float(r[j])
                histories[i].append(rj)
                residuals[i] = rj
                if not math.isfinite(rj):
                    outcomes[i], steps[i] = "nonfinite", k + 1
                    active[i] = False
                elif rj < tol:  # x itself is the point: its residual is rj
                    outcomes[i], steps[i] = "converged", k
                    active[i] = False
                else:
                    x[i] = y[j]
    return x, outcomes, steps, residuals, histories


def _descend(
    lm: nn.Module,
    x0: torch.Tensor,
    *,
    n: int,
    tol: float,
    max_steps: int,
    lr: float,
) -> _Runs:
    S = x0.shape[0]
    params = [nn.Parameter(x0[i].clone()) for i in range(S)]
    opts = [torch.optim.AdamW([p], lr=lr) for p in params]
    # eps=0: torch's default ignores a reduction smaller than 1e-8, which would hold the rate
    # at 1e-8 forever and never reach the protocol's stop at 1e-9
    scheds = [torch.optim.lr_scheduler.ReduceLROnPlateau(o, eps=0.0) for o in opts]
    lr_stop = 1e-9 * (1 + 1e-6)  # 1e-2 * 0.1**7 rounds to just above 1e-9
    active = [True] * S
    outcomes = ["max_steps"] * S
    steps = [max_steps] * S
    residuals = [math.inf] * S
    histories: list[list[float]] = [[] for _ in range(S)]
    for k in range(max_steps):
        idx = [i for i in range(S) if active[i]]
        if not idx:
            break
        xb = torch.stack([params[i] for i in idx])
        with torch.no_grad():
            y = embedding_map(lm, xb.detach(), n)
        losses = torch.linalg.vector_norm(xb - y, dim=-1)
        losses.sum().backward()  # each seed's loss depends only on its own parameter
        values = losses.detach().tolist()
        for j, i in enumerate(idx):
            lj = float(values[j])
            histories[i].append(lj)
            residuals[i] = lj
            if not math.isfinite(lj):
                outcomes[i], steps[i], active[i] = "nonfinite", k + 1, False
            elif lj < tol:
                outcomes[i], steps[i], active[i] = "converged", k, False
            else:
                opts[i].step()
                scheds[i].step(lj)
                if opts[i].param_groups[0]["lr"] <= lr_stop:
                    outcomes[i], steps[i], active[i] = "stalled", k + 1, False
            opts[i].zero_grad(set_to_none=True)
    x = torch.stack([p.detach() for p in params])
    # a stopped run's residual is that of its final x: re-measured for the ones that stepped
    # after their last measurement
    moved = [i for i in range(S) if outcomes[i] != "converged"]
    if moved:
        with torch.inference_mode():
            r = torch.linalg.vector_norm(embedding_map(lm, x[moved], n) - x[moved], dim=-1)
        for j, i in enumerate(moved):
            residuals[i] = float(r[j])
    return x, outcomes, steps, residuals, histories


def _dedup(
    lm: nn.Module,
    tok: Any,
    xs: torch.Tensor,
    outcomes: list[str],
    steps: list[int],
    residuals: list[float],
    seed: int,
    dedup: float,
    top_k: int,
    n: int,
) -> list[EmbeddingFixedPoint]:
    reps: list[int] = []
    members: list[list[int]] = []
    for i, o in enumerate(outcomes):
        if o != "converged":
            continue
        for c, r in enumerate(reps):
            if float(torch.linalg.vector_norm(xs[i] - xs[r])) < dedup:
                members[c].append(i)
                break
        else:
            reps.append(i)
            members.append([i])
    points = []
    E = embedding_matrix(lm)
    for r, group in zip(reps, members, strict=True):
        with torch.inference_mode():
            x = xs[r]
            embeds = x[None, None, :].expand(1, n, x.shape[0])
            probs = torch.softmax(logits_last(lm, embeds)[0].to(E.dtype), dim=-1)
            alone = float(torch.linalg.vector_norm(probs @ E - x))
            top = probs.topk(min(top_k, probs.shape[0]))
            ids = [int(t) for t in top.indices]
            weights = [float(p) for p in top.values]
        points.append(
            EmbeddingFixedPoint(
                x=xs[r].detach().clone(),  # outside inference mode: an ordinary tensor
                residual=residuals[r],
                steps=steps[r],
                seeds=[seed + i for i in group],
                top_tokens=ids,
                top_probabilities=weights,
                top_texts=[decode(tok, t) for t in ids],
                residual_alone=alone,
            )
        )
    return points


def _assess(
    lm: nn.Module,
    p: EmbeddingFixedPoint,
    n: int,
    rollout_steps: int,
    stable_tol: float,
    spectral: bool,
    allow_low_precision: bool,
) -> EmbeddingFixedPoint:
    rollout = (
        rollout_stability(
            lm, p.x, rollout_steps, stable_tol=stable_tol, allow_low_precision=allow_low_precision
        )
        if rollout_steps
        else None
    )
    rho = None
    if spectral:
        from .._spectral import spectral_radius
        from .._system import LoopedSystem

        system = LoopedSystem.from_causal_lm(lm, n=n, allow_low_precision=allow_low_precision)
        est = spectral_radius(system, p.x[None], throw=False)
        rho = float(est.values[0]) if est.all_converged else None
    return replace(p, rollout=rollout, spectral_radius=rho)


# ================================================================== uniform sequences (C7)
@dataclass(frozen=True)
class UniformSequenceCheck:
    """Does a uniform sequence ``[x, …, x]`` stay uniform through every layer (claim C7)?

    For each length ``n``, in one forward pass of ``[x, …, x]``: ``hidden`` is the largest
    relative spread across positions of any layer's hidden states,
    ``max_{layer, i} ‖h_i − h_0‖ / ‖h_0‖``, and ``output`` the same spread of the positions'
    outputs ``T_i = softmax(logits_i) @ E``. With RoPE (or no positions) both are rounding;
    with absolute positions they are O(1). ``passed``: both at most ``tol`` at every length (a
    float check, trust CHECKED).

    ``from_single`` is the largest distance of any ``T_i`` from ``T([x])``, the one-position
    output computed by its own forward pass, relative to ``‖T([x])‖``: in exact arithmetic it
    is 0 too, but it also measures how differently the model's kernels round a sequence of
    ``n`` tokens and a single one (about 1e-4 on SmolLM2 in float32 from ``n = 4`` on, while
    the positions of one pass agree to 5e-6). It is reported, not judged: it bounds how well a
    fixed point of the one-position map is one of the length-``n`` map in this dtype.

    Examples
    --------
    >>> import dynamo as dy
    >>> lm = dy.llm.PlantedLM()
    >>> dy.llm.uniform_sequence_check(lm, lm.get_input_embeddings().weight[3]).passed
    True
    """

    lengths: list[int]
    hidden: list[float]
    output: list[float]
    from_single: list[float]
    tol: float
    dtype: str
    trust: Trust = Trust.CHECKED

    @property
    def worst(self) -> float:
        """The largest spread, hidden or output, over all lengths (what ``passed`` judges)."""
        return max(self.hidden + self.output)

    @property
    def passed(self) -> bool:
        """Every deviation at most ``tol``."""
        return self.worst <= self.tol

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "lengths": self.lengths,
            "hidden_deviation": self.hidden,
            "output_deviation": self.output,
            "from_single": self.from_single,
            "worst": self.worst,
            "tol": self.tol,
            "passed": self.passed,
            "dtype": self.dtype,
            "trust": self.trust.value,
        }

    def __str__(self) -> str:
        word = "stays uniform" if self.passed else "does NOT stay uniform"
        return (
            f"uniform sequences at lengths {self.lengths[0]}–{self.lengths[-1]}: {word} within "
            f"{self.tol:g}: positions agree to {max(self.hidden):.2g} in every layer's hidden "
            f"states and to {max(self.output):.2g} in their outputs T (relative); the outputs "
            f"lie within {max(self.from_single):.2g} of T([x]) computed alone ({self.dtype}, "
            "checked)"
        )


def uniform_sequence_check(
    model: Any,
    x: torch.Tensor | int,
    lengths: Sequence[int] = (2, 4, 8, 16, 32, 64),
    *,
    tol: float = 1e-5,
    allow_low_precision: bool = False,
) -> UniformSequenceCheck:
    """Run ``[x, …, x]`` at each length and measure how far its positions drift apart (C7).

    Parameters
    ----------
    model : LanguageModel or torch.nn.Module
    x : torch.Tensor or int
        A point of the embedding space ``(D,)``, or a token id (its embedding row).
    lengths : sequence of int
        Sequence lengths, each >= 1.
    tol : float
        Relative deviation allowed (default 1e-5, for float32).
    allow_low_precision : bool

    Returns
    -------
    UniformSequenceCheck

    Examples
    --------
    >>> import dynamo as dy
    >>> check = dy.llm.uniform_sequence_check(dy.llm.PlantedLM(), 3, lengths=[2, 8])
    >>> check.lengths, check.worst < 1e-12
    ([2, 8], True)
    """
    call = call_form("uniform_sequence_check", ["model", "x"])
    lm, _ = resolve(call, model, allow_low_precision=allow_low_precision)
    check_positive_float(call, "tol", tol)
    E = embedding_matrix(lm)
    if isinstance(x, int) and not isinstance(x, bool):
        if not 0 <= x < E.shape[0]:
            raise InvalidArgumentError(f"{call}: token {x} is outside [0, {E.shape[0]})")
        vec = E[x].detach()
    else:
        vec = _check_vector(call, "x", x, E)
    ns = [check_positive_int(call, "lengths[]", int(v)) for v in lengths]
    if not ns:
        raise InvalidArgumentError(f"{call}: lengths must name at least one length")
    hidden: list[float] = []
    output: list[float] = []
    single: list[float] = []
    tiny = torch.finfo(E.dtype).tiny
    with torch.inference_mode():
        one = embedding_map(lm, vec[None], 1)[0]
        for n in ns:
            embeds = vec[None, None, :].expand(1, n, vec.shape[0])
            out = lm(inputs_embeds=embeds, use_cache=False, output_hidden_states=True)
            worst = 0.0
            for h in out.hidden_states or ():
                h = h[0].to(torch.float64)
                scale = max(float(torch.linalg.vector_norm(h[0])), tiny)
                spread = float(torch.linalg.vector_norm(h - h[0], dim=-1).max()) / scale
                worst = max(worst, spread)
            hidden.append(worst)
            probs = torch.softmax(out.logits[0].to(E.dtype), dim=-1)
            ys = (probs @ E).to(torch.float64)
            spread = float(torch.linalg.vector_norm(ys - ys[0], dim=-1).max())
            output.append(spread / max(float(torch.linalg.vector_norm(ys[0])), tiny))
            ref = one.to(torch.float64)
            dev = float(torch.linalg.vector_norm(ys - ref, dim=-1).max())
            single.append(dev / max(float(torch.linalg.vector_norm(ref)), tiny))
    return UniformSequenceCheck(ns, hidden, output, single, float(tol), _dt(E.dtype))
