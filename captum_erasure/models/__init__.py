"""The offline default models: a MiniLM sentiment classifier and its masked LM, built once
from packages on PyPI and cached (no model hub)."""

from captum_erasure.models.default import default_model_info, load_default_model
from captum_erasure.models.default_mlm import default_mlm_info, load_default_mlm

__all__ = ["load_default_model", "default_model_info", "load_default_mlm", "default_mlm_info"]
