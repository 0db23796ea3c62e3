"""Method and metric settings of the benchmark (the full and the quick preset)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BenchmarkSettings:
    """Method and metric settings; :data:`FULL` and :data:`QUICK` are the two presets."""

    ig_steps: int = 50
    lit_ig_steps: int = 30
    lime_samples: int = 200
    kernel_shap_samples: int = 200
    shapley_samples: int = 10
    lit_lime_samples: int = 256
    marginalization_top_k: int = 10
    information_steps: int = 100   # WordInformation (Guan et al.): Adam steps per batch
    perturbations_per_eval: int = 64
    batch_size: int = 32           # examples per call of our batched methods and metrics
    fraction: float = 0.2          # comprehensiveness / sufficiency rationale share
    consistency_examples: int = 50
    dataset_pairs: int = 2000
    diffmask_steps: int = 300      # DiffMask fit steps (batches of 16 training snippets)
    diffmask_layer: int | None = None  # None: the last layer
    diffmask_cache: str | None = "outputs/diffmask/benchmark_probes"
    diffmask_probe: str | None = None  # a saved probe (DiffMask.save) explains instead of a fit


FULL = BenchmarkSettings()


QUICK = BenchmarkSettings(ig_steps=4, lit_ig_steps=4, lime_samples=16, kernel_shap_samples=16,
                          shapley_samples=2, lit_lime_samples=16, marginalization_top_k=2,
                          information_steps=10, batch_size=4, consistency_examples=6,
                          dataset_pairs=20, diffmask_steps=3, diffmask_cache=None)
