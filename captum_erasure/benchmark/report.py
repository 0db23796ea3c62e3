"""The benchmark's report: plots, the Markdown tables and the machine description."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from captum_erasure.benchmark.runners import method_note
from captum_erasure.benchmark.settings import BenchmarkSettings
from captum_erasure.explain.report import markdown_table
from captum_erasure.metrics.faithfulness import METRIC_DIRECTIONS


def machine_description() -> dict[str, Any]:
    import os
    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(), "torch_threads":
            torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _resample(curve: Sequence[float], grid: np.ndarray) -> np.ndarray:
    x = np.linspace(0, 1, len(curve))
    return np.interp(grid, x, np.asarray(curve, dtype=np.float64))


def write_plots(out: Path, summary: pd.DataFrame, curves: dict, masked: dict) -> list[str]:
    """Deletion curves, masked macro-F1 curves, and cost against faithfulness (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    grid = np.linspace(0, 1, 21)
    colours = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    saved = {}
    for index, (method, method_curves) in enumerate(curves.items()):
        mean = np.mean([_resample(c, grid) for c in method_curves], 0)
        style = dict(label=method, color=colours[(2 * index) % 20 + (2 * index) // 20 % 2],
                     linestyle="--" if method == "Random" else "-")
        axes[0].plot(grid, mean, **style)
        result = masked[method]
        axes[1].plot(result.fractions, result.f1, **style)
        saved[method] = {"deletion_x": grid.tolist(), "deletion_mean": mean.tolist(),
                         "masked_fractions": list(result.fractions), "masked_f1": result.f1}
    (out / "curves.json").write_text(json.dumps(saved, indent=1) + "\n")
    axes[0].set(xlabel="share of words deleted (top first)",
                ylabel="P(predicted class)", title="Deletion curves (lower is more faithful)")
    axes[1].set(xlabel="share of words replaced by [MASK] (top first)", ylabel="macro-F1",
                title="Atanasova et al. faithfulness (lower is more faithful)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    names.append("curves.png")

    plot_cost_vs_faithfulness(summary, out / "cost_vs_faithfulness.png")
    names.append("cost_vs_faithfulness.png")
    return names


def plot_cost_vs_faithfulness(summary: pd.DataFrame, path: Path) -> None:
    """Seconds per example (log) against ERASER AOPC comprehensiveness; Random, which costs
    nothing, is the dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for row in summary.itertuples():
        if row.method == "Random":
            ax.axhline(row.aopc_comprehensiveness, color="grey", linestyle="--",
                       label="Random")
            continue
        ax.scatter(row.seconds_per_example, row.aopc_comprehensiveness)
        ax.annotate(row.method, (row.seconds_per_example, row.aopc_comprehensiveness),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="seconds per example (log)", ylabel="AOPC comprehensiveness (ERASER bins)",
           title="Faithfulness against cost")
    if (summary["method"] == "Random").any():
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SUMMARY_COLUMNS = [
    ("comprehensiveness", "comp@20% ↑"), ("sufficiency", "suff@20% ↓"),
    ("aopc_comprehensiveness", "AOPC comp ↑"), ("aopc_sufficiency", "AOPC suff ↓"),
    ("aopc_comprehensiveness_all_k", "AOPC comp all-k ↑"),
    ("aopc_sufficiency_all_k", "AOPC suff all-k ↓"), ("deletion_area", "deletion area ↓"),
    ("masked_f1_auc", "masked-F1 AUC ↓"), ("auc_rep", "AUC_rep ↓"),
]


REPLACEMENT_COLUMNS = [
    (f"{key}_{removal}", f"{title} {token}") for removal, token in (("mask", "[MASK]"),
                                                                    ("pad", "[PAD]"))
    for key, title in (("comprehensiveness", "comp@20% ↑"), ("aopc_comprehensiveness",
                                                             "AOPC comp ↑"),
                       ("sufficiency", "suff@20% ↓"), ("aopc_sufficiency", "AOPC suff ↓"))]


DIAGNOSTIC_COLUMNS = [
    ("human_map", "VADER MAP ↑"), ("confidence_mae", "confidence MAE ↓"),
    ("dataset_consistency", "dataset consistency ↑"),
    ("rationale_consistency", "rationale consistency ↑"),
]


COST_COLUMNS = [
    ("seconds_per_example", "s / example"), ("forward_calls_per_example", "forward calls / ex."),
    ("rows_per_example", "rows / ex."), ("mlm_rows_per_example", "MLM rows / ex."),
    ("fit_seconds", "fit s (once)"), ("fit_rows", "fit rows (once)"),
]


DIRECTIONS = {**METRIC_DIRECTIONS,
              **{f"{k}_{r}": d for k, d in METRIC_DIRECTIONS.items() for r in ("mask", "pad")},
              "masked_f1_auc": "lower", "auc_rep": "lower",
              "human_map": "higher", "confidence_mae": "lower", "dataset_consistency": "higher",
              "rationale_consistency": "higher"}


def _table(summary: pd.DataFrame, columns: list[tuple[str, str]]) -> str:
    present = [(key, title) for key, title in columns if key in summary
               and summary[key].notna().any()]
    frame = summary[["method"] + [k for k, _ in present]].copy()
    frame.columns = ["method"] + [t for _, t in present]
    return markdown_table(frame)


def best_methods(summary: pd.DataFrame) -> list[str]:
    """One line per metric: the best method other than Random."""
    lines = []
    real = summary[summary["method"] != "Random"]
    for key, title in SUMMARY_COLUMNS + REPLACEMENT_COLUMNS + DIAGNOSTIC_COLUMNS:
        if key not in real or real[key].isna().all():
            continue
        index = real[key].idxmax() if DIRECTIONS[key] == "higher" else real[key].idxmin()
        lines.append(f"- {title}: **{real.loc[index, 'method']}** ({real.loc[index, key]:.4g})")
    return lines


def write_report(out: Path, summary: pd.DataFrame, consistency: pd.DataFrame | None,
                 meta: dict, plots: list[str], settings: BenchmarkSettings,
                 methods: list[str]) -> Path:
    machine = meta["machine"]
    lines = [
        "# Faithfulness benchmark",
        "",
        f"Model: {meta['model']}; {meta['n_examples']} held-out snippets (mean "
        f"{meta['mean_words']:.1f} words), accuracy {meta['accuracy']:.3f}; seed {meta['seed']}. "
        f"Every method explains the predicted class; metrics are computed on word scores.",
        f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch "
        f"{machine['torch']} with {machine['torch_threads']} threads"
        + (f", GPU {machine['cuda']}" if machine["cuda"] else ", no GPU") + ".",
        *[f"{note}" for note in meta["notes"]],
        "",
        "## Faithfulness",
        "",
        _table(summary, SUMMARY_COLUMNS),
        "",
        "Under replacement instead of deletion ([MASK], [PAD]: the same metrics, the top words "
        "replaced by that token); bootstrap 95 % intervals and paired comparisons of the "
        "leading methods are in [intervals.md](intervals.md).",
        "",
        _table(summary, REPLACEMENT_COLUMNS),
        "",
        "## Agreement, confidence and consistency",
        "",
        _table(summary, DIAGNOSTIC_COLUMNS),
        "",
        "## Cost",
        "",
        _table(summary, COST_COLUMNS),
        "",
        "## Best method per metric (Random excluded)",
        "",
        *best_methods(summary),
        "",
    ]
    lines += [f"![{name}]({name})" for name in plots] + [""]
    lines += [
        "## Methods",
        "",
        *[f"- **{m}**: {method_note(m, settings)}" for m in methods
          if m in summary["method"].tolist()],
        *[f"- **{m}** failed: {why}" for m, why in meta["failures"].items()],
        "",
        "## Metrics",
        "",
        f"- comp@20% / suff@20%: ERASER comprehensiveness m(x) − m(x∖r) and sufficiency "
        f"m(x) − m(r), r = the top ⌈{settings.fraction:g}·n⌉ words, m = probability of the "
        "predicted class, removal = deletion (the row re-packed).",
        "- AOPC comp / suff: ERASER bins 1, 5, 10, 20, 50 % with the released code's 1/|B| "
        "normalisation (the paper's Eq. 3 adds a k = 0 term: 5/6 of these values, same ranking); "
        "all-k: every k = 1..n, as ferret's `based_on=\"k\"`.",
        "- deletion area: area under m(x without the top k words), k = 0..n at x = k/n.",
        "- masked-F1 AUC (Atanasova et al. faithfulness): macro-F1 against the gold labels with "
        "the top 0, 10, ..., 100 % of the words replaced by [MASK]; ranked by the predicted "
        "class's scores (the paper sums saliency over classes).",
        "- AUC_rep (Kim et al.): top words replaced one by one by MLM samples until 20 %; area "
        "under P(predicted class).",
        "- VADER MAP: mean average precision of the word scores against the words whose VADER "
        "valence (mean human rating out of context) has the predicted class's polarity and "
        "|valence| ≥ 1. **A proxy for human rationales, not rationales.** Snippets without such "
        "a word are skipped.",
        "- confidence MAE: linear regression from saliency features to the predicted-class "
        "probability (5 shuffle splits, buckets up-sampled); predicting the training mean gives "
        + (f"{summary['confidence_baseline_mae'].mean():.4f}" if "confidence_baseline_mae"
           in summary else "n/a") + ".",
        "- dataset consistency: Spearman ρ between activation distance and saliency distance "
        "over high-overlap same-class and low-overlap different-class snippet pairs.",
        "- rationale consistency: the same across models (different seeds, untrained) on the "
        "same snippets; empty for methods not run there (InputMarginalization needs an MLM with "
        "those models' vocabulary, the LIT wrapper an HF model) and for Random (the same seeded "
        "maps for every model).",
        "- cost: forward calls and rows of the classifier counted by a hook (gradient methods "
        "also run one backward pass per forward); seconds include everything the method does.",
        "",
    ]
    if consistency is not None and len(consistency):
        lines += ["## Rationale consistency", "", markdown_table(consistency), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report

