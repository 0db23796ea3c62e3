"""The one perturbation engine every method uses.

A method describes its perturbed inputs as a lazy stream of small row specs and a ``collate``
function that turns a list of specs into forward arguments. The engine owns everything else:
chunking under a budget (rows and/or padded tokens per forward), packing rows of *different*
examples into one forward, device placement, ``torch.inference_mode``, optional CUDA autocast,
halving the chunk on CUDA out-of-memory, NaN checks, forward-pass counting and the progress bar.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from captum_erasure._core.forwards import model_caller, module_behind
from captum_erasure._core.inputs import check_positive_int
from captum_erasure._core.scores import (
    check_outputs_fit_score,
    check_score,
    erasure_scores,
    resolve_targets,
)

Collate = Callable[[Sequence[Any]], tuple]

DEFAULT_BATCH_SIZE = 64
DEFAULT_SORT_WINDOW = 4096  # specs held at once for length sorting: laziness vs padding
# Without a budget, a GPU gets token-budgeted batches large enough to fill it (an OOM halves
# them); a CPU is already saturated by 64 rows.
DEFAULT_CUDA_MAX_TOKENS = 65536


def model_device(forward_func: Callable) -> torch.device:
    """Device of the module behind ``forward_func`` (a module or a bound method of one)."""
    owner = module_behind(forward_func)
    if owner is not None:
        for tensor in itertools.chain(owner.parameters(), owner.buffers()):
            return tensor.device
    return torch.device("cpu")


class OutputTypeError(TypeError):
    """The forward returned no tensor (a Python number, a Future, ...). Raised before any
    perturbed row runs, so a caller can hand the call to code that handles such forwards."""


class OutputShapeError(ValueError):
    """The forward's output is not one row of outputs per input row (e.g. one value for the
    whole batch), which the packed engine needs."""


def output_logits(output: Any) -> Tensor:
    """The score tensor of a forward output: a tensor, or an HF ``ModelOutput`` with ``logits``."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise OutputTypeError(
        f"forward_func returned {type(output).__name__}; expected a tensor of shape "
        "(rows, n_outputs) or a model output with a `logits` tensor")


def _kept_dtype(dtype: torch.dtype) -> torch.dtype:
    """Outputs keep their dtype (float64 stays float64, integers stay integers); only half
    precision is widened to float32, losslessly, so the scores are not computed in it."""
    if dtype.is_floating_point and torch.finfo(dtype).bits < 32:
        return torch.float32
    return dtype


def _to_device(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, Tensor) else value


@dataclass
class EngineStats:
    """What the engine spent: forward calls and rows evaluated."""

    forward_passes: int = 0
    rows: int = 0
    oom_retries: int = 0

    def __iadd__(self, other: "EngineStats") -> "EngineStats":
        """Adds another call's cost (every field: one merge for every method and metric)."""
        self.forward_passes += other.forward_passes
        self.rows += other.rows
        self.oom_retries += other.oom_retries
        return self


