"""Input reduction (Feng et al., EMNLP 2018): remove words while the prediction stays the same.

Starting from the whole input, repeatedly remove the least important remaining word as long
as the model's own predicted label is unchanged (and, optionally, its probability stays at or
above ``min_confidence``). Importance:

- ``"gradient"`` (Feng's choice): the first-order estimate of the loss change when the word's
  embedding is zeroed, ``-sum(e * dNLL/de)`` over its tokens and dimensions, NLL of the
  predicted label; the word with the smallest estimate goes first. One batched
  forward+backward per step for all beams of all examples.
- ``"loo"`` (our WordErasure): every remaining word is tried; the removal that keeps the
  highest probability of the label goes first (O(n^2) rows, exact rather than first-order).

Beam search: each beam proposes its ``beam_size`` least important removals (``"loo"``: all),
all candidates of all beams and examples are verified in one batched pass through the shared
engine, and the ``beam_size`` most confident survivors form the next beam. Slot 0 always
continues the greedy (beam 1) path, so a beam never reduces less than greedy. The result is
the most confident of the shortest survivors, verified by a final forward on the reduced
text. Every text has a budget of ``max_evaluations`` predictions (default 10,000): a step that
would exceed it is not started, and the result, the best reduction verified so far, says so
(``budget_reached``, ``message``). A greedy "erase the most important words until the label
flips" baseline for comparison is :func:`captum_erasure.attr.flip.greedy.greedy_flip`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_erasure._core.engine import (
    Row,
    output_logits,
)
from captum_erasure._core.forwards import model_caller, pad_token_id_of
from captum_erasure._core.hooks import input_embeddings, this_thread_only
from captum_erasure._core.inputs import (
    attribute_inputs,
    baseline_token_from,
    check_fraction,
    check_positive_int,
    check_targets,
)
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.scores import log_probs
from captum_erasure._core.text import (
    encode_texts,
    eval_mode,
    feature_ids,
    label_name,
    word_feature_mask,
)
from captum_erasure._core.word_sets import SetEvaluator
from captum_erasure.attr.flip._common import tensor_call_words

IMPORTANCES = ("gradient", "loo")
# Predictions per text: bounds beam-3 leave-one-out on a 306-word text (139,728 predictions
# unbounded) while gradient beam 3 (about 10 per word) finishes texts of ~1,000 words.
DEFAULT_MAX_EVALUATIONS = 10_000


@dataclass
class _Beam:
    removed: tuple          # feature ids, in removal order
    confidence: float       # P(label | input without them)


class InputReduction(UsesEngine, PerturbationAttribution):
    """Feng et al.'s input reduction as a Captum attribution and a text-level ``reduce``.

    Args:
        forward_func: the classifier, ``forward_func(input_ids, attention_mask)`` -> logits
            (or ``output="probs"``/``"log_probs"``), or an HF output with ``.logits``.
        importance: ``"gradient"`` (default, Feng) or ``"loo"`` (leave-one-out erasure).
        beam_size: 1 is greedy.
        min_confidence: a removal must also keep P(label) at or above this.
        max_evaluations: predictions per text the search stays within (gradient rows, every
            candidate and, in ``reduce``, the verification counted; default
            ``DEFAULT_MAX_EVALUATIONS``). A step that does not fit is not started: the result
            is the best reduction verified so far and says so (``budget_reached``,
            ``message``). The original prediction and the verification always run.
        mode: how words are removed: ``"delete"`` (default), ``"replace"``, ``"attention"``.
        embedding_layer: the token-embedding module for gradients (default:
            ``get_input_embeddings()`` of an HF model).
    """

    def __init__(self, forward_func: Callable, *, importance: str = "gradient",
                 beam_size: int = 1, min_confidence: float | None = None,
                 mode: str = "delete", baseline_token: int | None = None,
                 embedding_layer: nn.Module | None = None, pad_token_id: int | None = None,
                 max_evaluations: int = DEFAULT_MAX_EVALUATIONS,
                 options: EngineOptions | None = None, **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        self.pad_token_id = pad_token_id
        self.importance = _check_importance(importance)
        self.beam_size = _check_beam(beam_size)
        self.min_confidence = check_fraction("min_confidence", min_confidence, allow_none=True)
        self.max_evaluations = check_positive_int("max_evaluations", max_evaluations)
        self.mode, self.baseline_token = mode, baseline_token
        self.embedding_layer = embedding_layer
        self.last_stats = None
        self.last_gradient_rows = 0
        self.last_result: list[ReductionResult] = []

    # -- core -------------------------------------------------------------------------------
    def _run(self, evaluator: SetEvaluator, target: Any, beam_size: int, importance: str,
             min_confidence: float | None, budget: int,
             reserve: int) -> tuple[list, Tensor, Tensor, list[bool]]:
        """Per example: the best beam at the end, the original probabilities and labels, and
        whether the budget (``reserve`` rows kept for after the search) stopped it."""
        n = len(evaluator.ids)
        original = evaluator.evaluate([(b, ()) for b in range(n)], desc="originals")
        labels = original.argmax(-1)
        if target is not None:
            wanted = check_targets(target, n, original.shape[1])
            for b in range(n):
                if wanted[b] != int(labels[b]):
                    raise ValueError(
                        f"input reduction keeps the model's own prediction; target "
                        f"{wanted[b]} is not the predicted class {int(labels[b])} of "
                        f"example {b} (pass target=None)")
        beams = [[_Beam((), float(original[b, labels[b]]))] for b in range(n)]
        best = [beams[b][0] for b in range(n)]
        stopped = [False] * n
        self.last_gradient_rows = 0
        active = list(range(n))
        while active:
            if importance == "gradient":  # one gradient row per beam, then a candidate
                active = [b for b in active if not self._over_budget(
                    evaluator, b, len(beams[b]) + 1 + reserve, budget, stopped)]
            proposals = self._proposals(evaluator, beams, active, labels, beam_size, importance)
            requests, parents = [], []
            for b in active:
                mine = [((b, beam.removed + (word,)), (slot, rank))
                        for slot, beam in enumerate(beams[b])
                        for rank, word in enumerate(proposals[(b, slot)])]
                # A step is evaluated whole or not at all: half a step would bias the beam.
                if mine and self._over_budget(evaluator, b, evaluator.cost(
                        [r for r, _ in mine]) + reserve, budget, stopped):
                    continue
                requests += [r for r, _ in mine]
                parents += [p for _, p in mine]
            if not requests:
                break
            out = evaluator.evaluate(requests, desc=f"reduction ({importance})")
            children: dict[int, list] = {b: [] for b in active}
            for (b, removed), (slot, rank), probs in zip(requests, parents, out):
                label = int(labels[b])
                confidence = float(probs[label])
                if int(probs.argmax()) != label or (
                        min_confidence is not None and confidence < min_confidence):
                    continue
                children[b].append((slot, rank, _Beam(removed, confidence)))
            still = []
            for b in active:
                kept = self._next_beams(children[b], beam_size, importance)
                if kept:
                    beams[b] = kept
                    best[b] = max(kept, key=lambda beam: beam.confidence)
                    n_words = len(evaluator.features[b])
                    if n_words - len(kept[0].removed) > 1:
                        still.append(b)
            active = still
        return best, original, labels, stopped

    @staticmethod
    def _over_budget(evaluator: SetEvaluator, example: int, rows: int, budget: int,
                     stopped: list[bool]) -> bool:
        """Whether ``rows`` more predictions would take ``example`` past ``budget`` (and then
        mark it stopped)."""
        if evaluator.rows_per_example[example] + rows <= budget:
            return False
        stopped[example] = True
        return True

    @staticmethod
    def _next_beams(children: list, beam_size: int, importance: str) -> list[_Beam]:
        """Slot 0 continues the greedy path; the other slots take the most confident of the
        remaining survivors (one per set of removed words)."""
        if not children:
            return []
        from_first = [c for c in children if c[0] == 0]
        greedy = None
        if importance == "gradient":
            greedy = next((c for c in from_first if c[1] == 0), None)
        elif from_first:
            greedy = max(from_first, key=lambda c: (c[2].confidence, -c[1]))
        ordered = sorted(children, key=lambda c: (-c[2].confidence, c[0], c[1]))
        kept, sets = [], set()
        for child in ([greedy] if greedy else []) + ordered:
            key = frozenset(child[2].removed)
            if key in sets:
                continue
            sets.add(key)
            kept.append(child[2])
            if len(kept) == beam_size:
                break
        return kept

    def _proposals(self, evaluator: SetEvaluator, beams: list, active: list, labels: Tensor,
                   beam_size: int, importance: str) -> dict:
        """Removals each beam proposes, least important first."""
        states = [(b, slot) for b in active for slot in range(len(beams[b]))]
        remaining = {(b, slot): [f for f in evaluator.features[b]
                                 if f not in beams[b][slot].removed] for b, slot in states}
        if importance == "loo":
            return {key: words if len(words) > 1 else [] for key, words in remaining.items()}
        scores = self._gradient_scores(evaluator, [(b, beams[b][slot].removed)
                                                   for b, slot in states],
                                       [int(labels[b]) for b, _ in states])
        proposals = {}
        for key, score in zip(states, scores):
            words = remaining[key]
            if len(words) <= 1:
                proposals[key] = []
                continue
            ranked = sorted(words, key=lambda f: (score.get(f, 0.0), f))
            proposals[key] = ranked[:beam_size]
        return proposals

    def _gradient_scores(self, evaluator: SetEvaluator, states: list[tuple[int, tuple]],
                         labels: list[int]) -> list[dict]:
        """Per state: word -> estimated NLL increase when it is removed, -sum(e * dNLL/de)."""
        embedding = self.embedding_layer or input_embeddings(self.forward_func)
        if embedding is None:
            raise ValueError("importance='gradient' needs the token-embedding module: pass "
                             "embedding_layer= (or use importance='loo')")
        chunk = evaluator.engine.batch_size or 64
        results: list[dict] = []
        device = evaluator.engine.device
        for start in range(0, len(states), chunk):
            part = states[start:start + chunk]
            rows = [Row(b, -1, 1, tuple(sorted(removed))) for b, removed in part]
            ids, attention, mask = evaluator.collate_with_features(rows)
            captured: list[Tensor] = []

            def keep_output(module: nn.Module, args: Any, output: Tensor) -> Tensor:
                output = output.detach().requires_grad_(True)
                captured.append(output)
                return output

            handle = embedding.register_forward_hook(this_thread_only(keep_output))
            try:
                with torch.enable_grad():
                    out = model_caller(self.forward_func)(ids.to(device), attention.to(device))
                    logp = log_probs(output_logits(out), self.output)
                    picked = torch.tensor(labels[start:start + len(part)], device=logp.device)
                    nll = -logp.gather(1, picked[:, None]).sum()
                    (grad,) = torch.autograd.grad(nll, captured[0])
            finally:
                handle.remove()
            token_scores = -(grad * captured[0]).sum(-1).detach().float().cpu()
            evaluator.stats.forward_passes += 1
            self.last_gradient_rows += len(part)
            for i, (b, _) in enumerate(part):
                evaluator.rows_per_example[b] += 1
                words: dict[int, float] = {}
                for pos, feature in enumerate(mask[i].tolist()):
                    if feature >= 0 and attention[i, pos] != 0:
                        words[feature] = words.get(feature, 0.0) + float(token_scores[i, pos])
                results.append(words)
        return results

    def _pad_id(self, pad_token_id: int | None, tokenizer: Any = None) -> int | None:
        """The call's pad id, else the constructor's, else the model's or ``tokenizer``'s."""
        explicit = self.pad_token_id if pad_token_id is None else pad_token_id
        return pad_token_id_of(self.forward_func, tokenizer, explicit)

    def _budget(self, max_evaluations: int | None) -> int:
        return check_positive_int("max_evaluations", self.max_evaluations
                                  if max_evaluations is None else max_evaluations)

    def _evaluator(self, ids: Tensor, attention: Tensor, mask: Tensor, pad_token_id: int | None,
                   show_progress: bool) -> SetEvaluator:
        return SetEvaluator.for_method(self, ids, attention, mask, self._pad_id(pad_token_id),
                                       show_progress)

    # -- public entry points ----------------------------------------------------------------
    @attribute_call
    def reduce(self, texts: str | Sequence[str], *, tokenizer: Any,
               beam_size: int | None = None, importance: str | None = None,
               min_confidence: float | None = None, max_length: int | None = None,
               truncate: bool = False, show_progress: bool = False,
               max_evaluations: int | None = None,
               units: str = "words") -> list[ReductionResult]:
        """Reduce each text (a string is one text); arguments left ``None`` use the
        constructor's. The reduced text (rebuilt from the text's own characters) is checked
        by a final forward (tokenized again). ``units``: ``"words"`` (the tokenizer's words)
        or ``"whitespace"`` tokens, as in every text method."""
        beam_size = _check_beam(self.beam_size if beam_size is None else beam_size)
        importance = _check_importance(importance or self.importance)
        min_confidence = check_fraction("min_confidence", min_confidence, allow_none=True)
        if min_confidence is None:
            min_confidence = self.min_confidence
        budget = self._budget(max_evaluations)
        model = self.forward_func
        encoded = encode_texts(model, tokenizer, texts, max_length=max_length,
                               truncate=truncate, units=units)
        with eval_mode(model):
            evaluator = self._evaluator(encoded.input_ids, encoded.attention_mask,
                                        encoded.feature_mask, self._pad_id(None, tokenizer),
                                        show_progress)
            best, original, labels, stopped = self._run(evaluator, None, beam_size,
                                                        importance, min_confidence, budget, 1)
            reduced = [encoded.text_without(b, best[b].removed) for b in range(len(encoded))]
            again = tokenizer(reduced, padding=True, padding_side="right", return_tensors="pt",
                              return_token_type_ids=False, truncation=False)
            verifier = SetEvaluator(self.forward_func, again["input_ids"],
                                    again["attention_mask"], word_feature_mask(again),
                                    pad_token_id=evaluator.pad_token_id, output=self.output,
                                    engine=evaluator.engine)
            checked = verifier.evaluate([(b, ()) for b in range(len(encoded))],
                                        desc="verification")
        results = []
        for b in range(len(encoded)):
            evaluator.rows_per_example[b] += 1
            label = int(labels[b])
            removed = list(best[b].removed)
            n_words = len(encoded.words[b])
            results.append(ReductionResult(
                text=encoded.texts[b], words=encoded.words[b],
                kept=[i for i in range(n_words) if i not in removed],
                reduced_text=reduced[b], removal_path=removed, label=label,
                confidence=float(checked[b, label]),
                original_confidence=float(original[b, label]),
                forward_passes=evaluator.rows_per_example[b],
                label_name=label_name(model, label), importance=importance,
                beam_size=beam_size, verified=int(checked[b].argmax()) == label,
                budget_reached=stopped[b], message=_budget_message(stopped[b], budget,
                                                                   len(removed))))
        self.last_stats = evaluator.stats
        self.last_result = results
        return results

    @property
    def last_results(self) -> list[ReductionResult]:
        """Alias of ``last_result`` (the name of earlier releases)."""
        return self.last_result

    @log_usage(part_of_slo=True)
    @attribute_call
    def attribute(self, inputs: Tensor | tuple[Tensor], baselines: Any = None,
                  target: Any = None, additional_forward_args: Any = None,
                  feature_mask: Tensor | None = None, beam_size: int | None = None,
                  importance: str | None = None, min_confidence: float | None = None,
                  pad_token_id: int | None = None, show_progress: bool = False,
                  max_evaluations: int | None = None, **kwargs: Any) -> Any:
        """Captum-style: a tensor shaped like ``inputs`` holding each word's removal order
        (1 = removed first; words kept to the end get ``len(removal_path) + 1``, so larger
        means more important; tokens outside words 0). ``additional_forward_args[0]`` is the
        attention mask; ``target`` must be None or the predicted class (the reduction keeps
        the model's own prediction). Per-example :class:`ReductionResult` objects are in
        ``self.last_result`` (``text`` empty and ``words`` the word numbers in a tensor call)."""
        if kwargs:
            raise TypeError(f"InputReduction.attribute got unexpected arguments {sorted(kwargs)}")
        is_tuple, ids, attention, feature_mask = attribute_inputs(
            inputs, additional_forward_args, feature_mask)
        beam_size = _check_beam(self.beam_size if beam_size is None else beam_size)
        importance = _check_importance(importance or self.importance)
        min_confidence = check_fraction("min_confidence", min_confidence, allow_none=True)
        budget = self._budget(max_evaluations)
        model = self.forward_func
        with baseline_token_from(self, baselines, ids), eval_mode(model):
            evaluator = self._evaluator(ids.cpu(), attention.cpu(), feature_mask,
                                        pad_token_id, show_progress)
            best, original, labels, stopped = self._run(
                evaluator, target, beam_size, importance,
                self.min_confidence if min_confidence is None else min_confidence, budget, 0)
        attr = torch.zeros(ids.shape, dtype=torch.float32)
        for b in range(len(ids)):
            path = list(best[b].removed)
            order = {f: step + 1 for step, f in enumerate(path)}
            for pos, feature in enumerate(feature_mask[b].tolist()):
                if feature >= 0:
                    attr[b, pos] = order.get(feature, len(path) + 1)
        self.last_stats = evaluator.stats
        self.last_result = [ReductionResult(
            text="", words=tensor_call_words(feature_mask[b], None, b),
            kept=sorted(set(feature_ids(feature_mask[b])) - set(best[b].removed)),
            reduced_text="", removal_path=list(best[b].removed), label=int(labels[b]),
            confidence=float(best[b].confidence),
            original_confidence=float(original[b, labels[b]]),
            forward_passes=evaluator.rows_per_example[b], importance=importance,
            beam_size=beam_size, budget_reached=stopped[b],
            message=_budget_message(stopped[b], budget, len(best[b].removed)))
            for b in range(len(ids))]
        attr = attr.to(ids.device)
        return (attr,) if is_tuple else attr


def _check_importance(importance: str) -> str:
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
    return importance


def _check_beam(beam_size: int) -> int:
    return check_positive_int("beam_size", beam_size)


def _budget_message(stopped: bool, budget: int, n_removed: int) -> str:
    if not stopped:
        return ""
    return (f"stopped at the budget of {budget} predictions (max_evaluations) after "
            f"{n_removed} removal(s): the best reduction verified so far; raise max_evaluations "
            "to reduce further")














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
    budget_reached: bool = False    # the prediction budget ended the search before it was done
    message: str = ""               # what stopped it early, when something did

    @property
    def reduced_words(self) -> list[str]:
        return [self.words[i] for i in self.kept]

    @property
    def kept_fraction(self) -> float:
        return len(self.kept) / max(len(self.words), 1)

