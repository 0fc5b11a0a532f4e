"""Half-precision matrix products (``product_precision``), on every backend.

``"input"`` (the default) multiplies float16/bfloat16 embeddings in their precision with float32 accumulation:
JAX (``preferred_element_type``) and torch on CUDA (``out_dtype``) return the product in float32, so the loss
is as exact as with float32 products; torch on the CPU and TensorFlow round a bfloat16 product to bfloat16,
which an emulation in NumPy (float32 sums of the exact products, rounded to bfloat16, then float64) must
reproduce, and multiply float16 in float32 (a float16 result could overflow). ``"float32"`` keeps the
float32 products. The parity engine checks both against the float64 reference with tolerances derived from
the rounding (``recloss.parity.product_rounding_bounds``).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import recloss
from recloss._dispatch import load_backend

from helpers import to_numpy

B, N, D = 6, 9, 16


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    cast = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    return [rng.normal(size=shape).astype(cast) for shape in ((B, D), (B, D), (N, D))]


def _emulated(q, p, n, temperature, round_products):
    """The in-batch + shared softmax in float64 from logits computed as the backend does: float32 sums of exact
    products, rounded to bfloat16 where the backend's product is (the positive's score is a float32 row sum)."""
    q, p, n = (np.asarray(x, np.float32) for x in (q, p, n))
    block = np.concatenate([q @ p.T, q @ n.T], axis=1)
    if round_products:
        block = block.astype(ml_dtypes.bfloat16)
    block = np.asarray(block, np.float64) / temperature
    s_pos = np.sum(q.astype(np.float64) * p, axis=1) / temperature
    rows = []
    for i in range(B):
        others = np.delete(block[i], i)                    # the row's own positive is not a negative
        values = np.concatenate([[s_pos[i]], others])
        top = values.max()
        rows.append(top - s_pos[i] + np.log(np.sum(np.exp(values - top))))
    return float(np.mean(rows))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_input_precision_matches_the_emulated_rounding(backend, dtype):
    module = load_backend(backend)
    q, p, n = _inputs(dtype)
    out = recloss.sampled_softmax_loss(*(module.convert(x) for x in (q, p, n)), in_batch=True, temperature=0.1)
    assert "float32" in str(out.dtype)
    rounded = module.product_result_unit(dtype, "cpu") not in (None, 0.0)
    expected = _emulated(q, p, n, 0.1, rounded)
    np.testing.assert_allclose(float(to_numpy(out)), expected, rtol=2e-6)
    exact = _emulated(q, p, n, 0.1, False)
    if rounded:   # the bfloat16 products did run: the value moved off the float32-product one
        assert abs(float(to_numpy(out)) - exact) > 1e-5


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_float32_products_keep_the_old_precision(backend, dtype):
    module = load_backend(backend)
    q, p, n = _inputs(dtype, seed=1)
    out = recloss.sampled_softmax_loss(*(module.convert(x) for x in (q, p, n)), in_batch=True, temperature=0.1,
                                       product_precision="float32")
    np.testing.assert_allclose(float(to_numpy(out)), _emulated(q, p, n, 0.1, False), rtol=2e-6)


def test_gradients_come_back_in_the_input_precision(backend):
    module = load_backend(backend)
    inputs = dict(zip(("query_emb", "pos_emb", "neg_emb"), _inputs("bfloat16", seed=2)))
    value, grads = module.value_and_grad(
        lambda **t: recloss.sampled_softmax_loss(**t, in_batch=True, temperature=0.1), inputs, list(inputs), "cpu")
    reference = module.value_and_grad(
        lambda **t: recloss.sampled_softmax_loss(**t, in_batch=True, temperature=0.1, product_precision="float32"),
        inputs, list(inputs), "cpu")[1]
    for name in inputs:
        assert np.all(np.isfinite(grads[name]))
        scale = np.abs(reference[name]).max()
        # bfloat16 products move logits by ~2**-8 |logit|: the gradients stay within a few percent.
        assert np.abs(grads[name] - reference[name]).max() <= 0.05 * scale, name


def test_mixed_half_dtypes_are_multiplied_in_float32(backend):
    """Operands of two precisions (float16 queries, bfloat16 items) are cast to float32, never mixed."""
    module = load_backend(backend)
    q, _, n = _inputs("float16", seed=3)
    p = _inputs("bfloat16", seed=3)[1]
    out = recloss.sampled_softmax_loss(*(module.convert(x) for x in (q, p, n)), in_batch=True, temperature=0.1)
    np.testing.assert_allclose(float(to_numpy(out)), _emulated(q, p, n, 0.1, False), rtol=2e-6)


_PROCESSOR_SCRIPT = r"""
import json, sys
import ml_dtypes, numpy as np, tensorflow as tf
import recloss
q, p, n = (tf.constant(np.asarray(x, ml_dtypes.bfloat16)) for x in json.loads(sys.argv[1]))

def loss(a, b, c):
    return recloss.sampled_softmax_loss(a, b, c, in_batch=True, temperature=0.1)

def value_and_grads(fn):
    with tf.GradientTape() as tape:
        tape.watch([q, p, n])
        out = fn(q, p, n)
    return [float(out)] + [np.asarray(tf.cast(g, tf.float32)).tolist() for g in tape.gradient(out, [q, p, n])]

calls = [value_and_grads(loss) for _ in range(3)]          # op by op, then compiled per signature
calls.append(value_and_grads(tf.function(loss, jit_compile=True)))
print(json.dumps(calls))
"""


def test_tensorflow_bfloat16_products_do_not_depend_on_the_processor():
    """Processors without AVX-512 run TensorFlow's bfloat16 MatMul in Eigen rather than oneDNN
    (``TF_ENABLE_ONEDNN_OPTS=0`` selects that kernel on any x86 processor): the first, op-by-op call, later
    compiled calls and XLA must all give the emulated rounding, values and gradients alike."""
    pytest.importorskip("tensorflow")
    import json
    import os
    import subprocess
    import sys

    q, p, n = _inputs("bfloat16")
    arrays = json.dumps([np.asarray(x, np.float32).tolist() for x in (q, p, n)])
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _PROCESSOR_SCRIPT, arrays], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = json.loads(done.stdout.strip().splitlines()[-1])
    expected = _emulated(q, p, n, 0.1, True)
    for call in calls:
        np.testing.assert_allclose(call[0], expected, rtol=2e-6)
        for got, first in zip(call[1:], calls[0][1:]):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(first))
