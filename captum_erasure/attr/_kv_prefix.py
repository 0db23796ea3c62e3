"""Prefix key/value reuse for causal LMs: the rows, the collate and the forward that
:class:`~captum_erasure.attr.generation.ContinuationErasure` hands to the engine.

A row is one token sequence (a prompt variant followed by a continuation) of which only the
part from ``start`` on is computed; positions ``0..start-1`` are the unperturbed prompt's, so
their keys and values are taken from the prompt's cache (computed once per example by the
unperturbed row). Rows of different examples and different ``start`` are packed into one
forward: the cached prefixes are gathered into one ``(rows, heads, K, dim)`` block per layer
(``K`` = the longest prefix of the chunk; the columns past a row's own prefix are masked out),
the suffixes are right-padded after it, and each suffix token gets its true position id (a
deleted word shifts the tokens after it to new positions: absolute and rotary embeddings both
read ``position_ids``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from captum_erasure._core.engine import Row


@dataclass(frozen=True)
class Suffix:
    """What a row computes (the ``data`` of an engine :class:`Row`).

    ``tokens``: the row's tokens from ``start`` on (prompt variant tail, then the
    continuation without its last token, which predicts nothing we score); ``start``: first
    position computed, positions before it come from the cache; ``first_prediction``: index in
    ``tokens`` whose output predicts the continuation's first token; ``targets``: the
    continuation; ``cont``: 0 for the target, 1 for the foil; ``capture``: store this row's
    prompt keys/values (the unperturbed target row of an example, ``prompt_length`` tokens).
    """

    tokens: tuple[int, ...]
    start: int
    first_prediction: int
    targets: tuple[int, ...]
    cont: int = 0
    capture: bool = False
    prompt_length: int = 0


def cache_argument(model: nn.Module) -> str:
    """Name of the forward's cache argument: ``cache`` (transformers 5) or
    ``past_key_values`` (4.x)."""
    names = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in names:
            return name
    raise TypeError(f"{type(model).__name__}.forward takes no key/value cache argument; "
                    "prefix reuse needs a transformers causal LM (pass reuse_prefix=False)")


def _cache_of(output: Any) -> Any:
    for name in ("cache", "past_key_values"):
        cache = getattr(output, name, None)
        if cache is not None:
            return cache
    raise TypeError("the model returned no key/value cache (use_cache=True was ignored)")


def _layers(cache: Any) -> list[tuple[Tensor, Tensor]]:
    """``(keys, values)`` per layer of a transformers cache, each ``(batch, heads, seq, dim)``."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v, *_ in cache]  # older DynamicCache iterates over (k, v) pairs


class PrefixStore:
    """The unperturbed prompts' keys and values of a group of examples, on the model's device:
    per layer one ``(examples, heads, longest prompt, dim)`` tensor of keys and one of values."""

    def __init__(self, n_examples: int) -> None:
        self.n_examples = n_examples
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.lengths = [0] * n_examples

    def put(self, example: int, layers: list[tuple[Tensor, Tensor]], row: int,
            length: int, longest: int) -> None:
        if not self.keys:
            for k, v in layers:
                shape = (self.n_examples, k.shape[1], longest, k.shape[3])
                self.keys.append(k.new_zeros(shape))
                self.values.append(v.new_zeros((self.n_examples, v.shape[1], longest,
                                                v.shape[3])))
        for (k, v), keys, values in zip(layers, self.keys, self.values):
            keys[example, :, :length] = k[row, :, :length]
            values[example, :, :length] = v[row, :, :length]
        self.lengths[example] = length

    def gather(self, examples: Tensor, width: int) -> DynamicCache:
        """A batch cache of the first ``width`` positions of each row's example."""
        index = examples.to(self.keys[0].device)
        return DynamicCache(ddp_cache_data=[
            (k.index_select(0, index)[:, :, :width], v.index_select(0, index)[:, :, :width])
            for k, v in zip(self.keys, self.values)])


@dataclass
class TokenCounter:
    """Token positions the model computed (``padded``: rows x longest suffix, as run; ``real``:
    without padding) and prompt positions taken from the cache instead (``reused``)."""

    padded: int = 0
    real: int = 0
    reused: int = 0


