"""Float64 references of the pairwise family: sigmoid cross-entropy, BPR, hinge and triplet margin losses."""

from __future__ import annotations

import numpy as np

from recloss.reference._common import f64, l2_normalize, mean, reduce, softplus


def _as_rows(neg: np.ndarray, batch: int) -> np.ndarray:
    """Per-row negatives as ``[B, K]``: a ``[B]`` tensor is one negative per row."""
    return neg.reshape(batch, 1) if neg.ndim == 1 else neg


def sigmoid_cross_entropy_loss(pos_logit, neg_logit, *, sample_weight=None, reduction="mean"):
    pos, neg = f64(pos_logit), f64(neg_logit)
    if neg.ndim == 1 and neg.shape[0] != pos.shape[0]:
        value = mean(softplus(-pos)) + mean(softplus(neg)) if pos.size else 0.0   # an empty batch: 0
        return reduce(np.asarray(value), None, "sum", (pos, neg))
    rows = softplus(-pos) + mean(softplus(_as_rows(neg, pos.shape[0])), axis=1)
    return reduce(rows, sample_weight, reduction, (pos, neg))


def bpr_loss(pos_logit, neg_logit, *, sample_weight=None, reduction="mean"):
    pos, neg = f64(pos_logit), f64(neg_logit)
    rows = mean(softplus(_as_rows(neg, pos.shape[0]) - pos[:, None]), axis=1)
    return reduce(rows, sample_weight, reduction, (pos, neg))


def hinge_loss(pos_logit, neg_logit, *, margin=1.0, sample_weight=None, reduction="mean"):
    pos, neg = f64(pos_logit), f64(neg_logit)
    rows = mean(np.maximum(0.0, margin - pos[:, None] + _as_rows(neg, pos.shape[0])), axis=1)
    return reduce(rows, sample_weight, reduction, (pos, neg))


def _distance(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    if kind == "l2":
        return np.linalg.norm(a - b, axis=-1)
    if kind == "squared_l2":
        return np.sum((a - b) ** 2, axis=-1)
    if kind == "l1":
        return np.sum(np.abs(a - b), axis=-1)
    return 1.0 - np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def triplet_margin_loss(src_emb, pos_emb, neg_emb, *, margin=1.0, distance="l2", sample_weight=None,
                        reduction="mean"):
    s, p, n = f64(src_emb), f64(pos_emb), f64(neg_emb)
    if n.ndim == 2:
        n = n[:, None, :]
    d_pos = _distance(s, p, distance)
    d_neg = _distance(s[:, None, :], n, distance)
    rows = mean(np.maximum(0.0, margin + d_pos[:, None] - d_neg), axis=1)
    return reduce(rows, sample_weight, reduction, (s, p, n))


def gbce_loss(pos_logit, neg_logit, *, num_items, t=0.75, neg_mask=None, sample_weight=None, reduction="mean"):
    """gBCE as the paper writes it: -log(sigmoid(s_pos)^beta) - sum_k log(1 - sigmoid(s_k)), averaged over the
    row's kept elements; log(sigmoid(x)) = -softplus(-x) and log(1 - sigmoid(x)) = -softplus(x)."""
    pos, neg = f64(pos_logit), f64(neg_logit)
    alpha = neg.shape[1] / (num_items - 1)
    beta = alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha) if alpha > 0 else 1.0 - t
    keep = np.ones(neg.shape, bool) if neg_mask is None else np.asarray(neg_mask, bool)
    rows = np.array([(beta * softplus(-pos[i]) + np.sum(softplus(neg[i][keep[i]]))) / (1 + np.sum(keep[i]))
                     for i in range(pos.shape[0])], dtype=np.float64)
    return reduce(rows, sample_weight, reduction, (pos, neg[keep]))
