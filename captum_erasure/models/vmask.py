"""VMASK (Chen & Ji, EMNLP 2020): a variational word-mask layer right after a classifier's
(frozen) token embedding, trained jointly with the classifier.

Per word, a small network on the word's embedding (``tanh`` hidden layer, as the authors')
gives two logits, drop and keep. Training samples a hard 0/1 mask per word with the straight-
through Gumbel-softmax and multiplies the embedding by it; the loss adds the information-
bottleneck term ``beta * KL(q(keep | word) || Bernoulli(prior))`` averaged over the attended
words (the authors' prior is 0.5, where the KL is ``log 2`` minus the mask's entropy). At
inference the embedding is scaled by the expected mask, the keep probability, which is also
the attribution (:class:`captum_erasure.attr.vmask.VMask`).

The mask replaces the model's embedding module by a :class:`MaskedEmbedding` (the embedding
followed by the mask), so the model keeps its own class and forward: an HF classifier stays an
HF classifier (``inputs_embeds`` callers such as LIT feed vectors that already went through the
mask), and any ``nn.Module`` with ``get_input_embeddings()`` or an ``embedding_layer=`` works,
e.g. the GloVe LSTM of :mod:`captum_erasure.paper.li2016`.

Saving is safetensors only (:func:`save_word_mask`, :func:`save_vmask_classifier`); the cached
MiniLM builds are in :mod:`captum_erasure.models.vmask_minilm`.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_erasure._core.engine import output_logits
from captum_erasure._core.forwards import model_caller
from captum_erasure._core.hooks import input_embeddings
from captum_erasure._core.inputs import require_class_outputs
from captum_erasure.models._finetune import linear_warmup_decay

MASK_FILENAME = "vmask.safetensors"
MASK_FORMAT = "captum-erasure-vmask-v1"
DEFAULT_PRIOR = 0.5      # the authors' uniform prior over keep/drop
DEFAULT_BETA = 1.0       # the authors' starting weight of the bottleneck term
DEFAULT_TEMPERATURE = 1.0


class VariationalWordMask(nn.Module):
    """The mask network: ``embedding -> tanh(Linear) -> Linear -> (drop, keep)`` logits.

    ``forward(vectors)`` returns the masked vectors: a hard Gumbel-softmax sample per word in
    training mode (straight-through gradients), the keep probability in eval mode. The logits of
    the last training forward stay in ``last_logits`` for :meth:`kl_to_prior`.
    """

    def __init__(self, embedding_dim: int, hidden_size: int | None = None,
                 prior: float = DEFAULT_PRIOR, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__()
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior is a keep probability in (0, 1), got {prior!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        hidden_size = int(hidden_size or embedding_dim)  # the authors' default: the embedding's
        self.hidden = nn.Linear(int(embedding_dim), hidden_size)
        self.to_logits = nn.Linear(hidden_size, 2)
        self.prior, self.temperature = float(prior), float(temperature)
        self.last_logits: Tensor | None = None

    @property
    def settings(self) -> dict[str, Any]:
        return {"embedding_dim": self.hidden.in_features, "hidden_size": self.hidden.out_features,
                "prior": self.prior, "temperature": self.temperature}

    def logits(self, vectors: Tensor) -> Tensor:
        """``(..., 2)``: drop, keep."""
        return self.to_logits(torch.tanh(self.hidden(vectors)))

    def keep_probability(self, vectors: Tensor) -> Tensor:
        """The expected mask, ``q(keep | word)``, shaped like ``vectors`` without its last
        dimension."""
        return torch.softmax(self.logits(vectors), -1)[..., 1]

    def forward(self, vectors: Tensor) -> Tensor:
        logits = self.logits(vectors)
        if self.training:
            self.last_logits = logits
            keep = F.gumbel_softmax(logits, tau=self.temperature, hard=True)[..., 1:]
        else:
            keep = torch.softmax(logits, -1)[..., 1:]
        return vectors * keep.to(vectors.dtype)

    def kl_to_prior(self, logits: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Mean over attended words of ``KL(Bernoulli(q) || Bernoulli(prior))``, in nats."""
        log_q = torch.log_softmax(logits.float(), -1)
        log_prior = torch.tensor([math.log1p(-self.prior), math.log(self.prior)],
                                 device=logits.device)
        kl = (log_q.exp() * (log_q - log_prior)).sum(-1)
        if attention_mask is None:
            return kl.mean()
        weight = attention_mask.to(kl.dtype)
        return (kl * weight).sum() / weight.sum().clamp_min(1)


