"""A LIT model for any Hugging Face sequence classifier.

:class:`HFSequenceClassifier` wraps ``AutoModelForSequenceClassification``-style models (anything
whose forward takes ``input_ids``/``inputs_embeds`` and ``attention_mask`` and returns
``.logits``) with their tokenizer as a batched LIT model. Its specs carry what LIT's own
gradient methods need (Grad L2, Grad · Input, Integrated Gradients, HotFlip): word-piece
``Tokens`` without special tokens, ``TokenGradients`` of the target class's probability,
``TokenEmbeddings`` in both specs (IG feeds interpolated embeddings back) and the label in the
input spec (the class gradients are taken for). Black-box callers (LIME, AblationFlip, our
erasure components) can skip the backward pass: ``compute_gradients=False`` or
:meth:`HFSequenceClassifier.without_gradients`.
"""

from __future__ import annotations

import logging
import operator
from typing import Any, Sequence

import numpy as np
import torch
from lit_nlp.api import model as lit_model
from lit_nlp.api import types as lit_types
from torch import nn

from captum_erasure._core.forwards import pad_token_id_of
from captum_erasure._core.hooks import this_thread_only
from captum_erasure._core.inputs import check_positive_int, require_class_outputs
from captum_erasure._core.text import eval_mode

logger = logging.getLogger(__name__)

TEXT_FIELD = "text"
LABEL_FIELD = "label"
TOKENS_FIELD = "tokens"
EMBEDDINGS_FIELD = "token_embs"
GRADIENTS_FIELD = "token_grads"
PREDS_FIELD = "probas"
CLS_EMBEDDING_FIELD = "cls_emb"


def _labels_of(model: nn.Module, labels: Sequence[str] | None) -> list[str]:
    config = getattr(model, "config", None)
    n_classes = getattr(config, "num_labels", None)
    if labels is not None:
        labels = [str(label) for label in labels]
        if n_classes and len(labels) != n_classes:
            raise ValueError(f"got {len(labels)} labels {labels} for a model with {n_classes} "
                             "classes")
        return labels
    id2label = getattr(config, "id2label", None) or {}
    if not n_classes:
        raise ValueError("the model's config has no num_labels; pass labels=[...] with one "
                         "name per output class")
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n_classes)]


