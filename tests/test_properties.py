"""No NaN from a valid input: property-based tests over every loss and backend (hypothesis).

Random B, K, N, D, M (1 included), logits up to +-1e4 in float32 (embedding entries up to 1e2, so that dot
products reach ~1e4), temperatures from 1e-3 to 1e3, random masks with fully masked rows, random weights
with zeros (all zeros included). The value and every gradient must be finite; the value must agree with the
float64 reference on the same float32 inputs, and the gradients with the backend's own float64 gradients.

The tolerance is the dtype's (``recloss.parity.TOLERANCES``) scaled by the conditioning of the inputs:
``|x - ref| <= tol * (max|ref| + eps32 * L * scale)`` where ``L`` is the largest scaled logit magnitude
(``|logit| / T``); float32 cannot resolve differences below ``eps32 * L``, whatever the implementation.

NaN or Inf inputs: a NaN or an infinity in any floating input that enters the loss gives NaN (every row
with ``reduction="none"``), never a silently finite loss, as in the float64 reference. Entries removed by
``neg_mask`` do not count.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recloss._dispatch import load_backend
from recloss._spec import Case
from recloss.losses import SPECS
from recloss.parity import DIMS, TOLERANCES, reference_value

from helpers import case_options, cast_floats, float_args, function_of, grad_args, spec_inputs, to_backend, to_numpy

EPS32 = float(np.finfo(np.float32).eps)
EMBEDDING_LOSSES = {name for name, spec in SPECS.items() if any(a.name.endswith("_emb") for a in spec.args)}
EXAMPLES = 10


@st.composite
def problems(draw, spec):
    """One random valid call of ``spec``: (float64-valued float32 inputs, options, largest scaled logit)."""
    case = draw(st.sampled_from(spec.cases))
    dims = {"B": draw(st.integers(1, 5)), "K": draw(st.integers(1, 4)), "N": draw(st.integers(1, 4)),
            "D": draw(st.integers(1, 4)), "M": draw(st.integers(1, 5)), "L": draw(st.integers(1, 6))}
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.sampled_from([-3, 0, 1, 2, 4]))
    if spec.name in EMBEDDING_LOSSES:
        scale = np.sqrt(scale)
    inputs = spec_inputs(spec, case, rng, dims)
    pattern = draw(st.sampled_from(["normal", "extremes", "ties"]))
    for arg in spec.args:
        x = inputs[arg.name]
        if x is None:
            continue
        if arg.sample in ("normal", "scores"):
            if pattern == "extremes":  # entries at exactly +-scale
                x = np.sign(rng.normal(size=x.shape)) * scale
            elif pattern == "ties":  # every entry equal
                x = np.full(x.shape, scale)
            else:
                x = x * scale / 0.7
        elif arg.sample == "mask":
            x = rng.random(x.shape) < draw(st.sampled_from([0.0, 0.5, 1.0]))
            x[rng.integers(0, x.shape[0])] = False  # a fully masked row
        elif arg.sample == "weight":
            x = x * (rng.random(x.shape) < 0.5) * draw(st.sampled_from([0.0, 1.0, 1e3]))
        inputs[arg.name] = x
    options = case_options(spec, case)
    if "temperature" in options:
        options["temperature"] = float(10.0 ** draw(st.floats(-3, 3)))
    if "num_hard_negatives" in options and options["num_hard_negatives"] is not None:
        options["num_hard_negatives"] = draw(st.integers(1, 6))
    if "k" in options and options["k"] is not None:
        options["k"] = draw(st.integers(1, 7))
    inputs = cast_floats(spec, inputs, "float32")
    temperature = options.get("temperature", 1.0)
    biggest = max((float(np.max(np.abs(v), initial=0.0)) for k, v in inputs.items()
                   if v is not None and v.dtype.kind == "f"), default=0.0)
    if spec.name in EMBEDDING_LOSSES:
        biggest = biggest ** 2 * dims["D"]
    return inputs, options, biggest / temperature + 10.0


def _value_and_grad(backend: str, fn, inputs, wrt):
    """The backend's ``value_and_grad`` on the CPU; JAX under ``jax.jit`` (one compilation per drawn problem: op by
    op, every new random shape would compile each operation; the op-by-op path is what the parity tests run)."""
    return load_backend(backend).value_and_grad(fn, inputs, wrt, "cpu", **({"jit": True} if backend == "jax" else {}))


def _value_and_grads(backend: str, spec, inputs, options, dtype: str):
    function = function_of(spec.name)
    inputs = cast_floats(spec, inputs, dtype)
    return _value_and_grad(backend, lambda **t: function(**t, **options), inputs, grad_args(spec, inputs))


@pytest.mark.parametrize("loss", list(SPECS))
def test_finite_and_close_to_reference(loss: str, backend: str) -> None:
    spec = SPECS[loss]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(problem=problems(spec))
    def check(problem) -> None:
        inputs, options, biggest = problem
        value, grads = _value_and_grads(backend, spec, inputs, options, "float32")
        assert np.all(np.isfinite(value)), (value, options)
        for name, grad in grads.items():
            assert np.all(np.isfinite(grad)), (name, grad)
        value_tol, grad_tol = TOLERANCES["float32"]
        conditioning = EPS32 * biggest
        reference = reference_value(spec, inputs, options)
        scale = float(np.max(np.abs(reference), initial=0.0))
        assert np.max(np.abs(value - reference), initial=0.0) <= value_tol * scale + 8 * conditioning, \
            (value, reference)
        _, grads64 = _value_and_grads(backend, spec, inputs, options, "float64")
        for name, grad in grads.items():
            expected = grads64[name]
            g_scale = float(np.max(np.abs(expected), initial=0.0))
            allowed = grad_tol * g_scale + 8 * conditioning * max(g_scale, 1.0)
            assert np.max(np.abs(grad - expected), initial=0.0) <= allowed, (name, grad, expected)

    check()


# ----------------------------------------------------------------------------------------------------------
# Empty batches and rows without negatives


@pytest.mark.parametrize("loss", list(SPECS))
@pytest.mark.parametrize("empty", ["B=0", "K=0"])
def test_empty_sizes(loss: str, empty: str, backend: str) -> None:
    """B = 0: every reduction of nothing is 0 ("none": an empty [0] vector). K = N = M = L = 0: a row without
    negatives has softmax loss 0 and pairwise terms 0 (a mean over nothing is 0), a list without items has
    loss (and metrics) 0. Gradients are finite."""
    spec = SPECS[loss]
    dims = dict(DIMS, B=0) if empty == "B=0" else dict(DIMS, K=0, N=0, M=0, L=0)
    for case in spec.cases:
        inputs = cast_floats(spec, spec_inputs(spec, case, np.random.default_rng(1), dims), "float32")
        options = case_options(spec, case)
        value, grads = _value_and_grad(backend, lambda **t: function_of(loss)(**t, **options), inputs,
                                       grad_args(spec, inputs))
        reference = reference_value(spec, inputs, options)
        assert value.shape == reference.shape, case.name
        np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-6, err_msg=case.name)
        if empty == "B=0" and not (loss == "sigmoid_cross_entropy_loss" and case.forms.get("neg_logit") == 2):
            assert value.shape == (0,) if options["reduction"] == "none" else float(value) == 0.0, case.name
        for name, grad in grads.items():
            assert grad.shape == inputs[name].shape and np.all(np.isfinite(grad)), (case.name, name)


# ----------------------------------------------------------------------------------------------------------
# NaN and Inf inputs


def _plain(spec) -> Case:
    """Every required argument in its first shape, no masks or ids (so that every entry contributes)."""
    return Case("plain")


@pytest.mark.parametrize("loss", list(SPECS))
def test_nan_or_inf_input_is_never_silently_finite(loss: str, backend: str) -> None:
    spec = SPECS[loss]
    case = _plain(spec)
    base = cast_floats(spec, spec_inputs(spec, case, np.random.default_rng(2), DIMS), "float32")
    options = case_options(spec, case)
    function = function_of(loss)
    for name in float_args(spec, base):
        for bad in (np.nan, np.inf, -np.inf):
            for position in (0, -1):
                inputs = dict(base)
                inputs[name] = inputs[name].copy()
                inputs[name].reshape(-1)[position] = bad
                tensors = {k: to_backend(backend, v) for k, v in inputs.items()}
                out = to_numpy(function(**tensors, **options))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    reference = reference_value(spec, inputs, options)
                label = f"{name}[{position}] = {bad}: got {out}, reference {reference}"
                assert np.all(np.isnan(out)), label
                assert np.all(np.isnan(reference)), label
