"""AUC_rep (Kim et al. 2020): curves by hand, sampling rules, step counts, batching
invariance, words, errors."""

from __future__ import annotations

import pytest
import torch
from mlm_toys import TEXTS, TableMLM, toy_classifier, toy_mlm, toy_tokenizer

from captum_erasure import word_feature_mask
from captum_erasure.metrics._curves import curve_area, feature_order
from captum_erasure.metrics.auc_rep import auc_rep, mlm_replacement_curves

# Vocabulary 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK], 4 a, 5 b, 6 c.
SPECIALS = [0, 1, 2, 3]


def share_of_a(ids, attn):
    """p(positive) = 0.1 + 0.8 * (share of "a" among the attended non-special tokens)."""
    words = (ids > 3) & attn.bool()
    share = ((ids == 4) & words).sum(1) / words.sum(1)
    p = 0.1 + 0.8 * share.double()
    return torch.stack([1 - p, p], 1)


def ten_words():
    ids = torch.tensor([[1, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 2]])
    return ids, torch.ones_like(ids)


def curves(attributions, probs=(0, 0, 0, 0, 0.9, 0.0, 0.1), ids=None, **kwargs):
    ids, attn = ten_words() if ids is None else (ids, torch.ones_like(ids))
    return mlm_replacement_curves(
        share_of_a, TableMLM(list(probs), 3), ids, attributions, target=1,
        additional_forward_args=(attn,), mask_token_id=3, special_token_ids=SPECIALS,
        output="probs", **kwargs)


def test_curve_area_is_the_normalised_trapezoid():
    assert curve_area(torch.tensor([1.0, 0.5, 0.0]), 2).item() == pytest.approx(0.5)
    assert curve_area(torch.tensor([0.7, 0.7]), 1).item() == pytest.approx(0.7)
    assert curve_area(torch.tensor([0.8, 0.4, 0.2, float("nan")]), 2).item() == \
        pytest.approx((0.4 + 0.4 + 0.1) / 2)


def test_auc_rep_by_hand_good_order_beats_bad_order():
    ids, _ = ten_words()
    good = (ids == 4).float()          # the two "a" first: the prediction collapses
    result = curves(good)
    assert result.n_replaced.tolist() == [2]   # 20% of 10 words
    # The MLM prefers "a" (0.9) but never re-draws the original token: "a" becomes "c".
    assert result.replaced_inputs[0, 0, 2].tolist() == [1, 6, 6] + [5] * 8 + [2]
    assert result.probabilities[0, 0].tolist() == pytest.approx([0.26, 0.18, 0.10])
    assert result.auc.item() == pytest.approx((0.26 / 2 + 0.18 + 0.10 / 2) / 2)
    bad = (ids == 5).float()           # "b" first: replaced by "a" (0.9) or "c" (0.1)
    assert auc_rep(share_of_a, TableMLM([0, 0, 0, 0, 0.9, 0.0, 0.1], 3), ids, bad, target=1,
                   additional_forward_args=(torch.ones_like(ids),), mask_token_id=3,
                   special_token_ids=SPECIALS, output="probs").item() > result.auc.item()


def test_ties_keep_position_order_and_words_are_ranked_by_mean():
    mask = torch.tensor([[-1, 0, 0, 1, 2, -1]])
    attr = torch.tensor([[9.0, 1.0, 3.0, 2.0, 2.0, 9.0]])
    assert feature_order(attr, mask) == [[0, 1, 2]]


@pytest.mark.parametrize("n_words, steps", [(1, 1), (4, 1), (5, 1), (10, 2), (11, 2)])
def test_twenty_percent_of_the_features_at_least_one(n_words, steps):
    ids = torch.tensor([[1] + [5] * n_words + [2]])
    result = curves(torch.zeros(ids.shape), ids=ids)
    assert result.n_replaced.tolist() == [steps]
    assert torch.isfinite(result.probabilities[0, 0, :steps + 1]).all()


@pytest.fixture(scope="module")
def tiny():
    tokenizer = toy_tokenizer()
    return tokenizer, toy_classifier(), toy_mlm(), tokenizer(TEXTS, padding=True,
                                                            return_tensors="pt")


def test_sampling_is_seeded_and_batching_invariant(tiny):
    tokenizer, classifier, mlm, enc = tiny
    ids, attn = enc["input_ids"], enc["attention_mask"]
    attr = torch.randn(ids.shape, generator=torch.Generator().manual_seed(0))
    kwargs = dict(additional_forward_args=(attn,), tokenizer=tokenizer, n_samples=3, seed=5,
                  fraction=0.5)
    packed = mlm_replacement_curves(classifier, mlm, ids, attr, batch_size=64, **kwargs)
    for options in (dict(batch_size=1), dict(max_tokens=20)):
        other = mlm_replacement_curves(classifier, mlm, ids, attr, **options, **kwargs)
        assert torch.equal(other.replaced_inputs, packed.replaced_inputs)
        torch.testing.assert_close(other.auc, packed.auc, rtol=1e-4, atol=1e-5)
    # One MLM forward per step for all examples and samples; all curves share forwards.
    steps = packed.n_replaced
    assert packed.mlm_stats.forward_passes == int(steps.max())
    assert packed.classifier_stats.rows == len(TEXTS) + 3 * int(steps.sum())
    assert packed.classifier_stats.forward_passes == 2
    reseeded = mlm_replacement_curves(classifier, mlm, ids, attr, **{**kwargs, "seed": 6})
    assert not torch.equal(reseeded.replaced_inputs, packed.replaced_inputs)
    # Special tokens and padding are never replaced.
    replaced = packed.replaced_inputs
    fixed = ((ids < 5) | (attn == 0))[:, None, None, :].expand_as(replaced)
    assert torch.equal(replaced[fixed], ids[:, None, None, :].expand_as(replaced)[fixed])
    assert (replaced[~fixed] >= 5).all()


def test_a_word_is_replaced_as_a_whole(tiny):
    tokenizer, classifier, mlm, enc = tiny
    ids, attn = enc["input_ids"][:1], enc["attention_mask"][:1]
    words = word_feature_mask(enc)[:1]
    attr = (words == 3).float()     # "unbelievable" (3 pieces) first
    result = mlm_replacement_curves(classifier, mlm, ids, attr, feature_mask=words,
                                    additional_forward_args=(attn,), tokenizer=tokenizer)
    assert result.n_replaced.tolist() == [1]  # 5 words
    after = result.replaced_inputs[0, 0, 1]
    pieces = words[0] == 3
    assert (after[pieces] != ids[0, pieces]).all() and torch.equal(after[~pieces], ids[0, ~pieces])
    assert (after[pieces] >= 5).all()


def test_bad_arguments():
    ids, _ = ten_words()
    with pytest.raises(ValueError, match="fraction"):
        curves(torch.zeros(ids.shape), fraction=0.0)
    with pytest.raises(ValueError, match="shape"):
        curves(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="no feature"):
        curves(torch.zeros(1, 2), ids=torch.tensor([[1, 2]]))
