"""Thin wrappers over torch APIs that need care across versions."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import func

__all__ = ["differentiating", "jvp", "math_attention"]


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


def _sdpa_switches() -> tuple[tuple[Callable[[], bool], Callable[[bool], None], bool], ...]:
    """(read, write, wanted) for each scaled-dot-product kernel's switch (process-wide, any
    device): the fused kernels off, the math kernel on.

    torch's public ``torch.backends.cuda.{name}_sdp_enabled`` / ``enable_{name}_sdp`` are thin
    wrappers over these ``torch._C`` functions; binding the functions themselves keeps a switch at
    about 0.1 microsecond instead of 0.4. Each falls back to the public wrapper, and a switch this
    torch lacks is skipped.
    """
    switches = []
    for name in ("flash", "mem_efficient", "cudnn", "math"):
        get = getattr(torch._C, f"_get_{name}_sdp_enabled", None)
        put = getattr(torch._C, f"_set_sdp_use_{name}", None)
        if get is None or put is None:
            get = getattr(torch.backends.cuda, f"{name}_sdp_enabled", None)
            put = getattr(torch.backends.cuda, f"enable_{name}_sdp", None)
        if get is not None and put is not None:
            switches.append((get, put, name == "math"))
    return tuple(switches)


_SDPA = _sdpa_switches()
# torch >= 2.2: the switch of nn.MultiheadAttention's and nn.TransformerEncoderLayer's fast path
_MHA = getattr(torch.backends, "mha", None)
_MHA_GET: Callable[[], bool] | None = getattr(_MHA, "get_fastpath_enabled", None)
_MHA_SET: Callable[[bool], None] | None = getattr(_MHA, "set_fastpath_enabled", None)


class math_attention:  # lower case: used like a function, as torch's sdpa_kernel
    """Run attention through differentiable reference kernels for the duration of the block.

    ``torch.nn.functional.scaled_dot_product_attention`` on the CPU picks a fused flash kernel
    whose backward has no derivative and which has no forward-mode rule (CUDA's fused kernels
    likewise), and ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` in eval mode take a
    fused fast path (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) with no
    forward-mode rule either. Inside this block the fused scaled-dot-product kernels are off, so
    the math backend runs (what ``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)`` selects), and
    so is the fast path (``torch.backends.mha.set_fastpath_enabled(False)``): ``jvp``, ``vjp`` of
    ``vjp`` and ``vmap`` then all work. The previous settings are restored on exit. They are
    process-wide torch settings: attention run by another thread meanwhile also takes the math
    path (the same values, to rounding).

    It costs about 2 microseconds to enter and leave (torch's own ``sdpa_kernel`` costs some 30).
    The fused kernels are 1.2 to 2.5 times faster in a plain forward pass, so dynamo enters this
    block only when the forward will be differentiated or vmapped (:func:`differentiating`).

    Examples
    --------
    >>> import torch
    >>> q = torch.randn(1, 2, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> f = torch.nn.functional.scaled_dot_product_attention
    >>> with math_attention():
    ...     out, tangent = jvp(lambda t: f(t, t, t), (q,), (torch.ones_like(q),))
    >>> tangent.shape
    torch.Size([1, 2, 4, 8])
    """

    __slots__ = ("_fast", "_flip")

    def __enter__(self) -> None:
        # the switches to flip now and flip back on exit (those not already as wanted)
        self._flip = [(put, want) for get, put, want in _SDPA if get() != want]
        for put, want in self._flip:
            put(want)
        self._fast = _MHA_GET is not None and _MHA_SET is not None and _MHA_GET()
        if self._fast and _MHA_SET is not None:
            _MHA_SET(False)

    def __exit__(self, *exc: object) -> None:
        for put, want in self._flip:
            put(not want)
        if self._fast and _MHA_SET is not None:
            _MHA_SET(True)


_PEEK = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)


def differentiating(h: torch.Tensor, x: torch.Tensor | None = None) -> bool:
    """Whether a forward pass run now may be differentiated or vmapped.

    True inside any ``torch.func`` transform (``vjp``, ``jvp``, ``vmap``, ``jacrev``,
    ``jacfwd``, ``grad``: the functorch interpreter stack is not empty), or when ``h`` or ``x``
    records an autograd graph (``requires_grad``). About 0.2 microsecond. Where this
    torch has no interpreter stack to look at, it answers True (always the safe kernels).

    Examples
    --------
    >>> import torch
    >>> from torch.func import vmap
    >>> z = torch.ones(2, 3)
    >>> differentiating(z), bool(vmap(lambda t: torch.tensor(differentiating(t)))(z).all())
    (False, True)
    >>> differentiating(z.requires_grad_())
    True
    """
    if _PEEK is None or _PEEK() is not None:  # pragma: no branch - the first only on old torch
        return True
    return h.requires_grad or (x is not None and x.requires_grad)
