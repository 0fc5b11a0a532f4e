"""The losses' math, written once against a small set of array operations that each backend supplies.

Each backend module (``recloss.backends.tensorflow`` / ``.torch`` / ``.jax``) implements :class:`Ops` with
its framework's native operations, so autodiff, ``jit``/``compile`` and ``vmap`` see ordinary framework
code; a backend may override any kernel with a specialised one (the streaming softmax does). The float64
NumPy references in :mod:`recloss.reference` are written separately and share nothing with this module.

Numerics, the same on every backend:

* half-precision inputs are cast to float32 first, float64 stays float64 (``bound.dtype``);
* every softmax row is ``(m - s_pos) + log(exp(s_pos - m) + sum_k exp(s_k - m))`` with ``m`` the row
  maximum over the kept candidates: exact at large logits, and a row with no negative left has loss 0;
* removed candidates are replaced by a finite value inside the row and then dropped with ``where``, so they
  contribute nothing to value or gradient, in any precision (no large finite constants);
* means over nothing are 0, never NaN.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from recloss._spec import Bound

NEG_INF = float("-inf")
#: Squared-norm floor of L2 normalisation: ``x / max(||x||, 1e-12)``, as ``tf.math.l2_normalize``.
NORM_EPS_SQUARED = 1e-24


class Ops(Protocol):
    """The array operations a backend supplies. ``x[:, None]`` indexing and ``+ - * /`` are used directly."""

    def cast(self, x: Any, dtype: str) -> Any: ...
    def rowdot(self, a: Any, b: Any) -> Any: ...          # [B, D], [B, D] -> [B]
    def dot_nt(self, a: Any, b: Any) -> Any: ...          # [B, D], [N, D] -> [B, N]
    def batch_dot(self, a: Any, b: Any) -> Any: ...       # [B, D], [B, K, D] -> [B, K]
    def sum(self, x: Any, axis: int | None = None) -> Any: ...
    def max(self, x: Any, axis: int) -> Any: ...
    def maximum(self, a: Any, b: Any) -> Any: ...
    def exp(self, x: Any) -> Any: ...
    def log(self, x: Any) -> Any: ...
    def softplus(self, x: Any) -> Any: ...
    def relu(self, x: Any) -> Any: ...
    def abs(self, x: Any) -> Any: ...
    def sqrt(self, x: Any) -> Any: ...
    def rsqrt(self, x: Any) -> Any: ...
    def where(self, condition: Any, a: Any, b: Any) -> Any: ...   # a or b may be a Python float
    def stop_gradient(self, x: Any) -> Any: ...
    def top_k(self, x: Any, k: int) -> Any: ...         # values of the k largest along the last axis
    def concat(self, xs: list[Any], axis: int) -> Any: ...
    def not_equal(self, a: Any, b: Any) -> Any: ...
    def logical_and(self, a: Any, b: Any) -> Any: ...
    def ones_bool(self, like: Any) -> Any: ...           # all-True boolean tensor shaped like `like`
    def row_index(self, x: Any) -> Any: ...              # arange(x.shape[0]) as integers
    def size(self, x: Any, axis: int) -> Any: ...        # x.shape[axis]: an int, or a scalar tensor if unknown
    def to_float(self, n: Any, like: Any) -> Any: ...    # a run-time size as a float scalar of like's dtype
    def minimum(self, a: Any, b: Any) -> Any: ...        # min of two run-time sizes


# ----------------------------------------------------------------------------------------------------------
# Shared pieces


def upcast(ops: Ops, bound: Bound, x: Any) -> Any:
    """Cast a floating tensor to the call's compute dtype (float32, or float64 if any input is float64)."""
    return None if x is None else ops.cast(x, bound.dtype)


def scalar(ops: Ops, bound: Bound, value: Any) -> Any:
    """A number option (``temperature``, ``margin``) ready for the math: NumPy scalars and 0-d arrays become
    Python floats, a framework tensor is cast to the call's compute dtype (the gradient still flows to it),
    so the option never changes the result's dtype and TensorFlow never sees two dtypes."""
    if isinstance(value, (int, float)) or type(value).__module__ == "numpy":
        return float(value)
    return ops.cast(value, bound.dtype)


