"""Minimal erasure that flips the decision (Li, Monroe & Jurafsky 2016, section 5).

Find a small set D of words whose erasure changes the classifier's label (Eq. 2). A policy
reads the classifier's own representation of every word and defines a Bernoulli over z_t
(1 = erase word t). The reward of a sampled mask is (Eqs. 3-5)

    R = 1[label(e - D) != label(e)] / |D|  -  gamma * sum_{sentences} sum_{t>=2} |z_t - z_{t-1}|

(0 for the flip term when D is empty), maximised with REINFORCE and a learned baseline
network b(e) that predicts the reward under the current policy (Eq. 7). The classifier stays
frozen; only the policy and the baseline learn.

Choices the paper leaves open (documented in the README): the policy is a small MLP over
[h_t, h_ctx, h_t * h_ctx] (h_t: the word's representation, mean over its tokens; h_ctx: the
mean over the text's words), the baseline an MLP over [h_ctx, 1/n]; Adam; gamma = 0.002; and
a KL pull of every erase probability towards a sparse Bernoulli(0.1) prior, because the reward
alone drives the policy to erase nearly everything (the flip rate grows faster with |D| than
1/|D| falls, and Eq. 4 does not penalise one long erasure).

``fit`` trains the policy once over a corpus (amortised). ``explain``/``attribute`` then search
per example, within ``max_evaluations`` masks (default: the probes + 40), refining the
policy's logits:

- round 0 probes the policy's top ``probes`` words one at a time (a single-word flip ends the
  search) and moves each probed word's logit by how much its erasure moved the flip margin;
- round 1 tries the refined policy's most likely masks (its top-1, 2, 3, 4, 6, 8, 12, ...
  words, the pairs among its top 6 and the triples among its top 5) plus ``samples`` masks
  sampled from it;
- later rounds sample ``samples`` masks each, after a REINFORCE step on the per-example logit
  offsets (Eq. 7 with the mean reward of the round's other samples as the baseline);
- when the budget ends without a flip, the greedy path (erase the 1, 2, ..., n words with the
  largest probe gains, i.e. leave-one-out order) is tried in one batched pass, at most n more
  rows, so every text the greedy baseline flips is flipped (when every word was probed).

The smallest flipping set found is pruned post hoc (restore words while the flip survives;
the last round checks that no single erased word can be restored) and verified by a final
forward pass on the remaining text. All masks of all examples of a round are evaluated in one
batched pass through the shared engine; a mask already evaluated is never evaluated again.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from .explain import eval_mode
from .flips import (FlipResult, SetEvaluator, encode_texts, flip_margin, flip_targets, is_flip,
                    prune, renumber_features, verified_results)

SENTENCE_END = {".", "!", "?", "...", ";"}


# -- representations ----------------------------------------------------------------------------
class HiddenStates:
    """Default policy input: the classifier's own token representations (hidden states of
    ``layer``, default the last), as in the paper. Called as ``(input_ids, attention_mask)``."""

    def __init__(self, model: nn.Module, layer: int = -1) -> None:
        self.model, self.layer = model, layer

    def __call__(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         output_hidden_states=True)
        states = getattr(out, "hidden_states", None)
        if states is None:
            raise TypeError("the model returned no hidden_states; pass representation= (a "
                            "callable (input_ids, attention_mask) -> (batch, seq, dim))")
        return states[self.layer]


def word_representations(token_states: Tensor, feature_mask: Tensor,
                         n_words: int) -> Tensor:
    """Mean of each word's token vectors: ``(batch, n_words, dim)``; zeros for absent words."""
    mask = feature_mask.to(token_states.device)
    onehot = (mask[..., None] == torch.arange(n_words, device=mask.device)).to(
        token_states.dtype)                                          # (B, T, W)
    sums = torch.einsum("btw,btd->bwd", onehot, token_states)
    counts = onehot.sum(1).clamp_min(1)[..., None]
    return (sums / counts).float().cpu()


