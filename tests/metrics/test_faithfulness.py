"""Comprehensiveness, sufficiency, AOPC and deletion curves on an additive toy model, by hand;
a perfect attribution beats a random one on every faithfulness metric."""

from __future__ import annotations

import pytest
import torch

from captum_erasure.metrics.diagnostics import MaskedPerformance
from captum_erasure.metrics.faithfulness import (
    FaithfulnessMetrics,
    aopc,
    bin_sizes,
    comprehensiveness,
    deletion_curve,
    rationale_size,
    removal_curves,
    sufficiency,
)

# Ids 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK]; words 4.. carry additive weights.
WEIGHTS = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.2, 0.1, -0.05, 0.0])


def additive(ids, attention):
    """p(positive) = 0.5 + sum of the weights of the attended words; returns probabilities."""
    p = 0.5 + (WEIGHTS[ids] * attention).sum(1).double()
    return torch.stack([1 - p, p], 1)


def abcd():
    ids = torch.tensor([[1, 4, 5, 6, 7, 2, 0]])   # [CLS] a b c d [SEP] [PAD]
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    perfect = WEIGHTS[ids] * attention             # d (0) ranks before c (-0.05)
    return ids, attention, perfect


def call(fn, attributions=None, **kwargs):
    ids, attention, perfect = abcd()
    return fn(additive, ids, perfect if attributions is None else attributions,
              additional_forward_args=(attention,), output="probs",
              special_token_ids=[0, 1, 2, 3], pad_token_id=0, **kwargs)


def test_rationale_sizes():
    assert rationale_size(4, 0.2) == 1 and rationale_size(20, 0.2) == 4
    assert rationale_size(20, 0.01) == 1 and rationale_size(3, 1.0) == 3
    assert bin_sizes(4, "eraser") == [1, 1, 1, 1, 2]
    assert bin_sizes(4, "all") == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="fraction"):
        rationale_size(4, 0.0)
    with pytest.raises(ValueError, match="bins"):
        bin_sizes(4, "every")


def test_comprehensiveness_and_sufficiency_by_hand():
    # p(x) = 0.75; top 20 % of 4 words = "a": without it 0.55, with only it 0.7.
    assert call(comprehensiveness).tolist() == pytest.approx([0.2])
    assert call(sufficiency).tolist() == pytest.approx([0.05])
    assert call(comprehensiveness, fraction=0.5).tolist() == pytest.approx([0.3])


def test_aopc_conventions_by_hand():
    # ERASER bins -> k = 1, 1, 1, 1, 2: drops 0.2 x 4 and 0.3.
    assert call(aopc).tolist() == pytest.approx([1.1 / 5])
    assert call(aopc, normalization="paper").tolist() == pytest.approx([1.1 / 6])
    # All k, removal order a, b, d, c: p = 0.55, 0.45, 0.45, 0.5.
    assert call(aopc, bins="all").tolist() == pytest.approx([(0.2 + 0.3 + 0.3 + 0.25) / 4])
    # Sufficiency, all k: keep a (0.7), a b (0.8), a b d (0.8), all (0.75).
    assert call(aopc, kind="sufficiency", bins="all").tolist() == \
        pytest.approx([(0.05 - 0.05 - 0.05 + 0.0) / 4])
    with pytest.raises(ValueError, match="normalization"):
        call(aopc, normalization="eq3")


def test_deletion_curve_by_hand():
    points, area = call(deletion_curve)
    assert points[0].tolist() == pytest.approx([0.75, 0.55, 0.45, 0.45, 0.5])
    assert area.tolist() == pytest.approx([(0.75 / 2 + 0.55 + 0.45 + 0.45 + 0.5 / 2) / 4])


