"""The one parser of Captum-style arguments: input tuples, ``additional_forward_args``,
attention and feature masks, per-example/per-token slicing and baseline tokens; and the checks
every entry point makes on them (integer options, token ids against the model, baselines,
targets, class outputs, attributions and feature masks), so that a bad input gets the same
clear ``ValueError`` from every method."""

from __future__ import annotations

import numbers
import operator
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

NO_TARGET = object()  # a dataset batch that carries no target of its own


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
def baseline_token_from(method: Any, baselines: Any,
                        inputs: Tensor | None = None) -> Iterator[None]:
    """Captum's ``baselines`` (one token id, see :func:`baseline_token_ids`) as
    ``method.baseline_token`` for one call; different ids per position are an error (the
    flip methods replace every erased token by the same one). Without ``inputs`` only a single
    id is accepted."""
    saved = method.baseline_token
    if baselines is not None:
        like = inputs if inputs is not None else torch.zeros(1, 1, dtype=torch.long)
        ids = baseline_token_ids(baselines, like, model_limits(method.forward_func)[1])
        if ids.numel() and bool((ids != ids.reshape(-1)[0]).any()):
            raise ValueError(f"{type(method).__name__} replaces erased words by one baseline "
                             "token; got different baseline ids per position")
        method.baseline_token = int(ids.reshape(-1)[0]) if ids.numel() else saved
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
    element. The target is ``NO_TARGET`` when the batch carries none.
    """
    if isinstance(batch, Tensor):
        return batch, None, NO_TARGET
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        parts = list(batch) + [None, NO_TARGET][len(batch) - 1:]
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


# -- checks every entry point makes -------------------------------------------------------------
def check_positive_int(name: str, value: Any, *, allow_none: bool = False,
                       minimum: int = 1) -> int | None:
    """``value`` as an int >= ``minimum`` (default 1), or a ``ValueError`` naming the option for
    floats, bools, strings, zero and negatives. ``None`` passes only with ``allow_none`` (where
    the option has a "no limit" meaning): 0 and -1 never mean "no limit"."""
    if value is None and allow_none:
        return None
    number = None
    if not isinstance(value, bool):
        try:
            number = operator.index(value)  # ints, numpy ints, integer 0-d tensors
        except TypeError:
            pass
    if number is None or number < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {kind}{extra}, got {value!r}")
    return int(number)


def check_fraction(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """A probability-like option in [0, 1]; NaN, inf and strings are a ValueError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not 0 <= float(value) <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def model_limits(model_or_forward: Any) -> tuple[int | None, int | None]:
    """``(longest row in positions, vocabulary size)`` of the Hugging Face-style model behind a
    forward (a module or a bound method of one), where it states them: its
    ``config.max_position_embeddings`` and its input embedding's rows. ``None`` when unknown
    (a plain function, a model without position embeddings)."""
    owner = model_or_forward if isinstance(model_or_forward, nn.Module) else getattr(
        model_or_forward, "__self__", None)
    if not isinstance(owner, nn.Module):
        return None, None
    positions = getattr(getattr(owner, "config", None), "max_position_embeddings", None)
    positions = positions if isinstance(positions, int) and positions > 0 else None
    # RoBERTa-style position ids start after the padding index: 514 positions hold 512 tokens.
    offset = getattr(getattr(getattr(owner, "base_model", None), "embeddings", None),
                     "padding_idx", None)
    if positions is not None and isinstance(offset, int) and 0 <= offset < positions - 1:
        positions -= offset + 1
    getter = getattr(owner, "get_input_embeddings", None)
    try:
        embedding = getter() if callable(getter) else None
    except (NotImplementedError, AttributeError):
        embedding = None
    vocab = getattr(embedding, "num_embeddings", None)
    return positions, vocab if isinstance(vocab, int) else None


