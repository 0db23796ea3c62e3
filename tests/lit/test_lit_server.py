"""The launcher's pieces: flags, datasets, merging with LIT's defaults, the background MLM
loader. (The launcher itself is started and driven in tests/test_lit_browser.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from mlm_toys import VOCAB, toy_classifier, toy_mlm, toy_tokenizer

from lit_plugin import BackgroundLoader, HFSequenceClassifier, merged_components, server
from lit_plugin.generators import MINIMAL_ERASURE_NAME
from lit_plugin.interpreters import MARGINALIZATION_NAME, WORD_ERASURE_NAME


def test_flags_default_to_loopback_and_the_default_model():
    args = server.build_parser().parse_args([])
    assert (args.host, args.port, args.dataset_size) == ("127.0.0.1", 5432, 200)
    assert args.model is None and args.mlm is None and not args.no_marginalization
    args = server.build_parser().parse_args(["--model", "m", "--dataset-size", "0", "--port",
                                             "8000", "--no-marginalization"])
    assert (args.model, args.dataset_size, args.port, args.no_marginalization) == \
        ("m", 0, 8000, True)
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1")
    assert server.is_loopback("localhost") and not server.is_loopback("0.0.0.0")


def test_ours_are_merged_into_lits_defaults_not_replacing_them():
    model = HFSequenceClassifier(toy_classifier(), toy_tokenizer())
    interpreters, generators = merged_components({"toy": model})
    for name in ["Integrated Gradients", "LIME", "Grad L2 Norm", "Salience Clustering",
                 WORD_ERASURE_NAME]:
        assert name in interpreters
    assert MARGINALIZATION_NAME not in interpreters  # no MLM given
    for name in ["Ablation Flip", "Hotflip", "Scrambler", "Word Replacer", MINIMAL_ERASURE_NAME]:
        assert name in generators


def test_rotten_tomatoes_dataset_has_gold_labels_only_for_matching_models(monkeypatch):
    frame = pd.DataFrame({"id": [0, 10, 20], "text": ["good", "bad", "fine"],
                          "rating": [2.0, -1.5, 0.9], "label": [1, 0, 1]})
    import captum_erasure.data
    monkeypatch.setattr(captum_erasure.data, "load_rotten_tomatoes", lambda split: frame)
    dataset = server.rotten_tomatoes_dataset(2, ["negative", "positive"])
    assert [ex["text"] for ex in dataset.examples] == ["good", "bad"]
    assert [ex["label"] for ex in dataset.examples] == ["positive", "negative"]
    assert [ex["rating"] for ex in dataset.examples] == [2.0, -1.5]
    other = server.rotten_tomatoes_dataset(0, ["LABEL_0", "LABEL_1", "LABEL_2"])
    assert len(other) == 3 and "label" not in other.spec()


def test_csv_dataset_reads_texts_and_labels(tmp_path):
    path = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["pos", 0, "neg"]}).to_csv(path, index=False)
    dataset = server.csv_dataset(str(path), 0, ["neg", "pos"])
    assert [(ex["text"], ex["label"]) for ex in dataset.examples] == \
        [("a", "pos"), ("b", "neg"), ("c", "neg")]
    with pytest.raises(SystemExit, match=r"labels \['pos'\] are not the model's"):
        server.csv_dataset(str(path), 0, ["neg", "neu"])
    pd.DataFrame({"sentence": ["a"]}).to_csv(path, index=False)
    with pytest.raises(SystemExit, match="no 'text' column"):
        server.csv_dataset(str(path), 0, ["neg", "pos"])


def test_user_model_without_mlm_leaves_marginalization_out(tmp_path, capsys):
    classifier, tokenizer = toy_classifier(), toy_tokenizer()
    classifier.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    args = server.build_parser().parse_args(["--model", str(tmp_path)])
    model, mlm = server.load_models(args)
    assert mlm is None and model.labels == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert "input marginalization is left out" in capsys.readouterr().err
    args = server.build_parser().parse_args(["--model", str(tmp_path), "--mlm", str(tmp_path),
                                             "--no-marginalization"])
    assert server.load_models(args)[1] is None
    # an MLM with another vocabulary is refused at launch
    other = tmp_path / "other_mlm"
    toy_mlm(vocab_size=len(VOCAB) + 3).save_pretrained(other)
    toy_tokenizer(VOCAB + ["x", "y", "z"]).save_pretrained(other)
    args = server.build_parser().parse_args(["--model", str(tmp_path), "--mlm", str(other)])
    with pytest.raises(SystemExit, match="cannot serve input marginalization"):
        server.load_models(args)


def test_background_loader_reports_progress_then_the_model():
    release = threading.Event()
    loader = BackgroundLoader(lambda: (release.wait(30), "tokenizer"), "the test MLM",
                              "about 1 second")
    with pytest.raises(RuntimeError, match="the test MLM is still being built in the "
                                           "background"):
        loader()
    release.set()
    assert loader.wait(30)
    assert loader() == (True, "tokenizer")

    def fail():
        raise OSError("disk full")
    broken = BackgroundLoader(fail, "the broken MLM", "never")
    broken.wait(30)
    with pytest.raises(RuntimeError, match="building the broken MLM failed: OSError"):
        broken()


def get_info(app) -> dict:
    from werkzeug.test import Client
    response = Client(app).post("/get_info", json={})
    assert response.status_code == 200, response.get_data(as_text=True)[-2000:]
    return response.get_json()


def test_the_app_has_lits_default_layout_so_a_url_without_layout_renders():
    """Without a default layout LIT 1.3.1's client throws at a URL without ``?layout=`` (blank
    page); the browser test checks the page itself."""
    from lit_nlp.api import layout
    models = {"toy": HFSequenceClassifier(toy_classifier(), toy_tokenizer())}
    datasets = {"toy_data": server.text_dataset(["a very dull movie"])}
    info = get_info(server.make_app(models, datasets))
    assert info["defaultLayout"] == server.DEFAULT_LAYOUT == "default"
    assert set(info["layouts"]) == set(layout.DEFAULT_LAYOUTS)
    lower_tabs = info["layouts"]["default"]["lower"]
    assert "salience-map-module" in str(lower_tabs["Explanations"])
    assert "generator-module" in str(lower_tabs["Counterfactuals"])
    # your own layouts without a "default": the first one; an unknown default is refused
    mine = {"mine": layout.SIMPLE_LAYOUT, "three": layout.THREE_PANEL_LAYOUT}
    assert get_info(server.make_app(models, datasets, layouts=mine))["defaultLayout"] == "mine"
    with pytest.raises(ValueError, match="not one of the layouts"):
        server.make_app(models, datasets, default_layout="nope")


def test_python_m_lit_plugin_runs_the_launcher():
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, "-m", "lit_plugin", "--help"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: python -m lit_plugin [")
    for flag in ["--model", "--mlm", "--data", "--port", "--host", "--no-marginalization"]:
        assert flag in done.stdout
    # the console script is the same main
    scripts = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["captum-erasure-lit"] == "lit_plugin.server:main"
