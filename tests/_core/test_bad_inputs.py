"""Every bad input gets the same clear error from every method (requirement 5 of the core
issue); the checks live in ``captum_erasure._core.inputs``. One test per class of bad input,
parametrized over the entry points, so that a method that forgets a check fails here.

Toys: the MLM toys' vocabulary (25 tokens, 32 positions) shared by a tiny random BERT
classifier (3 labels, or 1 output: a regression head) and a tiny random BERT MLM.
"""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_tokenizer
from flip_toys import MarkerBag
from mlm_toys import VOCAB, toy_classifier, toy_mlm, toy_tokenizer

from captum_erasure import word_feature_mask
from captum_erasure.attr.embedding_dimensions import EmbeddingDimensionErasure
from captum_erasure.attr.flip.greedy import greedy_flip
from captum_erasure.attr.flip.minimal_erasure import MinimalErasure
from captum_erasure.attr.input_reduction import DEFAULT_MAX_EVALUATIONS, InputReduction
from captum_erasure.attr.layer.hidden_units import HiddenUnitErasure
from captum_erasure.attr.marginalization import InputMarginalization
from captum_erasure.attr.word_erasure import WordErasure
from captum_erasure.metrics.auc_rep import auc_rep, mlm_replacement_curves
from captum_erasure.metrics.faithfulness import (
    FaithfulnessMetrics,
    comprehensiveness,
    removal_curves,
)

TEXTS = ["the film is unbelievable !", "a very dull movie"]
VOCAB_SIZE, POSITIONS = len(VOCAB), 32


@pytest.fixture(scope="module")
def tok():
    return toy_tokenizer()


@pytest.fixture(scope="module")
def classifier():
    return toy_classifier()


@pytest.fixture(scope="module")
def regression():
    return toy_classifier(num_labels=1)  # BertForSequenceClassification with one output


@pytest.fixture(scope="module")
def mlm():
    return toy_mlm()


@pytest.fixture(scope="module")
def batch(tok):
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], word_feature_mask(enc)


# -- the tensor entry points, called alike: (model, mlm, tok, ids, attention, mask, **kw) -------
def word_erasure(model, mlm, tok, ids, attention, mask, **kw):
    return WordErasure(model).attribute(ids, additional_forward_args=(attention,),
                                        feature_mask=mask, **kw)


def marginalization(model, mlm, tok, ids, attention, mask, **kw):
    kw.pop("baselines", None)  # marginalisation has no baseline
    return InputMarginalization(model, mlm, tokenizer=tok).attribute(
        ids, additional_forward_args=(attention,), feature_mask=mask, top_k=3, **kw)


def reduction(model, mlm, tok, ids, attention, mask, **kw):
    return InputReduction(model, importance="loo").attribute(
        ids, additional_forward_args=(attention,), feature_mask=mask, **kw)


def minimal_erasure(model, mlm, tok, ids, attention, mask, **kw):
    return MinimalErasure(model, max_evaluations=12).attribute(
        ids, additional_forward_args=(attention,), feature_mask=mask, **kw)


def hidden_units(model, mlm, tok, ids, attention, mask, **kw):
    kw.pop("baselines", None)
    return HiddenUnitErasure(model, model.bert.pooler.dense).attribute(
        ids, additional_forward_args=(attention,), **kw)


def embedding_dimensions(model, mlm, tok, ids, attention, mask, **kw):
    kw.pop("baselines", None)
    return EmbeddingDimensionErasure(model).attribute(ids, additional_forward_args=(attention,),
                                                      **kw)


def faithfulness(model, mlm, tok, ids, attention, mask, **kw):
    baseline = kw.pop("baselines", None)
    extra = {"mode": "replace", "baseline_id": baseline} if baseline is not None else {}
    return comprehensiveness(model, ids, torch.rand(ids.shape), additional_forward_args=(
        attention,), feature_mask=mask, **extra, **kw)


def replacement_auc(model, mlm, tok, ids, attention, mask, **kw):
    kw.pop("baselines", None)
    return auc_rep(model, mlm, ids, torch.rand(ids.shape), tokenizer=tok,
                   additional_forward_args=(attention,), feature_mask=mask, **kw)


TENSOR_ENTRY_POINTS = [word_erasure, marginalization, reduction, minimal_erasure, hidden_units,
                       embedding_dimensions, faithfulness, replacement_auc]
WITH_BASELINES = [word_erasure, reduction, minimal_erasure, faithfulness]


