"""Trained looped transformers: building one from its checkpoint, and the small checkpoints
shipped with dynamo.

The shipped checkpoints are the first seed of each variant of the docs' recall ×
normalization table (``docs/scripts/trained_table.py``): one-layer ``LoopedTransformer`` blocks,
``d_model = 32``, four heads, causal, RoPE, trained on prefix sums (parity) of length 16 with
the deep-thinking recipe. Each file is a safetensors checkpoint (about 70 kB) whose metadata holds
the spec it was trained from, the task, the training settings and its metrics.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .._checkpoint import CheckpointError, load_checkpoint
from ..errors import InvalidArgumentError
from ._transformer import LoopedTransformer

__all__ = ["from_checkpoint", "shipped", "shipped_checkpoint"]

#: architecture keys of a checkpoint's metadata that are LoopedTransformer arguments
_ARGS = (
    "d_model",
    "n_heads",
    "n_layers",
    "d_ff",
    "recall",
    "norm",
    "norm_type",
    "pos",
    "causal",
    "recall_mode",
    "norm_eps",
    "vocab_size",
    "n_outputs",
    "init_gain",
    "branch_gain",
)


def from_checkpoint(
    path: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
) -> LoopedTransformer:
    """The :class:`LoopedTransformer` a checkpoint holds, built from its metadata's
    architecture and filled with its tensors (in eval mode).

    Parameters
    ----------
    path : str or os.PathLike
        A safetensors checkpoint written by ``dynamo train`` (or :func:`dynamo.save_checkpoint`
        with an ``architecture`` entry in its metadata).
    dtype : torch.dtype

    Returns
    -------
    LoopedTransformer

    Raises
    ------
    CheckpointError
        The file is not a usable checkpoint, or its metadata does not describe a reference
        transformer (a factory's block: build it with the factory, then
        :func:`dynamo.load_checkpoint`).

    Examples
    --------
    >>> import dynamo as dy
    >>> model = dy.models.from_checkpoint(dy.models.shipped_checkpoint("outer-outer"))
    >>> model.recall, model.norm, model.config["n_outputs"]
    ('outer', 'outer', 2)
    """
    call = f"from_checkpoint({os.fspath(path)!r})"
    meta = load_checkpoint(path).metadata
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise CheckpointError(
            f"{call}: the checkpoint's metadata has no architecture: build the block yourself "
            "and fill it with dynamo.load_checkpoint(path, block)"
        )
    if arch.get("kind", "looped_transformer") != "looped_transformer":
        raise CheckpointError(
            f"{call}: the checkpoint holds a factory's block ({arch.get('factory')!r}), not a "
            "LoopedTransformer: build it with the factory, then dynamo.load_checkpoint(path, "
            "block)"
        )
    kw: dict[str, Any] = {k: arch[k] for k in _ARGS if arch.get(k) is not None}
    try:
        model = LoopedTransformer(**kw, dtype=dtype)
    except (InvalidArgumentError, TypeError) as err:
        raise CheckpointError(
            f"{call}: the checkpoint's architecture metadata does not build a "
            f"LoopedTransformer ({err})"
        ) from None
    load_checkpoint(path, model)
    return model.eval()


def _folder() -> Path:
    return Path(str(resources.files("dynamo.models").joinpath("trained")))


def shipped() -> list[str]:
    """Names of the checkpoints shipped with dynamo (``<recall>-<norm>``).

    >>> import dynamo as dy
    >>> "outer-outer" in dy.models.shipped(), len(dy.models.shipped())
    (True, 12)
    """
    return sorted(p.name.removesuffix(".safetensors") for p in _folder().glob("*.safetensors"))


def shipped_checkpoint(name: str) -> Path:
    """The file of a shipped checkpoint.

    Parameters
    ----------
    name : str
        ``"<recall>-<norm>"``, one of :func:`shipped`.

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import dynamo as dy
    >>> dy.models.shipped_checkpoint("none-pre").name
    'none-pre.safetensors'
    """
    path = _folder() / f"{name}.safetensors"
    if not isinstance(name, str) or not path.is_file():
        known = ", ".join(repr(n) for n in shipped())
        raise InvalidArgumentError(
            f"shipped_checkpoint({name!r}): no such shipped checkpoint; shipped: {known}"
        )
    return path
