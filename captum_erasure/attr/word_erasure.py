"""Word erasure (Li, Monroe & Jurafsky 2016, section 4) as a Captum attribution."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from captum._utils.progress import progress
from captum.attr import FeatureAblation
from captum.attr._utils.common import get_total_features_from_mask
from captum.log import log_usage
from torch import Tensor, nn

from captum_erasure._core.captum_calls import (
    engine_takes,
    interpretable_call,
    is_token_ids,
    single_tensor,
)
from captum_erasure._core.engine import (
    EngineStats,
    OutputShapeError,
    OutputTypeError,
    Row,
    engine_for_call,
    score_erasures,
)
from captum_erasure._core.forwards import model_caller, require_pad_token_id
from captum_erasure._core.hooks import input_embeddings, zeroing
from captum_erasure._core.inputs import (
    ForwardArgs,
    as_extra_args,
    baseline_token_ids,
    check_token_ids,
    delete_and_repack,
    feature_mask_like,
    model_limits,
)
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.scores import check_score
from captum_erasure._core.text import NOT_A_FEATURE, feature_ids

MODES = ("replace", "delete", "attention", "zero")


@dataclass
class WordScores:
    """Per-feature (word) scores of a batch, before they are spread onto tokens."""

    # (n_examples, max_words) float64, NaN beyond each example's words (int64 and 0 there for
    # "output_diff" on an integer model); (n_examples, n_outputs, max_words) for "output_diff"
    # without target
    scores: Tensor
    feature_ids: list         # per example: the feature-mask id of each scored word, in order
    original_outputs: Tensor  # (n_examples, n_outputs), the unperturbed forward outputs
    targets: Tensor | None    # (n_examples,) class each score refers to
    stats: EngineStats        # forward passes and rows this call spent
    feature_mask: Tensor | None = None  # (n_examples, seq_len) the mask the words came from
    output_dtype: torch.dtype | None = None  # dtype of the forward's outputs


def _captum_ppe(perturbations_per_eval: int | None) -> int:
    return 1 if perturbations_per_eval is None else perturbations_per_eval  # Captum's default


def _feature_ablation_semantics(score: str, mode: str) -> bool:
    """FeatureAblation's own computation: raw output difference, features replaced."""
    return score == "output_diff" and mode == "replace"


