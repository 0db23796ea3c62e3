"""WordInformation (Guan et al. 2019): toys with a known answer, seeds, batch invariance, errors."""

import os

import pytest
import torch
from torch import nn

from captum_erasure import WordInformation
from captum_erasure.attr.information import InformationResult

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from conftest import build_tiny_model

MARKER = 3
FAST = {"n_steps": 60, "lr": 0.1, "lam": 0.1}


class MarkerModel(nn.Module):
    """Reads only the embedding of the marker token: the classifier head's input is
    ``tanh(W * sum_j [ids_j == MARKER] e_j)``; every other word is ignored. One output."""

    def __init__(self, vocab=10, dim=8):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, dim)
        self.proj = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, 1)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, ids, attention_mask=None):
        vectors = self.emb(ids) * (ids == MARKER).unsqueeze(-1)
        return self.classifier(torch.tanh(self.proj(vectors.sum(1))))


class SkipPositionModel(nn.Module):
    """Mixes every position's embedding except position ``k`` into a sequence state."""

    def __init__(self, k, vocab=10, dim=8):
        super().__init__()
        torch.manual_seed(1)
        self.k = k
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.state = nn.Identity()
        self.classifier = nn.Linear(dim, 2)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, ids, attention_mask=None):
        vectors = self.emb(ids)
        keep = torch.ones(ids.shape[1], 1)
        keep[self.k] = 0.0
        hidden = self.state(torch.tanh(self.mix(vectors * keep)))
        return self.classifier(hidden.mean(1))


def test_marker_word_keeps_the_most_information():
    model = MarkerModel()
    ids = torch.tensor([[5, 6, MARKER, 7, 8], [MARKER, 4, 4, 9, 6]])
    method = WordInformation(model, layer="pooled", **FAST)
    attr = method.attribute(ids)
    result = method.last_result
    assert isinstance(result, InformationResult) and result.layer.startswith("pooled")
    for row in range(2):
        marker = int((ids[row] == MARKER).nonzero())
        others = [i for i in range(5) if i != marker]
        assert attr[row, marker] > attr[row, others].max() + 1.0
        # the ignored words took the most noise: the least information kept
        assert result.word_sigma[row, marker] < result.word_sigma[row, others].min() / 5
    assert attr.shape == ids.shape and attr.dtype == torch.float32
    assert method.last_stats.forward_passes == 1 + FAST["n_steps"]


def test_ignored_position_gets_the_largest_noise():
    k = 2
    model = SkipPositionModel(k)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    result = WordInformation(model, layer=model.state, **FAST).attribute_details(ids)
    assert (result.word_sigma.argmax(1) == k).all()
    assert (result.kept.argmin(1) == k).all()
    assert torch.isfinite(result.entropy).all()


def _tiny_batch(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    from captum_erasure import word_feature_mask
    return enc["input_ids"], enc["attention_mask"], word_feature_mask(enc)


TEXTS = ["the movie was very good", "bad plot", "i liked it , but the acting was dull"]


@pytest.mark.parametrize("layer", [1, -1, "pooled"])
def test_seeded_runs_repeat_and_batches_do_not_matter(tiny_tokenizer, layer):
    model = build_tiny_model()
    ids, attention, words = _tiny_batch(tiny_tokenizer, TEXTS)
    settings = {"layer": layer, "n_steps": 15, "lr": 0.1, "lam": 0.1, "seed": 3}
    together = WordInformation(model, **settings).attribute(
        ids, additional_forward_args=(attention,), feature_mask=words)
    again = WordInformation(model, **settings).attribute(
        ids, additional_forward_args=(attention,), feature_mask=words)
    assert torch.equal(together, again)
    for row, text in enumerate(TEXTS):
        alone_ids, alone_attention, alone_words = _tiny_batch(tiny_tokenizer, [text])
        alone = WordInformation(model, **settings).attribute(
            alone_ids, additional_forward_args=(alone_attention,), feature_mask=alone_words)
        width = alone.shape[1]
        torch.testing.assert_close(together[row, :width], alone[0], rtol=1e-4, atol=1e-4)
        assert (together[row, width:] == 0).all()
    # groups of batch_size examples give the same answer
    grouped = WordInformation(model, batch_size=2, **settings).attribute(
        ids, additional_forward_args=(attention,), feature_mask=words)
    torch.testing.assert_close(grouped, together, rtol=1e-4, atol=1e-4)
    other_seed = WordInformation(model, **{**settings, "seed": 4}).attribute(
        ids, additional_forward_args=(attention,), feature_mask=words)
    assert not torch.equal(other_seed, together)


def test_details_and_tuple_inputs(tiny_tokenizer):
    model = build_tiny_model()
    ids, attention, words = _tiny_batch(tiny_tokenizer, TEXTS[:2])
    method = WordInformation(model, layer=2, n_steps=5)
    (attr,) = method.attribute((ids,), additional_forward_args=(attention,),
                               feature_mask=words, show_progress=True)
    result = method.last_result
    assert attr.shape == ids.shape
    assert (attr[words < 0] == 0).all() and (result.sigma[words < 0] == 0).all()
    assert result.loss_history.shape == (2, 5)
    assert result.kept.shape == result.entropy.shape == (2, int(words.max()) + 1)
    assert torch.isnan(result.kept[1, 2:]).all()  # "bad plot" has two words
    assert result.layer == "layer 2"


def test_unknown_layers_are_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="has 2 encoder layers"):
        WordInformation(tiny_model, layer=3)
    with pytest.raises(ValueError, match="has 2 encoder layers"):
        WordInformation(tiny_model, layer=-4)
    with pytest.raises(ValueError, match="cannot find the encoder layers"):
        WordInformation(MarkerModel(), layer=1)
    with pytest.raises(TypeError, match="layer must be"):
        WordInformation(tiny_model, layer="last")
    bare = nn.Sequential(nn.Embedding(5, 4))
    with pytest.raises(ValueError, match="input embeddings"):
        WordInformation(bare, layer=bare[0])
    with pytest.raises(TypeError, match="nn.Module"):
        WordInformation(lambda ids: ids, layer=1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        WordInformation(tiny_model, layer=1, batch=3)
