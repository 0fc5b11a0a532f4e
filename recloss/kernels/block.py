"""The materialised retrieval softmax in one backend operation, where the backend has one (eager PyTorch).

A small batch in eager mode pays for the number of operations, not for the arithmetic: each costs a dispatch
and, under autograd, a graph node. The generic kernels (:mod:`recloss.kernels.softmax`) build the ``[B, N]``
block, the row maxima, the masks, the reduction and the non-finite guard from a few dozen operations. A backend
may offer the whole loss as one operation instead::

    ops.block_loss(q, pos, temperature, pos_log_q, sources, row_ids, reduction) -> loss | None

with the streaming path's ``sources`` (``(keys [M, D], log_q [M] | None, ids [M] | None, diagonal)`` per
candidate source, see :func:`recloss.kernels.softmax.streaming_row_losses`). It returns the loss reduced by
``reduction`` (``"none"``, ``"sum"`` or ``"mean"``, no weights) with the non-finite guard of its inputs applied
(a NaN or an infinity in any of them makes the result NaN, every row with ``"none"``), or None where it does not
apply (the generic kernel then runs). Weights and ``info_nce_loss``'s symmetric form take its rows
(``"none"``) and reduce them here.

The path runs where the generic kernel would materialise the block: ``implementation="materialized"``, or
``"auto"`` below the streaming threshold; local candidates only (no ``gather``), no ``num_hard_negatives``,
shared ``[N, D]`` or in-batch negatives. The fused GPU path, where it applies, runs before it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from recloss._spec import Bound
from recloss._validate import dtype_name, gather_requested
from recloss.kernels._common import Ops, _reduce, l2_normalize, scalar, upcast


def path(generic: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate one of the three generic retrieval-softmax losses: the backend's block operation runs first
    where it applies (same arguments, the reduced loss or None)."""
    block = _BLOCK[generic.__name__]

    @functools.wraps(generic)
    def kernel(ops: Ops, bound: Bound, **arguments: Any) -> Any:
        if getattr(ops, "block_loss", None) is not None:
            loss = block(ops, bound, **arguments)
            if loss is not None:
                return loss
        return generic(ops, bound, **arguments)
    return kernel


def _applies(ops: Ops, implementation: str, gather: Any, rows: Any, columns: int) -> bool:
    """Whether the generic kernel would materialise this block (so that the block operation may take it)."""
    from recloss.kernels import softmax   # read at call time: tests change the threshold
    if implementation not in ("auto", "materialized") or gather_requested(gather) is not None:
        return False
    if not isinstance(rows, int) or rows == 0:
        return False
    return implementation == "materialized" or rows * columns < softmax.STREAMING_MIN_LOGITS


def _compute_dtype(bound: Bound, *embeddings: Any) -> bool:
    """Whether the embeddings are all in the compute dtype, so that ``product_precision`` has nothing to do:
    half or mixed precisions take the generic path, whose product rules they follow."""
    return all(x is None or dtype_name(x.dtype) == bound.dtype for x in embeddings)


def _loss(ops: Ops, bound: Bound, q: Any, pos: Any, temperature: Any, pos_log_q: Any, sources: list,
          row_ids: Any, weight: Any, reduction: str) -> Any:
    t = scalar(ops, bound, temperature)
    if weight is None:
        return ops.block_loss(q, pos, t, pos_log_q, tuple(sources), row_ids, reduction)
    rows = ops.block_loss(q, pos, t, pos_log_q, tuple(sources), row_ids, "none")
    return None if rows is None else _reduce(ops, rows, upcast(ops, bound, weight), reduction)


def sampled_softmax_loss(ops: Ops, bound: Bound, query_emb: Any, pos_emb: Any, neg_emb: Any, *, temperature: Any,
                         in_batch: bool | None, pos_log_q: Any, neg_log_q: Any, pos_ids: Any, neg_ids: Any,
                         num_hard_negatives: int | None, sample_weight: Any, reduction: str,
                         implementation: str = "auto", product_precision: str = "input", gather: Any = None) -> Any:
    in_batch = (neg_emb is None) if in_batch is None else in_batch
    if num_hard_negatives is not None or (neg_emb is not None and bound.form("neg_emb") != ("N", "D")):
        return None
    columns = (ops.size(pos_emb, 0) if in_batch else 0) + (0 if neg_emb is None else ops.size(neg_emb, 0))
    if not _applies(ops, implementation, gather, ops.size(query_emb, 0), columns):
        return None
    if not _compute_dtype(bound, query_emb, pos_emb, neg_emb):
        return None
    pos_q, neg_q = upcast(ops, bound, pos_log_q), upcast(ops, bound, neg_log_q)
    if pos_ids is not None and neg_ids is not None:
        from recloss.kernels.softmax import comparable_ids
        pos_ids, neg_ids = comparable_ids(ops, bound, pos_ids, neg_ids)
    sources = []
    if in_batch:   # the row's own positive is removed by its column (diagonal 0) or by its id
        sources.append((pos_emb, pos_q, pos_ids, 0 if pos_ids is None else None))
    if neg_emb is not None:
        sources.append((neg_emb, neg_q, neg_ids, None))
    return _loss(ops, bound, query_emb, pos_emb, temperature, pos_q, sources, pos_ids, sample_weight, reduction)


def unsupervised_softmax_cross_entropy_loss(ops: Ops, bound: Bound, src_emb: Any, pos_emb: Any, neg_emb: Any, *,
                                            temperature: Any, sample_weight: Any, reduction: str,
                                            implementation: str = "auto", product_precision: str = "input",
                                            gather: Any = None) -> Any:
    if not _applies(ops, implementation, gather, ops.size(src_emb, 0), ops.size(neg_emb, 0)):
        return None
    if not _compute_dtype(bound, src_emb, pos_emb, neg_emb):
        return None
    return _loss(ops, bound, src_emb, pos_emb, temperature, None, [(neg_emb, None, None, None)], None, sample_weight,
                 reduction)


def info_nce_loss(ops: Ops, bound: Bound, query_emb: Any, key_emb: Any, *, temperature: Any, symmetric: bool,
                  normalize: bool, ids: Any, sample_weight: Any, reduction: str, implementation: str = "auto",
                  product_precision: str = "input", gather: Any = None) -> Any:
    rows = ops.size(query_emb, 0)
    if not _applies(ops, implementation, gather, rows, ops.size(key_emb, 0)):
        return None
    if not _compute_dtype(bound, query_emb, key_emb):
        return None
    q, k = query_emb, key_emb
    if normalize:
        q, k = l2_normalize(ops, q), l2_normalize(ops, k)
    diagonal = 0 if ids is None else None
    if not symmetric:
        return _loss(ops, bound, q, k, temperature, None, [(k, None, ids, diagonal)], ids, sample_weight, reduction)
    t = scalar(ops, bound, temperature)
    forward = ops.block_loss(q, k, t, None, ((k, None, ids, diagonal),), ids, "none")
    backward = None if forward is None else ops.block_loss(k, q, t, None, ((q, None, ids, diagonal),), ids, "none")
    if backward is None:
        return None
    return _reduce(ops, 0.5 * (forward + backward), upcast(ops, bound, sample_weight), reduction)


_BLOCK = {f.__name__: f for f in (sampled_softmax_loss, unsupervised_softmax_cross_entropy_loss, info_nce_loss)}
