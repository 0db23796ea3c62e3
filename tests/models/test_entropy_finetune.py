"""Feng et al.'s entropy fine-tuning (captum_erasure.models.entropy_finetune) on hand-checkable
toys and a tiny random BERT: the entropy term, save/load, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from conftest import TINY_VOCAB, build_tiny_model, build_tiny_tokenizer
from safetensors.torch import load_file
from torch import nn

from captum_erasure._core.engine import output_logits
from captum_erasure.models import entropy_finetune as module
from captum_erasure.models.default import evaluate_accuracy
from captum_erasure.models.entropy_finetune import (
    WEIGHTS_FILENAME,
    EntropySettings,
    entropy_fine_tune,
    load_finetuned,
    output_entropy,
    path_reduced_texts,
    reduce_texts,
    save_finetuned,
)

POSITIVE = ["the movie was good", "i liked it , it was good", "a good film", "good acting"]
NEGATIVE = ["the movie was bad", "i liked it , it was bad", "a bad film", "bad acting"]
TEXTS, LABELS = POSITIVE + NEGATIVE, [1] * 4 + [0] * 4


class TrainableBag(nn.Module):
    """Logits = sum of the attended tokens' 2-d vectors + a bias. "good" starts at [0, 2] and
    "bad" at [2, 0], every other word at 0, so "good" alone has P(pos) = sigmoid(2) and each
    example above is classified by its marker. ``scale`` is a frozen parameter (for save/load)."""

    def __init__(self, n_outputs: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(TINY_VOCAB), n_outputs)
        self.bias = nn.Parameter(torch.zeros(n_outputs))
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)
        with torch.no_grad():
            self.embedding.weight.zero_()
            if n_outputs == 2:
                self.embedding.weight[TINY_VOCAB.index("good")] = torch.tensor([0.0, 2.0])
                self.embedding.weight[TINY_VOCAB.index("bad")] = torch.tensor([2.0, 0.0])

    def get_input_embeddings(self) -> nn.Module:
        return self.embedding

    def forward(self, input_ids, attention_mask):
        vectors = self.embedding(input_ids) * attention_mask[..., None]
        return self.scale * vectors.sum(1) + self.bias


def logits_of(model, tokenizer, texts):
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return output_logits(model(batch["input_ids"], batch["attention_mask"]))


def accuracy(model, tokenizer):
    predicted = logits_of(model, tokenizer, TEXTS).argmax(-1)
    return (predicted == torch.tensor(LABELS)).float().mean().item()


def test_evaluate_accuracy_of_a_plain_classifier_by_hand():
    # the default model's accuracy routine serves any classifier, not only HF models
    tokenizer, model = build_tiny_tokenizer(), TrainableBag()
    assert evaluate_accuracy(model, tokenizer, TEXTS, LABELS, batch_size=3) == 1.0
    # "good" and "bad" cancel out in the last text: logits [2, 2], arg-max 0 = wrong label
    assert evaluate_accuracy(model, tokenizer, ["good", "bad", "good bad"], [1, 0, 1]) == \
        pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        evaluate_accuracy(model, tokenizer, ["good", "bad"], [1])


def test_output_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)], [5.0, 5.0]])
    # uniform: log 2; p = (1/4, 3/4): -(1/4 log 1/4 + 3/4 log 3/4)
    expected = [math.log(2), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), math.log(2)]
    assert output_entropy(logits).tolist() == pytest.approx(expected)


def test_reduce_texts_keeps_the_marker_and_batches():
    tokenizer, model = build_tiny_tokenizer(), TrainableBag()
    results = reduce_texts(model, tokenizer, TEXTS, beam_size=3, batch_size=3,
                           show_progress=False)
    assert [r.reduced_text for r in results] == ["good"] * 4 + ["bad"] * 4
    assert [r.label for r in results] == LABELS
    # "good" alone: logits [0, 2] -> P(pos) = sigmoid(2)
    assert results[0].confidence == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


def test_path_reduced_texts_are_the_short_states_of_each_removal_path():
    tokenizer, model = build_tiny_tokenizer(), TrainableBag()
    results = reduce_texts(model, tokenizer, ["i liked it , it was good", "a bad film"],
                           show_progress=False)
    paths = [r.removal_path for r in results]
    # the bag's gradient ranks every word but the marker alike: removed left to right
    assert paths == [[0, 1, 2, 3, 4, 5], [0, 2]]
    states = path_reduced_texts(model, tokenizer, [r.text for r in results], paths, 3)
    # each path's states of at most 3 words, longest first, down to the reduction; the
    # 3-word original "a bad film" is not one of them
    assert states == ["it was good", "was good", "good", "bad film", "bad"]
    assert path_reduced_texts(model, tokenizer, [r.text for r in results], paths, 1) == \
        ["good", "bad"]
    with pytest.raises(ValueError, match="max_words must be >= 1"):
        path_reduced_texts(model, tokenizer, ["good"], [[]], 0)
    with pytest.raises(ValueError, match="1 texts but 2 removal paths"):
        path_reduced_texts(model, tokenizer, ["good"], [[], []], 2)


def test_settings_added_later_keep_the_cached_models_key():
    # the defaults' folder name was fixed before path_words existed
    assert EntropySettings().key() == "550f36cc61"
    assert EntropySettings(path_words=0).key() == "550f36cc61"
    assert EntropySettings(rounds=1).key() == "550f36cc61"
    assert EntropySettings(path_words=4).key() not in ("550f36cc61",
                                                       EntropySettings(path_words=5).key())


def test_later_rounds_reduce_again_on_the_fine_tuned_model(tmp_path, monkeypatch):
    frame = pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS, "label": LABELS})
    tokenizer = build_tiny_tokenizer()
    monkeypatch.setattr(module, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(module, "load_rotten_tomatoes", lambda split: frame)
    monkeypatch.setattr(module, "load_default_model", lambda show_progress: (
        build_tiny_model(num_labels=2, id2label=None, label2id=None), tokenizer))
    reduced_on, tuned_after = [], []  # the weights each reduction / fine-tuning left

    def snapshot(model):
        return {k: v.clone() for k, v in model.state_dict().items()}

    def recording_reduce(model, *args, **kwargs):
        reduced_on.append(snapshot(model))
        return reduce_texts(model, *args, **kwargs)

    def recording_fine_tune(model, *args, **kwargs):
        history = entropy_fine_tune(model, *args, **kwargs)
        tuned_after.append(snapshot(model))
        return history

    monkeypatch.setattr(module, "reduce_texts", recording_reduce)
    monkeypatch.setattr(module, "entropy_fine_tune", recording_fine_tune)
    settings = EntropySettings(n_originals=8, n_reduced=4, rounds=2, lr=1e-2, batch_size=4)
    assert settings.key() != EntropySettings(n_originals=8, n_reduced=4, lr=1e-2,
                                             batch_size=4).key()
    model, _, info = module.build_entropy_model(settings, show_progress=False)
    assert len(reduced_on) == len(tuned_after) == 2
    # round 2 reduced on the weights round 1 left, not on the base model's
    assert all(torch.equal(reduced_on[1][k], tuned_after[0][k]) for k in reduced_on[1])
    assert not all(torch.equal(reduced_on[0][k], reduced_on[1][k]) for k in reduced_on[0])
    assert info["n_reduced_texts"] == 8           # both rounds' reductions
    history = pd.read_csv(module.entropy_model_dir(settings) / "history.csv")
    assert history["round"].tolist() == [1, 1, 2, 2]
    round_one = replace(settings, rounds=1).key()
    assert (tmp_path / "models" / f"{module.DEFAULT_MODEL_DIRNAME}-reduced-{round_one}"
            "-round2.json").is_file()
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        EntropySettings(rounds=0)


def test_entropy_term_raises_reduced_entropy_while_accuracy_holds():
    tokenizer = build_tiny_tokenizer()
    reduced = [r.reduced_text for r in reduce_texts(TrainableBag(), tokenizer, TEXTS,
                                                    show_progress=False)]
    before = output_entropy(logits_of(TrainableBag(), tokenizer, reduced)).mean().item()
    assert before == pytest.approx(output_entropy(torch.tensor([[0.0, 2.0]])).item())
    after = {}
    for weight in (0.0, 2.0):
        model = TrainableBag()
        history = entropy_fine_tune(model, tokenizer, TEXTS, LABELS, reduced,
                                    entropy_weight=weight, epochs=5, batch_size=4, lr=0.1,
                                    warmup_fraction=0.0, show_progress=False)
        assert len(history) == 10 and not model.training
        after[weight] = output_entropy(logits_of(model, tokenizer, reduced)).mean().item()
        assert accuracy(model, tokenizer) == 1.0
    # cross-entropy alone makes "good"/"bad" even more confident; the entropy term reverses it
    assert after[0.0] < before
    # 10 steps with the term: from 0.365 to 0.56 nats (log 2 = 0.693 is chance) while every
    # original stays right
    assert after[2.0] > 0.5


def test_seeded_runs_are_identical():
    tokenizer = build_tiny_tokenizer()
    histories, states = [], []
    for _ in range(2):
        model = build_tiny_model(num_labels=2, id2label=None, label2id=None,
                                 hidden_dropout_prob=0.5)
        histories.append(entropy_fine_tune(model, tokenizer, TEXTS, LABELS, ["good", "bad"],
                                           batch_size=3, lr=1e-3, seed=7,
                                           show_progress=False))
        states.append(model.state_dict())
    assert histories[0].equals(histories[1])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_hf_model_round_trip_is_safetensors(tmp_path):
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(num_labels=2, id2label=None, label2id=None)
    entropy_fine_tune(model, tokenizer, TEXTS, LABELS, ["good", "bad"], batch_size=4,
                      lr=1e-3, show_progress=False)
    folder = save_finetuned(model, tokenizer, {"note": "test"}, tmp_path / "hf")
    assert (folder / "model.safetensors").is_file()
    assert not [p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pkl", ".pth")]
    loaded, loaded_tokenizer = load_finetuned(folder)
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(logits_of(loaded, loaded_tokenizer, TEXTS),
                       logits_of(model, tokenizer, TEXTS))


def test_plain_module_round_trip_leaves_frozen_parameters_out(tmp_path):
    tokenizer = build_tiny_tokenizer()
    model = TrainableBag()
    entropy_fine_tune(model, tokenizer, TEXTS, LABELS, ["good", "bad"], batch_size=4, lr=0.1,
                      show_progress=False)
    with torch.no_grad():
        model.scale.fill_(3.0)  # frozen: not saved, so the skeleton's value must come back
    folder = save_finetuned(model, tokenizer, {}, tmp_path / "bag")
    assert sorted(load_file(str(folder / WEIGHTS_FILENAME))) == ["bias", "embedding.weight"]
    loaded, loaded_tokenizer = load_finetuned(folder, TrainableBag())
    assert loaded_tokenizer(TEXTS)["input_ids"] == tokenizer(TEXTS)["input_ids"]
    assert loaded.scale.item() == 1.0
    assert torch.equal(loaded.embedding.weight, model.embedding.weight)
    assert torch.equal(loaded.bias, model.bias)


def test_loading_into_a_different_model_is_refused(tmp_path):
    tokenizer = build_tiny_tokenizer()
    folder = save_finetuned(TrainableBag(), tokenizer, {}, tmp_path / "bag")

    class Other(TrainableBag):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(2, 2)

    with pytest.raises(ValueError, match=r"does not fit this model: missing \['extra.bias'"):
        load_finetuned(folder, Other())


@pytest.mark.parametrize("make", [lambda: TrainableBag(n_outputs=1),
                                  lambda: build_tiny_model(num_labels=1, id2label=None,
                                                           label2id=None)])
def test_one_output_models_are_refused(make):
    tokenizer = build_tiny_tokenizer()
    with pytest.raises(ValueError, match="at least two outputs .* shape \\(1, 1\\)"):
        entropy_fine_tune(make(), tokenizer, TEXTS, LABELS, ["good"], show_progress=False)
    with pytest.raises(ValueError, match="at least two outputs"):
        reduce_texts(make(), tokenizer, TEXTS, show_progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"labels": [1]}, "8 texts but 1 labels"),
    ({"reduced_texts": []}, "at least one original and one reduced text"),
    ({"entropy_weight": -1.0}, "entropy_weight must be >= 0"),
    ({"batch_size": 0}, "epochs and batch_size must be >= 1"),
])
def test_bad_arguments(kwargs, message):
    arguments = {"texts": TEXTS, "labels": LABELS, "reduced_texts": ["good"],
                 "show_progress": False}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        entropy_fine_tune(TrainableBag(), build_tiny_tokenizer(), **arguments)
