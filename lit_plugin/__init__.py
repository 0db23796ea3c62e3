"""LIT components for captum-erasure: a LIT model for any Hugging Face sequence classifier,
our erasure interpreters (Salience Maps rows) and counterfactual generators as dicts to merge
into a LIT server, and a launcher that serves them next to LIT's own methods
(``python -m lit_plugin.server``)."""

from .generators import erasure_generators
from .interpreters import BackgroundLoader, erasure_interpreters
from .model import HFSequenceClassifier
from .server import make_app, make_server, merged_components, text_dataset

__all__ = ["HFSequenceClassifier", "erasure_interpreters", "erasure_generators",
           "BackgroundLoader", "make_app", "make_server", "merged_components", "text_dataset"]
