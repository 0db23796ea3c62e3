"""corpus_run without Ray: every input kind gives the same tables and Parquet rows as the
one-process functions, the command line, and `import captum_erasure` without Ray installed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from ray_toys import broken_factory, tiny_factory

from captum_erasure.explain.corpus import corpus_word_importance
from captum_erasure.explain.texts import explain_texts
from captum_erasure.scale.corpus_run import (
    ModelLoadError,
    corpus_tables,
    explain_corpus,
    main,
)

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the a movie film was is good great bad boring not very plot acting fun dull and but "
         "i liked it unbelievable").split()


def random_corpus(n, seed=0):
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, rng.integers(2, 10))) for _ in range(n)]
    return texts, [int(x) for x in rng.integers(0, 3, n)]


TEXTS, LABELS = random_corpus(70)


def write_corpus(folder, kind):
    frame = pd.DataFrame({"review": TEXTS, "stars": LABELS, "other": range(len(TEXTS))})
    path = Path(folder) / f"corpus.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "parquet":
        frame.to_parquet(path, row_group_size=9)  # row groups not aligned with the groups
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    return path


def hf_corpus():
    """TEXTS and LABELS as a ``datasets.Dataset`` (columns review, stars, other), stored
    reversed and select()ed back: an indices mapping over the Arrow table, as after shuffle()."""
    datasets = pytest.importorskip("datasets")
    reversed_rows = {"review": TEXTS[::-1], "stars": LABELS[::-1],
                     "other": list(range(len(TEXTS)))}
    return datasets.Dataset.from_dict(reversed_rows).select(range(len(TEXTS) - 1, -1, -1))


def corpus_source(folder, kind):
    """(source, labels, column arguments) of TEXTS and LABELS as input ``kind``."""
    if kind == "list":
        return TEXTS, LABELS, {}
    columns = dict(text_column="review", label_column="stars")
    if kind == "hf":
        return hf_corpus(), None, columns
    if kind == "hf-iterable":
        pytest.importorskip("datasets")
        return hf_corpus().flatten_indices().to_iterable_dataset(), None, columns
    return write_corpus(folder, kind), None, columns


def assert_same_tables(a, b):
    pd.testing.assert_frame_equal(a.table(), b.table(), check_exact=True)
    pd.testing.assert_frame_equal(a.negative_occurrences(), b.negative_occurrences(),
                                  check_exact=True)
    assert (a.n_texts, a.n_occurrences) == (b.n_texts, b.n_occurrences)


@pytest.fixture(scope="module")
def reference(tiny_model, tiny_tokenizer):
    return corpus_word_importance(tiny_model, tiny_tokenizer, TEXTS, LABELS, texts_per_call=16,
                                  keep_negative=10, show_progress=False)


@pytest.mark.parametrize("kind", ["list", "csv", "parquet", "jsonl", "hf", "hf-iterable"])
def test_tables_from_every_input_equal_corpus_word_importance(reference, tmp_path, kind):
    source, labels, columns = corpus_source(tmp_path, kind)
    result = corpus_tables(source, labels=labels, model=tiny_factory, texts_per_call=16,
                           keep_negative=10, show_progress=False, **columns)
    assert result.target == "gold"
    assert_same_tables(result, reference)


def test_every_group_hands_its_freed_heap_back(reference, monkeypatch):
    """Memory flat in corpus size: the C heap is trimmed after each group (glibc), on both
    backends (the Ray actors call the same explain_group)."""
    import captum_erasure.scale.corpus_run as corpus_run
    calls = []
    monkeypatch.setattr(corpus_run, "_malloc_trim", lambda: calls.append)
    result = corpus_tables(TEXTS, labels=LABELS, model=tiny_factory, texts_per_call=16,
                           keep_negative=10, show_progress=False)
    assert calls == [0] * -(-len(TEXTS) // 16)
    assert_same_tables(result, reference)


def test_explain_corpus_writes_the_rows_of_explain_texts(tiny_model, tiny_tokenizer, tmp_path):
    out = explain_corpus(TEXTS, tmp_path / "x" / "out.parquet", labels=LABELS,
                         model=(tiny_model, tiny_tokenizer), texts_per_call=16,
                         show_progress=False)
    table = pq.read_table(out)
    assert table.schema.metadata[b"score"] == b"eq1"
    rows = table.to_pylist()
    expected = explain_texts(tiny_model, tiny_tokenizer, TEXTS, labels=LABELS, target="gold",
                             texts_per_call=16)
    assert len(rows) == len(expected)
    for row, e in zip(rows, expected):
        assert (row["text"], row["words"], row["scores"], row["gold"], row["predicted"]) == \
            (e.text, e.words, e.scores, e.gold, e.predicted)


def test_a_hf_dataset_gives_the_rows_of_the_same_list(tmp_path):
    from_list = explain_corpus(TEXTS, tmp_path / "list.parquet", labels=LABELS,
                               model=tiny_factory, texts_per_call=16, show_progress=False)
    from_hf = explain_corpus(hf_corpus(), tmp_path / "hf.parquet", model=tiny_factory,
                             text_column="review", label_column="stars", texts_per_call=16,
                             show_progress=False)
    table = pq.read_table(from_hf)
    assert table.column("gold").to_pylist() == LABELS
    assert table.equals(pq.read_table(from_list))


def test_a_hf_dataset_without_the_text_column_names_its_columns():
    datasets = pytest.importorskip("datasets")
    with pytest.raises(ValueError, match=r"datasets.Dataset has no text column 'text' \(its "
                                         r"columns: \['review', 'stars', 'other'\]\)"):
        corpus_tables(hf_corpus(), model=broken_factory, show_progress=False)  # before loading
    splits = datasets.DatasetDict(train=hf_corpus(), test=hf_corpus())
    with pytest.raises(ValueError, match=r"DatasetDict holds several splits \['train', 'test'\]"
                                         r": pass one of them, e.g. dataset\['train'\]"):
        corpus_tables(splits, model=tiny_factory, text_column="review", show_progress=False)


def test_model_errors_and_arguments():
    with pytest.raises(ModelLoadError, match="broken_factory failed: OSError: no weights"):
        corpus_tables(TEXTS, model=broken_factory, show_progress=False)
    with pytest.raises(ValueError, match="backend"):
        corpus_tables(TEXTS, model=tiny_factory, backend="spark")
    with pytest.raises(ValueError, match="module:function"):
        corpus_tables(TEXTS, model="nonsense")
    with pytest.raises(ValueError, match="unknown corpus file type"):
        corpus_tables("corpus.txt", model=tiny_factory)
    with pytest.raises(ValueError, match="differ in length"):
        corpus_tables(TEXTS, labels=LABELS[:-1], model=tiny_factory, show_progress=False)


def test_command_line_on_a_csv(tmp_path, capsys):
    path = write_corpus(tmp_path, "csv")
    main([str(path), "--model", "ray_toys:tiny_factory", "--text-column", "review",
          "--label-column", "stars", "--out", str(tmp_path / "tables"), "--min-count", "1"])
    assert (tmp_path / "tables" / "word_importance.csv").is_file()
    main([str(path), "--task", "explain", "--model", "ray_toys:tiny_factory", "--text-column",
          "review", "--out", str(tmp_path / "rows")])
    assert pq.read_table(tmp_path / "rows" / "explanations.parquet").num_rows == len(TEXTS)
    assert "wrote" in capsys.readouterr().out


def test_package_imports_and_runs_locally_without_ray_or_datasets():
    code = f"""
