"""Side-by-side tables of several models (Li et al. Tables 1 and 3) and the table writer."""

import math

import pandas as pd
import pytest

from captum_erasure.explain.corpus import CorpusImportance
from captum_erasure.explain.texts import TextExplanation
from captum_erasure.paper.li2016.model_comparison import (
    chosen_words_by_model,
    corpus_importance_by_model,
    top_words_by_model,
    write_table,
)


def corpus_of(scores_by_text):
    corpus = CorpusImportance()
    for words, scores in scores_by_text:
        corpus.add(TextExplanation(text=" ".join(words), words=words, scores=scores, predicted=1,
                                   predicted_label="positive", probability=0.9, target=1,
                                   target_label="positive", target_probability=0.9))
    return corpus


@pytest.fixture()
def corpora():
    return {"Bi-LSTM": corpus_of([(["a", "wonderful", "film"], [0.1, 9.0, 0.5]),
                                  (["wonderful"], [3.0])]),
            "RNN": corpus_of([(["a", "wonderful", "film"], [0.2, 0.7, -0.4]),
                              (["wonderful"], [0.3])])}


def test_top_words_side_by_side(corpora):
    table = top_words_by_model(corpora, n=3)
    assert list(table.columns) == ["rank", "Bi-LSTM", "RNN"]
    assert table["Bi-LSTM"].tolist() == ["wonderful (6)", "film (0.5)", "a (0.1)"]
    assert table["RNN"].tolist() == ["wonderful (0.5)", "a (0.2)", ""]  # film is negative
    assert top_words_by_model(corpora, n=3, min_count=2)["RNN"].tolist()[:1] == \
        ["wonderful (0.5)"]


def test_chosen_words_across_models(corpora):
    table = chosen_words_by_model(corpora, ["wonderful", "hated"])
    assert table["Bi-LSTM"][0] == pytest.approx(6.0) and table["RNN"][0] == pytest.approx(0.5)
    assert math.isnan(table["Bi-LSTM"][1]) and table["count"].tolist() == [2, 0]


def test_corpus_importance_by_model_runs_each_model(tiny_model, tiny_tokenizer):
    models = {"a": (tiny_model, tiny_tokenizer), "b": (tiny_model, tiny_tokenizer, "info")}
    corpora = corpus_importance_by_model(models, ["the movie was good", "bad film"], [2, 0],
                                         show_progress=False)
    assert list(corpora) == ["a", "b"]
    pd.testing.assert_frame_equal(corpora["a"].table(), corpora["b"].table())


def test_write_table(tmp_path):
    paths = write_table(pd.DataFrame({"word": ["a|b"], "score": [1.23456]}), tmp_path, "t")
    assert [p.name for p in paths] == ["t.csv", "t.md"]
    assert "a\\|b" in paths[1].read_text() and "1.235" in paths[1].read_text()
