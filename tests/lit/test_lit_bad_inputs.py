"""The LIT adapters get the core's bad-input checks (requirement 5 of the core issue): a model
with one output is refused by the model wrapper and by every interpreter and generator, and
config values such as inf or abc are errors that name the field."""

from __future__ import annotations

import numpy as np
import pytest
from lit_nlp.api import model as lit_model
from lit_nlp.api import types as lit_types
from mlm_toys import toy_classifier, toy_mlm, toy_tokenizer

from lit_plugin import HFSequenceClassifier, erasure_generators, erasure_interpreters
from lit_plugin.generators import (
    BEAM_KEY,
    BUDGET_KEY,
    GREEDY_FLIP_NAME,
    INPUT_REDUCTION_NAME,
    MAX_ERASURES_KEY,
    MIN_CONFIDENCE_KEY,
    MINIMAL_ERASURE_NAME,
    GreedyErasureFlipGenerator,
    InputReductionGenerator,
    MinimalErasureFlipGenerator,
)
from lit_plugin.interpreters import (
    FLIP_SET_NAME,
    MARGINALIZATION_NAME,
    REDUCTION_ORDER_NAME,
    THRESHOLD_KEY,
    TOP_K_KEY,
    WORD_ERASURE_NAME,
)

TEXT = "the film is unbelievable !"


@pytest.fixture(scope="module")
def toys():
    return toy_classifier(), toy_tokenizer(), toy_mlm()


class _OneOutputModel(lit_model.BatchedModel):
    """A LIT model (not ours) over a regression head: one 'class' in its MulticlassPreds."""

    def __init__(self, model, tokenizer, vocab=("score",)):
        self.model, self.tokenizer, self.vocab = model, tokenizer, list(vocab)

    def input_spec(self):
        return {"text": lit_types.TextSegment()}

    def output_spec(self):
        return {"probas": lit_types.MulticlassPreds(vocab=self.vocab)}

    def predict_minibatch(self, inputs, **unused):
        return [{"probas": np.ones(len(self.vocab)) / len(self.vocab)} for _ in inputs]


def test_the_model_wrapper_refuses_a_one_output_model(toys):
    _, tokenizer, _ = toys
    regression = toy_classifier(num_labels=1)
    # before: probas=[1.0] for every text
    with pytest.raises(ValueError, match="HFSequenceClassifier needs class probabilities"):
        HFSequenceClassifier(regression, tokenizer)
    with pytest.raises(ValueError, match="HFSequenceClassifier needs class probabilities"):
        HFSequenceClassifier(regression, tokenizer, labels=["score"])


@pytest.mark.parametrize("vocab", [("score",), ("neg", "neu", "pos")], ids=["1", "3"])
def test_every_component_refuses_a_one_output_model(toys, vocab):
    _, tokenizer, mlm = toys
    regression = toy_classifier(num_labels=1)
    model = _OneOutputModel(regression, tokenizer, vocab)
    interpreters = erasure_interpreters(mlm, tokenizer)
    generators = erasure_generators()
    for name, component in [*interpreters.items(), *generators.items()]:
        assert not component.is_compatible(model, None), name
        with pytest.raises(ValueError, match="cannot explain this model.*single output"):
            if name in interpreters:
                component.run([{"text": TEXT}], model, None)
            else:
                component.generate({"text": TEXT}, model, None)


@pytest.mark.parametrize("name", [FLIP_SET_NAME, REDUCTION_ORDER_NAME])
def test_flip_and_reduction_rows_get_the_core_refusal(toys, name):
    # below the compatibility check the methods themselves refuse (before: numbers)
    _, tokenizer, _ = toys
    regression = toy_classifier(num_labels=1)
    interpreter = erasure_interpreters()[name]
    with pytest.raises(ValueError, match="needs class probabilities"):
        interpreter.explain(regression, tokenizer, [TEXT], None, {})


BAD_INTEGERS = [float("inf"), "inf", "abc", 0, "0", -1, 2.5, "2.5", float("nan")]
BAD_FRACTIONS = [float("inf"), "inf", "abc", -1, 2.5, "nan"]


def _component(kind, name, mlm, tokenizer):
    if kind == "interpreter":
        return erasure_interpreters(mlm, tokenizer)[name]
    return erasure_generators()[name]


@pytest.mark.parametrize("kind,name,key,values", [
    ("generator", MINIMAL_ERASURE_NAME, BUDGET_KEY, BAD_INTEGERS),
    ("generator", GREEDY_FLIP_NAME, MAX_ERASURES_KEY, BAD_INTEGERS),
    ("generator", INPUT_REDUCTION_NAME, BEAM_KEY, BAD_INTEGERS),
    ("generator", INPUT_REDUCTION_NAME, BUDGET_KEY, BAD_INTEGERS),
    ("generator", INPUT_REDUCTION_NAME, MIN_CONFIDENCE_KEY, BAD_FRACTIONS),
    ("interpreter", MARGINALIZATION_NAME, TOP_K_KEY, BAD_INTEGERS),
    ("interpreter", MARGINALIZATION_NAME, THRESHOLD_KEY, BAD_FRACTIONS),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_config_values_name_the_field(toys, kind, name, key, values):
    classifier, tokenizer, mlm = toys
    model = HFSequenceClassifier(classifier, tokenizer)
    component = _component(kind, name, mlm, tokenizer)
    for value in values:
        with pytest.raises(ValueError, match=f"'{key}'".replace("(", r"\(").replace(")", r"\)")):
            if kind == "interpreter":
                component.run([{"text": TEXT}], model, None, config={key: value})
            else:
                component.generate({"text": TEXT}, model, None, config={key: value})


def test_empty_is_the_only_no_limit_and_constructors_check_their_options(toys):
    classifier, tokenizer, mlm = toys
    model = HFSequenceClassifier(classifier, tokenizer)
    greedy = erasure_generators()[GREEDY_FLIP_NAME]
    assert greedy.generate({"text": TEXT}, model, None, config={MAX_ERASURES_KEY: ""}) == \
        greedy.generate({"text": TEXT}, model, None, config={MAX_ERASURES_KEY: "50"})
    marginalization = erasure_interpreters(mlm, tokenizer)[MARGINALIZATION_NAME]
    marginalization.run([{"text": TEXT}], model, None, config={TOP_K_KEY: ""})
    for make, option in [(lambda: GreedyErasureFlipGenerator(max_erasures=0), "max_erasures"),
                         (lambda: InputReductionGenerator(beam_size=0), "beam_size"),
                         (lambda: InputReductionGenerator(min_confidence=2.0), "min_confidence"),
                         (lambda: MinimalErasureFlipGenerator(max_evaluations=-1),
                          "max_evaluations"),
                         (lambda: HFSequenceClassifier(classifier, tokenizer, max_length=0.5),
                          "max_length")]:
        with pytest.raises(ValueError, match=option):
            make()
    assert WORD_ERASURE_NAME in erasure_interpreters()
