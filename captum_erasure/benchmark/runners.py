"""One runner per benchmarked method (ours, Captum's, LIT's), with the cost counter."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from captum_erasure._core.forwards import model_caller
from captum_erasure.benchmark.examples import (
    Example,
    align_split_words,
    pad_batch,
    words_from_pieces,
)
from captum_erasure.benchmark.settings import BenchmarkSettings

CAPTUM_METHODS = ("IntegratedGradients", "FeatureAblation", "Occlusion", "Lime", "KernelShap",
                  "ShapleyValueSampling")


OUR_METHODS = ("WordErasure", "InputMarginalization", "InputReduction", "WordInformation",
               "DiffMask")


LIT_METHODS = ("LIT IG", "LIT LIME")


ALL_METHODS = ("Random",) + OUR_METHODS + CAPTUM_METHODS + LIT_METHODS


# -- cost accounting ---------------------------------------------------------------------------
class ForwardCounter:
    """Counts forward calls and rows of modules through a forward pre-hook, whoever calls them
    (rows from the first positional tensor or the ``input_ids``/``inputs_embeds`` keyword).
    Counted on entry, so a call stopped inside the model counts too (WordInformation stops it
    once its layer has run)."""

    def __init__(self, *modules: nn.Module) -> None:
        self.calls = self.rows = 0
        self.handles = [m.register_forward_pre_hook(self._hook_kw, with_kwargs=True)
                        for m in modules if m is not None]

    def _hook_kw(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls += 1
        value = args[0] if args else kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        self.rows += int(value.shape[0]) if isinstance(value, Tensor) and value.dim() else 0

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


# -- the methods -------------------------------------------------------------------------------
class MethodContext:
    """What every method runner gets: model, tokenizer, examples, predicted classes."""

    def __init__(self, model: nn.Module, tokenizer: Any, examples: list[Example],
                 targets: list[int], settings: BenchmarkSettings, seed: int,
                 mlm: nn.Module | None = None, show_progress: bool = True) -> None:
        self.model, self.tokenizer, self.examples = model, tokenizer, examples
        self.targets, self.settings, self.seed, self.mlm = targets, settings, seed, mlm
        self.show_progress = show_progress
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batches(self) -> list[tuple[list[int], tuple[Tensor, Tensor, Tensor]]]:
        size = self.settings.batch_size
        order = list(range(len(self.examples)))
        return [(order[s:s + size], pad_batch([self.examples[i] for i in order[s:s + size]],
                                              self.pad))
                for s in range(0, len(order), size)]

    def body_forward(self, example: Example) -> Callable[[Tensor], Tensor]:
        """Probabilities of the model on word pieces, with the example's specials around."""
        prefix = example.ids[:example.body.start]
        suffix = example.ids[example.body.stop:]
        model = model_caller(self.model)

        def forward(body: Tensor) -> Tensor:
            rows = body.shape[0]
            ids = torch.cat([prefix.expand(rows, -1), body, suffix.expand(rows, -1)], 1)
            out = model(ids, torch.ones_like(ids))
            logits = out.logits if hasattr(out, "logits") else out
            return torch.softmax(logits.float(), -1)

        return forward

    def per_example(self, desc: str) -> Any:
        return tqdm(list(enumerate(self.examples)), desc=desc, unit="text", leave=False,
                    disable=not self.show_progress)


def run_random(ctx: MethodContext) -> list[list[float]]:
    generator = torch.Generator().manual_seed(ctx.seed)
    return [torch.randn(len(e.words), generator=generator).double().tolist()
            for e in ctx.examples]


def run_word_erasure(ctx: MethodContext) -> list[list[float]]:
    from captum_erasure.attr.word_erasure import WordErasure
    method = WordErasure(ctx.model, pad_token_id=ctx.pad)
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="WordErasure", leave=False,
                                                disable=not ctx.show_progress):
        words = method.attribute_words(ids, target=torch.tensor([ctx.targets[i] for i in indices]),
                                       additional_forward_args=(attention,), feature_mask=mask,
                                       score="eq1", mode="delete")
        for row, i in enumerate(indices):
            scores[i] = words.scores[row, :len(ctx.examples[i].words)].tolist()
    return scores


