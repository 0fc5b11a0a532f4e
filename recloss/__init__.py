"""recloss: recommendation and retrieval training losses for TensorFlow, PyTorch and JAX.

Each loss takes tensors of one framework and returns a tensor of that framework (gradients flow natively),
or takes NumPy arrays with ``backend=``. ``import recloss`` imports none of the frameworks.
"""

from pathlib import Path as _Path

from recloss import _source_tree

_source_tree.install(_Path(__file__).parent)   # run from a checkout's root: recloss.backends is ../backends

from recloss import metrics  # noqa: E402  (recloss.metrics.ndcg, ...), built from the catalogue
from recloss import sampling  # noqa: E402  samplers with log Q, the frequency estimator and the negative queue
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
listwise_softmax_loss = _build(CATALOGUE["listwise_softmax_loss"])
poly1_softmax_loss = _build(CATALOGUE["poly1_softmax_loss"])
listmle_loss = _build(CATALOGUE["listmle_loss"])
approx_ndcg_loss = _build(CATALOGUE["approx_ndcg_loss"])
pairwise_logistic_loss = _build(CATALOGUE["pairwise_logistic_loss"])
pairwise_hinge_loss = _build(CATALOGUE["pairwise_hinge_loss"])
pairwise_soft_zero_one_loss = _build(CATALOGUE["pairwise_soft_zero_one_loss"])
pointwise_sigmoid_loss = _build(CATALOGUE["pointwise_sigmoid_loss"])

__version__ = "0.1.0"

__all__ = [
    "sigmoid_cross_entropy_loss", "unsupervised_softmax_cross_entropy_loss", "softmax_loss",
    "sampled_softmax_loss", "info_nce_loss", "bpr_loss", "hinge_loss", "triplet_margin_loss",
    "listwise_softmax_loss", "poly1_softmax_loss", "listmle_loss", "approx_ndcg_loss", "pairwise_logistic_loss",
    "pairwise_hinge_loss", "pairwise_soft_zero_one_loss", "pointwise_sigmoid_loss", "metrics", "sampling",
    "available_backends", "validate", "validate_distributed", "Report", "CATALOGUE",
    "ReclossError", "ShapeError", "DTypeError", "OptionError", "BackendError", "BackendUnavailableError",
]
