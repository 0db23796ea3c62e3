"""High-level entry for transformers users: explain raw texts word by word.

``explain_texts(model, tokenizer, texts)`` tokenizes the texts with a fast tokenizer, groups
sub-word pieces into words (``word_ids``), erases every word in turn with
:class:`~captum_erasure.attr.word_erasure.WordErasure` and returns one :class:`TextExplanation` per
text. By default the score is Li et al.'s Eq. 1 (positive: erasing the word lowers the target's
probability) and a word is erased by deleting it (``mode="delete"``).
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from captum_erasure._core.forwards import pad_token_id_of
from captum_erasure._core.scores import check_score
from captum_erasure._core.text import (
    check_model_and_tokenizer,
    check_text,
    check_units,
    encode_batch,
    eval_mode,
    label_name,
    max_tokens_of,
    num_labels,
    resolve_label_names,
    unit_spans,
    word_feature_mask,
    word_tokens,
)
from captum_erasure.attr.word_erasure import MODES, WordErasure

TARGETS = ("predicted", "gold")


@dataclass
class TextExplanation:
    """Word-level erasure scores of one text, with the model's prediction."""

    text: str
    words: list[str]                # units (``units=``) as they appear in ``text``
    scores: list[float]             # one score per word, same order
    predicted: int                  # argmax class of the unperturbed text
    predicted_label: str            # its name from ``model.config.id2label``
    probability: float              # P(predicted | text)
    target: int                     # the class the scores refer to
    target_label: str
    target_probability: float       # P(target | text)
    gold: int | None = None         # gold label index, if labels were given
    gold_label: str | None = None
    mode: str = "delete"            # how words were erased
    score_name: str = "eq1"         # which score (see :mod:`captum_erasure._core.scores`)
    units: str = "words"            # what a word is: tokenizer words or whitespace tokens


def _check_target(model: nn.Module, target: Any, labels: Any,
                  n_classes: int | None) -> int | str:
    if isinstance(target, str) and target in TARGETS:
        if target == "gold" and labels is None:
            raise ValueError("target='gold' needs labels= (one gold label per text)")
        return target
    if isinstance(target, str):
        try:
            return resolve_label_names(target, model)
        except ValueError as err:
            raise ValueError(f"{err}; or 'predicted' or 'gold'") from None
    try:
        if isinstance(target, bool):
            raise TypeError
        index = operator.index(target)
    except TypeError:
        raise ValueError(f"target must be 'predicted', 'gold', a class index or a label name, "
                         f"got {target!r}") from None
    if n_classes is not None and not 0 <= index < n_classes:
        raise ValueError(f"target {index} is outside the model's class range "
                         f"[0, {n_classes - 1}]")
    return index


def _gold_index(model: nn.Module, label: Any, position: int, n_classes: int | None) -> int:
    """A gold label as a class index (label names are looked up in ``config.id2label``)."""
    if isinstance(label, str):
        try:
            return resolve_label_names(label, model, "label")
        except ValueError as err:  # say which text's label
            raise ValueError(str(err).replace(f"label {label!r}",
                                              f"label {label!r} of text {position}", 1)) from None
    try:
        index = operator.index(label)
    except TypeError:
        raise ValueError(f"label of text {position} must be a class index or label name, "
                         f"got {label!r}") from None
    if n_classes is not None and not 0 <= index < n_classes:
        raise ValueError(f"label {index} of text {position} is outside the model's class "
                         f"range [0, {n_classes - 1}]")
    return index


# -- streaming ----------------------------------------------------------------------------------
def _paired(texts: Iterable[str], labels: Iterable[Any] | None) -> Iterator[tuple[str, Any]]:
    """(text, label) pairs; a length mismatch is an error, even for generators."""
    if labels is None:
        yield from ((text, None) for text in texts)
        return
    missing = object()
    for position, (text, label) in enumerate(itertools.zip_longest(texts, labels,
                                                                   fillvalue=missing)):
        if text is missing or label is missing:
            raise ValueError(f"texts and labels differ in length (one of them ends at item "
                             f"{position})")
        yield text, label


