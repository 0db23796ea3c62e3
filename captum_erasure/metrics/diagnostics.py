"""Diagnostic properties of Atanasova et al. (EMNLP 2020) that can be computed offline, and
agreement with the human word valences of the VADER lexicon.

- :class:`MaskedPerformance`, faithfulness: the top 0, 10, ..., 100 % of the features by
  attribution are replaced by ``[MASK]`` and the macro-F1 of the model's predictions against
  the gold labels is recorded; the score is the area under that curve (x in [0, 1], trapezoid;
  **lower is more faithful**). Atanasova et al. rank by saliency summed over all classes; we rank
  by the attribution of the explained class (what every method here returns). The top f % is
  ``ceil(f * n)`` features, as in :mod:`captum_erasure.metrics.faithfulness`. Rows go through
  the engine.
- :func:`confidence_indication`: a linear regression from features of the saliency map to the
  predicted-class probability, 5 shuffle splits, training sets up-sampled to equal counts over
  10 confidence buckets; the mean absolute error on the held-out parts (lower is better) is
  reported beside the error of predicting the training mean, so one sees whether the saliency
  carries any signal. Atanasova et al. build the features from the difference between the
  predicted class's saliency and the other classes'; with only the explained class's saliency
  the features are its sum, max, mean, min and the sums of its positive and negative parts.
- :func:`rationale_consistency`: for pairs of models (different seeds, trained vs untrained),
  the Spearman correlation, over (model pair, instance), between the distance of the models'
  activations on the instance and the distance of their saliency maps (higher is better).
- :func:`dataset_consistency`: the same over pairs of instances of one model: high word-overlap
  pairs with the same label and low-overlap pairs with different labels.
- :func:`human_agreement`: mean average precision of the word saliency against a proxy
  rationale, the words whose VADER valence (mean human rating, [-4, 4]) has the polarity of the
  explained class and at least ``min_valence`` in size. VADER rates words out of context, so this
  is a proxy for human rationales, not one.

Saliency distances use each map divided by its largest absolute value (methods differ in scale,
and so do models); the distance of two maps is their mean absolute difference. Across instances
(dataset consistency) a map is a bag of words: word -> summed normalised saliency, 0 when
absent, compared over the union of the two instances' words. Activation distance is the mean
absolute difference of :func:`model_activations`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from captum_erasure._core.engine import EngineStats
from captum_erasure._core.forwards import model_caller
from captum_erasure._core.hooks import this_thread_only
from captum_erasure.metrics.faithfulness import removal_curves

MASKING_FRACTIONS = tuple(i / 10 for i in range(11))


def _masked_size(n_features: int, fraction: float) -> int:
    return 0 if fraction <= 0 else min(n_features, math.ceil(fraction * n_features - 1e-9))


def _macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score
    return float(f1_score(gold, predicted, average="macro", zero_division=0))


@dataclass
class MaskedPerformanceResult:
    fractions: tuple
    f1: list                 # macro-F1 at each fraction
    auc: float               # area under f1 over the fractions (lower is more faithful)
    n_examples: int


class MaskedPerformance:
    """Atanasova et al.'s faithfulness, accumulated over batches (``update``, ``compute``).

    Args:
        forward_func: the classifier, as in
            :func:`~captum_erasure.metrics.faithfulness.removal_curves`.
        mask_token_id: the replacement token (``tokenizer.mask_token_id``; models without one
            can use ``mode="delete"`` instead).
        fractions: masked shares of the features (default 0, 0.1, ..., 1).
        removal_kwargs: options of :func:`~captum_erasure.metrics.faithfulness.removal_curves`.
    """

    def __init__(self, forward_func: Callable, mask_token_id: int | None, *,
                 fractions: Sequence[float] = MASKING_FRACTIONS, mode: str = "replace",
                 **removal_kwargs: Any) -> None:
        if any(not 0 <= f <= 1 for f in fractions) or len(fractions) < 2:
            raise ValueError(f"fractions must be at least two values in [0, 1], got {fractions}")
        self.forward_func = forward_func
        self.fractions = tuple(sorted(fractions))
        self.removal_kwargs = dict(removal_kwargs, mode=mode, baseline_id=mask_token_id)
        self.gold: list[int] = []
        self.predicted: list[list[int]] = []
        self.stats = EngineStats()

    def update(self, inputs: Tensor, attributions: Tensor, labels: Any, **kwargs: Any) -> None:
        labels = torch.as_tensor(labels).flatten().tolist()
        if len(labels) != inputs.shape[0]:
            raise ValueError(f"{len(labels)} labels for {inputs.shape[0]} examples")
        options = {**self.removal_kwargs, **kwargs}
        curves = removal_curves(
            self.forward_func, inputs, attributions, keep=False,
            ks=lambda n: [_masked_size(n, f) for f in self.fractions], **options)
        self.stats += curves.stats
        for b, label in enumerate(labels):
            n = int(curves.n_features[b])
            ks = curves.ks[b]
            self.gold.append(int(label))
            self.predicted.append([int(curves.predictions[b][ks.index(_masked_size(n, f))])
                                   for f in self.fractions])

    def compute(self) -> MaskedPerformanceResult:
        if not self.gold:
            raise ValueError("no batch was added: call update() first")
        gold = np.array(self.gold)
        predicted = np.array(self.predicted)
        f1 = [_macro_f1(gold, predicted[:, i]) for i in range(len(self.fractions))]
        auc = float(np.trapz(f1, self.fractions) / (self.fractions[-1] - self.fractions[0]))
        return MaskedPerformanceResult(self.fractions, f1, auc, len(gold))


# -- confidence indication --------------------------------------------------------------------
def confidence_features(word_saliency: Sequence[Sequence[float]]) -> np.ndarray:
    """Per example: sum, max, mean, min, positive sum and negative sum of its word saliency."""
    rows = []
    for scores in word_saliency:
        s = np.asarray(scores, dtype=np.float64)
        if s.size == 0:
            raise ValueError("an example has no word saliency")
        rows.append([s.sum(), s.max(), s.mean(), s.min(), s.clip(min=0).sum(),
                     s.clip(max=0).sum()])
    return np.array(rows)


@dataclass
class ConfidenceIndication:
    mae: float            # mean absolute error of the regression on held-out examples
    baseline_mae: float   # the same when predicting the training mean
    n_examples: int


def confidence_indication(word_saliency: Sequence[Sequence[float]], confidence: Sequence[float],
                          *, n_splits: int = 5, test_size: float = 0.25, n_buckets: int = 10,
                          seed: int = 0) -> ConfidenceIndication:
    """Atanasova et al.'s confidence indication (see the module docstring)."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import ShuffleSplit

    x = confidence_features(word_saliency)
    # Scale-free features: methods differ by orders of magnitude.
    x = x / np.maximum(np.abs(x).max(0, keepdims=True), 1e-12)
    y = np.asarray(confidence, dtype=np.float64)
    if len(y) != len(x):
        raise ValueError(f"{len(y)} confidences for {len(x)} saliency maps")
    if len(y) < 4:
        raise ValueError("confidence indication needs at least 4 examples")
    rng = np.random.default_rng(seed)
    errors, baseline = [], []
    splitter = ShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
    for train, test in splitter.split(x):
        buckets = np.minimum((y[train] * n_buckets).astype(int), n_buckets - 1)
        counts = np.bincount(buckets, minlength=n_buckets)
        resampled = np.concatenate([
            rng.choice(train[buckets == b], counts.max(), replace=True)
            for b in range(n_buckets) if counts[b] > 0])
        model = LinearRegression().fit(x[resampled], y[resampled])
        errors.append(np.abs(model.predict(x[test]) - y[test]).mean())
        baseline.append(np.abs(y[resampled].mean() - y[test]).mean())
    return ConfidenceIndication(float(np.mean(errors)), float(np.mean(baseline)), len(y))


