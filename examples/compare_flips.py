"""Decision flips and input reduction on the default model: MinimalErasure vs the greedy
baseline vs LIT's AblationFlip, and InputReduction (greedy and beam).

    .venv/bin/python examples/compare_flips.py --out outputs/flips --n 200 --train 1600

Stages, each writing its per-snippet results under ``--out`` as soon as it is done, so that a
long run can be summarised at any time (``--summarize-only``):

1. ``policy.pt`` / ``fit_history.csv``: MinimalErasure's amortised policy, trained once on
   ``--train`` snippets of the train split (reused when present, unless ``--refit``).
2. ``greedy_<units>.csv``, ``minimal_erasure_<units>.csv`` for ``--units`` (default both
   ``whitespace`` and ``words``) on the first ``--n`` held-out (test) snippets, all snippets
   of a method in batched calls through the shared engine.
3. ``input_reduction.csv``: Feng et al.'s reduction, greedy and beam 3, gradient importance.
4. ``ablation_flip.jsonl``: LIT's AblationFlip (default config) one snippet at a time on the
   LIT model wrapper without gradients, each snippet with a fresh ``_id`` and no caching
   wrapper, so every perturbation is really predicted; a counting wrapper counts the examples
   it predicts. Resumes where a previous run stopped.
5. ``summary.md`` / ``summary.csv``: the comparison table.

The paper's own procedure (``--searches policy``, docs/policy_search.md): ``policy<K>_<units>.csv``
for ``MinimalErasure(search="policy")`` with ``--policy-samples`` masks per text, sharing the
fitted policy. ``--fit-curve-every S`` fits in chunks of S steps and, after each, runs the
policy search on ``--curve-n`` dev snippets (``fit_curve.csv``: what the fit needs).
``--texts long`` takes the held-out snippets of at least ``--min-words`` whitespace words
instead of the first ``--n``; ``--model bilstm`` the cached GloVe Bi-LSTM of paper/li2016 (its
per-token states [forward; backward] as the policy's input; no AblationFlip, no reduction):

    .venv/bin/python examples/compare_flips.py --out outputs/policy/minilm --searches guided \
        policy --units whitespace --skip-reduction --train 8000 --fit-curve-every 100

Units: AblationFlip ablates whitespace tokens ("fresh," is one token). Our methods run on the
same units (``units="whitespace"``: the same search space, |D| directly comparable) and on
the tokenizer's words (``units="words"``, the default, punctuation a word of its own: "fresh,"
needs two erasures there); every |D| is also given in whitespace tokens touched.
Predictions are the classifier rows each snippet cost (for ours: the original, the policy's
representation, the search, pruning and the verification).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captum_erasure import EngineStats, InputReduction, MinimalErasure, greedy_flip  # noqa: E402,E501
from captum_erasure.data import load_rotten_tomatoes
from captum_erasure.models.default import load_default_model
from captum_erasure.paper.li2016.rnn_models import (
    left_align,
    load_sentiment_model,
    reverse_within_length,
)
from flips_summary import (  # noqa: E402
    SEARCH_FILES,
    UNIT_NAMES,
    collect,
    method_file,
    method_name,
    summarize,
)


def whitespace_tokens_touched(text: str, words: list[str], erased: list[int],
                              spans: list[tuple[int, int]] | None = None) -> int:
    """How many whitespace tokens of ``text`` contain an erased word."""
    if spans is None:  # recover the spans by scanning (words appear in order)
        spans, start = [], 0
        for word in words:
            begin = text.index(word, start)
            spans.append((begin, begin + len(word)))
            start = begin + len(word)
    bounds, position = [], 0
    for token in text.split():
        begin = text.index(token, position)
        bounds.append((begin, begin + len(token)))
        position = begin + len(token)
    touched = {i for w in erased for i, (b, e) in enumerate(bounds)
               if b <= spans[w][0] < e}
    return len(touched)


def flip_rows(results, seconds: float, method: str, ids: list[int]) -> pd.DataFrame:
    rows = []
    for snippet_id, r in zip(ids, results):
        rows.append(dict(
            id=snippet_id, method=method, n_words=len(r.words), flipped=r.flipped,
            size=len(r.erased) if r.flipped else np.nan,
            size_whitespace=whitespace_tokens_touched(r.text, r.words, r.erased)
            if r.flipped else np.nan,
            erased=" | ".join(r.erased_words), minimal=r.minimal,
            original_label=r.original_label, new_label=r.new_label,
            new_probability=r.new_probability, rows=r.forward_passes,
            seconds_per_snippet=seconds / len(results), message=r.message))
    return pd.DataFrame(rows)


class CountingModel:
    """Counts the examples a LIT model is asked to predict (AblationFlip calls ``predict``)."""

    def __init__(self, model) -> None:
        self.model, self.count, self.calls = model, 0, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict(self, inputs, **kw):
        inputs = list(inputs)
        self.count += len(inputs)
        self.calls += 1
        return list(self.model.predict(inputs, **kw))


def run_ablation_flip(model, tokenizer, frame: pd.DataFrame, path: Path,
                      deadline: float | None) -> None:
    from lit_nlp.components.ablation_flip import AblationFlip

    from lit_plugin.model import HFSequenceClassifier

    done = set()
    if path.exists():
        done = {json.loads(line)["id"] for line in path.read_text().splitlines() if line}
    lit_model = HFSequenceClassifier(model, tokenizer, compute_gradients=False)
    generator = AblationFlip()
    config = {"Prediction key": "probas", "Fields to ablate": ["text"]}
    from tqdm.auto import tqdm
    todo = frame[~frame.id.isin(done)]
    with path.open("a") as out:
        for snippet_id, text in tqdm(list(zip(todo.id, todo.text)), desc="AblationFlip"):
            if deadline is not None and time.time() > deadline:
                print("AblationFlip: deadline reached, stopping", flush=True)
                break
            counting = CountingModel(lit_model)
            example = {"text": text, "_id": uuid.uuid4().hex}  # fresh id, no cache wrapper
            start = time.perf_counter()
            cfs = generator.generate(example, counting, None, config)
            seconds = time.perf_counter() - start
            sizes = [len(eval_list(cf.get("ablated_tokens", "[]"))) for cf in cfs]
            best = int(np.argmin(sizes)) if sizes else None
            out.write(json.dumps(dict(
                id=int(snippet_id), method="AblationFlip", n_words=len(text.split()),
                flipped=bool(cfs), size_whitespace=sizes[best] if cfs else None,
                erased=cfs[best]["ablated_tokens"] if cfs else "", counterfactuals=len(cfs),
                rows=counting.count, calls=counting.calls, seconds_per_snippet=seconds)) + "\n")
            out.flush()


def eval_list(text: str) -> list:
    """AblationFlip's ``ablated_tokens`` is a printed Python list of strings."""
    import ast
    return list(ast.literal_eval(text)) if text else []


