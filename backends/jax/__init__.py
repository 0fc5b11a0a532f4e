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
from recloss._spec import common_int_dtype
from recloss.backends._compiled import SignatureCache
from recloss.errors import DTypeError
from recloss.backends.jax.streaming import streaming_row_losses as _streaming_row_losses

HIGHEST = jax.lax.Precision.HIGHEST
HALF = (jnp.float16, jnp.bfloat16)


class JaxOps:
    """:class:`recloss.kernels.Ops` with ``jax.numpy`` operations."""

    @staticmethod
    def cast(x: jax.Array, dtype: str) -> jax.Array:
        return x.astype(dtype)

    @staticmethod
    def cast_int(x: jax.Array, dtype: str) -> jax.Array:
        return x.astype(dtype)

    @staticmethod
    def int_bits() -> int:
        return 64 if jax.config.jax_enable_x64 else 32

    @staticmethod
    def rowdot(a: jax.Array, b: jax.Array) -> jax.Array:
        if a.dtype in HALF:                   # exact products, float32 sums
            a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        return jnp.sum(a * b, axis=-1)

    @staticmethod
    def dot_nt(a: jax.Array, b: jax.Array) -> jax.Array:
        """Half inputs: products in their precision, float32 accumulation and result."""
        return jnp.matmul(a, b.T, precision=HIGHEST, preferred_element_type=jnp.float32 if a.dtype in HALF else None)

    @staticmethod
    def batch_dot(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.einsum("bd,bkd->bk", a, b, precision=HIGHEST,
                          preferred_element_type=jnp.float32 if a.dtype in HALF else None)

    @staticmethod
    def half_products(x: jax.Array) -> bool:
        return x.dtype in HALF
    exp = staticmethod(jnp.exp)
    log = staticmethod(jnp.log)
    log1p = staticmethod(jnp.log1p)
    expm1 = staticmethod(jnp.expm1)
    softplus = staticmethod(jax.nn.softplus)
    relu = staticmethod(jax.nn.relu)
    abs = staticmethod(jnp.abs)
    sqrt = staticmethod(jnp.sqrt)
    rsqrt = staticmethod(jax.lax.rsqrt)
    where = staticmethod(jnp.where)
    maximum = staticmethod(jnp.maximum)
    not_equal = staticmethod(jnp.not_equal)
    logical_and = staticmethod(jnp.logical_and)
    stop_gradient = staticmethod(jax.lax.stop_gradient)
    minimum = staticmethod(min)
    recompute = staticmethod(jax.checkpoint)
    sigmoid = staticmethod(jax.nn.sigmoid)
    log1p = staticmethod(jnp.log1p)
    expm1 = staticmethod(jnp.expm1)
    streaming_row_losses = staticmethod(_streaming_row_losses)  # the streaming softmax path, custom_vjp

    # The fused path (Pallas): recloss.backends.jax.fused, imported on first use.
    @staticmethod
    def fused_unavailable(tensors: tuple, interpret: bool, automatic: bool) -> tuple[str, str] | None:
        from recloss.backends.jax import fused as jax_fused
        return jax_fused.unavailable(tensors, interpret, automatic)

    @staticmethod
    def fused_row_losses(*args: Any, **kwargs: Any) -> jax.Array:
        from recloss.backends.jax import fused as jax_fused
        return jax_fused.fused_row_losses(*args, **kwargs)

    @staticmethod
    def collectives(loss: str, gather: Any, option: str = "gather") -> Any:
        """The ``gather`` (or ``shard_negatives``) option's collectives over a bound mesh axis (loaded only
        when used)."""
        from recloss.backends.jax.distributed import collectives
        return collectives(loss, gather, option)

    @staticmethod
    def replicated(x: jax.Array) -> jax.Array:
        """``x`` resharded to be replicated along its leading axis where that axis is sharded over an
        ``Explicit`` mesh axis: the candidate side of a ``[rows, candidates]`` product, which explicit sharding
        would otherwise refuse (``f32[16@data, 16@data]``); an all-gather, as the ``Auto`` mode inserts."""
        sharding = getattr(jax.typeof(x), "sharding", None)
        spec = getattr(sharding, "spec", None)
        if not spec or spec[0] is None:
            return x
        return jax.sharding.reshard(x, jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(
            None, *spec[1:])))

    @staticmethod
    def concat(xs: list[jax.Array], axis: int) -> jax.Array:
        """``jnp.concatenate``. Under ``Explicit`` mesh axes it needs one sharding for every operand, while the
        blocks of a softmax row may differ (the in-batch mask built from batch-sharded ids beside the all-True
        mask of the negatives, replicated): operands are resharded to the first one sharded along an axis other
        than ``axis`` (a no-op on one device, on ``Auto`` axes and inside ``shard_map``)."""
        axis = axis % xs[0].ndim
        shardings = [getattr(jax.typeof(x), "sharding", None) for x in xs]
        target = next((s for s in shardings if _sharded_outside(s, axis)), None)
        if target is not None:
            xs = [x if s == target else jax.sharding.reshard(x, target) for x, s in zip(xs, shardings)]
        return jnp.concatenate(xs, axis)

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
    def max_one(x: jax.Array) -> jax.Array:
        """Row maxima gathered at the argmax: the gradient goes to that one entry (jnp.max splits ties)."""
        if x.shape[1] == 0:
            return jnp.full(x.shape[:1], -jnp.inf, x.dtype)
        return jnp.take_along_axis(x, jnp.argmax(x, axis=1)[:, None], axis=1)[:, 0]

    @staticmethod
    def top_k_with_indices(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
        """``lax.top_k``: equal values come out lower index first, the stable order."""
        return jax.lax.top_k(x, k)

    @staticmethod
    def cumsum(x: jax.Array) -> jax.Array:
        return jnp.cumsum(x, axis=-1)

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


def _sharded_outside(sharding: Any, axis: int) -> bool:
    """True for a sharding whose type names a mesh axis on some dimension, and none on ``axis``."""
    spec = getattr(sharding, "spec", None)
    if not spec or (axis < len(spec) and spec[axis] is not None):
        return False
    return any(entry is not None for entry in spec)


OPS = JaxOps()

#: Compiled kernels kept (of every loss together), by call signature; the cache (:data:`CACHE`) is emptied when
#: it holds this many, which frees them (JAX frees a jitted function's executables with the function).
CACHE_SIZE = 256
#: A signature is compiled once it has been called this many times eagerly: from its first call. Unlike
#: TensorFlow's, JAX's operation-by-operation execution compiles every operation for its shapes (and keeps the
#: executables): a new shape run operation by operation took about 3 times the time and 15 times the memory
#: (about 30 MiB for ``listwise_softmax_loss``) of compiling the whole kernel once.
COMPILE_AFTER = 1

CACHE = SignatureCache(CACHE_SIZE)


try:   # private; a JAX without it traces every tracer into the caller's computation, as before
    from jax._src.core import is_concrete as _IS_CONCRETE
except ImportError:   # pragma: no cover
    _IS_CONCRETE = None


def _concrete(value: Any) -> bool:
    """Whether ``value`` is not a tracer, or one over a concrete value (``jax.grad``/``vjp``/``jvp`` called
    eagerly): then a compiled kernel runs as one computation under the caller's differentiation, instead of
    operation by operation. False under ``jit`` and ``vmap``, whose tracers have no value."""
    if not isinstance(value, jax.core.Tracer):
        return True
    return _IS_CONCRETE is not None and bool(_IS_CONCRETE(value))


def compiled(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """``kernel`` called eagerly (on concrete arrays) runs as one ``jax.jit`` computation per call signature
    (forms, dtypes, sizes and the static options: see :attr:`recloss._spec.Bound.signature`) from the
    signature's first call on (:data:`COMPILE_AFTER`), so that it costs one dispatch instead of one per
    operation; the number options (temperature, margin) are traced, so a new value does not recompile. Under
    ``jax.grad``/``vjp``/``jvp`` called eagerly (tracers over concrete values) the same compiled kernel runs,
    differentiated by the caller's transformation; inside the caller's ``jit`` or ``vmap`` (tracers without
    values) the kernel is traced into their computation as usual."""

    def run(bound: Any, **arguments: Any) -> Any:
        if not all(_concrete(v) for v in arguments.values()):
            return kernel(bound, **arguments)    # inside the caller's jit or vmap: traced into it as usual
        tensors, numbers_, static = kernels.split_arguments(bound, arguments)
        key = (bound.signature, tuple(sorted(static.items())), bool(jax.config.jax_enable_x64),
               kernels.settings())
        function = CACHE.lookup(key, COMPILE_AFTER, lambda: jax.jit(
            lambda tensors, numbers_: kernel(bound, **tensors, **numbers_, **static)))
        if function is None:
            return kernel(bound, **arguments)
        try:
            return function(tensors, numbers_)
        except TypeError as error:
            # Forward mode (jax.jvp, jacfwd called eagerly) meets a custom_vjp inside the compiled kernel: run it
            # operation by operation instead, where the kernel's own paths refuse it in recloss's words or take it.
            if "custom_vjp" in str(error) and "forward-mode" in str(error):
                return kernel(bound, **arguments)
            raise
    return run


KERNELS: dict[str, Callable[..., Any]] = {name: compiled(partial(kernel, OPS))
                                          for name, kernel in kernels.KERNELS.items()}


def convert(array: np.ndarray) -> jax.Array:
    return jnp.asarray(array)


def convert_ids(loss: str, ids: dict[str, np.ndarray], framework_ids: list[str]) -> dict[str, Any]:
    """NumPy id arrays of one call as JAX arrays that compare exactly as their NumPy values do.

    With ``jax_enable_x64`` they are converted as they are. Without it JAX holds at most 32-bit integers and
    would truncate int64 ids silently (2**32 + 5 would become 5): arrays whose values all fit in int32 become
    int32; otherwise the call's id arrays are replaced together by int32 codes of their values (equal ids get
    equal codes), which needs every id array of the call to be NumPy. Ids of two dtypes that no integer dtype
    holds together are left to the validator, which refuses them.
    """
    if jax.config.jax_enable_x64 or all(v.dtype.itemsize <= 4 for v in ids.values()):
        return {name: jnp.asarray(v) for name, v in ids.items()}
    ids_dtype = None
    for v in ids.values():
        ids_dtype = v.dtype.name if ids_dtype is None else common_int_dtype(ids_dtype, v.dtype.name)
        if ids_dtype is None:
            return dict(ids)
    common = np.dtype(ids_dtype)
    int32 = np.iinfo(np.int32)
    if all(v.size == 0 or (int(v.min()) >= int32.min and int(v.max()) <= int32.max) for v in ids.values()):
        return {name: jnp.asarray(v.astype(np.int32)) for name, v in ids.items()}
    if framework_ids:
        wide = next(name for name, v in ids.items() if v.size and (int(v.min()) < int32.min or int(v.max()) > int32.max))
        raise DTypeError(f"{loss}: `{wide}` holds ids beyond int32, which JAX without jax_enable_x64 cannot hold, "
                         f"beside the JAX array `{framework_ids[0]}`; pass every id tensor as NumPy (recloss then "
                         "compares them exactly) or enable jax_enable_x64")
    values = np.concatenate([v.astype(common).ravel() for v in ids.values()])
    codes = np.unique(values, return_inverse=True)[1].astype(np.int32)
    out, at = {}, 0
    for name, v in ids.items():
        out[name] = jnp.asarray(codes[at:at + v.size].reshape(v.shape))
        at += v.size
    return out


def product_result_unit(dtype: str, device: str) -> float | None:
    """Half-precision embedding products have a float32 result in JAX (``preferred_element_type``): 0."""
    return 0.0


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
                   device: str, jit: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The backends' ``value_and_grad``; ``jit=True`` runs the whole computation under ``jax.jit`` (one
    compilation, where op by op every new shape compiles each operation)."""
    wants_x64 = any(v is not None and v.dtype == np.float64 for v in inputs.values())
    with jax.enable_x64(True) if wants_x64 else contextlib.nullcontext():
        target = jax.devices(device)[0]
        arrays = {name: None if v is None else jax.device_put(jnp.asarray(v), target) for name, v in inputs.items()}

        def total(*leaves: jax.Array) -> tuple[jax.Array, jax.Array]:
            out = fn(**{**arrays, **dict(zip(wrt, leaves))})
            return jnp.sum(out), out

        if wrt:
            step = jax.value_and_grad(total, argnums=tuple(range(len(wrt))), has_aux=True)
            (_, out), grads = (jax.jit(step) if jit else step)(*[arrays[name] for name in wrt])
        else:
            out, grads = (jax.jit(lambda: fn(**arrays)) if jit else lambda: fn(**arrays))(), ()
        as_numpy = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
        return as_numpy(out), {name: as_numpy(g) for name, g in zip(wrt, grads)}
