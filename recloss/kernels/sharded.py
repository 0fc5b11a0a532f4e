"""The softmax over a catalogue split across workers: the ``shard_negatives`` option.

With ``shard_negatives``, worker ``w``'s shared negatives ``neg_emb [N_w, D]`` (with ``neg_log_q [N_w]`` and
``neg_ids [N_w]``) are its shard of one candidate set, the concatenation of every worker's shard in worker
order, and the global batch is the concatenation of the local batches. Every global row is scored against
every shard, but no shard leaves its worker: the rows travel (their queries, positive scores and ids) and a few
numbers per row come back, as in Megatron's vocabulary-parallel cross-entropy.

The math. Split row ``i``'s candidates into parts ``k``: its in-batch candidates (on the row's own worker) and
one part per shard. Against its positive score ``s_pos_i``, each part has the row loss

    L_ik = log1p(rho_ik),   rho_ik = sum over the part's kept candidates c of exp(s_ic - s_pos_i),

which is what the streaming, materialised or fused row computation returns for that part alone (with its
confident-row care: ``(m - s_pos) + log1p(...)``, exact at large logits and for a confident row). The row's
loss over all its candidates is

    l_i = log1p(sum_k rho_ik) = softplus(logsumexp_k a_ik),   a_ik = log(rho_ik) = L_ik + log(-expm1(-L_ik)),

stable for every ``L > 0`` (a part with nothing kept has ``a = -inf``; an ``L`` below the dtype's smallest
normal number, a contribution under 1e-38 in float32, is counted as nothing). The logsumexp over the shards
is one more reduction of per-row numbers across the workers: their maximum (``all_reduce_max``, without
gradient: any common shift is exact) and the sum of ``exp(a - max)`` (``all_reduce_sum``, differentiated).
Everything after the parts' row losses is ordinary differentiable arithmetic, so the parts' own backwards
(the streaming path's recomputing backward, the fused kernels' backward) give every gradient, with no
communication of their own beyond the collectives' transposes.

On worker ``r`` with ``B_r`` local rows (``B = sum_w B_w``):

1. one exchange of sizes (and of ``D`` and the dtypes, which must agree), then the rows gathered: queries
   ``[B, D]``, positive scores ``[B]``, and with ``neg_ids`` the positive ids ``[B]`` (with ``gather`` also the
   positives ``[B, D]`` and their ``log_q`` and ids, the in-batch candidates);
2. ``L`` of every global row against the local shard, ``[B]``;
3. ``a``'s maximum over the workers and the sum of ``exp(a - max)``, each ``[B]``; this worker's rows of
   them give ``a_shards = max + log(sum)``;
4. the in-batch part of the local rows, if any, ``L_local [B_r]`` against the local positives (or the gathered
   ones with ``gather``), as without the option;
5. ``l_i = softplus(logaddexp(a_local, a_shards))``, then the global reduction of ``gather``.

Gradients: the collectives differentiate as for ``gather`` (a gather's transpose returns each worker its rows
of the summed cotangents; an all-reduce's, the summed cotangent), so the queries and positives follow the
framework's data-parallel convention. The shard's gradient is the global loss's exactly: on torch, where
each rank's backward of the global loss counts it ``W`` times (``backward_copies``) for DDP to average, the
shard's gradient is divided by ``W``, since a shard is held by one rank and never averaged.

``num_hard_negatives`` is exact too: each worker keeps the ``h`` largest scores of every global row in its
shard (materialised), the workers' ``[B, h]`` blocks are gathered, and each row keeps the ``h`` largest of
its in-batch scores and the ``W h`` gathered ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recloss._spec import FLOAT_DTYPES, INT_DTYPES, Bound
from recloss._validate import dtype_name, fail
from recloss.errors import DTypeError, ShapeError
from recloss.kernels import fused
from recloss.kernels._common import NEG_INF, Ops, known_only_at_run_time, upcast
from recloss.kernels.distributed import Collectives, Columns

#: The smallest normal number of each compute dtype: a part's row loss below it counts as nothing (its
#: logarithm's derivative would overflow, for a contribution that rounds to nothing in the row's loss).
_TINY = {"float32": float(np.finfo(np.float32).tiny), "float64": float(np.finfo(np.float64).tiny)}


def row_losses(ops: Ops, bound: Bound, shards: Collectives, q: Any, p: Any, n: Any, *, temperature: Any,
               in_batch: bool, pos_log_q: Any, neg_log_q: Any, pos_ids: Any, neg_ids: Any,
               num_hard_negatives: int | None, implementation: str, gather_in_batch: bool, reduction: str) -> Any:
    """The local rows' losses ``[B_r]`` against every worker's shard (and the in-batch candidates).

    ``q``, ``p``, ``n`` are the product operands (``[B_r, D]``, ``[B_r, D]``, the shard ``[N_w, D]``),
    ``temperature`` a float or a 0-d tensor, ``pos_log_q``/``neg_log_q`` in the compute dtype, the ids in one
    comparable dtype. ``gather_in_batch``: the in-batch candidates are every worker's positives (``gather``
    set, on the same group), else the local ones. The caller reduces the rows with ``shards``.
    """
    copies = shards.backward_copies if reduction != "none" else 1
    if copies != 1:   # a shard is held by one worker: its gradient is the global loss's, counted once
        n = shards.scale_gradient(n, 1.0 / copies)
        if neg_log_q is not None:
            neg_log_q = shards.scale_gradient(neg_log_q, 1.0 / copies)
    s_pos = ops.rowdot(upcast(ops, bound, q), upcast(ops, bound, p)) / temperature
    if pos_log_q is not None:
        s_pos = s_pos - pos_log_q
    gather_in_batch = gather_in_batch and in_batch
    local_count = ops.size(q, 0)
    sizes = _exchange(bound, shards, local_count, q, pos_ids if neg_ids is not None or gather_in_batch else None)
    offset = shards.offset(sizes)
    rows_q, rows_s_pos, rows_p, rows_log_q = _gather_rows(ops, bound, shards, sizes, q, s_pos,
                                                          p if gather_in_batch else None, pos_log_q)
    rows_ids = None
    if neg_ids is not None or (gather_in_batch and pos_ids is not None):
        rows_ids = shards.all_gather(pos_ids, sizes)    # compared with the shard's ids and the in-batch ones
    columns = None
    if gather_in_batch:
        columns = Columns(rows_p, rows_log_q, rows_ids, offset)
    elif in_batch:
        columns = Columns(p, pos_log_q, pos_ids, 0)
    shard_ids = None if neg_ids is None else rows_ids

    if num_hard_negatives is not None:
        return _hard_row_losses(ops, bound, shards, q, s_pos, n, rows_q, rows_s_pos, shard_ids, offset, local_count,
                                temperature=temperature, neg_log_q=neg_log_q, pos_ids=pos_ids, neg_ids=neg_ids,
                                num_hard_negatives=num_hard_negatives, columns=columns)

    shard_rows = part_row_losses(ops, bound, rows_q, rows_s_pos, n, neg_log_q, neg_ids, shard_ids, temperature,
                                 implementation, _row_estimate(shards, sizes, local_count))
    a = log_ratio(ops, bound, shard_rows)
    top = shards.all_reduce_max(ops.stop_gradient(a))
    top = ops.where(top > NEG_INF, top, 0.0)          # a row no shard keeps anything of: every a is -inf
    total = shards.all_reduce_sum(ops.exp(a - top))
    top, total = shards.local_rows(top, offset, local_count), shards.local_rows(total, offset, local_count)
    a_rows = _log_or_minus_inf(ops, total, top)
    if in_batch:
        from recloss.kernels.softmax import retrieval_row_losses
        local = retrieval_row_losses(
            ops, bound, q, p, None, temperature=temperature, in_batch=True, pos_log_q=pos_log_q, neg_log_q=None,
            pos_ids=pos_ids, neg_ids=None, num_hard_negatives=None,
            implementation="auto" if implementation == "fused" else implementation,
            columns=columns if gather_in_batch else None)
        a_rows = _log_add_exp(ops, log_ratio(ops, bound, local), a_rows)
    return ops.softplus(a_rows)


def _gather_rows(ops: Ops, bound: Bound, shards: Collectives, sizes: Any, q: Any, s_pos: Any, p: Any,
                 pos_log_q: Any) -> tuple:
    """Every worker's queries ``[B, D]`` and positive scores ``[B]`` (and, where ``p`` is given, positives and
    their ``log_q``: the gathered in-batch candidates), in one gather of one ``[B_r, D + 1 (+ D + 1)]`` block
    in the compute dtype. One gather, not one per tensor: every worker's backward must run the collectives'
    transposes in the same order, and with one gather of the rows the dependencies fix that order (the
    global reduction's, then the shards' sum's, then the rows'), even where the workers' graphs differ (an
    empty shard, or "auto" streaming one shard and materialising another). The queries come back in their
    own dtype (a half dtype converts exactly), and the positives in theirs, for the products."""
    dim = q.shape[1]
    pieces = [upcast(ops, bound, q), s_pos[:, None]]
    if p is not None:
        pieces.append(upcast(ops, bound, p))
        if pos_log_q is not None:
            pieces.append(pos_log_q[:, None])
    rows = shards.all_gather(ops.concat(pieces, 1), sizes)

    def own_dtype(x: Any, like: Any) -> Any:
        return x if dtype_name(like.dtype) == bound.dtype else ops.cast(x, dtype_name(like.dtype))
    rows_p = None if p is None else own_dtype(rows[:, dim + 1:2 * dim + 1], p)
    rows_log_q = None if p is None or pos_log_q is None else rows[:, 2 * dim + 1]
    return own_dtype(rows[:, :dim], q), rows[:, dim], rows_p, rows_log_q


def part_row_losses(ops: Ops, bound: Bound, rows: Any, s_pos: Any, keys: Any, log_q: Any, ids: Any, row_ids: Any,
                    temperature: Any, implementation: str, estimate: int | None) -> Any:
    """``log1p(sum_c kept exp(s_c - s_pos))`` of every row of ``rows`` ``[R, D]`` against one set of keys
    ``[M, D]`` (``s_c = rows . k_c / T - log_q_c``; a key is removed where its id equals the row's): the fused
    kernels where they apply, the streaming path where ``implementation`` says so (``"auto"``: from
    ``estimate * M >= STREAMING_MIN_LOGITS``, ``estimate`` the number of rows, or None where it is unknown),
    else the materialised block."""
    from recloss.kernels import softmax

    fused_rows = fused.part_row_losses(ops, bound, implementation, rows, s_pos, keys, log_q, ids, row_ids,
                                       temperature)
    if fused_rows is not None:
        return fused_rows
    count = ops.size(keys, 0)
    static = not known_only_at_run_time(count)
    if static and count == 0:
        # Zeros that depend on the rows all the same: every worker's backward must run the same collectives,
        # and the rows' gather is transposed only where its output is used (an empty shard among others).
        return s_pos * 0.0 + ops.sum(upcast(ops, bound, rows), 1) * 0.0
    stream = getattr(ops, "streaming_row_losses", None)
    if stream is not None and static and implementation != "materialized" and (
            implementation == "streaming" or (estimate is not None and estimate * count >= softmax.STREAMING_MIN_LOGITS)):
        # The forward's chunks are kept for the backward only where the block fits and its rows are known now.
        block = ops.size(rows, 0)
        block_bytes = None if known_only_at_run_time(block) else block * count * (8 if bound.dtype == "float64" else 4)
        store = softmax.STREAMING_STORE_BYTES if block_bytes is not None and block_bytes <= softmax.STREAMING_STORE_BYTES else 0
        sources = ((upcast(ops, bound, keys), log_q, ids, None),)
        return stream(upcast(ops, bound, rows) / temperature, s_pos, sources, row_ids, softmax.STREAMING_CHUNK, store)
    scores = _scores(ops, rows, keys, log_q, temperature)
    keep = None if ids is None else ops.not_equal(row_ids[:, None], ids[None, :])
    return softmax.log1p_row_losses(ops, s_pos, scores, keep)


def log_ratio(ops: Ops, bound: Bound, row_loss: Any) -> Any:
    """``log(rho) = L + log(-expm1(-L))`` of a part's row loss ``L = log1p(rho)``; -inf where ``L`` is 0 (nothing
    kept) or below the smallest normal number (see the module docstring), with a zero gradient there."""
    counted = row_loss > _TINY[bound.dtype]
    safe = ops.where(counted, row_loss, 1.0)
    return ops.where(counted, safe + ops.log(-ops.expm1(-safe)), NEG_INF)


def _log_or_minus_inf(ops: Ops, total: Any, shift: Any) -> Any:
    """``shift + log(total)``, -inf where ``total`` is 0 (with a zero gradient there)."""
    positive = total > 0
    return ops.where(positive, shift + ops.log(ops.where(positive, total, 1.0)), NEG_INF)


def _log_add_exp(ops: Ops, a: Any, b: Any) -> Any:
    """``log(exp(a) + exp(b))`` elementwise, -inf where both are (with zero gradients there)."""
    top = ops.stop_gradient(ops.maximum(a, b))
    top = ops.where(top > NEG_INF, top, 0.0)
    return _log_or_minus_inf(ops, ops.exp(a - top) + ops.exp(b - top), top)


def _scores(ops: Ops, rows: Any, keys: Any, log_q: Any, temperature: Any) -> Any:
    scores = ops.dot_nt(rows, keys) / temperature
    return scores if log_q is None else scores - log_q[None, :]


def _row_estimate(shards: Collectives, sizes: Any, local_count: Any) -> int | None:
    """The number of global rows where it is known on the host (torch, JAX, TF eagerly); else the local count
    times the number of workers (a TF graph; exact where the local batches are equal); None if neither is."""
    counts = _host_ints(sizes)
    if counts is not None:
        return sum(counts)
    return None if known_only_at_run_time(local_count) else int(local_count) * shards.num_workers()


def _host_ints(values: Any) -> list[int] | None:
    """``values`` (a list of ints, or a tensor of them) as Python ints where they are known now, else None."""
    if isinstance(values, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in values):
        return [int(v) for v in values]
    try:
        return [int(v) for v in np.asarray(values).reshape(-1)]
    except (TypeError, ValueError, NotImplementedError, AttributeError):
        return None   # a symbolic tensor (a TensorFlow graph): known only when it runs


def _exchange(bound: Bound, shards: Collectives, local_count: Any, q: Any, row_ids: Any) -> Any:
    """Every worker's number of rows (one exchange of sizes, as ``gather`` makes), after checking that every
    worker's shard has the same ``D`` and dtype (and the rows' ids the same dtype): shards of one table.
    Raises the shared error on every worker where they differ (the values are known on the host: TF eagerly;
    JAX shapes are the same on every device by construction; torch's exchange checks the whole call first, the
    sizes and dtypes of every argument included, and raises its ``OptionError`` before this one)."""
    dims = ("D", "dtype", "ids")
    dtype = FLOAT_DTYPES.index(dtype_name(q.dtype)) * len(FLOAT_DTYPES) + FLOAT_DTYPES.index(bound.dtype)
    ids = -1 if row_ids is None else INT_DTYPES.index(dtype_name(row_ids.dtype))
    table = shards.sizes([local_count, q.shape[1], dtype, ids])
    for name, values in zip(dims, table[1:]):
        known = _host_ints(values)
        if known is None or len(set(known)) == 1:
            continue
        other = next(w for w, v in enumerate(known) if v != known[0])
        shown = {"D": lambda v: f"D={v}",
                 "dtype": lambda v: f"{FLOAT_DTYPES[v // len(FLOAT_DTYPES)]} embeddings (compute dtype "
                                    f"{FLOAT_DTYPES[v % len(FLOAT_DTYPES)]})",
                 "ids": lambda v: "no ids" if v < 0 else f"{INT_DTYPES[v]} ids"}[name]
        what = {"D": "one embedding size D", "dtype": "one dtype", "ids": "ids of one dtype (`pos_ids`, `neg_ids`)"}
        fail(bound, f"`shard_negatives` needs every worker's shard and rows with {what[name]} (shards of one "
                    f"table); got {shown(known[0])} on worker 0 and {shown(known[other])} on worker {other}",
             ShapeError if name == "D" else DTypeError)
    return table[0]


def _hard_row_losses(ops: Ops, bound: Bound, shards: Collectives, q: Any, s_pos: Any, n: Any, rows_q: Any,
                     rows_s_pos: Any, rows_ids: Any, offset: Any, local_count: Any, *, temperature: Any,
                     neg_log_q: Any, pos_ids: Any, neg_ids: Any, num_hard_negatives: int,
                     columns: Columns | None) -> Any:
    """``num_hard_negatives``: each shard's ``h`` largest scores of every global row (removed ones at -inf),
    gathered from every worker; each local row (positive scores ``s_pos``) keeps the ``h`` largest of them and
    of its in-batch scores (``columns``: the in-batch candidates, or None without them). Materialised, as on one
    device."""
    from recloss.kernels.softmax import softmax_row_losses

    h = num_hard_negatives
    scores = _scores(ops, rows_q, n, neg_log_q, temperature)                         # [B, N_w]
    if neg_ids is not None:
        scores = ops.where(ops.not_equal(rows_ids[:, None], neg_ids[None, :]), scores, NEG_INF)
    count = ops.size(n, 0)
    if known_only_at_run_time(count) or count < h:   # a shard smaller than h: -inf columns fill its top h
        filler = ops.stop_gradient(rows_s_pos[:, None] * 0.0) + NEG_INF             # [B, 1] of -inf
        scores = ops.concat([scores] + [filler] * h, 1)
    tops = ops.top_k(scores, h)                                                     # [B, h]
    total = ops.size(rows_q, 0)
    every = shards.all_gather(tops, [total] * shards.num_workers())                 # [W B, h], worker by worker
    mine = [shards.local_rows(every, w * total + offset, local_count) for w in range(shards.num_workers())]
    blocks = [ops.concat(mine, 1)]                                                  # [B_r, W h]
    keeps = [blocks[0] > NEG_INF]
    if columns is not None:
        block, keep = _in_batch_scores(ops, bound, q, columns, pos_ids, temperature)
        blocks.insert(0, block)
        keeps.insert(0, keep)
    keep = ops.concat(keeps, 1)
    s_neg = ops.where(keep, ops.concat(blocks, 1), 0.0)
    return softmax_row_losses(ops, s_pos, s_neg, keep, 1.0, None, None, h)


def _in_batch_scores(ops: Ops, bound: Bound, q: Any, columns: Columns, pos_ids: Any, temperature: Any) -> tuple:
    """The local rows' scores ``[B_r, M]`` against the in-batch candidates of ``columns`` and which are kept
    (not the row's own positive, column ``offset + i``, and not an accidental hit by id)."""
    scores = _scores(ops, upcast(ops, bound, q), upcast(ops, bound, columns.in_batch), columns.in_batch_log_q,
                     temperature)
    rows = ops.row_index(q)
    if not (isinstance(columns.offset, int) and columns.offset == 0):
        rows = rows + columns.offset
    keep = ops.not_equal(rows[:, None], ops.row_index(columns.in_batch)[None, :])
    if pos_ids is not None:
        keep = ops.logical_and(keep, ops.not_equal(pos_ids[:, None], columns.in_batch_ids[None, :]))
    return scores, keep
