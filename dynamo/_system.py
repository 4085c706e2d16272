"""The object every analysis takes: a looped map ``h -> f(h, x)`` (driven) or ``h -> f(h)``."""

from __future__ import annotations

import copy
import inspect
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ._compat import differentiating, math_attention
from ._types import StartKind
from ._validate import (
    _short,
    call_form,
    check_choice,
    check_finite_tensor,
    check_positive_float,
    check_positive_int,
    check_state_shape,
)
from .errors import InvalidArgumentError, NonDeterministicMapError, ShapeError
from .protocols import DeclaresDriven, DeclaresStateShape, LayerMaps, StateShapeFor, offers

__all__ = ["LoopedSystem", "Trajectory"]

StepFn = Callable[..., torch.Tensor]
LayerFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]

_STOCHASTIC = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_BATCH_COUPLED = (nn.modules.batchnorm._BatchNorm,)


@dataclass(frozen=True)
class Trajectory:
    """States and residuals of plain iteration ``h_{t+1} = f(h_t, x)`` from a batch of starts.

    Attributes
    ----------
    states : torch.Tensor or None
        ``(n_steps + 1, N, *state_shape)``: ``h_0 .. h_n``; None when ``record=False``.
    final : torch.Tensor
        ``(N, *state_shape)``: the last state ``h_n``.
    residuals : torch.Tensor
        ``(n_steps, N)``: ``‖f(h_t) − h_t‖₂ = ‖h_{t+1} − h_t‖₂`` over the flattened state.
    relative_residuals : torch.Tensor
        ``(n_steps, N)``: ``residuals / ‖h_t‖₂`` (inf where ``h_t = 0``).

    Examples
    --------
    :meth:`LoopedSystem.iterate` returns one:

    >>> import torch, dynamo as dy
    >>> system = dy.LoopedSystem.from_module(dy.models.Logistic(r=2.5))
    >>> traj = system.iterate(torch.full((1, 1), 0.5, dtype=torch.float64), n_steps=3)
    >>> traj.n_steps, traj.states.flatten().tolist()
    (3, [0.5, 0.625, 0.5859375, 0.606536865234375])
    >>> traj.residuals.flatten().tolist()
    [0.125, 0.0390625, 0.020599365234375]
    """

    states: torch.Tensor | None
    final: torch.Tensor
    residuals: torch.Tensor
    relative_residuals: torch.Tensor

    @property
    def n_steps(self) -> int:
        """Number of map applications."""
        return int(self.residuals.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: the residual traces as lists of floats (one list per start).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_module(dy.models.Logistic(r=2.5))
        >>> traj = system.iterate(torch.full((1, 1), 0.5, dtype=torch.float64), n_steps=3)
        >>> traj.to_dict()
        {'n_steps': 3, 'n_starts': 1, 'residuals': [[0.125, 0.0390625, 0.020599365234375]],
         'relative_residuals': [[0.25, 0.0625, 0.03515625]]}
        """
        return {
            "n_steps": self.n_steps,
            "n_starts": int(self.final.shape[0]),
            "residuals": self.residuals.T.tolist(),
            "relative_residuals": self.relative_residuals.T.tolist(),
        }

    def __str__(self) -> str:
        last = self.residuals[-1] if self.n_steps else torch.zeros(0)
        worst = float(last.max()) if last.numel() else float("nan")
        return (
            f"Trajectory({self.n_steps} steps, {self.final.shape[0]} starts, "
            f"last residual max {worst:.3g})"
        )


def _dims(shape: Sequence[int]) -> str:
    return ", ".join(str(s) for s in shape)


class LoopedSystem:
    """A looped map ``h_{t+1} = f(h_t, x)`` (driven) or ``h_{t+1} = f(h_t)`` (autonomous).

    States are batch-first: ``h`` has shape ``(N, *state_shape)``; every analysis in dynamo runs
    all N starts at once. The map must act on each example independently (no BatchNorm in train
    mode, no cross-example attention). The input ``x`` (the encoded input ``e = E(x)``) has shape
    ``(B, *input_shape)``; a step on N states uses ``x`` as is when ``B == N`` and broadcasts it
    when ``B == 1``. In an autonomous system ``x`` is kept only as a source of initial states
    (without recall the input enters only through ``h_0``).

    Build one with :meth:`from_module` or :meth:`from_function`; do not call the constructor.

    Parameters
    ----------
    fn : callable
        ``fn(h, x)`` for a driven system, ``fn(h)`` for an autonomous one, batched.
    state_shape : tuple of int
        Per-example state shape, e.g. ``(T, d)``.
    x : torch.Tensor or None
        The batched input, or None.
    driven : bool
        Whether ``x`` enters every step.
    module : nn.Module or None
        The module behind ``fn``, when there is one (its parameters drive :meth:`functional_step`).
    layers : sequence of callables or None
        Per-layer maps ``f_1 .. f_k`` whose composition is ``fn`` (each ``layer(h, x) -> h``).
    name : str
        A short label used in summaries.

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> W = 0.5 * torch.eye(3, dtype=torch.float64)
    >>> x = torch.ones(1, 3, dtype=torch.float64)
    >>> system = dy.LoopedSystem.from_function(lambda h, x: torch.tanh(h @ W.T + x),
    ...                                        state_shape=(3,), x=x)
    >>> system
    LoopedSystem(function: driven, state_shape=(3,), input batch 1, float64, cpu)
    >>> traj = system.iterate(torch.zeros(2, 3, dtype=torch.float64), n_steps=60)
    >>> bool(traj.residuals[-1].max() < 1e-12)
    True
    """

    def __init__(
        self,
        fn: StepFn,
        state_shape: Sequence[int],
        x: torch.Tensor | None,
        *,
        driven: bool,
        module: nn.Module | None = None,
        layers: Sequence[LayerFn] | None = None,
        name: str = "system",
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        # every evaluation of the user's map runs with differentiable attention kernels (see
        # _attention_safe): the solvers, Jacobians and spectral estimates all see one function
        self._user_fn = fn
        self._fn = _attention_safe(fn)
        self._state_shape = tuple(int(s) for s in state_shape)
        self._x = x
        self._driven = bool(driven)
        self._module = module
        self._layers = tuple(_attention_safe(f) for f in layers) if layers is not None else None
        self._name = name
        if x is not None:
            self._dtype, self._device = x.dtype, x.device
        else:
            p = _first_float_tensor(module) if module is not None else None
            self._dtype = dtype or (p.dtype if p is not None else torch.get_default_dtype())
            self._device = device or (p.device if p is not None else torch.device("cpu"))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        x: torch.Tensor | None = None,
        *,
        state_shape: Sequence[int] | None = None,
        driven: bool | None = None,
        dtype: torch.dtype | None = torch.float64,
        validate: bool = True,
    ) -> LoopedSystem:
        """Wrap an ``nn.Module`` whose ``forward(h, x)`` (or ``forward(h)``) is one loop step.

        Parameters
        ----------
        module : nn.Module
            The block. ``forward(h, x) -> h'`` for a driven block, ``forward(h) -> h'`` for an
            autonomous one. A module may declare ``driven`` (bool), ``state_shape_for(x)`` and
            ``layer_maps()``; dynamo's reference models do.
        x : torch.Tensor, optional
            Batched encoded input ``(B, *input_shape)``. Required for a driven block. For an
            autonomous block it is kept as the source of initial states.
        state_shape : sequence of int, optional
            Per-example state shape. Default: ``module.state_shape_for(x)`` when the module defines
            it, otherwise ``x.shape[1:]``.
        driven : bool, optional
            Override the driven/autonomous decision (default: ``module.driven`` if present, else
            whether ``forward`` takes two or more positional arguments).
        dtype : torch.dtype or None
            Analyse in this dtype (default float64). When the module's parameters have
            another dtype the system holds a converted deep copy with ``requires_grad`` off (the
            caller's module is untouched); otherwise it holds the module itself. None keeps the
            module's dtype.
        validate : bool
            Check, with four evaluations of the map, that it returns the state shape, is
            deterministic and does not couple examples across the batch.

        Raises
        ------
        NonDeterministicMapError
            The module is in train mode with dropout or batch norm, or two evaluations differ.
        ShapeError
            ``x`` has no batch dimension, or the map changes the state shape.
        InvalidArgumentError
            ``x`` is missing for a driven block, or holds NaN or inf.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> model = dy.models.LoopedTransformer(d_model=16, n_heads=2, recall="outer", norm="outer")
        >>> x = torch.randn(4, 8, 16, generator=torch.Generator().manual_seed(0))
        >>> system = dy.LoopedSystem.from_module(model, x)
        >>> system.driven, system.state_shape, system.dtype
        (True, (8, 16), torch.float64)
        """
        shown = {} if dtype is torch.float64 else {"dtype": dtype}
        call = call_form(
            "LoopedSystem.from_module", ["module", "x" if x is not None else "x=None"], **shown
        )
        _check_dtype(call, dtype, allow_none=True)
        if state_shape is not None:
            state_shape = _check_state_shape_arg(call, state_shape)
        if not isinstance(module, nn.Module):
            raise InvalidArgumentError(
                f"{call}: module must be a torch.nn.Module, got {type(module).__name__}; "
                "for a plain function use LoopedSystem.from_function(fn, state_shape=...)"
            )
        _check_not_stochastic(call, module)
        if driven is None:
            if offers(module, DeclaresDriven):
                driven = bool(module.driven)
            else:
                driven = _takes_two_args(module.forward)
        if x is not None:
            x = _check_input(call, x)
        if driven and x is None:
            raise InvalidArgumentError(
                f"{call}: the block is driven (forward takes h and x) but x is None; pass the "
                "encoded input x of shape (B, ...), or driven=False if x is unused"
            )
        if dtype is not None:
            # bf16/fp16 are allowed for stepping; the solvers refuse them with a clear message
            p = _first_float_tensor(module)
            if p is not None and p.dtype != dtype:
                # the system's own copy: analysis never needs autograd graphs through the weights
                # (torch.func differentiates without requires_grad), so switch them off
                module = copy.deepcopy(module).to(dtype=dtype).requires_grad_(False)
            if x is not None and x.is_floating_point():
                x = x.to(dtype=dtype)
        if x is not None:
            p = _first_float_tensor(module)
            if p is not None and p.device != x.device:
                raise InvalidArgumentError(
                    f"{call}: x is on {x.device} but the module's parameters are on {p.device}; "
                    "move one of them"
                )
        # what the block offers (dynamo.protocols): state_shape or state_shape_for, layer_maps
        declared: Any = module
        if state_shape is None:
            if offers(module, DeclaresStateShape) and not offers(module, StateShapeFor):
                state_shape = tuple(declared.state_shape)
            elif x is not None and offers(module, StateShapeFor):
                state_shape = tuple(declared.state_shape_for(x))
            elif x is not None:
                state_shape = tuple(x.shape[1:])
            else:
                raise InvalidArgumentError(
                    f"{call}: cannot infer the state shape without x; pass state_shape=(...)"
                )
        layers = None
        if offers(module, LayerMaps):
            layers = tuple(declared.layer_maps())
        fn: StepFn = module if driven else _autonomous_module_call(module)
        system = cls(
            fn,
            tuple(state_shape),
            x,
            driven=bool(driven),
            module=module,
            layers=layers,
            name=type(module).__name__,
            dtype=dtype,
        )
        if validate:
            system._probe(call)
        return system

    @classmethod
    def from_function(
        cls,
        fn: StepFn,
        state_shape: Sequence[int],
        x: torch.Tensor | None = None,
        *,
        driven: bool | None = None,
        layers: Sequence[LayerFn] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        name: str = "function",
        validate: bool = True,
    ) -> LoopedSystem:
        """Wrap a batched function ``fn(h, x) -> h'`` (driven) or ``fn(h) -> h'`` (autonomous).

        Parameters
        ----------
        fn : callable
            Acts on a batch ``h`` of shape ``(N, *state_shape)`` and returns the same shape.
        state_shape : sequence of int
            Per-example state shape.
        x : torch.Tensor, optional
            Batched input ``(B, ...)``. Given and ``driven`` unset, the system is driven.
        driven : bool, optional
            Default: ``x is not None``.
        layers : sequence of callables, optional
            Layer maps ``f_1..f_k`` (each ``(h, x) -> h``) whose composition is ``fn``.
        dtype, device :
            Used for states when there is no ``x`` (default float64 on the CPU).
        name : str
            Label for summaries.
        validate : bool
            Probe the function as in :meth:`from_module`.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> logistic = dy.LoopedSystem.from_function(lambda h: 3.2 * h * (1 - h), state_shape=(1,))
        >>> logistic.driven, logistic.state_dim
        (False, 1)
        """
        shown = {} if dtype is torch.float64 else {"dtype": dtype}
        call = call_form("LoopedSystem.from_function", ["fn", "state_shape"], **shown)
        if not callable(fn):
            raise InvalidArgumentError(f"{call}: fn must be callable, got {type(fn).__name__}")
        shape = _check_state_shape_arg(call, state_shape)
        _check_dtype(call, dtype, allow_none=False)
        if x is not None:
            x = _check_input(call, x)
        if driven is None:
            driven = x is not None
        if driven and x is None:
            raise InvalidArgumentError(f"{call}: driven=True needs the input x")
        step: StepFn = fn if driven else _ignore_input(fn)
        dev = torch.device(device) if device is not None else None
        system = cls(
            step, shape, x, driven=bool(driven), layers=layers, name=name, dtype=dtype, device=dev
        )
        if validate:
            system._probe(call)
        return system

    @classmethod
    def from_causal_lm(
        cls,
        model: Any,
        n: int = 1,
        *,
        dtype: torch.dtype | None = None,
        allow_low_precision: bool = False,
        validate: bool = True,
    ) -> LoopedSystem:
        """The embedding map of a causal language model, ``T(x) = softmax(logits([x]*n)) @ E``.

        The state is a point of the embedding space, shape ``(D,)``; one step runs the model on
        the uniform sequence of ``n`` copies of it and mixes the embedding table ``E`` with the
        next-token distribution at the last position (seed 004). Every verb of dynamo applies:
        :func:`solve`, the spectral verbs at a point, :func:`find_fixed_points`,
        :func:`basin_graph`. See :mod:`dynamo.llm` for the protocol's own searches.

        Parameters
        ----------
        model : dynamo.llm.LanguageModel or torch.nn.Module
            A causal LM in eval mode (a transformers model, or one loaded with
            :func:`dynamo.llm.load_causal_lm`).
        n : int
            Length of the uniform sequence.
        dtype : torch.dtype, optional
            Analyse in this dtype (a converted copy); default: the model's own.
        allow_low_precision : bool
            Allow a bfloat16/float16 model (refused by default: too coarse for fixed points).
        validate : bool
            Probe the map as :meth:`from_module` does.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> system = dy.LoopedSystem.from_causal_lm(dy.llm.PlantedLM())
        >>> system
        LoopedSystem(EmbeddingMap: autonomous, state_shape=(16,), no input, float64, cpu)
        >>> E = system.module.lm.get_input_embeddings().weight
        >>> sol = dy.solve(system, E[[2, 5]], method="picard")  # from two token embeddings
        >>> [o.ok for o in sol.outcomes], float((sol.state - E[[2, 5]]).norm(dim=1).max()) < 1e-6
        ([True, True], True)
        """
        from .llm._model import EmbeddingMap, check_precision, resolve

        call = call_form("LoopedSystem.from_causal_lm", ["model"], n=n)
        lm, _ = resolve(call, model, allow_low_precision=allow_low_precision)
        check_positive_int(call, "n", n)
        if dtype is not None:
            check_precision(call, "dtype", dtype, allow_low_precision)
        return cls.from_module(
            EmbeddingMap(lm, n), state_shape=None, driven=False, dtype=dtype, validate=validate
        )

    def __repr__(self) -> str:
        kind = "driven" if self._driven else "autonomous"
        inp = "no input" if self._x is None else f"input batch {self._x.shape[0]}"
        layers = f", {len(self._layers)} layers" if self._layers else ""
        dtype = str(self._dtype).replace("torch.", "")
        return (
            f"LoopedSystem({self._name}: {kind}, state_shape={self._state_shape}, {inp}"
            f"{layers}, {dtype}, {self._device})"
        )

    # ------------------------------------------------------------------ properties
    @property
    def state_shape(self) -> tuple[int, ...]:
        """Per-example state shape, e.g. ``(T, d)``."""
        return self._state_shape

    @property
    def state_dim(self) -> int:
        """Number of entries of one example's state (the size of the flat view)."""
        return math.prod(self._state_shape)

    @property
    def x(self) -> torch.Tensor | None:
        """The batched input ``(B, *input_shape)``, or None."""
        return self._x

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Per-example input shape, or None without input."""
        return None if self._x is None else tuple(self._x.shape[1:])

    @property
    def driven(self) -> bool:
        """True when the input enters every step (recall / input injection)."""
        return self._driven

    @property
    def step_x(self) -> torch.Tensor | None:
        """The input the step receives: :attr:`x` for a driven system, None for an autonomous
        one (whose ``x``, if any, is only a source of starts).

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> f = dy.models.ContractiveTanh(n=3, lipschitz=0.5, seed=0, recall=False)
        >>> system = dy.LoopedSystem.from_module(f, torch.ones(2, 3))
        >>> system.driven, system.x is None, system.step_x is None
        (False, False, True)
        """
        return self._x if self._driven else None

    @property
    def module(self) -> nn.Module | None:
        """The module behind the map, if any."""
        return self._module

    @property
    def layers(self) -> tuple[LayerFn, ...] | None:
        """Per-layer maps ``f_1 .. f_k`` (each ``(h, x) -> h``), or None when unknown."""
        return self._layers

    @property
    def n_layers(self) -> int | None:
        """Number of layer maps in the block, or None when unknown."""
        return None if self._layers is None else len(self._layers)

    @property
    def dtype(self) -> torch.dtype:
        """dtype of states and inputs."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Device of states and inputs (taken from the system's tensors)."""
        return self._device

    @property
    def name(self) -> str:
        """Short label."""
        return self._name

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The module's parameters in functional form (detached), ``{}`` for a plain function.

        Use with :meth:`functional_step`, ``torch.func.stack_module_state`` and ``vmap`` to
        analyse many weight draws at once.
        """
        if self._module is None:
            return {}
        return {k: v.detach() for k, v in self._module.named_parameters()}

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        """The module's buffers (e.g. RoPE tables), ``{}`` for a plain function."""
        if self._module is None:
            return {}
        return dict(self._module.named_buffers())

    # ------------------------------------------------------------------ evaluation
    def _input_for(
        self, call: str, n: int, x: torch.Tensor | None, *, check_values: bool = False
    ) -> torch.Tensor | None:
        if x is None:
            x = self._x
        elif self._driven:
            x = self._check_new_input(call, x, check_values=check_values)
        if x is None or not self._driven:
            return x
        if x.shape[0] == n:
            return x
        if x.shape[0] == 1:
            return x.expand(n, *x.shape[1:])
        raise ShapeError(
            f"{call}: h has batch size {n} but the input has batch size {x.shape[0]}; pass "
            f"one input per state, a single input (batch 1), or use system.repeat_input(k)"
        )

    def _check_new_input(self, call: str, x: Any, *, check_values: bool = True) -> torch.Tensor:
        """An input passed in place of the system's own: same per-example shape and device, cast
        to the system's dtype; finite when ``check_values`` (off inside ``step``, which must stay
        free of data-dependent control flow so that ``vmap``/``jacfwd`` can trace it)."""
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(f"{call}: x must be a torch.Tensor, got {type(x).__name__}")
        if self._module is not None and x.device != self._device:
            raise InvalidArgumentError(
                f"{call}: x is on {x.device} but the system is on {self._device}; pass "
                "x.to(system.device)"
            )
        if check_values:
            x = _check_input(call, x)
        elif x.ndim < 1 or x.shape[0] < 1:
            raise ShapeError(f"{call}: x must have a leading batch dimension, got {tuple(x.shape)}")
        if self._x is not None and tuple(x.shape[1:]) != tuple(self._x.shape[1:]):
            raise ShapeError(
                f"{call}: x has per-example shape {tuple(x.shape[1:])} but the system's input has "
                f"{tuple(self._x.shape[1:])}"
            )
        return x.to(dtype=self._dtype) if x.is_floating_point() else x

    def step(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """One application of the map to a batch of states.

        Parameters
        ----------
        h : torch.Tensor
            ``(N, *state_shape)``.
        x : torch.Tensor, optional
            Input to use instead of the system's own (batch N or 1).

        Returns
        -------
        torch.Tensor
            ``f(h, x)``, shape ``(N, *state_shape)``.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> henon = dy.LoopedSystem.from_module(dy.models.Henon())
        >>> henon.step(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
        tensor([[1., 0.]], dtype=torch.float64)
        """
        call = "LoopedSystem.step(h)"
        check_state_shape(call, "h", h, self._state_shape)
        out = self._fn(h, self._input_for(call, h.shape[0], x))
        if not isinstance(out, torch.Tensor) or out.shape != h.shape:
            raise self._bad_output(call, h, out)
        return out

    __call__ = step

    def _step_unchecked(self, h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Step without argument checks (solvers check once up front). ``x`` already matches h.

        The output's shape is still checked (a fraction of a microsecond): a map whose output
        shape changes between calls would otherwise fail later in an unrelated reshape, or, with
        the same number of entries, be analysed silently in the wrong layout.
        """
        out = self._fn(h, x)
        if not isinstance(out, torch.Tensor) or out.shape != h.shape:
            raise self._bad_output("f(h, x)" if self._driven else "f(h)", h, out)
        return out

    def _bad_output(self, call: str, h: torch.Tensor, out: Any, when: str = "") -> ShapeError:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        return ShapeError(
            f"{call}: {when}the map returned {got} for a state batch of shape {tuple(h.shape)}; "
            f"a looped block must return the state's shape (N, {_dims(self._state_shape)}) on "
            "every call (a map whose output shape depends on the state's values or on how often "
            "it was called cannot be iterated)"
        )

    def functional_step(
        self,
        params: Mapping[str, torch.Tensor],
        h: torch.Tensor,
        x: torch.Tensor | None = None,
        buffers: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Step with the given parameters (``torch.func.functional_call``), for ``vmap`` over draws.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=4, seed=0),
        ...                                   torch.zeros(1, 4))
        >>> h = torch.zeros(1, 4, dtype=torch.float64)
        >>> torch.equal(sys.functional_step(sys.params, h), sys.step(h))
        True
        """
        if self._module is None:
            return self.step(h, x)
        call = "LoopedSystem.functional_step(params, h)"
        xx = self._input_for(call, h.shape[0], x)
        tensors = {**dict(buffers if buffers is not None else self.buffers), **dict(params)}
        args = (h, xx) if self._driven else (h,)
        if differentiating(h, xx):
            with math_attention():
                return functional_call(self._module, tensors, args)
        return functional_call(self._module, tensors, args)

    def iterate(
        self, h0: torch.Tensor, n_steps: int, *, x: torch.Tensor | None = None, record: bool = True
    ) -> Trajectory:
        """Plain iteration ``h_{t+1} = f(h_t, x)`` for ``n_steps`` steps, with residuals.

        Parameters
        ----------
        h0 : torch.Tensor
            Starts, ``(N, *state_shape)``.
        n_steps : int
            Number of map applications (>= 1).
        x : torch.Tensor, optional
            Input to use instead of the system's own.
        record : bool
            Keep every state (memory ``(n_steps + 1) × N × state_dim``); False keeps only the last.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.Logistic(r=3.2))
        >>> traj = sys.iterate(torch.tensor([[0.3]], dtype=torch.float64), n_steps=200)
        >>> sorted(round(v, 4) for v in traj.states[-2:, 0, 0].tolist())  # the stable 2-cycle
        [0.513, 0.7995]
        """
        call = call_form("LoopedSystem.iterate", ["h0"], n_steps=n_steps)
        check_state_shape(call, "h0", h0, self._state_shape)
        check_positive_int(call, "n_steps", n_steps)
        check_finite_tensor(call, "h0", h0)
        xx = self._input_for(call, h0.shape[0], x, check_values=True)
        h = h0
        states = [h0] if record else []
        res, rel = [], []
        with torch.no_grad():
            for t in range(n_steps):
                h_next = self._fn(h, xx)
                if not isinstance(h_next, torch.Tensor) or h_next.shape != h.shape:
                    raise self._bad_output(call, h, h_next, f"at step {t} (h_{t} -> h_{t + 1}) ")
                diff = (h_next - h).reshape(h.shape[0], -1).norm(dim=1)
                scale = h.reshape(h.shape[0], -1).norm(dim=1)
                res.append(diff)
                rel.append(diff / scale)
                h = h_next
                if record:
                    states.append(h)
        return Trajectory(
            states=torch.stack(states) if record else None,
            final=h,
            residuals=torch.stack(res),
            relative_residuals=torch.stack(rel),
        )

    # ------------------------------------------------------------------ flat views
    def flatten(self, h: torch.Tensor) -> torch.Tensor:
        """``(N, *state_shape) -> (N, state_dim)``.

        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=3, n_tokens=2))
        >>> sys.flatten(torch.ones(5, 2, 3, dtype=torch.float64)).shape
        torch.Size([5, 6])
        """
        return h.reshape(h.shape[0], self.state_dim)

    def unflatten(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, state_dim) -> (N, *state_shape)``.

        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.ZeroBranchRMSNorm(d=3, n_tokens=2))
        >>> sys.unflatten(torch.ones(5, 6, dtype=torch.float64)).shape
        torch.Size([5, 2, 3])
        """
        return z.reshape(z.shape[0], *self._state_shape)

    def flat_step(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The map on flat states: ``(N, state_dim) -> (N, state_dim)`` (for linear algebra).

        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.Henon())
        >>> sys.flat_step(torch.zeros(1, 2, dtype=torch.float64))
        tensor([[1., 0.]], dtype=torch.float64)
        """
        return self.flatten(self.step(self.unflatten(z), x))

    # ------------------------------------------------------------------ derived systems
    def with_input(self, x: torch.Tensor) -> LoopedSystem:
        """The same map with another batched input.

        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=3, seed=1),
        ...                                   torch.zeros(1, 3))
        >>> sys.with_input(torch.ones(5, 3, dtype=torch.float64)).x.shape
        torch.Size([5, 3])
        """
        call = call_form("LoopedSystem.with_input", ["x"])
        return self._replace(x=self._check_new_input(call, x))

    def repeat_input(self, repeats: int) -> LoopedSystem:
        """Repeat each input ``repeats`` times (``repeat_interleave``): several starts per input.

        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=3, seed=1),
        ...                                   torch.eye(3))
        >>> sys.repeat_input(4).x.shape
        torch.Size([12, 3])
        """
        call = call_form("LoopedSystem.repeat_input", [], repeats=repeats)
        check_positive_int(call, "repeats", repeats)
        if self._x is None:
            raise InvalidArgumentError(f"{call}: the system has no input to repeat")
        return self._replace(x=self._x.repeat_interleave(repeats, dim=0))

    def to(
        self,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        *,
        validate: bool = True,
    ) -> LoopedSystem:
        """A copy in another dtype and/or on another device (the module is deep-copied, with
        ``requires_grad`` off).

        A plain-function system only converts its input: the function must follow its arguments,
        and ``validate`` checks that it does (the probe of :meth:`from_module`, which also checks
        that the map returns the new dtype: a function closing over float64 tensors returns
        float64 for a float32 state).

        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.Henon())
        >>> sys.to(torch.float32).dtype
        torch.float32
        """
        shown = {k: v for k, v in (("dtype", dtype), ("device", device)) if v is not None}
        call = call_form("LoopedSystem.to", [], **shown)
        _check_dtype(call, dtype, allow_none=True)
        module = self._module
        if module is not None:
            module = copy.deepcopy(module).to(dtype=dtype, device=device).requires_grad_(False)
        x = self._x
        if x is not None:
            x = x.to(device=device) if device is not None else x
            if dtype is not None and x.is_floating_point():
                x = x.to(dtype=dtype)
        fn = self._user_fn
        if module is not None:
            fn = module if self._driven else _autonomous_module_call(module)
        declared: Any = module
        layers = tuple(declared.layer_maps()) if offers(module, LayerMaps) else self._layers
        system = LoopedSystem(
            fn,
            self._state_shape,
            x,
            driven=self._driven,
            module=module,
            layers=layers,
            name=self._name,
            dtype=dtype or self._dtype,
            device=torch.device(device) if device is not None else self._device,
        )
        if validate:
            system._probe(call)
        return system

    def initial_states(
        self,
        kind: StartKind = "normal",
        n_starts: int = 1,
        *,
        scale: float = 1.0,
        seed: int | torch.Generator = 0,
    ) -> torch.Tensor:
        """Starts for the iteration, ``(B * n_starts, *state_shape)`` (``B`` = input batch or 1).

        Parameters
        ----------
        kind : {"normal", "zeros", "input"}
            ``"normal"``: i.i.d. ``N(0, scale²)`` entries; ``"zeros"``; ``"input"``: ``h_0 = x``
            (the encoded input, needs ``state_shape == input_shape``), plus ``N(0, scale²)`` noise
            on all but the first start of each input when ``n_starts > 1``.
        n_starts : int
            Starts per input. Starts of input ``b`` occupy rows ``b*n_starts .. (b+1)*n_starts-1``,
            matching :meth:`repeat_input`.
        scale : float
            Standard deviation of the noise.
        seed : int or torch.Generator
            Explicit randomness. An integer seed draws in float64 on the CPU and then casts, so
            the same seed gives the same starts (to the dtype's rounding) in every dtype and on
            every device.

        Examples
        --------
        >>> import torch, dynamo as dy
        >>> sys = dy.LoopedSystem.from_module(dy.models.ContractiveTanh(n=3, seed=0), torch.eye(3))
        >>> sys.initial_states("normal", n_starts=2, seed=0).shape
        torch.Size([6, 3])
        """
        call = call_form("LoopedSystem.initial_states", [repr(kind)], n_starts=n_starts)
        check_choice(call, "kind", kind, ("normal", "zeros", "input"))
        check_positive_int(call, "n_starts", n_starts)
        check_positive_float(call, "scale", scale)
        batch = 1 if self._x is None else int(self._x.shape[0])
        shape = (batch * n_starts, *self._state_shape)
        if kind == "zeros":
            _generator(seed, torch.device("cpu"))  # still checks the seed
            return torch.zeros(shape, dtype=self._dtype, device=self._device)
        if isinstance(seed, torch.Generator):  # the caller's generator, on its own device
            gdev = seed.device
            dt = self._dtype if gdev.type == "mps" else torch.float64
            raw = torch.randn(shape, generator=seed, dtype=dt, device=gdev)
        else:  # drawn in float64 on the CPU: the same seed gives the same starts in any dtype
            gen = _generator(seed, torch.device("cpu"))
            raw = torch.randn(shape, generator=gen, dtype=torch.float64)
        noise = (scale * raw).to(device=self._device, dtype=self._dtype)
        if kind == "normal":
            return noise
        if self._x is None or tuple(self._x.shape[1:]) != self._state_shape:
            have = None if self._x is None else tuple(self._x.shape[1:])
            raise InvalidArgumentError(
                f"{call}: kind='input' needs an input with the state's shape {self._state_shape}, "
                f"the system's input has per-example shape {have}"
            )
        base = self._x.repeat_interleave(n_starts, dim=0).to(self._dtype)
        noise = noise.reshape(batch, n_starts, *self._state_shape)
        noise[:, 0] = 0
        return base + noise.reshape(shape)

    def _replace(self, *, x: torch.Tensor | None) -> LoopedSystem:
        return LoopedSystem(
            self._user_fn,
            self._state_shape,
            x,
            driven=self._driven,
            module=self._module,
            layers=self._layers,
            name=self._name,
            dtype=self._dtype,
            device=self._device,
        )

    # ------------------------------------------------------------------ validation
    def _probe(self, call: str) -> None:
        """Four evaluations: output shape, determinism, and no coupling across the batch."""
        gen = torch.Generator(device="cpu").manual_seed(12345)
        probe = torch.randn(2, *self._state_shape, generator=gen, dtype=torch.float64)
        probe = probe.to(dtype=self._dtype, device=self._device)
        xx = None
        if self._x is not None:
            xx = self._x[:1].expand(2, *self._x.shape[1:]) if self._x.shape[0] < 2 else self._x[:2]
        with torch.no_grad():
            try:
                out = self._fn(probe, xx if self._driven else None)
            except Exception as err:  # the user's map failed: say where, keep the cause
                raise InvalidArgumentError(
                    f"{call}: evaluating the map on a probe batch of shape {tuple(probe.shape)} "
                    f"raised {type(err).__name__}: {err}"
                ) from err
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(probe.shape):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ShapeError(
                    f"{call}: the map returned {got} for a state batch of shape "
                    f"{tuple(probe.shape)}; a looped block must return the state's shape "
                    f"(N, {_dims(self._state_shape)})"
                )
            if out.dtype != probe.dtype:
                raise InvalidArgumentError(
                    f"{call}: the map returned {_dtype_name(out.dtype)} for a "
                    f"{_dtype_name(probe.dtype)} state; a looped block must return its state's "
                    "dtype (does the function use tensors of another dtype, e.g. a closure over "
                    "float64 weights? convert them along with the system, or analyse in "
                    f"{_dtype_name(out.dtype)})"
                )
            again = self._fn(probe, xx if self._driven else None)
            if not _same(out, again):
                raise NonDeterministicMapError(
                    f"{call}: two evaluations of the map on the same state differ; the map must "
                    "be deterministic (call module.eval() to switch off dropout, and seed any "
                    "noise inside the map)"
                )
            single = self._fn(probe[1:], xx[1:] if (xx is not None and self._driven) else None)
            if not _same(out[1:], single):
                raise NonDeterministicMapError(
                    f"{call}: the map's output for one example depends on the other examples in "
                    "the batch (BatchNorm in train mode?); dynamo needs per-example maps"
                )


# ---------------------------------------------------------------------- helpers
def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not bool(torch.equal(torch.isfinite(a), torch.isfinite(b))):
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    eps = torch.finfo(a.dtype).eps
    scale = a[finite].abs().max() if bool(finite.any()) else torch.tensor(1.0)
    # batched and single evaluations may use different BLAS blocking: allow a few ulps
    return bool(((a - b)[finite].abs() <= 64 * eps * (1 + scale)).all())


_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_dtype(call: str, dtype: Any, *, allow_none: bool) -> None:
    """A floating torch dtype (None too where it means "keep the module's")."""
    if (dtype is None and allow_none) or (isinstance(dtype, torch.dtype) and dtype in _DTYPES):
        return
    listed = ", ".join(f"torch.{_dtype_name(d)}" for d in _DTYPES)
    accepted = f"one of {listed}" + (" or None (keep the module's dtype)" if allow_none else "")
    if isinstance(dtype, str):
        named = getattr(torch, dtype, None)
        if isinstance(named, torch.dtype) and named in _DTYPES:
            fix = f"pass torch.{dtype} (a torch dtype, not its name)"
        elif dtype in ("cpu", "cuda", "mps") or dtype.startswith(("cuda:", "mps:")):
            fix = f"to move the system, pass device={dtype!r}"
        else:
            fix = "pass a torch dtype"
        raise InvalidArgumentError(
            f"{call}: dtype must be {accepted}, got the string {dtype!r}; {fix}"
        )
    got = f"torch.{_dtype_name(dtype)}" if isinstance(dtype, torch.dtype) else _short(dtype)
    raise InvalidArgumentError(
        f"{call}: dtype must be {accepted}, got {got}; dynamo analyses real-valued maps in a "
        "floating dtype (float64 by default)"
    )


def _check_state_shape_arg(call: str, value: Any) -> tuple[int, ...]:
    """``state_shape`` as a tuple of positive ints, from a tuple, list or ``torch.Size``."""
    fix = "a per-example shape such as (T, d), e.g. tuple(h.shape[1:])"
    if isinstance(value, torch.Tensor):
        raise InvalidArgumentError(
            f"{call}: state_shape must be a tuple of positive ints, got a tensor {_short(value)}; "
            f"pass {fix}"
        )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidArgumentError(
            f"{call}: state_shape must be a tuple of positive ints, got {type(value).__name__} "
            f"{_short(value)}; pass {fix}"
        )
    sizes = []
    for s in value:
        try:
            if isinstance(s, (bool, torch.Tensor)):
                raise TypeError
            sizes.append(operator.index(s))
        except TypeError:
            raise InvalidArgumentError(
                f"{call}: state_shape must be a tuple of positive ints, got {_short(value)} "
                f"(entry {_short(s)} is not an int); pass {fix}"
            ) from None
    if any(s < 1 for s in sizes):
        raise InvalidArgumentError(
            f"{call}: state_shape must hold positive sizes, got {tuple(sizes)}"
        )
    return tuple(sizes)


def _first_float_tensor(module: nn.Module | None) -> torch.Tensor | None:
    if module is None:
        return None
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t
    return None


def _check_input(call: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidArgumentError(
            f"{call}: x must be a torch.Tensor with a leading batch dimension, got "
            f"{type(x).__name__}"
        )
    if x.ndim < 1 or x.shape[0] < 1:
        raise ShapeError(
            f"{call}: x must have a leading batch dimension of size >= 1, got shape "
            f"{tuple(x.shape)}; add one with x.unsqueeze(0)"
        )
    check_finite_tensor(call, "x", x)
    return x


def _check_not_stochastic(call: str, module: nn.Module) -> None:
    for name, sub in module.named_modules():
        label = name or "<root>"
        if sub.training and isinstance(sub, _STOCHASTIC) and float(getattr(sub, "p", 0.0)) > 0:
            raise NonDeterministicMapError(
                f"{call}: {type(sub).__name__}(p={sub.p}) at '{label}' is in train mode, so the "
                "map is random; call module.eval() before analysing it"
            )
        if sub.training and isinstance(sub, _BATCH_COUPLED):
            raise NonDeterministicMapError(
                f"{call}: {type(sub).__name__} at '{label}' is in train mode, so each example's "
                "output depends on the batch; call module.eval() before analysing it"
            )


def _takes_two_args(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())


_SAFE = "__dynamo_math_attention__"  # marks a map already wrapped by _attention_safe


def _attention_safe(fn: StepFn) -> StepFn:
    """``fn``, evaluated under :class:`~dynamo._compat.math_attention` whenever the evaluation may
    be differentiated or vmapped.

    A user's block on ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` or
    ``F.scaled_dot_product_attention`` otherwise runs torch's fused CPU kernels, which have no
    forward-mode rule, no double backward and no batching rule, so every Jacobian-based verb
    failed. The kernel is chosen when the forward runs, and every forward of the map inside dynamo
    goes through here, so the graphs that ``vjp``/``jvp``/``vmap`` record differentiate
    everywhere. A plain forward (iteration, the solvers' map evaluations) keeps the fused kernels,
    1.2 to 2.5 times faster there; both agree to rounding (tests/test_attention_blocks.py).
    Cost: about 0.3 microsecond a plain call, 2 more under a transform.
    """
    if getattr(fn, _SAFE, False):
        return fn

    def step(h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        if differentiating(h, x):
            with math_attention():
                return fn(h, x)
        return fn(h, x)

    setattr(step, _SAFE, True)
    return step


def _autonomous_module_call(module: nn.Module) -> StepFn:
    def step(h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return module(h)

    return step


def _ignore_input(fn: StepFn) -> StepFn:
    def step(h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return fn(h)

    return step


def _generator(seed: int | torch.Generator, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"seed must be an int or a torch.Generator, got {seed!r}")
    from ._validate import check_seed

    check_seed("the random starts", "seed", seed)  # torch would wrap -1 into another seed
    return torch.Generator(device=device).manual_seed(seed)
