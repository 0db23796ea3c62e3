"""Zeroing parts of a module's output per batch row, through forward hooks.

Used by every erasure that acts inside the model (word vectors, embedding dimensions, hidden
units). Works for modules that return a tensor and for modules that return a tuple whose first
element is the activation (``nn.LSTM``/``nn.GRU``/``nn.RNN``, HF layers), which Captum's
LayerFeatureAblation cannot handle.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn


def batch_dim(module: nn.Module) -> int:
    """The batch dimension of a module's output (1 for sequence-first recurrent modules)."""
    if isinstance(module, nn.RNNBase) and not module.batch_first:
        return 1
    return 0


def first_tensor(output) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    raise TypeError(f"cannot find the activation tensor in a {type(output).__name__} output")


def _replace_first(output, new: Tensor):
    if isinstance(output, Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    output.last_hidden_state = new
    return output


@contextlib.contextmanager
def zeroing(modules: Sequence[nn.Module], masks: Sequence[Tensor | None],
            over: str = "units") -> Iterator[None]:
    """Multiply each module's activation by its keep-mask (1 keep, 0 erase) while active.

    ``over="units"``: masks are ``(rows, units)`` on the last dimension.
    ``over="positions"``: masks are ``(rows, positions)`` on the sequence dimension (the one
    after the batch), i.e. whole vectors are zeroed.
    """
    handles = []

    def make_hook(mask: Tensor) -> Callable:
        def hook(module, inputs, output):
            act = first_tensor(output)
            dim = batch_dim(module)
            shape = [1] * act.dim()
            shape[dim] = mask.shape[0]
            if over == "units":
                shape[-1] = mask.shape[-1]
            else:
                shape[0 if dim == 1 else 1] = mask.shape[-1]  # sequence axis
            if act.shape[dim] != mask.shape[0]:
                raise RuntimeError(
                    f"{type(module).__name__} output has batch size {act.shape[dim]} but the "
                    f"erasure mask has {mask.shape[0]} rows")
            keep = mask.to(device=act.device, dtype=act.dtype).reshape(shape)
            return _replace_first(output, act * keep)
        return hook

    try:
        for module, mask in zip(modules, masks):
            if mask is not None:
                handles.append(module.register_forward_hook(make_hook(mask)))
        yield
    finally:
        for handle in handles:
            handle.remove()
