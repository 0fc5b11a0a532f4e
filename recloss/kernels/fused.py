"""The fused GPU path of the retrieval softmax: where it is chosen, and the three losses on top of it.

``implementation="fused"`` (or ``"auto"`` where it applies) computes the rows of ``sampled_softmax_loss`` (in-batch,
shared ``[N, D]`` negatives, or both), ``unsupervised_softmax_cross_entropy_loss`` and ``info_nce_loss`` with
one kernel per candidate source that never writes the ``[B, N]`` scores: Triton on CUDA tensors
(:mod:`recloss.backends.torch.fused`), Pallas on JAX GPU arrays (:mod:`recloss.backends.jax.fused`). A backend
offers it through two ``Ops`` methods:

``fused_unavailable(tensors, interpret, automatic)``
    None where the kernels can run on these tensors, else ``(kind, what)``: kind ``"device"``, ``"package"``
    (triton missing), ``"conflict"`` (TensorFlow imported before triton) or, for ``"auto"`` only, another
    reason not to pick the path (e.g. ``torch.compile`` tracing).
``fused_row_losses(q, s_pos, sources, row_ids, temperature, name, interpret, sums)``
    the row losses ``(m - s_pos) + log1p(r)``, ``[B]`` float32, from the queries ``q [B, D]`` in their own
    dtype, the positive scores ``s_pos = q . p / T - log_q_pos`` (float32, differentiable: computed here with
    the backend's ops), and per source ``(keys [M, D], log_q [M] | None, ids [M] | None, exclude)``: ``exclude``
    True removes column ``i`` from row ``i`` (the row's own positive), a pair ``(row_groups [B], column_groups
    [M])`` (``query_ids``) every column whose group equals the row's. With ``sums=True`` (label smoothing) it
    returns ``(rows, score_sum, count)``: the sum of the kept candidates' scores (differentiable) and their
    number, as the streaming op does (:func:`recloss.kernels.softmax.streaming_row_losses`).

``"auto"`` picks the path on a GPU wherever it applies (any size): float16, bfloat16 or float32 inputs, in-batch
or shared negatives, no ``num_hard_negatives``, ``pos_ids`` and ``neg_ids`` (if both are given) of one dtype (the
kernels compare ids of one dtype by value; ids of two dtypes keep to the other paths, which apply the shared rule,
and are refused with an explicit ``"fused"``). Explicit ``"fused"`` elsewhere is an error with the same words on
every backend (raised here); the cases the spec can see (float64, ``[B, K, D]`` negatives, hard negatives) are
refused by the shared validator (:mod:`recloss.losses.softmax`).

``RECLOSS_FUSED_INTERPRET=1`` in the environment runs the kernels on the CPU through Triton's interpreter (it sets
``TRITON_INTERPRET=1`` before triton is imported) and Pallas's ``interpret=True``, and lets ``"auto"`` pick the
path there: for tests, at small sizes.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

from recloss._dispatch import framework_of
from recloss._spec import Bound
from recloss._validate import dtype_name, gather_requested
from recloss.errors import BackendUnavailableError, DTypeError, OptionError
from recloss.kernels._common import Ops, l2_normalize, reduce_rows, scalar, upcast

#: Run the kernels through the interpreters on the CPU (tests); read once, at import.
INTERPRET = os.environ.get("RECLOSS_FUSED_INTERPRET", "") not in ("", "0")
if INTERPRET:
    os.environ["TRITON_INTERPRET"] = "1"

SECOND_ORDER_REFUSED = ('implementation="fused" has no second derivatives (its backward is not differentiable); '
                        'use implementation="materialized" for gradients of gradients')
FORWARD_MODE_REFUSED = ('implementation="fused" has no forward-mode derivatives (jvp); '
                        'use implementation="materialized" for forward-mode autodiff')
VMAP_REFUSED = 'implementation="fused" does not support vmap; use implementation="materialized" under vmap'


def refusal(name: str, message: str) -> str:
    """``"<loss>: <message>"``, the shared format."""
    return f"{name}: {message}"


def path(generic: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate one of the three generic softmax losses: the fused path runs first where it applies.

    The fused version has the same arguments and returns the reduced loss, or None to leave the call to
    ``generic``. It sees the inputs before they are cast to float32, so half inputs reach the kernels as they are.
    """
    fused = _FUSED[generic.__name__]

    @functools.wraps(generic)
    def kernel(ops: Ops, bound: Bound, **arguments: Any) -> Any:
        distributed = {name: arguments.pop(name) for name in ("gather", "shard_negatives") if name in arguments}
        gather = distributed.get("gather")
        if gather_requested(gather) is not None:   # the kernels see one device's candidates
            if arguments.get("implementation") == "fused":
                raise OptionError(f'{bound.spec.name}: implementation="fused" scores the local candidates only and '
                                  'does not take `gather`; use implementation="auto" (streaming or materialised '
                                  f"over the gathered candidates); got gather={gather!r}")
            return generic(ops, bound, **distributed, **arguments)
        if gather_requested(distributed.get("shard_negatives")) is not None:   # fused per shard: part_row_losses
            return generic(ops, bound, **distributed, **arguments)
        if arguments.get("implementation", "auto") in ("fused", "auto"):
            loss = fused(ops, bound, **arguments)
            if loss is not None:
                return loss
        return generic(ops, bound, **distributed, **arguments)
    return kernel


