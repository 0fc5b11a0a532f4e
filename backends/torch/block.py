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

Eager autograd only: :func:`ready` is False (the generic kernel then runs) while ``torch.compile`` traces (it
fuses the generic kernel's operations itself), under ``torch.func`` transforms and forward-mode AD (an old-style
Function has neither); :func:`block_loss` returns None for operands other than float32/float64 and for an
empty block.
"""

from __future__ import annotations

from typing import Any

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


def block_loss(q: torch.Tensor, pos: torch.Tensor, temperature: Any, pos_log_q: Any, sources: tuple,
               row_ids: Any, reduction: str) -> torch.Tensor | None:
    """The loss reduced by ``reduction`` (``"none"``: the rows ``[B]``), or None where this path does not apply.

    ``temperature`` is a Python float or a 0-d tensor (then divided out here, so autograd gives its gradient);
    each source is ``(keys [M, D], log_q [M] | None, ids [M] | None, diagonal)``, as for the streaming path.
    """
    if not ready() or q.dtype not in _FLOATS or torch.is_autocast_enabled(q.device.type):
        # (under torch.autocast the generic rows run, whose products autocast casts as the user's would be)
        return None
    rows = q.shape[0]
    if rows == 0 or sum(keys.shape[0] for keys, *_ in sources) == 0 or not all(
            diagonal is None or (isinstance(diagonal, int) and diagonal + rows <= keys.shape[0])
            for keys, _, _, diagonal in sources):
        return None
    if isinstance(temperature, float):
        inv_t = 1.0 / temperature
    else:
        q, inv_t = q / temperature, 1.0
    layout = tuple((diagonal, keys is pos) for keys, _, _, diagonal in sources)   # is pos: rows 0..B are pos
    flat = [t for keys, log_q, ids, _ in sources for t in (keys, log_q, ids)]
    return _BlockLoss.apply((layout, inv_t, reduction), q, pos, pos_log_q, row_ids, *flat)


#: Positions of the arguments of ``_BlockLoss.apply`` (for ``ctx.needs_input_grad``).
_Q, _POS, _POS_LOG_Q, _FLAT = 1, 2, 3, 5


def _split(flat: tuple) -> list[tuple]:
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def _keys(sources: list) -> torch.Tensor:
    return torch.cat([keys for keys, _, _ in sources]) if len(sources) > 1 else sources[0][0]


def _bounds(sources: list) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for keys, _, _ in sources:
        bounds.append((start, start + keys.shape[0]))
        start += keys.shape[0]
    return bounds


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


def _others_guard(tensors: tuple, covered: tuple) -> Any:
    """``sum(x * 0)`` over the floating ``tensors`` not in ``covered`` (0, or NaN if one holds a NaN or an
    infinity, as the generic guard), or None if there are none."""
    total, seen = None, list(covered)
    for t in tensors:
        if t is not None and t.is_floating_point() and not any(t is other for other in seen):
            seen.append(t)
            term = t.mul(0.0).sum()
            total = term if total is None else total.add_(term)
    return total


class _BlockLoss(torch.autograd.Function):
    """The loss of the block (see the module docstring). Per-row values are kept as ``[B, 1]`` columns, so that
    they broadcast against the block without a reshaping operation."""

    @staticmethod
    def forward(ctx: Any, config: tuple, q: torch.Tensor, pos: torch.Tensor, pos_log_q: Any, row_ids: Any,
                *flat: Any) -> torch.Tensor:
        layout, inv_t, reduction = config
        sources = _split(flat)
        rows = q.shape[0]
        # s = q k^T / T: the temperature is the product's alpha (no pass over q or the block for it).
        scores = torch.addmm(_zero(q), q, _keys(sources).t(), beta=0, alpha=inv_t)
        empty_possible = False
        for (keys, log_q, ids), (diagonal, _), bounds in zip(sources, layout, _bounds(sources)):
            block = _columns(scores, bounds)
            if log_q is not None:
                block.sub_(log_q)
            if diagonal is not None:
                (block if diagonal == 0 and rows == block.shape[1] else block[:, diagonal:diagonal + rows]
                 ).diagonal().fill_(_NEG_INF)
            if ids is not None:
                block.masked_fill_(row_ids[:, None] == ids[None, :], _NEG_INF)
                empty_possible = True
        # Without ids each diagonal removes one column per row: a row can be empty only if that is all it has.
        empty_possible = empty_possible or sum(d is not None for d, _ in layout) >= scores.shape[1]
        # q_i . pos_i elementwise: any NaN or infinity in q or pos makes one of its entries non-finite (the guard).
        dot = (q * pos).sum(1, keepdim=True)
        row_max = scores.amax(1, keepdim=True)
        probs = torch.softmax(scores, 1)
        empty = row_max == _NEG_INF if empty_possible else None
        if empty is not None and empty.device.type == "cpu" and not empty.any():
            empty = None          # (a check that would wait for the device elsewhere: there the fill runs anyway)
        x = row_max.sub_(probs.amax(1, keepdim=True).log_()).sub_(dot, alpha=inv_t)    # lse - s_pos, [B, 1]
        if empty is not None:   # no candidate left: lse = -inf (the softmax of such a row is NaN)
            probs.masked_fill_(empty, 0.0)
            x.masked_fill_(empty, _NEG_INF)
        if pos_log_q is not None:
            x.add_(pos_log_q[:, None])
        ctx.layout, ctx.inv_t, ctx.reduction = layout, inv_t, reduction
        ctx.save_for_backward(q, pos, pos_log_q, row_ids, *flat, probs, x)
        # softplus(x) = log1p(exp(x)); above 40 it is x in float64 and float32 (exp(-40) / 40 < 2**-60).
        losses = F.softplus(x, threshold=40.0)
        others = _others_guard((pos_log_q, *flat), (q, pos))
        if reduction == "none":   # every row NaN where any input is not finite
            guard = dot.mul(0.0).sum()
            return losses.view(rows).add_(guard if others is None else guard.add_(others))
        total = losses.add_(dot, alpha=0.0)      # + dot * 0: NaN where dot is not finite
        total = total.sum() if reduction == "sum" else total.mean()
        return total if others is None else total.add_(others)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        q, pos, pos_log_q, row_ids, *rest = ctx.saved_tensors
        flat, (probs, x) = rest[:-2], rest[-2:]
        sources = _split(flat)
        rows, inv_t, reduction = q.shape[0], ctx.inv_t, ctx.reduction
        if torch.is_grad_enabled():   # create_graph=True: a backward that autograd can differentiate again
            grad = grad[:, None] if reduction == "none" else grad / rows if reduction == "mean" else grad
            return (None, *_differentiable_backward(ctx, grad, q, pos, pos_log_q, row_ids, sources))
        needs = ctx.needs_input_grad
        # dl_i/dlse_i = sigmoid(x_i) = -dl_i/ds_pos_i; times d loss/d l_i and 1/T: the scale of every gradient.
        factor = inv_t / rows if reduction == "mean" else inv_t
        scaled = torch.sigmoid(x).mul_(grad[:, None] if reduction == "none" else grad)
        if factor != 1.0:
            scaled.mul_(factor)
        weights = probs.mul(scaled)                           # dl/ds / T, 0 where removed
        bounds = _bounds(sources)
        grad_log_q = [None if log_q is None or not needs[_FLAT + 3 * i + 1]
                      else _columns(weights, bound).sum(0).mul_(-1.0 / inv_t)
                      for i, ((_, log_q, _), bound) in enumerate(zip(sources, bounds))]
        # s_pos = q_i . pos_i / T: d/dq_i = -scaled_i pos_i, d/dpos_i = -scaled_i q_i.
        holder = next((i for i, (_, holds) in enumerate(ctx.layout) if holds), None)
        grad_q = grad_pos = None
        if needs[_Q]:
            grad_q = torch.addmm(pos * scaled, weights, _keys(sources), beta=-1)
        grad_keys: list[Any] = [None] * len(sources)
        if holder is not None or needs[_POS]:
            from_pos = q * scaled
        if any(needs[_FLAT + 3 * i] for i in range(len(sources))):
            if holder is not None and len(sources) == 1:      # the in-batch keys are pos itself
                every = torch.addmm(from_pos, weights.t(), q, beta=-1)
            else:
                every = torch.mm(weights.t(), q)
                if holder is not None:
                    a = bounds[holder][0]
                    every[a:a + rows].sub_(from_pos)
            grad_keys = [every if len(sources) == 1 else every[a:b] if needs[_FLAT + 3 * i] else None
                         for i, (a, b) in enumerate(bounds)]
        if needs[_POS] and holder is None:
            grad_pos = from_pos.neg_()
        grad_pos_log_q = None
        if needs[_POS_LOG_Q]:
            grad_pos_log_q = scaled.view(rows) * (1.0 / inv_t)
        flat_grads = [g for i in range(len(sources)) for g in (grad_keys[i], grad_log_q[i], None)]
        return (None, grad_q, grad_pos, grad_pos_log_q, None, *flat_grads)


def _differentiable_backward(ctx: Any, grad: torch.Tensor, q: torch.Tensor, pos: torch.Tensor, pos_log_q: Any,
                             row_ids: Any, sources: list) -> tuple:
    """The same gradients recomputed from the inputs in ordinary operations (for gradients of gradients);
    ``grad`` is d loss / d l_i, ``[B, 1]`` or broadcastable to it."""
    rows, inv_t = q.shape[0], ctx.inv_t
    scaled = q * inv_t
    keys = _keys(sources)
    scores = scaled @ keys.t()
    pieces, removed = [], torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    for (source_keys, log_q, ids), (diagonal, _), (a, b) in zip(sources, ctx.layout, _bounds(sources)):
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
    for (_, log_q, _), (a, b) in zip(sources, _bounds(sources)):
        flat_grads += [every[a:b], None if log_q is None else -weights[:, a:b].sum(0), None]
    grad_pos = -scaled * coefficient
    return (grad_q, grad_pos, None if pos_log_q is None else coefficient.view(rows), None, *flat_grads)
