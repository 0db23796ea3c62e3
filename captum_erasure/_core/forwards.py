"""How every method calls a model, and which pad id it pads with: the one place for both.

Captum calls a forward as ``forward_func(inputs, *additional_forward_args)``. That is right
for plain callables, but a Hugging Face model's positional order is its own: GPT-2's second
parameter is ``past_key_values``, not ``attention_mask``. So a module whose ``forward`` names
``input_ids`` and ``attention_mask`` (every HF text model) is called with keywords:
``input_ids=``, ``attention_mask=``, and further arguments by the names that follow
``attention_mask`` in its signature (``token_type_ids`` for BERT and GPT-2: the same as a
positional call wherever the signature starts ``(input_ids, attention_mask, ...)``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import Tensor, nn

from captum_erasure._core.inputs import check_positive_int

KEYWORD_NAMES = ("input_ids", "attention_mask")


def module_behind(forward_func: Any) -> nn.Module | None:
    """The module a forward belongs to: itself, or the owner of a bound method."""
    if isinstance(forward_func, nn.Module):
        return forward_func
    owner = getattr(forward_func, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def _signature(function: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):  # builtins and some C callables state none
        return None


def _described(args: tuple) -> str:
    def one(value: Any) -> str:
        if isinstance(value, Tensor):
            return f"{str(value.dtype).replace('torch.', '')} tensor {tuple(value.shape)}"
        return type(value).__name__
    return ", ".join(one(a) for a in args) or "nothing"


class PlainForward:
    """Captum's convention, unchanged: ``forward_func(*args)``; arguments that its signature
    cannot take are a TypeError naming both (not one from deep inside the call)."""

    def __init__(self, forward_func: Callable) -> None:
        self.forward_func = forward_func
        module = module_behind(forward_func)
        function = module.forward if forward_func is module else forward_func
        self.signature = _signature(function)
        self.name = getattr(function, "__qualname__", type(forward_func).__name__)

    def __call__(self, *args: Any) -> Any:
        if self.signature is not None:
            try:
                self.signature.bind(*args)
            except TypeError as error:
                raise TypeError(
                    f"forward_func {self.name}{self.signature} cannot take the arguments it was "
                    f"given ({_described(args)}): {error}; the forward is called as "
                    "forward_func(inputs, *additional_forward_args)") from None
        return self.forward_func(*args)


class KeywordForward:
    """A Hugging Face-style model called with keywords: ``(ids, mask, *rest)`` becomes
    ``model(input_ids=ids, attention_mask=mask, <next parameters>=rest)``."""

    def __init__(self, forward_func: Callable, signature: inspect.Signature) -> None:
        self.forward_func = forward_func
        self.signature = signature
        names = [name for name, p in signature.parameters.items()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self.names = list(KEYWORD_NAMES) + names[names.index("attention_mask") + 1:]

    def __call__(self, *args: Any) -> Any:
        if len(args) > len(self.names):
            raise TypeError(
                f"{type(module_behind(self.forward_func)).__name__}.forward{self.signature} is "
                f"called with keywords {self.names}, but got {len(args)} arguments "
                f"({_described(args)})")
        return self.forward_func(**dict(zip(self.names, args)))


def keyword_signature(forward_func: Callable) -> inspect.Signature | None:
    """The forward's signature when the model is called with keywords: a module (or its bound
    ``forward``) whose ``forward`` names ``input_ids`` and ``attention_mask``."""
    module = module_behind(forward_func)
    if module is None or (forward_func is not module and
                          getattr(forward_func, "__name__", None) != "forward"):
        return None
    signature = _signature(module.forward)
    named = {} if signature is None else {
        name for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return signature if all(name in named for name in KEYWORD_NAMES) else None


def model_caller(forward_func: Callable) -> Callable:
    """The one way every method calls a model with ``(inputs, *additional_forward_args)``:
    by keywords for Hugging Face-style models, positionally (Captum's way) otherwise."""
    if isinstance(forward_func, (PlainForward, KeywordForward)):
        return forward_func
    signature = keyword_signature(forward_func)
    if signature is not None:
        return KeywordForward(forward_func, signature)
    return PlainForward(forward_func)


# -- pad ids ------------------------------------------------------------------------------------
def pad_token_id_of(model_or_forward: Any, tokenizer: Any = None,
                    pad_token_id: int | None = None) -> int | None:
    """The pad id to fill with: ``pad_token_id`` when given, else the model's
    ``config.pad_token_id`` (what a decoder classifier such as GPT-2 looks for to find its
    last real token), else the tokenizer's; ``None`` when none of them states one."""
    if pad_token_id is not None:
        return check_positive_int("pad_token_id", pad_token_id, minimum=0)
    config = getattr(module_behind(model_or_forward), "config", None)
    for candidate in (getattr(config, "pad_token_id", None),
                      getattr(tokenizer, "pad_token_id", None)):
        if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate >= 0:
            return candidate
    return None


def require_pad_token_id(model_or_forward: Any, tokenizer: Any = None,
                         pad_token_id: int | None = None, *, needed_for: str) -> int:
    """:func:`pad_token_id_of`, or a ValueError asking for ``pad_token_id=`` when a mode needs
    a pad id (``needed_for`` says which) and neither the model nor a tokenizer has one."""
    found = pad_token_id_of(model_or_forward, tokenizer, pad_token_id)
    if found is None:
        raise ValueError(
            f"{needed_for} needs a pad token id, but the model's config has no pad_token_id"
            f"{'' if tokenizer is None else ' and neither has the tokenizer'}; pass "
            "pad_token_id= (for GPT-2-style models also set model.config.pad_token_id, which "
            "the model uses to find the last token)")
    return found
