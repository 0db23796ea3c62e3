"""Classifier probabilities of examples with *sets* of words erased, through the engine
(memoised: a set is never evaluated twice for an example)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from captum_erasure._core.engine import (
    EngineStats,
    PerturbationEngine,
    Row,
    engine_for_call,
)
from captum_erasure._core.forwards import pad_token_id_of, require_pad_token_id
from captum_erasure._core.inputs import (
    baseline_token_ids,
    check_token_ids,
    delete_and_repack,
    model_limits,
    require_class_outputs,
)
from captum_erasure._core.scores import OUTPUT_KINDS, log_probs
from captum_erasure._core.text import NOT_A_FEATURE, feature_ids

SET_MODES = ("delete", "replace", "attention")


# -- evaluating erased sets ---------------------------------------------------------------------
class SetEvaluator:
    """Classifier probabilities of examples with *sets* of words erased, through the engine.

    ``evaluate([(example, erased_feature_ids), ...])`` runs all rows in packed batches and
    returns float64 probabilities ``(rows, n_classes)``; ``rows_per_example`` counts the rows
    each example has cost so far.
    """

    @classmethod
    def for_method(cls, method: Any, input_ids: Tensor, attention_mask: Tensor,
                   feature_mask: Tensor, pad_token_id: int | None,
                   show_progress: bool) -> "SetEvaluator":
        """The evaluator a flip method's options ask for (its forward, mode, baseline token,
        output kind and batching); ``pad_token_id`` ``None``: the method's, else the model's
        (and the pad id is the baseline token unless the method has one)."""
        if pad_token_id is None:
            pad_token_id = getattr(method, "pad_token_id", None)
        return cls(method.forward_func, input_ids, attention_mask, feature_mask,
                   mode=method.mode, baseline_id=method.baseline_token,
                   pad_token_id=pad_token_id, output=method.output, batch_size=method.batch_size,
                   max_tokens=method.max_tokens, device=method.device, autocast=method.autocast,
                   show_progress=show_progress, method=type(method).__name__)

    def __init__(self, forward_func: Callable, input_ids: Tensor, attention_mask: Tensor,
                 feature_mask: Tensor, *, mode: str = "delete",
                 baseline_id: int | None = None, pad_token_id: int | None = None,
                 output: str = "logits", batch_size: int | None = None,
                 max_tokens: int | None = None, device: torch.device | str | None = None,
                 autocast: bool | torch.dtype = False, show_progress: bool = False,
                 engine: PerturbationEngine | None = None, method: str = "SetEvaluator") -> None:
        if mode not in SET_MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {SET_MODES}")
        if output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape or \
                feature_mask.shape[-1] != input_ids.shape[1]:
            raise ValueError(
                f"input_ids {tuple(input_ids.shape)}, attention mask "
                f"{tuple(attention_mask.shape)} and feature mask {tuple(feature_mask.shape)} "
                "must all be (batch, sequence)")
        # The checks of the text entry points, for every caller (token-id tensors included):
        # only the attended columns reach the model (collate drops shared right padding).
        model = engine.forward_func if engine is not None else forward_func
        check_token_ids(input_ids, model, attention_mask)
        # delete re-packs rows (right padding); replace falls back on the pad id as baseline
        pad_token_id = pad_token_id_of(model, None, pad_token_id)
        if mode == "delete" or (mode == "replace" and baseline_id is None):
            pad_token_id = require_pad_token_id(model, None, pad_token_id, needed_for=(
                f"{method} mode={mode!r}" + (" without a baseline token" if mode == "replace"
                                             else " (re-packed rows are right-padded)")))
        if mode == "replace" and baseline_id is None:
            baseline_id = pad_token_id
        if mode == "replace":
            baseline_token_ids(baseline_id, input_ids, model_limits(model)[1])
        self.method = method
        self.ids = input_ids.cpu()
        self.attention = attention_mask.cpu()
        self.mask = feature_mask.cpu().long().expand(input_ids.shape)
        self.mode, self.baseline_id, self.pad_token_id = mode, baseline_id, pad_token_id
        self.output = output
        self.features = [feature_ids(row) for row in self.mask]
        for example, features in enumerate(self.features):
            if not features:
                raise ValueError(f"example {example} has no erasable words (empty text or a "
                                 "feature mask without features)")
        self.lengths = self.attention.ne(0).sum(1)
        self.engine = engine or engine_for_call(
            forward_func, forward_func, n_examples=len(self.ids), perturbations_per_eval=None,
            batch_size=batch_size, max_tokens=max_tokens, device=device, autocast=autocast,
            show_progress=show_progress)
        self.rows_per_example = [0] * len(self.ids)
        self._memo: dict[tuple[int, tuple], Tensor] = {}
        self._sizes = [{f: int((self.mask[b] == f).sum()) for f in feats}
                       for b, feats in enumerate(self.features)]

    @property
    def stats(self) -> EngineStats:
        return self.engine.stats

    def _length(self, example: int, erased: tuple) -> int:
        if self.mode != "delete":
            return int(self.lengths[example])
        return int(self.lengths[example]) - sum(self._sizes[example][f] for f in erased)

    def collate(self, rows: Sequence[Row]) -> tuple:
        return self.collate_with_features(rows)[:2]

    def collate_with_features(self, rows: Sequence[Row]) -> tuple[Tensor, Tensor, Tensor]:
        """Token ids, attention mask and feature mask of each row with its set erased."""
        examples = torch.tensor([r.example for r in rows])
        ids, attention, mask = self.ids[examples], self.attention[examples], self.mask[examples]
        erase = torch.zeros(ids.shape, dtype=torch.bool)
        for i, row in enumerate(rows):
            if row.data:
                erase[i] = torch.isin(mask[i], torch.tensor(row.data)) & (mask[i] >= 0)
        if self.mode == "replace":
            ids = ids.masked_fill(erase, self.baseline_id)
        elif self.mode == "attention":
            attention = attention.masked_fill(erase, 0)
        else:
            keep = ~erase & attention.ne(0)
            ids, attention, mask = delete_and_repack(keep, [ids, attention, mask],
                                                     [self.pad_token_id, 0, NOT_A_FEATURE])
        # every word of every row deleted (a tokenizer without special tokens): zero width
        width = int(attention.ne(0).long().cumsum(1).argmax(1).max()) + 1 \
            if attention.shape[1] else 0
        if self.mode != "delete":
            mask = mask.masked_fill(erase, -1)
        return ids[:, :width], attention[:, :width], mask[:, :width]

    def evaluated(self, example: int) -> dict[tuple, Tensor]:
        """Every set evaluated so far for ``example`` (sorted feature ids -> probabilities)."""
        return {erased: row for (b, erased), row in self._memo.items() if b == example}

    def cost(self, requests: Sequence[tuple[int, Iterable[int]]]) -> int:
        """Rows :meth:`evaluate` would spend on ``requests``: the distinct sets not yet
        evaluated (what a prediction budget is checked against before spending it)."""
        keys = {(example, tuple(sorted({int(f) for f in erased})))
                for example, erased in requests}
        return sum(key not in self._memo for key in keys)

    def evaluate(self, requests: Sequence[tuple[int, Iterable[int]]],
                 desc: str = "erased sets") -> Tensor:
        """Probabilities (float64, one row per request) of each example with its set erased.
        A set already evaluated for an example is answered from memory (no row spent)."""
        keys = [(example, tuple(sorted(set(int(f) for f in erased))))
                for example, erased in requests]
        new = list(dict.fromkeys(key for key in keys if key not in self._memo))
        rows = [Row(example, -1, self._length(example, erased), erased)
                for example, erased in new]
        for example, _ in new:
            self.rows_per_example[example] += 1
        if rows:
            raw = self.engine.run(rows, self.collate, desc=desc)
            require_class_outputs(raw, self.method)  # one output: softmax is always 1
            out = log_probs(raw, self.output).exp()
            self._memo.update(zip(new, out))
        if not keys:
            return torch.empty(0, 0, dtype=torch.float64)
        return torch.stack([self._memo[key] for key in keys])

