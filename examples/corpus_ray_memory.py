"""Peak memory and throughput of the corpus tables on Ray (docs/ray.md's table).

The corpus is the held-out Rotten Tomatoes snippets repeated to ``--n`` texts. The driver's peak
RSS is ``ru_maxrss``; each actor's is its ``VmHWM``, read from /proc while the run goes (the
actors are the processes titled ``ray::MapWorker(MapBatches(CorpusWorker))``).

    python examples/corpus_ray_memory.py --model default --n 1000 --actors 2
    python examples/corpus_ray_memory.py --model tiny --n 10000 --actors 2

``--model tiny`` is a random 2-layer BERT (hidden 32) over the default model's tokenizer: the
same words and the same code path at a fraction of the compute, for the memory-vs-corpus-size
rows on a small machine. ``--backend local`` runs the same corpus in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path


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
    """Polls /proc for the peak resident memory (VmHWM, MiB) of this run's actors (other Ray
    jobs on the machine may run CorpusWorker actors too) until stopped."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.peak, self.done = every, {}, threading.Event()

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
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        mib = int(line.split()[1]) / 1024
                        self.peak[proc.name] = max(self.peak.get(proc.name, 0), mib)
            self.done.wait(self.every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["default", "tiny"], default="default")
    parser.add_argument("--n", type=int, default=1000, help="snippets (held-out, repeated)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--backend", choices=["ray", "local"], default="ray")
    parser.add_argument("--texts-per-call", type=int, default=64)
    args = parser.parse_args()

    import ray
    import torch

    from captum_erasure.data import load_rotten_tomatoes
    from captum_erasure.scale.corpus_run import corpus_tables
    held_out = load_rotten_tomatoes("test")
    repeat = -(-args.n // len(held_out))
    texts = (held_out["text"].tolist() * repeat)[:args.n]
    labels = (held_out["label"].tolist() * repeat)[:args.n]
    model = "default" if args.model == "default" else tiny_factory
    monitor = ActorMemory()
    if args.backend == "ray":
        root = str(Path(__file__).resolve().parents[1])
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root, "OMP_NUM_THREADS": "1",
                                           MARKER.split("=")[0]: MARKER.split("=")[1]}})
        monitor.start()
    else:
        torch.set_num_threads(1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    result = corpus_tables(texts, labels=labels, model=model, backend=args.backend,
                           num_actors=args.actors, texts_per_call=args.texts_per_call,
                           show_progress=False)
    seconds = time.perf_counter() - start
    monitor.done.set()
    if args.backend == "ray":
        ray.shutdown()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rows = result.n_occurrences + result.n_texts  # one erased row per word + the original
    report = dict(model=args.model, backend=args.backend, snippets=args.n,
                  actors=args.actors if args.backend == "ray" else 0,
                  seconds=round(seconds, 1), texts_per_s=round(args.n / seconds, 1),
                  rows_per_s=round(rows / seconds, 1),
                  driver_peak_mib=round(usage.ru_maxrss / 1024),
                  driver_cpu_s=round(usage.ru_utime + usage.ru_stime - cpu_before, 1),
                  actor_peak_mib=sorted(round(v) for v in monitor.peak.values()),
                  word_types=len(result.stats))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
