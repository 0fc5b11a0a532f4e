"""TensorFlow backend: the catalogue's kernels on ``tf`` operations (``GradientTape``, ``tf.function``, XLA).

Sizes unknown at trace time (``input_signature`` with ``None`` dimensions) are read with ``tf.shape``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Hashable

import numpy as np
import tensorflow as tf

from recloss import kernels
from recloss._spec import Bound
from recloss._validate import deferred_message, gather_requested
from recloss.backends._compiled import SignatureCache
from recloss.backends.tensorflow.streaming import first_order_only, forward_mode
from recloss.backends.tensorflow.streaming import streaming_row_losses as _streaming_row_losses


def _like(value: Any, reference: Any) -> Any:
    """A Python number as a tensor of ``reference``'s dtype (TF does not promote mixed dtypes)."""
    return tf.constant(value, dtype=reference.dtype) if isinstance(value, (int, float)) else value


HALF = (tf.float16, tf.bfloat16)
_GPU_VISIBLE: list[bool] = []


def _on_cpu(x: tf.Tensor) -> bool:
    """Whether ``x`` lives (or, in a graph without a device yet, will run) on a CPU: its device where eager
    execution placed it, else whether TensorFlow sees no GPU at all."""
    device = getattr(x, "device", "") or ""
    if device:
        return "GPU" not in device.rsplit("device:", 1)[-1].upper()
    if not _GPU_VISIBLE:
        _GPU_VISIBLE.append(bool(tf.config.list_logical_devices("GPU")))
    return not _GPU_VISIBLE[0]


