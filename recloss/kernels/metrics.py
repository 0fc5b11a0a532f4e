"""The retrieval metrics (values only): ``ndcg``, ``mrr``, ``recall``, ``precision``, ``hit_rate``, ``map``, ``dcg``.

Each list's top ``k`` valid items come from ``top_k`` (ties: the earlier item first), so a ``[B, N]`` score
block against a whole catalogue costs a selection, never a sort of the row; the labels of the selected items
are gathered and counted. Scores are cut from the gradient (a metric is piecewise constant in them).
"""

from __future__ import annotations

from typing import Any

from recloss._spec import Bound
from recloss.kernels._common import NEG_INF, Ops, known_only_at_run_time, reduce_rows
from recloss.kernels.ranking import (count, discount, gain_unit, gains, ideal_dcg, list_inputs, list_size,
                                    no_items, safe_divide)

RELEVANT = 1.0  #: an item is relevant when its label is at least this (rax, TF-Ranking)


def cutoff(ops: Ops, x: Any, k: int | None) -> Any:
    """``min(k, L)`` (``L`` for k None): an int, or a scalar tensor where ``L`` is known only at run time."""
    size = list_size(ops, x)
    if k is None:
        return size
    return ops.minimum(k, size) if known_only_at_run_time(size) else min(k, size)


def top_labels(ops: Ops, s: Any, y: Any, valid: Any, k: Any) -> tuple[Any, Any]:
    """``([B, k] labels of the k best-scored valid items in rank order, [B, k] True where a valid item is
    there)``; a list with fewer than k valid items has False (and label 0) in its last places."""
    values, indices = ops.top_k_with_indices(ops.where(valid, s, NEG_INF), k)
    retrieved = values > NEG_INF
    return ops.where(retrieved, ops.gather(y, indices), 0.0), retrieved


def _prepare(ops: Ops, bound: Bound, scores: Any, labels: Any, mask: Any, sample_weight: Any, k: int | None):
    s, y, valid, w = list_inputs(ops, bound, scores, labels, mask, sample_weight)
    s, w = ops.stop_gradient(s), None if w is None else ops.stop_gradient(w)
    kept = cutoff(ops, s, k)
    labels_at, retrieved = top_labels(ops, s, y, valid, kept)
    return s, y, valid, w, kept, labels_at, retrieved


def _finish(ops: Ops, rows: Any, w: Any, reduction: str, inputs: tuple) -> Any:
    """The reduced metric, cut from the gradient (of the scores and of ``sample_weight``: values only)."""
    return ops.stop_gradient(reduce_rows(ops, rows, w, reduction, inputs))


def _hits(ops: Ops, bound: Bound, labels_at: Any, retrieved: Any) -> Any:
    """``[B]``: the number of relevant items among the retrieved ones."""
    return count(ops, ops.logical_and(retrieved, labels_at >= RELEVANT), bound.dtype, 1)


def ndcg(ops: Ops, bound: Bound, scores: Any, labels: Any, *, k: int | None, mask: Any, sample_weight: Any,
         reduction: str) -> Any:
    s, y, valid, w, kept, labels_at, retrieved = _prepare(ops, bound, scores, labels, mask, sample_weight, k)
    top = gain_unit(ops, y)
    dcg = ops.sum(gains(ops, labels_at, top) * discount(ops, ops.positions(labels_at) + 1.0), 1)
    return _finish(ops, safe_divide(ops, dcg, ideal_dcg(ops, y, kept, top)), w, reduction, (s, y))


def mrr(ops: Ops, bound: Bound, scores: Any, labels: Any, *, k: int | None, mask: Any, sample_weight: Any,
        reduction: str) -> Any:
    s, y, valid, w, kept, labels_at, retrieved = _prepare(ops, bound, scores, labels, mask, sample_weight, k)
    if no_items(ops, s):  # a maximum over nothing is undefined in torch and JAX
        return _finish(ops, ops.sum(labels_at, 1), w, reduction, (s, y))
    reciprocal = 1.0 / (ops.positions(labels_at) + 1.0)
    relevant = ops.logical_and(retrieved, labels_at >= RELEVANT)
    rows = ops.maximum(ops.max(ops.where(relevant, reciprocal, 0.0), 1), 0.0)  # TF's max over nothing is -inf
    return _finish(ops, rows, w, reduction, (s, y))


def recall(ops: Ops, bound: Bound, scores: Any, labels: Any, *, k: int | None, mask: Any, sample_weight: Any,
           reduction: str) -> Any:
    s, y, valid, w, kept, labels_at, retrieved = _prepare(ops, bound, scores, labels, mask, sample_weight, k)
    relevant = count(ops, ops.logical_and(valid, y >= RELEVANT), bound.dtype, 1)
    return _finish(ops, safe_divide(ops, _hits(ops, bound, labels_at, retrieved), relevant), w, reduction, (s, y))


def precision(ops: Ops, bound: Bound, scores: Any, labels: Any, *, k: int | None, mask: Any, sample_weight: Any,
              reduction: str) -> Any:
    s, y, valid, w, kept, labels_at, retrieved = _prepare(ops, bound, scores, labels, mask, sample_weight, k)
    rows = safe_divide(ops, _hits(ops, bound, labels_at, retrieved), count(ops, retrieved, bound.dtype, 1))
    return _finish(ops, rows, w, reduction, (s, y))


def hit_rate(ops: Ops, bound: Bound, scores: Any, labels: Any, *, k: int | None, mask: Any, sample_weight: Any,
             reduction: str) -> Any:
    s, y, valid, w, kept, labels_at, retrieved = _prepare(ops, bound, scores, labels, mask, sample_weight, k)
    rows = ops.cast(_hits(ops, bound, labels_at, retrieved) > 0, bound.dtype)
    return _finish(ops, rows, w, reduction, (s, y))


def map(ops: Ops, bound: Bound, scores: Any, labels: Any, *, k: int | None, mask: Any,  # noqa: A001 - its name
        sample_weight: Any, reduction: str) -> Any:
    """Average precision at k: the precision at each retrieved relevant item's rank (``cumsum`` of the hits in
    rank order over the rank), summed and divided by the list's number of relevant items (rax)."""
    s, y, valid, w, kept, labels_at, retrieved = _prepare(ops, bound, scores, labels, mask, sample_weight, k)
    hits = ops.cast(ops.logical_and(retrieved, labels_at >= RELEVANT), bound.dtype)
    precisions = ops.cumsum(hits) / (ops.positions(hits) + 1.0)
    relevant = count(ops, ops.logical_and(valid, y >= RELEVANT), bound.dtype, 1)
    return _finish(ops, safe_divide(ops, ops.sum(hits * precisions, 1), relevant), w, reduction, (s, y))


def dcg(ops: Ops, bound: Bound, scores: Any, labels: Any, *, k: int | None, mask: Any, sample_weight: Any,
        reduction: str) -> Any:
    """DCG at k: the numerator of :func:`ndcg`."""
    s, y, valid, w, kept, labels_at, retrieved = _prepare(ops, bound, scores, labels, mask, sample_weight, k)
    rows = ops.sum(gains(ops, labels_at, 0.0) * discount(ops, ops.positions(labels_at) + 1.0), 1)
    return _finish(ops, rows, w, reduction, (s, y))
