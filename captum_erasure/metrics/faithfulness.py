"""Faithfulness metrics for any attribution tensor (ours or Captum's): comprehensiveness,
sufficiency, AOPC and the deletion curve (DeYoung et al. 2020, ERASER; ferret's all-k variant).

Functions take the classifier, token ids and attributions shaped like the ids (what every
``attribute`` returns); a class, :class:`FaithfulnessMetrics`, accumulates them over batches in
the manner of torchmetrics (``update`` per batch, ``compute`` at the end).

Conventions (each a parameter):

- **Unit.** Features come from ``feature_mask`` (words with
  :func:`~captum_erasure._core.text.word_feature_mask`); without it every attended non-special
  token is
  a feature. A feature's attribution is the mean over its tokens, so an attribution that holds
  the word score on each token (ours) and one summed over the word's pieces and spread back
  rank the same. Ties keep position order.
- **Class.** ``target`` (default: the class predicted for the unperturbed input, ERASER's j);
  m(x) is its probability.
- **Removal** (``mode``): ``"delete"`` (default; ERASER: the tokens are dropped and the row
  re-packed) or ``"replace"`` by ``baseline_id`` (e.g. ``[MASK]``, as Atanasova et al.).
  Special tokens and padding are never removed.
- **Rationale of a fraction f.** The top ``k = ceil(f * n)`` features of an example with n
  features (at least one; ERASER's 1 % bin is one word for any snippet shorter than 100 words).
- **Comprehensiveness** = m(x) - m(x without the top k) (higher is better);
  **sufficiency** = m(x) - m(top k only) (lower is better).
- **AOPC** (``bins``): ``"eraser"`` = top 1, 5, 10, 20, 50 %; ``"all"`` = every k = 1..n, as
  ferret's ``based_on="k"``; or any sequence of fractions. ``normalization="code"`` averages over
  the bins (ERASER's released code, ferret); ``"paper"`` is ERASER's Eq. 3, which adds the k = 0
  term (a difference of 0) and divides by |B| + 1, i.e. |B|/(|B|+1) times the code value.
- **Deletion curve**: m(x without the top k) for k = 0..n at x = k / n; its area (trapezoid,
  x in [0, 1]) is lower for a faithful attribution.

Every perturbed row goes through the perturbation engine (batching, packing across examples,
NaN checks); the forward passes and rows spent are in each result's ``stats``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from captum_erasure._core.engine import EngineStats, Row, engine_for_call
from captum_erasure._core.forwards import require_pad_token_id
from captum_erasure._core.inputs import (
    ForwardArgs,
    as_extra_args,
    baseline_token_ids,
    check_attributions,
    check_token_ids,
    delete_and_repack,
    feature_mask_like,
    model_limits,
)
from captum_erasure._core.scores import (
    OUTPUT_KINDS,
    check_outputs_fit_score,
    log_probs,
    resolve_targets,
)
from captum_erasure.metrics._curves import curve_area, feature_order

ERASER_BINS = (0.01, 0.05, 0.1, 0.2, 0.5)
REMOVAL_MODES = ("delete", "replace")
NORMALIZATIONS = ("code", "paper")
DEFAULT_FRACTION = 0.2


def rationale_size(n_features: int, fraction: float) -> int:
    """Features in the top-``fraction`` rationale of an example with ``n_features``: at least
    one (when there is one), ``ceil(fraction * n)``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return min(n_features, max(1, math.ceil(fraction * n_features - 1e-9)))


def bin_sizes(n_features: int, bins: str | Sequence[float]) -> list[int]:
    """The k of each AOPC bin for one example (``"eraser"``, ``"all"`` or fractions)."""
    name = bins if isinstance(bins, str) else None
    if name == "all":
        return list(range(1, n_features + 1))
    if name == "eraser":
        bins = ERASER_BINS
    # a count of bins (5) is not a sequence of fractions
    elif name is not None or bins is None or isinstance(bins, numbers.Number):
        raise ValueError(f"bins must be 'eraser', 'all' or a sequence of fractions, got "
                         f"{bins!r}")
    return [rationale_size(n_features, f) for f in bins]