def iter_explanations(model: nn.Module, tokenizer: Any, texts: Iterable[str], *,
                      labels: Iterable[Any] | None = None, target: int | str = "predicted",
                      score: str = "eq1", mode: str = "delete",
                      baseline_token: int | str | None = None, max_length: int | None = None,
                      truncate: bool = False, batch_size: int = 64, texts_per_call: int = 64,
                      device: torch.device | str | None = None, units: str = "words",
                      show_progress: bool = False) -> Iterator[TextExplanation]:
    """Like :func:`explain_texts`, but lazy: reads ``texts`` (any iterable) ``texts_per_call``
    at a time and yields explanations as each group is done. Arguments are checked at once."""
    check_model_and_tokenizer(model, tokenizer)
    check_score(score)
    check_units(units)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if texts_per_call < 1 or batch_size < 1:
        raise ValueError("texts_per_call and batch_size must be >= 1")
    n_classes = num_labels(model)
    target = _check_target(model, target, labels, n_classes)
    if isinstance(texts, str):
        texts = [texts]
    if labels is not None and hasattr(texts, "__len__") and hasattr(labels, "__len__") \
            and len(texts) != len(labels):
        raise ValueError(f"got {len(labels)} labels for {len(texts)} texts")
    baseline = _baseline_id(tokenizer, baseline_token, mode)
    limit = max_tokens_of(model, tokenizer, max_length)
    explainer = WordErasure(model, batch_size=batch_size, device=device,
                            pad_token_id=pad_token_id_of(model, tokenizer))
    settings = dict(model=model, tokenizer=tokenizer, explainer=explainer, target=target,
                    score=score, mode=mode, baseline=baseline, limit=limit, truncate=truncate,
                    n_classes=n_classes, units=units, show_progress=show_progress)
    return _stream(_paired(texts, labels), texts_per_call, settings)


def _stream(pairs: Iterator[tuple[str, Any]], texts_per_call: int,
            settings: dict) -> Iterator[TextExplanation]:
    start = 0
    while group := list(itertools.islice(pairs, texts_per_call)):
        yield from _explain_group(group, start, **settings)
        start += len(group)


def _baseline_id(tokenizer: Any, baseline_token: int | str | None, mode: str) -> int | None:
    if baseline_token is None:
        return tokenizer.pad_token_id if mode == "replace" else None
    if mode != "replace":
        raise ValueError(f"baseline_token is only used with mode='replace', not {mode!r}")
    if isinstance(baseline_token, str):
        token_id = tokenizer.convert_tokens_to_ids(baseline_token)
        if token_id is None or tokenizer.convert_ids_to_tokens(token_id) != baseline_token:
            raise ValueError(f"baseline_token {baseline_token!r} is not in the tokenizer's "
                             "vocabulary")
        return int(token_id)
    if not 0 <= int(baseline_token) < len(tokenizer):
        raise ValueError(f"baseline_token id {baseline_token} is outside the vocabulary "
                         f"[0, {len(tokenizer) - 1}]")
    return int(baseline_token)


