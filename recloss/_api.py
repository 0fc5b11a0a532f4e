"""Builds each public loss function from its spec: signature, docstring, and the path of one call.

``resolve backend -> convert NumPy inputs -> validate (shared) -> backend kernel``.
The functions are generated with real Python signatures (as ``dataclasses`` does), so ``help()``,
``inspect.signature`` and editors show the exact parameters, and binding costs nothing.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any, Callable

import numpy as np

from recloss._convert import convert_numpy
from recloss._dispatch import framework_of, load_backend, resolve_backend
from recloss._spec import LossSpec, Option
from recloss._validate import check_values, is_tensor_like, shape_of, validate

Tensor = Any  #: a tf.Tensor, torch.Tensor, jax.Array or np.ndarray


def call(spec: LossSpec, backend: str | None, values: dict[str, Any]) -> Any:
    """Run one loss call: dispatch, convert, validate, compute.

    A call with the signature of the previous call of the same loss (the same backend argument, tensor types,
    shapes and dtypes, and option values; no NumPy input, nothing traced) reuses what that call resolved:
    the backend and the validated :class:`~recloss._spec.Bound`; only the value checks run again.
    """
    recent = None if _torch_compiling() else _RECENT.get(spec.name)
    if recent is not None and _repeats(recent, backend, values):
        _, module, bound, checked, direct = recent
        for arg in checked:
            if values[arg.name] is not None:
                check_values(spec, arg, values, module.concrete)
        if direct is not None:
            loss = direct(values)
            if loss is not None:
                return loss
        return module.KERNELS[spec.name](bound, **values)
    tensors = {name: _as_array(values[name]) for name in spec.tensor_names}
    options = {option.name: values[option.name] for option in spec.options}
    candidates = list(tensors.values()) + [v for v in options.values() if is_tensor_like(v)]
    name = resolve_backend(spec.name, backend, candidates)
    module = load_backend(name)
    if name != "numpy":
        tensors = convert_numpy(spec, module, tensors)
    tracing = module.tracing()
    bound = validate(spec, tensors, options, module.concrete, not tracing)
    if bound.deferred:    # sizes unknown at trace time (TensorFlow graphs): compare them when they are known
        tensors = module.check_deferred(bound, tensors)
    elif not tracing and name != "numpy":
        _remember(spec, backend, values, module, bound)
    return module.KERNELS[spec.name](bound, **tensors, **options)


#: Per loss, the signature of its last framework call and what it resolved: ``(signature, module, bound,
#: arguments whose values are checked on every call, direct)``, where ``direct(values)`` is the backend's path
#: for this signature that skips the kernels' per-call routing (``module.repeat_kernel``; None where the
#: backend has none: it returns the loss, or None to take the kernel); see :func:`call`.
_RECENT: dict[str, tuple] = {}


def _torch_compiling() -> bool:
    """Whether torch.compile is tracing (the kept signatures are Python state that dynamo would guard on)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.compiler.is_compiling()


def _remember(spec: LossSpec, backend: str | None, values: dict[str, Any], module: Any, bound: Any) -> None:
    """Keep this call's signature, in the order of ``values``: ``(type, shape, dtype)`` per tensor, None where
    absent, ``(type, value)`` per option; nothing if an argument holds something else (a NumPy array, a list,
    a tensor option), which the full path converts or checks."""
    tensor_names = spec.tensor_names
    signature: list[Any] = [backend]
    for name, value in values.items():
        if name in tensor_names:
            if value is None:
                signature.append(None)
                continue
            shape = shape_of(value) if is_tensor_like(value) else None
            if framework_of(value) in (None, "numpy") or shape is None:
                return   # (an unknown rank too: the full path checks nothing of it, and that is its answer)
            signature.append((type(value), value.shape, value.dtype))   # (the framework's own shape compares)
        elif is_tensor_like(value):
            return
        else:
            signature.append((type(value), value))
    checked = tuple(arg for arg in spec.args if arg.nonnegative)
    direct = getattr(module, "repeat_kernel", None)
    _RECENT[spec.name] = (tuple(signature), module, bound, checked, direct and direct(spec.name, bound))


