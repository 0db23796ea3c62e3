"""Zeroing parts of a module's output per batch row, through forward hooks.

Used by every erasure that acts inside the model (word vectors, embedding dimensions, hidden
units). For recurrent modules, unit erasure also reaches the final state ``h_n``. Works for
modules that return a tensor and for modules that return a tuple whose first
element is the activation (``nn.LSTM``/``nn.GRU``/``nn.RNN``, HF layers), which Captum's
LayerFeatureAblation cannot handle.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn


def this_thread_only(hook: Callable) -> Callable:
    """``hook`` acting only on forwards run by the thread that made it. A model is often shared
    between threads (LIT serves requests on threads while DiffMask fits in the background);
    module hooks are global to the module, so without this one thread's erasure would reach
    another thread's forward. Returning None leaves the other thread's values unchanged."""
    owner = threading.get_ident()

    @functools.wraps(hook)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        return hook(*args, **kwargs)
    return guarded


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


def replace_first(output, new: Tensor):
    """``output`` (a tensor, tuple, list or HF output) with its activation tensor replaced."""
    if isinstance(output, Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    output.last_hidden_state = new
    return output


def _zero_final_state(module: nn.RNNBase, output, mask: Tensor):
    """Zero the erased units in an RNN's final hidden state ``h_n`` too, so that a model that
    reads ``h_n`` instead of the output sequence sees the same erasure (``c_n`` is kept: it is
    the cell, not the unit's output)."""
    out, state = output
    h_n = state[0] if isinstance(state, tuple) else state
    if h_n.dim() != 3:
        return output  # unbatched input
    dirs = 2 if module.bidirectional else 1
    # Output unit u belongs to direction u // H; h_n's last layer holds rows -dirs..-1.
    keep = mask.to(h_n.device, h_n.dtype).reshape(mask.shape[0], dirs, -1).transpose(0, 1)
    h_n = torch.cat([h_n[:-dirs], h_n[-dirs:] * keep], 0)
    return out, ((h_n, state[1]) if isinstance(state, tuple) else h_n)


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
            output = replace_first(output, act * keep)
            if over == "units" and isinstance(module, nn.RNNBase):
                output = _zero_final_state(module, output, mask)
            return output
        return hook

    try:
        for module, mask in zip(modules, masks):
            if mask is not None:
                handles.append(module.register_forward_hook(this_thread_only(make_hook(mask))))
        yield
    finally:
        for handle in handles:
            handle.remove()


def input_embeddings(forward_func: Callable) -> nn.Module | None:
    """The token-embedding module of an HF-style model behind ``forward_func``, if any."""
    owner = forward_func if isinstance(forward_func, nn.Module) else getattr(
        forward_func, "__self__", None)
    getter = getattr(owner, "get_input_embeddings", None)
    return getter() if callable(getter) else None


# where the encoder layers of common HF models live, below ``model.base_model``
_LAYER_PATHS = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer", "h",
                "transformer.h")


def encoder_layers(model: nn.Module) -> Sequence[nn.Module] | None:
    """The stack of encoder/decoder layers of a Hugging Face-style model (BERT, RoBERTa,
    DistilBERT, GPT-2, Llama, ...), or None when none of the usual places holds one."""
    base = getattr(model, "base_model", model)
    for path in _LAYER_PATHS:
        found: Any = base
        for name in path.split("."):
            found = getattr(found, name, None)
        if isinstance(found, nn.ModuleList) and len(found):
            return found
    return None