import sys
BLOCKED = ("ray", "datasets")
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
sys.meta_path.insert(0, NoRay())
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
import captum_erasure
from captum_erasure.scale.corpus_run import corpus_tables
from ray_toys import tiny_factory
print(corpus_tables(["the movie was good"], model=tiny_factory, show_progress=False).n_texts)
try:
    corpus_tables(["the movie"], model=tiny_factory, backend="ray")
except ImportError as err:
    print(err)
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1", "backend='ray' needs Ray: pip install "
                                        "'ray[data]==2.60.0' (or, in a checkout of "
                                        "captum-erasure, pip install -e '.[ray]')"]


MAPPED_CHECK = """
import ctypes, sys
from captum_erasure.scale._ray_corpus import map_large_allocations

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "mapped":
    assert map_large_allocations()
big = bytearray(8 << 20)  # freeing an 8 MiB mapping raises glibc's own threshold to 8 MiB
del big
before = libc.mallinfo2().hblkhd
block = bytearray(1 << 20)
print(libc.mallinfo2().hblkhd - before)  # bytes of the 1 MiB block that are a mapping
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_mapped_actor_heap_maps_large_blocks_where_glibc_would_not():
    """What ray_options={"actor_heap": "mapped"} does in each CPU actor: after a freed 8 MiB
    block glibc's default serves 1 MiB from the heap (where it can fragment); mapped, it is a
    mapping of its own, returned to the system when freed."""
    def mapped_bytes(heap: str) -> int:
        done = subprocess.run([sys.executable, "-c", MAPPED_CHECK, heap], capture_output=True,
                              text=True, check=True, cwd=ROOT)
        return int(done.stdout.split()[-1])
    assert mapped_bytes("default") == 0
    assert mapped_bytes("mapped") >= 1 << 20
