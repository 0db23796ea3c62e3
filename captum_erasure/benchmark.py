"""Faithfulness benchmark: our erasure methods against Captum's and LIT's built-in attributions.

    python -m captum_erasure.benchmark --model default --n 200 --out outputs/benchmark
    python -m captum_erasure.benchmark --quick            # a few examples, cheap settings

Every method explains the same held-out Rotten Tomatoes snippets for the class the model
predicts; every metric is computed on word scores, the natural unit:

- our methods take the word feature mask (:func:`~captum_erasure.text.word_feature_mask`) and
  give one score per word;
- Captum's methods run one snippet at a time (their unit) on the word pieces between the
  special tokens (the forward adds ``[CLS]``/``[SEP]`` back, so specials are never perturbed and
  padding never enters) and return probabilities of the predicted class. FeatureAblation, Lime,
  KernelShap and ShapleyValueSampling get the word mask (every piece holds its word's value);
  Occlusion (window 1) and LayerIntegratedGradients (on the input embeddings, [PAD] baseline,
  summed over the embedding) are per piece and are **summed over the pieces of a word**;
- LIT's IntegratedGradients (through :class:`lit_plugin.model.HFSequenceClassifier`) gives
  word-piece scores, summed per word; LIT's LIME splits the text with ``str.split``: each model
  word gets the score of the whitespace token that contains it divided by the number of model
  words in that token ("film," is one LIME token and two model words).

Metrics (see :mod:`captum_erasure.faithfulness`, :mod:`captum_erasure.diagnostics`,
:mod:`captum_erasure.metrics`): comprehensiveness and sufficiency of the top 20 %, ERASER AOPC
(bins 1/5/10/20/50 %, the released code's 1/|B| normalisation; the paper's Eq. 3 is 5/6 of it),
AOPC over every k (ferret's ``based_on="k"``), the deletion-curve area (removal = deletion),
Atanasova et al.'s masked macro-F1 AUC, Kim et al.'s AUC_rep (MLM replacement of the top 20 %),
confidence indication, dataset consistency, rationale consistency across seeds and untrained
models, agreement with the VADER lexicon's human word valences (a proxy for rationales), and
cost: seconds, forward calls and rows per example (counted by a hook on the model; gradient
methods add a backward pass per forward).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .corpus import markdown_table
from .diagnostics import (MaskedPerformance, confidence_indication, dataset_consistency,
                          human_agreement, model_activations, rationale_consistency,
                          vader_valences)
from .faithfulness import METRIC_DIRECTIONS, FaithfulnessMetrics
from .text import word_feature_mask

CAPTUM_METHODS = ("IntegratedGradients", "FeatureAblation", "Occlusion", "Lime", "KernelShap",
                  "ShapleyValueSampling")
OUR_METHODS = ("WordErasure", "InputMarginalization", "InputReduction")
LIT_METHODS = ("LIT IG", "LIT LIME")
ALL_METHODS = ("Random",) + OUR_METHODS + CAPTUM_METHODS + LIT_METHODS


@dataclass
class BenchmarkSettings:
    """Method and metric settings; :data:`FULL` and :data:`QUICK` are the two presets."""

    ig_steps: int = 50
    lit_ig_steps: int = 30
    lime_samples: int = 200
    kernel_shap_samples: int = 200
    shapley_samples: int = 10
    lit_lime_samples: int = 256
    marginalization_top_k: int = 10
    perturbations_per_eval: int = 64
    batch_size: int = 32           # examples per call of our batched methods and metrics
    fraction: float = 0.2          # comprehensiveness / sufficiency rationale share
    consistency_examples: int = 50
    dataset_pairs: int = 2000


FULL = BenchmarkSettings()
QUICK = BenchmarkSettings(ig_steps=4, lit_ig_steps=4, lime_samples=16, kernel_shap_samples=16,
                          shapley_samples=2, lit_lime_samples=16, marginalization_top_k=2,
                          batch_size=4, consistency_examples=6, dataset_pairs=20)


# -- examples ---------------------------------------------------------------------------------
@dataclass
class Example:
    text: str
    label: int
    ids: Tensor            # (L,) with special tokens
    word_of_token: Tensor  # (L,) word index, -1 for special tokens
    words: list            # word strings, in order
    word_spans: list       # (start, end) character span of each word
    body: slice            # the token positions between the leading and trailing specials


def encode_examples(tokenizer: Any, texts: Sequence[str], labels: Sequence[int],
                    max_length: int | None = None) -> list[Example]:
    """Tokenise each text (fast tokenizer: words from ``word_ids``) and check it is usable."""
    examples = []
    for i, (text, label) in enumerate(zip(texts, labels)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is empty")
        enc = tokenizer([text])
        mask = word_feature_mask(enc)[0]
        ids = torch.tensor(enc["input_ids"][0])
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"text {i} has {len(ids)} tokens, more than the model's maximum "
                             f"{max_length}")
        positions = (mask >= 0).nonzero().flatten()
        if len(positions) == 0:
            raise ValueError(f"text {i} has no word")
        first, last = int(positions[0]), int(positions[-1])
        if bool((mask[first:last + 1] < 0).any()):
            raise ValueError(f"text {i}: special tokens inside the text are not supported")
        # Word ids are renumbered 0..n-1 in order (word_ids may skip numbers).
        ordered = sorted(set(mask[mask >= 0].tolist()))
        renumber = {w: k for k, w in enumerate(ordered)}
        word_of_token = torch.tensor([renumber.get(w, -1) if w >= 0 else -1
                                      for w in mask.tolist()])
        spans = [tuple(enc.word_to_chars(0, w)) for w in ordered]
        words = [text[start:end] for start, end in spans]  # the text, not [UNK]
        examples.append(Example(text, int(label), ids, word_of_token, words, spans,
                                slice(first, last + 1)))
    return examples


def pad_batch(examples: Sequence[Example], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, word feature mask) of a right-padded batch."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    mask = torch.full_like(ids, -1)
    for i, e in enumerate(examples):
        ids[i, :len(e.ids)], attention[i, :len(e.ids)] = e.ids, 1
        mask[i, :len(e.ids)] = e.word_of_token
    return ids, attention, mask


def spread_words(examples: Sequence[Example], scores: Sequence[Sequence[float]],
                 width: int) -> Tensor:
    """Token attributions in which every piece holds its word's score (specials 0)."""
    attr = torch.zeros(len(examples), width, dtype=torch.float64)
    for i, (e, s) in enumerate(zip(examples, scores)):
        values = torch.as_tensor(list(s), dtype=torch.float64)
        if len(values) != len(e.words):
            raise ValueError(f"{len(values)} scores for {len(e.words)} words")
        words = e.word_of_token
        attr[i, :len(words)] = torch.where(words >= 0, values[words.clamp_min(0)], 0.0)
    return attr