def safe_mean(ops: Ops, x: Any, axis: int) -> Any:
    """Mean along ``axis``; 0 where the axis is empty."""
    count = ops.size(x, axis)
    if _known_only_at_run_time(count):
        return ops.sum(x, axis) / ops.maximum(ops.to_float(count, x), 1.0)
    return ops.sum(x, axis) / max(count, 1)


def _known_only_at_run_time(size: Any) -> bool:
    """True for a size that is a tensor (TensorFlow, unknown dimension), False for an int (or a SymInt)."""
    return hasattr(size, "dtype")


def reduce_rows(ops: Ops, row_loss: Any, sample_weight: Any, reduction: str, inputs: tuple = ()) -> Any:
    """``"none"``: ``w_i l_i``; ``"sum"``: ``sum_i w_i l_i``; ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 if that is 0).

    The result is NaN (every row with ``"none"``) if any of ``inputs`` holds a NaN or an infinity.
    """
    reduced = _reduce(ops, row_loss, sample_weight, reduction)
    guard = nonfinite_guard(ops, *inputs)
    return reduced if guard is None else reduced + guard


def _reduce(ops: Ops, row_loss: Any, sample_weight: Any, reduction: str) -> Any:
    if sample_weight is not None:
        row_loss = row_loss * sample_weight
    if reduction == "none":
        return row_loss
    total = ops.sum(row_loss)
    if reduction == "sum":
        return total
    if sample_weight is None:
        return safe_mean(ops, row_loss, 0)
    weight_sum = ops.sum(sample_weight)
    positive = weight_sum > 0
    return ops.where(positive, total / ops.where(positive, weight_sum, 1.0), 0.0)


def nonfinite_guard(ops: Ops, *tensors: Any) -> Any:
    """0, or NaN if any tensor holds a NaN or an infinity (``x * 0`` is NaN exactly there); None for no tensor.

    Added to every loss so that a non-finite input never gives a silently finite loss: without it an
    infinite logit would act as a probability of exactly 0 or 1. No gradient flows through it.
    """
    terms = [ops.sum(ops.stop_gradient(x) * 0.0) for x in tensors if x is not None]
    return sum(terms[1:], terms[0]) if terms else None


def l2_normalize(ops: Ops, x: Any) -> Any:
    """``x / max(||x||, 1e-12)`` along the last axis; finite gradient at x = 0."""
    return x * ops.rsqrt(ops.maximum(ops.sum(x * x, -1)[..., None], NORM_EPS_SQUARED))


def safe_sqrt(ops: Ops, x: Any) -> Any:
    """``sqrt(x)`` for x >= 0 whose gradient at 0 is 0 instead of infinite; NaN stays NaN (``NaN != 0``)."""
    nonzero = x != 0
    return ops.where(nonzero, ops.sqrt(ops.where(nonzero, x, 1.0)), 0.0)


def softmax_row_losses(ops: Ops, pos_logit: Any, neg_logit: Any, keep: Any, temperature: Any,
                       pos_log_q: Any, neg_log_q: Any, num_hard_negatives: int | None) -> Any:
    """Row losses ``logsumexp([s_pos, kept s_k]) - s_pos``, ``[B]``, in the order the catalogue documents.

    ``s = logit / temperature - log_q``; then candidates with ``keep`` False are removed; then only the
    ``num_hard_negatives`` largest remaining negatives are kept.
    """
    s_pos = pos_logit / temperature
    s_neg = neg_logit / temperature
    if pos_log_q is not None:
        s_pos = s_pos - pos_log_q
    if neg_log_q is not None:
        s_neg = s_neg - neg_log_q
    num_neg = ops.size(s_neg, 1)
    static = not _known_only_at_run_time(num_neg)
    if static and num_neg == 0:
        return s_pos * 0.0
    if num_hard_negatives is not None:
        if keep is not None:
            s_neg = ops.where(keep, s_neg, NEG_INF)
        k = min(num_hard_negatives, num_neg) if static else ops.minimum(num_hard_negatives, num_neg)
        s_neg = ops.top_k(s_neg, k)
        keep = None if keep is None else s_neg > NEG_INF
    # Removed candidates take the positive's logit, which can neither raise the row maximum nor overflow.
    filled = s_neg if keep is None else ops.where(keep, s_neg, s_pos[:, None])
    row_max = ops.stop_gradient(ops.maximum(s_pos, ops.max(filled, 1)))
    terms = ops.exp(filled - row_max[:, None])
    if keep is not None:
        terms = ops.where(keep, terms, 0.0)
    return (row_max - s_pos) + ops.log(ops.exp(s_pos - row_max) + ops.sum(terms, 1))


