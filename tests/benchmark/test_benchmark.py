"""The benchmark's quick mode end to end on tiny offline models, and its word alignment."""

from __future__ import annotations

import json

import pytest
import torch
from mlm_toys import toy_classifier, toy_mlm, toy_tokenizer

from captum_erasure.benchmark.examples import (
    align_split_words,
    encode_examples,
    spread_words,
    words_from_pieces,
)
from captum_erasure.benchmark.run import QUICK, run_benchmark
from captum_erasure.benchmark.runners import available_methods

TEXTS = ["the film is unbelievable !", "a very dull movie", "not good , not fun",
         "the plot was boring and dull", "a great film"]
LABELS = [1, 0, 0, 0, 1]
VALENCES = {"good": 1.9, "great": 3.1, "fun": 2.3, "dull": -1.7, "boring": -1.3, "bad": -2.5}


def two_class(seed):
    model = toy_classifier(seed=seed, num_labels=2)
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    return model


def test_word_alignment():
    tokenizer = toy_tokenizer()
    (example,) = encode_examples(tokenizer, ["the film, unbelievable !"], [1])
    assert example.words == ["the", "film", ",", "unbelievable", "!"]
    # Pieces: the film , un ##believ ##able !  -> summed per word, or first piece per word.
    pieces = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert words_from_pieces(example, pieces, "sum") == [1.0, 2.0, 3.0, 15.0, 7.0]
    assert words_from_pieces(example, pieces, "first") == [1.0, 2.0, 3.0, 4.0, 7.0]
    # str.split tokens: "the", "film," (two model words), "unbelievable", "!".
    assert align_split_words(example, [0.5, 0.8, 0.1, -0.2]) == [0.5, 0.4, 0.4, 0.1, -0.2]
    attr = spread_words([example], [[1.0, 2.0, 3.0, 4.0, 5.0]], 10)
    assert attr[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 5, 0, 0]
    with pytest.raises(ValueError, match="empty"):
        encode_examples(tokenizer, ["  "], [0])