def run_word_information(ctx: MethodContext) -> list[list[float]]:
    from captum_erasure.attr.information import WordInformation
    method = WordInformation(ctx.model, layer="pooled", n_steps=ctx.settings.information_steps,
                             seed=ctx.seed)
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="WordInformation",
                                                leave=False, disable=not ctx.show_progress):
        result = method.attribute_details(ids, additional_forward_args=(attention,),
                                          feature_mask=mask)
        for row, i in enumerate(indices):
            scores[i] = result.kept[row, :len(ctx.examples[i].words)].tolist()
    return scores


def run_input_marginalization(ctx: MethodContext) -> list[list[float]]:
    from captum_erasure.attr.marginalization import InputMarginalization
    if ctx.mlm is None:
        raise RuntimeError("InputMarginalization needs a masked LM (mlm=)")
    method = InputMarginalization(ctx.model, ctx.mlm, tokenizer=ctx.tokenizer)
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="InputMarginalization",
                                                leave=False, disable=not ctx.show_progress):
        attr = method.attribute(ids, target=torch.tensor([ctx.targets[i] for i in indices]),
                                additional_forward_args=(attention,), feature_mask=mask,
                                top_k=ctx.settings.marginalization_top_k, word_reduce="sum")
        for row, i in enumerate(indices):
            e = ctx.examples[i]
            scores[i] = words_from_pieces(e, attr[row, e.body], "first")
    return scores


def run_input_reduction(ctx: MethodContext) -> list[list[float]]:
    """Feng et al.'s removal order (1 = removed first). Every word kept to the end would share
    one rank, and the metrics would then order them by position; instead the kept words are
    ordered by the method's own last evidence, leave-one-out on the reduced input."""
    from captum_erasure.attr import input_reduction
    method = input_reduction.InputReduction(ctx.model)
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="InputReduction",
                                                leave=False, disable=not ctx.show_progress):
        method.attribute(ids, target=torch.tensor([ctx.targets[i] for i in indices]),
                         additional_forward_args=(attention,), feature_mask=mask,
                         pad_token_id=ctx.pad)
        for row, i in enumerate(indices):
            result = method.last_result[row]
            drops = kept_word_drops(ctx, ctx.examples[i], ctx.targets[i], result.kept)
            scores[i] = reduction_scores(len(ctx.examples[i].words), result.removal_path,
                                         result.kept, drops)
    return scores


def kept_word_drops(ctx: MethodContext, example: Example, target: int,
                    kept: list[int]) -> list[float]:
    """P(target | the kept words) - P(target | the kept words but one), per kept word."""
    words = example.word_of_token
    rows = []
    for subset in [kept] + [[w for w in kept if w != left_out] for left_out in kept]:
        keep = (words < 0) | torch.isin(words, torch.tensor(subset, dtype=torch.long))
        rows.append(Example(example.text, example.label, example.ids[keep], words[keep],
                            example.words, example.word_spans, example.body))
    ids, attention, _ = pad_batch(rows, ctx.pad)
    with torch.inference_mode():
        out = model_caller(ctx.model)(ids, attention)
        probs = torch.softmax((out.logits if hasattr(out, "logits") else out).double(), -1)
    return (probs[0, target] - probs[1:, target]).tolist()


def reduction_scores(n_words: int, removal_path: list[int], kept: list[int],
                     kept_drops: list[float]) -> list[float]:
    """Word scores from a reduction: removal step (1 = removed first) for removed words; the
    kept words above every removed one, ordered by their leave-one-out drop (strictly between
    ``len(path) + 1`` and ``len(path) + 2``; equal drops keep position order)."""
    if len(kept) != len(kept_drops):
        raise ValueError(f"{len(kept_drops)} drops for {len(kept)} kept words")
    scores = [0.0] * n_words
    for step, word in enumerate(removal_path):
        scores[word] = float(step + 1)
    ranked = sorted(range(len(kept)), key=lambda k: (kept_drops[k], -kept[k]))
    for rank, k in enumerate(ranked):
        scores[kept[k]] = len(removal_path) + 1 + (rank + 1) / (len(kept) + 1)
    return scores


