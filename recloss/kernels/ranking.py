"""The ranking family: listwise, pairwise and pointwise losses over lists of ``L`` items with graded labels.

Shapes: ``s``, ``y`` and ``valid`` are ``[B, L]``; a pair block is ``[B, L, L]`` with item ``i`` on axis 1 and
item ``j`` on axis 2. Ties are broken by position everywhere: inside a pair block "j ranks before i" is a
comparison (a higher score, or the same score and an earlier position); ListMLE sorts each list with the
stable ``ops.top_k_with_indices``. Pair blocks are built per chunk of lists (:func:`per_list`), each chunk's
backward recomputing it, so no ``[B, L, L]`` block ever exists when the lists are large.

Numerics: padded items are replaced by 0 in ``scores`` and ``labels`` before anything else (so whatever they
hold reaches neither the value nor a gradient) and removed again inside each reduction with ``where``;
log-sum-exps are ``-inf``-masked with a finite shift; a confident list keeps its tiny loss (``log1p``,
``softplus`` and ``expm1`` forms). Labels are constants (``stop_gradient``).
"""

from __future__ import annotations

import math
from typing import Any

from recloss._spec import Bound
from recloss.kernels._common import NEG_INF, Ops, known_only_at_run_time, reduce_rows, scalar, upcast

LN2 = math.log(2.0)


def list_inputs(ops: Ops, bound: Bound, scores: Any, labels: Any, mask: Any, sample_weight: Any
                ) -> tuple[Any, Any, Any, Any]:
    """``(s, y, valid, w)``: scores and labels in the compute dtype with padded entries set to 0, labels cut
    from the gradient, the validity mask (all True without ``mask``) and the list weights."""
    s, y, w = (upcast(ops, bound, x) for x in (scores, labels, sample_weight))
    y = ops.stop_gradient(y)
    if mask is None:
        return s, y, ops.ones_bool(s), w
    return ops.where(mask, s, 0.0), ops.where(mask, y, 0.0), mask, w


def count(ops: Ops, flags: Any, dtype: str, axis: int) -> Any:
    """The number of True entries of a boolean tensor along ``axis``, as floats of ``dtype``."""
    return ops.sum(ops.cast(flags, dtype), axis)


def gain_unit(ops: Ops, y: Any) -> Any:
    """``[B, 1]``: each list's largest label (at least 0; 0 for lists of no item), the unit of its gains.

    NDCG and the lambda weights are ratios of gains in one list, so scaling a list's gains by ``2^-top`` changes
    nothing but keeps them finite: ``2^y - 1`` overflows float32 from ``y = 128`` (float64 from 1024)."""
    if no_items(ops, y):
        return ops.sum(y, 1)[:, None]
    return ops.maximum(ops.max(y, 1), 0.0)[:, None]


def gains(ops: Ops, y: Any, top: Any) -> Any:
    """``(2^y - 1) / 2^top`` = ``2^(y - top) (1 - 2^-y)`` for labels ``y >= 0`` and ``top`` >= every ``y`` of
    the list (:func:`gain_unit`): no factor overflows, and ``-expm1`` keeps small grades exact."""
    return ops.exp((y - top) * LN2) * -ops.expm1(-y * LN2)


def discount(ops: Ops, rank: Any) -> Any:
    """``1 / log2(1 + rank)`` of a 1-based rank."""
    return LN2 / ops.log1p(rank)


def list_size(ops: Ops, x: Any) -> Any:
    return ops.size(x, 1)


def no_items(ops: Ops, x: Any) -> bool:
    """True where the lists are known to be empty (L = 0): a maximum over them is undefined in torch and JAX."""
    size = list_size(ops, x)
    return not known_only_at_run_time(size) and size == 0


#: Lists are processed in chunks whose ``[chunk, L, L]`` pair block has at most this many entries (16 MiB in
#: float32); the backward of each chunk recomputes its block (``ops.recompute``), so the memory of a pair loss
#: is O(chunk x L^2) in every mode instead of several ``[B, L, L]`` blocks.
PAIR_BLOCK_ELEMENTS = 1 << 22


