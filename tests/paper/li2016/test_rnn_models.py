"""The GloVe RNN / LSTM / Bi-LSTM sentiment classifiers: erasure equals running the model on the
shorter sentence, padding never matters, tiny training beats chance, caching, HF-style use."""

import json

import pytest
import torch

from captum_erasure import (
    EmbeddingDimensionErasure,
    HiddenUnitErasure,
    WordErasure,
    corpus_word_importance,
    explain_texts,
)
from captum_erasure.paper.li2016.glove import glove_tokenizer
from captum_erasure.paper.li2016.rnn_models import (
    ARCHITECTURES,
    GloveRNNClassifier,
    RNNClassifierConfig,
    load_sentiment_model,
    new_sentiment_model,
    reverse_within_length,
    sentiment_model_dir,
    train_sentiment_model,
)
from captum_erasure.paper.li2016.training import torch_threads

KINDS = {"rnn": ("rnn", False), "lstm": ("lstm", False), "bilstm": ("lstm", True)}
TINY_TRAINING = dict(n_train=1000, epochs=5, hidden_size=32, lr=3e-3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast and does not stall when the CPU is shared."""
    with torch_threads(1):
        yield


def small_model(kind, seed=0):
    cell, bidirectional = KINDS[kind]
    torch.manual_seed(seed)
    config = RNNClassifierConfig(cell=cell, bidirectional=bidirectional, hidden_size=8,
                                 vocab_size=30, embedding_dim=6)
    return GloveRNNClassifier(config).eval()


IDS = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0], [12, 0, 0, 0, 0, 0]])
MASK = (IDS != 0).long()


def log_p(model, ids, target):
    ids = torch.tensor([ids]) if ids else torch.zeros(1, 0, dtype=torch.long)
    return torch.log_softmax(model(ids, torch.ones_like(ids)).double(), -1)[0, target]


@pytest.mark.parametrize("kind", KINDS)
def test_delete_mode_equals_the_model_on_the_sentence_without_the_word(kind):
    model = small_model(kind)
    target = 1
    attr = WordErasure(model).attribute(IDS, target=target, additional_forward_args=(MASK,),
                                        mode="delete", score="eq1")
    for row in range(len(IDS)):
        words = IDS[row, :int(MASK[row].sum())].tolist()
        full = log_p(model, words, target)
        for j in range(len(words)):  # the one-word row erases to an empty sentence
            erased = log_p(model, words[:j] + words[j + 1:], target)
            assert attr[row, j].item() == pytest.approx(((full - erased) / -full).item(),
                                                        rel=1e-4, abs=1e-5)
        assert torch.all(attr[row, len(words):] == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_side_and_amount_do_not_matter(kind):
    model = small_model(kind)
    alone = model(IDS[1:2, :3], MASK[1:2, :3])
    right = torch.tensor([[9, 10, 11, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 9, 10, 11]])
    holed = torch.tensor([[9, 0, 10, 0, 11]])  # masked positions anywhere are skipped
    for ids in (right, left, holed):
        torch.testing.assert_close(model(ids, (ids != 0).long()), alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model(IDS[1:2, :3]), alone)  # no mask: every token is real


@pytest.mark.parametrize("kind", KINDS)
def test_attention_mode_equals_delete_mode(kind):
    model = small_model(kind)
    method = WordErasure(model)
    kwargs = dict(target=0, additional_forward_args=(MASK,))
    torch.testing.assert_close(method.attribute(IDS, mode="attention", **kwargs),
                               method.attribute(IDS, mode="delete", **kwargs),
                               rtol=1e-5, atol=1e-5)


def test_backward_direction_starts_at_the_last_real_token():
    vectors = torch.arange(12.0).reshape(2, 3, 2)
    flipped = reverse_within_length(vectors, torch.tensor([3, 2]))
    assert flipped[0, :, 0].tolist() == [4.0, 2.0, 0.0]
    assert flipped[1, :, 0].tolist() == [8.0, 6.0, 10.0]  # padding stays behind


def test_bilstm_reads_both_directions():
    model = small_model("bilstm")
    assert set(model.recurrent_layers()) == {"forward", "backward"}
    assert model.classifier.in_features == 2 * model.config.hidden_size


@pytest.mark.parametrize("kind", KINDS)
def test_hidden_units_and_embedding_dimensions_are_erasable(kind):
    model = small_model(kind)
    units = HiddenUnitErasure(model, model.recurrent_layers()).attribute(
        IDS, target=0, additional_forward_args=(MASK,))
    assert all(u.shape == (3, 8) and torch.isfinite(u).all() for u in units.values())

    # Unit 2 of the forward RNN zeroed by hand at every position gives the same score.
    def zero_unit(module, inputs, output):
        out = output[0].clone()
        out[..., 2] = 0
        return (out, *output[1:])
    full = torch.log_softmax(model(IDS, MASK).double(), -1)[:, 0]
    handle = model.forward_rnn.register_forward_hook(zero_unit)
    erased = torch.log_softmax(model(IDS, MASK).double(), -1)[:, 0]
    handle.remove()
    torch.testing.assert_close(units["forward"][:, 2].double(), (full - erased) / -full,
                               rtol=1e-4, atol=1e-5)
    dims = EmbeddingDimensionErasure(model).attribute(IDS, target=0,
                                                      additional_forward_args=(MASK,))
    assert dims.shape == (3, 6)


def test_config_fields_read_by_hf_helpers():
    config = RNNClassifierConfig(id2label={"0": "negative", "1": "positive"})
    assert config.id2label == {0: "negative", 1: "positive"}
    assert config.label2id == {"negative": 0, "positive": 1}
    assert config.num_labels == 2 and config.max_position_embeddings >= 256
    with pytest.raises(ValueError, match="cell"):
        RNNClassifierConfig(cell="gru")


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_training_on_a_tiny_subset_beats_chance(kind):
    model, info = train_sentiment_model(kind, show_progress=False, **TINY_TRAINING)
    assert info["n_train"] == 1000 and info["train_seconds"] < 30
    assert info["accuracy"]["dev"] > 0.6 and info["accuracy"]["test"] > 0.55
    assert 1 <= info["best_epoch"] <= 5 and not model.training
    assert not model.embedding.weight.requires_grad  # GloVe stays frozen


def test_model_dir_is_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTUM_ERASURE_CACHE", str(tmp_path))
    assert sentiment_model_dir("bilstm") == tmp_path / "models" / "glove-bilstm-rt-v1"
    # every training seed its own cache: seed 1 never overwrites the seed-0 model
    assert sentiment_model_dir("bilstm", 1) == tmp_path / "models" / "glove-bilstm-rt-v1-seed1"
    with pytest.raises(ValueError, match="unknown architecture"):
        sentiment_model_dir("gru")


def test_cache_round_trip_and_rebuild_on_new_settings(monkeypatch, tmp_path):
    # Only the model folder moves: the data stay in the real cache (no download).
    folder = tmp_path / "glove-lstm"
    monkeypatch.setattr("captum_erasure.paper.li2016.rnn_models.sentiment_model_dir", lambda kind, seed=0: folder)
    settings = dict(n_train=64, epochs=1, hidden_size=8)
    model, _, info = load_sentiment_model("lstm", show_progress=False, **settings)
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "info.json").read_text())["accuracy"] == info["accuracy"]
    assert (folder / "model.safetensors").stat().st_size < 1_000_000  # GloVe is not stored

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been loaded")
    monkeypatch.setattr("captum_erasure.paper.li2016.rnn_models.train_sentiment_model", no_training)
    loaded, tokenizer, _ = load_sentiment_model("lstm", **settings)
    ids = tokenizer(["a tepid biopic"], return_tensors="pt")
    torch.testing.assert_close(loaded(ids["input_ids"], ids["attention_mask"]),
                               model(ids["input_ids"], ids["attention_mask"]))
    with pytest.raises(AssertionError, match="cached"):  # other settings: retrain
        load_sentiment_model("lstm", **{**settings, "hidden_size": 9})


def test_explain_texts_and_corpus_tables_take_the_models_unchanged():
    model = new_sentiment_model("bilstm", hidden_size=8).eval()
    tokenizer = glove_tokenizer()
    [explanation] = explain_texts(model, tokenizer, ["Effective but too tepid biopic"],
                                  labels=[0], target="gold")
    assert explanation.words == ["Effective", "but", "too", "tepid", "biopic"]
    assert explanation.target_label == "negative" and min(explanation.scores) >= -1
    corpus = corpus_word_importance(model, tokenizer, ["A wonderful film.", "Not wonderful."],
                                    [1, 0], show_progress=False)
    assert corpus.word("wonderful")["count"] == 2 and corpus.word("n't")["count"] == 0