def sentence_pairs(words: Sequence[Sequence[str]], n_words: int) -> Tensor:
    """``(batch, n_words - 1)`` booleans: words t-1 and t exist and are in the same sentence
    (a sentence ends after ``.``, ``!``, ``?``, ``...`` or ``;``); the terms of Eq. 4."""
    pairs = torch.zeros(len(words), max(n_words - 1, 0), dtype=torch.bool)
    for b, row in enumerate(words):
        for t in range(1, len(row)):
            pairs[b, t - 1] = row[t - 1].strip() not in SENTENCE_END
    return pairs


# -- policy and baseline ------------------------------------------------------------------------
class ErasurePolicy(nn.Module):
    """pi(z_t = 1 | word t): an MLP over [h_t, h_ctx, h_t * h_ctx] -> one logit per word."""

    def __init__(self, dim: int, hidden: int = 64, initial_erase_probability: float = 0.2):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(3 * dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        p = initial_erase_probability
        with torch.no_grad():
            self.mlp[-1].bias.fill_(math.log(p / (1 - p)))  # sparse erasures from the start

    def forward(self, words: Tensor, valid: Tensor) -> Tensor:
        h = self.norm(words)
        context = (h * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        context = context[:, None].expand_as(h)
        logits = self.mlp(torch.cat([h, context, h * context], -1)).squeeze(-1)
        return logits.masked_fill(~valid, -30.0)


class RewardBaseline(nn.Module):
    """b(e): predicts the expected reward of example e under the current policy."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():  # rewards start near 0: a biased start would push the policy
            self.mlp[-1].weight.zero_()
            self.mlp[-1].bias.zero_()

    def forward(self, words: Tensor, valid: Tensor) -> Tensor:
        h = self.norm(words)
        n = valid.sum(1, keepdim=True).clamp_min(1)
        context = (h * valid[..., None]).sum(1) / n
        return self.mlp(torch.cat([context, 1.0 / n], -1)).squeeze(-1)


def rewards(flipped: Tensor, masks: Tensor, pairs: Tensor, gamma: float) -> Tensor:
    """Eq. 5 for masks ``(..., W)``: flip / |D| minus gamma * within-sentence switches."""
    size = masks.sum(-1)
    flip_term = torch.where(size > 0, flipped.float() / size.clamp_min(1), torch.zeros_like(size))
    switches = (masks[..., 1:] - masks[..., :-1]).abs() * pairs.float()
    return flip_term - gamma * switches.sum(-1)


def sparsity_kl(probs: Tensor, valid: Tensor, prior: float) -> Tensor:
    """Mean KL(Bernoulli(p_t) || Bernoulli(prior)) over the words: keeps the policy sparse.
    Without it the reward alone drives the policy to erase nearly everything: the flip rate
    grows faster with |D| than 1/|D| falls, and Eq. 4 does not penalise one long erasure."""
    p = probs.clamp(1e-6, 1 - 1e-6)
    kl = p * (p / prior).log() + (1 - p) * ((1 - p) / (1 - prior)).log()
    return (kl * valid).sum() / valid.sum().clamp_min(1)


@dataclass
class _Batch:
    """What the search needs about a batch of examples."""

    evaluator: SetEvaluator
    words: Tensor        # (B, W, d) word representations
    valid: Tensor        # (B, W) word exists
    pairs: Tensor        # (B, W-1) same-sentence neighbours
    original: Tensor     # (B, C) probabilities of the unperturbed inputs
    targets: list        # per example: class to flip towards, or None


class MinimalErasure(PerturbationAttribution):
    """Smallest set of words whose erasure flips the decision, learned by REINFORCE.

    Args:
        forward_func: the classifier, called as ``forward_func(input_ids, attention_mask)``;
            returns logits (or ``output="probs"``/``"log_probs"``) or an HF output with
            ``.logits``. It is never trained.
        representation: the policy's input, a callable ``(input_ids, attention_mask) ->
            (batch, seq, dim)`` of token vectors (pooled per word); default: the classifier's
            last hidden states (:class:`HiddenStates`).
        gamma: weight of the contiguity regulariser (Eq. 4).
        samples: masks sampled per example per step (training and explain-time refinement).
        rounds: explain-time search rounds (each one batched evaluation for all unfinished
            examples; see the module docstring).
        probes: words probed one at a time in round 0; ``probe_weight`` scales their effect.
        prior, prior_weight: the sparse Bernoulli prior of the policy and the weight of its
            KL term during ``fit``.
        refine_lr: step size of the per-example refinement of the policy's logits.
        mode: how a word is erased: ``"delete"`` (default), ``"replace"`` or ``"attention"``.
        seed: seeds the policy's initial weights and every sampling call (reproducible).
    """

    def __init__(self, forward_func: Callable, representation: Callable | None = None, *,
                 gamma: float = 0.002, samples: int = 10, rounds: int = 4,
                 probes: int = 32, probe_weight: float = 8.0,
                 refine_lr: float = 1.0, hidden: int = 64, learning_rate: float = 1e-3,
                 prior: float = 0.1, prior_weight: float = 0.05,
                 mode: str = "delete", baseline_token: int | None = None,
                 output: str = "logits", batch_size: int | None = None,
                 max_tokens: int | None = None, device: torch.device | str | None = None,
                 autocast: bool | torch.dtype = False, seed: int = 0) -> None:
        super().__init__(forward_func)
        if samples < 1 or rounds < 1:
            raise ValueError("samples and rounds must be >= 1")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.representation = representation
        self.gamma, self.samples, self.rounds, self.refine_lr = gamma, samples, rounds, refine_lr
        self.hidden, self.learning_rate, self.mode = hidden, learning_rate, mode
        self.baseline_token, self.output = baseline_token, output
        self.batch_size, self.max_tokens, self.device, self.autocast = (
            batch_size, max_tokens, device, autocast)
        if not 0 < prior < 1 or prior_weight < 0:
            raise ValueError("prior must be in (0, 1) and prior_weight >= 0")
        self.prior, self.prior_weight = prior, prior_weight
        self.probes, self.probe_weight = probes, probe_weight
        self.seed = seed
        self.policy: ErasurePolicy | None = None
        self.baseline: RewardBaseline | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self.history = pd.DataFrame()
        self.last_stats = None
        self.last_results: list[FlipResult] | list[dict] = []

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

    def _evaluator(self, ids: Tensor, attention: Tensor, mask: Tensor, pad_token_id: int,
                   show_progress: bool) -> SetEvaluator:
        return SetEvaluator.for_method(self, ids, attention, mask, pad_token_id, show_progress)

    def _batch(self, ids: Tensor, attention: Tensor, mask: Tensor, words: Sequence | None,
               target: Any, pad_token_id: int, show_progress: bool) -> _Batch:
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
        for b in range(len(ids)):  # the representation forward is one classifier row too
            evaluator.rows_per_example[b] += 1
        reps = word_representations(states.detach(), mask.to(device), n_words)
        self._ensure_networks(reps.shape[-1])
        valid = torch.zeros(len(ids), n_words, dtype=torch.bool)
        for b, feats in enumerate(evaluator.features):
            valid[b, :len(feats)] = True
        pairs = sentence_pairs(words, n_words) if words is not None else \
            valid[:, 1:] & valid[:, :-1]
        targets = flip_targets(target, len(ids), original.shape[1])
        return _Batch(evaluator, reps, valid, pairs, original, targets)

    @staticmethod
    def _flips(batch: _Batch, examples: Sequence[int], out: Tensor) -> Tensor:
        return torch.stack([is_flip(out[i:i + 1], int(batch.original[b].argmax()),
                                    batch.targets[b])[0] for i, b in enumerate(examples)]) \
            if len(examples) else torch.zeros(0, dtype=torch.bool)

    # -- amortised training ---------------------------------------------------------------------
    def fit(self, texts: Iterable[str] | Iterable[Sequence[str]], *, tokenizer: Any,
            epochs: int = 1, batch_size: int = 16, target: Any = None,
            max_length: int | None = None, truncate: bool = True,
            show_progress: bool = True) -> pd.DataFrame:
        """Train the policy and the baseline once over a corpus (amortised): per step a batch
        of texts, ``samples`` masks per text, all evaluated in one batched pass. ``texts`` is a
        sequence of strings (batched here) or an iterable of batches (lists of strings).
        Returns (and appends to ``self.history``) one row per step: mean reward, flip rate of
        the samples, mean |D| of the flipping samples, mean erase probability, classifier rows.
        """
        if epochs < 1 or batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
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
                                           max_length=max_length, truncate=truncate)
                    batch = self._batch(encoded.input_ids, encoded.attention_mask,
                                        encoded.feature_mask, encoded.words, target,
                                        tokenizer.pad_token_id, False)
                    rows.append(dict(epoch=epoch, **self._train_step(batch, generator)))
                    steps.update(1)
                    steps.set_postfix(reward=f"{rows[-1]['mean_reward']:.3f}",
                                      flips=f"{rows[-1]['flip_rate']:.2f}")
        steps.close()
        history = pd.DataFrame(rows)
        self.history = pd.concat([self.history, history], ignore_index=True)
        return history

    def _train_step(self, batch: _Batch, generator: torch.Generator) -> dict:
        self.policy.train()
        logits = self.policy(batch.words, batch.valid)                     # (B, W)
        probs = torch.sigmoid(logits)
        k = self.samples
        masks = torch.bernoulli(probs.detach()[:, None].expand(-1, k, -1).contiguous(),
                                generator=generator) * batch.valid[:, None]  # (B, K, W)
        requests = [(b, masks[b, s].nonzero().flatten().tolist())
                    for b in range(len(masks)) for s in range(k)]
        out = batch.evaluator.evaluate(requests, desc="policy samples")
        examples = [b for b, _ in requests]
        flipped = self._flips(batch, examples, out).reshape(len(masks), k)
        reward = rewards(flipped, masks, batch.pairs[:, None], self.gamma)  # (B, K)
        log_prob = (masks * torch.nn.functional.logsigmoid(logits)[:, None] +
                    (1 - masks) * torch.nn.functional.logsigmoid(-logits)[:, None])
        log_prob = (log_prob * batch.valid[:, None]).sum(-1)                # (B, K)
        predicted = self.baseline(batch.words, batch.valid)                 # (B,)
        advantage = reward - predicted.detach()[:, None]
        loss = -(advantage * log_prob).mean() + \
            ((predicted[:, None] - reward) ** 2).mean() + \
            self.prior_weight * sparsity_kl(probs, batch.valid, self.prior)
        self._optimizer.zero_grad()
        loss.backward()
        self._optimizer.step()
        self.policy.eval()
        sizes = masks.sum(-1)
        return dict(mean_reward=float(reward.mean()), flip_rate=float(flipped.float().mean()),
                    mean_erased_when_flipped=float(sizes[flipped].mean()) if flipped.any()
                    else float("nan"),
                    erase_probability=float(probs.detach()[batch.valid].mean()),
                    baseline_error=float((predicted.detach()[:, None] - reward).abs().mean()),
                    rows=len(requests))

    # -- explain-time search --------------------------------------------------------------------
    def _search(self, batch: _Batch, max_evaluations: int | None,
                show_progress: bool) -> tuple[list, list, list]:
        """Refine per example, keep the smallest flipping set, prune it. Returns per example:
        the set (feature ids) or None, its probabilities, and a message."""
        evaluator, n = batch.evaluator, len(batch.original)
        generator = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            base = self.policy(batch.words, batch.valid)
        offsets = torch.zeros_like(base)
        spent = [0] * n
        seen: list[dict] = [dict() for _ in range(n)]
        best: list = [None] * n
        best_probs: list = [None] * n
        messages = [""] * n
        active = []
        for b in range(n):
            label = int(batch.original[b].argmax())
            if batch.targets[b] is not None and label == batch.targets[b]:
                messages[b] = f"the text is already predicted as the target class " \
                              f"{batch.targets[b]}"
            else:
                active.append(b)
        bar = tqdm(total=self.rounds, desc="MinimalErasure", unit="round",
                   disable=not show_progress, leave=False)
        for round_index in range(self.rounds):
            if not active:
                break
            probs = torch.sigmoid(base + offsets)
            proposals: dict[int, list[tuple]] = {}
            for b in active:
                n_words = int(batch.valid[b].sum())
                budget = self._budget(n_words, max_evaluations)
                room = budget - spent[b]
                candidates: list[tuple] = []
                ranked = torch.argsort(-probs[b, :n_words], stable=True).tolist()
                sampled = []
                if round_index == 0:  # probe the policy's top words one by one
                    candidates = [(f,) for f in ranked[:self.probes]]
                else:
                    if round_index == 1:  # the refined policy's most likely masks
                        candidates = [tuple(sorted(ranked[:j])) for j in _prefix_sizes(n_words)]
                        candidates += [tuple(sorted(pair))
                                       for pair in itertools.combinations(ranked[:6], 2)]
                        candidates += [tuple(sorted(triple))
                                       for triple in itertools.combinations(ranked[:5], 3)]
                    draws = torch.bernoulli(
                        probs[b, :n_words].expand(self.samples, -1).contiguous(),
                        generator=generator)
                    sampled = [tuple(d.nonzero().flatten().tolist()) for d in draws]
                proposals[b] = sampled
                for mask in candidates + sampled:
                    if mask and mask not in seen[b] and room > 0:
                        if best[b] is not None and len(mask) >= len(best[b]):
                            continue  # cannot beat the best set found
                        seen[b][mask] = None
                        room -= 1
                spent[b] = budget - room
            requests = [(b, mask) for b in active for mask, v in seen[b].items() if v is None]
            out = evaluator.evaluate(requests, desc="erasure masks")
            for (b, mask), row in zip(requests, out):
                seen[b][mask] = row
            for b in active:
                label = int(batch.original[b].argmax())
                for mask, row in seen[b].items():
                    if row is None or not bool(is_flip(row[None], label, batch.targets[b])[0]):
                        continue
                    better = best[b] is None or len(mask) < len(best[b]) or (
                        len(mask) == len(best[b]) and
                        float(flip_margin(row[None], label, batch.targets[b])[0]) >
                        float(flip_margin(best_probs[b][None], label, batch.targets[b])[0]))
                    if better:
                        best[b], best_probs[b] = list(mask), row
            if round_index == 0:
                self._use_probes(batch, offsets, seen, active)
            else:
                self._refine(batch, offsets, base, proposals, seen)
            active = [b for b in active
                      if spent[b] < self._budget(int(batch.valid[b].sum()), max_evaluations) and
                      not (best[b] is not None and len(best[b]) == 1)]
            bar.update(1)
        bar.close()
        probs = torch.sigmoid(base + offsets)
        self._greedy_fallback(batch, probs, seen, best, best_probs, messages)
        done = [b for b in range(n) if best[b] is not None]
        # Restore the words the policy is least sure about first.
        order = [sorted(best[b], key=lambda f: (float(probs[b, f]), f)) for b in done]
        pruned, pruned_probs = prune(
            evaluator, done, [best[b] for b in done],
            [int(batch.original[b].argmax()) for b in done], [batch.targets[b] for b in done],
            [best_probs[b] for b in done], order)
        for b, erased, row in zip(done, pruned, pruned_probs):
            best[b], best_probs[b] = erased, row
        for b in range(n):
            if best[b] is None and not messages[b]:
                budget = self._budget(int(batch.valid[b].sum()), max_evaluations)
                messages[b] = (f"no flipping set found within the budget of {budget} "
                               "evaluated masks, nor on the greedy path")
        return best, best_probs, messages

    def _greedy_fallback(self, batch: _Batch, probs: Tensor, seen: list[dict], best: list,
                         best_probs: list, messages: list[str]) -> None:
        """When the budget ran out without a flip, try the greedy baseline's path in one
        batched pass: erase the 1, 2, ... n words with the largest single-word probe gains
        (leave-one-out order, as ``greedy_flip``), unprobed words after them in the policy's
        order. With every word probed, no text greedy erasure flips is left unflipped."""
        requests = []
        for b, found in enumerate(best):
            if found is not None or messages[b]:
                continue
            n_words = int(batch.valid[b].sum())
            label = int(batch.original[b].argmax())
            before = float(flip_margin(batch.original[b][None], label, batch.targets[b])[0])
            gains = {mask[0]: float(flip_margin(row[None], label, batch.targets[b])[0]) - before
                     for mask, row in seen[b].items() if len(mask) == 1 and row is not None}
            unprobed = [f for f in torch.argsort(-probs[b, :n_words], stable=True).tolist()
                        if f not in gains]
            ranked = sorted(gains, key=lambda f: (-gains[f], f)) + unprobed
            prefixes = (tuple(sorted(ranked[:j])) for j in range(1, n_words + 1))
            requests += [(b, mask) for mask in prefixes if mask not in seen[b]]
        if not requests:
            return
        out = batch.evaluator.evaluate(requests, desc="greedy fallback")
        for (b, mask), row in zip(requests, out):
            label = int(batch.original[b].argmax())
            if bool(is_flip(row[None], label, batch.targets[b])[0]) and (
                    best[b] is None or len(mask) < len(best[b])):
                best[b], best_probs[b] = list(mask), row

    def _budget(self, n_words: int, max_evaluations: int | None) -> int:
        """Masks the search may evaluate for a text: the probes plus 40 by default."""
        if max_evaluations is not None:
            return max_evaluations
        return min(n_words, self.probes) + 40

    def _use_probes(self, batch: _Batch, offsets: Tensor, seen: list[dict],
                    active: list[int]) -> None:
        """Per-example refinement from the single-word probes: a probed word's logit moves by
        ``probe_weight`` times how much erasing it alone moved the flip margin (in [-1, 1])."""
        for b in active:
            label = int(batch.original[b].argmax())
            before = float(flip_margin(batch.original[b][None], label, batch.targets[b])[0])
            for mask, row in seen[b].items():
                if row is not None and len(mask) == 1:
                    gain = float(flip_margin(row[None], label, batch.targets[b])[0]) - before
                    offsets[b, mask[0]] += self.probe_weight * gain

    def _refine(self, batch: _Batch, offsets: Tensor, base: Tensor,
                proposals: dict[int, list[tuple]], seen: list[dict]) -> None:
        """One REINFORCE step per example on its logit offsets, from this round's samples
        (baseline: the mean reward of the example's other samples)."""
        for b, sampled in proposals.items():
            if len(sampled) < 2:
                continue
            label = int(batch.original[b].argmax())
            n_words = int(batch.valid[b].sum())
            masks = torch.zeros(len(sampled), n_words)
            flipped = torch.zeros(len(sampled), dtype=torch.bool)
            for s, mask in enumerate(sampled):
                masks[s, list(mask)] = 1.0
                row = seen[b].get(mask)
                flipped[s] = row is not None and bool(is_flip(row[None], label,
                                                              batch.targets[b])[0])
            reward = rewards(flipped, masks, batch.pairs[b, :max(n_words - 1, 0)], self.gamma)
            others = (reward.sum() - reward) / (len(sampled) - 1)
            p = torch.sigmoid(base[b, :n_words] + offsets[b, :n_words])
            # d log pi / d logit = z - p for a Bernoulli(sigmoid(logit))
            grad = ((reward - others)[:, None] * (masks - p)).mean(0)
            offsets[b, :n_words] += self.refine_lr * grad * len(sampled)

    # -- public entry points --------------------------------------------------------------------
    def explain(self, texts: str | Sequence[str], *, tokenizer: Any, target: Any = None,
                max_evaluations: int | None = None, max_length: int | None = None,
                truncate: bool = False, show_progress: bool = False) -> list[FlipResult]:
        """The minimal flipping set of words of each text, verified.

        ``target=None`` flips away from the predicted class; a class index (or one per text)
        flips towards it. ``max_evaluations`` caps the masks tried per text in the search
        (default: the probed words + 40); the representation forward, the greedy fallback
        (at most one row per word, only when the search found no flip), pruning and the final
        verification come on top (all counted in ``forward_passes``).
        """
        model = self.forward_func
        encoded = encode_texts(model, tokenizer, texts, max_length=max_length,
                               truncate=truncate)
        with eval_mode(model):
            batch = self._batch(encoded.input_ids, encoded.attention_mask,
                                encoded.feature_mask, encoded.words, target,
                                tokenizer.pad_token_id, show_progress)
            found, _, messages = self._search(batch, max_evaluations, show_progress)
            results = verified_results(model, tokenizer, encoded, batch.evaluator, found,
                                       batch.original, batch.targets,
                                       [f is not None for f in found], "minimal_erasure",
                                       messages)
        self.last_stats = batch.evaluator.stats
        self.last_results = results
        return results

    @log_usage(part_of_slo=True)
    def attribute(self, inputs: Tensor | tuple[Tensor], baselines: Any = None,
                  target: Any = None, additional_forward_args: Any = None,
                  feature_mask: Tensor | None = None, max_evaluations: int | None = None,
                  show_progress: bool = False, pad_token_id: int = 0,
                  sentence_words: Sequence[Sequence[str]] | None = None, **kwargs: Any) -> Any:
        """Captum-style: a tensor shaped like ``inputs`` holding 1 on the tokens of the words
        of the verified minimal flipping set and 0 elsewhere (all 0 when no flip was found).

        ``additional_forward_args[0]`` is the attention mask; ``feature_mask`` groups tokens
        into words (``word_feature_mask``; -1 never erased); ``target=None`` flips away from
        the predicted class, a class index flips towards it. ``baselines`` (a token id) is the
        replacement in ``mode="replace"``. Per-example details are in ``self.last_results``.
        """
        if kwargs:
            raise TypeError(f"MinimalErasure.attribute got unexpected arguments {sorted(kwargs)}")
        is_tuple = isinstance(inputs, tuple)
        ids = inputs[0] if is_tuple else inputs
        if isinstance(feature_mask, tuple):
            feature_mask = feature_mask[0]
        extra = additional_forward_args if isinstance(additional_forward_args, tuple) else \
            (() if additional_forward_args is None else (additional_forward_args,))
        if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.is_floating_point():
            raise ValueError("inputs must be a (batch, sequence) tensor of token ids")
        attention = extra[0] if extra and isinstance(extra[0], Tensor) else \
            torch.ones_like(ids)
        if attention.shape != ids.shape:
            raise ValueError("additional_forward_args[0] must be the attention mask, shaped "
                             "like the inputs")
        if feature_mask is None:  # every attended token is its own word
            feature_mask = torch.arange(ids.shape[1]).expand(ids.shape).clone()
            feature_mask[attention.cpu() == 0] = -1
        if not isinstance(feature_mask, Tensor) or feature_mask.is_floating_point() or \
                feature_mask.shape[-1] != ids.shape[1]:
            raise ValueError("feature_mask must be an integer tensor shaped like the inputs")
        feature_mask = renumber_features(feature_mask, ids.shape)
        saved = self.baseline_token
        if baselines is not None:
            self.baseline_token = int(torch.as_tensor(baselines).reshape(-1)[0])
        model = self.forward_func
        try:
            with eval_mode(model):
                batch = self._batch(ids.cpu(), attention.cpu(), feature_mask, sentence_words,
                                    target, pad_token_id, show_progress)
                found, probs, messages = self._search(batch, max_evaluations, show_progress)
                # Final verification in token space (one row per example with a set).
                checked = [b for b, f in enumerate(found) if f is not None]
                out = batch.evaluator.evaluate([(b, found[b]) for b in checked],
                                               desc="verification")
        finally:
            self.baseline_token = saved
        attr = torch.zeros(ids.shape, dtype=torch.float32)
        results = []
        verified = dict(zip(checked, out))
        for b in range(len(ids)):
            label = int(batch.original[b].argmax())
            row = verified.get(b)
            flipped = row is not None and bool(is_flip(row[None], label, batch.targets[b])[0])
            if flipped:
                attr[b] = torch.isin(feature_mask[b], torch.tensor(found[b])).float()
            results.append(dict(erased=sorted(found[b]) if flipped else [], flipped=flipped,
                                original_label=label, new_label=int(row.argmax()) if flipped
                                else label, message="" if flipped else messages[b],
                                forward_passes=batch.evaluator.rows_per_example[b]))
        self.last_stats = batch.evaluator.stats
        self.last_results = results
        attr = attr.to(ids.device)
        return (attr,) if is_tuple else attr

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


def _prefix_sizes(n_words: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... up to ``n_words`` (the last one always included)."""
    sizes, size = [], 1
    while size < n_words:
        sizes.append(size)
        size = size + 1 if size < 4 else size + size // 2
    sizes.append(n_words)
    return sorted(set(sizes))
