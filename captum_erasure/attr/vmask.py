"""The keep probabilities of a trained VMASK layer (Chen & Ji, EMNLP 2020) as a Captum
attribution.

A VMASK classifier (:mod:`captum_erasure.models.vmask`) learned, per word, the probability that
the word's embedding is kept; that probability is its explanation: 1 = the model relies on the
word, 0 = the model was trained to do without it. It depends on the word alone (the mask
network reads the word's embedding), not on the class or the context, so explaining needs no
forward pass of the classifier: one row per example through the mask network.

This module only reads the layer: any embedding module with a ``keep_probability(input_ids)``
method (a :class:`~captum_erasure.models.vmask.MaskedEmbedding`) will do.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_erasure._core.engine import EngineStats, Row
from captum_erasure._core.hooks import input_embeddings
from captum_erasure._core.inputs import attribute_inputs
from captum_erasure._core.options import EngineOptions, UsesEngine

WORD_REDUCTIONS = ("mean", "max", "min")


class VMask(UsesEngine, Attribution):
    """Keep probability of each token (or word) under the model's trained VMASK layer.

    Args:
        forward_func: the VMASK classifier (an ``nn.Module`` whose ``get_input_embeddings()`` is
            the masked embedding), or any callable with ``embedding_layer=`` given.
        embedding_layer: the masked embedding (default: the model's
            ``get_input_embeddings()``); it must have ``keep_probability(input_ids)``.
        word_reduce: how a word's tokens combine under a ``feature_mask``: ``"mean"``
            (default), ``"max"`` or ``"min"``.
    """

    def __init__(self, forward_func: Callable, *, embedding_layer: nn.Module | None = None,
                 word_reduce: str = "mean", options: EngineOptions | None = None,
                 **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        if word_reduce not in WORD_REDUCTIONS:
            raise ValueError(f"word_reduce must be one of {WORD_REDUCTIONS}, got {word_reduce!r}")
        layer = embedding_layer if embedding_layer is not None else input_embeddings(forward_func)
        if layer is None:
            raise ValueError("VMask needs the model's masked embedding: the model has no "
                             "get_input_embeddings(); pass embedding_layer=")
        if not callable(getattr(layer, "keep_probability", None)):
            raise ValueError(
                f"the model's input embedding ({type(layer).__name__}) is not a VMASK layer (no "
                "keep_probability); attach one with captum_erasure.models.vmask.attach_vmask "
                "and train it (train_jointly) before explaining")
        self.embedding_layer = layer
        self.word_reduce = word_reduce
        self.last_stats: EngineStats | None = None

    def _keep_forward(self, ids: Tensor) -> Tensor:
        # float64 so that saturated keep probabilities keep their order
        return self.embedding_layer.keep_probability(ids).double()

    @log_usage(part_of_slo=True)
    def attribute(self, inputs: Tensor | tuple[Tensor], baselines: Any = None,
                  target: Any = None, additional_forward_args: Any = None,
                  feature_mask: Tensor | tuple[Tensor] | None = None,
                  show_progress: bool = False, **kwargs: Any) -> Tensor | tuple[Tensor]:
        """Keep probability per token, shaped like ``inputs`` (0 on padding:
        ``additional_forward_args[0]`` is the attention mask). With a ``feature_mask`` every
        token of a word holds the word's value (``word_reduce`` of its tokens) and tokens
        outside words 0. ``target`` is accepted and ignored (the mask serves every class);
        ``baselines`` must be None (a dropped word is a zero vector, the layer's own
        choice)."""
        if kwargs:
            raise TypeError(f"VMask.attribute got unexpected arguments {sorted(kwargs)}")
        if baselines is not None:
            raise ValueError("VMask reads a trained mask; baselines must be None (a dropped "
                             "word is the zero vector)")
        is_tuple, ids, attention, words = attribute_inputs(inputs, additional_forward_args,
                                                           feature_mask)
        ids_cpu = ids.cpu()
        n = ids.shape[0]
        lengths = attention.cpu().sum(1).tolist()
        rows = [Row(b, -1, int(lengths[b])) for b in range(n)]

        def collate(specs: Sequence[Row]) -> tuple:
            return (ids_cpu[torch.tensor([r.example for r in specs])],)

        engine = self.options.engine(self._keep_forward, self.forward_func, n_examples=n,
                                     show_progress=show_progress)
        with torch.no_grad():
            keep = engine.run(rows, collate, desc="VMASK keep probabilities")
        keep = keep * attention.cpu().to(keep.dtype)
        attributions = _per_word(keep, words, self.word_reduce) if feature_mask is not None \
            else keep
        self.last_stats = engine.stats
        attributions = attributions.to(ids.device)
        return (attributions,) if is_tuple else attributions


def _per_word(keep: Tensor, words: Tensor, reduce: str) -> Tensor:
    out = torch.zeros_like(keep)
    combine = {"mean": torch.mean, "max": torch.max, "min": torch.min}[reduce]
    for b in range(keep.shape[0]):
        row = words[b]
        for w in row[row >= 0].unique().tolist():
            where = row == w
            out[b, where] = combine(keep[b, where])
    return out
