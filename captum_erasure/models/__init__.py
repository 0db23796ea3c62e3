"""The offline default models: a MiniLM sentiment classifier and its masked LM, built once
from packages on PyPI and cached (no model hub); VMASK classifiers (Chen & Ji 2020)."""

from captum_erasure.models.default import default_model_info, load_default_model
from captum_erasure.models.default_mlm import default_mlm_info, load_default_mlm
from captum_erasure.models.vmask import (
    attach_vmask,
    load_vmask_classifier,
    save_vmask_classifier,
    train_jointly,
)
from captum_erasure.models.vmask_minilm import load_vmask_model

__all__ = ["load_default_model", "default_model_info", "load_default_mlm", "default_mlm_info",
           "attach_vmask", "train_jointly", "save_vmask_classifier", "load_vmask_classifier",
           "load_vmask_model"]
