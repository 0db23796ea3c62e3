"""VMASK (Chen & Ji 2020) as a LIT Salience Maps row: each word's keep probability under the
served model's trained VMASK layer (the mean over its word pieces). 1 = the model was trained
to rely on the word, 0 = to do without it; it does not depend on the class. The row is offered
only for models with a VMASK layer (``--vmask``, or ``--model DIR`` saved by
:func:`captum_erasure.save_vmask_classifier`).
"""

from __future__ import annotations

from lit_nlp.api import types as lit_types

from captum_erasure import VMask
from captum_erasure._core.text import encode_words, word_scores
from captum_erasure.models.vmask import word_mask_of
from lit_plugin.interpreters import WordSalienceInterpreter

VMASK_NAME = "VMASK (Chen & Ji 2020; keep probability)"


class VMaskInterpreter(WordSalienceInterpreter):
    """Keep probability of each word under the model's VMASK layer (no classifier forward)."""

    name = VMASK_NAME

    def __init__(self, autorun: bool = True, show_progress: bool = False):
        super().__init__(autorun=autorun, show_progress=show_progress)

    def is_compatible(self, model, dataset) -> bool:
        torch_model = getattr(model, "model", None)
        return super().is_compatible(model, dataset) and torch_model is not None and \
            word_mask_of(torch_model) is not None

    def meta_spec(self) -> lit_types.Spec:
        return {"saliency": lit_types.TokenSalience(autorun=self.autorun, signed=False)}

    def explain(self, model, tokenizer, texts, target, config):
        encoding, mask = encode_words(model, tokenizer, texts)
        attributions = VMask(model).attribute(
            encoding["input_ids"], additional_forward_args=(encoding["attention_mask"],),
            feature_mask=mask, show_progress=self.show_progress)
        return word_scores(encoding, mask, attributions, texts)
