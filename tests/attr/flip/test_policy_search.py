"""MinimalErasure(search="policy"), the paper's explain-time procedure, on the bag-of-words toy
of flip_toys (minimal flipping set {good, great}) with hand-set policies whose masks are known,
and with policies fitted on the toy."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_VOCAB
from flip_toys import MarkerBag, one_hot_words, toy_texts
from torch import nn

from captum_erasure import MinimalErasure, word_feature_mask
from captum_erasure.attr.flip import policy_search
from captum_erasure.attr.flip.policy_search import policy_masks, smaller_masks

TEXT = "the movie was good and great"          # words: the movie was good and great
MARKERS = [3, 5]


class VocabPolicy(nn.Module):
    """A hand-set policy over one-hot word vectors: logit ``logits[word]`` (default
    ``default``) for each word, so every erase probability is known."""

    def __init__(self, logits: dict[str, float], default: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(len(TINY_VOCAB))  # the dimension check of MinimalErasure
        self.logit = torch.full((len(TINY_VOCAB),), default)
        for word, value in logits.items():
            self.logit[TINY_VOCAB.index(word)] = value

    def forward(self, words: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (words @ self.logit).masked_fill(~valid, -30.0)


def with_policy(policy: nn.Module, samples: int = 1, model: nn.Module | None = None,
                seed: int = 0, prefixes: int = 0, chunks: int = 0,
                budget: int = 0, smaller: int = 0) -> MinimalErasure:
    explainer = MinimalErasure(model or MarkerBag(), one_hot_words, search="policy",
                               policy_samples=samples, seed=seed, pad_token_id=0,
                               policy_prefixes=prefixes, policy_chunks=chunks,
                               policy_budget=budget, policy_smaller=smaller)
    explainer.policy = policy
    return explainer


def test_the_threshold_decoding_is_verified_and_pruned_with_every_row_counted(tiny_tokenizer):
    explainer = with_policy(VocabPolicy({"good": 5.0, "great": 5.0}, default=-5.0))
    [result] = explainer.explain(TEXT, tokenizer=tiny_tokenizer)
    assert result.flipped and result.minimal and result.erased == MARKERS
    assert result.remaining_text == "the movie was and"
    # original + representation + the decoded mask {good, great} + restoring each of the two
    # (neither keeps the flip; the minimality check then asks for the same sets: memory)
    # + the verification. No leave-one-out probes.
    assert result.forward_passes == 1 + 1 + 1 + 2 + 1
    assert explainer.last_stats.rows == result.forward_passes


def test_pruning_an_everything_mask_gives_the_1_minimal_set(tiny_tokenizer):
    explainer = with_policy(VocabPolicy({}, default=5.0))   # erase every word
    [result] = explainer.explain(TEXT, tokenizer=tiny_tokenizer)
    assert result.flipped and result.minimal and result.erased == MARKERS
    # restorations in word order (all logits tie): the, movie, was stay restored, good does
    # not ({and, great} keeps score 1), and does, great does not ({good}): 6 rows; the
    # minimality check of {good, great} adds {great} (new) and {good} (memory)
    assert result.forward_passes == 1 + 1 + 1 + 6 + 1 + 1
    assert result.new_probability == pytest.approx(torch.sigmoid(torch.tensor(1.)).item())


def test_nested_top_k_masks_give_the_smallest_flipping_prefix(tiny_tokenizer):
    """good -1, great -2, the rest -5: nothing reaches 0.5, so the decoding is {good}; the
    prefixes are top 1 = {good} (the decoding, memory), top 2 = {good, great} (flips) and
    top 3 = {the, good, great} (ties at -5 in word order), one batched pass."""
    explainer = with_policy(VocabPolicy({"good": -1.0, "great": -2.0}, default=-5.0),
                            prefixes=3)
    [result] = explainer.explain(TEXT, tokenizer=tiny_tokenizer)
    assert result.flipped and result.minimal and result.erased == MARKERS
    # original + representation + 3 masks + pruning {good, great}: restoring great first
    # (least probable) asks for {good} (memory), restoring good asks for {great} (new); the
    # minimality check is memory + the verification
    assert result.forward_passes == 1 + 1 + 3 + 1 + 1
    assert explainer.last_stats.rows == result.forward_passes


def test_pruning_in_chunks_restores_the_unneeded_half_in_one_row(tiny_tokenizer):
    """Every word erased (all logits tie: restoration in word order); chunks from 2 words:
    restoring {the, movie, was} at once keeps the flip (1 row); {good, and} loses it (1);
    good alone loses it (1); and alone keeps it (1); great alone loses it (1). Word-by-word
    pruning and the minimality check of {good, great} are then answered from memory."""
    explainer = with_policy(VocabPolicy({}, default=5.0), chunks=2)
    [result] = explainer.explain(TEXT, tokenizer=tiny_tokenizer)
    assert result.flipped and result.minimal and result.erased == MARKERS
    assert result.forward_passes == 1 + 1 + 1 + 5 + 1      # word by word: 1 + 1 + 1 + 7 + 1
    assert explainer.last_stats.rows == result.forward_passes


def test_chunks_leave_small_sets_to_word_by_word_pruning(tiny_tokenizer):
    """Sets smaller than ``policy_chunks`` are pruned exactly as without chunks."""
    explainer = with_policy(VocabPolicy({}, default=5.0), chunks=7)
    [result] = explainer.explain(TEXT, tokenizer=tiny_tokenizer)
    assert result.erased == MARKERS and result.forward_passes == 1 + 1 + 1 + 6 + 1 + 1


@pytest.mark.parametrize("budget, erased, rows", [(11, ["good"], 9),
                                                  (10, ["great", "fun"], 7)])
def test_rows_left_in_the_budget_prune_the_next_flipping_mask(tiny_tokenizer, monkeypatch,
                                                              budget, erased, rows):
    """good 1.5, great and fun 0.95, bias -2: "the good great fun" (score 1.45) flips without
    {good} and without {great, fun}, both 1-minimal. The masks proposed (patched in) are
    A = {great, fun} and B = {the, good, great}; A is smaller, so it is pruned first
    (restoring great, then fun: 2 rows, both undo the flip). After 1 + 1 + 2 + 2 = 6 rows,
    B is pruned too when 6 + its 3 words + the minimality check and verification (1 + 1)
    fit the budget: restoring "the" keeps the flip (1 row), good is memory ({great}), great
    keeps it (1 row): {good}, smaller, replaces {great, fun}. At budget 10 B is not tried."""
    monkeypatch.setattr(policy_search, "policy_masks",
                        lambda *args, **kwargs: [[(2, 3), (0, 1, 2)]])
    model = MarkerBag({"good": 1.5, "great": 0.95, "fun": 0.95}, bias=-2.0)
    explainer = with_policy(VocabPolicy({}, default=0.0), model=model, budget=budget)
    [result] = explainer.explain("the good great fun", tokenizer=tiny_tokenizer)
    assert result.flipped and result.minimal and result.erased_words == erased
    assert result.forward_passes == rows == explainer.last_stats.rows


@pytest.mark.parametrize("budget, erased, rows", [(8, ["good"], 7),
                                                  (7, ["great", "fun"], 6)])
def test_rows_left_in_the_budget_try_the_most_probable_smaller_masks(tiny_tokenizer, budget,
                                                                    erased, rows):
    """The toy above with great and fun at logit 2, good -0.5, "the" -1: the decoding
    {great, fun} flips and is pruned (restoring great, then fun: 2 rows, both undo the flip),
    5 rows so far. One word smaller, the policy's most probable masks are {great}, {fun}
    (memory) and then {good}: tried (1 row) when it, pruning a flip of its size (0 rows) and
    the verification fit the budget; it flips and replaces {great, fun}."""
    model = MarkerBag({"good": 1.5, "great": 0.95, "fun": 0.95}, bias=-2.0)
    policy = VocabPolicy({"great": 2.0, "fun": 2.0, "good": -0.5}, default=-1.0)
    explainer = with_policy(policy, model=model, budget=budget, smaller=1)
    [result] = explainer.explain("the good great fun", tokenizer=tiny_tokenizer)
    assert result.flipped and result.minimal and result.erased_words == erased
    assert result.forward_passes == rows == explainer.last_stats.rows
    off = with_policy(policy, model=model, budget=budget)            # policy_smaller=0
    assert off.explain("the good great fun", tokenizer=tiny_tokenizer)[0].erased_words == \
        ["great", "fun"]


def test_smaller_masks_are_the_most_probable_unseen_masks_of_one_size():
    logits = torch.tensor([3.0, 1.0, 2.0, 0.0, -1.0, -2.0])
    seen = {(0, 2)}
    # sums of logits: (0, 2) 5 (seen), (0, 1) 4, then (0, 3) and (1, 2) 3 (ties: word order)
    assert smaller_masks(logits, 2, 3, seen.__contains__) == [(0, 1), (0, 3), (1, 2)]
    # size 1: among the top 1 + 4 words only, so word 5 (the least probable) never comes up
    assert smaller_masks(logits, 1, 10, lambda mask: False) == [(0,), (2,), (1,), (3,), (4,)]


def test_without_a_flipping_sample_the_policy_ranking_is_walked(tiny_tokenizer):
    """All logits -5: the decoding is the top word ("the", ties in word order), which does
    not flip; the fallback doubles the prefix of the policy's ranking (2, 4, then 6 = every
    word, the only one that flips), bisects (5: no flip), and pruning restores the six words
    one at a time (as in the test above)."""
    explainer = with_policy(VocabPolicy({}, default=-5.0))
    [result] = explainer.explain(TEXT, tokenizer=tiny_tokenizer)
    assert result.flipped and result.minimal and result.erased == MARKERS
    assert result.forward_passes == 1 + 1 + 1 + 3 + 1 + 6 + 1 + 1


def test_a_ranking_that_never_flips_is_walked_prefix_by_prefix(tiny_tokenizer):
    """Erasing every word leaves the bias alone (-1: negative), so a negative text cannot flip
    away by erasure; its ranking's prefixes 2, 4, 6 fail, then every remaining prefix (3, 5)
    is tried once, and the result says why nothing was found."""
    explainer = with_policy(VocabPolicy({}, default=-5.0))
    [result] = explainer.explain("the movie was bad and dull", tokenizer=tiny_tokenizer)
    assert not result.flipped and "no flipping set" in result.message
    assert result.forward_passes == 1 + 1 + 1 + 3 + 2


def test_a_fitted_policy_finds_the_one_flipping_word(tiny_tokenizer):
    model = MarkerBag({"good": 2.0, "bad": -0.5, "fun": 0.25})   # "great" weighs nothing
    explainer = MinimalErasure(model, one_hot_words, samples=8, seed=0, search="policy",
                               policy_samples=4)
    explainer.fit(toy_texts(), tokenizer=tiny_tokenizer, epochs=4, batch_size=8,
                  show_progress=False)
    texts = ["the movie was good", "the plot is very good , it was fun"]
    results = explainer.explain(texts, tokenizer=tiny_tokenizer)
    assert [r.erased_words for r in results] == [["good"], ["good"]]
    assert all(r.flipped and r.minimal for r in results)
    # original + representation + at most 4 masks (a one-word set needs no pruning) + the
    # verification
    assert all(r.forward_passes <= 1 + 1 + 4 + 1 for r in results)
    assert explainer.last_stats.rows == sum(r.forward_passes for r in results)


def test_seeded_search_is_reproducible_and_survives_save_and_load(tiny_tokenizer, tmp_path):
    texts = [TEXT, "good , a fun film great", "the plot is good"]

    def fitted(seed):
        explainer = MinimalErasure(MarkerBag(), one_hot_words, samples=6, seed=seed,
                                   search="policy", policy_samples=8)
        explainer.fit(toy_texts(), tokenizer=tiny_tokenizer, batch_size=8,
                      show_progress=False)
        return explainer

    first, second = fitted(7), fitted(7)
    results = first.explain(texts, tokenizer=tiny_tokenizer)
    assert results == second.explain(texts, tokenizer=tiny_tokenizer)
    assert results == first.explain(texts, tokenizer=tiny_tokenizer)  # same draws again
    first.save_policy(str(tmp_path / "policy.pt"))
    loaded = MinimalErasure(MarkerBag(), one_hot_words, seed=7, search="policy",
                            policy_samples=8)
    loaded.load_policy(str(tmp_path / "policy.pt"))
    assert loaded.explain(texts, tokenizer=tiny_tokenizer) == results


def test_policy_masks_decode_then_draw_distinct_non_empty_masks():
    probs = torch.tensor([[0.9, 0.0, 0.6, 0.0], [0.0, 0.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    masks = policy_masks(probs, valid, 3, torch.Generator().manual_seed(0))
    assert masks[0][0] == (0, 2)                        # every word with p >= 0.5
    assert len(set(masks[0])) == len(masks[0]) <= 3
    assert all(m and set(m) <= {0, 2} for m in masks[0])
    assert masks[1] == [(0,)]   # nothing reaches 0.5 and nothing is drawn: the top word only


def test_policy_masks_add_the_nested_top_k_masks_after_the_decoding():
    probs = torch.tensor([[0.9, 0.0, 0.6, 0.3], [0.2, 0.4, 0.0, 0.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    masks = policy_masks(probs, valid, 1, torch.Generator().manual_seed(0), prefixes=3)
    # top 1 and top 2 repeat the decoding or each other; top 3 is new
    assert masks[0] == [(0, 2), (0,), (0, 2, 3)]
    assert masks[1] == [(1,), (0, 1)]           # only two words: no top 3
    drawn = policy_masks(probs, valid, 3, torch.Generator().manual_seed(0), prefixes=3)
    assert drawn[0][:3] == masks[0] and len(drawn[0]) <= 3 + 2   # at most K - 1 draws more


def test_attribute_with_the_policy_search(tiny_tokenizer):
    explainer = with_policy(VocabPolicy({"good": 5.0, "great": 5.0}, default=-5.0))
    enc = tiny_tokenizer([TEXT], return_tensors="pt")
    attr = explainer.attribute(enc["input_ids"], additional_forward_args=(enc["attention_mask"],),
                               feature_mask=word_feature_mask(enc))
    erased = [tiny_tokenizer.convert_ids_to_tokens(int(enc["input_ids"][0, i]))
              for i in attr[0].nonzero().flatten().tolist()]
    assert erased == ["good", "great"] and explainer.last_result[0].minimal
    # in token space the pruned set's own row is its verification: one row fewer
    assert explainer.last_result[0].forward_passes == 1 + 1 + 1 + 2


def test_bad_search_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown search 'beam'"):
        MinimalErasure(MarkerBag(), search="beam")
    with pytest.raises(ValueError, match="policy_samples"):
        MinimalErasure(MarkerBag(), search="policy", policy_samples=0)
    with pytest.raises(ValueError, match="policy_prefixes"):
        MinimalErasure(MarkerBag(), search="policy", policy_prefixes=-1)
    with pytest.raises(ValueError, match="policy_chunks"):
        MinimalErasure(MarkerBag(), search="policy", policy_chunks=1.5)
    with pytest.raises(ValueError, match="policy_smaller"):
        MinimalErasure(MarkerBag(), search="policy", policy_smaller=-1)