def retrieval_row_losses(ops: Ops, bound: Bound, query_emb: Any, pos_emb: Any, neg_emb: Any, *,
                         temperature: Any, in_batch: bool, pos_log_q: Any, neg_log_q: Any, pos_ids: Any,
                         neg_ids: Any, num_hard_negatives: int | None, implementation: str = "materialized") -> Any:
    """Row losses of the embedding softmax: score the candidates, then :func:`softmax_row_losses`.

    With ``implementation`` ``"streaming"`` (or ``"auto"`` at a large size) the rows come from
    :func:`streaming_row_losses` instead, which never materialises the ``[B, B + N]`` block.
    """
    streamed = streaming_row_losses(ops, bound, query_emb, pos_emb, neg_emb, temperature=temperature,
                                    in_batch=in_batch, pos_log_q=pos_log_q, neg_log_q=neg_log_q, pos_ids=pos_ids,
                                    neg_ids=neg_ids, num_hard_negatives=num_hard_negatives,
                                    implementation=implementation)
    if streamed is not None:
        return streamed
    pos_logit = ops.rowdot(query_emb, pos_emb)
    blocks, keeps, log_qs = [], [], []
    if in_batch:
        scores = ops.dot_nt(query_emb, pos_emb)
        rows = ops.row_index(query_emb)
        keep = ops.not_equal(rows[:, None], rows[None, :])
        if pos_ids is not None:
            keep = ops.logical_and(keep, ops.not_equal(pos_ids[:, None], pos_ids[None, :]))
        blocks.append(scores)
        keeps.append(keep)
        log_qs.append(None if pos_log_q is None else pos_log_q[None, :])
    if neg_emb is not None:
        shared = bound.form("neg_emb") == ("N", "D")
        scores = ops.dot_nt(query_emb, neg_emb) if shared else ops.batch_dot(query_emb, neg_emb)
        keep = None
        if neg_ids is not None:
            keep = ops.not_equal(pos_ids[:, None], neg_ids[None, :] if shared else neg_ids)
        blocks.append(scores)
        keeps.append(keep)
        log_qs.append(None if neg_log_q is None else (neg_log_q[None, :] if shared else neg_log_q))

    if any(k is not None for k in keeps):
        keeps = [ops.ones_bool(b) if k is None else k for b, k in zip(blocks, keeps)]
        keep = ops.concat(keeps, 1) if len(keeps) > 1 else keeps[0]
    else:
        keep = None
    if any(q is not None for q in log_qs):
        log_qs = [b * 0.0 if q is None else b * 0.0 + q for b, q in zip(blocks, log_qs)]
        log_q = ops.concat(log_qs, 1) if len(log_qs) > 1 else log_qs[0]
    else:
        log_q = None
    neg_logit = ops.concat(blocks, 1) if len(blocks) > 1 else blocks[0]
    return softmax_row_losses(ops, pos_logit, neg_logit, keep, temperature, pos_log_q, log_q,
                              num_hard_negatives)


