"""Our erasure counterfactuals as LIT generators (the Counterfactuals tab).

- Minimal erasure flip (Li, Monroe & Jurafsky 2016, section 5): the smallest set of words found
  within a budget of predictions whose erasure changes the model's label
  (:class:`captum_erasure.MinimalErasure`).
- Greedy erasure flip: the baseline that erases the most important words (leave-one-out
  order) until the label changes (:func:`captum_erasure.attr.flip.greedy.greedy_flip`).
- Input reduction (Feng et al. 2018): remove the least important words while the label stays
  (:class:`captum_erasure.InputReduction`).

Each returns the text with the words erased, as a new LIT example built with
``make_modified_input`` (``_id`` reset, ``_meta.parentId`` set), so LIT's prediction cache can
never answer with the parent's prediction; only results verified by a forward on the new text
are returned. The example keeps the parent's gold label: nobody has labelled the new text.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

from lit_nlp.api import components as lit_components
from lit_nlp.api import types as lit_types
from lit_nlp.lib import utils as lit_utils
from torch import nn

from captum_erasure._core.inputs import check_fraction, check_positive_int
from captum_erasure._core.text import check_units
from captum_erasure.attr.input_reduction import DEFAULT_MAX_EVALUATIONS, IMPORTANCES
from lit_plugin._common import (
    UNITS_KEY,
    config_integer,
    config_number,
    config_units,
    units_field,
)

from .interpreters import (
    check_compatible,
    incompatibility,
    preds_field_of,
)
from .model import EMBEDDINGS_FIELD, TOKENS_FIELD

TARGET_CLASS_KEY = "Flip to class (empty: any other class)"
BUDGET_KEY = "Max predictions per text"
MAX_ERASURES_KEY = "Max words to erase (empty = no limit)"  # 0 is an error, not "no limit"
BEAM_KEY = "Beam size"
IMPORTANCE_KEY = "Word importance"
MIN_CONFIDENCE_KEY = "Min confidence to keep (0 = off)"

# Fields only the model reads: dropped from new examples so they cannot describe the old text.
MODEL_ONLY_FIELDS = (TOKENS_FIELD, EMBEDDINGS_FIELD)


def class_index(value: Any, labels: Sequence[str], key: str) -> int | None:
    """A class from a config value: a label name, an index, or empty for None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    value = str(value).strip()
    if value in labels:
        return list(labels).index(value)
    if value.isdigit() and int(value) < len(labels):
        return int(value)
    raise ValueError(f"{key!r} must be one of the model's labels {list(labels)} or a class "
                     f"index, got {value!r}")


def new_examples(example: dict, text_field: str, text: str | None, source: str) -> list[dict]:
    """``[the example with the new text]``, a fresh LIT example (``_id`` reset so the cache
    cannot answer with the parent's prediction); ``[]`` when there is no new text."""
    if text is None or text == example[text_field]:
        return []
    created = lit_utils.make_modified_input(example, {text_field: text}, source)
    return [{k: v for k, v in created.items() if k not in MODEL_ONLY_FIELDS}]


class ErasureGenerator(lit_components.Generator):
    """Common LIT plumbing: compatibility, text field, one result list per example."""

    name = "erasure generator"

    def __init__(self, show_progress: bool = False, units: str = "words"):
        self.show_progress = show_progress
        self.units = check_units(units)

    def is_compatible(self, model, dataset) -> bool:
        del dataset
        return incompatibility(model) is None

    def generate(self, example, model, dataset, config=None):
        return self.generate_all([example], model, dataset, config)[0]

    def generate_all(self, inputs, model, dataset, config=None):
        del dataset
        torch_model, tokenizer, text_field = check_compatible(model, self.name)
        config = config or {}
        if not inputs:
            return []
        for position, example in enumerate(inputs):
            if text_field not in example:
                raise ValueError(f"{self.name}: example {position} has no {text_field!r} field")
        texts = [example[text_field] for example in inputs]
        labels = model.output_spec()[preds_field_of(model)].vocab or []
        outputs = self.run_method(torch_model, tokenizer, texts, labels, config)
        return [new_examples(example, text_field, text, source)
                for example, (text, source) in zip(inputs, outputs)]

    def run_method(self, model: nn.Module, tokenizer: Any, texts: list[str],
                   labels: Sequence[str], config: dict) -> list[tuple[str | None, str]]:
        """Per text: (new text, or None when nothing verified was found; a source note)."""
        raise NotImplementedError


