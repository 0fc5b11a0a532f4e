"""Streaming softmax rows for PyTorch: the row-wise logsumexp over chunks of candidates, custom backward.

``streaming_row_losses(q, s_pos, sources, row_ids, chunk)`` returns, for each row ``i``,
``(m_i - s_pos_i) + log(exp(s_pos_i - m_i) + sum_c kept exp(s_ic - m_i))`` with ``s_ic = q_i . k_c - log_q_c``
and ``m_i`` the row maximum, without ever holding more than one ``[B, chunk]`` block of scores. The forward
keeps a running maximum and rescaled sum (one matrix product per chunk); the backward recomputes each
chunk's scores and takes two more products (``dq += E k``, ``dk = E^T (h q)``, with ``E = exp(s - m)`` and
``h = g / sum``); the first chunks whose ``exp(s - m_c)`` fit in ``store_bytes`` are kept from the forward
instead (rescaled by ``exp(m_c - m)`` on the ``[B, D]`` side), so those take three products, not four
(eagerly; under ``torch.compile`` every chunk is recomputed). Removed candidates are ``-inf`` inside the
chunk, so they contribute exactly 0 to the value and the gradients; a row with every candidate removed has
loss 0 and zero gradient. Works eagerly, under
``torch.compile`` (the Python loop over chunks is unrolled) and with ``torch.func`` (``setup_context``). Under
``torch.autocast`` the chunks' products take the autocast dtype (float32 inputs cast to it, as autocast casts
the materialised path's ``[B, M]`` product, results in float32) and the rest of the Function, forward and
backward, runs with autocast off: the same scores as the materialised path, whatever region the backward
runs in.
See :func:`recloss.kernels.softmax.streaming_row_losses` for the arguments.
"""

from __future__ import annotations

from typing import Any

import torch

_NEG_INF = float("-inf")


def _flatten(sources: tuple, row_ids: Any) -> tuple[tuple, list]:
    """The distinct tensors (torch.compile rejects one tensor passed twice to a Function) and, per source,
    the positions of its keys, log_q and ids among them (None where absent) and its diagonal offset (an int
    or None: see :func:`recloss.kernels.softmax.streaming_row_losses`).
    Position 0 is ``row_ids`` (possibly None)."""
    tensors: list[Any] = [row_ids]

    def position(t: Any) -> Any:
        if t is None:
            return None
        for index, seen in enumerate(tensors):
            if seen is t:
                return index
        tensors.append(t)
        return len(tensors) - 1
    layout = tuple((position(keys), position(log_q), position(ids), None if diagonal is None else int(diagonal))
                   for keys, log_q, ids, diagonal in sources)
    return layout, tensors


def _unflatten(layout: tuple, tensors: tuple) -> list[tuple[Any, Any, Any, bool]]:
    pick = lambda index: None if index is None else tensors[index]  # noqa: E731
    return [(pick(keys), pick(log_q), pick(ids), diagonal) for keys, log_q, ids, diagonal in layout]


def _product(a: torch.Tensor, b: torch.Tensor, buffer: torch.Tensor | None = None,
             low: torch.dtype | None = None) -> torch.Tensor:
    """``a @ b``, written into the front of ``buffer`` (one flat tensor reused chunk after chunk) where given:
    allocating and first-touching a fresh ``[B, chunk]`` block per chunk (above the allocator's mmap threshold,
    every chunk is mapped and faulted anew) costs as much as the product on a CPU. With ``low`` (the dtype of
    an enclosing ``torch.autocast``), the operands are cast to it first, as autocast casts the materialised
    path's products, and the result is float32 (:func:`recloss.backends.torch.half_mm`)."""
    if low is not None:
        from recloss.backends.torch import half_mm   # (the package imports this module)
        return half_mm(a.to(low), b.to(low))
    if buffer is None:
        return a @ b
    return torch.mm(a, b, out=buffer[:a.shape[0] * b.shape[1]].view(a.shape[0], b.shape[1]))


