"""A masked language model beside a classifier: its token ids, the shared-vocabulary check, and
MLM logits at one position per row (what marginalisation and MLM-replacement metrics query).

Any Hugging Face ``AutoModelForMaskedLM`` works (called as ``mlm(input_ids=..., attention_mask=
...)``). The vocabulary projection, the expensive part of an MLM forward, is computed only at
the queried position: a forward pre-hook on ``mlm.get_output_embeddings()`` gathers that
position's hidden state before the decoder. Models without output embeddings get the full
logits, gathered afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from captum_erasure._core.engine import output_logits
from captum_erasure._core.hooks import input_embeddings, this_thread_only
from captum_erasure._core.inputs import ForwardArgs
from captum_erasure._core.text import NOT_A_FEATURE

_SPECIAL_TOKEN_ATTRIBUTES = ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id",
                             "unk_token_id", "bos_token_id", "eos_token_id")


@dataclass(frozen=True)
class MLMTokens:
    """The ids an MLM-based method needs: ``[MASK]``, the special tokens (never replaced, never
    candidates) and the vocabulary size."""

    mask_token_id: int
    special_ids: tuple[int, ...]
    vocab_size: int

    def special_tensor(self) -> Tensor:
        return torch.tensor(self.special_ids, dtype=torch.long)


def mlm_vocab_size(mlm: nn.Module) -> int:
    """Size of the MLM's output vocabulary."""
    head = _output_embeddings(mlm)
    if isinstance(head, nn.Linear):
        return head.out_features
    size = getattr(getattr(mlm, "config", None), "vocab_size", None)
    if size is None:
        raise ValueError("cannot tell the MLM's vocabulary size: it has no output embeddings "
                         "and no config.vocab_size")
    return int(size)


def resolve_mlm_tokens(mlm: nn.Module, tokenizer: Any = None, mask_token_id: int | None = None,
                       special_token_ids: Any = None) -> MLMTokens:
    """Token ids from (in order of precedence) the explicit arguments, the tokenizer, or the
    MLM's config (the default MLM stores them there; hub configs usually hold only the pad id)."""
    config = getattr(mlm, "config", None)
    if mask_token_id is None and tokenizer is not None:
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
    if mask_token_id is None:
        mask_token_id = getattr(config, "mask_token_id", None)
    if mask_token_id is None:
        raise ValueError("cannot find the MLM's [MASK] token id: pass tokenizer= (the tokenizer "
                         "of the classifier and MLM) or mask_token_id=")
    if special_token_ids is None and tokenizer is not None:
        special_token_ids = list(tokenizer.all_special_ids)
    if special_token_ids is None:
        special_token_ids = [getattr(config, name, None) for name in _SPECIAL_TOKEN_ATTRIBUTES]
    specials = {int(t) for t in special_token_ids if t is not None} | {int(mask_token_id)}
    return MLMTokens(int(mask_token_id), tuple(sorted(specials)), mlm_vocab_size(mlm))


def check_shared_vocabulary(mlm_tokens: MLMTokens, classifier: Callable | None = None,
                            tokenizer: Any = None, mlm_tokenizer: Any = None,
                            input_ids: Tensor | None = None) -> None:
    """Fail with a clear error when the MLM cannot share the classifier's vocabulary.

    Checks what is known: the classifier's input-embedding size (HF models and bound methods of
    them), the tokenizers' vocabularies (token by token, when both are given), the tokenizer's
    size, and that the input ids lie inside the MLM's vocabulary.
    """
    size = mlm_tokens.vocab_size
    embedding = input_embeddings(classifier) if classifier is not None else None
    if isinstance(embedding, nn.Embedding) and embedding.num_embeddings != size:
        raise ValueError(
            f"the MLM's vocabulary has {size} tokens but the classifier's embedding has "
            f"{embedding.num_embeddings}: marginalisation needs an MLM with the classifier's "
            "vocabulary (e.g. bert-base-uncased for a BERT-uncased classifier)")
    if tokenizer is not None and mlm_tokenizer is not None and tokenizer is not mlm_tokenizer:
        ours, theirs = tokenizer.get_vocab(), mlm_tokenizer.get_vocab()
        if ours != theirs:
            differ = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda kv: kv[1])[:5]
            raise ValueError(
                "the classifier's tokenizer and the MLM's tokenizer have different vocabularies "
                f"({len(ours)} vs {len(theirs)} tokens; first differences: {differ})")
    if tokenizer is not None and len(tokenizer) > size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the MLM's vocabulary "
                         f"only {size}: they do not share a vocabulary")
    if input_ids is not None and input_ids.numel() and (
            int(input_ids.max()) >= size or int(input_ids.min()) < 0):
        raise ValueError(f"input ids range over [{int(input_ids.min())}, {int(input_ids.max())}]"
                         f" but the MLM's vocabulary has {size} tokens: the MLM does not share "
                         "the classifier's vocabulary")