#: ``implementation="auto"`` streams when ``B * (number of candidate columns)`` reaches this many logits
#: (2**22, a 16 MiB float32 block), else materialises the block. Measured on a 2-core CPU: streaming is
#: faster from about this size on (see benchmarks/README.md).
STREAMING_MIN_LOGITS = 1 << 22
#: Negatives per chunk of the streaming path (2048 to 4096 were fastest in the prototypes).
STREAMING_CHUNK = 4096
#: When the whole ``[B, M]`` block of ``exp(s - m)`` fits in this many bytes, the streaming forward keeps its
#: chunks for the backward (three matrix products instead of four, memory of the block); above it, nothing is
#: kept and every chunk's scores are recomputed (memory O(B x chunk)).
STREAMING_STORE_BYTES = 64 << 20


def streaming_row_losses(ops: Ops, bound: Bound, query_emb: Any, pos_emb: Any, neg_emb: Any, *,
                         temperature: Any, in_batch: bool, pos_log_q: Any, neg_log_q: Any, pos_ids: Any,
                         neg_ids: Any, num_hard_negatives: int | None, implementation: str) -> Any:
    """Row losses by the streaming path, or None where the materialised path is to be used.

    The backend's ``ops.streaming_row_losses(q, s_pos, sources, row_ids, chunk, store_bytes)`` computes
    ``(m - s_pos) + log(exp(s_pos - m) + sum_c kept exp(s_c - m))`` over chunks of candidate columns with a
    custom backward that recomputes each chunk's scores (or, when the whole block fits in
    ``STREAMING_STORE_BYTES``, keeps the chunks' ``exp(s - m)`` from the forward: ``store_bytes``). ``q`` is ``query_emb / T`` (so the temperature's
    gradient comes from autodiff), ``s_pos`` the positive score (kept out of the block), and each source is
    ``(keys [M, D], log_q [M] | None, ids [M] | None, exclude_diagonal)``: a candidate ``c`` of row ``i`` is
    removed where ``ids[c] == row_ids[i]`` or, with ``exclude_diagonal``, where ``c == i``.
    Falls back (None) for per-row ``[B, K, D]`` negatives, ``num_hard_negatives``, sizes unknown at trace
    time, or a backend without the op.
    """
    if implementation == "materialized" or num_hard_negatives is not None:
        return None
    stream = getattr(ops, "streaming_row_losses", None)
    if stream is None or (neg_emb is not None and bound.form("neg_emb") != ("N", "D")):
        return None
    sizes = [ops.size(query_emb, 0)] + ([ops.size(pos_emb, 0)] if in_batch else []) + (
        [] if neg_emb is None else [ops.size(neg_emb, 0)])
    if any(_known_only_at_run_time(size) for size in sizes):
        return None
    if implementation == "auto" and sizes[0] * sum(sizes[1:]) < STREAMING_MIN_LOGITS:
        return None
    sources = []
    if in_batch:
        sources.append((pos_emb, pos_log_q, pos_ids, pos_ids is None))
    if neg_emb is not None:
        sources.append((neg_emb, neg_log_q, neg_ids, False))
    s_pos = ops.rowdot(query_emb, pos_emb) / temperature
    if pos_log_q is not None:
        s_pos = s_pos - pos_log_q
    block_bytes = sizes[0] * sum(sizes[1:]) * (8 if bound.dtype == "float64" else 4)
    store_bytes = STREAMING_STORE_BYTES if block_bytes <= STREAMING_STORE_BYTES else 0
    return stream(query_emb / temperature, s_pos, tuple(sources), pos_ids, STREAMING_CHUNK, store_bytes)


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
        return (safe_mean(ops, ops.softplus(-pos), 0) + safe_mean(ops, ops.softplus(neg), 0)
                + nonfinite_guard(ops, pos, neg))
    rows = ops.softplus(-pos) + safe_mean(ops, ops.softplus(pairwise_negatives(bound, neg)), 1)
    return reduce_rows(ops, rows, weight, reduction, (pos, neg))


