"""What the colours of a figure mean: the values shown for each word and one colour scale.

Eq. 1 scores are bounded below by -1 but unbounded above (a word of a text the model is sure
about can score 100), so a linear scale fitted to the largest score of a figure washes out
everything else, and a scale fitted to each text separately gives "+17.6" and "+0.116" the
same colour. Two remedies, both stated in every legend:

- ``values=``: show a tamer quantity derived from the score (:data:`VALUES`): ``"symlog"``
  (``sign(I) * ln(1 + |I|)``, same order as the score), ``"log_prob_drop"`` (Eq. 1's numerator)
  or ``"prob_drop"`` (how much P(target) falls, always in [-1, 1]).
- one colour scale for all texts of a figure by default; ``per_text=True`` scales each text by
  its own largest value and the legend says "scaled per text".

Only numpy here: :mod:`.report` (text tables) uses it without loading matplotlib.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from captum_erasure._core.scores import EQ1_MIN_DENOMINATOR
from captum_erasure.explain.texts import TextExplanation

VALUES = ("score", "symlog", "log_prob_drop", "prob_drop")

# What each shown quantity means, for legends and docs (``{score}`` is the score's name).
MEANINGS = {
    "score": "{score} score",
    "symlog": "sign(I) ln(1+|I|) of the {score} score I",
    "log_prob_drop": "log P(target) - log P(target | word erased), nats",
    "prob_drop": "P(target) - P(target | word erased)",
}
SCORE_MEANINGS = {
    "eq1": "Eq. 1 = relative drop of log P(target) when the word is erased: 0 no change, "
           "-1 the least possible, no upper bound",
    "log_prob_diff": "log P(target) - log P(target | word erased), nats",
    "prob_diff": "P(target) - P(target | word erased), in [-1, 1]",
    "logit_diff": "target logit - target logit with the word erased",
    "output_diff": "output - output with the word erased",
}


def symlog(values: np.ndarray | float) -> np.ndarray:
    """``sign(x) * ln(1 + |x|)``: the identity's slope at 0, logarithmic for large ``|x|``
    (1 -> 0.693, 10 -> 2.398, 100 -> 4.615; Eq. 1's floor -1 -> -0.693)."""
    values = np.asarray(values, dtype=float)
    return np.sign(values) * np.log1p(np.abs(values))


def symlog_inverse(values: np.ndarray | float) -> np.ndarray:
    """The score a :func:`symlog` value came from (for colour-bar ticks)."""
    values = np.asarray(values, dtype=float)
    return np.sign(values) * np.expm1(np.abs(values))


def _log_prob_drop(e: TextExplanation, scores: np.ndarray) -> np.ndarray:
    if e.score_name == "log_prob_diff":
        return scores
    if e.score_name == "eq1":  # Eq. 1 = drop / max(-log p, floor): undo the division
        return scores * max(-math.log(e.target_probability), EQ1_MIN_DENOMINATOR)
    if e.score_name == "prob_diff":  # drop = log p - log(p - prob_diff)
        p = e.target_probability
        with np.errstate(divide="ignore", invalid="ignore"):
            return math.log(p) - np.log(p - scores)
    raise ValueError(f"values 'log_prob_drop' and 'prob_drop' need a probability score "
                     f"(eq1, log_prob_diff, prob_diff), not {e.score_name!r}")


def display_values(e: TextExplanation, values: str = "score") -> np.ndarray:
    """The quantity shown for each word of ``e`` (see :data:`VALUES`); non-finite -> NaN.

    ``"log_prob_drop"`` and ``"prob_drop"`` are recovered exactly from Eq. 1 and the target's
    probability p: drop = I * (-ln p) and P(target | word erased) = p * exp(-drop)."""
    if values not in VALUES:
        raise ValueError(f"values must be one of {VALUES}, got {values!r}")
    scores = np.asarray(e.scores, dtype=float)
    if values == "score":
        shown = scores
    elif values == "symlog":
        shown = symlog(scores)
    elif values == "prob_drop" and e.score_name == "prob_diff":
        shown = scores
    else:
        drop = _log_prob_drop(e, scores)
        shown = drop if values == "log_prob_drop" else -e.target_probability * np.expm1(-drop)
    return np.where(np.isfinite(shown), shown, np.nan)


def _max_abs(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


@dataclass
class ColourScale:
    """Shown values and colour positions of the texts of one figure.

    ``shown[i]`` are the values of text i (the numbers a reader sees), ``colour[i]`` their
    positions on the colour map in [-1, 1] (``shown / limits[i]``, clipped; NaN blank)."""

    values: str
    per_text: bool
    score_name: str
    shown: list[np.ndarray]
    colour: list[np.ndarray]
    limits: list[float]            # the |value| drawn darkest, per text (equal when shared)

    @property
    def limit(self) -> float:
        """The shared limit (the largest per-text limit when scaled per text)."""
        return max(self.limits, default=1.0)

    def meaning(self) -> str:
        """What the numbers are, e.g. ``"eq1 score (Eq. 1 = relative drop of ...)"``."""
        shown = MEANINGS[self.values].format(score=self.score_name)
        if self.values in ("score", "symlog") and self.score_name in SCORE_MEANINGS:
            shown += f" ({SCORE_MEANINGS[self.score_name]})"
        return shown

    def legend(self) -> str:
        """One line saying how colours map to values; starts with "scaled per text" or
        "one scale for all texts"."""
        sign = "red > 0: erasing the word lowers P(target); blue < 0: it raises it"
        if self.per_text:
            return (f"scaled per text: darkest = each text's own largest |value| (see the "
                    f"row labels), so colours do not compare across texts; {sign}")
        darkest = f"{self.limit:.3g}"
        if self.values == "symlog":
            darkest += f" (a score of {float(symlog_inverse(self.limit)):.3g})"
        return f"one scale for all texts: darkest = |value| >= {darkest}; {sign}"


def colour_scale(explanations: Sequence[TextExplanation], values: str = "score",
                 per_text: bool = False) -> ColourScale:
    """The values and colours of ``explanations`` drawn together: one scale for all texts
    (darkest at the figure's largest ``|value|``; at 1 for ``"prob_drop"``, whose range is
    [-1, 1], so figures compare) unless ``per_text``."""
    if not explanations:
        raise ValueError("no explanations to scale")
    names = {e.score_name for e in explanations}
    if len(names) > 1:
        raise ValueError(f"texts with different scores {sorted(names)} cannot share a scale")
    shown = [display_values(e, values) for e in explanations]
    if per_text:
        limits = [_max_abs(row) or 1.0 for row in shown]
    else:
        shared = 1.0 if values == "prob_drop" else (max(map(_max_abs, shown)) or 1.0)
        limits = [shared] * len(shown)
    colour = [np.clip(row / limit, -1.0, 1.0) for row, limit in zip(shown, limits)]
    return ColourScale(values, per_text, names.pop(), shown, colour, limits)
