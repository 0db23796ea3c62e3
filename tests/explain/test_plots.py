"""Heatmaps, the Figure 5 column layout and HTML output."""

import re

import numpy as np
import pytest
from matplotlib.figure import Figure

from captum_erasure.explain.plots import (
    explanations_to_html,
    plot_word_columns,
    plot_word_heatmap,
    plot_word_ranking,
    save_html,
)
from captum_erasure.explain.texts import TextExplanation, explain_texts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def explanation(words, scores, label="pos", text=None):
    return TextExplanation(text=text or " ".join(words), words=list(words), scores=list(scores),
                           predicted=2, predicted_label=label, probability=0.9, target=2,
                           target_label=label, target_probability=0.9)


@pytest.fixture(scope="module")
def explanations(tiny_model, tiny_tokenizer):
    return explain_texts(tiny_model, tiny_tokenizer,
                         ["the movie was unbelievable, good.", "bad film", "$5 is not fun"])


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


@pytest.mark.parametrize("values", ["score", "symlog", "log_prob_drop", "prob_drop"])
@pytest.mark.parametrize("per_text", [False, True])
def test_heatmap_is_written(explanations, tmp_path, values, per_text):
    path = tmp_path / "sub" / "heatmap.png"
    figure = plot_word_heatmap(explanations, path, values=values, per_text=per_text,
                               title="tiny $x$ BERT")
    assert isinstance(figure, Figure)
    assert_png(path)
    cell_words = [t.get_text() for t in figure.axes[0].texts]
    assert cell_words == [w for e in explanations for w in e.words]  # "$5" drawn verbatim
    caption = " ".join(figure.get_supxlabel().split())  # wrapped to the figure's width
    assert caption.startswith(MEANING[values])
    assert ("scaled per text" in caption) == per_text
    assert ("one scale for all texts" in caption) != per_text


MEANING = {"score": "eq1 score (Eq. 1 = relative drop", "symlog": "sign(I) ln(1+|I|)",
           "log_prob_drop": "log P(target) - log P(target | word erased), nats",
           "prob_drop": "P(target) - P(target | word erased)"}


def heatmap_cell_colours(figure):
    image = figure.axes[0].images[0]
    return image.to_rgba(image.get_array())


def test_heatmap_shares_one_scale_across_texts_by_default():
    big = explanation(["not", "bad"], [17.6, 1.0])
    small = explanation(["heartfelt", "film"], [0.116, 0.0])
    shared = heatmap_cell_colours(plot_word_heatmap([big, small]))
    assert not np.allclose(shared[0, 0], shared[1, 0])  # +17.6 and +0.116 differ
    np.testing.assert_allclose(shared[1, 0], shared[1, 1], atol=0.02)  # 0.116 ~ white
    bar = plot_word_heatmap([big, small]).axes[1]
    assert bar.get_ylim() == pytest.approx((-17.6, 17.6))
    assert "one scale for all texts" in bar.get_ylabel()
    per_text = plot_word_heatmap([big, small], per_text=True)
    colours = heatmap_cell_colours(per_text)
    np.testing.assert_allclose(colours[0, 0], colours[1, 0])  # each text's max: darkest red
    assert "scaled per text" in per_text.axes[1].get_ylabel()
    labels = [t.get_text() for t in per_text.axes[0].get_yticklabels()]
    assert labels == ["pred pos (0.90) | max 17.6", "pred pos (0.90) | max 0.116"]


def test_heatmap_labels_rows_with_the_gold_label():
    right = explanation(["good"], [1.0])
    right.gold, right.gold_label = 2, "pos"
    wrong = explanation(["bad"], [1.0])
    wrong.gold, wrong.gold_label = 0, "neg"
    figure = plot_word_heatmap([right, wrong, explanation(["x"], [0.5])])
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == ["pred pos (0.90) | gold pos", "pred pos (0.90) | gold neg \N{BALLOT X}",
                      "pred pos (0.90)"]


def test_symlog_colour_bar_ticks_are_scores():
    figure = plot_word_heatmap([explanation(["a", "b"], [17.6, -1.0])], values="symlog")
    bar = figure.axes[1]
    ticks = [t.get_text() for t in bar.get_yticklabels()]
    assert ticks == ["-1", "0", "1", "3", "10"]
    np.testing.assert_allclose(bar.get_yticks(), [-np.log(2), 0, np.log(2), np.log(4),
                                                  np.log(11)])
    assert "(a score of 17.6)" in " ".join(figure.get_supxlabel().split())


def test_heatmap_rejects_bad_values(explanations):
    with pytest.raises(ValueError, match="values must be one of"):
        plot_word_heatmap(explanations, values="max")


