"""GloVe vectors, the word-level tokenizer over their vocabulary, and the frequency dimensions."""

import numpy as np
import pytest
import torch

from captum_erasure._core.text import word_feature_mask
from captum_erasure.paper.li2016.glove import (
    FIRST_WORD_ID,
    PAD_ID,
    UNK_ID,
    build_glove_tokenizer,
    frequency_correlation,
    glove_embedding_matrix,
    glove_rank,
    glove_tokenizer,
    glove_vectors,
    glove_words,
    is_plain_word,
    pearson,
    vectors_of,
)


def tokens(text):
    return glove_tokenizer().tokenize(text)


def test_vocabulary_is_glove_in_frequency_order():
    words = glove_words()
    assert len(words) == 400_000 and glove_vectors().shape == (400_000, 50)
    assert words[:4] == ("the", ",", ".", "of")
    assert glove_rank()["the"] == 0


@pytest.mark.parametrize("text, expected", [
    ("Effective but too tepid biopic", ["effective", "but", "too", "tepid", "biopic"]),
    ("It doesn't, can't and won't.", ["it", "does", "n't", ",", "ca", "n't", "and", "wo", "n't",
                                      "."]),
    ("Jackson's ''Rings'' (2002) -- eye-popping!",
     ["jackson", "'s", "''", "rings", "''", "(", "2002", ")", "--", "eye-popping", "!"]),
    ("It costs 3.5 dollars... really", ["it", "costs", "3.5", "dollars", "...", "really"]),
    ("It\u2019s GREAT", ["it", "'s", "great"]),
])
def test_tokenizer_splits_like_glove(text, expected):
    assert tokens(text) == expected


def test_ids_pad_unk_and_word_rows():
    tokenizer = glove_tokenizer()
    encoding = tokenizer(["the biopic", "qzxqzxq"], padding=True, return_tensors="pt")
    ids = encoding["input_ids"]
    assert ids[0].tolist() == [glove_rank()["the"] + FIRST_WORD_ID,
                               glove_rank()["biopic"] + FIRST_WORD_ID]
    assert ids[1].tolist() == [UNK_ID, PAD_ID]
    assert encoding["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert tokenizer.pad_token_id == PAD_ID and tokenizer.unk_token_id == UNK_ID
    assert len(tokenizer) == 400_002 and tokenizer.is_fast


def test_every_token_is_its_own_word_with_offsets_into_the_text():
    text = "Offers that rare combination, doesn't it?"
    encoding = glove_tokenizer()([text], return_offsets_mapping=True)
    mask = word_feature_mask(encoding)
    assert mask[0].tolist() == list(range(len(encoding["input_ids"][0])))
    pieces = [text[a:b] for a, b in encoding["offset_mapping"][0]]
    assert pieces == ["Offers", "that", "rare", "combination", ",", "does", "n't", "it", "?"]


def test_embedding_matrix_rows():
    matrix = glove_embedding_matrix()
    assert matrix.shape == (400_002, 50) and matrix.dtype == torch.float32
    assert torch.all(matrix[PAD_ID] == 0)
    torch.testing.assert_close(matrix[UNK_ID], torch.from_numpy(
        np.asarray(glove_vectors(), dtype=np.float64).mean(0)).float(), rtol=1e-4, atol=1e-5)
    row = glove_rank()["tepid"]
    torch.testing.assert_close(matrix[row + FIRST_WORD_ID], torch.tensor(glove_vectors()[row]))


def test_small_vocabulary_tokenizer_maps_the_rest_to_unk():
    tokenizer = build_glove_tokenizer(("good", "film"))
    assert tokenizer("good bad film")["input_ids"] == [2, UNK_ID, 3]


def test_vectors_of_and_missing_words():
    np.testing.assert_array_equal(vectors_of(["the"])[0], glove_vectors()[0])
    with pytest.raises(KeyError, match="not in GloVe"):
        vectors_of(["the", "qzxqzxq"])


def test_plain_words():
    assert is_plain_word("eye-popping") and is_plain_word("o'clock")
    assert not is_plain_word("3.5") and not is_plain_word("Good") and not is_plain_word("'s")


def test_pearson_by_hand():
    r, p = pearson(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 4.0, 6.0, 8.0 + 1e-12]))
    assert r == pytest.approx(1.0) and p < 1e-6
    r, _ = pearson(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 1.0]))
    assert r == pytest.approx(0.0, abs=1e-12)


def test_columns_30_and_25_track_frequency_and_no_other_does():
    """The paper's "31st" and "26th" GloVe dimensions, counted from 1."""
    fits = {d: frequency_correlation(d, 50_000).r_squared for d in range(50)}
    ranked = sorted(fits, key=fits.get, reverse=True)
    assert ranked[:2] == [30, 25]
    assert fits[30] > 0.5 and fits[25] > 0.25 and fits[ranked[2]] < 0.15
