"""Hugging Face ``datasets`` corpora for :mod:`captum_erasure.scale.corpus_run`: a
``datasets.Dataset`` (or an ``IterableDataset`` whose columns are known) read as Arrow tables of
its text and label columns, renamed ``text`` and ``label``, in order.

``datasets`` is never imported here (the objects' own methods suffice), so the package imports
without it; the ``datasets`` extra installs it (``datasets==4.0.0``, the last release that takes
``pyarrow<18``).
"""

from __future__ import annotations

from typing import Any, Iterator

SPLIT_HOLDERS = ("DatasetDict", "IterableDatasetDict")
# rows per Arrow table handed to Ray (repartition cuts them into texts_per_call blocks)
RAY_CHUNK_ROWS = 65_536


def is_hf_dataset(source: Any) -> bool:
    return type(source).__module__.split(".")[0] == "datasets"


def column_names(dataset: Any) -> list[str]:
    """The dataset's columns; a dict of splits, or columns unknown before reading, refused."""
    kind = type(dataset).__name__
    if kind in SPLIT_HOLDERS:
        splits = list(dataset.keys())
        raise ValueError(f"a {kind} holds several splits {splits}: pass one of them, e.g. "
                         f"dataset[{splits[0] if splits else 'train'!r}]")
    names = getattr(dataset, "column_names", None)
    if names is None:
        raise ValueError(f"the {kind}'s columns are unknown before it is read; give it "
                         f"features (e.g. IterableDataset.from_generator(..., features=...))")
    return list(names)


def require_text_column(dataset: Any, text_column: str) -> list[str]:
    """The dataset's columns, checked to include ``text_column`` (else an error naming them)."""
    names = column_names(dataset)
    if text_column not in names:
        raise ValueError(f"the datasets.{type(dataset).__name__} has no text column "
                         f"{text_column!r} (its columns: {names}); pass text_column=")
    return names


def arrow_tables(dataset: Any, size: int, text_column: str,
                 label_column: str | None) -> Iterator[Any]:
    """The dataset as pyarrow tables of ``size`` rows (the last one shorter) with columns
    ``text`` and, if the dataset has ``label_column``, ``label``."""
    names = require_text_column(dataset, text_column)
    keep = [text_column]
    if label_column is not None and label_column in names and label_column != text_column:
        keep.append(label_column)
    renamed = ["text", "label"][:len(keep)]
    # select_columns first: a select()ed or shuffled dataset then materialises only these
    view = dataset.select_columns(keep).with_format("arrow")
    for table in view.iter(batch_size=size):
        yield table.rename_columns(renamed)


def ray_dataset(dataset: Any, text_column: str, label_column: str | None) -> Any:
    """The dataset as a Ray Dataset of ``text`` (and ``label``), built from Arrow tables here
    rather than by ``ray.data.from_huggingface``, which first looks the dataset up on the
    Hugging Face Hub (a network request) and may read the Hub's Parquet copy instead."""
    import pyarrow as pa
    import ray
    tables = list(arrow_tables(dataset, RAY_CHUNK_ROWS, text_column, label_column))
    if not tables:
        tables = [pa.table({"text": pa.array([], pa.string())})]
    return ray.data.from_arrow(tables)
