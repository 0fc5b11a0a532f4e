"""Float64 NumPy references: the oracle every backend is compared with (the ``"numpy"`` backend).

Written to be obviously right rather than fast, one module per family of losses; nothing here is shared with
the kernels in :mod:`recloss.kernels`. Every function takes the public arguments (NumPy arrays, ``backend``
excluded) and returns a 0-d float64 array, or the ``[B]`` vector for ``reduction="none"``.
"""

from __future__ import annotations

from typing import Any, Callable

from recloss.reference import pairwise, softmax
from recloss.reference.softmax import graphlearn_softmax_cross_entropy

REFERENCES: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    pairwise.sigmoid_cross_entropy_loss, softmax.softmax_loss, softmax.sampled_softmax_loss,
    softmax.unsupervised_softmax_cross_entropy_loss, softmax.info_nce_loss, pairwise.bpr_loss, pairwise.hinge_loss,
    pairwise.triplet_margin_loss)}

__all__ = ["REFERENCES", "graphlearn_softmax_cross_entropy", "pairwise", "softmax"]