@dataclass
class RemovalCurves:
    """m(x) after removing (or keeping only) the top-k features, for chosen k per example."""

    original: Tensor         # (n_examples,) m(x): probability of the target, unperturbed
    targets: Tensor          # (n_examples,)
    n_features: Tensor       # (n_examples,)
    ks: list                 # per example: the k evaluated, in the order of ``probabilities``
    probabilities: list      # per example: float64 tensor, m(x) at each k
    predictions: list        # per example: long tensor, argmax class at each k
    orders: list             # per example: feature ids by decreasing attribution
    keep: bool               # True: the top k were kept (sufficiency), else removed
    stats: EngineStats = field(default_factory=EngineStats)

    def at(self, example: int, k: int) -> float:
        """m at ``k`` for one example (k = 0: nothing removed, or everything kept)."""
        if k == 0 and not self.keep:
            return float(self.original[example])
        return float(self.probabilities[example][self.ks[example].index(k)])



def resolve_features(inputs: Tensor, feature_mask: Tensor | None, attention: Tensor | None,
                     special_token_ids: Sequence[int] | None = None) -> Tensor:
    """The feature id of every token (-1: never removed): ``feature_mask`` (an integer tensor
    shaped like the inputs), or one feature per attended non-special token; padding and the
    ``special_token_ids`` are always -1.

    Without a feature mask the special tokens must be named: ``special_token_ids=None`` is an
    error rather than a silent removal of ``[CLS]``/``[SEP]`` (pass ``()`` to let every attended
    token be removed)."""
    ids = inputs.cpu()
    if feature_mask is None:
        if special_token_ids is None:
            raise ValueError(
                "the faithfulness metrics never remove special tokens unless asked, and cannot "
                "tell them from the token ids alone: pass special_token_ids= (e.g. "
                "tokenizer.all_special_ids) or tokenizer=, or a feature_mask "
                "(word_feature_mask marks them -1); special_token_ids=() removes every "
                "attended token")
        features = torch.arange(ids.shape[1]).expand(ids.shape).clone()
    else:
        features = feature_mask_like(feature_mask, ids)
    if attention is not None:
        features[attention.cpu() == 0] = -1
    if special_token_ids:
        features[torch.isin(ids, torch.tensor(list(special_token_ids)))] = -1
    return features


class _ErasedRows:
    """Collates rows ``Row(example, slot, length, data=frozenset of features to remove)``."""

    def __init__(self, inputs: Tensor, extra: tuple, features: Tensor, attention_index: int,
                 mode: str, baseline_id: int | None, pad_token_id: int | None) -> None:
        if mode not in REMOVAL_MODES:
            raise ValueError(f"mode must be one of {REMOVAL_MODES}, got {mode!r}")
        if mode == "replace" and baseline_id is None:
            raise ValueError("mode='replace' needs baseline_id (e.g. tokenizer.mask_token_id)")
        self.ids = inputs.cpu()
        self.n_examples = inputs.shape[0]
        self.forward_args = ForwardArgs(extra, inputs.shape)
        self.features = features
        self.attention_index = attention_index
        has_attention = attention_index < len(extra) and \
            self.forward_args.per_token[attention_index]
        if mode == "delete" and not has_attention:
            raise ValueError("mode='delete' needs the attention mask, shaped like the inputs, as "
                             f"additional_forward_args[{attention_index}]")
        self.attention = self.forward_args.args[attention_index] if has_attention else None
        self.mode, self.baseline_id, self.pad_token_id = mode, baseline_id, pad_token_id

    def length(self, example: int) -> int:
        if self.attention is None:
            return self.ids.shape[1]
        return int(self.attention[example].ne(0).sum())

    def __call__(self, rows: Sequence[Row]) -> tuple:
        examples = torch.tensor([r.example for r in rows])
        ids = self.ids[examples]
        erase = torch.zeros(ids.shape, dtype=torch.bool)
        for i, row in enumerate(rows):
            if row.data:
                erase[i] = torch.isin(self.features[row.example], torch.tensor(sorted(row.data)))
        args = self.forward_args.rows(examples)
        if self.mode == "replace":
            return (ids.masked_fill(erase, self.baseline_id), *args)
        keep = ~erase & args[self.attention_index].ne(0)
        token_args = self.forward_args.token_indices
        # min_width 1: a row with every feature removed still runs (on padding alone)
        ids, *moved = delete_and_repack(keep, [ids] + [args[i] for i in token_args],
                                        [self.pad_token_id] + [0] * len(token_args),
                                        min_width=1)
        for i, moved_arg in zip(token_args, moved):
            args[i] = moved_arg
        return (ids, *args)


