"""Erasure-based interpretability for text models, as Captum attributions.

Every method evaluates its perturbed inputs through one engine
(:class:`captum_erasure._core.engine.PerturbationEngine`), which packs the perturbations of many
examples into large batches on the model's device. The names below are the public API; the
Li et al. (2016) reproduction lives in :mod:`captum_erasure.paper.li2016` and the figures in
:mod:`captum_erasure.explain.plots` (both imported on first use, so ``import captum_erasure``
loads neither matplotlib nor LIT).
"""

import importlib

from captum_erasure._core.engine import (
    EngineStats,
    PerturbationEngine,
    Row,
    score_erasures,
)
from captum_erasure._core.masked_lm import token_feature_mask
from captum_erasure._core.options import EngineOptions
from captum_erasure._core.scores import SCORES, erasure_scores
from captum_erasure._core.text import NOT_A_FEATURE, word_feature_mask, word_tokens
from captum_erasure.attr import (
    ContinuationErasure,
    ContinuationScores,
    DatasetImportance,
    DiffMask,
    DiffMaskResult,
    EmbeddingDimensionErasure,
    FlipResult,
    HiddenUnitErasure,
    InformationResult,
    InputMarginalization,
    InputReduction,
    MarginalizationResult,
    MarginalizationStats,
    MinimalErasure,
    ReductionResult,
    VMask,
    WordErasure,
    WordInformation,
    WordScores,
    greedy_flip,
)
from captum_erasure.data import vader_valences
from captum_erasure.explain import (
    CorpusImportance,
    TextExplanation,
    corpus_word_importance,
    explain_texts,
    explanations_to_frame,
    format_table,
    markdown_table,
)
from captum_erasure.metrics import (
    FaithfulnessMetrics,
    MaskedPerformance,
    RemovalCurves,
    ReplacementCurves,
    aopc,
    auc_rep,
    comprehensiveness,
    confidence_indication,
    dataset_consistency,
    deletion_curve,
    human_agreement,
    mlm_replacement_curves,
    model_activations,
    rationale_consistency,
    removal_curves,
    sufficiency,
)
from captum_erasure.models import (
    attach_vmask,
    default_mlm_info,
    default_model_info,
    load_default_mlm,
    load_default_model,
    load_vmask_classifier,
    load_vmask_model,
    save_vmask_classifier,
    train_jointly,
)

# name -> module, imported on first access (matplotlib, the paper's models and tasks)
_LAZY = {
    **{name: "captum_erasure.explain.plots" for name in (
        "explanations_to_html", "plot_word_columns", "plot_word_heatmap", "save_html")},
    **{name: "captum_erasure.paper.li2016" for name in (
        "build_glove_tokenizer", "frequency_correlation", "glove_embedding_matrix",
        "glove_tokenizer", "LexicalMLP", "dimension_importance", "train_lexical_model",
        "unit_importance", "LexicalTask", "build_lexical_tasks", "chosen_words_by_model",
        "corpus_importance_by_model", "sentence_scores_by_model", "top_words_by_model",
        "plot_dimension_heatmap", "plot_frequency_scatter", "plot_importance_histogram",
        "plot_layer_heatmaps", "GloveRNNClassifier", "RNNClassifierConfig",
        "load_sentiment_model", "load_sentiment_models", "train_sentiment_model",
        "train_classifier")},
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'captum_erasure' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    # attributions
    "WordErasure", "WordScores", "EmbeddingDimensionErasure", "HiddenUnitErasure",
    "DatasetImportance", "InputMarginalization", "MarginalizationResult",
    "MarginalizationStats", "MinimalErasure", "InputReduction", "FlipResult",
    "ReductionResult", "greedy_flip", "WordInformation", "InformationResult",
    "DiffMask", "DiffMaskResult", "ContinuationErasure", "ContinuationScores", "VMask",
    # engine, scores, text
    "PerturbationEngine", "EngineOptions", "EngineStats", "Row", "score_erasures", "SCORES",
    "erasure_scores",
    "NOT_A_FEATURE", "word_feature_mask", "word_tokens", "token_feature_mask",
    # metrics
    "FaithfulnessMetrics", "RemovalCurves", "aopc", "comprehensiveness", "sufficiency",
    "deletion_curve", "removal_curves", "ReplacementCurves", "auc_rep",
    "mlm_replacement_curves", "MaskedPerformance", "confidence_indication",
    "dataset_consistency", "human_agreement", "model_activations", "rationale_consistency",
    # texts, corpus tables, reports
    "TextExplanation", "explain_texts", "explanations_to_frame", "format_table",
    "CorpusImportance", "corpus_word_importance", "markdown_table", "vader_valences",
    # offline default models
    "load_default_model", "default_model_info", "load_default_mlm", "default_mlm_info",
    # VMASK models (Chen & Ji 2020)
    "attach_vmask", "train_jointly", "save_vmask_classifier", "load_vmask_classifier",
    "load_vmask_model",
    *sorted(_LAZY),
]