def per_list(ops: Ops, fn: Any, x: Any, *constants: Any, differentiable: bool = True) -> Any:
    """``fn(x, *constants)`` -> ``[B]``, computed over chunks of lists when the whole ``[B, L, L]`` block would
    exceed :data:`PAIR_BLOCK_ELEMENTS` (each chunk's backward recomputing its forward where ``differentiable``);
    in one piece otherwise, or where B or L is known only at run time. ``constants`` get no gradient."""
    batch, size = ops.size(x, 0), list_size(ops, x)
    if known_only_at_run_time(batch) or known_only_at_run_time(size) or batch * size * size <= PAIR_BLOCK_ELEMENTS:
        return fn(x, *constants)
    step = max(1, PAIR_BLOCK_ELEMENTS // (size * size))
    parts = []
    for start in range(0, batch, step):
        piece = tuple(c[start:start + step] for c in constants)
        chunk_fn = lambda part, piece=piece: fn(part, *piece)  # noqa: E731 - bound now, called again in the backward
        parts.append((ops.recompute(chunk_fn) if differentiable else chunk_fn)(x[start:start + step]))
    return ops.concat(parts, 0)


def ideal_dcg(ops: Ops, y: Any, k: Any, top: Any) -> Any:
    """``[B]``: the DCG of each list in its ideal order (labels descending) over its first ``k`` positions, in
    the gain unit ``top``. Padded labels are 0 (no gain), so they never displace a valid one."""
    best = ops.top_k(y, k)
    return ops.sum(gains(ops, best, top) * discount(ops, ops.positions(best) + 1.0), 1)


def safe_divide(ops: Ops, a: Any, b: Any) -> Any:
    """``a / b`` where ``b > 0``, else 0 (no NaN in the value or the gradient)."""
    positive = b > 0
    return ops.where(positive, a / ops.where(positive, b, 1.0), 0.0)


def ranks_by_score(ops: Ops, s: Any, valid: Any, dtype: str) -> Any:
    """``[B, L]`` 1-based ranks among the valid items by score, descending, ties by position (no gradient)."""
    s = ops.stop_gradient(s)
    pos = ops.positions(s)
    s_i, s_j = s[:, :, None], s[:, None, :]
    ahead = ops.logical_and(valid[:, None, :], (s_j > s_i) | ((s_j == s_i) & (pos[None, :] < pos[:, None])))
    return 1.0 + count(ops, ahead, dtype, 2)


# ----------------------------------------------------------------------------------------------------------
# Listwise


def softmax_gaps(ops: Ops, z: Any, valid: Any) -> Any:
    """``[B, L]``: ``logsumexp_V(z) - z_i`` = ``-log softmax_V(z)_i`` for valid items (0 for padded ones).

    Computed as ``(z_p - z_i) + log1p(sum_{k in V, k != p} exp(z_k - z_p))`` with ``p`` the first item at the
    list's maximum: no ``exp`` overflows, and the gap of a confident item (~1e-13) keeps its digits, in value
    and gradient.
    """
    if no_items(ops, z):
        return z
    pos = ops.positions(z)
    top = ops.stop_gradient(ops.max(ops.where(valid, z, NEG_INF), 1))
    at_top = ops.logical_and(valid, z == top[:, None])
    first = -ops.max(ops.where(at_top, -pos, NEG_INF), 1)
    pivot = ops.logical_and(at_top, pos == first[:, None])
    z_p = ops.sum(ops.where(pivot, z, 0.0), 1)
    others = ops.logical_and(valid, ~pivot)
    rest = ops.sum(ops.exp(ops.where(others, z - z_p[:, None], NEG_INF)), 1)
    # The pivot's own gap is log1p(rest) alone: written as (z_p - z_p) + ..., its gradient would be 1 - 1 + (a
    # number ~1e-13), which float32 rounds to 0.
    below = ops.where(pivot, 0.0, z_p[:, None] - z)
    return ops.where(valid, below + ops.log1p(rest)[:, None], 0.0)


def listwise_softmax_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any, temperature: Any,
                          sample_weight: Any, reduction: str) -> Any:
    s, y, valid, w = list_inputs(ops, bound, scores, labels, mask, sample_weight)
    gaps = softmax_gaps(ops, s / scalar(ops, bound, temperature), valid)
    return reduce_rows(ops, ops.sum(y * gaps, 1), w, reduction, (s, y))


