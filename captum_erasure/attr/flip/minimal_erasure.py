"""Minimal erasure that flips the decision (Li, Monroe & Jurafsky 2016, section 5).

Find a small set D of words whose erasure changes the classifier's label (Eq. 2). A policy
(:mod:`.policy`) reads the classifier's own representation of every word and defines a
Bernoulli over z_t (1 = erase word t); it is trained with REINFORCE on the reward of Eqs. 3-5
and a learned baseline (Eq. 7), the classifier frozen. Choices the paper leaves open are
documented in :mod:`.policy` and the README (MLP policy, gamma = 0.002, a KL pull towards a
sparse Bernoulli(0.1) prior against erasing everything).

``fit`` trains the policy once over a corpus (amortised). ``explain``/``attribute`` search per
example within ``max_evaluations`` predictions per text (everything counted): leave-one-out
probes of the policy's top ``probes`` words, then rounds of the per-example log-odds model of
:mod:`.search`, then (no flip in budget) the greedy path, the one step that may exceed the
budget. The smallest flipping set found is pruned to 1-minimal and verified by a forward pass
on the remaining text. All masks of all examples of a round go through the shared engine in
one batched pass; a mask already evaluated is never evaluated again. ``search="policy"`` is
the paper's procedure instead: the policy's own masks, verified and pruned
(:mod:`.policy_search`).
"""

from __future__ import annotations

import copy
import functools
import itertools
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_erasure._core.forwards import pad_token_id_of
from captum_erasure._core.inputs import (
    attribute_inputs,
    baseline_token_from,
    check_positive_int,
)
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.text import encode_texts, eval_mode
from captum_erasure._core.word_sets import SetEvaluator
from captum_erasure.attr.flip._common import (
    FlipResult,
    flip_targets,
    is_flip,
    prune,
    tensor_call_words,
    verified_results,
)
from captum_erasure.attr.flip.policy import (
    ErasurePolicy,
    HiddenStates,
    RewardBaseline,
    sentence_pairs,
    word_representations,
)
from captum_erasure.attr.flip.policy_fit import reinforce_step
from captum_erasure.attr.flip.policy_search import policy_search
from captum_erasure.attr.flip.search import (
    FIRST_FLIP_RESERVE,
    SearchBatch,
    TextSearch,
    greedy_fallback,
    record_masks,
    start_searches,
)

SEARCHES = ("guided", "policy")


