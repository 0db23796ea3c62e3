"""Corpus-level word importance and the negative-occurrence table."""

import math
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from captum_erasure.explain.corpus import CorpusImportance, WordStats, corpus_word_importance
from captum_erasure.explain.texts import TextExplanation, explain_texts

CORPUS = [
    "the movie was good", "the film was bad", "not a good movie", "the plot was dull",
    "i liked it", "The acting was great !", "boring and dull", "it is not fun",
    "a very good film", "the plot is bad but the acting is good", "unbelievable , good .",
    "Good good good", "i liked the plot", "not bad", "dull , boring film",
]
LABELS = [2, 0, 0, 0, 2, 2, 0, 0, 2, 1, 2, 2, 2, 1, 0]


def direct_occurrences(model, tokenizer, **kwargs):
    """(lowercased word, score) for every occurrence, straight from explain_texts."""
    explanations = explain_texts(model, tokenizer, CORPUS, **kwargs)
    return [(w.lower(), s) for e in explanations for w, s in zip(e.words, e.scores)]


@pytest.fixture(scope="module")
def importance(tiny_model, tiny_tokenizer):
    return corpus_word_importance(tiny_model, tiny_tokenizer, CORPUS, LABELS, texts_per_call=4,
                                  keep_negative=5, show_progress=False)


def test_means_equal_the_mean_of_per_occurrence_scores(importance, tiny_model, tiny_tokenizer):
    by_word = defaultdict(list)
    for word, score in direct_occurrences(tiny_model, tiny_tokenizer, labels=LABELS,
                                          target="gold"):
        by_word[word].append(score)
    table = importance.table().set_index("word")
    assert set(table.index) == set(by_word)
    for word, scores in by_word.items():
        row = table.loc[word]
        assert row["count"] == len(scores)
        assert row["mean"] == pytest.approx(np.mean(scores), rel=1e-4, abs=1e-6)
        assert row["min"] == pytest.approx(min(scores), rel=1e-4, abs=1e-6)
        assert row["max"] == pytest.approx(max(scores), rel=1e-4, abs=1e-6)
        if len(scores) > 1:
            assert row["std"] == pytest.approx(np.std(scores, ddof=1), rel=1e-3, abs=1e-6)
        else:
            assert math.isnan(row["std"])
    assert table.loc["good", "count"] == 8  # "Good" folded into "good", repeats counted
    assert importance.table()["shrunk"].is_monotonic_decreasing  # the robust ranking
    assert importance.table(rank_by="mean")["mean"].is_monotonic_decreasing  # the paper's
    assert importance.target == "gold"  # default when labels are given


def test_negative_occurrences_are_the_most_negative_sorted_and_bounded(
        importance, tiny_model, tiny_tokenizer):
    scores = [s for _, s in direct_occurrences(tiny_model, tiny_tokenizer, labels=LABELS,
                                               target="gold")]
    negatives = sorted(s for s in scores if s < 0)
    assert len(negatives) > 5, "the tiny model should produce some negative scores"
    table = importance.negative_occurrences()
    assert len(table) == 5
    assert (table["score"] < 0).all()
    assert table["score"].is_monotonic_increasing
    np.testing.assert_allclose(table["score"], negatives[:5], rtol=1e-4, atol=1e-6)
    assert len(importance.negative_occurrences(n=2)) == 2
    row = table.iloc[0]
    assert row["sentence"] in CORPUS and row["gold"] == LABELS[CORPUS.index(row["sentence"])]
    assert row["word"].lower() == row["sentence"].split()[row["position"]].lower()


def test_generator_input_and_texts_per_call_give_the_same_result(importance, tiny_model,
                                                                 tiny_tokenizer):
    streamed = corpus_word_importance(tiny_model, tiny_tokenizer, (t for t in CORPUS),
                                      (label for label in LABELS), texts_per_call=1,
                                      keep_negative=5, show_progress=True)
    a, b = importance.table(), streamed.table()
    assert a["word"].tolist() == b["word"].tolist()
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(importance.negative_occurrences()["score"],
                               streamed.negative_occurrences()["score"], rtol=1e-4, atol=1e-6)
    assert streamed.n_texts == len(CORPUS)


