"""Snippets encoded once for every method, and word scores from each method's own unit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from captum_erasure._core.text import word_feature_mask


# -- examples ---------------------------------------------------------------------------------
@dataclass
class Example:
    text: str
    label: int
    ids: Tensor            # (L,) with special tokens
    word_of_token: Tensor  # (L,) word index, -1 for special tokens
    words: list            # word strings, in order
    word_spans: list       # (start, end) character span of each word
    body: slice            # the token positions between the leading and trailing specials


def encode_examples(tokenizer: Any, texts: Sequence[str], labels: Sequence[int],
                    max_length: int | None = None) -> list[Example]:
    """Tokenise each text (fast tokenizer: words from ``word_ids``) and check it is usable."""
    examples = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is empty")
        enc = tokenizer([text])
        mask = word_feature_mask(enc)[0]
        ids = torch.tensor(enc["input_ids"][0])
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"text {i} has {len(ids)} tokens, more than the model's maximum "
                             f"{max_length}")
        positions = (mask >= 0).nonzero().flatten()
        if len(positions) == 0:
            raise ValueError(f"text {i} has no word")
        first, last = int(positions[0]), int(positions[-1])
        if bool((mask[first:last + 1] < 0).any()):
            raise ValueError(f"text {i}: special tokens inside the text are not supported")
        # Word ids are renumbered 0..n-1 in order (word_ids may skip numbers).
        ordered = sorted(set(mask[mask >= 0].tolist()))
        renumber = {w: k for k, w in enumerate(ordered)}
        word_of_token = torch.tensor([renumber.get(w, -1) if w >= 0 else -1
                                      for w in mask.tolist()])
        spans = [tuple(enc.word_to_chars(0, w)) for w in ordered]
        words = [text[start:end] for start, end in spans]  # the text, not [UNK]
        examples.append(Example(text, int(label), ids, word_of_token, words, spans,
                                slice(first, last + 1)))
    return examples


def pad_batch(examples: Sequence[Example], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, word feature mask) of a right-padded batch."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.full_like(ids, -1)
    for i, e in enumerate(examples):
        ids[i, :len(e.ids)], attention[i, :len(e.ids)] = e.ids, 1
        mask[i, :len(e.ids)] = e.word_of_token
    return ids, attention, mask


def spread_words(examples: Sequence[Example], scores: Sequence[Sequence[float]],
                 width: int) -> Tensor:
    """Token attributions in which every piece holds its word's score (specials 0)."""
    attr = torch.zeros(len(examples), width, dtype=torch.float64)
    for i, (e, s) in enumerate(zip(examples, scores)):
        values = torch.as_tensor(list(s), dtype=torch.float64)
        if len(values) != len(e.words):
            raise ValueError(f"{len(values)} scores for {len(e.words)} words")
        words = e.word_of_token
        attr[i, :len(words)] = torch.where(words >= 0, values[words.clamp_min(0)], 0.0)
    return attr


def words_from_pieces(example: Example, piece_scores: Tensor, reduce: str) -> list[float]:
    """Word scores from per-piece scores over the body (``"sum"``) or from pieces that each
    hold their word's value (``"first"``)."""
    words = example.word_of_token[example.body]
    values = piece_scores.detach().double().flatten().cpu()
    if len(values) != len(words):
        raise ValueError(f"{len(values)} piece scores for {len(words)} pieces")
    out = torch.zeros(len(example.words), dtype=torch.float64)
    if reduce == "sum":
        out.index_add_(0, words, values)
    else:
        out[words.flip(0)] = values.flip(0)  # the first piece wins
    return out.tolist()


def align_split_words(example: Example, split_scores: Sequence[float]) -> list[float]:
    """Model-word scores from scores of the text's ``str.split`` tokens (LIT's LIME): each
    word gets its whitespace token's score divided by the model words in that token."""
    spans = [m.span() for m in re.finditer(r"\S+", example.text)]
    if len(spans) != len(split_scores):
        raise ValueError(f"{len(split_scores)} scores for {len(spans)} whitespace tokens")
    owner = []
    for start, _ in example.word_spans:
        owner.append(next((k for k, (s, e) in enumerate(spans) if s <= start < e), None))
    counts = {k: owner.count(k) for k in set(owner) if k is not None}
    return [float(split_scores[k]) / counts[k] if k is not None else 0.0 for k in owner]

