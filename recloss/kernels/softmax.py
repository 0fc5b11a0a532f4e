"""The softmax family: softmax rows over kept candidates, the retrieval softmax over embeddings (materialised or
streaming), and the losses built on them (``softmax_loss``, ``sampled_softmax_loss``,
``unsupervised_softmax_cross_entropy_loss``, ``info_nce_loss``).

Every softmax row is ``(m - s_pos) + log(exp(s_pos - m) + sum_k exp(s_k - m))`` with ``m`` the row maximum over
the kept candidates: exact at large logits, and a row with no negative left has loss 0. Removed candidates are
replaced by a finite value inside the row and then dropped with ``where``, so they contribute nothing to value
or gradient, in any precision (no large finite constants).
"""

from __future__ import annotations

from typing import Any

from recloss._spec import Bound
from recloss._validate import check_comparable_ids, dtype_name, gather_requested
from recloss.kernels import block, fused, sharded
from recloss.kernels._common import (NEG_INF, Ops, known_only_at_run_time, l2_normalize, product_operands,
                                     reduce_rows, scalar, upcast)
from recloss.kernels.distributed import Columns, candidate_columns, collectives, gather_rows


def row_scores(pos_logit: Any, neg_logit: Any, temperature: Any, pos_log_q: Any, neg_log_q: Any) -> tuple[Any, Any]:
    """``(s_pos [B], s_neg [B, K])``: the logits divided by the temperature, minus their log Q where given."""
    if isinstance(temperature, float) and temperature == 1.0:
        s_pos, s_neg = pos_logit, neg_logit
    else:
        s_pos, s_neg = pos_logit / temperature, neg_logit / temperature
    if pos_log_q is not None:
        s_pos = s_pos - pos_log_q
    if neg_log_q is not None:
        s_neg = s_neg - neg_log_q
    return s_pos, s_neg


def softmax_row_losses(ops: Ops, pos_logit: Any, neg_logit: Any, keep: Any, temperature: Any,
                       pos_log_q: Any, neg_log_q: Any, num_hard_negatives: int | None,
                       label_smoothing: float = 0.0, z_loss: float = 0.0) -> Any:
    """Row losses ``logsumexp([s_pos, kept s_k]) - s_pos``, ``[B]``, in the order the catalogue documents, with
    label smoothing and z-loss (:func:`regularized_rows`) where asked.

    ``s = logit / temperature - log_q``; then candidates with ``keep`` False are removed; then only the
    ``num_hard_negatives`` largest remaining negatives are kept. Removed entries must already hold finite
    values (the callers zero masked inputs first), so that no gradient of theirs is NaN.
    """
    s_pos, s_neg = row_scores(pos_logit, neg_logit, temperature, pos_log_q, neg_log_q)
    num_neg = ops.size(s_neg, 1)
    static = not known_only_at_run_time(num_neg)
    if static and num_neg == 0:
        return regularized_rows(ops, s_pos * 0.0, s_pos, None, None, 0.0, z_loss)
    if num_hard_negatives is not None:
        if keep is not None:
            s_neg = ops.where(keep, s_neg, NEG_INF)
        k = min(num_hard_negatives, num_neg) if static else ops.minimum(num_hard_negatives, num_neg)
        s_neg = ops.top_k(s_neg, k)
        if keep is not None:
            keep = s_neg > NEG_INF
            s_neg = ops.where(keep, s_neg, 0.0)
    rows = log1p_row_losses(ops, s_pos, s_neg, keep)
    if not label_smoothing:
        return regularized_rows(ops, rows, s_pos, None, None, 0.0, z_loss)
    gaps = s_pos[:, None] - s_neg
    if keep is None:
        return regularized_rows(ops, rows, s_pos, ops.sum(gaps, 1), ops.to_float(ops.size(s_neg, 1), rows),
                                label_smoothing, z_loss)
    return regularized_rows(ops, rows, s_pos, ops.sum(ops.where(keep, gaps, 0.0), 1),
                            ops.sum(ops.cast(keep, dtype_name(rows.dtype)), 1), label_smoothing, z_loss)


