"""Float64 NumPy references: the oracle every backend is compared with (the ``"numpy"`` backend).

Written to be obviously right rather than fast, one module per family of losses (and one for the metrics);
nothing here is shared with the kernels in :mod:`recloss.kernels`. Every function takes the public arguments
(NumPy arrays, ``backend`` excluded) and returns a 0-d float64 array, or the ``[B]`` vector for
``reduction="none"``.
"""

from __future__ import annotations

from typing import Any, Callable

from recloss.reference import metrics, pairwise, ranking, softmax
from recloss.reference.softmax import graphlearn_softmax_cross_entropy

REFERENCES: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    pairwise.sigmoid_cross_entropy_loss, softmax.softmax_loss, softmax.sampled_softmax_loss,
    softmax.unsupervised_softmax_cross_entropy_loss, softmax.info_nce_loss, softmax.multi_positive_softmax_loss,
    pairwise.bpr_loss, pairwise.hinge_loss, pairwise.triplet_margin_loss, pairwise.gbce_loss, ranking.listwise_softmax_loss, ranking.poly1_softmax_loss, ranking.listmle_loss,
    ranking.approx_ndcg_loss, ranking.pairwise_logistic_loss, ranking.pairwise_hinge_loss,
    ranking.pairwise_soft_zero_one_loss, ranking.pointwise_sigmoid_loss, metrics.ndcg, metrics.mrr,
    metrics.recall, metrics.precision, metrics.hit_rate, metrics.map, metrics.dcg)}

__all__ = ["REFERENCES", "graphlearn_softmax_cross_entropy", "metrics", "pairwise", "ranking", "softmax"]
