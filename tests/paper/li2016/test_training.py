"""The shared training loop: learns, is reproducible, keeps the best dev epoch, skips frozen
parameters."""

import pytest
import torch
from torch import nn

from captum_erasure.paper.li2016.training import accuracy, predict, torch_threads, train_classifier


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


def toy_data(n=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def test_learns_and_is_reproducible():
    x, y = toy_data()
    runs = []
    for _ in range(2):
        model = toy_model()
        result = train_classifier(model, (x,), y, dev=((x[:100],), y[:100]), epochs=5,
                                  batch_size=16, lr=1e-2, show_progress=False)
        runs.append((model, result))
    assert accuracy(runs[0][0], (x,), y) > 0.9
    torch.testing.assert_close(runs[0][0][0].weight, runs[1][0][0].weight)
    assert runs[0][1].history == runs[1][1].history and len(runs[0][1].history) == 5


def test_restores_the_best_dev_epoch():
    x, y = toy_data()
    model = toy_model()
    result = train_classifier(model, (x,), y, dev=((x[:50],), 1 - y[:50]), epochs=4,
                              batch_size=32, lr=5e-2, show_progress=False)
    # Dev labels are flipped: the best dev epoch is the worst-trained one, and it is kept.
    best = max(result.history, key=lambda r: r["dev_accuracy"])
    assert result.best_epoch == best["epoch"]
    assert accuracy(model, (x[:50],), 1 - y[:50]) == pytest.approx(result.dev_accuracy)
    assert not model.training


def test_frozen_parameters_stay_and_batches_can_be_prepared():
    x, y = toy_data()
    model = toy_model()
    model[0].weight.requires_grad_(False)
    before = model[0].weight.clone()
    seen = []

    def prepare(rows):
        seen.append(len(rows[0]))
        return rows
    train_classifier(model, (x,), y, epochs=1, batch_size=100, prepare_batch=prepare,
                     show_progress=False)
    torch.testing.assert_close(model[0].weight, before)
    assert seen == [100] * 4
    assert predict(model, (x[:3],)).shape == (3,)


def test_rejects_mismatched_inputs():
    x, y = toy_data()
    with pytest.raises(ValueError, match="first axis"):
        train_classifier(toy_model(), (x[:10],), y, show_progress=False)
