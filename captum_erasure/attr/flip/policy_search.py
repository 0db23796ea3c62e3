"""The paper's explain-time procedure (Li et al. 2016, sec. 5) for
``MinimalErasure(search="policy")``: the fitted policy pi(z|h) proposes the masks, nothing else
does (no leave-one-out probes, no per-example model).

Per text: the threshold decoding (every word with pi >= 0.5; the most probable word when none
reaches it) and ``samples - 1`` further distinct non-empty masks drawn from pi, all texts'
masks in one batched pass through the engine. The smallest mask that flips (ties: the larger
flip margin) is pruned to 1-minimal by the shared evaluator, restoring the words the policy
was least sure of first. Only a text none of whose masks flips walks the policy's ranking
(prefix sizes, then bisection: :func:`~.search.greedy_fallback`). Every row is counted in the
evaluator (``rows_per_example``, engine stats).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from captum_erasure.attr.flip._common import prune
from captum_erasure.attr.flip.search import (
    SearchBatch,
    TextSearch,
    greedy_fallback,
    record_masks,
    start_searches,
)

DRAWS_PER_SAMPLE = 4  # Bernoulli draws made per wanted mask, to find distinct ones


class PolicyTextSearch(TextSearch):
    """One text's bookkeeping (margins, flips, the best flip); its fallback path is the
    policy's ranking, not leave-one-out effects."""

    def greedy_path(self) -> list[int]:
        return list(self.policy_order)


def policy_masks(probs: Tensor, valid: Tensor, samples: int,
                 generator: torch.Generator) -> list[list[tuple]]:
    """Per example, up to ``samples`` distinct non-empty masks (sorted word ids): the threshold
    decoding first, then Bernoulli draws from ``probs`` ``(B, W)`` in drawing order (one
    batched draw of ``DRAWS_PER_SAMPLE * samples`` per example; fewer masks when the policy
    is so sure that fewer distinct ones come up)."""
    probs = probs.detach().float() * valid
    draws = torch.bernoulli(
        probs[:, None].expand(-1, DRAWS_PER_SAMPLE * samples, -1).contiguous(),
        generator=generator).bool() & valid[:, None]
    out = []
    for b in range(len(probs)):
        decoded = tuple((probs[b] >= 0.5).nonzero().flatten().tolist()) or \
            (int(probs[b].argmax()),)
        masks = [decoded]
        for draw in draws[b]:
            if len(masks) >= samples:
                break
            mask = tuple(draw.nonzero().flatten().tolist())
            if mask and mask not in masks:
                masks.append(mask)
        out.append(masks)
    return out


def policy_search(batch: SearchBatch, logits: Tensor, samples: int,
                  generator: torch.Generator) -> tuple[list, list, list]:
    """Sample, verify, prune. Returns per example: the set (feature ids) or None, its
    probabilities, and a message (as ``MinimalErasure._search``)."""
    evaluator, n = batch.evaluator, len(batch.original)
    probs = torch.sigmoid(logits)
    # the additive model's settings are unused: no proposals, only the bookkeeping
    texts, messages = start_searches(batch, logits, functools.partial(
        PolicyTextSearch, ridge=1.0, noise=1.0, candidates=1))
    live = [b for b in range(n) if texts[b] is not None]
    proposed = policy_masks(probs, batch.valid, samples, generator)
    record_masks(evaluator, texts, [(b, mask) for b in live for mask in proposed[b]],
                 "policy samples")
    greedy_fallback(evaluator, texts, live)
    done = [b for b in live if texts[b].best is not None]
    # restore the erased words the policy was least sure of first
    order = [sorted(texts[b].best, key=lambda f: (float(logits[b, f]), f)) for b in done]
    pruned, pruned_probs = prune(
        evaluator, done, [list(texts[b].best) for b in done], [texts[b].label for b in done],
        [texts[b].target for b in done], [texts[b].best_probs for b in done], order)
    found: list = [None] * n
    found_probs: list = [None] * n
    for b, erased, row in zip(done, pruned, pruned_probs):
        found[b], found_probs[b] = erased, row
    for b in live:
        if found[b] is None:
            messages[b] = ("no flipping set among the policy's masks, nor on its ranking "
                           "(every word erased does not flip either)")
    return found, found_probs, messages
