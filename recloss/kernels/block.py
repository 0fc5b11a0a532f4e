"""The materialised retrieval softmax in one backend operation, where the backend has one (eager PyTorch).

A small batch in eager mode pays for the number of operations, not for the arithmetic: each costs a dispatch
and, under autograd, a graph node. The generic kernels (:mod:`recloss.kernels.softmax`) build the ``[B, N]``
block, the row maxima, the masks, the reduction and the non-finite guard from a few dozen operations. A backend
may offer the whole loss as one operation instead::

    ops.block_loss(q, pos, temperature, pos_log_q, sources, row_ids, reduction) -> loss | None
    ops.in_batch_loss(q, pos, temperature, reduction) -> loss | None    # block_loss, sources ((pos, None, None, 0),)
    ops.block_ready() -> bool        # whether it can run now (e.g. not while a compiler traces)

with the streaming path's ``sources`` (``(keys [M, D], log_q [M] | None, ids [M] | None, diagonal)`` per
candidate source, see :func:`recloss.kernels.softmax.streaming_row_losses`). It returns the loss reduced by
``reduction`` (``"none"``, ``"sum"`` or ``"mean"``, no weights) with the non-finite guard of its inputs applied
(a NaN or an infinity in any of them makes the result NaN, every row with ``"none"``), or None where it does not
apply (the generic kernel then runs). ``in_batch_loss`` is the most common call (in-batch negatives only, the
row's own column removed; no log Q, no ids), which a small batch runs with nothing to look up. Weights and
``info_nce_loss``'s symmetric form take their rows (``"none"``) and reduce them here.

The path runs where the generic kernel would materialise the block: ``implementation="materialized"``, or
``"auto"`` below the streaming threshold; local candidates only (no ``gather``, no ``shard_negatives``), no
``num_hard_negatives``, ``query_ids``, label smoothing or z-loss, shared ``[N, D]`` or in-batch negatives. The
fused GPU path, where it applies, runs before it.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable

from recloss._spec import Bound
from recloss._validate import gather_requested
from recloss.kernels import fused
from recloss.kernels._common import Ops, _reduce, l2_normalize, scalar, upcast


def path(generic: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate one of the three generic retrieval-softmax losses: the backend's block operation runs first
    where it applies (same arguments, the reduced loss or None).

    Whether it applies, and how the call's arguments become its sources, depends on the call signature only
    (the validated :class:`~recloss._spec.Bound`, which the validator reuses for repeated signatures): that
    plan is made once per ``Bound``, so a repeated call does little more than fetch its tensors."""
    planner = _PLANNERS[generic.__name__]

    @functools.wraps(generic)
    def kernel(ops: Ops, bound: Bound, **arguments: Any) -> Any:
        ready = getattr(ops, "block_ready", None)
        if ready is not None and ready():   # (not while a compiler traces: the plans are Python state)
            plan = _plan(planner, bound)
            if plan is not None:
                loss = plan(ops, arguments)
                if loss is not None:
                    return loss
        return generic(ops, bound, **arguments)
    return kernel


def repeat(ops: Ops, bound: Bound) -> Callable[[dict], Any] | None:
    """The block path of a signature that repeats (the API's repeated-call path, :func:`recloss._api.call`), or
    None where the decorated kernel's routing is needed anyway: ``run(arguments)`` returns the loss, or None for
    the call to take the ordinary route (a compiler tracing, the fused path wanted, a changed streaming
    threshold). It decides as the decorators do (:func:`recloss.kernels.fused.path`, then :func:`path`),
    without their per-call handling of the options, which a repeated signature shares."""
    planner = _PLANNERS.get(bound.spec.name)
    planned = None if planner is None or getattr(ops, "block_ready", None) is None else _plan(planner, bound)
    if planned is None:
        return None
    # The fused path decides on the embeddings' devices (:func:`recloss.kernels.fused.chosen`): the arguments
    # with a D dimension.
    # (Every planned loss has two or more: the getter returns a tuple.)
    embeddings = operator.itemgetter(*(arg.name for arg in bound.spec.args if any("D" in s for s in arg.shapes)))
    # What :func:`recloss.kernels.fused.chosen` answers without the tensors: "auto" never fuses float64, nor on
    # a backend without fused kernels.
    fusable = (bound.options.get("implementation", "auto") == "auto" and bound.dtype != "float64"
               and getattr(ops, "fused_unavailable", None) is not None)
    softmax = _softmax()
    threshold = softmax.STREAMING_MIN_LOGITS

    def run(arguments: dict) -> Any:
        if not ops.block_ready() or fusable and fused.chosen(ops, bound, "auto", embeddings(arguments)):
            return None
        plan = planned if softmax.STREAMING_MIN_LOGITS == threshold else _plan(planner, bound)
        return None if plan is None else plan(ops, arguments)
    return run


