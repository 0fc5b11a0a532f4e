"""The catalogue: one :class:`~recloss._spec.LossSpec` per loss, the single source of truth, one module per
family (``softmax``, ``pairwise``, ``ranking``; ``_shared`` holds what they share), and the specs of the
retrieval metrics (``metrics``: values only, public in :mod:`recloss.metrics`).

Dimension names: B = batch rows (lists), D = embedding size, K = negatives per row, N = negatives shared by all
rows, M = a free length, L = items per ranked list (or the catalogue of a retrieval score block).
"""

from __future__ import annotations

from recloss._spec import LossSpec
from recloss.losses import metrics, pairwise, ranking, softmax

#: The losses (every entry has a gradient).
CATALOGUE: dict[str, LossSpec] = {spec.name: spec for spec in (
    pairwise.SIGMOID_CROSS_ENTROPY, softmax.UNSUPERVISED_SOFTMAX, softmax.SOFTMAX, softmax.SAMPLED_SOFTMAX,
    softmax.INFO_NCE, softmax.MULTI_POSITIVE, pairwise.BPR, pairwise.HINGE, pairwise.TRIPLET, pairwise.GBCE,
    *ranking.LOSSES)}

#: The metrics (``value_only``), public in :mod:`recloss.metrics`.
METRICS: dict[str, LossSpec] = {spec.name: spec for spec in metrics.METRICS}

#: Everything validation, the parity engine and ``recloss validate`` cover: losses, then metrics.
SPECS: dict[str, LossSpec] = {**CATALOGUE, **METRICS}

__all__ = ["CATALOGUE", "METRICS", "SPECS"]
