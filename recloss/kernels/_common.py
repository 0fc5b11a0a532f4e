"""What every family of kernels shares: the :class:`Ops` protocol, casting, reductions and safe operations.

Each backend module (``recloss.backends.tensorflow`` / ``.torch`` / ``.jax``) implements :class:`Ops` with
its framework's native operations, so autodiff, ``jit``/``compile`` and ``vmap`` see ordinary framework
code; a backend may override any kernel with a specialised one (the streaming softmax does). The float64
NumPy references in :mod:`recloss.reference` are written separately and share nothing with this package.

Numerics, the same on every backend:

* half-precision inputs are cast to float32 first, float64 stays float64 (``bound.dtype``);
* means over nothing are 0, never NaN; a NaN or an infinity in an input makes the loss NaN.
"""

from __future__ import annotations

import numbers
from typing import Any, Protocol

from recloss._spec import Bound

NEG_INF = float("-inf")
#: Squared-norm floor of L2 normalisation: ``x / max(||x||, 1e-12)``, as ``tf.math.l2_normalize``.
NORM_EPS_SQUARED = 1e-24


class Ops(Protocol):
    """The array operations a backend supplies. ``x[:, None]`` indexing and ``+ - * /`` are used directly."""

    def cast(self, x: Any, dtype: str) -> Any: ...            # to a floating dtype
    def cast_int(self, x: Any, dtype: str) -> Any: ...        # to an integer dtype, e.g. "int64"
    def int_bits(self) -> int: ...                            # the widest integer dtype's bits (64; JAX x32: 32)
    def rowdot(self, a: Any, b: Any) -> Any: ...          # [B, D], [B, D] -> [B]
    def dot_nt(self, a: Any, b: Any) -> Any: ...          # [B, D], [N, D] -> [B, N]; half in, float32 out
    def batch_dot(self, a: Any, b: Any) -> Any: ...       # [B, D], [B, K, D] -> [B, K]; likewise
    def half_products(self, x: Any) -> bool: ...          # True: x (float16/bfloat16) may enter dot_nt as it is
    def sum(self, x: Any, axis: int | None = None) -> Any: ...
    def max(self, x: Any, axis: int) -> Any: ...
    def max_one(self, x: Any) -> Any: ...                 # row maxima [B] of [B, K]; gradient to one entry each
    def expm1(self, x: Any) -> Any: ...
    def maximum(self, a: Any, b: Any) -> Any: ...
    def exp(self, x: Any) -> Any: ...
    def log(self, x: Any) -> Any: ...
    def log1p(self, x: Any) -> Any: ...
    def softplus(self, x: Any) -> Any: ...
    def relu(self, x: Any) -> Any: ...
    def abs(self, x: Any) -> Any: ...
    def sqrt(self, x: Any) -> Any: ...
    def rsqrt(self, x: Any) -> Any: ...
    def where(self, condition: Any, a: Any, b: Any) -> Any: ...   # a or b may be a Python float
    def stop_gradient(self, x: Any) -> Any: ...
    def top_k(self, x: Any, k: int) -> Any: ...         # values of the k largest along the last axis
    def concat(self, xs: list[Any], axis: int) -> Any: ...
    def not_equal(self, a: Any, b: Any) -> Any: ...
    def logical_and(self, a: Any, b: Any) -> Any: ...
    def ones_bool(self, like: Any) -> Any: ...           # all-True boolean tensor shaped like `like`
    def row_index(self, x: Any) -> Any: ...              # arange(x.shape[0]) as integers
    def size(self, x: Any, axis: int) -> Any: ...        # x.shape[axis]: an int, or a scalar tensor if unknown
    def to_float(self, n: Any, like: Any) -> Any: ...    # a run-time size as a float scalar of like's dtype
    def minimum(self, a: Any, b: Any) -> Any: ...        # min of two run-time sizes
    def sigmoid(self, x: Any) -> Any: ...
    def top_k_with_indices(self, x: Any, k: Any) -> tuple[Any, Any]: ...  # the k largest along the last axis,
    #     descending, and their indices; equal values: the lower index first (a stable order)
    def gather(self, x: Any, indices: Any) -> Any: ...    # [B, L], [B, k] integers -> x[b, indices[b, r]]
    def positions(self, x: Any) -> Any: ...              # arange(x.shape[-1]) as floats of x's dtype
    def recompute(self, fn: Any) -> Any: ...             # fn(x) whose backward recomputes fn (a checkpoint)
    def cumlogsumexp_reverse(self, x: Any) -> Any: ...   # [B, L] -> logsumexp(x[:, i:]) for every i (stable)
    def cumsum(self, x: Any) -> Any: ...                 # [B, L] -> sum(x[:, :i + 1]) for every i
    # Optional. Cross-device negatives (the ``gather`` option): the collectives over one group of workers,
    # loaded only when used; see :class:`recloss.kernels.distributed.Collectives`.
    # def collectives(self, loss: str, gather: Any) -> Collectives: ...
    # Optional. ``x`` with its leading axis replicated, where a sharding type would otherwise make a
    # [rows, candidates] product illegal (JAX explicit sharding); the identity elsewhere.
    # def replicated(self, x: Any) -> Any: ...


# ----------------------------------------------------------------------------------------------------------
# Shared pieces


