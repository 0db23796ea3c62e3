"""Li, Monroe & Jurafsky (2016) section 4 on our GloVe RNN, Uni-LSTM and Bi-LSTM sentiment models:
word importance (Eq. 1, gold label, words deleted) over held-out Rotten Tomatoes snippets.

Writes to ``--out`` (CSV and Markdown): ``models`` (accuracies), ``table1_top_words`` (Table 1),
``table3_sentiment_words`` (Table 3, with the paper's values), ``table2_negative_<model>``
(Table 2), ``sentiment_sensitivity`` (the paper's claims as numbers), ``figure4_histogram.png``,
``figure5_<sentence>.png`` (one sentence, the three models side by side), the full per-model
corpus tables under ``corpus/<model>/`` and ``summary.json``. Tables and figures with the suffix
``_log_prob_diff`` repeat the analysis with Eq. 1's numerator alone.

    .venv/bin/python examples/li2016_word_importance.py --out outputs/li2016_words
    .venv/bin/python examples/li2016_word_importance.py --out /tmp/quick --quick   # seconds

The models are trained once (about a minute on 2 CPU cores) and cached; ``--quick`` trains tiny
ones on 400 snippets instead (not cached) and explains 80 snippets.
"""

from __future__ import annotations

import argparse
import json
import re
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from captum_erasure.data import load_rotten_tomatoes, load_vader_lexicon
from captum_erasure.explain.plots import plot_word_columns
from captum_erasure.paper.li2016.figures import plot_importance_histogram
from captum_erasure.paper.li2016.glove import glove_tokenizer
from captum_erasure.paper.li2016.model_comparison import (
    chosen_words_by_model,
    corpus_importance_by_model,
    sentence_scores_by_model,
    top_words_by_model,
    trainable_parameters,
    write_table,
)
from captum_erasure.paper.li2016.reported import MODELS, SST_FINE_GRAINED_ACCURACY, TABLE3
from captum_erasure.paper.li2016.rnn_models import (
    ARCHITECTURES,
    load_sentiment_models,
    train_sentiment_model,
)
from captum_erasure.paper.li2016.seeds import (
    occurrence_scores,
    paired_model_difference,
    plot_histogram_over_seeds,
    sensitivity_with_intervals,
    table3_with_intervals,
)

# Figure 5 sentences (text, gold label): the paper's example, rated -0.6 (in the data without
# the hyphen), and sentences of Figure 5 and Table 2 as they appear in the data.
SENTENCES = [("Effective but too tepid biopic", 0),
             ("Offers that rare combination of entertainment and education.", 1),
             ("One of the greatest family oriented, fantasy adventure movies ever.", 1),
             ("The smartest bonehead comedy of the summer.", 1),
             ("I loved it!", 1)]
STRONG_VALENCE = 1.5  # VADER words this polar count as clear sentiment words
# Eq. 1, and its numerator alone: Eq. 1 divides by -log P(gold), which is tiny for confident
# predictions, so its means are dominated by the most confident sentences.
SCORES = ("eq1", "log_prob_diff")


def load_models(quick: bool, rebuild: bool, seed: int = 0) -> dict[str, tuple]:
    """Name -> (model, tokenizer, info), in the paper's column order (cached per seed)."""
    if not quick:
        return load_sentiment_models(("bilstm", "lstm", "rnn"), rebuild=rebuild, seed=seed)
    models = {}
    for kind in ("bilstm", "lstm", "rnn"):
        model, info = train_sentiment_model(kind, n_train=400, epochs=2, hidden_size=16,
                                            seed=seed)
        models[ARCHITECTURES[kind]["display_name"]] = (model, glove_tokenizer(), info)
    return models


def accuracy_table(models: dict[str, tuple]) -> pd.DataFrame:
    rows = []
    for name, (model, _, info) in models.items():
        rows.append({"model": name, "hidden": model.config.hidden_size,
                     "trainable parameters": trainable_parameters(model),
                     "train acc": info["accuracy"]["train"], "dev acc": info["accuracy"]["dev"],
                     "test acc": info["accuracy"]["test"], "best epoch": info["best_epoch"],
                     "train seconds": info["train_seconds"],
                     "paper SST fine-grained acc": SST_FINE_GRAINED_ACCURACY.get(name)})
    return pd.DataFrame(rows)


