"""The DiffMask Salience Maps row: word-level keep probabilities, cache, a fit still running."""

from __future__ import annotations

import threading

import pytest
import torch
from lit_nlp.api import dtypes
from mlm_toys import toy_classifier, toy_tokenizer

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
    again = fitted_diffmask(classifier, tokenizer, [], layer=1, steps=3, cache_dir=tmp_path)
    assert torch.equal(again.probe.baseline, method.probe.baseline)  # loaded, not refitted
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
