"""InputReduction (Feng et al. 2018) on the bag-of-words toy (flip_toys) and a tiny BERT."""

from __future__ import annotations

import pytest
import torch
from captum.attr import PerturbationAttribution
from flip_toys import MarkerBag

from captum_erasure import InputReduction, ReductionResult, word_feature_mask
from captum_erasure._core.engine import output_logits
from captum_erasure._core.text import encode_texts

TEXT = "the movie was good and great but bad"   # score -1 + 2 + 2 - 0.5 = 2.5: positive


def probs_of(model, tokenizer, text: str) -> torch.Tensor:
    enc = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(output_logits(model(enc["input_ids"], enc["attention_mask"])), -1)[0]


def assert_prediction_kept_at_every_step(model, tokenizer, result: ReductionResult) -> None:
    enc = encode_texts(model, tokenizer, [result.text])
    texts = [enc.text_without(0, result.removal_path[:step])
             for step in range(len(result.removal_path) + 1)]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        labels = output_logits(model(batch["input_ids"], batch["attention_mask"])).argmax(-1)
    assert labels.tolist() == [result.label] * len(texts), texts


@pytest.mark.parametrize("importance", ["gradient", "loo"])
def test_toy_reduction_keeps_one_marker(tiny_tokenizer, importance):
    model = MarkerBag()
    [result] = InputReduction(model, importance=importance).reduce(TEXT,
                                                                   tokenizer=tiny_tokenizer)
    assert isinstance(result, ReductionResult)
    # Every word but one marker can go: "bad" first (removing it raises the score), then the
    # zero-weight words; one marker alone (score 1) stays positive.
    assert result.removal_path[0] == 7
    assert len(result.kept) == 1 and result.reduced_words[0] in ("good", "great")
    assert result.label == 1 and result.verified
    assert result.original_confidence == pytest.approx(torch.sigmoid(torch.tensor(2.5)).item())
    assert result.confidence == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())
    assert sorted(result.removal_path + result.kept) == list(range(8))
    assert_prediction_kept_at_every_step(model, tiny_tokenizer, result)


def test_loo_greedy_path_and_cost_are_exact(tiny_tokenizer):
    model = MarkerBag()
    reducer = InputReduction(model, importance="loo")
    [result] = reducer.reduce("good great bad", tokenizer=tiny_tokenizer)
    # step 1: remove bad (score 3), good (1.5) or great (1.5) -> bad; step 2: ties between
    # the markers, broken by word order -> good removed; 1 word left.
    assert result.removal_path == [2, 0] and result.kept == [1]
    # rows: 1 original + 3 + 2 candidates + 1 verification of the reduced text
    assert result.forward_passes == 7
    # one batched pass per step: originals, 2 steps, verification
    assert reducer.last_stats.forward_passes == 4


def test_min_confidence_stops_earlier(tiny_tokenizer):
    model = MarkerBag()
    [free] = InputReduction(model, importance="loo").reduce(TEXT, tokenizer=tiny_tokenizer)
    [strict] = InputReduction(model, importance="loo", min_confidence=0.9).reduce(
        TEXT, tokenizer=tiny_tokenizer)
    # P(pos) >= 0.9 needs score >= 2.2: both markers must stay.
    assert sorted(strict.reduced_words) == ["good", "great"]
    assert strict.confidence >= 0.9 and len(strict.kept) > len(free.kept)


@pytest.mark.parametrize("importance", ["gradient", "loo"])
def test_beam_reduces_at_least_as_much_as_greedy(tiny_model, tiny_tokenizer, importance):
    texts = ["the movie was good and the plot was very dull", "a great film , not a bad script"]
    greedy = InputReduction(tiny_model, importance=importance).reduce(
        texts, tokenizer=tiny_tokenizer)
    beam = InputReduction(tiny_model, importance=importance).reduce(
        texts, tokenizer=tiny_tokenizer, beam_size=3)
    for g, b in zip(greedy, beam):
        assert len(b.removal_path) >= len(g.removal_path)
        assert b.label == g.label and b.beam_size == 3
        if b.verified:
            assert_prediction_kept_at_every_step(tiny_model, tiny_tokenizer, b)
        assert_prediction_kept_at_every_step(tiny_model, tiny_tokenizer, g)


def test_attribute_returns_the_removal_order(tiny_tokenizer):
    model = MarkerBag()
    reducer = InputReduction(model, importance="loo", pad_token_id=tiny_tokenizer.pad_token_id)
    assert isinstance(reducer, PerturbationAttribution)
    enc = tiny_tokenizer(["good great bad", "unbelievable good"], padding=True,
                         return_tensors="pt")
    attr = reducer.attribute(enc["input_ids"], additional_forward_args=(enc["attention_mask"],),
                             feature_mask=word_feature_mask(enc))
    # [CLS] good great bad [SEP]: bad first (1), good second (2), great kept (3)
    assert attr[0].tolist() == [0, 2, 3, 1, 0, 0]   # (padded to the second row)
    # [CLS] un ##believ ##able good [SEP]: the three pieces are one word, removed first
    assert attr[1].tolist() == [0, 1, 1, 1, 2, 0]
    assert [r.removal_path for r in reducer.last_result] == [[2, 0], [0]]
    assert reducer.last_results is reducer.last_result  # the earlier name still works
    with pytest.raises(ValueError, match="keeps the model's own prediction"):
        reducer.attribute(enc["input_ids"], target=0,
                          additional_forward_args=(enc["attention_mask"],),
                          feature_mask=word_feature_mask(enc))


def test_one_word_and_bad_input(tiny_tokenizer):
    model = MarkerBag()
    [result] = InputReduction(model).reduce("good", tokenizer=tiny_tokenizer)
    assert result.removal_path == [] and result.reduced_text == "good"
    assert result.confidence == result.original_confidence
    with pytest.raises(ValueError, match="beam_size"):
        InputReduction(model, beam_size=0)
    with pytest.raises(ValueError, match="importance"):
        InputReduction(model, importance="random")
    with pytest.raises(ValueError, match="empty"):
        InputReduction(model).reduce([""], tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match="embedding"):
        InputReduction(lambda ids, mask: model(ids, mask)).reduce(TEXT, tokenizer=tiny_tokenizer)


def test_units_and_the_reduced_text_keep_the_texts_characters(tiny_tokenizer):
    """"good, great bad!" with whitespace units: three units; "bad!" goes first (removing
    it raises the score), then by word order "good,"; the reduced text is cut from the text."""
    reducer = InputReduction(MarkerBag(), importance="loo")
    [spaces] = reducer.reduce("good,  great bad!", tokenizer=tiny_tokenizer, units="whitespace")
    assert spaces.words == ["good,", "great", "bad!"]
    assert spaces.removal_path == [2, 0] and spaces.reduced_text == "great" and spaces.verified
    [words] = reducer.reduce("good,  great bad!", tokenizer=tiny_tokenizer)
    assert words.words == ["good", ",", "great", "bad", "!"]
    # bad first, then the zero-weight punctuation, then good: "great" is left alone
    assert words.reduced_text == "great" and words.reduced_words == ["great"]
    with pytest.raises(ValueError, match=r"units must be one of \('words', 'whitespace'\)"):
        reducer.reduce("good", tokenizer=tiny_tokenizer, units="tokens")
