"""Our LIT interpreters and generators inside a real LIT app, in process (no socket): the WSGI
app from ``server_type='external'`` driven by werkzeug's test client, on toy models."""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest
from lit_nlp.api import model as lit_model
from lit_nlp.api import types as lit_types
from mlm_toys import toy_classifier, toy_mlm, toy_tokenizer
from werkzeug.test import Client

from captum_erasure import InputMarginalization, MinimalErasure, explain_texts, word_feature_mask
from lit_plugin import (
    HFSequenceClassifier,
    erasure_generators,
    erasure_interpreters,
    make_app,
    text_dataset,
)
from lit_plugin.generators import (
    BUDGET_KEY,
    GREEDY_FLIP_NAME,
    INPUT_REDUCTION_NAME,
    MINIMAL_ERASURE_NAME,
)
from lit_plugin.interpreters import (
    FLIP_SET_NAME,
    MARGINALIZATION_NAME,
    REDUCTION_ORDER_NAME,
    WORD_ERASURE_NAME,
)

TEXTS = ["the film is unbelievable !", "a very dull movie", "not good", "the plot was fun and good"]
LABELS = ["LABEL_0", "LABEL_1", "LABEL_2"]
OURS = [WORD_ERASURE_NAME, MARGINALIZATION_NAME, FLIP_SET_NAME, REDUCTION_ORDER_NAME]
GENERATORS = [MINIMAL_ERASURE_NAME, GREEDY_FLIP_NAME, INPUT_REDUCTION_NAME]


@pytest.fixture(scope="module")
def toys():
    return toy_classifier(), toy_tokenizer(), toy_mlm()


@pytest.fixture(scope="module")
def client(toys):
    classifier, tokenizer, mlm = toys
    models = {"toy": HFSequenceClassifier(classifier, tokenizer)}
    datasets = {"toy_data": text_dataset(TEXTS, ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_0"],
                                         label_vocab=LABELS)}
    return Client(make_app(models, datasets, mlm=mlm, mlm_tokenizer=tokenizer))


def post(client, path, body=None, **query):
    url = f"/{path}?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    response = client.post(url, data=json.dumps(body or {}),
                           headers={"Content-Type": "application/json"})
    return response


def ok(response):
    assert response.status_code == 200, response.get_data(as_text=True)[-2000:]
    return json.loads(response.get_data(as_text=True))


@pytest.fixture(scope="module")
def dataset(client):
    return ok(post(client, "get_dataset", dataset_name="toy_data"))


def interpret(client, example_id, name, config=...):
    body = {"inputs": [example_id]}
    if config is not ...:
        body["config"] = config
    return ok(post(client, "get_interpretations", body, model="toy", dataset_name="toy_data",
                   interpreter=name, do_predict=1))[0]


def test_get_info_lists_ours_beside_lits_own(client):
    info = ok(post(client, "get_info"))
    model_info = info["models"]["toy"]
    for name in OURS + ["Integrated Gradients", "LIME", "Grad L2 Norm"]:
        assert name in model_info["interpreters"]
    for name in GENERATORS + ["Ablation Flip", "Hotflip", "Word Replacer"]:
        assert name in info["generators"]
    # every config field is optional, and the Salience module sees a TokenSalience, signed
    # except the reduction order (values in (0, 1], drawn on LIT's unsigned map)
    for name in OURS:
        spec = info["interpreters"][name]
        assert all(not field["required"] for field in spec["configSpec"].values())
        assert spec["metaSpec"]["saliency"]["__name__"] == "TokenSalience"
        assert spec["metaSpec"]["saliency"]["signed"] is (name != REDUCTION_ORDER_NAME)
    for name in GENERATORS:
        assert all(not f["required"] for f in info["generators"][name]["configSpec"].values())


def pieces_of(tokens):
    return "".join(t[2:] if t.startswith("##") else t for t in tokens)


