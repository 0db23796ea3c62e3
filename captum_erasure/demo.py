"""The main job on the offline default: explain held-out movie snippets word by word.

Builds (once, cached) the default MiniLM sentiment model, explains a handful of held-out
Rotten Tomatoes snippets with Li et al.'s Eq. 1 word erasure (printed as a table, drawn as
heatmap PNGs and an HTML page, all texts on one colour scale: Eq. 1 on a symlog scale, and the
bounded probability drop), then streams the whole held-out split through word erasure and
writes the corpus tables: word types ranked by a robust statistic (``shrunk``, next to the
paper's mean; Table 1) as a table and a figure, the most negative word types, and the most
negative occurrences with their sentences and gold labels (Table 2's error analysis).

    python -m captum_erasure.demo --out outputs/demo    # about 3 minutes on 2 CPU cores
    python -m captum_erasure.demo --out outputs/demo --ray          # corpus tables on Ray
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from captum_erasure.data import load_rotten_tomatoes
from captum_erasure.explain.corpus import corpus_word_importance
from captum_erasure.explain.plots import plot_word_heatmap, plot_word_ranking, save_html
from captum_erasure.explain.report import explanations_to_frame, format_table
from captum_erasure.explain.scales import VALUES
from captum_erasure.explain.texts import explain_texts
from captum_erasure.models.default import default_model_info, load_default_model
from captum_erasure.scale.corpus_run import corpus_tables

PAPER_SENTENCE = "Effective but too-tepid biopic"  # Li et al. Figure 5
HEATMAP_WRAP = 14  # words per heatmap row: long snippets continue on the next row
# Word erasure of held-out snippets on 2 CPU cores: 1,000 in 173 s (docs/ray.md).
SNIPPETS_PER_SECOND_2_CPUS = 1000 / 173


def expected_duration(n_snippets: int) -> str:
    """How long the corpus step takes on 2 CPU cores, in words, for the progress message."""
    seconds = n_snippets / SNIPPETS_PER_SECOND_2_CPUS
    return f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.0f} min"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Word erasure on the offline default model. Takes about 3 minutes on 2 CPU "
                    "cores (most of it the corpus tables over the held-out split; --n-corpus "
                    "200 takes well under a minute); progress bars show each step.")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    parser.add_argument("--n-explain", type=int, default=8, help="snippets to explain")
    parser.add_argument("--n-corpus", type=int, default=None,
                        help="held-out snippets for the corpus tables (default: all)")
    parser.add_argument("--mode", default="delete",
                        choices=["delete", "replace", "attention", "zero"],
                        help="how a word is erased (Li et al.: delete)")
    parser.add_argument("--min-count", type=int, default=3,
                        help="minimum occurrences for a word type in the rankings")
    parser.add_argument("--values", default="symlog", choices=VALUES,
                        help="what the heatmap, HTML and table show (default symlog: Eq. 1 "
                             "compressed; prob_drop: P(target) drop, bounded in [-1, 1])")
    parser.add_argument("--per-text", action="store_true",
                        help="colour each text on its own scale (default: one scale for all)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if any)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="compute the corpus tables on Ray: a new local instance, or join "
                             "ADDRESS ('auto', 'ray://host:10001'); see docs/ray.md")
    parser.add_argument("--rebuild-model", action="store_true",
                        help="fine-tune the default model again instead of using the cache")
    args = parser.parse_args(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)

    model, tokenizer = load_default_model(device=device, rebuild=args.rebuild_model)
    info = default_model_info()
    print(f"default model: MiniLM-L6 fine-tuned on Rotten Tomatoes, test accuracy "
          f"{info.get('test_accuracy', float('nan')):.3f}\n")

    held_out = load_rotten_tomatoes("test")
    sample = held_out.head(args.n_explain)
    texts = [PAPER_SENTENCE, *sample["text"]]
    labels = [0, *sample["label"]]  # the paper's sentence is rated -0.6: negative
    explanations = explain_texts(model, tokenizer, texts, labels=labels, mode=args.mode,
                                 device=device, show_progress=True)
    print("Word importance (Li et al. Eq. 1, target = predicted class; positive: erasing the "
          "word lowers the model's confidence)\n")
    shown = dict(values=args.values, per_text=args.per_text)
    print(format_table(explanations, **shown))
    plot_word_heatmap(explanations, args.out / "heatmap.png", **shown, wrap=HEATMAP_WRAP,
                      title="Word erasure (Eq. 1), held-out snippets")
    if args.values != "prob_drop":  # the bounded view beside it
        plot_word_heatmap(explanations, args.out / "heatmap_prob_drop.png", values="prob_drop",
                          per_text=args.per_text, wrap=HEATMAP_WRAP,
                          title="Word erasure: drop of P(predicted class), held-out snippets")
    save_html(explanations, args.out / "explanations.html", **shown)
    explanations_to_frame(explanations).to_csv(args.out / "explanations.csv", index=False)

    corpus_texts = held_out["text"].tolist()[:args.n_corpus]
    corpus_labels = held_out["label"].tolist()[:args.n_corpus]
    print(f"\nCorpus tables over {len(corpus_texts)} held-out snippets (target = gold label; "
          f"{expected_duration(len(corpus_texts))} on 2 CPU cores, progress below)...")
    start = time.perf_counter()
    if args.ray is None:
        corpus = corpus_word_importance(model, tokenizer, corpus_texts, corpus_labels,
                                        mode=args.mode, min_count=args.min_count, device=device)
    else:  # the same tables, from a pool of Ray actors that each load the default model
        corpus = corpus_tables(corpus_texts, labels=corpus_labels, model="default",
                               mode=args.mode, min_count=args.min_count, backend="ray",
                               address=args.ray or None)
    seconds = time.perf_counter() - start
    written = corpus.save(args.out)
    top = corpus.top_positive(15)
    negative = corpus.top_negative(10)
    occurrences = corpus.negative_occurrences(10)
    top.to_csv(args.out / "top_positive_words.csv", index=False)
    negative.to_csv(args.out / "top_negative_words.csv", index=False)
    note = corpus.ranking_note()
    if len(top):
        plot_word_ranking(top, args.out / "top_words.png", note=note,
                          title="Most important word types, held-out split")
    columns = ["word", "shrunk", "mean", "std", "count"]
    print(f"({seconds:.0f} s)\n\n{note}\n\nMost important word types:\n"
          f"{top[columns].to_string(index=False)}")
    print(f"\nWord types with negative importance:\n"
          f"{negative[columns].to_string(index=False)}")
    print("\nMost negative occurrences (the model does better without the word):\n" +
          occurrences[["word", "score", "gold_label", "predicted_label", "sentence"]]
          .to_string(index=False, max_colwidth=70))
    figures = "heatmap.png, " + ("heatmap_prob_drop.png, " if args.values != "prob_drop" else "")
    figures += "top_words.png, " if len(top) else ""
    print(f"\nWrote {args.out}/: {figures}explanations.html, "
          f"explanations.csv, top_positive_words.csv, top_negative_words.csv, "
          f"{', '.join(sorted(p.name for p in written.values()))}")


if __name__ == "__main__":
    main()