def words_from_pieces(example: Example, piece_scores: Tensor, reduce: str) -> list[float]:
    """Word scores from per-piece scores over the body (``"sum"``) or from pieces that each
    hold their word's value (``"first"``)."""
    words = example.word_of_token[example.body]
    values = piece_scores.detach().double().flatten().cpu()
    if len(values) != len(words):
        raise ValueError(f"{len(values)} piece scores for {len(words)} pieces")
    out = torch.zeros(len(example.words), dtype=torch.float64)
    if reduce == "sum":
        out.index_add_(0, words, values)
    else:
        out[words.flip(0)] = values.flip(0)  # the first piece wins
    return out.tolist()


def align_split_words(example: Example, split_scores: Sequence[float]) -> list[float]:
    """Model-word scores from scores of the text's ``str.split`` tokens (LIT's LIME): each
    word gets its whitespace token's score divided by the model words in that token."""
    spans = [m.span() for m in re.finditer(r"\S+", example.text)]
    if len(spans) != len(split_scores):
        raise ValueError(f"{len(split_scores)} scores for {len(spans)} whitespace tokens")
    owner = []
    for start, _ in example.word_spans:
        owner.append(next((k for k, (s, e) in enumerate(spans) if s <= start < e), None))
    counts = {k: owner.count(k) for k in set(owner) if k is not None}
    return [float(split_scores[k]) / counts[k] if k is not None else 0.0 for k in owner]


# -- cost accounting ---------------------------------------------------------------------------
class ForwardCounter:
    """Counts forward calls and rows of modules through a forward hook, whoever calls them
    (rows from the first positional tensor or the ``input_ids``/``inputs_embeds`` keyword)."""

    def __init__(self, *modules: nn.Module) -> None:
        self.calls = self.rows = 0
        self.handles = [m.register_forward_hook(self._hook_kw, with_kwargs=True)
                        for m in modules if m is not None]

    def _hook_kw(self, _module: nn.Module, args: tuple, kwargs: dict, _out: Any) -> None:
        self.calls += 1
        value = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        self.rows += int(value.shape[0]) if isinstance(value, Tensor) and value.dim() else 0

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


# -- the methods -------------------------------------------------------------------------------
class MethodContext:
    """What every method runner gets: model, tokenizer, examples, predicted classes."""

    def __init__(self, model: nn.Module, tokenizer: Any, examples: list[Example],
                 targets: list[int], settings: BenchmarkSettings, seed: int,
                 mlm: nn.Module | None = None, show_progress: bool = True) -> None:
        self.model, self.tokenizer, self.examples = model, tokenizer, examples
        self.targets, self.settings, self.seed, self.mlm = targets, settings, seed, mlm
        self.show_progress = show_progress
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batches(self) -> list[tuple[list[int], tuple[Tensor, Tensor, Tensor]]]:
        size = self.settings.batch_size
        order = list(range(len(self.examples)))
        return [(order[s:s + size], pad_batch([self.examples[i] for i in order[s:s + size]],
                                              self.pad))
                for s in range(0, len(order), size)]

    def body_forward(self, example: Example) -> Callable[[Tensor], Tensor]:
        """Probabilities of the model on word pieces, with the example's specials around."""
        prefix = example.ids[:example.body.start]
        suffix = example.ids[example.body.stop:]
        model = self.model

        def forward(body: Tensor) -> Tensor:
            rows = body.shape[0]
            ids = torch.cat([prefix.expand(rows, -1), body, suffix.expand(rows, -1)], 1)
            out = model(ids, torch.ones_like(ids))
            logits = out.logits if hasattr(out, "logits") else out
            return torch.softmax(logits.float(), -1)

        return forward

    def per_example(self, desc: str) -> Any:
        return tqdm(list(enumerate(self.examples)), desc=desc, unit="text", leave=False,
                    disable=not self.show_progress)