def _scratch(q: torch.Tensor, chunk: int, low: torch.dtype | None) -> torch.Tensor | None:
    """The reusable buffer of one ``[B, chunk]`` block, or None where writing into one is not possible:
    under ``torch.compile`` (which plans its own buffers), under ``torch.func`` transforms, and for products
    in an autocast dtype (:func:`_product`)."""
    if low is not None or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return None
    return torch.empty(q.shape[0] * chunk, dtype=q.dtype, device=q.device)


def _chunk_scores(q: torch.Tensor, keys: torch.Tensor, log_q: Any, ids: Any, diagonal: int | None, row_ids: Any,
                  start: int, stop: int, buffer: torch.Tensor | None = None,
                  low: torch.dtype | None = None) -> torch.Tensor:
    """``[B, stop - start]`` scores of one chunk, removed candidates at -inf (a fresh tensor, or a view of
    ``buffer``: safe in place either way)."""
    scores = _product(q, keys[start:stop].transpose(0, 1), buffer, low)
    if log_q is not None:
        scores = scores.sub_(log_q[start:stop])
    if _crosses_diagonal(diagonal, q.shape[0], start, stop):
        rows = torch.arange(diagonal, diagonal + q.shape[0], device=q.device)
        cols = torch.arange(start, stop, device=q.device)
        scores = scores.masked_fill_(rows[:, None] == cols[None, :], _NEG_INF)
    if ids is not None:
        scores = scores.masked_fill_(row_ids[:, None] == ids[start:stop][None, :], _NEG_INF)
    return scores


def _crosses_diagonal(diagonal: int | None, rows: int, start: int, stop: int) -> bool:
    """Whether columns ``[start, stop)`` hold the own positive ``diagonal + i`` of some row ``i < rows``."""
    return diagonal is not None and start < diagonal + rows and diagonal < stop


def _chunk_scores_t(q: torch.Tensor, keys: torch.Tensor, log_q: Any, ids: Any, diagonal: int | None, row_ids: Any,
                    start: int, stop: int, buffer: torch.Tensor | None = None,
                    low: torch.dtype | None = None) -> torch.Tensor:
    """The transpose of :func:`_chunk_scores`, ``[stop - start, B]``, computed as ``keys @ q^T``: the backward
    recomputes the scores this way so that ``torch.compile`` cannot merge it with the forward's product (its
    common-subexpression pass would then keep every chunk's scores alive between forward and backward)."""
    scores = _product(keys[start:stop], q.transpose(0, 1), buffer, low)
    if log_q is not None:
        scores = scores.sub_(log_q[start:stop, None])
    if _crosses_diagonal(diagonal, q.shape[0], start, stop):
        rows = torch.arange(diagonal, diagonal + q.shape[0], device=q.device)
        cols = torch.arange(start, stop, device=q.device)
        scores = scores.masked_fill_(cols[:, None] == rows[None, :], _NEG_INF)
    if ids is not None:
        scores = scores.masked_fill_(ids[start:stop][:, None] == row_ids[None, :], _NEG_INF)
    return scores


def _plan(layout: tuple, sizes: list[int], chunk: int, rows: int, itemsize: int, store_bytes: int) -> list:
    """``(source, start, stop, stored)`` for every chunk: the first chunks whose ``exp(s - m)`` fits in
    ``store_bytes`` are kept from the forward for the backward (three products instead of four)."""
    plan, used = [], 0
    for index, size in enumerate(sizes):
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            nbytes = rows * (stop - start) * itemsize
            stored = used + nbytes <= store_bytes and sum(p[3] for p in plan) < MAX_STORED_CHUNKS
            used += nbytes if stored else 0
            plan.append((index, start, stop, stored))
    return plan


#: At most this many chunks are kept from the forward (bounds the unrolled code under compilers).
MAX_STORED_CHUNKS = 8