# -- 1. a model with one output (regression) -----------------------------------------------------
@pytest.mark.parametrize("entry", TENSOR_ENTRY_POINTS, ids=lambda f: f.__name__)
def test_one_output_model_is_refused_by_name_at_every_tensor_entry_point(
        entry, regression, mlm, tok, batch):
    names = {word_erasure: "WordErasure", marginalization: "InputMarginalization",
             reduction: "InputReduction", minimal_erasure: "MinimalErasure",
             hidden_units: "HiddenUnitErasure", embedding_dimensions: "EmbeddingDimensionErasure",
             faithfulness: "removal_curves", replacement_auc: "auc_rep"}
    with pytest.raises(ValueError, match=rf"{names[entry]}.*single output"):
        entry(regression, mlm, tok, *batch)


@pytest.mark.parametrize("name,run", [
    ("InputReduction", lambda m, t: InputReduction(m).reduce(TEXTS, tokenizer=t)),
    ("InputReduction", lambda m, t: InputReduction(m, importance="loo", beam_size=3).reduce(
        TEXTS, tokenizer=t)),
    ("MinimalErasure", lambda m, t: MinimalErasure(m).explain(TEXTS, tokenizer=t)),
    ("greedy_flip", lambda m, t: greedy_flip(m, TEXTS, tokenizer=t)),
])
def test_one_output_model_is_refused_by_name_at_every_text_entry_point(name, run, regression,
                                                                       tok):
    # before: input reduction reduced to one word "verified", the flips said "no flipping set"
    with pytest.raises(ValueError, match=rf"{name} needs class probabilities.*single output"):
        run(regression, tok)


# -- 2. token-id tensors get the text entry points' checks ---------------------------------------
@pytest.mark.parametrize("entry", TENSOR_ENTRY_POINTS, ids=lambda f: f.__name__)
def test_token_ids_longer_than_the_positions_or_outside_the_vocabulary(entry, classifier, mlm,
                                                                       tok, batch):
    long_ids = torch.full((2, POSITIONS + 4), VOCAB.index("good"))
    everything = torch.ones_like(long_ids)
    with pytest.raises(ValueError, match=rf"{POSITIONS + 4} tokens per row, more than the "
                                         rf"model's maximum of {POSITIONS} positions"):
        entry(classifier, mlm, tok, long_ids, everything, torch.arange(POSITIONS + 4)[None])
    ids, attention, mask = batch
    foreign = ids.clone()
    foreign[0, 1] = VOCAB_SIZE + 3
    with pytest.raises(ValueError, match=rf"token id {VOCAB_SIZE + 3} .*outside the model's "
                                         rf"vocabulary of {VOCAB_SIZE} tokens"):
        entry(classifier, mlm, tok, foreign, attention, mask)


