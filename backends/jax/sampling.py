"""The sampling primitives on JAX (:class:`recloss.kernels.sampling.SamplingOps`): 32-bit hashing in uint32
(wrapping arithmetic, with or without ``jax_enable_x64``), scatter-add with ``.at[].add``, random draws from a
key (``jax.random.fold_in(key, stream)`` per draw, so one key serves a whole call)."""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from recloss.backends.jax import JaxOps


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]


#: Whether this JAX's ``lax.all_gather`` can mark its result invariant over the axis (``to=``).
_GATHER_TO = "to" in inspect.signature(jax.lax.all_gather).parameters


class _InvariantCollectives:
    """The ``gather`` option's collectives for the estimator and the queue, whose state is replicated: the
    gathered batch is marked invariant over the mesh axis (``lax.all_gather(..., to="invarying")``), so that a
    state updated with it may leave ``shard_map`` with ``out_specs=P()`` while ``check_vma`` is on."""

    def __init__(self, comm: Any) -> None:
        self.comm = comm

    def sizes(self, counts: Any) -> Any:
        return self.comm.sizes(counts)

    def all_gather(self, x: jax.Array, sizes: Any) -> jax.Array:
        if _GATHER_TO:
            try:
                return jax.lax.all_gather(x, self.comm.axis, axis=0, tiled=True, to="invarying")
            except ValueError:   # a JAX that names it otherwise: the plain gather (shard_map with check_vma=False)
                pass
        return self.comm.all_gather(x, sizes)


class JaxSamplingOps(JaxOps):
    """:class:`recloss.kernels.sampling.SamplingOps` with ``jax.numpy`` operations."""

    @staticmethod
    def sampling_float() -> str:
        return "float64" if _x64() else "float32"

    @staticmethod
    def index_dtype() -> str:
        return "int64" if _x64() else "int32"

    @staticmethod
    def id_words(ids: Any) -> tuple[jax.Array, jax.Array]:
        """The two 32-bit words of each id's 64-bit two's complement; ``(lo, hi)`` given as a pair (64-bit
        NumPy ids split on the host where JAX holds only 32 bits) are taken as they are."""
        if isinstance(ids, tuple):
            return jnp.asarray(ids[0], jnp.uint32), jnp.asarray(ids[1], jnp.uint32)
        if ids.dtype.itemsize == 8:
            return (ids & 0xFFFFFFFF).astype(jnp.uint32), (ids >> 32).astype(jnp.uint32)   # wraps mod 2**32
        if jnp.issubdtype(ids.dtype, jnp.signedinteger):
            wide = ids.astype(jnp.int32)
            return wide.astype(jnp.uint32), jnp.where(wide < 0, jnp.uint32(0xFFFFFFFF), jnp.uint32(0))
        return ids.astype(jnp.uint32), jnp.zeros(ids.shape, jnp.uint32)

    @staticmethod
    def mul32(x: jax.Array, c: int) -> jax.Array:
        return x * jnp.uint32(c)

    @staticmethod
    def xor(x: jax.Array, y: Any) -> jax.Array:
        return x ^ (jnp.uint32(y) if isinstance(y, int) else y)

    @staticmethod
    def shift_right(x: jax.Array, bits: int) -> jax.Array:
        return jax.lax.shift_right_logical(x, jnp.uint32(bits))

    @staticmethod
    def mod(x: Any, n: int) -> Any:
        out = x % n
        return out.astype(jnp.int32) if getattr(out, "dtype", None) == jnp.uint32 else out

    @staticmethod
    def arange(n: int, dtype: str, like: Any) -> jax.Array:
        return jnp.arange(n, dtype=dtype)

    @staticmethod
    def full(shape: tuple, value: float, dtype: str, like: Any) -> jax.Array:
        return jnp.full(shape, value, dtype=dtype)

    @staticmethod
    def take(x: jax.Array, index: jax.Array) -> jax.Array:
        return x[index]

    @staticmethod
    def bincount(index: jax.Array, length: int, weight: jax.Array) -> jax.Array:
        return jnp.zeros(length, weight.dtype).at[index].add(weight)

    @staticmethod
    def scatter_rows(x: jax.Array, index: jax.Array, rows: jax.Array) -> jax.Array:
        return x.at[index].set(rows)

    @staticmethod
    def reshape(x: jax.Array, shape: tuple) -> jax.Array:
        return jnp.reshape(x, shape)

    @staticmethod
    def stack(xs: list, axis: int) -> jax.Array:
        return jnp.stack(xs, axis)

    @staticmethod
    def min(x: jax.Array, axis: int) -> jax.Array:
        return jnp.min(x, axis=axis)

    floor = staticmethod(jnp.floor)

    @staticmethod
    def searchsorted(sorted_: jax.Array, values: jax.Array) -> jax.Array:
        return jnp.searchsorted(sorted_, values, side="right")

    @staticmethod
    def collectives(loss: str, gather: Any) -> Any:
        """The ``gather`` option's collectives, with the gathered batch invariant over the axis."""
        return _InvariantCollectives(JaxOps.collectives(loss, gather))

    @staticmethod
    def uniform(rng: Any, shape: tuple, dtype: str, stream: int) -> jax.Array:
        return jax.random.uniform(jax.random.fold_in(rng, stream), shape, dtype)

    @staticmethod
    def randint(rng: Any, shape: tuple, high: int, stream: int) -> jax.Array:
        return jax.random.randint(jax.random.fold_in(rng, stream), shape, 0, high,
                                  dtype="int64" if _x64() else "int32")


OPS = JaxSamplingOps()


def random_state(seed: Any, like: Any) -> Any:
    """A key as given (a typed key or a raw ``uint32[2]`` one), or the key of an int seed (the same draws on
    every call)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return jax.random.key(int(seed))
    return seed


def is_random_state(seed: Any) -> bool:
    return isinstance(seed, jax.Array)


def convert(array: Any) -> jax.Array:
    return jnp.asarray(array)

