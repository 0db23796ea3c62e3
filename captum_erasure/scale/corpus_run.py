"""Corpus-scale runs: the corpus word tables and batch explanation to Parquet, in this process
(default) or on a Ray cluster (``backend="ray"``), with the same result either way.

    corpus_tables("reviews.parquet", model="default")                    # one process
    corpus_tables("reviews.parquet", model="default", backend="ray")     # local Ray, or
    explain_corpus("reviews.csv", "scores.parquet", backend="ray", address="auto")  # a cluster

    python -m captum_erasure.scale.corpus_run rotten_tomatoes:test --out outputs/corpus --ray

The corpus is read ``texts_per_call`` texts at a time and each group is explained in one call
(:func:`~captum_erasure.explain.texts.iter_explanations`). On Ray, the groups are the blocks of
a Ray Dataset cut at the same boundaries (``repartition(strict=True)``); a pool of actors, each
holding the model once, explains them (``map_batches``), each group's word statistics are
reduced in the actor to a partial :class:`~captum_erasure.explain.corpus.CorpusImportance`
and the driver merges the partials in corpus order, exactly (integer sums). The per-example
scores are therefore those of one process, and the tables equal its tables.

Ray is imported only here, on use (``pip install 'ray[data]==2.60.0'``, the ``ray``
extra); see ``docs/ray.md``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib
import itertools
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from captum_erasure._core.extras import install_hint
from captum_erasure.explain.corpus import CorpusImportance
from captum_erasure.explain.texts import TextExplanation, iter_explanations
from captum_erasure.models import load_default_model
from captum_erasure.scale import _hf_corpus
from captum_erasure.scale._hf_corpus import is_hf_dataset

BACKENDS = ("local", "ray")
# "default" is the offline default classifier; any "module:function" works the same way.
FILE_KINDS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}
EXPLANATION_COLUMNS = ["text", "words", "scores", "predicted", "predicted_label", "probability",
                       "target", "target_label", "target_probability", "gold", "gold_label"]
CORPUS_SETTINGS = ("min_count", "lowercase", "examples_per_word", "keep_negative")


class ModelLoadError(RuntimeError):
    """The model factory failed (on the driver or on a Ray actor)."""


# -- the model ------------------------------------------------------------------------------------
def resolve_factory(model: Any) -> Callable[..., tuple[Any, Any]]:
    """A callable ``factory(device=...) -> (model, tokenizer)`` from ``model``: such a callable,
    ``"default"``, a ``"module:function"`` string, or an already loaded ``(model, tokenizer)``
    pair (sent whole to every Ray actor: prefer a factory for large models)."""
    if model == "default":
        return load_default_model
    if isinstance(model, str):
        module, _, name = model.partition(":")
        if not module or not name:
            raise ValueError(f"model must be 'default', 'module:function', a factory or a "
                             f"(model, tokenizer) pair, got {model!r}")
        return getattr(importlib.import_module(module), name)  # the user's own factory
    if isinstance(model, tuple) and len(model) == 2:
        return _Loaded(*model)
    if callable(model):
        return model
    raise TypeError(f"model must be 'default', 'module:function', a factory or a "
                    f"(model, tokenizer) pair, got {type(model).__name__}")


class _Loaded:
    """A factory returning an already loaded pair (moved to the device asked for)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer

    def __call__(self, device: Any = None) -> tuple[Any, Any]:
        return (self.model if device is None else self.model.to(device)), self.tokenizer


def load_model(factory: Callable[..., tuple[Any, Any]], device: Any) -> tuple[Any, Any]:
    """Call the factory; any failure becomes one :class:`ModelLoadError` naming it."""
    try:
        loaded = factory(device=device)
        model, tokenizer = loaded
    except Exception as err:
        name = getattr(factory, "__qualname__", type(factory).__name__)
        raise ModelLoadError(f"the model factory {name} failed: {type(err).__name__}: "
                             f"{err}") from err
    return model, tokenizer


def require_ray() -> None:
    """A clear error, before any work, when Ray is not installed."""
    try:
        import ray  # noqa: F401
    except ImportError as err:
        raise ImportError("backend='ray' needs Ray: "
                          + install_hint("ray", "ray[data]==2.60.0")) from err


