"""How models are called (keywords for HF-style forwards, Captum's positional call otherwise)
and where pad ids come from."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from captum_erasure._core.engine import PerturbationEngine, Row
from captum_erasure._core.forwards import (
    KeywordForward,
    PlainForward,
    model_caller,
    pad_token_id_of,
    require_pad_token_id,
)


class DecoderLike(nn.Module):
    """GPT-2's parameter order: the cache sits between the ids and the attention mask."""

    def __init__(self, pad_token_id=None):
        super().__init__()
        self.config = SimpleNamespace(pad_token_id=pad_token_id)
        self.calls = []

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None,
                token_type_ids=None, position_ids=None):
        self.calls.append(dict(past_key_values=past_key_values, attention_mask=attention_mask,
                               token_type_ids=token_type_ids))
        if past_key_values is not None:
            raise AttributeError("'Tensor' object has no attribute 'get_seq_length'")
        weight = 1 if token_type_ids is None else 1 + token_type_ids
        return (input_ids * attention_mask * weight).sum(1, keepdim=True).float()


def test_hf_style_modules_are_called_with_keywords_in_their_own_order():
    model = DecoderLike()
    call = model_caller(model)
    assert isinstance(call, KeywordForward)
    assert call.names[:4] == ["input_ids", "attention_mask", "token_type_ids", "position_ids"]
    ids, mask = torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]])
    assert call(ids, mask).item() == 3
    assert call(ids, mask, torch.ones_like(ids)).item() == 6    # token types, not the cache
    assert model.calls[-1]["past_key_values"] is None
    assert model_caller(model.forward).names == call.names      # its bound forward too
    assert model_caller(call) is call
    with pytest.raises(AttributeError, match="get_seq_length"):
        model(ids, mask)                                        # the positional call it replaces


def test_too_many_arguments_for_a_keyword_forward_name_the_signature():
    call = model_caller(DecoderLike())
    ids = torch.tensor([[1, 2]])
    with pytest.raises(TypeError, match=r"DecoderLike\.forward\(input_ids=None.*got 6 arguments "
                                        r"\(int64 tensor \(1, 2\), int64 tensor"):
        call(ids, ids, ids, ids, None, 1)


def test_plain_callables_keep_captums_positional_call():
    seen = []

    def forward(ids, mask, scale=1.0):
        seen.append((ids, mask, scale))
        return ids.float() * scale

    call = model_caller(forward)
    assert isinstance(call, PlainForward)
    ids = torch.tensor([[1, 2]])
    assert call(ids, "m", 2.0).tolist() == [[2.0, 4.0]]
    assert seen[-1][1:] == ("m", 2.0)
    with pytest.raises(TypeError, match=r"forward_func .*forward\(ids, mask, scale=1.0\) cannot "
                                        r"take the arguments it was given \(int64 tensor \(1, 2\)"
                                        r"\): missing a required argument: 'mask'"):
        call(ids)


class Positional(nn.Module):
    """A module whose forward does not name input_ids/attention_mask: Captum's call."""

    def forward(self, ids, mask):
        return (ids * mask).sum(1, keepdim=True).float()


def test_other_modules_are_called_positionally_and_checked():
    call = model_caller(Positional())
    assert isinstance(call, PlainForward)
    ids = torch.tensor([[1, 2, 3]])
    assert call(ids, torch.tensor([[1, 0, 1]])).item() == 4
    with pytest.raises(TypeError, match=r"Positional\.forward\(ids, mask\) cannot take the "
                                        r"arguments it was given \((int64 tensor \(1, 3\)(, )?){3}"
                                        r"\): too many positional arguments"):
        call(ids, ids, ids)


def test_the_engine_calls_through_the_adapter():
    model = DecoderLike()
    ids, mask = torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([[1, 1, 1], [1, 0, 1]])
    engine = PerturbationEngine(model)
    out = engine.run([Row(0), Row(1)], lambda rows: (ids[[r.example for r in rows]],
                                                     mask[[r.example for r in rows]]))
    assert out[:, 0].tolist() == [6.0, 10.0]
    assert all(call["past_key_values"] is None for call in model.calls)


def test_pad_id_explicit_then_config_then_tokenizer():
    tokenizer = SimpleNamespace(pad_token_id=7)
    assert pad_token_id_of(DecoderLike(3), tokenizer, 5) == 5              # explicit wins
    assert pad_token_id_of(DecoderLike(3), tokenizer) == 3                 # then the config
    assert pad_token_id_of(DecoderLike(None), tokenizer) == 7              # then the tokenizer
    assert pad_token_id_of(DecoderLike(3).forward) == 3                    # a bound forward
    assert pad_token_id_of(DecoderLike(None)) is None
    assert pad_token_id_of(lambda ids: ids) is None
    assert pad_token_id_of(DecoderLike(None), tokenizer, 0) == 0           # 0 is an id
    assert pad_token_id_of(DecoderLike(), None, torch.tensor(2)) == 2      # as Captum's ids
    with pytest.raises(ValueError, match=r"pad_token_id must be an integer >= 0, got -1"):
        pad_token_id_of(DecoderLike(), None, -1)


def test_a_missing_pad_id_asks_for_pad_token_id():
    with pytest.raises(ValueError, match=r"mode='delete' needs a pad token id, but the model's "
                                         r"config has no pad_token_id and neither has the "
                                         r"tokenizer; pass pad_token_id="):
        require_pad_token_id(DecoderLike(), SimpleNamespace(pad_token_id=None),
                             needed_for="mode='delete'")
    assert require_pad_token_id(DecoderLike(), None, 4, needed_for="x") == 4
