"""HiddenUnitErasure: manual-hook equality, exact values, RNNs, BERT layers, batching, datasets."""

import math
import os

import pytest
import torch
from captum.attr import LayerFeatureAblation
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from captum_erasure.attr._unit_erasure import DatasetImportance
from captum_erasure.attr.layer.hidden_units import HiddenUnitErasure

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from conftest import eq1_under_hook  # noqa: E402

TIGHT = dict(rtol=1e-5, atol=1e-6)


# -- reference: Eq. 1 with a hand-written hook ------------------------------------------------
def manual_eq1(model, module, args, unit, target, also_final_state=False):
    """Eq. 1 per example when ``unit`` of ``module``'s output is zeroed by our own hook."""
    def hook(mod, inputs, output):
        act = (output[0] if isinstance(output, tuple) else output).clone()
        act[..., unit] = 0.0
        if not isinstance(output, tuple):
            return act
        state = output[1]
        if also_final_state:  # unidirectional RNN: h_n of the last layer
            h = (state[0] if isinstance(state, tuple) else state).clone()
            h[-1, :, unit] = 0.0
            state = (h, state[1]) if isinstance(state, tuple) else h
        return (act, state, *output[2:])

    return eq1_under_hook(model, module, hook, args, target)


def manual_all_units(model, module, args, n_units, target):
    return torch.stack([manual_eq1(model, module, args, u, target) for u in range(n_units)], 1)


# -- models -----------------------------------------------------------------------------------
class MLP(nn.Module):
    """Li et al. section 3: input -> 2 tanh hidden layers -> output."""

    def __init__(self, d_in=6, hidden=5, classes=3):
        super().__init__()
        self.lin1, self.act1 = nn.Linear(d_in, hidden), nn.Tanh()
        self.lin2, self.act2 = nn.Linear(hidden, hidden), nn.Tanh()
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.out(self.act2(self.lin2(self.act1(self.lin1(x)))))


class RNNClassifier(nn.Module):
    """Embedding -> recurrent layer -> mean over time -> linear (batch-first inputs)."""

    def __init__(self, cell="lstm", batch_first=True, bidirectional=False, hidden=4):
        super().__init__()
        self.batch_first = batch_first
        self.emb = nn.Embedding(12, 5)
        kind = {"lstm": nn.LSTM, "rnn": nn.RNN, "gru": nn.GRU}[cell]
        self.rnn = kind(5, hidden, batch_first=batch_first, bidirectional=bidirectional)
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), 3)

    def forward(self, ids):
        x = self.emb(ids)
        if not self.batch_first:
            x = x.transpose(0, 1)
        seq, _ = self.rnn(x)
        if not self.batch_first:
            seq = seq.transpose(0, 1)
        return self.out(seq.mean(1))


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=20, num_labels=2)
    return BertForSequenceClassification(config).eval()


@pytest.fixture
def mlp_data():
    torch.manual_seed(1)
    return MLP().eval(), torch.randn(4, 6)


# -- equality with manual zeroing ---------------------------------------------------------------
def test_mlp_layers_equal_manual_hooks(mlp_data):
    model, x = mlp_data
    layers = {"hidden1": model.act1, "hidden2": model.act2, "pre2": model.lin2}
    attr = HiddenUnitErasure(model, layers).attribute(x, target=2)
    assert list(attr) == list(layers) and all(a.shape == (4, 5) for a in attr.values())
    for name, module in layers.items():
        torch.testing.assert_close(attr[name].double(), manual_all_units(model, module, (x,), 5,
                                                                         2), **TIGHT)


def test_exact_values_by_hand():
    """Hidden h = x (identity layer), logits = W h: erasing unit k removes column k."""
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
        model[1].weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]]))
    x = torch.tensor([[1.0, 2.0, -1.0]])  # logits [-1, 3]

    def log_p0(z0, z1):
        return -math.log1p(math.exp(z1 - z0))

    full = log_p0(-1, 3)
    erased = [log_p0(-2, 3), log_p0(-1, 1), log_p0(1, 2)]  # without unit 0, 1, 2
    expected = torch.tensor([[(full - e) / -full for e in erased]])
    attr = HiddenUnitErasure(model, model[0]).attribute(x, target=0)
    torch.testing.assert_close(attr.double(), expected.double(), rtol=1e-6, atol=1e-6)
    # Written out: unit 0 supports class 0; units 1 and 2 (x2 < 0) push towards class 1, so
    # erasing them helps class 0 (Eq. 1 is bounded below by -1).
    torch.testing.assert_close(attr, torch.tensor([[0.24603, -0.47067, -0.67317]]),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell,batch_first,bidirectional", [
    ("lstm", True, False), ("lstm", False, False), ("lstm", True, True), ("lstm", False, True),
    ("rnn", True, False), ("rnn", False, True), ("gru", False, False)])
