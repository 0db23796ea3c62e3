"""A small, seeded supervised training loop for the models this package trains itself (the
GloVe sentiment RNNs, the lexical-task MLPs): Adam, cross-entropy, gradient clipping, a seeded
shuffle per epoch, a tqdm bar, and the epoch with the best dev accuracy kept at the end."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

# Turns the rows of one batch into forward arguments (e.g. trims shared right padding).
PrepareBatch = Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block. Small models gain little from more
    threads, and several threads stall badly when another process shares the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class TrainingResult:
    """What a training run did: the kept epoch, its dev accuracy and the per-epoch history."""

    best_epoch: int                       # 1-based; 0 when there was no dev set (last epoch kept)
    dev_accuracy: float | None
    history: list[dict] = field(default_factory=list)  # epoch, train_loss, dev_accuracy
    seconds: float = 0.0


def _batches(inputs: Sequence[Tensor], order: Tensor, batch_size: int,
             prepare: PrepareBatch | None) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        rows = tuple(t[index] for t in inputs)
        yield (prepare(rows) if prepare else rows), index


def predict(model: nn.Module, inputs: Sequence[Tensor], *, batch_size: int = 512,
            prepare_batch: PrepareBatch | None = None) -> Tensor:
    """Arg-max class per row of ``inputs`` (the forward's positional arguments), in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    predictions = []
    with torch.inference_mode():
        for rows, _ in _batches(inputs, torch.arange(len(inputs[0])), batch_size, prepare_batch):
            logits = model(*(t.to(device) for t in rows))
            predictions.append(logits.argmax(-1).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, inputs: Sequence[Tensor], labels: Tensor, *,
             batch_size: int = 512, prepare_batch: PrepareBatch | None = None) -> float:
    """Fraction of rows whose arg-max prediction equals ``labels``."""
    if len(labels) == 0:
        raise ValueError("accuracy needs at least one example")
    predicted = predict(model, inputs, batch_size=batch_size, prepare_batch=prepare_batch)
    return float((predicted == labels.cpu()).double().mean())


def _trainable_state(model: nn.Module) -> dict[str, Tensor]:
    """A copy of everything but frozen parameters (e.g. a shared GloVe matrix)."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def train_classifier(model: nn.Module, inputs: Sequence[Tensor], labels: Tensor, *,
                     dev: tuple[Sequence[Tensor], Tensor] | None = None, epochs: int = 10,
                     batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.0,
                     max_grad_norm: float | None = 5.0, seed: int = 0,
                     prepare_batch: PrepareBatch | None = None, show_progress: bool = True,
                     desc: str = "training") -> TrainingResult:
    """Train ``model`` in place with cross-entropy on ``model(*inputs) -> logits``.

    ``inputs`` are tensors with one row per example (e.g. ``(input_ids, attention_mask)`` or
    ``(vectors,)``); ``dev`` is ``(dev_inputs, dev_labels)``: after every epoch the dev
    accuracy is measured and at the end the weights of the best epoch (the earliest on ties)
    are restored. Frozen parameters are left alone. Returns the model in eval mode through
    :class:`TrainingResult`.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    if any(len(t) != len(labels) for t in inputs) or len(labels) == 0:
        raise ValueError(f"inputs and labels must share a non-empty first axis, got "
                         f"{[len(t) for t in inputs]} rows and {len(labels)} labels")
    started = time.perf_counter()
    torch.manual_seed(seed)  # dropout masks
    shuffle = torch.Generator().manual_seed(seed)  # batch order, independent of other RNG use
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=lr, weight_decay=weight_decay)
    result = TrainingResult(best_epoch=0, dev_accuracy=None)
    best_state = None
    steps = epochs * -(-len(labels) // batch_size)
    with tqdm(total=steps, desc=desc, disable=not show_progress, leave=False) as bar:
        for epoch in range(1, epochs + 1):
            model.train()
            total, seen = 0.0, 0
            order = torch.randperm(len(labels), generator=shuffle)
            for rows, index in _batches(inputs, order, batch_size, prepare_batch):
                logits = model(*(t.to(device) for t in rows))
                loss = F.cross_entropy(logits, labels[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
                optimizer.step()
                total += loss.item() * len(index)
                seen += len(index)
                bar.set_postfix(epoch=epoch, loss=f"{total / seen:.3f}")
                bar.update()
            record = {"epoch": epoch, "train_loss": total / seen}
            if dev is not None:
                record["dev_accuracy"] = accuracy(model, dev[0], dev[1],
                                                  prepare_batch=prepare_batch)
                if result.dev_accuracy is None or record["dev_accuracy"] > result.dev_accuracy:
                    result.best_epoch, result.dev_accuracy = epoch, record["dev_accuracy"]
                    best_state = _trainable_state(model)
            result.history.append(record)
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
