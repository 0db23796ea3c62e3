"""Hand-checkable toys for the decision-flip methods: a bag-of-words classifier over the tiny
test vocabulary (conftest ``TINY_VOCAB``) whose decision is known word by word.

``MarkerBag`` scores a text as ``bias + sum of its words' weights`` (attended tokens only) and
returns logits ``[0, score]``: label 1 ("pos") when the score is positive. With the default
weights "good" and "great" are +2 each and the bias -1, so a text with both markers is
positive, stays positive without either one alone, and turns negative only when *both* are
erased: its minimal flipping set is exactly {good, great}. "bad" (-0.5) and "fun" (+0.25)
have small weights so that leave-one-out orders and reductions are not all ties.
"""

from __future__ import annotations

import torch
from conftest import TINY_VOCAB
from torch import nn

WEIGHTS = {"good": 2.0, "great": 2.0, "bad": -0.5, "fun": 0.25}
BIAS = -1.0


class MarkerBag(nn.Module):
    """Bag-of-words classifier with a per-token weight stored as a 1-d embedding (so that
    gradient methods find an embedding layer)."""

    def __init__(self, weights: dict[str, float] | None = None, bias: float = BIAS) -> None:
        super().__init__()
        weights = WEIGHTS if weights is None else weights
        self.embedding = nn.Embedding(len(TINY_VOCAB), 1)
        with torch.no_grad():
            self.embedding.weight.zero_()
            for word, weight in weights.items():
                self.embedding.weight[TINY_VOCAB.index(word), 0] = weight
        self.bias = bias

    def get_input_embeddings(self) -> nn.Module:
        return self.embedding

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        values = self.embedding(input_ids).squeeze(-1) * attention_mask
        score = values.sum(1) + self.bias
        return torch.stack([torch.zeros_like(score), score], -1)


def one_hot_words(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A policy representation for the toy: each token as a one-hot vector of its id."""
    return nn.functional.one_hot(input_ids, len(TINY_VOCAB)).float()


def toy_texts() -> list[str]:
    """Training texts for the policy: the markers in varied company."""
    fillers = ["the movie was", "a film is", "the plot is very", "i liked it , it was",
               "the acting was", "it is not", "a fun movie , and", "the script was bad but"]
    return [f"{filler} good and great" if i % 2 == 0 else f"good , {filler} great"
            for i, filler in enumerate(fillers * 3)]


# -- three classes: flipping *to* a class differs from flipping *away* -------------------------
THREE_CLASS_LABELS = {0: "neg", 1: "neu", 2: "pos"}
THREE_CLASS_WEIGHTS = {"good": (0.0, 0.0, 3.0), "bad": (2.0, 0.0, 0.0)}
THREE_CLASS_BIAS = (0.0, 0.5, 0.0)


class ThreeClassBag(nn.Module):
    """Bag of words with three classes (neg/neu/pos): logits = bias + the words' vectors.

    "the good and bad movie": logits (2, 0.5, 3), pos. Erasing "good" gives (2, 0.5, 0), neg:
    the label is left, but not for neu; neu needs "good" *and* "bad" erased (0, 0.5, 0).
    So the flip away from pos is {good} and the flip to "neu" is {good, bad}."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import PretrainedConfig
        self.config = PretrainedConfig(id2label=THREE_CLASS_LABELS,
                                       label2id={v: k for k, v in THREE_CLASS_LABELS.items()},
                                       pad_token_id=TINY_VOCAB.index("[PAD]"))
        self.embedding = nn.Embedding(len(TINY_VOCAB), 3)
        with torch.no_grad():
            self.embedding.weight.zero_()
            for word, vector in THREE_CLASS_WEIGHTS.items():
                self.embedding.weight[TINY_VOCAB.index(word)] = torch.tensor(vector)
        self.register_buffer("bias", torch.tensor(THREE_CLASS_BIAS))

    def get_input_embeddings(self) -> nn.Module:
        return self.embedding

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        vectors = self.embedding(input_ids) * attention_mask[..., None]
        return vectors.sum(1) + self.bias
