"""InputMarginalization: exact sums over a toy vocabulary, WoE by hand, candidate sets, the
original token, batching/packing invariance, deduplication, vocabulary checks, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import PerturbationAttribution
from mlm_toys import TEXTS, VOCAB, TableMLM, toy_classifier, toy_mlm, toy_tokenizer

from captum_erasure import word_feature_mask
from captum_erasure.attr.marginalization import InputMarginalization, truncation_mask

MASK = VOCAB.index("[MASK]")


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def classifier():
    return toy_classifier()


@pytest.fixture(scope="module")
def mlm():
    return toy_mlm()


@pytest.fixture(scope="module")
def batch(tokenizer):
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


def log2_odds(p: float) -> float:
    return math.log2(p) - math.log2(1 - p)


# -- exact marginalisation over the whole toy vocabulary ----------------------------------
def exact_woe(classifier, mlm, ids, attn, target, position, candidates):
    """Kim et al.'s Eq. 2 written out: every candidate token at ``position``, weighted by the
    MLM's softmax at [MASK] there, renormalised over ``candidates``; float64 throughout."""
    with torch.no_grad():
        masked = ids.clone()
        masked[0, position] = MASK
        mlm_probs = torch.softmax(mlm(input_ids=masked, attention_mask=attn).logits[0, position]
                                  .double(), -1)
        p_x = torch.softmax(classifier(ids, attn).logits.double(), -1)[0, target].item()
        total, mass = 0.0, 0.0
        for token in candidates:
            replaced = ids.clone()
            replaced[0, position] = token
            p = torch.softmax(classifier(replaced, attn).logits.double(), -1)[0, target].item()
            total += mlm_probs[token].item() * p
            mass += mlm_probs[token].item()
    return log2_odds(p_x) - log2_odds(total / mass)


@pytest.mark.parametrize("exclude_specials", [False, True])
def test_sigma_zero_is_the_exact_sum_over_the_vocabulary(classifier, mlm, tokenizer, batch,
                                                         exclude_specials):
    ids, attn = batch["input_ids"][:2], batch["attention_mask"][:2]
    method = InputMarginalization(classifier, mlm, tokenizer=tokenizer,
                                  exclude_special_candidates=exclude_specials)
    result = method.attribute_details(ids, target=torch.tensor([0, 2]),
                                      additional_forward_args=(attn,), threshold=0.0)
    specials = set(tokenizer.all_special_ids)
    vocabulary = [t for t in range(len(VOCAB)) if not (exclude_specials and t in specials)]
    checked = 0
    for b in range(2):
        length = int(attn[b].sum())
        for i in range(1, length - 1):  # [CLS] and [SEP] are not marginalised
            expected = exact_woe(classifier, mlm, ids[b:b + 1, :length], attn[b:b + 1, :length],
                                 [0, 2][b], i, vocabulary)
            assert result.woe[b, i].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
            assert result.n_candidates[b, i] == len(vocabulary)
            assert result.kept_mass[b, i].item() == pytest.approx(1.0)
            checked += 1
    assert checked == 11 and result.woe.abs().nansum() > 0.1
    assert torch.isnan(result.woe[:, 0]).all() and result.n_candidates[:, 0].eq(0).all()


# -- the weight-of-evidence arithmetic, by hand ------------------------------------------------
# Vocabulary 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK], 4 a, 5 b, 6 c.
HAND_MLM = [0.0, 0.0, 0.0, 0.0, 0.5, 0.3, 0.2]
P_POSITIVE = {4: 0.9, 5: 0.4, 6: 0.1}   # p(y=1) given the token at position 1


def hand_classifier(ids, attn):
    """Probabilities of (negative, positive) from the token at position 1."""
    p = torch.tensor([P_POSITIVE[int(t)] for t in ids[:, 1]])
    return torch.stack([1 - p, p], 1)


def hand_method(**kwargs):
    return InputMarginalization(hand_classifier, TableMLM(HAND_MLM, mask_token_id=3),
                                mask_token_id=3, special_token_ids=[0, 1, 2, 3], output="probs",
                                **kwargs)


def hand_call(token, **kwargs):
    ids = torch.tensor([[1, token, 2]])
    return hand_method().attribute_details(ids, target=1, additional_forward_args=(
        torch.ones_like(ids),), **kwargs)


