"""DiffMask (De Cao, Schlichtkrull, Aziz & Titov, EMNLP 2020) as a Captum attribution.

A small probe reads the frozen model's hidden states at each position and predicts a stochastic
hard concrete gate: keep or drop. Dropped vectors are replaced by a learned baseline vector.
The probe is trained on a dataset (:meth:`DiffMask.fit`) to drop as many positions as possible
(expected L0) while the divergence ``KL(original output || masked output)`` stays under a
margin, by Lagrangian relaxation with a learned multiplier (maximised). Explaining then
*predicts* the mask instead of searching for it: one forward row per example (two with
``masked=True``, which also runs the masked input).

Two modes, as in the paper, for a layer ``l`` in ``0..L`` (hidden state 0 is the embeddings
block's output, ``l`` that of encoder layer ``l``):

- ``"input"``: the token embeddings are masked; the gates read the hidden states 0..l (gate
  i reads ``concat(token embedding, h^i)``; a position is kept only if all l+1 gates are
  open). "What the network knows at layer l about which inputs it needs."
- ``"hidden"``: the hidden state ``h^l`` is masked, its gate reads ``h^l``.

The attribution is each position's expected keep probability ``P(z != 0)`` (deterministic).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_erasure._core.engine import EngineStats, Row, output_logits
from captum_erasure._core.forwards import model_caller
from captum_erasure._core.hooks import input_embeddings
from captum_erasure._core.inputs import ForwardArgs, as_extra_args, attribute_inputs, unpack_batch
from captum_erasure._core.options import EngineOptions, UsesEngine, attribute_call
from captum_erasure._core.scores import log_probs
from captum_erasure._core.text import eval_mode
from captum_erasure.attr._diffmask_gates import (
    GateProbe,
    capturing,
    log_keep_probability,
    model_hidden_modules,
    replacing,
    sample_gates,
)

MODES = ("input", "hidden")
WORD_REDUCTIONS = ("max", "mean")
MAX_MULTIPLIER = 200.0  # the authors' clamp of the Lagrange multiplier


class NotFittedError(RuntimeError):
    """DiffMask was asked to explain before :meth:`DiffMask.fit` or :meth:`DiffMask.load`."""


@dataclass
class DiffMaskResult:
    """One ``attribute_details`` call."""

    keep: Tensor               # (n, seq) expected keep probability per token (0 on padding)
    attributions: Tensor       # (n, seq) what ``attribute`` returns (per word with a mask)
    original_outputs: Tensor   # (n, n_outputs) the unmasked forward's outputs
    masked_outputs: Tensor | None = None  # (n, n_outputs) positions with keep < 0.5 dropped
    kl: Tensor | None = None   # (n,) KL(original || masked) of that masked forward
    stats: EngineStats | None = None

    @property
    def kept_fraction(self) -> Tensor:
        """Per example: share of attended tokens with keep probability >= 0.5."""
        attended = self.keep_mask_valid
        return ((self.keep >= 0.5) & attended).sum(1) / attended.sum(1).clamp_min(1)

    keep_mask_valid: Tensor = field(default=None, repr=False)  # (n, seq) attended positions


@dataclass
class FitStats:
    """What :meth:`DiffMask.fit` did (``history``: one dict per step)."""

    steps: int = 0
    examples: int = 0
    rows: int = 0              # model rows: 2 per example per step (original + masked)
    seconds: float = 0.0
    history: list = field(default_factory=list)


class DiffMask(UsesEngine, PerturbationAttribution):
    """DiffMask for one layer of a frozen classifier (see the module docstring).

    Args:
        forward_func: the classifier (an ``nn.Module``), ``forward_func(input_ids, *extra)``
            -> logits (or ``output="probs"``/``"log_probs"``) or an HF output with ``.logits``.
        layer: ``l`` in ``0..L``.
        mode: ``"input"`` (mask the token embeddings) or ``"hidden"`` (mask ``h^l``).
        margin: the divergence bound ``m`` of ``KL(original || masked) <= m`` (the authors'
            ``eps`` = 0.1 nats).
        hidden_modules: modules whose outputs are hidden states 0..L (default: an HF
            encoder's ``embeddings`` and ``encoder.layer``).
        embedding_layer: the token-embedding module (default ``get_input_embeddings()``).
        mask_token_id: input mode: the baseline starts at this token's embedding (the
            authors' choice, ``[MASK]``); default: the mean embedding.
        gate_width: hidden units of each gate MLP (default hidden size / 4, the authors').
        word_reduce: how a word's tokens combine under a feature mask: ``"max"`` (default: a
            word is kept when any of its tokens is) or ``"mean"``.
    """

    def __init__(self, forward_func: Callable, *, layer: int, mode: str = "input",
                 margin: float = 0.1, hidden_modules: Sequence[nn.Module] | None = None,
                 embedding_layer: nn.Module | None = None, mask_token_id: int | None = None,
                 gate_width: int | None = None, word_reduce: str = "max",
                 options: EngineOptions | None = None, **engine_options: Any) -> None:
        super().__init__(forward_func)
        self.options = EngineOptions.resolve(type(self).__name__, options, engine_options)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if word_reduce not in WORD_REDUCTIONS:
            raise ValueError(f"word_reduce must be one of {WORD_REDUCTIONS}, got {word_reduce!r}")
        if not margin > 0:
            raise ValueError(f"margin must be > 0, got {margin!r}")
        owner = forward_func if isinstance(forward_func, nn.Module) else getattr(
            forward_func, "__self__", None)
        modules = list(hidden_modules) if hidden_modules is not None else (
            model_hidden_modules(owner) if isinstance(owner, nn.Module) else None)
        if not modules:
            raise ValueError("DiffMask needs the model's hidden states: the model has no HF "
                             "encoder (embeddings + encoder.layer); pass hidden_modules= (the "
                             "modules whose outputs are hidden states 0..L)")
        if isinstance(layer, bool) or not isinstance(layer, int) or \
                not 0 <= layer < len(modules):
            raise ValueError(f"the model has hidden states 0..{len(modules) - 1} (0 = "
                             f"embeddings, {len(modules) - 1} encoder layers); layer={layer!r} "
                             "does not exist")
        self.embedding_layer = embedding_layer or (
            input_embeddings(forward_func) if mode == "input" else None)
        if mode == "input" and self.embedding_layer is None:
            raise ValueError("mode='input' needs the token-embedding module: pass "
                             "embedding_layer= (the model has no get_input_embeddings)")
        self.layer, self.mode, self.margin = layer, mode, float(margin)
        self.hidden_modules = modules
        self.mask_token_id, self.gate_width = mask_token_id, gate_width
        self.word_reduce = word_reduce
        self.probe: GateProbe | None = None
        self.multiplier = torch.ones(())
        self.fit_stats: FitStats | None = None
        self.last_stats: EngineStats | None = None
        self.last_result: DiffMaskResult | None = None

    # -- the model with hooks -----------------------------------------------------------------
    def _read_modules(self) -> list[nn.Module]:
        if self.mode == "input":
            return [self.embedding_layer, *self.hidden_modules[:self.layer + 1]]
        return [self.hidden_modules[self.layer]]

    def _masked_module(self) -> nn.Module:
        return self.embedding_layer if self.mode == "input" else self.hidden_modules[self.layer]

    def _read(self, ids: Tensor, extra: Sequence[Any]) -> tuple[Tensor, list[Tensor]]:
        """The unmasked forward: its outputs and the gates' inputs (one tensor per gate)."""
        store: list[list[Tensor]] = [[] for _ in self._read_modules()]
        with capturing(self._read_modules(), store):
            out = output_logits(model_caller(self.forward_func)(ids, *extra))
        states = [s[0] for s in store]
        if self.mode == "input":
            e = states[0]
            return out, [torch.cat([e, h], -1) for h in states[1:]]
        return out, states

    def _masked(self, ids: Tensor, extra: Sequence[Any], keep: Tensor) -> Tensor:
        probe = self._fitted()
        with replacing(self._masked_module(), lambda v: probe.apply(v, keep)):
            return output_logits(model_caller(self.forward_func)(ids, *extra))

    def _fitted(self) -> GateProbe:
        if self.probe is None:
            raise NotFittedError("DiffMask is not fitted: call .fit(...) on a dataset or "
                                 ".load(path) before explaining")
        return self.probe

    def _build_probe(self, gate_inputs: list[Tensor], attention: Tensor) -> GateProbe:
        widths = [int(x.shape[-1]) for x in gate_inputs]
        hidden = int(gate_inputs[-1].shape[-1]) if self.mode == "hidden" else \
            int(self.embedding_layer.weight.shape[-1]) if hasattr(
                self.embedding_layer, "weight") else widths[0] // 2
        width = self.gate_width or max(8, hidden // 4)
        if self.mode == "input":
            weight = getattr(self.embedding_layer, "weight", None)
            if weight is not None and self.mask_token_id is not None:
                baseline = weight[self.mask_token_id]
            elif weight is not None:
                baseline = weight.mean(0)
            else:
                baseline = torch.zeros(hidden)
        else:
            h = gate_inputs[0]
            mask = attention.to(h.dtype).unsqueeze(-1)
            baseline = (h * mask).sum((0, 1)) / mask.sum().clamp_min(1)
        return GateProbe(widths, width, baseline.detach().cpu())

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data: Iterable[Any] | None = None, *, texts: Sequence[str] | None = None,
            tokenizer: Any = None, batch_size: int = 16, epochs: int = 1,
            max_steps: int | None = None, seed: int = 0, lr: float = 1e-3,
            baseline_lr: float = 1e-2, multiplier_lr: float = 0.5, warmup_steps: int = 50,
            max_length: int = 128, init_from: DiffMask | None = None,
            show_progress: bool = True) -> DiffMask:
        """Train the probe, the baseline vector and the multiplier (the model stays frozen).

        ``data``: batches ``input_ids``, ``(input_ids, additional_forward_args)`` or
        ``(input_ids, additional_forward_args, labels)`` (labels are ignored: the divergence
        is from the model's own output), e.g. a ``DataLoader`` over ``TensorDataset(ids,
        attention_mask)``; or ``texts`` with a ``tokenizer`` (shuffled per epoch, batches of
        ``batch_size``). Runs ``epochs`` passes or ``max_steps`` steps, whichever ends first;
        every random choice comes from ``seed``. Adam on the probe (``lr``) and the baseline
        (``baseline_lr``), both ramped up linearly over ``warmup_steps`` (as the authors' warm-up:
        the multiplier must grow before the gates can close, or they all close at once and the
        exact zeros of the hard concrete gates pass no gradient back), gradient ascent (Adam)
        on the multiplier, clamped to [0, 200].

        ``init_from`` (input mode): a fitted input-mode DiffMask of a lower layer of the same
        model; a new probe starts from its gates 0..k, baseline and multiplier, the gates above
        open. The authors fit all layers at once with shared gates; fitting layer by layer,
        each from the one below, shares them the same way (independent fits of deeper layers
        collapse within a few hundred steps: docs/diffmask.md).
        """
        if (data is None) == (texts is None):
            raise ValueError("fit takes either data (batches) or texts= with tokenizer=")
        if texts is not None and tokenizer is None:
            raise ValueError("fit(texts=...) needs tokenizer=")
        if init_from is not None:
            self._check_init_from(init_from)
        model = self.forward_func
        generator = torch.Generator().manual_seed(seed)
        stats = FitStats()
        start = time.perf_counter()
        probe_device = None
        bar = tqdm(total=max_steps, desc=f"DiffMask fit (layer {self.layer}, {self.mode})",
                   unit="step", disable=not show_progress, leave=False)
        optimizers: list[torch.optim.Optimizer] = []
        multiplier = nn.Parameter(torch.ones(()))
        try:
            with eval_mode(model):
                for epoch in range(epochs):
                    batches = self._text_batches(texts, tokenizer, batch_size, max_length,
                                                 generator) if texts is not None else data
                    for batch in batches:
                        ids, extra = self._unpack(batch)
                        with torch.no_grad():
                            original, gate_inputs = self._read(ids, extra)
                        self._check_outputs(original)
                        attention = self._attention(ids, extra)
                        if self.probe is None:
                            with torch.random.fork_rng(devices=[]):
                                torch.manual_seed(seed)
                                self.probe = self._build_probe(gate_inputs, attention)
                            if init_from is not None:
                                self._start_from(init_from)
                        if not optimizers:
                            probe_device = gate_inputs[0].device
                            self.probe.to(probe_device)
                            multiplier = nn.Parameter(self.multiplier.clone().to(probe_device))
                            optimizers = [
                                torch.optim.Adam([
                                    {"params": self.probe.gates.parameters(), "lr": lr},
                                    {"params": [self.probe.baseline], "lr": baseline_lr}]),
                                torch.optim.Adam([multiplier], lr=multiplier_lr,
                                                 maximize=True)]
                            warmup = torch.optim.lr_scheduler.LambdaLR(
                                optimizers[0], lambda step: min(1.0, (step + 1) /
                                                                max(1, warmup_steps)))
                        record = self._step(ids, extra, original, gate_inputs, attention,
                                            multiplier, optimizers, generator)
                        warmup.step()
                        stats.steps += 1
                        stats.examples += len(ids)
                        stats.rows += 2 * len(ids)
                        stats.history.append(record)
                        bar.update(1)
                        bar.set_postfix(kl=f"{record['kl']:.3f}", kept=f"{record['l0']:.2f}",
                                        alpha=f"{record['multiplier']:.2f}")
                        if max_steps is not None and stats.steps >= max_steps:
                            break
                    if max_steps is not None and stats.steps >= max_steps:
                        break
        finally:
            bar.close()
        if self.probe is None:
            raise ValueError("fit got no batches")
        self.multiplier = multiplier.detach().cpu()
        stats.seconds = time.perf_counter() - start
        self.fit_stats = stats
        return self

    def _check_init_from(self, previous: DiffMask) -> None:
        if not isinstance(previous, DiffMask):
            raise TypeError(f"init_from takes a fitted DiffMask, got {type(previous).__name__}")
        if self.mode != "input" or previous.mode != "input":
            raise ValueError(f"init_from is for input mode (the masked layer, the embeddings, is "
                             f"then the same for every layer); got mode={self.mode!r} from "
                             f"mode={previous.mode!r}")
        if not previous.layer < self.layer:
            raise ValueError(f"init_from must be a DiffMask of a lower layer; got layer "
                             f"{previous.layer} for layer {self.layer}")
        previous._fitted()

    def _start_from(self, previous: DiffMask) -> None:
        self.probe.start_from(previous._fitted())
        self.multiplier = previous.multiplier.detach().clone().cpu()

    def _step(self, ids: Tensor, extra: Sequence[Any], original: Tensor,
              gate_inputs: list[Tensor], attention: Tensor, multiplier: nn.Parameter,
              optimizers: list, generator: torch.Generator) -> dict:
        probe = self.probe
        logits = probe.logits([x.detach() for x in gate_inputs])
        keep = sample_gates(logits, generator).prod(-1)
        masked = self._masked(ids, extra, keep)
        p_log = log_probs(original.detach(), self.output).float()
        q_log = log_probs(masked, self.output).float()
        kl = (p_log.exp() * (p_log - q_log)).sum(-1)
        constraint = kl - self.margin
        valid = attention.to(logits.dtype)
        expected_l0 = (log_keep_probability(logits).sum(-1).exp() * valid).sum(-1) / \
            valid.sum(-1).clamp_min(1)
        loss = (multiplier * constraint + expected_l0).mean()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        params = [*probe.parameters(), multiplier]
        loss.backward(inputs=params)
        for opt in optimizers:
            opt.step()
        with torch.no_grad():
            multiplier.clamp_(0.0, MAX_MULTIPLIER)
        return {"kl": float(kl.detach().mean()), "l0": float(expected_l0.detach().mean()),
                "multiplier": float(multiplier.detach()), "loss": float(loss.detach())}

    @staticmethod
    def _text_batches(texts: Sequence[str], tokenizer: Any, batch_size: int, max_length: int,
                      generator: torch.Generator) -> Iterable[tuple]:
        order = torch.randperm(len(texts), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start:start + batch_size]]
            enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt", return_token_type_ids=False)
            yield enc["input_ids"], (enc["attention_mask"],)

    def _unpack(self, batch: Any) -> tuple[Tensor, tuple]:
        inputs, extra, _ = unpack_batch(batch)
        ids = inputs[0] if isinstance(inputs, tuple) else inputs
        if not isinstance(ids, Tensor) or ids.dim() != 2:
            raise ValueError("DiffMask.fit batches hold (batch, sequence) token ids first")
        device = self.options.device or _module_device(self.hidden_modules[0])
        extra = tuple(a.to(device) if isinstance(a, Tensor) else a
                      for a in as_extra_args(extra))
        return ids.to(device), extra

    @staticmethod
    def _attention(ids: Tensor, extra: Sequence[Any]) -> Tensor:
        if extra and isinstance(extra[0], Tensor) and extra[0].shape == ids.shape:
            return extra[0]
        return torch.ones_like(ids)

    @staticmethod
    def _check_outputs(original: Tensor) -> None:
        if original.dim() != 2 or original.shape[-1] < 2:
            raise ValueError(
                f"DiffMask needs a distribution over at least 2 outputs per example (it bounds "
                f"the divergence of the output distribution); the model returned shape "
                f"{tuple(original.shape)}")

    # -- save / load --------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """The fitted probe, baseline and multiplier (``torch.save``; loads with
        ``weights_only=True``)."""
        probe = self._fitted()
        torch.save({"state": {k: v.detach().cpu() for k, v in probe.state_dict().items()},
                    "in_features": [g.hidden.in_features for g in probe.gates],
                    "width": probe.gates[0].hidden.out_features,
                    "layer": self.layer, "mode": self.mode, "margin": self.margin,
                    "multiplier": self.multiplier.detach().cpu()}, path)

    def load(self, path: Any) -> DiffMask:
        """Loads a probe saved by :meth:`save` for the same layer and mode."""
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if (saved["layer"], saved["mode"]) != (self.layer, self.mode):
            raise ValueError(f"{path} holds a DiffMask for layer {saved['layer']} "
                             f"({saved['mode']}), not layer {self.layer} ({self.mode})")
        probe = GateProbe(saved["in_features"], saved["width"], saved["state"]["baseline"])
        probe.load_state_dict(saved["state"])
        self.probe = probe.to(_module_device(self.hidden_modules[0]))
        self.multiplier = saved["multiplier"]
        return self

    # -- explaining ---------------------------------------------------------------------------
    def _gate_forward(self, ids: Tensor, *extra: Any) -> Tensor:
        """Engine forward: per row, the keep probabilities then the model's outputs."""
        out, gate_inputs = self._read(ids, extra)
        self._check_outputs(out)
        # float64: confident gates saturate at 1.0 in float32, and tied words lose their order
        keep = log_keep_probability(self.probe.logits(gate_inputs).double()).sum(-1).exp()
        return torch.cat([keep, out.double()], -1)

    def _masked_forward(self, ids: Tensor, keep: Tensor, *extra: Any) -> Tensor:
        return self._masked(ids, extra, (keep >= 0.5).to(torch.float32))

    @log_usage(part_of_slo=True)
    @attribute_call
    def attribute(self, inputs: Tensor | tuple[Tensor], baselines: Any = None,
                  target: Any = None, additional_forward_args: Any = None,
                  feature_mask: Tensor | tuple[Tensor] | None = None,
                  show_progress: bool = False, masked: bool = False, **kwargs: Any) -> Any:
        """Expected keep probability per token, shaped like ``inputs``; with a
        ``feature_mask`` every token of a word holds the word's value (``word_reduce`` of its
        tokens) and tokens outside words 0. ``additional_forward_args[0]`` is the attention
        mask. ``target`` is accepted and ignored: the mask keeps the whole output
        distribution. ``baselines`` must be None (the baseline is learned). One forward row
        per example; ``masked=True`` adds the masked forward (positions with keep < 0.5 are
        replaced by the baseline) to ``last_result`` (two rows per example)."""
        result = self.attribute_details(inputs, baselines, target, additional_forward_args,
                                        feature_mask, show_progress=show_progress,
                                        masked=masked, **kwargs)
        attr = result.attributions.to(_ids_of(inputs).device)
        return (attr,) if isinstance(inputs, tuple) else attr

    @attribute_call
    def attribute_details(self, inputs: Tensor | tuple[Tensor], baselines: Any = None,
                          target: Any = None, additional_forward_args: Any = None,
                          feature_mask: Tensor | tuple[Tensor] | None = None,
                          show_progress: bool = False, masked: bool = True,
                          **kwargs: Any) -> DiffMaskResult:
        """:meth:`attribute`'s arguments; the :class:`DiffMaskResult` (by default with the
        masked forward, two rows per example). Also kept in ``last_result``."""
        if kwargs:
            raise TypeError(f"DiffMask.attribute got unexpected arguments {sorted(kwargs)}")
        if baselines is not None:
            raise ValueError("DiffMask learns its baseline vector; baselines must be None")
        probe = self._fitted()
        _, ids, attention, words = attribute_inputs(inputs, additional_forward_args,
                                                    feature_mask)
        extra = as_extra_args(additional_forward_args)
        args = ForwardArgs(extra, ids.shape)
        ids_cpu = ids.cpu()
        n, width = ids.shape
        lengths = attention.cpu().sum(1).tolist()
        rows = [Row(b, -1, int(lengths[b])) for b in range(n)]

        def collate(specs: Sequence[Row]) -> tuple:
            examples = torch.tensor([r.example for r in specs])
            return (ids_cpu[examples], *args.rows(examples))

        engine = self.options.engine(self._gate_forward, self.forward_func, n_examples=n,
                                     show_progress=show_progress)
        model = self.forward_func
        probe.to(engine.device)
        with eval_mode(model):
            out = engine.run(rows, collate, desc="DiffMask gates")
            keep = out[:, :width] * attention.cpu().double()
            original = out[:, width:]
            masked_out = kl = None
            if masked:
                def collate_masked(specs: Sequence[Row]) -> tuple:
                    examples = torch.tensor([r.example for r in specs])
                    return (ids_cpu[examples], keep[examples], *args.rows(examples))
                engine.forward_func = self._masked_forward
                masked_out = engine.run(rows, collate_masked, desc="DiffMask masked")
                p_log = log_probs(original, self.output)
                kl = (p_log.exp() * (p_log - log_probs(masked_out, self.output))).sum(-1)
        attributions = _per_word(keep, words, self.word_reduce) if feature_mask is not None \
            else keep.clone()
        self.last_stats = engine.stats
        self.last_result = DiffMaskResult(keep, attributions, original, masked_out, kl,
                                          engine.stats, keep_mask_valid=attention.cpu() != 0)
        return self.last_result


def _per_word(keep: Tensor, words: Tensor, reduce: str) -> Tensor:
    out = torch.zeros_like(keep)
    for b in range(keep.shape[0]):
        ids = words[b]
        for w in ids[ids >= 0].unique().tolist():
            where = ids == w
            values = keep[b, where]
            out[b, where] = values.max() if reduce == "max" else values.mean()
    return out


def _ids_of(inputs: Any) -> Tensor:
    return inputs[0] if isinstance(inputs, tuple) else inputs


def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
