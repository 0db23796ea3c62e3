"""Corpus-level word importance (Li, Monroe & Jurafsky 2016, Tables 1-3) and the per-occurrence
negative-importance error analysis (Table 2).

Every occurrence of a word is erased on its own and scored (Eq. 1 by default); a word type's
importance is the mean over its occurrences. Texts are streamed group by group, and only running
statistics per word type plus a bounded heap of the most negative occurrences are kept, so memory
is O(vocabulary + keep_negative) whatever the corpus size.

The mean is the paper's statistic but Eq. 1 is unbounded above: one occurrence in a text the
model is sure about can score 60 and carry a word type's mean. Tables therefore also give a
robust statistic and rank by it unless asked otherwise (``rank_by``): ``shrunk``, the mean of
the scores on a symlog scale (``sign(s) ln(1 + |s|)``, :func:`.scales.symlog`) pulled towards
the corpus-wide symlog mean by ``prior_count`` pseudo-occurrences, then mapped back to score
units. One huge occurrence then counts like a large one, not like sixty typical ones, and a
word seen once is pulled most of the way to the corpus mean. Sums of symlog scores are kept
exactly like the other sums, so memory stays flat and merges stay exact.

The per-type sums are exact (integers in units of float64's smallest step), so partial results
of parts of a corpus merge (:meth:`CorpusImportance.merge`) into exactly the statistics one pass
over the whole corpus gives: the mean and std do not depend on how the corpus was split.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from captum_erasure.explain.report import markdown_table
from captum_erasure.explain.scales import symlog, symlog_inverse
from captum_erasure.explain.texts import TextExplanation, iter_explanations

TABLE_COLUMNS = ["word", "shrunk", "mean", "std", "count", "min", "max", "examples"]
RANKINGS = ("shrunk", "mean")
DEFAULT_PRIOR_COUNT = 3


OCCURRENCE_COLUMNS = ["word", "score", "position", "sentence", "gold", "gold_label",
                      "predicted", "predicted_label", "probability", "target", "target_label"]


_UNIT_BITS = 1074  # float64's smallest subnormal is 2**-1074: every float is a multiple of it


def _exact(score: float) -> tuple[int, int]:
    """``score`` and ``score**2`` as exact integers in units of 2**-1074 and 2**-2148."""
    numerator, denominator = score.as_integer_ratio()  # the denominator is a power of two
    shift = _UNIT_BITS - (denominator.bit_length() - 1)
    return numerator << shift, (numerator * numerator) << (2 * shift)


@dataclass
class WordStats:
    """Statistics of one word type's per-occurrence scores: the count, the *exact* sum and sum
    of squares (Python integers, so no rounding however many scores of whatever sizes are
    added, and partial statistics merge exactly), min, max and a few example sentences."""

    count: int = 0
    total: int = 0                  # sum of scores, in units of 2**-1074
    total_sq: int = 0               # sum of squared scores, in units of 2**-2148
    total_symlog: int = 0           # sum of symlog(score), in units of 2**-1074
    min: float = math.inf
    max: float = -math.inf
    examples: list[str] = field(default_factory=list)

    def add(self, score: float) -> None:
        value, square = _exact(float(score))
        self.count += 1
        self.total += value
        self.total_sq += square
        self.total_symlog += _exact(float(symlog(score)))[0]
        self.min = min(self.min, score)
        self.max = max(self.max, score)

    def merge(self, other: WordStats, examples_per_word: int) -> None:
        """Add the statistics of later occurrences (``other``'s examples go after ours)."""
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.total_symlog += other.total_symlog
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        for text in other.examples:
            if len(self.examples) >= examples_per_word:
                break
            if text not in self.examples:
                self.examples.append(text)

    @property
    def mean(self) -> float:
        """The mean, correctly rounded from the exact sum (NaN before any score)."""
        return self.total / (self.count << _UNIT_BITS) if self.count else math.nan

    def shrunk(self, prior_count: float, prior_symlog_total: int, prior_n: int) -> float:
        """The symlog mean with ``prior_count`` pseudo-occurrences at the corpus-wide symlog
        mean (``prior_symlog_total / prior_n``, exact units), in score units."""
        if self.count == 0 or prior_n == 0:
            return math.nan
        prior = prior_count * (prior_symlog_total / (prior_n << _UNIT_BITS))
        mean = (self.total_symlog / (1 << _UNIT_BITS) + prior) / (self.count + prior_count)
        return float(symlog_inverse(mean))

    @property
    def m2(self) -> float:
        """Sum of squared deviations from the mean, correctly rounded from exact integers."""
        return self._m2_exact() / (self.count << 2 * _UNIT_BITS) if self.count else math.nan

    def _m2_exact(self) -> int:  # count * m2, in units of 2**-2148
        return self.count * self.total_sq - self.total * self.total

    @property
    def std(self) -> float:
        """Sample standard deviation (NaN for a single occurrence)."""
        if self.count < 2:
            return math.nan
        return math.sqrt(self._m2_exact() / ((self.count * (self.count - 1)) << 2 * _UNIT_BITS))


class CorpusImportance:
    """Per-word-type importance over a corpus plus the most negative single occurrences.

    Filled by :func:`corpus_word_importance` (or :meth:`add` for explanations computed
    elsewhere). ``lowercase`` folds word types; ``min_count`` is the default frequency cut-off
    for the tables, ``rank_by`` their default order (``"shrunk"`` or ``"mean"``) and
    ``prior_count`` the pseudo-occurrences of the ``shrunk`` statistic (module docstring).
    """

    def __init__(self, *, lowercase: bool = True, min_count: int = 1, examples_per_word: int = 3,
                 keep_negative: int = 200, score_name: str = "eq1", mode: str = "delete",
                 target: Any = "predicted", rank_by: str = "shrunk",
                 prior_count: float = DEFAULT_PRIOR_COUNT) -> None:
        if keep_negative < 0 or examples_per_word < 0 or min_count < 1:
            raise ValueError("keep_negative and examples_per_word must be >= 0, min_count >= 1")
        self.rank_by = _check_rank_by(rank_by)
        self.prior_count = _check_prior_count(prior_count)
        self.lowercase = lowercase
        self.min_count = min_count
        self.examples_per_word = examples_per_word
        self.keep_negative = keep_negative
        self.score_name = score_name
        self.mode = mode
        self.target = target
        self.stats: dict[str, WordStats] = {}
        self.n_texts = 0
        self.n_occurrences = 0
        # heap keyed by (-score, (-text index, -position))
        self._negative: list[tuple[float, tuple[int, int], dict]] = []

    # -- filling ----------------------------------------------------------------------------
    def key(self, word: str) -> str:
        """The word type a word counts towards."""
        return word.lower() if self.lowercase else word

    def add(self, explanation: TextExplanation, index: int | None = None) -> None:
        """Add every scored word occurrence of one explained text; ``index`` is its place in
        the corpus (default: the number of texts added before), which orders ties among the
        negative occurrences."""
        index = self.n_texts if index is None else index
        self.n_texts += 1
        for position, (word, score) in enumerate(zip(explanation.words, explanation.scores)):
            if not math.isfinite(score):
                continue
            self.n_occurrences += 1
            stats = self.stats.setdefault(self.key(word), WordStats())
            stats.add(score)
            if len(stats.examples) < self.examples_per_word and \
                    explanation.text not in stats.examples:
                stats.examples.append(explanation.text)
            if score < 0 and self.keep_negative:
                self._keep_if_negative_enough(word, score, index, position, explanation)

    def _keep_if_negative_enough(self, word: str, score: float, index: int, position: int,
                                 e: TextExplanation) -> None:
        # Max-heap on score (min-heap on -score): the root is the least negative kept one.
        # Ties keep the earlier occurrence (a later one has a smaller second key).
        self._push((-score, (-index, -position), dict(
            word=word, score=score, position=position, sentence=e.text, gold=e.gold,
            gold_label=e.gold_label, predicted=e.predicted, predicted_label=e.predicted_label,
            probability=e.probability, target=e.target, target_label=e.target_label)))

    def _push(self, item: tuple) -> None:
        if len(self._negative) < self.keep_negative:
            heapq.heappush(self._negative, item)
        else:
            heapq.heappushpop(self._negative, item)

    def merge(self, other: CorpusImportance, offset: int | None = None) -> CorpusImportance:
        """Add the partial result of the texts that follow ours (``offset``: the corpus index
        of ``other``'s first text, default ``self.n_texts``). Merging the parts of a corpus in
        order gives exactly what one pass over it gives (counts, sums, min, max, examples and
        the negative occurrences); returns ``self``."""
        settings = ("lowercase", "examples_per_word", "keep_negative", "score_name", "mode")
        differ = [name for name in settings if getattr(self, name) != getattr(other, name)]
        if differ:
            raise ValueError(f"cannot merge corpus results with different settings {differ}")
        offset = self.n_texts if offset is None else offset
        self.n_texts += other.n_texts
        self.n_occurrences += other.n_occurrences
        for word, stats in other.stats.items():
            mine = self.stats.get(word)
            if mine is None:
                self.stats[word] = mine = WordStats()
            mine.merge(stats, self.examples_per_word)
        for neg_score, (neg_index, neg_position), record in other._negative:
            self._push((neg_score, (neg_index - offset, neg_position), dict(record)))
        return self

    # -- views ------------------------------------------------------------------------------
    def _prior(self) -> tuple[int, int]:
        return sum(s.total_symlog for s in self.stats.values()), \
            sum(s.count for s in self.stats.values())

    def _row(self, word: str, stats: WordStats, prior_count: float,
             prior: tuple[int, int]) -> dict:
        return dict(word=word, shrunk=stats.shrunk(prior_count, *prior), mean=stats.mean,
                    std=stats.std, count=stats.count, min=stats.min, max=stats.max,
                    examples=list(stats.examples))

    def table(self, min_count: int | None = None, rank_by: str | None = None,
              prior_count: float | None = None) -> pd.DataFrame:
        """One row per word type seen at least ``min_count`` times, by ``rank_by`` descending
        (default: this object's ``rank_by``, ``"shrunk"`` unless set; Li et al. rank by
        ``"mean"``). Columns: ``shrunk`` (robust, see the module docstring), ``mean`` and
        ``std`` of the scores, ``count``, ``min``, ``max`` and example sentences."""
        min_count = self.min_count if min_count is None else min_count
        rank_by = _check_rank_by(self.rank_by if rank_by is None else rank_by)
        prior_count = _check_prior_count(
            self.prior_count if prior_count is None else prior_count)
        prior = self._prior()
        rows = [self._row(w, s, prior_count, prior)
                for w, s in self.stats.items() if s.count >= min_count]
        frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        frame = frame.sort_values([rank_by, "count", "word"], ascending=[False, False, True],
                                  kind="stable")
        return frame.reset_index(drop=True)

    def top_positive(self, n: int = 20, min_count: int | None = None,
                     rank_by: str | None = None) -> pd.DataFrame:
        """The ``n`` types with the largest positive ``rank_by`` statistic (Li et al. Table 1
        with ``rank_by="mean"``)."""
        rank_by = _check_rank_by(self.rank_by if rank_by is None else rank_by)
        frame = self.table(min_count, rank_by)
        return frame[frame[rank_by] > 0].head(n).reset_index(drop=True)

    def top_negative(self, n: int = 20, min_count: int | None = None,
                     rank_by: str | None = None) -> pd.DataFrame:
        """The ``n`` types with the most negative ``rank_by`` statistic, most negative first."""
        rank_by = _check_rank_by(self.rank_by if rank_by is None else rank_by)
        frame = self.table(min_count, rank_by)
        frame = frame[frame[rank_by] < 0].sort_values([rank_by, "count", "word"],
                                                      ascending=[True, False, True],
                                                      kind="stable")
        return frame.head(n).reset_index(drop=True)

    def ranking_note(self, min_count: int | None = None, rank_by: str | None = None) -> str:
        """One sentence saying how the tables are ranked, for captions and Markdown files."""
        min_count = self.min_count if min_count is None else min_count
        rank_by = _check_rank_by(self.rank_by if rank_by is None else rank_by)
        how = (f"shrunk = symlog mean of the {self.score_name} scores with {self.prior_count:g} "
               "pseudo-occurrences at the corpus symlog mean, in score units"
               if rank_by == "shrunk" else f"mean {self.score_name} score, as in Li et al.")
        return (f"Ranked by {rank_by} ({how}); word types seen at least {min_count} times; "
                f"{self.n_occurrences} occurrences in {self.n_texts} texts.")

    def negative_occurrences(self, n: int | None = None) -> pd.DataFrame:
        """The most negative single occurrences (Li et al. Table 2), most negative first:
        the model does better on that sentence without the word."""
        kept = sorted(self._negative, key=lambda item: (-item[0], -item[1][0], -item[1][1]))
        rows = [record for _, _, record in kept][:n]
        return pd.DataFrame(rows, columns=OCCURRENCE_COLUMNS)

    def word(self, word: str) -> pd.Series:
        """Statistics of one word type (Li et al. Table 3); NaN and count 0 if never seen."""
        stats = self.stats.get(self.key(word))
        if stats is None:
            return pd.Series(dict(word=word, shrunk=math.nan, mean=math.nan, std=math.nan,
                                  count=0, min=math.nan, max=math.nan,
                                  examples=[]))[TABLE_COLUMNS]
        return pd.Series(self._row(self.key(word), stats, self.prior_count,
                                   self._prior()))[TABLE_COLUMNS]

    def words(self, words: Iterable[str]) -> pd.DataFrame:
        """:meth:`word` for several words, in the order given (Table 3 for chosen words)."""
        return pd.DataFrame([self.word(w) for w in words], columns=TABLE_COLUMNS) \
            .reset_index(drop=True)

    def save(self, folder: str | Path, min_count: int | None = None) -> dict[str, Path]:
        """Write the per-type table and the negative occurrences as CSV and Markdown."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        table = self.table(min_count)
        table["examples"] = table["examples"].map(" || ".join)
        frames = {"word_importance": table, "negative_occurrences": self.negative_occurrences()}
        notes = {"word_importance": self.ranking_note(min_count),
                 "negative_occurrences": "Single occurrences, most negative first."}
        paths = {}
        for name, frame in frames.items():
            paths[f"{name}.csv"] = folder / f"{name}.csv"
            frame.to_csv(paths[f"{name}.csv"], index=False)
            paths[f"{name}.md"] = folder / f"{name}.md"
            paths[f"{name}.md"].write_text(f"{notes[name]}\n\n{markdown_table(frame)}\n",
                                           encoding="utf-8")
        return paths

    def __repr__(self) -> str:
        return (f"CorpusImportance({len(self.stats)} word types, {self.n_occurrences} "
                f"occurrences in {self.n_texts} texts, score={self.score_name!r}, "
                f"mode={self.mode!r}, target={self.target!r})")


def _check_rank_by(rank_by: str) -> str:
    if rank_by not in RANKINGS:
        raise ValueError(f"rank_by must be one of {RANKINGS}, got {rank_by!r}")
    return rank_by


def _check_prior_count(prior_count: float) -> float:
    if not (math.isfinite(prior_count) and prior_count >= 0):
        raise ValueError(f"prior_count must be a finite number >= 0, got {prior_count!r}")
    return prior_count


def corpus_word_importance(model: nn.Module, tokenizer: Any, texts: Iterable[str],
                           labels: Iterable[Any] | None = None, *, target: Any = None,
                           score: str = "eq1", mode: str = "delete", texts_per_call: int = 64,
                           min_count: int = 1, lowercase: bool = True,
                           examples_per_word: int = 3, keep_negative: int = 200,
                           rank_by: str = "shrunk", prior_count: float = DEFAULT_PRIOR_COUNT,
                           show_progress: bool = True,
                           **explain_kwargs: Any) -> CorpusImportance:
    """Mean erasure importance of every word type over a corpus (Li et al. Tables 1-3) and the
    most negative occurrences (Table 2).

    Args:
        texts, labels: any iterables (generators are read once, ``texts_per_call`` at a time).
        target: ``"gold"`` (default when labels are given, as in the paper), ``"predicted"``
            (default without labels) or a class index.
        score, mode: as in :func:`~captum_erasure.explain.explain_texts`; each occurrence is
            erased separately and the per-occurrence scores averaged per type.
        min_count: default frequency cut-off for the tables.
        rank_by, prior_count: default order of the tables (``"shrunk"``, robust to single
            huge scores, or ``"mean"`` as in the paper) and the shrinkage's pseudo-count.
        lowercase: fold word types to lower case.
        examples_per_word: example sentences kept per type.
        keep_negative: how many of the most negative occurrences are kept.
        explain_kwargs: passed on (``batch_size``, ``max_length``, ``truncate``, ``device``,
            ``baseline_token``).
    """
    if target is None:
        target = "gold" if labels is not None else "predicted"
    result = CorpusImportance(lowercase=lowercase, min_count=min_count,
                              examples_per_word=examples_per_word, keep_negative=keep_negative,
                              score_name=score, mode=mode, target=target, rank_by=rank_by,
                              prior_count=prior_count)
    explanations = iter_explanations(model, tokenizer, texts, labels=labels, target=target,
                                     score=score, mode=mode, texts_per_call=texts_per_call,
                                     **explain_kwargs)
    total = len(texts) if hasattr(texts, "__len__") and not isinstance(texts, str) else None
    with tqdm(total=total, desc="corpus word importance", unit="text",
              disable=not show_progress) as bar:
        for explanation in explanations:
            result.add(explanation)
            bar.update(1)
    return result

