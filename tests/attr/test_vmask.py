"""VMask: the keep probabilities of a VMASK layer through Captum's ``attribute`` arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_model
from torch import nn

from captum_erasure import VMask, attach_vmask, word_feature_mask

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vmask_model():
    model = build_tiny_model(seed=2)
    torch.manual_seed(0)
    attach_vmask(model, hidden_size=4)
    return model


def keep_by_hand(model, ids):
    wrapped = model.get_input_embeddings()
    logits = wrapped.mask.to_logits(torch.tanh(wrapped.mask.hidden(wrapped.embedding(ids))))
    return torch.softmax(logits.double(), -1)[..., 1]


def test_keep_probability_per_token_zero_on_padding(vmask_model):
    ids = torch.tensor([[2, 6, 10, 3, 0], [2, 11, 3, 0, 0]])
    attention = (ids != 0).long()
    attr = VMask(vmask_model).attribute(ids, additional_forward_args=(attention,))
    expected = keep_by_hand(vmask_model, ids) * attention
    assert attr.shape == ids.shape and attr.dtype == torch.float64
    assert torch.allclose(attr, expected, atol=1e-6)
    assert (attr[attention == 0] == 0).all() and (attr[attention == 1] > 0).all()


@pytest.mark.parametrize("reduce", ["mean", "max", "min"])
def test_words_combine_their_pieces(vmask_model, tiny_tokenizer, reduce):
    encoding = tiny_tokenizer(["unbelievable film"], return_tensors="pt")
    mask = word_feature_mask(encoding)
    ids = encoding["input_ids"]
    attr = VMask(vmask_model, word_reduce=reduce).attribute(
        ids, additional_forward_args=(encoding["attention_mask"],), feature_mask=mask)
    pieces = keep_by_hand(vmask_model, ids)[0]
    # [CLS] un ##believ ##able film [SEP]: word 0 is tokens 1..3
    expected = {"mean": pieces[1:4].mean(), "max": pieces[1:4].max(),
                "min": pieces[1:4].min()}[reduce]
    assert torch.allclose(attr[0, 1:4], expected.expand(3), atol=1e-6)
    assert attr[0, 4].item() == pytest.approx(pieces[4].item(), abs=1e-6)
    assert attr[0, 0] == 0 and attr[0, 5] == 0  # specials are no word


def test_tuple_in_tuple_out_and_target_is_ignored(vmask_model):
    ids = torch.tensor([[2, 6, 8, 3]])
    method = VMask(vmask_model)
    (as_tuple,) = method.attribute((ids,), target=2)
    assert torch.equal(as_tuple, method.attribute(ids, target=0))
    assert method.last_stats.rows == 1


def test_batch_size_does_not_change_the_answer(vmask_model):
    ids = torch.randint(4, 36, (5, 6))
    assert torch.equal(VMask(vmask_model, batch_size=2).attribute(ids),
                       VMask(vmask_model).attribute(ids))


def test_a_model_without_a_vmask_layer_is_refused():
    with pytest.raises(ValueError, match="not a VMASK layer"):
        VMask(build_tiny_model())
    with pytest.raises(ValueError, match="no get_input_embeddings"):
        VMask(nn.Linear(3, 2))


def test_bad_arguments_are_refused(vmask_model):
    ids = torch.tensor([[2, 6, 3]])
    with pytest.raises(ValueError, match="baselines must be None"):
        VMask(vmask_model).attribute(ids, baselines=0)
    with pytest.raises(TypeError, match="unexpected arguments"):
        VMask(vmask_model).attribute(ids, n_steps=5)
    with pytest.raises(ValueError, match="word_reduce"):
        VMask(vmask_model, word_reduce="sum")