@pytest.mark.parametrize("entry", WITH_BASELINES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("baselines,message", [
    (VOCAB_SIZE + 5, rf"baseline token id {VOCAB_SIZE + 5} is outside the model's vocabulary"),
    (-1, r"baseline token id -1 is outside"),
    (0.7, r"integer token ids, got 0.7"),                      # was read as token 0
    (torch.tensor(0.7), r"integer token ids, got a torch.float32 tensor"),
    (torch.zeros(3, dtype=torch.long), r"shaped like the inputs .* got shape \(3,\)"),
    (torch.zeros(2, 3, dtype=torch.long), r"shaped like the inputs .* got shape \(2, 3\)"),
], ids=["out-of-vocab", "negative", "float", "float-tensor", "1-d", "wrong-width"])
def test_bad_baselines_are_refused(entry, baselines, message, classifier, mlm, tok, batch):
    with pytest.raises(ValueError, match=message):
        entry(classifier, mlm, tok, *batch, baselines=baselines)


def test_baseline_tokens_of_the_text_entry_points_and_one_per_flip_method(classifier, tok,
                                                                           batch):
    for bad in (VOCAB_SIZE, 0.5):
        with pytest.raises(ValueError, match="baseline"):
            greedy_flip(classifier, TEXTS, tokenizer=tok, mode="replace", baseline_token=bad)
        with pytest.raises(ValueError, match="baseline"):
            InputReduction(classifier, mode="replace", baseline_token=bad).reduce(
                TEXTS, tokenizer=tok)
    ids = batch[0]
    with pytest.raises(ValueError, match="one baseline token"):  # was: the first element
        reduction(classifier, None, tok, *batch, baselines=torch.arange(ids.numel()).reshape(
            ids.shape) % VOCAB_SIZE)
    # valid baselines keep working: an int, a 0-d tensor, a constant tensor like the inputs
    expected = word_erasure(classifier, None, tok, *batch, baselines=4)
    for same in (torch.tensor(4), torch.full_like(ids, 4), torch.full((1, ids.shape[1]), 4)):
        torch.testing.assert_close(word_erasure(classifier, None, tok, *batch, baselines=same),
                                   expected)


# -- 3. the faithfulness metrics never remove special tokens unless asked ----------------------
def test_faithfulness_metrics_never_remove_special_tokens_unless_asked(classifier, tok, batch):
    ids, attention, _ = batch
    attributions = torch.rand(ids.shape)
    with pytest.raises(ValueError, match="special tokens"):
        removal_curves(classifier, ids, attributions, additional_forward_args=(attention,))
    with pytest.raises(ValueError, match="special tokens"):
        FaithfulnessMetrics(classifier).update(ids, attributions,
                                               additional_forward_args=(attention,))
    # the tokenizer names them: [CLS] and [SEP] are never features
    curves = removal_curves(classifier, ids, attributions, additional_forward_args=(attention,),
                            tokenizer=tok)
    specials = torch.isin(ids, torch.tensor(tok.all_special_ids)) | attention.eq(0)
    assert curves.n_features.tolist() == (~specials).sum(1).tolist()
    # asking for it: special_token_ids=() makes every attended token removable
    everything = removal_curves(classifier, ids, attributions,
                                additional_forward_args=(attention,), special_token_ids=())
    assert everything.n_features.tolist() == attention.sum(1).tolist()


# -- 4. auc_rep and the MLM replacement curves check their inputs like the other metrics -------
@pytest.mark.parametrize("metric", [replacement_auc, faithfulness], ids=lambda f: f.__name__)
def test_metrics_check_attributions_and_feature_masks(metric, classifier, mlm, tok, batch):
    ids, attention, mask = batch

    def run(attributions=None, feature_mask=mask):
        attributions = torch.rand(ids.shape) if attributions is None else attributions
        if metric is replacement_auc:
            return mlm_replacement_curves(classifier, mlm, ids, attributions, tokenizer=tok,
                                          additional_forward_args=(attention,),
                                          feature_mask=feature_mask)
        return removal_curves(classifier, ids, attributions, additional_forward_args=(
            attention,), feature_mask=feature_mask)

    nan = torch.rand(ids.shape)
    nan[0, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        run(attributions=nan)
    with pytest.raises(ValueError, match="shaped like the inputs"):
        run(attributions=torch.rand(2, 3))
    with pytest.raises(ValueError, match="feature_mask must be an integer tensor"):
        run(feature_mask=mask.float() + 0.5)
    with pytest.raises(ValueError, match=r"feature_mask shape \(2, 3\) does not match"):
        run(feature_mask=mask[:, :3])
    with pytest.raises(ValueError, match=r"feature_mask shape \(3, \d+\) does not match"):
        run(feature_mask=torch.cat([mask, mask[:1]]))


# -- 5. integer options ----------------------------------------------------------------------------
INTEGER_OPTIONS = [
    ("batch_size", lambda m, ml, t, b, v: WordErasure(m, batch_size=v).attribute(b[0])),
    ("perturbations_per_eval", lambda m, ml, t, b, v: word_erasure(
        m, ml, t, *b, perturbations_per_eval=v)),
    ("max_tokens", lambda m, ml, t, b, v: HiddenUnitErasure(
        m, m.bert.pooler.dense, max_tokens=v).attribute(b[0])),
    ("top_k", lambda m, ml, t, b, v: InputMarginalization(m, ml, tokenizer=t).attribute(
        b[0], top_k=v)),
    ("beam_size", lambda m, ml, t, b, v: InputReduction(m, beam_size=v)),
    ("max_evaluations", lambda m, ml, t, b, v: InputReduction(m, max_evaluations=v)),
    ("max_evaluations", lambda m, ml, t, b, v: InputReduction(m).reduce(
        TEXTS, tokenizer=t, max_evaluations=v)),
    ("max_evaluations", lambda m, ml, t, b, v: MinimalErasure(m, max_evaluations=v)),
    ("max_evaluations", lambda m, ml, t, b, v: MinimalErasure(m).explain(
        TEXTS, tokenizer=t, max_evaluations=v)),
    ("per_round", lambda m, ml, t, b, v: MinimalErasure(m, per_round=v)),
    ("max_erasures", lambda m, ml, t, b, v: greedy_flip(m, TEXTS, tokenizer=t,
                                                        max_erasures=v)),
    ("n_samples", lambda m, ml, t, b, v: replacement_auc(m, ml, t, *b, n_samples=v)),
    ("max_length", lambda m, ml, t, b, v: greedy_flip(m, TEXTS, tokenizer=t, max_length=v)),
    ("bins", lambda m, ml, t, b, v: FaithfulnessMetrics(m, bins=v)),
]


@pytest.mark.parametrize("option,run", INTEGER_OPTIONS,
                         ids=[f"{name}-{i}" for i, (name, _) in enumerate(INTEGER_OPTIONS)])
@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True], ids=repr)
def test_integer_options_reject_non_integers_zero_and_negatives(option, run, value, classifier,
                                                                mlm, tok, batch):
    # 0 and -1 never mean "no limit" (greedy_flip's max_erasures=0 ran without a limit, -1
    # never erased anything); a count of AOPC bins is not a list of fractions
    with pytest.raises(ValueError, match=option):
        run(classifier, mlm, tok, batch, value)


