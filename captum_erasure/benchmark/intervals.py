"""Bootstrap 95 % intervals of the benchmark's per-snippet metrics, the leading method under
each removal, and paired comparisons of the leader with the methods closest to it.

    python -m captum_erasure.benchmark.intervals RUN_DIR [RUN_DIR ...] --out docs/benchmark

Each RUN_DIR is the ``--out`` of a benchmark run (its ``per_example.csv``; their
``summary.csv`` rows are concatenated into ``--out``'s ``summary.csv``); runs of single
methods on the same snippets (same ``--n``, ``--seed``, ``--max-words``) are combined, which
lets a long benchmark run one method per process and be summarised from whatever finished.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from captum_erasure.explain.report import markdown_table
from captum_erasure.metrics.bootstrap import bootstrap_interval, paired_bootstrap

# (per-example column, title, direction); the removal variants are suffixed _mask / _pad
REMOVALS = {"delete": "", "mask": "_mask", "pad": "_pad"}
REMOVAL_TITLES = {"delete": "deletion", "mask": "[MASK]", "pad": "[PAD]"}
PER_EXAMPLE_METRICS = [
    ("comprehensiveness", "comp@20%", "higher"),
    ("aopc_comprehensiveness", "AOPC comp", "higher"),
    ("sufficiency", "suff@20%", "lower"),
    ("aopc_sufficiency", "AOPC suff", "lower"),
]
OTHER_METRICS = [("deletion_area", "deletion area", "lower"), ("auc_rep", "AUC_rep", "lower")]


def metric_columns(per_example: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(column, title, direction) of every per-snippet metric present."""
    columns = []
    for removal, suffix in REMOVALS.items():
        for key, title, direction in PER_EXAMPLE_METRICS:
            if key + suffix in per_example:
                columns.append((key + suffix, f"{title} ({REMOVAL_TITLES[removal]})",
                                direction))
    columns += [c for c in OTHER_METRICS if c[0] in per_example
                and per_example[c[0]].notna().any()]
    return columns


def load_runs(folders: Sequence[str | Path]) -> pd.DataFrame:
    """The per-example rows of every run, checked to be on the same snippets."""
    frames, sizes = [], set()
    for folder in folders:
        folder = Path(folder)
        frames.append(pd.read_csv(folder / "per_example.csv"))
        meta = json.loads((folder / "results.json").read_text())["meta"]
        sizes.add(meta["n_examples"])
    if len(sizes) != 1:
        raise ValueError(f"the runs explain different numbers of snippets: {sorted(sizes)}")
    frame = pd.concat(frames, ignore_index=True)
    duplicated = frame.duplicated(["method", "example"])
    if duplicated.any():
        raise ValueError(f"method run twice: {sorted(set(frame.loc[duplicated, 'method']))}")
    lengths = frame.groupby("example")["n_features"].nunique()
    if (lengths > 1).any():
        raise ValueError("the runs' snippets differ (word counts disagree)")
    return frame


