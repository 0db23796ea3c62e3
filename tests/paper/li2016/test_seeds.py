"""Section 4 over seeds: seed averages, Table 3 and ratios with intervals, on hand-made
occurrence scores."""

from __future__ import annotations

import pandas as pd
import pytest

from captum_erasure.paper.li2016.seeds import (
    paired_model_difference,
    plot_histogram_over_seeds,
    seed_average,
    sensitivity_with_intervals,
    table3_with_intervals,
    type_histograms,
)


def occurrences(scores):
    """Three occurrences: 'great' twice (snippets 0, 1), 'the' once."""
    return pd.DataFrame({"snippet": [0, 1, 1], "position": [0, 0, 1],
                         "word": ["great", "great", "the"], "score": scores})


OCCURRENCES = {
    "Bi-LSTM": {0: occurrences([4.0, 2.0, 1.0]), 1: occurrences([2.0, 2.0, 0.5])},
    "Uni-LSTM": {0: occurrences([1.0, 1.0, 1.0]), 1: occurrences([1.0, 1.0, 0.5])},
}


def test_seed_average_is_per_occurrence():
    assert seed_average(OCCURRENCES["Bi-LSTM"])["score"].tolist() == [3.0, 2.0, 0.75]


def test_table3_with_intervals_and_the_paired_difference():
    table = table3_with_intervals(OCCURRENCES, ["great", "absent"]).set_index("word")
    great = table.loc["great"]
    assert great["count"] == 2 and great["Bi-LSTM mean"] == 2.5
    # two occurrences averaged over seeds: 3 and 2, so the resampled means are 2, 2.5, 3
    assert (great["Bi-LSTM low"], great["Bi-LSTM high"]) == (2.0, 3.0)
    assert great["Bi-LSTM per seed"] == "3 / 2"
    # Bi - Uni per occurrence: 2 and 1
    assert great["Bi-LSTM - Uni-LSTM mean"] == 1.5
    assert (great["Bi-LSTM - Uni-LSTM low"], great["Bi-LSTM - Uni-LSTM high"]) == (1.0, 2.0)
    assert table.loc["absent", "count"] == 0


def test_sensitivity_ratio_and_per_seed_values():
    row = sensitivity_with_intervals(OCCURRENCES, {"great"}).set_index("model").loc["Bi-LSTM"]
    assert row["sentiment mean"] == 2.5 and row["other mean"] == 0.75
    assert row["ratio"] == pytest.approx(2.5 / 0.75)
    assert row["ratio low"] == pytest.approx(2.0 / 0.75)
    assert row["ratio high"] == pytest.approx(3.0 / 0.75)
    assert row["ratio, seed 0"] == 3.0 and row["ratio, seed 1"] == 4.0
    difference = paired_model_difference(OCCURRENCES, "Bi-LSTM", "Uni-LSTM", {"great"})
    assert difference["difference"] == 1.5 and difference["occurrences"] == 2


def test_histogram_over_seeds(tmp_path):
    edges, counts = type_histograms(OCCURRENCES, bins=10)
    assert counts["Bi-LSTM"].shape == (2, len(edges) - 1)
    assert counts["Bi-LSTM"].sum(1).tolist() == [2, 2]  # two word types per seed
    plot_histogram_over_seeds(OCCURRENCES, tmp_path / "fig4.png", bins=10)
    assert (tmp_path / "fig4.png").read_bytes().startswith(b"\x89PNG")
