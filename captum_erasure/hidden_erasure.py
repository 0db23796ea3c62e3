"""Hidden-unit erasure (Li, Monroe & Jurafsky 2016, section 3, Figure 2) as a Captum attribution.

The importance of unit k of a layer is Eq. 1 (or another ``score=``) when unit k of the layer's
output activation is set to 0 at every position / time step at once. The module also holds what
:mod:`captum_erasure.dimension_erasure` shares with it: the per-unit erasure core (one row per
(example, unit), rows of all layers and examples packed into the engine's batches) and the
streaming corpus average (:class:`DatasetImportance`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from .engine import EngineStats, PerturbationEngine, Row, engine_for_call, score_erasures
from .hooks import first_tensor, zeroing
from .scores import OUTPUT_KINDS, check_score

Layers = Union[nn.Module, Sequence[nn.Module], Mapping[str, nn.Module]]
_NO_TARGET = object()  # a dataset batch that carries no target of its own


@dataclass
class UnitScores:
    """Per-example scores of every erased unit, layers concatenated along the last axis."""

    scores: Tensor            # (n_examples, total_units) float64; (n, n_outputs, total_units)
    widths: list[int]         # units per layer, in order
    original_outputs: Tensor  # (n_examples, n_outputs)
    targets: Tensor | None    # (n_examples,)
    stats: EngineStats


@dataclass
class DatasetImportance:
    """Corpus-level importance per unit: mean and sample std over ``count`` examples."""

    mean: Tensor   # (units,) float64, or (n_outputs, units) for "output_diff" without target
    std: Tensor    # same shape; NaN when count < 2
    count: int


class RunningMoments:
    """Streaming mean and variance over examples (pairwise merge of Chan et al.), so a corpus
    average keeps O(units) memory and stays accurate when scores are large (Eq. 1 near P=1)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, scores: Tensor) -> None:
        """Adds a batch of per-example scores, shape ``(n, ...)``."""
        scores = scores.double()
        n = scores.shape[0]
        if n == 0:
            return
        batch_mean = scores.mean(0)
        batch_m2 = ((scores - batch_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, batch_mean, batch_m2
            return
        if batch_mean.shape != self.mean.shape:
            raise ValueError(f"batch scores of shape {tuple(batch_mean.shape)} do not match "
                             f"earlier batches {tuple(self.mean.shape)}")
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta ** 2 * (self.count * n / total)
        self.count = total

    def result(self) -> DatasetImportance:
        if self.mean is None:
            raise ValueError("the dataset yielded no examples")
        std = (self.m2 / (self.count - 1)).sqrt() if self.count > 1 else \
            torch.full_like(self.mean, float("nan"))
        return DatasetImportance(self.mean, std, self.count)


def declared_width(module: nn.Module) -> int | None:
    """Units in a module's output activation when the module states it, else ``None``."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return module.embedding_dim
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.RNNBase):
        size = getattr(module, "proj_size", 0) or module.hidden_size
        return size * (2 if module.bidirectional else 1)
    return None


@dataclass
class _Unit:
    """Row data: unit ``unit`` of layer ``layer`` is erased."""

    layer: int
    unit: int


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
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, (tuple, list)):
        return tuple(additional_forward_args)
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


class UnitErasureBase(PerturbationAttribution):
    """What hidden-unit and embedding-dimension erasure share: options, the engine, the
    per-unit erasure core and the dataset average. Subclasses implement :meth:`unit_scores`
    and :meth:`_per_layer`."""

    def __init__(self, forward_func: Callable, *, output: str = "logits",
                 batch_size: int | None = None, max_tokens: int | None = None,
                 device: torch.device | str | None = None,
                 autocast: bool | torch.dtype = False) -> None:
        super().__init__(forward_func)
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        self.output = output
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.device = device
        self.autocast = autocast
        self.last_stats: EngineStats | None = None

    def unit_scores(self, inputs: Any, target: Any = None, additional_forward_args: Any = None,
                    perturbations_per_eval: int | None = None, show_progress: bool = False,
                    score: str | None = None) -> UnitScores:
        raise NotImplementedError

    def _per_layer(self, values: Tensor | DatasetImportance, widths: list[int]) -> Any:
        raise NotImplementedError

    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not support futures")

    # -- dataset average --------------------------------------------------------------------
    def attribute_dataset(self, batches: Iterable, target: Any = None,
                          perturbations_per_eval: int | None = None, show_progress: bool = False,
                          score: str | None = None) -> Any:
        """Mean importance per unit over every example of ``batches`` (Li et al. Figures 1-2),
        with its sample std and the example count, from running sums: per-example scores are
        never kept.

        Each batch is ``inputs``, ``(inputs,)``, ``(inputs, additional_forward_args)`` or
        ``(inputs, additional_forward_args, target)`` (tuple or list; see
        :func:`unpack_batch`). A batch's own target wins over ``target``, which must be
        ``None`` (the predicted class) or one class index for all examples.
        """
        if target is not None and not isinstance(target, int):
            raise TypeError("attribute_dataset's target must be None or an int; put per-example "
                            "targets in the batches as (inputs, additional_forward_args, target)")
        moments = RunningMoments()
        stats = EngineStats()
        widths: list[int] | None = None
        for batch in tqdm(batches, desc="batches", disable=not show_progress):
            inputs, extra, batch_target = unpack_batch(batch)
            result = self.unit_scores(
                inputs, target if batch_target is _NO_TARGET else batch_target, extra,
                perturbations_per_eval, show_progress, score)
            moments.update(result.scores)
            widths = result.widths
            stats.forward_passes += result.stats.forward_passes
            stats.rows += result.stats.rows
            stats.oom_retries += result.stats.oom_retries
        importance = moments.result()
        self.last_stats = stats
        return self._per_layer(importance, widths)

    # -- core -------------------------------------------------------------------------------
    def _engine(self, forward: Callable, n_examples: int, perturbations_per_eval: int | None,
                show_progress: bool) -> PerturbationEngine:
        return engine_for_call(
            forward, self.forward_func, n_examples=n_examples,
            perturbations_per_eval=perturbations_per_eval, batch_size=self.batch_size,
            max_tokens=self.max_tokens, device=self.device, autocast=self.autocast,
            show_progress=show_progress)

    def _score(self, engine: PerturbationEngine, collate: Callable, n_examples: int,
               length: int, widths: list[int], target: Any, score: str | None,
               desc: str) -> UnitScores:
        """Scores one row per (example, unit) of every layer against the originals."""
        score = check_score(score or "eq1")
        offsets = [sum(widths[:i]) for i in range(len(widths))]
        originals = [Row(b, -1, length, None) for b in range(n_examples)]
        erasures = (Row(b, offsets[layer] + unit, length, _Unit(layer, unit))
                    for b in range(n_examples)
                    for layer, width in enumerate(widths) for unit in range(width))
        result = score_erasures(engine, collate, originals, erasures, n_slots=sum(widths),
                                target=target, score=score, output_kind=self.output,
                                total=n_examples * sum(widths), desc=desc)
        self.last_stats = engine.stats
        return UnitScores(result.scores, widths, result.original_outputs, result.targets,
                          engine.stats)

    def _module_unit_scores(self, modules: list[nn.Module], names: list[str], inputs: Any,
                            target: Any, additional_forward_args: Any,
                            perturbations_per_eval: int | None, show_progress: bool,
                            score: str | None) -> UnitScores:
        """Erasure of each unit of each module's output activation, via forward hooks."""
        tensors, _ = as_input_tuple(inputs)
        n_examples = tensors[0].shape[0]
        forward_args = example_indexer(tensors + as_extra_args(additional_forward_args),
                                       n_examples)
        widths: list[int | None] = [declared_width(m) for m in modules]

        def collate(rows: Sequence[Row]) -> tuple:
            examples = torch.tensor([r.example for r in rows])
            masks: list[Tensor | None] = [None] * len(modules)
            for i, row in enumerate(rows):
                if row.data is None:
                    continue
                layer = row.data.layer
                if masks[layer] is None:
                    masks[layer] = torch.ones(len(rows), widths[layer])
                masks[layer][i, row.data.unit] = 0.0
            return (masks, *forward_args(examples))

        def forward_with_erased_units(masks: list[Tensor | None], *args: Any) -> Any:
            seen = [False] * len(modules)
            handles = [m.register_forward_hook(self._watch(i, names[i], widths, seen))
                       for i, m in enumerate(modules)]
            try:
                with zeroing(modules, masks, over="units"):
                    out = self.forward_func(*args)
            finally:
                for handle in handles:
                    handle.remove()
            missing = [names[i] for i, called in enumerate(seen) if not called]
            if missing:
                raise ValueError(f"layer(s) {missing} did not run during forward_func; erasing "
                                 "their units would change nothing")
            return out

        engine = self._engine(forward_with_erased_units, n_examples, perturbations_per_eval,
                              show_progress)
        length = row_length(tensors[0])
        if any(w is None for w in widths):
            # One single-row forward reads the widths the modules do not state.
            engine.run([Row(0, -1, length, None)], collate, desc="probe")
        return self._score(engine, collate, n_examples, length, [int(w) for w in widths],
                           target, score, f"{self.get_name()} ({', '.join(names)})")

    @staticmethod
    def _watch(index: int, name: str, widths: list[int | None], seen: list[bool]) -> Callable:
        """Forward hook that records a module's width and checks it on every call (it runs
        before the zeroing hook, so a mismatch gets this message, not a broadcast error)."""
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            seen[index] = True
            width = first_tensor(output).shape[-1]
            if widths[index] is None:
                widths[index] = int(width)
            elif widths[index] != width:
                raise ValueError(f"layer {name} output has {width} units on its last axis, "
                                 f"expected {widths[index]}")
        return hook


class HiddenUnitErasure(UnitErasureBase):
    """Importance of each unit of chosen layers: Eq. 1 (default ``score="eq1"``; see
    :mod:`captum_erasure.scores`) when the unit is zeroed in the layer's output at every
    position / time step at once.

    ``layers`` is one module (result: a tensor ``(n_examples, H)``), a list of modules
    (``nn.ModuleList`` included; result: a tuple of such tensors) or a dict name -> module
    (``nn.ModuleDict`` included; result: a dict). The activation is the module's output tensor,
    or the first element of a tuple output (``nn.LSTM``/``nn.GRU``/``nn.RNN``, HF layers), whose
    last axis holds the units (a bidirectional RNN has 2 x hidden units, forward direction
    first). For an RNN the erased units are also zeroed in the final state ``h_n``; the
    recurrence itself is untouched (the erasure acts on what later layers read). Unit counts
    come from the module (``out_features``, ``hidden_size``...) or from one probe forward.

    Several layers at once: each row erases one unit of one layer, and the rows of all layers
    and examples are packed into the same batches (``batch_size`` rows, ``max_tokens`` padded
    tokens per forward; ``perturbations_per_eval`` keeps Captum's meaning,
    ``perturbations_per_eval x n_examples`` rows per forward).

    The forward is called as ``forward_func(*inputs, *additional_forward_args)`` and returns
    ``(rows, n_classes)`` scores of kind ``output`` (or an HF output with ``.logits``). Tensor
    arguments with one row per example are indexed per row, anything else is passed as is.
    A module called several times per forward (shared weights) is erased at every call.
    """

    def __init__(self, forward_func: Callable, layers: Layers, *, output: str = "logits",
                 batch_size: int | None = None, max_tokens: int | None = None,
                 device: torch.device | str | None = None,
                 autocast: bool | torch.dtype = False) -> None:
        super().__init__(forward_func, output=output, batch_size=batch_size,
                         max_tokens=max_tokens, device=device, autocast=autocast)
        if isinstance(layers, (Mapping, nn.ModuleDict)):
            self.layout = "dict"
            self.names, self.layers = list(layers.keys()), list(layers.values())
        elif isinstance(layers, (Sequence, nn.ModuleList)) and not isinstance(layers, str):
            self.layout = "tuple"
            self.layers = list(layers)
            self.names = [f"layers[{i}]" for i in range(len(self.layers))]
        else:
            self.layout = "single"
            self.layers, self.names = [layers], [type(layers).__name__]
        if not self.layers or not all(isinstance(m, nn.Module) for m in self.layers):
            raise TypeError("layers must be a module, or a non-empty list or dict of modules")
        if len({id(m) for m in self.layers}) != len(self.layers):
            raise ValueError("the same module is listed twice in layers")

    @log_usage(part_of_slo=True)
    def attribute(self, inputs: Any, target: Any = None, additional_forward_args: Any = None,
                  perturbations_per_eval: int | None = None, show_progress: bool = False,
                  score: str | None = None) -> Tensor | tuple[Tensor, ...] | dict[str, Tensor]:
        """Per-example importance of every unit: ``(n_examples, H)`` per layer (``(n_examples,
        n_outputs, H)`` for ``score="output_diff"`` without target), float32, shaped by
        ``layers`` (tensor, tuple or dict)."""
        result = self.unit_scores(inputs, target, additional_forward_args,
                                  perturbations_per_eval, show_progress, score)
        device = as_input_tuple(inputs)[0][0].device
        return self._per_layer(result.scores.float().to(device), result.widths)

    def unit_scores(self, inputs: Any, target: Any = None, additional_forward_args: Any = None,
                    perturbations_per_eval: int | None = None, show_progress: bool = False,
                    score: str | None = None) -> UnitScores:
        """Float64 scores of all layers concatenated, plus originals, targets and costs."""
        return self._module_unit_scores(self.layers, self.names, inputs, target,
                                        additional_forward_args, perturbations_per_eval,
                                        show_progress, score)

    def _per_layer(self, values: Tensor | DatasetImportance, widths: list[int]) -> Any:
        if isinstance(values, DatasetImportance):
            parts = [DatasetImportance(m, s, values.count) for m, s in
                     zip(values.mean.split(widths, -1), values.std.split(widths, -1))]
        else:
            parts = [part.clone() for part in values.split(widths, -1)]
        if self.layout == "single":
            return parts[0]
        if self.layout == "tuple":
            return tuple(parts)
        return dict(zip(self.names, parts))
