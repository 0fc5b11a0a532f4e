"""Fused softmax rows for JAX: Pallas kernels behind a ``jax.custom_vjp``.

The same computation as :mod:`recloss.backends.torch.fused` (see it for the math): a row pass over
(row block x candidate block) tiles, the candidates split into slices that fill the GPU, keeping per row the
maximum ``m``, the tie-aware ``r`` (the sum of ``exp(s - m)`` over all but one maximal element) and, for the
gradient, ``A = sum exp(s - m) k``; the slices are merged here; a key pass over (candidate block x row block)
tiles recomputes the scores for the keys' and logQ's gradients; the queries' and the temperature's gradients
come from ``A``. Products in the inputs' dtype with float32 accumulation (float32 at ``Precision.HIGHEST``). Query
groups (``query_ids``) remove the columns of the row's query; with ``sums`` (label smoothing) the row pass also
keeps each row's sum of kept scores, their number and ``sum_kept k``, and the key pass adds the sum's cotangent.

On a GPU the kernels lower through Pallas's Triton backend; with ``interpret=True`` (``RECLOSS_FUSED_INTERPRET=1``)
they run on the CPU through Pallas's interpreter. Inputs are padded to whole blocks (zeros, masked out), so
no block reads out of bounds in either mode. The forward and the backward are ``jax.jit`` functions (static
configuration), so eager calls reuse the compiled kernels instead of tracing them again. Forward-mode AD
(``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``) and second derivatives are refused with a
:class:`recloss.ReclossError`: each kernel call is wrapped in a ``jax.custom_jvp`` that raises when
differentiated, so nothing is silently treated as a constant. ``jax.vmap`` works (Pallas batches the grid).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from recloss.errors import ReclossError
from recloss.kernels.fused import FORWARD_MODE_REFUSED, SECOND_ORDER_REFUSED, refusal

#: Tile sizes, how many programs to aim for (two per SM of an H100/H200) and the launch options (``num_warps``
#: 0: 8 warps from a padded width of 128 on, as FlashAttention for large heads, else 4); tests shrink the
#: blocks; untuned (no GPU yet): ``benchmarks/fused_gpu.py --kernel-config`` tries others.
CONFIG: dict[str, int] = {"block_b": 64, "block_n": 64, "programs": 264, "num_warps": 0, "num_stages": 2}


def unavailable(tensors: tuple, interpret: bool, automatic: bool) -> tuple[str, str] | None:
    """None where the kernels can run (GPU arrays, or the interpreter); else ``("device", what)``."""
    if interpret:
        return None
    if automatic and not _gpu_present():
        return "device", "no GPU"
    platforms = sorted({_platform(t) for t in tensors if t is not None})
    if platforms == ["gpu"]:
        return None
    return "device", f"JAX arrays on {', '.join(platforms)}"


_GPU_PRESENT: list[bool] = []


def _gpu_present() -> bool:
    """Whether JAX sees a GPU at all (looked up once), so that "auto" on a CPU-only machine decides at no cost."""
    if not _GPU_PRESENT:
        _GPU_PRESENT.append(any(_platform_name(d.platform) == "gpu" for d in jax.devices()))
    return _GPU_PRESENT[0]


def _platform_name(platform: str) -> str:
    return "gpu" if platform in ("gpu", "cuda", "rocm") else platform


def _platform(x: Any) -> str:
    """The platform an array lives on; for a tracer (inside ``jit``), the default backend's."""
    if isinstance(x, jax.core.Tracer):
        return _platform_name(jax.default_backend())
    return _platform_name(next(iter(x.devices())).platform)


