"""MinimalErasure (Li et al. sec. 5), the greedy flip baseline and the shared flip helpers, on a
bag-of-words toy whose minimal flipping set is known ({good, great}, see flip_toys)."""

from __future__ import annotations

import math

import pytest
import torch
from captum.attr import PerturbationAttribution
from conftest import TINY_VOCAB
from flip_toys import MarkerBag, ThreeClassBag, one_hot_words, toy_texts

from captum_erasure import FlipResult, MinimalErasure, greedy_flip, word_feature_mask
from captum_erasure._core.engine import output_logits
from captum_erasure._core.text import encode_texts
from captum_erasure._core.word_sets import SetEvaluator
from captum_erasure.attr.flip._common import prune
from captum_erasure.attr.flip.policy import rewards, sentence_pairs
from captum_erasure.attr.flip.search import TextSearch, log_odds_margin

TEXT = "the movie was good and great"          # words: the movie was good and great
MARKERS = [3, 5]


def label_of(model, tokenizer, text: str) -> int:
    enc = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return int(output_logits(model(enc["input_ids"], enc["attention_mask"])).argmax(-1))


@pytest.fixture(scope="module")
def toy():
    return MarkerBag()


@pytest.fixture(scope="module")
def trained(toy, tiny_tokenizer):
    explainer = MinimalErasure(toy, one_hot_words, samples=8, seed=3)
    explainer.fit(toy_texts(), tokenizer=tiny_tokenizer, epochs=4, batch_size=8,
                  show_progress=False)
    return explainer


def test_toy_decision_is_as_documented(toy, tiny_tokenizer):
    assert label_of(toy, tiny_tokenizer, TEXT) == 1
    assert label_of(toy, tiny_tokenizer, "the movie was and great") == 1
    assert label_of(toy, tiny_tokenizer, "the movie was good and") == 1
    assert label_of(toy, tiny_tokenizer, "the movie was and") == 0


def test_minimal_erasure_finds_exactly_the_two_markers(trained, toy, tiny_tokenizer):
    [result] = trained.explain(TEXT, tokenizer=tiny_tokenizer)
    assert isinstance(result, FlipResult)
    assert result.erased == MARKERS and result.erased_words == ["good", "great"]
    assert result.flipped and result.minimal
    assert result.remaining_text == "the movie was and"
    assert (result.original_label, result.new_label) == (1, 0)
    # Exact probabilities: score 3 -> sigmoid(3); without the markers score -1.
    assert result.original_probability == pytest.approx(torch.sigmoid(torch.tensor(3.)).item())
    assert result.new_probability == pytest.approx(torch.sigmoid(torch.tensor(1.)).item())
    assert label_of(toy, tiny_tokenizer, result.remaining_text) == result.new_label
    assert result.forward_passes > 0 and result.message == ""


def test_policy_learns_to_erase_the_markers(trained, tiny_tokenizer):
    enc = encode_texts(trained.forward_func, tiny_tokenizer, [TEXT])
    batch = trained._batch(enc.input_ids, enc.attention_mask, enc.feature_mask, enc.words,
                           None, 0, False)
    probs = torch.sigmoid(trained.policy(batch.words, batch.valid))[0]
    others = [i for i in range(6) if i not in MARKERS]
    assert probs[MARKERS].min() > probs[others].max()
    history = trained.history
    assert len(history) == 12 and {"mean_reward", "flip_rate", "rows"} <= set(history)
    assert history["rows"].eq(8 * 8).all()  # every step: 8 texts x 8 samples, one batched pass


def test_greedy_baseline_finds_exactly_the_two_markers(toy, tiny_tokenizer):
    [result] = greedy_flip(toy, TEXT, tokenizer=tiny_tokenizer)
    assert result.erased == MARKERS and result.flipped and result.method == "greedy"
    # 1 original + 6 leave-one-out rows + 2 greedy steps + 1 verification, where step 1
    # (erase the top word) is a leave-one-out row already evaluated
    assert result.forward_passes == 1 + 6 + 1 + 1


def test_greedy_baseline_is_not_pruned_by_default(tiny_tokenizer):
    # "fun" raises the score a little: leave-one-out ranks it after the markers, so greedy
    # needs both markers; with bias -2.3 the markers alone do not flip "good great fun"...
    model = MarkerBag({"good": 2.0, "great": 2.0, "fun": 1.0}, bias=-1.5)
    [plain] = greedy_flip(model, "good great fun", tokenizer=tiny_tokenizer)
    [pruned] = greedy_flip(model, "good great fun", tokenizer=tiny_tokenizer, prune_result=True)
    # score 3.5; erasing good -> 1.5, great -> 1.5, fun -> 2.5: order good, great, fun;
    # good+great -> -0.5 flips at step 2, already minimal.
    assert plain.erased == [0, 1] and pruned.erased == [0, 1] and pruned.minimal
    assert not plain.minimal


