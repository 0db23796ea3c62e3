"""DiffMask across layers of the default classifier (De Cao et al. 2020, Figures 4-5 style).

For every layer l = 0..L of the default model (MiniLM-L6 fine-tuned on Rotten Tomatoes), one
input-mode DiffMask is fitted on the training snippets (or loaded from ``OUT/probes/``), then:

- ``heatmap_input_layers.png``: each word's keep probability in one test sentence, layers x
  words ("what the network knows at layer l about which words it needs");
- ``kept_per_layer.png`` and ``layers.csv``/``layers.md``: over held-out dev snippets, the
  share of words kept (keep probability >= 0.5), the mean keep probability, and how well the
  mask keeps the prediction (KL and agreement of the masked forward, positions with keep < 0.5
  replaced by the learned baseline).

    PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python examples/diffmask_layers.py \
        --steps 150 --batch-size 16 --heldout 200

In input mode layer l's probe starts from layer l-1's (``DiffMask.fit(init_from=...)``, the
layer-by-layer form of the authors' shared gates); ``--independent`` fits each from scratch.
Probes are cached per layer and mode in ``OUT/probes/`` (delete them to refit).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from captum_erasure import DiffMask, load_default_model
from captum_erasure._core.text import encode_texts
from captum_erasure.data import load_rotten_tomatoes

SENTENCE = "a gorgeous , witty , seductive movie ."


def fitted(model, tokenizer, layer: int, mode: str, args, train: list[str],
           below: DiffMask | None) -> tuple:
    """Layer ``layer``'s DiffMask, fitted from ``below`` (the layer under it) unless
    ``--independent`` (or hidden mode, or layer 0)."""
    dm = DiffMask(model, layer=layer, mode=mode, mask_token_id=tokenizer.mask_token_id,
                  margin=args.margin)
    chained = below is not None and mode == "input" and not args.independent
    name = f"layer{layer}_{mode}" + ("_from_below" if chained and layer > 0 else "")
    path = Path(args.out) / "probes" / f"{name}.pt"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if (info["fit_steps"], info.get("lr", args.lr)) != (args.steps, args.lr):
            raise SystemExit(f"{path} was fitted with {info['fit_steps']} steps at lr "
                             f"{info.get('lr')}, not {args.steps} at {args.lr}: use another "
                             f"--out or delete it")
        return dm.load(path), info
    dm.fit(texts=train, tokenizer=tokenizer, batch_size=args.batch_size, max_steps=args.steps,
           seed=args.seed, lr=args.lr, init_from=below if chained else None,
           show_progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    dm.save(path)
    last = dm.fit_stats.history[-20:]
    info = {"fit_steps": dm.fit_stats.steps, "fit_seconds": round(dm.fit_stats.seconds, 1),
            "fit_rows": dm.fit_stats.rows,
            "fit_kl_last20": sum(h["kl"] for h in last) / len(last),
            "fit_kept_last20": sum(h["l0"] for h in last) / len(last),
            "multiplier": float(dm.multiplier), "lr": args.lr,
            "init_from": below.layer if chained else None}
    info_path.write_text(json.dumps(info, indent=1))
    return dm, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="fit steps per layer")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--heldout", type=int, default=200, help="dev snippets evaluated")
    parser.add_argument("--mode", default="input", choices=["input", "hidden"])
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3, help="the probe's learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sentence", default=SENTENCE)
    parser.add_argument("--out", default="outputs/diffmask")
    parser.add_argument("--independent", action="store_true",
                        help="fit every layer from scratch (default: input mode fits layer l "
                             "from layer l-1's probe, DiffMask.fit(init_from=...))")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model, tokenizer = load_default_model(show_progress=False)
    train = load_rotten_tomatoes("train").text.tolist()
    dev = load_rotten_tomatoes("dev").text.tolist()[:args.heldout]
    heldout = encode_texts(model, tokenizer, dev, truncate=True)
    one = encode_texts(model, tokenizer, [args.sentence])
    n_layers = model.config.num_hidden_layers

    rows, heat, below = [], [], None
    for layer in range(n_layers + 1):
        dm, info = fitted(model, tokenizer, layer, args.mode, args, train, below)
        below = dm
        start = time.perf_counter()
        r = dm.attribute_details(heldout.input_ids,
                                 additional_forward_args=(heldout.attention_mask,),
                                 feature_mask=heldout.feature_mask)
        seconds = time.perf_counter() - start
        words = heldout.feature_mask >= 0
        first = torch.zeros_like(words)  # one position per word: its first token
        for b in range(len(dev)):
            ids = heldout.feature_mask[b]
            for w in ids[ids >= 0].unique().tolist():
                first[b, int((ids == w).nonzero()[0])] = True
        kept = (r.attributions >= 0.5) & first
        agree = (r.original_outputs.argmax(-1) == r.masked_outputs.argmax(-1)).double()
        rows.append({"layer": layer, **info,
                     "words_kept": float(kept.sum() / first.sum()),
                     "mean_keep_prob": float(r.attributions[first].mean()),
                     "tokens_kept": float(((r.keep >= 0.5) & r.keep_mask_valid).sum()
                                          / r.keep_mask_valid.sum()),
                     "masked_kl": float(r.kl.mean()), "masked_agreement": float(agree.mean()),
                     "rows_per_example": dm.last_stats.rows / len(dev),
                     "explain_ms_per_example": 1000 * seconds / len(dev)})
        attr = dm.attribute(one.input_ids, additional_forward_args=(one.attention_mask,),
                            feature_mask=one.feature_mask)
        fm = one.feature_mask[0]
        heat.append([float(attr[0, int((fm == w).nonzero()[0])])
                     for w in range(len(one.words[0]))])
        print(rows[-1], flush=True)

    table = pd.DataFrame(rows)
    table.to_csv(out / "layers.csv", index=False)
    (out / "layers.md").write_text(markdown(table))
    print(table.to_string(index=False))
    plot(out, heat, one.words[0], table, args)


def markdown(table: pd.DataFrame) -> str:
    """The per-layer table: integers as integers, the learning rate as written, the rest to 3
    decimals."""
    shown = table.copy().astype(object)
    for column in shown:
        if column in ("layer", "fit_steps", "fit_rows", "init_from"):
            shown[column] = table[column].map(lambda v: "" if pd.isna(v) else str(int(v)))
        elif column == "lr":
            shown[column] = table[column].map(lambda v: f"{v:g}")
        else:
            shown[column] = table[column].map(lambda v: f"{v:.3f}")
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def plot(out: Path, heat: list, words: list[str], table: pd.DataFrame, args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(words), 0.5 + 0.45 * len(heat)))
    image = ax.imshow(heat, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(words)), words, rotation=30, ha="right")
    ax.set_yticks(range(len(heat)), [f"{i}" for i in range(len(heat))])
    ax.set_ylabel("layer l (gates read hidden states 0..l)")
    for i, row in enumerate(heat):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 else "black")
    fig.colorbar(image, ax=ax, label="keep probability")
    ax.set_title(f"DiffMask ({args.mode}) on the default model", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"heatmap_{args.mode}_layers.png", dpi=130)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.bar(table.layer, table.words_kept, color="tab:blue")
    ax.set_xlabel("layer l")
    ax.set_ylabel("share of words kept")
    ax.set_ylim(0, 1)
    ax.set_title(f"{len(table)} probes, {args.heldout} dev snippets", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"kept_per_layer_{args.mode}.png", dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