def removal_curves(forward_func: Callable, inputs: Tensor, attributions: Tensor, *,
                   ks: str | Sequence[float] | Callable[[int], Sequence[int]] = "all",
                   keep: bool = False, target: Any = None, additional_forward_args: Any = None,
                   feature_mask: Tensor | None = None, mode: str = "delete",
                   baseline_id: int | None = None, pad_token_id: int | None = None,
                   special_token_ids: Sequence[int] | None = None, tokenizer: Any = None,
                   output: str = "logits", attention_mask_index: int = 0,
                   batch_size: int | None = None, max_tokens: int | None = None,
                   device: torch.device | str | None = None,
                   show_progress: bool = False) -> RemovalCurves:
    """m(x) with the top-k features removed (``keep=False``) or kept alone (``keep=True``).

    ``ks``: ``"all"`` (k = 1..n), ``"eraser"``, a sequence of fractions, or a function from the
    example's feature count to its k values. The forward is called as
    ``forward_func(input_ids, *additional_forward_args)`` and returns ``output`` (``"logits"``,
    ``"probs"`` or ``"log_probs"``); the attention mask sits at ``attention_mask_index``.
    ``pad_token_id`` fills re-packed rows in delete mode (default: the model's
    ``config.pad_token_id``, else the ``tokenizer``'s; a ValueError when neither has one).
    Special tokens are never removed: they are ``special_token_ids`` (default: the
    ``tokenizer``'s), and without either a ``feature_mask`` must say which tokens are features.
    """
    extra = as_extra_args(additional_forward_args)
    attention = extra[attention_mask_index] if attention_mask_index < len(extra) and \
        isinstance(extra[attention_mask_index], Tensor) and isinstance(inputs, Tensor) and \
        extra[attention_mask_index].shape == inputs.shape else None
    # re-packed rows (delete) are cut to the attended width; replaced rows keep every column
    check_token_ids(inputs, forward_func, attention if mode == "delete" else None)
    check_attributions(attributions, inputs)
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
    if mode == "replace" and baseline_id is not None:
        baseline_token_ids(baseline_id, inputs, model_limits(forward_func)[1])
    if special_token_ids is None and tokenizer is not None:
        special_token_ids = list(tokenizer.all_special_ids)
    features = resolve_features(inputs, feature_mask, attention, special_token_ids)
    orders = feature_order(attributions, features)
    for example, order in enumerate(orders):
        if not order:
            raise ValueError(f"example {example} has no feature to remove (empty text, only "
                             "special tokens, or a feature mask that excludes all)")
    if mode == "delete":  # re-packed rows are right-padded
        pad_token_id = require_pad_token_id(forward_func, tokenizer, pad_token_id,
                                            needed_for="removal_curves mode='delete'")
    collate = _ErasedRows(inputs, extra, features, attention_mask_index, mode, baseline_id,
                          pad_token_id)
    n_examples = inputs.shape[0]
    engine = engine_for_call(forward_func, forward_func, n_examples=n_examples,
                             perturbations_per_eval=None, batch_size=batch_size,
                             max_tokens=max_tokens, device=device, autocast=False,
                             show_progress=show_progress)
    originals = engine.run([Row(b, b, collate.length(b), frozenset()) for b in range(n_examples)],
                           collate, desc="originals")
    check_outputs_fit_score(originals, "prob_diff", output, "removal_curves")
    targets = resolve_targets(target, originals)
    original = log_probs(originals, output).gather(1, targets[:, None])[:, 0].exp()

    example_ks = []
    for order in orders:
        chosen = ks(len(order)) if callable(ks) else bin_sizes(len(order), ks)
        example_ks.append(sorted(set(int(k) for k in chosen)))
        if any(k < 0 or k > len(order) for k in example_ks[-1]):
            raise ValueError(f"k values {example_ks[-1]} outside 0..{len(order)}")
    specs = []
    for b, (order, chosen) in enumerate(zip(orders, example_ks)):
        for k in chosen:
            removed = order[k:] if keep else order[:k]
            specs.append(Row(b, len(specs), collate.length(b), frozenset(removed)))
    outputs = engine.run(specs, collate, desc="sufficiency rows" if keep else "removal rows")
    probabilities: list = [[] for _ in range(n_examples)]
    predictions: list = [[] for _ in range(n_examples)]
    if specs:
        lp = log_probs(outputs, output)
        for spec, row_lp in zip(specs, lp):
            probabilities[spec.example].append(float(row_lp[targets[spec.example]].exp()))
            predictions[spec.example].append(int(row_lp.argmax()))
    return RemovalCurves(
        original.double(), targets, torch.tensor([len(o) for o in orders]), example_ks,
        [torch.tensor(p, dtype=torch.float64) for p in probabilities],
        [torch.tensor(p, dtype=torch.long) for p in predictions], orders, keep, engine.stats)


