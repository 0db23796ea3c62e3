"""Li et al.'s (2016, section 5) REINFORCE policy: the word representations it reads, the
policy and baseline networks, the reward of Eqs. 3-5 and the sparse KL prior."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

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

