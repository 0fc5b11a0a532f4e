"""Softmax rows with several positives (``multi_positive_softmax_loss``): a ``[B, L]`` block of logits whose
entries with ``labels > 0`` are the row's positives and the other valid entries its negatives.

Both modes are a softplus of log-sum-exps over masked sets: ``"out"`` sums ``softplus(lse_N - s_p)`` over the
positives, ``"in"`` takes ``softplus(lse_N - lse_P)``. A masked log-sum-exp over an empty set is ``-inf`` and
``softplus(-inf) = 0`` with a zero gradient, so a row with no negative (or no positive, or no valid entry) has
loss 0 and no gradient; entries outside a set enter its exponentials as ``exp(-inf) = 0``, never as a large
number times 0, so no gradient is NaN whatever padded entries held.
"""

from __future__ import annotations

from typing import Any

from recloss._spec import Bound
from recloss.kernels._common import NEG_INF, Ops, reduce_rows, scalar
from recloss.kernels.ranking import list_inputs, no_items


def masked_logsumexp(ops: Ops, s: Any, members: Any) -> Any:
    """``[B]``: ``log(sum_{c: members} exp(s_c))`` per row, ``-inf`` where a row has no member; exact
    derivatives of every order (the shift, the members' maximum, carries no gradient and cancels)."""
    shift = ops.stop_gradient(ops.max(ops.where(members, s, NEG_INF), 1))
    empty = shift == NEG_INF
    shift = ops.where(empty, 0.0, shift)
    total = ops.sum(ops.exp(ops.where(members, s - shift[:, None], NEG_INF)), 1)
    return ops.where(empty, NEG_INF, shift + ops.log(ops.where(empty, 1.0, total)))


def multi_positive_softmax_loss(ops: Ops, bound: Bound, logits: Any, labels: Any, *, mode: str, mask: Any,
                                temperature: Any, sample_weight: Any, reduction: str) -> Any:
    s, y, valid, w = list_inputs(ops, bound, logits, labels, mask, sample_weight)
    if no_items(ops, s):    # L = 0: a maximum over nothing is undefined in torch and JAX
        return reduce_rows(ops, ops.sum(s, 1), w, reduction, (s, y))
    t = scalar(ops, bound, temperature)
    z = s if isinstance(t, float) and t == 1.0 else s / t
    positive = ops.logical_and(valid, y > 0)
    negative = ops.logical_and(valid, y <= 0)
    lse_negatives = masked_logsumexp(ops, z, negative)
    if mode == "out":   # every positive against the negatives alone
        terms = ops.softplus(ops.where(positive, lse_negatives[:, None] - z, NEG_INF))
        rows = ops.sum(terms, 1)
    else:               # the positives' total probability
        lse_positives = masked_logsumexp(ops, z, positive)
        has_positive = lse_positives > NEG_INF
        rows = ops.softplus(ops.where(has_positive, lse_negatives - ops.where(has_positive, lse_positives, 0.0),
                                      NEG_INF))
    return reduce_rows(ops, rows, w, reduction, (s, y))
