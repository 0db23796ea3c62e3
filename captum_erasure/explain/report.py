"""Tables of explanations: a pandas frame, a text table and Markdown."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

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


def _bar(score: float, scale: float, width: int = 20) -> str:
    if not math.isfinite(score) or scale <= 0:
        return ""
    return ("+" if score > 0 else "-") * round(width * min(abs(score) / scale, 1.0))


def format_table(explanations: Sequence[TextExplanation], digits: int = 3) -> str:
    """A plain-text report: one block per text, one line per word with its score and a bar
    scaled to the text's largest absolute score (``+``: erasing the word hurts the target)."""
    blocks = []
    for i, e in enumerate(explanations):
        gold = "" if e.gold is None else f"  gold: {e.gold_label}"
        head = (f"[{i}] {e.text}\n    predicted: {e.predicted_label} (p={e.probability:.3f})"
                f"  target: {e.target_label} (p={e.target_probability:.3f}){gold}"
                f"  [{e.score_name}, {e.mode}]")
        finite = [abs(s) for s in e.scores if math.isfinite(s)]
        scale = max(finite, default=0.0)
        width = max((len(w) for w in e.words), default=0)
        lines = [f"    {w:<{width}}  {s:>+{digits + 7}.{digits}f}  {_bar(s, scale)}".rstrip()
                 for w, s in zip(e.words, e.scores)]
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

