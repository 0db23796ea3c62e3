"""corpus_run on Ray Data (a local Ray with 2 CPUs, started and stopped by the module): the
tables and Parquet rows with 1, 2 and 4 actors equal one process's, an actor killed mid-run
loses and duplicates nothing, and a model that fails to load is one clear error."""

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from ray_toys import SlowFactory, broken_factory, init_local_ray, tiny_factory
from test_corpus_run import (
    LABELS,
    TEXTS,
    assert_same_tables,
    hf_corpus,
    random_corpus,
    write_corpus,
)

from captum_erasure.scale.corpus_run import (
    ModelLoadError,
    corpus_tables,
    explain_corpus,
)

ROOT = Path(__file__).resolve().parents[2]
GROUP = 8  # texts per call: several groups per actor even in this small corpus


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The actors run one torch thread each; float32 sums depend on the thread count, so the
    one-process references are computed with one thread too (bitwise equality is the claim)."""
    import torch
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module", autouse=True)
def local_ray(one_torch_thread):
    init_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_tables():
    return corpus_tables(TEXTS, labels=LABELS, model=tiny_factory, texts_per_call=GROUP,
                         keep_negative=10, show_progress=False)


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "rows.parquet"
    return pq.read_table(explain_corpus(TEXTS, out, labels=LABELS, model=tiny_factory,
                                        texts_per_call=GROUP, show_progress=False))


def assert_same_rows(table, reference):
    assert table.num_rows == reference.num_rows
    assert table.column("text").to_pylist() == TEXTS  # every text once, in corpus order
    for got, want in zip(table.column("scores").to_pylist(),
                         reference.column("scores").to_pylist()):
        assert len(got) == len(want)
        assert all(abs(a - b) <= 1e-12 for a, b in zip(got, want))
    assert table.equals(reference)  # and in fact bit for bit


def ray_dataset():
    import pandas as pd
    frame = pd.DataFrame({"review": TEXTS, "stars": LABELS})
    return ray.data.from_pandas([frame[:13], frame[13:40], frame[40:]])  # uneven blocks


def test_a_ray_dataset_read_by_the_local_backend(local_tables):
    result = corpus_tables(ray_dataset(), model=tiny_factory, text_column="review",
                           label_column="stars", texts_per_call=GROUP, keep_negative=10,
                           show_progress=False)
    assert_same_tables(result, local_tables)


@pytest.mark.parametrize("actors,kind,heap", [(1, "csv", "trimmed"), (2, "list", "mapped"),
                                              (2, "ray", "trimmed"), (4, "jsonl", "trimmed"),
                                              (2, "hf", "trimmed")])
def test_tables_on_ray_equal_one_process(local_tables, tmp_path, actors, kind, heap):
    if kind == "list":
        source, labels, columns = TEXTS, LABELS, {}
    elif kind in ("ray", "hf"):
        source, labels = (ray_dataset() if kind == "ray" else hf_corpus()), None
        columns = dict(text_column="review", label_column="stars")
    else:
        source, labels = write_corpus(tmp_path, kind), None
        columns = dict(text_column="review", label_column="stars")
    result = corpus_tables(source, labels=labels, model=tiny_factory, texts_per_call=GROUP,
                           keep_negative=10, backend="ray", num_actors=actors,
                           show_progress=False, ray_options={"actor_heap": heap}, **columns)
    assert_same_tables(result, local_tables)


def test_bad_ray_options_are_named():
    with pytest.raises(TypeError, match=r"unknown ray_options \['num_gpus'\]"):
        corpus_tables(TEXTS, model=tiny_factory, backend="ray", ray_options={"num_gpus": 1})
    with pytest.raises(ValueError, match="actor_heap'] must be one of"):
        corpus_tables(TEXTS, model=tiny_factory, backend="ray",
                      ray_options={"actor_heap": "jemalloc"})


@pytest.mark.parametrize("kind", ["parquet", "hf"])
def test_parquet_rows_on_ray_are_one_process_rows_in_order(local_rows, tmp_path, kind):
    source = write_corpus(tmp_path, "parquet") if kind == "parquet" else hf_corpus()
    out = explain_corpus(source, tmp_path / "rows.parquet", model=tiny_factory,
                         text_column="review", label_column="stars", texts_per_call=GROUP,
                         backend="ray", num_actors=2, show_progress=False)
    assert_same_rows(pq.read_table(out), local_rows)


def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(tmp_path):
    texts, labels = random_corpus(160, seed=1)
    reference = pq.read_table(explain_corpus(texts, tmp_path / "ref.parquet", labels=labels,
                                             model=tiny_factory, texts_per_call=GROUP,
                                             show_progress=False))
    pids, killed = tmp_path / "pids", []
    pids.mkdir()

    def kill_one_actor():
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # both actors are explaining by now
        victim = int(sorted(pids.iterdir())[0].read_text())
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    start = time.monotonic()
    out = explain_corpus(texts, tmp_path / "ray.parquet", labels=labels,
                         model=SlowFactory(pids, seconds=0.05), texts_per_call=GROUP,
                         backend="ray", num_actors=2, show_progress=False)
    killer.join()
    assert killed and time.monotonic() - start > 1.0
    assert len(list(pids.iterdir())) >= 3  # the killed actor was restarted, the model reloaded
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == texts
    assert table.equals(reference)


def test_a_model_that_fails_to_load_is_one_clear_error_not_a_hang():
    def hang(*_):
        raise TimeoutError("the run hung")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(120)
    try:
        start = time.monotonic()
        with pytest.raises(ModelLoadError, match="on a Ray actor, the model factory "
                                                 "broken_factory failed: OSError: no weights"):
            corpus_tables(TEXTS, model=broken_factory, backend="ray", num_actors=2,
                          show_progress=False)
        assert time.monotonic() - start < 60
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_command_line_starts_and_stops_its_own_ray(local_tables, tmp_path):
    """`--ray` alone: the run starts a local Ray (the fixture's is in another process), puts
    this checkout on its workers' path, and stops it (its actors' large blocks mapped)."""
    import subprocess
    import sys
    path = write_corpus(tmp_path, "csv")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "captum_erasure.scale.corpus_run", str(path), "--ray",
         "--num-cpus", "2", "--actors", "2", "--model", "ray_toys:tiny_factory",
         "--text-column", "review", "--label-column", "stars", "--texts-per-call", str(GROUP),
         "--min-count", "1", "--actor-heap", "mapped", "--out", str(tmp_path / "tables")],
        capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    import pandas as pd
    written = pd.read_csv(tmp_path / "tables" / "word_importance.csv")
    expected = local_tables.table()
    assert written["word"].tolist() == expected["word"].tolist()
    assert written["count"].tolist() == expected["count"].tolist()
    assert written["mean"].tolist() == pytest.approx(expected["mean"].tolist(), rel=1e-15)
