"""DiffMask's parts (De Cao et al., EMNLP 2020): hard concrete gates, the gate probe and the
hooks that read hidden states and write the masked ones.

Hard concrete (Louizos et al. 2018, as in DiffMask): ``s = sigmoid((logit + log u - log(1-u))
/ T)`` with ``u ~ U(0, 1)``, stretched to ``(l, r)`` and clamped to ``[0, 1]``; with ``l < 0``
an exact 0 (drop) has probability mass, and ``P(z != 0) = sigmoid(logit - T log(-l / r))``
(the expected L0 of one gate). Defaults are the authors' code's: ``T = 0.2, l = -0.2, r = 1``
(so an exact 1 has no mass, only values near it).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from captum_erasure._core.hooks import (
    encoder_layers,
    first_tensor,
    replace_first,
    this_thread_only,
)

TEMPERATURE = 0.2
STRETCH = (-0.2, 1.0)
GATE_BIAS = 5.0        # gates start open (P(keep) ~ 0.995)
MAX_ACTIVATION = 10.0  # the MLP's tanh output is scaled to [-10, 10] around the bias


def log_keep_probability(logits: Tensor, temperature: float = TEMPERATURE,
                         stretch: tuple[float, float] = STRETCH) -> Tensor:
    """``log P(z != 0)`` of hard concrete gates with these logits (the log expected L0)."""
    low, high = stretch
    return nn.functional.logsigmoid(logits - temperature * math.log(-low / high))


def sample_gates(logits: Tensor, generator: torch.Generator | None,
                 temperature: float = TEMPERATURE,
                 stretch: tuple[float, float] = STRETCH) -> Tensor:
    """One reparameterised hard concrete sample per logit, in ``[0, 1]``."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype,
                   device="cpu").to(logits.device)
    u = u.clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    low, high = stretch
    return (s * (high - low) + low).clamp(0.0, 1.0)


class GateMLP(nn.Module):
    """One gate's logit per position: Linear -> tanh -> Linear -> tanh, scaled by
    ``MAX_ACTIVATION``, plus a learned bias started at ``GATE_BIAS`` (the authors'
    ``MLPMaxGate``, without weight normalisation)."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, width)
        self.out = nn.Linear(width, 1)
        self.bias = nn.Parameter(torch.tensor(GATE_BIAS))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.out(torch.tanh(self.hidden(x))))
        return h.squeeze(-1) * MAX_ACTIVATION + self.bias


class GateProbe(nn.Module):
    """The gates of one DiffMask: ``len(in_features)`` gate MLPs and the baseline vector.

    Input mode (layer l): gate i reads ``concat(e, h^i)`` (``e`` the token embedding, ``h^i``
    hidden state i) for i = 0..l and a position is kept only if every gate is open (the product
    of the gates; its keep probability is the product of theirs). Hidden mode: one gate reads
    ``h^l``. Dropped vectors are replaced by ``baseline`` (one learned vector for the masked
    layer, shared by all positions).
    """

    def __init__(self, in_features: Sequence[int], width: int, baseline: Tensor) -> None:
        super().__init__()
        self.gates = nn.ModuleList(GateMLP(n, width) for n in in_features)
        self.baseline = nn.Parameter(baseline.detach().clone().float())

    def logits(self, gate_inputs: Sequence[Tensor]) -> Tensor:
        """``(batch, positions, n_gates)`` gate logits."""
        fitted = [gate.hidden.in_features for gate in self.gates]
        given = [int(x.shape[-1]) for x in gate_inputs]
        if fitted != given:
            raise ValueError(f"this DiffMask probe was fitted on gate inputs of widths {fitted} "
                             f"but the model gives {given}: it belongs to another model")
        return torch.stack([gate(x.float()) for gate, x in zip(self.gates, gate_inputs)], -1)

    def start_from(self, lower: GateProbe) -> None:
        """Takes ``lower``'s gates (its first ``len(lower.gates)``) and baseline: a probe of a
        lower layer of the same model, in input mode."""
        widths = [g.hidden.in_features for g in self.gates[:len(lower.gates)]]
        if widths != [g.hidden.in_features for g in lower.gates] or \
                self.gates[0].hidden.out_features != lower.gates[0].hidden.out_features or \
                self.baseline.shape != lower.baseline.shape:
            raise ValueError("init_from's probe does not fit this model's gates (other gate "
                             "inputs or widths): it belongs to another model")
        with torch.no_grad():
            for gate, fitted in zip(self.gates, lower.gates):
                gate.load_state_dict(fitted.state_dict())
            self.baseline.copy_(lower.baseline)

    def apply(self, vectors: Tensor, keep: Tensor) -> Tensor:
        """``vectors * z + baseline * (1 - z)`` with the (batch, positions) keep values ``z``."""
        if vectors.shape[-1] != self.baseline.shape[-1]:
            raise ValueError(f"this DiffMask probe's baseline has {self.baseline.shape[-1]} "
                             f"dimensions but the masked layer gives {vectors.shape[-1]}: it "
                             f"belongs to another model")
        keep = keep.to(vectors.dtype).unsqueeze(-1)
        return vectors * keep + self.baseline.to(vectors.dtype) * (1 - keep)


def model_hidden_modules(model: nn.Module) -> list[nn.Module] | None:
    """Modules whose outputs are hidden states 0..L of an HF encoder (0: the embeddings block,
    i: encoder layer i), or None when the model has no such structure."""
    base = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    stack = encoder_layers(model)
    if not isinstance(embeddings, nn.Module) or stack is None:
        return None
    return [embeddings, *stack]


@contextlib.contextmanager
def capturing(modules: Sequence[nn.Module], store: list) -> Iterator[None]:
    """While active, appends each module's output activation to ``store[i]`` (a list of
    lists, one per module)."""
    handles = []

    def make(i: int) -> Callable:
        def hook(module, inputs, output):
            store[i].append(first_tensor(output))
        return hook

    try:
        for i, module in enumerate(modules):
            handles.append(module.register_forward_hook(this_thread_only(make(i))))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def replacing(module: nn.Module, transform: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """While active, the module's output activation goes through ``transform``."""
    def hook(mod, inputs, output):
        return replace_first(output, transform(first_tensor(output)))

    handle = module.register_forward_hook(this_thread_only(hook))
    try:
        yield
    finally:
        handle.remove()
