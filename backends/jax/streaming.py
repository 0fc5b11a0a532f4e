"""Streaming softmax rows for JAX: the row-wise logsumexp over chunks of candidates, ``jax.custom_vjp``.

Same math as :mod:`recloss.backends.torch.streaming`: a running maximum and rescaled sum over chunks in the
forward (one matrix product per chunk), a backward that recomputes each chunk's scores and takes two more
products; the first chunks whose ``exp(s - m_c)`` fit in ``store_bytes`` (at most ``MAX_STORED_CHUNKS``) are
kept from the forward as residuals instead of recomputed. Full chunks run in a ``lax.fori_loop``
(``dynamic_slice``), the remainder once; shapes are static, so it traces once under ``jax.jit``. Removed
candidates are ``-inf`` inside the chunk (exact zeros in value and gradient; a fully removed row has loss 0
and zero gradient). With ``sums=True`` (label smoothing) the forward also returns each row's sum of kept scores
and their number, and the backward adds that sum's gradient chunk by chunk. See
:func:`recloss.kernels.softmax.streaming_row_losses` for the arguments.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST


def _chunk_scores(q: jax.Array, keys: jax.Array, log_q: Any, ids: Any, diagonal: Any, row_ids: Any,
                  start: Any, size: int) -> tuple[jax.Array, jax.Array]:
    """The chunk's keys and its ``[B, size]`` scores, removed candidates at -inf (see :func:`_chunk_keep`)."""
    chunk_keys = lax.dynamic_slice_in_dim(keys, start, size, 0)
    scores = jnp.matmul(q, chunk_keys.T, precision=HIGHEST)
    if log_q is not None:
        scores = scores - lax.dynamic_slice_in_dim(log_q, start, size, 0)[None, :]
    keep = _chunk_keep(q.shape[0], ids, diagonal, row_ids, start, size)
    if keep is not None:
        scores = jnp.where(keep, scores, -jnp.inf)
    return chunk_keys, scores


def _chunk_keep(rows: int, ids: Any, diagonal: Any, row_ids: Any, start: Any, size: int) -> Any:
    """``[rows, size]``: True where a candidate of the chunk is kept (None: every one), from the ids and the
    row's own columns: column ``diagonal + i`` of row ``i`` where ``diagonal`` is an integer scalar, or every
    column whose group equals the row's where it is a pair ``(row_groups, column_groups)`` (query ids)."""
    keep = None
    if isinstance(diagonal, tuple):
        row_groups, column_groups = diagonal
        keep = row_groups[:, None] != lax.dynamic_slice_in_dim(column_groups, start, size, 0)[None, :]
    elif diagonal is not None:
        cols = start + jnp.arange(size)
        keep = (diagonal + jnp.arange(rows))[:, None] != cols[None, :]
    if ids is not None:
        other = row_ids[:, None] != lax.dynamic_slice_in_dim(ids, start, size, 0)[None, :]
        keep = other if keep is None else keep & other
    return keep


def _sum_weights(grad_sum: jax.Array, keep: Any, size: int) -> jax.Array:
    """``[B, size]``: the cotangent of the kept scores' sum on each kept candidate, 0 on the removed ones."""
    if keep is None:
        return jnp.broadcast_to(grad_sum[:, None], (grad_sum.shape[0], size))
    return jnp.where(keep, grad_sum[:, None], 0.0)


#: At most this many chunks are kept from the forward (they are unrolled in the traced code).
MAX_STORED_CHUNKS = 8


def _plan(sizes: list[int], chunk: int, rows: int, itemsize: int, store_bytes: int) -> list[int]:
    """For each source, how many of its leading chunks keep ``exp(s - m)`` from the forward for the backward
    (while they fit in ``store_bytes``; then the backward takes three products instead of four)."""
    plan, used, count = [], 0, 0
    for size in sizes:
        stored = 0
        for start in range(0, size, chunk):
            nbytes = rows * (min(start + chunk, size) - start) * itemsize
            if used + nbytes > store_bytes or count >= MAX_STORED_CHUNKS or stored * chunk != start:
                break
            used, stored, count = used + nbytes, stored + 1, count + 1
        plan.append(stored)
        if stored * chunk < size:        # later sources are not stored: the budget stops at the first gap
            store_bytes = used
    return plan


def _over_chunks(length: int, chunk: int, first: int, body: Any, carry: Any) -> Any:
    """``carry = body(start, size, carry)`` over the chunks from index ``first`` on: the full chunks in a
    fori_loop, then the remainder."""
    full, rest = divmod(length, chunk)
    if full - first == 1:
        carry = body(first * chunk, chunk, carry)
    elif full - first > 1:
        carry = lax.fori_loop(first, full, lambda i, c: body(i * chunk, chunk, c), carry)
    if rest and first <= full:
        carry = body(full * chunk, rest, carry)
    return carry


