"""Trained weights as draws: resolving and checking a spec's checkpoints before any work."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import dynamo as dy

from ._spec import Spec, SpecError

__all__ = ["CheckpointDraw", "resolve_checkpoints"]


@dataclass(frozen=True)
class CheckpointDraw:
    """One checkpoint as a draw: its file, the seed its weights were initialised from (from the
    metadata; the position in the list when the metadata names none), its metadata, and the
    checkpoint as read (so that its tensors are read from the file once).

    >>> from pathlib import Path
    >>> from verify._checkpoints import CheckpointDraw
    >>> CheckpointDraw(Path("a.safetensors"), 3, {}).label
    'a.safetensors'
    """

    path: Path
    seed: int
    metadata: dict[str, Any]
    checkpoint: dy.Checkpoint | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """The file's name, as reports show it."""
        return self.path.name


def _listed(spec: Spec, given: Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    if given is not None:
        return [Path(p) for p in given]
    raw = spec.checkpoint
    if raw is None:
        return []
    names = [raw] if isinstance(raw, str) else list(raw)
    base = spec._origin.spec_file.parent if spec._origin.spec_file is not None else Path.cwd()
    return [p if (p := Path(n)).is_absolute() else base / p for n in names]


def _architecture_differs(spec: Spec, meta: dict[str, Any]) -> str | None:
    stored = meta.get("architecture")
    if not isinstance(stored, dict):
        return None
    # every key both name: some differences leave the tensors' names and shapes alone (norm
    # placement, causal masks, ε), so the same tensors would mean another function
    mine = spec.architecture.model_dump(mode="json")
    for key in mine:
        if key in stored and stored[key] != mine[key]:
            return (
                f"it was trained with architecture.{key} = {stored[key]!r} but the spec says "
                f"{mine[key]!r}"
            )
    return None


def resolve_checkpoints(
    spec: Spec,
    given: Sequence[str | os.PathLike[str]] | None,
    call: str,
    build: Any,
) -> list[CheckpointDraw]:
    """The checkpoints a certification uses as its draws, each read and matched against the
    spec's architecture before any work: ``given`` (``--checkpoint``) or the spec's
    ``checkpoint`` key (relative to the spec file); empty when there are none.

    A file that is missing, a pickle, truncated, from another architecture (a tensor missing,
    extra or of another shape, named; or metadata that names another recall, norm, width, ...),
    or two entries naming one file: a :class:`SpecError` saying which and what to do.

    Parameters
    ----------
    spec : Spec
    given : sequence of str or os.PathLike, optional
        Overrides the spec's key.
    call : str
        The call form errors begin with.
    build : callable
        ``build(seed) -> nn.Module``: the spec's block (to match the tensors against).

    Returns
    -------
    list of CheckpointDraw

    Examples
    --------
    >>> import tempfile, verify, dynamo as dy
    >>> from verify._checkpoints import resolve_checkpoints
    >>> spec = verify.Spec(architecture=verify.Architecture(d_model=8, n_heads=2))
    >>> path = f"{tempfile.mkdtemp()}/m.safetensors"
    >>> _ = dy.save_checkpoint(path, verify.build_model(spec, 0), metadata={"seed": 5})
    >>> build = lambda s: verify.build_model(spec, s)
    >>> [d.seed for d in resolve_checkpoints(spec, [path], "certify(spec)", build)]
    [5]
    """
    paths = _listed(spec, given)
    if not paths:
        return []
    seen: dict[Path, int] = {}
    digests: dict[str, Path] = {}
    seeds: dict[int, Path] = {}
    out: list[CheckpointDraw] = []
    for i, p in enumerate(paths):
        key = p.resolve()
        if key in seen:
            raise SpecError(
                f"{call}: checkpoint {p} is listed twice (entries {seen[key] + 1} and {i + 1}): "
                "the same weights are one draw, not more evidence"
            )
        seen[key] = i
        try:
            ckpt = dy.load_checkpoint(p)  # header and tensors: nothing unpickled
        except dy.CheckpointError as err:
            raise SpecError(f"{call}: checkpoint: {str(err).split(': ', 1)[-1]}") from None
        meta = ckpt.metadata
        digest = _digest(ckpt.tensors)
        if digest in digests:
            raise SpecError(
                f"{call}: checkpoints {digests[digest]} and {p} hold the same weights: one "
                "trained block is one draw, not more evidence"
            )
        digests[digest] = p
        if meta.get("kind") == "training state":
            raise SpecError(
                f"{call}: checkpoint {p} is a training state that dynamo train resumes from, "
                "not a finished checkpoint: certify the .safetensors file dynamo train wrote "
                "beside it"
            )
        why = _architecture_differs(spec, meta)
        if why:
            raise SpecError(f"{call}: checkpoint {p} does not match the spec: {why}")
        task = meta.get("task")
        if (
            spec.task is not None
            and isinstance(task, dict)
            and task.get("name") not in (None, spec.task.name)
        ):
            raise SpecError(
                f"{call}: checkpoint {p} was trained on task {task.get('name')!r}, but the "
                f"spec's task is {spec.task.name!r}: its readout answers another question"
            )
        seed = meta.get("seed", i)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**63 - 1:
            raise SpecError(
                f"{call}: checkpoint {p} names seed {seed!r} in its metadata, which is not a "
                "seed (an integer in [0, 2**63 - 1])"
            )
        if seed in seeds:
            raise SpecError(
                f"{call}: checkpoints {seeds[seed]} and {p} both come from initialisation seed "
                f"{seed}: a certificate's draws are told apart by seed; certify them one at a "
                "time"
            )
        seeds[seed] = p
        model: nn.Module = build(seed)
        try:
            ckpt.load_into(model)
        except dy.CheckpointError as err:
            raise SpecError(f"{call}: checkpoint: {str(err).split(': ', 1)[-1]}") from None
        out.append(CheckpointDraw(p, seed, meta, ckpt))
    return out


def load_weights(model: nn.Module, draw: CheckpointDraw) -> nn.Module:
    """Fill ``model`` with the checkpoint's tensors (already checked by
    :func:`resolve_checkpoints`).

    >>> import tempfile, torch, dynamo as dy
    >>> from verify._checkpoints import CheckpointDraw, load_weights
    >>> path = dy.save_checkpoint(f"{tempfile.mkdtemp()}/m.safetensors", torch.nn.Linear(2, 2))
    >>> m = load_weights(torch.nn.Linear(2, 2), CheckpointDraw(path, 0, {}))
    >>> torch.equal(m.weight, dy.load_checkpoint(path).tensors["weight"])
    True
    """
    if draw.checkpoint is not None:  # read and checked once already
        return draw.checkpoint.load_into(model)
    dy.load_checkpoint(draw.path, model)
    return model


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of the tensors' names, shapes, dtypes and bytes: equal weights, equal digest."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
