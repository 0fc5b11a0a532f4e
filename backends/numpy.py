"""NumPy backend: the float64 references of :mod:`recloss.reference`, value only (no gradients)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from recloss._validate import GATHER_ENGINES, gather_error, gather_requested
from recloss.reference import REFERENCES


def _kernel(reference: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def kernel(bound: Any, **arguments: Any) -> np.ndarray:
        for option in ("gather", "shard_negatives"):
            value = gather_requested(arguments.get(option))
            if value is not None:
                raise gather_error(bound.spec.name, value, GATHER_ENGINES, "the numpy backend, one process",
                                   "pass torch, JAX or TensorFlow tensors, or gather=None", option)
        return reference(**arguments)
    return kernel


KERNELS: dict[str, Callable[..., Any]] = {name: _kernel(f) for name, f in REFERENCES.items()}


def convert(array: np.ndarray) -> np.ndarray:
    return array


def tracing() -> bool:
    return False


def concrete(x: Any) -> np.ndarray:
    return np.asarray(x)


def devices() -> list[str]:
    return ["cpu"]
