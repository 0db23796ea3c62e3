"""lit_plugin.model.HFSequenceClassifier on the tiny random BERT: specs, predictions equal to
the raw model, gradients equal to autograd, LIT's own IG/Grad/LIME/HotFlip running on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lit_nlp.api import types as lit_types
from lit_nlp.components import ablation_flip, gradient_maps, hotflip, lime_explainer
from lit_nlp.lib import caching

from lit_plugin.model import HFSequenceClassifier

TEXTS = ["the movie was unbelievable", "not very good , but fun", "dull plot"]


@pytest.fixture(scope="module")
def wrapper(tiny_model, tiny_tokenizer):
    return HFSequenceClassifier(tiny_model, tiny_tokenizer, max_minibatch_size=2)


def raw_probs(model, tokenizer, text):
    enc = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**enc).logits, -1)[0].numpy()


def test_specs_have_what_lit_gradient_methods_need(wrapper):
    inp, out = wrapper.input_spec(), wrapper.output_spec()
    assert isinstance(inp["text"], lit_types.TextSegment)
    assert isinstance(inp["label"], lit_types.CategoryLabel) and not inp["label"].required
    assert isinstance(inp["token_embs"], lit_types.TokenEmbeddings)
    assert isinstance(out["token_embs"], lit_types.TokenEmbeddings)
    grads = out["token_grads"]
    assert (grads.align, grads.grad_for, grads.grad_target_field_key) == \
        ("tokens", "token_embs", "label")
    assert out["probas"].vocab == ["neg", "neu", "pos"] and out["probas"].parent == "label"
    assert wrapper.max_minibatch_size() == 2
    black_box = wrapper.without_gradients()
    assert black_box.model is wrapper.model and black_box.tokenizer is wrapper.tokenizer
    assert "token_grads" not in black_box.output_spec()
    assert "token_embs" not in black_box.input_spec()


def test_predictions_match_the_raw_model_and_tokens_have_no_specials(wrapper, tiny_model,
                                                                     tiny_tokenizer):
    outputs = list(wrapper.predict([{"text": t} for t in TEXTS]))  # 2 minibatches, padded
    for text, out in zip(TEXTS, outputs):
        np.testing.assert_allclose(out["probas"], raw_probs(tiny_model, tiny_tokenizer, text),
                                   atol=1e-5)
        assert "[CLS]" not in out["tokens"] and "[SEP]" not in out["tokens"]
        assert out["label"] == wrapper.labels[int(np.argmax(out["probas"]))]
        assert out["token_grads"].shape == out["token_embs"].shape == (len(out["tokens"]), 16)
    assert outputs[0]["tokens"] == ["the", "movie", "was", "un", "##believ", "##able"]
    # an unknown word is a token of the text, not a special token to hide
    (unknown,) = wrapper.predict([{"text": "the zebra movie"}])
    assert unknown["tokens"] == ["the", "[UNK]", "movie"]


def test_gradients_are_those_of_the_label_class_probability(wrapper, tiny_model,
                                                            tiny_tokenizer):
    text = TEXTS[1]
    enc = tiny_tokenizer(text, return_tensors="pt")
    embeds = tiny_model.get_input_embeddings()(enc["input_ids"]).detach().requires_grad_(True)
    probs = torch.softmax(tiny_model(inputs_embeds=embeds,
                                     attention_mask=enc["attention_mask"]).logits, -1)
    (expected,) = torch.autograd.grad(probs[0, 0], embeds)
    (out,) = wrapper.predict([{"text": text, "label": "neg"}])
    assert out["label"] == "neg"
    np.testing.assert_allclose(out["token_grads"], expected[0, 1:-1].numpy(), atol=1e-6)


def test_given_embeddings_replace_the_word_embeddings(wrapper):
    (out,) = wrapper.predict([{"text": TEXTS[2]}])
    (same,) = wrapper.predict([{"text": TEXTS[2], "token_embs": out["token_embs"]}])
    np.testing.assert_allclose(same["probas"], out["probas"], atol=1e-6)
    (zeroed,) = wrapper.predict([{"text": TEXTS[2],
                                  "token_embs": np.zeros_like(out["token_embs"])}])
    assert not np.allclose(zeroed["probas"], out["probas"], atol=1e-4)
    with pytest.raises(ValueError, match="token_embs has shape"):
        list(wrapper.predict([{"text": TEXTS[2], "token_embs": np.zeros((7, 16))}]))


def test_word_pieces_given_as_tokens_are_used_as_they_are(wrapper):
    (out,) = wrapper.predict([{"text": TEXTS[0]}])
    pieces = out["tokens"]
    (again,) = wrapper.predict([{"text": " ".join(pieces), "tokens": pieces}])
    assert again["tokens"] == pieces
    np.testing.assert_allclose(again["probas"], out["probas"], atol=1e-6)


def test_bad_inputs_raise_clear_errors(wrapper, tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="no 'text' field"):
        list(wrapper.predict([{"sentence": "dull"}]))
    with pytest.raises(ValueError, match="not one of the model's labels"):
        list(wrapper.predict([{"text": "dull", "label": "awful"}]))
    with pytest.raises(ValueError, match="more than the model's maximum of 64"):
        list(wrapper.predict([{"text": "good " * 70}]))
    truncating = HFSequenceClassifier(tiny_model, tiny_tokenizer, truncate=True)
    (out,) = truncating.predict([{"text": "good " * 70}])
    assert len(out["tokens"]) == 62
    with pytest.raises(ValueError, match="2 labels"):
        HFSequenceClassifier(tiny_model, tiny_tokenizer, labels=["a", "b"])


def test_lit_gradient_methods_lime_and_hotflip_run_on_it(wrapper):
    inputs = [{"text": TEXTS[0], "_id": "a"}, {"text": TEXTS[1], "_id": "b"}]
    for interpreter in (gradient_maps.GradientNorm(), gradient_maps.GradientDotInput(),
                        gradient_maps.IntegratedGradients()):
        assert interpreter.is_compatible(wrapper, None)
        results = interpreter.run(inputs, wrapper, None)
        assert results[0]["token_grads"].tokens == \
            ["the", "movie", "was", "un", "##believ", "##able"]
    # IG with many steps approaches completeness: the attributions add up to
    # P(target | text) - P(target | zero word embeddings) before normalisation.
    ig = gradient_maps.IntegratedGradients()
    (result,) = ig.run(inputs[:1], wrapper, None,
                       config={"Class to explain": "", "Normalize": False,
                               "Interpolation steps": 100})
    (out,) = wrapper.predict(inputs[:1])
    target = wrapper.labels.index(out["label"])
    (base,) = wrapper.predict([{"text": TEXTS[0], "label": out["label"],
                                "token_embs": np.zeros_like(out["token_embs"])}])
    gap = out["probas"][target] - base["probas"][target]
    assert abs(float(np.sum(result["token_grads"].salience)) - gap) < 0.05 * abs(gap) + 1e-3
    lime = lime_explainer.LIME()
    (lime_result,) = lime.run(inputs[:1], wrapper.without_gradients(), None,
                              config={"Number of samples": "32", "Seed": "0"})
    assert lime_result["text"].tokens == TEXTS[0].split()
    cached = caching.CachingModelWrapper(wrapper, "tiny")
    assert hotflip.HotFlip().is_compatible(cached, None)
    flips = hotflip.HotFlip().generate(inputs[0], cached, None,
                                       config={"Max number of token flips": 2,
                                               "Prediction key": "probas",
                                               "Fields to flip tokens in": ["tokens"]})
    assert flips
    for flip in flips:   # HotFlip's own check is argmax change
        (flip_out,) = wrapper.predict([flip])
        assert np.argmax(flip_out["probas"]) != np.argmax(out["probas"])


def test_lit_ablation_flip_runs_on_the_black_box_twin(wrapper):
    black_box = wrapper.without_gradients()
    example = {"text": "not very good , but fun"}
    (original,) = black_box.predict([example])
    flips = ablation_flip.AblationFlip().generate(
        example, black_box, None,
        config={"Prediction key": "probas", "Fields to ablate": ["text"],
                "Max number of token ablations": 1})
    assert flips
    for flip in flips:
        (out,) = black_box.predict([flip])
        assert np.argmax(out["probas"]) != np.argmax(original["probas"])