@pytest.mark.parametrize("name", OURS)
def test_interpretations_are_word_level_token_salience(client, dataset, name):
    example = dataset[0]
    result = interpret(client, example["id"], name,
                       {"_salience_target": {"field": "probas", "index": 1}})
    salience = result["text"]
    assert salience["__name__"] == "TokenSalience"
    assert salience["tokens"] == ["the", "film", "is", "unbelievable", "!"]
    assert len(salience["salience"]) == 5 and np.isfinite(salience["salience"]).all()
    # the words are the model's own tokens, sub-word pieces grouped
    (preds,) = ok(post(client, "get_preds", {"inputs": [example["id"]]}, model="toy",
                       dataset_name="toy_data", requested_types="Tokens"))
    assert pieces_of(preds["tokens"]) == "".join(salience["tokens"])


def test_word_erasure_scores_are_captum_erasure_s_for_the_chosen_class(client, dataset, toys):
    classifier, tokenizer, _ = toys
    example = dataset[1]
    for index in (0, 2):
        result = interpret(client, example["id"], WORD_ERASURE_NAME,
                           {"_salience_target": {"field": "probas", "index": index}})
        (expected,) = explain_texts(classifier, tokenizer, [TEXTS[1]], target=index)
        np.testing.assert_allclose(result["text"]["salience"], expected.scores, rtol=1e-9)
    # a request without config explains the predicted class
    result = interpret(client, example["id"], WORD_ERASURE_NAME)
    (expected,) = explain_texts(classifier, tokenizer, [TEXTS[1]])
    np.testing.assert_allclose(result["text"]["salience"], expected.scores, rtol=1e-9)
    # the score option
    result = interpret(client, example["id"], WORD_ERASURE_NAME, {"Score": "prob_diff"})
    (expected,) = explain_texts(classifier, tokenizer, [TEXTS[1]], score="prob_diff")
    np.testing.assert_allclose(result["text"]["salience"], expected.scores, rtol=1e-9)


def test_marginalization_scores_are_input_marginalization_s(client, dataset, toys):
    classifier, tokenizer, mlm = toys
    example = dataset[0]
    result = interpret(client, example["id"], MARGINALIZATION_NAME,
                       {"_salience_target": {"field": "probas", "index": 2},
                        "MLM probability threshold (sigma)": "1e-5",
                        "Max candidates per token (0 = no limit)": 0})
    enc = tokenizer([TEXTS[0]], return_tensors="pt")
    attr = InputMarginalization(classifier, mlm, tokenizer=tokenizer).attribute(
        enc["input_ids"], target=2, additional_forward_args=(enc["attention_mask"],),
        feature_mask=word_feature_mask(enc), threshold=1e-5)
    # tokens: [CLS] the film is un ##believ ##able ! [SEP]; a word's score sits on each piece
    expected = attr[0, [1, 2, 3, 4, 7]].tolist()
    np.testing.assert_allclose(result["text"]["salience"], expected, rtol=1e-6)
    # without config: the UI defaults, explaining the prediction
    default = interpret(client, example["id"], MARGINALIZATION_NAME)
    assert len(default["text"]["salience"]) == 5


