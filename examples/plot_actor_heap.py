"""The actor's heap over a corpus run, from the traces of ``corpus_ray_memory.py --trace-dir``
(docs/ray.md's figure and its per-window table).

    python examples/plot_actor_heap.py docs/ray_memory_trace/trimmed_10000.csv:"trimmed" \
        docs/ray_memory_trace/mmap_10000.csv:"mmap threshold 128 KiB" \
        --out docs/ray_memory_trace/actor_heap.png

Each trace is ``PATH[:LABEL]``. Prints, per trace and per ``--window`` seconds, the heap's
(RssAnon) peak and its low between groups, in MiB: a heap that creeps with the corpus shows as
rising window peaks, a flat one as peaks that stay within the same band.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def windows(trace: pd.DataFrame, seconds: float) -> pd.DataFrame:
    """Per window of ``seconds``: the heap's peak and low (MiB), after the model is loaded
    (samples before the heap first reaches half its peak are the actor starting up)."""
    started = trace[trace.RssAnon >= trace.RssAnon.max() / 2].seconds.min()
    trace = trace[trace.seconds >= started]
    window = ((trace.seconds - started) // seconds).astype(int)
    table = trace.groupby(window).RssAnon.agg(["max", "min"]).round().astype(int)
    table.index.name = f"window ({seconds:.0f} s)"
    return table.rename(columns={"max": "heap peak MiB", "min": "heap low MiB"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+", help="PATH[:LABEL] of actor_rss_N.csv files")
    parser.add_argument("--window", type=float, default=300.0, help="seconds per window")
    parser.add_argument("--out", type=Path, default=None, help="write the figure here (PNG)")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    for item in args.traces:
        path, _, label = item.partition(":")
        trace = pd.read_csv(path)
        for pid, one in trace.groupby("pid"):  # one line per actor process
            name = label or Path(path).stem
            if trace.pid.nunique() > 1:
                name += f" (pid {pid})"
            ax.plot(one.seconds / 60, one.RssAnon, linewidth=0.8, label=name)
            print(f"{name}: {path}")
            print(windows(one, args.window).T.to_string(), "\n")
    ax.set_xlabel("minutes since the run started")
    ax.set_ylabel("actor heap (RssAnon, MiB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Corpus tables on Ray, one actor, default model: the actor's own heap",
                 fontsize=9)
    fig.tight_layout()
    if args.out is not None:
        fig.savefig(args.out, dpi=130)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
