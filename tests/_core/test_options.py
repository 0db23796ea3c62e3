"""One options object for every method: the same keywords, checked once, and one convention
for the rich result (``attribute_details`` / ``last_result``)."""

import pytest
import torch

from captum_erasure import (
    EmbeddingDimensionErasure,
    EngineOptions,
    HiddenUnitErasure,
    InputReduction,
    MinimalErasure,
    WordErasure,
)


def _forward(ids, mask=None):
    return torch.stack([ids.float().sum(1), -ids.float().sum(1)], 1)


def _methods(options=None, **keywords):
    layer = torch.nn.Linear(2, 2)
    return [WordErasure(_forward, options=options, **keywords),
            HiddenUnitErasure(_forward, [layer], options=options, **keywords),
            EmbeddingDimensionErasure(_forward, torch.nn.Embedding(5, 2), options=options,
                                      **keywords),
            InputReduction(_forward, importance="loo", options=options, **keywords),
            MinimalErasure(_forward, options=options, **keywords)]


def test_every_method_takes_the_same_options_object():
    options = EngineOptions(batch_size=3, max_tokens=50, output="probs")
    for method in _methods(options):
        assert method.options == options
        assert (method.batch_size, method.max_tokens, method.output) == (3, 50, "probs")
    for method in _methods(batch_size=7):
        assert method.batch_size == 7 and method.output == "logits"


@pytest.mark.parametrize("keywords, error, match", [
    (dict(batch_size=0), ValueError, "batch_size must be a positive integer or None, got 0"),
    (dict(max_tokens=-5), ValueError, "max_tokens must be a positive integer or None"),
    (dict(batch_size=2.5), ValueError, "batch_size must be a positive integer"),
    (dict(output="logit"), ValueError, "output must be one of"),
    (dict(autocast="yes"), TypeError, "autocast must be a bool"),
    (dict(device="gpu0"), RuntimeError, "gpu0"),
    (dict(batchsize=4), TypeError, r"unexpected keyword arguments \['batchsize'\]"),
])
def test_bad_options_are_refused_by_every_method(keywords, error, match):
    for build in (WordErasure, InputReduction, MinimalErasure):
        with pytest.raises(error, match=match):
            build(_forward, **keywords)


def test_setting_an_option_later_is_checked():
    method = WordErasure(_forward)
    method.batch_size = 16
    assert method.options.batch_size == 16
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        method.batch_size = 0


def test_rich_result_convention():
    ids = torch.tensor([[1, 2, 3]])
    erasure = WordErasure(_forward)
    details = erasure.attribute_details(ids, target=0, score="logit_diff")
    assert erasure.last_result is details
    assert details.scores.tolist() == [[1.0, 2.0, 3.0]]
    identity = torch.nn.Identity()
    units = HiddenUnitErasure(lambda x: identity(x), [identity])
    result = units.attribute_details(torch.tensor([[1.0, 2.0]]), target=1, score="logit_diff")
    assert units.last_result is result and result.widths == [2]


# -- options and label names where a Captum user passes them: attribute ------------------------
def test_output_is_a_per_call_option_of_attribute(tiny_model, tiny_tokenizer):
    enc = tiny_tokenizer(["the movie was good", "a dull plot"], return_tensors="pt",
                         padding=True)

    def probs(ids, mask):
        return torch.softmax(tiny_model(ids, attention_mask=mask).logits, -1)

    args = dict(additional_forward_args=(enc["attention_mask"],), target=1)
    by_constructor = WordErasure(probs, output="probs").attribute(enc["input_ids"], **args)
    method = WordErasure(probs)
    per_call = method.attribute(enc["input_ids"], output="probs", **args)
    torch.testing.assert_close(per_call, by_constructor, rtol=0, atol=0)
    assert method.output == "logits"  # the override lasted one call
    wrong = method.attribute(enc["input_ids"], **args)  # probs read as logits: other numbers
    assert not torch.allclose(wrong, per_call)
    with pytest.raises(ValueError, match=r"output must be one of .*got 'odds'"):
        method.attribute(enc["input_ids"], output="odds", **args)
    assert method.output == "logits"


def test_label_names_are_targets_in_every_method(tiny_model, tiny_tokenizer):
    enc = tiny_tokenizer(["the movie was good", "a dull plot"], return_tensors="pt",
                         padding=True)
    ids, extra = enc["input_ids"], (enc["attention_mask"],)
    method = WordErasure(tiny_model)
    torch.testing.assert_close(method.attribute(ids, additional_forward_args=extra,
                                                target="pos"),
                               method.attribute(ids, additional_forward_args=extra, target=2))
    torch.testing.assert_close(
        method.attribute(ids, additional_forward_args=extra, target=["neg", "pos"]),
        method.attribute(ids, additional_forward_args=extra, target=[0, 2]))
    details = method.attribute_details(ids, target="neu", additional_forward_args=extra)
    assert details.targets.tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"target 'good' is not one of the model's labels: "
                                         r"'neg', 'neu', 'pos'"):
        method.attribute(ids, additional_forward_args=extra, target="good")
