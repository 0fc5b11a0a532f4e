"""Fused softmax rows for PyTorch: Triton kernels behind a ``torch.autograd.Function``.

``fused_row_losses(q, s_pos, sources, row_ids, temperature)`` returns, for each row ``i``,
``(m_i - s_pos_i) + log1p(r_i)``: ``m_i`` the maximum of the positive score and the kept candidate scores
``s_ic = q_i . k_c / T - log_q_c``, ``r_i`` the sum of ``exp(s - m_i)`` over all of them but one maximal
element. The ``[B, N]`` scores are never written to memory:

forward   one Triton pass over (row block x candidate block) tiles, the candidates split into enough slices to
          fill the GPU; each slice's ``(m, r)`` (and, when a gradient will be taken, ``A = sum exp(s - m) k``)
          are merged here with the same tie-aware rule. Two matrix products per tile with the gradient, one
          without.
backward  ``dq_i = g_i sum_c P_ic k_c / T`` (``P = exp(s - lse)``, merged from the slices' ``A``) and the
          temperature's gradient ``-sum_i q_i . dq_i / T`` come without another pass; one Triton pass over (candidate block x row block) tiles
          recomputes the scores and accumulates ``dk_c = sum_i G_ic q_i / T`` and ``d log_q_c = -sum_i G_ic``
          with ``G_ic = g_i exp(s_ic - lse_i)``: two matrix products per tile. The row weights of the loss
          reach the kernel as the per-row gradient ``g_i`` (a row of weight 0 contributes nothing).

float32, bfloat16 and float16 inputs (the products in the inputs' dtype, accumulated in float32; float32
products at full precision unless ``torch.backends.cuda.matmul.allow_tf32`` is set); the row losses are float32.
Second derivatives and forward-mode AD are refused with a :class:`recloss.ReclossError`; ``torch.func.vmap`` too.
Under ``torch.compile`` the call runs eagerly (a graph break). This module is imported only when the path runs
(importing it imports ``torch._dynamo``, which imports triton); where the path applies is decided by
``TorchOps.fused_unavailable`` in :mod:`recloss.backends.torch` and :mod:`recloss.kernels.fused`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from recloss.errors import ReclossError
from recloss.kernels.fused import FORWARD_MODE_REFUSED, SECOND_ORDER_REFUSED, VMAP_REFUSED, refusal

#: Tile sizes, how many programs to aim for (two per SM of an H100/H200) and the launch options (``num_warps``
#: 0: 8 warps from a padded width of 128 on, as FlashAttention for large heads, else 4); tests shrink the
#: blocks; untuned (no GPU yet): ``benchmarks/fused_gpu.py --kernel-config`` tries others.
CONFIG: dict[str, int] = {"block_b": 64, "block_n": 64, "programs": 264, "num_warps": 0, "num_stages": 2}


# ----------------------------------------------------------------------------------------------------------
# The forward and backward passes


def _blocks(dim: int) -> tuple[int, int, int]:
    block_d = max(16, _next_power_of_2(dim))
    shrink = 1 if block_d <= 256 else 2 if block_d <= 512 else 4
    return max(16, CONFIG["block_b"] // shrink), max(16, CONFIG["block_n"] // shrink), block_d


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _precision(dtype: torch.dtype) -> str | None:
    """``tl.dot``'s input precision: float32 at full precision unless torch allows TF32; None (Triton's default,
    which concerns float32 only) for half inputs."""
    if dtype != torch.float32:
        return None
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"


def _dot_in_float32(dtype: torch.dtype) -> bool:
    """Triton's interpreter multiplies bfloat16 tiles wrongly (2026-11, triton 3.9): widen them there."""
    return dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _splits(blocks: int, others: int) -> tuple[int, int]:
    """(number of splits, blocks per split) so that ``others * splits`` reaches the program target."""
    wanted = max(1, min(blocks, -(-CONFIG["programs"] // max(others, 1))))
    per_split = -(-blocks // wanted)
    return -(-blocks // per_split), per_split


def _launch_options(block_d: int) -> dict[str, int]:
    return {"num_warps": CONFIG["num_warps"] or (8 if block_d >= 128 else 4), "num_stages": CONFIG["num_stages"]}


def _groups(exclude: Any) -> tuple[Any, Any]:
    """A source's query groups ``(row_groups, column_groups)``, or ``(None, None)`` (``exclude`` a bool)."""
    return exclude if isinstance(exclude, tuple) else (None, None)


def _forward(q: torch.Tensor, s_pos: torch.Tensor, inv_t: torch.Tensor, row_ids: Any, sources: list,
             with_acc: bool, sums: bool = False) -> tuple:
    """Row losses ``[B]`` and what the backward needs: ``(rows, best, log_total, acc or None, sums or None)``,
    ``sums`` = ``(score_sum [B], count [B], sum_kept k [B, D] or None)`` (label smoothing)."""
    from recloss.backends.torch import fused_kernels as kernels

    rows, dim = q.shape
    block_b, block_n, block_d = _blocks(dim)
    row_blocks = -(-rows // block_b)
    plans = []
    for keys, _, _, _ in sources:
        col_blocks = -(-keys.shape[0] // block_n)
        plans.append(_splits(col_blocks, row_blocks) if col_blocks else (0, 0))
    total = sum(splits for splits, _ in plans)
    maxes = torch.empty(total, rows, dtype=torch.float32, device=q.device)
    rests = torch.empty_like(maxes)
    acc = torch.empty(total, rows, dim, dtype=torch.float32, device=q.device) if with_acc else None
    score_sums = torch.zeros_like(maxes) if sums else None
    counts = torch.zeros_like(maxes) if sums else None
    acc2 = torch.zeros(total, rows, dim, dtype=torch.float32, device=q.device) if sums and with_acc else None
    first = 0
    for (keys, log_q, ids, exclude), (splits, per_split) in zip(sources, plans):
        if splits == 0 or rows == 0:
            continue
        row_groups, col_groups = _groups(exclude)
        kernels.row_pass[(row_blocks, splits)](
            q, keys, log_q, ids, row_ids, inv_t, maxes, rests, acc if with_acc else maxes,
            row_groups, col_groups, score_sums if sums else maxes, counts if sums else maxes,
            acc2 if acc2 is not None else maxes,
            rows, keys.shape[0], dim, q.stride(0), keys.stride(0), per_split, first,
            HAS_LOG_Q=log_q is not None, HAS_IDS=ids is not None, DIAGONAL=exclude is True, WITH_ACC=with_acc,
            BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_D=block_d, PRECISION=_precision(q.dtype),
            DOT_F32=_dot_in_float32(q.dtype), HAS_GROUPS=row_groups is not None, WITH_SUMS=sums,
            **_launch_options(block_d))
        first += splits
    best, log_total = _merge(s_pos, maxes, rests)
    losses = (best - s_pos) + log_total
    totals = None if not sums else (score_sums.sum(0), counts.sum(0),
                                    None if acc2 is None else acc2.sum(0))
    if not with_acc:
        return losses, best, log_total, None, totals
    # A = sum_slices A_s exp(m_s - lse): the softmax-weighted keys of each row (the positive excluded).
    lse = best + log_total
    weights = torch.where(maxes == float("-inf"), 0.0, torch.exp(maxes - lse))
    return losses, best, log_total, torch.einsum("sb,sbd->bd", weights, acc) if total else q.new_zeros(
        q.shape, dtype=torch.float32), totals


def _merge(s_pos: torch.Tensor, maxes: torch.Tensor, rests: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row maximum ``m`` and ``log1p(r)`` over the positive (maximum ``s_pos``, rest 0) and every slice: the
    first contributor holding the maximum keeps its rest, every other adds ``(1 + rest) exp(max - m)``."""
    all_maxes = torch.cat([s_pos[None], maxes])
    all_rests = torch.cat([torch.zeros_like(s_pos)[None], rests])
    best, top = all_maxes.max(0)
    leader = torch.arange(all_maxes.shape[0], device=s_pos.device)[:, None] == top[None, :]
    others = torch.where(all_maxes == float("-inf"), 0.0, (1.0 + all_rests) * torch.exp(all_maxes - best))
    rest = torch.where(leader, all_rests, others).sum(0)
    return best, torch.log1p(rest)


def _key_grads(q: torch.Tensor, keys: torch.Tensor, log_q: Any, ids: Any, exclude: Any, row_ids: Any,
               inv_t: torch.Tensor, lse: torch.Tensor, row_grad: torch.Tensor, sum_grad: Any = None) -> tuple:
    from recloss.backends.torch import fused_kernels as kernels

    rows, dim = q.shape
    cols = keys.shape[0]
    block_b, block_n, block_d = _blocks(dim)
    col_blocks, row_blocks = -(-cols // block_n), -(-rows // block_b)
    if cols == 0 or rows == 0:
        return torch.zeros_like(keys), None if log_q is None else torch.zeros_like(log_q)
    splits, per_split = _splits(row_blocks, col_blocks)
    grad_keys = torch.empty(splits, cols, dim, dtype=torch.float32, device=q.device)
    grad_log_q = torch.empty(splits, cols, dtype=torch.float32, device=q.device) if log_q is not None else None
    row_groups, col_groups = _groups(exclude)
    kernels.key_pass[(col_blocks, splits)](
        q, keys, log_q, ids, row_ids, inv_t, lse, row_grad, grad_keys,
        grad_log_q if grad_log_q is not None else grad_keys, row_groups, col_groups,
        sum_grad if sum_grad is not None else row_grad,
        rows, cols, dim, q.stride(0), keys.stride(0), per_split,
        HAS_LOG_Q=log_q is not None, HAS_IDS=ids is not None, DIAGONAL=exclude is True,
        RESCALE=q.dtype == torch.float16, BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_D=block_d,
        PRECISION=_precision(q.dtype), DOT_F32=_dot_in_float32(q.dtype), HAS_GROUPS=row_groups is not None,
        HAS_SUM_GRAD=sum_grad is not None, **_launch_options(block_d))
    grad_keys = grad_keys.sum(0) if splits > 1 else grad_keys[0]
    if grad_log_q is not None:
        grad_log_q = (grad_log_q.sum(0) if splits > 1 else grad_log_q[0]).to(log_q.dtype)
    return grad_keys.to(keys.dtype), grad_log_q


# ----------------------------------------------------------------------------------------------------------
# autograd


def _unflatten(layout: tuple, tensors: tuple) -> list:
    pick = lambda index: None if index is None else tensors[index]  # noqa: E731
    return [(pick(keys), pick(log_q), pick(ids), tuple(map(pick, exclude)) if isinstance(exclude, tuple)
             else exclude) for keys, log_q, ids, exclude in layout]


def _flatten(sources: tuple) -> tuple[tuple, list]:
    """Distinct tensors and, per source, the positions of its keys, log_q and ids (None where absent) and its
    ``exclude``: a bool, or the positions of its query groups."""
    tensors: list[Any] = []

    def position(t: Any) -> Any:
        if t is None:
            return None
        for index, seen in enumerate(tensors):
            if seen is t:
                return index
        tensors.append(t)
        return len(tensors) - 1

    def exclude(e: Any) -> Any:
        return tuple(position(groups) for groups in e) if isinstance(e, tuple) else bool(e)
    layout = tuple((position(k), position(l), position(i), exclude(e)) for k, l, i, e in sources)
    return layout, tensors


class _FusedRows(torch.autograd.Function):
    """``(layout, with_acc, sums, name, q, s_pos, temperature, row_ids, *tensors) -> (rows, m, log1p(r), A,
    score_sum, count, A2)`` (the last three empty without ``sums``)."""

    @staticmethod
    def forward(layout: tuple, with_acc: bool, sums: bool, name: str, q: torch.Tensor, s_pos: torch.Tensor,
                temperature: torch.Tensor, row_ids: Any, *tensors: Any) -> tuple:
        inv_t = (1.0 / temperature.detach().float()).reshape(1)
        losses, best, log_total, weighted_keys, totals = _forward(q, s_pos.detach(), inv_t, row_ids,
                                                                  _unflatten(layout, tensors), with_acc, sums)
        empty = losses.new_zeros(0)
        score_sum, count, kept_keys = totals if sums else (empty, empty, None)
        return (losses, best, log_total, weighted_keys if with_acc else empty, score_sum, count,
                empty if kept_keys is None else kept_keys)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        layout, with_acc, sums, name, q, s_pos, temperature, row_ids, *tensors = inputs
        _, best, log_total, weighted_keys, score_sum, count, kept_keys = output
        ctx.layout, ctx.with_acc, ctx.sums, ctx.name = layout, with_acc, sums, name
        ctx.has_row_ids = row_ids is not None
        ctx.save_for_backward(q, s_pos, temperature, best, log_total, weighted_keys, kept_keys,
                              *([row_ids] if ctx.has_row_ids else []), *tensors)
        ctx.mark_non_differentiable(best, log_total, weighted_keys, count, kept_keys,
                                    *(() if sums else (score_sum,)))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _best: Any, _log_total: Any, _weighted_keys: Any, grad_sum: Any,
                 *_unused: Any) -> tuple:
        q, s_pos, temperature, best, log_total, weighted_keys, kept_keys, *rest = ctx.saved_tensors
        row_ids = rest.pop(0) if ctx.has_row_ids else None
        tensors = tuple(rest)
        wants = ctx.needs_input_grad
        wants_q, wants_s_pos, wants_t, wants_sources = wants[4], wants[5], wants[6], wants[8:]
        inv_t = (1.0 / temperature.detach().float()).reshape(1)
        row_grad = grad.detach().float().contiguous()   # e.g. the stride-0 gradient of a sum
        sum_grad = grad_sum.detach().float().contiguous() if ctx.sums and grad_sum is not None else None
        grad_q = grad_s_pos = grad_t = None
        grads: list[Any] = [None] * len(tensors)
        with torch.no_grad():
            if wants_s_pos:
                grad_s_pos = (row_grad * torch.expm1((s_pos.detach() - best) - log_total)).to(s_pos.dtype)
            if (wants_q or wants_t) and ctx.with_acc:
                grad_q_f32 = weighted_keys * (row_grad * inv_t)[:, None]
                if sum_grad is not None:   # d(sum of kept s)/dq = inv_t sum_kept k
                    grad_q_f32 = grad_q_f32 + kept_keys * (sum_grad * inv_t)[:, None]
                grad_q = grad_q_f32.to(q.dtype) if wants_q else None
                if wants_t:
                    grad_t = (-(q.float() * grad_q_f32).sum() * inv_t[0]).to(temperature.dtype)
                    grad_t = grad_t.reshape(temperature.shape)
            lse = best + log_total
            for (keys_at, log_q_at, _, _), (keys, log_q, ids, diagonal) in zip(ctx.layout,
                                                                                _unflatten(ctx.layout, tensors)):
                if not (wants_sources[keys_at] or (log_q_at is not None and wants_sources[log_q_at])):
                    continue
                grad_k, grad_l = _key_grads(q, keys, log_q, ids, diagonal, row_ids, inv_t, lse, row_grad, sum_grad)
                grads[keys_at] = grad_k if grads[keys_at] is None else grads[keys_at] + grad_k
                if log_q_at is not None:
                    grads[log_q_at] = grad_l if grads[log_q_at] is None else grads[log_q_at] + grad_l
        outputs = [grad_q, grad_s_pos, grad_t, *grads]
        if torch.is_grad_enabled():   # create_graph=True: a later second derivative reaches a refusal
            outputs = _refuse_second_order(outputs, (q, s_pos, temperature, *tensors, grad), ctx.name)
        grad_q, grad_s_pos, grad_t, *grads = outputs
        return (None, None, None, None, grad_q, grad_s_pos, grad_t, None, *grads)

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        raise ReclossError(refusal(ctx.name, FORWARD_MODE_REFUSED))

    @staticmethod
    def vmap(info: Any, in_dims: Any, layout: tuple, with_acc: bool, sums: bool, name: str, *args: Any) -> Any:
        raise ReclossError(refusal(name, VMAP_REFUSED))


class _SecondOrderRefused(torch.autograd.Function):
    """The identity on first-order gradients, tied to the inputs, whose own backward refuses: differentiating
    the fused path's gradients again fails loudly instead of treating them as constants."""

    @staticmethod
    def forward(name: str, count: int, *tensors: Any) -> tuple:
        return tuple(t.clone() for t in tensors[:count])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        ctx.name = inputs[0]

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise ReclossError(refusal(ctx.name, SECOND_ORDER_REFUSED))

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        raise ReclossError(refusal(ctx.name, SECOND_ORDER_REFUSED))


def _refuse_second_order(outputs: list, inputs: tuple, name: str) -> list:
    anchors = [t for t in inputs if t is not None and t.requires_grad]
    present = [i for i, t in enumerate(outputs) if t is not None]
    if not anchors or not present:
        return outputs
    refused = _SecondOrderRefused.apply(name, len(present), *[outputs[i] for i in present], *anchors)
    outputs = list(outputs)
    for i, tensor in zip(present, refused):
        outputs[i] = tensor
    return outputs


def _same_dtype(q: torch.Tensor, sources: tuple) -> tuple:
    """q and every source's keys in one dtype: theirs if they agree, else float32."""
    dtypes = {q.dtype, *(keys.dtype for keys, *_ in sources)}
    if len(dtypes) == 1:
        return q, sources
    return q.float(), tuple((keys.float(), log_q, ids, diagonal) for keys, log_q, ids, diagonal in sources)


@torch.compiler.disable
def fused_row_losses(q: torch.Tensor, s_pos: torch.Tensor, sources: tuple, row_ids: Any, temperature: Any,
                     name: str = "fused softmax", interpret: bool = False, sums: bool = False) -> Any:
    """Row losses ``[B]`` (float32) of the fused softmax (see the module docstring); with ``sums``, ``(rows,
    score_sum, count)`` (:mod:`recloss.kernels.fused`).

    Args:
        q: ``[B, D]`` queries (float32, bfloat16 or float16), not divided by the temperature.
        s_pos: ``[B]`` float32 positive scores ``q_i . p_i / T - log_q_pos_i`` (differentiable).
        sources: ``(keys [M, D], log_q [M] | None, ids [M] | None, exclude)`` per candidate source; ``exclude``
            True removes the diagonal, a pair ``(row_groups [B], column_groups [M])`` every column of the row's
            group (query ids).
        row_ids: ``[B]`` ids of the rows (compared with each source's ids) or None.
        temperature: a number or a 0-d float32 tensor (its gradient is returned).
        name: the loss, for error messages.
        interpret: accepted for the shared signature; Triton's interpreter follows ``TRITON_INTERPRET``.
        sums: also return each row's sum of kept scores (differentiable) and their number (label smoothing).
    """
    q, sources = _same_dtype(q, sources)
    q = q.contiguous()
    sources = tuple((keys.contiguous(), None if log_q is None else log_q.float().contiguous(),
                     None if ids is None else ids.contiguous(),
                     tuple(g.contiguous() for g in exclude) if isinstance(exclude, tuple) else bool(exclude))
                    for keys, log_q, ids, exclude in sources)
    if not isinstance(temperature, torch.Tensor):
        temperature = torch.tensor(float(temperature), dtype=torch.float32, device=q.device)
    layout, tensors = _flatten(sources)
    # A = sum_c P_c k_c is kept from the forward only when the queries' or the temperature's gradient is wanted.
    with_acc = torch.is_grad_enabled() and (q.requires_grad or temperature.requires_grad)
    out = _FusedRows.apply(layout, with_acc, bool(sums), name, q, s_pos, temperature, row_ids, *tensors)
    return (out[0], out[4], out[5]) if sums else out[0]
