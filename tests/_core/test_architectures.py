"""Every method on tiny random Hugging Face sequence classifiers of eight architectures, each
value checked against a hand recomputation: the erased input built here and the model called
with keywords on that one row alone (no padding at all, so no pad id can hide a mistake).

The decoders (GPT-2, Llama) classify at the last token that is not their pad id, and every
model shares one tokenizer whose pad id is NOT 0: re-packed rows padded with 0 (the old
default) would move a decoder's classification token and fail these tests.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers as hf
from conftest import LABELS, build_tiny_tokenizer

from captum_erasure._core.text import word_feature_mask
from captum_erasure.attr.flip.greedy import greedy_flip
from captum_erasure.attr.flip.minimal_erasure import MinimalErasure
from captum_erasure.attr.input_reduction import InputReduction
from captum_erasure.attr.marginalization import InputMarginalization
from captum_erasure.attr.word_erasure import WordErasure
from captum_erasure.explain.texts import explain_texts
from captum_erasure.metrics.diagnostics import model_activations
from captum_erasure.metrics.faithfulness import comprehensiveness, removal_curves, sufficiency
from lit_plugin.model import HFSequenceClassifier

TEXTS = ["the movie was not very good", "i liked it",
         "the plot was boring , and the acting was unbelievable !"]
ENCODER = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=64)
ARCHITECTURES = {
    "bert": (hf.BertConfig, hf.BertForSequenceClassification, ENCODER),
    "distilbert": (hf.DistilBertConfig, hf.DistilBertForSequenceClassification,
                   dict(dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=64)),
    "roberta": (hf.RobertaConfig, hf.RobertaForSequenceClassification,
                dict(ENCODER, max_position_embeddings=64 + 38)),  # positions start after pad
    "albert": (hf.AlbertConfig, hf.AlbertForSequenceClassification,
               dict(ENCODER, embedding_size=8)),
    "electra": (hf.ElectraConfig, hf.ElectraForSequenceClassification,
                dict(ENCODER, embedding_size=8)),
    "deberta-v2": (hf.DebertaV2Config, hf.DebertaV2ForSequenceClassification,
                   dict(ENCODER, relative_attention=True, position_buckets=8,
                        max_relative_positions=16, pos_att_type=["p2c", "c2p"])),
    "gpt2": (hf.GPT2Config, hf.GPT2ForSequenceClassification,
             dict(n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=2,
                  eos_token_id=3)),
    "llama": (hf.LlamaConfig, hf.LlamaForSequenceClassification,
              dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                   bos_token_id=2, eos_token_id=3)),
}
NAMES = list(ARCHITECTURES)
DECODERS = ["gpt2", "llama"]
MODES = ["replace", "delete", "attention", "zero"]  # every WordErasure mode


@pytest.fixture(scope="module")
def tokenizer():
    """The conftest tokenizer with its own pad token appended (pad id 36, not 0) and a [MASK]
    for the masked LM."""
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.add_special_tokens({"mask_token": "[MASK]"})
    assert (tok.pad_token_id, tok.mask_token_id, len(tok)) == (36, 37, 38)
    return tok


def build(name: str, tokenizer, *, pad: bool = True) -> torch.nn.Module:
    config_class, model_class, sizes = ARCHITECTURES[name]
    config = config_class(vocab_size=len(tokenizer), num_labels=3, id2label=LABELS,
                          label2id={v: k for k, v in LABELS.items()}, initializer_range=0.3,
                          pad_token_id=tokenizer.pad_token_id if pad else None, **sizes)
    torch.manual_seed(0)
    return model_class(config).eval()


@pytest.fixture(scope="module")
def models(tokenizer):
    return {name: build(name, tokenizer) for name in NAMES}


# -- by hand --------------------------------------------------------------------------------------
def hand_log_probs(model, ids, attention=None, zeroed=None) -> torch.Tensor:
    """log P(.|row) of one unpadded row, the model called with keywords; ``zeroed`` positions
    get a zero input embedding (through ``inputs_embeds``: one row has no padding to find)."""
    ids = torch.as_tensor(ids)[None]
    attention = torch.ones_like(ids) if attention is None else torch.as_tensor(attention)[None]
    with torch.no_grad():
        if zeroed is None:
            logits = model(input_ids=ids, attention_mask=attention).logits
        else:
            embeds = model.get_input_embeddings()(ids).clone()
            embeds[0, zeroed] = 0
            logits = model(inputs_embeds=embeds, attention_mask=attention).logits
    return torch.log_softmax(logits[0].double(), -1)


def erased_row(ids: list[int], erase: list[bool], mode: str, baseline: int) -> dict:
    if mode == "delete":
        return dict(ids=[t for t, e in zip(ids, erase) if not e])
    if mode == "replace":
        return dict(ids=[baseline if e else t for t, e in zip(ids, erase)])
    if mode == "attention":
        return dict(ids=ids, attention=[0 if e else 1 for e in erase])
    return dict(ids=ids, zeroed=[p for p, e in enumerate(erase) if e])


def eq1(full: torch.Tensor, erased: torch.Tensor, target: int) -> float:
    return float((full[target] - erased[target]) / -full[target])


def attended(enc, b: int) -> tuple[list[int], list[int]]:
    """Row ``b``'s token ids and word ids without the padding."""
    n = int(enc["attention_mask"][b].sum())
    return enc["input_ids"][b, :n].tolist(), word_feature_mask(enc)[b, :n].tolist()