def _forward(layout: tuple, chunk: int, q: jax.Array, s_pos: jax.Array, row_ids: Any, sources: tuple,
             plan: list[int], sums: bool = False) -> tuple:
    """Rows, ``m``, ``log1p(r)``, the stored chunks and, with ``sums``, the kept scores' sum and count. ``m`` is
    one maximal score of each row, taken from the scores themselves, and ``r`` the sum of ``exp(s - m)`` over
    every other candidate: written so that JAX's differentiation of this function (second derivatives go
    through it) sees the exact log-sum-exp."""
    row_max = s_pos
    rest = jnp.zeros_like(s_pos)
    totals = (jnp.zeros_like(s_pos), jnp.zeros_like(s_pos)) if sums else ()   # kept scores' sum and count
    stored = []

    def step(keys, log_q, ids, diagonal, start, size, row_max, rest, *totals):
        _, scores = _chunk_scores(q, keys, log_q, ids, diagonal, row_ids, start, size)
        if totals:
            kept = scores != -jnp.inf
            totals = (totals[0] + jnp.sum(jnp.where(kept, scores, 0.0), axis=1),
                      totals[1] + jnp.sum(kept, axis=1, dtype=scores.dtype))
        bigger = jnp.max(scores, axis=1) > row_max
        top = jnp.argmax(scores, axis=1)
        left_out = (jnp.arange(size)[None, :] == top[:, None]) & bigger[:, None]
        new_max = jnp.where(bigger, jnp.take_along_axis(scores, top[:, None], axis=1)[:, 0], row_max)
        weights = jnp.exp(scores - new_max[:, None])                  # exp(s - m), 0 where removed
        rest = (jnp.where(bigger, (1.0 + rest) * jnp.exp(row_max - new_max), rest)
                + jnp.sum(jnp.where(left_out, 0.0, weights), axis=1))
        return (new_max, rest, *totals), weights

    for (keys, log_q, ids, diagonal), kept in zip(sources, plan):
        length = keys.shape[0]
        for index in range(kept):
            size = min(chunk, length - index * chunk)
            (row_max, rest, *totals), weights = step(keys, log_q, ids, diagonal, index * chunk, size, row_max, rest,
                                                     *totals)
            stored.append((weights, row_max))

        def body(start: Any, size: int, carry: Any, keys=keys, log_q=log_q, ids=ids, diagonal=diagonal) -> Any:
            return step(keys, log_q, ids, diagonal, start, size, *carry)[0]
        row_max, rest, *totals = _over_chunks(length, chunk, kept, body, (row_max, rest, *totals))
    log_total = jnp.log1p(rest)
    return (row_max - s_pos) + log_total, row_max, log_total, stored, tuple(totals)


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _streaming_rows(layout: tuple, chunk: int, store_bytes: int, sums: bool, q: jax.Array, s_pos: jax.Array,
                    row_ids: Any, sources: tuple) -> Any:
    plan = [0] * len(sources)
    rows, _, _, _, totals = _forward(layout, chunk, q, s_pos, row_ids, sources, plan, sums)
    return (rows, *totals) if sums else rows


def _fwd(layout: tuple, chunk: int, store_bytes: int, sums: bool, q: jax.Array, s_pos: jax.Array, row_ids: Any,
         sources: tuple) -> tuple:
    plan = _plan([keys.shape[0] for keys, *_ in sources], chunk, q.shape[0], q.dtype.itemsize, store_bytes)
    rows, row_max, log_total, stored, totals = _forward(layout, chunk, q, s_pos, row_ids, sources, plan, sums)
    return (rows, *totals) if sums else rows, (q, s_pos, row_ids, sources, row_max, log_total, stored)