def attended_width(ids: Tensor, attention: Tensor | None) -> int:
    """Columns that reach the model: up to the last attended one (methods drop the right
    padding every row shares), all of them without an attention mask."""
    if not isinstance(attention, Tensor) or attention.shape != ids.shape:
        return int(ids.shape[-1])
    attended = attention.detach().cpu().ne(0)
    columns = torch.arange(1, ids.shape[-1] + 1)
    return int((columns * attended).amax()) if attended.any() else 0


def check_token_ids(ids: Tensor, model_or_forward: Any, attention: Tensor | None = None) -> None:
    """What the text entry points check, for token-id tensors: a ``(batch, sequence)`` integer
    tensor, rows no longer than the model's position embeddings and ids inside its vocabulary
    (see :func:`model_limits`; unknown limits are not checked). With ``attention`` only the
    columns up to the last attended one count (:func:`attended_width`)."""
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point() or \
            ids.dtype == torch.bool:
        raise ValueError("inputs must be a (batch, sequence) tensor of token ids, got "
                         f"{getattr(ids, 'shape', type(ids))}")
    positions, vocab = model_limits(model_or_forward)
    width = attended_width(ids, attention)
    if positions is not None and width > positions:
        raise ValueError(f"the inputs have {width} tokens per row, more than the model's maximum "
                         f"of {positions} positions (config.max_position_embeddings); shorten "
                         "them")
    seen = ids[:, :width].detach().cpu()
    # A plain forward function states no vocabulary: its integer inputs may be anything
    # (Captum's FeatureAblation tests feed -3), so only a known vocabulary is checked.
    if seen.numel() and vocab is not None:
        low, high = int(seen.min()), int(seen.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"token id {low if low < 0 else high} in the inputs is outside the "
                             f"model's vocabulary of {vocab} tokens (ids 0..{vocab - 1}); use "
                             "the model's own tokenizer")


def baseline_token_ids(baselines: Any, inputs: Tensor, vocab_size: int | None = None) -> Tensor:
    """Captum's ``baselines`` for token-id inputs as ids shaped like ``inputs``.

    Accepts ``None`` (token 0, Captum's default), a Python or numpy int, an integer 0-d tensor,
    or an integer tensor shaped like the inputs or ``(1, sequence)`` (each also as a 1-tuple,
    Captum's form for one input). Floats (0.7 is not token 0), ids outside the vocabulary and
    other shapes are a ``ValueError``."""
    if isinstance(baselines, tuple):
        if len(baselines) != 1:
            raise ValueError(f"baselines must be one baseline for the one input tensor, got a "
                             f"tuple of {len(baselines)}")
        baselines = baselines[0]
    if baselines is None:
        baselines = 0
    integral = isinstance(baselines, numbers.Integral) and not isinstance(baselines, bool)
    if not integral and (isinstance(baselines, (bool, numbers.Real))):
        raise ValueError(f"baselines for token ids must be integer token ids, got {baselines!r}")
    try:
        base = torch.as_tensor(baselines).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"baselines for token ids must be integer token ids, got "
                         f"{baselines!r}") from None
    if base.is_floating_point() or base.is_complex() or base.dtype == torch.bool:
        raise ValueError(f"baselines for token ids must be integer token ids, got a "
                         f"{base.dtype} tensor")
    shape = tuple(inputs.shape)
    fits = base.dim() == 0 or (base.dim() == 2 and base.shape[1] == shape[1] and
                               base.shape[0] in (1, shape[0]))
    if not fits:
        raise ValueError(f"baselines must be one token id or a tensor shaped like the inputs "
                         f"{shape} (or (1, {shape[1]})), got shape {tuple(base.shape)}")
    if base.numel():
        low, high = int(base.min()), int(base.max())
        if low < 0 or (vocab_size is not None and high >= vocab_size):
            size = "" if vocab_size is None else f" of {vocab_size} tokens"
            raise ValueError(f"baseline token id {low if low < 0 else high} is outside the "
                             f"model's vocabulary{size}")
    return base.to(inputs.dtype).expand(shape)


