"""Lexical task builders (labels checked by hand), the section-3 MLP, its training strategies and
the erasure of its input dimensions and hidden units."""

import numpy as np
import pandas as pd
import pytest
import torch

from captum_erasure.paper.li2016.glove import glove_rank, is_plain_word
from captum_erasure.paper.li2016.lexical_mlp import (
    STRATEGIES,
    LexicalMLP,
    dimension_importance,
    dominance,
    train_lexical_model,
    unit_importance,
)
from captum_erasure.paper.li2016.lexical_tasks import (
    affix_task,
    frequency_class,
    frequency_task,
    make_task,
    prefix_of,
    sentiment_labels,
    sentiment_task,
    shape_class,
    suffix_of,
)
from captum_erasure.paper.li2016.training import torch_threads

KNOWN = {"happy", "write", "agree", "stand", "rated", "profit", "quick", "run", "make", "movie",
         "love", "try", "big", "player", "happiness", "nation", "do"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast and does not stall when the CPU is shared."""
    with torch_threads(1):
        yield


@pytest.mark.parametrize("word, prefix", [
    ("unhappy", "un"), ("rewrite", "re"), ("disagree", "dis"), ("understand", "under"),
    ("overrated", "over"), ("non-profit", "non"), ("nonprofit", "non"), ("include", None),
    ("happy", None), ("rerun", "re"), ("redo", None),  # "do" is too short a stem
])
def test_prefix_by_hand(word, prefix):
    assert prefix_of(word, KNOWN) == prefix


@pytest.mark.parametrize("word, suffix", [
    ("happiness", "ness"), ("quickly", "ly"), ("running", "ing"), ("making", "ing"),
    ("movies", "s"), ("loved", "ed"), ("tried", "ed"), ("bigger", "er"), ("players", "s"),
    ("unhappiness", None), ("the", None), ("nations", "s"),
])
def test_suffix_by_hand(word, suffix):
    assert suffix_of(word, KNOWN) == suffix


@pytest.mark.parametrize("word, shape", [("a", "X"), ("cat", "XXX"), ("o'clock", "XXXXXXX"),
                                         ("internationally", "XXXXXXXXXXXX+")])
def test_shape_by_hand(word, shape):
    assert shape_class(word) == shape


@pytest.mark.parametrize("rank, name", [(0, "rank 0-1,000"), (999, "rank 0-1,000"),
                                        (1000, "rank 1,000-3,000"),
                                        (250_000, "rank 100,000-400,000")])
def test_frequency_class_by_hand(rank, name):
    assert frequency_class(rank) == name


def test_sentiment_labels_from_a_hand_made_lexicon():
    lexicon = pd.DataFrame({"word": ["good", "bad", "meh", ":)", "qzxqzxq"],
                            "valence": [1.9, -2.5, 0.2, 2.0, 3.0]})
    labels = sentiment_labels(lexicon)
    assert labels["good"] == "positive" and labels["bad"] == "negative"
    assert "meh" not in labels and ":)" not in labels and "qzxqzxq" not in labels
    neutral = [w for w, c in labels.items() if c == "neutral"]
    assert len(neutral) == 1 and is_plain_word(neutral[0])
    anchor = min(glove_rank()["good"], glove_rank()["bad"])
    assert glove_rank()[neutral[0]] >= anchor  # the next unlisted word after a lexicon word


def test_real_tasks_label_hand_checked_words():
    sentiment = sentiment_task()
    assert sentiment.label_of("wonderful") == "positive"
    assert sentiment.label_of("horrible") == "negative"
    assert sentiment.class_names == ["negative", "neutral", "positive"]
    frequency = frequency_task()
    assert frequency.label_of("the") == "rank 0-1,000"
    assert len(set(frequency.class_counts())) == 1  # balanced bins
    prefix = affix_task("prefix", max_per_class=None)
    assert prefix.label_of("unhappy") == "un" and prefix.label_of("rewrite") == "re"
    assert prefix.label_of("the") is None


def test_make_task_caps_classes_and_splits():
    labelled = {f"w{i}": ("a" if i < 80 else "b") for i in range(100)}
    task = make_task("toy", labelled, max_per_class=30, seed=1)
    assert task.class_counts().to_dict() == {"a": 30, "b": 20}
    splits = pd.Series(task.splits).value_counts().to_dict()
    assert splits == {"train": 40, "dev": 5, "test": 5}
    again = make_task("toy", labelled, max_per_class=30, seed=1)
    assert again.words == task.words and (again.splits == task.splits).all()


def test_mlp_layers_and_removed_dimensions():
    model = LexicalMLP(3, removed_dims=(30, 25)).eval()
    assert set(model.hidden_layers()) == {"layer 1", "layer 2"}
    x = torch.randn(4, 50)
    changed = x.clone()
    changed[:, [30, 25]] = 99.0
    torch.testing.assert_close(model(x), model(changed))  # those inputs are never read


@pytest.fixture(scope="module")
def frequency_model():
    return train_lexical_model(frequency_task(), "vanilla", epochs=8, max_train=2000)


def test_training_beats_chance_on_a_small_subset(frequency_model):
    assert frequency_model.accuracy["test"] > 2 / 6  # 6 balanced classes
    assert 1 <= frequency_model.training.best_epoch <= 8


def test_dimension_importance_matches_manual_erasure(frequency_model):
    importance = dimension_importance(frequency_model, n_examples=40, seed=3)
    assert importance.count == 40 and importance.mean.shape == (50,)
    _, x, y = frequency_model.task.part("train")
    index = torch.from_numpy(np.random.default_rng(3).choice(len(y), 40, replace=False))
    x, y = x[index], y[index]
    model = frequency_model.model
    with torch.no_grad():
        full = torch.log_softmax(model(x).double(), -1)[torch.arange(40), y]
        erased_x = x.clone()
        erased_x[:, 30] = 0
        erased = torch.log_softmax(model(erased_x).double(), -1)[torch.arange(40), y]
    expected = ((full - erased) / -full).mean()
    assert importance.mean[30].item() == pytest.approx(expected.item(), rel=1e-4)


def test_unit_importance_per_layer(frequency_model):
    units = unit_importance(frequency_model, n_examples=20)
    assert set(units) == {"layer 1", "layer 2"}
    assert all(u.mean.shape == (50,) and u.count == 20 for u in units.values())


def test_removed_dimension_has_zero_importance():
    trained = train_lexical_model(frequency_task(), "without d30, d25", epochs=1, max_train=300)
    importance = dimension_importance(trained, n_examples=20)
    # Zero up to float noise: rows of different batches take slightly different kernels.
    assert abs(importance.mean[30]) < 1e-6 and abs(importance.mean[25]) < 1e-6
    assert STRATEGIES["dropout 0.2"]["dropout"] == 0.2
    with pytest.raises(ValueError, match="unknown strategy"):
        train_lexical_model(trained.task, "dropout 0.5")


def test_dominance_by_hand():
    values = np.zeros(50)
    values[[30, 25, 3]] = [8.0, 2.0, -1.0]
    found = dominance(values)
    assert found.top_dimension == 30 and found.top_share == pytest.approx(0.8)
    assert found.top_ratio == pytest.approx(4.0) and found.rank_of == {30: 1, 25: 2}