def test_flip_set_and_reduction_order_rows_mean_what_they_say(client, dataset, toys):
    classifier, tokenizer, _ = toys
    model = HFSequenceClassifier(classifier, tokenizer)

    def label_of(text):
        (out,) = model.predict([{"text": text}])
        return int(np.argmax(out["probas"]))

    checked = 0
    for example in dataset:
        text = example["data"]["text"]
        flip_set = interpret(client, example["id"], FLIP_SET_NAME)["text"]
        assert set(flip_set["salience"]) <= {0.0, 1.0}
        kept = [w for w, s in zip(flip_set["tokens"], flip_set["salience"]) if s == 0]
        if 1.0 in flip_set["salience"]:  # erasing the marked words flips the label
            assert label_of(" ".join(kept)) != label_of(text)
            checked += 1
        order = interpret(client, example["id"], REDUCTION_ORDER_NAME)["text"]
        survivors = [w for w, s in zip(order["tokens"], order["salience"]) if s == 1.0]
        assert survivors and label_of(" ".join(survivors)) == label_of(text)
        # removed at step k of m: k / (m + 1), spread over (0, 1) for LIT's colour map
        m = len(order["tokens"]) - len(survivors)
        assert sorted(order["salience"])[:m] == [k / (m + 1) for k in range(1, m + 1)]
    assert checked
    # input reduction explains the prediction only: another class is a clear error
    predicted = label_of(TEXTS[0])
    response = post(client, "get_interpretations",
                    {"inputs": [dataset[0]["id"]],
                     "config": {"_salience_target": {"field": "probas",
                                                     "index": (predicted + 1) % 3}}},
                    model="toy", dataset_name="toy_data", interpreter=REDUCTION_ORDER_NAME)
    assert response.status_code == 500
    assert "keeps the model's own prediction" in response.get_data(as_text=True)


def generate(client, example, name, config=...):
    body = {"inputs": [example]}
    if config is not ...:
        body["config"] = config
    return ok(post(client, "get_generated", body, model="toy", dataset_name="toy_data",
                   generator=name))


def predicted_class(client, example_or_id):
    (preds,) = ok(post(client, "get_preds", {"inputs": [example_or_id]}, model="toy",
                       dataset_name="toy_data", requested_types="MulticlassPreds"))
    return int(np.argmax(preds["probas"]))


@pytest.mark.parametrize("name", [MINIMAL_ERASURE_NAME, GREEDY_FLIP_NAME])
def test_generated_flips_really_change_the_prediction(client, dataset, name):
    flipped_any = False
    for example in dataset:
        # what the generator module sends: the full example and model/dataset names
        (generated,) = generate(client, example, name,
                                {"model_name": "toy", "dataset_name": "toy_data"})
        for new in generated:
            flipped_any = True
            data = new["data"]
            assert data["_id"] == "" and data["_meta"]["parentId"] == example["id"]
            assert data["text"] != example["data"]["text"]
            assert set(data["text"].split()) <= set(example["data"]["text"].split())
            # a new datapoint, predicted afresh (the cache cannot answer with the parent's)
            new_input = {"id": "", "data": data, "meta": data["_meta"]}
            assert predicted_class(client, new_input) != predicted_class(client, example["id"])
    assert flipped_any


def test_input_reduction_keeps_the_prediction_and_works_without_config(client, dataset):
    example = dataset[3]
    (generated,) = generate(client, example, INPUT_REDUCTION_NAME)
    (new,) = generated
    reduced = new["data"]["text"]
    assert len(reduced.split()) < len(example["data"]["text"].split())
    new_input = {"id": "", "data": new["data"], "meta": new["data"]["_meta"]}
    assert predicted_class(client, new_input) == predicted_class(client, example["id"])


def test_reduction_order_row_spreads_the_removal_order_over_0_1(toys):
    """The row read through the interpreter: word removed at step k of m -> k / (m + 1),
    survivors 1, exactly the path InputReduction.reduce finds; declared unsigned."""
    from captum_erasure import InputReduction
    from lit_plugin.interpreters import InputReductionOrderInterpreter
    classifier, tokenizer, _ = toys
    interpreter = InputReductionOrderInterpreter()
    assert interpreter.meta_spec()["saliency"].signed is False
    model = HFSequenceClassifier(classifier, tokenizer)
    rows = interpreter.run([{"text": t} for t in TEXTS], model, None)
    results = InputReduction(classifier, beam_size=3).reduce(TEXTS, tokenizer=tokenizer)
    spread = 0
    for row, result in zip(rows, results):
        salience = row["text"]
        m = len(result.removal_path)
        expected = [1.0] * len(result.words)
        for step, word in enumerate(result.removal_path, start=1):
            expected[word] = step / (m + 1)
        assert salience.tokens == result.words
        assert list(salience.salience) == expected
        assert 0 < min(salience.salience) and max(salience.salience) == 1.0
        spread += len(set(salience.salience)) > 2
    assert spread  # some text has more than one removal step: values differ