class _StreamingRows(torch.autograd.Function):
    generate_vmap_rule = True     # torch.func.vmap runs the forward and backward per batch element
    @staticmethod
    def forward(layout: tuple, chunk: int, store_bytes: int, low: torch.dtype | None, q: torch.Tensor,
                s_pos: torch.Tensor, *tensors: Any) -> tuple:
        with _own_precision(q):
            return _forward(layout, chunk, store_bytes, low, q, s_pos, tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        layout, chunk, store_bytes, low, q, s_pos, *tensors = inputs
        _, row_max, log_total, *stored = output
        ctx.layout, ctx.chunk, ctx.store_bytes, ctx.low = layout, chunk, store_bytes, low
        ctx.num_stored, ctx.has_row_ids = len(stored), tensors[0] is not None
        ctx.save_for_backward(q, s_pos, row_max, log_total, *stored, *tensors[ctx.has_row_ids ^ 1:])
        ctx.mark_non_differentiable(row_max, log_total, *stored)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, *_unused: Any) -> tuple:
        with _own_precision(grad):
            if torch.is_grad_enabled():   # create_graph=True: this backward will itself be differentiated
                return _differentiable_backward(ctx, grad)
            return _backward(ctx, grad)


def _forward(layout: tuple, chunk: int, store_bytes: int, low: torch.dtype | None, q: torch.Tensor,
             s_pos: torch.Tensor, tensors: tuple) -> tuple:
    """The forward of :class:`_StreamingRows`: ``(rows, m, log1p(r), *stored chunks)``."""
    row_ids, sources = tensors[0], _unflatten(layout, tensors)
    plan = _plan(layout, [keys.shape[0] for keys, *_ in sources], chunk, q.shape[0], q.element_size(),
                 store_bytes)
    row_max = s_pos.detach().clone()      # m: one maximal candidate so far (the positive first)
    rest = torch.zeros_like(row_max)      # r: sum of exp(s - m) over every other candidate so far
    stored = []
    compiling = torch.compiler.is_compiling()
    buffer = _scratch(q, chunk, low) if not all(keep for *_, keep in plan) else None
    for index, start, stop, keep in plan:
        keys, log_q, ids, diagonal = sources[index]
        # Under torch.compile, tie each chunk's product to the previous chunk's result, so that the
        # scheduler cannot run every product first and hold all the chunks' scores at once.
        q_in = q + (rest[:, None] * 0.0) if compiling else q
        scores = _chunk_scores(q_in, keys, log_q, ids, diagonal, row_ids, start, stop,
                               None if keep else buffer, low)   # a kept chunk's weights outlive the loop
        chunk_max, top = scores.max(1)
        bigger = chunk_max > row_max
        new_max = torch.where(bigger, chunk_max, row_max)
        weights = scores.sub_(new_max[:, None]).exp_()           # exp(s - m), 0 where removed
        top = top[:, None]
        top_weight = weights.gather(1, top)
        # Where the chunk holds the new maximum, that one entry is m itself: leave it out of r.
        weights.scatter_(1, top, torch.where(bigger[:, None], 0.0, top_weight))
        rest = torch.where(bigger, (1.0 + rest) * torch.exp(row_max - new_max), rest) + weights.sum(1)
        row_max = new_max
        if keep:
            stored += [weights.scatter_(1, top, top_weight), new_max]
    log_total = torch.log1p(rest)         # log(sum over all candidates of exp(s - m))
    return ((row_max - s_pos) + log_total, row_max, log_total, *stored)


