"""Argument checks shared by every verb. Each raises before any work starts, with a message that
begins with the call form and names the argument at fault."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

import torch

from .errors import InvalidArgumentError, ShapeError, UnsupportedDtypeError

__all__ = [
    "call_form",
    "check_choice",
    "check_finite_tensor",
    "check_positive_float",
    "check_positive_int",
    "check_solvable_dtype",
]

_COARSE = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"<tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def call_form(name: str, positional: Iterable[str] = (), **shown: Any) -> str:
    """Render ``name(a, b, key=value)`` for the start of an error message.

    >>> call_form("solve", ["system", "h0"], max_steps=0)
    'solve(system, h0, max_steps=0)'
    """
    parts = list(positional) + [f"{k}={_short(v)}" for k, v in shown.items()]
    return f"{name}({', '.join(parts)})"


def check_positive_int(call: str, name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(
            f"{call}: {name} must be an integer >= {minimum}, got {type(value).__name__} "
            f"{_short(value)}"
        )
    if value < minimum:
        raise InvalidArgumentError(f"{call}: {name} must be >= {minimum}, got {value}")
    return value


def check_positive_float(
    call: str, name: str, value: Any, *, upper: float | None = None, upper_inclusive: bool = True
) -> float:
    """Return ``value`` as a float, or raise if it is not finite and > 0 (and <= upper if given)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(
            f"{call}: {name} must be a positive number, got {type(value).__name__} {value!r}"
        )
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise InvalidArgumentError(f"{call}: {name} must be finite and > 0, got {value!r}")
    if upper is not None and (v > upper if upper_inclusive else v >= upper):
        bound = f"<= {upper}" if upper_inclusive else f"< {upper}"
        raise InvalidArgumentError(f"{call}: {name} must be {bound}, got {value!r}")
    return v


def check_choice(call: str, name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise list the valid ones."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(c) for c in options)
        raise InvalidArgumentError(f"{call}: unknown {name} {value!r}; choose one of {listed}")
    return value


def check_finite_tensor(call: str, name: str, value: torch.Tensor) -> None:
    """Raise if ``value`` holds NaN or inf, naming the first offending batch index."""
    if value.is_floating_point() or value.is_complex():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            flat = bad.reshape(bad.shape[0], -1).any(dim=1) if bad.ndim > 0 else bad.reshape(1)
            idx = [int(i) for i in torch.nonzero(flat).flatten()[:5]]
            where = f" (batch indices {idx})" if value.ndim > 0 else ""
            raise InvalidArgumentError(
                f"{call}: {name} contains NaN or inf{where}; pass finite values"
            )


def check_solvable_dtype(call: str, name: str, dtype: torch.dtype) -> None:
    """Refuse dtypes too coarse for fixed-point search (bf16, fp16) and non-float dtypes."""
    if dtype in _COARSE:
        eps = torch.finfo(dtype).eps
        raise UnsupportedDtypeError(
            f"{call}: {name} has dtype {_COARSE[dtype]} (machine epsilon {eps:.1e}), too coarse "
            "to tell a fixed point from a slow drift; convert the system with "
            "system.to(dtype=torch.float32) or torch.float64 (the default for analysis)"
        )
    if not dtype.is_floating_point:
        raise UnsupportedDtypeError(
            f"{call}: {name} has dtype {dtype}; fixed-point search needs float32 or float64"
        )


def check_state_shape(
    call: str, name: str, h: Any, state_shape: tuple[int, ...], *, batched: bool = True
) -> torch.Tensor:
    """Check that ``h`` is a tensor of shape ``(N, *state_shape)`` with N >= 1."""
    if not isinstance(h, torch.Tensor):
        raise InvalidArgumentError(
            f"{call}: {name} must be a torch.Tensor of shape (N, {_dims(state_shape)}), "
            f"got {type(h).__name__}"
        )
    expected_ndim = len(state_shape) + (1 if batched else 0)
    if h.ndim != expected_ndim or tuple(h.shape[h.ndim - len(state_shape) :]) != state_shape:
        want = f"(N, {_dims(state_shape)})" if batched else f"({_dims(state_shape)})"
        hint = ""
        if batched and tuple(h.shape) == state_shape:
            hint = f"; add a batch dimension with {name}.unsqueeze(0)"
        raise ShapeError(
            f"{call}: {name} has shape {tuple(h.shape)} but the system's state shape needs "
            f"{want}{hint}"
        )
    if batched and h.shape[0] < 1:
        raise ShapeError(f"{call}: {name} has an empty batch dimension; pass at least one state")
    return h


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in shape) if shape else ""


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure (CPU or GPU), which no caller should re-label."""
    if isinstance(err, MemoryError):
        return True
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def check_memory(call: str, what: str, nbytes: float, device: torch.device, fix: str) -> None:
    """Refuse up front a request whose working set alone exceeds the device's memory.

    ``nbytes`` is a lower estimate of what the work needs; the device's memory is the physical
    memory of a CPU host (``os.sysconf``; unknown elsewhere, then nothing is refused) or the free
    memory of a CUDA device.
    """
    avail: float | None = None
    if device.type == "cuda" and torch.cuda.is_available():
        avail = float(torch.cuda.mem_get_info(device)[0])
    elif device.type == "cpu":
        try:
            avail = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = None
    if avail is not None and nbytes > avail:
        raise InvalidArgumentError(
            f"{call}: {what} needs at least {nbytes / 2**30:.3g} GiB, more than the "
            f"{avail / 2**30:.3g} GiB this {device.type} has; {fix}"
        )


#: The largest torch generator seed dynamo accepts (torch wraps others silently).
MAX_SEED = 2**63 - 1


def check_seed(call: str, name: str, value: Any) -> int:
    """A torch generator seed: an integer in ``[0, 2**63 - 1]``, the range of a spec's seeds and
    of the command line's ``--seed``.

    Negative or larger values would be wrapped by ``torch.Generator.manual_seed`` into another
    seed silently; refused instead, in the words the spec and the command line use.

    >>> from dynamo._validate import check_seed
    >>> from dynamo.errors import InvalidArgumentError
    >>> try:
    ...     check_seed("f()", "seed", -1)
    ... except InvalidArgumentError as err:
    ...     print(str(err).split(" (")[0])
    f(): seed=-1: Input should be greater than or equal to 0
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(
            f"{call}: {name}={value!r} must be an integer (a torch generator seed)"
        )
    if not 0 <= value <= MAX_SEED:
        bound = "greater than or equal to 0" if value < 0 else f"less than or equal to {MAX_SEED}"
        raise InvalidArgumentError(
            f"{call}: {name}={value!r}: Input should be {bound} (a seed is a non-negative 64-bit "
            "integer)"
        )
    return value
