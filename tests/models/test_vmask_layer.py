"""VMASK: the mask learns to drop a noise word, its KL term and forward by hand, save/load
round trips (safetensors only) and the errors for models it cannot attach to."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_tiny_model
from safetensors.torch import save_file
from torch import nn

from captum_erasure.models.vmask import (
    MaskedEmbedding,
    VariationalWordMask,
    attach_vmask,
    is_vmask_folder,
    keep_probabilities,
    load_vmask_classifier,
    load_word_mask,
    mean_keep_by_word,
    save_vmask_classifier,
    save_word_mask,
    train_jointly,
    unmasked,
    word_mask_of,
)

torch.set_num_threads(1)

# token 1 -> class 0 and token 2 -> class 1 (the signal); tokens 3 and 4 (the noise) carry
# the signal's feature with a random sign, so the classifier cannot read the signal without
# being misled by the noise unless the mask drops the noise
VECTORS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 1.0], [-1.0, 1.0]])


class SumToy(nn.Module):
    """Frozen 2-d embedding -> sum over positions -> linear logits."""

    def __init__(self, n_outputs: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(VECTORS.clone())
        self.out = nn.Linear(2, n_outputs)

    def get_input_embeddings(self) -> nn.Module:
        return self.embedding

    def forward(self, input_ids, attention_mask=None):
        return self.out(self.embedding(input_ids).sum(1))


def noise_toy_data(n: int = 256):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 2, (n,), generator=g)
    ids = torch.stack([labels + 1, torch.randint(3, 5, (n,), generator=g)], 1)
    return ids, torch.ones_like(ids), labels


@pytest.mark.parametrize("seed", [0, 1])
def test_vmask_learns_to_drop_the_noise_word(seed):
    ids, attention, labels = noise_toy_data()
    torch.manual_seed(seed)
    model = SumToy()
    attach_vmask(model, hidden_size=8)
    log = train_jointly(model, ids, attention, labels, epochs=10, batch_size=32, lr=0.05,
                        mask_lr=0.05, beta=0.1, seed=seed, show_progress=False)
    keep = keep_probabilities(model, torch.arange(5).unsqueeze(0))[0]
    assert log.steps == 80
    assert keep[1:3].min() > 0.95   # the signal words are kept
    assert keep[3:5].max() < 0.05   # the noise word is dropped
    assert (model(ids, attention).argmax(-1) == labels).all()


def test_the_bottleneck_weight_pulls_keep_probabilities_to_the_prior():
    ids, attention, labels = noise_toy_data()
    keeps = {}
    for beta in (0.1, 1.0):
        torch.manual_seed(0)
        model = SumToy()
        attach_vmask(model, hidden_size=8)
        train_jointly(model, ids, attention, labels, epochs=10, batch_size=32, lr=0.05,
                      mask_lr=0.05, beta=beta, show_progress=False)
        keeps[beta] = keep_probabilities(model, torch.arange(5).unsqueeze(0))[0]
    # a stronger bottleneck keeps everything nearer 0.5, but the order stays
    assert (keeps[1.0][1:] - 0.5).abs().max() < (keeps[0.1][1:] - 0.5).abs().max()
    assert keeps[1.0][1:3].min() > keeps[1.0][3:5].max()


def test_kl_to_prior_by_hand():
    mask = VariationalWordMask(2, 3, prior=0.25)
    logits = torch.tensor([[[0.0, math.log(4.0)], [0.0, 0.0]]])  # q = 0.8, then 0.5
    kl_08 = 0.8 * math.log(0.8 / 0.25) + 0.2 * math.log(0.2 / 0.75)
    kl_05 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert mask.kl_to_prior(logits).item() == pytest.approx((kl_08 + kl_05) / 2, abs=1e-6)
    only_first = mask.kl_to_prior(logits, torch.tensor([[1, 0]]))
    assert only_first.item() == pytest.approx(kl_08, abs=1e-6)
    uniform = VariationalWordMask(2, 3)  # the authors' prior: KL = log 2 - entropy
    assert uniform.kl_to_prior(logits[:, 1:]).item() == pytest.approx(0.0, abs=1e-7)


def test_forward_scales_by_the_keep_probability_in_eval_and_samples_0_or_1_in_training():
    torch.manual_seed(0)
    mask = VariationalWordMask(4, 5)
    vectors = torch.randn(3, 7, 4)
    keep = mask.keep_probability(vectors)
    assert torch.allclose(mask.eval()(vectors), vectors * keep.unsqueeze(-1))
    sampled = mask.train()(vectors) / vectors
    assert set(sampled.round().unique().tolist()) <= {0.0, 1.0}
    assert mask.last_logits.shape == (3, 7, 2)


def test_attach_replaces_the_embedding_and_freezes_it():
    model = build_tiny_model(seed=3)
    embedding = model.get_input_embeddings()
    wrapped = attach_vmask(model, hidden_size=4)
    assert model.get_input_embeddings() is wrapped and word_mask_of(model) is wrapped
    assert wrapped.embedding is embedding and not embedding.weight.requires_grad
    assert wrapped.weight is embedding.weight and wrapped.num_embeddings == 36
    with unmasked(model):
        assert model.get_input_embeddings() is embedding
    assert model.get_input_embeddings() is wrapped
    ids = torch.tensor([[2, 6, 10, 3]])
    expected = embedding(ids) * wrapped.keep_probability(ids).unsqueeze(-1)
    assert torch.allclose(wrapped(ids), expected)


def test_joint_training_keeps_the_embedding_and_changes_the_rest():
    model = build_tiny_model(seed=0)
    before = model.get_input_embeddings().weight.clone()
    head = model.classifier.weight.clone()
    wrapped = attach_vmask(model, hidden_size=4)
    mask_before = wrapped.mask.hidden.weight.clone()
    ids = torch.randint(4, 36, (8, 5))
    log = train_jointly(model, ids, torch.ones_like(ids), torch.arange(8) % 3, epochs=1,
                        batch_size=4, show_progress=False)
    assert log.steps == 2 and len(log.history) == 2 and not model.training
    assert torch.equal(model.get_input_embeddings().weight, before)
    assert not torch.equal(model.classifier.weight, head)
    assert not torch.equal(wrapped.mask.hidden.weight, mask_before)


def test_word_mask_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(0)
    mask = VariationalWordMask(6, 4, prior=0.3, temperature=0.5)
    path = tmp_path / "mask.safetensors"
    save_word_mask(mask, path)
    loaded = load_word_mask(path)
    assert loaded.settings == {"embedding_dim": 6, "hidden_size": 4, "prior": 0.3,
                               "temperature": 0.5}
    vectors = torch.randn(2, 3, 6)
    assert torch.equal(loaded.keep_probability(vectors), mask.keep_probability(vectors))


def test_a_safetensors_file_that_is_not_a_mask_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a VMASK mask file"):
        load_word_mask(path)


def test_vmask_classifier_round_trips_without_pickle(tmp_path, tiny_tokenizer):
    model = build_tiny_model(seed=1)
    attach_vmask(model, hidden_size=4)
    ids = torch.randint(4, 36, (4, 6))
    train_jointly(model, ids, torch.ones_like(ids), torch.tensor([0, 1, 2, 0]), epochs=1,
                  batch_size=4, show_progress=False)
    save_vmask_classifier(model, tiny_tokenizer, tmp_path, {"note": "test"})
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "vmask.safetensors", "info.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".pth"))]
    assert is_vmask_folder(tmp_path)
    loaded, tokenizer = load_vmask_classifier(tmp_path)
    assert isinstance(loaded.get_input_embeddings(), MaskedEmbedding)
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert torch.equal(keep_probabilities(loaded, ids), keep_probabilities(model, ids))
    assert tokenizer.convert_ids_to_tokens([6]) == ["movie"]


def test_loading_a_folder_without_a_mask_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a VMASK classifier"):
        load_vmask_classifier(tmp_path)


def test_one_output_models_are_refused():
    with pytest.raises(ValueError, match="single output per example"):
        attach_vmask(build_tiny_model(num_labels=1, id2label=None, label2id=None))
    model = SumToy(n_outputs=1)  # no config: refused at the first training step
    attach_vmask(model)
    ids = torch.ones(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="single output per example"):
        train_jointly(model, ids, torch.ones_like(ids), torch.zeros(4), show_progress=False)


def test_a_model_without_an_embedding_layer_is_refused():
    with pytest.raises(ValueError, match="no get_input_embeddings"):
        attach_vmask(nn.Sequential(nn.Linear(3, 2)))
    model = SumToy()
    with pytest.raises(ValueError, match="not a submodule"):
        attach_vmask(model, embedding_layer=nn.Embedding(5, 2))
    attach_vmask(model)
    with pytest.raises(ValueError, match="already has a VMASK layer"):
        attach_vmask(model)


def test_mean_keep_by_word_counts_and_orders():
    rows = mean_keep_by_word([["Good", "film"], ["good", "plot"], ["film"]],
                             [[0.9, 0.2], [0.7, 0.5], [0.4]], min_count=2)
    assert rows == [("good", pytest.approx(0.8), 2), ("film", pytest.approx(0.3), 2)]


def test_minilm_builds_are_cached_per_settings():
    from captum_erasure.models.vmask_minilm import vmask_model_dir, vmask_settings
    assert vmask_model_dir(True).name == "minilm-l6-rt-vmask-v1"
    assert vmask_model_dir(True, beta=0.1).name == "minilm-l6-rt-vmask-v1-beta0.1"
    assert vmask_model_dir(False, beta=0.1) == vmask_model_dir(False)  # no mask, same base
    assert vmask_model_dir(False, epochs=3).name == "minilm-l6-rt-frozen-emb-base-v1-epochs3"
    assert "beta" not in vmask_settings(False)
    with pytest.raises(TypeError, match="unknown VMASK settings"):
        vmask_settings(bta=1.0)


@pytest.mark.slow
def test_the_cached_vmask_minilm_loads_with_its_mask():
    from captum_erasure.models.vmask_minilm import load_minilm
    model, tokenizer, info = load_minilm(True, show_progress=False)
    assert isinstance(word_mask_of(model), MaskedEmbedding) and not model.training
    assert info["test_accuracy"] > 0.7
    ids = tokenizer(["a gorgeous , witty movie"], return_tensors="pt")["input_ids"]
    keep = keep_probabilities(model, ids)
    assert keep.shape == ids.shape and ((keep > 0) & (keep < 1)).all()