def regularized_rows(ops: Ops, rows: Any, s_pos: Any, gap_sum: Any, count: Any, label_smoothing: float,
                     z_loss: float) -> Any:
    """Softmax rows ``rows = lse - s_pos`` ``[B]`` with label smoothing ``eps`` and the z-loss ``c``:
    ``rows + eps gap_sum / (1 + count) + c (rows + s_pos)^2``.

    ``count`` is the number of the row's kept negatives and ``gap_sum`` the sum of ``s_pos - s_c`` over them:
    ``(1 - eps)(lse - s_pos) + eps (lse - mean of the kept s, the positive included)`` is ``(lse - s_pos) +
    eps (s_pos - mean)``, and ``s_pos - mean = gap_sum / (1 + count)``. ``lse = rows + s_pos`` is the row's
    log-sum-exp. Returns ``rows`` itself where both are 0.
    """
    if not label_smoothing and not z_loss:
        return rows
    out = rows
    if label_smoothing and gap_sum is not None:
        out = out + label_smoothing * (gap_sum / (1.0 + count))
    if z_loss:
        lse = rows + s_pos
        out = out + z_loss * (lse * lse)
    return out


def log1p_row_losses(ops: Ops, s_pos: Any, s_neg: Any, keep: Any) -> Any:
    """``logsumexp([s_pos, kept s_k]) - s_pos`` as ``(m - s_pos) + log1p(r)``, ``[B]``.

    ``m`` is one maximal candidate of the row (the positive on ties) and ``r`` the sum of ``exp(s - m)`` over
    every other kept candidate. Where the positive is the maximum, ``r`` is the negatives' sum alone, never
    added to 1 before the logarithm: a confident row (the positive 20 or more above every negative) keeps its
    loss ``~ exp(-gap)`` and a gradient of the right sign in float32. Where a negative is the maximum, its term
    (exactly 1) is taken back out with ``expm1(s_pos - m)``, which adds the positive's. ``m`` is the chosen
    score itself (``ops.max_one`` routes its gradient to that one entry), so derivatives of every order are
    those of the exact log-sum-exp, ties included. Removed entries (``keep`` False) contribute exactly 0.
    """
    candidates = s_neg if keep is None else ops.where(keep, s_neg, NEG_INF)
    neg_max = ops.max_one(candidates)                          # -inf for a row with no candidate left
    pos_wins = s_pos >= neg_max                                # ties go to the positive
    m = ops.where(pos_wins, s_pos, neg_max)
    rest = ops.sum(ops.exp(candidates - m[:, None]), 1) + ops.where(pos_wins, 0.0, ops.expm1(s_pos - m))
    # Not m - s_pos where the positive is m: its two gradients (+1 and -1) would cancel what log1p kept.
    return ops.where(pos_wins, 0.0, neg_max - s_pos) + ops.log1p(rest)