def chosen(ops: Ops, bound: Bound, implementation: str, tensors: tuple) -> bool:
    """Whether to run the fused path; raises for an explicit ``"fused"`` that cannot run here."""
    automatic = implementation == "auto"
    if automatic and bound.dtype == "float64":
        return False
    offered = getattr(ops, "fused_unavailable", None)
    if offered is None and automatic:
        return False
    reason = (("device", _describe(tensors)) if offered is None
              else offered(tensors, interpret=INTERPRET, automatic=automatic))
    if reason is None:
        return True
    if automatic:
        return False
    kind, what = reason
    name = bound.spec.name
    if kind == "package":
        raise BackendUnavailableError(f'{name}: implementation="fused" needs {what}, which is not installed; '
                                      'install it with: pip install "recloss[fused]"')
    if kind == "conflict":
        raise BackendUnavailableError(
            f'{name}: implementation="fused" needs {what}, which cannot be loaded after TensorFlow in one process '
            "(both register LLVM options and the process would abort); import triton before tensorflow, or use "
            'implementation="streaming"')
    raise OptionError(f'{name}: implementation="fused" runs Triton kernels on CUDA tensors (PyTorch) or Pallas '
                      f'kernels on GPU arrays (JAX); got {what}. implementation="auto" picks "fused" where it '
                      'applies')


def _describe(tensors: tuple) -> str:
    names = {"tensorflow": "TensorFlow tensors", "torch": "PyTorch tensors", "jax": "JAX arrays"}
    frameworks = sorted({framework_of(t) for t in tensors if t is not None} - {None})
    return ", ".join(names.get(f, f"{f} arrays") for f in frameworks) or "no tensors"


def part_row_losses(ops: Ops, bound: Bound, implementation: str, rows: Any, s_pos: Any, keys: Any, log_q: Any,
                    ids: Any, row_ids: Any, temperature: Any) -> Any:
    """The fused kernels' row losses of ``rows`` ``[R, D]`` (with positive scores ``s_pos``) against one set of
    keys (``shard_negatives``: every worker's rows against the local shard), or None where the path is not
    taken; an explicit ``"fused"`` that cannot run here raises as for the whole loss."""
    if implementation not in ("fused", "auto") or not chosen(ops, bound, implementation, (rows, keys)):
        return None
    return _rows(ops, bound, rows, s_pos, [(keys, log_q, ids, False)], row_ids, temperature)


def _rows(ops: Ops, bound: Bound, q: Any, s_pos: Any, sources: list, row_ids: Any, temperature: Any,
          label_smoothing: float = 0.0, z_loss: float = 0.0) -> Any:
    """The fused rows, with label smoothing and the z-loss (:func:`recloss.kernels.softmax.regularized_rows`)."""
    from recloss.kernels.softmax import regularized_rows

    if not label_smoothing:
        rows = ops.fused_row_losses(q, s_pos, tuple(sources), row_ids, temperature, name=bound.spec.name,
                                    interpret=INTERPRET)
        return regularized_rows(ops, rows, s_pos, None, None, 0.0, z_loss)
    rows, score_sum, count = ops.fused_row_losses(q, s_pos, tuple(sources), row_ids, temperature,
                                                  name=bound.spec.name, interpret=INTERPRET, sums=True)
    return regularized_rows(ops, rows, s_pos, count * s_pos - score_sum, count, label_smoothing, z_loss)


def _own(row_ids: Any, query_ids: Any) -> Any:
    """The in-batch source's ``exclude``: the row's query group with ``query_ids``, else the diagonal unless the
    ids remove it anyway."""
    if query_ids is not None:
        return query_ids, query_ids
    return row_ids is None


# ----------------------------------------------------------------------------------------------------------
# The losses on the fused rows: the same arguments as the generic kernels; None where the path is not taken.