def poly1_softmax_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any, epsilon: float,
                       temperature: Any, sample_weight: Any, reduction: str) -> Any:
    s, y, valid, w = list_inputs(ops, bound, scores, labels, mask, sample_weight)
    gaps = softmax_gaps(ops, s / scalar(ops, bound, temperature), valid)
    total = ops.sum(y, 1)
    share = safe_divide(ops, y, total[:, None])
    # 1 - p_t = sum_i share_i (1 - p_i), with 1 - p_i = -expm1(-gap_i): exact when p_i is near 1.
    miss = ops.sum(share * -ops.expm1(-gaps), 1)
    rows = ops.where(total > 0, ops.sum(y * gaps, 1) + scalar(ops, bound, epsilon) * miss, 0.0)
    return reduce_rows(ops, rows, w, reduction, (s, y))


def listmle_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any, sample_weight: Any,
                 reduction: str) -> Any:
    s, y, valid, w = list_inputs(ops, bound, scores, labels, mask, sample_weight)
    if no_items(ops, s):
        return reduce_rows(ops, ops.sum(s, 1), w, reduction, (s, y))
    # Padded items first (a +inf key), then the valid ones by label, descending, ties by position (a stable
    # top_k of the whole list): the items after a valid item are then exactly the valid items after it.
    _, order = ops.top_k_with_indices(ops.where(valid, y, -NEG_INF), list_size(ops, s))
    ordered = ops.gather(s, order)
    rest = ops.cumlogsumexp_reverse(ordered)                  # logsumexp of each item and the items after it
    after = ops.concat([rest[:, 1:], rest[:, :1] * 0.0], 1)   # ... of the items after it (last: unused)
    last = ops.positions(s) == ops.to_float(list_size(ops, s), s) - 1.0
    # log(exp(s_i) + exp(after_i)) - s_i = softplus(after_i - s_i): tiny and exact for a confident list.
    terms = ops.where(ops.logical_and(ops.gather(valid, order), ~last), ops.softplus(after - ordered), 0.0)
    return reduce_rows(ops, ops.sum(terms, 1), w, reduction, (s, y))


def approx_dcg_rows(ops: Ops, z: Any, g: Any, valid: Any) -> Any:
    """``[B]``: ``sum_i g_i D(r_i)`` with the smooth ranks ``r_i = 1 + sum_{j in V, j != i} sigmoid(z_j - z_i)``
    (the term j = i is sigmoid(0) = 1/2 exactly, subtracted instead of masked, as TF-Ranking does)."""
    above = ops.where(valid[:, None, :], ops.sigmoid(z[:, None, :] - z[:, :, None]), 0.0)
    ranks = 0.5 + ops.sum(above, 2)
    return ops.sum(ops.where(valid, g * discount(ops, ranks), 0.0), 1)


def approx_ndcg_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any, temperature: Any,
                     sample_weight: Any, reduction: str) -> Any:
    s, y, valid, w = list_inputs(ops, bound, scores, labels, mask, sample_weight)
    z = s / scalar(ops, bound, temperature)
    top = gain_unit(ops, y)
    dcg = per_list(ops, lambda x, g, valid: approx_dcg_rows(ops, x, g, valid), z, gains(ops, y, top), valid)
    rows = -safe_divide(ops, dcg, ideal_dcg(ops, y, list_size(ops, y), top))
    return reduce_rows(ops, rows, w, reduction, (s, y))


# ----------------------------------------------------------------------------------------------------------
# Pairwise


