"""Float64 references of the retrieval metrics, list by list: sort the valid items by score (ties by position),
cut at k, count (nothing is shared with the kernels)."""

from __future__ import annotations

import numpy as np

from recloss.reference._common import reduce
from recloss.reference.ranking import discount, gain, gain_unit, ideal_dcg, valid_lists


def _top(s, y, k):
    """Labels of the valid items in ranked order (score descending, ties by position), the first k."""
    order = sorted(range(len(s)), key=lambda i: (-s[i], i))
    return [y[i] for i in order][:k]


def _metric(per_list, scores, labels, mask, k, sample_weight, reduction):
    lists, entered = valid_lists(scores, labels, mask)
    rows = np.array([per_list(s, y, k) for s, y in lists], dtype=np.float64)
    return reduce(rows, sample_weight, reduction, entered)


def _ndcg(s, y, k):
    ideal = ideal_dcg(y, k)
    if ideal == 0:
        return 0.0
    return sum(gain(label, gain_unit(y)) * discount(r + 1) for r, label in enumerate(_top(s, y, k))) / ideal


def _mrr(s, y, k):
    for r, label in enumerate(_top(s, y, k)):
        if label >= 1:
            return 1.0 / (r + 1)
    return 0.0


def _recall(s, y, k):
    relevant = sum(1 for label in y if label >= 1)
    return sum(1 for label in _top(s, y, k) if label >= 1) / relevant if relevant else 0.0


def _precision(s, y, k):
    retrieved = len(_top(s, y, k))
    return sum(1 for label in _top(s, y, k) if label >= 1) / retrieved if retrieved else 0.0


def _hit_rate(s, y, k):
    return 1.0 if any(label >= 1 for label in _top(s, y, k)) else 0.0


def _average_precision(s, y, k):
    relevant = sum(1 for label in y if label >= 1)
    if relevant == 0:
        return 0.0
    hits, total = 0, 0.0
    for r, label in enumerate(_top(s, y, k)):
        if label >= 1:
            hits += 1
            total += hits / (r + 1)       # precision at this relevant item's rank
    return total / relevant


def _dcg(s, y, k):
    return sum(gain(label, 0.0) * discount(r + 1) for r, label in enumerate(_top(s, y, k)))   # 2^label - 1


def ndcg(scores, labels, *, k=None, mask=None, sample_weight=None, reduction="mean"):
    return _metric(_ndcg, scores, labels, mask, k, sample_weight, reduction)


def mrr(scores, labels, *, k=None, mask=None, sample_weight=None, reduction="mean"):
    return _metric(_mrr, scores, labels, mask, k, sample_weight, reduction)


def recall(scores, labels, *, k=None, mask=None, sample_weight=None, reduction="mean"):
    return _metric(_recall, scores, labels, mask, k, sample_weight, reduction)


def precision(scores, labels, *, k=None, mask=None, sample_weight=None, reduction="mean"):
    return _metric(_precision, scores, labels, mask, k, sample_weight, reduction)


def hit_rate(scores, labels, *, k=None, mask=None, sample_weight=None, reduction="mean"):
    return _metric(_hit_rate, scores, labels, mask, k, sample_weight, reduction)


def map(scores, labels, *, k=None, mask=None, sample_weight=None, reduction="mean"):  # noqa: A001 - the metric's name
    return _metric(_average_precision, scores, labels, mask, k, sample_weight, reduction)


def dcg(scores, labels, *, k=None, mask=None, sample_weight=None, reduction="mean"):
    return _metric(_dcg, scores, labels, mask, k, sample_weight, reduction)