class WordErasure(UsesEngine, FeatureAblation):
    """Importance of each word = change of the target's score when the word is erased.

    A drop-in Captum ``FeatureAblation`` for token-id inputs, with ``score=`` (default
    ``"eq1"``, Li et al.'s relative log-likelihood change; see
    :mod:`captum_erasure._core.scores`) and
    ``mode=``:

    - ``"replace"``: tokens replaced by ``baselines`` (default 0, Captum's default: BERT's
      ``[PAD]``, but ``<s>`` for RoBERTa vocabularies: pass ``tokenizer.pad_token_id``).
    - ``"delete"``: tokens removed and the sequence re-packed (right padding), which is what Li
      et al. mean by erasing a word. Needs the attention mask.
    - ``"attention"``: attention-mask entries set to 0. Needs the attention mask.
    - ``"zero"``: the token's input embedding vector set to 0 (needs ``embedding_layer`` unless
      the model has ``get_input_embeddings``).

    The forward is called as ``forward_func(input_ids, *additional_forward_args)``, a Hugging
    Face model with keywords (``input_ids=``, ``attention_mask=``; see
    :func:`~captum_erasure._core.forwards.model_caller`), and must
    return ``(rows, n_classes)`` logits (or ``output=`` ``"probs"``/``"log_probs"``), or an HF
    output with ``.logits``. ``additional_forward_args[attention_mask_index]`` is the attention
    mask. Other forward arguments shaped like the inputs (e.g. ``token_type_ids``) are treated
    per token (and re-packed in delete mode); tensors with one row per example are repeated per
    perturbation; anything else is passed unchanged.

    ``pad_token_id`` fills the right padding of re-packed rows in delete mode (always under a
    zero attention mask); default: the model's ``config.pad_token_id``, and a ValueError in
    delete mode when there is none (see :func:`~captum_erasure._core.forwards.pad_token_id_of`).

    ``feature_mask`` groups tokens into words (see :func:`captum_erasure.word_feature_mask`);
    tokens with a negative id are never erased and get attribution 0. Without a mask every
    attended token is its own feature.

    Batching: all perturbations of all examples in the call are packed into forwards of
    ``batch_size`` rows (and at most ``max_tokens`` padded tokens). ``perturbations_per_eval``
    keeps Captum's meaning when given: ``perturbations_per_eval x n_examples`` rows per forward.

    Anything else a ``FeatureAblation`` accepts gets FeatureAblation's behaviour: for inputs
    that are not token ids (several tensors, floats, Captum's interpretable indicators inside
    ``LLMAttribution``) the default score is ``"output_diff"``, and every call with that score
    and ``mode="replace"`` that the packed engine does not take (see
    :func:`captum_erasure.captum_calls.engine_takes`; also forwards that return a number per
    batch or Futures) runs ``FeatureAblation.attribute`` / ``attribute_future`` themselves.
    Other scores and modes on such inputs run the engine (float inputs: replacement only) or
    raise.
    """

    def __init__(self, forward_func: Callable, *, attention_mask_index: int = 0,
                 pad_token_id: int | None = None, embedding_layer: nn.Module | None = None,
                 options: EngineOptions | None = None, **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        self.attention_mask_index = attention_mask_index
        self.pad_token_id = pad_token_id
        self.embedding_layer = embedding_layer
        self.last_stats: EngineStats | None = None
        self.last_result: WordScores | None = None

    # -- Captum API -------------------------------------------------------------------------
    @log_usage(part_of_slo=True)
    @attribute_call
    def attribute(self, inputs: Tensor | tuple[Tensor, ...], baselines: Any = None,
                  target: Any = None, additional_forward_args: Any = None,
                  feature_mask: Any = None, perturbations_per_eval: int | None = None,
                  show_progress: bool = False, score: str | None = None, mode: str = "replace",
                  **kwargs: Any) -> Any:
        """Captum-style attribution: a tensor shaped like ``inputs`` where every token holds
        its word's score (0 for tokens that are not features).

        With ``score="output_diff"`` the result is FeatureAblation's, dtype included (that of
        the forward's output); without a target its rows are the flattened outputs,
        ``(n_examples * n_outputs, seq_len)``, as in Captum. Calls with FeatureAblation's
        semantics (``"output_diff"``, ``mode="replace"``; the default score for anything but
        token ids) that are not a batch of token-id rows with a per-row forward output go to
        ``FeatureAblation.attribute`` itself (see :mod:`captum_erasure.captum_calls`)."""
        args = dict(baselines=baselines, target=target,
                    additional_forward_args=additional_forward_args, feature_mask=feature_mask,
                    show_progress=show_progress)
        score = score or self._default_score(inputs, additional_forward_args)
        if self._feature_ablation_call(inputs, args, score, mode, kwargs):
            return super().attribute(
                inputs, perturbations_per_eval=_captum_ppe(perturbations_per_eval), **args,
                **kwargs)
        try:
            return self._attribute_tokens(inputs, args, perturbations_per_eval, score, mode,
                                          kwargs)
        except (OutputTypeError, OutputShapeError):
            if not _feature_ablation_semantics(score, mode):
                raise
            # No row of outputs per input row (e.g. one number per batch): Captum's own code
            # handles such forwards (the forwards run so far are wasted).
        return super().attribute(
            inputs, perturbations_per_eval=_captum_ppe(perturbations_per_eval), **args, **kwargs)

    @attribute_call
    def attribute_future(self, inputs: Tensor | tuple[Tensor, ...], baselines: Any = None,
                         target: Any = None, additional_forward_args: Any = None,
                         feature_mask: Any = None, perturbations_per_eval: int | None = None,
                         show_progress: bool = False, score: str | None = None,
                         mode: str = "replace", **kwargs: Any) -> torch.futures.Future:
        """FeatureAblation's ``attribute_future`` (for forwards that return Futures). A
        token-id call the engine takes, with a forward that returns tensors, gets a completed
        Future of :meth:`attribute`'s result."""
        args = dict(baselines=baselines, target=target,
                    additional_forward_args=additional_forward_args, feature_mask=feature_mask,
                    show_progress=show_progress)
        score = score or self._default_score(inputs, additional_forward_args)
        if not self._feature_ablation_call(inputs, args, score, mode, kwargs):
            try:
                result = self._attribute_tokens(inputs, args, perturbations_per_eval, score,
                                                mode, kwargs)
            except (OutputTypeError, OutputShapeError):
                if not _feature_ablation_semantics(score, mode):
                    raise
            else:
                done: torch.futures.Future = torch.futures.Future()
                done.set_result(result)
                return done
        return super().attribute_future(
            inputs, perturbations_per_eval=_captum_ppe(perturbations_per_eval), **args, **kwargs)

    def _attribute_progress_setup(self, formatted_inputs: tuple, feature_mask: tuple,
                                  perturbations_per_eval: int, **kwargs: Any) -> Any:
        # Calls handed to FeatureAblation run its algorithm: the bar says so, by its name, and
        # counts its forwards (the unperturbed one, then one per group of ablated features).
        forwards = 1 + math.ceil(get_total_features_from_mask(feature_mask)
                                 / perturbations_per_eval)
        return progress(desc=f"{FeatureAblation.get_name()} attribution", total=forwards)

    def _feature_ablation_call(self, inputs: Any, args: dict, score: str, mode: str,
                               kwargs: dict) -> bool:
        """A call that FeatureAblation's own code answers."""
        return _feature_ablation_semantics(score, mode) and not engine_takes(
            inputs, args["baselines"], args["target"],
            as_extra_args(args["additional_forward_args"]), args["feature_mask"], kwargs,
            self.use_weights)

    def _default_score(self, inputs: Any, additional_forward_args: Any) -> str:
        # Eq. 1 is the score of the text method; anything else gets FeatureAblation's.
        extra = as_extra_args(additional_forward_args)
        if is_token_ids(single_tensor(inputs)) and not interpretable_call(extra):
            return "eq1"
        return "output_diff"

    def _attribute_tokens(self, inputs: Any, args: dict, perturbations_per_eval: int | None,
                          score: str, mode: str, kwargs: dict) -> Any:
        """The packed engine's answer, spread from words onto their tokens."""
        if kwargs:
            raise TypeError(f"WordErasure.attribute got unexpected arguments {sorted(kwargs)}")
        is_tuple = isinstance(inputs, tuple)
        ids = inputs[0] if is_tuple else inputs
        if is_tuple and len(inputs) != 1:
            raise ValueError(f"WordErasure takes one input tensor (token ids) for "
                             f"score={score!r}, mode={mode!r}; several input tensors need "
                             "FeatureAblation's score='output_diff' with mode='replace'")
        feature_mask = args["feature_mask"]
        if isinstance(feature_mask, tuple):
            feature_mask = feature_mask[0]
        words = self.attribute_words(ids, args["baselines"], args["target"],
                                     args["additional_forward_args"], feature_mask,
                                     perturbations_per_eval, args["show_progress"], score, mode)
        attr = self._spread_to_tokens(words, words.feature_mask)
        if words.targets is None:  # every output scored: Captum's rows are the flat outputs
            attr = attr.reshape(-1, attr.shape[-1])
        attr = attr.to(device=ids.device, dtype=self._result_dtype(words, score))
        return (attr,) if is_tuple else attr

    @staticmethod
    def _result_dtype(words: WordScores, score: str) -> torch.dtype:
        if score == "output_diff" and words.output_dtype is not None:
            return words.output_dtype  # Captum's rule: the dtype of the forward's output
        # Derived scores: float32, unless the model computes in float64.
        return torch.float64 if words.output_dtype == torch.float64 else torch.float32

    # -- word-level API ---------------------------------------------------------------------
    @attribute_call
    def attribute_words(self, inputs: Tensor, baselines: Any = None, target: Any = None,
                        additional_forward_args: Any = None, feature_mask: Tensor | None = None,
                        perturbations_per_eval: int | None = None, show_progress: bool = False,
                        score: str | None = None, mode: str = "replace") -> WordScores:
        """One score per feature (word) and example, plus the original outputs and targets."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        if not isinstance(inputs, Tensor) or inputs.dim() != 2:
            raise ValueError("inputs must be a (batch, sequence) tensor of token ids, got "
                             f"{getattr(inputs, 'shape', type(inputs))}")
        extra = as_extra_args(additional_forward_args)
        is_ids = not inputs.is_floating_point() and not interpretable_call(extra)
        score = check_score(score or ("eq1" if is_ids else "output_diff"))
        if not is_ids and mode != "replace":
            raise ValueError(f"mode={mode!r} needs token ids; float or interpretable inputs "
                             "only support mode='replace'")
        mask = self._feature_mask(inputs, feature_mask, extra)
        feats = [feature_ids(row) for row in mask]
        for example, row_feats in enumerate(feats):
            if not row_feats:
                raise ValueError(
                    f"example {example} has no erasable tokens (empty or whitespace-only text, "
                    "or a feature mask that marks every token as not a feature)")
        n_examples = inputs.shape[0]
        attention = self._attention_mask(inputs, extra, required=mode in ("delete", "attention"),
                                         mode=mode)
        base = None
        if is_ids:  # the text entry points' checks, for token-id tensors
            check_token_ids(inputs, self.forward_func, attention)
            if mode == "replace":
                base = baseline_token_ids(baselines, inputs.cpu(),
                                          model_limits(self.forward_func)[1])
        elif mode == "replace":
            base = self._indicator_baselines(inputs.cpu(), baselines)
        collate, forward = self._collate_and_forward(inputs, base, extra, mask, attention, mode)
        engine = engine_for_call(
            forward, self.forward_func, n_examples=n_examples,
            perturbations_per_eval=perturbations_per_eval, batch_size=self.batch_size,
            max_tokens=self.max_tokens, device=self.device, autocast=self.autocast,
            show_progress=show_progress, one_row_per_example=not is_ids)
        lengths = self._row_lengths(mask, attention)

        def length(example: int, feature: int) -> int:
            if mode != "delete" or feature < 0:
                return int(lengths[example])
            return int(lengths[example] - (mask[example] == feature).sum())

        originals = [Row(b, -1, length(b, -1), -1) for b in range(n_examples)]
        erasures = (Row(b, slot, length(b, f), f)
                    for b in range(n_examples) for slot, f in enumerate(feats[b]))
        result = score_erasures(
            engine, collate, originals, erasures, n_slots=max(map(len, feats)), target=target,
            score=score, output_kind=self.output, total=sum(map(len, feats)),
            desc=f"{self.get_name()} ({mode})", method=type(self).__name__)
        if result.scores.is_floating_point():
            for example, row_feats in enumerate(feats):
                result.scores[example, ..., len(row_feats):] = float("nan")
        self.last_stats = engine.stats
        self.last_result = WordScores(result.scores, feats, result.original_outputs,
                                      result.targets, engine.stats, mask, engine.output_dtype)
        return self.last_result

    @attribute_call
    def attribute_details(self, *args: Any, **kwargs: Any) -> WordScores:
        """``attribute``'s arguments, the rich result (:class:`WordScores`: one score per word,
        the original outputs, targets, cost), as every method's ``attribute_details``."""
        return self.attribute_words(*args, **kwargs)

    # -- helpers ----------------------------------------------------------------------------
    def _attention_mask(self, inputs: Tensor, extra: tuple, required: bool,
                        mode: str) -> Tensor | None:
        idx = self.attention_mask_index
        mask = extra[idx] if idx < len(extra) else None
        if isinstance(mask, Tensor) and mask.shape == inputs.shape:
            return mask
        if required:
            raise ValueError(
                f"mode={mode!r} needs the attention mask, shaped like the inputs, as "
                f"additional_forward_args[{idx}] (set attention_mask_index to move it)")
        return None

    def _feature_mask(self, inputs: Tensor, feature_mask: Tensor | None, extra: tuple) -> Tensor:
        if feature_mask is None:
            mask = torch.arange(inputs.shape[1]).expand(inputs.shape).clone()
            attention = self._attention_mask(inputs, extra, required=False, mode="")
            if attention is not None and not inputs.is_floating_point():
                mask[attention.cpu() == 0] = NOT_A_FEATURE
            return mask
        return feature_mask_like(feature_mask, inputs)

    def _row_lengths(self, mask: Tensor, attention: Tensor | None) -> Tensor:
        """Attended tokens per example (the token budget's unit)."""
        if attention is not None:
            return attention.cpu().ne(0).sum(1)
        return torch.full((mask.shape[0],), mask.shape[1])

    @staticmethod
    def _indicator_baselines(inputs: Tensor, baselines: Any) -> Tensor:
        """Baselines of inputs that are not token ids (Captum's interpretable indicators inside
        LLMAttribution, floats under a text score), in the inputs' dtype."""
        if baselines is None:
            baselines = 0
        if isinstance(baselines, tuple):
            baselines = baselines[0]
        base = torch.as_tensor(baselines, dtype=inputs.dtype)
        if base.dim() == 2 and base.shape[0] in (1, inputs.shape[0]) and \
                base.shape[1] == inputs.shape[1]:
            return base.expand(inputs.shape)
        if base.dim() == 0:
            return base.expand(inputs.shape)
        raise ValueError(f"baselines must be a scalar or shaped like the inputs "
                         f"{tuple(inputs.shape)}, got {tuple(base.shape)}")

    def _collate_and_forward(self, inputs: Tensor, base: Tensor | None, extra: tuple,
                             mask: Tensor, attention: Tensor | None,
                             mode: str) -> tuple[Callable, Callable]:
        """``base``: the replacement ids shaped like the inputs (replace mode only)."""
        inputs_cpu = inputs.cpu()
        pad = require_pad_token_id(self.forward_func, None, self.pad_token_id, needed_for=(
            f"{type(self).__name__} mode='delete' (re-packed rows are right-padded)")) \
            if mode == "delete" else None
        forward_args = ForwardArgs(extra, inputs.shape)
        am_idx = self.attention_mask_index
        if attention is not None:
            columns = torch.arange(inputs.shape[1]).expand(inputs.shape)
            attended_width = (columns * attention.cpu().ne(0)).amax(1) + 1

        def collate(rows: list[Row]) -> tuple:
            examples = torch.tensor([r.example for r in rows])
            features = torch.tensor([r.data for r in rows])
            erase = (mask[examples] == features[:, None]) & (features[:, None] >= 0)
            ids = inputs_cpu[examples]
            width = None
            if attention is not None and mode != "delete":
                # Right padding shared by every row of the chunk is dead weight: drop it.
                width = int(attended_width[examples].max())
                ids, erase = ids[:, :width], erase[:, :width]
            args = forward_args.rows(examples, width)
            if mode == "replace":
                ids = torch.where(erase, base[examples, :ids.shape[1]], ids)
            elif mode == "attention":
                args[am_idx] = args[am_idx].masked_fill(erase, 0)
            elif mode == "delete":
                keep = ~erase & args[am_idx].ne(0)
                token_args = forward_args.token_indices
                ids, *moved = delete_and_repack(
                    keep, [ids] + [args[i] for i in token_args],
                    [pad] + [0] * len(token_args))
                for i, moved_arg in zip(token_args, moved):
                    args[i] = moved_arg
            elif mode == "zero":
                return (~erase, ids, *args)
            return (ids, *args)

        if mode != "zero":
            return collate, self.forward_func
        embedding = self.embedding_layer or input_embeddings(self.forward_func)
        if embedding is None:
            raise ValueError("mode='zero' needs the embedding module: pass embedding_layer= "
                             "(or use a model with get_input_embeddings())")

        call = model_caller(self.forward_func)

        def forward_with_zeroed_vectors(keep: Tensor, *args: Any) -> Any:
            with zeroing([embedding], [keep], over="positions"):
                return call(*args)

        return collate, forward_with_zeroed_vectors

    @staticmethod
    def _spread_to_tokens(words: WordScores, mask: Tensor) -> Tensor:
        scores = words.scores
        shape = scores.shape[:-1] + (mask.shape[1],)
        attr = torch.zeros(shape, dtype=scores.dtype)
        for example, feats in enumerate(words.feature_ids):
            slot_of = {f: s for s, f in enumerate(feats)}
            for pos, feature in enumerate(mask[example].tolist()):
                if feature >= 0:
                    attr[example, ..., pos] = scores[example, ..., slot_of[feature]]
        return attr

