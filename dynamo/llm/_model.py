"""A causal language model as dynamo sees it: loaded from local files only, checked for the
precision its fixed-point searches need, and turned into the embedding map
``T(x) = softmax(logits(x)) @ E`` (seed 004, SCIENCE.md §4).

Only the model's Hugging Face calling convention is used: ``model(input_ids=...)`` or
``model(inputs_embeds=..., past_key_values=..., use_cache=..., output_hidden_states=...)``
returning an object with ``.logits`` (and ``.past_key_values``, ``.hidden_states``), and
``model.get_input_embeddings()``. transformers itself is imported only to load weights.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validate import call_form
from ..errors import InvalidArgumentError, MissingExtraError, UnsupportedDtypeError

__all__ = [
    "LanguageModel",
    "MissingExtraError",
    "PlantedLM",
    "load_causal_lm",
]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_LOW = (torch.bfloat16, torch.float16)
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


@dataclass(frozen=True)
class LanguageModel:
    """A causal language model loaded from local files, with its tokenizer when it has one.

    Every function of :mod:`dynamo.llm` accepts a ``LanguageModel``, or the bare model (then
    token strings are shown only when ``tokenizer=`` is given).

    Attributes
    ----------
    model : torch.nn.Module
        The model, in eval mode, in ``dtype``.
    tokenizer : object or None
        Its tokenizer (``decode`` turns ids into text), or None when none could be loaded.
    source : str
        The local folder or GGUF file it came from.
    dtype : torch.dtype
        The dtype it computes in.
    stored_dtype : str
        The dtype of the weights on disk, as the files say (``"Q4_1"`` and the like for
        quantized GGUF tensors, which are de-quantized when loaded).

    Examples
    --------
    >>> import dynamo as dy
    >>> lm = dy.llm.LanguageModel(dy.llm.PlantedLM(), None, "planted", dy.llm.PlantedLM().dtype,
    ...                           "float64")
    >>> lm.vocab_size, lm.hidden_size
    (12, 16)
    """

    model: nn.Module
    tokenizer: Any
    source: str
    dtype: torch.dtype
    stored_dtype: str

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding matrix: every token id the model accepts."""
        return int(embedding_matrix(self.model).shape[0])

    @property
    def hidden_size(self) -> int:
        """Width ``D`` of the embedding space, the state of the embedding map."""
        return int(embedding_matrix(self.model).shape[1])

    def __str__(self) -> str:
        name = type(self.model).__name__
        dt = str(self.dtype).replace("torch.", "")
        return (
            f"{name} from {self.source}: vocabulary {self.vocab_size}, embedding width "
            f"{self.hidden_size}, computing in {dt} (weights stored as {self.stored_dtype})"
        )


# ---------------------------------------------------------------------------------- loading
def load_causal_lm(
    path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    allow_low_precision: bool = False,
) -> LanguageModel:
    """Load a causal language model from a local folder or a single GGUF file; never the network.

    Parameters
    ----------
    path : str or path-like
        A folder with ``config.json`` and safetensors weights (as ``save_pretrained`` writes it),
        or one ``.gguf`` file (quantized tensors are de-quantized). Pickled weights
        (``pytorch_model.bin``) are refused: dynamo never unpickles.
    dtype : {"float32", "float64", "bfloat16", "float16"}
        The dtype to compute in. float32 is the default because the fixed-point searches need it
        (seed 004: bfloat16 iterations stall at large residuals).
    allow_low_precision : bool
        Allow bfloat16 or float16 for a quick look; the searches then say so in their results.

    Returns
    -------
    LanguageModel
        The model in eval mode, its tokenizer (or None) and where it came from.

    Raises
    ------
    InvalidArgumentError
        The path does not exist (or names a remote model id with no local copy), holds no causal
        language model, holds only pickled weights, or ``dtype`` is low precision without
        ``allow_low_precision``.
    MissingExtraError
        transformers (or gguf for a GGUF file) is not installed: ``pip install
        'looped-dynamo[llm]'``.

    Examples
    --------
    >>> import tempfile, dynamo as dy
    >>> try:
    ...     dy.llm.load_causal_lm("HuggingFaceTB/SmolLM2-135M")
    ... except dy.errors.InvalidArgumentError as err:
    ...     print(str(err)[:86])
    load_causal_lm('HuggingFaceTB/SmolLM2-135M'): no such local folder or file; dynamo lo...
    """
    call = call_form(
        "load_causal_lm", [repr(str(path))], **({} if dtype == "float32" else {"dtype": dtype})
    )
    torch_dtype = check_precision(call, "dtype", dtype, allow_low_precision)
    p = Path(path).expanduser()
    if not p.exists():
        text = str(path)
        remote = text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text
        hint = (
            " It reads like a model id on a hub: download it first (for example `hf download "
            f"{text} --local-dir DIR`) and pass DIR, or pass a .gguf file"
            if remote
            else " Pass a folder with config.json and safetensors weights, or a .gguf file"
        )
        raise InvalidArgumentError(
            f"{call}: no such local folder or file; dynamo loads weights from local files only "
            f"(no network).{hint}"
        )
    transformers = _import_transformers(call)
    if p.is_file():
        return _load_gguf(call, transformers, p, torch_dtype)
    return _load_folder(call, transformers, p, torch_dtype)