def test_target_other_class_and_word_groups():
    # Class 0's probability is 1 - p: removing "a" raises it, so comprehensiveness is -0.2.
    assert call(comprehensiveness, target=0).tolist() == pytest.approx([-0.2])
    # "b c" as one word (mean attribution 0.025) ranks after "a" and before "d".
    mask = torch.tensor([[-1, 0, 1, 1, 2, -1, -1]])
    curves = call(removal_curves, feature_mask=mask)
    assert curves.orders == [[0, 1, 2]]
    assert curves.probabilities[0].tolist() == pytest.approx([0.55, 0.5, 0.5])


def test_delete_repacks_and_replace_masks():
    ids, attention, perfect = abcd()
    seen = []

    def recording(input_ids, attn):
        seen.append((input_ids.clone(), attn.clone()))
        return additive(input_ids, attn)

    removal_curves(recording, ids, perfect, ks=[0.2], additional_forward_args=(attention,),
                   output="probs", special_token_ids=[0, 1, 2, 3], pad_token_id=0)
    assert seen[-1][0].tolist() == [[1, 5, 6, 7, 2]] and seen[-1][1].tolist() == [[1] * 5]
    seen.clear()
    removal_curves(recording, ids, perfect, ks=[0.2], additional_forward_args=(attention,),
                   output="probs", special_token_ids=[0, 1, 2, 3], mode="replace",
                   baseline_id=3)
    assert seen[-1][0].tolist() == [[1, 3, 5, 6, 7, 2, 0]]
    with pytest.raises(ValueError, match="baseline_id"):
        call(removal_curves, mode="replace")


def test_errors_name_the_problem():
    ids, attention, perfect = abcd()
    with pytest.raises(ValueError, match="shaped like the inputs"):
        call(comprehensiveness, attributions=perfect[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        call(comprehensiveness, attributions=perfect * float("nan"))
    with pytest.raises(ValueError, match="no feature"):
        comprehensiveness(additive, torch.tensor([[1, 2]]), torch.zeros(1, 2),
                          additional_forward_args=(torch.ones(1, 2, dtype=torch.long),),
                          output="probs", special_token_ids=[0, 1, 2, 3])


def random_sentences(n=24, length=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(4, 8, (n, length), generator=generator)
    ids = torch.cat([torch.ones(n, 1, dtype=torch.long), words,
                     torch.full((n, 1), 2, dtype=torch.long)], 1)
    return ids, torch.ones_like(ids)


def test_perfect_attribution_beats_random_on_every_metric():
    global WEIGHTS
    saved = WEIGHTS
    WEIGHTS = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.09, 0.05, -0.06, -0.02])
    try:
        ids, attention = random_sentences()
        predicted = additive(ids, attention).argmax(1)
        sign = torch.where(predicted == 1, 1.0, -1.0)[:, None]
        perfect = WEIGHTS[ids] * sign                 # for the predicted class
        noise = torch.randn(ids.shape, generator=torch.Generator().manual_seed(1))
        results = {}
        for name, attributions in (("perfect", perfect), ("random", noise)):
            metrics = FaithfulnessMetrics(additive, output="probs",
                                          special_token_ids=[0, 1, 2, 3], pad_token_id=0)
            metrics.update(ids[:10], attributions[:10], additional_forward_args=(attention[:10],))
            metrics.update(ids[10:], attributions[10:], additional_forward_args=(attention[10:],))
            masked = MaskedPerformance(additive, 3, output="probs", special_token_ids=[0, 1, 2, 3])
            masked.update(ids, attributions, predicted, additional_forward_args=(attention,))
            results[name] = {**metrics.compute(), "masked_f1_auc": masked.compute().auc}
            assert metrics.stats.rows == 2 * (24 + 24 * 8)
        higher = ("comprehensiveness", "aopc_comprehensiveness", "aopc_comprehensiveness_all_k")
        for metric, value in results["perfect"].items():
            if metric in higher:
                assert value > results["random"][metric], metric
            else:
                assert value < results["random"][metric], metric
    finally:
        WEIGHTS = saved
