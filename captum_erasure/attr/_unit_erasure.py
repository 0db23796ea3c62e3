"""Base of the unit erasures (hidden units, embedding dimensions): Li et al.'s Eq. 1 per unit,
per example or averaged over a dataset with running moments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import torch
from captum.attr import PerturbationAttribution
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_erasure._core.engine import (
    EngineStats,
    PerturbationEngine,
    Row,
    engine_for_call,
    score_erasures,
)
from captum_erasure._core.forwards import model_caller
from captum_erasure._core.hooks import first_tensor, this_thread_only, zeroing
from captum_erasure._core.inputs import (
    NO_TARGET,
    as_extra_args,
    as_input_tuple,
    check_token_ids,
    example_indexer,
    row_length,
    unpack_batch,
)
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.scores import check_score


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


class UnitErasureBase(UsesEngine, PerturbationAttribution):
    """What hidden-unit and embedding-dimension erasure share: options, the engine, the
    per-unit erasure core and the dataset average. Subclasses implement :meth:`unit_scores`
    and :meth:`_per_layer`."""

    def __init__(self, forward_func: Callable, *, options: EngineOptions | None = None,
                 **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        self.last_stats: EngineStats | None = None
        self.last_result: UnitScores | DatasetImportance | None = None

    @attribute_call
    def unit_scores(self, inputs: Any, target: Any = None, additional_forward_args: Any = None,
                    perturbations_per_eval: int | None = None, show_progress: bool = False,
                    score: str | None = None) -> UnitScores:
        raise NotImplementedError

    def _per_layer(self, values: Tensor | DatasetImportance, widths: list[int]) -> Any:
        raise NotImplementedError

    @attribute_call
    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not support futures")

    @attribute_call
    def attribute_details(self, *args: Any, **kwargs: Any) -> UnitScores:
        """``attribute``'s arguments, the rich result (:class:`UnitScores`: scores per unit,
        widths, original outputs, targets, cost), as every method's ``attribute_details``."""
        return self.unit_scores(*args, **kwargs)

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
                inputs, target if batch_target is NO_TARGET else batch_target, extra,
                perturbations_per_eval, show_progress, score)
            moments.update(result.scores)
            widths = result.widths
            stats += result.stats
        importance = moments.result()
        self.last_stats = stats
        self.last_result = importance
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
                                total=n_examples * sum(widths), desc=desc,
                                method=type(self).__name__)
        self.last_stats = engine.stats
        self.last_result = UnitScores(result.scores, widths, result.original_outputs,
                                      result.targets, engine.stats)
        return self.last_result

    def _module_unit_scores(self, modules: list[nn.Module], names: list[str], inputs: Any,
                            target: Any, additional_forward_args: Any,
                            perturbations_per_eval: int | None, show_progress: bool,
                            score: str | None) -> UnitScores:
        """Erasure of each unit of each module's output activation, via forward hooks."""
        tensors, _ = as_input_tuple(inputs)
        if tensors[0].dim() == 2 and not tensors[0].is_floating_point() and \
                tensors[0].dtype != torch.bool:
            # token ids: the text entry points' checks (positions, vocabulary), where the model
            # states its limits; nothing is trimmed here, so every column counts
            check_token_ids(tensors[0], self.forward_func)
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

        call = model_caller(self.forward_func)

        def forward_with_erased_units(masks: list[Tensor | None], *args: Any) -> Any:
            seen = [False] * len(modules)
            handles = [m.register_forward_hook(this_thread_only(
                self._watch(i, names[i], widths, seen)))
                       for i, m in enumerate(modules)]
            try:
                with zeroing(modules, masks, over="units"):
                    out = call(*args)
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

