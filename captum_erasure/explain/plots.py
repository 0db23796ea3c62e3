"""Pictures of word scores: heatmaps (one row per text), the paper's Figure 5 layout (one
sentence across models) and self-contained HTML.

Colours use a diverging map centred at 0: red = positive = erasing the word hurts the target,
blue = negative = the model does better without the word. Eq. 1 scores are unbounded above (they
reach ~100 when P(target) is close to 1), so colours are normalised (per text by default) while
the numbers shown stay raw. Figures are built on the Agg canvas, never shown with pyplot.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure

from captum_erasure.explain.texts import TextExplanation

CMAP = "RdBu_r"  # red for positive (erasing hurts the target), blue for negative
NORMALIZE = ("per_text", "global", None)
COLORBAR_LABEL = "red > 0: erasing the word\nlowers P(target)"


def _finite_max_abs(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


def normalized_scores(explanations: Sequence[TextExplanation],
                      normalize: str | None = "per_text") -> list[np.ndarray]:
    """Scores per text scaled for colour: ``"per_text"`` divides each text by its largest
    absolute score, ``"global"`` by the largest over all texts, ``None`` leaves them raw.
    Non-finite scores become NaN (drawn blank)."""
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
    rows = [np.asarray(e.scores, dtype=float) for e in explanations]
    rows = [np.where(np.isfinite(r), r, np.nan) for r in rows]
    if normalize is None:
        return rows
    if normalize == "global":
        scale = max((_finite_max_abs(r) for r in rows), default=0.0)
        return [r / scale if scale > 0 else r for r in rows]
    return [r / s if (s := _finite_max_abs(r)) > 0 else r for r in rows]


def _color_limit(rows: Sequence[np.ndarray], normalize: str | None) -> float:
    if normalize is not None:
        return 1.0
    return max((_finite_max_abs(r) for r in rows), default=0.0) or 1.0


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | Path | None) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=150)


def _text_color(value: float, limit: float) -> str:
    return "white" if math.isfinite(value) and abs(value) > 0.6 * limit else "black"


def plot_word_heatmap(explanations: Sequence[TextExplanation], path: str | Path | None = None,
                      *, normalize: str | None = "per_text", max_words: int | None = None,
                      title: str | None = None) -> Figure:
    """One row per text, one cell per word (the word is written in the cell), coloured by its
    (normalised) score. Saved as PNG when ``path`` is given. Rows are labelled with the
    predicted label and probability; ``max_words`` keeps the first words of long texts."""
    if not explanations:
        raise ValueError("no explanations to plot")
    rows = normalized_scores(explanations, normalize)
    words = [list(e.words) for e in explanations]
    if max_words is not None:
        rows, words = [r[:max_words] for r in rows], [w[:max_words] for w in words]
    n_cols = max(1, max(len(w) for w in words))
    grid = np.full((len(rows), n_cols), np.nan)
    for i, r in enumerate(rows):
        grid[i, :len(r)] = r
    limit = _color_limit(rows, normalize)

    longest = max((len(w) for ws in words for w in ws), default=1)
    figure = _new_figure(min(2.0 + n_cols * (0.3 + 0.06 * min(longest, 15)), 40),
                         1.2 + 0.45 * len(rows))
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=CMAP, vmin=-limit, vmax=limit,
                      aspect="auto")
    for i, ws in enumerate(words):
        for j, word in enumerate(ws):
            # parse_math=False: a word like "$5" must not be read as mathtext.
            ax.text(j, i, word, ha="center", va="center", fontsize=8, parse_math=False,
                    color=_text_color(grid[i, j], limit))
    ax.set_xticks([])
    ax.set_yticks(range(len(rows)),
                  [f"{e.predicted_label} ({e.probability:.2f})" for e in explanations],
                  fontsize=8, parse_math=False)
    if title:
        ax.set_title(title, parse_math=False)
    suffix = {"per_text": " (per text)", "global": " (global)", None: ""}
    fraction = 0.02 if n_cols > 8 else 0.1
    figure.colorbar(image, ax=ax, shrink=0.9, fraction=fraction).set_label(
        f"{explanations[0].score_name}{suffix[normalize]}; {COLORBAR_LABEL}", fontsize=7)
    _save(figure, path)
    return figure


def plot_word_columns(words: Sequence[str], score_columns: Mapping[str, Sequence[float]],
                      path: str | Path | None = None, *,
                      normalize: str | None = "per_column", title: str | None = None) -> Figure:
    """Li et al.'s Figure 5 layout: one sentence, one row per word, one column per model or
    method, each cell annotated with its raw score. Colours are scaled per column by default
    (models' scores differ in range); ``normalize="global"`` or ``None`` share one scale."""
    if normalize not in ("per_column", "global", None):
        raise ValueError(f"normalize must be 'per_column', 'global' or None, got {normalize!r}")
    if not score_columns:
        raise ValueError("score_columns is empty")
    for name, column in score_columns.items():
        if len(column) != len(words):
            raise ValueError(f"column {name!r} has {len(column)} scores for {len(words)} words")
    raw = np.array([list(c) for c in score_columns.values()], dtype=float).T.reshape(
        len(words), len(score_columns))
    raw = np.where(np.isfinite(raw), raw, np.nan)
    if normalize == "per_column":
        scales = np.array([_finite_max_abs(c) or 1.0 for c in raw.T])
        colour, limit = raw / scales, 1.0
    else:
        limit = _finite_max_abs(raw) or 1.0
        colour = raw / limit if normalize == "global" else raw
        limit = 1.0 if normalize == "global" else limit

    figure = _new_figure(1.5 + 1.1 * len(score_columns), 0.8 + 0.35 * len(words))
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(colour), cmap=CMAP, vmin=-limit, vmax=limit,
                      aspect="auto")
    for i in range(len(words)):
        for j in range(len(score_columns)):
            label = "" if math.isnan(raw[i, j]) else f"{raw[i, j]:.3g}"
            ax.text(j, i, label, ha="center", va="center", fontsize=7,
                    color=_text_color(colour[i, j], limit))
    ax.set_xticks(range(len(score_columns)), list(score_columns), fontsize=8, rotation=30,
                  ha="right", parse_math=False)
    ax.set_yticks(range(len(words)), list(words), fontsize=8, parse_math=False)
    if title:
        ax.set_title(title, parse_math=False)
    scale = {"per_column": "scaled per column; ", "global": "scaled globally; ", None: ""}
    figure.colorbar(image, ax=ax, shrink=0.9).set_label(scale[normalize] + COLORBAR_LABEL,
                                                        fontsize=7)
    _save(figure, path)
    return figure