def run_random(ctx: MethodContext) -> list[list[float]]:
    generator = torch.Generator().manual_seed(ctx.seed)
    return [torch.randn(len(e.words), generator=generator).double().tolist()
            for e in ctx.examples]


def run_word_erasure(ctx: MethodContext) -> list[list[float]]:
    from .word_erasure import WordErasure
    method = WordErasure(ctx.model, pad_token_id=ctx.pad)
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="WordErasure", leave=False,
                                                disable=not ctx.show_progress):
        words = method.attribute_words(ids, target=torch.tensor([ctx.targets[i] for i in indices]),
                                       additional_forward_args=(attention,), feature_mask=mask,
                                       score="eq1", mode="delete")
        for row, i in enumerate(indices):
            scores[i] = words.scores[row, :len(ctx.examples[i].words)].tolist()
    return scores


def run_input_marginalization(ctx: MethodContext) -> list[list[float]]:
    from .marginalization import InputMarginalization
    if ctx.mlm is None:
        raise RuntimeError("InputMarginalization needs a masked LM (mlm=)")
    method = InputMarginalization(ctx.model, ctx.mlm, tokenizer=ctx.tokenizer)
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="InputMarginalization",
                                                leave=False, disable=not ctx.show_progress):
        attr = method.attribute(ids, target=torch.tensor([ctx.targets[i] for i in indices]),
                                additional_forward_args=(attention,), feature_mask=mask,
                                top_k=ctx.settings.marginalization_top_k, word_reduce="sum")
        for row, i in enumerate(indices):
            e = ctx.examples[i]
            scores[i] = words_from_pieces(e, attr[row, e.body], "first")
    return scores


def run_input_reduction(ctx: MethodContext) -> list[list[float]]:
    from . import input_reduction  # lands with the InputReduction issue
    method = input_reduction.InputReduction(ctx.model)
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="InputReduction",
                                                leave=False, disable=not ctx.show_progress):
        attr = method.attribute(ids, target=torch.tensor([ctx.targets[i] for i in indices]),
                                additional_forward_args=(attention,), feature_mask=mask,
                                pad_token_id=ctx.pad)
        for row, i in enumerate(indices):
            e = ctx.examples[i]
            scores[i] = words_from_pieces(e, attr[row, e.body], "first")
    return scores


def _captum_runner(name: str) -> Callable[[MethodContext], list[list[float]]]:
    def run(ctx: MethodContext) -> list[list[float]]:
        import captum.attr as ca
        s = ctx.settings
        ppe = s.perturbations_per_eval
        scores = []
        torch.manual_seed(ctx.seed)  # Lime, KernelShap and ShapleyValueSampling sample
        for i, e in ctx.per_example(name):
            forward = ctx.body_forward(e)
            body = e.ids[e.body][None]
            mask = e.word_of_token[e.body][None]
            target = ctx.targets[i]
            if name == "IntegratedGradients":
                method = ca.LayerIntegratedGradients(forward, ctx.model.get_input_embeddings())
                attr = method.attribute(body, baselines=torch.full_like(body, ctx.pad),
                                        target=target, n_steps=s.ig_steps,
                                        internal_batch_size=s.ig_steps)
                # The layer output spans the specials too; they equal their baseline (0 there).
                pieces = attr[0, e.body].sum(-1)
                scores.append(words_from_pieces(e, pieces, "sum"))
                continue
            with torch.inference_mode():
                if name == "Occlusion":
                    attr = ca.Occlusion(forward).attribute(
                        body, sliding_window_shapes=(1,), baselines=ctx.pad, target=target,
                        perturbations_per_eval=ppe)
                    scores.append(words_from_pieces(e, attr[0], "sum"))
                    continue
                common = dict(baselines=ctx.pad, target=target, feature_mask=mask,
                              perturbations_per_eval=ppe)
                if name == "FeatureAblation":
                    attr = ca.FeatureAblation(forward).attribute(body, **common)
                elif name == "Lime":
                    attr = ca.Lime(forward).attribute(body, n_samples=s.lime_samples, **common)
                elif name == "KernelShap":
                    attr = ca.KernelShap(forward).attribute(body, n_samples=s.kernel_shap_samples,
                                                            **common)
                elif name == "ShapleyValueSampling":
                    attr = ca.ShapleyValueSampling(forward).attribute(
                        body, n_samples=s.shapley_samples, **common)
                else:
                    raise ValueError(f"unknown Captum method {name!r}")
            scores.append(words_from_pieces(e, attr[0].float(), "first"))
        return scores

    return run


def _lit_model(ctx: MethodContext, gradients: bool) -> Any:
    from lit_plugin.model import HFSequenceClassifier
    return HFSequenceClassifier(ctx.model, ctx.tokenizer, compute_gradients=gradients,
                                max_minibatch_size=ctx.settings.perturbations_per_eval)


