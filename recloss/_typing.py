"""The types of the public API, for type checkers and editors (``recloss/*.pyi`` use them).

A loss accepts a tensor of any framework (anything with ``.shape`` and ``.dtype``), a NumPy array, a nested
list or a number, and returns a tensor of the inputs' framework: the return type is ``Any`` so that a
checker lets the caller use it as the framework tensor it is (``loss.backward()``, ``tape.gradient(loss, w)``).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, Union


class TensorLike(Protocol):
    """A tensor of TensorFlow, PyTorch, JAX or NumPy: anything with a ``shape`` and a ``dtype``."""

    @property
    def shape(self) -> Any: ...

    @property
    def dtype(self) -> Any: ...


#: What a tensor argument accepts: a tensor, or (with ``backend=``) a nested list or a number.
ArrayLike = Union[TensorLike, Sequence[Any], float]

#: A tensor of the inputs' framework (``torch.Tensor``, ``tf.Tensor``, ``jax.Array``, ``np.ndarray``).
Tensor = Any

__all__ = ["ArrayLike", "Tensor", "TensorLike"]
