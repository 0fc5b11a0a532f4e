"""Pieces of the catalogue that every family of losses shares: row weights, reductions, the return rule."""

from __future__ import annotations

from recloss._spec import Option, tensor

SAMPLE_WEIGHT = tensor("sample_weight", "[B]", required=False, sample="weight", nonnegative=True,
                       doc="Row weights ``w_i >= 0`` (default 1).")
REDUCTION = Option("reduction", "mean", "choice", choices=("mean", "sum", "none"), annotation="str",
                   doc='``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); '
                       '``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.')
RETURNS = ("The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction=\"none\"``); float32 for "
           "float16, bfloat16 and float32 inputs, float64 if any floating input is float64.")


def temperature(default: float) -> Option:
    return Option("temperature", default, "positive", tensor_ok=True,
                  doc="Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.")


MARGIN = Option("margin", 1.0, "finite", doc="Margin of the hinge, a finite number.")
