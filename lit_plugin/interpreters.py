"""Our word-level attribution methods as LIT interpreters (Salience Maps rows).

Each interpreter is a thin wrapper around a ``captum_erasure`` method: it finds the Hugging Face
model and tokenizer behind the LIT model (:class:`lit_plugin.model.HFSequenceClassifier`, or
any LIT model exposing ``.model`` and ``.tokenizer``), reads the class to explain from the
Salience module's ``_salience_target`` (falling back to the model's prediction), and returns one
signed ``TokenSalience`` over the words of the text (sub-word pieces of one word grouped by the
tokenizer's ``word_ids``, cut from the text by character offsets).

Every config field is ``required=False`` with a default, so the Salience module's automatic
first request (which sends only ``_salience_target``) and API requests without a config work.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Sequence

import torch
from lit_nlp.api import components as lit_components
from lit_nlp.api import dtypes
from lit_nlp.api import types as lit_types
from lit_nlp.lib import utils as lit_utils
from torch import nn

from captum_erasure._core.forwards import pad_token_id_of
from captum_erasure._core.inputs import check_positive_int
from captum_erasure._core.scores import SCORES
from captum_erasure._core.text import (
    check_text,
    check_units,
    encode_words,
    word_scores,
)
from captum_erasure.attr.marginalization import InputMarginalization
from captum_erasure.attr.word_erasure import MODES
from captum_erasure.explain.texts import explain_texts
from lit_plugin._common import (
    UNITS_KEY,
    config_choice,
    config_integer,
    config_number,
    config_units,
    units_field,
)

TARGET_KEY = "_salience_target"
SCORE_KEY = "Score"
ERASE_KEY = "Erase words by"
THRESHOLD_KEY = "MLM probability threshold (sigma)"
# Empty is "no limit"; 0 is an error (it never means "no limit").
TOP_K_KEY = "Max candidates per token (empty = no limit)"

# Input marginalization defaults for interactive use (the paper: sigma 1e-5, no limit; Kim et
# al.'s Table 3 gives r = 0.993 with full marginalization at sigma 1e-3 for BERT).
UI_THRESHOLD = 1e-3
UI_TOP_K = 50

# the library's scores and modes; output_diff is left out: it has no class to explain
WORD_SCORES = tuple(name for name in SCORES if name != "output_diff")
ERASE_MODES = MODES


# -- finding the model behind LIT's wrappers ------------------------------------------------------
def unwrap(model: Any) -> Any:
    """The model under LIT's ``CachingModelWrapper``/``ModelWrapper`` layers."""
    seen = 0
    while hasattr(model, "wrapped") and seen < 10:
        model = model.wrapped
        seen += 1
    return model


def hf_backend(model: Any) -> tuple[nn.Module, Any] | None:
    """``(torch model, fast tokenizer)`` behind a LIT model, or None when it has none."""
    inner = unwrap(model)
    torch_model = getattr(inner, "model", None)
    tokenizer = getattr(inner, "tokenizer", None)
    if not isinstance(torch_model, nn.Module) or not getattr(tokenizer, "is_fast", False):
        return None
    return torch_model, tokenizer


def text_field_of(model: Any) -> str | None:
    """The text field the model reads: its ``text_field`` or its first ``TextSegment`` input."""
    inner = unwrap(model)
    spec = model.input_spec()
    field = getattr(inner, "text_field", None)
    if field in spec and isinstance(spec[field], lit_types.TextSegment):
        return field
    fields = lit_utils.find_spec_keys(spec, lit_types.TextSegment)
    return fields[0] if fields else None


def preds_field_of(model: Any) -> str | None:
    fields = lit_utils.find_spec_keys(model.output_spec(), lit_types.MulticlassPreds)
    return fields[0] if fields else None


def incompatibility(model: Any) -> str | None:
    """Why our interpreters and generators cannot serve ``model`` (None when they can)."""
    if hf_backend(model) is None:
        return (f"{type(unwrap(model)).__name__} exposes no PyTorch `.model` with a fast "
                "`.tokenizer`; wrap Hugging Face classifiers with lit_plugin.HFSequenceClassifier")
    if text_field_of(model) is None:
        return "the model has no text (TextSegment) input field"
    if preds_field_of(model) is None:
        return "the model has no class-probability (MulticlassPreds) output"
    torch_model = hf_backend(model)[0]
    n_outputs = getattr(getattr(torch_model, "config", None), "num_labels", None)
    if _n_classes(model) == 1 or n_outputs == 1:  # 0: unknown, left to the methods
        return ("the model has a single output (a regression head, num_labels=1?); these "
                "methods need class probabilities")
    return None


