"""ContinuationErasure: prefix reuse equals recomputation (GPT-2 absolute positions, Llama
rotary), equals Captum's LLMAttribution(FeatureAblation), batching invariance, edge cases."""

import matplotlib
import pytest
import torch
from captum.attr import (
    FeatureAblation,
    LLMAttribution,
    LLMAttributionResult,
    TextTemplateInput,
    TextTokenInput,
)
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from captum_erasure import ContinuationErasure

matplotlib.use("Agg")
torch.set_num_threads(1)

WORDS = ["<unk>", "<pad>", "<s>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", ".",
         "big", "red", "and", "then", "it", "was"]
PROMPTS = ["the cat sat on the big red", "a dog ran . then it was", "the mat"]
TARGETS = ["mat .", "the big cat sat", "sat"]


def make_tokenizer(bos: bool = False, pad: bool = True) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    kwargs = {}
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 2)])
        kwargs["bos_token"] = "<s>"
    if pad:
        kwargs["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **kwargs)


def make_gpt2(dtype=torch.float64, positions=64):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(WORDS), n_positions=positions, n_embd=16, n_layer=2,
                        n_head=2, bos_token_id=2, eos_token_id=11, initializer_range=0.3)
    return GPT2LMHeadModel(config).to(dtype).eval()


def make_llama(dtype=torch.float64, positions=64):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=positions, bos_token_id=2, eos_token_id=11,
                         initializer_range=0.3)
    return LlamaForCausalLM(config).to(dtype).eval()


MODELS = {"gpt2": (make_gpt2, False), "llama": (make_llama, True)}


@pytest.fixture(params=sorted(MODELS))
def lm(request):
    build, bos = MODELS[request.param]
    return build, make_tokenizer(bos=bos)


def naive(model, tokenizer, prompt, target, mode, units=None):
    """Every variant recomputed from scratch, one at a time: (n_target, n_units) drops."""
    ids = tokenizer(prompt)["input_ids"]
    tgt = tokenizer.encode(target, add_special_tokens=False)
    offset = 1 if tokenizer.bos_token_id is not None else 0

    def log_probs(prompt_ids):
        with torch.no_grad():
            out = model(torch.tensor([prompt_ids + tgt])).logits[0].log_softmax(-1)
        return torch.stack([out[len(prompt_ids) - 1 + j, t] for j, t in enumerate(tgt)])

    base = log_probs(ids)
    drops = []
    for unit in range(len(ids) - offset):
        erased = list(ids)
        if mode == "delete":
            del erased[unit + offset]
            if not erased:
                erased = [tokenizer.bos_token_id]
        else:
            erased[unit + offset] = tokenizer.unk_token_id
        drops.append(base - log_probs(erased))
    return torch.stack(drops).T


