"""The policy's training step (:mod:`captum_erasure.attr.flip.policy_fit`): REINFORCE as
before, and the self-imitation term on the pruned best samples, on the bag-of-words toy of
flip_toys (minimal flipping set {good, great})."""

from __future__ import annotations

import copy

import pytest
import torch
from flip_toys import MarkerBag, one_hot_words, toy_texts

from captum_erasure import MinimalErasure
from captum_erasure._core.text import encode_texts
from captum_erasure.attr.flip.policy import ErasurePolicy, RewardBaseline
from captum_erasure.attr.flip.policy_fit import (
    mask_log_prob,
    pruned_best_samples,
    reinforce_step,
)
from captum_erasure.attr.flip.search import batch_flips

TEXT = "the movie was good and great"


def toy_batch(texts, tokenizer):
    explainer = MinimalErasure(MarkerBag(), one_hot_words, pad_token_id=0)
    enc = encode_texts(explainer.forward_func, tokenizer, texts)
    return explainer._batch(enc.input_ids, enc.attention_mask, enc.feature_mask, enc.words,
                            None, 0, False)


def test_the_smallest_flipping_sample_is_pruned_to_the_needed_words(tiny_tokenizer):
    batch = toy_batch([TEXT], tiny_tokenizer)
    masks = torch.tensor([[[1., 1, 1, 1, 1, 1],      # everything: flips
                           [1., 0, 0, 1, 0, 1],      # the, good, great: flips, smaller
                           [0., 0, 0, 1, 0, 0]]])    # good: does not flip
    requests = [(0, m.nonzero().flatten().tolist()) for m in masks[0]]
    out = batch.evaluator.evaluate(requests)
    flipped = batch_flips(batch, [0, 0, 0], out).reshape(1, 3)
    assert flipped.tolist() == [[True, True, False]]
    rows = sum(batch.evaluator.rows_per_example)
    # equal logits: restored in word order; "the" keeps the flip, good and great do not
    assert pruned_best_samples(batch, masks, out, torch.zeros(1, 6)) == {0: [3, 5]}
    # new rows: {good, great} (restoring the) and {great} (restoring good); {good} (restoring
    # great) was a sample and the minimality check asks for both again: memory
    assert sum(batch.evaluator.rows_per_example) - rows == 2


def test_no_flipping_sample_imitates_nothing(tiny_tokenizer):
    batch = toy_batch([TEXT], tiny_tokenizer)
    masks = torch.tensor([[[0., 0, 0, 1, 0, 0]]])
    out = batch.evaluator.evaluate([(0, [3])])
    assert pruned_best_samples(batch, masks, out, torch.zeros(1, 6)) == {}


def drawn_and_pruned(batch, policy, samples: int, seed: int) -> dict[int, list[int]]:
    """The pruned best samples of the draws ``reinforce_step`` makes with this seed."""
    with torch.no_grad():
        logits = policy(batch.words, batch.valid)
    masks = torch.bernoulli(torch.sigmoid(logits)[:, None].expand(-1, samples, -1).contiguous(),
                            generator=torch.Generator().manual_seed(seed)) * batch.valid[:, None]
    requests = [(b, masks[b, s].nonzero().flatten().tolist())
                for b in range(len(masks)) for s in range(samples)]
    return pruned_best_samples(batch, masks, batch.evaluator.evaluate(requests), logits)


@pytest.mark.parametrize("weight", [1.0, 5.0])
def test_the_imitation_term_raises_the_probability_of_the_pruned_sets(tiny_tokenizer, weight):
    """Same networks, same draws (same seed), plain SGD: the step with the term leaves the
    pruned sets more probable than the step without it (first order: its gradient is their
    log-likelihood's own); both steps sample the same 8 x 16 masks."""
    torch.manual_seed(0)
    batch = toy_batch(toy_texts()[:8], tiny_tokenizer)
    dim = batch.words.shape[-1]
    policy, baseline = ErasurePolicy(dim), RewardBaseline(dim)
    imitated = drawn_and_pruned(toy_batch(toy_texts()[:8], tiny_tokenizer), policy, 16, 1)
    assert imitated                     # some texts have a flipping sample to imitate
    examples = sorted(imitated)
    targets = torch.zeros(len(examples), batch.words.shape[1])
    for i, b in enumerate(examples):
        targets[i, imitated[b]] = 1.0
    likelihood, summaries = {}, {}
    for w in (0.0, weight):
        p, b = copy.deepcopy(policy), copy.deepcopy(baseline)
        optimizer = torch.optim.SGD(list(p.parameters()) + list(b.parameters()), lr=0.01)
        summaries[w] = reinforce_step(toy_batch(toy_texts()[:8], tiny_tokenizer), p, b,
                                      optimizer, torch.Generator().manual_seed(1),
                                      samples=16, gamma=0.002, prior=0.1, prior_weight=1.0,
                                      imitation_weight=w)
        with torch.no_grad():
            logits = p(batch.words, batch.valid)[examples]
        likelihood[w] = float(mask_log_prob(logits, targets, batch.valid[examples]).sum())
    assert summaries[0.0]["imitated"] == 0 and summaries[0.0]["imitation_rows"] == 0
    assert summaries[weight]["imitated"] == len(imitated)
    assert summaries[weight]["imitation_rows"] > 0
    assert summaries[weight]["rows"] == summaries[0.0]["rows"] == 8 * 16
    assert summaries[weight]["flip_rate"] == summaries[0.0]["flip_rate"]   # same draws
    assert likelihood[weight] > likelihood[0.0]


def test_a_fit_with_imitation_learns_the_markers(tiny_tokenizer):
    explainer = MinimalErasure(MarkerBag(), one_hot_words, samples=8, seed=3,
                               imitation_weight=1.0)
    history = explainer.fit(toy_texts(), tokenizer=tiny_tokenizer, epochs=4, batch_size=8,
                            show_progress=False)
    assert history.imitated.sum() > 0 and history.imitation_rows.sum() > 0
    batch = toy_batch([TEXT], tiny_tokenizer)
    probs = torch.sigmoid(explainer.policy(batch.words, batch.valid))[0]
    assert probs[[3, 5]].min() > probs[[0, 1, 2, 4]].max()


def test_a_negative_imitation_weight_is_rejected():
    with pytest.raises(ValueError, match="imitation_weight"):
        MinimalErasure(MarkerBag(), imitation_weight=-1.0)
