"""Section 4 over several training seeds, with bootstrap 95 % intervals: Table 3, the
sentiment-word ratios and Figure 4, from every word occurrence's score under every seed.

Intervals resample word **occurrences** (percentile bootstrap,
:mod:`captum_erasure.metrics.bootstrap`) of the score averaged over the seeds' models, so they
hold the uncertainty of the held-out snippets for the seed-averaged model; the seeds' own
spread is reported next to them (one value per seed). Occurrences of one snippet are treated
as independent, which makes the intervals somewhat narrow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from torch import nn

from captum_erasure.explain.texts import explain_texts
from captum_erasure.metrics.bootstrap import (
    bootstrap_interval,
    paired_bootstrap,
    resampled_means,
)
from captum_erasure.paper.li2016.figures import (
    finish_importance_histogram,
    importance_bins,
    new_figure,
    save_figure,
)

Occurrences = Mapping[str, Mapping[int, pd.DataFrame]]  # model -> seed -> occurrence scores


def occurrence_scores(model: nn.Module, tokenizer: Any, texts: Sequence[str],
                      labels: Sequence[Any], *, score: str = "eq1", batch_size: int = 256,
                      show_progress: bool = False) -> pd.DataFrame:
    """One row per scored word occurrence: snippet, position, word (lower case), score (Eq. 1
    with the gold label, the word deleted, as :func:`corpus_word_importance`)."""
    explanations = explain_texts(model, tokenizer, texts, labels=labels, target="gold",
                                 score=score, batch_size=batch_size, show_progress=show_progress)
    rows = [(i, p, w.lower(), s) for i, e in enumerate(explanations)
            for p, (w, s) in enumerate(zip(e.words, e.scores)) if np.isfinite(s)]
    return pd.DataFrame(rows, columns=["snippet", "position", "word", "score"])


def seed_average(per_seed: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Per occurrence, the mean score over the seeds (same snippets, same words)."""
    frames = [f.set_index(["snippet", "position", "word"])["score"] for f in per_seed.values()]
    joined = pd.concat(frames, axis=1, join="inner")
    return joined.mean(axis=1).rename("score").reset_index()


def _cell(values: np.ndarray, seed: int) -> dict[str, float]:
    interval = bootstrap_interval(values, seed=seed)
    return {"mean": interval.mean, "low": interval.low, "high": interval.high}


def table3_with_intervals(occurrences: Occurrences, words: Iterable[str],
                          pair: tuple[str, str] = ("Bi-LSTM", "Uni-LSTM"),
                          seed: int = 0) -> pd.DataFrame:
    """Table 3: per word and model the seed-averaged mean importance with its interval and the
    per-seed means; then ``pair[0] - pair[1]`` by a paired bootstrap over the word's
    occurrences (the same occurrence under both models)."""
    averaged = {name: seed_average(per_seed) for name, per_seed in occurrences.items()}
    rows = []
    for word in words:
        row: dict[str, Any] = {"word": word}
        for name, frame in averaged.items():
            values = frame.loc[frame["word"] == word, "score"].to_numpy()
            row["count"] = len(values)
            if len(values) == 0:
                continue
            for key, value in _cell(values, seed).items():
                row[f"{name} {key}"] = value
            row[f"{name} per seed"] = " / ".join(
                f"{f.loc[f['word'] == word, 'score'].mean():.3g}"
                for f in occurrences[name].values())
        if row["count"] and all(name in averaged for name in pair):
            first, second = (averaged[n].loc[averaged[n]["word"] == word, "score"].to_numpy()
                             for n in pair)
            comparison = paired_bootstrap(first, second, seed=seed)
            label = f"{pair[0]} - {pair[1]}"
            row[f"{label} mean"] = comparison.difference.mean
            row[f"{label} low"] = comparison.difference.low
            row[f"{label} high"] = comparison.difference.high
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_with_intervals(occurrences: Occurrences, sentiment_words: set[str],
                               seed: int = 0) -> pd.DataFrame:
    """Per model: mean importance of sentiment-word occurrences and of the others, and their
    ratio, each with its interval (the ratio from independent resamples of the two means),
    plus the ratio under each seed's model alone."""
    rows = []
    for name, per_seed in occurrences.items():
        frame = seed_average(per_seed)
        strong = frame["word"].isin(sentiment_words)
        sentiment = frame.loc[strong, "score"].to_numpy()
        other = frame.loc[~strong, "score"].to_numpy()
        ratios = resampled_means(sentiment, seed=seed) / resampled_means(other, seed=seed + 1)
        low, high = np.quantile(ratios, [0.025, 0.975])
        row = {"model": name, "seeds": len(per_seed), "sentiment occurrences": len(sentiment),
               **{f"sentiment {k}": v for k, v in _cell(sentiment, seed).items()},
               **{f"other {k}": v for k, v in _cell(other, seed).items()},
               "ratio": sentiment.mean() / other.mean(), "ratio low": float(low),
               "ratio high": float(high)}
        for s, seed_frame in per_seed.items():
            mask = seed_frame["word"].isin(sentiment_words)
            row[f"sentiment mean, seed {s}"] = seed_frame.loc[mask, "score"].mean()
            row[f"ratio, seed {s}"] = (seed_frame.loc[mask, "score"].mean()
                                       / seed_frame.loc[~mask, "score"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def paired_model_difference(occurrences: Occurrences, first: str, second: str,
                            words: set[str] | None = None, seed: int = 0) -> dict[str, float]:
    """Mean seed-averaged importance of ``first`` minus ``second`` over the same occurrences
    (only ``words`` if given), paired bootstrap interval."""
    a, b = (seed_average(occurrences[n]) for n in (first, second))
    if words is not None:
        a, b = a[a["word"].isin(words)], b[b["word"].isin(words)]
    merged = a.merge(b, on=["snippet", "position", "word"], suffixes=("_a", "_b"))
    comparison = paired_bootstrap(merged["score_a"], merged["score_b"], seed=seed)
    return {"difference": comparison.difference.mean, "low": comparison.difference.low,
            "high": comparison.difference.high, "p": comparison.p_value,
            "occurrences": comparison.difference.n}


def type_histograms(occurrences: Occurrences, bins: int = 40
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Figure 4's bucket counts of word-type means, per model, one row per seed (shared
    edges)."""
    means = {name: [f.groupby("word")["score"].mean().to_numpy() for f in per_seed.values()]
             for name, per_seed in occurrences.items()}
    values = np.concatenate([m for ms in means.values() for m in ms])
    edges = importance_bins(min(-1.0, float(values.min())), float(values.max()), bins)
    counts = {name: np.stack([np.histogram(m, edges)[0] for m in ms])
              for name, ms in means.items()}
    return edges, counts


def plot_histogram_over_seeds(occurrences: Occurrences, path: str | Path | None = None, *,
                              bins: int = 40, title: str | None = None):
    """Figure 4 over seeds: per model the mean number of word types per bucket (line) and the
    range over the seeds (band); log counts, x linear to 1 and logarithmic beyond."""
    edges, counts = type_histograms(occurrences, bins)
    figure = new_figure(5.8, 3.6)
    ax = figure.add_subplot()
    for name, rows in counts.items():
        line = ax.stairs(rows.mean(0), edges, linewidth=1.3,
                         label=f"{name} (mean of {len(rows)} seeds; band: range)")
        ax.stairs(rows.max(0), edges, baseline=rows.min(0), fill=True, alpha=0.25,
                  color=line.get_edgecolor())
    finish_importance_histogram(ax, edges[-1], "mean word importance (Eq. 1) of a word type",
                                "number of word types (log scale)", title)
    save_figure(figure, path)
    return figure
