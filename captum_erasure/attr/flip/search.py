"""The explain-time search of :class:`MinimalErasure`: a per-example additive model of the flip
margin in log-odds that ranks unseen word sets by their expected shrinkage of the answer."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

from captum_erasure._core.word_sets import SetEvaluator
from captum_erasure.attr.flip._common import (
    is_flip,
)

FIRST_FLIP_RESERVE = 4  # rows kept for pruning a first flip found in the last search round


# -- explain-time search state ------------------------------------------------------------------
def log_odds_margin(probs: Tensor, original_label: int, target: int | None) -> Tensor:
    """How far each row is from flipping, in log-odds: log P(original) - max log P(other)
    (with a target: max log P(non-target) - log P(target)). Negative = flipped."""
    logp = probs.double().clamp_min(1e-300).log()
    keep = original_label if target is None else target
    others = logp.clone()
    others[:, keep] = -math.inf
    rival = others.max(1).values
    return logp[:, keep] - rival if target is None else rival - logp[:, keep]


@lru_cache(maxsize=None)
def _combinations(m: int, k: int) -> Tensor:
    return torch.tensor(list(itertools.combinations(range(m), k)), dtype=torch.long)


class TextSearch:
    """One text's explain-time search: the log-odds margin of every mask evaluated, an
    additive model of it (margin(D) ~ margin(e) + sum of per-word effects; ridge fit around
    the leave-one-out effects, refitted after every round) and the smallest flipping set.

    ``proposals`` ranks unseen masks of each size k below the best flip's size K by
    P(flip) * (K - k), with P(flip) = Phi(-predicted margin / (noise * sqrt(k))): the expected
    shrinkage of the answer. All size-k subsets of the ``candidates`` words with the most
    negative effects are scored (k <= 7), larger sizes by the top-k prefix only. The subsets
    of the best flip come first (they are the pruning checks)."""

    MAX_ENUMERATED = 7

    def __init__(self, original: Tensor, label: int, target: int | None,
                 policy_order: list[int], *, ridge: float, noise: float, candidates: int):
        self.label, self.target, self.policy_order = label, target, policy_order
        self.n_words = len(policy_order)
        self.ridge, self.noise, self.candidates = ridge, noise, candidates
        self.base = float(log_odds_margin(original[None], label, target)[0])
        self.margins: dict[tuple, float] = {}
        self.flipped: dict[tuple, bool] = {}
        self.best: tuple | None = None
        self.best_probs: Tensor | None = None

    def record(self, mask: Sequence[int], probs: Tensor) -> None:
        mask = tuple(sorted(mask))
        margin = float(log_odds_margin(probs[None], self.label, self.target)[0])
        self.margins[mask] = margin
        self.flipped[mask] = bool(is_flip(probs[None], self.label, self.target)[0])
        if self.flipped[mask] and (self.best is None or (len(mask), margin) <
                                   (len(self.best), self.margins[self.best])):
            self.best, self.best_probs = mask, probs

    def known(self, mask: tuple) -> bool:
        return mask in self.margins

    def flips(self, mask: tuple) -> bool:
        return self.flipped.get(mask, False)

    def single_effects(self) -> Tensor:
        """Leave-one-out effect of each probed word on the margin (0 for the others)."""
        effects = torch.zeros(self.n_words, dtype=torch.float64)
        for mask, margin in self.margins.items():
            if len(mask) == 1:
                effects[mask[0]] = margin - self.base
        return effects

    def effects(self) -> Tensor:
        """Per-word effects of the additive model: ridge regression of the evaluated masks'
        margins, shrunk towards the leave-one-out effects."""
        prior = self.single_effects()
        masks = [m for m in self.margins if m]
        if not masks:
            return prior
        x = torch.zeros(len(masks), self.n_words, dtype=torch.float64)
        for i, mask in enumerate(masks):
            x[i, list(mask)] = 1.0
        y = torch.tensor([self.margins[m] - self.base for m in masks], dtype=torch.float64)
        gram = x.T @ x + self.ridge * torch.eye(self.n_words, dtype=torch.float64)
        return prior + torch.linalg.solve(gram, x.T @ (y - x @ prior))

    def ranked_words(self, effects: Tensor) -> list[int]:
        """Most flip-promoting first (most negative effect); ties in the policy's order."""
        rank = {f: i for i, f in enumerate(self.policy_order)}
        return sorted(range(self.n_words), key=lambda f: (float(effects[f]), rank[f]))

    def proposals(self, width: int) -> list[tuple]:
        if width <= 0:
            return []
        chosen = [] if self.best is None or len(self.best) > width else \
            [s for s in (tuple(f for f in self.best if f != r) for r in self.best)
             if s and s not in self.margins]
        limit = self.n_words + 1 if self.best is None else len(self.best)
        effects = self.effects()
        ranked = self.ranked_words(effects)
        m = min(self.n_words, self.candidates)
        top = torch.tensor(ranked[:m])
        masks, values = [], []
        for k in range(1, limit):
            index = top[_combinations(m, k)] if k <= min(m, self.MAX_ENUMERATED) else \
                torch.tensor([ranked[:k]])
            predicted = self.base + effects[index].sum(1)
            p_flip = torch.special.ndtr(-predicted / (self.noise * math.sqrt(k)))
            masks.append(index)
            values.append(p_flip * (limit - k))
        if masks:
            for i in torch.argsort(torch.cat(values), descending=True, stable=True).tolist():
                if len(chosen) >= width:
                    break
                mask = tuple(sorted(_row(masks, i)))
                if mask not in self.margins and mask not in chosen:
                    chosen.append(mask)
        return chosen

    def restore_order(self, erased: Sequence[int]) -> list[int]:
        """Pruning tries the least flip-promoting erased words first."""
        return [f for f in self.ranked_words(self.effects())[::-1] if f in erased]

    def greedy_path(self) -> list[int]:
        """The greedy baseline's order: probed words by leave-one-out effect, then the others
        in the policy's order."""
        effects = self.single_effects()
        probed = [m[0] for m in self.margins if len(m) == 1]
        rest = [f for f in self.policy_order if f not in probed]
        return sorted(probed, key=lambda f: (float(effects[f]), f)) + rest