class _NoTorchModel(lit_model.BatchedModel):
    """A LIT classifier with no PyTorch model behind it."""

    def input_spec(self):
        return {"text": lit_types.TextSegment()}

    def output_spec(self):
        return {"probas": lit_types.MulticlassPreds(vocab=["a", "b"])}

    def predict_minibatch(self, inputs, **unused):
        return [{"probas": np.array([0.5, 0.5])} for _ in inputs]


class _NoTextModel(_NoTorchModel):
    """Has a PyTorch model and tokenizer but reads no text field."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def input_spec(self):
        return {"ids": lit_types.Tokens()}


def test_incompatible_models_get_clear_errors_and_are_not_offered(toys):
    classifier, tokenizer, mlm = toys
    models = {"no_torch": _NoTorchModel(), "no_text": _NoTextModel(classifier, tokenizer),
              "toy": HFSequenceClassifier(classifier, tokenizer)}
    app = make_app(models, {"toy_data": text_dataset(TEXTS)}, mlm=mlm, mlm_tokenizer=tokenizer)
    client = Client(app)
    info = ok(post(client, "get_info"))
    for name in OURS:
        assert name not in info["models"]["no_torch"]["interpreters"]
        assert name in info["models"]["toy"]["interpreters"]
    dataset = ok(post(client, "get_dataset", dataset_name="toy_data"))
    response = post(client, "get_interpretations", {"inputs": [dataset[0]["id"]]},
                    model="no_torch", dataset_name="toy_data", interpreter=WORD_ERASURE_NAME)
    assert response.status_code == 500
    assert "exposes no PyTorch `.model`" in response.get_data(as_text=True)
    # the generator module offers every generator: ours refuse with the reason
    response = post(client, "get_generated", {"inputs": [dataset[0]]}, model="no_torch",
                    dataset_name="toy_data", generator=GREEDY_FLIP_NAME)
    assert response.status_code == 500
    assert "cannot explain this model" in response.get_data(as_text=True)
    # and the server keeps answering
    assert post(client, "get_info").status_code == 200
    interpreter = erasure_interpreters()[WORD_ERASURE_NAME]
    assert not interpreter.is_compatible(models["no_text"], None)
    with pytest.raises(ValueError, match=r"no text \(TextSegment\) input field"):
        interpreter.run([{"ids": ["a"]}], models["no_text"], None)
    generator = erasure_generators()[MINIMAL_ERASURE_NAME]
    with pytest.raises(ValueError, match="no text"):
        generator.generate({"ids": ["a"]}, models["no_text"], None)


def test_bad_requests_name_the_problem(toys):
    classifier, tokenizer, _ = toys
    model = HFSequenceClassifier(classifier, tokenizer)
    interpreter = erasure_interpreters()[WORD_ERASURE_NAME]
    with pytest.raises(ValueError, match="empty or whitespace-only"):
        interpreter.run([{"text": "   "}], model, None)
    with pytest.raises(ValueError, match="outside the model's class range"):
        interpreter.run([{"text": "good"}], model, None,
                        config={"_salience_target": {"field": "probas", "index": 7}})
    with pytest.raises(ValueError, match="'Score' must be one of"):
        interpreter.run([{"text": "good"}], model, None, config={"Score": "bogus"})
    # no MLM: no marginalization
    assert MARGINALIZATION_NAME not in erasure_interpreters()
    assert MARGINALIZATION_NAME in erasure_interpreters(lambda: (None, None))


def test_minimal_erasure_generator_honours_its_budget(toys):
    classifier, tokenizer, _ = toys
    model = HFSequenceClassifier(classifier, tokenizer)
    explainer = MinimalErasure(classifier, seed=0)
    generator = erasure_generators(explainer)[MINIMAL_ERASURE_NAME]
    for budget in (3, 75):
        generated = generator.generate({"text": TEXTS[0]}, model, None,
                                       config={BUDGET_KEY: budget})
        rows = explainer.last_stats.rows
        [expected] = explainer.explain(TEXTS[0], tokenizer=tokenizer, max_evaluations=budget)
        assert explainer.last_stats.rows == rows
        assert [g["text"] for g in generated] == \
            ([expected.remaining_text] if expected.flipped else [])


def test_information_row_is_word_information_at_the_chosen_layer(client, dataset, toys):
    from captum_erasure import WordInformation
    from lit_plugin.information_interpreter import INFORMATION_NAME, LAYER_KEY, STEPS_KEY

    classifier, tokenizer, _ = toys
    example = dataset[3]
    enc = tokenizer([TEXTS[3]], return_tensors="pt")
    mask = word_feature_mask(enc)
    for layer, config in ((-1, {STEPS_KEY: 5}), ("pooled", {LAYER_KEY: "pooled", STEPS_KEY: 5})):
        result = interpret(client, example["id"], INFORMATION_NAME, config)
        attr = WordInformation(classifier, layer=layer, n_steps=5).attribute(
            enc["input_ids"], additional_forward_args=(enc["attention_mask"],), feature_mask=mask)
        first = [int((mask[0] == f).nonzero()[0]) for f in range(int(mask.max()) + 1)]
        np.testing.assert_allclose(result["text"]["salience"], attr[0, first].tolist(), rtol=1e-6)
        assert result["text"]["tokens"] == TEXTS[3].split()
    response = post(client, "get_interpretations", {"inputs": [example["id"]],
                                                   "config": {LAYER_KEY: "top"}},
                    model="toy", dataset_name="toy_data", interpreter=INFORMATION_NAME)
    assert response.status_code != 200 and LAYER_KEY in response.get_data(as_text=True)


def test_every_row_and_generator_offers_units_and_whitespace_units_are_the_library_s(toys):
    from captum_erasure import greedy_flip
    from lit_plugin._common import UNITS_KEY
    classifier, tokenizer, mlm = toys
    model = HFSequenceClassifier(classifier, tokenizer)
    interpreters = erasure_interpreters(mlm, tokenizer)
    generators = erasure_generators()
    for component in [*interpreters.values(), *generators.values()]:
        field = component.config_spec()[UNITS_KEY]
        assert (field.vocab, field.default) == (["words", "whitespace"], "words"), component
    text = "the film is unbelievable !"
    spaces = {UNITS_KEY: "whitespace"}
    [row] = interpreters[WORD_ERASURE_NAME].run([{"text": text}], model, None, config=spaces)
    [expected] = explain_texts(classifier, tokenizer, text, units="whitespace")
    assert row["text"].tokens == expected.words == ["the", "film", "is", "unbelievable", "!"]
    assert row["text"].salience == expected.scores
    glued = "the film is unbelievable!"
    [row] = interpreters[FLIP_SET_NAME].run([{"text": glued}], model, None, config=spaces)
    assert row["text"].tokens == ["the", "film", "is", "unbelievable!"]
    [row] = interpreters[FLIP_SET_NAME].run([{"text": glued}], model, None)
    assert row["text"].tokens == ["the", "film", "is", "unbelievable", "!"]
    generated = generators[GREEDY_FLIP_NAME].generate({"text": glued}, model, None,
                                                      config=spaces)
    [flip] = greedy_flip(classifier, glued, tokenizer=tokenizer, units="whitespace")
    assert flip.flipped and [g["text"] for g in generated] == [flip.remaining_text]
    with pytest.raises(ValueError, match=r"'Units .*' must be one of \['words', 'whitespace'\]"):
        interpreters[WORD_ERASURE_NAME].run([{"text": text}], model, None,
                                            config={UNITS_KEY: "sentences"})
