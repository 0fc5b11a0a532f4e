"""The catalogue: one :class:`~recloss._spec.LossSpec` per loss, the single source of truth, one module per
family (``softmax``, ``pairwise``; ``_shared`` holds what they share).

Dimension names: B = batch rows, D = embedding size, K = negatives per row, N = negatives shared by all
rows, M = a free length.
"""

from __future__ import annotations

from recloss._spec import LossSpec
from recloss.losses import pairwise, softmax

CATALOGUE: dict[str, LossSpec] = {spec.name: spec for spec in (
    pairwise.SIGMOID_CROSS_ENTROPY, softmax.UNSUPERVISED_SOFTMAX, softmax.SOFTMAX, softmax.SAMPLED_SOFTMAX,
    softmax.INFO_NCE, pairwise.BPR, pairwise.HINGE, pairwise.TRIPLET)}

__all__ = ["CATALOGUE"]