def _row(blocks: list[Tensor], index: int) -> list[int]:
    """Row ``index`` of the concatenation of ``blocks`` (of different widths)."""
    for block in blocks:
        if index < len(block):
            return block[index].tolist()
        index -= len(block)
    raise IndexError(index)


@dataclass
class SearchBatch:
    """What the search needs about a batch of examples."""

    evaluator: SetEvaluator
    words: Tensor        # (B, W, d) word representations
    valid: Tensor        # (B, W) word exists
    pairs: Tensor        # (B, W-1) same-sentence neighbours
    original: Tensor     # (B, C) probabilities of the unperturbed inputs
    targets: list        # per example: class to flip towards, or None


def batch_flips(batch: SearchBatch, examples: Sequence[int], out: Tensor) -> Tensor:
    """Whether each evaluated row (of ``examples``) flips its example's decision."""
    return torch.stack([is_flip(out[i:i + 1], int(batch.original[b].argmax()),
                                batch.targets[b])[0] for i, b in enumerate(examples)]) \
        if len(examples) else torch.zeros(0, dtype=torch.bool)


def start_searches(batch: SearchBatch, logits: Tensor, new_search) -> tuple[list, list[str]]:
    """One search per text, ``new_search(original, label, target, policy_order)``, except for
    texts already predicted as their target (a message instead)."""
    texts: list = [None] * len(batch.original)
    messages = [""] * len(batch.original)
    for b in range(len(batch.original)):
        label, target = int(batch.original[b].argmax()), batch.targets[b]
        if target is not None and label == target:
            messages[b] = f"the text is already predicted as the target class {target}"
            continue
        n_words = int(batch.valid[b].sum())
        texts[b] = new_search(batch.original[b], label, target,
                              torch.argsort(-logits[b, :n_words], stable=True).tolist())
    return texts, messages


def record_masks(evaluator: SetEvaluator, texts: list, requests: list, desc: str) -> None:
    """Evaluates ``(example, mask)`` requests in one batched pass; each text's search model
    learns from its rows."""
    if requests:
        out = evaluator.evaluate(requests, desc=desc)
        for (b, mask), row in zip(requests, out):
            texts[b].record(mask, row)


def greedy_fallback(evaluator: SetEvaluator, texts: list, live: list[int],
                    start: str = "checkpoints") -> None:
    """Texts without a flip after the search walk their ``greedy_path()`` (the guided
    search: the greedy baseline's order, erase the top 1, 2, ... words by leave-one-out gain;
    the policy search: the policy's ranking), all texts in batched rounds. First round:
    ``"checkpoints"``, eight evenly spaced prefix sizes; ``"doubling"``, from the longest
    prefix already known not to flip, twice as many words per round (the policy search has
    tried its short prefixes). Then bisection between the longest known non-flipping and the
    shortest flipping prefix; only when erasing the whole path does not flip, every remaining
    prefix, so every text whose path flips at all is flipped."""
    paths = {b: texts[b].greedy_path() for b in live if texts[b].best is None}

    def prefix(b: int, k: int) -> tuple:
        return tuple(sorted(paths[b][:k]))

    requests = [] if start == "doubling" else [
        (b, prefix(b, k)) for b, path in paths.items()
        for k in sorted({math.ceil(len(path) * j / 8) for j in range(1, 9)})]
    walked: set[int] = set()
    while True:
        record_masks(evaluator, texts, requests, f"fallback ({start})")
        requests = []
        for b, path in paths.items():
            n = len(path)
            known = [k for k in range(1, n + 1) if texts[b].known(prefix(b, k))]
            flipping = [k for k in known if texts[b].flips(prefix(b, k))]
            if flipping:
                high = flipping[0]
                low = max((k for k in known if k < high), default=0)
                if high - low > 1:
                    requests.append((b, prefix(b, (low + high) // 2)))
            elif n in known:
                if b not in walked:  # not even the whole path flips: every prefix, once
                    walked.add(b)
                    requests += [(b, prefix(b, k)) for k in range(1, n) if k not in known]
            else:
                requests.append((b, prefix(b, min(n, max(2 * max(known, default=0), 1)))))
        if not requests:
            return