def upcast(ops: Ops, bound: Bound, x: Any) -> Any:
    """Cast a floating tensor to the call's compute dtype (float32, or float64 if any input is float64)."""
    return None if x is None else ops.cast(x, bound.dtype)


def product_operands(ops: Ops, bound: Bound, precision: str, *embeddings: Any) -> tuple:
    """Embeddings as operands of the softmax family's matrix products: kept in float16/bfloat16 when
    ``product_precision="input"``, every one of them has the same half dtype, and the backend multiplies it
    in that precision without risk of overflow (``ops.half_products``); else cast to the compute dtype like
    every other input."""
    present = [x for x in embeddings if x is not None]
    dtypes = {str(x.dtype) for x in present}
    if precision == "input" and bound.dtype == "float32" and len(dtypes) == 1 and ops.half_products(present[0]):
        return embeddings
    return tuple(upcast(ops, bound, x) for x in embeddings)


def scalar(ops: Ops, bound: Bound, value: Any) -> Any:
    """A number option (``temperature``, ``margin``) ready for the math: any real number (``int``, ``float``,
    ``fractions.Fraction``, NumPy scalars and 0-d arrays) becomes a Python float, a framework tensor is cast to
    the call's compute dtype (the gradient still flows to it), so the option never changes the result's dtype
    and TensorFlow never sees two dtypes."""
    if type(value) is float:
        return value
    if isinstance(value, numbers.Real) or type(value).__module__ == "numpy":
        return float(value)
    return ops.cast(value, bound.dtype)


def split_arguments(bound: Bound, arguments: dict[str, Any]) -> tuple[dict, dict, dict]:
    """A kernel's arguments as ``(tensors, numbers, static)`` for a backend that compiles the kernel once per
    signature: the tensor arguments; the number options (``temperature``, ``margin``: traced, so that a new
    value does not recompile); every other option (static: it steers the kernel's Python code)."""
    tensors = {name: arguments[name] for name in bound.spec.tensor_names}
    numbers_, static = {}, {}
    for option in bound.spec.options:
        value = arguments[option.name]
        if option.rule in ("positive", "finite"):
            numbers_[option.name] = float(value) if isinstance(value, numbers.Real) else value
        else:
            static[option.name] = value
    return tensors, numbers_, static


def safe_mean(ops: Ops, x: Any, axis: int) -> Any:
    """Mean along ``axis``; 0 where the axis is empty."""
    count = ops.size(x, axis)
    if known_only_at_run_time(count):
        return ops.sum(x, axis) / ops.maximum(ops.to_float(count, x), 1.0)
    return ops.sum(x, axis) / max(count, 1)


def known_only_at_run_time(size: Any) -> bool:
    """True for a size that is a tensor (TensorFlow, unknown dimension), False for an int (or a SymInt)."""
    return hasattr(size, "dtype")


def reduce_rows(ops: Ops, row_loss: Any, sample_weight: Any, reduction: str, inputs: tuple = (),
                comm: Any = None) -> Any:
    """``"none"``: ``w_i l_i``; ``"sum"``: ``sum_i w_i l_i``; ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 if that is 0).

    The result is NaN (every row with ``"none"``) if any of ``inputs`` holds a NaN or an infinity. With
    ``comm`` (the ``gather`` option's collectives) the sums run over every worker's rows and the value follows
    the framework's convention: :func:`recloss.kernels.distributed.reduce_global_rows`.
    """
    if comm is not None:
        from recloss.kernels.distributed import reduce_global_rows
        return reduce_global_rows(ops, comm, row_loss, sample_weight, reduction, inputs)
    reduced = _reduce(ops, row_loss, sample_weight, reduction)
    guard = nonfinite_guard(ops, *inputs)
    return reduced if guard is None else reduced + guard


def _reduce(ops: Ops, row_loss: Any, sample_weight: Any, reduction: str) -> Any:
    if sample_weight is not None:
        row_loss = row_loss * sample_weight
    if reduction == "none":
        return row_loss
    total = ops.sum(row_loss)
    if reduction == "sum":
        return total
    if sample_weight is None:
        return safe_mean(ops, row_loss, 0)
    weight_sum = ops.sum(sample_weight)
    positive = weight_sum > 0
    return ops.where(positive, total / ops.where(positive, weight_sum, 1.0), 0.0)


def nonfinite_guard(ops: Ops, *tensors: Any) -> Any:
    """0, or NaN if any tensor holds a NaN or an infinity (``x * 0`` is NaN exactly there); None for no tensor.

    Added to every loss so that a non-finite input never gives a silently finite loss: without it an
    infinite logit would act as a probability of exactly 0 or 1. No gradient flows through it.
    """
    terms = [ops.sum(ops.stop_gradient(x) * 0.0) for x in tensors if x is not None]
    return sum(terms[1:], terms[0]) if terms else None


def l2_normalize(ops: Ops, x: Any) -> Any:
    """``x / max(||x||, 1e-12)`` along the last axis; finite gradient at x = 0."""
    return x * ops.rsqrt(ops.maximum(ops.sum(x * x, -1)[..., None], NORM_EPS_SQUARED))


def safe_sqrt(ops: Ops, x: Any) -> Any:
    """``sqrt(x)`` for x >= 0 whose gradient at 0 is 0 instead of infinite; NaN stays NaN (``NaN != 0``)."""
    nonzero = x != 0
    return ops.where(nonzero, ops.sqrt(ops.where(nonzero, x, 1.0)), 0.0)
