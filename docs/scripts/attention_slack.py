"""Where the attention rule (R7) loses: its terms against attacks on one layer and on one head.

For the attention layer of the reference transformer of the tightness table (``d = 16``, four
heads, ``T = 8``, seed 0, RoPE), on tokens of norm exactly ``R``, it prints the certified factor
of R7 (``dynamo.kernel.attention_rule``) and the largest ``‖J‖₂`` that Adam ascent on the dense
Jacobian finds (random starts, and for one head also starts at the two-token tie that the
derivation's worst case needs: keys ``±R u`` and queries orthogonal to ``M u``), for the whole
layer (R7 alone, and the rule, which also has R14: heads read through ``W_O,h V_h``) and for
each head alone (``W_O`` replaced by the head's output selection). Each head's
bound is split into R7's three terms: the value part ``√T v``, the diagonal (query) part
``v m R²`` and the off-diagonal (key) part ``√T v m R²``; R16's block form
``v m R² + √(T (v + v m R²)(v + 2 v m R²)² / (8 v m R²))`` bounds the value and key parts
together. "The rule" is dynamo's (R7, R14 and R16, the smallest).

Run ``python docs/scripts/attention_slack.py`` (about two minutes on one core);
``--layer-only --layer-starts 15 --layer-steps 250`` attacks the layer alone, longer.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch

import dynamo as dy
from dynamo.kernel import attention_rule
from dynamo.kernel import lipschitz_formulas as formulas

F64 = torch.float64


def _sigma(a: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(a, ord=2))


def attack(
    fn, shape: tuple[int, int], radius: float, starts: list[torch.Tensor], steps: int
) -> float:
    """The largest exact ``‖J‖₂`` of ``fn`` reached by Adam ascent from ``starts`` (tokens kept
    at norm ``radius``)."""
    best = 0.0
    n = shape[0] * shape[1]
    for x0 in starts:
        x = (x0 / x0.norm(dim=-1, keepdim=True) * radius).clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.02 * radius)
        for _ in range(steps):
            jac = torch.func.jacfwd(fn)(x).reshape(n, n)  # differentiable in x
            s = torch.linalg.matrix_norm(jac, ord=2)
            best = max(best, float(s.detach()))
            opt.zero_grad()
            (-s).backward()
            opt.step()
            with torch.no_grad():
                x.copy_(x / x.norm(dim=-1, keepdim=True) * radius)
    return best


def tie_starts(att, head: int, radius: float, n_tokens: int, k: int, gen: torch.Generator):
    """Keys ``±R u`` and queries ``R w`` with ``wᵀ M u = 0`` (equal scores), ``u`` random."""
    dh = att.d_head
    rows = slice(head * dh, (head + 1) * dh)
    M = att.q.weight[rows].T @ att.k.weight[rows] / math.sqrt(dh)
    d = M.shape[0]
    out = []
    for _ in range(k):
        u = torch.randn(d, generator=gen, dtype=F64)
        u = u / u.norm()
        mu = M @ u
        w = torch.randn(d, generator=gen, dtype=F64)
        w = w - (w @ mu) / (mu @ mu) * mu
        w = w / w.norm()
        q = [
            radius * w + 0.1 * torch.randn(d, generator=gen, dtype=F64) for _ in range(n_tokens - 2)
        ]
        out.append(torch.stack([radius * u, -radius * u, *q]))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--radii", type=float, nargs="+", default=[4.0, 8.0])
    ap.add_argument("--starts", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--layer-starts", type=int, help="starts of the layer's attack (--starts)")
    ap.add_argument("--layer-steps", type=int, help="steps of the layer's attack (--steps)")
    ap.add_argument("--layer-only", action="store_true", help="skip the heads")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    d, n_heads, T = 16, 4, 8
    model = dy.models.LoopedTransformer(
        d_model=d, n_heads=n_heads, n_layers=1, recall="none", norm="pre", seed=0
    ).double()
    att = model.layers[0].attn.branch.requires_grad_(False)
    dh = att.d_head
    heads = []  # each head alone, before W_O (copied before any transform touches the layer)
    for h in range(n_heads):
        one = copy.deepcopy(att)
        sel = torch.zeros(d, dtype=F64)
        sel[h * dh : (h + 1) * dh] = 1.0
        one.o.weight.copy_(torch.diag(sel))
        heads.append(one)
    gen = torch.Generator().manual_seed(0)
    print(
        "| R | part | R7 bound | value √T v | query v m R² | key √T v m R² | R16 blocks | attack "
        "| ratio R7 | ratio R16 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for R in args.radii:
        lip, _, _ = attention_rule(att, T, R)
        n_layer = args.layer_starts or args.starts
        starts = [torch.randn(T, d, generator=gen, dtype=F64) for _ in range(n_layer)]
        found = attack(lambda x: att(x[None])[0], (T, d), R, starts, args.layer_steps or args.steps)
        r7 = _sigma(att.o.weight) * math.sqrt(
            sum(
                (_sigma(att.v.weight[r]) * (math.sqrt(T) + (1 + math.sqrt(T)) * R**2 * m)) ** 2
                for r, m in (
                    (
                        slice(h * dh, (h + 1) * dh),
                        _sigma(att.q.weight[h * dh : (h + 1) * dh])
                        * _sigma(att.k.weight[h * dh : (h + 1) * dh])
                        / math.sqrt(dh),
                    )
                    for h in range(n_heads)
                )
            )
        )
        print(f"| {R:g} | layer, R7 alone | {r7:.3g} | | | | | {found:.3g} | {r7 / found:.2g} | |")
        print(
            f"| {R:g} | layer, the rule | | | | | {lip:.3g} | {found:.3g} | | {lip / found:.2g} |"
        )
        for h in range(0 if args.layer_only else n_heads):
            one = heads[h]
            rows = slice(h * dh, (h + 1) * dh)
            v = _sigma(att.v.weight[rows])
            m = _sigma(att.q.weight[rows]) * _sigma(att.k.weight[rows]) / math.sqrt(dh)  # RoPE
            terms = (math.sqrt(T) * v, v * m * R**2, math.sqrt(T) * v * m * R**2)
            bound = sum(terms)
            blocks = formulas.attention_head_blocks(terms[0] / math.sqrt(T), terms[1], terms[1], T)
            hs = [torch.randn(T, d, generator=gen, dtype=F64) for _ in range(args.starts)]
            hs += tie_starts(att, h, R, T, args.starts, gen)
            got = attack(lambda x, one=one: one(x[None])[0], (T, d), R, hs, args.steps)
            print(
                f"| {R:g} | head {h} | {bound:.3g} | {terms[0]:.3g} | {terms[1]:.3g} | "
                f"{terms[2]:.3g} | {blocks:.3g} | {got:.3g} | {bound / got:.2g} | "
                f"{blocks / got:.2g} |"
            )


if __name__ == "__main__":
    main()
