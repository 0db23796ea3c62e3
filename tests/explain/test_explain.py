"""explain_texts: words, scores against WordErasure and by hand, input checks, views."""

import math

import pytest
import torch

from captum_erasure import WordErasure, word_feature_mask
from captum_erasure.explain.report import explanations_to_frame, format_table
from captum_erasure.explain.texts import TextExplanation, explain_texts, iter_explanations

TEXTS = ["The movie was unbelievable, good.", "bad film", "i liked it but the plot was dull !",
         "not a very good movie"]


def pre_tokenized_words(tokenizer, text):
    return [word for word, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]


def eq1(log_p_orig: float, log_p_erased: float) -> float:
    return (log_p_orig - log_p_erased) / -log_p_orig


def test_words_are_the_tokenizers_words_and_pieces_are_one_feature(tiny_model, tiny_tokenizer):
    explanations = explain_texts(tiny_model, tiny_tokenizer, TEXTS)
    for text, e in zip(TEXTS, explanations):
        assert e.words == pre_tokenized_words(tiny_tokenizer, text)
        assert len(e.scores) == len(e.words)
        assert all(math.isfinite(s) for s in e.scores)
    pieces = tiny_tokenizer.tokenize("unbelievable")
    assert pieces == ["un", "##believ", "##able"]
    assert "unbelievable" in explanations[0].words  # three pieces, one feature


@pytest.mark.parametrize("mode", ["delete", "replace", "attention", "zero"])
def test_scores_equal_word_erasure(tiny_model, tiny_tokenizer, mode):
    explanations = explain_texts(tiny_model, tiny_tokenizer, TEXTS, mode=mode)
    encoding = tiny_tokenizer(TEXTS, padding=True, return_tensors="pt")
    words = WordErasure(tiny_model).attribute_words(
        encoding["input_ids"], additional_forward_args=(encoding["attention_mask"],),
        feature_mask=word_feature_mask(encoding), mode=mode)
    for row, e in enumerate(explanations):
        expected = words.scores[row, :len(words.feature_ids[row])]
        torch.testing.assert_close(torch.tensor(e.scores, dtype=torch.float64), expected)
        assert e.target == int(words.targets[row]) == e.predicted
        assert e.mode == mode and e.score_name == "eq1"


def test_delete_score_is_eq1_of_the_sentence_without_the_word(tiny_model, tiny_tokenizer):
    text = "the plot was dull but i liked the acting"
    (e,) = explain_texts(tiny_model, tiny_tokenizer, [text], target="predicted")
    words = text.split()
    assert e.words == words

    def log_probs(sentence: str) -> torch.Tensor:
        encoding = tiny_tokenizer([sentence], return_tensors="pt")
        with torch.no_grad():
            logits = tiny_model(encoding["input_ids"], encoding["attention_mask"]).logits
        return torch.log_softmax(logits.double(), -1)[0]

    original = log_probs(text)
    target = int(original.argmax())
    assert e.target == e.predicted == target
    assert e.probability == pytest.approx(math.exp(original[target]), rel=1e-5)
    for i, score in enumerate(e.scores):
        erased = log_probs(" ".join(words[:i] + words[i + 1:]))
        assert score == pytest.approx(eq1(original[target].item(), erased[target].item()),
                                      rel=1e-4, abs=1e-5)


def test_targets_gold_int_and_label_names(tiny_model, tiny_tokenizer):
    by_class = explain_texts(tiny_model, tiny_tokenizer, TEXTS[:2], target=2)
    assert [e.target for e in by_class] == [2, 2]
    assert all(e.target_label == "pos" for e in by_class)
    gold = explain_texts(tiny_model, tiny_tokenizer, TEXTS[:2], labels=["neg", 1], target="gold")
    assert [e.target for e in gold] == [e.gold for e in gold] == [0, 1]
    assert [e.gold_label for e in gold] == ["neg", "neu"]
    assert gold[0].predicted_label == tiny_model.config.id2label[gold[0].predicted]
    # Scores for class 0 on text 0 are the same whether asked as gold or as an int.
    as_int = explain_texts(tiny_model, tiny_tokenizer, TEXTS[:1], target=0)
    assert gold[0].scores == pytest.approx(as_int[0].scores, rel=1e-4, abs=1e-6)
    # Batch composition differs (1 vs 2 texts), so float rounding may too.
    assert as_int[0].target_probability == pytest.approx(gold[0].target_probability, rel=1e-5)


def test_other_scores(tiny_model, tiny_tokenizer):
    logit = explain_texts(tiny_model, tiny_tokenizer, TEXTS, score="logit_diff")
    output = explain_texts(tiny_model, tiny_tokenizer, TEXTS, score="output_diff")
    for a, b in zip(logit, output):
        assert a.target == b.target == a.predicted and b.score_name == "output_diff"
        assert a.scores == pytest.approx(b.scores, rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="unknown score"):
        explain_texts(tiny_model, tiny_tokenizer, TEXTS, score="eq2")