def _import_transformers(call: str) -> Any:
    if importlib.util.find_spec("transformers") is None:
        raise MissingExtraError(
            f"{call}: loading a language model needs transformers, which is not installed; "
            "pip install 'looped-dynamo[llm]'"
        )
    import transformers

    transformers.logging.set_verbosity_error()  # its own progress and warnings stay quiet
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _load_gguf(call: str, transformers: Any, p: Path, dtype: torch.dtype) -> LanguageModel:
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        kind = "a pickle" if magic[:1] == b"\x80" or p.suffix in (".bin", ".pt", ".pth") else ""
        raise InvalidArgumentError(
            f"{call}: {p.name} is not a GGUF file"
            + (f" ({kind}: dynamo never unpickles)" if kind else "")
            + "; pass a .gguf file, or the folder that holds config.json and safetensors weights"
        )
    for extra in ("gguf", "accelerate"):
        if importlib.util.find_spec(extra) is None:
            raise MissingExtraError(
                f"{call}: reading a GGUF file needs the {extra} package, which is not installed; "
                "pip install 'looped-dynamo[llm]'"
            )
    folder, name = str(p.parent), p.name
    try:
        with _quiet_tqdm():  # transformers de-quantizes under a bar of its own
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=dtype, local_files_only=True
            )
    except (ValueError, KeyError, OSError) as err:
        raise InvalidArgumentError(
            f"{call}: transformers could not build a causal language model from {p.name}: "
            f"{_first_line(err)}"
        ) from None
    tokenizer = _tokenizer(transformers, folder, gguf_file=name)
    return LanguageModel(model.eval(), tokenizer, str(p), dtype, _gguf_types(p))


def _load_folder(call: str, transformers: Any, p: Path, dtype: torch.dtype) -> LanguageModel:
    if not (p / "config.json").is_file():
        gguf = sorted(p.glob("*.gguf"))
        hint = f"; it holds {gguf[0].name}: pass that file" if gguf else ""
        raise InvalidArgumentError(
            f"{call}: {p} has no config.json, so it is not a saved language model{hint}"
        )
    has_safetensors = any(p.glob("*.safetensors"))
    pickled = [name for name in _PICKLED if (p / name).exists()]
    if not has_safetensors:
        what = f"only pickled weights ({', '.join(pickled)})" if pickled else "no weights"
        raise InvalidArgumentError(
            f"{call}: {p} holds {what}; dynamo reads safetensors only and never unpickles "
            "(save the model with save_pretrained(..., safe_serialization=True))"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
    except (ValueError, KeyError, OSError) as err:
        raise InvalidArgumentError(
            f"{call}: {p}/config.json could not be read: {_first_line(err)}"
        ) from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set()
    for name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal.update([name] if isinstance(name, str) else name)
    archs = list(getattr(config, "architectures", None) or [])
    # the saved class decides where there is one: a BertModel folder is an encoder even though
    # its family has a causal head (BertLMHeadModel)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
        archs and not any(a in causal for a in archs)
    ):
        arch = ", ".join(archs) or "none listed"
        raise InvalidArgumentError(
            f"{call}: {p} is a {config.model_type!r} model (architectures: {arch}), not a causal "
            "language model; dynamo.llm analyses decoder-only models that predict the next token"
        )
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(p), dtype=dtype, local_files_only=True, use_safetensors=True
        )
    except (ValueError, KeyError, OSError) as err:
        raise InvalidArgumentError(
            f"{call}: transformers could not load the weights in {p}: {_first_line(err)}"
        ) from None
    stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "?")
    return LanguageModel(
        model.eval(),
        _tokenizer(transformers, str(p)),
        str(p),
        dtype,
        stored.replace("torch.", ""),
    )


@contextlib.contextmanager
def _quiet_tqdm() -> Iterator[None]:
    """transformers de-quantizes GGUF tensors under a tqdm bar of its own, which no setting
    turns off; while loading, its module's ``tqdm`` passes the iterable through."""
    try:
        mod: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    except ImportError:  # pragma: no cover - another layout of transformers: the bar shows
        yield
        return
    original = getattr(mod, "tqdm", None)
    if original is None:  # pragma: no cover
        yield
        return
    mod.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        mod.tqdm = original


