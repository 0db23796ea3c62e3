"""Input marginalisation (Kim, Yi, Kim & Yoon, EMNLP 2020) as a Captum attribution.

The attribution of token ``x_i`` for class ``y`` is its weight of evidence

    woe_i = log2 odds(y | x) - log2 odds(y | x without x_i),    odds = p / (1 - p),

    p(y | x without x_i) = sum_c  p(y | x with c at i) * p_MLM(c | x with [MASK] at i),

with the sum over a candidate set ``C_i`` and the MLM probabilities renormalised over it.
``C_i`` holds the tokens kept by the truncation (``threshold``: p_MLM > sigma, the paper's
adaptive truncation, sigma = 1e-5 by default; ``top_k``; ``top_p``: the smallest set of most
likely tokens with that much mass; several criteria keep their intersection), plus the
original token ``x_i`` always (Kim et al.'s Fig. 1 includes it). Special tokens are never
marginalised and, by default, never candidates; the MLM distribution is renormalised over the
non-special tokens before truncation.

Cost and batching, all through :class:`~captum_erasure._core.engine.PerturbationEngine`:

1. the unperturbed inputs through the classifier (one row per distinct input);
2. one masked copy per marginalised position through the MLM, with the vocabulary projection
   only at the masked position (:class:`~captum_erasure._core.masked_lm.PositionLogits`);
3. every (example, position, candidate) input through the classifier, all examples packed
   into full batches. Identical inputs are evaluated once: a candidate equal to the original
   token is the unperturbed input (step 1), and examples that agree everywhere but at the
   marginalised position share their masked copy and their candidate rows.

Words: with a ``feature_mask`` every token of a word is marginalised separately (the other
tokens intact, as the paper does with WordPiece tokens) and the word's score is the sum of its
tokens' weights of evidence (``word_reduce="mean"`` for the mean), spread onto each of its
tokens, Captum's convention. The paper's joint multi-token variant needs one MLM query per
candidate of the other token, a product of candidate sets, and is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn

from captum_erasure._core.engine import (
    EngineStats,
    PerturbationEngine,
    Row,
    engine_for_call,
)
from captum_erasure._core.inputs import (
    as_extra_args,
    check_positive_int,
    check_token_ids,
    feature_mask_like,
)
from captum_erasure._core.masked_lm import (
    MLMTokens,
    PositionLogits,
    TokenRows,
    check_shared_vocabulary,
    resolve_mlm_tokens,
    token_feature_mask,
)
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.scores import (
    check_outputs_fit_score,
    log_probs,
    resolve_targets,
)
from captum_erasure._core.text import feature_ids

DEFAULT_THRESHOLD = 1e-5  # Kim et al.'s sigma with pre-trained BERT
DEFAULT_EPS = 1e-6        # p and 1 - p are clipped here before odds
WORD_REDUCTIONS = ("sum", "mean")


# -- candidate sets ---------------------------------------------------------------------------
def candidate_distribution(logits: Tensor, excluded: Tensor | None) -> Tensor:
    """MLM probabilities (float64) renormalised over the tokens not ``excluded``."""
    probs = torch.softmax(logits.double(), dim=-1)
    if excluded is not None:
        probs = probs.masked_fill(excluded, 0.0)
        probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-300)
    return probs


def truncation_mask(probs: Tensor, threshold: float | None = None, top_k: int | None = None,
                    top_p: float | None = None) -> Tensor:
    """Tokens kept by every given criterion, for ``(rows, vocab)`` probabilities.

    ``threshold``: ``p > threshold``; ``top_k``: the ``k`` most likely; ``top_p``: the most
    likely tokens until their mass reaches ``top_p`` (the token that crosses it included).
    """
    keep = torch.ones_like(probs, dtype=torch.bool)
    if threshold is not None:
        keep &= probs > threshold
    if top_k is not None:
        ranked = probs.topk(min(top_k, probs.shape[-1]), dim=-1).indices
        keep &= torch.zeros_like(keep).scatter_(-1, ranked, True)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Mass of the more likely tokens (an exclusive cumulative sum, exact at the first).
        before = torch.cat([torch.zeros_like(sorted_probs[..., :1]),
                            sorted_probs.cumsum(-1)[..., :-1]], -1)
        keep &= torch.zeros_like(keep).scatter_(-1, order, before < top_p)
    return keep & (probs > 0)


def check_truncation(threshold: float | None, top_k: int | None,
                     top_p: float | None) -> tuple[float | None, int | None, float | None]:
    """Validated criteria; none given means the paper's ``threshold=1e-5``."""
    if threshold is None and top_k is None and top_p is None:
        threshold = DEFAULT_THRESHOLD
    if threshold is not None and not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    top_k = check_positive_int("top_k", top_k, allow_none=True)  # None is "no limit", 0 is not
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return threshold, top_k, top_p


