"""The DiffMask Salience Maps row: word-level keep probabilities, cache, a fit still running."""

from __future__ import annotations

import threading

import pytest
import torch
from lit_nlp.api import dtypes
from transformers import BertConfig, BertForSequenceClassification
from mlm_toys import toy_classifier, toy_tokenizer

from captum_erasure import DiffMask
from lit_plugin import HFSequenceClassifier
from lit_plugin.diffmask_interpreter import DiffMaskInterpreter, fitted_diffmask
from lit_plugin.interpreters import BackgroundLoader

TEXTS = ["the film is unbelievable !", "a very dull movie", "not good , not fun"]


def test_diffmask_row_gives_word_keep_probabilities(tmp_path):
    torch.set_num_threads(1)
    classifier, tokenizer = toy_classifier(seed=0, num_labels=2), toy_tokenizer()
    method = fitted_diffmask(classifier, tokenizer, TEXTS * 4, layer=1, steps=3,
                             cache_dir=tmp_path, show_progress=False)
    (cached,) = tmp_path.iterdir()
    with pytest.MonkeyPatch.context() as patch:  # loaded, not refitted
        patch.setattr(DiffMask, "fit", lambda *a, **k: pytest.fail("refitted"))
        again = fitted_diffmask(classifier, tokenizer, TEXTS * 4, layer=1, steps=3,
                                cache_dir=tmp_path)
    assert torch.equal(again.probe.baseline, method.probe.baseline)
    interpreter = DiffMaskInterpreter(method, layer=1)
    assert "layer 1" in interpreter.name
    lit = HFSequenceClassifier(classifier, tokenizer)
    results = interpreter.run([{"text": t} for t in TEXTS], lit, None)
    salience = results[0]["text"]
    assert isinstance(salience, dtypes.TokenSalience)
    assert salience.tokens == ["the", "film", "is", "unbelievable", "!"]
    assert all(0 <= s <= 1 for s in salience.salience)


def test_diffmask_row_says_when_the_fit_is_still_running():
    classifier, tokenizer = toy_classifier(seed=0, num_labels=2), toy_tokenizer()
    release = threading.Event()
    loader = BackgroundLoader(lambda: release.wait(), "DiffMask", "a few minutes")
    interpreter = DiffMaskInterpreter(loader)
    with pytest.raises(RuntimeError, match="DiffMask is still being built"):
        interpreter.run([{"text": TEXTS[0]}], HFSequenceClassifier(classifier, tokenizer), None)
    release.set()


def test_a_probe_cached_for_another_model_in_the_same_folder_is_not_reused(tmp_path):
    """The launcher's cache: a model re-saved to the same folder (same ``_name_or_path``)
    with other weights, or the same model fitted on other texts, gets its own probe."""
    torch.set_num_threads(1)
    tokenizer, cache = toy_tokenizer(), tmp_path / "probes"
    first = toy_classifier(seed=0, num_labels=2)
    first.save_pretrained(tmp_path / "model")
    first = type(first).from_pretrained(tmp_path / "model").eval()
    fitted_diffmask(first, tokenizer, TEXTS, layer=1, steps=2, cache_dir=cache,
                    show_progress=False)
    second = toy_classifier(seed=1, num_labels=2)
    second.save_pretrained(tmp_path / "model")
    second = type(second).from_pretrained(tmp_path / "model").eval()
    assert first.config._name_or_path == second.config._name_or_path
    fitted_diffmask(second, tokenizer, TEXTS, layer=1, steps=2, cache_dir=cache,
                    show_progress=False)
    fitted_diffmask(second, tokenizer, TEXTS[:2], layer=1, steps=2, cache_dir=cache,
                    show_progress=False)
    assert len(list(cache.iterdir())) == 3


def test_a_probe_of_another_model_fails_with_a_clear_error(tmp_path):
    tokenizer = toy_tokenizer()
    method = fitted_diffmask(toy_classifier(seed=0, num_labels=2), tokenizer, TEXTS, layer=1,
                             steps=2, cache_dir=None, show_progress=False)
    method.save(tmp_path / "probe.pt")
    other = BertForSequenceClassification(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=12, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=16, num_labels=2)).eval()
    loaded = DiffMask(other, layer=1, mode="input").load(tmp_path / "probe.pt")
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="belongs to another model"):
        loaded.attribute(enc["input_ids"], additional_forward_args=(enc["attention_mask"],))