def sampled_softmax_loss(ops: Ops, bound: Bound, query_emb: Any, pos_emb: Any, neg_emb: Any, *,
                         temperature: Any, in_batch: bool | None, pos_log_q: Any, neg_log_q: Any, pos_ids: Any,
                         neg_ids: Any, query_ids: Any = None, num_hard_negatives: int | None,
                         label_smoothing: float = 0.0, z_loss: float = 0.0, sample_weight: Any, reduction: str,
                         implementation: str = "auto", product_precision: str = "input") -> Any:
    in_batch = (neg_emb is None) if in_batch is None else in_batch
    if num_hard_negatives is not None or (neg_emb is not None and bound.form("neg_emb") != ("N", "D")):
        return None
    if not chosen(ops, bound, implementation, (query_emb, pos_emb, neg_emb)):
        return None
    if pos_ids is not None and neg_ids is not None and pos_ids.dtype != neg_ids.dtype:
        if implementation == "auto":
            return None   # the other paths compare ids of two dtypes by value, by the shared rule
        raise DTypeError(f'{bound.spec.name}: implementation="fused" compares ids of one dtype; got `pos_ids` '
                         f"{dtype_name(pos_ids.dtype)} and `neg_ids` {dtype_name(neg_ids.dtype)} (convert them to "
                         'one dtype, or use implementation="auto")')
    if product_precision == "float32":   # the kernels multiply in their inputs' precision: give them float32
        query_emb, pos_emb, neg_emb = (upcast(ops, bound, x) for x in (query_emb, pos_emb, neg_emb))
    pos_q, neg_q, weight = (upcast(ops, bound, x) for x in (pos_log_q, neg_log_q, sample_weight))
    t = scalar(ops, bound, temperature)
    s_pos = ops.rowdot(upcast(ops, bound, query_emb), upcast(ops, bound, pos_emb)) / t
    if pos_q is not None:
        s_pos = s_pos - pos_q
    sources = []
    if in_batch:
        sources.append((pos_emb, pos_q, pos_ids, _own(pos_ids, query_ids)))
    if neg_emb is not None:
        sources.append((neg_emb, neg_q, neg_ids, False))
    rows = _rows(ops, bound, query_emb, s_pos, sources, pos_ids, t, float(label_smoothing), float(z_loss))
    return reduce_rows(ops, rows, weight, reduction, (query_emb, pos_emb, neg_emb, pos_q, neg_q))


def unsupervised_softmax_cross_entropy_loss(ops: Ops, bound: Bound, src_emb: Any, pos_emb: Any, neg_emb: Any, *,
                                            temperature: Any, label_smoothing: float = 0.0, z_loss: float = 0.0,
                                            sample_weight: Any, reduction: str,
                                            implementation: str = "auto", product_precision: str = "input") -> Any:
    return sampled_softmax_loss(ops, bound, src_emb, pos_emb, neg_emb, temperature=temperature, in_batch=False,
                                pos_log_q=None, neg_log_q=None, pos_ids=None, neg_ids=None,
                                num_hard_negatives=None, label_smoothing=label_smoothing, z_loss=z_loss,
                                sample_weight=sample_weight, reduction=reduction,
                                implementation=implementation, product_precision=product_precision)


def info_nce_loss(ops: Ops, bound: Bound, query_emb: Any, key_emb: Any, *, temperature: Any, symmetric: bool,
                  normalize: bool, ids: Any, query_ids: Any = None, label_smoothing: float = 0.0,
                  z_loss: float = 0.0, sample_weight: Any, reduction: str, implementation: str = "auto",
                  product_precision: str = "input") -> Any:
    if not chosen(ops, bound, implementation, (query_emb, key_emb)):
        return None
    q, k = query_emb, key_emb
    if product_precision == "float32":   # the kernels multiply in their inputs' precision: give them float32
        q, k = upcast(ops, bound, q), upcast(ops, bound, k)
    if normalize:   # the kernels then read the float32 unit vectors
        q, k = l2_normalize(ops, upcast(ops, bound, q)), l2_normalize(ops, upcast(ops, bound, k))
    t = scalar(ops, bound, temperature)
    s_pos = ops.rowdot(upcast(ops, bound, q), upcast(ops, bound, k)) / t
    regularizers = (float(label_smoothing), float(z_loss))
    rows = _rows(ops, bound, q, s_pos, [(k, None, ids, _own(ids, query_ids))], ids, t, *regularizers)
    if symmetric:
        rows = 0.5 * (rows + _rows(ops, bound, k, s_pos, [(q, None, ids, _own(ids, query_ids))], ids, t,
                                   *regularizers))
    return reduce_rows(ops, rows, upcast(ops, bound, sample_weight), reduction, (query_emb, key_emb))


_FUSED = {f.__name__: f for f in (sampled_softmax_loss, unsupervised_softmax_cross_entropy_loss, info_nce_loss)}