def _backward(ctx: Any, grad: torch.Tensor) -> tuple:
    """The backward of :class:`_StreamingRows` (first order: nothing recorded)."""
    q, s_pos, row_max, log_total, *rest = ctx.saved_tensors
    stored, rest = rest[:ctx.num_stored], rest[ctx.num_stored:]
    tensors = tuple(rest) if ctx.has_row_ids else (None, *rest)
    row_ids, sources = tensors[0], _unflatten(ctx.layout, tensors)
    plan = _plan(ctx.layout, [keys.shape[0] for keys, *_ in sources], ctx.chunk, q.shape[0], q.element_size(),
                 ctx.store_bytes)
    compiling = torch.compiler.is_compiling()
    scale = grad * torch.exp(-log_total)                     # h = g / sum, so that P * g = E * h
    grad_s_pos = grad * torch.expm1((s_pos - row_max) - log_total)   # p_pos - 1, exact near 0
    grad_q = torch.zeros_like(q)
    scaled_q = q * scale[:, None]
    # Per-chunk pieces, concatenated at the end (slice assignment into one buffer becomes a full copy per
    # chunk under torch.compile's functionalisation).
    grad_keys: list[list] = [[] for _ in sources]
    grad_log_q: list[Any] = [None if log_q is None else [] for _, log_q, _, _ in sources]
    low = ctx.low
    buffer = _scratch(q, ctx.chunk, low) if not all(keep for *_, keep in plan) else None
    for index, start, stop, keep in plan:
        keys, log_q, ids, diagonal = sources[index]
        chunk_keys = keys[start:stop]
        if keep:   # exp(s - m_c) from the forward: rescale the rows by exp(m_c - m) on the [B, D] side
            weights, chunk_max = stored[0], stored[1]
            stored = stored[2:]
            factor = torch.exp(chunk_max - row_max)
            grad_q.add_(_product(weights, chunk_keys, low=low).mul_(factor[:, None]))
            row_scale = scale * factor
            grad_keys[index].append(_product(weights.transpose(0, 1), scaled_q * factor[:, None], low=low))
        else:      # recompute, transposed: E^T = exp(s - m)^T, [chunk, B], 0 where removed
            q_in = q + (grad_q[:, :1] * 0.0) if compiling else q     # one chunk at a time (see forward)
            weights_t = _chunk_scores_t(q_in, keys, log_q, ids, diagonal, row_ids, start, stop, buffer, low)
            weights_t = weights_t.sub_(row_max[None, :]).exp_()
            if low is None:
                grad_q.addmm_(weights_t.transpose(0, 1), chunk_keys)
            else:
                grad_q.add_(_product(weights_t.transpose(0, 1), chunk_keys, low=low))
            grad_keys[index].append(_product(weights_t, scaled_q, low=low))
            if grad_log_q[index] is not None:
                grad_log_q[index].append(-(weights_t @ scale))
            continue
        if grad_log_q[index] is not None:
            grad_log_q[index].append(-(row_scale @ weights))
    grads: list[Any] = [None] * len(tensors)          # row_ids and ids: no gradient
    grad_keys = [_join(pieces, keys) for pieces, (keys, *_) in zip(grad_keys, sources)]
    grad_log_q = [None if pieces is None else _join(pieces, log_q)
                  for pieces, (_, log_q, _, _) in zip(grad_log_q, sources)]
    for (keys_at, log_q_at, _, _), grad_k, grad_l in zip(ctx.layout, grad_keys, grad_log_q):
        grads[keys_at] = grad_k if grads[keys_at] is None else grads[keys_at] + grad_k
        if log_q_at is not None:
            grads[log_q_at] = grad_l if grads[log_q_at] is None else grads[log_q_at] + grad_l
    return (None, None, None, None, grad_q * scale[:, None], grad_s_pos, *grads)


def _saved(ctx: Any) -> tuple:
    """``q``, ``s_pos``, ``row_ids`` and the sources from the saved tensors."""
    q, s_pos, _, _, *rest = ctx.saved_tensors
    tensors = tuple(rest[ctx.num_stored:]) if ctx.has_row_ids else (None, *rest[ctx.num_stored:])
    return q, s_pos, tensors, _unflatten(ctx.layout, tensors)


def _log_sum_exp(q: torch.Tensor, s_pos: torch.Tensor, sources: list, row_ids: Any, chunk: int,
                 low: torch.dtype | None) -> tuple:
    """``(m, log1p(r))`` of every row in ordinary differentiable operations, chunk by chunk: ``m`` is the
    chosen score itself (gathered), so derivatives of every order are those of the exact log-sum-exp."""
    row_max, rest = s_pos, torch.zeros_like(s_pos)
    for keys, log_q, ids, diagonal in sources:
        for start in range(0, keys.shape[0], chunk):
            scores = _chunk_scores(q, keys, log_q, ids, diagonal, row_ids, start, min(start + chunk, keys.shape[0]),
                                   low=low)
            chunk_max, top = scores.max(1)
            bigger = chunk_max > row_max
            new_max = torch.where(bigger, scores.gather(1, top[:, None])[:, 0], row_max)
            left_out = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top[:, None], bigger[:, None])
            weights = torch.exp(torch.where(left_out, _NEG_INF, scores - new_max[:, None]))
            rest = torch.where(bigger, (1.0 + rest) * torch.exp(row_max - new_max), rest) + weights.sum(1)
            row_max = new_max
    return row_max, torch.log1p(rest)


