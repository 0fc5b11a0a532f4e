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


# ----------------------------------------------------------------------------------------------------------
# Spec-driven inputs for the hardening tests (bad inputs, properties, gradients, half precision, transforms)


def spec_inputs(spec: Any, case: Any, rng: np.random.Generator, dims: dict[str, int]) -> dict[str, Any]:
    """``recloss.parity.make_inputs`` that also allows sizes of 0 (drawn at size 1, then sliced)."""
    from recloss.parity import make_inputs

    inputs = make_inputs(spec, case, rng, {name: max(size, 1) for name, size in dims.items()})
    for arg in spec.args:
        if inputs[arg.name] is not None:
            shape = arg.shapes[case.forms.get(arg.name, 0)]
            inputs[arg.name] = inputs[arg.name][tuple(slice(0, dims[d]) for d in shape)]
    return inputs


def case_options(spec: Any, case: Any) -> dict[str, Any]:
    """The spec's option defaults, overridden by the case's options; an option without a default (``REQUIRED``)
    that the case does not set takes its value from the first spec case that does."""
    options = {option.name: option.default for option in spec.options}
    for option in spec.options:
        if option.required:
            options[option.name] = next(c.options[option.name] for c in spec.cases if option.name in c.options)
    return options | dict(case.options)


def float_args(spec: Any, inputs: dict[str, Any]) -> list[str]:
    """The floating tensor arguments present in ``inputs`` that the loss differentiates (not ``constant``
    ones such as ranking labels); for a ``value_only`` spec (a metric), the ones it would."""
    return [a.name for a in spec.args if a.kind == "float" and not a.constant and inputs.get(a.name) is not None]


def grad_args(spec: Any, inputs: dict[str, Any]) -> list[str]:
    """The arguments a gradient is taken with respect to: ``float_args``, none for a metric."""
    return [] if spec.value_only else float_args(spec, inputs)


def function_of(name: str) -> Any:
    """The public function of a loss (``recloss.<name>``) or a metric (``recloss.metrics.<name>``)."""
    from recloss.parity import public_function

    return public_function(name)


def cast_floats(spec: Any, inputs: dict[str, Any], dtype: str) -> dict[str, Any]:
    """Floating inputs as ``dtype`` (bfloat16 via ml_dtypes), the others unchanged."""
    from recloss.parity import cast_inputs

    return cast_inputs(inputs, spec, dtype)