def check_compatible(model: Any, component: str) -> tuple[nn.Module, Any, str]:
    """``(torch model, tokenizer, text field)``, or a ValueError naming the problem."""
    problem = incompatibility(model)
    if problem:
        raise ValueError(f"{component} cannot explain this model: {problem}")
    torch_model, tokenizer = hf_backend(model)
    return torch_model, tokenizer, text_field_of(model)


def texts_of(inputs: Sequence[dict], text_field: str, component: str) -> list[str]:
    texts = []
    for position, example in enumerate(inputs):
        if text_field not in example:
            raise ValueError(f"{component}: example {position} has no {text_field!r} field")
        texts.append(check_text(example[text_field], position))
    return texts


def salience_target(config: dict | None, n_classes: int) -> int | None:
    """The class chosen in the Salience module, or None (explain the prediction)."""
    target = (config or {}).get(TARGET_KEY) or {}
    index = target.get("index") if isinstance(target, dict) else None
    if index is None or index == "":
        return None
    index = int(index)
    if not 0 <= index < n_classes:
        raise ValueError(f"salience target {index} is outside the model's class range "
                         f"[0, {n_classes - 1}]")
    return index


def _n_classes(model: Any) -> int:
    return len(model.output_spec()[preds_field_of(model)].vocab or []) or \
        int(getattr(getattr(hf_backend(model)[0], "config", None), "num_labels", 0) or 0)


# -- base ---------------------------------------------------------------------------------------
class WordSalienceInterpreter(lit_components.Interpreter):
    """Common LIT plumbing: compatibility, target, text field, result format."""

    name = "word salience"

    def __init__(self, autorun: bool = False, show_progress: bool = False,
                 units: str = "words"):
        self.autorun = autorun
        self.show_progress = show_progress
        self.units = check_units(units)

    def is_compatible(self, model, dataset) -> bool:
        del dataset
        return incompatibility(model) is None

    def meta_spec(self) -> lit_types.Spec:
        return {"saliency": lit_types.TokenSalience(autorun=self.autorun, signed=True)}

    def config_spec(self) -> lit_types.Spec:
        return {TARGET_KEY: lit_types.SalienceTargetInfo(required=False),
                UNITS_KEY: units_field(self.units)}

    def units_of(self, config: dict) -> str:
        """The units chosen in the config (default: the constructor's ``units``)."""
        return config_units(config, self.units)

    def run(self, inputs, model, dataset, model_outputs=None, config=None):
        del dataset, model_outputs
        torch_model, tokenizer, text_field = check_compatible(model, self.name)
        config = config or {}
        texts = texts_of(inputs, text_field, self.name)
        if not texts:
            return []
        target = salience_target(config, _n_classes(model))
        words_and_scores = self.explain(torch_model, tokenizer, texts, target, config)
        return [{text_field: dtypes.TokenSalience(list(words), [float(s) for s in scores])}
                for words, scores in words_and_scores]

    def explain(self, model: nn.Module, tokenizer: Any, texts: list[str], target: int | None,
                config: dict) -> list[tuple[list[str], list[float]]]:
        raise NotImplementedError


# -- word erasure -------------------------------------------------------------------------------
class WordErasureInterpreter(WordSalienceInterpreter):
    """Word erasure (Li, Monroe & Jurafsky 2016, Eq. 1): each word is erased in turn and its
    score is the relative drop of the explained class's log-probability,
    (log P(c|x) - log P(c|x without the word)) / (-log P(c|x)). Positive: erasing the word
    hurts the class; negative: the model is more confident without it. n+1 forward passes.
    """

    name = "Word erasure"

    def __init__(self, autorun: bool = True, score: str = "eq1", mode: str = "delete",
                 batch_size: int = 64, show_progress: bool = False):
        super().__init__(autorun=autorun, show_progress=show_progress)
        if score not in WORD_SCORES:
            raise ValueError(f"score must be one of {WORD_SCORES}, got {score!r}")
        if mode not in ERASE_MODES:
            raise ValueError(f"mode must be one of {ERASE_MODES}, got {mode!r}")
        self.score, self.mode = score, mode
        self.batch_size = check_positive_int("batch_size", batch_size)

    def config_spec(self) -> lit_types.Spec:
        return {
            **super().config_spec(),
            SCORE_KEY: lit_types.CategoryLabel(vocab=list(WORD_SCORES), default=self.score,
                                               required=False),
            ERASE_KEY: lit_types.CategoryLabel(vocab=list(ERASE_MODES), default=self.mode,
                                               required=False),
        }

    def explain(self, model, tokenizer, texts, target, config):
        score = config_choice(config, SCORE_KEY, WORD_SCORES, self.score)
        mode = config_choice(config, ERASE_KEY, ERASE_MODES, self.mode)
        explanations = explain_texts(
            model, tokenizer, texts, target="predicted" if target is None else target,
            score=score, mode=mode, batch_size=self.batch_size, units=self.units_of(config),
            show_progress=self.show_progress)
        return [(e.words, e.scores) for e in explanations]


