"""NumPy backend: the float64 references of :mod:`recloss.reference`, value only (no gradients)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from recloss.reference import REFERENCES


def _kernel(reference: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda bound, **arguments: reference(**arguments)


KERNELS: dict[str, Callable[..., Any]] = {name: _kernel(f) for name, f in REFERENCES.items()}


def convert(array: np.ndarray) -> np.ndarray:
    return array


def tracing() -> bool:
    return False


def concrete(x: Any) -> np.ndarray:
    return np.asarray(x)


def devices() -> list[str]:
    return ["cpu"]