def check_targets(target: Any, n_examples: int, n_classes: int, *,
                  allow_none_items: bool = False) -> list[int | None]:
    """One class index per example from an int, a sequence, or a tensor/array of ints (one
    value is broadcast). Float values, a wrong number of targets and classes outside
    ``[0, n_classes)`` are a ``ValueError``; ``None`` items only with ``allow_none_items``."""
    if isinstance(target, numbers.Number):  # one value for every example (1.0 is refused below)
        values: list = [target]
    elif isinstance(target, Tensor) or (hasattr(target, "tolist") and
                                        hasattr(target, "reshape")):
        values = list(target.reshape(-1).tolist())  # tensors and numpy arrays
    elif isinstance(target, (list, tuple)):
        values = list(target)
    else:
        raise ValueError(f"target must be None, an int, or one int per example; got "
                         f"{target!r}. Captum's tuple targets for multi-dimensional outputs are "
                         "not supported here")
    for value in values:
        if value is None and allow_none_items:
            continue
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not integral:
            raise ValueError(f"target values must be integer class indices, got {value!r}")
    if len(values) == 1:
        values = values * n_examples
    if len(values) != n_examples:
        raise ValueError(f"got {len(values)} targets for {n_examples} examples")
    for value in values:
        if value is not None and not 0 <= value < n_classes:
            raise ValueError(f"target {value} is outside the model's class range "
                             f"[0, {n_classes - 1}]")
    return [None if v is None else int(v) for v in values]


def require_class_outputs(outputs: Tensor | int, method: str) -> None:
    """Refuse a model with one output per example (a regression head, ``num_labels=1``) for a
    method that needs class probabilities: softmax over one output is always 1, so there would
    be no label to keep or flip. ``outputs`` is the model's output or its number of outputs."""
    n_outputs = outputs if isinstance(outputs, int) else \
        (1 if outputs.dim() < 2 else int(outputs.shape[-1]))
    if n_outputs < 2:
        raise ValueError(f"{method} needs class probabilities, but the model has a single "
                         "output per example (a regression head, num_labels=1?): there is no "
                         "label to explain, keep or flip; use a classifier with one output per "
                         "class")


def check_attributions(attributions: Any, inputs: Tensor) -> None:
    """Attributions for removal metrics: a finite tensor shaped like the inputs."""
    if not isinstance(attributions, Tensor) or attributions.shape != inputs.shape:
        shape = tuple(getattr(attributions, "shape", ()))
        hint = ""
        if len(shape) == inputs.dim() + 1 and shape[:-1] == tuple(inputs.shape):
            hint = (f"; these look like one vector of {shape[-1]} per token (e.g. Captum's "
                    "LayerIntegratedGradients on the embedding layer): sum over the embedding "
                    "axis first, attributions.sum(-1)")
        raise ValueError(f"attributions must be shaped like the inputs {tuple(inputs.shape)}, "
                         f"got {shape}{hint}")
    if attributions.is_complex() or not torch.isfinite(attributions.double()).all():
        raise ValueError("attributions contain NaN or infinite values")


def feature_mask_like(feature_mask: Any, inputs: Tensor) -> Tensor:
    """A feature mask as a long CPU tensor shaped like ``inputs``: it must be an integer tensor
    of shape ``(batch or 1, sequence)`` (float ids would be truncated silently)."""
    if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point() or \
            feature_mask.is_complex() or feature_mask.dtype == torch.bool:
        raise ValueError("feature_mask must be an integer tensor (feature id per token, -1 for "
                         f"none), got {getattr(feature_mask, 'dtype', type(feature_mask))}")
    shape = tuple(inputs.shape)
    if feature_mask.dim() != 2 or feature_mask.shape[1] != shape[1] or \
            feature_mask.shape[0] not in (1, shape[0]):
        raise ValueError(f"feature_mask shape {tuple(feature_mask.shape)} does not match the "
                         f"inputs shape {shape} (expected (batch or 1, {shape[1]}))")
    return feature_mask.detach().cpu().long().expand(shape).clone()
