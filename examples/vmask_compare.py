"""VMASK (Chen & Ji 2020) against matched base models: accuracy, AOPC of post-hoc explanations
on each, AOPC of the masks themselves, and the words with the highest mean keep probability.

Two architectures, each trained twice by the same loop (:func:`captum_erasure.train_jointly`,
frozen embeddings, same data, same seed), once with a VMASK layer after the embedding:

- MiniLM-L6 (the cached builds of :mod:`captum_erasure.models.vmask_minilm`: 2,000 training
  snippets, 2 epochs by default);
- the GloVe LSTM of the Li et al. (2016) reproduction (all 8,087 training snippets, cached in
  ``OUT/models/`` as safetensors).

Then on the first ``--examples`` held-out test snippets: WordErasure, Captum Integrated
Gradients and Captum LIME, run exactly as the benchmark runs them
(:mod:`captum_erasure.benchmark.runners`), and on VMASK models the keep probabilities (mean
over a word's pieces), scored by AOPC of comprehensiveness (ERASER bins 1/5/10/20/50 %,
ERASER code's normalisation, words deleted). Accuracy is over the whole test split (1,007).

    PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python examples/vmask_compare.py \
        --examples 100 --lime-samples 100 --ig-steps 20 [--only minilm|lstm]
    # the VMASK models with a weaker bottleneck, against the same base rows:
    ... examples/vmask_compare.py --beta 0.1 --skip-base [--only minilm|lstm]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from captum_erasure import VMask, attach_vmask, train_jointly  # noqa: E402
from captum_erasure.benchmark.examples import encode_examples, pad_batch  # noqa: E402
from captum_erasure.benchmark.runners import MethodContext, explain_all  # noqa: E402
from captum_erasure.benchmark.settings import BenchmarkSettings  # noqa: E402
from captum_erasure.data import load_rotten_tomatoes  # noqa: E402
from captum_erasure.metrics.faithfulness import (  # noqa: E402
    aopc_from_curves,
    drop_at_fraction,
    removal_curves,
)
from captum_erasure.models.vmask import (  # noqa: E402
    keep_probabilities,
    load_word_mask,
    mean_keep_by_word,
    save_word_mask,
    unmasked,
    word_mask_of,
)
from captum_erasure.models.default import evaluate_accuracy  # noqa: E402
from captum_erasure.models.vmask_minilm import load_minilm  # noqa: E402
from captum_erasure.paper.li2016.glove import glove_tokenizer  # noqa: E402
from captum_erasure.paper.li2016.rnn_models import (  # noqa: E402
    encode_texts,
    new_sentiment_model,
    trained_weights,
)

POST_HOC = ("WordErasure", "IntegratedGradients", "Lime", "Random")  # Random: the floor
LSTM_SETTINGS = {"epochs": 3, "batch_size": 64, "lr": 1e-3, "mask_lr": 1e-3, "beta": 1.0,
                 "seed": 0, "n_train": None}


def lstm_pair(out: Path, show_progress: bool, beta: float = 1.0,
              base: bool = True) -> dict[str, tuple]:
    """The GloVe LSTM with and without VMASK, trained by the same loop, cached in ``out``."""
    tokenizer = glove_tokenizer()
    train = load_rotten_tomatoes("train")
    models = {}
    settings = {**LSTM_SETTINGS, "beta": beta}
    for vmask in (False, True)[0 if base else 1:]:
        name = f"GloVe LSTM + VMASK{beta_tag(beta)}" if vmask else "GloVe LSTM"
        stem = out / (f"lstm_vmask{'' if beta == 1.0 else f'_beta{beta}'}" if vmask
                      else "lstm_base")
        model = new_sentiment_model("lstm", seed=settings["seed"])
        info_path = stem.with_suffix(".json")
        kept = {k: v for k, v in settings.items() if vmask or k not in ("beta", "mask_lr")}
        cached = info_path.is_file() and json.loads(info_path.read_text()) == kept
        if cached:
            model.load_state_dict(load_file(str(stem.with_suffix(".safetensors"))),
                                  strict=False)
            if vmask:
                attach_vmask(model, mask=load_word_mask(f"{stem}_mask.safetensors"))
        else:
            if vmask:
                attach_vmask(model)
            ids, attention = encode_texts(tokenizer, train["text"].tolist())
            s = settings
            train_jointly(model, ids, attention, torch.tensor(train["label"].to_numpy()),
                          epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
                          mask_lr=s["mask_lr"], beta=s["beta"], seed=s["seed"],
                          weight_decay=0.0, show_progress=show_progress)
            out.mkdir(parents=True, exist_ok=True)
            with unmasked(model):
                save_file(trained_weights(model), str(stem.with_suffix(".safetensors")))
            if vmask:
                save_word_mask(word_mask_of(model), f"{stem}_mask.safetensors")
            info_path.write_text(json.dumps(kept))
        models[name] = (model.eval(), tokenizer)
    return models


def beta_tag(beta: float) -> str:
    return "" if beta == 1.0 else f" (beta={beta})"


def vmask_word_scores(ctx: MethodContext) -> list[list[float]]:
    method = VMask(ctx.model)
    scores = []
    for indices, (ids, attention, mask) in ctx.batches():
        attr = method.attribute(ids, additional_forward_args=(attention,), feature_mask=mask)
        for row, i in enumerate(indices):
            e = ctx.examples[i]
            first = [int((e.word_of_token == w).nonzero()[0]) for w in range(len(e.words))]
            scores.append(attr[row, first].tolist())
    return scores


def aopc_of(ctx: MethodContext, scores: list[list[float]]) -> dict[str, float]:
    """AOPC of comprehensiveness and sufficiency over the ERASER bins (the benchmark's
    convention: words deleted, ERASER code's normalisation), comprehensiveness at 20 %."""
    from captum_erasure.benchmark.examples import spread_words
    values: dict[str, list[float]] = {k: [] for k in ("aopc_comprehensiveness",
                                                      "aopc_sufficiency", "comprehensiveness",
                                                      "p_predicted")}
    common = dict(special_token_ids=list(ctx.tokenizer.all_special_ids), pad_token_id=ctx.pad,
                  batch_size=64)
    for indices, (ids, attention, mask) in ctx.batches():
        attr = spread_words([ctx.examples[i] for i in indices], [scores[i] for i in indices],
                            ids.shape[1])
        target = torch.tensor([ctx.targets[i] for i in indices])
        for keep in (False, True):
            curves = removal_curves(ctx.model, ids, attr, ks="eraser", keep=keep, target=target,
                                    additional_forward_args=(attention,), feature_mask=mask,
                                    **common)
            name = "aopc_sufficiency" if keep else "aopc_comprehensiveness"
            values[name] += aopc_from_curves(curves, "eraser", "code").tolist()
            if not keep:
                values["comprehensiveness"] += drop_at_fraction(curves, 0.2).tolist()
                values["p_predicted"] += curves.original.tolist()
    return {k: sum(v) / len(v) for k, v in values.items()}


def measure(name: str, model, tokenizer, texts, labels, settings, seed, show_progress,
            post_hoc=POST_HOC, masks: bool = True):
    examples = encode_examples(tokenizer, texts, labels)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, attention, _ = pad_batch(examples, pad)
    with torch.inference_mode():
        out = model(ids, attention)
    targets = (out.logits if hasattr(out, "logits") else out).argmax(-1).tolist()
    ctx = MethodContext(model, tokenizer, examples, targets, settings, seed,
                        show_progress=show_progress)
    rows, all_scores = [], {}
    methods = [*post_hoc, *(["VMASK keep probability"] if masks and word_mask_of(model) else [])]
    for method in methods:
        started = time.perf_counter()
        torch.manual_seed(seed)
        scores = vmask_word_scores(ctx) if method.startswith("VMASK") else \
            explain_all(ctx, method)[0]
        seconds = time.perf_counter() - started
        metrics = aopc_of(ctx, scores)
        all_scores[method] = scores
        rows.append({"model": name, "method": method,
                     "aopc_comprehensiveness": metrics["aopc_comprehensiveness"],
                     "comprehensiveness@20%": metrics["comprehensiveness"],
                     "aopc_sufficiency": metrics["aopc_sufficiency"],
                     "mean_p_predicted": metrics["p_predicted"],
                     "explain_seconds_per_text": seconds / len(examples)})
        print(rows[-1], flush=True)
    return rows, examples, all_scores


def top_keep_words(model, tokenizer, texts, labels, n: int = 15) -> list[tuple]:
    examples = encode_examples(tokenizer, texts, labels)
    words, keeps = [], []
    for start in range(0, len(examples), 64):
        chunk = examples[start:start + 64]
        ids, attention, _ = pad_batch(chunk, tokenizer.pad_token_id or 0)
        keep = keep_probabilities(model, ids, attention)
        for row, e in enumerate(chunk):
            words.append(e.words)
            keeps.append([float(keep[row, :len(e.ids)][e.word_of_token == w].mean())
                          for w in range(len(e.words))])
    ranked = mean_keep_by_word(words, keeps, min_count=3)
    flat = [k for row in keeps for k in row]
    return ranked[:n], ranked[-n:], flat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--lime-samples", type=int, default=100)
    parser.add_argument("--ig-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/vmask")
    parser.add_argument("--only", choices=["minilm", "lstm"], default=None)
    parser.add_argument("--beta", type=float, default=1.0,
                        help="weight of the bottleneck term of the VMASK models (default 1.0, "
                             "the authors' starting value)")
    parser.add_argument("--skip-base", action="store_true",
                        help="measure only the VMASK models (e.g. for another --beta)")
    parser.add_argument("--methods", nargs="+", choices=POST_HOC, default=list(POST_HOC),
                        help="post-hoc methods (default: all; the masks are measured only "
                             "with all of them)")
    parser.add_argument("--figures-only", action="store_true",
                        help="only redraw the combined table, the AOPC figure and the keep "
                             "probability histograms of every cached VMASK model")
    parser.add_argument("--skip-vmask", action="store_true",
                        help="measure only the base models (MiniLM only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.figures_only:
        combine_runs(out)
        keep_histograms(out)
        return
    settings = BenchmarkSettings(ig_steps=args.ig_steps, lime_samples=args.lime_samples,
                                 perturbations_per_eval=64, batch_size=32)
    test = load_rotten_tomatoes("test")
    texts, labels = test["text"].tolist(), test["label"].tolist()
    models: dict[str, tuple] = {}
    if args.only != "lstm":
        for vmask in [v for v in (False, True) if not (args.skip_base and not v)
                      and not (args.skip_vmask and v)]:
            overrides = {"beta": args.beta} if vmask and args.beta != 1.0 else {}
            model, tokenizer, _ = load_minilm(vmask, **overrides)
            name = f"MiniLM + VMASK{beta_tag(args.beta)}" if vmask else "MiniLM"
            models[name] = (model, tokenizer)
    if args.only != "minilm":
        models.update(lstm_pair(out / "models", True, args.beta, not args.skip_base))
    accuracy, rows, words, hist = [], [], {}, {}
    for name, (model, tokenizer) in models.items():
        accuracy.append({"model": name,
                         "test_accuracy": evaluate_accuracy(model, tokenizer, texts, labels)})
        print(accuracy[-1], flush=True)
        found, _, _ = measure(name, model, tokenizer, texts[:args.examples],
                              labels[:args.examples], settings, args.seed, True,
                              args.methods, args.methods == list(POST_HOC))
        rows += found
        if word_mask_of(model) is not None:
            top, bottom, flat = top_keep_words(model, tokenizer, texts, labels)
            words[name] = {"top": top, "bottom": bottom}
            hist[name] = flat
    tag = (f"_{args.only}" if args.only else "") + \
        ("" if args.beta == 1.0 else f"_beta{args.beta}") + \
        ("_vmask" if args.skip_base else "") + ("_base" if args.skip_vmask else "") + \
        ("" if args.methods == list(POST_HOC) else "_" + "-".join(args.methods))
    frame = pd.DataFrame(rows)
    frame.to_csv(out / f"aopc{tag}.csv", index=False)
    (out / f"results{tag}.json").write_text(json.dumps(
        {"args": vars(args), "accuracy": accuracy, "aopc": rows, "keep_words": words},
        indent=2) + "\n")
    with open(out / f"tables{tag}.md", "w") as f:
        f.write(pd.DataFrame(accuracy).to_markdown(index=False, floatfmt=".4f") + "\n\n")
        f.write(frame.to_markdown(index=False, floatfmt=".4f") + "\n\n")
        for name, w in words.items():
            table = pd.DataFrame([(a, round(b, 4), c) for a, b, c in w["top"]],
                                 columns=["word", "mean keep probability", "count"])
            f.write(f"{name}: highest mean keep probability (words seen >= 3 times in the "
                    f"test split)\n\n{table.to_markdown(index=False)}\n\n")
    pivot = frame.pivot(index="method", columns="model", values="aopc_comprehensiveness")
    ax = pivot.plot.bar(figsize=(8, 4), rot=0)
    ax.set_ylabel("AOPC comprehensiveness (drop in p(predicted class))")
    ax.set_title(f"Post-hoc explanations on base vs VMASK models ({args.examples} test snippets)")
    plt.tight_layout()
    plt.savefig(out / f"aopc{tag}.png", dpi=120)
    plt.close()
    if hist:
        _, axes = plt.subplots(1, len(hist), figsize=(4 * len(hist), 3), squeeze=False)
        for ax, (name, flat) in zip(axes[0], hist.items()):
            ax.hist(flat, bins=40, range=(0, 1))
            ax.set_xlabel("keep probability per word (test split)")
            ax.set_ylabel("words")
            ax.set_title(name)
        plt.tight_layout()
        plt.savefig(out / f"keep_histogram{tag}.png", dpi=120)
        plt.close()
    print((out / f"tables{tag}.md").read_text())
    combine_runs(out)


def keep_histograms(out: Path) -> None:
    """``keep_histograms.png``: keep probability per word over the test split, for every
    VMASK model already trained (MiniLM from the cache, LSTMs from ``out/models``)."""
    from captum_erasure.models.vmask_minilm import vmask_model_dir
    test = load_rotten_tomatoes("test")
    texts, labels = test["text"].tolist(), test["label"].tolist()
    found = {}
    for beta in (1.0, 0.1):
        overrides = {} if beta == 1.0 else {"beta": beta}
        if (vmask_model_dir(True, **overrides) / "info.json").is_file():
            model, tokenizer, _ = load_minilm(True, **overrides)
            found[f"MiniLM + VMASK{beta_tag(beta)}"] = (model, tokenizer)
        stem = out / "models" / f"lstm_vmask{'' if beta == 1.0 else f'_beta{beta}'}"
        if stem.with_suffix(".json").is_file():
            model = new_sentiment_model("lstm", seed=LSTM_SETTINGS["seed"])
            model.load_state_dict(load_file(str(stem.with_suffix(".safetensors"))),
                                  strict=False)
            attach_vmask(model, mask=load_word_mask(f"{stem}_mask.safetensors"))
            found[f"GloVe LSTM + VMASK{beta_tag(beta)}"] = (model.eval(), glove_tokenizer())
    if not found:
        return
    _, axes = plt.subplots(1, len(found), figsize=(3.6 * len(found), 3), squeeze=False,
                           sharey=True)
    for ax, (name, (model, tokenizer)) in zip(axes[0], sorted(found.items())):
        _, _, flat = top_keep_words(model, tokenizer, texts, labels)
        ax.hist(flat, bins=50, range=(0, 1))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("keep probability of a word")
    axes[0][0].set_ylabel(f"words in the {len(texts)} test snippets")
    plt.tight_layout()
    plt.savefig(out / "keep_histograms.png", dpi=120)
    plt.close()


def combine_runs(out: Path) -> None:
    """``all_runs.md`` and ``aopc_all_runs.png`` over every run's results in ``out``."""
    results = [json.loads(p.read_text()) for p in sorted(out.glob("results*.json"))]
    accuracy = pd.DataFrame([a for r in results for a in r["accuracy"]]).drop_duplicates("model")
    aopc = pd.DataFrame([a for r in results for a in r["aopc"]]).drop_duplicates(
        ["model", "method"])
    names = [f"{arch}{tail}" for arch in ("MiniLM", "GloVe LSTM")
             for tail in ("", " + VMASK", *sorted({m[len(arch):] for m in aopc["model"]
                                                    if m.startswith(f"{arch} + VMASK (")}))]
    order = [m for m in names if m in set(aopc["model"])]
    order += sorted(set(aopc["model"]) - set(order))
    confidence = aopc.groupby("model")["mean_p_predicted"].first()
    accuracy["mean p(predicted), explained snippets"] = accuracy["model"].map(confidence)
    accuracy = accuracy.set_index("model").reindex(order).reset_index()
    methods = [*POST_HOC, "VMASK keep probability"]
    aopc = aopc[aopc["method"].isin(methods)]
    pivot = aopc.pivot(index="model", columns="method", values="aopc_comprehensiveness")
    pivot = pivot.reindex(index=order, columns=[m for m in methods if m in pivot.columns])
    with open(out / "all_runs.md", "w") as f:
        f.write(accuracy.to_markdown(index=False, floatfmt=".4f") + "\n\n")
        f.write("AOPC of comprehensiveness (ERASER bins, words deleted):\n\n")
        f.write(pivot.to_markdown(floatfmt=".4f") + "\n\n")
        sufficiency = aopc.pivot(index="model", columns="method", values="aopc_sufficiency")
        sufficiency = sufficiency.reindex(index=order, columns=pivot.columns)
        f.write("AOPC of sufficiency (lower is better):\n\n")
        f.write(sufficiency.to_markdown(floatfmt=".4f") + "\n\n")
        words = {m: w for r in results for m, w in r.get("keep_words", {}).items()}
        top = pd.DataFrame({m: [f"{w} ({k:.3f})" for w, k, _ in words[m]["top"][:12]]
                            for m in order if m in words})
        f.write("Highest mean keep probability over the test split (words seen >= 3 "
                "times):\n\n" + top.to_markdown(index=False) + "\n")
    ax = pivot.plot.bar(figsize=(11, 4.5), rot=12)
    ax.legend(title="explanation", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    ax.set_ylabel("AOPC comprehensiveness\n(mean drop of p(predicted class))")
    ax.set_xlabel("")
    ax.set_title("Explanations of base and VMASK models (held-out Rotten Tomatoes snippets)")
    plt.tight_layout()
    plt.savefig(out / "aopc_all_runs.png", dpi=120)
    plt.close()


if __name__ == "__main__":
    main()
