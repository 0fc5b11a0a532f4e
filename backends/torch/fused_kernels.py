"""Triton kernels of the fused softmax rows (imported only when the fused path runs; see ``recloss.backends.torch.fused``).

Two kernels, both recomputing the scores of one ``[BLOCK_B, BLOCK_N]`` tile at a time in on-chip memory:

``row_pass``  grid (row blocks, column splits). For each row of its block it walks its share of the candidate
    blocks and keeps the row maximum ``m`` and ``r = sum exp(s - m)`` over every kept candidate except one
    maximal element (a block's entries equal to its maximum are left out of its sum and counted, ``ties - 1``
    added), so a row far above its negatives keeps its tiny ``r`` in float32. With ``WITH_ACC`` it also
    accumulates ``A = sum exp(s - m) k`` (rescaled when ``m`` grows): the query-side gradient direction, so
    that the backward needs no second pass over the rows.
``key_pass``  grid (column blocks, row splits). For each candidate of its block it walks its share of the row
    blocks and accumulates ``sum_i G_ic q_i`` and ``-sum_i G_ic`` with ``G_ic = g_i exp(s_ic - lse_i)`` (0
    where removed): the gradients of the keys and of their logQ.

With ``WITH_SUMS`` (label smoothing) the row pass also keeps each row's sum of kept scores and their number,
and (with ``WITH_ACC``) ``A2 = sum_kept k`` for the queries' gradient; the key pass then adds ``SUM_GRAD_i``
to ``G_ic`` on every kept pair (``HAS_SUM_GRAD``).

Scores are ``s_ic = (q_i . k_c) * inv_t - log_q_c``; a candidate is removed where it is a padding column, where
``ids_c == row_ids_i`` (``HAS_IDS``), where ``c == i`` (``DIAGONAL``) or where ``col_groups_c == row_groups_i``
(``HAS_GROUPS``, query ids): ``-inf`` in the value, 0 in the gradients. Products take the inputs' dtype with float32 accumulation (``tl.dot``); float32 inputs use
``PRECISION`` ("ieee" unless torch allows TF32); everything else is float32. The softmax weights enter the
products in the inputs' dtype: relative to their block's maximum in the row pass (so at most 1), and, for
float16 (``RESCALE``), scaled per candidate by their largest entry in the key pass, since ``g_i exp(s - lse)``
can fall below float16's normal range (6e-5) at large B or N.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _operand(x, LIKE, DOT_F32: tl.constexpr):
    """``x`` rounded to the dtype of the tensor behind the pointer ``LIKE`` (the inputs'), as a product operand;
    with ``DOT_F32`` (Triton's interpreter, whose bfloat16 ``tl.dot`` is wrong) then widened to float32, which
    gives the same products (bfloat16 x bfloat16 is exact in float32) accumulated in float32."""
    x = x.to(LIKE.dtype.element_ty)
    if DOT_F32:
        x = x.to(tl.float32)
    return x


@triton.jit
def row_pass(Q, K, LOG_Q, KEY_IDS, ROW_IDS, INV_T, MAX_OUT, REST_OUT, ACC_OUT,
             ROW_GROUPS, COL_GROUPS, SUM_OUT, COUNT_OUT, ACC2_OUT,
             num_rows, num_cols, dim, stride_q, stride_k, blocks_per_split, first_split,
             HAS_LOG_Q: tl.constexpr, HAS_IDS: tl.constexpr, DIAGONAL: tl.constexpr, WITH_ACC: tl.constexpr,
             BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
             DOT_F32: tl.constexpr, HAS_GROUPS: tl.constexpr = False, WITH_SUMS: tl.constexpr = False):
    row_block = tl.program_id(0)
    split = tl.program_id(1)
    rows = row_block * BLOCK_B + tl.arange(0, BLOCK_B)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < num_rows
    dim_ok = dims < dim
    q = tl.load(Q + rows[:, None].to(tl.int64) * stride_q + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    if DOT_F32:
        q = q.to(tl.float32)
    inv_t = tl.load(INV_T)
    if HAS_IDS:
        row_ids = tl.load(ROW_IDS + rows, mask=row_ok, other=0)
    if HAS_GROUPS:
        row_groups = tl.load(ROW_GROUPS + rows, mask=row_ok, other=0)
    best = tl.full([BLOCK_B], float("-inf"), tl.float32)
    rest = tl.zeros([BLOCK_B], dtype=tl.float32)
    acc = tl.zeros([BLOCK_B, BLOCK_D], dtype=tl.float32)
    score_sum = tl.zeros([BLOCK_B], dtype=tl.float32)
    count = tl.zeros([BLOCK_B], dtype=tl.float32)
    acc2 = tl.zeros([BLOCK_B, BLOCK_D], dtype=tl.float32)

    first = split * blocks_per_split
    last = tl.minimum(first + blocks_per_split, tl.cdiv(num_cols, BLOCK_N))
    for block in range(first, last):
        cols = block * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < num_cols
        k = tl.load(K + cols[:, None].to(tl.int64) * stride_k + dims[None, :],
                    mask=col_ok[:, None] & dim_ok[None, :], other=0.0)
        if DOT_F32:
            k = k.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * inv_t
        if HAS_LOG_Q:
            s -= tl.load(LOG_Q + cols, mask=col_ok, other=0.0)[None, :]
        keep = (rows[:, None] >= 0) & col_ok[None, :]
        if DIAGONAL:
            keep = keep & (rows[:, None] != cols[None, :])
        if HAS_IDS:
            key_ids = tl.load(KEY_IDS + cols, mask=col_ok, other=0)
            keep = keep & (row_ids[:, None] != key_ids[None, :])
        if HAS_GROUPS:
            col_groups = tl.load(COL_GROUPS + cols, mask=col_ok, other=0)
            keep = keep & (row_groups[:, None] != col_groups[None, :])
        s = tl.where(keep, s, float("-inf"))
        if WITH_SUMS:   # the kept scores' sum and number (label smoothing), and sum_kept k for the gradient
            score_sum += tl.sum(tl.where(keep, s, 0.0), 1)
            count += tl.sum(keep.to(tl.float32), 1)
            if WITH_ACC:
                acc2 += tl.dot(_operand(keep.to(tl.float32), K, DOT_F32), k, input_precision=PRECISION)

        # This block's (maximum, rest): the entries equal to the maximum are counted, not summed.
        block_max = tl.max(s, 1)
        weights = tl.where(keep, tl.exp(s - block_max[:, None]), 0.0)
        top = keep & (s == block_max[:, None])
        block_rest = (tl.sum(tl.where(top, 0.0, weights), 1)
                      + (tl.sum(top.to(tl.float32), 1) - 1.0))

        # Merge: the side holding the larger maximum keeps its rest; the other adds (1 + rest) exp(max - m).
        new_best = tl.maximum(best, block_max)
        old_wins = best >= block_max
        other_max = tl.where(old_wins, block_max, best)
        other_rest = tl.where(old_wins, block_rest, rest)
        other = tl.where(other_max == float("-inf"), 0.0, (1.0 + other_rest) * tl.exp(other_max - new_best))
        rest = tl.where(old_wins, rest, block_rest) + other
        if WITH_ACC:
            old_scale = tl.where(best == float("-inf"), 0.0, tl.exp(best - new_best))
            block_scale = tl.where(block_max == float("-inf"), 0.0, tl.exp(block_max - new_best))
            block_acc = tl.dot(_operand(weights, K, DOT_F32), k, input_precision=PRECISION)
            acc = acc * old_scale[:, None] + block_acc * block_scale[:, None]
        best = new_best

    out = (first_split + split) * num_rows + rows
    tl.store(MAX_OUT + out, best, mask=row_ok)
    tl.store(REST_OUT + out, rest, mask=row_ok)
    if WITH_ACC:
        tl.store(ACC_OUT + out[:, None].to(tl.int64) * dim + dims[None, :], acc,
                 mask=row_ok[:, None] & dim_ok[None, :])
    if WITH_SUMS:
        tl.store(SUM_OUT + out, score_sum, mask=row_ok)
        tl.store(COUNT_OUT + out, count, mask=row_ok)
        if WITH_ACC:
            tl.store(ACC2_OUT + out[:, None].to(tl.int64) * dim + dims[None, :], acc2,
                     mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit
def key_pass(Q, K, LOG_Q, KEY_IDS, ROW_IDS, INV_T, LSE, ROW_GRAD, KEY_GRAD, LOG_Q_GRAD,
             ROW_GROUPS, COL_GROUPS, SUM_GRAD,
             num_rows, num_cols, dim, stride_q, stride_k, blocks_per_split,
             HAS_LOG_Q: tl.constexpr, HAS_IDS: tl.constexpr, DIAGONAL: tl.constexpr, RESCALE: tl.constexpr,
             BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
             DOT_F32: tl.constexpr, HAS_GROUPS: tl.constexpr = False, HAS_SUM_GRAD: tl.constexpr = False):
    col_block = tl.program_id(0)
    split = tl.program_id(1)
    cols = col_block * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    col_ok = cols < num_cols
    dim_ok = dims < dim
    k = tl.load(K + cols[:, None].to(tl.int64) * stride_k + dims[None, :],
                mask=col_ok[:, None] & dim_ok[None, :], other=0.0)
    if DOT_F32:
        k = k.to(tl.float32)
    inv_t = tl.load(INV_T)
    if HAS_LOG_Q:
        log_q = tl.load(LOG_Q + cols, mask=col_ok, other=0.0)
    if HAS_IDS:
        key_ids = tl.load(KEY_IDS + cols, mask=col_ok, other=0)
    if HAS_GROUPS:
        col_groups = tl.load(COL_GROUPS + cols, mask=col_ok, other=0)
    grad_k = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    grad_log_q = tl.zeros([BLOCK_N], dtype=tl.float32)

    first = split * blocks_per_split
    last = tl.minimum(first + blocks_per_split, tl.cdiv(num_rows, BLOCK_B))
    for block in range(first, last):
        rows = block * BLOCK_B + tl.arange(0, BLOCK_B)
        row_ok = rows < num_rows
        q = tl.load(Q + rows[:, None].to(tl.int64) * stride_q + dims[None, :],
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        if DOT_F32:
            q = q.to(tl.float32)
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        row_grad = tl.load(ROW_GRAD + rows, mask=row_ok, other=0.0)
        s = tl.dot(k, tl.trans(q), input_precision=PRECISION) * inv_t      # [BLOCK_N, BLOCK_B], transposed
        if HAS_LOG_Q:
            s -= log_q[:, None]
        keep = col_ok[:, None] & row_ok[None, :]
        if DIAGONAL:
            keep = keep & (cols[:, None] != rows[None, :])
        if HAS_IDS:
            row_ids = tl.load(ROW_IDS + rows, mask=row_ok, other=0)
            keep = keep & (key_ids[:, None] != row_ids[None, :])
        if HAS_GROUPS:
            row_groups = tl.load(ROW_GROUPS + rows, mask=row_ok, other=0)
            keep = keep & (col_groups[:, None] != row_groups[None, :])
        g = tl.exp(s - lse[None, :]) * row_grad[None, :]
        if HAS_SUM_GRAD:   # + the kept scores' sum's cotangent on every kept pair (label smoothing)
            g += tl.load(SUM_GRAD + rows, mask=row_ok, other=0.0)[None, :]
        g = tl.where(keep, g, 0.0)
        if RESCALE:   # float16: scale each candidate's entries to at most 1 so small ones do not underflow
            scale = tl.max(tl.abs(g), 1)
            scale = tl.where(scale > 0.0, scale, 1.0)
            grad_k += tl.dot(_operand(g / scale[:, None], Q, DOT_F32), q, input_precision=PRECISION) * scale[:, None]
        else:
            grad_k += tl.dot(_operand(g, Q, DOT_F32), q, input_precision=PRECISION)
        if HAS_LOG_Q:
            grad_log_q -= tl.sum(g, 1)

    out = split * num_cols + cols
    tl.store(KEY_GRAD + out[:, None].to(tl.int64) * dim + dims[None, :], grad_k * inv_t,
             mask=col_ok[:, None] & dim_ok[None, :])
    if HAS_LOG_Q:
        tl.store(LOG_Q_GRAD + out, grad_log_q, mask=col_ok)