def retrieval_row_losses(ops: Ops, bound: Bound, query_emb: Any, pos_emb: Any, neg_emb: Any, *,
                         temperature: Any, in_batch: bool, pos_log_q: Any, neg_log_q: Any, pos_ids: Any,
                         neg_ids: Any, num_hard_negatives: int | None, implementation: str = "materialized",
                         columns: Columns | None = None, query_ids: Any = None, label_smoothing: float = 0.0,
                         z_loss: float = 0.0) -> Any:
    """Row losses of the embedding softmax: score the candidates, then :func:`softmax_row_losses`.

    The candidate columns are ``columns`` (gathered from every worker with the ``gather`` option, see
    :mod:`recloss.kernels.distributed`), by default the local ones: the in-batch ``pos_emb`` (row ``i``'s own
    positive is column ``columns.offset + i``) and ``neg_emb``. With ``query_ids`` the in-batch columns whose
    query id (``columns.in_batch_query_ids``) equals the row's are removed. With ``implementation``
    ``"streaming"`` (or ``"auto"`` at a large size) the rows come from :func:`streaming_row_losses` instead, which
    never materialises the ``[B, B + N]`` block.
    """
    shared = neg_emb is not None and bound.form("neg_emb") == ("N", "D")
    if columns is None:
        columns = local_columns(ops, in_batch, pos_emb, pos_log_q, pos_ids, neg_emb, neg_log_q, neg_ids, shared,
                                query_ids)
    streamed = streaming_row_losses(ops, bound, query_emb, pos_emb, neg_emb, temperature=temperature,
                                    in_batch=in_batch, pos_log_q=pos_log_q, neg_log_q=neg_log_q, pos_ids=pos_ids,
                                    neg_ids=neg_ids, num_hard_negatives=num_hard_negatives,
                                    implementation=implementation, columns=columns, query_ids=query_ids,
                                    label_smoothing=label_smoothing, z_loss=z_loss)
    if streamed is not None:
        return streamed
    pos_logit = ops.rowdot(query_emb, pos_emb)
    blocks, keeps, log_qs = [], [], []
    if in_batch:
        scores = ops.dot_nt(query_emb, columns.in_batch)
        rows = ops.row_index(query_emb)
        keep = ops.not_equal(_shifted(rows, columns.offset)[:, None], ops.row_index(columns.in_batch)[None, :])
        if pos_ids is not None:
            keep = ops.logical_and(keep, ops.not_equal(pos_ids[:, None], columns.in_batch_ids[None, :]))
        if query_ids is not None:
            keep = ops.logical_and(keep, ops.not_equal(query_ids[:, None], columns.in_batch_query_ids[None, :]))
        blocks.append(scores)
        keeps.append(keep)
        log_qs.append(None if pos_log_q is None else columns.in_batch_log_q[None, :])
    if neg_emb is not None:
        neg_emb, neg_log_q, neg_ids = columns.neg, columns.neg_log_q, columns.neg_ids
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
    if num_hard_negatives is None and not label_smoothing and not z_loss:
        return lse_row_losses(ops, pos_logit, neg_logit, keep, temperature, pos_log_q, log_q)
    return softmax_row_losses(ops, pos_logit, neg_logit, keep, temperature, pos_log_q, log_q,
                              num_hard_negatives, label_smoothing, z_loss)


def lse_row_losses(ops: Ops, pos_logit: Any, neg_logit: Any, keep: Any, temperature: Any, pos_log_q: Any,
                   neg_log_q: Any) -> Any:
    """The rows of :func:`softmax_row_losses` without ``num_hard_negatives``, as
    ``softplus(lse - s_pos)`` with ``lse`` the log-sum-exp of the kept negatives only, ``[B]``.

    ``logsumexp([s_pos, s]) - s_pos = log(1 + exp(lse - s_pos))``: a confident row keeps its loss and gradient
    (``softplus(-21.6) = 4.2e-10``, derivative ``sigmoid``), and autodiff of these few operations gives the
    exact derivatives of every order (``m``, the row maximum, carries no gradient: it cancels). Compiled, this is
    the plain log-softmax's work: one reduction for the maximum, one for the sum of exponentials. A row with no
    negative left has ``lse = -inf`` and loss 0, with zero gradients (both ``where`` branches are finite).
    """
    s_pos, s_neg = row_scores(pos_logit, neg_logit, temperature, pos_log_q, neg_log_q)
    num_neg = ops.size(s_neg, 1)
    if not known_only_at_run_time(num_neg) and num_neg == 0:
        return s_pos * 0.0
    if keep is not None:
        s_neg = ops.where(keep, s_neg, NEG_INF)
    row_max = ops.stop_gradient(ops.max(s_neg, 1))
    empty = row_max == NEG_INF
    shift = ops.where(empty, 0.0, row_max)
    total = ops.sum(ops.exp(s_neg - shift[:, None]), 1)
    return ops.softplus(ops.where(empty, NEG_INF, shift + ops.log(ops.where(empty, 1.0, total))) - s_pos)


