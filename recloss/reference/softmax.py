"""Float64 references of the softmax family, one row at a time from the list of candidates that survive,
exactly as the README states the math. ``implementation``, ``gather`` and ``shard_negatives`` do not change the
math (the reference is one process: its batch is the global batch, its negatives the whole table), so they are
accepted and ignored."""

from __future__ import annotations

import numpy as np

from recloss.reference._common import f64, l2_normalize, reduce, softplus


def _softmax_row(s_pos: float, candidates: np.ndarray, num_hard_negatives: int | None,
                 label_smoothing: float = 0.0, z_loss: float = 0.0) -> float:
    """``logsumexp([s_pos, candidates]) - s_pos`` after keeping the ``num_hard_negatives`` largest candidates;
    with label smoothing ``eps``, ``(1 - eps) (lse - s_pos) + eps (lse - mean of the kept values)``; plus
    ``z_loss * lse^2``.

    Written as ``(m - s_pos) + log1p(sum of exp(v - m) over every value but one maximum m)``: the sum of the
    others is then not added to 1 before the logarithm, so a confident row keeps its loss ``~ exp(-gap)`` even
    when that is below float64's resolution of 1.
    """
    if num_hard_negatives is not None:
        candidates = np.sort(candidates)[::-1][:num_hard_negatives]
    values = np.concatenate([[s_pos], candidates])
    top = int(np.argmax(values))                       # the first maximum: the positive on ties
    others = np.delete(values, top)
    log_rest = np.log1p(np.sum(np.exp(others - values[top])))
    cross_entropy = float(values[top] - s_pos + log_rest)
    lse = float(values[top] + log_rest)
    uniform = lse - float(np.mean(values))             # -mean_c log softmax_c: the uniform target's loss
    return (1.0 - label_smoothing) * cross_entropy + label_smoothing * uniform + z_loss * lse ** 2


def softmax_loss(pos_logit, neg_logit, *, neg_mask=None, temperature=1.0, pos_log_q=None, neg_log_q=None,
                 num_hard_negatives=None, label_smoothing=0.0, z_loss=0.0, sample_weight=None, reduction="mean"):
    temperature = float(np.asarray(temperature))
    s_pos = f64(pos_logit) / temperature
    s_neg = f64(neg_logit) / temperature
    if pos_log_q is not None:
        s_pos = s_pos - f64(pos_log_q)
    if neg_log_q is not None:
        s_neg = s_neg - f64(neg_log_q)
    keep = np.ones(s_neg.shape, bool) if neg_mask is None else np.asarray(neg_mask, bool)
    rows = np.array([_softmax_row(s_pos[i], s_neg[i][keep[i]], num_hard_negatives, label_smoothing, z_loss)
                     for i in range(s_pos.shape[0])])
    return reduce(rows, sample_weight, reduction, (s_pos, s_neg[keep]))


def sampled_softmax_loss(query_emb, pos_emb, neg_emb=None, *, temperature=1.0, in_batch=None, pos_log_q=None,
                         neg_log_q=None, pos_ids=None, neg_ids=None, query_ids=None, num_hard_negatives=None,
                         label_smoothing=0.0, z_loss=0.0, sample_weight=None, reduction="mean",
                         implementation="auto", product_precision="input", gather=None, shard_negatives=None):
    q, p, n = f64(query_emb), f64(pos_emb), f64(neg_emb)
    temperature = float(np.asarray(temperature))
    if in_batch is None:
        in_batch = n is None
    batch = q.shape[0]
    pos_q = np.zeros(batch) if pos_log_q is None else f64(pos_log_q)
    rows = []
    for i in range(batch):
        s_pos = q[i] @ p[i] / temperature - pos_q[i]
        candidates = []
        if in_batch:
            for j in range(batch):
                duplicate = pos_ids is not None and pos_ids[j] == pos_ids[i]
                same_query = query_ids is not None and query_ids[j] == query_ids[i]
                if j != i and not duplicate and not same_query:
                    candidates.append(q[i] @ p[j] / temperature - pos_q[j])
        if n is not None:
            shared = n.ndim == 2
            row_negs = n if shared else n[i]
            row_log_q = np.zeros(len(row_negs)) if neg_log_q is None else f64(neg_log_q if shared else neg_log_q[i])
            row_ids = None if neg_ids is None else (neg_ids if shared else neg_ids[i])
            for k in range(len(row_negs)):
                if row_ids is None or row_ids[k] != pos_ids[i]:
                    candidates.append(q[i] @ row_negs[k] / temperature - row_log_q[k])
        rows.append(_softmax_row(s_pos, np.asarray(candidates, dtype=np.float64), num_hard_negatives,
                                 label_smoothing, z_loss))
    return reduce(np.asarray(rows, dtype=np.float64), sample_weight, reduction, (q, p, n, pos_log_q, neg_log_q))


