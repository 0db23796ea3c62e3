"""The heap of one process explaining the same corpus groups over and over (docs/ray.md, "Why,
and the fix"): resident heap (RssAnon) and peak (VmHWM) after each pass, in MiB.

    python examples/corpus_heap_check.py --trim no  --n 256 --passes 4   # glibc's default heap
    python examples/corpus_heap_check.py --trim yes --n 256 --passes 4   # malloc_trim per group
    MALLOC_MMAP_THRESHOLD_=131072 python examples/corpus_heap_check.py --trim no --n 256

``--trim no`` disables the trimming ``explain_group`` does since 2026-12-01, to show what it
changes; ``--model tiny`` uses the random 2-layer BERT of corpus_ray_memory.py. Run from the
repository root with ``PYTHONPATH=.:examples HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import time

import torch

import captum_erasure.scale.corpus_run as corpus_run
from captum_erasure.data import load_rotten_tomatoes


def memory() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("RssAnon", "VmHWM"):
                values[key] = int(rest.split()[0]) // 1024
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", "tiny"], default="default")
    parser.add_argument("--trim", choices=["yes", "no"], default="yes")
    parser.add_argument("--n", type=int, default=256, help="held-out snippets per pass")
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.trim == "no":
        corpus_run._malloc_trim = lambda: None
    if args.model == "tiny":
        from corpus_ray_memory import tiny_factory
        model, tokenizer = tiny_factory()
    else:
        from captum_erasure import load_default_model
        model, tokenizer = load_default_model()
    frame = load_rotten_tomatoes("test").head(args.n)
    texts, labels = frame["text"].tolist(), frame["label"].tolist()
    settings = dict(target="gold", score="eq1", mode="delete")
    corpus = dict(lowercase=True, min_count=1, examples_per_word=3, keep_negative=200,
                  score_name="eq1", mode="delete", target="gold")
    start = time.perf_counter()
    for done in range(1, args.passes + 1):
        for s in range(0, len(texts), 64):
            explanations = corpus_run.explain_group(model, tokenizer, texts[s:s + 64],
                                                    labels[s:s + 64], settings)
            corpus_run.partial_tables(explanations, corpus)  # as the tables' runs do
        print(f"pass {done}: {memory()} after {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
