"""Peak memory and throughput of the corpus tables on Ray (docs/ray.md's table).

The corpus is the held-out Rotten Tomatoes snippets repeated to ``--n`` texts. The driver's peak
RSS is ``ru_maxrss``; each actor's is its ``VmHWM``, read from /proc while the run goes (the
actors are the processes titled ``ray::MapWorker(MapBatches(CorpusWorker))``).

    python examples/corpus_ray_memory.py --model default --n 1000 --actors 2
    python examples/corpus_ray_memory.py --model tiny --n 10000 --actors 2
    python examples/corpus_ray_memory.py --model default --sizes 500 5000 --actors 1 \
        --csv docs/ray_memory.csv          # one fresh process per size and backend, a table

With ``--sizes`` every (size, backend) pair runs in its own process (``ru_maxrss`` is a
process's peak), its row is appended to ``--csv`` as soon as it finishes, and the table of all
the CSV's rows is printed at the end.

``--model tiny`` is a random 2-layer BERT (hidden 32) over the default model's tokenizer: the
same words and the same code path at a fraction of the compute, for the memory-vs-corpus-size
rows on a small machine. ``--backend local`` runs the same corpus in this process.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

COLUMNS = ["model", "backend", "snippets", "actors", "seconds", "texts_per_s", "rows_per_s",
           "driver_peak_mib", "driver_cpu_s", "actor_peak_mib", "word_types", "load_avg",
           "actor_anon_peak_mib", "actor_shmem_peak_mib", "actor_file_peak_mib", "heap"]
# "heap": how the C heap was handled; rows before release_freed_memory() say "glibc default"
HEAP = "trimmed per group"


def tiny_factory(device=None):
    """Random 2-layer BERT over the default tokenizer (defined in __main__: Ray pickles it by
    value, so the actors need no path to this script)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from captum_erasure.models.default import default_model_dir
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=2,
                        max_position_embeddings=512, initializer_range=0.5)
    return BertForSequenceClassification(config).eval().to(device or "cpu"), tokenizer


MARKER = f"CORPUS_RAY_MEMORY_RUN={os.getpid()}"  # in this run's actors' environment only