@pytest.fixture
def one_thread():
    """A 16-wide model spends its time in thread hand-offs: one thread is ~10x faster on a
    busy 2-core machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_quick_benchmark_writes_its_report(tmp_path, one_thread):
    tokenizer = toy_tokenizer()
    methods = ["Random", "WordErasure", "WordInformation", "InputMarginalization",
               "IntegratedGradients", "FeatureAblation", "Occlusion", "Lime", "KernelShap",
               "ShapleyValueSampling", "LIT IG", "LIT LIME"]
    assert set(methods) <= set(available_methods(mlm=object()))
    result = run_benchmark(
        two_class(0), tokenizer, TEXTS, LABELS, out=tmp_path, methods=methods,
        mlm=toy_mlm(), valences=VALENCES,
        consistency_models={"seed 0": two_class(0), "seed 1": two_class(1),
                            "untrained": two_class(2)},
        settings=QUICK, seed=0, model_name="tiny random BERT", show_progress=False)
    assert result.failures == {}
    summary = result.summary.set_index("method")
    assert list(summary.index) == methods
    for column in ("comprehensiveness", "aopc_sufficiency", "deletion_area", "masked_f1_auc",
                   "auc_rep", "comprehensiveness_mask", "aopc_comprehensiveness_pad",
                   "sufficiency_pad", "confidence_mae", "human_map", "seconds_per_example",
                   "forward_calls_per_example"):
        assert summary[column].notna().all(), column
    # Consistency is NaN only where a method's saliency distances are all equal (e.g. Captum
    # Lime's Lasso zeroing every word of a random toy model).
    assert summary.loc["WordErasure", ["dataset_consistency", "rationale_consistency"]].notna().all()
    # WordErasure: one original row plus one per word (mean words per snippet).
    words = sum(len(e.words) for e in encode_examples(tokenizer, TEXTS, LABELS)) / len(TEXTS)
    assert summary.loc["WordErasure", "rows_per_example"] == pytest.approx(1 + words)
    assert summary.loc["InputMarginalization", "mlm_rows_per_example"] > 0
    # WordInformation stops the model once its layer has run; its rows count all the same: the
    # clean pass and one noisy pass per Adam step.
    assert summary.loc["WordInformation", "rows_per_example"] == QUICK.information_steps + 1
    report = (tmp_path / "report.md").read_text()
    assert "## Faithfulness" in report and "VADER" in report and "LIT LIME" in report
    for name in ("summary.csv", "per_example.csv", "results.json", "curves.png",
                 "cost_vs_faithfulness.png", "intervals.md", "paired.csv", "leaders.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    meta = json.loads((tmp_path / "results.json").read_text())["meta"]
    assert meta["n_examples"] == len(TEXTS)
    assert len(result.per_example) == len(TEXTS) * len(methods)


def test_command_line_quick_mode(tmp_path, monkeypatch, one_thread):
    """`python -m captum_erasure.benchmark --quick` wiring, with the default model, MLM, data
    and lexicon swapped for offline toys."""
    import pandas as pd

    import captum_erasure.benchmark as benchmark
    import captum_erasure.benchmark.run as benchmark_run
    import captum_erasure.data as data
    import captum_erasure.models.default as default_model
    import captum_erasure.models.default_mlm as default_mlm

    tokenizer = toy_tokenizer()
    monkeypatch.setattr(default_model, "load_default_model", lambda: (two_class(0), tokenizer))
    monkeypatch.setattr(default_mlm, "load_default_mlm", lambda: (toy_mlm(), tokenizer))
    frame = pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS, "rating": 0.0,
                          "label": LABELS})
    monkeypatch.setattr(data, "load_rotten_tomatoes", lambda split: frame)
    monkeypatch.setattr(benchmark_run, "vader_valences", lambda: VALENCES)
    result = benchmark.main(["--quick", "--no-consistency", "--no-progress", "--out",
                             str(tmp_path), "--methods", "Random", "WordErasure",
                             "FeatureAblation", "--n", "4"])
    assert result.summary["method"].tolist() == ["Random", "WordErasure", "FeatureAblation"]
    assert json.loads((tmp_path / "results.json").read_text())["meta"]["n_examples"] == 4
    assert (tmp_path / "report.md").is_file()


def test_command_line_model_folder(tmp_path, monkeypatch, one_thread):
    """`--model FOLDER` explains a saved HF classifier instead of the default model."""
    import pandas as pd

    import captum_erasure.benchmark as benchmark
    import captum_erasure.benchmark.run as benchmark_run
    import captum_erasure.data as data

    model, tokenizer = two_class(3), toy_tokenizer()
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    frame = pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS, "rating": 0.0,
                          "label": LABELS})
    monkeypatch.setattr(data, "load_rotten_tomatoes", lambda split: frame)
    monkeypatch.setattr(benchmark_run, "vader_valences", lambda: VALENCES)
    out = tmp_path / "out"
    result = benchmark.main(["--quick", "--no-consistency", "--no-progress", "--no-mlm",
                             "--model", str(tmp_path / "saved"), "--out", str(out),
                             "--methods", "WordErasure", "--n", "4"])
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["model"] == str(tmp_path / "saved")
    scores = json.loads(result.per_example["word_scores"].iloc[0])
    expected = run_benchmark(model.eval(), tokenizer, TEXTS[:4], LABELS[:4], out=tmp_path / "x",
                             methods=["WordErasure"], settings=QUICK, show_progress=False)
    assert set(result.per_example["word_scores"]) == set(expected.per_example["word_scores"])
    assert len(scores) > 0
    with pytest.raises(SystemExit, match="not 'default' and not a folder"):
        benchmark.main(["--model", str(tmp_path / "missing"), "--no-consistency"])


def test_diffmask_row_costs_one_row_per_example_and_reports_its_fit(tmp_path, one_thread,
                                                                     monkeypatch):
    import pandas as pd

    import captum_erasure.data as data
    frame = pd.DataFrame({"text": TEXTS * 4, "label": LABELS * 4})
    monkeypatch.setattr(data, "load_rotten_tomatoes", lambda split: frame)
    result = run_benchmark(
        two_class(0), toy_tokenizer(), TEXTS, LABELS, out=tmp_path,
        methods=["Random", "DiffMask"], valences=VALENCES, settings=QUICK, seed=0,
        model_name="tiny random BERT", show_progress=False)
    assert result.failures == {}
    row = result.summary.set_index("method").loc["DiffMask"]
    assert row["rows_per_example"] == 1 and row["forward_calls_per_example"] <= 1
    # one epoch of 20 snippets (batches of 16 and 4, under the 3-step budget), each twice
    assert row["fit_rows"] == 2 * 20 and row["fit_seconds"] > 0
    assert "fit s (once)" in (tmp_path / "report.md").read_text()


def test_diffmask_row_from_a_saved_probe_equals_the_fitted_one(tmp_path, one_thread,
                                                               monkeypatch):
    from dataclasses import replace

    import pandas as pd

    import captum_erasure.benchmark as benchmark
    import captum_erasure.data as data
    frame = pd.DataFrame({"text": TEXTS * 4, "label": LABELS * 4})
    monkeypatch.setattr(data, "load_rotten_tomatoes", lambda split: frame)
    common = dict(methods=["DiffMask"], valences=VALENCES, seed=0, show_progress=False)
    fitted = run_benchmark(two_class(0), toy_tokenizer(), TEXTS, LABELS, out=tmp_path / "fit",
                           settings=replace(QUICK, diffmask_cache=str(tmp_path / "probes")),
                           **common)
    probe = next((tmp_path / "probes").glob("*.pt"))
    loaded = run_benchmark(two_class(0), toy_tokenizer(), TEXTS, LABELS, out=tmp_path / "load",
                           settings=replace(QUICK, diffmask_probe=str(probe)), **common)
    assert list(loaded.per_example["word_scores"]) == list(fitted.per_example["word_scores"])
    row = loaded.summary.set_index("method").loc["DiffMask"]
    assert row["fit_rows"] == 0 and row["rows_per_example"] == 1
    assert str(probe) in (tmp_path / "load" / "report.md").read_text()
    with pytest.raises(SystemExit):
        benchmark.main(["--quick", "--diffmask-probe", str(tmp_path / "missing.pt")])


def test_reduction_scores_order_kept_words_by_their_own_evidence():
    from captum_erasure.benchmark.runners import reduction_scores
    # 5 words; 3 then 0 removed; 1, 2, 4 kept with leave-one-out drops 0.1, 0.5, 0.3.
    scores = reduction_scores(5, [3, 0], [1, 2, 4], [0.1, 0.5, 0.3])
    assert scores == [2.0, 3.25, 3.75, 1.0, 3.5]
    # equal drops: the earlier word ranks higher, as the metrics' position tie-break would
    assert reduction_scores(3, [], [0, 1, 2], [0.2, 0.2, 0.2]) == [1.75, 1.5, 1.25]
    with pytest.raises(ValueError, match="2 drops for 3 kept"):
        reduction_scores(5, [3, 0], [1, 2, 4], [0.1, 0.5])


MIN_CONFIDENCE = 0.985


def test_input_reduction_kept_words_follow_leave_one_out_on_the_reduced_input(one_thread,
                                                                             monkeypatch):
    from functools import partial

    from captum_erasure.attr import input_reduction
    from captum_erasure.benchmark.evaluate import predict
    from captum_erasure.benchmark.runners import (
        MethodContext,
        kept_word_drops,
        run_input_reduction,
    )
    tokenizer, model = toy_tokenizer(), two_class(0)
    examples = encode_examples(tokenizer, TEXTS, LABELS)
    targets, _, _ = predict(model, examples, tokenizer.pad_token_id)
    ctx = MethodContext(model, tokenizer, examples, targets, QUICK, 0, show_progress=False)
    # a confidence floor stops the reductions early, so several words are kept (and tied)
    monkeypatch.setattr(input_reduction, "InputReduction",
                        partial(input_reduction.InputReduction, min_confidence=MIN_CONFIDENCE))
    scores = run_input_reduction(ctx)
    checked = 0
    for i, e in enumerate(examples):
        kept = [w for w, score in enumerate(scores[i]) if score != int(score)]  # fractional
        if len(kept) < 2:
            continue
        by_hand = []
        for left_out in kept:
            tokens = [[t for t, w in enumerate(e.word_of_token.tolist())
                       if w < 0 or (w in kept and w != skip)] for skip in (None, left_out)]
            p = [torch.softmax(model(e.ids[None, t], torch.ones(1, len(t), dtype=torch.long))
                               .logits, -1)[0, targets[i]].item() for t in tokens]
            by_hand.append(p[0] - p[1])
        assert kept_word_drops(ctx, e, targets[i], kept) == pytest.approx(by_hand, abs=1e-6)
        assert sorted(kept, key=lambda w: scores[i][w]) == \
            sorted(kept, key=lambda w: (by_hand[kept.index(w)], -w))
        checked += 1
    assert checked > 0


def test_intervals_and_paired_comparison_of_hand_made_scores(tmp_path):
    import pandas as pd

    from captum_erasure.benchmark.intervals import (
        interval_table,
        leaders_by_removal,
        paired_table,
        write_intervals,
    )
    # A beats B by exactly 0.1 on every snippet (comprehensiveness, higher is better); on
    # sufficiency (lower is better) B beats A by 0.2 on every snippet. Random is never a leader.
    comp_b = [0.2, 0.5, 0.3, 0.6]
    frame = pd.DataFrame({
        "method": ["A"] * 4 + ["B"] * 4 + ["Random"] * 4, "example": list(range(4)) * 3,
        "n_features": [5, 6, 7, 8] * 3,
        "comprehensiveness": [c + 0.1 for c in comp_b] + comp_b + [0.9] * 4,
        "sufficiency": [0.3] * 4 + [0.1] * 4 + [0.0] * 4})
    intervals = interval_table(frame)
    row = intervals[(intervals.method == "A") & (intervals.column == "comprehensiveness")]
    assert row["mean"].item() == pytest.approx(0.5)
    paired = paired_table(frame, intervals).set_index("metric")
    comp = paired.loc["comp@20% (deletion)"]
    assert (comp["leader"], comp["other"]) == ("A", "B")
    assert comp["low"] == pytest.approx(0.1) and comp["high"] == pytest.approx(0.1)
    suff = paired.loc["suff@20% (deletion)"]
    assert (suff["leader"], suff["advantage"]) == ("B", pytest.approx(0.2))
    assert leaders_by_removal(intervals)["leader"].tolist() == ["A", "B"]
    write_intervals(frame, tmp_path)
    assert "0.500 [" in (tmp_path / "intervals.md").read_text()


def test_intervals_command_combines_one_method_runs(tmp_path, one_thread):
    from captum_erasure.benchmark.intervals import main as intervals_main
    runs = []
    for method in ("Random", "WordErasure"):
        run_benchmark(two_class(0), toy_tokenizer(), TEXTS, LABELS, out=tmp_path / method,
                      methods=[method], settings=QUICK, seed=0, show_progress=False)
        runs.append(str(tmp_path / method))
    intervals_main(runs + ["--out", str(tmp_path / "combined")])
    import pandas as pd
    summary = pd.read_csv(tmp_path / "combined" / "summary.csv")
    assert summary["method"].tolist() == ["Random", "WordErasure"]
    leaders = pd.read_csv(tmp_path / "combined" / "leaders.csv")
    assert set(leaders["leader"]) == {"WordErasure"}  # Random is never a leader
    assert "comp@20% ([MASK])" in set(leaders["metric"])
    with pytest.raises(ValueError, match="run twice"):
        intervals_main([runs[0], runs[0], "--out", str(tmp_path / "twice")])


def test_each_finished_method_is_saved_as_a_one_method_run(tmp_path, one_thread):
    import pandas as pd

    from captum_erasure.benchmark.intervals import main as intervals_main
    result = run_benchmark(two_class(0), toy_tokenizer(), TEXTS, LABELS, out=tmp_path / "run",
                           methods=["Random", "LIT IG", "WordErasure"], settings=QUICK,
                           seed=0, show_progress=False)
    folders = sorted((tmp_path / "run" / "methods").iterdir())
    assert [f.name for f in folders] == ["LIT_IG", "Random", "WordErasure"]
    intervals_main([str(f) for f in folders] + ["--out", str(tmp_path / "combined")])
    combined = pd.read_csv(tmp_path / "combined" / "intervals.csv")
    whole = pd.read_csv(tmp_path / "run" / "intervals.csv")
    key = ["method", "metric"]
    pd.testing.assert_frame_equal(combined.sort_values(key).reset_index(drop=True),
                                  whole.sort_values(key).reset_index(drop=True))
    assert len(result.summary) == 3