def test_pruning_restores_unneeded_words_and_checks_minimality(toy, tiny_tokenizer):
    enc = encode_texts(toy, tiny_tokenizer, [TEXT])
    evaluator = SetEvaluator(toy, enc.input_ids, enc.attention_mask, enc.feature_mask,
                             pad_token_id=tiny_tokenizer.pad_token_id)
    start = [0, 1, 3, 4, 5]
    probs = evaluator.evaluate([(0, start)])[0]
    assert int(probs.argmax()) == 0
    [kept], [kept_probs] = prune(evaluator, [0], [start], [1], [None], [probs])
    assert kept == MARKERS
    assert kept_probs[0] == pytest.approx(torch.sigmoid(torch.tensor(1.)).item())
    # 5 single restorations tried in order (the, movie, good, and, great: 'good' and 'great'
    # stay), then the minimality check: restoring 'good' is new, restoring 'great' leaves
    # {good}, already evaluated by the last restoration (answered from memory).
    assert evaluator.rows_per_example[0] == 1 + 5 + 1
    evaluator.evaluate([(0, [5, 3]), (0, (3, 5))])
    assert evaluator.rows_per_example[0] == 7


def test_a_one_word_input(trained, tiny_tokenizer):
    [result] = trained.explain("good", tokenizer=tiny_tokenizer)
    assert result.flipped and result.erased == [0] and result.remaining_text == ""
    assert result.new_label == 0


def test_an_input_that_cannot_be_flipped_says_so(trained, tiny_tokenizer):
    for text in ["the", "the movie was bad"]:   # negative, and erasing never makes it positive
        [result] = trained.explain(text, tokenizer=tiny_tokenizer)
        assert not result.flipped and result.erased == [] and result.remaining_text == text
        assert result.new_label == result.original_label == 0
        assert "no flipping set" in result.message
    [result] = greedy_flip(trained.forward_func, "the movie was bad", tokenizer=tiny_tokenizer)
    assert not result.flipped and "never flipped" in result.message


@pytest.mark.parametrize("budget", [1, 5])   # one probe; every word probed, nothing else
def test_greedy_path_when_the_budget_ends_without_a_flip(trained, tiny_tokenizer, budget):
    """Four markers must all go (7.25 - 8 < 0; any three leave 0.25 + 2 - 1 > 0): the budget
    cannot find that, the greedy fallback does, and pruning keeps exactly the four."""
    text = "good good great great fun"
    [result] = trained.explain(text, tokenizer=tiny_tokenizer, max_evaluations=budget)
    assert result.flipped and result.minimal and result.message == ""
    assert sorted(result.erased) == [0, 1, 2, 3] and result.remaining_text == "fun"
    assert result.new_label == 0


def test_target_class(trained, tiny_tokenizer):
    [towards] = trained.explain("the movie was bad fun", tokenizer=tiny_tokenizer, target=1)
    # score -1 - 0.5 + 0.25 < 0; erasing "bad" gives -0.75: still negative, so no flip to 1.
    assert not towards.flipped and towards.target == 1
    [already] = trained.explain(TEXT, tokenizer=tiny_tokenizer, target=1)
    assert not already.flipped and "already" in already.message
    [away] = trained.explain(TEXT, tokenizer=tiny_tokenizer, target=0)
    assert away.flipped and away.erased == MARKERS
    with pytest.raises(ValueError, match="outside the model's class range"):
        trained.explain(TEXT, tokenizer=tiny_tokenizer, target=2)


def test_reproducible_under_a_seed(toy, tiny_tokenizer):
    texts = [TEXT, "good , a fun film great", "the plot is good"]

    def run(seed):
        explainer = MinimalErasure(toy, one_hot_words, samples=6, seed=seed)
        history = explainer.fit(toy_texts(), tokenizer=tiny_tokenizer, batch_size=8,
                                show_progress=False)
        return history, explainer.explain(texts, tokenizer=tiny_tokenizer)

    (h1, r1), (h2, r2) = run(7), run(7)
    assert h1.equals(h2) and r1 == r2


