"""The one parser of Captum-style arguments: input tuples, ``additional_forward_args``,
attention and feature masks, per-example/per-token slicing and baseline tokens."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

_NO_TARGET = object()  # a dataset batch that carries no target of its own


def renumber_features(feature_mask: Tensor, shape: torch.Size) -> Tensor:
    """Feature ids 0..n-1 per row in order of first appearance (negative ids stay -1)."""
    if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point() or \
            feature_mask.dim() != 2 or feature_mask.shape[-1] != shape[-1]:
        raise ValueError(f"feature_mask must be an integer tensor shaped like the inputs "
                         f"{tuple(shape)}")
    rows = feature_mask.cpu().long().expand(shape)
    out = torch.full(shape, -1, dtype=torch.long)
    for b, row in enumerate(rows.tolist()):
        mapping: dict[int, int] = {}
        for i, value in enumerate(row):
            if value >= 0:
                out[b, i] = mapping.setdefault(value, len(mapping))
    return out


def attribute_inputs(inputs: Tensor | tuple[Tensor], additional_forward_args: Any,
                     feature_mask: Tensor | tuple[Tensor] | None,
                     ) -> tuple[bool, Tensor, Tensor, Tensor]:
    """The Captum-style arguments of a flip method's ``attribute``: whether ``inputs`` was a
    tuple, the (batch, sequence) token ids, the attention mask (``additional_forward_args[0]``;
    all ones when absent) and the feature mask renumbered 0..n-1 per row (default: every
    attended token is its own word)."""
    is_tuple = isinstance(inputs, tuple)
    ids = inputs[0] if is_tuple else inputs
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
        raise ValueError("inputs must be a (batch, sequence) tensor of token ids")
    extra = as_extra_args(additional_forward_args)
    attention = extra[0] if extra and isinstance(extra[0], Tensor) else torch.ones_like(ids)
    if attention.shape != ids.shape:
        raise ValueError("additional_forward_args[0] must be the attention mask, shaped "
                         "like the inputs")
    if isinstance(feature_mask, tuple):
        feature_mask = feature_mask[0]
    if feature_mask is None:
        feature_mask = torch.arange(ids.shape[1]).expand(ids.shape).clone()
        feature_mask[attention.cpu() == 0] = -1
    return is_tuple, ids, attention, renumber_features(feature_mask, ids.shape)


@contextmanager
def baseline_token_from(method: Any, baselines: Any) -> Iterator[None]:
    """Captum's ``baselines`` (a token id) as ``method.baseline_token`` for one call."""
    saved = method.baseline_token
    if baselines is not None:
        method.baseline_token = int(torch.as_tensor(baselines).reshape(-1)[0])
    try:
        yield
    finally:
        method.baseline_token = saved
















def as_input_tuple(inputs: Any) -> tuple[tuple[Tensor, ...], bool]:
    """The input tensors as a tuple, and whether they came as a tuple."""
    is_tuple = isinstance(inputs, tuple)
    tensors = inputs if is_tuple else (inputs,)
    if not tensors or not all(isinstance(t, Tensor) and t.dim() >= 1 for t in tensors):
        raise ValueError("inputs must be a tensor (or a tuple of tensors) with a batch axis "
                         "first")
    n = tensors[0].shape[0]
    if n == 0 or any(t.shape[0] != n for t in tensors):
        raise ValueError(f"inputs must share a non-empty batch axis, got shapes "
                         f"{[tuple(t.shape) for t in tensors]}")
    return tensors, is_tuple


def as_extra_args(additional_forward_args: Any) -> tuple:
    """Captum's ``additional_forward_args`` as a tuple, with Captum's meaning: ``None`` is
    none, a tuple is several arguments, anything else (a list too) is one argument."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def example_indexer(args: Sequence[Any], n_examples: int) -> Callable[[Tensor], list]:
    """Picks the forward arguments of a list of rows: tensors with one row per example are
    indexed by the rows' examples, anything else is passed as is."""
    per_example = [isinstance(a, Tensor) and a.dim() >= 1 and a.shape[0] == n_examples
                   for a in args]
    args_cpu = [a.cpu() if per_example[i] else a for i, a in enumerate(args)]

    def pick(examples: Tensor) -> list:
        return [a[examples] if per_example[i] else a for i, a in enumerate(args_cpu)]
    return pick


