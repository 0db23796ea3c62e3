"""Faithfulness (ERASER, AOPC, deletion curves), AUC_rep and Atanasova et al.'s diagnostics.
Imports only :mod:`captum_erasure._core`."""

from captum_erasure.metrics.auc_rep import (
                                                ReplacementCurves,
                                                auc_rep,
                                                mlm_replacement_curves,
)
from captum_erasure.metrics.bootstrap import (
                                                BootstrapInterval,
                                                PairedComparison,
                                                bootstrap_interval,
                                                paired_bootstrap,
)
from captum_erasure.metrics.diagnostics import (
                                                MaskedPerformance,
                                                confidence_indication,
                                                dataset_consistency,
                                                human_agreement,
                                                model_activations,
                                                rationale_consistency,
)
from captum_erasure.metrics.faithfulness import (
                                                FaithfulnessMetrics,
                                                RemovalCurves,
                                                aopc,
                                                comprehensiveness,
                                                deletion_curve,
                                                removal_curves,
                                                sufficiency,
)

__all__ = ["FaithfulnessMetrics", "RemovalCurves", "aopc", "comprehensiveness",
           "deletion_curve", "removal_curves", "sufficiency", "ReplacementCurves", "auc_rep",
           "mlm_replacement_curves", "MaskedPerformance", "confidence_indication",
           "dataset_consistency", "human_agreement", "model_activations",
           "rationale_consistency", "BootstrapInterval", "PairedComparison",
           "bootstrap_interval", "paired_bootstrap"]
