"""Input marginalisation vs erasure on the default model: Kim et al.'s Table 2 and cost table.

On held-out Rotten Tomatoes test snippets (never seen by the classifier or the default MLM),
token level as in Kim et al. (every WordPiece token is a feature; [CLS]/[SEP] never are), the
class being the model's prediction:

1. AUC_rep (lower is better) of erasure by the zero vector, by [UNK] and by [PAD]
   (``WordErasure`` modes ``zero`` and ``replace``), of a random order, and of input
   marginalisation at sigma = 1e-5 (Table 2 analogue);
2. for each truncation setting (sigma in {1e-5, 1e-4, 1e-3}, top_k in {10, 50, 100}, top_p in
   {0.9, 0.99}): Pearson r of the token weights of evidence with the sigma = 1e-5 result (all
   tokens of all snippets pooled), classifier forward passes and rows, mean candidates per
   position, the MLM mass kept, seconds, and its AUC_rep.

Both tables are printed as Markdown and written to ``--out`` (``tables.md``, ``results.json``).

Run:  .venv/bin/python examples/compare_marginalization.py --n 12
      .venv/bin/python examples/compare_marginalization.py --quick   # 3 short snippets
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from captum_erasure import WordErasure
from captum_erasure.data import load_rotten_tomatoes
from captum_erasure.default_mlm import default_mlm_info, load_default_mlm
from captum_erasure.default_model import load_default_model
from captum_erasure.marginalization import InputMarginalization
from captum_erasure.masked_lm import token_feature_mask
from captum_erasure.metrics import mlm_replacement_curves

SETTINGS = [("sigma = 1e-5", dict(threshold=1e-5)), ("sigma = 1e-4", dict(threshold=1e-4)),
            ("sigma = 1e-3", dict(threshold=1e-3)), ("top_k = 10", dict(top_k=10)),
            ("top_k = 50", dict(top_k=50)), ("top_k = 100", dict(top_k=100)),
            ("top_p = 0.9", dict(top_p=0.9)), ("top_p = 0.99", dict(top_p=0.99))]
REFERENCE = "sigma = 1e-5"


def pick_snippets(n: int, tokenizer, min_tokens: int, max_tokens: int, seed: int) -> list[str]:
    """``n`` random held-out test snippets with ``min_tokens..max_tokens`` word pieces."""
    frame = load_rotten_tomatoes("test")
    lengths = [len(ids) - 2 for ids in tokenizer(frame["text"].tolist())["input_ids"]]
    fits = frame[[min_tokens <= k <= max_tokens for k in lengths]]
    return fits.sample(n=min(n, len(fits)), random_state=seed)["text"].tolist()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads")


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="held-out snippets")
    parser.add_argument("--quick", action="store_true", help="3 short snippets, for a check")
    parser.add_argument("--min-tokens", type=int, default=6, help="shortest snippet (pieces)")
    parser.add_argument("--max-tokens", type=int, default=16, help="longest snippet (pieces)")
    parser.add_argument("--samples", type=int, default=3, help="MLM samplings per AUC_rep")
    parser.add_argument("--batch-size", type=int, default=64, help="classifier rows/forward")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/marginalization"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n, args.max_tokens = 3, 8
    started = time.perf_counter()
    model, tokenizer = load_default_model()
    mlm, _ = load_default_mlm()
    texts = pick_snippets(args.n, tokenizer, args.min_tokens, args.max_tokens, args.seed)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ids, attn = enc["input_ids"], enc["attention_mask"]
    specials = torch.tensor(tokenizer.all_special_ids)
    tokens = token_feature_mask(ids, attn, specials)
    n_tokens = int((tokens >= 0).sum())
    print(f"{len(texts)} snippets, {n_tokens} tokens; {machine()}", flush=True)

    def auc(attributions: torch.Tensor) -> tuple[float, float]:
        curves = mlm_replacement_curves(
            model, mlm, ids, attributions, additional_forward_args=(attn,), tokenizer=tokenizer,
            feature_mask=tokens, n_samples=args.samples, seed=args.seed,
            batch_size=args.batch_size)
        return float(curves.auc.mean()), float(curves.auc.std() / len(texts) ** 0.5)

    # -- cost and quality of the truncation settings --------------------------------------
    method = InputMarginalization(model, mlm, tokenizer=tokenizer, batch_size=args.batch_size)
    results = {}
    for name, criteria in SETTINGS:
        start = time.perf_counter()
        result = method.attribute_details(ids, additional_forward_args=(attn,), **criteria)
        seconds = time.perf_counter() - start
        positions = torch.isfinite(result.woe)
        results[name] = dict(
            woe=result.woe[positions], attributions=result.attributions,
            forward_passes=result.stats.classifier.forward_passes,
            rows=result.stats.classifier_rows, mlm_forward_passes=result.stats.mlm.forward_passes,
            candidates=float(result.n_candidates[positions].double().mean()),
            kept_mass=float(result.kept_mass[positions].mean()), seconds=seconds)
        print(f"{name}: {results[name]['forward_passes']} forward passes, "
              f"{results[name]['candidates']:.0f} candidates/position, {seconds:.0f} s",
              flush=True)
    reference = results[REFERENCE]
    for name, row in results.items():
        row["pearson_r"] = pearson(row["woe"], reference["woe"])
        row["auc_rep"] = auc(row["attributions"])

    # -- Table 2 analogue ------------------------------------------------------------------
    erasure = WordErasure(model, batch_size=args.batch_size)
    common = dict(target=None, additional_forward_args=(attn,), feature_mask=tokens,
                  score="log_prob_diff")
    orders = {
        "erasure, zero vector": erasure.attribute(ids, mode="zero", **common),
        "erasure, [UNK]": erasure.attribute(ids, mode="replace",
                                            baselines=tokenizer.unk_token_id, **common),
        "erasure, [PAD]": erasure.attribute(ids, mode="replace",
                                            baselines=tokenizer.pad_token_id, **common),
        "random order": torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)),
    }
    table2 = {name: auc(attributions) for name, attributions in orders.items()}
    table2["input marginalisation (sigma = 1e-5)"] = reference["auc_rep"]

    info = default_mlm_info()
    caption = (f"{len(texts)} held-out Rotten Tomatoes test snippets ({args.min_tokens}-"
               f"{args.max_tokens} word pieces, {n_tokens} tokens, seed {args.seed}); default "
               f"MiniLM classifier; default MLM (held-out top-1 {info['heldout_top1']:.1%}, "
               f"top-5 {info['heldout_top5']:.1%}); {machine()}; "
               f"{time.perf_counter() - started:.0f} s in all.")
    table2_md = markdown(
        ["attribution", f"AUC_rep (mean ± s.e., {args.samples} MLM samplings)"],
        [[name, f"{m:.4f} ± {se:.4f}"] for name, (m, se) in table2.items()])
    ref_passes = reference["forward_passes"]
    cost_md = markdown(
        ["truncation", "Pearson r vs sigma = 1e-5", "classifier forward passes",
         "% of sigma = 1e-5", "classifier rows", "mean candidates", "MLM mass kept",
         "seconds", "AUC_rep"],
        [[name, f"{row['pearson_r']:.4f}", row["forward_passes"],
          f"{100 * row['forward_passes'] / ref_passes:.1f}%", row["rows"],
          f"{row['candidates']:.1f}", f"{row['kept_mass']:.3f}", f"{row['seconds']:.0f}",
          f"{row['auc_rep'][0]:.4f}"] for name, row in results.items()])
    text = (f"## AUC_rep (Kim et al. Table 2 analogue; lower is better)\n\n{table2_md}\n\n"
            f"## Truncation: cost and agreement with sigma = 1e-5\n\n{cost_md}\n\n{caption}\n")
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables.md").write_text(text)
    saved = {name: {k: v for k, v in row.items() if k not in ("woe", "attributions")}
             for name, row in results.items()}
    (args.out / "results.json").write_text(json.dumps(
        {"table2": table2, "settings": saved, "texts": texts, "caption": caption}, indent=2))


if __name__ == "__main__":
    main()