class BiLSTMStates:
    """The Bi-LSTM's output for every token, [forward h_t; backward h_t] (the representation
    of word t the paper's policy reads), at the token's own position."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model = self.model
        keep = attention_mask.ne(0)
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        aligned, lengths = left_align(model.embedding(input_ids), attention_mask)
        forward = model.forward_rnn(aligned)[0]
        backward = reverse_within_length(
            model.backward_rnn(reverse_within_length(aligned, lengths))[0], lengths)
        states = torch.cat([forward, backward], -1)
        return torch.zeros_like(states).scatter_(1, order[..., None].expand_as(states), states)


def load_classifier(kind: str):
    """(model, tokenizer, policy representation or None for the default hidden states)."""
    if kind == "bilstm":
        model, tokenizer, _ = load_sentiment_model("bilstm", show_progress=False)
        return model, tokenizer, BiLSTMStates(model)
    model, tokenizer = load_default_model()
    return model, tokenizer, None


def held_out(texts: str, n: int, min_words: int, split: str = "test") -> pd.DataFrame:
    """The first ``n`` held-out (test) snippets, or (``long``) ``n`` evenly spaced ones of
    those with at least ``min_words`` whitespace words (the split is sorted positive first,
    so the first ones are all positive); ``split="dev"``: the same from dev."""
    frame = load_rotten_tomatoes(split)
    if texts == "long":
        frame = frame[frame.text.str.split().str.len() >= min_words]
        if n < len(frame):
            frame = frame.iloc[np.linspace(0, len(frame) - 1, n).round().astype(int)]
    return frame.head(n).reset_index(drop=True)


def shuffled(split: str, n: int) -> list[str]:
    """``n`` snippets of ``split`` in a seeded random order: the splits are sorted positive
    first, so their first snippets are nearly all positive."""
    return load_rotten_tomatoes(split).sample(frac=1.0, random_state=0).text.head(n).tolist()


def run_greedy(model, tokenizer, texts: list[str], ids: list[int], out: Path, stats: dict,
               units: str) -> None:
    start = time.perf_counter()
    greedy_stats = EngineStats()
    greedy = greedy_flip(model, texts, tokenizer=tokenizer, stats=greedy_stats, units=units)
    seconds = time.perf_counter() - start
    method = f"greedy ({units})"
    flip_rows(greedy, seconds, method, ids).to_csv(out / f"greedy_{units}.csv", index=False)
    stats[method] = dict(forward_calls=greedy_stats.forward_passes)
    print(f"{method}: {seconds:.0f} s", flush=True)


def run_minimal_erasure(explainer, tokenizer, texts: list[str], ids: list[int], out: Path,
                        stats: dict, units: str) -> None:
    start = time.perf_counter()
    calls, results = 0, []
    for i in range(0, len(texts), 50):  # groups of 50 keep memory flat
        results += explainer.explain(texts[i:i + 50], tokenizer=tokenizer, units=units)
        calls += explainer.last_stats.forward_passes
    seconds = time.perf_counter() - start
    settings = (explainer.search, units, explainer.policy_samples, explainer.policy_prefixes,
                explainer.policy_chunks, explainer.policy_budget, explainer.policy_smaller)
    method = method_name(*settings)
    flip_rows(results, seconds, method, ids).to_csv(out / method_file(*settings), index=False)
    stats[method] = dict(forward_calls=calls)
    print(f"{method}: {seconds:.0f} s, {calls} forward calls", flush=True)


def searcher(fitted: MinimalErasure, search: str, samples: int, prefixes: int = 0,
             chunks: int = 0, budget: int = 0, smaller: int = 0) -> MinimalErasure:
    """A MinimalErasure with ``search`` that shares ``fitted``'s policy."""
    explainer = MinimalErasure(fitted.forward_func, fitted.representation, seed=fitted.seed,
                               search=search, policy_samples=samples,
                               policy_prefixes=prefixes, policy_chunks=chunks,
                               policy_budget=budget, policy_smaller=smaller)
    explainer.policy, explainer.baseline = fitted.policy, fitted.baseline
    return explainer


