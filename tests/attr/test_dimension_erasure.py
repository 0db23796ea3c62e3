"""EmbeddingDimensionErasure: exact values, manual hooks, Captum equality, batching, datasets."""

import math
import os

import pytest
import torch
from captum.attr import LayerFeatureAblation
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from captum_erasure.attr._unit_erasure import DatasetImportance
from captum_erasure.attr.embedding_dimensions import EmbeddingDimensionErasure

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from conftest import eq1_under_hook  # noqa: E402

TIGHT = dict(rtol=1e-5, atol=1e-6)


def eq1_with_hook(model, module, args, dim, target):
    """Eq. 1 per example when dimension ``dim`` of ``module``'s output is zeroed by our hook."""
    def zero_dim(mod, inputs, output):
        output = output.clone()
        output[..., dim] = 0.0
        return output

    return eq1_under_hook(model, module, zero_dim, args, target)


class MeanPoolMLP(nn.Module):
    """Word vectors -> mean over positions -> tanh MLP; ``log_probs`` switches the output."""

    def __init__(self, vocab=20, dim=6, log_probs=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 5), nn.Tanh(), nn.Linear(5, 3))
        self.log_probs = log_probs

    def forward(self, ids):
        logits = self.mlp(self.emb(ids).mean(1))
        return torch.log_softmax(logits, -1) if self.log_probs else logits

    def get_input_embeddings(self):
        return self.emb


class WrappedEmbedding(nn.Module):
    """An embedding module that states no width (found by a probe forward)."""

    def __init__(self, emb):
        super().__init__()
        self.inner = emb

    def forward(self, ids):
        return self.inner(ids) * 1.0


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=20, num_labels=2)
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def pooled():
    torch.manual_seed(1)
    return MeanPoolMLP().eval(), torch.randint(0, 20, (4, 5))


