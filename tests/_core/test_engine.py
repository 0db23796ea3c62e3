"""The perturbation engine: budgets, packing, counting, OOM halving, NaN checks."""

import pytest
import torch

from captum_erasure._core.engine import PerturbationEngine, Row, score_erasures


def linear_forward(x):
    return torch.stack([x.sum(1), -x.sum(1)], dim=1)


def collate_rows(rows):
    return (torch.tensor([[float(r.data)] * r.length + [0.0] * (8 - r.length) for r in rows]),)


def rows(n, length=lambda i: 1 + i % 4):
    return [Row(example=i, slot=0, length=length(i), data=i) for i in range(n)]


@pytest.mark.parametrize("batch_size,expected_calls", [(1, 10), (3, 4), (64, 1)])
def test_run_counts_forwards_and_keeps_order(batch_size, expected_calls):
    engine = PerturbationEngine(linear_forward, batch_size=batch_size)
    out = engine.run(rows(10), collate_rows)
    expected = torch.tensor([i * (1 + i % 4) for i in range(10)], dtype=torch.float)
    torch.testing.assert_close(out[:, 0], expected)
    assert engine.stats.forward_passes == expected_calls
    assert engine.stats.rows == 10


def test_token_budget_limits_padded_tokens():
    seen = []

    def forward(x, lengths):
        seen.append(int(lengths.max()) * len(lengths))
        return linear_forward(x)

    def collate(rs):
        return collate_rows(rs) + (torch.tensor([r.length for r in rs]),)

    engine = PerturbationEngine(forward, max_tokens=8)
    engine.run(rows(20), collate)
    assert max(seen) <= 8
    assert engine.stats.rows == 20


def test_specs_are_consumed_lazily():
    consumed = []

    def stream():
        for r in rows(10):
            consumed.append(r.example)
            yield r

    engine = PerturbationEngine(linear_forward, batch_size=4, sort_window=None)
    next(engine.iter_outputs(stream(), collate_rows))
    assert len(consumed) <= 5  # one chunk (+ the row that closed it), not the whole stream
    consumed.clear()
    engine = PerturbationEngine(linear_forward, batch_size=2, sort_window=4)
    next(engine.iter_outputs(stream(), collate_rows))
    assert len(consumed) == 4  # one sorting window


def test_length_sorting_packs_similar_rows_and_run_keeps_order():
    widths = []

    def forward(x, lengths):
        widths.append(int(lengths.max()) * len(lengths))
        return linear_forward(x)

    def collate(rs):
        return collate_rows(rs) + (torch.tensor([r.length for r in rs]),)

    specs = rows(16)
    unsorted = PerturbationEngine(forward, batch_size=4, sort_window=None).run(specs, collate)
    padded_unsorted, widths[:] = sum(widths), []
    ordered = PerturbationEngine(forward, batch_size=4).run(specs, collate)
    assert sum(widths) < padded_unsorted
    torch.testing.assert_close(ordered, unsorted)


def test_oom_halves_the_chunk_and_retries():
    def forward(x):
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("simulated")
        return linear_forward(x)

    engine = PerturbationEngine(forward, batch_size=8)
    out = engine.run(rows(9), collate_rows)
    assert out.shape == (9, 2)
    assert engine.stats.oom_retries >= 1
    assert engine.batch_size <= 2
    torch.testing.assert_close(out[:, 0], torch.tensor([i * (1 + i % 4) for i in range(9)],
                                                       dtype=torch.float))


def test_nan_output_is_a_clear_error():
    def forward(x):
        out = linear_forward(x)
        out[0, 0] = float("nan")
        return out

    with pytest.raises(FloatingPointError, match="NaN"):
        PerturbationEngine(forward).run(rows(3), collate_rows)


def test_wrong_output_rows_is_a_clear_error():
    with pytest.raises(ValueError, match="one row of outputs per input row"):
        PerturbationEngine(lambda x: torch.zeros(1, 2)).run(rows(3), collate_rows)


def test_bad_budgets_rejected():
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None, got 0"):
        PerturbationEngine(linear_forward, batch_size=0)
    with pytest.raises(ValueError, match="max_tokens must be a positive integer or None, got 0"):
        PerturbationEngine(linear_forward, max_tokens=0)


def test_progress_bar_reports_rows(capsys):
    engine = PerturbationEngine(linear_forward, batch_size=2, show_progress=True)
    engine.run(rows(4), collate_rows, desc="unit-test-bar")
    assert "unit-test-bar" in capsys.readouterr().err


def test_score_erasures_scatters_per_example_and_slot():
    # Example e has original value e+1 (row data), erased slot s has value s.
    def collate(rs):
        return (torch.tensor([[float(r.data)] for r in rs]),)

    originals = [Row(0, -1, data=3), Row(1, -1, data=5)]
    erasures = [Row(0, 0, data=1), Row(0, 1, data=2), Row(1, 0, data=4)]
    engine = PerturbationEngine(lambda x: torch.cat([x, -x], 1), batch_size=2)
    result = score_erasures(engine, collate, originals, erasures, n_slots=2, target=0,
                            score="logit_diff")
    torch.testing.assert_close(result.scores, torch.tensor([[2.0, 1.0], [1.0, 0.0]],
                                                           dtype=torch.float64))
    assert engine.stats.rows == 5


def test_engine_for_call_budgets():
    from captum_erasure._core.engine import DEFAULT_CUDA_MAX_TOKENS, engine_for_call
    common = dict(batch_size=None, max_tokens=None, autocast=False, show_progress=False)
    cpu = engine_for_call(linear_forward, linear_forward, n_examples=3,
                          perturbations_per_eval=None, device="cpu", **common)
    assert (cpu.batch_size, cpu.max_tokens) == (64, None)
    cuda = engine_for_call(linear_forward, linear_forward, n_examples=3,
                           perturbations_per_eval=None, device="cuda", **common)
    assert (cuda.batch_size, cuda.max_tokens) == (None, DEFAULT_CUDA_MAX_TOKENS)
    captum_like = engine_for_call(linear_forward, linear_forward, n_examples=3,
                                  perturbations_per_eval=4, device="cuda", **common)
    assert captum_like.batch_size == 12
    single = engine_for_call(linear_forward, linear_forward, n_examples=1,
                             perturbations_per_eval=None, device="cpu",
                             one_row_per_example=True, **common)
    assert single.batch_size == 1
    with pytest.raises(ValueError, match="perturbations_per_eval must be a positive integer"):
        engine_for_call(linear_forward, linear_forward, n_examples=1, perturbations_per_eval=0,
                        device="cpu", **common)


def test_engine_stats_add_every_field():
    from captum_erasure import EngineStats
    total = EngineStats(1, 2, 0)
    total += EngineStats(3, 4, 1)
    assert (total.forward_passes, total.rows, total.oom_retries) == (4, 6, 1)