def local_columns(ops: Ops, in_batch: bool, pos_emb: Any, pos_log_q: Any, pos_ids: Any, neg_emb: Any,
                  neg_log_q: Any, neg_ids: Any, shared: bool, query_ids: Any = None) -> Columns:
    """The candidate columns of one device: the local positives (if ``in_batch``) and negatives."""
    if not in_batch:
        pos_emb = pos_log_q = pos_ids = query_ids = None
    return candidate_columns(ops, None, in_batch=pos_emb, in_batch_log_q=pos_log_q, in_batch_ids=pos_ids,
                             in_batch_query_ids=query_ids, neg=neg_emb, neg_log_q=neg_log_q, neg_ids=neg_ids,
                             shared=shared)


def _shifted(rows: Any, offset: Any) -> Any:
    """``rows + offset``; ``rows`` itself for the offset 0 of one device."""
    return rows if isinstance(offset, int) and offset == 0 else rows + offset


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
                         neg_ids: Any, num_hard_negatives: int | None, implementation: str,
                         columns: Columns | None = None, query_ids: Any = None, label_smoothing: float = 0.0,
                         z_loss: float = 0.0) -> Any:
    """Row losses by the streaming path, or None where the materialised path is to be used.

    The backend's ``ops.streaming_row_losses(q, s_pos, sources, row_ids, chunk, store_bytes, sums)`` computes
    ``(m - s_pos) + log(exp(s_pos - m) + sum_c kept exp(s_c - m))`` over chunks of candidate columns with a
    custom backward that recomputes each chunk's scores (or, when the whole block fits in
    ``STREAMING_STORE_BYTES``, keeps the chunks' ``exp(s - m)`` from the forward: ``store_bytes``). ``q`` is
    ``query_emb / T`` (so the temperature's gradient comes from autodiff), ``s_pos`` the positive score (kept out
    of the block), and each source is ``(keys [M, D], log_q [M] | None, ids [M] | None, diagonal)``: a
    candidate ``c`` of row ``i`` is removed where ``ids[c] == row_ids[i]`` or where it is one of the row's own
    columns, given by ``diagonal``: None (none), an offset (column ``diagonal + i``, the row's own positive: 0 on
    one device, an int or a scalar integer tensor with ``gather``) or, with ``query_ids``, a pair ``(row_groups
    [B], column_groups [M])`` (every column whose group equals the row's: the positives of the rows of the same
    query, its own included). With ``sums=True`` (label smoothing) the op returns ``(rows, score_sum, count)``:
    the sum of the kept candidates' scores ``s_c`` (differentiable) and their number (a constant), beside the
    rows. The keys are ``columns``' (gathered with ``gather``). Falls back (None) for per-row ``[B, K, D]``
    negatives, ``num_hard_negatives``, sizes unknown at trace time, or a backend without the op.
    """
    if implementation == "materialized" or num_hard_negatives is not None:
        return None
    stream = getattr(ops, "streaming_row_losses", None)
    if stream is None or (neg_emb is not None and bound.form("neg_emb") != ("N", "D")):
        return None
    if columns is None:
        columns = local_columns(ops, in_batch, pos_emb, pos_log_q, pos_ids, neg_emb, neg_log_q, neg_ids, True,
                                query_ids)
    sizes = [ops.size(query_emb, 0)] + ([ops.size(columns.in_batch, 0)] if in_batch else []) + (
        [] if neg_emb is None else [ops.size(columns.neg, 0)])
    if any(known_only_at_run_time(size) for size in sizes):
        return None
    if implementation == "auto" and sizes[0] * sum(sizes[1:]) < STREAMING_MIN_LOGITS:
        return None
    block_bytes = sizes[0] * sum(sizes[1:]) * (8 if bound.dtype == "float64" else 4)
    store_bytes = STREAMING_STORE_BYTES if block_bytes <= STREAMING_STORE_BYTES else 0
    if implementation == "auto" and store_bytes and not getattr(ops, "streaming_stores", lambda: True)():
        # The backend cannot keep the chunks here (torch.compile): the materialised block holds the memory
        # that kept chunks would, and its backward takes two products instead of recomputing a third.
        return None
    # The streaming modules multiply in the compute dtype (half operands are cast here).
    query_emb, pos_emb, neg_emb = (upcast(ops, bound, x) for x in (query_emb, pos_emb, neg_emb))
    sources = []
    if in_batch:
        sources.append((upcast(ops, bound, columns.in_batch), columns.in_batch_log_q, columns.in_batch_ids,
                        own_columns(columns, pos_ids, query_ids)))
    if neg_emb is not None:
        sources.append((upcast(ops, bound, columns.neg), columns.neg_log_q, columns.neg_ids, None))
    s_pos = ops.rowdot(query_emb, pos_emb) / temperature
    if pos_log_q is not None:
        s_pos = s_pos - pos_log_q
    q = query_emb / temperature
    if not label_smoothing:
        rows = stream(q, s_pos, tuple(sources), pos_ids, STREAMING_CHUNK, store_bytes)
        return regularized_rows(ops, rows, s_pos, None, None, 0.0, z_loss)
    rows, score_sum, count = stream(q, s_pos, tuple(sources), pos_ids, STREAMING_CHUNK, store_bytes, sums=True)
    return regularized_rows(ops, rows, s_pos, count * s_pos - score_sum, count, label_smoothing, z_loss)