def unsupervised_softmax_cross_entropy_loss(src_emb, pos_emb, neg_emb, temperature=1.0, *, label_smoothing=0.0,
                                            z_loss=0.0, sample_weight=None, reduction="mean", implementation="auto",
                                            product_precision="input", gather=None, shard_negatives=None):
    return sampled_softmax_loss(src_emb, pos_emb, neg_emb, temperature=temperature, in_batch=False,
                                label_smoothing=label_smoothing, z_loss=z_loss, sample_weight=sample_weight,
                                reduction=reduction)


def info_nce_loss(query_emb, key_emb, *, temperature=0.07, symmetric=False, normalize=False, ids=None,
                  query_ids=None, label_smoothing=0.0, z_loss=0.0, sample_weight=None, reduction="mean",
                  implementation="auto", product_precision="input", gather=None):
    q, k = f64(query_emb), f64(key_emb)
    if normalize:
        q, k = l2_normalize(q), l2_normalize(k)
    row_options = dict(temperature=temperature, in_batch=True, pos_ids=ids, query_ids=query_ids,
                       label_smoothing=label_smoothing, z_loss=z_loss, reduction="none")
    rows = sampled_softmax_loss(q, k, **row_options)
    if symmetric:
        rows = 0.5 * (rows + sampled_softmax_loss(k, q, **row_options))
    return reduce(rows, sample_weight, reduction, (q, k))


def graphlearn_softmax_cross_entropy(src_emb, pos_emb, neg_emb, temperature=1.0):
    """GraphLearn's own formula, ``-mean(log(softmax(z)[:, 0] + 1e-12))``, in float64: a second reference."""
    q, p, n = f64(src_emb), f64(pos_emb), f64(neg_emb)
    logits = np.concatenate([np.sum(q * p, -1, keepdims=True), q @ n.T], axis=1) / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    softmax = np.exp(logits) / np.sum(np.exp(logits), axis=1, keepdims=True)
    return np.asarray(-np.mean(np.log(softmax[:, 0] + 1e-12)))


def multi_positive_softmax_loss(logits, labels, *, mode="out", mask=None, temperature=1.0, sample_weight=None,
                                reduction="mean"):
    """Each row's positives (labels > 0) and negatives among its valid entries, written out one by one."""
    temperature = float(np.asarray(temperature))
    s, y = f64(logits), f64(labels)
    keep = np.ones(s.shape, bool) if mask is None else np.asarray(mask, bool)
    rows = []
    for i in range(s.shape[0]):
        z, relevant = s[i][keep[i]] / temperature, y[i][keep[i]] > 0
        positives, negatives = z[relevant], z[~relevant]
        if positives.size == 0:
            rows.append(0.0)
        elif mode == "out":      # -log(e^p / (e^p + sum_n e^n)) for each positive p
            rows.append(sum(_softmax_row(p, negatives, None) for p in positives))
        else:                    # -log(sum_P e^p / sum_V e^c) = log(1 + sum_N e^n / sum_P e^p)
            lse_negatives = np.logaddexp.reduce(negatives) if negatives.size else -np.inf
            rows.append(float(softplus(lse_negatives - np.logaddexp.reduce(positives))))
    return reduce(np.array(rows, dtype=np.float64), sample_weight, reduction, (s[keep], y[keep]))
