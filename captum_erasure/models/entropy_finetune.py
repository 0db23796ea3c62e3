"""Feng et al.'s (EMNLP 2018) remedy for over-confident reduced inputs: entropy fine-tuning.

Input reduction (:class:`~captum_erasure.InputReduction`) shrinks a text to a few words that the
model labels as before, often *more* confidently than the whole text. Feng et al. fine-tune the
model so that such reduced inputs look uninformative to it: the usual cross-entropy on the
original training examples plus a term that maximises the output entropy on reduced versions of
training examples,

    loss = CE(f(x), y)  -  entropy_weight * H(f(x_reduced)),   H(p) = -sum_c p_c log p_c,

with the reduced inputs made once, by beam-search input reduction on the model before
fine-tuning. The routine takes any classifier called as ``model(input_ids, attention_mask)``
that returns logits (a tensor or an HF output with ``.logits``): HF sequence classifiers and the
GloVe RNN models of :mod:`captum_erasure.paper.li2016` alike. It needs at least two outputs (the
entropy of a one-way softmax is always 0).

:func:`load_entropy_model` builds (once) and caches the default model fine-tuned this way, like
:func:`~captum_erasure.models.load_default_model`; the reduced training texts are cached
separately so that other weights can be tried without reducing again. Models are saved as
safetensors only (:func:`save_finetuned`, :func:`load_finetuned`).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from captum_erasure._core.engine import output_logits
from captum_erasure._core.forwards import model_caller
from captum_erasure._core.text import encode_texts
from captum_erasure.attr.input_reduction import InputReduction, ReductionResult
from captum_erasure.data import cache_dir, load_rotten_tomatoes
from captum_erasure.models._finetune import (
    INFO_FILENAME,
    adamw_optimizer,
    install_dir,
    linear_warmup_decay,
    package_versions,
    read_info,
    save_to_cache,
)
from captum_erasure.models.default import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODEL_DIRNAME,
    evaluate_accuracy,
    load_default_model,
)

WEIGHTS_FILENAME = "model.safetensors"
REDUCED_FILENAME = "reduced_train.json"


# -- reduced inputs ----------------------------------------------------------------------------
def reduce_texts(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, beam_size: int = 3,
                 batch_size: int = 32, max_length: int = DEFAULT_MAX_LENGTH,
                 show_progress: bool = True, **reduction_options: Any) -> list[ReductionResult]:
    """Beam-search input reduction (gradient importance, Feng's choice) of ``texts``, ``batch_size``
    texts per call of :meth:`InputReduction.reduce` (each call batches all beams of all its
    texts through the shared engine). ``reduction_options`` go to :class:`InputReduction`."""
    check_two_outputs(model, tokenizer, max_length)
    reducer = InputReduction(model, beam_size=beam_size, **reduction_options)
    texts = [str(text) for text in texts]
    results: list[ReductionResult] = []
    with tqdm(total=len(texts), desc=f"input reduction (beam {beam_size})", unit="text",
              disable=not show_progress) as bar:
        for start in range(0, len(texts), batch_size):
            part = texts[start:start + batch_size]
            results += reducer.reduce(part, tokenizer=tokenizer, max_length=max_length,
                                      truncate=True)
            bar.update(len(part))
    return results


def path_reduced_texts(model: nn.Module, tokenizer: Any, texts: Sequence[str],
                       removal_paths: Sequence[Sequence[int]], max_words: int, *,
                       max_length: int = DEFAULT_MAX_LENGTH) -> list[str]:
    """The reduced inputs met on the way: per text, every state of its reduction's
    ``removal_path`` (word indices, as in :class:`ReductionResult`) that keeps at most
    ``max_words`` words, from the longest such state to the final reduction. The original
    itself is never one of them (it is an original, trained with its label). Words are found
    as :func:`reduce_texts` found them (same tokenizer, ``max_length``, truncation)."""
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if len(texts) != len(removal_paths):
        raise ValueError(f"{len(texts)} texts but {len(removal_paths)} removal paths")
    encoded = encode_texts(model, tokenizer, [str(t) for t in texts], max_length=max_length,
                           truncate=True)
    states = []
    for row, path in enumerate(removal_paths):
        n_words = len(encoded.spans[row])
        for removed in range(max(1, n_words - max_words), len(path) + 1):
            states.append(encoded.text_without(row, path[:removed]))
    return states


# -- the loss ----------------------------------------------------------------------------------
def output_entropy(logits: Tensor) -> Tensor:
    """Per row, the entropy (nats) of the softmax of ``logits``."""
    log_p = F.log_softmax(logits.float(), -1)
    return -(log_p.exp() * log_p).sum(-1)


def _logits(model: nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int,
            device: torch.device) -> Tensor:
    encoded = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
    return output_logits(model_caller(model)(encoded["input_ids"].to(device),
                                             encoded["attention_mask"].to(device)))


def check_two_outputs(model: nn.Module, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH,
                      ) -> int:
    """The number of outputs of ``model``; ValueError if it has fewer than two."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = _logits(model, tokenizer, ["a"], max_length, _device(model))
    finally:
        model.train(was_training)
    n_outputs = logits.shape[-1] if logits.dim() == 2 else 1
    if n_outputs < 2:
        raise ValueError(
            f"entropy fine-tuning needs a classifier with at least two outputs (logits of shape "
            f"(rows, classes)); this model returns shape {tuple(logits.shape)}: the entropy of "
            "a one-way softmax is always 0, and input reduction needs a predicted class")
    return n_outputs


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def entropy_fine_tune(model: nn.Module, tokenizer: Any, texts: Sequence[str],
                      labels: Sequence[int], reduced_texts: Sequence[str], *,
                      entropy_weight: float = 1.0, epochs: int = 1, batch_size: int = 16,
                      lr: float = 2e-5, max_length: int = DEFAULT_MAX_LENGTH,
                      warmup_fraction: float = 0.1, weight_decay: float = 0.01, seed: int = 0,
                      show_progress: bool = True) -> pd.DataFrame:
    """Fine-tune ``model`` in place with Feng et al.'s loss; returns the per-step history
    (``cross_entropy`` on the originals, ``reduced_entropy`` on the reduced texts, ``loss``).

    Each step takes ``batch_size`` originals (a seeded shuffle per epoch; ``epochs`` passes
    over them set the number of steps) and ``batch_size`` reduced texts (their own seeded
    shuffle, cycled when there are fewer of them). AdamW with linear warmup and decay and
    gradient clipping at 1.0, as :func:`~captum_erasure.models.default.fine_tune_classifier`.
    Frozen parameters (``requires_grad=False``, e.g. GloVe vectors) stay frozen. The model is
    left in eval mode."""
    texts, reduced = [str(t) for t in texts], [str(t) for t in reduced_texts]
    targets = torch.as_tensor(list(labels), dtype=torch.long)
    if len(texts) != len(targets):
        raise ValueError(f"{len(texts)} texts but {len(targets)} labels")
    if not texts or not reduced:
        raise ValueError("entropy_fine_tune needs at least one original and one reduced text")
    if not entropy_weight >= 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    check_two_outputs(model, tokenizer, max_length)
    torch.manual_seed(seed)  # dropout masks
    originals_order = torch.Generator().manual_seed(seed)
    reduced_order = torch.Generator().manual_seed(seed + 1)
    device = _device(model)
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    total_steps = epochs * steps_per_epoch
    optimizer = adamw_optimizer(model, lr, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(
        max(1, round(warmup_fraction * total_steps)), total_steps))
    reduced_queue: list[int] = []
    history = []
    model.train()
    with tqdm(total=total_steps, desc="entropy fine-tuning", disable=not show_progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(texts), generator=originals_order).tolist()
            for start in range(0, len(texts), batch_size):
                batch = order[start:start + batch_size]
                while len(reduced_queue) < batch_size:
                    reduced_queue += torch.randperm(len(reduced), generator=reduced_order).tolist()
                picked, reduced_queue = reduced_queue[:batch_size], reduced_queue[batch_size:]
                logits = _logits(model, tokenizer, [texts[i] for i in batch], max_length, device)
                cross_entropy = F.cross_entropy(logits.float(), targets[batch].to(device))
                entropy = output_entropy(_logits(model, tokenizer, [reduced[i] for i in picked],
                                                 max_length, device)).mean()
                loss = cross_entropy - entropy_weight * entropy
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                history.append({"step": len(history) + 1, "cross_entropy": cross_entropy.item(),
                                "reduced_entropy": entropy.item(), "loss": loss.item()})
                bar.set_postfix(ce=f"{cross_entropy.item():.3f}", H=f"{entropy.item():.3f}")
                bar.update()
    model.eval()
    return pd.DataFrame(history)


# -- saving (safetensors only) -----------------------------------------------------------------
def save_finetuned(model: nn.Module, tokenizer: Any, info: dict[str, Any],
                   folder: str | Path) -> Path:
    """Write ``model``, ``tokenizer`` and ``info.json`` to ``folder`` atomically. An HF model
    goes through ``save_pretrained`` (safetensors); any other module saves its state dict to
    ``model.safetensors`` without frozen parameters (e.g. GloVe vectors), which
    :func:`load_finetuned` takes from the skeleton it is given."""
    folder = Path(folder)
    if isinstance(model, PreTrainedModel):
        save_to_cache(model, tokenizer, info, folder)
        return folder
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    weights = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()
               if name not in frozen}
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-build-"))
    building.chmod(0o755)
    try:
        save_file(weights, str(building / WEIGHTS_FILENAME))
        tokenizer.save_pretrained(building)
        info = {**info, "frozen_parameters": sorted(frozen)}
        (building / INFO_FILENAME).write_text(json.dumps(info, indent=2) + "\n")
        install_dir(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder


def load_finetuned(folder: str | Path, model: nn.Module | None = None,
                   device: torch.device | str | None = None) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)`` saved by :func:`save_finetuned`, in eval mode. Without ``model``
    the folder must hold an HF classifier; with it, the saved weights are loaded into that
    skeleton (same architecture; frozen parameters not in the file keep the skeleton's
    values)."""
    folder = Path(folder)
    read_info(folder, "save_finetuned")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if model is None:
        model = AutoModelForSequenceClassification.from_pretrained(folder)
    else:
        weights = load_file(str(folder / WEIGHTS_FILENAME))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        if unexpected or set(missing) - frozen:
            raise ValueError(f"{folder} does not fit this model: missing "
                             f"{sorted(set(missing) - frozen)}, unexpected {sorted(unexpected)}")
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    return model.eval(), tokenizer


# -- the cached default model ------------------------------------------------------------------
@dataclass(frozen=True)
class EntropySettings:
    """How :func:`load_entropy_model` fine-tunes the default model. The training examples are
    a seeded sample of ``n_originals`` Rotten Tomatoes training snippets; the first
    ``n_reduced`` of them are reduced (gradient importance, beam ``beam_size``)."""

    n_originals: int = 800
    n_reduced: int = 300
    beam_size: int = 3
    entropy_weight: float = 1.0
    epochs: int = 1
    batch_size: int = 16
    lr: float = 5e-5
    max_length: int = DEFAULT_MAX_LENGTH
    seed: int = 0
    # > 0: the entropy term also sees the states of each training reduction's path that keep
    # at most this many words (path_reduced_texts), not only the final reductions
    path_words: int = 0
    # > 1: after each round of fine-tuning, the same training snippets are reduced again on the
    # fine-tuned model and it is fine-tuned once more on every round's reductions (Feng et al.
    # reduce once, with the model before fine-tuning)
    rounds: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")

    def key(self, *fields: str) -> str:
        chosen = {name: value for name, value in asdict(self).items()
                  if (not fields or name in fields)
                  and not (name in _ADDED_LATER and value == _ADDED_LATER[name])}
        return hashlib.sha1(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:10]


# Settings added after models were cached: left out of the key at these values, so that the
# settings of those models keep their folder names (550f36cc61 for the defaults).
_ADDED_LATER = {"path_words": 0, "rounds": 1}


def entropy_model_dir(settings: EntropySettings = EntropySettings()) -> Path:
    return cache_dir() / "models" / f"{DEFAULT_MODEL_DIRNAME}-entropy-{settings.key()}"


def _training_sample(settings: EntropySettings) -> pd.DataFrame:
    train = load_rotten_tomatoes("train")
    return train.sample(n=min(settings.n_originals, len(train)), random_state=settings.seed)


def reduced_training_texts(settings: EntropySettings = EntropySettings(), *,
                           rebuild: bool = False, show_progress: bool = True) -> pd.DataFrame:
    """The reduced training snippets (one row each: ``id``, ``text``, ``reduced_text``,
    ``removal_path``, ``label`` predicted, ``confidence``, ``original_confidence``), reduced on
    the default model and cached by the settings they depend on (sample, beam, length). A cache
    written before ``removal_path`` was kept is reduced again when ``path_words`` needs it."""
    key = settings.key("n_originals", "n_reduced", "beam_size", "max_length", "seed")
    path = cache_dir() / "models" / f"{DEFAULT_MODEL_DIRNAME}-reduced-{key}.json"
    if path.is_file() and not rebuild:
        frame = pd.read_json(path, orient="records")
        if "removal_path" in frame or not settings.path_words:
            return frame
    model, tokenizer = load_default_model(show_progress=show_progress)
    return _reduce_and_cache(model, tokenizer, settings, path, show_progress)


def _reduce_and_cache(model: nn.Module, tokenizer: Any, settings: EntropySettings, path: Path,
                      show_progress: bool) -> pd.DataFrame:
    """Reduces the first ``n_reduced`` training snippets on ``model`` and writes them to
    ``path`` (see :func:`reduced_training_texts`)."""
    sample = _training_sample(settings).head(settings.n_reduced)
    started = time.perf_counter()
    results = reduce_texts(model, tokenizer, sample["text"].tolist(),
                           beam_size=settings.beam_size, max_length=settings.max_length,
                           show_progress=show_progress)
    frame = pd.DataFrame({
        "id": sample["id"].tolist(), "text": [r.text for r in results],
        "reduced_text": [r.reduced_text for r in results],
        "removal_path": [list(r.removal_path) for r in results],
        "label": [r.label for r in results],
        "confidence": [r.confidence for r in results],
        "original_confidence": [r.original_confidence for r in results],
        "seconds_per_text": (time.perf_counter() - started) / max(1, len(results))})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    frame.to_json(partial, orient="records", indent=1)
    partial.replace(path)
    return frame


def _reduced_again(model: nn.Module, tokenizer: Any, settings: EntropySettings, round_: int,
                   show_progress: bool) -> pd.DataFrame:
    """Round ``round_``'s reductions: the training snippets reduced on the model fine-tuned
    for ``round_ - 1`` rounds (cached by those settings)."""
    before = replace(settings, rounds=round_ - 1)
    path = cache_dir() / "models" / (f"{DEFAULT_MODEL_DIRNAME}-reduced-{before.key()}"
                                     f"-round{round_}.json")
    if path.is_file():
        return pd.read_json(path, orient="records")
    return _reduce_and_cache(model, tokenizer, settings, path, show_progress)


def _entropy_texts(model: nn.Module, tokenizer: Any, reduced: pd.DataFrame,
                   settings: EntropySettings) -> list[str]:
    """The texts the entropy term sees: the final reductions, or their path states."""
    if not settings.path_words:
        return reduced["reduced_text"].tolist()
    return path_reduced_texts(model, tokenizer, reduced["text"].tolist(),
                              reduced["removal_path"].tolist(), settings.path_words,
                              max_length=settings.max_length)


def build_entropy_model(settings: EntropySettings = EntropySettings(), *,
                        show_progress: bool = True) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Fine-tune the default model with :func:`entropy_fine_tune` and cache it in
    :func:`entropy_model_dir`; returns ``(model, tokenizer, info)``."""
    reduced = reduced_training_texts(settings, show_progress=show_progress)
    model, tokenizer = load_default_model(show_progress=show_progress)
    sample = _training_sample(settings)
    reduced_texts = _entropy_texts(model, tokenizer, reduced, settings)
    started = time.perf_counter()
    histories = []
    for round_ in range(1, settings.rounds + 1):
        if round_ > 1:  # reduce again on the model as fine-tuned so far
            again = _reduced_again(model, tokenizer, settings, round_, show_progress)
            reduced_texts = reduced_texts + _entropy_texts(model, tokenizer, again, settings)
        history = entropy_fine_tune(
            model, tokenizer, sample["text"].tolist(), sample["label"].tolist(),
            reduced_texts, entropy_weight=settings.entropy_weight,
            epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
            max_length=settings.max_length, seed=settings.seed + round_ - 1,
            show_progress=show_progress)
        histories.append(history.assign(round=round_))
    history = pd.concat(histories, ignore_index=True)
    seconds = time.perf_counter() - started
    dev = load_rotten_tomatoes("dev")
    info = {"base": f"{DEFAULT_MODEL_DIRNAME} (load_default_model)",
            "method": "Feng et al. 2018: CE on originals - weight * entropy on reduced inputs",
            "settings": asdict(settings), "n_reduced_snippets": len(reduced),
            "n_reduced_texts": len(reduced_texts),
            "dev_accuracy": round(evaluate_accuracy(model, tokenizer, dev["text"].tolist(),
                                                    dev["label"].tolist()), 4),
            "first_steps": history.head(3).round(4).to_dict(orient="records"),
            "last_steps": history.tail(3).round(4).to_dict(orient="records"),
            "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
            "versions": package_versions()}
    folder = entropy_model_dir(settings)
    save_finetuned(model, tokenizer, info, folder)
    history.to_csv(folder / "history.csv", index=False)
    return model, tokenizer, info


def load_entropy_model(settings: EntropySettings = EntropySettings(), *, rebuild: bool = False,
                       device: torch.device | str | None = None,
                       show_progress: bool = True) -> tuple[nn.Module, Any]:
    """The default model after entropy fine-tuning with ``settings``, built on first use (the
    reduction of the training snippets dominates: about 2 s per snippet at beam 3 on a
    single CPU thread)."""
    folder = entropy_model_dir(settings)
    if rebuild or not (folder / INFO_FILENAME).is_file():
        print(f"captum-erasure: entropy fine-tuning the default model once into {folder}",
              file=sys.stderr)
        build_entropy_model(settings, show_progress=show_progress)
    return load_finetuned(folder, device=device)
