"""The VMASK Salience Maps row and the launcher serving a VMASK classifier."""

from __future__ import annotations

import pytest
import torch
from lit_nlp.api import dtypes
from mlm_toys import toy_classifier, toy_tokenizer

from captum_erasure import VMask, attach_vmask, save_vmask_classifier, word_feature_mask
from lit_plugin import HFSequenceClassifier, server
from lit_plugin.vmask_interpreter import VMASK_NAME, VMaskInterpreter

TEXTS = ["the film is unbelievable !", "a very dull movie"]


def vmask_classifier():
    classifier = toy_classifier(seed=0, num_labels=2)
    torch.manual_seed(0)
    attach_vmask(classifier, hidden_size=4)
    return classifier


def test_vmask_row_gives_each_word_its_mean_keep_probability():
    classifier, tokenizer = vmask_classifier(), toy_tokenizer()
    lit = HFSequenceClassifier(classifier, tokenizer)
    interpreter = VMaskInterpreter()
    assert interpreter.is_compatible(lit, None)
    assert not interpreter.is_compatible(
        HFSequenceClassifier(toy_classifier(num_labels=2), tokenizer), None)
    results = interpreter.run([{"text": t} for t in TEXTS], lit, None)
    salience = results[0]["text"]
    assert isinstance(salience, dtypes.TokenSalience)
    assert salience.tokens == ["the", "film", "is", "unbelievable", "!"]
    encoding = tokenizer([TEXTS[0]], return_tensors="pt")
    mask = word_feature_mask(encoding)
    expected = VMask(classifier).attribute(encoding["input_ids"], feature_mask=mask)[0]
    first = [int((mask[0] == w).nonzero()[0]) for w in range(5)]
    assert salience.salience == pytest.approx(expected[first].tolist(), abs=1e-6)


def test_launcher_serves_a_saved_vmask_classifier_with_its_row(tmp_path):
    classifier, tokenizer = vmask_classifier(), toy_tokenizer()
    save_vmask_classifier(classifier, tokenizer, tmp_path)
    args = server.build_parser().parse_args(["--model", str(tmp_path), "--no-marginalization"])
    lit_model, _ = server.load_models(args)
    ids = tokenizer(TEXTS, padding=True, return_tensors="pt")["input_ids"]
    assert torch.equal(lit_model.model(ids).logits, classifier(ids).logits)
    assert list(server.vmask_row(lit_model)) == [VMASK_NAME]


def test_launcher_offers_no_vmask_row_for_a_plain_model_and_refuses_two_models(tmp_path):
    classifier, tokenizer = toy_classifier(num_labels=2), toy_tokenizer()
    classifier.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    args = server.build_parser().parse_args(["--model", str(tmp_path), "--no-marginalization"])
    assert server.vmask_row(server.load_models(args)[0]) == {}
    args = server.build_parser().parse_args(["--model", str(tmp_path), "--vmask"])
    with pytest.raises(SystemExit, match="--vmask serves the cached VMASK MiniLM"):
        server.load_models(args)


def test_lit_gradients_reach_the_embeddings_through_the_mask():
    classifier, tokenizer = vmask_classifier(), toy_tokenizer()
    (out,) = list(HFSequenceClassifier(classifier, tokenizer).predict(
        [{"text": TEXTS[1], "label": "LABEL_1"}]))
    wrapped = classifier.get_input_embeddings()
    ids = tokenizer(TEXTS[1])["input_ids"][1:-1]
    # LIT's token embeddings are the masked ones: the embedding times its keep probability
    expected = wrapped(torch.tensor([ids]))[0]
    assert torch.allclose(torch.as_tensor(out["token_embs"]), expected, atol=1e-6)
    assert out["token_grads"].shape == (4, 16) and abs(out["token_grads"]).sum() > 0
