"""Word-vector dimension erasure (Li, Monroe & Jurafsky 2016, section 3, Figure 1) as a Captum
attribution."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from captum.log import log_usage
from torch import Tensor, nn

from captum_erasure._core.engine import Row
from captum_erasure._core.hooks import input_embeddings
from captum_erasure._core.inputs import (
    as_extra_args,
    as_input_tuple,
    example_indexer,
    row_length,
)
from captum_erasure._core.options import EngineOptions, attribute_call
from captum_erasure.attr._unit_erasure import (
    DatasetImportance,
    UnitErasureBase,
    UnitScores,
)


class EmbeddingDimensionErasure(UnitErasureBase):
    """Importance of each word-vector dimension d: Eq. 1 (default ``score="eq1"``; see
    :mod:`captum_erasure._core.scores`) when dimension d of *every* word vector of the input is set
    to 0 at once (all positions: the reading of Li et al.'s Figure 1, one score per index).

    Two modes, chosen per call from the inputs:

    - **embedding** (token-id inputs, or any inputs when ``embedding_layer`` is given):
      dimension d of ``embedding_layer``'s output is zeroed by a forward hook. With
      ``embedding_layer=None`` the model's ``get_input_embeddings()`` is used (for an HF model:
      the word embeddings, before position embeddings and LayerNorm are added).
    - **input** (float inputs ``(B, D)`` or ``(B, L, D)`` and ``embedding_layer=None``): the
      inputs *are* the word vectors, fed straight to the model (the paper's lexical tasks use
      one word vector and an MLP); dimension d of the input tensor itself is zeroed.

    D comes from the module (``embedding_dim``/``out_features``), from the input's last axis,
    or from one probe forward. Rows: D + 1 per example, all examples packed into the engine's
    batches. The forward is called as ``forward_func(inputs, *additional_forward_args)``;
    tensor arguments with one row per example are indexed per row, anything else is passed
    as is. ``output`` says what the forward returns: ``"logits"``, ``"probs"`` or
    ``"log_probs"``.
    """

    def __init__(self, forward_func: Callable, embedding_layer: nn.Module | None = None, *,
                 options: EngineOptions | None = None, **engine_options: Any) -> None:
        super().__init__(forward_func, options=options, **engine_options)
        if embedding_layer is not None and not isinstance(embedding_layer, nn.Module):
            raise TypeError("embedding_layer must be an nn.Module or None")
        self.embedding_layer = embedding_layer

    @log_usage(part_of_slo=True)
    @attribute_call
    def attribute(self, inputs: Tensor | tuple[Tensor], target: Any = None,
                  additional_forward_args: Any = None,
                  perturbations_per_eval: int | None = None, show_progress: bool = False,
                  score: str | None = None) -> Tensor | tuple[Tensor]:
        """Per-example importance of every dimension, float32 ``(n_examples, D)``
        (``(n_examples, n_outputs, D)`` for ``score="output_diff"`` without target); a 1-tuple
        when ``inputs`` is a 1-tuple, as in Captum."""
        result = self.unit_scores(inputs, target, additional_forward_args,
                                  perturbations_per_eval, show_progress, score)
        tensors, is_tuple = as_input_tuple(inputs)
        attr = result.scores.float().to(tensors[0].device)
        return (attr,) if is_tuple else attr

    @attribute_call
    def unit_scores(self, inputs: Tensor | tuple[Tensor], target: Any = None,
                    additional_forward_args: Any = None,
                    perturbations_per_eval: int | None = None, show_progress: bool = False,
                    score: str | None = None) -> UnitScores:
        """Float64 scores ``(n_examples, D)`` plus originals, targets and costs."""
        tensors, _ = as_input_tuple(inputs)
        if len(tensors) != 1:
            raise ValueError("EmbeddingDimensionErasure takes one input tensor (token ids or "
                             "word vectors)")
        embedding = self.embedding_layer
        if embedding is None and tensors[0].is_floating_point():
            return self._input_unit_scores(tensors[0], target, additional_forward_args,
                                           perturbations_per_eval, show_progress, score)
        if embedding is None:
            embedding = input_embeddings(self.forward_func)
        if embedding is None:
            raise ValueError(
                "token-id inputs need the embedding module: pass embedding_layer= (or use a "
                "model with get_input_embeddings()); float inputs are erased directly")
        return self._module_unit_scores([embedding], ["embedding_layer"], tensors[0], target,
                                        additional_forward_args, perturbations_per_eval,
                                        show_progress, score)

    def _input_unit_scores(self, vectors: Tensor, target: Any, additional_forward_args: Any,
                           perturbations_per_eval: int | None, show_progress: bool,
                           score: str | None) -> UnitScores:
        """Input mode: zero dimension d of the float input tensor itself."""
        if vectors.dim() not in (2, 3):
            raise ValueError("float inputs must be word vectors (B, D) or (B, L, D), got "
                             f"shape {tuple(vectors.shape)}")
        n_examples, n_dims = vectors.shape[0], vectors.shape[-1]
        extra_args = example_indexer(as_extra_args(additional_forward_args), n_examples)
        vectors_cpu = vectors.cpu()

        def collate(rows: Sequence[Row]) -> tuple:
            examples = torch.tensor([r.example for r in rows])
            erase = torch.zeros(len(rows), n_dims, dtype=torch.bool)
            for i, row in enumerate(rows):
                if row.data is not None:
                    erase[i, row.data.unit] = True
            erase = erase.view(len(rows), *([1] * (vectors.dim() - 2)), n_dims)
            rows_in = vectors_cpu[examples].masked_fill(erase, 0.0)
            return (rows_in, *extra_args(examples))

        engine = self._engine(self.forward_func, n_examples, perturbations_per_eval,
                              show_progress)
        return self._score(engine, collate, n_examples, row_length(vectors), [n_dims], target,
                           score, f"{self.get_name()} (input dimensions)")

    def _per_layer(self, values: Tensor | DatasetImportance, widths: list[int]) -> Any:
        return values
