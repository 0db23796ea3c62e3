"""Li et al.'s (2016) section-3 classifier for a lexical task (a word vector -> 2 tanh layers of
50 units -> class logits), its training under the paper's four strategies, and the erasure
importance of its input dimensions (Figure 1) and hidden units (Figure 2).

Importance is Eq. 1 with the gold label, averaged over training words (the paper's E), through
:class:`~captum_erasure.EmbeddingDimensionErasure` (input dimensions) and
:class:`~captum_erasure.HiddenUnitErasure` (the outputs of the two tanh layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from captum_erasure.attr._unit_erasure import DatasetImportance
from captum_erasure.attr.embedding_dimensions import EmbeddingDimensionErasure
from captum_erasure.attr.layer.hidden_units import HiddenUnitErasure
from captum_erasure.paper.li2016.glove import GLOVE_DIM
from captum_erasure.paper.li2016.lexical_tasks import LexicalTask
from captum_erasure.paper.li2016.training import (
    TrainingResult,
    accuracy,
    train_classifier,
)

# The paper's GloVe dimensions d31 and d26 counted from 1, i.e. columns 30 and 25 from 0.
FREQUENCY_DIMENSIONS = (30, 25)
# Figure 1c-f / Table 7: vanilla, the 31st dimension removed, the 31st and 26th removed, dropout.
STRATEGIES: dict[str, dict[str, Any]] = {
    "vanilla": {"removed_dims": (), "dropout": 0.0},
    "without d30": {"removed_dims": (30,), "dropout": 0.0},
    "without d30, d25": {"removed_dims": (30, 25), "dropout": 0.0},
    "dropout 0.2": {"removed_dims": (), "dropout": 0.2},
}
ERASURE_BATCH_SIZE = 4096  # rows per forward: the MLP is tiny, large batches amortise overhead


class LexicalMLP(nn.Module):
    """Word vector -> tanh(50) -> tanh(50) -> logits, with optional dropout (input vector and
    both hidden layers) and input dimensions removed (held at 0 in training and use)."""

    def __init__(self, n_classes: int, input_dim: int = GLOVE_DIM, hidden_size: int = 50,
                 dropout: float = 0.0, removed_dims: Sequence[int] = ()) -> None:
        super().__init__()
        keep = torch.ones(input_dim)
        keep[list(removed_dims)] = 0.0
        self.register_buffer("input_keep", keep)
        self.removed_dims = tuple(removed_dims)
        self.input_dropout = nn.Dropout(dropout)
        self.layer1, self.act1 = nn.Linear(input_dim, hidden_size), nn.Tanh()
        self.dropout1 = nn.Dropout(dropout)
        self.layer2, self.act2 = nn.Linear(hidden_size, hidden_size), nn.Tanh()
        self.dropout2 = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, n_classes)

    def hidden_layers(self) -> dict[str, nn.Module]:
        """The tanh activations whose units Figure 2 erases."""
        return {"layer 1": self.act1, "layer 2": self.act2}

    def forward(self, vectors: Tensor) -> Tensor:
        x = self.input_dropout(vectors * self.input_keep)
        x = self.dropout1(self.act1(self.layer1(x)))
        x = self.dropout2(self.act2(self.layer2(x)))
        return self.output(x)


@dataclass
class LexicalModel:
    """A trained MLP with its task, strategy and accuracies."""

    task: LexicalTask
    model: LexicalMLP
    strategy: str
    accuracy: dict[str, float] = field(default_factory=dict)  # train / dev / test
    training: TrainingResult | None = None


def train_lexical_model(task: LexicalTask, strategy: str = "vanilla", *, hidden_size: int = 50,
                        epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
                        max_train: int | None = None, seed: int = 0,
                        show_progress: bool = False) -> LexicalModel:
    """Train the paper's MLP on ``task`` under one of :data:`STRATEGIES` (seeded; the epoch with
    the best dev accuracy is kept); ``max_train`` caps the training words (tests)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    _, train_x, train_y = task.part("train")
    if max_train is not None and max_train < len(train_y):
        # A seeded sample: the words of a split come grouped by class.
        keep = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
        train_x, train_y = train_x[keep[:max_train]], train_y[keep[:max_train]]
    _, dev_x, dev_y = task.part("dev")
    torch.manual_seed(seed)  # weight initialisation
    model = LexicalMLP(task.n_classes, train_x.shape[1], hidden_size, **STRATEGIES[strategy])
    result = train_classifier(model, (train_x,), train_y, dev=((dev_x,), dev_y), epochs=epochs,
                              batch_size=batch_size, lr=lr, seed=seed,
                              show_progress=show_progress, desc=f"{task.name} ({strategy})")
    scores = {"train": accuracy(model, (train_x,), train_y)}
    for split in ("dev", "test"):
        _, x, y = task.part(split)
        scores[split] = accuracy(model, (x,), y)
    return LexicalModel(task, model, strategy, scores, result)


def erasure_examples(task: LexicalTask, split: str = "train", n_examples: int | None = 2000,
                     seed: int = 0, chunk: int = 512) -> list[tuple[Tensor, None, Tensor]]:
    """A seeded sample of ``n_examples`` words of ``split`` as ``(vectors, None, gold labels)``
    batches, the form ``attribute_dataset`` reads."""
    _, x, y = task.part(split)
    if n_examples is not None and n_examples < len(y):
        index = torch.from_numpy(np.random.default_rng(seed).choice(len(y), n_examples,
                                                                    replace=False))
        x, y = x[index], y[index]
    return [(x[i:i + chunk], None, y[i:i + chunk]) for i in range(0, len(y), chunk)]


def dimension_importance(trained: LexicalModel, split: str = "train",
                         n_examples: int | None = 2000, seed: int = 0,
                         score: str = "eq1") -> DatasetImportance:
    """Mean Eq. 1 importance of each of the 50 input dimensions (Figure 1), gold targets."""
    method = EmbeddingDimensionErasure(trained.model.eval(), batch_size=ERASURE_BATCH_SIZE)
    return method.attribute_dataset(erasure_examples(trained.task, split, n_examples, seed),
                                    score=score)


def unit_importance(trained: LexicalModel, split: str = "train", n_examples: int | None = 2000,
                    seed: int = 0, score: str = "eq1") -> dict[str, DatasetImportance]:
    """Mean Eq. 1 importance of each unit of the two tanh layers (Figure 2), gold targets."""
    model = trained.model.eval()
    method = HiddenUnitErasure(model, model.hidden_layers(), batch_size=ERASURE_BATCH_SIZE)
    return method.attribute_dataset(erasure_examples(trained.task, split, n_examples, seed),
                                    score=score)


@dataclass
class Dominance:
    """How much one dimension stands out in an importance vector."""

    top_dimension: int      # 0-based
    top_share: float        # its importance / the sum of positive importances
    top_ratio: float        # its importance / the second largest
    rank_of: dict[int, int]  # 1-based rank of chosen dimensions (e.g. 30, 25)


def dominance(importance: Sequence[float] | Tensor,
              watch: Sequence[int] = FREQUENCY_DIMENSIONS) -> Dominance:
    """The top dimension, its share of all positive importance, its ratio to the runner-up, and
    the rank of the ``watch`` dimensions."""
    values = np.asarray(importance, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    positive = values[values > 0].sum()
    top, second = values[order[0]], values[order[1]]
    ranks = {int(d): int(np.flatnonzero(order == d)[0]) + 1 for d in watch}
    return Dominance(int(order[0]), float(top / positive) if positive > 0 else float("nan"),
                     float(top / second) if second > 0 else float("inf"), ranks)
