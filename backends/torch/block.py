"""The materialised retrieval softmax for eager PyTorch: the whole loss in one autograd node.

``block_loss(q, pos, temperature, pos_log_q, sources, row_ids, reduction)`` is the ``ops.block_loss`` of
:mod:`recloss.kernels.block`: the loss of the ``[B, M]`` block of scores with a handful of large operations
(one matrix product, a softmax, two row maxima; two products in the backward) instead of the generic kernel's
few dozen small ones, with the reduction and the non-finite guard inside the same node.

With ``s = q k^T / T - log_q`` over the kept candidates (removed ones at ``-inf``) and ``s_pos`` the positive's
score, each row is

    l = softplus(lse - s_pos),    lse = logsumexp_k s_k   (the negatives only)

which is ``logsumexp([s_pos, s]) - s_pos`` written so that a confident row (the positive far above every
negative: ``lse - s_pos = -21.6``) keeps its loss ``log1p(exp(-21.6)) = 4.2e-10`` and a gradient of the right
sign in float32, where ``F.cross_entropy`` returns exactly 0 and a gradient of the wrong sign. A row with every
candidate removed has ``lse = -inf`` and loss 0. ``lse`` comes from the softmax the backward needs anyway:
``P = softmax(s)`` holds ``1 / sum_k exp(s_k - m)`` at the row maximum ``m``, so ``lse = m - log(max_k P)``.

The gradient is ``dl/ds = sigmoid(lse - s_pos) P`` and ``dl/ds_pos = -sigmoid(lse - s_pos)``; removed entries have
``P = 0`` and so no gradient. ``s_pos = q_i . pos_i / T - pos_log_q_i`` is an elementwise row product, so that a
NaN or an infinity in ``q`` or ``pos`` reaches the non-finite guard without a pass of its own; where the
in-batch keys are ``pos`` itself, its gradient joins the backward's two products (``addmm``). Under
``create_graph=True`` the backward is recomputed from the inputs in ordinary differentiable operations, so
second derivatives hold.

The most common call, in-batch negatives with no option (no log Q, no ids), has an entry and a node of its own
(:func:`in_batch_loss`, :class:`_InBatchLoss`: two tensors in, nothing to look up, entered through
``Function.apply``'s C entry), since at a small batch each operation and each Python call around them is a
visible part of the step.

Eager autograd only: :func:`ready` is False (the generic kernel then runs) while ``torch.compile`` traces (it
fuses the generic kernel's operations itself), under ``torch.func`` transforms and forward-mode AD (an old-style
Function has neither); :func:`block_loss` returns None for operands other than float32/float64 and for an
empty block.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

_NEG_INF = float("-inf")
_FLOATS = (torch.float32, torch.float64)


def ready() -> bool:
    """Whether the block operation can run now: eager autograd (not while ``torch.compile`` traces, not under
    ``torch.func`` transforms or forward-mode AD; :func:`block_loss` also steps aside under ``torch.autocast``)."""
    return not (torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None
                or forward_ad._current_level >= 0)


def in_batch_loss(q: torch.Tensor, pos: torch.Tensor, temperature: Any, reduction: str) -> torch.Tensor | None:
    """:func:`block_loss` with the one source ``(pos, None, None, 0)``: in-batch negatives only (row ``i``'s own
    column removed), no log Q, no ids. The most common call, with nothing to look up; None where this path does
    not apply (a dtype other than float32/float64, ``torch.autocast``)."""
    if q.shape[0] < 2:    # one row: no candidate left, which the general node handles
        return block_loss(q, pos, temperature, None, ((pos, None, None, 0),), None, reduction)
    if q.dtype not in _FLOATS or torch.is_autocast_enabled(q.device.type):
        return None
    if isinstance(temperature, float):
        return _apply_in_batch(_live(q), _live(pos), 1.0 / temperature, reduction)
    return _apply_in_batch(_live(q / temperature), _live(pos), 1.0, reduction)


def block_loss(q: torch.Tensor, pos: torch.Tensor, temperature: Any, pos_log_q: Any, sources: tuple,
               row_ids: Any, reduction: str) -> torch.Tensor | None:
    """The loss reduced by ``reduction`` (``"none"``: the rows ``[B]``), or None where this path does not apply.

    The caller has checked :func:`ready`. ``temperature`` is a Python float or a 0-d tensor (then divided out
    here, so autograd gives its gradient); each source is ``(keys [M, D], log_q [M] | None, ids [M] | None,
    diagonal)``, as for the streaming path.
    """
    if q.dtype not in _FLOATS or torch.is_autocast_enabled(q.device.type):
        # (under torch.autocast the generic rows run, whose products autocast casts as the user's would be)
        return None
    rows, start, diagonals, bounds, flat = q.shape[0], 0, [], [], []
    holder, empty_possible, removed = None, False, 0
    for index, (keys, log_q, ids, diagonal) in enumerate(sources):
        size = keys.shape[0]
        if diagonal is not None:
            if not isinstance(diagonal, int) or diagonal + rows > size:
                return None
            removed += 1
        if keys is pos:      # its rows 0..B are pos: the gradients of the two meet
            holder = index
        if ids is not None:
            empty_possible = True
        diagonals.append(diagonal)
        bounds.append((start, start + size))
        start += size
        flat += (keys, log_q, ids)
    if rows == 0 or start == 0:
        return None
    # Without ids each diagonal removes one column per row: a row can be empty only if that is all it has.
    empty_possible = empty_possible or removed >= start
    if isinstance(temperature, float):
        inv_t = 1.0 / temperature
    else:
        q, inv_t = q / temperature, 1.0
    layout = _Layout(tuple(diagonals), tuple(bounds), holder, empty_possible, _unguarded(pos_log_q, flat, q, pos))
    return _BlockLoss.apply((layout, inv_t, reduction), q, pos, pos_log_q, row_ids, *flat)


class _Layout(NamedTuple):
    """What the node's two passes need to know of the sources besides their tensors."""
    diagonals: tuple          # per source: the offset of the removed diagonal, or None
    bounds: tuple             # per source: its columns ``(start, stop)`` in the block
    holder: int | None        # the source whose keys are ``pos`` itself (in-batch), if any
    empty_possible: bool      # whether a row can lose every candidate (then its loss is 0)
    guarded: tuple            # positions in ``(pos_log_q, *flat)`` of the floating inputs the guard adds