def _erased_note(name: str, result: Any) -> str:
    words = ", ".join(repr(w) for w in result.erased_words)
    return (f"{name}: erased {len(result.erased)} of {len(result.words)} words ({words}); "
            f"{result.original_label_name} {result.original_probability:.2f} -> "
            f"{result.new_label_name} {result.new_probability:.2f}")


class MinimalErasureFlipGenerator(ErasureGenerator):
    """Minimal erasure flip (Li, Monroe & Jurafsky 2016, section 5): the smallest set of words
    whose erasure changes the model's label, searched per example within a budget of
    predictions (see :class:`captum_erasure.MinimalErasure`), pruned and verified by one
    forward on the remaining text."""

    name = "Minimal erasure flip"

    def __init__(self, explainer: Any = None, *, max_evaluations: int = 75, seed: int = 0,
                 show_progress: bool = False):
        """``explainer``: a (fitted) :class:`captum_erasure.MinimalErasure` to use for its own
        model; otherwise one with an unfitted policy is built per model."""
        super().__init__(show_progress=show_progress)
        self.explainer = explainer
        self.max_evaluations = check_positive_int("max_evaluations", max_evaluations)
        self.seed = seed
        self._lock = threading.Lock()

    def config_spec(self) -> lit_types.Spec:
        return {
            TARGET_CLASS_KEY: lit_types.TextSegment(default="", required=False),
            UNITS_KEY: units_field(self.units),
            BUDGET_KEY: lit_types.Integer(default=self.max_evaluations, min_val=5,
                                          max_val=1000, required=False),
        }

    def run_method(self, model, tokenizer, texts, labels, config):
        from captum_erasure.attr.flip.minimal_erasure import MinimalErasure
        target = class_index(config.get(TARGET_CLASS_KEY), labels, TARGET_CLASS_KEY)
        budget = config_integer(config, BUDGET_KEY, self.max_evaluations)
        explainer = self.explainer
        if explainer is None or explainer.forward_func is not model:
            explainer = MinimalErasure(model, seed=self.seed)
        with self._lock:  # the explainer's lazily built policy is not shared across requests
            results = explainer.explain(texts, tokenizer=tokenizer, target=target,
                                        max_evaluations=budget,
                                        units=config_units(config, self.units),
                                        show_progress=self.show_progress)
        return [(r.remaining_text, _erased_note(self.name, r)) if r.flipped else
                (None, r.message) for r in results]


class GreedyErasureFlipGenerator(ErasureGenerator):
    """Greedy erasure flip (baseline): rank the words by leave-one-out erasure, then erase the
    top 1, 2, ... words until the model's label changes; verified by one forward."""

    name = "Greedy erasure flip"

    def __init__(self, max_erasures: int | None = None, show_progress: bool = False):
        super().__init__(show_progress=show_progress)
        self.max_erasures = check_positive_int("max_erasures", max_erasures, allow_none=True)

    def config_spec(self) -> lit_types.Spec:
        return {
            TARGET_CLASS_KEY: lit_types.TextSegment(default="", required=False),
            UNITS_KEY: units_field(self.units),
            MAX_ERASURES_KEY: lit_types.TextSegment(
                default="" if self.max_erasures is None else str(self.max_erasures),
                required=False),
        }

    def run_method(self, model, tokenizer, texts, labels, config):
        from captum_erasure.attr.flip.greedy import greedy_flip
        target = class_index(config.get(TARGET_CLASS_KEY), labels, TARGET_CLASS_KEY)
        max_erasures = config_integer(config, MAX_ERASURES_KEY, self.max_erasures,
                                      empty_is_none=True)
        results = greedy_flip(model, texts, tokenizer=tokenizer, target=target,
                              max_erasures=max_erasures,
                              units=config_units(config, self.units),
                              show_progress=self.show_progress)
        return [(r.remaining_text, _erased_note(self.name, r)) if r.flipped else
                (None, r.message) for r in results]


