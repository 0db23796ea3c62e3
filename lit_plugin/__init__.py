"""LIT components for captum-erasure: a LIT model for any Hugging Face sequence classifier,
our erasure interpreters and counterfactual generators, and a launcher that serves them next to
LIT's own methods."""

from .model import HFSequenceClassifier

__all__ = ["HFSequenceClassifier"]
