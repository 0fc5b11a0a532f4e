"""What the float64 references share: conversion, softplus, empty-safe means, and the
reduction with its non-finite rule. Written for reading, not speed; nothing here is shared with the kernels."""

from __future__ import annotations

from typing import Any

import numpy as np


def f64(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, dtype=np.float64)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), computed without overflow."""
    return np.logaddexp(0.0, x)


def mean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean that is 0 over an empty axis."""
    count = x.size if axis is None else x.shape[axis]
    return np.sum(x, axis=axis) / max(count, 1)


def reduce(rows: np.ndarray, sample_weight: Any, reduction: str, inputs: tuple = ()) -> np.ndarray:
    """Weights and reduction; NaN if any of ``inputs`` holds a NaN or an infinity (the documented rule)."""
    poison = np.nan if any(x is not None and not np.all(np.isfinite(x)) for x in inputs) else 0.0
    weights = np.ones_like(rows) if sample_weight is None else f64(sample_weight)
    weighted = rows * weights
    if reduction == "none":
        return weighted + poison
    if reduction == "sum":
        return np.asarray(np.sum(weighted) + poison)
    total_weight = np.sum(weights)
    return np.asarray((np.sum(weighted) / total_weight if total_weight > 0 else 0.0) + poison)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
