"""DiffMask on toys with a known answer, determinism, batch invariance, save/load, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model, build_tiny_tokenizer
from torch import nn

from captum_erasure import DiffMask, word_feature_mask
from captum_erasure.attr.diffmask import NotFittedError

torch.set_num_threads(1)

VOCAB, DIM, MARKER = 12, 6, 3  # token 0 is padding, MARKER the only word the toy reads


class _Stack(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class _Keep0(nn.Module):
    """A per-position layer that keeps feature 0 and mixes the others."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mix = nn.Parameter(torch.randn(DIM - 1, DIM - 1, generator=g) * 0.5,
                                requires_grad=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h[..., :1], torch.tanh(h[..., 1:] @ self.mix)], -1)


class MarkerToy(nn.Module):
    """Logits ``[0, 8 * n_markers - 4]``: the prediction depends only on whether MARKER occurs.
    Feature 0 of the embedding is +1 for MARKER and -1 for every other token; the classifier
    counts positions with a positive feature 0, so every other word is irrelevant."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        weight = torch.randn(VOCAB, DIM, generator=g)
        weight[:, 0] = -1.0
        weight[MARKER, 0] = 1.0
        self.word = nn.Embedding(VOCAB, DIM, _weight=weight)
        self.embeddings = nn.Identity()
        self.encoder = _Stack([_Keep0(1), _Keep0(2)])

    def get_input_embeddings(self) -> nn.Module:
        return self.word

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(self.word(input_ids))
        for layer in self.encoder.layer:
            h = layer(h)
        count = (torch.relu(h[..., 0]) * attention_mask).sum(-1)
        positive = 8 * count.clamp(max=1.0) - 4
        return torch.stack([torch.zeros_like(positive), positive], -1)


def _marker_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of 4-8 tokens from 1..VOCAB-1 without MARKER; every other row gets one MARKER."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, 8, dtype=torch.long)
    attention = torch.zeros(n, 8, dtype=torch.long)
    others = torch.tensor([t for t in range(1, VOCAB) if t != MARKER])
    for b in range(n):
        length = int(torch.randint(4, 9, (), generator=g))
        ids[b, :length] = others[torch.randint(len(others), (length,), generator=g)]
        if b % 2 == 0:
            ids[b, int(torch.randint(length, (), generator=g))] = MARKER
        attention[b, :length] = 1
    return ids, attention


def _batches(ids: torch.Tensor, attention: torch.Tensor, size: int) -> list:
    return [(ids[i:i + size], (attention[i:i + size],)) for i in range(0, len(ids), size)]


@pytest.mark.parametrize("mode,layer", [("input", 0), ("input", 2), ("hidden", 1)])
def test_marker_is_kept_and_the_rest_dropped(mode: str, layer: int) -> None:
    model = MarkerToy().eval()
    ids, attention = _marker_data(128, seed=0)
    dm = DiffMask(model, layer=layer, mode=mode)
    dm.fit(_batches(ids, attention, 16), epochs=25, seed=0, lr=1e-2, show_progress=False)
    test_ids, test_attention = _marker_data(40, seed=1)
    keep = dm.attribute(test_ids, additional_forward_args=(test_attention,))
    marker = test_ids == MARKER
    others = (test_attention == 1) & ~marker
    assert keep[marker].min() > 0.5
    assert keep[others].max() < 0.5
    assert dm.last_stats.rows == len(test_ids)  # one row per example
    details = dm.attribute_details(test_ids, additional_forward_args=(test_attention,))
    assert dm.last_stats.rows == 2 * len(test_ids)
    assert details.kl.max() < 0.5  # the kept marker alone keeps the prediction


@pytest.fixture(scope="module")
def tiny_setup():
    tokenizer = build_tiny_tokenizer()
    texts = ["the movie was good", "the plot was very dull and boring", "i liked it",
             "not fun , but the acting was great", "the acting was unbelievable !",
             "a bad script", "it is a very good film", "boring and dull"]
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    return tokenizer, texts, enc


def _fit(model, texts, tokenizer, seed=0, **kwargs):
    kwargs.setdefault("mode", "input")
    kwargs.setdefault("layer", 1)
    dm = DiffMask(model, **kwargs)
    return dm.fit(texts=texts * 2, tokenizer=tokenizer, batch_size=4, epochs=2, seed=seed,
                  show_progress=False)


@pytest.mark.parametrize("mode", ["input", "hidden"])
def test_fit_and_attribute_are_deterministic_under_a_seed(tiny_setup, mode: str) -> None:
    tokenizer, texts, enc = tiny_setup
    model = build_tiny_model()
    args = (enc["attention_mask"],)
    a = _fit(model, texts, tokenizer, mode=mode).attribute(enc["input_ids"],
                                                           additional_forward_args=args)
    b = _fit(model, texts, tokenizer, mode=mode).attribute(enc["input_ids"],
                                                           additional_forward_args=args)
    c = _fit(model, texts, tokenizer, seed=1, mode=mode).attribute(
        enc["input_ids"], additional_forward_args=args)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert ((a >= 0) & (a <= 1)).all() and (a[enc["attention_mask"] == 0] == 0).all()


def test_attribute_is_batch_invariant(tiny_setup) -> None:
    tokenizer, texts, enc = tiny_setup
    dm = _fit(build_tiny_model(), texts, tokenizer, layer=2)
    args = (enc["attention_mask"],)
    together = dm.attribute(enc["input_ids"], additional_forward_args=args)
    for b in range(len(texts)):
        n = int(enc["attention_mask"][b].sum())
        alone = dm.attribute(enc["input_ids"][b:b + 1, :n],
                             additional_forward_args=(enc["attention_mask"][b:b + 1, :n],))
        torch.testing.assert_close(alone[0], together[b, :n], atol=1e-5, rtol=1e-4)
    small = DiffMask(dm.forward_func, layer=2, batch_size=3)
    small.probe = dm.probe
    torch.testing.assert_close(small.attribute(enc["input_ids"], additional_forward_args=args),
                               together, atol=1e-5, rtol=1e-4)
    assert small.last_stats.forward_passes == 3


def test_word_values_fill_their_tokens(tiny_setup) -> None:
    tokenizer, texts, enc = tiny_setup
    dm = _fit(build_tiny_model(), texts, tokenizer)
    args = (enc["attention_mask"],)
    words = word_feature_mask(enc)
    tokens = dm.attribute(enc["input_ids"], additional_forward_args=args)
    per_word = dm.attribute(enc["input_ids"], additional_forward_args=args, feature_mask=words)
    row = 4  # "the acting was unbelievable !": un ##believ ##able is one word
    pieces = (words[row] == words[row, 4]).nonzero().flatten()
    assert len(pieces) == 3
    assert torch.allclose(per_word[row, pieces], tokens[row, pieces].max().expand(3))
    assert (per_word[words < 0] == 0).all()
    dm.word_reduce = "mean"
    mean = dm.attribute(enc["input_ids"], additional_forward_args=args, feature_mask=words)
    assert torch.allclose(mean[row, pieces], tokens[row, pieces].mean().expand(3))


def test_save_and_load_round_trip(tiny_setup, tmp_path) -> None:
    tokenizer, texts, enc = tiny_setup
    model = build_tiny_model()
    dm = _fit(model, texts, tokenizer, mode="hidden", layer=2)
    dm.save(tmp_path / "probe.pt")
    again = DiffMask(model, layer=2, mode="hidden").load(tmp_path / "probe.pt")
    args = (enc["attention_mask"],)
    assert torch.equal(dm.attribute(enc["input_ids"], additional_forward_args=args),
                       again.attribute(enc["input_ids"], additional_forward_args=args))
    with pytest.raises(ValueError, match="layer 2"):
        DiffMask(model, layer=1, mode="hidden").load(tmp_path / "probe.pt")


def test_clear_errors(tiny_setup) -> None:
    tokenizer, texts, enc = tiny_setup
    model = build_tiny_model()  # 2 encoder layers: hidden states 0..2
    with pytest.raises(ValueError, match=r"hidden states 0\.\.2.*layer=3 does not exist"):
        DiffMask(model, layer=3)
    with pytest.raises(ValueError, match="hidden states"):
        DiffMask(lambda ids, mask: ids.float(), layer=0)
    with pytest.raises(ValueError, match="mode must be"):
        DiffMask(model, layer=0, mode="output")
    with pytest.raises(NotFittedError, match="not fitted"):
        DiffMask(model, layer=1).attribute(enc["input_ids"],
                                           additional_forward_args=(enc["attention_mask"],))
    one_output = build_tiny_model(num_labels=1, id2label={0: "score"}, label2id={"score": 0})
    with pytest.raises(ValueError, match="at least 2 outputs"):
        DiffMask(one_output, layer=1).fit(texts=texts, tokenizer=tokenizer,
                                          show_progress=False)
    dm = _fit(model, texts, tokenizer)
    with pytest.raises(ValueError, match="baselines must be None"):
        dm.attribute(enc["input_ids"], baselines=0,
                     additional_forward_args=(enc["attention_mask"],))
    with pytest.raises(TypeError, match="unexpected keyword"):
        DiffMask(model, layer=1, batchsize=3)


def test_init_from_starts_from_the_lower_layers_probe(tiny_setup) -> None:
    tokenizer, texts, enc = tiny_setup
    model = build_tiny_model()
    lower = _fit(model, texts, tokenizer, layer=1)
    # learning rates 0: the probe stays where it started
    upper = DiffMask(model, layer=2).fit(texts=texts, tokenizer=tokenizer, batch_size=4,
                                         epochs=1, lr=0.0, baseline_lr=0.0, multiplier_lr=0.0,
                                         init_from=lower, show_progress=False)
    fresh = DiffMask(model, layer=2).fit(texts=texts, tokenizer=tokenizer, batch_size=4,
                                         epochs=1, lr=0.0, baseline_lr=0.0, multiplier_lr=0.0,
                                         show_progress=False)
    for i in range(2):  # gates 0 and 1 are the lower probe's, gate 2 a new (open) one
        for name, value in lower.probe.gates[i].state_dict().items():
            assert torch.equal(upper.probe.gates[i].state_dict()[name], value)
    for name, value in fresh.probe.gates[2].state_dict().items():
        assert torch.equal(upper.probe.gates[2].state_dict()[name], value)
    assert torch.equal(upper.probe.baseline, lower.probe.baseline)
    assert not torch.equal(fresh.probe.baseline, lower.probe.baseline)
    assert torch.equal(upper.multiplier, lower.multiplier)
    # keep(upper) = keep(lower) * P(gate 2 open), and the new gate is open nearly everywhere
    args = (enc["attention_mask"],)
    keep_lower = lower.attribute(enc["input_ids"], additional_forward_args=args)
    keep_upper = upper.attribute(enc["input_ids"], additional_forward_args=args)
    assert (keep_upper <= keep_lower + 1e-12).all()
    # a fit from there trains every gate, the copied ones too
    trained = DiffMask(model, layer=2).fit(texts=texts, tokenizer=tokenizer, batch_size=4,
                                           epochs=1, lr=1e-2, init_from=lower,
                                           show_progress=False)
    assert not torch.equal(trained.probe.gates[0].bias, lower.probe.gates[0].bias)
    assert torch.equal(lower.probe.baseline, _fit(model, texts, tokenizer, layer=1).probe.baseline)


def test_init_from_errors(tiny_setup) -> None:
    tokenizer, texts, _ = tiny_setup
    model = build_tiny_model()
    lower = _fit(model, texts, tokenizer, layer=1)
    fit = dict(texts=texts, tokenizer=tokenizer, max_steps=1, show_progress=False)
    with pytest.raises(ValueError, match="lower layer; got layer 1 for layer 1"):
        DiffMask(model, layer=1).fit(init_from=lower, **fit)
    with pytest.raises(ValueError, match="for input mode"):
        DiffMask(model, layer=2, mode="hidden").fit(init_from=lower, **fit)
    with pytest.raises(NotFittedError, match="not fitted"):
        DiffMask(model, layer=2).fit(init_from=DiffMask(model, layer=1), **fit)
    with pytest.raises(TypeError, match="fitted DiffMask"):
        DiffMask(model, layer=2).fit(init_from="probe.pt", **fit)
    wider = build_tiny_model(hidden_size=24, intermediate_size=48)
    with pytest.raises(ValueError, match="belongs to another model"):
        DiffMask(wider, layer=2).fit(init_from=lower, **fit)