def table3(corpora: dict) -> pd.DataFrame:
    frame = chosen_words_by_model(corpora, TABLE3)
    for name in corpora:
        frame[f"paper {name}"] = [TABLE3[w][name] for w in frame["word"]]
    return frame


def sensitivity(corpora: dict, strong_words: set[str]) -> pd.DataFrame:
    """The paper's claims as numbers, per model: importance of clear sentiment words (VADER
    |valence| >= 1.5, over all their occurrences), of the Table 3 words, and the spread of
    word-type importance (Figure 4)."""
    rows = []
    for name, corpus in corpora.items():
        table = corpus.table()
        strong = table[table["word"].isin(strong_words)]
        chosen = table[table["word"].isin(TABLE3)]
        negative = corpus.negative_occurrences()
        rows.append({
            "model": name,
            "word types": len(table),
            "sentiment-word occurrences": int(strong["count"].sum()),
            "mean importance, sentiment words": float(np.average(strong["mean"],
                                                                 weights=strong["count"])),
            "mean importance, other words": float(np.average(
                table.loc[~table["word"].isin(strong_words), "mean"],
                weights=table.loc[~table["word"].isin(strong_words), "count"])),
            "mean importance, Table 3 words": float(np.average(chosen["mean"],
                                                               weights=chosen["count"])),
            "types with mean > 1": int((table["mean"] > 1).sum()),
            "types with mean > 5": int((table["mean"] > 5).sum()),
            "largest type mean": float(table["mean"].max()),
            "sentiment words in top 10": int(corpus.top_positive(10, rank_by="mean")["word"]
                                             .isin(strong_words).sum()),
            "most negative occurrence": float(negative["score"].min()) if len(negative)
            else float("nan"),
        })
    return pd.DataFrame(rows)