#: Plans by ``(id(bound), streaming threshold)``, with the Bound itself (so that its id stays its own).
_PLANS: dict[tuple, tuple] = {}
_PLANS_SIZE = 1024


def _plan(planner: Callable[[Bound, int], Any], bound: Bound) -> Any:
    key = (id(bound), _softmax().STREAMING_MIN_LOGITS)   # read at call time: tests change the threshold
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is bound:
        return hit[1]
    plan = planner(bound, key[1])
    if len(_PLANS) >= _PLANS_SIZE:
        _PLANS.clear()
    _PLANS[key] = (bound, plan)
    return plan


@functools.lru_cache(maxsize=None)
def _softmax() -> Any:
    from recloss.kernels import softmax   # (imports this module)
    return softmax


def _materialised(bound: Bound, rows: Any, columns: Any, threshold: int) -> bool:
    """Whether the generic kernel would materialise this block (so that the block operation may take it)."""
    options = bound.options
    implementation = options.get("implementation", "auto")
    if implementation not in ("auto", "materialized") or gather_requested(options.get("gather")) is not None:
        return False
    if gather_requested(options.get("shard_negatives")) is not None or "query_ids" in bound.present:
        return False
    if float(options.get("label_smoothing") or 0.0) or float(options.get("z_loss") or 0.0):
        return False   # the generic kernels regularise the rows
    if not isinstance(rows, int) or not isinstance(columns, int) or rows == 0 or columns == 0:
        return False
    return implementation == "materialized" or rows * columns < threshold


def _in_compute_dtype(bound: Bound, *names: str) -> bool:
    """Whether these embeddings are in the compute dtype, so that ``product_precision`` has nothing to do:
    half or mixed precisions take the generic path, whose product rules they follow."""
    return all(bound.dtypes.get(name, bound.dtype) == bound.dtype for name in names)


def _cast(ops: Ops, bound: Bound, name: str) -> Callable[[Any], Any]:
    """How the floating argument ``name`` reaches the compute dtype: as it is, or cast."""
    if bound.dtypes.get(name, bound.dtype) == bound.dtype:
        return _as_it_is
    return lambda x: upcast(ops, bound, x)


def _as_it_is(x: Any) -> Any:
    return x


def _loss(ops: Ops, bound: Bound, q: Any, pos: Any, temperature: Any, pos_log_q: Any, sources: tuple,
          row_ids: Any, weight: Any, reduction: str) -> Any:
    t = scalar(ops, bound, temperature)
    if weight is None:
        return ops.block_loss(q, pos, t, pos_log_q, sources, row_ids, reduction)
    rows = ops.block_loss(q, pos, t, pos_log_q, sources, row_ids, "none")
    return None if rows is None else _reduce(ops, rows, upcast(ops, bound, weight), reduction)


def _in_batch_plan(bound: Bound, query: str, key: str, reduction: str) -> Callable[[Ops, dict], Any]:
    """The plan of a loss of in-batch negatives only (``ops.in_batch_loss``) of the arguments ``query`` and
    ``key``. Without weights (the most common call) nothing stands between it and the backend's operation."""
    if "sample_weight" in bound.present:
        def run_weighted(ops: Ops, arguments: dict) -> Any:
            rows = ops.in_batch_loss(arguments[query], arguments[key], scalar(ops, bound, arguments["temperature"]),
                                     "none")
            return None if rows is None else _reduce(ops, rows, upcast(ops, bound, arguments["sample_weight"]),
                                                     reduction)
        return run_weighted

    def run(ops: Ops, arguments: dict) -> Any:
        return ops.in_batch_loss(arguments[query], arguments[key], scalar(ops, bound, arguments["temperature"]),
                                 reduction)
    return run