class MaskedEmbedding(nn.Module):
    """A token embedding followed by a :class:`VariationalWordMask`; it takes the embedding's
    place in the model (see :func:`attach_vmask`) and answers for it (``weight``, sizes)."""

    def __init__(self, embedding: nn.Module, mask: VariationalWordMask) -> None:
        super().__init__()
        self.embedding, self.mask = embedding, mask

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    @property
    def num_embeddings(self) -> int:
        return self.embedding.weight.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.embedding.weight.shape[1]

    @property
    def padding_idx(self) -> int | None:
        return getattr(self.embedding, "padding_idx", None)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.mask(self.embedding(input_ids))

    def keep_probability(self, input_ids: Tensor) -> Tensor:
        """``(batch, sequence)`` keep probability of each token (no sampling)."""
        return self.mask.keep_probability(self.embedding(input_ids))


# -- attaching ----------------------------------------------------------------------------------
def word_mask_of(model: nn.Module) -> MaskedEmbedding | None:
    """The model's :class:`MaskedEmbedding`, or None when it has no VMASK layer."""
    return next((m for m in model.modules() if isinstance(m, MaskedEmbedding)), None)


def _replace_module(model: nn.Module, old: nn.Module, new: nn.Module) -> int:
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)
                replaced += 1
    return replaced


def attach_vmask(model: nn.Module, *, embedding_layer: nn.Module | None = None,
                 hidden_size: int | None = None, prior: float = DEFAULT_PRIOR,
                 temperature: float = DEFAULT_TEMPERATURE,
                 mask: VariationalWordMask | None = None,
                 freeze_embedding: bool = True) -> MaskedEmbedding:
    """Put a VMASK layer right after ``model``'s token embedding (in place) and return it.

    ``embedding_layer``: the module whose output is masked (default: the model's
    ``get_input_embeddings()``). ``mask``: an existing mask network (e.g. from
    :func:`load_word_mask`), else a new one with ``hidden_size`` units (default: the embedding
    width, as the authors), ``prior`` and ``temperature``. The embedding is frozen unless
    ``freeze_embedding=False`` (the paper freezes it).
    """
    if word_mask_of(model) is not None:
        raise ValueError("the model already has a VMASK layer (a MaskedEmbedding)")
    n_labels = getattr(getattr(model, "config", None), "num_labels", None)
    if n_labels is not None:
        require_class_outputs(int(n_labels), "VMASK")
    embedding = embedding_layer if embedding_layer is not None else input_embeddings(model)
    weight = getattr(embedding, "weight", None)
    if embedding is None or not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(
            "VMASK attaches right after the token-embedding layer, but the model has none: it "
            "has no get_input_embeddings() returning an embedding with a (vocabulary, width) "
            "weight; pass embedding_layer= (the model's nn.Embedding)")
    if mask is None:
        mask = VariationalWordMask(weight.shape[1], hidden_size, prior, temperature)
    elif mask.hidden.in_features != weight.shape[1]:
        raise ValueError(f"the mask reads {mask.hidden.in_features}-d vectors but the "
                         f"embedding is {weight.shape[1]}-d")
    mask.to(device=weight.device)
    mask.train(model.training)  # a new module is in training mode: it would sample in eval
    wrapped = MaskedEmbedding(embedding, mask)
    if not _replace_module(model, embedding, wrapped):
        raise ValueError("embedding_layer is not a submodule of the model")
    if freeze_embedding:
        weight.requires_grad_(False)
    return wrapped


