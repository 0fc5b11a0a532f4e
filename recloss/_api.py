"""Builds each public loss function from its spec: signature, docstring, and the path of one call.

``resolve backend -> convert NumPy inputs -> validate (shared) -> backend kernel``.
The functions are generated with real Python signatures (as ``dataclasses`` does), so ``help()``,
``inspect.signature`` and editors show the exact parameters, and binding costs nothing.
"""

from __future__ import annotations

import textwrap
from typing import Any, Callable

import numpy as np

from recloss._convert import convert_numpy
from recloss._dispatch import load_backend, resolve_backend
from recloss._spec import LossSpec, Option
from recloss._validate import is_tensor_like, validate

Tensor = Any  #: a tf.Tensor, torch.Tensor, jax.Array or np.ndarray


def call(spec: LossSpec, backend: str | None, values: dict[str, Any]) -> Any:
    """Run one loss call: dispatch, convert, validate, compute."""
    tensors = {name: _as_array(values[name]) for name in spec.tensor_names}
    options = {option.name: values[option.name] for option in spec.options}
    candidates = list(tensors.values()) + [v for v in options.values() if is_tensor_like(v)]
    name = resolve_backend(spec.name, backend, candidates)
    module = load_backend(name)
    if name != "numpy":
        tensors = convert_numpy(spec, module, tensors)
    bound = validate(spec, tensors, options, module.concrete, not module.tracing())
    if bound.deferred:    # sizes unknown at trace time (TensorFlow graphs): compare them when they are known
        tensors = module.check_deferred(bound, tensors)
    return module.KERNELS[spec.name](bound, **tensors, **options)


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
