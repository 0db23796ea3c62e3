"""Word-level tasks of Li et al. (2016) section 3, built offline from GloVe's vocabulary.

Each task maps single words to classes; the model sees only the word's 50-d GloVe vector.
All tasks use "plain" words (lower-case letters, possibly joined by ``-`` or ``'``), have a
seeded 0.8/0.1/0.1 train/dev/test split and can cap their largest classes.

- **sentiment**: VADER's human valence per word (the lexicon in the ``vaderSentiment`` sdist):
  negative (valence <= -0.5), positive (>= 0.5), and neutral words that VADER does not list,
  matched in frequency to the lexicon words (so frequency alone cannot tell neutral apart).
  The paper used the MPQA lexicon (3 classes).
- **shape**: the paper's word shape, "X, XX, XXX, ... by the number of characters"; lengths of
  ``max_length`` or more share one class.
- **frequency**: log-frequency class from GloVe's row order (by corpus frequency): rank bins of
  half a decade (1-1k, 1k-3k, 3k-10k, ...), the same number of words per bin. The paper
  regressed log frequency with squared error; Eq. 1 needs a likelihood, hence classes.
- **prefix** / **suffix**: a word is ``prefix + stem`` (or ``stem + suffix``) for an affix of a
  fixed English list when the stem is itself a frequent word (suffixes also allow the usual
  spelling changes: a dropped ``e``, ``y`` -> ``i``, a doubled final consonant); the longest
  such affix is the class, words without one are left out. The paper segmented words with
  Morfessor and kept the 250 most frequent affixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from captum_erasure.data import load_vader_lexicon
from captum_erasure.paper.li2016.glove import (
    glove_rank,
    glove_words,
    is_plain_word,
    vectors_of,
)

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
PREFIXES = ("anti", "auto", "bi", "co", "counter", "de", "dis", "em", "en", "extra", "fore",
            "hyper", "il", "im", "in", "inter", "ir", "micro", "mid", "mini", "mis", "mono",
            "multi", "non", "out", "over", "post", "pre", "pro", "pseudo", "re", "semi", "sub",
            "super", "trans", "tri", "ultra", "un", "under")
SUFFIXES = ("able", "al", "ation", "ed", "er", "est", "ful", "hood", "ible", "ic", "ing", "ion",
            "ish", "ism", "ist", "ity", "ive", "ize", "less", "ly", "ment", "ness", "ous", "s",
            "ship")
FREQUENCY_BIN_EDGES = (0, 1_000, 3_000, 10_000, 30_000, 100_000, 400_000)
MIN_STEM = 3


@dataclass
class LexicalTask:
    """Words with one class each and a train/dev/test split."""

    name: str
    words: list[str]
    labels: np.ndarray        # int64 class index per word
    class_names: list[str]
    splits: np.ndarray        # "train", "dev" or "test" per word
    description: str = ""

    def __len__(self) -> int:
        return len(self.words)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def label_of(self, word: str) -> str | None:
        """The class name of ``word``, or ``None`` if the task does not contain it."""
        try:
            return self.class_names[int(self.labels[self.words.index(word)])]
        except ValueError:
            return None

    def part(self, split: str) -> tuple[list[str], Tensor, Tensor]:
        """``(words, vectors (n, 50), labels (n,))`` of one split."""
        if split not in ("train", "dev", "test"):
            raise ValueError(f"split must be train, dev or test, got {split!r}")
        index = np.flatnonzero(self.splits == split)
        words = [self.words[i] for i in index]
        return (words, torch.from_numpy(vectors_of(words)),
                torch.from_numpy(self.labels[index].astype(np.int64)))

    def class_counts(self) -> pd.Series:
        return pd.Series(np.bincount(self.labels, minlength=self.n_classes),
                         index=self.class_names, name=self.name)


def plain_vocabulary(n_words: int) -> list[str]:
    """The plain words among GloVe's ``n_words`` most frequent tokens, in frequency order."""
    return [w for w in glove_words()[:n_words] if is_plain_word(w)]