def prepare_diffmask(ctx: MethodContext) -> dict[str, float]:
    """Fits DiffMask once, outside the explanation cost (or loads the cached probe of the same
    settings): input mode at the settings' layer (default: the last), ``diffmask_steps``
    steps of ``batch_size`` 16 on the Rotten Tomatoes training snippets, seed ``ctx.seed``.
    With ``diffmask_probe`` (a file of :meth:`DiffMask.save`), that probe at its own layer."""
    from captum_erasure.attr.diffmask import DiffMask
    from captum_erasure.data import load_rotten_tomatoes
    s = ctx.settings
    if s.diffmask_probe:
        saved = torch.load(s.diffmask_probe, map_location="cpu", weights_only=True)
        method = DiffMask(ctx.model, layer=saved["layer"], mode=saved["mode"],
                          mask_token_id=ctx.tokenizer.mask_token_id).load(s.diffmask_probe)
        ctx.diffmask = method
        return {"fit_seconds": 0.0, "fit_rows": 0.0}
    layer = s.diffmask_layer if s.diffmask_layer is not None else \
        ctx.model.config.num_hidden_layers
    method = DiffMask(ctx.model, layer=layer, mode="input",
                      mask_token_id=ctx.tokenizer.mask_token_id)
    path = None
    if s.diffmask_cache:
        path = Path(s.diffmask_cache) / f"layer{layer}_input_{s.diffmask_steps}steps_seed" \
            f"{ctx.seed}.pt"
    start = time.perf_counter()
    if path is not None and path.is_file():
        method.load(path)
        fit_rows = 0.0
    else:
        method.fit(texts=load_rotten_tomatoes("train").text.tolist(), tokenizer=ctx.tokenizer,
                   batch_size=16, max_steps=s.diffmask_steps, seed=ctx.seed,
                   show_progress=ctx.show_progress)
        fit_rows = float(method.fit_stats.rows)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            method.save(path)
    ctx.diffmask = method
    return {"fit_seconds": time.perf_counter() - start, "fit_rows": fit_rows}


def run_diffmask(ctx: MethodContext) -> list[list[float]]:
    method = getattr(ctx, "diffmask", None)
    if method is None:
        prepare_diffmask(ctx)
        method = ctx.diffmask
    scores: list = [None] * len(ctx.examples)
    for indices, (ids, attention, mask) in tqdm(ctx.batches(), desc="DiffMask", leave=False,
                                                disable=not ctx.show_progress):
        attr = method.attribute(ids, additional_forward_args=(attention,), feature_mask=mask)
        for row, i in enumerate(indices):
            e = ctx.examples[i]
            scores[i] = words_from_pieces(e, attr[row, e.body], "first")
    return scores


# Fitted methods: run before the method's explanations, outside their cost (run.py adds the
# returned fit cost to the method's row).
PREPARERS: dict[str, Callable[[MethodContext], dict[str, float]]] = {
    "DiffMask": prepare_diffmask,
}


def _captum_runner(name: str) -> Callable[[MethodContext], list[list[float]]]:
    def run(ctx: MethodContext) -> list[list[float]]:
        import captum.attr as ca
        s = ctx.settings
        ppe = s.perturbations_per_eval
        scores = []
        torch.manual_seed(ctx.seed)  # Lime, KernelShap and ShapleyValueSampling sample
        for i, e in ctx.per_example(name):
            forward = ctx.body_forward(e)
            body = e.ids[e.body][None]
            mask = e.word_of_token[e.body][None]
            target = ctx.targets[i]
            if name == "IntegratedGradients":
                method = ca.LayerIntegratedGradients(forward, ctx.model.get_input_embeddings())
                attr = method.attribute(body, baselines=torch.full_like(body, ctx.pad),
                                        target=target, n_steps=s.ig_steps,
                                        internal_batch_size=s.ig_steps)
                # The layer output spans the specials too; they equal their baseline (0 there).
                pieces = attr[0, e.body].sum(-1)
                scores.append(words_from_pieces(e, pieces, "sum"))
                continue
            with torch.inference_mode():
                if name == "Occlusion":
                    attr = ca.Occlusion(forward).attribute(
                        body, sliding_window_shapes=(1,), baselines=ctx.pad, target=target,
                        perturbations_per_eval=ppe)
                    scores.append(words_from_pieces(e, attr[0], "sum"))
                    continue
                common = dict(baselines=ctx.pad, target=target, feature_mask=mask,
                              perturbations_per_eval=ppe)
                if name == "FeatureAblation":
                    attr = ca.FeatureAblation(forward).attribute(body, **common)
                elif name == "Lime":
                    attr = ca.Lime(forward).attribute(body, n_samples=s.lime_samples, **common)
                elif name == "KernelShap":
                    attr = ca.KernelShap(forward).attribute(body, n_samples=s.kernel_shap_samples,
                                                            **common)
                elif name == "ShapleyValueSampling":
                    attr = ca.ShapleyValueSampling(forward).attribute(
                        body, n_samples=s.shapley_samples, **common)
                else:
                    raise ValueError(f"unknown Captum method {name!r}")
            scores.append(words_from_pieces(e, attr[0].float(), "first"))
        return scores

    return run