def _tokenizer(transformers: Any, folder: str, **kwargs: Any) -> Any:
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
    except Exception:  # a model without a tokenizer is still a model: ids are shown instead
        return None


def _gguf_types(p: Path) -> str:
    try:
        import gguf

        reader = gguf.GGUFReader(str(p))
        kinds = sorted({t.tensor_type.name for t in reader.tensors})
        return "/".join(kinds)
    except Exception:  # pragma: no cover - a file transformers read but gguf's reader did not
        return "GGUF"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ------------------------------------------------------------------------------- checking
def check_precision(call: str, name: str, dtype: Any, allow_low_precision: bool) -> torch.dtype:
    """The dtype a search runs in, refused when it is too coarse for fixed points."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise InvalidArgumentError(
                f"{call}: {name}={dtype!r} is not one of {', '.join(map(repr, _DTYPES))}"
            )
        dtype = _DTYPES[dtype]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidArgumentError(f"{call}: {name} must be a floating dtype, got {dtype!r}")
    if dtype in _LOW and not allow_low_precision:
        dt = str(dtype).replace("torch.", "")
        raise UnsupportedDtypeError(
            f"{call}: the model computes in {dt}, too coarse for fixed points: a residual of "
            "1e-6 is below its rounding (seed 004: bfloat16 iterations stall and gradient "
            "descent diverges before the residual is small). Load it in float32 (the default) "
            "or float64; for a quick look anyway pass allow_low_precision=True "
            "(--allow-low-precision on the command line)"
        )
    return dtype


def resolve(
    call: str, model: Any, tokenizer: Any = None, *, allow_low_precision: bool = False
) -> tuple[nn.Module, Any]:
    """The bare model and its tokenizer, checked: a causal LM in eval mode, in a usable dtype."""
    if isinstance(model, LanguageModel):
        tokenizer = model.tokenizer if tokenizer is None else tokenizer
        model = model.model
    if isinstance(model, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"{call}: model is a path; load it first with dynamo.llm.load_causal_lm({str(model)!r})"
        )
    if not isinstance(model, nn.Module) or not callable(
        getattr(model, "get_input_embeddings", None)
    ):
        raise InvalidArgumentError(
            f"{call}: model must be a causal language model (a transformers model such as "
            "LlamaForCausalLM, or a LanguageModel from dynamo.llm.load_causal_lm), got "
            f"{type(model).__name__}"
        )
    from .._system import _check_not_stochastic  # the one check of every system's module

    _check_not_stochastic(call, model)
    check_precision(call, "the model's dtype", embedding_matrix(model).dtype, allow_low_precision)
    return model, tokenizer


def embedding_matrix(model: nn.Module) -> torch.Tensor:
    """The input embedding table ``E`` (vocabulary × width) the embedding map mixes."""
    emb = model.get_input_embeddings()  # type: ignore[operator]
    weight = getattr(emb, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise InvalidArgumentError(
            f"the model's input embeddings ({type(emb).__name__}) have no 2-D weight table"
        )
    return weight


def decode(tokenizer: Any, token: int) -> str | None:
    """A token's text, or None without a tokenizer."""
    if tokenizer is None:
        return None
    try:
        return str(tokenizer.decode([int(token)]))
    except Exception:  # an id past the tokenizer's own vocabulary (padded embedding rows)
        return None


# -------------------------------------------------------------------------- the maps
def logits_last(model: nn.Module, embeds: torch.Tensor) -> torch.Tensor:
    """Logits at the last position for a batch of embedded sequences ``(N, n, D)``."""
    out = model(inputs_embeds=embeds, use_cache=False)
    return out.logits[:, -1, :]


def embedding_map(model: nn.Module, x: torch.Tensor, n: int = 1) -> torch.Tensor:
    """``T(x) = softmax(logits([x, …, x])[-1]) @ E`` for a batch ``x`` of shape ``(N, D)``,
    the sequence being ``n`` copies of ``x``."""
    E = embedding_matrix(model)
    embeds = x[:, None, :].expand(x.shape[0], n, x.shape[1])
    probs = torch.softmax(logits_last(model, embeds).to(E.dtype), dim=-1)
    return probs @ E


class EmbeddingMap(nn.Module):
    """The embedding map of a causal LM as a module ``forward(h) -> T(h)`` (a loop step)."""

    def __init__(self, model: nn.Module, n: int = 1) -> None:
        super().__init__()
        self.lm = model
        self.n = int(n)
        self.driven = False
        self.state_shape = (int(embedding_matrix(model).shape[1]),)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return embedding_map(self.lm, h, self.n)