def collate_suffixes(rows: Sequence[Row], pad_id: int, max_position: int | None) -> tuple:
    """Forward arguments of a chunk of rows (right-padded suffixes after the cached block)."""
    suffixes: list[Suffix] = [r.data for r in rows]
    n = len(rows)
    width = max(len(s.tokens) for s in suffixes)
    prefix = max(s.start for s in suffixes)
    n_targets = max(len(s.targets) for s in suffixes)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    attention = torch.zeros((n, prefix + width), dtype=torch.long)
    keep = torch.zeros((n, n_targets), dtype=torch.long)
    targets = torch.zeros((n, n_targets), dtype=torch.long)
    n_valid = torch.zeros(n, dtype=torch.long)
    for i, s in enumerate(suffixes):
        length = len(s.tokens)
        ids[i, :length] = torch.tensor(s.tokens)
        positions[i] = s.start + torch.arange(width)
        attention[i, :s.start] = 1
        attention[i, prefix:prefix + length] = 1
        keep[i] = (s.first_prediction + torch.arange(n_targets)).clamp_max(width - 1)
        targets[i, :len(s.targets)] = torch.tensor(s.targets)
        n_valid[i] = len(s.targets)
    if max_position is not None:
        positions.clamp_(max=max_position - 1)  # only padding can reach past the context
    examples = torch.tensor([r.example for r in rows])
    return (ids, positions, attention, keep, targets, n_valid, examples,
            [(r.example, s) for r, s in zip(rows, suffixes)])


class SuffixForward:
    """The engine's forward: runs a chunk from the cached prefixes and returns, per row,
    ``[sum, lp_1, ..., lp_T]`` (log-probabilities of the continuation's tokens, 0-padded)."""

    def __init__(self, model: nn.Module, store: PrefixStore | None, counter: TokenCounter,
                 longest_prompt: int, longest_continuation: int) -> None:
        self.model = model
        self.longest_continuation = longest_continuation  # every chunk's output is this wide
        self.store = store
        self.counter = counter
        self.longest_prompt = longest_prompt
        params = inspect.signature(model.forward).parameters
        self.cache_name = cache_argument(model) if store is not None else None
        self.slices_logits = "logits_to_keep" in params

    def __call__(self, ids: Tensor, positions: Tensor, attention: Tensor, keep: Tensor,
                 targets: Tensor, n_valid: Tensor, examples: Tensor, meta: list) -> Tensor:
        prefix = attention.shape[1] - ids.shape[1]
        capture = self.store is not None and any(s.capture for _, s in meta)
        kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=attention,
                                      position_ids=positions, use_cache=capture or prefix > 0)
        if prefix > 0:
            kwargs[self.cache_name] = self.store.gather(examples, prefix)
        if self.slices_logits:
            kwargs["logits_to_keep"] = keep
        output = self.model(**kwargs)
        logits = output.logits if hasattr(output, "logits") else output[0]
        if not self.slices_logits:
            logits = torch.take_along_dim(logits, keep[..., None], dim=1)
        log_probs = torch.log_softmax(logits.float() if logits.dtype in (
            torch.float16, torch.bfloat16) else logits, dim=-1)
        picked = log_probs.gather(-1, targets[..., None])[..., 0]
        valid = torch.arange(picked.shape[1], device=picked.device)[None] < n_valid[:, None]
        picked = picked.masked_fill(~valid, 0)
        picked = nn.functional.pad(picked, (0, self.longest_continuation - picked.shape[1]))
        if capture:
            if prefix:
                raise RuntimeError("an unperturbed (capturing) row was packed with cached rows")
            layers = _layers(_cache_of(output))
            for row, (example, s) in enumerate(meta):
                if s.capture:
                    self.store.put(example, layers, row, s.prompt_length, self.longest_prompt)
        self.counter.padded += ids.numel()
        self.counter.real += sum(len(s.tokens) for _, s in meta)
        self.counter.reused += sum(s.start for _, s in meta)
        return torch.cat([picked.sum(1, keepdim=True), picked], dim=1)


@torch.inference_mode()
def greedy_continuation(model: nn.Module, prompt: list[int], max_new_tokens: int,
                        eos_id: int | None) -> list[int]:
    """The model's greedy continuation of ``prompt`` (stops after EOS), with a cache."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    name = cache_argument(model)
    cache, out_tokens = None, []
    position = 0
    for _ in range(max_new_tokens):
        kwargs = {"input_ids": ids, "use_cache": True,
                  "position_ids": position + torch.arange(ids.shape[1], device=device)[None]}
        if cache is not None:
            kwargs[name] = cache
        output = model(**kwargs)
        cache = _cache_of(output)
        position += ids.shape[1]
        token = int(output.logits[0, -1].argmax())
        out_tokens.append(token)
        if token == eos_id:
            break
        ids = torch.tensor([[token]], device=device)
    return out_tokens
