"""The paper's explain-time procedure (Li et al. 2016, sec. 5) for
``MinimalErasure(search="policy")``: the fitted policy pi(z|h) proposes the masks, nothing else
does (no leave-one-out probes, no per-example model).

Per text, all in one batched pass through the engine for all texts: the threshold decoding
(every word with pi >= 0.5; the most probable word when none reaches it), the nested masks of
the ``prefixes`` most probable words (top 1, top 2, ...: the policy's probabilities
thresholded at several levels) and ``samples - 1`` further distinct non-empty masks drawn
from pi. The smallest mask that flips (ties: the larger flip margin) is pruned to 1-minimal,
restoring the words the policy was least sure of first: with ``chunks``, first in halves
(ddmin-style: one row restores every word of a chunk that is not needed), then word by word
and the minimality check of the shared evaluator. Only a text none of whose masks flips walks
the policy's ranking (doubling prefixes, then bisection: :func:`~.search.greedy_fallback`). Every
row is counted in the evaluator (``rows_per_example``, engine stats).
"""

from __future__ import annotations

import functools
import itertools

import torch
from torch import Tensor

from captum_erasure._core.word_sets import SetEvaluator
from captum_erasure.attr.flip._common import is_flip, prune
from captum_erasure.attr.flip.search import (
    SearchBatch,
    TextSearch,
    greedy_fallback,
    record_masks,
    start_searches,
)

DRAWS_PER_SAMPLE = 4  # Bernoulli draws made per wanted mask, to find distinct ones
SMALLER_POOL_EXTRA = 4  # smaller masks are drawn from the policy's top (size + this) words


class PolicyTextSearch(TextSearch):
    """One text's bookkeeping (margins, flips, the best flip); its fallback path is the
    policy's ranking, not leave-one-out effects."""

    def greedy_path(self) -> list[int]:
        return list(self.policy_order)


# the additive model's settings are unused: no proposals, only the bookkeeping
new_policy_text_search = functools.partial(PolicyTextSearch, ridge=1.0, noise=1.0, candidates=1)


def policy_masks(probs: Tensor, valid: Tensor, samples: int, generator: torch.Generator,
                 prefixes: int = 0) -> list[list[tuple]]:
    """Per example, distinct non-empty masks (sorted word ids): the threshold decoding first,
    then the top-1 ... top-``prefixes`` words by probability (stable ties: word order), then
    up to ``samples - 1`` Bernoulli draws from ``probs`` ``(B, W)`` that are new (one batched
    draw of ``DRAWS_PER_SAMPLE * samples`` per example; fewer when the policy is so sure that
    fewer distinct masks come up)."""
    probs = probs.detach().float() * valid
    draws = torch.bernoulli(
        probs[:, None].expand(-1, DRAWS_PER_SAMPLE * samples, -1).contiguous(),
        generator=generator).bool() & valid[:, None]
    ranking = torch.argsort(-probs, dim=1, stable=True)
    out = []
    for b in range(len(probs)):
        decoded = tuple((probs[b] >= 0.5).nonzero().flatten().tolist()) or \
            (int(probs[b].argmax()),)
        masks = [decoded]
        n_words = int(valid[b].sum())
        for k in range(1, min(prefixes, n_words) + 1):
            mask = tuple(sorted(ranking[b, :k].tolist()))
            if mask not in masks:
                masks.append(mask)
        wanted = len(masks) + samples - 1
        for draw in draws[b]:
            if len(masks) >= wanted:
                break
            mask = tuple(draw.nonzero().flatten().tolist())
            if mask and mask not in masks:
                masks.append(mask)
        out.append(masks)
    return out


def smaller_masks(logits: Tensor, size: int, count: int, known) -> list[tuple]:
    """The ``count`` most probable masks of exactly ``size`` words under the policy (an
    independent Bernoulli per word: a mask's log-probability is a constant plus the sum of
    its words' logits) that ``known`` (mask -> bool) has not seen; enumerated among the
    policy's top ``size + SMALLER_POOL_EXTRA`` words (ties: word order)."""
    order = torch.argsort(-logits, stable=True).tolist()
    pool = sorted(order[:size + SMALLER_POOL_EXTRA])
    scored = sorted(itertools.combinations(pool, size),
                    key=lambda mask: -float(sum(logits[f] for f in mask)))
    return [mask for mask in scored if not known(mask)][:count]


