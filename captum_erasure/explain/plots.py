"""Pictures of word scores: heatmaps (one row per text), the paper's Figure 5 layout (one
sentence across models) and self-contained HTML.

Colours use a diverging map centred at 0: red = positive = erasing the word hurts the target,
blue = negative = the model does better without the word. Heatmap and HTML share one colour
scale across their texts unless ``per_text=True``, and can show a bounded or compressed value
instead of the raw score (``values=``, see :mod:`.scales`); every figure says which scale it
uses. Figures are built on the Agg canvas, never shown with pyplot.
"""

from __future__ import annotations

import html
import math
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_hex
from matplotlib.figure import Figure

from captum_erasure.explain.scales import ColourScale, colour_scale, symlog
from captum_erasure.explain.texts import TextExplanation

CMAP = "RdBu_r"  # red for positive (erasing hurts the target), blue for negative
COLORBAR_LABEL = "red > 0: erasing the word\nlowers P(target)"


def _finite_max_abs(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


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


def row_label(e: TextExplanation, limit: float | None = None) -> str:
    """``pred pos (0.99) | gold neg x``: the prediction, its probability, the gold label when
    known (``x`` when the prediction is wrong) and, for per-text scales, the row's darkest
    value."""
    label = f"pred {e.predicted_label} ({e.probability:.2f})"
    if e.gold is not None:
        label += f" | gold {e.gold_label}" + (" \N{BALLOT X}" if e.gold != e.predicted else "")
    if limit is not None:
        label += f" | max {limit:.3g}"
    return label


SYMLOG_TICKS = (-1.0, 0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def _colorbar(figure: Figure, image, ax, scale: ColourScale, fraction: float) -> None:
    bar = figure.colorbar(image, ax=ax, shrink=0.9, fraction=fraction)
    if scale.per_text:
        name = "value / the text's largest |value|\n(scaled per text)"
    elif scale.values == "symlog":  # ticks at round scores, placed on the symlog axis
        name = f"{scale.score_name} score, symlog axis\n(one scale for all texts)"
        raw = [t for t in SYMLOG_TICKS if abs(float(symlog(t))) <= scale.limit * 1.0001]
        bar.set_ticks([float(symlog(t)) for t in raw], labels=[f"{t:g}" for t in raw])
    else:
        name = {"log_prob_drop": "drop of log P(target), nats",
                "prob_drop": "drop of P(target)"}.get(scale.values, f"{scale.score_name} score")
        name += "\n(one scale for all texts)"
    bar.set_label(f"{name}\n{COLORBAR_LABEL}", fontsize=7)
    bar.ax.tick_params(labelsize=7)


def plot_word_heatmap(explanations: Sequence[TextExplanation], path: str | Path | None = None,
                      *, values: str = "score", per_text: bool = False,
                      max_words: int | None = None, wrap: int | None = None,
                      title: str | None = None) -> Figure:
    """One row per text, one cell per word (the word is written in the cell), coloured by its
    value on one colour scale shared by all rows (``per_text=True``: each row scaled by its
    own largest value, which the row label gives). ``values``: ``"score"`` (the raw score),
    ``"symlog"``, ``"log_prob_drop"`` or ``"prob_drop"`` (:mod:`.scales`). Rows are labelled
    with the predicted label and probability and the gold label when the texts have one; a
    caption says what the values are. Saved as PNG when ``path`` is given; ``max_words`` keeps
    the first words of long texts, ``wrap`` continues a text on the next row after that many
    words (texts are then separated by lines)."""
    if not explanations:
        raise ValueError("no explanations to plot")
    if wrap is not None and wrap < 1:
        raise ValueError(f"wrap must be >= 1, got {wrap}")
    scale = colour_scale(explanations, values, per_text)
    colours = scale.colour if per_text else scale.shown
    words = [list(e.words)[:max_words] for e in explanations]
    labels = [row_label(e, scale.limits[i] if per_text else None)
              for i, e in enumerate(explanations)]
    # (text, first word) per drawn row: a text longer than ``wrap`` takes several rows
    segments = [(i, start) for i, ws in enumerate(words)
                for start in range(0, max(len(ws), 1), wrap or max(len(ws), 1))]
    n_cols = max(1, max(len(words[i][start:start + (wrap or len(words[i]))])
                        for i, start in segments))
    grid = np.full((len(segments), n_cols), np.nan)
    cells = []
    for row, (i, start) in enumerate(segments):
        chunk = words[i][start:start + n_cols]
        grid[row, :len(chunk)] = colours[i][start:start + len(chunk)]
        cells.append(chunk)
    limit = 1.0 if per_text else scale.limit

    longest = max((len(w) for ws in words for w in ws), default=1)
    width = min(3.5 + n_cols * (0.25 + 0.055 * min(longest, 15)), 40)
    caption = [textwrap.fill(line, int(width * 16)) for line in (scale.meaning(), scale.legend())]
    figure = _new_figure(width, 1.3 + 0.45 * len(segments) + 0.13 * sum(c.count("\n") + 1
                                                                      for c in caption))
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=CMAP, vmin=-limit, vmax=limit,
                      aspect="auto")
    for row, chunk in enumerate(cells):
        for j, word in enumerate(chunk):
            # parse_math=False: a word like "$5" must not be read as mathtext.
            ax.text(j, row, word, ha="center", va="center", fontsize=8, parse_math=False,
                    color=_text_color(grid[row, j], limit))
    for row in range(1, len(segments)):
        if wrap is not None and segments[row][1] == 0:  # a new text starts
            ax.axhline(row - 0.5, color="black", linewidth=0.8)
    ax.set_xticks([])
    ax.tick_params(axis="y", length=0)
    ax.set_yticks(range(len(segments)), [labels[i] if start == 0 else ""
                                         for i, start in segments], fontsize=8,
                  parse_math=False)
    if title:
        ax.set_title(title, parse_math=False)
    _colorbar(figure, image, ax, scale, 0.02 if n_cols > 8 else 0.1)
    figure.supxlabel("\n".join(caption), fontsize=7, parse_math=False)
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


def plot_word_ranking(table, path: str | Path | None = None, *, rank_by: str = "shrunk",
                      note: str = "", title: str | None = None) -> Figure:
    """A corpus ranking (rows of :meth:`CorpusImportance.table`, in order, top first): per word
    type a bar for the ``rank_by`` statistic and a dot for the mean, on a symlog axis (Eq. 1
    means reach 15 where robust statistics stay near 3), with the count in the label."""
    if len(table) == 0:
        raise ValueError("the table is empty")
    other = "mean" if rank_by == "shrunk" else "shrunk"
    figure = _new_figure(6.0, 1.4 + 0.28 * len(table))
    ax = figure.add_subplot()
    y = np.arange(len(table))
    ax.barh(y, table[rank_by], color="#d6604d", label=f"{rank_by} (ranked by)")
    ax.plot(table[other], y, "o", color="#2166ac", markersize=4, label=other)
    ax.set_yticks(y, [f"{w} ({c})" for w, c in zip(table["word"], table["count"])],
                  fontsize=8, parse_math=False)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=1.0)
    shown = np.concatenate([table[rank_by].to_numpy(float), table[other].to_numpy(float)])
    shown = shown[np.isfinite(shown)]
    ax.set_xlim(min(0.0, 2.0 * shown.min()), max(0.0, 2.0 * shown.max()) or 1.0)
    ax.axvline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("score (symlog axis: linear in [-1, 1], logarithmic beyond)", fontsize=7)
    ax.set_ylabel("word (occurrences)", fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, parse_math=False, fontsize=9)
    if note:
        figure.supxlabel(textwrap.fill(note, 100), fontsize=7, parse_math=False)
    _save(figure, path)
    return figure


