"""WordErasure as a drop-in FeatureAblation: calls that are not the token-id text case get
FeatureAblation's own behaviour, and the text path keeps Captum's shapes and dtypes."""

import io

import pytest
import torch
from captum.attr import FeatureAblation

from captum_erasure import PerturbationEngine, Row, WordErasure

IDS = torch.tensor([[1, 2, 3, 0], [3, 3, 1, 2]])
WEIGHTS = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0], [3.0, 0.25]])


def bag_of_words(ids, dtype=torch.float32):
    """(rows, 2) logits: the sum of per-token weight rows."""
    return WEIGHTS.to(dtype)[ids].sum(1)


def assert_identical(ours, theirs):
    assert type(ours) is type(theirs)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,),
                    theirs if isinstance(theirs, tuple) else (theirs,)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.equal(a, b)


# -- calls FeatureAblation's own code answers ------------------------------------------------
def test_several_inputs_are_handed_to_feature_ablation():
    def forward(x, y):
        return (x * torch.tensor([1.0, 2.0, 3.0])).sum(1) + (y ** 2).sum(1)

    x, y = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), torch.tensor([[1.0, -2.0]] * 2)
    mask = (torch.tensor([[0, 1, 1]]), torch.tensor([[2, 3]]))
    method = WordErasure(forward)
    ours = method.attribute((x, y), target=None, feature_mask=mask)
    theirs = FeatureAblation(forward).attribute((x, y), target=None, feature_mask=mask)
    assert_identical(ours, theirs)
    assert method.last_stats is None  # the packed engine did not run
    with pytest.raises(ValueError, match="one input tensor"):
        method.attribute((x, y), score="logit_diff", target=0)


@pytest.mark.parametrize("forward", [
    lambda ids: bag_of_words(ids).sum(),                 # 0-d tensor for the whole batch
    lambda ids: float(bag_of_words(ids).sum()),          # a Python float
    lambda ids: bag_of_words(ids).sum(0, keepdim=True),  # (1, 2) for the batch
    lambda ids: bag_of_words(ids).sum(0),  # (2,): looks per-row for 2 rows, not for more
], ids=["tensor_0d", "python_float", "aggregated", "aggregated_like_rows"])
def test_token_ids_with_a_batch_level_output_get_feature_ablation_results(forward):
    ours = WordErasure(forward).attribute(IDS, score="output_diff", target=None)
    theirs = FeatureAblation(forward).attribute(IDS, target=None)
    assert_identical(ours, theirs)


def test_batch_level_output_with_a_text_score_still_errors():
    with pytest.raises(ValueError, match="one row of outputs per input row"):
        WordErasure(lambda ids: bag_of_words(ids).sum(0, keepdim=True)).attribute(IDS, target=0)


def test_float_inputs_and_float_baselines_get_feature_ablation_results():
    forward = torch.nn.Linear(4, 3).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    assert_identical(WordErasure(forward).attribute(x, target=1),
                     FeatureAblation(forward).attribute(x, target=1))

    def on_floats(ids):
        return ids.double().sum(1)

    ours = WordErasure(on_floats).attribute(IDS, score="output_diff", baselines=0.5)
    assert_identical(ours, FeatureAblation(on_floats).attribute(IDS, baselines=0.5))
    assert ours.dtype == torch.float64


def test_delegated_progress_is_feature_ablations(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    x = torch.tensor([[20.0, 50.0, 30.0]])
    WordErasure(lambda t: t.sum(1, keepdim=True)).attribute(x, target=0, show_progress=True)
    assert "Feature Ablation attribution: 100%" in err.getvalue()


# -- the text path keeps Captum's shapes and dtypes -----------------------------------------
def test_per_row_scalar_output_without_target_is_batch_by_sequence():
    def forward(ids):
        return bag_of_words(ids)[:, 0]  # (B,)

    ours = WordErasure(forward).attribute(IDS, score="output_diff", target=None)
    assert ours.shape == IDS.shape
    assert_identical(ours, FeatureAblation(forward).attribute(IDS, target=None))


def test_several_outputs_without_target_are_captums_flattened_rows():
    ours = WordErasure(bag_of_words).attribute(IDS, score="output_diff", target=None)
    theirs = FeatureAblation(bag_of_words).attribute(IDS, target=None)
    assert ours.shape == (IDS.shape[0] * 2, IDS.shape[1])
    assert_identical(ours, theirs)


def test_float64_model_outputs_are_not_rounded_to_float32():
    def forward(ids):  # differences of 1e-12 on top of 1: lost in float32
        return 1.0 + 1e-12 * bag_of_words(ids, torch.float64)

    method = WordErasure(forward)
    ours = method.attribute(IDS, score="output_diff", target=0)
    assert method.last_stats is not None  # the packed engine ran
    assert ours.dtype == torch.float64 and ours.abs().max() > 0
    torch.testing.assert_close(ours, FeatureAblation(forward).attribute(IDS, target=0),
                               rtol=1e-9, atol=0)
    assert method.attribute(IDS, score="logit_diff", target=0).dtype == torch.float64
    engine = PerturbationEngine(lambda ids: forward(ids), batch_size=1)
    out = engine.run([Row(0)], lambda rows: (IDS[:1],))
    assert out.dtype == torch.float64 and torch.equal(out, forward(IDS[:1]))


def test_integer_outputs_give_integer_attributions():
    def forward(ids):
        return ids * torch.tensor([1, 10, 100, 1000])

    method = WordErasure(forward)
    ours = method.attribute(IDS, score="output_diff", target=2, perturbations_per_eval=2)
    assert method.last_stats is not None
    assert ours.dtype == torch.int64
    assert_identical(ours, FeatureAblation(forward).attribute(IDS, target=2,
                                                             perturbations_per_eval=2))


def test_text_scores_keep_float32_on_a_float32_model():
    attr = WordErasure(bag_of_words).attribute(IDS, target=0)  # eq1
    assert attr.dtype == torch.float32 and attr.shape == IDS.shape


# -- futures ------------------------------------------------------------------------------
def test_attribute_future_on_the_text_path_is_a_completed_future_of_the_same_values():
    method = WordErasure(bag_of_words)
    fut = method.attribute_future(IDS, target=1, score="logit_diff", mode="replace")
    assert isinstance(fut, torch.futures.Future) and fut.done()
    assert_identical(fut.wait(), method.attribute(IDS, target=1, score="logit_diff"))


def test_attribute_future_with_a_future_forward_is_feature_ablations():
    def future_forward(x):
        fut = torch.futures.Future()
        fut.set_result(x.sum(1, keepdim=True) * 2)
        return fut

    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    ours = WordErasure(future_forward).attribute_future(x, target=0).wait()
    theirs = FeatureAblation(future_forward).attribute_future(x, target=0).wait()
    assert_identical(ours, theirs)
    ids_ours = WordErasure(future_forward).attribute_future(IDS, target=0,
                                                            score="output_diff").wait()
    assert_identical(ids_ours, FeatureAblation(future_forward).attribute_future(
        IDS, target=0).wait())