class TensorFlowOps:
    """:class:`recloss.kernels.Ops` with TensorFlow operations."""

    @staticmethod
    def cast(x: tf.Tensor, dtype: str) -> tf.Tensor:
        return tf.cast(x, dtype)

    @staticmethod
    def cast_int(x: tf.Tensor, dtype: str) -> tf.Tensor:
        return tf.cast(x, dtype)

    @staticmethod
    def int_bits() -> int:
        return 64

    @staticmethod
    def rowdot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        if a.dtype in HALF:                   # exact products, float32 sums
            a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
        return tf.reduce_sum(a * b, axis=-1)

    @staticmethod
    def dot_nt(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        """bfloat16 inputs: a bfloat16 product (TensorFlow offers no float32 result for it) upcast.

        On a CPU the product is computed as XLA computes it there, whatever the processor: float32 sums of the
        exact products, rounded once to bfloat16. TensorFlow's own bfloat16 ``MatMul`` kernel on a CPU depends on
        the processor (oneDNN where it has AVX-512, else Eigen, which rounds partial sums), so eager and compiled
        calls would disagree by up to 2**-8 relative on processors without AVX-512."""
        if a.dtype == tf.bfloat16 and _on_cpu(a):
            product = tf.matmul(tf.cast(a, tf.float32), tf.cast(b, tf.float32), transpose_b=True)
            return tf.cast(tf.cast(product, tf.bfloat16), tf.float32)
        product = tf.matmul(a, b, transpose_b=True)
        return tf.cast(product, tf.float32) if a.dtype in HALF else product

    @staticmethod
    def batch_dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        if a.dtype in HALF:                   # per-row negatives gain nothing from a half product: float32
            a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
        return tf.einsum("bd,bkd->bk", a, b)

    @staticmethod
    def half_products(x: tf.Tensor) -> bool:
        return x.dtype == tf.bfloat16         # a float16 result could overflow: float16 is multiplied in float32
    exp = staticmethod(tf.exp)
    log = staticmethod(tf.math.log)
    log1p = staticmethod(tf.math.log1p)
    expm1 = staticmethod(tf.math.expm1)
    softplus = staticmethod(tf.nn.softplus)
    relu = staticmethod(tf.nn.relu)
    abs = staticmethod(tf.abs)
    sqrt = staticmethod(tf.sqrt)
    rsqrt = staticmethod(tf.math.rsqrt)
    logical_and = staticmethod(tf.logical_and)
    stop_gradient = staticmethod(tf.stop_gradient)
    minimum = staticmethod(tf.minimum)

    @staticmethod
    def recompute(fn: Callable[[tf.Tensor], tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
        """``tf.recompute_grad(fn)``, except in forward mode, which ``recompute_grad`` refuses (its backward
        cannot be transposed) and which keeps nothing to recompute: there ``fn`` itself."""
        checkpointed = tf.recompute_grad(fn)
        return lambda x: fn(x) if forward_mode([x]) else checkpointed(x)

    sigmoid = staticmethod(tf.sigmoid)
    log1p = staticmethod(tf.math.log1p)
    expm1 = staticmethod(tf.math.expm1)
    streaming_row_losses = staticmethod(_streaming_row_losses)  # the streaming softmax path, custom_gradient

    @staticmethod
    def collectives(loss: str, gather: Any, option: str = "gather") -> Any:
        """The ``gather`` (or ``shard_negatives``) option's collectives over the tf.distribute replica context
        (loaded only when used)."""
        from recloss.backends.tensorflow.distributed import collectives
        return collectives(loss, gather, option)

    @staticmethod
    def sum(x: tf.Tensor, axis: int | None = None) -> tf.Tensor:
        return tf.reduce_sum(x, axis=axis)

    @staticmethod
    def max(x: tf.Tensor, axis: int) -> tf.Tensor:
        return tf.reduce_max(x, axis=axis)

    @staticmethod
    def maximum(a: tf.Tensor, b: Any) -> tf.Tensor:
        return tf.maximum(a, _like(b, a))

    @staticmethod
    def where(condition: tf.Tensor, a: Any, b: Any) -> tf.Tensor:
        reference = b if isinstance(a, (int, float)) else a
        return tf.where(condition, _like(a, reference), _like(b, reference))

    @staticmethod
    def top_k(x: tf.Tensor, k: Any) -> tf.Tensor:
        return tf.math.top_k(x, k).values

    @staticmethod
    def top_k_with_indices(x: tf.Tensor, k: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """``tf.math.top_k``: equal values come out lower index first (documented), the stable order."""
        result = tf.math.top_k(x, k)
        return result.values, result.indices

    @staticmethod
    def cumsum(x: tf.Tensor) -> tf.Tensor:
        return tf.math.cumsum(x, axis=-1)

    @staticmethod
    def cumlogsumexp_reverse(x: tf.Tensor) -> tf.Tensor:
        """``logsumexp(x[:, i:])`` for every i by log2(L) doubling steps, ``x_i <- logaddexp(x_i, x_{i+2^k})``
        (``tf.math.cumulative_logsumexp`` is about 100 times slower under XLA on CPUs); with
        ``m = stop_gradient(max)`` inside each step, so that equal entries share the gradient. The native op
        where L is known only at run time."""
        size = x.shape[-1]
        if size is None:
            return tf.math.cumulative_logsumexp(x, axis=-1, reverse=True)
        shift = 1
        while shift < size:
            ahead = tf.concat([x[:, shift:], x[:, -shift:]], axis=-1)      # x_{i+shift}; a placeholder past L
            top = tf.stop_gradient(tf.maximum(x, ahead))
            merged = top + tf.math.log(tf.exp(x - top) + tf.exp(ahead - top))
            x = tf.where(tf.range(size) < size - shift, merged, x)
            shift *= 2
        return x

    @staticmethod
    def gather(x: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        return tf.gather(x, indices, batch_dims=1)

    @staticmethod
    def positions(x: tf.Tensor) -> tf.Tensor:
        return tf.range(tf.shape(x)[-1], dtype=x.dtype)

    @staticmethod
    def concat(xs: list[tf.Tensor], axis: int) -> tf.Tensor:
        return tf.concat(xs, axis)

    not_equal = staticmethod(tf.not_equal)

    @staticmethod
    def max_one(x: tf.Tensor) -> tf.Tensor:
        """Row maxima gathered at the argmax: the gradient goes to that one entry (reduce_max splits ties).
        A column of -inf is appended where the width is not known to be positive (argmax refuses empty rows)."""
        if x.shape[1] is None or x.shape[1] == 0:
            x = tf.concat([x, tf.fill(tf.stack([tf.shape(x)[0], 1]), tf.constant(float("-inf"), x.dtype))], 1)
        return tf.gather(x, tf.argmax(x, axis=1, output_type=tf.int32), axis=1, batch_dims=1)

    @staticmethod
    def ones_bool(like: tf.Tensor) -> tf.Tensor:
        return tf.ones_like(like, dtype=tf.bool)

    @staticmethod
    def row_index(x: tf.Tensor) -> tf.Tensor:
        return tf.range(tf.shape(x)[0])

    @staticmethod
    def size(x: tf.Tensor, axis: int) -> Any:
        static = x.shape[axis]
        return static if static is not None else tf.shape(x)[axis]

    @staticmethod
    def to_float(n: Any, like: tf.Tensor) -> tf.Tensor:
        return tf.cast(n, like.dtype)


OPS = TensorFlowOps()

#: Compiled eager kernels kept (of every loss together), by call signature; the cache (:data:`CACHE`) is
#: emptied when it holds this many, which frees their ``tf.function`` graphs.
CACHE_SIZE = 64
#: A signature is compiled once it has been called this many times eagerly (one-off shapes never pay for a
#: trace).
COMPILE_AFTER = 2
#: How an eager call's kernel is compiled: ``"xla"`` (``tf.function(jit_compile=True)``), ``"graph"``
#: (``tf.function``) or ``None`` (not at all: operation by operation).
EAGER_COMPILE: str | None = "xla"
#: At most this many call signatures are compiled with XLA in a process (every loss together). TensorFlow
#: never frees an XLA compilation (its compilation cache has no eviction, whatever becomes of the function),
#: so an XLA-compiled kernel is kept for good in :data:`XLA_KERNELS` and reused when its signature comes back;
#: further signatures are compiled as ``tf.function`` graphs without XLA, which :data:`CACHE` frees when it is
#: emptied. Memory therefore stays bounded under any churn of shapes.
XLA_SIGNATURES = 32

CACHE = SignatureCache(CACHE_SIZE)
XLA_KERNELS: dict[Hashable, Callable[..., Any]] = {}


def compiled(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """``kernel`` called eagerly runs as one ``tf.function(jit_compile=True)`` per call signature (forms,
    dtypes, sizes and static options: :attr:`recloss._spec.Bound.signature`) from its second call on, as Keras
    does for ``fit``: graph and XLA speed without per-operation dispatch (beyond :data:`XLA_SIGNATURES`
    signatures, a ``tf.function`` graph without XLA). The number options are passed as tensors, so a new
    temperature does not retrace. Inside a ``tf.function`` the kernel is traced into the caller's graph as
    usual. It runs operation by operation where a compiled kernel would be wrong or cannot run: with
    ``gather`` (an eager call with it runs in an eager ``strategy.run``, whose collectives' ``merge_call``
    cannot run inside a function being traced), under a tape that may record a second derivative (the
    streaming path's backward checks for an outer tape, see ``recloss.backends.tensorflow.streaming``) and
    under a forward accumulator."""

    def run(bound: Any, **arguments: Any) -> Any:
        if not tf.executing_eagerly() or EAGER_COMPILE is None:
            return kernel(bound, **arguments)
        tensors, numbers_, static = kernels.split_arguments(bound, arguments)
        if gather_requested(static.get("gather")) is not None or _operation_by_operation(
                [t for t in (*tensors.values(), *numbers_.values()) if t is not None]):
            return kernel(bound, **arguments)
        key = (bound.signature, tuple(sorted(static.items())), kernels.settings(), EAGER_COMPILE)
        # The signature fixes which tensors are present: the compiled function takes them, then the numbers, as
        # a flat list (a dict with absent entries costs TF's argument matching a few hundred microseconds).
        names = tuple(name for name, value in tensors.items() if value is not None) + tuple(numbers_)
        function = XLA_KERNELS.get(key)
        if function is None:
            function = CACHE.lookup(key, COMPILE_AFTER, lambda: _build(kernel, bound, names, static, key))
        if function is None:
            return kernel(bound, **arguments)
        with first_order_only():
            return function(*[tensors[name] for name in names[:len(names) - len(numbers_)]],
                            *[_number(value, bound.dtype) for value in numbers_.values()])
    return run


def _build(kernel: Callable[..., Any], bound: Any, names: tuple, static: dict[str, Any],
           key: Hashable) -> Callable[..., Any]:
    """The compiled kernel of one call signature, one ``tf.function`` of the tensors and numbers named by
    ``names`` (the absent tensors None): XLA while :data:`XLA_SIGNATURES` allows (then kept in
    :data:`XLA_KERNELS`), else a graph."""
    absent = {name: None for name in bound.spec.tensor_names if name not in names}

    def call(*values: Any) -> Any:
        return kernel(bound, **dict(zip(names, values)), **absent, **static)

    xla = EAGER_COMPILE == "xla" and len(XLA_KERNELS) < XLA_SIGNATURES
    function = tf.function(call, jit_compile=xla, autograph=False)
    # One function per signature by design: TensorFlow's warning about functions created in a loop (it counts
    # the traces of one Python code object) does not apply.
    function._omit_frequent_tracing_warning = True
    if xla:
        XLA_KERNELS[key] = function
    return function


def _operation_by_operation(tensors: list) -> bool:
    """Where an eager call must not run a compiled kernel: under a tape that may record a second derivative
    (the streaming backward then computes in ordinary operations) or a forward accumulator (a custom gradient
    has no JVP)."""
    return _higher_order(tensors) or forward_mode(tensors)


_NUMBERS: dict[tuple, tf.Tensor] = {}


def _number(value: Any, dtype: str) -> Any:
    """A number option as a constant tensor of ``dtype`` (made once per value), a tensor as it is."""
    if not isinstance(value, float):
        return value
    constant = _NUMBERS.get((value, dtype))
    if constant is None:
        if len(_NUMBERS) >= 256:
            _NUMBERS.clear()
        constant = _NUMBERS[(value, dtype)] = tf.constant(value, dtype)
    return constant


def _higher_order(tensors: list) -> bool:
    """True where a tape could record the gradient of these tensors' gradient (nested or persistent tapes)."""
    try:
        from tensorflow.python.ops.gradients_util import (POSSIBLE_GRADIENT_TYPES_HIGHER_ORDER,
                                                          PossibleTapeGradientTypes)
    except ImportError:   # no way to tell: stay eager, which is right in every case
        return True
    handles = [t.handle if isinstance(t, tf.Variable) else t for t in tensors if tf.is_tensor(t)]
    return PossibleTapeGradientTypes(handles) == POSSIBLE_GRADIENT_TYPES_HIGHER_ORDER


KERNELS: dict[str, Callable[..., Any]] = {name: compiled(partial(kernel, OPS))
                                          for name, kernel in kernels.KERNELS.items()}


def convert(array: np.ndarray) -> tf.Tensor:
    return tf.convert_to_tensor(array)


def check_deferred(bound: Bound, tensors: dict[str, Any]) -> dict[str, Any]:
    """Run-time checks of the dimensions the validator could not compare at trace time (``None`` sizes in a
    ``tf.function``'s ``input_signature``): without them ``[3]`` against ``[1]`` would broadcast silently.

    In a graph each check is a ``tf.debugging.assert_equal`` with the validator's words (an
    ``InvalidArgumentError`` when the function runs). XLA drops assertions, so each check also reshapes a
    ``[size_a]`` vector to ``[size_b]``, which XLA refuses when the sizes differ; its op is named after the
    check. The probes feed a 0.0 into the first floating tensor, so that neither check can be pruned.
    """
    probes = []
    for dim, ((first, first_axis), *others) in bound.deferred:
        expected = tf.shape(tensors[first])[first_axis]
        for name, axis in others:
            got = tf.shape(tensors[name])[axis]
            tf.debugging.assert_equal(expected, got, message=deferred_message(bound, dim, first, name))
            probe = tf.reshape(tf.zeros(expected[None], tf.bool), got[None],
                               name=f"recloss_{bound.spec.name}_{name}_needs_{dim}_of_{first}")
            probes.append(tf.reduce_any(probe))
    if not probes:
        return tensors
    target = next(n for n in bound.spec.tensor_names if bound.dtypes.get(n, "").startswith(("float", "bfloat")))
    zero = tf.cast(tf.reduce_any(tf.stack(probes)), tensors[target].dtype)
    return {**tensors, target: tensors[target] + zero}


def product_result_unit(dtype: str, device: str) -> float | None:
    """bfloat16 embedding products are rounded to bfloat16 (2**-8); float16 is multiplied in float32 (None)."""
    return 2.0 ** -8 if dtype == "bfloat16" else None


def tracing() -> bool:
    """TF traces with static (possibly None) shapes, so validation results can always be cached."""
    return False


def concrete(x: Any) -> np.ndarray | None:
    if isinstance(x, np.ndarray):
        return x
    if tf.executing_eagerly() and hasattr(x, "numpy"):
        return x.numpy()
    return None


def devices() -> list[str]:
    kinds = {device.device_type for device in tf.config.list_logical_devices()}
    return ["cpu"] + (["gpu"] if "GPU" in kinds else [])


def value_and_grad(fn: Callable[..., Any], inputs: dict[str, Any], wrt: list[str],
                   device: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with tf.device(device.upper() + ":0"):
        tensors = {name: None if v is None else convert(v) for name, v in inputs.items()}
        with tf.GradientTape() as tape:
            for name in wrt:
                tape.watch(tensors[name])
            out = fn(**tensors)
            total = tf.reduce_sum(out)
        grads = tape.gradient(total, [tensors[name] for name in wrt],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)  # e.g. an empty neg_emb
    as_numpy = lambda t: np.asarray(tf.cast(t, tf.float64).numpy())  # noqa: E731
    return as_numpy(out), {name: as_numpy(g) for name, g in zip(wrt, grads)}
