"""Benchmark: WordErasure vs Captum FeatureAblation vs the bare batched forward, in one run.

All three evaluate exactly the same perturbed inputs (every word of every snippet replaced by
[PAD], plus the unperturbed snippet), on the default model and held-out snippets:

- bare forward: the perturbed rows built in advance, sorted by length and fed to the model in
  chunks of ``--batch-size`` rows, nothing else (the lower bound for any method);
- Captum FeatureAblation, one snippet at a time (its batching unit), at
  ``perturbations_per_eval`` in ``--ppe``;
- WordErasure on all snippets at once (the engine packs rows of different snippets).

Run:  .venv/bin/python examples/benchmark_word_erasure.py --n 200
"""

from __future__ import annotations

import argparse
import time

import torch
from captum.attr import FeatureAblation

from captum_erasure import WordErasure, word_feature_mask
from captum_erasure.data import load_rotten_tomatoes
from captum_erasure.models.default import load_default_model


def bare_forward_seconds(model, rows, batch_size: int) -> float:
    """Time only the forwards of pre-built, padded chunks of ``rows`` (id tensors), sorted by
    length so that padding is minimal: the best any packing of these rows can do."""
    rows = sorted(rows, key=len)
    chunks = []
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        width = max(len(r) for r in part)
        ids = torch.zeros(len(part), width, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, r in enumerate(part):
            ids[i, :len(r)], attn[i, :len(r)] = r, 1
        chunks.append((ids, attn))
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, attn in chunks:
            model(input_ids=ids, attention_mask=attn)
    return time.perf_counter() - start


def feature_ablation_run(probs, encodings, masks, targets, pad: int, ppe: int):
    """Captum FeatureAblation one snippet at a time: (seconds, forward calls, rows, attrs)."""
    fa = FeatureAblation(probs)
    calls = rows = 0
    attrs = []
    start = time.perf_counter()
    for enc, mask, target in zip(encodings, masks, targets):
        # Captum cannot leave tokens out: specials form one feature whose baseline is
        # themselves (a no-op row), so it evaluates our rows plus one per snippet.
        fa_mask = torch.where(mask >= 0, mask, int(mask.max()) + 1)
        fa_base = torch.where(mask >= 0, torch.tensor(pad), enc["input_ids"])
        with torch.inference_mode():
            attrs.append(fa.attribute(
                enc["input_ids"], baselines=fa_base, target=target,
                additional_forward_args=(enc["attention_mask"],), feature_mask=fa_mask,
                perturbations_per_eval=ppe)[0])
        n_features = int(fa_mask.max()) + 1
        calls += 1 + -(-n_features // ppe)
        rows += 1 + n_features
    return time.perf_counter() - start, calls, rows, attrs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="held-out snippets")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward (ours)")
    parser.add_argument("--ppe", type=int, nargs="+", default=[1, 32, 64],
                        help="FeatureAblation perturbations_per_eval values to time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=2,
                        help="timed runs per method; the fastest is reported")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_default_model()
    pad = tokenizer.pad_token_id
    texts = load_rotten_tomatoes("test")["text"].tolist()[:args.n]
    encodings = [tokenizer([t], return_tensors="pt", truncation=True) for t in texts]
    masks = [word_feature_mask(e) for e in encodings]

    # The exact perturbed inputs: each snippet, then each word replaced by [PAD].
    rows = []
    for enc, mask in zip(encodings, masks):
        ids = enc["input_ids"][0]
        rows.append(ids)
        for word in sorted(set(mask[0][mask[0] >= 0].tolist())):
            rows.append(torch.where(mask[0] == word, torch.tensor(pad), ids))
    n_rows = len(rows)

    def probs(ids, attn):
        return torch.softmax(model(input_ids=ids, attention_mask=attn).logits, -1)

    results = []
    bare = min(bare_forward_seconds(model, rows, args.batch_size) for _ in range(args.repeat))
    results.append(("bare batched forward", bare, -(-n_rows // args.batch_size), n_rows))

    batch = tokenizer(texts, padding=True, return_tensors="pt", truncation=True)
    ours = WordErasure(model, batch_size=args.batch_size)
    ours_s = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        ours_attr = ours.attribute(batch["input_ids"], baselines=pad,
                                   additional_forward_args=(batch["attention_mask"],),
                                   feature_mask=word_feature_mask(batch), score="prob_diff")
        ours_s = min(ours_s, time.perf_counter() - start)
    results.append((f"WordErasure (batch {args.batch_size})", ours_s,
                    ours.last_stats.forward_passes, ours.last_stats.rows))

    # FeatureAblation needs explicit targets (the predicted class, as ours uses): untimed.
    with torch.inference_mode():
        targets = [int(probs(e["input_ids"], e["attention_mask"]).argmax()) for e in encodings]
    captum_attr = None
    for ppe in args.ppe:
        runs = [feature_ablation_run(probs, encodings, masks, targets, pad, ppe)
                for _ in range(args.repeat)]
        seconds, calls, fa_rows, captum_attr = min(runs, key=lambda run: run[0])
        results.append((f"Captum FeatureAblation (ppe={ppe})", seconds, calls, fa_rows))

    # Same numbers? (FeatureAblation also ablates [CLS]/[SEP]; compare the words only.)
    worst = 0.0
    for i, (attr, mask) in enumerate(zip(captum_attr, masks)):
        n = mask.shape[1]
        words = mask[0] >= 0
        worst = max(worst, float((attr[words] - ours_attr[i, :n][words]).abs().max()))

    best_fa = min(s for name, s, _, _ in results if name.startswith("Captum"))
    print(f"\n{args.n} held-out snippets, {n_rows} perturbed rows, "
          f"{torch.get_num_threads()} CPU threads\n")
    print("| method | seconds | forward calls | rows | vs bare forward | vs best FeatureAblation |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, calls, n in results:
        print(f"| {name} | {seconds:.1f} | {calls} | {n if n is not None else n_rows} | "
              f"{seconds / bare:.2f}x | {seconds / best_fa:.2f}x |")
    print(f"\nmax |WordErasure - FeatureAblation| on words: {worst:.2e}")


if __name__ == "__main__":
    main()
