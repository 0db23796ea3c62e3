"""Explaining texts with a Hugging Face classifier: per-text explanations, corpus tables and
report tables (figures in :mod:`.plots`, imported on use because it loads matplotlib)."""

from captum_erasure.explain.corpus import CorpusImportance, corpus_word_importance
from captum_erasure.explain.report import (
           explanations_to_frame,
           format_table,
           markdown_table,
)
from captum_erasure.explain.scales import ColourScale, colour_scale, display_values, symlog
from captum_erasure.explain.texts import (
           TextExplanation,
           explain_texts,
           iter_explanations,
)

__all__ = ["TextExplanation", "explain_texts", "iter_explanations", "explanations_to_frame",
           "format_table", "markdown_table", "CorpusImportance", "corpus_word_importance",
           "ColourScale", "colour_scale", "display_values", "symlog"]
