"""Spec-driven input checks, shared by every backend so that every backend raises the same words.

Only ``.shape`` and ``.dtype`` of the tensors are read (plus the values of ``nonnegative`` arguments where
the backend can see them without tracing), so validation works on symbolic tensors: a dimension that is
unknown at trace time (``None``) matches anything, and a tensor of unknown rank is not checked.
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Callable, Mapping

import numpy as np

from recloss._spec import (BOOL, FLOAT, FLOAT_DTYPES, INT, INT_DTYPES, REQUIRED, Bound, LossSpec, Option,
                           common_int_dtype, format_shape, kind_of_dtype)
from recloss.errors import DTypeError, OptionError, ShapeError

_KIND_TEXT = {
    FLOAT: "a floating tensor (" + ", ".join(FLOAT_DTYPES[:-1]) + " or " + FLOAT_DTYPES[-1] + ")",
    INT: "an integer tensor (" + ", ".join(INT_DTYPES) + ")",
    BOOL: "a boolean tensor",
}


def dtype_name(dtype: Any) -> str:
    """A framework-free name for a dtype: ``"float32"`` for ``np.float32``, ``tf.float32`` and ``torch.float32``."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    return str(dtype).removeprefix("torch.")


def shape_of(x: Any) -> tuple[Any, ...] | None:
    """The shape as a tuple (``None`` for a dimension unknown at trace time), or None if the rank is unknown."""
    try:
        return tuple(x.shape)
    except (TypeError, ValueError):
        return None


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_tensor_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _describe(value: Any) -> str:
    if is_tensor_like(value):
        return f"a {dtype_name(value.dtype)} tensor of shape {shape_of(value)}"
    return repr(value)


def check_option(loss: str, option: Option, value: Any, concrete: Callable[[Any], Any]) -> None:
    """Raise :class:`OptionError` if ``value`` breaks the option's rule."""
    rule = option.rule
    name = f"{loss}: `{option.name}`"
    if value is REQUIRED:
        raise OptionError(f"{name} is required (it has no default); got none")
    if rule in NUMBER_RULES:
        expected = NUMBER_RULES[rule]
        if option.tensor_ok and is_tensor_like(value):
            if shape_of(value) != () or kind_of_dtype(dtype_name(value.dtype)) != FLOAT:
                raise OptionError(f"{name} must be {expected} or a 0-d floating tensor; got {_describe(value)}")
            # NumPy values are always concrete; framework tensors only outside tracing.
            number = value if isinstance(value, (np.ndarray, np.generic)) else concrete(value)
            if number is None:
                return
            value = float(number)
        elif isinstance(value, (np.ndarray, np.generic)) and value.shape == () and value.dtype.kind == "f":
            value = float(value)
        if not is_number(value):
            raise OptionError(f"{name} must be {expected}; got {_describe(value)}")
        if not math.isfinite(value) or not _in_range(rule, value):
            raise OptionError(f"{name} must be {expected}; got {value!r}")
    elif rule == "choice":
        if not (isinstance(value, str) or value is None) or value not in option.choices:
            allowed = ", ".join(repr(c) for c in option.choices)
            raise OptionError(f"{name} must be one of {allowed}; got {value!r}")
    elif rule == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise OptionError(f"{name} must be True or False; got {value!r}")
    elif rule == "optional_bool":
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise OptionError(f"{name} must be None, True or False; got {value!r}")
    elif rule == "optional_count":
        if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_))
                                  or value < 1):
            raise OptionError(f"{name} must be None or an integer >= 1; got {value!r}")
    elif rule == "item_count":
        if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < 2:
            raise OptionError(f"{name} must be an integer >= 2; got {value!r}")
    elif rule == "gather":
        if not is_gather_value(value):
            raise OptionError(f"{name} must be None, False, True, a mesh axis name (a str or a tuple of str) or a "
                              f"torch.distributed.ProcessGroup; got {_describe(value)}")
    else:  # pragma: no cover - a bad spec, caught by the catalogue tests
        raise AssertionError(f"unknown option rule {rule!r}")


#: The number rules and how their errors state them.
NUMBER_RULES = {"positive": "a finite number > 0", "finite": "a finite number",
                 "nonnegative": "a finite number >= 0", "fraction": "a finite number in [0, 1)",
                 "unit": "a finite number in [0, 1]"}


def _in_range(rule: str, value: float) -> bool:
    if rule == "positive":
        return value > 0
    if rule == "nonnegative":
        return value >= 0
    if rule == "fraction":
        return 0 <= value < 1
    if rule == "unit":
        return 0 <= value <= 1
    return True


