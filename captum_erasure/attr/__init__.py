"""Attribution methods, one per module; each describes its perturbations to the engine in
:mod:`captum_erasure._core` and imports nothing else of the package."""

from captum_erasure.attr.diffmask import DiffMask, DiffMaskResult
from captum_erasure.attr.embedding_dimensions import EmbeddingDimensionErasure
from captum_erasure.attr.flip import FlipResult, MinimalErasure, greedy_flip
from captum_erasure.attr.generation import (
    ContinuationErasure,
    ContinuationScores,
    GenerationStats,
)
from captum_erasure.attr.information import InformationResult, WordInformation
from captum_erasure.attr.input_reduction import InputReduction, ReductionResult
from captum_erasure.attr.layer import DatasetImportance, HiddenUnitErasure
from captum_erasure.attr.marginalization import (
    InputMarginalization,
    MarginalizationResult,
    MarginalizationStats,
)
from captum_erasure.attr.vmask import VMask
from captum_erasure.attr.word_erasure import WordErasure, WordScores

__all__ = ["WordErasure", "WordScores", "EmbeddingDimensionErasure", "HiddenUnitErasure",
           "DatasetImportance", "InputMarginalization", "MarginalizationResult",
           "MarginalizationStats", "InputReduction", "ReductionResult", "MinimalErasure",
           "FlipResult", "greedy_flip", "DiffMask", "DiffMaskResult", "WordInformation",
           "InformationResult", "ContinuationErasure", "ContinuationScores", "GenerationStats",
           "VMask"]