def run_lit_ig(ctx: MethodContext) -> list[list[float]]:
    from lit_nlp.components.gradient_maps import IntegratedGradients
    lit_model = _lit_model(ctx, gradients=True)
    ig = IntegratedGradients()
    config = {"Class to explain": "", "Normalize": False,
              "Interpolation steps": ctx.settings.lit_ig_steps}
    scores = []
    for i, e in ctx.per_example("LIT IG"):
        label = lit_model.labels[ctx.targets[i]]
        (result,) = ig.run([{"text": e.text, "label": label}], lit_model, None, config=config)
        salience = result["token_grads"]
        # The wrapper's tokens are the pieces between the specials; older versions also hid
        # [UNK] pieces (get_special_tokens_mask counts [UNK] as special): those get 0.
        body = e.ids[e.body]
        shown = torch.ones(len(body), dtype=torch.bool)
        if len(salience.tokens) != len(body):
            shown = ~torch.isin(body, torch.tensor(list(ctx.tokenizer.all_special_ids)))
        if len(salience.tokens) != int(shown.sum()):
            raise RuntimeError(f"LIT IG gave {len(salience.tokens)} tokens for "
                               f"{int(shown.sum())} word pieces (text {i})")
        pieces = torch.zeros(len(body), dtype=torch.float64)
        pieces[shown] = torch.as_tensor(np.asarray(salience.salience), dtype=torch.float64)
        scores.append(words_from_pieces(e, pieces, "sum"))
    return scores


def run_lit_lime(ctx: MethodContext) -> list[list[float]]:
    from lit_nlp.components.lime_explainer import LIME
    lit_model = _lit_model(ctx, gradients=False)
    lime = LIME()
    scores = []
    for i, e in ctx.per_example("LIT LIME"):
        config = {"_salience_target": {"field": "probas", "index": ctx.targets[i]},
                  "Number of samples": str(ctx.settings.lit_lime_samples),
                  "Seed": str(ctx.seed)}
        (result,) = lime.run([{"text": e.text}], lit_model, None, config=config)
        scores.append(align_split_words(e, np.asarray(result["text"].salience)))
    return scores


RUNNERS: dict[str, Callable[[MethodContext], list[list[float]]]] = {
    "Random": run_random,
    "WordErasure": run_word_erasure,
    "InputMarginalization": run_input_marginalization,
    "InputReduction": run_input_reduction,
    **{name: _captum_runner(name) for name in CAPTUM_METHODS},
    "LIT IG": run_lit_ig,
    "LIT LIME": run_lit_lime,
}

METHOD_NOTES = {
    "Random": "standard normal word scores (reference)",
    "WordErasure": "ours, Li et al. Eq. 1, words deleted, all snippets of a batch packed",
    "InputMarginalization": "ours, Kim et al., MLM top-{top_k} candidates per token, word = sum",
    "InputReduction": "ours, Feng et al., removal order",
    "IntegratedGradients": "Captum LayerIntegratedGradients on the input embeddings, {ig} steps, "
                           "[PAD] baseline, summed over the embedding and the pieces",
    "FeatureAblation": "Captum, words replaced by [PAD]",
    "Occlusion": "Captum, window 1 (pieces) replaced by [PAD], summed over pieces",
    "Lime": "Captum default Lasso surrogate, {lime} samples, [PAD] baseline",
    "KernelShap": "Captum, {kshap} samples, [PAD] baseline",
    "ShapleyValueSampling": "Captum, {svs} permutations, [PAD] baseline",
    "LIT IG": "LIT IntegratedGradients via HFSequenceClassifier, {lit_ig} steps, zero-embedding "
              "baseline, summed over pieces",
    "LIT LIME": "LIT LIME via HFSequenceClassifier, {lit_lime} samples, [MASK], str.split "
                "tokens shared among the model words inside them",
}


def method_note(name: str, s: BenchmarkSettings) -> str:
    return METHOD_NOTES.get(name, "").format(
        top_k=s.marginalization_top_k, ig=s.ig_steps, lime=s.lime_samples,
        kshap=s.kernel_shap_samples, svs=s.shapley_samples, lit_ig=s.lit_ig_steps,
        lit_lime=s.lit_lime_samples)


def available_methods(mlm: nn.Module | None) -> list[str]:
    """Every method that can run here: InputMarginalization needs an MLM, InputReduction its
    module, the LIT methods the LIT plugin."""
    import importlib
    import importlib.util
    names = []
    for name in ALL_METHODS:
        if name == "InputMarginalization" and mlm is None:
            continue
        if name == "InputReduction":
            try:
                importlib.import_module("captum_erasure.input_reduction")
            except ImportError:
                continue
        if name in LIT_METHODS and importlib.util.find_spec("lit_plugin.model") is None:
            continue
        names.append(name)
    return names


def explain_all(ctx: MethodContext, method: str) -> tuple[list[list[float]], dict[str, float]]:
    """Word scores of every example and the cost (seconds, calls and rows of the classifier
    and of the MLM)."""
    counter = ForwardCounter(ctx.model)
    mlm_counter = ForwardCounter(ctx.mlm) if ctx.mlm is not None else None
    start = time.perf_counter()
    try:
        scores = RUNNERS[method](ctx)
    finally:
        seconds = time.perf_counter() - start
        counter.close()
        if mlm_counter is not None:
            mlm_counter.close()
    for i, (e, s) in enumerate(zip(ctx.examples, scores)):
        if len(s) != len(e.words) or not all(math.isfinite(v) for v in s):
            raise RuntimeError(f"{method} gave {len(s)} scores (finite: "
                               f"{all(math.isfinite(v) for v in s)}) for {len(e.words)} words "
                               f"of text {i}")
    n = len(ctx.examples)
    cost = {"seconds_per_example": seconds / n, "forward_calls_per_example": counter.calls / n,
            "rows_per_example": counter.rows / n,
            "mlm_rows_per_example": (mlm_counter.rows / n) if mlm_counter else 0.0}
    return scores, cost