# -- input marginalization ----------------------------------------------------------------------
MLMSource = Callable[[], tuple[nn.Module, Any]]


class BackgroundLoader:
    """Loads ``(mlm, tokenizer)`` in a daemon thread (e.g. building the default MLM, about 20
    minutes on 2 CPU cores, while the server already answers); :meth:`__call__` returns it once
    ready and otherwise raises a RuntimeError that says how long it has been running."""

    def __init__(self, load: MLMSource, what: str, expected: str):
        self._load, self.what, self.expected = load, what, expected
        self._result: tuple[nn.Module, Any] | None = None
        self._error: BaseException | None = None
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"load {what}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result = self._load()
        except BaseException as err:  # reported to every request that needs it
            self._error = err

    @property
    def ready(self) -> bool:
        return self._result is not None

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.ready

    def __call__(self) -> tuple[nn.Module, Any]:
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise RuntimeError(f"building {self.what} failed: {self._error!r}") from self._error
        minutes = (time.monotonic() - self._started) / 60
        raise RuntimeError(f"{self.what} is still being built in the background (running for "
                           f"{minutes:.0f} min, {self.expected} in all); this method works "
                           "once it is done")


class InputMarginalizationInterpreter(WordSalienceInterpreter):
    """Input marginalization (Kim et al., EMNLP 2020): each word piece is replaced by every
    likely token of a masked language model in turn and the class probability averaged under
    the MLM's distribution; a word's score is the sum over its pieces of the weight of evidence
    log2 odds(c|x) - log2 odds(c|x without the piece). Positive: the word supports the class.
    Candidates: MLM probability above sigma and at most the top-k per piece. The defaults
    (sigma 1e-3, 50 candidates) keep a sentence to tens of seconds on a CPU; the paper's setting
    is sigma 1e-5 without a limit (about 800 candidates per piece, minutes per sentence)."""

    name = "Input marginalization"

    def __init__(self, mlm: nn.Module | MLMSource, mlm_tokenizer: Any = None, *,
                 autorun: bool = False, threshold: float = UI_THRESHOLD,
                 top_k: int | None = UI_TOP_K, batch_size: int = 256,
                 show_progress: bool = False):
        super().__init__(autorun=autorun, show_progress=show_progress)
        self._mlm = mlm
        self._mlm_tokenizer = mlm_tokenizer
        self.threshold = threshold
        self.top_k = check_positive_int("top_k", top_k, allow_none=True)
        self.batch_size = check_positive_int("batch_size", batch_size)

    def mlm(self) -> tuple[nn.Module, Any]:
        if isinstance(self._mlm, nn.Module):
            return self._mlm, self._mlm_tokenizer
        return self._mlm()

    def config_spec(self) -> lit_types.Spec:
        return {
            **super().config_spec(),
            THRESHOLD_KEY: lit_types.TextSegment(default=f"{self.threshold:g}", required=False),
            TOP_K_KEY: lit_types.TextSegment(
                default="" if self.top_k is None else str(self.top_k), required=False),
        }

    def explain(self, model, tokenizer, texts, target, config):
        threshold = config_number(config, THRESHOLD_KEY, self.threshold)
        top_k = config_integer(config, TOP_K_KEY, self.top_k, empty_is_none=True)
        if not (0 <= threshold < 1) or math.isnan(threshold):
            raise ValueError(f"{THRESHOLD_KEY!r} must be in [0, 1), got {threshold}")
        mlm, mlm_tokenizer = self.mlm()
        units = self.units_of(config)
        encoding, mask = encode_words(model, tokenizer, texts, units)
        method = InputMarginalization(model, mlm, tokenizer=tokenizer,
                                      mlm_tokenizer=mlm_tokenizer, batch_size=self.batch_size)
        attributions = method.attribute(
            encoding["input_ids"], target=target,
            additional_forward_args=(encoding["attention_mask"],), feature_mask=mask,
            threshold=threshold if threshold > 0 else None, top_k=top_k,
            show_progress=self.show_progress)
        return word_scores(encoding, mask, attributions, texts, units)


# -- the flip and reduction methods, seen as attributions ---------------------------------------
def _predicted(model: nn.Module, encoding: Any) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=encoding["input_ids"].to(device),
                    attention_mask=encoding["attention_mask"].to(device))
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits.argmax(-1).cpu()