# -- WordErasure: every mode, token ids ------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_word_erasure_equals_eq1_by_hand(name, mode, models, tokenizer):
    model = models[name]
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    baseline = tokenizer.unk_token_id
    rows = [attended(enc, b) for b in range(len(TEXTS))]
    fulls = [hand_log_probs(model, ids) for ids, _ in rows]
    targets = [int(full.argmax()) for full in fulls]
    words = WordErasure(model).attribute_words(
        enc["input_ids"], baselines=baseline, target=targets,
        additional_forward_args=(enc["attention_mask"],), feature_mask=word_feature_mask(enc),
        mode=mode)
    for b, (ids, word_ids) in enumerate(rows):
        assert words.feature_ids[b] == sorted(set(word_ids) - {-1})
        expected = [eq1(fulls[b], hand_log_probs(model, **erased_row(
            ids, [w == f for w in word_ids], mode, baseline)), targets[b])
            for f in words.feature_ids[b]]
        got = words.scores[b, :len(expected)]
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_explain_texts_equals_deletion_by_hand(name, models, tokenizer):
    model = models[name]
    explanations = explain_texts(model, tokenizer, TEXTS, mode="delete")
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    for b, explanation in enumerate(explanations):
        ids, word_ids = attended(enc, b)
        full = hand_log_probs(model, ids)
        assert explanation.predicted == int(full.argmax())
        expected = [eq1(full, hand_log_probs(model, [t for t, w in zip(ids, word_ids) if w != f]),
                        explanation.target) for f in range(len(explanation.words))]
        torch.testing.assert_close(torch.tensor(explanation.scores, dtype=torch.float64),
                                   torch.tensor(expected, dtype=torch.float64),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_a_wrong_pad_id_changes_a_decoders_scores(name, models, tokenizer):
    """What the tests above guard against: padding re-packed rows with id 0 (the old default)
    moves GPT-2's and Llama's classification token, and the scores change."""
    model = models[name]
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    kwargs = dict(additional_forward_args=(enc["attention_mask"],),
                  feature_mask=word_feature_mask(enc), mode="delete", target=0)
    right = WordErasure(model).attribute_words(enc["input_ids"], **kwargs).scores
    wrong = WordErasure(model, pad_token_id=0).attribute_words(enc["input_ids"], **kwargs).scores
    finite = ~right.isnan()
    assert (right[finite] - wrong[finite]).abs().max() > 1e-3


@pytest.mark.parametrize("name", DECODERS)
def test_a_decoder_without_a_pad_id_asks_for_one(name, tokenizer):
    model = build(name, tokenizer, pad=False)
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    args = dict(additional_forward_args=(enc["attention_mask"],),
                feature_mask=word_feature_mask(enc))
    ask = r"needs a pad token id, but the model's config has no pad_token_id; pass pad_token_id="
    with pytest.raises(ValueError, match=f"WordErasure mode='delete'.*{ask}"):
        WordErasure(model).attribute(enc["input_ids"], mode="delete", **args)
    with pytest.raises(ValueError, match=f"MinimalErasure mode='delete'.*{ask}"):
        MinimalErasure(model).attribute(enc["input_ids"], **args)
    with pytest.raises(ValueError, match=f"InputReduction mode='delete'.*{ask}"):
        InputReduction(model).attribute(enc["input_ids"], **args)
    with pytest.raises(ValueError, match=f"removal_curves mode='delete' {ask}"):
        removal_curves(model, enc["input_ids"], torch.rand(enc["input_ids"].shape),
                       special_token_ids=tokenizer.all_special_ids, **args)
    # an explicit pad id is enough for the model's own padding-free single rows
    one = tokenizer(TEXTS[:1], return_tensors="pt")
    scores = WordErasure(model, pad_token_id=tokenizer.pad_token_id, batch_size=1).attribute(
        one["input_ids"], additional_forward_args=(one["attention_mask"],), mode="delete",
        feature_mask=word_feature_mask(one), target=0)
    assert scores.shape == one["input_ids"].shape and bool(scores.abs().sum() > 0)


# -- InputMarginalization ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlm(tokenizer):
    """A masked LM over the same vocabulary (and tokenizer) as every classifier."""
    torch.manual_seed(1)
    config = hf.BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                           **ENCODER)
    return hf.BertForMaskedLM(config).eval()


