"""LIT server with our erasure methods next to LIT's own (the README's main command).

    python -m lit_plugin.server [--model DIR | --vmask] [--mlm DIR] [--data CSV]
                                [--dataset-size N] [--port 5432] [--host 127.0.0.1]
                                [--no-marginalization]

(``python -m lit_plugin`` and the ``captum-erasure-lit`` script run the same launcher.) It
prints the URL to open; the page opens in LIT's "default" layout.

Without ``--model`` it serves the offline default sentiment model (MiniLM-L6 fine-tuned on
Rotten Tomatoes; built once, about 5 minutes on 2 CPU cores) on held-out Rotten Tomatoes
snippets, with input marginalization through the default MLM (built once, about 20 minutes, in
the background while the server already answers; ``--no-marginalization`` leaves it out). With
``--model DIR`` (any Hugging Face sequence classifier saved with ``save_pretrained``) input
marginalization needs ``--mlm DIR``, an MLM sharing the classifier's vocabulary. ``--vmask``
serves the VMASK MiniLM instead (Chen & Ji 2020; trained once, minutes on 2 CPU cores), and
``--model DIR`` accepts a VMASK classifier saved by ``save_vmask_classifier``; a model with a
VMASK layer gets its keep probabilities as a Salience Maps row.

In your own code, :func:`make_server` (blocking server) and :func:`make_app` (WSGI app for
tests or gunicorn) merge our interpreters and generators into LIT's defaults instead of
replacing them.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any, Sequence

import lit_nlp
from lit_nlp import app as lit_app
from lit_nlp import dev_server
from lit_nlp.api import dataset as lit_dataset
from lit_nlp.api import layout
from lit_nlp.api import types as lit_types
from lit_nlp.components import core

from .generators import erasure_generators
from .interpreters import BackgroundLoader, erasure_interpreters
from .model import HFSequenceClassifier

CLIENT_ROOT = os.path.join(os.path.dirname(lit_nlp.__file__), "client", "build", "default")
DEFAULT_PORT = 5432
DEFAULT_HOST = "127.0.0.1"
DEFAULT_DATASET_SIZE = 200
# LIT's own "default" layout (``layout.STANDARD_LAYOUT``): the data table and datapoint editor
# above, lower tabs with "Explanations" (Salience Maps: our interpreters' rows) and
# "Counterfactuals" (the generator module: our generators).
DEFAULT_LAYOUT = "default"
MODEL_NAME = "sentiment"
DATASET_NAME = "rotten_tomatoes_test"


# -- building blocks for your own server ----------------------------------------------------------
def merged_components(models: dict, *, interpreters: dict | None = None,
                      generators: dict | None = None, mlm: Any = None,
                      mlm_tokenizer: Any = None) -> tuple[dict, dict]:
    """LIT's default interpreters and generators with ours added (and ``interpreters`` /
    ``generators`` on top). LIT's ``interpreters=``/``generators=`` replace its defaults, so
    always pass the merged dicts."""
    merged_interpreters = {**core.default_interpreters(models),
                           **erasure_interpreters(mlm, mlm_tokenizer),
                           **(interpreters or {})}
    merged_generators = {**core.default_generators(), **erasure_generators(),
                         **(generators or {})}
    return merged_interpreters, merged_generators


def make_server(models: dict, datasets: dict, *, interpreters: dict | None = None,
                generators: dict | None = None, mlm: Any = None, mlm_tokenizer: Any = None,
                port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
                server_type: str = "default", **app_kw: Any) -> dev_server.Server:
    """A ``lit_nlp.dev_server.Server`` with LIT's defaults plus our components (see
    :func:`merged_components`); ``server_type="external"`` makes ``serve()`` return the WSGI
    app. Other keywords go to ``LitApp`` (``page_title``, ``layouts``, ``default_layout``, ...).

    The default layout is LIT's ``"default"`` (:data:`DEFAULT_LAYOUT`), or the first of your
    ``layouts`` when they have no ``"default"``: LIT 1.3.1's client renders a blank page at a URL
    without ``?layout=`` when the app has no default layout."""
    merged_interpreters, merged_generators = merged_components(
        models, interpreters=interpreters, generators=generators, mlm=mlm,
        mlm_tokenizer=mlm_tokenizer)
    layouts = app_kw.setdefault("layouts", layout.DEFAULT_LAYOUTS)
    if app_kw.get("default_layout") is None:
        app_kw["default_layout"] = DEFAULT_LAYOUT if DEFAULT_LAYOUT in layouts else next(
            iter(layouts))
    if app_kw["default_layout"] not in layouts:
        raise ValueError(f"default_layout {app_kw['default_layout']!r} is not one of the "
                         f"layouts {sorted(layouts)}")
    app_kw.setdefault("client_root", CLIENT_ROOT)
    app_kw.setdefault("page_title", "LIT with captum-erasure")
    return dev_server.Server(models, datasets, interpreters=merged_interpreters,
                             generators=merged_generators, port=port, host=host,
                             server_type=server_type, **app_kw)


def make_app(models: dict, datasets: dict, **kw: Any) -> lit_app.LitApp:
    """The WSGI app of :func:`make_server` (no socket): for tests (``werkzeug.test.Client``)
    or an external WSGI server."""
    return make_server(models, datasets, server_type="external", **kw).serve()


def text_dataset(texts: Sequence[str], labels: Sequence[str] | None = None, *,
                 label_vocab: Sequence[str] | None = None, extra: dict | None = None,
                 description: str | None = None) -> lit_dataset.Dataset:
    """A LIT dataset with a ``text`` field and, when given, a gold ``label`` field."""
    spec: lit_types.Spec = {"text": lit_types.TextSegment()}
    if labels is not None:
        spec["label"] = lit_types.CategoryLabel(vocab=list(label_vocab or sorted(set(labels))))
    examples = []
    for i, text in enumerate(texts):
        example = {"text": str(text)}
        if labels is not None:
            example["label"] = str(labels[i])
        for name, (field_spec, values) in (extra or {}).items():
            spec[name] = field_spec
            example[name] = values[i]
        examples.append(example)
    return lit_dataset.Dataset(spec=spec, examples=examples, description=description)


# -- the launcher -------------------------------------------------------------------------------
def rotten_tomatoes_dataset(size: int, model_labels: Sequence[str]) -> lit_dataset.Dataset:
    """The first ``size`` held-out Rotten Tomatoes test snippets (all 1,007 for 0), with the
    gold label when the model's labels are the default model's (negative, positive)."""
    from captum_erasure.data import load_rotten_tomatoes
    frame = load_rotten_tomatoes("test")
    if size:
        frame = frame.head(size)
    same_labels = list(model_labels) == ["negative", "positive"]
    labels = [model_labels[int(y)] for y in frame["label"]] if same_labels else None
    rating = (lit_types.Scalar(min_val=-4, max_val=4), [float(r) for r in frame["rating"]])
    return text_dataset(list(frame["text"]), labels, label_vocab=model_labels,
                        extra={"rating": rating},
                        description=f"{len(frame)} held-out Rotten Tomatoes snippets (test "
                                    "split, never seen in training), with mean human ratings")


def csv_dataset(path: str, size: int, model_labels: Sequence[str]) -> lit_dataset.Dataset:
    """Texts from a CSV with a ``text`` column and an optional ``label`` column (label names
    of the model, or class indices)."""
    import pandas as pd
    frame = pd.read_csv(path)
    if "text" not in frame.columns:
        raise SystemExit(f"{path} has no 'text' column (its columns: {list(frame.columns)})")
    if size:
        frame = frame.head(size)
    labels = None
    if "label" in frame.columns:
        labels = [model_labels[int(v)] if str(v).isdigit() else str(v) for v in frame["label"]]
        unknown = sorted(set(labels) - set(model_labels))
        if unknown:
            raise SystemExit(f"{path}: labels {unknown} are not the model's {list(model_labels)}")
    return text_dataset(list(frame["text"].astype(str)), labels, label_vocab=model_labels,
                        description=f"{len(frame)} texts from {path}")


def build_parser(prog: str = "python -m lit_plugin.server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve LIT with captum-erasure's interpreters and generators next to LIT's "
                    "own (Integrated Gradients, Grad, LIME, HotFlip, ...).")
    parser.add_argument("--model", metavar="DIR",
                        help="a Hugging Face sequence classifier directory (save_pretrained); "
                             "default: the offline default sentiment model (built once, ~5 "
                             "min on 2 CPU cores)")
    parser.add_argument("--vmask", action="store_true",
                        help="serve the VMASK MiniLM (Chen & Ji 2020; trained once into the "
                             "cache, minutes on 2 CPU cores) with its keep-probability row, "
                             "and its default MLM for input marginalization")
    parser.add_argument("--mlm", metavar="DIR",
                        help="a masked LM sharing the classifier's vocabulary, for input "
                             "marginalization (default: the default MLM with the default "
                             "model; none with --model)")
    parser.add_argument("--no-diffmask", action="store_true",
                        help="leave out the DiffMask row (otherwise fitted once in the "
                             "background on the training snippets, or loaded from "
                             "outputs/diffmask/lit_probes/)")
    parser.add_argument("--diffmask-layer", type=int, default=None, metavar="L",
                        help="DiffMask's layer (default: the last)")
    parser.add_argument("--diffmask-steps", type=int, default=300, metavar="N",
                        help="DiffMask fit steps of 16 training snippets (default 300)")
    parser.add_argument("--no-marginalization", action="store_true",
                        help="leave input marginalization out (no MLM is loaded or built)")
    parser.add_argument("--data", metavar="CSV",
                        help="texts to explore: a CSV with a 'text' column and an optional "
                             "'label' column (default: held-out Rotten Tomatoes snippets)")
    parser.add_argument("--dataset-size", type=int, default=DEFAULT_DATASET_SIZE, metavar="N",
                        help=f"number of examples to load (default {DEFAULT_DATASET_SIZE}; "
                             "0 = all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--max-minibatch-size", type=int, default=32, metavar="N",
                        help="examples per model forward pass (default 32)")
    return parser


def load_models(args: argparse.Namespace) -> tuple[HFSequenceClassifier, Any]:
    """The LIT model and the MLM source (a model, a background loader, or None)."""
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

    from captum_erasure.models.vmask import is_vmask_folder, load_vmask_classifier
    if args.model and args.vmask:
        raise SystemExit("--vmask serves the cached VMASK MiniLM; to serve your own VMASK "
                         "classifier pass only --model DIR")
    if args.model and is_vmask_folder(args.model):
        model, tokenizer = load_vmask_classifier(args.model)
    elif args.model:
        model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    elif args.vmask:
        from captum_erasure.models.vmask_minilm import load_vmask_model
        model, tokenizer = load_vmask_model()
    else:
        from captum_erasure.models.default import load_default_model
        model, tokenizer = load_default_model()
    lit_model = HFSequenceClassifier(model, tokenizer,
                                     max_minibatch_size=args.max_minibatch_size)
    mlm: Any = None
    if args.no_marginalization:
        pass
    elif args.mlm:
        mlm = (AutoModelForMaskedLM.from_pretrained(args.mlm).eval(),
               AutoTokenizer.from_pretrained(args.mlm))
        from captum_erasure._core.masked_lm import check_shared_vocabulary, resolve_mlm_tokens
        try:  # fail at launch, not at the first request, when the vocabularies differ
            check_shared_vocabulary(resolve_mlm_tokens(mlm[0], mlm[1]), model, tokenizer,
                                    mlm[1])
        except ValueError as err:
            raise SystemExit(f"--mlm {args.mlm} cannot serve input marginalization for this "
                             f"classifier: {err}") from None
    elif not args.model:
        from captum_erasure.models.default_mlm import default_mlm_dir, load_default_mlm
        if (default_mlm_dir() / "info.json").is_file():
            mlm = load_default_mlm()
        else:
            print("captum-erasure: the default MLM for input marginalization is not built yet; "
                  "building it in the background (about 20 minutes on 2 CPU cores). The server "
                  "starts now; input marginalization answers with an error until the build is "
                  "done. Use --no-marginalization to skip it.", file=sys.stderr, flush=True)
            mlm = BackgroundLoader(lambda: load_default_mlm(show_progress=True),
                                   "the default MLM", "about 20 minutes")
    else:
        print("captum-erasure: input marginalization is left out (it needs --mlm DIR, a masked "
              "LM with the classifier's vocabulary).", file=sys.stderr, flush=True)
    return lit_model, mlm


def diffmask_row(args: argparse.Namespace, lit_model: HFSequenceClassifier) -> dict:
    """The DiffMask Salience Maps row, fitted in the background (or loaded from its cache)."""
    if args.no_diffmask:
        return {}
    from captum_erasure.data import load_rotten_tomatoes
    from lit_plugin.diffmask_interpreter import DiffMaskInterpreter, fitted_diffmask
    model, tokenizer = lit_model.model, lit_model.tokenizer
    # fitted on the training snippets (never the explained test snippets), or on --data
    texts = csv_texts(args.data) if args.data else list(load_rotten_tomatoes("train")["text"])
    loader = BackgroundLoader(
        lambda: fitted_diffmask(model, tokenizer, texts, layer=args.diffmask_layer,
                                steps=args.diffmask_steps),
        "DiffMask", f"{args.diffmask_steps} fit steps, minutes on a CPU")
    interpreter = DiffMaskInterpreter(loader, layer=args.diffmask_layer)
    return {interpreter.name: interpreter}


def vmask_row(lit_model: HFSequenceClassifier) -> dict:
    """The VMASK keep-probability row when the served model has a VMASK layer."""
    from captum_erasure.models.vmask import word_mask_of
    if word_mask_of(lit_model.model) is None:
        return {}
    from lit_plugin.vmask_interpreter import VMaskInterpreter
    interpreter = VMaskInterpreter()
    return {interpreter.name: interpreter}


def csv_texts(path: str) -> list[str]:
    import pandas as pd
    return pd.read_csv(path)["text"].astype(str).tolist()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv: Sequence[str] | None = None, prog: str = "python -m lit_plugin.server") -> None:
    """The launcher (``python -m lit_plugin``, ``python -m lit_plugin.server``,
    ``captum-erasure-lit``): load the model and data, print the URL, serve until Ctrl+C."""
    args = build_parser(prog).parse_args(argv)
    if args.dataset_size < 0:
        raise SystemExit("--dataset-size must be >= 0")
    if not is_loopback(args.host):
        print(f"captum-erasure: WARNING: binding {args.host}, reachable from other machines; "
              "LIT has no authentication.", file=sys.stderr, flush=True)
    lit_model, mlm = load_models(args)
    if args.data:
        dataset = csv_dataset(args.data, args.dataset_size, lit_model.labels)
        dataset_name = os.path.splitext(os.path.basename(args.data))[0] or "data"
    else:
        dataset = rotten_tomatoes_dataset(args.dataset_size, lit_model.labels)
        dataset_name = DATASET_NAME
    mlm_model, mlm_tokenizer = (mlm if isinstance(mlm, tuple) else (mlm, None))
    rows = {**vmask_row(lit_model), **diffmask_row(args, lit_model)}
    app = make_app({MODEL_NAME: lit_model}, {dataset_name: dataset}, mlm=mlm_model,
                   mlm_tokenizer=mlm_tokenizer, interpreters=rows)
    from werkzeug.serving import make_server as werkzeug_server
    server = werkzeug_server(args.host, args.port, app, threaded=True)
    url = f"http://{args.host}:{server.server_port}/"
    print(f"captum-erasure: LIT is serving {len(dataset)} examples at {url} "
          f"(Explanations and Counterfactuals tabs; Ctrl+C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