def is_gather_value(value: Any) -> bool:
    """Whether ``value`` has a type the ``gather`` option accepts (which backend it fits is checked where the
    call runs, by :func:`gather_error`'s callers): None, a bool, a non-empty str, a non-empty tuple of
    non-empty str, or a ``torch.distributed.ProcessGroup`` (looked up without importing torch)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, tuple):
        return bool(value) and all(isinstance(name, str) and name for name in value)
    group = getattr(sys.modules.get("torch.distributed"), "ProcessGroup", None)
    return isinstance(group, type) and isinstance(value, group)


def gather_requested(value: Any) -> Any:
    """A valid ``gather`` value with its meaning made plain: None for the local batch (None, False, a NumPy
    False), True for True (or a NumPy True), else the value itself (an axis name, a process group)."""
    if isinstance(value, (bool, np.bool_)):
        return True if value else None
    return value


#: What a ``gather`` value needs where no framework's distributed engine is at hand (the numpy backend).
GATHER_ENGINES = "a framework's distributed engine (torch.distributed, a JAX mesh axis or tf.distribute)"


def gather_error(loss: str, value: Any, needs: str, got: str, todo: str, option: str = "gather") -> OptionError:
    """The error of a ``gather`` (or ``shard_negatives``: ``option``) value that cannot work where the call runs,
    one structure on every backend: ``"<loss>: `<option>=<value>` needs <needs>; got <got> (<todo>)"``. Each
    backend's distributed hook decides which condition holds; the words are assembled here."""
    shown = "a ProcessGroup" if type(value).__name__.startswith("ProcessGroup") else repr(value)
    if option != "gather":
        todo = todo.replace("gather=", f"{option}=")
    return OptionError(f"{loss}: `{option}={shown}` needs {needs}; got {got} ({todo})")


def _match(shape: tuple[Any, ...], declared: tuple[str, ...], dims: Mapping[str, tuple[Any, str]]) -> dict | None:
    """New dimension bindings if ``shape`` fits ``declared`` given ``dims``, else None."""
    if len(shape) != len(declared):
        return None
    new: dict[str, tuple[Any, str]] = {}
    for size, dim in zip(shape, declared):
        known = new.get(dim) or dims.get(dim)
        if known is not None and known[0] is not None and size is not None:
            if known[0] != size:
                return None
        if known is None or known[0] is None:
            new[dim] = (size, "")
    return new


#: Bounds of calls already validated, by :func:`_signature`; cleared when it reaches ``_CACHE_SIZE``.
_CACHE: dict[tuple, Bound] = {}
_CACHE_SIZE = 1024


def validate(spec: LossSpec, tensors: Mapping[str, Any], options: Mapping[str, Any],
             concrete: Callable[[Any], Any], cacheable: bool = True) -> Bound:
    """Check one call against its spec and return what was learnt (shape forms, dimension sizes, dtype).

    ``concrete(x)`` returns the values of a tensor as a NumPy array when they are known without tracing,
    else None; it is used for value checks only. A call whose tensor types, shapes, dtypes and option
    values were validated before reuses that result (the value checks still run), unless ``cacheable`` is
    False (the backend is tracing with symbolic sizes).
    """
    key = _signature(spec, tensors, options) if cacheable else None
    bound = None if key is None else _CACHE.get(key)
    if bound is not None:
        for arg in spec.args:
            if arg.nonnegative and tensors.get(arg.name) is not None:
                check_values(spec, arg, tensors, concrete)
        return bound
    bound = _validate(spec, tensors, options, concrete)
    if key is not None:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[key] = bound
    return bound


def _signature(spec: LossSpec, tensors: Mapping[str, Any], options: Mapping[str, Any]) -> tuple | None:
    """Everything validation reads but values, as a hashable key; None where caching does not apply (an
    option given as a tensor, a non-tensor argument, an unhashable size)."""
    parts: list[Any] = [spec.name]
    for arg in spec.args:
        x = tensors.get(arg.name)
        if x is None:
            parts.append(None)
            continue
        if not is_tensor_like(x):
            return None
        parts.append((type(x), shape_of(x), x.dtype))
    for option in spec.options:
        value = options[option.name]
        if is_tensor_like(value):
            return None
        parts.append((type(value), value))
    key = tuple(parts)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def check_values(spec: LossSpec, arg: Any, tensors: Mapping[str, Any], concrete: Callable[[Any], Any]) -> None:
    """A ``nonnegative`` argument holds finite values >= 0 (and <= ``at_most``), where its mask is True."""
    values = concrete(tensors[arg.name])
    if values is None or not values.size:
        return
    values = np.asarray(values, dtype=np.float64)
    mask = tensors.get(arg.masked_by) if arg.masked_by else None
    if mask is not None:
        mask = concrete(mask)
        if mask is None or np.shape(mask) != values.shape:
            return  # not concrete, or a shape error the shape checks report
        values = values[np.asarray(mask, dtype=bool)]
    good = np.isfinite(values) & (values >= 0)
    if arg.at_most is not None:
        good &= values <= arg.at_most
    if not np.all(good):
        expected = "finite values >= 0" if arg.at_most is None else f"finite values in [0, {arg.at_most:g}]"
        where = f" where `{arg.masked_by}` is True" if arg.masked_by else ""
        raise OptionError(f"{spec.name}: `{arg.name}` must hold {expected}{where}; got {float(values[~good][0])!r}")


