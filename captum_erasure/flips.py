"""Shared pieces of the decision-flip methods: result objects, text encoding into words, the
evaluator of erased word *sets* (through the shared engine) and the greedy flip baseline.

A row is one example with a set of its words erased. Words are the features of a word feature
mask (the pieces of one word from a fast tokenizer's ``word_ids`` form one feature); erasing a
word deletes its tokens (``mode="delete"``, Li et al.'s erasure), replaces them by a baseline
token (``"replace"``) or masks them in the attention (``"attention"``).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .engine import EngineStats, PerturbationEngine, Row, engine_for_call
from .explain import (_check_text, _encode, _label_name, check_model_and_tokenizer, eval_mode,
                      max_tokens_of)
from .scores import OUTPUT_KINDS, log_probs
from .text import NOT_A_FEATURE, feature_ids, word_feature_mask

SET_MODES = ("delete", "replace", "attention")


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


@dataclass
class ReductionResult:
    """Input reduction: the words kept while the prediction stays the same."""

    text: str
    words: list[str]
    kept: list[int]                 # word indices kept, ascending
    reduced_text: str
    removal_path: list[int]         # word indices in removal order
    label: int                      # the (unchanged) predicted label
    confidence: float               # P(label | reduced text), verified by a final forward
    original_confidence: float      # P(label | text)
    forward_passes: int             # classifier rows spent on this text (gradient rows too)
    label_name: str | None = None
    importance: str = "gradient"
    beam_size: int = 1
    verified: bool = True           # the final forward on reduced_text kept the label

    @property
    def reduced_words(self) -> list[str]:
        return [self.words[i] for i in self.kept]

    @property
    def kept_fraction(self) -> float:
        return len(self.kept) / max(len(self.words), 1)


# -- texts --------------------------------------------------------------------------------------
@dataclass
class EncodedTexts:
    """Texts tokenized into one padded batch, with their words."""

    texts: list[str]
    input_ids: Tensor               # (n, seq) right padded
    attention_mask: Tensor          # (n, seq)
    feature_mask: Tensor            # (n, seq) word index per token, -1 for specials/padding
    words: list[list[str]]          # per text, its words as they appear in the text
    spans: list[list[tuple[int, int]]]  # per text, (start, end) character span of each word

    def __len__(self) -> int:
        return len(self.texts)

    def text_without(self, row: int, erased: Iterable[int]) -> str:
        """The text with the words ``erased`` (indices) cut out. Kept words keep the text
        between them; where a word was cut, its neighbours are separated by one space so that
        they do not glue into a new word when tokenized again."""
        erased = set(erased)
        text, spans = self.texts[row], self.spans[row]
        parts: list[str] = []
        previous_end: int | None = None
        gap_had_erasure = False
        for index, (start, end) in enumerate(spans):
            if index in erased:
                gap_had_erasure = True
                continue
            if previous_end is not None:
                between = text[previous_end:start]
                if gap_had_erasure:
                    between = " "
                parts.append(between)
            parts.append(text[start:end])
            previous_end, gap_had_erasure = end, False
        return "".join(parts)


UNITS = ("words", "whitespace")


def encode_texts(model: nn.Module, tokenizer: Any, texts: str | Sequence[str], *,
                 max_length: int | None = None, truncate: bool = False,
                 units: str = "words") -> EncodedTexts:
    """Tokenize ``texts`` (a string is one text) and find their erasable units; bad input
    raises ``ValueError`` (empty text, too long, slow tokenizer, vocabulary mismatch).

    ``units="words"``: the tokenizer's words (punctuation is a word of its own);
    ``"whitespace"``: whitespace-separated tokens ("fresh," is one unit), as LIT's
    AblationFlip and LIME split text."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    check_model_and_tokenizer(model, tokenizer)
    if isinstance(texts, str):
        texts = [texts]
    texts = [_check_text(text, i) for i, text in enumerate(texts)]
    if not texts:
        raise ValueError("no texts given")
    encoding = _encode(tokenizer, texts, 0, max_tokens_of(model, tokenizer, max_length),
                       truncate)
    mask = word_feature_mask(encoding)
    words, spans = [], []
    for row, text in enumerate(texts):
        features = feature_ids(mask[row])
        if not features:
            raise ValueError(f"text {row} has no words the tokenizer keeps")
        if features != list(range(len(features))):
            raise ValueError(f"text {row}: word ids are not consecutive from 0")
        row_spans = []
        for feature in features:
            span = encoding.word_to_chars(row, feature)
            row_spans.append((span.start, span.end))
        if units == "whitespace":
            row_spans = _whitespace_units(text, row_spans, mask[row])
        spans.append(row_spans)
        words.append([text[s:e] for s, e in row_spans])
    return EncodedTexts(texts, encoding["input_ids"], encoding["attention_mask"], mask, words,
                        spans)