def token_feature_mask(input_ids: Tensor, attention_mask: Tensor | None,
                       special_ids: Tensor) -> Tensor:
    """Every attended non-special token its own feature (its position); -1 elsewhere."""
    mask = torch.arange(input_ids.shape[1]).expand(input_ids.shape).clone()
    keep = ~torch.isin(input_ids.cpu(), special_ids)
    if attention_mask is not None:
        keep &= attention_mask.cpu().ne(0)
    mask[~keep] = NOT_A_FEATURE
    return mask


def _output_embeddings(mlm: nn.Module) -> nn.Module | None:
    getter = getattr(mlm, "get_output_embeddings", None)
    return getter() if callable(getter) else None


class PositionLogits:
    """Engine forward for an MLM: ``(input_ids, attention_mask, positions)`` to the logits at
    ``positions`` (one per row), shape ``(rows, vocab)``."""

    def __init__(self, mlm: nn.Module) -> None:
        self.mlm = mlm
        self.head = _output_embeddings(mlm)

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, positions: Tensor) -> Tensor:
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        gathered = False

        def gather(_module: nn.Module, args: tuple) -> tuple | None:
            nonlocal gathered
            hidden = args[0]
            if gathered or hidden.dim() != 3 or hidden.shape[:2] != input_ids.shape:
                return None
            gathered = True
            return (hidden[rows, positions][:, None], *args[1:])

        handle = (self.head.register_forward_pre_hook(this_thread_only(gather))
                  if self.head is not None else None)
        try:
            logits = output_logits(self.mlm(input_ids=input_ids, attention_mask=attention_mask))
        finally:
            if handle is not None:
                handle.remove()
        return logits[:, 0] if gathered else logits[rows, positions]


class TokenRows:
    """A call's token-id inputs on CPU and the forward arguments of rows built from them.

    Forward arguments shaped like the ids are per token (sliced with the ids), tensors with one
    row per example are per example, anything else is shared by every row. Rows are trimmed to
    the longest attended width among them: shared right padding is dead weight.
    """

    def __init__(self, ids: Tensor, extra: tuple, attention: Tensor | None) -> None:
        self.ids = ids
        self.n_examples = ids.shape[0]
        self.forward_args = ForwardArgs(extra, ids.shape)
        self.attention = attention
        if attention is not None:
            columns = torch.arange(ids.shape[1]).expand(ids.shape)
            self.width = ((columns + 1) * attention.ne(0)).amax(1)
            self.lengths = attention.ne(0).sum(1)
        else:
            self.width = self.lengths = torch.full((self.n_examples,), ids.shape[1])

    def length(self, example: int) -> int:
        """Attended tokens of an example (the engine's token-budget unit)."""
        return int(self.lengths[example])

    def content(self, example: int, blank: int | None = None) -> bytes:
        """Bytes identifying the example's forward input, with position ``blank`` left out."""
        ids = self.ids[example].clone()
        if blank is not None:
            ids[blank] = -1
        parts = [ids.numpy().tobytes()]
        parts += self.forward_args.example_bytes(example)
        return b"|".join(parts)

    def classifier_batch(self, examples: Tensor, ids: Tensor) -> tuple:
        """Forward arguments ``(ids, *additional_forward_args)`` for rows of ``examples`` whose
        token ids are ``ids`` (full width)."""
        width = int(self.width[examples].max())
        args = self.forward_args.rows(examples, width)
        return (ids[:, :width], *args)

    def mlm_batch(self, examples: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)`` for the MLM (all ones without an attention mask)."""
        width = int(self.width[examples].max())
        if self.attention is None:
            return ids[:, :width], torch.ones_like(ids[:, :width])
        return ids[:, :width], self.attention[examples, :width]
