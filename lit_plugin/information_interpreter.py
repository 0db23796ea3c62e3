"""Guan et al.'s (2019) information measure as a LIT Salience Maps row.

Per request, the noise scale of every word's embedding is learned so that the chosen layer's
representation barely moves while the noise is as large as possible (no fitting ahead of time;
cost: ``steps`` forward and backward passes per batch of texts). A word's value is the
information the layer keeps of it, in nats per embedding dimension: higher = used more,
negative = discarded.
"""

from __future__ import annotations

from lit_nlp.api import types as lit_types

from captum_erasure import WordInformation
from captum_erasure._core.text import encode_words, word_scores
from lit_plugin._common import config_integer
from lit_plugin.interpreters import WordSalienceInterpreter

INFORMATION_NAME = "Information kept (Guan et al. 2019)"
LAYER_KEY = "Layer (0 = embeddings, -1 = last, pooled)"
STEPS_KEY = "Optimisation steps"
DEFAULT_STEPS = 100


def information_layer(value: object) -> int | str:
    """A layer field: ``pooled`` or an integer (negative counts from the last layer)."""
    if value in (None, ""):
        return -1
    text = str(value).strip()
    if text == "pooled":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{LAYER_KEY!r} must be an integer layer or 'pooled', got "
                         f"{value!r}") from None


class WordInformationInterpreter(WordSalienceInterpreter):
    """Information kept per word at a layer of the model (unsigned; not run automatically)."""

    name = INFORMATION_NAME

    def __init__(self, layer: int | str = -1, steps: int = DEFAULT_STEPS, seed: int = 0,
                 autorun: bool = False, show_progress: bool = False):
        super().__init__(autorun=autorun, show_progress=show_progress)
        self.layer, self.steps, self.seed = information_layer(layer), steps, seed

    def meta_spec(self) -> lit_types.Spec:
        return {"saliency": lit_types.TokenSalience(autorun=self.autorun, signed=False)}

    def config_spec(self) -> lit_types.Spec:
        return {**super().config_spec(),
                LAYER_KEY: lit_types.TextSegment(default=str(self.layer), required=False),
                STEPS_KEY: lit_types.Scalar(min_val=1, max_val=1000, step=1,
                                            default=self.steps, required=False)}

    def explain(self, model, tokenizer, texts, target, config):
        del target  # a layer's representation has no class: the measure ignores the target
        layer = information_layer(config.get(LAYER_KEY, self.layer))
        steps = config_integer(config, STEPS_KEY, self.steps)
        method = WordInformation(model, layer=layer, n_steps=steps, seed=self.seed)
        units = self.units_of(config)
        encoding, mask = encode_words(model, tokenizer, texts, units)
        attributions = method.attribute(
            encoding["input_ids"], additional_forward_args=(encoding["attention_mask"],),
            feature_mask=mask, show_progress=self.show_progress)
        return word_scores(encoding, mask, attributions, texts, units)
