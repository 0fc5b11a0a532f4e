"""A spec of the ranking form (``scores``, ``labels``, optional ``mask``, ``sample_weight``), declared for the
tests of the generated Keras losses and stubs; the catalogue's ranking losses have the same tensor names."""

from __future__ import annotations

from recloss._spec import BOOL, Case, LossSpec, tensor
from recloss.losses._shared import REDUCTION, RETURNS, SAMPLE_WEIGHT, temperature

TOY_SPEC = LossSpec(
    name="toy_listwise_loss",
    summary="Listwise softmax cross-entropy of the label distribution (a test spec of the ranking form).",
    math="l_i = -sum_j labels_ij log softmax(scores_i / T)_j over the unmasked j",
    args=(tensor("scores", "[B, L]"), tensor("labels", "[B, L]"),
          tensor("mask", "[B, L]", kind=BOOL, required=False), SAMPLE_WEIGHT),
    options=(temperature(1.0), REDUCTION),
    positional=("scores", "labels"),
    returns=RETURNS,
    cases=(Case("plain"),),
)
