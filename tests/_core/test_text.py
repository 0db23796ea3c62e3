"""Words as users read them (``_core.text``): the two kinds of unit, the text rebuilt from its
own characters after erasure, and label names as targets."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from captum_erasure._core.text import (
    check_units,
    encode_texts,
    label_index,
    resolve_label_names,
    text_without,
    unit_spans,
    word_feature_mask,
)

WORDS = ["i", "couldn", "'", "t", "stand", "it", ".", ",", "film", "fresh"]


@pytest.fixture(scope="module")
def contractions():
    """WordPiece over WORDS with BERT's pre-tokenizer: "couldn't" is couldn ' t."""
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                   pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")


TEXT = "I couldn't stand it , fresh film."


def test_words_are_the_tokenizer_s_and_whitespace_units_are_str_split(contractions):
    enc = contractions([TEXT])
    _, words = unit_spans(enc, 0, "words")
    assert [TEXT[s:e] for s, e in words] == \
        ["I", "couldn", "'", "t", "stand", "it", ",", "fresh", "film", "."]
    unit_of, spaces = unit_spans(enc, 0, "whitespace")
    assert [TEXT[s:e] for s, e in spaces] == TEXT.split()
    assert unit_of == {0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5, 8: 6, 9: 6}
    assert word_feature_mask(enc, units="whitespace")[0].tolist() == \
        [-1, 0, 1, 1, 1, 2, 3, 4, 5, 6, 6, -1]
    assert word_feature_mask(enc)[0].tolist() == [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1]


@pytest.mark.parametrize("units, erased, remaining", [
    ("whitespace", [1], "I stand it , fresh film."),        # the contraction goes whole
    ("whitespace", [], TEXT),                                # nothing erased: the text itself
    ("whitespace", [0], "couldn't stand it , fresh film."),  # at the start: no leading space
    ("whitespace", [6], "I couldn't stand it , fresh"),      # at the end: no trailing space
    ("whitespace", [4, 5], "I couldn't stand it film."),     # neighbours: one gap kept
    ("whitespace", list(range(7)), ""),
    ("words", [4], "I couldn't it , fresh film."),
    ("words", [1], "I 't stand it , fresh film."),           # no glued "I't"
    ("words", [3], "I couldn' stand it , fresh film."),      # what the tokenizer calls a word
    ("words", [2], "I couldnt stand it , fresh film."),      # glued stays glued
    ("words", [8], "I couldn't stand it , fresh ."),         # the gap before "film" stays
    ("words", [9], "I couldn't stand it , fresh film"),
])
def test_remaining_text_is_cut_from_the_original_characters(contractions, units, erased,
                                                            remaining):
    enc = encode_texts(_model_for(contractions), contractions, TEXT, units=units)
    assert enc.text_without(0, erased) == remaining


def _model_for(tokenizer):
    class Constant(torch.nn.Module):
        def forward(self, ids, mask):
            return torch.zeros(len(ids), 2)
    return Constant()


def test_whitespace_collapses_to_the_gap_after_the_cut():
    text = "a  bb\n\ncc   dd"
    spans = [(0, 1), (3, 5), (7, 9), (12, 14)]
    assert text_without(text, spans, [1]) == "a\n\ncc   dd"
    assert text_without(text, spans, [1, 2]) == "a   dd"
    assert text_without(text, spans, [3]) == "a  bb\n\ncc"
    assert text_without(" x y ", [(1, 2), (3, 4)], [0]) == "y "
    assert text_without(" x y ", [(1, 2), (3, 4)], [1]) == " x"


def test_unknown_units_name_the_choices():
    with pytest.raises(ValueError, match=r"units must be one of \('words', 'whitespace'\)"):
        check_units("sentences")


def test_label_names_resolve_through_id2label(tiny_model):
    assert label_index(tiny_model, "pos") == 2
    assert resolve_label_names(["neg", 1, "pos"], tiny_model) == [0, 1, 2]
    assert resolve_label_names(("neu",), tiny_model) == [1]
    target = torch.tensor([0, 2])
    assert resolve_label_names(target, tiny_model) is target  # not names: untouched
    assert resolve_label_names(None, tiny_model) is None
    with pytest.raises(ValueError, match=r"target 'positive' is not one of the model's labels: "
                                         r"'neg', 'neu', 'pos'"):
        resolve_label_names("positive", tiny_model)
    with pytest.raises(ValueError, match=r"target 'pos' is a label name, but the model has no "
                                         r"config.id2label"):
        resolve_label_names("pos", lambda ids: ids)