# -- metrics from curves ----------------------------------------------------------------------
def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def aopc_from_curves(curves: RemovalCurves, bins: str | Sequence[float] = "eraser",
                     normalization: str = "code") -> Tensor:
    """Per-example AOPC over ``bins`` from curves that hold those k (comprehensiveness AOPC for
    removal curves, sufficiency AOPC for keep curves)."""
    _check_normalization(normalization)
    values = []
    for b, n in enumerate(curves.n_features.tolist()):
        diffs = [float(curves.original[b]) - curves.at(b, k) for k in bin_sizes(n, bins)]
        denominator = len(diffs) + (1 if normalization == "paper" else 0)
        values.append(sum(diffs) / denominator)
    return torch.tensor(values, dtype=torch.float64)


def drop_at_fraction(curves: RemovalCurves, fraction: float = DEFAULT_FRACTION) -> Tensor:
    """m(x) - m(perturbed) at the top-``fraction`` rationale, per example."""
    return torch.tensor([float(curves.original[b]) - curves.at(b, rationale_size(n, fraction))
                         for b, n in enumerate(curves.n_features.tolist())], dtype=torch.float64)


def deletion_area(curves: RemovalCurves) -> Tensor:
    """Area under m(x without the top k), k = 0..n at x = k/n, per example (lower is better)."""
    areas = []
    for b, n in enumerate(curves.n_features.tolist()):
        points = torch.tensor([curves.at(b, k) for k in range(n + 1)], dtype=torch.float64)
        areas.append(float(curve_area(points, n)))
    return torch.tensor(areas, dtype=torch.float64)


# -- functional API ---------------------------------------------------------------------------
def comprehensiveness(forward_func: Callable, inputs: Tensor, attributions: Tensor, *,
                      fraction: float = DEFAULT_FRACTION, **kwargs: Any) -> Tensor:
    """m(x) - m(x without its top-``fraction`` features), per example (higher is better).
    Keyword arguments as in :func:`removal_curves`."""
    curves = removal_curves(forward_func, inputs, attributions,
                            ks=lambda n: [rationale_size(n, fraction)], keep=False, **kwargs)
    return drop_at_fraction(curves, fraction)


def sufficiency(forward_func: Callable, inputs: Tensor, attributions: Tensor, *,
                fraction: float = DEFAULT_FRACTION, **kwargs: Any) -> Tensor:
    """m(x) - m(only its top-``fraction`` features), per example (lower is better)."""
    curves = removal_curves(forward_func, inputs, attributions,
                            ks=lambda n: [rationale_size(n, fraction)], keep=True, **kwargs)
    return drop_at_fraction(curves, fraction)


def aopc(forward_func: Callable, inputs: Tensor, attributions: Tensor, *,
         kind: str = "comprehensiveness", bins: str | Sequence[float] = "eraser",
         normalization: str = "code", **kwargs: Any) -> Tensor:
    """Per-example AOPC of ``kind`` (``"comprehensiveness"``: higher is better;
    ``"sufficiency"``: lower is better) over ``bins`` (see the module docstring)."""
    if kind not in ("comprehensiveness", "sufficiency"):
        raise ValueError(f"kind must be 'comprehensiveness' or 'sufficiency', got {kind!r}")
    _check_normalization(normalization)
    curves = removal_curves(forward_func, inputs, attributions, ks=bins,
                            keep=kind == "sufficiency", **kwargs)
    return aopc_from_curves(curves, bins, normalization)


