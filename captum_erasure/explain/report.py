"""Tables of explanations: a pandas frame, a text table and Markdown."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from captum_erasure.explain.scales import colour_scale
from captum_erasure.explain.texts import TextExplanation


# -- views --------------------------------------------------------------------------------------
def explanations_to_frame(explanations: Sequence[TextExplanation]) -> pd.DataFrame:
    """One row per word: example index, text, position, word, score, target, prediction."""
    rows = [dict(example=i, text=e.text, position=position, word=word, score=score,
                 target=e.target, target_label=e.target_label, predicted=e.predicted,
                 predicted_label=e.predicted_label, probability=e.probability,
                 target_probability=e.target_probability, gold=e.gold, mode=e.mode,
                 score_name=e.score_name)
            for i, e in enumerate(explanations)
            for position, (word, score) in enumerate(zip(e.words, e.scores))]
    columns = ["example", "text", "position", "word", "score", "target", "target_label",
               "predicted", "predicted_label", "probability", "target_probability", "gold",
               "mode", "score_name"]
    return pd.DataFrame(rows, columns=columns)


BAR_WIDTH = 20


def _bar(value: float, scale: float, width: int = BAR_WIDTH) -> str:
    if not math.isfinite(value) or scale <= 0:
        return ""
    return ("+" if value > 0 else "-") * round(width * min(abs(value) / scale, 1.0))


def format_table(explanations: Sequence[TextExplanation], digits: int = 3, *,
                 values: str = "score", per_text: bool = False) -> str:
    """A plain-text report: a line saying what the bars mean, then one block per text, one
    line per word with its score and a bar (``+``: erasing the word hurts the target). Bars
    share one scale across the texts (20 characters = the largest ``|value|`` of all texts)
    unless ``per_text``; ``values`` as in :func:`~captum_erasure.explain.plots.plot_word_heatmap`
    (a column with the shown value is added when it is not the score)."""
    if not explanations:
        return ""
    scale = colour_scale(explanations, values, per_text)
    full = "+" * BAR_WIDTH
    if per_text:
        legend = f"bars: {scale.meaning()}, scaled per text ({full} = the text's largest |value|)"
    else:
        legend = f"bars: {scale.meaning()}, one scale for all texts ({full} = {scale.limit:.3g})"
    blocks = [legend]
    for i, e in enumerate(explanations):
        gold = "" if e.gold is None else f"  gold: {e.gold_label}"
        own = f"  [bar scale {scale.limits[i]:.3g}]" if per_text else ""
        head = (f"[{i}] {e.text}\n    predicted: {e.predicted_label} (p={e.probability:.3f})"
                f"  target: {e.target_label} (p={e.target_probability:.3f}){gold}"
                f"  [{e.score_name}, {e.mode}]{own}")
        width = max((len(w) for w in e.words), default=0)
        lines = []
        for w, s, v in zip(e.words, e.scores, scale.shown[i]):
            shown = "" if values == "score" else f"  {v:>+{digits + 7}.{digits}f}"
            lines.append(f"    {w:<{width}}  {s:>+{digits + 7}.{digits}f}{shown}  "
                         f"{_bar(v, scale.limits[i])}".rstrip())
        blocks.append("\n".join([head, *lines]))
    return "\n\n".join(blocks)


def markdown_table(frame: pd.DataFrame) -> str:
    """Markdown table; ``|`` in cells is escaped so sentences cannot break the layout."""
    frame = frame.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
    try:
        return frame.to_markdown(index=False, floatfmt=".4g")
    except ImportError:  # pandas needs `tabulate` for to_markdown
        cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
                 for row in frame.itertuples(index=False)]
        lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
                 "|" + "|".join("---" for _ in frame.columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])