def test_woe_by_hand_with_all_candidates():
    result = hand_call(4, threshold=0.0)
    p_marginal = 0.5 * 0.9 + 0.3 * 0.4 + 0.2 * 0.1
    assert result.p_original.item() == pytest.approx(0.9)
    assert result.p_marginal[0, 1].item() == pytest.approx(p_marginal)
    assert result.woe[0, 1].item() == pytest.approx(log2_odds(0.9) - log2_odds(p_marginal))
    assert result.attributions[0].tolist() == pytest.approx(
        [0.0, log2_odds(0.9) - log2_odds(p_marginal), 0.0], abs=1e-6)
    assert result.n_candidates[0, 1] == 3 and result.kept_mass[0, 1].item() == pytest.approx(1)


@pytest.mark.parametrize("criteria, kept, mass", [
    (dict(threshold=0.25), [4, 5], 0.8),
    (dict(top_k=2), [4, 5], 0.8),
    (dict(top_p=0.6), [4, 5], 0.8),      # a (0.5) does not reach 0.6: b crosses it
    (dict(top_p=0.5), [4], 0.5),         # a alone reaches 0.5
    (dict(top_k=2, threshold=0.4), [4], 0.5),  # criteria intersect
])
def test_truncation_renormalises_over_the_kept_set(criteria, kept, mass):
    result = hand_call(4, **criteria)   # the original token "a" is among the kept ones
    weights = {4: 0.5, 5: 0.3, 6: 0.2}
    p_marginal = sum(weights[t] * P_POSITIVE[t] for t in kept) / mass
    assert result.p_marginal[0, 1].item() == pytest.approx(p_marginal)
    assert result.n_candidates[0, 1] == len(kept)
    assert result.kept_mass[0, 1].item() == pytest.approx(mass)


def test_the_original_token_is_always_a_candidate():
    result = hand_call(6, top_k=1)      # "c" (0.2) is not the top candidate "a" (0.5)
    assert result.n_candidates[0, 1] == 2
    assert result.kept_mass[0, 1].item() == pytest.approx(0.7)
    expected = (0.5 * 0.9 + 0.2 * 0.1) / 0.7
    assert result.p_marginal[0, 1].item() == pytest.approx(expected)
    alone = hand_call(6, threshold=0.9)  # nothing passes sigma: only the original is left
    assert alone.n_candidates[0, 1] == 1 and alone.woe[0, 1].item() == pytest.approx(0.0)


def test_multi_class_odds_and_clipping():
    def three_classes(ids, attn=None):
        return torch.tensor([[0.2, 0.3, 0.5]]).expand(ids.shape[0], 3).clone()

    method = InputMarginalization(three_classes, TableMLM(HAND_MLM, 3), mask_token_id=3,
                                  special_token_ids=[0, 1, 2, 3], output="probs", eps=1e-3)
    result = method.attribute_details(torch.tensor([[1, 4, 2]]), target=2)
    assert result.woe[0, 1].item() == pytest.approx(0.0)  # a constant model: no evidence

    def certain(ids, attn=None):
        p = (ids[:, 1] == 4).double()
        return torch.stack([1 - p, p], 1)

    method = InputMarginalization(certain, TableMLM(HAND_MLM, 3), mask_token_id=3,
                                  special_token_ids=[0, 1, 2, 3], output="probs", eps=1e-3)
    result = method.attribute_details(torch.tensor([[1, 4, 2]]), target=1, threshold=0.0)
    # p(y|x) = 1 is clipped to 1 - 1e-3; p(y|x without a) = 0.5
    assert result.woe[0, 1].item() == pytest.approx(log2_odds(1 - 1e-3), rel=1e-6)


def test_truncation_mask_top_p_includes_the_crossing_token():
    probs = torch.tensor([[0.1, 0.6, 0.3, 0.0]], dtype=torch.float64)
    assert truncation_mask(probs, top_p=0.7).tolist() == [[False, True, True, False]]
    assert truncation_mask(probs, top_p=0.6).tolist() == [[False, True, False, False]]
    assert truncation_mask(probs, threshold=0.0).tolist() == [[True, True, True, False]]