def test_word_columns_figure_5_layout(tmp_path):
    words = ["the", "plot", "was", "dull"]
    columns = {"RNN": [0.1, 2.0, -0.3, 9.5], "Bi-LSTM": [0.0, 40.0, 0.2, 104.0]}
    path = tmp_path / "columns.png"
    figure = plot_word_columns(words, columns, path)
    assert_png(path)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == words
    assert [t.get_text() for t in ax.get_xticklabels()] == list(columns)
    assert "104" in [t.get_text() for t in ax.texts] and "-0.3" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="column 'RNN' has 2 scores for 4 words"):
        plot_word_columns(words, {"RNN": [0.1, 0.2]})


def test_html_is_written_and_escaped(explanations, tmp_path):
    hostile = explanation(["<script>alert(1)</script>", "good"], [0.5, -0.25],
                          label="<b>pos</b>")
    page = explanations_to_html([*explanations, hostile])
    assert "<script>" not in page and "<b>pos</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;pos&lt;/b&gt;" in page
    assert page.count('<span class="w"') == sum(len(e.words) for e in explanations) + 2
    assert 'title="-0.25"' in page
    assert f"(p={explanations[0].probability:.3f})" in page
    path = save_html(explanations, tmp_path / "out.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "unbelievable" in text


def test_html_colours_follow_the_sign():
    page = explanations_to_html([explanation(["up", "down", "zero"], [1.0, -1.0, 0.0])])
    red, blue = "#67001f", "#053061"  # ends of RdBu_r
    assert f"background:{red}" in page and f"background:{blue}" in page


def span_colours(page):
    return re.findall(r'<span class="w" style="background:(#[0-9a-f]{6})', page)


def test_html_shares_one_scale_and_says_so():
    texts = [explanation(["not", "bad"], [17.6, 0.0]), explanation(["heartfelt"], [0.116])]
    shared = explanations_to_html(texts)
    not_, _zero, heartfelt = span_colours(shared)
    assert not_ == "#67001f" and heartfelt != not_
    assert "one scale for all texts: darkest = |value| &gt;= 17.6" in shared
    assert "<span>-17.6</span>" in shared and "<span>+17.6</span>" in shared
    per_text = explanations_to_html(texts, per_text=True)
    assert span_colours(per_text)[2] == "#67001f"  # 0.116 is its text's largest
    assert "scaled per text" in per_text and "darkest here: 0.116" in per_text
    bounded = explanations_to_html(texts, values="prob_drop")
    assert "P(target) - P(target | word erased)" in bounded
    assert 'title="prob_drop 0.7591 (eq1 17.6)"' in bounded


def test_word_ranking_figure_shows_the_ranking_and_the_mean(tmp_path):
    import pandas as pd
    table = pd.DataFrame({"word": ["dull", "enjoyable"], "shrunk": [3.06, 2.96],
                          "mean": [8.09, 15.3], "count": [10, 8]})
    path = tmp_path / "top.png"
    figure = plot_word_ranking(table, path, note="Ranked by shrunk (...)")
    assert_png(path)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["dull (10)", "enjoyable (8)"]
    assert [p.get_width() for p in ax.patches] == [3.06, 2.96]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), [8.09, 15.3])
    assert ax.get_xscale() == "symlog"
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["mean",
                                                                       "shrunk (ranked by)"]
    assert figure.get_supxlabel() == "Ranked by shrunk (...)"
    with pytest.raises(ValueError, match="empty"):
        plot_word_ranking(table.iloc[:0])


def test_heatmap_wraps_long_texts_onto_continuation_rows():
    long = explanation([f"w{i}" for i in range(7)], [float(i) for i in range(7)])
    short = explanation(["a"], [-3.0])
    figure = plot_word_heatmap([long, short], wrap=3)
    ax = figure.axes[0]
    grid = ax.images[0].get_array()
    assert grid.shape == (4, 3)  # 7 words -> rows of 3, 3, 1; then the short text
    np.testing.assert_array_equal(grid[:3].filled(np.nan).ravel()[:7], range(7))
    assert grid[3, 0] == -3.0 and grid.mask[3, 1:].all()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["pred pos (0.90)", "", "",
                                                           "pred pos (0.90)"]
    assert [t.get_text() for t in ax.texts] == [f"w{i}" for i in range(7)] + ["a"]
    assert [line.get_ydata()[0] for line in ax.lines] == [2.5]  # a line between the texts
    with pytest.raises(ValueError, match="wrap must be >= 1"):
        plot_word_heatmap([long], wrap=0)
