"""The pairwise family: a positive against its negatives one pair at a time (``sigmoid_cross_entropy_loss``,
``bpr_loss``, ``hinge_loss``) and the triplet margin loss on embeddings with a choice of distance."""

from __future__ import annotations

from typing import Any

from recloss._spec import Bound
from recloss.kernels._common import (Ops, known_only_at_run_time, l2_normalize, nonfinite_guard, reduce_rows,
                                     safe_mean, safe_sqrt, scalar, upcast)


def pairwise_negatives(bound: Bound, neg: Any) -> Any:
    """``[B]`` negatives as ``[B, 1]``; ``[B, K]`` as they are."""
    return neg[:, None] if bound.form("neg_logit") == ("B",) else neg


def distance(ops: Ops, a: Any, b: Any, kind: str) -> Any:
    """Row distances along the last axis: ``l2``, ``squared_l2``, ``l1`` or ``cosine`` (1 - cosine similarity)."""
    if kind == "cosine":
        return 1.0 - ops.sum(l2_normalize(ops, a) * l2_normalize(ops, b), -1)
    diff = a - b
    if kind == "l1":
        return ops.sum(ops.abs(diff), -1)
    squared = ops.sum(diff * diff, -1)
    return squared if kind == "squared_l2" else safe_sqrt(ops, squared)


# ----------------------------------------------------------------------------------------------------------
# The losses. Each takes (ops, bound, **arguments) and returns the reduced loss.


def sigmoid_cross_entropy_loss(ops: Ops, bound: Bound, pos_logit: Any, neg_logit: Any, *, sample_weight: Any,
                               reduction: str) -> Any:
    pos, neg, weight = (upcast(ops, bound, x) for x in (pos_logit, neg_logit, sample_weight))
    one_dim = bound.form("neg_logit") in (("M",), ("B",))
    if bound.form("neg_logit") == ("M",) or (one_dim and reduction == "mean" and weight is None):
        # A [B] `neg_logit` under the default reduction gives the same number as the [M] formula, which is
        # therefore also right when B and M are unknown at trace time and the validator could not tell them apart.
        value = safe_mean(ops, ops.softplus(-pos), 0) + safe_mean(ops, ops.softplus(neg), 0)
        batch = ops.size(pos, 0)    # no positive row (B = 0): 0, as every loss gives for an empty batch
        if known_only_at_run_time(batch):
            value = ops.where(batch > 0, value, 0.0)
        elif batch == 0:
            value = value * 0.0
        return value + nonfinite_guard(ops, pos, neg)
    rows = ops.softplus(-pos) + safe_mean(ops, ops.softplus(pairwise_negatives(bound, neg)), 1)
    return reduce_rows(ops, rows, weight, reduction, (pos, neg))


def bpr_loss(ops: Ops, bound: Bound, pos_logit: Any, neg_logit: Any, *, sample_weight: Any,
             reduction: str) -> Any:
    pos, neg, weight = (upcast(ops, bound, x) for x in (pos_logit, neg_logit, sample_weight))
    rows = safe_mean(ops, ops.softplus(pairwise_negatives(bound, neg) - pos[:, None]), 1)
    return reduce_rows(ops, rows, weight, reduction, (pos, neg))


def hinge_loss(ops: Ops, bound: Bound, pos_logit: Any, neg_logit: Any, *, margin: float, sample_weight: Any,
               reduction: str) -> Any:
    pos, neg, weight = (upcast(ops, bound, x) for x in (pos_logit, neg_logit, sample_weight))
    rows = safe_mean(ops, ops.relu(scalar(ops, bound, margin) - pos[:, None] + pairwise_negatives(bound, neg)), 1)
    return reduce_rows(ops, rows, weight, reduction, (pos, neg))


def triplet_margin_loss(ops: Ops, bound: Bound, src_emb: Any, pos_emb: Any, neg_emb: Any, *, margin: float,
                        distance: str, sample_weight: Any, reduction: str) -> Any:
    s, p, n, weight = (upcast(ops, bound, x) for x in (src_emb, pos_emb, neg_emb, sample_weight))
    if bound.form("neg_emb") == ("B", "D"):
        n = n[:, None, :]
    d_pos = _distance(ops, s, p, distance)
    d_neg = _distance(ops, s[:, None, :], n, distance)
    rows = safe_mean(ops, ops.relu(scalar(ops, bound, margin) + d_pos[:, None] - d_neg), 1)
    return reduce_rows(ops, rows, weight, reduction, (s, p, n))


_distance = distance


def gbce_loss(ops: Ops, bound: Bound, pos_logit: Any, neg_logit: Any, *, num_items: int, t: float, neg_mask: Any,
              sample_weight: Any, reduction: str) -> Any:
    """gBCE: ``(beta softplus(-s_pos) + sum_kept softplus(s_k)) / (1 + K_i)``, ``beta = 1 - t (1 - alpha)``,
    ``alpha = K / (num_items - 1)`` with K the number of negative columns (the sampling rate). The softplus form
    is the paper's ``-log(sigmoid(s_pos)^beta)``, stable in every precision (half inputs computed in float32),
    where gSASRec-pytorch transforms the positive logit in float64 with clamps."""
    pos, neg, weight = (upcast(ops, bound, x) for x in (pos_logit, neg_logit, sample_weight))
    num_neg = ops.size(neg, 1)
    negatives = ops.to_float(num_neg, pos) if known_only_at_run_time(num_neg) else float(num_neg)
    beta = 1.0 - float(t) * (1.0 - negatives / (int(num_items) - 1))
    if neg_mask is None:
        neg_terms, count = ops.softplus(neg), negatives
    else:
        neg = ops.where(neg_mask, neg, 0.0)   # removed entries may hold anything (inf, NaN)
        neg_terms = ops.where(neg_mask, ops.softplus(neg), 0.0)
        count = ops.sum(ops.cast(neg_mask, bound.dtype), 1)
    rows = (beta * ops.softplus(-pos) + ops.sum(neg_terms, 1)) / (1.0 + count)
    return reduce_rows(ops, rows, weight, reduction, (pos, neg))