def make_task(name: str, labelled: dict[str, str], class_order: list[str] | None = None, *,
              max_per_class: int | None = None, seed: int = 0,
              description: str = "") -> LexicalTask:
    """A task from ``word -> class name``: classes in ``class_order`` (default sorted), each
    capped at ``max_per_class`` words (a seeded sample), and a seeded train/dev/test split."""
    rng = np.random.default_rng(seed)
    classes = list(class_order or sorted(set(labelled.values())))
    words: list[str] = []
    labels: list[int] = []
    for index, name_ in enumerate(classes):
        members = sorted(w for w, c in labelled.items() if c == name_)
        if max_per_class is not None and len(members) > max_per_class:
            members = sorted(rng.choice(members, max_per_class, replace=False).tolist())
        words += members
        labels += [index] * len(members)
    order = rng.permutation(len(words))
    cut_train = round(SPLIT_FRACTIONS[0] * len(words))
    cut_dev = cut_train + round(SPLIT_FRACTIONS[1] * len(words))
    splits = np.empty(len(words), dtype=object)
    splits[order[:cut_train]], splits[order[cut_train:cut_dev]] = "train", "dev"
    splits[order[cut_dev:]] = "test"
    return LexicalTask(name, words, np.asarray(labels, dtype=np.int64), classes,
                       splits.astype(str), description)


# -- sentiment ----------------------------------------------------------------------------------
def sentiment_labels(lexicon: pd.DataFrame, threshold: float = 0.5, n_words: int = 100_000,
                     seed: int = 0) -> dict[str, str]:
    """``word -> negative / neutral / positive`` from a ``word, valence`` lexicon, over the
    ``n_words`` most frequent GloVe words: polar words by the sign of valence (|valence| <
    ``threshold`` left out), plus as many neutral words as the smaller polar class, each the
    next plain GloVe word not in the lexicon after a randomly chosen lexicon word (so the
    neutral words follow the lexicon's frequency distribution)."""
    rank = glove_rank()
    lexicon = lexicon[lexicon["word"].map(
        lambda w: is_plain_word(w) and rank.get(w, n_words) < n_words)]
    labels = {w: ("positive" if v > 0 else "negative")
              for w, v in zip(lexicon["word"], lexicon["valence"]) if abs(v) >= threshold}
    n_neutral = min(sum(c == "positive" for c in labels.values()),
                    sum(c == "negative" for c in labels.values()))
    listed = set(lexicon["word"])
    words = glove_words()[:n_words]
    rng = np.random.default_rng(seed)
    anchors = sorted(rng.choice(sorted(labels), n_neutral, replace=False), key=rank.get)
    position = 0
    for anchor in anchors:  # the first unused, unlisted plain word at or after the anchor
        position = max(position, rank[anchor])
        while position < len(words) and (words[position] in listed or
                                         words[position] in labels or
                                         not is_plain_word(words[position])):
            position += 1
        if position == len(words):
            break
        labels[words[position]] = "neutral"
        position += 1
    return labels


def sentiment_task(threshold: float = 0.5, n_words: int = 100_000,
                   max_per_class: int | None = None, seed: int = 0) -> LexicalTask:
    """VADER valence classes (see the module docstring)."""
    labels = sentiment_labels(load_vader_lexicon(), threshold, n_words, seed)
    return make_task("sentiment", labels, ["negative", "neutral", "positive"],
                     max_per_class=max_per_class, seed=seed,
                     description=f"VADER valence <= -{threshold} / >= {threshold}, plus "
                                 "frequency-matched unlisted words as neutral")


# -- shape and frequency ------------------------------------------------------------------------
def shape_class(word: str, max_length: int = 12) -> str:
    """The paper's word shape: one ``X`` per character, ``max_length`` or more pooled."""
    return "X" * len(word) if len(word) < max_length else "X" * max_length + "+"


def shape_task(n_words: int = 50_000, max_length: int = 12, max_per_class: int | None = 2000,
               seed: int = 0) -> LexicalTask:
    """Word length classes over the plain words among the ``n_words`` most frequent."""
    labels = {w: shape_class(w, max_length) for w in plain_vocabulary(n_words)}
    order = [shape_class("x" * n, max_length) for n in range(1, max_length + 1)]
    return make_task("shape", labels, [c for c in order if c in set(labels.values())],
                     max_per_class=max_per_class, seed=seed,
                     description=f"number of characters (1 .. {max_length}+)")