def test_recurrent_layers_equal_manual_hooks(cell, batch_first, bidirectional):
    torch.manual_seed(2)
    model = RNNClassifier(cell, batch_first, bidirectional).eval()
    ids = torch.randint(0, 12, (3, 7))
    attr = HiddenUnitErasure(model, model.rnn).attribute(ids, target=[0, 1, 2])
    units = 8 if bidirectional else 4
    assert attr.shape == (3, units)
    expected = manual_all_units(model, model.rnn, (ids,), units, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(attr.double(), expected, **TIGHT)


def test_captum_layer_feature_ablation_fails_on_lstm():
    """Why this class exists: Captum assumes the layer returns one tensor."""
    model = RNNClassifier("lstm").eval()
    ids = torch.randint(0, 12, (2, 5))
    with pytest.raises(AttributeError, match="tuple"):
        LayerFeatureAblation(model, model.rnn).attribute(ids, target=0)
    assert HiddenUnitErasure(model, model.rnn).attribute(ids, target=0).shape == (2, 4)


class FinalStateLSTM(RNNClassifier):
    """Same network read through h_n (or the matching output steps) instead of a mean."""

    def __init__(self, read_final_state, bidirectional):
        super().__init__("lstm", batch_first=True, bidirectional=bidirectional)
        self.read_final_state = read_final_state

    def forward(self, ids):
        seq, (h_n, _) = self.rnn(self.emb(ids))
        if self.read_final_state:
            last = torch.cat(list(h_n[-2:]), -1) if self.rnn.bidirectional else h_n[-1]
        else:
            hidden = self.rnn.hidden_size
            last = seq[:, -1] if not self.rnn.bidirectional else \
                torch.cat([seq[:, -1, :hidden], seq[:, 0, hidden:]], -1)
        return self.out(last)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_final_state_is_erased_like_the_output(bidirectional):
    torch.manual_seed(3)
    via_output = FinalStateLSTM(False, bidirectional).eval()
    via_state = FinalStateLSTM(True, bidirectional).eval()
    via_state.load_state_dict(via_output.state_dict())
    ids = torch.randint(0, 12, (3, 6))
    a = HiddenUnitErasure(via_output, via_output.rnn).attribute(ids, target=1)
    b = HiddenUnitErasure(via_state, via_state.rnn).attribute(ids, target=1)
    assert a.abs().min() > 0
    torch.testing.assert_close(a, b, **TIGHT)


def test_rnn_final_state_erasure_is_eq1_with_h_n_zeroed_too():
    torch.manual_seed(3)
    via_output = FinalStateLSTM(False, False).eval()
    via_state = FinalStateLSTM(True, False).eval()
    via_state.load_state_dict(via_output.state_dict())
    ids = torch.randint(0, 12, (3, 6))
    a = HiddenUnitErasure(via_state, via_state.rnn).attribute(ids, target=1)
    expected = manual_all_units(via_state, via_state.rnn, (ids,), 4, 1)
    assert not torch.allclose(expected, a.double())  # h_n untouched: wrong answer
    fixed = torch.stack([manual_eq1(via_state, via_state.rnn, (ids,), u, 1, True)
                         for u in range(4)], 1)
    torch.testing.assert_close(a.double(), fixed, **TIGHT)


def test_tiny_bert_two_encoder_layers_at_once():
    model = tiny_bert()
    torch.manual_seed(4)
    ids = torch.randint(1, 60, (3, 6))
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    layers = model.bert.encoder.layer
    method = HiddenUnitErasure(model, layers)
    attr = method.attribute(ids, target=1, additional_forward_args=(mask,))
    assert isinstance(attr, tuple) and [a.shape for a in attr] == [(3, 16), (3, 16)]
    for layer, a in zip(layers, attr):
        torch.testing.assert_close(a.double(), manual_all_units(model, layer, (ids, mask), 16, 1),
                                   **TIGHT)
    # 1 probe row (BertLayer states no width) + 3 originals + 3 x 32 erasures.
    assert method.last_stats.rows == 1 + 3 + 3 * 32


# -- batching and packing invariance -----------------------------------------------------------
def test_batch_size_and_packing_invariance():
    model = tiny_bert()
    torch.manual_seed(5)
    ids = torch.randint(1, 60, (3, 5))
    mask = torch.ones_like(ids)
    layers = {"l0": model.bert.encoder.layer[0], "l1": model.bert.encoder.layer[1]}
    results = []
    for batch_size in (1, 3, 64):
        method = HiddenUnitErasure(model, layers, batch_size=batch_size)
        results.append(method.attribute(ids, additional_forward_args=(mask,)))
    results.append(HiddenUnitErasure(model, layers, max_tokens=17).attribute(
        ids, additional_forward_args=(mask,)))
    results.append(HiddenUnitErasure(model, layers).attribute(
        ids, additional_forward_args=(mask,), perturbations_per_eval=2))
    one_by_one = [HiddenUnitErasure(model, layers).attribute(
        ids[i:i + 1], additional_forward_args=(mask[i:i + 1],)) for i in range(3)]
    results.append({k: torch.cat([r[k] for r in one_by_one]) for k in layers})
    for other in results[1:]:
        for name in layers:
            torch.testing.assert_close(other[name], results[0][name], **TIGHT)


def test_batches_mix_layers_and_examples():
    model = MLP().eval()
    x = torch.randn(3, 6)
    method = HiddenUnitErasure(model, [model.act1, model.act2], batch_size=7)
    a1, a2 = method.attribute(x)
    # nn.Tanh states no width: 1 probe forward, then 1 for the originals, then 30 rows by 7.
    assert method.last_stats.forward_passes == 1 + 1 + math.ceil(3 * 10 / 7)
    alone = [HiddenUnitErasure(model, m).attribute(x) for m in (model.act1, model.act2)]
    torch.testing.assert_close(a1, alone[0], **TIGHT)
    torch.testing.assert_close(a2, alone[1], **TIGHT)


# -- dataset average -----------------------------------------------------------------------------
def test_attribute_dataset_is_the_mean_of_per_example_scores(mlp_data):
    model, _ = mlp_data
    torch.manual_seed(6)
    batches = [torch.randn(n, 6) for n in (3, 1, 4)]
    targets = [torch.tensor([0, 1, 2]), torch.tensor([1]), torch.tensor([2, 2, 0, 1])]
    layers = {"h1": model.act1, "h2": model.act2}
    method = HiddenUnitErasure(model, layers)
    per_example = [method.attribute(x, target=t) for x, t in zip(batches, targets)]
    stacked = {k: torch.cat([p[k] for p in per_example]).double() for k in layers}
    result = method.attribute_dataset((x, None, t) for x, t in zip(batches, targets))
    for name in layers:
        assert isinstance(result[name], DatasetImportance) and result[name].count == 8
        torch.testing.assert_close(result[name].mean, stacked[name].mean(0), **TIGHT)
        torch.testing.assert_close(result[name].std, stacked[name].std(0), rtol=1e-5,
                                   atol=1e-6)
    # Batch conventions: bare tensors (predicted class) and a call-level int target.
    predicted = method.attribute_dataset(batches)
    torch.testing.assert_close(
        predicted["h1"].mean,
        torch.cat([method.attribute(x)["h1"] for x in batches]).double().mean(0), **TIGHT)
    fixed = method.attribute_dataset([(x,) for x in batches], target=1)
    torch.testing.assert_close(
        fixed["h2"].mean,
        torch.cat([method.attribute(x, target=1)["h2"] for x in batches]).double().mean(0),
        **TIGHT)


def test_attribute_dataset_with_a_dataloader():
    model = tiny_bert()
    torch.manual_seed(7)
    ids = torch.randint(1, 60, (5, 4))
    mask, labels = torch.ones_like(ids), torch.tensor([0, 1, 1, 0, 1])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(ids, mask, labels), batch_size=2)
    layer = model.bert.encoder.layer[1]
    method = HiddenUnitErasure(model, layer)
    result = method.attribute_dataset(loader)
    full = method.attribute(ids, target=labels, additional_forward_args=(mask,)).double()
    assert result.count == 5 and result.mean.shape == (16,)
    torch.testing.assert_close(result.mean, full.mean(0), **TIGHT)


# -- bad input ---------------------------------------------------------------------------------
def test_wrong_target_raises(mlp_data):
    model, x = mlp_data
    method = HiddenUnitErasure(model, model.act1)
    with pytest.raises(ValueError, match="outside"):
        method.attribute(x, target=3)
    with pytest.raises(ValueError, match="targets"):
        method.attribute(x, target=[0, 1])
    with pytest.raises(TypeError, match="attribute_dataset's target must be None or an int"):
        method.attribute_dataset([x], target=[0, 1, 2, 0])


def test_nan_output_raises(mlp_data):
    model, x = mlp_data
    x = x.clone()
    x[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"NaN or infinite values in 1 of 4 rows"):
        HiddenUnitErasure(model, model.act1).attribute(x)


def test_layer_off_the_forward_path_raises(mlp_data):
    model, x = mlp_data
    with pytest.raises(ValueError, match="did not run"):
        HiddenUnitErasure(model, nn.Tanh()).attribute(x)
    with pytest.raises(TypeError, match="layers must be a module, or a non-empty list"):
        HiddenUnitErasure(model, [])
    with pytest.raises(ValueError, match="twice"):
        HiddenUnitErasure(model, [model.act1, model.act1])
