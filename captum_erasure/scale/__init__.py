"""Corpus-scale runs: the corpus word tables and per-example explanations of any corpus, in
this process or on Ray Data (``backend="ray"``; Ray is imported only then). An application
layer: it loads models (``"default"``) and uses the explain layer below it."""

from captum_erasure.scale.corpus_run import ModelLoadError, corpus_tables, explain_corpus

__all__ = ["corpus_tables", "explain_corpus", "ModelLoadError"]
