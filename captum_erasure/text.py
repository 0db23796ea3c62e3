"""Token/word bookkeeping for text inputs: word feature masks from fast tokenizers."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

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
