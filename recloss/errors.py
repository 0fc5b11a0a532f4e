"""Exceptions raised by recloss.

Every message is produced by the shared validator (``recloss._validate``) or the dispatcher, never by a
backend, so the same bad input gets the same class and the same words on TensorFlow, PyTorch and JAX.
"""

from __future__ import annotations


class ReclossError(ValueError):
    """Base class of every recloss input error (a ``ValueError``)."""


class ShapeError(ReclossError):
    """A tensor argument has the wrong rank or a dimension that disagrees with another argument."""


class DTypeError(ReclossError, TypeError):
    """A tensor argument has a dtype of the wrong kind (e.g. integers where floats are needed)."""


class OptionError(ReclossError):
    """An option (``temperature``, ``reduction``, ...) or a value-checked tensor is out of range."""


class BackendError(ReclossError):
    """Unknown backend name, tensors of several frameworks in one call, or a tensor of another framework."""


class BackendUnavailableError(ImportError):
    """The framework a backend needs is not installed; the message gives its install command (``pip install
    torch``) and the extra of a recloss checkout (``pip install -e ".[torch]"``)."""
