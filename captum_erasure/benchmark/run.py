"""Faithfulness benchmark: our erasure methods against Captum's and LIT's built-in attributions.

    python -m captum_erasure.benchmark --model default --n 200 --out outputs/benchmark
    python -m captum_erasure.benchmark --quick            # a few examples, cheap settings
    python -m captum_erasure.benchmark --ray --actors 2   # each method a task on a local Ray

Every method explains the same held-out Rotten Tomatoes snippets for the class the model
predicts; every metric is computed on word scores, the natural unit:

- our methods take the word feature mask (:func:`~captum_erasure._core.text.word_feature_mask`) and
  give one score per word;
- Captum's methods run one snippet at a time (their unit) on the word pieces between the
  special tokens (the forward adds ``[CLS]``/``[SEP]`` back, so specials are never perturbed and
  padding never enters) and return probabilities of the predicted class. FeatureAblation, Lime,
  KernelShap and ShapleyValueSampling get the word mask (every piece holds its word's value);
  Occlusion (window 1) and LayerIntegratedGradients (on the input embeddings, [PAD] baseline,
  summed over the embedding) are per piece and are **summed over the pieces of a word**;
- LIT's IntegratedGradients (through :class:`lit_plugin.model.HFSequenceClassifier`) gives
  word-piece scores, summed per word; LIT's LIME splits the text with ``str.split``: each model
  word gets the score of the whitespace token that contains it divided by the number of model
  words in that token ("film," is one LIME token and two model words).

Metrics (see :mod:`captum_erasure.metrics.faithfulness`, :mod:`captum_erasure.metrics.diagnostics`,
:mod:`captum_erasure.metrics`): comprehensiveness and sufficiency of the top 20 %, ERASER AOPC
(bins 1/5/10/20/50 %, the released code's 1/|B| normalisation; the paper's Eq. 3 is 5/6 of it),
AOPC over every k (ferret's ``based_on="k"``), the deletion-curve area (removal = deletion),
Atanasova et al.'s masked macro-F1 AUC, Kim et al.'s AUC_rep (MLM replacement of the top 20 %),
confidence indication, dataset consistency, rationale consistency across seeds and untrained
models, agreement with the VADER lexicon's human word valences (a proxy for rationales), and
cost: seconds, forward calls and rows per example (counted by a hook on the model; gradient
methods add a backward pass per forward).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from captum_erasure.benchmark.evaluate import predict
from captum_erasure.benchmark.examples import encode_examples
from captum_erasure.benchmark.intervals import write_intervals
from captum_erasure.benchmark.method_run import (
    Consistency,
    MethodRun,
    run_method,
    save_method_run,
)
from captum_erasure.benchmark.report import (
    machine_description,
    write_plots,
    write_report,
)
from captum_erasure.benchmark.runners import (
    ALL_METHODS,
    RUNNERS,
    MethodContext,
    available_methods,
)
from captum_erasure.benchmark.settings import FULL, QUICK, BenchmarkSettings
from captum_erasure.data import vader_valences


# -- the whole benchmark -----------------------------------------------------------------------
@dataclass
class BenchmarkResult:
    summary: pd.DataFrame           # one row per method
    per_example: pd.DataFrame
    consistency: pd.DataFrame | None
    report: Path
    failures: dict = field(default_factory=dict)


def run_benchmark(model: nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int],
                  *, out: str | Path, methods: Sequence[str] | None = None,
                  mlm: nn.Module | None = None, valences: dict | None = None,
                  consistency_models: dict[str, nn.Module] | None = None,
                  consistency_tokenizer: Any = None, settings: BenchmarkSettings = FULL,
                  seed: int = 0, model_name: str = "model", show_progress: bool = True,
                  notes: Sequence[str] = (), backend: str = "local",
                  address: str | None = None, num_actors: int | None = None,
                  ray_options: dict | None = None) -> BenchmarkResult:
    """Explain ``texts`` with every method, evaluate every metric, write the report to ``out``
    (``report.md``, ``summary.csv``, ``per_example.csv``, ``results.json``, PNG plots, and the
    bootstrap intervals and paired comparisons: ``intervals.md``, ``intervals.csv``,
    ``paired.csv``, ``leaders.csv``). Each method's rows are also written to
    ``out/methods/<method>/`` as soon as it finishes (a run stopped early keeps them).

    ``backend="ray"`` runs each method as one Ray task (:mod:`~captum_erasure.benchmark.ray_runs`:
    ``address`` joins a cluster, else a local Ray is started and stopped; ``num_actors``
    methods at once; ``ray_options``: ``num_cpus``, ``cpus_per_method``, ``runtime_env``); the
    report is the same as this process's (every method starts from the same seed)."""
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model.eval()
    if mlm is not None:
        mlm.eval()
    methods = list(methods) if methods is not None else available_methods(mlm)
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {list(RUNNERS)}")
    max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    examples = encode_examples(tokenizer, texts, labels, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    targets, confidences, activations = predict(model, examples, pad)
    accuracy = float(np.mean([t == e.label for t, e in zip(targets, examples)]))
    ctx = MethodContext(model, tokenizer, examples, targets, settings, seed, mlm, show_progress)
    consistency = None
    if consistency_models:
        k = settings.consistency_examples
        consistency = Consistency(consistency_models, consistency_tokenizer or tokenizer,
                                  list(texts[:k]), list(labels[:k]))
    common = dict(valences=valences, activations=activations, confidences=confidences,
                  consistency=consistency)

    def save(run: MethodRun) -> None:
        save_method_run(run, out, len(examples))

    if backend == "ray":
        from captum_erasure.benchmark import ray_runs
        runs = ray_runs.run_methods(ctx, methods, address=address, num_actors=num_actors,
                                    options=ray_options, on_done=save, **common)
    else:
        runs = []
        for method in tqdm(methods, desc="methods", unit="method", disable=not show_progress):
            runs.append(run_method(ctx, method, **common))
            save(runs[-1])
    failures = {r.method: r.error for r in runs if r.error is not None}
    runs = [r for r in runs if r.error is None]
    if not runs:
        raise RuntimeError(f"every method failed: {failures}")
    summary = pd.DataFrame([r.row for r in runs])
    per_example = pd.concat([r.frame for r in runs], ignore_index=True)
    curves = {r.method: r.curves for r in runs}
    masked_curves = {r.method: r.masked_curves for r in runs}

    consistency_table = None
    if consistency is not None:
        tables = [r.consistency for r in runs if r.consistency is not None
                  and len(r.consistency)]
        consistency_table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
            columns=["method", "rationale_consistency", "p_value", "points"])
        summary = summary.merge(consistency_table[["method", "rationale_consistency"]],
                                on="method", how="left")

    summary.to_csv(out / "summary.csv", index=False)
    per_example.to_csv(out / "per_example.csv", index=False)
    meta = {"model": model_name, "n_examples": len(examples), "accuracy": accuracy,
            "seed": seed, "settings": asdict(settings), "failures": failures,
            "machine": machine_description(), "notes": list(notes),
            "mean_words": float(np.mean([len(e.words) for e in examples]))}
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "summary": summary.to_dict(orient="records")}, indent=2,
        default=float) + "\n")
    write_intervals(per_example, out, seed)
    plots = write_plots(out, summary, curves, masked_curves)
    report = write_report(out, summary, consistency_table, meta, plots, settings, methods)
    return BenchmarkResult(summary, per_example, consistency_table, report, failures)


