"""The main job's wiring, end to end, with the tiny model standing in for the default one."""

import pandas as pd

from captum_erasure import demo


def test_demo_writes_figures_and_tables(monkeypatch, tmp_path, capsys, tiny_model,
                                        tiny_tokenizer):
    texts = ["the movie was good", "a very dull plot", "i liked it !", "not fun, but great",
             "the acting was bad", "boring script"]
    frame = pd.DataFrame({"id": range(len(texts)), "text": texts, "rating": [1.0] * len(texts),
                          "label": [2, 0, 2, 2, 0, 0]})
    monkeypatch.setattr(demo, "load_default_model",
                        lambda device=None, rebuild=False: (tiny_model, tiny_tokenizer))
    monkeypatch.setattr(demo, "default_model_info", lambda: {"test_accuracy": 0.5})
    monkeypatch.setattr(demo, "load_rotten_tomatoes", lambda split: frame)
    demo.main(["--out", str(tmp_path), "--n-explain", "3", "--min-count", "1"])
    out = capsys.readouterr().out
    assert "test accuracy 0.500" in out and "Effective" in out and "the movie was good" in out
    assert "6 held-out snippets (target = gold label; about 1 s on 2 CPU cores, progress " \
        "below)" in out
    for name in ["heatmap.png", "heatmap_prob_drop.png", "explanations.html",
                 "explanations.csv", "word_importance.csv", "negative_occurrences.csv",
                 "top_positive_words.csv", "top_words.png"]:
        assert (tmp_path / name).stat().st_size > 0, name
    table = pd.read_csv(tmp_path / "word_importance.csv")
    assert set(table["word"]) >= {"movie", "dull", "boring"}
    assert table["shrunk"].is_monotonic_decreasing  # ranked by the robust statistic, and says so
    assert "Ranked by shrunk" in out and "Ranked by shrunk" in \
        (tmp_path / "word_importance.md").read_text()
    # one colour scale for all texts, Eq. 1 on a symlog scale, by default
    assert "bars: sign(I) ln(1+|I|) of the eq1 score I" in out
    assert "one scale for all texts" in out
    assert "one scale for all texts" in (tmp_path / "explanations.html").read_text()


def test_demo_ray_flag_sends_the_corpus_tables_to_corpus_tables(monkeypatch, tmp_path, capsys,
                                                                 tiny_model, tiny_tokenizer):
    from captum_erasure.scale.corpus_run import corpus_tables
    frame = pd.DataFrame({"id": range(3), "text": ["the movie was good", "a dull plot", "fun"],
                          "rating": [1.0] * 3, "label": [2, 0, 2]})
    calls = []

    def local_instead(texts, **kwargs):  # the wiring only: no Ray started here
        calls.append(kwargs)
        return corpus_tables(texts, **{**kwargs, "backend": "local", "address": None,
                                       "model": (tiny_model, tiny_tokenizer)})

    monkeypatch.setattr(demo, "load_default_model",
                        lambda device=None, rebuild=False: (tiny_model, tiny_tokenizer))
    monkeypatch.setattr(demo, "default_model_info", lambda: {"test_accuracy": 0.5})
    monkeypatch.setattr(demo, "load_rotten_tomatoes", lambda split: frame)
    monkeypatch.setattr(demo, "corpus_tables", local_instead)
    demo.main(["--out", str(tmp_path), "--n-explain", "1", "--min-count", "1",
               "--ray", "auto"])
    assert [(c["backend"], c["address"], c["model"]) for c in calls] == [("ray", "auto",
                                                                         "default")]
    assert (tmp_path / "word_importance.csv").stat().st_size > 0


def test_the_demo_says_how_long_it_takes():
    assert demo.expected_duration(1007) == "about 3 min"  # the held-out split
    assert demo.expected_duration(200) == "about 35 s"
    assert "about 3 minutes" in demo.__doc__