class MinimalFlipSetInterpreter(WordSalienceInterpreter):
    """Minimal flipping set (Li, Monroe & Jurafsky 2016, section 5) as a salience map: 1 on the
    words of the smallest set found whose erasure changes the model's label, 0
    elsewhere (all 0 when no flip was found). With a class other than the prediction chosen,
    the set makes the model predict that class."""

    name = "Minimal flipping set"

    def __init__(self, autorun: bool = False, seed: int = 0, show_progress: bool = False):
        super().__init__(autorun=autorun, show_progress=show_progress)
        self.seed = seed

    def explain(self, model, tokenizer, texts, target, config):
        from captum_erasure.attr.flip.minimal_erasure import MinimalErasure
        units = self.units_of(config)
        encoding, mask = encode_words(model, tokenizer, texts, units)
        predicted = _predicted(model, encoding)
        targets = [None if target is None or target == int(p) else target for p in predicted]
        attributions = MinimalErasure(model, seed=self.seed).attribute(
            encoding["input_ids"], target=targets if any(t is not None for t in targets)
            else None, additional_forward_args=(encoding["attention_mask"],),
            feature_mask=mask, pad_token_id=pad_token_id_of(model, tokenizer),
            show_progress=self.show_progress)
        return word_scores(encoding, mask, attributions, texts, units)


class InputReductionOrderInterpreter(WordSalienceInterpreter):
    """Input reduction order (Feng et al., EMNLP 2018) as a salience map: words are removed,
    least important first (gradient x input), while the model's label stays. With m words
    removed, the word removed at step k scores k / (m + 1) and the words that survive the
    reduction score 1: unsigned values spread over (0, 1], the range LIT's salience colour map
    clamps to (raw step numbers 1, 2, ... would all be drawn at full colour). Explains the
    predicted class only."""

    name = "Input reduction order"

    def __init__(self, autorun: bool = False, beam_size: int = 3, show_progress: bool = False):
        super().__init__(autorun=autorun, show_progress=show_progress)
        self.beam_size = check_positive_int("beam_size", beam_size)

    def explain(self, model, tokenizer, texts, target, config):
        from captum_erasure.attr.input_reduction import InputReduction
        units = self.units_of(config)
        encoding, mask = encode_words(model, tokenizer, texts, units)
        predicted = _predicted(model, encoding)
        if target is not None and any(int(p) != target for p in predicted):
            raise ValueError(f"input reduction keeps the model's own prediction; it cannot "
                             f"explain class {target}, which is not the predicted class: choose "
                             "the predicted class as the class to explain")
        attributions = InputReduction(model, beam_size=self.beam_size).attribute(
            encoding["input_ids"], additional_forward_args=(encoding["attention_mask"],),
            feature_mask=mask, pad_token_id=pad_token_id_of(model, tokenizer),
            show_progress=self.show_progress)
        # InputReduction gives step k (1 = first removed) and m + 1 to the survivors
        return [(words, [step / max(steps) for step in steps])
                for words, steps in word_scores(encoding, mask, attributions, texts, units)]

    def meta_spec(self) -> lit_types.Spec:
        return {"saliency": lit_types.TokenSalience(autorun=self.autorun, signed=False)}


# -- the dict to merge into a server ------------------------------------------------------------
WORD_ERASURE_NAME = "Word erasure (Li et al. 2016, Eq. 1)"
MARGINALIZATION_NAME = "Input marginalization (Kim et al. 2020, MLM)"
FLIP_SET_NAME = "Minimal flipping set (Li et al. 2016, 1 = erased)"
REDUCTION_ORDER_NAME = "Input reduction order (Feng et al. 2018, high = kept)"


def erasure_interpreters(mlm: nn.Module | MLMSource | None = None, mlm_tokenizer: Any = None,
                         *, show_progress: bool = False) -> dict[str, lit_components.Interpreter]:
    """Our interpreters by UI name, to merge into a LIT server's interpreters.

    ``mlm``: a masked LM sharing the classifier's vocabulary (with ``mlm_tokenizer``), or a
    zero-argument callable returning ``(mlm, tokenizer)`` (e.g. a :class:`BackgroundLoader`);
    input marginalization is left out without one. Besides word erasure and marginalization,
    the minimal flipping set and the input reduction order are shown as salience maps (their
    counterfactual texts come from :func:`lit_plugin.generators.erasure_generators`), and
    Guan et al.'s information kept per word.
    """
    interpreters: dict[str, lit_components.Interpreter] = {
        WORD_ERASURE_NAME: WordErasureInterpreter(show_progress=show_progress)}
    if mlm is not None:
        interpreters[MARGINALIZATION_NAME] = InputMarginalizationInterpreter(
            mlm, mlm_tokenizer, show_progress=show_progress)
    interpreters[FLIP_SET_NAME] = MinimalFlipSetInterpreter(show_progress=show_progress)
    interpreters[REDUCTION_ORDER_NAME] = InputReductionOrderInterpreter(
        show_progress=show_progress)
    from lit_plugin.information_interpreter import WordInformationInterpreter
    information = WordInformationInterpreter(show_progress=show_progress)
    interpreters[information.name] = information
    return interpreters
