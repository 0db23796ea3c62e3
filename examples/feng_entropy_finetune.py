"""Feng et al. (2018), section 5: does entropy fine-tuning cure over-confident reduced inputs?

Fine-tunes the default model with cross-entropy on training snippets minus ``weight`` times the
output entropy on beam-reduced training snippets (:mod:`captum_erasure.models.entropy_finetune`,
cached), then measures, before and after, on the Rotten Tomatoes held-out splits:

1. accuracy on the whole test and dev splits;
2. beam-3 input reduction (gradient importance) of ``--n-heldout`` test snippets (the first ones,
   or with ``--heldout balanced`` a seeded sample of half per gold label), run on each model:
   the confidence (probability of the predicted label) of the originals and of
   the reduced inputs, and how many words the reduction keeps; plus the fine-tuned model's
   confidence on the *base* model's reductions (the same short inputs, before re-reducing).

Writes the reductions (``reduction_before_*.csv``, ``reduction_after_*.csv``, reused by later
runs into the same folder) and, tagged by the settings' hash, held-out count and confidence
floor, ``summary_*.md``, ``summary_*.json``, ``confidence_histograms_*.png`` and
``history_*.csv`` to ``--out`` (default ``outputs/feng``).

    PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python examples/feng_entropy_finetune.py
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from captum_erasure._core.engine import output_logits
from captum_erasure.data import load_rotten_tomatoes
from captum_erasure.metrics.bootstrap import paired_bootstrap
from captum_erasure.models.default import evaluate_accuracy, load_default_model
from captum_erasure.models.entropy_finetune import (
    EntropySettings,
    entropy_model_dir,
    load_entropy_model,
    reduce_texts,
)


def reduction_table(model, tokenizer, texts, ids, beam: int, path: Path,
                    min_confidence: float | None = None) -> pd.DataFrame:
    """Beam reduction of ``texts`` on ``model`` (cached in ``path``), removals allowed only
    while P(label) stays at or above ``min_confidence`` when one is given."""
    if path.is_file():
        return pd.read_csv(path, keep_default_na=False)
    start = time.perf_counter()
    results = reduce_texts(model, tokenizer, texts, beam_size=beam,
                           min_confidence=min_confidence)
    seconds = time.perf_counter() - start
    frame = pd.DataFrame({
        "id": ids, "label": [r.label for r in results],
        "words": [len(r.words) for r in results], "kept": [len(r.kept) for r in results],
        "original_confidence": [r.original_confidence for r in results],
        "reduced_confidence": [r.confidence for r in results],
        "verified": [r.verified for r in results],
        "budget_reached": [r.budget_reached for r in results],
        "forward_passes": [r.forward_passes for r in results],
        "seconds_per_text": seconds / len(results),
        "reduced_text": [r.reduced_text for r in results]})
    frame.to_csv(path, index=False)
    return frame


def confidence_of(model, tokenizer, texts, labels) -> np.ndarray:
    """P(label) of each text, 64 at a time."""
    values = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(list(texts[start:start + 64]), padding=True, truncation=True,
                              max_length=64, return_tensors="pt")
            probs = torch.softmax(output_logits(model(batch["input_ids"],
                                                      batch["attention_mask"])), -1)
            picked = torch.as_tensor(list(labels[start:start + 64]))
            values.append(probs.gather(1, picked[:, None])[:, 0].numpy())
    return np.concatenate(values)


def plot(before: pd.DataFrame, after: pd.DataFrame, after_on_base: np.ndarray,
         path: Path) -> None:
    # the fine-tuned model may flip the base model's reductions: P(their label) below 0.5
    low = min(0.5, np.floor(after_on_base.min() * 50) / 50)
    bins = np.linspace(low, 1.0, round((1.0 - low) / 0.02) + 1)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, frame, title in ((axes[0], before, "base model"),
                             (axes[1], after, "after entropy fine-tuning")):
        ax.hist(frame.original_confidence, bins, alpha=0.6, label="original")
        ax.hist(frame.reduced_confidence, bins, alpha=0.6, label="reduced (own beam-3 reduction)")
        if frame is after:
            ax.hist(after_on_base, bins, histtype="step", linewidth=2, color="black",
                    label="base model's reductions (P of their label)")
        ax.set(title=title, xlabel="confidence: P(predicted label)", ylabel="held-out snippets")
        ax.legend(fontsize=8, loc="upper left")
    top = int(max(before.kept.max(), after.kept.max()))
    edges = np.arange(0.5, top + 1.5)
    axes[2].hist([before.kept, after.kept], edges, label=["base model", "fine-tuned"])
    axes[2].set(title="length of the beam-3 reduction", xlabel="words kept",
                ylabel="held-out snippets")
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def summarize(name: str, model, tokenizer, reduction: pd.DataFrame) -> dict:
    row = {"model": name}
    for split in ("test", "dev"):
        frame = load_rotten_tomatoes(split)
        row[f"{split} accuracy"] = evaluate_accuracy(model, tokenizer, frame.text.tolist(),
                                                     frame.label.tolist())
    row.update({"confidence original": reduction.original_confidence.mean(),
                "confidence reduced": reduction.reduced_confidence.mean(),
                "reduced more confident": (reduction.reduced_confidence
                                           > reduction.original_confidence).mean(),
                "words": reduction.words.mean(), "words kept": reduction.kept.mean(),
                "median words kept": reduction.kept.median(),
                "one word kept": (reduction.kept == 1).mean(),
                "nothing removed": (reduction.kept == reduction.words).mean(),
                "kept fraction": (reduction.kept / reduction.words).mean(),
                "verified": reduction.verified.mean(),
                "s / snippet": reduction.seconds_per_text.iloc[0]})
    return row


def held_out_snippets(n: int, how: str, seed: int = 0) -> pd.DataFrame:
    """The first ``n`` test snippets (the split is sorted positive first, so these are nearly all
    positive), or ``n / 2`` of each gold label sampled with ``seed``, in the split's order."""
    test = load_rotten_tomatoes("test")
    if how == "first":
        return test.head(n)
    if n % 2:
        raise SystemExit(f"--heldout balanced takes half per label: --n-heldout {n} is odd")
    picked = [part.sample(n=n // 2, random_state=seed) for _, part in test.groupby("label")]
    return pd.concat(picked).sort_index()


def sign_test(longer: int, shorter: int) -> float:
    """Two-sided exact sign test of ``longer`` against ``shorter`` (ties left out): the chance
    of a split at least this uneven if longer and shorter were equally likely."""
    n = longer + shorter
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(longer, shorter) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def by_label(before: pd.DataFrame, after: pd.DataFrame, labels: list[int]) -> pd.DataFrame:
    """Words kept before and after per gold label, with the paired 95 % interval of the
    per-snippet difference (after - before) and how many got longer / shorter."""
    rows = []
    gold = np.asarray(labels)
    for name, chosen in (("all", np.ones(len(gold), bool)), ("gold negative", gold == 0),
                         ("gold positive", gold == 1)):
        if not chosen.any():
            continue
        b, a = before.kept.to_numpy()[chosen], after.kept.to_numpy()[chosen]
        diff = paired_bootstrap(a, b).difference
        longer, shorter = int((a > b).sum()), int((a < b).sum())
        rows.append({"snippets": name, "n": int(chosen.sum()),
                     "words": before.words[chosen].mean(),
                     "kept before": b.mean(), "kept after": a.mean(),
                     "after - before [95% CI]":
                         f"{diff.mean:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]",
                     "longer": longer, "shorter": shorter,
                     "sign test p": float(f"{sign_test(longer, shorter):.2g}"),
                     "one word before": (b == 1).mean(), "one word after": (a == 1).mean(),
                     "reduced more confident before": (
                         before.reduced_confidence > before.original_confidence)[chosen].mean(),
                     "reduced more confident after": (
                         after.reduced_confidence > after.original_confidence)[chosen].mean()})
    return pd.DataFrame(rows).set_index("snippets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-heldout", type=int, default=150, help="test snippets reduced")
    parser.add_argument("--heldout", choices=("first", "balanced"), default="first",
                        help="the first test snippets, or a seeded sample of half per label")
    parser.add_argument("--n-originals", type=int, default=EntropySettings.n_originals)
    parser.add_argument("--n-reduced", type=int, default=EntropySettings.n_reduced)
    parser.add_argument("--beam", type=int, default=EntropySettings.beam_size)
    parser.add_argument("--weight", type=float, default=EntropySettings.entropy_weight)
    parser.add_argument("--epochs", type=int, default=EntropySettings.epochs)
    parser.add_argument("--lr", type=float, default=EntropySettings.lr)
    parser.add_argument("--seed", type=int, default=EntropySettings.seed)
    parser.add_argument("--path-words", type=int, default=EntropySettings.path_words,
                        help="entropy also on reduction-path states of at most this many words")
    parser.add_argument("--rounds", type=int, default=EntropySettings.rounds,
                        help="> 1: reduce the training snippets again on the fine-tuned model "
                             "and fine-tune once more, this many rounds in all")
    parser.add_argument("--min-confidence", type=float, default=None,
                        help="confidence floor of the held-out reductions (both models)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="outputs/feng")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = EntropySettings(n_originals=args.n_originals, n_reduced=args.n_reduced,
                               beam_size=args.beam, entropy_weight=args.weight,
                               epochs=args.epochs, lr=args.lr, seed=args.seed,
                               path_words=args.path_words, rounds=args.rounds)
    floor = "" if args.min_confidence is None else f"_floor{args.min_confidence:g}"
    floor += "" if args.heldout == "first" else f"_{args.heldout}"

    held_out = held_out_snippets(args.n_heldout, args.heldout)
    texts, ids = held_out.text.tolist(), held_out.id.tolist()
    base, tokenizer = load_default_model()
    before = reduction_table(
        base, tokenizer, texts, ids, args.beam,
        out / f"reduction_before_n{args.n_heldout}_beam{args.beam}{floor}.csv",
        args.min_confidence)
    tuned, tuned_tokenizer = load_entropy_model(settings)
    folder = entropy_model_dir(settings)
    after = reduction_table(
        tuned, tuned_tokenizer, texts, ids, args.beam,
        out / f"reduction_after_{folder.name}_n{args.n_heldout}{floor}.csv",
        args.min_confidence)
    after_on_base = confidence_of(tuned, tuned_tokenizer, before.reduced_text.tolist(),
                                  before.label.tolist())
    rows = [summarize("base", base, tokenizer, before),
            summarize("entropy fine-tuned", tuned, tuned_tokenizer, after)]
    rows[1]["confidence on base reductions"] = float(after_on_base.mean())
    rows[0]["confidence on base reductions"] = rows[0]["confidence reduced"]
    table = pd.DataFrame(rows).set_index("model")
    tag = f"{folder.name.rsplit('-', 1)[-1]}_n{args.n_heldout}{floor}"  # one run's files
    plot(before, after, after_on_base, out / f"confidence_histograms_{tag}.png")
    shutil.copy(folder / "history.csv", out / f"history_{tag}.csv")
    info = json.loads((folder / "info.json").read_text())
    (out / f"summary_{tag}.json").write_text(json.dumps(
        {"settings": info["settings"], "train_seconds": info["train_seconds"],
         "n_heldout": args.n_heldout, "heldout": args.heldout,
         "min_confidence": args.min_confidence,
         "n_reduced_texts": info.get("n_reduced_texts"), "model_dir": str(folder),
         "rows": table.reset_index().to_dict(orient="records")}, indent=2, default=float))
    markdown = table.T.to_markdown(floatfmt=".3f")
    labels = by_label(before, after, held_out.label.tolist())
    labels.to_csv(out / f"by_label_{tag}.csv")
    markdown += "\n\nWords kept by the beam reduction, per gold label:\n\n"
    markdown += labels.T.to_markdown(floatfmt=".3f")
    (out / f"summary_{tag}.md").write_text(markdown + "\n")
    print(f"model: {folder}\nsettings: {info['settings']}\n{markdown}")


if __name__ == "__main__":
    main()
