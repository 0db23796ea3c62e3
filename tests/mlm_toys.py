"""Offline toys for the MLM-based methods: a WordPiece tokenizer with ``[MASK]``, a tiny random
BERT classifier and a tiny random ``BertForMaskedLM`` over the same small vocabulary (small
enough to enumerate), and a hand-written MLM and classifier whose numbers are known."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "movie", "film", "was", "is", "good", "great", "bad", "boring", "not",
         "very", "plot", "fun", "dull", "and", "un", "##believ", "##able", "!"]
VOCAB = SPECIALS + WORDS
TEXTS = ["the film is unbelievable !", "a very dull movie", "not good", "fun"]


def toy_tokenizer(vocab: list[str] = VOCAB) -> PreTrainedTokenizerFast:
    ids = {token: i for i, token in enumerate(vocab)}
    backend = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def _config(vocab_size: int, **overrides) -> BertConfig:
    settings = dict(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                    initializer_range=0.5)
    settings.update(overrides)
    return BertConfig(**settings)


def toy_classifier(seed: int = 0, num_labels: int = 3,
                   vocab_size: int = len(VOCAB)) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(_config(vocab_size, num_labels=num_labels)).eval()


def toy_mlm(seed: int = 1, vocab_size: int = len(VOCAB)) -> BertForMaskedLM:
    """Random MLM; large weights so that its distributions are far from uniform."""
    torch.manual_seed(seed)
    return BertForMaskedLM(_config(vocab_size, initializer_range=0.3)).eval()


class TableMLM(torch.nn.Module):
    """Predicts a fixed distribution at ``[MASK]`` positions and a flat one elsewhere (so a
    method that forgets to place ``[MASK]`` gets different numbers). No output embeddings."""

    def __init__(self, probs: list[float], mask_token_id: int) -> None:
        super().__init__()
        table = torch.tensor(probs, dtype=torch.float64)
        self.register_buffer("log_table", table.clamp_min(1e-30).log().float())
        self.mask_token_id = mask_token_id
        self.config = SimpleNamespace(vocab_size=len(probs))  # like an HF config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        flat = torch.zeros(*input_ids.shape, len(self.log_table))
        at_mask = (input_ids == self.mask_token_id)[..., None]
        return torch.where(at_mask, self.log_table.expand_as(flat), flat)