def test_attribute_marks_the_erased_words_tokens(trained, tiny_tokenizer):
    enc = tiny_tokenizer([TEXT, "un ##believable good great"], padding=True,
                         return_tensors="pt")
    enc = tiny_tokenizer([TEXT, "unbelievable good great"], padding=True, return_tensors="pt")
    mask = word_feature_mask(enc)
    assert isinstance(trained, PerturbationAttribution)
    attr = trained.attribute(enc["input_ids"], additional_forward_args=(enc["attention_mask"],),
                             feature_mask=mask, pad_token_id=tiny_tokenizer.pad_token_id)
    assert attr.shape == enc["input_ids"].shape
    erased_tokens = [tiny_tokenizer.convert_ids_to_tokens(int(enc["input_ids"][b, i]))
                     for b, i in attr.nonzero().tolist()]
    assert erased_tokens == ["good", "great", "good", "great"]
    assert [r.flipped for r in trained.last_result] == [True, True]
    assert all(r.minimal and r.forward_passes > 0 for r in trained.last_result)


def test_reward_follows_eqs_3_to_5():
    masks = torch.tensor([[0., 1., 1., 0.], [1., 0., 1., 0.], [0., 0., 0., 0.]])
    flipped = torch.tensor([True, True, False])
    pairs = sentence_pairs([["a", "b", ".", "c"]] * 3, 4)   # no switch term across "."
    assert pairs.tolist()[0] == [True, True, False]
    out = rewards(flipped, masks, pairs, gamma=0.1)
    # |D| = 2 -> 1/2; switches inside the sentence a b . : 0->1 (1), 1->1 (0) => 0.1
    # second: 1->0, 0->1 => 0.2; third: no flip, no erasure => 0
    assert out.tolist() == pytest.approx([0.5 - 0.1, 0.5 - 0.2, 0.0])


def test_bad_input_is_rejected(trained, tiny_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        trained.explain(["good", "  "], tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match="max_evaluations"):
        MinimalErasure(trained.forward_func, samples=0)
    with pytest.raises(ValueError, match="noise"):
        MinimalErasure(trained.forward_func, noise=0)
    with pytest.raises(ValueError, match="units"):
        trained.explain(TEXT, tokenizer=tiny_tokenizer, units="sentences")
    with pytest.raises(ValueError, match="representation"):
        MinimalErasure(lambda ids, mask: ids.float()).explain(TEXT, tokenizer=tiny_tokenizer)


def test_default_representation_on_a_tiny_bert(tiny_model, tiny_tokenizer):
    texts = ["the movie was good", "a boring plot , but great acting"]
    explainer = MinimalErasure(tiny_model, samples=4)
    results = explainer.explain(texts, tokenizer=tiny_tokenizer)
    assert explainer.policy.norm.normalized_shape[0] == tiny_model.config.hidden_size
    assert [result.flipped for result in results] == [True, True]
    for result in results:  # every reported flip is real and 1-minimal
        assert label_of(tiny_model, tiny_tokenizer, result.remaining_text) == \
            result.new_label != result.original_label
        for restored in result.erased:
            rest = [i for i in result.erased if i != restored]
            enc = encode_texts(tiny_model, tiny_tokenizer, [result.text])
            assert label_of(tiny_model, tiny_tokenizer, enc.text_without(0, rest)) == \
                result.original_label


def test_log_odds_margin_is_negative_exactly_when_flipped():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]], dtype=torch.float64)
    away = log_odds_margin(probs, 0, None)
    assert away.tolist() == pytest.approx([math.log(0.7 / 0.2), math.log(0.2 / 0.5)])
    towards = log_odds_margin(probs, 0, 2)   # max log P(non-target) - log P(target)
    assert towards.tolist() == pytest.approx([math.log(0.7 / 0.1), math.log(0.5 / 0.3)])


def test_the_per_example_model_is_exact_on_an_additive_classifier(toy, tiny_tokenizer):
    """MarkerBag's log-odds are bias + sum of weights, so after leave-one-out the additive
    model predicts every mask exactly and proposes the markers pair first."""
    enc = encode_texts(toy, tiny_tokenizer, [TEXT])
    evaluator = SetEvaluator(toy, enc.input_ids, enc.attention_mask, enc.feature_mask,
                             pad_token_id=tiny_tokenizer.pad_token_id)
    original = evaluator.evaluate([(0, ())])[0]
    search = TextSearch(original, 1, None, list(range(6)), ridge=0.3, noise=0.5,
                        candidates=12)
    assert search.base == pytest.approx(3.0)      # -1 + 2 + 2
    for f in range(6):
        search.record((f,), evaluator.evaluate([(0, (f,))])[0])
    assert search.best is None
    weights = [0, 0, 0, 2.0, 0, 2.0]                # the movie was good and great
    assert search.effects().tolist() == pytest.approx([-w for w in weights])
    assert search.proposals(1) == [(3, 5)]
    search.record((3, 5), evaluator.evaluate([(0, (3, 5))])[0])
    assert search.best == (3, 5) and search.margins[(3, 5)] == pytest.approx(-1.0)
    # with a flip of size 2 only its two subsets (both seen) and single words are left:
    assert search.proposals(4) == []
    assert search.greedy_path()[:2] == [3, 5]
    assert search.restore_order([3, 5]) in ([3, 5], [5, 3])


