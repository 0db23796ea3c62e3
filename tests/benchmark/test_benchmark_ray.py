"""The benchmark's per-method runs on Ray (a local Ray with 2 CPUs, started and stopped by the
module): the report equals one process's, a worker killed mid-run changes nothing, and the
command line's --ray joins the running Ray."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pandas as pd
import pytest
import torch
from mlm_toys import toy_mlm, toy_tokenizer
from test_benchmark import LABELS, TEXTS, VALENCES, two_class

ray = pytest.importorskip("ray")

from ray_toys import init_local_ray, pid_writing

from captum_erasure.benchmark.run import QUICK, run_benchmark

COST = ["seconds_per_example"]  # wall time: the one column that may differ


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """Tasks run one torch thread; the one-process references do too (float32 sums depend on
    the thread count)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    init_local_ray()
    yield
    ray.shutdown()
    torch.set_num_threads(saved)


def run(out, backend, methods, model=None, **kwargs):
    return run_benchmark(model or two_class(0), toy_tokenizer(), TEXTS, LABELS, out=out,
                         methods=methods, settings=QUICK, seed=0, show_progress=False,
                         backend=backend, **kwargs)


def assert_same_result(result, reference):
    assert result.failures == reference.failures
    pd.testing.assert_frame_equal(result.per_example, reference.per_example)
    pd.testing.assert_frame_equal(result.summary.drop(columns=COST),
                                  reference.summary.drop(columns=COST))


def test_methods_on_ray_give_one_process_report(tmp_path):
    methods = ["Random", "WordErasure", "FeatureAblation", "Lime", "IntegratedGradients",
               "InputMarginalization"]
    extra = dict(mlm=toy_mlm(), valences=VALENCES,
                 consistency_models={"seed 0": two_class(0), "seed 1": two_class(1)})
    reference = run(tmp_path / "local", "local", methods, **extra)
    result = run(tmp_path / "ray", "ray", methods, num_actors=2, **extra)
    assert result.summary["method"].tolist() == methods
    assert_same_result(result, reference)
    assert result.consistency.equals(reference.consistency)
    for name in ("summary.csv", "per_example.csv", "intervals.csv", "paired.csv"):
        assert (tmp_path / "ray" / name).read_text() != ""
    for method in methods:  # each method's rows were saved as its task finished
        saved = pd.read_csv(tmp_path / "ray" / "methods" / method / "per_example.csv")
        assert saved.equals(pd.read_csv(tmp_path / "local" / "methods" / method /
                                        "per_example.csv"))
    local = json.loads((tmp_path / "local" / "results.json").read_text())["summary"]
    on_ray = json.loads((tmp_path / "ray" / "results.json").read_text())["summary"]
    for a, b in zip(local, on_ray):
        assert {k: v for k, v in a.items() if k not in COST} == \
            {k: v for k, v in b.items() if k not in COST}


def test_a_method_alone_equals_the_method_after_others(tmp_path):
    alone = run(tmp_path / "alone", "local", ["Lime"])
    after = run(tmp_path / "after", "local", ["Random", "KernelShap", "Lime"])
    lime = after.per_example[after.per_example["method"] == "Lime"].reset_index(drop=True)
    pd.testing.assert_frame_equal(lime, alone.per_example)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path):
    methods = ["Random", "WordErasure", "FeatureAblation"]
    reference = run(tmp_path / "local", "local", methods)
    pids, killed, finished = tmp_path / "pids", [], threading.Event()
    pids.mkdir()

    def kill_one_worker():
        while not any(pids.iterdir()) and not finished.is_set():
            time.sleep(0.02)
        if not finished.is_set():
            victim = int(sorted(pids.iterdir())[0].read_text())
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    model = pid_writing(two_class(0), pids, os.getpid())
    try:
        result = run(tmp_path / "ray", "ray", methods, model=model, num_actors=2)
    finally:
        finished.set()
        killer.join()
    assert killed
    assert len(list(pids.iterdir())) >= 2  # the killed task ran again in another worker
    assert_same_result(result, reference)


def test_a_failing_method_is_its_failure_not_the_runs(tmp_path):
    # InputMarginalization without a masked LM fails inside its task; the others finish
    methods = ["Random", "InputMarginalization", "WordErasure"]
    reference = run(tmp_path / "local", "local", methods)
    result = run(tmp_path / "ray", "ray", methods, num_actors=2)
    assert list(result.failures) == ["InputMarginalization"]
    assert_same_result(result, reference)
    with pytest.raises(ValueError, match="num_actors must be >= 1"):
        run(tmp_path / "none", "ray", ["Random"], num_actors=0)
    with pytest.raises(ValueError, match="backend must be"):
        run(tmp_path / "bad", "spark", ["Random"])


def test_command_line_ray_joins_the_running_ray(tmp_path, monkeypatch):
    import captum_erasure.benchmark as benchmark
    import captum_erasure.benchmark.run as benchmark_run
    import captum_erasure.data as data
    import captum_erasure.models.default as default_model

    tokenizer = toy_tokenizer()
    monkeypatch.setattr(default_model, "load_default_model", lambda: (two_class(0), tokenizer))
    frame = pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS, "rating": 0.0,
                          "label": LABELS})
    monkeypatch.setattr(data, "load_rotten_tomatoes", lambda split: frame)
    monkeypatch.setattr(benchmark_run, "vader_valences", lambda: VALENCES)
    args = ["--quick", "--no-mlm", "--no-consistency", "--no-progress", "--methods", "Random",
            "WordErasure", "--n", "4"]
    local = benchmark.main(args + ["--out", str(tmp_path / "local")])
    on_ray = benchmark.main(args + ["--out", str(tmp_path / "ray"), "--ray", "--actors", "2"])
    assert ray.is_initialized()  # joined the fixture's Ray, did not stop it
    assert_same_result(on_ray, local)


def test_a_model_that_captured_hidden_states_pickles_and_keeps_its_hooks():
    import pickle

    from captum_erasure.benchmark.ray_runs import _picklable
    model = two_class(0)
    ids = torch.tensor([[2, 5, 6, 3]])
    model(ids, torch.ones_like(ids), output_hidden_states=True)  # transformers hooks it now
    hooks = {name: list(m._forward_hooks.items()) for name, m in model.named_modules()}
    assert any(hooks.values())
    with pytest.raises((TypeError, AttributeError)):  # plain pickle: a local object
        pickle.dumps(model)
    with _picklable([model, None]):
        copy = pickle.loads(pickle.dumps(model))
    assert {name: list(m._forward_hooks.items()) for name, m in model.named_modules()} == hooks
    states = model(ids, torch.ones_like(ids), output_hidden_states=True).hidden_states
    again = copy(ids, torch.ones_like(ids), output_hidden_states=True).hidden_states
    assert len(again) == len(states) == 3
    assert all(torch.equal(a, b) for a, b in zip(again, states))