# -- results ----------------------------------------------------------------------------------
@dataclass
class MarginalizationStats:
    """What one call cost."""

    mlm: EngineStats = field(default_factory=EngineStats)         # masked copies
    classifier: EngineStats = field(default_factory=EngineStats)  # originals + candidates
    positions: int = 0           # marginalised (example, position) pairs
    candidate_pairs: int = 0     # (position, candidate) pairs, original tokens included
    classifier_rows: int = 0     # distinct classifier inputs evaluated, originals included

    @property
    def classifier_forward_passes(self) -> int:
        return self.classifier.forward_passes


@dataclass
class MarginalizationResult:
    """Everything one :meth:`InputMarginalization.attribute_details` call computed.

    Per-position tensors are ``(n_examples, seq_len)``; positions that were not marginalised
    hold NaN (floats) or 0 (counts).
    """

    attributions: Tensor     # what ``attribute`` returns: token or word scores on tokens
    woe: Tensor              # float64 weight of evidence of each marginalised token
    p_original: Tensor       # (n_examples,) float64 p(y | x)
    p_marginal: Tensor       # float64 p(y | x without x_i)
    n_candidates: Tensor     # candidates per position (original token included)
    kept_mass: Tensor        # MLM mass of the kept candidates, before renormalisation
    targets: Tensor          # (n_examples,) the class y
    original_outputs: Tensor  # (n_examples, n_outputs)
    feature_mask: Tensor     # (n_examples, seq_len) features the attributions refer to
    stats: MarginalizationStats


@dataclass
class _PositionGroup:
    """Marginalised positions whose inputs agree everywhere but at the position itself: one
    masked copy, one candidate set."""

    example: int                 # a representative example
    position: int
    originals: dict[int, int]    # original token at the position -> a (canonical) example
    tokens: Tensor | None = None       # truncated candidates (original tokens not forced in)
    probs: Tensor | None = None        # their renormalised MLM probabilities
    original_probs: dict[int, float] = field(default_factory=dict)


