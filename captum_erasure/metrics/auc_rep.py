"""Evaluation metrics for attributions (functional; more will join).

``auc_rep`` is Kim et al.'s (EMNLP 2020) AUC_rep: features are replaced in decreasing order
of attribution by tokens sampled from a masked language model, until ``fraction`` (20%) of the
features are replaced; the probability of the original class is tracked and the area under
that curve is the score. **Lower is better**: a faithful attribution puts first the features
whose replacement makes the prediction collapse.

Conventions (the paper leaves them open; the README section on input marginalization says why):

- the class is ``target`` (default: the class predicted for the unperturbed input);
- ``K = max(1, floor(fraction * n))`` features are replaced (n = features of the example;
  a feature is a token, or a word with a ``feature_mask``); steps are ``k = 0..K`` at
  ``x = k / K``, and the area is the trapezoid rule over ``x`` in ``[0, 1]``, so a curve that
  stays at ``p`` scores ``p``;
- a replaced feature's tokens are all set to ``[MASK]`` in the current (already partly
  replaced) input and each is sampled from the MLM's distribution there, special tokens and
  the original token excluded (re-drawing the original would erase nothing);
- features are ranked by the mean attribution over their tokens; ties keep position order;
- ``n_samples`` independent samplings are averaged (Kim et al. use one).

Every MLM query and classifier forward goes through the perturbation engine: the MLM rows of
all examples and samples at one step share batches, and all curves' classifier rows are packed
together after sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from captum_erasure._core.engine import EngineStats, Row, engine_for_call
from captum_erasure._core.inputs import (
    as_extra_args,
    check_attributions,
    check_positive_int,
    check_token_ids,
    feature_mask_like,
)
from captum_erasure._core.masked_lm import (
    PositionLogits,
    TokenRows,
    check_shared_vocabulary,
    resolve_mlm_tokens,
    token_feature_mask,
)
from captum_erasure._core.scores import (
    OUTPUT_KINDS,
    check_outputs_fit_score,
    log_probs,
    resolve_targets,
)
from captum_erasure.metrics._curves import curve_area, feature_order

DEFAULT_FRACTION = 0.2


@dataclass
class ReplacementCurves:
    """Probability of the class as features are replaced, per example and sample."""

    probabilities: Tensor   # (n_examples, n_samples, max_steps + 1), NaN beyond an example's K
    n_replaced: Tensor      # (n_examples,) K: features replaced at the last step
    auc: Tensor             # (n_examples,) area under the curve, mean over samples
    targets: Tensor         # (n_examples,) the class tracked
    orders: list            # per example: feature ids in replacement order (first K used)
    replaced_inputs: Tensor  # (n_examples, n_samples, max_steps + 1, seq_len) token ids
    mlm_stats: EngineStats = field(default_factory=EngineStats)
    classifier_stats: EngineStats = field(default_factory=EngineStats)


def mlm_replacement_curves(forward_func: Callable, mlm: nn.Module, inputs: Tensor,
                           attributions: Tensor, *, target: Any = None,
                           additional_forward_args: Any = None,
                           feature_mask: Tensor | None = None, tokenizer: Any = None,
                           mask_token_id: int | None = None, special_token_ids: Any = None,
                           fraction: float = DEFAULT_FRACTION, n_samples: int = 1,
                           seed: int = 0, output: str = "logits",
                           batch_size: int | None = None, max_tokens: int | None = None,
                           device: torch.device | str | None = None,
                           mlm_device: torch.device | str | None = None,
                           attention_mask_index: int = 0,
                           show_progress: bool = False) -> ReplacementCurves:
    """Kim et al.'s replacement curves (see the module docstring) for a batch of token ids.

    ``attributions`` is shaped like ``inputs`` (e.g. what any attribution's ``attribute``
    returns); ``feature_mask`` groups tokens into features (-1: never replaced), default every
    attended non-special token. Arguments as in
    :class:`~captum_erasure.attr.marginalization.InputMarginalization`.
    """
    # the checks of the other metrics (faithfulness), from the same core functions
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_samples = check_positive_int("n_samples", n_samples)
    if output not in OUTPUT_KINDS:
        raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {output!r}")
    extra = as_extra_args(additional_forward_args)
    mask_arg = extra[attention_mask_index] if attention_mask_index < len(extra) else None
    attention = mask_arg.cpu() if isinstance(mask_arg, Tensor) and isinstance(inputs, Tensor) \
        and mask_arg.shape == inputs.shape else None
    check_token_ids(inputs, forward_func, attention)  # rows are cut to the attended width
    check_attributions(attributions, inputs)
    if feature_mask is not None:
        feature_mask = feature_mask_like(feature_mask, inputs)
    tokens = resolve_mlm_tokens(mlm, tokenizer, mask_token_id, special_token_ids)
    check_shared_vocabulary(tokens, forward_func, tokenizer, input_ids=inputs)
    ids = inputs.cpu()
    specials = tokens.special_tensor()
    replaceable = ~torch.isin(ids, specials)
    if attention is not None:
        replaceable &= attention.ne(0)
    if feature_mask is None:
        features = token_feature_mask(ids, attention, specials)
    else:
        features = feature_mask.cpu().long().expand(ids.shape).clone()
    features[~replaceable] = -1
    orders = feature_order(attributions, features)
    for example, order in enumerate(orders):
        if not order:
            raise ValueError(f"example {example} has no feature to replace")
    n_examples = ids.shape[0]
    steps = torch.tensor([min(len(o), max(1, int(fraction * len(o) + 1e-9))) for o in orders])
    token_rows = TokenRows(ids, extra, attention)

    classifier = engine_for_call(forward_func, forward_func, n_examples=n_examples,
                                 perturbations_per_eval=None, batch_size=batch_size,
                                 max_tokens=max_tokens, device=device, autocast=False,
                                 show_progress=show_progress)
    history = ids[:, None, None, :].repeat(1, n_samples, int(steps.max()) + 1, 1)
    collate_states = _states_collate(token_rows, history)
    original_outputs = classifier.run(
        [Row(b, b, token_rows.length(b), (0, 0)) for b in range(n_examples)], collate_states,
        desc="originals")
    check_outputs_fit_score(original_outputs, "log_prob_diff", output, "auc_rep")
    targets = resolve_targets(target, original_outputs)

    mlm_engine = engine_for_call(PositionLogits(mlm), mlm, n_examples=n_examples,
                                 perturbations_per_eval=None, batch_size=batch_size,
                                 max_tokens=max_tokens, device=mlm_device, autocast=False,
                                 show_progress=show_progress)
    generator = torch.Generator().manual_seed(seed)
    excluded = torch.zeros(tokens.vocab_size, dtype=torch.bool)
    excluded[specials] = True
    for k in range(1, int(steps.max()) + 1):
        history[:, :, k] = history[:, :, k - 1]
        specs = []
        for b in range(n_examples):
            if k > steps[b]:
                continue
            positions = (features[b] == orders[b][k - 1]).nonzero().flatten().tolist()
            for s in range(n_samples):
                for p in positions:
                    specs.append(Row(b, len(specs), token_rows.length(b),
                                     (s, k, tuple(positions), p)))
        logits = mlm_engine.run(specs, _masked_state_collate(token_rows, history,
                                                             tokens.mask_token_id),
                                desc=f"MLM step {k}")
        for spec, row_logits in zip(specs, logits):
            s, _, _, p = spec.data
            probs = torch.softmax(row_logits.double(), -1).masked_fill(excluded, 0.0)
            probs[ids[spec.example, p]] = 0.0
            if probs.sum() > 0:
                history[spec.example, s, k, p] = int(torch.multinomial(probs, 1,
                                                                       generator=generator))

    curve_rows = [Row(b, 0, token_rows.length(b), (s, k)) for b in range(n_examples)
                  for s in range(n_samples) for k in range(1, int(steps[b]) + 1)]
    curve_rows = [Row(r.example, i, r.length, r.data) for i, r in enumerate(curve_rows)]
    outputs = classifier.run(curve_rows, collate_states, desc="replacement curves")
    probabilities = torch.full(history.shape[:3], float("nan"), dtype=torch.float64)
    lp_original = log_probs(original_outputs, output).gather(1, targets[:, None])[:, 0]
    probabilities[:, :, 0] = lp_original.exp()[:, None]
    if len(curve_rows):
        examples = torch.tensor([r.example for r in curve_rows])
        lp = log_probs(outputs, output).gather(1, targets[examples][:, None])[:, 0]
        for row, value in zip(curve_rows, lp.exp().tolist()):
            probabilities[row.example, row.data[0], row.data[1]] = value
    auc = torch.stack([curve_area(probabilities[b], int(steps[b])).mean()
                       for b in range(n_examples)])
    return ReplacementCurves(probabilities, steps, auc, targets, orders, history,
                             mlm_engine.stats, classifier.stats)


def auc_rep(forward_func: Callable, mlm: nn.Module, inputs: Tensor, attributions: Tensor,
            **kwargs: Any) -> Tensor:
    """Kim et al.'s AUC_rep per example (lower is better); arguments as in
    :func:`mlm_replacement_curves`. Report the mean over a dataset."""
    return mlm_replacement_curves(forward_func, mlm, inputs, attributions, **kwargs).auc


def _states_collate(token_rows: TokenRows, history: Tensor) -> Callable[[list[Row]], tuple]:
    """Classifier rows: ``Row.data = (sample, step)`` is that state of the row's example."""

    def collate(specs: list[Row]) -> tuple:
        examples = torch.tensor([r.example for r in specs])
        ids = torch.stack([history[r.example, r.data[0], r.data[1]] for r in specs])
        return token_rows.classifier_batch(examples, ids)

    return collate


def _masked_state_collate(token_rows: TokenRows, history: Tensor,
                          mask_token_id: int) -> Callable[[list[Row]], tuple]:
    """MLM rows: ``Row.data = (sample, step, masked positions, predicted position)``; the
    previous step's state with the feature's tokens masked."""

    def collate(specs: list[Row]) -> tuple:
        examples = torch.tensor([r.example for r in specs])
        ids = torch.stack([history[r.example, r.data[0], r.data[1] - 1] for r in specs])
        for row, spec in enumerate(specs):
            ids[row, list(spec.data[2])] = mask_token_id
        positions = torch.tensor([spec.data[3] for spec in specs])
        return token_rows.mlm_batch(examples, ids) + (positions,)

    return collate

