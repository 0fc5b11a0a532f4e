"""Streaming softmax rows for TensorFlow: the row-wise logsumexp over chunks of candidates, ``tf.custom_gradient``.

Same math as :mod:`recloss.backends.torch.streaming`: a running maximum and rescaled sum over chunks in the
forward (one matrix product per chunk), a backward that recomputes each chunk's scores and takes two more
products; the first chunks whose ``exp(s - m)`` fit in ``store_bytes`` are kept from the forward instead of
recomputed. The loop over chunks is a Python loop over static sizes, so it runs eagerly, under
``tf.function`` and under XLA (``jit_compile=True``); sizes unknown at trace time use the materialised path
(:func:`recloss.kernels.softmax.streaming_row_losses` decides). Removed candidates are ``-inf`` inside the chunk
(exact zeros in value and gradient; a fully removed row has loss 0 and zero gradient). With ``sums=True`` (label
smoothing) the forward also returns each row's sum of kept scores and their number, and the backward adds that
sum's gradient chunk by chunk.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import tensorflow as tf
from tensorflow.python import pywrap_tfe
from tensorflow.python.eager.record import could_possibly_record  # no public API says whether a tape records

_FIRST_ORDER = threading.local()


@contextlib.contextmanager
def first_order_only() -> Iterator[None]:
    """Within it, the tapes recording are known to take first derivatives only (the eager call checked them
    before running its compiled kernel): a backward traced then (``tf.function`` builds it when it is called
    under a tape) is the fast one, not the differentiable recomputation that a recording tape would otherwise
    call for, which keeps every chunk of scores."""
    previous = getattr(_FIRST_ORDER, "on", False)
    _FIRST_ORDER.on = True
    try:
        yield
    finally:
        _FIRST_ORDER.on = previous


def forward_mode(tensors: list) -> bool:
    """True where a ``tf.autodiff.ForwardAccumulator`` holds a tangent of one of ``tensors`` (eagerly or while
    tracing). A custom gradient gives such a tangent no JVP (TensorFlow answers None, or 0 in a graph), so the
    callers compute the rows in ordinary operations there."""
    if not could_possibly_record():
        return False
    handles = [t.handle if isinstance(t, tf.Variable) else t for t in tensors if t is not None and tf.is_tensor(t)]
    return bool(handles) and any(pywrap_tfe.TFE_Py_PackJVPs(handles)[0])


#: At most this many chunks are kept from the forward for the backward (see ``store_bytes``).
MAX_STORED_CHUNKS = 8


def _chunk_scores(q: tf.Tensor, keys: tf.Tensor, log_q: Any, ids: Any, diagonal: Any, row_ids: Any,
                  start: int, stop: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The chunk's keys and its ``[B, stop - start]`` scores, removed candidates at -inf (see :func:`_chunk_keep`)."""
    chunk_keys = keys[start:stop]
    scores = tf.matmul(q, chunk_keys, transpose_b=True)
    if log_q is not None:
        scores = scores - log_q[None, start:stop]
    keep = _chunk_keep(q.shape[0], ids, diagonal, row_ids, start, stop)
    if keep is not None:
        scores = tf.where(keep, scores, tf.constant(float("-inf"), scores.dtype))
    return chunk_keys, scores


def _chunk_keep(rows: int, ids: Any, diagonal: Any, row_ids: Any, start: int, stop: int) -> Any:
    """``[rows, stop - start]``: True where a candidate of the chunk is kept (None: every one), from the ids and
    the row's own columns: column ``diagonal + i`` of row ``i`` where ``diagonal`` is an int or an int32 scalar
    tensor, every column whose group equals the row's where it is a pair ``(row_groups, column_groups)``."""
    keep = None
    if isinstance(diagonal, tuple):
        row_groups, column_groups = diagonal
        keep = row_groups[:, None] != column_groups[start:stop][None, :]
    elif diagonal is not None and (tf.is_tensor(diagonal) or start < diagonal + rows and diagonal < stop):
        keep = (tf.range(rows) + diagonal)[:, None] != tf.range(start, stop)[None, :]
    if ids is not None:
        other = row_ids[:, None] != ids[start:stop][None, :]
        keep = other if keep is None else tf.logical_and(keep, other)
    return keep


def _sum_weights(grad_sum: tf.Tensor, keep: Any, like: tf.Tensor) -> tf.Tensor:
    """``[B, C]`` like ``like``: the cotangent of the kept scores' sum on each kept candidate, 0 elsewhere."""
    spread = grad_sum[:, None] + tf.zeros_like(like)
    return spread if keep is None else tf.where(keep, spread, tf.zeros_like(spread))


def _kept_sums(scores: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """A chunk's sum of kept scores per row and their number (removed candidates are -inf)."""
    kept = tf.not_equal(scores, tf.constant(float("-inf"), scores.dtype))
    return (tf.reduce_sum(tf.where(kept, scores, tf.zeros_like(scores)), axis=1),
            tf.reduce_sum(tf.cast(kept, scores.dtype), axis=1))


def _spans(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, length)) for start in range(0, length, chunk)]


