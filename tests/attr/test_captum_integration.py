"""WordErasure inside Captum's LLMAttribution, and the CUDA path (skipped without a GPU)."""

import pytest
import torch
from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from captum_erasure import WordErasure

WORDS = ["<unk>", "<pad>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "."]


@pytest.fixture(scope="module")
def causal_lm():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(WORDS), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=2, eos_token_id=10)
    model = GPT2LMHeadModel(config).eval()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                        pad_token="<pad>")
    return model, tokenizer


def test_llm_attribution_accepts_word_erasure_and_matches_feature_ablation(causal_lm):
    model, tokenizer = causal_lm
    inp = TextTokenInput("the cat sat on the", tokenizer)
    ours = LLMAttribution(WordErasure(model), tokenizer).attribute(inp, target="mat .")
    theirs = LLMAttribution(FeatureAblation(model), tokenizer).attribute(inp, target="mat .")
    assert ours.seq_attr.shape == (5,)
    assert ours.token_attr.shape == (2, 5)
    assert ours.seq_attr.abs().sum() > 0
    torch.testing.assert_close(ours.seq_attr, theirs.seq_attr, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.token_attr, theirs.token_attr, rtol=1e-4, atol=1e-5)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.cuda
def test_cuda_results_equal_cpu_and_autocast_runs():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, num_labels=2)).eval()
    ids = torch.randint(5, 40, (4, 12))
    attn = torch.ones_like(ids)
    cpu = WordErasure(model).attribute(ids, additional_forward_args=(attn,), mode="delete",
                                       score="log_prob_diff")
    model.cuda()
    gpu = WordErasure(model).attribute(ids.cuda(), additional_forward_args=(attn.cuda(),),
                                       mode="delete", score="log_prob_diff")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)
    half = WordErasure(model, autocast=True).attribute(
        ids.cuda(), additional_forward_args=(attn.cuda(),), mode="delete", score="log_prob_diff")
    assert torch.isfinite(half).all()
    model.cpu()