# -- batching, packing and deduplication --------------------------------------------------------
def test_batch_size_and_packing_invariance(classifier, mlm, tokenizer, batch):
    ids, attn = batch["input_ids"], batch["attention_mask"]
    reference = InputMarginalization(classifier, mlm, tokenizer=tokenizer, batch_size=64)
    together = reference.attribute_details(ids, additional_forward_args=(attn,), top_k=8)
    assert together.stats.classifier.forward_passes < together.stats.classifier_rows
    for options in (dict(batch_size=1), dict(batch_size=3, mlm_batch_size=2),
                    dict(max_tokens=40)):
        method = InputMarginalization(classifier, mlm, tokenizer=tokenizer, **options)
        other = method.attribute_details(ids, additional_forward_args=(attn,), top_k=8)
        torch.testing.assert_close(other.woe, together.woe, rtol=1e-4, atol=1e-5,
                                   equal_nan=True)
        assert other.stats.classifier_rows == together.stats.classifier_rows
    for b, text in enumerate(TEXTS):  # one example at a time, unpadded
        single = tokenizer([text], return_tensors="pt")
        alone = reference.attribute_details(single["input_ids"], additional_forward_args=(
            single["attention_mask"],), top_k=8)
        width = single["input_ids"].shape[1]
        torch.testing.assert_close(alone.woe[0], together.woe[b, :width], rtol=1e-4,
                                   atol=1e-5, equal_nan=True)


def test_rows_are_packed_across_examples(classifier, mlm, tokenizer, batch):
    ids, attn = batch["input_ids"], batch["attention_mask"]
    method = InputMarginalization(classifier, mlm, tokenizer=tokenizer, batch_size=64)
    result = method.attribute_details(ids, additional_forward_args=(attn,), threshold=0.0)
    rows = result.stats.classifier_rows
    assert result.stats.classifier.forward_passes == math.ceil((rows - 4) / 64) + 1
    assert result.stats.mlm.forward_passes == 1 and result.stats.mlm.rows == 14


def test_identical_inputs_are_evaluated_once(classifier, mlm, tokenizer):
    enc = tokenizer(["not good"], return_tensors="pt")
    method = InputMarginalization(classifier, mlm, tokenizer=tokenizer)
    one = method.attribute_details(enc["input_ids"], target=0, additional_forward_args=(
        enc["attention_mask"],), threshold=0.0)
    # The original token's row is the unperturbed input: evaluated once, not per position.
    assert one.stats.classifier_rows == 1 + int((one.n_candidates - 1).clamp_min(0).sum())
    twice = method.attribute_details(enc["input_ids"].repeat(2, 1), target=0,
                                     additional_forward_args=(enc["attention_mask"].repeat(2, 1),),
                                     threshold=0.0)
    assert twice.stats.classifier_rows == one.stats.classifier_rows
    assert twice.stats.mlm.rows == one.stats.mlm.rows == 2
    torch.testing.assert_close(twice.woe, one.woe.repeat(2, 1), equal_nan=True)
    # "not good" and "not bad" share the masked copy and the candidate rows at position 2.
    pair = tokenizer(["not good", "not bad"], return_tensors="pt")
    both = method.attribute_details(pair["input_ids"], target=0, additional_forward_args=(
        pair["attention_mask"],), threshold=0.0)
    assert both.stats.mlm.rows == 3
    # At the shared position, 18 candidate rows once and each example's original: 20 saved.
    assert both.stats.classifier_rows == 2 * one.stats.classifier_rows - (len(VOCAB) - 5)


# -- words, one-token texts, Captum conventions ---------------------------------------------
def test_word_score_is_the_sum_of_its_tokens(classifier, mlm, tokenizer, batch):
    ids, attn = batch["input_ids"][:1], batch["attention_mask"][:1]
    method = InputMarginalization(classifier, mlm, tokenizer=tokenizer)
    tokens = method.attribute(ids, target=1, additional_forward_args=(attn,), top_k=5)
    words = method.attribute(ids, target=1, additional_forward_args=(attn,), top_k=5,
                             feature_mask=word_feature_mask(batch)[:1])
    pieces = slice(4, 7)  # un ##believ ##able
    assert torch.allclose(words[0, pieces], tokens[0, pieces].sum().expand(3), atol=1e-5)
    assert torch.allclose(words[0, :4], tokens[0, :4])
    mean = method.attribute(ids, target=1, additional_forward_args=(attn,), top_k=5,
                            feature_mask=word_feature_mask(batch)[:1], word_reduce="mean")
    assert torch.allclose(mean[0, pieces], tokens[0, pieces].mean().expand(3), atol=1e-5)


