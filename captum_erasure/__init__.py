"""Erasure-based interpretability for text models, as Captum attributions.

Every method evaluates its perturbed inputs through one engine
(:class:`captum_erasure.engine.PerturbationEngine`), which packs the perturbations of many
examples into large batches on the model's device.
"""

from .dimension_erasure import EmbeddingDimensionErasure
from .engine import EngineStats, PerturbationEngine, Row, score_erasures
from .corpus import CorpusImportance, corpus_word_importance, markdown_table
from .glove import (build_glove_tokenizer, frequency_correlation, glove_embedding_matrix,
                    glove_tokenizer)
from .lexical_mlp import LexicalMLP, dimension_importance, train_lexical_model, unit_importance
from .lexical_tasks import LexicalTask, build_lexical_tasks
from .model_comparison import (chosen_words_by_model, corpus_importance_by_model,
                               sentence_scores_by_model, top_words_by_model)
from .paper_figures import (plot_dimension_heatmap, plot_frequency_scatter,
                            plot_importance_histogram, plot_layer_heatmaps)
from .rnn_models import (GloveRNNClassifier, RNNClassifierConfig, load_sentiment_model,
                         load_sentiment_models, train_sentiment_model)
from .training import train_classifier
from .explain import TextExplanation, explain_texts, explanations_to_frame, format_table
from .hidden_erasure import DatasetImportance, HiddenUnitErasure
from .scores import SCORES, erasure_scores
from .plots import explanations_to_html, plot_word_columns, plot_word_heatmap, save_html
from .text import NOT_A_FEATURE, word_feature_mask, word_tokens
from .word_erasure import WordErasure, WordScores
from .marginalization import InputMarginalization, MarginalizationResult, MarginalizationStats
from .masked_lm import token_feature_mask
from .default_mlm import default_mlm_info, load_default_mlm
from .metrics import ReplacementCurves, auc_rep, mlm_replacement_curves
from .faithfulness import (FaithfulnessMetrics, RemovalCurves, aopc, comprehensiveness,
                           deletion_curve, removal_curves, sufficiency)
from .diagnostics import (MaskedPerformance, confidence_indication, dataset_consistency,
                          human_agreement, model_activations, rationale_consistency,
                          vader_valences)
from .flips import FlipResult, ReductionResult, greedy_flip
from .minimal_erasure import MinimalErasure
from .input_reduction import InputReduction

__all__ = [
    "EmbeddingDimensionErasure", "HiddenUnitErasure", "DatasetImportance", "EngineStats", "PerturbationEngine", "Row", "score_erasures", "SCORES", "erasure_scores",
    "CorpusImportance", "corpus_word_importance", "markdown_table",
    "build_glove_tokenizer", "frequency_correlation", "glove_embedding_matrix", "glove_tokenizer",
    "LexicalMLP", "dimension_importance", "train_lexical_model", "unit_importance",
    "LexicalTask", "build_lexical_tasks", "chosen_words_by_model", "corpus_importance_by_model",
    "sentence_scores_by_model", "top_words_by_model", "plot_dimension_heatmap",
    "plot_frequency_scatter", "plot_importance_histogram", "plot_layer_heatmaps",
    "GloveRNNClassifier", "RNNClassifierConfig", "load_sentiment_model", "load_sentiment_models",
    "train_sentiment_model", "train_classifier", "TextExplanation", "explain_texts",
    "explanations_to_frame", "format_table", "explanations_to_html", "plot_word_columns",
    "plot_word_heatmap", "save_html", "NOT_A_FEATURE", "word_feature_mask", "word_tokens", "WordErasure", "WordScores",
    "InputMarginalization", "MarginalizationResult", "MarginalizationStats", "token_feature_mask",
    "default_mlm_info", "load_default_mlm", "ReplacementCurves", "auc_rep", "mlm_replacement_curves",
    "FlipResult", "ReductionResult", "greedy_flip", "MinimalErasure", "InputReduction",
    "FaithfulnessMetrics", "RemovalCurves", "aopc", "comprehensiveness", "deletion_curve",
    "removal_curves", "sufficiency", "MaskedPerformance", "confidence_indication",
    "dataset_consistency", "human_agreement", "model_activations", "rationale_consistency",
    "vader_valences",
]
