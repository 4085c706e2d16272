"""``dynamo llm``: seed 004's fixed-point protocol on a local language model, as JSON and
Markdown."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Sequence
from typing import Any


def run(
    lm: Any,
    *,
    tokens: bool,
    embeddings: bool,
    uniform: bool,
    methods: Sequence[str],
    n_seeds: int,
    seed: int,
    tol: float,
    dedup: float,
    max_steps: int,
    batch_size: int,
    rollout_steps: int,
    lengths: Sequence[int],
    prefix: Sequence[int] | str,
    allow_low_precision: bool,
    progress: bool,
    echo: Callable[[str], None],
    phase: Callable[[str], None],
) -> dict[str, Any]:
    """Run the chosen parts of the protocol, echo each result, and return the JSON payload."""
    import torch

    import dynamo as dy

    payload: dict[str, Any] = {
        "model": {
            "source": lm.source,
            "class": type(lm.model).__name__,
            "vocab_size": lm.vocab_size,
            "hidden_size": lm.hidden_size,
            "dtype": str(lm.dtype).replace("torch.", ""),
            "stored_dtype": lm.stored_dtype,
        },
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
        },
    }
    echo(f"dynamo llm: {lm}")
    if prefix == "bos":
        bos = getattr(lm.tokenizer, "bos_token_id", None)
        if bos is None:
            bos = getattr(getattr(lm.model, "config", None), "bos_token_id", None)
        if bos is None:
            raise dy.errors.InvalidArgumentError(
                "llm --prefix bos: the model names no BOS token; give token ids instead"
            )
        prefix = [int(bos)]
    prefix_ids = [int(v) for v in prefix]
    if tokens:
        phase("scanning the vocabulary for token fixed points")
        found = dy.llm.token_fixed_points(
            lm,
            batch_size=batch_size,
            prefix=prefix_ids,
            progress=progress,
            allow_low_precision=allow_low_precision,
        )
        echo("")
        echo(str(found))
        payload["tokens"] = found.to_dict()
    searches = []
    if embeddings:
        for method in methods:
            phase(f"searching embedding fixed points by {method}")
            search = dy.llm.embedding_fixed_points(
                lm,
                n_seeds,
                method=method,  # type: ignore[arg-type]
                tol=tol,
                dedup=dedup,
                max_steps=max_steps,
                seed=seed,
                rollout_steps=rollout_steps,
                spectral=True,
                progress=progress,
                allow_low_precision=allow_low_precision,
            )
            echo("")
            echo(str(search))
            searches.append(search)
        payload["embeddings"] = [s.to_dict() for s in searches]
    if uniform:
        phase("checking uniform sequences (C7)")
        probes: list[tuple[str, Any]] = []
        for s in searches:
            for i, p in enumerate(s.points):
                probes.append((f"{s.method} point {i}", p.x))
        if not probes:  # no continuous fixed point: the claim is about any x; use token rows
            first = payload.get("tokens", {}).get("fixed_points") or []
            t = int(first[0]["token"]) if first else 0
            probes.append((f"embedding of token {t}", t))
        checks = []
        echo("")
        for label, x in probes:
            check = dy.llm.uniform_sequence_check(
                lm, x, lengths, allow_low_precision=allow_low_precision
            )
            echo(f"{label}: {check}")
            checks.append({"x": label, **check.to_dict()})
        payload["uniform"] = checks
    return payload


def _cell(text: Any) -> str:
    s = "" if text is None else str(text)
    return s.replace("|", "\\|").replace("\n", "\\n")


def _num(v: Any, fmt: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, fmt)


def markdown(payload: dict[str, Any], *, seconds: float) -> str:
    """The protocol's tables, in the layout of seed 004."""
    m = payload["model"]
    out = [
        f"# Fixed points of {m['class']} ({m['source']})",
        "",
        f"Vocabulary {m['vocab_size']}, embedding width {m['hidden_size']}, computed in "
        f"{m['dtype']} (weights stored as {m['stored_dtype']}); torch "
        f"{payload['environment']['torch']}, {payload['environment']['threads']} thread(s); "
        f"{seconds:.0f} s in all.",
        "",
    ]
    tok = payload.get("tokens")
    if tok is not None:
        seq = "[t]" if not tok["prefix"] else f"[{', '.join(map(str, tok['prefix']))}, t]"
        out += [
            "## Token fixed points (checked)",
            "",
            f"{tok['count']} of {tok['n_scanned']} tokens satisfy argmax logits({seq}) = t "
            f"(batch {tok['batch_size']}, {tok['seconds']:.1f} s; {tok['n_fragile']} with a "
            f"top-two margin below {tok['fragile_margin']:g}; {tok['n_successors']} distinct "
            "greedy successors over the tokens scanned).",
            "",
            "| rank | token | text | probability | margin |",
            "|---:|---:|---|---:|---:|",
        ]
        for i, r in enumerate(tok["fixed_points"], 1):
            out.append(
                f"| {i} | {r['token']} | `{_cell(r['text'])}` | {r['probability']:.4g} | "
                f"{r['margin']:.3g} |"
            )
        out.append("")
    for s in payload.get("embeddings", []):
        fails = ", ".join(f"{v} {k}" for k, v in s["failures"].items()) or "none"
        found = (
            f"{s['count']} distinct point(s) from {s['n_converged']} of {s['n_seeds']} seeds"
            if s["n_converged"]
            else f"No point: none of the {s['n_seeds']} seeds"
        )
        out += [
            f"## Embedding fixed points by {s['method']} (estimated count)",
            "",
            f"{found} that reached ‖T(x) − x‖ < {s['tol']:g} (dedup {s['dedup']:g}, at most "
            f"{s['max_steps']} steps; no point from: {fails}; {s['seconds']:.0f} s).",
            "",
        ]
        if s["points"]:
            out += [
                "| point | residual (in batch / alone) | steps | seeds | top-5 mixture | "
                "ρ(∂T) (est.) | rollout max dist. | rollout |",
                "|---:|---:|---:|---|---|---:|---:|---|",
            ]
            for i, p in enumerate(s["points"]):
                mix = ", ".join(
                    f"`{_cell(t['text'] if t['text'] is not None else '#' + str(t['token']))}` "
                    f"{100 * t['probability']:.1f}%"
                    for t in p["mixture"]
                )
                ro = p["rollout"]
                stable = "n/a" if ro is None else ("stable" if ro["stable"] else "unstable")
                dist = "n/a" if ro is None else _num(ro["max_distance"], ".2e")
                out.append(
                    f"| {i} | {p['residual']:.2e} / {_num(p['residual_alone'], '.2e')} | "
                    f"{p['steps']} | "
                    f"{', '.join(map(str, p['seeds']))} | {mix} | "
                    f"{_num(p['spectral_radius'])} | {dist} | {stable} |"
                )
            out.append("")
    uni = payload.get("uniform")
    if uni:
        out += [
            "## Uniform sequences (claim C7, checked)",
            "",
            "Largest relative spread across the positions of [x, …, x], in one forward pass, "
            "of any layer's hidden states / of the outputs T; and the largest distance of an "
            "output from T([x]) computed alone (kernel rounding; reported, not judged).",
            "",
            "| x | " + " | ".join(f"n = {n}" for n in uni[0]["lengths"]) + " | passed |",
            "|---|" + "---:|" * len(uni[0]["lengths"]) + "---|",
        ]
        for u in uni:
            cells = [
                f"{h:.1e} / {o:.1e}; {f:.1e}"
                for h, o, f in zip(
                    u["hidden_deviation"], u["output_deviation"], u["from_single"], strict=True
                )
            ]
            out.append(f"| {u['x']} | " + " | ".join(cells) + f" | {u['passed']} |")
        out.append("")
    return "\n".join(out)