def own_columns(columns: Columns, pos_ids: Any, query_ids: Any) -> Any:
    """The ``diagonal`` of the in-batch source (see :func:`streaming_row_losses`): the row's query group with
    ``query_ids``; else its own positive's column offset, or None where ``pos_ids`` removes that column anyway
    (a row's positive has the row's id)."""
    if query_ids is not None:
        return query_ids, columns.in_batch_query_ids
    return columns.offset if pos_ids is None else None


# ----------------------------------------------------------------------------------------------------------
# The losses. Each takes (ops, bound, **arguments) and returns the reduced loss.


def comparable_ids(ops: Ops, bound: Bound, pos_ids: Any, neg_ids: Any) -> tuple[Any, Any]:
    """``pos_ids`` and ``neg_ids`` in one integer dtype that holds every value of both, so that ``==`` compares
    them by value on every backend (e.g. int64 with uint32 -> int64); ids of one dtype are returned as they are."""
    if neg_ids is None or bound.dtypes["pos_ids"] == bound.dtypes["neg_ids"]:
        return pos_ids, neg_ids
    common = check_comparable_ids(bound, "pos_ids", "neg_ids", ops.int_bits())
    return ops.cast_int(pos_ids, common), ops.cast_int(neg_ids, common)


def softmax_loss(ops: Ops, bound: Bound, pos_logit: Any, neg_logit: Any, *, neg_mask: Any, temperature: Any,
                 pos_log_q: Any, neg_log_q: Any, num_hard_negatives: int | None, label_smoothing: float = 0.0,
                 z_loss: float = 0.0, sample_weight: Any, reduction: str) -> Any:
    pos, neg, pos_q, neg_q, weight = (upcast(ops, bound, x)
                                      for x in (pos_logit, neg_logit, pos_log_q, neg_log_q, sample_weight))
    if neg_mask is not None:
        # Removed entries may hold anything (inf, NaN): zero them before any arithmetic, so that neither the
        # value nor any gradient (the temperature's included) can see them.
        neg, neg_q = (None if x is None else ops.where(neg_mask, x, 0.0) for x in (neg, neg_q))
    rows = softmax_row_losses(ops, pos, neg, neg_mask, scalar(ops, bound, temperature), pos_q, neg_q,
                              num_hard_negatives, float(label_smoothing), float(z_loss))
    return reduce_rows(ops, rows, weight, reduction, (pos, pos_q, neg, neg_q))


