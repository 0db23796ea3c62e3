"""Metrics of one method's word scores, predictions and the rationale-consistency table."""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from captum_erasure.benchmark.examples import (
    Example,
    encode_examples,
    pad_batch,
    spread_words,
)
from captum_erasure.benchmark.runners import (
    LIT_METHODS,
    RUNNERS,
    MethodContext,
    explain_all,
)
from captum_erasure.benchmark.settings import BenchmarkSettings
from captum_erasure.metrics.diagnostics import (
    MaskedPerformance,
    confidence_indication,
    dataset_consistency,
    human_agreement,
    model_activations,
    rationale_consistency,
)
from captum_erasure.metrics.faithfulness import METRIC_DIRECTIONS, FaithfulnessMetrics


# -- evaluation --------------------------------------------------------------------------------
def evaluate(ctx: MethodContext, scores: list[list[float]], *, valences: dict | None,
             activations: Tensor | None, confidences: list[float]) -> tuple:
    """Every per-method metric of one method's word scores: (summary, per-example frame,
    deletion curves, masked-performance result)."""
    s = ctx.settings
    specials = list(ctx.tokenizer.all_special_ids)
    mask_id = getattr(ctx.tokenizer, "mask_token_id", None)
    removals = removal_variants(mask_id, ctx.pad)
    variants = {name: FaithfulnessMetrics(ctx.model, fraction=s.fraction, bins="eraser",
                                          normalization="code", special_token_ids=specials,
                                          pad_token_id=ctx.pad, batch_size=64, **options)
                for name, options in removals.items()}
    metrics = variants["delete"]
    masked = MaskedPerformance(ctx.model, mask_id, mode="replace" if mask_id is not None
                               else "delete", special_token_ids=specials, pad_token_id=ctx.pad,
                               batch_size=64)
    auc_rep_values: list[float] = []
    for indices, (ids, attention, mask) in ctx.batches():
        batch_examples = [ctx.examples[i] for i in indices]
        attr = spread_words(batch_examples, [scores[i] for i in indices], ids.shape[1])
        target = torch.tensor([ctx.targets[i] for i in indices])
        common = dict(additional_forward_args=(attention,), feature_mask=mask)
        for variant in variants.values():
            variant.update(ids, attr, target=target, **common)
        masked.update(ids, attr, [ctx.examples[i].label for i in indices], target=target,
                      **common)
        if ctx.mlm is not None:
            from captum_erasure.metrics.auc_rep import auc_rep
            auc_rep_values += auc_rep(ctx.model, ctx.mlm, ids, attr, target=target,
                                      tokenizer=ctx.tokenizer, seed=ctx.seed, batch_size=64,
                                      **common).tolist()
    summary = metrics.compute()
    for name, variant in variants.items():
        if name != "delete":
            summary.update({f"{key}_{name}": value for key, value in variant.compute().items()})
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
    for name, variant in variants.items():
        if name != "delete":
            extra = variant.per_example()[list(METRIC_DIRECTIONS)]
            frame = frame.join(extra.add_suffix(f"_{name}"))
    frame["masked_predictions"] = [json.dumps(p) for p in masked.predicted]
    if auc_rep_values:
        frame["auc_rep"] = auc_rep_values
    return summary, frame, [c.tolist() for c in metrics.curves], masked_result


def removal_variants(mask_token_id: int | None, pad_token_id: int) -> dict[str, dict]:
    """The removals every faithfulness metric is computed under: deletion (ERASER's, and the
    perturbation WordErasure measures), and replacement by ``[MASK]`` (when the tokenizer has
    one) and by ``[PAD]`` (the perturbation of Captum's ablation baselines)."""
    variants: dict[str, dict] = {"delete": {}}
    if mask_token_id is not None:
        variants["mask"] = {"mode": "replace", "baseline_id": mask_token_id}
    variants["pad"] = {"mode": "replace", "baseline_id": pad_token_id}
    return variants


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