class PerturbationEngine:
    """Evaluates perturbed inputs in budgeted, packed batches.

    Args:
        forward_func: the model; called with ``collate(specs)`` through
            :func:`~captum_erasure._core.forwards.model_caller` (keywords for Hugging Face
            models, positionally otherwise).
        batch_size: most rows per forward (``None``: no row limit if ``max_tokens`` is set,
            else 64).
        max_tokens: most padded tokens (rows x longest row) per forward; needs specs with a
            ``length`` attribute.
        device: where inputs go; default: the device of the module behind ``forward_func``.
        autocast: run under ``torch.autocast`` (CUDA only; ``True`` means float16, or pass a dtype).
        show_progress: tqdm progress bar over rows.
        sort_window: specs are read this many at a time and sorted by ``length`` before
            chunking, so rows of similar length share a forward (0 or None: input order).
    """

    def __init__(self, forward_func: Callable, *, batch_size: int | None = None,
                 max_tokens: int | None = None, device: torch.device | str | None = None,
                 autocast: bool | torch.dtype = False, show_progress: bool = False,
                 sort_window: int | None = DEFAULT_SORT_WINDOW) -> None:
        batch_size = check_positive_int("batch_size", batch_size, allow_none=True)
        max_tokens = check_positive_int("max_tokens", max_tokens, allow_none=True)
        self.forward_func = forward_func
        self.batch_size = batch_size if batch_size or max_tokens else DEFAULT_BATCH_SIZE
        self.max_tokens = max_tokens
        self.device = torch.device(device) if device is not None else model_device(forward_func)
        self.autocast = autocast
        self.show_progress = show_progress
        self.sort_window = sort_window
        self.stats = EngineStats()
        # dtype of the forward's outputs (under autocast: of what the engine returns), known
        # after the first forward; Captum's FeatureAblation gives its attributions this dtype.
        self.output_dtype: torch.dtype | None = None

    @property
    def forward_func(self) -> Callable:
        return self._forward_func

    @forward_func.setter
    def forward_func(self, forward_func: Callable) -> None:
        self._forward_func = forward_func
        self._call = model_caller(forward_func)

    # -- chunking ---------------------------------------------------------------------------
    def _windows(self, specs: Iterable[Any]) -> Iterator[list[tuple[int, Any]]]:
        """``(index, spec)`` pairs, in windows of ``sort_window`` specs sorted by length so that
        rows of similar length share a forward (little padding); lazy over ``specs``."""
        numbered = enumerate(specs)
        while True:
            window = list(itertools.islice(numbered, self.sort_window or 1))
            if not window:
                return
            if self.sort_window:
                window.sort(key=lambda pair: getattr(pair[1], "length", 1))
            yield window

    def _chunks(self, specs: Iterable[Any]) -> Iterator[list[tuple[int, Any]]]:
        """Greedy chunks under the row and token budgets."""
        chunk: list = []
        longest = 0
        for window in self._windows(specs):
            for pair in window:
                length = getattr(pair[1], "length", 1) if self.max_tokens else 1
                longer = max(longest, length)
                too_many_rows = self.batch_size is not None and len(chunk) >= self.batch_size
                too_many_tokens = self.max_tokens is not None and chunk and \
                    longer * (len(chunk) + 1) > self.max_tokens
                if chunk and (too_many_rows or too_many_tokens):
                    yield chunk
                    chunk, longer = [], length
                chunk.append(pair)
                longest = longer
        if chunk:
            yield chunk

    def _autocast_context(self) -> contextlib.AbstractContextManager:
        if not self._autocast_context_active():
            return contextlib.nullcontext()
        dtype = self.autocast if isinstance(self.autocast, torch.dtype) else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _autocast_context_active(self) -> bool:
        return bool(self.autocast) and self.device.type == "cuda"

    def _forward(self, specs: Sequence[Any], collate: Collate) -> Tensor:
        args = tuple(_to_device(a, self.device) for a in collate(specs))
        with torch.inference_mode(), self._autocast_context():
            out = output_logits(self._call(*args))
        self.stats.forward_passes += 1
        self.stats.rows += len(specs)
        if out.dim() == 0 or out.shape[0] != len(specs):
            raise OutputShapeError(
                f"forward_func returned shape {tuple(out.shape)} for {len(specs)} rows; it must "
                "return one row of outputs per input row (shape (rows, n_outputs))")
        out = out.detach().cpu()
        kept = _kept_dtype(out.dtype)
        if self.output_dtype is None:
            self.output_dtype = kept if self._autocast_context_active() else out.dtype
        out = out.to(kept)
        if not torch.isfinite(out).all():
            bad = (~torch.isfinite(out)).flatten(1).any(1).nonzero().flatten().tolist()
            raise FloatingPointError(
                f"model output contains NaN or infinite values in {len(bad)} of {len(specs)} "
                f"rows of a batch (first offending spec: {specs[bad[0]]!r}); check the model "
                "and the inputs (e.g. fully masked rows)")
        return out.reshape(len(specs), -1) if out.dim() == 1 else out

    def _forward_splitting_on_oom(self, specs: list, collate: Collate) -> Iterator[Tensor]:
        try:
            yield self._forward(specs, collate)
        except torch.cuda.OutOfMemoryError:
            if len(specs) == 1:
                raise
            torch.cuda.empty_cache()
            self.stats.oom_retries += 1
            half = len(specs) // 2
            # Later chunks use the smaller size too: the budget was too big for this device.
            self.batch_size = half
            if self.max_tokens:
                self.max_tokens = max(1, self.max_tokens // 2)
            yield from self._forward_splitting_on_oom(specs[:half], collate)
            yield from self._forward_splitting_on_oom(specs[half:], collate)

    # -- public -----------------------------------------------------------------------------
    def _iter_indexed(self, specs: Iterable[Any], collate: Collate, total: int | None,
                      desc: str) -> Iterator[tuple[list[int], list, Tensor]]:
        if total is None and hasattr(specs, "__len__"):
            total = len(specs)  # type: ignore[arg-type]
        bar = tqdm(total=total, desc=desc, unit="row", disable=not self.show_progress,
                   leave=False)
        try:
            for chunk in self._chunks(specs):
                indices = [i for i, _ in chunk]
                rows = [spec for _, spec in chunk]
                done = 0
                for out in self._forward_splitting_on_oom(rows, collate):
                    part = slice(done, done + out.shape[0])
                    done += out.shape[0]
                    bar.update(out.shape[0])
                    yield indices[part], rows[part], out
        finally:
            bar.close()

    def iter_outputs(self, specs: Iterable[Any], collate: Collate, *, total: int | None = None,
                     desc: str = "perturbations") -> Iterator[tuple[list, Tensor]]:
        """Yields ``(specs_chunk, outputs_chunk)``; outputs are on CPU in the forward's dtype
        (half precision widened to float32). With
        ``sort_window`` the chunks come in length order within each window, not input order."""
        for _, rows, out in self._iter_indexed(specs, collate, total, desc):
            yield rows, out

    def run(self, specs: Iterable[Any], collate: Collate, *, total: int | None = None,
            desc: str = "perturbations") -> Tensor:
        """All outputs in spec order: shape ``(n_specs, n_outputs)``."""
        parts = list(self._iter_indexed(specs, collate, total, desc))
        if not parts:
            return torch.empty(0, 0)
        order = torch.tensor([i for indices, _, _ in parts for i in indices])
        outs = torch.cat([out for _, _, out in parts])
        result = torch.empty_like(outs)
        result[order] = outs
        return result


def engine_for_call(forward: Callable, model_forward: Callable, *, n_examples: int,
                    perturbations_per_eval: int | None, batch_size: int | None,
                    max_tokens: int | None, device: torch.device | str | None,
                    autocast: bool | torch.dtype, show_progress: bool,
                    one_row_per_example: bool = False) -> PerturbationEngine:
    """The engine for one ``attribute`` call of a method built with these options.

    ``perturbations_per_eval`` keeps Captum's meaning when given (``ppe x n_examples`` rows per
    forward); ``one_row_per_example`` is Captum's ppe=1 default for forwards that may take a
    single row (e.g. ``LLMAttribution``'s) when no budget was set. With no budget at all, CUDA
    gets ``DEFAULT_CUDA_MAX_TOKENS`` padded tokens per forward and a CPU 64 rows.
    """
    if perturbations_per_eval is not None:
        ppe = check_positive_int("perturbations_per_eval", perturbations_per_eval)
        batch_size = ppe * n_examples
    elif one_row_per_example and batch_size is None and max_tokens is None:
        batch_size = n_examples
    device = torch.device(device) if device is not None else model_device(model_forward)
    if batch_size is None and max_tokens is None and device.type == "cuda":
        max_tokens = DEFAULT_CUDA_MAX_TOKENS
    return PerturbationEngine(forward, batch_size=batch_size, max_tokens=max_tokens,
                              device=device, autocast=autocast, show_progress=show_progress)


@dataclass(frozen=True)
class Row:
    """One forward row: example ``example`` with feature ``slot`` erased (``slot=-1``: none).

    ``length`` is the row's token count for the token budget; ``data`` is method-specific.
    """

    example: int
    slot: int = -1
    length: int = 1
    data: Any = None


@dataclass
class ErasureResult:
    """Per-example, per-slot scores plus what they were computed against."""

    # (n_examples, n_slots), or (n_examples, n_outputs, n_slots); float64, except an integer
    # model's "output_diff", which stays exact in int64
    scores: Tensor
    original_outputs: Tensor  # (n_examples, n_outputs)
    targets: Tensor | None    # (n_examples,)


def score_erasures(engine: PerturbationEngine, collate: Collate, originals: Sequence[Row],
                   erasures: Iterable[Row], *, n_slots: int, target: Any, score: str,
                   output_kind: str = "logits", total: int | None = None,
                   desc: str = "erasures", method: str | None = None) -> ErasureResult:
    """Runs the unperturbed rows, then streams the erased rows and scores each against its
    example's original output. Memory is O(examples x slots), never O(rows x outputs).

    The originals go first so that a bad target or NaN output fails before the expensive part;
    ``method`` names the caller in those errors.
    """
    check_score(score)
    original_outputs = engine.run(originals, collate, desc="originals")
    if original_outputs.dim() != 2:
        raise OutputShapeError(
            f"forward_func returned outputs of shape {tuple(original_outputs.shape)}; it must "
            "return (rows, n_outputs) or (rows,)")
    check_outputs_fit_score(original_outputs, score, output_kind, method)
    targets = None if (score == "output_diff" and target is None) else \
        resolve_targets(target, original_outputs)
    n_examples, n_outputs = original_outputs.shape
    shape = (n_examples, n_outputs, n_slots) if targets is None else (n_examples, n_slots)
    exact_ints = score == "output_diff" and not original_outputs.is_floating_point()
    scores = torch.zeros(shape, dtype=torch.int64 if exact_ints else torch.float64)
    for rows, outs in engine.iter_outputs(erasures, collate, total=total, desc=desc):
        examples = torch.tensor([r.example for r in rows])
        slots = torch.tensor([r.slot for r in rows])
        row_scores = erasure_scores(original_outputs[examples], outs,
                                    None if targets is None else targets[examples],
                                    score, output_kind)
        if targets is None:
            scores[examples, :, slots] = row_scores
        else:
            scores[examples, slots] = row_scores
    return ErasureResult(scores, original_outputs, targets)
