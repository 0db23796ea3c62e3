"""Erasures that flip the decision: greedy, and Li et al.'s minimal erasure (section 5)."""

from captum_erasure.attr.flip._common import FlipResult
from captum_erasure.attr.flip.greedy import greedy_flip
from captum_erasure.attr.flip.minimal_erasure import MinimalErasure

__all__ = ["FlipResult", "greedy_flip", "MinimalErasure"]
