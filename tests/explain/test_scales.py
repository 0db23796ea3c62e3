"""Shown values (symlog, log-probability drop, probability drop) and the shared colour scale."""

import math

import numpy as np
import pytest

from captum_erasure.explain.scales import (
    colour_scale,
    display_values,
    symlog,
    symlog_inverse,
)
from captum_erasure.explain.texts import TextExplanation, explain_texts


def explanation(scores, p=0.5, score_name="eq1"):
    return TextExplanation(text="t", words=[f"w{i}" for i in range(len(scores))],
                           scores=list(scores), predicted=1, predicted_label="pos",
                           probability=p, target=1, target_label="pos", target_probability=p,
                           score_name=score_name)


def test_symlog_exact_values_and_inverse():
    x = np.array([0.0, 1.0, -1.0, 9.0, 99.0, -0.5, 17.6])
    expected = [0.0, math.log(2), -math.log(2), math.log(10), math.log(100), -math.log(1.5),
                math.log(18.6)]
    np.testing.assert_allclose(symlog(x), expected, rtol=1e-15)
    np.testing.assert_allclose(symlog_inverse(symlog(x)), x, rtol=1e-14)


def test_eq1_to_log_prob_drop_and_prob_drop_exact():
    # p = 1/2: I = 2 means log P drops by 2 ln 2, so P(target | erased) = 1/8, drop 3/8;
    # I = -1 (Eq. 1's floor) means P(target | erased) = 1; I = 0 nothing changes.
    e = explanation([2.0, -1.0, 0.0, float("inf")])
    np.testing.assert_allclose(display_values(e, "log_prob_drop")[:3],
                               [2 * math.log(2), -math.log(2), 0.0], rtol=1e-15)
    np.testing.assert_allclose(display_values(e, "prob_drop")[:3], [0.375, -0.5, 0.0],
                               rtol=1e-15)
    np.testing.assert_allclose(display_values(e, "symlog")[:3],
                               [math.log(3), -math.log(2), 0.0], rtol=1e-15)
    np.testing.assert_array_equal(display_values(e, "score")[:3], [2.0, -1.0, 0.0])
    for values in ("score", "symlog", "log_prob_drop"):
        assert np.isnan(display_values(e, values)[3])  # non-finite: drawn blank
    assert display_values(e, "prob_drop")[3] == 0.5  # I = inf: P(target | erased) = 0
    assert np.isnan(display_values(explanation([float("nan")]), "prob_drop")[0])


def test_other_probability_scores_convert_the_same_way():
    log_drop = explanation([math.log(4)], score_name="log_prob_diff")
    assert display_values(log_drop, "prob_drop")[0] == pytest.approx(0.375, rel=1e-15)
    prob_drop = explanation([0.375], score_name="prob_diff")
    assert display_values(prob_drop, "log_prob_drop")[0] == pytest.approx(math.log(4),
                                                                          rel=1e-15)
    assert display_values(prob_drop, "prob_drop")[0] == 0.375
    with pytest.raises(ValueError, match="need a probability score .* not 'logit_diff'"):
        display_values(explanation([1.0], score_name="logit_diff"), "prob_drop")
    with pytest.raises(ValueError, match="values must be one of"):
        display_values(log_drop, "log")


def test_eq1_with_probability_one_uses_the_clamped_denominator():
    # P(target) = 1: Eq. 1 divided the drop by 1e-12 (EQ1_MIN_DENOMINATOR)
    e = explanation([3e11], p=1.0)
    assert display_values(e, "log_prob_drop")[0] == pytest.approx(0.3, rel=1e-12)
    assert display_values(e, "prob_drop")[0] == pytest.approx(1 - math.exp(-0.3), rel=1e-12)


def test_prob_drop_from_eq1_matches_the_engine_prob_diff(tiny_model, tiny_tokenizer):
    texts = ["the movie was unbelievable, good.", "not a dull film"]
    eq1 = explain_texts(tiny_model, tiny_tokenizer, texts)
    prob = explain_texts(tiny_model, tiny_tokenizer, texts, score="prob_diff")
    log_drop = explain_texts(tiny_model, tiny_tokenizer, texts, score="log_prob_diff")
    for a, b, c in zip(eq1, prob, log_drop):
        np.testing.assert_allclose(display_values(a, "prob_drop"), b.scores, rtol=1e-5,
                                   atol=1e-9)
        np.testing.assert_allclose(display_values(a, "log_prob_drop"), c.scores, rtol=1e-5,
                                   atol=1e-9)


def test_colour_scale_is_shared_unless_per_text():
    big, small = explanation([17.6, -1.0]), explanation([0.116, 0.0])
    shared = colour_scale([big, small])
    assert shared.limits == [17.6, 17.6]
    np.testing.assert_allclose(shared.colour[1], [0.116 / 17.6, 0.0])
    assert shared.legend().startswith("one scale for all texts: darkest = |value| >= 17.6")
    per_text = colour_scale([big, small], per_text=True)
    assert per_text.limits == [17.6, 0.116]
    np.testing.assert_allclose(per_text.colour[1], [1.0, 0.0])
    assert per_text.legend().startswith("scaled per text")
    bounded = colour_scale([big, small], values="prob_drop")
    assert bounded.limits == [1.0, 1.0]  # the range of a probability drop: figures compare
    log = colour_scale([big, small], values="symlog")
    assert log.limit == pytest.approx(math.log(18.6))
    assert "(a score of 17.6)" in log.legend()
    with pytest.raises(ValueError, match="different scores"):
        colour_scale([big, explanation([1.0], score_name="prob_diff")])