@fused.path
@block.path
def sampled_softmax_loss(ops: Ops, bound: Bound, query_emb: Any, pos_emb: Any, neg_emb: Any, *,
                         temperature: Any, in_batch: bool | None, pos_log_q: Any, neg_log_q: Any, pos_ids: Any,
                         neg_ids: Any, query_ids: Any = None, num_hard_negatives: int | None,
                         label_smoothing: float = 0.0, z_loss: float = 0.0, sample_weight: Any,
                         reduction: str, implementation: str = "auto", product_precision: str = "input",
                         gather: Any = None, shard_negatives: Any = None) -> Any:
    q, p, n = product_operands(ops, bound, product_precision, query_emb, pos_emb, neg_emb)
    pos_q, neg_q, weight = (upcast(ops, bound, x) for x in (pos_log_q, neg_log_q, sample_weight))
    pos_ids, neg_ids = comparable_ids(ops, bound, pos_ids, neg_ids)
    in_batch = (neg_emb is None) if in_batch is None else in_batch
    inputs = dict(query_emb=query_emb, pos_emb=pos_emb, neg_emb=neg_emb, pos_log_q=pos_log_q, neg_log_q=neg_log_q,
                  pos_ids=pos_ids, neg_ids=neg_ids, query_ids=query_ids, sample_weight=sample_weight)
    shards = collectives(ops, bound, shard_negatives, inputs, "shard_negatives")
    if shards is not None:   # the negatives are this worker's shard of one table: recloss.kernels.sharded
        rows = sharded.row_losses(ops, bound, shards, q, p, n, temperature=scalar(ops, bound, temperature),
                                  in_batch=in_batch, pos_log_q=pos_q, neg_log_q=neg_q, pos_ids=pos_ids,
                                  neg_ids=neg_ids, num_hard_negatives=num_hard_negatives,
                                  implementation=implementation, gather_in_batch=gather_requested(gather) is not None,
                                  reduction=reduction)
        return reduce_rows(ops, rows, weight, reduction, (*_guarded(ops, bound, q, p, n), pos_q, neg_q), shards)
    comm = collectives(ops, bound, gather, inputs)
    columns = None
    if comm is not None:
        shared = n is not None and bound.form("neg_emb") == ("N", "D")
        columns = candidate_columns(ops, comm, in_batch=p if in_batch else None,
                                    in_batch_log_q=pos_q if in_batch else None,
                                    in_batch_ids=pos_ids if in_batch else None,
                                    in_batch_query_ids=query_ids if in_batch else None,
                                    neg=n, neg_log_q=neg_q, neg_ids=neg_ids, shared=shared)
    rows = retrieval_row_losses(ops, bound, q, p, n, temperature=scalar(ops, bound, temperature),
                                in_batch=in_batch, pos_log_q=pos_q, neg_log_q=neg_q, pos_ids=pos_ids,
                                neg_ids=neg_ids, num_hard_negatives=num_hard_negatives,
                                implementation=implementation, columns=columns, query_ids=query_ids,
                                label_smoothing=float(label_smoothing), z_loss=float(z_loss))
    return reduce_rows(ops, rows, weight, reduction, (*_guarded(ops, bound, q, p, n), pos_q, neg_q), comm)