def _unguarded(pos_log_q: Any, flat: list, q: torch.Tensor, pos: torch.Tensor) -> tuple:
    """The positions in ``(pos_log_q, *flat)`` of the floating inputs other than ``q`` and ``pos`` (the guard's
    extra terms), each tensor once."""
    positions, seen = [], [q, pos]
    for index, t in enumerate((pos_log_q, *flat)):
        if t is None or not t.is_floating_point():
            continue
        for other in seen:
            if t is other:
                break
        else:
            seen.append(t)
            positions.append(index)
    return tuple(positions)


#: Positions of the arguments of ``_BlockLoss.apply`` (for ``ctx.needs_input_grad``).
_Q, _POS, _POS_LOG_Q, _FLAT = 1, 2, 3, 5


def _split(flat: tuple) -> list[tuple]:
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def _keys(flat: tuple) -> torch.Tensor:
    """The keys of every source (``flat`` holds ``keys, log_q, ids`` per source), one ``[M, D]`` tensor."""
    return flat[0] if len(flat) == 3 else torch.cat(flat[::3])


def _columns(scores: torch.Tensor, bounds: tuple[int, int]) -> torch.Tensor:
    a, b = bounds
    return scores if a == 0 and b == scores.shape[1] else scores[:, a:b]


_ZERO: dict[tuple, torch.Tensor] = {}


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A 0-d zero of ``like``'s dtype and device (``addmm``'s ignored input), made once."""
    key = (like.dtype, like.device)
    zero = _ZERO.get(key)
    if zero is None:
        zero = _ZERO[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return zero


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log1p(exp(x))``, exact in float64 too: ``F.softplus`` returns ``x`` itself above its threshold, 20
    by default (``exp(-20)`` is not negligible in float64); above 40 it is (``exp(-40) / 40 < 2**-60``)."""
    return F.softplus(x, threshold=40.0)


