"""Heatmaps, the Figure 5 column layout and HTML output."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from captum_erasure.explain.plots import (
    explanations_to_html,
    normalized_scores,
    plot_word_columns,
    plot_word_heatmap,
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


@pytest.mark.parametrize("normalize", ["per_text", "global", None])
def test_heatmap_is_written(explanations, tmp_path, normalize):
    path = tmp_path / "sub" / "heatmap.png"
    figure = plot_word_heatmap(explanations, path, normalize=normalize, title="tiny $x$ BERT")
    assert isinstance(figure, Figure)
    assert_png(path)
    cell_words = [t.get_text() for t in figure.axes[0].texts]
    assert cell_words == [w for e in explanations for w in e.words]  # "$5" drawn verbatim


def test_heatmap_max_words_and_colorbar_label(explanations):
    figure = plot_word_heatmap(explanations, max_words=2)
    assert len(figure.axes[0].texts) == sum(min(2, len(e.words)) for e in explanations)
    assert "erasing the word" in figure.axes[1].get_ylabel()


def test_heatmap_rejects_bad_normalize(explanations):
    with pytest.raises(ValueError, match="normalize"):
        plot_word_heatmap(explanations, normalize="max")


def test_normalized_scores():
    exps = [explanation(["a", "b"], [100.0, -50.0]), explanation(["c"], [0.5]),
            explanation(["d"], [0.0]), explanation(["e", "f"], [float("inf"), 2.0])]
    per_text = normalized_scores(exps, "per_text")
    np.testing.assert_allclose(per_text[0], [1.0, -0.5])
    np.testing.assert_allclose(per_text[1], [1.0])
    np.testing.assert_allclose(per_text[2], [0.0])  # all-zero text: no division by zero
    assert np.isnan(per_text[3][0]) and per_text[3][1] == 1.0
    global_ = normalized_scores(exps, "global")
    np.testing.assert_allclose(global_[1], [0.005])
    np.testing.assert_allclose(normalized_scores(exps, None)[0], [100.0, -50.0])


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
