"""What every flip method shares: the result object, targets, the flip test, pruning a
flipping set to 1-minimal and the final verification on the remaining text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from torch import Tensor, nn

from captum_erasure._core.inputs import check_targets
from captum_erasure._core.text import (
    EncodedTexts,
    feature_ids,
    label_name,
    resolve_label_names,
    word_feature_mask,
)
from captum_erasure._core.word_sets import SetEvaluator


# -- results ------------------------------------------------------------------------------------
@dataclass
class FlipResult:
    """A set of erased words and what the classifier says without them.

    ``flipped`` is True only when the final verification forward on ``remaining_text`` gave
    the flipped label (a label other than ``original_label``, or ``target`` when one was
    asked for). ``minimal`` is True when restoring any single erased word was checked to undo
    the flip. ``forward_passes`` counts the classifier rows (predictions) spent on this text.
    """

    text: str
    words: list[str]
    erased: list[int]               # word indices (into ``words``), ascending
    remaining_text: str
    flipped: bool
    original_label: int
    original_probability: float     # P(original_label | text)
    new_label: int                  # argmax on the remaining text
    new_probability: float          # P(new_label | remaining text)
    forward_passes: int             # classifier rows spent on this text
    original_label_name: str | None = None
    new_label_name: str | None = None
    target: int | None = None       # the class to flip towards; None: away from original
    minimal: bool = False           # no single erased word can be restored keeping the flip
    method: str = ""
    message: str = ""               # why nothing was found, when it was not

    @property
    def erased_words(self) -> list[str]:
        return [self.words[i] for i in self.erased]


def flip_targets(target: Any, n_examples: int, n_classes: int,
                 model: Any = None) -> list[int | None]:
    """One class to flip *towards* per example (None: away from the original label), given
    as class indices or label names of ``model``; bad targets get the core's errors
    (:func:`~captum_erasure._core.inputs.check_targets`)."""
    if target is None:
        return [None] * n_examples
    target = resolve_label_names(target, model)
    return check_targets(target, n_examples, n_classes, allow_none_items=True)


def is_flip(probs: Tensor, original_label: int, target: int | None) -> Tensor:
    """Boolean per row of ``probs``: the argmax left ``original_label`` (or reached target)."""
    labels = probs.argmax(-1)
    return labels.eq(target) if target is not None else labels.ne(original_label)


def flip_margin(probs: Tensor, original_label: int, target: int | None) -> Tensor:
    """How strongly each row flipped: P(target), or 1 - P(original label)."""
    return probs[:, target] if target is not None else 1.0 - probs[:, original_label]


def prune(evaluator: SetEvaluator, examples: Sequence[int], sets: Sequence[list[int]],
          original_labels: Sequence[int], targets: Sequence[int | None],
          probs: Sequence[Tensor], order: Sequence[Sequence[int]] | None = None,
          ) -> tuple[list[list[int]], list[Tensor]]:
    """Post-hoc pruning of flipping sets, all examples together.

    1. Restore the erased words one at a time (in ``order``, e.g. least important first; one
       batched row per still-pruning example per step): a word stays restored when the flip
       survives without it.
    2. Check minimality: every single restoration of the pruned set in one batched pass. If
       several words keep the flip, try restoring all of them at once (one row); if that
       loses the flip, go back to 1 with those words, the strongest flip first. Check again.

    Returns the pruned sets and their probabilities. Cost: about |D| + |D_pruned| rows when
    the first pass leaves a minimal set; each further round costs the words it retries plus
    one check."""
    sets = [list(s) for s in sets]
    probs = list(probs)
    queues = [list(order[i]) if order is not None else list(sets[i])
              for i in range(len(examples))]
    queues = [[f for f in q if f in sets[i]] for i, q in enumerate(queues)]
    checking = list(range(len(examples)))
    while checking:
        _restore_one_at_a_time(evaluator, examples, sets, probs, queues, original_labels,
                               targets)
        checking = [i for i in checking if len(sets[i]) > 1]
        requests, owners = [], []
        for i in checking:
            for restored in sets[i]:
                requests.append((examples[i], [f for f in sets[i] if f != restored]))
                owners.append((i, restored))
        out = evaluator.evaluate(requests, desc="minimality check")
        restorable: dict[int, list[tuple[float, int]]] = {}
        for row, (i, restored) in zip(out, owners):
            if bool(is_flip(row[None], original_labels[i], targets[i])[0]):
                margin = float(flip_margin(row[None], original_labels[i], targets[i])[0])
                restorable.setdefault(i, []).append((margin, restored))
        joint = [i for i, found in restorable.items() if 1 < len(found) < len(sets[i])]
        out = evaluator.evaluate(
            [(examples[i], [f for f in sets[i] if f not in {r for _, r in restorable[i]}])
             for i in joint], desc="minimality check")
        for row, i in zip(out, joint):
            if bool(is_flip(row[None], original_labels[i], targets[i])[0]):
                gone = {r for _, r in restorable.pop(i)}
                sets[i] = [f for f in sets[i] if f not in gone]
                probs[i] = row
        for i, found in restorable.items():  # the first one restores (answered from memory)
            queues[i] = [r for _, r in sorted(found, key=lambda t: (-t[0], t[1]))]
        checking = sorted(set(restorable) | set(joint))
    return sets, probs


def _restore_one_at_a_time(evaluator: SetEvaluator, examples: Sequence[int], sets: list,
                           probs: list, queues: list, original_labels: Sequence[int],
                           targets: Sequence[int | None]) -> None:
    """Step 1 of :func:`prune`: pop each queue's words in turn; a word stays restored when
    the flip survives without it."""
    while True:
        pending = [i for i in range(len(examples)) if queues[i] and len(sets[i]) > 1]
        if not pending:
            return
        tried = {i: queues[i].pop(0) for i in pending}
        out = evaluator.evaluate([(examples[i], [f for f in sets[i] if f != tried[i]])
                                  for i in pending], desc="pruning")
        for row, i in zip(out, pending):
            if bool(is_flip(row[None], original_labels[i], targets[i])[0]):
                sets[i] = [f for f in sets[i] if f != tried[i]]
                probs[i] = row


def verified_results(model: nn.Module, tokenizer: Any, encoded: EncodedTexts,
                     evaluator: SetEvaluator, found: list[list[int] | None],
                     original_probs: Tensor, targets: list[int | None], minimal: list[bool],
                     method: str, messages: list[str]) -> list[FlipResult]:
    """One final forward per text on its remaining text (tokenized again, as a user would),
    then the results. A set counts as a flip only if this forward confirms it."""
    remaining = [encoded.text_without(b, found[b] or []) for b in range(len(encoded))]
    checked = [b for b in range(len(encoded)) if found[b] is not None and remaining[b].strip()]
    verified: dict[int, Tensor] = {}
    if checked:
        again = tokenizer([remaining[b] for b in checked], padding=True, padding_side="right",
                          return_tensors="pt", return_token_type_ids=False, truncation=False)
        verifier = SetEvaluator(evaluator.engine.forward_func, again["input_ids"],
                                again["attention_mask"], word_feature_mask(again),
                                mode="delete", pad_token_id=evaluator.pad_token_id,
                                output=evaluator.output, engine=evaluator.engine)
        out = verifier.evaluate([(i, ()) for i in range(len(checked))], desc="verification")
        for i, b in enumerate(checked):
            verified[b] = out[i]
            evaluator.rows_per_example[b] += 1
    results = []
    for b in range(len(encoded)):
        original_label = int(original_probs[b].argmax())
        erased = sorted(found[b]) if found[b] is not None else []
        message = messages[b]
        if b in verified:
            probs = verified[b]
            flipped = bool(is_flip(probs[None], original_label, targets[b])[0])
            if not flipped:
                message = ("the erased set flipped the label with the words' tokens deleted, "
                           "but not on the remaining text tokenized again")
        elif found[b] is not None:  # every word erased: the remaining text is empty
            probs = evaluator.evaluate([(b, erased)], desc="verification")[0]
            flipped = bool(is_flip(probs[None], original_label, targets[b])[0])
        else:
            probs, flipped = original_probs[b], False
        new_label = int(probs.argmax())
        results.append(FlipResult(
            text=encoded.texts[b], words=encoded.words[b], erased=erased if flipped else [],
            remaining_text=remaining[b] if flipped else encoded.texts[b], flipped=flipped,
            original_label=original_label,
            original_probability=float(original_probs[b, original_label]),
            new_label=new_label, new_probability=float(probs[new_label]),
            forward_passes=evaluator.rows_per_example[b],
            original_label_name=label_name(model, original_label),
            new_label_name=label_name(model, new_label), target=targets[b],
            minimal=flipped and minimal[b], method=method, message="" if flipped else message))
    return results


def tensor_call_words(feature_mask_row: Tensor, sentence_words: Any, example: int) -> list[str]:
    """The words of a result from a tensor call: ``sentence_words[example]`` when given, else
    the word numbers ("0", "1", ...): a tensor call has no text."""
    if sentence_words is not None:
        return list(sentence_words[example])
    return [str(f) for f in feature_ids(feature_mask_row)]
