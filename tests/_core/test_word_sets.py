"""SetEvaluator (_core/word_sets.py): sets of words erased through the engine."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_VOCAB
from flip_toys import MarkerBag

from captum_erasure._core.word_sets import SetEvaluator


def test_every_word_deleted_from_a_text_without_special_tokens():
    """A tokenizer without [CLS]/[SEP] (the GloVe models of paper/li2016): deleting every word
    leaves a zero-width row, which reaches the model as such (MarkerBag: the bias alone)."""
    ids = torch.tensor([[TINY_VOCAB.index("good"), TINY_VOCAB.index("great")]])
    evaluator = SetEvaluator(MarkerBag(), ids, torch.ones_like(ids), torch.tensor([[0, 1]]),
                             pad_token_id=0)
    [both] = evaluator.evaluate([(0, (0, 1))])      # a batch of zero width
    [first] = evaluator.evaluate([(0, (0,))])
    assert both.tolist() == pytest.approx(torch.softmax(torch.tensor([0., -1.]), 0).tolist())
    assert first.tolist() == pytest.approx(torch.softmax(torch.tensor([0., 1.]), 0).tolist())
    assert evaluator.rows_per_example == [2]
