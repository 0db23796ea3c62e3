"""Erasure attribution of a causal LM's continuation to the units of its prompt, with
prefix key/value reuse (issue 15).

For every unit ``u`` of the prompt (word, token, sentence or given segment) and every token
``y_j`` of the continuation ``y``, the attribution compares ``log P(y_j | x, y_<j)`` with the
same log-probability when ``u`` is erased from the prompt ``x`` (teacher forcing, as Captum's
``LLMAttribution``); the sequence attribution compares ``log P(y | x)``, the sum over ``j``.
``score="log_prob_diff"`` is the plain difference (Captum's ``FeatureAblation`` inside
``LLMAttribution``), ``"eq1"`` Li et al.'s Eq. 1, the difference divided by ``-log P``.
With a ``foil`` the quantity is ``log P(y | x) - log P(foil | x)`` (contrastive).

Cost: the unperturbed row of each example computes the prompt's keys and values once; a
variant erasing a unit that starts at position ``k`` reuses positions ``0..k-1`` and computes
only its suffix (for deletion, at the suffix's new positions). All rows of all examples go
through the shared :class:`~captum_erasure._core.engine.PerturbationEngine` (budget in
suffix tokens with ``max_tokens``), sorted by length so rows of similar suffixes share a
forward.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from captum.attr import LLMAttributionResult, PerturbationAttribution
from captum.attr._core.llm_attr import _convert_ids_to_pretty_tokens
from captum.log import log_usage
from torch import Tensor, nn

from captum_erasure._core.engine import EngineStats, Row
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.scores import EQ1_MIN_DENOMINATOR
from captum_erasure._core.text import eval_mode
from captum_erasure.attr._kv_prefix import (
    PrefixStore,
    Suffix,
    SuffixForward,
    TokenCounter,
    collate_suffixes,
    greedy_continuation,
)
from captum_erasure.attr._prompt_units import Prompt, encode_prompt, variant

GENERATION_MODES = ("delete", "replace")
GENERATION_SCORES = ("eq1", "log_prob_diff")
DEFAULT_MAX_TOKENS = 1024  # suffix tokens per forward when no budget is given


@dataclass
class GenerationStats(EngineStats):
    """Cost of one call: the engine's forwards, rows and OOM retries, token positions computed
    (``padded``: as run, rows x longest suffix; ``real``: without padding) and prompt
    positions read from the cache instead of computed (``reused``)."""

    token_positions: int = 0
    real_token_positions: int = 0
    reused_positions: int = 0


@dataclass
class ExampleScores:
    """One prompt's attributions (float64) and what they were computed against."""

    prompt: Prompt
    target_ids: list[int]
    foil_ids: list[int] | None
    seq_attr: Tensor          # (n_units,)
    token_attr: Tensor        # (n_target [+ n_foil], n_units); foil rows negated
    original_log_probs: Tensor  # (n_target,) log P(y_j | x, y_<j)
    foil_log_probs: Tensor | None


@dataclass
class ContinuationScores:
    """Everything one :meth:`ContinuationErasure.attribute_details` call computed."""

    examples: list[ExampleScores]
    results: list[LLMAttributionResult]
    stats: GenerationStats = field(default_factory=GenerationStats)


def _as_list(value: Any, n: int, name: str) -> list:
    if value is None or isinstance(value, (str, Tensor)):
        return [value] * n if n == 1 or value is None else _same_for_all(value, n, name)
    value = list(value)
    if len(value) != n:
        raise ValueError(f"got {len(value)} {name}s for {n} prompts")
    return value


def _same_for_all(value: Any, n: int, name: str) -> list:
    raise ValueError(f"{n} prompts need one {name} each (a list), got a single one")


