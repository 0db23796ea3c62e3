"""The offline default MLM: masking, masked-position logits, training, evaluation, the build
and the cache, on a tiny random BERT (MiniLM is never trained here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlm_toys import toy_classifier, toy_tokenizer
from transformers import AutoModelForMaskedLM, BertConfig, BertModel

from captum_erasure.attr.marginalization import InputMarginalization
from captum_erasure.models import default_mlm as dmlm

SENTENCES = ["the movie was good", "the film was bad", "a movie is fun", "the plot was dull",
             "a film is very good", "the movie is not boring"]


@pytest.fixture(scope="module")
def tokenizer():
    return toy_tokenizer()


@pytest.fixture()
def encoder_dir(tmp_path: Path, tokenizer) -> Path:
    """A tiny random BERT encoder saved like the MiniLM package's folder."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=48, max_position_embeddings=32)
    BertModel(config).save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    return tmp_path / "encoder"


def test_masking_follows_bert(tokenizer):
    ids = torch.randint(5, 25, (400, 50))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False
    masked, picked = dmlm.mask_tokens(ids, maskable, mask_token_id=4, vocab_size=25,
                                      generator=torch.Generator().manual_seed(0))
    assert not picked[:, 0].any()
    assert picked.float().mean().item() == pytest.approx(0.15 * 49 / 50, abs=0.01)
    became_mask = (masked[picked] == 4).float().mean().item()
    unchanged = (masked[picked] == ids[picked]).float().mean().item()
    assert became_mask == pytest.approx(0.8, abs=0.03)
    assert unchanged == pytest.approx(0.1 + 0.1 / 25, abs=0.03)
    assert torch.equal(masked[~picked], ids[~picked])
    short = torch.tensor([[2, 7, 3]])  # one maskable token: it is always picked
    _, picked = dmlm.mask_tokens(short, short >= 5, mask_token_id=4, vocab_size=25,
                                 generator=torch.Generator().manual_seed(1),
                                 mask_probability=0.0, corrupt=False)
    assert picked.tolist() == [[False, True, False]]


def test_masked_position_logits_equal_the_full_forward(encoder_dir, tokenizer):
    model = dmlm.mlm_from_encoder(encoder_dir, tokenizer).eval()
    enc = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    picked = torch.zeros_like(enc["input_ids"], dtype=torch.bool)
    picked[:, 2] = True
    picked[0, 3] = True
    with torch.no_grad():
        full = model(**enc).logits[picked]
        ours = dmlm.masked_position_logits(model, enc["input_ids"], enc["attention_mask"],
                                           picked)
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-5)


def test_fresh_head_is_tied_and_carries_the_token_ids(encoder_dir, tokenizer):
    model = dmlm.mlm_from_encoder(encoder_dir, tokenizer)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.config.mask_token_id == tokenizer.mask_token_id == 4
    encoder = BertModel.from_pretrained(encoder_dir)
    torch.testing.assert_close(model.bert.encoder.layer[0].output.dense.weight,
                               encoder.encoder.layer[0].output.dense.weight)


def test_training_learns_a_toy_corpus(encoder_dir, tokenizer):
    model = dmlm.mlm_from_encoder(encoder_dir, tokenizer)
    texts = SENTENCES * 20
    dmlm.init_bias_from_unigrams(model, dmlm._encode(tokenizer, texts, 16))
    before = dmlm.evaluate_mlm(model, tokenizer, SENTENCES * 5)
    dmlm.train_mlm(model, tokenizer, texts, steps=120, batch_size=16, lr=3e-3,
                   show_progress=False)
    after = dmlm.evaluate_mlm(model, tokenizer, SENTENCES * 5)
    assert not model.training
    assert after["top1"] > before["top1"] + 0.1 and after["top5"] >= 0.8
    single = dmlm.evaluate_single_mask(model, tokenizer, SENTENCES, batch_size=5)
    assert single["n_masked"] == sum(len(s.split()) for s in SENTENCES)
    assert 0 <= single["top1"] <= single["top5"] <= 1


def test_heldout_split_is_the_rotten_tomatoes_test_split():
    assert dmlm.is_heldout_snippet("movie", 20)
    assert not dmlm.is_heldout_snippet("movie", 21)
    assert not dmlm.is_heldout_snippet("amazon", "10_0")


def test_build_saves_a_loadable_masked_lm(monkeypatch, tmp_path, encoder_dir, tokenizer):
    monkeypatch.setenv("CAPTUM_ERASURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dmlm, "base_model_path", lambda: encoder_dir)
    monkeypatch.setattr(dmlm, "mlm_texts", lambda heldout: SENTENCES[:2] if heldout
                        else SENTENCES[2:] * 4)
    model, _, info = dmlm.build_default_mlm(show_progress=False, steps=3, batch_size=4)
    target = tmp_path / "cache" / "models" / dmlm.DEFAULT_MLM_DIRNAME
    assert dmlm.default_mlm_dir() == target
    assert (target / "model.safetensors").is_file()
    saved = json.loads((target / "info.json").read_text())
    assert saved == info == dmlm.default_mlm_info()
    for key in ("heldout_top1", "heldout_top5", "single_mask_top5", "steps", "seconds"):
        assert key in info
    assert info["steps"] == 3 and info["n_heldout_texts"] == 2
    assert json.loads((target / "config.json").read_text())["mask_token_id"] == 4
    # The cache loads like any hub MLM, and its config alone tells marginalisation the ids.
    loaded = AutoModelForMaskedLM.from_pretrained(target).eval()
    enc = tokenizer(["a good movie"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc).logits, model(**enc).logits)
    monkeypatch.setattr(dmlm, "build_default_mlm", lambda **kw: pytest.fail("rebuilt"))
    cached, cached_tokenizer = dmlm.load_default_mlm()
    assert cached_tokenizer.mask_token_id == 4
    method = InputMarginalization(toy_classifier(), cached)  # no tokenizer needed
    assert method.tokens.mask_token_id == 4 and set(method.tokens.special_ids) == {0, 1, 2, 3, 4}


@pytest.mark.slow
def test_the_built_default_mlm():
    """Sanity check of the real default MLM; skipped until load_default_mlm() has built it."""
    if not (dmlm.default_mlm_dir() / dmlm.INFO_FILENAME).is_file():
        pytest.skip("default MLM not built yet")
    info = dmlm.default_mlm_info()
    assert info["heldout_top5"] >= info["heldout_top1"] > 0.2
    model, tokenizer = dmlm.load_default_mlm()
    assert model.config.vocab_size == len(tokenizer) == 30522
    enc = tokenizer(["the movie was [MASK] good ."], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0, 4]
    assert tokenizer.convert_ids_to_tokens(int(logits.argmax())) not in tokenizer.all_special_tokens
