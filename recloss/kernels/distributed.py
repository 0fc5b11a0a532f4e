"""Cross-device negatives (the ``gather`` option), written once against the collectives a backend supplies.

With ``W`` workers holding local batches ``B_0, ..., B_{W-1}`` (the global batch is their concatenation in
worker order), a worker's row ``i`` is scored against the candidate columns of every worker:

* the in-batch columns ``[sum_w B_w, D]`` (all workers' positives, with their ``log_q`` and ids); the row's
  own positive is the global column ``offset + i``, ``offset = B_0 + ... + B_{r-1}`` on worker ``r``;
* the shared negatives ``[sum_w N_w, D]`` (with their ``log_q`` and ids); per-row ``[B, K, D]`` negatives
  stay with their row.

Accidental hits are removed by id against every gathered column and logQ is subtracted from every gathered
column, exactly as on one device. The gradient of a gathered tensor returns each worker its slice of the
cotangents summed over workers, so every path from a loss to an input is counted once across the workers.

The value follows the framework's data-parallel convention (:func:`reduce_global_rows`): ``"global"``
(torch, JAX) every worker returns the loss of the global batch; ``"share"`` (TensorFlow) each worker returns
``sum_{i local} w_i l_i / sum_{global} w`` (the shares sum to the global loss). ``"none"`` returns the local
rows ``w_i l_i``, each scored against the global candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

from recloss._spec import Bound
from recloss._validate import GATHER_ENGINES, gather_error, gather_requested
from recloss.kernels._common import Ops, nonfinite_guard


class Collectives(Protocol):
    """Collective operations over one group of workers: a ``torch.distributed`` process group, a JAX mesh
    axis (``shard_map``/``pmap``) or a TensorFlow replica context. Supplied by
    ``recloss.backends.<framework>.distributed`` through ``ops.collectives(loss, gather)``, which raises the
    shared ``gather`` error where the group is not available."""

    #: ``"global"``: every worker returns the global loss; ``"share"``: each returns its share of it.
    convention: str

    def num_workers(self) -> int: ...
    def worker_index(self) -> Any: ...                          # an int or a scalar integer tensor
    def sizes(self, counts: Sequence[Any]) -> list[Any]: ...    # per local count, every worker's count in order
    def offset(self, sizes: Any) -> Any: ...                    # sum of the counts of the workers before this one
    def all_gather(self, x: Any, sizes: Any) -> Any: ...        # [n_w, ...] -> [sum_w n_w, ...] in worker order;
    #                                                             gradient: this worker's slice of the summed cotangents
    def all_reduce_sum(self, x: Any) -> Any: ...                # elementwise sum over workers (same shape everywhere);
    #                                                             gradient: the sum of the cotangents over workers


#: The dimensions whose sizes may differ between workers: the rows that are concatenated over the workers
#: (the local batch, the shared negatives). Every other dimension is the same on every worker.
ROW_DIMS = frozenset({"B", "N"})


def collectives(ops: Ops, bound: Bound, gather: Any, inputs: Mapping[str, Any]) -> Collectives | None:
    """The collectives of a call's ``gather`` option, or None for the local batch (``None`` or ``False``, or a
    call that the framework traces only for its output's shape: the backend's hook decides).

    ``inputs`` are the call's tensor arguments by name. Where workers may be called with different inputs
    (torch processes), the collectives offer ``describe_call(bound, inputs)``, and check before their first
    collective that every worker's call is the same (else an error on every worker, not a crash or a hang).
    """
    gather = gather_requested(gather)
    if gather is None:
        return None
    hook = getattr(ops, "collectives", None)
    if hook is None:
        raise gather_error(bound.spec.name, gather, GATHER_ENGINES, "a backend without one",
                           "pass torch, JAX or TensorFlow tensors, or gather=None")
    comm = hook(bound.spec.name, gather)
    describe = getattr(comm, "describe_call", None)
    if describe is not None:
        describe(bound, inputs)
    return comm


@dataclass(frozen=True)
class Columns:
    """The candidate columns of one call, gathered from every worker where ``gather`` is set.

    ``in_batch`` ``[M, D]`` (the positives used as in-batch negatives), its ``in_batch_log_q`` ``[M]`` and
    ``in_batch_ids`` ``[M]``; ``offset``, the column of local row 0's own positive among them; ``neg``
    (``[N, D]`` shared, gathered; or ``[B, K, D]`` per row, local) with ``neg_log_q`` and ``neg_ids``.
    Absent pieces are None.
    """

    in_batch: Any = None
    in_batch_log_q: Any = None
    in_batch_ids: Any = None
    offset: Any = 0
    neg: Any = None
    neg_log_q: Any = None
    neg_ids: Any = None


def gather_rows(ops: Ops, comm: Collectives | None, groups: Sequence[Sequence[Any]]) -> tuple[list[list[Any]], list[Any]]:
    """Each group's tensors (None entries kept; the tensors of a group share their leading dimension)
    concatenated over the workers in worker order, and this worker's offset in each group.

    One exchange of the local sizes serves every group (torch and TF: sizes may differ between workers).
    Without ``comm`` the tensors stay local (``ops.replicated`` where the backend has it) with offset 0.
    """
    if comm is None:
        replicated = getattr(ops, "replicated", None)
        keep = (lambda x: x) if replicated is None else (lambda x: None if x is None else replicated(x))  # noqa: E731
        return [[keep(x) for x in group] for group in groups], [0] * len(groups)
    present = [index for index, group in enumerate(groups) if any(x is not None for x in group)]
    counts = [ops.size(next(x for x in groups[index] if x is not None), 0) for index in present]
    sizes = dict(zip(present, comm.sizes(counts))) if present else {}
    gathered = [[None if x is None else comm.all_gather(x, sizes[index]) for x in group]
                for index, group in enumerate(groups)]
    return gathered, [comm.offset(sizes[index]) if index in sizes else 0 for index in range(len(groups))]


def candidate_columns(ops: Ops, comm: Collectives | None, *, in_batch: Any = None, in_batch_log_q: Any = None,
                      in_batch_ids: Any = None, neg: Any = None, neg_log_q: Any = None, neg_ids: Any = None,
                      shared: bool = True) -> Columns:
    """The :class:`Columns` of the retrieval softmax: the in-batch sources and the shared ``[N, D]``
    negatives (``shared``) gathered from every worker (with ``comm``); per-row ``[B, K, D]`` negatives stay
    local."""
    shared = shared and neg is not None
    (batch_part, neg_part), (offset, _) = gather_rows(
        ops, comm, [[in_batch, in_batch_log_q, in_batch_ids], [neg, neg_log_q, neg_ids] if shared else []])
    if not shared:
        neg_part = [neg, neg_log_q, neg_ids]
    return Columns(*batch_part, offset, *neg_part)


def reduce_global_rows(ops: Ops, comm: Collectives, row_loss: Any, sample_weight: Any, reduction: str,
                       inputs: tuple = ()) -> Any:
    """:func:`recloss.kernels._common.reduce_rows` over every worker's rows, in ``comm``'s convention.

    One all-reduce of ``[sum_local w_i l_i, sum_local w_i, guard]`` gives the global sums and the non-finite
    guard of every worker's inputs (a NaN anywhere makes every worker's loss NaN, as on one device).
    ``"mean"``: ``sum_global w_i l_i / sum_global w_i`` ("global") or ``sum_local w_i l_i / sum_global w_i``
    ("share"); 0 where the global weights sum to 0. ``"sum"``: the global or the local sum. ``"none"``: the
    local ``w_i l_i``.
    """
    if sample_weight is not None:
        row_loss = row_loss * sample_weight
    guard = nonfinite_guard(ops, *inputs)
    local_total = ops.sum(row_loss)
    if reduction == "none":
        if guard is None:
            return row_loss
        return row_loss + comm.all_reduce_sum(guard[None])[0]
    local_weight = (ops.sum(sample_weight) if sample_weight is not None
                    else ops.to_float(ops.size(row_loss, 0), local_total))
    parts = [local_total, local_weight] + ([] if guard is None else [guard])
    totals = comm.all_reduce_sum(ops.concat([part[None] for part in parts], 0))
    total = totals[0] if comm.convention == "global" else local_total
    if reduction == "sum":
        reduced = total
    else:
        weight = totals[1]
        positive = weight > 0
        reduced = ops.where(positive, total / ops.where(positive, weight, 1.0), 0.0)
    return reduced if guard is None else reduced + totals[2]