class InputMarginalization(UsesEngine, PerturbationAttribution):
    """Weight of evidence of each token, marginalising it out with a masked language model.

    Args:
        forward_func: the classifier, called as ``forward_func(input_ids,
            *additional_forward_args)``; returns ``(rows, n_classes)`` logits (or ``output=``
            ``"probs"``/``"log_probs"``) or an HF output with ``.logits``.
        mlm: a masked LM with the classifier's vocabulary (any HF ``AutoModelForMaskedLM``,
            called as ``mlm(input_ids=..., attention_mask=...)``).
        tokenizer: the classifier's tokenizer: gives ``[MASK]`` and the special tokens and is
            checked against ``mlm_tokenizer`` and the MLM's size. Without it they come from
            ``mask_token_id=``/``special_token_ids=`` or the MLM's config.
        exclude_special_candidates: keep special tokens out of the candidate sets (default).
        batch_size, max_tokens, device, autocast: classifier batching (see the engine);
        ``mlm_batch_size``/``mlm_device`` the same for the MLM (default: as the classifier's).
        attention_mask_index: where the attention mask sits in ``additional_forward_args``.
        eps: ``p`` is clipped to ``[eps, 1 - eps]`` before the log-odds.
    """

    def __init__(self, forward_func: Callable, mlm: nn.Module, *, tokenizer: Any = None,
                 mlm_tokenizer: Any = None, mask_token_id: int | None = None,
                 special_token_ids: Any = None, exclude_special_candidates: bool = True,
                 mlm_batch_size: int | None = None,
                 mlm_device: torch.device | str | None = None, attention_mask_index: int = 0,
                 eps: float = DEFAULT_EPS, options: EngineOptions | None = None,
                 **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps}")
        self.mlm = mlm
        self.tokens: MLMTokens = resolve_mlm_tokens(mlm, mlm_tokenizer or tokenizer,
                                                    mask_token_id, special_token_ids)
        check_shared_vocabulary(self.tokens, forward_func, tokenizer, mlm_tokenizer)
        self.exclude_special_candidates = exclude_special_candidates
        self.mlm_batch_size = mlm_batch_size
        self.mlm_device = mlm_device
        self.attention_mask_index = attention_mask_index
        self.eps = eps
        self.last_result: MarginalizationResult | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        return False

    # -- Captum API -------------------------------------------------------------------------
    @log_usage(part_of_slo=True)
    @attribute_call
    def attribute(self, inputs: Tensor | tuple[Tensor], target: Any = None,
                  additional_forward_args: Any = None, feature_mask: Tensor | None = None,
                  threshold: float | None = None, top_k: int | None = None,
                  top_p: float | None = None, perturbations_per_eval: int | None = None,
                  show_progress: bool = False, word_reduce: str = "sum") -> Any:
        """Weight of evidence per token (or per word with ``feature_mask``, on each of its
        tokens), shaped like ``inputs``; 0 where nothing was marginalised. The full result
        (p values, candidate counts, kept mass, cost) is in ``self.last_result``."""
        is_tuple = isinstance(inputs, tuple)
        if is_tuple and len(inputs) != 1:
            raise ValueError("InputMarginalization takes one input tensor (token ids)")
        ids = inputs[0] if is_tuple else inputs
        if isinstance(feature_mask, tuple):
            feature_mask = feature_mask[0]
        result = self.attribute_details(
            ids, target, additional_forward_args, feature_mask, threshold=threshold,
            top_k=top_k, top_p=top_p, perturbations_per_eval=perturbations_per_eval,
            show_progress=show_progress, word_reduce=word_reduce)
        attr = result.attributions.to(ids.device)
        return (attr,) if is_tuple else attr

    @attribute_call
    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("InputMarginalization does not support futures")

    # -- the computation --------------------------------------------------------------------
    @attribute_call
    def attribute_details(self, inputs: Tensor, target: Any = None,
                          additional_forward_args: Any = None,
                          feature_mask: Tensor | None = None, *, threshold: float | None = None,
                          top_k: int | None = None, top_p: float | None = None,
                          perturbations_per_eval: int | None = None,
                          show_progress: bool = False,
                          word_reduce: str = "sum") -> MarginalizationResult:
        """Like :meth:`attribute`, returning the whole :class:`MarginalizationResult`."""
        criteria = check_truncation(threshold, top_k, top_p)
        if word_reduce not in WORD_REDUCTIONS:
            raise ValueError(f"word_reduce must be one of {WORD_REDUCTIONS}, got {word_reduce!r}")
        if not isinstance(inputs, Tensor) or inputs.dim() != 2 or inputs.is_floating_point():
            raise ValueError("inputs must be a (batch, sequence) tensor of token ids, got "
                             f"{getattr(inputs, 'shape', type(inputs))}")
        ids = inputs.cpu()
        extra = as_extra_args(additional_forward_args)
        attention = self._attention_mask(ids, extra)
        check_token_ids(ids, self.forward_func, attention)  # rows are cut to the attended width
        check_shared_vocabulary(self.tokens, input_ids=inputs)
        specials = self.tokens.special_tensor()
        features = self._feature_mask(ids, attention, feature_mask, specials)
        marginalised = (features >= 0) & ~torch.isin(ids, specials)
        if attention is not None:
            marginalised &= attention.ne(0)
        for example, row in enumerate(marginalised):
            if not row.any():
                raise ValueError(f"example {example} has no token to marginalise (empty text, "
                                 "only special tokens, or a feature mask that excludes all)")
        n_examples = ids.shape[0]
        token_rows = TokenRows(ids, extra, attention)

        classifier = engine_for_call(
            self.forward_func, self.forward_func, n_examples=n_examples,
            perturbations_per_eval=perturbations_per_eval, batch_size=self.batch_size,
            max_tokens=self.max_tokens, device=self.device, autocast=self.autocast,
            show_progress=show_progress)
        original_outputs, canonical = self._run_originals(classifier, token_rows)
        check_outputs_fit_score(original_outputs, "log_prob_diff", self.output,
                                type(self).__name__)
        targets = resolve_targets(target, original_outputs)
        original_log_probs = log_probs(original_outputs, self.output)

        groups, group_of = self._position_groups(token_rows, marginalised, canonical)
        mlm_engine = engine_for_call(
            PositionLogits(self.mlm), self.mlm, n_examples=n_examples,
            perturbations_per_eval=None, batch_size=self.mlm_batch_size or self.batch_size,
            max_tokens=self.max_tokens, device=self.mlm_device, autocast=self.autocast,
            show_progress=show_progress)
        self._run_mlm(mlm_engine, token_rows, groups, criteria)

        p_marginal, one_minus_marginal, n_candidates, kept_mass = self._marginalise(
            classifier, token_rows, groups, group_of, targets, original_log_probs)
        lp_original = original_log_probs.gather(1, targets[:, None])[:, 0]
        p_original = lp_original.exp()
        woe = self._log2_odds(p_original, -torch.expm1(lp_original))[:, None] - \
            self._log2_odds(p_marginal, one_minus_marginal)
        attributions = self._feature_scores(woe, features, marginalised, word_reduce)

        stats = MarginalizationStats(mlm_engine.stats, classifier.stats,
                                     int(marginalised.sum()), int(n_candidates.sum()),
                                     classifier.stats.rows)
        result = MarginalizationResult(
            attributions.float(), woe, p_original, p_marginal, n_candidates, kept_mass, targets,
            original_outputs, features, stats)
        self.last_result = result
        return result

    # -- steps ------------------------------------------------------------------------------
    def _attention_mask(self, ids: Tensor, extra: tuple) -> Tensor | None:
        idx = self.attention_mask_index
        mask = extra[idx] if idx < len(extra) else None
        return mask.cpu() if isinstance(mask, Tensor) and mask.shape == ids.shape else None

    @staticmethod
    def _feature_mask(ids: Tensor, attention: Tensor | None, feature_mask: Tensor | None,
                      specials: Tensor) -> Tensor:
        if feature_mask is None:
            return token_feature_mask(ids, attention, specials)
        return feature_mask_like(feature_mask, ids)

    def _run_originals(self, engine: PerturbationEngine,
                       token_rows: TokenRows) -> tuple[Tensor, Tensor]:
        """Outputs of the unperturbed inputs, each distinct input once; ``canonical[b]`` is the
        first example with the same input as ``b``."""
        first_of: dict[bytes, int] = {}
        canonical = torch.tensor([first_of.setdefault(token_rows.content(b), b)
                                  for b in range(token_rows.n_examples)])
        distinct = sorted(set(canonical.tolist()))
        rows = [Row(b, -1, token_rows.length(b), (-1, -1)) for b in distinct]
        outputs = engine.run(rows, _replacing_one_token(token_rows), desc="originals")
        index = {b: i for i, b in enumerate(distinct)}
        return outputs[torch.tensor([index[int(c)] for c in canonical])], canonical

    @staticmethod
    def _position_groups(token_rows: TokenRows, marginalised: Tensor,
                         canonical: Tensor) -> tuple[list[_PositionGroup], dict]:
        groups: list[_PositionGroup] = []
        index: dict[bytes, int] = {}
        group_of: dict[tuple[int, int], int] = {}
        for b, i in marginalised.nonzero().tolist():
            key = token_rows.content(b, blank=i)
            g = index.setdefault(key, len(groups))
            if g == len(groups):
                groups.append(_PositionGroup(b, i, {}))
            groups[g].originals.setdefault(int(token_rows.ids[b, i]), int(canonical[b]))
            group_of[b, i] = g
        return groups, group_of

    def _run_mlm(self, engine: PerturbationEngine, token_rows: TokenRows,
                 groups: list[_PositionGroup], criteria: tuple) -> None:
        """One masked copy per group through the MLM; keeps each group's truncated candidate
        set and the probabilities of its original tokens."""
        excluded = None
        if self.exclude_special_candidates:
            excluded = torch.zeros(self.tokens.vocab_size, dtype=torch.bool)
            excluded[self.tokens.special_tensor()] = True
        rows = (Row(g.example, slot, token_rows.length(g.example), g.position)
                for slot, g in enumerate(groups))

        def collate(specs: list[Row]) -> tuple:
            examples = torch.tensor([r.example for r in specs])
            positions = torch.tensor([r.data for r in specs])
            ids = token_rows.ids[examples].clone()
            ids[torch.arange(len(specs)), positions] = self.tokens.mask_token_id
            return token_rows.mlm_batch(examples, ids) + (positions,)

        for specs, logits in engine.iter_outputs(rows, collate, total=len(groups),
                                                 desc="masked LM"):
            if logits.shape[-1] != self.tokens.vocab_size:
                raise ValueError(f"the MLM returned {logits.shape[-1]} logits per position; "
                                 f"expected its vocabulary size {self.tokens.vocab_size}")
            probs = candidate_distribution(logits, excluded)
            keep = truncation_mask(probs, *criteria)
            for row, spec in enumerate(specs):
                group = groups[spec.slot]
                group.tokens = keep[row].nonzero().flatten()
                group.probs = probs[row, group.tokens]
                group.original_probs = {t: float(probs[row, t]) for t in group.originals}

    def _marginalise(self, engine: PerturbationEngine, token_rows: TokenRows,
                     groups: list[_PositionGroup], group_of: dict, targets: Tensor,
                     original_log_probs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Evaluates the distinct candidate inputs and sums them into p(y | x without x_i)."""
        # A candidate input is keyed by (group, target): inputs with different targets may
        # coincide, but then one stored probability per input would not do.
        candidate_rows: dict[tuple[int, int], tuple[int, Tensor]] = {}
        n_rows = 0
        for (b, i), g in group_of.items():
            key = (g, int(targets[b]))
            if key not in candidate_rows:
                fresh = groups[g].tokens[~torch.isin(groups[g].tokens,
                                                     torch.tensor(list(groups[g].originals)))]
                candidate_rows[key] = (n_rows, fresh)
                n_rows += len(fresh)
        p_rows = torch.empty(n_rows, dtype=torch.float64)
        q_rows = torch.empty(n_rows, dtype=torch.float64)  # 1 - p, accurate near p = 1
        row_targets = torch.empty(n_rows, dtype=torch.long)
        for (g, t), (start, fresh) in candidate_rows.items():
            row_targets[start:start + len(fresh)] = t

        def specs() -> Iterator[Row]:
            for (g, _), (start, fresh) in candidate_rows.items():
                group = groups[g]
                length = token_rows.length(group.example)
                for offset, token in enumerate(fresh.tolist()):
                    yield Row(group.example, start + offset, length, (group.position, token))

        collate = _replacing_one_token(token_rows)
        for chunk, outputs in engine.iter_outputs(specs(), collate, total=n_rows,
                                                  desc="candidates"):
            slots = torch.tensor([r.slot for r in chunk])
            lp = log_probs(outputs, self.output).gather(1, row_targets[slots][:, None])[:, 0]
            p_rows[slots], q_rows[slots] = lp.exp(), -torch.expm1(lp)

        shape = token_rows.ids.shape
        p_marginal = torch.full(shape, float("nan"), dtype=torch.float64)
        q_marginal = torch.full(shape, float("nan"), dtype=torch.float64)
        n_candidates = torch.zeros(shape, dtype=torch.long)
        kept_mass = torch.full(shape, float("nan"), dtype=torch.float64)
        original_p, original_q = original_log_probs.exp(), -torch.expm1(original_log_probs)
        for (b, i), g in group_of.items():
            group, t = groups[g], int(targets[b])
            start, fresh = candidate_rows[g, t]
            own = int(token_rows.ids[b, i])
            p_c = torch.empty(len(group.tokens), dtype=torch.float64)
            q_c = torch.empty(len(group.tokens), dtype=torch.float64)
            is_fresh = ~torch.isin(group.tokens, torch.tensor(list(group.originals)))
            p_c[is_fresh] = p_rows[start:start + len(fresh)]
            q_c[is_fresh] = q_rows[start:start + len(fresh)]
            for j in (~is_fresh).nonzero().flatten().tolist():
                source = group.originals[int(group.tokens[j])]
                p_c[j], q_c[j] = original_p[source, t], original_q[source, t]
            weights = group.probs
            if not (group.tokens == own).any():  # the original token is always a candidate
                source = group.originals[own]
                weights = torch.cat([weights, weights.new_tensor([group.original_probs[own]])])
                p_c = torch.cat([p_c, original_p[source, t].reshape(1)])
                q_c = torch.cat([q_c, original_q[source, t].reshape(1)])
            mass = weights.sum()
            w = weights / mass if mass > 0 else torch.ones_like(weights) / len(weights)
            p_marginal[b, i], q_marginal[b, i] = (w * p_c).sum(), (w * q_c).sum()
            n_candidates[b, i], kept_mass[b, i] = len(weights), mass
        return p_marginal, q_marginal, n_candidates, kept_mass

    def _log2_odds(self, p: Tensor, one_minus_p: Tensor) -> Tensor:
        """log2 of p / (1 - p) with p clipped to [eps, 1 - eps]; ``one_minus_p`` is passed
        separately because 1 - p computed from p loses all digits when p is near 1."""
        high = 1 - self.eps
        return torch.log2(p.clamp(self.eps, high)) - torch.log2(one_minus_p.clamp(self.eps, high))

    @staticmethod
    def _feature_scores(woe: Tensor, features: Tensor, marginalised: Tensor,
                        word_reduce: str) -> Tensor:
        """Token scores: each feature's reduced WoE on each of its tokens, 0 elsewhere."""
        scores = torch.zeros(woe.shape, dtype=torch.float64)
        for b in range(woe.shape[0]):
            for f in feature_ids(features[b]):
                tokens = features[b] == f
                values = woe[b][tokens & marginalised[b]]
                if len(values):
                    scores[b][tokens] = values.sum() if word_reduce == "sum" else values.mean()
        return scores



def _replacing_one_token(token_rows: TokenRows) -> Callable[[list[Row]], tuple]:
    """Classifier collate: ``Row.data = (position, token)`` puts ``token`` at ``position`` of
    the row's example (position -1: the unperturbed input)."""

    def collate(specs: list[Row]) -> tuple:
        examples = torch.tensor([r.example for r in specs])
        ids = token_rows.ids[examples].clone()
        for row, spec in enumerate(specs):
            position, token = spec.data
            if position >= 0:
                ids[row, position] = token
        return token_rows.classifier_batch(examples, ids)

    return collate