def _whitespace_units(text: str, spans: list[tuple[int, int]],
                      mask_row: Tensor) -> list[tuple[int, int]]:
    """Merge the words of each whitespace token into one unit: renumbers ``mask_row`` in
    place and returns the units' character spans."""
    unit_of, units, previous_end = [], [], None
    for start, end in spans:
        if previous_end is None or text[previous_end:start] != "":
            units.append((start, end))   # whitespace (or a gap) before it: a new unit
        else:
            units[-1] = (units[-1][0], end)
        unit_of.append(len(units) - 1)
        previous_end = end
    lookup = torch.tensor(unit_of + [NOT_A_FEATURE])  # index -1 maps to NOT_A_FEATURE
    mask_row.copy_(lookup[mask_row])
    return units


def renumber_features(feature_mask: Tensor, shape: torch.Size) -> Tensor:
    """Feature ids 0..n-1 per row in order of first appearance (negative ids stay -1)."""
    if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point() or \
            feature_mask.dim() != 2 or feature_mask.shape[-1] != shape[-1]:
        raise ValueError(f"feature_mask must be an integer tensor shaped like the inputs "
                         f"{tuple(shape)}")
    rows = feature_mask.cpu().long().expand(shape)
    out = torch.full(shape, -1, dtype=torch.long)
    for b, row in enumerate(rows.tolist()):
        mapping: dict[int, int] = {}
        for i, value in enumerate(row):
            if value >= 0:
                out[b, i] = mapping.setdefault(value, len(mapping))
    return out


def attribute_inputs(inputs: Tensor | tuple[Tensor], additional_forward_args: Any,
                     feature_mask: Tensor | tuple[Tensor] | None,
                     ) -> tuple[bool, Tensor, Tensor, Tensor]:
    """The Captum-style arguments of a flip method's ``attribute``: whether ``inputs`` was a
    tuple, the (batch, sequence) token ids, the attention mask (``additional_forward_args[0]``;
    all ones when absent) and the feature mask renumbered 0..n-1 per row (default: every
    attended token is its own word)."""
    is_tuple = isinstance(inputs, tuple)
    ids = inputs[0] if is_tuple else inputs
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
        raise ValueError("inputs must be a (batch, sequence) tensor of token ids")
    extra = additional_forward_args if isinstance(additional_forward_args, tuple) else \
        (() if additional_forward_args is None else (additional_forward_args,))
    attention = extra[0] if extra and isinstance(extra[0], Tensor) else torch.ones_like(ids)
    if attention.shape != ids.shape:
        raise ValueError("additional_forward_args[0] must be the attention mask, shaped "
                         "like the inputs")
    if isinstance(feature_mask, tuple):
        feature_mask = feature_mask[0]
    if feature_mask is None:
        feature_mask = torch.arange(ids.shape[1]).expand(ids.shape).clone()
        feature_mask[attention.cpu() == 0] = -1
    return is_tuple, ids, attention, renumber_features(feature_mask, ids.shape)


@contextmanager
def baseline_token_from(method: Any, baselines: Any) -> Iterator[None]:
    """Captum's ``baselines`` (a token id) as ``method.baseline_token`` for one call."""
    saved = method.baseline_token
    if baselines is not None:
        method.baseline_token = int(torch.as_tensor(baselines).reshape(-1)[0])
    try:
        yield
    finally:
        method.baseline_token = saved