# -- command line ------------------------------------------------------------------------------
def _consistency_models(seed: int, show_progress: bool) -> tuple[dict, Any, str]:
    """GloVe Uni-LSTMs: the cached one (seed 0), one trained with seed 1 (in memory, about
    20 s on 2 cores), and two untrained ones."""
    from captum_erasure.paper.li2016.rnn_models import (
        load_sentiment_model,
        new_sentiment_model,
        train_sentiment_model,
    )
    trained, tokenizer, _ = load_sentiment_model("lstm", show_progress=show_progress)
    other, info = train_sentiment_model("lstm", seed=seed + 1, show_progress=show_progress)
    models = {"lstm seed 0": trained, f"lstm seed {seed + 1}": other.eval(),
              "untrained seed 0": new_sentiment_model("lstm", seed=0).eval(),
              "untrained seed 1": new_sentiment_model("lstm", seed=1).eval()}
    return models, tokenizer, (f"Rationale consistency: GloVe Uni-LSTMs (trained seed 0 and "
                               f"seed {seed + 1}, test accuracy {info['accuracy']['test']:.3f}; "
                               "two untrained), all pairs.")


def _load_model(name: str) -> tuple[nn.Module, Any, str]:
    """``--model``: 'default' or the folder of a saved HF sequence classifier."""
    if name == "default":
        from captum_erasure.models.default import load_default_model
        model, tokenizer = load_default_model()
        return model, tokenizer, "default (MiniLM-L6 fine-tuned on Rotten Tomatoes)"
    folder = Path(name)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"--model {name!r}: not 'default' and not a folder with a saved HF "
                         "classifier (config.json)")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    return model, AutoTokenizer.from_pretrained(folder), str(folder)