def interval_table(per_example: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Long table: method, metric, direction, mean, low, high, n (percentile bootstrap of the
    mean over snippets, 95 %)."""
    rows = []
    for method, frame in per_example.groupby("method", sort=False):
        for column, title, direction in metric_columns(per_example):
            values = frame[column].dropna()
            if values.empty:
                continue
            interval = bootstrap_interval(values.to_numpy(), seed=seed)
            rows.append({"method": method, "metric": title, "column": column,
                         "direction": direction, "mean": interval.mean, "low": interval.low,
                         "high": interval.high, "n": interval.n})
    return pd.DataFrame(rows)


def wide_table(intervals: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """One row per method, one "mean [low, high]" cell per metric title."""
    cells = intervals[intervals["metric"].isin(metrics)].assign(
        cell=lambda f: [f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
                        for m, lo, hi in zip(f["mean"], f["low"], f["high"])])
    table = cells.pivot(index="method", columns="metric", values="cell")
    order = list(dict.fromkeys(intervals["method"]))
    return table.reindex(index=order, columns=[m for m in metrics if m in table]) \
        .reset_index().fillna("–")


def paired_table(per_example: pd.DataFrame, intervals: pd.DataFrame, top: int = 4,
                 exclude: Sequence[str] = ("Random",), seed: int = 0) -> pd.DataFrame:
    """Per metric: the leading method (best mean, ``exclude`` left out) against each of the
    next ``top - 1``, by a paired bootstrap of the per-snippet difference (leader - other;
    sign flipped for lower-is-better metrics, so a positive difference favours the leader)."""
    rows = []
    wide = per_example.pivot(index="example", columns="method")
    for column, title, direction in metric_columns(per_example):
        ranked = intervals[(intervals["column"] == column)
                           & ~intervals["method"].isin(exclude)]
        ranked = ranked.sort_values("mean", ascending=direction == "lower")
        if len(ranked) < 2:
            continue
        leader = ranked["method"].iloc[0]
        sign = 1.0 if direction == "higher" else -1.0
        for other in ranked["method"].iloc[1:top]:
            pair = wide[column][[leader, other]].dropna()
            comparison = paired_bootstrap(sign * pair[leader].to_numpy(),
                                          sign * pair[other].to_numpy(), seed=seed)
            d = comparison.difference
            rows.append({"metric": title, "leader": leader, "other": other,
                         "advantage": d.mean, "low": d.low, "high": d.high,
                         "p": comparison.p_value, "separated": comparison.separated,
                         "n": d.n})
    return pd.DataFrame(rows, columns=["metric", "leader", "other", "advantage", "low", "high",
                                       "p", "separated", "n"])


def leaders_by_removal(intervals: pd.DataFrame, exclude: Sequence[str] = ("Random",)
                       ) -> pd.DataFrame:
    """The best method per metric (``exclude`` left out), with its interval."""
    rows = []
    for (column, title, direction), frame in intervals.groupby(
            ["column", "metric", "direction"], sort=False):
        frame = frame[~frame["method"].isin(exclude)]
        if frame.empty:
            continue
        best = frame.sort_values("mean", ascending=direction == "lower").iloc[0]
        rows.append({"metric": title, "leader": best["method"], "mean": best["mean"],
                     "low": best["low"], "high": best["high"]})
    return pd.DataFrame(rows, columns=["metric", "leader", "mean", "low", "high"])


def write_intervals(per_example: pd.DataFrame, out: str | Path, seed: int = 0) -> list[Path]:
    """``intervals.csv``, ``paired.csv``, ``leaders.csv`` and ``intervals.md`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    intervals = interval_table(per_example, seed)
    paired = paired_table(per_example, intervals, seed=seed)
    leaders = leaders_by_removal(intervals)
    paths = [out / "intervals.csv", out / "paired.csv", out / "leaders.csv",
             out / "intervals.md"]
    intervals.drop(columns="column").to_csv(paths[0], index=False, float_format="%.5f")
    paired.to_csv(paths[1], index=False, float_format="%.5f")
    leaders.to_csv(paths[2], index=False, float_format="%.5f")
    n = int(intervals["n"].max())
    lines = [f"# Faithfulness with bootstrap 95 % intervals (n = {n} snippets)", ""]
    for removal in REMOVALS:
        titles = [f"{t} ({REMOVAL_TITLES[removal]})" for _, t, _ in PER_EXAMPLE_METRICS]
        if titles[0] in set(intervals["metric"]):
            lines += [f"## Removal: {REMOVAL_TITLES[removal]}", "",
                      markdown_table(wide_table(intervals, titles)), ""]
    other = [t for _, t, _ in OTHER_METRICS if t in set(intervals["metric"])]
    if other:
        lines += ["## Curves", "", markdown_table(wide_table(intervals, other)), ""]
    lines += ["## Leader per metric (Random excluded)", "", markdown_table(leaders.round(4)),
              "", "## Paired comparisons: the leader against the next three", "",
              ("advantage = mean per-snippet difference in the leader's favour (leader − other "
               "for higher-is-better metrics, other − leader for lower-is-better), percentile "
               "bootstrap 95 % interval over snippets; separated = the interval excludes 0."), "",
              markdown_table(paired.round(4)), ""]
    paths[3].write_text("\n".join(lines), encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m captum_erasure.benchmark.intervals",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="benchmark --out folders (per_example.csv)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_intervals(load_runs(args.runs), args.out, args.seed)
    summary = pd.concat([pd.read_csv(Path(run) / "summary.csv") for run in args.runs],
                        ignore_index=True)
    summary.to_csv(Path(args.out) / "summary.csv", index=False, float_format="%.5f")
    print(paths[-1].read_text(encoding="utf-8"))
    return paths


if __name__ == "__main__":
    main()
