"""The Ray Data backend of :mod:`captum_erasure.scale.corpus_run` (imported only for
``backend="ray"``; Ray itself is imported inside the functions).

The corpus becomes a Ray Dataset with columns ``text`` (and ``label``), cut into blocks of
exactly ``texts_per_call`` rows (``repartition(strict=True)``), so that ``map_batches`` hands
every actor the same groups one process explains. A fixed pool of :class:`CorpusWorker` actors
(one per GPU with ``num_gpus=1``, else CPU actors with one torch thread each) loads the model
once per actor; each batch returns either its rows of explanations or its partial word
statistics (pickled :class:`~captum_erasure.explain.corpus.CorpusImportance`, a few KB). The
driver reads the results in corpus order (``preserve_order``) and merges or writes them as they
come, so it holds one block at a time.

Faults: Ray Data's actors are restarted (``max_restarts=-1``) and the batch a dead actor held is
resubmitted (``max_task_retries=-1``); a batch's output is used only once it completes, so no
text is lost or counted twice. A model that fails to load is reported by the actor's first
batch as one :class:`~captum_erasure.scale.corpus_run.ModelLoadError`.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from captum_erasure.scale import _hf_corpus
from captum_erasure.scale.corpus_run import (
    ModelLoadError,
    ResultSink,
    _preserving_order,
    explain_group,
    explanation_table,
    file_kind,
    glibc,
    is_hf_dataset,
    is_ray_dataset,
    load_model,
    parquet_schema,
    partial_tables,
)

# the folder holding the captum_erasure package: a local Ray's workers import this same copy
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
OPTIONS = ("num_cpus", "cpus_per_actor", "runtime_env", "actor_heap")
ACTOR_HEAPS = ("trimmed", "mapped")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def map_large_allocations(threshold: int = 128 * 1024) -> bool:
    """glibc: every allocation of at least ``threshold`` bytes gets its own mapping, handed
    back to the system when freed (``mallopt(M_MMAP_THRESHOLD)``; setting it also stops glibc
    from raising the threshold as freed blocks grow, its default). A CPU actor's activation
    tensors then never fragment its heap, so its peak stays flat over a corpus of any length,
    at the cost of fresh zeroed pages for each large tensor (docs/ray.md). False off glibc."""
    libc = glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))


def connect(address: str | None, options: dict) -> bool:
    """Join ``address`` or start a local Ray; True if this call started it."""
    import ray
    if ray.is_initialized():
        return False
    runtime_env = dict(options.get("runtime_env") or {})
    if address:
        ray.init(address=address, runtime_env=runtime_env or None)
        return True
    env_vars = dict(runtime_env.get("env_vars") or {})
    paths = [PACKAGE_ROOT, env_vars.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))]
    env_vars["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    runtime_env["env_vars"] = env_vars
    ray.init(num_cpus=options.get("num_cpus"), runtime_env=runtime_env,
             include_dashboard=False)
    return True


def to_dataset(source: Any, labels: Any, text_column: str, label_column: str | None) -> Any:
    """The corpus as a Ray Dataset with columns ``text`` and, if any, ``label``."""
    import pyarrow as pa
    import ray
    kind = file_kind(source)
    if kind is None and not is_ray_dataset(source) and not is_hf_dataset(source):
        texts = [source] if isinstance(source, str) else list(source)
        columns = {"text": pa.array(texts, pa.string())}
        if labels is not None:
            labels = list(labels)
            if len(labels) != len(texts):
                raise ValueError(f"got {len(labels)} labels for {len(texts)} texts")
            columns["label"] = labels
        return ray.data.from_arrow(pa.table(columns))
    if labels is not None:
        raise ValueError("labels= goes with a list of texts; a table's labels are its "
                         "label_column")
    if is_hf_dataset(source):
        return _hf_corpus.ray_dataset(source, text_column, label_column)
    if kind == "parquet":
        dataset = ray.data.read_parquet(str(source))
    elif kind == "csv":
        import pyarrow.csv as csv
        dataset = ray.data.read_csv(str(source), convert_options=csv.ConvertOptions(
            column_types={text_column: pa.string()}))
    elif kind == "json":
        dataset = ray.data.read_json(str(source), lines=True)
    else:
        dataset = source
    names = dataset.columns()
    if text_column not in names:
        raise ValueError(f"the corpus has no column {text_column!r} (columns: {names})")
    keep = {text_column: "text"}
    if label_column is not None and label_column in names:
        keep[label_column] = "label"
    return dataset.select_columns(list(keep)).rename_columns(keep)


class CorpusWorker:
    """One Ray actor: the model, loaded once, and the shared engine behind it."""

    def __init__(self, job: dict, threads: int, use_gpu: bool, heap: str = "trimmed") -> None:
        if heap == "mapped" and not use_gpu:  # before the model's weights are allocated
            map_large_allocations()
        torch.set_num_threads(threads)
        self.job = job
        self.schema = None if job["task"] == "tables" else parquet_schema(
            job["settings"]["score"], job["settings"]["mode"])
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.error: ModelLoadError | None = None
        try:
            self.model, self.tokenizer = load_model(job["factory"], device)
        except ModelLoadError as err:
            # raised by the first batch: one clear error, where an exception here would have
            # Ray replace the actor and try again
            self.error = err

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa
        if self.error is not None:
            raise self.error
        texts = batch.column("text").to_pylist()
        labels = batch.column("label").to_pylist() if "label" in batch.column_names else None
        explanations = explain_group(self.model, self.tokenizer, texts, labels,
                                     self.job["settings"])
        if self.schema is not None:
            return explanation_table(explanations, self.schema)
        part = partial_tables(explanations, self.job["corpus"])
        return pa.table({"n_texts": pa.array([len(texts)], pa.int64()),
                         "partial": pa.array([pickle.dumps(part)], pa.binary())})


def _load_error(err: BaseException) -> str | None:
    """The message of a ModelLoadError behind Ray's wrappers (``RayTaskError`` keeps the
    remote traceback as text, not the exception), else None."""
    marker = f"{ModelLoadError.__module__}.{ModelLoadError.__name__}: "
    lines = [line for line in str(err).splitlines() if line.startswith(marker)]
    if isinstance(err, ModelLoadError):
        return str(err)
    return lines[-1].removeprefix(marker) if lines else None


def _cpus_per_actor(cpus: float, num_actors: int) -> float:
    """One CPU per actor, less where the pool would take every CPU: Ray Data's own tasks
    (reading, cutting blocks) need one, or they wait for ever behind the actors."""
    if num_actors * 1 <= cpus - 1:
        return 1
    return max(0.01, (cpus - 1) / num_actors) if cpus > 1 else 0.5 / num_actors


def run(job: dict, source: Any, labels: Any, *, address: str | None,
        num_actors: int | None, options: dict) -> Any:
    import ray
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown ray_options {unknown}; known: {list(OPTIONS)}")
    heap = options.get("actor_heap", "trimmed")
    if heap not in ACTOR_HEAPS:
        raise ValueError(f"ray_options['actor_heap'] must be one of {ACTOR_HEAPS}, got {heap!r}")
    started = connect(address, options)
    try:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 1)
        if num_actors is None:
            num_actors = gpus or max(1, int(cpus))
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}")
        cpus_per_actor = options.get("cpus_per_actor", _cpus_per_actor(cpus, num_actors))
        size = job["texts_per_call"]
        dataset = to_dataset(source, labels, job["text_column"], job["label_column"])
        dataset = dataset.repartition(target_num_rows_per_block=size, strict=True)
        mapped = dataset.map_batches(
            CorpusWorker, batch_size=size, batch_format="pyarrow",
            fn_constructor_kwargs=dict(job=job, threads=max(1, round(cpus_per_actor)),
                                       use_gpu=gpus > 0, heap=heap),
            compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=cpus_per_actor,
            num_gpus=1 if gpus else None)
        total = len(source) if isinstance(source, (list, tuple)) else None
        with _preserving_order(mapped), ResultSink(job, total) as sink:
            for block in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
                if sink.tables is None:
                    sink.add_table(block)
                    continue
                for n_texts, blob in zip(block.column("n_texts").to_pylist(),
                                         block.column("partial").to_pylist()):
                    sink.add_partial(pickle.loads(blob), n_texts)
        return sink.result()
    except Exception as err:
        message = _load_error(err)
        if message is None:
            raise
        raise ModelLoadError(f"on a Ray actor, {message}") from None
    finally:
        if started:
            ray.shutdown()