# -- evaluating erased sets ---------------------------------------------------------------------
class SetEvaluator:
    """Classifier probabilities of examples with *sets* of words erased, through the engine.

    ``evaluate([(example, erased_feature_ids), ...])`` runs all rows in packed batches and
    returns float64 probabilities ``(rows, n_classes)``; ``rows_per_example`` counts the rows
    each example has cost so far.
    """

    @classmethod
    def for_method(cls, method: Any, input_ids: Tensor, attention_mask: Tensor,
                   feature_mask: Tensor, pad_token_id: int,
                   show_progress: bool) -> "SetEvaluator":
        """The evaluator a flip method's options ask for (its forward, mode, baseline token,
        output kind and batching)."""
        baseline = method.baseline_token
        return cls(method.forward_func, input_ids, attention_mask, feature_mask,
                   mode=method.mode, baseline_id=pad_token_id if baseline is None else baseline,
                   pad_token_id=pad_token_id, output=method.output, batch_size=method.batch_size,
                   max_tokens=method.max_tokens, device=method.device, autocast=method.autocast,
                   show_progress=show_progress)

    def __init__(self, forward_func: Callable, input_ids: Tensor, attention_mask: Tensor,
                 feature_mask: Tensor, *, mode: str = "delete", baseline_id: int = 0,
                 pad_token_id: int = 0, output: str = "logits", batch_size: int | None = None,
                 max_tokens: int | None = None, device: torch.device | str | None = None,
                 autocast: bool | torch.dtype = False, show_progress: bool = False,
                 engine: PerturbationEngine | None = None) -> None:
        if mode not in SET_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {SET_MODES}")
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape or \
                feature_mask.shape[-1] != input_ids.shape[1]:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)}, attention mask "
                f"{tuple(attention_mask.shape)} and feature mask {tuple(feature_mask.shape)} "
                "must all be (batch, sequence)")
        self.ids = input_ids.cpu()
        self.attention = attention_mask.cpu()
        self.mask = feature_mask.cpu().long().expand(input_ids.shape)
        self.mode, self.baseline_id, self.pad_token_id = mode, baseline_id, pad_token_id
        self.output = output
        self.features = [feature_ids(row) for row in self.mask]
        for example, features in enumerate(self.features):
            if not features:
                raise ValueError(f"example {example} has no erasable words (empty text or a "
                                 "feature mask without features)")
        self.lengths = self.attention.ne(0).sum(1)
        self.engine = engine or engine_for_call(
            forward_func, forward_func, n_examples=len(self.ids), perturbations_per_eval=None,
            batch_size=batch_size, max_tokens=max_tokens, device=device, autocast=autocast,
            show_progress=show_progress)
        self.rows_per_example = [0] * len(self.ids)
        self._memo: dict[tuple[int, tuple], Tensor] = {}
        self._sizes = [{f: int((self.mask[b] == f).sum()) for f in feats}
                       for b, feats in enumerate(self.features)]

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats

    def _length(self, example: int, erased: tuple) -> int:
        if self.mode != "delete":
            return int(self.lengths[example])
        return int(self.lengths[example]) - sum(self._sizes[example][f] for f in erased)

    def collate(self, rows: Sequence[Row]) -> tuple:
        return self.collate_with_features(rows)[:2]

    def collate_with_features(self, rows: Sequence[Row]) -> tuple[Tensor, Tensor, Tensor]:
        """Token ids, attention mask and feature mask of each row with its set erased."""
        examples = torch.tensor([r.example for r in rows])
        ids, attention, mask = self.ids[examples], self.attention[examples], self.mask[examples]
        erase = torch.zeros(ids.shape, dtype=torch.bool)
        for i, row in enumerate(rows):
            if row.data:
                erase[i] = torch.isin(mask[i], torch.tensor(row.data)) & (mask[i] >= 0)
        if self.mode == "replace":
            ids = ids.masked_fill(erase, self.baseline_id)
        elif self.mode == "attention":
            attention = attention.masked_fill(erase, 0)
        else:
            keep = ~erase & attention.ne(0)
            # A stable sort puts the kept tokens first, in their original order.
            order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
            n_keep = keep.sum(1)
            order = order[:, :int(n_keep.max())]
            pad = torch.arange(order.shape[1]) >= n_keep[:, None]
            ids = ids.gather(1, order).masked_fill(pad, self.pad_token_id)
            attention = attention.gather(1, order).masked_fill(pad, 0)
            mask = mask.gather(1, order).masked_fill(pad, -1)
        width = int(attention.ne(0).long().cumsum(1).argmax(1).max()) + 1
        if self.mode != "delete":
            mask = mask.masked_fill(erase, -1)
        return ids[:, :width], attention[:, :width], mask[:, :width]

    def evaluated(self, example: int) -> dict[tuple, Tensor]:
        """Every set evaluated so far for ``example`` (sorted feature ids -> probabilities)."""
        return {erased: row for (b, erased), row in self._memo.items() if b == example}

    def evaluate(self, requests: Sequence[tuple[int, Iterable[int]]],
                 desc: str = "erased sets") -> Tensor:
        """Probabilities (float64, one row per request) of each example with its set erased.
        A set already evaluated for an example is answered from memory (no row spent)."""
        keys = [(example, tuple(sorted(set(int(f) for f in erased))))
                for example, erased in requests]
        new = list(dict.fromkeys(key for key in keys if key not in self._memo))
        rows = [Row(example, -1, self._length(example, erased), erased)
                for example, erased in new]
        for example, _ in new:
            self.rows_per_example[example] += 1
        if rows:
            out = log_probs(self.engine.run(rows, self.collate, desc=desc), self.output).exp()
            self._memo.update(zip(new, out))
        if not keys:
            return torch.empty(0, 0, dtype=torch.float64)
        return torch.stack([self._memo[key] for key in keys])