def main(argv: Sequence[str] | None = None) -> BenchmarkResult:
    parser = argparse.ArgumentParser(prog="python -m captum_erasure.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default",
                        help="the model to explain: 'default' (the cached MiniLM sentiment "
                             "model) or the folder of a saved HF classifier (save_pretrained or "
                             "models.entropy_finetune.save_finetuned)")
    parser.add_argument("--n", type=int, default=200, help="held-out snippets")
    parser.add_argument("--out", default="outputs/benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="*", default=None,
                        help=f"subset of {list(ALL_METHODS)}")
    parser.add_argument("--quick", action="store_true",
                        help="8 snippets, cheap method settings (a smoke test)")
    parser.add_argument("--no-mlm", action="store_true",
                        help="skip InputMarginalization and AUC_rep (no default MLM)")
    parser.add_argument("--no-consistency", action="store_true",
                        help="skip rationale consistency (trains a GloVe LSTM)")
    parser.add_argument("--max-words", type=int, default=None,
                        help="only snippets with at most this many words (cost control)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is much faster for small models on a busy "
                             "machine: no thread hand-offs)")
    parser.add_argument("--diffmask-steps", type=int, default=None,
                        help="DiffMask fit steps (batches of 16 training snippets; default "
                             f"{FULL.diffmask_steps}, quick {QUICK.diffmask_steps})")
    parser.add_argument("--diffmask-layer", type=int, default=None,
                        help="DiffMask's layer (default: the last)")
    parser.add_argument("--diffmask-probe", default=None, metavar="PATH",
                        help="explain with this saved DiffMask probe (DiffMask.save, e.g. "
                             "examples/diffmask_layers.py's) instead of fitting one")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run each method as a Ray task: alone, a local Ray started and "
                             "stopped for this run; with ADDRESS ('auto', 'ray://HOST:10001') "
                             "join that cluster (needs the ray extra)")
    parser.add_argument("--actors", type=int, default=None,
                        help="with --ray: methods at once (default: one per CPU of the "
                             "cluster)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from captum_erasure.data import load_rotten_tomatoes
    settings = QUICK if args.quick else FULL
    if args.diffmask_steps is not None or args.diffmask_layer is not None:
        settings = replace(settings, diffmask_layer=args.diffmask_layer,
                           diffmask_steps=args.diffmask_steps or settings.diffmask_steps)
    if args.diffmask_probe:
        if not Path(args.diffmask_probe).is_file():
            parser.error(f"--diffmask-probe: no file {args.diffmask_probe}")
        settings = replace(settings, diffmask_probe=args.diffmask_probe)
    n = min(args.n, 8) if args.quick else args.n
    show = not args.no_progress
    model, tokenizer, model_name = _load_model(args.model)
    mlm = None
    if not args.no_mlm:
        from captum_erasure.models.default_mlm import load_default_mlm
        mlm = load_default_mlm()
        mlm = mlm[0] if isinstance(mlm, tuple) else mlm
    frame = load_rotten_tomatoes("test")
    if args.max_words:
        frame = frame[frame["text"].str.split().str.len() <= args.max_words]
    frame = frame.sample(n=min(n, len(frame)), random_state=args.seed)
    notes = [f"Snippets: a seeded sample (seed {args.seed}) of the Rotten Tomatoes test split"
             + (f" with at most {args.max_words} words" if args.max_words else "") + "."]
    consistency_models = consistency_tokenizer = None
    if not args.no_consistency:
        consistency_models, consistency_tokenizer, note = _consistency_models(args.seed, show)
        notes.append(note)
    result = run_benchmark(
        model, tokenizer, frame["text"].tolist(), frame["label"].tolist(), out=args.out,
        methods=args.methods, mlm=mlm, valences=vader_valences(),
        consistency_models=consistency_models, consistency_tokenizer=consistency_tokenizer,
        settings=settings, seed=args.seed, model_name=model_name, show_progress=show,
        notes=notes, backend="local" if args.ray is None else "ray",
        address=args.ray or None, num_actors=args.actors)
    print(result.report.read_text())
    return result


if __name__ == "__main__":
    main()