def _repeats(recent: tuple, backend: str | None, values: dict[str, Any]) -> bool:
    """Whether ``values`` (with ``backend``) have the signature kept in ``recent``."""
    signature = recent[0]
    if signature[0] != backend:
        return False
    for expected, value in zip(signature[1:], values.values()):
        if expected is None:
            if value is not None:
                return False
        elif len(expected) == 3:   # a tensor
            if type(value) is not expected[0] or value.shape != expected[1] or value.dtype != expected[2]:
                return False
        elif value is not expected[1] and (type(value) is not expected[0] or value != expected[1]):
            return False   # (an option left at its default is the same object every call)
    return True


def _as_array(x: Any) -> Any:
    if x is None or is_tensor_like(x):
        return x
    if isinstance(x, (list, tuple, int, float)):
        return np.asarray(x)
    return x


#: The docstrings' "Raises" section: the same words on every backend (the shared validator writes them).
RAISES = (
    "    ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.",
    "    DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).",
    "    OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.",
    "    BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework "
    "than ``backend``.",
    "    BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are "
    "``ReclossError``, a ``ValueError``).",
)


def _docstring(spec: LossSpec) -> str:
    lines = [spec.summary, "", "Math:", textwrap.indent(textwrap.fill(spec.math, 100), "    "), "",
             "Args:"]
    for arg in spec.args:
        optional = "" if arg.required else ", optional"
        lines.append(f"    {arg.name}: ``{arg.shape_text}`` {arg.kind}{optional}. {arg.doc}")
    for option in spec.options:
        lines.append(f"    {option.name}: {option_default_text(option)}. {option.doc}")
    lines.append('    backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, '
                 "value only); default: the tensors' framework.")
    lines += ["", "Returns:", f"    {spec.returns}", "", "Raises:", *RAISES]
    if spec.example:
        lines += ["", "Example:", f"    >>> {spec.example}"]
    if spec.references:
        lines += ["", "References:"] + [f"    - {ref}" for ref in spec.references]
    if spec.notes:
        lines += ["", spec.notes]
    return "\n".join(lines)


def option_default_text(option: Option) -> str:
    """``default ``1.0````, or ``required`` for an option without a default (docstrings)."""
    return "required" if option.required else f"default ``{option.default!r}``"


def build(spec: LossSpec) -> Callable[..., Any]:
    """The public function for ``spec``: positional tensors, keyword-only options, ``backend`` last."""
    params: list[str] = []
    annotations: dict[str, Any] = {"backend": "str | None", "return": "Tensor"}
    names: list[str] = []
    for name in spec.positional:
        names.append(name)
        params.append(_parameter(spec, name, annotations))
    params.append("*")
    for name in spec.keyword_order:
        names.append(name)
        params.append(_parameter(spec, name, annotations))
    params.append("backend=None")
    body = ", ".join(f"{n!r}: {n}" for n in names)
    source = (f"def {spec.name}({', '.join(params)}):\n"
              f"    return _call(_spec, backend, {{{body}}})\n")
    namespace: dict[str, Any] = {"_call": call, "_spec": spec}
    # No "__name__" in the globals: torch.compile would look `_call` up in the module of that name.
    exec(source, dict(namespace), namespace)  # noqa: S102 - generated from the spec
    function = namespace[spec.name]
    function.__module__ = "recloss"
    function.__qualname__ = spec.name
    function.__doc__ = _docstring(spec)
    function.__annotations__ = annotations
    function.spec = spec
    return function


def _parameter(spec: LossSpec, name: str, annotations: dict[str, Any]) -> str:
    if name in spec.tensor_names:
        arg = spec.arg(name)
        annotations[name] = "Tensor" if arg.required else "Tensor | None"
        return name if arg.required else f"{name}=None"
    option = spec.option(name)
    annotations[name] = option.annotation + (" | Tensor" if option.tensor_ok else "")
    return name if option.required else f"{name}={option.default!r}"