def connect_ray(address: str | None, options: dict | None = None) -> bool:
    """Join the Ray cluster at ``address`` or start a local Ray (``options``: ``num_cpus``,
    ``runtime_env``) with this checkout on its workers' path; True if this call started it
    (the caller then stops it)."""
    require_ray()
    from captum_erasure.scale import _ray_corpus
    return _ray_corpus.connect(address, dict(options or {}))


# -- reading a corpus -----------------------------------------------------------------------------
def file_kind(source: Any) -> str | None:
    """``"csv"``, ``"parquet"`` or ``"json"`` (lines) for a path with such a suffix, else None."""
    if isinstance(source, (str, Path)) and not _is_named_corpus(source):
        kind = FILE_KINDS.get(Path(source).suffix.lower())
        if kind is None:
            raise ValueError(f"unknown corpus file type {Path(source).suffix!r} of {source}; "
                             f"use one of {sorted(FILE_KINDS)}")
        return kind
    return None


def _is_named_corpus(source: Any) -> bool:
    return isinstance(source, str) and source.startswith("rotten_tomatoes:")


def is_ray_dataset(source: Any) -> bool:
    return type(source).__module__.startswith("ray.data")


def named_corpus(source: str, repeat: int = 1) -> tuple[list[str], list[int]]:
    """``rotten_tomatoes:SPLIT`` (the offline snippets), ``repeat`` times over."""
    from captum_erasure.data import load_rotten_tomatoes
    frame = load_rotten_tomatoes(source.split(":", 1)[1])
    return frame["text"].tolist() * repeat, frame["label"].tolist() * repeat


def iter_groups(source: Any, labels: Any, size: int, text_column: str,
                label_column: str | None) -> Iterator[tuple[list[str], list[Any] | None]]:
    """The corpus as (texts, labels or None) groups of ``size`` texts, read lazily."""
    kind = file_kind(source)
    if kind is None and not is_ray_dataset(source) and not is_hf_dataset(source):
        texts = iter([source] if isinstance(source, str) else source)
        golds = None if labels is None else iter(labels)
        while texts_group := list(itertools.islice(texts, size)):
            label_group = None if golds is None else list(itertools.islice(golds, size))
            if label_group is not None and len(label_group) != len(texts_group):
                raise ValueError("texts and labels differ in length")
            yield texts_group, label_group
        if golds is not None and next(golds, None) is not None:
            raise ValueError("texts and labels differ in length")
        return
    if labels is not None:
        raise ValueError("labels= goes with a list of texts; a table's labels are its "
                         "label_column")
    if is_hf_dataset(source):
        for table in _hf_corpus.arrow_tables(source, size, text_column, label_column):
            golds = table.column("label").to_pylist() if table.num_columns > 1 else None
            yield table.column("text").to_pylist(), golds
        return
    for table in _iter_tables(source, kind, size, text_column, label_column):
        yield table["text"], table.get("label")


def _iter_tables(source: Any, kind: str | None, size: int, text_column: str,
                 label_column: str | None) -> Iterator[dict[str, list]]:
    import pandas as pd
    if kind == "parquet":
        import pyarrow.parquet as pq
        batches = (b.to_pandas() for b in pq.ParquetFile(source).iter_batches(batch_size=size))
    elif kind == "csv":
        batches = pd.read_csv(source, chunksize=size, keep_default_na=False,
                              dtype={text_column: str})
    elif kind == "json":
        batches = pd.read_json(source, lines=True, chunksize=size, dtype={text_column: str})
    else:  # a Ray Dataset, read in order
        batches = _ordered_batches(source, size)
    for frame in batches:
        if text_column not in frame:
            raise ValueError(f"the corpus has no column {text_column!r} (columns: "
                             f"{list(frame.columns)})")
        table = {"text": frame[text_column].tolist()}
        if label_column is not None and label_column in frame:
            table["label"] = frame[label_column].tolist()
        yield table


def _ordered_batches(dataset: Any, size: int) -> Iterator[Any]:
    with _preserving_order(dataset):
        yield from dataset.iter_batches(batch_size=size, batch_format="pandas")