def frequency_class(rank: int, edges: tuple[int, ...] = FREQUENCY_BIN_EDGES) -> str:
    """The rank bin ``"[lo, hi)"`` (0-based GloVe row) that a word's frequency rank falls in."""
    for low, high in zip(edges, edges[1:]):
        if low <= rank < high:
            return f"rank {low:,}-{high:,}"
    raise ValueError(f"rank {rank} is outside the bins {edges}")


def frequency_task(edges: tuple[int, ...] = FREQUENCY_BIN_EDGES, seed: int = 0) -> LexicalTask:
    """Log-frequency classes: plain words binned by GloVe rank, every bin cut to the size of
    the smallest (so the classes are balanced)."""
    words = plain_vocabulary(edges[-1])
    rank = glove_rank()
    labels = {w: frequency_class(rank[w], edges) for w in words}
    classes = [f"rank {lo:,}-{hi:,}" for lo, hi in zip(edges, edges[1:])]
    smallest = min(sum(c == name for c in labels.values()) for name in classes)
    return make_task("frequency", labels, classes, max_per_class=smallest, seed=seed,
                     description="GloVe frequency-rank bins " + ", ".join(classes))


# -- affixes ------------------------------------------------------------------------------------
def _stems(stem: str) -> tuple[str, ...]:
    """Spellings of the word a suffix was added to: as is, with a dropped "e" restored, with
    "i" back to "y", without a doubled final consonant."""
    candidates = [stem, stem + "e"]
    if stem.endswith("i"):
        candidates.append(stem[:-1] + "y")
    if len(stem) > 1 and stem[-1] == stem[-2] and stem[-1] not in "aeiou":
        candidates.append(stem[:-1])
    return tuple(candidates)


def prefix_of(word: str, known: set[str], prefixes: tuple[str, ...] = PREFIXES) -> str | None:
    """The longest prefix ``p`` with ``word == p + stem`` or ``p + "-" + stem`` and ``stem`` a
    known word of at least 3 letters."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if word.startswith(prefix):
            stem = word[len(prefix):].removeprefix("-")
            if len(stem) >= MIN_STEM and stem in known:
                return prefix
    return None


def suffix_of(word: str, known: set[str], suffixes: tuple[str, ...] = SUFFIXES) -> str | None:
    """The longest suffix ``s`` with ``word == stem + s`` and ``stem`` (after undoing a
    spelling change) a known word of at least 3 letters."""
    for suffix in sorted(suffixes, key=len, reverse=True):
        if word.endswith(suffix) and len(word) > len(suffix):
            stem = word[:-len(suffix)]
            if any(len(s) >= MIN_STEM and s in known and s != word for s in _stems(stem)):
                return suffix
    return None


def affix_task(kind: str, n_words: int = 100_000, n_stems: int = 50_000, min_count: int = 30,
               max_per_class: int | None = 1500, seed: int = 0) -> LexicalTask:
    """The ``"prefix"`` or ``"suffix"`` task over the plain words among the ``n_words`` most
    frequent; stems must be among the ``n_stems`` most frequent plain words; affixes found
    fewer than ``min_count`` times are dropped."""
    if kind not in ("prefix", "suffix"):
        raise ValueError(f"kind must be 'prefix' or 'suffix', got {kind!r}")
    find: Callable[[str, set[str]], str | None] = prefix_of if kind == "prefix" else suffix_of
    known = set(plain_vocabulary(n_stems))
    found = {w: a for w in plain_vocabulary(n_words) if (a := find(w, known)) is not None}
    counts = pd.Series(list(found.values())).value_counts()
    keep = set(counts[counts >= min_count].index)
    labels = {w: a for w, a in found.items() if a in keep}
    return make_task(kind, labels, max_per_class=max_per_class, seed=seed,
                     description=f"{len(keep)} {kind}es of a fixed English list, stem a frequent "
                                 "word")


def build_lexical_tasks(seed: int = 0) -> dict[str, LexicalTask]:
    """All five tasks, in the paper's row order (prefix, suffix, sentiment, shape, frequency)."""
    return {"prefix": affix_task("prefix", seed=seed), "suffix": affix_task("suffix", seed=seed),
            "sentiment": sentiment_task(seed=seed), "shape": shape_task(seed=seed),
            "frequency": frequency_task(seed=seed)}