def streaming_row_losses(q: tf.Tensor, s_pos: tf.Tensor, sources: tuple, row_ids: Any, chunk: int,
                         store_bytes: int = 0, sums: bool = False) -> Any:
    """Row losses ``[B]`` of the streaming softmax (see :func:`recloss.kernels.softmax.streaming_row_losses`);
    with ``sums``, ``(rows, score_sum, count)``: each row's sum of kept scores (differentiable) and their
    number, the sum's gradient added chunk by chunk in the backward."""
    layout = [(log_q is not None, ids, diagonal) for _, log_q, ids, diagonal in sources]
    flat = [q, s_pos]
    for keys, log_q, _, _ in sources:
        flat += [keys] + ([log_q] if log_q is not None else [])
    chunk = int(chunk)
    if forward_mode(flat):
        # Forward mode: ordinary operations chunk by chunk, whose JVPs TensorFlow computes alongside (a tape
        # recording too keeps every chunk, as for a second derivative).
        return differentiable_rows(q, s_pos, list(sources), row_ids, chunk)

    def unflatten(tensors: list) -> list[tuple[Any, Any, Any, bool]]:
        out, at = [], 0
        for has_log_q, ids, diagonal in layout:
            keys = tensors[at]
            log_q = tensors[at + 1] if has_log_q else None
            at += 1 + has_log_q
            out.append((keys, log_q, ids, diagonal))
        return out

    @tf.custom_gradient
    def rows(*tensors: tf.Tensor) -> Any:
        # Eagerly, custom_gradient runs the forward with the caller's tape recording: stop_gradient keeps every
        # chunk's scores off the tape (else the tape would hold all of them until the backward).
        q, s_pos, *others = (tf.stop_gradient(t) for t in tensors)
        eager = tf.executing_eagerly()
        parts = unflatten(others)
        row_max, rest = s_pos, tf.zeros_like(s_pos)    # m: one maximal candidate; r: sum of exp(s - m) of the others
        score_sum, count = tf.zeros_like(s_pos), tf.zeros_like(s_pos)   # the kept scores (label smoothing)
        stored, used = {}, 0
        for index, (keys, log_q, ids, diagonal) in enumerate(parts):
            for start, stop in _spans(keys.shape[0], chunk):
                # In a graph (tf.function, XLA), tie each chunk's product to the previous chunk's result, so
                # that the scheduler cannot run every product first and hold all the chunks' scores at once.
                q_in = q if eager else q + rest[:, None] * 0.0
                _, scores = _chunk_scores(q_in, keys, log_q, ids, diagonal, row_ids, start, stop)
                if sums:
                    chunk_sum, chunk_count = _kept_sums(scores)
                    score_sum, count = score_sum + chunk_sum, count + chunk_count
                row_max, rest, weights = _merge(scores, row_max, rest)
                nbytes = (q.shape[0] or 0) * (stop - start) * q.dtype.size   # rows unknown: store_bytes is 0
                if store_bytes and used + nbytes <= store_bytes and len(stored) < MAX_STORED_CHUNKS:
                    stored[index, start] = (weights, row_max)   # kept for the backward: no recomputation
                    used += nbytes
        log_total = tf.math.log1p(rest)           # log(sum over all candidates of exp(s - m))

        def grad(upstream: tf.Tensor, *upstreams: Any) -> list:
            grad_sum = upstreams[0] if sums else None       # (the count's cotangent: a constant)
            if could_possibly_record() and not getattr(_FIRST_ORDER, "on", False):
                # An outer tape is recording this backward (a second derivative): differentiate an ordinary
                # computation of the same rows, from the inputs as the outer tape sees them.
                with tf.GradientTape() as tape:
                    tape.watch(tensors)
                    again = differentiable_rows(tensors[0], tensors[1], unflatten(list(tensors[2:])), row_ids, chunk,
                                                sums)
                targets, cotangents = ((again, upstream) if not sums else
                                       ([again[0], again[1]], [upstream, _zeros_if_none(grad_sum, upstream)]))
                return tape.gradient(targets, list(tensors), output_gradients=cotangents,
                                     unconnected_gradients=tf.UnconnectedGradients.ZERO)
            scale = upstream * tf.exp(-log_total)                 # h = g / sum, so that P * g = E * h
            grad_s_pos = upstream * tf.math.expm1((s_pos - row_max) - log_total)   # p_pos - 1, exact near 0
            scaled_q = q * scale[:, None]
            grad_q = tf.zeros_like(q)
            grad_q_sums = tf.zeros_like(q)    # label smoothing: sum_c G_ic k_c, G = g_sum where kept
            grads = []
            for index, (keys, log_q, ids, diagonal) in enumerate(parts):
                key_grads, log_q_grads = [], []
                for start, stop in _spans(keys.shape[0], chunk):
                    if (index, start) in stored:   # rescale exp(s - m_c) by exp(m_c - m) on the [B, D] side
                        weights, chunk_max = stored[index, start]
                        factor = tf.exp(chunk_max - row_max)
                        grad_q = grad_q + tf.matmul(weights, keys[start:stop]) * factor[:, None]
                        key_grads.append(tf.matmul(weights, scaled_q * factor[:, None], transpose_a=True))
                        row_scale = scale * factor
                        keep = None if grad_sum is None else _chunk_keep(q.shape[0], ids, diagonal, row_ids, start,
                                                                         stop)
                    else:
                        q_in = q if eager else q + grad_q[:, :1] * 0.0   # one chunk at a time (see forward)
                        chunk_keys, scores = _chunk_scores(q_in, keys, log_q, ids, diagonal, row_ids, start, stop)
                        weights = tf.exp(scores - row_max[:, None])   # E = exp(s - m), 0 where removed
                        grad_q = grad_q + tf.matmul(weights, chunk_keys)
                        key_grads.append(tf.matmul(weights, scaled_q, transpose_a=True))
                        row_scale = scale
                        keep = None if grad_sum is None else tf.not_equal(
                            scores, tf.constant(float("-inf"), scores.dtype))
                    if log_q is not None:
                        log_q_grads.append(-tf.linalg.matvec(weights, row_scale, transpose_a=True))
                    if grad_sum is not None:
                        sum_weights = _sum_weights(grad_sum, keep, weights)
                        grad_q_sums = grad_q_sums + tf.matmul(sum_weights, keys[start:stop])
                        key_grads[-1] = key_grads[-1] + tf.matmul(sum_weights, q, transpose_a=True)
                        if log_q is not None:
                            log_q_grads[-1] = log_q_grads[-1] - tf.reduce_sum(sum_weights, axis=0)
                grads.append(_join(key_grads, keys))
                if log_q is not None:
                    grads.append(_join(log_q_grads, log_q))
            return [grad_q * scale[:, None] + grad_q_sums, grad_s_pos, *grads]

        rows_out = (row_max - s_pos) + log_total
        if sums:
            return (rows_out, score_sum, tf.stop_gradient(count)), grad
        return rows_out, grad

    return rows(*flat)