def test_none_is_the_only_no_limit(classifier, tok):
    unlimited = greedy_flip(classifier, TEXTS, tokenizer=tok, max_erasures=None)
    assert [r.erased for r in greedy_flip(classifier, TEXTS, tokenizer=tok,
                                          max_erasures=10)] == [r.erased for r in unlimited]


# -- 6. targets: wrong length, float values, out of range, in every method ----------------------
def text_flip(model, mlm, tok, ids, attention, mask, target):
    return MinimalErasure(model, max_evaluations=12).explain(TEXTS, tokenizer=tok, target=target)


def text_greedy(model, mlm, tok, ids, attention, mask, target):
    return greedy_flip(model, TEXTS, tokenizer=tok, target=target)


@pytest.mark.parametrize("entry", TENSOR_ENTRY_POINTS + [text_flip, text_greedy],
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("target,message", [
    ([0, 1, 2], r"got 3 targets for 2 examples"),
    (1.0, r"target values must be integer class indices, got 1.0"),
    ([1.0, 0.0], r"target values must be integer class indices, got 1.0"),
    (torch.tensor([1.0, 0.0]), r"target values must be integer class indices, got 1.0"),
    (7, r"target 7 is outside the model's class range \[0, 2\]"),
    ([0, -1], r"target -1 is outside the model's class range"),
], ids=["length", "float", "float-list", "float-tensor", "range", "negative"])
def test_bad_targets_get_the_same_error_everywhere(entry, target, message, classifier, mlm, tok,
                                                   batch):
    with pytest.raises(ValueError, match=message):
        entry(classifier, mlm, tok, *batch, target=target)


# -- 7. every search has a prediction budget ------------------------------------------------------
def long_text(n_words: int) -> str:
    words = ["good", "bad", "fun", "the", "movie", "was", "great", "not"]
    return " ".join(words[i % len(words)] for i in range(n_words))


def test_input_reduction_stops_at_its_budget_with_the_best_verified_reduction():
    tokenizer = build_tiny_tokenizer()
    model = MarkerBag()
    text = long_text(60)
    # unbounded, beam-3 leave-one-out costs about 3 n^2 / 2 predictions (5,000 here)
    [cut] = InputReduction(model, importance="loo", beam_size=3, max_evaluations=400).reduce(
        text, tokenizer=tokenizer)
    assert cut.budget_reached and cut.forward_passes <= 400
    assert "budget of 400 predictions" in cut.message and cut.verified
    assert 0 < len(cut.removal_path) < 59
    [full] = InputReduction(model, importance="loo", beam_size=3).reduce(text,
                                                                         tokenizer=tokenizer)
    assert not full.budget_reached and full.message == ""
    assert full.forward_passes > 400 and len(full.removal_path) > len(cut.removal_path)
    # as a Captum attribution (no verification row to keep)
    enc = tokenizer([text], return_tensors="pt")
    method = InputReduction(model, importance="loo", beam_size=3, max_evaluations=400,
                            pad_token_id=tokenizer.pad_token_id)
    order = method.attribute(enc["input_ids"], additional_forward_args=(enc["attention_mask"],),
                             feature_mask=word_feature_mask(enc))
    [details] = method.last_result
    assert details.budget_reached and details.forward_passes <= 400
    assert int(order.max()) == len(details.removal_path) + 1


def test_input_reduction_default_budget_bounds_beam_3_leave_one_out_on_306_words():
    tokenizer = build_tiny_tokenizer()
    # 306 words: 139,728 predictions without a budget
    [result] = InputReduction(MarkerBag(), importance="loo", beam_size=3).reduce(
        long_text(306), tokenizer=tokenizer)
    assert result.budget_reached and result.forward_passes <= DEFAULT_MAX_EVALUATIONS
    assert result.verified and result.removal_path
