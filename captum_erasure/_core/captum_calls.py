"""Which ``FeatureAblation.attribute`` calls WordErasure's packed text engine takes.

``WordErasure`` is a Captum ``FeatureAblation``, so anything that accepts one may hand it
FeatureAblation's inputs: several input tensors, float images, forwards that return one number
per batch, tuple targets, futures... The packed engine is built for one case only, a batch of
token-id rows; every other call with FeatureAblation's own semantics (raw output difference,
features replaced by the baselines) is answered by FeatureAblation's own code.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from captum.attr import InterpretableInput
from torch import Tensor


def single_tensor(inputs: Any) -> Tensor | None:
    """The one input tensor of ``inputs`` (a tensor or a 1-tuple of one), else None."""
    if isinstance(inputs, tuple):
        inputs = inputs[0] if len(inputs) == 1 else None
    return inputs if isinstance(inputs, Tensor) else None


def is_token_ids(inputs: Any) -> bool:
    """A non-empty ``(batch, sequence)`` tensor of integer ids (bool is not an id)."""
    return (isinstance(inputs, Tensor) and inputs.dim() == 2 and inputs.numel() > 0
            and not inputs.is_floating_point() and not inputs.is_complex()
            and inputs.dtype != torch.bool)


def interpretable_call(extra: tuple) -> bool:
    """True inside Captum's LLMAttribution, whose forward receives the InterpretableInput:
    the inputs are then 0/1 feature indicators, not token ids."""
    return any(isinstance(a, InterpretableInput) for a in extra)


def _integer_tensor_like_ids(value: Any, ids: Tensor, *, scalar_ok: bool) -> bool:
    """An integer tensor that is a scalar (if allowed) or shaped (1 or batch, sequence)."""
    if isinstance(value, tuple):
        if len(value) != 1:
            return False
        value = value[0]
    if not isinstance(value, Tensor):
        return False
    if value.is_floating_point() or value.is_complex():
        return False
    if value.dim() == 0:
        return scalar_ok
    return value.dim() == 2 and value.shape[0] in (1, ids.shape[0]) and \
        value.shape[1] == ids.shape[1]


def _plain_baselines(baselines: Any, ids: Tensor) -> bool:
    # A float baseline would turn the ids into floats under FeatureAblation; ours keeps ids.
    if isinstance(baselines, tuple) and len(baselines) == 1:
        baselines = baselines[0]
    if baselines is None or isinstance(baselines, numbers.Integral):
        return True
    return _integer_tensor_like_ids(baselines, ids, scalar_ok=True)


def _plain_target(target: Any) -> bool:
    """None, an int, or one int per example (list, 0/1-D tensor or array): what the engine
    resolves; Captum's tuple targets index multi-dimensional outputs, which it does not."""
    if target is None or isinstance(target, numbers.Integral):
        return True
    if isinstance(target, Tensor):
        return not target.is_floating_point() and target.dim() <= 1
    if hasattr(target, "tolist") and getattr(target, "ndim", 2) <= 1:  # numpy arrays
        target = target.tolist()
    return isinstance(target, list) and all(isinstance(t, numbers.Integral) for t in target)


def engine_takes(inputs: Any, baselines: Any, target: Any, extra: tuple, feature_mask: Any,
                 kwargs: dict, use_weights: bool) -> bool:
    """Whether a call with FeatureAblation's semantics is the token-id case the packed engine
    answers exactly as FeatureAblation would. The forward's output is checked when it runs
    (it must give one row of outputs per input row)."""
    ids = single_tensor(inputs)
    if ids is None or not is_token_ids(ids) or kwargs or use_weights:
        return False
    if interpretable_call(extra) or not _plain_baselines(baselines, ids):
        return False
    if feature_mask is not None and not _integer_tensor_like_ids(feature_mask, ids,
                                                                  scalar_ok=False):
        return False
    return _plain_target(target)