def test_predicted_target_without_labels(tiny_model, tiny_tokenizer):
    result = corpus_word_importance(tiny_model, tiny_tokenizer, CORPUS[:4], show_progress=False)
    assert result.target == "predicted"
    negatives = result.negative_occurrences()
    assert negatives["gold"].isna().all()
    assert (negatives["target"] == negatives["predicted"]).all()


def test_word_lookup_and_rankings(importance):
    table = importance.table()
    good = importance.word("GOOD")
    assert good["word"] == "good" and good["count"] == 8
    assert good["mean"] == table.set_index("word").loc["good", "mean"]
    assert len(good["examples"]) == 3 and good["examples"][0] == "the movie was good"
    missing = importance.word("masterpiece")
    assert missing["count"] == 0 and math.isnan(missing["mean"])
    chosen = importance.words(["dull", "masterpiece", "good"])
    assert chosen["word"].tolist() == ["dull", "masterpiece", "good"]
    assert math.isnan(chosen.loc[1, "mean"])

    positive = importance.top_positive(n=3, rank_by="mean")
    negative = importance.top_negative(n=3, rank_by="mean")
    assert len(positive) <= 3 and (positive["mean"] > 0).all()
    assert positive["mean"].is_monotonic_decreasing
    assert (negative["mean"] < 0).all() and negative["mean"].is_monotonic_increasing
    assert len(negative) > 0 and negative.loc[0, "mean"] == table["mean"].min()
    robust = importance.top_positive(n=3)
    assert (robust["shrunk"] > 0).all() and robust["shrunk"].is_monotonic_decreasing
    frequent = importance.table(min_count=3)
    assert (frequent["count"] >= 3).all() and "good" in frequent["word"].tolist()
    assert (importance.top_positive(n=100, min_count=3)["count"] >= 3).all()


def test_save_writes_csv_and_markdown(importance, tmp_path):
    paths = importance.save(tmp_path / "tables")
    assert set(paths) == {"word_importance.csv", "word_importance.md",
                          "negative_occurrences.csv", "negative_occurrences.md"}
    for path in paths.values():
        assert path.stat().st_size > 0
    csv = pd.read_csv(paths["word_importance.csv"])
    assert csv["word"].tolist() == importance.table()["word"].tolist()
    markdown = paths["negative_occurrences.md"].read_text()
    assert markdown.startswith("Single occurrences, most negative first.\n\n|")
    assert "sentence" in markdown
    assert paths["word_importance.md"].read_text().startswith(
        "Ranked by shrunk (shrunk = symlog mean of the eq1 scores with 3 pseudo-occurrences "
        "at the corpus symlog mean, in score units); word types seen at least 1 times; ")


def test_exact_sums_match_numpy_and_memory_is_bounded():
    stats = WordStats()
    values = [1e3, -0.5, 2.0, 1e-3, 104.0]
    for v in values:
        stats.add(v)
    assert stats.mean == pytest.approx(np.mean(values))
    assert stats.std == pytest.approx(np.std(values, ddof=1))

    from captum_erasure.explain.texts import TextExplanation
    result = CorpusImportance(keep_negative=3, examples_per_word=1)
    for i in range(50):
        result.add(TextExplanation(text=f"w{i % 7} x", words=[f"w{i % 7}", "x"],
                                   scores=[-(i % 11) / 10, float("nan")], predicted=0,
                                   predicted_label="a", probability=0.5, target=0,
                                   target_label="a", target_probability=0.5))
    assert len(result._negative) == 3 and len(result.stats) == 7  # NaN occurrences skipped
    assert all(len(s.examples) == 1 for s in result.stats.values())
    assert result.negative_occurrences()["score"].tolist() == [-1.0, -1.0, -1.0]


def test_mean_and_std_are_correctly_rounded_from_exact_sums():
    from fractions import Fraction
    values = [1e16, 1.0, -1e16, 3.0, 1e-300, 0.1]
    stats = WordStats()
    for v in values:
        stats.add(v)
    exact_mean = sum(map(Fraction, values)) / len(values)
    assert stats.mean == float(exact_mean)  # naive summation would lose the 1.0 and 3.0
    var = sum((Fraction(v) - exact_mean) ** 2 for v in values) / (len(values) - 1)
    assert stats.std == pytest.approx(math.sqrt(float(var)), rel=1e-15)


