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


def word_feature_mask(encoding, batch_size: int | None = None) -> Tensor:
    """Word index per token from a fast tokenizer's ``BatchEncoding``; -1 for special tokens
    and padding, so sub-word pieces of one word form one feature and specials are never erased.

    ``encoding`` is what ``tokenizer(texts, ...)`` returns (a fast tokenizer is required:
    slow tokenizers have no ``word_ids``).
    """
    if not getattr(encoding, "is_fast", False):
        raise TypeError("word_feature_mask needs the output of a fast (Rust) tokenizer, which "
                        "records word_ids; load the tokenizer with use_fast=True")
    input_ids = encoding["input_ids"]
    n = len(input_ids) if batch_size is None else batch_size
    length = len(input_ids[0])
    mask = torch.full((n, length), NOT_A_FEATURE, dtype=torch.long)
    for row in range(n):
        for pos, word in enumerate(encoding.word_ids(row)):
            if word is not None:
                mask[row, pos] = word
    return mask


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
        """The text with the words ``erased`` (indices) cut out. Kept words keep the text
        between them; where a word was cut, its neighbours are separated by one space so that
        they do not glue into a new word when tokenized again."""
        erased = set(erased)
        text, spans = self.texts[row], self.spans[row]
        parts: list[str] = []
        previous_end: int | None = None
        gap_had_erasure = False
        for index, (start, end) in enumerate(spans):
            if index in erased:
                gap_had_erasure = True
                continue
            if previous_end is not None:
                between = text[previous_end:start]
                if gap_had_erasure:
                    between = " "
                parts.append(between)
            parts.append(text[start:end])
            previous_end, gap_had_erasure = end, False
        return "".join(parts)


UNITS = ("words", "whitespace")


def encode_texts(model: nn.Module, tokenizer: Any, texts: str | Sequence[str], *,
                 max_length: int | None = None, truncate: bool = False,
                 units: str = "words") -> EncodedTexts:
    """Tokenize ``texts`` (a string is one text) and find their erasable units; bad input
    raises ``ValueError`` (empty text, too long, slow tokenizer, vocabulary mismatch).

    ``units="words"``: the tokenizer's words (punctuation is a word of its own);
    ``"whitespace"``: whitespace-separated tokens ("fresh," is one unit), as LIT's
    AblationFlip and LIME split text."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    check_model_and_tokenizer(model, tokenizer)
    if isinstance(texts, str):
        texts = [texts]
    texts = [check_text(text, i) for i, text in enumerate(texts)]
    if not texts:
        raise ValueError("no texts given")
    encoding = encode_batch(tokenizer, texts, 0, max_tokens_of(model, tokenizer, max_length),
                       truncate)
    mask = word_feature_mask(encoding)
    words, spans = [], []
    for row, text in enumerate(texts):
        features = feature_ids(mask[row])
        if not features:
            raise ValueError(f"text {row} has no words the tokenizer keeps")
        if features != list(range(len(features))):
            raise ValueError(f"text {row}: word ids are not consecutive from 0")
        row_spans = []
        for feature in features:
            span = encoding.word_to_chars(row, feature)
            row_spans.append((span.start, span.end))
        if units == "whitespace":
            row_spans = _whitespace_units(text, row_spans, mask[row])
        spans.append(row_spans)
        words.append([text[s:e] for s, e in row_spans])
    return EncodedTexts(texts, encoding["input_ids"], encoding["attention_mask"], mask, words,
                        spans)


def _whitespace_units(text: str, spans: list[tuple[int, int]],
                      mask_row: Tensor) -> list[tuple[int, int]]:
    """Merge the words of each whitespace token into one unit: renumbers ``mask_row`` in
    place and returns the units' character spans."""
    unit_of, units, previous_end = [], [], None
    for start, end in spans:
        if previous_end is None or text[previous_end:start] != "":
            units.append((start, end))   # whitespace (or a gap) before it: a new unit
        else:
            units[-1] = (units[-1][0], end)
        unit_of.append(len(units) - 1)
        previous_end = end
    lookup = torch.tensor(unit_of + [NOT_A_FEATURE])  # index -1 maps to NOT_A_FEATURE
    mask_row.copy_(lookup[mask_row])
    return units


















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


def words_of(encoding: Any, row: int, text: str, features: Sequence[int]) -> list[str]:
    """The words (features of ``word_ids``) of one encoded text, cut from it by offsets."""
    words = []
    for feature in features:
        span = encoding.word_to_chars(row, feature)
        words.append(text[span.start:span.end] if span is not None else "")
    return words


def encode_words(model: nn.Module, tokenizer: Any, texts: list[str]) -> tuple[Any, torch.Tensor]:
    """Right-padded encoding and word feature mask; too-long texts are a ValueError."""
    check_model_and_tokenizer(model, tokenizer)
    encoding = encode_batch(tokenizer, texts, 0, max_tokens_of(model, tokenizer), False)
    return encoding, word_feature_mask(encoding)


def word_scores(encoding: Any, mask: torch.Tensor, attributions: torch.Tensor,
                texts: list[str]) -> list[tuple[list[str], list[float]]]:
    """(words, score of each word) per text from token attributions that hold each word's
    score on its tokens (Captum's convention for feature masks)."""
    out = []
    for row, text in enumerate(texts):
        features = sorted(v for v in torch.unique(mask[row]).tolist() if v >= 0)
        first = [int((mask[row] == f).nonzero()[0]) for f in features]
        out.append((words_of(encoding, row, text, features),
                    [float(attributions[row, p]) for p in first]))
    return out
