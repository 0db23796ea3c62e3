"""Li, Monroe & Jurafsky (2016) section 3 on GloVe 6B 50d: which word-vector dimensions and
hidden units the paper's small tanh MLP relies on for five word-level tasks (prefix, suffix,
sentiment, word shape, log frequency), and whether GloVe's frequency dimensions dominate.

For each task and each of the paper's training strategies (vanilla; the 31st dimension removed;
the 31st and 26th removed; dropout 0.2; the paper counts dimensions from 1, so these are
columns 30 and 25 here) an MLP is trained and every input dimension is erased on the training
words (Eq. 1, gold label). Writes to ``--out``: ``table7_accuracy`` (with the paper's values),
``dominance`` (top dimension and its share per task and strategy), ``dimension_importance``
(all values), ``unit_importance`` (Figure 2 values), ``frequency_correlation`` (Figure 3),
``layers`` (Figure 2 in numbers), ``figure1_<strategy>.png``, ``figure2_units.png``,
``figure3_frequency.png`` and ``summary.json``.

    .venv/bin/python examples/li2016_dimensions.py --out outputs/li2016_dims
    .venv/bin/python examples/li2016_dimensions.py --out /tmp/quick --quick   # seconds
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from captum_erasure.paper.li2016.figures import (
    plot_dimension_heatmap,
    plot_frequency_scatter,
    plot_layer_heatmaps,
)
from captum_erasure.paper.li2016.glove import frequency_correlation, glove_vectors, log_ranks
from captum_erasure.paper.li2016.lexical_mlp import (
    FREQUENCY_DIMENSIONS,
    STRATEGIES,
    dimension_importance,
    dominance,
    train_lexical_model,
    unit_importance,
)
from captum_erasure.paper.li2016.lexical_tasks import build_lexical_tasks
from captum_erasure.paper.li2016.model_comparison import write_table
from captum_erasure.paper.li2016.reported import FIGURE3_R_SQUARED, TABLE7_GLOVE

FIGURE1_PANEL = {"vanilla": "c", "without d30": "d", "without d30, d25": "e",
                 "dropout 0.2": "f"}
N_FREQUENCY_WORDS = 200_000  # the paper kept the 200,000 most frequent words


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def frequency_table(n_top: int = 5) -> pd.DataFrame:
    """Figure 3 in numbers: the ``n_top`` GloVe columns whose value best tracks log frequency
    rank (R^2 of a linear fit), with the fit of their absolute value beside it."""
    fits = [frequency_correlation(d, N_FREQUENCY_WORDS) for d in range(glove_vectors().shape[1])]
    rows = []
    for fit in sorted(fits, key=lambda f: f.r_squared, reverse=True)[:n_top]:
        magnitude = frequency_correlation(fit.dimension, N_FREQUENCY_WORDS, magnitude=True)
        rows.append({"column (0-based)": fit.dimension, "paper name": f"d{fit.dimension + 1}",
                     "r": fit.r, "R^2": fit.r_squared, "p": fit.p_value,
                     "R^2 of |value|": magnitude.r_squared,
                     "paper R^2": FIGURE3_R_SQUARED.get(fit.dimension),
                     "words": fit.n_words})
    return pd.DataFrame(rows)


def layer_summary(units: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Figure 2's claim in numbers: per task and layer, how large and how concentrated the
    importance of single units is (the paper: lower and more even in higher layers)."""
    rows = []
    for task, layers in units.items():
        for layer, values in layers.items():
            median = float(np.median(values))
            rows.append({"task": task, "layer": layer, "mean": float(np.mean(values)),
                         "median": median, "max": float(np.max(values)),
                         "max / median": float(np.max(values)) / median if median > 0
                         else float("nan")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/li2016_dims"))
    parser.add_argument("--quick", action="store_true",
                        help="3 epochs, 1,000 training words, 200 erased words (for tests)")
    parser.add_argument("--n-examples", type=int, default=None,
                        help="training words erased per task (default: all, the paper's E)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--figure2-only", action="store_true",
                        help="only the vanilla models: unit_importance.csv, layers and "
                             "figure2_units.png (a quarter of the training)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: these models are tiny, and more threads "
                             "slow down badly when another process shares the CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    epochs = 3 if args.quick else args.epochs
    max_train = 1000 if args.quick else None
    n_examples = 200 if args.quick else args.n_examples

    tasks = build_lexical_tasks()
    task_sizes = pd.DataFrame([{"task": t.name, "words": len(t), "classes": t.n_classes,
                                "train": int((t.splits == "train").sum()),
                                "description": t.description} for t in tasks.values()])
    write_table(task_sizes, args.out, "tasks")
    print(task_sizes.to_string(index=False), "\n")

    accuracy_rows, dominance_rows, importance_rows = [], [], []
    figure1: dict[str, dict[str, np.ndarray]] = {}
    units: dict[str, dict[str, np.ndarray]] = {}
    seconds = {"training": 0.0, "erasure": 0.0}
    strategies = {"vanilla": STRATEGIES["vanilla"]} if args.figure2_only else STRATEGIES
    for strategy, spec in strategies.items():
        figure1[strategy] = {}
        for name, task in tasks.items():
            tick = time.perf_counter()
            trained = train_lexical_model(task, strategy, epochs=epochs, max_train=max_train)
            seconds["training"] += time.perf_counter() - tick
            tick = time.perf_counter()
            dims = dimension_importance(trained, n_examples=n_examples)
            if strategy == "vanilla":
                layers = unit_importance(trained, n_examples=n_examples)
                units[name] = {"input": dims.mean.numpy(),
                               **{k: v.mean.numpy() for k, v in layers.items()}}
            seconds["erasure"] += time.perf_counter() - tick
            figure1[strategy][name] = dims.mean.numpy()
            paper = TABLE7_GLOVE[strategy]
            accuracy_rows.append({"strategy": strategy, "task": name, **trained.accuracy,
                                  "best epoch": trained.training.best_epoch,
                                  "paper test accuracy": paper.get(name),
                                  "paper test MSE": paper.get(f"{name}_mse")})
            # Removed dimensions score exactly 0 (the model never reads them): not ranked.
            top = dominance(dims.mean.numpy())
            dominance_rows.append({
                "strategy": strategy, "task": name, "top dimension": top.top_dimension,
                "share of positive importance": top.top_share,
                "top / runner-up": top.top_ratio,
                **{f"rank of d{d}": None if d in spec["removed_dims"] else top.rank_of[d]
                   for d in FREQUENCY_DIMENSIONS},
                "max I(d)": float(dims.mean.max()), "median I(d)": float(dims.mean.median()),
                "words erased": dims.count})
            importance_rows += [{"strategy": strategy, "task": name, "dimension": d,
                                 "importance": float(v), "std": float(s)}
                                for d, (v, s) in enumerate(zip(dims.mean, dims.std))]
            print(f"{strategy:17s} {name:10s} test acc {trained.accuracy['test']:.3f}  "
                  f"top dim {dominance_rows[-1]['top dimension']:2d} "
                  f"(share {top.top_share:.2f}, x{top.top_ratio:.1f} the runner-up)")
        plot_dimension_heatmap(
            figure1[strategy], args.out / f"figure1_{slug(strategy)}.png",
            removed=spec["removed_dims"],
            title=f"Figure 1{FIGURE1_PANEL[strategy]}: GloVe, {strategy}")

    accuracy = pd.DataFrame(accuracy_rows)
    dominance_frame = pd.DataFrame(dominance_rows)
    unit_rows = [{"task": t, "layer": layer, "unit": u, "importance": float(v)}
                 for t, layers in units.items() for layer, values in layers.items()
                 for u, v in enumerate(values)]
    pd.DataFrame(unit_rows).to_csv(args.out / "unit_importance.csv", index=False)
    write_table(layer_summary(units), args.out, "layers")
    # One colour scale per task: frequency's importances are up to 1,000x the others'.
    plot_layer_heatmaps(units, args.out / "figure2_units.png", scale="per_panel",
                        title="Figure 2/6: importance of input dimensions and hidden units "
                              "(vanilla MLP, log10)")
    if args.figure2_only:
        print(f"Wrote {args.out}/figure2_units.png, unit_importance.csv and layers in "
              f"{time.perf_counter() - started:.0f} s")
        return
    write_table(accuracy, args.out, "table7_accuracy")
    write_table(dominance_frame, args.out, "dominance")
    pd.DataFrame(importance_rows).to_csv(args.out / "dimension_importance.csv", index=False)

    correlation = frequency_table()
    write_table(correlation, args.out, "frequency_correlation")
    n_words = N_FREQUENCY_WORDS
    plot_frequency_scatter(
        {f"column {d} (paper d{d + 1})": glove_vectors()[:n_words, d]
         for d in FREQUENCY_DIMENSIONS},
        log_ranks(n_words), args.out / "figure3_frequency.png",
        title=f"Figure 3: GloVe dimensions vs log frequency rank ({n_words:,} words)")
    seconds["total"] = time.perf_counter() - started

    summary = {"quick": args.quick, "epochs": epochs, "threads": args.threads,
               "seconds": {k: round(v, 1) for k, v in seconds.items()},
               "accuracy": accuracy_rows, "dominance": dominance_rows,
               "frequency_correlation": correlation.to_dict(orient="records")}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print("\n" + accuracy.to_string(index=False))
    print("\n" + dominance_frame.to_string(index=False))
    print("\n" + correlation.to_string(index=False))
    print(f"\nWrote {args.out}/ in {seconds['total']:.0f} s")


if __name__ == "__main__":
    main()
