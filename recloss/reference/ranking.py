"""Float64 references of the ranking family, written list by list over the valid items, as the catalogue states
the math: sorts, explicit pairs and plain log-sum-exps (nothing is shared with the kernels)."""

from __future__ import annotations

import math

import numpy as np

from recloss.reference._common import f64, reduce, softplus


def valid_lists(scores, labels, mask):
    """Per list, the valid items' ``(scores, labels)`` in their original order; and every valid entry (for the
    rule that a non-finite value that enters the loss makes it NaN)."""
    s, y = f64(scores), f64(labels)
    keep = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
    lists = [(s[b][keep[b]], y[b][keep[b]]) for b in range(s.shape[0])]
    return lists, (s[keep], y[keep])


def gain(label: float, top: float) -> float:
    """``(2^label - 1) / 2^top``, with ``top`` the list's largest label (:func:`gain_unit`): a list's NDCG and
    lambda weights are ratios of its gains, and ``2^label`` alone overflows float64 from 1024."""
    return 2.0 ** (label - top) - 2.0 ** -top


def gain_unit(labels) -> float:
    """The unit of a list's gains: its largest label (0 if none is positive)."""
    return max([0.0, *labels])


def discount(rank: float) -> float:
    """``1 / log2(1 + rank)`` of a 1-based rank."""
    return 1.0 / math.log2(1.0 + rank)


def sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def ideal_dcg(labels, k=None) -> float:
    """DCG of the list in its ideal order (labels descending), over the first k positions, in its gain unit."""
    ordered, top = sorted(labels, reverse=True)[:k], gain_unit(labels)
    return sum(gain(y, top) * discount(r + 1) for r, y in enumerate(ordered))


def ranks_by_score(scores) -> list[int]:
    """1-based rank of each item by score, descending, ties by position."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ranks = [0] * len(scores)
    for position, i in enumerate(order):
        ranks[i] = position + 1
    return ranks


# ----------------------------------------------------------------------------------------------------------
# Listwise


def logsumexp_minus(z: np.ndarray, j: int) -> float:
    """``logsumexp(z) - z[j]`` as ``(m - z[j]) + log1p(sum of exp(v - m) over every v but one maximum m)``: a
    confident list (z[j] far above the rest) keeps its ``~ exp(-gap)`` below float64's resolution of 1."""
    top = int(np.argmax(z))
    return float(z[top] - z[j] + np.log1p(np.sum(np.exp(np.delete(z, top) - z[top]))))


def _softmax_row(s, y, temperature):
    if len(s) == 0:
        return 0.0
    z = s / temperature
    return float(sum(y[i] * logsumexp_minus(z, i) for i in range(len(z))))


def listwise_softmax_loss(scores, labels, *, mask=None, temperature=1.0, sample_weight=None, reduction="mean"):
    temperature = float(np.asarray(temperature))
    lists, entered = valid_lists(scores, labels, mask)
    rows = np.array([_softmax_row(s, y, temperature) for s, y in lists])
    return reduce(rows, sample_weight, reduction, entered)


def poly1_softmax_loss(scores, labels, *, mask=None, epsilon=1.0, temperature=1.0, sample_weight=None,
                       reduction="mean"):
    temperature = float(np.asarray(temperature))
    lists, entered = valid_lists(scores, labels, mask)
    rows = []
    for s, y in lists:
        total = float(np.sum(y))
        if total == 0:
            rows.append(0.0)
            continue
        z = s / temperature
        p = np.exp([-logsumexp_minus(z, i) for i in range(len(z))])
        p_t = float(np.sum(y / total * p))
        rows.append(_softmax_row(s, y, temperature) + epsilon * (1.0 - p_t))
    return reduce(np.array(rows), sample_weight, reduction, entered)


def listmle_loss(scores, labels, *, mask=None, sample_weight=None, reduction="mean"):
    lists, entered = valid_lists(scores, labels, mask)
    rows = []
    for s, y in lists:
        order = sorted(range(len(s)), key=lambda i: (-y[i], i))
        ordered = s[order]
        rows.append(sum(logsumexp_minus(ordered[k:], 0) for k in range(len(ordered))))
    return reduce(np.array(rows, dtype=np.float64), sample_weight, reduction, entered)


def approx_ndcg_loss(scores, labels, *, mask=None, temperature=1.0, sample_weight=None, reduction="mean"):
    temperature = float(np.asarray(temperature))
    lists, entered = valid_lists(scores, labels, mask)
    rows = []
    for s, y in lists:
        ideal = ideal_dcg(y)
        if ideal == 0:
            rows.append(0.0)
            continue
        n, top = len(s), gain_unit(y)
        ranks = [1.0 + sum(sigmoid((s[j] - s[i]) / temperature) for j in range(n) if j != i) for i in range(n)]
        rows.append(-sum(gain(y[i], top) * discount(ranks[i]) for i in range(n)) / ideal)
    return reduce(np.array(rows, dtype=np.float64), sample_weight, reduction, entered)


# ----------------------------------------------------------------------------------------------------------
# Pairwise


def lambda_weight(kind, y, ranks, i, j, ideal):
    """The pair weight of (i, j) for ``lambdaweight`` ``kind`` (None, "ndcg", "ndcg2")."""
    if kind is None:
        return 1.0
    top = gain_unit(y)
    gains = abs(gain(y[i], top) - gain(y[j], top)) / ideal
    if kind == "ndcg":
        return gains * abs(discount(ranks[i]) - discount(ranks[j]))
    apart = abs(ranks[i] - ranks[j])
    return gains * abs(discount(apart) - discount(apart + 1))


def _pairwise(pair_loss, scores, labels, mask, lambdaweight, sample_weight, reduction):
    lists, entered = valid_lists(scores, labels, mask)
    rows = []
    for s, y in lists:
        ranks, ideal = ranks_by_score(s), ideal_dcg(y)
        pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if y[i] > y[j]]
        total = sum(lambda_weight(lambdaweight, y, ranks, i, j, ideal) * pair_loss(s[i] - s[j]) for i, j in pairs)
        rows.append(total / max(len(pairs), 1))
    return reduce(np.array(rows, dtype=np.float64), sample_weight, reduction, entered)


def pairwise_logistic_loss(scores, labels, *, mask=None, lambdaweight=None, sample_weight=None, reduction="mean"):
    return _pairwise(lambda d: float(softplus(-d)), scores, labels, mask, lambdaweight, sample_weight, reduction)


def pairwise_hinge_loss(scores, labels, *, mask=None, margin=1.0, lambdaweight=None, sample_weight=None,
                        reduction="mean"):
    return _pairwise(lambda d: max(0.0, margin - d), scores, labels, mask, lambdaweight, sample_weight, reduction)


def pairwise_soft_zero_one_loss(scores, labels, *, mask=None, lambdaweight=None, sample_weight=None,
                                reduction="mean"):
    return _pairwise(lambda d: sigmoid(-d), scores, labels, mask, lambdaweight, sample_weight, reduction)


# ----------------------------------------------------------------------------------------------------------
# Pointwise


def pointwise_sigmoid_loss(scores, labels, *, mask=None, sample_weight=None, reduction="mean"):
    lists, entered = valid_lists(scores, labels, mask)
    rows = [float(np.sum(y * softplus(-s) + (1.0 - y) * softplus(s))) / max(len(s), 1) for s, y in lists]
    return reduce(np.array(rows, dtype=np.float64), sample_weight, reduction, entered)