def test_the_budget_counts_every_prediction(toy, tiny_tokenizer):
    text = "the movie was good and the plot is very fun , the acting was great"
    explainer = MinimalErasure(toy, one_hot_words, seed=0)
    [result] = explainer.explain(text, tokenizer=tiny_tokenizer, max_evaluations=25)
    assert result.flipped and result.erased_words == ["good", "great"] and result.minimal
    # original + representation + 15 probes, one round of 3 masks (the pair among them; the
    # room left after keeping 1 row for the verification and 4 for pruning) + verification
    assert result.forward_passes == 1 + 1 + 15 + 3 + 1 <= 25
    assert explainer.last_stats.rows == result.forward_passes


def test_whitespace_units_erase_what_str_split_gives(toy, tiny_tokenizer):
    text = "good, the movie great."
    enc = encode_texts(toy, tiny_tokenizer, [text], units="whitespace")
    assert enc.words == [["good,", "the", "movie", "great."]]
    assert enc.feature_mask[0].tolist() == [-1, 0, 0, 1, 2, 3, 3, -1]
    explainer = MinimalErasure(toy, one_hot_words, seed=0)
    [result] = explainer.explain(text, tokenizer=tiny_tokenizer, units="whitespace")
    assert result.erased_words == ["good,", "great."] and result.remaining_text == "the movie"


def test_greedy_fallback_bisects_between_checkpoints(toy, tiny_tokenizer):
    """Five "good" (+2 each) must all go: score 9.25 -> -0.75, four leave 1.25. With no room
    for a search after the 16 probes, the fallback tries prefix sizes 2, 4, ..., 16 of the
    leave-one-out order (6 is the first to flip), bisects to 5, and pruning finds nothing to
    restore (its checks after the first pass are answered from memory)."""
    text = "good the good movie good was good a good film is the plot is very fun"
    explainer = MinimalErasure(toy, one_hot_words, seed=0)
    [result] = explainer.explain(text, tokenizer=tiny_tokenizer, max_evaluations=20)
    assert result.flipped and result.minimal and result.erased == [0, 2, 4, 6, 8]
    assert result.new_probability == pytest.approx(torch.sigmoid(torch.tensor(.75)).item())
    # original + representation + 16 probes + 8 checkpoints + 1 bisection + 4 pruning
    # restorations (the fifth leaves the size-4 checkpoint, answered from memory) +
    # verification
    assert result.forward_passes == 1 + 1 + 16 + 8 + 1 + 4 + 1


def test_minimality_check_restores_several_words_at_once(toy, tiny_tokenizer):
    enc = encode_texts(toy, tiny_tokenizer, [TEXT])
    evaluator = SetEvaluator(toy, enc.input_ids, enc.attention_mask, enc.feature_mask,
                             pad_token_id=tiny_tokenizer.pad_token_id)
    start = [0, 1, 3, 4, 5]
    probs = evaluator.evaluate([(0, start)])[0]
    # no restoration pass (empty order): the check finds the, movie and "and" restorable,
    # restores all three in one row, then checks {good, great}'s two subsets
    [kept], _ = prune(evaluator, [0], [start], [1], [None], [probs], [[]])
    assert kept == MARKERS
    assert evaluator.rows_per_example[0] == 1 + 5 + 1 + 2