def _explain_group(group: list[tuple[str, Any]], start: int, *, model: nn.Module,
                   tokenizer: Any, explainer: WordErasure, target: int | str, score: str,
                   mode: str, baseline: int | None, limit: int | None, truncate: bool,
                   n_classes: int | None, units: str,
                   show_progress: bool) -> Iterator[TextExplanation]:
    texts = [check_text(text, start + i) for i, (text, _) in enumerate(group)]
    golds = [None if label is None else _gold_index(model, label, start + i, n_classes)
             for i, (_, label) in enumerate(group)]
    encoding = encode_batch(tokenizer, texts, start, limit, truncate)
    mask = word_feature_mask(encoding, units=units)
    for row in range(len(texts)):
        if not (mask[row] >= 0).any():
            raise ValueError(f"text {start + row} has no words the tokenizer keeps")
    ids, attention = encoding["input_ids"], encoding["attention_mask"]
    group_target = golds if target == "gold" else (None if target == "predicted" else target)
    try:
        with eval_mode(model):
            result = explainer.attribute_words(
                ids, baselines=baseline, target=group_target,
                additional_forward_args=(attention,), feature_mask=mask,
                show_progress=show_progress, score=score, mode=mode)
    except FloatingPointError as err:
        raise FloatingPointError(
            f"texts {start}..{start + len(texts) - 1}: {err}") from err
    probs = torch.softmax(result.original_outputs.double(), dim=-1)
    scores, targets = result.scores, result.targets
    if targets is None:  # "output_diff" without a target scores every class: keep the predicted
        targets = probs.argmax(-1)
        scores = scores[torch.arange(len(texts)), targets]
    for row, text in enumerate(texts):
        tokens = tokenizer.convert_ids_to_tokens(ids[row].tolist())
        joined = dict(word_tokens(tokens, mask[row]))
        features = result.feature_ids[row]
        unit_of, spans = unit_spans(encoding, row, units)
        span_of = dict(zip(dict.fromkeys(unit_of.values()), spans))
        predicted = int(probs[row].argmax())
        target_index = int(targets[row])
        yield TextExplanation(
            text=text,
            words=[text[slice(*span_of[f])] if f in span_of else joined.get(f, "")
                   for f in features],
            scores=[float(s) for s in scores[row, :len(features)]],
            predicted=predicted, predicted_label=label_name(model, predicted),
            probability=float(probs[row, predicted]),
            target=target_index, target_label=label_name(model, target_index),
            target_probability=float(probs[row, target_index]),
            gold=golds[row], gold_label=label_name(model, golds[row]),
            mode=mode, score_name=score, units=units)


def explain_texts(model: nn.Module, tokenizer: Any, texts: Iterable[str], *,
                  labels: Sequence[Any] | None = None, target: int | str = "predicted",
                  score: str = "eq1", mode: str = "delete",
                  baseline_token: int | str | None = None, max_length: int | None = None,
                  truncate: bool = False, batch_size: int = 64, texts_per_call: int = 64,
                  device: torch.device | str | None = None, units: str = "words",
                  show_progress: bool = False) -> list[TextExplanation]:
    """Erasure importance of every word of every text for an HF sequence classifier.

    Args:
        model: a sequence-classification model, called with keywords (``input_ids=``,
            ``attention_mask=``) and returning ``.logits``; re-packed rows are padded with
            its ``config.pad_token_id``, else the tokenizer's. It is evaluated in eval mode
            (restored afterwards).
        tokenizer: the model's fast tokenizer (words come from its ``word_ids``: the pieces of
            one word are one feature; special tokens are never erased).
        texts: the texts; a single string is one text.
        labels: gold labels (class indices or names from ``config.id2label``), one per text.
        target: ``"predicted"`` (the model's argmax), ``"gold"`` (needs ``labels``), a class
            index or a label name from ``config.id2label`` (``"positive"``); the scores
            explain this class.
        score: ``"eq1"`` (Li et al.'s Eq. 1) or another score of :mod:`captum_erasure._core.scores`.
        mode: ``"delete"`` (the word is removed, as in Li et al.), ``"replace"`` (by
            ``baseline_token``, default ``[PAD]``), ``"attention"`` or ``"zero"``.
        units: what a word is: ``"words"`` (the tokenizer's words: "couldn't" is ``couldn``,
            ``'``, ``t``) or ``"whitespace"`` (whitespace-separated tokens: "couldn't" and
            "film," are one word each, as LIT's AblationFlip splits text).
        max_length: longest input in tokens (default: the tokenizer's ``model_max_length``,
            capped by ``config.max_position_embeddings``). Longer texts raise ValueError unless
            ``truncate=True`` (then they are truncated with a warning).
        batch_size: rows per forward pass; ``texts_per_call`` texts are erased per call, so
            memory does not grow with the number of texts.

    Raises:
        ValueError: empty text, text too long, bad target or label, tokenizer not fast or not
            matching the model's vocabulary. FloatingPointError: the model returned NaN.
    """
    return list(iter_explanations(
        model, tokenizer, texts, labels=labels, target=target, score=score, mode=mode,
        baseline_token=baseline_token, max_length=max_length, truncate=truncate,
        batch_size=batch_size, texts_per_call=texts_per_call, device=device, units=units,
        show_progress=show_progress))

