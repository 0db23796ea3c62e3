"""The benchmark's per-method runs as Ray tasks (``run_benchmark(..., backend="ray")``,
``python -m captum_erasure.benchmark --ray [ADDRESS]``; Ray is imported only here).

Each method is one task: the model, the tokenizer, the MLM and the consistency models go to
Ray's object store once and every task reads them from there (a cluster's nodes need no model
cache of their own); the driver has already encoded the examples and predicted their classes,
and hands those over too, so a task computes only its method. Tasks take one CPU each
(``cpus_per_method``) and run one torch thread per CPU; at most ``num_actors`` run at once.

A task whose worker dies (a killed process, a lost node) is run again by Ray
(``max_retries``); its result is read only once it completes, so a method is never lost or
counted twice, and a rerun gives the same numbers (every method starts from the same seed).
An error inside a method is returned as that method's failure, as in one process.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from captum_erasure.benchmark.method_run import Consistency, MethodRun, run_method
from captum_erasure.benchmark.runners import MethodContext
from captum_erasure.scale.corpus_run import connect_ray

RETRIES = 3  # reruns of a task whose worker died
CAPTURE_HOOKS = "transformers.utils.output_capturing"


@contextmanager
def _picklable(modules: Sequence[Any]) -> Iterator[None]:
    """While inside, ``modules`` pickle: transformers installs forward hooks that capture
    hidden states (closures over a ContextVar, which pickle refuses) on a model's first call
    with ``output_hidden_states``; they are taken off and put back afterwards, and the copies
    Ray sends install their own when they need them. Any other hook stays."""
    saved: list[tuple[dict, dict]] = []  # a hook dict and its contents before
    flagged = []
    for module in modules:
        for sub in module.modules() if isinstance(module, nn.Module) else ():
            if getattr(sub, "_output_capturing_hooks_installed", False):
                flagged.append(sub)
                sub._output_capturing_hooks_installed = False
            keys = [key for key, hook in sub._forward_hooks.items()
                    if getattr(hook, "__module__", "") == CAPTURE_HOOKS]
            if not keys:
                continue
            for name in ("_forward_hooks", "_forward_hooks_with_kwargs",
                         "_forward_hooks_always_called"):
                hooks = getattr(sub, name)
                saved.append((hooks, dict(hooks)))
                for key in keys:
                    hooks.pop(key, None)
    try:
        yield
    finally:
        for hooks, before in saved:  # in place: hook handles hold these dicts
            hooks.clear()
            hooks.update(before)
        for sub in flagged:
            sub._output_capturing_hooks_installed = True


def _register_unpickled(modules: Sequence[Any]) -> None:
    """transformers (5.x) registers what a model class can capture (its hidden states) when an
    instance is constructed; an instance unpickled in a fresh process skips that, and would
    return no hidden states. Register them as the constructor would."""
    try:
        from transformers import PreTrainedModel
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # transformers 4.x: nothing is registered per class
        return
    for module in modules:
        for sub in module.modules() if isinstance(module, nn.Module) else ():
            if isinstance(sub, PreTrainedModel) and not _CAN_RECORD_REGISTRY.get(sub):
                _CAN_RECORD_REGISTRY[sub] = sub._can_record_outputs


def _method_task(shared: dict, method: str, threads: int) -> MethodRun:
    """The body of one task: rebuild the method context from the shared objects and run."""
    torch.set_num_threads(threads)
    consistency = shared["consistency"]
    _register_unpickled([shared["model"], shared["mlm"],
                         *(consistency.models.values() if consistency is not None else ())])
    ctx = MethodContext(shared["model"], shared["tokenizer"], shared["examples"],
                        shared["targets"], shared["settings"], shared["seed"], shared["mlm"],
                        show_progress=False)
    return run_method(ctx, method, valences=shared["valences"],
                      activations=shared["activations"], confidences=shared["confidences"],
                      consistency=shared["consistency"])


def run_methods(ctx: MethodContext, methods: Sequence[str], *, valences: dict | None,
                activations: torch.Tensor, confidences: Sequence[float],
                consistency: Consistency | None, address: str | None = None,
                num_actors: int | None = None, options: dict | None = None,
                on_done: Callable[[MethodRun], None] | None = None) -> list[MethodRun]:
    """Every method of ``methods`` as one Ray task; the runs in the order of ``methods``.

    ``address`` joins a cluster, else a local Ray is started and stopped; ``num_actors``:
    methods at once (default: one per CPU of the cluster); ``options``: ``num_cpus`` (local
    Ray), ``cpus_per_method``, ``runtime_env``; ``on_done`` is called with each run as it
    finishes."""
    import ray
    options = dict(options or {})
    started = connect_ray(address, options)
    try:
        cpus = ray.cluster_resources().get("CPU", 1)
        per_method = options.get("cpus_per_method", 1)
        if num_actors is None:
            num_actors = max(1, int(cpus // per_method))
        if num_actors < 1:
            raise ValueError(f"num_actors must be >= 1, got {num_actors}")
        others = list(consistency.models.values()) if consistency is not None else []
        with _picklable([ctx.model, ctx.mlm, *others]):
            shared = ray.put(dict(
                model=ctx.model, tokenizer=ctx.tokenizer, examples=ctx.examples,
                targets=ctx.targets, settings=ctx.settings, seed=ctx.seed, mlm=ctx.mlm,
                valences=valences, activations=activations, confidences=list(confidences),
                consistency=consistency))
        task = ray.remote(_method_task).options(num_cpus=per_method, max_retries=RETRIES)
        threads = max(1, round(per_method))
        pending, refs = list(methods), {}
        runs: dict[str, MethodRun] = {}
        with tqdm(total=len(methods), desc="methods on Ray", unit="method",
                  disable=not ctx.show_progress) as bar:
            while pending or refs:
                while pending and len(refs) < num_actors:
                    method = pending.pop(0)
                    refs[task.remote(shared, method, threads)] = method
                done, _ = ray.wait(list(refs), num_returns=1)
                method = refs.pop(done[0])
                runs[method] = ray.get(done[0])
                if on_done is not None:
                    on_done(runs[method])
                bar.update()
        return [runs[m] for m in methods]
    finally:
        if started:
            ray.shutdown()