# -- exact values ------------------------------------------------------------------------------
def test_exact_values_linear_model_on_a_word_vector():
    """Input mode: logits = W x on one 3-d word vector; erasing x_d removes column d."""
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]))
    x = torch.tensor([[1.0, 2.0, -1.0]])  # logits [-1, 3]

    def log_p0(z0, z1):
        return -math.log1p(math.exp(z1 - z0))

    full = log_p0(-1, 3)
    erased = [log_p0(-2, 3), log_p0(-1, 1), log_p0(1, 2)]  # x without dimension 0, 1, 2
    method = EmbeddingDimensionErasure(model)
    attr = method.attribute(x, target=0)
    expected = torch.tensor([[(full - e) / -full for e in erased]], dtype=torch.float64)
    torch.testing.assert_close(attr.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(attr, torch.tensor([[0.24603, -0.47067, -0.67317]]),
                               rtol=1e-4, atol=1e-4)
    assert method.last_stats.rows == 1 + 3  # D + 1 rows
    raw = method.attribute(x, target=0, score="log_prob_diff")
    torch.testing.assert_close(raw.double(), torch.tensor([[full - e for e in erased]],
                                                          dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)


def test_input_mode_sequence_of_word_vectors_erases_every_position():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(15, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 5, 3)  # a 5-word window of 3-d vectors, as in the tagging tasks
    attr = EmbeddingDimensionErasure(model).attribute(x, target=1)
    for d in range(3):
        erased = x.clone()
        erased[..., d] = 0.0
        with torch.no_grad():
            full = torch.log_softmax(model(x).double(), -1)[:, 1]
            less = torch.log_softmax(model(erased).double(), -1)[:, 1]
        torch.testing.assert_close(attr[:, d].double(), (full - less) / -full, **TIGHT)


# -- embedding mode equals manual hooks ----------------------------------------------------------
def test_embedding_dimensions_equal_manual_hooks(pooled):
    model, ids = pooled
    method = EmbeddingDimensionErasure(model, model.emb)
    attr = method.attribute(ids, target=[0, 1, 2, 0])
    assert attr.shape == (4, 6)
    assert method.last_stats.rows == 4 * (6 + 1)
    target = torch.tensor([0, 1, 2, 0])
    for d in (0, 3, 5):
        torch.testing.assert_close(attr[:, d].double(),
                                   eq1_with_hook(model, model.emb, (ids,), d, target), **TIGHT)
    # A module that states no width: found by one probe forward, same scores.
    model.emb = WrappedEmbedding(model.emb)
    wrapped = EmbeddingDimensionErasure(model, model.emb)
    torch.testing.assert_close(wrapped.attribute(ids, target=target), attr, **TIGHT)
    assert wrapped.last_stats.rows == 1 + 4 * (6 + 1)


def test_tiny_bert_uses_get_input_embeddings():
    model = tiny_bert()
    torch.manual_seed(3)
    ids = torch.randint(1, 60, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    attr = EmbeddingDimensionErasure(model).attribute(ids, target=1,
                                                      additional_forward_args=(mask,))
    assert attr.shape == (2, 16)
    words = model.bert.embeddings.word_embeddings
    explicit = EmbeddingDimensionErasure(model, words).attribute(
        ids, target=1, additional_forward_args=(mask,))
    torch.testing.assert_close(attr, explicit, **TIGHT)
    for d in (0, 7, 15):
        torch.testing.assert_close(attr[:, d].double(),
                                   eq1_with_hook(model, words, (ids, mask), d, 1), **TIGHT)


def test_equals_captum_layer_feature_ablation_on_log_probs(pooled):
    """captum.md section 6: LayerFeatureAblation with one feature per dimension."""
    model, ids = pooled
    model.log_probs = True
    n, length, dims = ids.shape[0], ids.shape[1], 6
    target = torch.tensor([2, 0, 1, 1])
    captum = LayerFeatureAblation(model, model.emb).attribute(
        ids, target=target, layer_mask=torch.arange(dims).view(1, 1, dims).expand(1, length, dims),
        layer_baselines=0.0)[:, 0, :]
    ours = EmbeddingDimensionErasure(model, model.emb, output="log_probs").attribute(
        ids, target=target, score="log_prob_diff")
    assert captum.shape == ours.shape == (n, dims)
    torch.testing.assert_close(ours, captum, rtol=1e-5, atol=1e-6)


# -- batching and packing invariance -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["ids", "vectors", "bert"])
def test_batch_size_and_packing_invariance(kind):
    torch.manual_seed(4)
    extra = None
    if kind == "bert":
        model = tiny_bert()
        inputs = torch.randint(1, 60, (3, 5))
        extra = (torch.ones_like(inputs),)
    elif kind == "ids":
        model, inputs = MeanPoolMLP().eval(), torch.randint(0, 20, (3, 5))
    else:
        model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).eval()
        inputs = torch.randn(3, 6)
    runs = [EmbeddingDimensionErasure(model, batch_size=b).attribute(
        inputs, additional_forward_args=extra) for b in (1, 3, 64)]
    runs.append(EmbeddingDimensionErasure(model, max_tokens=13).attribute(
        inputs, additional_forward_args=extra))
    runs.append(EmbeddingDimensionErasure(model).attribute(
        inputs, additional_forward_args=extra, perturbations_per_eval=2))
    runs.append(torch.cat([EmbeddingDimensionErasure(model).attribute(
        inputs[i:i + 1], additional_forward_args=None if extra is None else (extra[0][i:i + 1],))
        for i in range(3)]))
    for other in runs[1:]:
        torch.testing.assert_close(other, runs[0], **TIGHT)


# -- dataset average -----------------------------------------------------------------------------
def test_attribute_dataset_is_the_mean_of_per_example_scores(pooled):
    model, _ = pooled
    torch.manual_seed(5)
    batches = [torch.randint(0, 20, (n, 5)) for n in (2, 3, 1)]
    labels = [torch.tensor([0, 1]), torch.tensor([2, 2, 1]), torch.tensor([0])]
    method = EmbeddingDimensionErasure(model, model.emb, batch_size=5)
    per_example = torch.cat([method.attribute(x, target=t)
                             for x, t in zip(batches, labels)]).double()
    result = method.attribute_dataset(iter([(x, (), t) for x, t in zip(batches, labels)]))
    assert isinstance(result, DatasetImportance) and result.count == 6
    torch.testing.assert_close(result.mean, per_example.mean(0), **TIGHT)
    torch.testing.assert_close(result.std, per_example.std(0), **TIGHT)
    assert method.last_stats.rows == 6 * (6 + 1)
    predicted = method.attribute_dataset(batches)
    torch.testing.assert_close(
        predicted.mean, torch.cat([method.attribute(x) for x in batches]).double().mean(0),
        **TIGHT)


def test_running_moments_stay_accurate_for_large_scores():
    from captum_erasure.attr._unit_erasure import RunningMoments
    scores = 1e9 + torch.randn(50, 4, dtype=torch.float64)
    moments = RunningMoments()
    for part in scores.split(7):
        moments.update(part)
    result = moments.result()
    torch.testing.assert_close(result.mean, scores.mean(0), rtol=1e-12, atol=1e-6)
    torch.testing.assert_close(result.std, scores.std(0), rtol=1e-6, atol=1e-6)


# -- bad input ---------------------------------------------------------------------------------
def test_wrong_target_raises(pooled):
    model, ids = pooled
    method = EmbeddingDimensionErasure(model, model.emb)
    with pytest.raises(ValueError, match="outside"):
        method.attribute(ids, target=3)
    with pytest.raises(ValueError, match="targets"):
        method.attribute(ids, target=[0, 1])


def test_nan_output_raises():
    model = nn.Linear(3, 2)
    x = torch.tensor([[1.0, float("nan"), 0.0]])
    with pytest.raises(FloatingPointError, match="model output contains NaN or infinite"):
        EmbeddingDimensionErasure(model).attribute(x)


def test_token_ids_without_an_embedding_module_raise():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="embedding_layer"):
        EmbeddingDimensionErasure(model).attribute(torch.randint(0, 10, (2, 2)))
    with pytest.raises(ValueError, match="one input tensor"):
        EmbeddingDimensionErasure(model, model[0]).attribute((torch.zeros(2, 2).long(),) * 2)
