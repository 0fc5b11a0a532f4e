"""Input checks of :mod:`recloss.sampling` and of the estimator and queue objects, shared by every backend so
that every backend raises the same words, in the validator's format: ``"<name>: `<argument>` must <what is
expected>; got <what was received>"``.

Only ``.shape`` and ``.dtype`` are read, plus the values of ids and counts where the backend can see them
without tracing (eager calls); inside ``jax.jit``, ``tf.function`` or ``torch.compile`` the value checks are
skipped.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

from recloss._dispatch import framework_of
from recloss._spec import FLOAT, INT, kind_of_dtype
from recloss._validate import _KIND_TEXT, _describe, dtype_name, is_gather_value, is_number, is_tensor_like, shape_of
from recloss.errors import BackendError, DTypeError, OptionError, ShapeError

#: The largest number of buckets times hash functions (flat indices are int32 in 32-bit JAX).
MAX_CELLS = 2 ** 31 - 1
#: The most hash functions (one fixed seed each).
MAX_HASHES = 8


def is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_count(name: str, argument: str, value: Any, least: int = 1, most: int | None = None) -> int:
    """An integer option ``least <= value (<= most)``; :class:`OptionError` otherwise."""
    if not is_integer(value) or value < least or (most is not None and value > most):
        bound = f">= {least}" if most is None else f"in [{least}, {most}]"
        raise OptionError(f"{name}: `{argument}` must be an integer {bound}; got {value!r}")
    return int(value)


def check_bool(name: str, argument: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(f"{name}: `{argument}` must be True or False; got {value!r}")
    return bool(value)


def check_number(name: str, argument: str, value: Any, low: float, high: float | None = None,
                 low_open: bool = False) -> float:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, (np.ndarray, np.generic)) and np.shape(value) == () and np.asarray(value).dtype.kind == "f":
        value = float(value)
    bad = not is_number(value) or not math.isfinite(value) or value < low or (low_open and value == low) or (
        high is not None and value > high)
    if bad:
        interval = ("(" if low_open else "[") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}]")
        raise OptionError(f"{name}: `{argument}` must be a finite number in {interval}; got {value!r}")
    return float(value)


def check_ids(name: str, argument: str, x: Any, shape_text: str = "[B]") -> None:
    """An integer tensor of rank 1."""
    if not is_tensor_like(x):
        raise DTypeError(f"{name}: `{argument}` must be {_KIND_TEXT[INT]} of shape {shape_text}; got "
                         f"{type(x).__name__}")
    dtype = dtype_name(x.dtype)
    if kind_of_dtype(dtype) != INT:
        raise DTypeError(f"{name}: `{argument}` must be {_KIND_TEXT[INT]}; got {dtype}")
    shape = shape_of(x)
    if shape is not None and len(shape) != 1:
        raise ShapeError(f"{name}: `{argument}` must have shape {shape_text}; got {shape}")


def check_floats(name: str, argument: str, x: Any, shape_text: str, rank: int,
                 dims: dict[int, tuple[Any, str]] | None = None) -> None:
    """A floating tensor of ``rank``; ``dims`` maps an axis to ``(size, "D=64 from the queue")``."""
    dims = dims or {}
    if not is_tensor_like(x):
        raise DTypeError(f"{name}: `{argument}` must be {_KIND_TEXT[FLOAT]} of shape {shape_text}; got "
                         f"{type(x).__name__}")
    dtype = dtype_name(x.dtype)
    if kind_of_dtype(dtype) != FLOAT:
        raise DTypeError(f"{name}: `{argument}` must be {_KIND_TEXT[FLOAT]}; got {dtype}")
    shape = shape_of(x)
    if shape is None:
        return
    bad = len(shape) != rank or any(shape[axis] is not None and size is not None and shape[axis] != size
                                    for axis, (size, _) in dims.items())
    if bad:
        known = [f"{where}" for axis, (size, where) in dims.items() if size is not None]
        with_known = f" with {', '.join(known)}" if known else ""
        raise ShapeError(f"{name}: `{argument}` must have shape {shape_text}{with_known}; got {shape}")


def check_id_range(name: str, argument: str, x: Any, num_items: int, concrete: Callable[[Any], Any]) -> None:
    """Ids in ``[0, num_items)``, where their values are known."""
    values = concrete(x)
    if values is None or not np.size(values):
        return
    values = np.asarray(values)
    bad = (values < 0) | (values >= num_items)
    if np.any(bad):
        raise OptionError(f"{name}: `{argument}` must hold ids in [0, num_items) = [0, {num_items}); got "
                          f"{int(values[bad][0])}")


def check_counts(name: str, counts: Any, concrete: Callable[[Any], Any]) -> np.ndarray | None:
    """``counts`` ``[num_items]``, integer or floating, finite, >= 0, not all 0; its values if known."""
    if not is_tensor_like(counts):
        raise DTypeError(f"{name}: `counts` must be a floating or integer tensor of shape [num_items]; got "
                         f"{type(counts).__name__}")
    dtype = dtype_name(counts.dtype)
    if kind_of_dtype(dtype) not in (FLOAT, INT):
        raise DTypeError(f"{name}: `counts` must be a floating or integer tensor of shape [num_items]; got {dtype}")
    shape = shape_of(counts)
    if shape is not None and (len(shape) != 1 or shape[0] == 0):
        raise ShapeError(f"{name}: `counts` must have shape [num_items] with num_items >= 1; got {shape}")
    values = concrete(counts)
    if values is None:
        return None
    values = np.asarray(values, np.float64)
    good = np.isfinite(values) & (values >= 0)
    if not np.all(good):
        raise OptionError(f"{name}: `counts` must hold finite values >= 0, not all 0; got {float(values[~good][0])!r}")
    if not np.any(values > 0):
        raise OptionError(f"{name}: `counts` must hold finite values >= 0, not all 0; got all 0")
    return values


def check_seed(name: str, seed: Any, backend: str, is_random_state: Callable[[Any], bool]) -> None:
    """None (the framework's global generator), an int, or the framework's own random state."""
    expected = {"torch": "a torch.Generator", "jax": "a JAX key", "tensorflow": "a tf.random.Generator",
                "numpy": "a numpy.random.Generator"}[backend]
    if backend == "jax" and seed is None:
        raise OptionError(f"{name}: `seed` must be an int or a JAX key on the jax backend (JAX has no global "
                          "random state); got None")
    if seed is None or is_integer(seed) or is_random_state(seed):
        return
    raise OptionError(f"{name}: `seed` must be None, an int or {expected} on the {backend} backend; got "
                      f"{_describe_object(seed)}")


def check_framework(name: str, argument: str, x: Any, framework: str) -> None:
    """``x`` is a tensor of ``framework`` (the framework of the state it goes with) or a NumPy array."""
    found = framework_of(x)
    if found in (framework, "numpy"):
        return
    shown = "an object recloss cannot place" if found is None else f"a {found} tensor"
    raise BackendError(f"{name}: `{argument}` must be a {framework} tensor (the framework of the state) or a "
                       f"NumPy array; got {shown} ({type(x).__module__}.{type(x).__name__}); convert it first")


def _describe_object(value: Any) -> str:
    if is_tensor_like(value):
        return f"a {dtype_name(value.dtype)} tensor of shape {shape_of(value)}"
    return repr(value) if isinstance(value, (str, float, bool, type(None))) else f"a {type(value).__name__}"


def check_gather(name: str, value: Any) -> None:
    """The ``gather`` option's type, in the losses' words (where it can work is checked where the call runs)."""
    if not is_gather_value(value):
        raise OptionError(f"{name}: `gather` must be None, False, True, a mesh axis name (a str or a tuple of str) "
                          f"or a torch.distributed.ProcessGroup; got {_describe(value)}")


def check_power_of_two(name: str, argument: str, value: Any, most: int) -> float:
    """``2**-k`` for an integer ``0 <= k <= most`` (given as a number, e.g. ``1 / 128`` or ``2**-7``)."""
    if isinstance(value, (np.ndarray, np.generic)) and np.shape(value) == ():
        value = value.item()
    if is_number(value) and math.isfinite(value) and 0 < value <= 1:
        mantissa, exponent = math.frexp(float(value))
        if mantissa == 0.5 and 1 - exponent <= most:
            return float(value)
    raise OptionError(f"{name}: `{argument}` must be a power of two in [2**-{most}, 1] (1/2, 1/4, ..., 1/128, ...); "
                      f"got {value!r}")