def pair_discounts(ops: Ops, ranks: Any, kind: str) -> Any:
    """``[B, L, L]``: ``|D(r_i) - D(r_j)|`` (``"ndcg"``) or ``|D(|r_i - r_j|) - D(|r_i - r_j| + 1)|``
    (``"ndcg2"``, 0 where the ranks are equal)."""
    if kind == "ndcg":
        d = discount(ops, ranks)
        return ops.abs(d[:, :, None] - d[:, None, :])
    apart = ops.abs(ranks[:, :, None] - ranks[:, None, :])
    distinct = apart > 0
    apart = ops.where(distinct, apart, 1.0)
    return ops.where(distinct, discount(ops, apart) - discount(ops, apart + 1.0), 0.0)


def pairwise_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, mask: Any, sample_weight: Any,
                  reduction: str, pair_loss: Any, lambdaweight: str | None) -> Any:
    """The pairwise losses: per list, the mean over the pairs (i, j) of valid items with ``y_i > y_j`` of
    ``w_ij pair_loss(s_i - s_j)``; with ``lambdaweight``, ``w_ij = |g_i - g_j| pair_discounts(r)_ij``, with
    ``g = G(y) / IDCG`` and r the ranks by score (constants)."""
    s, y, valid, w = list_inputs(ops, bound, scores, labels, mask, sample_weight)
    # y_i > y_j for valid i and j, as one comparison: -inf / +inf labels on padded items never pair.
    high, low = ops.where(valid, y, NEG_INF), ops.where(valid, y, -NEG_INF)
    extra = ()
    if lambdaweight is not None:
        ranks = per_list(ops, lambda x, valid: ranks_by_score(ops, x, valid, bound.dtype), ops.stop_gradient(s),
                         valid, differentiable=False)
        top = gain_unit(ops, y)
        g = gains(ops, y, top) * safe_divide(ops, 1.0, ideal_dcg(ops, y, list_size(ops, y), top))[:, None]
        extra = (ranks, g)

    def rows(x: Any, high: Any, low: Any, *extra: Any) -> Any:
        pairs = high[:, :, None] > low[:, None, :]
        losses = pair_loss(x[:, :, None] - x[:, None, :])
        if extra:
            ranks, g = extra
            losses = losses * (ops.abs(g[:, :, None] - g[:, None, :]) * pair_discounts(ops, ranks, lambdaweight))
        total = ops.sum(ops.sum(ops.where(pairs, losses, 0.0), 2), 1)
        # The count inside the recomputed chunk: counted in a pass of its own, XLA keeps the comparison block.
        return total / ops.maximum(ops.sum(count(ops, pairs, bound.dtype, 2), 1), 1.0)

    return reduce_rows(ops, per_list(ops, rows, s, high, low, *extra), w, reduction, (s, y))


def pairwise_logistic_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any, lambdaweight: str | None,
                           sample_weight: Any, reduction: str) -> Any:
    return pairwise_loss(ops, bound, scores, labels, mask, sample_weight, reduction, lambda d: ops.softplus(-d),
                         lambdaweight)


def pairwise_hinge_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any, margin: float,
                        lambdaweight: str | None, sample_weight: Any, reduction: str) -> Any:
    margin = scalar(ops, bound, margin)
    return pairwise_loss(ops, bound, scores, labels, mask, sample_weight, reduction, lambda d: ops.relu(margin - d),
                         lambdaweight)


def pairwise_soft_zero_one_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any,
                                lambdaweight: str | None, sample_weight: Any, reduction: str) -> Any:
    return pairwise_loss(ops, bound, scores, labels, mask, sample_weight, reduction, lambda d: ops.sigmoid(-d),
                         lambdaweight)


# ----------------------------------------------------------------------------------------------------------
# Pointwise


def pointwise_sigmoid_loss(ops: Ops, bound: Bound, scores: Any, labels: Any, *, mask: Any, sample_weight: Any,
                           reduction: str) -> Any:
    s, y, valid, w = list_inputs(ops, bound, scores, labels, mask, sample_weight)
    # y softplus(-s) + (1 - y) softplus(s): each term exact, so a confident item keeps its tiny loss.
    items = ops.where(valid, y * ops.softplus(-s) + (1.0 - y) * ops.softplus(s), 0.0)
    rows = ops.sum(items, 1) / ops.maximum(count(ops, valid, bound.dtype, 1), 1.0)
    return reduce_rows(ops, rows, w, reduction, (s, y))