# -- evaluation --------------------------------------------------------------------------------
def evaluate(ctx: MethodContext, scores: list[list[float]], *, valences: dict | None,
             activations: Tensor | None, confidences: list[float]) -> tuple:
    """Every per-method metric of one method's word scores: (summary, per-example frame,
    deletion curves, masked-performance result)."""
    s = ctx.settings
    specials = list(ctx.tokenizer.all_special_ids)
    metrics = FaithfulnessMetrics(ctx.model, fraction=s.fraction, bins="eraser",
                                  normalization="code", special_token_ids=specials,
                                  pad_token_id=ctx.pad, batch_size=64)
    mask_id = getattr(ctx.tokenizer, "mask_token_id", None)
    masked = MaskedPerformance(ctx.model, mask_id, mode="replace" if mask_id is not None
                               else "delete", special_token_ids=specials, pad_token_id=ctx.pad,
                               batch_size=64)
    auc_rep_values: list[float] = []
    for indices, (ids, attention, mask) in ctx.batches():
        batch_examples = [ctx.examples[i] for i in indices]
        attr = spread_words(batch_examples, [scores[i] for i in indices], ids.shape[1])
        target = torch.tensor([ctx.targets[i] for i in indices])
        common = dict(additional_forward_args=(attention,), feature_mask=mask)
        metrics.update(ids, attr, target=target, **common)
        masked.update(ids, attr, [ctx.examples[i].label for i in indices], target=target,
                      **common)
        if ctx.mlm is not None:
            from .metrics import auc_rep
            auc_rep_values += auc_rep(ctx.model, ctx.mlm, ids, attr, target=target,
                                      tokenizer=ctx.tokenizer, seed=ctx.seed, batch_size=64,
                                      **common).tolist()
    summary = metrics.compute()
    masked_result = masked.compute()
    summary["masked_f1_auc"] = masked_result.auc
    summary["auc_rep"] = float(np.mean(auc_rep_values)) if auc_rep_values else float("nan")
    confidence = confidence_indication(scores, confidences, seed=ctx.seed)
    summary["confidence_mae"] = confidence.mae
    summary["confidence_baseline_mae"] = confidence.baseline_mae
    if valences is not None:
        agreement = human_agreement([e.words for e in ctx.examples], scores, ctx.targets,
                                    valences, class_polarity=_class_polarity(ctx.model))
        summary["human_map"] = agreement.map
        summary["human_examples"] = agreement.n_examples
    if activations is not None:
        consistency = dataset_consistency(activations, [e.words for e in ctx.examples], scores,
                                          ctx.targets, n_pairs=s.dataset_pairs)
        summary["dataset_consistency"] = consistency.spearman
    frame = metrics.per_example()
    frame["masked_predictions"] = [json.dumps(p) for p in masked.predicted]
    if auc_rep_values:
        frame["auc_rep"] = auc_rep_values
    return summary, frame, [c.tolist() for c in metrics.curves], masked_result


def _class_polarity(model: nn.Module) -> dict[int, int]:
    """Sentiment sign of each class from ``config.id2label`` ("neg..." -1, "pos..." +1), else
    {0: -1, 1: +1}."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    polarity = {}
    for index, name in id2label.items():
        name = str(name).lower()
        if name.startswith("neg"):
            polarity[int(index)] = -1
        elif name.startswith("pos"):
            polarity[int(index)] = 1
    return polarity or {0: -1, 1: 1}


def predict(model: nn.Module, examples: list[Example], pad: int, batch_size: int = 64,
            ) -> tuple[list[int], list[float], Tensor]:
    """Predicted class and its probability per example, and the model's activations."""
    classes, probabilities, activations = [], [], []
    for start in range(0, len(examples), batch_size):
        ids, attention, _ = pad_batch(examples[start:start + batch_size], pad)
        with torch.inference_mode():
            out = model(ids, attention)
            probs = torch.softmax((out.logits if hasattr(out, "logits") else out).float(), -1)
        classes += probs.argmax(1).tolist()
        probabilities += probs.max(1).values.tolist()
        activations.append(model_activations(model, ids, attention))
    return classes, probabilities, torch.cat(activations)


# -- rationale consistency ---------------------------------------------------------------------
def rationale_consistency_table(models: dict[str, nn.Module], tokenizer: Any,
                                texts: Sequence[str], labels: Sequence[int], methods: list[str],
                                settings: BenchmarkSettings, seed: int,
                                show_progress: bool = True) -> pd.DataFrame:
    """Spearman correlation of activation and saliency distances across every pair of
    ``models`` (same tokenizer: different seeds, trained and untrained), per method."""
    examples = encode_examples(tokenizer, texts, labels)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    activations, targets = {}, {}
    for name, model in models.items():
        classes, _, acts = predict(model, examples, pad)
        activations[name], targets[name] = acts, classes
    rows = []
    for method in methods:
        if method not in RUNNERS or method in LIT_METHODS or method == "InputMarginalization":
            continue
        saliency = {}
        for name, model in models.items():
            ctx = MethodContext(model, tokenizer, examples, targets[name], settings, seed,
                                show_progress=show_progress)
            saliency[name], _ = explain_all(ctx, method)
        result = rationale_consistency(activations, saliency)
        rows.append({"method": method, "rationale_consistency": result.spearman,
                     "p_value": result.p_value, "points": result.n_points})
    return pd.DataFrame(rows)