# -- HTML ---------------------------------------------------------------------------------------
def _background(value: float) -> str:
    if not math.isfinite(value):
        return "transparent"
    return to_hex(matplotlib.colormaps[CMAP](Normalize(-1.0, 1.0)(value)))


def _explanation_html(e: TextExplanation, colours: np.ndarray) -> str:
    spans = []
    for word, score, value in zip(e.words, e.scores, colours):
        value = float(np.clip(value, -1.0, 1.0))  # raw scores (normalize=None) saturate at 1
        style = f"background:{_background(value)};color:{_text_color(value, 1.0)}"
        spans.append(f'<span class="w" style="{style}" '
                     f'title="{html.escape(f"{score:.4g}", quote=True)}">'
                     f"{html.escape(word)}</span>")
    gold = "" if e.gold is None else f" &middot; gold: {html.escape(str(e.gold_label))}"
    header = (f"predicted: <b>{html.escape(str(e.predicted_label))}</b> "
              f"(p={e.probability:.3f}) &middot; target: {html.escape(str(e.target_label))} "
              f"(p={e.target_probability:.3f}){gold} &middot; {html.escape(e.score_name)}, "
              f"{html.escape(e.mode)}")
    return (f'<div class="ex"><div class="head">{header}</div>'
            f'<div class="text">{" ".join(spans)}</div></div>')


def explanations_to_html(explanations: Sequence[TextExplanation], *,
                         normalize: str | None = "per_text",
                         title: str = "Word erasure importance") -> str:
    """A self-contained HTML page: per text a header (predicted label, probability, target)
    and the words as coloured spans whose tooltip is the raw score. All text is escaped.
    With ``normalize=None`` the raw scores are coloured on [-1, 1] (Eq. 1's lower bound),
    larger ones saturate."""
    rows = normalized_scores(explanations, normalize)
    body = "\n".join(_explanation_html(e, r) for e, r in zip(explanations, rows))
    style = ("body{font-family:sans-serif;margin:1em}.ex{margin:0 0 1.2em}"
             ".head{color:#555;font-size:.85em;margin-bottom:.3em}"
             ".w{padding:1px 3px;border-radius:3px;line-height:1.9}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{style}</style></head>\n<body><h3>{html.escape(title)}</h3>"
            f"<p>Red: erasing the word lowers P(target); blue: the model does better without "
            f"it. Hover a word for its score.</p>\n{body}\n</body></html>\n")


def save_html(explanations: Sequence[TextExplanation], path: str | Path, *,
              normalize: str | None = "per_text") -> Path:
    """Write :func:`explanations_to_html` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(explanations_to_html(explanations, normalize=normalize), encoding="utf-8")
    return path