@pytest.mark.parametrize("name", NAMES)
def test_input_marginalization_equals_an_explicit_keyword_forward(name, models, mlm, tokenizer):
    model = models[name]
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")

    def by_hand(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    args = dict(target=0, additional_forward_args=(enc["attention_mask"],))
    got = InputMarginalization(model, mlm, tokenizer=tokenizer).attribute(enc["input_ids"],
                                                                            **args)
    expected = InputMarginalization(by_hand, mlm, tokenizer=tokenizer).attribute(
        enc["input_ids"], **args)
    assert bool(got.abs().sum() > 0)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# -- flips and reduction: every reported probability is a forward on the reported text --------
def text_probs(model, tokenizer, text: str) -> torch.Tensor:
    return hand_log_probs(model, tokenizer(text)["input_ids"]).exp()


def flip_results(method: str, model, tokenizer) -> list:
    if method == "greedy_flip":
        return greedy_flip(model, TEXTS, tokenizer=tokenizer)
    return MinimalErasure(model, max_evaluations=30).explain(TEXTS, tokenizer=tokenizer)


@pytest.mark.parametrize("method", ["greedy_flip", "MinimalErasure"])
@pytest.mark.parametrize("name", NAMES)
def test_flip_results_are_forwards_on_their_texts(name, method, models, tokenizer):
    model = models[name]
    for result in flip_results(method, model, tokenizer):
        original = text_probs(model, tokenizer, result.text)
        new = text_probs(model, tokenizer, result.remaining_text)
        assert result.original_label == int(original.argmax())
        assert result.new_label == int(new.argmax())
        assert result.original_probability == pytest.approx(float(original.max()), abs=1e-5)
        assert result.new_probability == pytest.approx(float(new.max()), abs=1e-5)


@pytest.mark.parametrize("method", ["greedy_flip", "MinimalErasure"])
@pytest.mark.parametrize("name", DECODERS)
def test_decoders_flip_and_verify_on_padded_batches(name, method, models, tokenizer):
    """Found flips are verified on the remaining texts, tokenized again as one padded batch:
    with a wrong pad id a decoder would read a pad token, and the flip would not verify."""
    results = flip_results(method, models[name], tokenizer)
    assert sum(result.flipped for result in results) >= 2


@pytest.mark.parametrize("name", NAMES)
def test_input_reduction_confidences_are_forwards_on_their_texts(name, models, tokenizer):
    model = models[name]
    results = InputReduction(model, beam_size=2).reduce(TEXTS, tokenizer=tokenizer)
    assert any(len(result.kept) < len(result.words) for result in results)
    for result in results:
        original = text_probs(model, tokenizer, result.text)
        reduced = text_probs(model, tokenizer, result.reduced_text)
        assert result.label == int(original.argmax()) == int(reduced.argmax())
        assert result.original_confidence == pytest.approx(float(original.max()), abs=1e-5)
        assert result.confidence == pytest.approx(float(reduced.max()), abs=1e-5)


# -- faithfulness metrics -------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_removal_curves_equal_deletion_by_hand(name, models, tokenizer):
    model = models[name]
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    attributions = torch.rand(enc["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    curves = removal_curves(model, enc["input_ids"], attributions, tokenizer=tokenizer,
                            additional_forward_args=(enc["attention_mask"],))
    for b in range(len(TEXTS)):
        ids, _ = attended(enc, b)
        target = int(curves.targets[b])
        assert curves.original[b].item() == pytest.approx(
            float(hand_log_probs(model, ids)[target].exp()), abs=1e-5)
        expected = []
        for k in curves.ks[b]:
            removed = set(curves.orders[b][:k])  # features are token positions here
            kept = [t for p, t in enumerate(ids) if p not in removed]
            expected.append(float(hand_log_probs(model, kept)[target].exp()))
        torch.testing.assert_close(curves.probabilities[b],
                                   torch.tensor(expected, dtype=torch.float64),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_comprehensiveness_and_sufficiency_by_hand(name, models, tokenizer):
    model = models[name]
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    attributions = torch.rand(enc["input_ids"].shape, generator=torch.Generator().manual_seed(0))
    args = dict(tokenizer=tokenizer, additional_forward_args=(enc["attention_mask"],), target=0)
    got = [comprehensiveness(model, enc["input_ids"], attributions, **args),
           sufficiency(model, enc["input_ids"], attributions, **args)]
    special = set(tokenizer.all_special_ids)
    for b in range(len(TEXTS)):
        ids, _ = attended(enc, b)
        words = [p for p, t in enumerate(ids) if t not in special]
        top = set(sorted(words, key=lambda p: -float(attributions[b, p]))[
            :math.ceil(0.2 * len(words))])                        # the top 20% of the tokens
        full = float(hand_log_probs(model, ids)[0].exp())
        without = [t for p, t in enumerate(ids) if p not in top]
        only = [t for p, t in enumerate(ids) if p in top or t in special]
        assert float(got[0][b]) == pytest.approx(
            full - float(hand_log_probs(model, without)[0].exp()), abs=1e-5)
        assert float(got[1][b]) == pytest.approx(
            full - float(hand_log_probs(model, only)[0].exp()), abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_model_activations_are_the_pooled_hidden_states(name, models, tokenizer):
    model = models[name]
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    got = model_activations(model, enc["input_ids"], enc["attention_mask"])
    for b in range(len(TEXTS)):
        ids, _ = attended(enc, b)
        with torch.no_grad():
            states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        expected = torch.cat([h[0].float().mean(0) for h in states])
        torch.testing.assert_close(got[b], expected, rtol=1e-4, atol=1e-5)


# -- the LIT model ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_lit_model_predictions_equal_single_row_forwards(name, models, tokenizer):
    model = models[name]
    lit_model = HFSequenceClassifier(model, tokenizer)
    outputs = list(lit_model.predict([{"text": text} for text in TEXTS]))
    for text, output in zip(TEXTS, outputs):
        torch.testing.assert_close(torch.as_tensor(output["probas"]).double(),
                                   text_probs(model, tokenizer, text), rtol=1e-4, atol=1e-5)
        assert output["token_grads"].shape == output["token_embs"].shape
