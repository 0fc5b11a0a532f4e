"""recloss: recommendation and retrieval training losses for TensorFlow, PyTorch and JAX.

Each loss takes tensors of one framework and returns a tensor of that framework (gradients flow natively),
or takes NumPy arrays with ``backend=``. ``import recloss`` imports none of the frameworks.
"""

from recloss._api import build as _build
from recloss._dispatch import available_backends
from recloss.errors import (BackendError, BackendUnavailableError, DTypeError, OptionError, ReclossError,
                            ShapeError)
from recloss.losses import CATALOGUE
from recloss.parity import Report, validate
from recloss.parity_distributed import validate_distributed

sigmoid_cross_entropy_loss = _build(CATALOGUE["sigmoid_cross_entropy_loss"])
unsupervised_softmax_cross_entropy_loss = _build(CATALOGUE["unsupervised_softmax_cross_entropy_loss"])
softmax_loss = _build(CATALOGUE["softmax_loss"])
sampled_softmax_loss = _build(CATALOGUE["sampled_softmax_loss"])
info_nce_loss = _build(CATALOGUE["info_nce_loss"])
bpr_loss = _build(CATALOGUE["bpr_loss"])
hinge_loss = _build(CATALOGUE["hinge_loss"])
triplet_margin_loss = _build(CATALOGUE["triplet_margin_loss"])

__version__ = "0.1.0"

__all__ = [
    "sigmoid_cross_entropy_loss", "unsupervised_softmax_cross_entropy_loss", "softmax_loss",
    "sampled_softmax_loss", "info_nce_loss", "bpr_loss", "hinge_loss", "triplet_margin_loss",
    "available_backends", "validate", "validate_distributed", "Report", "CATALOGUE",
    "ReclossError", "ShapeError", "DTypeError", "OptionError", "BackendError", "BackendUnavailableError",
]