def softmax_loss(ops: Ops, bound: Bound, pos_logit: Any, neg_logit: Any, *, neg_mask: Any, temperature: Any,
                 pos_log_q: Any, neg_log_q: Any, num_hard_negatives: int | None, sample_weight: Any,
                 reduction: str) -> Any:
    pos, neg, pos_q, neg_q, weight = (upcast(ops, bound, x)
                                      for x in (pos_logit, neg_logit, pos_log_q, neg_log_q, sample_weight))
    rows = softmax_row_losses(ops, pos, neg, neg_mask, scalar(ops, bound, temperature), pos_q, neg_q,
                              num_hard_negatives)
    kept = (neg, neg_q) if neg_mask is None else tuple(None if x is None else ops.where(neg_mask, x, 0.0)
                                                       for x in (neg, neg_q))
    return reduce_rows(ops, rows, weight, reduction, (pos, pos_q, *kept))


def sampled_softmax_loss(ops: Ops, bound: Bound, query_emb: Any, pos_emb: Any, neg_emb: Any, *,
                         temperature: Any, in_batch: bool | None, pos_log_q: Any, neg_log_q: Any, pos_ids: Any,
                         neg_ids: Any, num_hard_negatives: int | None, sample_weight: Any,
                         reduction: str, implementation: str = "auto") -> Any:
    q, p, n, pos_q, neg_q, weight = (upcast(ops, bound, x)
                                     for x in (query_emb, pos_emb, neg_emb, pos_log_q, neg_log_q, sample_weight))
    rows = retrieval_row_losses(ops, bound, q, p, n, temperature=scalar(ops, bound, temperature),
                                in_batch=(neg_emb is None) if in_batch is None else in_batch,
                                pos_log_q=pos_q, neg_log_q=neg_q, pos_ids=pos_ids, neg_ids=neg_ids,
                                num_hard_negatives=num_hard_negatives, implementation=implementation)
    return reduce_rows(ops, rows, weight, reduction, (q, p, n, pos_q, neg_q))


def unsupervised_softmax_cross_entropy_loss(ops: Ops, bound: Bound, src_emb: Any, pos_emb: Any, neg_emb: Any, *,
                                            temperature: Any, sample_weight: Any, reduction: str,
                                            implementation: str = "auto") -> Any:
    q, p, n, weight = (upcast(ops, bound, x) for x in (src_emb, pos_emb, neg_emb, sample_weight))
    rows = retrieval_row_losses(ops, bound, q, p, n, temperature=scalar(ops, bound, temperature), in_batch=False,
                                pos_log_q=None, neg_log_q=None, pos_ids=None, neg_ids=None, num_hard_negatives=None,
                                implementation=implementation)
    return reduce_rows(ops, rows, weight, reduction, (q, p, n))


def info_nce_loss(ops: Ops, bound: Bound, query_emb: Any, key_emb: Any, *, temperature: Any, symmetric: bool,
                  normalize: bool, ids: Any, sample_weight: Any, reduction: str,
                  implementation: str = "auto") -> Any:
    q, k, weight = (upcast(ops, bound, x) for x in (query_emb, key_emb, sample_weight))
    if normalize:
        q, k = l2_normalize(ops, q), l2_normalize(ops, k)
    common = dict(temperature=scalar(ops, bound, temperature), in_batch=True, pos_log_q=None, neg_log_q=None,
                  pos_ids=ids, neg_ids=None, num_hard_negatives=None, implementation=implementation)
    rows = retrieval_row_losses(ops, bound, q, k, None, **common)
    if symmetric:
        rows = 0.5 * (rows + retrieval_row_losses(ops, bound, k, q, None, **common))
    return reduce_rows(ops, rows, weight, reduction, (q, k))


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

KERNELS: dict[str, Callable[..., Any]] = {
    f.__name__: f for f in (sigmoid_cross_entropy_loss, softmax_loss, sampled_softmax_loss,
                            unsupervised_softmax_cross_entropy_loss, info_nce_loss, bpr_loss, hinge_loss,
                            triplet_margin_loss)
}