def fit_policy(explainer: MinimalErasure, tokenizer, train: list[str], args, out: Path,
               representation) -> pd.DataFrame:
    """``fit`` over ``train`` (``--epochs``, ``--fit-batch``); with ``--fit-curve-every S`` in
    chunks of S steps, the policy search on ``--curve-n`` dev snippets after each chunk."""
    batches = [train[i:i + args.fit_batch] for i in range(0, len(train), args.fit_batch)]
    every = args.fit_curve_every or len(batches) * args.epochs
    dev = shuffled("dev", args.curve_n)
    histories, curve = [], []
    schedule = [b for _ in range(args.epochs) for b in batches]

    def evaluate(steps: int) -> None:  # the policy search on the dev snippets
        searching = searcher(explainer, "policy", args.policy_samples[0])
        if explainer.policy is None:  # step 0: the initial weights the first fit will draw
            searching.seed = explainer.seed + 1
        begun = time.perf_counter()
        results = searching.explain(dev, tokenizer=tokenizer, units=args.units[0])
        seconds = time.perf_counter() - begun
        flipped = [r for r in results if r.flipped]
        curve.append({
            "steps": steps, "flip_rate": len(flipped) / len(results),
            "mean_size": float(np.mean([len(r.erased) for r in flipped])) if flipped else
            np.nan, "predictions": float(np.mean([r.forward_passes for r in results])),
            "seconds_per_text": seconds / len(results),
            "erase_probability": float(histories[-1].erase_probability.mean())
            if histories else np.nan,
            "sample_flip_rate": float(histories[-1].flip_rate.mean()) if histories else np.nan})
        print(curve[-1], flush=True)
        pd.DataFrame(curve).to_csv(out / "fit_curve.csv", index=False)

    if args.fit_curve_every:
        evaluate(0)  # the unfitted policy (seeded initial weights)
    for start in range(0, len(schedule), every):
        explainer.seed += 1  # fresh sampling in each chunk (fit seeds its generator)
        histories.append(explainer.fit(schedule[start:start + every], tokenizer=tokenizer))
        if args.fit_curve_every:
            evaluate(start + len(schedule[start:start + every]))
    explainer.seed = 0
    return pd.concat(histories, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/flips")
    parser.add_argument("--n", type=int, default=200, help="held-out snippets")
    parser.add_argument("--train", type=int, default=1600, help="train snippets for fit")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--refit", action="store_true")
    parser.add_argument("--skip-lit", action="store_true")
    parser.add_argument("--skip-reduction", action="store_true")
    parser.add_argument("--lit-minutes", type=float, default=None,
                        help="stop AblationFlip after this many minutes (partial results)")
    parser.add_argument("--seed", type=int, default=0,
                        help="MinimalErasure's seed: the policy's initial weights and draws")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared CPU 2 threads were 18x slower)")
    parser.add_argument("--lit-only", action="store_true", help="only AblationFlip")
    parser.add_argument("--reduction-n", type=int, default=200,
                        help="snippets for InputReduction (the first ones of --n)")
    parser.add_argument("--fit-batch", type=int, default=8)
    parser.add_argument("--reuse-greedy", action="store_true",
                        help="keep greedy_<units>.csv from a previous run")
    parser.add_argument("--units", nargs="+", choices=UNIT_NAMES, default=list(UNIT_NAMES),
                        help="erasable units of our methods")
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--model", choices=("minilm", "bilstm"), default="minilm")
    parser.add_argument("--texts", choices=("snippets", "long"), default="snippets")
    parser.add_argument("--min-words", type=int, default=30, help="--texts long: at least")
    parser.add_argument("--searches", nargs="+", choices=tuple(SEARCH_FILES),
                        default=["guided"], help="MinimalErasure searches to run")
    parser.add_argument("--policy-samples", type=int, nargs="+", default=[8],
                        help="K of the policy search (several: one run each; the curve "
                             "uses the first)")
    parser.add_argument("--policy-settings", nargs="+", default=None,
                        help="K:P:C[:B[:S]] settings of the policy search (policy_samples, "
                             "policy_prefixes, policy_chunks, policy_budget, policy_smaller; "
                             "replaces --policy-samples)")
    parser.add_argument("--skip-greedy", action="store_true")
    parser.add_argument("--policy", default=None, help="policy.pt to load (default: --out's)")
    parser.add_argument("--fit-curve-every", type=int, default=0,
                        help="fit in chunks of this many steps, policy search on dev after each")
    parser.add_argument("--curve-n", type=int, default=100)
    parser.add_argument("--prior-weight", type=float, default=0.05,
                        help="weight of the policy's KL pull to Bernoulli(--prior) in fit")
    parser.add_argument("--prior", type=float, default=0.1)
    parser.add_argument("--imitation-weight", type=float, default=0.0,
                        help="weight of fit's self-imitation term (pruned best samples; 0: off)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--fit-only", action="store_true", help="stop after the fit")
    parser.add_argument("--collect", default=None,
                        help="a folder of runs: write docs/policy_search.md's CSVs to --out")
    parser.add_argument("--unfitted", action="store_true",
                        help="no fit: the policy's seeded initial weights (a control)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summarize_only:
        summarize(out)
        return
    if args.collect:
        collect(Path(args.collect), out)
        return
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model, tokenizer, representation = load_classifier(args.model)
    model.eval()
    frame = held_out(args.texts, args.n, args.min_words)
    texts, ids = frame.text.tolist(), frame.id.tolist()
    stats: dict = {}
    if args.lit_only:
        deadline = None if args.lit_minutes is None else time.time() + 60 * args.lit_minutes
        run_ablation_flip(model, tokenizer, frame, out / "ablation_flip.jsonl", deadline)
        summarize(out)
        return

    explainer = MinimalErasure(model, representation, seed=args.seed, prior=args.prior,
                               prior_weight=args.prior_weight,
                               imitation_weight=args.imitation_weight,
                               learning_rate=args.learning_rate)
    policy = Path(args.policy) if args.policy else out / "policy.pt"
    if args.unfitted:
        pass
    elif policy.exists() and not args.refit:
        explainer.load_policy(str(policy))
    else:
        train = shuffled("train", args.train)
        start = time.perf_counter()
        history = fit_policy(explainer, tokenizer, train, args, out, representation)
        seconds = time.perf_counter() - start
        explainer.save_policy(str(policy))
        history.to_csv(out / "fit_history.csv", index=False)
        (out / "fit.json").write_text(json.dumps(dict(
            train_snippets=len(train), epochs=args.epochs, seconds=round(seconds, 1),
            rows=int(history.rows.sum()), steps=len(history),
            final_flip_rate=float(history.flip_rate.tail(10).mean()),
            final_erase_probability=float(history.erase_probability.tail(10).mean()),
            prior=args.prior, prior_weight=args.prior_weight,
            imitation_weight=args.imitation_weight,
            imitation_rows=int(history.imitation_rows.sum()),
            learning_rate=args.learning_rate, batch=args.fit_batch)))
        print(f"fit: {seconds:.0f} s, {int(history.rows.sum())} rows", flush=True)
    if args.fit_only:
        summarize(out)
        return

    if (out / "call_stats.json").exists():
        stats = json.loads((out / "call_stats.json").read_text())
    for units in args.units:
        if not args.skip_greedy and not (args.reuse_greedy and
                                         (out / f"greedy_{units}.csv").exists()):
            run_greedy(model, tokenizer, texts, ids, out, stats, units)
        settings = [tuple(int(v) for v in (s + ":0:0").split(":")[:5])
                    for s in args.policy_settings] if args.policy_settings else \
            [(k, 0, 0, 0, 0) for k in args.policy_samples]
        for search in args.searches:
            for setting in settings if search == "policy" else [(1, 0, 0, 0, 0)]:
                run_minimal_erasure(searcher(explainer, search, *setting), tokenizer, texts,
                                    ids, out, stats, units)
                (out / "call_stats.json").write_text(json.dumps(stats))

    if not args.skip_reduction and args.model == "minilm":
        rows = []
        for setting, beam in (("greedy (gradient)", 1), ("beam 3 (gradient)", 3)):
            reducer = InputReduction(model, beam_size=beam)
            start = time.perf_counter()
            reduced = []
            for i in range(0, args.reduction_n, 50):
                reduced += reducer.reduce(texts[i:min(i + 50, args.reduction_n)],
                                          tokenizer=tokenizer)
            seconds = time.perf_counter() - start
            for snippet_id, r in zip(ids, reduced):
                rows.append(dict(id=snippet_id, setting=setting, n_words=len(r.words),
                                 kept=len(r.kept), kept_fraction=r.kept_fraction,
                                 confidence=r.confidence,
                                 original_confidence=r.original_confidence,
                                 verified=r.verified, reduced_text=r.reduced_text,
                                 rows=r.forward_passes,
                                 seconds_per_snippet=seconds / len(reduced)))
            print(f"InputReduction {setting}: {seconds:.0f} s", flush=True)
        pd.DataFrame(rows).to_csv(out / "input_reduction.csv", index=False)

    summarize(out)
    if not args.skip_lit and args.model == "minilm":
        deadline = None if args.lit_minutes is None else time.time() + 60 * args.lit_minutes
        run_ablation_flip(model, tokenizer, frame, out / "ablation_flip.jsonl", deadline)
        summarize(out)


if __name__ == "__main__":
    main()
