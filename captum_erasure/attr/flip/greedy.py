"""Shared pieces of the decision-flip methods: result objects, text encoding into words, the
evaluator of erased word *sets* (through the shared engine) and the greedy flip baseline.

A row is one example with a set of its words erased. Words are the features of a word feature
mask (the pieces of one word from a fast tokenizer's ``word_ids`` form one feature); erasing a
word deletes its tokens (``mode="delete"``, Li et al.'s erasure), replaces them by a baseline
token (``"replace"``) or masks them in the attention (``"attention"``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from captum_erasure._core.engine import (
    EngineStats,
)
from captum_erasure._core.forwards import pad_token_id_of
from captum_erasure._core.inputs import check_positive_int
from captum_erasure._core.text import (
    EncodedTexts,
    encode_texts,
    eval_mode,
)
from captum_erasure._core.word_sets import SetEvaluator
from captum_erasure.attr.flip._common import (
    FlipResult,
    flip_margin,
    flip_targets,
    is_flip,
    prune,
    verified_results,
)


# -- greedy baseline ----------------------------------------------------------------------------
def greedy_flip(model: nn.Module, texts: str | Sequence[str], *, tokenizer: Any,
                target: Any = None, mode: str = "delete", baseline_token: int | None = None,
                max_erasures: int | None = None, prune_result: bool = False,
                output: str = "logits", max_length: int | None = None, truncate: bool = False,
                units: str = "words", batch_size: int | None = None,
                device: torch.device | str | None = None, show_progress: bool = False,
                stats: EngineStats | None = None) -> list[FlipResult]:
    """Baseline: erase the most important words, in leave-one-out order, until the label flips.

    Importance is leave-one-out erasure (our WordErasure with the same ``mode``): the drop of
    P(original label) when the word alone is erased, or with ``target`` the rise of P(target).
    Then the top-1, top-2, ... words are erased until the label flips (all still-unflipped
    texts of a step in one batched evaluation). Cost: n + 1 rows for the ranking, one row per
    step, one verification row. ``prune_result=True`` also applies the post-hoc pruning of
    :class:`~captum_erasure.MinimalErasure` (off by default: the plain baseline). Pass an
    ``EngineStats`` as ``stats`` to have this call's forward calls and rows added to it.
    ``units``: ``"words"`` (the tokenizer's words) or ``"whitespace"`` tokens (see
    :func:`~captum_erasure._core.text.unit_spans`); ``target``: a class index or label name
    (``"positive"``), one for all texts or one per text.
    """
    # None is the only "no limit": 0 and -1 are errors, not "never" or "unlimited".
    max_erasures = check_positive_int("max_erasures", max_erasures, allow_none=True)
    encoded = encode_texts(model, tokenizer, texts, max_length=max_length, truncate=truncate,
                           units=units)
    with eval_mode(model):
        evaluator = SetEvaluator(
            model, encoded.input_ids, encoded.attention_mask, encoded.feature_mask, mode=mode,
            baseline_id=baseline_token, pad_token_id=pad_token_id_of(model, tokenizer),
            output=output, batch_size=batch_size,
            device=device, show_progress=show_progress, method="greedy_flip")
        results = _greedy(model, tokenizer, encoded, evaluator, target, max_erasures,
                          prune_result)
    if stats is not None:
        stats += evaluator.stats
    return results


def loo_order(evaluator: SetEvaluator, original_probs: Tensor,
              targets: list[int | None]) -> list[list[int]]:
    """Words of each example, most important first, by leave-one-out erasure (one batched
    evaluation of n rows per example)."""
    requests = [(b, (f,)) for b, feats in enumerate(evaluator.features) for f in feats]
    out = evaluator.evaluate(requests, desc="leave-one-out")
    orders, start = [], 0
    for b, feats in enumerate(evaluator.features):
        part = out[start:start + len(feats)]
        start += len(feats)
        label = int(original_probs[b].argmax())
        gain = flip_margin(part, label, targets[b]) - float(
            flip_margin(original_probs[b:b + 1], label, targets[b])[0])
        ranked = sorted(range(len(feats)), key=lambda i: (-float(gain[i]), i))
        orders.append([feats[i] for i in ranked])
    return orders


def _greedy(model: nn.Module, tokenizer: Any, encoded: EncodedTexts, evaluator: SetEvaluator,
            target: Any, max_erasures: int | None, prune_result: bool) -> list[FlipResult]:
    n = len(encoded)
    original = evaluator.evaluate([(b, ()) for b in range(n)], desc="originals")
    targets = flip_targets(target, n, original.shape[1], model)
    orders = loo_order(evaluator, original, targets)
    found: list[list[int] | None] = [None] * n
    messages = [""] * n
    active = []
    for b in range(n):
        if targets[b] is not None and int(original[b].argmax()) == targets[b]:
            messages[b] = f"the text is already predicted as the target class {targets[b]}"
        else:
            active.append(b)
    probs_of: dict[int, Tensor] = {}
    step = 0
    while active:
        step += 1
        limit = [len(orders[b]) if max_erasures is None else min(len(orders[b]), max_erasures)
                 for b in active]
        active = [b for b, top in zip(active, limit) if step <= top]
        if not active:
            break
        out = evaluator.evaluate([(b, orders[b][:step]) for b in active], desc="greedy")
        still = []
        for i, b in enumerate(active):
            label = int(original[b].argmax())
            if bool(is_flip(out[i:i + 1], label, targets[b])[0]):
                found[b], probs_of[b] = orders[b][:step], out[i]
            else:
                still.append(b)
        active = still
    minimal = [False] * n
    for b in range(n):
        if found[b] is None and not messages[b]:
            messages[b] = "erasing words in leave-one-out order never flipped the label"
    if prune_result:
        done = [b for b in range(n) if found[b] is not None]
        # Restore the least important erased words first: reverse leave-one-out order.
        pruned, _ = prune(evaluator, done, [found[b] for b in done],
                          [int(original[b].argmax()) for b in done], [targets[b] for b in done],
                          [probs_of[b] for b in done], [found[b][::-1] for b in done])
        for b, erased in zip(done, pruned):
            found[b], minimal[b] = erased, True
    return verified_results(model, tokenizer, encoded, evaluator, found, original, targets,
                            minimal, "greedy", messages)