def _differentiable_backward(ctx: Any, grad: torch.Tensor) -> tuple:
    """The backward written in ordinary differentiable operations (with ``create_graph=True``, and under
    ``torch.func`` transforms), so that autograd can differentiate it again: Hessians, gradient penalties,
    meta-learning. ``P = exp(s - logsumexp)`` chunk by chunk; autograd then keeps every chunk (the memory of
    the materialised block)."""
    q, s_pos, tensors, sources = _saved(ctx)
    row_ids = tensors[0]
    row_max, log_total = _log_sum_exp(q, s_pos, sources, row_ids, ctx.chunk, ctx.low)
    log_norm = row_max + log_total
    grad_q = torch.zeros_like(q)
    grads: list[Any] = [None] * len(tensors)
    for (keys_at, log_q_at, _, _), (keys, log_q, ids, diagonal) in zip(ctx.layout, sources):
        key_grads, log_q_grads = [], []
        for start in range(0, keys.shape[0], ctx.chunk):
            stop = min(start + ctx.chunk, keys.shape[0])
            scores = _chunk_scores(q, keys, log_q, ids, diagonal, row_ids, start, stop, low=ctx.low)
            weighted = torch.exp(scores - log_norm[:, None]) * grad[:, None]     # g P, 0 where removed
            grad_q = grad_q + _product(weighted, keys[start:stop], low=ctx.low)
            key_grads.append(_product(weighted.transpose(0, 1), q, low=ctx.low))
            log_q_grads.append(-weighted.sum(0))
        grad_keys = torch.cat(key_grads, 0) if key_grads else torch.zeros_like(keys)
        grads[keys_at] = grad_keys if grads[keys_at] is None else grads[keys_at] + grad_keys
        if log_q_at is not None:
            grad_log_q = torch.cat(log_q_grads, 0) if log_q_grads else torch.zeros_like(log_q)
            grads[log_q_at] = grad_log_q if grads[log_q_at] is None else grads[log_q_at] + grad_log_q
    grad_s_pos = grad * torch.expm1((s_pos - row_max) - log_total)               # p_pos - 1, exact near 0
    return (None, None, None, None, grad_q, grad_s_pos, *grads)


def _join(pieces: list, like: torch.Tensor) -> torch.Tensor:
    if not pieces:
        return torch.zeros_like(like)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0)


def streaming_row_losses(q: torch.Tensor, s_pos: torch.Tensor, sources: tuple, row_ids: Any, chunk: int,
                         store_bytes: int = 0) -> torch.Tensor:
    """Row losses ``[B]`` of the streaming softmax (see the module docstring)."""
    layout, tensors = _flatten(sources, row_ids)
    if torch.compiler.is_compiling():
        store_bytes = 0   # dynamo (torch 2.13) fails on a Function's extra saved outputs: recompute every chunk
    return _StreamingRows.apply(layout, int(chunk), int(store_bytes), _autocast_dtype(q), q, s_pos, *tensors)[0]


def _autocast_dtype(q: torch.Tensor) -> torch.dtype | None:
    """The dtype that an enclosing ``torch.autocast`` gives float32 matrix products on ``q``'s device, or None."""
    device = q.device.type
    if q.dtype != torch.float32 or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def _own_precision(like: torch.Tensor) -> Any:
    """A context without autocast on ``like``'s device: the Function's arithmetic stays in its own dtype (the
    forward runs inside the caller's autocast, and so may the backward) and its products take the autocast
    dtype only where :func:`_product` is told to."""
    return torch.autocast(like.device.type, enabled=False)
