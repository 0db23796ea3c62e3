"""Token/word bookkeeping for text inputs: word feature masks from fast tokenizers."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from captum_erasure._core.inputs import check_positive_int, model_limits

NOT_A_FEATURE = -1  # feature-mask value for tokens that are never erased (specials, padding)


UNITS = ("words", "whitespace")


def check_units(units: Any) -> str:
    """``units`` if it is one of :data:`UNITS`, else a ValueError listing them."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS} ('words': the tokenizer's words, "
                         f"'whitespace': whitespace-separated tokens), got {units!r}")
    return units


def unit_spans(encoding: Any, row: int, units: str = "words") -> tuple[dict[int, int],
                                                                      list[tuple[int, int]]]:
    """The erasable units of one encoded text: ``(unit of each tokenizer word, (start, end)
    character span of each unit)``, from the fast tokenizer's offsets.

    ``units="words"``: each tokenizer word is a unit (numbered by its word id; "couldn't" is
    ``couldn``, ``'``, ``t`` for BERT's tokenizer); ``"whitespace"``: the words that touch
    (no character between them) form one unit, so "couldn't" and "film," are one unit each,
    as LIT's AblationFlip and LIME split text. Units are numbered 0, 1, ... in order."""
    check_units(units)
    word_ids = sorted({w for w in encoding.word_ids(row) if w is not None})
    unit_of: dict[int, int] = {}
    spans: list[tuple[int, int]] = []
    previous_end: int | None = None
    for word in word_ids:
        span = encoding.word_to_chars(row, word)
        start, end = (span.start, span.end) if span is not None else (previous_end or 0,) * 2
        if units == "words" or previous_end is None or start > previous_end:
            spans.append((start, end))
        else:  # touches the previous word: the same whitespace token
            spans[-1] = (spans[-1][0], end)
        unit_of[word] = word if units == "words" else len(spans) - 1
        previous_end = end
    return unit_of, spans


def word_feature_mask(encoding, batch_size: int | None = None, units: str = "words") -> Tensor:
    """Unit index per token from a fast tokenizer's ``BatchEncoding``; -1 for special tokens
    and padding, so sub-word pieces of one word form one feature and specials are never erased.

    ``encoding`` is what ``tokenizer(texts, ...)`` returns (a fast tokenizer is required:
    slow tokenizers have no ``word_ids``). ``units``: ``"words"`` (the tokenizer's words) or
    ``"whitespace"`` (whitespace-separated tokens; see :func:`unit_spans`).
    """
    check_units(units)
    if not getattr(encoding, "is_fast", False):
        raise TypeError("word_feature_mask needs the output of a fast (Rust) tokenizer, which "
                        "records word_ids; load the tokenizer with use_fast=True")
    input_ids = encoding["input_ids"]
    n = len(input_ids) if batch_size is None else batch_size
    length = len(input_ids[0])
    mask = torch.full((n, length), NOT_A_FEATURE, dtype=torch.long)
    for row in range(n):
        unit_of = unit_spans(encoding, row, units)[0] if units != "words" else None
        for pos, word in enumerate(encoding.word_ids(row)):
            if word is not None:
                mask[row, pos] = word if unit_of is None else unit_of[word]
    return mask


def text_without(text: str, spans: Sequence[tuple[int, int]], erased: Iterable[int]) -> str:
    """``text`` with the units ``erased`` (indices into ``spans``) cut out, rebuilt from its
    own characters: kept units and the text between them stay exactly as written
    ("couldn't" stays "couldn't"). Where units were cut, their characters go and the
    whitespace around them collapses: of the whitespace before and after the cut, the one
    after is kept (the one before when there is none after); at the start or end of the text
    the cut takes the whitespace beside it ("fresh film." without ``film`` is "fresh .", and
    "I couldn't" without ``couldn`` is "I 't": no new word is glued together). A unit glued
    on both sides (``'`` in "couldn't" with ``units="words"``) leaves "couldnt"."""
    erased = set(erased)
    kept = [i for i in range(len(spans)) if i not in erased]
    if not kept:
        return ""
    if not erased:
        return text
    parts = [text[:spans[kept[0]][0]] if kept[0] == 0 else ""]
    for previous, current in zip(kept, kept[1:]):
        parts.append(text[spans[previous][0]:spans[previous][1]])
        if current == previous + 1:  # nothing cut here: the text between them as written
            parts.append(text[spans[previous][1]:spans[current][0]])
        else:
            before = text[spans[previous][1]:spans[previous + 1][0]]
            after = text[spans[current - 1][1]:spans[current][0]]
            parts.append(after or before)
    last = kept[-1]
    parts.append(text[spans[last][0]:spans[last][1]])
    if last == len(spans) - 1:
        parts.append(text[spans[last][1]:])
    return "".join(parts)


