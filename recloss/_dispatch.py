"""Backend registry, backend inference from tensor types, and lazy loading of backend modules.

No framework is imported to find out whether a tensor belongs to it: a tensor of a framework that was
never imported cannot exist, so the framework's base class is looked up in ``sys.modules`` only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Iterable

import numpy as np

from recloss.errors import BackendError, BackendUnavailableError

#: Canonical backend name -> (module implementing it, top-level framework module, pip extra).
BACKENDS: dict[str, tuple[str, str, str]] = {
    "tensorflow": ("recloss.backends.tensorflow", "tensorflow", "tensorflow"),
    "torch": ("recloss.backends.torch", "torch", "torch"),
    "jax": ("recloss.backends.jax", "jax", "jax"),
    "numpy": ("recloss.backends.numpy", "numpy", ""),
}
ALIASES = {"tf": "tensorflow", "pytorch": "torch", "np": "numpy"}
FRAMEWORK_BACKENDS = ("tensorflow", "torch", "jax")

# Where each framework keeps its tensor classes, looked up only once the framework is imported.
_TENSOR_CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    "torch": (("torch", "Tensor"),),
    "jax": (("jax", "Array"),),
    "tensorflow": (("tensorflow", "Tensor"), ("tensorflow", "Variable")),
}


def canonical_name(name: str) -> str:
    """``"tf"`` -> ``"tensorflow"``; raises :class:`BackendError` for an unknown name."""
    if not isinstance(name, str):
        raise BackendError(f"backend must be a string, one of {_known()}; got {name!r}")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; expected one of {_known()}")
    return key


def _known() -> str:
    names = list(BACKENDS) + [f"{alias} (= {target})" for alias, target in ALIASES.items()]
    return ", ".join(repr(n) if "(" not in n else n for n in names)


def available_backends() -> list[str]:
    """The backends whose framework is installed (without importing it), in the order of ``BACKENDS``."""
    return [name for name, (_, framework, _) in BACKENDS.items()
            if name == "numpy" or importlib.util.find_spec(framework) is not None]


_LOADED: dict[str, ModuleType] = {}


def _import(module_name: str) -> ModuleType:
    """Import statements rather than ``importlib``: torch.compile(fullgraph=True) follows an import statement
    (the first call of a loss may happen while compiling) but refuses ``importlib.import_module``."""
    if module_name == "recloss.backends.torch":
        from recloss.backends import torch as module
    elif module_name == "recloss.backends.jax":
        from recloss.backends import jax as module
    elif module_name == "recloss.backends.tensorflow":
        from recloss.backends import tensorflow as module
    else:
        module = importlib.import_module(module_name)
    return module


def load_backend(name: str) -> ModuleType:
    """Import the backend module for ``name`` (importing its framework), or raise BackendUnavailableError."""
    name = canonical_name(name)
    module_name, framework, extra = BACKENDS[name]
    loaded = _LOADED.get(module_name)
    if loaded is not None:  # a plain dict lookup: no import machinery under torch.compile / tracing
        return loaded
    try:
        _LOADED[module_name] = _import(module_name)
        return _LOADED[module_name]
    except ImportError as error:
        if importlib.util.find_spec(framework) is not None and framework not in str(error):
            raise
        raise BackendUnavailableError(
            f"backend {name!r} needs {framework}, which is not installed; install it with: pip install "
            f'{framework} (or, in a recloss checkout: pip install -e ".[{extra}]")') from error


_TYPE_CACHE: dict[type, str | None] = {}


def _framework_of_type(cls: type) -> str | None:
    """The framework a tensor type belongs to; ``"numpy"`` for NumPy arrays and scalars; None if unknown.

    Cached per type in a plain dict (torch.compile traces a dict lookup, not ``functools.lru_cache``).
    Only frameworks that are already imported are consulted.
    """
    if cls in _TYPE_CACHE:
        return _TYPE_CACHE[cls]
    _TYPE_CACHE[cls] = framework = _find_framework(cls)
    return framework


def _find_framework(cls: type) -> str | None:
    if issubclass(cls, (np.ndarray, np.generic)):
        return "numpy"
    for backend, places in _TENSOR_CLASSES.items():
        for module_name, class_name in places:
            module = sys.modules.get(module_name)
            base = getattr(module, class_name, None) if module is not None else None
            if isinstance(base, type) and issubclass(cls, base):
                return backend
    # Tracers that are instances of jax.Array only by a custom isinstance check, wherever JAX keeps them.
    return _FRAMEWORK_OF_MODULE.get(cls.__module__.split(".")[0])


_FRAMEWORK_OF_MODULE = {"jax": "jax", "jaxlib": "jax", "torch": "torch", "tensorflow": "tensorflow"}


def framework_of(x: Any) -> str | None:
    """``"torch"``, ``"jax"``, ``"tensorflow"``, ``"numpy"`` or None for a value recloss cannot place."""
    return _framework_of_type(type(x))


def resolve_backend(loss: str, backend: str | None, tensors: Iterable[Any]) -> str:
    """Pick the backend of one call: the explicit name, else the tensors' framework, else the default.

    Tensors of two frameworks, or a framework tensor passed with another explicit backend, are an error:
    converting silently would cut the gradient.
    """
    frameworks: dict[str, str] = {}
    for x in tensors:
        if x is None:
            continue
        framework = framework_of(x)
        if framework is None:
            raise BackendError(f"{loss}: cannot tell which framework a {type(x).__module__}.{type(x).__name__} "
                               "belongs to; pass tensors of TensorFlow, PyTorch, JAX or NumPy")
        if framework != "numpy":
            frameworks.setdefault(framework, f"{type(x).__module__}.{type(x).__name__}")
    if len(frameworks) > 1:
        found = ", ".join(f"{fw} ({cls})" for fw, cls in frameworks.items())
        raise BackendError(f"{loss}: tensors of several frameworks in one call: {found}; "
                           "convert them to one framework first")
    if backend is not None:
        name = canonical_name(backend)
        if frameworks and name not in frameworks:
            (framework, cls), = frameworks.items()
            raise BackendError(f"{loss}: backend={backend!r} but got a {framework} tensor ({cls}); "
                               f"pass backend={framework!r} or convert the tensor")
        return name
    if frameworks:
        return next(iter(frameworks))
    default = os.environ.get("RECLOSS_BACKEND")
    return canonical_name(default) if default else "numpy"