# -- HTML ---------------------------------------------------------------------------------------
def _background(value: float) -> str:
    if not math.isfinite(value):
        return "transparent"
    return to_hex(matplotlib.colormaps[CMAP](Normalize(-1.0, 1.0)(value)))


def _explanation_html(e: TextExplanation, scale: ColourScale, row: int) -> str:
    spans = []
    for word, score, shown, value in zip(e.words, e.scores, scale.shown[row],
                                         scale.colour[row]):
        style = f"background:{_background(value)};color:{_text_color(value, 1.0)}"
        tip = f"{score:.4g}" if scale.values == "score" else \
            f"{scale.values} {shown:.4g} ({e.score_name} {score:.4g})"
        spans.append(f'<span class="w" style="{style}" '
                     f'title="{html.escape(tip, quote=True)}">'
                     f"{html.escape(word)}</span>")
    gold = "" if e.gold is None else f" &middot; gold: {html.escape(str(e.gold_label))}"
    if e.gold is not None and e.gold != e.predicted:
        gold += " (wrong)"
    own = f" &middot; darkest here: {scale.limits[row]:.3g}" if scale.per_text else ""
    header = (f"predicted: <b>{html.escape(str(e.predicted_label))}</b> "
              f"(p={e.probability:.3f}) &middot; target: {html.escape(str(e.target_label))} "
              f"(p={e.target_probability:.3f}){gold} &middot; {html.escape(e.score_name)}, "
              f"{html.escape(e.mode)}{own}")
    return (f'<div class="ex"><div class="head">{header}</div>'
            f'<div class="text">{" ".join(spans)}</div></div>')


def _legend_html(scale: ColourScale) -> str:
    """A colour bar (CSS gradient) with its end values and what they mean."""
    stops = ", ".join(_background(v) for v in np.linspace(-1.0, 1.0, 11))
    low, high = ("-max", "+max") if scale.per_text else \
        (f"{-scale.limit:.3g}", f"+{scale.limit:.3g}")
    return (f'<div class="legend"><span>{low}</span>'
            f'<span class="bar" style="background:linear-gradient(to right, {stops})"></span>'
            f"<span>{high}</span></div>"
            f"<p>Colour: {html.escape(scale.meaning())}; {html.escape(scale.legend())}. "
            "Hover a word for its score.</p>")


def explanations_to_html(explanations: Sequence[TextExplanation], *, values: str = "score",
                         per_text: bool = False,
                         title: str = "Word erasure importance") -> str:
    """A self-contained HTML page: a colour bar saying what the colours mean, then per text a
    header (predicted label, probability, target, gold label) and the words as coloured spans
    whose tooltip is the score. One colour scale for all texts unless ``per_text``; ``values``
    as in :func:`plot_word_heatmap`. All text is escaped."""
    scale = colour_scale(explanations, values, per_text)
    body = "\n".join(_explanation_html(e, scale, i) for i, e in enumerate(explanations))
    style = ("body{font-family:sans-serif;margin:1em}.ex{margin:0 0 1.2em}"
             ".head{color:#555;font-size:.85em;margin-bottom:.3em}"
             ".w{padding:1px 3px;border-radius:3px;line-height:1.9}"
             ".legend{display:flex;align-items:center;gap:.5em;font-size:.85em}"
             ".bar{display:inline-block;width:16em;height:1em;border:1px solid #999}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{style}</style></head>\n<body><h3>{html.escape(title)}</h3>"
            f"{_legend_html(scale)}\n{body}\n</body></html>\n")


def save_html(explanations: Sequence[TextExplanation], path: str | Path, *,
              values: str = "score", per_text: bool = False) -> Path:
    """Write :func:`explanations_to_html` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(explanations_to_html(explanations, values=values, per_text=per_text),
                    encoding="utf-8")
    return path