@pytest.mark.parametrize("mode", ["delete", "replace"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_prefix_reuse_equals_recomputation(lm, mode, dtype, tol):
    build, tokenizer = lm
    model = build(dtype)
    reuse = ContinuationErasure(model, tokenizer, batch_size=5)
    full = ContinuationErasure(model, tokenizer, reuse_prefix=False)
    ours = reuse.attribute(PROMPTS, TARGETS, mode=mode)
    ref = full.attribute(PROMPTS, TARGETS, mode=mode)
    assert reuse.last_stats.reused_positions > 0 and full.last_stats.reused_positions == 0
    assert reuse.last_stats.real_token_positions < full.last_stats.real_token_positions
    for prompt, target, a, b in zip(PROMPTS, TARGETS, ours, ref):
        expected = naive(model, tokenizer, prompt, target, mode).double()
        torch.testing.assert_close(a.token_attr.double(), expected, rtol=0, atol=tol)
        torch.testing.assert_close(b.token_attr.double(), expected, rtol=0, atol=tol)
        torch.testing.assert_close(a.seq_attr.double(), expected.sum(0), rtol=0, atol=tol)


def test_eq1_is_the_drop_over_minus_log_likelihood(lm):
    build, tokenizer = lm
    method = ContinuationErasure(build(), tokenizer)
    diff = method.attribute(PROMPTS[0], TARGETS[0], score="log_prob_diff")
    eq1 = method.attribute(PROMPTS[0], TARGETS[0], score="eq1")
    log_p = method.last_result.examples[0].original_log_probs
    torch.testing.assert_close(eq1.token_attr, diff.token_attr / -log_p[:, None])
    torch.testing.assert_close(eq1.seq_attr, diff.seq_attr / -log_p.sum())


@pytest.mark.parametrize("mode", ["delete", "replace"])
def test_equals_captum_llm_attribution_feature_ablation(lm, mode):
    build, tokenizer = lm
    model = build(torch.float32)
    prompt, target = PROMPTS[0], TARGETS[0]
    if mode == "replace":  # Captum replaces tokens by a baseline id
        inp = TextTokenInput(prompt, tokenizer, baselines=tokenizer.unk_token_id,
                             skip_tokens=[tokenizer.bos_token_id] if tokenizer.bos_token_id
                             else None)
        units = "tokens"
    else:  # a template segment with baseline "" is deleted
        words = prompt.split()
        inp = TextTemplateInput(" ".join(["{}"] * len(words)), values=words)
        units = "words"
    # Captum's default cached token-by-token decode (use_cached_outputs=True) disagrees with
    # its own uncached paths under transformers 5 from the second target token on; both
    # uncached paths agree with each other and with a plain recomputation.
    theirs = LLMAttribution(FeatureAblation(model), tokenizer).attribute(
        inp, target=target, use_cached_outputs=False)
    one_pass = LLMAttribution(FeatureAblation(model), tokenizer).attribute(
        inp, target=target, forward_in_tokens=False)
    torch.testing.assert_close(one_pass.token_attr, theirs.token_attr, rtol=0, atol=1e-4)
    ours = ContinuationErasure(model, tokenizer).attribute(prompt, target, mode=mode,
                                                           units=units)
    assert isinstance(ours, LLMAttributionResult)
    torch.testing.assert_close(ours.token_attr, theirs.token_attr, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours.seq_attr, theirs.seq_attr, rtol=0, atol=1e-4)


def test_word_erasure_inside_llm_attribution_still_works():
    from captum_erasure import WordErasure

    model, tokenizer = make_gpt2(torch.float32), make_tokenizer()
    inp = TextTokenInput("the cat sat on the", tokenizer)
    ours = LLMAttribution(WordErasure(model), tokenizer).attribute(inp, target="mat .")
    assert ours.token_attr.shape == (2, 5)


@pytest.mark.parametrize("mode", ["delete", "replace"])
def test_batching_invariance_across_examples(lm, mode):
    build, tokenizer = lm
    model = build()
    together = ContinuationErasure(model, tokenizer, max_tokens=24).attribute(
        PROMPTS, TARGETS, mode=mode)
    alone = [ContinuationErasure(model, tokenizer, batch_size=1, group_size=1).attribute(
        p, t, mode=mode) for p, t in zip(PROMPTS, TARGETS)]
    small_groups = ContinuationErasure(model, tokenizer, group_size=2, batch_size=7).attribute(
        PROMPTS, TARGETS, mode=mode)
    for a, b, c in zip(together, alone, small_groups):
        torch.testing.assert_close(a.token_attr, b.token_attr, rtol=0, atol=1e-9)
        torch.testing.assert_close(a.token_attr, c.token_attr, rtol=0, atol=1e-9)


@pytest.mark.parametrize("mode", ["delete", "replace"])
def test_prompt_of_one_word_and_continuation_of_one_token(lm, mode):
    build, tokenizer = lm
    model = build()
    method = ContinuationErasure(model, tokenizer)
    if mode == "delete" and tokenizer.bos_token_id is None:
        with pytest.raises(ValueError, match="no context"):
            method.attribute("cat", "sat", mode=mode)
        return
    result = method.attribute("cat", "sat", mode=mode)
    assert result.token_attr.shape == (1, 1) and result.seq_attr.shape == (1,)
    torch.testing.assert_close(result.token_attr.double(),
                               naive(model, tokenizer, "cat", "sat", mode), rtol=0, atol=1e-9)


def test_prompt_longer_than_the_context_is_a_clear_error(lm):
    build, tokenizer = lm
    model = build(positions=8)
    with pytest.raises(ValueError, match="more than the model's context of 8"):
        ContinuationErasure(model, tokenizer).attribute("the cat sat on the big red mat", "sat")
    with pytest.raises(ValueError, match="context of 8"):
        ContinuationErasure(model, tokenizer).attribute("the cat sat on the big red mat . it")


def test_tokenizer_without_pad_token(lm):
    build, bos_tokenizer = lm
    tokenizer = make_tokenizer(bos=bos_tokenizer.bos_token_id is not None, pad=False)
    assert tokenizer.pad_token_id is None
    model = build()
    ours = ContinuationErasure(model, tokenizer, batch_size=4).attribute(PROMPTS, TARGETS)
    ref = ContinuationErasure(model, bos_tokenizer, batch_size=4).attribute(PROMPTS, TARGETS)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.token_attr, b.token_attr, rtol=0, atol=1e-9)


def test_contrastive_target_minus_foil(lm):
    build, tokenizer = lm
    method = ContinuationErasure(build(), tokenizer)
    both = method.attribute(PROMPTS[0], TARGETS[0], foil="dog ran .")
    target = method.attribute(PROMPTS[0], TARGETS[0])
    foil = method.attribute(PROMPTS[0], "dog ran .")
    torch.testing.assert_close(both.seq_attr, target.seq_attr - foil.seq_attr)
    assert both.token_attr.shape == (2 + 3, len(both.input_tokens))
    torch.testing.assert_close(both.token_attr.sum(0), both.seq_attr)
    assert both.output_tokens[2].startswith("foil:")
    with pytest.raises(ValueError, match="foil"):
        method.attribute(PROMPTS[0], TARGETS[0], foil="dog", score="eq1")


def test_generated_target_is_the_greedy_continuation(lm):
    build, tokenizer = lm
    model = build()
    method = ContinuationErasure(model, tokenizer)
    result = method.attribute(PROMPTS[0], max_new_tokens=4)
    ids = tokenizer(PROMPTS[0])["input_ids"]
    greedy = []
    with torch.no_grad():
        for _ in range(4):
            token = int(model(torch.tensor([ids + greedy])).logits[0, -1].argmax())
            greedy.append(token)
            if token == tokenizer.eos_token_id:
                break
    assert method.last_result.examples[0].target_ids == greedy
    assert len(result.output_tokens) == len(greedy)


def test_units_sentences_and_segments_and_plots(lm):
    build, tokenizer = lm
    method = ContinuationErasure(build(), tokenizer)
    sentences = method.attribute("the cat sat . a dog ran .", "then", units="sentences")
    assert sentences.input_tokens == ["the cat sat .", "a dog ran ."]
    segments = method.attribute(["the cat ", "sat on ", "the mat"], "then", units="segments")
    assert segments.input_tokens == ["the cat", "sat on", "the mat"]
    words = method.attribute("the cat sat on the mat", "then", units="words")
    # deleting a segment = deleting its words together
    assert segments.seq_attr.shape == (3,) and words.seq_attr.shape == (6,)
    fig, _ = segments.plot_token_attr()
    fig2, _ = segments.plot_seq_attr()
    matplotlib.pyplot.close(fig)
    matplotlib.pyplot.close(fig2)


def test_options_and_bad_arguments(lm):
    build, tokenizer = lm
    with pytest.raises(TypeError, match="unexpected keyword"):
        ContinuationErasure(build(), tokenizer, ppe=3)
    method = ContinuationErasure(build(), tokenizer, batch_size=2)
    assert method.batch_size == 2
    with pytest.raises(ValueError, match="mode"):
        method.attribute("the cat", "sat", mode="zero")
    with pytest.raises(ValueError, match="empty"):
        method.attribute("  ", "sat")
    with pytest.raises(ValueError, match="one target each"):
        method.attribute(["the cat", "a dog"], "sat")
