"""Atanasova et al.'s diagnostic properties and VADER agreement, by hand on small inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from captum_erasure.data import cache_dir, vader_valences
from captum_erasure.metrics.diagnostics import (
    MaskedPerformance,
    bag_distance,
    confidence_indication,
    dataset_consistency,
    human_agreement,
    model_activations,
    overlap_pairs,
    rationale_consistency,
    saliency_distance,
)

WEIGHTS = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.3, -0.3, 0.05])   # 3 = [MASK] weighs 0


def additive(ids, attention):
    p = 0.5 + (WEIGHTS[ids] * attention).sum(1).double()
    return torch.stack([1 - p, p], 1)


def test_masked_performance_by_hand():
    # [CLS] x x x x [SEP]; example 0: a c c c (p .75 -> class 1), example 1: b c c c (class 0).
    ids = torch.tensor([[1, 4, 6, 6, 6, 2], [1, 5, 6, 6, 6, 2]])
    attention = torch.ones_like(ids)
    good = torch.tensor([[0, 9, 1, 1, 1, 0], [0, 9, 1, 1, 1, 0]]).float()   # the sentiment word
    metric = MaskedPerformance(additive, 3, fractions=(0.0, 0.25, 1.0), output="probs",
                               special_token_ids=[0, 1, 2, 3])
    metric.update(ids, good, [1, 0], additional_forward_args=(attention,))
    result = metric.compute()
    # 0 %: both right (F1 1). 25 % = one word: "a" masked -> p .65 still class 1; "b" masked ->
    # p .65 -> class 1, wrong: predictions (1, 1) vs gold (1, 0): macro-F1 (2/3 + 0) / 2.
    # 100 %: p .5 for both -> class 0 (argmax of [.5, .5]): (0 + 2/3) / 2.
    assert result.f1 == pytest.approx([1.0, 1 / 3, 1 / 3])
    assert result.auc == pytest.approx(((1 + 1 / 3) / 2 * 0.25 + 1 / 3 * 0.75))
    assert metric.stats.rows == 2 + 2 * 3
    with pytest.raises(ValueError, match="labels"):
        metric.update(ids, good, [1], additional_forward_args=(attention,))


def test_confidence_indication_finds_signal_and_reports_the_mean_baseline():
    rng = np.random.default_rng(0)
    saliency = [rng.normal(size=rng.integers(3, 9)) for _ in range(80)]
    sums = np.array([s.sum() for s in saliency])
    confidence = 0.5 + 0.45 * (sums - sums.min()) / (sums.max() - sums.min())
    informative = confidence_indication(saliency, confidence)
    assert informative.mae < 1e-6 < informative.baseline_mae
    noise = confidence_indication([rng.normal(size=5) for _ in range(80)], confidence)
    assert noise.mae > 0.5 * noise.baseline_mae
    with pytest.raises(ValueError, match="at least 4"):
        confidence_indication(saliency[:3], confidence[:3])


def test_saliency_distances():
    assert saliency_distance([2.0, -1.0], [1.0, -0.5]) == 0.0       # scale-free
    assert saliency_distance([1.0, 0.0], [0.0, 1.0]) == 1.0
    # Bags: {a: 1, b: .5} vs {a: 0.5, c: 1} -> |.5| + |.5| + |1| over 3 words.
    assert bag_distance(["a", "b"], [2.0, 1.0], ["A", "c"], [0.5, 1.0]) == \
        pytest.approx((0.5 + 0.5 + 1.0) / 3)
    with pytest.raises(ValueError, match="lengths"):
        saliency_distance([1.0], [1.0, 2.0])


def test_rationale_consistency_is_one_when_distances_agree():
    activations = {"m0": torch.zeros(4, 2), "m1": torch.tensor([[0.0, 0], [1, 1], [2, 2], [3, 3]])}
    saliency = {"m0": [[1.0, 0.0]] * 4,
                "m1": [[1.0, 0.0], [1.0, 0.2], [1.0, 0.5], [1.0, 0.9]]}
    result = rationale_consistency(activations, saliency)
    assert result.spearman == pytest.approx(1.0) and result.n_points == 4
    reversed_saliency = {"m0": saliency["m0"], "m1": saliency["m1"][::-1]}
    assert rationale_consistency(activations, reversed_saliency).spearman == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same models"):
        rationale_consistency(activations, {"m0": saliency["m0"]})


def test_overlap_pairs_and_dataset_consistency():
    words = [["good", "film"], ["good", "film", "!"], ["bad", "plot"], ["dull", "plot"]]
    labels = [1, 1, 0, 0]
    pairs = overlap_pairs(words, labels, n_pairs=1)
    assert pairs == [(0, 1), (0, 2)]   # best same-label overlap, then a zero-overlap pair
    activations = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
    saliency = [[1.0, 0.1], [1.0, 0.1, 0.0], [1.0, 0.2], [1.0, 0.3]]
    result = dataset_consistency(activations, words, saliency, labels, n_pairs=2)
    assert result.n_points == 4 and result.spearman > 0


def test_human_agreement_average_precision_by_hand():
    valences = {"great": 3.1, "bad": -2.5, "ok": 0.9}
    words = [["great", "film", "bad"], ["great", "film", "bad"], ["film", "ok"], ["bad", "plot"]]
    saliency = [[0.9, 0.1, 0.5], [0.1, 0.9, 0.5], [0.3, 0.2], [0.7, 0.1]]
    result = human_agreement(words, saliency, [1, 1, 1, 0], valences)
    # Ex. 0: "great" ranked first (AP 1). Ex. 1: ranked third (AP 1/3). Ex. 2: "ok" is below
    # min_valence, no rationale: skipped. Ex. 3: class 0 wants negative words: "bad" first.
    assert result.average_precision[:2] == pytest.approx([1.0, 1 / 3])
    assert np.isnan(result.average_precision[2])
    assert result.map == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert (result.n_examples, result.n_skipped) == (3, 1)
    with pytest.raises(ValueError, match="polarity"):
        human_agreement(words[:1], saliency[:1], [2], valences)


def test_model_activations_hf_and_plain(make_tiny_model):
    model = make_tiny_model()
    ids = torch.tensor([[2, 4, 6, 3, 0], [2, 5, 3, 0, 0]])
    attention = (ids != 0).long()
    acts = model_activations(model, ids, attention)
    assert acts.shape == (2, 3 * 16)          # embeddings + 2 layers, mean-pooled
    # Padding does not change an example's activations.
    alone = model_activations(model, ids[1:, :3], attention[1:, :3])
    assert torch.allclose(acts[1], alone[0], atol=1e-5)

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(8, 3)
            self.hidden = nn.Linear(3, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, ids, attention):
            return self.out(self.hidden(self.embedding(ids)).mean(1))

    assert model_activations(Plain(), ids, attention).shape == (2, 4 + 2)


@pytest.mark.skipif(not (cache_dir() / "downloads" / "vaderSentiment-3.3.2.tar.gz").is_file(),
                    reason="the vaderSentiment sdist is not cached (needs PyPI once)")
def test_vader_valences_from_the_cached_sdist():
    valences = vader_valences()
    assert valences["good"] > 1 and valences["horrible"] < -2 and len(valences) > 7000
