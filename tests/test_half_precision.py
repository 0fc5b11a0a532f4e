"""float16 and bfloat16 inputs on every backend and device, and the one dtype rule of the result.

The rule (``Bound.dtype``): floating inputs of different precisions are promoted, never refused; the math
runs in float64 if any floating tensor argument is float64, else in float32 (half inputs are upcast first);
the result has that dtype. A tensor ``temperature`` is cast to it and never changes it.

Half-precision tolerances are ``recloss.parity.TOLERANCES``: the value within 1e-5 (relative, norm-wise) of
the float64 reference on the same half-rounded inputs; gradients, which come back in the input's dtype,
within 2e-3 (float16) and 1e-2 (bfloat16) of float64 finite differences of the reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import recloss
from recloss import CATALOGUE
from recloss.losses import SPECS
from recloss._dispatch import load_backend
from recloss._validate import dtype_name
from recloss.parity import TOLERANCES, cast_inputs

from helpers import case_options, float_args, spec_inputs, to_backend, to_numpy

HALF = ["float16", "bfloat16"]


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("loss", list(SPECS))
def test_half_inputs_match_the_reference(loss: str, dtype: str, backend: str, device: str) -> None:
    """Every case of the loss: finite, value and gradients within the documented tolerance."""
    report = recloss.validate(loss, backends=[backend], devices=["gpu" if device != "cpu" else "cpu"],
                              dtypes=[dtype])
    assert report.rows and report.passed, report.table()


def _tensor(backend: str, values, dtype: str, device: str = "cpu"):
    """``values`` rounded to ``dtype`` (bfloat16 through ml_dtypes) as a tensor of ``backend`` on ``device``."""
    import ml_dtypes

    x = to_backend(backend, np.asarray(values).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype))
    return x if device == "cpu" else _on_device(backend, x, device)


def _on_device(backend: str, x, device: str):
    if backend == "torch":
        return x.to(device)
    if backend == "jax":
        import jax
        return jax.device_put(x, jax.devices(device)[0])
    import tensorflow as tf
    with tf.device(device.upper() + ":0"):
        return tf.identity(x)


PROMOTION = [  # (dtype of pos_logit, dtype of neg_logit, dtype of the result)
    ("float16", "float16", "float32"), ("bfloat16", "bfloat16", "float32"), ("float16", "bfloat16", "float32"),
    ("float16", "float32", "float32"), ("bfloat16", "float32", "float32"), ("float32", "float32", "float32"),
    ("float16", "float64", "float64"), ("float32", "float64", "float64"), ("float64", "float64", "float64"),
]


@pytest.mark.parametrize("pos_dtype, neg_dtype, result", PROMOTION, ids=["-".join(p) for p in PROMOTION])
def test_result_dtype_rule(pos_dtype: str, neg_dtype: str, result: str, backend: str) -> None:
    """Mixed precisions are promoted, the same way on every backend, for a loss of each kind."""
    import contextlib

    context = contextlib.nullcontext()
    if backend == "jax" and "float64" in (pos_dtype, neg_dtype):
        import jax
        context = jax.enable_x64(True)
    with context:
        pos = _tensor(backend, [0.5, -1.0, 2.0], pos_dtype)
        neg = _tensor(backend, [[0.1, 0.2], [0.3, -0.4], [1.0, 0.0]], neg_dtype)
        for function in (recloss.softmax_loss, recloss.bpr_loss, recloss.hinge_loss):
            out = function(pos, neg)
            assert dtype_name(out.dtype) == result, function.__name__
            expected = function(to_numpy(pos), to_numpy(neg), backend="numpy")
            np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-5 if result != "float64" else 1e-12)
        # A 0-d tensor temperature of another precision neither fails nor changes the result's dtype.
        for t_dtype in ("float16", "float32"):
            out = recloss.softmax_loss(pos, neg, temperature=_tensor(backend, np.asarray(0.5), t_dtype))
            assert dtype_name(out.dtype) == result
        out = recloss.sampled_softmax_loss(_tensor(backend, np.ones((3, 2)), pos_dtype),
                                           _tensor(backend, np.eye(3, 2), neg_dtype))
        assert dtype_name(out.dtype) == result


@pytest.mark.parametrize("dtype", HALF)
def test_masking_is_exact_in_half_precision(dtype: str, backend: str, device: str) -> None:
    """Removed negatives contribute nothing, whatever they hold (here +-6e4, float16's edge): the value is
    unchanged and their gradient is exactly 0."""
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=4), rng.normal(size=(4, 5))
    mask = rng.random((4, 5)) < 0.5
    mask[0] = False  # a fully masked row
    values, grads = [], []
    module = load_backend(backend)
    # Compare calls in one execution mode: TensorFlow compiles a signature from its second eager call on.
    for filler in (0.0, 6e4, -6e4, 0.0):
        inputs = cast_inputs({"pos_logit": pos, "neg_logit": np.where(mask, neg, filler), "neg_mask": mask},
                             CATALOGUE["softmax_loss"], dtype)
        value, grad = module.value_and_grad(lambda **t: recloss.softmax_loss(**t, reduction="none"), inputs,
                                            ["pos_logit", "neg_logit"], device)
        assert np.all(np.isfinite(value)) and value[0] == 0.0
        assert np.all(grad["neg_logit"][~mask] == 0.0)
        values.append(value)
        grads.append(grad)
    if backend == "tensorflow":
        values, grads = values[1:], grads[1:]
    for value, grad in zip(values[1:], grads[1:]):
        np.testing.assert_array_equal(value, values[0])
        np.testing.assert_array_equal(grad["pos_logit"], grads[0]["pos_logit"])
        np.testing.assert_array_equal(grad["neg_logit"], grads[0]["neg_logit"])


@pytest.mark.parametrize("dtype", HALF)
def test_half_reductions_accumulate_in_float32(dtype: str, backend: str, device: str) -> None:
    """1000 rows of loss 100: a float16 accumulator would overflow (65504); the mean is 100."""
    pos = _tensor(backend, np.zeros(1000), dtype, device)
    neg = _tensor(backend, np.full(1000, 100.0), dtype, device)
    for reduction, expected in (("mean", 100.0), ("sum", 1e5)):
        out = recloss.bpr_loss(pos, neg, reduction=reduction)
        assert dtype_name(out.dtype) == "float32"
        np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-5)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("loss", ["softmax_loss", "sampled_softmax_loss", "info_nce_loss"])
def test_large_half_logits_stay_finite(loss: str, dtype: str, backend: str) -> None:
    """Logits near the float16 maximum at a small temperature: finite value and gradients."""
    spec = CATALOGUE[loss]
    case = spec.cases[0]
    inputs = spec_inputs(spec, case, np.random.default_rng(3), {"B": 4, "K": 3, "N": 3, "D": 4, "M": 3})
    for name in float_args(spec, inputs):
        inputs[name] = np.clip(inputs[name] * (6e4 if "emb" not in name else 120.0), -6e4, 6e4)
    inputs = cast_inputs(inputs, spec, dtype)
    options = case_options(spec, case) | {"temperature": 0.01}
    value, grads = load_backend(backend).value_and_grad(lambda **t: getattr(recloss, loss)(**t, **options),
                                                        inputs, float_args(spec, inputs), "cpu")
    assert np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads.values())