def feature_ids(mask_row: Tensor) -> list[int]:
    """Sorted erasable feature ids in one row of a feature mask."""
    return sorted(v for v in torch.unique(mask_row).tolist() if v >= 0)


def word_tokens(tokens: Sequence[str], mask_row: Tensor) -> list[tuple[int, str]]:
    """Join the pieces of each word: ``[(feature_id, word_text), ...]`` in order.

    WordPiece continuations (``##``) are glued; other pieces are joined as they come, with the
    SentencePiece/BPE space markers removed.
    """
    words: dict[int, str] = {}
    for token, feature in zip(tokens, mask_row.tolist()):
        if feature < 0:
            continue
        piece = token[2:] if token.startswith("##") else token.lstrip("\u2581\u0120")
        words[feature] = words.get(feature, "") + piece
    return sorted(words.items())


# -- texts --------------------------------------------------------------------------------------
@dataclass
class EncodedTexts:
    """Texts tokenized into one padded batch, with their words."""

    texts: list[str]
    input_ids: Tensor               # (n, seq) right padded
    attention_mask: Tensor          # (n, seq)
    feature_mask: Tensor            # (n, seq) word index per token, -1 for specials/padding
    words: list[list[str]]          # per text, its words as they appear in the text
    spans: list[list[tuple[int, int]]]  # per text, (start, end) character span of each word

    def __len__(self) -> int:
        return len(self.texts)

    def text_without(self, row: int, erased: Iterable[int]) -> str:
        """The text with the units ``erased`` (indices) cut out (see :func:`text_without`)."""
        return text_without(self.texts[row], self.spans[row], erased)


def encode_texts(model: nn.Module, tokenizer: Any, texts: str | Sequence[str], *,
                 max_length: int | None = None, truncate: bool = False,
                 units: str = "words") -> EncodedTexts:
    """Tokenize ``texts`` (a string is one text) and find their erasable units; bad input
    raises ``ValueError`` (empty text, too long, slow tokenizer, vocabulary mismatch).

    ``units="words"``: the tokenizer's words (punctuation is a word of its own);
    ``"whitespace"``: whitespace-separated tokens ("fresh," is one unit), as LIT's
    AblationFlip and LIME split text (see :func:`unit_spans`)."""
    check_units(units)
    check_model_and_tokenizer(model, tokenizer)
    if isinstance(texts, str):
        texts = [texts]
    texts = [check_text(text, i) for i, text in enumerate(texts)]
    if not texts:
        raise ValueError("no texts given")
    encoding = encode_batch(tokenizer, texts, 0, max_tokens_of(model, tokenizer, max_length),
                            truncate)
    mask = word_feature_mask(encoding, units=units)
    words, spans = [], []
    for row, text in enumerate(texts):
        features = feature_ids(mask[row])
        if not features:
            raise ValueError(f"text {row} has no words the tokenizer keeps")
        if features != list(range(len(features))):
            raise ValueError(f"text {row}: word ids are not consecutive from 0")
        row_spans = unit_spans(encoding, row, units)[1]
        spans.append(row_spans)
        words.append([text[s:e] for s, e in row_spans])
    return EncodedTexts(texts, encoding["input_ids"], encoding["attention_mask"], mask, words,
                        spans)


