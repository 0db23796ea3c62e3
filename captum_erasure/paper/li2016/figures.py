"""Li et al.'s (2016) figures for any importance values: the dimension-importance heatmap
(Figure 1), per-layer unit heatmaps (Figures 2 and 6), the frequency correlation scatter
(Figure 3) and the histogram of word importance per model (Figure 4). Figure 5 (one sentence,
one column per model) is :func:`captum_erasure.explain.plots.plot_word_columns`.

Figures are built on the Agg canvas (never shown with pyplot) and saved as PNG when a path is
given; colours follow :mod:`captum_erasure.explain.plots` (red: erasing hurts the gold label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from captum_erasure._core.inputs import check_positive_int
from captum_erasure.explain.plots import CMAP
from captum_erasure.paper.li2016.glove import pearson

DPI = 100  # figures are committed to the docs: keep them small


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path | None, dpi: int = DPI) -> None:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png", dpi=dpi)


def _matrix(rows: Mapping[str, Sequence[float]], ragged: bool = False) -> np.ndarray:
    """Rows stacked; with ``ragged``, shorter rows are padded with NaN (drawn blank)."""
    if not rows:
        raise ValueError("nothing to plot: no rows")
    widths = [len(v) for v in rows.values()]
    if len(set(widths)) != 1 and not ragged:
        raise ValueError(f"rows differ in length: {sorted(set(widths))}")
    matrix = np.full((len(rows), max(widths)), np.nan)
    for i, row in enumerate(rows.values()):
        matrix[i, :len(row)] = np.asarray(row, dtype=float)
    return matrix


def plot_dimension_heatmap(rows: Mapping[str, Sequence[float]], path: str | Path | None = None,
                           *, normalize: str | None = "per_row", removed: Sequence[int] = (),
                           title: str | None = None) -> Figure:
    """Figure 1: one row per task, one column per input dimension (0-based), coloured by
    importance. ``normalize="per_row"`` divides each row by its largest absolute value (Eq. 1
    means differ by orders of magnitude between tasks); ``None`` shows raw values. Columns in
    ``removed`` (dimensions the models never saw) are drawn blank and marked under the axis."""
    if normalize not in ("per_row", None):
        raise ValueError(f"normalize must be 'per_row' or None, got {normalize!r}")
    values = _matrix(rows)
    values[:, list(removed)] = np.nan
    if normalize == "per_row":
        scale = np.nanmax(np.abs(values), axis=1, keepdims=True)
        values = values / np.where(scale > 0, scale, 1.0)
    limit = float(np.nanmax(np.abs(values))) or 1.0
    figure = new_figure(2.0 + 0.16 * values.shape[1], 1.0 + 0.38 * len(rows))
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=CMAP, vmin=-limit, vmax=limit,
                      aspect="auto")
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    ax.set_xticks(range(0, values.shape[1], 5))
    ax.tick_params(axis="x", labelsize=7)
    for dim in removed:
        ax.text(dim, len(rows) - 0.45, "x", ha="center", va="top", fontsize=8, color="0.3")
    ax.set_xlabel("word-vector dimension (0-based)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9, parse_math=False)
    label = "I(d) / max |I| per row" if normalize else "I(d) (Eq. 1)"
    figure.colorbar(image, ax=ax, fraction=0.03).set_label(label, fontsize=7)
    save_figure(figure, path)
    return figure


def log_importance(values: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """log10 of importance, values below ``floor`` (including negatives) clipped to it: the
    paper's "importance values are projected to log space"."""
    return np.log10(np.clip(np.asarray(values, dtype=float), floor, None))


