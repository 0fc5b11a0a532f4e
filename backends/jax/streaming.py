"""Streaming softmax rows for JAX: the row-wise logsumexp over chunks of candidates, ``jax.custom_vjp``.

Same math as :mod:`recloss.backends.torch.streaming`: a running maximum and rescaled sum over chunks in the
forward (one matrix product per chunk), a backward that recomputes each chunk's scores and takes two more
products; the first chunks whose ``exp(s - m_c)`` fit in ``store_bytes`` (at most ``MAX_STORED_CHUNKS``) are
kept from the forward as residuals instead of recomputed. Full chunks run in a ``lax.fori_loop``
(``dynamic_slice``), the remainder once; shapes are static, so it traces once under ``jax.jit``. Removed
candidates are ``-inf`` inside the chunk (exact zeros in value and gradient; a fully removed row has loss 0
and zero gradient). See
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
    """The chunk's keys and its ``[B, size]`` scores, removed candidates at -inf (column ``diagonal + i`` of
    row ``i`` too, where ``diagonal``, an integer scalar, is not None)."""
    chunk_keys = lax.dynamic_slice_in_dim(keys, start, size, 0)
    scores = jnp.matmul(q, chunk_keys.T, precision=HIGHEST)
    if log_q is not None:
        scores = scores - lax.dynamic_slice_in_dim(log_q, start, size, 0)[None, :]
    keep = None
    if diagonal is not None:
        cols = start + jnp.arange(size)
        keep = (diagonal + jnp.arange(q.shape[0]))[:, None] != cols[None, :]
    if ids is not None:
        other = row_ids[:, None] != lax.dynamic_slice_in_dim(ids, start, size, 0)[None, :]
        keep = other if keep is None else keep & other
    if keep is not None:
        scores = jnp.where(keep, scores, -jnp.inf)
    return chunk_keys, scores


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
             plan: list[int]) -> tuple[jax.Array, jax.Array, jax.Array, list]:
    """Rows, ``m``, ``log1p(r)`` and the stored chunks. ``m`` is one maximal score of each row, taken from the
    scores themselves, and ``r`` the sum of ``exp(s - m)`` over every other candidate: written so that JAX's
    differentiation of this function (second derivatives go through it) sees the exact log-sum-exp."""
    row_max = s_pos
    rest = jnp.zeros_like(s_pos)
    stored = []

    def step(keys, log_q, ids, diagonal, start, size, row_max, rest):
        _, scores = _chunk_scores(q, keys, log_q, ids, diagonal, row_ids, start, size)
        bigger = jnp.max(scores, axis=1) > row_max
        top = jnp.argmax(scores, axis=1)
        left_out = (jnp.arange(size)[None, :] == top[:, None]) & bigger[:, None]
        new_max = jnp.where(bigger, jnp.take_along_axis(scores, top[:, None], axis=1)[:, 0], row_max)
        weights = jnp.exp(scores - new_max[:, None])                  # exp(s - m), 0 where removed
        rest = (jnp.where(bigger, (1.0 + rest) * jnp.exp(row_max - new_max), rest)
                + jnp.sum(jnp.where(left_out, 0.0, weights), axis=1))
        return new_max, rest, weights

    for (keys, log_q, ids, diagonal), kept in zip(sources, plan):
        length = keys.shape[0]
        for index in range(kept):
            size = min(chunk, length - index * chunk)
            row_max, rest, weights = step(keys, log_q, ids, diagonal, index * chunk, size, row_max, rest)
            stored.append((weights, row_max))

        def body(start: Any, size: int, carry: Any, keys=keys, log_q=log_q, ids=ids, diagonal=diagonal) -> Any:
            return step(keys, log_q, ids, diagonal, start, size, *carry)[:2]
        row_max, rest = _over_chunks(length, chunk, kept, body, (row_max, rest))
    log_total = jnp.log1p(rest)
    return (row_max - s_pos) + log_total, row_max, log_total, stored


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _streaming_rows(layout: tuple, chunk: int, store_bytes: int, q: jax.Array, s_pos: jax.Array, row_ids: Any,
                    sources: tuple) -> jax.Array:
    plan = [0] * len(sources)
    return _forward(layout, chunk, q, s_pos, row_ids, sources, plan)[0]


def _fwd(layout: tuple, chunk: int, store_bytes: int, q: jax.Array, s_pos: jax.Array, row_ids: Any,
         sources: tuple) -> tuple:
    plan = _plan([keys.shape[0] for keys, *_ in sources], chunk, q.shape[0], q.dtype.itemsize, store_bytes)
    rows, row_max, log_total, stored = _forward(layout, chunk, q, s_pos, row_ids, sources, plan)
    return rows, (q, s_pos, row_ids, sources, row_max, log_total, stored)


def _bwd(layout: tuple, chunk: int, store_bytes: int, residuals: tuple, grad: jax.Array) -> tuple:
    q, s_pos, row_ids, sources, row_max, log_total, stored = residuals
    plan = _plan([keys.shape[0] for keys, *_ in sources], chunk, q.shape[0], q.dtype.itemsize, store_bytes)
    scale = grad * jnp.exp(-log_total)                        # h = g / sum, so that P * g = E * h
    grad_s_pos = grad * jnp.expm1((s_pos - row_max) - log_total)   # p_pos - 1, exact near 0
    scaled_q = q * scale[:, None]
    grad_q = jnp.zeros_like(q)
    grad_sources = []
    stored = list(stored)
    for (keys, log_q, ids, diagonal), kept in zip(sources, plan):
        grad_keys = jnp.zeros_like(keys)
        grad_log_q = None if log_q is None else jnp.zeros_like(log_q)
        for index in range(kept):      # exp(s - m_c) from the forward, rescaled by exp(m_c - m) on the [B, D] side
            weights, chunk_max = stored.pop(0)
            start = index * chunk
            chunk_keys = keys[start:start + weights.shape[1]]
            factor = jnp.exp(chunk_max - row_max)
            grad_q = grad_q + jnp.matmul(weights, chunk_keys, precision=HIGHEST) * factor[:, None]
            grad_keys = grad_keys.at[start:start + weights.shape[1]].set(
                _over_rows(weights.T, scaled_q * factor[:, None]))
            if grad_log_q is not None:
                grad_log_q = grad_log_q.at[start:start + weights.shape[1]].set(-_over_rows(scale * factor, weights))

        def body(start: Any, size: int, carry: Any, keys=keys, log_q=log_q, ids=ids, diagonal=diagonal) -> Any:
            grad_q, grad_keys, grad_log_q = carry
            chunk_keys, scores = _chunk_scores(q, keys, log_q, ids, diagonal, row_ids, start, size)
            weights = jnp.exp(scores - row_max[:, None])      # E = exp(s - m), 0 where removed
            grad_q = grad_q + jnp.matmul(weights, chunk_keys, precision=HIGHEST)
            grad_keys = lax.dynamic_update_slice_in_dim(grad_keys, _over_rows(weights.T, scaled_q), start, 0)
            if grad_log_q is not None:
                grad_log_q = lax.dynamic_update_slice_in_dim(grad_log_q, -_over_rows(scale, weights), start, 0)
            return grad_q, grad_keys, grad_log_q
        grad_q, grad_keys, grad_log_q = _over_chunks(keys.shape[0], chunk, kept, body,
                                                     (grad_q, grad_keys, grad_log_q))
        grad_sources.append((grad_keys, grad_log_q, None, None))
    return grad_q * scale[:, None], grad_s_pos, None, tuple(grad_sources)


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
                         store_bytes: int = 0) -> jax.Array:
    """Row losses ``[B]`` of the streaming softmax (see the module docstring)."""
    layout = tuple(diagonal is not None for *_, diagonal in sources)
    # The diagonal's offset travels as an array (it may be traced: lax.axis_index under shard_map).
    arrays = tuple((keys, log_q, ids, None if diagonal is None else jnp.asarray(diagonal, jnp.int32))
                   for keys, log_q, ids, diagonal in sources)
    return _streaming_rows(layout, int(chunk), int(store_bytes), q, s_pos, row_ids, arrays)
