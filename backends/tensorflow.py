"""TensorFlow backend: the catalogue's kernels on ``tf`` operations (``GradientTape``, ``tf.function``, XLA).

Sizes unknown at trace time (``input_signature`` with ``None`` dimensions) are read with ``tf.shape``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from recloss import kernels
from recloss._spec import Bound
from recloss._validate import deferred_message
from recloss.backends.tensorflow_streaming import streaming_row_losses as _streaming_row_losses


def _like(value: Any, reference: Any) -> Any:
    """A Python number as a tensor of ``reference``'s dtype (TF does not promote mixed dtypes)."""
    return tf.constant(value, dtype=reference.dtype) if isinstance(value, (int, float)) else value


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

    rowdot = staticmethod(lambda a, b: tf.reduce_sum(a * b, axis=-1))
    dot_nt = staticmethod(lambda a, b: tf.matmul(a, b, transpose_b=True))
    batch_dot = staticmethod(lambda a, b: tf.einsum("bd,bkd->bk", a, b))
    exp = staticmethod(tf.exp)
    log = staticmethod(tf.math.log)
    log1p = staticmethod(tf.math.log1p)
    softplus = staticmethod(tf.nn.softplus)
    relu = staticmethod(tf.nn.relu)
    abs = staticmethod(tf.abs)
    sqrt = staticmethod(tf.sqrt)
    rsqrt = staticmethod(tf.math.rsqrt)
    logical_and = staticmethod(tf.logical_and)
    logical_not = staticmethod(tf.logical_not)
    stop_gradient = staticmethod(tf.stop_gradient)
    minimum = staticmethod(tf.minimum)
    streaming_row_losses = staticmethod(_streaming_row_losses)  # the streaming softmax path, custom_gradient

    @staticmethod
    def collectives(loss: str, gather: Any) -> Any:
        """The ``gather`` option's collectives over the tf.distribute replica context (loaded only when used)."""
        from recloss.backends.tensorflow_distributed import collectives
        return collectives(loss, gather)

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
    def concat(xs: list[tf.Tensor], axis: int) -> tf.Tensor:
        return tf.concat(xs, axis)

    not_equal = staticmethod(tf.not_equal)

    @staticmethod
    def first_true(mask: tf.Tensor) -> tf.Tensor:
        return tf.logical_and(mask, tf.equal(tf.cumsum(tf.cast(mask, tf.int32), axis=-1), 1))

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