def plot_layer_heatmaps(panels: Mapping[str, Mapping[str, Sequence[float]]],
                        path: str | Path | None = None, *, floor: float = 1e-3,
                        columns: int = 2, title: str | None = None,
                        scale: str = "shared") -> Figure:
    """Figures 2 and 6: one panel per task, one row per layer (e.g. input, layer 1, layer 2),
    one column per unit, coloured by log10 importance (clipped at ``floor``). ``scale``:
    ``"shared"`` (one colour bar for all panels) or ``"per_panel"`` (each its own colour bar,
    so a task whose importances are orders of magnitude larger does not wash out the rest)."""
    if scale not in ("shared", "per_panel"):
        raise ValueError(f"scale must be 'shared' or 'per_panel', got {scale!r}")
    if not panels:
        raise ValueError("nothing to plot: no panels")
    matrices = {name: log_importance(_matrix(layers, ragged=True), floor)
                for name, layers in panels.items()}
    low = min(float(np.nanmin(m)) for m in matrices.values())
    high = max(float(np.nanmax(m)) for m in matrices.values())
    n_cols = min(columns, len(panels))
    n_rows = -(-len(panels) // n_cols)
    figure = new_figure(1.0 + 4.6 * n_cols, 0.6 + 1.35 * n_rows)
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    image = None
    for ax, (name, matrix) in zip(axes.flat, matrices.items()):
        limits = (low, high) if scale == "shared" else \
            (float(np.nanmin(matrix)), float(np.nanmax(matrix)))
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis", vmin=limits[0],
                          vmax=limits[1], aspect="auto")
        if scale == "per_panel":
            figure.colorbar(image, ax=ax, fraction=0.04, pad=0.01).ax.tick_params(labelsize=6)
        ax.set_yticks(range(matrix.shape[0]), list(panels[name]), fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(name, fontsize=8, parse_math=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    label = f"log10 importance (clipped at {floor:g})"
    if scale == "shared":
        figure.colorbar(image, ax=axes, fraction=0.02).set_label(label, fontsize=7)
    if title or scale == "per_panel":
        per_panel = f"colour: {label}, one scale per panel" if scale == "per_panel" else ""
        figure.suptitle("\n".join(t for t in (title, per_panel) if t), fontsize=9)
    save_figure(figure, path)
    return figure


def plot_frequency_scatter(columns: Mapping[str, np.ndarray], log_rank: np.ndarray,
                           path: str | Path | None = None, *, max_points: int = 20_000,
                           seed: int = 0, title: str | None = None) -> Figure:
    """Figure 3: one panel per named vector of values (e.g. a GloVe dimension over the
    vocabulary) against log frequency rank, with the fitted line and R^2 (computed on all
    points; ``max_points`` of them are drawn)."""
    if not columns:
        raise ValueError("nothing to plot: no columns")
    log_rank = np.asarray(log_rank, dtype=float)
    shown = np.arange(len(log_rank))
    if len(shown) > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(len(shown), max_points, replace=False))
    figure = new_figure(0.5 + 3.6 * len(columns), 3.2)
    axes = figure.subplots(1, len(columns), squeeze=False)[0]
    for ax, (name, values) in zip(axes, columns.items()):
        values = np.asarray(values, dtype=float)
        if len(values) != len(log_rank):
            raise ValueError(f"{name!r} has {len(values)} values for {len(log_rank)} ranks")
        r, _ = pearson(log_rank, values)
        slope, intercept = np.polyfit(log_rank, values, 1)
        ax.scatter(log_rank[shown], values[shown], s=1, alpha=0.15, color="tab:blue",
                   rasterized=True)
        ends = np.array([log_rank.min(), log_rank.max()])
        ax.plot(ends, slope * ends + intercept, color="tab:red", linewidth=1.2)
        ax.set_title(f"{name}: R$^2$ = {r * r:.2f}", fontsize=8)
        ax.set_xlabel("log frequency rank (log 1 = 0: the most frequent word)", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("value", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    save_figure(figure, path)
    return figure


def importance_bins(low: float, high: float, bins: int = 40) -> np.ndarray:
    """Bucket edges from ``low`` to ``high``: linear up to 1, then geometric when the values
    reach far beyond (Eq. 1 is bounded by -1 below but unbounded above)."""
    bins = check_positive_int("bins", bins)
    if high <= 10.0:
        return np.linspace(low, max(high, low + 1.0), bins + 1)
    n_linear = max(2, bins // 4)
    linear = np.linspace(low, 1.0, n_linear + 1)
    return np.concatenate([linear, np.geomspace(1.0, high, bins - n_linear + 1)[1:]])


def plot_importance_histogram(values: Mapping[str, Sequence[float]],
                              path: str | Path | None = None, *, bins: int = 40,
                              xlabel: str = "mean word importance (Eq. 1)",
                              title: str | None = None) -> Figure:
    """Figure 4: per model, the number of word types (log scale) in each importance bucket.
    The buckets are shared by all models (:func:`importance_bins`, from Eq. 1's lower bound -1
    or the minimum); the x axis is linear up to 1 and logarithmic beyond."""
    if not values:
        raise ValueError("nothing to plot: no models")
    arrays = {name: np.asarray(v, dtype=float) for name, v in values.items()}
    arrays = {name: a[np.isfinite(a)] for name, a in arrays.items()}
    if not any(len(a) for a in arrays.values()):
        raise ValueError("no finite values to plot")
    low = min(-1.0, min(float(a.min()) for a in arrays.values() if len(a)))
    high = max(float(a.max()) for a in arrays.values() if len(a))
    edges = importance_bins(low, high, bins)
    figure = new_figure(5.5, 3.4)
    ax = figure.add_subplot()
    for name, array in arrays.items():
        counts, _ = np.histogram(array, edges)
        ax.stairs(counts, edges, label=f"{name} ({len(array)} words)", linewidth=1.3)
    finish_importance_histogram(ax, high, xlabel, "number of words (log scale)", title)
    save_figure(figure, path)
    return figure


def finish_importance_histogram(ax: Any, high: float, xlabel: str, ylabel: str,
                                title: str | None) -> None:
    """Figure 4's axes: counts on a log scale; importance linear up to 1 and logarithmic
    beyond once the largest value passes 10."""
    if high > 10.0:
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9, parse_math=False)
