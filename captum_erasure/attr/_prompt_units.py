"""A prompt's erasable units (words, tokens, sentences or given segments) and its variants
with one unit deleted or replaced."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

UNIT_KINDS = ("words", "tokens", "sentences", "segments")
_SENTENCE = re.compile(r"\S.*?(?:[.!?]+(?=\s|$)|$)", re.S)


@dataclass
class Prompt:
    """A tokenized prompt: ``ids``, the unit of each token (-1: special, never erased) and
    the units' texts."""

    text: str
    ids: list[int]
    unit_of: list[int]
    units: list[str]

    def positions(self, unit: int) -> list[int]:
        return [i for i, u in enumerate(self.unit_of) if u == unit]


def _char_spans(kind: str, text: str, segments: Sequence[str] | None) -> list[tuple[int, int]]:
    if kind == "sentences":
        return [m.span() for m in _SENTENCE.finditer(text)]
    spans, start = [], 0
    for segment in segments or ():
        spans.append((start, start + len(segment)))
        start += len(segment)
    return spans


def encode_prompt(tokenizer: Any, prompt: str | Sequence[str], kind: str) -> Prompt:
    """Tokenize ``prompt`` (with the tokenizer's special tokens, as Captum's LLMAttribution
    does) and assign every token to a unit. ``kind="segments"`` takes a list of strings whose
    concatenation is the prompt, one unit each."""
    if kind not in UNIT_KINDS:
        raise ValueError(f"units must be one of {UNIT_KINDS}, got {kind!r}")
    segments = None
    if kind == "segments":
        if isinstance(prompt, str) or not all(isinstance(s, str) for s in prompt):
            raise TypeError("units='segments' takes each prompt as a list of strings")
        segments = list(prompt)
        prompt = "".join(segments)
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("the prompt is empty or whitespace-only; nothing to erase")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer; units need "
                         "its offsets (load it with use_fast=True)")
    enc = tokenizer(prompt, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    special = list(enc["special_tokens_mask"])
    offsets = list(enc["offset_mapping"])
    unit_of = [-1] * len(ids)
    if kind == "words":
        words = enc.word_ids()
        for i, word in enumerate(words):
            if word is not None and not special[i]:
                unit_of[i] = word
    elif kind == "tokens":
        count = 0
        for i in range(len(ids)):
            if not special[i]:
                unit_of[i], count = count, count + 1
    else:
        spans = _char_spans(kind, prompt, segments)
        for i, (a, b) in enumerate(offsets):
            if special[i]:
                continue
            hit = [u for u, (s, e) in enumerate(spans) if a < e and s < max(b, a + 1)]
            if hit:
                unit_of[i] = hit[0]
        # tokens of whitespace only (between units) go with the next unit, else the previous
        for i in range(len(ids)):
            if unit_of[i] < 0 and not special[i]:
                after = [u for u in unit_of[i:] if u >= 0]
                before = [u for u in unit_of[:i] if u >= 0]
                unit_of[i] = after[0] if after else before[-1] if before else 0
    # number the units 0..n-1 in order of appearance; their text from the offsets
    order: dict[int, int] = {}
    for u in unit_of:
        if u >= 0:
            order.setdefault(u, len(order))
    unit_of = [order[u] if u >= 0 else -1 for u in unit_of]
    texts = []
    for unit in range(len(order)):
        pos = [i for i, u in enumerate(unit_of) if u == unit]
        texts.append(prompt[offsets[pos[0]][0]:offsets[pos[-1]][1]].strip()
                     or tokenizer.decode([ids[p] for p in pos]))
    if not texts:
        raise ValueError(f"the prompt {prompt!r} has no tokens to erase")
    return Prompt(prompt, ids, unit_of, texts)


def variant(prompt: Prompt, unit: int, mode: str, baseline: int | None,
            empty_fill: int | None) -> tuple[list[int], int]:
    """The prompt's tokens with ``unit`` erased, and the first position that changed.

    ``mode="delete"`` removes the unit's tokens (the ones after it move to new positions);
    ``"replace"`` puts ``baseline`` in place of each. A deletion that leaves no token is given
    ``empty_fill`` (the BOS token) as its only context."""
    pos = prompt.positions(unit)
    first = pos[0]
    if mode == "replace":
        ids = list(prompt.ids)
        for p in pos:
            ids[p] = baseline
        return ids, first
    gone = set(pos)
    ids = [t for i, t in enumerate(prompt.ids) if i not in gone]
    if not ids:
        if empty_fill is None:
            raise ValueError(
                "deleting the prompt's only unit leaves no context and the tokenizer has no "
                "BOS token to stand in for it; use mode='replace' or a longer prompt")
        return [empty_fill], 0
    return ids, first
