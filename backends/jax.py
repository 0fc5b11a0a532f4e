"""JAX backend: the catalogue's kernels on ``jax.numpy`` / ``lax`` (``jit``, ``grad``, ``vmap``).

Float32 matrix products run at ``Precision.HIGHEST``: on GPUs JAX's default would use TF32 and lose about
three decimal digits, which the parity tolerances (and users comparing frameworks) would see.
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from recloss import kernels
from recloss.backends.jax_streaming import streaming_row_losses as _streaming_row_losses

HIGHEST = jax.lax.Precision.HIGHEST


class JaxOps:
    """:class:`recloss.kernels.Ops` with ``jax.numpy`` operations."""

    @staticmethod
    def cast(x: jax.Array, dtype: str) -> jax.Array:
        return x.astype(dtype)

    rowdot = staticmethod(lambda a, b: jnp.sum(a * b, axis=-1))
    dot_nt = staticmethod(lambda a, b: jnp.matmul(a, b.T, precision=HIGHEST))
    batch_dot = staticmethod(lambda a, b: jnp.einsum("bd,bkd->bk", a, b, precision=HIGHEST))
    exp = staticmethod(jnp.exp)
    log = staticmethod(jnp.log)
    softplus = staticmethod(jax.nn.softplus)
    relu = staticmethod(jax.nn.relu)
    abs = staticmethod(jnp.abs)
    sqrt = staticmethod(jnp.sqrt)
    rsqrt = staticmethod(jax.lax.rsqrt)
    where = staticmethod(jnp.where)
    maximum = staticmethod(jnp.maximum)
    concat = staticmethod(jnp.concatenate)
    not_equal = staticmethod(jnp.not_equal)
    logical_and = staticmethod(jnp.logical_and)
    stop_gradient = staticmethod(jax.lax.stop_gradient)
    minimum = staticmethod(min)
    recompute = staticmethod(jax.checkpoint)
    sigmoid = staticmethod(jax.nn.sigmoid)
    log1p = staticmethod(jnp.log1p)
    expm1 = staticmethod(jnp.expm1)
    streaming_row_losses = staticmethod(_streaming_row_losses)  # the streaming softmax path, custom_vjp

    @staticmethod
    def sum(x: jax.Array, axis: int | None = None) -> jax.Array:
        return jnp.sum(x, axis=axis)

    @staticmethod
    def max(x: jax.Array, axis: int) -> jax.Array:
        return jnp.max(x, axis=axis)

    @staticmethod
    def top_k(x: jax.Array, k: int) -> jax.Array:
        return jax.lax.top_k(x, k)[0]

    @staticmethod
    def top_k_with_indices(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
        """``lax.top_k``: equal values come out lower index first, the stable order."""
        return jax.lax.top_k(x, k)

    @staticmethod
    def cumlogsumexp_reverse(x: jax.Array) -> jax.Array:
        return jax.lax.cumlogsumexp(x, axis=x.ndim - 1, reverse=True)

    @staticmethod
    def gather(x: jax.Array, indices: jax.Array) -> jax.Array:
        return jnp.take_along_axis(x, indices, axis=-1)

    @staticmethod
    def positions(x: jax.Array) -> jax.Array:
        return jnp.arange(x.shape[-1], dtype=x.dtype)

    @staticmethod
    def ones_bool(like: jax.Array) -> jax.Array:
        return jnp.ones(like.shape, dtype=bool)

    @staticmethod
    def row_index(x: jax.Array) -> jax.Array:
        return jnp.arange(x.shape[0])

    @staticmethod
    def size(x: jax.Array, axis: int) -> int:
        return x.shape[axis]

    @staticmethod
    def to_float(n: Any, like: jax.Array) -> jax.Array:
        return jnp.asarray(n, dtype=like.dtype)


OPS = JaxOps()
KERNELS: dict[str, Callable[..., Any]] = {name: partial(kernel, OPS) for name, kernel in kernels.KERNELS.items()}


def convert(array: np.ndarray) -> jax.Array:
    return jnp.asarray(array)


def tracing() -> bool:
    """JAX traces with concrete shapes, so validation results can always be cached."""
    return False


def concrete(x: Any) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def devices() -> list[str]:
    platforms = {device.platform for device in jax.devices()}
    return ["cpu"] + (["gpu"] if "gpu" in platforms or "cuda" in platforms else [])


def value_and_grad(fn: Callable[..., Any], inputs: dict[str, Any], wrt: list[str],
                   device: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    wants_x64 = any(v is not None and v.dtype == np.float64 for v in inputs.values())
    with jax.enable_x64(True) if wants_x64 else contextlib.nullcontext():
        target = jax.devices(device)[0]
        arrays = {name: None if v is None else jax.device_put(jnp.asarray(v), target) for name, v in inputs.items()}

        def total(*leaves: jax.Array) -> tuple[jax.Array, jax.Array]:
            out = fn(**{**arrays, **dict(zip(wrt, leaves))})
            return jnp.sum(out), out

        if wrt:
            (_, out), grads = jax.value_and_grad(total, argnums=tuple(range(len(wrt))), has_aux=True)(
                *[arrays[name] for name in wrt])
        else:
            out, grads = fn(**arrays), ()
        as_numpy = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        return as_numpy(out), {name: as_numpy(g) for name, g in zip(wrt, grads)}
