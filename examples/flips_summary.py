"""The tables of examples/compare_flips.py (and docs/policy_search.md's CSVs): method names,
result files and the summary of a run's per-snippet results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from captum_erasure.explain.report import markdown_table

UNIT_NAMES = ("whitespace", "words")
BUDGET = 75


POLICY_TARGET = 25  # predictions per text the policy search aims to stay within
SEARCH_FILES = {"guided": "minimal_erasure", "policy": "policy"}


def result_files(out: Path) -> list[Path]:
    return [path for units in UNIT_NAMES for stem in ("greedy", *SEARCH_FILES.values())
            for path in sorted(out.glob(f"{stem}*_{units}.csv"))]


def method_name(search: str, units: str, samples: int = 0, prefixes: int = 0,
                chunks: int = 0, budget: int = 0, smaller: int = 0) -> str:
    extra = (f" P={prefixes}" if prefixes else "") + (f" C={chunks}" if chunks else "") + \
        (f" B={budget}" if budget else "") + (f" S={smaller}" if smaller else "")
    return f"MinimalErasure ({units})" if search == "guided" else \
        f"policy search K={samples}{extra} ({units})"


def method_file(search: str, units: str, samples: int = 0, prefixes: int = 0,
                chunks: int = 0, budget: int = 0, smaller: int = 0) -> str:
    extra = (f"-p{prefixes}" if prefixes else "") + (f"-c{chunks}" if chunks else "") + \
        (f"-b{budget}" if budget else "") + (f"-s{smaller}" if smaller else "")
    return f"minimal_erasure_{units}.csv" if search == "guided" else \
        f"policy{samples}{extra}_{units}.csv"


def summarize(out: Path) -> pd.DataFrame:
    frames = [pd.read_csv(path) for path in result_files(out) if path.exists()]
    if (out / "ablation_flip.jsonl").exists():
        frames.append(pd.read_json(out / "ablation_flip.jsonl", lines=True))
    if not frames:
        return pd.DataFrame()
    data = pd.concat(frames, ignore_index=True)
    if "size" not in data:
        data["size"] = np.nan
    data["size"] = data["size"].fillna(data.size_whitespace)  # AblationFlip: ws tokens
    common = set.intersection(*[set(f.id) for f in frames])
    data = data[data.id.isin(common)]
    stats = json.loads((out / "call_stats.json").read_text()) if \
        (out / "call_stats.json").exists() else {}
    table = []
    for method, part in data.groupby("method", sort=False):
        flipped = part[part.flipped]
        table.append({
            "method": method, "snippets": len(part),
            "flip rate": f"{part.flipped.mean():.1%} ({int(part.flipped.sum())})",
            "mean |D|": _fmt(flipped["size"].mean()),
            "median |D|": _fmt(flipped["size"].median()),
            "mean |D| ws tokens": _fmt(flipped.size_whitespace.mean()),
            "predictions / snippet": _fmt(part.rows.mean(), 1),
            "median": _fmt(part.rows.median(), 0),
            "max": int(part.rows.max()),
            f"<= {POLICY_TARGET}": f"{(part.rows <= POLICY_TARGET).mean():.1%}",
            f"<= {BUDGET}": f"{(part.rows <= BUDGET).mean():.1%}",
            "forward calls": stats.get(method, {}).get(
                "forward_calls", int(part["calls"].sum()) if "calls" in part else ""),
            "seconds / snippet": _fmt(part.seconds_per_snippet.mean(), 3)})
    summary = pd.DataFrame(table)
    sizes = data.pivot_table(index="id", columns="method", values="size", aggfunc="first")
    pairs = []
    for units in UNIT_NAMES:
        guided = method_name("guided", units)
        policies = [m for m in sizes if m.startswith("policy search") and f"({units})" in m]
        for ours, peer in ((guided, "AblationFlip"), (f"greedy ({units})", "AblationFlip"),
                           (guided, f"greedy ({units})"),
                           *[(p, guided) for p in policies],
                           *[(p, "AblationFlip") for p in policies]):
            if ours not in sizes or peer not in sizes:
                continue
            both = sizes[[ours, peer]].dropna()
            if both.empty:
                continue
            pairs.append(dict(
                comparison=f"{ours} vs {peer}", both_flip=len(both),
                ours_le_peer=f"{(both[ours] <= both[peer]).mean():.1%}",
                ours_lt_peer=f"{(both[ours] < both[peer]).mean():.1%}",
                mean_ours=_fmt(both[ours].mean()), mean_peer=_fmt(both[peer].mean())))
    pairs = pd.DataFrame(pairs)
    lines = ["# Decision flips", "",
             f"{len(common)} held-out snippets present in every method's results. |D| in the "
             "method's units (AblationFlip: whitespace tokens).", "",
             markdown_table(summary), ""]
    if not pairs.empty:
        lines += ["## |D| where both flip", "",
                  "Each in its own units: in words (punctuation separate) against "
                  "AblationFlip's whitespace tokens is the strict reading.", "",
                  markdown_table(pairs), ""]
    if (out / "input_reduction.csv").exists():
        red = pd.read_csv(out / "input_reduction.csv")
        rtable = red.groupby("setting", sort=False).agg(
            snippets=("id", "size"), kept_fraction=("kept_fraction", "mean"),
            mean_words=("n_words", "mean"), mean_kept=("kept", "mean"),
            original_confidence=("original_confidence", "mean"),
            reduced_confidence=("confidence", "mean"), verified=("verified", "mean"),
            predictions=("rows", "mean"), seconds=("seconds_per_snippet", "mean")).reset_index()
        lines += ["## Input reduction", "", markdown_table(rtable.round(3)), ""]
    if (out / "fit_history.csv").exists():
        fit = json.loads((out / "fit.json").read_text()) if (out / "fit.json").exists() else {}
        lines += ["## Amortised training", "", json.dumps(fit), ""]
    if (out / "fit_curve.csv").exists():
        lines += ["## Policy search during the fit (dev snippets)", "",
                  markdown_table(pd.read_csv(out / "fit_curve.csv").round(3)), ""]
    (out / "summary.md").write_text("\n".join(lines))
    summary.to_csv(out / "summary.csv", index=False)
    print("\n".join(lines))
    return summary


def _fmt(value: float, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        f"{value:.{digits}f}"


def collect(runs: Path, out: Path) -> None:
    """docs/policy_search.md's CSVs from the runs of its commands: every summary table row
    (``policy_search_summary.csv``), the fit curves (``policy_fit_curves.csv``), and the model
    comparison on the texts both models ran (``policy_model_comparison.csv``, printed)."""
    out.mkdir(parents=True, exist_ok=True)
    tables = [pd.read_csv(runs / f"{model}-{texts}{tag}" / "summary.csv").assign(
        model=model, texts=texts, run=f"{model}-{texts}{tag}")
        for model in ("minilm", "bilstm") for texts in ("snippets", "long")
        for tag in ("", "200", "-unfitted", "-lit") if (runs / f"{model}-{texts}{tag}").exists()]
    pd.concat(tables).to_csv(out / "policy_search_summary.csv", index=False)
    curves = [pd.read_csv(path).assign(run=path.parent.name)
              for path in sorted(runs.glob("*/fit_curve.csv"))]
    pd.concat(curves).to_csv(out / "policy_fit_curves.csv", index=False)
    rows = []
    for texts in ("snippets", "long"):
        ids = set(pd.read_csv(runs / f"minilm-{texts}" / "policy8_whitespace.csv").id)
        for model in ("minilm", "bilstm"):
            for stem in ("greedy", "minimal_erasure", "policy8"):
                part = pd.read_csv(runs / f"{model}-{texts}" / f"{stem}_whitespace.csv")
                part = part[part.id.isin(ids)]
                rows.append({"texts": texts, "model": model, "method": part.method.iloc[0],
                             "texts_n": len(part), "flip_rate": part.flipped.mean(),
                             "mean_size": part[part.flipped]["size"].mean(),
                             "predictions": part.rows.mean()})
    table = pd.DataFrame(rows).round(3)
    table.to_csv(out / "policy_model_comparison.csv", index=False)
    print(markdown_table(table))