def _reduced(losses: torch.Tensor, guard: torch.Tensor, reduction: str) -> torch.Tensor:
    """The rows ``[B, 1]`` reduced, plus ``guard * 0``: ``guard`` ``[B, 1]`` is non-finite in a row where ``q``
    or ``pos`` holds a NaN or an infinity, so the result is then NaN, every row with ``"none"``. ``guard`` is
    None for a sum or mean of rows that are NaN there already."""
    if reduction == "none":
        return losses.view(-1).add_(guard.mul(0.0).sum())
    total = losses if guard is None else losses.add_(guard, alpha=0.0)
    return total.sum() if reduction == "sum" else total.mean()


class _InBatchLoss(torch.autograd.Function):
    """The common case in a node of its own: in-batch negatives only (the keys are ``pos``, row ``i``'s own
    column removed), no log Q, no ids, two rows or more (so no row loses every candidate). The math of
    :class:`_BlockLoss` with nothing to look up: ``(q, pos)`` in, the loss out.

    The positive's score ``s_pos`` is the block's diagonal, read before it is removed, as ``s - 2 s``: ``-s``
    where ``s`` is finite, NaN where it is not. A NaN or an infinity in ``q_i`` or ``pos_i`` makes ``s_ii``
    non-finite, so ``x_i`` is then NaN: that is the guard of ``q`` and ``pos`` (every row's with ``"none"``)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, pos: torch.Tensor, inv_t: float, reduction: str) -> torch.Tensor:
        rows = q.shape[0]
        scores = torch.addmm(_zero(q), q, pos.t(), beta=0, alpha=inv_t)
        diagonal = scores.as_strided((rows, 1), (rows + 1, 1))
        x = torch.sub(diagonal, diagonal, alpha=2.0)             # -s_pos, [B, 1]
        scores.fill_diagonal_(_NEG_INF)
        x.add_(scores.amax(1, keepdim=True))
        probs = torch.softmax(scores, 1)
        x.sub_(probs.amax(1, keepdim=True).log_())                # lse - s_pos
        ctx.inv_t, ctx.reduction = inv_t, reduction
        ctx.save_for_backward(q, pos, probs, x)
        return _reduced(softplus(x), x if reduction == "none" else None, reduction)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        q, pos, probs, x = ctx.saved_tensors
        rows, inv_t, reduction = q.shape[0], ctx.inv_t, ctx.reduction
        if torch.is_grad_enabled():   # create_graph=True: the general node's differentiable backward
            ctx.layout = _Layout((0,), ((0, rows),), 0, False, ())
            grad = grad[:, None] if reduction == "none" else grad / rows if reduction == "mean" else grad
            grad_q, grad_pos, _, _, grad_keys, _, _ = _differentiable_backward(ctx, grad, q, pos, None, None,
                                                                               [(pos, None, None)])
            return grad_q, grad_pos + grad_keys, None, None
        needs = ctx.needs_input_grad
        # w_i = sigmoid(x_i) d loss / d l_i; the reduction's weight and 1/T (c) are the products' alpha and beta:
        # d/dq_i = c w_i (P pos - pos)_i; d/dpos = c (P^T (w q) - w q) (as keys, then as positives).
        c = inv_t / rows if reduction == "mean" else inv_t
        w = torch.sigmoid(x).mul_(grad[:, None] if reduction == "none" else grad)
        grad_q = torch.addmm(pos, probs, pos, beta=-c, alpha=c).mul_(w) if needs[0] else None
        grad_pos = None
        if needs[1]:
            from_pos = q * w
            grad_pos = torch.addmm(from_pos, probs.t(), from_pos, beta=-c, alpha=c)
        return grad_q, grad_pos, None, None


def _direct_apply(function: type) -> Any:
    """``function.apply`` without the Python layer of ``torch.autograd.Function.apply`` (about 4 us a call, a
    visible part of a small eager step): that layer binds default arguments for Functions with a
    ``setup_context`` (these have none), routes ``torch.func`` transforms (:func:`ready` has excluded them) and
    unwraps dead functorch wrappers (:func:`_live` does). The public ``apply`` where torch lacks the C entry."""
    entry = getattr(torch._C, "_FunctionBase", None)
    entry = getattr(entry, "__dict__", {}).get("apply")
    return function.apply if entry is None or not hasattr(entry, "__get__") else entry.__get__(None, function)


_live = getattr(torch._C._functorch, "unwrap_if_dead", lambda t: t)   # a tensor kept from an ended transform
_apply_in_batch = _direct_apply(_InBatchLoss)


class _BlockLoss(torch.autograd.Function):
    """The loss of the block (see the module docstring). Per-row values are kept as ``[B, 1]`` columns, so that
    they broadcast against the block without a reshaping operation."""

    @staticmethod
    def forward(ctx: Any, config: tuple, q: torch.Tensor, pos: torch.Tensor, pos_log_q: Any, row_ids: Any,
                *flat: Any) -> torch.Tensor:
        layout, inv_t, reduction = config
        rows = q.shape[0]
        # s = q k^T / T: the temperature is the product's alpha (no pass over q or the block for it).
        scores = torch.addmm(_zero(q), q, _keys(flat).t(), beta=0, alpha=inv_t)
        for index, (diagonal, columns) in enumerate(zip(layout.diagonals, layout.bounds)):
            log_q, ids = flat[3 * index + 1], flat[3 * index + 2]
            block = _columns(scores, columns)
            if log_q is not None:
                block.sub_(log_q)
            if diagonal == 0 and columns[0] == 0:   # (i, i) of the whole block
                scores.fill_diagonal_(_NEG_INF)
            elif diagonal is not None:
                block[:, diagonal:diagonal + rows].diagonal().fill_(_NEG_INF)
            if ids is not None:
                block.masked_fill_(row_ids[:, None] == ids[None, :], _NEG_INF)
        # q_i . pos_i elementwise: any NaN or infinity in q or pos makes one of its entries non-finite (the guard).
        dot = (q * pos).sum(1, keepdim=True)
        row_max = scores.amax(1, keepdim=True)
        empty = row_max == _NEG_INF if layout.empty_possible else None
        if empty is not None and empty.device.type == "cpu" and not empty.any():
            empty = None          # (a check that would wait for the device elsewhere: there the fill runs anyway)
        probs = torch.softmax(scores, 1)
        x = row_max.sub_(probs.amax(1, keepdim=True).log_()).sub_(dot, alpha=inv_t)    # lse - s_pos, [B, 1]
        if empty is not None:   # no candidate left: lse = -inf (the softmax of such a row is NaN)
            probs.masked_fill_(empty, 0.0)
            x.masked_fill_(empty, _NEG_INF)
        if pos_log_q is not None:
            x.add_(pos_log_q[:, None])
        ctx.layout, ctx.inv_t, ctx.reduction = layout, inv_t, reduction
        ctx.save_for_backward(q, pos, pos_log_q, row_ids, *flat, probs, x)
        total = _reduced(softplus(x), dot, reduction)
        others = (pos_log_q, *flat)    # the guard of the other floating inputs: NaN where one is not finite
        for index in layout.guarded:
            total.add_(others[index].mul(0.0).sum())
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        q, pos, pos_log_q, row_ids, *rest = ctx.saved_tensors
        flat, (probs, x) = rest[:-2], rest[-2:]
        rows, inv_t, reduction, layout = q.shape[0], ctx.inv_t, ctx.reduction, ctx.layout
        if torch.is_grad_enabled():   # create_graph=True: a backward that autograd can differentiate again
            grad = grad[:, None] if reduction == "none" else grad / rows if reduction == "mean" else grad
            return (None, *_differentiable_backward(ctx, grad, q, pos, pos_log_q, row_ids, _split(flat)))
        needs, holder, count = ctx.needs_input_grad, layout.holder, len(layout.bounds)
        # dl_i/dlse_i = sigmoid(x_i) = -dl_i/ds_pos_i; times d loss/d l_i and 1/T: the scale of every gradient.
        # dl/ds = scaled P row by row, so the products take P and their [B, D] sides carry the scale.
        factor = inv_t / rows if reduction == "mean" else inv_t
        scaled = torch.addcmul(_zero(x), torch.sigmoid(x), grad[:, None] if reduction == "none" else grad,
                               value=factor)
        # s_pos = q_i . pos_i / T: d/dq_i = scaled_i (P keys - pos)_i, d/dpos_i = -scaled_i q_i.
        grad_q = grad_pos = None
        if needs[_Q]:
            grad_q = torch.addmm(pos, probs, _keys(flat), beta=-1).mul_(scaled)
        wants_keys = [needs[_FLAT + 3 * i] for i in range(count)]
        if holder is not None or needs[_POS] or any(wants_keys):
            from_pos = q * scaled
        flat_grads: list[Any] = [None] * len(flat)
        if any(wants_keys):
            if holder is not None and count == 1:      # the in-batch keys are pos itself
                flat_grads[0] = torch.addmm(from_pos, probs.t(), from_pos, beta=-1)
            else:
                every = torch.mm(probs.t(), from_pos)
                if holder is not None:
                    a = layout.bounds[holder][0]
                    every[a:a + rows].sub_(from_pos)
                for i, (a, b) in enumerate(layout.bounds):
                    flat_grads[3 * i] = every[a:b] if wants_keys[i] else None
        for i, bounds in enumerate(layout.bounds):
            if flat[3 * i + 1] is not None and needs[_FLAT + 3 * i + 1]:
                flat_grads[3 * i + 1] = torch.mm(scaled.t(), _columns(probs, bounds)).view(-1).mul_(-1.0 / inv_t)
        if needs[_POS] and holder is None:
            grad_pos = from_pos.neg_()
        grad_pos_log_q = None
        if needs[_POS_LOG_Q]:
            grad_pos_log_q = scaled.view(rows) * (1.0 / inv_t)
        return (None, grad_q, grad_pos, grad_pos_log_q, None, *flat_grads)


def _differentiable_backward(ctx: Any, grad: torch.Tensor, q: torch.Tensor, pos: torch.Tensor, pos_log_q: Any,
                             row_ids: Any, sources: list) -> tuple:
    """The same gradients recomputed from the inputs in ordinary operations (for gradients of gradients);
    ``grad`` is d loss / d l_i, ``[B, 1]`` or broadcastable to it."""
    rows, inv_t = q.shape[0], ctx.inv_t
    scaled = q * inv_t
    keys = torch.cat([source_keys for source_keys, _, _ in sources])
    scores = scaled @ keys.t()
    pieces, removed = [], torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for (source_keys, log_q, ids), diagonal, (a, b) in zip(sources, ctx.layout.diagonals, ctx.layout.bounds):
        pieces.append(torch.zeros_like(source_keys[:, 0]) if log_q is None else log_q)
        if diagonal is not None:
            removed[:, a + diagonal:a + diagonal + rows].diagonal().fill_(True)
        if ids is not None:
            removed[:, a:b] |= row_ids[:, None] == ids[None, :]
    scores = (scores - torch.cat(pieces)).masked_fill(removed, _NEG_INF)
    row_max = scores.detach().amax(1, keepdim=True)
    empty = row_max == _NEG_INF
    shift = torch.where(empty, 0.0, row_max)
    exps = torch.exp(scores - shift)
    total = torch.where(empty, 1.0, exps.sum(1, keepdim=True))
    lse = torch.where(empty, _NEG_INF, shift + torch.log(total))
    s_pos = (scaled * pos).sum(1, keepdim=True)
    if pos_log_q is not None:
        s_pos = s_pos - pos_log_q[:, None]
    coefficient = grad * torch.sigmoid(lse - s_pos)
    weights = exps / total * coefficient
    grad_q = (weights @ keys - pos * coefficient) * inv_t
    every = weights.t() @ scaled
    flat_grads = []
    for (_, log_q, _), (a, b) in zip(sources, ctx.layout.bounds):
        flat_grads += [every[a:b], None if log_q is None else -weights[:, a:b].sum(0), None]
    grad_pos = -scaled * coefficient
    return (grad_q, grad_pos, None if pos_log_q is None else coefficient.view(rows), None, *flat_grads)