class HFSequenceClassifier(lit_model.BatchedModel):
    """A Hugging Face sequence classifier as a LIT model.

    Args:
        model: an HF sequence-classification model (``.logits`` output); it is used in eval
            mode on its own device.
        tokenizer: its tokenizer (fast or slow).
        max_minibatch_size: examples per forward pass (LIT slices larger requests).
        compute_gradients: output ``TokenGradients`` (one backward pass per minibatch) so that
            LIT's gradient methods work; ``False`` for black-box use (faster, and the gradient
            fields leave the specs).
        labels: class names in output order (default: ``model.config.id2label``).
        text_field: name of the text field in the dataset (default ``"text"``).
        max_length: longest input in tokens, special tokens included (default: the
            tokenizer's ``model_max_length`` capped by the model's position embeddings).
        truncate: cut longer texts with a logged warning instead of raising ``ValueError``.

    Attributes ``model`` and ``tokenizer`` are the wrapped objects; ``labels`` the class names.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, max_minibatch_size: int = 32,
                 compute_gradients: bool = True, labels: Sequence[str] | None = None,
                 text_field: str = TEXT_FIELD, max_length: int | None = None,
                 truncate: bool = False):
        check_positive_int("max_minibatch_size", max_minibatch_size)
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token first")
        embedding = model.get_input_embeddings()
        rows = getattr(embedding, "num_embeddings", None)
        if rows is not None and len(tokenizer) > rows:
            raise ValueError(f"tokenizer/model vocabulary mismatch: the tokenizer has "
                             f"{len(tokenizer)} tokens but the model's input embedding has "
                             f"only {rows} rows; use the model's own tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.labels = _labels_of(model, labels)
        # a regression head (num_labels=1) would give probas=[1.0] for every text
        require_class_outputs(len(self.labels), type(self).__name__)
        self.compute_gradients = bool(compute_gradients)
        self.text_field = text_field
        self.truncate = truncate
        self._max_minibatch_size = int(max_minibatch_size)
        max_length = check_positive_int("max_length", max_length, allow_none=True)
        limit = max_length if max_length is not None else getattr(tokenizer, "model_max_length",
                                                                  None)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if positions and (limit is None or limit > positions):
            limit = positions
        self.max_length = limit
        self._embedding_table: tuple[list[str], np.ndarray] | None = None
        self._frame: tuple[list[int], list[int]] | None = None

    # -- LIT API --------------------------------------------------------------------------------
    def description(self) -> str:
        name = getattr(getattr(self.model, "config", None), "name_or_path", "") or \
            type(self.model).__name__
        mode = "with gradients" if self.compute_gradients else "black-box (no gradients)"
        return f"HF sequence classifier {name} ({len(self.labels)} classes, {mode})"

    @classmethod
    def init_spec(cls) -> None:
        return None  # built from Python objects, not loadable from the UI

    def max_minibatch_size(self, **unused_kw) -> int:
        return self._max_minibatch_size

    def input_spec(self) -> lit_types.Spec:
        spec: lit_types.Spec = {
            self.text_field: lit_types.TextSegment(),
            LABEL_FIELD: lit_types.CategoryLabel(vocab=self.labels, required=False),
        }
        if self.compute_gradients:
            # HotFlip edits word pieces and sends them back through this field.
            spec[TOKENS_FIELD] = lit_types.Tokens(parent=self.text_field, required=False)
            spec[EMBEDDINGS_FIELD] = lit_types.TokenEmbeddings(align=TOKENS_FIELD,
                                                               required=False)
        return spec

    def output_spec(self) -> lit_types.Spec:
        spec: lit_types.Spec = {
            TOKENS_FIELD: lit_types.Tokens(parent=self.text_field),
            PREDS_FIELD: lit_types.MulticlassPreds(vocab=self.labels, parent=LABEL_FIELD),
            CLS_EMBEDDING_FIELD: lit_types.Embeddings(),
        }
        if self.compute_gradients:
            spec[EMBEDDINGS_FIELD] = lit_types.TokenEmbeddings(align=TOKENS_FIELD)
            spec[GRADIENTS_FIELD] = lit_types.TokenGradients(
                align=TOKENS_FIELD, grad_for=EMBEDDINGS_FIELD,
                grad_target_field_key=LABEL_FIELD)
            # The class the gradients were taken for: IG reads it to pin every step.
            spec[LABEL_FIELD] = lit_types.CategoryLabel(vocab=self.labels, required=False)
        return spec

    def get_embedding_table(self) -> tuple[list[str], np.ndarray]:
        """(vocabulary, <float32>[V, d]) for HotFlip, limited to the tokenizer's ids."""
        if self._embedding_table is None:
            size = len(self.tokenizer)
            weight = self.model.get_input_embeddings().weight[:size]
            vocab = self.tokenizer.convert_ids_to_tokens(list(range(size)))
            self._embedding_table = (list(vocab),
                                     weight.detach().float().cpu().numpy())
        return self._embedding_table

    def without_gradients(self, **overrides) -> "HFSequenceClassifier":
        """A black-box twin sharing the model and tokenizer (no backward pass, no gradient
        fields): for LIME, AblationFlip and other methods that only need predictions."""
        settings = dict(max_minibatch_size=self._max_minibatch_size, compute_gradients=False,
                        labels=self.labels, text_field=self.text_field,
                        max_length=self.max_length, truncate=self.truncate)
        settings.update(overrides)
        return HFSequenceClassifier(self.model, self.tokenizer, **settings)

    # -- prediction -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        try:
            return next(self.model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def label_index(self, label: Any) -> int | None:
        """Class index of a label name or index; ``None`` for missing/empty labels."""
        if label is None or (isinstance(label, str) and not label.strip()):
            return None
        if isinstance(label, str):
            if label in self.labels:
                return self.labels.index(label)
            if label.isdigit() and int(label) < len(self.labels):
                return int(label)
            raise ValueError(f"label {label!r} is not one of the model's labels {self.labels}")
        try:
            index = operator.index(label)
        except TypeError:
            raise ValueError(f"label must be a class name or index, got {label!r}") from None
        if not 0 <= index < len(self.labels):
            raise ValueError(f"label {index} is outside the model's class range "
                             f"[0, {len(self.labels) - 1}]")
        return index

    def _token_ids(self, example: dict) -> tuple[list[int], list[int]]:
        """Token ids with special tokens for one example, and 1 where a token is one of the
        special tokens the tokenizer added (``[UNK]`` in the text is a word, not a special).

        Word pieces given in the ``tokens`` field are used as they are when they spell the text
        (HotFlip writes both); otherwise the text is tokenized.
        """
        if self.text_field not in example:
            raise ValueError(f"the example has no {self.text_field!r} field (its fields: "
                             f"{sorted(k for k in example if not k.startswith('_'))})")
        text = example[self.text_field]
        if not isinstance(text, str):
            raise TypeError(f"field {self.text_field!r} must be a string, got "
                            f"{type(text).__name__}")
        pieces = example.get(TOKENS_FIELD)
        if pieces and " ".join(pieces) == text:
            prefix, suffix = self._special_frame()
            ids = list(self.tokenizer.convert_tokens_to_ids(list(pieces)))
            return (prefix + ids + suffix,
                    [1] * len(prefix) + [0] * len(ids) + [1] * len(suffix))
        encoding = self.tokenizer(text, add_special_tokens=True, truncation=False,
                                  return_special_tokens_mask=True, verbose=False)
        return list(encoding["input_ids"]), list(encoding["special_tokens_mask"])

    def _special_frame(self) -> tuple[list[int], list[int]]:
        """Special token ids the tokenizer puts before and after a text (e.g. [CLS], [SEP])."""
        if self._frame is None:
            encoding = self.tokenizer("a", add_special_tokens=True,
                                      return_special_tokens_mask=True)
            ids, special = list(encoding["input_ids"]), list(encoding["special_tokens_mask"])
            body = [p for p, flag in enumerate(special) if not flag]
            self._frame = ((ids[:body[0]], ids[body[-1] + 1:]) if body else (ids, []))
        return self._frame

    def _check_length(self, ids: list[int], special: list[int],
                      position: int) -> tuple[list[int], list[int]]:
        if self.max_length is None or len(ids) <= self.max_length:
            return ids, special
        if not self.truncate:
            raise ValueError(f"example {position} has {len(ids)} tokens, more than the model's "
                             f"maximum of {self.max_length}; shorten the text or build the "
                             "model with truncate=True")
        logger.warning("example %d truncated from %d to %d tokens", position, len(ids),
                       self.max_length)
        keep = self.max_length - 1  # and the last token ([SEP])
        return ids[:keep] + ids[-1:], special[:keep] + special[-1:]

    def predict_minibatch(self, inputs: list[dict], **unused_kw) -> list[dict]:
        if not inputs:
            return []
        encoded = [self._check_length(*self._token_ids(ex), i) for i, ex in enumerate(inputs)]
        rows = [ids for ids, _ in encoded]
        special = [flags for _, flags in encoded]
        width = max(len(ids) for ids in rows)
        pad = pad_token_id_of(self.model, self.tokenizer)
        device = self.device
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            attention[i, :len(ids)] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        # positions of the non-special tokens of every row: what LIT sees as its tokens
        kept = [[p for p, s in enumerate(flags) if not s] for flags in special]

        embedding = self.model.get_input_embeddings()
        with eval_mode(self.model), torch.set_grad_enabled(self.compute_gradients):
            embeds = embedding(input_ids)
            given = [ex.get(EMBEDDINGS_FIELD) if self.compute_gradients else None
                     for ex in inputs]
            if any(g is not None for g in given):
                embeds = embeds.detach().clone()
                for i, vectors in enumerate(given):
                    if vectors is None:
                        continue
                    vectors = torch.as_tensor(np.asarray(vectors), dtype=embeds.dtype,
                                              device=device)
                    if vectors.shape != (len(kept[i]), embeds.shape[-1]):
                        raise ValueError(
                            f"example {i}: {EMBEDDINGS_FIELD} has shape {tuple(vectors.shape)} "
                            f"but its text has {len(kept[i])} tokens of width "
                            f"{embeds.shape[-1]}")
                    # special tokens keep their own embeddings; IG interpolates the words
                    embeds[i, kept[i]] = vectors
            if self.compute_gradients:
                embeds = embeds.detach().requires_grad_(True)
            # The ids go in too (their embeddings replaced by ``embeds``): a decoder classifier
            # such as GPT-2 finds each row's last real token by its pad id, which
            # ``inputs_embeds`` alone would hide from it.
            handle = embedding.register_forward_hook(
                this_thread_only(lambda _module, _args, _out: embeds))
            try:
                out = self.model(input_ids=input_ids, attention_mask=attention,
                                 output_hidden_states=True)
            finally:
                handle.remove()
            logits = out.logits if hasattr(out, "logits") else out[0]
            if logits.ndim != 2 or logits.shape[1] != len(self.labels):
                raise ValueError(f"the model returned logits of shape {tuple(logits.shape)}; "
                                 f"expected (batch, {len(self.labels)})")
            probs = torch.softmax(logits.float(), dim=-1)
            if torch.isnan(probs).any():
                raise FloatingPointError("the model returned NaN outputs for examples "
                                         f"{torch.isnan(probs).any(1).nonzero().flatten().tolist()}")
            targets = []
            for i, ex in enumerate(inputs):
                index = self.label_index(ex.get(LABEL_FIELD)) if self.compute_gradients else None
                targets.append(int(probs[i].argmax()) if index is None else index)
            grads = None
            if self.compute_gradients:
                chosen = probs[torch.arange(len(rows), device=device),
                               torch.tensor(targets, device=device)]
                (grads,) = torch.autograd.grad(chosen.sum(), embeds)
            hidden = out.hidden_states[-1] if getattr(out, "hidden_states", None) else None

        results = []
        for i, ids in enumerate(rows):
            tokens = self.tokenizer.convert_ids_to_tokens([ids[p] for p in kept[i]])
            result = {
                TOKENS_FIELD: list(tokens),
                PREDS_FIELD: probs[i].detach().cpu().numpy(),
                CLS_EMBEDDING_FIELD: (hidden[i, 0].detach().float().cpu().numpy()
                                      if hidden is not None else
                                      embeds[i, 0].detach().float().cpu().numpy()),
            }
            if self.compute_gradients:
                result[EMBEDDINGS_FIELD] = embeds[i, kept[i]].detach().float().cpu().numpy()
                result[GRADIENTS_FIELD] = grads[i, kept[i]].float().cpu().numpy()
                result[LABEL_FIELD] = self.labels[targets[i]]
            results.append(result)
        return results