def _bwd(layout: tuple, chunk: int, store_bytes: int, sums: bool, residuals: tuple, grad: Any) -> tuple:
    q, s_pos, row_ids, sources, row_max, log_total, stored = residuals
    grad, grad_sum = (grad[0], grad[1]) if sums else (grad, None)   # (the count is a constant)
    plan = _plan([keys.shape[0] for keys, *_ in sources], chunk, q.shape[0], q.dtype.itemsize, store_bytes)
    scale = grad * jnp.exp(-log_total)                        # h = g / sum, so that P * g = E * h
    grad_s_pos = grad * jnp.expm1((s_pos - row_max) - log_total)   # p_pos - 1, exact near 0
    scaled_q = q * scale[:, None]
    grad_q = jnp.zeros_like(q)
    grad_q_sums = jnp.zeros_like(q)    # label smoothing: the kept scores' sum, sum_c G_ic k_c (unscaled)
    grad_sources = []
    stored = list(stored)
    for (keys, log_q, ids, diagonal), kept in zip(sources, plan):
        grad_keys = jnp.zeros_like(keys)
        grad_log_q = None if log_q is None else jnp.zeros_like(log_q)
        for index in range(kept):      # exp(s - m_c) from the forward, rescaled by exp(m_c - m) on the [B, D] side
            weights, chunk_max = stored.pop(0)
            start, size = index * chunk, weights.shape[1]
            chunk_keys = keys[start:start + size]
            factor = jnp.exp(chunk_max - row_max)
            grad_q = grad_q + jnp.matmul(weights, chunk_keys, precision=HIGHEST) * factor[:, None]
            chunk_grad_keys = _over_rows(weights.T, scaled_q * factor[:, None])
            chunk_grad_log_q = None if grad_log_q is None else -_over_rows(scale * factor, weights)
            if grad_sum is not None:
                sum_weights = _sum_weights(grad_sum, _chunk_keep(q.shape[0], ids, diagonal, row_ids, start, size),
                                           size)
                grad_q_sums = grad_q_sums + jnp.matmul(sum_weights, chunk_keys, precision=HIGHEST)
                chunk_grad_keys = chunk_grad_keys + _over_rows(sum_weights.T, q)
                if chunk_grad_log_q is not None:
                    chunk_grad_log_q = chunk_grad_log_q - jnp.sum(sum_weights, axis=0)
            grad_keys = grad_keys.at[start:start + size].set(chunk_grad_keys)
            if grad_log_q is not None:
                grad_log_q = grad_log_q.at[start:start + size].set(chunk_grad_log_q)

        def body(start: Any, size: int, carry: Any, keys=keys, log_q=log_q, ids=ids, diagonal=diagonal) -> Any:
            grad_q, grad_q_sums, grad_keys, grad_log_q = carry
            chunk_keys, scores = _chunk_scores(q, keys, log_q, ids, diagonal, row_ids, start, size)
            weights = jnp.exp(scores - row_max[:, None])      # E = exp(s - m), 0 where removed
            grad_q = grad_q + jnp.matmul(weights, chunk_keys, precision=HIGHEST)
            chunk_grad_keys = _over_rows(weights.T, scaled_q)
            chunk_grad_log_q = None if grad_log_q is None else -_over_rows(scale, weights)
            if grad_sum is not None:
                sum_weights = jnp.where(scores != -jnp.inf, grad_sum[:, None], 0.0)
                grad_q_sums = grad_q_sums + jnp.matmul(sum_weights, chunk_keys, precision=HIGHEST)
                chunk_grad_keys = chunk_grad_keys + _over_rows(sum_weights.T, q)
                if chunk_grad_log_q is not None:
                    chunk_grad_log_q = chunk_grad_log_q - jnp.sum(sum_weights, axis=0)
            grad_keys = lax.dynamic_update_slice_in_dim(grad_keys, chunk_grad_keys, start, 0)
            if grad_log_q is not None:
                grad_log_q = lax.dynamic_update_slice_in_dim(grad_log_q, chunk_grad_log_q, start, 0)
            return grad_q, grad_q_sums, grad_keys, grad_log_q
        grad_q, grad_q_sums, grad_keys, grad_log_q = _over_chunks(keys.shape[0], chunk, kept, body,
                                                                  (grad_q, grad_q_sums, grad_keys, grad_log_q))
        grad_sources.append((grad_keys, grad_log_q, None, _no_cotangent(diagonal)))
    return grad_q * scale[:, None] + grad_q_sums, grad_s_pos, None, tuple(grad_sources)


def _no_cotangent(diagonal: Any) -> Any:
    """The cotangent of a source's integer ``diagonal`` (an offset or a pair of query-group arrays): none."""
    return (None, None) if isinstance(diagonal, tuple) else None


_streaming_rows.defvjp(_fwd, _bwd)


def _over_rows(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` contracting the rows of the batch: where they are sharded over an ``Explicit`` mesh axis (a
    batch-sharded call outside ``shard_map``), the result, a per-candidate gradient, is replicated."""
    spec = getattr(getattr(jax.typeof(b), "sharding", None), "spec", None)
    if not spec or spec[0] is None:
        return jnp.matmul(a, b, precision=HIGHEST)
    replicated = jax.sharding.NamedSharding(jax.typeof(b).sharding.mesh, jax.sharding.PartitionSpec())
    return jnp.matmul(a, b, precision=HIGHEST, out_sharding=replicated)


def streaming_row_losses(q: jax.Array, s_pos: jax.Array, sources: tuple, row_ids: Any, chunk: int,
                         store_bytes: int = 0, sums: bool = False) -> Any:
    """Row losses ``[B]`` of the streaming softmax (see the module docstring); with ``sums``, ``(rows,
    score_sum, count)``: the sum of each row's kept scores (differentiable) and their number."""
    layout = tuple(diagonal is not None for *_, diagonal in sources)
    # The diagonal's offset travels as an array (it may be traced: lax.axis_index under shard_map); query groups
    # as the pair of their arrays.
    arrays = tuple((keys, log_q, ids, diagonal if diagonal is None or isinstance(diagonal, tuple)
                    else jnp.asarray(diagonal, jnp.int32)) for keys, log_q, ids, diagonal in sources)
    return _streaming_rows(layout, int(chunk), int(store_bytes), bool(sums), q, s_pos, row_ids, arrays)