# -- the whole benchmark -----------------------------------------------------------------------
@dataclass
class BenchmarkResult:
    summary: pd.DataFrame           # one row per method
    per_example: pd.DataFrame
    consistency: pd.DataFrame | None
    report: Path
    failures: dict = field(default_factory=dict)


def run_benchmark(model: nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int],
                  *, out: str | Path, methods: Sequence[str] | None = None,
                  mlm: nn.Module | None = None, valences: dict | None = None,
                  consistency_models: dict[str, nn.Module] | None = None,
                  consistency_tokenizer: Any = None, settings: BenchmarkSettings = FULL,
                  seed: int = 0, model_name: str = "model", show_progress: bool = True,
                  notes: Sequence[str] = ()) -> BenchmarkResult:
    """Explain ``texts`` with every method, evaluate every metric, write the report to ``out``
    (``report.md``, ``summary.csv``, ``per_example.csv``, ``results.json``, PNG plots)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model.eval()
    if mlm is not None:
        mlm.eval()
    methods = list(methods) if methods is not None else available_methods(mlm)
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(RUNNERS)}")
    max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    examples = encode_examples(tokenizer, texts, labels, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets, confidences, activations = predict(model, examples, pad)
    accuracy = float(np.mean([t == e.label for t, e in zip(targets, examples)]))
    ctx = MethodContext(model, tokenizer, examples, targets, settings, seed, mlm, show_progress)

    rows, frames, curves, masked_curves, failures = [], [], {}, {}, {}
    for method in tqdm(methods, desc="methods", unit="method", disable=not show_progress):
        try:
            scores, cost = explain_all(ctx, method)
        except Exception as error:  # one broken method must not hide the others' results
            failures[method] = f"{type(error).__name__}: {error}"
            continue
        summary, frame, method_curves, masked = evaluate(
            ctx, scores, valences=valences, activations=activations, confidences=confidences)
        rows.append({"method": method, **summary, **cost})
        frame.insert(0, "method", method)
        frame.insert(1, "example", range(len(examples)))
        frame["word_scores"] = [json.dumps([round(v, 6) for v in s]) for s in scores]
        frames.append(frame)
        curves[method] = method_curves
        masked_curves[method] = masked
    if not rows:
        raise RuntimeError(f"every method failed: {failures}")
    summary = pd.DataFrame(rows)
    per_example = pd.concat(frames, ignore_index=True)

    consistency = None
    if consistency_models:
        consistency = rationale_consistency_table(
            consistency_models, consistency_tokenizer or tokenizer,
            texts[:settings.consistency_examples], labels[:settings.consistency_examples],
            [m for m in methods if m not in failures], settings, seed, show_progress)
        summary = summary.merge(consistency[["method", "rationale_consistency"]], on="method",
                                how="left")

    summary.to_csv(out / "summary.csv", index=False)
    per_example.to_csv(out / "per_example.csv", index=False)
    meta = {"model": model_name, "n_examples": len(examples), "accuracy": accuracy,
            "seed": seed, "settings": asdict(settings), "failures": failures,
            "machine": machine_description(), "notes": list(notes),
            "mean_words": float(np.mean([len(e.words) for e in examples]))}
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary.to_dict(orient="records")}, indent=2,
        default=float) + "\n")
    plots = write_plots(out, summary, curves, masked_curves)
    report = write_report(out, summary, consistency, meta, plots, settings, methods)
    return BenchmarkResult(summary, per_example, consistency, report, failures)


def machine_description() -> dict[str, Any]:
    import os
    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(), "torch_threads":
            torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _resample(curve: Sequence[float], grid: np.ndarray) -> np.ndarray:
    x = np.linspace(0, 1, len(curve))
    return np.interp(grid, x, np.asarray(curve, dtype=np.float64))


def write_plots(out: Path, summary: pd.DataFrame, curves: dict, masked: dict) -> list[str]:
    """Deletion curves, masked macro-F1 curves, and cost against faithfulness (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    grid = np.linspace(0, 1, 21)
    colours = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    saved = {}
    for index, (method, method_curves) in enumerate(curves.items()):
        mean = np.mean([_resample(c, grid) for c in method_curves], 0)
        style = dict(label=method, color=colours[(2 * index) % 20 + (2 * index) // 20 % 2],
                     linestyle="--" if method == "Random" else "-")
        axes[0].plot(grid, mean, **style)
        result = masked[method]
        axes[1].plot(result.fractions, result.f1, **style)
        saved[method] = {"deletion_x": grid.tolist(), "deletion_mean": mean.tolist(),
                         "masked_fractions": list(result.fractions), "masked_f1": result.f1}
    (out / "curves.json").write_text(json.dumps(saved, indent=1) + "\n")
    axes[0].set(xlabel="share of words deleted (top first)",
                ylabel="P(predicted class)", title="Deletion curves (lower is more faithful)")
    axes[1].set(xlabel="share of words replaced by [MASK] (top first)", ylabel="macro-F1",
                title="Atanasova et al. faithfulness (lower is more faithful)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    names.append("curves.png")

    plot_cost_vs_faithfulness(summary, out / "cost_vs_faithfulness.png")
    names.append("cost_vs_faithfulness.png")
    return names


def plot_cost_vs_faithfulness(summary: pd.DataFrame, path: Path) -> None:
    """Seconds per example (log) against ERASER AOPC comprehensiveness; Random, which costs
    nothing, is the dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for row in summary.itertuples():
        if row.method == "Random":
            ax.axhline(row.aopc_comprehensiveness, color="grey", linestyle="--",
                       label="Random")
            continue
        ax.scatter(row.seconds_per_example, row.aopc_comprehensiveness)
        ax.annotate(row.method, (row.seconds_per_example, row.aopc_comprehensiveness),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="seconds per example (log)", ylabel="AOPC comprehensiveness (ERASER bins)",
           title="Faithfulness against cost")
    if (summary["method"] == "Random").any():
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SUMMARY_COLUMNS = [
    ("comprehensiveness", "comp@20% ↑"), ("sufficiency", "suff@20% ↓"),
    ("aopc_comprehensiveness", "AOPC comp ↑"), ("aopc_sufficiency", "AOPC suff ↓"),
    ("aopc_comprehensiveness_all_k", "AOPC comp all-k ↑"),
    ("aopc_sufficiency_all_k", "AOPC suff all-k ↓"), ("deletion_area", "deletion area ↓"),
    ("masked_f1_auc", "masked-F1 AUC ↓"), ("auc_rep", "AUC_rep ↓"),
]
DIAGNOSTIC_COLUMNS = [
    ("human_map", "VADER MAP ↑"), ("confidence_mae", "confidence MAE ↓"),
    ("dataset_consistency", "dataset consistency ↑"),
    ("rationale_consistency", "rationale consistency ↑"),
]
COST_COLUMNS = [
    ("seconds_per_example", "s / example"), ("forward_calls_per_example", "forward calls / ex."),
    ("rows_per_example", "rows / ex."), ("mlm_rows_per_example", "MLM rows / ex."),
]
DIRECTIONS = {**METRIC_DIRECTIONS, "masked_f1_auc": "lower", "auc_rep": "lower",
              "human_map": "higher", "confidence_mae": "lower", "dataset_consistency": "higher",
              "rationale_consistency": "higher"}


def _table(summary: pd.DataFrame, columns: list[tuple[str, str]]) -> str:
    present = [(key, title) for key, title in columns if key in summary
               and summary[key].notna().any()]
    frame = summary[["method"] + [k for k, _ in present]].copy()
    frame.columns = ["method"] + [t for _, t in present]
    return markdown_table(frame)


def best_methods(summary: pd.DataFrame) -> list[str]:
    """One line per metric: the best method other than Random."""
    lines = []
    real = summary[summary["method"] != "Random"]
    for key, title in SUMMARY_COLUMNS + DIAGNOSTIC_COLUMNS:
        if key not in real or real[key].isna().all():
            continue
        index = real[key].idxmax() if DIRECTIONS[key] == "higher" else real[key].idxmin()
        lines.append(f"- {title}: **{real.loc[index, 'method']}** ({real.loc[index, key]:.4g})")
    return lines


def write_report(out: Path, summary: pd.DataFrame, consistency: pd.DataFrame | None,
                 meta: dict, plots: list[str], settings: BenchmarkSettings,
                 methods: list[str]) -> Path:
    machine = meta["machine"]
    lines = [
        "# Faithfulness benchmark",
        "",
        f"Model: {meta['model']}; {meta['n_examples']} held-out snippets (mean "
        f"{meta['mean_words']:.1f} words), accuracy {meta['accuracy']:.3f}; seed {meta['seed']}. "
        f"Every method explains the predicted class; metrics are computed on word scores.",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch "
        f"{machine['torch']} with {machine['torch_threads']} threads"
        + (f", GPU {machine['cuda']}" if machine["cuda"] else ", no GPU") + ".",
        *[f"{note}" for note in meta["notes"]],
        "",
        "## Faithfulness",
        "",
        _table(summary, SUMMARY_COLUMNS),
        "",
        "## Agreement, confidence and consistency",
        "",
        _table(summary, DIAGNOSTIC_COLUMNS),
        "",
        "## Cost",
        "",
        _table(summary, COST_COLUMNS),
        "",
        "## Best method per metric (Random excluded)",
        "",
        *best_methods(summary),
        "",
    ]
    lines += [f"![{name}]({name})" for name in plots] + [""]
    lines += [
        "## Methods",
        "",
        *[f"- **{m}**: {method_note(m, settings)}" for m in methods
          if m in summary["method"].tolist()],
        *[f"- **{m}** failed: {why}" for m, why in meta["failures"].items()],
        "",
        "## Metrics",
        "",
        f"- comp@20% / suff@20%: ERASER comprehensiveness m(x) − m(x∖r) and sufficiency "
        f"m(x) − m(r), r = the top ⌈{settings.fraction:g}·n⌉ words, m = probability of the "
        "predicted class, removal = deletion (the row re-packed).",
        "- AOPC comp / suff: ERASER bins 1, 5, 10, 20, 50 % with the released code's 1/|B| "
        "normalisation (the paper's Eq. 3 adds a k = 0 term: 5/6 of these values, same ranking); "
        "all-k: every k = 1..n, as ferret's `based_on=\"k\"`.",
        "- deletion area: area under m(x without the top k words), k = 0..n at x = k/n.",
        "- masked-F1 AUC (Atanasova et al. faithfulness): macro-F1 against the gold labels with "
        "the top 0, 10, ..., 100 % of the words replaced by [MASK]; ranked by the predicted "
        "class's scores (the paper sums saliency over classes).",
        "- AUC_rep (Kim et al.): top words replaced one by one by MLM samples until 20 %; area "
        "under P(predicted class).",
        "- VADER MAP: mean average precision of the word scores against the words whose VADER "
        "valence (mean human rating out of context) has the predicted class's polarity and "
        "|valence| ≥ 1. **A proxy for human rationales, not rationales.** Snippets without such "
        "a word are skipped.",
        "- confidence MAE: linear regression from saliency features to the predicted-class "
        "probability (5 shuffle splits, buckets up-sampled); predicting the training mean gives "
        + (f"{summary['confidence_baseline_mae'].mean():.4f}" if "confidence_baseline_mae"
           in summary else "n/a") + ".",
        "- dataset consistency: Spearman ρ between activation distance and saliency distance "
        "over high-overlap same-class and low-overlap different-class snippet pairs.",
        "- rationale consistency: the same across models (different seeds, untrained) on the "
        "same snippets; empty for methods not run there (InputMarginalization needs an MLM with "
        "those models' vocabulary, the LIT wrapper an HF model) and for Random (the same seeded "
        "maps for every model).",
        "- cost: forward calls and rows of the classifier counted by a hook (gradient methods "
        "also run one backward pass per forward); seconds include everything the method does.",
        "",
    ]
    if consistency is not None and len(consistency):
        lines += ["## Rationale consistency", "", markdown_table(consistency), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


# -- command line ------------------------------------------------------------------------------
def _consistency_models(seed: int, show_progress: bool) -> tuple[dict, Any, str]:
    """GloVe Uni-LSTMs: the cached one (seed 0), one trained with seed 1 (in memory, about
    20 s on 2 cores), and two untrained ones."""
    from .rnn_models import load_sentiment_model, new_sentiment_model, train_sentiment_model
    trained, tokenizer, _ = load_sentiment_model("lstm", show_progress=show_progress)
    other, info = train_sentiment_model("lstm", seed=seed + 1, show_progress=show_progress)
    models = {"lstm seed 0": trained, f"lstm seed {seed + 1}": other.eval(),
              "untrained seed 0": new_sentiment_model("lstm", seed=0).eval(),
              "untrained seed 1": new_sentiment_model("lstm", seed=1).eval()}
    return models, tokenizer, (f"Rationale consistency: GloVe Uni-LSTMs (trained seed 0 and "
                               f"seed {seed + 1}, test accuracy {info['accuracy']['test']:.3f}; "
                               "two untrained), all pairs.")


def main(argv: Sequence[str] | None = None) -> BenchmarkResult:
    parser = argparse.ArgumentParser(prog="python -m captum_erasure.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", choices=["default"],
                        help="the model to explain (the cached default MiniLM sentiment model)")
    parser.add_argument("--n", type=int, default=200, help="held-out snippets")
    parser.add_argument("--out", default="outputs/benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="*", default=None,
                        help=f"subset of {list(ALL_METHODS)}")
    parser.add_argument("--quick", action="store_true",
                        help="8 snippets, cheap method settings (a smoke test)")
    parser.add_argument("--no-mlm", action="store_true",
                        help="skip InputMarginalization and AUC_rep (no default MLM)")
    parser.add_argument("--no-consistency", action="store_true",
                        help="skip rationale consistency (trains a GloVe LSTM)")
    parser.add_argument("--max-words", type=int, default=None,
                        help="only snippets with at most this many words (cost control)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is much faster for small models on a busy "
                             "machine: no thread hand-offs)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from .data import load_rotten_tomatoes
    from .default_model import load_default_model
    settings = QUICK if args.quick else FULL
    n = min(args.n, 8) if args.quick else args.n
    show = not args.no_progress
    model, tokenizer = load_default_model()
    mlm = None
    if not args.no_mlm:
        from .default_mlm import load_default_mlm
        mlm = load_default_mlm()
        mlm = mlm[0] if isinstance(mlm, tuple) else mlm
    frame = load_rotten_tomatoes("test")
    if args.max_words:
        frame = frame[frame["text"].str.split().str.len() <= args.max_words]
    frame = frame.sample(n=min(n, len(frame)), random_state=args.seed)
    notes = [f"Snippets: a seeded sample (seed {args.seed}) of the Rotten Tomatoes test split"
             + (f" with at most {args.max_words} words" if args.max_words else "") + "."]
    consistency_models = consistency_tokenizer = None
    if not args.no_consistency:
        consistency_models, consistency_tokenizer, note = _consistency_models(args.seed, show)
        notes.append(note)
    result = run_benchmark(
        model, tokenizer, frame["text"].tolist(), frame["label"].tolist(), out=args.out,
        methods=args.methods, mlm=mlm, valences=vader_valences(),
        consistency_models=consistency_models, consistency_tokenizer=consistency_tokenizer,
        settings=settings, seed=args.seed, model_name="default (MiniLM-L6 fine-tuned on "
        "Rotten Tomatoes)", show_progress=show, notes=notes)
    print(result.report.read_text())
    return result


if __name__ == "__main__":
    main()
