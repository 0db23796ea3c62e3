"""The greedy flip baseline on a three-class toy: flipping to a named class is not leaving the
original one; the erasure modes; the units and the rebuilt remaining text."""

from __future__ import annotations

import pytest
from conftest import TINY_VOCAB
from flip_toys import ThreeClassBag

from captum_erasure import greedy_flip

TEXT = "the good and bad movie"  # pos; without good: neg; without good and bad: neu


@pytest.fixture(scope="module")
def bag():
    return ThreeClassBag()


def test_away_from_the_label_and_to_a_named_class_differ(bag, tiny_tokenizer):
    [away] = greedy_flip(bag, TEXT, tokenizer=tiny_tokenizer)
    [to_neu] = greedy_flip(bag, TEXT, tokenizer=tiny_tokenizer, target="neu")
    assert away.original_label == to_neu.original_label == 2
    assert (away.erased_words, away.new_label, away.new_label_name) == (["good"], 0, "neg")
    assert away.remaining_text == "the and bad movie" and away.target is None
    # "neg" left "pos" already, but it is not the class asked for: erase on until "neu"
    assert (to_neu.erased_words, to_neu.new_label, to_neu.new_label_name) == \
        (["good", "bad"], 1, "neu")
    assert to_neu.remaining_text == "the and movie" and to_neu.target == 1
    assert to_neu.flipped and away.flipped


def test_a_named_target_equals_its_class_index(bag, tiny_tokenizer):
    by_name = greedy_flip(bag, [TEXT, TEXT], tokenizer=tiny_tokenizer, target=["neu", "neg"])
    by_index = greedy_flip(bag, [TEXT, TEXT], tokenizer=tiny_tokenizer, target=[1, 0])
    assert [r.erased_words for r in by_name] == [r.erased_words for r in by_index] == \
        [["good", "bad"], ["good"]]
    assert [r.target for r in by_name] == [1, 0]


def test_an_unknown_label_name_lists_the_valid_ones(bag, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"target 'positive' is not one of the model's labels: "
                                         r"'neg', 'neu', 'pos'"):
        greedy_flip(bag, TEXT, tokenizer=tiny_tokenizer, target="positive")


def test_already_the_target_class_says_so(bag, tiny_tokenizer):
    [result] = greedy_flip(bag, TEXT, tokenizer=tiny_tokenizer, target="pos")
    assert not result.flipped and result.remaining_text == TEXT
    assert result.message == "the text is already predicted as the target class 2"


@pytest.mark.parametrize("mode, baseline, expected", [
    ("delete", None, ["good", "bad"]),
    ("attention", None, ["good", "bad"]),
    ("replace", None, ["good", "bad"]),                        # [PAD]: a zero vector
    ("replace", TINY_VOCAB.index("movie"), ["good", "bad"]),   # another zero vector
])
def test_modes_erase_the_same_words_when_the_replacement_weighs_nothing(
        bag, tiny_tokenizer, mode, baseline, expected):
    [result] = greedy_flip(bag, TEXT, tokenizer=tiny_tokenizer, target="neu", mode=mode,
                           baseline_token=baseline)
    assert result.flipped and result.erased_words == expected and result.new_label == 1


def test_replace_mode_uses_the_baseline_token(bag, tiny_tokenizer):
    """Replacing "good" by "bad" (2, 0, 0) adds evidence for neg: erasing good alone reaches
    neg in both cases, but neu can no longer be reached (every erased word becomes "bad")."""
    bad = TINY_VOCAB.index("bad")
    [away] = greedy_flip(bag, TEXT, tokenizer=tiny_tokenizer, mode="replace",
                         baseline_token=bad)
    assert away.flipped and away.erased_words == ["good"] and away.new_label == 0
    [to_neu] = greedy_flip(bag, TEXT, tokenizer=tiny_tokenizer, mode="replace",
                           baseline_token=bad, target="neu")
    assert not to_neu.flipped and to_neu.erased == []
    assert to_neu.message == "erasing words in leave-one-out order never flipped the label"


def test_units_and_the_remaining_text_keep_the_texts_characters(bag, tiny_tokenizer):
    text = "the  good,   and bad!  movie"
    [words] = greedy_flip(bag, text, tokenizer=tiny_tokenizer, target="neu")
    assert words.words == ["the", "good", ",", "and", "bad", "!", "movie"]
    assert words.erased_words == ["good", "bad"]
    # the comma and "!" stay glued where they were; the cut words' whitespace collapses
    assert words.remaining_text == "the  ,   and !  movie"
    [spaces] = greedy_flip(bag, text, tokenizer=tiny_tokenizer, target="neu", units="whitespace")
    assert spaces.words == ["the", "good,", "and", "bad!", "movie"]
    assert spaces.erased_words == ["good,", "bad!"] and spaces.remaining_text == "the   and  movie"
