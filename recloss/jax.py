"""JAX forms: :mod:`recloss.jax.metrics`, the retrieval metrics as ``(total, count)`` pairs to sum over batches and
devices (``jax.lax.psum``). The losses themselves take JAX arrays directly (``recloss.sampled_softmax_loss`` ...).

Importing this module imports JAX; ``import recloss`` does not.
"""

from __future__ import annotations

from recloss import jax_metrics as metrics

__all__ = ["metrics"]
