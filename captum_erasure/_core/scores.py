"""How a perturbed output is compared with the original one.

All scores are "original minus erased" in spirit: positive when erasing the feature hurts the
target class.

- ``"eq1"``: Li, Monroe & Jurafsky (2016) Eq. 1 with the paper-consistent sign,
  ``(log P(c|e) - log P(c|e\\d)) / (-log P(c|e))``. 0 when nothing changes, bounded below by
  -1, unbounded above. When ``P(c|e)`` rounds to 1 (``-log P = 0``) the denominator is clamped at
  ``EQ1_MIN_DENOMINATOR``, so the score is the raw log-probability drop times 1e12: huge and
  positive if erasure lowers the label's probability, 0 if it does not, and still >= -1 in
  practice. Log-probabilities are computed in float64 from logits, so this only happens when the
  logit gap exceeds about 700 or the forward returns probabilities of exactly 1.
- ``"log_prob_diff"``: ``log P(c|e) - log P(c|e\\d)`` (Eq. 1's numerator).
- ``"prob_diff"``: ``P(c|e) - P(c|e\\d)``; Captum's FeatureAblation on a softmax forward.
- ``"logit_diff"``: ``z_c(e) - z_c(e\\d)`` on the raw forward output.
- ``"output_diff"``: raw output difference for every output element (``target`` may be None);
  what Captum's FeatureAblation does with any forward, e.g. inside ``LLMAttribution``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from captum_erasure._core.inputs import check_targets

SCORES = ("eq1", "log_prob_diff", "prob_diff", "logit_diff", "output_diff")
OUTPUT_KINDS = ("logits", "probs", "log_probs")
EQ1_MIN_DENOMINATOR = 1e-12


def check_score(score: str) -> str:
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
    return score


def check_outputs_fit_score(outputs: Tensor, score: str, output_kind: str,
                            method: str | None = None) -> None:
    """A single-column output has no class distribution: log-softmax over it is 0, so every
    probability-based score would silently be 0. ``method`` names the caller in the error."""
    if outputs.shape[-1] == 1 and output_kind == "logits" and score in (
            "eq1", "log_prob_diff", "prob_diff"):
        raise ValueError(
            f"{method + ': ' if method else ''}the model returns a single output per row "
            f"(a regression head, num_labels=1?), so score={score!r} (which needs class "
            "probabilities) would be 0 everywhere; return one logit per class, or use "
            "score='logit_diff' or 'output_diff'")


def log_probs(outputs: Tensor, output_kind: str) -> Tensor:
    """Float64 log-probabilities from a forward's outputs of the given kind."""
    outputs = outputs.double()
    if output_kind == "logits":
        return torch.log_softmax(outputs, dim=-1)
    if output_kind == "probs":
        return outputs.clamp_min(1e-300).log()  # P=0 would make Eq. 1 undefined
    if output_kind == "log_probs":
        return outputs
    raise ValueError(f"unknown output kind {output_kind!r}; choose one of {OUTPUT_KINDS}")


def resolve_targets(target, original_outputs: Tensor) -> Tensor | None:
    """One class index per example; ``None`` means the predicted class.

    Accepts an int, a sequence or a tensor of ints (one per example); anything else (floats, a
    wrong number of targets, a class outside the model's range) is the ``ValueError`` of
    :func:`~captum_erasure._core.inputs.check_targets`, the same in every method.
    """
    if target is None:
        return original_outputs.argmax(-1)
    n_examples, n_classes = original_outputs.shape[0], original_outputs.shape[-1]
    return torch.tensor(check_targets(target, n_examples, n_classes), dtype=torch.long)


def erasure_scores(original: Tensor, erased: Tensor, target: Tensor | None, score: str,
                   output_kind: str = "logits") -> Tensor:
    """Score each erased row against its example's original output.

    Args:
        original: ``(rows, n_outputs)``, the unperturbed output of each row's example.
        erased: ``(rows, n_outputs)``, the perturbed outputs.
        target: ``(rows,)`` class index per row (``None`` only for ``"output_diff"``).
    Returns:
        ``(rows,)`` float64 scores, or ``(rows, n_outputs)`` for ``"output_diff"`` without target
        (int64 for ``"output_diff"`` on integer outputs).
    """
    check_score(score)
    if score == "output_diff":
        if original.is_floating_point() or erased.is_floating_point():
            diff = original.double() - erased.double()
        else:  # integer outputs: exact, as Captum keeps them (float64 would round past 2**53)
            diff = original.long() - erased.long()
        return diff if target is None else diff.gather(-1, target[:, None])[:, 0]
    if target is None:
        raise ValueError(f"score {score!r} needs a target class")

    def pick(values: Tensor) -> Tensor:
        return values.gather(-1, target[:, None].to(values.device))[:, 0]

    if score == "logit_diff":
        return pick(original.double()) - pick(erased.double())
    lp_orig = pick(log_probs(original, output_kind))
    lp_erased = pick(log_probs(erased, output_kind))
    if score == "prob_diff":
        return lp_orig.exp() - lp_erased.exp()
    drop = lp_orig - lp_erased
    if score == "log_prob_diff":
        return drop
    # eq1: relative change of the label's log-likelihood; positive when erasing the word lowers it.
    return drop / (-lp_orig).clamp_min(EQ1_MIN_DENOMINATOR)
