"""Guan et al.'s (ICML 2019) analyses with ``WordInformation`` on the default classifier.

1. information kept per word across layers for one sentence: a heatmap (layers x words),
   rows = layer 0 (embedding output), layers 1..6 of MiniLM, and the pooled output;
2. over ``--n`` held-out Rotten Tomatoes test snippets (5-25 words, the first in file order):
   per layer, the mean information kept per word, the share of words discarded (kept < 0:
   a noise wider than the spread of word vectors leaves the layer unmoved) and the remaining
   relative distortion; a table and a line plot;
3. the comparison of explanation methods the poster proposes: per snippet, Spearman's rho
   between the information kept at the pooled output (and at the last layer) and the word
   scores of WordErasure (Eq. 1, words deleted), Captum IG (LayerIntegratedGradients on the
   input embeddings, [PAD] baseline, summed over dimensions and pieces) and Captum LIME (word
   features, [PAD] baseline); the class is the model's prediction. The information measure has
   no sign, so the methods' scores are compared by magnitude ("abs") and as they are.

Outputs in ``--out`` (default ``outputs/information/``): ``heatmap.png``, ``layers.png``,
``layers.md``, ``methods.md``, ``results.json``.

Run:  PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python examples/information_layers.py
      (about 6 minutes on one CPU thread; --quick: 6 snippets, 30 steps)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from captum_erasure import WordErasure, WordInformation, load_default_model
from captum_erasure._core.text import encode_texts
from captum_erasure.data import load_rotten_tomatoes

SENTENCE = "a gorgeous , witty , seductive movie that is never dull ."


def layers_of(model) -> list:
    return list(range(model.config.num_hidden_layers + 1)) + ["pooled"]


def label(layer) -> str:
    return "emb" if layer == 0 else str(layer) if layer != "pooled" else "pooled"


def information(model, enc, layer, args) -> tuple:
    method = WordInformation(model, layer=layer, n_steps=args.steps, lr=args.lr, lam=args.lam,
                             seed=args.seed)
    start = time.perf_counter()
    result = method.attribute_details(enc.input_ids, additional_forward_args=(enc.attention_mask,),
                                      feature_mask=enc.feature_mask)
    return result, time.perf_counter() - start


def plot_heatmap(grid: np.ndarray, words: list, layers: list, path: Path, title: str) -> None:
    """Layers x words; the colour scale stops at -1 (darker = discarded, the bar says so)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(words), 4.2))
    image = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=max(-1.0, float(grid.min())))
    ax.set_xticks(range(len(words)), words, rotation=45, ha="right")
    ax.set_yticks(range(len(layers)), [f"layer {name}" for name in layers])
    bar = fig.colorbar(image, ax=ax, extend="min" if grid.min() < -1 else "neither")
    bar.set_label("information kept (nats / embedding dim)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heatmap(model, tokenizer, args, out: Path) -> dict:
    enc = encode_texts(model, tokenizer, [args.sentence])
    rows, seconds = [], {}
    for layer in layers_of(model):
        result, seconds[label(layer)] = information(model, enc, layer, args)
        rows.append(result.kept[0].numpy())
    grid = np.stack(rows)
    layers = [label(x) for x in layers_of(model)]
    plot_heatmap(grid, enc.words[0], layers, out / "heatmap.png",
                 f"WordInformation, default model ({args.steps} steps, lambda={args.lam})")
    return {"words": enc.words[0], "layers": layers, "kept": grid.round(4).tolist(),
            "seconds": seconds}


def snippets(n: int) -> list[str]:
    frame = load_rotten_tomatoes("test")
    texts = [t for t in frame["text"] if 5 <= len(t.split()) <= 25]
    return texts[:n]


def per_layer(model, enc, args, out: Path) -> tuple[dict, dict]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    table, kept_by_layer = {}, {}
    for layer in layers_of(model):
        result, seconds = information(model, enc, layer, args)
        kept = result.kept[~torch.isnan(result.kept)]
        kept_by_layer[label(layer)] = result.kept
        table[label(layer)] = {
            "mean_kept": float(kept.mean()), "median_kept": float(kept.median()),
            "share_discarded": float((kept < 0).double().mean()),
            "mean_distortion": float(result.distortion.mean()),
            "seconds": seconds, "rows": result.stats.rows,
            "forward_backward_passes": result.stats.forward_passes}
    lines = [("| layer | mean kept (nats/dim) | median kept | words discarded (kept < 0) | "
              "relative distortion | seconds | rows (forward+backward) |"),
             "|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        lines.append(f"| {name} | {row['mean_kept']:.2f} | {row['median_kept']:.2f} | "
                     f"{100 * row['share_discarded']:.1f}% | {row['mean_distortion']:.3f} | "
                     f"{row['seconds']:.0f} | {row['rows']} |")
    (out / "layers.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    names = list(table)
    ax.plot(names, [table[k]["mean_kept"] for k in names], marker="o", label="mean kept")
    ax.set_xlabel("layer")
    ax.set_ylabel("information kept per word (nats / dim)")
    twin = ax.twinx()
    twin.plot(names, [100 * table[k]["share_discarded"] for k in names], marker="s",
              color="tab:red", label="words discarded")
    twin.set_ylabel("words discarded (%)", color="tab:red")
    ax.set_title(f"{len(enc)} held-out snippets")
    fig.tight_layout()
    fig.savefig(out / "layers.png", dpi=120)
    plt.close(fig)
    return table, kept_by_layer


def method_scores(model, tokenizer, enc, targets, args) -> dict[str, list[np.ndarray]]:
    import captum.attr as ca
    pad = tokenizer.pad_token_id
    n_words = [len(w) for w in enc.words]
    out: dict[str, list[np.ndarray]] = {"WordErasure": [], "IG": [], "LIME": []}
    erasure = WordErasure(model, pad_token_id=pad).attribute_words(
        enc.input_ids, target=targets, additional_forward_args=(enc.attention_mask,),
        feature_mask=enc.feature_mask, score="eq1", mode="delete")
    for row in range(len(enc)):
        out["WordErasure"].append(erasure.scores[row, :n_words[row]].numpy())
    torch.manual_seed(args.seed)
    for row in range(len(enc)):
        length = int(enc.attention_mask[row].sum())
        ids = enc.input_ids[row:row + 1, :length]
        mask = enc.feature_mask[row:row + 1, :length]

        def forward(x):
            logits = model(x, torch.ones_like(x)).logits
            return torch.softmax(logits.float(), -1)

        baseline = torch.where(mask >= 0, torch.full_like(ids, pad), ids)
        ig = ca.LayerIntegratedGradients(forward, model.get_input_embeddings()).attribute(
            ids, baselines=baseline, target=int(targets[row]), n_steps=args.ig_steps,
            internal_batch_size=args.ig_steps)
        pieces = ig[0].sum(-1).detach()
        out["IG"].append(np.array([float(pieces[mask[0] == w].sum())
                                   for w in range(n_words[row])]))
        # LIME on the words only: [CLS]/[SEP] are features of their own, always kept (not
        # interpretable ones would be better, but Captum's Lime has no "never perturb" id)
        body = slice(1, length - 1)

        def body_forward(x, ids=ids):
            rows = x.shape[0]
            full = torch.cat([ids[:, :1].expand(rows, -1), x, ids[:, -1:].expand(rows, -1)], 1)
            return forward(full)

        with torch.inference_mode():
            lime = ca.Lime(body_forward).attribute(
                ids[:, body], baselines=pad, target=int(targets[row]),
                feature_mask=mask[:, body], n_samples=args.lime_samples,
                perturbations_per_eval=50)
        out["LIME"].append(np.array([float(lime[0][mask[0, body] == w][0])
                                     for w in range(n_words[row])]))
    return out


def compare(model, tokenizer, enc, kept_by_layer, args) -> tuple[dict, dict]:
    with torch.no_grad():
        targets = model(enc.input_ids, enc.attention_mask).logits.argmax(-1)
    start = time.perf_counter()
    scores = method_scores(model, tokenizer, enc, targets, args)
    seconds = time.perf_counter() - start
    references = {"pooled": kept_by_layer["pooled"], "last layer": kept_by_layer[
        str(model.config.num_hidden_layers)]}
    table: dict = {}
    for ref_name, kept in references.items():
        for method, per_text in scores.items():
            for kind, fn in (("abs", np.abs), ("signed", lambda v: v)):
                rhos = []
                for row, values in enumerate(per_text):
                    info = kept[row, :len(values)].numpy()
                    if len(values) >= 3:
                        rho = spearmanr(info, fn(values)).statistic
                        if np.isfinite(rho):
                            rhos.append(float(rho))
                table[(ref_name, method, kind)] = (float(np.mean(rhos)), float(np.std(rhos)),
                                                   len(rhos))
    lines = [(f"Spearman rho per snippet (mean +- sd over {len(enc)} snippets) between the "
              "information kept and each method's word scores"), "",
             "| information at | method | scores | mean rho | sd | snippets |",
             "|---|---|---|---|---|---|"]
    for (ref_name, method, kind), (mean, sd, count) in table.items():
        lines.append(f"| {ref_name} | {method} | {kind} | {mean:.3f} | {sd:.3f} | {count} |")
    return {" / ".join(k): v for k, v in table.items()}, {"lines": lines, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=40, help="held-out snippets")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ig-steps", type=int, default=20)
    parser.add_argument("--lime-samples", type=int, default=200)
    parser.add_argument("--sentence", default=SENTENCE)
    parser.add_argument("--out", type=Path, default=Path("outputs/information"))
    parser.add_argument("--quick", action="store_true", help="6 snippets, 30 steps")
    args = parser.parse_args()
    if args.quick:
        args.n, args.steps = 6, 30
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_default_model()
    model.eval()
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}}
    results["heatmap"] = heatmap(model, tokenizer, args, args.out)
    print("heatmap:", args.out / "heatmap.png")
    enc = encode_texts(model, tokenizer, snippets(args.n))
    results["layers"], kept_by_layer = per_layer(model, enc, args, args.out)
    print((args.out / "layers.md").read_text())
    results["methods"], report = compare(model, tokenizer, enc, kept_by_layer, args)
    results["methods_seconds"] = report["seconds"]
    (args.out / "methods.md").write_text("\n".join(report["lines"]) + "\n")
    print("\n".join(report["lines"]))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
