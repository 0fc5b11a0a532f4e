"""The sampling primitives on TensorFlow (:class:`recloss.kernels.sampling.SamplingOps`): 32-bit hashing in int64
(values below 2**32, products split into 16-bit halves so that nothing overflows), ``unsorted_segment_sum``,
random draws from a ``tf.random.Generator`` (or, for an int seed, the stateless ops)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from recloss.backends.tensorflow import TensorFlowOps

_MASK = 0xFFFFFFFF


class TensorFlowSamplingOps(TensorFlowOps):
    """:class:`recloss.kernels.sampling.SamplingOps` with TensorFlow operations."""

    @staticmethod
    def sampling_float() -> str:
        return "float64"

    @staticmethod
    def index_dtype() -> str:
        return "int64"

    @staticmethod
    def id_words(ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The two 32-bit words of each id's 64-bit two's complement (uint64 ids keep their bits)."""
        wide = tf.bitcast(ids, tf.int64) if ids.dtype == tf.uint64 else tf.cast(ids, tf.int64)
        return (tf.bitwise.bitwise_and(wide, _MASK),
                tf.bitwise.bitwise_and(tf.bitwise.right_shift(wide, 32), _MASK))

    @staticmethod
    def mul32(x: tf.Tensor, c: int) -> tf.Tensor:
        low, high = tf.bitwise.bitwise_and(x, 0xFFFF), tf.bitwise.right_shift(x, 16)
        carry = tf.bitwise.left_shift(tf.bitwise.bitwise_and(high * (c & 0xFFFF), 0xFFFF), 16)
        return tf.bitwise.bitwise_and(low * c + carry, _MASK)

    @staticmethod
    def xor(x: tf.Tensor, y: Any) -> tf.Tensor:
        return tf.bitwise.bitwise_xor(x, tf.constant(y, x.dtype) if isinstance(y, int) else y)

    @staticmethod
    def shift_right(x: tf.Tensor, bits: int) -> tf.Tensor:
        return tf.bitwise.right_shift(x, tf.constant(bits, x.dtype))

    @staticmethod
    def mod(x: Any, n: int) -> Any:
        return x % n

    @staticmethod
    def arange(n: Any, dtype: str, like: Any) -> tf.Tensor:
        return tf.range(n, dtype=dtype)

    @staticmethod
    def full(shape: tuple, value: float, dtype: str, like: Any) -> tf.Tensor:
        return tf.fill(tf.stack([tf.cast(s, tf.int32) for s in shape]) if shape else [], tf.constant(value, dtype))

    @staticmethod
    def take(x: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        return tf.gather(x, index)

    @staticmethod
    def bincount(index: tf.Tensor, length: int, weight: tf.Tensor) -> tf.Tensor:
        return tf.math.unsorted_segment_sum(tf.fill(tf.shape(index), weight), index, length)

    @staticmethod
    def scatter_rows(x: tf.Tensor, index: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        return tf.tensor_scatter_nd_update(x, index[:, None], rows)

    @staticmethod
    def reshape(x: tf.Tensor, shape: tuple) -> tf.Tensor:
        return tf.reshape(x, shape)

    @staticmethod
    def stack(xs: list, axis: int) -> tf.Tensor:
        return tf.stack(xs, axis)

    @staticmethod
    def min(x: tf.Tensor, axis: int) -> tf.Tensor:
        return tf.reduce_min(x, axis=axis)

    floor = staticmethod(tf.floor)

    @staticmethod
    def searchsorted(sorted_: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
        return tf.searchsorted(sorted_, values, side="right", out_type=tf.int64)

    @staticmethod
    def uniform(rng: Any, shape: tuple, dtype: str, stream: int) -> tf.Tensor:
        if isinstance(rng, tf.random.Generator):
            return rng.uniform(shape, dtype=dtype)
        return tf.random.stateless_uniform(shape, seed=[rng, stream], dtype=dtype)

    @staticmethod
    def randint(rng: Any, shape: tuple, high: int, stream: int) -> tf.Tensor:
        if isinstance(rng, tf.random.Generator):
            return rng.uniform(shape, 0, high, dtype=tf.int64)
        return tf.random.stateless_uniform(shape, seed=[rng, stream], minval=0, maxval=high, dtype=tf.int64)


OPS = TensorFlowSamplingOps()


def random_state(seed: Any, like: Any) -> Any:
    """A ``tf.random.Generator`` as given (its state advances), an int seed for the stateless ops (the same draws
    on every call), or the global generator for None."""
    if seed is None:
        return tf.random.get_global_generator()
    return seed if isinstance(seed, tf.random.Generator) else int(seed)


def is_random_state(seed: Any) -> bool:
    return isinstance(seed, tf.random.Generator)


def convert(array: Any) -> tf.Tensor:
    return tf.convert_to_tensor(array)
