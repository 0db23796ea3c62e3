"""Feng et al.'s entropy fine-tuning on a GloVe RNN (Li et al. 2016's cached Bi-LSTM).

The same routine as for the HF default model (:mod:`captum_erasure.models.entropy_finetune`):
beam-3 reduction of training snippets on the trained Bi-LSTM, fine-tuning of its recurrent
layers and classifier (the GloVe vectors stay frozen), a safetensors round trip, and the
before/after measurements on the first ``--n-heldout`` test snippets.

    PYTHONPATH=. HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python examples/feng_entropy_finetune_rnn.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from captum_erasure.data import load_rotten_tomatoes
from captum_erasure.models.default import evaluate_accuracy
from captum_erasure.models.entropy_finetune import (
    entropy_fine_tune,
    load_finetuned,
    reduce_texts,
    save_finetuned,
)
from captum_erasure.paper.li2016.rnn_models import load_sentiment_model, new_sentiment_model


def measure(name, model, tokenizer, texts) -> dict:
    results = reduce_texts(model, tokenizer, texts, beam_size=3, show_progress=False)
    frames = {split: load_rotten_tomatoes(split) for split in ("test", "dev")}
    return {"model": name, **{f"{split} accuracy": evaluate_accuracy(
                model, tokenizer, frame.text.tolist(), frame.label.tolist())
                for split, frame in frames.items()},
            "confidence original": sum(r.original_confidence for r in results) / len(results),
            "confidence reduced": sum(r.confidence for r in results) / len(results),
            "words kept": sum(len(r.kept) for r in results) / len(results),
            "words": sum(len(r.words) for r in results) / len(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", default="bilstm", choices=["bilstm", "lstm", "rnn"])
    parser.add_argument("--n-originals", type=int, default=2000)
    parser.add_argument("--n-reduced", type=int, default=300)
    parser.add_argument("--n-heldout", type=int, default=100)
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="outputs/feng_rnn")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, _ = load_sentiment_model(args.kind)
    held_out = load_rotten_tomatoes("test").head(args.n_heldout).text.tolist()
    rows = [measure(f"{args.kind} (cached)", model, tokenizer, held_out)]
    train = load_rotten_tomatoes("train").sample(n=args.n_originals, random_state=0)
    reduced = reduce_texts(model, tokenizer, train.text.head(args.n_reduced).tolist(),
                           beam_size=3)
    history = entropy_fine_tune(model, tokenizer, train.text.tolist(), train.label.tolist(),
                                [r.reduced_text for r in reduced], entropy_weight=args.weight,
                                lr=args.lr, batch_size=32)
    history.to_csv(out / "history.csv", index=False)
    save_finetuned(model, tokenizer, {"kind": args.kind, **vars(args)}, out / "model")
    loaded, _ = load_finetuned(out / "model", new_sentiment_model(args.kind))
    rows.append(measure(f"{args.kind} entropy fine-tuned (reloaded)", loaded, tokenizer,
                        held_out))
    table = pd.DataFrame(rows).set_index("model").T
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    print(table.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
