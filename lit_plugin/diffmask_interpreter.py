"""DiffMask (De Cao et al. 2020) as a LIT Salience Maps row.

DiffMask must be fitted on a dataset before it explains anything: the launcher fits it once in
the background (progress bar on the console) or loads the probe cached by an earlier launch;
the row answers with an error that says so until the fit is done. A word's value is its keep
probability (the largest over its word pieces): 1 = the model needs it, 0 = it can go.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lit_nlp.api import types as lit_types

from captum_erasure import DiffMask
from captum_erasure._core.text import encode_words, word_scores
from lit_plugin.interpreters import WordSalienceInterpreter

DEFAULT_STEPS = 300
DEFAULT_CACHE = Path("outputs") / "diffmask" / "lit_probes"


def diffmask_name(layer: int | None) -> str:
    where = "last layer" if layer is None else f"layer {layer}"
    return f"DiffMask (De Cao et al. 2020, input, {where}; keep probability)"


def fitted_diffmask(model: Any, tokenizer: Any, texts: Sequence[str], *, layer: int | None = None,
                    steps: int = DEFAULT_STEPS, cache_dir: str | Path | None = DEFAULT_CACHE,
                    seed: int = 0, show_progress: bool = True) -> DiffMask:
    """An input-mode DiffMask at ``layer`` (default: the last) of ``model``, loaded from
    ``cache_dir`` or fitted on ``texts`` (``steps`` batches of 16) and cached there."""
    if layer is None:
        layer = model.config.num_hidden_layers
    method = DiffMask(model, layer=layer, mode="input", mask_token_id=tokenizer.mask_token_id)
    path = None
    if cache_dir is not None:
        tag = Path(str(getattr(model.config, "_name_or_path", "") or "model")).name
        key = probe_key(model, texts, steps=steps, seed=seed)
        path = Path(cache_dir) / f"{tag}_layer{layer}_input_{steps}steps_seed{seed}_{key}.pt"
        if path.is_file():
            return method.load(path)
    method.fit(texts=list(texts), tokenizer=tokenizer, batch_size=16, max_steps=steps,
               seed=seed, show_progress=show_progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        method.save(path)
    return method


def probe_key(model: Any, texts: Sequence[str], **settings: Any) -> str:
    """A digest of the model's config and weights, the fit texts and settings: a probe cached
    for a model once saved in the same folder (or for other texts) is never reused."""
    digest = hashlib.sha256()
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    digest.update("\n".join(texts).encode())
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()[:16]


class DiffMaskInterpreter(WordSalienceInterpreter):
    """Keep probability of each word under a fitted DiffMask (one forward per text).

    ``source``: a fitted :class:`DiffMask`, or a zero-argument callable returning one (e.g. a
    :class:`lit_plugin.interpreters.BackgroundLoader` that is fitting it)."""

    def __init__(self, source: DiffMask | Callable[[], DiffMask], layer: int | None = None,
                 autorun: bool = False, show_progress: bool = False):
        super().__init__(autorun=autorun, show_progress=show_progress)
        self.source = source
        self.name = diffmask_name(layer)

    def meta_spec(self) -> lit_types.Spec:
        return {"saliency": lit_types.TokenSalience(autorun=self.autorun, signed=False)}

    def explain(self, model, tokenizer, texts, target, config):
        method = self.source if isinstance(self.source, DiffMask) else self.source()
        if method.forward_func is not model:
            raise ValueError("this DiffMask was fitted for another model")
        units = self.units_of(config)
        encoding, mask = encode_words(model, tokenizer, texts, units)
        attributions = method.attribute(
            encoding["input_ids"], additional_forward_args=(encoding["attention_mask"],),
            feature_mask=mask, show_progress=self.show_progress)
        return word_scores(encoding, mask, attributions, texts, units)
