"""Removal order and curve area shared by the removal-based metrics."""

from __future__ import annotations

from torch import Tensor

from captum_erasure._core.text import feature_ids


def feature_order(attributions: Tensor, feature_mask: Tensor) -> list[list[int]]:
    """Per example, its feature ids by decreasing mean attribution (ties: by position)."""
    orders = []
    for scores, mask in zip(attributions.detach().double().cpu(), feature_mask):
        feats = feature_ids(mask)  # in position order of their first token, as ids are
        first = {f: int((mask == f).nonzero()[0]) for f in feats}
        feats.sort(key=lambda f: first[f])
        means = {f: float(scores[mask == f].mean()) for f in feats}
        orders.append(sorted(feats, key=lambda f: -means[f]))  # stable: ties keep position
    return orders


def curve_area(probabilities: Tensor, n_steps: int) -> Tensor:
    """Trapezoid area of ``probabilities[..., 0..n_steps]`` over x = k / n_steps in [0, 1]."""
    p = probabilities[..., :n_steps + 1].double()
    return (p.sum(-1) - (p[..., 0] + p[..., -1]) / 2) / n_steps