def seeded_analysis(args: argparse.Namespace, models: dict[str, tuple], texts: list[str],
                    labels: list[int], strong: set[str], seconds: dict) -> dict:
    """Tables 3 and the sentiment ratios with bootstrap intervals, and Figure 4, over
    ``args.seeds`` training seeds (Eq. 1 only); returns the numbers for summary.json."""
    tick = time.perf_counter()
    occurrences: dict[str, dict[int, pd.DataFrame]] = {name: {} for name in models}
    accuracy_rows = []
    for seed in range(args.seeds):
        seed_models = models if seed == 0 else load_models(args.quick, args.rebuild, seed)
        for name, (model, tokenizer, info) in seed_models.items():
            occurrences[name][seed] = occurrence_scores(model, tokenizer, texts, labels)
            accuracy_rows.append({"model": name, "seed": seed, **info["accuracy"],
                                  "best epoch": info["best_epoch"]})
    accuracies = pd.DataFrame(accuracy_rows)
    write_table(accuracies, args.out, "models_seeds")
    table = table3_with_intervals(occurrences, TABLE3)
    write_table(table, args.out, "table3_seeds")
    ratios = sensitivity_with_intervals(occurrences, strong)
    write_table(ratios, args.out, "sentiment_sensitivity_seeds")
    pairs = pd.DataFrame([{"words": subset, "first": a, "second": b,
                           **paired_model_difference(occurrences, a, b,
                                                     strong if subset == "sentiment" else None)}
                          for a, b in (("Bi-LSTM", "Uni-LSTM"), ("Uni-LSTM", "RNN"))
                          for subset in ("sentiment", "all")])
    write_table(pairs, args.out, "model_differences_seeds")
    plot_histogram_over_seeds(occurrences, args.out / "figure4_histogram_seeds.png",
                              title=f"Word types by mean Eq. 1 ({len(texts)} snippets, "
                                    f"{args.seeds} seeds)")
    seconds["seeds"] = time.perf_counter() - tick
    print("\nTable 3 over seeds:\n" + table.to_string(index=False))
    print("\nSentiment ratios over seeds:\n" + ratios.to_string(index=False))
    print("\nPaired model differences:\n" + pairs.to_string(index=False))
    return {"n_seeds": args.seeds, "accuracy": accuracies.to_dict(orient="records"),
            "sensitivity": ratios.to_dict(orient="records"),
            "differences": pairs.to_dict(orient="records")}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/li2016_words"))
    parser.add_argument("--quick", action="store_true",
                        help="tiny uncached models and 80 snippets (for tests)")
    parser.add_argument("--rebuild", action="store_true", help="retrain the cached models")
    parser.add_argument("--splits", nargs="+", default=["test", "dev"],
                        help="held-out splits to explain (default: test and dev)")
    parser.add_argument("--min-count", type=int, default=1,
                        help="fewest occurrences for Table 1 (the paper sets none)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="training seeds per architecture for the tables with intervals "
                             "(seeds 0..N-1, each model cached; seed 0 drives Tables 1-2 and "
                             "Figure 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: these models are small, and more threads "
                             "slow down badly when another process shares the CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    models = load_models(args.quick, args.rebuild)
    seconds = {"models": time.perf_counter() - started}
    accuracies = accuracy_table(models)
    write_table(accuracies, args.out, "models")
    print(accuracies.to_string(index=False), "\n")

    held_out = pd.concat([load_rotten_tomatoes(s) for s in args.splits], ignore_index=True)
    if args.quick:
        held_out = held_out.head(80)
    texts, labels = held_out["text"].tolist(), held_out["label"].tolist()
    lexicon = load_vader_lexicon()
    strong = set(lexicon.loc[lexicon["valence"].abs() >= STRONG_VALENCE, "word"])
    claims, tables = [], {}
    for score in SCORES:
        tick = time.perf_counter()
        corpora = corpus_importance_by_model(models, texts, labels, score=score,
                                             batch_size=256, keep_negative=500,
                                             show_progress=not args.quick)
        seconds[f"corpus tables ({score})"] = time.perf_counter() - tick
        suffix = "" if score == "eq1" else f"_{score}"
        for name, corpus in corpora.items():
            corpus.save(args.out / "corpus" / f"{slug(name)}{suffix}")
        tables[f"table1_top_words{suffix}"] = top_words_by_model(corpora, 10, args.min_count)
        tables[f"table1_top_words_min3{suffix}"] = top_words_by_model(corpora, 10, 3)
        tables[f"table3_sentiment_words{suffix}"] = table3(corpora)
        claims.append(sensitivity(corpora, strong).assign(score=score))
        plot_importance_histogram(
            {n: c.table()["mean"] for n, c in corpora.items()},
            args.out / f"figure4_histogram{suffix}.png", xlabel=f"mean word importance ({score})",
            title=f"Word types by mean importance ({len(texts)} snippets)")
        if score == "eq1":  # Table 2 is about Eq. 1's negative values, bounded by -1
            for name, corpus in corpora.items():
                columns = ["word", "score", "gold_label", "predicted_label", "sentence"]
                tables[f"table2_negative_{slug(name)}"] = \
                    corpus.negative_occurrences(15)[columns]
    for name, frame in tables.items():
        write_table(frame, args.out, name)
    claims = pd.concat(claims, ignore_index=True)
    write_table(claims, args.out, "sentiment_sensitivity")

    figure5 = []
    for text, label in SENTENCES:
        words, columns = sentence_scores_by_model(models, text, label)
        gold = "positive" if label else "negative"
        # one colour scale for the three models: their scores differ by orders of magnitude,
        # and per-column scaling would make the RNN look as strong as the LSTMs
        plot_word_columns(words, columns, args.out / f"figure5_{slug(text)}.png",
                          normalize=None, title=textwrap.fill(f"\u201c{text}\u201d (gold: {gold})", 48))
        figure5 += [{"sentence": text, "word": w, "model": m, "score": s}
                    for m, scores in columns.items() for w, s in zip(words, scores)]
    write_table(pd.DataFrame(figure5), args.out, "figure5_scores")
    seeded = seeded_analysis(args, models, texts, labels, strong, seconds)
    seconds["total"] = time.perf_counter() - started

    summary = {"snippets": len(texts), "splits": args.splits, "quick": args.quick,
               "seconds": {k: round(v, 1) for k, v in seconds.items()},
               "torch_threads": torch.get_num_threads(),
               "models": accuracies.to_dict(orient="records"),
               "sensitivity": claims.to_dict(orient="records"),
               "paper_model_order": list(MODELS), "seeds": seeded}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("Table 1 (top words by mean Eq. 1):\n"
          + tables["table1_top_words"].to_string(index=False))
    print("\nTable 3 (chosen sentiment words):\n"
          + tables["table3_sentiment_words"].to_string(index=False))
    print("\n" + claims.to_string(index=False))
    print(f"\nWrote {args.out}/ in {seconds['total']:.0f} s ({len(texts)} snippets x "
          f"{len(models)} models x {len(SCORES)} scores)")


if __name__ == "__main__":
    main()
