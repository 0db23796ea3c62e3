"""One options object for how every method runs its forwards (output kind and batching).

Every method takes the same keywords (``output, batch_size, max_tokens, device, autocast``) or
one :class:`EngineOptions` as ``options=``; they are checked here once, for all of them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from captum_erasure._core.engine import PerturbationEngine, engine_for_call
from captum_erasure._core.inputs import check_positive_int
from captum_erasure._core.scores import OUTPUT_KINDS
from captum_erasure._core.text import resolve_label_names

ENGINE_OPTION_NAMES = ("output", "batch_size", "max_tokens", "device", "autocast")


@dataclass(frozen=True)
class EngineOptions:
    """How a method evaluates its perturbed inputs.

    Args:
        output: what the forward returns: ``"logits"`` (default), ``"probs"`` or
            ``"log_probs"``; the scores turn it into log-probabilities.
        batch_size: most rows per forward (default: 64 on a CPU; on CUDA a token budget).
        max_tokens: most padded tokens (rows x longest row) per forward.
        device: where the rows go (default: the model's device).
        autocast: CUDA autocast (``True`` = float16, or a dtype).
    """

    output: str = "logits"
    batch_size: int | None = None
    max_tokens: int | None = None
    device: torch.device | str | None = None
    autocast: bool | torch.dtype = False

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        for name in ("batch_size", "max_tokens"):
            value = check_positive_int(name, getattr(self, name), allow_none=True)
            object.__setattr__(self, name, value)
        if not isinstance(self.autocast, (bool, torch.dtype)):
            raise TypeError(f"autocast must be a bool or a torch.dtype, got {self.autocast!r}")
        if self.device is not None:
            torch.device(self.device)  # an unknown device name fails here, not mid-run

    @classmethod
    def resolve(cls, owner: str, options: EngineOptions | None,
                keywords: dict[str, Any]) -> EngineOptions:
        """``options`` updated by the keywords a constructor got; an unknown keyword is a
        TypeError naming ``owner`` (as Python's own would be)."""
        unknown = sorted(set(keywords) - set(ENGINE_OPTION_NAMES))
        if unknown:
            raise TypeError(f"{owner}() got unexpected keyword arguments {unknown}")
        if options is not None and not isinstance(options, EngineOptions):
            raise TypeError(f"options must be an EngineOptions, got {type(options).__name__}")
        return dataclasses.replace(options or cls(), **keywords)

    def engine(self, forward: Callable, model_forward: Callable, *, n_examples: int,
               perturbations_per_eval: int | None = None, show_progress: bool = False,
               one_row_per_example: bool = False,
               device: torch.device | str | None = None) -> PerturbationEngine:
        """The engine for one call (see :func:`~captum_erasure._core.engine.engine_for_call`)."""
        return engine_for_call(
            forward, model_forward, n_examples=n_examples,
            perturbations_per_eval=perturbations_per_eval, batch_size=self.batch_size,
            max_tokens=self.max_tokens, device=self.device if device is None else device,
            autocast=self.autocast, show_progress=show_progress,
            one_row_per_example=one_row_per_example)


def _option(name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self.options, name)

    def set_(self: Any, value: Any) -> None:
        self.options = dataclasses.replace(self.options, **{name: value})

    return property(get, set_, doc=f"``options.{name}`` (see :class:`EngineOptions`).")


class UsesEngine:
    """Mixin of every method: ``self.options`` plus one attribute per option, so
    ``method.batch_size = 16`` still works (and is checked)."""

    options: EngineOptions
    output = _option("output")
    batch_size = _option("batch_size")
    max_tokens = _option("max_tokens")
    device = _option("device")
    autocast = _option("autocast")


def attribute_call(method: Callable | None = None, *, label_targets: bool = True) -> Callable:
    """Decorator of a method's ``attribute``: the options of :class:`EngineOptions`
    (``output=``, ``batch_size=``, ...) are accepted per call and override the constructor's
    for that call only (checked the same way), and with ``label_targets`` a ``target`` given
    as label names (``"positive"``, or one per example) becomes class indices from the
    model's ``config.id2label`` before anything else sees it."""
    if method is None:
        return functools.partial(attribute_call, label_targets=label_targets)
    signature = inspect.signature(method)
    per_call = [name for name in ENGINE_OPTION_NAMES if name not in signature.parameters]

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        overrides = {name: kwargs.pop(name) for name in per_call if name in kwargs}
        if label_targets:
            bound = signature.bind_partial(self, *args, **kwargs)
            if isinstance(bound.arguments.get("target"), (str, list, tuple)):
                bound.arguments["target"] = resolve_label_names(bound.arguments["target"],
                                                                self.forward_func)
                args, kwargs = bound.args[1:], bound.kwargs
        if not overrides:
            return method(self, *args, **kwargs)
        saved = self.options
        self.options = dataclasses.replace(saved, **overrides)  # checked like the constructor's
        try:
            return method(self, *args, **kwargs)
        finally:
            self.options = saved

    return wrapper
