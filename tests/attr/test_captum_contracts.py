"""The Captum contracts the methods rely on beyond FeatureAblation's tests: NoiseTunnel,
has_convergence_delta, multiplies_by_inputs and the Attribution base class."""

import pytest
import torch
from captum.attr import Attribution, FeatureAblation, NoiseTunnel

from captum_erasure import (
    EmbeddingDimensionErasure,
    HiddenUnitErasure,
    InputMarginalization,
    InputReduction,
    MinimalErasure,
    WordErasure,
)


def _linear(x):
    return x @ torch.tensor([[1.0, -1.0], [2.0, 0.5], [0.0, 3.0]])


def test_noise_tunnel_over_word_erasure_equals_noise_tunnel_over_feature_ablation():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    kwargs = dict(nt_type="smoothgrad", nt_samples=4, stdevs=0.1, target=1)
    torch.manual_seed(0)
    ours = NoiseTunnel(WordErasure(_linear)).attribute(x, **kwargs)
    torch.manual_seed(0)
    theirs = NoiseTunnel(FeatureAblation(_linear)).attribute(x, **kwargs)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("build", [
    lambda: WordErasure(_linear),
    lambda: HiddenUnitErasure(_linear, [torch.nn.Identity()]),
    lambda: EmbeddingDimensionErasure(_linear, torch.nn.Embedding(3, 3)),
    lambda: InputReduction(_linear, importance="loo"),
    lambda: MinimalErasure(_linear),
])
def test_every_method_is_a_captum_attribution_without_convergence_delta(build):
    method = build()
    assert isinstance(method, Attribution)
    assert method.has_convergence_delta() is False


def test_multiplies_by_inputs():
    # erasure of a word is its removal, not input x gradient: only WordErasure inherits
    # FeatureAblation's flag (True, as Captum's: output differences scale with the input)
    assert WordErasure(_linear).multiplies_by_inputs is FeatureAblation(_linear).multiplies_by_inputs
    assert InputMarginalization.multiplies_by_inputs.fget(None) is False