def test_results_do_not_depend_on_texts_per_call_and_generators_work(tiny_model, tiny_tokenizer):
    reference = explain_texts(tiny_model, tiny_tokenizer, TEXTS, texts_per_call=64)
    for per_call in (1, 3):
        other = explain_texts(tiny_model, tiny_tokenizer, (t for t in TEXTS),
                              texts_per_call=per_call, batch_size=5)
        for a, b in zip(reference, other, strict=True):
            assert a.words == b.words
            assert a.scores == pytest.approx(b.scores, rel=1e-4, abs=1e-6)


def test_iter_explanations_is_lazy(tiny_model, tiny_tokenizer):
    consumed = []

    def texts():
        for text in TEXTS:
            consumed.append(text)
            yield text

    stream = iter_explanations(tiny_model, tiny_tokenizer, texts(), texts_per_call=2)
    assert consumed == []
    next(stream)
    assert len(consumed) == 2


def test_training_mode_is_restored(make_tiny_model, tiny_tokenizer):
    model = make_tiny_model().train()
    first = explain_texts(model, tiny_tokenizer, TEXTS[:1])
    assert model.training
    second = explain_texts(model, tiny_tokenizer, TEXTS[:1])
    assert first[0].scores == second[0].scores  # dropout was off during the explanation


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "   \t\n"])
def test_empty_text_names_its_index(tiny_model, tiny_tokenizer, bad):
    with pytest.raises(ValueError, match=r"text 1 is empty or whitespace-only"):
        explain_texts(tiny_model, tiny_tokenizer, ["good", bad])


def test_too_long_text_is_an_error_naming_index_and_token_count(tiny_model, tiny_tokenizer):
    long_text = " ".join(["good"] * 70)  # 72 tokens > 64 positions
    with pytest.raises(ValueError, match=r"text 2 has 72 tokens, more than the model's maximum "
                                         r"of 64"):
        explain_texts(tiny_model, tiny_tokenizer, ["good", "bad", long_text])
    with pytest.raises(ValueError, match=r"text 0 has 6 tokens.*maximum of 5"):
        explain_texts(tiny_model, tiny_tokenizer, ["the movie was good"], max_length=5)


def test_truncate_warns_and_keeps_the_first_words(tiny_model, tiny_tokenizer):
    long_text = " ".join(["good", "bad"] * 40)
    with pytest.warns(UserWarning, match=r"truncated"):
        (e,) = explain_texts(tiny_model, tiny_tokenizer, [long_text], truncate=True)
    assert len(e.words) == 62 and e.words[:2] == ["good", "bad"]
    with pytest.warns(UserWarning, match=r"truncated"):
        (short,) = explain_texts(tiny_model, tiny_tokenizer, [long_text], truncate=True,
                                 max_length=8)
    assert len(short.words) == 6


@pytest.mark.parametrize("target,labels,message", [
    (3, None, r"target 3 is outside the model's class range \[0, 2\]"),
    (-1, None, r"target -1 is outside"),
    ("gold", None, r"target='gold' needs labels"),
    ("best", None,
     r"target 'best' is not one of the model's labels: 'neg', 'neu', 'pos'; or 'predicted'"),
    ("gold", [0, 7], r"label 7 of text 1 is outside"),
    ("gold", [0, "great"], r"label 'great' of text 1 is not one of the model's labels"),
    ("gold", [0], r"got 1 labels for 2 texts"),
])
def test_bad_target_or_labels(tiny_model, tiny_tokenizer, target, labels, message):
    with pytest.raises(ValueError, match=message):
        explain_texts(tiny_model, tiny_tokenizer, ["good", "bad"], target=target, labels=labels)


def test_labels_shorter_than_a_generator_of_texts(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"texts and labels differ in length"):
        explain_texts(tiny_model, tiny_tokenizer, (t for t in TEXTS), labels=iter([0, 1]),
                      target="gold")


def test_vocabulary_mismatch(make_tiny_model, tiny_tokenizer):
    small = make_tiny_model(vocab_size=10)
    with pytest.raises(ValueError, match=r"vocabulary mismatch: the tokenizer has \d+ tokens but "
                                         r"the model's input embedding has only 10 rows"):
        explain_texts(small, tiny_tokenizer, ["good"])


def test_slow_tokenizer_is_rejected(tiny_model):
    class SlowTokenizer:
        is_fast = False

    with pytest.raises(ValueError, match=r"not a fast tokenizer"):
        explain_texts(tiny_model, SlowTokenizer(), ["good"])