@fused.path
@block.path
def unsupervised_softmax_cross_entropy_loss(ops: Ops, bound: Bound, src_emb: Any, pos_emb: Any, neg_emb: Any, *,
                                            temperature: Any, label_smoothing: float = 0.0, z_loss: float = 0.0,
                                            sample_weight: Any, reduction: str,
                                            implementation: str = "auto", product_precision: str = "input",
                                            gather: Any = None, shard_negatives: Any = None) -> Any:
    q, p, n = product_operands(ops, bound, product_precision, src_emb, pos_emb, neg_emb)
    weight = upcast(ops, bound, sample_weight)
    inputs = dict(src_emb=src_emb, pos_emb=pos_emb, neg_emb=neg_emb, sample_weight=sample_weight)
    shards = collectives(ops, bound, shard_negatives, inputs, "shard_negatives")
    if shards is not None:   # the negatives are this worker's shard of one table: recloss.kernels.sharded
        rows = sharded.row_losses(ops, bound, shards, q, p, n, temperature=scalar(ops, bound, temperature),
                                  in_batch=False, pos_log_q=None, neg_log_q=None, pos_ids=None, neg_ids=None,
                                  num_hard_negatives=None, implementation=implementation, gather_in_batch=False,
                                  reduction=reduction)
        return reduce_rows(ops, rows, weight, reduction, _guarded(ops, bound, q, p, n), shards)
    comm = collectives(ops, bound, gather, inputs)
    columns = None if comm is None else candidate_columns(ops, comm, neg=n)
    rows = retrieval_row_losses(ops, bound, q, p, n, temperature=scalar(ops, bound, temperature), in_batch=False,
                                pos_log_q=None, neg_log_q=None, pos_ids=None, neg_ids=None, num_hard_negatives=None,
                                implementation=implementation, columns=columns,
                                label_smoothing=float(label_smoothing), z_loss=float(z_loss))
    return reduce_rows(ops, rows, weight, reduction, _guarded(ops, bound, q, p, n), comm)


@fused.path
@block.path
def info_nce_loss(ops: Ops, bound: Bound, query_emb: Any, key_emb: Any, *, temperature: Any, symmetric: bool,
                  normalize: bool, ids: Any, query_ids: Any = None, label_smoothing: float = 0.0,
                  z_loss: float = 0.0, sample_weight: Any, reduction: str,
                  implementation: str = "auto", product_precision: str = "input", gather: Any = None) -> Any:
    q, k = product_operands(ops, bound, product_precision, query_emb, key_emb)
    weight = upcast(ops, bound, sample_weight)
    if normalize:
        q, k = _normalized(ops, bound, q), _normalized(ops, bound, k)
    comm = collectives(ops, bound, gather, dict(query_emb=query_emb, key_emb=key_emb, ids=ids,
                                                query_ids=query_ids, sample_weight=sample_weight))
    keys_columns = queries_columns = None
    if comm is not None:   # every worker's keys (and, for the other direction, queries) as columns
        ((all_k, all_q, all_ids, all_query_ids),), (offset,) = gather_rows(
            ops, comm, [[k, q if symmetric else None, ids, query_ids]])
        keys_columns = Columns(all_k, None, all_ids, offset, in_batch_query_ids=all_query_ids)
        queries_columns = Columns(all_q, None, all_ids, offset, in_batch_query_ids=all_query_ids)
    common = dict(temperature=scalar(ops, bound, temperature), in_batch=True, pos_log_q=None, neg_log_q=None,
                  pos_ids=ids, neg_ids=None, num_hard_negatives=None, implementation=implementation,
                  query_ids=query_ids, label_smoothing=float(label_smoothing), z_loss=float(z_loss))
    rows = retrieval_row_losses(ops, bound, q, k, None, **common, columns=keys_columns)
    if symmetric:
        rows = 0.5 * (rows + retrieval_row_losses(ops, bound, k, q, None, **common, columns=queries_columns))
    return reduce_rows(ops, rows, weight, reduction, _guarded(ops, bound, q, k), comm)


def _normalized(ops: Ops, bound: Bound, x: Any) -> Any:
    """``x / ||x||`` computed in the compute dtype, returned in ``x``'s precision (a half operand stays half)."""
    unit = l2_normalize(ops, upcast(ops, bound, x))
    precision = dtype_name(x.dtype)
    return unit if precision == bound.dtype else ops.cast(unit, precision)


def _guarded(ops: Ops, bound: Bound, *embeddings: Any) -> tuple:
    """The embeddings as the non-finite guard reads them: in the compute dtype (half operands are copied)."""
    return tuple(upcast(ops, bound, x) for x in embeddings)