def _merge(scores: tf.Tensor, row_max: tf.Tensor, rest: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One chunk's ``[B, C]`` scores (-inf where removed) merged into ``(m, r)``; also ``exp(s - m)``.

    Where the chunk holds a new maximum, ``m`` becomes that score itself (gathered, so that a differentiated
    caller sees the exact log-sum-exp) and that one entry is left out of ``r``."""
    top = tf.argmax(scores, axis=1, output_type=tf.int32)
    chunk_max = tf.gather(scores, top, axis=1, batch_dims=1)
    bigger = chunk_max > row_max
    new_max = tf.where(bigger, chunk_max, row_max)
    weights = tf.exp(scores - new_max[:, None])                  # exp(s - m), 0 where removed
    left_out = tf.logical_and(tf.equal(tf.range(tf.shape(scores)[1])[None, :], top[:, None]), bigger[:, None])
    rest = (tf.where(bigger, (1.0 + rest) * tf.exp(row_max - new_max), rest)
            + tf.reduce_sum(tf.where(left_out, tf.zeros_like(weights), weights), axis=1))
    return new_max, rest, weights


def differentiable_rows(q: tf.Tensor, s_pos: tf.Tensor, sources: list, row_ids: Any, chunk: int,
                        sums: bool = False) -> Any:
    """The same row losses in ordinary differentiable operations (no custom gradient), chunk by chunk; with
    ``sums``, ``(rows, score_sum)``."""
    row_max, rest, score_sum = s_pos, tf.zeros_like(s_pos), tf.zeros_like(s_pos)
    for keys, log_q, ids, diagonal in sources:
        for start, stop in _spans(keys.shape[0], chunk):
            _, scores = _chunk_scores(q, keys, log_q, ids, diagonal, row_ids, start, stop)
            if sums:
                score_sum = score_sum + _kept_sums(scores)[0]
            row_max, rest, _ = _merge(scores, row_max, rest)
    # Not m - s_pos where m is the positive: its +1 and -1 gradients would cancel what log1p kept.
    moved = row_max > s_pos
    rows = tf.where(moved, row_max - s_pos, tf.zeros_like(s_pos)) + tf.math.log1p(rest)
    return (rows, score_sum) if sums else rows


def _zeros_if_none(x: Any, like: tf.Tensor) -> tf.Tensor:
    return tf.zeros_like(like) if x is None else x


def _join(pieces: list, like: tf.Tensor) -> tf.Tensor:
    if not pieces:
        return tf.zeros_like(like)
    return pieces[0] if len(pieces) == 1 else tf.concat(pieces, 0)