class ContinuationErasure(UsesEngine, PerturbationAttribution):
    """Erasure attribution of a causal LM's continuation to the units of its prompt.

    Args:
        model: a transformers causal LM (``forward(input_ids, attention_mask, position_ids,
            cache/past_key_values, logits_to_keep)``), e.g. GPT-2 or Llama.
        tokenizer: its fast tokenizer (a pad token is not needed).
        reuse_prefix: reuse the unperturbed prompt's keys/values (default); ``False``
            recomputes every variant from its first token (same results, the reference).
        group_size: examples whose prompt caches are held at once (their rows are packed
            together).
        options / engine_options: the engine's ``batch_size``, ``max_tokens`` (suffix tokens
            per forward), ``device``, ``autocast`` (see :class:`EngineOptions`).

    ``attribute`` returns Captum's :class:`LLMAttributionResult` (a list for a list of
    prompts), so ``plot_token_attr`` / ``plot_seq_attr`` work; ``attribute_details`` returns
    :class:`ContinuationScores`, kept in ``last_result``; ``last_stats`` holds the cost.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, reuse_prefix: bool = True,
                 group_size: int = 16, options: EngineOptions | None = None,
                 **engine_options: Any) -> None:
        super().__init__(model)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        self.model = model
        self.tokenizer = tokenizer
        self.reuse_prefix = reuse_prefix
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = group_size
        self.last_result: ContinuationScores | None = None
        self.last_stats: GenerationStats | None = None

    # -- public -----------------------------------------------------------------------------
    @log_usage(part_of_slo=True)
    @attribute_call(label_targets=False)
    def attribute(self, inputs: str | Sequence[Any], target: Any = None, *, foil: Any = None,
                  units: str = "words", mode: str = "delete", score: str = "log_prob_diff",
                  baseline_token: int | str | None = None, max_new_tokens: int = 25,
                  show_progress: bool = False) -> LLMAttributionResult | list:
        """Attributions of the continuation ``target`` of each prompt in ``inputs``.

        Args:
            inputs: a prompt (string), or a list of prompts; with ``units="segments"`` a
                prompt is a list of strings (its segments, concatenated as they are).
            target: the continuation (a string, tokenized without special tokens as in
                Captum, or a tensor of token ids), one per prompt; ``None``: the model's
                greedy continuation of at most ``max_new_tokens`` tokens.
            foil: a contrasting continuation per prompt (``score="log_prob_diff"`` only):
                the attributed quantity is ``log P(target) - log P(foil)``.
            units: ``"words"`` (the tokenizer's words), ``"tokens"``, ``"sentences"`` or
                ``"segments"``.
            mode: ``"delete"`` (the unit's tokens removed) or ``"replace"`` (each replaced by
                ``baseline_token``; default the tokenizer's unk, pad or eos token).
            score: ``"log_prob_diff"`` (default, Captum's) or ``"eq1"`` (Li et al.).
        Returns:
            one :class:`LLMAttributionResult` for a prompt, a list for a list of prompts:
            ``seq_attr`` (n_units,), ``token_attr`` (n_target_tokens, n_units) (then, with a
            foil, one row per foil token holding the negated drop of its log-probability, so
            the rows sum to ``seq_attr``), ``output_probs`` of the continuation's tokens.
        """
        single = isinstance(inputs, str) or (units == "segments" and inputs and
                                             isinstance(inputs[0], str))
        details = self.attribute_details(
            [inputs] if single else inputs, [target] if single else target,
            foil=[foil] if single and foil is not None else foil, units=units, mode=mode,
            score=score, baseline_token=baseline_token, max_new_tokens=max_new_tokens,
            show_progress=show_progress)
        return details.results[0] if single else details.results

    @attribute_call(label_targets=False)
    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("attribute_future is not implemented for "
                                  "ContinuationErasure")

    @attribute_call(label_targets=False)
    def attribute_details(self, inputs: Sequence[Any], target: Any = None, *, foil: Any = None,
                          units: str = "words", mode: str = "delete",
                          score: str = "log_prob_diff", baseline_token: int | str | None = None,
                          max_new_tokens: int = 25,
                          show_progress: bool = False) -> ContinuationScores:
        """``attribute``'s arguments (``inputs`` always a list); the rich result."""
        if mode not in GENERATION_MODES:
            raise ValueError(f"mode must be one of {GENERATION_MODES}, got {mode!r}")
        if score not in GENERATION_SCORES:
            raise ValueError(f"score must be one of {GENERATION_SCORES}, got {score!r}")
        if isinstance(inputs, str):
            inputs = [inputs]
        prompts = [encode_prompt(self.tokenizer, p, units) for p in inputs]
        n = len(prompts)
        if n == 0:
            raise ValueError("no prompts given")
        foils = _as_list(foil, n, "foil")
        if foil is not None and score != "log_prob_diff":
            raise ValueError("a foil (contrastive target) needs score='log_prob_diff': Eq. 1 "
                             "divides by -log P, which a difference of log-probabilities is not")
        baseline = self._baseline_id(baseline_token) if mode == "replace" else None
        with eval_mode(self.model):
            targets = [self._continuation(p, t, max_new_tokens, "target")
                       for p, t in zip(prompts, _as_list(target, n, "target"))]
            foil_ids = [None if f is None else self._continuation(p, f, 0, "foil")
                        for p, f in zip(prompts, foils)]
            for p, t, f in zip(prompts, targets, foil_ids):
                self._check_context(p, t, f)
            stats = GenerationStats()
            examples: list[ExampleScores] = []
            for start in range(0, n, self.group_size):
                stop = min(n, start + self.group_size)
                examples += self._score_group(prompts[start:stop], targets[start:stop],
                                              foil_ids[start:stop], mode, score, baseline,
                                              show_progress, stats)
        results = [self._llm_result(e) for e in examples]
        self.last_stats = stats
        self.last_result = ContinuationScores(examples, results, stats)
        return self.last_result

    # -- checks and inputs ------------------------------------------------------------------
    def _baseline_id(self, baseline_token: int | str | None) -> int:
        tok = self.tokenizer
        if isinstance(baseline_token, str):
            return int(tok.convert_tokens_to_ids(baseline_token))
        if baseline_token is not None:
            return int(baseline_token)
        for candidate in (tok.unk_token_id, tok.pad_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        raise ValueError("mode='replace' needs baseline_token= (the tokenizer has no unk, pad "
                         "or eos token)")

    def _continuation(self, prompt: Prompt, value: Any, max_new_tokens: int,
                      name: str) -> list[int]:
        if value is None:
            if max_new_tokens < 1:
                raise ValueError("max_new_tokens must be >= 1")
            limit = self._max_positions()
            if limit is not None:
                max_new_tokens = min(max_new_tokens, limit - len(prompt.ids))
                if max_new_tokens < 1:
                    self._check_context(prompt, [0], None)
            return greedy_continuation(self.model, prompt.ids, max_new_tokens,
                                       self.tokenizer.eos_token_id)
        if isinstance(value, str):
            ids = list(self.tokenizer.encode(value, add_special_tokens=False))
        elif isinstance(value, Tensor):
            ids = [int(t) for t in value.reshape(-1).tolist()]
        else:
            ids = [int(t) for t in value]
        if not ids:
            raise ValueError(f"the {name} continuation {value!r} has no tokens")
        return ids

    def _max_positions(self) -> int | None:
        config = getattr(self.model, "config", None)
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(config, name, None)
            if value:
                return int(value)
        return None

    def _check_context(self, prompt: Prompt, target: list[int], foil: list[int] | None) -> None:
        limit = self._max_positions()
        longest = len(prompt.ids) + max(len(target), len(foil or ()))
        if limit is not None and longest > limit:
            raise ValueError(
                f"the prompt ({len(prompt.ids)} tokens) and its continuation "
                f"({longest - len(prompt.ids)} tokens) need {longest} positions, more than the "
                f"model's context of {limit}; shorten the prompt or the continuation")

    # -- rows and scores --------------------------------------------------------------------
    def _rows(self, prompts: list[Prompt], conts: list[list[list[int]]], mode: str,
              baseline: int | None, perturbed: bool):
        """Engine rows: slot -1 the unperturbed rows (the target's captures the prompt's
        cache), else slot = unit erased; ``example`` indexes (example, continuation) pairs."""
        bos = self.tokenizer.bos_token_id
        pair = 0
        for e, prompt in enumerate(prompts):
            for c, cont in enumerate(conts[e]):
                if not perturbed:
                    yield self._row(pair, -1, prompt.ids, 0, cont, c, capture=c == 0,
                                    prompt_length=len(prompt.ids))
                else:
                    for unit in range(len(prompt.units)):
                        ids, first = variant(prompt, unit, mode, baseline, bos)
                        yield self._row(pair, unit, ids, first if self.reuse_prefix else 0,
                                        cont, c)
                pair += 1

    @staticmethod
    def _row(pair: int, slot: int, ids: list[int], first: int, cont: list[int], c: int,
             capture: bool = False, prompt_length: int = 0) -> Row:
        start = min(first, len(ids) - 1)  # the prompt's last output predicts cont[0]
        tokens = tuple(ids[start:] + cont[:-1])
        suffix = Suffix(tokens, start, len(ids) - 1 - start, tuple(cont), c, capture,
                        prompt_length)
        return Row(pair, slot, len(tokens), suffix)

    def _score_group(self, prompts: list[Prompt], targets: list[list[int]],
                     foils: list[list[int] | None], mode: str, score: str,
                     baseline: int | None, show_progress: bool,
                     stats: GenerationStats) -> list[ExampleScores]:
        conts = [[t] if f is None else [t, f] for t, f in zip(targets, foils)]
        n_pairs = sum(len(c) for c in conts)
        counter = TokenCounter()
        store = PrefixStore(len(prompts)) if self.reuse_prefix else None
        # the store is indexed by example, rows by (example, continuation) pair
        pair_example = torch.tensor([e for e, c in enumerate(conts) for _ in c])
        forward = SuffixForward(self.model, store, counter, max(len(p.ids) for p in prompts),
                                max(len(c) for pair in conts for c in pair))

        def engine_forward(ids, positions, attention, keep, tgt, n_valid, pairs, meta):
            examples = pair_example[pairs.cpu()]
            meta = [(int(pair_example[p]), s) for p, s in meta]
            return forward(ids, positions, attention, keep, tgt, n_valid, examples, meta)

        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        max_position = self._max_positions()

        def collate(rows):
            return collate_suffixes(rows, pad, max_position)

        options = self.options
        if options.batch_size is None and options.max_tokens is None:
            # rows differ in length (a variant's suffix starts at its erased unit): a token
            # budget keeps the rows of a forward alike, so little of it is padding
            options = dataclasses.replace(options, max_tokens=DEFAULT_MAX_TOKENS)
        engine = options.engine(engine_forward, self.model, n_examples=n_pairs,
                                show_progress=show_progress)
        originals = engine.run(list(self._rows(prompts, conts, mode, baseline, False)), collate,
                               desc="unperturbed").double()
        n_units = max(len(p.units) for p in prompts)
        width = originals.shape[1]
        erased = torch.zeros(n_pairs, n_units, width, dtype=torch.float64)
        total = sum(len(p.units) * len(c) for p, c in zip(prompts, conts))
        for rows, outs in engine.iter_outputs(self._rows(prompts, conts, mode, baseline, True),
                                              collate, total=total,
                                              desc=f"{type(self).__name__} ({mode})"):
            pairs = torch.tensor([r.example for r in rows])
            slots = torch.tensor([r.slot for r in rows])
            erased[pairs, slots, :outs.shape[1]] = outs.double()
        stats += engine.stats
        stats.token_positions += counter.padded
        stats.real_token_positions += counter.real
        stats.reused_positions += counter.reused
        return self._example_scores(prompts, targets, foils, originals, erased, score)

    @staticmethod
    def _example_scores(prompts, targets, foils, originals, erased, score):
        out, pair = [], 0
        for prompt, target, foil in zip(prompts, targets, foils):
            n_units, n_t = len(prompt.units), len(target)
            drop = originals[pair, None, :1 + n_t] - erased[pair, :n_units, :1 + n_t]
            if score == "eq1":
                drop = drop / (-originals[pair, None, :1 + n_t]).clamp_min(EQ1_MIN_DENOMINATOR)
            seq, token = drop[:, 0], drop[:, 1:].T
            foil_lp = None
            if foil is not None:
                n_f = len(foil)
                foil_drop = originals[pair + 1, None, :1 + n_f] - \
                    erased[pair + 1, :n_units, :1 + n_f]
                seq = seq - foil_drop[:, 0]
                token = torch.cat([token, -foil_drop[:, 1:].T])
                foil_lp = originals[pair + 1, 1:1 + n_f].clone()
            out.append(ExampleScores(prompt, target, foil, seq.clone(), token.clone(),
                                     originals[pair, 1:1 + n_t].clone(), foil_lp))
            pair += 1 if foil is None else 2
        return out

    # -- result -----------------------------------------------------------------------------
    def _pretty(self, ids: list[int]) -> list[str]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tokens = _convert_ids_to_pretty_tokens(torch.tensor(ids), self.tokenizer)
            if len(tokens) == len(ids):
                return tokens
        except Exception:  # noqa: BLE001 - any tokenizer oddity: fall back to raw tokens
            pass
        return [str(t) for t in self.tokenizer.convert_ids_to_tokens(ids)]

    def _llm_result(self, e: ExampleScores) -> LLMAttributionResult:
        dtype = next(self.model.parameters()).dtype
        dtype = torch.float64 if dtype == torch.float64 else torch.float32
        output_tokens = self._pretty(e.target_ids)
        probs = e.original_log_probs.exp()
        if e.foil_ids is not None:
            output_tokens += [f"foil: {t}" for t in self._pretty(e.foil_ids)]
            probs = torch.cat([probs, e.foil_log_probs.exp()])
        return LLMAttributionResult(
            input_tokens=list(e.prompt.units), output_tokens=output_tokens,
            seq_attr=e.seq_attr.to(dtype), token_attr=e.token_attr.to(dtype),
            output_probs=probs.to(dtype))
