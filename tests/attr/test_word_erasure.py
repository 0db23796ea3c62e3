"""WordErasure: exact Eq. 1 values, Captum equality, modes, batching invariance, bad input."""

import math

import pytest
import torch
from captum.attr import FeatureAblation
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

from captum_erasure import WordErasure, word_feature_mask, word_tokens


# -- a bag-of-words model whose log-probabilities can be written down by hand ----------------
class BagOfWords(torch.nn.Module):
    """logits = sum of per-token weight rows; token 0 (PAD) weighs nothing."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(4, 2)
        with torch.no_grad():
            self.emb.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]))

    def forward(self, ids, attention_mask):
        return (self.emb(ids) * attention_mask[..., None]).sum(1)


def log_p0(z0, z1):
    return -math.log1p(math.exp(z1 - z0))


@pytest.mark.parametrize("mode", ["replace", "delete", "attention", "zero"])
def test_eq1_exact_values_by_hand(mode):
    ids = torch.tensor([[1, 2, 3]])
    attn = torch.ones_like(ids)
    model = BagOfWords()
    attr = WordErasure(model, embedding_layer=model.emb, pad_token_id=0).attribute(
        ids, target=0, additional_forward_args=(attn,), mode=mode)
    full = log_p0(3, 1)                      # logits [3, 1]
    erased = [log_p0(2, 1), log_p0(3, 0), log_p0(1, 1)]
    expected = [(full - e) / -full for e in erased]
    torch.testing.assert_close(attr[0].double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)
    # Written out: erasing "3" (weight [2,0]) hurts class 0 most; erasing "2" helps it.
    torch.testing.assert_close(attr[0], torch.tensor([1.46800, -0.61721, 4.46088]),
                               rtol=1e-4, atol=1e-4)
    assert attr.min() >= -1


def test_other_scores_by_hand():
    ids, attn = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    method = WordErasure(BagOfWords(), pad_token_id=0)
    kwargs = dict(target=0, additional_forward_args=(attn,), mode="delete")
    full = log_p0(3, 1)
    erased = [log_p0(2, 1), log_p0(3, 0), log_p0(1, 1)]
    lp = method.attribute(ids, score="log_prob_diff", **kwargs)[0]
    torch.testing.assert_close(lp.double(), torch.tensor([full - e for e in erased],
                                                         dtype=torch.float64), rtol=1e-6, atol=1e-6)
    pd = method.attribute(ids, score="prob_diff", **kwargs)[0]
    torch.testing.assert_close(pd.double(), torch.tensor(
        [math.exp(full) - math.exp(e) for e in erased], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    ld = method.attribute(ids, score="logit_diff", **kwargs)[0]
    torch.testing.assert_close(ld, torch.tensor([1.0, 0.0, 2.0]))


def test_eq1_when_probability_is_one():
    """P(c|e) = 1 makes -log P = 0: the denominator is clamped, so a word whose erasure lowers
    P gets a huge positive score, and a word whose erasure changes nothing gets 0."""
    def probs_forward(ids, attn):
        has_3 = (ids == 3).any(1).float()
        return torch.stack([has_3 + (1 - has_3) * 0.5, (1 - has_3) * 0.5], 1)

    attr = WordErasure(probs_forward, output="probs").attribute(
        torch.tensor([[1, 3]]), target=0, additional_forward_args=(torch.ones(1, 2),),
        mode="replace")
    assert attr[0, 0] == 0
    assert attr[0, 1] > 1e9 and torch.isfinite(attr).all()


def test_target_none_is_the_predicted_class():
    ids, attn = torch.tensor([[2, 2, 1]]), torch.ones(1, 3, dtype=torch.long)
    method = WordErasure(BagOfWords())
    predicted = method.attribute(ids, additional_forward_args=(attn,))
    explicit = method.attribute(ids, target=1, additional_forward_args=(attn,))
    torch.testing.assert_close(predicted, explicit)


# -- a small random BERT and a word-piece tokenizer --------------------------------------
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "is", "good", "bad",
         "not", "un", "##believ", "##able", "a", "movie", "very", "dull", "fun", "!"]


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37, num_labels=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # larger weights so erasures move the output visibly
        model.classifier.weight.mul_(30)
        model.bert.pooler.dense.weight.mul_(3)
    return model


TEXTS = ["the film is unbelievable !", "a very dull movie", "not good"]


@pytest.fixture(scope="module")
def batch(tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return enc, word_feature_mask(enc)


def test_word_feature_mask_groups_pieces_and_skips_specials(tokenizer, batch):
    enc, mask = batch
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens[:6] == ["[CLS]", "the", "film", "is", "un", "##believ"]
    assert mask[0].tolist() == [-1, 0, 1, 2, 3, 3, 3, 4, -1]
    assert mask[2, -1] == -1  # padding
    assert word_tokens(tokens, mask[0]) == [(0, "the"), (1, "film"), (2, "is"),
                                           (3, "unbelievable"), (4, "!")]


def test_equals_captum_feature_ablation_replace_prob_diff(bert, batch):
    enc, mask = batch
    ids, attn = enc["input_ids"], enc["attention_mask"]
    targets = torch.tensor([0, 1, 2])
    ours = WordErasure(bert).attribute(ids, baselines=1, target=targets,
                                       additional_forward_args=(attn,), feature_mask=mask,
                                       score="prob_diff", mode="replace")
    # Captum has no "never erase" id: give specials/padding their own features, then zero them.
    captum_mask = torch.where(mask >= 0, mask, 100 + torch.arange(mask.shape[1]))
    theirs = FeatureAblation(lambda i, a: torch.softmax(bert(i, a).logits, -1)).attribute(
        ids, baselines=1, target=targets, additional_forward_args=(attn,),
        feature_mask=captum_mask, perturbations_per_eval=4)
    theirs = torch.where(mask >= 0, theirs, torch.zeros_like(theirs))
    assert ours.abs().max() > 1e-3  # the comparison is not between zeros
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_delete_equals_running_the_model_without_the_word(bert, tokenizer, batch):
    enc, mask = batch
    ids, attn = enc["input_ids"], enc["attention_mask"]
    attr = WordErasure(bert).attribute(ids, target=None, additional_forward_args=(attn,),
                                       feature_mask=mask, score="log_prob_diff", mode="delete")
    for row, text in enumerate(TEXTS):
        words = text.split()
        with torch.no_grad():
            full = tokenizer([text], return_tensors="pt")
            lp_full = torch.log_softmax(bert(**full).logits, -1)[0]
        target = int(lp_full.argmax())
        for w, word in enumerate(words):
            shorter = " ".join(words[:w] + words[w + 1:])
            with torch.no_grad():
                lp = torch.log_softmax(bert(**tokenizer([shorter], return_tensors="pt")).logits,
                                       -1)[0]
            expected = float(lp_full[target] - lp[target])
            got = attr[row][mask[row] == w]
            torch.testing.assert_close(got, torch.full_like(got, expected), rtol=1e-4, atol=1e-5)


def test_attention_mode_equals_masking_by_hand(bert, batch):
    enc, mask = batch
    ids, attn = enc["input_ids"][:1], enc["attention_mask"][:1]
    attr = WordErasure(bert).attribute(ids, target=0, additional_forward_args=(attn,),
                                       feature_mask=mask[:1], score="logit_diff",
                                       mode="attention")
    with torch.no_grad():
        full = bert(ids, attn).logits[0, 0]
        masked = attn.clone()
        masked[mask[:1] == 3] = 0
        expected = full - bert(ids, masked).logits[0, 0]
    torch.testing.assert_close(attr[0, 4], expected, rtol=1e-5, atol=1e-5)


def test_zero_mode_equals_zeroing_the_vector_by_hand(bert, batch):
    enc, mask = batch
    ids, attn = enc["input_ids"][:1], enc["attention_mask"][:1]
    attr = WordErasure(bert).attribute(ids, target=0, additional_forward_args=(attn,),
                                       feature_mask=mask[:1], score="logit_diff", mode="zero")
    erase = (mask[:1] == 1)[..., None]
    handle = bert.get_input_embeddings().register_forward_hook(
        lambda m, i, out: out.masked_fill(erase, 0.0))
    with torch.no_grad():
        zeroed = bert(ids, attn).logits[0, 0]
    handle.remove()
    with torch.no_grad():
        full = bert(ids, attn).logits[0, 0]
    torch.testing.assert_close(attr[0, 2], full - zeroed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["replace", "delete", "attention", "zero"])
def test_identical_across_chunk_sizes_and_packing(bert, batch, mode):
    enc, mask = batch
    ids, attn = enc["input_ids"], enc["attention_mask"]
    kwargs = dict(target=None, additional_forward_args=(attn,), feature_mask=mask, mode=mode)
    results = [WordErasure(bert, batch_size=bs).attribute(ids, **kwargs) for bs in (1, 3, 64)]
    results.append(WordErasure(bert, max_tokens=40).attribute(ids, **kwargs))
    one_by_one = torch.cat([
        WordErasure(bert, batch_size=2).attribute(
            ids[i:i + 1], target=None, additional_forward_args=(attn[i:i + 1],),
            feature_mask=mask[i:i + 1], mode=mode) for i in range(len(TEXTS))])
    for other in results[1:] + [one_by_one]:
        torch.testing.assert_close(other, results[0], rtol=1e-5, atol=1e-6)


def test_rows_and_forward_counts(bert, batch):
    enc, mask = batch
    method = WordErasure(bert, batch_size=64)
    method.attribute(enc["input_ids"], additional_forward_args=(enc["attention_mask"],),
                     feature_mask=mask)
    n_words = sum(len(set(m[m >= 0].tolist())) for m in mask)
    assert method.last_stats.rows == n_words + len(TEXTS)   # n+1 rows per example
    assert method.last_stats.forward_passes == 2            # originals, then one packed batch


def test_perturbations_per_eval_keeps_captum_meaning(bert, batch):
    enc, mask = batch
    method = WordErasure(bert)
    method.attribute(enc["input_ids"], additional_forward_args=(enc["attention_mask"],),
                     feature_mask=mask, perturbations_per_eval=1)
    n_words = sum(len(set(m[m >= 0].tolist())) for m in mask)
    assert method.last_stats.forward_passes == 1 + math.ceil(n_words / len(TEXTS))


def test_is_a_feature_ablation_with_tuple_inputs(bert, batch):
    enc, mask = batch
    method = WordErasure(bert)
    assert isinstance(method, FeatureAblation)
    out = method.attribute((enc["input_ids"],), additional_forward_args=(enc["attention_mask"],),
                           feature_mask=(mask,))
    assert isinstance(out, tuple) and out[0].shape == enc["input_ids"].shape


# -- bad input ------------------------------------------------------------------------------
def test_bad_input_errors(bert, batch):
    enc, mask = batch
    ids, attn = enc["input_ids"], enc["attention_mask"]
    method = WordErasure(bert)
    with pytest.raises(ValueError, match="outside the model's class range"):
        method.attribute(ids, target=7, additional_forward_args=(attn,), feature_mask=mask)
    with pytest.raises(ValueError, match="targets for 3 examples"):
        method.attribute(ids, target=[0, 1], additional_forward_args=(attn,), feature_mask=mask)
    with pytest.raises(ValueError, match="feature_mask shape"):
        method.attribute(ids, additional_forward_args=(attn,), feature_mask=mask[:, :4])
    with pytest.raises(ValueError, match="no erasable tokens"):
        method.attribute(ids, additional_forward_args=(attn,),
                         feature_mask=torch.full_like(mask, -1))
    with pytest.raises(ValueError, match="needs the attention mask"):
        method.attribute(ids, mode="delete")
    with pytest.raises(ValueError, match="unknown mode"):
        method.attribute(ids, additional_forward_args=(attn,), mode="drop")
    with pytest.raises(ValueError, match="unknown score"):
        method.attribute(ids, additional_forward_args=(attn,), score="eq2")
    with pytest.raises(TypeError, match="unexpected arguments"):
        method.attribute(ids, additional_forward_args=(attn,), sliding_window_shapes=(1,))


def test_nan_outputs_are_reported(batch):
    enc, mask = batch
    with pytest.raises(FloatingPointError, match="NaN"):
        WordErasure(lambda i, a: torch.full((i.shape[0], 2), float("nan"))).attribute(
            enc["input_ids"], additional_forward_args=(enc["attention_mask"],),
            feature_mask=mask)


def test_single_output_model_is_rejected_for_probability_scores():
    ids, attn = torch.tensor([[1, 2]]), torch.ones(1, 2)
    single = WordErasure(lambda i, a: i.float().sum(1, keepdim=True))
    with pytest.raises(ValueError, match="single output"):
        single.attribute(ids, additional_forward_args=(attn,))
    torch.testing.assert_close(
        single.attribute(ids, target=0, additional_forward_args=(attn,), score="logit_diff"),
        torch.tensor([[1.0, 2.0]]))


def test_numpy_integer_targets_are_accepted():
    np = pytest.importorskip("numpy")
    ids, attn = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    method = WordErasure(BagOfWords())
    torch.testing.assert_close(
        method.attribute(ids, target=np.array([0]), additional_forward_args=(attn,)),
        method.attribute(ids, target=0, additional_forward_args=(attn,)))


def test_word_feature_mask_rejects_slow_tokenizer_output(tokenizer):
    from transformers import BatchEncoding
    slow = BatchEncoding({"input_ids": [[2, 5, 3]]})  # what a slow tokenizer returns
    with pytest.raises(TypeError, match="fast"):
        word_feature_mask(slow)