# -- activations and consistency -------------------------------------------------------------
def model_activations(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, *,
                      modules: Sequence[nn.Module] | None = None) -> Tensor:
    """One activation vector per example: the outputs of ``modules`` (default: every hidden
    state of an HF model, or every direct child that is not an embedding or dropout), each
    averaged over the attended positions when it has a sequence axis, concatenated."""
    captured: list[Tensor] = []

    def keep(_module: nn.Module, _args: Any, out: Any) -> None:
        captured.append(out[0] if isinstance(out, tuple) else out)

    def pooled(value: Tensor) -> Tensor:
        value = value.float()
        if value.dim() == 3 and value.shape[1] == attention_mask.shape[1]:
            weights = attention_mask.to(value.dtype)[..., None]
            return (value * weights).sum(1) / weights.sum(1).clamp_min(1)
        return value.reshape(value.shape[0], -1)

    with torch.inference_mode():
        if modules is None and isinstance(model, PreTrainedModel):
            states = model(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=True).hidden_states
            return torch.cat([pooled(h) for h in states], 1)
        if modules is None:
            modules = [m for m in model.children()
                       if not isinstance(m, (nn.Embedding, nn.Dropout))]
        handles = [m.register_forward_hook(this_thread_only(keep)) for m in modules]
        try:
            model_caller(model)(input_ids, attention_mask)
        finally:
            for handle in handles:
                handle.remove()
    batch = input_ids.shape[0]
    parts = [pooled(c) for c in captured if isinstance(c, Tensor) and c.shape[0] == batch]
    if not parts:
        raise ValueError("no activation with one row per example was captured; pass modules=")
    return torch.cat(parts, 1)


