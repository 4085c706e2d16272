"""Fixed points of pretrained causal language models (seed 004, SCIENCE.md §4).

A language model is read as a map on its embedding space, ``T(x) = softmax(logits(x)) @ E``,
and on its vocabulary, ``t ↦ argmax logits([t])``:

* :func:`token_fixed_points`: every token whose greedy continuation is itself (repetition);
* :func:`embedding_fixed_points`: continuous fixed points ``x = T(x)`` by iteration or by
  gradient descent, each with its token mixture;
* :func:`rollout_stability`: whether a fixed point survives autoregressive decoding;
* :func:`uniform_sequence_check`: claim C7, ``[x] = T([x])`` implies
  ``[x, …, x] = T([x, …, x])`` with RoPE, not with absolute positions;
* :meth:`dynamo.LoopedSystem.from_causal_lm`: the same map as a :class:`~dynamo.LoopedSystem`,
  so every verb of dynamo (solve, spectra, find_fixed_points, basin graphs) applies.

Models load from local files only (:func:`load_causal_lm`: a folder of safetensors weights or a
GGUF file); transformers is needed only for that (``pip install 'looped-dynamo[llm]'``) and is
imported when it is called. :class:`PlantedLM` is a model with known fixed points.

>>> import dynamo as dy
>>> dy.llm.token_fixed_points(dy.llm.PlantedLM()).tokens
[2, 5, 7, 9]
"""

from ._model import LanguageModel as LanguageModel
from ._model import MissingExtraError as MissingExtraError
from ._model import PlantedLM as PlantedLM
from ._model import load_causal_lm as load_causal_lm
from ._search import EmbeddingFixedPoint as EmbeddingFixedPoint
from ._search import EmbeddingSearch as EmbeddingSearch
from ._search import Rollout as Rollout
from ._search import TokenFixedPoints as TokenFixedPoints
from ._search import UniformSequenceCheck as UniformSequenceCheck
from ._search import embedding_fixed_points as embedding_fixed_points
from ._search import rollout_stability as rollout_stability
from ._search import token_fixed_points as token_fixed_points
from ._search import uniform_sequence_check as uniform_sequence_check

__all__ = [
    "EmbeddingFixedPoint",
    "EmbeddingSearch",
    "LanguageModel",
    "MissingExtraError",
    "PlantedLM",
    "Rollout",
    "TokenFixedPoints",
    "UniformSequenceCheck",
    "embedding_fixed_points",
    "load_causal_lm",
    "rollout_stability",
    "token_fixed_points",
    "uniform_sequence_check",
]
