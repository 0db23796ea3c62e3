"""LIT components for captum-erasure: a LIT model for any Hugging Face sequence classifier,
our erasure interpreters (Salience Maps rows) and counterfactual generators as dicts to merge
into a LIT server, and a launcher that serves them next to LIT's own methods
(``python -m lit_plugin.server``)."""

from captum_erasure._core.extras import install_hint

try:
    import lit_nlp  # noqa: F401  (the one dependency of this package beyond captum_erasure)
except ImportError as err:
    raise ImportError("lit_plugin needs LIT: " + install_hint("lit", "lit-nlp==1.3.1")) from err

from .generators import erasure_generators  # noqa: E402
from .interpreters import BackgroundLoader, erasure_interpreters  # noqa: E402
from .model import HFSequenceClassifier  # noqa: E402
from .server import make_app, make_server, merged_components, text_dataset  # noqa: E402

__all__ = ["HFSequenceClassifier", "erasure_interpreters", "erasure_generators",
           "BackgroundLoader", "make_app", "make_server", "merged_components", "text_dataset"]