def row_length(inputs: Tensor) -> int:
    """Tokens per row for the engine's token budget: the sequence axis of ids ``(B, L)`` or of
    vectors ``(B, L, D)``; 1 for a single vector per example."""
    sequence = inputs.dim() >= 2 if not inputs.is_floating_point() else inputs.dim() >= 3
    return int(inputs.shape[1]) if sequence else 1


def unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
    """``(inputs, additional_forward_args, target)`` of one dataset batch.

    A batch is ``inputs``; ``(inputs,)``; ``(inputs, additional_forward_args)``; or
    ``(inputs, additional_forward_args, target)``, as a tuple or list (a ``DataLoader`` over a
    ``TensorDataset(ids, attention_mask, labels)`` fits). ``additional_forward_args`` is a
    tuple, a single tensor or ``None``. Several input tensors go in a tuple as the first
    element. The target is ``_NO_TARGET`` when the batch carries none.
    """
    if isinstance(batch, Tensor):
        return batch, None, _NO_TARGET
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        parts = list(batch) + [None, _NO_TARGET][len(batch) - 1:]
        return parts[0], parts[1], parts[2]
    raise TypeError("a dataset batch must be inputs, (inputs,), (inputs, additional_forward_"
                    f"args) or (inputs, additional_forward_args, target); got {type(batch)}")


def delete_and_repack(keep: Tensor, tensors: Sequence[Tensor], fills: Sequence[int], *,
                      min_width: int = 0) -> list[Tensor]:
    """Deletion as Li et al. mean it: in each row the kept positions move to the front in their
    order and the row is right-padded (``fills``: one pad value per tensor, e.g. the pad id
    for token ids, 0 for masks); the width is the longest kept row (at least ``min_width``)."""
    # A stable sort puts the kept positions first, in their original order.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    n_keep = keep.sum(1)
    order = order[:, :max(min_width, int(n_keep.max()))]
    pad = torch.arange(order.shape[1]) >= n_keep[:, None]
    return [t.gather(1, order).masked_fill(pad, fill) for t, fill in zip(tensors, fills)]


class ForwardArgs:
    """A call's ``additional_forward_args`` for rows built from its token ids, on the CPU
    where rows are collated: tensors shaped like the inputs are per token (sliced, trimmed
    and re-packed with the ids), tensors with one row per example are per example (indexed
    per row), anything else is passed unchanged to every forward."""

    def __init__(self, extra: Sequence[Any], inputs_shape: torch.Size) -> None:
        n_examples = inputs_shape[0]
        self.per_token = [isinstance(a, Tensor) and a.shape == inputs_shape for a in extra]
        self.per_example = [isinstance(a, Tensor) and not self.per_token[i] and a.dim() >= 1
                            and a.shape[0] == n_examples for i, a in enumerate(extra)]
        self.args = [a.cpu() if self.per_token[i] or self.per_example[i] else a
                     for i, a in enumerate(extra)]

    @property
    def token_indices(self) -> list[int]:
        """Positions of the per-token arguments."""
        return [i for i, flag in enumerate(self.per_token) if flag]

    def rows(self, examples: Tensor, width: int | None = None) -> list:
        """The arguments of rows of ``examples`` (per-token ones cut to ``width`` columns)."""
        return [a[examples][:, :width] if self.per_token[i] else
                a[examples] if self.per_example[i] else a for i, a in enumerate(self.args)]

    def example_bytes(self, example: int) -> list[bytes]:
        """What identifies one example's row-dependent arguments (for de-duplication)."""
        return [a[example].contiguous().numpy().tobytes()
                for i, a in enumerate(self.args) if self.per_token[i] or self.per_example[i]]