def _lit_model(ctx: MethodContext, gradients: bool) -> Any:
    from lit_plugin.model import HFSequenceClassifier
    return HFSequenceClassifier(ctx.model, ctx.tokenizer, compute_gradients=gradients,
                                max_minibatch_size=ctx.settings.perturbations_per_eval)


def run_lit_ig(ctx: MethodContext) -> list[list[float]]:
    from lit_nlp.components.gradient_maps import IntegratedGradients
    lit_model = _lit_model(ctx, gradients=True)
    ig = IntegratedGradients()
    config = {"Class to explain": "", "Normalize": False,
              "Interpolation steps": ctx.settings.lit_ig_steps}
    scores = []
    for i, e in ctx.per_example("LIT IG"):
        label = lit_model.labels[ctx.targets[i]]
        (result,) = ig.run([{"text": e.text, "label": label}], lit_model, None, config=config)
        salience = result["token_grads"]
        # The wrapper's tokens are the pieces between the specials; older versions also hid
        # [UNK] pieces (get_special_tokens_mask counts [UNK] as special): those get 0.
        body = e.ids[e.body]
        shown = torch.ones(len(body), dtype=torch.bool)
        if len(salience.tokens) != len(body):
            shown = ~torch.isin(body, torch.tensor(list(ctx.tokenizer.all_special_ids)))
        if len(salience.tokens) != int(shown.sum()):
            raise RuntimeError(f"LIT IG gave {len(salience.tokens)} tokens for "
                               f"{int(shown.sum())} word pieces (text {i})")
        pieces = torch.zeros(len(body), dtype=torch.float64)
        pieces[shown] = torch.as_tensor(np.asarray(salience.salience), dtype=torch.float64)
        scores.append(words_from_pieces(e, pieces, "sum"))
    return scores


def run_lit_lime(ctx: MethodContext) -> list[list[float]]:
    from lit_nlp.components.lime_explainer import LIME
    lit_model = _lit_model(ctx, gradients=False)
    lime = LIME()
    scores = []
    for i, e in ctx.per_example("LIT LIME"):
        config = {"_salience_target": {"field": "probas", "index": ctx.targets[i]},
                  "Number of samples": str(ctx.settings.lit_lime_samples),
                  "Seed": str(ctx.seed)}
        (result,) = lime.run([{"text": e.text}], lit_model, None, config=config)
        scores.append(align_split_words(e, np.asarray(result["text"].salience)))
    return scores