def test_bad_baseline_token_and_mode(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"baseline_token 'zzz' is not in the tokenizer"):
        explain_texts(tiny_model, tiny_tokenizer, ["good"], mode="replace", baseline_token="zzz")
    with pytest.raises(ValueError, match=r"only used with mode='replace'"):
        explain_texts(tiny_model, tiny_tokenizer, ["good"], baseline_token="[UNK]")
    with pytest.raises(ValueError, match=r"unknown mode"):
        explain_texts(tiny_model, tiny_tokenizer, ["good"], mode="erase")
    (unk,) = explain_texts(tiny_model, tiny_tokenizer, ["good movie"], mode="replace",
                           baseline_token="[UNK]")
    (pad,) = explain_texts(tiny_model, tiny_tokenizer, ["good movie"], mode="replace")
    assert unk.scores != pad.scores


def test_nan_output_raises_floating_point_error_with_context(make_tiny_model, tiny_tokenizer):
    model = make_tiny_model()
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"texts 0\.\.1: .*NaN"):
        explain_texts(model, tiny_tokenizer, ["good", "bad"])


# -- views --------------------------------------------------------------------------------------
def test_frame_and_table(tiny_model, tiny_tokenizer):
    explanations = explain_texts(tiny_model, tiny_tokenizer, TEXTS, labels=[0, 1, 2, 0])
    frame = explanations_to_frame(explanations)
    assert len(frame) == sum(len(e.words) for e in explanations)
    for column in ("example", "text", "position", "word", "score", "target", "predicted",
                   "probability"):
        assert column in frame.columns
    first = frame[frame["example"] == 0]
    assert first["word"].tolist() == explanations[0].words
    assert first["position"].tolist() == list(range(len(explanations[0].words)))
    table = format_table(explanations)
    assert table.count("predicted:") == len(TEXTS)
    assert "unbelievable" in table and "gold: neg" in table
    assert f"{explanations[1].scores[0]:+.3f}" in table


def test_format_table_handles_non_finite_scores():
    e = TextExplanation(text="a b", words=["a", "b"], scores=[float("inf"), -0.5], predicted=0,
                        predicted_label="x", probability=0.9, target=0, target_label="x",
                        target_probability=0.9)
    assert "inf" in format_table([e])


def test_units_and_label_names(tiny_model, tiny_tokenizer):
    text = "the movie, it was good!"
    [words] = explain_texts(tiny_model, tiny_tokenizer, text, target="pos")
    [spaces] = explain_texts(tiny_model, tiny_tokenizer, text, target="pos", units="whitespace")
    assert words.words == ["the", "movie", ",", "it", "was", "good", "!"]
    assert spaces.words == text.split() and spaces.units == "whitespace"
    assert words.target == spaces.target == 2 and words.target_label == "pos"
    [by_index] = explain_texts(tiny_model, tiny_tokenizer, text, target=2)
    assert by_index.scores == words.scores
    # the whitespace unit "movie," is one erasure: its score differs from either piece's
    assert spaces.scores[0] == words.scores[0] and spaces.scores[1] not in words.scores
    [gold] = explain_texts(tiny_model, tiny_tokenizer, text, labels=["neu"], target="gold")
    assert gold.gold == gold.target == 1


def test_format_table_shares_one_bar_scale_unless_per_text():
    def one(words, scores):
        return TextExplanation(text=" ".join(words), words=words, scores=scores, predicted=0,
                               predicted_label="x", probability=0.9, target=0,
                               target_label="x", target_probability=0.9)
    texts = [one(["not", "bad"], [17.6, 8.8]), one(["heartfelt"], [0.116])]
    shared = format_table(texts).splitlines()
    assert shared[0].startswith("bars: eq1 score") and shared[0].endswith(
        "one scale for all texts (++++++++++++++++++++ = 17.6)")
    bars = {line.split()[0]: line.split()[-1] for line in shared if "+0." in line
            or "+17" in line or "+8" in line}
    assert bars == {"not": "+" * 20, "bad": "+" * 10, "heartfelt": "+0.116"}  # 0.116: no bar
    per_text = format_table(texts, per_text=True)
    assert "scaled per text" in per_text.splitlines()[0]
    assert ["heartfelt", "+0.116", "+" * 20] in [line.split() for line in
                                                 per_text.splitlines()]
    assert "[bar scale 0.116]" in per_text
    bounded = format_table(texts, values="prob_drop")
    assert "bars: P(target) - P(target | word erased), one scale for all texts" in bounded
    # shown value 0.9 (1 - 0.9**17.6) = 0.7591 next to the score, bar 0.7591 * 20 = 15 chars
    rows = [line.split() for line in bounded.splitlines()]
    assert ["not", "+17.600", "+0.759", "+" * 15] in rows
