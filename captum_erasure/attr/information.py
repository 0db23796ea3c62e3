"""Guan et al. (ICML 2019): how much of each input word's information a layer keeps, as a
Captum attribution.

For a layer Phi and its state s = Phi(x), learn per word i the scale sigma_i of Gaussian noise
added to the word's embedding (x~_i = x_i + eps_i, eps_i ~ N(0, sigma_i^2 I)) so that the layer
barely moves while the noise is as large as possible:

    L(sigma) = E_eps ||Phi(x~) - s||^2 - lambda * sum_i H(X~_i | s)

A word the layer does not use can take a large noise (high entropy: its information is
discarded); a word it relies on keeps a small one. The attribution is the information *kept*,
H(X_i) - H(X~_i | s) per embedding dimension, with H(X_i) the entropy of a Gaussian of the
embedding matrix's spread (see :class:`WordInformation`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_erasure._core.engine import EngineStats
from captum_erasure._core.forwards import model_caller
from captum_erasure._core.hooks import (
    encoder_layers,
    first_tensor,
    input_embeddings,
    this_thread_only,
)
from captum_erasure._core.inputs import as_extra_args, attribute_inputs
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.text import eval_mode

POOLED = "pooled"
_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


@dataclass
class InformationResult:
    """What :meth:`WordInformation.attribute_details` learned for a batch."""

    # (n_examples, max_words) float64, NaN beyond each example's words: the attribution,
    # information kept per word, nats per embedding dimension (summed over the word's pieces)
    kept: Tensor
    entropy: Tensor       # (n_examples, max_words) H(X~_i | s) of the word's noisy embedding, nats
    word_sigma: Tensor    # (n_examples, max_words) learned noise scale per word
    sigma: Tensor         # (n_examples, seq_len) per token (0 for tokens that are not words)
    feature_ids: list     # per example: the renumbered feature id of each word, in order
    feature_mask: Tensor  # (n_examples, seq_len) renumbered 0..n-1, -1 for non-words
    distortion: Tensor    # (n_examples,) ||Phi(x~) - s||^2 / ||s||^2 at the last step
    loss_history: Tensor  # (n_examples, n_steps) each example's loss at every step
    reference_sigma: float  # sigma of H(X_i): the std of the embedding matrix
    layer: str            # which hidden state was explained
    stats: EngineStats = field(default_factory=EngineStats)  # forwards (each + a backward), rows


class _Reached(Exception):
    """Raised by the layer hook: the rest of the forward is not needed."""


class WordInformation(UsesEngine, PerturbationAttribution):
    """Information each input word keeps in a layer (Guan et al., ICML 2019), per word.

    ``layer`` chooses the hidden state s = Phi(x) being explained, with HF's
    ``hidden_states`` numbering: ``0`` the embedding output, ``1..L`` the output of encoder
    layer l, negative numbers from the end (``-1`` = the last layer); ``"pooled"`` the
    classifier's pooled representation (the pooler output, or else what ``model.classifier``
    reads); or any submodule (its output, the first tensor of a tuple). The forward stops as
    soon as the layer has run.

    Per example and word i (``feature_mask`` groups sub-word tokens into words; tokens with a
    negative id get no noise; without a mask every attended token is a word) the noise scale
    sigma_i = softplus(p_i), p_i initialised at ``init``, is learned by
    minimising, for each example b,

        L_b = E_eps[ ||Phi(x~) - s||^2 ] / ||s||^2  -  lam * mean_t log sigma_t

    (squares summed over the attended positions and dimensions; t runs over the example's word
    tokens; the word's pieces share its sigma). The first term is the relative distortion (the
    official code's normalisation by the mean of s^2), the second is the entropy of the noisy
    embeddings per dimension, up to constants, averaged over tokens. The batch loss is the
    *sum* of the L_b and every example draws its noise from its own generator (seeded from
    ``seed`` and its tokens), so an example's result does not depend on its batch companions.
    One Adam optimiser (``lr``) over all examples' parameters, ``n_steps`` steps,
    ``n_samples`` noise draws per step; the final state is kept.

    Attribution (``attribute``): the information *kept* by the layer, per word, in nats per
    embedding dimension: ``n_pieces * (log sigma_ref - log sigma_i)`` = (H(X_i) - H(X~_i|s)) / K,
    with H(X_i) the entropy of a Gaussian with the std sigma_ref of the embedding matrix (the
    spread of word vectors). Higher = more used by the layer; negative = a noise wider than
    the spread of word vectors still leaves the layer unmoved (the word is discarded).

    The hidden state does not depend on a class, so ``target`` is accepted (Captum's
    signature) and ignored; a one-output model is no special case. Engine options: examples are
    optimised in groups of ``batch_size`` (default: all at once; the result is the same);
    ``device`` and ``autocast`` as for every method; ``output`` is unused.
    """

    def __init__(self, forward_func: Callable, layer: int | str | nn.Module = -1, *,
                 lam: float = 0.1, n_steps: int = 100, lr: float = 0.1, init: float = -5.0,
                 n_samples: int = 1, seed: int = 0, embedding_layer: nn.Module | None = None,
                 reference_sigma: float | None = None, options: EngineOptions | None = None,
                 **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        if not isinstance(forward_func, nn.Module):
            raise TypeError("WordInformation needs the model itself (an nn.Module): it hooks "
                            "the model's layers")
        if lam < 0 or n_steps < 1 or n_samples < 1 or lr <= 0:
            raise ValueError("need lam >= 0, n_steps >= 1, n_samples >= 1 and lr > 0")
        self.lam, self.n_steps, self.lr, self.init = float(lam), int(n_steps), float(lr), init
        self.n_samples, self.seed = int(n_samples), int(seed)
        self.embedding = embedding_layer or input_embeddings(forward_func)
        if self.embedding is None:
            raise ValueError("cannot find the input embeddings: pass embedding_layer= (or use "
                             "a model with get_input_embeddings())")
        weight = getattr(self.embedding, "weight", None)
        dims = getattr(self.embedding, "embedding_dim", None) or (
            weight.shape[-1] if isinstance(weight, Tensor) else None)
        if dims is None:
            raise ValueError("cannot tell the embedding width; use an nn.Embedding")
        self._dims = int(dims)
        self.layer = layer
        self.layer_module, self.reads_input, self.layer_name = self._resolve_layer(layer)
        if reference_sigma is None:
            if not isinstance(weight, Tensor):
                raise ValueError("the embedding has no weight: pass reference_sigma=")
            reference_sigma = float(weight.detach().float().std())
        self.reference_sigma = float(reference_sigma)
        self.last_result: InformationResult | None = None
        self.last_stats: EngineStats | None = None

    def _resolve_layer(self, layer: Any) -> tuple[nn.Module, bool, str]:
        """The module whose output (or, for a classifier head, input) is s."""
        model = self.forward_func
        if isinstance(layer, nn.Module):
            return layer, False, type(layer).__name__
        base = getattr(model, "base_model", model)
        if layer == POOLED:
            pooler = getattr(base, "pooler", None)
            if isinstance(pooler, nn.Module):
                return pooler, False, "pooled"
            head = getattr(model, "classifier", None)
            if isinstance(head, nn.Module):
                return head, True, "pooled (classifier input)"
            raise ValueError(f"{type(model).__name__} has neither a pooler nor a classifier "
                             "head; pass the module to explain as layer=")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"layer must be an int, {POOLED!r} or an nn.Module, got {layer!r}")
        layers = encoder_layers(model)
        if layers is None:
            raise ValueError(f"cannot find the encoder layers of {type(model).__name__}; pass "
                             "the module to explain as layer=")
        n = len(layers)
        index = layer + n + 1 if layer < 0 else layer
        if not 0 <= index <= n:
            raise ValueError(f"layer {layer} does not exist: {type(model).__name__} has {n} "
                             f"encoder layers (layer in 0..{n}, -{n + 1}..-1, or {POOLED!r})")
        if index == 0:
            embeddings = getattr(base, "embeddings", None)
            if not isinstance(embeddings, nn.Module):
                raise ValueError("layer 0 needs model.base_model.embeddings")
            return embeddings, False, "layer 0 (embeddings)"
        return layers[index - 1], False, f"layer {index}"

    # -- Captum API -------------------------------------------------------------------------
    @log_usage(part_of_slo=True)
    @attribute_call
    def attribute(self, inputs: Tensor | tuple[Tensor], target: Any = None,
                  additional_forward_args: Any = None, feature_mask: Any = None,
                  show_progress: bool = False) -> Tensor | tuple[Tensor]:
        """Information kept per word, spread onto its tokens: float32 shaped like the token ids
        (0 for tokens that are not words); a 1-tuple when ``inputs`` is one."""
        result = self.attribute_details(inputs, target, additional_forward_args, feature_mask,
                                        show_progress)
        is_tuple = isinstance(inputs, tuple)
        ids = inputs[0] if is_tuple else inputs
        attr = _spread(result.kept, result.feature_mask).float().to(ids.device)
        return (attr,) if is_tuple else attr

    @attribute_call
    def attribute_future(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("WordInformation optimises with gradients; no futures")

    @attribute_call
    def attribute_details(self, inputs: Tensor | tuple[Tensor], target: Any = None,
                          additional_forward_args: Any = None, feature_mask: Any = None,
                          show_progress: bool = False) -> InformationResult:
        """Same arguments as :meth:`attribute`; the learned scales, entropies, losses and cost
        (also kept in ``last_result`` and ``last_stats``)."""
        del target  # the hidden state does not depend on a class
        _, ids, attention, mask = attribute_inputs(inputs, additional_forward_args,
                                                   feature_mask)
        extra = as_extra_args(additional_forward_args)
        n = ids.shape[0]
        chunk = self.options.batch_size or n
        n_words = [int(row.max()) + 1 if (row >= 0).any() else 0 for row in mask]
        width = max(n_words, default=0)
        history = torch.zeros(n, self.n_steps, dtype=torch.float64)
        word_sigma = torch.full((n, width), float("nan"), dtype=torch.float64)
        distortion = torch.zeros(n, dtype=torch.float64)
        stats = EngineStats()
        groups = [list(range(s, min(s + chunk, n))) for s in range(0, n, chunk)]
        bar = tqdm(total=self.n_steps * len(groups), disable=not show_progress, unit="step",
                   desc=f"{self.get_name()} ({self.layer_name})")
        with eval_mode(self.forward_func), bar:
            for rows in groups:
                index = torch.tensor(rows)
                sig, hist, dist = self._optimise(ids[index], attention[index], mask[index],
                                                 _pick(extra, index, n), stats, bar)
                for j, b in enumerate(rows):
                    word_sigma[b, :n_words[b]] = sig[j, :n_words[b]]
                history[index], distortion[index] = hist, dist
        pieces = torch.stack([torch.bincount(row[row >= 0], minlength=width)
                              for row in mask]).double() if width else word_sigma.clone()
        log_ratio = math.log(self.reference_sigma) - word_sigma.log()
        dims = self._dims
        self.last_result = InformationResult(
            kept=pieces * log_ratio,
            entropy=pieces * dims * (word_sigma.log() + _HALF_LOG_2PI_E),
            word_sigma=word_sigma, sigma=_spread(word_sigma, mask),
            feature_ids=[list(range(k)) for k in n_words], feature_mask=mask,
            distortion=distortion, loss_history=history,
            reference_sigma=self.reference_sigma, layer=self.layer_name, stats=stats)
        self.last_stats = stats
        return self.last_result

    # -- the optimisation -------------------------------------------------------------------
    def _optimise(self, ids: Tensor, attention: Tensor, mask: Tensor, extra: list,
                  stats: EngineStats, bar: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Learn the word scales of one group of examples: ``(sigma per word, loss history,
        last distortion)``."""
        device = torch.device(self.options.device) if self.options.device is not None else \
            next(self.forward_func.parameters()).device
        n, length = ids.shape
        samples = self.n_samples
        ids_d, attention_d = ids.to(device), attention.to(device)
        extra_d = [a.to(device) if isinstance(a, Tensor) else a for a in extra]
        with torch.no_grad():
            clean = self._layer_state(ids_d, extra_d, None, stats).float()
        positions = self._positions(clean, attention_d)  # (n, L, 1) or (n, 1)
        norm = (clean.square() * positions).flatten(1).sum(1).clamp_min(1e-12)
        width = int(mask.max()) + 1 if (mask >= 0).any() else 0
        is_word = mask >= 0
        n_tokens = is_word.sum(1).clamp_min(1).to(device)
        param = torch.full((n, max(width, 1)), float(self.init), device=device,
                           requires_grad=True)
        optimiser = torch.optim.Adam([param], lr=self.lr)
        generators = [self._generator(ids[b], attention[b], mask[b]) for b in range(n)]
        where = mask.clamp(min=0).to(device)
        word_mask = is_word.to(device)
        rows_ids = ids_d.repeat_interleave(samples, 0)
        rows_extra = [a.repeat_interleave(samples, 0) if isinstance(a, Tensor) and
                      a.dim() >= 1 and a.shape[0] == n else a for a in extra_d]
        history = torch.zeros(n, self.n_steps, dtype=torch.float64)
        dist = torch.zeros(n, dtype=torch.float64)
        for step in range(self.n_steps):
            sigma_tok = F.softplus(param).gather(1, where) * word_mask  # (n, L)
            noise = self._noise(generators, is_word, length, samples, device)
            scaled = noise * sigma_tok.repeat_interleave(samples, 0)[..., None]
            state = self._layer_state(rows_ids, rows_extra, scaled, stats).float()
            sq = ((state - clean.repeat_interleave(samples, 0)).square()
                  * positions.repeat_interleave(samples, 0)).flatten(1).sum(1)
            distortion = sq.view(n, samples).mean(1) / norm
            log_sigma = (sigma_tok.clamp_min(1e-30).log() * word_mask).sum(1) / n_tokens
            losses = distortion - self.lam * log_sigma
            (grad,) = torch.autograd.grad(losses.sum(), [param])
            optimiser.zero_grad(set_to_none=True)
            param.grad = grad
            optimiser.step()
            history[:, step] = losses.detach().double().cpu()
            dist = distortion.detach().double().cpu()
            bar.update(1)
        return F.softplus(param.detach()).double().cpu(), history, dist

    def _generator(self, ids: Tensor, attention: Tensor, mask: Tensor) -> torch.Generator:
        """An example's own noise stream: seeded by ``seed`` and its attended tokens, so it
        is the same whatever batch the example is in."""
        keep = attention.cpu() != 0
        key = zlib.crc32(ids.cpu()[keep].long().numpy().tobytes()
                         + mask.cpu()[keep].long().numpy().tobytes())
        generator = torch.Generator()
        generator.manual_seed((self.seed * 1_000_003 + key) % (2 ** 63))
        return generator

    def _noise(self, generators: list, is_word: Tensor, length: int, samples: int,
               device: torch.device) -> Tensor:
        """Standard normal noise ``(n * samples, L, K)`` at word tokens, 0 elsewhere; each
        example's from its own generator, drawn only for its own word tokens."""
        dims = self._dims
        noise = torch.zeros(len(generators), samples, length, dims)
        for b, generator in enumerate(generators):
            count = int(is_word[b].sum())
            if count:
                noise[b, :, is_word[b]] = torch.randn(samples, count, dims,
                                                      generator=generator)
        return noise.view(-1, length, dims).to(device)

    @staticmethod
    def _positions(clean: Tensor, attention: Tensor) -> Tensor:
        """Which entries of s count: attended positions of a sequence state, all of a vector."""
        if clean.dim() == 3 and clean.shape[1] == attention.shape[1]:
            return (attention != 0).to(clean.dtype)[..., None]
        return torch.ones(clean.shape[0], *([1] * (clean.dim() - 1)), dtype=clean.dtype,
                          device=clean.device)

    def _layer_state(self, ids: Tensor, extra: list, noise: Tensor | None,
                     stats: EngineStats) -> Tensor:
        """s = Phi(x) (``noise=None``) or Phi(x~): run the model until the layer has run."""
        captured: list[Tensor] = []

        def add_noise(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
            return output + noise.to(output.dtype)

        def grab_output(module: nn.Module, inputs: Any, output: Any) -> None:
            captured.append(first_tensor(output))
            raise _Reached

        def grab_input(module: nn.Module, inputs: Any) -> None:
            captured.append(first_tensor(inputs))
            raise _Reached

        autocast = self.options.autocast
        with ExitStack() as stack:
            if noise is not None:
                stack.callback(self.embedding.register_forward_hook(
                    this_thread_only(add_noise)).remove)
            layer = self.layer_module
            hook = (layer.register_forward_pre_hook(this_thread_only(grab_input))
                    if self.reads_input else
                    layer.register_forward_hook(this_thread_only(grab_output)))
            stack.callback(hook.remove)
            if autocast and ids.device.type == "cuda":
                stack.enter_context(torch.autocast("cuda", dtype=autocast if isinstance(
                    autocast, torch.dtype) else torch.float16))
            else:
                stack.enter_context(nullcontext())
            try:
                model_caller(self.forward_func)(ids, *extra)
            except _Reached:
                pass
        stats.forward_passes += 1
        stats.rows += ids.shape[0]
        if not captured:
            raise ValueError(f"the model's forward never ran {self.layer_name}; pass the "
                             "module to explain as layer=")
        state = captured[0]
        if state.shape[0] != ids.shape[0]:
            raise ValueError(f"{self.layer_name} output has batch size {state.shape[0]}, "
                             f"expected {ids.shape[0]} (batch first)")
        return state


def _pick(extra: tuple, index: Tensor, n: int) -> list:
    """The forward arguments of a group of examples: per-example tensors are indexed."""
    return [a[index] if isinstance(a, Tensor) and a.dim() >= 1 and a.shape[0] == n else a
            for a in extra]


def _spread(per_word: Tensor, mask: Tensor) -> Tensor:
    """Word values ``(n, max_words)`` onto tokens ``(n, seq_len)``; 0 where the mask is < 0."""
    if per_word.shape[1] == 0:
        return torch.zeros(mask.shape, dtype=per_word.dtype)
    return per_word.nan_to_num(0.0).gather(1, mask.clamp(min=0)).masked_fill(mask < 0, 0.0)