METHOD_NOTES = {
    "Random": "standard normal word scores (reference)",
    "WordErasure": "ours, Li et al. Eq. 1, words deleted, all snippets of a batch packed",
    "InputMarginalization": "ours, Kim et al., MLM top-{top_k} candidates per token, word = sum",
    "InputReduction": "ours, Feng et al., removal order; the kept words ordered by "
                      "leave-one-out on the reduced input (not by position)",
    "WordInformation": "ours, Guan et al., information kept at the pooled output (unsigned), "
                       "{info} Adam steps (forward+backward) per batch",
    "DiffMask": "ours, De Cao et al., input mode at layer {dm_layer}, fitted {dm_steps} steps x 16 "
                "training snippets (fit cost in fit_seconds), word = max keep probability",
    "IntegratedGradients": "Captum LayerIntegratedGradients on the input embeddings, {ig} steps, "
                           "[PAD] baseline, summed over the embedding and the pieces",
    "FeatureAblation": "Captum, words replaced by [PAD]",
    "Occlusion": "Captum, window 1 (pieces) replaced by [PAD], summed over pieces",
    "Lime": "Captum default Lasso surrogate, {lime} samples, [PAD] baseline",
    "KernelShap": "Captum, {kshap} samples, [PAD] baseline",
    "ShapleyValueSampling": "Captum, {svs} permutations, [PAD] baseline",
    "LIT IG": "LIT IntegratedGradients via HFSequenceClassifier, {lit_ig} steps, zero-embedding "
              "baseline, summed over pieces",
    "LIT LIME": "LIT LIME via HFSequenceClassifier, {lit_lime} samples, [MASK], str.split "
                "tokens shared among the model words inside them",
}


def method_note(name: str, s: BenchmarkSettings) -> str:
    if name == "DiffMask" and s.diffmask_probe:
        return (f"ours, De Cao et al., the saved probe {s.diffmask_probe} (its layer, mode and "
                f"fit), word = max keep probability")
    return METHOD_NOTES.get(name, "").format(
        top_k=s.marginalization_top_k, ig=s.ig_steps, lime=s.lime_samples,
        kshap=s.kernel_shap_samples, svs=s.shapley_samples, lit_ig=s.lit_ig_steps,
        lit_lime=s.lit_lime_samples, info=s.information_steps,
        dm_layer="L" if s.diffmask_layer is None else s.diffmask_layer,
        dm_steps=s.diffmask_steps)


def available_methods(mlm: nn.Module | None) -> list[str]:
    """Every method that can run here: InputMarginalization needs an MLM, InputReduction its
    module, the LIT methods the LIT plugin."""
    import importlib
    import importlib.util
    names = []
    for name in ALL_METHODS:
        if name == "InputMarginalization" and mlm is None:
            continue
        if name == "InputReduction":
            try:
                importlib.import_module("captum_erasure.attr.input_reduction")
            except ImportError:
                continue
        if name in LIT_METHODS and importlib.util.find_spec("lit_plugin.model") is None:
            continue
        names.append(name)
    return names


def explain_all(ctx: MethodContext, method: str) -> tuple[list[list[float]], dict[str, float]]:
    """Word scores of every example and the cost (seconds, calls and rows of the classifier
    and of the MLM)."""
    counter = ForwardCounter(ctx.model)
    mlm_counter = ForwardCounter(ctx.mlm) if ctx.mlm is not None else None
    start = time.perf_counter()
    try:
        scores = RUNNERS[method](ctx)
    finally:
        seconds = time.perf_counter() - start
        counter.close()
        if mlm_counter is not None:
            mlm_counter.close()
    for i, (e, s) in enumerate(zip(ctx.examples, scores)):
        if len(s) != len(e.words) or not all(math.isfinite(v) for v in s):
            raise RuntimeError(f"{method} gave {len(s)} scores (finite: "
                               f"{all(math.isfinite(v) for v in s)}) for {len(e.words)} words "
                               f"of text {i}")
    n = len(ctx.examples)
    cost = {"seconds_per_example": seconds / n, "forward_calls_per_example": counter.calls / n,
            "rows_per_example": counter.rows / n,
            "mlm_rows_per_example": (mlm_counter.rows / n) if mlm_counter else 0.0}
    return scores, cost


RUNNERS: dict[str, Callable[[MethodContext], list[list[float]]]] = {
    "Random": run_random,
    "WordErasure": run_word_erasure,
    "InputMarginalization": run_input_marginalization,
    "InputReduction": run_input_reduction,
    "WordInformation": run_word_information,
    "DiffMask": run_diffmask,
    **{name: _captum_runner(name) for name in CAPTUM_METHODS},
    "LIT IG": run_lit_ig,
    "LIT LIME": run_lit_lime,
}
