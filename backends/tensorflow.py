"""TensorFlow backend: the catalogue's kernels on ``tf`` operations (``GradientTape``, ``tf.function``, XLA).

Sizes unknown at trace time (``input_signature`` with ``None`` dimensions) are read with ``tf.shape``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from recloss import kernels
from recloss.backends.tensorflow_streaming import streaming_row_losses as _streaming_row_losses


def _like(value: Any, reference: Any) -> Any:
    """A Python number as a tensor of ``reference``'s dtype (TF does not promote mixed dtypes)."""
    return tf.constant(value, dtype=reference.dtype) if isinstance(value, (int, float)) else value


class TensorFlowOps:
    """:class:`recloss.kernels.Ops` with TensorFlow operations."""

    @staticmethod
    def cast(x: tf.Tensor, dtype: str) -> tf.Tensor:
        return tf.cast(x, dtype)

    rowdot = staticmethod(lambda a, b: tf.reduce_sum(a * b, axis=-1))
    dot_nt = staticmethod(lambda a, b: tf.matmul(a, b, transpose_b=True))
    batch_dot = staticmethod(lambda a, b: tf.einsum("bd,bkd->bk", a, b))
    exp = staticmethod(tf.exp)
    log = staticmethod(tf.math.log)
    softplus = staticmethod(tf.nn.softplus)
    relu = staticmethod(tf.nn.relu)
    abs = staticmethod(tf.abs)
    sqrt = staticmethod(tf.sqrt)
    rsqrt = staticmethod(tf.math.rsqrt)
    logical_and = staticmethod(tf.logical_and)
    stop_gradient = staticmethod(tf.stop_gradient)
    minimum = staticmethod(tf.minimum)
    recompute = staticmethod(tf.recompute_grad)
    sigmoid = staticmethod(tf.sigmoid)
    log1p = staticmethod(tf.math.log1p)
    expm1 = staticmethod(tf.math.expm1)
    streaming_row_losses = staticmethod(_streaming_row_losses)  # the streaming softmax path, custom_gradient

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

    @staticmethod
    def not_equal(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        if a.dtype != b.dtype:
            a, b = tf.cast(a, tf.int64), tf.cast(b, tf.int64)
        return tf.not_equal(a, b)

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
KERNELS: dict[str, Callable[..., Any]] = {name: partial(kernel, OPS) for name, kernel in kernels.KERNELS.items()}


def convert(array: np.ndarray) -> tf.Tensor:
    return tf.convert_to_tensor(array)


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
