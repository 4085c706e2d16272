"""The per-layer Lipschitz rules behind ``dynamo.lipschitz_upper_bound``, as checked claims.

Each certified number dynamo reports is a product of these factors; each rule's derivation is
checked here by sympy, and its numeric counterpart compares dynamo's rule with local Jacobian
norms sampled (and climbed by gradient ascent) inside the rule's domain.
"""

from __future__ import annotations

from typing import Any

import sympy as sp
import torch
from torch import nn

import dynamo as dy
from dynamo.kernel import lipschitz_formulas as formulas

from ._core import CheckResult, Variant, claim, code_scaled
from ._lemmas import LIP_COMPOSITION, Lip, compose
from ._logic import Derivation

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sound(
    name: str,
    module: nn.Module,
    domain: dy.Domain,
    shape: tuple[int, ...],
    *,
    seed: int = 0,
    tight: bool = False,
) -> CheckResult:
    system = dy.LoopedSystem.from_module(module.double(), state_shape=shape)
    up = dy.lipschitz_upper_bound(module, domain).value
    states = domain.sample(system, 16, seed=seed)
    low = dy.lipschitz_lower_bound(
        system, states, method="ascent", steps=15, domain=domain, seed=seed
    ).value
    ok = low <= up * (1 + 1e-12) and (not tight or abs(low - up) <= 1e-8 * up)
    return CheckResult(
        name,
        ok,
        f"certified {up:.6g} >= largest local ‖J‖₂ found "
        f"{low:.6g}" + (" (attained)" if tight else ""),
        {"upper": up, "lower": low},
    )


def _check_r8(seed: int = 0) -> CheckResult:
    torch.manual_seed(seed)
    block = nn.Sequential(nn.Linear(6, 9), nn.GELU(), nn.Linear(9, 6), nn.Tanh())
    return _sound("R8", block, dy.Domain(), (6,), seed=seed)


# ---------------------------------------------------------------------- R8 composition
_f, _g = sp.symbols("f g")
_Lf, _Lg = sp.symbols("L_f L_g", nonnegative=True)


def _r8_goal() -> tuple[Any, ...]:
    # the statement's bound is what dynamo's code computes for a composition
    return (sp.Le(Lip(compose(_g, _f)), formulas.compose(_Lf, _Lg)),)


@claim(
    "R8",
    "Rule: compositions multiply constants; intervals travel with them",
    r"$\mathrm{Lip}(g \circ f) \le \mathrm{Lip}(g)\,\mathrm{Lip}(f)$, provided each rule's domain "
    r"contains the image of the previous layer: dynamo propagates a sound interval for every "
    r"token's norm from layer to layer.",
    ("each layer's rule holds on the previous layer's image",),
    ("chain rule",),
    _check_r8,
    goal=_r8_goal,
    assumptions=(sp.Le(Lip(_f), _Lf), sp.Le(Lip(_g), _Lg)),
    variants=(
        Variant(
            "the bound L_f + L_g of a sum instead of the product",
            goal=(sp.Le(Lip(compose(_g, _f)), _Lf + _Lg),),
        ),
        Variant("without the hypothesis on g", drop=(1,)),
        Variant("dynamo's composition divided by 100", patch=lambda: code_scaled("compose", 0.01)),
    ),
)
def r8(d: Derivation) -> None:
    fact = d.lemma(
        LIP_COMPOSITION, "g ∘ f is Lipschitz with the product", f=_f, g=_g, L_f=_Lf, L_g=_Lg
    )
    d.weaken(fact, formulas.compose(_Lf, _Lg), "dynamo's composition (lipschitz_formulas.compose)")