def test_a_text_of_one_token(classifier, mlm, tokenizer):
    enc = tokenizer(["fun"], return_tensors="pt")
    ids, attn = enc["input_ids"], enc["attention_mask"]
    method = InputMarginalization(classifier, mlm, tokenizer=tokenizer)
    attr = method.attribute(ids, target=2, additional_forward_args=(attn,), threshold=0.0)
    assert attr.shape == (1, 3) and attr[0, 0] == 0 and attr[0, 2] == 0
    specials = set(tokenizer.all_special_ids)
    expected = exact_woe(classifier, mlm, ids, attn, 2, 1,
                         [t for t in range(len(VOCAB)) if t not in specials])
    assert attr[0, 1].item() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError, match="no token to marginalise"):
        method.attribute(tokenizer([""], return_tensors="pt")["input_ids"])


def test_captum_conventions(classifier, mlm, tokenizer, batch):
    ids, attn = batch["input_ids"], batch["attention_mask"]
    method = InputMarginalization(classifier, mlm, tokenizer=tokenizer)
    assert isinstance(method, PerturbationAttribution)
    (attr,) = method.attribute((ids,), additional_forward_args=(attn,), top_k=3)
    assert attr.shape == ids.shape and attr.dtype == torch.float32
    predicted = method.last_result.original_outputs.argmax(-1)
    assert torch.equal(method.last_result.targets, predicted)
    explicit = method.attribute(ids, target=predicted, additional_forward_args=(attn,), top_k=3)
    torch.testing.assert_close(attr, explicit)
    assert (attr[attn == 0] == 0).all()


# -- vocabulary and argument checks ---------------------------------------------------------
def test_vocabulary_mismatch_is_a_clear_error(classifier, tokenizer):
    bigger = toy_mlm(vocab_size=len(VOCAB) + 7)
    with pytest.raises(ValueError, match="vocabulary has 32 tokens but the classifier's "
                                         "embedding has 25"):
        InputMarginalization(classifier, bigger, tokenizer=tokenizer)
    shuffled = toy_tokenizer(VOCAB[:5] + VOCAB[5:][::-1])
    with pytest.raises(ValueError, match="different vocabularies"):
        InputMarginalization(classifier, toy_mlm(), tokenizer=tokenizer, mlm_tokenizer=shuffled)
    small = toy_mlm(vocab_size=10)  # a plain forward function hides the classifier's size
    method = InputMarginalization(lambda i, a: classifier(i, a).logits, small, mask_token_id=4,
                                  special_token_ids=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="does not share the classifier's vocabulary"):
        method.attribute(torch.tensor([[2, 20, 3]]), additional_forward_args=(
            torch.ones(1, 3, dtype=torch.long),))


def test_missing_mask_token_and_bad_arguments(classifier, mlm, tokenizer):
    with pytest.raises(ValueError, match="MASK"):
        InputMarginalization(classifier, mlm)
    method = InputMarginalization(classifier, mlm, tokenizer=tokenizer)
    ids = torch.tensor([[2, 5, 3]])
    for bad, message in (
            (dict(threshold=1.5), r"threshold must be in \[0, 1\), got 1.5"),
            (dict(top_k=0), "top_k must be a positive integer or None, got 0"),
            (dict(top_p=0.0), r"top_p must be in \(0, 1\], got 0.0"),
            (dict(word_reduce="max"), r"word_reduce must be one of \('sum', 'mean'\), got 'max'")):
        with pytest.raises(ValueError, match=message):
            method.attribute(ids, **bad)
    with pytest.raises(ValueError, match="target"):
        method.attribute(ids, target=7)


def test_the_hub_path_auto_model_for_masked_lm(tmp_path, classifier, mlm, tokenizer, batch):
    """A saved MLM loaded with AutoModelForMaskedLM (how users pass bert-base-uncased) gives
    the same result as the in-memory one; the tokenizer supplies [MASK] and the specials."""
    from transformers import AutoModelForMaskedLM

    mlm.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ids, attn = batch["input_ids"][:2], batch["attention_mask"][:2]
    ours = InputMarginalization(classifier, mlm, tokenizer=tokenizer).attribute(
        ids, additional_forward_args=(attn,))
    hub = InputMarginalization(classifier, loaded, tokenizer=tokenizer).attribute(
        ids, additional_forward_args=(attn,))
    torch.testing.assert_close(hub, ours)
