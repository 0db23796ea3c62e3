"""The same word-erasure analysis over several models, side by side (Li et al. 2016 section 4):
corpus tables per model, the top words per model (Table 1), chosen words across models
(Table 3), one sentence's word scores per model (Figure 5), and tables written as CSV and
Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
from torch import nn

from captum_erasure.explain.corpus import CorpusImportance, corpus_word_importance
from captum_erasure.explain.report import markdown_table
from captum_erasure.explain.texts import explain_texts

Models = Mapping[str, tuple]  # name -> (model, tokenizer, ...): extra items are ignored


def corpus_importance_by_model(models: Models, texts: Sequence[str],
                               labels: Sequence[Any] | None = None,
                               **kwargs: Any) -> dict[str, CorpusImportance]:
    """:func:`~captum_erasure.explain.corpus.corpus_word_importance` for every model on the same
    texts (target: the gold label when ``labels`` are given, as in the paper)."""
    return {name: corpus_word_importance(entry[0], entry[1], texts, labels, **kwargs)
            for name, entry in models.items()}


def _word_with_score(word: str, score: float) -> str:
    """``"word (score)"`` with 3 significant digits, large scores in full ("3,046")."""
    return f"{word} ({score:,.0f})" if abs(score) >= 1000 else f"{word} ({score:.3g})"


def top_words_by_model(corpora: Mapping[str, CorpusImportance], n: int = 10,
                       min_count: int = 1) -> pd.DataFrame:
    """Table 1: rank, then per model its ``n`` word types with the highest mean importance,
    written ``"word (score)"`` (types seen fewer than ``min_count`` times left out)."""
    frame = pd.DataFrame({"rank": range(1, n + 1)})
    for name, corpus in corpora.items():
        top = corpus.top_positive(n, min_count, rank_by="mean")  # the paper ranks by mean
        cells = [_word_with_score(w, s) for w, s in zip(top["word"], top["mean"])]
        frame[name] = cells + [""] * (n - len(cells))
    return frame


def chosen_words_by_model(corpora: Mapping[str, CorpusImportance],
                          words: Iterable[str]) -> pd.DataFrame:
    """Table 3: one row per word, its mean importance under each model and its number of
    occurrences (the same for every model on the same texts); NaN where it never occurs."""
    words = list(words)
    frame = pd.DataFrame({"word": words})
    for name, corpus in corpora.items():
        frame[name] = corpus.words(words)["mean"].to_numpy()
    first = next(iter(corpora.values()))
    frame["count"] = first.words(words)["count"].to_numpy()
    return frame


def sentence_scores_by_model(models: Models, text: str, label: Any = None,
                             **kwargs: Any) -> tuple[list[str], dict[str, list[float]]]:
    """Figure 5: the words of ``text`` and each model's score per word (target: ``label`` if
    given, else each model's prediction). The models must split the text into the same
    words (the same tokenizer)."""
    words: list[str] | None = None
    columns: dict[str, list[float]] = {}
    for name, entry in models.items():
        target = "predicted" if label is None else "gold"
        labels = None if label is None else [label]
        explanation = explain_texts(entry[0], entry[1], [text], labels=labels, target=target,
                                    **kwargs)[0]
        if words is not None and explanation.words != words:
            raise ValueError(f"model {name!r} splits the text into other words: "
                             f"{explanation.words} vs {words}")
        words = explanation.words
        columns[name] = explanation.scores
    return words or [], columns


def write_table(frame: pd.DataFrame, folder: str | Path, name: str) -> list[Path]:
    """``<name>.csv`` and ``<name>.md`` in ``folder``; floats to 4 significant digits in the
    Markdown."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    frame.to_csv(csv, index=False)
    md.write_text(markdown_table(frame) + "\n", encoding="utf-8")
    return [csv, md]


def trainable_parameters(model: nn.Module) -> int:
    """Parameters that training changes (the frozen GloVe matrix excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
