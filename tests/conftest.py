"""Shared offline fixtures: a tiny WordPiece fast tokenizer and tiny random BERT classifiers.

Nothing is downloaded: the tokenizer is built with the ``tokenizers`` library from a small
vocabulary (BERT normaliser and pre-tokenizer, ``[CLS] ... [SEP]`` post-processor, so
``word_ids()`` works), and models are ``BertForSequenceClassification`` built from a config with
random weights. ``initializer_range`` is large so that erasing a word visibly changes the
output (BERT's default 0.02 gives almost constant predictions).

Fixtures:
    tiny_tokenizer: ``PreTrainedTokenizerFast`` over ``TINY_VOCAB``; "unbelievable" is split
        into ``un ##believ ##able`` (one word, three pieces).
    make_tiny_model: factory ``make_tiny_model(seed=0, **config_overrides)`` returning a model
        in eval mode with 3 labels (neg/neu/pos) and 64 positions.
    tiny_model: ``make_tiny_model()``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub from tests

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast  # noqa: E402

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
TINY_VOCAB = SPECIAL_TOKENS + [
    "the", "a", "movie", "film", "was", "is", "good", "great", "bad", "boring", "not", "very",
    "plot", "acting", "fun", "dull", "and", "but", "i", "liked", "it", "un", "##believ", "##able",
    "##s", ",", ".", "!", "<", ">", "/", "script",
]
LABELS = {0: "neg", 1: "neu", 2: "pos"}


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Lower-casing WordPiece tokenizer over ``TINY_VOCAB`` with BERT-style specials."""
    vocab = {token: i for i, token in enumerate(TINY_VOCAB)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                   pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]")


def build_tiny_model(seed: int = 0, **overrides) -> BertForSequenceClassification:
    """Random 2-layer BERT classifier (hidden 16) in eval mode; ``overrides`` go to the config."""
    settings = dict(vocab_size=len(TINY_VOCAB), hidden_size=16, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                    num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()},
                    initializer_range=0.5)
    settings.update(overrides)
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(**settings)).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def make_tiny_model():
    return build_tiny_model


@pytest.fixture(scope="session")
def tiny_model() -> BertForSequenceClassification:
    return build_tiny_model()


def eq1_under_hook(model, module, hook, args, target):
    """Reference Eq. 1 per example: ``model(*args)`` with and without ``hook`` on ``module``'s
    forward, computed by hand (no engine), for checking the unit erasures."""
    def logits_of(output):
        return output if isinstance(output, torch.Tensor) else output.logits

    with torch.no_grad():
        full = torch.log_softmax(logits_of(model(*args)).double(), -1)
        handle = module.register_forward_hook(hook)
        try:
            erased = torch.log_softmax(logits_of(model(*args)).double(), -1)
        finally:
            handle.remove()
    rows = torch.arange(full.shape[0])
    return (full[rows, target] - erased[rows, target]) / -full[rows, target]