def normalised(scores: Sequence[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    top = np.abs(s).max() if s.size else 0.0
    return s / top if top > 0 else s


def saliency_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean absolute difference of two max-abs-normalised maps over the same words."""
    a, b = normalised(a), normalised(b)
    if a.shape != b.shape:
        raise ValueError(f"saliency maps of different lengths ({a.size} and {b.size})")
    return float(np.abs(a - b).mean())


def bag_distance(words_a: Sequence[str], scores_a: Sequence[float], words_b: Sequence[str],
                 scores_b: Sequence[float]) -> float:
    """Distance of two instances' maps as bags of words (see the module docstring)."""
    bags = []
    for words, scores in ((words_a, scores_a), (words_b, scores_b)):
        bag: dict[str, float] = {}
        for word, value in zip(words, normalised(scores)):
            bag[word.lower()] = bag.get(word.lower(), 0.0) + float(value)
        bags.append(bag)
    union = set(bags[0]) | set(bags[1])
    return float(np.mean([abs(bags[0].get(w, 0.0) - bags[1].get(w, 0.0)) for w in union]))


@dataclass
class Consistency:
    spearman: float
    p_value: float
    n_points: int
    points: list = field(default_factory=list)   # (activation distance, saliency distance)


def _spearman(points: list) -> Consistency:
    if len(points) < 3:
        raise ValueError("consistency needs at least 3 (activation, saliency) distance pairs")
    from scipy.stats import spearmanr
    act, sal = zip(*points)
    if np.ptp(act) == 0 or np.ptp(sal) == 0:
        return Consistency(float("nan"), float("nan"), len(points), points)
    rho, p = spearmanr(act, sal)
    return Consistency(float(rho), float(p), len(points), points)


def rationale_consistency(activations: Mapping[str, Tensor],
                          word_saliency: Mapping[str, Sequence[Sequence[float]]],
                          pairs: Sequence[tuple[str, str]] | None = None) -> Consistency:
    """Spearman correlation between activation and saliency distances across models.

    ``activations[model]``: ``(n_examples, d)``; ``word_saliency[model]``: one map per example
    (same words for every model: same tokenizer). ``pairs`` default: every pair of models.
    """
    names = list(activations)
    if set(names) != set(word_saliency):
        raise ValueError("activations and word_saliency must name the same models")
    pairs = list(pairs) if pairs is not None else list(itertools.combinations(names, 2))
    points = []
    for a, b in pairs:
        act = (activations[a].float() - activations[b].float()).abs().mean(1)
        for i, (sa, sb) in enumerate(zip(word_saliency[a], word_saliency[b])):
            points.append((float(act[i]), saliency_distance(sa, sb)))
    return _spearman(points)


def overlap_pairs(words: Sequence[Sequence[str]], labels: Sequence[int], n_pairs: int,
                  ) -> list[tuple[int, int]]:
    """The ``n_pairs`` same-label pairs with the highest word-type Jaccard overlap and the
    ``n_pairs`` different-label pairs with the lowest (Atanasova et al.'s selection)."""
    types = [{w.lower() for w in ws} for ws in words]
    same, different = [], []
    for i, j in itertools.combinations(range(len(words)), 2):
        jaccard = len(types[i] & types[j]) / max(1, len(types[i] | types[j]))
        (same if labels[i] == labels[j] else different).append((jaccard, i, j))
    same.sort(key=lambda t: -t[0])
    different.sort(key=lambda t: t[0])
    return [(i, j) for _, i, j in same[:n_pairs] + different[:n_pairs]]


def dataset_consistency(activations: Tensor, words: Sequence[Sequence[str]],
                        word_saliency: Sequence[Sequence[float]], labels: Sequence[int], *,
                        n_pairs: int = 2000) -> Consistency:
    """Spearman correlation between activation and saliency distances across instance pairs
    (``labels``: the predicted or gold classes the pairs are chosen by)."""
    points = []
    for i, j in overlap_pairs(words, labels, n_pairs):
        act = float((activations[i].float() - activations[j].float()).abs().mean())
        points.append((act, bag_distance(words[i], word_saliency[i], words[j],
                                         word_saliency[j])))
    return _spearman(points)


@dataclass
class HumanAgreement:
    map: float               # mean average precision over the examples used
    n_examples: int          # examples with at least one rationale word and one other word
    n_skipped: int
    average_precision: list  # per example (NaN when skipped)


def human_agreement(words: Sequence[Sequence[str]], word_saliency: Sequence[Sequence[float]],
                    targets: Sequence[int], valences: Mapping[str, float], *,
                    class_polarity: Mapping[int, int] | None = None,
                    min_valence: float = 1.0) -> HumanAgreement:
    """MAP of word saliency against the VADER proxy rationale (see the module docstring).

    ``class_polarity`` maps a class to the valence sign that supports it (default ``{0: -1,
    1: +1}``: negative/positive sentiment). Examples whose rationale is empty or covers every
    word have no defined average precision and are skipped (counted in ``n_skipped``).
    """
    from sklearn.metrics import average_precision_score

    polarity = dict(class_polarity or {0: -1, 1: 1})
    scores = []
    for ws, sal, target in zip(words, word_saliency, targets):
        if int(target) not in polarity:
            raise ValueError(f"class {int(target)} has no polarity in class_polarity {polarity}")
        sign = polarity[int(target)]
        gold = [sign * valences.get(w.lower(), 0.0) >= min_valence for w in ws]
        if len(gold) != len(sal):
            raise ValueError(f"{len(ws)} words but {len(sal)} saliency values")
        if not any(gold) or all(gold):
            scores.append(float("nan"))
            continue
        scores.append(float(average_precision_score(gold, np.asarray(sal, dtype=np.float64))))
    used = [s for s in scores if not math.isnan(s)]
    return HumanAgreement(float(np.mean(used)) if used else float("nan"), len(used),
                          len(scores) - len(used), scores)