@contextlib.contextmanager
def unmasked(model: nn.Module) -> Iterator[nn.Module]:
    """The model with its plain embedding back in place while active (to save it in its own
    format; :func:`save_vmask_classifier` saves the mask beside it)."""
    wrapped = word_mask_of(model)
    if wrapped is None:
        yield model
        return
    _replace_module(model, wrapped, wrapped.embedding)
    try:
        yield model
    finally:
        _replace_module(model, wrapped.embedding, wrapped)


# -- training -----------------------------------------------------------------------------------
@dataclass
class JointTraining:
    """What :func:`train_jointly` did: one dict per step (``loss``, ``cross_entropy``,
    ``kl``), steps and seconds."""

    steps: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)


def train_jointly(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, *,
                  epochs: int = 1, batch_size: int = 32, lr: float = 1e-4,
                  mask_lr: float = 1e-3, beta: float = DEFAULT_BETA,
                  weight_decay: float = 0.01, warmup_fraction: float = 0.1,
                  max_steps: int | None = None, seed: int = 0,
                  show_progress: bool = True) -> JointTraining:
    """Train a classifier and its VMASK layer together on right-padded ``input_ids``
    (``model(input_ids, attention_mask)`` -> logits or an HF output), in place.

    Loss: cross-entropy + ``beta`` * the mask's KL to its prior (:meth:`kl_to_prior`); a model
    without a VMASK layer is trained by the same recipe with cross-entropy alone (the matched
    base model). AdamW (``lr`` for the classifier, ``mask_lr`` for the mask network), linear
    warm-up then decay, gradient clipping at 1.0, a seeded shuffle; dropout and the Gumbel
    noise come from ``seed`` too. Frozen parameters stay frozen. Returns in eval mode.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if not (len(input_ids) == len(attention_mask) == len(labels)) or len(labels) == 0:
        raise ValueError(f"got {len(input_ids)} inputs, {len(attention_mask)} attention rows "
                         f"and {len(labels)} labels; need the same number, at least one")
    wrapped = word_mask_of(model)
    mask_params = list(wrapped.mask.parameters()) if wrapped is not None else []
    mask_ids = {id(p) for p in mask_params}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in mask_ids]
    groups = [{"params": body, "lr": lr}]
    if mask_params:
        groups.append({"params": mask_params, "lr": mask_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps,
                                                                   epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(max(1, round(warmup_fraction * total)), total))
    device = next(model.parameters()).device
    call = model_caller(model)  # HF models by keyword (GPT-2's second parameter is the cache)
    torch.manual_seed(seed)  # dropout and Gumbel noise
    shuffle = torch.Generator().manual_seed(seed)
    log = JointTraining()
    started = time.perf_counter()
    model.train()
    with tqdm(total=total, desc="VMASK training" if wrapped else "training",
              disable=not show_progress) as bar:
        while log.steps < total:
            order = torch.randperm(len(labels), generator=shuffle)
            for start in range(0, len(labels), batch_size):
                if log.steps >= total:
                    break
                rows = order[start:start + batch_size]
                attention = attention_mask[rows]
                width = max(1, int(attention.sum(1).max()))  # drop shared right padding
                ids, attention = input_ids[rows, :width].to(device), attention[:, :width].to(device)
                logits = output_logits(call(ids, attention))
                require_class_outputs(logits, "VMASK training")
                cross_entropy = F.cross_entropy(logits, labels[rows].to(device))
                kl = wrapped.mask.kl_to_prior(wrapped.mask.last_logits, attention) \
                    if wrapped is not None else torch.zeros((), device=device)
                loss = cross_entropy + beta * kl
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
                optimizer.step()
                scheduler.step()
                log.steps += 1
                record = {"loss": loss.item(), "cross_entropy": cross_entropy.item(),
                          "kl": kl.item()}
                log.history.append(record)
                bar.set_postfix(ce=f"{record['cross_entropy']:.3f}", kl=f"{record['kl']:.3f}")
                bar.update()
    if wrapped is not None:
        wrapped.mask.last_logits = None
    log.seconds = time.perf_counter() - started
    model.eval()
    return log


# -- saving and loading (safetensors only) ------------------------------------------------------
def save_word_mask(mask: VariationalWordMask | MaskedEmbedding, path: str | Path) -> None:
    """The mask network's weights and settings in one safetensors file."""
    if isinstance(mask, MaskedEmbedding):
        mask = mask.mask
    state = {k: v.detach().cpu().contiguous() for k, v in mask.state_dict().items()}
    save_file(state, str(path), metadata={"format": MASK_FORMAT,
                                          "settings": json.dumps(mask.settings)})


