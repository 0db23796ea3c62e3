"""One method's part of the benchmark, the unit that runs in this process or as one Ray task.

Every method starts from the same seeded random state, so its result does not depend on which
methods ran before it in the same process: a run of several methods equals the runs of each
method alone (the committed n = 200 tables were made that way), locally and on Ray.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from captum_erasure.benchmark.evaluate import evaluate, rationale_consistency_table
from captum_erasure.benchmark.runners import PREPARERS, MethodContext, explain_all


@dataclass
class Consistency:
    """What rationale consistency needs: its models (one tokenizer) and the first texts."""
    models: dict
    tokenizer: Any
    texts: Sequence[str]
    labels: Sequence[int]


@dataclass
class MethodRun:
    """A method's summary row, per-example frame and curves, or the error that stopped it."""
    method: str
    row: dict | None = None
    frame: pd.DataFrame | None = None
    curves: Any = None
    masked_curves: Any = None
    consistency: pd.DataFrame | None = None
    error: str | None = None


def run_method(ctx: MethodContext, method: str, *, valences: dict | None,
               activations: torch.Tensor, confidences: Sequence[float],
               consistency: Consistency | None = None) -> MethodRun:
    """Explain every example of ``ctx`` with ``method`` and evaluate every metric; an error
    is returned, not raised (one broken method must not hide the others' results)."""
    torch.manual_seed(ctx.seed)
    np.random.seed(ctx.seed)
    try:
        fit_cost = PREPARERS[method](ctx) if method in PREPARERS else {}
        scores, cost = explain_all(ctx, method)
        cost.update(fit_cost)
    except Exception as error:
        return MethodRun(method, error=f"{type(error).__name__}: {error}")
    summary, frame, curves, masked = evaluate(ctx, scores, valences=valences,
                                              activations=activations, confidences=confidences)
    frame.insert(0, "method", method)
    frame.insert(1, "example", range(len(ctx.examples)))
    frame["word_scores"] = [json.dumps([round(v, 6) for v in s]) for s in scores]
    table = None
    if consistency is not None:
        table = rationale_consistency_table(
            consistency.models, consistency.tokenizer, consistency.texts, consistency.labels,
            [method], ctx.settings, ctx.seed, ctx.show_progress)
    return MethodRun(method, {"method": method, **summary, **cost}, frame, curves, masked,
                     table)


def save_method_run(run: MethodRun, out: Path, n_examples: int) -> Path | None:
    """Write a finished method's rows to ``out/methods/<method>/`` as it completes, in the
    layout of a one-method run (``per_example.csv``, ``summary.csv``, ``results.json``), so
    that a long run that stops early keeps what finished:
    ``python -m captum_erasure.benchmark.intervals OUT/methods/* --out DIR`` combines them."""
    if run.error is not None:
        return None
    folder = Path(out) / "methods" / re.sub(r"[^A-Za-z0-9_.-]+", "_", run.method)
    folder.mkdir(parents=True, exist_ok=True)
    run.frame.to_csv(folder / "per_example.csv", index=False)
    pd.DataFrame([run.row]).to_csv(folder / "summary.csv", index=False)
    (folder / "results.json").write_text(json.dumps(
        {"meta": {"n_examples": n_examples, "methods": [run.method]}, "summary": [run.row]},
        indent=2, default=float) + "\n")
    return folder
