"""Comprehensiveness, sufficiency, AOPC and deletion curves on an additive toy model, by hand;
a perfect attribution beats a random one on every faithfulness metric."""

from __future__ import annotations

import math

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


# -- a batch by hand: three classes, three predicted classes, f * n not an integer -------------
# Ids 0 [PAD], 1 [CLS], 2 [SEP]; the words' class vectors (logits are their sum).
VECTORS = {3: (2.0, 0.0, 0.0), 4: (0.0, 2.0, 0.0), 5: (0.0, 0.0, 2.0), 6: (1.0, 0.0, 0.0),
           7: (0.0, 1.0, 0.0), 8: (0.0, 0.0, 1.0), 9: (0.5, 0.5, 0.0), 10: (0.0, 0.5, 0.5)}
TABLE = torch.zeros(11, 3, dtype=torch.float64)
for _id, _vector in VECTORS.items():
    TABLE[_id] = torch.tensor(_vector, dtype=torch.float64)
BATCH = [  # (word ids, attribution of each word); predicted classes 1, 0, 2
    ([3, 6, 9, 4, 8, 10, 7], [0.9, -0.2, 0.4, 0.7, 0.1, 0.3, 0.5]),   # logits 3.5 4 1.5: 1
    ([3, 3, 5, 8, 9, 7], [0.2, 0.8, -0.5, 0.6, 0.4, 0.1]),             # logits 4.5 1.5 3: 0
    ([5, 8, 4, 10], [0.3, 0.9, 0.6, -0.1]),                            # logits 0 2.5 3.5: 2
]
FRACTION = 0.3  # f * n = 2.1, 1.8, 1.2: rationales of 3, 2 and 2 words


def three_class(ids, attention):
    return (TABLE[ids] * attention[..., None]).sum(1)


def probability(words, cls):
    """softmax(sum of the words' vectors)[cls], straight from the table above."""
    logits = [sum(VECTORS[w][c] for w in words) for c in range(3)]
    exps = [math.exp(v) for v in logits]
    return exps[cls] / sum(exps)


def batch_tensors():
    width = 2 + max(len(words) for words, _ in BATCH)
    ids = torch.zeros(len(BATCH), width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    attributions = torch.zeros(ids.shape)
    for b, (words, scores) in enumerate(BATCH):
        ids[b, :len(words) + 2] = torch.tensor([1, *words, 2])
        attention[b, :len(words) + 2] = 1
        attributions[b, 1:len(words) + 1] = torch.tensor(scores)
    return ids, attention, attributions


def by_hand(words, scores, fraction):
    """Every metric of one example, from ``probability`` alone."""
    order = sorted(range(len(words)), key=lambda i: -scores[i])
    cls = max(range(3), key=lambda c: probability(words, c))
    m = probability(words, cls)

    def without(k):
        return probability([w for i, w in enumerate(words) if i not in order[:k]], cls)

    def only(k):
        return probability([w for i, w in enumerate(words) if i in order[:k]], cls)

    n = len(words)
    k = math.ceil(fraction * n)
    eraser = [max(1, math.ceil(f * n)) for f in (0.01, 0.05, 0.1, 0.2, 0.5)]
    curve = [without(j) for j in range(n + 1)]
    return cls, {
        "comprehensiveness": m - without(k), "sufficiency": m - only(k),
        "aopc_comprehensiveness": sum(m - without(j) for j in eraser) / 5,
        "aopc_sufficiency": sum(m - only(j) for j in eraser) / 5,
        "aopc_comprehensiveness_all_k": sum(m - without(j) for j in range(1, n + 1)) / n,
        "aopc_sufficiency_all_k": sum(m - only(j) for j in range(1, n + 1)) / n,
        "deletion_area": sum((curve[j] + curve[j + 1]) / 2 for j in range(n)) / n,
    }


def test_comprehensiveness_and_sufficiency_by_hand_on_a_mixed_batch():
    ids, attention, attributions = batch_tensors()
    expected = [by_hand(words, scores, FRACTION) for words, scores in BATCH]
    assert [cls for cls, _ in expected] == [1, 0, 2]  # three different predicted classes
    assert [rationale_size(len(w), FRACTION) for w, _ in BATCH] == [3, 2, 2]
    common = dict(additional_forward_args=(attention,), special_token_ids=[0, 1, 2],
                  fraction=FRACTION, pad_token_id=0)
    comp = comprehensiveness(three_class, ids, attributions, **common)
    suff = sufficiency(three_class, ids, attributions, **common)
    torch.testing.assert_close(comp, torch.tensor(
        [e["comprehensiveness"] for _, e in expected], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(suff, torch.tensor(
        [e["sufficiency"] for _, e in expected], dtype=torch.float64), rtol=0, atol=1e-12)
    # the by-hand values are not all alike: a wrong class or k would show
    assert len({round(v, 6) for v in comp.tolist() + suff.tolist()}) == 6


def test_faithfulness_metrics_compute_by_value_over_two_updates():
    ids, attention, attributions = batch_tensors()
    metrics = FaithfulnessMetrics(three_class, fraction=FRACTION, special_token_ids=[0, 1, 2],
                                  pad_token_id=0)
    metrics.update(ids[:2], attributions[:2], additional_forward_args=(attention[:2],))
    metrics.update(ids[2:], attributions[2:], additional_forward_args=(attention[2:],))
    expected = [values for _, values in (by_hand(w, s, FRACTION) for w, s in BATCH)]
    result = metrics.compute()
    assert set(result) == set(expected[0])
    for name, value in result.items():
        assert value == pytest.approx(sum(e[name] for e in expected) / 3, abs=1e-12), name
    frame = metrics.per_example()
    assert frame["n_features"].tolist() == [7, 6, 4]
    assert frame["comprehensiveness"].tolist() == pytest.approx(
        [e["comprehensiveness"] for e in expected], abs=1e-12)
    # two curves of n rows each, plus the originals (once per curve), per example
    assert metrics.stats.rows == sum(2 * len(w) + 2 for w, _ in BATCH)


def test_embedding_shaped_attributions_get_the_hint_to_sum_over_the_last_axis():
    ids, attention, attributions = batch_tensors()
    per_dimension = attributions[..., None].expand(-1, -1, 384)  # LayerIntegratedGradients'
    with pytest.raises(ValueError, match=r"got \(3, 9, 384\); these look like one vector of 384 "
                                         r"per token .* attributions.sum\(-1\)"):
        comprehensiveness(three_class, ids, per_dimension, special_token_ids=[0, 1, 2],
                          additional_forward_args=(attention,), pad_token_id=0)
    summed = comprehensiveness(three_class, ids, per_dimension.sum(-1), pad_token_id=0,
                               special_token_ids=[0, 1, 2], additional_forward_args=(attention,))
    assert summed.shape == (3,)