def load_word_mask(path: str | Path) -> VariationalWordMask:
    """A mask network saved by :func:`save_word_mask` (in eval mode, on the CPU)."""
    with safe_open(str(path), framework="pt") as saved:
        metadata = saved.metadata() or {}
        if metadata.get("format") != MASK_FORMAT:
            raise ValueError(f"{path} is not a VMASK mask file (format "
                             f"{metadata.get('format')!r}, expected {MASK_FORMAT!r})")
        state = {key: saved.get_tensor(key) for key in saved.keys()}
    mask = VariationalWordMask(**json.loads(metadata["settings"]))
    mask.load_state_dict(state)
    return mask.eval()


def is_vmask_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a classifier saved by :func:`save_vmask_classifier`."""
    return (Path(folder) / MASK_FILENAME).is_file()


def save_vmask_classifier(model: nn.Module, tokenizer: Any, folder: str | Path,
                          info: dict[str, Any] | None = None) -> None:
    """An HF classifier with a VMASK layer: ``save_pretrained`` of the plain model (safetensors),
    the tokenizer, ``vmask.safetensors`` and, when given, ``info.json``."""
    wrapped = word_mask_of(model)
    if wrapped is None:
        raise ValueError("the model has no VMASK layer to save; attach_vmask() first")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with unmasked(model):
        model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    save_word_mask(wrapped, folder / MASK_FILENAME)
    if info is not None:
        (folder / "info.json").write_text(json.dumps(info, indent=2) + "\n")


def load_vmask_classifier(folder: str | Path, device: torch.device | str | None = None,
                          ) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` saved by :func:`save_vmask_classifier`, in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    folder = Path(folder)
    if not is_vmask_folder(folder):
        raise FileNotFoundError(f"{folder} has no {MASK_FILENAME}: not a VMASK classifier")
    model = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)
    attach_vmask(model, mask=load_word_mask(folder / MASK_FILENAME))
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def keep_probabilities(model: nn.Module, input_ids: Tensor,
                       attention_mask: Tensor | None = None) -> Tensor:
    """``(batch, sequence)`` keep probabilities of the model's VMASK layer (0 on padding)."""
    wrapped = word_mask_of(model)
    if wrapped is None:
        raise ValueError("the model has no VMASK layer; attach_vmask() and train it first")
    with torch.no_grad():
        keep = wrapped.keep_probability(input_ids.to(wrapped.weight.device)).cpu()
    return keep if attention_mask is None else keep * attention_mask.cpu().to(keep.dtype)


def mean_keep_by_word(words: Sequence[Sequence[str]], keeps: Sequence[Sequence[float]],
                      min_count: int = 3) -> list[tuple[str, float, int]]:
    """``(word, mean keep probability, count)`` over a corpus, words seen at least
    ``min_count`` times (lower-cased), highest mean first."""
    totals: dict[str, list[float]] = {}
    for row_words, row_keep in zip(words, keeps):
        for word, keep in zip(row_words, row_keep):
            totals.setdefault(word.lower(), []).append(float(keep))
    rows = [(w, sum(v) / len(v), len(v)) for w, v in totals.items() if len(v) >= min_count]
    return sorted(rows, key=lambda r: (-r[1], r[0]))