def _sampled_softmax_loss(bound: Bound, threshold: int) -> Callable[[Ops, dict], Any] | None:
    options = bound.options
    has_neg = "neg_emb" in bound.present
    if options["num_hard_negatives"] is not None or (has_neg and bound.form("neg_emb") != ("N", "D")):
        return None
    in_batch = (not has_neg) if options["in_batch"] is None else options["in_batch"]
    rows = bound.dims.get("B")
    columns = (rows if in_batch else 0) + (bound.dims.get("N") if has_neg else 0)
    if not _materialised(bound, rows, columns, threshold) or not _in_compute_dtype(bound, "query_emb", "pos_emb",
                                                                                    "neg_emb"):
        return None
    # Ids of two dtypes are compared in one that holds both (the shared rule); log_q cast to the compute dtype.
    compare_ids = {"pos_ids", "neg_ids"} <= bound.present and bound.dtypes["pos_ids"] != bound.dtypes["neg_ids"]
    reduction = options["reduction"]
    if in_batch and not has_neg and not {"pos_ids", "pos_log_q"} & bound.present:
        return _in_batch_plan(bound, "query_emb", "pos_emb", reduction)

    def run(ops: Ops, arguments: dict) -> Any:
        pos_emb, pos_ids, neg_ids = arguments["pos_emb"], arguments["pos_ids"], arguments["neg_ids"]
        pos_q = _cast(ops, bound, "pos_log_q")(arguments["pos_log_q"])
        if compare_ids:
            from recloss.kernels.softmax import comparable_ids
            pos_ids, neg_ids = comparable_ids(ops, bound, pos_ids, neg_ids)
        sources: tuple = ()
        if in_batch:   # the row's own positive is removed by its column (diagonal 0) or by its id
            sources = ((pos_emb, pos_q, pos_ids, 0 if pos_ids is None else None),)
        if has_neg:
            sources += ((arguments["neg_emb"], _cast(ops, bound, "neg_log_q")(arguments["neg_log_q"]), neg_ids,
                         None),)
        return _loss(ops, bound, arguments["query_emb"], pos_emb, arguments["temperature"], pos_q, sources, pos_ids,
                     arguments["sample_weight"], reduction)
    return run


def _unsupervised_softmax_cross_entropy_loss(bound: Bound, threshold: int) -> Callable[[Ops, dict], Any] | None:
    if not _materialised(bound, bound.dims.get("B"), bound.dims.get("N"), threshold) or not _in_compute_dtype(
            bound, "src_emb", "pos_emb", "neg_emb"):
        return None
    reduction = bound.options["reduction"]

    def run(ops: Ops, arguments: dict) -> Any:
        return _loss(ops, bound, arguments["src_emb"], arguments["pos_emb"], arguments["temperature"], None,
                     ((arguments["neg_emb"], None, None, None),), None, arguments["sample_weight"], reduction)
    return run


def _info_nce_loss(bound: Bound, threshold: int) -> Callable[[Ops, dict], Any] | None:
    rows = bound.dims.get("B")
    if not _materialised(bound, rows, rows, threshold) or not _in_compute_dtype(bound, "query_emb", "key_emb"):
        return None
    options = bound.options
    symmetric, normalize, reduction = options["symmetric"], options["normalize"], options["reduction"]
    if not symmetric and not normalize and "ids" not in bound.present:
        return _in_batch_plan(bound, "query_emb", "key_emb", reduction)

    def directed(ops: Ops, q: Any, k: Any, t: Any, ids: Any, reduction: str) -> Any:
        """The loss of the queries ``q`` against the keys ``k`` (the row's own removed by its column or its id)."""
        if ids is None:
            return ops.in_batch_loss(q, k, t, reduction)
        return ops.block_loss(q, k, t, None, ((k, None, ids, None),), ids, reduction)

    def run(ops: Ops, arguments: dict) -> Any:
        q, k, ids, weight = arguments["query_emb"], arguments["key_emb"], arguments["ids"], arguments["sample_weight"]
        if normalize:
            q, k = l2_normalize(ops, q), l2_normalize(ops, k)
        t = scalar(ops, bound, arguments["temperature"])
        if not symmetric and weight is None:
            return directed(ops, q, k, t, ids, reduction)
        forward = directed(ops, q, k, t, ids, "none")
        if forward is None:
            return None
        if symmetric:
            backward = directed(ops, k, q, t, ids, "none")
            if backward is None:
                return None
            forward = 0.5 * (forward + backward)
        return _reduce(ops, forward, upcast(ops, bound, weight), reduction)
    return run


_PLANNERS = {"sampled_softmax_loss": _sampled_softmax_loss,
             "unsupervised_softmax_cross_entropy_loss": _unsupervised_softmax_cross_entropy_loss,
             "info_nce_loss": _info_nce_loss}
