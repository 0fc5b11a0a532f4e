"""Float64 NumPy references: the oracle every backend is compared with (the ``"numpy"`` backend).

Written to be obviously right rather than fast: softmax rows are built one at a time from the list of
candidates that survive, exactly as the README states the math. Nothing here is shared with the kernels in
:mod:`recloss.kernels`. Every function takes the public arguments (NumPy arrays, ``backend`` excluded) and
returns a 0-d float64 array, or the ``[B]`` vector for ``reduction="none"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _f64(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, dtype=np.float64)


def _logsumexp(values: np.ndarray) -> float:
    top = np.max(values)
    return float(top + np.log(np.sum(np.exp(values - top))))


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), computed without overflow."""
    return np.logaddexp(0.0, x)


def _mean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean that is 0 over an empty axis."""
    count = x.size if axis is None else x.shape[axis]
    return np.sum(x, axis=axis) / max(count, 1)


def _reduce(rows: np.ndarray, sample_weight: Any, reduction: str, inputs: tuple = ()) -> np.ndarray:
    """Weights and reduction; NaN if any of ``inputs`` holds a NaN or an infinity (the documented rule)."""
    poison = np.nan if any(x is not None and not np.all(np.isfinite(x)) for x in inputs) else 0.0
    weights = np.ones_like(rows) if sample_weight is None else _f64(sample_weight)
    weighted = rows * weights
    if reduction == "none":
        return weighted + poison
    if reduction == "sum":
        return np.asarray(np.sum(weighted) + poison)
    total_weight = np.sum(weights)
    return np.asarray((np.sum(weighted) / total_weight if total_weight > 0 else 0.0) + poison)


def _as_rows(neg: np.ndarray, batch: int) -> np.ndarray:
    """Per-row negatives as ``[B, K]``: a ``[B]`` tensor is one negative per row."""
    return neg.reshape(batch, 1) if neg.ndim == 1 else neg


def _softmax_row(s_pos: float, candidates: np.ndarray, num_hard_negatives: int | None) -> float:
    """``logsumexp([s_pos, candidates]) - s_pos`` after keeping the ``num_hard_negatives`` largest candidates."""
    if num_hard_negatives is not None:
        candidates = np.sort(candidates)[::-1][:num_hard_negatives]
    return _logsumexp(np.concatenate([[s_pos], candidates])) - s_pos


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def sigmoid_cross_entropy_loss(pos_logit, neg_logit, *, sample_weight=None, reduction="mean"):
    pos, neg = _f64(pos_logit), _f64(neg_logit)
    if neg.ndim == 1 and neg.shape[0] != pos.shape[0]:
        return _reduce(np.asarray(_mean(_softplus(-pos)) + _mean(_softplus(neg))), None, "sum", (pos, neg))
    rows = _softplus(-pos) + _mean(_softplus(_as_rows(neg, pos.shape[0])), axis=1)
    return _reduce(rows, sample_weight, reduction, (pos, neg))


def softmax_loss(pos_logit, neg_logit, *, neg_mask=None, temperature=1.0, pos_log_q=None, neg_log_q=None,
                 num_hard_negatives=None, sample_weight=None, reduction="mean"):
    temperature = float(np.asarray(temperature))
    s_pos = _f64(pos_logit) / temperature
    s_neg = _f64(neg_logit) / temperature
    if pos_log_q is not None:
        s_pos = s_pos - _f64(pos_log_q)
    if neg_log_q is not None:
        s_neg = s_neg - _f64(neg_log_q)
    keep = np.ones(s_neg.shape, bool) if neg_mask is None else np.asarray(neg_mask, bool)
    rows = np.array([_softmax_row(s_pos[i], s_neg[i][keep[i]], num_hard_negatives)
                     for i in range(s_pos.shape[0])])
    return _reduce(rows, sample_weight, reduction, (s_pos, s_neg[keep]))


def sampled_softmax_loss(query_emb, pos_emb, neg_emb=None, *, temperature=1.0, in_batch=None, pos_log_q=None,
                         neg_log_q=None, pos_ids=None, neg_ids=None, num_hard_negatives=None,
                         sample_weight=None, reduction="mean", implementation="auto"):
    q, p, n = _f64(query_emb), _f64(pos_emb), _f64(neg_emb)
    temperature = float(np.asarray(temperature))
    if in_batch is None:
        in_batch = n is None
    batch = q.shape[0]
    pos_q = np.zeros(batch) if pos_log_q is None else _f64(pos_log_q)
    rows = []
    for i in range(batch):
        s_pos = q[i] @ p[i] / temperature - pos_q[i]
        candidates = []
        if in_batch:
            for j in range(batch):
                duplicate = pos_ids is not None and pos_ids[j] == pos_ids[i]
                if j != i and not duplicate:
                    candidates.append(q[i] @ p[j] / temperature - pos_q[j])
        if n is not None:
            shared = n.ndim == 2
            row_negs = n if shared else n[i]
            row_log_q = np.zeros(len(row_negs)) if neg_log_q is None else _f64(neg_log_q if shared else neg_log_q[i])
            row_ids = None if neg_ids is None else (neg_ids if shared else neg_ids[i])
            for k in range(len(row_negs)):
                if row_ids is None or row_ids[k] != pos_ids[i]:
                    candidates.append(q[i] @ row_negs[k] / temperature - row_log_q[k])
        rows.append(_softmax_row(s_pos, np.asarray(candidates, dtype=np.float64), num_hard_negatives))
    return _reduce(np.asarray(rows, dtype=np.float64), sample_weight, reduction, (q, p, n, pos_log_q, neg_log_q))


def unsupervised_softmax_cross_entropy_loss(src_emb, pos_emb, neg_emb, temperature=1.0, *, sample_weight=None,
                                            reduction="mean", implementation="auto"):
    return sampled_softmax_loss(src_emb, pos_emb, neg_emb, temperature=temperature, in_batch=False,
                                sample_weight=sample_weight, reduction=reduction)


def info_nce_loss(query_emb, key_emb, *, temperature=0.07, symmetric=False, normalize=False, ids=None,
                  sample_weight=None, reduction="mean", implementation="auto"):
    q, k = _f64(query_emb), _f64(key_emb)
    if normalize:
        q, k = _normalize(q), _normalize(k)
    rows = sampled_softmax_loss(q, k, temperature=temperature, in_batch=True, pos_ids=ids, reduction="none")
    if symmetric:
        rows = 0.5 * (rows + sampled_softmax_loss(k, q, temperature=temperature, in_batch=True, pos_ids=ids,
                                                  reduction="none"))
    return _reduce(rows, sample_weight, reduction, (q, k))


def bpr_loss(pos_logit, neg_logit, *, sample_weight=None, reduction="mean"):
    pos, neg = _f64(pos_logit), _f64(neg_logit)
    rows = _mean(_softplus(_as_rows(neg, pos.shape[0]) - pos[:, None]), axis=1)
    return _reduce(rows, sample_weight, reduction, (pos, neg))


def hinge_loss(pos_logit, neg_logit, *, margin=1.0, sample_weight=None, reduction="mean"):
    pos, neg = _f64(pos_logit), _f64(neg_logit)
    rows = _mean(np.maximum(0.0, margin - pos[:, None] + _as_rows(neg, pos.shape[0])), axis=1)
    return _reduce(rows, sample_weight, reduction, (pos, neg))


def _distance(a: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    if kind == "l2":
        return np.linalg.norm(a - b, axis=-1)
    if kind == "squared_l2":
        return np.sum((a - b) ** 2, axis=-1)
    if kind == "l1":
        return np.sum(np.abs(a - b), axis=-1)
    return 1.0 - np.sum(_normalize(a) * _normalize(b), axis=-1)


def triplet_margin_loss(src_emb, pos_emb, neg_emb, *, margin=1.0, distance="l2", sample_weight=None,
                        reduction="mean"):
    s, p, n = _f64(src_emb), _f64(pos_emb), _f64(neg_emb)
    if n.ndim == 2:
        n = n[:, None, :]
    d_pos = _distance(s, p, distance)
    d_neg = _distance(s[:, None, :], n, distance)
    rows = _mean(np.maximum(0.0, margin + d_pos[:, None] - d_neg), axis=1)
    return _reduce(rows, sample_weight, reduction, (s, p, n))


def graphlearn_softmax_cross_entropy(src_emb, pos_emb, neg_emb, temperature=1.0):
    """GraphLearn's own formula, ``-mean(log(softmax(z)[:, 0] + 1e-12))``, in float64: a second reference."""
    q, p, n = _f64(src_emb), _f64(pos_emb), _f64(neg_emb)
    logits = np.concatenate([np.sum(q * p, -1, keepdims=True), q @ n.T], axis=1) / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    softmax = np.exp(logits) / np.sum(np.exp(logits), axis=1, keepdims=True)
    return np.asarray(-np.mean(np.log(softmax[:, 0] + 1e-12)))


REFERENCES = {f.__name__: f for f in (sigmoid_cross_entropy_loss, softmax_loss, sampled_softmax_loss,
                                      unsupervised_softmax_cross_entropy_loss, info_nce_loss, bpr_loss,
                                      hinge_loss, triplet_margin_loss)}