# ------------------------------------------------------------------ a model with known answers
class _Output:
    def __init__(self, logits: torch.Tensor, hidden: tuple[torch.Tensor, ...] | None) -> None:
        self.logits = logits
        self.hidden_states = hidden
        self.past_key_values = None


class _Embedding(nn.Embedding):
    pass


class PlantedLM(nn.Module):
    """A causal language model with fixed points known in closed form, for tests and examples.

    The embedding table ``E`` has orthonormal rows (``vocab <= dim``) and the logits at every
    position are ``beta * P E x`` with ``P`` a permutation of the vocabulary that fixes exactly
    ``fixed_tokens`` and swaps the other tokens in pairs. So:

    * **token fixed points**: exactly ``fixed_tokens``, each with probability
      ``e^beta / (e^beta + vocab - 1)``;
    * **embedding fixed points**: ``x = Eᵀ p`` with ``p = softmax(beta P p)``. For each fixed
      token ``t`` there is a point with ``p_t = a`` and every other entry
      ``b = (1 - a)/(vocab - 1)``, ``a`` the largest root of
      ``a = e^{beta a} / (e^{beta a} + (vocab - 1) e^{beta b})``; it is stable for large
      ``beta`` (the map's Jacobian there has spectral radius
      ``beta (1 - a^2 - (vocab-1) b^2 - (vocab-2) b)``). The uniform mixture is a fixed point
      too, with spectral radius ``beta / vocab`` (unstable when ``beta > vocab``); so are even
      mixtures of several tokens, all unstable. A start near one
      token of a swapped pair falls onto a period-2 orbit, not a fixed point.

    The model ignores context (no attention), so every position of a uniform sequence agrees.

    Parameters
    ----------
    vocab, dim : int
        Vocabulary size and embedding width (``vocab <= dim``).
    fixed_tokens : tuple of int
        The tokens ``P`` fixes; the others are swapped in consecutive pairs (so their number must
        be even).
    beta : float
        Logit scale.
    seed : int
        Draw of the orthonormal embedding rows.
    dtype : torch.dtype
        float64 by default (the known answers hold to rounding).

    Examples
    --------
    >>> import torch, dynamo as dy
    >>> lm = dy.llm.PlantedLM()
    >>> lm(input_ids=torch.tensor([[2], [3]])).logits.argmax(-1).flatten().tolist()
    [2, 4]
    """

    def __init__(
        self,
        vocab: int = 12,
        dim: int = 16,
        fixed_tokens: tuple[int, ...] = (2, 5, 7, 9),
        beta: float = 20.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        call = call_form("PlantedLM", vocab=vocab, dim=dim, fixed_tokens=fixed_tokens)
        fixed = tuple(int(t) for t in fixed_tokens)
        others = [t for t in range(vocab) if t not in fixed]
        if vocab > dim or len(others) % 2 or any(not 0 <= t < vocab for t in fixed):
            raise InvalidArgumentError(
                f"{call}: needs vocab <= dim, fixed tokens inside the vocabulary and an even "
                "number of other tokens (they are swapped in pairs)"
            )
        perm = list(range(vocab))
        for a, b in zip(others[0::2], others[1::2], strict=True):
            perm[a], perm[b] = b, a
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, vocab, generator=gen, dtype=torch.float64))
        self.embed = _Embedding(vocab, dim, dtype=dtype)
        with torch.no_grad():
            self.embed.weight.copy_(q.T.to(dtype))
        self.embed.requires_grad_(False)
        self.register_buffer("perm", torch.tensor(perm))
        # P as a matrix: logits = beta * (E x) @ P^T is plain linear algebra, which the interval
        # prover (dy.prove_fixed_point) encloses rigorously; an index gather it could not
        self.register_buffer(
            "perm_matrix", torch.eye(vocab, dtype=dtype)[torch.tensor(perm)], persistent=False
        )
        self.beta = float(beta)
        self.fixed_tokens = fixed
        self.config = type("PlantedConfig", (), {"initializer_range": 0.02})()
        self.eval()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the embedding table."""
        return self.embed.weight.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        """The embedding table, as transformers models expose it."""
        return self.embed

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **_: Any,
    ) -> _Output:
        """Logits ``beta * P E x`` at every position (context is ignored)."""
        if inputs_embeds is None:
            assert input_ids is not None
            inputs_embeds = self.embed(input_ids)
        p = inputs_embeds @ self.embed.weight.T  # coordinates of x in the rows of E
        perm: torch.Tensor = self.perm_matrix  # type: ignore[assignment]
        logits = self.beta * (p @ perm.T)
        hidden = (inputs_embeds,) if output_hidden_states else None
        return _Output(logits, hidden)