def restore_in_chunks(evaluator: SetEvaluator, examples: list[int], sets: list[list[int]],
                      probs: list[Tensor], orders: list[list[int]], labels: list[int],
                      targets: list, smallest: int) -> None:
    """ddmin-style first pruning pass, all examples in batched rounds, for sets of at least
    ``smallest`` words: restore the first half of the still untried words (``orders``: least
    needed first) in one row; the flip survives: all of them stay restored; it does not:
    halve the chunk, down to single words (a single word that undoes the flip stays erased).
    Updates ``sets``/``probs`` in place; :func:`prune` then makes the result 1-minimal (its
    checks of sets tried here are answered from memory)."""
    queues = {i: list(orders[i]) for i in range(len(examples)) if len(sets[i]) >= smallest}
    chunk = {i: len(queue) // 2 for i, queue in queues.items()}
    while True:
        pending = [i for i, queue in queues.items() if queue and len(sets[i]) > 1]
        if not pending:
            return
        tried = {i: queues[i][:max(1, min(chunk[i], len(sets[i]) - 1))] for i in pending}
        out = evaluator.evaluate([(examples[i], [f for f in sets[i] if f not in tried[i]])
                                  for i in pending], desc="pruning in chunks")
        for row, i in zip(out, pending):
            if bool(is_flip(row[None], labels[i], targets[i])[0]):
                sets[i] = [f for f in sets[i] if f not in tried[i]]
                probs[i] = row
                queues[i] = queues[i][len(tried[i]):]
            elif len(tried[i]) == 1:  # needed (for now): prune checks it again at the end
                queues[i] = queues[i][1:]
            else:
                chunk[i] = len(tried[i]) // 2


def prune_candidates(evaluator: SetEvaluator, texts: list, examples: list[int],
                     candidates: list[tuple], logits: Tensor, chunks: int) -> dict:
    """Prunes each example's flipping candidate to 1-minimal (in chunks first for sets of
    at least ``chunks`` words), restoring the words the policy was least sure of first.
    Returns ``{example: (set, probabilities)}``."""
    order = [sorted(c, key=lambda f: (float(logits[b, f]), f))
             for b, c in zip(examples, candidates)]
    sets = [list(c) for c in candidates]
    probs = list(evaluator.evaluate(list(zip(examples, candidates))))  # from memory
    labels = [texts[b].label for b in examples]
    targets = [texts[b].target for b in examples]
    if chunks:
        restore_in_chunks(evaluator, examples, sets, probs, order, labels, targets, chunks)
    pruned, pruned_probs = prune(evaluator, examples, sets, labels, targets, probs, order)
    return {b: (erased, row) for b, erased, row in zip(examples, pruned, pruned_probs)}


def policy_search(batch: SearchBatch, logits: Tensor, samples: int,
                  generator: torch.Generator, prefixes: int = 0, chunks: int = 0,
                  budget: int = 0, smaller: int = 0) -> tuple[list, list, list]:
    """Propose, verify, prune (``chunks``: sets of at least that many words are first pruned
    in chunks; 0: word by word only). A text whose rows so far leave room within ``budget``
    (0: none) prunes its next smallest flipping mask too (not a superset of the set found),
    and so on, keeping the smallest set; then (``smaller`` > 0) tries up to that many of the
    policy's most probable masks one word smaller than its set per round
    (:func:`smaller_masks`), pruning one that flips. Returns per example: the set (feature
    ids) or None, its probabilities, and a message (as ``MinimalErasure._search``)."""
    evaluator, n = batch.evaluator, len(batch.original)
    probs = torch.sigmoid(logits)
    texts, messages = start_searches(batch, logits, new_policy_text_search)
    live = [b for b in range(n) if texts[b] is not None]
    proposed = policy_masks(probs, batch.valid, samples, generator, prefixes)
    record_masks(evaluator, texts, [(b, mask) for b in live for mask in proposed[b]],
                 "policy masks")
    greedy_fallback(evaluator, texts, live, start="doubling")
    done = [b for b in live if texts[b].best is not None]
    found = prune_candidates(evaluator, texts, done, [texts[b].best for b in done], logits,
                             chunks)
    tried = {b: {texts[b].best} for b in done}
    while budget:  # rows left within the budget: prune the next smallest flipping mask too
        extra = {}
        for b in done:
            erased = found[b][0]
            rest = sorted((m for m, flips in texts[b].flipped.items() if flips and
                           m not in tried[b] and not set(erased) <= set(m)),
                          key=lambda m: (len(m), texts[b].margins[m]))
            if rest and len(erased) > 1 and \
                    evaluator.rows_per_example[b] + 1 + len(rest[0]) + 1 <= budget:
                extra[b] = rest[0]
                tried[b].add(rest[0])
        if not extra:
            break
        again = prune_candidates(evaluator, texts, list(extra), list(extra.values()), logits,
                                 chunks)
        for b, (erased, row) in again.items():
            if len(erased) < len(found[b][0]):
                found[b] = (erased, row)
    if smaller and budget:
        descend_below(evaluator, texts, found, logits, budget, smaller, chunks)
    sets: list = [found[b][0] if b in found else None for b in range(n)]
    found_probs = [found[b][1] if b in found else None for b in range(n)]
    for b in live:
        if sets[b] is None:
            messages[b] = ("no flipping set among the policy's masks, nor on its ranking "
                           "(every word erased does not flip either)")
    return sets, found_probs, messages


def descend_below(evaluator: SetEvaluator, texts: list, found: dict, logits: Tensor,
                  budget: int, per_round: int, chunks: int) -> None:
    """Rounds of :func:`smaller_masks`: each text whose rows leave room within ``budget``
    for the masks, pruning a flipping one (``size - 1`` rows) and the verification tries up
    to ``per_round`` masks one word smaller than its set (all texts in one batched pass);
    the strongest flip among them is pruned and kept when smaller. Updates ``found``."""
    while True:
        requests = []
        for b, (erased, _) in found.items():
            size = len(erased)
            room = budget - evaluator.rows_per_example[b] - (size - 1) - 1
            if size > 1 and room > 0:
                requests += [(b, mask) for mask in smaller_masks(
                    logits[b][:texts[b].n_words], size - 1, min(per_round, room),
                    lambda mask, b=b: evaluator.cost([(b, mask)]) == 0)]
        if not requests:
            return
        record_masks(evaluator, texts, requests, "smaller policy masks")
        best: dict[int, tuple] = {}
        for b, mask in requests:
            if texts[b].flips(mask) and (b not in best or
                                         texts[b].margins[mask] < texts[b].margins[best[b]]):
                best[b] = mask
        again = prune_candidates(evaluator, texts, list(best), list(best.values()), logits,
                                 chunks)
        for b, (erased, row) in again.items():
            if len(erased) < len(found[b][0]):
                found[b] = (erased, row)
