"""The losses' math, written once against a small set of array operations (:class:`Ops`) that each backend
supplies, one module per family of losses:

``_common``   the ``Ops`` protocol, casting to the compute dtype, reductions, the non-finite guard
``softmax``   softmax rows, the retrieval softmax (materialised or streaming) and its four losses
``multi_positive``  softmax rows with several positives (``multi_positive_softmax_loss``)
``pairwise``  the sigmoid, BPR, hinge, triplet and gBCE losses
``ranking``   listwise, pairwise and pointwise losses over lists with graded labels
``metrics``   the retrieval metrics (values only)

Numerics, the same on every backend: half-precision inputs are cast to float32 first, float64 stays float64
(``bound.dtype``); means over nothing are 0, never NaN; a non-finite input makes the loss NaN.
"""

from __future__ import annotations

from typing import Any, Callable

from recloss.kernels import metrics, multi_positive, pairwise, ranking, softmax
from recloss.kernels._common import Ops, split_arguments

#: loss (or metric) name -> ``kernel(ops, bound, **arguments)``; each backend binds its ``Ops``.
KERNELS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (pairwise.sigmoid_cross_entropy_loss, softmax.softmax_loss, softmax.sampled_softmax_loss,
                            softmax.unsupervised_softmax_cross_entropy_loss, softmax.info_nce_loss,
                            multi_positive.multi_positive_softmax_loss, pairwise.bpr_loss, pairwise.hinge_loss,
                            pairwise.triplet_margin_loss, pairwise.gbce_loss,
                            ranking.listwise_softmax_loss, ranking.poly1_softmax_loss, ranking.listmle_loss,
                            ranking.approx_ndcg_loss, ranking.pairwise_logistic_loss, ranking.pairwise_hinge_loss,
                            ranking.pairwise_soft_zero_one_loss, ranking.pointwise_sigmoid_loss,
                            metrics.ndcg, metrics.mrr, metrics.recall, metrics.precision, metrics.hit_rate,
                            metrics.map, metrics.dcg)
}



def settings() -> tuple:
    """The module-level settings kernels read while they are traced: part of the key under which a backend
    caches a compiled kernel, so that changing one (as the tests do) takes effect."""
    return (softmax.STREAMING_MIN_LOGITS, softmax.STREAMING_CHUNK, softmax.STREAMING_STORE_BYTES,
            ranking.PAIR_BLOCK_ELEMENTS)


__all__ = ["KERNELS", "Ops", "metrics", "multi_positive", "pairwise", "ranking", "softmax", "settings",
           "split_arguments"]
