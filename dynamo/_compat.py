"""Thin wrappers over torch APIs that need care across versions."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import func

__all__ = ["jvp"]


@functools.cache
def _prime_forward_ad() -> None:
    # torch.func.jvp imports torch._decomp.decompositions_for_jvp on first use, which calls the
    # deprecated torch.jit.script internally (torch 2.13) and warns. The warning is torch's own
    # business, not the caller's: import that module once with exactly this warning silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.script.* is deprecated", category=DeprecationWarning
        )
        import torch._decomp.decompositions_for_jvp  # noqa: F401


def jvp(
    fn: Callable[..., torch.Tensor], primals: tuple[Any, ...], tangents: tuple[Any, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.func.jvp`` without torch's internal deprecation warning on first use."""
    _prime_forward_ad()
    out = func.jvp(fn, primals, tangents)
    return out[0], out[1]