def deletion_curve(forward_func: Callable, inputs: Tensor, attributions: Tensor,
                   **kwargs: Any) -> tuple[list[Tensor], Tensor]:
    """Per example the curve m(x without the top k), k = 0..n, and its area (lower is better)."""
    curves = removal_curves(forward_func, inputs, attributions, ks="all", keep=False, **kwargs)
    points = [torch.cat([curves.original[b:b + 1], curves.probabilities[b]])
              for b in range(len(curves.ks))]
    return points, deletion_area(curves)


# -- accumulation over batches ---------------------------------------------------------------
METRIC_DIRECTIONS = {
    "comprehensiveness": "higher", "sufficiency": "lower",
    "aopc_comprehensiveness": "higher", "aopc_sufficiency": "lower",
    "aopc_comprehensiveness_all_k": "higher", "aopc_sufficiency_all_k": "lower",
    "deletion_area": "lower",
}


class FaithfulnessMetrics:
    """Comprehensiveness and sufficiency at ``fraction``, their AOPC over ``bins`` (with
    ``normalization``) and over every k, and the deletion-curve area, accumulated over batches.

    Each ``update`` evaluates two all-k curves per example (top k removed, top k kept: 2n + 2
    rows for n features, the original once per curve), from which every metric is read.
    ``compute()`` gives the means, ``per_example()`` a row per example, ``stats`` the forward
    passes and rows spent.
    """

    def __init__(self, forward_func: Callable, *, fraction: float = DEFAULT_FRACTION,
                 bins: str | Sequence[float] = "eraser", normalization: str = "code",
                 **removal_kwargs: Any) -> None:
        _check_normalization(normalization)
        rationale_size(1, fraction)  # validates the fraction
        bin_sizes(1, bins)  # and the bins, before any batch
        self.forward_func = forward_func
        self.fraction, self.bins, self.normalization = fraction, bins, normalization
        self.removal_kwargs = removal_kwargs
        self.rows: list[dict[str, float]] = []
        self.curves: list[Tensor] = []
        self.stats = EngineStats()

    def update(self, inputs: Tensor, attributions: Tensor, **kwargs: Any) -> None:
        """Add a batch; ``kwargs`` (target, additional_forward_args, feature_mask, ...) as in
        :func:`removal_curves`, over the options given to the constructor."""
        options = {**self.removal_kwargs, **kwargs}
        removed = removal_curves(self.forward_func, inputs, attributions, ks="all", keep=False,
                                 **options)
        options["target"] = removed.targets  # the same class for both curves
        kept = removal_curves(self.forward_func, inputs, attributions, ks="all", keep=True,
                              **options)
        for part in (removed.stats, kept.stats):
            self.stats += part
        values = {
            "comprehensiveness": drop_at_fraction(removed, self.fraction),
            "sufficiency": drop_at_fraction(kept, self.fraction),
            "aopc_comprehensiveness": aopc_from_curves(removed, self.bins, self.normalization),
            "aopc_sufficiency": aopc_from_curves(kept, self.bins, self.normalization),
            "aopc_comprehensiveness_all_k": aopc_from_curves(removed, "all", "code"),
            "aopc_sufficiency_all_k": aopc_from_curves(kept, "all", "code"),
            "deletion_area": deletion_area(removed),
        }
        for b in range(inputs.shape[0]):
            row = {name: float(v[b]) for name, v in values.items()}
            row["n_features"] = int(removed.n_features[b])
            row["original_probability"] = float(removed.original[b])
            self.rows.append(row)
            self.curves.append(torch.cat([removed.original[b:b + 1],
                                          removed.probabilities[b]]))

    def per_example(self):
        import pandas as pd
        return pd.DataFrame(self.rows)

    def compute(self) -> dict[str, float]:
        if not self.rows:
            raise ValueError("no batch was added: call update() first")
        frame = self.per_example()
        return {name: float(frame[name].mean()) for name in METRIC_DIRECTIONS}

    def reset(self) -> None:
        self.rows, self.curves, self.stats = [], [], EngineStats()
