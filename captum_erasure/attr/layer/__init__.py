"""Erasure of a layer's hidden units (as Captum keeps ``LayerFeatureAblation`` apart)."""

from captum_erasure.attr._unit_erasure import DatasetImportance
from captum_erasure.attr.layer.hidden_units import HiddenUnitErasure

__all__ = ["HiddenUnitErasure", "DatasetImportance"]