def _validate(spec: LossSpec, tensors: Mapping[str, Any], options: Mapping[str, Any],
              concrete: Callable[[Any], Any]) -> Bound:
    for option in spec.options:
        check_option(spec.name, option, options[option.name], concrete)

    dims: dict[str, tuple[Any, str]] = {}
    forms: dict[str, int] = {}
    float_dtypes: list[str] = []
    dtypes: dict[str, str] = {}
    seen: dict[str, list[tuple[str, int, Any]]] = {}   # dimension -> (argument, axis, size) where it occurs
    for arg in spec.args:
        x = tensors.get(arg.name)
        if x is None:
            if arg.required:
                raise ShapeError(f"{spec.name}: `{arg.name}` is required; got None")
            continue
        if not is_tensor_like(x):
            raise DTypeError(f"{spec.name}: `{arg.name}` must be {_KIND_TEXT[arg.kind]} of shape "
                             f"{arg.shape_text}; got {type(x).__name__}")
        name = dtype_name(x.dtype)
        if kind_of_dtype(name) != arg.kind:
            raise DTypeError(f"{spec.name}: `{arg.name}` must be {_KIND_TEXT[arg.kind]}; got {name}")
        dtypes[arg.name] = name
        if arg.kind == FLOAT:
            float_dtypes.append(name)
        shape = shape_of(x)
        if shape is None:
            continue
        for index, declared in enumerate(arg.shapes):
            new = _match(shape, declared, dims)
            if new is not None:
                forms[arg.name] = index
                dims.update({d: (size, arg.name) for d, (size, _) in new.items()})
                for axis, (dim, size) in enumerate(zip(declared, shape)):
                    seen.setdefault(dim, []).append((arg.name, axis, size))
                break
        else:
            raise ShapeError(_shape_message(spec, arg.name, arg.shapes, dims, shape))
    for arg in spec.args:
        if arg.nonnegative and tensors.get(arg.name) is not None and arg.name in forms:
            check_values(spec, arg, tensors, concrete)

    dtype = "float64" if "float64" in float_dtypes else "float32"
    deferred = tuple((dim, tuple((name, axis) for name, axis, _ in places)) for dim, places in seen.items()
                     if len(places) > 1 and any(size is None for _, _, size in places))
    bound = Bound(spec=spec, forms=forms, dims={d: size for d, (size, _) in dims.items()},
                  present=frozenset(n for n in spec.tensor_names if tensors.get(n) is not None),
                  options=options, dtype=dtype, dtypes=dtypes, deferred=deferred)
    if spec.rules is not None:
        bound = spec.rules(bound) or bound
    return bound


def deferred_message(bound: Bound, dim: str, first: str, name: str) -> str:
    """The message of a run-time check of a dimension unknown at trace time, in the shared format."""
    arg = bound.spec.arg(name)
    return (f"{bound.spec.name}: `{name}` must have shape {arg.shape_text} with {dim} from `{first}`; "
            f"the sizes of {dim} at run time (`{first}`, `{name}`) differ")


def _shape_message(spec: LossSpec, name: str, shapes: tuple[tuple[str, ...], ...],
                   dims: Mapping[str, tuple[Any, str]], got: tuple[Any, ...]) -> str:
    expected = " or ".join(format_shape(s) for s in shapes)
    mentioned = [d for s in shapes for d in s]
    known = [f"{d}={dims[d][0]} from `{dims[d][1]}`" for d in dict.fromkeys(mentioned)
             if d in dims and dims[d][0] is not None]
    with_known = f" with {', '.join(known)}" if known else ""
    return f"{spec.name}: `{name}` must have shape {expected}{with_known}; got {got}"


def check_comparable_ids(bound: Bound, a: str, b: str, bits: int = 64) -> str:
    """The integer dtype in which ids ``a`` and ``b`` are compared by value; :class:`DTypeError` if none holds
    both (``uint64`` with a signed dtype, or, at ``bits=32``, ``uint32`` with a signed one)."""
    dtype_a, dtype_b = bound.dtypes[a], bound.dtypes[b]
    common = common_int_dtype(dtype_a, dtype_b, bits)
    if common is None:
        where = "" if bits == 64 else " in 32-bit JAX (enable jax_enable_x64, or pass the ids as NumPy arrays)"
        fail(bound, f"`{a}` and `{b}` are compared by value, which needs an integer dtype holding both{where}; "
                    f"got {dtype_a} and {dtype_b} (convert them to one dtype)", DTypeError)
    return common


def fail(bound: Bound, message: str, error: type[Exception] = OptionError) -> None:
    """Raise a cross-argument error in the shared format, ``"<loss>: <message>"``."""
    raise error(f"{bound.spec.name}: {message}")
