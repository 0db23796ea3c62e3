"""Erasure-based interpretability for text models, as Captum attributions.

Every method evaluates its perturbed inputs through one engine
(:class:`captum_erasure.engine.PerturbationEngine`), which packs the perturbations of many
examples into large batches on the model's device.
"""

from .dimension_erasure import EmbeddingDimensionErasure
from .engine import EngineStats, PerturbationEngine, Row, score_erasures
from .corpus import CorpusImportance, corpus_word_importance
from .explain import TextExplanation, explain_texts, explanations_to_frame, format_table
from .hidden_erasure import DatasetImportance, HiddenUnitErasure
from .scores import SCORES, erasure_scores
from .plots import explanations_to_html, plot_word_columns, plot_word_heatmap, save_html
from .text import NOT_A_FEATURE, word_feature_mask, word_tokens
from .word_erasure import WordErasure, WordScores

__all__ = [
    "EmbeddingDimensionErasure", "HiddenUnitErasure", "DatasetImportance", "EngineStats", "PerturbationEngine", "Row", "score_erasures", "SCORES", "erasure_scores",
    "CorpusImportance", "corpus_word_importance", "TextExplanation", "explain_texts",
    "explanations_to_frame", "format_table", "explanations_to_html", "plot_word_columns",
    "plot_word_heatmap", "save_html", "NOT_A_FEATURE", "word_feature_mask", "word_tokens", "WordErasure", "WordScores",
]