class _preserving_order:
    """Ray Data's ``preserve_order`` on for one run (restored afterwards)."""

    def __init__(self, dataset: Any) -> None:
        self.options = dataset.context.execution_options

    def __enter__(self) -> None:
        self.saved = self.options.preserve_order
        self.options.preserve_order = True

    def __exit__(self, *exc: object) -> None:
        self.options.preserve_order = self.saved


# -- one group of texts ---------------------------------------------------------------------------
def explain_group(model: Any, tokenizer: Any, texts: list[str], labels: list[Any] | None,
                  settings: dict) -> list[TextExplanation]:
    """Explain one group in one call (the unit both backends share, so the same numbers)."""
    explanations = list(iter_explanations(model, tokenizer, texts, labels=labels,
                                          texts_per_call=max(1, len(texts)), **settings))
    release_freed_memory()
    return explanations


@functools.lru_cache(maxsize=1)
def glibc() -> Any:
    """The C library if it is glibc (``malloc_trim``, ``mallopt``), else None (macOS, musl)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def _malloc_trim() -> Callable[[int], int] | None:
    libc = glibc()
    return None if libc is None else libc.malloc_trim


def release_freed_memory() -> None:
    """Hand the free pages of the C heap back to the system (glibc's ``malloc_trim``).

    glibc keeps what a group's activations of many shapes leave behind, and a long run's
    resident memory crept up with the corpus (the default model's actor: 777 MiB of heap after
    1,000 snippets, 1,048 MiB after about 2,500; docs/ray.md). Trimmed after each group, the
    heap between groups stays flat (405-495 MiB over 10,000 snippets); a group's own peak
    still rises slowly, as the heap it lands in fragments. No measurable cost beside a
    group's seconds of forwards."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def partial_tables(explanations: list[TextExplanation], corpus: dict) -> CorpusImportance:
    """The word statistics of one group (texts numbered from 0; merge() shifts them)."""
    part = CorpusImportance(**corpus)
    for explanation in explanations:
        part.add(explanation)
    return part


def explanation_columns(explanations: list[TextExplanation]) -> dict[str, list]:
    return {name: [getattr(e, name) for e in explanations] for name in EXPLANATION_COLUMNS}


def parquet_schema(score: str, mode: str) -> Any:
    import pyarrow as pa
    fields = [("text", pa.string()), ("words", pa.list_(pa.string())),
              ("scores", pa.list_(pa.float64())), ("predicted", pa.int64()),
              ("predicted_label", pa.string()), ("probability", pa.float64()),
              ("target", pa.int64()), ("target_label", pa.string()),
              ("target_probability", pa.float64()), ("gold", pa.int64()),
              ("gold_label", pa.string())]
    return pa.schema(fields, metadata={"score": score, "mode": mode})


def explanation_table(explanations: list[TextExplanation], schema: Any) -> Any:
    import pyarrow as pa
    return pa.Table.from_pydict(explanation_columns(explanations), schema=schema)


# -- the entry points -----------------------------------------------------------------------------
def _settings(labels_given: bool, target: Any, score: str, mode: str,
              explain_kwargs: dict) -> dict:
    if target is None:
        target = "gold" if labels_given else "predicted"
    return dict(target=target, score=score, mode=mode, **explain_kwargs)


def _labels_given(source: Any, labels: Any, label_column: str | None) -> bool:
    if labels is not None or _is_named_corpus(source):
        return True
    if label_column is None or not (file_kind(source) or is_ray_dataset(source)
                                    or is_hf_dataset(source)):
        return False
    return label_column in _column_names(source, file_kind(source))


def _column_names(source: Any, kind: str | None) -> list[str]:
    if kind == "parquet":
        import pyarrow.parquet as pq
        return pq.ParquetFile(source).schema_arrow.names
    if kind in ("csv", "json"):
        import pandas as pd
        reader = pd.read_csv if kind == "csv" else (lambda p, **k: pd.read_json(p, lines=True,
                                                                                **k))
        return list(reader(source, nrows=1).columns)
    if is_hf_dataset(source):
        return _hf_corpus.column_names(source)
    return list(source.columns())


def corpus_tables(source: Any, *, model: Any = "default", labels: Any = None,
                  text_column: str = "text", label_column: str | None = "label",
                  target: Any = None, score: str = "eq1", mode: str = "delete",
                  texts_per_call: int = 64, min_count: int = 1, lowercase: bool = True,
                  examples_per_word: int = 3, keep_negative: int = 200,
                  backend: str = "local", address: str | None = None,
                  num_actors: int | None = None, device: Any = None,
                  show_progress: bool = True, ray_options: dict | None = None,
                  **explain_kwargs: Any) -> CorpusImportance:
    """:func:`~captum_erasure.explain.corpus.corpus_word_importance` over a corpus of any size.

    Args:
        source: a list of texts (``labels=`` beside it), a CSV / Parquet / JSONL path
            (``text_column``, ``label_column``), a ``datasets.Dataset``, a Ray Dataset, or
            ``"rotten_tomatoes:SPLIT"``.
        model: ``"default"``, ``"module:function"``, a picklable ``factory(device=...) ->
            (model, tokenizer)`` (each Ray actor calls it once) or a loaded pair.
        target: ``"gold"`` when there are labels, else ``"predicted"`` (as in the paper).
        texts_per_call: texts explained per call; the same groups on every backend.
        backend: ``"local"`` (this process) or ``"ray"``: ``address`` joins a cluster
            (``"auto"``, ``"ray://..."``), else a local Ray is started and stopped;
            ``num_actors`` (default one per GPU, else one per CPU); ``ray_options``:
            ``num_cpus`` (local Ray), ``cpus_per_actor``, ``runtime_env``, ``actor_heap``
            (``"trimmed"`` or ``"mapped"``: flat CPU-actor memory, more CPU; docs/ray.md).
        explain_kwargs: ``batch_size``, ``max_length``, ``truncate``, ``baseline_token``.
    """
    corpus = dict(lowercase=lowercase, min_count=min_count, examples_per_word=examples_per_word,
                  keep_negative=keep_negative)
    return _run("tables", source, None, model, labels, text_column, label_column, target,
                score, mode, texts_per_call, corpus, backend, address, num_actors, device,
                show_progress, ray_options, explain_kwargs)


def explain_corpus(source: Any, out: str | Path, *, model: Any = "default",
                   labels: Any = None, text_column: str = "text",
                   label_column: str | None = "label", target: Any = None, score: str = "eq1",
                   mode: str = "delete", texts_per_call: int = 64, backend: str = "local",
                   address: str | None = None, num_actors: int | None = None,
                   device: Any = None, show_progress: bool = True,
                   ray_options: dict | None = None, **explain_kwargs: Any) -> Path:
    """Explain every text of a corpus and write one Parquet file, one row per text in corpus
    order: ``text, words, scores, predicted, predicted_label, probability, target,
    target_label, target_probability, gold, gold_label`` (score and mode in its metadata).
    Arguments as :func:`corpus_tables`; returns the path."""
    return _run("explain", source, Path(out), model, labels, text_column, label_column,
                target, score, mode, texts_per_call, None, backend, address, num_actors,
                device, show_progress, ray_options, explain_kwargs)


def _run(task: str, source: Any, out: Path | None, model: Any, labels: Any, text_column: str,
         label_column: str | None, target: Any, score: str, mode: str, texts_per_call: int,
         corpus: dict | None, backend: str, address: str | None, num_actors: int | None,
         device: Any, show_progress: bool, ray_options: dict | None,
         explain_kwargs: dict) -> Any:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if texts_per_call < 1:
        raise ValueError("texts_per_call must be >= 1")
    unknown = set(explain_kwargs) - {"batch_size", "max_length", "truncate", "baseline_token"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    factory = resolve_factory(model)
    if _is_named_corpus(source):
        source, labels = named_corpus(source)
    if is_hf_dataset(source):  # before any model is loaded or Ray started
        _hf_corpus.require_text_column(source, text_column)
    settings = _settings(_labels_given(source, labels, label_column), target, score, mode,
                         explain_kwargs)
    if corpus is not None:
        corpus = dict(corpus, score_name=score, mode=mode, target=settings["target"])
    job = dict(task=task, out=out, factory=factory, settings=settings, corpus=corpus,
               texts_per_call=texts_per_call, text_column=text_column,
               label_column=label_column, show_progress=show_progress)
    if backend == "ray":
        require_ray()
        from captum_erasure.scale import _ray_corpus
        return _ray_corpus.run(job, source, labels, address=address, num_actors=num_actors,
                               options=dict(ray_options or {}))
    return _run_local(job, source, labels, device)


def _run_local(job: dict, source: Any, labels: Any, device: Any) -> Any:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_model(job["factory"], device)
    groups = iter_groups(source, labels, job["texts_per_call"], job["text_column"],
                         job["label_column"])
    sink = ResultSink(job)
    with sink:
        for texts, golds in groups:
            explanations = explain_group(model, tokenizer, texts, golds, job["settings"])
            if job["task"] == "tables":
                sink.add_partial(partial_tables(explanations, job["corpus"]), len(texts))
            else:
                sink.add_table(explanation_table(explanations, sink.schema))
    return sink.result()


class ResultSink:
    """The driver's end of a run: merges partial tables in order, or appends rows to the
    Parquet file, with a progress bar over texts."""

    def __init__(self, job: dict, total: int | None = None) -> None:
        self.job, self.total = job, total
        self.tables = CorpusImportance(**job["corpus"]) if job["task"] == "tables" else None
        self.schema = None if job["task"] == "tables" else parquet_schema(
            job["settings"]["score"], job["settings"]["mode"])
        self.writer = None
        self.rows = 0

    def __enter__(self) -> ResultSink:
        name = "corpus word importance" if self.tables is not None else "explaining corpus"
        self.bar = tqdm(total=self.total, desc=name, unit="text",
                        disable=not self.job["show_progress"])
        if self.schema is not None:
            import pyarrow.parquet as pq
            self.job["out"].parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.job["out"], self.schema)
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def add_partial(self, part: CorpusImportance, n_texts: int) -> None:
        self.tables.merge(part)
        self.rows += n_texts
        self.bar.update(n_texts)

    def add_table(self, table: Any) -> None:
        self.writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows
        self.bar.update(table.num_rows)

    def result(self) -> Any:
        return self.tables if self.tables is not None else self.job["out"]


# -- command line ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m captum_erasure.scale.corpus_run",
        description="Corpus word tables or per-example explanations (Parquet) of a corpus, "
                    "in this process or on Ray.")
    parser.add_argument("source", help="CSV / Parquet / JSONL file, or rotten_tomatoes:SPLIT")
    parser.add_argument("--task", choices=["tables", "explain"], default="tables")
    parser.add_argument("--out", type=Path, default=Path("outputs/corpus"), help="folder")
    parser.add_argument("--model", default="default", help="'default' or module:function")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on Ray: a new local instance, or join ADDRESS ('auto', "
                             "'ray://host:10001')")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: one "
                        "per GPU, else one per CPU)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
    parser.add_argument("--actor-heap", choices=["trimmed", "mapped"], default="trimmed",
                        help="mapped: flat CPU-actor memory for ~1/3 more CPU (docs/ray.md)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rotten_tomatoes:SPLIT repeated this many times")
    parser.add_argument("--texts-per-call", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward")
    parser.add_argument("--mode", default="delete",
                        choices=["delete", "replace", "attention", "zero"])
    parser.add_argument("--min-count", type=int, default=3)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args(argv)
    source, labels = args.source, None
    if _is_named_corpus(source):
        source, labels = named_corpus(source, args.repeat)
    common = dict(model=args.model, labels=labels, text_column=args.text_column,
                  label_column=args.label_column, mode=args.mode,
                  texts_per_call=args.texts_per_call, batch_size=args.batch_size,
                  backend="local" if args.ray is None else "ray", address=args.ray or None,
                  num_actors=args.actors,
                  ray_options=None if args.ray is None else dict(
                      actor_heap=args.actor_heap,
                      **({} if args.num_cpus is None else {"num_cpus": args.num_cpus})))
    if args.task == "tables":
        result = corpus_tables(source, min_count=args.min_count, **common)
        written = result.save(args.out)
        print(result)
        print(result.ranking_note())
        print(result.top_positive(15)[["word", "shrunk", "mean", "std", "count"]]
              .to_string(index=False))
        print(f"wrote {', '.join(str(p) for p in written.values())}")
    else:
        print(f"wrote {explain_corpus(source, args.out / 'explanations.parquet', **common)}")


if __name__ == "__main__":
    main()
