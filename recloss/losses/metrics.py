"""The retrieval metrics' specs: ``ndcg``, ``mrr``, ``recall``, ``precision``, ``hit_rate``, ``map`` and ``dcg``
(values only).

They take the ranking family's inputs (``scores`` ``[B, L]``, ``labels`` ``[B, L]``, ``mask``, ``sample_weight``,
``reduction``) and a cutoff ``k``; ``L`` may be a whole catalogue (a ``[B, N]`` retrieval score block with a
few relevant items per row): only the top ``k`` of each row are selected (``top_k``), the row is never sorted.
Ranks are 1-based over the valid items, by score, ties by position (the earlier item first). An item is
*relevant* when its label is >= 1 (as in rax and TF-Ranking); NDCG and DCG use the graded gain ``2^y - 1``.
"""

from __future__ import annotations

from recloss._spec import Case, LossSpec, Option
from recloss.losses._shared import REDUCTION, SAMPLE_WEIGHT
from recloss.losses.ranking import LABELS, MASK, SCORES

K = Option("k", None, "optional_count", annotation="int | None",
           doc="Cutoff: only the k best-scored valid items of each list count (k larger than the list = the "
               "whole list); None = the whole list.")

RETURNS = ("The metric, averaged over lists by `reduction`: a 0-d tensor of the inputs' framework (``[B]`` with "
           "``reduction=\"none\"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating "
           "input is float64. Values only: no gradient flows through it.")

CASES = (Case("whole list, no mask"), Case("k=3, mask, weights", {"mask": 0, "sample_weight": 0}, {"k": 3}),
         Case("k=1, mask, none", {"mask": 0}, {"k": 1, "reduction": "none"}))


#: The metric each recloss metric agrees with (rax's, except hit rate).
ANCHORS = {"map": "rax.ap_metric", "hit_rate": "TF-Ranking, metrics_impl.py::HitsMetric"}


def _metric(name: str, summary: str, math: str, example: str) -> LossSpec:
    return LossSpec(
        name=name, summary=summary, math=math, args=(SCORES, LABELS, MASK, SAMPLE_WEIGHT), options=(K, REDUCTION),
        positional=("scores", "labels"), keywords=("k", "mask", "sample_weight", "reduction"), returns=RETURNS,
        cases=CASES, example=example, references=(ANCHORS.get(name, f"rax.{name}_metric"),), value_only=True)


NDCG = _metric(
    "ndcg", "Normalised discounted cumulative gain at k.",
    "DCG@k = sum_{i in V, rank_i <= k} (2^y_i - 1) / log2(1 + rank_i);  ndcg = DCG@k / IDCG@k, IDCG@k = the "
    "DCG@k of the list ordered by label;  0 when IDCG@k = 0",
    "recloss.metrics.ndcg(scores, labels, k=10)")
MRR = _metric(
    "mrr", "Reciprocal rank of the first relevant item (label >= 1) within the top k.",
    "mrr = max_{i in V, y_i >= 1, rank_i <= k} 1 / rank_i;  0 when there is none",
    "recloss.metrics.mrr(scores, labels, k=10)")
RECALL = _metric(
    "recall", "Share of the list's relevant items (label >= 1) ranked within the top k.",
    "recall = #{i in V: y_i >= 1, rank_i <= k} / #{i in V: y_i >= 1};  0 when the list has no relevant item",
    "recloss.metrics.recall(scores, labels, k=100)")
PRECISION = _metric(
    "precision", "Share of relevant items (label >= 1) among the top k.",
    "precision = #{i in V: y_i >= 1, rank_i <= k} / min(k, |V|);  0 when V is empty",
    "recloss.metrics.precision(scores, labels, k=10)")
HIT_RATE = _metric(
    "hit_rate", "1 if any relevant item (label >= 1) is ranked within the top k, else 0.",
    "hit_rate = 1 if #{i in V: y_i >= 1, rank_i <= k} > 0 else 0",
    "recloss.metrics.hit_rate(scores, labels, k=10)")

MAP = _metric(
    "map", "Average precision at k (mean average precision over the lists), rax's definition.",
    "AP@k = (1 / #{i in V: y_i >= 1}) sum_{i in V, y_i >= 1, rank_i <= k} precision@rank_i,  precision@r = "
    "#{j in V: y_j >= 1, rank_j <= r} / r;  0 when the list has no relevant item (the denominator counts every "
    "relevant item, retrieved or not)",
    "recloss.metrics.map(scores, labels, k=10)")
DCG = _metric(
    "dcg", "Discounted cumulative gain at k (not normalised), rax's definition.",
    "DCG@k = sum_{i in V, rank_i <= k} (2^y_i - 1) / log2(1 + rank_i)",
    "recloss.metrics.dcg(scores, labels, k=10)")

METRICS = (NDCG, MRR, RECALL, PRECISION, HIT_RATE, MAP, DCG)