class InputReductionGenerator(ErasureGenerator):
    """Input reduction (Feng et al., EMNLP 2018): repeatedly remove the least important word
    (gradient x input of the predicted label, or leave-one-out) while the model's label stays
    the same, with a beam over removals; the reduced text is verified by one forward."""

    name = "Input reduction"

    def __init__(self, beam_size: int = 3, importance: str = "gradient",
                 min_confidence: float = 0.0, max_evaluations: int = DEFAULT_MAX_EVALUATIONS,
                 show_progress: bool = False):
        super().__init__(show_progress=show_progress)
        if importance not in IMPORTANCES:
            raise ValueError(f"importance must be one of {IMPORTANCES}, got {importance!r}")
        self.beam_size = check_positive_int("beam_size", beam_size)
        self.importance = importance
        self.min_confidence = check_fraction("min_confidence", min_confidence)
        self.max_evaluations = check_positive_int("max_evaluations", max_evaluations)

    def config_spec(self) -> lit_types.Spec:
        return {
            UNITS_KEY: units_field(self.units),
            BEAM_KEY: lit_types.Integer(default=self.beam_size, min_val=1, max_val=20,
                                        required=False),
            IMPORTANCE_KEY: lit_types.CategoryLabel(vocab=list(IMPORTANCES),
                                                    default=self.importance, required=False),
            MIN_CONFIDENCE_KEY: lit_types.Scalar(default=self.min_confidence, min_val=0,
                                                 max_val=1, step=0.05, required=False),
            BUDGET_KEY: lit_types.Integer(default=self.max_evaluations, min_val=10,
                                          max_val=100000, required=False),
        }

    def run_method(self, model, tokenizer, texts, labels, config):
        from captum_erasure.attr.input_reduction import InputReduction
        beam = config_integer(config, BEAM_KEY, self.beam_size)
        budget = config_integer(config, BUDGET_KEY, self.max_evaluations)
        importance = config.get(IMPORTANCE_KEY) or self.importance
        if importance not in IMPORTANCES:
            raise ValueError(f"{IMPORTANCE_KEY!r} must be one of {list(IMPORTANCES)}, got "
                             f"{importance!r}")
        min_confidence = config_number(config, MIN_CONFIDENCE_KEY, self.min_confidence)
        if not 0 <= min_confidence <= 1:
            raise ValueError(f"{MIN_CONFIDENCE_KEY!r} must be in [0, 1], got {min_confidence}")
        results = InputReduction(model).reduce(
            texts, tokenizer=tokenizer, beam_size=beam, importance=importance,
            min_confidence=min_confidence or None, max_evaluations=budget,
            units=config_units(config, self.units), show_progress=self.show_progress)
        out = []
        for r in results:
            if not r.verified or not r.removal_path:
                out.append((None, r.message or ("no word could be removed keeping the label"
                            if r.verified else "the reduced text did not keep the label")))
                continue
            out.append((r.reduced_text,
                        f"{self.name}: kept {len(r.kept)} of {len(r.words)} words; "
                        f"{r.label_name} {r.original_confidence:.2f} -> {r.confidence:.2f}"
                        + (f" ({r.message})" if r.message else "")))
        return out


MINIMAL_ERASURE_NAME = "Minimal erasure flip (Li et al. 2016, REINFORCE)"
GREEDY_FLIP_NAME = "Greedy erasure flip (baseline)"
INPUT_REDUCTION_NAME = "Input reduction (Feng et al. 2018)"


def erasure_generators(minimal_erasure: Any = None, *, show_progress: bool = False
                       ) -> dict[str, lit_components.Generator]:
    """Our generators by UI name, to merge into a LIT server's generators.

    ``minimal_erasure``: an already fitted :class:`captum_erasure.MinimalErasure` (its policy is
    reused for its own model); by default an unfitted one (the policy only decides which words
    are probed in texts longer than 40 words).
    """
    return {
        MINIMAL_ERASURE_NAME: MinimalErasureFlipGenerator(minimal_erasure,
                                                          show_progress=show_progress),
        GREEDY_FLIP_NAME: GreedyErasureFlipGenerator(show_progress=show_progress),
        INPUT_REDUCTION_NAME: InputReductionGenerator(show_progress=show_progress),
    }
