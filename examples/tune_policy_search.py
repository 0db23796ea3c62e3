"""Tune ``MinimalErasure(search="policy")``'s explain-time settings on *dev* snippets (never
on the held-out test snippets the reported table uses), against the guided search on the same
snippets and with the same fitted policy (docs/policy_search.md, "Meeting the budget"):

    .venv/bin/python examples/tune_policy_search.py --first --n 100 \
        --policy outputs/policy/minilm-snippets/policy.pt --out outputs/policy/tune-dev-first \
        --grid 8:0:0 8:0:0:25 4:4:5:25 8:4:5:25 2:4:5:25

Each ``K:P:C[:B[:S]]`` of ``--grid`` is one setting: ``policy_samples`` K,
``policy_prefixes`` P, ``policy_chunks`` C, ``policy_budget`` B and ``policy_smaller`` S
(defaults 0). Writes ``tune.csv`` (one row per setting, earlier runs' settings in the same
folder kept: flip rate, mean |D|, mean and median predictions per text, share within 25, |D|
relative to the guided search where both flip) and prints it; ``texts_<setting>.csv`` per
text. ``--summarize`` gathers run folders into one CSV (docs/policy_search.md,
"Self-imitation").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_flips import held_out, shuffled  # noqa: E402
from flips_summary import POLICY_TARGET  # noqa: E402

from captum_erasure import MinimalErasure  # noqa: E402
from captum_erasure.data import load_rotten_tomatoes  # noqa: E402
from captum_erasure.explain.report import markdown_table  # noqa: E402
from captum_erasure.models.default import load_default_model  # noqa: E402


def run(explainer: MinimalErasure, tokenizer, texts: list[str], units: str) -> pd.DataFrame:
    start = time.perf_counter()
    results = []
    for i in range(0, len(texts), 50):  # groups of 50 keep memory flat
        results += explainer.explain(texts[i:i + 50], tokenizer=tokenizer, units=units)
    seconds = time.perf_counter() - start
    return pd.DataFrame({"n_words": [len(r.words) for r in results],
                         "flipped": [r.flipped for r in results],
                         "minimal": [r.minimal for r in results],
                         "size": [len(r.erased) if r.flipped else np.nan for r in results],
                         "rows": [r.forward_passes for r in results],
                         "seconds": seconds / len(results)})


def summary_row(snippets: str, setting: str, part: pd.DataFrame, guided: pd.DataFrame,
                run_name: str) -> dict:
    both = part.flipped & guided.flipped
    return dict(snippets=snippets, setting=setting, flip_rate=part.flipped.mean(),
                mean_size=part["size"][part.flipped].mean(),
                size_vs_guided=part["size"][both].mean() / guided["size"][both].mean(),
                predictions=part.rows.mean(), median_predictions=part.rows.median(),
                within_25=(part.rows <= POLICY_TARGET).mean(),
                seconds_per_text=part.seconds.iloc[0], run=run_name)


def collect(runs: Path, out: Path) -> None:
    """docs/flips/policy_budget.csv from the runs of docs/policy_search.md's "Meeting the
    budget": the dev tuning folders (``tune-dev-first*``) and the test runs
    (``minilm-snippets200``; ``minilm-snippets200-before``: the policy search K = 8 run with
    the code before the change), one row per snippet set and setting (first occurrence)."""
    rows, seen = [], set()
    for folder in sorted(runs.glob("tune-dev-first*")):
        guided = pd.read_csv(folder / "guided.csv") if (folder / "guided.csv").exists() \
            else None
        if not list(folder.glob("texts_*.csv")):  # a run before per-text files: tune.csv
            for row in pd.read_csv(folder / "tune.csv").to_dict("records"):
                name = row["setting"].replace(" B=0", "")
                if name not in seen:
                    seen.add(name)
                    rows.append(dict(snippets="dev first 100 (tuning)", setting=name,
                                     flip_rate=row["flip_rate"], mean_size=row["mean_size"],
                                     size_vs_guided=row["size_vs_guided"],
                                     predictions=row["predictions"],
                                     median_predictions=row["median_predictions"],
                                     within_25=row["within_target"],
                                     seconds_per_text=row["seconds"], run=folder.name))
        for path in sorted(folder.glob("texts_*.csv")):
            part = pd.read_csv(path)
            values = [int(v) for v in path.stem.split("_")[1].split("-")]
            name = "policy K={} P={} C={}".format(*values[:3]) + \
                (f" B={values[3]}" if values[3] else "") + \
                (" fitted order (removed)" if values[4:] == [1] else "")
            if guided is None:
                guided = part.assign(flipped=part.guided_size.notna(), size=part.guided_size,
                                     rows=part.guided_rows)
            if name not in seen:
                seen.add(name)
                rows.append(summary_row("dev first 100 (tuning)", name, part, guided,
                                        folder.name))
        if "guided" not in seen and guided is not None:
            seen.add("guided")
            rows.insert(0, summary_row("dev first 100 (tuning)", "guided", guided, guided,
                                       folder.name))
    test = runs / "minilm-snippets200"
    guided = pd.read_csv(test / "minimal_erasure_whitespace.csv")
    before = sorted((runs / "minilm-snippets200-before").glob("policy*_whitespace.csv"))
    for path in sorted(test.glob("*_whitespace.csv")) + before:
        part = pd.read_csv(path).rename(columns={"seconds_per_snippet": "seconds"})
        name = part.method.iloc[0].replace(" (whitespace)", "").replace("MinimalErasure",
                                                                        "guided") + \
            (", code before this change" if path in before else "")
        rows.append(summary_row("test first 200 (held out)", name, part,
                                guided.rename(columns={"seconds_per_snippet": "seconds"}),
                                test.name))
    table = pd.DataFrame(rows).round(4)
    table.to_csv(out, index=False)
    print(markdown_table(table))


def with_intervals(row: dict, part: pd.DataFrame, guided: pd.DataFrame,
                   resamples: int = 5000) -> dict:
    """Bootstrap 95% intervals over the texts (seed 0): the size ratio to the guided search
    (texts both flip, resampled as pairs) and the mean predictions per text."""
    rng = np.random.default_rng(0)
    both = (part.flipped & guided.flipped).to_numpy()
    ours, theirs = part["size"].to_numpy()[both], guided["size"].to_numpy()[both]
    pick = rng.integers(0, len(ours), (resamples, len(ours)))
    ratio = ours[pick].mean(1) / theirs[pick].mean(1)
    rows = part.rows.to_numpy()
    cost = rows[rng.integers(0, len(rows), (resamples, len(rows)))].mean(1)
    return dict(row, size_vs_guided_low=np.percentile(ratio, 2.5),
                size_vs_guided_high=np.percentile(ratio, 97.5),
                predictions_low=np.percentile(cost, 2.5),
                predictions_high=np.percentile(cost, 97.5))


def summarize_runs(folders: list[Path], out: Path) -> None:
    """One CSV row per setting of each named run folder against the guided search of the
    same folder (same policy, same snippets), with bootstrap intervals (:func:`with_intervals`):
    a tuning folder of this script (its ``guided.csv`` and per-text ``texts_*.csv``) or a
    ``compare_flips.py`` folder (its per-text ``*_whitespace.csv``)."""
    rows = []
    for folder in folders:
        if (folder / "guided.csv").exists():
            guided = pd.read_csv(folder / "guided.csv")
            texts = f"dev, {len(guided)} {'long ' if 'long' in folder.name else ''}(tuning)"
            rows.append(with_intervals(summary_row(texts, "guided", guided, guided,
                                                   folder.name), guided, guided))
            for path in sorted(folder.glob("texts_*.csv")):
                k, p, c, budget, smaller = ([int(v) for v in path.stem.split("_")[1].split("-")]
                                            + [0, 0])[:5]
                name = f"policy K={k} P={p} C={c}" + (f" B={budget}" if budget else "") + \
                    (f" S={smaller}" if smaller else "")
                part = pd.read_csv(path)
                rows.append(with_intervals(summary_row(texts, name, part, guided, folder.name),
                                           part, guided))
            continue
        guided = pd.read_csv(folder / "minimal_erasure_whitespace.csv").rename(
            columns={"seconds_per_snippet": "seconds"})
        for path in sorted(folder.glob("*_whitespace.csv")):
            part = pd.read_csv(path).rename(columns={"seconds_per_snippet": "seconds"})
            name = part.method.iloc[0].replace(" (whitespace)", "").replace(
                "MinimalErasure", "guided")
            rows.append(with_intervals(summary_row(
                f"test, {len(part)} {'long ' if 'long' in folder.name else ''}(held out)",
                name, part, guided, folder.name), part, guided))
    table = pd.DataFrame(rows).round(4)
    table.insert(0, "model", ["Bi-LSTM" if "bilstm" in run else "MiniLM" for run in table.run])
    table.to_csv(out, index=False)
    print(markdown_table(table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="policy.pt (required unless --collect)")
    parser.add_argument("--out", default="outputs/policy/tune-dev")
    parser.add_argument("--n", type=int, default=100, help="dev snippets")
    parser.add_argument("--offset", type=int, default=0, help="skip this many dev snippets")
    parser.add_argument("--first", action="store_true",
                        help="the first dev snippets in the split's order (sorted positive "
                             "first, as the held-out test snippets are) instead of shuffled")
    parser.add_argument("--long", action="store_true",
                        help="--n evenly spaced dev snippets of at least 30 whitespace words")
    parser.add_argument("--units", default="whitespace")
    parser.add_argument("--grid", nargs="+", default=["8:0:0"], help="K:P:C[:B[:S]] settings")
    parser.add_argument("--collect", default=None,
                        help="a folder of runs: write the summary CSV to --out and stop")
    parser.add_argument("--summarize", nargs="+", default=None,
                        help="run folders (tuning or compare_flips.py): one CSV (--out) of "
                             "every setting against its folder's guided search, and stop")
    args = parser.parse_args()
    if args.collect:
        collect(Path(args.collect), Path(args.out))
        return
    if args.summarize:
        summarize_runs([Path(f) for f in args.summarize], Path(args.out))
        return
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_default_model()
    if args.long:  # evenly spaced dev snippets of >= 30 words, as compare_flips' long texts
        texts = held_out("long", args.n, 30, split="dev").text.tolist()
    else:
        texts = load_rotten_tomatoes("dev").text.head(args.offset + args.n).tolist() \
            if args.first else shuffled("dev", args.offset + args.n)
        texts = texts[args.offset:]
    fitted = MinimalErasure(model, seed=0)
    fitted.load_policy(args.policy)

    def explainer(**settings) -> MinimalErasure:
        me = MinimalErasure(model, seed=0, **settings)
        me.policy, me.baseline = fitted.policy, fitted.baseline
        return me

    cached = out / "guided.csv"  # the guided search on the same snippets, once per --out
    guided = pd.read_csv(cached) if cached.exists() else \
        run(explainer(), tokenizer, texts, args.units)
    guided.to_csv(cached, index=False)
    rows = [dict(setting="guided", flip_rate=guided.flipped.mean(),
                 mean_size=guided["size"].mean(), predictions=guided.rows.mean(),
                 median_predictions=guided.rows.median(),
                 within_target=(guided.rows <= POLICY_TARGET).mean(), size_vs_guided=1.0,
                 seconds=guided.seconds.iloc[0])]
    print(rows[-1], flush=True)
    for setting in args.grid:
        k, p, c, budget, smaller = (int(v) for v in (setting + ":0:0").split(":")[:5])
        part = run(explainer(search="policy", policy_samples=k, policy_prefixes=p,
                             policy_chunks=c, policy_budget=budget, policy_smaller=smaller),
                   tokenizer, texts, args.units)
        part.assign(guided_size=guided["size"], guided_rows=guided.rows).to_csv(
            out / f"texts_{setting.replace(':', '-')}.csv", index=False)
        both = part.flipped & guided.flipped
        assert part.minimal[part.flipped].all()
        rows.append(dict(setting=f"policy K={k} P={p} C={c} B={budget}" +
                         (f" S={smaller}" if smaller else ""),
                         flip_rate=part.flipped.mean(),
                         mean_size=part["size"].mean(), predictions=part.rows.mean(),
                         median_predictions=part.rows.median(),
                         within_target=(part.rows <= POLICY_TARGET).mean(),
                         size_vs_guided=part["size"][both].mean() / guided["size"][both].mean(),
                         seconds=part.seconds.iloc[0]))
        print(rows[-1], flush=True)
        earlier = pd.read_csv(out / "tune.csv") if (out / "tune.csv").exists() else None
        table = pd.DataFrame(rows) if earlier is None else \
            pd.concat([earlier, pd.DataFrame(rows)]).drop_duplicates("setting", keep="last")
        table.to_csv(out / "tune.csv", index=False)  # earlier runs' settings kept
    print(markdown_table(pd.DataFrame(rows).round(3)))


if __name__ == "__main__":
    main()
