"""Checkpoints as safetensors files: a model's tensors plus JSON metadata, never unpickled.

A dynamo checkpoint is a plain safetensors file (``safetensors.torch.save_file``): the model's
``state_dict`` tensors, and in the header's metadata one entry ``"dynamo"`` holding JSON (the
architecture spec, the task, the training settings and metrics, the seed). Reading it parses a
JSON header and copies raw tensor bytes: no code runs. Files that are not safetensors (a
``torch.save`` pickle or zip, a truncated download) are refused with a message saying what the
file is and what to do, before any tensor is read.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InvalidArgumentError

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

#: the metadata key under which dynamo keeps its JSON
_KEY = "dynamo"
_FORMAT = "dynamo.checkpoint"
_VERSION = 1
#: a safetensors header larger than this is not a header (the format caps it at 100 MB)
_MAX_HEADER = 100_000_000


class CheckpointError(InvalidArgumentError):
    """A checkpoint that cannot be used: not safetensors, truncated, or not this architecture's.

    The message names the file and, for a mismatch, the tensor.

    >>> import dynamo as dy
    >>> issubclass(dy.CheckpointError, ValueError)
    True
    """


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read from a safetensors file.

    Attributes
    ----------
    path : pathlib.Path
    tensors : dict of str to torch.Tensor
        The stored tensors by name (a ``state_dict``, on the CPU).
    metadata : dict
        dynamo's JSON metadata (empty for a safetensors file written by other tools).

    Examples
    --------
    >>> import tempfile, torch, dynamo as dy
    >>> folder = tempfile.mkdtemp()
    >>> path = dy.save_checkpoint(
    ...     f"{folder}/m.safetensors", torch.nn.Linear(2, 3), metadata={"seed": 4}
    ... )
    >>> ckpt = dy.load_checkpoint(path)
    >>> sorted(ckpt.tensors), ckpt.metadata["seed"]
    (['bias', 'weight'], 4)
    """

    path: Path
    tensors: dict[str, torch.Tensor] = field(repr=False)
    metadata: dict[str, Any]

    def load_into(self, model: nn.Module, *, strict: bool = True) -> nn.Module:
        """Fill ``model`` with these tensors, as :func:`load_checkpoint` with a model does, without
        reading the file again: the first tensor that differs is named and the model is left
        untouched.

        >>> import tempfile, torch, dynamo as dy
        >>> path = dy.save_checkpoint(f"{tempfile.mkdtemp()}/m.safetensors", torch.nn.Linear(2, 2))
        >>> m = dy.load_checkpoint(path).load_into(torch.nn.Linear(2, 2))
        >>> torch.equal(m.weight, dy.load_checkpoint(path).tensors["weight"])
        True
        """
        shapes = {k: tuple(v.shape) for k, v in self.tensors.items()}
        _match(f"Checkpoint({str(self.path)!r}).load_into(model)", self.path, model, shapes, strict)
        _copy_into(model, self.tensors)
        return model

    def describe(self) -> str:
        """What the metadata says the checkpoint holds, in one line.

        >>> import tempfile, torch, dynamo as dy
        >>> path = dy.save_checkpoint(f"{tempfile.mkdtemp()}/m.safetensors", torch.nn.Linear(2, 2))
        >>> dy.load_checkpoint(path).describe()
        '2 tensors, 6 values'
        """
        n = sum(t.numel() for t in self.tensors.values())
        parts = [f"{len(self.tensors)} tensors, {n} values"]
        arch = self.metadata.get("architecture")
        if isinstance(arch, Mapping):
            keys = ("d_model", "n_heads", "n_layers", "recall", "norm")
            parts.append(", ".join(f"{k}={arch[k]}" for k in keys if k in arch))
        if "task" in self.metadata:
            task = self.metadata["task"]
            parts.append(f"task {task.get('name') if isinstance(task, Mapping) else task}")
        if "seed" in self.metadata:
            parts.append(f"seed {self.metadata['seed']}")
        return "; ".join(parts)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | Mapping[str, torch.Tensor],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model's tensors and JSON metadata to a safetensors file, atomically.

    The file is written beside its destination under a temporary name and renamed into place, so
    a failed or interrupted write never leaves a half-written checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist.
    model : torch.nn.Module or mapping of str to torch.Tensor
        A module (its ``state_dict``) or the tensors themselves.
    metadata : mapping, optional
        JSON-serialisable values (the spec, the task, metrics, the seed).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    CheckpointError
        When the folder does not exist or the metadata is not JSON-serialisable.

    Examples
    --------
    >>> import tempfile, torch, dynamo as dy
    >>> path = dy.save_checkpoint(f"{tempfile.mkdtemp()}/lin.safetensors", torch.nn.Linear(2, 2))
    >>> path.name
    'lin.safetensors'
    """
    from safetensors.torch import save_file

    call = f"save_checkpoint({os.fspath(path)!r}, model)"
    dest = Path(path)
    if not dest.parent.is_dir():
        raise CheckpointError(f"{call}: the folder {dest.parent} does not exist; create it first")
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    try:
        text = json.dumps(
            {"format": _FORMAT, "format_version": _VERSION, **dict(metadata or {})},
            allow_nan=False,
            sort_keys=True,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{call}: metadata must be JSON-serialisable ({err})") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        try:
            save_file(tensors, tmp, metadata={_KEY: text})
        except RuntimeError:  # shared storage (tied weights), which safetensors refuses
            raise CheckpointError(
                f"{call}: safetensors refuses tensors that share memory (tied or shared "
                "weights): pass a state dict that holds each shared tensor once"
            ) from None
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from other users
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_file(path: Path, call: str) -> None:
    """Refuse what is not a whole safetensors file, saying what it is, before safetensors
    reads it."""
    if not path.exists():
        raise CheckpointError(f"{call}: {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{call}: {path} is not a file")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as err:
        raise CheckpointError(f"{call}: {path} cannot be read ({err.strerror or err})") from None
    n = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
    header_like = head[8:9] == b"{" and 0 < n <= _MAX_HEADER
    if header_like and 8 + n <= size:
        return  # a safetensors header that fits the file: safetensors checks the rest
    # a header's length can start with 0x80 too, so the magic bytes count only where no
    # safetensors header is there: protocol 2-5 pickles start 0x80 0x02..0x05
    pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if pickled or head[:4] == b"PK\x03\x04":
        kind = "a pickle" if pickled else "a zip archive (torch.save's format)"
        raise CheckpointError(
            f"{call}: {path} is {kind}, not a safetensors file; dynamo never unpickles "
            "(loading a pickle can run arbitrary code). Convert it where you trust it: "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')"
        )
    if header_like:
        raise CheckpointError(
            f"{call}: {path} is truncated: its header announces {n} bytes but the file has "
            f"{size - 8} after the length field; copy it again"
        )
    if size < 10:
        raise CheckpointError(
            f"{call}: {path} has {size} bytes, too few for a safetensors file (truncated?)"
        )
    raise CheckpointError(
        f"{call}: {path} is not a safetensors file (its first bytes are not a safetensors header)"
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module | None = None,
    *,
    strict: bool = True,
) -> Checkpoint:
    """Read a safetensors checkpoint and, given a model, load it into the model.

    Nothing is unpickled: the file's JSON header and raw tensor bytes are all that is read. With
    ``model``, every tensor of the model's ``state_dict`` must be in the file with the same
    shape (and, with ``strict``, the file must hold no other tensor); the first difference is
    named in the error and the model is left untouched. Tensors are cast to the model's dtype
    and device.

    Parameters
    ----------
    path : str or os.PathLike
    model : torch.nn.Module, optional
        Filled in place with the stored tensors.
    strict : bool
        Refuse a file with tensors the model does not have.

    Returns
    -------
    Checkpoint

    Raises
    ------
    CheckpointError
        The file is missing, a pickle or ``torch.save`` archive, truncated or corrupt, or its
        tensors do not match the model's (a missing, unexpected or differently shaped tensor,
        named).

    Examples
    --------
    >>> import tempfile, torch, dynamo as dy
    >>> path = dy.save_checkpoint(f"{tempfile.mkdtemp()}/m.safetensors", torch.nn.Linear(2, 3))
    >>> other = torch.nn.Linear(2, 4)
    >>> try:
    ...     dy.load_checkpoint(path, other)
    ... except dy.CheckpointError as err:
    ...     print("tensor 'weight' has shape (3, 2) in the file but (4, 2)" in str(err))
    True
    """
    from safetensors import SafetensorError, safe_open

    call = f"load_checkpoint({os.fspath(path)!r}" + (", model)" if model is not None else ")")
    p = Path(path)
    _check_file(p, call)
    try:
        with safe_open(os.fspath(p), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            names = list(f.keys())
            if model is not None:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
                _match(call, p, model, shapes, strict)
            tensors = {k: f.get_tensor(k) for k in names}
    except SafetensorError as err:
        raise CheckpointError(f"{call}: {p} is corrupt or truncated ({err})") from None
    except OSError as err:
        raise CheckpointError(f"{call}: {p} cannot be read ({err.strerror or err})") from None
    metadata: dict[str, Any] = {}
    if _KEY in raw:
        try:
            metadata = json.loads(raw[_KEY])
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{call}: {p} has unreadable dynamo metadata ({err})") from None
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{call}: {p} has dynamo metadata that is not a JSON object")
    if model is not None:
        _copy_into(model, tensors)
    return Checkpoint(p, tensors, metadata)


def _copy_into(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy the (matched) tensors into the model's, cast to its dtype and device."""
    with torch.no_grad():
        for k, t in model.state_dict().items():
            t.copy_(tensors[k].to(dtype=t.dtype, device=t.device))


def _match(
    call: str, path: Path, model: nn.Module, shapes: dict[str, tuple[int, ...]], strict: bool
) -> None:
    """Name the first tensor that differs between the file and the model."""
    state = model.state_dict()
    for k, t in state.items():
        if k not in shapes:
            raise CheckpointError(
                f"{call}: {path} lacks tensor {k!r} (shape {tuple(t.shape)}) that the model "
                f"has: it was saved from another architecture ({len(shapes)} tensors in the "
                f"file, {len(state)} in the model)"
            )
        if shapes[k] != tuple(t.shape):
            raise CheckpointError(
                f"{call}: {path}: tensor {k!r} has shape {shapes[k]} in the file but "
                f"{tuple(t.shape)} in the model: the checkpoint was saved from another "
                "architecture"
            )
    extra = sorted(k for k in shapes if k not in state)
    if strict and extra:
        raise CheckpointError(
            f"{call}: {path} holds tensor {extra[0]!r} (shape {shapes[extra[0]]}) that the "
            f"model does not have ({len(extra)} such): it was saved from another architecture"
        )