# ----------------------------------------------------------------------------------------------------------
# Shapes


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _blocks(dim: int) -> tuple[int, int, int]:
    block_d = max(16, _next_power_of_2(dim))
    shrink = 1 if block_d <= 256 else 2 if block_d <= 512 else 4
    return max(16, CONFIG["block_b"] // shrink), max(16, CONFIG["block_n"] // shrink), block_d


def _splits(blocks: int, others: int) -> tuple[int, int]:
    """(number of splits, blocks per split) so that ``others * splits`` reaches the program target."""
    wanted = max(1, min(blocks, -(-CONFIG["programs"] // max(others, 1))))
    per_split = -(-blocks // wanted)
    return -(-blocks // per_split), per_split


def _pad(x: Any, rows: int, cols: int | None = None) -> Any:
    """Zero-pad the leading axis to ``rows`` (and the second to ``cols``); None stays None."""
    if x is None:
        return None
    widths = [(0, rows - x.shape[0])] + ([(0, cols - x.shape[1])] if cols is not None else [])
    widths += [(0, 0)] * (x.ndim - len(widths))
    return x if all(w == (0, 0) for w in widths) else jnp.pad(x, widths)


def _precision(dtype: Any) -> Any:
    return lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _compiler_params(interpret: bool, block_d: int) -> dict[str, Any]:
    if interpret:
        return {}
    from jax.experimental.pallas import triton as plgpu

    params = getattr(plgpu, "CompilerParams", None) or getattr(plgpu, "TritonCompilerParams")
    warps = CONFIG["num_warps"] or (8 if block_d >= 128 else 4)
    return {"compiler_params": params(num_warps=warps, num_stages=CONFIG["num_stages"])}


def _refusing_derivatives(name: str, call: Any) -> Any:
    """``call`` wrapped so that differentiating through it raises (second order; the first order never does)."""
    wrapped = jax.custom_jvp(call)

    def jvp(primals: tuple, tangents: tuple) -> Any:
        raise ReclossError(refusal(name, SECOND_ORDER_REFUSED))
    wrapped.defjvp(jvp)
    return wrapped


# ----------------------------------------------------------------------------------------------------------
# Kernels


def _keep_mask(rows: Any, cols: Any, num_rows: int, num_cols: int, diagonal: bool, row_ids: Any,
               key_ids: Any, transposed: bool, row_groups: Any = None, col_groups: Any = None) -> Any:
    """Kept (row, candidate) pairs: real rows and columns, off the diagonal if asked, different ids, different
    query groups (where given)."""
    if transposed:   # [cols, rows]
        keep = (cols < num_cols)[:, None] & (rows < num_rows)[None, :]
        if diagonal:
            keep = keep & (cols[:, None] != rows[None, :])
        if key_ids is not None:
            keep = keep & (key_ids[:, None] != row_ids[None, :])
        if col_groups is not None:
            keep = keep & (col_groups[:, None] != row_groups[None, :])
        return keep
    keep = (rows < num_rows)[:, None] & (cols < num_cols)[None, :]
    if diagonal:
        keep = keep & (rows[:, None] != cols[None, :])
    if key_ids is not None:
        keep = keep & (row_ids[:, None] != key_ids[None, :])
    if col_groups is not None:
        keep = keep & (row_groups[:, None] != col_groups[None, :])
    return keep


def _row_kernel(q_ref, keys_ref, log_q_ref, key_ids_ref, row_ids_ref, inv_t_ref, row_groups_ref, col_groups_ref,
                max_ref, rest_ref, *extra_refs, num_rows: int, num_cols: int, span: int, block_b: int, block_n: int,
                diagonal: bool, precision: Any, with_acc: bool = False, sums: bool = False) -> None:
    row_block, split = pl.program_id(0), pl.program_id(1)
    acc_ref = extra_refs[:1] if with_acc else ()
    sum_refs = extra_refs[len(acc_ref):] if sums else ()     # (score_sum, count[, sum_kept k])
    q = q_ref[...]
    inv_t = inv_t_ref[()]
    rows = row_block * block_b + jnp.arange(block_b)
    row_ids = None if row_ids_ref is None else row_ids_ref[...]
    row_groups = None if row_groups_ref is None else row_groups_ref[...]
    neg_inf = jnp.float32(-jnp.inf)

    def body(block: Any, carry: tuple) -> tuple:
        best, rest, acc, totals = carry
        start = pl.multiple_of(block * block_n, block_n)
        k = keys_ref[pl.ds(start, block_n), :]
        s = pl.dot(q, k, trans_b=True, precision=precision) * inv_t
        if log_q_ref is not None:
            s = s - log_q_ref[pl.ds(start, block_n)][None, :]
        cols = split * span + start + jnp.arange(block_n)
        key_ids = None if key_ids_ref is None else key_ids_ref[pl.ds(start, block_n)]
        col_groups = None if col_groups_ref is None else col_groups_ref[pl.ds(start, block_n)]
        keep = _keep_mask(rows, cols, num_rows, num_cols, diagonal, row_ids, key_ids, transposed=False,
                          row_groups=row_groups, col_groups=col_groups)
        s = jnp.where(keep, s, neg_inf)
        if totals:   # the kept scores' sum and number (label smoothing), and sum_kept k for the gradient
            kept = keep.astype(jnp.float32)
            totals = (totals[0] + jnp.sum(jnp.where(keep, s, 0.0), axis=1), totals[1] + jnp.sum(kept, axis=1),
                      *((totals[2] + pl.dot(kept.astype(k.dtype), k, precision=precision),) if acc is not None
                        else ()))
        # This block's (maximum, rest): the entries equal to the maximum are counted, not summed.
        block_max = jnp.max(s, axis=1)
        weights = jnp.where(keep, jnp.exp(s - block_max[:, None]), 0.0)
        top = keep & (s == block_max[:, None])
        block_rest = (jnp.sum(jnp.where(top, 0.0, weights), axis=1)
                      + (jnp.sum(top.astype(jnp.float32), axis=1) - 1.0))
        # Merge: the side holding the larger maximum keeps its rest; the other adds (1 + rest) exp(max - m).
        new_best = jnp.maximum(best, block_max)
        old_wins = best >= block_max
        other_max = jnp.where(old_wins, block_max, best)
        other_rest = jnp.where(old_wins, block_rest, rest)
        other = jnp.where(other_max == neg_inf, 0.0, (1.0 + other_rest) * jnp.exp(other_max - new_best))
        rest = jnp.where(old_wins, rest, block_rest) + other
        if acc is not None:
            old_scale = jnp.where(best == neg_inf, 0.0, jnp.exp(best - new_best))
            block_scale = jnp.where(block_max == neg_inf, 0.0, jnp.exp(block_max - new_best))
            block_acc = pl.dot(weights.astype(k.dtype), k, precision=precision)
            acc = acc * old_scale[:, None] + block_acc * block_scale[:, None]
        return new_best, rest, acc, totals

    acc0 = jnp.zeros(q.shape, jnp.float32) if acc_ref else None
    totals0 = (jnp.zeros((block_b,), jnp.float32),) * 2 + ((jnp.zeros(q.shape, jnp.float32),) if acc_ref else ())
    carry = (jnp.full((block_b,), neg_inf, jnp.float32), jnp.zeros((block_b,), jnp.float32), acc0,
             totals0 if sums else ())
    best, rest, acc, totals = lax.fori_loop(0, span // block_n, body, carry)
    max_ref[...] = best
    rest_ref[...] = rest
    if acc_ref:
        acc_ref[0][...] = acc
    for ref, total in zip(sum_refs, totals):
        ref[...] = total


def _key_kernel(q_ref, keys_ref, log_q_ref, key_ids_ref, row_ids_ref, inv_t_ref, lse_ref, grad_ref,
                row_groups_ref, col_groups_ref, sum_grad_ref, grad_keys_ref, *grad_log_q_ref, num_rows: int,
                num_cols: int, span: int, block_b: int, block_n: int, diagonal: bool, precision: Any) -> None:
    col_block, split = pl.program_id(0), pl.program_id(1)
    k = keys_ref[...]
    inv_t = inv_t_ref[()]
    cols = col_block * block_n + jnp.arange(block_n)
    log_q = None if log_q_ref is None else log_q_ref[...]
    key_ids = None if key_ids_ref is None else key_ids_ref[...]
    col_groups = None if col_groups_ref is None else col_groups_ref[...]

    def body(block: Any, carry: tuple) -> tuple:
        grad_k, grad_log_q = carry
        start = pl.multiple_of(block * block_b, block_b)
        q = q_ref[pl.ds(start, block_b), :]
        lse = lse_ref[pl.ds(start, block_b)]
        row_grad = grad_ref[pl.ds(start, block_b)]
        row_ids = None if row_ids_ref is None else row_ids_ref[pl.ds(start, block_b)]
        row_groups = None if row_groups_ref is None else row_groups_ref[pl.ds(start, block_b)]
        rows = split * span + start + jnp.arange(block_b)
        s = pl.dot(k, q, trans_b=True, precision=precision) * inv_t          # [block_n, block_b]
        if log_q is not None:
            s = s - log_q[:, None]
        keep = _keep_mask(rows, cols, num_rows, num_cols, diagonal, row_ids, key_ids, transposed=True,
                          row_groups=row_groups, col_groups=col_groups)
        g = jnp.exp(s - lse[None, :]) * row_grad[None, :]
        if sum_grad_ref is not None:   # + the kept scores' sum's cotangent on every kept pair (label smoothing)
            g = g + sum_grad_ref[pl.ds(start, block_b)][None, :]
        g = jnp.where(keep, g, 0.0)
        if q.dtype == jnp.float16:   # scale each candidate's entries to at most 1 so small ones do not underflow
            scale = jnp.max(jnp.abs(g), axis=1)
            scale = jnp.where(scale > 0.0, scale, 1.0)
            grad_k = grad_k + pl.dot((g / scale[:, None]).astype(q.dtype), q, precision=precision) * scale[:, None]
        else:
            grad_k = grad_k + pl.dot(g.astype(q.dtype), q, precision=precision)
        if grad_log_q is not None:
            grad_log_q = grad_log_q - jnp.sum(g, axis=1)
        return grad_k, grad_log_q

    carry = (jnp.zeros(k.shape, jnp.float32), jnp.zeros((block_n,), jnp.float32) if grad_log_q_ref else None)
    grad_k, grad_log_q = lax.fori_loop(0, span // block_b, body, carry)
    grad_keys_ref[...] = grad_k * inv_t
    if grad_log_q_ref:
        grad_log_q_ref[0][...] = grad_log_q


# ----------------------------------------------------------------------------------------------------------
# The passes


def _out_struct(shape: tuple, dtype: Any, *inputs: Any) -> Any:
    """A kernel output's ``ShapeDtypeStruct``, varying over every mesh axis that an input varies over: inside
    ``jax.shard_map`` with ``check_vma`` (``shard_negatives``: each device's rows against its own shard) Pallas
    asks for it; elsewhere no axis varies."""
    types = [getattr(jax.typeof(x), "manual_axis_type", None) for x in inputs if x is not None]
    types = [t for t in types if t is not None and t.varying]
    if not types:
        return jax.ShapeDtypeStruct(shape, dtype)
    varying = frozenset().union(*(t.varying for t in types))
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=type(types[0])(
        varying=varying, unreduced=frozenset(), reduced=frozenset()))


def _row_pass(static: tuple, q: Any, keys: Any, log_q: Any, ids: Any, row_ids: Any, inv_t: Any, diagonal: bool,
              with_acc: bool, groups: Any = None, sums: bool = False) -> tuple:
    """Per-slice ``(maxes [S, B], rests [S, B], acc [S, B, D] | None, sums)`` of one candidate source; ``sums``
    (with ``sums=True``): ``(score_sum [S, B], count [S, B], sum_kept k [S, B, D] | None)``, else ``()``."""
    name, interpret = static
    row_groups, col_groups = groups if groups is not None else (None, None)
    rows, dim = q.shape
    cols = keys.shape[0]
    block_b, block_n, block_d = _blocks(dim)
    row_blocks = -(-rows // block_b)
    splits, per_split = _splits(-(-cols // block_n), row_blocks)
    span = per_split * block_n
    q_p = _pad(q, row_blocks * block_b, block_d)
    keys_p = _pad(keys, splits * span, block_d).reshape(splits, span, block_d)
    log_q_p = None if log_q is None else _pad(log_q, splits * span).reshape(splits, span)
    ids_p = None if ids is None else _pad(ids, splits * span).reshape(splits, span)
    row_ids_p = None if ids is None else _pad(row_ids, row_blocks * block_b)
    by_split = lambda *shape: pl.BlockSpec((None, *shape), lambda i, s: (s,) + (0,) * len(shape))  # noqa: E731
    row_groups_p = None if row_groups is None else _pad(row_groups, row_blocks * block_b)
    col_groups_p = None if col_groups is None else _pad(col_groups, splits * span).reshape(splits, span)
    in_specs = [pl.BlockSpec((block_b, block_d), lambda i, s: (i, 0)), by_split(span, block_d),
                None if log_q is None else by_split(span), None if ids is None else by_split(span),
                None if ids is None else pl.BlockSpec((block_b,), lambda i, s: (i,)),
                pl.BlockSpec((), lambda i, s: ()),
                None if row_groups is None else pl.BlockSpec((block_b,), lambda i, s: (i,)),
                None if col_groups is None else by_split(span)]
    inputs = (q_p, keys_p, log_q_p, ids_p, row_ids_p, inv_t, row_groups_p, col_groups_p)
    row_out = _out_struct((splits, row_blocks * block_b), jnp.float32, *inputs)
    row_spec = pl.BlockSpec((None, block_b), lambda i, s: (s, i))
    wide_out = _out_struct((splits, row_blocks * block_b, block_d), jnp.float32, *inputs)
    wide_spec = pl.BlockSpec((None, block_b, block_d), lambda i, s: (s, i, 0))
    out_shape, out_specs = [row_out] * 2, [row_spec] * 2
    if with_acc:
        out_shape.append(wide_out)
        out_specs.append(wide_spec)
    if sums:
        out_shape += [row_out] * 2 + ([wide_out] if with_acc else [])
        out_specs += [row_spec] * 2 + ([wide_spec] if with_acc else [])
    kernel = functools.partial(_row_kernel, num_rows=rows, num_cols=cols, span=span, block_b=block_b,
                               block_n=block_n, diagonal=diagonal, precision=_precision(q.dtype),
                               with_acc=with_acc, sums=sums)
    call = pl.pallas_call(kernel, grid=(row_blocks, splits), in_specs=in_specs, out_specs=out_specs,
                          out_shape=out_shape, interpret=interpret, name="recloss_fused_rows",
                          **_compiler_params(interpret, block_d))
    outs = _refusing_derivatives(name, lambda *a: tuple(call(*a)))(*inputs)
    maxes, rests = outs[0][:, :rows], outs[1][:, :rows]
    acc = outs[2][:, :rows, :dim] if with_acc else None
    totals = ()
    if sums:
        at = 2 + with_acc
        totals = (outs[at][:, :rows], outs[at + 1][:, :rows], outs[at + 2][:, :rows, :dim] if with_acc else None)
    return maxes, rests, acc, totals


def _key_pass(static: tuple, q: Any, keys: Any, log_q: Any, ids: Any, row_ids: Any, inv_t: Any, diagonal: bool,
              lse: Any, row_grad: Any, groups: Any = None, sum_grad: Any = None) -> tuple:
    """``(d keys [M, D] in the keys' dtype, d log_q [M] | None)`` of one source."""
    name, interpret = static
    row_groups, col_groups = groups if groups is not None else (None, None)
    rows, dim = q.shape
    cols = keys.shape[0]
    block_b, block_n, block_d = _blocks(dim)
    col_blocks = -(-cols // block_n)
    splits, per_split = _splits(-(-rows // block_b), col_blocks)
    span = per_split * block_b
    q_p = _pad(q, splits * span, block_d).reshape(splits, span, block_d)
    by_split = lambda x: None if x is None else _pad(x, splits * span).reshape(splits, span)  # noqa: E731
    keys_p = _pad(keys, col_blocks * block_n, block_d)
    by_col = lambda x: None if x is None else _pad(x, col_blocks * block_n)  # noqa: E731
    row_spec = lambda *shape: pl.BlockSpec((None, *shape), lambda j, r: (r,) + (0,) * len(shape))  # noqa: E731
    col_spec = pl.BlockSpec((block_n,), lambda j, r: (j,))
    in_specs = [row_spec(span, block_d), pl.BlockSpec((block_n, block_d), lambda j, r: (j, 0)),
                None if log_q is None else col_spec, None if ids is None else col_spec,
                None if ids is None else row_spec(span), pl.BlockSpec((), lambda j, r: ()),
                row_spec(span), row_spec(span), None if row_groups is None else row_spec(span),
                None if col_groups is None else col_spec, None if sum_grad is None else row_spec(span)]
    inputs = (q_p, keys_p, by_col(log_q), by_col(ids), None if ids is None else by_split(row_ids), inv_t,
              by_split(lse), by_split(row_grad), by_split(row_groups), by_col(col_groups), by_split(sum_grad))
    out_shape = [_out_struct((splits, col_blocks * block_n, block_d), jnp.float32, *inputs)]
    out_specs = [pl.BlockSpec((None, block_n, block_d), lambda j, r: (r, j, 0))]
    if log_q is not None:
        out_shape.append(_out_struct((splits, col_blocks * block_n), jnp.float32, *inputs))
        out_specs.append(pl.BlockSpec((None, block_n), lambda j, r: (r, j)))
    kernel = functools.partial(_key_kernel, num_rows=rows, num_cols=cols, span=span, block_b=block_b,
                               block_n=block_n, diagonal=diagonal, precision=_precision(q.dtype))
    call = pl.pallas_call(kernel, grid=(col_blocks, splits), in_specs=in_specs, out_specs=out_specs,
                          out_shape=out_shape, interpret=interpret, name="recloss_fused_keys",
                          **_compiler_params(interpret, block_d))
    outs = _refusing_derivatives(name, lambda *a: tuple(call(*a)))(*inputs)
    grad_keys = jnp.sum(outs[0], axis=0)[:cols, :dim].astype(keys.dtype)
    grad_log_q = None if log_q is None else jnp.sum(outs[1], axis=0)[:cols].astype(log_q.dtype)
    return grad_keys, grad_log_q


def _merge(s_pos: Any, maxes: Any, rests: Any) -> tuple[Any, Any]:
    """Row maximum and ``log1p(r)`` over the positive (maximum ``s_pos``, rest 0) and every slice: the first
    contributor holding the maximum keeps its rest, every other adds ``(1 + rest) exp(max - m)``."""
    all_maxes = jnp.concatenate([s_pos[None], maxes])
    all_rests = jnp.concatenate([jnp.zeros_like(s_pos)[None], rests])
    best = jnp.max(all_maxes, axis=0)
    leader = jnp.arange(all_maxes.shape[0])[:, None] == jnp.argmax(all_maxes, axis=0)[None, :]
    others = jnp.where(all_maxes == -jnp.inf, 0.0, (1.0 + all_rests) * jnp.exp(all_maxes - best))
    rest = jnp.sum(jnp.where(leader, all_rests, others), axis=0)
    return best, jnp.log1p(rest)


@functools.partial(jax.jit, static_argnums=(0, 1, 7, 8))
def _forward(static: tuple, layout: tuple, q: Any, s_pos: Any, temperature: Any, row_ids: Any, sources: tuple,
             with_acc: bool, sums: bool = False) -> tuple:
    """``(rows, totals, saved)``: ``totals`` = ``(score_sum, count)`` with ``sums`` (else ``()``); ``saved`` =
    ``(best, log_total, A, sum_kept k | None)`` with ``with_acc`` (else None)."""
    inv_t = (1.0 / temperature).astype(jnp.float32)
    parts = [_row_pass(static, q, keys, log_q, ids, row_ids, inv_t, diagonal, with_acc, groups, sums)
             for (keys, log_q, ids, groups), diagonal in zip(sources, layout) if keys.shape[0] and q.shape[0]]
    empty = jnp.zeros((0, q.shape[0]), jnp.float32)
    maxes = jnp.concatenate([p[0] for p in parts]) if parts else empty
    rests = jnp.concatenate([p[1] for p in parts]) if parts else empty
    best, log_total = _merge(s_pos, maxes, rests)
    losses = (best - s_pos) + log_total
    totals = ()
    if sums:
        zeros = jnp.zeros(q.shape[:1], jnp.float32)
        totals = (sum((jnp.sum(p[3][0], axis=0) for p in parts), zeros),
                  sum((jnp.sum(p[3][1], axis=0) for p in parts), zeros))
    if not with_acc:
        return losses, totals, None
    lse = best + log_total
    weights = jnp.where(maxes == -jnp.inf, 0.0, jnp.exp(maxes - lse))
    weighted_keys = (jnp.einsum("sb,sbd->bd", weights, jnp.concatenate([p[2] for p in parts]),
                                precision=lax.Precision.HIGHEST) if parts else jnp.zeros(q.shape, jnp.float32))
    kept_keys = sum((jnp.sum(p[3][2], axis=0) for p in parts), jnp.zeros(q.shape, jnp.float32)) if sums else None
    return losses, totals, (best, log_total, weighted_keys, kept_keys)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused_rows(static: tuple, layout: tuple, sums: bool, q: Any, s_pos: Any, temperature: Any, row_ids: Any,
                sources: tuple) -> Any:
    losses, totals, _ = _forward(static, layout, q, s_pos, temperature, row_ids, sources, False, sums)
    return (losses, *totals) if sums else losses


def _fused_rows_fwd(static: tuple, layout: tuple, sums: bool, q: Any, s_pos: Any, temperature: Any, row_ids: Any,
                    sources: tuple) -> tuple:
    losses, totals, saved = _forward(static, layout, q, s_pos, temperature, row_ids, sources, True, sums)
    return (losses, *totals) if sums else losses, (q, s_pos, temperature, row_ids, sources, *saved)


def _fused_rows_bwd(static: tuple, layout: tuple, sums: bool, residuals: tuple, grad: Any) -> tuple:
    grad, grad_sum = (grad[0], grad[1]) if sums else (grad, None)   # (the count is a constant)
    grads = _backward(static, layout, residuals, grad, grad_sum)
    q, s_pos, temperature, _, sources = residuals[:5]
    return jax.tree.map(_summed_to, grads, (q, s_pos, temperature, None, sources), is_leaf=lambda x: x is None)


def _summed_to(cotangent: Any, primal: Any) -> Any:
    """``cotangent`` summed over the mesh axes it varies over and ``primal`` does not: inside ``shard_map`` (with
    ``check_vma``) an input that every device holds alike, such as the temperature, receives the sum of the
    devices' cotangents, as the transpose of its implicit broadcast."""
    if cotangent is None or primal is None:
        return cotangent
    varying = getattr(getattr(jax.typeof(cotangent), "manual_axis_type", None), "varying", frozenset())
    extra = varying - getattr(getattr(jax.typeof(primal), "manual_axis_type", None), "varying", frozenset())
    return lax.psum(cotangent, tuple(sorted(extra))) if extra else cotangent


@functools.partial(jax.jit, static_argnums=(0, 1))
def _backward(static: tuple, layout: tuple, residuals: tuple, grad: Any, grad_sum: Any = None) -> tuple:
    q, s_pos, temperature, row_ids, sources, best, log_total, weighted_keys, kept_keys = residuals
    inv_t = (1.0 / temperature).astype(jnp.float32)
    grad = grad.astype(jnp.float32)
    grad_s_pos = (grad * jnp.expm1((s_pos - best) - log_total)).astype(s_pos.dtype)
    grad_q = weighted_keys * (grad * inv_t)[:, None]
    if grad_sum is not None:   # d(sum of kept s)/dq = inv_t sum_kept k
        grad_sum = grad_sum.astype(jnp.float32)
        grad_q = grad_q + kept_keys * (grad_sum * inv_t)[:, None]
    grad_t = (-jnp.sum(q.astype(jnp.float32) * grad_q) * inv_t).astype(temperature.dtype)
    lse = best + log_total
    grad_sources = []
    for (keys, log_q, ids, groups), diagonal in zip(sources, layout):
        if keys.shape[0] and q.shape[0]:
            grad_k, grad_l = _key_pass(static, q, keys, log_q, ids, row_ids, inv_t, diagonal, lse, grad, groups,
                                       grad_sum)
        else:
            grad_k, grad_l = jnp.zeros_like(keys), None if log_q is None else jnp.zeros_like(log_q)
        grad_sources.append((grad_k, grad_l, None, None if groups is None else (None, None)))
    return grad_q.astype(q.dtype), grad_s_pos, grad_t, None, tuple(grad_sources)


_fused_rows.defvjp(_fused_rows_fwd, _fused_rows_bwd)


def _same_dtype(q: Any, sources: tuple) -> tuple:
    """q and every source's keys in one dtype: theirs if they agree, else float32."""
    if len({q.dtype, *(keys.dtype for keys, *_ in sources)}) == 1:
        return q, sources
    return q.astype(jnp.float32), tuple((k.astype(jnp.float32), l, i, d) for k, l, i, d in sources)


def fused_row_losses(q: Any, s_pos: Any, sources: tuple, row_ids: Any, temperature: Any,
                     name: str = "fused softmax", interpret: bool = False, sums: bool = False) -> Any:
    """Row losses ``[B]`` (float32) of the fused softmax; the arguments of
    :func:`recloss.backends.torch.fused.fused_row_losses`, plus ``interpret`` (Pallas's interpreter); with
    ``sums``, ``(rows, score_sum, count)``."""
    q, sources = _same_dtype(q, sources)
    layout = tuple(exclude is True for *_, exclude in sources)
    arrays = tuple((keys, None if log_q is None else log_q.astype(jnp.float32), ids,
                    exclude if isinstance(exclude, tuple) else None) for keys, log_q, ids, exclude in sources)
    temperature = jnp.asarray(temperature, jnp.float32)
    try:
        return _fused_rows((name, bool(interpret)), layout, bool(sums), q, s_pos, temperature, row_ids, arrays)
    except TypeError as error:   # jax.jvp / jacfwd reach the custom_vjp directly
        if "custom_vjp" in str(error) and "forward-mode" in str(error):
            raise ReclossError(refusal(name, FORWARD_MODE_REFUSED)) from error
        raise