# -- checks -------------------------------------------------------------------------------------
def num_labels(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    n = getattr(config, "num_labels", None)
    return int(n) if n else None


def label_name(model: nn.Module, index: int | None) -> str | None:
    if index is None:
        return None
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return str(id2label.get(index, id2label.get(str(index), index)))


def label_ids(model: Any) -> dict[str, int]:
    """The model's label names and their class indices, from ``config.id2label`` (empty
    when the model has no config)."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    return {str(name): int(index) for index, name in id2label.items()}


def label_index(model: Any, name: str, what: str = "target") -> int:
    """The class index of the label ``name``; an unknown name is a ValueError listing the
    model's label names."""
    names = label_ids(model)
    if not names:
        raise ValueError(f"{what} {name!r} is a label name, but the model has no "
                         "config.id2label to look it up in; pass a class index")
    if name not in names:
        valid = ", ".join(repr(n) for n in sorted(names, key=names.get))
        raise ValueError(f"{what} {name!r} is not one of the model's labels: {valid}")
    return names[name]


def resolve_label_names(target: Any, model: Any, what: str = "target") -> Any:
    """``target`` with label names (strings, alone or in a list/tuple of per-example targets)
    replaced by class indices from the model's ``config.id2label``; anything else is returned
    unchanged, for the methods' own checks (Captum's meaning of ints, tensors, tuples)."""
    if isinstance(target, str):
        return label_index(model, target, what)
    if isinstance(target, (list, tuple)) and any(isinstance(t, str) for t in target):
        return [label_index(model, t, what) if isinstance(t, str) else t for t in target]
    return target


def check_model_and_tokenizer(model: nn.Module, tokenizer: Any) -> None:
    """Raise ValueError unless ``tokenizer`` is a fast tokenizer whose ids fit the model."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; word erasure needs the "
            "word_ids of a fast (Rust) tokenizer: load it with use_fast=True")
    if tokenizer.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token first")
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    rows = getattr(embedding, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise ValueError(
            f"tokenizer/model vocabulary mismatch: the tokenizer has {len(tokenizer)} tokens but "
            f"the model's input embedding has only {rows} rows; use the model's own tokenizer")


def max_tokens_of(model: nn.Module, tokenizer: Any, max_length: int | None = None) -> int | None:
    """Longest input (special tokens included) the model accepts: ``max_length`` or the
    tokenizer's ``model_max_length``, capped by the model's positions (the same limit the
    token-id entry points check: :func:`~captum_erasure._core.inputs.model_limits`)."""
    max_length = check_positive_int("max_length", max_length, allow_none=True)
    limit = max_length if max_length is not None else getattr(tokenizer, "model_max_length", None)
    positions = model_limits(model)[0]
    if positions and (limit is None or limit > positions):
        limit = positions
    return limit


def check_text(text: Any, position: int) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text {position} is a {type(text).__name__}, not a string")
    if not text.strip():
        raise ValueError(f"text {position} is empty or whitespace-only; nothing to erase")
    return text


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Dropout would make every erased forward random: evaluate in eval mode, then restore.
    Anything that is not an ``nn.Module`` (a plain forward function) passes through."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def encode_batch(tokenizer: Any, texts: list[str], start: int, limit: int | None,
            truncate: bool) -> Any:
    """Pad the group; texts over ``limit`` tokens are an error or (``truncate``) a warning."""
    kwargs = dict(padding=True, padding_side="right", return_tensors="pt",
                  return_token_type_ids=False, verbose=False)
    encoding = tokenizer(texts, truncation=False, **kwargs)
    lengths = encoding["attention_mask"].sum(1).tolist()
    too_long = [(start + i, n) for i, n in enumerate(lengths) if limit is not None and n > limit]
    if not too_long:
        return encoding
    position, n_tokens = too_long[0]
    if not truncate:
        raise ValueError(
            f"text {position} has {n_tokens} tokens, more than the model's maximum of {limit} "
            f"({len(too_long)} text(s) of this group are too long); shorten it, raise "
            "max_length, or pass truncate=True")
    warnings.warn(f"{len(too_long)} text(s) longer than {limit} tokens were truncated "
                  f"(first: text {position}, {n_tokens} tokens)", stacklevel=4)
    return tokenizer(texts, truncation=True, max_length=limit, **kwargs)


def encode_words(model: nn.Module, tokenizer: Any, texts: list[str],
                 units: str = "words") -> tuple[Any, torch.Tensor]:
    """Right-padded encoding and unit feature mask; too-long texts are a ValueError."""
    check_units(units)
    check_model_and_tokenizer(model, tokenizer)
    encoding = encode_batch(tokenizer, texts, 0, max_tokens_of(model, tokenizer), False)
    return encoding, word_feature_mask(encoding, units=units)


def word_scores(encoding: Any, mask: torch.Tensor, attributions: torch.Tensor,
                texts: list[str], units: str = "words") -> list[tuple[list[str], list[float]]]:
    """(units, score of each unit) per text from token attributions that hold each unit's
    score on its tokens (Captum's convention for feature masks); ``units`` as the mask's."""
    out = []
    for row, text in enumerate(texts):
        features = feature_ids(mask[row])
        first = [int((mask[row] == f).nonzero()[0]) for f in features]
        unit_of, spans = unit_spans(encoding, row, units)
        span_of = {unit: spans[i] for i, unit in enumerate(dict.fromkeys(unit_of.values()))}
        out.append(([text[slice(*span_of[f])] if f in span_of else "" for f in features],
                    [float(attributions[row, p]) for p in first]))
    return out
