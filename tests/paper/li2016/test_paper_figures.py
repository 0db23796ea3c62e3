"""Li et al.'s figures: every plot writes a non-empty PNG; Figure 5 of the paper's sentence has
one row per word and one column per model."""

import numpy as np
import pytest
import torch

from captum_erasure.explain.plots import plot_word_columns
from captum_erasure.paper.li2016.figures import (
    importance_bins,
    log_importance,
    plot_dimension_heatmap,
    plot_frequency_scatter,
    plot_importance_histogram,
    plot_layer_heatmaps,
)
from captum_erasure.paper.li2016.glove import glove_tokenizer
from captum_erasure.paper.li2016.model_comparison import sentence_scores_by_model
from captum_erasure.paper.li2016.rnn_models import new_sentiment_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RNG = np.random.default_rng(0)


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_dimension_heatmap(tmp_path):
    rows = {task: RNG.normal(size=50) for task in ("prefix", "suffix", "frequency")}
    figure = plot_dimension_heatmap(rows, tmp_path / "fig1.png", removed=(30, 25),
                                    title="Figure 1e")
    assert_png(tmp_path / "fig1.png")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["prefix", "suffix", "frequency"]
    shown = ax.images[0].get_array()
    assert shown.mask[:, [30, 25]].all() and not shown.mask[:, 0].any()  # removed: blank
    assert np.nanmax(np.abs(shown.filled(np.nan)), axis=1) == pytest.approx([1.0] * 3)
    with pytest.raises(ValueError, match="differ in length"):
        plot_dimension_heatmap({"a": [1.0, 2.0], "b": [1.0]})


def test_layer_heatmaps(tmp_path):
    panels = {task: {"input": RNG.random(50), "layer 1": RNG.random(50),
                     "layer 2": RNG.random(40)} for task in ("prefix", "suffix", "shape")}
    figure = plot_layer_heatmaps(panels, tmp_path / "fig2.png")
    assert_png(tmp_path / "fig2.png")
    assert [ax.get_title() for ax in figure.axes[:3]] == ["prefix", "suffix", "shape"]
    assert log_importance(np.array([100.0, -3.0]), floor=1e-2).tolist() == [2.0, -2.0]


def test_layer_heatmaps_per_panel_scale(tmp_path):
    # "frequency" is 1000x larger: on a shared scale the other panel would be one colour
    panels = {"prefix": {"input": [0.01, 0.1], "layer 1": [0.1, 0.1]},
              "frequency": {"input": [10.0, 100.0], "layer 1": [1.0, 10.0]}}
    shared = plot_layer_heatmaps(panels)
    assert [image.get_clim() for ax in shared.axes[:2] for image in ax.images] == \
        [(-2.0, 2.0), (-2.0, 2.0)]
    figure = plot_layer_heatmaps(panels, tmp_path / "fig2.png", scale="per_panel")
    assert_png(tmp_path / "fig2.png")
    limits = {ax.get_title(): ax.images[0].get_clim() for ax in figure.axes if ax.images}
    assert limits == {"prefix": (-2.0, -1.0), "frequency": (0.0, 2.0)}
    assert sum(1 for ax in figure.axes if not ax.images and ax.get_visible()) == 2  # 2 bars
    with pytest.raises(ValueError, match="scale must be"):
        plot_layer_heatmaps(panels, scale="per_column")


def test_frequency_scatter(tmp_path):
    log_rank = np.log(np.arange(1, 3001))
    columns = {"column 30": -log_rank + RNG.normal(size=3000), "noise": RNG.normal(size=3000)}
    figure = plot_frequency_scatter(columns, log_rank, tmp_path / "fig3.png", max_points=500)
    assert_png(tmp_path / "fig3.png")
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0].startswith("column 30: R$^2$ = 0.") and titles[1].endswith("= 0.00")


def test_importance_histogram(tmp_path):
    values = {"Bi-LSTM": np.concatenate([RNG.uniform(-1, 0, 50), RNG.lognormal(2, 2, 200)]),
              "RNN": RNG.uniform(-0.5, 3, 100)}
    figure = plot_importance_histogram(values, tmp_path / "fig4.png")
    assert_png(tmp_path / "fig4.png")
    assert figure.axes[0].get_yscale() == "log" and figure.axes[0].get_xscale() == "symlog"
    edges = importance_bins(-1.0, 1000.0, 40)
    assert len(edges) == 41 and edges[0] == -1.0 and edges[-1] == pytest.approx(1000.0)
    assert np.all(np.diff(edges) > 0)
    with pytest.raises(ValueError, match="no finite"):
        plot_importance_histogram({"x": [np.nan]})


def test_paper_sentence_heatmap_has_one_row_per_word(tmp_path):
    torch.manual_seed(0)
    models = {name: (new_sentiment_model(kind, hidden_size=8, seed=i).eval(), glove_tokenizer())
              for i, (name, kind) in enumerate([("Bi-LSTM", "bilstm"), ("Uni-LSTM", "lstm"),
                                                ("RNN", "rnn")])}
    words, columns = sentence_scores_by_model(models, "Effective but too tepid biopic", 0)
    assert words == ["Effective", "but", "too", "tepid", "biopic"]
    assert list(columns) == ["Bi-LSTM", "Uni-LSTM", "RNN"]
    figure = plot_word_columns(words, columns, tmp_path / "fig5.png")
    assert_png(tmp_path / "fig5.png")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == words
    assert ax.images[0].get_array().shape == (5, 3)