def flip_targets(target: Any, n_examples: int, n_classes: int) -> list[int | None]:
    """One class to flip *towards* per example (None: away from the original label)."""
    if target is None:
        return [None] * n_examples
    if isinstance(target, Tensor) or hasattr(target, "tolist"):
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) == 1:
            target = list(target) * n_examples
        if len(target) != n_examples:
            raise ValueError(f"got {len(target)} targets for {n_examples} examples")
        values = list(target)
    else:
        values = [target] * n_examples
    checked = []
    for value in values:
        if value is None:
            checked.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"target must be None or a class index, got {value!r}")
        if not 0 <= value < n_classes:
            raise ValueError(f"target {value} is outside the model's class range "
                             f"[0, {n_classes - 1}]")
        checked.append(int(value))
    return checked


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
                                mode="delete", output=evaluator.output, engine=evaluator.engine)
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
            original_label_name=_label_name(model, original_label),
            new_label_name=_label_name(model, new_label), target=targets[b],
            minimal=flipped and minimal[b], method=method, message="" if flipped else message))
    return results


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
    ``units``: ``"words"`` or ``"whitespace"`` tokens (see :func:`encode_texts`).
    """
    encoded = encode_texts(model, tokenizer, texts, max_length=max_length, truncate=truncate,
                           units=units)
    with eval_mode(model):
        evaluator = SetEvaluator(
            model, encoded.input_ids, encoded.attention_mask, encoded.feature_mask, mode=mode,
            baseline_id=tokenizer.pad_token_id if baseline_token is None else baseline_token,
            pad_token_id=tokenizer.pad_token_id, output=output, batch_size=batch_size,
            device=device, show_progress=show_progress)
        results = _greedy(model, tokenizer, encoded, evaluator, target, max_erasures,
                          prune_result)
    if stats is not None:
        stats.forward_passes += evaluator.stats.forward_passes
        stats.rows += evaluator.stats.rows
        stats.oom_retries += evaluator.stats.oom_retries
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
    targets = flip_targets(target, n, original.shape[1])
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
        limit = [min(len(orders[b]), max_erasures or len(orders[b])) for b in active]
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