class MinimalErasure(UsesEngine, PerturbationAttribution):
    """Smallest set of words whose erasure flips the decision: a REINFORCE policy (amortised,
    ``fit``) and a per-example model-guided search within a budget of predictions.

    Args:
        forward_func: the classifier, called as ``forward_func(input_ids, attention_mask)``;
            returns logits (or ``output="probs"``/``"log_probs"``) or an HF output with
            ``.logits``. It is never trained.
        representation: the policy's input, a callable ``(input_ids, attention_mask) ->
            (batch, seq, dim)`` of token vectors (pooled per word); default: the classifier's
            last hidden states (:class:`HiddenStates`).
        gamma: weight of the contiguity regulariser (Eq. 4).
        samples: masks sampled per example per step of ``fit``.
        max_evaluations: predictions per text the explain-time search stays within (see the
            module docstring); ``explain``/``attribute`` can override it per call.
        probes: words erased one at a time first, in the policy's order.
        per_round, candidates, ridge, noise: masks evaluated per text per round; words whose
            subsets are enumerated; ridge weight and log-odds noise of the per-example model.
        refine_steps, refine_learning_rate: REINFORCE steps (``samples`` masks per text each,
            within the budget) on a copy of the policy for the texts being explained, before
            the probes; the samples also feed the per-example model. Default 0 (README).
        prior, prior_weight: the sparse Bernoulli prior of the policy and the weight of its
            KL term during ``fit``; ``imitation_weight``: the weight of the self-imitation
            term (each text's smallest flipping sample, pruned; :mod:`.policy_fit`; 0: off).
        search: ``"guided"`` (default: the probes and per-example model above) or
            ``"policy"``: the paper's procedure, the fitted policy's masks only
            (:mod:`.policy_search`; ``max_evaluations``, ``probes`` etc. do not apply).
        policy_samples: masks per text of ``search="policy"`` (the threshold decoding and
            draws from the policy, one batched pass; 16 made no smaller sets than 8 in
            docs/policy_search.md).
        policy_prefixes, policy_chunks: ``search="policy"`` also proposes the nested masks of
            the top 1 ... ``policy_prefixes`` most probable words (same pass); sets of at
            least ``policy_chunks`` words are pruned in halves first (0: word by word);
            ``policy_budget``: while a text's rows leave room within it, its next smallest
            flipping mask is pruned too, the smallest set kept (0: only the smallest mask),
            then up to ``policy_smaller`` of the policy's most probable masks one word
            smaller than the set per round (0: none).
        mode: how a word is erased: ``"delete"`` (default), ``"replace"`` or ``"attention"``.
        seed: seeds the policy's initial weights and every sampling call (reproducible).
    """

    def __init__(self, forward_func: Callable, representation: Callable | None = None, *,
                 gamma: float = 0.002, samples: int = 10, max_evaluations: int = 75,
                 probes: int = 40, per_round: int = 8, candidates: int = 12,
                 ridge: float = 0.3, noise: float = 0.5, refine_steps: int = 0,
                 refine_learning_rate: float = 1e-2, hidden: int = 64,
                 learning_rate: float = 1e-3,
                 prior: float = 0.1, prior_weight: float = 0.05, imitation_weight: float = 0.0,
                 search: str = "guided", policy_samples: int = 8, policy_prefixes: int = 0,
                 policy_chunks: int = 0, policy_budget: int = 0, policy_smaller: int = 0,
                 mode: str = "delete",
                 baseline_token: int | None = None,
                 pad_token_id: int | None = None, seed: int = 0,
                 options: EngineOptions | None = None, **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        self.pad_token_id = pad_token_id
        try:
            samples, max_evaluations, per_round, candidates, hidden = (
                check_positive_int(name, value) for name, value in (
                    ("samples", samples), ("max_evaluations", max_evaluations),
                    ("per_round", per_round), ("candidates", candidates), ("hidden", hidden)))
            probes = check_positive_int("probes", probes, minimum=0)
            refine_steps, policy_prefixes, policy_chunks, policy_budget, policy_smaller = (
                check_positive_int(name, value, minimum=0) for name, value in (
                    ("refine_steps", refine_steps), ("policy_prefixes", policy_prefixes),
                    ("policy_chunks", policy_chunks), ("policy_budget", policy_budget),
                    ("policy_smaller", policy_smaller)))
            policy_samples = check_positive_int("policy_samples", policy_samples)
        except ValueError as error:
            raise ValueError(f"{error} (samples, max_evaluations, per_round, candidates, "
                             "hidden and policy_samples are positive integers; probes, "
                             "refine_steps and policy_prefixes/chunks/budget/smaller integers "
                             ">= 0)") from None
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r}; choose one of {SEARCHES}")
        self.search, self.policy_samples = search, policy_samples
        self.policy_prefixes, self.policy_chunks = policy_prefixes, policy_chunks
        self.policy_budget, self.policy_smaller = policy_budget, policy_smaller
        if ridge <= 0 or noise <= 0:
            raise ValueError("ridge and noise must be > 0")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.representation = representation
        self.gamma, self.samples, self.max_evaluations = gamma, samples, max_evaluations
        self.per_round, self.candidates, self.ridge, self.noise = (per_round, candidates, ridge,
                                                                   noise)
        self.hidden, self.learning_rate, self.mode = hidden, learning_rate, mode
        self.baseline_token = baseline_token
        if not 0 < prior < 1 or prior_weight < 0 or imitation_weight < 0:
            raise ValueError("prior must be in (0, 1), prior_weight and imitation_weight >= 0")
        self.prior, self.prior_weight = prior, prior_weight
        self.imitation_weight = imitation_weight
        self.probes = probes
        self.refine_steps, self.refine_learning_rate = refine_steps, refine_learning_rate
        self.seed = seed
        self.policy: ErasurePolicy | None = None
        self.baseline: RewardBaseline | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self.history = pd.DataFrame()
        self.last_stats = None
        self.last_result: list[FlipResult] = []

    # -- building blocks --------------------------------------------------------------------
    def _representation(self) -> Callable:
        if self.representation is not None:
            return self.representation
        model = self.forward_func
        if isinstance(model, nn.Module) and hasattr(model, "config"):
            return HiddenStates(model)
        raise ValueError("no default representation for this forward_func (not a Hugging Face "
                         "model): pass representation=, a callable (input_ids, attention_mask) "
                         "-> (batch, seq, dim) token vectors")

    def _ensure_networks(self, dim: int) -> None:
        if self.policy is not None:
            if self.policy.norm.normalized_shape[0] != dim:
                raise ValueError(f"the representation has {dim} dimensions but the policy was "
                                 f"built for {self.policy.norm.normalized_shape[0]}")
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.policy = ErasurePolicy(dim, self.hidden, self.prior)
            self.baseline = RewardBaseline(dim, self.hidden)
        self._optimizer = torch.optim.Adam(
            itertools.chain(self.policy.parameters(), self.baseline.parameters()),
            lr=self.learning_rate)

    def _pad_id(self, pad_token_id: int | None, tokenizer: Any = None) -> int | None:
        """The call's pad id, else the constructor's, else the model's or ``tokenizer``'s."""
        explicit = self.pad_token_id if pad_token_id is None else pad_token_id
        return pad_token_id_of(self.forward_func, tokenizer, explicit)

    def _evaluator(self, ids: Tensor, attention: Tensor, mask: Tensor, pad_token_id: int | None,
                   show_progress: bool) -> SetEvaluator:
        return SetEvaluator.for_method(self, ids, attention, mask, pad_token_id, show_progress)

    def _batch(self, ids: Tensor, attention: Tensor, mask: Tensor, words: Sequence | None,
               target: Any, pad_token_id: int | None, show_progress: bool) -> SearchBatch:
        evaluator = self._evaluator(ids, attention, mask, pad_token_id, show_progress)
        n_words = max(len(f) for f in evaluator.features)
        for b, feats in enumerate(evaluator.features):
            if feats != list(range(len(feats))):
                raise ValueError(f"example {b}: feature mask ids must be 0..n-1 per example "
                                 "(as word_feature_mask gives)")
        original = evaluator.evaluate([(b, ()) for b in range(len(ids))], desc="originals")
        device = evaluator.engine.device
        with torch.no_grad():
            states = self._representation()(ids.to(device), attention.to(device))
        evaluator.stats.forward_passes += 1
        evaluator.stats.rows += len(ids)
        for b in range(len(ids)):  # the representation forward is one classifier row too
            evaluator.rows_per_example[b] += 1
        reps = word_representations(states.detach(), mask.to(device), n_words)
        self._ensure_networks(reps.shape[-1])
        valid = torch.zeros(len(ids), n_words, dtype=torch.bool)
        for b, feats in enumerate(evaluator.features):
            valid[b, :len(feats)] = True
        pairs = sentence_pairs(words, n_words) if words is not None else \
            valid[:, 1:] & valid[:, :-1]
        targets = flip_targets(target, len(ids), original.shape[1], self.forward_func)
        return SearchBatch(evaluator, reps, valid, pairs, original, targets)

    # -- amortised training ---------------------------------------------------------------------
    def fit(self, texts: Iterable[str] | Iterable[Sequence[str]], *, tokenizer: Any,
            epochs: int = 1, batch_size: int = 16, target: Any = None,
            max_length: int | None = None, truncate: bool = True, units: str = "words",
            show_progress: bool = True) -> pd.DataFrame:
        """Train the policy and the baseline once over a corpus (amortised): per step a batch
        of texts, ``samples`` masks per text, all evaluated in one batched pass. ``texts`` is a
        sequence of strings (batched here) or an iterable of batches (lists of strings).
        Returns (and appends to ``self.history``) one row per step: mean reward, flip rate of
        the samples, mean |D| of the flipping samples, mean erase probability, classifier rows.
        """
        check_positive_int("epochs", epochs)
        check_positive_int("batch_size", batch_size)
        texts = list(texts)
        batches = [list(b) for b in texts] if texts and not isinstance(texts[0], str) else \
            [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
        if not batches:
            raise ValueError("fit needs at least one text")
        generator = torch.Generator().manual_seed(self.seed)
        rows = []
        steps = tqdm(total=epochs * len(batches), desc="MinimalErasure.fit", unit="step",
                     disable=not show_progress, leave=False)
        model = self.forward_func if isinstance(self.forward_func, nn.Module) else None
        with eval_mode(model):
            for epoch in range(epochs):
                order = torch.randperm(len(batches), generator=generator).tolist()
                for index in order:
                    encoded = encode_texts(self.forward_func, tokenizer, batches[index],
                                           max_length=max_length, truncate=truncate,
                                           units=units)
                    batch = self._batch(encoded.input_ids, encoded.attention_mask,
                                        encoded.feature_mask, encoded.words, target,
                                        self._pad_id(None, tokenizer), False)
                    rows.append(dict(epoch=epoch, **self._train_step(batch, generator)))
                    steps.update(1)
                    steps.set_postfix(reward=f"{rows[-1]['mean_reward']:.3f}",
                                      flips=f"{rows[-1]['flip_rate']:.2f}")
        steps.close()
        history = pd.DataFrame(rows)
        self.history = pd.concat([self.history, history], ignore_index=True)
        return history

    def _train_step(self, batch: SearchBatch, generator: torch.Generator,
                    networks: tuple | None = None) -> dict:
        """One step (:func:`.policy_fit.reinforce_step`) on ``networks`` (policy, baseline,
        optimizer; default: the amortised ones)."""
        policy, baseline, optimizer = networks or (self.policy, self.baseline, self._optimizer)
        return reinforce_step(batch, policy, baseline, optimizer, generator,
                              samples=self.samples, gamma=self.gamma, prior=self.prior,
                              prior_weight=self.prior_weight,
                              imitation_weight=self.imitation_weight)

    # -- explain-time search --------------------------------------------------------------------
    def _refined_logits(self, batch: SearchBatch) -> Tensor:
        """The policy's logits after ``refine_steps`` REINFORCE steps on these texts' own
        sampled masks (copies of the policy and baseline: the amortised ones stay as
        fitted). Without steps, the amortised policy's logits."""
        if not self.refine_steps:
            with torch.no_grad():
                return self.policy(batch.words, batch.valid)
        policy, baseline = copy.deepcopy(self.policy), copy.deepcopy(self.baseline)
        optimizer = torch.optim.Adam(itertools.chain(policy.parameters(),
                                                     baseline.parameters()),
                                     lr=self.refine_learning_rate)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.refine_steps):
            self._train_step(batch, generator, (policy, baseline, optimizer))
        with torch.no_grad():
            return policy(batch.words, batch.valid)

    def _search(self, batch: SearchBatch, max_evaluations: int | None,
                show_progress: bool) -> tuple[list, list, list]:
        """Probe, then model-guided rounds, then (only without a flip) the greedy path; the
        best set is pruned. Returns per example: the set (feature ids) or None, its
        probabilities, and a message."""
        evaluator, n = batch.evaluator, len(batch.original)
        budget = check_positive_int(
            "max_evaluations", self.max_evaluations if max_evaluations is None else max_evaluations)
        logits = self._refined_logits(batch)
        if self.search == "policy":
            return policy_search(batch, logits, self.policy_samples,
                                 torch.Generator().manual_seed(self.seed),
                                 self.policy_prefixes, self.policy_chunks,
                                 self.policy_budget, self.policy_smaller)
        texts, messages = start_searches(batch, logits, functools.partial(
            TextSearch, ridge=self.ridge, noise=self.noise, candidates=self.candidates))
        live = [b for b in range(n) if texts[b] is not None]
        for b in live:
            for mask, row in evaluator.evaluated(b).items():  # the refinement's samples
                if mask:
                    texts[b].record(mask, row)
        # Round 0: the policy's top words, one at a time (leave-one-out for short texts).
        requests = []
        for b in live:
            room = budget - evaluator.rows_per_example[b] - 1
            requests += [(b, (f,)) for f in texts[b].policy_order[:max(0, min(self.probes,
                                                                                 room))]]
        bar = tqdm(desc="MinimalErasure", unit="round", disable=not show_progress, leave=False)
        record_masks(evaluator, texts, requests, "probes")
        bar.update(1)
        while True:  # model-guided rounds, all texts' proposals in one batched evaluation
            requests = []
            for b in live:
                search = texts[b]
                if search.best is not None and len(search.best) == 1:
                    continue
                # Keep rows for the verification and for pruning the best set: its subsets
                # (small sets) or restoring words one by one and the minimality check.
                size = len(search.best) if search.best is not None else FIRST_FLIP_RESERVE
                reserve = 1 + (size if size <= self.per_round else 2 * size)
                room = budget - evaluator.rows_per_example[b] - reserve
                requests += [(b, mask) for mask in search.proposals(min(self.per_round, room))]
            if not requests:
                break
            record_masks(evaluator, texts, requests, "erasure masks")
            bar.update(1)
        bar.close()
        greedy_fallback(evaluator, texts, live)
        done = [b for b in live if texts[b].best is not None]
        pruned, pruned_probs = prune(
            evaluator, done, [list(texts[b].best) for b in done],
            [texts[b].label for b in done], [texts[b].target for b in done],
            [texts[b].best_probs for b in done],
            [texts[b].restore_order(texts[b].best) for b in done])
        found: list = [None] * n
        probs: list = [None] * n
        for b, erased, row in zip(done, pruned, pruned_probs):
            found[b], probs[b] = erased, row
        for b in live:
            if found[b] is None:
                messages[b] = (f"no flipping set found within the budget of {budget} "
                               "predictions, nor on the greedy path")
        return found, probs, messages

    # -- public entry points --------------------------------------------------------------------
    @attribute_call
    def explain(self, texts: str | Sequence[str], *, tokenizer: Any, target: Any = None,
                max_evaluations: int | None = None, max_length: int | None = None,
                truncate: bool = False, units: str = "words",
                show_progress: bool = False) -> list[FlipResult]:
        """The minimal flipping set of words of each text, verified.

        ``target=None`` flips away from the predicted class; a class index (or one per text)
        flips towards it. ``max_evaluations`` overrides the budget of predictions per text
        (everything counted in ``forward_passes``: the original, the representation, the
        search, pruning and the verification; only the greedy fallback of a text without a
        flip, and pruning a set found in the last round, can go beyond it). ``units="words"``
        erases the tokenizer's words, ``"whitespace"`` whitespace tokens (as LIT's
        AblationFlip).
        """
        model = self.forward_func
        encoded = encode_texts(model, tokenizer, texts, max_length=max_length,
                               truncate=truncate, units=units)
        with eval_mode(model):
            batch = self._batch(encoded.input_ids, encoded.attention_mask,
                                encoded.feature_mask, encoded.words, target,
                                self._pad_id(None, tokenizer), show_progress)
            found, _, messages = self._search(batch, max_evaluations, show_progress)
            results = verified_results(model, tokenizer, encoded, batch.evaluator, found,
                                       batch.original, batch.targets,
                                       [f is not None for f in found], "minimal_erasure",
                                       messages)
        self.last_stats = batch.evaluator.stats
        self.last_result = results
        return results

    @log_usage(part_of_slo=True)
    @attribute_call
    def attribute(self, inputs: Tensor | tuple[Tensor], baselines: Any = None,
                  target: Any = None, additional_forward_args: Any = None,
                  feature_mask: Tensor | None = None, max_evaluations: int | None = None,
                  show_progress: bool = False, pad_token_id: int | None = None,
                  sentence_words: Sequence[Sequence[str]] | None = None, **kwargs: Any) -> Any:
        """Captum-style: a tensor shaped like ``inputs`` holding 1 on the tokens of the words
        of the verified minimal flipping set and 0 elsewhere (all 0 when no flip was found).

        ``additional_forward_args[0]`` is the attention mask; ``feature_mask`` groups tokens
        into words (``word_feature_mask``; -1 never erased); ``target=None`` flips away from
        the predicted class, a class index flips towards it. ``baselines`` (a token id) is the
        replacement in ``mode="replace"``. Per-example :class:`FlipResult` objects are in
        ``self.last_result`` (``text`` is empty
        in a tensor call; ``words`` are ``sentence_words`` or the word numbers).
        """
        if kwargs:
            raise TypeError(f"MinimalErasure.attribute got unexpected arguments {sorted(kwargs)}")
        is_tuple, ids, attention, feature_mask = attribute_inputs(
            inputs, additional_forward_args, feature_mask)
        model = self.forward_func
        with baseline_token_from(self, baselines, ids), eval_mode(model):
            batch = self._batch(ids.cpu(), attention.cpu(), feature_mask, sentence_words,
                                target, self._pad_id(pad_token_id), show_progress)
            # In token space the pruned set's own evaluated row is its verification.
            found, probs, messages = self._search(batch, max_evaluations, show_progress)
        attr = torch.zeros(ids.shape, dtype=torch.float32)
        results = []
        for b in range(len(ids)):
            label = int(batch.original[b].argmax())
            row = probs[b]
            flipped = row is not None and bool(is_flip(row[None], label, batch.targets[b])[0])
            if flipped:
                attr[b] = torch.isin(feature_mask[b], torch.tensor(found[b])).float()
            new_label = int(row.argmax()) if flipped else label
            results.append(FlipResult(
                text="", words=tensor_call_words(feature_mask[b], sentence_words, b),
                erased=sorted(found[b]) if flipped else [], remaining_text="",
                flipped=flipped, original_label=label,
                original_probability=float(batch.original[b, label]), new_label=new_label,
                new_probability=float(row[new_label]) if flipped else
                float(batch.original[b, label]),
                forward_passes=batch.evaluator.rows_per_example[b], target=batch.targets[b],
                minimal=flipped, method="minimal_erasure",
                message="" if flipped else messages[b]))
        self.last_stats = batch.evaluator.stats
        self.last_result = results
        attr = attr.to(ids.device)
        return (attr,) if is_tuple else attr

    @property
    def last_results(self) -> list[FlipResult]:
        """Alias of ``last_result`` (the name of earlier releases)."""
        return self.last_result

    # -- persistence ----------------------------------------------------------------------------
    def save_policy(self, path: str) -> None:
        """Save the trained policy and baseline (a weights-only torch file)."""
        if self.policy is None:
            raise ValueError("no policy to save: call fit (or explain) first")
        torch.save({"policy": self.policy.state_dict(), "baseline": self.baseline.state_dict(),
                    "dim": self.policy.norm.normalized_shape[0], "hidden": self.hidden}, path)

    def load_policy(self, path: str) -> None:
        state = torch.load(path, weights_only=True)
        self.hidden = int(state["hidden"])
        self.policy = None
        self._ensure_networks(int(state["dim"]))
        self.policy.load_state_dict(state["policy"])
        self.baseline.load_state_dict(state["baseline"])

