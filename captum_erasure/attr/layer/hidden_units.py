"""Hidden-unit erasure (Li, Monroe & Jurafsky 2016, section 3, Figure 2) as a Captum attribution.

The importance of unit k of a layer is Eq. 1 (or another ``score=``) when unit k of the layer's
output activation is set to 0 at every position / time step at once. The module also holds what
:mod:`captum_erasure.attr.embedding_dimensions` shares with it: the per-unit erasure core
(one row per
(example, unit), rows of all layers and examples packed into the engine's batches) and the
streaming corpus average (:class:`DatasetImportance`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

from captum.log import log_usage
from torch import Tensor, nn

from captum_erasure._core.inputs import as_input_tuple
from captum_erasure._core.options import EngineOptions, attribute_call
from captum_erasure.attr._unit_erasure import (
    DatasetImportance,
    UnitErasureBase,
    UnitScores,
)

Layers = Union[nn.Module, Sequence[nn.Module], Mapping[str, nn.Module]]


class HiddenUnitErasure(UnitErasureBase):
    """Importance of each unit of chosen layers: Eq. 1 (default ``score="eq1"``; see
    :mod:`captum_erasure._core.scores`) when the unit is zeroed in the layer's output at every
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

    def __init__(self, forward_func: Callable, layers: Layers, *,
                 options: EngineOptions | None = None, **engine_options: Any) -> None:
        super().__init__(forward_func, options=options, **engine_options)
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
    @attribute_call
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

    @attribute_call
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

