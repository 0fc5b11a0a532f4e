"""Small helpers shared by the tests: build framework tensors and read results back as NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np

from recloss._dispatch import load_backend


def to_backend(backend: str, value: Any) -> Any:
    """A NumPy array (or None) as a tensor of ``backend``'s framework."""
    return None if value is None else load_backend(backend).convert(np.asarray(value))


def to_numpy(value: Any) -> np.ndarray:
    """A framework tensor as a float64 NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)