@pytest.mark.parametrize("cuts", [[4], [1, 8], [3, 6, 9, 12]])
def test_merging_parts_in_order_equals_one_pass(importance, tiny_model, tiny_tokenizer, cuts):
    explanations = explain_texts(tiny_model, tiny_tokenizer, CORPUS, labels=LABELS,
                                 target="gold", texts_per_call=4)
    bounds = [0, *cuts, len(CORPUS)]
    merged = CorpusImportance(keep_negative=5, target="gold")
    for lo, hi in zip(bounds, bounds[1:]):
        part = CorpusImportance(keep_negative=5, target="gold")
        for e in explanations[lo:hi]:
            part.add(e)
        merged.merge(part)
    one = CorpusImportance(keep_negative=5, target="gold")
    for e in explanations:
        one.add(e)
    pd.testing.assert_frame_equal(merged.table(), one.table(), check_exact=True)
    pd.testing.assert_frame_equal(merged.negative_occurrences(), one.negative_occurrences(),
                                  check_exact=True)
    assert (merged.n_texts, merged.n_occurrences) == (one.n_texts, one.n_occurrences)
    with pytest.raises(ValueError, match="different settings"):
        merged.merge(CorpusImportance(lowercase=False))


def hand_made(words_and_scores):
    return TextExplanation(text=" ".join(w for w, _ in words_and_scores),
                           words=[w for w, _ in words_and_scores],
                           scores=[s for _, s in words_and_scores], predicted=1,
                           predicted_label="pos", probability=0.9, target=1, target_label="pos",
                           target_probability=0.9)


def test_robust_ranking_is_not_carried_by_one_outlier():
    """"spiky" scores 0.1 three times and 60 once (mean 15.075); "steady" scores 3 four times;
    "once" scores 5 a single time; "the" scores 0 twenty times. The mean ranks spiky, once,
    steady; the shrunk statistic ranks steady first and the single occurrence last."""
    result = CorpusImportance(prior_count=3)
    for spike in (0.1, 0.1, 0.1, 60.0):
        result.add(hand_made([("spiky", spike), ("steady", 3.0)] + [("the", 0.0)] * 4))
    result.add(hand_made([("once", 5.0), ("steady", float("nan"))] + [("the", 0.0)] * 4))
    by_mean = result.table(rank_by="mean")
    assert by_mean["word"].tolist() == ["spiky", "once", "steady", "the"]
    assert by_mean.set_index("word").loc["spiky", "mean"] == pytest.approx(15.075)
    # corpus symlog mean m over the 29 occurrences; shrunk = symlog^-1((sum + 3 m) / (n + 3))
    ln = math.log
    spiky, steady, once = 3 * ln(1.1) + ln(61), 4 * ln(4), ln(6)  # sums of ln(1 + score)
    m = (spiky + steady + once) / 29
    expected = {"steady": math.expm1((steady + 3 * m) / 7),
                "spiky": math.expm1((spiky + 3 * m) / 7),
                "once": math.expm1((once + 3 * m) / 4), "the": math.expm1(3 * m / 23)}
    table = result.table()
    assert table["word"].tolist() == ["steady", "spiky", "once", "the"]
    for word, value in expected.items():
        assert table.set_index("word").loc[word, "shrunk"] == pytest.approx(value, rel=1e-12)
    assert result.top_positive(1)["word"].tolist() == ["steady"]
    assert result.top_positive(1, rank_by="mean")["word"].tolist() == ["spiky"]
    assert result.table(min_count=2)["word"].tolist() == ["steady", "spiky", "the"]
    # prior_count 0: the plain symlog mean, back in score units (steady exactly 3)
    plain = result.table(prior_count=0).set_index("word")["shrunk"]
    assert plain["steady"] == pytest.approx(3.0, rel=1e-12)
    assert plain["spiky"] == pytest.approx(math.expm1(spiky / 4), rel=1e-12)
    assert result.word("spiky")["shrunk"] == pytest.approx(expected["spiky"], rel=1e-12)
    assert result.ranking_note(min_count=2, rank_by="mean") == (
        "Ranked by mean (mean eq1 score, as in Li et al.); word types seen at least 2 times; "
        "29 occurrences in 5 texts.")
    with pytest.raises(ValueError, match="rank_by must be one of"):
        result.table(rank_by="median")
    with pytest.raises(ValueError, match="prior_count must be a finite number >= 0"):
        CorpusImportance(prior_count=-1)