class ActorMemory(threading.Thread):
    """Polls /proc for this run's actors (other Ray jobs on the machine may run CorpusWorker
    actors too) until stopped: the peak resident memory (VmHWM, MiB) and the peaks of its
    parts: RssAnon (the process's own heap), RssShmem (pages of Ray's shared object store it
    has touched) and RssFile (mapped files and libraries). ``trace`` keeps every sample."""

    PARTS = ("VmRSS", "RssAnon", "RssShmem", "RssFile")

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.done = every, {}, threading.Event()
        self.parts: dict[str, dict[str, float]] = {}
        self.trace: list[dict] = []
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.done.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if b"MapWorker(MapBatches(CorpusWorker))" not in \
                            (proc / "cmdline").read_bytes():
                        continue
                    if MARKER.encode() not in (proc / "environ").read_bytes().split(b"\0"):
                        continue
                    status = (proc / "status").read_text()
                except OSError:
                    continue
                values = {}
                for line in status.splitlines():
                    key, _, rest = line.partition(":")
                    if key == "VmHWM" or key in self.PARTS:
                        values[key] = int(rest.split()[0]) / 1024
                if "VmHWM" not in values:
                    continue
                self.peak[proc.name] = max(self.peak.get(proc.name, 0), values["VmHWM"])
                peaks = self.parts.setdefault(proc.name, {})
                for key in self.PARTS:
                    peaks[key] = max(peaks.get(key, 0), values.get(key, 0))
                self.trace.append({"seconds": round(time.monotonic() - self.start_time, 1),
                                   "pid": int(proc.name),
                                   **{k: round(values.get(k, 0), 1) for k in self.PARTS}})
            self.done.wait(self.every)

    def peak_of(self, key: str) -> str:
        return " ".join(str(round(v[key])) for _, v in sorted(self.parts.items()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", "tiny"], default="default")
    parser.add_argument("--n", type=int, default=1000, help="snippets (held-out, repeated)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="several corpus sizes, each in a fresh process (with --csv)")
    parser.add_argument("--backends", nargs="+", choices=["ray", "local"],
                        default=["local", "ray"], help="with --sizes")
    parser.add_argument("--csv", type=Path, default=None, help="append the rows here")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--backend", choices=["ray", "local"], default="ray")
    parser.add_argument("--texts-per-call", type=int, default=64)
    parser.add_argument("--trace-dir", type=Path, default=None,
                        help="write each actor's memory every 5 s here (actor_rss_N.csv)")
    parser.add_argument("--actor-heap", choices=["trimmed", "mapped"], default="trimmed",
                        help="ray_options['actor_heap'] of the run (docs/ray.md)")
    parser.add_argument("--actor-env", nargs="+", default=[], metavar="KEY=VALUE",
                        help="environment variables of the actors (e.g. glibc's "
                             "MALLOC_MMAP_THRESHOLD_=131072); written to the heap column")
    return parser.parse_args(argv)


def actor_env(args: argparse.Namespace) -> dict[str, str]:
    pairs = [item.partition("=") for item in args.actor_env]
    if any(not key or not eq for key, eq, _ in pairs):
        raise SystemExit(f"--actor-env takes KEY=VALUE pairs, got {args.actor_env}")
    return {key: value for key, _, value in pairs}


def measure(args: argparse.Namespace) -> dict:
    """One run in this process: the corpus tables of ``args.n`` snippets, with its peaks."""
    import torch

    from captum_erasure.data import load_rotten_tomatoes
    from captum_erasure.scale.corpus_run import corpus_tables
    torch.set_num_threads(1)  # the driver (and the local backend): one thread, like an actor
    load_before = os.getloadavg()[0]
    held_out = load_rotten_tomatoes("test")
    repeat = -(-args.n // len(held_out))
    texts = (held_out["text"].tolist() * repeat)[:args.n]
    labels = (held_out["label"].tolist() * repeat)[:args.n]
    model = "default" if args.model == "default" else tiny_factory
    monitor = ActorMemory()
    if args.backend == "ray":
        import ray  # only here: the local rows are a process without Ray
        root = str(Path(__file__).resolve().parents[1])
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1",
                                           MARKER.split("=")[0]: MARKER.split("=")[1],
                                           **actor_env(args)}})
        monitor.start()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    result = corpus_tables(texts, labels=labels, model=model, backend=args.backend,
                           num_actors=args.actors, texts_per_call=args.texts_per_call,
                           show_progress=False,
                           ray_options={"actor_heap": args.actor_heap}
                           if args.backend == "ray" else None)
    seconds = time.perf_counter() - start
    monitor.done.set()
    if args.trace_dir is not None and monitor.trace:
        args.trace_dir.mkdir(parents=True, exist_ok=True)
        with (args.trace_dir / f"actor_rss_{args.n}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, list(monitor.trace[0]))
            writer.writeheader()
            last: dict[int, float] = {}
            for sample in monitor.trace:  # one sample per actor every 5 s
                if sample["seconds"] - last.get(sample["pid"], -5.0) >= 5.0:
                    writer.writerow(sample)
                    last[sample["pid"]] = sample["seconds"]
    if args.backend == "ray":
        ray.shutdown()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rows = result.n_occurrences + result.n_texts  # one erased row per word + the original
    return dict(model=args.model, backend=args.backend, snippets=args.n,
                actors=args.actors if args.backend == "ray" else 0,
                seconds=round(seconds, 1), texts_per_s=round(args.n / seconds, 1),
                rows_per_s=round(rows / seconds, 1),
                driver_peak_mib=round(usage.ru_maxrss / 1024),
                driver_cpu_s=round(usage.ru_utime + usage.ru_stime - cpu_before, 1),
                actor_peak_mib=" ".join(str(round(v)) for v in sorted(monitor.peak.values())),
                word_types=len(result.stats),
                load_avg=f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
                actor_anon_peak_mib=monitor.peak_of("RssAnon"),
                actor_shmem_peak_mib=monitor.peak_of("RssShmem"),
                actor_file_peak_mib=monitor.peak_of("RssFile"),
                heap="; ".join([HEAP if args.actor_heap == "trimmed" or args.backend != "ray"
                                else "mapped large blocks, trimmed per group", *args.actor_env]))


def measure_sizes(args: argparse.Namespace) -> None:
    """Every (size, backend) pair in a fresh process; rows appended to the CSV as they come."""
    for n in args.sizes:
        for backend in args.backends:
            command = [sys.executable, __file__, "--model", args.model, "--n", str(n),
                       "--backend", backend, "--actors", str(args.actors),
                       "--num-cpus", str(args.num_cpus),
                       "--texts-per-call", str(args.texts_per_call)]
            if args.trace_dir is not None:
                command += ["--trace-dir", str(args.trace_dir)]
            if args.actor_env:
                command += ["--actor-env", *args.actor_env]
            command += ["--actor-heap", args.actor_heap]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            append_row(args.csv, row)
    print(markdown_table(args.csv))


def append_row(path: Path, row: dict) -> None:
    """Append ``row``; a CSV written before a column was added gets the new header (its
    rows keep blanks there)."""
    rows = []
    if path.exists():
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != COLUMNS:
                rows = list(reader)
    if rows or not path.exists():
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS, restval="")
            writer.writeheader()
            writer.writerows(rows)
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, COLUMNS, restval="").writerow(row)


def markdown_table(path: Path) -> str:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.get(c) or "" for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.sizes:
        if args.csv is None:
            raise SystemExit("--sizes needs --csv")
        measure_sizes(args)
    else:
        print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