def test_explain_time_refinement_leaves_the_amortised_policy_alone(trained, toy, tiny_tokenizer):
    before = {k: v.clone() for k, v in trained.policy.state_dict().items()}
    refining = MinimalErasure(toy, one_hot_words, samples=4, refine_steps=3, seed=3)
    refining.policy, refining.baseline = trained.policy, trained.baseline
    first = refining.explain([TEXT, "good , a fun film great"], tokenizer=tiny_tokenizer)
    assert [r.erased_words for r in first] == [["good", "great"], ["good", "great"]]
    assert all(r.minimal and r.forward_passes <= 75 for r in first)
    assert all(torch.equal(before[k], v) for k, v in trained.policy.state_dict().items())
    assert refining.explain([TEXT, "good , a fun film great"], tokenizer=tiny_tokenizer) == first
    enc = encode_texts(toy, tiny_tokenizer, [TEXT])
    batch = refining._batch(enc.input_ids, enc.attention_mask, enc.feature_mask, enc.words,
                            None, 0, False)
    refined = refining._refined_logits(batch)
    with torch.no_grad():
        amortised = trained.policy(batch.words, batch.valid)
    assert not torch.allclose(refined, amortised)   # the copy did learn
    assert batch.evaluator.stats.rows == 2 + len(batch.evaluator.evaluated(0)) - 1


def test_minimality_check_falls_back_to_one_at_a_time(tiny_tokenizer):
    """Either "fun" (+0.75) alone can come back (score -1 + 0.75 < 0) but not both (+0.5):
    the joint restoration fails, so they are retried one at a time; the first comes back,
    the second stays erased."""
    model = MarkerBag({"good": 2.0, "great": 2.0, "fun": 0.75})
    enc = encode_texts(model, tiny_tokenizer, ["good great fun fun the"])
    evaluator = SetEvaluator(model, enc.input_ids, enc.attention_mask, enc.feature_mask,
                             pad_token_id=tiny_tokenizer.pad_token_id)
    start = [0, 1, 2, 3]
    probs = evaluator.evaluate([(0, start)])[0]
    [kept], _ = prune(evaluator, [0], [start], [1], [None], [probs], [[]])
    assert kept == [0, 1, 3]
    # start + 4 single restorations + the joint one (= {good, great}, reused by the retry)
    # + the check of {good, great, fun}: 2 new subsets
    assert evaluator.rows_per_example[0] == 1 + 4 + 1 + 2


# -- three classes, modes and Captum's baselines= ----------------------------------------------
THREE = "the good and bad movie"  # pos; without good: neg; without good and bad: neu


def test_flipping_to_a_named_class_is_not_leaving_the_label(tiny_tokenizer):
    explainer = MinimalErasure(ThreeClassBag(), one_hot_words, seed=0)
    away, to_neu, to_neg = explainer.explain([THREE] * 3, tokenizer=tiny_tokenizer,
                                             target=[None, "neu", "neg"])
    assert (away.erased_words, away.new_label_name, away.minimal) == (["good"], "neg", True)
    assert (to_neu.erased_words, to_neu.new_label_name, to_neu.minimal) == \
        (["good", "bad"], "neu", True)
    assert to_neu.remaining_text == "the and movie" and to_neu.target == 1
    assert to_neg.erased_words == ["good"] and to_neg.target == 0


@pytest.mark.parametrize("mode", ["delete", "replace", "attention"])
def test_modes_on_text_and_tensor_calls(tiny_tokenizer, mode):
    explainer = MinimalErasure(ThreeClassBag(), one_hot_words, mode=mode, seed=0)
    [result] = explainer.explain(THREE, tokenizer=tiny_tokenizer, target="neu")
    assert result.flipped and result.erased_words == ["good", "bad"]
    enc = tiny_tokenizer([THREE], return_tensors="pt")
    attr = explainer.attribute(enc["input_ids"], target="neu",
                               additional_forward_args=(enc["attention_mask"],),
                               feature_mask=word_feature_mask(enc))
    assert attr.tolist() == [[0, 0, 1, 0, 1, 0, 0]]  # [CLS] the good and bad movie [SEP]


def test_captum_baselines_are_the_replacement_token(tiny_tokenizer):
    """baselines=<"good"> replaces every erased word by "good": erasing good changes nothing
    and erasing anything else adds evidence for pos, so no flip exists; [PAD] flips."""
    explainer = MinimalErasure(ThreeClassBag(), one_hot_words, mode="replace", seed=0)
    enc = tiny_tokenizer([THREE], return_tensors="pt")
    args = dict(additional_forward_args=(enc["attention_mask"],),
                feature_mask=word_feature_mask(enc))
    padded = explainer.attribute(enc["input_ids"], baselines=0, **args)
    assert padded.tolist() == [[0, 0, 1, 0, 0, 0, 0]] and explainer.last_result[0].flipped
    good = explainer.attribute(enc["input_ids"], baselines=TINY_VOCAB.index("good"), **args)
    assert good.tolist() == [[0] * 7] and not explainer.last_result[0].flipped
    assert explainer.baseline_token is None  # the call's baseline does not stick
